"""One run, as a pipeline: check → build → fit → test → results.json.

:func:`run` reads top to bottom: :func:`check_config` (the pipeline's own keys), :func:`build`
(config → callback, model, data, Trainer; each object checks its own arguments), :func:`fit`,
:func:`run_test`, :func:`collect` (the :class:`prunelab.results.Results` schema) and the files.
The config reaches the objects as ``_target_`` nodes built by :mod:`prunelab.components`; a
config of an earlier shape is first brought up to date (:mod:`prunelab.legacy`). Nothing here
reads Hydra's globals.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint, TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig

import prunelab

# config → objects, and a run's identity: modules of their own, used here (and from here)
from prunelab.assembly import (  # noqa: F401
    PIPELINE_KEYS,
    TRAINER_GIVEN,
    check_nodes,
    instantiate_data,
    instantiate_model,
    make_callback,
    make_loggers,
    make_objects,
    make_quantization,
    make_trainer,
)
from prunelab.bounds import check_run_values
from prunelab.data.common import test_set_size
from prunelab.errors import (
    CheckpointError,
    ConfigError,
    DivergedError,
    PrunelabError,
    RunInProgressError,
    one_line,
    user_error,
)
from prunelab.identity import (  # noqa: F401
    Resume,
    RunState,
    differences,
    resolve_ckpt,
    result_config,
    upgraded,
)
from prunelab.io import atomic_save, write_error, write_json
from prunelab.messages import get_logger
from prunelab.models import network_of
from prunelab.pairing import check_configs, check_data
from prunelab.paths import (
    COMPACT_MODEL,
    FAILED,
    FINAL_MODEL,
    RESULTS,
    last_checkpoint,
)
from prunelab.pruning.callback import PruningCallback
from prunelab.pruning.compaction import compact_with_report, save_compact
from prunelab.pruning.latency import efficiency_report
from prunelab.pruning.metrics import summarize
from prunelab.quantize.stage import NoQuantization, quantize_run
from prunelab.results import Failure, Results
from prunelab.runlock import RunLock, is_rank_zero
from prunelab.trackers import finished_on_error, log_results, log_start

log = get_logger(__name__)


# ------------------------------------------------------------------------ the pipeline


def run(cfg: DictConfig, run_dir: str | Path, overrides: list[str] | None = None,
        callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Train, prune, test and write ``results.json`` in ``run_dir``; return the results.

    A run whose results.json exists is not repeated: its results are returned as they are.
    ``callbacks`` are added to prunelab's own (instrumentation, early stopping, benchmarks).
    ``overrides``: the command line's, recorded in results.json; given, a preset's schedule key
    that the chosen schedule does not take is left out, one typed there never is
    (:func:`prunelab.assembly.pruning_node`); None: every key is checked as composed.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(err, run_dir) from None
    results_path = run_dir / RESULTS
    if results_path.exists():
        log.info("done already: %s (delete it to run again)", results_path)
        return json.loads(results_path.read_text())
    cfg = upgraded(cfg)
    if not is_rank_zero():  # DDP ranks > 0 work under rank 0's lock
        return _run(cfg, run_dir, overrides, callbacks)
    with RunLock(run_dir) as lock:
        if lock.taken_over:
            log.warning(f"taking over the lock of process {lock.taken_over.get('pid')} on "
                        f"{lock.taken_over.get('host')}, which is no longer running")
        return _run(cfg, run_dir, overrides, callbacks)


def _run(cfg: DictConfig, run_dir: Path, overrides: list[str] | None,
         callbacks: list[L.Callback] | None) -> dict[str, Any]:
    """``run``'s work, with the run folder locked."""
    import_modules(list(cfg.imports))
    check_config(cfg)
    check_nodes(cfg, overrides)  # every key of the top level, pruning, trainer, loggers
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    config = result_config(cfg)
    resume = resolve_ckpt(cfg.ckpt_path, run_dir, config)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    job = build(cfg, run_dir, config, resume, callbacks, overrides)
    with finished_on_error(job.trainer):  # logger=mlflow / wandb: a failed run ends as failed
        fit(job, resume)
        val_acc, test_metrics = run_test(job, resume)
        quantized: dict[str, Any] = {}
        if job.trainer.is_global_zero:
            save_final_model(job.model, run_dir)
            quantized = quantize_run(job.quantization, job.model, job.datamodule, job.trainer,
                                     run_dir, cfg.model.get("task") == "binary")
        results = collect(cfg, job, val_acc, test_metrics, overrides, quantized).to_json()
        if job.trainer.is_global_zero:
            write_json(run_dir / RESULTS, results)
            log_results(job.trainer.loggers, results)
    return results


