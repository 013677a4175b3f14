"""Tensor codecs: where a pruned tensor's non-zeros are, and what their values are.

A weight tensor (a float tensor of two or more dimensions) is stored as

* **positions** of its non-zeros, whichever is smaller after compression:
  ``bitmask`` (one bit per entry) or ``index`` (the gaps between successive non-zeros in
  row-major order — the relative-index coding of Deep Compression — as unsigned integers of the
  smallest width that holds the largest gap, byte-planes split so the mostly-zero high bytes
  compress to almost nothing); ``all`` when the tensor has no zeros;
* **values** of the non-zeros in the tensor's encoding:

  - ``fp32``: the exact float32 values (lossless);
  - ``int8``: per output channel (dim 0) affine 8-bit codes, ``lo + q * scale`` with ``q`` in
    0..255 over the channel's non-zeros (error at most ``scale / 2``);
  - ``kmeans<b>`` (b = 1..8): weight sharing (Deep Compression): the tensor's non-zeros are
    clustered by 1-D k-means into at most ``2**b`` shared values (linear initialisation over
    their range, Lloyd iterations); each non-zero stores the index of its nearest value. A
    tensor that already holds at most ``2**b`` distinct non-zeros (a fine-tuned codebook,
    :mod:`prunelab.export.finetune`) keeps them exactly.

Every other tensor (biases, buffers, integer tensors) is stored exactly as it is.
Codes are stored one per byte and left to zstd's entropy coder (Huffman over bytes), which
comes within a few percent of the codes' entropy, below ``b`` bits when the clusters are uneven.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import zstandard

from prunelab.errors import ConfigError

ENCODINGS = ("fp32", "int8", *(f"kmeans{b}" for b in range(8, 0, -1)))
DTYPES = {  # torch dtype name → numpy dtype of the stored bytes (little-endian)
    "float32": "<f4", "float64": "<f8", "float16": "<f2", "int64": "<i8", "int32": "<i4",
    "int16": "<i2", "int8": "i1", "uint8": "u1", "bool": "?",
}
KMEANS_ITERS = 50


def check_encoding(encoding: str) -> str:
    if encoding not in ENCODINGS:
        raise ConfigError(f"unknown encoding {encoding!r}; valid: {', '.join(ENCODINGS)}")
    return encoding


def kmeans_bits(encoding: str) -> int | None:
    m = re.fullmatch(r"kmeans(\d)", encoding)
    return int(m.group(1)) if m else None


def is_weight(tensor: torch.Tensor) -> bool:
    """Tensors that get a sparse, quantised coding: float matrices and kernels."""
    return tensor.is_floating_point() and tensor.dim() >= 2


class Sections:
    """Raw byte sections of the payload, appended in order; entries refer to (offset, length)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> list[int]:
        self.parts.append(data)
        ref = [self.size, len(data)]
        self.size += len(data)
        return ref

    def tobytes(self) -> bytes:
        return b"".join(self.parts)


# ---------------------------------------------------------------------------- positions

def shuffle(values: np.ndarray, width: int) -> bytes:
    """Unsigned integers as ``width`` byte-planes, least significant plane first."""
    planes = values.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :width]
    return np.ascontiguousarray(planes.T).tobytes()


def unshuffle(data: bytes, width: int, count: int) -> np.ndarray:
    planes = np.frombuffer(data, dtype=np.uint8, count=width * count).reshape(width, count)
    out = np.zeros(count, dtype=np.uint64)
    for i in range(width):
        out |= planes[i].astype(np.uint64) << np.uint64(8 * i)
    return out


