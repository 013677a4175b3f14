"""Experiment trackers next to the run folder's own curves: MLflow and Weights & Biases.

``logger=mlflow`` adds an MLflow run (MLflow's local file store ``./mlruns`` unless
``logger.mlflow.tracking_uri`` names another), ``logger=wandb`` a W&B run (offline by default,
files under the run folder; ``wandb sync`` uploads them later). Each gets the run's config as
parameters, Lightning's per-epoch metrics (losses, accuracies, ``sparsity/<layer>`` after each
pruning step) and, at the end, the final results (:func:`log_results`). The packages are
optional extras: ``pip install 'prunelab[mlflow]'`` / ``'prunelab[wandb]'``.

A resumed run continues the same tracker run: its id is kept in the run folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prunelab.errors import ConfigError
from prunelab.io import atomic_write

MLFLOW_RUN_ID = "mlflow_run_id.txt"
RESULT_METRICS = ("test_acc", "test_loss", "val_acc", "sparsity_global", "params_total",
                  "params_nonzero", "macs_dense", "macs_effective", "params_compact",
                  "macs_compact", "fit_seconds", "epochs")


def _require(package: str, choice: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"logger={choice} needs the {package} package, which is not "
                          f"installed: pip install 'prunelab[{choice}]' (or {package})")


def mlflow_logger(save_dir: str | Path, tracking_uri: str | None = None,
                  experiment: str = "prunelab") -> Any:
    """``logger.mlflow``: an MLflow run (its id kept in the run folder, so a resume continues it)."""
    _require("mlflow", "mlflow")
    from lightning.pytorch.loggers import MLFlowLogger

    run_dir = Path(save_dir)
    uri = str(tracking_uri or f"file:{Path('mlruns').absolute()}")
    if uri.startswith("file:"):
        # MLflow >= 3.x refuses its file store unless told (it prefers a database, which
        # needs the full mlflow package); a local folder is what logger=mlflow promises
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    id_file = run_dir / MLFLOW_RUN_ID
    run_id = id_file.read_text().strip() if id_file.is_file() else None
    return MLFlowLogger(experiment_name=str(experiment or "prunelab"), run_name=run_dir.name,
                        tracking_uri=uri, run_id=run_id, tags={"run_dir": str(run_dir.absolute())})


def wandb_logger(save_dir: str | Path, project: str = "prunelab", offline: bool = True) -> Any:
    """``logger.wandb``: a W&B run, offline by default; its id follows the run folder (resume)."""
    _require("wandb", "wandb")
    from lightning.pytorch.loggers import WandbLogger

    run_dir = Path(save_dir)
    run_id = hashlib.sha1(str(run_dir.absolute()).encode()).hexdigest()[:16]
    offline = bool(offline)
    # mode stated each time: Lightning's offline flag sets WANDB_MODE for the whole process
    # and wandb keeps its first settings, so a later online run would stay offline
    return WandbLogger(project=str(project or "prunelab"), name=run_dir.name, id=run_id,
                       resume="allow", save_dir=str(run_dir), offline=offline,
                       mode="offline" if offline else "online")


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"pruning.amount": 0.5, ...}`` (trackers take flat parameters)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, (int, float, bool, str)) or value is None \
                else str(value)
    return out


def log_start(loggers: list, config: dict[str, Any], run_dir: Path) -> None:
    """The run's config as parameters; the MLflow run id kept for a resume."""
    for lg in _trackers(loggers):
        if type(lg).__name__ == "WandbLogger":
            _start_wandb(lg)
        lg.log_hyperparams(flat_params(config))
        if type(lg).__name__ == "MLFlowLogger":
            atomic_write(run_dir / MLFLOW_RUN_ID, lg.run_id)


def _start_wandb(lg: Any) -> None:
    """Start the W&B run now, so that a refusal (no login for an online run, no server) is
    one line rather than wandb's traceback from inside Lightning."""
    import wandb

    try:
        lg.experiment  # noqa: B018 -- the property starts the run
    except wandb.errors.Error as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"logger=wandb could not start a W&B run: {reason} (log in with "
                          f"`wandb login` or WANDB_API_KEY, or keep logger.wandb.offline=true)"
                          ) from None


def log_results(loggers: list, results: dict[str, Any]) -> None:
    """Final results and final per-layer sparsity, as metrics at the run's last epoch."""
    metrics = {k: float(results[k]) for k in RESULT_METRICS if results.get(k) is not None}
    for layer, value in (results.get("sparsity_layers") or {}).items():
        metrics[f"final_sparsity/{layer}"] = float(value)
    step = int(results.get("epochs") or 0)
    for lg in _trackers(loggers):
        lg.log_metrics({f"result/{k}": v for k, v in metrics.items()}, step=step)
    finish(loggers, "success")


def finish(loggers: list, status: str) -> None:
    """Close the tracker runs: MLflow's ends FINISHED/FAILED, W&B's gets its exit code.

    Lightning's ``WandbLogger.finalize`` leaves the W&B run open, and a later ``WandbLogger``
    in the same process (the next job of a sweep) would then log into it; so it is finished.
    """
    for lg in _trackers(loggers):
        lg.finalize(status)
        if type(lg).__name__ == "WandbLogger":
            lg.experiment.finish(exit_code=0 if status == "success" else 1)


@contextmanager
def finished_on_error(trainer: Any) -> Iterator[None]:
    """Mark the tracker runs failed when the run stops with an error (then re-raise)."""
    try:
        yield
    except BaseException:
        if trainer.is_global_zero:
            finish(trainer.loggers, "failed")
        raise


def _trackers(loggers: list) -> list:
    return [lg for lg in loggers if type(lg).__name__ in ("MLFlowLogger", "WandbLogger")]
