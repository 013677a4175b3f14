"""Dynamic sparse training (SET, RigL) as a strategy of :class:`~prunelab.pruning.PruningCallback`.

With a :class:`SET` or :class:`RigL`
schedule the callback has no plan of steps: the tensors are sparse from the first step at
``amount`` (the first mask drawn at random from the run's seed, with per-tensor sparsities from
``distribution``), and every ``update_every`` optimizer steps until ``stop_fraction`` of training
each tensor drops the fraction ``alpha / 2 * (1 + cos(pi * t / t_end))`` of its active weights
with the smallest magnitude and regrows as many at random (SET) or by the largest dense-gradient
magnitude (RigL), at zero and with their optimizer state cleared. Every tensor keeps exactly its
number of zeros throughout. The mask functions are pure (:mod:`prunelab.pruning.criteria.dynamic`);
this module applies them at the right steps. The trainer is used through its public attributes;
nothing here imports Lightning.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from prunelab import bounds
from prunelab.errors import CheckpointError, ConfigError, ResultError
from prunelab.messages import get_logger, say
from prunelab.pruning import criteria as C
from prunelab.pruning import masks as M
from prunelab.pruning.criteria import dynamic as D
from prunelab.pruning.schedules import Schedule
from prunelab.pruning.targets import Target

log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class DynamicSchedule(Schedule):
    """Dynamic sparse training: sparse from the first step at ``amount``, no plan of steps.

    Every ``update_every`` optimizer steps until ``stop_fraction`` of training, each tensor
    drops the fraction :meth:`fraction` of its active weights with the smallest magnitude and
    regrows as many (at random: SET; by the largest dense-gradient magnitude: RigL).
    ``distribution``: per-tensor sparsity, ``erk`` (Erdős–Rényi-Kernel) or ``uniform``.
    """

    amount: float
    update_every: int = 100
    alpha: float = 0.3
    stop_fraction: float = 0.75
    distribution: str = "erk"

    def __post_init__(self) -> None:
        D.check_amount(self.amount)
        if (isinstance(self.update_every, bool) or not isinstance(self.update_every, numbers.Integral)
                or not 1 <= self.update_every <= bounds.MAX_STEPS):
            raise ConfigError(f"update_every={self.update_every!r} must be an integer >= 1 (at "
                              f"most {bounds.MAX_STEPS}; optimizer steps between mask updates)")
        for key, value, why in (("alpha", self.alpha, "the first update's fraction of active "
                                 "weights dropped and regrown"),
                                ("stop_fraction", self.stop_fraction,
                                 "the share of training during which masks change")):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
                raise ConfigError(f"{key}={value!r} must be in (0, 1] ({why})")
        D.check_distribution(self.distribution)

    @property
    def final_target(self) -> float:
        return float(self.amount)

    @property
    def prunes(self) -> bool:
        return True

    def fraction(self, step: int, t_end: float) -> float:
        """The fraction of active weights each tensor swaps after optimizer step ``step``."""
        return D.cosine_fraction(step, t_end, self.alpha)

    def due(self, step: int, t_end: float) -> bool:
        """Whether the masks change after optimizer step ``step``."""
        return step > 0 and step % self.update_every == 0 and step < t_end


@dataclass(frozen=True, kw_only=True)
class SET(DynamicSchedule):
    """Sparse Evolutionary Training (Mocanu et al. 2018): regrow at random."""

    name: ClassVar[str] = "set"


@dataclass(frozen=True, kw_only=True)
class RigL(DynamicSchedule):
    """Rigged Lottery (Evci et al. 2020): regrow by the largest dense-gradient magnitude."""

    name: ClassVar[str] = "rigl"


class DynamicSparse:
    """One run's mask updates; the callback calls the methods named after its hooks."""

    def __init__(self, schedule: DynamicSchedule, method: C.Method, custom: Any = None) -> None:
        if custom is not None or method.name != "l1_unstructured":
            raise ConfigError(f"pruning={schedule.name} drops the smallest-magnitude weights of "
                              "each layer: use pruning/method=l1_unstructured, not "
                              f"{method.name!r}")
        self.schedule = schedule
        self.zeros: dict[str, int] = {}  # per tensor, fixed for the run
        self.t_end = 0.0  # mask updates stop at this optimizer step
        self.grads: dict[str, Tensor] = {}  # RigL: the dense gradient of the update step
        self.grad_step = -1
        self.last_update = -1  # optimizer step of the last mask update

    @property
    def rigl(self) -> bool:
        return isinstance(self.schedule, RigL)

    def start(self, targets: Sequence[Target], generator: torch.Generator,
              history: list[dict[str, Any]], resumed: bool) -> dict[str, Tensor]:
        """Fix each tensor's number of zeros and, in a fresh run, draw the first random mask;
        returns the masks' digest."""
        shapes = {t.name: tuple(getattr(t.module, t.parameter).shape) for t in targets}
        self.zeros = D.layer_zeros(shapes, self.schedule.amount, self.schedule.distribution)
        if resumed:  # the masks came back with the callback's state
            return self.verify(targets)
        by_name = {t.name: t for t in targets}
        for name in sorted(by_name):  # sorted: the draws must not depend on the model's order
            t = by_name[name]
            w = getattr(t.module, t.parameter)
            mask = D.random_mask(tuple(w.shape), self.zeros[name], generator, C.float_dtype(w))
            M.apply_mask(t, mask.to(w.device))
        digest = self.verify(targets)
        history.append({"step": 0, "global_step": 0, "epoch": 0, "fraction": 0.0, "regrown": 0,
                        **self.sparsity(targets)})
        return digest

    def on_train_start(self, trainer: Any) -> None:
        total = trainer.estimated_stepping_batches
        if total == float("inf"):
            raise ConfigError(f"pruning={self.schedule.name} needs a finite number of training "
                              "steps (set the Trainer's max_epochs) to schedule its mask updates")
        self.t_end = self.schedule.stop_fraction * float(total)

    def on_before_optimizer_step(self, targets: Sequence[Target], trainer: Any) -> None:
        """RigL keeps the dense gradient of an update step (unscaled, averaged over ranks)."""
        step = trainer.global_step + 1
        if self.rigl and self.schedule.due(step, self.t_end):
            self.grad_step = step
            self.grads = {t.name: torch.zeros_like(M.param(t)) if M.param(t).grad is None
                          else M.param(t).grad.detach().clone() for t in targets}

    def on_train_batch_end(self, targets: Sequence[Target], trainer: Any, generator: torch.Generator,
                           history: list[dict[str, Any]]) -> dict[str, Tensor] | None:
        """After the optimizer step (and its masking): several batches share a step when
        gradients accumulate, so each step updates at most once. Returns the new digest."""
        t = trainer.global_step
        if t == self.last_update or not self.schedule.due(t, self.t_end):
            return None
        history.append(self.update(targets, t, generator, len(history), trainer))
        return self.verify(targets)

    def update(self, targets: Sequence[Target], t: int, generator: torch.Generator, index: int,
               trainer: Any | None = None) -> dict[str, Any]:
        """Drop and regrow in every tensor after optimizer step ``t``; the history record."""
        fraction = self.schedule.fraction(t, self.t_end)
        if self.rigl and self.grad_step != t:
            raise RuntimeError(f"RigL has no gradient of optimizer step {t}: the mask update "
                               "needs on_before_optimizer_step (automatic optimisation)")
        optimizers = trainer.optimizers if trainer is not None else []
        regrown = 0
        by_name = {t_.name: t_ for t_ in targets}
        for name in sorted(by_name):
            tgt = by_name[name]
            mask = getattr(tgt.module, tgt.parameter + "_mask")
            n = D.n_to_update(mask, fraction)
            if n == 0 or self.zeros[name] == 0:
                continue
            w = M.weight(tgt)
            new = (D.rigl_update(mask, w, self.grads[name], n) if self.rigl
                   else D.set_update(mask, w, n, generator))
            new = new.to(device=mask.device, dtype=mask.dtype)
            grown = (new != 0) & (mask == 0)
            p = M.param(tgt)
            with torch.no_grad():
                p[grown] = 0  # regrown connections start at zero, with no optimizer history
                for opt in optimizers:
                    for value in opt.state.get(p, {}).values():
                        if isinstance(value, Tensor) and value.shape == p.shape:
                            value[grown] = 0
            M.apply_mask(tgt, new)
            regrown += int(grown.sum())
        self.grads, self.grad_step = {}, -1
        self.last_update = t
        return {"step": index, "global_step": t,
                "epoch": None if trainer is None else trainer.current_epoch,
                "fraction": fraction, "regrown": regrown, **self.sparsity(targets)}

    @staticmethod
    def sparsity(targets: Sequence[Target]) -> dict[str, Any]:
        zeros = sum(int((getattr(t.module, t.parameter + "_mask") == 0).sum()) for t in targets)
        total = sum(getattr(t.module, t.parameter).numel() for t in targets)
        return {"achieved": zeros / max(total, 1)}

    def verify(self, targets: Sequence[Target]) -> dict[str, Tensor]:
        """Every tensor has exactly its fixed number of zeros, and every masked weight is zero;
        returns the masks' digest."""
        for t in targets:
            mask = M.mask_of(t)
            if mask is None:
                raise ResultError(f"dynamic sparse training: {t.name} has no mask")
            zeros = int((mask == 0).sum())
            if zeros != self.zeros[t.name]:
                raise ResultError(f"dynamic sparse training left {t.name} with {zeros} zeros, "
                                  f"not {self.zeros[t.name]}")
            if bool((M.weight(t)[mask == 0] != 0).any()):
                raise ResultError(f"dynamic sparse training: masked weights of {t.name} are not zero")
        return M.digest(targets)

    def log_epoch(self, targets: Sequence[Target], trainer: Any, module: Any,
                  history: list[dict[str, Any]], verbose: bool) -> None:
        if trainer.sanity_checking:
            return
        achieved = self.sparsity(targets)["achieved"]
        module.log("sparsity/global", achieved, on_epoch=True, sync_dist=False)
        updates = [h for h in history[1:] if h.get("epoch") == trainer.current_epoch]
        if verbose and trainer.is_global_zero:
            last = f", last fraction {updates[-1]['fraction']:.3f}" if updates else ""
            say(log, f"epoch {trainer.current_epoch}: {self.schedule.name} at sparsity "
                f"{achieved:.4f} (target {self.schedule.amount:.4f}), {len(updates)} mask "
                f"updates{last}")

    def state_dict(self) -> dict[str, Any]:
        s = self.schedule
        return {"kind": s.name, "amount": s.amount, "distribution": s.distribution,
                "last_update": self.last_update}

    def identity(self) -> tuple[Any, ...]:
        s = self.schedule
        return (s.name, s.amount, s.distribution)

    @staticmethod
    def check_state(mine: DynamicSparse | None, saved: dict[str, Any] | None) -> None:
        """A checkpoint of a dynamic run resumes the same dynamic run only."""
        ours = None if mine is None else mine.identity()
        theirs = None if not saved else (saved.get("kind"), saved.get("amount"),
                                         saved.get("distribution"))
        if ours != theirs:
            raise CheckpointError(f"checkpoint was made with dynamic sparse training {theirs}, "
                                  f"this run has {ours}")
