"""Config → the run's objects: the pruning callback, the Trainer, the loggers, the model and data.

Each is a ``_target_`` node built by :mod:`prunelab.components` (the pruning, trainer and
logger nodes, keys checked against their targets) or by ``hydra.utils.instantiate`` (model and
data, their declarations left out, :func:`prunelab.compat.arguments`). :func:`check_nodes` is
the check of every key before anything is built, which the command line also makes before any
job starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from prunelab import components
from prunelab.compat import arguments
from prunelab.errors import user_error
from prunelab.identity import Resume, upgraded
from prunelab.lightning_ext import NoProfiler
from prunelab.pruning.callback import PruningCallback
from prunelab.pruning.schedules import check_fits

#: keys of the ``pruning`` node that the pipeline reads itself (not PruningCallback's)
PIPELINE_KEYS = ("compact",)


def make_callback(cfg: DictConfig) -> tuple[PruningCallback | None, str]:
    """The ``pruning`` node as its callback (None for dense training), and the schedule's name.

    Built (and so checked: keys, values, the pair of schedule and criterion) before any model
    or data; the rule that the plan ends within ``trainer.max_epochs`` belongs to the command
    line, not to the Python API.
    """
    node = OmegaConf.to_container(cfg.pruning, resolve=True)
    pruner = components.build({k: v for k, v in node.items() if k not in PIPELINE_KEYS}, "pruning")
    name = getattr(pruner.schedule, "name", "") or type(pruner.schedule).__name__
    if not pruner.prunes:
        return None, name
    check_fits(pruner.plan, cfg.trainer.max_epochs)
    return pruner, name


#: the Trainer arguments prunelab passes itself (a ``trainer.<key>`` of these is refused)
TRAINER_GIVEN = ("callbacks", "logger", "default_root_dir", "plugins")


def make_trainer(cfg: DictConfig, **given: Any) -> L.Trainer:
    """The ``trainer`` node as ``lightning.Trainer``, with prunelab's callbacks, loggers and run
    folder (``given``): a key the Trainer does not take, or one prunelab sets, is one line."""
    node = OmegaConf.to_container(cfg.trainer, resolve=True)
    if node.get("profiler") is None:
        node.pop("profiler", None)
        given["profiler"] = NoProfiler()
    return components.build(node, "trainer", **given)


def check_nodes(cfg: DictConfig) -> None:
    """Every key of the ``pruning``, ``trainer`` and logger nodes is an argument of its target
    (one line otherwise), without building anything: the command line's check before any job."""
    cfg = upgraded(cfg, notes=False)  # the run itself says them once
    pruning = OmegaConf.to_container(cfg.pruning, resolve=False)
    components.check({k: v for k, v in pruning.items() if k not in PIPELINE_KEYS}, "pruning")
    components.check(OmegaConf.to_container(cfg.trainer, resolve=False), "trainer", TRAINER_GIVEN)
    for key, node in OmegaConf.to_container(cfg.logger, resolve=False).items():
        if components.is_node(node):
            components.check(node, f"logger.{key}", ("save_dir",))


def instantiate_model(cfg: DictConfig) -> L.LightningModule:
    """The model section's ``_target_`` with its arguments (declarations left out)."""
    return _built(arguments(OmegaConf.to_container(cfg.model, resolve=True)))


def instantiate_data(cfg: DictConfig) -> L.LightningDataModule:
    """The data section's ``_target_`` with its arguments (declarations left out)."""
    return _built(arguments(OmegaConf.to_container(cfg.data, resolve=True)))


def _built(section: dict[str, Any]) -> Any:
    """``instantiate(section)``; a ConfigError the target raises stays a ConfigError (Hydra
    wraps it in an InstantiationException, which would end as a traceback and exit 1)."""
    try:
        return instantiate(section)
    except InstantiationException as err:
        found = user_error(err)
        if found is None:
            raise
        raise found from None


def make_loggers(cfg: DictConfig, run_dir: Path, resume: Resume | None = None) -> list:
    """One logger per ``_target_`` node of ``logger``; each gets the run folder (``save_dir``)
    and the resume position (``resume_epoch``, ``resume_step``) where it takes them, so curves
    keep the epochs ``resume``'s checkpoint covers."""
    position = {"save_dir": str(run_dir), "resume_epoch": resume.epoch if resume else 0,
                "resume_step": resume.step if resume else 0}
    loggers = []
    for key, node in OmegaConf.to_container(cfg.logger, resolve=True).items():
        if not components.is_node(node):
            continue
        params, _ = components.parameters(components.target_of(node, f"logger.{key}"))
        given = {k: v for k, v in position.items() if k in params and k not in node}
        loggers.append(components.build(node, f"logger.{key}", **given))
    return loggers
