"""One run, as a pipeline: check → build → fit → test → results.json.

:func:`run` reads top to bottom: :func:`check_config` (the pipeline's own keys), :func:`build`
(config → callback, model, data, Trainer; each object checks its own arguments), :func:`fit`,
:func:`run_test`, :func:`collect` (the :class:`prunelab.results.Results` schema) and the files.
The config reaches the objects through :mod:`prunelab.config`'s translation, which copies no
field list. Nothing here reads Hydra's globals.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Checkpoint, TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

import prunelab
from prunelab.bounds import check_run_values
from prunelab.compat import arguments, check_configs, check_data, without_declarations
from prunelab.config import callback_kwargs, check_keys, command_line_message, plan_kwargs
from prunelab.errors import CheckpointError, ConfigError, DivergedError, RunInProgressError
from prunelab.lightning_ext import NoProfiler
from prunelab.loading import load_checkpoint
from prunelab.logs import get_logger
from prunelab.models import network_of
from prunelab.outputs import remove_quietly, write_error
from prunelab.paths import (
    COMPACT_MODEL,
    FAILED,
    FINAL_MODEL,
    RESULTS,
    last_checkpoint,
    without_no_effect_keys,
)
from prunelab.pruning.callback import PruningCallback
from prunelab.pruning.metrics import summarize
from prunelab.pruning.schedules import PruneStep, build_plan, validate_plan
from prunelab.results import Failure, Results
from prunelab.runlock import RunLock, is_rank_zero

log = get_logger(__name__)


# ------------------------------------------------------------------------ the pipeline


def run(cfg: DictConfig, run_dir: str | Path, overrides: list[str] | None = None,
        callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Train, prune, test and write ``results.json`` in ``run_dir``; return the results.

    A run whose results.json exists is not repeated: its results are returned as they are.
    ``callbacks`` are added to prunelab's own (instrumentation, early stopping, benchmarks).
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
    with _config_keys():
        if not is_rank_zero():  # DDP ranks > 0 work under rank 0's lock
            return _run(cfg, run_dir, overrides, callbacks)
        with RunLock(run_dir) as lock:
            if lock.taken_over:
                log.warning(f"taking over the lock of process {lock.taken_over.get('pid')} on "
                            f"{lock.taken_over.get('host')}, which is no longer running")
            return _run(cfg, run_dir, overrides, callbacks)


@contextlib.contextmanager
def _config_keys() -> Iterator[None]:
    """The pruning library's messages name Python arguments (``round_to=3``); a run configured
    by Hydra names the config keys instead (``pruning.round_to=3``)."""
    try:
        yield
    except ConfigError as err:
        if err.args and isinstance(err.args[0], str):
            err.args = (command_line_message(err.args[0]), *err.args[1:])
        raise


def _run(cfg: DictConfig, run_dir: Path, overrides: list[str] | None,
         callbacks: list[L.Callback] | None) -> dict[str, Any]:
    """``run``'s work, with the run folder locked."""
    import_modules(list(cfg.imports))
    check_config(cfg, overrides)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    config = result_config(cfg)
    resume = resolve_ckpt(cfg.ckpt_path, run_dir, config)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    job = build(cfg, run_dir, config, resume, callbacks)
    from prunelab.trackers import finished_on_error, log_results

    with finished_on_error(job.trainer):  # logger=mlflow / wandb: a failed run ends as failed
        fit(job, resume)
        val_acc, test_metrics = run_test(job, resume)
        if job.trainer.is_global_zero:
            save_final_model(job.model, run_dir)
        results = collect(cfg, job, val_acc, test_metrics, overrides).to_json()
        if job.trainer.is_global_zero:
            write_json_atomic(run_dir / RESULTS, results)
            log_results(job.trainer.loggers, results)
    return results


@dataclass
class Job:
    """What :func:`build` makes from the config, and what the later steps use."""

    pruner: PruningCallback | None
    model: L.LightningModule
    datamodule: L.LightningDataModule
    trainer: L.Trainer
    state: RunState
    run_dir: Path
    compact: bool  # pruning.compact: compact and time the network after the test


