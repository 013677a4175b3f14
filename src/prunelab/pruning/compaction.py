"""Physical removal of pruned output filters and neurons: masks alone buy no speed.

Structured pruning (``ln_structured`` / ``random_structured`` with ``dim=0``) zeroes whole output
filters of a Conv or output neurons of a Linear, but the tensors keep their shapes and dense
kernels do the same work (pytorch/pytorch#36214). :func:`compact` builds a smaller network that
computes the same function: it removes those filters together with everything coupled to them
(the following BatchNorm's channels, the consumer's input channels, the matching slice of a
flattened Linear's inputs), using Torch-Pruning's dependency graph, so it works for any
CNN/MLP without per-model surgery. A zeroed filter's bias still emits a constant; it is folded
into the consumer's bias before the filter goes (:mod:`prunelab.pruning.bias_folding`, which
also finds the layers that must keep their units).

Guarantees and limits:

* The input model is never modified; the work is done on a copy. Masked modules
  (``weight_orig`` + ``weight_mask`` from ``torch.nn.utils.prune``) are folded first; plain
  models with zeroed slices work the same way.
* The result equals the input model in **eval mode** (BatchNorm running statistics, no
  dropout); a final check on the check batch raises :class:`CompactionError` if the outputs
  differ by more than a tolerance. It is meant for inference and export, not for more training
  (in train mode BatchNorm would see different batch statistics than the folded constants).
* Only output slices are removed (``dim=0``: Conv filters, Linear neurons, for Conv groups=1).
  Layers that produce the model's output (the classifier) are never shrunk; neither are
  ``ignored_layers`` nor anything coupled to them.
* Channels that pass through LayerNorm / GroupNorm / attention / recurrent layers before a
  consumer are kept (those layers mix channels). Parametrizations (``weight_norm``, spectral
  norm) are not supported.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from prunelab.errors import PrunelabError
from prunelab.internals import pruned_tensors
from prunelab.io import atomic_save
from prunelab.pruning.bias_folding import (
    check_batch,
    flatten,
    fold_group,
    is_root,
    output_layers,
    zero_units,
)
from prunelab.pruning.metrics import macs

__all__ = [
    "CompactReport",
    "CompactionError",
    "clone_module",
    "compact",
    "compact_fields",
    "compact_with_report",
    "fold_masks",
    "load_compact",
    "save_compact",
]


class CompactionError(PrunelabError):
    """The model could not be compacted exactly (an op the dependency graph does not model)."""


@dataclass
class CompactReport:
    """What :func:`compact_with_report` did.

    ``layers``: module name → (units before, units after) for every shrunk layer;
    ``kept``: module name → number of zeroed units that had to be kept, with ``reasons``;
    ``max_abs_diff``: largest |compact − original| over the check batch (eval mode).
    """

    layers: dict[str, tuple[int, int]] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    max_abs_diff: float = 0.0


# ------------------------------------------------------------------------------ copies, masks


def clone_module(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works for modules pruned with ``torch.nn.utils.prune``.

    A pruned module holds its masked weight as a plain non-leaf tensor attribute, which
    ``deepcopy`` refuses; it is copied detached here (the pruning hook recomputes it anyway).
    """
    memo: dict[int, Any] = {}
    for module in model.modules():
        for name in pruned_tensors(module):
            t = module.__dict__.get(name)
            if isinstance(t, Tensor) and not t.is_leaf:
                memo[id(t)] = t.detach().clone()
    return copy.deepcopy(model, memo)


def fold_masks(model: nn.Module) -> nn.Module:
    """Fold every ``torch.nn.utils.prune`` mask of ``model`` into its weight, in place.

    Afterwards the model has plain parameters with exact zeros (``prune.remove``). Returns it.
    """
    for module in model.modules():
        for name in pruned_tensors(module):
            torch_prune.remove(module, name)
    return model


