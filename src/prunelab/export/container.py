"""The artifact's byte layout: a fixed header, a zstd-compressed JSON manifest, a zstd payload.

::

    offset  size  field
    0       8     magic  b"\\x89PLX\\r\\n\\x1a\\n"  (PNG-style: text-mode or 7-bit transfers break it)
    8       2     format version (little-endian uint16): 2 (1 is read too)
    10      4     manifest length in bytes, compressed (uint32)
    14      4     payload length in bytes, compressed (uint32)
    18      4     CRC-32 of everything after the header (uint32)
    22      ...   zstd(manifest as UTF-8 JSON), then the payload: version 1, one zstd frame;
                  version 2, one zstd frame per stream (positions, codes, values), their
                  compressed lengths in the manifest's ``frames``, an empty stream none

Nothing in the file is ever unpickled: the manifest is JSON, the payload raw little-endian
arrays whose offsets, lengths and dtypes the manifest gives. Every size is checked before
anything of that size is allocated: the header's lengths against the file (a truncated file is
named as such), the CRC-32, each zstd frame's declared size against what zstd can expand its
bytes to (:data:`ZSTD_MAX_RATIO`) and a bound of its own (the manifest: :data:`MAX_MANIFEST`;
the payload: exactly the bytes the manifest's tensors account for, each stream's frame exactly
its stream's, see :mod:`prunelab.export.manifest`). Frames must declare their decompressed
size; prunelab's writer always does.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import zstandard

from prunelab.errors import CheckpointError

MAGIC = b"\x89PLX\r\n\x1a\n"
#: the version prunelab writes ...
VERSION = 2
#: ... and those it reads
READS = (1, 2)
#: a version-2 payload's streams, in order, each one zstd frame (like bytes compress together)
STREAMS = ("positions", "codes", "values")
_HEADER = struct.Struct("<8sHIII")
HEADER_BYTES = _HEADER.size  # 22
ZSTD_LEVEL = 22
#: no zstd frame expands more: a block decodes to at most 128 KiB and takes at least 4 bytes
#: (3 of header, 1 repeated byte)
ZSTD_MAX_RATIO = 32768
#: a manifest is about 250 bytes a tensor: this is some 16,000 tensors, and parsing it stays
#: within a few tens of MB
MAX_MANIFEST = 4 << 20


def _assemble(version: int, manifest: dict[str, Any], payload: bytes) -> bytes:
    m = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(
        json.dumps(manifest, separators=(",", ":")).encode())
    crc = zlib.crc32(payload, zlib.crc32(m))
    return _HEADER.pack(MAGIC, version, len(m), len(payload), crc) + m + payload


def pack(manifest: dict[str, Any], payload: bytes) -> bytes:
    """A version-1 artifact: the payload in one frame, its sections where the manifest's
    ``[offset, length]`` pairs say (what prunelab wrote before version 2; tests craft files
    with it)."""
    return _assemble(1, manifest, zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(payload))


def pack_streams(manifest: dict[str, Any], streams: list[bytes]) -> bytes:
    """A version-2 artifact: one zstd frame per non-empty stream, their compressed lengths
    recorded in the manifest's ``frames`` (0 for an empty stream, which has no frame)."""
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    frames = [cctx.compress(s) if s else b"" for s in streams]
    return _assemble(2, {**manifest, "frames": [len(f) for f in frames]}, b"".join(frames))


def _header(head: bytes, size: int, name: str) -> tuple[int, int, int, int]:
    """(version, manifest length, payload length, CRC) from the first bytes of a ``size``-byte
    file."""
    if len(head) < len(MAGIC) or head[: len(MAGIC)] != MAGIC:
        raise CheckpointError(
            f"{name} is not a prunelab export artifact (no PLX header; "
            "write one with: python -m prunelab export <run dir>)")
    if size < HEADER_BYTES:
        raise CheckpointError(f"{name} is truncated: {size} bytes, shorter than the header")
    _, version, m_len, p_len, crc = _HEADER.unpack_from(head)
    if version not in READS:
        raise CheckpointError(
            f"{name} has artifact format version {version}; this prunelab reads versions "
            f"{', '.join(map(str, READS))}")
    expected = HEADER_BYTES + m_len + p_len
    if size < expected:
        raise CheckpointError(f"{name} is truncated: {size} of {expected} bytes")
    if size > expected:
        raise CheckpointError(f"{name} is corrupt: {size - expected} bytes after its end")
    return version, m_len, p_len, crc


