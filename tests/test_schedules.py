"""Schedules against their formulas; plans and their validation."""

from __future__ import annotations

import pytest

from prunelab.errors import ConfigError
from prunelab.pruning import schedules as S
from prunelab.pruning.schedules import PruneStep, build_plan, validate_plan


def test_one_shot():
    assert [S.one_shot(t, amount=0.7) for t in range(3)] == [0.7, 0.7, 0.7]


def test_iterative_reference_article_10_to_50_by_5():
    n = S.iterative_n_steps(initial=0.1, final=0.5, step_size=0.05)
    targets = [S.iterative(t, initial=0.1, final=0.5, step_size=0.05) for t in range(n)]
    assert n == 9
    assert targets == [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
    assert targets[-1] == 0.5  # exactly, despite 0.1 + 8 * 0.05 != 0.5 in floats
    for t, s in enumerate(targets):
        assert s == pytest.approx(min(0.5, 0.1 + t * 0.05), abs=1e-12)
    assert S.iterative(20, initial=0.1, final=0.5, step_size=0.05) == 0.5
    plan = build_plan("iterative", amount=0.5, initial=0.1, step_size=0.05)
    assert [p.target for p in plan] == targets and [p.epoch for p in plan] == list(range(9))


@pytest.mark.parametrize("initial,final,step", [(0.0, 0.9, 0.3), (0.2, 0.95, 0.1), (0.5, 0.5, 0.1)])
def test_iterative_n_steps_reaches_final_once(initial, final, step):
    n = S.iterative_n_steps(initial=initial, final=final, step_size=step)
    targets = [S.iterative(t, initial=initial, final=final, step_size=step) for t in range(n)]
    assert targets[-1] == final and all(t < final for t in targets[:-1])


@pytest.mark.parametrize("rate,final", [(0.2, 0.8), (0.2, 0.488), (0.5, 0.9), (0.3, 0.0)])
def test_geometric_formula_and_exact_final(rate, final):
    n = S.geometric_n_steps(rate=rate, final=final)
    targets = [S.geometric(t, rate=rate, final=final) for t in range(n)]
    for t, s in enumerate(targets):
        assert s == pytest.approx(min(final, 1 - (1 - rate) ** (t + 1)), abs=1e-9)
    assert targets[-1] == final and all(t < final for t in targets[:-1])
    assert [p.target for p in build_plan("geometric", amount=final, rate=rate)] == targets
    assert [p.target for p in build_plan("lottery", amount=final, rate=rate)] == targets


def test_geometric_lottery_ticket_example():
    # 20 % of the remaining weights per round: 0.2, 0.36, 0.488, ...
    assert [S.geometric(t, rate=0.2, final=0.9) for t in range(3)] == [0.2, 0.36, 0.488]
    assert S.geometric_n_steps(rate=0.2, final=0.488) == 3


def test_agp_formula_endpoints_and_cubic_shape():
    si, sf, n = 0.1, 0.9, 6
    targets = [S.agp(t, initial=si, final=sf, n_steps=n) for t in range(n)]
    for t, s in enumerate(targets):
        assert s == pytest.approx(sf + (si - sf) * (1 - t / (n - 1)) ** 3, abs=1e-9)
    assert targets[0] == si and targets[-1] == sf
    increments = [b - a for a, b in zip(targets, targets[1:], strict=False)]
    assert all(i > 0 for i in increments)
    assert all(a > b for a, b in zip(increments, increments[1:], strict=False))  # fast then slow
    assert S.agp(0, initial=0.0, final=0.5, n_steps=1) == 0.5
    plan = build_plan("agp", amount=sf, initial=si, n_steps=n, start_epoch=2, every=3)
    assert [p.epoch for p in plan] == [2, 5, 8, 11, 14, 17]
    assert [p.target for p in plan] == targets


def test_explicit():
    steps = [[1, 0.2], [4, 0.5], [6, 0.5], [9, 0.8]]
    assert [S.explicit(t, steps=steps) for t in range(4)] == [0.2, 0.5, 0.5, 0.8]
    plan = build_plan("explicit", amount=0.3, steps=steps, start_epoch=5, every=7)  # ignored
    assert plan == [PruneStep(1, 0.2), PruneStep(4, 0.5), PruneStep(6, 0.5), PruneStep(9, 0.8)]
    with pytest.raises(ConfigError, match="out of range"):
        S.explicit(4, steps=steps)


def test_build_plan_kinds_and_epochs():
    assert build_plan("none", amount=0.5) == []
    assert build_plan("one_shot", amount=0.6, start_epoch=3) == [PruneStep(3, 0.6)]
    plan = build_plan("iterative", amount=0.6, n_steps=3, initial=0.2, start_epoch=1, every=2)
    assert plan == [PruneStep(1, 0.2), PruneStep(3, 0.4), PruneStep(5, 0.6)]
    assert [p.target for p in build_plan("iterative", amount=0.9, n_steps=3)] == [0.3, 0.6, 0.9]
    assert [p.target for p in build_plan("iterative", amount=0.3, step_size=0.1)] == [0.1, 0.2, 0.3]
    lottery = build_plan("lottery", amount=0.5, initial=0.1, step_size=0.05)
    assert lottery == build_plan("iterative", amount=0.5, initial=0.1, step_size=0.05)
    # a step larger than the amount: one step straight to the amount
    assert build_plan("iterative", amount=0.03, step_size=0.05) == [PruneStep(0, 0.03)]


def test_explicit_accepts_omegaconf_lists():
    from omegaconf import OmegaConf

    steps = OmegaConf.create({"s": [[0, 0.25], [2, 0.5]]}).s
    assert build_plan("explicit", steps=steps) == [PruneStep(0, 0.25), PruneStep(2, 0.5)]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kind": "cosine", "amount": 0.5}, "'cosine'.*one_shot.*lottery"),
        ({"kind": "one_shot", "amount": 1.0}, "amount.*1.0"),
        ({"kind": "one_shot", "amount": -0.1}, "amount.*-0.1"),
        ({"kind": "one_shot"}, "amount"),
        ({"kind": "iterative", "amount": 0.5}, "step_size or n_steps"),
        ({"kind": "iterative", "amount": 0.5, "step_size": 0}, "step_size.*0"),
        ({"kind": "geometric", "amount": 0.5}, "rate"),
        ({"kind": "geometric", "amount": 0.5, "rate": 1.0}, r"rate.*\(0, 1\).*1.0"),
        ({"kind": "agp", "amount": 0.5}, "n_steps"),
        ({"kind": "agp", "amount": 0.5, "n_steps": 3, "initial": 0.6}, "initial=0.6.*amount=0.5"),
        ({"kind": "iterative", "amount": 0.5, "n_steps": 3, "initial": 0.6}, "initial=0.6"),
        ({"kind": "agp", "amount": 0.5, "n_steps": 0}, "n_steps.*0"),
        ({"kind": "one_shot", "amount": 0.5, "every": 0}, "every.*0"),
        ({"kind": "explicit", "steps": [[0, 0.5], [3, 0.2]]}, "decrease.*0.2"),
        ({"kind": "explicit", "steps": [[2, 0.2], [2, 0.4]]}, "strictly increasing"),
        ({"kind": "explicit", "steps": [[0, 1.2]]}, "1.2"),
        ({"kind": "explicit", "steps": [[0, 0.2, 4]]}, "pair"),
        ({"kind": "explicit", "steps": []}, "at least one"),
    ],
)
def test_build_plan_errors(kwargs, match):
    kind = kwargs.pop("kind")
    with pytest.raises(ConfigError, match=match) as err:
        build_plan(kind, **kwargs)
    assert "\n" not in str(err.value)


