"""A logger of your own: one JSON line per logging step, in the run folder.

Any Lightning ``Logger`` (or a function that returns one) works. prunelab passes the run folder
as ``save_dir``, and ``resume_epoch`` / ``resume_step`` (the position a resumed run starts
from) to a logger that takes them, so it can drop what the interrupted run wrote after that
point (as ``prunelab.curves`` does for ``metrics.csv``). ``conf/logger/jsonl.yaml`` names it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only


class JsonlLogger(Logger):
    def __init__(self, save_dir: str, filename: str = "metrics.jsonl") -> None:
        super().__init__()
        self.path = Path(save_dir) / filename

    @property
    def name(self) -> str:
        return "jsonl"

    @property
    def version(self) -> int:
        return 0

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the run folder's .hydra/config.yaml holds them

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
