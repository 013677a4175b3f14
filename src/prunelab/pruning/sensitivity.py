"""Layer sensitivity: how much accuracy each layer loses when it alone is pruned to each amount.

Pure library code (no files, no data sets): give it a model, a function that measures the
model's accuracy, the parameter names to probe and a grid of amounts. Each layer is pruned
alone with a registered criterion (default: per-layer magnitude), measured, and restored to its
exact previous values before the next probe. An amount is the layer's *target* fraction of
zeros, as everywhere in prunelab: weights that are already zero count towards it, so a layer
that is already sparser than an amount is left as it is and shows no drop there.

The table says which layers tolerate heavy pruning and which do not; :func:`derive_amounts`
turns it into the largest amount per layer whose drop stays within a tolerance.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from prunelab.bounds import MAX_GRID
from prunelab.errors import ConfigError
from prunelab.pruning import criteria as C

__all__ = ["DEFAULT_AMOUNTS", "SensitivityTable", "analyze", "check_grid", "check_inputs",
           "derive_amounts"]

DEFAULT_AMOUNTS: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


@dataclass
class SensitivityTable:
    """Accuracy with each layer pruned alone: ``accuracy[layer][amount]`` (fractions in [0, 1]).

    ``baseline``: the model's accuracy as given; ``drop(layer, amount)``: the loss in
    percentage points (positive = worse); ``sparsity``: each layer's fraction of zeros before
    the analysis; ``numel``: its number of weights.
    """

    baseline: float
    layers: list[str]
    amounts: list[float]
    accuracy: dict[str, dict[float, float]] = field(default_factory=dict)
    sparsity: dict[str, float] = field(default_factory=dict)
    numel: dict[str, int] = field(default_factory=dict)
    method: str = "l1_unstructured"

    def drop(self, layer: str, amount: float) -> float:
        """Accuracy lost, in percentage points, with ``layer`` alone pruned to ``amount``."""
        return 100.0 * (self.baseline - self.accuracy[layer][amount])

    def rows(self) -> list[dict[str, object]]:
        """One row per (layer, amount), layers in the given order, amounts ascending."""
        return [{"layer": layer, "amount": a, "accuracy": self.accuracy[layer][a],
                 "drop_pts": self.drop(layer, a), "baseline": self.baseline,
                 "layer_sparsity_before": self.sparsity.get(layer), "numel": self.numel.get(layer)}
                for layer in self.layers for a in self.amounts]


def check_grid(amounts: Iterable[object]) -> list[float]:
    """The amounts as sorted unique floats, each in (0, 1); anything else is a ConfigError."""
    try:
        values = list(amounts)
    except TypeError:
        raise ConfigError(f"amount grid must be a list of fractions in (0, 1), got {amounts!r}") from None
    out = []
    for a in values:
        if (isinstance(a, bool) or not isinstance(a, numbers.Real) or math.isnan(float(a))
                or not 0.0 < float(a) < 1.0):
            raise ConfigError(f"amount {a!r} in the grid is not a fraction in (0, 1), e.g. "
                              "0.5,0.7,0.9,0.99")
        out.append(round(float(a), 10))
    if not out:
        raise ConfigError("the amount grid is empty; give fractions in (0, 1), e.g. 0.5,0.7,0.9,0.99")
    if len(set(out)) > MAX_GRID:  # each amount is one pass over the validation batches per layer
        raise ConfigError(f"the amount grid has {len(set(out))} amounts, more than {MAX_GRID}")
    return sorted(set(out))


def _parameter(model: nn.Module, name: str) -> torch.Tensor:
    params = dict(model.named_parameters())
    if name not in params:
        prunable = [n for n, p in params.items() if p.ndim > 1]
        raise ConfigError(f"layer {name!r} is not a parameter of {type(model).__name__}; "
                          f"valid: {', '.join(prunable)}")
    return params[name]


def check_inputs(model: nn.Module, layers: Sequence[str], method: str) -> dict[str, torch.Tensor]:
    """The named parameters, if every name exists and ``method`` can score a finished model."""
    criterion = C.get(method)
    if criterion.needs_grads:
        cheap = ", ".join(k for k, c in C.CRITERIA.items() if not c.needs_grads)
        raise ConfigError(f"criterion {method!r} needs gradient statistics from training; the "
                          f"sensitivity analysis prunes a finished model: use one of {cheap}")
    if not layers:
        raise ConfigError("no layer to analyse: give at least one parameter name")
    return {name: _parameter(model, name) for name in layers}


@torch.no_grad()
def analyze(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float],
    layers: Sequence[str],
    amounts: Iterable[float] = DEFAULT_AMOUNTS,
    *,
    method: str = "l1_unstructured",
    norm: float = 2.0,
    dim: int = 0,
    seed: int = 0,
) -> SensitivityTable:
    """Prune each of ``layers`` (parameter names of ``model``) alone to each of ``amounts`` with
    criterion ``method``, measure ``evaluate(model)`` (an accuracy in [0, 1]), restore the layer.

    ``norm``/``dim``: norm order and slice axis of structured criteria; ``seed``: random criteria
    draw from a generator seeded with it (each probe afresh, so probes do not depend on the
    order). Criteria that need gradient statistics (taylor, fisher) are refused: a finished
    run's model carries none. The model is left exactly as it was given.
    """
    grid = check_grid(amounts)
    params = check_inputs(model, layers, method)
    table = SensitivityTable(baseline=float(evaluate(model)), layers=list(layers), amounts=grid,
                             method=method)
    for name, p in params.items():
        saved = p.detach().clone()
        table.sparsity[name] = C.sparsity(saved)
        table.numel[name] = p.numel()
        table.accuracy[name] = {}
        existing = (saved != 0).to(C.float_dtype(saved))  # zeros already there count first
        for amount in grid:
            mask = C.mask(method, saved, amount, mask=existing, norm=norm, dim=dim,
                          generator=torch.Generator().manual_seed(seed))
            p.copy_(saved * mask.to(saved.dtype))
            try:
                table.accuracy[name][amount] = float(evaluate(model))
            finally:
                p.copy_(saved)
        if not torch.equal(p, saved):  # pragma: no cover - copy_ cannot fail silently
            raise RuntimeError(f"{name} was not restored")
    return table


def derive_amounts(table: SensitivityTable, max_drop: float) -> dict[str, float]:
    """Per layer, the largest amount of the grid whose drop, and that of every smaller amount,
    is at most ``max_drop`` percentage points (0.0: even the smallest amount costs more).

    Requiring every smaller amount to pass too keeps one lucky measurement at a high amount
    from being picked over a failure below it.
    """
    if (isinstance(max_drop, bool) or not isinstance(max_drop, numbers.Real)
            or math.isnan(float(max_drop)) or max_drop < 0):
        raise ConfigError(f"--derive-amounts {max_drop!r} must be a drop in accuracy points >= 0, "
                          "e.g. 0.5")
    out: dict[str, float] = {}
    for layer in table.layers:
        best = 0.0
        for a in table.amounts:
            if table.drop(layer, a) > max_drop + 1e-9:  # 0.99 - 0.985 is 0.5000000000000004
                break
            best = a
        out[layer] = best
    return out


def amounts_yaml(amounts: Mapping[str, float], max_drop: float, note: str = "") -> str:
    """The derived amounts as a YAML snippet (a mapping ``layer_amounts: {name: amount}``)."""
    lines = [f"# largest amount per layer with an accuracy drop <= {max_drop:g} points when the",
             "# layer alone is pruned (prunelab sensitivity)"]
    lines += [f"# {line}" for line in note.splitlines() if line]
    lines.append("layer_amounts:")
    lines += [f"  {name}: {amount:g}" for name, amount in amounts.items()]
    return "\n".join(lines) + "\n"
