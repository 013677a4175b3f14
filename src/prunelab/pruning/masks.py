"""Mask mechanics on a model's pruned tensors: apply, fold, re-mask, and the checks after each step.

A pruned tensor ``<p>`` is reparametrised as torch's pruning does it (``<p>_orig`` parameter,
``<p>_mask`` buffer), with the masked entries of ``<p>_orig`` kept at exactly zero, so that
checkpoints can hold plain ``<p>`` tensors that load into the unpruned class. Nothing here knows
Lightning or a schedule: the callbacks call these functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from prunelab.errors import CheckpointError, DivergedError, ResultError
from prunelab.internals import MaskedInPlace, move_param, mul_in_place, param_slot
from prunelab.pruning.targets import Target


def param(t: Target) -> nn.Parameter:
    """The leaf parameter that holds ``t``'s values (``<p>_orig`` once pruned)."""
    orig = getattr(t.module, t.parameter + "_orig", None)
    return orig if orig is not None else getattr(t.module, t.parameter)


def weight(t: Target) -> Tensor:
    """``t``'s effective (masked) tensor, detached."""
    return getattr(t.module, t.parameter).detach()


def mask_of(t: Target) -> Tensor | None:
    return getattr(t.module, t.parameter + "_mask", None)


def current_masks(targets: Sequence[Target]) -> dict[str, Tensor]:
    """The masks installed so far (a tensor never pruned has none)."""
    return {t.name: getattr(t.module, t.parameter + "_mask") for t in targets
            if prune.is_pruned(t.module) and hasattr(t.module, t.parameter + "_mask")}


def mask_in_place(targets: Sequence[Target]) -> None:
    """Zero the pruned entries of every pruned target's ``<p>_orig`` (one fused call)."""
    origs, masks = [], []
    for t in targets:
        mask = mask_of(t)
        orig = getattr(t.module, t.parameter + "_orig", None)
        if mask is not None and orig is not None:
            origs.append(orig)
            masks.append(mask)
    if origs:
        with torch.no_grad():
            mul_in_place(origs, masks)


def apply_mask(t: Target, mask: Tensor) -> None:
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


def fold(t: Target) -> None:
    """``prune.remove`` keeping the parameter in ``<p>``'s slot (optimizer state is by position)."""
    slot = param_slot(t.module, t.parameter + "_orig")
    prune.remove(t.module, t.parameter)
    move_param(t.module, t.parameter, slot)


def fold_all(targets: Sequence[Target]) -> None:
    """Fold every mask into its weight: plain parameters with exact zeros remain."""
    for t in targets:
        if prune.is_pruned(t.module) and hasattr(t.module, t.parameter + "_orig"):
            fold(t)


def reparametrize(targets: Sequence[Target], state_dict: Mapping[str, Any], prefix: str) -> None:
    """Before a state dict loads into the model: give each target the form the file holds.

    A file with ``<p>_orig``/``<p>_mask`` (torch's own pruning) needs the reparametrisation; a
    plain ``<p>`` (prunelab's checkpoints, or a dense state dict) into a pruned model drops it
    (a checkpoint's masks come back from the callback's state, loaded right after the model's).
    """
    for t in targets:
        key = prefix + t.name
        mask_key = key + "_mask"
        if mask_key in state_dict and not prune.is_pruned(t.module):
            apply_mask(t, state_dict[mask_key].to(param(t).device))
        elif key in state_dict and mask_key not in state_dict and hasattr(t.module, t.parameter + "_orig"):
            fold(t)


def plain_state_dict(state: dict[str, Any], targets: Sequence[Target]) -> dict[str, Any]:
    """A checkpoint's state dict with plain ``<p>`` tensors (already exactly zero where pruned)
    instead of ``<p>_orig``/``<p>_mask``: it loads into the user's plain class."""
    renamed = {}
    for t in targets:
        orig_key = f"{t.name}_orig"
        if orig_key in state:
            renamed[orig_key] = t.name
            state.pop(f"{t.name}_mask", None)
    return {renamed.get(k, k): v for k, v in state.items()} if renamed else state


def digest(targets: Sequence[Target]) -> dict[str, Tensor]:
    """Every target's mask as a CPU bool tensor: what a checkpoint keeps."""
    return {t.name: getattr(t.module, t.parameter + "_mask").bool().cpu() for t in targets}


