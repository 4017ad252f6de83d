"""The lm-evaluation-harness backend for motlab checkpoints: ``--model motlab``.

Importing this module registers :class:`MotlabLM` in the harness's model registry under the name
``motlab``. The harness (0.4.x) discovers models only through that registry and its own table of
built-in backends, not through package entry points, so the registration has to run in the
process that evaluates: ``motlab lm_eval ...`` (the harness's CLI with this module imported),
``motlab zeroshot`` or ``import motlab.eval`` before ``lm_eval.simple_evaluate(model="motlab")``.

Scoring follows :mod:`motlab.eval.scoring` (one group per request for MoT, filler rows drawn
from the request's own tokens); generation batches requests through the KV-cached lockstep
decoder, :func:`motlab.decoding.complete` (MoT: a group per batch, filler where short).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any

import lm_eval.models  # noqa: F401 - the harness's own backends; see the registration below
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from motlab.checkpoint import load_model, read_data_config, resolve_checkpoint, resolves_here
from motlab.decoding import complete
from motlab.eval.filler_pool import (
    DEFAULT_WINDOWS,
    FILLERS,
    FillerPool,
    c4_datamodule,
    pool_from_datamodule,
    random_filler_pool,
    request_seed,
)
from motlab.eval.scoring import DEFAULT_BATCH_SIZE, ScoreRequest, score_requests
from motlab.layers.registry import Capacity, parse_capacity
from motlab.sampling import Sampling

log = logging.getLogger(__name__)


def _requests_per_pass(batch_size: Any) -> int:
    if batch_size is None:
        return DEFAULT_BATCH_SIZE
    if isinstance(batch_size, str) and batch_size.strip().isdigit():
        batch_size = int(batch_size)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(
            f"the motlab backend needs a batch size of at least 1 request per forward pass, got "
            f"{batch_size!r} (--batch_size N; 'auto' is not supported)"
        )
    return batch_size


def _device(device: str | None) -> str:
    """``device``, else CUDA if available. The harness's CLI passes ``cuda:0`` when given no
    ``--device``, on any machine; as its Hugging Face backend does, that runs on the CPU when
    there is no GPU (with a warning)."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        log.warning("device %r requested but CUDA is not available: running on the CPU", device)
        return "cpu"
    return device


