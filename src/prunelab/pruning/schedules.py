"""Pruning schedules: pure functions from a pruning-step index to a target sparsity, and plans.

A *target* is the fraction of prunable weights that must be zero after the step, counted in
the method's scope (per tensor for layer-wise methods, over all targeted tensors for global
ones); the callback prunes only the increment from the current masks to the target, so the
final sparsity is the last target exactly. This is not ``torch.nn.utils.prune``'s meaning of
``amount``, which applies each call to the weights that remain (three calls of 0.2 give 48.8 %,
not 60 %); README "Concepts" states the user-facing rule. Targets are rounded to 10 decimals
so that, e.g., ``0.1 + 8 * 0.05`` is exactly ``0.5``.

Epoch ``-1`` (:data:`AT_INIT`) means *before training*: the callback runs such a step at
``on_train_start``, after any checkpoint restore and before the first optimizer step, and never
again on resume. ``pruning=at_init`` is one such step to ``amount``.

A :class:`PruneStep` ``(epoch, target)`` means: at the END of 0-based epoch ``epoch``, prune to
``target``. Step ``k`` of a generated plan happens at epoch ``start_epoch + k * every``; the
epochs after the last step are fine-tuning.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from prunelab.bounds import MAX_EPOCHS, MAX_PLAN_STEPS
from prunelab.errors import ConfigError

__all__ = [
    "AT_INIT",
    "DYNAMIC_KINDS",
    "KINDS",
    "PruneStep",
    "agp",
    "build_plan",
    "explicit",
    "geometric",
    "geometric_n_steps",
    "iterative",
    "iterative_n_steps",
    "one_shot",
    "plan_keys",
    "validate_plan",
]

KINDS: tuple[str, ...] = (
    "none",
    "at_init",
    "one_shot",
    "iterative",
    "geometric",
    "agp",
    "explicit",
    "lottery",
    "set",
    "rigl",
)
#: schedules without a plan: sparse from the first step, masks rewired while training
DYNAMIC_KINDS: tuple[str, ...] = ("set", "rigl")

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
        raise ConfigError(f"pruning {name} must be a fraction in {rng}, got {value!r}")
    return float(value)


def _positive_int(name: str, value: object, minimum: int = 1, maximum: int = MAX_EPOCHS) -> int:
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or not minimum <= value <= maximum):
        raise ConfigError(f"{name}={value!r} must be an integer in [{minimum}, {maximum}]")
    return int(value)


def _count(name: str, value: object) -> int:
    """A number of pruning steps, at most :data:`~prunelab.bounds.MAX_PLAN_STEPS`."""
    return _positive_int(name, value, 1, MAX_PLAN_STEPS)


def _too_many(what: str, steps: float) -> None:
    """Refuse a plan of more than MAX_PLAN_STEPS steps before any list of them is built."""
    if steps > MAX_PLAN_STEPS:
        raise ConfigError(f"pruning {what} needs about {steps:.3g} steps, more than the "
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
        raise ConfigError(f"pruning step_size must be > 0, got {step_size!r}")
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


def _parse_steps(steps: object) -> list[tuple[int, float]]:
    bad = ConfigError(
        f"explicit pruning steps must be a list of [epoch, target] pairs, got {steps!r}"
    )
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
            raise ConfigError(
                f"explicit pruning step must be an [epoch, target] pair, got {item!r}"
            ) from None
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < AT_INIT:
            raise ConfigError(
                f"explicit pruning step epoch must be an integer >= 0, or -1 (before training), "
                f"got {epoch!r}"
            )
        if isinstance(target, bool) or not isinstance(target, numbers.Real):
            raise ConfigError(f"explicit pruning step target must be a number, got {target!r}")
        pairs.append((int(epoch), float(target)))
    return pairs


def explicit(step: int, *, steps: Sequence[Sequence[float]]) -> float:
    """Target of the ``step``-th ``(epoch, target)`` pair, in the order given."""
    step = _check_step(step)
    pairs = _parse_steps(steps)
    if step >= len(pairs):
        raise ConfigError(
            f"explicit pruning step {step} is out of range: the schedule has {len(pairs)} steps"
        )
    return _r(pairs[step][1])


# --------------------------------------------------------------------------------------------
# plans
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneStep:
    """Prune to ``target`` at the end of 0-based epoch ``epoch``."""

    epoch: int
    target: float


def _need(kind: str, name: str, value: object) -> object:
    if value is None:
        raise ConfigError(f"pruning schedule {kind!r} needs {name}, got None")
    return value


def _initial(kind: str, initial: object, amount: float) -> float:
    init = _fraction("initial", initial)
    if init > amount:
        raise ConfigError(
            f"pruning schedule {kind!r} has initial={initial!r} above its final amount={amount!r}"
        )
    return init


def _iterative_targets(
    kind: str,
    amount: float,
    initial: float | None,
    step_size: float | None,
    n_steps: int | None,
) -> list[float]:
    if step_size is not None:
        step_size = _fraction("step_size", step_size, lo_open=True)
        init = min(float(step_size), amount) if initial is None else _initial(kind, initial, amount)
        count = iterative_n_steps(initial=init, final=amount, step_size=step_size)
        return [iterative(k, initial=init, final=amount, step_size=step_size) for k in range(count)]
    if n_steps is None:
        raise ConfigError(f"pruning schedule {kind!r} needs step_size or n_steps, got neither")
    count = _count("n_steps", n_steps)
    init = amount / count if initial is None else _initial(kind, initial, amount)
    if count == 1:
        return [_r(amount)]
    return [_r(init + k * (amount - init) / (count - 1)) for k in range(count)]


def build_plan(
    kind: str,
    *,
    amount: float | None = None,
    start_epoch: int = 0,
    every: int = 1,
    initial: float | None = None,
    step_size: float | None = None,
    n_steps: int | None = None,
    rate: float | None = None,
    steps: list | None = None,
) -> list[PruneStep]:
    """The list of pruning steps for a schedule ``kind`` (see :data:`KINDS`).

    * ``none``: no step.  ``one_shot``: one step to ``amount`` at ``start_epoch``.
    * ``at_init``: one step to ``amount`` before training (epoch :data:`AT_INIT`);
      ``start_epoch``/``every`` are ignored.
    * ``iterative``: ``initial`` (default ``step_size``) → ``amount`` by ``step_size``; without
      ``step_size``, ``n_steps`` evenly spaced targets from ``initial`` (default
      ``amount / n_steps``) to ``amount``.
    * ``geometric``: prune ``rate`` of the remaining weights each step until ``amount``.
    * ``agp``: ``n_steps`` cubic (Zhu & Gupta) targets from ``initial`` (default 0) to ``amount``.
    * ``explicit``: ``steps = [[epoch, target], ...]`` as given; ``start_epoch``/``every`` and
      ``amount`` are ignored.
    * ``lottery``: the targets of ``geometric`` if ``rate`` is given, else of ``iterative``
      (the rewinding is the callback's job).
    * ``set``, ``rigl``: no step (an empty plan): dynamic sparse training holds ``amount`` from
      the first step on (the callback's ``dynamic`` and ``dynamic_amount`` arguments).

    Step ``k`` is at the end of epoch ``start_epoch + k * every``. The plan is checked with
    :func:`validate_plan` (without ``max_epochs``). Each keyword argument is also the config
    key ``pruning.<name>`` (``kind`` is ``pruning.schedule``), generated from this signature.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown pruning schedule {kind!r}; valid schedules: {', '.join(KINDS)}")
    if kind == "none":
        return []
    if kind == "explicit":
        plan = [PruneStep(e, _r(t)) for e, t in _parse_steps(_need(kind, "steps", steps))]
        if not plan:
            raise ConfigError("explicit pruning schedule needs at least one [epoch, target] step")
        validate_plan(plan, None)
        return plan

    start_epoch = _positive_int("start_epoch", start_epoch, minimum=0)
    every = _positive_int("every", every)
    amount = _fraction("amount", _need(kind, "amount", amount))
    if kind == "at_init":
        return [PruneStep(AT_INIT, _r(amount))]

    if kind in DYNAMIC_KINDS:  # the callback uses (and checks) the amount: dynamic_amount
        return []
    if kind == "one_shot":
        targets = [_r(amount)]
    elif kind == "geometric" or (kind == "lottery" and rate is not None):
        rate = _fraction("rate", _need(kind, "rate", rate), lo_open=True)
        targets = [
            geometric(k, rate=rate, final=amount)
            for k in range(geometric_n_steps(rate=rate, final=amount))
        ]
    elif kind == "agp":
        count = _count("n_steps", _need(kind, "n_steps", n_steps))
        init = 0.0 if initial is None else _initial(kind, initial, amount)
        targets = [agp(k, initial=init, final=amount, n_steps=count) for k in range(count)]
    else:  # iterative, lottery without rate
        targets = _iterative_targets(kind, amount, initial, step_size, n_steps)

    plan = [PruneStep(start_epoch + k * every, t) for k, t in enumerate(targets)]
    validate_plan(plan, None)
    return plan


def plan_keys(kind: str, *, step_size: object = None, rate: object = None) -> tuple[str, ...]:
    """The :func:`build_plan` arguments that schedule ``kind`` reads (for ``iterative`` and
    ``lottery``, given their ``step_size`` and ``rate``); any other one has no effect on it."""
    if kind == "none":
        return ()
    if kind == "explicit":  # its amount must equal the last step's target (the command line's rule)
        return ("steps", "amount")
    if kind == "at_init" or kind in DYNAMIC_KINDS:
        return ("amount",)
    if kind == "one_shot":
        return ("amount", "start_epoch")
    spaced = ("amount", "start_epoch", "every")
    if kind == "geometric" or (kind == "lottery" and rate is not None):
        return (*spaced, "rate")
    if kind == "agp":
        return (*spaced, "initial", "n_steps")
    return (*spaced, "initial", "step_size" if step_size is not None else "n_steps")


def validate_plan(plan: Sequence[PruneStep], max_epochs: int | None) -> None:
    """Raise ConfigError unless targets are in [0, 1) and non-decreasing, epochs are
    non-negative (or -1, before training) and strictly increasing, and the last step fits in ``max_epochs``
    (``None`` or ``-1``: no limit)."""
    prev: PruneStep | None = None
    for step in plan:
        _fraction(f"target at epoch {step.epoch}", step.target)
        if step.epoch < AT_INIT:
            raise ConfigError(f"pruning step epoch must be >= 0, or -1 (before training), "
                              f"got {step.epoch}")
        if prev is not None:
            if step.epoch <= prev.epoch:
                raise ConfigError(
                    f"pruning step epochs must be strictly increasing, got {step.epoch} "
                    f"after {prev.epoch}"
                )
            if step.target < prev.target:
                raise ConfigError(
                    f"pruning targets must not decrease (weights are never regrown), got "
                    f"{step.target} at epoch {step.epoch} after {prev.target} at epoch {prev.epoch}"
                )
        prev = step
    if (
        prev is not None
        and max_epochs is not None
        and max_epochs != -1
        and prev.epoch >= max_epochs
    ):
        need = prev.epoch + 1
        raise ConfigError(
            f"pruning schedule ends at epoch {prev.epoch} but trainer.max_epochs={max_epochs}: "
            f"needs at least {need} ({need + 1} with one fine-tuning epoch)"
        )
