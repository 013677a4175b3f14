"""Dynamic sparse training: pure mask functions for SET (Mocanu et al. 2018) and RigL (Evci et al. 2020).

A dynamic run is sparse from its first step: :func:`layer_zeros` fixes how many entries of each
tensor are zero (Erdős–Rényi-Kernel or uniform), :func:`random_mask` draws the first mask, and
every few steps :func:`drop` turns off the ``n`` active entries of smallest magnitude and
:func:`grow` turns on ``n`` inactive ones — the largest random draws (SET) or the largest
|dense gradient| (RigL). The number of zeros per tensor never changes. Candidates for growth are
all entries inactive *after* the drop (as in RigL's reference code), so a just-dropped entry can
come straight back. ``n`` follows :func:`cosine_fraction`.

Every function takes and returns 0/1 masks in the weight's logical (row-major) order and never
changes its inputs; the callback applies the result.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import torch

from prunelab.errors import ConfigError
from prunelab.pruning.criteria.select import check_mask, float_dtype

DISTRIBUTIONS: tuple[str, ...] = ("erk", "uniform")

__all__ = [
    "DISTRIBUTIONS",
    "check_amount",
    "check_distribution",
    "cosine_fraction",
    "drop",
    "erk_densities",
    "grow",
    "layer_zeros",
    "n_to_update",
    "random_mask",
    "rigl_update",
    "set_update",
]



def cosine_fraction(step: int, t_end: float, alpha: float) -> float:
    """RigL's update fraction ``alpha / 2 * (1 + cos(pi * step / t_end))``; 0 from ``t_end`` on."""
    if t_end <= 0 or step >= t_end:
        return 0.0
    return alpha / 2.0 * (1.0 + math.cos(math.pi * step / t_end))


def check_amount(amount: object) -> float:
    """A dynamic run's sparsity, a fraction in (0, 1): dense and all-zero runs have nothing to train."""
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real) or not 0 < amount < 1:
        raise ConfigError(f"amount={amount!r} must be in (0, 1) for dynamic sparse training")
    return float(amount)


def check_distribution(distribution: object) -> str:
    """One of :data:`DISTRIBUTIONS`."""
    if distribution not in DISTRIBUTIONS:
        raise ConfigError(f"distribution={distribution!r} is not one of {', '.join(DISTRIBUTIONS)}")
    return str(distribution)




def n_to_update(mask: torch.Tensor, fraction: float) -> int:
    """Connections to drop (and regrow) in one tensor: ``round(fraction * active)``."""
    active = int((mask != 0).sum())
    return min(active, round(fraction * active))


def erk_densities(shapes: Mapping[str, Sequence[int]], amount: float) -> dict[str, float]:
    """Erdős–Rényi-Kernel densities (Evci et al. 2020): a tensor's density is proportional to
    ``sum(shape) / prod(shape)``, scaled so that ``1 - amount`` of all entries are kept; a
    tensor whose density would exceed 1 is kept dense and the rest rescaled (RigL's loop)."""
    dense: set[str] = set()
    while True:
        rhs, divisor, raw = 0.0, 0.0, {}
        for name, shape in shapes.items():
            numel = math.prod(shape)
            if name in dense:
                rhs -= amount * numel
            else:
                rhs += (1.0 - amount) * numel
                raw[name] = sum(shape) / numel
                divisor += raw[name] * numel
        if not raw:
            return {name: 1.0 for name in shapes}
        eps = rhs / divisor
        top = max(raw.values())
        if top * eps > 1.0:
            dense.update(name for name, r in raw.items() if r == top)
            continue
        return {name: 1.0 if name in dense else eps * raw[name] for name in shapes}


