"""A sweep that says how far it is and how it ended, with any launcher.

Registered in ``conf/config.yaml`` under ``hydra.callbacks``. Each job, wherever it runs (this
process, a joblib worker, a SLURM node), appends one line to ``<sweep dir>/.prunelab_progress.jsonl``
when it ends (``on_job_end``); the launching process watches that file and logs "job k/N done"
lines while the sweep runs, then the sweep's summary (``on_multirun_end``): jobs done, skipped
(done already), failed and diverged, the failed ones named, and the report command. The
command then exits with :func:`sweep_status`: 0 only when every job succeeded.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from prunelab import messages
from prunelab.cli.invocation import PATH_ENV, Invocation
from prunelab.cli.summary import shown_path
from prunelab.errors import (
    EXIT_BAD_INPUT,
    EXIT_CRASH,
    EXIT_NO_RESULT,
    EXIT_OK,
    exit_status,
    one_line,
)
from prunelab.io import atomic_write
from prunelab.messages import SUMMARY_LOGGER, SWEEP_LOGGERS, get_logger
from prunelab.paths import FAILED, RESULTS

PROGRESS = Path(".prunelab_progress.jsonl")  # a file: sweep folders hold only job folders
log = get_logger(SWEEP_LOGGERS[0])
summary_log = get_logger(SUMMARY_LOGGER)
#: the exit status of the last sweep this process launched (set when it ends; None before), for
#: the entry point to exit with (prunelab.cli.train.main)
last_sweep_status: int | None = None


def count_jobs(config: DictConfig) -> int | None:
    """Jobs a basic-sweeper grid will launch: the product of each swept key's number of values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default="") or "")
    if not sweeper.endswith("BasicSweeper"):
        return None  # other sweepers (optuna, nevergrad ...) decide as they go
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    lines = {str(k): f"{k}={v}" for k, v in params.items()}
    parser = OverridesParser.create()
    try:
        for o in parser.parse_overrides(list(config.hydra.overrides.task)):
            lines[o.get_key_element()] = o.input_line
        total = 1
        for o in parser.parse_overrides(list(lines.values())):
            if o.is_sweep_override():
                total *= len(list(o.sweep_string_iterator()))
        return total
    except Exception:  # a glob or an exotic sweep: no total, progress still counts up
        return None


def job_record(config: DictConfig, value: Any = None,
               error: BaseException | None = None) -> dict[str, Any]:
    """What one finished job reports: its folder, status, exit status and headline numbers.

    ``value`` is what the job returned (:func:`prunelab.cli.train._app`), ``error`` what it
    raised. A job that did not run in its folder (refused, in progress elsewhere, stopped
    before it began) says why in ``value``; its folder, which may hold another run, is not read.
    """
    out_dir = Path(config.hydra.runtime.output_dir)
    try:
        folder = out_dir.relative_to(Path(config.hydra.sweep.dir)).as_posix()
    except ValueError:
        folder = out_dir.name
    value = getattr(value, "record", value)  # prunelab's task function: a JobResult
    value = value if isinstance(value, dict) else {}
    rec: dict[str, Any] = {"folder": folder, "state": value.get("state")}
    if value.get("error"):
        rec.update(status=value.get("status") or "failed", error=value["error"],
                   exit=int(value.get("exit") or EXIT_CRASH))
        return rec
    failed, results = out_dir / FAILED, out_dir / RESULTS
    if results.is_file():
        try:
            r = json.loads(results.read_text())
            rec.update(status=str(r.get("status", "ok")), test_acc=r.get("test_acc"),
                       sparsity=r.get("sparsity_global"), error=r.get("error"))
        except (OSError, ValueError) as err:
            rec.update(status="failed", error=f"results.json unreadable: {err}")
    elif failed.is_file():
        try:
            f = json.loads(failed.read_text())
            rec.update(status=str(f.get("status", "failed")),
                       error=f"{f.get('error_type', 'error')}: {f.get('error', '?')}")
        except (OSError, ValueError):
            rec.update(status="failed", error="failed.json unreadable")
    else:
        rec.update(status="failed", error=(f"{type(error).__name__}: {one_line(error)}"
                                           if error is not None else "no results.json"))
    if error is not None:
        rec["exit"] = exit_status(error)
    elif value.get("exit") is not None:
        rec["exit"] = int(value["exit"])
    else:
        rec["exit"] = EXIT_OK if rec["status"] == "ok" else (
            EXIT_NO_RESULT if rec["status"] == "diverged" else EXIT_CRASH)
    if rec["exit"] == EXIT_OK and rec["status"] != "ok":
        rec["exit"] = EXIT_CRASH  # the job said it ended well, its folder says otherwise
    return rec


