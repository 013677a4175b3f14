"""MACs / params budgets for structured pruning: the cost model against the compacted network,
budgets that land within one unit, and bad budgets refused before training."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from prunelab.errors import ConfigError
from prunelab.models.cnn import LeNet
from prunelab.pruning import PruningCallback
from prunelab.pruning.budget import build_cost_model, select_budget, step_limit
from prunelab.pruning.compaction import compact
from prunelab.pruning.metrics import macs

from test_callback import TinyNet, loader, targeted


class BNNet(nn.Module):
    """conv-BN-ReLU twice, flatten, two Linear: the downstream effects a budget must count."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(),
            nn.Conv2d(6, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(8 * 2 * 2, 12), nn.ReLU(), nn.Linear(12, 3),
        )

    def forward(self, x):
        return self.body(x)


def _zero_units(layer: nn.Module, idxs: list[int]) -> None:
    with torch.no_grad():
        layer.weight[idxs] = 0
        if layer.bias is not None:
            layer.bias[idxs] = 0


@pytest.mark.parametrize("net_cls, shape", [(LeNet, (1, 1, 28, 28)), (BNNet, (1, 1, 8, 8))])
def test_cost_model_equals_the_compacted_network(net_cls, shape):
    torch.manual_seed(0)
    net = net_cls().eval()
    x = torch.randn(shape)
    cost = build_cost_model(net, x)
    assert cost.macs() == macs(net, x)["macs_dense"]
    assert cost.params() == sum(p.numel() for p in net.parameters())
    layers = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)][:-1]
    names = {id(m): n for n, m in net.named_modules()}
    kept = {}
    g = torch.Generator().manual_seed(1)
    for layer in layers:
        n = layer.weight.shape[0]
        gone = torch.randperm(n, generator=g)[: n // 2 + 1].tolist()
        _zero_units(layer, gone)
        kept[names[id(layer)]] = n - len(gone)
    small = compact(net, x)
    assert cost.macs(kept) == macs(small, x)["macs_dense"] < cost.macs()
    assert cost.params(kept) == sum(p.numel() for p in small.parameters())


def test_budget_lands_within_one_unit():
    torch.manual_seed(0)
    net = LeNet()
    x = torch.randn(1, 1, 28, 28)
    cost = build_cost_model(net, x)
    layers = ["conv1", "conv2", "fc1"]
    scores = {n: torch.rand(getattr(net, n).weight.shape[0]) for n in layers}
    alive = {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
    for metric, limit in (("macs", 160_000), ("params", 20_000), ("macs", 1_000_000)):
        keep, reached, last = select_budget(cost, metric, limit, scores, alive)
        kept = {n: int(k.sum()) for n, k in keep.items()}
        assert reached == cost.cost(metric, kept) <= limit
        name, _ = last
        kept[name] += 1  # one unit back: over the budget
        assert cost.cost(metric, kept) > limit
        # the lowest-scored units went: every kept unit outranks every removed one of its layer
        for n in layers:
            if (~keep[n]).any():
                assert scores[n][keep[n]].min() > scores[n][~keep[n]].max()
    with pytest.raises(ConfigError, match=r"below the smallest network that keeps one unit"):
        select_budget(cost, "macs", 10, scores, alive)


def test_step_limits_fall_geometrically_to_the_budget():
    assert step_limit(1_000_000, 10_000, 0.0) == 1_000_000
    assert step_limit(1_000_000, 10_000, 0.5) == 100_000
    assert step_limit(1_000_000, 10_000, 1.0) == 10_000


def _fit(model, cb, max_epochs=2):
    trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[cb])
    trainer.fit(model, loader())
    return trainer


def test_callback_prunes_to_the_budget_and_compaction_shows_it():
    torch.manual_seed(1)
    model = TinyNet()
    x = torch.randn(1, 1, 8, 8)
    dense = macs(model.body, x)["macs_dense"]
    cb = PruningCallback([(0, 0.3), (1, 0.6)], method="ln_structured", budget={"macs": 4000},
                         verbose=False)
    _fit(model, cb, max_epochs=3)
    limits = [h["cost"]["limit"] for h in cb.history]
    assert limits == [step_limit(dense, 4000, 0.5), 4000]  # geometric: half-way, then the budget
    assert all(h["cost"]["reached"] <= h["cost"]["limit"] for h in cb.history)
    small = compact(model.body, x)
    assert macs(small, x)["macs_dense"] == cb.history[-1]["cost"]["reached"] <= 4000
    # results.json describes the run by its budget and what it reached, not by the amount
    from prunelab.run import budget_record

    assert budget_record(cb) == {"metric": "macs", "limit": 4000, "dense": dense,
                                 "reached": cb.history[-1]["cost"]["reached"]}
    assert budget_record(None) is None
    assert budget_record(PruningCallback([(0, 0.5)], method="ln_structured")) is None
    # whole filters/neurons only, and every layer keeps one
    assert set(cb.mask_digest) == set(targeted(model))
    for mask in cb.mask_digest.values():
        rows = mask.reshape(mask.shape[0], -1)
        assert (rows.all(dim=1) | ~rows.any(dim=1)).all() and rows.any()


def test_bad_budgets_are_refused_before_training():
    with pytest.raises(ConfigError, match="budget.macs=1000 needs a structured method.*not method='l1_unstructured'"):
        PruningCallback([(0, 0.5)], method="l1_unstructured", budget={"macs": 1000})
    with pytest.raises(ConfigError, match="sets both macs and params"):
        PruningCallback([(0, 0.5)], method="ln_structured", budget={"macs": 1, "params": 1})
    with pytest.raises(ConfigError, match=r"^budget.macs=-5 must be a positive integer"):
        PruningCallback([(0, 0.5)], method="ln_structured", budget={"macs": -5})
    with pytest.raises(ConfigError, match=r"unknown budget key\(s\) \['flops'\]; valid: budget.macs, budget.params"):
        PruningCallback([(0, 0.5)], method="ln_structured", budget={"flops": 5})
    for limit, message in ((50, "below the smallest network.*valid: "),
                           (10**9, "not below the dense network")):
        model = TinyNet()
        before = model.body[0].weight.detach().clone()
        cb = PruningCallback([(0, 0.5)], method="ln_structured", budget={"macs": limit})
        with pytest.raises(ConfigError, match=message):
            _fit(model, cb)
        assert torch.equal(model.body[0].weight, before)  # not one optimizer step


@pytest.mark.slow  # a whole run with compaction and latency measurement (~1 min on a loaded CPU)
def test_one_command_gives_the_best_network_under_a_macs_budget(make_cfg, tmp_path):
    import json

    from prunelab.run import run

    cfg = make_cfg("pruning=one_shot", "pruning.schedule.start_epoch=1", "trainer.max_epochs=2",
                   "pruning/method=ln_structured", "pruning.budget.macs=160000",
                   "pruning.compact=true", "trainer=fast")
    run(cfg, tmp_path / "run", [])
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    reached = r["pruning_history"][-1]["cost"]
    assert r["macs_compact"] == reached["reached"] <= 160000 < reached["dense"] == r["macs_dense"]
    assert r["budget"] == {"metric": "macs", "limit": 160000, "reached": r["macs_compact"],
                           "dense": r["macs_dense"]}


def test_the_budget_config_keys_are_the_budget_metrics(make_cfg) -> None:
    """pruning.budget's keys are the metrics the budget code knows, and a preset's budget
    survives composition (config.yaml's own values come before the experiment's)."""
    from prunelab.run import make_callback

    cfg = make_cfg("experiment=lenet5_structured_160k")
    assert dict(cfg.pruning.budget) == {"macs": 160000}
    assert repr(make_callback(cfg)[0].budget) == "budget.macs=160000"
    cfg = make_cfg("pruning=one_shot", "pruning/method=ln_structured", "pruning.budget.params=5000")
    assert repr(make_callback(cfg)[0].budget) == "budget.params=5000"
    with pytest.raises(ConfigError, match=r"^pruning: unknown budget key\(s\) \['flops'\]"):
        make_callback(make_cfg("pruning=one_shot", "pruning/method=ln_structured",
                               "pruning.budget.flops=5000"))
