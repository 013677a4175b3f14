"""The artifact's byte layout: a fixed header, a zstd-compressed JSON manifest, a zstd payload.

::

    offset  size  field
    0       8     magic  b"\\x89PLX\\r\\n\\x1a\\n"  (PNG-style: text-mode or 7-bit transfers break it)
    8       2     format version (little-endian uint16)
    10      4     manifest length in bytes, compressed (uint32)
    14      4     payload length in bytes, compressed (uint32)
    18      4     CRC-32 of everything after the header (uint32)
    22      ...   zstd(manifest as UTF-8 JSON), then zstd(payload)

Nothing in the file is ever unpickled: the manifest is JSON, the payload raw little-endian
arrays whose offsets, lengths and dtypes the manifest gives. Reading checks the magic, the
version, the lengths (a truncated file is named as such) and the checksum before decoding.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import zstandard

from prunelab.errors import CheckpointError

MAGIC = b"\x89PLX\r\n\x1a\n"
VERSION = 1
_HEADER = struct.Struct("<8sHIII")
HEADER_BYTES = _HEADER.size  # 22
ZSTD_LEVEL = 22
# decompression bombs: a manifest is a few KB; a payload at most this many times its frame
_MAX_MANIFEST = 64 << 20
_MAX_PAYLOAD = 16 << 30


def pack(manifest: dict[str, Any], payload: bytes) -> bytes:
    """The whole artifact as bytes (manifest must be JSON-serialisable)."""
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    m = cctx.compress(json.dumps(manifest, separators=(",", ":")).encode())
    p = cctx.compress(payload)
    crc = zlib.crc32(p, zlib.crc32(m))
    return _HEADER.pack(MAGIC, VERSION, len(m), len(p), crc) + m + p


def unpack(data: bytes, name: str = "artifact") -> tuple[dict[str, Any], bytes]:
    """(manifest, raw payload) from the artifact's bytes; CheckpointError on any defect."""
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise CheckpointError(
            f"{name} is not a prunelab export artifact (no PLX header; "
            "write one with: python -m prunelab export <run dir>)")
    if len(data) < HEADER_BYTES:
        raise CheckpointError(f"{name} is truncated: {len(data)} bytes, shorter than the header")
    _, version, m_len, p_len, crc = _HEADER.unpack_from(data)
    if version != VERSION:
        raise CheckpointError(
            f"{name} has artifact format version {version}; this prunelab reads version {VERSION}")
    expected = HEADER_BYTES + m_len + p_len
    if len(data) < expected:
        raise CheckpointError(f"{name} is truncated: {len(data)} of {expected} bytes")
    if len(data) > expected:
        raise CheckpointError(f"{name} is corrupt: {len(data) - expected} bytes after its end")
    body = memoryview(data)[HEADER_BYTES:]
    if zlib.crc32(body) != crc:
        raise CheckpointError(f"{name} is corrupt: checksum mismatch")
    dctx = zstandard.ZstdDecompressor()
    try:
        manifest = json.loads(dctx.decompress(body[:m_len], max_output_size=_MAX_MANIFEST))
        payload = dctx.decompress(body[m_len:], max_output_size=_MAX_PAYLOAD)
    except (zstandard.ZstdError, ValueError) as err:
        raise CheckpointError(f"{name} is corrupt: {str(err).splitlines()[0][:120]}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "prunelab-export":
        raise CheckpointError(f"{name} is corrupt: its manifest is not a prunelab export manifest")
    return manifest, payload
