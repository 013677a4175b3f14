"""The report's figures (matplotlib, imported when drawing): test error against the weights
kept, the effective MACs and, for exported jobs, the file's bytes and its latency relative to
the dense model in the same runtime."""

from __future__ import annotations

import statistics
import textwrap
from pathlib import Path
from typing import Any

from prunelab.io import atomic_save
from prunelab.report.load import LATENCY_BATCHES
from prunelab.report.records import Point, Summary, _count
from prunelab.report.tables import (
    FP32_BYTES,
    _encodings,
    _epochs,
    eager_ratio,
    export_mean,
    precision,
)

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


COMPACTED = "compacted fp32, PyTorch"  # the run's compacted network itself: a series of its own


def _format_styles(pts: list[Point]) -> tuple[list[tuple[str, str]], Any]:
    """The (series, format) pairs of ``pts`` and their line style: one colour per format, one
    marker per series (method), fp32 hollow on solid lines, int8 and k-means filled on dashed."""
    names = list(dict.fromkeys(p.series for p in pts))
    encs = _encodings(pts) + [COMPACTED]
    colour = {e: f"C{k % 10}" for k, e in enumerate(encs)}

    def style(name: str, enc: str) -> dict[str, Any]:
        c, fp32 = colour[enc], enc == COMPACTED or precision(enc) == "fp32"
        return dict(color=c, marker=SERIES_MARKERS[names.index(name) % len(SERIES_MARKERS)],
                    ms=6, lw=1.2, ls="-" if fp32 else "--", mfc="none" if fp32 else c, mew=1.3)

    series = [(name, enc) for name in names
              for enc in _encodings(p for p in pts if p.series == name)]
    return series, style


def _mean(vals: list[float | None]) -> float | None:
    got = [v for v in vals if v is not None]
    return statistics.fmean(got) if got else None


def plot_bytes(summary: Summary, model: str | None, data: str | None, note: str = "") -> Any:
    """Test error measured from each artifact vs its size in bytes (log-log), one series per
    method and format (a colour per format, fp32 hollow, int8 filled), the compacted network's
    fp32 state dict where runs were compacted; the dense fp32 state dict marked at its size and
    the dense accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [p for p in summary.points if (p.model, p.data) == (model, data)]
    fig, ax = plt.subplots(figsize=(8.5, 5.8), dpi=110)
    xs_all: list[float] = []
    ys_all: list[float] = []
    series, style = _format_styles(pts)
    compacted = [(name, COMPACTED) for name in dict.fromkeys(p.series for p in pts)
                 if any(p.mean("params_compact") for p in pts if p.series == name)]
    for name, enc in series + compacted:
        if enc == COMPACTED:
            xy = [((FP32_BYTES * c) if (c := p.mean("params_compact")) else None,
                   _err(p.mean("test_acc"))) for p in pts if p.series == name]
        else:
            xy = [(export_mean(p, enc, "artifact_bytes"), _err(export_mean(p, enc, "test_acc")))
                  for p in pts if p.series == name]
        _line(ax, xy, f"{name} · {enc}", style(name, enc), xs_all, ys_all)
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


def has_latency(points: list[Point]) -> bool:
    """Whether any job of ``points`` has a latency ratio: an exported file's, or the compacted
    network's in eager PyTorch."""
    return any(any(k.startswith("latency_ratio_") for r in j.exports.values() for k in r)
               or eager_ratio(j, "compact", LATENCY_BATCHES[0]) is not None
               for p in points for j in p.jobs)


