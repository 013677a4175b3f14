"""LAMP and the probing criteria (SNIP, GraSP, SynFlow) against hand-computed cases, and
pruning before training: exact sparsity before the first optimizer step, zeros that stay zero,
and no second step on resume."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from prunelab.errors import ConfigError
from prunelab.pruning import PruningCallback
from prunelab.pruning import criteria as C
from prunelab.pruning.criteria.at_init import grasp_probe, snip_probe, synflow_probe

from test_callback import TinyNet, ZeroWatcher, loader, targeted

# ------------------------------------------------------------------ LAMP


def test_lamp_scores_and_global_mask_by_hand():
    a = torch.tensor([3.0, -1.0, 2.0])
    b = torch.tensor([0.5, 0.1, 0.2, 0.4])
    # a²: 9 1 4 → ascending 1, 4, 9 with suffix sums 14, 13, 9
    assert torch.allclose(C.get("lamp").score(a, C.ScoreContext()).float(),
                          torch.tensor([1.0, 1 / 14, 4 / 13]))
    # b²: .25 .01 .04 .16 → ascending .01 .04 .16 .25, suffix sums .46 .45 .41 .25
    assert torch.allclose(C.get("lamp").score(b, C.ScoreContext()).float(),
                          torch.tensor([1.0, 0.01 / 0.46, 0.04 / 0.45, 0.16 / 0.41]))
    # 3 of 7 go: b[1] (.022), a[1] (.071), b[2] (.089); global magnitude would take .1 .2 .4
    m = C.compute_masks("lamp", {"a": a, "b": b}, 3 / 7)
    assert torch.equal(m["a"], torch.tensor([1.0, 0.0, 1.0]))
    assert torch.equal(m["b"], torch.tensor([1.0, 0.0, 0.0, 1.0]))
    g = C.compute_masks("global_magnitude", {"a": a, "b": b}, 3 / 7)
    assert torch.equal(g["b"], torch.tensor([1.0, 0.0, 0.0, 0.0]))


def test_lamp_counts_masked_weights_as_zero_and_never_empties_a_layer():
    a = torch.tensor([3.0, -1.0, 2.0])
    # with a[2] masked: a² 9 1 0 → 0 scores 0, 1/(1+9), 9/9
    s = C.get("lamp").score(a, C.ScoreContext(mask=torch.tensor([1.0, 1.0, 0.0])))
    assert torch.allclose(s.float(), torch.tensor([1.0, 0.1, 0.0]))
    big, small = torch.randn(1000) * 100, torch.randn(10) * 1e-3
    m = C.compute_masks("lamp", {"big": big, "small": small}, 0.99)
    assert int(m["small"].sum()) >= 1 and int(m["big"].sum()) >= 1
    with pytest.raises(ConfigError, match="does not support scope 'layer'"):
        C.compute_masks("lamp", {"a": a}, 0.5, scope="layer")


# ------------------------------------------------------------------ probing criteria


class Lin2(nn.Module):
    """y = W2 W1 x, no biases: gradients by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, 2, bias=False)
        self.fc2 = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.5, -1.0], [2.0, 0.25]]))
            self.fc2.weight.copy_(torch.tensor([[1.0, 2.0]]))

    def forward(self, x):
        return self.fc2(self.fc1(x))


def _probe(net, batches, grad_batches=1):
    def loss(batch):
        x, t = batch
        return 0.5 * ((net(x) - t) ** 2).sum()

    return C.Probe(module=net, params={"fc1": net.fc1.weight, "fc2": net.fc2.weight}, loss=loss,
                   batches=lambda n: batches[:n], grad_batches=grad_batches)


def _scores(method, net, stats):
    w = {"fc1": net.fc1.weight.detach(), "fc2": net.fc2.weight.detach()}
    return {k: C.get(method).score(v, C.ScoreContext(stats=stats[k])) for k, v in w.items()}


