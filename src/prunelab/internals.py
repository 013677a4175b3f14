"""Every place prunelab relies on private torch or Lightning internals, in one module.

Each workaround below buys speed or exactness that the public API does not offer. Each says what
it relies on, was measured on **torch 2.14.1 and lightning 2.6.6**, detects at import whether
the internal is still there and behaves as assumed, and otherwise falls back to a public-API
path that gives the same results (only slower, or, for :func:`batch_index`, a documented
broader choice). ``tests/test_internals.py`` fails loudly when an upgrade changes what a
workaround relies on, so the fallback never switches on unnoticed.

=========================  =========================================  ==========================
workaround                 relies on                                  fallback
=========================  =========================================  ==========================
:class:`FastAttributes`    ``nn.Module`` keeps parameters, buffers    plain ``nn.Module``
                           and submodules out of ``__dict__``         assignment
:class:`NoProfiler`        Lightning wraps hooks in                   Lightning's
                           ``profiler.profile(name)``; the            ``PassThroughProfiler``
                           pass-through one does nothing there
:func:`batch_index`        ``fit_loop.epoch_loop.batch_progress``     ``None``: callers treat
                           ``.current.ready``                         the batch as unknown
:func:`param_slot`,        ``module._parameters`` is the ordered      re-registering with
:func:`move_param`         dict ``parameters()`` follows              ``register_parameter``
:class:`MaskedInPlace`     torch calls a pruning method as a          none needed: the tensor's
                           forward pre-hook, ``hook(module, inputs)`` name is its own attribute
:func:`pruned_tensors`     ``module._forward_pre_hooks`` and          ``<p>_orig`` parameters
                           ``BasePruningMethod._tensor_name``         with a ``<p>_mask`` buffer
:func:`mul_in_place`       ``torch._foreach_mul_``                    one ``mul_`` per tensor
:func:`conv_forward`       ``_ConvNd._conv_forward``                  ``F.conv1d/2d/3d``
:func:`tensor_factories`   ``torch.utils._device``'s                  the public factories
                           ``_device_constructors()`` lists torch's   by name
                           tensor factory functions
=========================  =========================================  ==========================
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import prune

#: the versions every workaround here was measured and tested on
MEASURED_ON = {"torch": "2.14.1", "lightning": "2.6.6"}


# ------------------------------------------------------------------ nn.Module attribute speed


def _module_dict_holds_plain_attributes_only() -> bool:
    """``nn.Module`` removes a name from ``__dict__`` when it becomes a parameter, buffer or
    submodule, so a name found in ``__dict__`` is a plain attribute."""
    try:
        m = nn.Module()
        m.x, m.z, m.w = 1, 3, 4
        m.x = nn.Parameter(torch.zeros(1))  # a plain attribute becomes a parameter
        m.z = nn.Identity()  # ... or a submodule
        m.register_buffer("y", torch.zeros(1))
        return (not {"x", "y", "z"} & set(vars(m)) and vars(m).get("w") == 4
                and isinstance(m.x, nn.Parameter) and isinstance(m.z, nn.Identity))
    except Exception:
        return False


FAST_ATTRIBUTES = _module_dict_holds_plain_attributes_only()


class FastAttributes:
    """Plain attribute assignment on an ``nn.Module`` without its registry checks.

    ``nn.Module.__setattr__`` looks a name up in the parameters, buffers and submodules on every
    assignment; Lightning assigns ``_current_fx_name`` twice per hook call, some 40 times a batch
    (the cost: docs/results/README.md). For a name already held as a plain attribute, and a
    value that is neither a tensor nor a module, ``nn.Module`` would end in ``object.__setattr__`` anyway (relies on:
    :data:`FAST_ATTRIBUTES`; fallback: ``nn.Module``'s own assignment).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if (FAST_ATTRIBUTES and name in self.__dict__
                and not isinstance(value, (Tensor, nn.Module))):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


# ------------------------------------------------------------------ Lightning's hook profiler


# Lightning is imported on first use only: compaction and the metrics need torch alone.


@functools.cache
def _passthrough_profile_is_a_no_op() -> bool:
    """Lightning's pass-through profiler records nothing: its start/stop are no-ops."""
    try:
        from lightning.pytorch.profilers import PassThroughProfiler

        p = PassThroughProfiler()
        before = dict(vars(p))
        with p.profile("probe"):
            pass
        return callable(getattr(p, "profile", None)) and vars(p) == before and not p.summary()
    except Exception:
        return False


