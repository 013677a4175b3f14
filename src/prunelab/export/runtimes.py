"""Running a deployable file in its own runtime: ONNX Runtime for ``.onnx``, ExecuTorch's Python
runtime for ``.pte``; nothing of prunelab or PyTorch's eager model is involved in the run.

:func:`open_file` loads a file and returns a callable from a batch of inputs to logits (torch
tensors in and out, so :func:`prunelab.evaluate.evaluate` measures it like a network). A file
that does not load (truncated, damaged, another kind of file) is one :class:`CheckpointError`
line naming it. :func:`compare` measures a file against the PyTorch model it came from.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from prunelab.errors import CheckpointError, PrunelabError
from prunelab.messages import get_logger
from prunelab.quantize.pt2e import INSTALL as EXECUTORCH_INSTALL
from prunelab.quantize.pt2e import first_line, import_quietly, missing_packages

log = get_logger(__name__)

ONNX_INSTALL = "pip install 'prunelab[onnxruntime]'"
PTE_IDENTIFIER = b"ET12"  # a .pte (flatbuffer) names its schema at bytes 4-8
SUFFIXES = (".onnx", ".pte")

Runner = Callable[[Tensor], Tensor]


def require_onnxruntime(what: str) -> None:
    """One line naming the extra when onnx or onnxruntime is missing."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise PrunelabError(f"{what} needs {' and '.join(missing)}: {ONNX_INSTALL}")


def require_executorch(what: str) -> None:
    """One line naming the extra when ExecuTorch (or torchao) is missing."""
    missing = missing_packages()
    if missing:
        raise PrunelabError(f"{what} needs {' and '.join(missing)}: {EXECUTORCH_INSTALL}")