def restore(targets: Sequence[Target], saved: Mapping[str, Tensor]) -> None:
    """Re-apply a checkpoint's masks; a mask that disagrees with the loaded weights is refused."""
    for t in targets:
        mask = saved.get(t.name)
        if mask is None:
            continue
        current = mask_of(t)
        if current is None:  # plain weights in the checkpoint: the masks come from here
            w = getattr(t.module, t.parameter)
            if tuple(mask.shape) != tuple(w.shape) or bool(w.detach()[~mask.to(w.device)].any()):
                raise CheckpointError(f"checkpoint's mask of {t.name} does not match its weights")
            apply_mask(t, mask.to(device=w.device, dtype=w.dtype))
        elif not torch.equal(current.bool().cpu(), mask):
            raise CheckpointError(f"checkpoint's mask of {t.name} does not match its weights")


def sparsity(targets: Sequence[Target]) -> dict[str, Any]:
    """``{"global": zeros / weights, "layers": {name: zeros / weights}}`` of the tensors."""
    layers, zeros, total = {}, 0, 0
    for t in targets:
        w = getattr(t.module, t.parameter)
        z = int((w == 0).sum())
        layers[t.name] = z / w.numel()
        zeros += z
        total += w.numel()
    return {"global": zeros / max(total, 1), "layers": layers}


def snapshot(targets: Sequence[Target]) -> dict[str, Tensor]:
    """The targets' current values (lottery-ticket rewinding)."""
    return {t.name: param(t).detach().clone() for t in targets}


def rewind(targets: Sequence[Target], state: Mapping[str, Tensor] | None,
           optimizers: Sequence[torch.optim.Optimizer] = ()) -> None:
    """Reset the surviving weights to ``state`` (masks kept) and clear their optimizer state."""
    if state is None:
        raise RuntimeError("lottery rewinding has no saved weights to rewind to")
    with torch.no_grad():
        for t in targets:
            p = param(t)
            p.copy_(state[t.name].to(p.device))
            p.mul_(getattr(t.module, t.parameter + "_mask"))
            for opt in optimizers:
                if p in opt.state:
                    opt.state[p] = {}


def check_finite(targets: Sequence[Target], target: float, epoch: int | None = None,
                 step: int | None = None) -> None:
    """NaN/inf weights would give a mask that cannot zero them (NaN x 0 = NaN): refuse."""
    for t in targets:
        w = weight(t)
        finite = torch.isfinite(w)
        if not bool(finite.all()):
            where = "" if epoch is None else f" at the end of epoch {epoch} (step {step})"
            raise DivergedError(
                f"cannot prune {t.name} to {target:.4f}{where}: {int((~finite).sum())} of its "
                f"{w.numel()} weights are NaN or infinite, so training diverged; lower the "
                "learning rate (model.optimizer.lr) or check the data",
                epoch=epoch, step=step, stage="prune",
            )


def verify(targets: Sequence[Target], masks: Mapping[str, Tensor], target: float,
           scope: str | None = None, structured_dim: int | None = None, what: str = "",
           round_to: int | None = None) -> None:
    """The step reached its target and every masked weight is exactly zero.

    ``scope`` ``"global"``: within one weight over all targets; ``"layer"``: within one weight
    per tensor (one slice along ``structured_dim`` for structured methods, ``round_to`` slices
    when the kept ones are a multiple of it); ``None``: the counts are not checked (a custom
    method or a budget sets them itself).
    """
    if scope == "global":
        zeros = sum(int((m == 0).sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        if abs(zeros - target * total) > 1:
            raise ResultError(f"pruning step to {target:.4f} (global) zeroed {zeros} of {total} "
                              f"weights ({zeros / max(total, 1):.4f}), not {round(target * total)}")
    elif scope is not None:
        for name, m in masks.items():
            n, zeros = m.numel(), int((m == 0).sum())
            tol = n // m.shape[structured_dim] if structured_dim is not None and m.ndim > 1 else 1
            tol *= round_to or 1  # a multiple of round_to is kept: up to that many slices fewer
            if abs(zeros - target * n) > tol:
                raise ResultError(f"pruning step to {target:.4f} left {name} with {zeros} of {n} "
                                  f"weights masked ({zeros / n:.4f}), not {target * n:.0f} "
                                  f"(tolerance {tol}); method {what!r}")
    for t in targets:
        left = int((weight(t)[masks[t.name] == 0] != 0).sum())
        if left:
            raise ResultError(f"pruning step to {target:.4f}: {left} masked weights of {t.name} "
                              "are not zero")
