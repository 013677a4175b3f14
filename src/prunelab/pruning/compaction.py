"""Physical removal of pruned output filters and neurons: masks alone buy no speed.

Structured pruning (``ln_structured`` / ``random_structured`` with ``dim=0``) zeroes whole output
filters of a Conv or output neurons of a Linear, but the tensors keep their shapes and dense
kernels do the same work (pytorch/pytorch#36214). :func:`compact` builds a smaller network that
computes the same function: it removes those filters together with everything coupled to them
(the following BatchNorm's channels, the consumer's input channels, the matching slice of a
flattened Linear's inputs), using Torch-Pruning's dependency graph, so it works for any
CNN/MLP without per-model surgery.

**The bias of a pruned filter.** prunelab's callback masks weights only, so a filter whose
weights are all zero still emits a constant: its bias, then whatever the following per-channel
ops (BatchNorm in eval mode, ReLU, pooling, dropout) make of it. Removing the filter alone would
change the output. :func:`compact` therefore *folds* that constant into the consumer: before a
group is removed it records, on a check batch, the removed input channels of every consumer
(Conv/Linear that reads them), verifies they are constant over the batch and all spatial
positions, computes their contribution to the consumer's output, verifies that this is a
constant per output unit, and adds it to the consumer's bias (creating one if needed). When the
contribution is not constant -- e.g. a constant channel that reaches a zero-padded convolution,
whose border outputs see less of it -- the channels are kept (and listed in the report): the
result stays exact rather than approximately smaller. Channels whose constant is zero
(e.g. ``ReLU`` of a negative bias) need no folding.

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
from prunelab.internals import conv_forward, pruned_tensors
from prunelab.io import atomic_save
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

# modules that mix channels: a removed channel that passes through them cannot be folded away
_MIXING = (nn.LayerNorm, nn.GroupNorm, nn.MultiheadAttention, nn.RNNBase)
_CONV = nn.modules.conv._ConvNd


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


def _check_batch(inputs: tuple[Tensor, ...], seed: int = 0) -> tuple[Tensor, ...]:
    """The example plus random samples like it: constant channels must not depend on the input."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for x in inputs:
        if x.dim() == 0:
            out.append(x)
            continue
        if x.is_floating_point():
            noise = [torch.randn(x.shape, generator=g).to(x) * s for s in (1.0, 3.0)]
        else:
            lo, hi = int(x.min()), int(x.max())
            noise = [torch.randint(lo, hi + 1, x.shape, generator=g).to(x) for _ in range(2)]
        out.append(torch.cat([x, *noise], dim=0))
    return tuple(out)


# ------------------------------------------------------------------------------ output layers


def _output_layers(model: nn.Module, inputs: tuple[Tensor, ...]) -> set[nn.Module]:
    """Conv/Linear modules whose output reaches the model's output without another layer.

    Found by walking the autograd graph back from the output through parameter-free ops
    (reshape, squeeze, add, pooling …) until module outputs are met.
    """
    grad_fn_to_module: dict[Any, nn.Module] = {}

    def record(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, Tensor) and output.grad_fn is not None:
            grad_fn_to_module[output.grad_fn] = module

    layers = [m for m in model.modules() if isinstance(m, _CONV | nn.Linear | nn.Embedding)]
    handles = [m.register_forward_hook(record) for m in layers]
    try:
        with torch.enable_grad():
            out = model(*inputs)
    finally:
        for h in handles:
            h.remove()
    found: set[nn.Module] = set()
    stack = [t.grad_fn for t in _flatten(out) if isinstance(t, Tensor) and t.grad_fn is not None]
    seen: set[Any] = set()
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        module = grad_fn_to_module.get(fn)
        if module is not None:
            found.add(module)
            continue
        for nxt, _ in getattr(fn, "next_functions", ()):
            if nxt is not None and "AccumulateGrad" not in type(nxt).__name__:
                stack.append(nxt)
    return found