def _onnx_session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session on ``path``; with ``threads``, that many intra-op threads
    which do not spin-wait after a call (a spinning pool would take the cores from the session
    timed next to it)."""
    require_onnxruntime(f"running {path.name}")
    import onnxruntime as ort  # lazy: optional extra

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise _not_loadable(path, "ONNX Runtime", err) from None


def open_onnx(path: Path) -> Runner:
    """An ONNX Runtime session (CPU) on ``path`` as a runner."""
    session = _onnx_session(path)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise CheckpointError(f"{path} takes {len(inputs)} inputs; prunelab's models take one")
    name, kind = inputs[0].name, inputs[0].type

    def run(x: Tensor) -> Tensor:
        array = x.detach().cpu().contiguous().numpy()
        if "int64" in kind:
            array = array.astype("int64")
        return torch.from_numpy(session.run(None, {name: array})[0])

    return run


def open_pte(path: Path) -> Runner:
    """ExecuTorch's runtime on ``path`` as a runner; a batch larger than the program's memory
    was planned for (its input's upper bound) is run in parts."""
    require_executorch(f"running {path.name}")
    head = path.read_bytes()[:8] if path.is_file() else b""
    if head[4:8] != PTE_IDENTIFIER:
        raise CheckpointError(f"{path} is not an ExecuTorch program (no {PTE_IDENTIFIER.decode()} "
                              "identifier); write one with: prunelab export <run dir> "
                              "--format executorch")
    method = _pte_method(path)
    meta = method.metadata
    dtype = _pte_input_dtype(meta)
    max_batch = int(meta.input_tensor_meta(0).sizes()[0]) if meta.num_inputs() == 1 else 0
    if max_batch < 1:
        raise CheckpointError(f"{path} takes {meta.num_inputs()} inputs; prunelab's models "
                              "take one batch")

    def run(x: Tensor) -> Tensor:
        x = x.detach().cpu().contiguous()
        if dtype is not None and x.dtype != dtype:
            x = x.to(dtype)
        step, parts = max_batch, []
        for i in range(0, x.shape[0], step):
            with _runtime_log() as buffer:
                try:
                    parts.append(method.execute([x[i:i + step].contiguous()])[0])
                except Exception as err:  # a damaged delegate payload fails here, not at load
                    raise CheckpointError(
                        f"{path} failed to run in ExecuTorch on inputs of shape "
                        f"{list(x[i:i + step].shape)} ({_reason(buffer, err)}): damaged, or "
                        "written for other inputs") from None
        return torch.cat(parts)

    return run


@contextlib.contextmanager
def _runtime_log() -> Iterator[io.StringIO]:
    """ExecuTorch's C++ log lines (CPU probing, and why a program failed), kept out of the
    output: a failure names its reason in its one line instead."""
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield buffer
    for line in buffer.getvalue().splitlines():
        log.debug("executorch: %s", line)


def _reason(buffer: io.StringIO, err: BaseException) -> str:
    """The runtime's own first error line (``[program.cpp:114] File size is too small...``)
    without its source position, else the exception's."""
    lines = [ln for ln in buffer.getvalue().splitlines() if ln.strip()
             and "cpuinfo" not in ln]
    if lines:
        return lines[0].split("] ", 1)[-1][:200]
    return f"{type(err).__name__}: {first_line(err)}"


def _pte_method(path: Path) -> Any:
    import_quietly("executorch.runtime")
    from executorch.runtime import Runtime  # lazy: optional extra, seconds to import

    with _runtime_log() as buffer:
        try:
            program = Runtime.get().load_program(path)
            method = program.load_method("forward")
        except Exception as err:
            raise CheckpointError(f"{path} does not load in ExecuTorch (damaged, truncated or "
                                  f"not a model file: {_reason(buffer, err)}); export it "
                                  "again") from None
    method._keep_program = program  # a method must not outlive its program's memory
    return method


def _pte_input_dtype(meta: Any) -> torch.dtype | None:
    try:
        return {4: torch.int64, 6: torch.float32}.get(int(meta.input_tensor_meta(0).dtype()))
    except Exception:
        return None


def open_file(path: str | Path) -> Runner:
    """The runner for a deployable file, by its suffix (``.onnx`` or ``.pte``)."""
    path = Path(path)
    if not path.is_file():
        raise PrunelabError(f"{path} does not exist")
    if path.suffix == ".onnx":
        return open_onnx(path)
    if path.suffix == ".pte":
        return open_pte(path)
    raise PrunelabError(f"{path}: not a deployable file prunelab runs (valid: "
                        f"{', '.join(SUFFIXES)})")


@torch.no_grad()
def compare(runner: Runner, reference: Callable[[Tensor], Tensor], batches: Iterable[Any],
            binary: bool) -> dict[str, Any]:
    """The file's accuracy on ``batches`` of (inputs, labels), the PyTorch reference's, the
    fraction of samples on which the two predict the same class, and their largest logit
    difference."""
    right = ref_right = same = total = 0
    diff = 0.0
    for x, y in batches:
        got, want = runner(x).float(), reference(x).float()
        if binary:
            got, want = got.reshape(-1), want.reshape(-1)
        pred, ref = ((got > 0).long(), (want > 0).long()) if binary else \
            (got.argmax(-1), want.argmax(-1))
        y = y.long()
        right += int((pred == y).sum())
        ref_right += int((ref == y).sum())
        same += int((pred == ref).sum())
        total += int(y.shape[0])
        diff = max(diff, float((got - want).abs().max())) if got.numel() else diff
    n = max(total, 1)
    return {"test_acc": right / n, "test_error": 1 - right / n, "test_samples": total,
            "source_test_acc": ref_right / n, "agreement": same / n, "max_abs_diff": diff}


def set_pte_threads(threads: int) -> int:
    """Size ExecuTorch's XNNPACK thread pool (one per process) to ``threads``; the count it
    reports. The pool is resized through the Python bindings' ``_unsafe_reset_threadpool``, the
    only handle they give (unsafe only while a method runs); without it the pool keeps its
    size, which is then what the count says."""
    import_quietly("executorch.runtime")
    from executorch.extension.pybindings import portable_lib  # lazy: optional extra

    count = getattr(portable_lib, "_threadpool_get_thread_count", None)
    reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
    if reset is not None and count is not None and count() != threads:
        reset(threads)
    return int(count()) if count is not None else threads


def timed_call(path: Path, x: Tensor, threads: int) -> Callable[[], object]:
    """A call without arguments that runs the batch ``x`` through the file in its runtime, on
    ``threads`` threads: the input is prepared once, so a timed call is the runtime's work and
    its Python binding only."""
    x = x.detach().cpu().contiguous()
    if path.suffix == ".onnx":
        session = _onnx_session(path, threads)
        inp = session.get_inputs()[0]
        feed = {inp.name: x.numpy().astype("int64") if "int64" in inp.type else x.numpy()}
        return lambda: session.run(None, feed)
    require_executorch(f"timing {path.name}")
    set_pte_threads(threads)
    method = _pte_method(path)
    dtype = _pte_input_dtype(method.metadata)
    args = [x.to(dtype) if dtype is not None else x]
    return lambda: method.execute(args)


def runtime_versions(path: Path) -> dict[str, str]:
    """The runtime that ran the file, and its version."""
    from importlib.metadata import version

    name = "onnxruntime" if path.suffix == ".onnx" else "executorch"
    return {name: version(name)}


def describe_file(path: str | Path) -> dict[str, Any]:
    """A deployable file's summary: it loads and runs in its runtime (on zeros of its input
    shape when it declares one), and what it takes."""
    path = Path(path)
    runner = open_file(path)
    out: dict[str, Any] = {"file": str(path), "bytes": path.stat().st_size,
                           "runtime": "onnxruntime" if path.suffix == ".onnx" else "executorch"}
    if path.suffix == ".onnx":
        import onnxruntime as ort  # lazy: optional extra

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out["inputs"] = [{"name": i.name, "shape": i.shape, "type": i.type}
                         for i in session.get_inputs()]
        out["outputs"] = [{"name": o.name, "shape": o.shape, "type": o.type}
                          for o in session.get_outputs()]
        out["quantized"] = any(n.op_type == "QuantizeLinear" for n in _onnx_nodes(path))
    else:
        meta = _pte_method(path).metadata
        shape = list(meta.input_tensor_meta(0).sizes())
        out["inputs"] = [{"shape_upper_bound": shape}]
        out["check"] = list(runner(torch.zeros(1, *shape[1:], dtype=_pte_input_dtype(meta)
                                               or torch.float32)).shape)
    return out


def _onnx_nodes(path: Path) -> list[Any]:
    import onnx  # lazy: optional extra

    return list(onnx.load(str(path)).graph.node)


def _not_loadable(path: Path, runtime: str, err: BaseException) -> CheckpointError:
    return CheckpointError(f"{path} does not load in {runtime} (damaged, truncated or not a "
                           f"model file: {type(err).__name__}: {first_line(err)}); export it "
                           "again")
