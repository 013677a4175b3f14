"""A report's :class:`Summary`: from one sweep or run folder, from several whose jobs are pooled,
or rebuilt from a report's summary.csv (when the job folders are gone); ``--baseline`` folders."""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from prunelab.messages import get_logger
from prunelab.paths import SEARCH
from prunelab.report.comparison import (
    _job_order,
    _label_extras,
    best_within,
    build_points,
    compare,
    dense_baseline,
    notes,
)
from prunelab.report.load import _read_json, exports_from_row, find_job_dirs, load_job, load_jobs
from prunelab.report.records import (
    CSV_COLUMNS,
    Baseline,
    Job,
    ReportError,
    Summary,
    _labels,
    _num,
)

log = get_logger(__name__)


def _roots(sweep_dirs: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(sweep_dirs, str | Path):
        return [Path(sweep_dirs)]
    return list(dict.fromkeys(Path(d) for d in sweep_dirs))


def summarize(sweep_dir: str | Path | Sequence[str | Path], baseline_dirs: Sequence[str | Path] = (),
              delta: float = 0.5, skip_missing: bool = False) -> Summary:
    """The report's data from one sweep or run folder, or from several whose jobs are pooled
    (runs of one configuration from different sweeps join one point; folders are listed as
    ``<sweep>/<job>``). ``skip_missing``: a folder that does not exist is a note, not an error."""
    roots = _roots(sweep_dir)
    if not roots:
        raise ReportError("no sweep folder given")
    missing = [r for r in roots if not r.exists()]
    if skip_missing:
        roots = [r for r in roots if r.exists()]
        if not roots:
            raise ReportError("none of the folders exists: " + ", ".join(map(str, missing)))
    jobs: list[Job] = []
    prefixes = _labels(roots) if len(roots) > 1 else [""]
    for root, prefix in zip(roots, prefixes, strict=True):
        if not root.exists():
            raise ReportError(f"{root}: no such directory")
        if not root.is_dir():
            raise ReportError(f"{root}: not a directory (give the sweep folder, e.g. "
                              "outputs/sweeps/<name>)")
        dirs = find_job_dirs(root)
        # a progress line only where reading takes a while (a few ms per folder)
        log.log(logging.INFO if len(dirs) >= 100 else logging.DEBUG,
                "reading %d job folder(s) under %s ...", len(dirs), root)
        if not dirs:
            raise ReportError(f"{root}: no job folders in it (none has results.json, failed.json "
                              "or .hydra/); is this a sweep dir such as outputs/sweeps/<name>?")
        jobs += [load_job(p, root, prefix) for p in dirs]
    root = roots[0]
    where = root if len(roots) == 1 else " + ".join(map(str, roots))
    _label_extras(jobs)  # before the baseline: it picks among dense configurations by label
    base = dense_baseline(jobs, f"{where} (dense jobs of {'this sweep' if len(roots) == 1 else 'these folders'})")
    if baseline_dirs:
        load_baseline(baseline_dirs, base, skip=set(base.acc))
    compare(jobs, base)
    points = build_points(jobs)
    search = None
    if len(roots) == 1 and (root / SEARCH).is_file():
        try:
            search = _read_json(root / SEARCH)
        except (OSError, ValueError):
            search = {"error": f"{SEARCH} is unreadable"}
    jobs.sort(key=_job_order)
    extra_notes = [f"{m}: no such folder, left out" for m in missing]
    return Summary(root, jobs, points, base, delta, best_within(points, delta), search,
                   extra_notes + notes(jobs, points), sources=roots)


def load_baseline(dirs: Sequence[str | Path], into: Baseline | None = None,
                  skip: set[tuple] | None = None) -> Baseline:
    """Dense accuracies from the finished dense jobs found under each dir in ``dirs`` (or in
    the rows of a report's ``summary.csv``, when its job folders are gone)."""
    base = into or Baseline()
    for d in dirs:
        d = Path(d)
        if d.is_file() and d.suffix == ".csv":
            found = summarize_csv(d).jobs
        elif not d.is_dir():
            raise ReportError(f"--baseline {d}: no such directory (or report summary.csv)")
        else:
            found = load_jobs(d)
        dense = [j for j in found if j.dense and j.status == "ok" and j.test_acc is not None]
        if not dense:
            raise ReportError(f"--baseline {d}: no finished dense run (pruning=none) in it")
        for j in dense:
            if skip and j.key in skip:
                continue
            base.acc.setdefault(j.key, []).append(j.test_acc)
        base.sources.append(str(d))
    return base


def _split_overrides(folder: str) -> list[str]:
    """A job folder name (Hydra's override_dirname) back into its ``key=value`` overrides."""
    out, depth, cur = [], 0, ""
    for ch in folder:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0 and "=" in cur:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    if cur:
        out.append(cur)
    merged: list[str] = []
    for part in out:  # a value with a comma of its own has no "=" after it
        if merged and "=" not in part:
            merged[-1] += "," + part
        else:
            merged.append(part)
    # folder names write a group's "/" as "." (prunelab.config._dirname)
    return [re.sub(r"^pruning\.method=", "pruning/method=", o) for o in merged]


def summarize_csv(path: str | Path, delta: float = 0.5) -> Summary:
    """A Summary rebuilt from a report's summary.csv (numbers as written there)."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"--from-csv {path}: no such file")
    try:
        rows = list(csv.DictReader(path.open(newline="")))
    except (OSError, csv.Error) as err:
        raise ReportError(f"--from-csv {path}: unreadable ({err})") from None
    if not rows or "folder" not in rows[0] or "test_acc" not in rows[0]:
        raise ReportError(f"--from-csv {path}: not a prunelab summary.csv (columns "
                          f"{', '.join(CSV_COLUMNS)})")
    jobs = []
    for r in rows:
        j = Job(folder=r["folder"], status=r.get("status") or "ok", model=r.get("model") or None,
                data=r.get("data") or None, schedule=r.get("schedule") or None,
                method=r.get("method") or None, amount=_num(r.get("amount") or None),
                seed=_num(r.get("seed") or None, int), error=r.get("error") or "",
                # pooled reports name folders <sweep>/<job>: the job's name holds the overrides
                overrides=_split_overrides(r["folder"].rsplit("/", 1)[-1]))
        if j.status == "ok":
            j.test_acc = _num(r.get("test_acc") or None)
            j.sparsity_global = _num(r.get("sparsity_global") or None)
            j.params_nonzero = _num(r.get("params_nonzero") or None, int)
            j.macs_effective = _num(r.get("macs_effective") or None, int)
            j.fit_seconds = _num(r.get("fit_seconds") or None)
            j.epochs = _num(r.get("epochs") or None, int)
            j.budget = r.get("budget") or None
            j.budget_reached = _num(r.get("budget_reached") or None, int)
            j.macs_compact = _num(r.get("macs_compact") or None, int)
            j.params_compact = _num(r.get("params_compact") or None, int)
            j.exports = exports_from_row(r)
        jobs.append(j)
    _label_extras(jobs)
    base = dense_baseline(jobs, f"{path} (dense rows)")
    compare(jobs, base)
    points = build_points(jobs)
    return Summary(path.resolve().parent, jobs, points, base, delta, best_within(points, delta),
                   None, notes(jobs, points))
