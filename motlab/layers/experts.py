"""The expert weights shared by every routed variant.

Shapes (legend in :mod:`motlab.shapes`): D, E, F, M.

MoT, token choice and expert choice all own one :class:`Experts` module with the same three
tensors, ``router`` (D, E), ``w1`` (E, D, F) and ``w2`` (E, F, D). Because the layout and the
parameter names are identical, a MoT checkpoint becomes a token-choice model by loading the same
state dict into a different routing layer (transition tuning, METHOD.md §5) — no reshaping.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from motlab.layers.init import trunc_normal_fan_in_


class Experts(nn.Module):
    """E independent ReLU feed-forward networks plus the router that scores them.

    The router lives here, not in the routing layers, so that all routed variants share one
    state-dict layout. Routing layers decide *which* inputs each expert sees; this module only
    computes ``W2[e] · ReLU(W1[e] · x_e)`` for all experts in one batched matmul (no loop).
    """

    def __init__(self, d_model: int, n_experts: int, d_expert: int) -> None:
        super().__init__()
        self.d_model, self.n_experts, self.d_expert = d_model, n_experts, d_expert
        self.router = nn.Parameter(torch.empty(d_model, n_experts))  # (D, E)
        self.w1 = nn.Parameter(torch.empty(n_experts, d_model, d_expert))  # (E, D, F)
        self.w2 = nn.Parameter(torch.empty(n_experts, d_expert, d_model))  # (E, F, D)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        trunc_normal_fan_in_(self.router, fan_in=self.d_model)
        trunc_normal_fan_in_(self.w1, fan_in=self.d_model)
        trunc_normal_fan_in_(self.w2, fan_in=self.d_expert)

    def router_logits(self, x: Tensor) -> Tensor:
        """Router logits in fp32, as routing is precision-sensitive: (..., D) → (..., E).

        With ``float32_matmul_precision: high`` (the GPU configs) CUDA runs this matmul on TF32
        tensor cores: a 512-expert router in full float32 would cost as much time as its FFN.
        """
        if not torch.amp.is_autocast_available(x.device.type):  # the meta device (counting)
            return x.float() @ self.router.float()
        with torch.autocast(device_type=x.device.type, enabled=False):
            return x.float() @ self.router.float()

    def forward(self, x_EMD: Tensor) -> Tensor:
        """Apply expert e to its M inputs: (E, M, D) → (E, M, D)."""
        h_EMF = F.relu(torch.bmm(x_EMD, self.w1))  # bmm follows autocast (bf16 on GPU)
        return torch.bmm(h_EMF, self.w2)

    def each(self, x_MD: Tensor, expert_M: Tensor) -> Tensor:
        """Apply expert ``expert_M[m]`` to input m: (M, D) → (M, D), with no capacity: every
        input is computed, and nothing else (dropless token choice at inference).

        Eager, the inputs are sorted by expert and each expert used multiplies its own run of
        inputs by its weights (one host sync for the counts; the weights are read once and
        never copied). Traced by the compiler, where shapes must not depend on the routing,
        each input gathers its expert's weights (meant for a decoding step's few inputs).
        """
        if torch.compiler.is_compiling():
            h_M1F = F.relu(torch.bmm(x_MD[:, None], self.w1[expert_M]))
            return torch.bmm(h_M1F, self.w2[expert_M])[:, 0]
        counts = torch.bincount(expert_M, minlength=self.n_experts).tolist()
        if max(counts) == len(expert_M):  # one expert for every input (batch 1, top-1)
            e = counts.index(len(expert_M))
            return F.relu(x_MD @ self.w1[e]) @ self.w2[e]
        order_M = torch.argsort(expert_M, stable=True)
        x_sorted_MD = x_MD[order_M]
        pieces, start = [], 0
        for e, n in enumerate(counts):
            if n:
                piece_MD = x_sorted_MD[start : start + n]
                pieces.append(F.relu(piece_MD @ self.w1[e]) @ self.w2[e])
                start += n
        y_sorted_MD = torch.cat(pieces)
        return torch.empty_like(y_sorted_MD).index_copy_(0, order_M, y_sorted_MD)


def top_k_expert_size(d_ff: int, top_k: int, d_expert: int | None, variant: str) -> int:
    """Expert size F of a top-k routed layer: ``d_expert``, else FLOP-matched ``d_ff / top_k``.

    A token then costs k experts × F = d_ff hidden units, as in the dense layer.
    """
    if d_expert is not None:
        return d_expert
    if d_ff % top_k:
        raise ValueError(f"{variant}: top_k ({top_k}) must divide d_ff ({d_ff}), or set d_expert")
    return d_ff // top_k
