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

The command line is :mod:`prunelab.cli.report`; this package is its library, one module per
stage: :mod:`~prunelab.report.records` (the records every stage shares),
:mod:`~prunelab.report.load` (job folders → jobs), :mod:`~prunelab.report.comparison` (the
dense baseline, series, points), :mod:`~prunelab.report.summary` (one folder, several pooled, or
a summary.csv → a Summary), :mod:`~prunelab.report.tables` (summary.csv, summary.md),
:mod:`~prunelab.report.plots` (the figures) and :mod:`~prunelab.report.write` (``report``,
``replot``: the files). Their names are importable from here.

Plots: test error (log axis; accuracy on the right) against the weights kept (log axis, 100 % on
the left, sparsity along the top) and against the effective MACs; one marker per configuration
with ± one std over seeds, the dense baseline as a dashed line in a band of ± one std.
Jobs exported with ``prunelab export`` (``<job>/export/<encoding>/export.json``) add per-encoding
columns (artifact bytes, ratio to the dense fp32 state dict, test accuracy measured from the
file, and for deployable files their latency ratio to the dense fp32 file in the same runtime),
summary.md's trade-off table (one row per job and variant: dense, masked, compacted, int8 and
each file), acc_vs_bytes.png (test error vs bytes, one series per method and format) and
acc_vs_latency.png (test error vs the latency ratio at batch 256 and 1).
"""

from __future__ import annotations

from prunelab.report.comparison import best_within, build_points, compare, dense_baseline, notes
from prunelab.report.load import (
    EXPORT_FIELDS,
    MAX_DEPTH,
    export_columns,
    export_row,
    exports_from_row,
    find_job_dirs,
    load_exports,
    load_job,
    load_jobs,
)
from prunelab.report.pareto import Front, find_front, shown_value
from prunelab.report.plots import (
    ERR_FLOOR,
    ERR_TICKS,
    ERR_TICKS_FINE,
    KEPT_TICKS,
    KEPT_TICKS_FINE,
    SERIES_MARKERS,
    plot,
    plot_bytes,
    plot_latency,
    plot_pair,
)
from prunelab.report.records import (
    CSV_COLUMNS,
    Baseline,
    Job,
    Point,
    ReportError,
    Summary,
    budget_label,
)
from prunelab.report.records import _count as _count  # used by scripts/make_records.py
from prunelab.report.summary import load_baseline, summarize, summarize_csv
from prunelab.report.tables import _table as _table  # used by scripts/make_records.py
from prunelab.report.tables import export_mean, markdown, write_csv
from prunelab.report.write import replot, report

__all__ = [
    "CSV_COLUMNS", "ERR_FLOOR", "ERR_TICKS", "ERR_TICKS_FINE", "EXPORT_FIELDS", "Front", "KEPT_TICKS",
    "KEPT_TICKS_FINE", "MAX_DEPTH", "SERIES_MARKERS", "Baseline", "Job", "Point", "ReportError",
    "Summary", "best_within", "budget_label", "build_points", "compare", "dense_baseline",
    "export_columns", "export_mean", "export_row", "exports_from_row", "find_front", "find_job_dirs",
    "load_baseline", "load_exports", "load_job", "load_jobs", "markdown", "notes", "plot",
    "plot_bytes", "plot_latency", "plot_pair", "replot", "report", "shown_value", "summarize", "summarize_csv",
    "write_csv",
]
