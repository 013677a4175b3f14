"""Dense vs masked vs compacted LeNet: CPU latency at 50 % and 75 % filter sparsity.

    .venv/bin/python benchmarks/compact_speed.py [--quick] [--threads N] [--min-run-time S]
        [--round-to none,K] [--runtime eager,channels_last,compile,onnxruntime] [--profile]

Masks come from the registry's ``ln_structured`` criterion (dim 0: whole conv filters / fc
neurons) on conv1, conv2 and fc1, applied with ``torch.nn.utils.prune.custom_from_mask``; the
classifier fc2 stays dense; ``--round-to K`` keeps a multiple of K slices per layer (as
``pruning.method.round_to``); ``--round-to none,8`` measures without and with it, one after the other. Weights are random (latency does not depend on the values). Each
figure is ``prunelab.pruning.latency.measure_latency``'s (``torch.utils.benchmark.Timer``:
warm-up, then the median of 7 timed blocks), the best of ``--rounds`` interleaved rounds (dense, masked, compact, dense, ...), since a shared
machine only ever adds time.

Each model is timed in every runtime of ``--runtime`` (default all): ``eager`` (NCHW),
``channels_last`` (NHWC weights and inputs), ``compile`` (``torch.compile``, NHWC),
``onnxruntime`` (the model exported to ONNX, run by ONNX Runtime's CPU provider with all graph
optimisations and the same thread count, its threads not spin-waiting between calls; skipped
with a note when ``onnxruntime`` or ``onnx`` is not installed). The masked model, whose pruning hooks are not what one deploys, is timed
in the eager runtimes only. The fastest setting differs
between a model and its compacted copy -- oneDNN pads odd channel counts such as 25 or 12, and
the compacted convolutions are small enough for inductor's fused pooling/ReLU to matter -- so
the headline ratio is **best compact / best dense**, each model in its own fastest setting, with
the same-setting ratios printed beside it.

This virtual machine's speed drifts by 10-40 % over tens of seconds, which moves a ratio of
two separately timed medians as much. So the headline is then re-measured **paired**: each
model in its fastest setting, ``--pairs`` alternating blocks of 3 batch-256 calls (dense
block, compact block, dense block, ...), one ratio per adjacent pair; the median of those
ratios and its interquartile range are printed. Drift hits both members of a pair alike.

``--profile`` adds, per model and runtime, one line from a measured profile (batch 256): its
time relative to that model's fastest runtime and where the time goes (the top operators'
share of self time: ``torch.profiler`` for the torch runtimes, ONNX Runtime's own per-node
profile for ``onnxruntime``) -- why the other runtimes lose. The last lines summarise every
sparsity and round_to setting: compact/dense per runtime, and best vs best.

Each sparsity ends with ``target <= 0.45`` (50 %) or ``<= 0.25`` (75 %): the reference the
headline batch-256 ratio is checked against, met or NOT met (benchmarks/README.md says where
it lands on a 2-core CPU and why); the compact model's outputs must equal the masked model's
within 1e-5.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch
from torch.nn.utils import prune

from prunelab.models import LeNet
from prunelab.pruning.compaction import clone_module, compact_with_report, fold_masks
from prunelab.pruning.criteria import mask as criterion_mask
from prunelab.pruning.latency import REPEATS, make_batch, measure_latency
from prunelab.pruning.metrics import macs

TARGETS = {0.5: 0.45, 0.75: 0.25}
# name -> measure_latency settings
MODES = {"eager": {}, "channels_last": {"channels_last": True},
         "compile": {"channels_last": True, "compile": True}, "onnxruntime": {"onnx": True}}
TORCH_MODES = ("eager", "channels_last")  # where the masked (hooked) model is timed too


def onnxruntime_missing() -> str | None:
    """Why the onnxruntime runtime cannot run here, or None."""
    for module in ("onnxruntime", "onnx"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install {module})"
    return None


def ort_session(model: torch.nn.Module, example: torch.Tensor, profile_dir: str | None = None):
    """An ONNX Runtime CPU session of ``model`` (exported with a dynamic batch dimension)."""
    import onnxruntime as ort

    folder = Path(tempfile.mkdtemp(prefix="compact_speed_"))
    path = folder / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(clone_module(model).eval(), (example,), str(path),
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}}, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ORT's pool threads spin-wait after each run by default: they would take the cores from
    # the torch model timed right after it (paired blocks) and flatter ORT's ratio
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_dir:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(profile_dir) / "ort")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_latency(model: torch.nn.Module, example: torch.Tensor, batch_sizes, min_run_time: float
                ) -> dict[str, float]:
    """Median ms per call of ONNX Runtime, blocks sized as measure_latency sizes them."""
    session = ort_session(model, example)
    out = {}
    for bs in batch_sizes:
        feed = {"input": make_batch(example, bs).numpy()}

        def block(n: int, feed: dict = feed) -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                session.run(None, feed)
            return (time.perf_counter() - t0) / n

        block(1)  # warm-up
        per_call = statistics.median(block(1) for _ in range(3))
        number = max(1, int(min_run_time / REPEATS / max(per_call, 1e-7)))
        out[f"bs{bs}"] = statistics.median(block(number) for _ in range(REPEATS)) * 1e3
    return out


def latency(model: torch.nn.Module, example: torch.Tensor, mode: str, min_run_time: float
            ) -> dict[str, float]:
    if MODES[mode].get("onnx"):
        return ort_latency(model, example, (1, 256), min_run_time)
    return measure_latency(model, example, (1, 256), "cpu", min_run_time, **MODES[mode])


def masked_lenet(amount: float, seed: int = 0, round_to: int | None = None) -> LeNet:
    torch.manual_seed(seed)
    net = LeNet()
    for name in ("conv1", "conv2", "fc1"):
        module = net.get_submodule(name)
        prune.custom_from_mask(module, "weight",
                               criterion_mask("ln_structured", module.weight, amount, round_to=round_to))
    return net.eval()


def prepared(model: torch.nn.Module, batch: torch.Tensor, mode: str,
             profile_dir: str | None = None):
    """A no-argument forward of ``model`` on ``batch`` in inference setting ``mode``; for
    ``onnxruntime`` the session is returned too (to end its profile)."""
    if MODES[mode].get("onnx"):
        session = ort_session(model, batch[:1], profile_dir)
        feed = {"input": batch.numpy()}

        def run() -> None:
            session.run(None, feed)

        for _ in range(3):
            run()
        run.session = session  # type: ignore[attr-defined]
        return run
    net = clone_module(model).eval()
    if MODES[mode].get("channels_last"):
        net = net.to(memory_format=torch.channels_last)
        batch = batch.contiguous(memory_format=torch.channels_last)
    if MODES[mode].get("compile"):
        net = torch.compile(net, dynamic=False)

    def forward() -> None:
        with torch.inference_mode():
            net(batch)

    for _ in range(3):  # compile, allocator, kernel choice
        forward()
    return forward


def paired_ratios(dense, compact, pairs: int, calls: int = 3) -> list[float]:
    """compact/dense time of adjacent blocks of ``calls`` calls each, ``pairs`` times."""
    def block(fn) -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return time.perf_counter() - t0

    ratios = []
    d = block(dense)
    for _ in range(pairs):
        c = block(compact)
        ratios.append(c / d)
        d = block(dense)
        ratios.append(c / d)
    return ratios


def _op_family(name: str) -> str:
    """Operator names from torch's profiler, inductor and ONNX Runtime, in a few families."""
    n = name.lower()
    for family, keys in (("conv", ("conv",)), ("pool", ("pool", "maximum")),  # LeNet's NHWC pool
                         ("matmul", ("addmm", "gemm", "matmul", "linear", "mm")),
                         ("relu", ("relu", "clamp_min")),
                         ("layout/copy", ("copy", "contiguous", "clone", "transpose", "reorder",
                                          "to_dense", "empty", "as_strided", "reshape", "view",
                                          "flatten", "permute"))):
        if any(k in n for k in keys):
            return family
    if "compiledfxgraph" in n or "fused" in n or "cpp_" in n:
        # inductor's generated kernels (fused pooling, ReLU, bias) run inside the graph call
        return "fused (inductor)"
    return "other"


