"""Pruning criteria: pure functions from weights (and a previous mask) to a new mask.

Semantics (DESIGN.md §3):

* ``amount`` is the **target** fraction of zeros in the method's scope, never an increment:
  per tensor for layer-wise methods, over all given tensors together for global ones.
  It must lie in ``[0, 1)``; anything else raises :class:`~prunelab.errors.ConfigError`.
* The target count is ``round(amount * n)`` (Python's ``round``, as ``torch.nn.utils.prune``
  does), with ``n`` the number of entries (unstructured) or of slices along ``dim`` (structured).
* Masks are **monotone**: an entry (or slice) zeroed by the previous ``mask`` stays zero and is
  counted first (its score is treated as ``-inf``); only the increment is chosen from the
  surviving entries. Three calls to 0.2, 0.4, 0.6 therefore give exactly 60 % zeros, not the
  48.8 % that repeated ``torch.nn.utils.prune`` calls compound to.
* If the previous mask already has at least the target number of zeros, it is returned
  unchanged (a copy): pruning never regrows weights.
* A mask is a 0/1 tensor with the weight's shape, dtype and device, like
  ``torch.nn.utils.prune`` masks.
* With no previous mask, :func:`l1_unstructured` gives exactly the mask of
  ``torch.nn.utils.prune.l1_unstructured`` (same ``topk`` call, same ties), and
  :func:`ln_structured` that of ``torch.nn.utils.prune.ln_structured``.
* Random methods draw their scores on the CPU from the ``torch.Generator`` passed in (then move
  them to the weight's device), so a generator seeded the same way gives the same masks on every
  DDP rank and on CPU and CUDA alike. :func:`compute_masks` visits tensors in sorted-name order.

The callback calls :func:`compute_masks`; the other functions are its building blocks.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn.utils import prune as torch_prune

from prunelab.errors import ConfigError

__all__ = [
    "METHODS",
    "MethodSpec",
    "accumulate_grad_stats",
    "check_round_to",
    "compute_masks",
    "fisher",
    "fisher_score",
    "global_magnitude",
    "global_unstructured_masks",
    "l1_unstructured",
    "ln_structured",
    "magnitude",
    "n_to_prune",
    "random_structured",
    "random_unstructured",
    "round_kept",
    "sparsity",
    "structured_mask",
    "taylor",
    "taylor_score",
    "unstructured_mask",
    "validate_amount",
]

Scope = Literal["layer", "global"]
SCOPES: tuple[str, ...] = ("layer", "global")


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def validate_amount(amount: object) -> float:
    """Return ``amount`` as a float if it is a fraction in ``[0, 1)``, else raise ConfigError."""
    if (
        isinstance(amount, bool)
        or not isinstance(amount, numbers.Real)
        or math.isnan(float(amount))
        or not 0.0 <= float(amount) < 1.0
    ):
        raise ConfigError(
            f"pruning amount must be a target fraction of zeros in [0, 1), got {amount!r}"
        )
    return float(amount)


def n_to_prune(amount: float, n: int) -> int:
    """Number of entries/slices that ``amount`` of ``n`` means: ``round(amount * n)`` as torch."""
    return round(validate_amount(amount) * n)


def check_round_to(round_to: object, method: str | None = None) -> int | None:
    """``round_to`` as a positive int (or None); ConfigError for a bad value or an unstructured method."""
    if round_to is None:
        return None
    if isinstance(round_to, bool) or not isinstance(round_to, numbers.Integral) or round_to < 1:
        raise ConfigError(f"pruning.round_to={round_to!r} must be a positive integer or null (off)")
    spec = METHODS.get(method) if method is not None else None
    if spec is not None and not spec.structured:
        structured = ", ".join(m for m, s in METHODS.items() if s.structured)
        raise ConfigError(f"pruning.round_to applies to structured methods ({structured}), "
                          f"not {method!r}; drop it or pick a structured method")
    return int(round_to)


def round_kept(n_keep: int, n_slices: int, round_to: int | None) -> int:
    """Slices to keep when their count must be a multiple of ``round_to``.

    The smallest multiple at or above ``n_keep`` (sparsity never exceeds the target), at least
    one multiple (a layer is never emptied), capped at ``n_slices`` (a layer smaller than
    ``round_to`` stays whole). Hardware and kernels run fastest on channel counts that are
    multiples of their vector width; ragged counts waste part of each vector.
    """
    if not round_to or round_to <= 1:
        return n_keep
    return min(n_slices, max(round_to, -(-n_keep // round_to) * round_to))


def sparsity(mask_or_tensor: torch.Tensor) -> float:
    """Fraction of zeros in a mask or a (masked) tensor; 0.0 for an empty tensor."""
    numel = mask_or_tensor.numel()
    if numel == 0:
        return 0.0
    return float((mask_or_tensor == 0).sum().item()) / numel


def _float_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype if t.is_floating_point() else torch.float32


def _check_mask(mask: torch.Tensor | None, like: torch.Tensor, what: str = "tensor") -> None:
    if mask is not None and tuple(mask.shape) != tuple(like.shape):
        raise ConfigError(
            f"mask of shape {tuple(mask.shape)} does not match {what} of shape {tuple(like.shape)}"
        )


def _norm_order(n: object) -> float:
    if isinstance(n, str):
        key = n.strip().lower()
        if key == "fro":
            return 2.0
        if key in ("inf", "+inf"):
            return math.inf
        if key == "-inf":
            return -math.inf
    if isinstance(n, numbers.Real) and not isinstance(n, bool) and not math.isnan(float(n)):
        return float(n)
    raise ConfigError(f"norm order n must be a number, inf or 'fro', got {n!r}")


def _norm_dim(dim: object, ndim: int, what: str = "tensor") -> int:
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or not -ndim <= dim < ndim:
        raise ConfigError(
            f"pruning dim must be an integer in [{-ndim}, {ndim - 1}] for {what} with "
            f"{ndim} dims, got {dim!r}"
        )
    return int(dim) % ndim


# --------------------------------------------------------------------------------------------
# importance scores (higher = more important)
# --------------------------------------------------------------------------------------------


def magnitude(weight: torch.Tensor) -> torch.Tensor:
    """|w|, the L1 magnitude score."""
    return weight.detach().abs()


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
            stats = {
                "taylor": torch.zeros_like(w),
                "fisher": torch.zeros_like(w),
                "batches": 0,
            }
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


def _taylor_score(weight: torch.Tensor, stats: Mapping | None, what: str) -> torch.Tensor:
    return _stat(stats, "taylor", weight, what).detach().clone()


def _fisher_score(weight: torch.Tensor, stats: Mapping | None, what: str) -> torch.Tensor:
    f = _stat(stats, "fisher", weight, what)
    w = weight.detach().to(f.dtype)
    return 0.5 * w * w * f


def taylor_score(weight: torch.Tensor, stats: Mapping) -> torch.Tensor:
    """First-order Taylor saliency accumulated over batches: S = Σ_b |w ⊙ g_b| (the stat itself)."""
    return _taylor_score(weight, stats, "the weight")


def fisher_score(weight: torch.Tensor, stats: Mapping) -> torch.Tensor:
    """Second-order (Fisher / OBD) saliency: 0.5 · w² ⊙ Σ_b g_b²."""
    return _fisher_score(weight, stats, "the weight")


# --------------------------------------------------------------------------------------------
# selection: scores (+ previous mask) -> mask
# --------------------------------------------------------------------------------------------


def unstructured_mask(
    scores: torch.Tensor, amount: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Zero the lowest-scored entries so that exactly ``round(amount * numel)`` are zero.

    Entries already zero in ``mask`` stay zero and count first. With no previous mask this is
    the same ``torch.topk(scores.view(-1), k, largest=False)`` call as torch's L1Unstructured,
    hence the same ties. Returns a mask of ``scores``' shape, on its device, in the mask's (or
    the scores') floating dtype.
    """
    _check_mask(mask, scores, "scores")
    dtype = _float_dtype(mask) if mask is not None else _float_dtype(scores)
    k = n_to_prune(amount, scores.numel())
    if mask is None:
        new = torch.ones(scores.shape, dtype=dtype, device=scores.device)
    else:
        new = mask.detach().to(device=scores.device, dtype=dtype, copy=True)
        # exact 0/1, and contiguous: a channels_last weight's mask is channels_last, and the
        # flat view must follow the logical (row-major) order that torch's own topk sees
        new = (new != 0).to(dtype).contiguous()
    flat_scores = scores.detach().reshape(-1)
    flat_new = new.view(-1)
    alive = (flat_new != 0).nonzero().squeeze(1)
    n_alive = alive.numel()
    k_new = k - (flat_new.numel() - n_alive)
    if k_new <= 0:
        return new  # already at or past the target: never regrow
    if n_alive == flat_new.numel():
        idx = torch.topk(flat_scores, k=k_new, largest=False).indices
    else:
        sub = torch.topk(flat_scores[alive], k=k_new, largest=False).indices
        idx = alive[sub]
    flat_new[idx] = 0
    return new