@dataclass
class Job:
    """What :func:`build` makes from the config, and what the later steps use."""

    pruner: PruningCallback | None
    schedule: str  # the schedule's name ("none": dense)
    model: L.LightningModule
    datamodule: L.LightningDataModule
    trainer: L.Trainer
    state: RunState
    run_dir: Path
    compact: bool  # pruning.compact: compact and time the network after the test
    quantization: NoQuantization  # quantize=none|ptq|qat: the int8 stage after the test


def build(cfg: DictConfig, run_dir: Path, config: dict[str, Any], resume: Resume | None,
          callbacks: list[L.Callback] | None = None, overrides: list[str] | None = None) -> Job:
    """Config → objects, cheapest first, so bad input fails before any data is read.

    :func:`make_objects` builds (and so checks) the callback, the Trainer's arguments, the data
    module and the model; only then is the data prepared (a missing data set fails there,
    before any Lightning output).
    """
    quantization = make_quantization(cfg)  # a missing optional extra fails before any data
    pruner, schedule, model, datamodule = make_objects(cfg, overrides)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        datamodule.prepare_data()
        check_data(cfg.model, cfg.data.name, datamodule)  # classes and shapes found in the files
    state = RunState(config)
    # checkpoints/last.ckpt, rewritten (atomically) at the end of every epoch, after pruning
    own = [state, LastCheckpoint(last_checkpoint(run_dir)), *([pruner] if pruner else [])]
    if cfg.trainer.enable_progress_bar:
        own.append(TQDMProgressBar(refresh_rate=max(1, int(cfg.progress_refresh_rate))))
    trainer = make_trainer(cfg, callbacks=[*own, *(callbacks or [])],
                           logger=make_loggers(cfg, run_dir, resume) or False,
                           default_root_dir=str(run_dir), plugins=[AtomicCheckpointIO()])
    if trainer.is_global_zero:
        log_start(trainer.loggers, config, run_dir)
    return Job(pruner, schedule, model, datamodule, trainer, state, run_dir,
               bool(cfg.pruning.get("compact", False)), quantization)


def fit(job: Job, resume: Resume | None) -> None:
    """Train (and prune), from ``resume``'s checkpoint if any."""
    ckpt = resume.path if resume else None
    if ckpt:
        log.info("resuming from %s", ckpt)
    try:
        # weights_only: Lightning's own load of the file refuses pickled code too
        job.trainer.fit(job.model, datamodule=job.datamodule, ckpt_path=ckpt, weights_only=True)
    except RuntimeError as err:
        if ckpt and "state_dict" in str(err):
            raise CheckpointError(
                f"checkpoint {ckpt} does not fit this model ({str(err).splitlines()[0][:160]})"
            ) from None
        raise


def run_test(job: Job, resume: Resume | None) -> tuple[float | None, dict[str, Any]]:
    """The final validation accuracy and the test metrics (empty without test batches)."""
    trainer, model, dm = job.trainer, job.model, job.datamodule
    val_acc = trainer.callback_metrics.get("val_acc")
    if val_acc is None and resume and trainer.limit_val_batches != 0:
        # resumed from a checkpoint of the last epoch (killed before results.json): fit had no
        # epoch left to validate, so measure the final model rather than report null
        val_acc = trainer.validate(model, datamodule=dm, verbose=False)[0].get("val_acc")
    metrics = trainer.test(model, datamodule=dm, verbose=False)[0] if _has_test(trainer) else {}
    return _f(val_acc), metrics


