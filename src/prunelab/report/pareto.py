"""A search's Pareto front: the trials that no other trial beats in every objective.

The objectives are the ones the jobs' configs name (``objectives: [val_acc:max,
macs_effective:min]``, :mod:`prunelab.objectives`) and each job's values are read from its
results.json, so the front is computed from the job folders alone: a study's database is not
needed (and a grid sweep with two objectives has a front too). A front is reported when the
jobs name two or more objectives, or when the folder holds an Optuna study (then, with one
objective, its best trials).

Files: ``pareto.png`` (the first two objectives on log axes: every trial, the front as a
staircase, the dense point; trials without values counted in the legend) and ``pareto.csv``
(one row per job: on the front or not, its objective values, its overrides); summary.md gets a
section listing the front with each trial's configuration, and the trials that failed,
diverged or have no value.
"""

from __future__ import annotations

import csv
import io
import statistics
import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunelab.errors import ConfigError
from prunelab.io import atomic_save, atomic_write
from prunelab.objectives import Objective, non_dominated, parse
from prunelab.paths import OPTUNA_DB, OPTUNA_RESULTS, has_no_effect, override_key
from prunelab.report.plots import ERR_FLOOR, ERR_TICKS, ERR_TICKS_FINE, _percent_ticks
from prunelab.report.records import Job, Summary, _count
from prunelab.report.tables import _table

PLOT = "pareto.png"
TABLE = "pareto.csv"
# the dense network's cost where no dense run was given: the key every pruned run records too
DENSE_COST = {"macs_effective": ("macs_dense", "MACs"), "macs_compact": ("macs_dense", "MACs"),
              "params_nonzero": ("params_total", "parameters"),
              "params_compact": ("params_total", "parameters")}


@dataclass
class Front:
    objectives: list[Objective]
    scored: list[Job]  # finished, with a value of every objective
    front: list[Job]  # the non-dominated ones, by the cost axis (x of the plot)
    unscored: list[Job]  # failed, diverged, incomplete, or without an objective's value
    dense: list[Job]  # dense runs with values: this folder's, or --baseline's
    notes: list[str] = field(default_factory=list)

    def values(self, job: Job) -> list[float]:
        return [job.numbers[o.key] for o in self.objectives]

    @property
    def axes(self) -> tuple[Objective, Objective]:
        """(x, y) of the plot: y the first objective to maximise (accuracy), x the first other
        (a cost); the first two objectives otherwise."""
        objs = self.objectives
        y = next((o for o in objs if o.direction == "max"), objs[0])
        others = [o for o in objs if o is not y] or [y]  # one objective: no plot, one axis
        x = next((o for o in others if o.direction == "min"), others[0])
        return x, y


def _has_values(job: Job, objectives: Sequence[Objective]) -> bool:
    return job.status == "ok" and all(o.key in job.numbers for o in objectives)


def holds_study(folder: Path) -> bool:
    """Whether ``folder`` holds an Optuna study of prunelab's sweeper (its default storage, or
    the results file it writes whatever the storage)."""
    return (folder / OPTUNA_DB).is_file() or (folder / OPTUNA_RESULTS).is_file()


def find_front(summary: Summary, baseline_jobs: Sequence[Job] = ()) -> Front | None:
    """The front of the summary's jobs in their objectives; None where there is none to show."""
    named = Counter(tuple(j.objectives) for j in summary.jobs if j.objectives)
    if not named:
        return None
    chosen, _ = named.most_common(1)[0]
    try:
        objectives = parse(list(chosen))
    except ConfigError:
        return None
    if len(objectives) < 2 and not any(holds_study(s) for s in summary.sources or
                                       [summary.sweep_dir]):
        return None
    notes = []
    if len(named) > 1:
        notes.append(f"the jobs name {len(named)} different objectives; the front uses "
                     f"[{', '.join(chosen)}], named by {named[chosen]} of them")
    scored = [j for j in summary.jobs if _has_values(j, objectives)]
    unscored = [j for j in summary.jobs if not _has_values(j, objectives)]
    front = Front(objectives, scored, [], unscored, [], notes)
    x, _ = front.axes
    on = non_dominated([front.values(j) for j in scored], objectives)
    front.front = sorted((scored[i] for i in on), key=lambda j: j.numbers[x.key])
    front.dense = [j for j in [*summary.jobs, *baseline_jobs]
                   if j.dense and _has_values(j, objectives)]
    return front


# ------------------------------------------------------------------------------ tables


def shown_value(o: Objective, v: float | None, unit: str = "") -> str:
    """An objective's value as the tables show it: accuracies in % (followed by ``unit``),
    counts short (312k)."""
    if v is None:
        return "—"
    return f"{100 * v:.2f}{unit}" if o.key.endswith("_acc") else _count(v)


