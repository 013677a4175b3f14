"""Dead units of a pruned network: zeroed where the outputs stay the same, so the artifact
stores less.

Unstructured pruning zeroes weights one by one and leaves units (a convolution's filters, a
Linear layer's neurons) that cannot change the output, though their biases and some of their
weights are still non-zero:

* an **unread** unit: every weight of every consumer on it is zero, so nothing reads its
  value. Its incoming weights and its bias are set to zero; the outputs are exactly the same.
* a **constant** unit: its incoming weights are all zero, so it emits a constant (its bias,
  through ReLU, pooling, BatchNorm ...). Where that constant is zero (a ReLU of a negative
  bias) the consumers' weights on it and its bias are set to zero: exactly the same outputs
  (``zero``). Where it is not, ``fold`` first adds its contribution to the consumers' biases,
  as compaction does (:func:`prunelab.pruning.bias_folding.fold_group`), then the same: the
  outputs are the same up to float rounding.

Each step repeats until nothing changes (zeroing a unit's weights can leave the units feeding
it unread). Units stay in the network, whose shapes are its class's: only zeros are added. The
consumers and couplings come from Torch-Pruning's dependency graph, as for compaction; a layer
whose units reach the output, pass through a layer that mixes channels, or are coupled to
another layer's outputs is left alone. Finally the outputs on a check batch (the example and
random inputs like it) are compared with the network's own; any difference beyond float
rounding, or a changed prediction, keeps the network as it was (and says why).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from prunelab.errors import ConfigError
from prunelab.pruning.bias_folding import (
    capture_inputs,
    check_batch,
    flatten,
    fold_group,
    is_root,
    output_layers,
    zero_units,
)

#: what ``prunelab export --dead-units`` takes: keep the network as trained, zero what provably
#: changes no output, or also fold the non-zero constants into the consumers' biases
MODES = ("keep", "zero", "fold")
DEFAULT = "zero"
#: the largest |change| of an output allowed by ``fold``, relative to 1 + max |output|
TOLERANCE = 1e-5

_CONV = nn.modules.conv._ConvNd
_PER_CHANNEL = (nn.modules.batchnorm._BatchNorm, nn.PReLU)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"unknown dead-units mode {mode!r}; valid: {', '.join(MODES)}")
    return mode


@dataclass
class _Consumer:
    """A layer reading some of a root's units: its input channels ``cols`` read units ``roots``."""

    module: nn.Module
    cols: list[int]
    roots: list[int]

    def reads(self, units: int) -> Tensor:
        """Per root unit: whether a non-zero weight of this consumer reads it."""
        w = self.module.weight.detach().transpose(0, 1)[self.cols]
        nonzero = (w.reshape(len(self.cols), -1) != 0).any(dim=1)
        hits = torch.zeros(units, dtype=torch.long).index_add_(
            0, torch.tensor(self.roots, dtype=torch.long), nonzero.long())
        return hits > 0

    @torch.no_grad()
    def zero(self, units: set[int]) -> int:
        """Zero this consumer's weights on ``units``; the number of non-zeros removed."""
        cols = [c for c, r in zip(self.cols, self.roots, strict=True) if r in units]
        w = self.module.weight.transpose(0, 1)
        removed = int((w[cols] != 0).sum())
        w[cols] = 0
        return removed


@dataclass
class Report:
    """What :func:`strip` did: per layer, the units zeroed as unread / constant / folded and the
    non-zero parameters removed; the largest output change on the check batch; or why not."""

    mode: str
    layers: dict[str, dict[str, int]] = field(default_factory=dict)
    params_removed: int = 0
    max_abs_output_diff: float = 0.0
    kept: str | None = None

    def count(self, layer: str, what: str, n: int) -> None:
        if n:
            entry = self.layers.setdefault(layer, {})
            entry[what] = entry.get(what, 0) + n

    def record(self) -> dict[str, Any]:
        return {"mode": self.mode, "layers": self.layers, "params_removed": self.params_removed,
                "max_abs_output_diff": self.max_abs_output_diff, "kept": self.kept}


