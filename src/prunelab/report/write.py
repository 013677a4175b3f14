"""``report(...)`` and ``replot(...)``: a report's files (summary.csv, summary.md and the plots,
and for a search its Pareto front: pareto.png, pareto.csv) from its folders, or the plots only
from a summary.csv."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prunelab.io import atomic_write
from prunelab.messages import get_logger
from prunelab.report import pareto
from prunelab.report.load import load_jobs
from prunelab.report.plots import plot
from prunelab.report.records import ReportError, Summary
from prunelab.report.summary import _roots, summarize, summarize_csv
from prunelab.report.tables import markdown, write_csv

log = get_logger(__name__)


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
    files, sections = [], []
    summary.front = pareto.find_front(summary, _baseline_jobs(baseline))
    if summary.front is not None:  # a search: its Pareto front (prunelab.report.pareto)
        front_plot = pareto.plot(summary.front, out_dir, summary.name, _note(source, command))
        plots = [front_plot, *plots] if front_plot else plots
        pareto.write_csv(summary.front, summary.jobs, out_dir / pareto.TABLE)
        files.append(out_dir / pareto.TABLE)
        sections = pareto.markdown(summary.front)
    atomic_write(out_dir / "summary.md", markdown(summary, [p.name for p in plots], sections))
    summary.files = [out_dir / "summary.csv", out_dir / "summary.md", *files, *plots]
    return summary


def _baseline_jobs(dirs: Sequence[str | Path]) -> list:
    """The jobs of the ``--baseline`` folders (their dense runs give a front its dense point)."""
    return [j for d in dirs if Path(d).is_dir() for j in load_jobs(Path(d))]


def replot(csv_path: str | Path, out: str | Path | None = None, delta: float = 0.5) -> Summary:
    """Only the plots, from a summary.csv: for reports whose job folders are gone."""
    summary = summarize_csv(csv_path, delta)
    out_dir = Path(out) if out is not None else Path(csv_path).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    summary.files = plot(summary, out_dir,
                         _note(csv_path, f"python -m prunelab report --from-csv {csv_path}"))
    return summary
