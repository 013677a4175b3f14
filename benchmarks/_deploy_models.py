"""The networks and runtimes that ``deploy_speed.py`` times, built with the public tools directly.

* :func:`lenet_pair`: the dense LeNet and the compacted network of the
  ``lenet5_structured_160k`` record -- the same random weights, ``ln_structured``-style masks
  that keep the L2-largest ``units`` filters/neurons of conv1, conv2 and fc1, removed by
  prunelab's compaction (Torch-Pruning), which is what ``prunelab compact`` runs. Latency
  depends on the shapes only, so random weights stand in for trained ones.
* ExecuTorch: :func:`executorch_program` lowers a module to the XNNPACK delegate;
  :func:`int8_pt2e` quantises it first (torchao's ``prepare_pt2e``/``convert_pt2e`` with the
  XNNPACK quantizer: int8 activations, per-channel symmetric int8 weights).
* ONNX Runtime: :func:`onnx_file` exports, :func:`onnx_int8` quantises with ORT's own static
  quantiser (QDQ, per-channel int8 weights, uint8 activations: ORT's x86 default), and
  :func:`ort_session` opens a CPU session.

Each program is exported for one fixed batch size (static shapes), as a deployment would.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from prunelab.models import LeNet
from prunelab.pruning.compaction import CompactReport, clone_module, compact_with_report

PRUNED = ("conv1", "conv2", "fc1")  # the layers the record preset prunes (fc2 is the classifier)


def parse_units(text: str) -> tuple[int, int, int]:
    """``"3-16-132"`` -> (3, 16, 132): units kept in conv1, conv2, fc1."""
    parts = str(text).split("-")
    dense = (20, 50, 500)
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        units = tuple(int(p) for p in parts)
        if all(1 <= u <= d for u, d in zip(units, dense, strict=True)):
            return units  # type: ignore[return-value]
    raise SystemExit(f"--units: {text!r} is not conv1-conv2-fc1 units kept, each 1..20-50-500 "
                     "(e.g. --units 3-16-132)")


def lenet_pair(units: tuple[int, int, int], seed: int = 0
               ) -> tuple[nn.Module, nn.Module, CompactReport]:
    """(dense LeNet, its compacted copy keeping ``units`` of conv1/conv2/fc1, the report)."""
    torch.manual_seed(seed)
    dense = LeNet().eval()
    masked = clone_module(dense)
    for name, keep in zip(PRUNED, units, strict=True):
        module = masked.get_submodule(name)
        norms = module.weight.detach().flatten(1).norm(dim=1)
        mask = torch.zeros_like(module.weight)
        mask[norms.topk(keep).indices] = 1.0
        prune.custom_from_mask(module, "weight", mask)
    small, report = compact_with_report(masked, torch.randn(1, 1, 28, 28))
    want = {n: (d, u) for n, d, u in zip(PRUNED, (20, 50, 500), units, strict=True) if u < d}
    if report.layers != want or report.kept:
        raise SystemExit(f"compaction gave {report.layers} (kept {report.kept}), expected {want}")
    return dense, small.eval(), report


def int8_pt2e(model: nn.Module, example: Tensor, calibration: Tensor) -> nn.Module:
    """``model`` quantised for XNNPACK: static int8, per-channel weights, observed on
    ``calibration`` (fed in chunks of ``example``'s batch size)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = torch.export.export(clone_module(model).eval(), (example,)).module()
    graph = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for chunk in calibration.split(example.shape[0]):
            if chunk.shape[0] == example.shape[0]:
                graph(chunk)
    return convert_pt2e(graph)


def executorch_program(model: nn.Module, example: Tensor) -> bytes:
    """The ``.pte`` bytes of ``model`` for ``example``'s shape, lowered to the XNNPACK delegate."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = torch.export.export(model, (example,))
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    return edge.to_executorch().buffer


def onnx_file(model: nn.Module, example: Tensor, path: Path) -> Path:
    """``model`` exported to ONNX at ``path`` for ``example``'s shape."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(clone_module(model).eval(), (example,), str(path), input_names=["input"],
                          output_names=["logits"], dynamo=False)
    return path


def onnx_int8(source: Path, path: Path, calibration: Tensor, batch: int) -> Path:
    """``source`` statically quantised by ONNX Runtime (QDQ, per-channel), written to ``path``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.chunks = iter([{"input": c.numpy()} for c in calibration.split(batch)
                                if c.shape[0] == batch])

        def get_next(self) -> dict | None:
            return next(self.chunks, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process (shape inference) is moot here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(str(source), str(path), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return path


def ort_session(path: Path, threads: int, profile_prefix: str | None = None):
    """An ONNX Runtime CPU session: all graph optimisations, ``threads`` intra-op threads that
    do not spin-wait after a call (else one session's pool would take the cores from the
    session timed right after it)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