def _consumers(dg: Any, module: nn.Module) -> list[_Consumer] | None:
    """The layers reading ``module``'s units, or None when its units cannot be reasoned about
    one by one: they reach the output, pass through a layer that mixes channels (or one with
    parameters of its own other than BatchNorm's), or share their values with another layer's
    outputs (a residual sum)."""
    import torch_pruning as tp  # lazy: the dependency graph, for exports that strip only

    units = list(range(int(module.weight.shape[0])))
    group = dg.get_pruning_group(module, dg.get_pruner_of_module(module).prune_out_channels, units)
    found = []
    for item in group.items:
        dep, target = item.dep, item.dep.target.module
        if dep.target.type in (tp.ops.OPTYPE.OUTPUT, tp.ops.OPTYPE.PARAMETER):
            return None
        if not isinstance(target, nn.Linear | _CONV):
            if isinstance(target, nn.Module) and not isinstance(target, _PER_CHANNEL) and any(
                    True for _ in target.parameters(recurse=False)):
                return None
            continue  # activations, pooling, reshapes, BatchNorm: channel by channel
        out_fn = dg.is_out_channel_pruning_fn(dep.handler)
        in_fn = dg.is_in_channel_pruning_fn(dep.handler)
        if out_fn and not in_fn and target is not module:
            return None
        if in_fn and not out_fn:
            if isinstance(target, _CONV) and (target.transposed or target.groups != 1):
                return None
            roots = list(item.root_idxs) if item.root_idxs is not None else list(item.idxs)
            found.append(_Consumer(target, list(item.idxs), roots))
    return found


def _read(module: nn.Module, consumers: list[_Consumer]) -> Tensor:
    """Per unit of ``module``: whether a non-zero consumer weight reads it."""
    units = int(module.weight.shape[0])
    read = torch.zeros(units, dtype=torch.bool)
    for c in consumers:
        read |= c.reads(units)
    return read


def _unread(module: nn.Module, consumers: list[_Consumer]) -> set[int]:
    """Units of ``module`` that no consumer reads, and that still hold a non-zero parameter."""
    units = int(module.weight.shape[0])
    held = (module.weight.detach().reshape(units, -1) != 0).any(dim=1)
    if module.bias is not None:
        held |= module.bias.detach() != 0
    return {int(i) for i in torch.nonzero(~_read(module, consumers) & held).flatten()}


@torch.no_grad()
def _zero_units(module: nn.Module, units: set[int]) -> int:
    """Zero the incoming weights and biases of ``units``; the number of non-zeros removed."""
    idx = sorted(units)
    removed = int((module.weight[idx] != 0).sum())
    module.weight[idx] = 0
    if module.bias is not None:
        removed += int((module.bias[idx] != 0).sum())
        module.bias[idx] = 0
    return removed


def _emits_zero(unit: int, consumers: list[_Consumer], seen: dict[nn.Module, list[Tensor]]
                ) -> bool:
    """Whether every consumer receives exactly zero from ``unit`` on the check batch (a unit
    without incoming weights, through channel-by-channel ops: the same for every input)."""
    for c in consumers:
        cols = torch.tensor([col for col, r in zip(c.cols, c.roots, strict=True) if r == unit],
                            dtype=torch.long)
        dim = 1 if isinstance(c.module, _CONV) else -1
        if not seen[c.module] or any(bool((x.index_select(dim, cols) != 0).any())
                                     for x in seen[c.module]):
            return False
    return True


def _constants(dg: Any, work: nn.Module, module: nn.Module, consumers: list[_Consumer],
               check: tuple[Tensor, ...], protected: set[nn.Module], fold: bool
               ) -> tuple[set[int], set[int]]:
    """(units of ``module`` without incoming weights that emit zero, those whose non-zero
    constant ``fold`` has added to the consumers' biases): their consumers' weights on them
    may go."""
    read = _read(module, consumers)
    idxs = [i for i in zero_units(module) if read[i]]
    if not idxs:
        return set(), set()
    seen = capture_inputs(work, [c.module for c in consumers], check)
    zero = {i for i in idxs if _emits_zero(i, consumers, seen)}
    rest = [i for i in idxs if i not in zero]
    if not (fold and rest):
        return zero, set()
    pruner = dg.get_pruner_of_module(module).prune_out_channels
    reason, _ = fold_group(dg.get_pruning_group(module, pruner, rest), dg, work, check, protected)
    return zero, (set(rest) if reason is None else set())


