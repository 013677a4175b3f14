"""``prunelab report <sweep dir> [<sweep dir> ...]``: the jobs → summary.csv, summary.md and plots.

Every job folder under the sweep folders is listed (finished, failed, diverged or incomplete);
finished pruned jobs are compared with the dense baseline of the same model, data and seed.
Several folders pool their jobs into one report (``--out`` names where it goes): runs of one
configuration from different sweeps, e.g. seed 0 here and seeds 1-2 there, join one point.
The library is :mod:`prunelab.report` (``report``, ``replot``, ``summarize``).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from prunelab import report as lib
from prunelab.bounds import MAX_DROP_PTS
from prunelab.cli.help import make_parser
from prunelab.io import write_error
from prunelab.messages import SUMMARY_LOGGER, add_verbosity_args, get_logger, setup

PROG = "prunelab report"


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the flags (one line), before any file is read or written."""
    if not (math.isfinite(args.delta) and 0 <= args.delta <= MAX_DROP_PTS):
        return (f"--delta must be a finite number of accuracy points in [0, {MAX_DROP_PTS:g}], "
                f"got {args.delta:g}")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        return f"--out {args.out} is a file: give a folder (it is created when missing)"
    if args.from_csv is not None and Path(args.from_csv).is_file():
        try:
            Path(args.from_csv).read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as err:
            return (f"--from-csv {args.from_csv}: not a text file (byte 0x"
                    f"{err.object[err.start]:02x} at offset {err.start} is not UTF-8); give a "
                    "summary.csv written by prunelab report")
        except OSError as err:
            return f"--from-csv {args.from_csv}: cannot be read ({err.strerror or err})"
    return None


def front_lines(front: lib.Front | None, most: int = 12) -> list[str]:
    """A search's front in the terminal: each trial's values and folder (its configuration)."""
    if front is None:
        return []
    objs = ", ".join(map(str, front.objectives))
    head = "Pareto front" if len(front.objectives) > 1 else "best trial"
    lines = [f"  {head} ({objs}): {len(front.front)} of {len(front.scored)} trials with values"]
    for j in front.front[:most]:
        vals = ", ".join(f"{o.key} {lib.shown_value(o, j.numbers[o.key], ' %')}"
                         for o in front.objectives)
        lines.append(f"    {vals}: {j.folder}")
    if len(front.front) > most:
        lines.append(f"    … and {len(front.front) - most} more (pareto.csv)")
    if front.unscored:
        counts: dict[str, int] = defaultdict(int)
        for j in front.unscored:
            counts["no value" if j.status == "ok" else j.status] += 1
        lines.append("  trials without values: " + ", ".join(
            f"{n} {k}" for k, n in sorted(counts.items())))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(PROG, __doc__, [
        (f"{PROG} outputs/sweeps/mnist_amounts",
         "summary.csv, summary.md, acc_vs_sparsity.png and acc_vs_macs.png in the sweep folder"),
        (f"{PROG} outputs/sweeps/pruned --baseline outputs/sweeps/dense",
         "compare with the dense runs of another sweep"),
        (f"{PROG} outputs/runs/<run>",
         "a single run folder works too"),
        (f"{PROG} outputs/sweeps/seed0 outputs/sweeps/seeds12 --out docs/results/x",
         "pool several sweeps (mean ± std over all their seeds) into one report"),
        (f"{PROG} outputs/sweeps/pareto_mnist",
         "a search (-m hydra/sweeper=optuna): also its Pareto front, pareto.png and pareto.csv"),
        (f"{PROG} --from-csv docs/results/mnist_study/summary.csv",
         "redraw the plots from a report's own summary.csv (no job folders needed)"),
    ])
    parser.add_argument("sweep_dir", nargs="*", help="the sweep folder, e.g. outputs/sweeps/<name> "
                        "(several: their jobs are pooled; give --out)")
    parser.add_argument("--from-csv", metavar="FILE", default=None,
                        help="redraw only the plots from this summary.csv (into its folder, or --out)")
    parser.add_argument("--baseline", action="append", default=[], metavar="DIR",
                        help="sweep or run folder with dense runs (pruning=none), or a report's "
                             "summary.csv, to compare with, "
                             "for (model, data, seed) without a dense job in this sweep")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="write the files here instead of into the sweep folder")
    parser.add_argument("--skip-missing", action="store_true",
                        help="a sweep folder that does not exist (yet) is noted, not an error")
    parser.add_argument("--delta", type=float, default=0.5,
                        help="accuracy points of drop allowed by 'highest sparsity within "
                             "delta of dense'")
    add_verbosity_args(parser)
    args = parser.parse_args(argv)
    if (not args.sweep_dir) == (args.from_csv is None):
        parser.error("give a sweep folder or --from-csv FILE (one of the two)")
    setup(args.verbosity)
    problem = check_args(args)
    if problem:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2

    try:
        if args.from_csv:
            s = lib.replot(args.from_csv, args.out, args.delta)
        else:
            s = lib.report(args.sweep_dir, args.baseline, args.out, args.delta,
                           skip_missing=args.skip_missing)
    except lib.ReportError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the output folder cannot be made or written
        print(f"{PROG}: error: {write_error(err)}", file=sys.stderr)
        return 2
    counts: dict[str, int] = defaultdict(int)
    for j in s.jobs:
        counts[j.status] += 1
    lines = [f"{len(s.jobs)} jobs (" + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
             + ")"]
    for series, b in s.best.items():
        if b["answer"] is None:
            lines.append(f"  {series}: {b['reason']}")
        else:
            sparsity = "—" if b["sparsity"] is None else f"{100 * b['sparsity']:.1f}"
            lines.append(f"  {series}: highest sparsity within {s.delta:g} pts of dense: amount "
                         f"{b['answer']:g} (sparsity {sparsity} %, drop {b['drop_pts']:+.2f} pts)")
    lines += front_lines(s.front)
    lines += [f"  note: {n}" for n in s.notes]
    lines.append("wrote " + ", ".join(str(f) for f in s.files))
    get_logger(SUMMARY_LOGGER).info("\n".join(lines))
    return 0
