"""Configs of the earlier shape → today's: saved run folders, checkpoints and old spellings.

Up to prunelab 0.1 the ``pruning`` section was one flat namespace (``pruning.schedule: agp``,
``pruning.amount``, ``pruning.round_to``, ``pruning.method.name`` ...) and ``logger`` held
switches (``csv: true``). Today ``pruning`` is the callback's ``_target_`` node with the
schedule, the criterion and the targets as nodes of their own, and each logger is a node; a
criterion's key may have a new name (``pruning.method.n``, the norm order, is ``.norm``).

:func:`upgrade` turns the old shape into the new one; it is applied wherever a config is read
that may be old: a run folder's ``.hydra/config.yaml`` (evaluate, compact, export, report,
sensitivity), the config a checkpoint keeps (resume), and the composed config of a run, where
an old spelling on the command line (``pruning.amount=0.5``) is moved to its new place with a
one-line note. Keys that had no effect in the old shape (``rate`` of an AGP run, ``grad_batches``
of a magnitude method) are dropped from saved configs; typed on today's command line they are
refused like any key a component does not take.
"""

from __future__ import annotations

import copy
from typing import Any

from prunelab.components import owner, parameters, target_of
from prunelab.errors import ConfigError, unknown_key
from prunelab.pruning.criteria.methods import BUILT_IN as METHODS

CALLBACK = "prunelab.pruning.PruningCallback"
TARGETS = "prunelab.pruning.targets.Targets"
TRAINER = "lightning.Trainer"
_SCHEDULES = {"none": "schedules.Dense", "at_init": "schedules.AtInit",
              "one_shot": "schedules.OneShot", "iterative": "schedules.Iterative",
              "geometric": "schedules.Geometric", "agp": "schedules.AGP",
              "explicit": "schedules.Explicit", "lottery": "schedules.Lottery",
              "set": "dynamic.SET", "rigl": "dynamic.RigL"}
#: the old flat ``pruning.<key>`` that are a schedule's keys today (``pruning.schedule.<key>``)
SCHEDULE_KEYS = ("amount", "start_epoch", "every", "initial", "step_size", "n_steps", "rate",
                 "steps", "update_every", "alpha", "stop_fraction", "distribution")
#: the old flat ``pruning.<key>`` that are a criterion's keys today (``pruning.method.<key>``)
METHOD_KEYS = ("round_to",)
#: a criterion's keys renamed since: old → new (``pruning.method.n`` is the norm order)
RENAMED_METHOD_KEYS = {"n": "norm"}
LOGGERS = {"csv": "prunelab.curves.csv_logger", "tensorboard": "prunelab.curves.tensorboard_logger",
           "mlflow": "prunelab.trackers.mlflow_logger", "wandb": "prunelab.trackers.wandb_logger"}


def schedule_target(name: str) -> str:
    """The ``_target_`` of a built-in schedule's name."""
    if name not in _SCHEDULES:
        raise ConfigError(f"unknown pruning schedule {name!r}; valid schedules: {', '.join(_SCHEDULES)}")
    return f"prunelab.pruning.{_SCHEDULES[name]}"


def method_target(name: str) -> dict[str, Any]:
    """The node of a criterion's name: its class, or ``ByName`` for one registered elsewhere."""
    cls = METHODS.get(name)
    if cls is None:
        return {"_target_": "prunelab.pruning.criteria.ByName", "criterion": name}
    return {"_target_": f"prunelab.pruning.criteria.{cls.__name__}"}


def _keys(target: str) -> tuple[str, ...]:
    params, _ = parameters(target_of({"_target_": target}, "pruning"))
    return tuple(params)


