"""Fixtures for the evaluation tests: a tiny MoT checkpoint trained by ``motlab fit``.

The checkpoint is a real Lightning checkpoint (conf/mot.yaml + conf/tiny.yaml: group size 32,
seq_len 32, d_model 64), trained for a few steps on the local C4 sample, so it also carries the
data module's tokenizer and data path that the backend takes its defaults from.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from motlab.cli import cli_main

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture(scope="session")
def mot_checkpoint(tmp_path_factory, c4_dir: Path, tokenizer_path: Path) -> Path:
    out = tmp_path_factory.mktemp("mot_ckpt")
    cli_main(
        ["fit", "--config", str(CONF / "mot.yaml"), "--config", str(CONF / "tiny.yaml"),
         "--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path),
         "--data.num_workers", "0", "--data.val_batches", "0", "--trainer.max_steps", "3",
         "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false", "--checkpoint.dirpath", str(out)]
    )  # fmt: skip
    return out / "last.ckpt"


@pytest.fixture(scope="session")
def tokenizer(tokenizer_path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(tokenizer_path))
