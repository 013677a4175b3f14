"""``prunelab sensitivity RUN``: prune each layer of a finished run alone, measure the accuracy drop.

Each targeted layer of the run's model is pruned alone to each amount of a grid with the run's
criterion (magnitude by default), measured on the validation split, and restored. Writes
sensitivity.csv, sensitivity.md and sensitivity.png into the run folder (or --out); with
--derive-amounts DROP also the largest amount per layer whose drop stays within DROP points
(sensitivity_amounts.yaml), as guidance for choosing per-layer targets.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import platform
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from prunelab.bounds import MAX_DROP_PTS, MAX_STEPS
from prunelab.cli.help import add_run_source_args, make_parser
from prunelab.cli.invocation import Invocation
from prunelab.components import component_name
from prunelab.errors import ConfigError, PrunelabError
from prunelab.evaluate import evaluate
from prunelab.io import atomic_write, write_error
from prunelab.loading import find_run_dir, load_finished_run, run_datamodule
from prunelab.messages import add_verbosity_args, get_logger, setup
from prunelab.pruning.sensitivity import (
    DEFAULT_AMOUNTS,
    SensitivityTable,
    amounts_yaml,
    analyze,
    check_grid,
    check_inputs,
    derive_amounts,
)
from prunelab.pruning.targets import find_targets

PROG = "prunelab sensitivity"
GUIDANCE = ("prunelab prunes every targeted layer to one amount, so this is guidance: e.g.\n"
            "exclude the most sensitive layers (pruning.targets.exclude) or prune them separately.")


def parse_grid(text: str) -> list[float]:
    """``"0.5,0.9,0.99"`` → the checked grid; a word that is not a number is a ConfigError."""
    values: list[Any] = []
    for word in str(text).split(","):
        try:
            values.append(float(word))
        except ValueError:
            raise ConfigError(f"--amounts: {word.strip()!r} is not a number; give fractions in "
                              "(0, 1) separated by commas, e.g. 0.5,0.7,0.9,0.99") from None
    return check_grid(values)


def val_batches(cfg: DictConfig, data_dir: str | None, n: int | None) -> list[Any]:
    """The first ``n`` (None: all) validation batches of the run's data, held in memory."""
    datamodule = run_datamodule(cfg, data_dir)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batches = list(itertools.islice(datamodule.val_dataloader(), n))
    if not batches:
        raise ConfigError("the run's validation split is empty: nothing to measure on")
    return batches


class _Holder(nn.Module):
    """The plain network under the name ``net``, so parameter names match the run's results."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net


def default_layers(holder: nn.Module, cfg: DictConfig) -> list[str]:
    """The run's own pruning targets (its pruning.targets settings)."""
    targets = OmegaConf.to_container(cfg.pruning.targets, resolve=True) if (
        "pruning" in cfg and "targets" in cfg.pruning) else {}
    return [t.name for t in find_targets(holder, **_arguments(targets))]


def _arguments(node: dict) -> dict:
    return {k: v for k, v in node.items() if k not in ("_target_", "description")}


def run_method(cfg: DictConfig) -> str:
    """The run's criterion, or magnitude for a dense run."""
    p = OmegaConf.to_container(cfg.pruning, resolve=False) if "pruning" in cfg else {}
    if component_name(p.get("schedule")) in (None, "none"):
        return "l1_unstructured"
    return component_name(p.get("method")) or "l1_unstructured"


def method_knob(cfg: DictConfig, key: str, default: float) -> float:
    """A knob of the run's criterion (``norm``, ``dim``), or its default."""
    method = cfg.get("pruning", {}).get("method") if "pruning" in cfg else None
    return method.get(key, default) if method is not None else default


def to_csv(table: SensitivityTable) -> str:
    buf = io.StringIO()
    rows = table.rows()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def to_markdown(table: SensitivityTable, header: Iterable[str] = ()) -> str:
    """Layers × amounts, each cell the accuracy drop in points (negative: better than before)."""
    lines = [*header, "",
             f"Baseline accuracy {100 * table.baseline:.2f} %; criterion `{table.method}`; each "
             "cell: accuracy drop in points with that layer alone pruned to that amount "
             "(zeros already there count towards it).", "",
             "| layer | weights | zeros before | " + " | ".join(f"{a:g}" for a in table.amounts) + " |",
             "|---|---:|---:|" + "---:|" * len(table.amounts)]
    for layer in table.layers:
        cells = " | ".join(f"{table.drop(layer, a):.2f}" for a in table.amounts)
        lines.append(f"| {layer} | {table.numel[layer]:,} | {100 * table.sparsity[layer]:.1f} % "
                     f"| {cells} |")
    return "\n".join(lines) + "\n"


