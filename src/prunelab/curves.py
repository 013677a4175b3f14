"""Per-epoch curves that survive kills and resumes: every epoch once, none lost, none twice.

Lightning's CSV logger deletes ``metrics.csv`` whenever a process starts in the run folder, so a
resumed run kept only the epochs after its last restart. Here a resumed run keeps the rows of the
epochs its checkpoint covers and drops those of epochs it is about to redo; TensorBoard gets a
``purge_step`` at the checkpoint's step, which hides the redone steps of earlier event files.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from prunelab.io import atomic_write, write_error


def _epoch(row: dict[str, str]) -> int | None:
    try:
        return int(float(row.get("epoch") or ""))
    except ValueError:
        return None


def _keep(row_epoch: int | None, resume_epoch: int) -> bool:
    return resume_epoch > 0 if row_epoch is None else row_epoch < resume_epoch


def keep_rows_before(path: Path, epoch: int) -> list[str]:
    """Rewrite ``path`` (atomically) with only the rows of epochs before ``epoch``; its header.

    Rows without an epoch are kept unless the run starts over (``epoch`` 0). No file, or no row
    left: the file is removed and ``[]`` returned.
    """
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = [r for r in reader if _keep(_epoch(r), epoch)]
    if not rows:
        os.unlink(path)
        return []
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, text.getvalue())
    return header


class _ResumingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resume_epoch: int) -> None:
        self._resume_epoch = resume_epoch
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        # Lightning deletes metrics.csv here; keep what the checkpoint's epochs logged instead
        self.metrics_keys = keep_rows_before(Path(self.metrics_file_path), self._resume_epoch)

    def save(self) -> None:
        try:
            super().save()
        except OSError as err:
            raise write_error(err, self.metrics_file_path) from None


class ResumingCSVLogger(CSVLogger):
    """``metrics.csv`` across resumes: rows of epochs before ``resume_epoch`` are kept, later
    ones (about to be redone) dropped; ``resume_epoch=0`` starts the file over."""

    def __init__(self, *args: Any, resume_epoch: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_epoch = resume_epoch

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumingWriter(self.log_dir, self._resume_epoch)
        return self._experiment


def csv_logger(save_dir: str | Path, resume_epoch: int = 0) -> ResumingCSVLogger:
    """``logger.csv``: ``<save_dir>/metrics.csv``, keeping the epochs a resumed checkpoint covers."""
    return ResumingCSVLogger(save_dir=str(save_dir), name="", version="", resume_epoch=resume_epoch)


def tensorboard_logger(save_dir: str | Path, resume_step: int = 0) -> TensorBoardLogger:
    """``logger.tensorboard``: event files in ``<save_dir>/tb`` (see :func:`resuming_tensorboard`)."""
    return resuming_tensorboard(Path(save_dir), resume_step)


def resuming_tensorboard(save_dir: Path, resume_step: int) -> TensorBoardLogger:
    """TensorBoard events in ``<save_dir>/tb``; steps from ``resume_step`` on, logged by an
    interrupted process, are purged from view (TensorBoard's ``purge_step``)."""
    return TensorBoardLogger(save_dir=str(save_dir), name="", version="tb", default_hp_metric=False,
                             purge_step=resume_step)