def _flatten(obj: Any) -> list[Any]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, list | tuple):
        return [x for o in obj for x in _flatten(o)]
    return []


# ------------------------------------------------------------------------------ the work


def _zero_units(module: nn.Module) -> list[int]:
    """Output units (Conv filters, Linear neurons) whose weight slice is entirely zero."""
    w = module.weight.detach()
    zero = (w.reshape(w.shape[0], -1) == 0).all(dim=1)
    return [int(i) for i in torch.nonzero(zero).flatten()]


def _is_root(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, _CONV) and not module.transposed and module.groups == 1


def _channel_dim(module: nn.Module) -> int:
    return 1 if isinstance(module, _CONV) else -1


def _capture_inputs(model: nn.Module, modules: Iterable[nn.Module],
                    inputs: tuple[Tensor, ...]) -> dict[nn.Module, list[Tensor]]:
    captured: dict[nn.Module, list[Tensor]] = {m: [] for m in modules}

    def grab(module: nn.Module, args: tuple[Any, ...]) -> None:
        captured[module].append(args[0].detach())

    handles = [m.register_forward_pre_hook(grab) for m in captured]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return captured


def _is_constant(t: Tensor, keep_dim: int) -> Tensor | None:
    """Per-``keep_dim`` value if ``t`` is constant over all other dims (within float noise)."""
    moved = t.movedim(keep_dim, 0).reshape(t.shape[keep_dim], -1)
    first = moved[:, :1]
    spread = (moved - first).abs().amax(dim=1)
    tol = 1e-6 * (1.0 + first.abs().squeeze(1))
    if bool((spread <= tol).all()):
        return moved.mean(dim=1)
    return None


def _contribution(consumer: nn.Module, x: Tensor, idxs: list[int]) -> Tensor:
    """What input channels ``idxs`` of ``x`` add to ``consumer``'s output (no bias)."""
    dim = _channel_dim(consumer)
    keep = torch.zeros(x.shape[dim], dtype=torch.bool, device=x.device)
    keep[idxs] = True
    shape = [1] * x.dim()
    shape[dim] = -1
    x_only = x * keep.view(shape).to(x.dtype)
    with torch.no_grad():
        if isinstance(consumer, nn.Linear):
            return nn.functional.linear(x_only, consumer.weight)
        return conv_forward(consumer, x_only, consumer.weight, None)


