"""``python -m prunelab.report <sweep dir>``: a sweep's jobs → summary.csv, summary.md and plots.

Every job folder under the sweep dir is listed: finished (``results.json``), failed
(``failed.json``) and incomplete (a ``.hydra/`` folder but neither file: running, interrupted or
killed) — none is dropped silently. Finished pruned jobs are compared with the dense baseline of
the same model, data and seed: dense jobs (``pruning=none``) of the same sweep, else the dense
runs found under ``--baseline DIR`` (another sweep or a single run folder).

Accuracies in results.json and summary.csv are fractions; ``drop_pts`` and every table in
summary.md are in accuracy points (percent): drop = 100 * (dense acc - acc), positive = worse.
Means and standard deviations are over seeds (sample std, ddof=1; 0 for a single seed).

    python -m prunelab.report outputs/sweeps/<name> [--baseline DIR] [--out DIR] [--delta 0.5]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunelab.paths import FAILED, RESULTS, SEARCH, has_no_effect, last_checkpoint, override_key

MAX_DEPTH = 4  # job folders lie one level down (grids) or two (search-<method>/amount=<a>)

CSV_COLUMNS = [
    "folder", "status", "model", "data", "method", "schedule", "amount", "seed", "test_acc",
    "drop_pts", "sparsity_global", "params_nonzero", "macs_effective", "fit_seconds", "error",
]
# overrides that name a job's model/data/method/amount/seed (shown in their own columns) or
# do not change its numbers; whatever else differs between jobs labels their series
_OWN_COLUMNS = {"model", "data", "seed", "pruning", "pruning/method", "pruning.method.name",
                "pruning.amount", "pruning.schedule"}


class ReportError(Exception):
    """A sweep dir that cannot be reported on (printed as one line, exit status 2)."""


@dataclass
class Job:
    """One job folder, whatever its state."""

    folder: str  # relative to the sweep dir
    status: str  # ok | failed | incomplete | unreadable
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
    error: str = ""
    overrides: list[str] = field(default_factory=list)
    drop_pts: float | None = None
    extra: str = ""  # overrides that set this job apart from the others of its kind

    @property
    def dense(self) -> bool:
        return self.schedule == "none" or self.method == "dense"

    @property
    def key(self) -> tuple[str | None, str | None, int | None]:
        return (self.model, self.data, self.seed)

    def row(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in CSV_COLUMNS}


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
    sweep_dir: Path
    jobs: list[Job]
    points: list[Point]
    baseline: Baseline
    delta: float
    best: dict[str, dict[str, Any]]
    search: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# reading job folders
# --------------------------------------------------------------------------------------------


def _is_job(path: Path) -> bool:
    return (path / RESULTS).is_file() or (path / FAILED).is_file() or (path / ".hydra").is_dir()


def find_job_dirs(root: Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Job folders under ``root`` (``root`` itself if it is one); hidden folders are skipped."""
    if _is_job(root):
        return [root]
    found: list[Path] = []

    def walk(d: Path, depth: int) -> None:
        try:
            children = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            if _is_job(child):
                found.append(child)
            elif depth < max_depth:
                walk(child, depth + 1)

    walk(root, 1)
    return found


def _read_json(path: Path) -> dict[str, Any]:
    payload = json.loads(path.read_text())
    if not isinstance(payload, dict):
        raise ValueError("not a JSON object")
    return payload


def _hydra_meta(path: Path) -> tuple[dict[str, Any], list[str]]:
    """model/data/schedule/method/amount/seed from the job's ``.hydra/config.yaml`` (if any)."""
    meta: dict[str, Any] = {}
    overrides: list[str] = []
    hydra_dir = path / ".hydra"
    try:
        from omegaconf import OmegaConf

        if (hydra_dir / "overrides.yaml").is_file():
            overrides = [str(o) for o in OmegaConf.load(hydra_dir / "overrides.yaml")]
        if (hydra_dir / "config.yaml").is_file():
            cfg = OmegaConf.load(hydra_dir / "config.yaml")
            for name, key in [("model", "model.name"), ("data", "data.name"),
                              ("schedule", "pruning.schedule"), ("method", "pruning.method.name"),
                              ("amount", "pruning.amount"), ("seed", "seed")]:
                meta[name] = OmegaConf.select(cfg, key, default=None,
                                              throw_on_resolution_failure=False)
    except Exception:  # a half-written or foreign .hydra folder: fall back to what we have
        pass
    return meta, overrides