def test_validate_plan_max_epochs():
    plan = build_plan("iterative", amount=0.5, initial=0.1, step_size=0.05, start_epoch=1)
    assert plan[-1].epoch == 9
    validate_plan(plan, 10)  # the last step in the last epoch: allowed, no fine-tuning
    validate_plan(plan, None)
    validate_plan(plan, -1)
    with pytest.raises(ConfigError) as err:
        validate_plan(plan, 5)
    assert str(err.value) == (
        "pruning schedule ends at epoch 9 but trainer.max_epochs=5: "
        "needs at least 10 (11 with one fine-tuning epoch)"
    )
    validate_plan([], 1)


def test_validate_plan_rules():
    with pytest.raises(ConfigError, match="decrease"):
        validate_plan([PruneStep(0, 0.5), PruneStep(1, 0.4)], None)
    with pytest.raises(ConfigError, match="strictly increasing"):
        validate_plan([PruneStep(3, 0.1), PruneStep(1, 0.4)], None)
    with pytest.raises(ConfigError, match=r"\[0, 1\).*1.0"):
        validate_plan([PruneStep(0, 1.0)], None)
    with pytest.raises(ConfigError, match="-2"):
        validate_plan([PruneStep(-2, 0.1)], None)
    validate_plan([PruneStep(-1, 0.1), PruneStep(0, 0.2)], None)  # -1: before training


def test_at_init_is_one_step_before_training():
    assert build_plan("at_init", amount=0.98, start_epoch=4) == [PruneStep(-1, 0.98)]
    assert build_plan("explicit", steps=[[-1, 0.5], [2, 0.9]])[0] == PruneStep(-1, 0.5)
    with pytest.raises(ConfigError, match=r"-1 \(before training\), got -3"):
        build_plan("explicit", steps=[[-3, 0.5]])
