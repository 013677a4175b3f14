"""Taking ``.plx`` artifacts apart and putting them back, for tests that edit or downgrade them.

``parts`` gives a file's manifest and its whole decompressed payload (all streams joined);
``repack`` writes them again in the same format version with a valid checksum; ``encode_v1``
writes a network as prunelab did in format version 1 (one frame, every section's offset in the
manifest, biases raw).
"""

from __future__ import annotations

import json
import struct
import zlib

import torch
import zstandard

from prunelab.export import artifact, codecs, container, manifest


def parts(data: bytes) -> tuple[dict, bytes, int]:
    """(manifest, decompressed payload, format version) of an artifact's bytes."""
    version = struct.unpack_from("<H", data, 8)[0]
    m_len = struct.unpack_from("<I", data, 10)[0]
    body = data[container.HEADER_BYTES:]
    record = json.loads(zstandard.ZstdDecompressor().decompress(body[:m_len]))
    region, payload, at = body[m_len:], b"", 0
    for length in record.get("frames", [len(region)]):
        if length:
            payload += zstandard.ZstdDecompressor().decompress(region[at: at + length])
        at += length
    return record, payload, version


def stream_sizes(record: dict, size: int) -> list[int]:
    """The bytes of each stream of a version-2 ``record`` (its checked plan)."""
    return manifest.check(record, "artifact", size, version=2).stream_bytes


def repack(record: dict, payload: bytes, version: int, sizes: list[int] | None = None,
           frames: object = None) -> bytes:
    """An artifact of ``version`` around ``record`` and ``payload`` with a valid checksum.
    Version 2 splits the payload into streams of ``sizes`` bytes (default: what ``record``
    lays out), one frame each, and records their lengths as ``frames`` (or ``frames`` as
    given, true or not)."""
    if version == 1:
        return container.pack(record, payload)
    sizes = sizes if sizes is not None else stream_sizes(record, len(payload) + 1)
    cctx = zstandard.ZstdCompressor()
    compressed, at = [], 0
    for n in sizes:
        compressed.append(cctx.compress(payload[at: at + n]) if n else b"")
        at += n
    record = {**record, "frames": [len(f) for f in compressed] if frames is None else frames}
    return craft(cctx.compress(json.dumps(record).encode()), b"".join(compressed), 2)


def craft(manifest_frame: bytes, payload_region: bytes, version: int) -> bytes:
    """An artifact of ``version`` around raw frames, with a valid header and checksum."""
    crc = zlib.crc32(payload_region, zlib.crc32(manifest_frame))
    return (struct.pack("<8sHIII", container.MAGIC, version, len(manifest_frame),
                        len(payload_region), crc) + manifest_frame + payload_region)


def encode_v1(net: torch.nn.Module, encoding: str, kwargs: dict | None = None) -> bytes:
    """``net`` as prunelab wrote it in format version 1: weights as positions and values,
    every other tensor raw, the sections in one frame, each one's ``[offset, length]`` in its
    manifest entry."""
    tensors, payload = [], b""
    for name, t in net.state_dict().items():
        entry, sections = codecs.encode_tensor(name, t, encoding)  # no vectors: version 1
        for key in codecs.layout(entry, 2).lengths:
            entry[key] = [len(payload), len(sections[key])]
            payload += sections[key]
        tensors.append(entry)
    record = {"format": "prunelab-export", "encoding": encoding,
              "architecture": {"class": artifact.class_path(net), "kwargs": kwargs or {}},
              "dense_bytes": artifact.dense_bytes(net.state_dict()), "tensors": tensors,
              "metadata": {}}
    return container.pack(record, payload)