def save_final_model(model: L.LightningModule, run_dir: Path) -> None:
    """``final_model.pt``: the plain network's state dict (masks folded in)."""
    state = network_of(model).state_dict()
    atomic_save(run_dir / FINAL_MODEL, lambda f: torch.save(state, f))


def collect(cfg: DictConfig, job: Job, val_acc: float | None, test_metrics: dict[str, Any],
            overrides: list[str] | None, quantized: dict[str, Any] | None = None) -> Results:
    """The run's :class:`Results` (with the compaction's when ``pruning.compact``, the int8
    model's when ``quantize=ptq|qat``)."""
    pruner, model, trainer = job.pruner, job.model, job.trainer
    example = _example_input(job.datamodule, model)
    pruned = [t.name for t in pruner.targets] if pruner is not None else None
    measured = summarize(model, example, pruned)
    if job.compact and trainer.is_global_zero and example is not None:
        measured.update(compact_and_measure(model, example, job.run_dir))
    return Results(
        status="ok",
        model=cfg.model.name,
        data=cfg.data.name,
        schedule=job.schedule,
        method=pruner.method.name if pruner is not None else "dense",
        amount=pruner.final_target if pruner is not None else 0.0,
        seed=int(cfg.seed),
        test_acc=_f(test_metrics.get("test_acc")),
        test_loss=_f(test_metrics.get("test_loss")),
        test_samples=getattr(model, "samples_seen", {}).get("test") if test_metrics else None,
        test_samples_total=test_set_size(job.datamodule) if test_metrics else None,
        val_acc=val_acc,
        fit_seconds=job.state.fit_seconds,
        epoch_seconds=job.state.epoch_seconds,
        epochs=trainer.current_epoch,
        pruning_history=pruner.history if pruner is not None else [],
        overrides=list(overrides or []),
        versions=versions(),
        budget=budget_record(pruner),
        **measured,
        **(quantized or {}),
    )


def budget_record(pruner: Any) -> dict[str, Any] | None:
    """A budget run's ``{"metric", "limit", "reached", "dense"}`` (None without a budget):
    the configured limit, and the cost the last pruning step reached."""
    if pruner is None or getattr(pruner, "budget", None) is None:
        return None
    metric, limit = pruner.budget.metric, pruner.budget.limit
    cost = next((h["cost"] for h in reversed(pruner.history) if h.get("cost")), {})
    return {"metric": metric, "limit": int(limit), "reached": cost.get("reached"),
            "dense": cost.get("dense")}


def run_or_record_failure(cfg: DictConfig, run_dir: str | Path, overrides: list[str],
                          multirun: bool, on_error: Callable[[BaseException], Any] | None = None,
                          ) -> dict[str, Any] | None:
    """``run`` for the entry point: a bad-input error becomes one line and a failed.json.

    In a sweep (``multirun``) an error returns None; ``on_error`` is given it (the sweep's
    exit status is derived from its jobs' errors).
    """
    try:
        result = run(cfg, run_dir, overrides)
        failed = Path(run_dir) / FAILED
        if failed.exists():
            failed.unlink()
        return result
    except RunInProgressError as err:
        # another process owns this folder: neither a failure nor ours to record
        if not multirun:
            raise
        log.warning(f"in progress elsewhere, skipped: {err}")
        if on_error is not None:
            on_error(err)
        return None
    except Exception as caught:
        err = user_error(caught) or caught  # a ConfigError wrapped by a library is still one
        # in a sweep one bad job must not stop the others; the report lists it as failed
        if not multirun and not isinstance(err, PrunelabError):
            raise
        record = Failure(
            status="diverged" if isinstance(err, DivergedError) else "failed",
            error=one_line(err),
            error_type=type(err).__name__, overrides=list(overrides),
        )
        if isinstance(err, DivergedError):
            record.epoch, record.step, record.stage = err.epoch, err.step, err.stage
        try:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            write_json(Path(run_dir) / FAILED, record.to_json())
        except PrunelabError:
            pass  # the folder itself cannot be written (full disk): the error says so
        if not multirun:
            if err is caught:
                raise
            raise err from None
        log.error("job failed: %s: %s", type(err).__name__, err)
        if on_error is not None:
            on_error(err)
        return None


