"""``prunelab report <sweep dir>``: a sweep's jobs → summary.csv, summary.md and plots.

Every job folder under the sweep dir is listed: finished (``results.json``), failed or diverged
(``failed.json``) and incomplete (a ``.hydra/`` folder but neither file: running, interrupted or
killed; or a results.json without a valid ``test_acc``) — none is dropped silently. Finished
pruned jobs are compared with the dense baseline of the same model, data and seed: dense jobs (``pruning=none``) of the same sweep, else the dense
runs found under ``--baseline DIR`` (another sweep or a single run folder).

Accuracies in results.json and summary.csv are fractions; ``drop_pts`` and every table in
summary.md are in accuracy points (percent): drop = 100 * (dense acc - acc), positive = worse.
Means and standard deviations are over seeds (sample std, ddof=1; 0 for a single seed).

    python -m prunelab report outputs/sweeps/<name> [--baseline DIR] [--out DIR] [--delta 0.5]
    python -m prunelab report --from-csv <report dir>/summary.csv     # the plots only

The command line is :mod:`prunelab.cli.report`; this module is its library.

Plots: test error (log axis; accuracy on the right) against the weights kept (log axis, 100 % on
the left, sparsity along the top) and against the effective MACs; one marker per configuration
with ± one std over seeds, the dense baseline as a dashed line in a band of ± one std.
Jobs exported with ``prunelab export`` (``<job>/export/<encoding>/export.json``) add per-encoding
columns (artifact bytes, ratio to the dense fp32 state dict, test accuracy measured from the
file) and acc_vs_bytes.png: test error vs artifact bytes, one series per method and encoding.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import statistics
import textwrap
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunelab.logs import get_logger
from prunelab.paths import (
    EXPORT_DIR,
    EXPORT_REPORT,
    FAILED,
    HYDRA_CONFIG,
    HYDRA_DIR,
    HYDRA_OVERRIDES,
    RESULTS,
    SEARCH,
    has_no_effect,
    last_checkpoint,
    override_key,
)
from prunelab.results import NUMBER_KEYS

log = get_logger(__name__)
MAX_DEPTH = 4  # job folders lie one level down (grids) or two (search-<method>/amount=<a>)

CSV_COLUMNS = [
    "folder", "status", "model", "data", "method", "schedule", "amount", "seed", "test_acc",
    "drop_pts", "sparsity_global", "params_nonzero", "macs_effective", "fit_seconds", "epochs",
    "budget", "budget_reached", "macs_compact", "params_compact", "error",
]
# overrides that name a job's model/data/method/amount/seed (shown in their own columns) or
# do not change its numbers; whatever else differs between jobs labels their series
_OWN_COLUMNS = {"model", "data", "seed", "pruning", "pruning/method", "pruning.method.name",
                "pruning.amount", "pruning.schedule"}
# the same, as keys of a job's saved config (.hydra/config.yaml), which labels series when every
# job has one: jobs launched with different overrides but the same config join one series
_OWN_CONFIG_KEYS = ("model.name", "data.name", "data.seed", "seed", "pruning.schedule",
                    "pruning.method.name", "pruning.amount", "pruning.budget", "experiment")


def dense_baseline(jobs: Iterable[Job], source: str) -> Baseline:
    """The dense baseline that finished dense jobs give, per model/data/seed key.

    Where dense runs of several configurations exist for one model and data (e.g. 5 and 10
    epochs), only the configuration with the highest mean test accuracy is the baseline: a
    pruned run is compared with the strongest dense one, not with an average of budgets."""
    configs: dict[tuple, dict[str, list[Job]]] = defaultdict(lambda: defaultdict(list))
    for j in jobs:
        if j.dense and j.status == "ok" and j.test_acc is not None:
            configs[j.key[:2]][j.extra].append(j)
    base = Baseline()
    for by_extra in configs.values():
        best = max(by_extra.values(), key=lambda js: statistics.fmean(j.test_acc for j in js))
        for j in best:
            base.acc.setdefault(j.key, []).append(j.test_acc)
        if len(by_extra) > 1:
            base.sources.append(f"{source} (strongest of {len(by_extra)} dense configurations: "
                                f"{best[0].extra or 'default'})")
    if base.acc and not any(src.startswith(source) for src in base.sources):
        base.sources.append(source)
    return base


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
    # export/<encoding>/export.json records of the job's shipped artifacts, by folder name
    exports: dict[str, dict[str, Any]] = field(default_factory=dict)
    test_subset: str = ""  # "160 of 10,000": tested on part of the test set (limit_test_batches)

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

    @property
    def name(self) -> str:
        """The plots' title: ``title``, the sweep folder's name, or the names of all of them."""
        if self.title:
            return self.title
        return " + ".join(_labels(self.sources)) if len(self.sources) > 1 else \
            self.sweep_dir.name


# --------------------------------------------------------------------------------------------
# reading job folders
# --------------------------------------------------------------------------------------------


def _is_job(path: Path) -> bool:
    return (path / RESULTS).is_file() or (path / FAILED).is_file() or (path / HYDRA_DIR).is_dir()


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


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"dotted.key": leaf}`` (lists as tuples; descriptions left out)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k != "description":
                out.update(_flatten(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: None}
    if isinstance(node, list):
        return {prefix[:-1]: tuple(repr(v) for v in node)}
    return {prefix[:-1]: node}


def _config_budget(budget: Any) -> str | None:
    """``{"macs": 160000, "params": None}`` → ``"macs=160000"``; None without a budget."""
    if isinstance(budget, dict):
        set_ = [(k, v) for k, v in budget.items() if v is not None]
        if len(set_) == 1 and _num(set_[0][1], int) is not None:
            return f"{set_[0][0]}={_num(set_[0][1], int)}"
    return None


def _hydra_meta(path: Path) -> tuple[dict[str, Any], list[str]]:
    """model/data/schedule/method/amount/seed/budget from the job's ``.hydra/config.yaml`` (if
    any), and the whole config flattened as ``meta["config"]``."""
    meta: dict[str, Any] = {}
    overrides: list[str] = []
    hydra_dir = path / HYDRA_DIR
    try:
        from omegaconf import OmegaConf

        from prunelab.config import register

        register()  # prunelab's resolvers (pruning=explicit's amount is one)
        if (hydra_dir / HYDRA_OVERRIDES).is_file():
            overrides = [str(o) for o in OmegaConf.load(hydra_dir / HYDRA_OVERRIDES)]
        if (hydra_dir / HYDRA_CONFIG).is_file():
            cfg = OmegaConf.load(hydra_dir / HYDRA_CONFIG)
            for name, key in [("model", "model.name"), ("data", "data.name"),
                              ("schedule", "pruning.schedule"), ("method", "pruning.method.name"),
                              ("amount", "pruning.amount"), ("seed", "seed")]:
                meta[name] = OmegaConf.select(cfg, key, default=None,
                                              throw_on_resolution_failure=False)
            plain = OmegaConf.to_container(cfg, resolve=False)
            meta["budget"] = _config_budget((plain.get("pruning") or {}).get("budget"))
            meta["config"] = _flatten(plain)
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


def _payload_budget(payload: dict[str, Any]) -> tuple[str | None, int | None]:
    """results.json's budget record (``budget``), or for results written before it existed the
    cost of the last pruning step in ``pruning_history``: (``"macs=160000"``, reached)."""
    rec = payload.get("budget")
    if isinstance(rec, dict) and rec.get("metric") and _num(rec.get("limit"), int) is not None:
        return f"{rec['metric']}={_num(rec['limit'], int)}", _num(rec.get("reached"), int)
    history = payload.get("pruning_history")
    costs = [h["cost"] for h in history if isinstance(h, dict) and isinstance(h.get("cost"), dict)] \
        if isinstance(history, list) else []
    if costs and costs[-1].get("metric"):
        # the last step's limit is the budget (the steps before it have looser limits)
        return (f"{costs[-1]['metric']}={_num(costs[-1].get('limit'), int)}",
                _num(costs[-1].get("reached"), int))
    return None, None


def load_job(path: Path, root: Path, prefix: str = "") -> Job:
    folder = path.relative_to(root).as_posix() if path != root else path.name
    folder = f"{prefix}/{folder}" if prefix else folder
    meta, overrides = _hydra_meta(path)
    payload: dict[str, Any] = {}
    if (path / RESULTS).is_file():
        try:
            payload = _read_json(path / RESULTS)
            status, error = str(payload.get("status", "ok")), ""
        except (OSError, ValueError) as err:
            status, error = "unreadable", f"{RESULTS}: {err}"
    elif (path / FAILED).is_file():
        status = "failed"
        try:
            payload = _read_json(path / FAILED)
            error = f"{payload.get('error_type', 'error')}: {payload.get('error', '?')}"
            if payload.get("status") == "diverged":  # non-finite loss or weights
                status = "diverged"
        except (OSError, ValueError) as err:
            error = f"{FAILED}: {err}"
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
    job.config = meta.get("config")
    job.budget = meta.get("budget")
    if payload:
        budget, job.budget_reached = _payload_budget(payload)
        job.budget = budget or job.budget
    if job.schedule == "none":
        job.method, job.amount, job.budget = "dense", 0.0, None
    if status != "ok" and not error:
        error = str(payload.get("error") or f"{RESULTS} has status {status!r}")
        job.error = error
    if status == "ok":
        bad = next((k for k in sorted(NUMBER_KEYS) if not _is_number(payload.get(k))), None)
        if bad is not None:  # "0.98" is no number: never ranked, whatever float() makes of it
            job.status, job.error = "incomplete", (f"{RESULTS}: {bad} is {payload[bad]!r}, "
                                                   "not a number; left out of the report")
            log.warning("%s: %s is %r, not a number; left out of the report",
                        path / RESULTS, bad, payload[bad])
            return job
        job.test_acc = _num(payload.get("test_acc"))
        if job.test_acc is None or not 0.0 <= job.test_acc <= 1.0:
            # no test (trainer.limit_test_batches=0) or a damaged value: not a result to rank
            job.status, job.test_acc = "incomplete", None
            job.error = (f"{RESULTS} has no valid test_acc ({payload.get('test_acc')!r}); "
                         "a run without a test is not a result")
            return job
        job.sparsity_global = _num(payload.get("sparsity_global"))
        job.params_nonzero = _num(payload.get("params_nonzero"), int)
        job.macs_effective = _num(payload.get("macs_effective"), int)
        job.macs_dense = _num(payload.get("macs_dense"), int)
        job.fit_seconds = _num(payload.get("fit_seconds"))
        job.epochs = _num(payload.get("epochs"), int)
        job.macs_compact = _num(payload.get("macs_compact"), int)
        job.params_compact = _num(payload.get("params_compact"), int)
        job.exports = load_exports(path)
        seen, total = payload.get("test_samples"), payload.get("test_samples_total")
        if seen is not None and total and seen < total:
            job.test_subset = f"{seen:,} of {total:,}"
    return job


def _is_number(value: Any) -> bool:
    """A JSON number or null (a string, a bool or a list is not)."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


