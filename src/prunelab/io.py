"""The one way prunelab writes a file: whole, or not at all, and still there after a power cut.

Every file prunelab writes for a result, a checkpoint, a cache, an export or a report goes
through :func:`atomic_save` (a writer callback: ``torch.save``, ``savefig`` ...) or
:func:`atomic_write` (bytes or text): the content goes to a temporary file in the same folder
(``.<name>.<random>.tmp``), which is flushed and ``fsync``-ed, renamed over ``path`` with
``os.replace`` and the folder ``fsync``-ed, so that a reader, a kill or a power cut finds the old
file or the new one, never a part. Several processes may write the same path at once (DDP ranks,
sweep jobs building one cache): each has its own temporary file and the last rename wins.

A failure removes the temporary file and leaves ``path`` as it was. An error of the file system
(full disk, read-only folder) is one :class:`~prunelab.errors.OutputError` line naming the path
and the errno; anything else the writer raises propagates unchanged.

Not written this way, by design: append-only logs (``progress.jsonl``, log files, the rows
Lightning's CSV logger appends, TensorBoard's events), where a cut loses at most the last
record, and the run folder's lock file, whose identity is the lock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from prunelab.errors import OutputError

TMP_SUFFIX = ".tmp"


def write_error(err: OSError, path: Any = None) -> OutputError:
    """One line for a failed write: the path, the errno and what to do."""
    where = path if path is not None else err.filename
    code = errno.errorcode.get(err.errno or 0, str(err.errno))
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some space or choose another output folder"
    elif err.errno == errno.EFBIG:
        hint = "the file is larger than the file system or the file-size limit (ulimit -f) allows"
    else:
        hint = "choose a writable output folder (hydra.run.dir= / hydra.sweep.dir=)"
    return OutputError(f"cannot write {where}: [Errno {err.errno} {code}] {err.strerror or err}; {hint}")


def temp_name(path: Path) -> Path:
    """A fresh temporary name beside ``path``: hidden, unique per call, ending in ``.tmp``
    (so no reader's pattern for the real file, ``*.ckpt`` say, matches it)."""
    return path.with_name(f".{path.name[:200]}.{secrets.token_hex(4)}{TMP_SUFFIX}")


class _Recorder:
    """The temporary file as the writer sees it: remembers the first OSError of a write, which
    some writers report as another exception (``torch.save`` raises RuntimeError "unexpected
    pos" on a full disk)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def atomic_save(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> None:
    """Create or replace ``path`` with what ``write(file)`` writes into a binary file object.

    The folder is created if missing. On any failure ``path`` is unchanged and no temporary
    file remains; OSErrors of the file system become one :class:`OutputError` line.
    """
    path = Path(path)
    tmp, own = None, None  # own: the writer's own error (a network error while streaming ...)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while tmp is None:
            tmp = temp_name(path)
            try:
                f = open(tmp, "xb")  # noqa: SIM115 (closed below, before the rename)
            except FileExistsError:
                tmp = None
        with f:
            sink = _Recorder(f)
            try:
                write(sink)  # type: ignore[arg-type]  # a file object, to every writer
            except Exception as err:
                if sink.error is not None:
                    raise sink.error from None
                own = err
                raise
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(path.parent)
    except OSError as err:
        if err is own:
            raise
        raise write_error(err, path) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Create or replace ``path`` with ``data`` (text is written as UTF-8), atomically."""
    payload = data.encode() if isinstance(data, str) else data
    atomic_save(path, lambda f: f.write(payload))


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """``payload`` as indented JSON (numbers of other types, numpy's or torch's, as floats)."""
    atomic_write(path, json.dumps(payload, indent=2, default=float))


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; a file system that cannot sync a folder is left be."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)