def plot(table: SensitivityTable, path: Path | io.BytesIO, title: str) -> None:
    """Accuracy drop vs amount, one line per layer, on a logit x axis (0.9 → 0.99 as wide as 0.5 → 0.9)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for layer in table.layers:
        ax.plot(table.amounts, [table.drop(layer, a) for a in table.amounts], marker="o",
                label=f"{layer} ({table.numel[layer]:,})")
    lo, hi = min(table.amounts), max(table.amounts)
    ax.set_xscale("logit")
    ax.set_xlim(max(lo / 1.15, 1e-3), min(1 - (1 - hi) / 1.5, 1 - 1e-4))
    ax.xaxis.set_major_locator(FixedLocator(table.amounts))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(table.amounts, [f"{100 * a:g} %" for a in table.amounts])
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("layer's sparsity (fraction of its weights zero)")
    ax.set_ylabel("validation accuracy drop (points)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(PROG, __doc__, [
        (f"{PROG} outputs/runs/<run>",
         "every targeted layer at 50 … 99 %: table, CSV and plot in the run folder"),
        (f"{PROG} outputs/runs/<run> --amounts 0.9,0.95,0.99 --batches 2",
         "a coarser, faster look (two validation batches)"),
        (f"{PROG} outputs/runs/<run> --derive-amounts 0.5",
         "also the largest amount per layer that costs at most 0.5 accuracy points"),
    ])
    parser.add_argument("run", help="a finished run directory, or a checkpoint inside one")
    parser.add_argument("--amounts", default=",".join(f"{a:g}" for a in DEFAULT_AMOUNTS),
                        help="comma-separated grid of per-layer target sparsities in (0, 1)")
    parser.add_argument("--layers", default=None,
                        help="comma-separated parameter names (default: the run's own targets, "
                             "e.g. net.conv1.weight)")
    parser.add_argument("--method", default=None,
                        help="pruning criterion (default: the run's, l1_unstructured for a "
                             "dense run)")
    parser.add_argument("--batches", type=int, default=None,
                        help="validation batches to measure on (default: all)")
    parser.add_argument("--derive-amounts", type=float, default=None, metavar="DROP",
                        help="print and write the largest amount per layer whose drop is at "
                             "most DROP accuracy points")
    parser.add_argument("--out", default=None, help="output folder (default: the run folder)")
    add_run_source_args(parser)
    add_verbosity_args(parser)
    args = parser.parse_args(argv)
    setup(args.verbosity)
    log = get_logger(__name__)
    try:
        grid = parse_grid(args.amounts)
        if args.batches is not None and not 1 <= args.batches <= MAX_STEPS:
            raise ConfigError(f"--batches {args.batches} must be >= 1 (at most {MAX_STEPS}; "
                              "or left out: all)")
        if args.derive_amounts is not None and not 0 <= args.derive_amounts <= MAX_DROP_PTS:
            raise ConfigError(f"--derive-amounts {args.derive_amounts} must be a drop in "
                              f"accuracy points >= 0 (at most {MAX_DROP_PTS:g}), e.g. 0.5")
        net, cfg, weights = load_finished_run(args.run, args.allow_target)
        run_dir = find_run_dir(Path(args.run))
        out = Path(args.out) if args.out else run_dir
        holder = _Holder(net).eval()
        layers = ([s.strip() for s in args.layers.split(",") if s.strip()] if args.layers
                  else default_layers(holder, cfg))
        method = args.method or run_method(cfg)
        check_inputs(holder, layers, method)  # before any data is read
        binary = cfg.model.get("task") == "binary"
        batches = val_batches(cfg, args.data_dir, args.batches)
        log.info("measuring %d layers x %d amounts on %d validation batches of %s",
                 len(layers), len(grid), len(batches), weights)

        def accuracy(model: nn.Module) -> float:
            return evaluate(model.net, batches, binary)["test_acc"]

        table = analyze(holder, accuracy, layers, grid, method=method,
                        norm=float(method_knob(cfg, "norm", 2.0)),
                        dim=int(method_knob(cfg, "dim", 0)),
                        seed=int(cfg.get("seed", 0)))
        command = Invocation.current().command(
            "sensitivity", *(sys.argv[1:] if argv is None else argv))
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        header = [f"# Layer sensitivity of {run_dir.name}", "",
                  f"{stamp} on {platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs); "
                  f"`{command}`; weights {weights}; {len(batches)} validation batches."]
        out.mkdir(parents=True, exist_ok=True)
        markdown = to_markdown(table, header)
        atomic_write(out / "sensitivity.csv", to_csv(table))
        atomic_write(out / "sensitivity.md", markdown)
        buf = io.BytesIO()
        plot(table, buf, f"{run_dir.name}: each layer pruned alone ({method}); {stamp}")
        atomic_write(out / "sensitivity.png", buf.getvalue())
        print(markdown, end="")
        if args.derive_amounts is not None:
            snippet = amounts_yaml(derive_amounts(table, args.derive_amounts),
                                   args.derive_amounts, GUIDANCE)
            atomic_write(out / "sensitivity_amounts.yaml", snippet)
            print()
            print(snippet, end="")
        log.info("wrote sensitivity.csv, sensitivity.md, sensitivity.png to %s", out)
    except PrunelabError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return err.exit_code  # 2 bad input, 3 no valid result (docs/guide/cli.md)
    except OSError as err:
        print(f"{PROG}: error: {write_error(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
