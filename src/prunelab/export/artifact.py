"""Save a network as one compressed artifact, and load it back as a plain ``nn.Module``.

The manifest records how to rebuild the network, once: ``architecture.class``, the dotted path
of its class (or of the function that built it, e.g. prunelab's torchvision builder), and
``architecture.kwargs``, its constructor arguments as plain JSON. Loading imports neither
Lightning nor Hydra and never unpickles. It checks every size the file declares before
allocating anything of that size (:mod:`prunelab.export.manifest`), decodes and checks the
tensors, and only then builds the network: prunelab's own (:data:`NETWORKS`) always, any other
only where the caller allows its module (``allow=``, $PRUNELAB_ALLOW_TARGETS: the same
allow-list as ``--allow-target``), and within a budget derived from the decoded tensors (every
tensor the constructor creates is sized first by a dry run on torch's meta device).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from prunelab.allowlist import how_to_allow, is_allowed
from prunelab.errors import CheckpointError, ConfigError, PrunelabError
from prunelab.export import codecs, container, manifest
from prunelab.internals import tensor_factories
from prunelab.io import atomic_write

TORCHVISION = "prunelab.models.vision.torchvision_net"
#: built by a load without being allowed: prunelab's own networks, by the path an artifact
#: names them by (model=torchvision: prunelab's builder, which takes torchvision's registered
#: classification architectures by name only, and never a weight set when loading)
NETWORKS = ("prunelab.models.cnn.LeNet", "prunelab.models.text.TextClassifier", TORCHVISION)
_SLACK = 16 << 20


def class_path(net: nn.Module) -> str:
    cls = type(net)
    return f"{cls.__module__}.{cls.__qualname__}"


def dense_bytes(state: dict[str, torch.Tensor]) -> int:
    """Bytes of the state dict's tensors stored densely (fp32 for a float32 network)."""
    return sum(t.numel() * t.element_size() for t in state.values())


def _resolve(path: str) -> Callable[..., Any]:
    """The class or function defined at a dotted ``module.name`` path (importing the module).

    Only under its own name: not something the module imported from elsewhere (a file
    remover, say), which an allowed prefix would otherwise reach.
    """
    module, _, attr = path.rpartition(".")
    obj = getattr(importlib.import_module(module), attr)
    own = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
    if not callable(obj) or own != path:
        raise TypeError(f"{path} is not a class or function defined there"
                        f"{f' (it is {own})' if callable(obj) else ''}")
    return obj


def _rebuild_kwargs(path: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    # the artifact holds the weights: the torchvision builder must not fetch a weight set
    return {**kwargs, "weights": None} if path == TORCHVISION else kwargs


def _plain(value: Any, key: str) -> None:
    """ConfigError unless ``value`` is plain JSON data (a nested ``_target_`` is an object a
    config would have built, which an artifact cannot rebuild)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or k == "_target_":
                raise ConfigError(f"constructor argument {key}: {value!r} is an object to build, "
                                  "not plain data; an artifact stores numbers, strings, "
                                  "booleans, lists and mappings only")
            _plain(v, f"{key}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _plain(v, f"{key}[{i}]")
    elif not isinstance(value, bool | int | float | str | type(None)):
        raise ConfigError(f"constructor argument {key}={value!r} is a {type(value).__name__}; "
                          "an artifact stores numbers, strings, booleans, lists and mappings only")


def _misfit(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """'' when ``state`` has exactly ``expected``'s names and shapes, else what differs."""
    problems = {
        "missing": [k for k in expected if k not in state],
        "unexpected": [k for k in state if k not in expected],
        "wrong shape": [k for k in expected
                        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)],
    }
    return "; ".join(f"{what} {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
                     for what, names in problems.items() if names)


class _TooLarge(Exception):
    pass


class _Budget(TorchFunctionMode):
    """Tensors created under this mode may take ``limit`` bytes in all: each tensor-creating
    call (``torch.empty``, ``zeros``, ``*_like``, ``Tensor.new_*`` ...) is first run on the
    meta device, which allocates nothing, and refused with :class:`_TooLarge` if its result
    would overdraw the budget."""

    _NEW = frozenset({"new_empty", "new_zeros", "new_ones", "new_full", "new_tensor"})

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.left = limit
        self.factories = {
            *tensor_factories(),
            torch.empty_like, torch.zeros_like, torch.ones_like, torch.full_like,
            torch.rand_like, torch.randn_like, torch.randint_like}

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in self.factories or getattr(func, "__name__", "") in self._NEW:
            try:
                probe = func(*args, **{**kwargs, "device": "meta"})
            except Exception:  # no dry run: the call itself decides (bad arguments raise there)
                probe = None
            if isinstance(probe, torch.Tensor):
                self.left -= probe.numel() * probe.element_size()
                if self.left < 0:
                    raise _TooLarge
        return func(*args, **kwargs)


