"""One typed definition per option: a node's keys are its ``_target_``'s arguments, a key no one
takes is one line naming it and the valid ones, each value is checked once by the object that
takes it, and the results schema is the one the files hold."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from prunelab import components
from prunelab.errors import ConfigError
from prunelab.pruning import PruningCallback
from prunelab.run import check_nodes, make_callback

from conftest import ROOT


class BudgetedCallback(PruningCallback):
    """The callback with two options more, added the one way an option is added: a typed
    keyword argument with its default."""

    def __init__(self, schedule: Any, budget_fraction: float = 1.0, warmup_epochs: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(schedule, **kwargs)
        if not 0 < budget_fraction <= 1:
            raise ConfigError(f"budget_fraction={budget_fraction} must be in (0, 1]")
        self.budget_fraction, self.warmup_epochs = budget_fraction, warmup_epochs


OWN = "pruning._target_=test_config_schema.BudgetedCallback"


def test_a_new_callback_argument_is_a_config_key(make_cfg):
    cfg = make_cfg("pruning=one_shot", OWN, "pruning.budget_fraction=0.25", "pruning.warmup_epochs=2")
    callback, _ = make_callback(cfg)
    assert (callback.budget_fraction, callback.warmup_epochs) == (0.25, 2)
    assert callback.plan[-1].target == 0.5  # the other keys still reach it
    default, _ = make_callback(make_cfg("pruning=one_shot", OWN))
    assert (default.budget_fraction, default.warmup_epochs) == (1.0, None)  # the signature's
    with pytest.raises(ConfigError, match=r"^pruning.budget_fraction=2.0 must be in \(0, 1\]$"):
        make_callback(make_cfg("pruning=one_shot", OWN, "pruning.budget_fraction=2.0"))
    # the subclass passes **kwargs on: it takes the callback's keys, and no others
    with pytest.raises(ConfigError, match="pruning.budget_fractoin: not a key of "):
        check_nodes(make_cfg("pruning=one_shot", OWN, "+pruning.budget_fractoin=0.5"))


@pytest.mark.parametrize("overrides,message", [
    (["pruning=agp", "pruning.schedule.rate=0.5"],
     "pruning.schedule.rate: not a key of agp; valid: amount, start_epoch, every, n_steps, initial"),
    (["pruning.amout=0.5"], "pruning.amout: not a key of prunelab.pruning.PruningCallback; valid"),
    (["pruning/method=taylor", "pruning.method.grad_batch=8"],
     "pruning.method.grad_batch: not a key of taylor; valid: scope, grad_batches"),
    (["pruning/method=l1_unstructured", "pruning.method.grad_batches=8"],
     "pruning.method.grad_batches: not a key of l1_unstructured; valid: scope"),
    (["pruning.targets.skip_lst=false"], "pruning.targets.skip_lst: not a key of "
                                         "prunelab.pruning.targets.Targets; valid: types, include"),
    (["pruning=none", "pruning.schedule.amount=0.5"], "pruning.schedule.amount: not a key of none; "
                                                      "valid: (none)"),
    (["logger.csv.flush=3"], "logger.csv.flush: not a key of prunelab.curves.csv_logger; valid: "
                             "resume_epoch"),
    (["pruning=one_shot", "pruning.schedule._target_=prunelab.pruning.schedules.Nope"],
     "pruning.schedule._target_='prunelab.pruning.schedules.Nope' cannot be imported"),
])
def test_a_key_no_one_takes_is_one_line_before_anything_is_built(make_cfg, overrides, message):
    with pytest.raises(ConfigError) as err:
        check_nodes(make_cfg(*overrides))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_the_issue_s_example(make_cfg):
    """``pruning=agp pruning.rate=0.5`` used to run and ignore ``rate``."""
    with pytest.raises(ConfigError) as err:
        check_nodes(make_cfg("pruning=agp", "pruning.rate=0.5"))
    assert str(err.value) == ("pruning.rate: not a key of agp; valid: amount, start_epoch, every, "
                              "n_steps, initial")


def test_a_missing_required_key_is_one_line(make_cfg):
    with pytest.raises(ConfigError, match=r"^pruning.schedule: agp needs n_steps"):
        check_nodes(make_cfg("pruning=agp", "~pruning.schedule.n_steps"))


@pytest.mark.parametrize("override,message", [
    ("pruning.schedule.amount=abc", "pruning.schedule.amount='abc' must be a fraction in [0, 1)"),
    ("pruning.schedule.n_steps=0", "pruning.schedule.n_steps=0 must be an integer in [1, 10000]"),
    ("pruning.method.scope=everywhere", "pruning.method.scope='everywhere' is not a pruning scope"),
    ("pruning.rewind_epoch=9", "pruning.rewind_epoch=9 is after the first pruning step"),
    ("pruning.eval_batches=-1", "pruning.eval_batches=-1: must be an integer in [0, "),
    ("pruning.targets.types=[Conv9d]", "pruning.targets.types has unknown module type(s) ['Conv9d']"),
])
def test_a_bad_value_is_refused_by_the_object_that_takes_it(make_cfg, override, message):
    with pytest.raises(ConfigError) as err:
        make_callback(make_cfg("pruning=agp", "pruning.rewind=true", override))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_the_trainer_section_takes_any_trainer_argument(make_cfg):
    cfg = make_cfg("trainer.gradient_clip_val=0.5", "trainer.accumulate_grad_batches=2")
    assert cfg.trainer.gradient_clip_val == 0.5 and cfg.trainer.accumulate_grad_batches == 2
    check_nodes(cfg)


def test_a_trainer_key_lightning_does_not_take_is_one_line(make_cfg):
    with pytest.raises(ConfigError, match=r"^trainer.max_epoch: not a key of lightning.Trainer; "
                                          r"valid, closest first: max_epochs"):
        check_nodes(make_cfg("trainer.max_epoch=2"))
    with pytest.raises(ConfigError, match=r"^trainer.callbacks: not a key of lightning.Trainer"):
        check_nodes(make_cfg("+trainer.callbacks=[]"))  # prunelab passes its own


def test_every_key_of_every_built_in_component_is_documented():
    from prunelab.pruning.criteria.methods import BUILT_IN as METHODS
    from prunelab.pruning.dynamic import SET
    from prunelab.pruning.schedules import BUILT_IN as SCHEDULES
    from prunelab.pruning.targets import Targets

    doc = (ROOT / "docs" / "guide" / "configuration.md").read_text()
    keys = {f"pruning.{k}" for k in components.parameters(PruningCallback)[0]
            if k not in ("schedule", "method", "targets", "custom")}
    keys |= {f"pruning.targets.{k}" for k in components.parameters(Targets)[0]}
    for cls in [*SCHEDULES.values(), SET]:
        keys |= {f"pruning.schedule.{k}" for k in components.parameters(cls)[0]}
    for cls in METHODS.values():
        keys |= {f"pruning.method.{k}" for k in components.parameters(cls)[0]}
    missing = sorted(k for k in keys if f"`{k}`" not in doc)
    assert not missing, f"docs/guide/configuration.md does not document {missing}"


def test_canonical_completes_nodes_with_their_defaults():
    left = {"_target_": "prunelab.pruning.schedules.AGP", "amount": 0.5, "n_steps": 2}
    right = {**left, "initial": 0.0, "every": 1}
    assert components.canonical(left) == components.canonical(right)
    assert components.canonical(left)["start_epoch"] == 0
    targets = components.canonical({"_target_": "prunelab.pruning.targets.Targets"})
    assert targets["types"] == ["Conv2d", "Linear"] and targets["skip_last"] is True


def test_a_checkpoint_from_before_an_option_existed_still_resumes(make_cfg, tmp_path):
    """An option added since a checkpoint was written: its default is no difference, any other
    value is."""
    from prunelab.errors import CheckpointError
    from prunelab.run import resolve_ckpt, result_config

    config = result_config(make_cfg("pruning=one_shot"))
    old = {**config, "pruning": {k: v for k, v in config["pruning"].items() if k != "monitor"}}
    path = tmp_path / "last.ckpt"
    torch.save({"callbacks": {"RunState": {"config": old}}, "epoch": 1, "global_step": 8}, path)
    assert resolve_ckpt(str(path), tmp_path, config).epoch == 2
    changed = result_config(make_cfg("pruning=one_shot", "pruning.monitor=val_loss"))
    with pytest.raises(CheckpointError, match="pruning.monitor='val_acc' in the checkpoint, 'val_loss'"):
        resolve_ckpt(str(path), tmp_path, changed)


def test_results_readers_use_the_schema_s_keys():
    from prunelab.report import CSV_COLUMNS
    from prunelab.results import FAILURE_KEYS, RESULT_KEYS

    derived = {"folder", "drop_pts", "budget_reached"}  # the report's own (budget_reached: budget.reached)
    assert set(CSV_COLUMNS) - derived <= RESULT_KEYS | FAILURE_KEYS


def test_library_code_does_not_print():
    """Messages go through the ``prunelab`` logger; only command-line modules print."""
    src = ROOT / "src" / "prunelab"
    cli = {"__main__.py", "evaluate.py", "compact.py", "report.py", "search.py", "cli_summary.py",
           "outputs.py", "study.py", "export/__main__.py"}
    printing = [str(p.relative_to(src)) for p in src.rglob("*.py")
                if re.search(r"(?<![\w.])print\(", p.read_text())]
    library = [p for p in printing if p not in cli and Path(p).parts[0] != "cli"]
    assert not library, library


@pytest.mark.parametrize("argv,needle", [
    (["seed=x"], "seed=x: Value 'x'"),
    (["verbosty=quiet"], "verbosty: no such key; valid, closest first: verbosity,"),
    (["pruning=agp", "pruning.rate=0.5"],
     "pruning.rate: not a key of agp; valid: amount, start_epoch, every, n_steps, initial"),
    (["pruning/method=taylor", "pruning.method.grad_batch=8"],
     "pruning.method.grad_batch: not a key of taylor; valid: scope, grad_batches"),
    (["-m", "pruning.amout=0.5,0.9"], "pruning.amout: not a key of prunelab.pruning.PruningCallback"),
])
def test_a_bad_key_on_the_command_line_is_one_line_before_any_job(argv, needle):
    from prunelab.choices import check_command_line
    from prunelab.paths import CONF_DIR

    with pytest.raises(ConfigError) as err:
        check_command_line(CONF_DIR, argv)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_the_command_line_check_leaves_help_alone():
    from prunelab.choices import check_command_line
    from prunelab.paths import CONF_DIR

    check_command_line(CONF_DIR, ["--help", "pruning.amout=0.5"])  # help needs no valid job


def test_schedules_and_methods_are_frozen_dataclasses():
    from prunelab.pruning.criteria.methods import BUILT_IN as METHODS
    from prunelab.pruning.schedules import BUILT_IN as SCHEDULES

    for cls in [*SCHEDULES.values(), *METHODS.values()]:
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls


def test_the_command_line_check_keeps_a_preset_s_keys_for_its_own_schedule():
    """``experiment=study_mnist pruning=none`` (the study's dense baseline) passes the check
    before any job; the same key typed on the command line does not."""
    from prunelab.choices import check_command_line
    from prunelab.paths import CONF_DIR

    check_command_line(CONF_DIR, ["experiment=study_mnist", "pruning=none"])
    check_command_line(CONF_DIR, ["experiment=study_mnist", "pruning=agp", "pruning.schedule.initial=0.6"])
    with pytest.raises(ConfigError, match="^pruning.schedule.n_steps: not a key of none"):
        check_command_line(CONF_DIR, ["experiment=study_mnist", "pruning=none",
                                      "pruning.schedule.n_steps=3"])
