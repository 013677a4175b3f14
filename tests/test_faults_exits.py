"""Fault injection: the exit status means something, and a run folder is never rewritten by
another configuration.

- A relaunch into a finished run's folder with a different configuration, or into a folder of
  the user's, is refused with one line before anything in the folder changes; the same run
  relaunched is "done already".
- A prunelab error raised anywhere in a job — wrapped by Hydra's ``instantiate`` or not, in a
  single run or a sweep — is one line and exit status 2, never Hydra's "Error executing job".
- A sweep with a failed job finishes the others, then exits non-zero: 2 for bad input, 3 for a
  run without a valid result.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from inprocess import prunelab_in_process

from prunelab.errors import ConfigError

from conftest import TINY

RUN = ["pruning=one_shot", "pruning.schedule.start_epoch=0", "trainer=fast", "trainer.max_epochs=2",
       "threads=1", *TINY]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: what "nothing changed" is checked against."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(proc: subprocess.CompletedProcess, status: int, *needles: str) -> str:
    assert proc.returncode == status, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("prunelab: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished(tiny_data, tmp_path_factory) -> Path:
    """A finished pruned run (pruning.schedule.amount=0.5) launched from the command line."""
    base = tmp_path_factory.mktemp("finished")
    run_dir = base / "run"
    proc = prunelab_in_process(*RUN, f"data_dir={tiny_data}", "pruning.schedule.amount=0.5",
                               f"hydra.run.dir={run_dir}", cwd=base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


# ---------------------------------------------------------------- run folders


def test_relaunch_with_another_config_is_refused_and_changes_nothing(finished, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    before = snapshot(run_dir)
    proc = prunelab_in_process(*RUN, f"data_dir={tiny_data}", "pruning.schedule.amount=0.9",
                               f"hydra.run.dir={run_dir}", cwd=tmp_path)
    one_line(proc, 2, str(run_dir), "pruning.schedule.amount 0.5 → 0.9")
    # .hydra/config.yaml still describes the weights beside it; nothing else was touched
    assert snapshot(run_dir) == before


def test_relaunch_of_the_same_run_is_done_already(finished, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    results = (run_dir / "results.json").read_bytes()
    # a key that changes no result (prunelab.paths.NO_EFFECT_KEYS) may differ
    proc = prunelab_in_process(*RUN, f"data_dir={tiny_data}", "pruning.schedule.amount=0.5",
                               "progress_refresh_rate=5", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done already" in proc.stderr and "Error" not in proc.stderr
    assert (run_dir / "results.json").read_bytes() == results


def test_a_folder_prunelab_did_not_make_is_refused(tiny_data, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.csv").write_text("epoch,loss\n0,1.5\n")
    proc = prunelab_in_process(*RUN, f"data_dir={tiny_data}", f"hydra.run.dir={mine}",
                               cwd=tmp_path)
    one_line(proc, 2, str(mine), "metrics.csv", "not a prunelab run folder", "hydra.run.dir=")
    assert snapshot(mine) == {"metrics.csv": b"epoch,loss\n0,1.5\n"}  # no .hydra/, no run.log


def test_each_job_folder_of_a_sweep_is_checked(tiny_data, tmp_path, make_cfg):
    """A job whose folder holds another configuration's run is refused; the others run."""
    from omegaconf import OmegaConf

    sweep = tmp_path / "sweep"
    args = [*RUN, f"data_dir={tiny_data}", "trainer.fast_dev_run=true"]
    taken = sweep / "job0" / ".hydra"
    taken.mkdir(parents=True)
    OmegaConf.save(make_cfg(*args, "pruning.schedule.amount=0.5", tiny=False), taken / "config.yaml")
    before = snapshot(sweep / "job0")
    proc = prunelab_in_process("-m", *args, "pruning.schedule.amount=0.7,0.5", f"hydra.sweep.dir={sweep}",
                               "hydra.sweep.subdir=job${hydra.job.num}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "failed: job0 — RunFolderError: " in proc.stderr
    assert "pruning.schedule.amount 0.5 → 0.7" in proc.stderr
    assert snapshot(sweep / "job0") == before
    assert json.loads((sweep / "job1" / "results.json").read_text())["amount"] == 0.5


# ---------------------------------------------------------------- errors inside a job


@pytest.fixture
def data_module_refuses(monkeypatch):
    """The data module raises a ConfigError when built: Hydra's instantiate wraps it."""
    import prunelab.data

    def refuse(self, *args, **kwargs):
        raise ConfigError("data.fault=1 is not valid: use 0 (injected)")

    monkeypatch.setattr(prunelab.data.MNISTDataModule, "__init__", refuse)


def test_config_error_inside_a_run_is_one_line(data_module_refuses, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    proc = prunelab_in_process(*RUN, f"data_dir={tiny_data}", f"hydra.run.dir={run_dir}",
                               cwd=tmp_path)
    one_line(proc, 2, "data.fault=1 is not valid")  # not "Error executing job", not exit 1
    assert json.loads((run_dir / "failed.json").read_text())["error_type"] == "ConfigError"


def test_config_error_inside_sweep_jobs_is_one_line_each(data_module_refuses, tiny_data, tmp_path):
    sweep = tmp_path / "sweep"
    proc = prunelab_in_process("-m", *RUN, f"data_dir={tiny_data}", "seed=0,1",
                               f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Error executing job" not in proc.stderr and "Traceback" not in proc.stderr
    assert "2 jobs: 0 done, 0 skipped (finished earlier), 2 failed" in proc.stderr
    for failed in sweep.glob("*/failed.json"):
        assert json.loads(failed.read_text())["error_type"] == "ConfigError"
    assert len(list(sweep.glob("*/failed.json"))) == 2


def test_sweep_with_a_diverged_job_exits_3(tiny_data, tmp_path):
    proc = prunelab_in_process("-m", *RUN, f"data_dir={tiny_data}",
                               "model.optimizer.lr=1e6", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                               cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "1 jobs: 0 done, 0 skipped (finished earlier), 0 failed, 1 diverged" in proc.stderr


def test_sweep_with_a_failed_job_finishes_the_others_then_exits_2(tiny_data, tmp_path):
    """A real process: the exit status is what a script sees. The failing job comes first, the
    other still runs. (Jobs in other processes: test_sweeps.py's slurm_local grid.)"""
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "prunelab", "-m", *RUN, f"data_dir={tiny_data}", "pruning.schedule.amount=2,0.5",
         f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=job${hydra.job.num}"],
        cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True,
        text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Error executing job" not in proc.stderr and "Traceback" not in proc.stderr
    assert "2 jobs: 1 done, 0 skipped (finished earlier), 1 failed" in proc.stderr
    assert json.loads((sweep / "job0" / "failed.json").read_text())["error_type"] == "ConfigError"
    assert json.loads((sweep / "job1" / "results.json").read_text())["amount"] == 0.5


def test_a_sweeps_status_is_its_worst_jobs():
    from prunelab.hydra_callbacks import sweep_status

    ok = {"status": "ok", "exit": 0}
    bad_input = {"status": "failed", "exit": 2}
    diverged = {"status": "diverged", "exit": 3}
    crashed = {"status": "failed", "exit": 1}
    assert sweep_status([ok, ok], total=2) == 0
    assert sweep_status([ok, diverged], total=2) == 3
    assert sweep_status([diverged, bad_input, ok], total=3) == 2  # fix the input first
    assert sweep_status([bad_input, crashed], total=2) == 1  # a bug comes before all else
    assert sweep_status([ok], total=2) == 3  # a job that never reported has no result
    assert sweep_status([ok], total=None) == 0  # a sweeper that does not say how many


@pytest.mark.parametrize("command, target", [
    ("evaluate", "prunelab.evaluate.load_plain_model"),
    ("export", "prunelab.cli.export.export_run"),
])
def test_a_tool_exits_with_the_status_of_its_error(command, target, monkeypatch, capsys,
                                                    tmp_path) -> None:
    """No valid result (ResultError) is 3 for the tools too, as docs/guide/cli.md says; before,
    every PrunelabError of a tool was 2."""
    from prunelab.cli import command_module
    from prunelab.errors import EXIT_NO_RESULT, ResultError

    def no_result(*args, **kwargs):
        raise ResultError("the int8 model diverged")

    monkeypatch.setattr(target, no_result)
    assert command_module(command).main([str(tmp_path)]) == EXIT_NO_RESULT
    assert capsys.readouterr().err.strip().endswith("error: the int8 model diverged")