def strip(net: nn.Module, example: Tensor, mode: str = DEFAULT) -> tuple[nn.Module, Report]:
    """(a copy of ``net`` with its dead units zeroed, what was done); ``net`` itself when
    ``mode`` is ``keep``, when nothing is dead, or when the dependency graph cannot be built or
    the check batch's outputs would change beyond float rounding (then :attr:`Report.kept`
    says why). ``net`` holds plain weights (masks folded); ``example`` is one input batch."""
    report = Report(check_mode(mode))
    if mode == "keep":
        return net, report
    work = copy.deepcopy(net).eval()
    for p in work.parameters():  # the output layers are found through autograd
        p.requires_grad_(True)
    keys = {k: tuple(v.shape) for k, v in work.state_dict().items()}
    check = check_batch((example,))
    with torch.no_grad():
        reference = [t.detach().clone() for t in flatten(work(*check))]
    try:
        _zero_dead(work, (example,), check, report, mode == "fold")
    except Exception as err:  # an op the dependency graph cannot trace: export as trained
        report.kept = (f"its dependency graph cannot be built or used ({type(err).__name__}: "
                       f"{str(err).splitlines()[0][:120] if str(err) else ''})")
        return net, report
    if not report.params_removed:
        return net, report
    reason = _compare(reference, work, check, keys, report)
    if reason is not None:
        report.kept = reason
        return net, report
    return work, report


def _zero_dead(work: nn.Module, inputs: tuple[Tensor, ...], check: tuple[Tensor, ...],
               report: Report, fold: bool) -> None:
    """Zero ``work``'s dead units in place, until nothing changes; count them in ``report``."""
    import torch_pruning as tp  # lazy: the dependency graph, for exports that strip only

    protected = output_layers(work, inputs)
    dg = tp.DependencyGraph().build_dependency(work, example_inputs=inputs, verbose=False)
    names = {m: n for n, m in work.named_modules()}
    roots = {m: _consumers(dg, m) for m in work.modules()
             if is_root(m) and m not in protected and m in dg.module2node}
    roots = {m: c for m, c in roots.items() if c is not None}
    changed = True
    while changed:
        changed = False
        for module, consumers in roots.items():
            unread = _unread(module, consumers)
            if unread:
                report.params_removed += _zero_units(module, unread)
                report.count(names[module], "unread", len(unread))
                changed = True
            zero, folded = _constants(dg, work, module, consumers, check, protected, fold)
            if zero or folded:
                gone = zero | folded
                report.params_removed += (sum(c.zero(gone) for c in consumers)
                                          + _zero_units(module, gone))
                report.count(names[module], "constant", len(zero))
                report.count(names[module], "folded", len(folded))
                changed = True


def _compare(reference: list[Tensor], work: nn.Module, check: tuple[Tensor, ...],
             keys: dict[str, tuple[int, ...]], report: Report) -> str | None:
    """Why the stripped network may not replace the original (None: it may); sets the
    report's largest output change."""
    if {k: tuple(v.shape) for k, v in work.state_dict().items()} != keys:
        return "folding would add a bias the network does not have"
    with torch.no_grad():
        outputs = [t.detach() for t in flatten(work(*check))]
    for ref, out in zip(reference, outputs, strict=True):
        if ref.shape != out.shape or not ref.numel():
            continue
        diff = float((ref.float() - out.float()).abs().max())
        report.max_abs_output_diff = max(report.max_abs_output_diff, diff)
        if math.isnan(diff) or diff > TOLERANCE * (1.0 + float(ref.float().abs().max())):
            return f"the outputs would change by {diff:.3g} on the check batch"
        if ref.dim() == 2 and ref.shape[1] > 1 and not torch.equal(ref.argmax(1), out.argmax(1)):
            return "a prediction on the check batch would change"
    return None