def _fold(group: Any, dg: Any, model: nn.Module, inputs: tuple[Tensor, ...],
          protected: set[nn.Module]) -> tuple[str | None, set[int]]:
    """Fold the constants that ``group`` removes into its consumers' biases.

    Returns ``(None, ...)`` on success. Otherwise nothing is changed and the result is why the
    group must be kept, with the root indices whose constant is non-zero where zero padding
    made folding impossible (the others, emitting exactly zero, can still go).
    """
    import torch_pruning as tp

    def name(m: Any) -> str:
        return str(dg._module2name.get(m, type(m).__name__))

    consumers: list[tuple[nn.Module, list[int], list[int]]] = []
    for item in group.items:
        dep, idxs = item.dep, list(item.idxs)
        module = dep.target.module
        if dep.target.type == tp.ops.OPTYPE.OUTPUT:
            return "it reaches the model output", set()
        if isinstance(module, _MIXING):
            return f"it passes through {type(module).__name__}, which mixes channels", set()
        if isinstance(module, nn.Parameter) or dep.target.type == tp.ops.OPTYPE.PARAMETER:
            return "it is coupled to a free nn.Parameter", set()
        out_fn = dg.is_out_channel_pruning_fn(dep.handler)
        in_fn = dg.is_in_channel_pruning_fn(dep.handler)
        if out_fn and isinstance(module, nn.Module) and module in protected:
            return f"it would shrink the outputs of {name(module)} (protected)", set()
        if in_fn and not out_fn and isinstance(module, nn.Linear | _CONV):
            if isinstance(module, _CONV) and (module.transposed or module.groups != 1):
                return f"its consumer {name(module)} is a grouped or transposed conv", set()
            roots = list(item.root_idxs) if item.root_idxs is not None else idxs
            consumers.append((module, idxs, roots))
        elif out_fn and not in_fn and isinstance(module, nn.Linear | _CONV):
            if isinstance(module, _CONV) and module.transposed:
                return "it is coupled to a transposed conv", set()
            w = module.weight.detach()
            if not bool((w[idxs].reshape(len(idxs), -1) == 0).all()):
                return f"coupled layer {name(module)} has non-zero filters there", set()
    captured = _capture_inputs(model, [m for m, _, _ in consumers], inputs)
    deltas: list[tuple[nn.Module, Tensor]] = []
    for consumer, idxs, roots in consumers:
        xs = captured[consumer]
        if not xs:
            return f"its consumer {name(consumer)} did not run on the example", set()
        delta: Tensor | None = None
        for x in xs:
            dim = _channel_dim(consumer) % x.dim()
            removed = x.index_select(dim, torch.tensor(idxs, device=x.device))
            constants = _is_constant(removed, dim)
            if constants is None:
                return (f"the removed inputs of {name(consumer)} are not constant "
                        "(they depend on the input)"), set()
            contrib = _contribution(consumer, x, idxs)
            value = _is_constant(contrib, _channel_dim(consumer) % contrib.dim())
            if value is None:
                bad = {r for r, c in zip(roots, constants.tolist(), strict=True) if c != 0}
                return (f"their constant does not fold into {name(consumer)}'s bias "
                        "(zero padding sees it only in part)"), bad
            if delta is not None and not torch.allclose(delta, value, rtol=1e-5, atol=1e-6):
                return f"{name(consumer)} is reused with different constants", set()
            delta = value
        assert delta is not None
        deltas.append((consumer, delta))
    with torch.no_grad():
        for consumer, delta in deltas:
            if not bool((delta != 0).any()):
                continue
            if consumer.bias is None:
                consumer.bias = nn.Parameter(torch.zeros_like(delta, dtype=consumer.weight.dtype))
            consumer.bias.add_(delta.to(consumer.bias.dtype))
    return None, set()


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
    check = _check_batch(inputs)
    with torch.no_grad():
        reference = [t.detach().clone() for t in _flatten(work(*check))]

    protected = _output_layers(work, inputs)
    protected |= {work.get_submodule(n) for n in ignored_names}
    names = {m: n for n, m in work.named_modules()}
    dg = tp.DependencyGraph().build_dependency(work, example_inputs=inputs, verbose=False)
    report = CompactReport()
    for module in list(work.modules()):
        if not _is_root(module) or module in protected or module not in dg.module2node:
            continue
        name = names[module]
        idxs = _zero_units(module)
        if not idxs:
            continue
        before = int(module.weight.shape[0])
        if len(idxs) >= before:  # a layer keeps one unit (its constant is folded as usual)
            idxs = idxs[1:]
            if not idxs:
                continue
        fn = dg.get_pruner_of_module(module).prune_out_channels
        group = dg.get_pruning_group(module, fn, idxs)
        reason, bad = _fold(group, dg, work, check, protected)
        if reason is not None and bad:
            # zero padding: units whose constant is exactly zero can still go
            wanted = len(idxs)
            idxs = [i for i in idxs if i not in bad]
            report.kept[name] = wanted - len(idxs)
            report.reasons[name] = reason
            if idxs:
                group = dg.get_pruning_group(module, fn, idxs)
                reason, _ = _fold(group, dg, work, check, protected)
        if reason is not None:
            report.kept[name] = report.kept.get(name, 0) + len(idxs)
            report.reasons[name] = reason
            continue
        if not idxs:
            continue
        group.prune()
        report.layers[name] = (before, int(module.weight.shape[0]))

    with torch.no_grad():
        outputs = [t.detach() for t in _flatten(work(*check))]
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
