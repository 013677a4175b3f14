"""Hostile and damaged ``.plx`` files: every one is a CheckpointError, before any large allocation.

The crafted files carry valid CRCs and well-formed zstd frames: only their claims are hostile
(sizes far beyond the bytes present, a network built larger than its tensors, a zstd frame that
expands 32,000-fold). Memory is measured with tracemalloc (numpy, zstd output, Python objects)
and, in a fresh process, with the resident-set high-water mark (torch too), under an
address-space limit so that a regression fails with MemoryError instead of exhausting the
machine.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import plxfiles
import pytest
import torch
import zstandard

from prunelab.errors import CheckpointError
from prunelab.export import container, encode, load
from prunelab.export.artifact import from_bytes
from prunelab.models import TextClassifier

from conftest import ROOT

MB = 1 << 20
LENET = "prunelab.models.cnn.LeNet"
TEXT = "prunelab.models.text.TextClassifier"


def zero_frame(n: int) -> bytes:
    """A valid zstd frame of ``n`` zero bytes, 4 bytes per 128 KiB (RLE blocks): 4 GiB in 131 KB."""
    parts = [b"\x28\xb5\x2f\xfd", bytes([0xC0, 0x38]), struct.pack("<Q", n)]  # FCS 8 B, 128 KiB window
    left = n
    while True:
        size = min(1 << 17, left)
        left -= size
        parts.append(((size << 3) | (1 << 1) | int(left == 0)).to_bytes(3, "little") + b"\0")
        if left == 0:
            return b"".join(parts)


def craft(manifest: dict, payload: bytes = b"", payload_frame: bytes | None = None,
          manifest_frame: bytes | None = None, version: int = 1) -> bytes:
    """An artifact with a valid header and CRC around whatever it is given (version 1: its
    manifest names each section's offset; version 2: ``payload_frame`` is the streams' frames)."""
    z = zstandard.ZstdCompressor()
    m = manifest_frame if manifest_frame is not None else z.compress(json.dumps(manifest).encode())
    p = payload_frame if payload_frame is not None else z.compress(payload)
    crc = zlib.crc32(p, zlib.crc32(m))
    return struct.pack("<8sHIII", container.MAGIC, version, len(m), len(p), crc) + m + p


def manifest(cls: str, tensors: list[dict], **kwargs) -> dict:
    return {"format": "prunelab-export", "encoding": "fp32",
            "architecture": {"class": cls, "kwargs": kwargs}, "tensors": tensors}


def sparse(name: str, shape: list[int], nnz: int, positions: str, pos: list[int],
           data: list[int], **extra) -> dict:
    return {"name": name, "shape": shape, "dtype": "float32", "kind": "sparse", "nnz": nnz,
            "positions": positions, "width": 1, "pos": pos, "values": "fp32", "data": data,
            **extra}


G = 1 << 30
#: each asks for gigabytes from at most 131 KB
HOSTILE = {
    # a 131 KB payload frame that expands to 4 GiB, and a manifest that accounts for all of it
    "payload bomb": lambda: craft(
        manifest(LENET, [{"name": "x", "shape": [G], "dtype": "float32", "kind": "raw",
                          "data": [0, 4 * G]}]),
        payload_frame=zero_frame(4 * G)),
    # the same frame behind a manifest that needs 40 bytes of it
    "payload beyond its tensors": lambda: craft(
        manifest(LENET, [{"name": "fc2.bias", "shape": [10], "dtype": "float32", "kind": "raw",
                          "data": [0, 40]}]),
        payload_frame=zero_frame(4 * G)),
    # a manifest frame that expands to 2 GiB
    "manifest bomb": lambda: craft({}, manifest_frame=zero_frame(2 * G)),
    # 4 G entries (16 GB dense) with no non-zeros: no bytes at all in the payload
    "empty sparse tensor of 16 GB": lambda: craft(
        manifest(LENET, [sparse("x", [1 << 16, 1 << 16], 0, "index", [0, 0], [0, 0])])),
    # 'all' positions: 4 G non-zeros claimed, 16 bytes of values present
    "dense positions without values": lambda: craft(
        manifest(LENET, [sparse("x", [1 << 16, 1 << 16], 1 << 32, "all", [0, 0], [0, 16])]),
        payload=bytes(16)),
    # int8 with 2 G channels and no entries
    "int8 channels without bytes": lambda: craft(
        manifest(LENET, [sparse("x", [2 * G, 0], 0, "index", [0, 0], [0, 0], values="int8",
                                lo=[0, 0], scale=[0, 0])])),
    # a 10^30-entry shape (a 64-bit product would wrap)
    "shape beyond 64 bits": lambda: craft(
        manifest(LENET, [{"name": "x", "shape": [10 ** 15, 10 ** 15], "dtype": "float32",
                          "kind": "raw", "data": [0, 0]}])),
    # the network's constructor arguments ask for a 16 GB embedding; the tensors are small
    "model bomb": lambda: craft(
        manifest(TEXT, [{"name": "fc2.bias", "shape": [1], "dtype": "float32", "kind": "raw",
                         "data": [0, 4]}], vocab_size=40_000_000),
        payload=bytes(4)),
    # the same at 800 MB: within reach of an allocator, so only a measurement can tell
    "model bomb of 800 MB": lambda: craft(
        manifest(TEXT, [{"name": "fc2.bias", "shape": [1], "dtype": "float32", "kind": "raw",
                         "data": [0, 4]}], vocab_size=2_000_000),
        payload=bytes(4)),
    # ... and with tensors that match the 16 GB network (all zero: no bytes)
    "model bomb with matching tensors": lambda: craft(
        manifest(TEXT, [sparse("embedding.weight", [40_000_002, 100], 0, "index", [0, 0], [0, 0])],
                 vocab_size=40_000_000)),
    # version 2: a values stream of 40 bytes whose 131 KB frame expands to 4 GiB
    "v2 stream bomb": lambda: craft(
        {**manifest(LENET, [{"name": "fc2.bias", "shape": [10], "dtype": "float32",
                             "kind": "raw"}]), "frames": [0, 0, len(zero_frame(4 * G))]},
        payload_frame=zero_frame(4 * G), version=2),
    # version 2: 4 G entries of 1-D float, every one non-zero, 16 bytes of values present
    "v2 dense vector without values": lambda: v2_values(
        [{"name": "x", "shape": [1 << 32], "dtype": "float32", "kind": "sparse",
          "nnz": 1 << 32, "positions": "all", "width": 0, "values": "fp32"}], bytes(16)),
}


def v2_values(tensors: list[dict], values: bytes) -> bytes:
    """A version-2 LeNet file whose values stream holds ``values`` (the other streams empty)."""
    frame = zstandard.ZstdCompressor().compress(values)
    return craft({**manifest(LENET, tensors), "frames": [0, 0, len(frame)]},
                 payload_frame=frame, version=2)


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_file_loads_nothing_and_allocates_little(tmp_path, case):
    path = tmp_path / "hostile.plx"
    path.write_bytes(HOSTILE[case]())
    assert path.stat().st_size < 140_000
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as err:
            load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * MB, f"{case}: {peak / MB:.0f} MB"
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg


CHILD = r"""
import json, resource, sys
from pathlib import Path
import torch
from prunelab.errors import CheckpointError
from prunelab.export import load

