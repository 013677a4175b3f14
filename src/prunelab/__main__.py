"""``python -m prunelab`` / ``prunelab``: compose the config with Hydra and run one job.

Subcommands that are not Hydra jobs are separate modules: ``python -m prunelab.report``,
``python -m prunelab.evaluate``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from prunelab.config import register
from prunelab.errors import PrunelabError

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")

register()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _app(cfg: DictConfig) -> None:
    from prunelab.run import run_or_record_failure

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        run_or_record_failure(cfg, hc.runtime.output_dir, list(hc.overrides.task), multirun)
    except PrunelabError as err:
        print(f"prunelab: error: {err}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))


def main() -> None:
    """Console-script entry point."""
    _app()


if __name__ == "__main__":
    main()
