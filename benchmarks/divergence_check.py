"""Per-batch cost of the divergence check (``ClassifierSystem.on_train_batch_end``).

    .venv/bin/python benchmarks/divergence_check.py

Times the hook 200,000 times (one ``isfinite`` read of the loss sum, a host-device sync, every
50th call), then a batch-64 SGD step of the LeNet (channels_last, one thread) for scale.
"""

from __future__ import annotations

import statistics
import time
import types
from functools import partial

import torch

from prunelab.models import ClassifierSystem, LeNet


def main() -> None:
    torch.set_num_threads(1)
    module = ClassifierSystem(LeNet(), optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9))
    # what Lightning would attach; the hook reads these attributes only
    module._trainer = types.SimpleNamespace(num_training_batches=860, world_size=1,
                                            current_epoch=0, global_step=0)
    module.train_sums.loss_sum.fill_(1.0)
    n = 200_000
    t0 = time.perf_counter()
    for i in range(n):
        module.on_train_batch_end(None, None, i % 860)
    hook = (time.perf_counter() - t0) / n

    net = LeNet().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    x = torch.randn(64, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,))
    times = []
    for _ in range(110):
        t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    step = statistics.median(times[10:])
    print(f"divergence check: {hook * 1e6:.2f} us a batch; LeNet batch-64 step: "
          f"{step * 1e3:.2f} ms; share {100 * hook / step:.3f} %")


if __name__ == "__main__":
    main()