def upgrade(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``config`` (plain, resolved or not) in today's shape, and a note per old spelling that
    was moved (empty for a saved config of the old shape, which is converted silently)."""
    out = copy.deepcopy(config)
    notes: list[str] = []
    pruning = out.get("pruning")
    saved = isinstance(pruning, dict) and "_target_" not in pruning  # all of it the old shape
    if saved:
        out["pruning"] = _old_pruning(pruning)
    elif isinstance(pruning, dict):
        notes += _moved_spellings(pruning)
    trainer = out.get("trainer")
    if isinstance(trainer, dict) and "_target_" not in trainer:
        out["trainer"] = {"_target_": TRAINER, **trainer}
    logger = out.get("logger")
    if isinstance(logger, dict):
        notes += _loggers(logger)
    return out, [] if saved else notes


def _old_pruning(old: dict[str, Any]) -> dict[str, Any]:
    """A whole ``pruning`` section of the old shape; inert keys dropped."""
    name = str(old.get("schedule", "none"))
    target = schedule_target(name)
    schedule: dict[str, Any] = {"_target_": target}
    for key in _keys(target):
        if old.get(key) is not None and not (name == "explicit" and key == "amount"):
            schedule[key] = old[key]
    method_old = {RENAMED_METHOD_KEYS.get(k, k): v for k, v in dict(old.get("method") or {}).items()}
    method = {**method_target(str(method_old.get("name", "l1_unstructured"))),
              **({"description": method_old["description"]} if "description" in method_old else {})}
    taken = _keys(method["_target_"])
    for key, value in {**method_old, "round_to": old.get("round_to")}.items():
        if key in taken and value is not None and key not in method:
            method[key] = value
    new: dict[str, Any] = {"_target_": CALLBACK}
    for key in ("description", "compact"):
        if key in old:
            new[key] = old[key]
    new.update(schedule=schedule, method=method, seed="${seed}")
    new["targets"] = {"_target_": TARGETS, **dict(old.get("targets") or {})}
    for key in ("rewind", "rewind_epoch", "make_permanent", "eval_batches", "monitor"):
        if key in old:
            new[key] = old[key]
    budget = {k: v for k, v in dict(old.get("budget") or {}).items() if v is not None}
    if budget:
        new["budget"] = budget
    return new


def _moved_spellings(pruning: dict[str, Any]) -> list[str]:
    """Old spellings on today's command line, moved into their nodes (in place)."""
    notes = []
    schedule = pruning.get("schedule")
    if not isinstance(schedule, dict):
        raise ConfigError(f"pruning.schedule={schedule}: a schedule is chosen with "
                          f"pruning={schedule} (pruning.schedule is now the schedule's own node)")
    for key in [k for k in SCHEDULE_KEYS if k in pruning]:
        valid = _keys(str(schedule.get("_target_")))
        if key not in valid:
            name = owner(target_of(schedule, "pruning.schedule"), schedule)
            raise unknown_key(f"pruning.{key}", name, valid)
        schedule[key] = pruning.pop(key)
        notes.append(f"pruning.{key} is now pruning.schedule.{key} (the old spelling works "
                     "until the next release)")
    method = pruning.get("method")
    if isinstance(method, dict) and "name" in method and "_target_" in method:
        name = str(method.pop("name"))
        new = method_target(name)
        taken = _keys(new["_target_"])
        kept = {k: v for k, v in method.items()
                if k in taken or k == "description" or RENAMED_METHOD_KEYS.get(k) in taken}
        method.clear()
        method.update(new, **kept)
        notes.append(f"pruning.method.name={name} is now pruning/method={name} (or, for a "
                     "criterion of your own, pruning.method._target_=...; the old spelling works "
                     "until the next release)")
    if isinstance(method, dict) and "_target_" in method:
        notes += _renamed_method_keys(method)
    for key in [k for k in METHOD_KEYS if k in pruning]:
        if isinstance(method, dict):
            valid = _keys(str(method.get("_target_")))
            if key not in valid:
                raise unknown_key(f"pruning.{key}", str(method.get("_target_")).rsplit(".", 1)[-1],
                                  valid)
            value = pruning.pop(key)
            if value is not None:
                method[key] = value
            notes.append(f"pruning.{key} is now pruning.method.{key} (the old spelling works "
                         "until the next release)")
    return notes


def _renamed_method_keys(method: dict[str, Any]) -> list[str]:
    """A criterion's key under its earlier name, renamed (in place) where the criterion takes
    the new one; elsewhere it is left for the key check to refuse."""
    notes = []
    for old, new in RENAMED_METHOD_KEYS.items():
        if old in method and new in _keys(str(method.get("_target_"))):
            method[new] = method.pop(old)
            notes.append(f"pruning.method.{old} is now pruning.method.{new} (the old spelling "
                         "works until the next release)")
    return notes


def _loggers(logger: dict[str, Any]) -> list[str]:
    """``logger.csv: true`` (old switches) → logger nodes, in place."""
    notes = []
    for key, target in LOGGERS.items():
        value = logger.get(key)
        if isinstance(value, bool):
            if value:
                logger[key] = {"_target_": target}
            else:
                del logger[key]
            notes.append(f"logger.{key}={str(value).lower()}: each logger is a node now; choose "
                         "them with logger=default|csv|none|mlflow|wandb")
        elif isinstance(value, dict) and "_target_" not in value:
            logger[key] = {"_target_": target, **value}
        elif key in logger and value is None:
            del logger[key]
    return notes
