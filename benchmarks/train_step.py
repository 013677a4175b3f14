"""What makes the LeNet's batch-64 SGD step faster on this CPU: threads, channels_last, compile.

    .venv/bin/python benchmarks/train_step.py [--quick] [--no-compile] [--rounds R]

A plain loop over in-memory tensors (synthetic normalised 1x28x28 images and labels: the time
does not depend on the values), prunelab's default optimiser (SGD 0.05, Nesterov momentum 0.9,
weight decay 5e-4). One step = zero_grad, forward, cross-entropy, backward, optimiser step.
Variants:

* ``threads=1`` / ``threads=N`` (``torch.set_num_threads``; N = all cores),
* ``channels_last``: model and input batches in ``torch.channels_last`` memory format,
* ``compile``: ``torch.compile(net)`` (inductor); its compile time (first step, forward and
  backward) is printed apart from the per-step time, with the break-even step count,
* ``relu-pool`` (eager only): the reference article's ReLU-then-max-pool order instead of
  prunelab's LeNet's pool-then-ReLU (the same function and gradients; what the order buys).

Each variant runs ``--steps`` steps after a warm-up, in ``--rounds`` interleaved rounds (so
that a busy machine hits all variants alike); printed: the median step of the best round and the
median over rounds, with the ratio to eager ``threads=1``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from prunelab.models import LeNet


class ArticleOrderLeNet(LeNet):
    """The reference article's order: ReLU on the full conv output, then the max-pool."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def make_step(channels_last: bool, compile_: bool, batches: list[tuple[torch.Tensor, torch.Tensor]],
              relu_first: bool = False) -> tuple[Callable[[int], None], float]:
    torch.manual_seed(0)
    net = ArticleOrderLeNet() if relu_first else LeNet()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    model = torch.compile(net) if compile_ else net
    model.train()

    def step(i: int) -> None:
        x, y = batches[i % len(batches)]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step(0)  # first step: compile (if any), allocator warm-up
    first = time.perf_counter() - t0
    return step, first


def time_steps(step: Callable[[int], None], steps: int, warmup: int) -> float:
    for i in range(warmup):
        step(i)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile variants")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", default=None,
                        help="comma-separated thread counts to try (default: 1 and all cores)")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 3)
    steps = args.steps or (20 if args.quick else 50)
    cores = os.cpu_count() or 1
    default_threads = torch.get_num_threads()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(args.batch_size, 1, 28, 28, generator=g),
                torch.randint(0, 10, (args.batch_size,), generator=g)) for _ in range(16)]
    thread_counts = (sorted({int(t) for t in args.threads.split(",")}) if args.threads
                     else sorted({1, default_threads}))
    # (threads, channels_last, compile, relu before pool)
    base_key = (thread_counts[0], False, False, True)
    variants = [(t, cl, False, rf) for t in thread_counts for cl in (False, True)
                for rf in (True, False)]
    if not args.no_compile:
        variants += [(t, cl, True, False) for t in thread_counts for cl in (False, True)]
    print(f"# train_step  {time.strftime('%Y-%m-%d %H:%M')}  torch {torch.__version__}  "
          f"cpus {cores}  default threads {default_threads}  batch {args.batch_size}  "
          f"{steps} steps x {rounds} rounds")
    steppers = {}
    firsts = {}
    for v in variants:
        torch.set_num_threads(v[0])
        steppers[v], firsts[v] = make_step(v[1], v[2], batches, relu_first=v[3])
    results: dict[tuple[int, bool, bool, bool], list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            torch.set_num_threads(v[0])
            results[v].append(time_steps(steppers[v], steps, warmup=3))
    torch.set_num_threads(default_threads)
    base = min(results[base_key])
    print(f"  {'threads':>7} {'layout':<14} {'order':<10} {'mode':<8} {'best ms':>8} "
          f"{'median ms':>10} {f'vs t={thread_counts[0]} relu-pool':>18} {'first step s':>13}")
    for v in variants:
        t, cl, comp, rf = v
        best, med = min(results[v]), statistics.median(results[v])
        print(f"  {t:>7} {'channels_last' if cl else 'contiguous':<14} "
              f"{'relu-pool' if rf else 'pool-relu':<10} "
              f"{'compile' if comp else 'eager':<8} {best * 1e3:>8.2f} {med * 1e3:>10.2f} "
              f"{best / base:>18.3f} {firsts[v]:>13.2f}")
    if not args.no_compile:
        for t in thread_counts:
            for cl in (False, True):
                eager = min(results[(t, cl, False, False)])
                comp = min(results[(t, cl, True, False)])
                gain = eager - comp
                cost = firsts[(t, cl, True, False)] - firsts[(t, cl, False, False)]
                be = f"{cost / gain:,.0f} steps" if gain > 0 else "never"
                print(f"  compile break-even (threads={t}, "
                      f"{'channels_last' if cl else 'contiguous'}): {be} "
                      f"(compile {cost:.1f} s, saves {gain * 1e3:.2f} ms/step; "
                      f"an MNIST epoch is 860 steps)")


if __name__ == "__main__":
    main()