def vm_kb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize"))

# a regression fails with MemoryError here rather than exhausting the machine
limit = (vm_kb() + 1536 * 1024) * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
load(sys.argv[1])  # warm up: the imports and first allocations of a real load
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {}
for path in sys.argv[2:]:
    try:
        load(path)
        out[path] = "loaded"
    except CheckpointError:
        out[path] = "CheckpointError"
    except BaseException as err:
        out[path] = type(err).__name__
out["grew_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(json.dumps(out))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_hostile_files_do_not_grow_a_fresh_process(tmp_path):
    """All the crafted files in one fresh process: every one refused, and its resident memory
    (torch allocations included) grows by less than 100 MB over a warm-up load."""
    from prunelab.export import save

    good = tmp_path / "good.plx"
    save(TextClassifier(vocab_size=50, embed_dim=8, hidden=6), good, "fp32",
         {"vocab_size": 50, "embed_dim": 8, "hidden": 6})
    paths = []
    for i, make in enumerate(HOSTILE.values()):
        paths.append(tmp_path / f"h{i}.plx")
        paths[-1].write_bytes(make())
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(good), *map(str, paths)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    grew = out.pop("grew_kb")
    assert {Path(p).name: r for p, r in out.items()} == {p.name: "CheckpointError" for p in paths}
    assert grew < 100 * 1024, f"resident memory grew by {grew / 1024:.0f} MB"


def test_a_hostile_file_can_be_loaded_with_an_explicit_limit(tmp_path):
    """The limit is the caller's to raise: a large, all-zero tensor loads with max_bytes."""
    path = tmp_path / "big.plx"
    path.write_bytes(craft(manifest(TEXT, [sparse("embedding.weight", [20_002, 1000], 0, "index",
                                                  [0, 0], [0, 0])], vocab_size=20_000)))
    with pytest.raises(CheckpointError, match=r"80\.0 MB of tensors .* max_bytes"):
        load(path)
    with pytest.raises(CheckpointError, match="does not fit .*missing fc1.weight"):
        load(path, max_bytes=100 * MB)  # within the limit now, and then checked as any file


# ---------------------------------------------------------------------------- fuzzing

def small_artifacts(version: int = 2) -> dict[str, bytes]:
    """A tiny text network in each value encoding, with every position coding in it (and, in
    version 2, sparse biases; int8 ones in the int8 file)."""
    torch.manual_seed(0)
    net = TextClassifier(vocab_size=50, embed_dim=8, hidden=6)
    with torch.no_grad():
        net.embedding.weight.mul_(torch.rand_like(net.embedding.weight) > 0.5)  # bitmask
        net.fc1.weight.mul_(torch.rand_like(net.fc1.weight) > 0.95)  # index
        net.fc1.bias[:3] = 0  # a sparse vector
    kwargs = {"vocab_size": 50, "embed_dim": 8, "hidden": 6}  # fc2.weight: no zeros ('all')
    if version == 1:
        return {enc: plxfiles.encode_v1(net, enc, kwargs) for enc in ("fp32", "int8", "kmeans3")}
    return {enc: encode(net, enc, kwargs, biases="int8" if enc == "int8" else "fp32")
            for enc in ("fp32", "int8", "kmeans3")}


def both_versions() -> list[bytes]:
    """:func:`small_artifacts` in format version 2 (written today) and 1 (read still)."""
    return [*small_artifacts(2).values(), *small_artifacts(1).values()]


def test_truncated_or_flipped_files_are_always_a_checkpoint_error():
    for data in both_versions():
        cuts = sorted({*range(0, 40), *range(40, len(data), 5), len(data) - 1})
        flips = range(0, len(data), 3)
        for damaged in ([data[:n] for n in cuts]
                        + [data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1:] for i in flips]):
            with pytest.raises(CheckpointError, match="^m.plx"):
                from_bytes(damaged, "m.plx")


