"""The progress bar after a resume counts the run's batches, and shows tokens/s with SI prefixes."""

from __future__ import annotations

from pathlib import Path

import pytest

from motlab.analysis import read_run
from motlab.callbacks import ProgressBar
from motlab.callbacks.summary import si
from motlab.cli import cli_main

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

CONF = Path(__file__).resolve().parents[2] / "conf"


def _fit(c4_dir: Path, tokenizer_path: Path, *extra: str):
    return cli_main(
        [
            "fit",
            *("--config", str(CONF / "dense.yaml"), "--config", str(CONF / "tiny.yaml")),
            *("--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path)),
            *("--data.seq_len", "16", "--data.num_workers", "0", "--data.val_batches", "1"),
            *extra,
        ]
    )


def test_a_resumed_bar_counts_from_the_resumed_batch_out_of_the_whole_run(
    tmp_path, monkeypatch, c4_dir, tokenizer_path
) -> None:
    monkeypatch.chdir(tmp_path)
    _fit(c4_dir, tokenizer_path, "--trainer.max_steps", "3")
    cli = _fit(c4_dir, tokenizer_path, "--trainer.max_steps", "6", "--ckpt_path", "last")
    bar = next(cb for cb in cli.trainer.callbacks if isinstance(cb, ProgressBar))
    train = bar.train_progress_bar
    # Lightning's own bar: total 3 (the remaining steps) while counting 4, 5, 6 ("6/?"), and a
    # rate that counts the 3 earlier batches as done in this run's first second.
    assert (train.initial, train.n, train.total) == (3, 6, 6)
    assert train.format_dict["initial"] == 3  # tqdm's rate excludes the earlier batches


def test_tokens_per_second_read_with_si_prefixes(tmp_path, monkeypatch, c4_dir, tokenizer_path):
    monkeypatch.chdir(tmp_path)
    cli = _fit(c4_dir, tokenizer_path, "--trainer.max_steps", "2")
    bar = next(cb for cb in cli.trainer.callbacks if isinstance(cb, ProgressBar))
    shown = bar.get_metrics(cli.trainer, cli.model)["tok/s"]
    # A number: the one logged at the run's last step (step 2, TensorBoard index 1),
    logged = read_run(tmp_path / "runs/dense")["perf/tokens_per_sec"]
    assert list(logged.steps) == [0, 1]
    assert float(shown) == pytest.approx(logged.final, rel=1e-6)
    train = bar.train_progress_bar
    train.set_postfix({"tok/s": shown}, refresh=False)
    assert train.postfix == f"tok/s={si(float(shown))}"  # shown as 2.5k: no 2.5e+03, no 2.5k0