def sweep_status(records: list[dict[str, Any]], total: int | None = None) -> int:
    """A sweep's exit status: 0 when every job succeeded (or had finished earlier); else the
    status its failed jobs would have had alone, the most serious first: an unexpected error
    (1), then bad input (2), then a run without a valid result (3). Jobs that did not report
    (killed, or never started) count as runs without a result."""
    codes = {int(r.get("exit", EXIT_OK if r.get("status") == "ok" else EXIT_CRASH))
             for r in records}
    if total is not None and len(records) < total:
        codes.add(EXIT_NO_RESULT)
    for code in (EXIT_CRASH, EXIT_BAD_INPUT, EXIT_NO_RESULT):
        if code in codes:
            return code
    return max(codes - {EXIT_OK}, default=EXIT_OK)


def kind(rec: dict[str, Any]) -> str:
    """done | skipped | failed | diverged | <other status>: how the sweep summary counts a job."""
    status = rec.get("status") or "failed"
    if status != "ok":
        return status
    return "skipped" if rec.get("state", "").startswith("done already") else "done"


def progress_line(k: int, total: int | None, rec: dict[str, Any]) -> str:
    head = f"job {k}/{total}" if total else f"job {k}"
    what = kind(rec)
    text = f"{head} {what}: {rec['folder']}"
    if rec.get("status") == "ok" and rec.get("test_acc") is not None:
        text += f" — test acc {100 * float(rec['test_acc']):.2f} %"
        if rec.get("sparsity") is not None:
            text += f", sparsity {100 * float(rec['sparsity']):.1f} %"
    elif rec.get("error"):
        text += f" — {rec['error']}"
    return text


def summary_lines(sweep_dir: str | Path, records: list[dict[str, Any]],
                  total: int | None, study: bool = False) -> list[str]:
    """The end-of-sweep summary: counts by outcome, the jobs that went wrong, what to run next."""
    counts = Counter(kind(r) for r in records)
    n = total if total is not None else len(records)
    parts = [f"{counts.pop('done', 0)} done", f"{counts.pop('skipped', 0)} skipped (finished earlier)",
             f"{counts.pop('failed', 0)} failed"]
    if counts.get("diverged"):
        parts.append(f"{counts.pop('diverged')} diverged")
    parts += [f"{c} {k}" for k, c in sorted(counts.items())]
    missing = n - len(records)
    if missing > 0:
        parts.append(f"{missing} did not report (killed, or still queued)")
    lines = [f"sweep finished: {n} jobs: " + ", ".join(parts)]
    bad = [r for r in records if r.get("status") != "ok"]
    for r in bad[:20]:
        lines.append(f"  {r.get('status')}: {r['folder']} — {r.get('error') or 'see its folder'}")
    if len(bad) > 20:
        lines.append(f"  … and {len(bad) - 20} more (see the report)")
    lines.append(f"sweep directory: {shown_path(sweep_dir)}")
    report = Invocation.current([PATH_ENV]).command("report", shown_path(sweep_dir))
    lines.append(f"  report: {report}")
    if bad and study:  # an Optuna study (prunelab.study): a failed trial is a finished one
        lines.append("  relaunch the same command to continue the study (its failed trials "
                     "stay failed; interrupted ones resume)")
    elif bad:
        lines.append("  relaunch the same command to retry the failed jobs (finished ones are "
                     "skipped)")
    return lines


def read_records(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line being written right now
    return out


class SweepProgress(Callback):
    """Progress over a sweep's jobs while they run, and the sweep's summary when it ends."""

    def __init__(self, poll_seconds: float = 1.0) -> None:
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown = 0
        self.total: int | None = None
        self.path: Path | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Launchers pickle the callbacks into each job: leave the watcher thread behind."""
        state = dict(self.__dict__)
        state["_stop"], state["_thread"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._stop = threading.Event()

    # ------------------------------------------------------------------ launching process
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with contextlib.suppress(Exception):  # a bad verbosity is reported by each job
            messages.apply(str(OmegaConf.select(config, "verbosity", default="normal")))
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.path = self.sweep_dir / PROGRESS
        atomic_write(self.path, "")  # a new sweep: forget the last launch's jobs
        self.total = count_jobs(config)
        self._shown = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="prunelab-sweep-progress",
                                        daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self._flush()

    def _flush(self) -> list[dict[str, Any]]:
        records = read_records(self.path) if self.path else []
        for rec in records[self._shown:]:
            self._shown += 1
            log.info(progress_line(self._shown, self.total, rec))
        return records

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global last_sweep_status
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
        records = self._flush()
        last_sweep_status = sweep_status(records, self.total)
        study = "optuna" in str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
        summary_log.info("\n".join(summary_lines(self.sweep_dir, records, self.total, study)))

    # ------------------------------------------------------------------ each job
    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if OmegaConf.select(config, "hydra.mode") != RunMode.MULTIRUN:
            return
        # not job_return.return_value: for a failed job Hydra's getter prints "Error executing
        # job" and raises
        value, error = job_return._return_value, None
        if job_return.status == JobStatus.FAILED:  # the task raised: the job failed
            value, error = None, value
        rec = job_record(config, value, error)
        path = Path(config.hydra.sweep.dir) / PROGRESS
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:  # one short line per write: appends do not interleave
            f.write(json.dumps(rec, default=str) + "\n")
