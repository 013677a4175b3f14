"""Deployable files of a network: ONNX (fp32, and int8 QDQ by ONNX Runtime's quantisation) and
ExecuTorch programs with the XNNPACK delegate (fp32, and int8 from torchao's PT2E flow).

One writer per format (:data:`BASE_FORMATS`), each a function of the run's fp32 network, one
input sample and the training inputs to calibrate on; every file is written atomically and then
checked by :mod:`prunelab.export.runtimes` in its own runtime (``prunelab.export.runs``). Each
format has a ``-compact`` twin (``onnx-compact`` ...): the same writer on the run's compacted
network (``compact_model.pt2`` of a structured-pruned run, :func:`compacted_network`).
Each file runs without prunelab: ``onnxruntime`` alone for ``.onnx``, ExecuTorch's runtime
(or its C++ library on a device) for ``.pte``.
"""

from __future__ import annotations

import io
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from prunelab.errors import PrunelabError
from prunelab.export.runtimes import require_executorch, require_onnxruntime
from prunelab.io import atomic_write
from prunelab.quantize import pt2e

ONNX, ONNX_INT8, EXECUTORCH, EXECUTORCH_INT8 = "onnx", "onnx-int8", "executorch", "executorch-int8"
#: the writers' formats, of the run's network as trained (masks folded)
BASE_FORMATS = (ONNX, ONNX_INT8, EXECUTORCH, EXECUTORCH_INT8)
COMPACT = "-compact"  # a format's suffix for the run's compacted network (compact_model.pt2)
#: the deployable formats, in the order they are written and listed
FORMATS = (*BASE_FORMATS, *(f + COMPACT for f in BASE_FORMATS))
#: the fp32 format of each runtime: the file of the run's network is the dense baseline of every
#: latency measured in that runtime
FP32 = {"onnxruntime": ONNX, "executorch": EXECUTORCH}
#: the largest batch an ExecuTorch program takes: its memory is planned for this many samples
#: (any batch from 1 up runs; a larger one is run in parts by prunelab's checks)
MAX_BATCH = 256
#: training batches that calibrate the activation ranges of an int8 file quantised at export
CALIBRATION_BATCHES = 32
OPSET = 17


@dataclass
class Source:
    """What the writers take: the run's fp32 network, one input sample, the training inputs to
    calibrate int8 activation ranges on (a callable: read only when a format needs them), and
    the run's own int8 model (``quantized_model.pt2`` of ``quantize=ptq|qat``) if it has one.
    ``dynamic``: the run quantised activations per row as they run
    (``quantize.activations=dynamic``), and the int8 files made here do the same."""

    net: nn.Module
    example: Tensor
    calibration: Callable[[], Iterable[Tensor]]
    int8_program: Path | None = None
    dynamic: bool = False


@dataclass
class Written:
    """A written file, the PyTorch model its outputs are compared with, and how it was made."""

    reference: Callable[[Tensor], Tensor]
    record: dict[str, Any]


def base_format(fmt: str) -> str:
    """The writer's format of ``fmt`` (``onnx-int8-compact`` → ``onnx-int8``)."""
    return fmt.removesuffix(COMPACT)


def is_compact(fmt: str) -> bool:
    return fmt.endswith(COMPACT) and base_format(fmt) in BASE_FORMATS


def runtime_of(fmt: str) -> str:
    """The runtime that runs ``fmt``'s file: ``onnxruntime`` or ``executorch``."""
    return "onnxruntime" if base_format(fmt) in (ONNX, ONNX_INT8) else "executorch"


def require(fmt: str) -> None:
    """One line naming the extra a format needs, before anything is written."""
    if fmt not in FORMATS:
        raise PrunelabError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if runtime_of(fmt) == "onnxruntime":
        require_onnxruntime(f"--format {fmt}")
    else:
        require_executorch(f"--format {fmt}")


def write(fmt: str, source: Source, path: Path) -> Written:
    """Write ``source`` in format ``fmt`` (or its writer's, for a ``-compact`` name) to ``path``."""
    require(fmt)
    return {ONNX: write_onnx, ONNX_INT8: write_onnx_int8, EXECUTORCH: write_executorch,
            EXECUTORCH_INT8: write_executorch_int8}[base_format(fmt)](source, path)