def test_snip_scores_and_mask_by_hand():
    net = Lin2()
    batch = (torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0]]))
    # h = W1 x = (-0.5, 2.5), y = 4.5, r = y - t = 4.5
    # dL/dW2 = r hᵀ = (-2.25, 11.25); dL/dW1 = W2ᵀ r xᵀ = ((4.5, 9), (9, 18))
    stats = snip_probe(_probe(net, [batch]))
    s = _scores("snip", net, stats)
    assert torch.allclose(s["fc1"], torch.tensor([[6.75, 9.0], [18.0, 4.5]]))
    assert torch.allclose(s["fc2"], torch.tensor([[2.25, 22.5]]))
    m = C.compute_masks("snip", {"fc1": net.fc1.weight, "fc2": net.fc2.weight}, 0.5,
                        stats=stats)
    assert torch.equal(m["fc1"], torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert torch.equal(m["fc2"], torch.tensor([[0.0, 1.0]]))
    # two batches: the gradient is their mean (the second batch has r = -4.5: they cancel)
    stats2 = snip_probe(_probe(net, [batch, (batch[0], torch.tensor([[9.0]]))], grad_batches=2))
    assert torch.allclose(stats2["fc1"]["grad"], torch.zeros(2, 2))


def test_grasp_is_w_times_hessian_gradient_product_with_the_papers_sign():
    net = Lin2()
    x, t = torch.tensor([[1.0, 2.0], [-1.0, 0.5]]), torch.tensor([[0.0], [1.0]])
    w1, w2 = net.fc1.weight.detach(), net.fc2.weight.detach()

    def loss(flat):
        a, b = flat[:4].view(2, 2), flat[4:].view(1, 2)
        return 0.5 * ((x @ a.T @ b.T - t) ** 2).sum()

    flat = torch.cat([w1.reshape(-1), w2.reshape(-1)])
    g = torch.autograd.functional.jacobian(loss, flat)
    _, hg = torch.autograd.functional.hvp(loss, flat, g)
    stats = grasp_probe(_probe(net, [(x, t)]))
    s = _scores("grasp", net, stats)
    assert torch.allclose(torch.cat([s["fc1"].reshape(-1), s["fc2"].reshape(-1)]), flat * hg,
                          atol=1e-5)
    # the paper removes the highest -w*Hg first: that entry is the first to go here
    paper = -flat * hg
    m = C.compute_masks("grasp", {"fc1": net.fc1.weight, "fc2": net.fc2.weight}, 1 / 6,
                        stats=stats)
    flat_mask = torch.cat([m["fc1"].reshape(-1), m["fc2"].reshape(-1)])
    assert int(flat_mask.argmin()) == int(paper.argmax()) and int(flat_mask.sum()) == 5


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 4, bias=False)
        self.bn = nn.BatchNorm1d(4)
        self.fc2 = nn.Linear(4, 2, bias=False)

    def forward(self, x):
        return self.fc2(self.bn(self.fc1(x)))


def test_synflow_scores_by_hand_without_touching_the_model():
    torch.manual_seed(0)
    net = Lin2()
    with torch.no_grad():
        net.fc1.weight.neg_()  # signs must not matter: the probe uses |w|
    original = net.fc1.weight.detach().clone()
    batch = (torch.randn(5, 2), torch.zeros(5, 1))
    stats = synflow_probe(_probe(net, [batch]))
    a, b = net.fc1.weight.detach().abs(), net.fc2.weight.detach().abs()
    # R = 1ᵀ|W2||W1|1: dR/dW1_ij = Σ_k |W2_ki|, dR/dW2_ki = Σ_j |W1_ij|
    assert torch.allclose(stats["fc1"]["synflow"], a * b.sum(0).unsqueeze(1).double())
    assert torch.allclose(stats["fc2"]["synflow"], b * a.sum(1).unsqueeze(0).double())
    assert stats["fc1"]["synflow"].dtype == torch.float64
    assert torch.equal(net.fc1.weight, original)  # the model's own weights are untouched
    bn = BNNet().train()
    bn.bn.running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    p = C.Probe(module=bn, params={"fc1": bn.fc1.weight, "fc2": bn.fc2.weight},
                loss=lambda _: torch.zeros(()), batches=lambda n: [(torch.randn(8, 3),)])
    synflow_probe(p)
    assert bn.training and all(torch.equal(v, bn.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ConfigError, match="synflow needs a model whose input is a float tensor"):
        synflow_probe(C.Probe(module=bn, params={}, loss=None,
                              batches=lambda n: [(torch.ones(2, 3, dtype=torch.long),)]))


# ------------------------------------------------------------------ at initialisation


class FirstStep(L.Callback):
    """The masks and weights as the first optimizer step finds them."""

    def __init__(self):
        self.seen = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.seen is None:
            self.seen = {n: (m.weight.detach().clone(), getattr(m, "weight_mask", None))
                         for n, m in targeted(pl_module).items()}


def _fit(model, callbacks, max_epochs, ckpt_path=None):
    trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=callbacks)
    trainer.fit(model, loader(), ckpt_path=ckpt_path, weights_only=True)
    return trainer


