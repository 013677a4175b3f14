"""Deployment latency: dense vs compacted LeNet, fp32 vs int8, paired in one runtime.

    .venv/bin/python benchmarks/deploy_speed.py [--units 3-16-132] [--threads 2] [--reps 100]
        [--runtime executorch,onnxruntime] [--batch-sizes 256,1] [--profile-dir DIR | --no-profile]
        [--conv1-widths 1,2,3,16,20] [--quick]

Four networks, each lowered to the same runtime and timed there:

* ``dense fp32``: the dense LeNet (431,080 parameters, 2.29M MACs) -- the baseline of every ratio;
* ``compact fp32``: the compacted network of the ``lenet5_structured_160k`` record, by default
  the seed-0 run's shape (3-16-132 filters/neurons kept in conv1-conv2-fc1, 155,112 MACs; see
  docs/results/records/README.md), made by prunelab's compaction from ``ln_structured``-style
  masks on random weights (latency depends on the shapes only);
* ``dense int8`` and ``compact int8``: the same two quantised to static int8 (per-channel
  weights) by the runtime's own quantiser.

Runtimes (``--runtime``): ``executorch`` -- ``torch.export`` lowered to the XNNPACK delegate,
run by ``executorch.runtime``; int8 by torchao's ``prepare_pt2e``/``convert_pt2e`` with the
XNNPACK quantizer. ``onnxruntime`` -- ``torch.onnx.export``, ONNX Runtime's CPU provider with all
graph optimisations; int8 by ``onnxruntime.quantization.quantize_static`` (QDQ). Each program
has a fixed batch size. Both runtimes use ``--threads`` threads (the XNNPACK thread pool is set
to it); a runtime that is not installed is skipped with a note.

Timing: per runtime and batch size, the four models take turns in ``--reps`` rounds (the
starting model rotates), each turn a block of calls lasting about ``--block-ms`` (at least 3),
after a warm-up; each call is timed alone and a block counts its median call, so that calls
which other processes interrupt drop out (the machine is shared). The figure of a model is the
median of its blocks over the rounds. A ratio is computed per round (model / dense fp32 of the
same round, so the machine's drift hits both alike) and its median and interquartile range are
printed. The correctness lines compare each runtime's output with eager PyTorch fp32 on the
timed batch: max |difference| and argmax agreement.

``--profile-dir`` (default ``outputs/deploy_speed``): each runtime's own profile of each model
and batch size -- ExecuTorch's ETDump (``*.etdp``), ONNX Runtime's profiler (``*.json``) --
and ``<runtime>_profile.txt`` with the per-operator medians. One line per model splits the
median Python call, timed in the same loop, into the Python binding (call - the runtime's own
run time: ``Method::execute``, ORT's ``model_run``), the runtime's dispatch (run - operators)
and the operators (the two largest named). ``--no-profile`` skips it.

``--conv1-widths K,...`` also times ExecuTorch's conv1 operator (from ETDumps) in LeNet's conv1
stage alone with K filters, fp32 and int8, at the largest batch size: how the cost of the layer
that dominates the compacted network follows its filter count.

The last line is the headline: compact int8 / dense fp32 at each batch size in the first
runtime, against the goals (<= 0.10 at batch 256, <= 0.30 at batch 1), met or NOT met.
"""

from __future__ import annotations

import argparse
import atexit
import bisect
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from _deploy_models import (
    executorch_program,
    int8_pt2e,
    lenet_pair,
    onnx_file,
    onnx_int8,
    ort_session,
    parse_units,
)

from prunelab.export.timing import paired
from prunelab.pruning.metrics import macs

GOALS = {256: 0.10, 1: 0.30}  # compact int8 / dense fp32, same runtime
RECORD_UNITS = "3-16-132"  # lenet5_structured_160k, seed 0: the largest of the record's three runs
VARIANTS = ("dense fp32", "compact fp32", "dense int8", "compact int8")
BASE, HEADLINE = VARIANTS[0], VARIANTS[-1]
RUNTIMES = ("executorch", "onnxruntime")
Call = Callable[[], object]


def missing(runtime: str) -> str | None:
    """Why ``runtime`` cannot run here, or None."""
    modules = {"executorch": ("executorch", "torchao"), "onnxruntime": ("onnxruntime", "onnx")}
    for module in modules[runtime]:
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install {module})"
    return None