def compacted_network(path: Path) -> nn.Module:
    """The compacted network saved as ``compact_model.pt2`` (a ``torch.export`` program of an
    eval-mode network), as a module the writers take. ``torch.export``'s module refuses
    ``train()``/``eval()``; its graph was captured in eval mode and ignores the flags, so the
    ordinary methods are given back. A damaged file is one line."""
    module = pt2e.read_program(path, "damaged",
                               "make it again with: prunelab compact <run dir>").module()
    for name in ("train", "eval"):
        module.__dict__.pop(name, None)
    return module.eval()


# ------------------------------------------------------------------------------ ONNX


def onnx_bytes(net: nn.Module, example: Tensor) -> bytes:
    """``net`` as an ONNX model (batch dimension dynamic, and length for token ids), checked by
    ``onnx.checker``. torch's TorchScript-based exporter: it needs nothing but ``onnx``."""
    import onnx  # lazy: optional extra

    try:
        with warnings.catch_warnings():  # the tracer's notes on Python-side branches
            warnings.simplefilter("ignore")
            axes = {0: "batch"} if example.is_floating_point() else {0: "batch", 1: "length"}
            buffer = io.BytesIO()
            torch.onnx.export(net.eval(), (example,), buffer, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": axes},
                              opset_version=OPSET, dynamo=False)
        onnx.checker.check_model(buffer.getvalue())
    except Exception as err:  # the exporter's errors are pages long: the first line says it
        raise PrunelabError(f"{type(net).__name__} cannot be exported to ONNX "
                            f"({type(err).__name__}: {pt2e.first_line(err)})") from None
    return buffer.getvalue()


def write_onnx(source: Source, path: Path) -> Written:
    atomic_write(path, onnx_bytes(source.net, source.example))
    return Written(source.net, {"exporter": f"torch.onnx (TorchScript), opset {OPSET}"})


class _Calibration:
    """ONNX Runtime's ``CalibrationDataReader`` over training inputs."""

    def __init__(self, batches: Iterable[Tensor], name: str) -> None:
        self.batches, self.name, self.seen = iter(batches), name, 0

    def get_next(self) -> dict[str, Any] | None:
        x = next(self.batches, None)
        if x is None:
            return None
        self.seen += 1
        return {self.name: x.detach().cpu().contiguous().numpy()}


