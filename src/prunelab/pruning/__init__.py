"""Pruning: criteria (methods), schedules, the Lightning callback, metrics.

``from prunelab.pruning import PruningCallback, build_plan`` is all a user's own
LightningModule needs; nothing here knows prunelab's models.
"""

from prunelab.pruning.callback import PruningCallback
from prunelab.pruning.methods import METHODS, compute_masks
from prunelab.pruning.schedules import PruneStep, build_plan, validate_plan
from prunelab.pruning.targets import find_targets

__all__ = [
    "METHODS",
    "PruneStep",
    "PruningCallback",
    "build_plan",
    "compute_masks",
    "find_targets",
    "validate_plan",
]