def _as_tuple(example_inputs: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    if isinstance(example_inputs, Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def compact_with_report(
    model: nn.Module,
    example_inputs: Tensor | Sequence[Tensor],
    ignored_layers: Iterable[nn.Module] | None = None,
    tolerance: float = 1e-4,
) -> tuple[nn.Module, CompactReport]:
    """:func:`compact`, also returning a :class:`CompactReport` of what was removed and kept.

    ``ignored_layers`` are modules of ``model`` (the input, not the copy) that must keep all
    their output units. ``tolerance``: the largest allowed |compact − original| on the check
    batch, relative to ``1 + max|original|``, before :class:`CompactionError` is raised.
    """
    import torch_pruning as tp

    inputs = _as_tuple(example_inputs)
    ignored = list(ignored_layers or [])
    index = {id(m): name for name, m in model.named_modules()}
    ignored_names = {index[id(m)] for m in ignored if id(m) in index}
    unknown = [m for m in ignored if id(m) not in index]
    if unknown:
        raise CompactionError(f"ignored_layers holds {len(unknown)} module(s) that are not in the model")

    work = fold_masks(clone_module(model))
    work.eval()
    for p in work.parameters():
        p.requires_grad_(True)
    device = next(iter(work.parameters()), torch.empty(0)).device
    inputs = tuple(x.to(device) for x in inputs)
    check = check_batch(inputs)
    with torch.no_grad():
        reference = [t.detach().clone() for t in flatten(work(*check))]

    protected = output_layers(work, inputs)
    protected |= {work.get_submodule(n) for n in ignored_names}
    names = {m: n for n, m in work.named_modules()}
    dg = tp.DependencyGraph().build_dependency(work, example_inputs=inputs, verbose=False)
    report = CompactReport()
    for module in list(work.modules()):
        if not is_root(module) or module in protected or module not in dg.module2node:
            continue
        name = names[module]
        idxs = zero_units(module)
        if not idxs:
            continue
        before = int(module.weight.shape[0])
        if len(idxs) >= before:  # a layer keeps one unit (its constant is folded as usual)
            idxs = idxs[1:]
            if not idxs:
                continue
        fn = dg.get_pruner_of_module(module).prune_out_channels
        group = dg.get_pruning_group(module, fn, idxs)
        reason, bad = fold_group(group, dg, work, check, protected)
        if reason is not None and bad:
            # zero padding: units whose constant is exactly zero can still go
            wanted = len(idxs)
            idxs = [i for i in idxs if i not in bad]
            report.kept[name] = wanted - len(idxs)
            report.reasons[name] = reason
            if idxs:
                group = dg.get_pruning_group(module, fn, idxs)
                reason, _ = fold_group(group, dg, work, check, protected)
        if reason is not None:
            report.kept[name] = report.kept.get(name, 0) + len(idxs)
            report.reasons[name] = reason
            continue
        if not idxs:
            continue
        group.prune()
        report.layers[name] = (before, int(module.weight.shape[0]))

    with torch.no_grad():
        outputs = [t.detach() for t in flatten(work(*check))]
    diff = 0.0
    for ref, out in zip(reference, outputs, strict=True):
        if ref.shape != out.shape:
            raise CompactionError(
                f"compaction changed an output's shape from {tuple(ref.shape)} to "
                f"{tuple(out.shape)}; pass the layer that produces it in ignored_layers"
            )
        if ref.numel():
            d = float((ref.float() - out.float()).abs().max())
            if math.isnan(d) or d > tolerance * (1.0 + float(ref.float().abs().max())):
                raise CompactionError(
                    f"the compacted model's outputs differ from the original's by {d:.3g}: the "
                    "model has an op the dependency graph does not model; pass the layers around "
                    "it in ignored_layers"
                )
            diff = max(diff, d)
    report.max_abs_diff = diff
    if report.kept:
        warnings.warn(
            "compact kept zeroed units it could not remove exactly: "
            + "; ".join(f"{n}: {k} ({report.reasons[n]})" for n, k in report.kept.items()),
            stacklevel=2,
        )
    for p in work.parameters():
        p.grad = None
    return work, report


def compact(
    model: nn.Module,
    example_inputs: Tensor | Sequence[Tensor],
    ignored_layers: Iterable[nn.Module] | None = None,
) -> nn.Module:
    """A smaller copy of ``model`` without its zeroed output filters / neurons (eval mode).

    ``model`` may be masked (``torch.nn.utils.prune``) or plain with zeroed slices; it is not
    modified. ``example_inputs`` (a tensor or a tuple of the forward's tensors, any batch size)
    drives the dependency-graph trace and the exactness checks. ``ignored_layers`` keep all
    their units. The constants that zeroed filters still emit through their biases are folded
    into the consumers' biases, so in eval mode the result computes the same outputs (checked;
    :class:`CompactionError` otherwise). See the module docstring for the limits.
    """
    return compact_with_report(model, example_inputs, ignored_layers)[0]


# ------------------------------------------------------------------------------ save / load


def _export_example(inputs: tuple[Tensor, ...], dims: Sequence[int]) -> tuple[Tensor, ...]:
    # export specialises size-1 dims: trace with size >= 2 so the dynamic dims stay dynamic
    out = []
    for x in inputs:
        for d in dims:
            if x.dim() > d and x.shape[d] < 2:
                x = torch.cat([x, x], dim=d)
        out.append(x)
    return tuple(out)


def save_compact(model: nn.Module, path: str | os.PathLike[str],
                 example_inputs: Tensor | Sequence[Tensor],
                 dynamic_dims: Sequence[int] = (0,)) -> Path:
    """Write ``model`` as a ``torch.export`` program (``.pt2``), in eval mode.

    The file loads with ``torch.export.load(path).module()`` alone: neither prunelab nor the
    model's class is needed. ``dynamic_dims``: the dims of every input that may vary at run
    time (default the batch dim; add 1 for token sequences padded per batch). Written
    atomically (:func:`prunelab.io.atomic_save`). Returns the path.
    """
    path = Path(path)
    inputs = _export_example(_as_tuple(example_inputs), dynamic_dims)
    was_training = model.training
    model.eval()
    try:
        names = {0: "batch", 1: "dim1", 2: "dim2", 3: "dim3"}
        dyn = {d: torch.export.Dim(names.get(d, f"dim{d}"), min=1) for d in dynamic_dims}
        dynamic = tuple({d: dyn[d] for d in dynamic_dims if d < x.dim()} or None for x in inputs)
        program = torch.export.export(model, inputs, dynamic_shapes=dynamic)
    finally:
        model.train(was_training)
    atomic_save(path, lambda f: torch.export.save(program, f))
    return path


def load_compact(path: str | os.PathLike[str]) -> nn.Module:
    """Load a file written by :func:`save_compact` (same as ``torch.export.load(p).module()``)."""
    return torch.export.load(str(path)).module()


# ------------------------------------------------------------------------------ figures


def compact_fields(compact_model: nn.Module, example: Tensor) -> dict[str, int]:
    """``params_compact`` (all parameters) and ``macs_compact`` (one forward on ``example``)."""
    params = sum(p.numel() for p in compact_model.parameters())
    return {"params_compact": int(params),
            "macs_compact": int(macs(compact_model, example)["macs_dense"])}
