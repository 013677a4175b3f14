"""A pruning schedule of your own: ``n_steps`` targets on a half-cosine ramp to ``amount``.

Step k of n prunes to ``amount * (1 - cos(pi * (k + 1) / n)) / 2`` at the end of epoch
``start_epoch + k``: slow, fast, slow again. A schedule is a frozen dataclass whose fields are
its keys and whose ``plan()`` is a pure function of them; ``conf/pruning/cosine_ramp.yaml``
names it and sets ``trainer.max_epochs`` to fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from prunelab.errors import ConfigError
from prunelab.pruning.schedules import PruneStep, Schedule


@dataclass(frozen=True, kw_only=True)
class CosineRamp(Schedule):
    name: ClassVar[str] = "cosine_ramp"
    amount: float
    n_steps: int = 4
    start_epoch: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.amount < 1:
            raise ConfigError(f"amount={self.amount!r} must be a fraction in [0, 1)")
        if not isinstance(self.n_steps, int) or self.n_steps < 1:
            raise ConfigError(f"n_steps={self.n_steps!r} must be an integer >= 1")

    def plan(self) -> list[PruneStep]:
        n = self.n_steps
        return [PruneStep(self.start_epoch + k,
                          round(self.amount * (1 - math.cos(math.pi * (k + 1) / n)) / 2, 10))
                for k in range(n)]