def _override_meta(overrides: Iterable[str]) -> dict[str, Any]:
    """The same fields from ``key=value`` overrides, when no config was saved."""
    keys = {"model": "model", "data": "data", "pruning": "schedule",
            "pruning/method": "method", "pruning.amount": "amount", "seed": "seed"}
    meta: dict[str, Any] = {}
    for o in overrides:
        k, _, v = o.lstrip("+~").partition("=")
        if k in keys:
            meta[keys[k]] = v
    return meta


def _num(value: Any, kind: type = float) -> Any:
    if value is None or isinstance(value, bool):
        return None
    try:
        x = kind(value)
    except (TypeError, ValueError):
        return None
    return None if isinstance(x, float) and math.isnan(x) else x


def load_job(path: Path, root: Path) -> Job:
    folder = path.relative_to(root).as_posix() if path != root else path.name
    meta, overrides = _hydra_meta(path)
    payload: dict[str, Any] = {}
    if (path / RESULTS).is_file():
        try:
            payload = _read_json(path / RESULTS)
            status, error = str(payload.get("status", "ok")), ""
        except (OSError, ValueError) as err:
            status, error = "unreadable", f"{RESULTS}: {err}"
    elif (path / FAILED).is_file():
        try:
            payload = _read_json(path / FAILED)
            error = f"{payload.get('error_type', 'error')}: {payload.get('error', '?')}"
        except (OSError, ValueError) as err:
            error = f"{FAILED}: {err}"
        status = "failed"
    else:
        status = "incomplete"
        error = "no results.json yet: running, or interrupted (relaunch the sweep to resume)"
        if last_checkpoint(path).is_file():
            error = "no results.json yet; has a last.ckpt (relaunch the sweep to resume it)"
    overrides = [str(o) for o in payload.get("overrides") or overrides]
    for k, v in _override_meta(overrides).items():
        meta.setdefault(k, v)
        if meta[k] is None:
            meta[k] = v
    for k in ("model", "data", "schedule", "method", "amount", "seed"):
        if payload.get(k) is not None:
            meta[k] = payload[k]
    job = Job(
        folder=folder, status=status, error=error, overrides=overrides,
        model=_str(meta.get("model")), data=_str(meta.get("data")),
        schedule=_str(meta.get("schedule")), method=_str(meta.get("method")),
        amount=_num(meta.get("amount")), seed=_num(meta.get("seed"), int),
    )
    if job.schedule == "none":
        job.method, job.amount = "dense", 0.0
    if status == "ok":
        job.test_acc = _num(payload.get("test_acc"))
        job.sparsity_global = _num(payload.get("sparsity_global"))
        job.params_nonzero = _num(payload.get("params_nonzero"), int)
        job.macs_effective = _num(payload.get("macs_effective"), int)
        job.macs_dense = _num(payload.get("macs_dense"), int)
        job.fit_seconds = _num(payload.get("fit_seconds"))
        job.epochs = _num(payload.get("epochs"), int)
    return job


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def load_jobs(root: Path) -> list[Job]:
    return [load_job(p, root) for p in find_job_dirs(root)]


def load_baseline(dirs: Sequence[str | Path], into: Baseline | None = None,
                  skip: set[tuple] | None = None) -> Baseline:
    """Dense accuracies from the finished dense jobs found under each dir in ``dirs``."""
    base = into or Baseline()
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise ReportError(f"--baseline {d}: no such directory")
        dense = [j for j in load_jobs(d) if j.dense and j.status == "ok" and j.test_acc is not None]
        if not dense:
            raise ReportError(f"--baseline {d}: no finished dense run (pruning=none) in it")
        for j in dense:
            if skip and j.key in skip:
                continue
            base.acc.setdefault(j.key, []).append(j.test_acc)
        base.sources.append(str(d))
    return base


