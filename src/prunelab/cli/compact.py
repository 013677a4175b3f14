"""``prunelab compact <run dir>``: shrink a structured-pruned run's network for real.

Reads ``<run dir>/final_model.pt`` (the plain network's state dict; masks, if any, are folded;
``checkpoints/last.ckpt`` when it is missing) and ``<run dir>/.hydra/config.yaml`` (the network is
built from its ``model.net`` node; only allow-listed ``_target_``s, see ``--allow-target``),
removes the zeroed output filters/neurons (:func:`prunelab.pruning.compaction.compact`), writes
``<run dir>/compact_model.pt2`` (``torch.export``: loads with
``torch.export.load(path).module()``, no prunelab needed), prints parameters, MACs and measured
latency before and after, and adds ``params_compact``, ``macs_compact``, ``latency_ms`` (and
``speedup_compact``, ``latency_threads``, ``compact_layers``) to the run's ``results.json``.
The example input that fixes the network's input shape comes from the run's data module
(:func:`prunelab.data.example_input`), or from ``--input-shape``.

A bad run directory is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunelab.bounds import MAX_BATCH_SIZE, MAX_GRID, MAX_IMAGE_SIDE, MAX_PARAMS, MAX_RUN_TIME
from prunelab.cli.help import add_run_source_args, make_parser
from prunelab.errors import ConfigError, PrunelabError
from prunelab.io import write_json
from prunelab.messages import SUMMARY_LOGGER, add_verbosity_args, get_logger, setup
from prunelab.paths import COMPACT_MODEL, RESULTS, run_config

if TYPE_CHECKING:  # torch loads when the command runs, not when --help lists it
    from torch import Tensor, nn

PROG = "prunelab compact"
log = get_logger(__name__)


class RunDirError(PrunelabError):
    """The path is not a finished prunelab run directory."""


def load_run(run_dir: Path, allow: Iterable[str] = ()) -> tuple[nn.Module, Any]:
    """The run's plain network with its final weights, and the run's composed config.

    The same loading as ``prunelab evaluate`` (:func:`prunelab.loading.load_finished_run`):
    ``final_model.pt``, else ``checkpoints/last.ckpt``; allow-listed ``_target_``s only.
    """
    from prunelab.loading import load_finished_run  # lazy: torch, not needed by --help

    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a directory: give a prunelab run directory")
    if not run_config(run_dir).exists():
        raise RunDirError(f"{run_dir} is not a prunelab run: {run_config(run_dir)} "
                          "(its composed config) is missing")
    net, cfg, _ = load_finished_run(run_dir, allow)
    return net, cfg


def example_input(cfg: Any, shape: list[int] | None = None, data_dir: str | None = None) -> Tensor:
    """One input sample for the run's network: ``--input-shape`` (float), else from the run's
    data module (:func:`prunelab.data.example_input`)."""
    import torch

    if shape:
        return torch.randn(*shape)
    # lazy: torch and Lightning, not needed by --help
    from prunelab.data import example_input as from_data
    from prunelab.loading import run_datamodule

    return from_data(run_datamodule(cfg, data_dir))


def _fmt(n: float) -> str:
    return f"{n:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(PROG, __doc__, [
        (f"{PROG} outputs/runs/<run>",
         "shrink a run pruned with ln_structured or random_structured; writes compact_model.pt2 "
         "and adds sizes and latencies to results.json"),
        (f"{PROG} outputs/runs/<run> --no-latency",
         "sizes only, without timing"),
        (f"{PROG} outputs/runs/<run> --batch-sizes 1,64 --min-run-time 2",
         "time other batch sizes, longer"),
    ])
    parser.add_argument("run_dir", type=Path, help="a finished run directory (outputs/runs/...)")
    parser.add_argument("--min-run-time", type=float, default=0.5,
                        help="seconds of timing per model and batch size (default 0.5)")
    parser.add_argument("--batch-sizes", default="1,256", help="comma-separated (default 1,256)")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    parser.add_argument("--input-shape", default=None,
                        help="float input shape with batch, e.g. 1,3,32,32 (default: from the "
                             "run's data module)")
    add_run_source_args(parser, "where the data sets are, if the data module must read them "
                                "for an example input (default: the run's)")
    add_verbosity_args(parser)
    args = parser.parse_args(argv)
    setup(args.verbosity)
    try:
        return _main(args)
    except PrunelabError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return err.exit_code  # 2 bad input, 3 no valid result (docs/guide/cli.md)


def int_list(flag: str, text: str, lo: int, hi: int, most: int) -> list[int]:
    """``"1,64"`` → [1, 64], each an integer in [lo, hi], at most ``most`` of them."""
    words = [w.strip() for w in str(text).split(",")]
    if not 1 <= len(words) <= most or not all(w.lstrip("-").isdigit() for w in words):
        raise ConfigError(f"{flag} {text}: give 1 to {most} integers separated by commas")
    values = [int(w) for w in words]
    bad = next((v for v in values if not lo <= v <= hi), None)
    if bad is not None:
        raise ConfigError(f"{flag} {text}: {bad} is not in [{lo}, {hi}]")
    return values


def check_args(args: argparse.Namespace) -> tuple[list[int] | None, tuple[int, ...]]:
    """The flags, checked before anything is loaded: (input shape, batch sizes)."""

    if not (math.isfinite(args.min_run_time) and 0 < args.min_run_time <= MAX_RUN_TIME):
        raise ConfigError(f"--min-run-time {args.min_run_time:g}: give seconds in "
                          f"(0, {MAX_RUN_TIME:g}]")
    sizes = tuple(int_list("--batch-sizes", args.batch_sizes, 1, MAX_BATCH_SIZE, MAX_GRID))
    shape = None
    if args.input_shape:
        shape = int_list("--input-shape", args.input_shape, 1, MAX_IMAGE_SIDE, 8)
        if math.prod(shape) > MAX_PARAMS:
            raise ConfigError(f"--input-shape {args.input_shape}: {math.prod(shape):.3g} "
                              f"values, more than {MAX_PARAMS:.3g}")
    return shape, sizes


def _main(args: argparse.Namespace) -> int:
    import torch

    # lazy: torch and Lightning, not needed by --help
    from prunelab.pruning.compaction import compact_fields, compact_with_report, save_compact
    from prunelab.pruning.latency import efficiency_report
    from prunelab.pruning.metrics import macs, param_counts

    shape, sizes = check_args(args)
    run_dir: Path = args.run_dir
    results_path = run_dir / RESULTS
    net, cfg = load_run(run_dir, args.allow_target)
    if not results_path.exists():
        raise RunDirError(f"{run_dir} has no results.json: the run did not finish")
    try:
        results = json.loads(results_path.read_text())
    except (OSError, ValueError) as err:
        raise RunDirError(f"{results_path} is unreadable ({type(err).__name__})") from None
    example = example_input(cfg, shape, args.data_dir)
    if shape is not None:
        try:
            with torch.no_grad():
                net.eval()(example)
        except RuntimeError as err:
            raise ConfigError(f"--input-shape {args.input_shape} does not fit the network "
                              f"({str(err).strip().splitlines()[0][:200]}); give the shape of "
                              "one input batch, e.g. 1,1,28,28") from None
    log.info("removing the zeroed filters and neurons of %s", run_dir)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small, report = compact_with_report(net, example)
    for w in caught:
        if "compact kept" in str(w.message):
            log.warning("%s", w.message)
    # token ids are padded per batch: their length varies too
    dims = (0,) if example.is_floating_point() else (0, 1)
    save_compact(small, run_dir / COMPACT_MODEL, example, dynamic_dims=dims)

    before = {**param_counts(net), **macs(net, example)}
    after = compact_fields(small, example)
    fields: dict[str, Any] = dict(after)
    fields["compact_layers"] = {k: list(v) for k, v in report.layers.items()}
    if not args.no_latency:
        log.info("timing the dense, masked and compact models at batch sizes %s",
                 ", ".join(map(str, sizes)))
        fields.update(efficiency_report(None, net, example, batch_sizes=sizes,
                                        min_run_time=args.min_run_time, compact_model=small))
        fields["params_compact"], fields["macs_compact"] = after["params_compact"], after["macs_compact"]

    out = [f"compacted {run_dir} -> {run_dir / COMPACT_MODEL}"]
    for name, (a, b) in report.layers.items():
        out.append(f"  {name:<24} {a:>6} -> {b:<6} units")
    out.append(f"  {'':<20} {'before':>14} {'after':>14} {'ratio':>7}")
    rows = [("params", before["params_total"], after["params_compact"]),
            ("MACs", before["macs_dense"], after["macs_compact"])]
    for label, a, b in rows:
        out.append(f"  {label:<20} {_fmt(a):>14} {_fmt(b):>14} {b / a if a else 0:>7.3f}")
    if "latency_ms" in fields:
        lat = fields["latency_ms"]
        for bs in lat["dense"]:
            a, m, c = lat["dense"][bs], lat["masked"][bs], lat["compact"][bs]
            out.append(f"  latency {bs:<12} {a:>11.3f} ms {c:>11.3f} ms {c / a:>7.3f}"
                       f"  (masked {m:.3f} ms; {torch.get_num_threads()} threads)")
    out.append(f"  max |compact - original| on a check batch: {report.max_abs_diff:.2e}")

    results.update(fields)
    write_json(results_path, results)
    out.append(f"updated {results_path}")
    get_logger(SUMMARY_LOGGER).info("\n".join(out))
    return 0