def _initial_snip_masks(model, amount, grad_batches):
    """SNIP by hand on a copy of the initial model: |w ⊙ mean_b ∇L_b|, one global threshold."""
    import copy

    net = copy.deepcopy(model)
    mods = targeted(net)
    grads = {n: torch.zeros_like(m.weight) for n, m in mods.items()}
    batches = list(loader())[:grad_batches]
    for x, y in batches:
        net.zero_grad()
        F.cross_entropy(net(x), y).backward()
        for n, m in mods.items():
            grads[n] += m.weight.grad / len(batches)
    scores = torch.cat([(m.weight * grads[n]).abs().reshape(-1) for n, m in mods.items()])
    k = round(amount * scores.numel())
    keep = torch.ones_like(scores)
    keep[torch.topk(scores, k, largest=False).indices] = 0
    out, start = {}, 0
    for n, m in mods.items():
        out[n] = keep[start:start + m.weight.numel()].view_as(m.weight)
        start += m.weight.numel()
    return out


def test_snip_at_init_prunes_before_the_first_step_and_zeros_stay_zero():
    torch.manual_seed(3)
    model = TinyNet(weight_decay=0.1)
    expected = _initial_snip_masks(model, 0.9, grad_batches=2)
    first, watcher = FirstStep(), ZeroWatcher()
    cb = PruningCallback([(-1, 0.9)], method=C.Snip(grad_batches=2), make_permanent=False)
    _fit(model, [cb, first, watcher], max_epochs=2)
    total = sum(w.numel() for w, _ in first.seen.values())
    zeros = sum(int((w == 0).sum()) for w, _ in first.seen.values())
    assert zeros == round(0.9 * total)  # exact, before any optimizer step
    for name, (_, mask) in first.seen.items():
        assert torch.equal(mask, expected[name]), name  # scored at the initial weights
    assert watcher.checked > 0 and watcher.violations == 0
    assert [(h["epoch"], h["target"]) for h in cb.history] == [(-1, 0.9)]
    assert cb.history[0]["achieved"] == pytest.approx(0.9, abs=1e-4)


@pytest.mark.parametrize("method", ["grasp", "synflow", "lamp", "random_unstructured"])
def test_other_methods_at_init_reach_the_exact_target(method):
    torch.manual_seed(4)
    model = TinyNet()
    first = FirstStep()
    cb = PruningCallback([(-1, 0.95)], make_permanent=False, verbose=False,
                         method=C.method(method, scope="global",
                                         iterations=10 if method == "synflow" else None))
    _fit(model, [cb, first], max_epochs=1)
    total = sum(w.numel() for w, _ in first.seen.values())
    assert sum(int((w == 0).sum()) for w, _ in first.seen.values()) == round(0.95 * total)


def test_synflow_substeps_fall_geometrically_in_density():
    cb = PruningCallback([(-1, 0.9375)], method=C.SynFlow(iterations=4))
    cb.targets = []
    assert cb._sub_targets(0.9375) == [0.5, 0.75, 0.875, 0.9375]
    assert PruningCallback([(-1, 0.5)], method="snip")._sub_targets(0.5) == [0.5]


def test_resume_does_not_redo_the_step_before_training(tmp_path):
    torch.manual_seed(5)
    plan = [(-1, 0.8)]
    cb = PruningCallback(plan, method="snip", make_permanent=False, verbose=False)
    trainer = _fit(TinyNet(), [cb], max_epochs=1)
    path = tmp_path / "epoch0.ckpt"
    trainer.save_checkpoint(path)
    saved = {k: v.clone() for k, v in cb.mask_digest.items()}

    cb2 = PruningCallback(plan, method="snip", make_permanent=False, verbose=False)
    calls = []
    cb2.apply_target = lambda *args, **kwargs: calls.append(args)  # must never be called
    watcher = ZeroWatcher()
    model = TinyNet()
    _fit(model, [cb2, watcher], max_epochs=2, ckpt_path=path)
    assert calls == [] and len(cb2.history) == 1
    for name, m in targeted(model).items():
        assert torch.equal(m.weight_mask.bool(), saved[name])
    assert watcher.checked > 0 and watcher.violations == 0


def test_gradient_statistics_criteria_cannot_run_before_training():
    with pytest.raises(ConfigError, match="'taylor' gathers its gradients during training.*snip"):
        PruningCallback([(-1, 0.5)], method="taylor")
    with pytest.raises(ConfigError, match="iterations=0 must be an integer >= 1"):
        C.SynFlow(iterations=0)
