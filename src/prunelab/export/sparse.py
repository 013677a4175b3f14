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


class SparseLinear(nn.Module):
    """``nn.Linear`` with a CSR weight: ``y = x Wᵀ + b`` as ``(W xᵀ)ᵀ`` on a sparse kernel."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = _csr(linear.weight)
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

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


class SparseConv2d(nn.Module):
    """``nn.Conv2d`` (groups=1) as CSR weight ``[out, in·kh·kw]`` × im2col ``[in·kh·kw, N·oh·ow]``.

    The output is returned as an NCHW view of ``[out, N, oh, ow]`` memory; the ops after a
    convolution (pooling, activations, flatten) accept any strides.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("SparseConv2d supports groups=1, zero padding given as numbers")
        self.out_channels = conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self.weight = _csr(conv.weight.reshape(conv.out_channels, -1))
        self.bias = None if conv.bias is None else conv.bias.detach().clone()

    def im2col(self, x: Tensor) -> tuple[Tensor, int, int]:
        ph, pw = self.padding
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph))
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
        s_n, s_c, s_h, s_w = x.stride()
        patches = x.as_strided((c, kh, kw, n, oh, ow),
                               (s_c, s_h * dh, s_w * dw, s_n, s_h * sh, s_w * sw))
        return patches.reshape(c * kh * kw, n * oh * ow), oh, ow

    def forward(self, x: Tensor) -> Tensor:
        cols, oh, ow = self.im2col(x)
        if self.bias is None:
            y = self.weight @ cols
        else:
            y = torch.addmm(self.bias.unsqueeze(1), self.weight, cols)
        return y.view(self.out_channels, x.shape[0], oh, ow).permute(1, 0, 2, 3)

    def extra_repr(self) -> str:
        return (f"out_channels={self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, nnz={self.weight.values().numel()}")


def to_sparse_layer(module: nn.Module) -> nn.Module | None:
    """The sparse-kernel equivalent of a Linear/Conv2d, or None where there is none."""
    if isinstance(module, nn.Linear):
        return SparseLinear(module)
    if isinstance(module, nn.Conv2d):
        try:
            return SparseConv2d(module)
        except ValueError:
            return None
    return None


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
    name: str
    kind: str
    density: float
    dense_ms: float
    sparse_ms: float | None
    max_abs_diff: float | None
    sparse: bool


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
             atol: float = 1e-5, force: bool = False) -> tuple[nn.Module, list[LayerChoice]]:
    """A copy of ``net`` whose pruned layers run on sparse kernels where that is faster.

    Each Linear/Conv2d with at most ``max_density`` non-zero weights is timed dense and sparse
    on its own input from ``example`` (alternately, ``repeats`` times); it switches when the
    sparse median is lower and its output matches the dense layer's (``torch.allclose`` with
    ``atol`` and ``rtol=atol``: the sums run in another order).
    Masks must be folded into the weights (``prune.remove``); the choice holds for the
    batch size of ``example``. ``force``: switch every layer that has a sparse version and
    matches, whatever the timing.
    """
    out = copy.deepcopy(net).eval()
    inputs = layer_inputs(out, example)
    choices = []
    for name, module in list(out.named_modules()):
        if name not in inputs:
            continue
        x = inputs[name]
        w = module.weight
        density = float((w != 0).sum()) / w.numel()
        sparse = to_sparse_layer(module) if density <= max_density else None
        dense_ms = sparse_ms = diff = None
        close = False
        if sparse is not None:
            got, ref = sparse(x), module(x)
            diff = float((got - ref).abs().max())
            close = torch.allclose(got, ref, rtol=atol, atol=atol)
            dense_ms, sparse_ms = paired_ms(lambda m=module, x=x: m(x),
                                            lambda m=sparse, x=x: m(x), repeats)
        else:
            dense_ms = median_ms(lambda m=module, x=x: m(x), repeats)
        use = sparse is not None and close and (force or sparse_ms < dense_ms)
        if use:
            _replace(out, name, sparse)
        choices.append(LayerChoice(name, type(module).__name__, density, dense_ms, sparse_ms,
                                   diff, use))
    return out, choices


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def report(choices: list[LayerChoice]) -> list[dict[str, Any]]:
    return [asdict(c) for c in choices]
