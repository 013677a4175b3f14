"""Every file prunelab writes goes through ``prunelab.io``: whole or not at all, durable.

A writer killed mid-write leaves the old file (never a part of the new one); a failure leaves
no temporary file; each writer fsyncs the file before the rename and the folder after it; a
full disk or a file-size limit is one OutputError line. No other module renames files or
opens one for writing, so there is one implementation to get right.
"""

from __future__ import annotations

import ast
import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from prunelab.io import atomic_save, atomic_write

from conftest import ROOT

SRC = ROOT / "src" / "prunelab"
ENV = {**os.environ, "PYTHONPATH": str(SRC.parent), "PYTHONUNBUFFERED": "1"}

# A writer that writes half of a large file, says so on stdout, then blocks on stdin until
# the parent kills it (or closes stdin: then it writes the rest).
HALF_THEN_WAIT = """
import sys
from prunelab.io import atomic_save
half = 8 << 20
def write(f):
    f.write(b"n" * half)
    f.flush()
    print("half", flush=True)
    sys.stdin.read()
    f.write(b"n" * half)
atomic_save(sys.argv[1], write)
print("done", flush=True)
"""


def _writer(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HALF_THEN_WAIT, str(path)], env=ENV,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "half\n"
    return proc


def _temps(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_writer_killed_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "results.bin"
    atomic_write(path, b"old")
    proc = _writer(path)
    (partial,) = _temps(tmp_path)  # the kill really comes mid-write: half of the new file
    assert partial.stat().st_size == 8 << 20
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == b"old"


def test_a_writer_let_finish_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "results.bin"
    atomic_write(path, b"old")
    proc = _writer(path)
    assert path.read_bytes() == b"old"  # a reader meanwhile sees the old file
    out, _ = proc.communicate("", timeout=30)
    assert proc.returncode == 0 and out == "done\n"
    assert path.read_bytes() == b"n" * (16 << 20)
    assert _temps(tmp_path) == []


@pytest.mark.parametrize("error", [ValueError("bad value"), KeyboardInterrupt()])
def test_a_failed_writer_leaves_no_temp_file_and_the_old_file(tmp_path: Path, error) -> None:
    path = tmp_path / "out.json"
    atomic_write(path, "old")

    def write(f):
        f.write(b"half of it")
        raise error

    with pytest.raises(type(error)):
        atomic_save(path, write)
    assert path.read_text() == "old" and sorted(tmp_path.iterdir()) == [path]


def test_a_cache_that_cannot_be_saved_leaves_no_temp_file(tmp_path: Path) -> None:
    """torch.save fails on an object it cannot pickle after it started writing."""
    from prunelab.data.common import load_or_build

    with pytest.raises(Exception, match="pickle|lambda"):
        load_or_build(tmp_path / "cache.pt", lambda: {"x": torch.zeros(3), "f": lambda: 0}, "t")
    assert list(tmp_path.iterdir()) == []


FILE_SIZE_LIMIT = """
import resource, signal, sys
import torch
from prunelab.errors import OutputError
from prunelab.io import atomic_save, atomic_write
path = sys.argv[1]
atomic_write(path, b"old")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
for name, write in [("bytes", lambda: atomic_write(path, b"x" * (1 << 20))),
                    ("torch.save", lambda: atomic_save(path, lambda f: torch.save(torch.zeros(1 << 18), f)))]:
    try:
        write()
    except OutputError as err:
        print(name, "|", err)
"""


def test_a_write_the_file_system_refuses_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    """A real refusal by the kernel (the file-size limit, as a full disk would): one line with the
    path and errno, also when torch.save reports it as its own RuntimeError."""
    path = tmp_path / "last.ckpt"
    proc = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT, str(path)], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert [ln.split(" | ")[0] for ln in lines] == ["bytes", "torch.save"], proc.stdout
    for line in lines:
        assert f"cannot write {path}: [Errno 27 EFBIG]" in line, line
    assert path.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [path]


# ------------------------------------------------------------------ every writer is durable


def _lenet_artifact(path: Path) -> None:
    from prunelab.export import artifact
    from prunelab.models import LeNet

    artifact.save(LeNet(), path, "int8")


