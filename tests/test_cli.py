"""The command line explains itself: summaries, one message each, names that exist, --help, plots."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from inprocess import prunelab_in_process
from omegaconf import OmegaConf

from prunelab import hydra_callbacks
from prunelab import report as R
from prunelab.choices import check_command_line
from prunelab.cli import report as report_cli
from prunelab.cli import summary as cli_summary
from prunelab.errors import ConfigError
from prunelab.paths import CONF_DIR

from conftest import CONF, TINY

# the earlier names of renamed presets: their YAML includes the new one; never listed
OLD_NAMES = {"seed_mnist", "seed_imdb"}
PRUNED = ["pruning=one_shot", "pruning.schedule.start_epoch=0", "trainer=fast", "trainer.max_epochs=2",
          "pruning.schedule.amount=0.6"]


def prunelab(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "prunelab", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _norm(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def finished(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """One pruned tiny run through the real entry point: (run dir, the process)."""
    cwd = tmp_path_factory.mktemp("cli")
    run_dir = cwd / "run"
    proc = prunelab(*PRUNED, f"data_dir={tiny_data}", *TINY, f"hydra.run.dir={run_dir}", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


# --------------------------------------------------------------------------- end of a run


def test_run_summary_shows_the_numbers_of_results_json(finished) -> None:
    run_dir, proc = finished
    r = json.loads((run_dir / "results.json").read_text())
    out = _norm(proc.stderr)
    assert "prunelab: run summary" in out and "ok — finished" in out
    assert f"test accuracy {100 * r['test_acc']:.2f} % (loss {r['test_loss']:.4f})" in out
    assert f"{100 * r['sparsity_global']:.2f} % of the targeted weights are zero (target 60.00 %)" in out
    assert f"non-zero params {r['params_nonzero']:,} of {r['params_total']:,}" in out
    assert f"({100 * r['macs_effective'] / r['macs_dense']:.1f} %) per example" in out
    assert f"({r['epochs']} epochs)" in out
    # paths below the working directory are shown relative to it, ready to paste
    assert "run directory: run " in out
    assert "python -m prunelab evaluate run " in out
    assert "python -m prunelab report run " in out
    # the same Hydra settings (hydra.run.dir) as the run, so it resumes that run
    assert f"python -m prunelab hydra.run.dir={run_dir} pruning=one_shot pruning.schedule.start_epoch=0 " \
        "trainer=fast" in out


def test_a_run_done_already_shows_its_stored_results(finished, tiny_data: Path,
                                                     tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "run"  # a copy: the other tests read the shared run's results.json
    shutil.copytree(finished[0], run_dir)
    stored = json.loads((run_dir / "results.json").read_text())
    stored["test_acc"] = 0.123456  # the summary must come from the file, not from a new test
    (run_dir / "results.json").write_text(json.dumps(stored))
    proc = prunelab_in_process(*PRUNED, f"data_dir={tiny_data}", *TINY,
                               f"hydra.run.dir={run_dir}", cwd=run_dir.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = _norm(proc.stderr)
    assert "ok — done already (not repeated)" in out
    assert "test accuracy 12.35 %" in out


def test_summary_rows_come_from_results_only() -> None:
    results = {
        "status": "ok", "model": "cnn", "data": "mnist", "schedule": "one_shot",
        "method": "ln_structured", "amount": 0.5, "seed": 3, "test_acc": 0.98765,
        "test_loss": 0.04321, "sparsity_global": 0.49876, "params_total": 431080,
        "params_nonzero": 216543, "macs_dense": 2293000, "macs_effective": 1111111,
        "params_compact": 111222, "macs_compact": 600000,
        "latency_ms": {"dense": {"bs1": 0.5}, "masked": {"bs1": 0.5}, "compact": {"bs1": 0.25}},
        "fit_seconds": 125.0, "epochs": 4, "overrides": ["pruning=one_shot"],
    }
    text = _norm(cli_summary.render(results, "/somewhere/run", state=cli_summary.RESUMED))
    for want in ("ok — resumed and finished", "98.77 % (loss 0.0432)", "49.88 % of the targeted",
                 "216,543 of 431,080 (50.2 %)", "1.11M of 2.29M (48.5 %)", "seed 3",
                 "111k of 431k (25.8 %) params, 600k MACs", "bs1: 0.5 → 0.25 ms (2.00×)",
                 "2 min 05 s (4 epochs)", "python -m prunelab pruning=one_shot"):
        assert want in text, want
    assert "prunelab compact" not in text  # compacted already
    not_compacted = {k: v for k, v in results.items() if k not in ("params_compact", "latency_ms")}
    assert "python -m prunelab compact /somewhere/run" in cli_summary.render(not_compacted,
                                                                           "/somewhere/run")
    dense = {**results, "schedule": "none", "method": "dense", "params_compact": None,
             "latency_ms": None}
    text = _norm(cli_summary.render(dense, "/r"))
    assert "dense (no pruning)" in text and "sparsity" not in text and "compact" not in text


def test_run_state_before_the_run(tmp_path: Path) -> None:
    assert cli_summary.run_state(tmp_path) == cli_summary.FRESH
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert cli_summary.run_state(tmp_path) == cli_summary.RESUMED
    assert cli_summary.run_state(tmp_path, None) == cli_summary.FRESH
    (tmp_path / "results.json").write_text("{}")
    assert cli_summary.run_state(tmp_path) == cli_summary.DONE_ALREADY


# --------------------------------------------------------------------------- quiet useful logs


def test_every_message_once_and_no_ads(finished) -> None:
    _, proc = finished
    lines = [ln.strip() for ln in proc.stderr.splitlines()]
    counted = Counter(ln for ln in lines if re.search(r"[a-z]{3}", ln))  # skip table rules
    twice = {ln: n for ln, n in counted.items() if n > 1}
    assert not twice, twice
    assert "epoch 0: pruned to 0.6000" in proc.stderr  # prunelab's own progress, once
    for noise in ("litlogger", "💡", "GPU available", "weights_only", "LeafSpec",
                  "Experiment logs directory", "Total FLOPs"):
        assert noise not in proc.stderr + proc.stdout, noise
    log = (Path(finished[0]) / "run.log").read_text()
    assert "epoch 0: pruned to 0.6000" in log and "litlogger" not in log


def test_quiet_prints_only_the_summary(tiny_data: Path, tmp_path: Path) -> None:
    proc = prunelab_in_process(*PRUNED, f"data_dir={tiny_data}", *TINY, "verbosity=quiet",
                               f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "prunelab: run summary" in proc.stderr
    assert "epoch 0: pruned" not in proc.stderr  # progress is hidden
    assert "epoch 0: pruned" in (tmp_path / "run" / "run.log").read_text()  # but logged
    # verbosity changes what is printed, never which run this is
    assert not any("verbosity" in p.name for p in tmp_path.rglob("*"))


def test_bad_verbosity_is_one_line(tmp_path: Path) -> None:
    proc = prunelab("verbosity=loud", "trainer.fast_dev_run=true",
                    f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("prunelab: error: verbosity=loud is not one of quiet, "
                                   "normal, debug")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- names that exist


def test_two_hydra_modes_at_once_are_one_line(tmp_path) -> None:
    """``-m --cfg hydra``: Hydra's ValueError traceback before; one line and exit 2 now."""
    proc = subprocess.run([sys.executable, "-m", "prunelab", "-m", "--cfg", "hydra"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "prunelab: error: -m/--multirun and --cfg given together; use one of --run, "
        "-m/--multirun, --cfg, --info, --shell-completion at a time"]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("args, bad, first", [
    (["experiment=imdb_99_9"], "experiment=imdb_99_9", None),
    (["-m", "seed=0,1", "experiment=study_mnist,study_mnsit"], "experiment=study_mnsit",
     "study_mnist"),
    (["-m", "pruning/method=l1_unstructured,globl_magnitude"], "pruning/method=globl_magnitude",
     "global_magnitude"),
])
def test_a_name_that_does_not_exist_stops_before_any_work(tmp_path: Path, args, bad, first):
    proc = prunelab(*args, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert err[0].startswith(f"prunelab: error: {bad}: no such option")
    listed = err[0].split("closest first: ")[1].split(", ")
    group = bad.split("=")[0]
    on_disk = sorted(p.stem for p in (CONF / group).glob("*.yaml") if p.stem not in OLD_NAMES)
    assert sorted(listed) == on_disk
    if first:
        assert listed[0] == first
    assert not (tmp_path / "outputs").exists()  # no run or sweep folder was made


@pytest.mark.parametrize("args, bad, first", [
    (["experiment=study_mnsit"], "experiment=study_mnsit", "study_mnist"),
    (["pruning=iterativ", "seed=1"], "pruning=iterativ", "iterative"),
    (["model=cnn", "data=mnsit"], "data=mnsit", "mnist"),
    (["-m", "hydra/launcher=jobib"], "hydra/launcher=jobib", "joblib"),
    (["trainer=fats"], "trainer=fats", "fast"),
])
def test_every_group_choice_is_checked(args, bad, first) -> None:
    with pytest.raises(ConfigError) as err:
        check_command_line(CONF_DIR, args)
    assert str(err.value).startswith(f"{bad}: no such option")
    assert str(err.value).split("closest first: ")[1].split(", ")[0] == first


def test_options_of_a_users_config_dir_count(tmp_path: Path) -> None:
    mine = tmp_path / "myconf" / "experiment"
    mine.mkdir(parents=True)
    (mine / "mine.yaml").write_text("# @package _global_\nseed: 7\n")
    check_command_line(CONF_DIR, ["--config-dir", str(tmp_path / "myconf"), "experiment=mine"])
    with pytest.raises(ConfigError, match="experiment=mine: no such option"):
        check_command_line(CONF_DIR, ["experiment=mine"])


def test_a_presets_sweep_values_are_checked_too(tmp_path: Path) -> None:
    mine = tmp_path / "myconf" / "experiment"
    mine.mkdir(parents=True)
    (mine / "grid.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n"
        "      pruning/method: l1_unstructured,taylr\n")
    with pytest.raises(ConfigError, match=r"pruning/method=taylr: .*did you mean taylor"):
        check_command_line(CONF_DIR, ["-m", "--config-dir", str(tmp_path / "myconf"),
                                      "experiment=grid"])


# --------------------------------------------------------------------------- --help


def _descriptions(pattern: str, section: str | None) -> dict[str, str]:
    out = {}
    for path in sorted(CONF.glob(pattern)):
        if path.stem in OLD_NAMES:
            continue
        cfg = OmegaConf.load(path)
        out[path.stem] = cfg[section].description if section else cfg.description
    return out


def test_help_lists_every_method_and_schedule_with_its_description(tmp_path: Path) -> None:
    proc = prunelab("--help", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = _norm(proc.stdout)
    assert not proc.stdout.startswith("__main__ is powered by Hydra")
    methods = _descriptions("pruning/method/*.yaml", None)
    schedules = _descriptions("pruning/*.yaml", "pruning")
    presets = _descriptions("experiment/*.yaml", None)
    assert len(methods) >= 7 and len(schedules) >= 7 and len(presets) >= 5
    for name, desc in {**methods, **schedules, **presets}.items():
        assert desc and len(desc) < 120, name  # one line each
        assert f"{name} {_norm(desc)}" in text, name
    assert not [name for name in OLD_NAMES if f" {name} " in text]
    section = text.split("== Examples ==")[1]
    for example in ("python -m prunelab pruning=", "python -m prunelab -m ", "resumes",
                    "python -m prunelab report", "python -m prunelab search"):
        assert example in section, example
    assert "--shell-completion install=bash" in text and "README.md" in text
    from prunelab.cli import COMMANDS, command_summary

    commands = text.split("== Commands")[1].split("== Configuration groups")[0]
    for name in COMMANDS:  # every subcommand, with the first line of its docstring
        assert f"{name} {_norm(command_summary(name))}" in commands, name


def test_descriptions_are_no_part_of_a_runs_identity(make_cfg) -> None:
    from prunelab.run import result_config

    cfg = make_cfg("pruning=iterative")
    changed = make_cfg("pruning=iterative", "pruning.description=another text",
                       "pruning.method.description=x", "model.description=y", "verbosity=debug")
    assert result_config(cfg) == result_config(changed)
    # keys this version adds to the config are no part of it either: a checkpoint written by an
    # earlier version, without them, still resumes
    for key in ("description", "verbosity", "enable_model_summary"):
        assert key not in json.dumps(result_config(cfg)), key


@pytest.mark.parametrize("command", ["report", "evaluate", "compact", "search", "export"])
def test_tool_help_has_description_options_and_examples(command: str, capsys) -> None:
    from prunelab.cli import main

    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    head, _, tail = capsys.readouterr().out.partition("examples:")
    assert f"usage: prunelab {command}" in head and "--verbosity" in head
    assert tail.count(f"prunelab {command}") >= 1
    assert "Full reference: docs/" in tail


def test_subcommands_are_one_registry_of_modules_with_main() -> None:
    """Each name leads to a module under prunelab.cli whose main(argv) returns the exit status;
    the library modules keep no command line of their own."""
    import importlib
    import inspect

    from prunelab.cli import COMMANDS, command_module, command_summary

    assert set(COMMANDS) == {"evaluate", "compact", "export", "report", "search", "sensitivity"}
    for name, module in COMMANDS.items():
        assert module.startswith("prunelab.cli."), name
        assert list(inspect.signature(command_module(name).main).parameters) == ["argv"], name
        assert command_summary(name) and "\n" not in command_summary(name), name
    for library in ("prunelab.report", "prunelab.search", "prunelab.evaluate", "prunelab.export"):
        assert not hasattr(importlib.import_module(library), "main"), library


def test_a_subcommand_added_to_the_registry_runs_and_is_listed(monkeypatch, capsys) -> None:
    """Another command is one registry line: dispatched by name, listed by --help."""
    import types

    from prunelab import cli
    from prunelab.cli.help import format_commands

    mod = types.ModuleType("prunelab_test_sensitivity")
    mod.__doc__ = "``prunelab sensitivity RUN``: per-layer accuracy when each layer is pruned alone."
    mod.main = lambda argv: print("got", argv) or 3
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(cli.COMMANDS, "sensitivity", mod.__name__)
    with pytest.raises(SystemExit) as done:
        cli.main(["sensitivity", "outputs/runs/x", "--flag"])
    assert done.value.code == 3 and capsys.readouterr().out == "got ['outputs/runs/x', '--flag']\n"
    assert "sensitivity  per-layer accuracy when each layer is pruned alone" in format_commands(200)


def test_python_m_prunelab_runs_a_subcommand(tmp_path: Path) -> None:
    """The real entry point: `python -m prunelab evaluate` reaches the command, not Hydra."""
    proc = prunelab("evaluate", str(tmp_path / "missing"), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"prunelab evaluate: error: {tmp_path / 'missing'} does not exist: give a run directory "
        "or a .ckpt file"]
    assert not (tmp_path / "outputs").exists()  # no Hydra job started


def test_anything_else_goes_to_the_hydra_app_untouched(monkeypatch) -> None:
    """Overrides and Hydra's flags reach the training app; no subcommand module is imported."""
    import prunelab.cli.train as train
    from prunelab import cli

    calls = []
    monkeypatch.setattr(train, "main", lambda: calls.append(list(sys.argv)))
    monkeypatch.setattr(cli, "command_module", lambda name: pytest.fail(f"dispatched {name}"))
    for argv in (["--help"], ["-m", "seed=0,1"], ["--cfg", "job"], ["pruning=one_shot"], []):
        monkeypatch.setattr(sys, "argv", ["prunelab", *argv])
        cli.main()
    assert calls == [["prunelab", *a] for a in (["--help"], ["-m", "seed=0,1"], ["--cfg", "job"],
                                                  ["pruning=one_shot"], [])]


# --------------------------------------------------------------------------- end of a sweep


def test_sweep_summary_counts_and_names_what_went_wrong() -> None:
    records = [
        {"folder": "a=1", "state": "finished", "status": "ok", "test_acc": 0.9},
        {"folder": "a=2", "state": "done already (not repeated)", "status": "ok"},
        {"folder": "a=3", "status": "failed", "error": "ConfigError: bad"},
        {"folder": "a=4", "state": "finished", "status": "diverged", "error": "loss is nan"},
    ]
    text = "\n".join(hydra_callbacks.summary_lines("outputs/sweeps/s", records, 5))
    assert ("5 jobs: 1 done, 1 skipped (finished earlier), 1 failed, 1 diverged, "
            "1 did not report") in text
    assert "failed: a=3 — ConfigError: bad" in text and "diverged: a=4 — loss is nan" in text
    assert "python -m prunelab report outputs/sweeps/s" in text
    assert hydra_callbacks.progress_line(2, 5, records[0]) == "job 2/5 done: a=1 — test acc 90.00 %"


def test_sweep_size_from_the_command_line_and_the_preset() -> None:
    cfg = OmegaConf.create({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                    "params": {"seed": "0,1,2", "pruning.amount": "0.5,0.8"}},
        "overrides": {"task": ["pruning.amount=0.5,0.8,0.9,0.95", "model=cnn"]}}})
    assert hydra_callbacks.count_jobs(cfg) == 12  # the command line replaces the preset's list


# --------------------------------------------------------------------------- plots


def _tiny_summary(tmp_path: Path) -> R.Summary:
    from test_report import make_sweep

    return R.summarize(make_sweep(tmp_path / "sweep"))


def test_plots_use_log_axes_with_sparsity_growing_to_the_right(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    s = _tiny_summary(tmp_path)
    (model, data), = {(p.model, p.data) for p in s.points}
    for kind in ("sparsity", "macs"):
        fig = R.plot_pair(s, model, data, kind)
        ax = fig.axes[0]
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log", kind
        left, right = ax.get_xlim()
        assert left > right, kind  # inverted: fewer weights / MACs further right
        if kind == "sparsity":
            assert left >= 100 and right < 100 * (1 - 0.9)  # 100 % kept ... past 90 % sparsity
        bands = [p for p in ax.patches if p.get_alpha() and p.get_alpha() < 0.5]
        assert bands, "the dense baseline band"
        assert any(c.has_yerr for c in ax.containers), "error bars over seeds"
        plt.close(fig)


def test_replot_from_summary_csv_gives_the_same_points(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    from test_report import make_sweep

    make_sweep(sweep)
    full = R.report(sweep)
    again = R.summarize_csv(sweep / "summary.csv")
    key = lambda p: (p.series, p.amount)  # noqa: E731
    want = {key(p): (p.mean("test_acc"), p.std("test_acc"), p.mean("sparsity_global"))
            for p in full.points}
    got = {key(p): (p.mean("test_acc"), p.std("test_acc"), p.mean("sparsity_global"))
           for p in again.points}
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v), k
    out = tmp_path / "plots"
    assert report_cli.main(["--from-csv", str(sweep / "summary.csv"), "--out", str(out), "-q"]) == 0
    assert {p.name for p in out.iterdir()} == {"acc_vs_sparsity.png", "acc_vs_macs.png"}


def test_composing_a_config_does_not_list_every_groups_options(make_cfg, monkeypatch) -> None:
    """Hydra dereferences the --help template while it merges every config; the listing (about
    a second) belongs to --help only."""
    import prunelab.cli.help as help_

    calls: list[tuple] = []
    monkeypatch.setattr(help_, "options_with_descriptions", lambda *a, **k: calls.append(a) or [])
    assert make_cfg("pruning=iterative").pruning.schedule._target_.endswith("Iterative")
    assert calls == []


@pytest.mark.parametrize("width", [70, 80, 110])
def test_help_descriptions_wrap_without_splitting_words(width: int) -> None:
    """A narrow terminal (COLUMNS=80, as under pytest-xdist) wraps between words, never inside
    "fine-tune", so every description reads back whole."""
    from prunelab.cli.help import format_options

    desc = "prune to the amount once (after epoch 2 by default), then fine-tune the survivors"
    text = format_options("pruning", [("one_shot", desc)], width=width)
    assert "fine-\n" not in text
    assert " ".join(text.split()) == f"one_shot {desc}"