def build(cfg: DictConfig, run_dir: Path, config: dict[str, Any], resume: Resume | None,
          callbacks: list[L.Callback] | None = None) -> Job:
    """Config → objects, cheapest first, so bad input fails before any data is read.

    :func:`make_objects` builds (and so checks) the callback, the Trainer's arguments, the data
    module and the model; only then is the data prepared (a missing data set fails there,
    before any Lightning output).
    """
    pruner, trainer_args, model, datamodule = make_objects(cfg)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        datamodule.prepare_data()
        check_data(cfg.model, cfg.data.name, datamodule)  # classes and shapes found in the files
    state = RunState(config)
    # checkpoints/last.ckpt, rewritten (atomically) at the end of every epoch, after pruning
    own = [state, LastCheckpoint(last_checkpoint(run_dir)), *([pruner] if pruner else [])]
    if cfg.trainer.enable_progress_bar:
        own.append(TQDMProgressBar(refresh_rate=max(1, int(cfg.progress_refresh_rate))))
    if trainer_args.get("profiler") is None:
        trainer_args["profiler"] = NoProfiler()
    trainer = make_trainer(trainer_args, callbacks=[*own, *(callbacks or [])],
                           logger=make_loggers(cfg, run_dir, resume) or False,
                           default_root_dir=str(run_dir), plugins=[AtomicCheckpointIO()])
    if trainer.is_global_zero:
        from prunelab.trackers import log_start

        log_start(trainer.loggers, config, run_dir)
    return Job(pruner, model, datamodule, trainer, state, run_dir, bool(cfg.pruning.compact))


def make_objects(cfg: DictConfig) -> tuple[PruningCallback | None, dict[str, Any],
                                           L.LightningModule, L.LightningDataModule]:
    """The callback, the Trainer's arguments, the data module and the model (its targets
    found), each checking its own arguments; no data is read yet. The Trainer's arguments are
    tried on a bare Trainer (Lightning checks the accelerator, strategy and devices only when
    one is built); the data module comes before the model, whose sizes may follow the data's
    (``data.vocab_size``), so that a bad value is named by its own key."""
    pruner = make_callback(cfg)
    trainer_args = trainer_kwargs(cfg)
    make_trainer(trainer_args, logger=False, enable_checkpointing=False)
    datamodule = instantiate_data(cfg)
    model = instantiate_model(cfg)
    if pruner is not None:
        pruner.bind(model)
    return pruner, trainer_args, model, datamodule


