"""Resuming with ``--ckpt_path last`` continues weights, optimiser, schedule and data exactly."""

from __future__ import annotations

import signal
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


def _fit(conf: str, c4_dir: Path, tokenizer_path: Path, *extra: str):
    return cli_main(
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


def _stopped_and_resumed(
    root: Path, c4_dir: Path, tokenizer_path: Path, sig: str, batch: int, *extra: str
):
    """A 2N-step run stopped by ``sig`` sent after micro-batch ``batch``, then resumed with the
    command
    it printed; returns its run directory and the stopped run's CLI (``saved_step``: the step
    its last.ckpt held before the resume)."""
    root.mkdir()
    mp = pytest.MonkeyPatch()
    try:
        mp.chdir(root)
        stopper = ("--trainer.callbacks+=signals.SignalAt", "--trainer.callbacks.batch",
                   str(batch), "--trainer.callbacks.sig", sig)  # fmt: skip
        args = [*extra, "--trainer.max_steps", str(2 * N), *stopper]
        stopped = _fit("mot.yaml", c4_dir, tokenizer_path, *args)
        last = root / stopped.trainer.checkpoint_callback.last_model_path
        stopped.saved_step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
        _fit("mot.yaml", c4_dir, tokenizer_path, *extra, "--trainer.max_steps", str(2 * N),
             "--ckpt_path", "last")  # fmt: skip
    finally:
        mp.undo()
    return root / "runs/mot", stopped


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_stopped_run_saves_its_step_and_resumes_exactly(
    runs, sig, tmp_path, c4_dir, tokenizer_path
):
    """Ctrl-C or SIGTERM after step N - 1: last.ckpt holds that step (there is no interval save
    there), the resume command is printed, and resuming from it equals the uninterrupted run."""
    # After micro-batch N - 2, i.e. step N - 1: off the checkpoint interval of N steps.
    run, stopped = _stopped_and_resumed(tmp_path / sig, c4_dir, tokenizer_path, sig, N - 2)
    assert stopped.trainer.global_step == stopped.saved_step == N - 1
    result = stopped.stop_result
    assert result.signal.name == sig and result.step == N - 1
    assert result.exit_status == stopped.exit_status == 128 + getattr(signal, sig)
    assert result.checkpoint == stopped.trainer.checkpoint_callback.last_model_path
    assert Path(result.checkpoint).name == "last.ckpt"
    assert result.resume_command.startswith("motlab fit --config")
    assert result.resume_command.endswith(f"--ckpt_path {result.checkpoint}")
    message = result.message()
    assert f"stopped after step {N - 1}" in message and "--ckpt_path" in message
    assert message.splitlines()[-1] == f"resume with: {result.resume_command}"
    a = load_model(runs["straight"] / "version_0/checkpoints/last.ckpt").state_dict()
    b = load_model(run / "version_0/checkpoints/last.ckpt").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert _scalars(run / "version_0", "train/loss") == _scalars(
        runs["straight"] / "version_0", "train/loss"
    )


def test_a_stop_mid_accumulation_waits_for_the_step(tmp_path, c4_dir, tokenizer_path):
    """With 2 micro-batches per step, a SIGTERM after the first micro-batch of step 2 stops
    after that step's update, not before it."""
    _, stopped = _stopped_and_resumed(
        tmp_path / "acc", c4_dir, tokenizer_path, "SIGTERM", 2,
        "--trainer.accumulate_grad_batches", "2",
    )  # fmt: skip
    assert stopped.trainer.global_step == stopped.saved_step == 2


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


def test_extending_a_finished_run_logs_every_step_once(tmp_path, c4_dir, tokenizer_path):
    """A run that ended off its checkpoint interval, resumed to a later max_steps, logs each
    step once at its own index (its last.ckpt was written where Lightning writes step
    checkpoints; one written at the end of training made every resumed step log one late)."""
    mp = pytest.MonkeyPatch()
    try:
        mp.chdir(tmp_path)
        extra = ("--trainer.val_check_interval", "1", "--checkpoint.every_n_train_steps", "2")
        _fit("dense.yaml", c4_dir, tokenizer_path, *extra, "--trainer.max_steps", str(N))
        _fit("dense.yaml", c4_dir, tokenizer_path, *extra, "--trainer.max_steps", str(2 * N),
             "--ckpt_path", "last")  # fmt: skip
    finally:
        mp.undo()
    run = tmp_path / "runs/dense/version_0"
    for tag in ("train/loss", "val/loss"):
        assert sorted(_scalars(run, tag)) == list(range(2 * N)), tag
