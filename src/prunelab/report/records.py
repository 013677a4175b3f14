"""The report's records: a job folder (:class:`Job`), a configuration over its seeds
(:class:`Point`), the dense baseline (:class:`Baseline`) and the whole report (:class:`Summary`),
with the value helpers every stage shares (numbers read leniently, counts written short)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CSV_COLUMNS = [
    "folder", "status", "model", "data", "method", "schedule", "amount", "seed", "test_acc",
    "drop_pts", "sparsity_global", "params_nonzero", "macs_effective", "fit_seconds", "epochs",
    "budget", "budget_reached", "macs_compact", "params_compact", "error",
]


class ReportError(Exception):
    """A sweep dir that cannot be reported on (printed as one line, exit status 2)."""


@dataclass
class Job:
    """One job folder, whatever its state."""

    folder: str  # relative to the sweep dir
    status: str  # ok | failed | diverged | incomplete | unreadable
    model: str | None = None
    data: str | None = None
    schedule: str | None = None
    method: str | None = None
    amount: float | None = None
    seed: int | None = None
    test_acc: float | None = None
    sparsity_global: float | None = None
    params_nonzero: int | None = None
    macs_effective: int | None = None
    macs_dense: int | None = None
    fit_seconds: float | None = None
    epochs: int | None = None
    # pruning.budget runs: "macs=160000" (or "params=N") and the cost the run reached
    budget: str | None = None
    budget_reached: int | None = None
    macs_compact: int | None = None
    params_compact: int | None = None
    error: str = ""
    overrides: list[str] = field(default_factory=list)
    # the saved config flattened to dotted keys (None without .hydra/config.yaml)
    config: dict[str, Any] | None = None
    drop_pts: float | None = None
    extra: str = ""  # overrides that set this job apart from the others of its kind
    # export/<encoding>/export.json records of the job's shipped artifacts, by folder name,
    # and what was wrong with the others (an export that did not finish, a damaged record)
    exports: dict[str, dict[str, Any]] = field(default_factory=dict)
    export_notes: list[str] = field(default_factory=list)
    # results.json's latency_ms of pruning.compact=true: {"dense"|"masked"|"compact": {"bs1": ms}}
    latency_ms: dict[str, dict[str, float]] | None = None
    test_subset: str = ""  # "160 of 10,000": tested on part of the test set (limit_test_batches)
    # every number of a finished job's results.json (what an objective may name), and the
    # objectives its config named ("val_acc:max" ...; None without a saved config)
    numbers: dict[str, float] = field(default_factory=dict)
    objectives: list[str] | None = None

    @property
    def dense(self) -> bool:
        return self.schedule == "none" or self.method == "dense"

    @property
    def key(self) -> tuple[str | None, str | None, int | None]:
        return (self.model, self.data, self.seed)

    @property
    def setting(self) -> str:
        """What the job was asked for: its amount, or its budget (``macs ≤ 160k``)."""
        return budget_label(self.budget) if self.budget else (
            "—" if self.dense or self.amount is None else f"{self.amount:g}")

    def row(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in CSV_COLUMNS}


def budget_label(budget: str | None) -> str:
    """``"macs=160000"`` → ``"macs ≤ 160k"``."""
    if not budget:
        return ""
    metric, _, limit = budget.partition("=")
    return f"{metric} ≤ {_count(_num(limit))}"


@dataclass
class Point:
    """One configuration (all seeds of it): a point of the plots and a row of the pivot."""

    series: str
    model: str | None
    data: str | None
    schedule: str | None
    method: str | None
    amount: float | None
    extra: str
    jobs: list[Job]
    budget: str | None = None  # budget runs: "macs=160000"; their amount only shaped the steps

    @property
    def setting(self) -> str:
        return self.jobs[0].setting

    @property
    def n(self) -> int:
        return len(self.jobs)

    def _vals(self, attr: str) -> list[float]:
        return [float(v) for j in self.jobs if (v := getattr(j, attr)) is not None]

    def mean(self, attr: str) -> float | None:
        vals = self._vals(attr)
        return statistics.fmean(vals) if vals else None

    def std(self, attr: str) -> float | None:
        vals = self._vals(attr)
        if not vals:
            return None
        return statistics.stdev(vals) if len(vals) > 1 else 0.0


@dataclass
class Baseline:
    """Dense test accuracy per (model, data, seed), and where it came from."""

    acc: dict[tuple, list[float]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def of(self, key: tuple) -> float | None:
        vals = self.acc.get(key)
        return statistics.fmean(vals) if vals else None

    def stats(self, model: str | None, data: str | None) -> tuple[float, float, int] | None:
        """Mean and std over seeds of the per-seed dense accuracy of (model, data)."""
        per_seed = [statistics.fmean(v) for (m, d, _), v in self.acc.items()
                    if m == model and d == data and v]
        if not per_seed:
            return None
        std = statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
        return statistics.fmean(per_seed), std, len(per_seed)


@dataclass
class Summary:
    sweep_dir: Path  # the first of ``sources``
    jobs: list[Job]
    points: list[Point]
    baseline: Baseline
    delta: float
    best: dict[str, dict[str, Any]]
    search: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)  # every sweep/run folder read
    title: str | None = None  # the plots' title prefix, instead of the folders' names
    front: Any = None  # a search's Pareto front (prunelab.report.pareto.Front), if any

    @property
    def name(self) -> str:
        """The plots' title: ``title``, the sweep folder's name, or the names of all of them."""
        if self.title:
            return self.title
        return " + ".join(_labels(self.sources)) if len(self.sources) > 1 else \
            self.sweep_dir.name


def _num(value: Any, kind: type = float) -> Any:
    if value is None or isinstance(value, bool):
        return None
    try:
        x = kind(value)
    except (TypeError, ValueError):
        return None
    return None if isinstance(x, float) and math.isnan(x) else x


def _count(x: float | None) -> str:
    if x is None:
        return "—"
    for unit, div in (("", 1.0), ("k", 1e3), ("M", 1e6), ("G", 1e9)):
        text = f"{x / div:.3g}"
        if abs(float(text)) < 1000 or unit == "G":
            return text + unit
    return text


def _labels(roots: Sequence[Path]) -> list[str]:
    """Short unique names for several folders: the shortest path tails that tell them apart."""
    parts = [r.resolve().parts for r in roots]
    labels = []
    for i, p in enumerate(parts):
        others = [q for j, q in enumerate(parts) if j != i]
        k = next((k for k in range(1, len(p) + 1) if all(q[-k:] != p[-k:] for q in others)),
                 len(p))
        labels.append("/".join(p[-k:]))
    return labels
