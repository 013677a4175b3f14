"""Random criteria: the control every pruning result should beat.

Scores are drawn on the CPU from the run's seeded generator, then moved to the weight's device,
so the same seed gives the same masks on every DDP rank and on CPU and CUDA alike.
"""

from __future__ import annotations

import torch

from prunelab.pruning.criteria.registry import Criterion, ScoreContext, register


def _draw(shape: tuple[int, ...] | torch.Size, ctx: ScoreContext) -> torch.Tensor:
    g = ctx.generator
    device = g.device if g is not None else torch.device("cpu")
    return torch.rand(tuple(shape), generator=g, device=device, dtype=torch.float32)


def random_entries(weight: torch.Tensor, ctx: ScoreContext) -> torch.Tensor:
    """One uniform draw per entry."""
    return _draw(weight.shape, ctx).to(weight.device)


def random_slices(weight: torch.Tensor, ctx: ScoreContext) -> torch.Tensor:
    """One uniform draw per slice along ``dim``."""
    return _draw((weight.shape[ctx.dim],), ctx).to(weight.device)


register(Criterion("random_unstructured", random_entries, random=True, scopes=("layer", "global")))
register(Criterion("random_structured", random_slices, structured=True, random=True))
