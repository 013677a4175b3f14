"""Sparse-kernel inference: run highly sparse layers on ``torch.sparse`` CSR kernels.

Unstructured pruning leaves tensors of the dense shape, so dense kernels do the full work. Here
a pruned ``nn.Linear`` becomes a CSR-weight × dense-input product, and a pruned ``nn.Conv2d``
a CSR-weight × dense-im2col product (the input's patches gathered by one strided copy). Which
layers switch is decided by measuring each layer on the real input at the batch size given:
a layer switches only when its sparse kernel is faster, so the converted network is never
slower than the dense one layer by layer. Inference only (no gradients through CSR weights).
"""

from __future__ import annotations

import copy
import statistics
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _csr(weight2d: Tensor) -> Tensor:
    with warnings.catch_warnings():  # "CSR support is in beta": these ops are long-standing
        warnings.simplefilter("ignore", UserWarning)
        return weight2d.detach().contiguous().to_sparse_csr()


class _Scratch:
    """Per-thread scratch tensors of a layer, never its state: not in ``state_dict()``, not
    moved by ``.to()``; a copy or a pickle starts empty. Per thread, so that threads running
    one model at once never write into the same tensor."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, name: str) -> Tensor | None:
        return getattr(self._local, name, None)

    def set(self, name: str, value: Tensor) -> None:
        setattr(self._local, name, value)

    def __reduce__(self) -> tuple[type, tuple]:
        return type(self), ()


class _SparseLayer(nn.Module):
    """A CSR ``weight`` (2-D) and an optional dense ``bias``, held as buffers (inference only:
    no gradients), so ``state_dict()``, ``named_buffers()``, ``.to()`` and ``.double()`` see
    them. Loading a state dict takes the incoming weight's sparsity pattern: ``copy_`` into a
    CSR tensor cannot change its number of non-zeros."""

    weight: Tensor
    bias: Tensor | None

    def __init__(self, weight2d: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", _csr(weight2d))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any, **kwargs: Any) -> None:
        key = prefix + "weight"
        given = state_dict.get(key)
        if isinstance(given, Tensor) and given.shape == self.weight.shape:
            w = given.detach().clone() if given.layout == torch.sparse_csr else _csr(given)
            self.weight = w.to(self.weight.device, self.weight.dtype)
            state_dict = {**state_dict, key: self.weight}  # the copy below is now exact
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class SparseLinear(_SparseLayer):
    """``nn.Linear`` with a CSR weight: ``y = x Wᵀ + b`` as ``(W xᵀ)ᵀ`` on a sparse kernel."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear.weight, linear.bias)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        cols = x.reshape(-1, self.in_features).t()
        if self.bias is None:
            y = self.weight @ cols
        else:
            y = torch.addmm(self.bias.unsqueeze(1), self.weight, cols)
        return y.t().reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"nnz={self.weight.values().numel()}")


class SparseConv2d(_SparseLayer):
    """``nn.Conv2d`` (groups=1) as CSR weight ``[out, in·kh·kw]`` × im2col ``[in·kh·kw, N·oh·ow]``.

    The product is ``[out, N·oh·ow]``; it is returned as an NCHW view of that memory
    (``channels_last=False``, no copy) or copied to channels_last memory, which pooling and
    activations after the convolution handle faster (``channels_last=True``).
    """

    def __init__(self, conv: nn.Conv2d, channels_last: bool = False) -> None:
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("SparseConv2d supports groups=1, zero padding given as numbers")
        super().__init__(conv.weight.reshape(conv.out_channels, -1), conv.bias)
        self.out_channels = conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self.channels_last = channels_last
        # the im2col matrix is large (in·kh·kw × N·oh·ow) and never leaves forward: reusing
        # one tensor per thread avoids fresh pages at every call, which cost more than the
        # copy itself (docs/results/README.md, "Costs behind choices in the code")
        self._scratch = _Scratch()

    def _cols_buffer(self, numel: int, like: Tensor) -> Tensor:
        buf = self._scratch.get("cols")
        if (buf is None or buf.numel() < numel or buf.dtype != like.dtype
                or buf.device != like.device):
            buf = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._scratch.set("cols", buf)
        return buf[:numel]

    def im2col(self, x: Tensor) -> tuple[Tensor, int, int]:
        ph, pw = self.padding
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph))
        if x.stride(-1) != 1:  # channels_last: gather from NCHW (a copy far smaller than im2col)
            x = x.contiguous()
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
        s_n, s_c, s_h, s_w = x.stride()
        patches = x.as_strided((c, kh, kw, n, oh, ow),
                               (s_c, s_h * dh, s_w * dw, s_n, s_h * sh, s_w * sw))
        cols = self._cols_buffer(patches.numel(), x)
        cols.view(patches.shape).copy_(patches)
        return cols.view(c * kh * kw, n * oh * ow), oh, ow

    def forward(self, x: Tensor) -> Tensor:
        cols, oh, ow = self.im2col(x)
        if self.bias is None:
            y = self.weight @ cols
        else:
            y = torch.addmm(self.bias.unsqueeze(1), self.weight, cols)
        n = x.shape[0]
        if self.channels_last:
            return y.t().contiguous().view(n, oh, ow, self.out_channels).permute(0, 3, 1, 2)
        return y.view(self.out_channels, n, oh, ow).permute(1, 0, 2, 3)

    def extra_repr(self) -> str:
        return (f"out_channels={self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, nnz={self.weight.values().numel()}, "
                f"channels_last={self.channels_last}")