NASTY = [-1, 0, 1, 7, 2 ** 31, 2 ** 40, 2 ** 63, 2 ** 64 + 1, 10 ** 30, -(2 ** 63), 0.5,
         float("nan"), True, None, "", "x", "float32", "int64", "bool", "raw", "sparse", "all",
         "bitmask", "index", "fp32", "int8", "kmeans1", [], [0], [0, 0], [0, 10 ** 12],
         [-1, 4], [1, 2, 3], [[1]], {}, {"a": 1}]
BIG_SHAPES = [[1 << 16, 1 << 16], [1 << 40, 2], [3, 1 << 33], [52, 1 << 28], [1 << 28, 8]]


def _mutate(record: dict, payload: bytearray, rng: random.Random) -> None:
    """One random hostile edit of a decoded artifact (its manifest or payload bytes)."""
    what = rng.random()
    tensors = record.get("tensors")
    entries = [e for e in tensors if isinstance(e, dict)] if isinstance(tensors, list) else []
    kwargs = (record.get("architecture") or {}).get("kwargs") if isinstance(
        record.get("architecture"), dict) else None
    if what < 0.45 and entries:
        entry = rng.choice(entries)
        key = rng.choice([*entry, "width", "nnz", "k", "bits", "lo", "codebook"])
        if rng.random() < 0.1:
            entry.pop(key, None)
        else:
            entry[key] = rng.choice(NASTY)
    elif what < 0.6 and entries:  # a size claim far beyond the bytes present
        entry = rng.choice(entries)
        if rng.random() < 0.5:
            entry["shape"] = rng.choice(BIG_SHAPES)
        else:
            entry[rng.choice(["nnz", "k", "width"])] = rng.choice([1 << 32, 1 << 40, 10 ** 20])
    elif what < 0.75 and isinstance(kwargs, dict):
        kwargs[rng.choice([*kwargs, "extra"])] = rng.choice(NASTY)
    elif what < 0.8:
        record[rng.choice(["tensors", "architecture", "dense_bytes", "encoding",
                           "frames"])] = rng.choice(NASTY)
    elif what < 0.85 and len(entries) > 1:  # two tensors' sections swapped
        a, b = rng.sample(entries, 2)
        for key in ("data", "pos"):
            if key in a and key in b:
                a[key], b[key] = b[key], a[key]
    elif payload:
        for _ in range(rng.randint(1, 8)):
            payload[rng.randrange(len(payload))] = rng.randrange(256)


def test_manifests_and_payloads_edited_with_valid_checksums_never_crash():
    """Random edits of the decoded manifest and payload, re-packed with a valid CRC: the load
    gives a network (an edit a file may legally carry, such as a changed value) or a
    CheckpointError naming the file, never another exception."""
    rng = random.Random(0)
    outcomes = {"loaded": 0, "refused": 0}
    tracemalloc.start()
    for data in both_versions():
        record0, payload0, version = plxfiles.parts(data)
        sizes = plxfiles.stream_sizes(record0, len(data)) if version == 2 else None
        for case in range(200):
            record, payload = json.loads(json.dumps(record0)), bytearray(payload0)
            for _ in range(rng.randint(1, 3)):
                _mutate(record, payload, rng)
            frames = record.get("frames") if record.get("frames") != record0.get("frames") else None
            try:
                from_bytes(plxfiles.repack(record, bytes(payload), version, sizes, frames),
                           "edited.plx")
                outcomes["loaded"] += 1
            except CheckpointError as err:
                assert str(err).startswith("edited.plx") and "\n" not in str(err), (case, err)
                outcomes["refused"] += 1
            except Exception as err:  # pragma: no cover - the failure being tested for
                tracemalloc.stop()
                pytest.fail(f"edit #{case} raised {type(err).__name__}: {err}\n{record}")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert outcomes["loaded"] > 40 and outcomes["refused"] > 500, outcomes
    assert peak < 100 * MB, f"{peak / MB:.0f} MB"