def encode_positions(mask: np.ndarray) -> tuple[str, bytes, int]:
    """(coding, bytes, index width) for a flat boolean mask, the smaller after compression."""
    if mask.all():
        return "all", b"", 0
    bitmask = np.packbits(mask).tobytes()
    idx = np.flatnonzero(mask)
    gaps = np.diff(idx, prepend=-1) - 1
    width = max(1, (int(gaps.max()).bit_length() + 7) // 8) if len(gaps) else 1
    index = shuffle(gaps, width)
    z = zstandard.ZstdCompressor(level=19)
    if len(z.compress(index)) <= len(z.compress(bitmask)):
        return "index", index, width
    return "bitmask", bitmask, 0


def decode_positions(coding: str, data: bytes, numel: int, nnz: int, width: int) -> np.ndarray:
    """Flat int64 indices of the non-zeros."""
    if coding == "all":
        return np.arange(numel, dtype=np.int64)
    if coding == "bitmask":
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=numel)
        idx = np.flatnonzero(bits)
    elif coding == "index":
        gaps = unshuffle(data, width, nnz)
        if nnz and int(gaps.max()) >= numel:  # also keeps the sums below from wrapping
            raise ValueError("a position gap beyond the tensor")
        idx = (np.cumsum(gaps + np.uint64(1)) - np.uint64(1)).astype(np.int64)
    else:
        raise ValueError(f"unknown position coding {coding!r}")
    if len(idx) != nnz or (nnz and (idx[0] < 0 or idx[-1] >= numel)):
        raise ValueError("positions do not match the tensor")
    return idx


# ---------------------------------------------------------------------------- values

def quantize_int8(values: np.ndarray, channel: np.ndarray, channels: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes uint8, lo float32[channels], scale float32[channels]) per channel, affine."""
    lo = np.full(channels, np.inf, dtype=np.float32)
    hi = np.full(channels, -np.inf, dtype=np.float32)
    np.minimum.at(lo, channel, values)
    np.maximum.at(hi, channel, values)
    empty = ~np.isfinite(lo)
    lo[empty], hi[empty] = 0.0, 0.0
    scale = ((hi - lo) / 255).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.rint((values - lo[channel]) / scale[channel])
    return np.clip(q, 0, 255).astype(np.uint8), lo, scale


def dequantize_int8(codes: np.ndarray, channel: np.ndarray, lo: np.ndarray,
                    scale: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # a damaged scale decodes to inf, quietly
        return (lo[channel] + codes.astype(np.float32) * scale[channel]).astype(np.float32)


def kmeans_1d(values: np.ndarray, k: int, iters: int = KMEANS_ITERS
              ) -> tuple[np.ndarray, np.ndarray]:
    """(codebook float32[<=k], codes uint8): Lloyd's k-means in one dimension, linear init.

    Linear initialisation over [min, max] keeps centroids on the rare large weights, which
    Deep Compression found matters most for accuracy. Empty clusters are dropped at the end.
    """
    v = values.astype(np.float64)
    if len(v) == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.uint8)
    centers = np.unique(np.linspace(v.min(), v.max(), min(k, len(np.unique(v)))))
    sv = np.sort(v)
    cums = np.r_[0.0, np.cumsum(sv)]
    for _ in range(iters):
        bounds = (centers[1:] + centers[:-1]) / 2
        # the sorted values split into clusters at the midpoints between centres
        edges = np.r_[0, np.searchsorted(sv, bounds), len(sv)]
        counts = np.diff(edges)
        sums = cums[edges[1:]] - cums[edges[:-1]]
        new = np.where(counts > 0, sums / np.maximum(counts, 1), centers)
        if np.allclose(new, centers, rtol=0, atol=1e-12):
            break
        centers = np.sort(new)
    centers32 = np.unique(centers.astype(np.float32))
    codes = nearest(values.astype(np.float32), centers32)
    used = np.unique(codes)  # drop empty clusters, renumber
    remap = np.zeros(len(centers32), dtype=np.int64)
    remap[used] = np.arange(len(used))
    return centers32[used], remap[codes].astype(np.uint8)


def nearest(values: np.ndarray, sorted_centers: np.ndarray) -> np.ndarray:
    """Index of the nearest of ``sorted_centers`` for each value (ties to the lower one)."""
    if len(sorted_centers) == 1:
        return np.zeros(len(values), dtype=np.int64)
    bounds = (sorted_centers[1:].astype(np.float64) + sorted_centers[:-1]) / 2
    return np.searchsorted(bounds, values.astype(np.float64), side="right")


# ---------------------------------------------------------------------------- tensors

def encode_tensor(name: str, tensor: torch.Tensor, encoding: str, out: Sections) -> dict[str, Any]:
    """Append the tensor's sections to ``out``; return its manifest entry."""
    t = tensor.detach().cpu()
    dtype = str(t.dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise ConfigError(f"tensor {name} has dtype {dtype}, which the export does not store; "
                          f"supported: {', '.join(DTYPES)}")
    entry: dict[str, Any] = {"name": name, "shape": list(t.shape), "dtype": dtype}
    if not is_weight(t) or t.numel() == 0:
        entry["kind"] = "raw"
        entry["data"] = out.add(np.ascontiguousarray(t.numpy()).astype(DTYPES[dtype]).tobytes())
        return entry
    flat = t.reshape(-1).to(torch.float32).numpy()
    mask = flat != 0
    coding, pos, width = encode_positions(mask)
    idx = np.flatnonzero(mask)
    values = flat[idx]
    entry.update(kind="sparse", nnz=int(len(idx)), positions=coding, width=width,
                 pos=out.add(pos), values=encoding)
    if encoding == "fp32":
        entry["data"] = out.add(shuffle(values.view(np.uint32), 4))
    elif encoding == "int8":
        channels = t.shape[0]
        channel = idx // (t.numel() // channels)
        codes, lo, scale = quantize_int8(values, channel, channels)
        entry.update(data=out.add(codes.tobytes()), lo=out.add(lo.astype("<f4").tobytes()),
                     scale=out.add(scale.astype("<f4").tobytes()))
    else:
        bits = kmeans_bits(encoding)
        distinct = np.unique(values)
        if len(distinct) <= 2 ** bits:  # already shared (e.g. a fine-tuned codebook): exact
            codebook, codes = distinct, np.searchsorted(distinct, values).astype(np.uint8)
        else:
            codebook, codes = kmeans_1d(values, 2 ** bits)
        entry.update(bits=bits, k=int(len(codebook)), data=out.add(codes.tobytes()),
                     codebook=out.add(codebook.astype("<f4").tobytes()))
    return entry


# ---------------------------------------------------------------------------- reading

FLOAT_DTYPES = ("float32", "float64", "float16")
MAX_DIMS = 32


@dataclass(frozen=True)
class Layout:
    """What a manifest entry claims, checked for consistency: its shape, element count, dense
    bytes, and each payload section's (offset, length) with the length the entry implies."""

    shape: tuple[int, ...]
    numel: int
    dense_bytes: int
    sections: dict[str, tuple[int, int]]


def _int(entry: dict[str, Any], key: str, lo: int, hi: int | None = None) -> int:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} is {value!r}, not a whole number")
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{key}={value} outside {lo}..{'' if hi is None else hi}")
    return value


