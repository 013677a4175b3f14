"""Checking an artifact's manifest before anything it declares is allocated.

A manifest is untrusted JSON that says how large everything is: each tensor's shape, its
non-zero count and the payload sections that hold it. :func:`check` makes those claims agree
with each other (:func:`prunelab.export.codecs.layout`: every section holds exactly the bytes its
tensor needs), makes the sections tile the payload (every payload byte belongs to one tensor, so
the payload's size follows from the tensors), and bounds the decoded tensors by a limit derived
from the file's size (:func:`limit_for`). Only then is the payload decompressed and decoded.

Version 1 names every section's ``[offset, length]``, which must tile the payload; version 2
names none: the sections follow each other stream by stream (positions, codes, values), each
stream in the entries' order, each entry's in its layout's order, so they tile by construction,
and ``frames`` gives each stream's compressed length.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from prunelab.errors import CheckpointError
from prunelab.export import codecs
from prunelab.export.container import STREAMS

#: decoded tensors may take this many times the file's bytes ...
MAX_RATIO = 4096
#: ... or this many bytes, whichever is larger. A real export stays far below both (the
#: 99.99 %-sparse LeNet: about 600 times its file, 1.7 MB); a file beyond them must be loaded
#: with an explicit ``max_bytes``.
MIN_LIMIT = 64 << 20


def limit_for(file_bytes: int) -> int:
    """Bytes the decoded tensors (and the decompressed payload) of a ``file_bytes`` file may
    take without the caller raising the limit."""
    return max(MIN_LIMIT, MAX_RATIO * file_bytes)


@dataclass(frozen=True)
class Plan:
    """A checked manifest: each tensor's entry and layout, the payload's size, the total bytes;
    version 2: each stream's bytes and compressed frame length."""

    entries: list[tuple[str, dict[str, Any], codecs.Layout]]
    payload_bytes: int
    dense_bytes: int
    stream_bytes: list[int] | None = None
    frames: list[int] | None = None


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def check(manifest: dict[str, Any], name: str, file_bytes: int,
          max_bytes: int | None = None, version: int = 1) -> Plan:
    """The :class:`Plan` of the manifest of a format-``version`` file; CheckpointError (one
    line, naming ``name``) when a claim is inconsistent or the tensors would take more than
    ``max_bytes`` (default :func:`limit_for` the file's size)."""
    tensors = manifest.get("tensors")
    if not isinstance(tensors, list):
        raise CheckpointError(f"{name} is corrupt: its manifest has no list of tensors")
    entries = []
    names: set[str] = set()
    for i, entry in enumerate(tensors):
        label = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(label, str):
            raise CheckpointError(f"{name} is corrupt: tensor #{i} has no name")
        if label in names:
            raise CheckpointError(f"{name} is corrupt: tensor {label[:80]!r} appears twice")
        names.add(label)
        try:
            lay = codecs.layout(entry, version)
        except ValueError as err:
            raise CheckpointError(f"{name} is corrupt: tensor {label[:80]!r}: {err}") from None
        entries.append((label, entry, lay))
    dense = sum(lay.dense_bytes for _, _, lay in entries)
    declared = manifest.get("dense_bytes", dense)
    if declared != dense:
        raise CheckpointError(f"{name} is corrupt: its manifest declares {declared!r} dense "
                              f"bytes; its tensors take {dense:,}")
    streams = frames = None
    if version == 1:
        payload = _tile([s for _, _, lay in entries for s in lay.sections.values()], name)
    else:
        entries, streams = _lay_out(entries)
        frames = _frames(manifest.get("frames"), streams, name)
        payload = sum(streams)
    limit = limit_for(file_bytes) if max_bytes is None else max_bytes
    if max(dense, payload) > limit:
        hint = ("if you trust the file, load it with prunelab.export.load(path, max_bytes=N)"
                if max_bytes is None else f"above max_bytes={max_bytes:,}")
        raise CheckpointError(
            f"{name} declares {_size(dense)} of tensors ({_size(payload)} decompressed) in a "
            f"{_size(file_bytes)} file, more than the {_size(limit)} allowed; refusing to "
            f"allocate it ({hint})")
    return Plan(entries, payload, dense, streams, frames)


def _lay_out(entries: list[tuple[str, dict[str, Any], codecs.Layout]]
             ) -> tuple[list[tuple[str, dict[str, Any], codecs.Layout]], list[int]]:
    """Version 2: each section's (offset, length) in the joined streams, and each stream's
    bytes. The writer (:func:`prunelab.export.artifact.encode`) appends in this same order."""
    streams = [0] * len(STREAMS)
    for _, entry, lay in entries:
        for key, length in lay.lengths.items():
            streams[codecs.stream_of(key, entry)] += length
    start = [sum(streams[:i]) for i in range(len(STREAMS))]
    placed = []
    for label, entry, lay in entries:
        sections = {}
        for key, length in lay.lengths.items():
            s = codecs.stream_of(key, entry)
            sections[key] = (start[s], length)
            start[s] += length
        placed.append((label, entry, replace(lay, sections=sections)))
    return placed, streams


def _frames(frames: Any, streams: list[int], name: str) -> list[int]:
    """The compressed length of each stream's frame, as the manifest's ``frames`` gives them:
    whole numbers, 0 exactly for an empty stream."""
    if (not isinstance(frames, list) or len(frames) != len(STREAMS)
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                       for n in frames)):
        raise CheckpointError(f"{name} is corrupt: its manifest's frames are "
                              f"{str(frames)[:60]}, not {len(STREAMS)} lengths")
    for what, length, size in zip(STREAMS, frames, streams, strict=True):
        if (length == 0) != (size == 0):
            raise CheckpointError(f"{name} is corrupt: its {what} stream has a {length:,}-byte "
                                  f"frame for {size:,} bytes")
    return frames


def _tile(sections: list[tuple[int, int]], name: str) -> int:
    """The payload's size: the non-empty sections, by offset, must follow each other from 0
    without gap or overlap; an empty one may sit anywhere up to the end."""
    end = 0
    for off, length in sorted(s for s in sections if s[1]):
        if off != end:
            raise CheckpointError(f"{name} is corrupt: a payload section starts at byte {off:,}, "
                                  f"the previous one ends at {end:,}")
        end += length
    if any(off > end for off, length in sections if not length):
        raise CheckpointError(f"{name} is corrupt: an empty section lies after the payload")
    return end