def _slice_importance(scores: torch.Tensor, dim: int, n: float) -> torch.Tensor:
    other = tuple(d for d in range(scores.ndim) if d != dim)
    return torch.linalg.vector_norm(scores, ord=n, dim=other)


def _select_slices(
    slice_scores: torch.Tensor,
    amount: float,
    dim: int,
    like: torch.Tensor,
    mask: torch.Tensor | None,
    dtype: torch.dtype,
    round_to: int | None = None,
) -> torch.Tensor:
    """Mask of ``like``'s shape zeroing whole slices along ``dim``.

    A slice counts as already pruned when the previous mask is all zero on it. The kept slices
    are the ``n_slices - k`` highest-scored surviving ones (``torch.topk(largest=True)`` as in
    torch's LnStructured). The result is multiplied by the previous mask (monotone).
    ``round_to``: keep a multiple of it (:func:`round_kept`).
    """
    n_slices = like.shape[dim]
    k = n_slices - round_kept(n_slices - n_to_prune(amount, n_slices), n_slices, round_to)
    device = like.device
    if mask is None:
        prev = torch.ones(like.shape, dtype=dtype, device=device)
        slice_alive = torch.ones(n_slices, dtype=torch.bool, device=device)
    else:
        prev = (mask.detach().to(device) != 0).to(dtype)
        other = tuple(d for d in range(like.ndim) if d != dim)
        slice_alive = prev.amax(dim=other) != 0 if other else prev != 0
    n_dead = n_slices - int(slice_alive.sum().item())
    if k <= n_dead:
        return prev  # already at or past the target: never regrow
    n_keep = n_slices - k
    keep_slices = torch.zeros(n_slices, dtype=dtype, device=device)
    if n_keep > 0:
        slice_scores = slice_scores.detach().to(device)
        if n_dead == 0:
            keep = torch.topk(slice_scores, k=n_keep, largest=True).indices
        else:
            alive_idx = slice_alive.nonzero().squeeze(1)
            keep = alive_idx[torch.topk(slice_scores[alive_idx], k=n_keep, largest=True).indices]
        keep_slices[keep] = 1
    view = [1] * like.ndim
    view[dim] = n_slices
    return prev * keep_slices.view(view)


