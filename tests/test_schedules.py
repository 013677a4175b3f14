"""Every schedule against hand-written tables of its values; plans and their validation.

The expected targets below were worked out by hand from each schedule's definition (AGP:
s_t = s_f + (s_i - s_f)(1 - t/(n-1))^3; geometric: 1 - (1 - rate)^(k+1), capped at the amount),
never recomputed here by the code's formula.
"""

from __future__ import annotations

import pytest

from prunelab.errors import ConfigError
from prunelab.pruning import schedules as S
from prunelab.pruning.dynamic import SET, RigL
from prunelab.pruning.schedules import (
    AGP,
    AtInit,
    Dense,
    Explicit,
    Geometric,
    Iterative,
    Lottery,
    OneShot,
    PruneStep,
    build_plan,
    validate_plan,
)


def steps(schedule: S.Schedule) -> list[tuple[int, float]]:
    return [(s.epoch, s.target) for s in schedule.plan()]


# ------------------------------------------------------------------------------- tables

ITERATIVE_ARTICLE = [(0, 0.1), (1, 0.15), (2, 0.2), (3, 0.25), (4, 0.3), (5, 0.35), (6, 0.4),
                     (7, 0.45), (8, 0.5)]  # the reference article: 10 % -> 50 % by 5 %
GEOMETRIC_80 = [(0, 0.2), (1, 0.36), (2, 0.488), (3, 0.5904), (4, 0.67232), (5, 0.737856),
                (6, 0.7902848), (7, 0.8)]  # 1 - 0.8^(k+1): the 8th, 0.83222784, capped

TABLES = [
    (Dense(), []),
    (AtInit(amount=0.98), [(-1, 0.98)]),
    (OneShot(amount=0.7), [(0, 0.7)]),
    (OneShot(amount=0.5, start_epoch=2), [(2, 0.5)]),
    (Iterative(amount=0.5, initial=0.1, step_size=0.05), ITERATIVE_ARTICLE),
    (Iterative(amount=0.6, n_steps=3, initial=0.2, start_epoch=1, every=2),
     [(1, 0.2), (3, 0.4), (5, 0.6)]),
    (Iterative(amount=0.9, n_steps=3), [(0, 0.3), (1, 0.6), (2, 0.9)]),  # initial: amount / n
    (Iterative(amount=0.3, step_size=0.1), [(0, 0.1), (1, 0.2), (2, 0.3)]),  # initial: step
    (Iterative(amount=0.03, step_size=0.05), [(0, 0.03)]),  # one step straight to the amount
    (Iterative(amount=0.9, initial=0.0, step_size=0.3), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9)]),
    (Geometric(amount=0.8, rate=0.2), GEOMETRIC_80),
    (Geometric(amount=0.9, rate=0.5, start_epoch=1), [(1, 0.5), (2, 0.75), (3, 0.875), (4, 0.9)]),
    (Geometric(amount=0.488, rate=0.2), [(0, 0.2), (1, 0.36), (2, 0.488)]),
    # AGP, n = 5: (1 - t/4)^3 = 1, 0.421875, 0.125, 0.015625, 0 -> 0.8 - 0.8 * those
    (AGP(amount=0.8, n_steps=5, start_epoch=1),
     [(1, 0.0), (2, 0.4625), (3, 0.7), (4, 0.7875), (5, 0.8)]),
    # AGP, n = 6 from 0.1: (1 - t/5)^3 = 1, 0.512, 0.216, 0.064, 0.008, 0 -> 0.9 - 0.8 * those
    (AGP(amount=0.9, initial=0.1, n_steps=6, start_epoch=2, every=3),
     [(2, 0.1), (5, 0.4904), (8, 0.7272), (11, 0.8488), (14, 0.8936), (17, 0.9)]),
    (AGP(amount=0.5, n_steps=1), [(0, 0.5)]),
    (Explicit(steps=[[1, 0.2], [4, 0.5], [6, 0.5], [9, 0.8]]),
     [(1, 0.2), (4, 0.5), (6, 0.5), (9, 0.8)]),
    (Explicit(steps=[[-1, 0.5], [2, 0.9]]), [(-1, 0.5), (2, 0.9)]),
    (Lottery(amount=0.8, rate=0.2), GEOMETRIC_80),
    (Lottery(amount=0.5, initial=0.1, step_size=0.05), ITERATIVE_ARTICLE),
    (SET(amount=0.9), []),
    (RigL(amount=0.5), []),
]


