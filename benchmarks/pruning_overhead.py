"""What the pruning callback costs: fit time with ``pruning=iterative`` vs ``pruning=none``.

    .venv/bin/python benchmarks/pruning_overhead.py [--quick | --short] [--threads T] [--repeats R]

Both runs go through the real CLI (``python -m prunelab``, one subprocess each, back to back,
alternating when ``--repeats`` > 1) with the same epochs (``trainer.max_epochs``, default 10:
the iterative schedule's 9 steps 10 % → 50 % at the end of epochs 0-8, then one fine-tuning
epoch), whole epochs by default (860 train batches, 5 validation batches: about 6 minutes for
both runs on 2 cores; ``--short`` for 200 train batches and 1 validation batch, ``--quick``
for 20 and 1). Printed:
``fit_seconds`` of each (from ``results.json``; process start-up and the test pass are outside
it), their ratio, the ratio of the processes' CPU time, and where the difference goes:

* the callback's own time, the sum of ``seconds`` over ``pruning_history`` (computing and
  applying the masks),
* the post-step validation that records each step's ``val_acc_after`` (``eval_seconds``; its
  size is ``pruning.eval_batches``, default 1 batch: ``--eval-batches`` changes it),
* the masked training itself: the median epoch of the pruned run over the dense run's
  (``epoch_seconds``, which hold training and validation but not the pruning step; a median
  is robust to the bursts of a shared virtual machine, which move whole-fit times by 10 %).

Shortened epochs (``--short``, ``--quick``, ``--train-batches``) keep the post-step validation
at 1,000 images, so it weighs 4.3× (``--short``) or 43× (``--quick``) what it does after a
whole epoch: only whole epochs give the overhead a real run pays.

Data: ``--data-dir``, else ``$PRUNELAB_DATA``, else ``../shared/data`` next to the checkout.
The ``target <= 1.02`` / ``<= 2 %`` printed beside the figures is the reference this benchmark
checks: pruning should add at most 2 % to a run's fit time (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
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
        if args.eval_batches is not None:
            cmd.append(f"pruning.eval_batches={args.eval_batches}")
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
    parser.add_argument("--short", action="store_true",
                        help="200 train batches and 1 val batch per epoch (~3 min)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-batches", type=int, default=None,
                        help="trainer.limit_train_batches (default: all 860)")
    parser.add_argument("--val-batches", type=int, default=None,
                        help="trainer.limit_val_batches (default: all 5 of 1000 images)")
    parser.add_argument("--method", default="l1_unstructured", help="pruning/method choice")
    parser.add_argument("--eval-batches", default=None,
                        help="pruning.eval_batches (default: the config's, 1; null: all; 0: none)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    if args.quick or args.short:
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
    epochs: dict[str, list[float]] = {"none": [], "iterative": []}
    callback: list[float] = []
    evals: list[float] = []
    with tempfile.TemporaryDirectory(prefix="prunelab-overhead-") as tmp:
        for r in range(args.repeats):
            for pruning in ("none", "iterative"):
                res = run_once(Path(tmp) / f"{pruning}-{r}", data_dir, pruning, args)
                fits[pruning].append(res["fit_seconds"])
                cpu[pruning].append(res["_cpu"])
                epochs[pruning].extend(res["epoch_seconds"][1:])  # epoch 0 warms up
                line = (f"  {pruning:<10} fit {res['fit_seconds']:8.2f} s   "
                        f"median epoch {statistics.median(res['epoch_seconds'][1:]):.3f} s   "
                        f"(process: wall {res['_wall']:.1f} s, cpu {res['_cpu']:.1f} s)")
                if pruning != "none":
                    steps = res.get("pruning_history", [])
                    own = sum(float(s.get("seconds", 0.0)) for s in steps)
                    ev = sum(float(s.get("eval_seconds", 0.0)) for s in steps)
                    callback.append(own)
                    evals.append(ev)
                    line += f"   {len(steps)} steps: masks {own:.3f} s, post-step eval {ev:.3f} s"
                print(line, flush=True)
    dense, pruned = min(fits["none"]), min(fits["iterative"])
    print(f"\nfit iterative / none (best of {args.repeats}): {pruned / dense:.3f}  "
          f"(+{pruned - dense:.2f} s; target <= 1.02)")
    print(f"process cpu time iterative / none (best of {args.repeats}): "
          f"{min(cpu['iterative']) / min(cpu['none']):.3f}")
    dense_fit = statistics.median(fits["none"])
    own, ev = statistics.median(callback), statistics.median(evals)
    masked = statistics.median(epochs["iterative"]) / statistics.median(epochs["none"])
    total = (own + ev) / dense_fit + (masked - 1)
    print("decomposition (medians over all rounds):")
    print(f"  masks computed and applied: {own / dense_fit:7.2%} of the dense fit ({own:.3f} s)")
    print(f"  post-step validation:       {ev / dense_fit:7.2%} ({ev:.3f} s)")
    print(f"  masked training epochs:     {masked - 1:+7.2%} (median epoch {masked:.3f}x dense's)")
    print(f"  sum:                        {total:+7.2%}  (target <= 2 %)")


if __name__ == "__main__":
    main()
