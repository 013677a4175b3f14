"""The run's ``quantize`` stage: ``quantize=none|ptq|qat``, after training and the fp32 test.

Each option is a ``_target_`` node (``conf/quantize/*.yaml``) whose class holds its keys and
checks them when it is built, before any data is read; a missing optional extra is one line
then, not after an hour of training. :func:`quantize_run` makes the int8 model of the trained
network, measures it on the same test batches as the fp32 model, and saves it in the run
folder (``quantized_model.pt2``, a ``torch.export`` program) for ``prunelab export``.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from prunelab import bounds
from prunelab.errors import PrunelabError
from prunelab.evaluate import evaluate
from prunelab.messages import get_logger
from prunelab.models import network_of
from prunelab.paths import QUANTIZED_MODEL
from prunelab.quantize import pt2e, qat

log = get_logger(__name__)

MAX_CALIBRATION_BATCHES = 100_000  # training batches observed for the activation ranges
MAX_QAT_EPOCHS = 1_000


@dataclass(frozen=True, kw_only=True)
class NoQuantization:
    """``quantize=none``: the run ends with its fp32 model."""

    name: ClassVar[str] = "none"

    @property
    def quantizes(self) -> bool:
        return False


@dataclass(frozen=True, kw_only=True)
class Int8(NoQuantization):
    """What the int8 options share: int8 weights (per output channel, or per tensor with
    ``per_channel=false``) and int8 activations per tensor."""

    per_channel: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.per_channel, bool):
            raise PrunelabError(f"per_channel={self.per_channel!r} must be true or false")
        pt2e.require(f"quantize={self.name}")

    @property
    def quantizes(self) -> bool:
        return True

    def make_int8(self, system: Any, train_batches: Callable[[], Iterable[Any]]) -> tuple[Any, dict]:
        """The int8 model of ``system``'s network, and what the stage did."""
        raise NotImplementedError


ACTIVATIONS = ("static", "dynamic")


@dataclass(frozen=True, kw_only=True)
class PTQ(Int8):
    """``quantize=ptq``: post-training int8, the activation ranges observed on
    ``calibration_batches`` training batches (``activations=static``), or measured per input row
    as the model runs (``activations=dynamic``: linear layers, e.g. a text classifier whose
    pooled inputs vary in scale from one review to the next)."""

    name: ClassVar[str] = "ptq"
    calibration_batches: int = 32
    activations: str = "static"

    def __post_init__(self) -> None:
        bounds.integer("calibration_batches", self.calibration_batches, 1,
                       MAX_CALIBRATION_BATCHES)
        if self.activations not in ACTIVATIONS:
            raise PrunelabError(f"activations={self.activations!r}: not an option; valid: "
                                + ", ".join(ACTIVATIONS))
        super().__post_init__()

    def make_int8(self, system: Any, train_batches: Callable[[], Iterable[Any]]) -> tuple[Any, dict]:
        calibration = list(itertools.islice(train_batches(), self.calibration_batches))
        if not calibration:
            raise PrunelabError(f"quantize={self.name}: the training loader gave no batch to "
                                "calibrate on")
        example = calibration[0][0][:2]
        model = pt2e.quantize_int8(network_of(system), example, (x for x, _ in calibration),
                                   per_channel=self.per_channel,
                                   dynamic=self.activations == "dynamic")
        return model, {"calibration_batches": len(calibration), "activations": self.activations}


@dataclass(frozen=True, kw_only=True)
class QAT(Int8):
    """``quantize=qat``: ``epochs`` more epochs of fake-quantised fine-tuning (the run's optimizer
    class at learning rate ``lr``, its loss, the pruning mask fixed), then the int8 model."""

    name: ClassVar[str] = "qat"
    epochs: int = 1
    lr: float = 1e-4

    def __post_init__(self) -> None:
        bounds.integer("epochs", self.epochs, 1, MAX_QAT_EPOCHS)
        bounds.number("lr", self.lr, 0.0, 10.0, lo_open=True)
        super().__post_init__()

    def make_int8(self, system: Any, train_batches: Callable[[], Iterable[Any]]) -> tuple[Any, dict]:
        first = next(iter(train_batches()), None)
        if first is None:
            raise PrunelabError("quantize=qat: the training loader gave no batch")

        class Epochs:  # each pass over it is one epoch of the (limited) training loader
            def __iter__(self) -> Any:
                return iter(train_batches())

        model, record = qat.qat_finetune(system, Epochs(), first[0][:2], epochs=self.epochs,
                                         lr=self.lr, per_channel=self.per_channel)
        return model, {"qat": record}


def limited(loader: Iterable[Any], limit: int | float | None) -> Iterable[Any]:
    """``loader``'s batches within a Lightning ``limit_*_batches`` (a count, a fraction, None: all)."""
    if limit is None or (isinstance(limit, float) and limit >= 1.0):
        return loader
    if isinstance(limit, float):
        limit = max(1, math.floor(len(loader) * limit))  # type: ignore[arg-type]
    return itertools.islice(loader, int(limit))


def quantize_run(quantization: NoQuantization, system: Any, datamodule: Any, trainer: Any,
                 run_dir: Path, binary: bool) -> dict[str, Any]:
    """The stage: the int8 model, its test accuracy on the batches the fp32 test used, and the
    file; the ``results.json`` fields it adds (none for ``quantize=none``)."""
    if not quantization.quantizes:
        return {}
    start = time.perf_counter()
    was_training = system.training
    system.train()  # QAT trains; PTQ captures its own eval copy

    def train_batches() -> Iterable[Any]:
        return limited(datamodule.train_dataloader(), trainer.limit_train_batches)

    try:
        model, record = quantization.make_int8(system, train_batches)
    finally:
        system.train(was_training)
    measured = {}
    if trainer.limit_test_batches != 0:
        measured = evaluate(model, limited(datamodule.test_dataloader(),
                                           trainer.limit_test_batches), binary)
    example = next(iter(datamodule.test_dataloader()))[0][:2].cpu()
    pt2e.save_program(model, run_dir / QUANTIZED_MODEL, example)
    out = {"quantize": {"method": quantization.name, "file": QUANTIZED_MODEL, **record,
                        "seconds": round(time.perf_counter() - start, 2)},
           "int8_test_acc": measured.get("test_acc"),
           "int8_test_samples": measured.get("test_samples")}
    if out["int8_test_acc"] is not None:
        log.info("quantize=%s: int8 test accuracy %.4f on %d samples (%s)", quantization.name,
                 out["int8_test_acc"], out["int8_test_samples"], QUANTIZED_MODEL)
    return out
