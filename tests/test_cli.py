"""The ``motlab`` command: config merging, argument links, subcommands and early errors."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
import yaml

from motlab.cli import cli_main

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def print_config(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def data_args(c4_dir: Path, tokenizer_path: Path) -> list[str]:
    return [
        *("--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path)),
        *("--data.seq_len", "16", "--data.num_workers", "0", "--data.val_batches", "1"),
        *("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"),
    ]


def test_configs_merge_in_order_and_flags_win(capsys):
    cfg = print_config(
        capsys, "--config", str(CONF / "mot.yaml"), "--config", str(CONF / "tiny.yaml"),
        "--model.net.d_model", "96", "--trainer.max_steps", "7",
    )  # fmt: skip
    net = cfg["model"]["net"]
    assert net["size"] is None and net["n_layers"] == 2 and net["d_model"] == 96
    assert net["ffn"]["variant"] == "mot" and net["ffn"]["group_size"] == 32
    assert cfg["trainer"]["precision"] == "32-true" and cfg["trainer"]["max_steps"] == 7
    assert cfg["model"]["optim"]["weight_decay"] == 0.1  # from mot.yaml, untouched by tiny.yaml


def test_a_flag_changes_one_ffn_key(capsys):
    cfg = print_config(
        capsys, "--config", str(CONF / "mot.yaml"), "--model.net.ffn.n_experts", "16"
    )
    assert cfg["model"]["net"]["ffn"]["variant"] == "mot"
    assert cfg["model"]["net"]["ffn"]["n_experts"] == 16
    assert cfg["model"]["net"]["ffn"]["group_size"] == 32


def test_fsdp_overlay_parses(capsys):
    cfg = print_config(
        capsys, "--config", str(CONF / "mot.yaml"), "--config", str(CONF / "fsdp.yaml")
    )
    strategy = cfg["trainer"]["strategy"]
    assert strategy["class_path"].endswith("FSDPStrategy")
    assert strategy["init_args"]["auto_wrap_policy"] == ["motlab.model.Block"]
    assert strategy["init_args"]["state_dict_type"] == "full"
    plain = print_config(capsys, "--config", str(CONF / "mot.yaml"), "--trainer.strategy", "fsdp")
    assert plain["trainer"]["strategy"] == "fsdp"


def test_vocab_and_seq_len_are_bound_from_the_data(c4_dir, tokenizer_path):
    cli = cli_main(
        ["--config", str(CONF / "token_choice.yaml"), "--config", str(CONF / "tiny.yaml"),
         *data_args(c4_dir, tokenizer_path), "--data.seq_len", "24"],
        run=False,
    )  # fmt: skip
    assert cli.model.net.cfg.vocab_size == cli.datamodule.vocab_size == 50257
    assert cli.model.net.cfg.seq_len == 24


def test_float32_matmul_precision_applies_on_cuda_machines_only(
    c4_dir, tokenizer_path, monkeypatch
):
    """The GPU configs ask for TF32 router matmuls; a machine without CUDA is left as it is
    (the CPU backend would otherwise take the setting too)."""
    args = ["--config", str(CONF / "mot.yaml"), "--config", str(CONF / "tiny.yaml"),
            *data_args(c4_dir, tokenizer_path), "--trainer.logger", "false"]  # fmt: skip
    before = torch.get_float32_matmul_precision()
    try:
        cli = cli_main(args, run=False)
        assert cli.config["float32_matmul_precision"] == "high"
        assert torch.get_float32_matmul_precision() == before
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        cli_main(args, run=False)
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_unknown_key_in_a_config_file_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  net:\n    d_modle: 64\n")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(CONF / "mot.yaml"), "--config", str(bad)])
    assert exit_info.value.code == 2
    assert "model.net.d_modle" in capsys.readouterr().err


def test_unknown_flag_is_named_and_not_abbreviated(capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", str(CONF / "mot.yaml"), "--trainer.max_step", "3"])
    assert "--trainer.max_step" in capsys.readouterr().err


def test_unknown_ffn_key_lists_the_valid_ones(c4_dir, tokenizer_path):
    """A key of another variant (a key of none: tests/test_config_keys.py)."""
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['top_k'\] for .* 'mot'.*valid keys"):
        cli_main(
            ["--config", str(CONF / "mot.yaml"), "--config", str(CONF / "tiny.yaml"),
             *data_args(c4_dir, tokenizer_path), "--model.net.ffn.top_k", "4"],
            run=False,
        )  # fmt: skip


@pytest.mark.parametrize("conf", ["mot.yaml", "expert_choice.yaml"])
def test_batch_not_a_multiple_of_the_group_fails_before_training(conf, c4_dir, tokenizer_path):
    with pytest.raises(ValueError, match=r"data\.batch_size=24 .*model\.net\.ffn\.group_size=32"):
        cli_main(
            ["fit", "--config", str(CONF / conf), "--config", str(CONF / "tiny.yaml"),
             *data_args(c4_dir, tokenizer_path), "--data.batch_size", "24"]
        )  # fmt: skip


def test_fit_validate_test_and_init_from(c4_dir, tokenizer_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = [
        *("--config", str(CONF / "mot.yaml"), "--config", str(CONF / "tiny.yaml")),
        *data_args(c4_dir, tokenizer_path),
    ]
    fitted = cli_main(
        ["fit", *common, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
         "--speed.peak_flops", "1e12"]
    )  # fmt: skip
    assert 0 < float(fitted.trainer.callback_metrics["perf/mfu"]) < 1
    ckpt = tmp_path / "runs/mot/version_0/checkpoints/last.ckpt"
    assert ckpt.is_file()

    validated = cli_main(["validate", *common, "--ckpt_path", "last"])
    val_loss = float(validated.trainer.callback_metrics["val/loss"])
    tested = cli_main(["test", *common, "--ckpt_path", str(ckpt)])
    assert float(tested.trainer.callback_metrics["test/loss"]) == pytest.approx(val_loss)
    # model.init_from: the same weights without resuming anything else.
    initialised = cli_main(["validate", *common, "--model.init_from", str(ckpt)])
    assert float(initialised.trainer.callback_metrics["val/loss"]) == pytest.approx(val_loss)
    fresh = cli_main(["validate", *common])
    assert float(fresh.trainer.callback_metrics["val/loss"]) != pytest.approx(val_loss)


def test_python_dash_m_motlab(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "motlab", "fit", "--config", str(CONF / "dense.yaml")]
    out = subprocess.run(
        [*cmd, "--print_config"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    assert yaml.safe_load(out.stdout)["model"]["net"]["ffn"]["variant"] == "dense"


def test_console_script_is_the_cli():
    scripts = entry_points(group="console_scripts")
    assert [ep.value for ep in scripts if ep.name == "motlab"] == ["motlab.cli:main"]


def test_unreachable_hub_fails_before_the_model_is_built(tokenizer_path, monkeypatch):
    """conf/mot.yaml streams C4 from the hub; offline, the CLI says how to use local files
    before it builds (and compiles) a 337M-parameter model."""
    import motlab.lit
    from motlab.data import HubUnreachableError

    def must_not_build(*args, **kwargs):
        raise AssertionError("the model was built before the hub was checked")

    monkeypatch.setattr(motlab.lit, "GPT", must_not_build)
    with pytest.raises(HubUnreachableError, match=r"--data\.path DIR"):
        cli_main(
            ["fit", "--config", str(CONF / "mot.yaml"), "--data.tokenizer", str(tokenizer_path)]
        )


def test_fit_without_a_logger(c4_dir, tokenizer_path, tmp_path, caplog):
    """--trainer.logger false drops the learning-rate monitor instead of failing on it."""
    cli = cli_main(
        ["fit", "--config", str(CONF / "dense.yaml"), "--config", str(CONF / "tiny.yaml"),
         *data_args(c4_dir, tokenizer_path), "--trainer.max_steps", "1",
         "--trainer.logger", "false", "--checkpoint.dirpath", str(tmp_path)]
    )  # fmt: skip
    assert cli.trainer.global_step == 1 and not cli.trainer.loggers
    assert (tmp_path / "last.ckpt").is_file()


@pytest.mark.parametrize("command", ["compare", "zeroshot"])
def test_analysis_commands_are_dispatched(command, capsys):
    from motlab.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"motlab {command}" in capsys.readouterr().out


def test_init_from_an_experiment_directory_or_last(
    c4_dir, tokenizer_path, tmp_path, monkeypatch, lightning_messages
):
    """--model.init_from runs/mot (or last, inside the mot experiment) takes the newest
    last.ckpt and says which one: path, variant and step."""
    monkeypatch.chdir(tmp_path)
    common = [
        *("--config", str(CONF / "mot.yaml"), "--config", str(CONF / "tiny.yaml")),
        *data_args(c4_dir, tokenizer_path),
    ]
    cli_main(["fit", *common, "--trainer.max_steps", "1"])  # version_0
    newest = cli_main(["fit", *common, "--trainer.max_steps", "2"])  # version_1, the newest
    for spec in ("runs/mot", "last"):
        lightning_messages.clear()
        cli = cli_main(["validate", *common, "--model.init_from", spec])
        state = cli.model.net.state_dict()
        for key, value in newest.model.net.state_dict().items():
            torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
        said = [m for m in lightning_messages if m.startswith("model.init_from:")]
        assert said == [
            "model.init_from: weights of runs/mot/version_1/checkpoints/last.ckpt (mot, step 2)"
        ], lightning_messages


def test_library_noise_is_quiet_on_a_run(
    c4_dir, tokenizer_path, tmp_path, monkeypatch, recwarn, lightning_messages
):
    """No deprecation warnings from torchdata's or Lightning's internals, no cloud-logger
    advertisement: only what concerns the user's run."""
    monkeypatch.chdir(tmp_path)
    cli_main(
        ["fit", "--config", str(CONF / "dense.yaml"), "--config", str(CONF / "tiny.yaml"),
         *data_args(c4_dir, tokenizer_path)[:4], "--data.num_workers", "1",
         "--trainer.max_steps", "6", "--trainer.enable_progress_bar", "false"]
    )  # fmt: skip
    warned = [str(w.message) for w in recwarn]
    assert not [m for m in warned if "set_vital" in m or "LeafSpec" in m], warned
    assert not [m for m in lightning_messages if "litlogger" in m.lower()]
    assert [m for m in lightning_messages if m.startswith("model: ")]  # motlab's summary instead
