"""``C4DataModule``: C4 (or any JSON-lines/parquet text) as packed token windows for Lightning.

Train batches are ``LongTensor`` of shape ``(batch_size, seq_len + 1)``; the training step uses
``batch[:, :-1]`` as inputs and ``batch[:, 1:]`` as targets. Validation batches have the same
shape. The train stream is endless (it starts a reshuffled epoch when the files run out), so the
run length is ``trainer.max_steps``; validate with an integer ``val_check_interval`` and
``check_val_every_n_epoch: null``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from motlab.data.loader import ResumableLoader, find_stream_states
from motlab.data.sharding import split_note, world_info
from motlab.data.sources import (
    DocFile,
    check_streamable,
    describe,
    glob_files,
    hub_files,
    local_c4_files,
)
from motlab.data.stream import PackedStream
from motlab.data.tokenizer import load_tokenizer, token_id
from motlab.data.validation import ValidationBatches

log = logging.getLogger(__name__)

SPLITS = {"train": "train", "val": "validation"}


class C4DataModule(pl.LightningDataModule):
    """Streams documents, tokenizes them in batches and packs them into windows, resumably.

    Sources, by priority: explicit ``train_files``/``val_files`` globs; ``path``, a local copy of
    C4's layout; else the hub dataset ``hub_dataset``/``hub_config``, streamed with ``datasets``.

    Attributes available right after ``__init__``: ``tokenizer`` (a ``tokenizers.Tokenizer``),
    ``vocab_size`` and ``eot_id``.

    Args:
        path: Directory in C4's layout (``PATH/en/c4-train.*.json.gz``,
            ``PATH/en/c4-validation.*.json.gz``). None streams ``hub_dataset`` from the hub.
        train_files: Glob(s) or file(s) of json/jsonl/json.gz/parquet training data; overrides
            ``path`` for training.
        val_files: Glob(s) or file(s) of validation data; overrides ``path`` for validation.
        tokenizer: Hub repo name (e.g. ``gpt2``) or path to a ``tokenizer.json`` (or its folder).
        seq_len: Tokens the model sees per sequence; batches hold ``seq_len + 1`` tokens per row.
        batch_size: Sequences per batch, per device.
        num_workers: DataLoader worker processes per device; each tokenizes its own files.
        shuffle_buffer: Documents held per worker to shuffle training documents (0 = off).
        seed: Seed for the per-epoch file order and the shuffle buffers.
        val_batches: Validation batches per device and validation run (0 = no validation).
            The validation set is the first ``val_batches * batch_size * world_size`` windows
            of the validation files in order, the same whatever ``num_workers``; it is
            tokenized once and cached.
        hub_dataset: Hugging Face dataset streamed when ``path`` and the globs are unset.
        hub_config: Its configuration (and the subfolder of ``path``), e.g. ``en``.
        text_field: Record field holding the document text.
        eot_token: End-of-text token appended after every document.
        encode_docs: Documents per ``encode_batch`` call.
        restore_state: Resume the data stream from checkpoints (exactly where it stopped). False
            starts it afresh (change ``seed`` too, or the run repeats its first data).
        global_rank: Override this process's rank (normally taken from the trainer).
        world_size: Override the number of ranks (normally taken from the trainer).
    """

    def __init__(
        self,
        path: str | None = None,
        train_files: str | list[str] | None = None,
        val_files: str | list[str] | None = None,
        tokenizer: str = "gpt2",
        seq_len: int = 256,
        batch_size: int = 32,
        num_workers: int = 4,
        shuffle_buffer: int = 10_000,
        seed: int = 42,
        val_batches: int = 20,
        hub_dataset: str = "allenai/c4",
        hub_config: str = "en",
        text_field: str = "text",
        eot_token: str = "<|endoftext|>",
        encode_docs: int = 64,
        restore_state: bool = True,
        global_rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("seq_len", seq_len, 1),
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
            ("shuffle_buffer", shuffle_buffer, 0),
            ("val_batches", val_batches, 0),
            ("encode_docs", encode_docs, 1),
        ):
            if value < low:
                raise ValueError(f"--data.{name} must be >= {low}, got {value}")
        self.save_hyperparameters()
        self.path = path
        self.train_files = train_files
        self.val_files = val_files
        self.tokenizer_name = tokenizer
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.val_batches = val_batches
        self.hub_dataset = hub_dataset
        self.hub_config = hub_config
        self.text_field = text_field
        self.encode_docs = encode_docs
        self.restore_state = restore_state
        self._rank_override = global_rank
        self._world_override = world_size

        if num_workers > 0:
            # Workers tokenize single-threaded; keep the main process (validation set) from
            # starting the tokenizer's thread pool, which would make every later fork warn.
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.tokenizer = load_tokenizer(tokenizer)
        self.eot_id: int = token_id(self.tokenizer, eot_token)
        """Id of the end-of-text token that separates documents."""
        self.vocab_size: int = self.tokenizer.get_vocab_size(with_added_tokens=True)
        """Tokenizer vocabulary size (50257 for GPT-2): the model's embedding size."""

        self.rank, self.world = 0, 1
        self._files: dict[str, list[DocFile]] = {}
        self._train_loader: ResumableLoader | None = None
        self._val_set: ValidationBatches | None = None
        self._pending_state: dict[str, Any] | None = None

    # -- sources ---------------------------------------------------------------------------

    @staticmethod
    def needs_hub(
        path: str | None = None,
        train_files: str | list[str] | None = None,
        val_files: str | list[str] | None = None,
    ) -> bool:
        """Whether data configured with these sources streams from the hub: neither a local
        ``path`` nor any file globs (the priority rule of :meth:`_resolve`)."""
        return path is None and train_files is None and val_files is None

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> None:
        """Fail within seconds if the data config (``data:`` init arguments) needs a hub that
        cannot be reached, before anything costly — a model, a compile — is built."""
        sources = (config.get("path"), config.get("train_files"), config.get("val_files"))
        if cls.needs_hub(*sources):
            dataset = config.get("hub_dataset", "allenai/c4")
            check_streamable(dataset, config.get("hub_config", "en"), "train")

    def _resolve(self, split: str) -> list[DocFile]:
        explicit = self.train_files if split == "train" else self.val_files
        if explicit is not None:
            return glob_files(explicit, f"--data.{split}_files")
        if self.path is not None:
            return local_c4_files(self.path, self.hub_config, SPLITS[split])
        if not self.needs_hub(self.path, self.train_files, self.val_files):
            hint = " (or --data.val_batches 0 to skip validation)" if split == "val" else ""
            raise ValueError(
                f"--data.{split}_files is not set and there is no --data.path: set it{hint}"
            )
        return hub_files(self.hub_dataset, self.hub_config, SPLITS[split])

    def setup(self, stage: str | None = None) -> None:
        """Find this process's rank and the data files; fails here (before training) if the
        files or the hub cannot be found."""
        trainer = getattr(self, "trainer", None)
        self.rank, self.world = world_info(trainer, self._rank_override, self._world_override)
        streams = self.world * max(1, self.num_workers)
        wanted = []
        if stage in (None, "fit"):
            wanted.append("train")
        if stage in (None, "fit", "validate", "test") and self.val_batches > 0:
            wanted.append("val")
        for split in wanted:
            if split == "val":
                self._val_set = None
            files = self._resolve(split)
            for doc_file in files:
                doc_file.check(self.text_field)
            self._files[split] = files
            log.info("%s data: %s", split, describe(files))
            note = split_note(len(files), streams, split) if split == "train" else None
            if note is not None:
                rank_zero_warn(note)

    def _files_for(self, split: str) -> list[DocFile]:
        if split not in self._files:
            self.setup("fit" if split == "train" else "validate")
        return self._files[split]

    # -- loaders ---------------------------------------------------------------------------

    def _stream(self, split: str, **kwargs: Any) -> PackedStream:
        return PackedStream(
            self._files_for(split),
            self.tokenizer,
            eot_id=self.eot_id,
            seq_len=self.seq_len,
            batch_size=self.batch_size,
            text_field=self.text_field,
            seed=self.seed,
            rank=self.rank,
            world_size=self.world,
            encode_docs=self.encode_docs,
            **kwargs,
        )

    def train_dataloader(self) -> ResumableLoader:
        """Endless, shuffled, resumable stream of ``(batch_size, seq_len + 1)`` batches."""
        dataset = self._stream(
            "train", shuffle_buffer=self.shuffle_buffer, shuffle_files=True, cycle=True
        )
        loader = ResumableLoader(
            dataset,
            rank=self.rank,
            world_size=self.world,
            track_consumer=True,  # on_before_batch_transfer reports each batch trained on
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
        )
        loader.restore_enabled = self.restore_state
        if self._pending_state is not None:
            loader.load_state_dict(self._pending_state)
            self._pending_state = None
        self._train_loader = loader
        return loader

    def val_dataloader(self) -> ValidationBatches | list[Any]:
        """The same ``val_batches`` batches every time, independent of ``num_workers``
        (:mod:`motlab.data.validation`); tokenized on first use, then cached."""
        if self.val_batches == 0:
            return []
        if self._val_set is None:
            stream = PackedStream(
                self._files_for("val"),
                self.tokenizer,
                eot_id=self.eot_id,
                seq_len=self.seq_len,
                batch_size=self.batch_size * self.world,
                text_field=self.text_field,
                max_batches=self.val_batches,
                encode_docs=self.encode_docs,
                worker_id=0,
                num_workers=1,
            )
            self._val_set = ValidationBatches(
                stream, self.rank, self.world, self.batch_size, self.val_batches
            )
        return self._val_set

    def test_dataloader(self) -> ValidationBatches | list[Any]:
        """C4 has no labelled test split here: ``motlab test`` evaluates the validation set."""
        return self.val_dataloader()

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Report each training batch the fit loop takes to the train loader, so that its saved
        position is the one after the last batch trained on, not after the batch Lightning
        prefetched (a public hook: the loop calls it once per batch, after fetching)."""
        trainer = self.trainer
        if self._train_loader is not None and trainer is not None and trainer.training:
            self._train_loader.mark_consumed()
        return batch

    def close(self) -> None:
        """Let go of what the module holds: the train loader (and with it its worker
        processes) and the cached validation set. ``setup`` and the loaders work again after."""
        self._train_loader = None
        self._val_set = None
        self._files.clear()

    # -- counters and checkpoints ----------------------------------------------------------

    @property
    def malformed_records(self) -> int:
        """Malformed records skipped so far by the train stream (all workers of this rank, kept
        across resumes) plus those in the validation prefix."""
        total = self._val_set.malformed_records if self._val_set is not None else 0
        state = self._train_loader.latest_state() if self._train_loader is not None else None
        if state is not None:
            total += sum(int(s.get("malformed", 0)) for s in find_stream_states(state))
        return total

    def state_dict(self) -> dict[str, Any]:
        """The train loader's position (all ranks), saved in Lightning checkpoints.

        Lightning's fit loop also saves it (as a stateful dataloader); this copy makes resume
        work even where the fit loop skips restoring (e.g. when ``configure_optimizers`` calls
        ``trainer.estimated_stepping_batches``, Lightning issue #20550).
        """
        if self._train_loader is None:
            return {}
        return {"train_loader": self._train_loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        loader_state = state_dict.get("train_loader")
        if not loader_state:
            return
        if not self.restore_state:
            rank_zero_warn("--data.restore_state is false: the data stream starts afresh")
            return
        if self._train_loader is not None:
            self._train_loader.load_state_dict(loader_state)
        else:
            self._pending_state = loader_state
