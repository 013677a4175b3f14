"""The few lines a run ends on: what came out, where it is, and what to type next.

Built from the values in the run's ``results.json`` (never recomputed), so the terminal and the
file always agree. Logged through ``prunelab.summary``, which even ``verbosity=quiet`` shows.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prunelab.cli.invocation import DATA_ENV, ENV_KEYS, Invocation, allow_target_args
from prunelab.messages import SUMMARY_LOGGER, get_logger
from prunelab.paths import RESULTS, last_checkpoint

log = get_logger(SUMMARY_LOGGER)

# how the run came about, decided before it started (see :func:`run_state`)
FRESH, RESUMED, DONE_ALREADY = "finished", "resumed and finished", "done already (not repeated)"
STRUCTURED = {"ln_structured", "random_structured"}
# under the commands, not after one: a pasted line must be the command alone
RESUME_NOTE = "(resume / repeat continues an interrupted run; delete results.json to train again)"


def run_state(run_dir: str | Path, ckpt_path: Any = "last") -> str:
    """Whether ``run_dir`` is done already, will resume from its last.ckpt, or starts fresh."""
    run_dir = Path(run_dir)
    if (run_dir / RESULTS).exists():
        return DONE_ALREADY
    if ckpt_path == "last" and last_checkpoint(run_dir).exists():
        return RESUMED
    if ckpt_path not in (None, "", "null", "none", "last"):
        return RESUMED
    return FRESH


def _pct(x: Any, digits: int = 2) -> str:
    return "—" if x is None else f"{100 * float(x):.{digits}f} %"


def _count(x: Any) -> str:
    if x is None:
        return "—"
    x = float(x)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.0f}"


def _of(part: Any, whole: Any, exact: bool = False) -> str:
    if part is None:
        return "—"
    text = f"{int(part):,}" if exact else _count(part)
    if whole:
        text += f" of {int(whole):,}" if exact else f" of {_count(whole)}"
        text += f" ({100 * float(part) / float(whole):.1f} %)"
    return text


def _seconds(s: Any) -> str:
    if s is None:
        return "—"
    s = float(s)
    if s < 120:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m // 60} h {m % 60:02d} min" if m >= 60 else f"{m} min {sec:02d} s"


def shown_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def rows(results: dict[str, Any], state: str = FRESH) -> list[tuple[str, str]]:
    """The (label, value) rows of the run summary, every value from ``results``."""
    r = results
    dense = r.get("schedule") in (None, "none") or r.get("method") == "dense"
    out = [("status", f"{r.get('status', '?')} — {state}")]
    what = f"{r.get('model', '?')} on {r.get('data', '?')}"
    what += ", dense (no pruning)" if dense else (
        f", {r.get('method')} pruning, {r.get('schedule')} schedule")
    out.append(("run", what + f", seed {r.get('seed', '?')}"))
    acc = _pct(r.get("test_acc"))
    seen, total = r.get("test_samples"), r.get("test_samples_total")
    if seen is not None and total and seen < total:  # trainer.limit_test_batches, trainer=fast
        acc += f" on {int(seen):,} of {int(total):,} test samples"
    if r.get("test_loss") is not None:
        acc += f"  (loss {float(r['test_loss']):.4f})"
    out.append(("test accuracy", acc))
    if r.get("int8_test_acc") is not None:  # quantize=ptq|qat
        out.append(("int8 test accuracy", f"{_pct(r['int8_test_acc'])} "
                                          f"(quantize={(r.get('quantize') or {}).get('method')})"))
    if not dense:
        out.append(("sparsity", f"{_pct(r.get('sparsity_global'))} of the targeted weights "
                                f"are zero (target {_pct(r.get('amount'))})"))
    out.append(("non-zero params", _of(r.get("params_nonzero"), r.get("params_total"), exact=True)))
    if r.get("macs_effective") is not None:
        out.append(("effective MACs", _of(r.get("macs_effective"), r.get("macs_dense"))
                    + " per example"))
    if r.get("params_compact") is not None:
        out.append(("compact model", f"{_of(r.get('params_compact'), r.get('params_total'))} "
                                     f"params, {_count(r.get('macs_compact'))} MACs"))
    lat = r.get("latency_ms") or {}
    if lat.get("dense") and lat.get("compact"):
        parts = []
        for bs in lat["dense"]:
            d, c = lat["dense"].get(bs), lat["compact"].get(bs)
            if d and c:
                parts.append(f"{bs}: {d:.3g} → {c:.3g} ms ({d / c:.2f}×)")
        out.append(("latency dense → compact", "; ".join(parts) + " on CPU"))
    epochs = r.get("epochs")
    fit = _seconds(r.get("fit_seconds"))
    if epochs is not None:
        fit += f" ({epochs} epoch{'' if epochs == 1 else 's'})"
    out.append(("fit time", fit))
    return out


def next_commands(results: dict[str, Any], run_dir: str | Path,
                  overrides: Sequence[str] | None = None,
                  invocation: Invocation | None = None) -> list[tuple[str, str]]:
    """What a user types next: evaluate, report, compact (structured runs), export, resume;
    each written the way this run was started (:mod:`prunelab.cli.invocation`), so it runs as
    printed."""
    ov = overrides if overrides is not None else results.get("overrides") or []
    # PRUNELAB_DATA is the run's data folder only when data_dir was not given
    given = any(str(o).startswith("data_dir=") for o in ov)
    inv = invocation or Invocation.current([k for k in ENV_KEYS
                                            if not (given and k == DATA_ENV)])
    d = shown_path(run_dir)
    allow = allow_target_args(run_dir)  # the tools that rebuild the run's model need them
    cmds = [("evaluate", inv.command("evaluate", d, *allow)),
            ("report", inv.command("report", d))]
    if results.get("method") in STRUCTURED and results.get("params_compact") is None:
        cmds.append(("compact", inv.command("compact", d, *allow)))
    cmds.append(("export", inv.command("export", d, *allow)))
    cmds.append(("resume / repeat", inv.train(ov)))
    return cmds


def render(results: dict[str, Any], run_dir: str | Path, overrides: Sequence[str] | None = None,
           state: str = FRESH, width: int | None = None) -> str:
    """The summary as text: a small table, the run directory and the next commands."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    width = width or min(max(shutil.get_terminal_size((100, 20)).columns, 60), 110)
    table = Table(show_header=False, box=box.SIMPLE_HEAD, pad_edge=False,
                  title="prunelab: run summary", title_justify="left")
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value")
    for label, value in rows(results, state):
        table.add_row(label, value)
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False,
                      highlight=False)
    console.print(table)
    lines = [ln.rstrip() for ln in buf.getvalue().rstrip().splitlines()]
    lines.append(f"run directory: {shown_path(run_dir)}")
    lines += [f"  {label + ':':<17} {cmd}" for label, cmd in next_commands(results, run_dir,
                                                                         overrides)]
    lines.append(f"  {'':<17} {RESUME_NOTE}")
    return "\n".join(lines)


def show(results: dict[str, Any] | None, run_dir: str | Path,
         overrides: Sequence[str] | None = None, state: str = FRESH) -> None:
    """Log the summary of a finished (or already finished) run."""
    if not results:
        return
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return
    log.info(render(results, run_dir, overrides, state))


def stored_results(run_dir: str | Path, fallback: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The run's results.json as written (``fallback`` when there is none, e.g. on rank > 0)."""
    import json

    path = Path(run_dir) / RESULTS
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return fallback
