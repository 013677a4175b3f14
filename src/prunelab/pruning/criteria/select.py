"""Mask selection shared by every criterion: scores (+ the previous mask) → a new mask.

Semantics users rely on:

* ``amount`` is the **target** fraction of zeros in the criterion's scope, never an increment:
  per tensor for layer-wise criteria, over all given tensors together for global ones. It must
  lie in ``[0, 1)``; anything else raises :class:`~prunelab.errors.ConfigError`.
* The target count is ``round(amount * n)`` (Python's ``round``, as ``torch.nn.utils.prune``
  does), with ``n`` the number of entries (unstructured) or of slices along ``dim`` (structured).
* Masks are **monotone**: an entry (or slice) zeroed by the previous mask stays zero and is
  counted first; only the increment is chosen from the surviving entries. Three steps to 0.2,
  0.4, 0.6 therefore give exactly 60 % zeros, not the 48.8 % that repeated
  ``torch.nn.utils.prune`` calls compound to. Pruning never regrows weights.
* A mask is a 0/1 tensor with the weight's shape, like ``torch.nn.utils.prune`` masks. With no
  previous mask the selection is the same ``topk`` call as torch's, hence the same ties.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import torch

from prunelab.errors import ConfigError


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


def float_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype if t.is_floating_point() else torch.float32


def check_mask(mask: torch.Tensor | None, like: torch.Tensor, what: str = "tensor") -> None:
    if mask is not None and tuple(mask.shape) != tuple(like.shape):
        raise ConfigError(
            f"mask of shape {tuple(mask.shape)} does not match {what} of shape {tuple(like.shape)}"
        )


def norm_order(n: object) -> float:
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
    raise ConfigError(f"norm order must be a number, inf or 'fro', got {n!r}")


def norm_dim(dim: object, ndim: int, what: str = "tensor") -> int:
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or not -ndim <= dim < ndim:
        raise ConfigError(
            f"pruning dim must be an integer in [{-ndim}, {ndim - 1}] for {what} with "
            f"{ndim} dims, got {dim!r}"
        )
    return int(dim) % ndim


def unstructured_mask(
    scores: torch.Tensor, amount: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Zero the lowest-scored entries so that exactly ``round(amount * numel)`` are zero.

    Entries already zero in ``mask`` stay zero and count first. With no previous mask this is
    the same ``torch.topk(scores.view(-1), k, largest=False)`` call as torch's L1Unstructured,
    hence the same ties. Returns a mask of ``scores``' shape, on its device, in the mask's (or
    the scores') floating dtype.
    """
    check_mask(mask, scores, "scores")
    dtype = float_dtype(mask) if mask is not None else float_dtype(scores)
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


def slice_importance(scores: torch.Tensor, dim: int, n: float) -> torch.Tensor:
    other = tuple(d for d in range(scores.ndim) if d != dim)
    return torch.linalg.vector_norm(scores, ord=n, dim=other)


def slice_mask(
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
        check_mask(masks.get(name), scores[name], f"{name!r}")
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
        dtype = float_dtype(m) if m is not None else float_dtype(t)
        out[name] = new[start : start + t.numel()].view(t.shape).to(device=t.device, dtype=dtype)
        start += t.numel()
    return out
