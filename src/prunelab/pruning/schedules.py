"""Pruning schedules: each one a small frozen dataclass with only its own keys, and pure step → target functions.

A *target* is the fraction of prunable weights that must be zero after the step, counted in
the method's scope (per tensor for layer-wise methods, over all targeted tensors for global
ones); the callback prunes only the increment from the current masks to the target, so the
final sparsity is the last target exactly. This is not ``torch.nn.utils.prune``'s meaning of
``amount``, which applies each call to the weights that remain (three calls of 0.2 give 48.8 %,
not 60 %); README "Concepts" states the user-facing rule. Targets are rounded to 10 decimals
so that, e.g., ``0.1 + 8 * 0.05`` is exactly ``0.5``.

Epoch ``-1`` (:data:`AT_INIT`) means *before training*: the callback runs such a step at
``on_train_start``, after any checkpoint restore and before the first optimizer step, and never
again on resume. :class:`AtInit` is one such step to ``amount``.

A :class:`PruneStep` ``(epoch, target)`` means: at the END of 0-based epoch ``epoch``, prune to
``target``. Step ``k`` of a generated plan happens at epoch ``start_epoch + k * every``; the
epochs after the last step are fine-tuning.

Each schedule class is what a ``conf/pruning/<name>.yaml`` names as ``pruning.schedule``'s
``_target_``; its fields are that node's keys (a key it does not declare is refused when the
node is built), and its ``__post_init__`` checks each value once. The dynamic schedules (SET,
RigL), which have no plan, are in :mod:`prunelab.pruning.dynamic`. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from prunelab.bounds import MAX_EPOCHS, MAX_PLAN_STEPS
from prunelab.errors import ConfigError, unknown_key

AT_INIT = -1  # a step's epoch meaning "before the first training batch"
_DECIMALS = 10


def _r(x: float) -> float:
    return round(float(x), _DECIMALS)


def _check_step(step: object) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ConfigError(f"pruning step must be a non-negative integer, got {step!r}")
    return int(step)


def _fraction(name: str, value: object, *, lo_open: bool = False) -> float:
    """``value`` as a float in [0, 1) (or (0, 1) when ``lo_open``), else ConfigError."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and not math.isnan(float(value))
        and (float(value) > 0.0 if lo_open else float(value) >= 0.0)
        and float(value) < 1.0
    )
    if not ok:
        rng = "(0, 1)" if lo_open else "[0, 1)"
        raise ConfigError(f"{name}={value!r} must be a fraction in {rng}")
    return float(value)


def _int(name: str, value: object, minimum: int = 1, maximum: int = MAX_EPOCHS) -> int:
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or not minimum <= value <= maximum):
        raise ConfigError(f"{name}={value!r} must be an integer in [{minimum}, {maximum}]")
    return int(value)


def _count(name: str, value: object) -> int:
    """A number of pruning steps, at most :data:`~prunelab.bounds.MAX_PLAN_STEPS`."""
    return _int(name, value, 1, MAX_PLAN_STEPS)


def _too_many(what: str, steps: float) -> None:
    """Refuse a plan of more than MAX_PLAN_STEPS steps before any list of them is built."""
    if steps > MAX_PLAN_STEPS:
        raise ConfigError(f"{what} needs about {steps:.3g} steps, more than the "
                          f"{MAX_PLAN_STEPS} a plan may have (one per epoch at most)")


# --------------------------------------------------------------------------------------------
# step -> target
# --------------------------------------------------------------------------------------------


def one_shot(step: int, *, amount: float) -> float:
    """The single target ``amount`` (the same at any step)."""
    _check_step(step)
    return _r(amount)


def iterative(step: int, *, initial: float, final: float, step_size: float) -> float:
    """Linear: ``min(final, initial + step * step_size)``, e.g. 0.10, 0.15, ..., 0.50."""
    step = _check_step(step)
    return min(_r(final), _r(initial + step * step_size))


def iterative_n_steps(*, initial: float, final: float, step_size: float) -> int:
    """Number of :func:`iterative` steps until ``final`` is reached (0.1 → 0.5 by 0.05: 9)."""
    if not step_size > 0:
        raise ConfigError(f"step_size={step_size!r} must be > 0")
    if final <= initial:
        return 1
    _too_many(f"step_size={step_size!r} from {initial!r} to {final!r}", (final - initial) / step_size)
    k = max(0, math.ceil((final - initial) / step_size - 1e-9))
    while k > 0 and iterative(k - 1, initial=initial, final=final, step_size=step_size) >= _r(
        final
    ):
        k -= 1
    while iterative(k, initial=initial, final=final, step_size=step_size) < _r(final):
        k += 1
    return k + 1


