"""Criterion classes: a registered score function and its knobs (Torch-Pruning's Importance pattern).

The registry (:mod:`~prunelab.pruning.criteria.registry`) keeps the pure score functions; a
class here wraps one of them, by name, with the knobs that criterion takes, and checks them
once in ``__post_init__``. ``conf/pruning/method/<name>.yaml`` names its class as ``_target_``,
so its keys are the class's fields: a key a criterion does not take (``grad_batches`` for
magnitude pruning) is refused when the node is built. The one selection rule (exact counts,
monotone masks, per layer or one global threshold) is :func:`compute_masks` for all of them.

Your own criterion with a knob of its own is one subclass (see ``examples/own_criterion.py``)::

    @register(name="fan_in_magnitude", scopes=("global", "layer"))
    def fan_in_magnitude(weight, ctx, alpha=0.0): ...

    @dataclass(frozen=True, kw_only=True)
    class FanInMagnitude(Method):
        criterion = "fan_in_magnitude"
        alpha: float = 0.0

        def score(self, weight, ctx):
            return fan_in_magnitude(weight, ctx, alpha=self.alpha)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from prunelab import bounds
from prunelab.errors import ConfigError, unknown_key
from prunelab.pruning.criteria.registry import CRITERIA, SCOPES, Criterion, ScoreContext, get
from prunelab.pruning.criteria.select import norm_order


def check_scope(criterion: Criterion, scope: str | None) -> str:
    """The scope to use (``None``: the criterion's default); an unsupported one is refused."""
    scope = criterion.default_scope if scope is None else scope
    if scope not in SCOPES:
        raise ConfigError(f"scope={scope!r} is not a pruning scope; valid scopes: {', '.join(SCOPES)}")
    if scope not in criterion.scopes:
        hint = "; use l1_unstructured for per-layer magnitude" if criterion.name == "global_magnitude" else ""
        raise ConfigError(f"scope={scope!r}: pruning method {criterion.name!r} does not support "
                          f"scope {scope!r}; "
                          f"valid scopes: {', '.join(criterion.scopes)}{hint}")
    return scope


def check_round_to(round_to: object, method: str | None = None) -> int | None:
    """``round_to`` as a positive int (or None); ConfigError for a bad value or an unstructured method."""
    if round_to is None:
        return None
    if (isinstance(round_to, bool) or not isinstance(round_to, numbers.Integral)
            or not 1 <= round_to <= bounds.MAX_WIDTH):
        raise ConfigError(f"round_to={round_to!r} must be a positive integer (at most "
                          f"{bounds.MAX_WIDTH}), or None (off)")
    if method is not None and not get(method).structured:
        structured = ", ".join(m for m, c in CRITERIA.items() if c.structured)
        raise ConfigError(f"round_to={round_to!r} applies to structured methods ({structured}), "
                          f"not method={method!r}; drop it or pick a structured method")
    return int(round_to)


_MAX_DIMS = 8  # tensor dimensions a slice axis may count (each target's own at bind)
_MAX_NORM = 10.0  # a larger norm order underflows to 0 for weights below 1: all slices tie


def check_norm(norm: object) -> float:
    """A structured criterion's norm order: a number in [1, 10], inf or 'fro' (2)."""
    try:
        order = norm_order(norm)
    except ConfigError:
        order = math.nan
    if not (order == math.inf or 1.0 <= order <= _MAX_NORM):
        raise ConfigError(f"norm={norm!r} must be a norm order in [1, {_MAX_NORM:g}], inf or 'fro'")
    return order


@dataclass(frozen=True, kw_only=True)
class Method:
    """A configured criterion: ``criterion`` names its registered score function, the fields are
    its knobs. ``scope``: ``"layer"`` or ``"global"`` (``None``: the criterion's default)."""

    criterion: ClassVar[str] = ""
    scope: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scope", check_scope(self.spec, self.scope))

    @property
    def name(self) -> str:
        """The criterion's registered name (results.json's ``method``)."""
        return self.criterion

    @property
    def spec(self) -> Criterion:
        """The registry's entry: the score function and what the callback must know about it."""
        return get(self.criterion)

    @property
    def structured(self) -> bool:
        return self.spec.structured

    @property
    def needs_grads(self) -> bool:
        return self.spec.needs_grads

    # knobs a criterion may lack: the selection and the callback read these defaults
    norm: ClassVar[float] = 2.0
    dim: ClassVar[int] = 0
    round_to: ClassVar[int | None] = None
    grad_batches: ClassVar[int] = 1

    @property
    def steps_per_step(self) -> int:
        """Sub-steps per pruning step (SynFlow's ``iterations``; 1 for most criteria)."""
        return self.spec.iterations

    def score(self, weight: torch.Tensor, ctx: ScoreContext) -> torch.Tensor:
        """The importance of each entry (or slice): the registered function, unless overridden."""
        return self.spec.score(weight, ctx)


@dataclass(frozen=True, kw_only=True)
class L1Unstructured(Method):
    """Zero the smallest |w| in each layer (``scope: global``: one threshold over all layers)."""

    criterion: ClassVar[str] = "l1_unstructured"


@dataclass(frozen=True, kw_only=True)
class GlobalMagnitude(Method):
    """One magnitude threshold over all targeted tensors together."""

    criterion: ClassVar[str] = "global_magnitude"


@dataclass(frozen=True, kw_only=True)
class Lamp(Method):
    """Layer-adaptive magnitude (Lee et al. 2021), one threshold over all layers."""

    criterion: ClassVar[str] = "lamp"


@dataclass(frozen=True, kw_only=True)
class RandomUnstructured(Method):
    """Random entries, drawn from the run's seed (the control every criterion should beat)."""

    criterion: ClassVar[str] = "random_unstructured"


@dataclass(frozen=True, kw_only=True)
class _Structured(Method):
    """Whole slices along ``dim`` (0: output filters/neurons); ``round_to``: keep a multiple of
    this many slices per tensor (None: off)."""

    dim: int = 0  # type: ignore[misc]
    round_to: int | None = None  # type: ignore[misc]

    def __post_init__(self) -> None:
        super().__post_init__()
        # each tensor's own dimensions at bind
        object.__setattr__(self, "dim", bounds.integer("dim", self.dim, -_MAX_DIMS, _MAX_DIMS - 1))
        check_round_to(self.round_to)


@dataclass(frozen=True, kw_only=True)
class LnStructured(_Structured):
    """Whole filters/neurons with the smallest L``n`` norm (torch's LnStructured); ``norm``:
    the norm order ``n``."""

    criterion: ClassVar[str] = "ln_structured"
    norm: float = 2.0  # type: ignore[misc]

    def __post_init__(self) -> None:
        super().__post_init__()
        check_norm(self.norm)


@dataclass(frozen=True, kw_only=True)
class RandomStructured(_Structured):
    """Random whole filters/neurons (the structured control)."""

    criterion: ClassVar[str] = "random_structured"


@dataclass(frozen=True, kw_only=True)
class _FromGradients(Method):
    """Scores from the loss gradient of ``grad_batches`` training batches."""

    grad_batches: int = 32  # type: ignore[misc]

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "grad_batches", bounds.integer(
            "grad_batches", self.grad_batches, 1, bounds.MAX_GRAD_BATCHES))


