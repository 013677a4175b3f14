"""PruningCallback: prunes any LightningModule between epochs, following a plan of targets.

Why not Lightning's ``ModelPruning``: it keeps no state of its own, so a resumed run loses its
masks and restarts its schedule, its lottery-ticket weights are taken before a checkpoint is
restored, and repeated ``amount`` calls compound on the remaining weights. Here every step is
expressed as a *target* fraction of zeros, the masks, the schedule position, the rewind weights
and the random state live in the checkpoint, and the callback knows no concrete model.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.nn.utils import prune

from prunelab import bounds
from prunelab.errors import CheckpointError, ConfigError, DivergedError, ResultError
from prunelab.lightning_ext import MaskedInPlace, batch_index, move_param, mul_in_place, param_slot
from prunelab.logs import get_logger, say
from prunelab.pruning import budget as B
from prunelab.pruning import criteria as C
from prunelab.pruning.criteria import dynamic as D
from prunelab.pruning.schedules import AT_INIT, PruneStep, validate_plan
from prunelab.pruning.targets import Target, find_targets, validate_patterns

log = get_logger(__name__)


class PruningCallback(L.Callback):
    """Prune at the end of the epochs named in ``plan`` to each step's target sparsity.

    Args:
        plan: ``PruneStep(epoch, target)`` items (see :func:`prunelab.pruning.build_plan`),
            or plain ``(epoch, target)`` pairs. Step k runs at the end of 0-based epoch
            ``plan[k].epoch``, after that epoch's validation; later epochs fine-tune.
        method: a criterion name registered in ``prunelab.pruning.criteria`` (built-in or your
            own, see :func:`prunelab.pruning.criteria.register`).
        scope: "layer" or "global"; ``None`` takes the method's default.
        n, dim: norm order and axis of structured methods.
        targets: dict of :func:`prunelab.pruning.targets.find_targets` arguments, used when the
            LightningModule has no ``prunable_parameters()`` method.
        seed: seeds random criteria; identical on every rank, so masks agree under DDP.
        grad_batches: gradient statistics for taylor/fisher come from the last this many
            training batches before each step.
        rewind: lottery-ticket rewinding: after each step reset surviving weights to their
            values at ``rewind_epoch`` (0: initialisation; k: after epoch k-1) and clear their
            optimizer state.
        make_permanent: fold masks into the weights at the end of fit (``prune.remove``).
        eval_batches: each step's immediate cost, ``val_acc_after``, is measured on this many
            validation batches (``None``: all that ``limit_val_batches`` allows; 0: not
            measured). A whole validation pass per step would cost more than the pruning does.
        custom: a ``torch.nn.utils.prune.BasePruningMethod`` to use instead of ``method``.
        round_to: structured methods keep a multiple of this many slices per tensor (None: off).
        verbose: log one line per step (target, reached, accuracy before and after).
        monitor: the logged metric recorded as each step's ``val_acc_before`` (default
            ``"val_acc"``); a warning says once if the module never logs it.
        iterations: split every step into this many sub-steps whose densities fall
            geometrically, re-scoring at the new masks each time (``None``: the criterion's own
            default, 100 for ``synflow`` and 1 for the others).
        budget: ``{"macs": N}`` or ``{"params": N}`` (structured methods, ``dim=0``): instead of
            a fraction of units per layer, rank the output units of all pruned layers together
            (Ln norms over their fan-in) and remove the lowest until the network costs at most
            N (see :mod:`prunelab.pruning.budget`). The plan keeps its epochs; step k's cost
            limit falls geometrically from the dense cost to N as ``target_k / target_last``
            goes from 0 to 1, so a one-step plan goes straight to N.

    A step at epoch ``-1`` (``pruning=at_init``) runs before the first training batch, at
    ``on_train_start`` after any checkpoint restore, and is not repeated on resume. Probing
    criteria (``snip``, ``grasp``, ``synflow``) take their batches (``grad_batches`` of them;
    SynFlow only one sample's shape) from the training dataloader without consuming the
    global random state.
        dynamic: ``"set"`` or ``"rigl"``: dynamic sparse training instead of a plan (``plan``
            must be empty, ``method`` magnitude). The tensors are sparse from the first step at
            ``dynamic_amount`` (the first mask drawn at random from ``seed``, with per-tensor
            sparsities from ``distribution``: ``"erk"`` or ``"uniform"``); every
            ``update_every`` optimizer steps until ``stop_fraction`` of training, each tensor
            drops the fraction ``alpha / 2 * (1 + cos(pi * t / t_end))`` of its active weights
            with the smallest magnitude and regrows as many at random (SET) or by the largest
            dense-gradient magnitude (RigL), at zero and with their optimizer state cleared.
            See :mod:`prunelab.pruning.criteria.dynamic`.

    Checkpoints hold plain ``<p>`` tensors (with the pruned entries at exactly zero, so they
    load into the unpruned class) and the masks in this callback's state, which re-applies them
    on resume. A plan that runs past ``max_epochs`` is allowed with a warning: its later steps
    run when training continues from a checkpoint with a larger ``max_epochs``.

    Each keyword argument is also a key of the command line's config, generated from this
    signature (:mod:`prunelab.config`): an option added here, typed and with its default, is
    ``pruning.<name>`` (``pruning.method.<name>`` for a criterion's knob) with nothing else to edit.
    """

    def __init__(
        self,
        plan: Sequence[PruneStep | tuple[int, float]],
        method: str = "l1_unstructured",
        scope: str | None = None,
        n: float = 2.0,
        dim: int = 0,
        targets: Mapping[str, Any] | None = None,
        seed: int = 0,
        grad_batches: int = 32,
        rewind: bool = False,
        rewind_epoch: int = 0,
        make_permanent: bool = True,
        custom: prune.BasePruningMethod | None = None,
        verbose: bool = True,
        eval_batches: int | None = 1,
        round_to: int | None = None,
        monitor: str = "val_acc",
        iterations: int | None = None,
        budget: Mapping[str, Any] | None = None,
        dynamic: str | None = None,
        dynamic_amount: float = 0.0,
        update_every: int = 100,
        alpha: float = 0.3,
        stop_fraction: float = 0.75,
        distribution: str = "erk",
    ) -> None:
        super().__init__()
        self.plan = [s if isinstance(s, PruneStep) else PruneStep(int(s[0]), float(s[1])) for s in plan]
        validate_plan(self.plan, None)
        self.method = method
        self.spec = C.get(method) if custom is None else None
        if self.spec is not None:
            C.check_scope(self.spec, scope)
        self.scope = scope
        _check_norm(n)
        self.n, self.dim = n, dim
        bounds.integer("dim", dim, -_MAX_DIMS, _MAX_DIMS - 1)  # per tensor at bind
        self.round_to = C.check_round_to(round_to, method if custom is None else None)
        self.target_args = dict(targets or {})
        valid = [k for k in inspect.signature(find_targets).parameters if k != "model"]
        unknown = sorted(set(self.target_args) - set(valid))
        if unknown:
            raise ConfigError(f"targets has unknown key(s) {unknown}; valid keys: {', '.join(valid)}")
        validate_patterns(self.target_args.get("include") or (), self.target_args.get("exclude") or ())
        self.seed = seed
        self.grad_batches = bounds.integer("grad_batches", grad_batches, 1, bounds.MAX_GRAD_BATCHES)
        self.rewind = rewind
        self.rewind_epoch = bounds.integer("rewind_epoch", rewind_epoch, 0, bounds.MAX_EPOCHS)
        if rewind and self.plan and rewind_epoch > self.plan[0].epoch:
            raise ConfigError(
                f"rewind_epoch={rewind_epoch} is after the first pruning step "
                f"(end of epoch {self.plan[0].epoch}); it must be <= {self.plan[0].epoch}"
            )
        self.make_permanent = make_permanent
        self.custom = custom
        self.verbose = verbose
        bounds.integer("eval_batches", eval_batches, 0, bounds.MAX_STEPS,
                       null="all batches", hint="0: not measured")
        self.eval_batches = eval_batches
        self.monitor = monitor
        self._monitor_warned = False
        if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, int)
                                       or not 1 <= iterations <= bounds.MAX_ITERATIONS):
            raise ConfigError(f"iterations={iterations!r} must be an integer >= 1 (at most "
                              f"{bounds.MAX_ITERATIONS}) or None (the method's default)")
        self.iterations = iterations
        if (self.spec is not None and self.spec.needs_grads
                and any(s.epoch == AT_INIT for s in self.plan)):
            raise ConfigError(
                f"pruning method {method!r} gathers its gradients during training epochs, so it "
                "cannot prune before training (epoch -1); use snip (|w * dL/dw| at the initial "
                "weights), grasp or synflow"
            )
        self.budget = B.check_budget(budget)
        if self.budget is not None:
            if self.spec is None or not self.spec.structured:
                structured = ", ".join(m for m, c in C.CRITERIA.items() if c.structured)
                raise ConfigError(f"budget.{self.budget[0]}={self.budget[1]} needs a structured "
                                  f"method ({structured}), not method={method!r}")
            if dim != 0 or self.round_to is not None:
                raise ConfigError(f"budget.{self.budget[0]}={self.budget[1]} removes output units "
                                  "(dim=0) and sets the counts itself: drop "
                                  f"round_to={self.round_to} / dim={dim}")
            if self.plan and self.plan[-1].target <= 0:
                raise ConfigError(f"with budget.{self.budget[0]}={self.budget[1]} the plan's last "
                                  "target only shapes the steps and must be > 0, got "
                                  f"{self.plan[-1].target}")
        self._cost: B.CostModel | None = None
        self._layer_of: dict[str, str] = {}
        self._batches: list[Any] = []
        self.dynamic = dynamic
        self.dynamic_amount = dynamic_amount
        self.update_every, self.alpha = update_every, alpha
        self.stop_fraction, self.distribution = stop_fraction, distribution
        if dynamic is not None:
            _check_dynamic(self)
        self._zeros: dict[str, int] = {}  # dynamic: zeros per tensor, fixed for the run
        self._t_end = 0.0  # dynamic: mask updates stop at this optimizer step
        self._grads: dict[str, Tensor] = {}  # RigL: the dense gradient of the update step
        self._grad_step = -1
        self.last_update = -1  # dynamic: optimizer step of the last mask update
        # state that goes into checkpoints
        self.steps_done = 0
        self.history: list[dict[str, Any]] = []
        self.generator = torch.Generator().manual_seed(seed)
        self.rewind_state: dict[str, Tensor] | None = None
        self.mask_digest: dict[str, Tensor] = {}
        # transient
        self.targets: list[Target] = []
        self._stats: dict[str, dict] = {}
        self._hook_handle: Any = None
        self._step_hooks: list[Any] = []

    # ------------------------------------------------------------------ setup
    @property
    def final_target(self) -> float:
        """The sparsity the run ends at: the plan's last target, or a dynamic run's amount."""
        if self.dynamic is not None:
            return float(self.dynamic_amount)
        return float(self.plan[-1].target) if self.plan else 0.0

    @property
    def needs_grads(self) -> bool:
        return self.spec is not None and self.spec.needs_grads

    def bind(self, pl_module: nn.Module) -> list[Target]:
        """Find (and check) the tensors to prune; run.py calls this before training starts."""
        if not self.targets:
            targets = self._find_targets(pl_module)
            if self.spec is not None and self.spec.structured:
                bad = [t.name for t in targets if isinstance(t.module, nn.Embedding)]
                if bad:
                    raise ConfigError(
                        f"structured method {self.method!r} cannot prune Embedding weights {bad}: "
                        "it removes whole output filters/neurons of Conv and Linear layers; "
                        "use an unstructured method or drop Embedding from targets.types"
                    )
            if self.spec is not None and self.spec.structured:
                for t in targets:
                    C.norm_dim(self.dim, getattr(t.module, t.parameter).ndim, f"parameter {t.name!r}")
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
        _check_evaluate(pl_module, self.eval_batches)
        if self._hook_handle is None:
            # Checkpoints of a pruned model hold <p>_orig and <p>_mask instead of <p>: put the
            # reparametrisation back before Lightning loads them into a fresh model.
            self._hook_handle = pl_module.register_load_state_dict_pre_hook(self._reparametrize_hook)
            # ... and zero the pruned entries of the <p>_orig values just loaded (a checkpoint
            # written by torch's own pruning keeps them), which the forward uses as they are
            pl_module.register_load_state_dict_post_hook(lambda *_: _mask_in_place(self.targets))

    def _find_targets(self, pl_module: nn.Module) -> list[Target]:
        declared = getattr(pl_module, "prunable_parameters", None)
        if callable(declared):
            named = {id(m): name for name, m in pl_module.named_modules()}
            return [Target(f"{named[id(m)]}.{p}", m, p) for m, p in declared()]
        return find_targets(pl_module, **self.target_args)

    def _reparametrize_hook(self, module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
        for t in self.targets:
            key = prefix + t.name
            mask_key = key + "_mask"
            if mask_key in state_dict and not prune.is_pruned(t.module):
                _apply_mask(t, state_dict[mask_key].to(_param(t).device))
            elif key in state_dict and mask_key not in state_dict and hasattr(t.module, t.parameter + "_orig"):
                # a plain tensor (prunelab's checkpoints, or a dense state dict) into a pruned
                # model: drop the reparametrisation; a checkpoint's masks come back from this
                # callback's state, loaded right after the model's
                _fold(t)

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.rewind and self.rewind_epoch == 0 and self.rewind_state is None:
            self.rewind_state = self._snapshot()
        if self.dynamic is not None:
            self.start_dynamic()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the masks live in the weights: re-apply them after every optimizer step (manual
        # optimisation included), before anything else can read the weights
        self._remove_step_hooks()
        for opt in trainer.optimizers:
            self._step_hooks.append(opt.register_step_post_hook(lambda *_: _mask_in_place(self.targets)))
        if self.budget is not None:
            self._build_cost(trainer, pl_module)
        step = self._next_step()
        if step is not None and step.epoch == AT_INIT:
            self._run_step(step, trainer, pl_module, before=None)
        if self.dynamic is not None:
            total = trainer.estimated_stepping_batches
            if total == float("inf"):
                raise ConfigError(f"dynamic={self.dynamic!r} needs a finite number of training "
                                  "steps (set the Trainer's max_epochs) to schedule its mask "
                                  "updates")
            self._t_end = self.stop_fraction * float(total)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove_step_hooks()

    def _remove_step_hooks(self) -> None:
        for handle in self._step_hooks:
            handle.remove()
        self._step_hooks = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.rewind and self.rewind_state is None and epoch == self.rewind_epoch:
            self.rewind_state = self._snapshot()
        self._stats = {}

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        # here gradients are unscaled (AMP) and already averaged over DDP ranks
        if self.dynamic == "rigl" and self._update_due(trainer.global_step + 1):
            self._grad_step = trainer.global_step + 1
            self._grads = {}
            for t in self.targets:
                p = _param(t)
                self._grads[t.name] = (torch.zeros_like(p) if p.grad is None
                                       else p.grad.detach().clone())
        step = self._next_step()
        if not self.needs_grads or step is None or trainer.current_epoch != step.epoch:
            return
        n_batches = trainer.num_training_batches
        batch_idx = batch_index(trainer)  # None: unknown, as for a loader of unknown length
        if (n_batches != float("inf") and batch_idx is not None
                and batch_idx < n_batches - self.grad_batches):
            return
        for t in self.targets:
            orig = getattr(t.module, t.parameter + "_orig", None)
            p = orig if orig is not None else getattr(t.module, t.parameter)
            if p.grad is None:
                continue
            weight = getattr(t.module, t.parameter).detach()
            self._stats[t.name] = C.accumulate_grad_stats(self._stats.get(t.name), weight, p.grad.detach())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        # after the optimizer step (and its masking): several batches share a step when
        # gradients accumulate, so each step updates at most once
        t = trainer.global_step
        if self.dynamic is not None and t != self.last_update and self._update_due(t):
            self.update_dynamic(t, trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.dynamic is not None:
            self._log_dynamic_epoch(trainer, pl_module)
            return
        step = self._next_step()
        if step is None or trainer.current_epoch != step.epoch:
            return
        if trainer.sanity_checking:
            return
        self._run_step(step, trainer, pl_module, before=self._monitored(trainer))

    def _run_step(self, step: PruneStep, trainer: L.Trainer, pl_module: L.LightningModule,
                  before: float | None) -> None:
        t0 = time.perf_counter()
        achieved = self.apply_target(step.target, trainer)
        seconds = time.perf_counter() - t0
        if self.rewind:
            self._rewind(trainer)
        t1 = time.perf_counter()
        after = self._evaluate(trainer, pl_module)
        eval_seconds = time.perf_counter() - t1
        record = {
            "step": self.steps_done,
            "epoch": step.epoch,
            "target": step.target,
            "achieved": achieved["global"],
            "val_acc_before": before,
            "val_acc_after": after,
            "seconds": seconds,
            "eval_seconds": eval_seconds,
            "layers": achieved["layers"],
        }
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
            say(
                log,
                ("before training" if step.epoch == AT_INIT else f"epoch {step.epoch}")
                + f": pruned to {achieved['global']:.4f} "
                f"(target {step.target:.4f}) val_acc {before_s} -> {after_s}"
                + (f" (first {self.eval_batches} val batches)" if after is not None
                   and self.eval_batches is not None else "")
            )

    def _monitored(self, trainer: L.Trainer) -> float | None:
        value = _metric(trainer, self.monitor)
        if value is None and not self._monitor_warned and trainer.val_dataloaders is not None:
            self._monitor_warned = True
            rank_zero_warn(f"PruningCallback(monitor={self.monitor!r}): the module never logs "
                           f"{self.monitor!r}, so val_acc_before stays null; logged metrics: "
                           f"{sorted(trainer.callback_metrics) or 'none'}")
        return value

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Store plain ``<p>`` tensors (already exactly zero where pruned), not ``_orig``/``_mask``.

        The checkpoint then loads into the user's plain class (``load_from_checkpoint``), and
        the masks travel in this callback's state, from which a resume re-applies them.
        """
        state = checkpoint.get("state_dict")
        if not isinstance(state, dict):
            return
        renamed = {}
        for t in self.targets:
            orig_key = f"{t.name}_orig"
            if orig_key in state:
                renamed[orig_key] = t.name
                state.pop(f"{t.name}_mask", None)
        if renamed:
            checkpoint["state_dict"] = {renamed.get(k, k): v for k, v in state.items()}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.make_permanent:
            self.remove()

    # ------------------------------------------------------------------ pruning
    def _next_step(self) -> PruneStep | None:
        return self.plan[self.steps_done] if self.steps_done < len(self.plan) else None

    def apply_target(self, target: float, trainer: L.Trainer | None = None) -> dict[str, Any]:
        """Bring every scope to ``target`` zeros (not ``target`` more), and apply the masks.

        With a budget, ``target`` sets the step's cost limit instead (see the class docstring);
        with ``iterations`` > 1 the step is reached in that many geometric sub-steps.
        """
        weights = {t.name: getattr(t.module, t.parameter).detach() for t in self.targets}
        self._check_finite(weights, target, trainer)
        try:
            if self.budget is not None:
                return self._apply_budget(target, trainer)
            for sub in self._sub_targets(target):
                self._apply_once(sub, trainer)
        finally:
            self._batches = []
        return self.sparsity()

    def _current_masks(self) -> dict[str, Tensor]:
        return {t.name: getattr(t.module, t.parameter + "_mask") for t in self.targets
                if prune.is_pruned(t.module) and hasattr(t.module, t.parameter + "_mask")}

    def _sub_targets(self, target: float) -> list[float]:
        """The step's targets: densities falling geometrically from now to ``target``'s."""
        n = self.iterations or (self.spec.iterations if self.spec is not None else 1)
        if n <= 1 or self.custom is not None:
            return [target]
        zeros = sum(int((m == 0).sum()) for m in self._current_masks().values())
        total = sum(getattr(t.module, t.parameter).numel() for t in self.targets)
        d0, d1 = 1.0 - zeros / max(total, 1), 1.0 - target
        if d0 <= d1:
            return [target]
        subs = [round(1.0 - d0 * (d1 / d0) ** (k / n), 10) for k in range(1, n)]
        return [*[min(s, target) for s in subs], target]

    def _apply_once(self, target: float, trainer: L.Trainer | None) -> None:
        weights = {t.name: getattr(t.module, t.parameter).detach() for t in self.targets}
        masks = self._current_masks()
        stats = None
        if self.needs_grads:
            stats = self._reduced_stats(trainer)
        elif self.spec is not None and self.spec.probe is not None and self.custom is None:
            stats = self._probe(trainer)
        new_masks = C.compute_masks(
            self.method, weights, target, masks=masks or None, stats=stats, scope=self.scope,
            n=self.n, dim=self.dim, generator=self.generator, custom=self.custom,
            round_to=self.round_to,
        )
        for t in self.targets:
            _apply_mask(t, new_masks[t.name])
        self._verify(target, new_masks)
        self._stats = {}
        self.mask_digest = {t.name: new_masks[t.name].bool().cpu() for t in self.targets}

    # ------------------------------------------------------------------ probing criteria
    def _train_batches(self, trainer: L.Trainer, n: int) -> list[Any]:
        """The first ``n`` training batches on the module's device, the global RNG untouched."""
        if len(self._batches) < n:
            loader = trainer.train_dataloader
            if isinstance(loader, Mapping):
                loader = next(iter(loader.values()), None)
            elif isinstance(loader, list | tuple):
                loader = loader[0] if loader else None
            if loader is None:
                raise RuntimeError(f"pruning method {self.method!r} needs training batches, but "
                                   "the trainer has no training dataloader yet")
            batches = []
            with torch.random.fork_rng(devices=[]):
                for batch in loader:
                    batches.append(trainer.strategy.batch_to_device(batch))
                    if len(batches) >= n:
                        break
            self._batches = batches
        return self._batches[:n]

    def _probe(self, trainer: L.Trainer | None) -> dict[str, dict]:
        if trainer is None:
            raise ConfigError(f"pruning method {self.method!r} probes the model and its training "
                              "data: it runs inside Trainer.fit, not from apply_target alone")
        pl_module = trainer.lightning_module
        probe = C.Probe(
            module=pl_module,
            params={t.name: _param(t) for t in self.targets},
            loss=lambda batch: _loss(pl_module, batch),
            batches=lambda n: self._train_batches(trainer, n),
            grad_batches=self.grad_batches,
        )
        buffers = {k: b.detach().clone() for k, b in pl_module.named_buffers()}
        try:
            self._stats = self.spec.probe(probe)  # type: ignore[union-attr]
        finally:  # probing forwards must not move BatchNorm statistics
            with torch.no_grad():
                for k, b in pl_module.named_buffers():
                    if k in buffers:
                        b.copy_(buffers[k])
        return self._reduced_stats(trainer)

    # ------------------------------------------------------------------ budgets
    def _build_cost(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metric, limit = self.budget  # type: ignore[misc]
        example = C.first_input(self._train_batches(trainer, 1)[0])[:1]
        self._batches = []
        cost = B.build_cost_model(pl_module, example)
        names = {id(m): n for n, m in pl_module.named_modules()}
        layer_of = {t.name: names.get(id(t.module), "") for t in self.targets}
        missing = [t for t, layer in layer_of.items() if layer not in cost.layers]
        if missing:
            raise ConfigError(f"budget.{metric}={limit}: {missing} are not Conv/Linear layers the "
                              "forward uses, so their cost is unknown; leave them out with "
                              "targets.exclude")
        dense = cost.cost(metric)
        if limit >= dense:
            raise ConfigError(f"budget.{metric}={limit} is not below the dense network's "
                              f"{dense} {metric}: nothing to prune; set a smaller budget")
        floor = cost.cost(metric, dict.fromkeys(layer_of.values(), 1))
        if limit < floor:
            raise ConfigError(
                f"budget.{metric}={limit} is below the smallest network that keeps one "
                f"unit per pruned layer ({floor} {metric}); valid: {floor} to {dense - 1}"
            )
        self._cost, self._layer_of = cost, layer_of

    def _apply_budget(self, target: float, trainer: L.Trainer | None) -> dict[str, Any]:
        if self._cost is None:
            raise RuntimeError("budget: the cost model is built at on_train_start; "
                               "apply_target with a budget runs inside Trainer.fit")
        metric, limit = self.budget  # type: ignore[misc]
        cost = self._cost
        step_limit = B.step_limit(cost.cost(metric), limit, target / self.plan[-1].target)
        masks = self._current_masks()
        scores, alive, by_layer = {}, {}, {}
        for t in self.targets:
            w = getattr(t.module, t.parameter).detach()
            prev = masks.get(t.name)
            ctx = C.ScoreContext(name=f"parameter {t.name!r}", mask=prev, generator=self.generator,
                                 dim=0, n=self.n)
            layer = self._layer_of[t.name]
            s = self.spec.score(w, ctx)  # type: ignore[union-attr]
            scores[layer] = B.normalized_scores(self.method, s, w, C.norm_order(self.n))
            alive[layer] = (torch.ones(w.shape[0], dtype=torch.bool) if prev is None else
                            (prev.detach().reshape(w.shape[0], -1) != 0).any(dim=1).cpu())
            by_layer[layer] = t
        keep, reached, _ = B.select_budget(cost, metric, step_limit,
                                           {k: v.cpu() for k, v in scores.items()}, alive)
        new_masks = {}
        for layer, t in by_layer.items():
            w = getattr(t.module, t.parameter)
            view = [w.shape[0]] + [1] * (w.dim() - 1)
            m = keep[layer].to(device=w.device, dtype=C.float_dtype(w)).view(view).expand_as(w)
            prev = masks.get(t.name)
            m = m.clone() if prev is None else m * (prev != 0).to(m.dtype)
            new_masks[t.name] = m.contiguous()
            _apply_mask(t, new_masks[t.name])
        self._verify(target, new_masks)
        self.mask_digest = {t.name: new_masks[t.name].bool().cpu() for t in self.targets}
        out = self.sparsity()
        out["cost"] = {"metric": metric, "limit": step_limit, "reached": reached,
                       "dense": cost.cost(metric)}
        return out

    def _check_finite(self, weights: Mapping[str, Tensor], target: float,
                      trainer: L.Trainer | None) -> None:
        """NaN/inf weights would give a mask that cannot zero them (NaN x 0 = NaN): refuse."""
        for name, w in weights.items():
            finite = torch.isfinite(w)
            if not bool(finite.all()):
                where = "" if trainer is None else (
                    f" at the end of epoch {trainer.current_epoch} (step {trainer.global_step})")
                raise DivergedError(
                    f"cannot prune {name} to {target:.4f}{where}: {int((~finite).sum())} of its "
                    f"{w.numel()} weights are NaN or infinite, so training diverged; lower the "
                    "learning rate (model.optimizer.lr) or check the data",
                    epoch=None if trainer is None else trainer.current_epoch,
                    step=None if trainer is None else trainer.global_step, stage="prune",
                )

    def _verify(self, target: float, masks: Mapping[str, Tensor]) -> None:
        """The step reached its target: within one weight per tensor (one slice for structured
        methods) layer-wise, within one weight over all targets globally; and every masked
        weight is exactly zero."""
        if self.custom is None and self.spec is not None and self.budget is None:
            scope = self.scope or self.spec.default_scope
            if scope == "global":
                zeros = sum(int((m == 0).sum()) for m in masks.values())
                total = sum(m.numel() for m in masks.values())
                if abs(zeros - target * total) > 1:
                    raise ResultError(
                        f"pruning step to {target:.4f} (global) zeroed {zeros} of {total} "
                        f"weights ({zeros / max(total, 1):.4f}), not {round(target * total)}"
                    )
            else:
                for name, m in masks.items():
                    n, zeros = m.numel(), int((m == 0).sum())
                    tol = n // m.shape[self.dim] if self.spec.structured and m.ndim > 1 else 1
                    tol *= self.round_to or 1  # keeps a multiple of round_to: up to that many fewer
                    if abs(zeros - target * n) > tol:
                        raise ResultError(
                            f"pruning step to {target:.4f} left {name} with {zeros} of {n} "
                            f"weights masked ({zeros / n:.4f}), not {target * n:.0f} "
                            f"(tolerance {tol}); method {self.method!r}"
                        )
        for t in self.targets:
            w, m = getattr(t.module, t.parameter), masks[t.name]
            left = int((w.detach()[m == 0] != 0).sum())
            if left:
                raise ResultError(
                    f"pruning step to {target:.4f}: {left} masked weights of {t.name} are not zero"
                )

    def _reduced_stats(self, trainer: L.Trainer | None) -> dict[str, dict]:
        missing = [t.name for t in self.targets if t.name not in self._stats]
        if missing:
            raise RuntimeError(
                f"method {self.method!r} needs gradient statistics but none were gathered for "
                f"{missing}: the pruning epoch ran no backward pass"
            )
        if trainer is None or trainer.world_size == 1:
            return self._stats
        out = {}
        for name, st in self._stats.items():
            out[name] = {k: trainer.strategy.reduce(v, reduce_op="mean") if isinstance(v, Tensor) else v
                         for k, v in st.items()}
        return out

    def sparsity(self) -> dict[str, Any]:
        layers, zeros, total = {}, 0, 0
        for t in self.targets:
            w = getattr(t.module, t.parameter)
            z = int((w == 0).sum())
            layers[t.name] = z / w.numel()
            zeros += z
            total += w.numel()
        return {"global": zeros / max(total, 1), "layers": layers}

    def _snapshot(self) -> dict[str, Tensor]:
        return {t.name: _param(t).detach().clone() for t in self.targets}

    def _rewind(self, trainer: L.Trainer) -> None:
        if self.rewind_state is None:
            raise RuntimeError("lottery rewinding has no saved weights to rewind to")
        optimizers = trainer.optimizers if trainer is not None else []
        with torch.no_grad():
            for t in self.targets:
                p = _param(t)
                p.copy_(self.rewind_state[t.name].to(p.device))
                p.mul_(getattr(t.module, t.parameter + "_mask"))
                for opt in optimizers:
                    if p in opt.state:
                        opt.state[p] = {}

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float | None:
        evaluate = getattr(pl_module, "evaluate", None)
        loaders = trainer.val_dataloaders
        if not callable(evaluate) or loaders is None or self.eval_batches == 0:
            return None
        limit = trainer.limit_val_batches
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        limits = [n for n in (limit if isinstance(limit, int) else None, self.eval_batches)
                  if n is not None and n > 0]
        if limits:
            loader = _FirstBatches(loader, min(limits))
        out = evaluate(loader)
        acc = out.get("acc", _MISSING) if isinstance(out, Mapping) else _MISSING
        if acc is not None and (isinstance(acc, bool) or not isinstance(acc, int | float | Tensor)):
            raise ConfigError(f"{type(pl_module).__name__}.evaluate(dataloader) must return a dict "
                              "with an 'acc' entry (a number, or None for no data), got "
                              f"{out!r:.80}")
        return None if acc is None else float(acc)  # None: an empty validation set

    # ------------------------------------------------------------------ dynamic sparse training
    def _update_due(self, t: int) -> bool:
        return t > 0 and t % self.update_every == 0 and t < self._t_end

    def start_dynamic(self) -> None:
        """Fix each tensor's number of zeros and, in a fresh run, draw the first random mask."""
        shapes = {t.name: tuple(getattr(t.module, t.parameter).shape) for t in self.targets}
        self._zeros = D.layer_zeros(shapes, self.dynamic_amount, self.distribution)
        if self.mask_digest:  # resumed: the masks came back with this callback's state
            self._verify_dynamic()
            return
        by_name = {t.name: t for t in self.targets}
        for name in sorted(by_name):  # sorted: the draws must not depend on the model's order
            t = by_name[name]
            w = getattr(t.module, t.parameter)
            mask = D.random_mask(tuple(w.shape), self._zeros[name], self.generator,
                                 C.float_dtype(w))
            _apply_mask(t, mask.to(w.device))
        self._verify_dynamic()
        self.history.append({"step": 0, "global_step": 0, "epoch": 0, "fraction": 0.0,
                             "regrown": 0, **self._mask_sparsity()})

    def update_dynamic(self, t: int, trainer: L.Trainer | None = None) -> dict[str, Any]:
        """Drop and regrow in every tensor after optimizer step ``t``; return the history record."""
        fraction = D.cosine_fraction(t, self._t_end, self.alpha)
        if self.dynamic == "rigl" and self._grad_step != t:
            raise RuntimeError(f"RigL has no gradient of optimizer step {t}: the mask update "
                               "needs on_before_optimizer_step (automatic optimisation)")
        optimizers = trainer.optimizers if trainer is not None else []
        regrown = 0
        by_name = {t_.name: t_ for t_ in self.targets}
        for name in sorted(by_name):
            tgt = by_name[name]
            mask = getattr(tgt.module, tgt.parameter + "_mask")
            n = D.n_to_update(mask, fraction)
            if n == 0 or self._zeros[name] == 0:
                continue
            weight = getattr(tgt.module, tgt.parameter).detach()
            if self.dynamic == "set":
                new = D.set_update(mask, weight, n, self.generator)
            else:
                new = D.rigl_update(mask, weight, self._grads[name], n)
            new = new.to(device=mask.device, dtype=mask.dtype)
            grown = (new != 0) & (mask == 0)
            p = _param(tgt)
            with torch.no_grad():
                p[grown] = 0  # regrown connections start at zero, with no optimizer history
                for opt in optimizers:
                    for value in opt.state.get(p, {}).values():
                        if isinstance(value, Tensor) and value.shape == p.shape:
                            value[grown] = 0
            _apply_mask(tgt, new)
            regrown += int(grown.sum())
        self._grads, self._grad_step = {}, -1
        self._verify_dynamic()
        self.last_update = t
        record = {"step": len(self.history), "global_step": t,
                  "epoch": None if trainer is None else trainer.current_epoch,
                  "fraction": fraction, "regrown": regrown, **self._mask_sparsity()}
        self.history.append(record)
        return record

    def _mask_sparsity(self) -> dict[str, Any]:
        zeros = {t.name: int((getattr(t.module, t.parameter + "_mask") == 0).sum())
                 for t in self.targets}
        total = sum(getattr(t.module, t.parameter).numel() for t in self.targets)
        return {"achieved": sum(zeros.values()) / max(total, 1)}

    def _verify_dynamic(self) -> None:
        """Every tensor has exactly its fixed number of zeros, and every masked weight is zero."""
        for t in self.targets:
            mask = getattr(t.module, t.parameter + "_mask", None)
            if mask is None:
                raise ResultError(f"dynamic sparse training: {t.name} has no mask")
            zeros = int((mask == 0).sum())
            if zeros != self._zeros[t.name]:
                raise ResultError(f"dynamic sparse training left {t.name} with {zeros} zeros, "
                                  f"not {self._zeros[t.name]}")
            if bool((getattr(t.module, t.parameter).detach()[mask == 0] != 0).any()):
                raise ResultError(f"dynamic sparse training: masked weights of {t.name} are not zero")
        self.mask_digest = {t.name: getattr(t.module, t.parameter + "_mask").bool().cpu()
                            for t in self.targets}

    def _log_dynamic_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        achieved = self._mask_sparsity()["achieved"]
        pl_module.log("sparsity/global", achieved, on_epoch=True, sync_dist=False)
        updates = [h for h in self.history[1:] if h.get("epoch") == trainer.current_epoch]
        if self.verbose and trainer.is_global_zero:
            last = f", last fraction {updates[-1]['fraction']:.3f}" if updates else ""
            say(log, f"epoch {trainer.current_epoch}: {self.dynamic} at sparsity {achieved:.4f} "
                f"(target {self.dynamic_amount:.4f}), {len(updates)} mask updates{last}")

    def remove(self) -> None:
        """Fold the masks into the weights: plain parameters with exact zeros remain."""
        for t in self.targets:
            if prune.is_pruned(t.module) and hasattr(t.module, t.parameter + "_orig"):
                _fold(t)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "plan": [(s.epoch, s.target) for s in self.plan],
            "method": self.method,
            "targets": [t.name for t in self.targets],
            "steps_done": self.steps_done,
            "history": self.history,
            "generator": self.generator.get_state(),
            "rewind_state": self.rewind_state,
            "masks": self.mask_digest,
            "dynamic": None if self.dynamic is None else {
                "kind": self.dynamic, "amount": self.dynamic_amount,
                "distribution": self.distribution, "last_update": self.last_update},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        plan = [(s.epoch, s.target) for s in self.plan]
        saved_plan = [tuple(p) for p in state_dict.get("plan", [])]
        if saved_plan != [tuple(p) for p in plan] or state_dict.get("method") != self.method:
            raise CheckpointError(
                f"checkpoint was made with pruning method {state_dict.get('method')!r} and plan "
                f"{saved_plan}, this run has {self.method!r} and {plan}"
            )
        names = [t.name for t in self.targets]
        if self.targets and state_dict.get("targets") != names:
            raise CheckpointError(
                f"checkpoint prunes {state_dict.get('targets')}, this run prunes {names}"
            )
        saved_dynamic = state_dict.get("dynamic") or {}
        mine = None if self.dynamic is None else (self.dynamic, self.dynamic_amount, self.distribution)
        theirs = (None if not saved_dynamic else
                  (saved_dynamic.get("kind"), saved_dynamic.get("amount"),
                   saved_dynamic.get("distribution")))
        if mine != theirs:
            raise CheckpointError(f"checkpoint was made with dynamic sparse training {theirs}, "
                                  f"this run has {mine}")
        self.last_update = int(saved_dynamic.get("last_update", -1))
        self.steps_done = int(state_dict["steps_done"])
        self.history = list(state_dict["history"])
        self.generator.set_state(state_dict["generator"])
        self.rewind_state = state_dict.get("rewind_state")
        self.mask_digest = dict(state_dict.get("masks") or {})
        for t in self.targets:
            saved = self.mask_digest.get(t.name)
            if saved is None:
                continue
            mask = getattr(t.module, t.parameter + "_mask", None)
            if mask is None:  # plain weights in the checkpoint: the masks come from here
                weight = getattr(t.module, t.parameter)
                if tuple(saved.shape) != tuple(weight.shape) or bool(weight.detach()[~saved.to(weight.device)].any()):
                    raise CheckpointError(f"checkpoint's mask of {t.name} does not match its weights")
                _apply_mask(t, saved.to(device=weight.device, dtype=weight.dtype))
            elif not torch.equal(mask.bool().cpu(), saved):
                raise CheckpointError(f"checkpoint's mask of {t.name} does not match its weights")


def _loss(pl_module: nn.Module, batch: Any) -> Tensor:
    """The training loss of ``batch``: ``loss_and_logits`` if the module has it (no metric
    side effects), else its ``training_step`` (a tensor or a dict with ``"loss"``)."""
    direct = getattr(pl_module, "loss_and_logits", None)
    if callable(direct):
        return direct(batch)[0]
    out = pl_module.training_step(batch, 0)
    loss = out.get("loss") if isinstance(out, Mapping) else out
    if not isinstance(loss, Tensor):
        raise ConfigError(f"{type(pl_module).__name__}.training_step returned no loss tensor; the "
                          "probing pruning methods (snip, grasp) need one")
    return loss
_MAX_DIMS = 8  # tensor dimensions a slice axis may count (the targets' own at bind)
_MAX_NORM = 10.0  # a larger norm order underflows to 0 for weights below 1: all slices tie


def _check_norm(n: object) -> float:
    """The structured criteria's norm order: a number in [1, 10], inf or 'fro' (2)."""
    try:
        order = C.norm_order(n)
    except ConfigError:
        order = math.nan
    if not (order == math.inf or 1.0 <= order <= _MAX_NORM):
        raise ConfigError(f"n={n!r} must be a norm order in [1, {_MAX_NORM:g}], inf or 'fro'")
    return order


def _check_dynamic(cb: PruningCallback) -> None:
    """Refuse dynamic-sparse-training settings that cannot work, one line each."""
    kind = cb.dynamic
    if kind not in D.KINDS:
        raise ConfigError(f"unknown dynamic sparse training {kind!r}; valid: {', '.join(D.KINDS)}")
    if cb.plan:
        raise ConfigError(f"dynamic={kind!r} keeps one sparsity from the start: it takes no "
                          "plan of pruning steps")
    if cb.custom is not None or cb.method != "l1_unstructured":
        raise ConfigError(f"dynamic={kind!r} drops the smallest-magnitude weights of each layer: "
                          f"use method='l1_unstructured', not {cb.method!r}")
    D.check_amount(cb.dynamic_amount)
    every = cb.update_every
    if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= bounds.MAX_STEPS:
        raise ConfigError(f"update_every={every!r} must be an integer >= 1 (at most "
                          f"{bounds.MAX_STEPS}; optimizer steps between mask updates)")
    if isinstance(cb.alpha, bool) or not isinstance(cb.alpha, int | float) or not 0 < cb.alpha <= 1:
        raise ConfigError(f"alpha={cb.alpha!r} must be in (0, 1] (the first update's "
                          "fraction of active weights dropped and regrown)")
    stop = cb.stop_fraction
    if isinstance(stop, bool) or not isinstance(stop, int | float) or not 0 < stop <= 1:
        raise ConfigError(f"stop_fraction={stop!r} must be in (0, 1] (the share of "
                          "training during which masks change)")
    D.check_distribution(cb.distribution)


def _param(t: Target) -> nn.Parameter:
    orig = getattr(t.module, t.parameter + "_orig", None)
    return orig if orig is not None else getattr(t.module, t.parameter)


def _mask_in_place(targets: Sequence[Target]) -> None:
    """Zero the pruned entries of every pruned target's ``<p>_orig`` (one fused call)."""
    origs, masks = [], []
    for t in targets:
        mask = getattr(t.module, t.parameter + "_mask", None)
        orig = getattr(t.module, t.parameter + "_orig", None)
        if mask is not None and orig is not None:
            origs.append(orig)
            masks.append(mask)
    if origs:
        with torch.no_grad():
            mul_in_place(origs, masks)


def _apply_mask(t: Target, mask: Tensor) -> None:
    """Install or update ``mask`` on ``t`` without torch's compounding of repeated calls."""
    module, name = t.module, t.parameter
    if prune.is_pruned(module) and hasattr(module, name + "_mask"):
        buf = getattr(module, name + "_mask")
        buf.copy_(mask.to(buf.dtype))
    else:
        slot = param_slot(module, name)
        MaskedInPlace.apply(module, name, mask)
        # torch re-registers the tensor as <name>_orig at the end of the module's parameters;
        # put it back in <name>'s slot so optimizer state (kept by position) lines up after a
        # resume.
        move_param(module, name + "_orig", slot)
    orig = getattr(module, name + "_orig")
    with torch.no_grad():
        orig.mul_(getattr(module, name + "_mask"))
    setattr(module, name, orig[...])


def _fold(t: Target) -> None:
    """``prune.remove`` keeping the parameter in ``<p>``'s slot (optimizer state is by position)."""
    slot = param_slot(t.module, t.parameter + "_orig")
    prune.remove(t.module, t.parameter)
    move_param(t.module, t.parameter, slot)


_MISSING = object()


def _check_evaluate(pl_module: nn.Module, eval_batches: int | None) -> None:
    """A module's ``evaluate`` must take the loader (one argument): refused before training."""
    evaluate = getattr(pl_module, "evaluate", None)
    if not callable(evaluate) or eval_batches == 0:
        return
    try:
        inspect.signature(evaluate).bind(None)
    except TypeError:
        raise ConfigError(f"{type(pl_module).__name__}.evaluate must take one argument, the "
                          "validation loader, and return {'acc': ...}; or pass eval_batches=0 "
                          "to skip the measurement after each pruning step") from None
    except ValueError:  # no signature to inspect (a builtin): trust it
        pass


def _metric(trainer: L.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)


class _FirstBatches:
    """The first ``n`` batches of a loader, behaving like the loader otherwise.

    A module's ``evaluate(dataloader)`` may read ``dataloader.dataset``, ``batch_size`` or
    ``len(dataloader)``: every attribute but the iteration comes from the real loader.
    """

    def __init__(self, loader: Any, n: int) -> None:
        self.loader, self.n = loader, n

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(self.loader):
            if i >= self.n:
                break
            yield batch

    def __len__(self) -> int:
        try:
            return min(self.n, len(self.loader))
        except TypeError:
            return self.n

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)
