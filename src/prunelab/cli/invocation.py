"""The commands prunelab prints for you to type next, written the way this process was started.

A printed command must run as printed, pasted into the same shell in the same folder. So it
repeats what the first command needed: the environment variables that change what prunelab
finds (:data:`ENV_KEYS`, e.g. ``PYTHONPATH=... prunelab ...`` for a model of your own), the
program as you typed it (``prunelab``, ``python -m prunelab``, or a path to either when the
shell's ``PATH`` would find another one), the training app's config source (``--config-dir``)
and Hydra settings (``hydra.run.dir=...``), and, for the tools that rebuild a run's model,
``--allow-target`` for the run's own classes (:func:`allow_target_args`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prunelab import confsource
from prunelab.paths import run_config

PATH_ENV = "PYTHONPATH"  # where your own modules (and prunelab itself, from a checkout) are
DATA_ENV = "PRUNELAB_DATA"  # the default data_dir (conf/config.yaml)
#: environment variables that change what a prunelab command imports or reads
ENV_KEYS: tuple[str, ...] = (PATH_ENV, DATA_ENV)
PACKAGE = "prunelab"


def _below_cwd(path: str) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute
    (symbolic links kept: a virtual environment's ``python`` is one)."""
    path = os.path.abspath(path)
    cwd = os.getcwd()
    return os.path.relpath(path, cwd) if path.startswith(cwd + os.sep) else path


def _as_typed(path: str, names: Sequence[str]) -> str:
    """The bare command name when ``PATH`` finds this very file under it, else its path."""
    if os.sep not in path:
        return path
    for name in names:
        found = shutil.which(name)
        if found and os.path.abspath(found) == os.path.abspath(path):
            return name
    return _below_cwd(path)


def program(argv0: str | None = None, executable: str | None = None) -> tuple[str, ...]:
    """How prunelab was started: its console script (``prunelab``), else ``python -m prunelab``
    with the interpreter that runs now."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    if Path(argv0).stem == PACKAGE:  # the console script (prunelab, prunelab.exe)
        return (_as_typed(argv0, [PACKAGE]),)
    python = _as_typed(executable or sys.executable, ["python", "python3"])
    return (python, "-m", PACKAGE)


def env_assignments(keys: Sequence[str] = ENV_KEYS,
                    environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """``KEY=value`` for each of ``keys`` that is set (quoted for the shell)."""
    environ = os.environ if environ is None else environ
    return tuple(f"{k}={shlex.quote(environ[k])}" for k in keys if environ.get(k))


def app_args() -> tuple[str, ...]:
    """The training app's own arguments of this Hydra job: ``--config-dir``, ``--config-path``,
    ``--config-name`` when given, and Hydra overrides (``hydra.run.dir=...``); none outside a job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ()
    hc = HydraConfig.get()
    out: list[str] = []
    for source in hc.runtime.config_sources:
        if source.schema != "file":
            continue
        if source.provider == "command-line":
            out += ["--config-dir", _below_cwd(source.path)]
        elif source.provider == "main" and source.path != confsource.config_path():
            out += ["--config-path", _below_cwd(source.path)]
    if hc.job.config_name not in (None, "config"):
        out += ["--config-name", str(hc.job.config_name)]
    out += [str(o) for o in hc.overrides.hydra if not str(o).startswith("hydra.mode=")]
    return tuple(out)


@dataclass(frozen=True)
class Invocation:
    """How this process was started, to write commands that run the same way."""

    program: tuple[str, ...]
    env: tuple[str, ...] = ()  # KEY=value assignments before the program
    app: tuple[str, ...] = ()  # the training app's flags and Hydra overrides

    @classmethod
    def current(cls, env_keys: Sequence[str] = ENV_KEYS) -> Invocation:
        """This process's invocation; ``env_keys``: the variables its commands depend on."""
        return cls(program(), env_assignments(env_keys), app_args())

    def command(self, *words: str) -> str:
        """``[KEY=value ...] <program> words...``, quoted for a POSIX shell."""
        quoted = [shlex.quote(w) for w in (*self.program, *words)]
        return " ".join([*self.env, *quoted])

    def train(self, overrides: Iterable[str]) -> str:
        """The training command with the same config source and Hydra settings."""
        return self.command(*self.app, *overrides)


def allow_target_args(run_dir: str | Path) -> list[str]:
    """``--allow-target PREFIX`` for each class of the run's saved config that is not on the
    built-in allow-list (:func:`prunelab.loading.foreign_targets`); none when it has no config."""
    from omegaconf import OmegaConf

    # lazy: prunelab.loading imports torch, which --help and a sweep's set-up do without
    from prunelab.loading import foreign_targets

    path = run_config(Path(run_dir))
    try:
        cfg = OmegaConf.load(path)
    except Exception:  # no config (yet): nothing to allow
        return []
    return [arg for prefix in foreign_targets(cfg) for arg in ("--allow-target", prefix)]
