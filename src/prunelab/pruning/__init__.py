"""Pruning: criteria (a registry and their classes), schedules, the Lightning callback, metrics.

``from prunelab.pruning import PruningCallback, build_plan`` is all a user's own
LightningModule needs; nothing here knows prunelab's models. The names load on first use, so
``import prunelab.pruning.schedules`` (pure Python) does not import torch or Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "CheckpointError": "prunelab.errors",
    "ConfigError": "prunelab.errors",
    "PruningCallback": "prunelab.pruning.callback",
    "CRITERIA": "prunelab.pruning.criteria",
    "Criterion": "prunelab.pruning.criteria",
    "Method": "prunelab.pruning.criteria",
    "compute_masks": "prunelab.pruning.criteria",
    "register": "prunelab.pruning.criteria",
    "PruneStep": "prunelab.pruning.schedules",
    "Schedule": "prunelab.pruning.schedules",
    "build_plan": "prunelab.pruning.schedules",
    "validate_plan": "prunelab.pruning.schedules",
    "find_targets": "prunelab.pruning.targets",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