def versions() -> str:
    out = [f"torch {torch.__version__}"]
    for name in ("executorch", "torchao", "onnxruntime"):
        try:
            module = __import__(f"{name}.version" if name == "executorch" else name,
                                fromlist=["__version__"])
            out.append(f"{name} {module.__version__}")
        except ImportError:
            pass
    return ", ".join(out)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> str:
    try:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


# ------------------------------------------------------------------------------ the runtimes


def executorch_calls(models: dict[str, torch.nn.Module], batches: dict[int, torch.Tensor],
                     calibration: torch.Tensor, threads: int
                     ) -> tuple[dict[tuple[str, int], Call], dict[tuple[str, int], bytes], list[str]]:
    """A no-argument call per (variant, batch size), the .pte bytes, and the correctness lines."""
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)
    runtime = Runtime.get()
    calls, programs, lines = {}, {}, []
    for bs, x in batches.items():
        for variant in VARIANTS:
            net = models[variant.split()[0]]
            lowered = int8_pt2e(net, x, calibration) if variant.endswith("int8") else net
            programs[variant, bs] = executorch_program(lowered, x)
            program = runtime.load_program(programs[variant, bs])
            method = program.load_method("forward")
            # the call holds the program too: a method outliving its program reads freed memory
            calls[variant, bs] = lambda method=method, x=x, program=program: method.execute((x,))
            lines.append(agreement(variant, bs, method.execute((x,))[0], net, x))
    lines.append(f"XNNPACK thread pool: {portable_lib._threadpool_get_thread_count()} threads")
    return calls, programs, lines


