"""``pruning.method.round_to=k``: structured methods keep exactly a multiple of k filters/neurons."""

from __future__ import annotations

import pytest
import torch

from prunelab.errors import ConfigError
from prunelab.pruning import criteria as M
from prunelab.run import make_callback


def kept(mask: torch.Tensor) -> int:
    return int((mask.flatten(1) != 0).any(dim=1).sum())


@pytest.mark.parametrize("method", ["ln_structured", "random_structured"])
@pytest.mark.parametrize("amount", [0.1, 0.33, 0.5, 0.75, 0.9, 0.97])
def test_kept_slices_are_a_multiple_of_round_to(method, amount):
    torch.manual_seed(0)
    weights = {"conv": torch.randn(64, 3, 3, 3), "fc": torch.randn(200, 30)}
    masks = M.compute_masks(method, weights, amount, round_to=8,
                            generator=torch.Generator().manual_seed(0))
    for name, w in weights.items():
        n = w.shape[0]
        plain = n - M.n_to_prune(amount, n)
        k = kept(masks[name])
        assert k % 8 == 0, (name, k)
        # the smallest multiple of 8 at or above what the amount alone keeps
        assert plain <= k < plain + 8 or k == 8, (name, plain, k)


def test_round_to_holds_through_monotone_steps():
    torch.manual_seed(1)
    w = {"fc": torch.randn(100, 20)}
    mask = None
    for target in (0.2, 0.45, 0.7, 0.9):
        mask = M.compute_masks("ln_structured", w, target, masks=None if mask is None else {"fc": mask},
                               round_to=16)["fc"]
        assert kept(mask) % 16 == 0
    assert kept(mask) == 16  # 10 kept rounded up to 16


def test_a_layer_smaller_than_round_to_is_never_emptied():
    w = {"fc2": torch.randn(10, 5)}
    mask = M.compute_masks("ln_structured", w, 0.9, round_to=16)["fc2"]
    assert kept(mask) == 10
    w = {"fc": torch.randn(40, 5)}
    assert kept(M.compute_masks("ln_structured", w, 0.99, round_to=16)["fc"]) == 16


def test_round_to_off_keeps_the_plain_count():
    w = {"fc": torch.randn(50, 5)}
    assert kept(M.compute_masks("ln_structured", w, 0.5, round_to=None)["fc"]) == 25
    assert kept(M.compute_masks("ln_structured", w, 0.5, round_to=1)["fc"]) == 25


@pytest.mark.parametrize("bad", [0, -4, 2.5, True, "8"])
def test_bad_round_to_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=f"^round_to={bad!r} must be a positive integer"):
        M.compute_masks("ln_structured", {"fc": torch.randn(8, 2)}, 0.5, round_to=bad)


def test_round_to_with_an_unstructured_method_is_refused():
    with pytest.raises(ConfigError, match=r"^round_to=4 applies to structured methods.*not method='l1_unstructured'"):
        M.compute_masks("l1_unstructured", {"fc": torch.randn(8, 2)}, 0.5, round_to=4)


def test_config_reaches_the_callback_and_is_checked_before_training(make_cfg):
    cfg = make_cfg("pruning=one_shot", "pruning/method=ln_structured", "pruning.method.round_to=8")
    assert make_callback(cfg)[0].method.round_to == 8
    assert make_callback(make_cfg("pruning=one_shot"))[0].method.round_to is None
    # an unstructured criterion has no round_to: the key is refused where it is not taken
    with pytest.raises(ConfigError, match=r"^pruning.method.round_to: not a key of l1_unstructured; "
                                          r"valid: scope$"):
        make_callback(make_cfg("pruning=one_shot", "pruning.method.round_to=8"))
    with pytest.raises(ConfigError, match=r"^pruning.method.round_to=0 must be a positive integer"):
        make_callback(make_cfg("pruning=one_shot", "pruning/method=ln_structured",
                               "pruning.method.round_to=0"))


def test_the_callbacks_step_check_allows_the_rounding():
    """A first step of 10 % keeps 18 of 20 filters, rounded up to all 20 with round_to=8: the
    step is short of its target by the rounding, not wrong (the documented command
    ``pruning=iterative pruning/method=ln_structured pruning.method.round_to=8`` stopped here)."""
    from torch import nn

    from prunelab.pruning import PruningCallback
    from prunelab.pruning.criteria import LnStructured

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 20, 5), nn.Flatten(), nn.Linear(20 * 4 * 4, 10))
    cb = PruningCallback([(0, 0.1)], method=LnStructured(round_to=8))
    cb.bind(net)
    for target in (0.1, 0.5, 0.9):
        cb.apply_target(target)
        assert kept(net[0].weight_mask) in (8, 16, 20), target