# --------------------------------------------------------------------------------------------
# comparing
# --------------------------------------------------------------------------------------------


def _label_extras(jobs: list[Job]) -> None:
    """Give each job the overrides that distinguish it from the others of its kind."""
    for dense in (True, False):
        group = [j for j in jobs if j.dense is dense]
        others = [{o for o in j.overrides if override_key(o) not in _OWN_COLUMNS
                   and not has_no_effect(override_key(o)) and not o.startswith("hydra")}
                  for j in group]
        common = set.intersection(*others) if others else set()
        for j, o in zip(group, others, strict=True):
            j.extra = " ".join(sorted(o - common))


def _series_name(j: Job, multi: dict[str, bool]) -> str:
    parts = [str(j.method)]
    if multi["schedule"] and not j.dense:
        parts.append(f"({j.schedule})")
    if multi["model"] or multi["data"]:
        parts.append(f"[{j.model}/{j.data}]")
    if j.extra:
        parts.append(j.extra)
    return " ".join(parts)


def build_points(jobs: list[Job]) -> list[Point]:
    ok = [j for j in jobs if j.status == "ok"]
    multi = {k: len({getattr(j, k) for j in ok if not (k == "schedule" and j.dense)}) > 1
             for k in ("schedule", "model", "data")}
    groups: dict[tuple, list[Job]] = defaultdict(list)
    for j in ok:
        groups[(j.model, j.data, j.schedule, j.method, j.amount, j.extra)].append(j)
    points = [Point(_series_name(js[0], multi), m, d, s, meth, a, e, sorted(js, key=_seed_key))
              for (m, d, s, meth, a, e), js in groups.items()]
    return sorted(points, key=lambda p: (p.method != "dense", p.series, p.amount or 0.0))


def _seed_key(j: Job) -> tuple:
    return (j.seed is None, j.seed or 0, j.folder)


def compare(jobs: list[Job], baseline: Baseline) -> None:
    for j in jobs:
        dense = baseline.of(j.key)
        if j.status == "ok" and j.test_acc is not None and dense is not None:
            j.drop_pts = 100.0 * (dense - j.test_acc)


def best_within(points: list[Point], delta: float) -> dict[str, dict[str, Any]]:
    """Per series: the point with the highest sparsity reached whose mean drop is <= delta."""
    out: dict[str, dict[str, Any]] = {}
    for series in dict.fromkeys(p.series for p in points if p.method != "dense"):
        pts = [p for p in points if p.series == series]
        known = [p for p in pts if p.mean("drop_pts") is not None]
        if not known:
            out[series] = {"answer": None, "reason": "no dense baseline for these seeds"}
            continue
        ok = [p for p in known if p.mean("drop_pts") <= delta]
        if not ok:
            least = min(known, key=lambda p: p.mean("drop_pts"))
            out[series] = {"answer": None, "reason": (
                f"no amount tried is within {delta:g} pts (smallest drop "
                f"{least.mean('drop_pts'):.2f} pts at amount {least.amount:g})")}
            continue
        best = max(ok, key=lambda p: (p.mean("sparsity_global") or p.amount or 0.0))
        out[series] = {"answer": best.amount, "sparsity": best.mean("sparsity_global"),
                       "test_acc": best.mean("test_acc"), "test_acc_std": best.std("test_acc"),
                       "drop_pts": best.mean("drop_pts"), "n": best.n}
    return out


def summarize(sweep_dir: str | Path, baseline_dirs: Sequence[str | Path] = (),
              delta: float = 0.5) -> Summary:
    root = Path(sweep_dir)
    if not root.exists():
        raise ReportError(f"{root}: no such directory")
    if not root.is_dir():
        raise ReportError(f"{root}: not a directory (give the sweep folder, e.g. outputs/sweeps/<name>)")
    jobs = load_jobs(root)
    if not jobs:
        raise ReportError(f"{root}: no job folders in it (none has results.json, failed.json or "
                          ".hydra/); is this a sweep dir such as outputs/sweeps/<name>?")
    base = Baseline()
    for j in jobs:
        if j.dense and j.status == "ok" and j.test_acc is not None:
            base.acc.setdefault(j.key, []).append(j.test_acc)
    if base.acc:
        base.sources.append(f"{root} (dense jobs of this sweep)")
    if baseline_dirs:
        load_baseline(baseline_dirs, base, skip=set(base.acc))
    _label_extras(jobs)
    compare(jobs, base)
    points = build_points(jobs)
    search = None
    if (root / SEARCH).is_file():
        try:
            search = _read_json(root / SEARCH)
        except (OSError, ValueError):
            search = {"error": f"{SEARCH} is unreadable"}
    jobs.sort(key=_job_order)
    return Summary(root, jobs, points, base, delta, best_within(points, delta), search,
                   notes(jobs, points))