def _head(o: Objective) -> str:
    return f"{o.key} ({o.direction}){' %' if o.key.endswith('_acc') else ''}"


def _config(j: Job) -> str:
    """The trial's overrides that change its numbers (not name=, data_dir=, objectives= ...)."""
    return " ".join(o for o in j.overrides if not has_no_effect(override_key(o))) or j.folder


def markdown(front: Front) -> list[str]:
    """summary.md's section: the front with each trial's configuration, then the trials that
    have no values (failed, diverged, incomplete)."""
    objs = front.objectives
    title = " vs ".join(f"{o.key} ({o.direction})" for o in objs)
    lines = [f"## Pareto front: {title}" if len(objs) > 1 else f"## Best trial: {title}", ""]
    lines.append(f"{len(front.front)} of {len(front.scored)} trials with values are "
                 + ("on the front: no other trial is at least as good in every objective and "
                    "better in one." if len(objs) > 1 else "the best.")
                 + " Values from each job's results.json; the configuration is the trial's "
                   "overrides.")
    lines.append("")
    rows = [[str(i + 1), *[shown_value(o, j.numbers.get(o.key)) for o in objs],
             shown_value(Objective("test_acc", "max"), j.numbers.get("test_acc")),
             str(j.method), str(j.schedule), "—" if j.amount is None else f"{j.amount:g}",
             f"`{_config(j)}`"] for i, j in enumerate(front.front)]
    lines += _table(["#", *map(_head, objs), "test acc %", "method", "schedule", "amount",
                     "configuration"], rows)
    if front.dense:
        lines += ["", "Dense: " + "; ".join(
            f"{', '.join(f'{o.key} {shown_value(o, j.numbers.get(o.key))}' for o in objs)} "
            f"(`{j.folder}`)" for j in front.dense[:5])]
    counts = Counter(_why(j) for j in front.unscored)
    lines += ["", "Trials without values: " + (", ".join(
        f"{n} {k}" for k, n in sorted(counts.items())) or "none") + "."]
    if front.unscored:
        lines += [""] + _table(["folder", "status", "why"],
                               [[j.folder, _why(j), j.error or "—"] for j in front.unscored])
    lines += [f"- note: {n}" for n in front.notes]
    return lines + [""]


def _why(j: Job) -> str:
    """failed | diverged | incomplete | no value (a finished job without an objective)."""
    return "no value" if j.status == "ok" else j.status


def write_csv(front: Front, jobs: Sequence[Job], path: Path) -> None:
    """pareto.csv: every job, whether it is on the front, its objective values and overrides."""
    on = {id(j) for j in front.front}
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(["folder", "status", "pareto", *[o.key for o in front.objectives], "test_acc",
                "overrides"])
    for j in jobs:
        vals = [j.numbers.get(o.key) for o in front.objectives]
        w.writerow([j.folder, _why(j) if j.status != "ok" or None in vals else "ok",
                    int(id(j) in on), *["" if v is None else v for v in vals],
                    j.numbers.get("test_acc", ""), " ".join(j.overrides)])
    atomic_write(path, f.getvalue())


# ------------------------------------------------------------------------------ the plot


def _error(o: Objective) -> bool:
    """An accuracy to maximise: drawn as its error (%), on a log axis."""
    return o.direction == "max" and o.key.endswith("_acc")


def _y(o: Objective, v: float) -> float:
    return max(100.0 * (1.0 - v), ERR_FLOOR) if _error(o) else v


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values)