def profile_shares(model: torch.nn.Module, batch: torch.Tensor, mode: str, calls: int = 5
                   ) -> list[tuple[str, float]]:
    """(operator family, share of self time) of ``calls`` forward passes, largest first."""
    totals: dict[str, float] = defaultdict(float)
    if MODES[mode].get("onnx"):
        with tempfile.TemporaryDirectory() as tmp:
            run = prepared(model, batch, mode, profile_dir=tmp)
            for _ in range(calls):
                run()
            events = json.loads(Path(run.session.end_profiling()).read_text())
        for e in events:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                totals[_op_family(e.get("args", {}).get("op_name", e["name"]))] += e["dur"]
    else:
        from torch.profiler import ProfilerActivity, profile

        run = prepared(model, batch, mode)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                run()
        for ev in prof.key_averages():
            if ev.key.startswith(("ProfilerStep", "Torch-Compiled Region", "CompiledFunction",
                                  "TorchDynamo", "Pregraph")) or (
                    ev.key.startswith("## ") and "CompiledFxGraph" not in ev.key):
                continue
            totals[_op_family(ev.key)] += ev.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return sorted(((k, v / whole) for k, v in totals.items()), key=lambda kv: -kv[1])


def why_lines(models: dict[str, torch.nn.Module], lat, modes: list[str], batch: torch.Tensor
              ) -> list[str]:
    """Per model and runtime: time vs the model's fastest runtime, and where the time goes."""
    lines = []
    for name in ("dense", "compact"):
        best = min(lat[name, m]["bs256"] for m in modes)
        for mode in modes:
            ms = lat[name, mode]["bs256"]
            shares = profile_shares(models[name], batch, mode)
            top = ", ".join(f"{k} {v:.0%}" for k, v in shares[:4])
            verdict = "fastest" if ms == best else f"{ms / best:.2f}x its fastest"
            lines.append(f"  why {name:<7} {mode:<13} {ms:8.3f} ms ({verdict}); self time: {top}")
    return lines


