"""Gradient saliency criteria: what removing a weight would cost the loss.

``taylor``: first-order Taylor expansion, S = Σ_b |w ⊙ g_b| (Molchanov et al. 2017);
``fisher``: second-order, diagonal Fisher / Optimal Brain Damage, S = ½ w² ⊙ Σ_b g_b²
(LeCun et al. 1990). Both need gradient statistics, which the callback gathers over the last
``grad_batches`` training batches before each step with :func:`accumulate_grad_stats`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from prunelab.errors import ConfigError
from prunelab.pruning.criteria.registry import Criterion, ScoreContext, register


def accumulate_grad_stats(stats: dict | None, weight: torch.Tensor, grad: torch.Tensor) -> dict:
    """Add one batch's gradient to the statistics of one tensor and return them.

    ``stats`` is ``None`` (start) or a dict ``{"taylor": Σ_b |w ⊙ g_b|, "fisher": Σ_b g_b²,
    "batches": int}``; it is updated in place (float32, on the weight's device) and returned.
    Call it once per optimisation step after backward with the *effective* weight (masked, as
    used in the forward pass) and its **unscaled** gradient (in Lightning:
    ``on_before_optimizer_step``, where AMP gradients are already unscaled and DDP gradients
    already averaged over ranks).
    """
    if tuple(weight.shape) != tuple(grad.shape):
        raise ConfigError(
            f"gradient of shape {tuple(grad.shape)} does not match weight of shape "
            f"{tuple(weight.shape)}"
        )
    with torch.no_grad():
        w = weight.detach().float()
        g = grad.detach().to(device=w.device, dtype=torch.float32)
        if stats is None:
            stats = {"taylor": torch.zeros_like(w), "fisher": torch.zeros_like(w), "batches": 0}
        stats["taylor"].add_((w * g).abs_())
        stats["fisher"].addcmul_(g, g)
        stats["batches"] = int(stats["batches"]) + 1
    return stats


def _stat(stats: Mapping | None, key: str, weight: torch.Tensor, what: str) -> torch.Tensor:
    if not stats or key not in stats or int(stats.get("batches", 1)) <= 0:
        raise ConfigError(
            f"no gradient statistics for {what}: the {key} criterion needs at least one "
            f"training batch accumulated with accumulate_grad_stats"
        )
    s = stats[key]
    if tuple(s.shape) != tuple(weight.shape):
        raise ConfigError(
            f"{key} statistics of shape {tuple(s.shape)} do not match {what} of shape "
            f"{tuple(weight.shape)}"
        )
    return s.to(weight.device)


def taylor_score(weight: torch.Tensor, ctx: ScoreContext) -> torch.Tensor:
    """First-order Taylor saliency accumulated over batches: Σ_b |w ⊙ g_b| (the stat itself)."""
    return _stat(ctx.stats, "taylor", weight, ctx.name).detach().clone()


def fisher_score(weight: torch.Tensor, ctx: ScoreContext) -> torch.Tensor:
    """Second-order (Fisher / OBD) saliency: ½ · w² ⊙ Σ_b g_b²."""
    f = _stat(ctx.stats, "fisher", weight, ctx.name)
    w = weight.detach().to(f.dtype)
    return 0.5 * w * w * f


register(Criterion("taylor", taylor_score, needs_grads=True, scopes=("layer", "global")))
register(Criterion("fisher", fisher_score, needs_grads=True, scopes=("layer", "global")))