@register_model("motlab")
class MotlabLM(TemplateLM):
    """A motlab checkpoint as a harness language model.

    Args:
        checkpoint: A ``motlab fit`` checkpoint or a :func:`motlab.save_model` file, or an
            experiment directory (``runs/mot``: its newest ``last.ckpt``).
        tokenizer: ``tokenizer.json`` path or hub name; default: the one the checkpoint was
            trained with, if it resolves here, else ``gpt2``.
        data: Local C4 copy (``DIR/en/c4-train.*.json.gz``) for the filler rows of group-mixing
            models; default: the checkpoint's training data if present here, else the hub.
        filler: ``c4`` (training windows, the paper's protocol) or ``random`` (uniform tokens).
        filler_pool: Windows in the filler pool each request's G - 1 rows are drawn from.
        seed: Seeds the pool and salts every request's filler draw (another seed, other filler).
        batch_size: Requests per forward pass (the harness's ``--batch_size``).
        max_batch_size: Accepted for the harness's interface; unused (no automatic sizing).
        device: ``cpu``, ``cuda``, ``cuda:1``, ...; default: CUDA if available.
        eot_token: End-of-text token: the context of an empty context, a stop for generation.
        capacity: Of token-choice layers: ``dropless`` (default: every token gets its k
            experts, so a request's scores do not depend on the batch), ``training`` (the
            configured capacity factor, as in training) or a factor (``1.25``).
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        tokenizer: str | None = None,
        data: str | None = None,
        filler: str = "c4",
        filler_pool: int = DEFAULT_WINDOWS,
        seed: int = 0,
        batch_size: int | str | None = None,
        max_batch_size: int | None = None,
        device: str | None = None,
        eot_token: str = "<|endoftext|>",
        capacity: Capacity | str = "dropless",
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            valid = list(inspect.signature(MotlabLM.__init__).parameters)[1:-1]
            raise ValueError(
                f"unknown model_args for the motlab backend: {', '.join(sorted(unknown))}; "
                f"valid: {', '.join(valid)}"
            )
        if checkpoint is None:
            raise ValueError("the motlab backend needs a checkpoint: --model_args checkpoint=PATH")
        if filler not in FILLERS:
            raise ValueError(f"unknown filler {filler!r}; valid: {', '.join(FILLERS)}")
        if not isinstance(filler_pool, int) or filler_pool < 1:
            raise ValueError(f"filler_pool must be a number of windows >= 1, got {filler_pool!r}")
        from motlab.data.tokenizer import load_tokenizer, token_id

        self.batch_size = _requests_per_pass(batch_size)
        self.seed = int(seed)
        self.capacity = parse_capacity(capacity)
        path = resolve_checkpoint(checkpoint, "checkpoint=")  # a file, or runs/mot: its newest
        device = _device(device)
        self.model = load_model(path, map_location=device, capacity=self.capacity)
        self._device = torch.device(device)
        self.group_size = self.model.cfg.group_size
        if self.group_size > 1 and filler_pool < self.group_size - 1:
            raise ValueError(
                f"filler_pool={filler_pool} windows cannot fill the {self.group_size - 1} other "
                f"rows of a group of {self.group_size}: use filler_pool >= {self.group_size - 1}"
            )
        saved = read_data_config(path)
        self.tokenizer_source = str(
            tokenizer
            or (saved.get("tokenizer") if resolves_here(saved.get("tokenizer")) else "gpt2")
        )
        self._tok = load_tokenizer(self.tokenizer_source)
        vocab = self._tok.get_vocab_size(with_added_tokens=True)
        if vocab > self.model.cfg.vocab_size:
            raise ValueError(
                f"tokenizer {self.tokenizer_source!r} has {vocab} tokens, more than the model's "
                f"{self.model.cfg.vocab_size}: pass the tokenizer it was trained with "
                "(tokenizer=PATH)"
            )
        self._eot = token_id(self._tok, eot_token)
        self.filler_kind = filler if self.group_size > 1 else "none"
        self._filler: FillerPool | None = None
        self._filler_dm: Any = None
        self._filler_windows = filler_pool
        if self.group_size > 1 and filler == "c4":
            data = data or (saved.get("path") if resolves_here(saved.get("path")) else None)
            # Files found (or the hub reached) now; the windows are read on first use, after
            # the harness has loaded its tasks.
            self._filler_dm = c4_datamodule(data, self.tokenizer_source, self.max_length, self.seed)
            where = data or "the Hugging Face hub (allenai/c4)"
            self.filler_description = f"{filler_pool} C4 training windows from {where}"
        elif self.group_size > 1:
            self._filler = random_filler_pool(
                self.model.cfg.vocab_size, self.max_length, filler_pool, self.seed
            )
            self.filler_description = self._filler.source
        else:
            self.filler_description = "none (group size 1: requests batched plainly)"
        log.info(
            "motlab backend: group size %d, filler %s", self.group_size, self.filler_description
        )

    # -- what the harness asks of a model ---------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self._eot

    @property
    def max_length(self) -> int:
        return self.model.cfg.seq_len

    @property
    def max_gen_toks(self) -> int:
        return 256

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer_source

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **_: Any
    ) -> list[int]:
        return list(self._tok.encode(string, add_special_tokens=False).ids)

    def tok_decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)

    @property
    def filler(self) -> FillerPool | None:
        """The filler pool of a group-mixing model (read on first use), else None."""
        if self._filler is None and self._filler_dm is not None:
            self._filler = pool_from_datamodule(self._filler_dm, self._filler_windows)
            self._filler_dm = None
            log.info("filler: %s", self._filler.source)
        return self._filler

    def _score(self, requests: list[ScoreRequest], desc: str, disable_tqdm: bool) -> list:
        bar = tqdm(total=len(requests), desc=desc, disable=disable_tqdm)
        try:
            return score_requests(
                self.model, requests, self.filler, self.batch_size, self._eot, bar.update
            )
        finally:
            bar.close()

    def _loglikelihood_tokens(
        self,
        requests: list[tuple[tuple[str, str] | None, list[int], list[int]]],
        disable_tqdm: bool = False,
        **_: Any,
    ) -> list[tuple[float, bool]]:
        # The filler depends on the context only: every choice of a multiple-choice question
        # is scored among the same G - 1 rows, so the choices differ only in themselves.
        scored = [
            ScoreRequest(ctx, cont, request_seed("loglikelihood", ctx, salt=self.seed))
            for _, ctx, cont in requests
        ]
        results = self._score(scored, "motlab loglikelihood", disable_tqdm)
        for (key, _, _), result in zip(requests, results, strict=True):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def loglikelihood_rolling(
        self, requests: list[Instance], disable_tqdm: bool = False
    ) -> list[float]:
        """Whole-document log-likelihoods in disjoint ``seq_len`` windows (harness convention:
        the first token is conditioned on end-of-text, later windows on as much of the
        document before them as fits)."""
        scored: list[ScoreRequest] = []
        owner: list[int] = []
        for d, (string,) in enumerate(req.args for req in requests):
            tokens = self.tok_encode(string)
            windows = get_rolling_token_windows(
                token_list=tokens,
                prefix_token=self._eot,
                max_seq_len=self.max_length,
                context_len=1,
            )
            for k, (ctx, cont) in enumerate(map(make_disjoint_window, windows)):
                seed = request_seed("rolling", tokens, [k], salt=self.seed)
                scored.append(ScoreRequest(ctx, cont, seed))
                owner.append(d)
        results = self._score(scored, "motlab loglikelihood_rolling", disable_tqdm)
        totals = [0.0] * len(requests)
        for d, (ll, _) in zip(owner, results, strict=True):
            totals[d] += ll
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, ``do_sample=True``) continuations, each cut at its first stop
        string (``until``) or end-of-text, ``batch_size`` requests decoded together in lockstep
        with the KV cache (:func:`motlab.decoding.complete`).

        Requests with the same sampling arguments are batched, longest prompts first. A
        group-mixing model (MoT) decodes a batch as one group of G rows (or several, for a
        batch larger than G) whose rows past the requests are filler rows, drawn with a seed
        from the batch's prompts: unlike scoring, a request's text depends on the requests it
        is batched with, as MoT mixes them. Dense and token-choice (dropless) models give each
        request the same text in any batch, up to float rounding.
        """
        parsed = [self._generation_request(*req.args) for req in requests]  # errors first
        texts: list[str] = [""] * len(requests)
        by_sampling: dict[Sampling, list[int]] = {}
        for i, request in enumerate(parsed):
            by_sampling.setdefault(request.sampling, []).append(i)
        bar = tqdm(total=len(requests), desc="motlab generate_until", disable=disable_tqdm)
        try:
            for sampling, indices in by_sampling.items():
                indices = sorted(indices, key=lambda i: -len(parsed[i].prompt))
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start : start + self.batch_size]
                    for i, text in zip(chunk, self._generate_batch(
                        [parsed[i] for i in chunk], sampling
                    ), strict=True):  # fmt: skip
                        texts[i] = text
                        self.cache_hook.add_partial("generate_until", requests[i].args, text)
                    bar.update(len(chunk))
        finally:
            bar.close()
        return texts

    def _generation_request(self, context: str, gen_kwargs: dict[str, Any]) -> _Generation:
        kwargs = dict(gen_kwargs)
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else [s for s in until if s]
        max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
        do_sample = bool(kwargs.pop("do_sample", False))
        temperature = float(kwargs.pop("temperature", 1.0 if do_sample else 0.0))
        top_k = kwargs.pop("top_k", None)
        top_p = kwargs.pop("top_p", None)
        if kwargs:
            log.warning("motlab backend: generation arguments ignored: %s", sorted(kwargs))
        if not do_sample:
            temperature, top_k, top_p = 0.0, None, None
        sampling = Sampling(temperature, top_k, top_p)
        prompt = (self.tok_encode(context) or [self._eot])[-self.max_length :]
        return _Generation(prompt, until, max_new, sampling)

    def _generate_batch(self, batch: list[_Generation], sampling: Sampling) -> list[str]:
        prompts = [g.prompt for g in batch]
        seed = request_seed("generate", *prompts, salt=self.seed)
        generator = torch.Generator().manual_seed(seed)
        filler_WT = None
        n_fill = -len(batch) % self.group_size
        if n_fill:
            pool = self.filler
            assert pool is not None
            # Long enough for the whole decode, aligned with the longest prompt's first token.
            length = max(map(len, prompts)) + max(g.max_new for g in batch)
            filler_WT = pool.rows(seed, n_fill, length)
        done = complete(
            self.model, prompts, [g.max_new for g in batch], temperature=sampling.temperature,
            top_k=sampling.top_k, top_p=sampling.top_p, eos_id=self._eot,
            stop=[g.until for g in batch], decode=self.tok_decode, filler_WT=filler_WT,
            generator=generator, capacity=self.capacity,
        )  # fmt: skip
        return [c.text or "" for c in done]


@dataclass(frozen=True)
class _Generation:
    """One ``generate_until`` request, parsed."""

    prompt: list[int]
    until: list[str]
    max_new: int
    sampling: Sampling
