"""Transition tuning through the training CLI: two-stage runs and the in-run switch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from motlab import load_model
from motlab.calibration import calibrate_routers
from motlab.cli import cli_main
from motlab.layers import TokenChoice
from motlab.transition import convert_model

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

REPO = Path(__file__).resolve().parents[1]


def _args(command: str, conf: str, c4_dir: Path, tokenizer_path: Path, *extra: str) -> list[str]:
    return [
        command,
        *("--config", str(REPO / "conf" / conf), "--config", str(REPO / "conf/tiny.yaml")),
        *("--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path)),
        *("--data.seq_len", "16", "--data.num_workers", "0", "--data.val_batches", "2"),
        *("--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", "runs"),
        *extra,
    ]


def _scalars(run_dir: Path, tag: str) -> dict[int, float]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def _val_loss(cli) -> float:
    return float(cli.trainer.callback_metrics["val/loss"])


def test_two_stage_transition(tmp_path, monkeypatch, c4_dir, tokenizer_path) -> None:
    monkeypatch.chdir(tmp_path)
    stage1 = ("--trainer.max_steps", "40", "--trainer.val_check_interval", "40")
    cli_main(_args("fit", "mot.yaml", c4_dir, tokenizer_path, *stage1))
    ckpt = tmp_path / "runs/mot/version_0/checkpoints/last.ckpt"
    mot_state = load_model(ckpt).state_dict()

    fresh = cli_main(_args("validate", "transition.yaml", c4_dir, tokenizer_path))
    start = cli_main(
        _args("validate", "transition.yaml", c4_dir, tokenizer_path, "--model.init_from", str(ckpt))
    )
    assert math.isfinite(_val_loss(start))
    assert _val_loss(start) < _val_loss(fresh) - 1.0  # stage 2 starts from stage 1's weights

    stage2 = ("--trainer.max_steps", "4", "--trainer.val_check_interval", "4")
    cli = cli_main(
        _args(
            "fit",
            "transition.yaml",
            c4_dir,
            tokenizer_path,
            "--model.init_from",
            str(ckpt),
            *stage2,
        )
    )
    assert all(isinstance(cli.model.net.blocks[i].ffn, TokenChoice) for i in (1,))
    assert cli.trainer.optimizers[0].state_dict()["state"][0]["step"] == 4  # a fresh optimiser
    tc = load_model(cli.trainer.checkpoint_callback.last_model_path)
    assert tc(torch.randint(0, 100, (1, 16))).shape == (1, 16, tc.cfg.vocab_size)  # B = 1
    assert set(mot_state) - set(tc.state_dict()) == {"blocks.1.ffn.log_temperature"}


def test_two_stage_transition_calibrates_the_routers_on_its_first_batch(
    tmp_path, monkeypatch, c4_dir, tokenizer_path, lightning_messages
) -> None:
    """Stage 2 with model.transition.calibration: the routers (only they) leave the MoT's
    values at the first batch, calibrated as calibrate_routers does on that batch; resuming
    stage 2 does not calibrate again."""
    monkeypatch.chdir(tmp_path)
    stage1 = ("--trainer.max_steps", "20", "--trainer.val_check_interval", "20")
    cli_main(_args("fit", "mot.yaml", c4_dir, tokenizer_path, *stage1))
    ckpt = tmp_path / "runs/mot/version_0/checkpoints/last.ckpt"
    mot_bytes = ckpt.read_bytes()
    stage2 = (
        *("--model.init_from", str(ckpt), "--model.transition.calibration", "centre"),
        *("--trainer.val_check_interval", "2", "--checkpoint.every_n_train_steps", "1"),
    )
    args = _args("fit", "transition.yaml", c4_dir, tokenizer_path, *stage2)
    cli = cli_main([*args[1:], "--trainer.max_steps", "4"], run=False)  # fit below
    first: list[torch.Tensor] = []
    routers: list[torch.Tensor] = []

    class Record(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if not first:
                first.append(batch.clone())

        def on_before_backward(self, trainer, pl_module, loss) -> None:
            if not routers:
                routers.append(pl_module.net.blocks[1].ffn.experts.router.detach().clone())

    cli.trainer.callbacks.append(Record())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    expected = convert_model(load_model(ckpt))
    calibrate_routers(expected, first[0][:, :-1], "centre")
    torch.testing.assert_close(routers[0], expected.blocks[1].ffn.experts.router)
    assert len([m for m in lightning_messages if "calibrated (centre)" in m]) == 1

    cli_main([*args, "--trainer.max_steps", "6", "--ckpt_path", "last"])
    assert len([m for m in lightning_messages if "calibrated (centre)" in m]) == 1
    assert ckpt.read_bytes() == mot_bytes  # the MoT checkpoint is only read


def test_in_run_calibration_changes_only_the_routers_and_only_at_the_switch(
    tmp_path, monkeypatch, c4_dir, tokenizer_path
) -> None:
    """The in-run switch with and without calibration: the MoT trains identically up to the
    switch, and at the switch the calibration changes the routers and nothing else."""
    states: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    for calibration in ("none", "standardise"):
        (tmp_path / calibration).mkdir()
        monkeypatch.chdir(tmp_path / calibration)
        args = _args(
            "fit",
            "mot.yaml",
            c4_dir,
            tokenizer_path,
            *SWITCH,
            *("--model.transition.calibration", calibration, "--trainer.max_steps", "5"),
        )
        cli = cli_main(args[1:], run=False)
        states[calibration] = {}

        class Record(Callback):
            def __init__(self, seen: dict[str, dict[str, torch.Tensor]]) -> None:
                self.seen = seen

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
                if trainer.global_step == 4:  # callbacks run before the module: still MoT
                    assert not isinstance(pl_module.net.blocks[1].ffn, TokenChoice)
                    self.seen["mot"] = {k: v.clone() for k, v in pl_module.net.state_dict().items()}

            def on_before_backward(self, trainer, pl_module, loss) -> None:
                if trainer.global_step == 4:  # switched (and calibrated), before its update
                    self.seen["tc"] = {k: v.clone() for k, v in pl_module.net.state_dict().items()}

        cli.trainer.callbacks.append(Record(states[calibration]))
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    plain, calibrated = states["none"], states["standardise"]
    assert plain["mot"].keys() == calibrated["mot"].keys()
    for key, value in plain["mot"].items():
        assert torch.equal(value, calibrated["mot"][key]), key
    router = "blocks.1.ffn.experts.router"
    for key, value in plain["tc"].items():
        assert torch.equal(value, calibrated["tc"][key]) == (key != router), key
    assert torch.equal(plain["tc"][router], plain["mot"][router])  # the plain switch keeps it


def test_init_from_mot_with_other_experts_fails_clearly(
    tmp_path, monkeypatch, c4_dir, tokenizer_path
) -> None:
    monkeypatch.chdir(tmp_path)
    cli_main(_args("fit", "mot.yaml", c4_dir, tokenizer_path, "--trainer.max_steps", "1"))
    ckpt = tmp_path / "runs/mot/version_0/checkpoints/last.ckpt"
    with pytest.raises(ValueError, match="MoT checkpoint.*n_experts 32") as err:
        cli_main(
            _args(
                "validate",
                "transition.yaml",
                c4_dir,
                tokenizer_path,
                "--model.init_from",
                str(ckpt),
                "--model.net.ffn.n_experts",
                "16",
            )
        )
    # Only the key that differs, as the user sets it (it printed both whole config dicts).
    assert str(err.value).endswith(
        "differs from the configured token_choice model in model.net.ffn.n_experts: "
        "checkpoint 32 vs config 16"
    )


SWITCH = (
    "--model.transition.switch_at",
    "4",
    "--trainer.val_check_interval",
    "2",
    "--checkpoint.every_n_train_steps",
    "3",
    "--model.optim.total_steps",
    "8",
)


def test_in_run_switch_keeps_the_optimizer_and_logs_per_mode(
    tmp_path, monkeypatch, c4_dir, tokenizer_path
) -> None:
    monkeypatch.chdir(tmp_path)
    seen: list[tuple[int, str]] = []
    args = _args(
        "fit",
        "mot.yaml",
        c4_dir,
        tokenizer_path,
        *SWITCH,
        "--trainer.max_steps",
        "8",
        "--model.discrete_eval",
        "true",
    )
    cli = cli_main(args[1:], run=False)  # no subcommand: build only, fit below

    class RecordRouting(Callback):
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            seen.append((trainer.global_step, type(pl_module.net.blocks[1].ffn).__name__))

    cli.trainer.callbacks.append(RecordRouting())
    w1 = cli.model.net.blocks[1].ffn.experts.w1
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert seen[:4] == [(1, "MoT"), (2, "MoT"), (3, "MoT"), (4, "MoT")]
    assert seen[4:] == [
        (5, "TokenChoice"),
        (6, "TokenChoice"),
        (7, "TokenChoice"),
        (8, "TokenChoice"),
    ]
    assert cli.model.net.blocks[1].ffn.experts.w1 is w1  # the same Parameter, trained on
    optimizer = cli.trainer.optimizers[0]
    assert optimizer.state[w1]["step"] == 8  # its AdamW state was never reset

    run = tmp_path / "runs/mot/version_0"
    assert set(_scalars(run, "val/mot/loss")) == {1, 3}  # validation after steps 2 and 4
    assert set(_scalars(run, "val/token_choice/loss")) == {5, 7}
    assert set(_scalars(run, "val/mot_discrete/loss")) == {1, 3}
    assert set(_scalars(run, "val/loss")) == {1, 3, 5, 7}
    assert (
        "routing/block1/dropped_fraction" in EventAccumulator(str(run)).Reload().Tags()["scalars"]
    )


@pytest.mark.parametrize("calibration", ["none", "standardise"])
def test_resume_after_the_switch_is_exact(
    tmp_path, monkeypatch, c4_dir, tokenizer_path, calibration, lightning_messages
) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for d in (straight, resumed):
        d.mkdir()
    switch = (*SWITCH, "--model.transition.calibration", calibration)
    monkeypatch.chdir(straight)
    cli_main(_args("fit", "mot.yaml", c4_dir, tokenizer_path, *switch, "--trainer.max_steps", "8"))
    monkeypatch.chdir(resumed)
    cli_main(_args("fit", "mot.yaml", c4_dir, tokenizer_path, *switch, "--trainer.max_steps", "6"))
    cli_main(
        _args(
            "fit",
            "mot.yaml",
            c4_dir,
            tokenizer_path,
            *switch,
            "--trainer.max_steps",
            "8",
            "--ckpt_path",
            "last",
        )
    )
    # Calibrated once per run at the switch, not again after resuming past it.
    calibrated = [m for m in lightning_messages if "calibrated (standardise)" in m]
    assert len(calibrated) == (2 if calibration == "standardise" else 0)
    assert all(m.startswith("step 4: token-choice routers of blocks [1]") for m in calibrated)
    a = load_model(straight / "runs/mot/version_0/checkpoints/last.ckpt").state_dict()
    b = load_model(resumed / "runs/mot/version_0/checkpoints/last.ckpt").state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
