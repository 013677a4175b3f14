"""Every option of every config group composes, validates and instantiates."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from prunelab.errors import ConfigError
from prunelab.run import (
    check_config,
    check_nodes,
    instantiate_data,
    instantiate_model,
    make_callback,
)

from conftest import CONF


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("model", _options("model"))
def test_model_picks_its_own_data(make_cfg, model):
    cfg = make_cfg(f"model={model}")
    assert cfg.data.name == {"cnn": "mnist", "text": "imdb", "torchvision": "mnist"}[model]
    check_config(cfg)
    dm = instantiate_data(cfg)
    net = instantiate_model(cfg)
    assert type(dm).__name__.lower().startswith(cfg.data.name)
    assert sum(p.numel() for p in net.parameters()) > 0


@pytest.mark.parametrize("data", ["mnist", "imdb"])
def test_data_options_instantiate(make_cfg, data):
    model = {"mnist": "cnn", "imdb": "text"}[data]
    cfg = make_cfg(f"model={model}", f"data={data}")
    check_config(cfg)
    instantiate_data(cfg)


@pytest.mark.parametrize("schedule", _options("pruning"))
@pytest.mark.parametrize("method", _options("pruning/method"))
def test_every_schedule_and_method_compose(make_cfg, schedule, method):
    cfg = make_cfg(f"pruning={schedule}", f"pruning/method={method}")
    check_config(cfg)
    check_nodes(cfg)
    if schedule == "at_init" and method in ("taylor", "fisher"):
        with pytest.raises(ConfigError, match="gathers its gradients during training"):
            make_callback(cfg)  # no training epoch before pruning: refused before any data
        return
    if schedule in ("set", "rigl"):  # dynamic sparse training drops by magnitude only
        if method != "l1_unstructured":
            with pytest.raises(ConfigError, match="pruning/method=l1_unstructured"):
                make_callback(cfg)
            return
        callback, name = make_callback(cfg)
        assert callback.plan == [] and callback.dynamic is not None and name == schedule
        assert callback.final_target == cfg.pruning.schedule.amount
        return
    callback, name = make_callback(cfg)
    assert name == schedule and callback.method.name == method if callback else True
    assert (callback is None) == (schedule == "none")
    if callback is not None:
        assert callback.plan[-1].epoch < cfg.trainer.max_epochs
        last = cfg.pruning.schedule.steps[-1][1] if schedule == "explicit" else cfg.pruning.schedule.amount
        assert callback.plan[-1].target == pytest.approx(last)


@pytest.mark.parametrize("group", ["trainer", "logger"])
def test_trainer_and_logger_options(make_cfg, group):
    for option in _options(group):
        cfg = make_cfg(f"{group}={option}")
        OmegaConf.to_container(cfg[group], resolve=True)


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_experiments_compose(make_cfg, experiment):
    cfg = make_cfg(f"experiment={experiment}")
    check_config(cfg)
    instantiate_model(cfg)


def test_an_experiment_sets_top_level_keys_and_the_command_line_still_wins(make_cfg):
    """A sweep preset's ``name`` picks its folder (outputs/sweeps/<name>); config.yaml's own
    defaults must not override the preset, and the command line overrides both."""
    cfg = make_cfg("experiment=sweep_mnist_amounts")
    assert cfg.name == "mnist_amounts"
    assert make_cfg("experiment=records_methods").name == "records_methods"
    assert make_cfg("experiment=sweep_mnist_amounts", "name=mine").name == "mine"
    assert make_cfg().name == "default"


def test_incompatible_pair_is_one_clear_line(make_cfg):
    cfg = make_cfg("model=text", "data=mnist")
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    msg = str(err.value)
    assert "model=text" in msg and "data=mnist" in msg and "cnn+mnist" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("override", ["seed=x", "trainer.max_epochs=abc", "threads=many",
                                      "verbosty=quiet"])
def test_schema_rejects_bad_overrides_at_compose_time(make_cfg, override):
    with pytest.raises(ConfigCompositionException):
        make_cfg(override)


@pytest.mark.parametrize("amount", ["1.0", "-0.1", "1.5"])
def test_amount_outside_unit_interval(make_cfg, amount):
    cfg = make_cfg("pruning=one_shot", f"pruning.schedule.amount={amount}")
    with pytest.raises(ConfigError) as err:
        make_callback(cfg)
    assert str(err.value) == f"pruning.schedule.amount={float(amount)} must be a fraction in [0, 1)"


def test_schedule_longer_than_training(make_cfg):
    cfg = make_cfg("pruning=iterative", "trainer.max_epochs=4")
    with pytest.raises(ConfigError, match="max_epochs"):
        make_callback(cfg)


def test_non_monotonic_explicit_schedule(make_cfg):
    cfg = make_cfg("pruning=explicit", "pruning.schedule.steps=[[0,0.5],[1,0.3]]")
    with pytest.raises(ConfigError, match="must not decrease"):
        make_callback(cfg)


def test_hydra_folder_names_leave_out_exactly_the_no_effect_keys():
    from prunelab.paths import LAUNCHER_KEYS, NO_EFFECT_KEYS, has_no_effect

    cfg = OmegaConf.load(CONF / "config.yaml")
    excluded = list(cfg.hydra.job.config.override_dirname.exclude_keys)
    assert all(has_no_effect(k) for k in excluded), excluded
    assert set(NO_EFFECT_KEYS) <= set(excluded)
    assert any(k.startswith(LAUNCHER_KEYS[0]) for k in excluded)


def test_own_criterion_by_name_through_imports(make_cfg, tmp_path, monkeypatch):
    from prunelab.run import run

    from conftest import ROOT

    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    cfg = make_cfg("imports=[own_criterion]", "pruning=one_shot", "pruning.schedule.start_epoch=0",
                   "trainer=fast", "trainer.max_epochs=2", "pruning.schedule.amount=0.5",
                   "pruning.method._target_=prunelab.pruning.criteria.ByName",
                   "pruning.method.criterion=reverse_magnitude")
    r = run(cfg, tmp_path / "run")
    assert r["method"] == "reverse_magnitude"
    assert r["pruning_history"][0]["achieved"] == pytest.approx(0.5, abs=1e-4)
    # results.json holds exactly the schema's keys (the optional ones when measured)
    import dataclasses

    from prunelab.results import RESULT_KEYS, Results

    required = {f.name for f in dataclasses.fields(Results) if not f.metadata.get("omit_if_none")}
    assert required <= set(r) <= RESULT_KEYS and "macs_dense" in r and "latency_ms" not in r


def test_missing_import_is_one_line(make_cfg, tmp_path):
    from prunelab.run import run

    cfg = make_cfg("imports=[no_such_module_xyz]")
    with pytest.raises(ConfigError, match="imports: cannot import 'no_such_module_xyz'"):
        run(cfg, tmp_path / "run")
