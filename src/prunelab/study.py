"""``-m hydra/sweeper=optuna``: Hydra's Optuna sweeper, resumable, its directions from
``objectives``.

The hydra-optuna-sweeper plugin's search space (``hydra.sweeper.params``: ``choice``,
``interval``, ``range``, ``tag(log, ...)``), samplers and keys are used as they are; what
differs is what a relaunch does and where the directions come from:

- the study lives in a storage that outlives the process (``<sweep dir>/optuna.db`` by
  default), and ``n_trials`` counts every trial of the study, not those of one launch: a
  relaunch of the same command runs only the trials still missing;
- a trial that was running when the search was killed (Optuna leaves it ``RUNNING`` forever) is
  launched again with the parameters it was asked with, so it lands in the same job folder and
  continues from that folder's ``last.ckpt``; a finished trial is never rerun;
- each trial is told how its job ended: the values of the config's ``objectives``
  (:mod:`prunelab.objectives`), or ``FAIL`` for a failed or diverged run (or one whose
  results.json lacks an objective), with the job folder and prunelab's status as user
  attributes;
- identical parameters asked twice in one batch run once (they share a job folder).

Trials run through the configured launcher (``hydra/launcher=joblib``, SLURM via submitit),
``n_jobs`` at a time, each a normal prunelab job folder; the sweep's summary and exit status
are :mod:`prunelab.hydra_callbacks`'. A second launch of a study that is running now finds its
running trials' folders locked and leaves them to it.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_params_from_overrides,
)
from omegaconf import DictConfig, OmegaConf
from optuna.trial import Trial, TrialState

from prunelab.bounds import MAX_STEPS, MAX_THREADS, integer, number
from prunelab.errors import ConfigError, PrunelabError, one_line
from prunelab.hydra_callbacks import job_record
from prunelab.io import atomic_write
from prunelab.messages import SWEEP_LOGGERS, get_logger
from prunelab.objectives import Objective, parse
from prunelab.paths import OPTUNA_RESULTS
from prunelab.report.pareto import shown_value

log = get_logger(SWEEP_LOGGERS[1])

FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
#: user attributes of each trial: its job folder (relative to the sweep folder), prunelab's
#: status of the job (ok, failed, diverged) and, when it has no values, why
FOLDER, STATUS, ERROR = "prunelab_folder", "prunelab_status", "prunelab_error"
#: user attribute of the study: the objectives it was created for
OBJECTIVES = "prunelab_objectives"


@dataclass
class Outcome:
    state: TrialState
    values: list[float] | None
    record: dict[str, Any]  # prunelab.hydra_callbacks.job_record's


class StudySweeper(OptunaSweeperImpl):
    """The plugin's sweeper with a resumable :meth:`sweep` (see the module)."""

    def __init__(self, sampler: Any, direction: Any, storage: Any, study_name: Any,
                 n_trials: int, n_jobs: int, max_failure_rate: float, search_space: Any,
                 custom_search_space: Any, params: Any) -> None:
        _one_line(lambda: (integer("hydra.sweeper.n_trials", n_trials, 0, MAX_STEPS),
                           integer("hydra.sweeper.n_jobs", n_jobs, 1, MAX_THREADS),
                           number("hydra.sweeper.max_failure_rate", max_failure_rate, 0.0, 1.0)))
        super().__init__(sampler, direction, storage, study_name, n_trials, n_jobs,
                         max_failure_rate, search_space, custom_search_space, params)
        self.objectives: list[Objective] = []

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        debug = OmegaConf.select(config, "verbosity", default="normal") == "debug"
        optuna.logging.set_verbosity(optuna.logging.DEBUG if debug else optuna.logging.WARNING)
        self.objectives = _one_line(lambda: parse(config.objectives))
        _one_line(lambda: check_direction(self.direction, self.objectives))

    def sweep(self, arguments: list[str]) -> None:
        _one_line(lambda: self._sweep(arguments))

    # ------------------------------------------------------------------------------------
    def _sweep(self, arguments: list[str]) -> None:
        if len(self.objectives) > 1 and isinstance(self.sampler, optuna.samplers.CmaEsSampler):
            raise ConfigError(
                f"hydra/sweeper/sampler=cmaes optimises one objective, objectives names "
                f"{len(self.objectives)}: choose nsgaii, motpe, tpe or random")
        space, fixed = self._space(arguments)
        study = self._study()
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in FINISHED for t in trials)
        to_go = max(0, self.n_trials - done)
        resume = [Trial(study, t._trial_id) for t in trials if t.state == TrialState.RUNNING]
        resume = resume[:to_go]
        where = f"study {study.study_name} ({self.storage})"
        if trials:
            log.info(f"{where}: {done} of {self.n_trials} trials finished; "
                     f"{len(resume)} interrupted one(s) resumed, {to_go - len(resume)} new")
            # a seeded sampler would otherwise draw the first launch's parameters again
            self.sampler.reseed_rng()
        else:
            log.info(f"{where}: {self.n_trials} trials, {self.n_jobs} at a time, "
                     f"{type(self.sampler).__name__}, objectives "
                     + ", ".join(map(str, self.objectives)))
        while to_go > 0:
            n = min(to_go, self.n_jobs)
            batch, resume = resume[:n], resume[n:]
            batch += [study.ask() for _ in range(n - len(batch))]
            self._run(study, batch, space, fixed)
            to_go -= n
        self._finish(study)

    def _space(self, arguments: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The search space and fixed parameters from ``hydra.sweeper.params`` and the command
        line, as the plugin reads them (a grid sampler gets its grid here)."""
        self._process_searchspace_config()
        params_conf = [*self._parse_sweeper_params_config(), *arguments]
        try:
            space_from_overrides, fixed = create_params_from_overrides(params_conf)
        except Exception as err:  # the plugin's assertion, or Hydra's parse
            raise ConfigError(f"hydra.sweeper.params: {one_line(err)}") from None
        space = dict(self.search_space_distributions or {})
        space.update(space_from_overrides)
        if (isinstance(self.sampler, functools.partial)
                and self.sampler.func == optuna.samplers.GridSampler):
            grid = {name: self._to_grid_sampler_choices(d) for name, d in space.items()}
            self.sampler = self.sampler(grid)
            total = 1
            for v in grid.values():
                total *= len(v)
            self.n_trials = min(self.n_trials, total)
        for name in fixed:
            space.pop(name, None)
        return space, fixed

    def _study(self) -> optuna.study.Study:
        """The study in the storage, created or loaded; one line if it was made for other
        objectives."""
        directions = [o.optuna for o in self.objectives]
        named = [str(o) for o in self.objectives]
        try:
            study = optuna.create_study(study_name=self.study_name, storage=self.storage,
                                        sampler=self.sampler, directions=directions,
                                        load_if_exists=True)
        except ValueError as err:
            if "direction" not in str(err):
                raise ConfigError(f"hydra.sweeper.storage={self.storage}: {one_line(err)}") from None
            # the stored study's directions are not these (optuna refuses to change them)
            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        except (ImportError, OSError) as err:
            raise ConfigError(f"hydra.sweeper.storage={self.storage}: {one_line(err)}") from None
        except Exception as err:  # SQLAlchemy's errors: a path that is no database ...
            if type(err).__module__.split(".")[0] != "sqlalchemy":
                raise
            raise ConfigError(f"hydra.sweeper.storage={self.storage}: {one_line(err)}") from None
        stored = [d.name.lower() for d in study.directions]
        before = study.user_attrs.get(OBJECTIVES)
        if before is None and not study.trials and stored == directions:
            study.set_user_attr(OBJECTIVES, named)
        elif before != named or stored != directions:
            was = before or [f"?:{d.removesuffix('imize')}" for d in stored]
            raise ConfigError(
                f"study {study.study_name} in {self.storage} was created for objectives "
                f"[{', '.join(was)}], not [{', '.join(named)}]: give this search another name= "
                "(or hydra.sweeper.study_name=), or delete that study")
        return study

    def _configure(self, batch: list[Trial], space: dict[str, Any], fixed: dict[str, Any]
                   ) -> list[tuple[str, ...]]:
        try:
            return [tuple(o) for o in self._configure_trials(batch, space, fixed)]
        except ValueError as err:  # a resumed trial asked over another search space
            raise ConfigError(
                f"the study's trials were asked over another search space ({one_line(err)}): "
                "relaunch with the search space it was started with, or give this search "
                "another name=") from None

    def _run(self, study: optuna.study.Study, batch: list[Trial], space: dict[str, Any],
             fixed: dict[str, Any]) -> None:
        """Launch one batch of trials (each set of parameters once) and tell the study how
        each ended."""
        overrides = self._configure(batch, space, fixed)
        unique = list(dict.fromkeys(overrides))
        returns = self.launcher.launch(unique, initial_job_idx=self.job_idx)
        self.job_idx += len(returns)
        by_overrides = dict(zip(unique, returns, strict=True))
        failures = 0
        for trial, ov in zip(batch, overrides, strict=True):
            outcome = self._outcome(by_overrides[ov])
            if outcome is None:
                log.warning(f"trial {trial.number}: its job folder is in use by another "
                            "process; left to it (the trial stays running)")
                continue
            rec = outcome.record
            trial.set_user_attr(FOLDER, rec.get("folder"))
            trial.set_user_attr(STATUS, rec.get("status"))
            if outcome.state != TrialState.COMPLETE:
                trial.set_user_attr(ERROR, rec.get("error") or "see its folder")
                failures += 1
            try:
                study.tell(trial, outcome.values, outcome.state)
            except RuntimeError as err:  # told (the state is stored first), as the plugin does:
                if "Study.stop" not in str(err):  # a grid sampler that has seen its whole grid
                    raise
        if failures and failures / len(batch) > self.max_failure_rate:
            for ret in returns:
                _ = ret.return_value  # a job that raised: Hydra shows it (as the plugin does)

    def _outcome(self, ret: JobReturn) -> Outcome | None:
        """How a job ended, for its trial (None: another process owns its folder)."""
        error = ret._return_value if ret.status == JobStatus.FAILED else None
        value = None if error is not None else ret._return_value
        if ret.hydra_cfg is not None:
            rec = job_record(ret.hydra_cfg, value, error)
        else:
            rec = {"folder": None, "status": "failed",
                   "error": f"{type(error).__name__}: {one_line(error)}" if error else "no job"}
        if rec.get("state") == "in progress elsewhere":
            return None
        if rec.get("status") != "ok":
            return Outcome(TrialState.FAIL, None, rec)
        values = list(value) if isinstance(value, list | tuple) else [value]
        missing = [o.key for i, o in enumerate(self.objectives)
                   if i >= len(values) or not isinstance(values[i], int | float)]
        if missing:
            rec = {**rec, "error": f"results.json has no value of {', '.join(missing)} "
                                   "(an objective); the trial counts as failed"}
            return Outcome(TrialState.FAIL, None, rec)
        return Outcome(TrialState.COMPLETE, [float(v) for v in values[:len(self.objectives)]],
                       rec)

    def _finish(self, study: optuna.study.Study) -> None:
        """The best trial(s) into optimization_results.yaml (as the plugin writes it, with each
        trial's folder) and the log."""
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        failed = sum(t.state == TrialState.FAIL for t in trials)
        log.info(f"study {study.study_name}: {len(trials)} trials, {len(complete)} complete, "
                 f"{failed} failed")
        if not complete:
            return
        best = study.best_trials if len(self.objectives) > 1 else [study.best_trial]
        best = sorted(best, key=lambda t: t.values)
        solutions = [{"number": t.number, "params": t.params, "values": t.values,
                      "folder": t.user_attrs.get(FOLDER)} for t in best]
        if len(self.objectives) > 1:
            payload: dict[str, Any] = {"name": "optuna", "solutions": solutions}
            log.info(f"Pareto front: {len(best)} of {len(complete)} complete trials")
        else:
            payload = {"name": "optuna", "best_params": best[0].params,
                       "best_value": best[0].value, "best_folder": solutions[0]["folder"]}
            log.info("best trial:")
        for t in best:
            log.info("  " + describe(self.objectives, t.values) + f": {t.user_attrs.get(FOLDER)}")
        path = Path(str(self.config.hydra.sweep.dir)) / OPTUNA_RESULTS
        atomic_write(path, OmegaConf.to_yaml(OmegaConf.create(payload)))


def describe(objectives: Sequence[Objective], values: Sequence[float]) -> str:
    """``val_acc 98.76 %, macs_effective 312k``, as the report shows them."""
    return ", ".join(f"{o.key} {shown_value(o, v, ' %')}"
                     for o, v in zip(objectives, values, strict=True))


def check_direction(direction: Any, objectives: Sequence[Objective]) -> None:
    """``hydra.sweeper.direction``, when set, must say what ``objectives`` says."""
    if direction is None:
        return
    given = list(direction) if isinstance(direction, list | tuple) or OmegaConf.is_list(
        direction) else [direction]
    given = [str(getattr(d, "name", d)).lower() for d in given]
    wanted = [o.optuna for o in objectives]
    if given != wanted:
        raise ConfigError(
            f"hydra.sweeper.direction={given} disagrees with objectives="
            f"[{','.join(map(str, objectives))}]: the directions come from objectives (key:max "
            "or key:min); leave hydra.sweeper.direction null")


def _one_line(call: Any) -> Any:
    """``call()``; a prunelab error ends the command as one line and its exit status (Hydra
    would print a traceback for an exception raised in a sweeper)."""
    try:
        return call()
    except PrunelabError as err:
        print(f"prunelab: error: {one_line(err)}", file=sys.stderr)
        sys.exit(err.exit_code)
