"""PruningCallback: prunes any LightningModule between epochs, following a schedule's plan of targets.

Why not Lightning's ``ModelPruning``: it keeps no state of its own, so a resumed run loses its
masks and restarts its schedule, its lottery-ticket weights are taken before a checkpoint is
restored, and repeated ``amount`` calls compound on the remaining weights. Here every step is
expressed as a *target* fraction of zeros, the masks, the schedule position, the rewind weights
and the random state live in the checkpoint, and the callback knows no concrete model.

This module holds the Lightning hooks, the stepping through the plan and the checkpointed
state; the rest is delegated: mask mechanics and the checks after each step to
:mod:`~prunelab.pruning.masks`, gradient statistics and probe batches to
:mod:`~prunelab.pruning.statistics`, MAC/parameter budgets to :mod:`~prunelab.pruning.budget`,
SET/RigL to :mod:`~prunelab.pruning.dynamic`, and the step's measured cost to
:mod:`~prunelab.pruning.measure`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.nn.utils import prune

from prunelab import bounds
from prunelab.errors import CheckpointError, ConfigError
from prunelab.messages import get_logger, say
from prunelab.pruning import criteria as C
from prunelab.pruning import masks as M
from prunelab.pruning.budget import Budget
from prunelab.pruning.dynamic import DynamicSchedule, DynamicSparse
from prunelab.pruning.measure import check_evaluate, evaluate_after_step, metric
from prunelab.pruning.schedules import AT_INIT, PruneStep, Schedule, from_config
from prunelab.pruning.statistics import Statistics
from prunelab.pruning.targets import Target, Targets

log = get_logger(__name__)


class PruningCallback(L.Callback):
    """Prune at the end of the epochs of ``schedule``'s plan to each step's target sparsity.

    Args:
        schedule: a :class:`~prunelab.pruning.schedules.Schedule` (``AGP(amount=0.9, n_steps=5)``
            ...), or a plain plan of ``PruneStep(epoch, target)`` items / ``(epoch, target)``
            pairs (see :func:`prunelab.pruning.build_plan`). Step k runs at the end of 0-based
            epoch ``plan[k].epoch``, after that epoch's validation; later epochs fine-tune. A
            step at epoch ``-1`` (``pruning=at_init``) runs before the first training batch, at
            ``on_train_start`` after any checkpoint restore, and is not repeated on resume.
            :class:`~prunelab.pruning.schedules.SET` / ``RigL``: dynamic sparse training
            instead of a plan (:mod:`prunelab.pruning.dynamic`).
        method: the criterion, a :class:`~prunelab.pruning.criteria.Method` with its knobs
            (``Taylor(grad_batches=16)``), or a registered criterion's name with its default
            knobs (see :func:`prunelab.pruning.criteria.register`).
        targets: which tensors (:class:`~prunelab.pruning.targets.Targets`, or a dict of its
            fields), used when the LightningModule has no ``prunable_parameters()`` method.
        seed: seeds random criteria; identical on every rank, so masks agree under DDP.
        rewind: lottery-ticket rewinding: after each step reset surviving weights to their
            values at ``rewind_epoch`` (0: initialisation; k: after epoch k-1) and clear their
            optimizer state.
        make_permanent: fold masks into the weights at the end of fit (``prune.remove``).
        custom: a ``torch.nn.utils.prune.BasePruningMethod`` to use instead of ``method``.
        verbose: log one line per step (target, reached, accuracy before and after).
        eval_batches: each step's immediate cost, ``val_acc_after``, is measured on this many
            validation batches (``None``: all that ``limit_val_batches`` allows; 0: not
            measured). A whole validation pass per step would cost more than the pruning does.
        monitor: the logged metric recorded as each step's ``val_acc_before`` (default
            ``"val_acc"``); a warning says once if the module never logs it.
        budget: ``{"macs": N}`` or ``{"params": N}`` (structured methods, ``dim=0``): instead of
            a fraction of units per layer, rank the output units of all pruned layers together
            and remove the lowest until the network costs at most N
            (:class:`~prunelab.pruning.budget.Budget`). The plan keeps its epochs; a one-step
            plan goes straight to N.

    Checkpoints hold plain ``<p>`` tensors (with the pruned entries at exactly zero, so they
    load into the unpruned class) and the masks in this callback's state, which re-applies them
    on resume. A plan that runs past ``max_epochs`` is allowed with a warning: its later steps
    run when training continues from a checkpoint with a larger ``max_epochs``.

    From the command line this is the ``pruning`` node (``_target_``): ``pruning.schedule`` and
    ``pruning.method`` are nodes of their own, the other keys are these arguments.
    """

    def __init__(
        self,
        schedule: Schedule | Sequence[PruneStep | tuple[int, float]],
        method: C.Method | str = "l1_unstructured",
        *,
        targets: Targets | Mapping[str, Any] | None = None,
        seed: int = 0,
        rewind: bool = False,
        rewind_epoch: int = 0,
        make_permanent: bool = True,
        custom: prune.BasePruningMethod | None = None,
        verbose: bool = True,
        eval_batches: int | None = 1,
        monitor: str = "val_acc",
        budget: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.schedule = from_config(schedule)
        self.plan = self.schedule.plan()
        self.method = method if isinstance(method, C.Method) else C.method(method)
        self.custom = custom
        self.target_spec = Targets.of(targets)
        self.seed = seed
        self.rewind = rewind
        self.rewind_epoch = bounds.integer("rewind_epoch", rewind_epoch, 0, bounds.MAX_EPOCHS)
        if rewind and self.plan and rewind_epoch > self.plan[0].epoch:
            raise ConfigError(f"rewind_epoch={rewind_epoch} is after the first pruning step (end "
                              f"of epoch {self.plan[0].epoch}); it must be <= {self.plan[0].epoch}")
        self.make_permanent, self.verbose, self.monitor = make_permanent, verbose, monitor
        self.eval_batches = bounds.integer("eval_batches", eval_batches, 0, bounds.MAX_STEPS,
                                           null="all batches", hint="0: not measured")
        if custom is None and self.method.needs_grads and any(s.epoch == AT_INIT for s in self.plan):
            raise ConfigError(
                f"pruning method {self.method.name!r} gathers its gradients during training "
                "epochs, so it cannot prune before training (epoch -1); use snip (|w * dL/dw| at "
                "the initial weights), grasp or synflow")
        self.budget = Budget.from_config(budget)
        if self.budget is not None:
            self._check_budget()
        self.dynamic = (DynamicSparse(self.schedule, self.method, custom)
                        if isinstance(self.schedule, DynamicSchedule) else None)
        self.stats = Statistics(self.method)
        self._monitor_warned = False
        # state that goes into checkpoints
        self.steps_done = 0
        self.history: list[dict[str, Any]] = []
        self.generator = torch.Generator().manual_seed(seed)
        self.rewind_state: dict[str, torch.Tensor] | None = None
        self.mask_digest: dict[str, torch.Tensor] = {}
        # transient
        self.targets: list[Target] = []
        self._hook_handle: Any = None
        self._step_hooks: list[Any] = []

    def _check_budget(self) -> None:
        b, m = self.budget, self.method
        if self.custom is not None or not m.structured:
            structured = ", ".join(n for n, c in C.CRITERIA.items() if c.structured)
            raise ConfigError(f"{b} needs a structured method ({structured}), not method={m.name!r}")
        if m.dim != 0 or m.round_to is not None:
            raise ConfigError(f"{b} removes output units (dim=0) and sets the counts itself: drop "
                              f"round_to={m.round_to} / dim={m.dim}")
        if self.plan and self.plan[-1].target <= 0:
            raise ConfigError(f"with {b} the plan's last target only shapes the steps and must be "
                              f"> 0, got {self.plan[-1].target}")

    # ------------------------------------------------------------------ setup
    @property
    def final_target(self) -> float:
        """The sparsity the run ends at: the plan's last target, or a dynamic run's amount."""
        return self.schedule.final_target

    @property
    def prunes(self) -> bool:
        """False for a dense schedule: the pipeline then trains without this callback."""
        return self.schedule.prunes

    def bind(self, pl_module: nn.Module) -> list[Target]:
        """Find (and check) the tensors to prune; the pipeline calls this before training starts."""
        if not self.targets:
            declared = getattr(pl_module, "prunable_parameters", None)
            if callable(declared):
                named = {id(m): name for name, m in pl_module.named_modules()}
                targets = [Target(f"{named[id(m)]}.{p}", m, p) for m, p in declared()]
            else:
                targets = self.target_spec.find(pl_module)
            if self.custom is None and self.method.structured:
                for t in targets:  # the slice axis against each tensor's own dimensions
                    C.norm_dim(self.method.dim, getattr(t.module, t.parameter).ndim,
                               f"parameter {t.name!r}")
                bad = [t.name for t in targets if isinstance(t.module, nn.Embedding)]
                if bad:
                    raise ConfigError(
                        f"structured method {self.method.name!r} cannot prune Embedding weights "
                        f"{bad}: it removes whole output filters/neurons of Conv and Linear layers; "
                        "use an unstructured method or drop Embedding from targets.types")
            self.targets = targets
        return self.targets

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.bind(pl_module)
        late = [s.epoch for s in self.plan[self.steps_done:]
                if trainer.max_epochs is not None and 0 <= trainer.max_epochs <= s.epoch]
        if late:
            rank_zero_warn(f"pruning steps at epochs {late} lie beyond max_epochs="
                           f"{trainer.max_epochs}: they run only if training continues from a "
                           "checkpoint with a larger max_epochs")
        check_evaluate(pl_module, self.eval_batches)
        if self._hook_handle is None:
            # Checkpoints of a pruned model hold <p>_orig and <p>_mask instead of <p>: put the
            # reparametrisation back before Lightning loads them into a fresh model ...
            self._hook_handle = pl_module.register_load_state_dict_pre_hook(
                lambda module, state, prefix, *_: M.reparametrize(self.targets, state, prefix))
            # ... and zero the pruned entries of the <p>_orig values just loaded (a checkpoint
            # written by torch's own pruning keeps them), which the forward uses as they are
            pl_module.register_load_state_dict_post_hook(lambda *_: M.mask_in_place(self.targets))

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.rewind and self.rewind_epoch == 0 and self.rewind_state is None:
            self.rewind_state = M.snapshot(self.targets)
        if self.dynamic is not None:
            self.mask_digest = self.dynamic.start(self.targets, self.generator, self.history,
                                                  resumed=bool(self.mask_digest))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the masks live in the weights: re-apply them after every optimizer step (manual
        # optimisation included), before anything else can read the weights
        self._remove_step_hooks()
        for opt in trainer.optimizers:
            self._step_hooks.append(opt.register_step_post_hook(lambda *_: M.mask_in_place(self.targets)))
        if self.budget is not None:
            example = C.first_input(self.stats.train_batches(trainer, 1)[0])[:1]
            self.stats.release()
            self.budget.bind(pl_module, example, self.targets)
        step = self._next_step()
        if step is not None and step.epoch == AT_INIT:
            self._run_step(step, trainer, pl_module, before=None)
        if self.dynamic is not None:
            self.dynamic.on_train_start(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove_step_hooks()

    def _remove_step_hooks(self) -> None:
        for handle in self._step_hooks:
            handle.remove()
        self._step_hooks = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.rewind and self.rewind_state is None and trainer.current_epoch == self.rewind_epoch:
            self.rewind_state = M.snapshot(self.targets)
        self.stats.reset()

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        # here gradients are unscaled (AMP) and already averaged over DDP ranks
        if self.dynamic is not None:
            self.dynamic.on_before_optimizer_step(self.targets, trainer)
        step = self._next_step()
        if (self.custom is None and self.method.needs_grads and step is not None
                and trainer.current_epoch == step.epoch):
            self.stats.gather(self.targets, trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self.dynamic is not None:
            digest = self.dynamic.on_train_batch_end(self.targets, trainer, self.generator,
                                                     self.history)
            if digest is not None:
                self.mask_digest = digest

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.dynamic is not None:
            self.dynamic.log_epoch(self.targets, trainer, pl_module, self.history, self.verbose)
            return
        step = self._next_step()
        if step is None or trainer.current_epoch != step.epoch or trainer.sanity_checking:
            return
        self._run_step(step, trainer, pl_module, before=self._monitored(trainer))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Store plain ``<p>`` tensors (already exactly zero where pruned), not ``_orig``/``_mask``:
        the checkpoint loads into the user's plain class (``load_from_checkpoint``), and the masks
        travel in this callback's state, from which a resume re-applies them."""
        state = checkpoint.get("state_dict")
        if isinstance(state, dict):
            checkpoint["state_dict"] = M.plain_state_dict(state, self.targets)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.make_permanent:
            self.remove()

    def remove(self) -> None:
        """Fold the masks into the weights: plain parameters with exact zeros remain."""
        M.fold_all(self.targets)

    # ------------------------------------------------------------------ stepping
    def _next_step(self) -> PruneStep | None:
        return self.plan[self.steps_done] if self.steps_done < len(self.plan) else None

    def _run_step(self, step: PruneStep, trainer: L.Trainer, pl_module: L.LightningModule,
                  before: float | None) -> None:
        t0 = time.perf_counter()
        achieved = self.apply_target(step.target, trainer)
        seconds = time.perf_counter() - t0
        if self.rewind:
            M.rewind(self.targets, self.rewind_state, trainer.optimizers if trainer else [])
        t1 = time.perf_counter()
        after = evaluate_after_step(trainer, pl_module, self.eval_batches)
        record = {"step": self.steps_done, "epoch": step.epoch, "target": step.target,
                  "achieved": achieved["global"], "val_acc_before": before,
                  "val_acc_after": after, "seconds": seconds,
                  "eval_seconds": time.perf_counter() - t1, "layers": achieved["layers"]}
        if "cost" in achieved:
            record["cost"] = achieved["cost"]
        self.history.append(record)
        self.steps_done += 1
        pl_module.log("sparsity/global", achieved["global"], on_epoch=True, sync_dist=False)
        for name, value in achieved["layers"].items():
            pl_module.log(f"sparsity/{name}", value, on_epoch=True, sync_dist=False)
        if self.verbose and trainer.is_global_zero:
            after_s = "n/a" if after is None else f"{after:.4f}"
            before_s = "n/a" if before is None else f"{before:.4f}"
            say(log, ("before training" if step.epoch == AT_INIT else f"epoch {step.epoch}")
                + f": pruned to {achieved['global']:.4f} (target {step.target:.4f}) "
                f"val_acc {before_s} -> {after_s}"
                + (f" (first {self.eval_batches} val batches)" if after is not None
                   and self.eval_batches is not None else ""))

    def _monitored(self, trainer: L.Trainer) -> float | None:
        value = metric(trainer, self.monitor)
        if value is None and not self._monitor_warned and trainer.val_dataloaders is not None:
            self._monitor_warned = True
            rank_zero_warn(f"PruningCallback(monitor={self.monitor!r}): the module never logs "
                           f"{self.monitor!r}, so val_acc_before stays null; logged metrics: "
                           f"{sorted(trainer.callback_metrics) or 'none'}")
        return value

    def apply_target(self, target: float, trainer: L.Trainer | None = None) -> dict[str, Any]:
        """Bring every scope to ``target`` zeros (not ``target`` more), and apply the masks.

        With a budget, ``target`` sets the step's cost limit instead; with a criterion that
        re-scores (SynFlow's ``iterations``) the step is reached in geometric sub-steps.
        """
        M.check_finite(self.targets, target, *(() if trainer is None else
                                               (trainer.current_epoch, trainer.global_step)))
        try:
            if self.budget is not None:
                masks, cost = self.budget.masks(self.targets, M.current_masks(self.targets),
                                                self.method.score, self.method.name,
                                                self.method.norm, target / self.plan[-1].target,
                                                self.generator)
                self._install(masks, target, check_counts=False)
                return {**M.sparsity(self.targets), "cost": cost}
            for sub in self._sub_targets(target):
                masks = C.compute_masks(
                    self.method, {t.name: M.weight(t) for t in self.targets}, sub,
                    masks=M.current_masks(self.targets) or None,
                    stats=None if self.custom is not None else self.stats.for_step(self.targets, trainer),
                    generator=self.generator, custom=self.custom)
                self._install(masks, sub, check_counts=self.custom is None)
                self.stats.reset()
        finally:
            self.stats.release()
        return M.sparsity(self.targets)

    def _install(self, masks: Mapping[str, torch.Tensor], target: float, check_counts: bool) -> None:
        for t in self.targets:
            M.apply_mask(t, masks[t.name])
        m = self.method
        M.verify(self.targets, masks, target, scope=m.scope if check_counts else None,
                 structured_dim=m.dim if m.structured else None, what=m.name, round_to=m.round_to)
        self.mask_digest = M.digest(self.targets)

    def _sub_targets(self, target: float) -> list[float]:
        """The step's targets: densities falling geometrically from now to ``target``'s."""
        n = self.method.steps_per_step
        if n <= 1 or self.custom is not None:
            return [target]
        zeros = sum(int((m == 0).sum()) for m in M.current_masks(self.targets).values())
        total = sum(getattr(t.module, t.parameter).numel() for t in self.targets)
        d0, d1 = 1.0 - zeros / max(total, 1), 1.0 - target
        if d0 <= d1:
            return [target]
        subs = [round(1.0 - d0 * (d1 / d0) ** (k / n), 10) for k in range(1, n)]
        return [*[min(s, target) for s in subs], target]

    def sparsity(self) -> dict[str, Any]:
        return M.sparsity(self.targets)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "plan": [(s.epoch, s.target) for s in self.plan],
            "method": self.method.name,
            "targets": [t.name for t in self.targets],
            "steps_done": self.steps_done,
            "history": self.history,
            "generator": self.generator.get_state(),
            "rewind_state": self.rewind_state,
            "masks": self.mask_digest,
            "dynamic": None if self.dynamic is None else self.dynamic.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        plan = [(s.epoch, s.target) for s in self.plan]
        saved_plan = [tuple(p) for p in state_dict.get("plan", [])]
        if saved_plan != plan or state_dict.get("method") != self.method.name:
            raise CheckpointError(
                f"checkpoint was made with pruning method {state_dict.get('method')!r} and plan "
                f"{saved_plan}, this run has {self.method.name!r} and {plan}")
        names = [t.name for t in self.targets]
        if self.targets and state_dict.get("targets") != names:
            raise CheckpointError(f"checkpoint prunes {state_dict.get('targets')}, this run prunes {names}")
        saved_dynamic = state_dict.get("dynamic") or {}
        DynamicSparse.check_state(self.dynamic, saved_dynamic)
        if self.dynamic is not None:
            self.dynamic.last_update = int(saved_dynamic.get("last_update", -1))
        self.steps_done = int(state_dict["steps_done"])
        self.history = list(state_dict["history"])
        self.generator.set_state(state_dict["generator"])
        self.rewind_state = state_dict.get("rewind_state")
        self.mask_digest = dict(state_dict.get("masks") or {})
        M.restore(self.targets, self.mask_digest)
