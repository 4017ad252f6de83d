"""Bad input ends within seconds in one ``error:`` block that names the problem and the fix.

``motlab``'s console entry point prints motlab's own input errors (configuration, files, the
hub) without a traceback and exits with status 2; ``MOTLAB_TRACEBACK=1`` keeps the traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import motlab
from motlab.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def _tiny(c4_dir: Path, tokenizer: Path | str, *extra: str) -> list[str]:
    return [
        "fit",
        *("--config", str(CONF / "mot.yaml"), "--config", str(CONF / "tiny.yaml")),
        *("--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer)),
        *("--data.seq_len", "16", "--data.num_workers", "0", "--data.val_batches", "1"),
        *("--trainer.max_steps", "1", "--trainer.enable_progress_bar", "false"),
        *extra,
    ]


def _error(capsys, argv: list[str]) -> str:
    """Run ``motlab ARGV``; it must exit with 2 and one error block, returned."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    block = err[err.index("error: ") :]
    assert block.rstrip().endswith("(set MOTLAB_TRACEBACK=1 for the full traceback)")
    assert len(block.splitlines()) <= 6, block
    return block


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    model = motlab.GPT(motlab.GPTConfig(size=None, d_model=16, d_ff=32, n_layers=2, n_heads=2,
                                        vocab_size=50257, seq_len=16))  # fmt: skip
    motlab.save_model(model, tmp_path / "dense.pt")
    return tmp_path / "dense.pt"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--model.optim.lr", "-1"], "model.optim.lr must be > 0, got -1.0"),
        (["--model.optim.warmup_steps", "-3"], "model.optim.warmup_steps must be >= 0"),
        (["--model.optim.min_lr_ratio", "1.5"], "model.optim.min_lr_ratio must be in [0, 1]"),
        (["--model.optim.betas", "[0.9, 1.2]"], "model.optim.betas must be two numbers in [0, 1)"),
        (["--model.net.n_heads", "3"], "model.net.n_heads (3) must divide model.net.d_model (64)"),
        (["--model.net.ffn.top_k", "3"], "unknown key(s) ['top_k'] for feed-forward variant"),
        (["--model.net.ffn.n_experts", "abc"], "model.net.ffn.n_experts='abc' is not int"),
        (["--data.batch_size", "24"], "data.batch_size=24 (per device) is not a multiple"),
        (["--data.seq_len", "0"], "--data.seq_len must be >= 1"),
        (["--model.transition.switch_at", "-1"], "model.transition.switch_at must be >= 0"),
    ],
)
def test_configuration_errors_are_one_block(flags, expected, capsys, c4_dir, tokenizer_path):
    block = _error(capsys, _tiny(c4_dir, tokenizer_path, *flags))
    assert expected in block


def test_traceback_on_request(monkeypatch, c4_dir, tokenizer_path) -> None:
    monkeypatch.setenv("MOTLAB_TRACEBACK", "1")
    with pytest.raises(ValueError, match="model.optim.lr must be > 0"):
        main(_tiny(c4_dir, tokenizer_path, "--model.optim.lr", "-1"))


def test_a_truncated_tokenizer_is_named(capsys, c4_dir, tokenizer_path, tmp_path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_bytes(Path(tokenizer_path).read_bytes()[:300])
    block = _error(capsys, _tiny(c4_dir, bad))
    assert f"--data.tokenizer {bad}: not a valid tokenizer.json" in block


def test_a_ckpt_path_that_is_not_a_checkpoint_is_named(capsys, c4_dir, tokenizer_path) -> None:
    block = _error(capsys, _tiny(c4_dir, tokenizer_path, "--ckpt_path", str(CONF / "mot.yaml")))
    assert f"--ckpt_path {CONF / 'mot.yaml'} is not a motlab checkpoint" in block


def test_a_broken_init_from_is_named(capsys, c4_dir, tokenizer_path, checkpoint) -> None:
    broken = checkpoint.with_name("broken.pt")
    broken.write_bytes(checkpoint.read_bytes()[:1000])  # truncated
    block = _error(capsys, _tiny(c4_dir, tokenizer_path, "--model.init_from", str(broken)))
    assert f"model.init_from {broken} is not a motlab checkpoint" in block
    assert "truncated, corrupt or of another format" in block


def test_init_from_an_experiment_without_checkpoints(capsys, c4_dir, tokenizer_path, tmp_path):
    block = _error(capsys, _tiny(c4_dir, tokenizer_path, "--model.init_from", str(tmp_path)))
    assert f"model.init_from no last.ckpt in {tmp_path}" in block


class _Payload:
    """Unpickling this would run code; weights_only loading must refuse it."""

    def __reduce__(self):
        return (os.system, ("echo unpickled",))


def test_checkpoints_are_never_unpickled(tmp_path, checkpoint) -> None:
    evil = tmp_path / "evil.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    torch.save({**state, "payload": _Payload()}, evil)
    with pytest.raises(ValueError, match=r"evil\.ckpt holds objects other than tensors") as err:
        motlab.load_model(evil)
    assert "weights_only=True" in str(err.value)
    assert isinstance(motlab.load_model(checkpoint), motlab.GPT)  # motlab's own files load


def test_the_console_command_answers_within_seconds(c4_dir, tokenizer_path, tmp_path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("MOTLAB_TRACEBACK", None)
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "motlab", *_tiny(c4_dir, tokenizer_path, "--model.optim.lr", "-1")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "error: model.optim.lr must be > 0, got -1.0" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - start < 60  # interpreter and torch start-up included