def _construct(builder: Callable[..., Any], kwargs: dict[str, Any], limit: int) -> Any:
    """``builder(**kwargs)``, the tensors it creates limited to ``limit`` bytes in all
    (:class:`_TooLarge` beyond, before the call that would overdraw allocates)."""
    budget = _Budget(limit)
    with budget:
        net = builder(**kwargs)
    if budget.left < 0:  # a constructor that swallowed the refusal
        raise _TooLarge
    return net


def _budget_for(state: dict[str, torch.Tensor]) -> int:
    """What building the network of ``state`` may allocate: its tensors twice (a network's
    non-persistent buffers, its constructor's temporaries) and 16 MiB."""
    return 2 * dense_bytes(state) + _SLACK


def _first_line(err: BaseException) -> str:
    text = str(err).splitlines()[0][:160] if str(err) else ""
    return text if isinstance(err, PrunelabError) else f"{type(err).__name__}: {text}"


def encode(net: nn.Module, encoding: str, kwargs: dict[str, Any] | None = None,
           metadata: dict[str, Any] | None = None, builder: str | None = None) -> bytes:
    """The artifact's bytes for ``net`` (masks must already be folded into the weights).

    ``kwargs`` are the network's constructor arguments (plain JSON data); ``metadata`` is any
    JSON-serialisable record kept in the manifest (source run, accuracy ...); ``builder`` names
    the function that built ``net`` when that is not its class (:data:`TORCHVISION`). Any
    network whose class (or builder) can be imported by its path and rebuilt from ``kwargs``
    can be stored; this is checked here, by rebuilding it.
    """
    codecs.check_encoding(encoding)
    path = builder or class_path(net)
    kwargs = dict(kwargs or {})
    _plain(kwargs, "kwargs")
    try:
        builder_fn = _resolve(path)
    except Exception as err:
        raise ConfigError(f"cannot export a {path}: it cannot be imported by that path "
                          f"({_first_line(err)}); a network must be a class (or be built by a "
                          "function) defined at the top of an importable module") from None
    state = net.state_dict()
    try:
        rebuilt = _construct(builder_fn, _rebuild_kwargs(path, kwargs), _budget_for(state))
    except _TooLarge:
        rebuilt = None
    except Exception as err:
        raise ConfigError(f"cannot export a {path}: {path}(**{kwargs}) fails "
                          f"({_first_line(err)}); pass the arguments the network was built "
                          "with") from None
    misfit = (_misfit(rebuilt.state_dict(), state) if isinstance(rebuilt, nn.Module)
              else "larger than this one" if rebuilt is None else "not a network")
    if misfit:
        raise ConfigError(f"cannot export a {path}: {path}(**{kwargs}) builds a different "
                          f"network ({misfit}); pass the arguments the network was built with")
    sections = codecs.Sections()
    tensors = [codecs.encode_tensor(name, t, encoding, sections) for name, t in state.items()]
    record = {
        "format": "prunelab-export",
        "encoding": encoding,
        "architecture": {"class": path, "kwargs": kwargs},
        "dense_bytes": dense_bytes(state),
        "tensors": tensors,
        "metadata": metadata or {},
    }
    return container.pack(record, sections.tobytes())


def save(net: nn.Module, path: str | Path, encoding: str, kwargs: dict[str, Any] | None = None,
         metadata: dict[str, Any] | None = None, builder: str | None = None) -> int:
    """Write ``net`` as an artifact at ``path`` (atomically); return its size in bytes."""
    data = encode(net, encoding, kwargs, metadata, builder)
    atomic_write(path, data)
    return len(data)


def _decode(record: dict[str, Any], frame: memoryview, name: str, file_bytes: int,
            max_bytes: int | None) -> dict[str, torch.Tensor]:
    """The checked manifest's tensors: sizes first (nothing allocated), then the payload."""
    plan = manifest.check(record, name, file_bytes, max_bytes)
    size = container.frame_size(frame, name, "payload")
    if size != plan.payload_bytes:
        raise CheckpointError(f"{name} is corrupt: its payload declares {size:,} bytes; its "
                              f"tensors account for {plan.payload_bytes:,}")
    payload = container.decompress(frame, size, name, "payload")
    state = {}
    for label, entry, lay in plan.entries:
        try:
            state[label] = codecs.decode_tensor(entry, payload, lay)
        except (ValueError, IndexError) as err:
            raise CheckpointError(f"{name} is corrupt: tensor {label[:80]!r}: "
                                  f"{str(err).splitlines()[0][:120]}") from None
    return state