def make_trainer(trainer_args: dict[str, Any], **own: Any) -> L.Trainer:
    """``lightning.Trainer``; an argument it refuses (``trainer.accelerator=gpu`` without one,
    ``trainer.strategy=x``) is one line naming the section."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return L.Trainer(**trainer_args, **own)
    except (MisconfigurationException, ValueError, TypeError) as err:
        raise ConfigError(f"trainer: {str(err).strip().splitlines()[0]}") from None


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
    buffer = io.BytesIO()
    torch.save(network_of(model).state_dict(), buffer)
    write_bytes_atomic(run_dir / FINAL_MODEL, buffer.getvalue())


def collect(cfg: DictConfig, job: Job, val_acc: float | None, test_metrics: dict[str, Any],
            overrides: list[str] | None) -> Results:
    """The run's :class:`Results` (with the compaction's when ``pruning.compact``)."""
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
        schedule=cfg.pruning.schedule,
        method=cfg.pruning.method.name if pruner is not None else "dense",
        amount=pruner.final_target if pruner is not None else 0.0,
        seed=int(cfg.seed),
        test_acc=_f(test_metrics.get("test_acc")),
        test_loss=_f(test_metrics.get("test_loss")),
        val_acc=val_acc,
        fit_seconds=job.state.fit_seconds,
        epoch_seconds=job.state.epoch_seconds,
        epochs=trainer.current_epoch,
        pruning_history=pruner.history if pruner is not None else [],
        overrides=list(overrides or []),
        versions=versions(),
        budget=budget_record(pruner),
        **measured,
    )


def budget_record(pruner: Any) -> dict[str, Any] | None:
    """A budget run's ``{"metric", "limit", "reached", "dense"}`` (None without a budget):
    the configured limit, and the cost the last pruning step reached."""
    if pruner is None or getattr(pruner, "budget", None) is None:
        return None
    metric, limit = pruner.budget
    cost = next((h["cost"] for h in reversed(pruner.history) if h.get("cost")), {})
    return {"metric": metric, "limit": int(limit), "reached": cost.get("reached"),
            "dense": cost.get("dense")}


def run_or_record_failure(cfg: DictConfig, run_dir: str | Path, overrides: list[str],
                          multirun: bool) -> dict[str, Any] | None:
    """``run`` for the entry point: a bad-input error becomes one line and a failed.json."""
    from prunelab.errors import PrunelabError

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
        return None
    except Exception as err:
        # in a sweep one bad job must not stop the others; the report lists it as failed
        if not multirun and not isinstance(err, PrunelabError):
            raise
        record = Failure(
            status="diverged" if isinstance(err, DivergedError) else "failed",
            error=str(err).splitlines()[0] if str(err) else repr(err),
            error_type=type(err).__name__, overrides=list(overrides),
        )
        if isinstance(err, DivergedError):
            record.epoch, record.step, record.stage = err.epoch, err.step, err.stage
        try:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            write_json_atomic(Path(run_dir) / FAILED, record.to_json())
        except PrunelabError:
            pass  # the folder itself cannot be written (full disk): the error says so
        if not multirun:
            raise
        log.error("job failed: %s: %s", type(err).__name__, err)
        return None


# ------------------------------------------------------------------------ check and translate


def check_config(cfg: DictConfig, overrides: list[str] | None = None) -> None:
    """The keys only the pipeline reads, before any data or model is touched: one line each.

    Everything a function takes (the schedule, the method, the targets...) is checked by that
    function when :func:`build` calls it, not here. ``overrides``: the command line's, whose
    ``pruning`` keys must be ones the schedule reads.
    """
    check_keys(cfg, overrides or [])  # +foo=bar, pruning=none pruning.amount=0.5
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


def make_plan(cfg: DictConfig) -> list[PruneStep]:
    """:func:`build_plan` of the ``pruning`` section (it checks the schedule's keys)."""
    return build_plan(**plan_kwargs(cfg.pruning))


def make_callback(cfg: DictConfig, callback: type[PruningCallback] = PruningCallback
                  ) -> PruningCallback | None:
    """The ``pruning`` section as a ``callback`` (None for dense training).

    Two rules belong to the command line, not to the Python API: the plan must end within
    ``trainer.max_epochs``, and ``pruning.amount`` must not be set where the schedule ignores it.
    """
    p = cfg.pruning
    if p.schedule == "none":
        return None
    plan = make_plan(cfg)
    validate_plan(plan, cfg.trainer.max_epochs)
    if p.schedule == "explicit" and plan and float(p.amount) != plan[-1].target:
        raise ConfigError(
            f"pruning.amount={p.amount} has no effect with pruning=explicit: its targets are "
            f"pruning.steps (last: {plan[-1].target}); set pruning.steps instead"
        )
    kwargs = callback_kwargs(cfg, plan)
    try:
        inspect.signature(callback).bind(**kwargs)
    except TypeError as err:  # a key added with +pruning.<key>=... that the callback lacks
        raise ConfigError(f"pruning: {callback.__name__} {err}") from None
    with _config_keys():
        return callback(**kwargs)


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """The ``trainer`` section as ``lightning.Trainer``'s arguments (any of them; a name that is
    none of them is one line, with the closest ones)."""
    from prunelab.choices import closest_first

    args = OmegaConf.to_container(cfg.trainer, resolve=True)
    args.pop("description", None)
    valid = inspect.signature(L.Trainer).parameters
    own = {"callbacks", "logger", "default_root_dir", "plugins"}  # prunelab passes these
    unknown = sorted(k for k in args if k not in valid or k in own)
    if unknown:
        options = [k for k in valid if k not in own]
        raise ConfigError(f"trainer.{unknown[0]} is not an argument of lightning.Trainer "
                          f"(closest: {', '.join(closest_first(unknown[0], options)[:6])})")
    return args


def instantiate_model(cfg: DictConfig) -> L.LightningModule:
    """The model section's ``_target_`` with its arguments (declarations left out)."""
    return _instantiate("model", arguments(OmegaConf.to_container(cfg.model, resolve=True)))


def instantiate_data(cfg: DictConfig) -> L.LightningDataModule:
    """The data section's ``_target_`` with its arguments (declarations left out)."""
    return _instantiate("data", arguments(OmegaConf.to_container(cfg.data, resolve=True)))


def _instantiate(section: str, node: dict[str, Any]) -> Any:
    """Hydra's ``instantiate``, whose wrapper around a constructor's error would hide a
    one-line :class:`PrunelabError`, or turn arguments the class does not take into a trace."""
    from hydra.errors import InstantiationException

    from prunelab.errors import PrunelabError

    try:
        return instantiate(node)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, PrunelabError):
            raise cause from None
        if isinstance(cause, TypeError) and "argument" in str(cause):
            raise ConfigError(f"{section}: {str(err).splitlines()[0].rstrip(':')} "
                              f"{str(cause).splitlines()[0]}") from None
        raise


