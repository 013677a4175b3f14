"""prunelab's Optuna sweeper as the Hydra plugin Hydra requires (plugins live in ``hydra_plugins``);
the work is in :mod:`prunelab.study`."""
