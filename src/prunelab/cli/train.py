"""``prunelab [-m] [overrides]``: compose the config with Hydra and run one job (or a sweep).

The subcommands that are not Hydra jobs (``prunelab report`` ...) are dispatched before this
module is reached; see :mod:`prunelab.cli`.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from prunelab.config import register
from prunelab.errors import PrunelabError
from prunelab.paths import CONF_DIR

register()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _app(cfg: DictConfig) -> dict[str, Any] | None:
    from prunelab import logs
    from prunelab.cli import summary as cli_summary
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
    """Check the group choices on the command line, then let Hydra run the job(s)."""
    from prunelab.choices import check_command_line

    try:
        check_command_line(CONF_DIR, sys.argv[1:])
    except PrunelabError as err:
        print(f"prunelab: error: {err}", file=sys.stderr)
        sys.exit(2)
    _app()


if __name__ == "__main__":
    main()
