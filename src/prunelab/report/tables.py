"""summary.csv (one row per job, per-encoding artifact columns) and summary.md (the tables)."""

from __future__ import annotations

import csv
import io
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from prunelab.io import atomic_write
from prunelab.paths import COMPACT_MODEL, FINAL_MODEL
from prunelab.report.load import LATENCY_BATCHES, _encoding_order, export_columns, export_row
from prunelab.report.records import CSV_COLUMNS, Baseline, Job, Point, Summary, _count


def write_csv(summary: Summary, path: Path) -> None:
    extra = export_columns(summary.jobs)
    f = io.StringIO(newline="")
    w = csv.DictWriter(f, fieldnames=CSV_COLUMNS + extra)
    w.writeheader()
    for j in summary.jobs:
        row = {**j.row(), **export_row(j, extra)}
        w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    atomic_write(path, f.getvalue())


def _pct(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}"


def _pm(mean: float | None, std: float | None, scale: float = 100.0) -> str:
    if mean is None:
        return "—"
    return f"{scale * mean:.2f} ± {scale * (std or 0.0):.2f}"


def _signed(x: float | None) -> str:
    return "—" if x is None else f"{x:+.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def esc(c: str) -> str:
        return str(c).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return out


def markdown(summary: Summary, plots: Sequence[str] = (), sections: Sequence[str] = ()) -> str:
    """summary.md; ``sections``: lines of further sections (a search's Pareto front), placed
    before the failed jobs."""
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
    lines += _tradeoff_md(s)
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

    lines += list(sections)
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


RUNTIMES = {"onnxruntime": "ONNX Runtime", "executorch": "ExecuTorch"}
FP32_BYTES = 4  # an fp32 state dict: 4 bytes a parameter


def precision(name: str) -> str:
    """``fp32``, ``int8`` or ``kmeans<b>`` of an encoding folder or format name."""
    base = name.split("-ft")[0]
    if "int8" in base.split("-"):
        return "int8"
    bits = re.fullmatch(r"kmeans(\d+)", base)
    return f"kmeans{bits.group(1)}" if bits else "fp32"


def runtime_name(rec: dict[str, Any]) -> str:
    """Where an exported file runs: its runtime, or PyTorch for a .plx artifact."""
    return RUNTIMES.get(rec.get("runtime") or "", rec.get("runtime") or "PyTorch (.plx)")


def eager_ratio(job: Job, model: str, bs: str) -> float | None:
    """``model``'s latency ÷ the dense network's in eager PyTorch (results.json's latency_ms)."""
    lat = job.latency_ms or {}
    got, dense = lat.get(model, {}).get(bs), lat.get("dense", {}).get(bs)
    return got / dense if got and dense else None


def dense_bytes_of(job: Job) -> int | None:
    """The dense fp32 state dict's bytes: from an export record, else 4 × the parameters."""
    found = next((r["dense_bytes"] for r in job.exports.values() if r.get("dense_bytes")), None)
    total = job.numbers.get("params_total")
    return found or (int(FP32_BYTES * total) if total else None)


def _tradeoff_md(s: Summary) -> list[str]:
    """One row per job and variant: the dense baseline, the run's own (masked) network, its
    compacted and int8 models, and each exported file; size, latency, test error."""
    jobs = [j for j in s.jobs if j.status == "ok" and (
        j.exports or j.latency_ms or j.params_compact
        or j.numbers.get("int8_test_acc") is not None)]
    noted = [j for j in s.jobs if j.export_notes]
    if not jobs and not noted:
        return []
    lines = ["## Trade-off: bytes, latency and test error per format", "",
             "One row per job and variant. × smaller: the dense fp32 state dict's bytes ÷ the "
             "file's. Latency: the file's ÷ the dense fp32 model's **in the same runtime**, at "
             "batch 256 and 1 (ONNX Runtime and ExecuTorch: timed by `prunelab export`, paired "
             "with the dense fp32 file of the network; PyTorch eager: `latency_ms` of "
             "`pruning.compact=true`); below 1 is faster. — : not measured.", ""]
    rows = [row for j in jobs for row in _tradeoff_rows(j, s.baseline)]
    if rows:
        lines += _table(["job", "variant", "precision", "format", "runtime", "bytes",
                         "× smaller", "latency ×dense, batch 256", "batch 1", "test error %"],
                        rows)
    if noted:
        lines += ["", "Exports left out or incomplete:", ""]
        lines += [f"- `{j.folder}/{n}`" for j in noted for n in j.export_notes]
    return lines + [""]


def _tradeoff_rows(j: Job, baseline: Baseline) -> list[list[str]]:
    dense = dense_bytes_of(j)
    own = "dense" if j.dense else "masked"

    def size(n: float | None) -> list[str]:
        return ["—", "—"] if not n else [f"{n:,.0f}", f"{dense / n:.1f}" if dense else "—"]

    def ratios(get: Any) -> list[str]:
        return [_ratio(get(bs)) for bs in LATENCY_BATCHES]

    dense_acc = j.test_acc if j.dense else baseline.of(j.key)
    rows = [[j.folder, "dense (baseline)", "fp32", "state dict", "each runtime", *size(dense),
             "1", "1", _error(dense_acc)]]
    if not j.dense:
        rows.append([j.folder, own, "fp32", FINAL_MODEL, "PyTorch eager", *size(dense),
                     *ratios(lambda bs: eager_ratio(j, "masked", bs)), _error(j.test_acc)])
    if j.params_compact:  # compaction is exact: the run's accuracy
        rows.append([j.folder, "compacted", "fp32", COMPACT_MODEL, "PyTorch eager",
                     *size(FP32_BYTES * j.params_compact),
                     *ratios(lambda bs: eager_ratio(j, "compact", bs)), _error(j.test_acc)])
    if (int8 := j.numbers.get("int8_test_acc")) is not None:
        rows.append([j.folder, own, "int8", "quantized_model.pt2", "PyTorch", "—", "—", "—",
                     "—", _error(int8)])
    for enc in sorted(j.exports, key=_encoding_order):
        rec = j.exports[enc]
        rows.append([j.folder, "compacted" if rec.get("compacted") else own, precision(enc), enc,
                     runtime_name(rec), *size(rec["artifact_bytes"]),
                     *ratios(lambda bs, rec=rec: rec.get(f"latency_ratio_{bs}")),
                     _error(rec.get("test_acc"))])
    return rows


def _ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}"


def _error(acc: float | None) -> str:
    return "—" if acc is None else f"{100 * (1 - acc):.2f}"


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
