"""Config → the run's objects: the pruning callback, the Trainer, the loggers, the model and data.

Each is a ``_target_`` node built by :mod:`prunelab.components` (the pruning, trainer and
logger nodes, keys checked against their targets) or by ``hydra.utils.instantiate`` (model and
data, their declarations left out, :func:`prunelab.pairing.arguments`). :func:`check_nodes` is
the check of every key before anything is built, which the command line also makes before any
job starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from prunelab import components
from prunelab.config import schema_keys
from prunelab.errors import ConfigError, closest_first, user_error
from prunelab.identity import Resume, upgraded
from prunelab.internals import NoProfiler
from prunelab.pairing import arguments
from prunelab.paths import override_key
from prunelab.pruning.callback import PruningCallback
from prunelab.pruning.schedules import check_fits
from prunelab.quantize.stage import NoQuantization

#: keys of the ``pruning`` node that the pipeline reads itself (not PruningCallback's)
PIPELINE_KEYS = ("compact",)
#: the Trainer arguments prunelab passes itself (a ``trainer.<key>`` of these is refused)
TRAINER_GIVEN = ("callbacks", "logger", "default_root_dir", "plugins")


def pruning_node(cfg: DictConfig, overrides: Sequence[str] | None = None,
                 resolve: bool = True) -> dict[str, Any]:
    """The ``pruning`` node as the callback takes it: without the pipeline's keys, and its
    schedule without the keys a preset set for another schedule.

    ``experiment=study_mnist pruning=none`` (the study's dense baseline) or ``... pruning=agp``
    keep the preset's schedule values where the chosen schedule takes them (``n_steps``,
    ``start_epoch``); the others, written for the preset's own schedule, are left out, and a
    ``null`` is the schedule's default. A key typed on the command line (``overrides``) is
    never left out: one the schedule does not take is refused when the node is built. With no
    ``overrides`` (a config composed in Python) nothing is left out.
    """
    node = OmegaConf.to_container(cfg.pruning, resolve=resolve)
    node = {k: v for k, v in node.items() if k not in PIPELINE_KEYS}
    schedule = node.get("schedule")
    if overrides is None or not components.is_node(schedule):
        return node
    typed = {override_key(o) for o in overrides}
    params, open_ = components.parameters(components.target_of(schedule, "pruning.schedule"))
    node["schedule"] = {k: v for k, v in schedule.items()
                        if k == "_target_" or f"pruning.schedule.{k}" in typed
                        or f"pruning.{k}" in typed or (v is not None and (k in params or open_))}
    return node


def make_callback(cfg: DictConfig, overrides: Sequence[str] | None = None
                  ) -> tuple[PruningCallback | None, str]:
    """The ``pruning`` node as its callback (None for dense training), and the schedule's name.

    Built (and so checked: keys, values, the pair of schedule and criterion) before any model
    or data; the rule that the plan ends within ``trainer.max_epochs`` belongs to the command
    line, not to the Python API.
    """
    pruner = components.build(pruning_node(cfg, overrides), "pruning")
    name = getattr(pruner.schedule, "name", "") or type(pruner.schedule).__name__
    if not pruner.prunes:
        return None, name
    check_fits(pruner.plan, cfg.trainer.max_epochs)
    return pruner, name


def make_quantization(cfg: DictConfig) -> NoQuantization:
    """The ``quantize`` node as its stage (``quantize=none`` when a config has none): built, and
    so checked (its keys, its values, the optional extra it needs), before any data is read."""
    node = quantize_node(cfg)
    return components.build(node, "quantize") if components.is_node(node) else NoQuantization()


def quantize_node(cfg: DictConfig, resolve: bool = True) -> Any:
    """The ``quantize`` node as plain data (None in a config of an earlier release)."""
    node = cfg.get("quantize")
    return OmegaConf.to_container(node, resolve=resolve) if isinstance(node, DictConfig) else None


def make_trainer(cfg: DictConfig, **given: Any) -> L.Trainer:
    """The ``trainer`` node as ``lightning.Trainer``, with prunelab's callbacks, loggers and run
    folder (``given``): a key the Trainer does not take, or one prunelab sets, is one line, and
    so is a value Lightning refuses (``trainer.accelerator=gpu`` without one)."""
    node = OmegaConf.to_container(cfg.trainer, resolve=True)
    if node.get("profiler") is None:
        node.pop("profiler", None)
        given["profiler"] = NoProfiler()
    try:
        return components.build(node, "trainer", **given)
    except (MisconfigurationException, ValueError, TypeError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"trainer: {str(err).strip().splitlines()[0]}") from None


def make_objects(cfg: DictConfig, overrides: Sequence[str] | None = None
                 ) -> tuple[PruningCallback | None, str, L.LightningModule, L.LightningDataModule]:
    """The callback (and its schedule's name), the data module and the model (its targets
    found), each checking its own arguments; no data is read yet. The Trainer's node is tried
    on a bare Trainer (Lightning checks the accelerator, strategy and devices only when one is
    built); the data module comes before the model, whose sizes may follow the data's
    (``data.vocab_size``), so that a bad value is named by its own key."""
    pruner, schedule = make_callback(cfg, overrides)
    make_trainer(cfg, logger=False, enable_checkpointing=False)
    datamodule = instantiate_data(cfg)
    model = instantiate_model(cfg)
    if pruner is not None:
        try:
            pruner.bind(model)
        except ConfigError as err:  # targets.include ... matches nothing: the node's key
            raise components.located(err, "pruning", ("targets",)) from None
    return pruner, schedule, model, datamodule


def check_nodes(cfg: DictConfig, overrides: Sequence[str] | None = None) -> None:
    """Every key is one its node takes, without building anything (the command line's check
    before any job): the top-level keys (``+foo=bar`` adds one the run would not read), every
    key of the ``pruning`` and ``trainer`` nodes (an argument of its ``_target_``), and every
    entry of ``logger`` (a logger node, or its ``description``)."""
    top = schema_keys()
    extra = [k for k in cfg if k not in top and k != "hydra"]  # hydra: Hydra's own settings
    if extra:
        raise ConfigError(f"{extra[0]}={cfg[extra[0]]}: no such key; valid, closest first: "
                          f"{', '.join(closest_first(str(extra[0]), top))}")
    cfg = upgraded(cfg, notes=False)  # the run itself says them once
    components.check(pruning_node(cfg, overrides, resolve=False), "pruning")
    components.check(OmegaConf.to_container(cfg.trainer, resolve=False), "trainer", TRAINER_GIVEN)
    if components.is_node(quantize := quantize_node(cfg, resolve=False)):
        components.check(quantize, "quantize")
    for key, node in OmegaConf.to_container(cfg.logger, resolve=False).items():
        if components.is_node(node):
            components.check(node, f"logger.{key}", ("save_dir",))
        elif key not in components.DECLARATIONS:
            raise ConfigError(f"logger.{key}={node!r}: not a logger; each entry of logger is a "
                              "node with a _target_ (choose them with logger=default|csv|none|"
                              "mlflow|wandb)")


def instantiate_model(cfg: DictConfig) -> L.LightningModule:
    """The model section's ``_target_`` with its arguments (declarations left out)."""
    return _instantiate("model", arguments(OmegaConf.to_container(cfg.model, resolve=True)))


def instantiate_data(cfg: DictConfig) -> L.LightningDataModule:
    """The data section's ``_target_`` with its arguments (declarations left out)."""
    return _instantiate("data", arguments(OmegaConf.to_container(cfg.data, resolve=True)))


def _instantiate(section: str, node: dict[str, Any]) -> Any:
    """Hydra's ``instantiate``, whose wrapper around a constructor's error would hide a
    one-line :class:`PrunelabError` (the error stays itself), or turn arguments the class does
    not take into a trace (one ConfigError line naming the section instead)."""
    try:
        return instantiate(node)
    except InstantiationException as err:
        found = user_error(err)
        if found is not None:
            raise found from None
        cause = err.__cause__
        if isinstance(cause, TypeError) and "argument" in str(cause):
            raise ConfigError(f"{section}: {str(err).splitlines()[0].rstrip(':')} "
                              f"{str(cause).splitlines()[0]}") from None
        raise


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
