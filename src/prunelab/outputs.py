"""Where a run writes: names that stay inside ``outputs/``, and folders checked before any job
starts (a read-only folder or a full disk is one line, :func:`prunelab.io.write_error`).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from prunelab.errors import OutputError, RunInProgressError
from prunelab.io import write_error
from prunelab.runlock import RunLock, is_rank_zero


def check_name(name: Any) -> str:
    """``name=`` becomes a folder under ``outputs/sweeps/``: it must not lead out of it."""
    text = str(name)
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if (not parts or not text.strip() or text.startswith(("/", "\\", "~")) or "\x00" in text
            or any(p in ("..", ".") for p in parts) or (len(text) > 1 and text[1] == ":")):
        raise OutputError(
            f"name={text!r} would place the sweep outside outputs/sweeps/: give a relative folder "
            "name without '..', '.', a leading '/' or '~' (to write elsewhere, set "
            "hydra.sweep.dir explicitly)"
        )
    return text


def check_writable(folder: Path) -> None:
    """Create ``folder`` and write a probe file in it, so a read-only or missing volume is one
    clear line before any work (and before Hydra writes its own files there)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".prunelab-probe-"):
            pass
    except OSError as err:
        raise write_error(err, err.filename or folder) from None


class Preflight(Callback):
    """Hydra callback: checks the run or sweep folder before Hydra creates it or any job runs.

    Registered in ``conf/config.yaml`` under ``hydra.callbacks``. An error is one line on stderr
    and exit status 2 (Hydra would print a stack trace for an exception raised here).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "run", [])
        # a second launch of a running run: refuse before Hydra rewrites its .hydra/ files
        if not is_rank_zero():
            return
        try:
            RunLock(Path(str(config.hydra.run.dir))).check()
        except RunInProgressError as err:
            print(f"prunelab: error: {err}", file=sys.stderr)
            sys.exit(2)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "sweep", list(config.hydra.overrides.task))

    @staticmethod
    def _check(config: DictConfig, mode: str, overrides: list[str]) -> None:
        try:
            for name in [config.get("name", "default"), *_swept_names(overrides)]:
                check_name(name)
            # resolved only now: the sweep folder's resolver refuses a bad name with a traceback
            check_writable(Path(str(config.hydra[mode].dir)))
        except OutputError as err:
            print(f"prunelab: error: {err}", file=sys.stderr)
            sys.exit(2)


def _swept_names(overrides: list[str]) -> list[str]:
    """Every value a ``name=a,b`` sweep override would give ``name`` (each job's sweep folder)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    names = []
    for o in OverridesParser.create().parse_overrides([o for o in overrides if "name" in o]):
        if o.get_key_element().lstrip("+~") == "name":
            names += list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
    return names

