"""``motlab generate``: a checkpoint and its tokenizer in, streamed text out; errors in the
``error:`` form, before any model is run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

import motlab
from motlab import GPT, GPTConfig, complete
from motlab.cli import main as cli_main
from motlab.eval import random_filler_pool
from motlab.generate_command import FILLER_POOL, main

V, SEQ = 50257, 32


def save(tmp_path: Path, ffn: dict, name: str) -> Path:
    torch.manual_seed(0)
    cfg = GPTConfig(size=None, d_model=32, d_ff=64, n_layers=2, n_heads=2, vocab_size=V,
                    seq_len=SEQ, ffn=ffn)  # fmt: skip
    path = tmp_path / f"{name}.pt"
    motlab.save_model(GPT(cfg), path)
    return path


@pytest.fixture(scope="module")
def mot_file(tmp_path_factory) -> Path:
    return save(tmp_path_factory.mktemp("gen"), {"variant": "mot", "group_size": 4,
                                                 "n_experts": 4}, "mot")  # fmt: skip


@pytest.fixture(scope="module")
def tc_file(tmp_path_factory) -> Path:
    return save(tmp_path_factory.mktemp("gen"), {"variant": "token_choice", "n_experts": 4}, "tc")


def test_streams_the_continuation_of_one_prompt(mot_file, tokenizer_path, capsys) -> None:
    """Greedy text from the command is the library's, among the same random filler rows."""
    args = ["--checkpoint", str(mot_file), "--tokenizer", str(tokenizer_path), "--prompt",
            "The weather today is", "--max-new-tokens", "12", "--temperature", "0",
            "--filler", "random", "--ignore-eos", "--seed", "3"]  # fmt: skip
    assert main(args) == 0
    out, err = capsys.readouterr()
    tok = Tokenizer.from_file(str(tokenizer_path))
    prompt = tok.encode("The weather today is").ids
    model = motlab.load_model(mot_file)
    pool = random_filler_pool(V, SEQ, FILLER_POOL, seed=3)
    [expected] = complete(model, [prompt], 12, temperature=0, decode=tok.decode,
                          filler_WT=pool.rows(3, 3, len(prompt) + 12))  # fmt: skip
    assert out == "The weather today is" + expected.text + "\n"
    assert "mot, group size 4, filler random tokens" in err


def test_several_prompts_and_c4_filler(mot_file, tokenizer_path, c4_dir, capsys) -> None:
    args = ["--checkpoint", str(mot_file), "--tokenizer", str(tokenizer_path), "--prompt",
            "Hello", "--prompt", "Once upon a time", "--max-new-tokens", "5", "--data",
            str(c4_dir), "--top-k", "20", "--top-p", "0.9"]  # fmt: skip
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out.startswith("--- [0] (") and "\nHello" in out and "\nOnce upon a time" in out
    assert "C4 training windows" in err


def test_token_choice_through_the_motlab_command(tc_file, tokenizer_path, capsys) -> None:
    args = [
        "generate",
        "--checkpoint",
        str(tc_file),
        "--tokenizer",
        str(tokenizer_path),
        "--prompt",
        "Hi",
        "--max-new-tokens",
        "4",
        "--no-cache",
        "--capacity",
        "training",
    ]
    with pytest.raises(SystemExit) as exit_:
        cli_main(args)
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("Hi")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--top-p", "1.5"], "top_p must be in (0, 1]"),
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--max-new-tokens", "-2"], "--max-new-tokens must be >= 0"),
        (["--capacity", "lots"], "capacity must be 'dropless', 'training' or a capacity factor"),
        (["--stop", ""], "--stop needs a non-empty string"),
        (["--filler", "c4", "--data", "/no/such/c4"], "no/such/c4"),
    ],
)
def test_bad_input_is_one_error_line(mot_file, tokenizer_path, flags, message, capsys) -> None:
    args = ["--checkpoint", str(mot_file), "--tokenizer", str(tokenizer_path), "--prompt", "x"]
    assert main(args + flags) == 2
    err = capsys.readouterr().err
    assert "motlab generate: error: " in err and message in err and "Traceback" not in err


def test_missing_checkpoint_and_tokenizer_are_named(tmp_path, mot_file, capsys) -> None:
    assert main(["--checkpoint", str(tmp_path / "nope.ckpt"), "--prompt", "x"]) == 2
    assert "no model checkpoint at" in capsys.readouterr().err
    bad = ["--checkpoint", str(mot_file), "--tokenizer", str(tmp_path / "t.json"), "--prompt", "x"]
    assert main(bad) == 2
    assert "no tokenizer file" in capsys.readouterr().err
