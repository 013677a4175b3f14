"""Dynamic sparse training (SET, RigL): the drop/grow functions against hand-computed cases, and
the callback keeping every layer's exact sparsity through each regrowth."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from prunelab.errors import CheckpointError, ConfigError
from prunelab.pruning import PruningCallback
from prunelab.pruning.criteria import dynamic as D
from prunelab.pruning.dynamic import SET, RigL

from test_callback import TinyNet, fit

KINDS = {"set": SET, "rigl": RigL}


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# ---------------------------------------------------------------- pure functions


def test_cosine_fraction_decays_from_alpha_to_zero_at_t_end():
    assert D.cosine_fraction(0, 100, 0.3) == pytest.approx(0.3)
    assert D.cosine_fraction(50, 100, 0.3) == pytest.approx(0.15)
    assert D.cosine_fraction(25, 100, 0.4) == pytest.approx(0.2 * (1 + 2 ** -0.5))
    assert D.cosine_fraction(100, 100, 0.3) == 0.0
    assert D.cosine_fraction(150, 100, 0.3) == 0.0


def test_n_to_update_is_a_fraction_of_the_active_connections():
    assert D.n_to_update(t(1, 1, 1, 1, 0, 0, 0, 0, 0, 0), 0.3) == 1  # round(0.3 * 4)
    assert D.n_to_update(t(1, 1, 1, 1, 1, 1, 0, 0, 0, 0), 0.3) == 2  # round(0.3 * 6)
    assert D.n_to_update(t(0, 0), 0.3) == 0


def test_drop_turns_off_the_smallest_active_magnitudes():
    mask, w = t(1, 1, 1, 0), t(0.5, -0.1, 0.3, 9.0)
    assert torch.equal(D.drop(mask, w, 1), t(1, 0, 1, 0))
    assert torch.equal(D.drop(mask, w, 2), t(1, 0, 0, 0))  # 9.0 is inactive: never a candidate
    assert torch.equal(D.drop(mask, w, 0), mask)
    assert torch.equal(mask, t(1, 1, 1, 0))  # inputs untouched
    with pytest.raises(ConfigError, match="only 3 are active"):
        D.drop(mask, w, 4)


def test_grow_turns_on_the_largest_inactive_scores():
    mask, scores = t(1, 0, 1, 0, 0), t(9, 0.2, 9, 0.7, 0.1)
    assert torch.equal(D.grow(mask, scores, 1), t(1, 0, 1, 1, 0))
    assert torch.equal(D.grow(mask, scores, 2), t(1, 1, 1, 1, 0))
    with pytest.raises(ConfigError, match="only 3 are inactive"):
        D.grow(mask, scores, 4)


def test_rigl_regrows_by_the_dense_gradient_magnitude():
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    w = torch.tensor([[0.9, 0.1], [0.0, 0.0]])
    grad = torch.tensor([[0.0, 0.0], [-3.0, 1.0]])
    assert torch.equal(D.rigl_update(mask, w, grad, 1), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    # a just-dropped connection with the largest gradient comes straight back (RigL's code)
    assert torch.equal(D.rigl_update(t(1, 1, 0), t(0.9, 0.1, 0), t(0, 5, 1), 1), t(1, 1, 0))


def test_set_regrows_at_random_from_the_generator():
    mask, w = t(1, 1, 1, 0, 0, 0), t(0.5, 0.1, 0.3, 0, 0, 0)
    draws = torch.rand(6, generator=torch.Generator().manual_seed(3))
    dropped = t(1, 0, 1, 0, 0, 0)
    dead = [i for i in range(6) if dropped[i] == 0]
    pick = max(dead, key=lambda i: float(draws[i]))
    want = dropped.clone()
    want[pick] = 1
    g = torch.Generator().manual_seed(3)
    assert torch.equal(D.set_update(mask, w, 1, g), want)
    # one draw per entry whatever the mask, so the generator's next state is predictable
    ref = torch.Generator().manual_seed(3)
    torch.rand(6, generator=ref)
    assert torch.equal(g.get_state(), ref.get_state())


def test_erk_densities_by_hand():
    # raw a = 20/100, b = 110/1000; eps = 550 / (20 + 110) -> keep a 84.6, b 465.4
    zeros = D.layer_zeros({"a": (10, 10), "b": (100, 10)}, 0.5, "erk")
    assert zeros == {"a": 15, "b": 535}  # largest remainder: a gets the 550th kept weight
    assert sum(zeros.values()) == round(0.5 * 1100)


def test_erk_keeps_a_layer_dense_when_its_density_would_exceed_one():
    zeros = D.layer_zeros({"small": (2, 2), "big": (100, 100)}, 0.5, "erk")
    assert zeros == {"small": 0, "big": 5002}


def test_uniform_distribution_and_bad_input():
    assert D.layer_zeros({"a": (10, 10), "b": (3, 3)}, 0.5, "uniform") == {"a": 50, "b": 4}
    with pytest.raises(ConfigError, match="distribution='er'.*erk, uniform"):
        D.layer_zeros({"a": (2, 2)}, 0.5, "er")
    with pytest.raises(ConfigError, match=r"amount=1.0 must be in \(0, 1\)"):
        D.layer_zeros({"a": (2, 2)}, 1.0)


@pytest.mark.parametrize("kwargs", [{"amount": 1.0}, {"distribution": "er"}])
def test_dynamic_settings_follow_one_rule_in_the_schedule_and_the_masks(kwargs):
    """The schedule refuses at construction what layer_zeros refuses, in the same words."""
    args = {"amount": 0.5, "distribution": "erk", **kwargs}
    with pytest.raises(ConfigError) as direct:
        D.layer_zeros({"a": (2, 2)}, args["amount"], args["distribution"])
    with pytest.raises(ConfigError) as via_schedule:
        SET(**args)
    assert str(via_schedule.value) == str(direct.value)


def test_random_mask_has_exact_zeros_and_follows_the_seed():
    a = D.random_mask((7, 9), 40, torch.Generator().manual_seed(1))
    b = D.random_mask((7, 9), 40, torch.Generator().manual_seed(1))
    c = D.random_mask((7, 9), 40, torch.Generator().manual_seed(2))
    assert int((a == 0).sum()) == 40 and a.shape == (7, 9)
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------- callback


class Watch(L.Callback):
    """After every optimizer step: each layer's zero count, and the regrown connections' values
    and momentum (which must start at exactly zero)."""

    def __init__(self, cb: PruningCallback) -> None:
        self.cb = cb
        self.counts: list[dict[str, int]] = []
        self.masks: dict[str, torch.Tensor] = {}
        self.grown_nonzero = 0
        self.grown = 0
        self.updates = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        opt = trainer.optimizers[0]
        counts = {}
        for tg in self.cb.targets:
            mask = tg.module.weight_mask
            counts[tg.name] = int((mask == 0).sum())
            before = self.masks.get(tg.name)
            if before is not None and self.cb.dynamic.last_update == trainer.global_step:
                grown = (mask != 0) & (before == 0)
                orig = tg.module.weight_orig
                buf = opt.state[orig]["momentum_buffer"]
                self.grown += int(grown.sum())
                self.grown_nonzero += int((orig.detach()[grown] != 0).sum())
                self.grown_nonzero += int((buf[grown] != 0).sum())
            self.masks[tg.name] = mask.clone()
        self.counts.append(counts)


@pytest.mark.parametrize("kind", ["set", "rigl"])
@pytest.mark.parametrize("distribution", ["erk", "uniform"])
def test_every_update_keeps_each_layers_exact_sparsity(kind, distribution):
    torch.manual_seed(0)
    model = TinyNet()
    cb = PruningCallback(KINDS[kind](amount=0.7, update_every=2, alpha=0.5, stop_fraction=1.0,
                                     distribution=distribution), make_permanent=False)
    watch = Watch(cb)
    fit(model, [cb, watch], max_epochs=3)  # 4 batches an epoch: 12 steps, updates at 2..10
    shapes = {"body.0.weight": (8, 1, 3, 3), "body.3.weight": (32, 288)}
    want = D.layer_zeros(shapes, 0.7, distribution)
    assert all(c == want for c in watch.counts) and len(watch.counts) == 12
    updates = cb.history[1:]
    assert [h["global_step"] for h in updates] == [2, 4, 6, 8, 10]
    assert [h["fraction"] for h in updates] == pytest.approx(
        [D.cosine_fraction(s, 12, 0.5) for s in (2, 4, 6, 8, 10)])
    assert watch.grown > 0 and watch.grown_nonzero == 0  # regrown: zero weight, no momentum
    assert all(h["achieved"] == pytest.approx(sum(want.values()) / (72 + 9216)) for h in cb.history)
    # the masks really moved
    assert sum(h["regrown"] for h in updates) == watch.grown


def test_the_first_mask_is_drawn_from_the_seed():
    def first_masks(seed):
        torch.manual_seed(0)
        model = TinyNet()
        cb = PruningCallback(SET(amount=0.5, distribution="uniform"), seed=seed)
        cb.bind(model)
        cb.on_fit_start(None, model)
        return {n: m.clone() for n, m in cb.mask_digest.items()}

    a, b, c = first_masks(1), first_masks(1), first_masks(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_rigl_update_in_the_callback_is_the_pure_function():
    torch.manual_seed(0)
    model = TinyNet()
    cb = PruningCallback(RigL(amount=0.6, distribution="uniform", alpha=0.3))
    cb.bind(model)
    cb.on_fit_start(None, model)
    cb.dynamic.t_end = 100.0
    layer = model.body[3]
    with torch.no_grad():
        layer.weight_orig.normal_().mul_(layer.weight_mask)
    grads = {tg.name: torch.randn_like(tg.module.weight_orig) for tg in cb.targets}
    mask, weight = layer.weight_mask.clone(), layer.weight.detach().clone()
    n = D.n_to_update(mask, D.cosine_fraction(10, 100.0, 0.3))
    want = D.rigl_update(mask, weight, grads["body.3.weight"], n)
    cb.dynamic.grads, cb.dynamic.grad_step = grads, 10
    record = cb.dynamic.update(cb.targets, 10, cb.generator, 1)
    assert torch.equal(layer.weight_mask, want)
    assert n > 0 and record["global_step"] == 10 and cb.dynamic.last_update == 10
    assert bool((layer.weight_orig[(want != 0) & (mask == 0)] == 0).all())


@pytest.mark.parametrize("kwargs, needle", [
    ({"amount": 0.0}, "amount=0.0 must be in (0, 1)"),
    ({"update_every": 0}, "update_every=0 must be an integer >= 1"),
    ({"alpha": 0.0}, "alpha=0.0 must be in (0, 1]"),
    ({"stop_fraction": 1.5}, "stop_fraction=1.5 must be in (0, 1]"),
    ({"distribution": "erdos"}, "distribution='erdos' is not one of erk, uniform"),
])
def test_bad_dynamic_settings_are_one_line(kwargs, needle):
    with pytest.raises(ConfigError) as err:
        RigL(**{"amount": 0.9, **kwargs})
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_dynamic_sparse_training_drops_by_magnitude_only():
    with pytest.raises(ConfigError, match="use pruning/method=l1_unstructured, not 'taylor'"):
        PruningCallback(RigL(amount=0.9), method="taylor")


@pytest.mark.parametrize("overrides, needle", [
    (["pruning/method=taylor"], "pruning=rigl drops the smallest-magnitude weights of each "
                                "layer: use pruning/method=l1_unstructured, not 'taylor'"),
    (["pruning.schedule.stop_fraction=1.5"], "pruning.schedule.stop_fraction=1.5 must be in (0, 1]"),
    (["pruning.schedule.amount=0.0"], "pruning.schedule.amount=0.0 must be in (0, 1) for dynamic sparse training"),
    (["pruning.schedule.update_every=0"], "pruning.schedule.update_every=0 must be an integer >= 1"),
    (["pruning.schedule.distribution=erdos"], "pruning.schedule.distribution='erdos' is not one of erk, uniform"),
])
def test_the_command_line_names_its_own_keys(make_cfg, overrides, needle):
    """The same rules as above; the messages name the config keys, not the Python arguments."""
    from prunelab.run import make_callback

    with pytest.raises(ConfigError) as err:
        make_callback(make_cfg("pruning=rigl", *overrides))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_static_checkpoint_does_not_resume_a_dynamic_run():
    static = PruningCallback([(0, 0.5)])
    dynamic = PruningCallback(RigL(amount=0.5))
    state = static.state_dict()
    state["plan"] = []
    with pytest.raises(CheckpointError, match="dynamic sparse training None"):
        dynamic.load_state_dict(state)
