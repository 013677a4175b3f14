"""Layer-adaptive magnitude pruning (LAMP; Lee, Park, Mo, Ahn & Shin, ICLR 2021).

A weight's LAMP score is its squared magnitude relative to all weights of its layer that are at
least as large: with the layer's weights sorted ascending by magnitude,
``score(u) = w_u² / Σ_{v ≥ u} w_v²``. The largest weight of every layer scores 1, so one global
threshold over these scores never empties a layer, and layers initialised at different scales
(an embedding next to a hidden layer) are compared on equal terms, unlike global magnitude.
"""

from __future__ import annotations

import torch

from prunelab.pruning.criteria.registry import Criterion, ScoreContext, register


def lamp_score(weight: torch.Tensor, ctx: ScoreContext | None = None) -> torch.Tensor:
    """LAMP scores in the weight's shape; entries masked in ``ctx.mask`` count as zero."""
    w = weight.detach().to(torch.float64)
    if ctx is not None and ctx.mask is not None:
        w = w * (ctx.mask.detach().to(w.device) != 0).to(w.dtype)
    sq = (w * w).reshape(-1)
    order = torch.argsort(sq, stable=True)  # ascending; ties keep their flat order
    ranked = sq[order]
    # suffix sums Σ_{v >= u} w_v² over the ascending order
    suffix = torch.flip(torch.cumsum(torch.flip(ranked, (0,)), 0), (0,))
    ranked_scores = torch.where(suffix > 0, ranked / suffix.clamp_min(torch.finfo(w.dtype).tiny),
                                torch.zeros_like(ranked))
    scores = torch.empty_like(sq)
    scores[order] = ranked_scores
    return scores.view(weight.shape)


register(Criterion("lamp", lamp_score, scopes=("global",)))