@pytest.mark.parametrize("schedule,table", TABLES, ids=[f"{type(s).__name__}-{i}" for i, (s, _) in enumerate(TABLES)])
def test_every_schedule_gives_its_table(schedule, table):
    assert steps(schedule) == table  # exactly: targets are rounded to 10 decimals
    assert schedule.final_target == (table[-1][1] if table else getattr(schedule, "amount", 0.0))
    for k, (_, target) in enumerate(table):
        assert schedule.target(k) == target


def test_the_article_schedule_is_exactly_half_despite_float_sums():
    assert sum([0.1] + [0.05] * 8) != 0.5  # step by step in floats ...
    assert Iterative(amount=0.5, initial=0.1, step_size=0.05).final_target == 0.5  # ... yet


@pytest.mark.parametrize("fn,kwargs,table", [
    (S.one_shot, {"amount": 0.7}, [0.7, 0.7, 0.7]),
    (S.iterative, {"initial": 0.1, "final": 0.5, "step_size": 0.05},
     [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.5, 0.5]),
    (S.geometric, {"rate": 0.2, "final": 0.9}, [0.2, 0.36, 0.488, 0.5904, 0.67232]),
    (S.agp, {"initial": 0.0, "final": 0.8, "n_steps": 5}, [0.0, 0.4625, 0.7, 0.7875, 0.8, 0.8]),
    (S.explicit, {"steps": [[1, 0.2], [4, 0.5]]}, [0.2, 0.5]),
])
def test_step_functions_give_their_tables(fn, kwargs, table):
    assert [fn(t, **kwargs) for t in range(len(table))] == table


def test_step_counts():
    assert S.iterative_n_steps(initial=0.1, final=0.5, step_size=0.05) == 9
    assert S.iterative_n_steps(initial=0.5, final=0.5, step_size=0.1) == 1
    assert S.geometric_n_steps(rate=0.2, final=0.8) == 8
    assert S.geometric_n_steps(rate=0.2, final=0.488) == 3
    assert S.geometric_n_steps(rate=0.3, final=0.0) == 1
    with pytest.raises(ConfigError, match="out of range"):
        S.explicit(2, steps=[[1, 0.2], [4, 0.5]])


@pytest.mark.parametrize("schedule,step,fraction,due", [
    (SET(amount=0.9, alpha=0.4, update_every=10), 0, 0.4, False),   # t = 0: no update yet
    (SET(amount=0.9, alpha=0.4, update_every=10), 10, 0.3902113032590307, True),  # 0.2 (1 + cos(pi/10))
    (SET(amount=0.9, alpha=0.4, update_every=10), 50, 0.2, True),   # half way: alpha / 2
    (SET(amount=0.9, alpha=0.4, update_every=10), 55, 0.17, False),  # not a multiple of 10
    (RigL(amount=0.9, alpha=0.3, update_every=25), 75, 0.04393398282201787, True),  # 0.15 (1 - cos(pi/4))
    (RigL(amount=0.9, alpha=0.3, update_every=25), 100, 0.0, False),  # from t_end on: none
])
def test_dynamic_schedules_fraction_and_update_steps(schedule, step, fraction, due):
    if step != 55:
        assert schedule.fraction(step, 100.0) == pytest.approx(fraction, abs=1e-12)
    assert schedule.due(step, 100.0) is due


# ------------------------------------------------------------------------------- keys

def test_build_plan_builds_the_named_schedule_with_its_keys_only():
    assert build_plan("agp", amount=0.8, n_steps=5, start_epoch=1) == [
        PruneStep(1, 0.0), PruneStep(2, 0.4625), PruneStep(3, 0.7), PruneStep(4, 0.7875),
        PruneStep(5, 0.8)]
    assert build_plan("none") == []
    with pytest.raises(ConfigError) as err:
        build_plan("agp", amount=0.5, n_steps=3, rate=0.5)
    assert str(err.value) == ("rate: not a key of agp; valid: amount, start_epoch, every, "
                              "n_steps, initial")
    with pytest.raises(ConfigError, match="amount: not a key of explicit; valid: steps$"):
        build_plan("explicit", amount=0.3, steps=[[1, 0.2]])
    with pytest.raises(ConfigError, match="every: not a key of one_shot"):
        build_plan("one_shot", amount=0.5, every=2)


