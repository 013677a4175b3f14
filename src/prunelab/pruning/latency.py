"""Measured inference latency: what pruning buys in wall time, not in counted MACs.

:func:`measure_latency` times ``model(batch)`` with ``torch.utils.benchmark.Timer`` (a warm-up,
then 7 timed blocks of as many calls as fill ``min_run_time``; the median block, in
milliseconds per forward pass) under ``torch.inference_mode`` in eval mode, on a copy of the
model so the caller's model keeps its device and mode. The Timer synchronises CUDA itself. It runs with the process's current
``torch.get_num_threads()`` (the Timer's own default would be a single thread).

:func:`efficiency_report` gives the fields a run adds to ``results.json`` when
``pruning.compact=true``: latency of the dense, masked and compacted networks, and the
compacted network's parameters and MACs.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from prunelab.pruning.compaction import (
    clone_module,
    compact_fields,
    compact_with_report,
    fold_masks,
)

__all__ = ["efficiency_report", "make_batch", "measure_latency"]

BatchFn = Callable[[int], Tensor]
REPEATS = 7  # timed blocks per batch size; the median block is reported


def make_batch(example: Tensor, batch_size: int, seed: int = 0) -> Tensor:
    """A batch of ``batch_size`` random samples shaped and typed like ``example``'s.

    Floating examples give standard-normal samples; integer ones (token ids) uniform integers
    in the example's own range.
    """
    g = torch.Generator().manual_seed(seed)
    shape = (batch_size, *example.shape[1:])
    if example.is_floating_point():
        return torch.randn(shape, generator=g, dtype=example.dtype)
    lo, hi = int(example.min()), int(example.max())
    return torch.randint(lo, hi + 1, shape, generator=g, dtype=example.dtype)


def _timer_class() -> type:
    # torch.utils.benchmark imports cpp_extension, which logs a misleading "No CUDA runtime is
    # found" warning on CPU machines: import it late and without that line
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
    finally:
        log.setLevel(level)
    return Timer


def measure_latency(
    model: nn.Module,
    example: Tensor | BatchFn,
    batch_sizes: Sequence[int] = (1, 256),
    device: str | torch.device | None = None,
    min_run_time: float = 0.5,
    num_threads: int | None = None,
    channels_last: bool = False,
    compile: bool = False,
) -> dict[str, float]:
    """Median milliseconds of one forward pass per batch size: ``{"bs1": ms, "bs256": ms}``.

    ``example`` is a tensor whose trailing dims give the sample shape (its batch size does not
    matter; see :func:`make_batch`), or a function ``batch_size -> batch``. ``device``: where to
    run (default ``"cpu"``). ``min_run_time``: seconds of measurement per batch size after the
    warm-up. ``num_threads``: torch intra-op threads (default: the current setting).
    ``channels_last``: weights and 4-d inputs in NHWC memory format. ``compile``: time
    ``torch.compile(model)`` (inductor); compilation happens in the warm-up, outside the figure.
    Which of these is fastest depends on the layer widths (oneDNN pads odd channel counts), so
    a fair comparison of two models gives each its best setting.
    """
    Timer = _timer_class()
    device = torch.device(device or "cpu")
    threads = num_threads or torch.get_num_threads()
    net = clone_module(model).to(device).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if compile:
        # a fresh dynamo cache: models of one class with other shapes would otherwise pile up
        # recompilations until dynamo's cache limit silently falls back to eager
        # dynamic=False: each batch size gets its own static graph (after a second shape, dynamo
        # would otherwise switch to a slower shape-generic one)
        torch.compiler.reset()
        net = torch.compile(net, dynamic=False)
    out: dict[str, float] = {}
    for bs in batch_sizes:
        batch = example(bs) if callable(example) else make_batch(example, bs)
        batch = batch.to(device)
        if channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)

        def forward(net: nn.Module = net, batch: Tensor = batch) -> None:
            with torch.inference_mode():
                net(batch)

        timer = Timer(stmt="forward()", globals={"forward": forward}, num_threads=threads)
        timer.timeit(number=1)  # warm-up: allocator, kernel choice, lazy init
        per_call = timer.timeit(number=3).median
        # ``repeats`` blocks of ``number`` calls filling min_run_time. blocked_autorange sizes
        # its blocks from the timer's overhead, which a busy machine inflates: its blocks then
        # grow tenfold at a time and a 0.5 s measurement can take a minute.
        number = max(1, int(min_run_time / REPEATS / max(per_call, 1e-7)))
        blocks = [timer.timeit(number=number).median for _ in range(REPEATS)]
        out[f"bs{bs}"] = float(statistics.median(blocks)) * 1e3
    return out


def efficiency_report(
    dense_model: nn.Module | None,
    masked_model: nn.Module,
    example: Tensor,
    *,
    batch_sizes: Sequence[int] = (1, 256),
    min_run_time: float = 0.5,
    devices: Sequence[str] | None = None,
    ignored_layers: Sequence[nn.Module] | None = None,
    compact_model: nn.Module | None = None,
) -> dict[str, Any]:
    """Latency of the dense, masked and compacted networks, and the compacted size.

    ``dense_model``: the unpruned network, or ``None`` to time ``masked_model``'s architecture
    with its masks folded (dense kernels cost the same whatever the values). ``masked_model``:
    the pruned network, masked (``torch.nn.utils.prune``) or with its masks folded into zeros.
    ``example``: one input batch (its sample shape is used). ``devices``: default CPU, plus
    CUDA when available. ``compact_model``: an already compacted ``masked_model`` (else it is
    compacted here, with ``ignored_layers``). Nothing passed in is modified.

    Returns ``{"latency_ms": {"dense": {"bs1": ms, ...}, "masked": {...}, "compact": {...}},
    "speedup_compact": {"bs1": dense/compact, ...}, "params_compact": int,
    "macs_compact": int, "latency_threads": int}``; with CUDA also ``"latency_ms_cuda"`` of
    the same shape.
    """
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    device = next(iter(masked_model.parameters()), torch.empty(0)).device
    sample = example[:1].to(device)
    if compact_model is None:
        compact_model, _ = compact_with_report(masked_model, sample, ignored_layers)
    dense = dense_model if dense_model is not None else fold_masks(clone_module(masked_model))
    models = {"dense": dense, "masked": masked_model, "compact": compact_model}
    out: dict[str, Any] = {}
    for dev in devices:
        key = "latency_ms" if dev == "cpu" else f"latency_ms_{torch.device(dev).type}"
        out[key] = {
            name: measure_latency(m, example.cpu(), batch_sizes, dev, min_run_time)
            for name, m in models.items()
        }
    lat = out["latency_ms"] if "latency_ms" in out else next(iter(out.values()))
    out["speedup_compact"] = {
        bs: lat["dense"][bs] / lat["compact"][bs] for bs in lat["dense"] if lat["compact"][bs] > 0
    }
    out["latency_threads"] = torch.get_num_threads()
    out.update(compact_fields(compact_model, sample))
    return out