def _choice(entry: dict[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{key} is {value!r}, not one of {', '.join(choices)}")
    return value


def _ref(entry: dict[str, Any], key: str, length: int) -> tuple[int, int]:
    """The entry's (offset, length) section ``key``, which must hold exactly ``length`` bytes."""
    ref = entry.get(key)
    if (not isinstance(ref, list) or len(ref) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in ref)):
        raise ValueError(f"section {key} is {str(ref)[:40]}, not [offset, length]")
    if ref[1] != length:
        raise ValueError(f"section {key} holds {ref[1]:,} bytes; the entry needs {length:,}")
    return ref[0], ref[1]


def layout(entry: Any) -> Layout:
    """The checked :class:`Layout` of a manifest entry, from the entry alone (nothing is
    allocated: the section lengths follow from the shape, dtype, coding and non-zero count);
    ValueError naming the first inconsistency."""
    if not isinstance(entry, dict):
        raise ValueError(f"an entry is {type(entry).__name__}, not an object")
    dtype = _choice(entry, "dtype", tuple(DTYPES))
    shape = entry.get("shape")
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise ValueError(f"shape {str(shape)[:60]} is not a list of up to {MAX_DIMS} sizes >= 0")
    numel = 1
    for d in shape:
        numel *= d  # Python integers: a huge shape gives a huge count, never an overflow
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    kind = _choice(entry, "kind", ("raw", "sparse"))
    if kind == "raw":
        sections = {"data": _ref(entry, "data", numel * itemsize)}
        return Layout(tuple(shape), numel, numel * itemsize, sections)
    if dtype not in FLOAT_DTYPES or len(shape) < 2:
        raise ValueError(f"a sparse entry of dtype {dtype} and {len(shape)} dimension(s)")
    nnz = _int(entry, "nnz", 0, numel)
    coding = _choice(entry, "positions", ("all", "bitmask", "index"))
    if coding == "all" and nnz != numel:
        raise ValueError(f"positions 'all' with {nnz} of {numel} entries")
    width = _int(entry, "width", 1, 8) if coding == "index" else 0
    pos = {"all": 0, "bitmask": (numel + 7) // 8, "index": width * nnz}[coding]
    sections = {"pos": _ref(entry, "pos", pos)}
    enc = _choice(entry, "values", ENCODINGS)
    if enc == "fp32":
        sections["data"] = _ref(entry, "data", 4 * nnz)
    elif enc == "int8":
        sections["data"] = _ref(entry, "data", nnz)
        sections["lo"] = _ref(entry, "lo", 4 * shape[0])
        sections["scale"] = _ref(entry, "scale", 4 * shape[0])
    else:
        bits = kmeans_bits(enc)
        if _int(entry, "bits", 1, 8) != bits:
            raise ValueError(f"bits={entry['bits']} for values {enc}")
        k = _int(entry, "k", 0, 2 ** bits)
        sections["data"] = _ref(entry, "data", nnz)
        sections["codebook"] = _ref(entry, "codebook", 4 * k)
    return Layout(tuple(shape), numel, numel * itemsize, sections)


def _array(payload: bytes, section: tuple[int, int], dtype: str) -> np.ndarray:
    off, length = section
    if off + length > len(payload):
        raise ValueError("a section lies outside the payload")
    return np.frombuffer(payload, dtype=dtype, count=length // np.dtype(dtype).itemsize,
                         offset=off)


def decode_tensor(entry: dict[str, Any], payload: bytes, lay: Layout | None = None
                  ) -> torch.Tensor:
    """The tensor an entry describes (``lay``: its :func:`layout`, if already checked);
    ValueError when the entry or the bytes are inconsistent."""
    lay = lay or layout(entry)
    dtype, shape, numel, sec = entry["dtype"], lay.shape, lay.numel, lay.sections
    if entry["kind"] == "raw":
        arr = _array(payload, sec["data"], DTYPES[dtype])
        # a writable copy; a bool is any non-zero byte, as numpy would never store it
        arr = arr.view(np.uint8) != 0 if dtype == "bool" else arr.astype(DTYPES[dtype])
        return torch.from_numpy(arr).reshape(shape)
    nnz = entry["nnz"]
    off, length = sec["pos"]
    idx = decode_positions(entry["positions"], payload[off: off + length], numel, nnz,
                           entry.get("width", 0))
    enc = entry["values"]
    if enc == "fp32":
        off, length = sec["data"]
        values = unshuffle(payload[off: off + length], 4, nnz).astype(np.uint32).view(np.float32)
    elif enc == "int8":
        channel = idx // (numel // shape[0]) if nnz else idx
        values = dequantize_int8(_array(payload, sec["data"], "u1"), channel,
                                 _array(payload, sec["lo"], "<f4"),
                                 _array(payload, sec["scale"], "<f4"))
    else:
        codes = _array(payload, sec["data"], "u1")
        if nnz and int(codes.max()) >= entry["k"]:
            raise ValueError("a code outside the codebook")
        values = _array(payload, sec["codebook"], "<f4")[codes.astype(np.int64)]
    flat = np.zeros(numel, dtype=np.float32)
    flat[idx] = values
    return torch.from_numpy(flat).reshape(shape).to(getattr(torch, dtype))
