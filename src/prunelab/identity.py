"""A run's identity: the part of its config that determines its numbers, and the checkpoint it
resumes from.

:func:`result_config` is what a checkpoint keeps (:class:`RunState`) and what a run folder's saved
config is compared with (:mod:`prunelab.runfolder`): without the keys that change no result,
without declarations and help texts, a config of an earlier release in today's shape
(:mod:`prunelab.legacy`), each pruning node completed with its class's defaults. A resume
(:func:`resolve_ckpt`) refuses a checkpoint of another run in one line naming the differences.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from prunelab import components
from prunelab.config import schema_node
from prunelab.errors import CheckpointError
from prunelab.legacy import upgrade
from prunelab.loading import load_checkpoint
from prunelab.messages import get_logger
from prunelab.pairing import without_declarations
from prunelab.paths import last_checkpoint, without_no_effect_keys
from prunelab.pruning.schedules import Dense
from prunelab.quantize.stage import NoQuantization

log = get_logger(__name__)


def result_config(cfg: DictConfig) -> dict[str, Any]:
    """The part of the config that determines a run's numbers (compared on resume, and with a
    run folder's saved config); a config of an earlier release is read in today's shape."""
    new, _ = upgrade(OmegaConf.to_container(cfg, resolve=False))  # type: ignore[arg-type]
    plain = OmegaConf.to_container(OmegaConf.create(new), resolve=True)
    return _normalized(without_declarations(_without_descriptions(without_no_effect_keys(plain))))


def _without_descriptions(node: Any) -> Any:
    """The config without its ``description`` texts (help only: editing one changes no run)."""
    if isinstance(node, dict):
        return {k: _without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_without_descriptions(v) for v in node]
    return node


_DENSE = f"{Dense.__module__}.{Dense.__qualname__}"
_NO_QUANTIZATION = ("prunelab.quantize.NoQuantization",
                    f"{NoQuantization.__module__}.{NoQuantization.__qualname__}")


def _normalized(config: dict[str, Any]) -> dict[str, Any]:
    """The pruning and quantize nodes completed with their targets' defaults (a key left out
    and a key set to its default are one run); a dense run's pruning settings are inert: left
    out; so is ``quantize=none`` (a run of a release before the stage existed is the same run)."""
    quantize = config.get("quantize")
    config = {k: v for k, v in config.items() if k != "quantize"}
    if isinstance(quantize, dict) and quantize.get("_target_") not in _NO_QUANTIZATION:
        config["quantize"] = components.canonical(quantize)
    pruning = config.get("pruning") or {}
    schedule = pruning.get("schedule") if isinstance(pruning, dict) else None
    if isinstance(schedule, dict) and schedule.get("_target_") == _DENSE:
        return {**config, "pruning": {"schedule": {"_target_": _DENSE}}}
    return {**config, "pruning": components.canonical(pruning)}


class RunState(L.Callback):
    """Epoch wall times and the run's config, kept in every checkpoint.

    The config lets a resume refuse a checkpoint made by a different model or pruning setup.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.epoch_seconds: list[float] = []
        self._t0 = 0.0
        self.seconds_before = 0.0  # fit time spent by earlier, interrupted processes
        self._start = time.perf_counter()

    @property
    def fit_seconds(self) -> float:
        """Fit time of the whole run, across resumes (up to each process's last checkpoint)."""
        return self.seconds_before + time.perf_counter() - self._start

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_seconds.append(time.perf_counter() - self._t0)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config, "epoch_seconds": self.epoch_seconds,
                "fit_seconds": self.fit_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch_seconds = list(state_dict.get("epoch_seconds", []))
        self.seconds_before = float(state_dict.get("fit_seconds", sum(self.epoch_seconds)))


@dataclass(frozen=True)
class Resume:
    """The checkpoint a run resumes from: its path, the first epoch to run, its global step."""

    path: str
    epoch: int
    step: int


def resolve_ckpt(ckpt_path: str | None, run_dir: Path, config: dict[str, Any]) -> Resume | None:
    """``last`` → the run dir's last.ckpt if any; a path must exist, load, and match the run.

    Loaded with ``weights_only=True``: a checkpoint whose pickle would call anything is refused
    before it runs (:func:`prunelab.loading.load_checkpoint`).
    """
    if ckpt_path in (None, "", "null", "none"):
        return None
    if ckpt_path == "last":
        path = last_checkpoint(run_dir)
        if not path.exists():
            return None
    else:
        path = Path(ckpt_path)
        if not path.exists():
            raise CheckpointError(f"ckpt_path={ckpt_path} does not exist")
    ckpt = load_checkpoint(path)
    saved = ckpt.get("callbacks") if isinstance(ckpt, dict) else None
    if not isinstance(saved, dict):
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a prunelab checkpoint (no callback state); "
            "move it away to start fresh, or pass ckpt_path=null"
        )
    state = next((v for k, v in saved.items() if k.startswith("RunState")), None)
    if state is None:
        raise CheckpointError(f"checkpoint {path} was not written by prunelab (no run state)")
    theirs = _normalized(without_declarations(_upgraded_state_config(state["config"])))
    diff = differences(theirs, _normalized(config))
    if diff:
        shown = "; ".join(f"{k}={a!r} in the checkpoint, {b!r} now" for k, a, b in diff[:4])
        raise CheckpointError(
            f"checkpoint {path} belongs to a different run: {shown}; "
            "use another run directory or pass ckpt_path=null"
        )
    return Resume(str(path), epoch=int(ckpt.get("epoch", -1)) + 1,
                  step=int(ckpt.get("global_step", 0)))


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, value now)`` for each key where two :func:`result_config` differ,
    the model's and data's names first (they say the most about a mismatch). A run's identity:
    a checkpoint (:func:`resolve_ckpt`) and a run folder (:mod:`prunelab.runfolder`) are
    compared with it."""
    diff = _diff(saved, now, defaults=_schema_defaults())
    return sorted(diff, key=lambda d: (not d[0].endswith(".name"), d[0]))


def _diff(a: Any, b: Any, prefix: str = "", defaults: Any = None) -> list[tuple[str, Any, Any]]:
    """``a`` (the saved config) against ``b``; a key the saved one lacks is no
    difference while it holds its schema default (an option added since keeps old runs)."""
    if isinstance(a, dict) and isinstance(b, dict):
        defaults = defaults if isinstance(defaults, dict) else {}
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a and k in defaults and b.get(k) == defaults[k]:
                continue
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.", defaults.get(k))
        return out
    return [] if a == b else [(prefix[:-1], a, b)]


def _upgraded_state_config(config: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config (resolved; possibly of an earlier release) in today's shape."""
    new, _ = upgrade(config)
    return OmegaConf.to_container(OmegaConf.create(new), resolve=True)  # type: ignore[return-value]


def _schema_defaults() -> dict[str, Any]:
    node = schema_node()
    return OmegaConf.to_container(node, resolve=False, throw_on_missing=False)


def upgraded(cfg: DictConfig, notes: bool = True) -> DictConfig:
    """``cfg`` in today's shape: a spelling of an earlier release (``pruning.amount=0.5``) is
    moved to its node, with a one-line note each (:func:`prunelab.legacy.upgrade`)."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    new, moved = upgrade(plain)  # type: ignore[arg-type]
    for note in moved if notes else ():
        log.warning(f"deprecated: {note}")
    return cfg if new == plain else OmegaConf.create(new)