def geometric(step: int, *, rate: float, final: float) -> float:
    """Prune ``rate`` of the remaining weights each step: ``min(final, 1 - (1 - rate)^(step+1))``."""
    step = _check_step(step)
    return min(_r(final), _r(1.0 - (1.0 - rate) ** (step + 1)))


def geometric_n_steps(*, rate: float, final: float) -> int:
    """Smallest number of :func:`geometric` steps whose last target is exactly ``final``."""
    _fraction("rate", rate, lo_open=True)
    if final <= 0:
        return 1
    _too_many(f"rate={rate!r} to reach {final!r}", math.log(1.0 - final) / math.log1p(-rate))
    k = max(0, math.ceil(math.log(1.0 - final) / math.log(1.0 - rate)) - 2)
    while geometric(k, rate=rate, final=final) < _r(final):
        k += 1
        _too_many(f"rate={rate!r} to reach {final!r}", k)
    return k + 1


def agp(step: int, *, initial: float, final: float, n_steps: int) -> float:
    """Zhu & Gupta 2017: ``s_t = s_f + (s_i - s_f)(1 - t/(n_steps - 1))^3`` for t = 0..n_steps-1.

    ``s_0 = initial``, ``s_{n_steps-1} = final`` exactly, and ``final`` after the last step.
    """
    step = _check_step(step)
    n_steps = _count("n_steps", n_steps)
    if n_steps == 1 or step >= n_steps - 1:
        return _r(final)
    return _r(final + (initial - final) * (1.0 - step / (n_steps - 1)) ** 3)


def _parse_steps(steps: object) -> tuple[tuple[int, float], ...]:
    bad = ConfigError(f"steps={steps!r} must be a list of [epoch, target] pairs")
    if steps is None or isinstance(steps, str | bytes):
        raise bad
    try:
        steps = list(steps)  # type: ignore[call-overload]  # also an omegaconf ListConfig
    except TypeError:
        raise bad from None
    _too_many("steps", len(steps))
    pairs: list[tuple[int, float]] = []
    for item in steps:
        try:
            epoch, target = list(item)
        except (TypeError, ValueError):
            raise ConfigError(f"steps: each step must be an [epoch, target] pair, got {item!r}") from None
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < AT_INIT:
            raise ConfigError(f"steps: a step's epoch must be an integer >= 0, or -1 (before "
                              f"training), got {epoch!r}")
        if isinstance(target, bool) or not isinstance(target, numbers.Real):
            raise ConfigError(f"steps: a step's target must be a number, got {target!r}")
        pairs.append((int(epoch), float(target)))
    return tuple(pairs)


def explicit(step: int, *, steps: Sequence[Sequence[float]]) -> float:
    """Target of the ``step``-th ``(epoch, target)`` pair, in the order given."""
    step = _check_step(step)
    pairs = _parse_steps(steps)
    if step >= len(pairs):
        raise ConfigError(f"explicit pruning step {step} is out of range: the schedule has "
                          f"{len(pairs)} steps")
    return _r(pairs[step][1])


# --------------------------------------------------------------------------------------------
# plans
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneStep:
    """Prune to ``target`` at the end of 0-based epoch ``epoch``."""

    epoch: int
    target: float


def validate_plan(plan: Sequence[PruneStep], max_epochs: int | None = None) -> None:
    """Raise ConfigError unless targets are in [0, 1) and non-decreasing, epochs are
    non-negative (or -1, before training) and strictly increasing, and the last step fits in
    ``max_epochs`` (``None`` or ``-1``: no limit; see :func:`check_fits`)."""
    prev: PruneStep | None = None
    for step in plan:
        _fraction(f"target at epoch {step.epoch}", step.target)
        if step.epoch < AT_INIT:
            raise ConfigError(f"pruning step epoch must be >= 0, or -1 (before training), "
                              f"got {step.epoch}")
        if prev is not None:
            if step.epoch <= prev.epoch:
                raise ConfigError(f"pruning step epochs must be strictly increasing, got "
                                  f"{step.epoch} after {prev.epoch}")
            if step.target < prev.target:
                raise ConfigError(
                    f"pruning targets must not decrease (weights are never regrown), got "
                    f"{step.target} at epoch {step.epoch} after {prev.target} at epoch {prev.epoch}"
                )
        prev = step
    check_fits(plan, max_epochs)


