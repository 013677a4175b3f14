"""Pruning: criteria (a registry), schedules, the Lightning callback, metrics.

``from prunelab.pruning import PruningCallback, build_plan`` is all a user's own
LightningModule needs; nothing here knows prunelab's models.
"""

from prunelab.errors import CheckpointError, ConfigError
from prunelab.pruning.callback import PruningCallback
from prunelab.pruning.criteria import CRITERIA, Criterion, compute_masks, register
from prunelab.pruning.schedules import PruneStep, build_plan, validate_plan
from prunelab.pruning.targets import find_targets

__all__ = [
    "CRITERIA",
    "CheckpointError",
    "ConfigError",
    "Criterion",
    "PruneStep",
    "PruningCallback",
    "build_plan",
    "compute_masks",
    "find_targets",
    "register",
    "validate_plan",
]
