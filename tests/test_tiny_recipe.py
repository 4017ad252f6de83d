"""``conf/tiny.yaml``, a new user's first run: its loss curves fall, and it keeps one checkpoint.

Each run is the README's command (``--config conf/X.yaml --config conf/tiny.yaml``, local data),
seeded by the configs' ``seed_everything`` on the CPU: 20 steps of dense and MoT in the default
suite (about half a minute each), 100 steps of both and 20 steps of every shipped config in the
slow ones. ``train/loss`` is the loss of one batch of 1,024 tokens, a few documents, so it moves
by some tenths with the batch's text; the checks read 3- and 5-step means of it, and
``val/loss`` (fixed batches, every 10 steps).

Measured (seed 42; before: lr 2e-3, 5 warm-up steps, clipping at 0.5 from the configs): the
3-step mean of dense's train loss climbed back 28 % of the way to its start at steps 12-16,
MoT's 28 %, val/loss fell 8.74 -> 8.71 (dense) and 8.70 -> 8.62 (MoT) from step 10 to 20;
without clipping: 2 % and 2 %, 8.76 -> 8.16 and 8.72 -> 8.13.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from motlab.analysis import read_run
from motlab.cli import cli_main

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

REPO = Path(__file__).resolve().parents[1]
OVERLAYS = {"tiny.yaml", "fsdp.yaml", "mot_switch.yaml"}
STAGE_TWO = "transition.yaml"  # stage 2 of transition tuning: starts from a MoT checkpoint
PAPER_RUNS = sorted(
    p.name for p in (REPO / "conf").glob("*.yaml") if p.name not in OVERLAYS | {STAGE_TWO}
)  # dense, expert_choice, mot, mot_32e_16, token_choice


def tiny_fit(conf: str, root: Path, c4_dir: Path, tokenizer_path: Path, *extra: str) -> Path:
    """``motlab fit --config conf/CONF --config conf/tiny.yaml`` (as shipped but for the data
    paths and the log directory); returns the version directory it logged into."""
    cli = cli_main(
        [
            "fit",
            *("--config", str(REPO / "conf" / conf), "--config", str(REPO / "conf/tiny.yaml")),
            *("--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path)),
            *("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"),
            *("--trainer.logger.init_args.save_dir", str(root)),
            *extra,
        ]
    )
    return Path(cli.trainer.log_dir)


def regained(loss: np.ndarray, window: int) -> float:
    """How far the ``window``-step mean of ``loss`` climbs back towards its start: the largest
    rise above its lowest point so far, as a fraction of the drop to that point (0 = it never
    rises; 1 = back where it started). Rises before a first drop of 0.2 are not counted."""
    mean = np.convolve(loss, np.ones(window) / window, mode="valid")
    worst = 0.0
    for t in range(1, len(mean)):
        low = mean[:t].min()
        if mean[0] - low > 0.2:
            worst = max(worst, float((mean[t] - low) / (mean[0] - low)))
    return worst


def assert_falls_in_20_steps(run_dir: Path) -> None:
    run = read_run(run_dir)
    train, val = run["train/loss"], run["val/loss"]
    assert train.steps.tolist() == list(range(1, 21)) and val.steps.tolist() == [10, 20]
    quarters = train.values.reshape(4, 5).mean(axis=1)
    assert (np.diff(quarters) < 0).all(), f"5-step means {quarters.round(3)} do not fall"
    assert regained(train.values, 3) < 0.15, f"train/loss climbs back: {train.values.round(2)}"
    assert val.values[1] < val.values[0] - 0.25, f"val/loss {val.values.round(3)}"


@pytest.fixture(scope="module")
def twenty_steps(tmp_path_factory, c4_dir, tokenizer_path) -> dict[str, Path]:
    """The 20-step tiny runs of dense and MoT, each trained once for the tests below."""
    root = tmp_path_factory.mktemp("tiny20")
    return {
        conf: tiny_fit(conf, root, c4_dir, tokenizer_path) for conf in ("dense.yaml", "mot.yaml")
    }


@pytest.mark.parametrize("conf", ["dense.yaml", "mot.yaml"])
def test_tiny_loss_falls_in_20_steps(twenty_steps, conf):
    assert_falls_in_20_steps(twenty_steps[conf])


def test_tiny_keeps_one_step_checkpoint(twenty_steps):
    """Checkpoints every 10 steps; the newest is kept with last.ckpt (about 80 MB each)."""
    for run_dir in twenty_steps.values():
        kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
        assert kept == ["last.ckpt", "step=0000020.ckpt"]


@pytest.mark.slow
@pytest.mark.parametrize("conf", ["dense.yaml", "mot.yaml"])
def test_tiny_loss_falls_in_100_steps(conf, tmp_path, c4_dir, tokenizer_path):
    run = read_run(tiny_fit(conf, tmp_path, c4_dir, tokenizer_path, "--trainer.max_steps", "100"))
    train, val = run["train/loss"].values, run["val/loss"].values
    assert len(train) == 100 and len(val) == 10
    # The early fall is not undone (the spike this recipe removes came at steps 11-16) ...
    assert regained(train[:40], 3) < 0.25, f"train/loss climbs back: {train[:40].round(2)}"
    # ... and later the batches' own spread dominates the per-batch loss, which must still
    # not return far towards its start; the fixed validation batches improve at every check.
    assert regained(train, 5) < 0.3, f"train/loss climbs back: {train.round(2)}"
    assert (np.diff(val) <= 0.01).all(), f"val/loss {val.round(3)}"
    assert val[-1] < val[0] - 0.8


@pytest.mark.slow
@pytest.mark.parametrize("conf", PAPER_RUNS)
def test_every_config_falls_in_20_tiny_steps(conf, tmp_path, c4_dir, tokenizer_path):
    """Every config that trains from scratch. Not ``transition.yaml``: stage 2 starts from a
    trained model (its loss 7.9 after 40 tiny MoT steps), where 20 steps move the loss less
    than the batches' own spread, so there is no fall to check at this size."""
    assert_falls_in_20_steps(tiny_fit(conf, tmp_path, c4_dir, tokenizer_path))
