"""Every run of a sweep is checked with motlab's own parser and classes before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from motlab.config import GPTConfig
from motlab.sweep.check import check_runs, parse_run
from motlab.sweep.spec import SweepError, load_sweep

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
SWEEPS = CONF / "sweeps"

pytestmark = pytest.mark.filterwarnings("ignore")


def sweep_file(tmp_path: Path, axes: dict, **extra) -> Path:
    path = tmp_path / "s.yaml"
    spec = {"config": [str(CONF / "mot.yaml")], "axes": axes, **extra}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize("name", ["experts.yaml", "granularity.yaml"])
def test_shipped_sweeps_are_valid_at_the_papers_size(name, monkeypatch):
    monkeypatch.chdir(REPO)
    runs = load_sweep(SWEEPS / name).runs()
    checked = check_runs(runs)
    assert [c.max_steps for c in checked] == [150_000] * len(runs)
    for run in runs:
        config = parse_run(run)
        net = GPTConfig(**config.model.net.as_dict())
        assert config.data.batch_size == 256 and (net.d_model, net.d_ff) == (512, 2048)
        if run.baseline:
            assert net.ffn.variant == "dense"
            continue
        ffn = net.ffn
        if name == "experts.yaml":  # G = E, experts of d_ff each (FLOP-matched)
            assert ffn.group_size == ffn.n_experts == run.values["E"]
            assert ffn.expert_size(2048) == 2048
        else:  # MoT-medium/32E/k: G 32, E = 32k, d_expert = 2048 / k
            k = run.values["k"]
            assert (ffn.group_size, ffn.n_experts, ffn.expert_size(2048)) == (32, 32 * k, 2048 // k)


def test_shipped_sweeps_stay_valid_at_tiny_size(monkeypatch):
    """conf/tiny.yaml keeps d_ff 256 (E = 32k divides G·d_ff = 8192; E = G divides G·256) and a
    batch of 32: enough for every granularity run (G = 32). The experts sweep's E = G = 128 needs
    --data.batch_size 128, and without it the check names that run and the fix."""
    monkeypatch.chdir(REPO)
    tiny = ["conf/tiny.yaml"]
    granularity = check_runs(load_sweep(SWEEPS / "granularity.yaml").runs(tiny))
    assert [parse_run(c.run).model.net.d_ff for c in granularity] == [256] * 5
    experts = load_sweep(SWEEPS / "experts.yaml")
    check_runs(experts.runs(tiny, ["--data.batch_size", "128"]))
    with pytest.raises(SweepError) as err:
        check_runs(experts.runs(tiny))
    message = str(err.value)
    assert message.startswith("1 of 4 runs are invalid; nothing was started")
    assert "run E=128:" in message and "run E=32:" not in message
    assert "data.batch_size=32" in message and "group_size=128" in message


@pytest.mark.parametrize(
    ("axes", "flags", "bad", "message"),
    [
        # E must divide G·d_ff for FLOP matching: 48 does not divide 32·2048.
        ({"E": {"model.net.ffn.n_experts": [32, 48]}}, [], ["E=48"], r"n_experts \(48\) to divide"),
        # A value of the wrong type, inside the free-form ffn mapping and in a typed group.
        (
            {"E": {"model.net.ffn.n_experts": [32, "many"]}},
            [],
            ["E=many"],
            r"model\.net\.ffn\.n_experts='many' is not int",
        ),
        (
            {"lr": {"model.optim.lr": [1e-3, "fast"]}},
            [],
            ["lr=fast"],
            r"(?s)model\.optim.*lr.*Got value: fast",
        ),
        # An unknown key: in the ffn mapping (the variant's valid keys listed) and elsewhere.
        (
            {"n": {"model.net.ffn.n_expert": [4]}},
            [],
            ["n=4"],
            r"unknown key model\.net\.ffn\.n_expert \(the flag --model\.net\.ffn\.n_expert\); "
            r"did you mean model\.net\.ffn\.n_experts",
        ),
        (
            {"x": {"trainer.max_step": [3]}},
            [],
            ["x=3"],
            r"unknown key trainer\.max_step .*did you mean trainer\.max_steps",
        ),
        # The batch must be a multiple of the group size.
        ({"G": {"model.net.ffn.group_size": [32, 96]}}, [], ["G=96"], r"not a multiple of"),
        # Any layer check: MoT's temperature must be positive.
        ({"t": {"model.net.ffn.temperature": [1.0, 0.0]}}, [], ["t=0"], r"temperature must be"),
        # An unknown flag given to every run names every run.
        ({"E": {"model.net.ffn.n_experts": [32]}}, ["--data.bach_size", "4"], ["E=32"], r"bach"),
    ],
)
def test_each_bad_combination_is_named(tmp_path, monkeypatch, axes, flags, bad, message):
    monkeypatch.chdir(tmp_path)
    runs = load_sweep(sweep_file(tmp_path, axes)).runs(extra_flags=flags)
    with pytest.raises(SweepError, match=message) as err:
        check_runs(runs)
    named = [r.name for r in runs if f"run {r.name}:" in str(err.value)]
    assert named == bad


def test_an_unknown_key_is_named_once_per_run_in_short(tmp_path, monkeypatch):
    """A typo in a file every run reads: each run says it in one line, with the file and the
    key it meant (not jsonargparse's usage per run)."""
    monkeypatch.chdir(tmp_path)
    typo = tmp_path / "typo.yaml"
    typo.write_text("data:\n  batch_sise: 64\n")
    runs = load_sweep(sweep_file(tmp_path, {"E": {"model.net.ffn.n_experts": [8, 32]}})).runs
    with pytest.raises(SweepError) as err:
        check_runs(runs(overlays=[str(typo)]))
    line = f"    unknown key data.batch_sise (in {typo}); did you mean data.batch_size?"
    assert str(err.value).splitlines() == [
        "2 of 2 runs are invalid; nothing was started.",
        "run E=8:",
        line,
        "run E=32:",
        line,
    ]


def test_sweep_requirements_are_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = load_sweep(sweep_file(tmp_path, {"E": {"model.net.ffn.n_experts": [32]}})).runs
    shared = tmp_path / "shared_checkpoints.yaml"
    shared.write_text("checkpoint:\n  dirpath: ck\n")
    with pytest.raises(SweepError, match=r"checkpoint\.dirpath='ck'.*unset it"):
        check_runs(runs(overlays=[str(shared)]))
    with pytest.raises(SweepError, match=r"trainer\.max_steps=-1"):
        check_runs(runs(extra_flags=["--trainer.max_steps", "-1"]))
    with pytest.raises(SweepError, match=r"save_last must be true"):
        check_runs(runs(extra_flags=["--checkpoint.save_last", "false"]))


def test_a_sweep_without_tensorboard_logs_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "csv.yaml"
    base.write_text(
        "trainer:\n  logger:\n    class_path: lightning.pytorch.loggers.CSVLogger\n"
        "    init_args:\n      save_dir: runs\n"
    )
    path = sweep_file(tmp_path, {"E": {"model.net.ffn.n_experts": [32]}})
    with pytest.raises(SweepError, match=r"CSVLogger.*TensorBoardLogger"):
        check_runs(load_sweep(path).runs(overlays=[str(base)]))


def test_dry_run_prints_every_command_and_starts_nothing(tmp_path, motlab_sweep):
    out = motlab_sweep(tmp_path, str(SWEEPS / "experts.yaml"), "--dry-run").stdout
    assert "all 4 runs are valid (dry run: nothing started)" in out
    for name in ("dense", "E=8", "E=32", "E=128"):
        assert f"--trainer.logger.init_args.name {name}\n" in out
    assert f"motlab fit --config {CONF / 'mot.yaml'} --model.net.ffn.n_experts 128 " in out
    assert not (tmp_path / "runs").exists()


def test_an_invalid_sweep_exits_2_before_any_run(tmp_path, motlab_sweep):
    result = motlab_sweep(
        tmp_path, str(SWEEPS / "experts.yaml"), "--overlay", str(CONF / "tiny.yaml"), check=False
    )
    assert result.returncode == 2
    assert "motlab sweep: error: 1 of 4 runs are invalid; nothing was started" in result.stdout
    assert not (tmp_path / "runs").exists()