def onnxruntime_calls(models: dict[str, torch.nn.Module], batches: dict[int, torch.Tensor],
                      calibration: torch.Tensor, threads: int
                      ) -> tuple[dict[tuple[str, int], Call], dict[tuple[str, int], Path], list[str]]:
    """A no-argument call per (variant, batch size), the .onnx files, and the correctness lines."""
    folder = Path(tempfile.mkdtemp(prefix="deploy_speed_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    calls, paths, lines = {}, {}, []
    for bs, x in batches.items():
        feed = {"input": x.numpy()}
        for variant in VARIANTS:
            kind, dtype = variant.split()
            net = models[kind]
            path = onnx_file(net, x, folder / f"{kind}_bs{bs}.onnx")
            if dtype == "int8":
                path = onnx_int8(path, folder / f"{kind}_int8_bs{bs}.onnx", calibration, bs)
            paths[variant, bs] = path
            session = ort_session(path, threads)
            calls[variant, bs] = lambda session=session, feed=feed: session.run(None, feed)
            out = torch.from_numpy(session.run(None, feed)[0])
            lines.append(agreement(variant, bs, out, net, x))
    return calls, paths, lines


def agreement(variant: str, bs: int, out: torch.Tensor, net: torch.nn.Module, x: torch.Tensor
              ) -> str:
    """How the runtime's output compares with eager PyTorch fp32 on the same input."""
    with torch.no_grad():
        ref = net(x)
    diff = float((out - ref).abs().max())
    same = float((out.argmax(1) == ref.argmax(1)).float().mean())
    return f"{variant:<13} bs{bs:<4} max |runtime - eager fp32| {diff:.2e}, argmax agrees {same:.1%}"


# ------------------------------------------------------------------------------ timing


def interleaved(fns: dict[str, Call], reps: int, block_s: float, warmup_s: float
                ) -> dict[str, list[float]]:
    """ms per call of each function in ``reps`` rounds of one block each (its median call, at
    least 3 calls), the order rotating: prunelab export's own paired timing."""
    return paired(fns, reps, block_s, warmup_s, min_calls=3)


def summary(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Median ms per model, and the median and IQR of its per-round ratio to dense fp32."""
    out = {}
    for name, ms in times.items():
        ratios = [m / b for m, b in zip(ms, times[BASE], strict=True)]
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        out[name] = {"ms": statistics.median(ms), "ratio": statistics.median(ratios),
                     "lo": q[0], "hi": q[2]}
    return out


# ------------------------------------------------------------------------------ the profile


PARTS = {"executorch": ("Python binding", "runtime and delegate dispatch", "XNNPACK operators"),
         "onnxruntime": ("Python binding", "session and executor", "kernels")}


def timed_calls(fn: Call, bs: int) -> list[float]:
    """ms of each of a series of single calls, for a profile taken over the same calls."""
    calls = []
    for _ in range(300 if bs == 1 else 30):
        t0 = time.perf_counter()
        fn()
        calls.append((time.perf_counter() - t0) * 1e3)
    return calls


def split(runtime: str, variant: str, bs: int, calls: list[float], runs: list[float],
          ops: dict[str, list[float]], report: list[str]) -> str:
    """One line: where a Python call's time goes, from per-call series of the same calls (the
    Python call, the runtime's own run, each operator); medians of the per-call parts, so they
    add up to the median call only roughly. Per-operator medians go to ``report``."""
    binding, dispatch, kernels = PARTS[runtime]
    n = min(len(calls), len(runs), *(len(v) for v in ops.values()))
    calls, runs = calls[-n:], runs[-n:]
    op_sums = [sum(v[-n:][i] for v in ops.values()) for i in range(n)]
    call = statistics.median(calls)
    part = {binding: statistics.median(c - r for c, r in zip(calls, runs, strict=True)),
            dispatch: statistics.median(r - o for r, o in zip(runs, op_sums, strict=True)),
            kernels: statistics.median(op_sums)}
    ranked = sorted(((name, statistics.median(v[-n:])) for name, v in ops.items()),
                    key=lambda kv: -kv[1])
    report.append(f"## {variant}, batch {bs}: Python call {call:.4f} ms, run "
                  f"{statistics.median(runs):.4f} ms, {kernels} {part[kernels]:.4f} ms "
                  f"(medians over {n} calls)")
    report.extend(f"  {ms:9.4f} ms  {name}" for name, ms in ranked)
    top = ", ".join(f"{name} {ms / call:.0%}" for name, ms in ranked[:2])
    return (f"  {variant:<13} bs{bs:<4} call {call:.4f} ms = "
            + " + ".join(f"{k} {v:.4f} ({v / call:.0%})" for k, v in part.items())
            + f"; {top}")


def executorch_profile(programs: dict[tuple[str, int], bytes], batches: dict[int, torch.Tensor],
                       folder: Path) -> list[str]:
    """ETDump of each program; per model, where the time of one Python call goes: the Python
    binding (call - ``Method::execute``), the runtime's and delegate's dispatch (execute - the
    operators) and XNNPACK's operators, each call timed from Python in the profiled loop."""
    from executorch.devtools import Inspector
    from executorch.runtime import Runtime

    runtime = Runtime.get()
    lines: list[str] = []
    report: list[str] = []
    for (variant, bs), pte in programs.items():
        x = batches[bs]
        program = runtime.load_program(pte, enable_etdump=True, debug_buffer_size=0)
        method = program.load_method("forward")
        calls = timed_calls(lambda: method.execute((x,)), bs)  # noqa: B023 (called here)
        stem = folder / f"executorch_{variant.replace(' ', '_')}_bs{bs}"
        program.write_etdump_result_to_file(f"{stem}.etdp", f"{stem}.debug.bin")
        Path(f"{stem}.debug.bin").unlink(missing_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inspector = Inspector(etdump_path=f"{stem}.etdp")
        ops: dict[str, list[float]] = {}
        total: dict[str, list[float]] = {}
        for block in inspector.event_blocks:
            for event in block.events:
                if event.perf_data is not None:
                    (ops if event.is_delegated_op else total)[event.name] = list(event.perf_data.raw)
        lines.append(split("executorch", variant, bs, calls, total["Method::execute"], ops, report))
    (folder / "executorch_profile.txt").write_text("\n".join(report) + "\n")
    return lines


def onnxruntime_profile(paths: dict[tuple[str, int], Path], batches: dict[int, torch.Tensor],
                        threads: int, folder: Path) -> list[str]:
    """ONNX Runtime's own profile of each model: per ``model_run`` and per node of each run."""
    lines: list[str] = []
    report: list[str] = []
    for (variant, bs), path in paths.items():
        stem = f"onnxruntime_{variant.replace(' ', '_')}_bs{bs}"
        session = ort_session(path, threads, profile_prefix=str(folder / stem))
        feed = {"input": batches[bs].numpy()}
        calls = timed_calls(lambda: session.run(None, feed), bs)  # noqa: B023 (called here)
        events = json.loads(Path(session.end_profiling()).read_text())
        runs = sorted((e["ts"], e["dur"] / 1e3) for e in events
                      if e.get("cat") == "Session" and e.get("name") == "model_run")
        starts = [ts for ts, _ in runs]
        nodes: dict[str, list[float]] = {}
        for e in events:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                name = f"{e['name'].removesuffix('_kernel_time')} ({e.get('args', {}).get('op_name', '?')})"
                per_run = nodes.setdefault(name, [0.0] * len(runs))
                per_run[bisect.bisect_right(starts, e["ts"]) - 1] += e["dur"] / 1e3
        lines.append(split("onnxruntime", variant, bs, calls, [d for _, d in runs], nodes, report))
    (folder / "onnxruntime_profile.txt").write_text("\n".join(report) + "\n")
    return lines


class FirstConv(torch.nn.Module):
    """LeNet's conv1 stage alone (conv 1->k 5x5, pool, ReLU), ``k`` filters."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, k, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.nn.functional.max_pool2d(self.conv1(x), 2))


def conv1_widths(widths: list[int], x: torch.Tensor, reps: int, block_s: float,
                 folder: Path) -> list[str]:
    """ExecuTorch's median time of LeNet's conv1 operator (from ETDumps) at each width, fp32
    and int8, the programs called in interleaved rounds. The operator's own time, because a
    whole call of the stage alone also copies its large output back to Python."""
    from executorch.devtools import Inspector
    from executorch.runtime import Runtime

    runtime = Runtime.get()
    programs, fns = {}, {}
    for k in widths:
        torch.manual_seed(0)
        net = FirstConv(k).eval()
        for dtype, model in (("fp32", net), ("int8", int8_pt2e(net, x, x))):
            program = runtime.load_program(executorch_program(model, x), enable_etdump=True,
                                           debug_buffer_size=0)
            method = program.load_method("forward")
            programs[k, dtype] = program
            fns[f"{k} {dtype}"] = lambda method=method: method.execute((x,))
    interleaved(fns, reps, block_s, 0.3)
    ms = {}
    folder.mkdir(parents=True, exist_ok=True)
    for (k, dtype), program in programs.items():
        stem = folder / f"executorch_conv1_{k}_{dtype}"
        program.write_etdump_result_to_file(f"{stem}.etdp", f"{stem}.debug.bin")
        Path(f"{stem}.debug.bin").unlink(missing_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            events = [e for b in Inspector(etdump_path=f"{stem}.etdp").event_blocks
                      for e in b.events if e.is_delegated_op and e.perf_data is not None]
        ms[k, dtype] = next(e.perf_data.p50 for e in events if e.name.startswith("Convolution"))
    ref = widths[-1]
    lines = [f"  {'filters':>7} {'fp32 ms':>9} {'int8 ms':>9}   / {ref} filters (fp32, int8)"]
    for k in widths:
        f, i = ms[k, "fp32"], ms[k, "int8"]
        lines.append(f"  {k:>7} {f:>9.4f} {i:>9.4f}   {f / ms[ref, 'fp32']:.3f} "
                     f"{i / ms[ref, 'int8']:.3f}")
    return lines


# ------------------------------------------------------------------------------ main


def positive_ints(flag: str, text: str, example: str) -> list[int]:
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SystemExit(f"{flag}: {text!r} is not a list of positive whole numbers (e.g. {example})")
    return [int(p) for p in parts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", default=RECORD_UNITS,
                        help=f"conv1-conv2-fc1 units the compact network keeps (default {RECORD_UNITS})")
    parser.add_argument("--threads", type=int, default=2, help="threads in every runtime (default 2)")
    parser.add_argument("--reps", type=int, default=100, help="interleaved rounds (default 100)")
    parser.add_argument("--block-ms", type=float, default=20.0,
                        help="length of one model's block of calls in a round (default 20)")
    parser.add_argument("--batch-sizes", default="256,1")
    parser.add_argument("--runtime", default=",".join(RUNTIMES),
                        help=f"runtimes, the first gives the headline (default {','.join(RUNTIMES)})")
    parser.add_argument("--profile-dir", default="outputs/deploy_speed",
                        help="where the runtimes' profiles (ETDumps, ORT's JSON) and their "
                             "summaries go")
    parser.add_argument("--no-profile", action="store_true", help="skip the runtimes' profiles")
    parser.add_argument("--conv1-widths", default="",
                        help="also time LeNet's conv1 operator in ExecuTorch (ETDump) at these "
                             "filter counts at the largest batch size, the last the reference "
                             "(e.g. 1,2,3,4,8,16,20): how its time follows its filters")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5 rounds of 2 ms blocks")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.block_ms = 5, 2.0
    if args.threads < 1 or args.reps < 1 or args.block_ms <= 0:
        raise SystemExit("--threads, --reps and --block-ms must be positive")
    runtimes = [r for r in args.runtime.split(",") if r]
    if bad := [r for r in runtimes if r not in RUNTIMES]:
        raise SystemExit(f"--runtime: unknown {bad}; valid: {', '.join(RUNTIMES)}")
    sizes = positive_ints("--batch-sizes", args.batch_sizes, "256,1")
    widths = positive_ints("--conv1-widths", args.conv1_widths, "3,16,20") if args.conv1_widths else []
    for r in list(runtimes):
        if why := missing(r):
            print(f"# note: {r} skipped: {why}")
            runtimes.remove(r)
    if not runtimes:
        raise SystemExit("--runtime: nothing left to time")
    units = parse_units(args.units)
    torch.set_num_threads(args.threads)

    print(f"# deploy_speed  {time.strftime('%Y-%m-%d %H:%M %Z')}  {cpu_name()}, "
          f"{os.cpu_count()} CPUs  {args.threads} threads  {versions()}")
    print(f"# {load()} at the start; {args.reps} rounds of {args.block_ms:g} ms blocks")
    dense, small, report = lenet_pair(units)
    models = {"dense": dense, "compact": small}
    example = torch.zeros(1, 1, 28, 28)
    mac = {k: macs(m, example)["macs_dense"] for k, m in models.items()}
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    print(f"compact network (prunelab compaction of {'-'.join(map(str, units))} units kept): "
          f"layers {report.layers}; MACs {mac['compact']:,} / {mac['dense']:,} = "
          f"{mac['compact'] / mac['dense']:.3f}x; params {params['compact']:,} / "
          f"{params['dense']:,} = {params['compact'] / params['dense']:.3f}x")
    g = torch.Generator().manual_seed(0)
    batches = {bs: torch.randn(bs, 1, 28, 28, generator=g) for bs in sizes}
    calibration = torch.randn(max(sizes), 1, 28, 28, generator=g)

    headline: dict[int, float] = {}
    for rt in runtimes:
        t0 = time.perf_counter()
        if rt == "executorch":
            calls, programs, checks = executorch_calls(models, batches, calibration, args.threads)
        else:
            calls, paths, checks = onnxruntime_calls(models, batches, calibration, args.threads)
        print(f"\n{rt}: {len(calls)} programs built in {time.perf_counter() - t0:.0f} s")
        for line in checks:
            print(f"  {line}")
        print(f"  {'batch':<6} {'model':<13} {'ms/call':>9} {'/ dense fp32':>13} {'IQR':>13} "
              f"{'MACs':>11}")
        for bs in sizes:
            fns = {v: calls[v, bs] for v in VARIANTS}
            stats = summary(interleaved(fns, args.reps, args.block_ms / 1e3, 0.3))
            for v in VARIANTS:
                s = stats[v]
                print(f"  {bs:<6} {v:<13} {s['ms']:>9.4f} {s['ratio']:>13.3f} "
                      f"{s['lo']:>6.3f}-{s['hi']:.3f} {bs * mac[v.split()[0]]:>11,}")
            if rt == runtimes[0]:
                headline[bs] = stats[HEADLINE]["ratio"]
        if not args.no_profile:
            folder = Path(args.profile_dir)
            folder.mkdir(parents=True, exist_ok=True)
            print(f"  profile ({folder}/{rt}_profile.txt): one Python call (medians) =")
            lines = (executorch_profile(programs, batches, folder) if rt == "executorch"
                     else onnxruntime_profile(paths, batches, args.threads, folder))
            for line in lines:
                print(line)
    if widths and "executorch" not in runtimes:
        print("\n# note: --conv1-widths times ExecuTorch's conv1, and executorch is not timed")
    elif widths:
        bs = max(sizes)
        print(f"\nexecutorch, conv1 (1->k filters 5x5) of the conv1 stage alone, batch {bs}, "
              "median operator time (ETDump):")
        for line in conv1_widths(widths, batches[bs], args.reps, args.block_ms / 1e3,
                                 Path(args.profile_dir)):
            print(line)
    print(f"\n# {load()} at the end")
    parts = []
    for bs in sizes:
        goal = GOALS.get(bs)
        verdict = "" if goal is None else (
            f" (goal <= {goal:.2f}: {'met' if headline[bs] <= goal else 'NOT met'})")
        parts.append(f"batch {bs} {headline[bs]:.3f}{verdict}")
    print(f"{runtimes[0]}, {args.threads} threads: compact int8 / dense fp32 = " + "; ".join(parts))


if __name__ == "__main__":
    main()
