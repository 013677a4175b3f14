"""Reading job folders: results.json / failed.json / .hydra (finished, failed, diverged or
incomplete, none dropped) and the per-encoding export records, into :class:`Job` records."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from prunelab.messages import get_logger
from prunelab.objectives import value_of
from prunelab.paths import (
    EXPORT_DIR,
    EXPORT_REPORT,
    FAILED,
    HYDRA_CONFIG,
    HYDRA_DIR,
    HYDRA_OVERRIDES,
    RESULTS,
    last_checkpoint,
)
from prunelab.report.records import Job, _num
from prunelab.results import NUMBER_KEYS

log = get_logger(__name__)
MAX_DEPTH = 4  # job folders lie one level down (grids) or two (search-<method>/amount=<a>)


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


def flatten_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"dotted.key": leaf}`` (lists as tuples; descriptions left out)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k != "description":
                out.update(flatten_config(v, f"{prefix}{k}."))
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

        # lazy: Hydra and torch (the saved config's reader), for job folders only
        from prunelab.components import component_name
        from prunelab.config import register
        from prunelab.loading import read_run_config

        register()  # prunelab's resolvers
        if (hydra_dir / HYDRA_OVERRIDES).is_file():
            overrides = [str(o) for o in OmegaConf.load(hydra_dir / HYDRA_OVERRIDES)]
        if (hydra_dir / HYDRA_CONFIG).is_file():
            cfg = read_run_config(hydra_dir / HYDRA_CONFIG)  # an older release's: converted
            for name, key in [("model", "model.name"), ("data", "data.name"),
                              ("amount", "pruning.schedule.amount"), ("seed", "seed")]:
                meta[name] = OmegaConf.select(cfg, key, default=None,
                                              throw_on_resolution_failure=False)
            plain = OmegaConf.to_container(cfg, resolve=False)
            nodes = plain.get("pruning") or {}
            meta["schedule"] = component_name(nodes.get("schedule"))
            meta["method"] = component_name(nodes.get("method"))
            meta["budget"] = _config_budget((plain.get("pruning") or {}).get("budget"))
            if isinstance(plain.get("objectives"), list):
                meta["objectives"] = [str(o) for o in plain["objectives"]]
            meta["config"] = flatten_config(plain)
    except Exception:  # a half-written or foreign .hydra folder: fall back to what we have
        pass
    return meta, overrides


def _override_meta(overrides: Iterable[str]) -> dict[str, Any]:
    """The same fields from ``key=value`` overrides, when no config was saved."""
    keys = {"model": "model", "data": "data", "pruning": "schedule", "pruning/method": "method",
            "pruning.schedule.amount": "amount", "pruning.amount": "amount", "seed": "seed"}
    meta: dict[str, Any] = {}
    for o in overrides:
        k, _, v = o.lstrip("+~").partition("=")
        if k in keys:
            meta[keys[k]] = v
    return meta


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
    job.objectives = meta.get("objectives")
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
        job.numbers = {k: v for k in sorted(NUMBER_KEYS) if (v := value_of(payload, k)) is not None}
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
        job.exports = load_exports(path, job.export_notes)
        job.latency_ms = _eager_latency(payload.get("latency_ms"))
        seen, total = payload.get("test_samples"), payload.get("test_samples_total")
        if seen is not None and total and seen < total:
            job.test_subset = f"{seen:,} of {total:,}"
    return job


def _eager_latency(value: Any) -> dict[str, dict[str, float]] | None:
    """results.json's ``latency_ms`` (``pruning.compact=true``: the dense, masked and compacted
    networks in eager PyTorch per batch size), positive numbers only; None without one."""
    if not isinstance(value, dict):
        return None
    out = {model: {bs: ms for bs, v in per.items()
                   if (ms := _num(v)) is not None and 0 < ms < float("inf")}
           for model, per in value.items() if isinstance(per, dict)}
    return out if out.get("dense") else None


def _is_number(value: Any) -> bool:
    """A JSON number or null (a string, a bool or a list is not)."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


# per-encoding summary.csv columns: <prefix><encoding folder>, e.g. artifact_bytes_kmeans4
EXPORT_FIELDS = {"artifact_bytes_": ("artifact_bytes", int), "ratio_": ("ratio", float),
                 "artifact_test_acc_": ("test_acc", float)}
# the batch sizes of a deployable file's latency (export.json's latency_ratio {"bs256": r, ...})
LATENCY_BATCHES = ("bs256", "bs1")
# ... and their columns, for the formats some job has a latency of
LATENCY_FIELDS = {f"latency_ratio_{bs}_": (f"latency_ratio_{bs}", float) for bs in LATENCY_BATCHES}


