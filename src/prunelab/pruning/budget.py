"""Budgets for structured pruning: remove filters/neurons until the network fits N MACs or params.

A fraction of filters says little about cost: a conv filter early in a CNN costs far more MACs
than a neuron of the classifier, and removing a filter also removes the next layer's input
channel. :class:`CostModel` counts the MACs and parameters of the network as a function of how
many output units (Conv filters, Linear neurons) each layer keeps, including that downstream
effect, so that :func:`select_budget` can rank every unit of every pruned layer together and
remove the lowest-ranked ones until the network fits. After ``pruning.compact=true`` the
compacted network has exactly these MACs and parameters when the layers form Conv/Linear chains
through BatchNorm, activations, pooling and flattening (the consumer's inputs that a removed
unit feeds are found by walking the autograd graph back from each layer's input).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from prunelab.bounds import MAX_COST
from prunelab.errors import ConfigError
from prunelab.pruning.criteria import ScoreContext, float_dtype, norm_order

METRICS: tuple[str, ...] = ("macs", "params")
_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)
_PER_CHANNEL = (nn.modules.batchnorm._BatchNorm,)


@dataclass
class Layer:
    """One Conv/Linear layer: ``n_out`` units, ``n_in`` inputs, its dense cost per sample.

    ``producer``: the layer whose units feed this layer's inputs (``ratio`` inputs per unit;
    ``None`` when that is not a plain chain, in which case its inputs never shrink).
    """

    name: str
    n_out: int
    n_in: int
    macs: int
    weight: int
    bias: int
    producer: str | None = None
    ratio: int = 0


@dataclass
class CostModel:
    """MACs and parameters of a network as a function of the units each layer keeps."""

    layers: dict[str, Layer]
    per_unit: dict[str, int] = field(default_factory=dict)  # producer → params per unit (BatchNorm)
    other_params: int = 0

    def _inputs(self, layer: Layer, kept: Mapping[str, int]) -> int:
        if layer.producer is None:
            return layer.n_in
        p = self.layers[layer.producer]
        return layer.n_in - layer.ratio * (p.n_out - kept.get(p.name, p.n_out))

    def macs(self, kept: Mapping[str, int] | None = None) -> int:
        """Multiply-accumulates of one sample's forward when layer ``name`` keeps ``kept[name]``
        units (missing: all)."""
        kept = kept or {}
        total = 0
        for layer in self.layers.values():
            o, i = kept.get(layer.name, layer.n_out), self._inputs(layer, kept)
            total += layer.macs * o * i // (layer.n_out * layer.n_in)
        return total

    def params(self, kept: Mapping[str, int] | None = None) -> int:
        """Parameters of the network (all of them) for the same ``kept``."""
        kept = kept or {}
        total = self.other_params
        for layer in self.layers.values():
            o, i = kept.get(layer.name, layer.n_out), self._inputs(layer, kept)
            total += layer.weight * o * i // (layer.n_out * layer.n_in) + layer.bias * o // layer.n_out
        for name, per in self.per_unit.items():
            total += per * kept.get(name, self.layers[name].n_out)
        return total

    def cost(self, metric: str, kept: Mapping[str, int] | None = None) -> int:
        return self.macs(kept) if metric == "macs" else self.params(kept)


def _unit_counts(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    return module.out_channels, module.in_channels


def build_cost_model(model: nn.Module, example: Tensor) -> CostModel:
    """Trace one forward of ``model`` on ``example`` (batch dim first) and build its cost model.

    The model runs in eval mode (no BatchNorm statistics change) and is otherwise untouched.
    """
    names = {id(m): n for n, m in model.named_modules()}
    out_fn: dict[Any, nn.Module] = {}
    in_fn: dict[nn.Module, Any] = {}
    shapes: dict[nn.Module, tuple[int, ...]] = {}
    order: list[nn.Module] = []

    def pre(module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0] if args else None
        in_fn[module] = x.grad_fn if isinstance(x, Tensor) else None

    def post(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            if output.grad_fn is not None:
                out_fn[output.grad_fn] = module
            if isinstance(module, _LAYERS) and module not in shapes:
                shapes[module] = tuple(output.shape)
                order.append(module)

    watched = [m for m in model.modules() if not list(m.children()) and
               (isinstance(m, _LAYERS) or any(True for _ in m.parameters(recurse=False)))]
    handles = [h for m in watched for h in (m.register_forward_pre_hook(pre),
                                             m.register_forward_hook(post))]
    was_training = model.training
    model.eval()
    x = example
    if x.is_floating_point() and not x.requires_grad:
        x = x.detach().clone().requires_grad_(True)  # grad_fns even with frozen parameters
    try:
        with torch.enable_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    batch = int(example.shape[0]) if example.dim() else 1

    layers: dict[str, Layer] = {}
    counted: set[int] = set()
    per_unit: dict[str, int] = {}
    for m in order:
        n_out, n_in = _unit_counts(m)
        out_per_sample = math.prod(shapes[m]) // max(batch, 1)
        if isinstance(m, nn.Linear):
            macs = out_per_sample * m.in_features
        else:
            macs = out_per_sample * (m.in_channels // m.groups) * math.prod(m.kernel_size)
        bias = m.bias.numel() if getattr(m, "bias", None) is not None else 0
        weight = sum(p.numel() for n, p in m.named_parameters(recurse=False)) - bias
        layers[names[id(m)]] = Layer(names[id(m)], n_out, n_in, macs, weight, bias)
        counted.update(id(p) for p in m.parameters(recurse=False))
    norms_seen: set[int] = set()
    for m in order:
        layer = layers[names[id(m)]]
        producers, norms, mixed = _walk(in_fn.get(m), out_fn, in_fn)
        if mixed or len(producers) != 1 or getattr(m, "groups", 1) != 1:
            continue
        (p,) = producers
        pname = names.get(id(p))
        if pname not in layers or layers[pname].n_out == 0:
            continue
        n_out_p = layers[pname].n_out
        if layer.n_in % n_out_p or any(getattr(b, "num_features", n_out_p) != n_out_p for b in norms):
            continue
        layer.producer, layer.ratio = pname, layer.n_in // n_out_p
        for b in norms:
            if id(b) in norms_seen:
                continue
            norms_seen.add(id(b))
            params = sum(q.numel() for q in b.parameters(recurse=False))
            per_unit[pname] = per_unit.get(pname, 0) + params // n_out_p
            counted.update(id(q) for q in b.parameters(recurse=False))
    other = sum(p.numel() for p in model.parameters() if id(p) not in counted)
    return CostModel(layers, per_unit, other)


def _walk(start: Any, out_fn: Mapping[Any, nn.Module],
          in_fn: Mapping[nn.Module, Any]) -> tuple[set[nn.Module], list[nn.Module], bool]:
    """Layers whose outputs reach a grad_fn through parameter-free ops and BatchNorm."""
    producers: set[nn.Module] = set()
    norms: list[nn.Module] = []
    mixed = False
    stack = [start] if start is not None else []
    seen: set[Any] = set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        module = out_fn.get(fn)
        if module is not None:
            if isinstance(module, (*_LAYERS, nn.Embedding)):
                producers.add(module)
                continue
            if isinstance(module, _PER_CHANNEL):
                norms.append(module)
                stack.append(in_fn.get(module))
                continue
            mixed = True  # LayerNorm, attention, ...: channels do not map one to one
            continue
        for nxt, _ in getattr(fn, "next_functions", ()):
            if nxt is not None and "AccumulateGrad" not in type(nxt).__name__:
                stack.append(nxt)
    return producers, norms, mixed


def check_budget(budget: Mapping[str, Any] | None) -> tuple[str, int] | None:
    """``{"macs": N}`` or ``{"params": N}`` (the other null) → ``("macs", N)``; None: no budget."""
    if not budget:
        return None
    unknown = sorted(set(budget) - set(METRICS))
    if unknown:
        raise ConfigError(f"unknown budget key(s) {unknown}; valid: "
                          f"{', '.join('budget.' + m for m in METRICS)}")
    given = {k: v for k, v in budget.items() if v is not None}
    if not given:
        return None
    if len(given) > 1:
        raise ConfigError(f"the budget sets both {' and '.join(sorted(given))}; set one of "
                          f"{' or '.join('budget.' + m for m in METRICS)}")
    (metric, value), = given.items()
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COST:
        raise ConfigError(f"budget.{metric}={value!r} must be a positive integer (at most "
                          f"{MAX_COST:.0e})")
    return metric, int(value)


def step_limit(dense: int, budget: int, progress: float) -> int:
    """A step's cost limit: geometric from ``dense`` (progress 0) to ``budget`` (progress 1)."""
    if progress >= 1.0:
        return budget
    return int(math.floor(dense * (budget / dense) ** max(progress, 0.0)))


