"""Renamed modules, presets and keys: the new name works, and the name of the previous release
keeps working for this one with one deprecation line (prunelab.renamed, prunelab.legacy)."""

from __future__ import annotations

import ast
import copy
import re
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from prunelab.choices import check_command_line, make_loader
from prunelab.errors import CheckpointError, ConfigError
from prunelab.paths import CONF_DIR

from conftest import ROOT

SRC = ROOT / "src"
UNTIL = "works until the next release"
#: old import path -> the module it is now (written out here, not read from the code)
MODULES = {
    "prunelab.compat": "prunelab.pairing",
    "prunelab.lightning_ext": "prunelab.internals",
    "prunelab.logs": "prunelab.messages",
    "prunelab.loggers": "prunelab.curves",
    "prunelab.pruning.compact": "prunelab.pruning.compaction",
    "prunelab.compact": "prunelab.cli.compact",
}
PRESETS = {"seed_mnist": "article_mnist", "seed_imdb": "article_imdb"}
LN = ["pruning=one_shot", "pruning/method=ln_structured"]


# --------------------------------------------------------------------------- import paths


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _shims() -> set[str]:
    """The modules whose file only hands over to the module that replaced it."""
    return {_module_name(p) for p in (SRC / "prunelab").rglob("*.py")
            if "alias(__name__," in p.read_text()}


def test_every_old_import_path_has_its_row_here() -> None:
    assert _shims() == set(MODULES)


@pytest.mark.parametrize("old,new", MODULES.items())
def test_an_old_import_path_is_the_new_module_and_warns_once(old: str, new: str,
                                                             monkeypatch) -> None:
    import importlib

    monkeypatch.delitem(sys.modules, old, raising=False)  # as in a fresh process
    with pytest.warns(FutureWarning) as caught:
        __import__(old)  # an import statement's own machinery
    module = sys.modules[old]
    assert module is importlib.import_module(new)
    ours = [w for w in caught if old in str(w.message)]
    assert [str(w.message) for w in ours] == [f"{old} is now {new} (the old name {UNTIL})"]
    assert ours[0].filename == __file__  # the line that imported it, not the shim
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        __import__(old)  # the second import: no warning
        exec(f"from {old} import {next(n for n in vars(module) if not n.startswith('_'))}")


def _imported(path: Path) -> set[str]:
    """Every prunelab module a Python file imports (``from prunelab import logs`` included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return out


def test_prunelab_itself_uses_the_new_names_only() -> None:
    """Only the shims name an old module: code merged from before the rename fails here, not
    with a warning in every user's run."""
    shims = {SRC / (m.replace(".", "/") + ".py") for m in MODULES}
    files = [p for folder in ("src", "tests", "examples", "benchmarks", "scripts")
             for p in (ROOT / folder).rglob("*.py")
             if p not in shims and p != Path(__file__).resolve()]
    using = {str(p.relative_to(ROOT)): sorted(_imported(p) & set(MODULES)) for p in files}
    assert {k: v for k, v in using.items() if v} == {}
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, MODULES)) + r")\b(?!ion)")
    yamls = [p for folder in ("conf", "examples") for p in (ROOT / folder).rglob("*.yaml")]
    assert [str(p.relative_to(ROOT)) for p in yamls if pattern.search(p.read_text())] == []


# --------------------------------------------------------------------------- python -m prunelab.<command>