def load_exports(job_dir: Path, problems: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{encoding folder: record}`` from the job's ``export/<encoding>/export.json`` files.

    A record keeps the artifact's bytes, its ratio to the dense fp32 state dict, the dense
    bytes, the test accuracy measured from the file, and for a deployable file its runtime,
    whether it holds the compacted network, and its latency ratio to the dense fp32 file in
    that runtime per batch size. What is wrong with a record goes to ``problems`` (and the log):
    an unreadable one or one without bytes is left out, a bad value is left blank, an export
    folder without export.json (an export that did not finish) is named.
    """
    out: dict[str, dict[str, Any]] = {}
    problems = [] if problems is None else problems
    base = job_dir / EXPORT_DIR

    def note(path: Path, what: str) -> None:
        problems.append(f"{path.relative_to(job_dir).as_posix()}: {what}")
        log.warning("%s: %s", path, what)

    if not base.is_dir():
        return out
    for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        f = folder / EXPORT_REPORT
        if not f.is_file():
            note(folder, f"no {EXPORT_REPORT} (the export did not finish), left out")
            continue
        try:
            rec = _read_json(f)
        except (OSError, ValueError) as err:
            note(f, f"unreadable ({err}), left out")
            continue
        size = _num(rec.get("artifact_bytes"), int)
        if size is None or size <= 0:
            note(f, "no artifact_bytes, left out")
            continue
        acc = _num(rec.get("test_acc"))
        runtime = rec.get("runtime")
        out[folder.name] = {
            "artifact_bytes": size, "ratio": _num(rec.get("ratio")),
            "dense_bytes": _num(rec.get("dense_bytes"), int),
            "test_acc": acc if acc is not None and 0.0 <= acc <= 1.0 else None,
            "runtime": next(iter(runtime), None) if isinstance(runtime, dict) else None,
            "compacted": bool(rec.get("compacted_from")),
            **_latency(rec, f, note),
        }
        if acc is not None and out[folder.name]["test_acc"] is None:
            note(f, f"test_acc {rec.get('test_acc')!r} is not an accuracy, left blank")
    return out


def _latency(rec: dict[str, Any], path: Path, note: Any) -> dict[str, float]:
    """``latency_ratio_<bs>`` of a record whose ``latency_ratio`` holds positive numbers."""
    ratios = rec.get("latency_ratio")
    if ratios is None:
        return {}
    if not isinstance(ratios, dict):
        note(path, f"latency_ratio {ratios!r} is not a mapping of batch sizes, left blank")
        return {}
    out = {}
    for bs in LATENCY_BATCHES:
        if bs not in ratios:
            continue
        r = _num(ratios[bs])
        if r is None or not 0 < r < float("inf"):
            note(path, f"latency_ratio[{bs}] {ratios[bs]!r} is not a positive number, left blank")
            continue
        out[f"latency_ratio_{bs}"] = r
    return out


def export_columns(jobs: Iterable[Job]) -> list[str]:
    """summary.csv's per-encoding artifact columns for the encodings any job was exported in,
    and latency columns for those some job has a latency of."""
    jobs = list(jobs)
    encs = sorted({e for j in jobs for e in j.exports}, key=_encoding_order)
    cols = []
    for e in encs:
        cols += [prefix + e for prefix in EXPORT_FIELDS]
        cols += [prefix + e for prefix, (key, _) in LATENCY_FIELDS.items()
                 if any(j.exports.get(e, {}).get(key) is not None for j in jobs)]
    return cols


def _encoding_order(enc: str) -> tuple:
    """The .plx encodings in the codec's order, then the deployable formats in theirs."""
    # lazy: torch, for exported jobs only
    from prunelab.export.codecs import ENCODINGS
    from prunelab.export.deploy import FORMATS

    if enc in FORMATS:
        return (len(ENCODINGS) + FORMATS.index(enc), enc, "")
    head, _, tail = enc.partition("-")
    return (ENCODINGS.index(head) if head in ENCODINGS else len(ENCODINGS) + len(FORMATS),
            head, tail)


def export_row(job: Job, columns: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    fields = {**EXPORT_FIELDS, **LATENCY_FIELDS}
    for col in columns:
        prefix = next(p for p in fields if col.startswith(p))
        rec = job.exports.get(col[len(prefix):], {})
        row[col] = rec.get(fields[prefix][0])
    return row


def exports_from_row(row: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The export records a summary.csv row holds (its per-encoding artifact columns)."""
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for col, value in row.items():
        for prefix, (key, kind) in {**EXPORT_FIELDS, **LATENCY_FIELDS}.items():
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
