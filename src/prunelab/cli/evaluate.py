"""``prunelab evaluate <run dir | .ckpt>``: re-test a finished or interrupted run.

The pruned weights are loaded into the *plain* network class named by the run's config (masks
folded into the weights), so what is measured is exactly what a user who takes the model away
gets: no Lightning, no pruning hooks. The result is JSON on standard output.
"""

from __future__ import annotations

import json
import sys

from prunelab.cli.help import add_run_source_args, make_parser
from prunelab.errors import PrunelabError
from prunelab.messages import add_verbosity_args, get_logger, setup

PROG = "prunelab evaluate"


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(PROG, __doc__, [
        (f"{PROG} outputs/runs/<run>",
         "test the run's final model (final_model.pt) again; prints JSON on stdout"),
        (f"{PROG} outputs/runs/<run>/checkpoints/last.ckpt",
         "test an interrupted run's last checkpoint"),
        (f"{PROG} outputs/runs/<run> --data-dir /data",
         "with the data sets somewhere else than when the run was made"),
    ])
    parser.add_argument("path", help="a run directory, or a checkpoint inside one")
    add_run_source_args(parser)
    add_verbosity_args(parser)
    args = parser.parse_args(argv)
    setup(args.verbosity)
    log = get_logger(__name__)
    # lazy: torch and Lightning, not needed by --help
    from prunelab.evaluate import evaluate, load_plain_model
    from prunelab.loading import run_test_loader
    from prunelab.pruning.metrics import summarize

    try:
        log.debug("loading %s", args.path)
        net, cfg = load_plain_model(args.path, args.allow_target)
        loader = run_test_loader(cfg, args.data_dir)
        log.info("testing on %s", cfg.data.get("name", "the test set"))
        result = {**evaluate(net, loader, cfg.model.task == "binary"),
                  **summarize(net, None)}
    except PrunelabError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return err.exit_code  # 2 bad input, 3 no valid result (docs/guide/cli.md)
    print(json.dumps(result, indent=2))
    return 0
