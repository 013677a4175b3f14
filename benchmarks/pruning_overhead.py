"""What the pruning callback costs: fit time with ``pruning=iterative`` vs ``pruning=none``.

    .venv/bin/python benchmarks/pruning_overhead.py [--quick | --full] [--threads T] [--repeats R]

Both runs go through the real CLI (``python -m prunelab``, one subprocess each, back to back,
alternating when ``--repeats`` > 1) with the same epochs (``trainer.max_epochs``, default 10:
the iterative schedule's 9 steps 10 % → 50 % at the end of epochs 0-8, then one fine-tuning
epoch) and the same batch limits (default 200 train batches and 1 val batch per epoch,
about 3-4 minutes for both runs on 2 cores; ``--full`` for whole epochs). Printed:
``fit_seconds`` of each (from ``results.json``; process start-up and the test pass are outside
it), their ratio, the ratio of the processes' CPU time, and the callback's own time, the sum of
``seconds`` over ``pruning_history`` (computing and applying the masks). The difference
between the two fits also holds what pruning adds beyond that: the masked forward/backward
(``weight = weight_orig * weight_mask`` every step) and the validation pass the callback runs
after each step to record the accuracy it cost.

Data: ``--data-dir``, else ``$PRUNELAB_DATA``, else ``../shared/data`` next to the checkout.
Target (issue #6): iterative fit time <= 1.02 x dense.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    env = os.environ.get("PRUNELAB_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def run_once(run_dir: Path, data_dir: Path, pruning: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable, "-m", "prunelab", f"pruning={pruning}",
        f"trainer.max_epochs={args.epochs}", f"data_dir={data_dir}", "logger=none",
        "trainer.enable_progress_bar=false", "ckpt_path=null", "trainer.limit_test_batches=0",
        f"hydra.run.dir={run_dir}",
    ]
    if pruning != "none":
        cmd.append(f"pruning/method={args.method}")
    if args.train_batches:
        cmd.append(f"trainer.limit_train_batches={args.train_batches}")
    if args.val_batches is not None:
        cmd.append(f"trainer.limit_val_batches={args.val_batches}")
    if args.threads:
        cmd.append(f"threads={args.threads}")
    t0 = time.perf_counter()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    results = json.loads((run_dir / "results.json").read_text())
    results["_wall"] = wall
    results["_cpu"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="20 train batches and 1 val batch per epoch (a smoke figure)")
    parser.add_argument("--full", action="store_true",
                        help="whole epochs (860 train, 5 val batches): ~12 min on 2 cores")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-batches", type=int, default=None,
                        help="trainer.limit_train_batches (default 200; --full: all 860)")
    parser.add_argument("--val-batches", type=int, default=None,
                        help="trainer.limit_val_batches (default 1 of 1000 images; --full: all 5)")
    parser.add_argument("--method", default="l1_unstructured", help="pruning/method choice")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    if not args.full:
        # the default keeps a full epoch's proportions: 1,000 val images per 12,800 train images
        args.train_batches = args.train_batches or (20 if args.quick else 200)
        args.val_batches = 1 if args.val_batches is None else args.val_batches
    data_dir = args.data_dir or default_data_dir()
    if not (data_dir / "MNIST").exists():
        sys.exit(f"no MNIST under {data_dir}: pass --data-dir or set PRUNELAB_DATA")
    print(f"# pruning_overhead  {time.strftime('%Y-%m-%d %H:%M')}  epochs {args.epochs}  "
          f"train batches {args.train_batches or 'all'}  val batches {args.val_batches or 'all'}  "
          f"method {args.method}  cpus {os.cpu_count()}")
    fits: dict[str, list[float]] = {"none": [], "iterative": []}
    cpu: dict[str, list[float]] = {"none": [], "iterative": []}
    callback: list[float] = []
    with tempfile.TemporaryDirectory(prefix="prunelab-overhead-") as tmp:
        for r in range(args.repeats):
            for pruning in ("none", "iterative"):
                res = run_once(Path(tmp) / f"{pruning}-{r}", data_dir, pruning, args)
                fits[pruning].append(res["fit_seconds"])
                cpu[pruning].append(res["_cpu"])
                line = (f"  {pruning:<10} fit {res['fit_seconds']:8.2f} s   "
                        f"(process: wall {res['_wall']:.1f} s, cpu {res['_cpu']:.1f} s)")
                if pruning != "none":
                    steps = res.get("pruning_history", [])
                    own = sum(float(s.get("seconds", 0.0)) for s in steps)
                    callback.append(own)
                    line += f"   {len(steps)} steps, callback own time {own:.3f} s"
                print(line, flush=True)
    dense, pruned = min(fits["none"]), min(fits["iterative"])
    own = min(callback)
    print(f"\nfit iterative / none (best of {args.repeats}): {pruned / dense:.3f}  "
          f"(+{pruned - dense:.2f} s; target <= 1.02)")
    print(f"process cpu time iterative / none (best of {args.repeats}): "
          f"{min(cpu['iterative']) / min(cpu['none']):.3f}  (less sensitive to a busy machine)")
    print(f"callback own time / dense fit: {own / dense:.4f} ({own:.3f} s)")


if __name__ == "__main__":
    main()
