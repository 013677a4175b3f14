"""Static int8 quantisation of a network with torchao's PT2E flow and ExecuTorch's XNNPACK quantizer.

Why these libraries: PT2E (``torch.export`` → ``prepare_pt2e`` → calibrate → ``convert_pt2e``) is
PyTorch's maintained quantisation flow, and the XNNPACK quantizer is the one whose int8 patterns
ExecuTorch's XNNPACK delegate runs as integer kernels, so the model measured here is the model
that ships in an ``executorch-int8`` file. The quantizer is the symmetric one: int8 weights with
zero point 0 (per output channel by default) and int8 activations per tensor, calibrated on
training batches. A weight that is zero stays exactly zero (0 / scale = 0): pruning survives.

Nothing prunelab writes here is a quantiser of its own: torchao observes, rounds and folds.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from prunelab.errors import CheckpointError, ConfigError
from prunelab.io import atomic_write

#: the optional extra that brings torchao and ExecuTorch (its XNNPACK quantizer and runtime)
EXTRA = "executorch"
INSTALL = f"pip install 'prunelab[{EXTRA}]'"
_NEEDS = ("torchao", "executorch")


def missing_packages() -> list[str]:
    """The packages of the extra that are not installed (found without importing them: an
    ExecuTorch import takes seconds)."""
    return [name for name in _NEEDS if importlib.util.find_spec(name) is None]


def require(what: str) -> None:
    """One line naming the extra to install when ``what`` cannot run without it."""
    missing = missing_packages()
    if missing:
        raise ConfigError(f"{what} needs {' and '.join(missing)} (int8 quantisation with "
                          f"torchao and ExecuTorch's XNNPACK quantizer): {INSTALL}")


def import_extra(what: str) -> None:
    """Import torchao's PT2E flow and ExecuTorch's quantizer once (:func:`require` first).

    torchao's import logs a warning through torch's pytree logger about one of its enums, a
    note for torchao's developers that would otherwise open every quantised run's output.
    """
    require(what)
    import_quietly("torchao.quantization.pt2e.quantize_pt2e",
                   "executorch.backends.xnnpack.quantizer.xnnpack_quantizer")


def import_quietly(*modules: str) -> None:
    """Import ``modules`` without the torch pytree logger's note that torchao's import sets off."""
    quiet = logging.getLogger("torch.utils._pytree")
    level = quiet.level
    quiet.setLevel(max(level, logging.ERROR))
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        quiet.setLevel(level)


# ------------------------------------------------------------------------------ capture


def dynamic_shapes(example: Tensor, max_batch: int | None = None) -> tuple[dict[int, Any]]:
    """The dims that vary at run time: the batch, and for token ids (padded per batch) the length."""
    batch = torch.export.Dim("batch", min=1, max=max_batch) if max_batch else \
        torch.export.Dim("batch", min=1)
    dims: dict[int, Any] = {0: batch}
    if not example.is_floating_point() and example.dim() == 2:
        dims[1] = torch.export.Dim("length", min=1)
    return (dims,)


def trace_example(example: Tensor, batch: int = 2) -> Tensor:
    """``example`` repeated to ``batch`` samples (export specialises a dim of size 1), contiguous."""
    reps = -(-batch // example.shape[0])
    x = torch.cat([example] * reps)[:batch] if reps > 1 else example[:batch]
    if not x.is_floating_point() and x.dim() == 2 and x.shape[1] < 2:
        x = torch.cat([x, x], dim=1)
    return x.contiguous()


def plain_copy(net: nn.Module) -> nn.Module:
    """A CPU copy of ``net`` in the default memory format (a run may train channels_last)."""
    out = copy.deepcopy(net).cpu()
    for p in out.parameters():
        p.data = p.data.contiguous()
    for b in out.buffers():
        b.data = b.data.contiguous()
    return out


def capture(net: nn.Module, example: Tensor, train: bool = False) -> torch.fx.GraphModule:
    """``net`` as the graph PT2E quantises (``torch.export``, dynamic batch); one line when the
    network cannot be exported (a model of your own with Python-side control flow)."""
    net.train(train)
    x = trace_example(example)
    try:
        return torch.export.export(net, (x,), dynamic_shapes=dynamic_shapes(x)).module()
    except Exception as err:  # torch's export errors are pages long: the first line says it
        raise ConfigError(f"{type(net).__name__} cannot be captured by torch.export for int8 "
                          f"quantisation ({type(err).__name__}: {first_line(err)})") from None


def xnnpack_quantizer(per_channel: bool = True, qat: bool = False, dynamic: bool = False) -> Any:
    """The symmetric int8 XNNPACK quantizer: static activations (ranges observed in calibration),
    or ``dynamic`` ones (each input row's range measured when it runs; linear layers only)."""
    # lazy: the optional extra (torchao + ExecuTorch), imported only when quantising
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    config = get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=qat,
                                               is_dynamic=dynamic)
    return XNNPACKQuantizer().set_global(config)


