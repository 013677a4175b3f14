"""Save a network as one compressed artifact, and load it back as a plain ``nn.Module``.

Loading imports neither Lightning nor Hydra and never unpickles: the manifest names the
network class, which must be one of prunelab's own networks (:data:`NETWORKS`), and its
constructor arguments (JSON scalars); the weights are decoded from raw arrays.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
import zstandard
from torch import nn

from prunelab.errors import CheckpointError, ConfigError
from prunelab.export import codecs, container

TORCHVISION = "prunelab.models.vision.torchvision_net"
# class path → (module, class name); nothing outside this list is ever imported by a load
NETWORKS = {
    "prunelab.models.cnn.LeNet": ("prunelab.models.cnn", "LeNet"),
    "prunelab.models.text.TextClassifier": ("prunelab.models.text", "TextClassifier"),
    # model=torchvision: rebuilt by prunelab's builder, which takes torchvision's registered
    # classification architectures by name only
    TORCHVISION: ("prunelab.models.vision", "torchvision_net"),
}
_SCALARS = (bool, int, float, str, type(None))


def class_path(net: nn.Module) -> str:
    cls = type(net)
    return f"{cls.__module__}.{cls.__qualname__}"


def dense_bytes(state: dict[str, torch.Tensor]) -> int:
    """Bytes of the state dict's tensors stored densely (fp32 for a float32 network)."""
    return sum(t.numel() * t.element_size() for t in state.values())


def encode(net: nn.Module, encoding: str, kwargs: dict[str, Any] | None = None,
           metadata: dict[str, Any] | None = None, builder: str | None = None) -> bytes:
    """The artifact's bytes for ``net`` (masks must already be folded into the weights).

    ``kwargs`` are the network's constructor arguments (JSON scalars); ``metadata`` is any
    JSON-serialisable record kept in the manifest (source run, accuracy ...); ``builder``
    names the function that built ``net`` when that is not its class (:data:`TORCHVISION`).
    """
    codecs.check_encoding(encoding)
    path = builder or class_path(net)
    if path not in NETWORKS:
        raise ConfigError(f"cannot export a {path}: the artifact stores prunelab's own networks "
                          f"only ({', '.join(sorted(NETWORKS))})")
    kwargs = dict(kwargs or {})
    bad = {k: v for k, v in kwargs.items() if not isinstance(v, _SCALARS) or not isinstance(k, str)}
    if bad:
        raise ConfigError(f"constructor arguments must be numbers, strings or booleans: {bad}")
    sections = codecs.Sections()
    state = net.state_dict()
    tensors = [codecs.encode_tensor(name, t, encoding, sections) for name, t in state.items()]
    manifest = {
        "format": "prunelab-export",
        "encoding": encoding,
        "architecture": {"class": path, "kwargs": kwargs},
        "dense_bytes": dense_bytes(state),
        "tensors": tensors,
        "metadata": metadata or {},
    }
    return container.pack(manifest, sections.tobytes())


def save(net: nn.Module, path: str | Path, encoding: str, kwargs: dict[str, Any] | None = None,
         metadata: dict[str, Any] | None = None, builder: str | None = None) -> int:
    """Write ``net`` as an artifact at ``path`` (atomically); return its size in bytes."""
    data = encode(net, encoding, kwargs, metadata, builder)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return len(data)


def decode(data: bytes, name: str = "artifact") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(manifest, state dict) from an artifact's bytes; CheckpointError on any defect."""
    manifest, payload = container.unpack(data, name)
    try:
        state = {}
        for entry in manifest["tensors"]:
            state[str(entry["name"])] = codecs.decode_tensor(entry, payload)
    except (KeyError, TypeError, ValueError, IndexError, OverflowError,
            zstandard.ZstdError, RuntimeError) as err:
        raise CheckpointError(f"{name} is corrupt: {type(err).__name__}: "
                              f"{str(err).splitlines()[0][:120] if str(err) else ''}") from None
    return manifest, state


def read(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(manifest, state dict) of the artifact at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file")
    return decode(path.read_bytes(), str(path))


def build(architecture: Any, name: str = "artifact") -> nn.Module:
    """The (untrained) network an architecture record names, from the allow-list only."""
    if not isinstance(architecture, dict) or architecture.get("class") not in NETWORKS:
        got = architecture.get("class") if isinstance(architecture, dict) else architecture
        raise CheckpointError(f"{name} names network {got!r}, which is not one of prunelab's "
                              f"networks ({', '.join(sorted(NETWORKS))}); refusing to load it")
    kwargs = architecture.get("kwargs") or {}
    if not isinstance(kwargs, dict) or not all(isinstance(v, _SCALARS) for v in kwargs.values()):
        raise CheckpointError(f"{name} is corrupt: constructor arguments are not plain values")
    module, cls = NETWORKS[architecture["class"]]
    try:
        return getattr(importlib.import_module(module), cls)(**kwargs)
    except (TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{name}: cannot build {architecture['class']}({kwargs}): "
                              f"{str(err).splitlines()[0][:120]}") from None


def load(path: str | Path) -> nn.Module:
    """The network stored in the artifact at ``path``, weights decoded, in eval mode."""
    manifest, state = read(path)
    net = build(manifest.get("architecture"), str(path))
    expected = net.state_dict()
    problems = {
        "missing": [k for k in expected if k not in state],
        "unexpected": [k for k in state if k not in expected],
        "wrong shape": [k for k in expected
                        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)],
    }
    if any(problems.values()):
        detail = "; ".join(f"{what} {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
                           for what, names in problems.items() if names)
        raise CheckpointError(f"{path} does not fit {manifest['architecture']['class']}: {detail}")
    net.load_state_dict(state)
    return net.eval()
