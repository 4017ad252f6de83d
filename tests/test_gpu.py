"""GPU checks (``python -m pytest -m gpu`` on a CUDA machine; skipped by default and on CPUs).

bf16 autocast, ``torch.compile`` and fused AdamW only run their real kernels on a GPU: these
tests compare them with the eager fp32 path there, with tolerances for bf16.
"""

from __future__ import annotations

import pytest
import torch

from motlab.config import GPTConfig
from motlab.layers import FFN_REGISTRY
from motlab.lit import LitLM
from motlab.model import GPT
from motlab.optim import OptimConfig, build_optimizer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

ROUTED = {
    "mot": {"group_size": 8, "n_experts": 8},
    "token_choice": {"n_experts": 8},
    "expert_choice": {"group_size": 8, "n_experts": 8},
}


def _config(name: str) -> GPTConfig:
    return GPTConfig(
        size="mini", vocab_size=512, seq_len=64, ffn={"variant": name, **ROUTED.get(name, {})}
    )


def _model(name: str) -> GPT:
    torch.manual_seed(0)
    return GPT(_config(name)).cuda()


@pytest.mark.parametrize("name", sorted(FFN_REGISTRY))
def test_compiled_bf16_matches_eager_fp32(name: str) -> None:
    model = _model(name)
    tokens = torch.randint(0, 512, (16, 64), device="cuda")
    with torch.no_grad():
        reference = model(tokens).float()
        compiled = torch.compile(model.forward_with_aux)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits, _ = compiled(tokens)
    assert torch.allclose(logits.float(), reference, atol=0.1, rtol=0.05)


def test_fused_adamw_is_used_on_cuda_and_steps_as_plain_adamw() -> None:
    """Fused AdamW, motlab's default on CUDA, takes the steps PyTorch's multi-tensor AdamW
    takes from the same parameters and gradients, schedule and weight decay included (to
    rounding: the two order their arithmetic differently)."""
    model = _model("mot")
    copy = _model("mot")
    copy.load_state_dict(model.state_dict())
    optimizer, scheduler = build_optimizer(model, OptimConfig(warmup_steps=1), total_steps=10)
    cfg = OptimConfig(warmup_steps=1, fused=False)
    plain, plain_scheduler = build_optimizer(copy, cfg, total_steps=10)
    assert optimizer.defaults["fused"] is True and plain.defaults["fused"] is False
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    tokens = torch.randint(0, 512, (16, 64), device="cuda")
    for _ in range(3):
        logits, aux = model.forward_with_aux(tokens)
        (logits.float().logsumexp(-1).mean() + aux.total_loss()).backward()
        for p, q in zip(model.parameters(), copy.parameters(), strict=True):
            q.grad = p.grad.clone()
        for opt, schedule in ((optimizer, scheduler), (plain, plain_scheduler)):
            opt.step()
            schedule.step()
            opt.zero_grad(set_to_none=True)
    for (name, p), q in zip(model.named_parameters(), copy.parameters(), strict=True):
        assert not torch.equal(p, before[name]), f"{name} did not move"
        torch.testing.assert_close(p, q, rtol=1e-6, atol=2e-7, msg=name)


@pytest.mark.parametrize("name", sorted(FFN_REGISTRY))
def test_compiled_training_step_never_waits_for_the_gpu(name: str) -> None:
    """motlab's compiled loss (model + cross-entropy), backward, clipping, fused AdamW and the
    schedule only queue GPU work: any synchronising call (``.item()``, ``nonzero``, a pageable
    copy) raises in this mode."""
    lit = LitLM(_config(name), compile=True).cuda()
    optimizer, scheduler = build_optimizer(lit.net, OptimConfig(), total_steps=10)
    tokens = torch.randint(0, 512, (16, 65), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            ce, aux = lit.loss_fn(tokens)
        (ce + aux.total_loss()).backward()
        torch.nn.utils.clip_grad_norm_(lit.net.parameters(), 0.5)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    step()  # compiled forward and backward, optimiser state created
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
