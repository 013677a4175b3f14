"""The criterion registry: name → :class:`Criterion`, registered once, looked up by name.

A criterion is a *score function* plus what the callback must know about it. Selecting the
mask from the scores (exact target counts, monotone masks, per layer or one global threshold)
is shared by every criterion and lives in :mod:`prunelab.pruning.criteria.select`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from prunelab.errors import ConfigError

SCOPES: tuple[str, ...] = ("layer", "global")


@dataclass(frozen=True)
class ScoreContext:
    """What a score function may use besides the weight.

    ``mask``: the current 0/1 mask (``None``: dense); ``stats``: this tensor's gradient
    statistics (see :func:`~prunelab.pruning.criteria.saliency.accumulate_grad_stats`);
    ``generator``: the run's seeded CPU generator (random criteria draw on the CPU so every
    DDP rank and device gets the same scores); ``dim``/``norm``: slice axis and norm order of
    structured criteria; ``name``: the parameter's name, for messages.
    """

    name: str = "the weight"
    mask: torch.Tensor | None = None
    stats: Mapping[str, Any] | None = None
    generator: torch.Generator | None = None
    dim: int = 0
    norm: float = 2.0


ScoreFn = Callable[[torch.Tensor, ScoreContext], torch.Tensor]


@dataclass(frozen=True)
class Criterion:
    """One pruning criterion.

    ``score(weight, ctx)`` returns importance scores (higher = kept longer): one per entry,
    in the weight's shape, for unstructured criteria; one per slice along ``ctx.dim``
    (shape ``[weight.shape[dim]]``) for structured ones. ``scopes[0]`` is the default scope.
    ``needs_grads``: the callback gathers gradient statistics before each step.
    ``random``: the scores come from the run's generator (reproducible from ``seed``).
    ``probe``: the callback calls ``probe(Probe)`` right before each step and passes what it
    returns (target name → statistics) as ``ctx.stats``: criteria that need the model itself
    (SNIP, GraSP, SynFlow; see :mod:`prunelab.pruning.criteria.at_init`).
    ``iterations``: a step is split into this many sub-steps by default (each re-probes at the
    current masks, densities falling geometrically), as SynFlow needs.
    """

    name: str
    score: ScoreFn
    structured: bool = False
    needs_grads: bool = False
    random: bool = False
    scopes: tuple[str, ...] = ("layer",)
    probe: Callable[[Any], dict[str, dict[str, Any]]] | None = None
    iterations: int = 1

    def __post_init__(self) -> None:
        bad = [s for s in self.scopes if s not in SCOPES]
        if not self.scopes or bad:
            raise ValueError(f"criterion {self.name!r}: scopes {self.scopes} must be a non-empty "
                             f"subset of {SCOPES}")
        if self.structured and "global" in self.scopes:
            raise ValueError(f"criterion {self.name!r}: structured criteria are layer-wise")
        if self.probe is not None and self.needs_grads:
            raise ValueError(f"criterion {self.name!r}: probe and needs_grads exclude each other")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 1:
            raise ValueError(f"criterion {self.name!r}: iterations must be an int >= 1")

    @property
    def default_scope(self) -> str:
        return self.scopes[0]


CRITERIA: dict[str, Criterion] = {}


def register(criterion: Criterion | None = None, /, *, name: str | None = None,
             structured: bool = False, needs_grads: bool = False, random: bool = False,
             scopes: tuple[str, ...] = ("layer",), replace: bool = False) -> Any:
    """Add a criterion to the registry; usable as a call or as a decorator on a score function.

    >>> @register(name="abs_cubed", scopes=("layer", "global"))
    ... def abs_cubed(weight, ctx):
    ...     return weight.detach().abs() ** 3

    Registering a name twice is an error unless ``replace=True``.
    """

    def add(c: Criterion) -> Criterion:
        if c.name in CRITERIA and not replace and CRITERIA[c.name] is not c:
            raise ValueError(f"pruning criterion {c.name!r} is already registered")
        CRITERIA[c.name] = c
        return c

    if criterion is not None:
        return add(criterion)

    def decorator(fn: ScoreFn) -> ScoreFn:
        add(Criterion(name or fn.__name__, fn, structured, needs_grads, random, tuple(scopes)))
        return fn

    return decorator


def get(name: str) -> Criterion:
    """The criterion called ``name``; an unknown name is one line listing the valid ones."""
    try:
        return CRITERIA[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), CRITERIA, n=len(CRITERIA), cutoff=0.0)
        raise ConfigError(f"unknown pruning method {name!r}; valid: {', '.join(close)}") from None


