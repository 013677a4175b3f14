"""Size/accuracy table of exported runs: every ``export.json`` under the given run directories.

    .venv/bin/python benchmarks/export_table.py RUN_OR_SWEEP_DIR... [--csv out.csv]

One row per (run, encoding): the run's target sparsity and epochs, the artifact's bytes, its
ratio to the dense fp32 state dict, and the test error measured from the file (and from the
run's own weights, for the cost of quantisation).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from prunelab.export.codecs import ENCODINGS


def rows(dirs: list[Path]) -> list[dict]:
    out = []
    for d in dirs:
        for path in sorted(d.glob("**/export/*/export.json")):
            rec = json.loads(path.read_text())
            run = path.parents[2]
            res = json.loads((run / "results.json").read_text())
            out.append({
                "amount": res.get("amount"), "epochs": res.get("epochs"),
                "sparsity": res.get("sparsity_global"), "encoding": rec["encoding"],
                "bytes": rec["artifact_bytes"], "ratio": rec["ratio"],
                "error_file": 1 - rec["test_acc"], "error_run": 1 - rec["source_test_acc"],
                "nonzero": rec["params_nonzero"], "run": str(run)})
    order = {e: i for i, e in enumerate(ENCODINGS)}
    return sorted(out, key=lambda r: (r["amount"], r["epochs"], order.get(r["encoding"], 99)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()
    table = rows(args.dirs)
    print("| sparsity (target) | epochs | encoding | bytes | × smaller | non-zero params | test error, file | "
          "test error, run weights |")
    print("|---|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['amount']:.0%} | {r['epochs']} | {r['encoding']} | {r['bytes']:,} | "
              f"{r['ratio']:.1f} | {r['nonzero']:,} | {r['error_file']:.2%} | {r['error_run']:.2%} |")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows(table)


if __name__ == "__main__":
    main()
