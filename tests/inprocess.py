"""``python -m prunelab ARGS`` run inside the test process: the same code path (sys.argv, Hydra,
the job's logging, the exit code) without paying a new interpreter's torch + Lightning import
(about 4 s on 2 cores). Used where the process boundary is not what a test is about; the tests
that need a real process (SIGKILL, launchers, the console script, a fresh interpreter's first
lines) keep ``subprocess``.

Everything the run changes in the process is put back afterwards: the working directory,
``sys.argv``, Hydra's global state, the logging handlers and levels, warning filters, torch's
thread count.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path


def _logger_state() -> dict[str, tuple]:
    names = ["", *logging.root.manager.loggerDict]
    state = {}
    for name in names:
        lg = logging.getLogger(name)
        state[name] = (lg.level, list(lg.handlers), lg.propagate, lg.disabled, list(lg.filters))
    return state


def _restore_loggers(state: dict[str, tuple]) -> None:
    for name, (level, handlers, propagate, disabled, filters) in state.items():
        lg = logging.getLogger(name)
        for h in lg.handlers:
            if h not in handlers:
                h.close()
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate, lg.disabled = propagate, disabled
        lg.filters[:] = filters


def _clear_hydra() -> None:
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


def prunelab_in_process(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run the command line's ``main`` with ``args`` in ``cwd``; stdout and stderr captured."""
    import torch

    from prunelab.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    old_cwd, old_argv, threads = os.getcwd(), sys.argv, torch.get_num_threads()
    loggers = _logger_state()
    code: int | str | None = 0
    _clear_hydra()
    try:
        os.chdir(cwd)
        sys.argv = ["prunelab", *argv]
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exit_:
                code = exit_.code
    finally:
        logging.captureWarnings(False)
        _restore_loggers(loggers)
        _clear_hydra()
        torch.set_num_threads(threads)
        sys.argv = old_argv
        os.chdir(old_cwd)
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, exit status 1
        err.write(f"{code}\n")
        code = 1
    return subprocess.CompletedProcess(["prunelab", *argv], code, out.getvalue(), err.getvalue())
