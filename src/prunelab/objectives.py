"""What a sweep optimises: the config's ``objectives``, each a numeric key of ``results.json``
and a direction, e.g. ``objectives: [val_acc:max, macs_effective:min]``.

The task function returns a run's values of them (:class:`JobResult`, a list: what Optuna's
sweeper reads), the sweeper derives its study's directions from them
(:mod:`prunelab.study`), and the report draws the front they span (:mod:`prunelab.report.pareto`);
all three parse the key here, with :func:`parse`. The default, ``[val_acc:max]``, tunes on the
validation split, which training never sees and which is not the test set.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prunelab.errors import ConfigError, closest_first
from prunelab.results import NUMBER_KEYS

#: ``key:max`` / ``key:min`` → Optuna's names of the two directions
DIRECTIONS = {"max": "maximize", "min": "minimize"}


@dataclass(frozen=True)
class Objective:
    key: str  # a numeric key of results.json
    direction: str  # "max" | "min"

    @property
    def optuna(self) -> str:
        """Optuna's name of the direction: ``maximize`` or ``minimize``."""
        return DIRECTIONS[self.direction]

    def __str__(self) -> str:
        return f"{self.key}:{self.direction}"


def parse(spec: Any) -> list[Objective]:
    """``[val_acc:max, macs_effective:min]`` → objectives; one line naming the bad entry and the
    valid choices otherwise (a key of results.json that holds a number, max or min, no key twice)."""
    items = [spec] if isinstance(spec, str) else list(spec or [])
    if not items:
        raise ConfigError("objectives=[]: name at least one, e.g. objectives=[val_acc:max]")
    out: list[Objective] = []
    for item in items:
        key, sep, direction = str(item).rpartition(":")
        if not sep:
            raise ConfigError(f"objectives: {item!s} has no direction; write {item!s}:max or "
                              f"{item!s}:min")
        if key not in NUMBER_KEYS:
            raise ConfigError(f"objectives: {key!r} is not a numeric key of results.json; "
                              f"valid, closest first: {', '.join(closest_first(key, NUMBER_KEYS))}")
        if direction not in DIRECTIONS:
            raise ConfigError(f"objectives: {item!s}: the direction must be max or min, "
                              f"not {direction!r}")
        if any(o.key == key for o in out):
            raise ConfigError(f"objectives: {key} is named twice")
        out.append(Objective(key, direction))
    return out


def value_of(results: Mapping[str, Any] | None, key: str) -> float | None:
    """``results[key]`` as a finite float, or None (absent, null, not a number, nan)."""
    v = (results or {}).get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


class JobResult(list):
    """What prunelab's task function returns: the run's objective values, in the order of
    ``objectives`` (empty when the run has no results; None for a value results.json lacks), so
    that Optuna's sweeper reads them as any task function's return value; ``record`` is what the
    sweep's progress and exit status read (state, status, exit, error).

    A list rather than a dict with the values in it: the plugin's sweeper takes the return value
    itself as the objective (``float(value)`` for one, a sequence for several).
    """

    record: dict[str, Any]

    @classmethod
    def of(cls, values: Iterable[float | None], record: dict[str, Any]) -> JobResult:
        out = cls(values)
        out.record = record
        return out

    def __float__(self) -> float:
        if len(self) != 1 or self[0] is None:
            raise TypeError(f"not one objective value: {list(self)}")
        return float(self[0])


def job_values(objectives: Sequence[Objective], results: Mapping[str, Any] | None
               ) -> list[float | None]:
    """A run's values of ``objectives`` (empty without results)."""
    return [value_of(results, o.key) for o in objectives] if results else []


def dominates(a: Sequence[float], b: Sequence[float], objectives: Sequence[Objective]) -> bool:
    """``a`` is at least as good as ``b`` in every objective and better in one."""
    better = False
    for x, y, o in zip(a, b, objectives, strict=True):
        if o.direction == "min":
            x, y = -x, -y
        if x < y:
            return False
        better = better or x > y
    return better


def non_dominated(points: Sequence[Sequence[float]], objectives: Sequence[Objective]) -> list[int]:
    """Indices of the points no other point dominates (the Pareto front); equal points all stay."""
    return [i for i, p in enumerate(points)
            if not any(dominates(q, p, objectives) for j, q in enumerate(points) if j != i)]
