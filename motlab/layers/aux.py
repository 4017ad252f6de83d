"""What a feed-forward layer returns beside its output.

Routed layers have auxiliary losses (load balancing, z-loss) that must reach the objective and
statistics (entropy, drops, load) that researchers watch. Returning them explicitly, rather than
stashing them on modules or in globals, keeps every layer a pure function of its input and makes
the training loop the one place where losses are summed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class Aux:
    """Auxiliary outputs of a layer or a whole model.

    ``losses`` are already multiplied by their configured weights: the objective is
    ``cross_entropy + sum(losses.values())``. ``stats`` are detached diagnostics (scalars, or
    per-expert vectors such as ``tokens_per_expert``) and never enter the objective.
    """

    losses: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, Tensor] = field(default_factory=dict)

    def add(self, prefix: str, other: Aux) -> None:
        """Merge ``other`` into this one, each name prefixed (``"block4/" + name``)."""
        self.losses.update({f"{prefix}{k}": v for k, v in other.losses.items()})
        self.stats.update({f"{prefix}{k}": v for k, v in other.stats.items()})

    def total_loss(self) -> Tensor | float:
        """Sum of the weighted auxiliary losses (0.0 when there are none)."""
        return sum(self.losses.values(), 0.0)
