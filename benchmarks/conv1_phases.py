"""Can a rewrite of the compacted LeNet's first stage reach 0.10x the dense one in ExecuTorch?

    .venv/bin/python benchmarks/conv1_phases.py [--units 3-16-132] [--batch 256] [--rounds 30]

``benchmarks/deploy_speed.py`` finds that the compacted ``lenet5_structured_160k`` network misses
0.10x the dense fp32 LeNet at batch 256 in ExecuTorch's XNNPACK delegate because of conv1 (one
input channel, 3 filters of 5x5, then 2x2 max-pooling): XNNPACK runs it at the cost of 16 filters.
This script times an exact rewrite of that stage beside the compacted network, both fp32 and
int8, paired against the dense fp32 LeNet in the same rounds:

* ``phases-slices``: conv1 + pooling as one stride-2 6x6 convolution with 4 x 3 filters, one per
  pooling phase (each phase's filter is the 5x5 filter shifted by its offset inside the 2x2
  window), then the elementwise maximum of the four phase groups (channel slices);
* ``phases-pool``: the same convolution, its four phase groups laid side by side along the width
  and max-pooled 1x4.

Both give the compacted network's outputs (fp32 to rounding, max |difference| printed). The
ratios are the median over rounds of (model / dense fp32 of the same round). Not used by
``prunelab export``: the best rewrite still misses 0.10 (docs/results/deploy/latency.md).
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from _deploy_models import executorch_program, int8_pt2e, lenet_pair, parse_units
from torch import Tensor, nn

from prunelab.export.timing import paired

PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))


class PhaseStem(nn.Module):
    """A LeNet whose ``relu(max_pool2x2(conv1(x)))`` is one stride-2 convolution per pooling phase."""

    def __init__(self, net: nn.Module, mode: str) -> None:
        super().__init__()
        self.conv2, self.fc1, self.fc2, self.mode = net.conv2, net.fc1, net.fc2, mode
        w, b = net.conv1.weight.detach(), net.conv1.bias.detach()
        c, k = w.shape[0], w.shape[-1]
        self.c = c
        self.phases = nn.Conv2d(1, 4 * c, k + 1, stride=2)
        with torch.no_grad():
            self.phases.weight.zero_()
            for i, (dy, dx) in enumerate(PHASES):
                self.phases.weight[i * c:(i + 1) * c, :, dy:dy + k, dx:dx + k] = w
                self.phases.bias[i * c:(i + 1) * c] = b

    def forward(self, x: Tensor) -> Tensor:
        y, c = self.phases(x), self.c
        if self.mode == "slices":
            y = torch.maximum(torch.maximum(y[:, :c], y[:, c:2 * c]),
                              torch.maximum(y[:, 2 * c:3 * c], y[:, 3 * c:]))
        else:
            n, _, h, w = y.shape
            y = y.view(n, 4, c, h, w).permute(0, 2, 3, 4, 1).reshape(n, c, h, w * 4)
            y = F.max_pool2d(y, (1, 4), (1, 4))
        x = F.relu(y)
        x = F.relu(F.max_pool2d(self.conv2(x), 2, 2))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", default="3-16-132")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from executorch.runtime import Runtime

    dense, small, _ = lenet_pair(parse_units(args.units))
    models = {"dense": dense, "compact": small, "phases-slices": PhaseStem(small, "slices").eval(),
              "phases-pool": PhaseStem(small, "pool").eval()}
    x = torch.randn(args.batch, 1, 28, 28)
    calibration = torch.randn(args.batch * 4, 1, 28, 28)
    runtime, methods, keep = Runtime.get(), {}, []
    with torch.no_grad():
        ref = small(x)
        for name, model in models.items():
            for kind in ("fp32", "int8"):
                if name == "dense" and kind == "int8":
                    continue
                lowered = int8_pt2e(model, x, calibration) if kind == "int8" else model
                buffer = executorch_program(lowered, x)
                program = runtime.load_program(buffer)
                method = program.load_method("forward")
                keep.append((program, buffer))  # a method needs its program alive
                out = method.execute([x])[0]
                if name != "dense":
                    agree = (out.argmax(1) == ref.argmax(1)).float().mean().item()
                    print(f"{name} {kind}: max |difference| to the compacted eager network "
                          f"{(out - ref).abs().max().item():.2e}, argmax agreement {agree:.4f}")
                methods[(name, kind)] = method
    # rounds of one 5-call block per program (its median call), the order rotating
    keys = {f"{name} {kind}": (name, kind) for name, kind in methods}
    timed = paired({label: (lambda m=methods[key]: m.execute([x])) for label, key in keys.items()},
                   reps=args.rounds, block_s=0.0, warmup_s=0.0, min_calls=5)
    times = {keys[label]: [t / 1e3 for t in ms] for label, ms in timed.items()}
    base = times[("dense", "fp32")]
    print(f"batch {args.batch}, {args.threads} threads, {args.rounds} rounds (ms; ratio to dense fp32, "
          "median of per-round ratios)")
    for (name, kind), ts in times.items():
        ratio = statistics.median(t / d for t, d in zip(ts, base, strict=True))
        print(f"  {name:14s} {kind}  {1e3 * statistics.median(ts):7.3f} ms  {ratio:.3f}")


if __name__ == "__main__":
    main()