@functools.cache
def _no_profiler_class() -> type:
    from lightning.pytorch.profilers import PassThroughProfiler

    class NoProfiler(PassThroughProfiler):
        """Lightning's default profiler, without its per-call context manager.

        Lightning wraps every hook call (about 40 a batch) in ``profiler.profile(name)``, a
        generator-based context manager even when nothing is profiled (its cost per batch:
        docs/results/README.md). One shared ``nullcontext`` does the same nothing.
        ``+trainer.profiler=simple`` (or any profiler) replaces it. Relies on: ``FAST_PROFILER``;
        fallback: the pass-through profiler's own ``profile``.
        """

        _null = nullcontext()

        def profile(self, action_name: str) -> AbstractContextManager:  # type: ignore[override]
            if _passthrough_profile_is_a_no_op():
                return self._null
            return super().profile(action_name)

    NoProfiler.__module__ = __name__
    NoProfiler.__qualname__ = "NoProfiler"
    return NoProfiler


def __getattr__(name: str) -> Any:
    # the Lightning-dependent names, built when first asked for
    if name == "NoProfiler":
        return _no_profiler_class()
    if name == "FAST_PROFILER":
        return _passthrough_profile_is_a_no_op()
    if name == "BATCH_PROGRESS":
        return _batch_progress_exists()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------ the batch being trained


@functools.cache
def _batch_progress_exists() -> bool:
    try:
        from lightning.pytorch.loops.progress import _BatchProgress

        return _BatchProgress().current.ready == 0
    except Exception:
        return False


def batch_index(trainer: Any) -> int | None:
    """Index within its epoch of the batch being trained on (valid in ``on_before_optimizer_step``).

    Lightning has no public accessor there; this reads
    ``trainer.fit_loop.epoch_loop.batch_progress.current.ready - 1``. None when that is missing
    (:data:`BATCH_PROGRESS` false, or a loop without it): a caller then treats the batch as one
    of any position (the pruning callback collects gradient statistics over the whole epoch,
    as it does for a loader of unknown length).
    """
    if not _batch_progress_exists():
        return None
    try:
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.ready) - 1
    except AttributeError:
        return None


# ------------------------------------------------------------------ parameter order


def _parameters_dict_orders_parameters() -> bool:
    """``module._parameters`` is an ordered dict whose order ``parameters()`` follows."""
    try:
        m = nn.Linear(2, 2)
        params = m._parameters
        items = list(params.items())[::-1]
        params.clear()
        params.update(items)
        return [n for n, _ in m.named_parameters()] == ["bias", "weight"]
    except Exception:
        return False


ORDERED_PARAMETERS = _parameters_dict_orders_parameters()


def param_slot(module: nn.Module, name: str) -> int:
    """Position of parameter ``name`` among ``module``'s own parameters (for :func:`move_param`)."""
    if ORDERED_PARAMETERS:
        return list(module._parameters).index(name)
    return [n for n, _ in module.named_parameters(recurse=False)].index(name)


def move_param(module: nn.Module, name: str, slot: int) -> None:
    """Put parameter ``name`` at position ``slot`` of ``module``'s own parameters.

    Optimizer state is kept by position, and ``torch.nn.utils.prune`` re-registers a pruned
    tensor as ``<p>_orig`` at the end: moving it back keeps a resumed optimizer's momenta on
    the right tensors. Fast path: reorder ``module._parameters`` in place. Fallback: delete and
    re-register the parameters from ``slot`` on with ``register_parameter``.
    """
    if ORDERED_PARAMETERS:
        params = module._parameters
        items = [(k, v) for k, v in params.items() if k != name]
        items.insert(slot, (name, params[name]))
        params.clear()
        params.update(items)
        return
    own = [(n, p) for n, p in module.named_parameters(recurse=False)]
    order = [item for item in own if item[0] != name]
    order.insert(slot, next(item for item in own if item[0] == name))
    for n, p in order[slot:]:
        delattr(module, n)
        module.register_parameter(n, p)


# ------------------------------------------------------------------ torch.nn.utils.prune hooks


def _prune_keeps_tensor_name() -> bool:
    """``BasePruningMethod.apply`` stores the tensor's name as ``_tensor_name`` on the hook it
    registers in ``module._forward_pre_hooks``."""
    try:
        m = nn.Linear(2, 2)
        prune.identity(m, "weight")
        hooks = [h for h in m._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]
        return len(hooks) == 1 and hooks[0]._tensor_name == "weight"
    except Exception:
        return False


PRUNE_HOOK_NAMES = _prune_keeps_tensor_name()


