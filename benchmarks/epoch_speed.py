"""One MNIST CNN training epoch: prunelab's CLI vs the reference article's loop vs a bare loop.

    .venv/bin/python benchmarks/epoch_speed.py [--quick [N]] [--threads T] [--data-dir D]
        [--repeats R] [--only bare,article,prunelab,paired] [--pairs P] [--block B]

Three contenders, back to back in one script (same machine state, same thread count):

* ``bare``: a hand-written loop over prunelab's in-memory normalised tensors
  (``MNISTDataModule.setup``: 55,000 training images), batch 64, the LeNet in channels-last
  memory format (as ``model=cnn`` configures it), cross-entropy and prunelab's default optimiser
  (SGD 0.05, Nesterov momentum 0.9, weight decay 5e-4, one-cycle LR stepped per batch): the
  same work as the CLI without Lightning;
* ``article``: the reference article's plain loop: torchvision ``MNIST`` (60,000 images) with
  per-sample ``ToTensor`` + ``Normalize``, ``DataLoader(batch_size=64, shuffle=True)``,
  SGD 0.01 / momentum 0.5, the LeNet with ``log_softmax`` + ``nll_loss``;
* ``prunelab``: ``python -m prunelab pruning=none trainer.max_epochs=1 logger=none`` with
  validation and test switched off (``limit_val_batches=0``, ``limit_test_batches=0``); the
  figure is the run's own ``epoch_seconds[0]`` from ``results.json`` (the training epoch, without
  process start-up and data loading), the process wall time is printed too.

Then ``paired`` (see ``paired_blocks``): Lightning's overhead once more, in one process, as the
median ratio of ``--pairs`` adjacent pairs: by default every prunelab batch is followed by one
bare step (``--block 1``); ``--block B`` alternates epochs of B batches with B bare steps. This
VM's drift cannot move those ratios as it moves whole runs minutes apart.

Epochs differ in length (860 vs 938 batches), so the ratios are per batch. ``--quick N`` stops
each contender after N batches (default 100). ``--repeats R`` runs the three R times in
interleaved rounds and reports each one's median, since a shared machine's noise only ever adds
time and hits the contenders alike within a round. The MNIST raw files are copied to a temp dir for
torchvision (it needs a writable root).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    env = os.environ.get("PRUNELAB_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


class ArticleNet(nn.Module):
    """The article's network: the LeNet with ``log_softmax`` output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5, 1)
        self.conv2 = nn.Conv2d(20, 50, 5, 1)
        self.fc1 = nn.Linear(4 * 4 * 50, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        x = F.relu(self.fc1(x.view(-1, 4 * 4 * 50)))
        return F.log_softmax(self.fc2(x), dim=1)


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(t: tuple[float, float]) -> tuple[float, float]:
    return time.perf_counter() - t[0], time.process_time() - t[1]


def bare_step_fn(x: torch.Tensor, y: torch.Tensor, total_steps: int) -> Callable[[int], torch.Tensor]:
    """The bare loop's step ``i``: batch ``i`` of a fixed shuffle (wrapping), SGD + one-cycle.

    prunelab's default recipe without Lightning: LeNet in channels_last, SGD 0.05 with Nesterov
    momentum 0.9 and weight decay 5e-4, one-cycle LR stepped per batch. Returns the loss.
    """
    from prunelab.models import LeNet

    torch.manual_seed(0)
    net = LeNet().to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, pct_start=0.25,
                                                total_steps=total_steps)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))

    def step(i: int) -> torch.Tensor:
        idx = perm[(i * 64) % len(y):][:64]
        xb, yb = x[idx].contiguous(memory_format=torch.channels_last), y[idx]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(xb), yb)
        loss.backward()
        opt.step()
        sched.step()
        return loss

    return step


def bare_loop(data_dir: Path, limit: int | None) -> dict:
    from prunelab.data import MNISTDataModule

    dm = MNISTDataModule(data_dir=str(data_dir))
    dm.prepare_data()
    dm.setup("fit")
    x, y = dm.train_data
    batches = (len(y) + 63) // 64
    n = min(limit, batches) if limit else batches
    step = bare_step_fn(x, y, batches)
    t = clock()
    for i in range(n):
        loss = step(i)
    wall, cpu = since(t)
    return {"seconds": wall, "cpu": cpu, "batches": n, "loss": loss.item()}


