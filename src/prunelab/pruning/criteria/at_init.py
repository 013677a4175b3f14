"""Criteria that probe the model itself: SNIP, GraSP and SynFlow (pruning at initialisation).

They cannot score a weight from the weight and training-time gradient statistics alone, so each
has a *probe*: right before a pruning step the callback builds a :class:`Probe` (the model, the
leaf parameter of every pruned tensor, a loss on a batch, training batches) and the probe
returns per-tensor statistics that the score function reads from ``ctx.stats``. Usually the
step is ``pruning=at_init``, before the first optimizer step, but any step may use them.

* ``snip`` (Lee, Ajanthan & Torr, ICLR 2019): connection sensitivity ``|g ⊙ w|``, with ``g`` the
  gradient of the loss averaged over ``grad_batches`` training batches at the current weights.
* ``grasp`` (Wang, Zhang & Grosse, ICLR 2020): gradient-signal preservation. The paper scores
  ``S = −w ⊙ Hg`` (``H`` the Hessian of the loss, ``g`` its gradient, both over
  ``grad_batches`` batches) and removes the *highest* scores (keeps the lowest); here a higher
  score is kept longer, so the registered score is ``w ⊙ Hg = −S`` and the same weights go.
  ``g`` is held fixed while ``Hg`` is taken as the gradient of ``gᵀ∇L`` (as in the paper's
  algorithm). The authors' code also divides the logits by a temperature T = 200 before the
  loss in both passes; prunelab uses the model's own training loss unchanged (T = 1), since a
  probe's loss need not be a softmax: the scores' scale, and possibly their order, differ.
* ``synflow`` (Tanaka, Kunin, Yamins & Ganguli, NeurIPS 2020): data-free. Every parameter is
  replaced by its absolute value (BatchNorm in eval mode, float64 against overflow), the model
  is run on an all-ones input of one training sample's shape, ``R`` is the sum of its output,
  and the score is ``|w ⊙ ∂R/∂w|``. It is iterative: a step is split into ``iterations``
  (default 100) sub-steps whose densities fall geometrically, re-scoring at the new masks each
  time (the callback does the splitting, see :attr:`Criterion.iterations`).

All three are global by default (one threshold over every pruned tensor), as in the papers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from prunelab.errors import ConfigError
from prunelab.pruning.criteria.registry import Criterion, ScoreContext, register


@dataclass(frozen=True)
class Probe:
    """What a probing criterion may use right before a step.

    ``module``: the model, called as ``module(x)``; ``params``: pruned tensor name → the leaf
    parameter that holds it (its gradient is the weight's gradient; pruned entries are zero);
    ``loss``: a batch → the scalar training loss at the current weights; ``batches(n)``: the
    first ``n`` training batches, on the module's device; ``grad_batches``: how many batches
    data-dependent criteria should use.
    """

    module: nn.Module
    params: Mapping[str, Tensor]
    loss: Callable[[Any], Tensor]
    batches: Callable[[int], Sequence[Any]]
    grad_batches: int = 1


def first_input(batch: Any) -> Tensor:
    """The forward's input in a batch: the batch itself, or its first element."""
    x = batch[0] if isinstance(batch, list | tuple) and batch else batch
    if not isinstance(x, Tensor) or x.dim() < 1:
        raise ConfigError(
            f"cannot take an example input from a training batch of type {type(batch).__name__}: "
            "it must be a tensor or an (inputs, targets) tuple whose first element is a tensor"
        )
    return x


def _grads(probe: Probe, loss: Tensor, names: list[str], create_graph: bool = False) -> list[Tensor]:
    params = [probe.params[n] for n in names]
    grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def _mean_grad(probe: Probe, names: list[str], batches: Sequence[Any]) -> list[Tensor]:
    total = [torch.zeros_like(probe.params[n], dtype=torch.float32) for n in names]
    for batch in batches:
        with torch.enable_grad():
            grads = _grads(probe, probe.loss(batch), names)
        for acc, g in zip(total, grads, strict=True):
            acc.add_(g.detach().float())
    return [t / len(batches) for t in total]


def _data(probe: Probe, what: str) -> Sequence[Any]:
    batches = list(probe.batches(max(1, int(probe.grad_batches))))
    if not batches:
        raise ConfigError(f"{what} needs at least one training batch; the training set is empty")
    return batches


def snip_probe(probe: Probe) -> dict[str, dict[str, Any]]:
    """The loss gradient at the current weights, averaged over ``grad_batches`` batches."""
    names = list(probe.params)
    batches = _data(probe, "snip")
    grads = _mean_grad(probe, names, batches)
    return {n: {"grad": g, "batches": len(batches)} for n, g in zip(names, grads, strict=True)}


def grasp_probe(probe: Probe) -> dict[str, dict[str, Any]]:
    """``g`` (mean loss gradient) and the Hessian-gradient product ``Hg`` over the batches."""
    names = list(probe.params)
    batches = _data(probe, "grasp")
    g_fixed = _mean_grad(probe, names, batches)
    hg = [torch.zeros_like(g) for g in g_fixed]
    for batch in batches:
        with torch.enable_grad():
            grads = _grads(probe, probe.loss(batch), names, create_graph=True)
            z = sum((g * gf.to(g.dtype)).sum() for g, gf in zip(grads, g_fixed, strict=True))
            hvp = _grads(probe, z, names) if z.requires_grad else [torch.zeros_like(g) for g in grads]
        for acc, h in zip(hg, hvp, strict=True):
            acc.add_(h.detach().float())
    return {n: {"grad": g, "hg": h / len(batches), "batches": len(batches)}
            for n, g, h in zip(names, g_fixed, hg, strict=True)}


def synflow_probe(probe: Probe) -> dict[str, dict[str, Any]]:
    """``|w ⊙ ∂R/∂w|`` of the all-|w| model on an all-ones input, in float64, BatchNorm in eval."""
    batches = list(probe.batches(1))
    if not batches:
        raise ConfigError("synflow takes its input shape from a training batch; the training set is empty")
    x = first_input(batches[0])
    if not x.is_floating_point():
        raise ConfigError(
            f"synflow needs a model whose input is a float tensor (it feeds all ones); this "
            f"model's training input is {x.dtype} (e.g. token ids): use snip, grasp or lamp"
        )
    module = probe.module
    index = {id(p): n for n, p in module.named_parameters(remove_duplicate=False)}
    missing = [n for n, p in probe.params.items() if id(p) not in index]
    if missing:
        raise ConfigError(f"synflow: pruned tensors {missing} are not parameters of the model")
    swapped: dict[str, Tensor] = {}
    for n, p in module.named_parameters():
        swapped[n] = p.detach().abs().to(torch.float64).requires_grad_(True)
    for n, b in module.named_buffers():
        if b.is_floating_point():
            swapped[n] = b.detach().abs().to(torch.float64)
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    was_training = module.training
    module.eval()
    try:
        with torch.enable_grad():
            out = torch.func.functional_call(module, swapped, (ones,))
            outs = [t for t in (out if isinstance(out, list | tuple) else [out]) if isinstance(t, Tensor)]
            r = sum(t.sum() for t in outs)
            names = list(probe.params)
            leaves = [swapped[index[id(probe.params[n])]] for n in names]
            grads = torch.autograd.grad(r, leaves, allow_unused=True)
    finally:
        module.train(was_training)
    stats = {}
    for n, leaf, g in zip(names, leaves, grads, strict=True):
        g = torch.zeros_like(leaf) if g is None else g
        stats[n] = {"synflow": (leaf.detach() * g.detach()).abs(), "batches": 1}
    return stats


def _stat(ctx: ScoreContext, key: str, weight: Tensor, method: str) -> Tensor:
    stats = ctx.stats
    if not stats or key not in stats:
        raise ConfigError(
            f"no {key} statistics for {ctx.name}: the {method} criterion probes the model, so it "
            "runs inside PruningCallback (or pass the output of its probe as stats)"
        )
    s = stats[key]
    if tuple(s.shape) != tuple(weight.shape):
        raise ConfigError(f"{method} statistics of shape {tuple(s.shape)} do not match "
                          f"{ctx.name} of shape {tuple(weight.shape)}")
    return s.to(weight.device)


def snip_score(weight: Tensor, ctx: ScoreContext) -> Tensor:
    """Connection sensitivity ``|g ⊙ w|``."""
    g = _stat(ctx, "grad", weight, "snip")
    return (weight.detach().to(g.dtype) * g).abs()


def grasp_score(weight: Tensor, ctx: ScoreContext) -> Tensor:
    """``w ⊙ Hg`` = −S, the negated GraSP score (Wang et al. 2020 remove the largest
    ``S = −w ⊙ Hg``), so removing the lowest here removes the paper's highest."""
    hg = _stat(ctx, "hg", weight, "grasp")
    return weight.detach().to(hg.dtype) * hg


def synflow_score(weight: Tensor, ctx: ScoreContext) -> Tensor:
    """``|w ⊙ ∂R/∂w|`` as the probe computed it (float64)."""
    return _stat(ctx, "synflow", weight, "synflow").clone()


register(Criterion("snip", snip_score, scopes=("global", "layer"), probe=snip_probe))
register(Criterion("grasp", grasp_score, scopes=("global", "layer"), probe=grasp_probe))
register(Criterion("synflow", synflow_score, scopes=("global", "layer"), probe=synflow_probe,
                   iterations=100))
