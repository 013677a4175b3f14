"""One typed definition per option: the schema comes from the signatures of the code that uses
the keys, each value is checked once, and the results schema is the one the files hold."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.errors import ConfigCompositionException

from prunelab import config as C
from prunelab.errors import ConfigError
from prunelab.pruning.callback import PruningCallback
from prunelab.pruning.schedules import build_plan
from prunelab.pruning.targets import find_targets
from prunelab.run import make_callback

from conftest import ROOT


class BudgetedCallback(PruningCallback):
    """The callback with two options more, added the one way an option is added: a typed
    keyword argument with its default."""

    def __init__(self, plan: Any, budget_fraction: float = 1.0, warmup_epochs: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(plan, **kwargs)
        self.budget_fraction, self.warmup_epochs = budget_fraction, warmup_epochs


@pytest.fixture
def budgeted_schema():
    """The config schema generated from BudgetedCallback, for the duration of one test."""
    C.register(C.pruning_schema(callback=C.signature_params(BudgetedCallback)))
    yield
    C.register()


@pytest.mark.parametrize("source,fn,one", [(C.CALLBACK_SOURCE, PruningCallback, "grad_batches"),
                                           (C.PLAN_SOURCE, build_plan, "amount"),
                                           (C.TARGETS_SOURCE, find_targets, "skip_last")])
def test_signatures_read_from_source_are_the_imported_ones(source, fn, one):
    params = C.source_params(source)
    assert params == C.signature_params(fn)
    assert one in {p.name for p in params}


def test_every_schema_key_is_a_function_argument_or_the_pipeline_s():
    callback = {p.name for p in C.source_params(C.CALLBACK_SOURCE)}
    plan = {p.name for p in C.source_params(C.PLAN_SOURCE)}
    targets = {p.name for p in C.source_params(C.TARGETS_SOURCE)}
    schema = C.pruning_schema()
    keys = {f.name for f in dataclasses.fields(schema)}
    method = {f.name for f in dataclasses.fields(schema.__dataclass_fields__["method"].type)}
    target_keys = {f.name for f in dataclasses.fields(schema.__dataclass_fields__["targets"].type)}
    assert keys == (plan - {"kind"}) | (callback - set(C.METHOD_KEYS) - set(C.CALLBACK_FROM_OTHER_KEYS)
                                        - set(C.PYTHON_ONLY)) | set(C.PIPELINE_KEYS) | {"method", "targets"}
    assert method == set(C.METHOD_KEYS) | {"name", "description"}
    assert target_keys == targets - {"model"}


def test_a_new_callback_argument_is_a_typed_config_key(make_cfg, budgeted_schema):
    cfg = make_cfg("pruning=one_shot", "pruning.budget_fraction=0.25", "pruning.warmup_epochs=2")
    assert cfg.pruning.budget_fraction == 0.25 and cfg.pruning.warmup_epochs == 2
    callback = make_callback(cfg, BudgetedCallback)
    assert (callback.budget_fraction, callback.warmup_epochs) == (0.25, 2)
    assert callback.plan[-1].target == 0.5  # the other keys still reach it
    default = make_callback(make_cfg("pruning=one_shot"), BudgetedCallback)
    assert (default.budget_fraction, default.warmup_epochs) == (1.0, None)  # the signature's
    with pytest.raises(ConfigCompositionException, match="budget_fraction"):
        make_cfg("pruning.budget_fraction=abc")
    with pytest.raises(ConfigCompositionException, match="warmup_epochs"):
        make_cfg("pruning.warmup_epochs=1.5")


def test_the_generated_schema_refuses_bad_types_and_unknown_keys(make_cfg):
    for bad in ("pruning.amount=abc", "pruning.method.grad_batches=many", "pruning.rewind=maybe",
                "pruning.targets.skip_last=7x", "pruning.targets.types=Conv2d", "pruning.amout=0.5",
                "trainer.max_epochs=abc"):
        with pytest.raises(ConfigCompositionException):
            make_cfg(bad)


def test_a_key_the_callback_does_not_take_is_one_line(make_cfg):
    with pytest.raises(ConfigError) as err:
        make_callback(make_cfg("pruning=one_shot", "+pruning.flux=3"))
    assert "flux" in str(err.value) and "\n" not in str(err.value)


def test_the_trainer_section_takes_any_trainer_argument(make_cfg):
    cfg = make_cfg("trainer.gradient_clip_val=0.5", "trainer.accumulate_grad_batches=2")
    assert cfg.trainer.gradient_clip_val == 0.5 and cfg.trainer.accumulate_grad_batches == 2


@pytest.mark.parametrize("annotation,expected", [
    ("int", int), ("str | None", str | None), ("Sequence[str]", list[str]),
    ("Optional[float]", float | None), ("Mapping[str, int] | None", dict[str, int] | None),
    ("tuple[int, ...]", list[int]), ("int | str", Any), ("prune.BasePruningMethod | None", Any),
    ('Literal["layer", "global"]', str),
])
def test_annotation_to_config_type(annotation, expected):
    assert C.config_type(annotation) == expected


def test_every_pruning_key_is_documented():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    schema = C.pruning_schema()
    keys = [f"pruning.{f.name}" for f in dataclasses.fields(schema) if f.name not in ("method", "targets")]
    for sub in ("method", "targets"):
        keys += [f"pruning.{sub}.{f.name}" for f in dataclasses.fields(schema.__dataclass_fields__[sub].type)]
    missing = [k for k in keys if f"`{k}`" not in doc]
    assert not missing, f"docs/configuration.md does not document {missing}"


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
    with pytest.raises(CheckpointError, match="pruning.monitor=None in the checkpoint, 'val_loss'"):
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
           "outputs.py", "export/__main__.py"}
    printing = [str(p.relative_to(src)) for p in src.rglob("*.py")
                if re.search(r"(?<![\w.])print\(", p.read_text())]
    library = [p for p in printing if p not in cli and Path(p).parts[0] != "cli"]
    assert not library, library


@pytest.mark.parametrize("override,needle", [
    ("pruning.amount=abc", "pruning.amount=abc: Value 'abc' of type 'str' could not be converted"),
    ("pruning.amout=0.5", "pruning.amout: no such key; valid, closest first: pruning.amount,"),
    ("pruning.method.grad_batch=8", "valid, closest first: pruning.method.grad_batches"),
    ("seed=x", "seed=x: Value 'x'"),
])
def test_a_bad_key_or_type_on_the_command_line_is_one_line(override, needle):
    from prunelab.choices import check_command_line
    from prunelab.paths import CONF_DIR

    with pytest.raises(ConfigError) as err:
        check_command_line(CONF_DIR, [override])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_trainer_key_lightning_does_not_take_is_one_line(make_cfg):
    from prunelab.run import trainer_kwargs

    assert trainer_kwargs(make_cfg("trainer.gradient_clip_val=0.5"))["gradient_clip_val"] == 0.5
    with pytest.raises(ConfigError, match=r"trainer.max_epoch is not an argument of "
                                          r"lightning.Trainer \(closest: max_epochs"):
        trainer_kwargs(make_cfg("trainer.max_epoch=2"))