def article_loop(data_dir: Path, limit: int | None, tmp: Path) -> dict:
    from torchvision import datasets, transforms

    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in sorted((data_dir / "MNIST" / "raw").glob("*.gz")):
        with gzip.open(gz) as src, open(raw / gz.name[:-3], "wb") as dst:
            shutil.copyfileobj(src, dst)
    dataset = datasets.MNIST(str(tmp), train=True, download=False,
                             transform=transforms.Compose([
                                 transforms.ToTensor(),
                                 transforms.Normalize((0.1307,), (0.3081,)),
                             ]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True)
    torch.manual_seed(0)
    model = ArticleNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    model.train()
    n = 0
    t = clock()
    for batch_idx, (data, target) in enumerate(loader):
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        if batch_idx % 10 == 0:  # the article logs every 10 batches
            loss.item()
        n += 1
        if limit and n >= limit:
            break
    wall, cpu = since(t)
    return {"seconds": wall, "cpu": cpu, "batches": n, "loss": loss.item()}


def prunelab_cli(data_dir: Path, limit: int | None, tmp: Path, threads: int | None) -> dict:
    run_dir = tmp / "run"
    cmd = [sys.executable, "-m", "prunelab", "pruning=none", "trainer.max_epochs=1",
           "logger=none", "trainer.enable_progress_bar=false", "trainer.limit_val_batches=0",
           "trainer.limit_test_batches=0", "ckpt_path=null", f"data_dir={data_dir}",
           f"hydra.run.dir={run_dir}"]
    if limit:
        cmd.append(f"trainer.limit_train_batches={limit}")
    if threads:
        cmd.append(f"threads={threads}")
    t = clock()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall, _ = since(t)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    res = json.loads((run_dir / "results.json").read_text())
    batches = limit or (55_000 + 63) // 64
    return {"seconds": res["epoch_seconds"][0], "cpu": float("nan"), "batches": batches,
            "process_wall": wall}


def paired_blocks(data_dir: Path, block: int, pairs: int, tmp: Path, threads: int | None) -> dict:
    """Lightning's overhead from adjacent blocks: ``block`` batches through prunelab, then as many bare.

    One in-process ``prunelab.run.run`` (the CLI's function, same overrides); a callback runs
    bare steps (own LeNet, optimiser, one-cycle schedule, same in-memory tensors) outside
    prunelab's timing. ``block`` > 1: epochs of ``block`` batches, each followed by ``block``
    bare steps, one ratio per epoch (``epoch_seconds``; the first pair warms up). ``block`` = 1:
    one epoch in which every batch is followed by one bare step; prunelab's figure is the
    whole cycle from one ``on_train_batch_end`` to the next minus the bare step (data fetch,
    hooks, step), one ratio per batch after 50 warm-up batches. Pairs are milliseconds to
    seconds apart, so the VM's drift (10-40 % between runs here) cancels in each ratio.
    """
    import lightning as L
    from hydra import compose, initialize_config_dir

    from prunelab.config import register
    from prunelab.run import run

    warmup = 50 if block == 1 else 1
    total = block * (pairs + 1) if block > 1 else pairs + warmup

    class BareSteps(L.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []  # bare: per epoch (block > 1) or per batch
            self.cycles: list[float] = []  # prunelab per batch (block = 1)
            self.step = None
            self.done = 0
            self.after_bare: float | None = None

        def _bare(self, trainer: L.Trainer, n: int) -> float:
            if self.step is None:
                self.step = bare_step_fn(*trainer.datamodule.train_data, total + 1)
            t = time.perf_counter()
            for _ in range(n):
                self.step(self.done)
                self.done += 1
            return time.perf_counter() - t

        def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
            if block == 1:
                now = time.perf_counter()
                if self.after_bare is not None:
                    self.cycles.append(now - self.after_bare)
                self.seconds.append(self._bare(trainer, 1))
                self.after_bare = time.perf_counter()

        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if block > 1:
                self.seconds.append(self._bare(trainer, block))

    register()
    epochs, per_epoch = (pairs + 1, block) if block > 1 else (1, total)
    overrides = ["pruning=none", f"trainer.max_epochs={epochs}", "logger=none",
                 "trainer.enable_progress_bar=false", "trainer.limit_val_batches=0",
                 "trainer.limit_test_batches=0", f"trainer.limit_train_batches={per_epoch}",
                 "ckpt_path=null", f"data_dir={data_dir}"] + ([f"threads={threads}"] if threads else [])
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    bare = BareSteps()
    res = run(cfg, tmp / f"paired{block}", overrides, callbacks=[bare])
    if block > 1:
        light, base = res["epoch_seconds"][1:], bare.seconds[1:]
    else:  # cycle i ends at batch i+1's end: pair it with the bare step that preceded it
        light, base = bare.cycles[warmup:], bare.seconds[warmup:len(bare.cycles)]
    ratios = sorted(p / b for p, b in zip(light, base, strict=True))
    q, mid = len(ratios) // 4, len(ratios) // 2
    return {"ratios": ratios, "median": ratios[mid], "q1": ratios[q], "q3": ratios[-1 - q],
            "sum_ratio": sum(light) / sum(base),
            "light_ms": 1e3 * sorted(light)[mid] / block, "bare_ms": 1e3 * sorted(base)[mid] / block}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", nargs="?", type=int, const=100, default=None,
                        metavar="N", help="stop each contender after N batches (default 100)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--only", default="bare,article,prunelab,paired",
                        help="contenders, of bare, article, prunelab, paired")
    parser.add_argument("--pairs", type=int, default=None, metavar="P",
                        help="paired: pairs after the warm-up (default and most with --block 1: "
                        "800, one epoch; else 20)")
    parser.add_argument("--block", type=int, default=1, metavar="B",
                        help="paired: batches per block (default 1: every batch alternates)")
    parser.add_argument("--repeats", type=int, default=1, metavar="R",
                        help="interleaved rounds; each contender's median is reported")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = args.data_dir or default_data_dir()
    if not (data_dir / "MNIST" / "raw").exists():
        sys.exit(f"no MNIST/raw under {data_dir}: pass --data-dir or set PRUNELAB_DATA")
    print(f"# epoch_speed  {time.strftime('%Y-%m-%d %H:%M')}  torch {torch.__version__}  "
          f"{torch.get_num_threads()} threads  cpus {os.cpu_count()}  "
          f"batches {args.quick or 'full epoch'}")
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="prunelab-epoch-") as tmp:
        names = args.only.split(",")
        for rnd in range(args.repeats):
            for name in names:
                if name == "paired":
                    continue
                if name == "bare":
                    r = bare_loop(data_dir, args.quick)
                elif name == "article":
                    r = article_loop(data_dir, args.quick, Path(tmp) / f"article{rnd}")
                elif name == "prunelab":
                    r = prunelab_cli(data_dir, args.quick, Path(tmp) / f"cli{rnd}", args.threads)
                else:
                    sys.exit(f"--only: unknown contender {name!r}; "
                             "valid: bare, article, prunelab, paired")
                runs.setdefault(name, []).append(r)
                extra = f", process wall {r['process_wall']:.1f} s" if "process_wall" in r else (
                    f", cpu {r['cpu']:.1f} s")
                print(f"  [{rnd + 1}/{args.repeats}] {name:<9} {r['seconds']:8.2f} s  "
                      f"{r['batches']:4d} batches  {1e3 * r['seconds'] / r['batches']:7.2f} "
                      f"ms/batch{extra}", flush=True)
        if "paired" in names:
            block = min(args.block, args.quick) if args.quick else args.block
            pairs = args.pairs or (800 if block == 1 else 20)
            pairs = min(pairs, 800) if block == 1 else pairs  # one epoch holds 860 batches
            pairs = min(pairs, args.quick if block == 1 else 5) if args.quick else pairs
            paired = paired_blocks(data_dir, block, pairs, Path(tmp), args.threads)
            print(f"  paired    {pairs} x {block} batches: prunelab {paired['light_ms']:.2f}, "
                  f"bare {paired['bare_ms']:.2f} ms/batch (medians)", flush=True)
    out = {k: sorted(v, key=lambda r: r["seconds"])[len(v) // 2] for k, v in runs.items()}
    if args.repeats > 1:
        for k, r in out.items():
            print(f"  median {k:<9} {r['seconds']:8.2f} s  "
                  f"{1e3 * r['seconds'] / r['batches']:7.2f} ms/batch")
    per = {k: v["seconds"] / v["batches"] for k, v in out.items()}
    if "bare" in per:
        for k in per:
            if k != "bare":
                print(f"  {k} / bare (per batch): {per[k] / per['bare']:.3f}")
    if "prunelab" in per and "article" in per:
        print(f"  prunelab / article (per batch): {per['prunelab'] / per['article']:.3f}")
    if "paired" in names:
        print(f"  prunelab / bare, paired in-process blocks: median {paired['median']:.3f} "
              f"(IQR {paired['q1']:.3f}-{paired['q3']:.3f}, {len(paired['ratios'])} pairs); "
              f"ratio of sums {paired['sum_ratio']:.3f}")


if __name__ == "__main__":
    main()