def to_sparse_layer(module: nn.Module, channels_last: bool = False) -> nn.Module | None:
    """The sparse-kernel equivalent of a Linear/Conv2d, or None where there is none."""
    if isinstance(module, nn.Linear):
        return SparseLinear(module)
    if isinstance(module, nn.Conv2d):
        try:
            return SparseConv2d(module, channels_last)
        except ValueError:
            return None
    return None


def sparse_options(module: nn.Module) -> list[nn.Module]:
    """Every sparse-kernel version of a layer worth timing (both output layouts for a conv)."""
    first = to_sparse_layer(module)
    if first is None:
        return []
    return [first, SparseConv2d(module, True)] if isinstance(first, SparseConv2d) else [first]


def median_ms(fn: Callable[[], Any], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def paired_ms(a: Callable[[], Any], b: Callable[[], Any], repeats: int = 20
              ) -> tuple[float, float]:
    """Medians of ``a`` and ``b`` timed alternately (machine noise hits both alike)."""
    for _ in range(3):
        a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        tb.append(time.perf_counter() - t1)
        ta.append(t1 - t0)
    return statistics.median(ta) * 1e3, statistics.median(tb) * 1e3


@dataclass
class LayerChoice:
    """One layer's measurements (ms) and the choice made for it."""

    name: str
    kind: str
    density: float
    dense_ms: float  # the layer alone, dense, on its own input
    sparse_ms: float | None  # the layer alone, sparse kernel (best option)
    max_abs_diff: float | None  # sparse vs dense output of the layer
    model_dense_ms: float | None  # whole network with this layer dense ...
    model_sparse_ms: float | None  # ... and with it sparse (the earlier choices in place)
    sparse: bool
    layout: str | None = None  # a sparse conv's output memory: "channels_last" or "cnhw"


def layer_inputs(net: nn.Module, example: Tensor) -> dict[str, Tensor]:
    """Each Linear/Conv2d's input when ``net`` runs on ``example``."""
    seen: dict[str, Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda _m, args, n=name: seen.setdefault(n, args[0]))
             for name, m in net.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    try:
        with torch.no_grad():
            net(example)
    finally:
        for h in hooks:
            h.remove()
    return seen


@torch.no_grad()
def sparsify(net: nn.Module, example: Tensor, repeats: int = 20, max_density: float = 0.5,
             atol: float = 1e-5, force: bool = False, margin: float = 0.03
             ) -> tuple[nn.Module, list[LayerChoice]]:
    """A copy of ``net`` whose pruned layers run on sparse kernels where that is faster.

    Every Linear/Conv2d with at most ``max_density`` non-zero weights is a candidate if its
    sparse version matches the dense layer on its input from ``example`` (``torch.allclose``
    with ``atol`` and ``rtol=atol``: the sums run in another order). Candidates are decided in
    forward order by timing the **whole network** on ``example`` (alternately, ``repeats``
    times) with the layer dense and with each sparse option: a layer switches only if the
    network gets faster by more than ``margin`` (a fraction: differences within timing noise
    do not switch), so the layouts a sparse layer leaves for the ops after it (pooling,
    activations) are paid for in the decision, and the result is never slower than the dense
    network as measured. Masks must be folded into the weights (``prune.remove``); the choice
    holds for the batch size and memory format of ``example``. ``force``: switch every
    candidate (first option), whatever the timing.
    """
    out = copy.deepcopy(net).eval()
    inputs = layer_inputs(out, example)
    choices = []

    def whole() -> None:
        out(example)

    for name, module in list(out.named_modules()):
        if name not in inputs:
            continue
        x = inputs[name]
        w = module.weight
        density = float((w != 0).sum()) / w.numel()
        options = sparse_options(module) if density <= max_density else []
        diff = None
        matching = []
        for option in options:
            got, ref = option(x), module(x)
            diff = float((got - ref).abs().max()) if diff is None else diff
            if torch.allclose(got, ref, rtol=atol, atol=atol):
                matching.append(option)
        dense_ms = median_ms(lambda m=module, x=x: m(x), repeats)
        sparse_ms = model_dense = model_sparse = None
        best: nn.Module = module
        if matching:
            sparse_ms = min(median_ms(lambda m=o, x=x: m(x), repeats) for o in matching)
            if force:
                best = matching[0]
            else:
                for option in matching:  # the network as it stands vs this layer switched
                    t_best, t_opt = paired_ms(
                        lambda b=best, n=name: (_replace(out, n, b), whole()),
                        lambda o=option, n=name: (_replace(out, n, o), whole()), repeats)
                    model_dense = t_best if model_dense is None else model_dense
                    if t_opt < t_best * (1 - margin):
                        best, model_sparse = option, t_opt
                    elif model_sparse is None:
                        model_sparse = t_opt
        _replace(out, name, best)
        layout = None
        if isinstance(best, SparseConv2d):
            layout = "channels_last" if best.channels_last else "cnhw"
        choices.append(LayerChoice(name, type(module).__name__, density, dense_ms, sparse_ms,
                                   diff, model_dense, model_sparse, best is not module, layout))
    return out, choices


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def report(choices: list[LayerChoice]) -> list[dict[str, Any]]:
    return [asdict(c) for c in choices]
