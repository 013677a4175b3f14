"""One process at a time in a run folder: a lock file, held while a run works there.

Two launches of the same run (a relaunch while the first still runs, two sweeps over the same
folder) would interleave checkpoints and logs. The lock is an ``fcntl.flock`` on
``<run dir>/.prunelab.lock``: the kernel drops it when its process dies, even by SIGKILL, so a
lock left by a dead process is simply taken over. The file holds the holder's PID and host for
the message the second launch prints. Where the file system has no ``flock`` (some network
mounts), the PID is checked instead: a lock of a PID that no longer runs on this host is stale.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from prunelab.errors import RunInProgressError
from prunelab.io import write_error

LOCK_FILE = ".prunelab.lock"


def is_rank_zero() -> bool:
    """This process is a run's first (or only) one. Other DDP ranks re-run the same command in
    the same folder and work under rank 0's lock, so they neither take nor check it."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """``with RunLock(run_dir):`` — raises :class:`RunInProgressError` if a live process holds it."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None
        #: the previous holder's record when a stale lock was taken over
        self.taken_over: dict | None = None

    def _read(self, fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except (OSError, ValueError):
            return {}

    def _in_progress(self, holder: dict) -> RunInProgressError:
        return RunInProgressError(
            f"{self.path.parent} is in progress in another process (PID {holder.get('pid', '?')} "
            f"on {holder.get('host', '?')}, since {holder.get('since', '?')}); wait for it to "
            f"finish, or stop that process (its lock {self.path} is released when it ends)"
        )

    def check(self) -> None:
        """Raise :class:`RunInProgressError` if a live process holds the lock; take nothing.

        Lets an entry point refuse before it writes anything into the folder; the real lock is
        taken by :meth:`acquire` when the run starts.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return  # no lock file: nobody holds it
        try:
            holder = self._read(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._in_progress(holder) from None
            except OSError:
                return  # no flock here: acquire() judges by the PID
        finally:
            os.close(fd)

    def acquire(self) -> RunLock:
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise write_error(err, self.path) from None
            holder = self._read(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._in_progress(holder) from None
            except OSError as err:  # no flock on this file system: judge by the recorded PID
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise write_error(err, self.path) from None
                if (holder.get("host") == me["host"] and holder.get("pid") != me["pid"]
                        and _pid_alive(int(holder.get("pid", 0)))):
                    os.close(fd)
                    raise self._in_progress(holder) from None
            try:  # the holder may have removed the file between our open and flock: retry
                if os.stat(self.path).st_ino != os.fstat(fd).st_ino:
                    os.close(fd)
                    continue
            except FileNotFoundError:
                os.close(fd)
                continue
            break
        if holder.get("pid"):
            self.taken_over = holder
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        except OSError as err:
            os.close(fd)
            raise write_error(err, self.path) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still holding it, so no one locks a file being removed
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
