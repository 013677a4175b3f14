"""``python -m prunelab.evaluate <run dir | .ckpt>``: re-test a finished or interrupted run.

The pruned weights are loaded into the *plain* network class named by the run's config (masks
folded into the weights), so what is measured is exactly what a user who takes the model away
gets: no Lightning, no pruning hooks.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.loading import ALLOW_ENV, fold_state_dict_masks, load_finished_run, run_test_loader
from prunelab.pruning.metrics import summarize

__all__ = ["evaluate", "fold_state_dict_masks", "load_plain_model", "main"]


def load_plain_model(path: str | Path, allow: Iterable[str] = ()) -> tuple[nn.Module, DictConfig]:
    """The run's network class with its pruned weights; see :func:`prunelab.loading.load_finished_run`."""
    net, cfg, _ = load_finished_run(path, allow)
    return net, cfg


@torch.no_grad()
def evaluate(net: nn.Module, loader: Any, binary: bool) -> dict[str, float]:
    correct = total = 0
    for x, y in loader:
        logits = net(x)
        pred = (logits > 0).long() if binary else logits.argmax(-1)
        correct += int((pred == y.long()).sum())
        total += y.shape[0]
    return {"test_acc": correct / max(total, 1), "test_samples": total}


def main(argv: list[str] | None = None) -> int:
    from prunelab.cli_help import make_parser
    from prunelab.logs import add_verbosity_args, get_logger, setup

    parser = make_parser("python -m prunelab.evaluate", __doc__, [
        ("python -m prunelab.evaluate outputs/runs/<run>",
         "test the run's final model (final_model.pt) again; prints JSON on stdout"),
        ("python -m prunelab.evaluate outputs/runs/<run>/checkpoints/last.ckpt",
         "test an interrupted run's last checkpoint"),
        ("python -m prunelab.evaluate outputs/runs/<run> --data-dir /data",
         "with the data sets somewhere else than when the run was made"),
    ])
    parser.add_argument("path", help="a run directory, or a checkpoint inside one")
    parser.add_argument("--data-dir", help="where the data sets are (default: the run's data_dir)")
    parser.add_argument("--allow-target", action="append", default=[], metavar="PREFIX",
                        help="also build _target_s starting with PREFIX from the run's saved "
                             f"config (trusted code of your own; also ${ALLOW_ENV})")
    add_verbosity_args(parser)
    args = parser.parse_args(argv)
    setup(args.verbosity)
    log = get_logger(__name__)
    try:
        log.debug("loading %s", args.path)
        net, cfg = load_plain_model(args.path, args.allow_target)
        loader = run_test_loader(cfg, args.data_dir)
        log.info("testing on %s", cfg.data.get("name", "the test set"))
        result = {**evaluate(net, loader, cfg.model.task == "binary"),
                  **summarize(net, None)}
    except PrunelabError as err:
        print(f"prunelab.evaluate: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