def read_file(path: Path) -> bytes:
    """The bytes of the artifact at ``path``: the header is checked first, so a file that is not
    one (or whose length disagrees with its header) is refused without being read whole."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            head = f.read(HEADER_BYTES)
            _header(head, size, str(path))
            return head + f.read()
    except OSError as err:
        raise CheckpointError(f"{path} is unreadable: {err.strerror or err}") from None


def frame_size(frame: bytes | memoryview, name: str, what: str) -> int:
    """The decompressed size a zstd frame declares, checked against what its bytes can expand
    to; CheckpointError when it declares none or more."""
    try:
        size = zstandard.frame_content_size(frame)
    except zstandard.ZstdError:
        raise CheckpointError(f"{name} is corrupt: its {what} is not a zstd frame") from None
    if size < 0:
        raise CheckpointError(f"{name} is corrupt: its {what} frame does not declare its size")
    if size > len(frame) * ZSTD_MAX_RATIO:
        raise CheckpointError(f"{name} is corrupt: its {what} declares {size:,} bytes from "
                              f"{len(frame):,}, more than zstd can encode in that many")
    return size


def decompress(frame: bytes | memoryview, size: int, name: str, what: str) -> bytes:
    """The frame's bytes, exactly ``size`` of them (its declared size, already checked): zstd
    never writes more than the frame declares, and nothing may follow the frame."""
    try:
        out = zstandard.ZstdDecompressor().decompress(frame, allow_extra_data=False)
    except zstandard.ZstdError as err:
        raise CheckpointError(f"{name} is corrupt: {what}: "
                              f"{str(err).splitlines()[0][:120]}") from None
    if len(out) != size:
        raise CheckpointError(f"{name} is corrupt: its {what} holds {len(out):,} bytes, "
                              f"not the {size:,} it declares")
    return out


def unpack(data: bytes, name: str = "artifact") -> tuple[dict[str, Any], memoryview, int]:
    """(manifest, the payload's zstd frame(s), still compressed, format version) from the
    artifact's bytes; CheckpointError on any defect. The payload is decompressed by the caller
    once the manifest has said how large it may be (:func:`frame_size`, :func:`decompress`,
    :func:`decompress_streams`)."""
    version, m_len, _, crc = _header(data[:HEADER_BYTES], len(data), name)
    body = memoryview(data)[HEADER_BYTES:]
    if zlib.crc32(body) != crc:
        raise CheckpointError(f"{name} is corrupt: checksum mismatch")
    frame = body[:m_len]
    size = frame_size(frame, name, "manifest")
    if size > MAX_MANIFEST:
        raise CheckpointError(f"{name} is corrupt: its manifest declares {size:,} bytes, more "
                              f"than the {MAX_MANIFEST:,} a manifest may take")
    text = decompress(frame, size, name, "manifest")
    try:
        manifest = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{name} is corrupt: its manifest is not JSON "
                              f"({str(err).splitlines()[0][:80]})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "prunelab-export":
        raise CheckpointError(f"{name} is corrupt: its manifest is not a prunelab export manifest")
    return manifest, body[m_len:], version


def decompress_streams(region: memoryview, frames: list[int], sizes: list[int],
                       name: str) -> bytes:
    """A version-2 payload: the frames that tile ``region`` (compressed lengths ``frames``,
    already checked to be whole numbers), each decompressing to exactly its stream's ``sizes``
    bytes, which the manifest's tensors account for; joined in order."""
    if sum(frames) != len(region):
        raise CheckpointError(f"{name} is corrupt: its manifest's frames take {sum(frames):,} "
                              f"bytes; its payload has {len(region):,}")
    parts, at = [], 0
    for what, length, size in zip(STREAMS, frames, sizes, strict=True):
        frame, at = region[at: at + length], at + length
        if not length:  # an empty stream (the manifest's check: exactly those)
            continue
        declared = frame_size(frame, name, f"{what} stream")
        if declared != size:
            raise CheckpointError(f"{name} is corrupt: its {what} stream declares "
                                  f"{declared:,} bytes; its tensors account for {size:,}")
        parts.append(decompress(frame, size, name, f"{what} stream"))
    return b"".join(parts)