def check_fits(plan: Sequence[PruneStep], max_epochs: int | None) -> None:
    """The plan's last step lies within ``max_epochs`` (``None`` or ``-1``: no limit)."""
    if not plan or max_epochs is None or max_epochs == -1 or plan[-1].epoch < max_epochs:
        return
    last = plan[-1].epoch
    raise ConfigError(f"pruning schedule ends at epoch {last} but trainer.max_epochs={max_epochs}: "
                      f"needs at least {last + 1} ({last + 2} with one fine-tuning epoch)")


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """A schedule: its keys are its fields, ``plan()`` its steps (none for a dense run).

    Subclasses set ``name`` (the run's ``schedule`` in results.json) and check their values in
    ``__post_init__``; :meth:`plan` must be a pure function of the fields.
    """

    name: ClassVar[str] = ""

    def plan(self) -> list[PruneStep]:
        return []

    def target(self, step: int) -> float:
        """Step ``step``'s target sparsity."""
        plan = self.plan()
        if _check_step(step) >= len(plan):
            raise ConfigError(f"{self.name} has {len(plan)} steps, no step {step}")
        return plan[step].target

    @property
    def final_target(self) -> float:
        """The sparsity the run ends at."""
        plan = self.plan()
        return plan[-1].target if plan else 0.0

    @property
    def prunes(self) -> bool:
        """False for a dense run (no step and nothing sparse)."""
        return bool(self.plan())


@dataclass(frozen=True, kw_only=True)
class _Spaced(Schedule):
    """A generated plan: ``amount`` is its last target; step k at ``start_epoch + k * every``."""

    amount: float
    start_epoch: int = 0
    every: int = 1

    def __post_init__(self) -> None:
        _fraction("amount", self.amount)
        _int("start_epoch", self.start_epoch, minimum=0)
        _int("every", self.every)

    def targets(self) -> list[float]:
        raise NotImplementedError

    def plan(self) -> list[PruneStep]:
        return [PruneStep(self.start_epoch + k * self.every, t) for k, t in enumerate(self.targets())]

    def _initial(self, initial: object) -> float:
        value = _fraction("initial", initial)
        if value > self.amount:
            raise ConfigError(f"initial={initial!r} is above the final amount={self.amount!r}")
        return value


@dataclass(frozen=True, kw_only=True)
class Dense(Schedule):
    """No pruning step: dense training, the baseline every pruned run is compared with."""

    name: ClassVar[str] = "none"


@dataclass(frozen=True, kw_only=True)
class AtInit(Schedule):
    """One step to ``amount`` before the first training batch (SNIP, GraSP, SynFlow)."""

    name: ClassVar[str] = "at_init"
    amount: float

    def __post_init__(self) -> None:
        _fraction("amount", self.amount)

    def plan(self) -> list[PruneStep]:
        return [PruneStep(AT_INIT, _r(self.amount))]


@dataclass(frozen=True, kw_only=True)
class OneShot(Schedule):
    """One step to ``amount`` at the end of epoch ``start_epoch``."""

    name: ClassVar[str] = "one_shot"
    amount: float
    start_epoch: int = 0

    def __post_init__(self) -> None:
        _fraction("amount", self.amount)
        _int("start_epoch", self.start_epoch, minimum=0)

    def plan(self) -> list[PruneStep]:
        return [PruneStep(self.start_epoch, _r(self.amount))]


@dataclass(frozen=True, kw_only=True)
class Iterative(_Spaced):
    """Linear targets: ``initial`` (default ``step_size``) → ``amount`` by ``step_size``; without
    ``step_size``, ``n_steps`` evenly spaced targets from ``initial`` (default
    ``amount / n_steps``) to ``amount``."""

    name: ClassVar[str] = "iterative"
    initial: float | None = None
    step_size: float | None = None
    n_steps: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.step_size is not None:
            _fraction("step_size", self.step_size, lo_open=True)
            if self.n_steps is not None:
                raise ConfigError(f"n_steps={self.n_steps!r} has no effect while "
                                  f"step_size={self.step_size!r} is set (step_size=null: n_steps "
                                  "evenly spaced steps)")
        elif self.n_steps is None:
            raise ConfigError(f"{self.name} needs step_size or n_steps, got neither")
        else:
            _count("n_steps", self.n_steps)
        if self.initial is not None:
            self._initial(self.initial)

    def targets(self) -> list[float]:
        amount = float(self.amount)
        if self.step_size is not None:
            init = min(float(self.step_size), amount) if self.initial is None else float(self.initial)
            count = iterative_n_steps(initial=init, final=amount, step_size=self.step_size)
            return [iterative(k, initial=init, final=amount, step_size=self.step_size)
                    for k in range(count)]
        count = int(self.n_steps)  # type: ignore[arg-type]
        init = amount / count if self.initial is None else float(self.initial)
        if count == 1:
            return [_r(amount)]
        return [_r(init + k * (amount - init) / (count - 1)) for k in range(count)]


@dataclass(frozen=True, kw_only=True)
class Geometric(_Spaced):
    """Prune ``rate`` of the remaining weights each step until ``amount`` (0.2, 0.36, 0.488, …)."""

    name: ClassVar[str] = "geometric"
    rate: float

    def __post_init__(self) -> None:
        super().__post_init__()
        _fraction("rate", self.rate, lo_open=True)

    def targets(self) -> list[float]:
        count = geometric_n_steps(rate=self.rate, final=self.amount)
        return [geometric(k, rate=self.rate, final=self.amount) for k in range(count)]