def parse_round_to(text: str) -> list[int | None]:
    out: list[int | None] = []
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        if part.lower() in ("none", "off", "0"):
            out.append(None)
        elif part.isdigit():
            out.append(int(part))
        else:
            raise SystemExit(f"--round-to: {part!r} is not a positive whole number or 'none' "
                             "(e.g. --round-to none,8)")
    return out or [None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short timings (0.2 s per figure)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's, i.e. all cores)")
    parser.add_argument("--min-run-time", type=float, default=None,
                        help="seconds of timing per model and batch size (default 1.0)")
    parser.add_argument("--amounts", default="0.5,0.75")
    parser.add_argument("--round-to", default="none",
                        help="keep a multiple of this many filters/neurons (pruning.method.round_to); "
                             "a list such as none,8 measures each (default none: off)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved timing rounds; the best round is kept (default 3)")
    parser.add_argument("--pairs", type=int, default=40,
                        help="paired dense/compact blocks for the headline ratio (default 40)")
    parser.add_argument("--runtime", "--modes", dest="modes", default=",".join(MODES),
                        help=f"runtimes to time, from {','.join(MODES)} (default all)")
    parser.add_argument("--profile", action="store_true",
                        help="one line per model and runtime from a measured profile: why the "
                             "slower runtimes lose")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    min_run_time = args.min_run_time or (0.2 if args.quick else 1.0)
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"--runtime: unknown {bad}; valid: {', '.join(MODES)}")
    if "onnxruntime" in modes and (why := onnxruntime_missing()):
        print(f"# note: onnxruntime runtime skipped: {why}")
        modes.remove("onnxruntime")
    if not modes:
        raise SystemExit("--runtime: nothing left to time")
    round_tos = parse_round_to(args.round_to)
    print(f"# compact_speed  torch {torch.__version__}  {platform.machine()}  "
          f"{torch.get_num_threads()} threads  min_run_time {min_run_time}s  "
          f"runtimes {','.join(modes)}  round_to {args.round_to}  "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    example = torch.randn(1, 1, 28, 28)
    check = torch.randn(64, 1, 28, 28)
    ok = True
    rows = []
    for round_to in round_tos:
        for amount in (float(a) for a in args.amounts.split(",")):
            row, diff = measure(amount, round_to, modes, args, min_run_time, example, check)
            rows.append(row)
            ok &= diff <= 1e-5
    print("\nsummary (bs256): compact/dense in the same runtime; best = each model in its own "
          "fastest runtime")
    header = ["sparsity", "round_to", "params", "MACs", *modes, "best/best", "paired"]
    print("  " + " ".join(f"{h:>13}" for h in header))
    for r in rows:
        cells = [f"{r['amount']:.0%}", str(r["round_to"]), f"{r['params']:.3f}x",
                 f"{r['macs']:.3f}x", *(f"{r['same'][m]:.3f}" for m in modes),
                 f"{r['best']:.3f}", "—" if r["paired"] is None else f"{r['paired']:.3f}"]
        print("  " + " ".join(f"{c:>13}" for c in cells))
    if not ok:
        raise SystemExit("compact outputs differ from the masked model's by more than 1e-5")


def measure(amount: float, round_to: int | None, modes: list[str], args, min_run_time: float,
            example: torch.Tensor, check: torch.Tensor) -> tuple[dict, float]:
    """Time one sparsity/round_to configuration in every runtime; print its table."""
    masked = masked_lenet(amount, round_to=round_to)
    dense = fold_masks(clone_module(masked))
    torch.manual_seed(0)
    t0 = time.perf_counter()
    small, report = compact_with_report(masked, example)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        diff = float((small(check) - masked(check)).abs().max())
    models = {"dense": dense, "masked": masked, "compact": small}
    # interleaved rounds, best round kept: a busy machine only ever adds time
    lat: dict[tuple[str, str], dict[str, float]] = {}
    for _ in range(args.rounds):
        for mode in modes:
            for name, m in models.items():
                if name == "masked" and mode not in TORCH_MODES:
                    continue
                got = latency(m, example, mode, min_run_time / args.rounds)
                prev = lat.get((name, mode), {})
                lat[name, mode] = {k: min(v, prev.get(k, v)) for k, v in got.items()}
    mac = (macs(dense, example)["macs_dense"], macs(small, example)["macs_dense"])
    params = (sum(p.numel() for p in dense.parameters()),
              sum(p.numel() for p in small.parameters()))
    print(f"\nsparsity {amount:.0%}, round_to {round_to}: layers {report.layers}  "
          f"(compaction took {seconds:.2f} s)")
    print(f"  params {params[0]:,} -> {params[1]:,} ({params[1] / params[0]:.3f}x)   "
          f"MACs {mac[0]:,} -> {mac[1]:,} ({mac[1] / mac[0]:.3f}x)")
    print(f"  {'runtime':<14} {'batch':<6} {'dense ms':>9} {'masked ms':>10} "
          f"{'compact ms':>11} {'compact/dense':>14}")
    for mode in modes:
        for bs in ("bs1", "bs256"):
            d, c = lat["dense", mode][bs], lat["compact", mode][bs]
            m = lat.get(("masked", mode), {}).get(bs, float("nan"))
            print(f"  {mode:<14} {bs:<6} {d:>9.3f} {m:>10.3f} {c:>11.3f} {c / d:>14.3f}")
    best = {}
    for name in ("dense", "compact"):
        mode = min(modes, key=lambda md, name=name: lat[name, md]["bs256"])
        best[name] = (mode, lat[name, mode]["bs256"])
    ratio = best["compact"][1] / best["dense"][1]
    row = {"amount": amount, "round_to": round_to, "params": params[1] / params[0],
           "macs": mac[1] / mac[0], "best": ratio, "paired": None,
           "same": {m: lat["compact", m]["bs256"] / lat["dense", m]["bs256"] for m in modes}}
    print(f"  bs256, each in its fastest runtime: dense {best['dense'][1]:.3f} ms "
          f"({best['dense'][0]}), compact {best['compact'][1]:.3f} ms "
          f"({best['compact'][0]}): compact/dense {ratio:.3f}")
    print(f"  max |compact - masked| over 64 inputs: {diff:.2e} "
          f"({'within' if diff <= 1e-5 else 'OUTSIDE'} 1e-5)")
    batch = torch.randn(256, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    if args.profile:
        torch._dynamo.reset()
        for line in why_lines({"dense": dense, "compact": small}, lat, modes, batch):
            print(line)
    if args.pairs > 0:
        torch._dynamo.reset()
        ratios = sorted(paired_ratios(prepared(dense, batch, best["dense"][0]),
                                      prepared(small, batch, best["compact"][0]), args.pairs))
        q = statistics.quantiles(ratios, n=4)
        ratio = row["paired"] = statistics.median(ratios)
        print(f"  paired, bs256, dense {best['dense'][0]} vs compact {best['compact'][0]}: "
              f"compact/dense median {ratio:.3f} (IQR {q[0]:.3f}-{q[2]:.3f}, "
              f"{len(ratios)} pairs)")
    target = TARGETS.get(amount)
    if target is not None:
        print(f"  target <= {target}: {'met' if ratio <= target else 'NOT met'} ({ratio:.3f})")
    return row, diff


if __name__ == "__main__":
    main()