def normalized_scores(method: str, scores: Tensor, weight: Tensor, norm: float) -> Tensor:
    """Slice scores comparable across layers: each layer's scores over the mean of its alive
    (non-zero) ones, as Torch-Pruning's mean normalisation.

    Why not the raw norms (or norms over fan-in): on LeNet the wide layers' units (fc1's 500
    neurons, conv2's 50 filters) have the smallest per-unit norms, so a raw global ranking
    empties them first (one fc1 neuron left at 160K MACs, 35 % accuracy). Relative to its own
    layer, every layer gives up its weakest units first and the MAC cost decides how many.
    """
    s = scores.double()
    alive = s[s > 0]
    return s / alive.mean() if alive.numel() else s


def select_budget(
    cost: CostModel,
    metric: str,
    limit: int,
    scores: Mapping[str, Tensor],
    alive: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], int, tuple[str, int] | None]:
    """Units to keep per layer so that ``cost(metric) <= limit``.

    ``scores``/``alive``: per layer name (a :class:`CostModel` layer), one score and one alive
    flag per output unit. Alive units are removed lowest score first (ties: layer name, then
    index), each layer keeping at least one, until the cost fits; dead units stay dead. Returns
    the keep flags per layer, the cost reached and the last unit removed (``None``: none was),
    so the result lies within one unit of the limit. Raises ConfigError if even one unit per
    layer does not fit.
    """
    kept = {name: int(a.sum()) for name, a in alive.items()}
    keep = {name: a.clone().bool() for name, a in alive.items()}
    now = cost.cost(metric, kept)
    candidates = sorted(
        (float(s), name, int(i))
        for name in sorted(scores)
        for i, s in zip(alive[name].nonzero().flatten().tolist(),
                        scores[name][alive[name]].tolist(), strict=True)
    )
    last = None
    for _, name, i in candidates:
        if now <= limit:
            break
        if kept[name] <= 1:
            continue
        kept[name] -= 1
        keep[name][i] = False
        last = (name, i)
        now = cost.cost(metric, kept)
    if now > limit:
        floor = cost.cost(metric, dict.fromkeys(kept, 1))
        raise ConfigError(
            f"budget.{metric}={limit} is below the smallest network that keeps one unit "
            f"per pruned layer ({floor} {metric}); raise the budget or prune more layers"
        )
    return keep, now, last


