"""``prunelab export <run dir> [--encoding E ...] [--format F,F...]``: ship a finished run's model.

For each encoding, writes ``<run>/export/<encoding>/model.plx`` (one self-contained compressed
file), loads it back with ``prunelab.export.load``, measures its test accuracy on the run's test
set and writes ``export.json`` beside it; ``model.onnx`` too when ``onnx`` is installed.
``--format onnx,onnx-int8,executorch,executorch-int8`` (any subset, and the encodings too)
writes files for other runtimes, ``<run>/export/<format>/model.onnx`` or ``model.pte``, each run
in its own runtime (ONNX Runtime, ExecuTorch) on the test set and timed there against the dense
fp32 file of the same network, its accuracy, size and latency in its ``export.json``; a
``-compact`` name (``onnx-int8-compact`` ...) exports the run's compacted network instead. ``prunelab export <file>`` checks a ``.plx``, ``.onnx`` or ``.pte`` file and
prints what it holds (JSON). A network of your own (a ``--config-dir`` model) is built only
with ``--allow-target PREFIX``, for the run and for its artifacts alike.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prunelab.cli.help import add_run_source_args, make_parser
from prunelab.errors import PrunelabError
from prunelab.export import choice, codecs, deadunits
from prunelab.export.runs import DEFAULT_ENCODINGS, FORMATS, check_format, describe, export_run
from prunelab.messages import add_verbosity_args, setup

PROG = "prunelab export"


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(PROG, __doc__, [
        (f"{PROG} outputs/runs/<run>", "the default: kmeans5, kmeans6 or kmeans8, chosen by "
         "validation accuracy, measured on the test set"),
        (f"{PROG} outputs/runs/<run> --encoding int8 --encoding kmeans4", "two encodings"),
        (f"{PROG} outputs/runs/<run> --encoding all --no-eval", "every encoding, no test-set pass"),
        (f"{PROG} outputs/runs/<run> --format onnx,onnx-int8,executorch,executorch-int8",
         "files for ONNX Runtime and ExecuTorch, fp32 and int8, each run on the test set"),
        (f"{PROG} outputs/runs/<run> --format executorch-int8-compact --threads 2",
         "the compacted network of a structured-pruned run, int8, timed on 2 threads"),
        (f"{PROG} outputs/runs/<run>/export/kmeans5/model.plx", "check an artifact"),
        (f"{PROG} outputs/runs/<run> --allow-target mylab.",
         "a run of your own network (a class of the mylab package)"),
    ], reference="docs/guide/export.md")
    parser.add_argument("path", help="a finished run directory (or an artifact file to check)")
    parser.add_argument("--encoding", action="append", metavar="E",
                        help=f"repeatable; one of {', '.join(codecs.ENCODINGS)}, 'all', or "
                             f"'{choice.AUTO}': the smallest of {', '.join(choice.CANDIDATES)} "
                             "as accurate as the run on its validation split (default: "
                             f"{', '.join(DEFAULT_ENCODINGS)})")
    parser.add_argument("--format", action="append", metavar="F,F...",
                        help=f"comma-separated, repeatable; any of {', '.join(FORMATS)} "
                             "(without --encoding: only these)")
    parser.add_argument("--out", help="folder for the artifacts (default: <run>/export)")
    parser.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation")
    parser.add_argument("--latency", action=argparse.BooleanOptionalAction, default=True,
                        help="time each --format file in its runtime at batch 256 and 1, paired "
                             "with the dense fp32 file of the same network in that runtime "
                             "(default: on; a few seconds per file)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="threads of the runtimes while timing (default: torch's thread "
                             "count, usually the physical cores)")
    parser.add_argument("--finetune-epochs", type=int, default=0, metavar="N",
                        help="train the k-means shared values N epochs on the run's training data "
                             "first (trained quantisation; kmeans encodings; into "
                             "<encoding>-ftN/; default 0: off)")
    parser.add_argument("--biases", choices=codecs.VECTOR_CODINGS, default="fp32",
                        help="how biases and other 1-D tensors store their non-zeros: fp32 "
                             "exactly (default) or int8 per tensor (into <encoding>-b8/)")
    parser.add_argument("--dead-units", choices=deadunits.MODES, default=deadunits.DEFAULT,
                        help="units that cannot change the output: zero their weights and "
                             "biases (default), also fold non-zero constants into the next "
                             "layer's biases (fold), or keep them as trained")
    parser.add_argument("--max-bytes", type=int, metavar="N",
                        help=f"with --encoding {choice.AUTO}: the most accurate (on the "
                             f"validation split) of {', '.join(choice.BUDGET_CANDIDATES)} "
                             "whose file takes at most N bytes")
    add_run_source_args(parser)
    add_verbosity_args(parser)
    args = parser.parse_args(argv)
    setup(args.verbosity)
    try:
        path = Path(args.path)
        if path.is_file():
            print(json.dumps(describe(path, args.allow_target), indent=2))
            return 0
        if not path.is_dir():
            raise PrunelabError(f"{path} does not exist: give a finished run directory or a .plx file")
        formats = [check_format(f.strip()) for arg in args.format or [] for f in arg.split(",")
                   if f.strip()]
        encodings = args.encoding or ([] if formats else list(DEFAULT_ENCODINGS))
        if "all" in encodings:
            encodings = list(codecs.ENCODINGS)
        for enc in encodings:
            if enc != choice.AUTO:
                codecs.check_encoding(enc)
        encodings = list(dict.fromkeys([*encodings, *formats]))
        export_run(path, encodings, Path(args.out) if args.out else None, args.data_dir,
                   evaluate=not args.no_eval, finetune_epochs=args.finetune_epochs,
                   allow=args.allow_target, latency=args.latency, threads=args.threads,
                   biases=args.biases, dead_units=args.dead_units, max_bytes=args.max_bytes)
    except PrunelabError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return err.exit_code  # 2 bad input, 3 no valid result (docs/guide/cli.md)
    return 0
