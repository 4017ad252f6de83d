"""A dense model that GPT-2 can express exports as transformers' own ``GPT2LMHeadModel``, with
no remote code; every setting of its GPT-2 config is needed for equal logits; what GPT-2 cannot
express is exported as remote code."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

import motlab
from motlab import GPT, GPTConfig, load_model, save_model
from motlab.hf import export as export_module
from motlab.hf.export import export
from motlab.hf.gpt2 import from_gpt2, gpt2_config, gpt2_mismatch, to_gpt2

V, T, EOT = 50257, 12, 50256


def dense(final_norm: bool = True, **kw) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(size=None, d_model=16, d_ff=32, n_layers=2, n_heads=2, vocab_size=V,
                    seq_len=T, final_norm=final_norm, **kw)  # fmt: skip
    return GPT(cfg).eval()


def tokens(B: int = 3) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def test_a_dense_model_with_a_final_norm_is_gpt2(tmp_path, tokenizer_path) -> None:
    model = dense()
    save_model(model, tmp_path / "dense.pt")
    out = tmp_path / "gpt2_export"
    done = export(tmp_path / "dense.pt", out, tokenizer=str(tokenizer_path))
    assert not done.remote_code and done.why == ""
    assert not list(out.glob("*.py"))
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"] and "auto_map" not in config
    hf = AutoModelForCausalLM.from_pretrained(out)  # transformers' own class, no remote code
    assert type(hf) is GPT2LMHeadModel
    x = tokens()
    torch.testing.assert_close(hf(x).logits, model(x), rtol=0, atol=1e-5)

    prompts = x[:, :5]
    ours = motlab.generate(model, prompts, 5, temperature=0, eos_id=EOT)
    theirs = hf.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=5,
                         do_sample=False)  # fmt: skip
    assert torch.equal(F.pad(theirs, (0, ours.shape[1] - theirs.shape[1]), value=EOT), ours)

    # Back: the same logits bit for bit; every weight the same, the vocabulary's alignment rows
    # (which GPT-2 has no place for and no computation reads) zero.
    back = load_model(out)
    assert torch.equal(back(x), model(x))
    state = model.state_dict()
    for key, value in back.state_dict().items():
        if key in ("tok_emb.weight", "head.weight"):
            assert torch.equal(value[:V], state[key][:V]) and not value[V:].any()
        else:
            assert torch.equal(value, state[key]), key


@torch.no_grad()
def test_every_setting_of_the_gpt2_config_is_needed() -> None:
    """With the exported settings GPT-2 computes motlab's logits; with any one of them otherwise
    (GELU, other LayerNorm eps, unscaled or layer-scaled attention, a tied head), or with the
    weights laid out otherwise (a nonzero bias, a Linear weight not transposed to Conv1D's
    layout), it does not."""
    model = dense()
    x = tokens()
    expected = model(x)

    def gpt2_logits(state: dict[str, torch.Tensor] | None = None, **change) -> torch.Tensor:
        hf = GPT2LMHeadModel(GPT2Config(**{**gpt2_config(model), **change})).eval()
        hf.load_state_dict(state or to_gpt2(model))
        return hf(x).logits

    torch.testing.assert_close(gpt2_logits(), expected, rtol=0, atol=1e-5)
    changes = [
        {"activation_function": "gelu_new"},
        {"layer_norm_epsilon": 1e-1},
        {"scale_attn_weights": False},
        {"scale_attn_by_inverse_layer_idx": True},
        {"tie_word_embeddings": True},
    ]
    for change in changes:
        assert not torch.allclose(gpt2_logits(**change), expected, atol=1e-3), change
    biased = to_gpt2(model)
    biased["transformer.h.0.mlp.c_fc.bias"] += 0.1
    untransposed = to_gpt2(model)
    untransposed["transformer.h.1.attn.c_proj.weight"] = model.blocks[1].attn.proj.weight
    for state in (biased, untransposed):
        assert not torch.allclose(gpt2_logits(state), expected, atol=1e-3)


def test_what_gpt2_cannot_express() -> None:
    assert gpt2_mismatch(dense()) == ""
    assert "final_norm" in gpt2_mismatch(dense(final_norm=False))
    mot = dense(ffn={"variant": "mot", "group_size": 2, "n_experts": 2})
    assert "routed (MoT)" in gpt2_mismatch(mot)
    model = dense()
    model.blocks[0].ln_attn.eps = 1e-6
    assert "eps" in gpt2_mismatch(model)
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e-6
    assert gpt2_mismatch(model) == "" and gpt2_config(model)["layer_norm_epsilon"] == 1e-6


@torch.no_grad()
def test_a_difference_no_rule_knows_of_sends_the_model_to_remote_code(
    tmp_path, tokenizer_path, monkeypatch
) -> None:
    """The export compares GPT-2's logits with motlab's: a GPT-2 config that computes something
    else (here GELU, as if motlab's model had changed without the rules knowing) is caught and
    the model exported as remote code instead."""
    model = dense()
    save_model(model, tmp_path / "dense.pt")
    wrong = lambda m: {**gpt2_config(m), "activation_function": "gelu_new"}  # noqa: E731
    monkeypatch.setattr(export_module, "gpt2_config", wrong)
    out = tmp_path / "fallback_export"
    done = export(tmp_path / "dense.pt", out, tokenizer=str(tokenizer_path))
    assert done.remote_code and "GPT-2 computes something else" in done.why
    hf = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    x = tokens()
    torch.testing.assert_close(hf(x).logits, model(x), rtol=0, atol=1e-5)


def test_gpt2_biases_trained_elsewhere_are_refused() -> None:
    model = dense()
    state = to_gpt2(model)
    assert set(from_gpt2(state, model.cfg, "DIR")) == set(model.state_dict())
    state["transformer.h.1.attn.c_attn.bias"][0] = 0.5
    with pytest.raises(ValueError, match=r"DIR: the GPT-2 biases .*h\.1\.attn\.c_attn\.bias"):
        from_gpt2(state, model.cfg, "DIR")