def notes(jobs: list[Job], points: list[Point]) -> list[str]:
    """Warnings about comparisons that are not like for like."""
    out = []
    for model, data in sorted({(p.model, p.data) for p in points}, key=str):
        dense = [p for p in points if p.method == "dense" and (p.model, p.data) == (model, data)]
        if len(dense) > 1:
            out.append(f"{model}/{data}: {len(dense)} different dense configurations ("
                       + "; ".join(p.extra or "defaults" for p in dense) + "); the baseline "
                       "averages them: keep one per sweep, or pass --baseline")
        ok = [j for j in jobs if j.status == "ok" and (j.model, j.data) == (model, data)]
        d_ep = sorted({j.epochs for j in ok if j.dense and j.epochs is not None})
        p_ep = sorted({j.epochs for j in ok if not j.dense and j.epochs is not None})
        if d_ep and p_ep and d_ep != p_ep:
            out.append(f"{model}/{data}: dense runs trained {'/'.join(map(str, d_ep))} epochs, "
                       f"pruned runs {'/'.join(map(str, p_ep))}: not like for like (pruning "
                       "schedules set trainer.max_epochs; pass the same trainer.max_epochs=N "
                       "to the dense and the pruned sweeps)")
    return out


def _job_order(j: Job) -> tuple:
    return (str(j.model), str(j.data), not j.dense, str(j.method), j.extra,
            j.amount if j.amount is not None else -1.0, _seed_key(j))


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def write_csv(summary: Summary, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for j in summary.jobs:
            w.writerow({k: ("" if v is None else v) for k, v in j.row().items()})


def _pct(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}"


def _pm(mean: float | None, std: float | None, scale: float = 100.0) -> str:
    if mean is None:
        return "—"
    return f"{scale * mean:.2f} ± {scale * (std or 0.0):.2f}"


def _signed(x: float | None) -> str:
    return "—" if x is None else f"{x:+.2f}"


def _count(x: float | None) -> str:
    if x is None:
        return "—"
    for unit, div in (("", 1.0), ("k", 1e3), ("M", 1e6), ("G", 1e9)):
        text = f"{x / div:.3g}"
        if abs(float(text)) < 1000 or unit == "G":
            return text + unit
    return text


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def esc(c: str) -> str:
        return str(c).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return out


def markdown(summary: Summary, plots: Sequence[str] = ()) -> str:
    s, jobs, pts = summary, summary.jobs, summary.points
    counts = defaultdict(int)
    for j in jobs:
        counts[j.status] += 1
    lines = [f"# Sweep report: {s.sweep_dir}", ""]
    lines.append(f"{len(jobs)} jobs: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
                 + ". Accuracies in %, drops in accuracy points (dense − pruned, positive = worse),"
                 " mean ± std over seeds.")
    lines.append("")
    if s.baseline.acc:
        lines.append("Dense baseline (per model, data, seed) from: " + "; ".join(s.baseline.sources))
        for md in sorted({(k[0], k[1]) for k in s.baseline.acc}, key=str):
            st = s.baseline.stats(*md)
            if st:
                lines.append(f"- {md[0]}/{md[1]}: {_pm(st[0], st[1])} % over {st[2]} seed(s)")
    else:
        lines.append("No dense baseline: add dense jobs to the sweep (`python -m prunelab -m "
                     "pruning=none seed=... name=<same name>`) or pass `--baseline DIR`; "
                     "drops are left blank.")
    lines += [f"> **Note:** {n}" for n in s.notes]
    lines.append("")

    pruned = [p for p in pts if p.method != "dense"]
    amounts = sorted({p.amount for p in pruned if p.amount is not None})
    if pruned:
        lines += ["## Test accuracy: method × amount", "",
                  "Each cell: accuracy % mean ± std over seeds (mean drop vs dense, pts).", ""]
        rows = []
        for series in dict.fromkeys(p.series for p in pruned):
            cells = [series]
            for a in amounts:
                p = next((q for q in pruned if q.series == series and q.amount == a), None)
                cells.append("" if p is None else f"{_pm(p.mean('test_acc'), p.std('test_acc'))}"
                             f" ({_signed(p.mean('drop_pts'))})")
            rows.append(cells)
        lines += _table(["method"] + [f"{a:g}" for a in amounts], rows) + [""]

    if pts:
        lines += ["## Per configuration", ""]
        rows = [[p.series, "—" if p.method == "dense" else f"{p.amount:g}", str(p.n),
                 _pm(p.mean("test_acc"), p.std("test_acc")), _signed(p.mean("drop_pts")),
                 _pct(p.mean("sparsity_global")), _count(p.mean("params_nonzero")),
                 _count(p.mean("macs_effective")), f"{p.mean('fit_seconds') or 0:.1f}"]
                for p in pts]
        lines += _table(["method", "amount", "seeds", "test acc %", "drop pts", "sparsity %",
                         "non-zero params", "effective MACs", "fit s"], rows) + [""]

    lines += [f"## Highest sparsity within {s.delta:g} pts of dense", ""]
    if not s.best:
        lines.append("No finished pruned job.")
    for series, b in s.best.items():
        if b["answer"] is None:
            lines.append(f"- **{series}**: {b['reason']}")
        else:
            lines.append(f"- **{series}**: amount {b['answer']:g} → sparsity "
                         f"{_pct(b['sparsity'], 1)} %, accuracy {_pm(b['test_acc'], b['test_acc_std'])}"
                         f" %, drop {b['drop_pts']:+.2f} pts ({b['n']} seed(s))")
    lines.append("")
    if s.search:
        lines += _search_md(s.search)

    bad = [j for j in jobs if j.status != "ok"]
    lines += ["## Failed and incomplete jobs", ""]
    if bad:
        lines += _table(["folder", "status", "error"], [[j.folder, j.status, j.error] for j in bad])
    else:
        lines.append("None.")
    lines += ["", "## All jobs", ""]
    rows = [[j.folder, j.status, str(j.method), "" if j.amount is None else f"{j.amount:g}",
             "" if j.seed is None else str(j.seed), _pct(j.test_acc), _signed(j.drop_pts),
             _pct(j.sparsity_global, 1), _count(j.params_nonzero), _count(j.macs_effective),
             "" if j.fit_seconds is None else f"{j.fit_seconds:.1f}"] for j in jobs]
    lines += _table(["folder", "status", "method", "amount", "seed", "test acc %", "drop pts",
                     "sparsity %", "non-zero params", "effective MACs", "fit s"], rows)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def _search_md(search: dict[str, Any]) -> list[str]:
    lines = ["## Bisection search (search.json)", ""]
    if "error" in search:
        return lines + [search["error"], ""]
    lines.append(f"delta {search.get('delta')} pts, amounts in [{search.get('lo')}, "
                 f"{search.get('hi')}], overrides: `{' '.join(search.get('overrides') or [])}`")
    lines.append("")
    for method, r in (search.get("methods") or {}).items():
        lines.append(f"- **{method}**: {r.get('message', r.get('status'))}")
    return lines + [""]


def plot(summary: Summary, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = summary.points
    pruned = [p for p in pts if p.method != "dense"]
    pairs = sorted({(p.model, p.data) for p in pts}, key=str)
    files = []
    for name, xattr, xlabel in [
        ("acc_vs_sparsity.png", "sparsity_global", "sparsity reached (% of prunable weights zero)"),
        ("acc_vs_macs.png", "macs_effective", "effective MACs per example"),
    ]:
        fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
        scale = 100.0 if xattr == "sparsity_global" else 1.0
        for i, series in enumerate(dict.fromkeys(p.series for p in pruned)):
            sp = sorted((p for p in pruned if p.series == series and p.mean(xattr) is not None),
                        key=lambda p: p.mean(xattr))
            if not sp:
                continue
            ax.errorbar([scale * p.mean(xattr) for p in sp], [100 * p.mean("test_acc") for p in sp],
                        yerr=[100 * (p.std("test_acc") or 0.0) for p in sp], marker="o",
                        capsize=3, label=series, color=f"C{i % 10}")
        for k, (model, data) in enumerate(pairs):
            st = summary.baseline.stats(model, data)
            if st is None:
                continue
            mean, std, n = st
            tag = f" {model}/{data}" if len(pairs) > 1 else ""
            color = "black" if k == 0 else f"C{(k + 5) % 10}"
            ax.axhline(100 * mean, color=color, ls="--", lw=1,
                       label=f"dense{tag}: mean ± std over {n} seed(s)")
            ax.axhspan(100 * (mean - std), 100 * (mean + std), color=color, alpha=0.12, lw=0)
            dense = [p for p in pts if p.method == "dense" and (p.model, p.data) == (model, data)]
            if xattr == "macs_effective" and dense and dense[0].mean(xattr) is not None:
                ax.plot([dense[0].mean(xattr)], [100 * mean], marker="*", ms=12, color=color,
                        ls="none")
        if xattr == "macs_effective":
            xs = [p.mean(xattr) for p in pts if p.mean(xattr)]
            if xs and max(xs) / max(min(xs), 1) > 20:
                ax.set_xscale("log")
        if not pts:
            ax.text(0.5, 0.5, "no finished job", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{summary.sweep_dir.name}: test accuracy vs "
                     + ("sparsity" if xattr == "sparsity_global" else "effective MACs"))
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path)
        plt.close(fig)
        files.append(path)
    return files


def report(sweep_dir: str | Path, baseline: Sequence[str | Path] = (), out: str | Path | None = None,
           delta: float = 0.5) -> Summary:
    """Write summary.csv, summary.md, acc_vs_sparsity.png and acc_vs_macs.png; return the data."""
    summary = summarize(sweep_dir, baseline, delta)
    out_dir = Path(out) if out is not None else summary.sweep_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(summary, out_dir / "summary.csv")
    plots = plot(summary, out_dir)
    (out_dir / "summary.md").write_text(markdown(summary, [p.name for p in plots]))
    summary.files = [out_dir / "summary.csv", out_dir / "summary.md", *plots]
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prunelab.report",
        description="Summarize a sweep: summary.csv, summary.md and plots in the sweep dir.")
    parser.add_argument("sweep_dir", help="the sweep folder, e.g. outputs/sweeps/<name>")
    parser.add_argument("--baseline", action="append", default=[], metavar="DIR",
                        help="sweep or run folder with dense runs (pruning=none) to compare with, "
                             "for (model, data, seed) without a dense job in this sweep")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="write the files here instead of into the sweep folder")
    parser.add_argument("--delta", type=float, default=0.5,
                        help="accuracy points of drop allowed by 'highest sparsity within "
                             "delta of dense' (default 0.5)")
    args = parser.parse_args(argv)
    try:
        s = report(args.sweep_dir, args.baseline, args.out, args.delta)
    except ReportError as err:
        print(f"prunelab.report: error: {err}", file=sys.stderr)
        return 2
    counts = defaultdict(int)
    for j in s.jobs:
        counts[j.status] += 1
    print(f"{len(s.jobs)} jobs (" + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + ")")
    for series, b in s.best.items():
        if b["answer"] is None:
            print(f"  {series}: {b['reason']}")
        else:
            print(f"  {series}: highest sparsity within {s.delta:g} pts of dense: amount "
                  f"{b['answer']:g} (sparsity {_pct(b['sparsity'], 1)} %, drop "
                  f"{b['drop_pts']:+.2f} pts)")
    for n in s.notes:
        print(f"  note: {n}")
    print("wrote " + ", ".join(str(f) for f in s.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