def result_config(cfg: DictConfig) -> dict[str, Any]:
    """The part of the config that determines a run's numbers (compared on resume)."""
    return _normalized(without_declarations(_without_descriptions(
        without_no_effect_keys(OmegaConf.to_container(cfg, resolve=True)))))


def _without_descriptions(node: Any) -> Any:
    """The config without its ``description`` texts (help only: editing one changes no run)."""
    if isinstance(node, dict):
        return {k: _without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_without_descriptions(v) for v in node]
    return node


def _normalized(config: dict[str, Any]) -> dict[str, Any]:
    """A dense run's pruning settings are inert: leave them out of comparisons."""
    pruning = config.get("pruning") or {}
    if pruning.get("schedule") == "none":
        return {**config, "pruning": {"schedule": "none"}}
    # options left at their "off" value leave a run's identity as it was before they existed
    pruning = dict(pruning)
    if not any((pruning.get("budget") or {}).values()):
        pruning.pop("budget", None)
    method = pruning.get("method")
    if isinstance(method, dict) and method.get("iterations") is None:
        pruning["method"] = {k: v for k, v in method.items() if k != "iterations"}
    return {**config, "pruning": pruning}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temp file and rename, so a kill mid-save keeps the previous one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        except OSError as err:  # full disk, read-only folder: one line, no .tmp left behind
            remove_quietly(tmp)
            raise write_error(err, path) from None


class LastCheckpoint(Checkpoint):
    """Rewrites ``last.ckpt`` at the end of every training epoch, after the pruning step.

    Why not ``ModelCheckpoint``: Lightning calls every hook of every callback on every batch,
    and ModelCheckpoint's hooks run per-batch checks and rebuild its state key (a dict repr) at
    each call, about 0.06 ms a batch; one rolling file at epoch ends is all a run needs. Being a
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


class RunState(L.Callback):
    """Epoch wall times and the run's config, kept in every checkpoint.

    The config lets a resume refuse a checkpoint made by a different model or pruning setup.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.epoch_seconds: list[float] = []
        self._t0 = 0.0
        self.seconds_before = 0.0  # fit time spent by earlier, interrupted processes
        self._start = time.perf_counter()

    @property
    def fit_seconds(self) -> float:
        """Fit time of the whole run, across resumes (up to each process's last checkpoint)."""
        return self.seconds_before + time.perf_counter() - self._start

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_seconds.append(time.perf_counter() - self._t0)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config, "epoch_seconds": self.epoch_seconds,
                "fit_seconds": self.fit_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch_seconds = list(state_dict.get("epoch_seconds", []))
        self.seconds_before = float(state_dict.get("fit_seconds", sum(self.epoch_seconds)))


@dataclass(frozen=True)
class Resume:
    """The checkpoint a run resumes from: its path, the first epoch to run, its global step."""

    path: str
    epoch: int
    step: int


