"""Dense vs masked vs sparse-kernel LeNet: CPU latency at 90/95/98/99 % unstructured sparsity.

    .venv/bin/python benchmarks/sparse_speed.py [--quick] [--threads N] [--amounts 0.9,...]
        [--method global|layer] [--sweep DIR] [--pairs P]

Masks: ``global`` (default) is global magnitude over conv1, conv2 and fc1 (what
``pruning/method=global_magnitude`` trains), ``layer`` the same sparsity in each of them
(``l1_unstructured``); fc2 stays dense. Weights are random unless ``--sweep DIR`` points at a
sweep of finished runs, whose ``final_model.pt`` (trained, masks folded) are used for the
amounts they hold.

For each amount and batch size (1, 256):

* per layer: the dense layer vs its sparse-kernel version (``prunelab.export.sparse``: CSR
  weight × input for Linear, CSR weight × im2col for Conv2d) on the layer's real input,
  timed alternately; the converter keeps the faster;
* whole model: dense (the unpruned network, NCHW or channels_last, whichever is faster),
  masked (``torch.nn.utils.prune`` hooks, as during training) and the converted network,
  then the headline **paired**: ``--pairs`` alternating blocks of dense (its fastest
  setting) and converted calls, the median ratio of adjacent blocks;
* the converted network's outputs vs the masked model's (must be within 1e-5).

The last line prints the 98 % whole-model ratio at batch 256.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from compact_speed import paired_ratios  # benchmarks/ is the script's folder
from torch.nn.utils import prune

from prunelab.export.sparse import sparsify
from prunelab.models import LeNet
from prunelab.pruning import criteria as C

TARGETS = ("conv1", "conv2", "fc1")


def masked_lenet(amount: float, method: str, seed: int = 0,
                 weights: dict[str, torch.Tensor] | None = None) -> tuple[LeNet, LeNet]:
    """(dense network, the same with pruning masks as forward hooks)."""
    torch.manual_seed(seed)
    dense = LeNet().eval()
    if weights is not None:
        dense.load_state_dict(weights)
    masked = LeNet().eval()
    masked.load_state_dict(dense.state_dict())
    ws = {n: masked.get_submodule(n).weight.detach() for n in TARGETS}
    if weights is not None:  # trained and pruned already: its zeros are the mask
        masks = {n: (w != 0).float() for n, w in ws.items()}
        torch.manual_seed(seed)  # the dense reference: same architecture, no zeros
        dense = LeNet().eval()
    elif method == "global":
        masks = C.compute_masks("global_magnitude", ws, amount)
    else:
        masks = C.compute_masks("l1_unstructured", ws, amount)
    for n, m in masks.items():
        prune.custom_from_mask(masked.get_submodule(n), "weight", m)
    return dense, masked


def folded(masked: LeNet) -> LeNet:
    net = LeNet().eval()
    net.load_state_dict({k.removesuffix("_orig"): v for k, v in _folded_state(masked).items()})
    return net


def _folded_state(masked: LeNet) -> dict[str, torch.Tensor]:
    state = masked.state_dict()
    out = {}
    for k, v in state.items():
        if k.endswith("_mask"):
            continue
        if k.endswith("_orig"):
            v = v * state[k.removesuffix("_orig") + "_mask"]
        out[k] = v
    return out


def forward_fn(net: torch.nn.Module, batch: torch.Tensor, channels_last: bool):
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        batch = batch.contiguous(memory_format=torch.channels_last)

    def fn() -> None:
        with torch.inference_mode():
            net(batch)
    return fn


def interleaved_ms(fns: dict, rounds: int, calls: int) -> dict:
    """Median ms per call of each function, timed round-robin in blocks of ``calls`` calls."""
    times: dict = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[k].append((time.perf_counter() - t0) / calls * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def trained_weights(sweep: Path) -> dict[float, dict[str, torch.Tensor]]:
    out = {}
    for res in sorted(sweep.glob("*/results.json")):
        final = res.parent / "final_model.pt"
        if final.exists():
            amount = round(float(json.loads(res.read_text())["amount"]), 4)
            out[amount] = torch.load(final, map_location="cpu", weights_only=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and pairs")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--amounts", default="0.9,0.95,0.98,0.99")
    parser.add_argument("--method", choices=("global", "layer"), default="global")
    parser.add_argument("--sweep", type=Path, help="a sweep dir of finished runs: trained weights")
    parser.add_argument("--pairs", type=int, default=None, help="paired blocks (default 30)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 7 if args.quick else 25
    pairs = args.pairs if args.pairs is not None else (8 if args.quick else 30)
    trained = trained_weights(args.sweep) if args.sweep else {}
    print(f"# sparse_speed  torch {torch.__version__}  {platform.machine()}  "
          f"{torch.get_num_threads()} threads  method {args.method}  "
          f"weights {'trained: ' + str(args.sweep) if trained else 'random'}  "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    g = torch.Generator().manual_seed(0)
    batches = {bs: torch.randn(bs, 1, 28, 28, generator=g) for bs in (1, 256)}
    record, headline, ok = [], None, True
    for amount in (float(a) for a in args.amounts.split(",")):
        weights = trained.get(round(amount, 4))
        if args.sweep and weights is None:
            print(f"\nsparsity {amount:.0%}: no finished run in {args.sweep}, skipped")
            continue
        dense, masked = masked_lenet(amount, args.method, weights=weights)
        plain = folded(masked)
        dens = {n: float((plain.get_submodule(n).weight != 0).float().mean()) for n in TARGETS}
        print(f"\nsparsity {amount:.0%}: weight density " +
              "  ".join(f"{n} {d:.3f}" for n, d in dens.items()))
        for bs, batch in batches.items():
            calls = 3 if bs > 1 else 50
            fns = {}
            for cl in (False, True):
                fns["dense", cl] = forward_fn(_copy(dense), batch, cl)
                fns["masked", cl] = forward_fn(masked, batch, cl)  # hooks: no deepcopy
            lat = interleaved_ms(fns, repeats, calls)
            best_cl = min((False, True), key=lambda cl: lat["dense", cl])
            d_best = lat["dense", best_cl]
            m_best = min(lat["masked", False], lat["masked", True])
            # convert in the dense network's fastest memory format, decided on this batch
            start = _copy(plain)
            example = batch
            if best_cl:
                start = start.to(memory_format=torch.channels_last)
                example = batch.contiguous(memory_format=torch.channels_last)
            t0 = time.perf_counter()
            sparse, choices = sparsify(start, example, repeats=repeats)
            seconds = time.perf_counter() - t0
            with torch.no_grad():
                diff = float((sparse(batch) - masked(batch)).abs().max())
            ok &= diff <= 1e-5
            print(f"  batch {bs} ({'channels_last' if best_cl else 'NCHW'}; conversion "
                  f"{seconds:.1f} s): ms    layer alone: dense  sparse   network: layer dense"
                  f"  sparse   chosen")
            for c in choices:
                def f(v):
                    return f"{v:7.3f}" if v is not None else "      -"
                chosen = f"sparse ({c.layout})" if c.layout else "sparse" if c.sparse else "dense"
                print(f"    {c.name:<6} density {c.density:5.3f}            {f(c.dense_ms)} "
                      f"{f(c.sparse_ms)}            {f(c.model_dense_ms)} {f(c.model_sparse_ms)}"
                      f"   {chosen}")
            fn_sparse = forward_fn(sparse, example, False)
            s_best = interleaved_ms({"sparse": fn_sparse}, repeats, calls)["sparse"]
            ratios = sorted(paired_ratios(fns["dense", best_cl], fn_sparse, pairs, calls))
            q = statistics.quantiles(ratios, n=4)
            ratio = statistics.median(ratios)
            layout = {False: "NCHW", True: "channels_last"}
            print(f"    whole model: dense {d_best:.3f} ms ({layout[best_cl]})  masked "
                  f"{m_best:.3f} ms  sparse-kernel {s_best:.3f} ms; "
                  f"paired sparse/dense {ratio:.3f} (IQR {q[0]:.3f}-{q[2]:.3f}) = "
                  f"{1 / ratio:.2f}x faster; max |sparse - masked| {diff:.1e}")
            record.append({"amount": amount, "batch": bs, "density": dens,
                           "layers": [c.__dict__ for c in choices], "dense_ms": d_best,
                           "masked_ms": m_best, "sparse_ms": s_best,
                           "paired_ratio": ratio, "max_abs_diff": diff})
            if abs(amount - 0.98) < 1e-9 and bs == 256:
                headline = ratio
    if args.json:
        args.json.write_text(json.dumps(record, indent=2))
    if not ok:
        print("sparse-kernel outputs differ from the masked model's by more than 1e-5")
    if headline is None:
        print("98 % whole model, batch 256: not measured (add 0.98 to --amounts)")
    else:
        print(f"98 % whole model, batch 256: sparse-kernel/dense time {headline:.3f} "
              f"({1 / headline:.2f}x faster)")


def _copy(net: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(net)


if __name__ == "__main__":
    main()