def write_onnx_int8(source: Source, path: Path) -> Written:
    """ONNX Runtime's quantisation of the fp32 ONNX model: int8 weights per output channel
    (symmetric: a zero weight stays exactly zero) and int8 activations, either static (QDQ
    format, ranges calibrated min-max on training batches) or, for a run that quantised its
    activations dynamically, ``quantize_dynamic`` (each row's range measured as it runs)."""
    from onnxruntime.quantization import (  # lazy: optional extra
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    reader = type("Reader", (_Calibration, CalibrationDataReader), {})(
        _first(source.calibration(), CALIBRATION_BATCHES), "input")
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        atomic_write(fp32, onnx_bytes(source.net, source.example))
        root = logging.getLogger()
        level = root.level  # quantize_static logs a pre-processing tip on the root logger
        root.setLevel(max(level, logging.ERROR))
        try:
            if source.dynamic:
                quantize_dynamic(str(fp32), str(int8), per_channel=True,
                                 weight_type=QuantType.QInt8)
            else:
                quantize_static(str(fp32), str(int8), reader, quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QInt8,
                                weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax)
        finally:
            root.setLevel(level)
        data = int8.read_bytes()
    atomic_write(path, data)
    how = ("onnxruntime.quantization.quantize_dynamic (int8 weights per channel, int8 "
           "activations on each row's range as it runs)" if source.dynamic else
           "onnxruntime.quantization.quantize_static (QDQ, int8 weights per channel, int8 "
           "activations, min-max calibration)")
    return Written(source.net, {"quantized_by": how, "calibration_batches": reader.seen,
                                "zeros_exact": onnx_zeros_exact(path, source.net)})


def onnx_zeros_exact(path: Path, net: nn.Module) -> bool:
    """Whether every weight that is zero in ``net`` is zero in the quantised ONNX file (its int8
    initializer dequantised with its scale and zero point)."""
    import onnx  # lazy: optional extra
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    checked = 0
    for name, weight in net.state_dict().items():
        q = inits.get(f"{name}_quantized")
        if q is None or weight.dim() < 2 or not bool((weight == 0).any()):
            continue
        scale, zero = inits[f"{name}_scale"], inits[f"{name}_zero_point"]
        shape = [-1] + [1] * (q.ndim - 1)
        values = (q.astype("float32") - zero.reshape(shape)) * scale.reshape(shape)
        if values.shape != tuple(weight.shape) or (values[weight.numpy() == 0] != 0).any():
            return False
        checked += 1
    return checked > 0 or not any(bool((w == 0).any()) for w in net.state_dict().values())


# ------------------------------------------------------------------------------ ExecuTorch


def pte_bytes(model: nn.Module, example: Tensor) -> bytes:
    """``model`` (fp32 network or PT2E int8 graph) lowered to an ExecuTorch program with the
    XNNPACK delegate: batches of 1 to :data:`MAX_BATCH` (and, for token ids, any length up to
    ``example``'s)."""
    pt2e.import_quietly("executorch.exir", "executorch.backends.xnnpack.partition.xnnpack_partitioner")
    # lazy: optional extra
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    # traced at the largest batch: ExecuTorch plans memory for a dynamic dim's upper bound, and
    # torch's fake convolution narrows the batch's range to the side of 16 its trace falls on
    program = pt2e.export_program(model, example, MAX_BATCH)
    try:
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        return edge.to_executorch().buffer
    except Exception as err:
        raise PrunelabError(f"{type(model).__name__} cannot be lowered to ExecuTorch "
                            f"({type(err).__name__}: {pt2e.first_line(err)})") from None


def write_executorch(source: Source, path: Path) -> Written:
    atomic_write(path, pte_bytes(pt2e.plain_copy(source.net).eval(), source.example))
    return Written(source.net, {"delegate": "XNNPACK", "max_batch": MAX_BATCH})


def int8_model(source: Source) -> tuple[nn.Module, dict[str, Any]]:
    """The run's own int8 model (``quantize=ptq|qat``), else post-training quantisation now."""
    if source.int8_program is not None and source.int8_program.exists():
        model = pt2e.load_program(source.int8_program).module()
        return model, {"quantized_by": f"the run (quantize stage, {source.int8_program.name})"}
    model = pt2e.quantize_int8(source.net, source.example,
                               _first(source.calibration(), CALIBRATION_BATCHES),
                               dynamic=source.dynamic)
    kind = "dynamic" if source.dynamic else "static"
    return model, {"quantized_by": f"prunelab export: torchao PT2E post-training {kind} int8 "
                                   "(XNNPACK quantizer, weights per channel)",
                   "calibration_batches": CALIBRATION_BATCHES}


def write_executorch_int8(source: Source, path: Path) -> Written:
    model, record = int8_model(source)
    record["zeros_exact"] = int8_zeros_exact(model, source.net)
    atomic_write(path, pte_bytes(model, source.example))
    return Written(model, {"delegate": "XNNPACK", "max_batch": MAX_BATCH, **record})


def int8_zeros_exact(model: nn.Module, net: nn.Module) -> bool | None:
    """Whether every weight that is zero in ``net`` is zero in the int8 model's integer weights
    (None when no quantised weight could be matched to one of ``net``'s)."""
    state = net.state_dict()
    pairs = [(state[name], dq) for name, (_, dq) in pt2e.int8_weights(model).items()
             if name in state and state[name].shape == dq.shape]
    if not pairs:
        return None
    return all(bool((dq[w == 0] == 0).all()) for w, dq in pairs)


def _first(items: Iterable[Tensor], n: int) -> Iterable[Tensor]:
    for i, x in enumerate(items):
        if i >= n:
            return
        yield x
