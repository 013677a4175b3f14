"""Pruning criteria: exact target counts, monotone masks, torch equivalence, errors.

Every mask comes from the registry's ``compute_masks`` (the path training uses); ``M`` below
only spells single-criterion calls shortly.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from prunelab.errors import ConfigError
from prunelab.pruning import criteria as C


class M:
    """Short spellings of registry calls (``C.mask`` is ``compute_masks`` on one tensor)."""

    compute_masks = staticmethod(C.compute_masks)
    accumulate_grad_stats = staticmethod(C.accumulate_grad_stats)
    sparsity = staticmethod(C.sparsity)

    @staticmethod
    def l1_unstructured(w, amount, mask=None):
        return C.mask("l1_unstructured", w, amount, mask=mask)

    @staticmethod
    def random_unstructured(w, amount, mask=None, generator=None):
        return C.mask("random_unstructured", w, amount, mask=mask, generator=generator)

    @staticmethod
    def ln_structured(w, amount, n=2, dim=0, mask=None):
        return C.mask("ln_structured", w, amount, norm=n, dim=dim, mask=mask)

    @staticmethod
    def random_structured(w, amount, dim=0, mask=None, generator=None):
        return C.mask("random_structured", w, amount, dim=dim, mask=mask, generator=generator)

    @staticmethod
    def global_magnitude(weights, amount, masks=None):
        return C.compute_masks("global_magnitude", weights, amount, masks=masks)

    @staticmethod
    def taylor(w, amount, stats, mask=None):
        return C.mask("taylor", w, amount, stats=stats, mask=mask)

    @staticmethod
    def fisher(w, amount, stats, mask=None):
        return C.mask("fisher", w, amount, stats=stats, mask=mask)

    @staticmethod
    def taylor_score(w, stats):
        return C.get("taylor").score(w, C.ScoreContext(stats=stats))

    @staticmethod
    def fisher_score(w, stats):
        return C.get("fisher").score(w, C.ScoreContext(stats=stats))

AMOUNTS = [0.1, 0.5, 0.9, 0.99]
SHAPES = {"conv1.weight": (20, 1, 5, 5), "conv2.weight": (50, 20, 5, 5), "fc.weight": (500, 800)}
UNSTRUCTURED = ["l1_unstructured", "random_unstructured", "taylor", "fisher"]
STRUCTURED = ["ln_structured", "random_structured"]


def _weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) for name, shape in SHAPES.items()}


def _stats(weights: dict[str, torch.Tensor], batches: int = 2, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    stats: dict = {}
    for name, w in weights.items():
        for _ in range(batches):
            stats[name] = M.accumulate_grad_stats(
                stats.get(name), w, torch.randn(w.shape, generator=g)
            )
    return stats


def _zeros(t: torch.Tensor) -> int:
    return int((t == 0).sum())


def _dead_slices(mask: torch.Tensor, dim: int = 0) -> int:
    other = tuple(d for d in range(mask.ndim) if d != dim)
    return int((mask.amax(dim=other) == 0).sum())


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return _weights()


@pytest.fixture(scope="module")
def stats(weights) -> dict:
    return _stats(weights)


# ------------------------------------------------------------------ exact target counts


@pytest.mark.parametrize("method", UNSTRUCTURED)
@pytest.mark.parametrize("amount", AMOUNTS)
def test_layerwise_unstructured_exact_count(method, amount, weights, stats):
    masks = M.compute_masks(
        method,
        weights,
        amount,
        stats=stats,
        scope="layer",
        generator=torch.Generator().manual_seed(0),
    )
    assert list(masks) == list(weights)
    for name, w in weights.items():
        m = masks[name]
        assert m.shape == w.shape and m.dtype == w.dtype and m.device == w.device
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        assert _zeros(m) == round(amount * w.numel())


@pytest.mark.parametrize("method", STRUCTURED)
@pytest.mark.parametrize("amount", AMOUNTS)
def test_layerwise_structured_exact_count_whole_slices(method, amount, weights):
    masks = M.compute_masks(method, weights, amount, generator=torch.Generator().manual_seed(0))
    for name, w in weights.items():
        m = masks[name]
        k = round(amount * w.shape[0])
        assert _dead_slices(m) == k
        # only whole filters / neurons: every slice is all zeros or all ones
        flat = m.reshape(w.shape[0], -1)
        assert bool(((flat == 0).all(1) | (flat == 1).all(1)).all())
        assert _zeros(m) == k * flat.shape[1]


@pytest.mark.parametrize("method", ["l1_unstructured", "random_unstructured", "taylor", "fisher"])
@pytest.mark.parametrize("amount", AMOUNTS)
def test_global_exact_total_count(method, amount, weights, stats):
    masks = M.compute_masks(
        method,
        weights,
        amount,
        stats=stats,
        scope="global",
        generator=torch.Generator().manual_seed(0),
    )
    total = sum(w.numel() for w in weights.values())
    assert sum(_zeros(m) for m in masks.values()) == round(amount * total)


@pytest.mark.parametrize("amount", AMOUNTS)
def test_global_magnitude_equals_l1_global_and_one_threshold(amount, weights):
    masks = M.global_magnitude(weights, amount)
    assert all(
        torch.equal(masks[n], m)
        for n, m in M.compute_masks("l1_unstructured", weights, amount, scope="global").items()
    )
    assert all(
        torch.equal(masks[n], m)
        for n, m in M.compute_masks("global_magnitude", weights, amount).items()
    )
    pruned = torch.cat([weights[n].abs()[masks[n] == 0] for n in weights])
    kept = torch.cat([weights[n].abs()[masks[n] != 0] for n in weights])
    assert pruned.max() <= kept.min()
    # a single threshold really differs from per-layer pruning: layers end at different sparsities
    per_layer = {n: M.sparsity(m) for n, m in masks.items()}
    assert max(per_layer.values()) - min(per_layer.values()) > 1e-3


def test_global_threshold_with_previous_masks(weights):
    first = M.global_magnitude(weights, 0.3)
    # rescale one layer so the new threshold falls differently across layers
    w2 = dict(weights)
    w2["fc.weight"] = weights["fc.weight"] * 0.5
    second = M.global_magnitude(w2, 0.6, masks=first)
    for n in weights:
        assert bool((second[n] <= first[n]).all())  # monotone
    assert sum(_zeros(m) for m in second.values()) == round(
        0.6 * sum(w.numel() for w in weights.values())
    )
    pruned_now = torch.cat([w2[n].abs()[(second[n] == 0) & (first[n] != 0)] for n in weights])
    kept = torch.cat([w2[n].abs()[second[n] != 0] for n in weights])
    assert pruned_now.max() <= kept.min()


# ------------------------------------------------------------------ monotone targets vs torch


def test_repeated_targets_reach_exact_sparsity_unlike_torch_compounding():
    w = torch.randn(50, 20, 5, 5, generator=torch.Generator().manual_seed(3))
    mask = None
    for target in (0.2, 0.4, 0.6):
        new = M.l1_unstructured(w, target, mask=mask)
        if mask is not None:
            assert bool((new[mask == 0] == 0).all())  # every pruned entry stays pruned
        mask = new
    assert M.sparsity(mask) == pytest.approx(0.6, abs=1 / w.numel())
    assert _zeros(mask) == round(0.6 * w.numel())

    # torch.nn.utils.prune compounds on the remaining weights: 1 - 0.8^3 = 48.8 %
    conv = nn.Conv2d(20, 50, 5)
    with torch.no_grad():
        conv.weight.copy_(w)
    for _ in range(3):
        prune.l1_unstructured(conv, "weight", amount=0.2)
    assert M.sparsity(conv.weight_mask) == pytest.approx(0.488, abs=1e-3)


@pytest.mark.parametrize(
    "method", ["ln_structured", "random_structured", "random_unstructured", "taylor", "fisher"]
)
def test_repeated_targets_monotone_all_methods(method, weights, stats):
    w = {"conv2.weight": weights["conv2.weight"]}
    g = torch.Generator().manual_seed(0)
    masks = None
    for target in (0.2, 0.4, 0.6):
        new = M.compute_masks(method, w, target, masks=masks, stats=stats, generator=g)
        if masks is not None:
            assert bool((new["conv2.weight"] <= masks["conv2.weight"]).all())
        masks = new
    m = masks["conv2.weight"]
    if C.get(method).structured:
        assert _dead_slices(m) == round(0.6 * 50)
    else:
        assert _zeros(m) == round(0.6 * m.numel())


def test_never_regrow_when_mask_already_sparser():
    w = torch.randn(10, 10, generator=torch.Generator().manual_seed(0))
    mask = M.l1_unstructured(w, 0.7)
    again = M.l1_unstructured(w, 0.3, mask=mask)
    assert torch.equal(again, mask) and again is not mask
    smask = M.ln_structured(w, 0.5)
    assert torch.equal(M.ln_structured(w, 0.2, mask=smask), smask)


def test_structured_after_unstructured_counts_only_whole_slices():
    w = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
    um = M.l1_unstructured(w, 0.25)
    sm = M.ln_structured(w, 0.5, mask=um)
    assert bool((sm <= um).all())
    assert _dead_slices(sm) == 4


# ------------------------------------------------------------------ equality with torch


@pytest.mark.parametrize("amount", [0.0, 0.1, 0.33, 0.5, 0.9, 0.99])
def test_l1_equals_torch_including_ties(amount):
    g = torch.Generator().manual_seed(0)
    for w in (
        torch.randn(50, 20, 5, 5, generator=g),
        torch.randint(-3, 4, (20, 1, 5, 5), generator=g).float(),  # many ties
        torch.zeros(7, 9),  # all tied
    ):
        lin = nn.Linear(1, 1)
        lin.weight = nn.Parameter(w.clone())
        prune.l1_unstructured(lin, "weight", amount=amount)
        assert torch.equal(M.l1_unstructured(w, amount), lin.weight_mask)


def test_channels_last_weights_get_the_logical_order_masks():
    # model=cnn trains in channels_last: masks must not depend on the memory layout
    w = torch.randn(50, 20, 5, 5, generator=torch.Generator().manual_seed(3))
    nhwc = w.contiguous(memory_format=torch.channels_last)
    first = M.l1_unstructured(w, 0.3)
    prev = first.contiguous(memory_format=torch.channels_last)
    assert torch.equal(M.l1_unstructured(nhwc, 0.3), first)
    assert torch.equal(M.l1_unstructured(nhwc, 0.6, prev), M.l1_unstructured(w, 0.6, first))
    assert torch.equal(M.ln_structured(nhwc, 0.5, n=2, dim=0), M.ln_structured(w, 0.5, n=2, dim=0))
    glob = M.compute_masks("global_magnitude", {"a": nhwc, "b": w[:5]}, 0.7, masks={"a": prev})
    ref = M.compute_masks("global_magnitude", {"a": w, "b": w[:5]}, 0.7, masks={"a": first})
    assert all(torch.equal(glob[k], ref[k]) for k in ref)
    # torch's built-ins flatten with view(-1): a custom method still gets a usable tensor
    out = M.compute_masks("x", {"a": nhwc}, 0.0, custom=prune.L1Unstructured(amount=0.25))
    assert torch.equal(out["a"], M.l1_unstructured(w, 0.25))


@pytest.mark.parametrize("amount", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("n", [1, 2])
def test_ln_structured_equals_torch(amount, n):
    w = torch.randn(50, 20, 5, 5, generator=torch.Generator().manual_seed(1))
    conv = nn.Conv2d(20, 50, 5)
    conv.weight = nn.Parameter(w.clone())
    prune.ln_structured(conv, "weight", amount=amount, n=n, dim=0)
    assert torch.equal(M.ln_structured(w, amount, n=n, dim=0), conv.weight_mask)


@pytest.mark.parametrize("amount", [0.1, 0.5, 0.9])
def test_global_magnitude_equals_torch_global_unstructured(amount, weights):
    mods = {}
    for name, w in weights.items():
        mod = nn.Linear(1, 1)
        mod.weight = nn.Parameter(w.clone())
        mods[name] = mod
    prune.global_unstructured(
        [(m, "weight") for m in mods.values()], pruning_method=prune.L1Unstructured, amount=amount
    )
    ours = M.global_magnitude(weights, amount)
    for name, mod in mods.items():
        assert torch.equal(ours[name], mod.weight_mask)


# ------------------------------------------------------------------ structured specifics


def test_structured_linear_neurons_and_other_dim():
    w = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    w[2] *= 0.01  # weakest output neuron
    m = M.ln_structured(w, 0.2, dim=0)  # round(1.2) = 1 neuron
    assert torch.equal(m[2], torch.zeros(4)) and int((m == 0).sum()) == 4
    m1 = M.ln_structured(w, 0.5, dim=1)  # input columns
    assert _dead_slices(m1, dim=1) == 2
    assert bool(((m1 == 0).all(0) | (m1 == 1).all(0)).all())
    mr = M.random_structured(w, 0.5, dim=-1, generator=torch.Generator().manual_seed(0))
    assert _dead_slices(mr, dim=1) == 2


def test_ln_structured_uses_masked_weight():
    w = torch.tensor([[10.0, 0.1], [1.0, 1.0], [2.0, 2.0]])
    prev = torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 1.0]])  # big entry of row 0 already pruned
    m = M.ln_structured(w, 1 / 3, mask=prev)
    assert torch.equal(m, torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]))


# ------------------------------------------------------------------ random methods


@pytest.mark.parametrize("method", ["random_unstructured", "random_structured"])
def test_random_reproducible_and_seed_dependent(method, weights):
    def run(seed, order=None):
        ws = weights if order is None else {n: weights[n] for n in order}
        return M.compute_masks(method, ws, 0.5, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(7), run(7), run(8)
    d = run(7, order=list(reversed(list(weights))))  # dict order must not matter
    for n in weights:
        assert torch.equal(a[n], b[n]) and torch.equal(a[n], d[n])
    assert any(not torch.equal(a[n], c[n]) for n in weights)


def test_random_uses_generator_not_global_rng():
    w = torch.randn(30, 30)
    torch.manual_seed(1)
    a = M.random_unstructured(w, 0.4, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(2)
    b = M.random_unstructured(w, 0.4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_random_and_l1_same_on_cpu_and_cuda():
    w = torch.randn(50, 20, 5, 5)
    for fn in (M.random_unstructured, M.random_structured):
        cpu = fn(w, 0.5, generator=torch.Generator().manual_seed(3))
        gpu = fn(w.cuda(), 0.5, generator=torch.Generator().manual_seed(3))
        assert gpu.device.type == "cuda" and torch.equal(cpu, gpu.cpu())
    assert M.sparsity(M.l1_unstructured(w.cuda(), 0.5)) == 0.5


# ------------------------------------------------------------------ gradient criteria


def test_grad_stats_accumulate_formulas():
    w = torch.tensor([1.0, -2.0, 3.0])
    g1, g2 = torch.tensor([0.5, 1.0, -1.0]), torch.tensor([-1.0, 0.0, 2.0])
    s = M.accumulate_grad_stats(None, w, g1)
    s = M.accumulate_grad_stats(s, w, g2)
    assert s["batches"] == 2
    assert torch.allclose(M.taylor_score(w, s), (w * g1).abs() + (w * g2).abs())
    assert torch.allclose(M.fisher_score(w, s), 0.5 * w**2 * (g1**2 + g2**2))


def test_taylor_and_fisher_rank_differently_from_magnitude():
    w = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    g = torch.tensor([[0.01, 1.0, 1.0, 10.0]])  # the largest weight barely affects the loss
    stats = M.accumulate_grad_stats(None, w, g)
    mag = M.l1_unstructured(w, 0.25)
    assert torch.equal(mag, torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    expected = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    assert torch.equal(M.taylor(w, 0.25, stats), expected)
    assert torch.equal(M.fisher(w, 0.25, stats), expected)
    # taylor (Σ|wg|) and fisher (½w²Σg²) disagree on a steady vs a spiky gradient
    w2 = torch.tensor([1.0, 1.0])
    s2 = M.accumulate_grad_stats(None, w2, torch.tensor([2.0, 3.5]))
    s2 = M.accumulate_grad_stats(
        s2, w2, torch.tensor([2.0, 0.0])
    )  # taylor [4, 3.5], fisher [4, 6.125]
    assert torch.equal(M.taylor(w2, 0.5, s2), torch.tensor([1.0, 0.0]))
    assert torch.equal(M.fisher(w2, 0.5, s2), torch.tensor([0.0, 1.0]))


def test_taylor_without_stats_is_config_error(weights):
    with pytest.raises(ConfigError, match="conv1.weight"):
        M.compute_masks("taylor", weights, 0.5, stats={})


# ------------------------------------------------------------------ custom methods


class _EveryOther(prune.BasePruningMethod):
    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t, default_mask):
        mask = default_mask.clone()
        mask.view(-1)[::2] = 0
        return mask


def test_custom_base_pruning_method_and_torch_builtin():
    w = {"a": torch.randn(4, 4), "b": torch.randn(3)}
    prev = {"a": torch.ones(4, 4)}
    prev["a"][0, 1] = 0
    out = M.compute_masks("custom", w, 0.0, masks=prev, custom=_EveryOther())
    assert list(out) == ["a", "b"]
    assert out["a"].view(-1)[::2].eq(0).all() and out["a"][0, 1] == 0  # monotone
    assert _zeros(out["b"]) == 2
    # a torch built-in carries over with its own (fraction of remaining) semantics
    lin = M.compute_masks("x", {"a": w["a"]}, 0.9, custom=prune.L1Unstructured(amount=0.25))
    assert _zeros(lin["a"]) == 4
    with pytest.raises(ConfigError, match="BasePruningMethod"):
        M.compute_masks("x", w, 0.1, custom=object())


# ------------------------------------------------------------------ errors and helpers


@pytest.mark.parametrize("amount", [-0.1, 1.0, 1.5, float("nan"), True, "0.5"])
def test_bad_amount_raises_config_error_naming_value(amount, weights):
    w = weights["conv1.weight"]
    for call in (
        lambda: M.l1_unstructured(w, amount),
        lambda: M.random_unstructured(w, amount),
        lambda: M.ln_structured(w, amount),
        lambda: M.random_structured(w, amount),
        lambda: M.global_magnitude(weights, amount),
        lambda: M.compute_masks("l1_unstructured", weights, amount),
    ):
        with pytest.raises(ConfigError) as err:
            call()
        assert repr(amount) in str(err.value) and "[0, 1)" in str(err.value)
        assert "\n" not in str(err.value)


def test_unknown_method_scope_and_structured_errors(weights):
    with pytest.raises(ConfigError, match="'l2_magic'.*l1_unstructured.*fisher"):
        M.compute_masks("l2_magic", weights, 0.5)
    with pytest.raises(ConfigError, match="'sideways'.*layer, global"):
        M.compute_masks("l1_unstructured", weights, 0.5, scope="sideways")
    with pytest.raises(ConfigError, match="ln_structured.*'global'"):
        M.compute_masks("ln_structured", weights, 0.5, scope="global")
    with pytest.raises(ConfigError, match="global_magnitude.*'layer'"):
        M.compute_masks("global_magnitude", weights, 0.5, scope="layer")
    with pytest.raises(ConfigError, match="'fc.bias'"):
        M.compute_masks("random_structured", {"fc.bias": torch.zeros(5)}, 0.5)
    with pytest.raises(ConfigError, match="dim"):
        M.compute_masks("ln_structured", weights, 0.5, dim=4)
    with pytest.raises(ConfigError, match="shape"):
        M.l1_unstructured(torch.zeros(3, 3), 0.5, mask=torch.ones(9))


def test_dtype_and_sparsity_helper():
    w = torch.randn(10, 10, dtype=torch.float64)
    m = M.l1_unstructured(w, 0.5)
    assert m.dtype == torch.float64 and M.sparsity(m) == 0.5
    assert M.sparsity(w * m) == 0.5 and M.sparsity(torch.zeros(0)) == 0.0
    assert M.compute_masks("l1_unstructured", {}, 0.5) == {}
    assert set(C.CRITERIA) >= {  # (examples may register more)
        "l1_unstructured",
        "random_unstructured",
        "ln_structured",
        "random_structured",
        "global_magnitude",
        "taylor",
        "fisher",
    }


# ------------------------------------------------------------------ the registry


def test_every_method_config_names_a_registered_criterion_and_back():
    from conftest import CONF

    configured = {p.stem for p in (CONF / "pruning" / "method").glob("*.yaml")}
    builtin = {"l1_unstructured", "random_unstructured", "ln_structured", "random_structured",
               "global_magnitude", "taylor", "fisher", "lamp", "snip", "grasp", "synflow"}
    assert builtin <= set(C.CRITERIA)
    assert configured == builtin


def test_unknown_criterion_lists_the_closest_first():
    with pytest.raises(ConfigError, match=r"'l1_unstructurd'; valid: l1_unstructured, "):
        C.get("l1_unstructurd")


def test_register_twice_is_refused_and_structured_global_is_invalid():
    with pytest.raises(ValueError, match="already registered"):
        C.register(C.Criterion("l1_unstructured", lambda w, ctx: w.abs()))
    with pytest.raises(ValueError, match="layer-wise"):
        C.Criterion("bad", lambda w, ctx: w, structured=True, scopes=("global",))


def test_own_criterion_from_outside_the_package(monkeypatch):
    from conftest import ROOT

    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import own_criterion  # noqa: F401  (registers reverse_magnitude)

    w = torch.tensor([[0.1, -3.0, 0.5, 2.0]])
    m = C.compute_masks("reverse_magnitude", {"w": w}, 0.5)["w"]
    assert torch.equal(m, torch.tensor([[1.0, 0.0, 1.0, 0.0]]))  # the two largest went
    g = C.compute_masks("reverse_magnitude", {"a": w, "b": w * 10}, 0.5, scope="global")
    assert torch.equal(g["b"], torch.tensor([[1.0, 0.0, 0.0, 0.0]]))  # 30, 20, 5 and -3 went
    assert torch.equal(g["a"], torch.tensor([[1.0, 0.0, 1.0, 1.0]]))
