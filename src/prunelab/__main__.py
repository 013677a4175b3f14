"""``python -m prunelab`` / ``prunelab``: compose the config with Hydra and run one job.

Subcommands that are not Hydra jobs are separate modules: ``python -m prunelab.report``,
``python -m prunelab.evaluate``, ``python -m prunelab.compact``, ``python -m prunelab.search``.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from prunelab import confsource
from prunelab.config import register
from prunelab.errors import PrunelabError

# the checkout's conf/ folder, or pkg://prunelab.conf in an installed wheel (prunelab.confsource)
CONF_DIR = confsource.config_path()

register()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _app(cfg: DictConfig) -> dict[str, Any] | None:
    from prunelab import cli_summary, logs
    from prunelab.run import run_or_record_failure  # imports Lightning: tame it after

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = hc.runtime.output_dir
    try:
        logs.apply(cfg.verbosity)
        if cfg.verbosity == "quiet":
            cfg.trainer.enable_progress_bar = False
        state = cli_summary.run_state(run_dir, cfg.ckpt_path)
        results = run_or_record_failure(cfg, run_dir, list(hc.overrides.task), multirun)
    except PrunelabError as err:
        print(f"prunelab: error: {err}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))
    if not multirun:
        cli_summary.show(cli_summary.stored_results(run_dir, results), run_dir,
                         list(hc.overrides.task), state)
    return {"state": state, "status": None if results is None else results.get("status")}


def main() -> None:
    """Console-script entry point: check the group choices, then let Hydra run the job(s)."""
    from prunelab.choices import check_command_line

    try:
        check_command_line(CONF_DIR, sys.argv[1:])
    except PrunelabError as err:
        print(f"prunelab: error: {err}", file=sys.stderr)
        sys.exit(2)
    _app()


if __name__ == "__main__":
    main()
