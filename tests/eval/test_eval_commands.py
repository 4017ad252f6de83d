"""``motlab zeroshot`` and ``motlab lm_eval`` end to end, offline, on a model with known answers.

Every block of the model is zeroed and the position embedding holds a constant feature that the
head maps to " yes", so at every position the model puts almost all its probability on " yes".
In the fixture the right choice is always the one made of " yes" tokens only: accuracy 1.0 (and
acc_norm 1.0) when choices, labels and scores are wired right, lower otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from motlab import GPT, GPTConfig, save_model
from motlab.cli import main as motlab_main
from motlab.eval.zeroshot import main as zeroshot

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
YES = 3763  # GPT-2's " yes"


@pytest.fixture(scope="module")
def yes_checkpoint(tmp_path_factory) -> Path:
    """A MoT model (group size 4) whose next token is " yes" everywhere."""
    cfg = GPTConfig(
        size=None, d_model=8, d_ff=16, n_layers=2, n_heads=2, vocab_size=50257, seq_len=24,
        ffn={"variant": "mot", "group_size": 4, "n_experts": 4}, moe_blocks="all",
    )  # fmt: skip
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.blocks.parameters():
            p.zero_()
        model.tok_emb.weight.zero_()
        model.pos_emb.weight.zero_()
        model.pos_emb.weight[:, 0] = 1.0
        model.head.weight.zero_()
        model.head.weight[YES, 0] = 10.0
    path = tmp_path_factory.mktemp("yes") / "yes.pt"
    save_model(model, path)
    return path


def test_zeroshot_scores_a_jsonl_file_and_a_task_yaml(
    yes_checkpoint, tokenizer_path, c4_dir, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out" / "zs" / "results.json"  # its directories are created
    common = ["--checkpoint", str(yes_checkpoint), "--tokenizer", str(tokenizer_path)]
    common += ["--data", str(c4_dir), "--filler-pool", "8", "--device", "cpu"]
    argv = [*common, "--task", str(FIXTURES / "mc_yes.jsonl"), "--output", str(out)]
    assert zeroshot(argv) == 0
    assert "mc_yes" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["results"]["mc_yes"]["acc,none"] == 1.0
    assert result["results"]["mc_yes"]["acc_norm,none"] == 1.0
    assert result["n-samples"]["mc_yes"]["effective"] == 5
    args = result["config"]["model_args"]
    assert args["group_size"] == 4 and args["filler"] == "c4"
    assert args["filler_source"].startswith("C4 training windows (8 x 24)")

    # The same task as a harness YAML (its data path is relative to the repository), --limit.
    monkeypatch.chdir(REPO)
    argv = [*common, "--task", "mc_yes", "--include-path", str(FIXTURES / "tasks")]
    assert zeroshot([*argv, "--limit", "2", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["results"]["mc_yes"]["acc,none"] == 1.0
    assert result["n-samples"]["mc_yes"]["effective"] == 2


def test_lm_eval_command_is_the_harness_cli_with_the_backend(
    yes_checkpoint, tokenizer_path, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(REPO)
    model_args = f"checkpoint={yes_checkpoint},tokenizer={tokenizer_path},filler=random"
    with pytest.raises(SystemExit) as exit_info:
        motlab_main(
            ["lm_eval", "run", "--model", "motlab", "--model_args", model_args,
             "--include_path", str(FIXTURES / "tasks"), "--tasks", "mc_yes",
             "--batch_size", "2", "--device", "cpu", "--output_path", str(tmp_path)]
        )  # fmt: skip
    assert exit_info.value.code == 0
    assert "mc_yes" in capsys.readouterr().out
    [saved] = tmp_path.glob("**/results_*.json")
    results = json.loads(saved.read_text())["results"]["mc_yes"]
    assert results["acc,none"] == 1.0 and results["acc_norm,none"] == 1.0


def test_without_the_harness_both_commands_name_the_extra(yes_checkpoint, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now fails
    assert zeroshot(["--checkpoint", str(yes_checkpoint), "--task", "piqa"]) == 2
    assert "pip install 'motlab[eval]'" in capsys.readouterr().err
    from motlab.eval.harness import main as lm_eval_command

    assert lm_eval_command(["run", "--model", "motlab"]) == 2
    assert "pip install 'motlab[eval]'" in capsys.readouterr().err


def test_hub_task_offline_and_unknown_task_are_clear_errors(yes_checkpoint, tokenizer_path, capsys):
    common = ["--checkpoint", str(yes_checkpoint), "--tokenizer", str(tokenizer_path)]
    common += ["--filler", "random", "--filler-pool", "8", "--device", "cpu"]
    # conftest switches the hub off: piqa's data cannot be fetched.
    assert zeroshot([*common, "--task", "piqa"]) == 2
    err = capsys.readouterr().err
    assert "baber/piqa" in err and "--task PATH.jsonl" in err
    assert zeroshot([*common, "--task", "missing/file.jsonl"]) == 2
    assert "no task file at missing/file.jsonl" in capsys.readouterr().err


def test_an_output_path_that_cannot_be_written_fails_before_the_evaluation(
    yes_checkpoint, tmp_path, capsys
):
    (tmp_path / "taken").write_text("a file where the output's directory should be")
    out = tmp_path / "taken" / "results.json"
    argv = ["--checkpoint", str(yes_checkpoint), "--task", str(FIXTURES / "mc_yes.jsonl")]
    assert zeroshot([*argv, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"motlab zeroshot: error: cannot write {out}: {tmp_path / 'taken'} is a file" in err
    assert "group size" not in err  # before the model was loaded
