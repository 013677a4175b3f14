"""The schema of a run folder's ``results.json`` and ``failed.json``, defined once.

:func:`prunelab.run.run` writes :class:`Results` and the entry point writes :class:`Failure`;
what reads them (the report, the search, the summary, export) uses these key names, and a test
keeps the readers' keys within :data:`RESULT_KEYS`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# keys present only when their measurement ran; left out of the file rather than written null
_OPTIONAL = {"omit_if_none": True}


@dataclass
class Results:
    """One finished run. Accuracies are fractions in [0, 1]; ``None`` (null) when not measured."""

    status: str  # "ok" (failures are failed.json)
    model: str  # the config's model.name
    data: str  # the config's data.name
    schedule: str  # pruning.schedule ("none": dense)
    method: str  # pruning.method.name, or "dense"
    amount: float  # the plan's last target (0.0 dense); with a budget it only shaped the steps
    seed: int
    test_acc: float | None
    test_loss: float | None
    val_acc: float | None  # the last validation, after the last pruning step
    # prunelab.pruning.metrics.summarize
    sparsity_global: float  # zeros / weights of the pruned tensors
    sparsity_layers: dict[str, float]
    params_total: int
    params_nonzero: int
    fit_seconds: float  # across resumes
    epoch_seconds: list[float]
    epochs: int  # epochs trained
    pruning_history: list[dict[str, Any]]  # PruningCallback.history: one record per step
    overrides: list[str]  # the command line's overrides
    versions: dict[str, str]  # prunelab, torch, lightning, python
    # samples the test measured, and the test set's (fewer with trainer.limit_test_batches)
    test_samples: int | None = field(default=None, metadata=_OPTIONAL)
    test_samples_total: int | None = field(default=None, metadata=_OPTIONAL)
    # one forward pass on one example (absent when the data has no validation batch)
    macs_dense: int | None = field(default=None, metadata=_OPTIONAL)
    macs_effective: int | None = field(default=None, metadata=_OPTIONAL)
    # pruning.compact=true: prunelab.pruning.latency.efficiency_report
    latency_ms: dict[str, dict[str, float]] | None = field(default=None, metadata=_OPTIONAL)
    latency_ms_cuda: dict[str, dict[str, float]] | None = field(default=None, metadata=_OPTIONAL)
    speedup_compact: dict[str, float] | None = field(default=None, metadata=_OPTIONAL)
    latency_threads: int | None = field(default=None, metadata=_OPTIONAL)
    params_compact: int | None = field(default=None, metadata=_OPTIONAL)
    macs_compact: int | None = field(default=None, metadata=_OPTIONAL)
    # pruning.budget runs: what the run was asked for and what it reached, per the cost model
    # (equal to the compacted network's macs/params): {"metric": "macs" | "params", "limit": N,
    # "reached": M <= N, "dense": the dense network's cost}. A budget run is described by its
    # budget, not by ``amount``.
    budget: dict[str, Any] | None = field(default=None, metadata=_OPTIONAL)
    # quantize=ptq|qat (prunelab.quantize): what the stage did ({"method", "file", "seconds",
    # "calibration_batches" | "qat": {...}}), and the int8 model's accuracy on the test batches
    # test_acc was measured on
    quantize: dict[str, Any] | None = field(default=None, metadata=_OPTIONAL)
    int8_test_acc: float | None = field(default=None, metadata=_OPTIONAL)
    int8_test_samples: int | None = field(default=None, metadata=_OPTIONAL)

    def to_json(self) -> dict[str, Any]:
        """The file's content: every key, except optional measurements that did not run."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if not (f.metadata.get("omit_if_none") and getattr(self, f.name) is None)}


@dataclass
class Failure:
    """A run that stopped: ``failed.json``."""

    status: str  # "failed" or "diverged"
    error: str  # the error's first line
    error_type: str
    overrides: list[str]
    # diverged runs: where the loss stopped being finite
    epoch: int | None = field(default=None, metadata=_OPTIONAL)
    step: int | None = field(default=None, metadata=_OPTIONAL)
    stage: str | None = field(default=None, metadata=_OPTIONAL)

    to_json = Results.to_json


RESULT_KEYS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(Results))
FAILURE_KEYS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(Failure))
# the keys whose values are numbers (or null): what a reader may compute with
NUMBER_KEYS: frozenset[str] = frozenset(
    f.name for f in dataclasses.fields(Results)
    if f.type in ("float", "int", "float | None", "int | None"))
