"""LitLM: the objective, the optimiser recipe, init_from and the early config errors."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from motlab import save_model
from motlab.checkpoint import config_to_dict
from motlab.config import GPTConfig
from motlab.lit import LitLM
from motlab.optim import OptimConfig, WarmupCosine, build_optimizer, param_groups

TINY = dict(size=None, d_model=32, d_ff=64, n_layers=2, n_heads=2, vocab_size=101, seq_len=8)
FFN = {
    "dense": {"variant": "dense"},
    "mot": {"variant": "mot", "group_size": 4, "n_experts": 4},
    "token_choice": {"variant": "token_choice", "n_experts": 4, "load_balancing_weight": 0.5},
    "expert_choice": {"variant": "expert_choice", "group_size": 4, "n_experts": 4},
}


def tiny_lit(variant: str = "mot", **kwargs) -> LitLM:
    return LitLM(GPTConfig(**TINY, ffn=FFN[variant]), **kwargs)


def batch(b: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY["vocab_size"], (b, TINY["seq_len"] + 1), generator=g)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_objective_is_cross_entropy_plus_aux_losses():
    torch.manual_seed(0)
    lit = tiny_lit("token_choice")
    tokens = batch()
    loss = lit.training_step(tokens, 0)
    logits, aux = lit.net.forward_with_aux(tokens[:, :-1])
    ce = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
    assert aux.losses and float(aux.total_loss().detach()) > 0
    torch.testing.assert_close(loss, ce + aux.total_loss())


def test_hparams_are_plain_dicts_and_round_trip():
    lit = tiny_lit("mot", optim=OptimConfig(lr=1e-3))
    hp = lit.hparams
    assert isinstance(hp["net"], dict) and hp["net"]["ffn"]["variant"] == "mot"
    assert hp["net"]["d_model"] == 32 and hp["optim"]["lr"] == 1e-3
    again = LitLM(**{k: v for k, v in hp.items()})  # what load_from_checkpoint does
    assert config_to_dict(again.net.cfg) == config_to_dict(lit.net.cfg)
    assert again.optim_config == lit.optim_config


def test_weight_decay_groups():
    net = LitLM(
        GPTConfig(**TINY, ffn={**FFN["mot"], "learnable_temperature": True}, final_norm=True)
    ).net
    decay, no_decay = param_groups(net, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in net.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    not_decayed = {names[id(p)] for p in no_decay["params"]}
    assert decayed | not_decayed == set(names.values()) and not decayed & not_decayed
    assert {"tok_emb.weight", "pos_emb.weight", "ln_f.weight", "ln_f.bias"} <= not_decayed
    assert "blocks.1.ffn.log_temperature" in not_decayed
    assert all(".ln_" not in n for n in decayed)
    assert {"head.weight", "blocks.1.ffn.experts.w1", "blocks.1.ffn.experts.router"} <= decayed
    assert any(n.startswith("blocks.0.attn.") for n in decayed)


def test_adamw_recipe_on_cpu():
    lit = tiny_lit("dense")
    optimizer, scheduler = build_optimizer(lit.net, OptimConfig(), total_steps=100)
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.999) and group["fused"] is False  # fused only on CUDA
    assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)


def test_warmup_then_cosine_to_ten_percent():
    f = WarmupCosine(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(4) == pytest.approx(0.5) and f(9) == 1.0
    assert f(10) == 1.0 and f(60) == pytest.approx(0.55)  # halfway down the cosine
    assert f(110) == pytest.approx(0.1) and f(1000) == pytest.approx(0.1)
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    # Through LambdaLR: the lr used by update s+1 is peak * f(s).
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=7e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, f)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(7e-5) and lrs[9] == pytest.approx(7e-4)
    assert lrs[11] == pytest.approx(7e-4 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 100))))


def test_init_from_copies_weights(tmp_path):
    torch.manual_seed(1)
    source = tiny_lit("mot")
    save_model(source.net, tmp_path / "m.pt")
    torch.manual_seed(2)
    target = tiny_lit("mot")
    target.init_weights_from(str(tmp_path / "m.pt"))
    a_state, b_state = source.net.state_dict(), target.net.state_dict()
    for k in a_state:
        a, b = a_state[k], b_state[k]
        torch.testing.assert_close(a, b, msg=k)


def test_init_from_rejects_another_shape(tmp_path):
    save_model(LitLM(GPTConfig(**{**TINY, "d_ff": 128}, ffn=FFN["dense"])).net, tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"(?s)model.init_from=.*shape mismatches: blocks\.0\.ffn"):
        tiny_lit("dense").init_weights_from(str(tmp_path / "m.pt"))


def test_init_from_rejects_another_variant(tmp_path):
    save_model(tiny_lit("dense").net, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="checkpoint variant dense, this model mot"):
        tiny_lit("mot").init_weights_from(str(tmp_path / "m.pt"))


def test_batch_not_a_multiple_of_the_group_is_refused():
    with pytest.raises(ValueError, match=r"data\.batch_size=6 .*model\.net\.ffn\.group_size=4"):
        tiny_lit("expert_choice").check_batch_size(6)
    tiny_lit("mot").check_batch_size(8)
    tiny_lit("token_choice").check_batch_size(6)  # token choice has no groups


def test_resume_config_check_names_both_variants():
    saved = config_to_dict(GPTConfig(**TINY, ffn=FFN["mot"]))
    with pytest.raises(ValueError, match="'mot' .* 'expert_choice'"):
        tiny_lit("expert_choice").check_resume_config(saved)
    with pytest.raises(ValueError, match="n_layers: checkpoint 2 vs config 3"):
        LitLM(GPTConfig(**{**TINY, "n_layers": 3}, ffn=FFN["mot"])).check_resume_config(saved)
    tiny_lit("mot").check_resume_config(saved)


class _Tokens(torch.utils.data.IterableDataset):
    def __iter__(self):
        for i in range(1000):
            yield batch(seed=i)


def _trainer(tmp_path, **kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
        default_root_dir=tmp_path,
    )  # fmt: skip
    return pl.Trainer(**{**defaults, **kwargs})


def test_grad_norm_is_logged_before_clipping(tmp_path):
    torch.manual_seed(0)
    lit = tiny_lit("mot")
    trainer = _trainer(tmp_path, gradient_clip_val=1e-6)
    trainer.fit(lit, torch.utils.data.DataLoader(_Tokens(), batch_size=None))
    grad_norm = float(trainer.callback_metrics["train/grad_norm"])
    assert grad_norm > 1e-3  # the clipped norm would be 1e-6
    assert "routing/block1/merge_entropy" in trainer.callback_metrics
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))


def test_float64_trains_and_logs_its_gradient_norm(tmp_path):
    """``trainer.precision 64-true`` (the float64 check of the quality benchmark): every
    parameter in float64, the gradient norm taken in float64."""
    torch.manual_seed(0)
    lit = tiny_lit("mot")
    trainer = _trainer(tmp_path, precision="64-true")
    trainer.fit(lit, torch.utils.data.DataLoader(_Tokens(), batch_size=None))
    assert all(p.dtype == torch.float64 for p in lit.net.parameters())
    assert math.isfinite(float(trainer.callback_metrics["train/grad_norm"]))


def test_schedule_length_defaults_to_max_steps(tmp_path):
    lit = tiny_lit("dense", optim=OptimConfig(warmup_steps=1))
    trainer = _trainer(tmp_path, max_steps=4)
    trainer.fit(lit, torch.utils.data.DataLoader(_Tokens(), batch_size=None))
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.lr_lambdas[0].total_steps == 4
    assert scheduler.get_last_lr()[0] == pytest.approx(7e-4 * 0.1)  # the floor at max_steps


@pytest.mark.slow
def test_compile_trains(tmp_path):
    """``model.compile: true`` (slow on the CPU: inductor compiles C++)."""
    torch.manual_seed(0)
    lit = tiny_lit("mot", compile=True)
    trainer = _trainer(tmp_path, max_steps=2)
    trainer.fit(lit, torch.utils.data.DataLoader(_Tokens(), batch_size=None))
    assert lit.loss_fn is not lit._cross_entropy
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert all(not k.startswith("_orig_mod") for k in lit.state_dict())


def test_bf16_on_the_cpu_warns_once_that_it_is_slow(tmp_path):
    lit = tiny_lit("dense", optim=OptimConfig(warmup_steps=1))
    with pytest.warns(UserWarning, match="most CPUs have no fast bf16 arithmetic"):
        _trainer(tmp_path, max_steps=1, precision="bf16-true").fit(
            lit, torch.utils.data.DataLoader(_Tokens(), batch_size=None)
        )
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, max_steps=1).fit(
            tiny_lit("dense", optim=OptimConfig(warmup_steps=1)),
            torch.utils.data.DataLoader(_Tokens(), batch_size=None),
        )
    assert not [w for w in caught if "bf16" in str(w.message)]  # float32: no such warning


REPO = Path(__file__).resolve().parents[1]


def _short_validation_file(c4_dir: Path, path: Path, tokenizer_path: Path) -> int:
    """A validation file of C4 text holding between one and two groups of 32 windows of 17
    tokens; returns its window count."""
    from motlab.data.tokenizer import load_tokenizer

    tok = load_tokenizer(str(tokenizer_path))
    records, tokens = [], 0
    with gzip.open(next((c4_dir / "en").glob("c4-validation.*.json.gz")), "rt") as f:
        while tokens < 45 * 16:
            text = json.loads(f.readline())["text"]
            records.append(json.dumps({"text": text}))
            tokens += len(tok.encode(text).ids) + 1  # and its end-of-text
    path.write_text("\n".join(records) + "\n")
    windows = (tokens - 1) // 16  # windows of 17 tokens, each sharing its last with the next
    assert 32 < windows < 64
    return windows


@pytest.mark.parametrize("conf", ["mot.yaml", "expert_choice.yaml"])
def test_a_short_validation_set_trains_through_its_validations(
    conf, c4_dir, tokenizer_path, tmp_path, monkeypatch
):
    """MoT / expert choice (G = 32) with validation files that hold fewer windows than the 2 × 32
    asked for: the set is cut to one whole group before the first step (with a warning saying
    so), and the run validates twice and ends; it failed at its first validation on the last
    batch of fewer than 32 rows."""
    from motlab.cli import cli_main

    monkeypatch.chdir(tmp_path)
    windows = _short_validation_file(c4_dir, tmp_path / "val.jsonl", tokenizer_path)
    order: list[str] = []

    class FirstStep(pl.Callback):
        def on_train_batch_start(self, trainer, *args) -> None:
            order.append("step")

    def remember(message, *args, **kwargs):
        order.append(str(message))

    with pytest.MonkeyPatch.context() as mp:
        import motlab.data.validation

        mp.setattr(motlab.data.validation, "rank_zero_warn", remember)
        cli = cli_main(
            ["fit", "--config", str(REPO / "conf" / conf), "--config", str(REPO / "conf/tiny.yaml"),
             "--data.path", str(c4_dir), "--data.tokenizer", str(tokenizer_path),
             "--data.val_files", str(tmp_path / "val.jsonl"), "--data.seq_len", "16",
             "--data.num_workers", "0", "--trainer.max_steps", "4",
             "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false"],
            trainer_defaults={"callbacks": [FirstStep()]},
        )  # fmt: skip
    assert cli.trainer.global_step == 4
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])
    assert [len(b) for b in cli.datamodule.val_dataloader()] == [32]
    warned = [m for m in order if m != "step"]
    assert len(warned) == 1 and order[0] == warned[0]  # said once, before the first step
    assert f"holds {windows} windows" in warned[0]
    assert f"the last {windows - 32} are left out" in warned[0]


def test_a_partial_batch_of_another_loader_is_cut_to_whole_groups(tmp_path):
    """A loader whose last batch is not a multiple of G (a plain DataLoader without drop_last)
    validates on that batch's whole groups, warning once, instead of failing in the layer."""
    lit = tiny_lit("mot")
    data = batch(8 + 6)  # G = 4: batches of 8 and 6 rows
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="a validation batch of 6 rows .* first 4 rows") as rec:
        (result,) = trainer.validate(lit, loader)
    assert sum("validation batch of" in str(w.message) for w in rec) == 1
    lit.eval()
    with torch.no_grad():
        expected = [lit._cross_entropy(part)[0] for part in (data[:8], data[8:12])]
    # Token-weighted: 8 and 4 rows of the same length.
    assert result["val/loss"] == pytest.approx(float((2 * expected[0] + expected[1]) / 3))
    with pytest.raises(ValueError, match="a batch of 3 rows is not a multiple"):
        lit._whole_groups(batch(3), "train")


def test_an_in_run_switch_the_run_ends_before_is_refused(tmp_path):
    """conf/mot_switch.yaml under conf/tiny.yaml: switch at 150K in a 20-step run trained MoT
    alone, and ended as if it had switched."""
    from motlab.transition import TransitionConfig

    lit = tiny_lit("mot", transition=TransitionConfig(switch_at=150_000))
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=20, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(batch(64), batch_size=8)
    with pytest.raises(ValueError, match=r"switch_at=150000 is not before trainer\.max_steps=20"):
        trainer.fit(lit, loader)
    assert trainer.global_step == 0
