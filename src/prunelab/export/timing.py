"""Latency of a deployable file in its own runtime, as a ratio to the dense fp32 model of the same
network in the same runtime.

A ratio means something only inside one runtime: eager PyTorch, ONNX Runtime and ExecuTorch
differ several-fold on the same dense network, so a file is never compared with eager PyTorch.
The baseline is the fp32 file of the run's network (its masks folded: dense kernels cost the
same whatever the weights' values) in the file's runtime; a compacted file is compared with the
uncompacted network's.

:func:`measure` runs the two files paired: after a warm-up, ``reps`` rounds in which each takes
one turn (the one that starts alternates), a turn being a block of calls lasting about
:data:`BLOCK_S` whose median call counts, so a call that another process interrupts drops out.
A file's latency is the median of its turns; its ratio the median of the per-round ratios, so
drift of a shared machine hits both alike.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from prunelab.errors import PrunelabError
from prunelab.export import runtimes
from prunelab.pruning.latency import make_batch

Call = Callable[[], object]

#: the batch sizes timed: a server's batch and a device's single sample (an ExecuTorch program
#: takes at most :data:`prunelab.export.deploy.MAX_BATCH` samples)
BATCHES = (256, 1)
REPS = 15  # paired rounds per batch size (a few seconds per file for the MNIST LeNet)
BLOCK_S = 0.01  # seconds of calls per turn (at least one call)
WARMUP_S = 0.05  # seconds of calls per file before the rounds (at least three calls)
MAX_THREADS = 1024


def check_threads(threads: int | None) -> int:
    """``threads``, or the process's torch thread count for None; one line when out of range."""
    if threads is None:
        return torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise PrunelabError(f"--threads {threads!r}: must be an integer in [1, {MAX_THREADS}]")
    return threads


def check_reps(reps: int) -> int:
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise PrunelabError(f"latency repetitions {reps!r}: must be a positive integer")
    return reps


def _median_call(call: Call, n: int) -> float:
    """Median seconds of ``n`` calls, each timed alone."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paired(calls: dict[str, Call], reps: int | None = None, block_s: float | None = None,
           warmup_s: float | None = None, min_calls: int = 1) -> dict[str, list[float]]:
    """Milliseconds per call of each of ``calls`` in each of ``reps`` rounds (the order of the
    turns rotating round by round), each turn the median of a block of about ``block_s`` seconds
    of calls (at least ``min_calls``); defaults: :data:`REPS`, :data:`BLOCK_S`, :data:`WARMUP_S`."""
    reps = REPS if reps is None else reps
    block_s = BLOCK_S if block_s is None else block_s
    warmup_s = WARMUP_S if warmup_s is None else warmup_s
    size = {}
    for name, call in calls.items():
        t0, n = time.perf_counter(), 0
        while n < 3 or time.perf_counter() - t0 < warmup_s:
            call()
            n += 1
        size[name] = max(min_calls, round(block_s / max(_median_call(call, 3), 1e-7)))
    names = list(calls)
    out: dict[str, list[float]] = {n: [] for n in names}
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for r in range(reps):
            for name in names[r % len(names):] + names[:r % len(names)]:
                out[name].append(_median_call(calls[name], size[name]) * 1e3)
    finally:
        if enabled:
            gc.enable()
    return out


def measure(path: Path, baseline: Path, example: Tensor, threads: int | None = None,
            reps: int | None = None, batches: Sequence[int] = BATCHES,
            baseline_label: str | None = None) -> dict[str, Any]:
    """export.json's latency keys for the file at ``path``, paired with the dense fp32 file
    ``baseline`` of the same runtime (the same path: the file is its own baseline, ratio 1).

    ``{"latency_ms": {"bs256": ms, "bs1": ms}, "dense_latency_ms": {...}, "latency_ratio":
    {...}, "threads": n, "latency_reps": reps, "latency_baseline": ...}``; inputs are random
    samples shaped and typed like ``example``'s (latency does not depend on their values).
    ``baseline_label``: what ``latency_baseline`` says (default: the baseline's path).
    """
    threads = check_threads(threads)
    reps = check_reps(REPS if reps is None else reps)
    same = Path(path).resolve() == Path(baseline).resolve()
    out: dict[str, Any] = {"latency_ms": {}, "dense_latency_ms": {}, "latency_ratio": {}}
    for bs in batches:
        x = make_batch(example, bs)
        calls = {"file": runtimes.timed_call(Path(path), x, threads)}
        if not same:
            calls["dense"] = runtimes.timed_call(Path(baseline), x, threads)
        ms = paired(calls, reps)
        dense = ms.get("dense", ms["file"])
        key = f"bs{bs}"
        out["latency_ms"][key] = statistics.median(ms["file"])
        out["dense_latency_ms"][key] = statistics.median(dense)
        out["latency_ratio"][key] = statistics.median(
            f / d for f, d in zip(ms["file"], dense, strict=True))
    if Path(path).suffix == ".pte":  # the pool ExecuTorch really ran with
        threads = runtimes.set_pte_threads(threads)
    out.update(threads=threads, latency_reps=reps,
               latency_baseline="this file" if same else baseline_label or str(baseline))
    return out
