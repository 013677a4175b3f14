"""What the divergence check's host-device sync costs a training step on a GPU.

    python benchmarks/divergence_sync.py

The check reads the epoch's running loss sum (``torch.isfinite(...)`` + ``bool``: one sync of
the host with the device). A plain PyTorch loop of LeNet batch-64 SGD steps on synthetic data,
as prunelab's CNN trains (channels_last), accumulates that sum on the device and reads it never,
every batch, or every 50 batches (prunelab's default); 15 interleaved epochs of 200 batches each,
medians printed. Self-contained (no prunelab import), so it runs wherever torch does.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class LeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.f1, self.f2 = nn.Linear(800, 500), nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.c1(x), 2))
        x = F.relu(F.max_pool2d(self.c2(x), 2))
        return self.f2(F.relu(self.f1(x.flatten(1))))


def main() -> None:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    net = LeNet().to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    xs = [torch.randn(64, 1, 28, 28, device=dev).contiguous(memory_format=torch.channels_last)
          for _ in range(200)]
    ys = torch.randint(0, 10, (200, 64), device=dev)
    loss_sum = torch.zeros((), device=dev)

    def sync() -> None:
        if dev == "cuda":
            torch.cuda.synchronize()

    def epoch(every: int) -> float:
        sync()
        t0 = time.perf_counter()
        for i in range(200):
            opt.zero_grad()
            loss = F.cross_entropy(net(xs[i]), ys[i])
            loss.backward()
            opt.step()
            loss_sum.add_(loss.detach(), alpha=64)
            if every and (i + 1) % every == 0 and not bool(torch.isfinite(loss_sum)):
                raise SystemExit("diverged")
        sync()
        return (time.perf_counter() - t0) / 200

    for every in (0, 1, 50):  # warm-up
        epoch(every)
    times: dict[int, list[float]] = {0: [], 1: [], 50: []}
    for _ in range(15):
        for every in times:
            times[every].append(epoch(every))
    for every, ts in times.items():
        print(f"check every {every or 'never'}: {statistics.median(ts) * 1e3:.4f} ms/batch "
              f"(median of 15 epochs of 200 batches)")
    print(torch.cuda.get_device_name() if dev == "cuda" else "cpu")


if __name__ == "__main__":
    main()
