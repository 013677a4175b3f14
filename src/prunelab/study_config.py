"""``hydra/sweeper=optuna``: Optuna's Hydra sweeper, made resumable and fed by ``objectives``.

The node has every key of the hydra-optuna-sweeper plugin's config (sampler, n_trials, n_jobs,
params, storage, study_name ...), with prunelab's defaults: the study lives in
``<sweep dir>/optuna.db`` (SQLite) under the sweep's ``name``, and the directions come from the
config's ``objectives`` (``direction`` stays null). Its ``_target_`` is prunelab's sweeper
(:mod:`prunelab.study`), behind the plugin shell Hydra requires
(``hydra_plugins.prunelab_optuna_sweeper``).

Why a stored node and not ``conf/hydra/sweeper/optuna.yaml``: the plugin stores its own schema
under that name, with a defaults list, and Hydra 1.3 refuses a file matched to such a schema.
Hydra's plugin scan re-runs the plugin's config module, which stores its node again; so the
scan is run first and prunelab's node stored after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prunelab.paths import OPTUNA_DB

TARGET = "hydra_plugins.prunelab_optuna_sweeper.prunelab_optuna_sweeper.PrunelabOptunaSweeper"
#: the extra that installs the plugin and the versions its SQLite storage works with
EXTRA = "pip install 'prunelab[optuna]'"


def register_optuna_sweeper() -> None:
    """Store prunelab's ``hydra/sweeper/optuna`` node, before the command line composes (the
    training app's module does; idempotent). Without the plugin, a node whose sweeper says
    which extra to install."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # Hydra's one scan of hydra_plugins, which stores the plugin's node
    # the scan walks the namespace's folders, and misses the shell under an editable install
    # (``pip install -e``: a path hook, not a folder); registering it by hand finds it in every
    # install (idempotent)
    from hydra_plugins.prunelab_optuna_sweeper.prunelab_optuna_sweeper import (
        PrunelabOptunaSweeper,
    )

    Plugins.instance().register(PrunelabOptunaSweeper)
    try:
        from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
    except ImportError:
        node: Any = {"_target_": TARGET}
    else:

        @dataclass
        class PrunelabOptunaSweeperConf(OptunaSweeperConf):
            _target_: str = TARGET
            direction: Any = None  # from the config's objectives
            storage: Any = f"sqlite:///${{hydra.sweep.dir}}/{OPTUNA_DB}"
            study_name: Any = "${name}"

        node = PrunelabOptunaSweeperConf
    ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=node,
                                 provider="prunelab")