def _cache(path: Path) -> None:
    from prunelab.data.common import load_or_build

    load_or_build(path, lambda: {"x": torch.zeros(3)}, "test data", use_cache=False)


def _tokenizer(path: Path) -> None:
    from prunelab.data.tokens import encode_parts

    encode_parts({"train": ["a b c", "a b"]}, 10, 4, path)


def _checkpoint(path: Path) -> None:
    from prunelab.run import AtomicCheckpointIO

    AtomicCheckpointIO().save_checkpoint({"epoch": 0, "state_dict": {}}, path)


def _final_model(path: Path) -> None:
    from prunelab.run import save_final_model

    save_final_model(nn.Linear(2, 2), path.parent)  # type: ignore[arg-type]


def _metrics_csv(path: Path) -> None:
    from prunelab.curves import keep_rows_before

    path.write_text("epoch,loss\n0,1.0\n1,0.5\n")
    keep_rows_before(path, 1)


def _search_json(path: Path) -> None:
    from prunelab.search import _write

    _write(path, {"methods": {}})


WRITERS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "export artifact": ("model.plx", _lenet_artifact),
    "data cache": ("cache.pt", _cache),
    "tokenizer": ("tok.json", _tokenizer),
    "checkpoint": ("last.ckpt", _checkpoint),
    "final model": ("final_model.pt", _final_model),
    "metrics.csv rewrite": ("metrics.csv", _metrics_csv),
    "search.json": ("search.json", _search_json),
}


@pytest.mark.parametrize("what", sorted(WRITERS))
def test_every_writer_syncs_the_file_before_the_rename_and_the_folder_after(
        what: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name, write = WRITERS[what]
    path = tmp_path / name
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst, **kwargs) -> None:
        events.append(f"replace -> {Path(dst).name}")
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write(path)
    assert path.is_file()
    mine = events[events.index(f"replace -> {name}") - 1: events.index(f"replace -> {name}") + 2]
    assert mine == ["fsync file", f"replace -> {name}", "fsync folder"], events
    assert _temps(tmp_path) == []


# ------------------------------------------------------------------ one implementation

OTHER_WRITES = ("write_text", "write_bytes", "rename", "renames", "move")
WRITE_MODES = ("w", "x")


def _file_writes(tree: ast.AST) -> list[str]:
    """Calls that rename files or open one for writing: ``os.replace``/``os.rename``,
    ``Path.replace(target)``/``.rename``, ``shutil.move``, ``.write_text``/``.write_bytes``,
    ``open(..., "w"/"x"...)``. (``str.replace`` takes two arguments, ``Path.replace`` one.)"""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
        mode = node.args[1] if len(node.args) > 1 else next(
            (k.value for k in node.keywords if k.arg == "mode"), None)
        if ((name == "replace" and (owner == "os" or (len(node.args) == 1 and not node.keywords)))
                or name in OTHER_WRITES
                or (name == "open" and isinstance(mode, ast.Constant) and isinstance(mode.value, str)
                    and mode.value[:1] in WRITE_MODES)):
            found.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_only_prunelab_io_renames_or_opens_files_for_writing() -> None:
    """Appends (``open(path, "a")``: progress.jsonl) are the one other way to write a file."""
    found = {}
    for f in sorted(SRC.rglob("*.py")):
        if f == SRC / "io.py":
            continue
        hits = _file_writes(ast.parse(f.read_text()))
        if hits:
            found[str(f.relative_to(SRC))] = hits
    assert found == {}, f"write through prunelab.io (atomic_write / atomic_save): {found}"


def test_the_scan_sees_each_way_of_writing() -> None:
    code = textwrap.dedent("""
        os.replace(a, b); os.rename(a, b); tmp.replace(path); p.rename(q); shutil.move(a, b)
        p.write_text("x"); p.write_bytes(b""); open(p, "w"); open(p, mode="wb"); open(p, "xb")
        s.replace("a", "b"); open(p); open(p, "a"); open(p, "rb"); d.replace(**kw)
    """)
    assert len(_file_writes(ast.parse(code))) == 10
