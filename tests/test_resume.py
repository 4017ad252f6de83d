"""Resuming with ``--ckpt_path last`` continues weights, optimiser, schedule and data exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from motlab import load_model
from motlab.cli import cli_main
from motlab.lit import LitLM

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

REPO = Path(__file__).resolve().parents[1]
N = 3  # steps before the interruption; the full run is 2N


def _fit(conf: str, c4_dir: Path, tokenizer_path: Path, *extra: str) -> None:
    cli_main(
        [
            "fit",
            *("--config", str(REPO / "conf" / conf), "--config", str(REPO / "conf/tiny.yaml")),
            *("--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path)),
            *("--data.seq_len", "16", "--data.num_workers", "1", "--data.val_batches", "1"),
            *("--model.optim.total_steps", str(2 * N), "--model.optim.warmup_steps", "2"),
            *("--trainer.val_check_interval", str(N), "--trainer.enable_progress_bar", "false"),
            *("--checkpoint.every_n_train_steps", str(N)),
            *extra,
        ]
    )


def _scalars(run_dir: Path, tag: str) -> dict[int, float]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, c4_dir, tokenizer_path) -> dict[str, Path]:
    """One uninterrupted 2N-step run, and an N-step run resumed to 2N with --ckpt_path last."""
    root = tmp_path_factory.mktemp("resume")
    straight, resumed = root / "straight", root / "resumed"
    mp = pytest.MonkeyPatch()
    try:
        for d in (straight, resumed):
            d.mkdir()
        mp.chdir(straight)
        _fit("mot.yaml", c4_dir, tokenizer_path, "--trainer.max_steps", str(2 * N))
        mp.chdir(resumed)
        _fit("mot.yaml", c4_dir, tokenizer_path, "--trainer.max_steps", str(N))
        _fit(
            "mot.yaml", c4_dir, tokenizer_path, "--trainer.max_steps", str(2 * N),
            "--ckpt_path", "last",
        )  # fmt: skip
    finally:
        mp.undo()
    return {"straight": straight / "runs/mot", "resumed": resumed / "runs/mot"}


def test_resume_gives_the_same_weights(runs):
    a = load_model(runs["straight"] / "version_0/checkpoints/last.ckpt").state_dict()
    b = load_model(runs["resumed"] / "version_0/checkpoints/last.ckpt").state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_resume_logs_the_same_losses_into_the_same_run(runs):
    # --ckpt_path last continued in version_0 rather than starting version_1.
    assert not (runs["resumed"] / "version_1").exists()
    for tag in ("train/loss", "lr/decay", "val/loss"):
        straight = _scalars(runs["straight"] / "version_0", tag)
        resumed = _scalars(runs["resumed"] / "version_0", tag)
        assert straight.keys() == resumed.keys(), tag
        assert straight == pytest.approx(resumed, rel=0, abs=0), tag
    assert len(_scalars(runs["straight"] / "version_0", "train/loss")) == 2 * N


def test_resume_from_another_variant_is_refused(runs, c4_dir, tokenizer_path, monkeypatch):
    monkeypatch.chdir(runs["resumed"].parent.parent)
    ckpt = runs["resumed"] / "version_0/checkpoints/last.ckpt"
    with pytest.raises(ValueError, match="'mot'.*'token_choice'"):
        _fit(
            "token_choice.yaml", c4_dir, tokenizer_path, "--trainer.max_steps", str(3 * N),
            "--ckpt_path", str(ckpt),
        )  # fmt: skip


def test_resume_last_without_a_checkpoint_is_an_error(
    tmp_path, c4_dir, tokenizer_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no last.ckpt"):
        _fit("dense.yaml", c4_dir, tokenizer_path, "--ckpt_path", "last")


def test_load_model_reads_a_fit_checkpoint(runs):
    ckpt = runs["straight"] / "version_0/checkpoints/last.ckpt"
    model = load_model(ckpt)
    assert model.cfg.ffn.variant == "mot" and model.cfg.d_model == 64
    assert model.cfg.vocab_size == 50257 and model.cfg.seq_len == 16
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    torch.testing.assert_close(model.head.weight, state["net.head.weight"])
    tokens = torch.randint(0, model.cfg.vocab_size, (32, 16))
    assert model(tokens).shape == (32, 16, model.cfg.vocab_size)
    lit = LitLM.load_from_checkpoint(ckpt, map_location="cpu")
    torch.testing.assert_close(lit.net.head.weight, model.head.weight)
