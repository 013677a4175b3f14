"""The same sweep run sequentially (Hydra's basic launcher) and in parallel (joblib): wall times.

    .venv/bin/python benchmarks/sweep_speedup.py [--jobs 4] [--n-jobs 2] [--batches 300]
        [--data-dir D]

The grid is ``pruning/method`` × ``pruning.schedule.amount`` (2 × ``jobs/2``) of ``model=cnn
pruning=one_shot`` on the full MNIST data, each job one epoch of ``--batches`` training batches
followed by the full validation and test sets: short jobs, so process start-up, data loading
and testing weigh as they do in a real sweep. ``basic`` runs the jobs one after the other, each
with torch's default threads (all cores); ``joblib`` runs ``--n-jobs`` at a time, each with
``cpu_count // n_jobs`` threads (prunelab's launcher config). Both sweeps go to fresh temporary
folders; the ratio is sequential wall time / parallel wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    env = os.environ.get("PRUNELAB_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def sweep(launcher: str, sweep_dir: Path, args: argparse.Namespace) -> tuple[float, list[dict]]:
    amounts = ",".join(f"{0.5 + 0.1 * i:.1f}" for i in range(args.jobs // 2))
    cmd = [sys.executable, "-m", "prunelab", "-m", "model=cnn", "pruning=one_shot",
           "pruning.schedule.start_epoch=0", "trainer.max_epochs=1",
           f"trainer.limit_train_batches={args.batches}", "logger=none",
           "trainer.enable_progress_bar=false", "pruning/method=l1_unstructured,global_magnitude",
           f"pruning.schedule.amount={amounts}", f"data_dir={args.data_dir}",
           f"hydra.sweep.dir={sweep_dir}", f"hydra/launcher={launcher}"]
    if launcher == "joblib":
        cmd.append(f"hydra.launcher.n_jobs={args.n_jobs}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{launcher} sweep failed:\n{proc.stderr[-3000:]}")
    results = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/results.json"))]
    if len(results) != args.jobs // 2 * 2:
        sys.exit(f"{launcher} sweep wrote {len(results)} results.json, expected {args.jobs}")
    return wall, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4, help="grid size (even; default 4)")
    parser.add_argument("--n-jobs", type=int, default=2, help="joblib's concurrent jobs")
    parser.add_argument("--batches", type=int, default=300, help="training batches per job")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    args.data_dir = args.data_dir or default_data_dir()
    if not (args.data_dir / "MNIST" / "raw").exists():
        sys.exit(f"no MNIST/raw under {args.data_dir}: pass --data-dir or set PRUNELAB_DATA")
    print(f"# sweep_speedup  {time.strftime('%Y-%m-%d %H:%M')}  cpus {os.cpu_count()}  "
          f"{args.jobs} jobs of {args.batches} batches  joblib n_jobs {args.n_jobs}")
    walls = {}
    with tempfile.TemporaryDirectory(prefix="prunelab-sweep-") as tmp:
        for launcher in ("basic", "joblib"):
            wall, results = sweep(launcher, Path(tmp) / launcher, args)
            walls[launcher] = wall
            fits = [r["fit_seconds"] for r in results]
            accs = ", ".join(f"{r['test_acc']:.4f}" for r in results)
            print(f"  {launcher:<7} wall {wall:7.1f} s  jobs' fit time {sum(fits):6.1f} s "
                  f"(mean {sum(fits) / len(fits):.1f} s)  test_acc {accs}", flush=True)
    print(f"  speed-up joblib vs sequential: {walls['basic'] / walls['joblib']:.2f}x")


if __name__ == "__main__":
    main()