def layer_zeros(shapes: Mapping[str, Sequence[int]], amount: float,
                distribution: str = "erk") -> dict[str, int]:
    """How many entries of each tensor are zero throughout a dynamic run.

    ``uniform``: ``round(amount * numel)`` in each tensor. ``erk``: :func:`erk_densities`, with
    the kept counts rounded by largest remainder so that exactly ``round(amount * total)``
    entries are zero over all tensors together.
    """
    check_distribution(distribution)
    check_amount(amount)
    numel = {name: math.prod(shape) for name, shape in shapes.items()}
    if distribution == "uniform":
        return {name: round(amount * n) for name, n in numel.items()}
    density = erk_densities(shapes, amount)
    total_keep = sum(numel.values()) - round(amount * sum(numel.values()))
    raw = {name: density[name] * numel[name] for name in shapes}
    keep = {name: min(numel[name], math.floor(raw[name])) for name in shapes}
    left = total_keep - sum(keep.values())
    # largest remainder first; ties by name so the result does not depend on dict order
    for name in sorted(shapes, key=lambda k: (-(raw[k] - math.floor(raw[k])), k)):
        if left <= 0:
            break
        if keep[name] < numel[name]:
            keep[name] += 1
            left -= 1
    return {name: numel[name] - keep[name] for name in shapes}


def random_mask(shape: Sequence[int], n_zeros: int, generator: torch.Generator | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A CPU mask of ``shape`` with exactly ``n_zeros`` zeros at uniformly random places,
    drawn from ``generator`` (the same seed gives the same mask on every rank and device)."""
    numel = math.prod(shape)
    if not 0 <= n_zeros <= numel:
        raise ConfigError(f"cannot zero {n_zeros} of {numel} entries")
    scores = torch.rand(numel, generator=generator, dtype=torch.float32)
    mask = torch.ones(numel, dtype=dtype)
    if n_zeros:
        mask[torch.topk(scores, k=n_zeros, largest=False).indices] = 0
    return mask.view(tuple(shape))


def _flat01(mask: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    if like is not None:
        check_mask(mask, like, "the weight")
    return (mask.detach().reshape(-1) != 0).to(float_dtype(mask)).clone()


def drop(mask: torch.Tensor, weight: torch.Tensor, n: int) -> torch.Tensor:
    """``mask`` with its ``n`` active entries of smallest ``|weight|`` turned off."""
    new = _flat01(mask, weight)
    if n <= 0:
        return new.view(mask.shape)
    alive = new.nonzero().squeeze(1)
    if n > alive.numel():
        raise ConfigError(f"cannot drop {n} connections: only {alive.numel()} are active")
    w = weight.detach().reshape(-1).to(new.device).abs()
    idx = alive[torch.topk(w[alive], k=n, largest=False).indices]
    new[idx] = 0
    return new.view(mask.shape)


def grow(mask: torch.Tensor, scores: torch.Tensor, n: int) -> torch.Tensor:
    """``mask`` with its ``n`` inactive entries of largest ``scores`` turned on."""
    new = _flat01(mask, scores)
    if n <= 0:
        return new.view(mask.shape)
    dead = (new == 0).nonzero().squeeze(1)
    if n > dead.numel():
        raise ConfigError(f"cannot grow {n} connections: only {dead.numel()} are inactive")
    s = scores.detach().reshape(-1).to(new.device)
    idx = dead[torch.topk(s[dead], k=n, largest=True).indices]
    new[idx] = 1
    return new.view(mask.shape)


def set_update(mask: torch.Tensor, weight: torch.Tensor, n: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """SET: drop the ``n`` smallest-magnitude active entries, regrow ``n`` inactive ones at random.

    The random scores are drawn on the CPU from ``generator`` for every entry (so the number of
    draws, and the generator's next state, does not depend on the mask).
    """
    dropped = drop(mask, weight, n)
    scores = torch.rand(mask.numel(), generator=generator, dtype=torch.float32).view(mask.shape)
    return grow(dropped, scores.to(dropped.device), n)


def rigl_update(mask: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor, n: int) -> torch.Tensor:
    """RigL: drop the ``n`` smallest-magnitude active entries, regrow the ``n`` inactive ones with
    the largest ``|grad|`` (the dense gradient: masked entries have one too)."""
    check_mask(grad, weight, "the weight's gradient")
    return grow(drop(mask, weight, n), grad.detach().abs(), n)