def structured_mask(
    scores: torch.Tensor,
    amount: float,
    dim: int = 0,
    n: float = 2,
    mask: torch.Tensor | None = None,
    round_to: int | None = None,
) -> torch.Tensor:
    """Zero whole slices along ``dim`` so that exactly ``round(amount * shape[dim])`` are zero.

    Slice importance is the L``n`` norm of the (masked) scores over all other dims: for a Conv2d
    weight ``[out, in, kh, kw]`` and ``dim=0`` whole output filters go, for a Linear weight
    ``[out, in]`` whole output neurons. Slices already all-zero in ``mask`` count first.
    With ``round_to`` the kept count is rounded up to a multiple of it (:func:`round_kept`).
    """
    if scores.ndim < 2:
        raise ConfigError(
            f"structured pruning needs a tensor with at least 2 dims, got shape "
            f"{tuple(scores.shape)}"
        )
    _check_mask(mask, scores, "scores")
    dim = _norm_dim(dim, scores.ndim)
    order = _norm_order(n)
    validate_amount(amount)
    dtype = _float_dtype(mask) if mask is not None else _float_dtype(scores)
    s = scores.detach()
    if mask is not None:
        s = s * (mask.detach().to(s.device) != 0).to(s.dtype)
    return _select_slices(_slice_importance(s, dim, order), amount, dim, scores, mask, dtype,
                          round_to)


