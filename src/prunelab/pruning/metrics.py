"""What pruning removed and what it buys: sparsity per tensor, non-zero parameters, MACs.

Effective MACs scale each layer's dense MACs by the density of its weight: the work a sparse
kernel would do. They are an upper bound on the saving; real speed comes from compaction.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


def _effective_weight(module: nn.Module, name: str) -> Tensor:
    return getattr(module, name)


def param_counts(model: nn.Module) -> dict[str, int]:
    """Total and non-zero parameters, counting a pruned tensor as its masked weight."""
    total = nonzero = 0
    seen: set[int] = set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if p is None or id(p) in seen:
                continue
            seen.add(id(p))
            if pname.endswith("_orig"):
                p = _effective_weight(module, pname[: -len("_orig")])
            total += p.numel()
            nonzero += int((p != 0).sum())
    return {"params_total": total, "params_nonzero": nonzero}


def layer_sparsity(model: nn.Module, names: list[str] | None = None) -> dict[str, float]:
    """Fraction of zeros of every Conv/Linear/Embedding weight (or of the ``names`` given)."""
    out = {}
    for mod_name, module in model.named_modules():
        if not isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear | nn.Embedding):
            continue
        key = f"{mod_name}.weight" if mod_name else "weight"
        if names is not None and key not in names:
            continue
        w = module.weight
        out[key] = float((w == 0).sum()) / w.numel()
    return out


@torch.no_grad()
def macs(model: nn.Module, example: Tensor) -> dict[str, int]:
    """Dense and effective multiply-accumulates of one forward pass on ``example``."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(example)
    model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    dense = counter.get_total_flops() // 2
    effective = dense
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not name or not isinstance(weight, Tensor) or weight.dim() < 2:
            continue
        layer = sum(counts.get(f"{root}.{name}", {}).values()) // 2
        if layer:
            density = float((weight != 0).sum()) / weight.numel()
            effective -= layer - round(layer * density)
    return {"macs_dense": int(dense), "macs_effective": int(effective)}


def summarize(model: nn.Module, example: Tensor | None, pruned: list[str] | None = None) -> dict[str, Any]:
    """The pruning fields of results.json for ``model`` as it is now."""
    layers = layer_sparsity(model, pruned)
    zeros = sum(s * _numel(model, k) for k, s in layers.items())
    total = sum(_numel(model, k) for k in layers)
    out: dict[str, Any] = {
        "sparsity_global": zeros / total if total else 0.0,
        "sparsity_layers": layers,
        **param_counts(model),
    }
    if example is not None:
        out.update(macs(model, example))
    return out


def _numel(model: nn.Module, key: str) -> int:
    return model.get_submodule(key.rsplit(".", 1)[0]).weight.numel() if "." in key else model.weight.numel()
