"""``motlab export``'s work: a checkpoint in, a Hugging Face model directory out.

Shapes (legend in :mod:`motlab.shapes`): B, T, V.

The directory holds ``config.json``, ``model.safetensors`` (weights only), ``tokenizer.json``
with its config, ``generation_config.json`` and the model card ``README.md``
(:mod:`motlab.hf.card`). A dense model that GPT-2 can express exactly is written as
transformers' ``GPT2LMHeadModel`` (:mod:`motlab.hf.gpt2`); any other as remote code made from
motlab's sources (:mod:`motlab.hf.bundle`). transformers writes the files
(``save_pretrained``); the export then loads the directory back with ``AutoModelForCausalLM``
and compares its logits with the checkpoint's model before the directory takes its name, so a
directory that exists is one that was checked. Everything that can be wrong with the input
(the output directory, the checkpoint, the tokenizer) is checked before anything is written.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from motlab.checkpoint import config_to_dict, read_data_config, read_saved_net, resolve_checkpoint
from motlab.config import GPTConfig
from motlab.hf.bundle import CONFIGURATION, MODELING, bundle, file_name
from motlab.hf.card import model_card, run_facts
from motlab.hf.files import GLOBAL_STEP_KEY
from motlab.hf.gpt2 import GPT2_NET_KEY, gpt2_config, gpt2_mismatch, to_gpt2
from motlab.inference import set_capacity
from motlab.model import GPT

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DEFAULT_EOT = "<|endoftext|>"
CHECK_TOLERANCE = 1e-4
"""The largest logit difference the check accepts, relative to the largest logit (at least 1):
float32 rounding of the same computation in another order stays far below it, a different
computation far above."""


@dataclass(frozen=True)
class Exported:
    """What :func:`export` wrote."""

    out: Path
    remote_code: bool
    why: str
    """Why the model is remote code rather than GPT-2 (empty for GPT-2)."""
    variants: list[str]
    max_difference: float
    """The largest difference between the exported model's logits and the checkpoint's."""


def export(
    checkpoint: str | Path,
    out: str | Path,
    dtype: str = "float32",
    tokenizer: str | None = None,
    eot_token: str | None = None,
) -> Exported:
    """Export the model at ``checkpoint`` (a file, an experiment directory for its newest
    ``last.ckpt``, or an export) into the new directory ``out`` (module docstring)."""
    out = Path(out).expanduser()
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(
            f"--out {out} already exists and is not empty: an export never overwrites files; "
            "choose a new directory or remove it"
        )
    _require_transformers()
    path = resolve_checkpoint(checkpoint, "--checkpoint")
    saved = read_saved_net(path, "--checkpoint")  # names a file that is not motlab's
    model = GPT(GPTConfig.from_dict(saved.config))
    try:
        model.load_state_dict(saved.state)
    except RuntimeError as e:
        raise ValueError(f"--checkpoint {path}: its weights do not fit its own config ({e})") from e
    set_capacity(model, "dropless")
    model.eval()
    data = read_data_config(path)
    tok, eot_id = _tokenizer(tokenizer, data, eot_token, model.cfg.vocab_size)

    # The check's reference: the model with its weights as they will be stored.
    model.to(DTYPES[dtype]).float()
    tokens_BT = _check_batch(model)
    with torch.no_grad():
        expected_BTV = model(tokens_BT)
    facts = run_facts(path, saved.global_step, data)

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        why = gpt2_mismatch(model)
        difference = float("inf")
        if not why:
            _write_gpt2(model, work, dtype, eot_id, saved.global_step)
            difference = _difference(work, False, tokens_BT, expected_BTV)
            if difference > _tolerance(expected_BTV):
                why = f"GPT-2 computes something else (its logits differ by {difference:.3g})"
                shutil.rmtree(work)
                work.mkdir()
        variants = ["dense"]
        if why:
            variants = _write_remote_code(model, work, dtype, eot_id, saved.global_step)
            difference = _difference(work, True, tokens_BT, expected_BTV)
            if difference > _tolerance(expected_BTV):
                raise RuntimeError(
                    f"the exported model's logits differ from the checkpoint's by {difference:.3g}"
                )
        _write_tokenizer(tok, eot_id, model.cfg.seq_len, work)
        card = model_card(model.cfg, facts, out.name, bool(why), dtype, why)
        (work / "README.md").write_text(card)
        if out.exists():
            out.rmdir()  # empty (checked above)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Exported(out, bool(why), why, variants, difference)


def _require_transformers() -> None:
    try:
        import transformers  # noqa: F401
    except ImportError as e:
        raise ValueError(
            "motlab export needs transformers: pip install 'motlab[hf]' (or '.[hf]' in a checkout)"
        ) from e


def _tokenizer(
    source: str | None, data: dict[str, Any], eot_token: str | None, vocab_size: int
) -> tuple[Any, int]:
    """The tokenizer to ship (``--tokenizer``, else the one the checkpoint was trained with) and
    its end-of-text id; an error naming the path when it is not here."""
    from motlab.data.tokenizer import load_tokenizer, looks_like_path, token_id
    from motlab.hub import HubUnreachableError

    if source is None:
        source = data.get("tokenizer")
        if not source:
            raise ValueError(
                "--checkpoint records no tokenizer (a motlab.save_model file?): pass --tokenizer "
                "PATH/tokenizer.json, the tokenizer the model was trained with"
            )
        if looks_like_path(str(source)) and not Path(str(source)).expanduser().exists():
            raise FileNotFoundError(
                f"the checkpoint's tokenizer {source} is not on this machine: pass --tokenizer "
                "PATH/tokenizer.json (a copy of the tokenizer the model was trained with)"
            )
        option = "the checkpoint's tokenizer"
    else:
        option = "--tokenizer"
        if looks_like_path(source) and not Path(source).expanduser().exists():
            raise FileNotFoundError(f"--tokenizer {source}: no such tokenizer file")
    try:
        tok = load_tokenizer(str(source))
    except ValueError as e:
        raise ValueError(f"{option} {source}: {e}") from e
    except HubUnreachableError as e:
        raise HubUnreachableError(
            f"{option} {source!r} names a tokenizer on the Hugging Face hub, which cannot be "
            "reached (offline, or no network) and whose local cache lacks it: pass --tokenizer "
            "PATH/tokenizer.json"
        ) from e
    vocab = tok.get_vocab_size(with_added_tokens=True)
    if vocab > vocab_size:
        raise ValueError(
            f"{option} {source} has {vocab} tokens, more than the model's {vocab_size}: pass the "
            "tokenizer it was trained with (--tokenizer PATH)"
        )
    eot = eot_token or data.get("eot_token") or DEFAULT_EOT
    if tok.token_to_id(eot) is None:
        raise ValueError(
            f"{option} {source} has no end-of-text token {eot!r}: pass --eot-token with the one "
            "it has"
        )
    return tok, token_id(tok, eot)


def _check_batch(model: GPT) -> Tensor:
    """A few rows of random tokens, a whole group of a MoT / expert-choice model."""
    cfg = model.cfg
    generator = torch.Generator().manual_seed(0)
    B, T = max(2, cfg.group_size), min(cfg.seq_len, 16)
    return torch.randint(cfg.vocab_size, (B, T), generator=generator)


def _tolerance(expected_BTV: Tensor) -> float:
    return CHECK_TOLERANCE * max(1.0, float(expected_BTV.abs().max()))


def _difference(directory: Path, remote_code: bool, tokens_BT: Tensor, expected: Tensor) -> float:
    """The largest difference between the logits of the model transformers loads from
    ``directory`` (in float32) and ``expected``."""
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(
        directory, trust_remote_code=remote_code, dtype=torch.float32
    )
    with torch.no_grad():
        logits_BTV = loaded(tokens_BT).logits
    return float((logits_BTV - expected).abs().max())


def _write_gpt2(model: GPT, out: Path, dtype: str, eot_id: int, steps: int | None) -> None:
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        **gpt2_config(model), bos_token_id=eot_id, eos_token_id=eot_id, dtype=DTYPES[dtype]
    )
    setattr(config, GPT2_NET_KEY, config_to_dict(model.cfg))
    setattr(config, GLOBAL_STEP_KEY, steps)
    with torch.device("meta"):
        hf = GPT2LMHeadModel(config)
    state = {k: v.to(DTYPES[dtype]) for k, v in to_gpt2(model).items()}
    hf.load_state_dict(state, strict=True, assign=True)
    hf.generation_config = _generation_config(GenerationConfig, eot_id)
    hf.save_pretrained(out)


def _write_remote_code(
    model: GPT, out: Path, dtype: str, eot_id: int, steps: int | None
) -> list[str]:
    """Write the model as remote code; the variants it is built of."""
    from transformers import GenerationConfig

    from motlab.hf.configuration import MotlabConfig
    from motlab.hf.modeling import MotlabForCausalLM

    code = bundle(model)  # first: a variant that cannot be exported stops here
    config = MotlabConfig(
        net=config_to_dict(model.cfg), bos_token_id=eot_id, eos_token_id=eot_id,
        dtype=DTYPES[dtype],
    )  # fmt: skip
    config.auto_map = {
        "AutoConfig": f"{file_name(CONFIGURATION)}.MotlabConfig",
        "AutoModelForCausalLM": f"{file_name(MODELING)}.MotlabForCausalLM",
    }
    setattr(config, GLOBAL_STEP_KEY, steps)
    with torch.device("meta"):
        hf = MotlabForCausalLM(config)
    state = {k: v.to(DTYPES[dtype]) for k, v in model.state_dict().items()}
    hf.net.load_state_dict(state, strict=True, assign=True)
    hf.generation_config = _generation_config(GenerationConfig, eot_id)
    hf.save_pretrained(out)
    for name, source in code.files.items():
        (out / name).write_text(source)
    return code.variants


def _generation_config(cls: type, eot_id: int) -> Any:
    """End-of-text ends a row and pads finished rows (GPT-2's tokenizer has no padding token)."""
    return cls(bos_token_id=eot_id, eos_token_id=eot_id, pad_token_id=eot_id)


def _write_tokenizer(tok: Any, eot_id: int, seq_len: int, out: Path) -> None:
    """``tokenizer.json``, ``tokenizer_config.json`` and the special tokens, by transformers."""
    from transformers import PreTrainedTokenizerFast

    eot = tok.id_to_token(eot_id)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot,
        model_max_length=seq_len,
    )  # fmt: skip
    wrapped.save_pretrained(out)