@torch.no_grad()
def quantize_int8(model: nn.Module, example_input: Tensor,
                  calibration_batches: Iterable[Tensor], *, per_channel: bool = True,
                  dynamic: bool = False) -> torch.fx.GraphModule:
    """Post-training int8 quantisation: ``model`` captured, observed on ``calibration_batches``
    (inputs only) and converted; ``model`` itself is not changed. ``dynamic``: activations are
    quantised per input row when the model runs instead of on calibrated ranges.

    The result is a graph module whose weights are int8 tensors with their scales (zero point
    0) and whose activations pass through quantize/dequantize pairs: run in PyTorch it computes
    what the integer kernels compute, up to rounding; lowered to ExecuTorch it runs them.
    """
    import_extra("int8 quantisation")
    # lazy: the optional extra
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    net = plain_copy(model).eval()
    prepared = prepare_pt2e(capture(net, example_input), xnnpack_quantizer(per_channel,
                                                                           dynamic=dynamic))
    seen = 0
    for x in calibration_batches:
        prepared(x.contiguous())
        seen += 1
    if not seen:
        raise ConfigError("int8 quantisation needs at least one calibration batch (the data "
                          "module's training loader gave none)")
    return convert_pt2e(prepared)


# ------------------------------------------------------------------------------ inspect


_DEQUANTIZE = ("dequantize_per_channel", "dequantize_per_tensor")


def int8_weights(model: torch.fx.GraphModule) -> dict[str, tuple[Tensor, Tensor]]:
    """``{"<module path>.weight": (int8 values, dequantised values)}`` of a converted model's
    quantised weights, named by the module that uses them (for the checks that pruned weights
    are exactly zero in the integer model)."""
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for node in model.graph.nodes:
        if node.op != "call_function" or not any(d in str(node.target) for d in _DEQUANTIZE):
            continue
        source = node.args[0]
        if getattr(source, "op", None) != "get_attr":
            continue  # an activation's pair
        values = _attr(model, source.target)
        if values.dtype != torch.int8:
            continue
        args = [_attr(model, a.target) if getattr(a, "op", None) == "get_attr" else a
                for a in node.args]
        dequantised = node.target(*args, **node.kwargs)
        for user in node.users:
            stack = list(user.meta.get("nn_module_stack", {}).values())
            if stack:
                out[f"{stack[-1][0]}.weight"] = (values, dequantised)
    return out


def _attr(model: nn.Module, name: str) -> Tensor:
    obj: Any = model
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


# ------------------------------------------------------------------------------ save / load


def export_program(model: nn.Module, example: Tensor, max_batch: int | None = None) -> Any:
    """``model`` (a converted graph module, or any network) as a ``torch.export`` program with a
    dynamic batch (and length for token ids); ``max_batch`` bounds the batch."""
    x = trace_example(example, max_batch or 2)
    try:
        return torch.export.export(model, (x,), dynamic_shapes=dynamic_shapes(x, max_batch))
    except Exception as err:
        raise ConfigError(f"{type(model).__name__} cannot be exported by torch.export "
                          f"({type(err).__name__}: {first_line(err)})") from None


def save_program(model: nn.Module, path: str | Path, example: Tensor) -> Path:
    """Write ``model`` as a ``.pt2`` program (atomically): it loads with
    ``torch.export.load(path).module()`` wherever torchao is installed (its quantize/dequantize
    operators), without prunelab."""
    program = export_program(model, example)
    buffer = io.BytesIO()  # torch.export.save wants a path ending in .pt2 or a buffer
    torch.export.save(program, buffer)
    atomic_write(path, buffer.getvalue())
    return Path(path)


def load_program(path: str | Path) -> Any:
    """A ``.pt2`` program written by :func:`save_program`; a damaged or foreign file is one line."""
    import_extra(f"loading {Path(path).name}")  # its quantize/dequantize operators
    return read_program(path, "damaged, or not written by prunelab", "run the quantisation again")


def read_program(path: str | Path, what: str, remedy: str) -> Any:
    """``torch.export.load`` of ``path``, quietly (torch logs the traceback of what it raises);
    a file it cannot read is one line: ``what`` may be wrong with it, ``remedy`` what to do."""
    quiet = logging.getLogger("torch.export")
    level = quiet.level
    quiet.setLevel(max(level, logging.CRITICAL))
    try:
        return torch.export.load(io.BytesIO(Path(path).read_bytes()))
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable torch.export program ({what}: "
                              f"{type(err).__name__}: {first_line(err)}); {remedy}") from None
    finally:
        quiet.setLevel(level)


def first_line(err: BaseException) -> str:
    """An exception's first line (at most 200 characters), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
