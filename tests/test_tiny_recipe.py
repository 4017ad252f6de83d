"""``conf/tiny.yaml``, a new user's first run: it keeps one step checkpoint besides last.ckpt."""

from __future__ import annotations

from pathlib import Path

import pytest

from motlab.cli import cli_main

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="module")
def twenty_steps(tmp_path_factory, c4_dir, tokenizer_path) -> dict[str, Path]:
    """The 20-step tiny runs of dense and MoT, each trained once for the test below."""
    root = tmp_path_factory.mktemp("tiny20")
    return {
        conf: tiny_fit(conf, root, c4_dir, tokenizer_path) for conf in ("dense.yaml", "mot.yaml")
    }


def test_tiny_keeps_one_step_checkpoint(twenty_steps):
    """Checkpoints every 10 steps; the newest is kept with last.ckpt (about 80 MB each)."""
    for run_dir in twenty_steps.values():
        kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
        assert kept == ["last.ckpt", "step=0000020.ckpt"]
