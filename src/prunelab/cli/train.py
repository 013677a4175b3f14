"""``prunelab [-m] [overrides]``: compose the config with Hydra and run one job (or a sweep).

The subcommands that are not Hydra jobs (``prunelab report`` ...) are dispatched before this
module is reached; see :mod:`prunelab.cli`.

Exit status (``docs/guide/cli.md``): a run's is its error's (:func:`prunelab.errors.exit_status`); a
sweep runs all its jobs, then exits with the status its jobs' errors give
(:func:`prunelab.hydra_callbacks.sweep_status`). A prunelab error raised anywhere in a job ends
as one line, never as Hydra's "Error executing job" and exit 1.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from prunelab import hydra_callbacks, messages, runfolder
from prunelab.choices import check_command_line
from prunelab.cli import summary as cli_summary
from prunelab.config import register
from prunelab.errors import PrunelabError, RunInProgressError, exit_status, one_line, user_error
from prunelab.objectives import JobResult, job_values
from prunelab.objectives import parse as parse_objectives
from prunelab.paths import CONF_DIR
from prunelab.runlock import is_rank_zero
from prunelab.study_config import register_optuna_sweeper

register()
register_optuna_sweeper()  # hydra/sweeper=optuna: prunelab's (prunelab.study_config)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _app(cfg: DictConfig) -> JobResult:
    """One job; returns the values of the config's ``objectives`` (what a sweeper such as
    Optuna's optimises) with, as ``.record``, how the job ended (what the sweep summary reads)."""
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        return _job(cfg, hc, multirun)
    except Exception as err:
        found = user_error(err)
        if found is None:
            raise  # a bug: Hydra shows its traceback (exit status 1)
        if multirun:  # the job failed before it ran: the sweep goes on and names it
            return JobResult.of([], {"state": None, "status": "failed", "exit": found.exit_code,
                                     "error": f"{type(found).__name__}: {one_line(found)}"})
        print(f"prunelab: error: {one_line(found)}", file=sys.stderr)
        sys.exit(found.exit_code)


def _job(cfg: DictConfig, hc: Any, multirun: bool) -> JobResult:
    """One job: claim its folder, then run it (or find it done); what the sweep records."""
    # lazy: torch and Lightning, which --help and composing the config do without (the
    # logging setup below tames Lightning's once it is imported)
    from prunelab.run import run_or_record_failure

    objectives = parse_objectives(cfg.objectives)
    run_dir = hc.runtime.output_dir
    overrides = list(hc.overrides.task)
    if is_rank_zero():  # DDP's other ranks re-run this command in rank 0's folder
        # before anything is written there: a folder of another run, or of the user's, is
        # refused (prunelab.runfolder); its .hydra/ files are written only after the check
        runfolder.claim(run_dir, cfg, HydraConfig.instance().cfg, overrides,
                        "hydra.sweep.dir" if multirun else "hydra.run.dir")
    messages.apply(cfg.verbosity)
    if cfg.verbosity == "quiet":
        cfg.trainer.enable_progress_bar = False
    state = cli_summary.run_state(run_dir, cfg.ckpt_path)
    errors: list[BaseException] = []
    results = run_or_record_failure(cfg, run_dir, overrides, multirun, on_error=errors.append)
    if not multirun:
        cli_summary.show(cli_summary.stored_results(run_dir, results), run_dir, overrides, state)
    if errors and isinstance(errors[0], RunInProgressError):
        return JobResult.of([], {"state": "in progress elsewhere",
                                 "status": "in progress elsewhere",
                                 "exit": exit_status(errors[0]), "error": one_line(errors[0])})
    return JobResult.of(job_values(objectives, results), {
        "state": state, "status": None if results is None else results.get("status"),
        "exit": exit_status(errors[0]) if errors else 0})


def main() -> None:
    """Check the group choices on the command line, then let Hydra run the job(s); a sweep
    exits with the status of its failed jobs (0 when every job succeeded)."""
    try:
        renamed = check_command_line(CONF_DIR, sys.argv[1:])
    except PrunelabError as err:
        print(f"prunelab: error: {one_line(err)}", file=sys.stderr)
        sys.exit(err.exit_code)
    for note in renamed:  # once per command, not once per job of a sweep
        print(f"warning: deprecated: {note}", file=sys.stderr)
    hydra_callbacks.last_sweep_status = None
    _app()
    if hydra_callbacks.last_sweep_status:
        sys.exit(hydra_callbacks.last_sweep_status)


if __name__ == "__main__":
    main()