def test_explicit_accepts_omegaconf_lists():
    from omegaconf import OmegaConf

    steps_ = OmegaConf.create({"s": [[0, 0.25], [2, 0.5]]}).s
    assert build_plan("explicit", steps=steps_) == [PruneStep(0, 0.25), PruneStep(2, 0.5)]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kind": "cosine", "amount": 0.5}, "'cosine'.*one_shot.*lottery"),
        ({"kind": "one_shot", "amount": 1.0}, r"^amount=1.0 must be a fraction in \[0, 1\)$"),
        ({"kind": "one_shot", "amount": -0.1}, "amount=-0.1"),
        ({"kind": "one_shot"}, "one_shot needs amount"),
        ({"kind": "iterative", "amount": 0.5}, "step_size or n_steps"),
        ({"kind": "iterative", "amount": 0.5, "step_size": 0}, r"step_size=0 must be a fraction in \(0, 1\)"),
        ({"kind": "geometric", "amount": 0.5}, "geometric needs rate"),
        ({"kind": "geometric", "amount": 0.5, "rate": 1.0}, r"rate=1.0 must be a fraction in \(0, 1\)"),
        ({"kind": "agp", "amount": 0.5}, "agp needs n_steps"),
        ({"kind": "agp", "amount": 0.5, "n_steps": 3, "initial": 0.6}, "initial=0.6.*amount=0.5"),
        ({"kind": "iterative", "amount": 0.5, "n_steps": 3, "initial": 0.6}, "initial=0.6"),
        ({"kind": "agp", "amount": 0.5, "n_steps": 0}, r"n_steps=0 must be an integer in \[1, 10000\]"),
        ({"kind": "agp", "amount": 0.5, "n_steps": 2, "every": 0}, r"every=0 must be an integer in \[1, 100000\]"),
        ({"kind": "explicit", "steps": [[0, 0.5], [3, 0.2]]}, "decrease.*0.2"),
        ({"kind": "explicit", "steps": [[2, 0.2], [2, 0.4]]}, "strictly increasing"),
        ({"kind": "explicit", "steps": [[0, 1.2]]}, "1.2"),
        ({"kind": "explicit", "steps": [[0, 0.2, 4]]}, "pair"),
        ({"kind": "explicit", "steps": []}, "at least one"),
        ({"kind": "explicit", "steps": [[-3, 0.5]]}, r"-1 \(before training\), got -3"),
    ],
)
def test_bad_values_are_one_line(kwargs, match):
    kind = kwargs.pop("kind")
    with pytest.raises(ConfigError, match=match) as err:
        build_plan(kind, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("make,match", [
    (lambda: SET(amount=1.0), r"amount=1.0 must be in \(0, 1\) for dynamic sparse training"),
    (lambda: RigL(amount=0.5, update_every=0), "update_every=0 must be an integer >= 1"),
    (lambda: RigL(amount=0.5, alpha=0.0), r"alpha=0.0 must be in \(0, 1\]"),
    (lambda: SET(amount=0.5, stop_fraction=1.5), r"stop_fraction=1.5 must be in \(0, 1\]"),
    (lambda: SET(amount=0.5, distribution="er"), "distribution='er' is not one of erk, uniform"),
])
def test_dynamic_schedules_check_their_values(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_schedules_are_frozen():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        AGP(amount=0.5, n_steps=2).amount = 0.9  # type: ignore[misc]


# ------------------------------------------------------------------------------- plans

def test_validate_plan_max_epochs():
    plan = Iterative(amount=0.5, initial=0.1, step_size=0.05, start_epoch=1).plan()
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
    with pytest.raises(ConfigError, match=r"1.0 must be a fraction in \[0, 1\)"):
        validate_plan([PruneStep(0, 1.0)], None)
    with pytest.raises(ConfigError, match="-2"):
        validate_plan([PruneStep(-2, 0.1)], None)
    validate_plan([PruneStep(-1, 0.1), PruneStep(0, 0.2)], None)  # -1: before training