@dataclass(frozen=True, kw_only=True)
class Taylor(_FromGradients):
    """First-order saliency Σ_b |w ⊙ g_b| over the last ``grad_batches`` batches before a step."""

    criterion: ClassVar[str] = "taylor"


@dataclass(frozen=True, kw_only=True)
class Fisher(_FromGradients):
    """Second-order (OBD / diagonal Fisher) saliency ½ w² Σ_b g_b²."""

    criterion: ClassVar[str] = "fisher"


@dataclass(frozen=True, kw_only=True)
class Snip(_FromGradients):
    """SNIP: |w ⊙ dL/dw| at the current weights over ``grad_batches`` probe batches."""

    criterion: ClassVar[str] = "snip"
    grad_batches: int = 2  # type: ignore[misc]


@dataclass(frozen=True, kw_only=True)
class Grasp(_FromGradients):
    """GraSP: the paper's −w ⊙ Hg over ``grad_batches`` probe batches."""

    criterion: ClassVar[str] = "grasp"
    grad_batches: int = 2  # type: ignore[misc]


@dataclass(frozen=True, kw_only=True)
class SynFlow(Method):
    """SynFlow: data-free |w ⊙ dR/dw|, re-scored over ``iterations`` geometric sub-steps."""

    criterion: ClassVar[str] = "synflow"
    iterations: int | None = None  # None: the criterion's own (100)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.iterations is not None and (isinstance(self.iterations, bool) or not isinstance(
                self.iterations, numbers.Integral) or not 1 <= self.iterations <= bounds.MAX_ITERATIONS):
            raise ConfigError(f"iterations={self.iterations!r} must be an integer >= 1 (at most "
                              f"{bounds.MAX_ITERATIONS}) or None (the method's default)")

    @property
    def steps_per_step(self) -> int:
        return int(self.iterations) if self.iterations is not None else self.spec.iterations


@dataclass(frozen=True, kw_only=True)
class ByName(Method):
    """Any registered criterion by its name (your own ``register``-ed score function), with the
    knobs the built-in ones have; those the criterion cannot use are refused."""

    criterion: str  # type: ignore[misc]
    norm: float = 2.0  # type: ignore[misc]
    dim: int = 0  # type: ignore[misc]
    round_to: int | None = None  # type: ignore[misc]
    grad_batches: int = 32  # type: ignore[misc]

    def __post_init__(self) -> None:
        super().__post_init__()
        spec = self.spec
        check_round_to(self.round_to, self.criterion)
        bounds.integer("grad_batches", self.grad_batches, 1, bounds.MAX_GRAD_BATCHES)
        if not spec.structured and (self.norm != 2.0 or self.dim != 0):
            raise ConfigError(f"norm={self.norm!r} / dim={self.dim!r} apply to structured methods, not "
                              f"method={self.criterion!r}")


#: the built-in criterion classes by registered name
BUILT_IN: dict[str, type[Method]] = {
    c.criterion: c for c in (L1Unstructured, GlobalMagnitude, Lamp, RandomUnstructured,
                             LnStructured, RandomStructured, Taylor, Fisher, Snip, Grasp, SynFlow)
}


def knobs_of(cls: type[Method]) -> tuple[str, ...]:
    """A criterion class's keys (its fields)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


def method(name: str, **knobs: Any) -> Method:
    """The criterion registered as ``name`` with ``knobs`` (``None`` values: the default).

    ``method("taylor", grad_batches=8)`` is ``Taylor(grad_batches=8)``; a name without a class
    of its own (a criterion you registered) is :class:`ByName`. A knob the criterion does not
    take is refused in one line.
    """
    knobs = {k: v for k, v in knobs.items() if v is not None}
    get(name)  # an unknown name: one line with the valid ones
    cls = BUILT_IN.get(name)
    if cls is None:
        return ByName(criterion=name, **knobs)
    valid = knobs_of(cls)
    for key in knobs:
        if key not in valid:
            raise unknown_key(key, name, valid)
    return cls(**knobs)
