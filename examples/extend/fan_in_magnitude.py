"""A pruning criterion with a knob of its own: |w| * fan_in ** alpha, one threshold over all layers.

With ``alpha = 0`` this is global magnitude pruning; a positive ``alpha`` favours the weights of
layers with a large fan-in (each of which matters less), so those layers are pruned less than
by magnitude alone and the others more. The class wraps a registered score function and its
knob; ``conf/pruning/method/fan_in_magnitude.yaml`` names it.

    PYTHONPATH=examples/extend python -m prunelab --config-dir examples/extend/conf \\
        pruning=one_shot pruning/method=fan_in_magnitude pruning.method.alpha=1.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from prunelab.errors import ConfigError
from prunelab.pruning.criteria import Method, ScoreContext, register


@register(name="fan_in_magnitude", scopes=("global", "layer"))
def fan_in_magnitude(weight: torch.Tensor, ctx: ScoreContext, alpha: float = 0.0) -> torch.Tensor:
    """``|w| * fan_in ** alpha`` (fan-in: the entries of one output unit)."""
    fan_in = weight[0].numel() if weight.ndim > 1 else 1
    return weight.detach().abs() * float(fan_in) ** alpha


@dataclass(frozen=True, kw_only=True)
class FanInMagnitude(Method):
    """The criterion and its knob ``alpha`` (checked here, once)."""

    criterion: ClassVar[str] = "fan_in_magnitude"
    alpha: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float) or not 0 <= self.alpha <= 4:
            raise ConfigError(f"alpha={self.alpha!r} must be a number in [0, 4]")

    def score(self, weight: torch.Tensor, ctx: ScoreContext) -> torch.Tensor:
        return fan_in_magnitude(weight, ctx, alpha=self.alpha)
