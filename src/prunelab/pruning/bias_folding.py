"""The graph side of compaction: which zeroed units may go, and what they leave behind.

:func:`prunelab.pruning.compaction.compact` walks Torch-Pruning's dependency graph of a model;
this module answers its questions about one group of coupled channels: which layers produce the
model's output (never shrunk), which output units of a layer are entirely zero, and whether the
channels a group removes can be removed exactly.

**The bias of a pruned filter.** prunelab's callback masks weights only, so a filter whose
weights are all zero still emits a constant: its bias, then whatever the following per-channel
ops (BatchNorm in eval mode, ReLU, pooling, dropout) make of it. Removing the filter alone would
change the output. The compaction therefore *folds* that constant into the consumer: before a
group is removed it records, on a check batch, the removed input channels of every consumer
(Conv/Linear that reads them), verifies they are constant over the batch and all spatial
positions, computes their contribution to the consumer's output, verifies that this is a
constant per output unit, and adds it to the consumer's bias (creating one if needed). When the
contribution is not constant -- e.g. a constant channel that reaches a zero-padded convolution,
whose border outputs see less of it -- the channels are kept (and listed in the report): the
result stays exact rather than approximately smaller. Channels whose constant is zero
(e.g. ``ReLU`` of a negative bias) need no folding.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from prunelab.internals import conv_forward

__all__ = ["check_batch", "flatten", "fold_group", "is_root", "output_layers", "zero_units"]

# modules that mix channels: a removed channel that passes through them cannot be folded away
_MIXING = (nn.LayerNorm, nn.GroupNorm, nn.MultiheadAttention, nn.RNNBase)
_CONV = nn.modules.conv._ConvNd


def check_batch(inputs: tuple[Tensor, ...], seed: int = 0) -> tuple[Tensor, ...]:
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


def output_layers(model: nn.Module, inputs: tuple[Tensor, ...]) -> set[nn.Module]:
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
    stack = [t.grad_fn for t in flatten(out) if isinstance(t, Tensor) and t.grad_fn is not None]
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


def flatten(obj: Any) -> list[Any]:
    """The tensors of a forward's output (a tensor, or dicts, lists and tuples of them), in order:
    the outputs compared before and after compaction."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, list | tuple):
        return [x for o in obj for x in flatten(o)]
    return []


# ------------------------------------------------------------------------------ units and constants


def zero_units(module: nn.Module) -> list[int]:
    """Output units (Conv filters, Linear neurons) whose weight slice is entirely zero."""
    w = module.weight.detach()
    zero = (w.reshape(w.shape[0], -1) == 0).all(dim=1)
    return [int(i) for i in torch.nonzero(zero).flatten()]


def is_root(module: nn.Module) -> bool:
    """Whether ``module``'s output units can be removed: a Linear, or a plain (not grouped, not
    transposed) convolution."""
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, _CONV) and not module.transposed and module.groups == 1


def _channel_dim(module: nn.Module) -> int:
    return 1 if isinstance(module, _CONV) else -1


def capture_inputs(model: nn.Module, modules: Iterable[nn.Module],
                   inputs: tuple[Tensor, ...]) -> dict[nn.Module, list[Tensor]]:
    """What each of ``modules`` receives when ``model`` runs ``inputs`` (every call of a reused
    one)."""
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


def fold_group(group: Any, dg: Any, model: nn.Module, inputs: tuple[Tensor, ...],
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
    captured = capture_inputs(model, [m for m, _, _ in consumers], inputs)
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