def resolve_ckpt(ckpt_path: str | None, run_dir: Path, config: dict[str, Any]) -> Resume | None:
    """``last`` → the run dir's last.ckpt if any; a path must exist, load, and match the run.

    Loaded with ``weights_only=True``: a checkpoint whose pickle would call anything is refused
    before it runs (:func:`prunelab.loading.load_checkpoint`).
    """
    if ckpt_path in (None, "", "null", "none"):
        return None
    if ckpt_path == "last":
        path = last_checkpoint(run_dir)
        if not path.exists():
            return None
    else:
        path = Path(ckpt_path)
        if not path.exists():
            raise CheckpointError(f"ckpt_path={ckpt_path} does not exist")
    ckpt = load_checkpoint(path)
    saved = ckpt.get("callbacks") if isinstance(ckpt, dict) else None
    if not isinstance(saved, dict):
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a prunelab checkpoint (no callback state); "
            "move it away to start fresh, or pass ckpt_path=null"
        )
    state = next((v for k, v in saved.items() if k.startswith("RunState")), None)
    if state is None:
        raise CheckpointError(f"checkpoint {path} was not written by prunelab (no run state)")
    # the model's and data's names first: they say the most about a mismatch
    diff = sorted(_diff(_normalized(without_declarations(state["config"])), config, defaults=_schema_defaults()),
                  key=lambda d: (not d.split("=")[0].endswith(".name"), d))
    if diff:
        raise CheckpointError(
            f"checkpoint {path} belongs to a different run: {'; '.join(diff[:4])}; "
            "use another run directory or pass ckpt_path=null"
        )
    return Resume(str(path), epoch=int(ckpt.get("epoch", -1)) + 1,
                  step=int(ckpt.get("global_step", 0)))


def _diff(a: Any, b: Any, prefix: str = "", defaults: Any = None) -> list[str]:
    """``a`` (the checkpoint's config) against ``b``; a key the checkpoint lacks is no
    difference while it holds its schema default (an option added since keeps old runs)."""
    if isinstance(a, dict) and isinstance(b, dict):
        defaults = defaults if isinstance(defaults, dict) else {}
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a and k in defaults and b.get(k) == defaults[k]:
                continue
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.", defaults.get(k))
        return out
    return [] if a == b else [f"{prefix[:-1]}={a!r} in the checkpoint, {b!r} now"]


def _schema_defaults() -> dict[str, Any]:
    from prunelab.config import schema_node

    node = schema_node()
    return OmegaConf.to_container(node, resolve=False, throw_on_missing=False)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write via a temp file and rename, so a crash never leaves a half-written file."""
    write_bytes_atomic(path, json.dumps(payload, indent=2, default=float).encode())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """``data`` to ``path`` via a temp file and rename; a failed write (full disk, read-only
    folder) leaves no temp file and the previous ``path`` intact, and is one line (OutputError)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        remove_quietly(tmp)
        raise write_error(err, path) from None
    except BaseException:
        remove_quietly(tmp)
        raise


def versions() -> dict[str, str]:
    return {
        "prunelab": prunelab.__version__,
        "torch": torch.__version__,
        "lightning": L.__version__,
        "python": platform.python_version(),
    }


def make_loggers(cfg: DictConfig, run_dir: Path, resume: Resume | None = None) -> list:
    """CSV and TensorBoard loggers that keep the epochs ``resume``'s checkpoint covers."""
    from prunelab.loggers import ResumingCSVLogger, resuming_tensorboard

    loggers = []
    if cfg.logger.csv:
        loggers.append(ResumingCSVLogger(save_dir=str(run_dir), name="", version="",
                                         resume_epoch=resume.epoch if resume else 0))
    if cfg.logger.tensorboard:
        loggers.append(resuming_tensorboard(run_dir, resume.step if resume else 0))
    from prunelab.trackers import tracker_loggers

    loggers += tracker_loggers(cfg.logger, run_dir)  # logger=mlflow / wandb (rank 0 writes)
    return loggers


def compact_and_measure(model: L.LightningModule, example: torch.Tensor, run_dir: Path) -> dict[str, Any]:
    """Remove zeroed filters/neurons, save the small model, time dense-equivalent/masked/compact."""
    from prunelab.pruning.compaction import compact_with_report, save_compact
    from prunelab.pruning.latency import efficiency_report

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
