"""The shell Hydra instantiates for ``hydra/sweeper=optuna`` (:mod:`prunelab.study_config`).

Hydra imports every module under ``hydra_plugins`` at start-up, so this one imports nothing
heavy: optuna and the sweeper come in when a study is launched.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class PrunelabOptunaSweeper(Sweeper):
    """Hydra's Optuna sweeper, resumable, its directions from the config's ``objectives``
    (:class:`prunelab.study.StudySweeper`)."""

    def __init__(self, **kwargs: Any) -> None:
        try:
            # lazy: optuna and SQLAlchemy, for a study only
            from prunelab.study import StudySweeper
        except ImportError as err:
            from prunelab.study_config import EXTRA

            print(f"prunelab: error: hydra/sweeper=optuna needs the Optuna sweeper ({err}): "
                  f"{EXTRA}", file=sys.stderr)
            sys.exit(2)
        self.sweeper = StudySweeper(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function,
                           config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)
