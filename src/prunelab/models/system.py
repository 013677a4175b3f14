"""One LightningModule for classification around any plain ``nn.Module``.

Keeping the networks plain means a finished run loads into the bare network class (or any copy
of it) without Lightning, and the pruning callback only ever sees ordinary modules.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from prunelab.errors import ConfigError, DivergedError
from prunelab.internals import FastAttributes

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]

# A finite run counts as diverged when its final loss is far worse than guessing (a uniform guess
# over K classes scores ln K): above EXPLODED × ln K whatever the accuracy, or above
# WORSE_THAN_GUESSING × ln K with an accuracy no better than chance, 1/K (see
# docs/guide/reliability.md, "When a run counts as diverged").
EXPLODED = 100
WORSE_THAN_GUESSING = 10


def exploded(loss: float, acc: float | None, num_classes: int) -> str | None:
    """Why a finite final cross-entropy ``loss`` (with its accuracy ``acc``) means the weights
    blew up, or None for an honest result, however weak.

    A weak or collapsed model stays near ln K (an overfitted one a few times above it, with an
    accuracy above chance); only exploded weights put the loss a hundred times above guessing.
    Accuracy alone is no sign: a model that predicts one class scores below 1/K on a test set
    where that class is rarer than average.
    """
    if num_classes < 2 or not math.isfinite(loss):
        return None
    guess = math.log(num_classes)
    if loss > EXPLODED * guess:
        return (f"over {EXPLODED} × ln {num_classes} = {EXPLODED * guess:.4g} (a uniform guess "
                f"scores {guess:.3g})")
    if acc is not None and acc <= 1 / num_classes and loss > WORSE_THAN_GUESSING * guess:
        return (f"over {WORSE_THAN_GUESSING} × ln {num_classes} = "
                f"{WORSE_THAN_GUESSING * guess:.4g} with an accuracy of {acc:.4f}, no better "
                f"than chance (1/{num_classes})")
    return None


class EpochSums(FastAttributes, nn.Module):
    """One stage's loss and accuracy over an epoch, as running sums.

    Why not torchmetrics: its ``Accuracy`` and ``MeanMetric`` updates run argument checks, NaN
    checks and bookkeeping on every batch (their cost: docs/results/README.md); these sums take
    three tensor ops. They are reduced over DDP ranks once, at the end of the epoch.
    """

    def __init__(self, binary: bool) -> None:
        super().__init__()
        self.binary = binary
        self.register_buffer("loss_sum", torch.zeros(()), persistent=False)
        self.register_buffer("correct", torch.zeros((), dtype=torch.long), persistent=False)
        self.count = 0
        self.last_count: int | None = None  # samples of the last popped epoch, all ranks

    def update(self, loss: Tensor, logits: Tensor, y: Tensor) -> None:
        # In place, without torch.no_grad(): nothing here records a graph (detached loss,
        # integer predictions), and ``+=`` on a buffer would re-register it (``nn.Module``
        # assignment checks): together half the cost of this method.
        logits = logits.detach()
        pred = (logits > 0).long() if self.binary else logits.argmax(-1)
        self.correct.add_((pred == y).sum())
        self.loss_sum.add_(loss.detach(), alpha=y.shape[0])
        self.count += y.shape[0]

    def pop(self, strategy: Any = None) -> tuple[float, float] | None:
        """(mean loss, accuracy) over all ranks, or None without samples; then start afresh."""
        stats = torch.stack([self.loss_sum.float(), self.correct.float(),
                             torch.tensor(float(self.count), device=self.loss_sum.device)])
        if strategy is not None:
            stats = strategy.reduce(stats, reduce_op="sum")
        self.loss_sum.zero_()
        self.correct.zero_()
        self.count = 0
        loss_sum, correct, count = stats.tolist()
        self.last_count = int(count)
        return None if count == 0 else (loss_sum / count, correct / count)


def check_factories(optimizer: OptimizerFactory, scheduler: SchedulerFactory | None) -> None:
    """Build the optimizer and the scheduler once, on a stand-in parameter: torch checks most
    of their arguments (``nesterov`` without momentum, ``pct_start``, an unknown keyword) only
    when they are built, at the start of fit. A refusal is one line naming the section.
    (No optimizer: a system built to evaluate only.)"""
    if optimizer is None:
        return
    try:
        stand_in = optimizer([nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model.optimizer: {_first_line(err)}") from None
    if scheduler is None:
        return
    func = getattr(scheduler, "func", scheduler)
    kwargs: dict[str, Any] = {}
    try:
        if ("total_steps" in inspect.signature(func).parameters
                and "total_steps" not in getattr(scheduler, "keywords", {})):
            kwargs["total_steps"] = 100  # the run's own count comes from the Trainer
    except (TypeError, ValueError):  # no signature to read: build it as given
        pass
    try:
        scheduler(stand_in, **kwargs)
    except (ValueError, TypeError, ZeroDivisionError) as err:
        raise ConfigError(f"model.scheduler: {_first_line(err)}") from None


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class ClassifierSystem(FastAttributes, L.LightningModule):
    """Trains ``net`` on (inputs, labels) batches; ``task`` is "multiclass" or "binary".

    ``net`` is any ``nn.Module`` from inputs (images, token ids, ...) to logits: [B, num_classes]
    for "multiclass" (cross-entropy), [B] or [B, 1] for "binary" (BCE with logits). ``loss``
    replaces that default with any callable ``loss(logits, labels)`` (e.g. a
    ``CrossEntropyLoss(label_smoothing=0.1)``); accuracy follows the task either way. The first
    batch checks that ``net`` takes the data's inputs and gives logits of that shape, so a wrong
    model or data set is one line naming both shapes, not an error from inside torch.

    ``optimizer`` and ``scheduler`` are partials (Hydra ``_partial_: true``). A scheduler that
    takes ``total_steps`` (one-cycle) gets ``trainer.estimated_stepping_batches`` when the config
    leaves it out, so the schedule follows ``max_epochs`` and the train-batch limits.

    A non-finite train, validation or test loss raises :class:`~prunelab.errors.DivergedError`
    (train: checked every ``check_every`` batches and at each epoch's last batch); so does a
    finite final validation or test loss far worse than guessing (:func:`exploded`; for the
    built-in cross-entropy losses, whose scale it knows). ``samples_seen`` holds each stage's
    sample count of its last epoch (a test on ``limit_test_batches`` sees part of the set).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "step",
        task: str = "multiclass",
        num_classes: int = 10,
        channels_last: bool = False,
        check_every: int = 50,
        loss: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        if task not in ("multiclass", "binary"):
            raise ValueError(f"task={task!r} is not one of 'multiclass', 'binary'")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "loss"])
        self.net = net
        if channels_last:
            # NHWC convolutions are markedly faster on CPU (oneDNN) for small CNNs
            self.net.to(memory_format=torch.channels_last)
        if int(check_every) < 1:
            raise ConfigError(f"model.check_every={check_every} must be >= 1 (batches between "
                              "checks of the training loss)")
        self.check_every = int(check_every)
        self.loss_fn = loss
        self._checked = False  # the first batch's shapes (see _first_logits)
        check_factories(optimizer, scheduler)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.train_sums = EpochSums(task == "binary")
        self.val_sums = EpochSums(task == "binary")
        self.test_sums = EpochSums(task == "binary")
        self.samples_seen: dict[str, int] = {}
        self._last_val: tuple[float, float, int] | None = None  # loss, accuracy, epoch

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def loss_and_logits(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        x, y = batch
        if self.hparams.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self.net(x) if self._checked else self._first_logits(x)
        binary = self.hparams.task == "binary"
        if binary and logits.dim() == 2:
            logits = logits.squeeze(-1)
        if self.loss_fn is not None:
            loss = self.loss_fn(logits, y.float() if binary else y)
        elif binary:
            loss = F.binary_cross_entropy_with_logits(logits, y.float())
        else:
            loss = F.cross_entropy(logits, y)
        return loss, logits, y

    def _first_logits(self, x: Tensor) -> Tensor:
        """``net(x)`` for the first batch, with its input and output shapes checked."""
        kind = "token ids" if not x.is_floating_point() else "inputs"
        shape = list(x.shape)
        try:
            logits = self.net(x)
        except (RuntimeError, IndexError, TypeError, ValueError) as err:
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else repr(err)
            channels = re.search(r"to have (\d+) channels, but got (\d+) channels", first)
            hint = ("choose a model and data set that fit (model.input_shape, data.image_size)"
                    if channels is None else
                    f"give the network {channels[2]} input channel(s) (model=torchvision: "
                    f"model.net.in_channels={channels[2]}), or convert the images to "
                    f"{channels[1]} (data.channels={channels[1]}: image folders and torchvision "
                    "sets)")
            raise ConfigError(f"model.net ({type(self.net).__name__}) cannot take the data's "
                              f"batches of {kind} {shape}: {first}; {hint}") from None
        n, task = int(self.hparams.num_classes), self.hparams.task
        want = [shape[0], n] if task == "multiclass" else [shape[0]]
        got = list(logits.shape)
        if task == "binary" and got == [shape[0], 1]:
            got = [shape[0]]
        if got != want:
            raise ConfigError(
                f"model.net ({type(self.net).__name__}) gives logits of shape {list(logits.shape)}"
                f" for {shape[0]} samples; task={task} with model.num_classes={n} needs {want} "
                f"(binary: one logit per sample)")
        self._checked = True
        return logits

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        # Epoch means accumulate in EpochSums and are logged once per epoch (see _log_epoch): a
        # self.log call per batch is slow in Lightning 2.6 (it moves its result collection to
        # the value's device each time; the cost: docs/results/README.md).
        loss, logits, y = self.loss_and_logits(batch)
        getattr(self, f"{stage}_sums").update(loss, logits, y)
        return loss

    def _log_epoch(self, stage: str) -> None:
        # every rank reduces (a collective op), so every rank logs the global figure
        means = getattr(self, f"{stage}_sums").pop(self.trainer.strategy)
        if means is None:
            return
        loss, acc = means
        if not math.isfinite(loss):
            self._diverged(stage, loss)
        self.samples_seen[stage] = getattr(self, f"{stage}_sums").last_count
        # the final figures only: a loss spike in an early epoch may still recover
        if stage == "test" or (stage == "val" and self.trainer.state.fn != "fit"):
            self._check_final(stage, loss, acc)
        elif stage == "val" and not self.trainer.sanity_checking:
            self._last_val = (loss, acc, self.trainer.current_epoch)
        self.log(f"{stage}_loss", loss, prog_bar=stage != "train")
        self.log(f"{stage}_acc", acc, prog_bar=True)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # A diverged run must stop, not finish as "ok" on NaN weights. The epoch's running loss
        # sum turns non-finite with the first bad batch and stays so; reading it is the only
        # host-device sync, so it happens every ``check_every`` batches and on the epoch's last
        # batch (before validation and the pruning step see the weights), not every batch.
        n = batch_idx + 1
        if n % self.check_every and n != self.trainer.num_training_batches:
            return
        bad = not bool(torch.isfinite(self.train_sums.loss_sum))
        if self.trainer.world_size > 1:  # every rank must stop together, or the others hang
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            self._diverged("train", float(self.train_sums.loss_sum))

    def on_fit_end(self) -> None:
        # every rank holds the same (reduced) figures, so every rank stops together
        if self._last_val is not None:
            self._check_final("val", *self._last_val)

    def _check_final(self, stage: str, loss: float, acc: float, epoch: int | None = None
                     ) -> None:
        """:func:`exploded` on a final validation or test loss of a cross-entropy loss."""
        builtin = (nn.CrossEntropyLoss, nn.BCEWithLogitsLoss)
        if self.loss_fn is not None and not (isinstance(self.loss_fn, builtin)
                                             and self.loss_fn.reduction == "mean"):
            return  # a loss of unknown scale: only non-finite values are a sure sign
        binary = self.hparams.task == "binary"
        reason = exploded(loss, acc, 2 if binary else int(self.hparams.num_classes))
        if reason:
            self._diverged(stage, loss, reason, epoch)

    def _diverged(self, stage: str, loss: float, reason: str | None = None,
                  epoch: int | None = None) -> None:
        epoch = self.trainer.current_epoch if epoch is None else epoch
        step = self.trainer.global_step
        if reason:  # finite, far worse than guessing
            value, reason = f"is {loss:.4g}", f", {reason}"
        else:
            value = f"is {loss}" if not math.isfinite(loss) else "is not finite on another rank"
        raise DivergedError(
            f"training diverged: the {stage} loss {value} in epoch {epoch} (by optimizer step "
            f"{step}){reason or ''}; nothing this run measures would mean anything. Lower the "
            "learning rate (model.optimizer.lr) or check the data",
            epoch=epoch, step=step, stage=stage,
        )

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    @torch.no_grad()
    def evaluate(self, dataloader: Any) -> dict[str, float | None]:
        """Accuracy and loss on ``dataloader`` outside Lightning's loops (no logging).

        The pruning callback calls this to measure a step's immediate cost between epochs.
        """
        was_training = self.training
        self.eval()
        sums = EpochSums(self.hparams.task == "binary").to(self.device)
        for batch in dataloader:
            sums.update(*self.loss_and_logits(tuple(t.to(self.device) for t in batch)))
        self.train(was_training)
        means = sums.pop()
        if means is None:  # no batch: nothing was measured, which is not an accuracy of 0
            return {"acc": None, "loss": None}
        loss, acc = means
        return {"acc": acc, "loss": loss}

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        kwargs = {}
        func = getattr(self.scheduler_factory, "func", self.scheduler_factory)
        given = getattr(self.scheduler_factory, "keywords", {})
        if "total_steps" in inspect.signature(func).parameters and "total_steps" not in given:
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
            pct = float(given.get("pct_start", 0.3))
            if func is torch.optim.lr_scheduler.OneCycleLR and pct * kwargs["total_steps"] == 1:
                # torch's warm-up phase would then divide by zero at the first step
                raise ConfigError(
                    f"the one-cycle schedule cannot run exactly 1/pct_start = {1 / pct:g} "
                    f"optimizer steps (torch divides by zero); this run has "
                    f"{kwargs['total_steps']}: change trainer.max_epochs or "
                    "trainer.limit_train_batches"
                )
        scheduler = self.scheduler_factory(optimizer, **kwargs)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval},
        }