# per-encoding summary.csv columns: <prefix><encoding folder>, e.g. artifact_bytes_kmeans4
EXPORT_FIELDS = {"artifact_bytes_": ("artifact_bytes", int), "ratio_": ("ratio", float),
                 "artifact_test_acc_": ("test_acc", float)}


def load_exports(job_dir: Path) -> dict[str, dict[str, Any]]:
    """``{encoding folder: record}`` from the job's ``export/<encoding>/export.json`` files.

    A record keeps the artifact's bytes, its ratio to the dense fp32 state dict, the dense
    bytes and the test accuracy measured from the file; an unreadable one is skipped (logged).
    """
    out: dict[str, dict[str, Any]] = {}
    base = job_dir / EXPORT_DIR
    if not base.is_dir():
        return out
    for f in sorted(base.glob(f"*/{EXPORT_REPORT}")):
        try:
            rec = _read_json(f)
        except (OSError, ValueError) as err:
            log.warning("%s: unreadable, left out of the report (%s)", f, err)
            continue
        size = _num(rec.get("artifact_bytes"), int)
        if size is None or size <= 0:
            log.warning("%s: no artifact_bytes, left out of the report", f)
            continue
        acc = _num(rec.get("test_acc"))
        out[f.parent.name] = {
            "artifact_bytes": size, "ratio": _num(rec.get("ratio")),
            "dense_bytes": _num(rec.get("dense_bytes"), int),
            "test_acc": acc if acc is not None and 0.0 <= acc <= 1.0 else None,
        }
    return out


