"""Pruning criteria: a registry of score functions and one mask selection for all of them.

``compute_masks(name, weights, amount, ...)`` is the one entry point training uses: it looks the
criterion up in the registry, scores every tensor (in sorted-name order, so random draws do not
depend on dict order), and selects exact-count, monotone masks per layer, per slice (structured)
or with one global threshold. Adding a criterion is one score function and one
:func:`register` call::

    from prunelab.pruning.criteria import Criterion, register

    register(Criterion("abs_cubed", lambda w, ctx: w.detach().abs() ** 3,
                       scopes=("layer", "global")))

after which ``PruningCallback(plan, method="abs_cubed")`` and, from the command line,
``imports=[mypkg.criteria] pruning.method.name=abs_cubed`` use it.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import torch
from torch.nn.utils import prune as torch_prune

from prunelab.bounds import MAX_WIDTH
from prunelab.errors import ConfigError
from prunelab.pruning.criteria import at_init as _at_init  # noqa: F401  (registers)
from prunelab.pruning.criteria import lamp as _lamp  # noqa: F401  (registers)
from prunelab.pruning.criteria import magnitude as _magnitude  # noqa: F401  (registers)
from prunelab.pruning.criteria import random as _random  # noqa: F401  (registers)
from prunelab.pruning.criteria import saliency as _saliency  # noqa: F401  (registers)
from prunelab.pruning.criteria.at_init import Probe, first_input
from prunelab.pruning.criteria.registry import (
    CRITERIA,
    SCOPES,
    Criterion,
    ScoreContext,
    get,
    register,
)
from prunelab.pruning.criteria.saliency import accumulate_grad_stats
from prunelab.pruning.criteria.select import (
    check_mask,
    float_dtype,
    global_unstructured_masks,
    n_to_prune,
    norm_dim,
    norm_order,
    round_kept,
    slice_mask,
    sparsity,
    unstructured_mask,
    validate_amount,
)

__all__ = [
    "CRITERIA",
    "SCOPES",
    "Criterion",
    "Probe",
    "ScoreContext",
    "accumulate_grad_stats",
    "check_round_to",
    "check_scope",
    "compute_masks",
    "first_input",
    "get",
    "global_unstructured_masks",
    "mask",
    "n_to_prune",
    "register",
    "round_kept",
    "sparsity",
    "unstructured_mask",
    "validate_amount",
]


def check_scope(criterion: Criterion, scope: str | None) -> str:
    """The scope to use (``None``: the criterion's default); an unsupported one is refused."""
    scope = criterion.default_scope if scope is None else scope
    if scope not in SCOPES:
        raise ConfigError(f"unknown pruning scope {scope!r}; valid scopes: {', '.join(SCOPES)}")
    if scope not in criterion.scopes:
        hint = "; use l1_unstructured for per-layer magnitude" if criterion.name == "global_magnitude" else ""
        raise ConfigError(
            f"pruning method {criterion.name!r} does not support scope {scope!r}; valid scopes: "
            f"{', '.join(criterion.scopes)}{hint}"
        )
    return scope


def check_round_to(round_to: object, method: str | None = None) -> int | None:
    """``round_to`` as a positive int (or None); ConfigError for a bad value or an unstructured method."""
    if round_to is None:
        return None
    if (isinstance(round_to, bool) or not isinstance(round_to, numbers.Integral)
            or not 1 <= round_to <= MAX_WIDTH):
        raise ConfigError(f"round_to={round_to!r} must be a positive integer (at most "
                          f"{MAX_WIDTH}), or None (off)")
    if method is not None and not get(method).structured:
        structured = ", ".join(m for m, c in CRITERIA.items() if c.structured)
        raise ConfigError(f"round_to={round_to!r} applies to structured methods ({structured}), "
                          f"not method={method!r}; drop it or pick a structured method")
    return int(round_to)


def compute_masks(
    method: str,
    weights: Mapping[str, torch.Tensor],
    amount: float,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    stats: Mapping[str, Mapping] | None = None,
    scope: str | None = None,
    n: float = 2,
    dim: int = 0,
    generator: torch.Generator | None = None,
    custom: torch_prune.BasePruningMethod | None = None,
    round_to: int | None = None,
) -> dict[str, torch.Tensor]:
    """New masks for ``weights`` (name → tensor) at target sparsity ``amount``.

    ``masks``: the current masks (missing names = dense); ``stats``: per-name gradient
    statistics (criteria with ``needs_grads``); ``scope``: ``"layer"`` or ``"global"`` (default:
    the criterion's); ``n``/``dim``: norm order and slice axis of structured criteria;
    ``generator``: the seeded CPU generator of random criteria; ``round_to`` (structured
    criteria only): every tensor keeps a multiple of this many slices (:func:`round_kept`).

    ``custom``: a ``torch.nn.utils.prune.BasePruningMethod`` instance used instead of ``method``;
    its own ``amount`` semantics apply (torch's built-ins prune a fraction of the *remaining*
    entries) and its result is multiplied by the current mask, so it stays monotone.

    Returns a dict with the keys (and order) of ``weights``; each mask has its weight's shape,
    dtype and device.
    """
    masks = dict(masks or {})
    for name, m in masks.items():
        if name in weights:
            check_mask(m, weights[name], f"parameter {name!r}")
    if custom is not None:
        return _custom_masks(custom, weights, masks)
    criterion = get(method)
    scope = check_scope(criterion, scope)
    validate_amount(amount)
    round_to = check_round_to(round_to, method)
    names = sorted(weights)
    if criterion.structured:
        for name in names:
            if weights[name].ndim < 2:
                raise ConfigError(
                    f"structured method {method!r} cannot prune parameter {name!r} of shape "
                    f"{tuple(weights[name].shape)}: it needs at least 2 dims (exclude it)"
                )
            norm_dim(dim, weights[name].ndim, f"parameter {name!r}")
        norm_order(n)
    stats = stats or {}
    scores = {}
    for name in names:  # sorted: random draws must not depend on the mapping's order
        w = weights[name]
        ctx = ScoreContext(name=f"parameter {name!r}", mask=masks.get(name),
                           stats=stats.get(name), generator=generator,
                           dim=norm_dim(dim, w.ndim) if criterion.structured else dim, n=n)
        scores[name] = criterion.score(w, ctx)
    if criterion.structured:
        out = {}
        for name in names:
            w = weights[name]
            d = norm_dim(dim, w.ndim)
            if tuple(scores[name].shape) != (w.shape[d],):
                raise ConfigError(f"criterion {method!r} returned scores of shape "
                                  f"{tuple(scores[name].shape)} for {name!r}; a structured "
                                  f"criterion returns one score per slice ({w.shape[d]})")
            out[name] = slice_mask(scores[name], amount, d, w, masks.get(name), float_dtype(w),
                                   round_to)
    else:
        for name in names:
            check_mask(scores[name], weights[name], f"criterion {method!r}'s scores for {name!r}")
        ordered = {name: scores[name] for name in weights}  # torch's concatenation order
        if scope == "global":
            out = global_unstructured_masks(ordered, amount, masks)
        else:
            out = {name: unstructured_mask(s, amount, masks.get(name)) for name, s in ordered.items()}
    return {name: out[name].to(device=w.device, dtype=float_dtype(w)) for name, w in weights.items()}


def mask(method: str, weight: torch.Tensor, amount: float, *, mask: torch.Tensor | None = None,
         stats: Mapping | None = None, n: float = 2, dim: int = 0,
         generator: torch.Generator | None = None, round_to: int | None = None) -> torch.Tensor:
    """One tensor's layer-wise mask: :func:`compute_masks` on ``{"weight": weight}``."""
    stats_map = None if stats is None else {"weight": stats}
    masks = None if mask is None else {"weight": mask}
    return compute_masks(method, {"weight": weight}, amount, masks=masks, stats=stats_map,
                         scope="layer" if "layer" in get(method).scopes else None, n=n, dim=dim,
                         generator=generator, round_to=round_to)["weight"]


def _custom_masks(custom: object, weights: Mapping[str, torch.Tensor],
                  masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not isinstance(custom, torch_prune.BasePruningMethod):
        raise ConfigError(
            f"custom pruning method must be a torch.nn.utils.prune.BasePruningMethod instance, "
            f"got {type(custom).__name__}"
        )
    out: dict[str, torch.Tensor] = {}
    for name in sorted(weights):
        # contiguous: torch's own methods flatten with view(-1), which a channels_last weight
        # (the CNN's default layout) does not allow
        w = weights[name].detach().contiguous()
        prev = masks.get(name)
        default = torch.ones_like(w) if prev is None else (
            (prev.to(w.device) != 0).to(w.dtype).contiguous())
        with torch.no_grad():
            m = custom.compute_mask(w, default_mask=default)
        if tuple(m.shape) != tuple(w.shape):
            raise ConfigError(
                f"custom pruning method {type(custom).__name__} returned a mask of shape "
                f"{tuple(m.shape)} for {name!r} of shape {tuple(w.shape)}"
            )
        out[name] = (m.to(w.device) != 0).to(w.dtype) * default  # monotone
    return {name: out[name] for name in weights}