def pruned_tensors(module: nn.Module) -> list[str]:
    """Names of ``module``'s own tensors pruned with ``torch.nn.utils.prune`` (``weight`` ...).

    Fast path: the pruning hooks themselves. Fallback: the naming convention ``prune`` writes,
    a ``<p>_orig`` parameter beside a ``<p>_mask`` buffer.
    """
    if PRUNE_HOOK_NAMES:
        return [h._tensor_name for h in module._forward_pre_hooks.values()
                if isinstance(h, prune.BasePruningMethod)]
    buffers = {n for n, _ in module.named_buffers(recurse=False)}
    return [n[: -len("_orig")] for n, _ in module.named_parameters(recurse=False)
            if n.endswith("_orig") and n[: -len("_orig")] + "_mask" in buffers]


class MaskedInPlace(prune.CustomFromMask):
    """torch's ``custom_from_mask`` without its per-forward multiply.

    torch recomputes ``weight = weight_orig * weight_mask`` before every forward, which costs a
    multiply forward and another backward per pruned tensor, every step (docs/results/README.md),
    and loses a channels_last weight's layout when a dim has size 1. Here ``weight_orig`` itself
    holds the zeros: the pruning callback masks it in place whenever a mask is set or loaded and
    after every optimizer step (as OpenLTH does), so the forward can use it as it is. ``weight``
    stays a plain attribute (a view of ``weight_orig``), as ``torch.nn.utils.prune`` expects, so
    ``prune.is_pruned``, ``prune.remove`` and checkpoints with ``_orig``/``_mask`` keys are
    unchanged. Relies on torch calling the hook as ``hook(module, inputs)``; the tensor's name
    is kept in the hook's own ``tensor_name`` (torch keeps its copy in a private attribute).
    """

    tensor_name: str

    @classmethod
    def apply(cls, module: nn.Module, name: str, mask: Tensor) -> MaskedInPlace:  # type: ignore[override]
        method = super().apply(module, name, mask=mask)
        method.tensor_name = name
        return method

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        orig = getattr(module, self.tensor_name + "_orig")
        setattr(module, self.tensor_name, orig[...])


# ------------------------------------------------------------------ fused and functional ops


FOREACH_MUL = callable(getattr(torch, "_foreach_mul_", None))


def mul_in_place(tensors: Sequence[Tensor], factors: Sequence[Tensor]) -> None:
    """``t *= f`` for each pair: one fused ``torch._foreach_mul_`` call, else a loop of ``mul_``."""
    if FOREACH_MUL:
        torch._foreach_mul_(list(tensors), list(factors))
        return
    for t, f in zip(tensors, factors, strict=True):
        t.mul_(f)


CONV_FORWARD = all(callable(getattr(c, "_conv_forward", None))
                   for c in (nn.Conv1d, nn.Conv2d, nn.Conv3d))
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def conv_forward(conv: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``conv``'s convolution of ``x`` with another weight and bias, its padding mode included.

    Fast path: the layer's own ``_conv_forward``. Fallback: ``F.conv<n>d`` with the layer's
    settings (zero padding only; other padding modes pad first, as torch does).
    """
    if CONV_FORWARD:
        return conv._conv_forward(x, weight, bias)
    dims = x.dim() - 2
    padding: Any = conv.padding
    if conv.padding_mode != "zeros":
        pad = [p for p in reversed(conv.padding) for _ in range(2)]
        x = F.pad(x, pad, mode=conv.padding_mode)
        padding = 0
    return _CONV_FN[dims](x, weight, bias, conv.stride, padding, conv.dilation, conv.groups)


# ------------------------------------------------------------------ tensor constructors


def _device_constructors_listed() -> bool:
    """``torch.utils._device._device_constructors()`` (what ``with torch.device(...)``
    redirects) lists torch's tensor factory functions."""
    try:
        from torch.utils._device import _device_constructors

        found = _device_constructors()
        return all(f in found for f in (torch.empty, torch.zeros, torch.full, torch.tensor))
    except Exception:
        return False


DEVICE_CONSTRUCTORS = _device_constructors_listed()
_PUBLIC_CONSTRUCTORS = frozenset({
    torch.empty, torch.empty_strided, torch.zeros, torch.ones, torch.full, torch.rand,
    torch.randn, torch.randint, torch.randperm, torch.arange, torch.linspace, torch.logspace,
    torch.eye, torch.tensor, torch.as_tensor, torch.scalar_tensor})


def tensor_factories() -> frozenset:
    """The torch functions that create a tensor from sizes or data, each taking ``device=``:
    torch's own list, else the public ones above (all that ``nn`` layers call)."""
    if DEVICE_CONSTRUCTORS:
        from torch.utils._device import _device_constructors

        return frozenset(_device_constructors())
    return _PUBLIC_CONSTRUCTORS
