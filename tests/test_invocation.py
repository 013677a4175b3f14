"""The commands a run prints to type next start the way the run was started (no processes here:
tests/test_docs_commands.py runs the printed commands of a real run)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from prunelab.cli import summary as cli_summary
from prunelab.cli.invocation import Invocation, allow_target_args, env_assignments, program

RESULTS = {"status": "ok", "model": "mymlp", "data": "mycsv", "schedule": "one_shot",
           "method": "ln_structured", "amount": 0.5, "seed": 0, "test_acc": 0.9}


def _executable(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_program_is_the_one_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv, other = tmp_path / "venv" / "bin", tmp_path / "other"
    script, python = _executable(venv, "prunelab"), _executable(venv, "python")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(venv))
    assert program(str(script)) == ("prunelab",)
    main = "/site-packages/prunelab/__main__.py"
    assert program(main, str(python)) == ("python", "-m", "prunelab")
    # PATH finds another one: the path as typed, relative when below the working directory
    monkeypatch.setenv("PATH", str(other))
    assert program(str(script)) == ("venv/bin/prunelab",)
    assert program(main, str(python)) == ("venv/bin/python", "-m", "prunelab")
    assert program("prunelab") == ("prunelab",)  # argv[0] without a folder: as it is


def test_environment_and_quoting() -> None:
    env = {"PYTHONPATH": "/my lab:/src", "PRUNELAB_DATA": "", "HOME": "/root"}
    assert env_assignments(environ=env) == ("PYTHONPATH='/my lab:/src'",)
    inv = Invocation(("prunelab",), ("PYTHONPATH=/x",), ("--config-dir", "my conf"))
    assert inv.train(["model=a b"]) == "PYTHONPATH=/x prunelab --config-dir 'my conf' 'model=a b'"
    assert inv.command("report", "outputs/runs/a=1,b") == \
        "PYTHONPATH=/x prunelab report outputs/runs/a=1,b"


def _run_dir(tmp_path: Path, net_target: str) -> Path:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({
        "model": {"_target_": "prunelab.models.ClassifierSystem",
                  "net": {"_target_": net_target},
                  "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True}},
        "data": {"_target_": "prunelab.data.TextFilesDataModule"}}), run / ".hydra" / "config.yaml")
    return run


def test_own_classes_get_allow_target(tmp_path: Path) -> None:
    assert allow_target_args(_run_dir(tmp_path / "a", "mylab.nets.BagOfWordsMLP")) == [
        "--allow-target", "mylab.nets"]
    assert allow_target_args(_run_dir(tmp_path / "b", "prunelab.models.LeNet")) == []
    assert allow_target_args(tmp_path / "none") == []


def test_summary_commands_paste_as_printed(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run_dir(tmp_path, "mylab.nets.BagOfWordsMLP")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", "/home/me/mylab")
    monkeypatch.setenv("PRUNELAB_DATA", "/data")
    inv = Invocation(("prunelab",), ("PYTHONPATH=/home/me/mylab",), ("--config-dir", "conf"))
    cmds = dict(cli_summary.next_commands(RESULTS, run, ["model=mymlp"], inv))
    assert cmds == {
        "evaluate": "PYTHONPATH=/home/me/mylab prunelab evaluate run --allow-target mylab.nets",
        "report": "PYTHONPATH=/home/me/mylab prunelab report run",
        "compact": "PYTHONPATH=/home/me/mylab prunelab compact run --allow-target mylab.nets",
        "export": "PYTHONPATH=/home/me/mylab prunelab export run --allow-target mylab.nets",
        "resume / repeat": "PYTHONPATH=/home/me/mylab prunelab --config-dir conf model=mymlp"}
    # without an Invocation: this process's environment; PRUNELAB_DATA only when it is the
    # run's data folder (no data_dir= among the overrides)
    cmds = dict(cli_summary.next_commands(RESULTS, run, ["model=mymlp"]))
    assert cmds["evaluate"].startswith("PYTHONPATH=/home/me/mylab PRUNELAB_DATA=/data ")
    cmds = dict(cli_summary.next_commands(RESULTS, run, ["model=mymlp", "data_dir=/d"]))
    assert "PRUNELAB_DATA" not in cmds["evaluate"]
    text = cli_summary.render(RESULTS, run, ["model=mymlp"])
    for line in text.splitlines()[text.splitlines().index("run directory: run") + 1:]:
        label, _, command = line.strip().partition(":  ")
        if command:  # every command line is one shell command, no note after it
            assert shlex.split(command)[-1] in ("mylab.nets", "run", "model=mymlp"), line
