"""Pruning criteria: a registry of score functions, one class per criterion, one mask selection.

``compute_masks(method, weights, amount, ...)`` is the one entry point training uses: ``method``
is a criterion object (:class:`Method`: the registered score function and its knobs, built from
``conf/pruning/method/<name>.yaml``) or a registered name; it scores every tensor (in sorted-name
order, so random draws do not depend on dict order) and selects exact-count, monotone masks per
layer, per slice (structured) or with one global threshold. Adding a criterion is one score
function and one :func:`register` call::

    from prunelab.pruning.criteria import Criterion, register

    register(Criterion("abs_cubed", lambda w, ctx: w.detach().abs() ** 3,
                       scopes=("layer", "global")))

after which ``PruningCallback(plan, method="abs_cubed")`` uses it, and from the command line a
``pruning/method`` YAML with ``_target_: prunelab.pruning.criteria.ByName`` and
``criterion: abs_cubed``; a criterion with knobs of its own is a :class:`Method` subclass
(:mod:`~prunelab.pruning.criteria.methods`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn.utils import prune as torch_prune

from prunelab.errors import ConfigError
from prunelab.pruning.criteria import at_init as _at_init  # noqa: F401  (registers)
from prunelab.pruning.criteria import lamp as _lamp  # noqa: F401  (registers)
from prunelab.pruning.criteria import magnitude as _magnitude  # noqa: F401  (registers)
from prunelab.pruning.criteria import random as _random  # noqa: F401  (registers)
from prunelab.pruning.criteria import saliency as _saliency  # noqa: F401  (registers)
from prunelab.pruning.criteria.at_init import Probe, first_input
from prunelab.pruning.criteria.methods import (
    BUILT_IN,
    ByName,
    Fisher,
    GlobalMagnitude,
    Grasp,
    L1Unstructured,
    Lamp,
    LnStructured,
    Method,
    RandomStructured,
    RandomUnstructured,
    Snip,
    SynFlow,
    Taylor,
    check_round_to,
    check_scope,
    method,
)
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
    "BUILT_IN",
    "CRITERIA",
    "ByName",
    "Fisher",
    "GlobalMagnitude",
    "Grasp",
    "L1Unstructured",
    "Lamp",
    "LnStructured",
    "Method",
    "RandomStructured",
    "RandomUnstructured",
    "Snip",
    "SynFlow",
    "Taylor",
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
    "method",
    "n_to_prune",
    "register",
    "round_kept",
    "sparsity",
    "unstructured_mask",
    "validate_amount",
]


def compute_masks(
    method: str | Method,
    weights: Mapping[str, torch.Tensor],
    amount: float,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    stats: Mapping[str, Mapping] | None = None,
    scope: str | None = None,
    norm: float = 2,
    dim: int = 0,
    generator: torch.Generator | None = None,
    custom: torch_prune.BasePruningMethod | None = None,
    round_to: int | None = None,
) -> dict[str, torch.Tensor]:
    """New masks for ``weights`` (name → tensor) at target sparsity ``amount``.

    ``method``: a :class:`Method` (its knobs are used, and ``scope``/``norm``/``dim``/``round_to``
    are ignored) or a registered criterion's name. ``masks``: the current masks (missing names = dense); ``stats``: per-name gradient
    statistics (criteria with ``needs_grads``); ``scope``: ``"layer"`` or ``"global"`` (default:
    the criterion's); ``norm``/``dim``: norm order and slice axis of structured criteria;
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
    if isinstance(method, Method):
        criterion, score = method.spec, method.score
        scope, norm, dim, round_to = method.scope, method.norm, method.dim, method.round_to
        method = method.name
    else:
        criterion = get(method)
        score = criterion.score
        scope = check_scope(criterion, scope)
        round_to = check_round_to(round_to, method)
    validate_amount(amount)
    names = sorted(weights)
    if criterion.structured:
        for name in names:
            if weights[name].ndim < 2:
                raise ConfigError(
                    f"structured method {method!r} cannot prune parameter {name!r} of shape "
                    f"{tuple(weights[name].shape)}: it needs at least 2 dims (exclude it)"
                )
            norm_dim(dim, weights[name].ndim, f"parameter {name!r}")
        norm_order(norm)
    stats = stats or {}
    scores = {}
    for name in names:  # sorted: random draws must not depend on the mapping's order
        w = weights[name]
        ctx = ScoreContext(name=f"parameter {name!r}", mask=masks.get(name),
                           stats=stats.get(name), generator=generator,
                           dim=norm_dim(dim, w.ndim) if criterion.structured else dim, norm=norm)
        scores[name] = score(w, ctx)
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
         stats: Mapping | None = None, norm: float = 2, dim: int = 0,
         generator: torch.Generator | None = None, round_to: int | None = None) -> torch.Tensor:
    """One tensor's layer-wise mask: :func:`compute_masks` on ``{"weight": weight}``."""
    stats_map = None if stats is None else {"weight": stats}
    masks = None if mask is None else {"weight": mask}
    return compute_masks(method, {"weight": weight}, amount, masks=masks, stats=stats_map,
                         scope="layer" if "layer" in get(method).scopes else None, norm=norm, dim=dim,
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