def export_columns(jobs: Iterable[Job]) -> list[str]:
    """summary.csv's per-encoding artifact columns for the encodings any job was exported in."""
    encs = sorted({e for j in jobs for e in j.exports}, key=_encoding_order)
    return [prefix + e for e in encs for prefix in EXPORT_FIELDS]


def _encoding_order(enc: str) -> tuple:
    from prunelab.export.codecs import ENCODINGS

    head, _, tail = enc.partition("-")
    return (ENCODINGS.index(head) if head in ENCODINGS else len(ENCODINGS), head, tail)


def export_row(job: Job, columns: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for col in columns:
        prefix = next(p for p in EXPORT_FIELDS if col.startswith(p))
        rec = job.exports.get(col[len(prefix):], {})
        row[col] = rec.get(EXPORT_FIELDS[prefix][0])
    return row


def exports_from_row(row: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The export records a summary.csv row holds (its per-encoding artifact columns)."""
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for col, value in row.items():
        for prefix, (key, kind) in EXPORT_FIELDS.items():
            if col and col.startswith(prefix) and value not in (None, ""):
                out[col[len(prefix):]][key] = _num(value, kind)
    for rec in out.values():  # the dense state dict's size follows from bytes × ratio
        if rec.get("artifact_bytes") and rec.get("ratio"):
            rec["dense_bytes"] = round(rec["artifact_bytes"] * rec["ratio"])
    return {e: r for e, r in out.items() if r.get("artifact_bytes")}


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def load_jobs(root: Path) -> list[Job]:
    return [load_job(p, root) for p in find_job_dirs(root)]


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


# --------------------------------------------------------------------------------------------
# comparing
# --------------------------------------------------------------------------------------------


def _label_extras(jobs: list[Job]) -> None:
    """Give each job what distinguishes it from the others of its kind: the config values that
    differ between them when every job saved its config (so the same configuration launched
    with different overrides, e.g. ``experiment=X`` and X's values spelled out, is one series),
    else the overrides that differ."""
    for dense in (True, False):
        group = [j for j in jobs if j.dense is dense]
        if group and all(j.config for j in group):
            _label_from_configs(group, dense)
            continue
        others = [{o for o in j.overrides if override_key(o) not in _OWN_COLUMNS
                   and not has_no_effect(override_key(o)) and not o.startswith("hydra")}
                  for j in group]
        common = set.intersection(*others) if others else set()
        for j, o in zip(group, others, strict=True):
            j.extra = " ".join(sorted(o - common))


def _own_config_key(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in _OWN_CONFIG_KEYS) \
        or has_no_effect(key) or key.startswith("hydra.")


def _label_from_configs(group: list[Job], dense: bool) -> None:
    """``extra`` from the config keys whose values differ between jobs of the same schedule
    and method (those of different methods are told apart by the series name already, and
    their defaults differ by design); keys some configs lack (older runs) are left out."""
    def scope(j: Job, key: str) -> tuple:
        return (j.schedule, j.method)

    configs = [{k: v for k, v in (j.config or {}).items() if not _own_config_key(k)
                and not (dense and k.startswith("pruning."))} for j in group]
    keys = set.intersection(*(set(c) for c in configs))
    values: dict[tuple, set] = defaultdict(set)
    for j, c in zip(group, configs, strict=True):
        for k in keys:
            values[(k, *scope(j, k))].add(repr(c[k]))
    varying = sorted({k for k in keys for j in group if len(values[(k, *scope(j, k))]) > 1})
    # "n_steps=20" rather than "pruning.n_steps=20" where the last part names one key only
    tails = defaultdict(int)
    for k in varying:
        tails[k.rsplit(".", 1)[-1]] += 1
    for j, c in zip(group, configs, strict=True):
        parts = []
        for k in varying:
            if len(values[(k, *scope(j, k))]) > 1:
                tail = k.rsplit(".", 1)[-1]
                parts.append(f"{tail if tails[tail] == 1 else k}={_plain(c[k])}")
        j.extra = " ".join(parts)


def _plain(v: Any) -> str:
    if isinstance(v, tuple):
        return "[" + ",".join(str(x).strip("'") for x in v) + "]"
    return str(v)


def _series_name(j: Job, multi: dict[str, bool]) -> str:
    parts = [str(j.method)]
    if multi["schedule"] and not j.dense:
        parts.append(f"({j.schedule})")
    if multi["model"] or multi["data"]:
        parts.append(f"[{j.model}/{j.data}]")
    if j.budget and not j.dense:
        parts.append(f"{j.budget.partition('=')[0]} budget")
    if j.extra:
        parts.append(j.extra)
    return " ".join(parts)


def build_points(jobs: list[Job]) -> list[Point]:
    ok = [j for j in jobs if j.status == "ok"]
    multi = {k: len({getattr(j, k) for j in ok if not (k == "schedule" and j.dense)}) > 1
             for k in ("schedule", "model", "data")}
    groups: dict[tuple, list[Job]] = defaultdict(list)
    for j in ok:  # a budget run is one configuration per budget, whatever its amount
        amount = None if j.budget else j.amount
        groups[(j.model, j.data, j.schedule, j.method, amount, j.budget, j.extra)].append(j)
    points = [Point(_series_name(js[0], multi), m, d, s, meth, a, e, sorted(js, key=_seed_key),
                    budget=b)
              for (m, d, s, meth, a, b, e), js in groups.items()]
    return sorted(points, key=lambda p: (p.method != "dense", p.series, p.amount or 0.0,
                                         -_budget_limit(p.budget)))


def _budget_limit(budget: str | None) -> float:
    return float(_num(budget.partition("=")[2]) or 0) if budget else 0.0


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
    for series in dict.fromkeys(p.series for p in points if p.method != "dense" and not p.budget):
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
        subset = [j for j in ok if j.test_subset]
        if subset:
            shown = "; ".join(f"{j.folder}: {j.test_subset}" for j in subset[:3])
            out.append(f"{model}/{data}: {len(subset)} job(s) tested on part of the test set "
                       f"({shown}{'; ...' if len(subset) > 3 else ''} test samples; "
                       "trainer.limit_test_batches, trainer=fast): their test accuracy is an "
                       "estimate, not comparable with a full test")
        if d_ep and p_ep and d_ep != p_ep:
            out.append(f"{model}/{data}: dense runs trained {'/'.join(map(str, d_ep))} epochs, "
                       f"pruned runs {'/'.join(map(str, p_ep))}: not like for like (pruning "
                       "schedules set trainer.max_epochs; pass the same trainer.max_epochs=N "
                       "to the dense and the pruned sweeps)")
    return out


def _job_order(j: Job) -> tuple:
    return (str(j.model), str(j.data), not j.dense, str(j.method), j.extra, str(j.budget),
            j.amount if j.amount is not None else -1.0, _seed_key(j))


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def write_csv(summary: Summary, path: Path) -> None:
    extra = export_columns(summary.jobs)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS + extra)
        w.writeheader()
        for j in summary.jobs:
            row = {**j.row(), **export_row(j, extra)}
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})


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
    where = ", ".join(map(str, s.sources)) if len(s.sources) > 1 else str(s.sweep_dir)
    lines = [f"# Sweep report: {where}", ""]
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

    pruned = [p for p in pts if p.method != "dense" and not p.budget]
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
        lines += ["## Per configuration", "",
                  "Mean ± std over the seeds; weights kept = 100 − sparsity of the pruned layers; "
                  "budget runs are listed by their budget.", ""]
        rows = [[p.series, p.setting, str(p.n), _pm(p.mean("test_acc"), p.std("test_acc")),
                 _error_pm(p), _signed(p.mean("drop_pts")), _pct(p.mean("sparsity_global")),
                 _kept(p.mean("sparsity_global")), _count(p.mean("params_nonzero")),
                 _count(p.mean("macs_effective")), _epochs(p), f"{p.mean('fit_seconds') or 0:.1f}"]
                for p in pts]
        lines += _table(["method", "amount", "seeds", "test acc %", "test error %", "drop pts",
                         "sparsity %", "weights kept %", "non-zero params", "effective MACs",
                         "epochs", "fit s"], rows) + [""]
    lines += _budget_md(pts)

    lines += _artifacts_md(pts)
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
    rows = [[j.folder, j.status, str(j.method), "" if j.amount is None else j.setting,
             "" if j.seed is None else str(j.seed), _pct(j.test_acc), _signed(j.drop_pts),
             _pct(j.sparsity_global, 1), _count(j.params_nonzero), _count(j.macs_effective),
             "" if j.fit_seconds is None else f"{j.fit_seconds:.1f}"] for j in jobs]
    lines += _table(["folder", "status", "method", "amount", "seed", "test acc %", "drop pts",
                     "sparsity %", "non-zero params", "effective MACs", "fit s"], rows)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def _error_pm(p: Point) -> str:
    """Test error % mean ± std over seeds (the std of the error is that of the accuracy)."""
    acc = p.mean("test_acc")
    return "—" if acc is None else f"{100 * (1 - acc):.2f} ± {100 * (p.std('test_acc') or 0):.2f}"


def _kept(sparsity: float | None) -> str:
    if sparsity is None:
        return "—"
    kept = 100 * (1 - sparsity)
    return f"{kept:.2f}" if kept < 10 else f"{kept:.1f}"


def _epochs(p: Point) -> str:
    eps = sorted({j.epochs for j in p.jobs if j.epochs is not None})
    return "/".join(map(str, eps)) or "—"


def _budget_md(points: list[Point]) -> list[str]:
    """Budget runs: the budget asked for, the cost reached and the compacted network's size."""
    pts = [p for p in points if p.budget]
    if not pts:
        return []
    lines = ["## Budget runs", "",
             "`pruning.budget.<metric>=N`: filters/neurons are removed until the network fits N; "
             "the schedule's `amount` only shaped the steps, so these runs are listed by budget. "
             "Reached: the cost model's count after the last step (= the compacted network's "
             "when compacted). Means over the seeds.", ""]
    rows = [[p.series, p.setting, str(p.n), _count(p.mean("budget_reached")),
             _count(p.mean("macs_compact")), _count(p.mean("params_compact")),
             _pm(p.mean("test_acc"), p.std("test_acc")), _error_pm(p),
             _kept(p.mean("sparsity_global")), _epochs(p)] for p in pts]
    return lines + _table(["method", "budget", "seeds", "reached", "compact MACs",
                           "compact params", "test acc %", "test error %", "weights kept %",
                           "epochs"], rows) + [""]


def export_mean(p: Point, enc: str, key: str) -> float | None:
    """Mean over the point's seeds of an export record's value (those exported in ``enc``)."""
    vals = [float(v) for j in p.jobs if (v := j.exports.get(enc, {}).get(key)) is not None]
    return statistics.fmean(vals) if vals else None


def _encodings(points: Iterable[Point]) -> list[str]:
    return sorted({e for p in points for j in p.jobs for e in j.exports}, key=_encoding_order)


def _artifacts_md(points: list[Point]) -> list[str]:
    """The table of shipped artifacts: bytes and the accuracy measured from each file."""
    encs = _encodings(points)
    if not encs:
        return []
    lines = ["## Artifacts: test accuracy vs bytes", "",
             "From each job's `export/<encoding>/export.json` (written by `prunelab export RUN`): "
             "the artifact's size, how many times smaller than the dense fp32 state dict it is, "
             "and the test accuracy measured from the file; means over the seeds exported.", ""]
    rows = []
    for p in points:
        for enc in encs:
            n = sum(enc in j.exports for j in p.jobs)
            if not n:
                continue
            size, ratio = export_mean(p, enc, "artifact_bytes"), export_mean(p, enc, "ratio")
            rows.append([p.series, p.setting, enc, str(n),
                         f"{size:,.0f}", "—" if ratio is None else f"{ratio:.1f}",
                         _pct(export_mean(p, enc, "test_acc")), _pct(p.mean("test_acc"))])
    return lines + _table(["method", "amount", "encoding", "seeds", "artifact bytes",
                           "× smaller", "artifact test acc %", "run test acc %"], rows) + [""]


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


# Plots: test error on a log axis against the weights kept on a log axis (100 % on the left,
# sparsity growing to the right), so 90-99.9 % sparsity and 0.5-2 % error get the room they need.
KEPT_TICKS = [100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01]
KEPT_TICKS_FINE = [100, 80, 70, 60, 50, 40, 30, 20, 15, 10, 7, 5, 3, 2, 1.5, 1, 0.7, 0.5, 0.3,
                   0.2, 0.1]
ERR_TICKS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]
# for a narrow range (e.g. 13-18 % error): enough labelled ticks to read values off
ERR_TICKS_FINE = sorted({round(m * 10.0 ** e, 4) for e in range(-2, 3)
                         for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8)})
ERR_FLOOR = 0.01  # % error: where a perfect score is drawn on the log axis


def _num_label(x: float) -> str:
    return f"{x:g}"


def _err(acc: float | None) -> float | None:
    return None if acc is None else max(100.0 * (1.0 - acc), ERR_FLOOR)


def _err_bars(points: list[Point]) -> tuple[list[float], list[list[float]]]:
    """Test error (%) of each point and its ± one std over seeds, clipped above zero."""
    ys, lo, hi = [], [], []
    for p in points:
        y = _err(p.mean("test_acc"))
        sd = 100.0 * (p.std("test_acc") or 0.0)
        ys.append(y)
        lo.append(min(sd, y - ERR_FLOOR / 2))
        hi.append(sd)
    return ys, [lo, hi]


def _error_axis(ax: Any, values: list[float]) -> None:
    """Log test-error axis with plain tick labels, and the matching accuracy on the right."""

    ax.set_yscale("log")
    lo, hi = min(values), max(values)
    ymin, ymax = max(lo / 1.6, ERR_FLOOR / 2), min(hi * 1.6, 130.0)
    ax.set_ylim(ymin, ymax)
    ticks = [t for t in ERR_TICKS if ymin <= t <= ymax]
    if len(ticks) < 4:
        ticks = [t for t in ERR_TICKS_FINE if ymin <= t <= ymax and t <= 100]
    _percent_ticks(ax.yaxis, ticks, complement=False)
    ax.set_ylabel("test error (%), log scale — lower is better")
    right = ax.secondary_yaxis("right")
    _percent_ticks(right.yaxis, ticks, complement=True)
    right.set_ylabel("test accuracy (%)")


def _percent_ticks(axis: Any, ticks: list[float], complement: bool) -> None:
    """Fixed percent ticks on a log axis; ``complement`` labels 100 − t (accuracy, sparsity)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(
        (lambda v, _: _num_label(round(100 - v, 3))) if complement else (lambda v, _: _num_label(v))))
    axis.set_minor_locator(NullLocator())


def _kept_axis(ax: Any, kept: list[float]) -> None:
    """Log axis of the weights kept, 100 % on the left; sparsity labelled along the top."""

    ax.set_xscale("log")
    right = min(kept) / 1.5
    ax.set_xlim(130.0, right)  # inverted: fewer weights kept = further right
    ticks = [t for t in KEPT_TICKS if right <= t <= 100]
    if len(ticks) < 4:
        ticks = [t for t in KEPT_TICKS_FINE if right <= t <= 100]
    _percent_ticks(ax.xaxis, ticks, complement=False)
    ax.set_xlabel("weights kept (% of the pruned layers' weights), log scale")
    top = ax.secondary_xaxis("top")
    _percent_ticks(top.xaxis, ticks, complement=True)
    top.set_xlabel("sparsity (% of those weights zero)")


def _macs_axis(ax: Any, macs: list[float]) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax.set_xscale("log")
    ax.set_xlim(max(macs) * 1.4, min(macs) / 1.4)  # inverted: cheaper = further right
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _count(x)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("effective multiply-accumulates per example (non-zero weights only), log scale")


def _pairs(summary: Summary) -> list[tuple[str | None, str | None]]:
    return sorted({(p.model, p.data) for p in summary.points}, key=str)


SERIES_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def plot_pair(summary: Summary, model: str | None, data: str | None, kind: str,
              note: str = "") -> Any:
    """One figure: test error vs weights kept (``kind="sparsity"``) or vs effective MACs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [p for p in summary.points if (p.model, p.data) == (model, data)]
    pruned = [p for p in pts if p.method != "dense"]
    dense = [p for p in pts if p.method == "dense"]
    n_series = len({p.series for p in pruned})
    crowded = n_series > 6  # the legend goes beside the axes, where it hides no point
    fig, ax = plt.subplots(figsize=(13.5 if crowded else 8.5, 5.8), dpi=110)
    xattr = "sparsity_global" if kind == "sparsity" else "macs_effective"

    def x_of(p: Point) -> float | None:
        v = p.mean(xattr)
        if v is None:
            return None
        return 100.0 * (1.0 - v) if kind == "sparsity" else v

    xs_all: list[float] = []
    ys_all: list[float] = []
    for i, series in enumerate(dict.fromkeys(p.series for p in pruned)):
        sp = sorted((p for p in pruned if p.series == series and x_of(p) and p.mean("test_acc")
                     is not None), key=lambda p: -x_of(p))
        if not sp:
            continue
        ys, yerr = _err_bars(sp)
        xs = [x_of(p) for p in sp]
        seeds = "/".join(sorted({str(p.n) for p in sp}))
        eps = "/".join(sorted({_epochs(p) for p in sp}))
        # colour, marker and line style cycle at different lengths: no two series look alike
        ax.errorbar(xs, ys, yerr=yerr, marker=SERIES_MARKERS[i % len(SERIES_MARKERS)], ms=5,
                    capsize=3, lw=1.4, ls=("-", "--", ":")[i // 10 % 3], color=f"C{i % 10}",
                    label=f"{series} ({eps} epochs; seeds per point: {seeds})")
        for p, x, y in zip(sp, xs, ys, strict=True):
            if p.budget:  # a budget run is known by its budget: say it at the point
                ax.annotate(p.setting, (x, y), textcoords="offset points", xytext=(6, 6),
                            fontsize=7, color=f"C{i % 10}")
        xs_all += xs
        ys_all += ys
    st = summary.baseline.stats(model, data)
    if st is not None:
        mean, std, n = st
        e = _err(mean)
        ax.axhspan(max(e - 100 * std, ERR_FLOOR / 2), e + 100 * std, color="0.2", alpha=0.13,
                   lw=0)
        ax.axhline(e, color="0.2", ls="--", lw=1,
                   label=f"dense: {100 * mean:.2f} ± {100 * std:.2f} % accuracy ({n} seed(s))")
        ys_all += [e, e + 100 * std]
        dx = [x_of(p) for p in dense if x_of(p)]
        if dx:
            ax.plot([dx[0]], [e], marker="*", ms=13, color="0.2", ls="none")
            xs_all += dx
    if kind == "sparsity":
        xs_all.append(100.0)
    if not xs_all or not ys_all:
        ax.text(0.5, 0.5, "no finished job", ha="center", va="center", transform=ax.transAxes)
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        _error_axis(ax, ys_all)
        (_kept_axis if kind == "sparsity" else _macs_axis)(ax, xs_all)
    vs = "weights kept" if kind == "sparsity" else "effective MACs"
    legend = (dict(fontsize=8, loc="upper left", bbox_to_anchor=(1.13, 1.0)) if crowded
              else dict(fontsize=8, loc="upper left"))
    return _finish(fig, ax, summary, model, data, f"test error vs {vs}", note, legend=legend)


def plot_bytes(summary: Summary, model: str | None, data: str | None, note: str = "") -> Any:
    """Test error measured from each artifact vs its size in bytes (log-log), one series per
    method and encoding; the dense fp32 state dict marked at its size and the dense accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [p for p in summary.points if (p.model, p.data) == (model, data)]
    fig, ax = plt.subplots(figsize=(8.5, 5.8), dpi=110)
    xs_all: list[float] = []
    ys_all: list[float] = []
    markers = "osD^vP*Xh<>"
    series = [(name, enc) for name in dict.fromkeys(p.series for p in pts)
              for enc in _encodings(p for p in pts if p.series == name)]
    for i, (name, enc) in enumerate(series):
        xy = [(export_mean(p, enc, "artifact_bytes"), _err(export_mean(p, enc, "test_acc")))
              for p in pts if p.series == name]
        xy = sorted((x, y) for x, y in xy if x is not None and y is not None)
        if not xy:
            continue
        ax.plot([x for x, _ in xy], [y for _, y in xy], marker=markers[i % len(markers)], ms=5,
                lw=1.2, color=f"C{i % 10}", label=f"{name} · {enc}")
        xs_all += [x for x, _ in xy]
        ys_all += [y for _, y in xy]
    dense_bytes = [v for p in pts for j in p.jobs for r in j.exports.values()
                   if (v := r.get("dense_bytes"))]
    if dense_bytes:
        db = statistics.median(dense_bytes)
        st = summary.baseline.stats(model, data)
        ax.axvline(db, color="0.2", ls=":", lw=1)
        if st is not None:
            e = _err(st[0])
            ax.plot([db], [e], marker="*", ms=14, color="0.2", ls="none",
                    label=f"dense fp32 state dict: {_count(db)}B, {100 * st[0]:.2f} % accuracy")
            ys_all.append(e)
        else:
            ax.plot([], [], color="0.2", ls=":", label=f"dense fp32 state dict: {_count(db)}B")
        xs_all.append(db)
    if not xs_all or not ys_all:
        ax.text(0.5, 0.5, "no exported artifact", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_yscale("log")
    else:
        _error_axis(ax, ys_all)
        ax.set_xlim(min(xs_all) / 1.5, max(xs_all) * 1.5)
    _bytes_axis(ax)
    return _finish(fig, ax, summary, model, data, "test error of the shipped file vs its size",
                   note, legend=dict(fontsize=7, loc="upper right"))


def _finish(fig: Any, ax: Any, summary: Summary, model: str | None, data: str | None,
            what_vs: str, note: str, legend: dict[str, Any]) -> Any:
    """Title (sweep name, model and data), grid, legend and the footnote of a report plot."""
    what = f"{model} on {data}" if model or data else "all jobs"
    name = summary.name
    name = name if len(name) <= 40 else name[:37] + "…"
    ax.set_title(f"{name}: {what} — {what_vs}", fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(framealpha=0.9, **legend)
    lines = textwrap.wrap(note, 170) if note else []
    if lines:
        fig.text(0.01, 0.005, "\n".join(lines), fontsize=6.5, color="0.35", ha="left",
                 va="bottom")
    fig.tight_layout(rect=(0, 0.022 * len(lines), 1, 1))
    return fig


def _bytes_axis(ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _count(x) + "B"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("artifact size (bytes, everything included), log scale — smaller is better")


def plot(summary: Summary, out_dir: Path, note: str = "") -> list[Path]:
    """acc_vs_sparsity.png and acc_vs_macs.png (one pair of files per model/data), and
    acc_vs_bytes.png where jobs have exported artifacts."""
    import matplotlib.pyplot as plt

    pairs = _pairs(summary) or [(None, None)]
    files = []
    for model, data in pairs:
        tag = "" if len(pairs) == 1 else f"_{model}_{data}"
        for kind, stem in (("sparsity", "acc_vs_sparsity"), ("macs", "acc_vs_macs")):
            fig = plot_pair(summary, model, data, kind, note)
            path = out_dir / f"{stem}{tag}.png"
            fig.savefig(path)
            plt.close(fig)
            files.append(path)
        if _encodings(p for p in summary.points if (p.model, p.data) == (model, data)):
            fig = plot_bytes(summary, model, data, note)
            path = out_dir / f"acc_vs_bytes{tag}.png"
            fig.savefig(path)
            plt.close(fig)
            files.append(path)
    return files


# --------------------------------------------------------------------------------------------
# re-plotting from a summary.csv (when the job folders are gone)
# --------------------------------------------------------------------------------------------


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


def _note(source: str | Path, command: str) -> str:
    """The footnote of a figure: where its numbers come from, the command, the date."""
    import datetime

    day = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"data: {source}  ·  made by: {command}  ·  {day}"


def report(sweep_dir: str | Path | Sequence[str | Path], baseline: Sequence[str | Path] = (),
           out: str | Path | None = None, delta: float = 0.5, skip_missing: bool = False,
           command: str | None = None, title: str | None = None) -> Summary:
    """Write summary.csv, summary.md, acc_vs_sparsity.png and acc_vs_macs.png (and
    acc_vs_bytes.png where jobs were exported); return the data. Several folders pool their
    jobs into one report, written into ``out`` (required then). ``command``: the command line
    the plots' footnote names (default: the equivalent ``python -m prunelab report ...``)."""
    roots = _roots(sweep_dir)
    if out is None and len(roots) > 1:
        raise ReportError("several folders: give --out DIR for the pooled report")
    summary = summarize(roots, baseline, delta, skip_missing)
    summary.title = title
    out_dir = Path(out) if out is not None else summary.sweep_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    log.debug("%d jobs read; writing the table and plots into %s", len(summary.jobs), out_dir)
    write_csv(summary, out_dir / "summary.csv")
    if command is None:
        import shlex

        command = "python -m prunelab report " + " ".join(shlex.quote(str(r)) for r in roots)
        command += "".join(f" --baseline {shlex.quote(str(b))}" for b in baseline)
    source = " + ".join(str(r) for r in summary.sources) or summary.sweep_dir
    plots = plot(summary, out_dir, _note(source, command))
    (out_dir / "summary.md").write_text(markdown(summary, [p.name for p in plots]))
    summary.files = [out_dir / "summary.csv", out_dir / "summary.md", *plots]
    return summary


def replot(csv_path: str | Path, out: str | Path | None = None, delta: float = 0.5) -> Summary:
    """Only the plots, from a summary.csv: for reports whose job folders are gone."""
    summary = summarize_csv(csv_path, delta)
    out_dir = Path(out) if out is not None else Path(csv_path).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    summary.files = plot(summary, out_dir,
                         _note(csv_path, f"python -m prunelab report --from-csv {csv_path}"))
    return summary


if __name__ == "__main__":  # not a command: say where the command is, rather than do nothing
    import sys

    print("python -m prunelab.report: error: a library module, not a command; the command is "
          "python -m prunelab report ...", file=sys.stderr)
    sys.exit(2)
