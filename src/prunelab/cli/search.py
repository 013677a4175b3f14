"""``prunelab search --method M ... [overrides]``: the highest pruning amount whose accuracy stays within δ of dense.

A bisection over ``pruning.schedule.amount``, one method at a time, each probe a normal prunelab run in
its own folder under ``outputs/sweeps/<name>/`` (``name=`` among the overrides, or
``--sweep-dir``); finished probes are reused, so an interrupted search continues where it
stopped. The answers and every probe go to ``search.json``. The library is
:mod:`prunelab.search`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from prunelab.cli.help import make_parser
from prunelab.cli.invocation import PATH_ENV, Invocation
from prunelab.errors import EXIT_NO_RESULT, PrunelabError
from prunelab.messages import SUMMARY_LOGGER, add_verbosity_args, get_logger, setup
from prunelab.paths import SEARCH
from prunelab.search import search

PROG = "prunelab search"


def _methods(values: Sequence[str]) -> list[str]:
    return [m for v in values for m in v.split(",") if m]


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(PROG, __doc__, [
        (f"{PROG} --method l1_unstructured global_magnitude --delta 0.5 "
         "name=mnist_search pruning=iterative pruning.schedule.step_size=null pruning.schedule.n_steps=5 "
         "pruning.schedule.start_epoch=1 trainer.max_epochs=10",
         "per method, the highest amount within 0.5 accuracy points of dense; probes and "
         "search.json in outputs/sweeps/mnist_search/"),
        (f"{PROG} --method global_magnitude --seeds 0 1 2 --lo 0.8 --hi 0.99 "
         "name=gm pruning=one_shot",
         "average every probe over 3 seeds, between 80 % and 99 %"),
        ("prunelab report outputs/sweeps/mnist_search",
         "the probes and the answers as a table and plots"),
    ])
    parser.add_argument("--method", nargs="+", required=True,
                        help="pruning methods (conf/pruning/method), space or comma separated")
    parser.add_argument("--delta", type=float, default=0.5,
                        help="accuracy points of drop allowed")
    parser.add_argument("--lo", type=float, default=0.5, help="lowest amount")
    parser.add_argument("--hi", type=float, default=0.99, help="highest amount")
    parser.add_argument("--iters", type=int, default=5,
                        help="halvings of the bracket after probing lo and hi")
    parser.add_argument("--seeds", type=int, nargs="*", default=[],
                        help="run every probe with these seeds and average (default: the "
                             "config's seed)")
    parser.add_argument("--baseline", action="append", default=[], metavar="DIR",
                        help="reuse dense runs found here instead of running search-dense")
    parser.add_argument("--sweep-dir", default=None,
                        help="folder of the probes (default: outputs/sweeps/<name>)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for training")
    add_verbosity_args(parser)
    args = parser.parse_intermixed_args(argv)
    setup(args.verbosity)
    # `--method a b key=value ...`: argparse hands the overrides after --method to it
    methods = [m for m in _methods(args.method) if "=" not in m]
    overrides = [m for m in args.method if "=" in m] + list(args.overrides)
    try:
        out = search(methods, overrides, args.delta, args.lo, args.hi,
                     args.iters, args.seeds, args.sweep_dir, args.baseline, args.verbosity)
    except PrunelabError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return err.exit_code
    lines = [f"{m}: {r['message']}" for m, r in out["methods"].items()]
    lines.append(f"wrote {Path(out['sweep_dir']) / SEARCH}")
    report = Invocation.current([PATH_ENV]).command("report", str(out["sweep_dir"]))
    lines.append(f"  report: {report}")
    get_logger(SUMMARY_LOGGER).info("\n".join(lines))
    # a probe run without a valid result leaves its method unanswered
    return EXIT_NO_RESULT if any(r["status"] == "error" for r in out["methods"].values()) else 0
