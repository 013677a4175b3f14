"""A run folder belongs to the configuration that made it: a launch never rewrites it with another.

A folder is prunelab's when it holds ``.hydra/config.yaml`` (:func:`prunelab.paths.run_config`):
the configuration that produced the weights and numbers beside it, which ``evaluate``,
``compact``, ``export`` and ``report`` read. A launch may use a folder that is new or empty, or
one whose saved configuration gives the same run as its own (they may differ in
:data:`prunelab.paths.NO_EFFECT_KEYS` only): that is how a killed run resumes and a finished
one says "done already". Any other launch is refused (:class:`RunFolderError`, exit status 2)
before anything is written into the folder. The comparison is the one a resumed checkpoint
gets (:func:`prunelab.run.result_config`, :func:`prunelab.run.differences`).

prunelab writes ``.hydra/`` itself, after this check (``hydra.output_subdir`` is null in
``conf/config.yaml``): Hydra's job wrapper would write it before any prunelab code runs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, read_write

from prunelab.errors import RunFolderError, one_line
from prunelab.io import atomic_write, write_error
from prunelab.paths import HYDRA_CONFIG, HYDRA_DIR, HYDRA_OVERRIDES, HYDRA_SETTINGS, run_config
from prunelab.runlock import LOCK_FILE

SHOWN_DIFFERENCES = 4  # keys named in the refusal; the rest are counted


def claim(run_dir: str | Path, cfg: DictConfig, hydra_cfg: DictConfig | None,
          overrides: list[str], knob: str = "hydra.run.dir") -> None:
    """Check that ``run_dir`` may hold the run of ``cfg`` (:func:`check`), then write its
    ``.hydra/`` files: the config, Hydra's settings and the command-line overrides."""
    check(run_dir, cfg, knob)
    save_hydra_files(run_dir, cfg, hydra_cfg, overrides)


def check(run_dir: str | Path, cfg: DictConfig, knob: str = "hydra.run.dir") -> None:
    """Refuse ``run_dir`` if it holds another configuration's run, or files prunelab did not
    write; a new or empty folder, or the same run's folder, passes. ``knob`` is the setting
    the message tells the user to change."""
    # lazy: torch and Lightning; the command line imports this module before it composes
    from prunelab.run import differences, result_config

    folder = Path(run_dir)
    saved_path = run_config(folder)
    if not saved_path.is_file():
        others = sorted(p.name for p in folder.iterdir() if p.name != LOCK_FILE) \
            if folder.is_dir() else []
        if others:
            shown = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
            raise RunFolderError(
                f"{folder} is not empty ({shown}) and is not a prunelab run folder (no "
                f"{HYDRA_DIR}/{HYDRA_CONFIG}): nothing in it is overwritten; choose a new or "
                f"empty folder with {knob}="
            )
        return
    try:
        saved = result_config(OmegaConf.load(saved_path))
    except Exception as err:  # not YAML, not a mapping, an interpolation that fails now
        raise RunFolderError(
            f"cannot read {saved_path} ({type(err).__name__}: {one_line(err)}), so the run in "
            f"{folder} cannot be compared with this one: choose another folder with {knob}="
        ) from None
    diff = differences(saved, result_config(cfg))
    if diff:
        shown = ", ".join(f"{key} {_short(old)} → {_short(new)}"
                          for key, old, new in diff[:SHOWN_DIFFERENCES])
        more = len(diff) - SHOWN_DIFFERENCES
        if more > 0:
            shown += f" and {more} more"
        raise RunFolderError(
            f"{folder} holds a run of another configuration ({shown}): it is left as it is; "
            f"choose another folder with {knob}=, or delete that one to run there again"
        )


def save_hydra_files(run_dir: str | Path, cfg: DictConfig, hydra_cfg: DictConfig | None,
                     overrides: list[str]) -> None:
    """``.hydra/{config,hydra,overrides}.yaml`` as Hydra writes them, each atomically; the
    config last, as it is what the folder is recognised by."""
    out = Path(run_dir) / HYDRA_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(err, out) from None
    if hydra_cfg is not None:
        hydra_cfg = copy.deepcopy(hydra_cfg)
        with read_write(hydra_cfg), read_write(hydra_cfg.hydra):
            hydra_cfg.hydra.output_subdir = HYDRA_DIR  # where the files are, as Hydra would say
        atomic_write(out / HYDRA_SETTINGS, OmegaConf.to_yaml(hydra_cfg))
    atomic_write(out / HYDRA_OVERRIDES, OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    atomic_write(out / HYDRA_CONFIG, OmegaConf.to_yaml(cfg))


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"
