"""``motlab export``: a trained run becomes a Hugging Face directory with its tokenizer and a
model card written from the run; it loads back into motlab (``load_model``,
``model.init_from``, ``motlab generate``); bfloat16 works; bad input is one ``error:`` line naming
the path, and nothing is written."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from motlab import GPT, GPTConfig, load_model, model_stats, save_model
from motlab.checkpoint import config_to_dict
from motlab.cli import cli_main
from motlab.cli import main as motlab_main
from motlab.generate_command import main as generate_main
from motlab.hf.command import main
from motlab.hf.export import export
from motlab.lit import LitLM

CONF = Path(__file__).resolve().parents[2] / "conf"
V = 50257


@pytest.fixture(scope="module")
def mot_run(tmp_path_factory, c4_dir: Path, tokenizer_path: Path) -> Path:
    """``runs/mot`` of a 2-step tiny MoT run (group size 32) that validated at step 2."""
    root = tmp_path_factory.mktemp("run")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        cli_main(
            ["fit", "--config", str(CONF / "mot.yaml"), "--config", str(CONF / "tiny.yaml"),
             "--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path),
             "--data.num_workers", "0", "--data.seq_len", "16", "--data.val_batches", "1",
             "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
             "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
        )  # fmt: skip
    finally:
        os.chdir(cwd)
    return root / "runs" / "mot"


def tiny(tmp_path: Path, ffn: dict | None = None, name: str = "model") -> tuple[GPT, Path]:
    torch.manual_seed(0)
    cfg = GPTConfig(size=None, d_model=16, d_ff=32, n_layers=2, n_heads=2, vocab_size=V,
                    seq_len=12, ffn=ffn or {"variant": "dense"})  # fmt: skip
    model = GPT(cfg).eval()
    save_model(model, tmp_path / f"{name}.pt")
    return model, tmp_path / f"{name}.pt"


def test_a_trained_run_exports_with_its_card(mot_run, tmp_path, c4_dir, tokenizer_path, capsys):
    out = tmp_path / "mot_run_export"
    assert main(["--checkpoint", str(mot_run), "--out", str(out)]) == 0  # its own tokenizer
    printed = capsys.readouterr().out
    assert f"{out} as remote code (dense, mot;" in printed and "trust_remote_code=True" in printed
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", "README.md", "modeling_motlab.py",
            "configuration_motlab.py"} <= names  # fmt: skip
    assert not [n for n in names if n.endswith((".bin", ".pt", ".ckpt", ".pkl"))]  # no pickle

    original = load_model(mot_run)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    stats = model_stats(original.cfg)
    assert f"| parameters | {stats.total_params:,} ({stats.active_params:,} active" in card
    assert "| variant | mot (group_size 32, n_experts 32" in card
    assert "| steps | 2 |" in card
    assert "| tokens | 1.02K (1,024) |" in card  # 2 steps of 32 sequences of 16 tokens
    assert re.search(r"\| final validation loss \| \d+\.\d{4} \(step 2\) \|", card)
    assert f"local files `{c4_dir}`" in card and f"tokenizer `{tokenizer_path}`" in card
    assert "**G = 32**" in card and "filler rows" in card
    config = json.loads((out / "config.json").read_text())
    assert config["motlab_global_step"] == 2 and config["net"]["ffn"]["variant"] == "mot"

    # transformers: the model and its tokenizer; one prompt is completed to a group by filler.
    hf = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    tok = AutoTokenizer.from_pretrained(out, trust_remote_code=True)  # it reads the config
    ids = Tokenizer.from_file(str(tokenizer_path)).encode("Hello world").ids
    inputs = tok("Hello world", return_tensors="pt")
    assert inputs["input_ids"][0].tolist() == ids
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 50256
    generated = hf.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert generated.shape == (1, len(ids) + 3)

    # motlab: load_model, model.init_from and motlab generate read the directory.
    back = load_model(out)
    for key, value in original.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    lit = LitLM(net=GPTConfig.from_dict(config_to_dict(original.cfg)))
    lit.init_weights_from(str(out))
    assert all(torch.equal(lit.net.state_dict()[k], v) for k, v in original.state_dict().items())
    args = ["--checkpoint", str(out), "--prompt", "Hello", "--max-new-tokens", "3",
            "--temperature", "0", "--filler", "random", "--device", "cpu"]  # fmt: skip
    assert generate_main(args) == 0
    assert capsys.readouterr().out.startswith("Hello")


@torch.no_grad()
def test_a_bfloat16_export_loads_and_runs(tmp_path, tokenizer_path) -> None:
    model, path = tiny(tmp_path, {"variant": "mot", "group_size": 2, "n_experts": 2})
    out = tmp_path / "bf16_export"
    out.mkdir()  # an empty directory is taken
    export(path, out, dtype="bfloat16", tokenizer=str(tokenizer_path))
    assert {t.dtype for t in load_file(out / "model.safetensors").values()} == {torch.bfloat16}
    hf = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert hf.dtype == torch.bfloat16
    x = torch.randint(0, V, (4, 12), generator=torch.Generator().manual_seed(0))
    logits = hf(x).logits
    assert logits.dtype == torch.bfloat16 and logits.isfinite().all()
    model_bf16 = model.to(torch.bfloat16)  # (in place) the weights as they were stored
    torch.testing.assert_close(logits, model_bf16(x), rtol=0, atol=0)  # motlab's own code
    assert hf.generate(x[:1, :4], max_new_tokens=3, do_sample=True).shape == (1, 7)

    # Filler windows of one's own (as training text would be) complete a short batch.
    windows_WT = torch.randint(0, V, (3, 12), generator=torch.Generator().manual_seed(1))
    hf.set_filler(windows_WT)
    expected = model_bf16(torch.cat([x[:3], windows_WT[:1]]))[:3]
    torch.testing.assert_close(hf(x[:3]).logits, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"filler windows must be \(at least 1, at least 12\)"):
        hf.set_filler(windows_WT[:, :5])

    back = load_model(out)
    for key, value in back.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, model_bf16.state_dict()[key].float()), key


def test_bad_input_ends_in_an_error_naming_the_path(tmp_path, tokenizer_path, capsys) -> None:
    """Each mistake is one ``error:`` line that names the path, before anything is written."""
    _, good = tiny(tmp_path)

    def fails(args: list[str], *expected: str) -> None:
        out = tmp_path / "never"
        assert main([*args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("motlab export: error: ") and err.count("\n") == 1, err
        for text in expected:
            assert text in err, err
        assert not out.exists()

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    fails(["--checkpoint", str(foreign), "--tokenizer", str(tokenizer_path)], str(foreign),
          "not a motlab checkpoint")  # fmt: skip
    hub = tmp_path / "llama"
    hub.mkdir()
    (hub / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"w": torch.zeros(2)}, hub / "model.safetensors")
    fails(["--checkpoint", str(hub), "--tokenizer", str(tokenizer_path)], str(hub), "'llama'")
    with pytest.raises(ValueError, match=re.escape(str(hub))):
        load_model(hub)

    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert main(["--checkpoint", str(good), "--tokenizer", str(tokenizer_path),
                 "--out", str(full)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"--out {full} already exists and is not empty" in err
    assert [p.name for p in full.iterdir()] == ["keep.txt"]

    missing = tmp_path / "nowhere" / "tokenizer.json"
    fails(["--checkpoint", str(good), "--tokenizer", str(missing)], f"--tokenizer {missing}")
    fails(["--checkpoint", str(good)], "records no tokenizer", "--tokenizer")
    gone = tmp_path / "gone" / "tokenizer.json"  # the one the run was trained with, not here
    model = GPT(GPTConfig.from_dict(torch.load(good)["config"]))
    lightning = tmp_path / "last.ckpt"
    torch.save({"net_config": config_to_dict(model.cfg), "global_step": 3,
                "state_dict": {f"net.{k}": v for k, v in model.state_dict().items()},
                "datamodule_hyper_parameters": {"tokenizer": str(gone)}}, lightning)  # fmt: skip
    fails(["--checkpoint", str(lightning)], str(gone), "--tokenizer")
    fails(["--checkpoint", str(good), "--tokenizer", "no-such-tokenizer-xyz"],
          "'no-such-tokenizer-xyz' names a tokenizer on the Hugging Face hub",
          "--tokenizer PATH")  # fmt: skip

    with pytest.raises(SystemExit) as exit_info:  # through the motlab command
        motlab_main(["export", "--checkpoint", str(foreign), "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert str(foreign) in capsys.readouterr().err
    assert not list(tmp_path.glob(".never*")) and not list(tmp_path.glob(".x*"))  # no leftovers
