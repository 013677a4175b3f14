"""Regenerate the records' tables and plots (docs/results/records/) from the sweeps' run folders.

    python scripts/make_records.py --roots outputs/sweeps [more roots ...] [--out docs/results/records]

Each root is a folder of sweeps (``outputs/sweeps``); under every root the sweeps named below are
looked up and pooled, so seed 0 run in one checkout and seeds 1-2 in another join one mean ± std.
A sweep found under no root is noted in the output and left out; nothing fails for it. Writes:

* ``<group>/``: ``prunelab report`` of each group (summary.md, summary.csv, test error vs
  weights kept and vs effective MACs, both log scale), one line per (schedule, method) series;
* ``records.md``: the published operating points next to prunelab's (method, weights kept,
  error, epochs, seeds, source), each goal with the best figure and its gap, and what is missing.

The prose (why a goal is missed) is written by hand in docs/results/records/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from prunelab import report as R

# sweep names (folders under each root) per report group
# rec_dense: dense LeNet runs of the presets' 40 epochs (pruning=none), when run; until then the
# dense baseline is --mnist-baseline's
MNIST_UNSTRUCTURED = ["rec0", "rec_99", "rec_99_5", "rec_moon", "rec_dense"]
MNIST_STRUCTURED = ["rec_struct"]
MNIST_METHODS = ["records_methods"]
GROUPS: dict[str, tuple[list[str], str]] = {
    # name: (sweeps, which dense baseline to add: "mnist", "imdb" or "")
    "lenet_unstructured": (MNIST_UNSTRUCTURED, "mnist"),
    "lenet_structured": (MNIST_STRUCTURED, "mnist"),
    "mnist_methods": (MNIST_METHODS, "mnist"),
    "mnist_all": (MNIST_UNSTRUCTURED + MNIST_STRUCTURED + MNIST_METHODS, "mnist"),
    "imdb": (["rec_imdb_snip", "rec_imdb", "rec_imdb_dense"], "imdb"),
}

# The published operating points on this LeNet-5 (431K parameters): test error, dense ≈ 0.6-0.9 %.
PUBLISHED = [
    ("Han et al. 2015, iterative magnitude", "8.3 %", "0.77 %", "many", "Han et al., NeurIPS 2015"),
    ("Dynamic Network Surgery", "0.9 %", "0.91 %", "many", "Guo et al., NeurIPS 2016"),
    ("Sparse Variational Dropout", "0.36 % (280×)", "0.75 %", "200", "Molchanov et al., ICML 2017"),
    ("SNIP, pruned at initialisation", "2 % / 1 %", "0.8 % / 1.1 %", "250", "Lee et al., ICLR 2019"),
    ("Sparse momentum, sparse from scratch", "2 % / 1 % / 0.5 %", "0.76 / 0.83 / 1.14 %", "100",
     "Dettmers & Zettlemoyer 2019"),
    ("structured: Bayesian Compression GHS", "units 5-10-76-16, ≈158K FLOPs", "1.0 %", "—",
     "Louizos et al., NeurIPS 2017"),
    ("structured: L0-sep", "units 9-18-65-25", "1.0 %", "—", "Louizos et al., ICLR 2018"),
]


@dataclass
class Goal:
    text: str
    group: str
    kind: str  # "error" (test error % at a sparsity), "macs" (error under a MAC budget), "drop"
    sparsity: float = 0.0
    limit: float = 0.0  # % error, or points of drop
    macs: int = 0


GOALS = [
    Goal("99 % of weights removed at ≤ 0.75 % error", "mnist_all", "error", 0.99, 0.75),
    Goal("99.5 % removed at ≤ 0.90 % error", "mnist_all", "error", 0.995, 0.90),
    Goal("moonshot: 99.64 % removed at ≤ 0.80 % error", "mnist_all", "error", 0.9964, 0.80),
    Goal("structured: ≤ 160K MACs at ≤ 1.0 % error", "mnist_all", "macs", limit=1.0, macs=160_000),
    Goal("IMDB: 90 % sparsity within 1.0 pt of dense", "imdb", "drop", 0.90, 1.0),
    Goal("IMDB: 95 % sparsity within 2.0 pts of dense", "imdb", "drop", 0.95, 2.0),
]
SEEDS_NEEDED = 3
EPOCH_BUDGET = {"mnist": 40, "imdb": 10}


def _err(p: R.Point) -> float:
    return 100 * (1 - p.mean("test_acc"))


def _pm(p: R.Point) -> str:
    return f"{_err(p):.2f} ± {100 * (p.std('test_acc') or 0):.2f} %"


def _kept(p: R.Point) -> str:
    sp = p.mean("sparsity_global")
    return "—" if sp is None else f"{100 * (1 - sp):.2f} %"


def _epochs(p: R.Point) -> str:
    return "/".join(map(str, sorted({j.epochs for j in p.jobs if j.epochs is not None}))) or "—"


def _reached(p: R.Point, sparsity: float) -> bool:
    sp = p.mean("sparsity_global")
    return sp is not None and sp >= sparsity - 5e-4  # within one weight in 2,000


def _macs(p: R.Point) -> float | None:
    return p.mean("macs_compact") or p.mean("budget_reached")


def seeds_of(goal: Goal, p: R.Point) -> int:
    """Seeds that answer the goal: for a drop, only those with a dense run of the same seed."""
    if goal.kind == "drop":
        return sum(j.drop_pts is not None for j in p.jobs)
    return p.n


def best_for(goal: Goal, points: list[R.Point]) -> R.Point | None:
    """The point that answers the goal: full seed count first, then the best mean."""
    pruned = [p for p in points if p.method != "dense" and p.mean("test_acc") is not None]
    if goal.kind == "error":
        cands = [p for p in pruned if _reached(p, goal.sparsity)]
        key = _err
    elif goal.kind == "macs":
        cands = [p for p in pruned if (m := _macs(p)) is not None and m <= goal.macs]
        key = _err
    else:
        cands = [p for p in pruned if _reached(p, goal.sparsity) and p.mean("drop_pts") is not None]
        key = lambda p: p.mean("drop_pts")  # noqa: E731
    if not cands:
        return None
    return min(cands, key=lambda p: (seeds_of(goal, p) < SEEDS_NEEDED, key(p)))


def goal_row(goal: Goal, summary: R.Summary | None) -> list[str]:
    if summary is None:
        return [goal.text, "—", "—", "—", "—", f"no runs ({goal.group} report missing)"]
    p = best_for(goal, summary.points)
    if p is None:
        return [goal.text, "—", "—", "—", "—", "not run yet"]
    if goal.kind == "drop":
        value = p.mean("drop_pts")
        shown = f"{_pm(p)} (drop {value:+.2f} pts)"
    else:
        value = _err(p)
        shown = _pm(p)
    gap = value - goal.limit
    met = gap <= 0
    n = seeds_of(goal, p)
    if met and n >= SEEDS_NEEDED:
        verdict = "met"
    elif met:
        verdict = f"met on {n} seed(s); {SEEDS_NEEDED} needed"
    else:
        unit = "pts" if goal.kind == "drop" else "points of error"
        verdict = f"short by {gap:.2f} {unit} ({n} seed(s))"
    if n != p.n:
        verdict += f"; {p.n - n} seed(s) without a dense run of the same seed"
    where = f"{p.series} @ {p.setting}"
    if goal.kind == "macs":
        where += f" ({R._count(_macs(p))} MACs)"
    return [goal.text, where, shown, str(n), _epochs(p), verdict]


def records_md(summaries: dict[str, R.Summary | None], missing: dict[str, list[str]],
               roots: list[Path], command: str) -> str:
    day = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}"
    lines = ["# Records: generated tables", "",
             f"Generated {day} on {machine} by `{command}` from the run folders under "
             + ", ".join(f"`{r}`" for r in roots) + ". Test error = 100 − test accuracy; "
             "mean ± std over seeds (sample std); weights kept = non-zero weights of the pruned "
             "layers. Each group's full report (every run, failed ones included, and the plots) "
             "is in its folder.", ""]
    lines += ["## Goals (mean of 3 seeds)", ""]
    rows = [goal_row(g, summaries.get(g.group)) for g in GOALS]
    lines += R._table(["goal", "best run (series @ setting)", "test error", "seeds", "epochs",
                       "verdict"], rows) + [""]

    lines += ["## LeNet-5: published operating points and prunelab's", ""]
    rows = [[m, kept, err, ep, "—", src] for m, kept, err, ep, src in PUBLISHED]
    s = summaries.get("mnist_all")
    if s is not None:
        for p in s.points:
            if p.method == "dense" or p.mean("test_acc") is None:
                continue
            kept = _kept(p)
            if p.budget:
                kept += f" ({p.setting}: {R._count(_macs(p))} MACs)"
            rows.append([f"prunelab: {p.series} @ {p.setting}", kept, _pm(p), _epochs(p),
                         str(p.n), "[mnist_all](mnist_all/summary.md)"])
        st = s.baseline.stats("cnn", "mnist")
        if st:
            rows.append(["prunelab: dense", "100 %", f"{100 * (1 - st[0]):.2f} ± {100 * st[1]:.2f} %",
                         "see baseline", str(st[2]), "; ".join(s.baseline.sources)])
    lines += R._table(["method", "weights kept", "test error", "epochs", "seeds", "source"], rows)
    lines += ["", "![test error vs weights kept](mnist_all/acc_vs_sparsity.png)", ""]

    s = summaries.get("imdb")
    lines += ["## IMDB classifier", ""]
    if s is None:
        lines.append("No IMDB runs found.")
    else:
        rows = [[p.series, p.setting, str(p.n), _kept(p), _pm(p),
                 "—" if p.mean("drop_pts") is None else f"{p.mean('drop_pts'):+.2f}", _epochs(p)]
                for p in s.points if p.mean("test_acc") is not None]
        lines += R._table(["method", "amount", "seeds", "weights kept", "test error",
                           "drop vs dense (pts)", "epochs"], rows)
        lines += ["", "![IMDB: test error vs weights kept](imdb/acc_vs_sparsity.png)"]
    lines += ["", "## Epoch budgets", ""]
    for name, s in summaries.items():
        if s is None:
            continue
        data = "imdb" if name == "imdb" else "mnist"
        over = sorted({j.epochs for j in s.jobs if j.epochs and j.epochs > EPOCH_BUDGET[data]})
        lines.append(f"- {name}: " + (f"runs of {'/'.join(map(str, over))} epochs exceed the "
                                      f"budget of {EPOCH_BUDGET[data]}" if over else
                                      f"every run within {EPOCH_BUDGET[data]} epochs"))
    lines += ["", "## Missing or unfinished", ""]
    gone = [f"- sweep `{n}` ({', '.join(groups)}): under no root" for n, groups in missing.items()]
    for name, s in summaries.items():
        if s is None:
            continue
        for j in s.jobs:
            if j.status != "ok":
                gone.append(f"- {name}: `{j.folder}` {j.status}: {j.error}")
        for p in s.points:
            if p.method != "dense" and p.n < SEEDS_NEEDED:
                gone.append(f"- {name}: {p.series} @ {p.setting}: {p.n} of {SEEDS_NEEDED} seeds")
    lines += gone or ["Nothing: every sweep found, every job finished, every point has "
                      f"{SEEDS_NEEDED} seeds."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roots", nargs="+", required=True, metavar="DIR",
                        help="folders of sweeps (e.g. outputs/sweeps), searched for the sweeps")
    parser.add_argument("--out", default="docs/results/records", metavar="DIR")
    parser.add_argument("--mnist-baseline", action="append", default=[], metavar="DIR|CSV",
                        help="dense MNIST runs (a sweep/run folder or a report's summary.csv) "
                             "for seeds without a dense run in the records' sweeps")
    parser.add_argument("--imdb-baseline", action="append", default=[], metavar="DIR|CSV")
    args = parser.parse_args(argv)
    command = "python scripts/make_records.py " + " ".join(shlex.quote(a) for a in
                                                           (argv if argv is not None else sys.argv[1:]))
    roots = [Path(r) for r in args.roots]
    out = Path(args.out)
    for r in roots:
        if not r.is_dir():
            print(f"note: root {r} does not exist; left out", file=sys.stderr)
    baselines = {"mnist": [b for b in args.mnist_baseline if Path(b).exists()],
                 "imdb": [b for b in args.imdb_baseline if Path(b).exists()]}
    for kind, given in (("mnist", args.mnist_baseline), ("imdb", args.imdb_baseline)):
        for b in given:
            if not Path(b).exists():
                print(f"note: --{kind}-baseline {b} does not exist; left out", file=sys.stderr)
    summaries: dict[str, R.Summary | None] = {}
    missing: dict[str, list[str]] = {}
    for name, (sweeps, base) in GROUPS.items():
        dirs = []
        for sweep in sweeps:
            found = [r / sweep for r in roots if (r / sweep).is_dir()]
            if not found:
                missing.setdefault(sweep, []).append(name)
            dirs += found
        if not dirs:
            print(f"{name}: none of its sweeps ({', '.join(sweeps)}) exists yet; skipped")
            summaries[name] = None
            continue
        try:
            s = R.report(dirs, baselines.get(base, []), out / name, command=command,
                         title=f"records {name}")
        except R.ReportError as err:
            print(f"{name}: {err}; skipped")
            summaries[name] = None
            continue
        summaries[name] = s
        ok = sum(j.status == "ok" for j in s.jobs)
        print(f"{name}: {len(s.jobs)} jobs ({ok} finished) from {len(dirs)} folder(s) -> {out / name}")
    (out / "records.md").parent.mkdir(parents=True, exist_ok=True)
    (out / "records.md").write_text(records_md(summaries, missing, roots, command))
    for sweep, groups in missing.items():
        print(f"note: sweep {sweep} ({', '.join(groups)}) is under no root yet")
    print(f"wrote {out / 'records.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
