"""Dense vs masked vs compacted LeNet: CPU latency at 50 % and 75 % filter sparsity.

    .venv/bin/python benchmarks/compact_speed.py [--quick] [--threads N] [--min-run-time S]

Masks come from ``prunelab.pruning.methods.ln_structured`` (dim 0: whole conv filters / fc
neurons) on conv1, conv2 and fc1, applied with ``torch.nn.utils.prune.custom_from_mask``; the
classifier fc2 stays dense. Weights are random (latency does not depend on the values). Each
figure is ``prunelab.pruning.latency.measure_latency``'s (``torch.utils.benchmark.Timer``:
warm-up, then the median of 7 timed blocks), the best of ``--rounds`` interleaved rounds (dense, masked, compact, dense, ...), since a shared
machine only ever adds time.

Targets (issue #6): compact bs256 latency <= 0.45x dense at 50 %, <= 0.25x at 75 %; compact
outputs equal to the masked model's within 1e-5.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch.nn.utils import prune

from prunelab.models import LeNet
from prunelab.pruning.compact import clone_module, compact_with_report, fold_masks
from prunelab.pruning.latency import make_batch, measure_latency
from prunelab.pruning.methods import ln_structured
from prunelab.pruning.metrics import macs

TARGETS = {0.5: 0.45, 0.75: 0.25}


def masked_lenet(amount: float, seed: int = 0) -> LeNet:
    torch.manual_seed(seed)
    net = LeNet()
    for name in ("conv1", "conv2", "fc1"):
        module = net.get_submodule(name)
        prune.custom_from_mask(module, "weight", ln_structured(module.weight, amount))
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short timings (0.2 s per figure)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's, i.e. all cores)")
    parser.add_argument("--min-run-time", type=float, default=None,
                        help="seconds of timing per model and batch size (default 1.0)")
    parser.add_argument("--amounts", default="0.5,0.75")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved timing rounds; the best round is kept (default 3)")
    parser.add_argument("--channels-last", action="store_true",
                        help="time all three models with channels_last weights and inputs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    min_run_time = args.min_run_time or (0.2 if args.quick else 1.0)
    print(f"# compact_speed  torch {torch.__version__}  {platform.machine()}  "
          f"{torch.get_num_threads()} threads  min_run_time {min_run_time}s  "
          f"{'channels_last  ' if args.channels_last else ''}"
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    example = torch.randn(1, 1, 28, 28)
    check = torch.randn(64, 1, 28, 28)
    ok = True
    for amount in (float(a) for a in args.amounts.split(",")):
        masked = masked_lenet(amount)
        dense = fold_masks(clone_module(masked))
        torch.manual_seed(0)
        t0 = time.perf_counter()
        small, report = compact_with_report(masked, example)
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            diff = float((small(check) - masked(check)).abs().max())
        models = {"dense": dense, "masked": masked, "compact": small}
        batch_fn = None
        if args.channels_last:
            models = {k: clone_module(m).to(memory_format=torch.channels_last)
                      for k, m in models.items()}

            def batch_fn(bs: int) -> torch.Tensor:
                return make_batch(example, bs).contiguous(memory_format=torch.channels_last)

        # interleaved rounds, best round kept: a busy machine only ever adds time
        lat: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            for name, m in models.items():
                got = measure_latency(m, batch_fn or example, (1, 256), "cpu",
                                      min_run_time / args.rounds)
                lat[name] = {k: min(v, lat.get(name, {}).get(k, v)) for k, v in got.items()}
        mac = (macs(dense, example)["macs_dense"], macs(small, example)["macs_dense"])
        params = (sum(p.numel() for p in dense.parameters()),
                  sum(p.numel() for p in small.parameters()))
        print(f"\nsparsity {amount:.0%}: layers {report.layers}  (compaction took {seconds:.2f} s)")
        print(f"  params {params[0]:,} -> {params[1]:,} ({params[1] / params[0]:.3f}x)   "
              f"MACs {mac[0]:,} -> {mac[1]:,} ({mac[1] / mac[0]:.3f}x)")
        print(f"  {'batch':<6} {'dense ms':>10} {'masked ms':>10} {'compact ms':>11} "
              f"{'masked/dense':>13} {'compact/dense':>14}")
        for bs in ("bs1", "bs256"):
            d, m, c = lat["dense"][bs], lat["masked"][bs], lat["compact"][bs]
            print(f"  {bs:<6} {d:>10.3f} {m:>10.3f} {c:>11.3f} {m / d:>13.3f} {c / d:>14.3f}")
        ratio = lat["compact"]["bs256"] / lat["dense"]["bs256"]
        target = TARGETS.get(amount)
        verdict = "" if target is None else (
            f"  target <= {target}: {'met' if ratio <= target else 'NOT met'}")
        print(f"  max |compact - masked| over 64 inputs: {diff:.2e} "
              f"({'within' if diff <= 1e-5 else 'OUTSIDE'} 1e-5){verdict}")
        ok &= diff <= 1e-5
    if not ok:
        raise SystemExit("compact outputs differ from the masked model's by more than 1e-5")


if __name__ == "__main__":
    main()