# ------------------------------------------------------------------------ check and translate


def check_config(cfg: DictConfig) -> None:
    """The keys only the pipeline reads, before any data or model is touched: one line each.

    Everything a function takes (the schedule, the method, the targets...) is checked by that
    function when :func:`build` calls it, not here.
    """
    check_configs(cfg.model, cfg.data)  # the pair's declarations (input kind, classes, shape)
    check_ranges(cfg)


def check_ranges(cfg: DictConfig) -> None:
    """Values whose type is right but whose meaning is not: each fails with one line (the
    top-level, Trainer, optimizer and scheduler numbers: :mod:`prunelab.bounds`)."""
    check_run_values(cfg)
    check_learning_rate(cfg)


def check_learning_rate(cfg: DictConfig) -> None:
    """One learning-rate key: with a one-cycle schedule the optimizer's ``lr`` is its peak.

    torch's OneCycleLR overwrites the optimizer's lr with ``max_lr`` / ``div_factor`` and never
    reads it, so a sweep over ``model.optimizer.lr`` would silently give identical runs. The
    configs derive ``max_lr`` from ``model.optimizer.lr``; setting the two apart is refused.
    """
    sched, opt = cfg.model.get("scheduler"), cfg.model.get("optimizer")
    if not sched or not opt or "OneCycleLR" not in str(sched.get("_target_", "")):
        return
    max_lr, lr = sched.get("max_lr"), opt.get("lr")
    if max_lr is not None and lr is not None and float(max_lr) != float(lr):
        raise ConfigError(
            f"model.scheduler.max_lr={max_lr} differs from model.optimizer.lr={lr}, which "
            "OneCycleLR would ignore: set the peak learning rate with model.optimizer.lr only "
            "(model.scheduler.max_lr follows it)"
        )


def import_modules(names: list[str]) -> None:
    """Import the config's ``imports`` (modules that register criteria) before anything uses them."""
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            raise ConfigError(f"imports: cannot import {name!r} ({err}); install it or add its "
                              "folder to PYTHONPATH") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints through :func:`prunelab.io.atomic_save`: a kill or a power cut mid-save keeps
    the previous one; a full disk is one line."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:  # as TorchCheckpointIO: a local file takes none
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_save(path, lambda f: torch.save(checkpoint, f))


class LastCheckpoint(Checkpoint):
    """Rewrites ``last.ckpt`` at the end of every training epoch, after the pruning step.

    Why not ``ModelCheckpoint``: Lightning calls every hook of every callback on every batch,
    and ModelCheckpoint's hooks run per-batch checks and rebuild its state key (a dict repr) at
    each call (docs/results/README.md); one rolling file at epoch ends is all a run needs. Being a
    ``Checkpoint``, it runs after the other callbacks' and the module's epoch-end hooks.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        # every rank calls it; rank 0 writes. weights_only=False: the full training state (not
        # about loading, which is always weights_only=True), said explicitly to keep the log quiet
        trainer.save_checkpoint(self.path, weights_only=False)


def versions() -> dict[str, str]:
    return {
        "prunelab": prunelab.__version__,
        "torch": torch.__version__,
        "lightning": L.__version__,
        "python": platform.python_version(),
    }


def compact_and_measure(model: L.LightningModule, example: torch.Tensor, run_dir: Path) -> dict[str, Any]:
    """Remove zeroed filters/neurons, save the small model, time dense-equivalent/masked/compact."""
    net = network_of(model)
    small, _ = compact_with_report(net, example)
    save_compact(small, run_dir / COMPACT_MODEL, example,
                 dynamic_dims=(0,) if example.is_floating_point() else (0, 1))
    return efficiency_report(None, net, example, compact_model=small)


def _has_test(trainer: L.Trainer) -> bool:
    return trainer.limit_test_batches != 0


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


def _example_input(datamodule: L.LightningDataModule, model: L.LightningModule) -> torch.Tensor | None:
    try:
        batch = next(iter(datamodule.val_dataloader()))
    except Exception:
        return None
    x = batch[0][:1].to(model.device)
    return x
