"""Magnitude criteria: small weights matter least (Han et al. 2015; torch's L1/Ln methods)."""

from __future__ import annotations

import torch

from prunelab.pruning.criteria.registry import Criterion, ScoreContext, register
from prunelab.pruning.criteria.select import norm_order, slice_importance


def magnitude(weight: torch.Tensor, ctx: ScoreContext | None = None) -> torch.Tensor:
    """|w| per entry."""
    return weight.detach().abs()


def ln_norm(weight: torch.Tensor, ctx: ScoreContext) -> torch.Tensor:
    """The L``n`` norm (``n``: ``ctx.norm``) of each slice along ``dim`` of the masked weight (torch's LnStructured)."""
    w = weight.detach()
    if ctx.mask is not None:
        w = w * (ctx.mask.detach().to(w.device) != 0).to(w.dtype)
    return slice_importance(w.abs(), ctx.dim, norm_order(ctx.norm))


register(Criterion("l1_unstructured", magnitude, scopes=("layer", "global")))
register(Criterion("global_magnitude", magnitude, scopes=("global",)))
register(Criterion("ln_structured", ln_norm, structured=True))
