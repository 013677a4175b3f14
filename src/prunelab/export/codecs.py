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

A one-dimensional float tensor (a bias, a normalisation layer's parameters and statistics) is
stored the same way in format version 2, so the zeros of dead units cost a bit or less, with its
values in float32, exactly (:data:`VECTOR_CODINGS` ``fp32``, the default), or as per-tensor
affine 8-bit codes (``int8``). Every other tensor (integer buffers, scalars) is stored exactly
as it is.

Codes are stored one per byte and left to zstd's entropy coder (Huffman over bytes), which
comes within a few percent of the codes' entropy, below ``b`` bits when the clusters are uneven.
Version 2 gathers each kind of section into its own stream (positions, codes, float values:
:data:`prunelab.export.container.STREAMS`), compressed as one zstd frame each, so that one
entropy table is not shared by unlike bytes; its sections lie in a fixed order (:func:`layout`
gives their lengths), so the manifest names no offsets. Version 1 (one frame; every section's offset in the manifest) is
read as before.
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
#: how a version-2 file stores the values of one-dimensional float tensors (biases ...)
VECTOR_CODINGS = ("fp32", "int8")

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


def check_vectors(coding: str) -> str:
    if coding not in VECTOR_CODINGS:
        raise ConfigError(f"unknown coding of biases {coding!r}; valid: {', '.join(VECTOR_CODINGS)}")
    return coding


def is_weight(tensor: torch.Tensor) -> bool:
    """Tensors that get a sparse, quantised coding: float matrices and kernels."""
    return tensor.is_floating_point() and tensor.dim() >= 2


def is_vector(tensor: torch.Tensor) -> bool:
    """One-dimensional float tensors (biases, normalisation parameters and statistics): sparse,
    with exact or 8-bit values, in format version 2."""
    return tensor.is_floating_point() and tensor.dim() == 1


def stream_of(section: str, entry: dict[str, Any]) -> int:
    """The version-2 stream (index into :data:`~prunelab.export.container.STREAMS`) that holds
    an entry's ``section``."""
    if section == "pos":
        return 0
    values = entry.get("values")
    if (section == "data" and entry.get("kind") == "sparse" and isinstance(values, str)
            and values.startswith("kmeans")):
        return 1
    return 2


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
    if _zlen(index) <= _zlen(bitmask):
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


def _zlen(data: bytes) -> int:
    return len(zstandard.ZstdCompressor(level=19).compress(data))


def encode_sub(mask: np.ndarray) -> tuple[dict[str, Any], bytes]:
    """(entry fields, bytes) of the ``sub`` coding of an n-D (n >= 2) boolean mask: which
    indices of dim 0 and of dim 1 hold any non-zero (two bitmasks), then the flat positions
    inside the sub-tensor they select (:func:`encode_positions`). Pruning that empties whole
    rows and columns (dead units, structured pruning) leaves a smaller, denser sub-tensor."""
    m = mask.reshape(mask.shape[0], mask.shape[1], -1)
    rows, cols = m.any(axis=(1, 2)), m.any(axis=(0, 2))
    inner, data, width = encode_positions(m[rows][:, cols].reshape(-1))
    fields = {"rows": int(rows.sum()), "cols": int(cols.sum()), "inner": inner, "width": width}
    return fields, np.packbits(rows).tobytes() + np.packbits(cols).tobytes() + data


def sub_lengths(shape: list[int] | tuple[int, ...]) -> tuple[int, int, int]:
    """(bytes of the dim-0 bitmask, of the dim-1 bitmask, entries per (row, column) pair)."""
    rest = 1
    for d in shape[2:]:
        rest *= d
    return (shape[0] + 7) // 8, (shape[1] + 7) // 8, rest


def decode_sub(data: bytes, shape: tuple[int, ...], nnz: int, rows: int, cols: int,
               inner: str, width: int) -> np.ndarray:
    """Flat int64 indices of the non-zeros of a ``sub``-coded tensor (sizes already checked)."""
    a, b, rest = sub_lengths(shape)
    row_idx = np.flatnonzero(np.unpackbits(np.frombuffer(data[:a], np.uint8), count=shape[0]))
    col_idx = np.flatnonzero(np.unpackbits(np.frombuffer(data[a: a + b], np.uint8),
                                           count=shape[1]))
    if len(row_idx) != rows or len(col_idx) != cols:
        raise ValueError("the sub-tensor's rows or columns do not match their count")
    sub = decode_positions(inner, data[a + b:], rows * cols * rest, nnz, width)
    if not nnz:
        return sub
    i, rem = np.divmod(sub, cols * rest)
    j, k = np.divmod(rem, rest)
    return row_idx[i] * (shape[1] * rest) + col_idx[j] * rest + k


# ---------------------------------------------------------------------------- values

def int8_channels(shape: list[int] | tuple[int, ...]) -> int:
    """How many (lo, scale) pairs an ``int8`` tensor has: one per output channel (dim 0) of a
    weight, one for a one-dimensional tensor."""
    return shape[0] if len(shape) >= 2 else 1


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

def encode_tensor(name: str, tensor: torch.Tensor, encoding: str, vectors: str | None = None
                  ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(manifest entry, its sections' bytes by name) of one tensor.

    Weights (:func:`is_weight`) get positions and ``encoding``'s values; with ``vectors`` (one of
    :data:`VECTOR_CODINGS`: format version 2) one-dimensional float tensors get positions and
    values in that coding; without it (version 1) they, and every other tensor, are raw bytes.
    """
    t = tensor.detach().cpu()
    dtype = str(t.dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise ConfigError(f"tensor {name} has dtype {dtype}, which the export does not store; "
                          f"supported: {', '.join(DTYPES)}")
    entry: dict[str, Any] = {"name": name, "shape": list(t.shape), "dtype": dtype}
    sparse = is_weight(t) or (vectors is not None and is_vector(t))
    if not sparse or t.numel() == 0:
        entry["kind"] = "raw"
        return entry, {"data": np.ascontiguousarray(t.numpy()).astype(DTYPES[dtype]).tobytes()}
    if not is_weight(t):
        encoding = vectors
    flat = t.reshape(-1).to(torch.float32).numpy()
    mask = flat != 0
    coding, pos, width = encode_positions(mask)
    idx = np.flatnonzero(mask)
    values = flat[idx]
    entry.update(kind="sparse", nnz=int(len(idx)), positions=coding, width=width)
    if vectors is not None and t.dim() >= 2 and coding != "all":  # version 2: rows and columns
        fields, sub = encode_sub(mask.reshape(t.shape))
        if _zlen(sub) < _zlen(pos):
            entry.update(positions="sub", **fields)
            pos = sub
    entry["values"] = encoding
    sections = {"pos": pos}
    if encoding == "fp32":
        sections["data"] = shuffle(values.view(np.uint32), 4)
    elif encoding == "int8":
        channels = int8_channels(t.shape)
        channel = idx // (t.numel() // channels)
        codes, lo, scale = quantize_int8(values, channel, channels)
        sections.update(data=codes.tobytes(), lo=lo.astype("<f4").tobytes(),
                        scale=scale.astype("<f4").tobytes())
    else:
        bits = kmeans_bits(encoding)
        distinct = np.unique(values)
        if len(distinct) <= 2 ** bits:  # already shared (e.g. a fine-tuned codebook): exact
            codebook, codes = distinct, np.searchsorted(distinct, values).astype(np.uint8)
        else:
            codebook, codes = kmeans_1d(values, 2 ** bits)
        entry.update(bits=bits, k=int(len(codebook)))
        sections.update(data=codes.tobytes(), codebook=codebook.astype("<f4").tobytes())
    return entry, sections


# ---------------------------------------------------------------------------- reading

FLOAT_DTYPES = ("float32", "float64", "float16")
MAX_DIMS = 32


@dataclass(frozen=True)
class Layout:
    """What a manifest entry claims, checked for consistency: its shape, element count, dense
    bytes, the length of each payload section the entry implies (in the order a version-2
    payload lays them out), and each section's (offset, length): from the entry in version 1,
    assigned by :func:`prunelab.export.manifest.check` in version 2."""

    shape: tuple[int, ...]
    numel: int
    dense_bytes: int
    lengths: dict[str, int]
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


def layout(entry: Any, version: int = 1) -> Layout:
    """The checked :class:`Layout` of a manifest entry of a format-``version`` file, from the
    entry alone (nothing is allocated: the section lengths follow from the shape, dtype, coding
    and non-zero count); ValueError naming the first inconsistency."""
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
        lengths = {"data": numel * itemsize}
    else:
        lengths = _sparse_lengths(entry, dtype, shape, numel, version)
    sections = ({key: _ref(entry, key, n) for key, n in lengths.items()} if version == 1
                else {})
    return Layout(tuple(shape), numel, numel * itemsize, lengths, sections)


def _positions_length(entry: dict[str, Any], coding: str, numel: int, nnz: int) -> int:
    """The bytes of a flat position coding of ``nnz`` of ``numel`` entries."""
    if nnz > numel:
        raise ValueError(f"{nnz} non-zeros in {numel} entries")
    if coding == "all" and nnz != numel:
        raise ValueError(f"positions 'all' with {nnz} of {numel} entries")
    width = _int(entry, "width", 1, 8) if coding == "index" else 0
    return {"all": 0, "bitmask": (numel + 7) // 8, "index": width * nnz}[coding]


def _sparse_lengths(entry: dict[str, Any], dtype: str, shape: list[int], numel: int,
                    version: int) -> dict[str, int]:
    """The bytes of each section of a sparse entry (version 1: weights only; 2: vectors too)."""
    if dtype not in FLOAT_DTYPES or len(shape) < (2 if version == 1 else 1):
        raise ValueError(f"a sparse entry of dtype {dtype} and {len(shape)} dimension(s)")
    nnz = _int(entry, "nnz", 0, numel)
    flat = ("all", "bitmask", "index")
    coding = _choice(entry, "positions",
                     flat + (("sub",) if version >= 2 and len(shape) >= 2 else ()))
    if coding == "sub":
        a, b, rest = sub_lengths(shape)
        rows, cols = _int(entry, "rows", 0, shape[0]), _int(entry, "cols", 0, shape[1])
        inner = _choice(entry, "inner", flat)
        lengths = {"pos": a + b + _positions_length(entry, inner, rows * cols * rest, nnz)}
    else:
        lengths = {"pos": _positions_length(entry, coding, numel, nnz)}
    enc = _choice(entry, "values", ENCODINGS)
    if enc == "fp32":
        lengths["data"] = 4 * nnz
    elif enc == "int8":
        channels = int8_channels(shape)
        lengths.update(data=nnz, lo=4 * channels, scale=4 * channels)
    else:
        bits = kmeans_bits(enc)
        if _int(entry, "bits", 1, 8) != bits:
            raise ValueError(f"bits={entry['bits']} for values {enc}")
        lengths.update(data=nnz, codebook=4 * _int(entry, "k", 0, 2 ** bits))
    return lengths


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
    if entry["positions"] == "sub":
        idx = decode_sub(payload[off: off + length], shape, nnz, entry["rows"], entry["cols"],
                         entry["inner"], entry.get("width", 0))
    else:
        idx = decode_positions(entry["positions"], payload[off: off + length], numel, nnz,
                               entry.get("width", 0))
    enc = entry["values"]
    if enc == "fp32":
        off, length = sec["data"]
        values = unshuffle(payload[off: off + length], 4, nnz).astype(np.uint32).view(np.float32)
    elif enc == "int8":
        channel = idx // (numel // int8_channels(shape)) if nnz else idx
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