class Budget:
    """A structured step's cost limit instead of a fraction: ``metric`` (macs/params) ≤ ``limit``.

    :meth:`bind` builds the cost model of the pruned layers on one example input (at the start
    of training) and refuses a limit the network cannot meet; :meth:`masks` ranks the output
    units of all pruned layers together and keeps the best until step ``k``'s limit, which falls
    geometrically from the dense cost to ``limit`` as ``target_k / target_last`` goes to 1.
    """

    def __init__(self, metric: str, limit: int) -> None:
        self.metric, self.limit = metric, limit
        self.cost: CostModel | None = None
        self.layer_of: dict[str, str] = {}

    @classmethod
    def from_config(cls, budget: Mapping[str, Any] | None) -> Budget | None:
        checked = check_budget(budget)
        return None if checked is None else cls(*checked)

    def __repr__(self) -> str:
        return f"budget.{self.metric}={self.limit}"

    def bind(self, module: nn.Module, example: Tensor, targets: Any) -> None:
        """The cost model of ``module`` on ``example``; a limit outside it is one line."""
        cost = build_cost_model(module, example)
        names = {id(m): n for n, m in module.named_modules()}
        layer_of = {t.name: names.get(id(t.module), "") for t in targets}
        missing = [t for t, layer in layer_of.items() if layer not in cost.layers]
        if missing:
            raise ConfigError(f"{self}: {missing} are not Conv/Linear layers the forward uses, "
                              "so their cost is unknown; leave them out with targets.exclude")
        dense = cost.cost(self.metric)
        if self.limit >= dense:
            raise ConfigError(f"{self} is not below the dense network's {dense} {self.metric}: "
                              "nothing to prune; set a smaller budget")
        floor = cost.cost(self.metric, dict.fromkeys(layer_of.values(), 1))
        if self.limit < floor:
            raise ConfigError(f"{self} is below the smallest network that keeps one unit per "
                              f"pruned layer ({floor} {self.metric}); valid: {floor} to {dense - 1}")
        self.cost, self.layer_of = cost, layer_of

    def masks(self, targets: Any, current: Mapping[str, Tensor], score: Any, method: str,
              norm: float, progress: float, generator: torch.Generator | None = None
              ) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The step's masks (whole output units, monotone) and its cost record; ``score`` is the
        criterion's ``score(weight, ctx)``, ``progress`` this step's ``target / last target``."""
        if self.cost is None:
            raise RuntimeError("budget: the cost model is built at on_train_start; "
                               "apply_target with a budget runs inside Trainer.fit")
        cost = self.cost
        step_cap = step_limit(cost.cost(self.metric), self.limit, progress)
        scores, alive, by_layer = {}, {}, {}
        for t in targets:
            w = getattr(t.module, t.parameter).detach()
            prev = current.get(t.name)
            ctx = ScoreContext(name=f"parameter {t.name!r}", mask=prev, generator=generator,
                               dim=0, norm=norm)
            layer = self.layer_of[t.name]
            scores[layer] = normalized_scores(method, score(w, ctx), w, norm_order(norm))
            alive[layer] = (torch.ones(w.shape[0], dtype=torch.bool) if prev is None else
                            (prev.detach().reshape(w.shape[0], -1) != 0).any(dim=1).cpu())
            by_layer[layer] = t
        keep, reached, _ = select_budget(cost, self.metric, step_cap,
                                         {k: v.cpu() for k, v in scores.items()}, alive)
        new = {}
        for layer, t in by_layer.items():
            w = getattr(t.module, t.parameter)
            view = [w.shape[0]] + [1] * (w.dim() - 1)
            m = keep[layer].to(device=w.device, dtype=float_dtype(w)).view(view).expand_as(w)
            prev = current.get(t.name)
            m = m.clone() if prev is None else m * (prev != 0).to(m.dtype)
            new[t.name] = m.contiguous()
        record = {"metric": self.metric, "limit": step_cap, "reached": reached,
                  "dense": cost.cost(self.metric)}
        return new, record