def global_unstructured_masks(
    scores: Mapping[str, torch.Tensor],
    amount: float,
    masks: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """One threshold over all tensors together: exactly ``round(amount * Σ numel)`` zeros in all.

    Tensors are concatenated in the mapping's order (as ``torch.nn.utils.prune.global_unstructured``
    does), so with no previous masks the result equals torch's for magnitude scores. Each mask
    comes back on its scores' device, in its previous mask's (or scores') floating dtype.
    """
    masks = masks or {}
    names = list(scores)
    if not names:
        validate_amount(amount)
        return {}
    for name in names:
        _check_mask(masks.get(name), scores[name], f"{name!r}")
    device = scores[names[0]].device
    flat = torch.cat([scores[name].detach().reshape(-1).to(device) for name in names])
    prev = [
        torch.ones(scores[name].numel(), dtype=torch.float32, device=device)
        if masks.get(name) is None
        else (masks[name].detach().reshape(-1).to(device) != 0).to(torch.float32)
        for name in names
    ]
    flat_mask = torch.cat(prev)
    new = unstructured_mask(flat, amount, flat_mask)
    out: dict[str, torch.Tensor] = {}
    start = 0
    for name in names:
        t = scores[name]
        m = masks.get(name)
        dtype = _float_dtype(m) if m is not None else _float_dtype(t)
        out[name] = new[start : start + t.numel()].view(t.shape).to(device=t.device, dtype=dtype)
        start += t.numel()
    return out


# --------------------------------------------------------------------------------------------
# criteria: weight (+ mask, stats, generator) -> mask in the weight's dtype and device
# --------------------------------------------------------------------------------------------


def _like(mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return mask.to(device=weight.device, dtype=_float_dtype(weight))


def _cpu_rand(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None):
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(tuple(shape), generator=generator, device=device, dtype=torch.float32)


def l1_unstructured(
    weight: torch.Tensor, amount: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Zero the smallest-|w| entries up to the target fraction (torch's L1Unstructured, monotone)."""
    _check_mask(mask, weight, "weight")
    return _like(unstructured_mask(magnitude(weight), amount, mask), weight)


def random_unstructured(
    weight: torch.Tensor,
    amount: float,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Zero random entries up to the target fraction; scores drawn on CPU from ``generator``."""
    _check_mask(mask, weight, "weight")
    validate_amount(amount)
    scores = _cpu_rand(weight.shape, generator).to(weight.device)
    return _like(unstructured_mask(scores, amount, mask), weight)


def ln_structured(
    weight: torch.Tensor,
    amount: float,
    n: float = 2,
    dim: int = 0,
    mask: torch.Tensor | None = None,
    round_to: int | None = None,
) -> torch.Tensor:
    """Zero the whole slices along ``dim`` with the lowest L``n`` norm of the masked weight."""
    _check_mask(mask, weight, "weight")
    return _like(structured_mask(magnitude(weight), amount, dim=dim, n=n, mask=mask,
                                 round_to=round_to), weight)


def random_structured(
    weight: torch.Tensor,
    amount: float,
    dim: int = 0,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    round_to: int | None = None,
) -> torch.Tensor:
    """Zero random whole slices along ``dim``; one CPU draw per slice from ``generator``."""
    if weight.ndim < 2:
        raise ConfigError(
            f"structured pruning needs a tensor with at least 2 dims, got shape "
            f"{tuple(weight.shape)}"
        )
    _check_mask(mask, weight, "weight")
    dim = _norm_dim(dim, weight.ndim)
    validate_amount(amount)
    slice_scores = _cpu_rand((weight.shape[dim],), generator).to(weight.device)
    m = _select_slices(slice_scores, amount, dim, weight, mask, _float_dtype(weight), round_to)
    return _like(m, weight)


def global_magnitude(
    weights: Mapping[str, torch.Tensor],
    amount: float,
    masks: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Magnitude pruning with one threshold over all tensors (torch's global_unstructured + L1)."""
    scores = {name: magnitude(w) for name, w in weights.items()}
    out = global_unstructured_masks(scores, amount, masks)
    return {name: _like(m, weights[name]) for name, m in out.items()}


def taylor(
    weight: torch.Tensor,
    amount: float,
    stats: Mapping,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Zero the entries with the lowest accumulated first-order Taylor saliency Σ_b |w ⊙ g_b|."""
    _check_mask(mask, weight, "weight")
    return _like(unstructured_mask(taylor_score(weight, stats), amount, mask), weight)


def fisher(
    weight: torch.Tensor,
    amount: float,
    stats: Mapping,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Zero the entries with the lowest Fisher/OBD saliency 0.5 · w² ⊙ Σ_b g_b²."""
    _check_mask(mask, weight, "weight")
    return _like(unstructured_mask(fisher_score(weight, stats), amount, mask), weight)


# --------------------------------------------------------------------------------------------
# registry and dispatcher
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodSpec:
    """What the callback needs to know about a criterion."""

    structured: bool
    needs_grads: bool
    random: bool
    default_scope: Scope
    scopes: tuple[str, ...] = ("layer",)


METHODS: dict[str, MethodSpec] = {
    "l1_unstructured": MethodSpec(False, False, False, "layer", ("layer", "global")),
    "random_unstructured": MethodSpec(False, False, True, "layer", ("layer", "global")),
    "ln_structured": MethodSpec(True, False, False, "layer", ("layer",)),
    "random_structured": MethodSpec(True, False, True, "layer", ("layer",)),
    "global_magnitude": MethodSpec(False, False, False, "global", ("global",)),
    "taylor": MethodSpec(False, True, False, "layer", ("layer", "global")),
    "fisher": MethodSpec(False, True, False, "layer", ("layer", "global")),
}


def _custom_masks(
    custom: object,
    weights: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
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


def compute_masks(
    method: str,
    weights: Mapping[str, torch.Tensor],
    amount: float,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    stats: Mapping[str, dict] | None = None,
    scope: str | None = None,
    n: float = 2,
    dim: int = 0,
    generator: torch.Generator | None = None,
    custom: torch_prune.BasePruningMethod | None = None,
    round_to: int | None = None,
) -> dict[str, torch.Tensor]:
    """New masks for ``weights`` (name -> tensor) at target sparsity ``amount``.

    ``masks`` are the current masks (missing names = dense), ``stats`` the per-name gradient
    statistics from :func:`accumulate_grad_stats` (taylor, fisher), ``scope`` ``"layer"`` or
    ``"global"`` (default: the method's), ``n``/``dim`` the norm order and slice dim of
    structured methods, ``generator`` the seeded CPU generator of random methods,
    ``round_to`` (structured methods only) a multiple that every tensor's kept slice count is
    rounded up to (:func:`round_kept`).

    ``custom``: a ``torch.nn.utils.prune.BasePruningMethod`` instance; then ``method`` and
    ``amount`` are ignored and ``custom.compute_mask(weight, default_mask)`` is called per
    tensor (sorted-name order) with the current mask: the custom method's own ``amount``
    semantics apply (torch's built-ins prune a fraction of the *remaining* entries). The result
    is multiplied by the current mask, so it stays monotone.

    Returns a dict with the same keys (and order) as ``weights``; each mask has its weight's
    shape, dtype and device.
    """
    masks = dict(masks or {})
    for name, m in masks.items():
        if name in weights:
            _check_mask(m, weights[name], f"parameter {name!r}")
    if custom is not None:
        return _custom_masks(custom, weights, masks)
    spec = METHODS.get(method)
    if spec is None:
        raise ConfigError(f"unknown pruning method {method!r}; valid methods: {', '.join(METHODS)}")
    scope = spec.default_scope if scope is None else scope
    if scope not in SCOPES:
        raise ConfigError(f"unknown pruning scope {scope!r}; valid scopes: {', '.join(SCOPES)}")
    if scope not in spec.scopes:
        hint = (
            "; use l1_unstructured for per-layer magnitude" if method == "global_magnitude" else ""
        )
        raise ConfigError(
            f"pruning method {method!r} does not support scope {scope!r}; valid scopes: "
            f"{', '.join(spec.scopes)}{hint}"
        )
    validate_amount(amount)
    round_to = check_round_to(round_to, method)
    if spec.structured:
        for name in sorted(weights):
            if weights[name].ndim < 2:
                raise ConfigError(
                    f"structured method {method!r} cannot prune parameter {name!r} of shape "
                    f"{tuple(weights[name].shape)}: it needs at least 2 dims (exclude it)"
                )
            _norm_dim(dim, weights[name].ndim, f"parameter {name!r}")
        _norm_order(n)

    if spec.needs_grads:
        stats = stats or {}
        score_fn = _taylor_score if method == "taylor" else _fisher_score
        scores = {
            name: score_fn(w, stats.get(name), f"parameter {name!r}") for name, w in weights.items()
        }
    elif method in ("l1_unstructured", "global_magnitude"):
        scores = {name: magnitude(w) for name, w in weights.items()}
    elif method == "random_unstructured":
        # draw in sorted-name order so the generator sequence does not depend on dict order
        drawn = {
            name: _cpu_rand(weights[name].shape, generator).to(weights[name].device)
            for name in sorted(weights)
        }
        scores = {name: drawn[name] for name in weights}
    elif method == "ln_structured":
        return {
            name: ln_structured(w, amount, n=n, dim=dim, mask=masks.get(name), round_to=round_to)
            for name, w in weights.items()
        }
    elif method == "random_structured":
        out = {
            name: random_structured(
                weights[name], amount, dim=dim, mask=masks.get(name), generator=generator,
                round_to=round_to,
            )
            for name in sorted(weights)
        }
        return {name: out[name] for name in weights}
    else:  # pragma: no cover - METHODS and this dispatch are kept in step
        raise AssertionError(method)

    if scope == "global":
        out = global_unstructured_masks(scores, amount, masks)
    else:
        out = {name: unstructured_mask(s, amount, masks.get(name)) for name, s in scores.items()}
    return {name: _like(out[name], weights[name]) for name in weights}