@dataclass(frozen=True, kw_only=True)
class AGP(_Spaced):
    """Automated gradual pruning (Zhu & Gupta 2017): ``n_steps`` cubic targets from ``initial``
    to ``amount``, fast at first."""

    name: ClassVar[str] = "agp"
    n_steps: int
    initial: float | None = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _count("n_steps", self.n_steps)
        if self.initial is None:  # null: the default
            object.__setattr__(self, "initial", 0.0)
        self._initial(self.initial)

    def targets(self) -> list[float]:
        return [agp(k, initial=self.initial, final=self.amount, n_steps=self.n_steps)
                for k in range(self.n_steps)]


@dataclass(frozen=True, kw_only=True)
class Lottery(_Spaced):
    """Lottery tickets' targets: those of :class:`Geometric` when ``rate`` is given, else of
    :class:`Iterative` (the rewinding is the callback's ``rewind``)."""

    name: ClassVar[str] = "lottery"
    rate: float | None = None
    initial: float | None = None
    step_size: float | None = None
    n_steps: int | None = None

    def _delegate(self) -> _Spaced:
        common = {"amount": self.amount, "start_epoch": self.start_epoch, "every": self.every}
        if self.rate is not None:
            return Geometric(rate=self.rate, **common)
        return Iterative(initial=self.initial, step_size=self.step_size, n_steps=self.n_steps,
                         **common)

    def __post_init__(self) -> None:
        if self.rate is not None:
            ignored = [f"{k}={v!r}" for k, v in (("initial", self.initial),
                       ("step_size", self.step_size), ("n_steps", self.n_steps)) if v is not None]
            if ignored:
                raise ConfigError(f"{ignored[0]} has no effect while rate={self.rate!r} is set "
                                  "(rate=null: the iterative targets)")
        self._delegate()  # its checks

    def targets(self) -> list[float]:
        return self._delegate().targets()


@dataclass(frozen=True, kw_only=True)
class Explicit(Schedule):
    """Your own ``steps = [[epoch, target], ...]``: epochs increasing, targets not decreasing."""

    name: ClassVar[str] = "explicit"
    steps: Sequence[Sequence[float]]

    def __post_init__(self) -> None:
        pairs = _parse_steps(self.steps)
        if not pairs:
            raise ConfigError("steps: the explicit schedule needs at least one [epoch, target] step")
        object.__setattr__(self, "steps", pairs)
        validate_plan(self.plan(), None)

    def plan(self) -> list[PruneStep]:
        return [PruneStep(e, _r(t)) for e, t in self.steps]  # type: ignore[misc]


#: the built-in schedules by name (``pruning=<name>``)
BUILT_IN: dict[str, type[Schedule]] = {
    c.name: c for c in (Dense, AtInit, OneShot, Iterative, Geometric, AGP, Explicit, Lottery)
}
KINDS: tuple[str, ...] = tuple(BUILT_IN)


def keys_of(cls: type) -> tuple[str, ...]:
    """A schedule's (or any config dataclass's) keys: its fields, in order."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


def make(kind: str, **keys: Any) -> Schedule:
    """The built-in schedule ``kind`` with ``keys``; a key it does not take is one line."""
    if kind not in BUILT_IN:
        raise ConfigError(f"unknown pruning schedule {kind!r}; valid schedules: {', '.join(KINDS)}")
    cls = BUILT_IN[kind]
    valid = keys_of(cls)
    for key in keys:
        if key not in valid:
            raise unknown_key(key, kind, valid)
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in keys
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{kind} needs {', '.join(missing)}")
    return cls(**keys)


def build_plan(kind: str, **keys: Any) -> list[PruneStep]:
    """The plan of the built-in schedule ``kind`` (see :data:`BUILT_IN`) with its ``keys``:
    ``build_plan("iterative", amount=0.5, initial=0.1, step_size=0.05)``."""
    return make(kind, **keys).plan()


def from_config(schedule: Schedule | Sequence[PruneStep | tuple[int, float]] | Mapping) -> Schedule:
    """A schedule object as given, or a plain plan of ``(epoch, target)`` pairs as :class:`Explicit`."""
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, Mapping):
        raise ConfigError(f"schedule must be a Schedule or a list of (epoch, target) steps, got "
                          f"a mapping {dict(schedule)!r:.80} (a config node needs a _target_)")
    steps = [(s.epoch, s.target) if isinstance(s, PruneStep) else s for s in schedule]
    return Explicit(steps=steps) if steps else Dense()