def test_python_m_prunelab_report_runs_the_command_with_one_deprecation_line(tmp_path) -> None:
    """The module form of 0.1 in a fresh process: the command runs, one line says the new form."""
    proc = subprocess.run([sys.executable, "-m", "prunelab.report", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: prunelab report" in proc.stdout
    assert proc.stderr.splitlines() == [
        f"warning: deprecated: python -m prunelab.report is now python -m prunelab report "
        f"(the old form {UNTIL})"]


@pytest.mark.parametrize("command", ["evaluate", "compact", "export", "search", "report"])
def test_each_old_module_form_runs_its_command(command: str, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", [f"prunelab.{command}", "--help"])
    name = f"prunelab.{command}"
    if getattr(sys.modules.get(name), "__name__", name) != name:  # imported as an alias before
        monkeypatch.delitem(sys.modules, name)  # as in a fresh process
    with warnings.catch_warnings(), pytest.raises(SystemExit) as done:
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module is imported already
        runpy.run_module(name, run_name="__main__", alter_sys=True)
    out, err = capsys.readouterr()
    assert done.value.code == 0 and f"usage: prunelab {command}" in out
    assert [ln for ln in err.splitlines() if "deprecated" in ln] == [
        f"warning: deprecated: python -m prunelab.{command} is now python -m prunelab {command} "
        f"(the old form {UNTIL})"]


# --------------------------------------------------------------------------- experiment=<old name>


def test_an_old_preset_name_composes_the_same_run(make_cfg) -> None:
    from prunelab.identity import result_config, upgraded

    for old, new in PRESETS.items():
        assert result_config(upgraded(make_cfg(f"experiment={old}"))) \
            == result_config(upgraded(make_cfg(f"experiment={new}"))), old


def test_an_old_preset_name_on_the_command_line_says_so_once(tmp_path) -> None:
    """A fresh process: the line comes before Hydra, once; the config is the article's recipe
    (conf/experiment/article_mnist.yaml: SGD 0.01 / 0.5, batch 64, 3 epochs, 50 % one-shot)."""
    proc = subprocess.run([sys.executable, "-m", "prunelab", "experiment=seed_mnist", "--cfg", "job"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"warning: deprecated: experiment=seed_mnist is now experiment=article_mnist "
        f"(the old name {UNTIL})"]
    cfg = yaml.safe_load(proc.stdout)
    assert (cfg["model"]["optimizer"]["lr"], cfg["model"]["optimizer"]["momentum"],
            cfg["data"]["batch_size"], cfg["trainer"]["max_epochs"],
            cfg["pruning"]["schedule"]["amount"]) == (0.01, 0.5, 64, 3, 0.5)
    assert not (tmp_path / "outputs").exists()


def test_the_command_line_check_names_each_old_preset_once_and_lists_only_new_names() -> None:
    from prunelab.cli.help import options_with_descriptions

    assert check_command_line(CONF_DIR, ["experiment=article_mnist"]) == []
    notes = check_command_line(CONF_DIR, ["-m", "experiment=seed_mnist,seed_imdb,seed_mnist"])
    assert notes == [f"experiment={o} is now experiment={n} (the old name {UNTIL})"
                     for o, n in PRESETS.items()]
    with pytest.raises(ConfigError) as err:
        check_command_line(CONF_DIR, ["experiment=seed_mnsit"])
    assert "article_mnist" in str(err.value) and "seed_mnist" not in str(err.value)
    listed = [n for n, _ in options_with_descriptions("experiment", loader=make_loader(CONF_DIR))]
    assert {"article_mnist", "article_imdb"} <= set(listed) and not set(PRESETS) & set(listed)


# --------------------------------------------------------------------------- pruning.method.n


def test_the_old_norm_key_moves_to_norm_with_one_line_and_is_the_same_run(make_cfg,
                                                                          caplog) -> None:
    from prunelab.identity import result_config, upgraded

    with caplog.at_level("WARNING", logger="prunelab"):
        old = upgraded(make_cfg(*LN, "pruning.method.n=1"))
    assert old.pruning.method.norm == 1 and "n" not in old.pruning.method
    assert [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()] == [
        "deprecated: pruning.method.n is now pruning.method.norm (the old spelling works until "
        "the next release)"]
    new = result_config(upgraded(make_cfg(*LN, "pruning.method.norm=1")))
    assert result_config(old) == new
    assert result_config(upgraded(make_cfg(*LN))) != new  # n=1 was not dropped: 2 is the default


def test_the_old_norm_key_passes_the_check_before_any_job() -> None:
    assert check_command_line(CONF_DIR, [*LN, "pruning.method.n=1"]) == []
    with pytest.raises(ConfigError, match="pruning.method.n: not a key of l1_unstructured"):
        check_command_line(CONF_DIR, ["pruning=one_shot", "pruning.method.n=1"])


def test_a_checkpoint_saved_with_n_resumes_the_run_spelt_with_norm(make_cfg, tmp_path) -> None:
    import torch

    from prunelab.identity import resolve_ckpt, result_config, upgraded

    now = result_config(upgraded(make_cfg(*LN, "pruning.method.norm=1")))
    saved = copy.deepcopy(now)
    saved["pruning"]["method"]["n"] = saved["pruning"]["method"].pop("norm")  # before the rename
    path = tmp_path / "last.ckpt"
    torch.save({"callbacks": {"RunState": {"config": saved}}, "epoch": 1, "global_step": 8}, path)
    assert resolve_ckpt(str(path), tmp_path, now).epoch == 2
    other = result_config(upgraded(make_cfg(*LN, "pruning.method.norm=3")))
    with pytest.raises(CheckpointError, match=r"pruning.method.norm=1 in the checkpoint, 3 now"):
        resolve_ckpt(str(path), tmp_path, other)


def test_a_0_1_config_with_n_converts_to_norm() -> None:
    from prunelab.legacy import upgrade

    old = yaml.safe_load((ROOT / "tests/fixtures/old_runs/agp/.hydra/config.yaml").read_text())
    old["pruning"]["method"] = {"name": "ln_structured", "scope": "layer", "n": 1.0, "dim": 0,
                                "grad_batches": 32, "iterations": None}
    new, notes = upgrade(old)
    assert notes == []  # a saved config is converted silently
    assert new["pruning"]["method"] == {"_target_": "prunelab.pruning.criteria.LnStructured",
                                        "scope": "layer", "norm": 1.0, "dim": 0}