def plot(front: Front, out_dir: Path, name: str, note: str = "") -> Path | None:
    """pareto.png: every trial, the front, the dense point; None with fewer than two
    objectives."""
    if len(front.objectives) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = front.axes
    fig, ax = plt.subplots(figsize=(8.5, 5.8), dpi=110)
    xs_all, ys_all = [], []
    rest = [j for j in front.scored if j not in front.front]
    if rest:
        xs = [j.numbers[x.key] for j in rest]
        ys = [_y(y, j.numbers[y.key]) for j in rest]
        ax.plot(xs, ys, "o", ms=5, mfc="none", color="0.45", ls="none",
                label=f"other trials ({len(rest)})")
        xs_all += xs
        ys_all += ys
    fx = [j.numbers[x.key] for j in front.front]
    fy = [_y(y, j.numbers[y.key]) for j in front.front]
    if fx:
        staircase = (x.direction == "min") == (_error(y) or y.direction == "min")
        ax.step(fx, fy, where="post" if staircase else "pre", color="C0", lw=1.2)
        ax.plot(fx, fy, "o", ms=7, color="C0", ls="none",
                label=f"Pareto front ({len(fx)} of {len(front.scored)} trials)")
        varied = _varied(front.scored)
        for i, (j, px, py) in enumerate(zip(front.front, fx, fy, strict=True)):
            ax.annotate(f"{i + 1}: {_label(j, varied)}", (px, py), textcoords="offset points",
                        xytext=(6, 4), fontsize=6.5, color="C0")
        xs_all += fx
        ys_all += fy
    dense = front.dense
    if dense:
        dx = _mean([j.numbers[x.key] for j in dense])
        dy = _y(y, _mean([j.numbers[y.key] for j in dense]))
        ax.plot([dx], [dy], "*", ms=14, color="0.15", ls="none",
                label=f"dense ({len(dense)} run{'s' if len(dense) > 1 else ''})")
        xs_all.append(dx)
        ys_all.append(dy)
    elif x.key in DENSE_COST:
        key, what = DENSE_COST[x.key]
        costs = [j.numbers[key] for j in front.scored if key in j.numbers]
        if costs:
            ax.axvline(_mean(costs), color="0.15", ls="--", lw=1,
                       label=f"dense: {_count(_mean(costs))} {what} "
                             "(no dense run: --baseline DIR adds its point)")
            xs_all.append(_mean(costs))
    counts = Counter(_why(j) for j in front.unscored)
    if counts:
        ax.plot([], [], "x", color="C3", ls="none", label="no values: " + ", ".join(
            f"{n} {k}" for k, n in sorted(counts.items())) + " (listed in summary.md)")
    if not xs_all:
        ax.text(0.5, 0.5, "no trial with values", ha="center", va="center",
                transform=ax.transAxes)
    else:
        _x_axis(ax, x, xs_all)
        _y_axis(ax, y, ys_all)
    more = len(front.objectives) > 2
    corner = ("lower" if _error(y) or y.direction == "min" else "upper") + " " + (
        "left" if x.direction == "min" else "right")
    ax.set_title(f"{name}: {y.key} vs {x.key}" + (" (front in all objectives)" if more else "")
                 + f" — {corner} is better", fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper right", framealpha=0.9)
    lines = textwrap.wrap(note, 170) if note else []
    if lines:
        fig.text(0.01, 0.005, "\n".join(lines), fontsize=6.5, color="0.35", ha="left",
                 va="bottom")
    fig.tight_layout(rect=(0, 0.022 * len(lines), 1, 1))
    path = out_dir / PLOT
    atomic_save(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return path


def _varied(jobs: Sequence[Job]) -> set[str]:
    """The override keys whose values differ between the trials: what the search varied."""
    seen: dict[str, set[str]] = {}
    for j in jobs:
        for o in j.overrides:
            key = override_key(o)
            if not has_no_effect(key):
                seen.setdefault(key, set()).add(o.partition("=")[2])
    keys = {k for k, v in seen.items() if len(v) > 1}
    return keys | {k for k in seen if any(k not in {override_key(o) for o in j.overrides}
                                          for j in jobs)}


def _label(j: Job, varied: set[str]) -> str:
    """A front point's label: the values of what the search varied (``agp lamp 0.9
    lr=0.02``); the last part of a key names a value that is not a group's choice."""
    parts = []
    for o in j.overrides:
        key, _, value = o.partition("=")
        key = key.lstrip("+~")
        if key in varied:
            short = key.rsplit(".", 1)[-1]
            parts.append(value if "/" in key or "." not in key or short == "amount"
                         else f"{short}={value}")
    return " ".join(parts) or str(j.method)


def _x_axis(ax: Any, o: Objective, xs: list[float]) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    if min(xs) > 0:
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 1.5, max(xs) * 1.5)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _count(v)))
    better = "lower" if o.direction == "min" else "higher"
    ax.set_xlabel(f"{o.key} (results.json), log scale — {better} is better")


def _y_axis(ax: Any, o: Objective, ys: list[float]) -> None:
    if _error(o):
        ax.set_yscale("log")
        ymin, ymax = max(min(ys) / 1.6, ERR_FLOOR / 2), min(max(ys) * 1.6, 130.0)
        ax.set_ylim(ymin, ymax)
        ticks = [t for t in ERR_TICKS if ymin <= t <= ymax]
        if len(ticks) < 4:
            ticks = [t for t in ERR_TICKS_FINE if ymin <= t <= ymax and t <= 100]
        _percent_ticks(ax.yaxis, ticks, complement=False)
        ax.set_ylabel(f"{o.key.removesuffix('_acc')} error (%) = 100 − {o.key}, log scale")
        right = ax.secondary_yaxis("right")
        _percent_ticks(right.yaxis, ticks, complement=True)
        right.set_ylabel(f"{o.key} (%)")
        return
    if min(ys) > 0:
        ax.set_yscale("log")
    better = "lower" if o.direction == "min" else "higher"
    ax.set_ylabel(f"{o.key} (results.json) — {better} is better")