def decode(data: bytes, name: str = "artifact", max_bytes: int | None = None
           ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(manifest, state dict) from an artifact's bytes; CheckpointError on any defect.

    The decoded tensors may take ``max_bytes`` (default: :func:`prunelab.export.manifest.
    limit_for` the data's size, 4096 times it or 64 MiB); a file declaring more is refused
    before anything is allocated.
    """
    record, frame = container.unpack(data, name)
    return record, _decode(record, frame, name, len(data), max_bytes)


def _read(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file")
    return container.read_file(path)


def read(path: str | Path, max_bytes: int | None = None
         ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(manifest, state dict) of the artifact at ``path`` (see :func:`decode`)."""
    return decode(_read(path), str(path), max_bytes)


def network(architecture: Any, name: str, allow: Iterable[str] = ()
            ) -> tuple[str, dict[str, Any]]:
    """(class path, constructor arguments) of an architecture record, if the path may be
    built: one of :data:`NETWORKS`, or allowed by the caller. Nothing is imported."""
    if not isinstance(architecture, dict) or not isinstance(architecture.get("class"), str):
        raise CheckpointError(f"{name} is corrupt: its manifest names no network class")
    path, kwargs = architecture["class"], architecture.get("kwargs", {})
    if path not in NETWORKS and not is_allowed(path, allow):
        raise CheckpointError(
            f"{name} names network {path[:200]!r}, which is not one of prunelab's networks "
            f"({', '.join(NETWORKS)}); refusing to load it; if you trust this file and that "
            f"code, allow it with {how_to_allow(path)}, or load(path, allow=[...]) in Python")
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{name} is corrupt: the constructor arguments of {path} are "
                              f"{type(kwargs).__name__}, not a mapping")
    return path, _rebuild_kwargs(path, kwargs)


def build(path: str, kwargs: dict[str, Any], state: dict[str, torch.Tensor],
          name: str = "artifact") -> nn.Module:
    """The network ``path(**kwargs)`` with ``state`` loaded, in eval mode.

    The constructor may create tensors of twice the decoded tensors' bytes plus 16 MiB in all
    (each checked before it is allocated); the network's parameter names and shapes must then
    be the decoded tensors'.
    """
    shown = f"{path}(**{str(kwargs)[:120]})"
    try:
        net = _construct(_resolve(path), kwargs, _budget_for(state))
    except _TooLarge:
        raise CheckpointError(f"{name}: {shown} would create more than the "
                              f"{_budget_for(state):,} bytes its {dense_bytes(state):,} bytes of "
                              "stored tensors allow; refusing to build it") from None
    except Exception as err:  # the class's own code: whatever it raises is one line
        raise CheckpointError(f"{name}: cannot build {shown}: {_first_line(err)}") from None
    if not isinstance(net, nn.Module):
        raise CheckpointError(f"{name}: {shown} is a {type(net).__name__}, not a network")
    misfit = _misfit(net.state_dict(), state)
    if misfit:
        raise CheckpointError(f"{name} does not fit {path}: {misfit}")
    try:
        net.load_state_dict(state)
    except Exception as err:
        raise CheckpointError(f"{name}: cannot load its tensors into {path}: "
                              f"{_first_line(err)}") from None
    return net.eval()


def from_bytes(data: bytes, name: str = "artifact", allow: Iterable[str] = (),
               max_bytes: int | None = None
               ) -> tuple[dict[str, Any], dict[str, torch.Tensor], nn.Module]:
    """(manifest, state dict, network) of an artifact's bytes: the allow-list is checked
    before anything is decoded, the tensors before the network is built."""
    record, frame = container.unpack(data, name)
    arch, kwargs = network(record.get("architecture"), name, allow)
    state = _decode(record, frame, name, len(data), max_bytes)
    return record, state, build(arch, kwargs, state, name)


def open_artifact(path: str | Path, allow: Iterable[str] = (), max_bytes: int | None = None
                  ) -> tuple[dict[str, Any], dict[str, torch.Tensor], nn.Module]:
    """(manifest, state dict, network) of the artifact at ``path`` (see :func:`from_bytes`)."""
    return from_bytes(_read(path), str(path), allow, max_bytes)


def load(path: str | Path, allow: Iterable[str] = (), max_bytes: int | None = None) -> nn.Module:
    """The network stored in the artifact at ``path``, weights decoded, in eval mode.

    ``allow``: module prefixes whose classes may be built besides prunelab's own (as
    ``--allow-target``; also $PRUNELAB_ALLOW_TARGETS), for a network of your own: only for
    files you trust, since building the class runs its code. ``max_bytes``: see :func:`decode`.
    """
    return open_artifact(path, allow, max_bytes)[2]
