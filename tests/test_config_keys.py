"""Unknown keys in any section, from a flag or a config file, and keys a config requires: one
``error:`` block naming each key, where it came from and the closest valid keys, before anything
is built (``motlab fit`` and ``motlab sweep`` alike)."""

from __future__ import annotations

from pathlib import Path

import pytest

from motlab.cli import fit_parser, main
from motlab.config_keys import ConfigKeyError, check_config_keys

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
BASE = ["--config", str(CONF / "mot.yaml"), "--config", str(CONF / "tiny.yaml")]


def _block(capsys, *args: str) -> list[str]:
    """``motlab fit BASE ARGS``: exit status 2 and one short error block, returned as lines."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *BASE, *args, "--print_config"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "usage:" not in captured.err and "NestedArg" not in captured.err
    lines = captured.err[captured.err.index("error: ") :].rstrip().splitlines()
    assert lines[-1] == "(motlab fit --help lists every key)"
    return lines[:-1]


def _yaml(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        # A dataclass's fields (jsonargparse: 100 lines ending in NestedArg(key=...)).
        (
            "--model.optim.learning_rate",
            "unknown key model.optim.learning_rate (the flag --model.optim.learning_rate); the "
            "keys of model.optim: betas, eps, fused, lr, min_lr_ratio, total_steps, "
            "warmup_steps, weight_decay",
        ),
        (
            "--trainer.max_step",
            "unknown key trainer.max_step (the flag --trainer.max_step); did you mean "
            "trainer.max_steps or trainer.max_time or trainer.min_steps?",
        ),
        # A key of a variant, and a key in the wrong section.
        (
            "--model.net.ffn.n_expert",
            "unknown key model.net.ffn.n_expert (the flag --model.net.ffn.n_expert); did you "
            "mean model.net.ffn.n_experts or model.net.ffn.d_expert?",
        ),
        (
            "--model.seq_len",
            "unknown key model.seq_len (the flag --model.seq_len); did you mean data.seq_len?",
        ),
        ("--modle.net.size", "did you mean model.net.size?"),
        ("--checkpoint.every_n_train_step", "did you mean checkpoint.every_n_train_steps or"),
        ("--speed.peak_flop", "did you mean speed.peak_flops"),
        ("--data.val_batch", "did you mean data.val_batches"),
        # Bound keys name the key that sets them.
        ("--model.net.seq_len", "model.net.seq_len is not set directly (the flag "),
        ("--model.net.vocab_size", "it is set from data.tokenizer: give that"),
    ],
)
def test_an_unknown_flag_is_named_with_the_closest_keys(flag, expected, capsys):
    lines = _block(capsys, flag, "3")
    assert len(lines) == 1 and expected in lines[0], lines


def test_unknown_keys_in_config_files_name_the_file(tmp_path, capsys):
    typo = _yaml(tmp_path, "typo.yaml", "data:\n  batch_sise: 64\nmodel:\n  optim:\n    lrr: 1\n")
    varient = _yaml(tmp_path, "varient.yaml", "model:\n  net:\n    ffn:\n      varient: mot\n")
    lines = _block(capsys, "--config", typo, "--config", varient, "--trainr.max_steps", "2")
    assert lines == [
        "error: unknown key trainr.max_steps (the flag --trainr.max_steps); did you mean "
        "trainer.max_steps?",
        f"       unknown key data.batch_sise (in {typo}); did you mean data.batch_size?",
        f"       unknown key model.optim.lrr (in {typo}); did you mean model.optim.lr?",
        f"       unknown key model.net.ffn.varient (in {varient}); did you mean "
        "model.net.ffn.variant?",
    ]


def test_a_later_ffn_mapping_without_its_variant_is_named(tmp_path, capsys):
    """A model.net.ffn mapping in a later file replaces the earlier whole: without a variant the
    model would silently be dense (it failed later, naming neither file)."""
    later = _yaml(tmp_path, "g16.yaml", "model:\n  net:\n    ffn:\n      group_size: 16\n")
    (line,) = _block(capsys, "--config", later)
    assert line == (
        f"error: model.net.ffn in {later} sets no variant, and replaces the whole model.net.ffn "
        f"of {CONF / 'mot.yaml'} (variant mot): the model would be dense; add 'variant: mot' "
        "there, or change single keys with flags (--model.net.ffn.KEY VALUE)"
    )


def test_a_missing_config_file_is_named_with_the_closest(capsys):
    (line,) = _block(capsys, "--config", str(CONF / "tinny.yaml"))
    assert line == (
        f"error: --config {CONF / 'tinny.yaml'}: no such file; did you mean {CONF / 'tiny.yaml'}?"
    )


def test_a_wrong_value_is_one_block_without_the_usage(capsys):
    (first, *rest) = _block(capsys, "--trainer.max_steps", "many")
    assert "trainer.max_steps" in first and any("many" in line for line in rest)


def test_valid_keys_pass(tmp_path):
    """Every shipped config, a chosen class's own arguments and appended callbacks are valid."""
    parser = fit_parser()
    for conf in sorted(CONF.glob("*.yaml")):
        check_config_keys(parser, ["--config", str(conf)])
    check_config_keys(
        parser,
        [*BASE, "--config", str(CONF / "fsdp.yaml"), "--trainer.logger.init_args.name", "x",
         "--trainer.callbacks+=lightning.pytorch.callbacks.LearningRateMonitor",
         "--trainer.callbacks.logging_interval", "step", "--model.net.ffn.top_k=2",
         "--print_config=skip_null"],
    )  # fmt: skip
    with pytest.raises(ConfigKeyError, match="unknown key data.nope"):
        check_config_keys(parser, ["--data.nope", "1"])


def test_a_run_without_a_key_its_config_requires_is_refused(tmp_path, monkeypatch, capsys):
    """conf/transition.yaml without --model.init_from trained token choice from scratch into
    runs/transition, which compare and load_model then took for the transition run."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONF / "transition.yaml"), "--config",
              str(CONF / "tiny.yaml"), "--data.tokenizer", "gpt2"])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (
        f"error: model.init_from is not set, and {CONF / 'transition.yaml'} requires it (the "
        "stage-1 MoT checkpoint, e.g. runs/mot (its newest last.ckpt)): set --model.init_from"
    ) in err
    assert not (tmp_path / "runs").exists()  # refused before anything was built or written