def plot_latency(summary: Summary, model: str | None, data: str | None, note: str = "") -> Any:
    """Test error vs latency ÷ the dense fp32 model's latency in the same runtime (log-log), at
    batch 256 (left) and 1 (right): one series per method and format, styled as in
    :func:`plot_bytes`, and the compacted network in eager PyTorch; the dense model at 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [p for p in summary.points if (p.model, p.data) == (model, data)]
    fig, axes = plt.subplots(1, len(LATENCY_BATCHES), figsize=(13.5, 5.8), dpi=110)
    series, style = _format_styles(pts)
    series += [(name, COMPACTED) for name in dict.fromkeys(p.series for p in pts)]
    st = summary.baseline.stats(model, data)
    for ax, bs in zip(axes, LATENCY_BATCHES, strict=True):
        xs_all: list[float] = []
        ys_all: list[float] = []
        for name, enc in series:
            sp = [p for p in pts if p.series == name]
            if enc == COMPACTED:  # compaction is exact: the run's own accuracy
                xy = [(_mean([eager_ratio(j, "compact", bs) for j in p.jobs]),
                       _err(p.mean("test_acc"))) for p in sp]
            else:
                xy = [(export_mean(p, enc, f"latency_ratio_{bs}"),
                       _err(export_mean(p, enc, "test_acc"))) for p in sp]
            _line(ax, xy, f"{name} · {enc}", style(name, enc), xs_all, ys_all)
        ax.axvline(1.0, color="0.2", ls=":", lw=1)
        if st is not None:
            e = _err(st[0])
            ax.plot([1.0], [e], marker="*", ms=14, color="0.2", ls="none",
                    label=f"dense fp32 in each runtime: {100 * st[0]:.2f} % accuracy")
            ys_all.append(e)
        xs_all.append(1.0)
        if ys_all:
            _error_axis(ax, ys_all)
        else:
            ax.set_yscale("log")
        ax.set_xlim(min(xs_all) / 1.5, max(xs_all) * 1.5)
        _ratio_axis(ax, bs)
        ax.grid(True, which="major", alpha=0.3)
    return _finish(fig, axes[-1], summary, model, data,
                   "test error vs latency relative to dense, same runtime", note,
                   legend=dict(fontsize=7, loc="upper right"), title_on=fig)


def _ratio_axis(ax: Any, bs: str) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}×"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(f"batch {bs[2:]}: latency ÷ the dense fp32 model's in the same runtime, "
                  "log scale — smaller is faster", fontsize=8)


def _finish(fig: Any, ax: Any, summary: Summary, model: str | None, data: str | None,
            what_vs: str, note: str, legend: dict[str, Any], title_on: Any = None) -> Any:
    """Title (sweep name, model and data), grid, legend and the footnote of a report plot;
    ``title_on=fig``: the title over all panels."""
    what = f"{model} on {data}" if model or data else "all jobs"
    name = summary.name
    name = name if len(name) <= 40 else name[:37] + "…"
    if title_on is not None:
        title_on.suptitle(f"{name}: {what} — {what_vs}", fontsize=11)
    else:
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
    """acc_vs_sparsity.png and acc_vs_macs.png (one pair of files per model/data),
    acc_vs_bytes.png where jobs have exported artifacts and acc_vs_latency.png where files (or
    compacted networks) were timed."""
    import matplotlib.pyplot as plt

    pairs = _pairs(summary) or [(None, None)]
    files = []
    for model, data in pairs:
        tag = "" if len(pairs) == 1 else f"_{model}_{data}"
        for kind, stem in (("sparsity", "acc_vs_sparsity"), ("macs", "acc_vs_macs")):
            fig = plot_pair(summary, model, data, kind, note)
            path = out_dir / f"{stem}{tag}.png"
            atomic_save(path, lambda f, fig=fig: fig.savefig(f, format="png"))
            plt.close(fig)
            files.append(path)
        pts = [p for p in summary.points if (p.model, p.data) == (model, data)]
        for stem, draw, wanted in (("acc_vs_bytes", plot_bytes, bool(_encodings(pts))),
                                   ("acc_vs_latency", plot_latency, has_latency(pts))):
            if not wanted:
                continue
            fig = draw(summary, model, data, note)
            path = out_dir / f"{stem}{tag}.png"
            atomic_save(path, lambda f, fig=fig: fig.savefig(f, format="png"))
            plt.close(fig)
            files.append(path)
    return files


def _line(ax: Any, xy: list, label: str, style: dict, xs_all: list, ys_all: list) -> None:
    """One format's line of (x, error) points, those with both values, sorted by x; the
    points join ``xs_all``/``ys_all`` (the axes' limits)."""
    xy = sorted((x, y) for x, y in xy if x is not None and y is not None)
    if xy:
        ax.plot([x for x, _ in xy], [y for _, y in xy], label=label, **style)
        xs_all += [x for x, _ in xy]
        ys_all += [y for _, y in xy]
