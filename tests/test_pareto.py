"""Pareto search on Optuna (``-m hydra/sweeper=optuna``): the objectives a run returns, a study
killed with SIGKILL and relaunched to the same trials in the same folders, failed and diverged
trials told to Optuna and marked by the report, and the report's front.

Expected fronts are computed here by hand from each folder's results.json, never by the code
under test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from inprocess import prunelab_in_process

from prunelab.errors import ConfigError
from prunelab.objectives import JobResult, Objective, non_dominated, parse

optuna = pytest.importorskip("optuna")  # prunelab[optuna], part of prunelab[dev]

OBJECTIVES = "objectives=[val_acc:max,macs_effective:min]"


def tiny(data: Path) -> list[str]:
    # batch 8: 25 steps an epoch, long enough to be killed in the middle of a trial
    return [f"data_dir={data}", "data.val_size=40", "data.batch_size=8",
            "data.eval_batch_size=64", "logger=csv", "trainer.enable_progress_bar=false",
            "threads=1"]


def study_args(sweep_dir: Path, data: Path, n_trials: int) -> list[str]:
    return ["-m", "hydra/sweeper=optuna", "hydra/sweeper/sampler=nsgaii",
            "hydra.sweeper.sampler.seed=3", "hydra.sweeper.sampler.population_size=4",
            f"hydra.sweeper.n_trials={n_trials}", "hydra.sweeper.n_jobs=2",
            f"hydra.sweep.dir={sweep_dir}", *tiny(data), OBJECTIVES,
            "pruning=one_shot", "pruning.schedule.start_epoch=1", "trainer.max_epochs=3",
            "pruning/method=choice(l1_unstructured,global_magnitude,lamp)",
            "pruning.schedule.amount=choice(0.3,0.5,0.7,0.8,0.9,0.95)"]


def load_study(sweep_dir: Path):
    names = optuna.get_all_study_summaries(f"sqlite:///{sweep_dir}/optuna.db")
    assert len(names) == 1
    return optuna.load_study(study_name=names[0].study_name,
                             storage=f"sqlite:///{sweep_dir}/optuna.db")


def hand_front(sweep_dir: Path, folders: list[str]) -> set[str]:
    """The folders no other folder beats in val_acc (higher) and macs_effective (lower)."""
    vals = {}
    for f in folders:
        r = json.loads((sweep_dir / f / "results.json").read_text())
        vals[f] = (r["val_acc"], r["macs_effective"])
    return {f for f, (a, m) in vals.items()
            if not any(a2 >= a and m2 <= m and (a2 > a or m2 < m) for a2, m2 in vals.values())}


# ------------------------------------------------------------------ objectives, by hand


def test_objectives_are_parsed_and_checked_with_one_line():
    assert parse(["val_acc:max", "macs_effective:min"]) == [
        Objective("val_acc", "max"), Objective("macs_effective", "min")]
    assert [o.optuna for o in parse(["test_acc:max", "params_nonzero:min"])] == [
        "maximize", "minimize"]
    for bad, words in [(["val_accuracy:max"], ["'val_accuracy' is not a numeric key",
                                               "val_acc", "macs_effective"]),
                       (["val_acc"], ["no direction", "val_acc:max or val_acc:min"]),
                       (["val_acc:up"], ["must be max or min", "'up'"]),
                       (["model:max"], ["'model' is not a numeric key"]),  # a string key
                       (["val_acc:max", "val_acc:min"], ["named twice"]),
                       ([], ["at least one"])]:
        with pytest.raises(ConfigError) as err:
            parse(bad)
        assert "\n" not in str(err.value)
        for w in words:
            assert w in str(err.value), (bad, str(err.value))


def test_front_by_hand():
    objs = parse(["val_acc:max", "macs_effective:min"])
    points = [(0.99, 300.0), (0.98, 100.0), (0.97, 200.0), (0.99, 400.0), (0.98, 100.0),
              (0.90, 50.0)]
    # (0.97, 200) is beaten by (0.98, 100); (0.99, 400) by (0.99, 300); equal points both stay
    assert non_dominated(points, objs) == [0, 1, 4, 5]
    assert non_dominated([(1.0,)], parse(["test_loss:min"])) == [0]


def test_the_task_function_returns_the_objective_values_as_a_list():
    import pickle

    r = JobResult.of([0.98, 1200.0], {"status": "ok"})
    back = pickle.loads(pickle.dumps(r))  # launchers pickle it back from their workers
    assert back == [0.98, 1200.0] and back.record == {"status": "ok"}
    assert float(JobResult.of([0.5], {})) == 0.5  # the plugin's float() of one objective
    with pytest.raises(TypeError):
        float(back)


# ------------------------------------------------------------------ the command line


def test_bad_objectives_stop_before_any_job(tiny_data, tmp_path):
    out = tmp_path / "sweep"
    proc = prunelab_in_process("-m", "hydra/sweeper=optuna", f"hydra.sweep.dir={out}",
                               *tiny(tiny_data), "objectives=[val_accuracy:max]", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("prunelab: error: objectives: 'val_accuracy' is not a numeric key")
    assert "val_acc" in line
    assert not out.exists()


def test_an_optuna_search_space_passes_the_command_lines_checks():
    """interval() and tag(log, interval()) are no grid: the pre-flight check of the first job's
    keys takes an interval's lower end (it used to stop on Hydra's "Can only enumerate")."""
    from prunelab.choices import check_command_line
    from prunelab.paths import CONF_DIR

    space = ["-m", "hydra/sweeper=optuna", "pruning=one_shot",
             "pruning.schedule.amount=interval(0.5,0.99)",
             "model.optimizer.lr=tag(log,interval(0.005,0.2))"]
    check_command_line(CONF_DIR, [*space, "pruning/method=choice(lamp,global_magnitude)"])
    with pytest.raises(ConfigError, match="pruning/method=lampp: no such option"):
        check_command_line(CONF_DIR, [*space, "pruning/method=choice(lampp,global_magnitude)"])


def test_direction_that_disagrees_with_the_objectives_is_one_line(tiny_data, tmp_path):
    out = tmp_path / "sweep"
    proc = prunelab_in_process("-m", "hydra/sweeper=optuna", "hydra.sweeper.direction=minimize",
                               f"hydra.sweep.dir={out}", *tiny(tiny_data), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "prunelab: error: hydra.sweeper.direction=['minimize'] disagrees with "
        "objectives=[val_acc:max]: the directions come from objectives (key:max or key:min); "
        "leave hydra.sweeper.direction null")
    assert not (out / "optuna.db").exists()


def test_a_study_of_other_objectives_is_refused(tiny_data, tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    optuna.create_study(study_name="default", storage=f"sqlite:///{out}/optuna.db",
                        directions=["maximize"])
    proc = prunelab_in_process("-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=1",
                               f"hydra.sweep.dir={out}", *tiny(tiny_data), OBJECTIVES,
                               cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert "study default in sqlite:///" in line and "give this search another name=" in line
    assert not [p for p in out.iterdir() if p.is_dir()]  # no trial ran


def test_failed_and_diverged_trials_are_told_as_failed_and_marked(tiny_data, tmp_path):
    """A grid over two learning rates, one of which diverges: Optuna gets one COMPLETE trial
    with the run's values and one FAIL; the sweep exits 3; the report marks the diverged one."""
    out = tmp_path / "sweep"
    proc = prunelab_in_process("-m", "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid",
                               "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={out}",
                               *tiny(tiny_data), "trainer=fast", "trainer.max_epochs=1", OBJECTIVES,
                               "model.optimizer.lr=choice(0.05,1000000)", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr[-3000:]  # a diverged job: no valid result
    trials = sorted(load_study(out).trials, key=lambda t: t.params["model.optimizer.lr"])
    ok, bad = trials
    assert ok.state == optuna.trial.TrialState.COMPLETE
    res = json.loads((out / ok.user_attrs["prunelab_folder"] / "results.json").read_text())
    assert ok.values == [res["val_acc"], res["macs_effective"]]
    assert bad.state == optuna.trial.TrialState.FAIL and bad.values is None
    assert bad.user_attrs["prunelab_status"] == "diverged"
    failed = json.loads((out / bad.user_attrs["prunelab_folder"] / "failed.json").read_text())
    assert failed["status"] == "diverged"

    rep = prunelab_in_process("report", out, cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr[-2000:]
    md = (out / "summary.md").read_text()
    section = md.split("## Pareto front")[1].split("## Failed")[0]
    assert "1 of 1 trials with values" in section
    assert "Trials without values: 1 diverged." in section
    assert f"| {bad.user_attrs['prunelab_folder']} | diverged |" in section
    rows = (out / "pareto.csv").read_text().splitlines()
    assert sum(",diverged,0," in r for r in rows) == 1 and sum(",ok,1," in r for r in rows) == 1


# ------------------------------------------------------------------ kill and resume


def _launch(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    return subprocess.Popen([sys.executable, "-m", "prunelab", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_study_resumes_to_the_same_trials_and_folders(tiny_data, tmp_path):
    """4 trials, 2 at a time: SIGKILL while the third trial trains; the same command then
    finishes the third from its checkpoint and runs the fourth, in the folders they were asked
    for, without rerunning the first two; the report lists the front."""
    out = tmp_path / "sweep"
    args = study_args(out, tiny_data, n_trials=4)

    proc = _launch(args, tmp_path)
    seen, pruned = [], 0
    for line in proc.stdout:  # one-shot pruning at the end of epoch 1 of each trial
        seen.append(line)
        pruned += "epoch 1: pruned" in line
        if pruned == 3:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-3000:]

    before = {t.number: t for t in load_study(out).trials}
    states = sorted(t.state.name for t in before.values())
    assert states == ["COMPLETE", "COMPLETE", "RUNNING", "RUNNING"], states
    finished = {t.user_attrs["prunelab_folder"] for t in before.values()
                if t.state.name == "COMPLETE"}
    stamps = {f: (out / f / "results.json").stat().st_mtime_ns for f in finished}
    killed = [p for p in out.iterdir() if (p / "checkpoints" / "last.ckpt").is_file()
              and not (p / "results.json").exists()]
    assert len(killed) == 1, list(out.iterdir())

    relaunch = subprocess.run([sys.executable, "-m", "prunelab", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "MPLBACKEND": "Agg"})
    assert relaunch.returncode == 0, relaunch.stderr[-3000:]
    assert "2 of 4 trials finished; 2 interrupted one(s) resumed, 0 new" in relaunch.stderr

    after = {t.number: t for t in load_study(out).trials}
    assert sorted(after) == [0, 1, 2, 3]  # the same four trials: none added, none lost
    assert all(t.state.name == "COMPLETE" for t in after.values())
    assert {n: t.params for n, t in after.items()} == {n: t.params for n, t in before.items()}
    folders = {t.user_attrs["prunelab_folder"] for t in after.values()}
    jobs = {p.name for p in out.iterdir() if p.is_dir()}
    assert jobs == folders and killed[0].name in folders
    for t in after.values():  # each trial's values are its folder's
        res = json.loads((out / t.user_attrs["prunelab_folder"] / "results.json").read_text())
        assert t.values == [res["val_acc"], res["macs_effective"]]
    assert {f: (out / f / "results.json").stat().st_mtime_ns for f in finished} == stamps
    assert "resuming from" in (killed[0] / "run.log").read_text()

    front = hand_front(out, sorted(folders))
    assert {t.user_attrs["prunelab_folder"] for t in load_study(out).best_trials} == front
    rep = prunelab_in_process("report", out, cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr[-2000:]
    section = (out / "summary.md").read_text().split("## Pareto front")[1].split("## Failed")[0]
    assert f"{len(front)} of {len(folders)} trials with values are on the front" in section
    table = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    assert len(table) == len(front)
    for f in front:  # each front trial with its configuration (the overrides in its folder name)
        res = json.loads((out / f / "results.json").read_text())
        method = next(o for o in res["overrides"] if o.startswith("pruning/method="))
        amount = next(o for o in res["overrides"] if o.startswith("pruning.schedule.amount="))
        assert any(method in row and amount in row for row in table), (f, table)
        assert f in rep.stderr  # the terminal lists the front's folders
    assert (out / "pareto.png").stat().st_size > 10_000


def test_a_sweeps_progress_lines_stay_out_of_the_running_jobs_log(tmp_path):
    """With the basic launcher a job runs in the launching process, whose progress thread logs
    through the job's handlers: its lines must not create the job's run.log, or the job finds
    its new folder not empty and refuses it."""
    import logging
    import logging.config

    from omegaconf import OmegaConf

    from conftest import CONF

    cfg = OmegaConf.load(CONF / "hydra" / "job_logging" / "prunelab.yaml")
    cfg.handlers.file.filename = str(tmp_path / "run.log")
    cfg.filters.console_level.verbosity = "quiet"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logging.config.dictConfig(OmegaConf.to_container(cfg))
        logging.getLogger("prunelab.sweep").info("job 1 done: ...")
        logging.getLogger("prunelab.study").info("Pareto front: ...")
        assert not (tmp_path / "run.log").exists()
        logging.getLogger("prunelab.run").info("the job's own line")
        assert (tmp_path / "run.log").read_text().count("\n") == 1
    finally:
        for h in root.handlers:
            h.close()
        root.handlers[:], root.level = saved


def _job_folder(root: Path, name: str, cfg, results: dict | None = None,
                failed: dict | None = None) -> None:
    from omegaconf import OmegaConf

    d = root / name
    (d / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, d / ".hydra" / "config.yaml")
    if results is not None:
        base = {"status": "ok", "model": "cnn", "data": "mnist", "schedule": "one_shot",
                "method": "l1_unstructured", "amount": 0.5, "seed": 0, "test_acc": 0.9,
                "sparsity_global": 0.5, "params_nonzero": 1000, "macs_dense": 2_000_000,
                "overrides": [f"pruning.schedule.amount={name}"]}
        (d / "results.json").write_text(json.dumps({**base, **results}))
    if failed is not None:
        (d / "failed.json").write_text(json.dumps(failed))


@pytest.mark.parametrize("objectives", [["val_acc:max", "macs_effective:min"], ["val_acc:max"]])
def test_report_lists_the_front_and_marks_trials_without_values(make_cfg, tmp_path, objectives):
    """Job folders written by hand: the front (or, with one objective and a study in the
    folder, the best trial) is the one worked out here; failed, diverged and value-less trials
    are listed as such."""
    from prunelab import report as R

    cfg = make_cfg("pruning=one_shot", f"objectives=[{','.join(objectives)}]")
    sweep = tmp_path / "sweep"
    vals = {"a": (0.98, 500_000), "b": (0.97, 600_000), "c": (0.99, 900_000)}
    for name, (acc, macs) in vals.items():
        _job_folder(sweep, name, cfg, {"val_acc": acc, "macs_effective": macs})
    _job_folder(sweep, "d", cfg, failed={"status": "diverged", "error": "loss is nan",
                                         "error_type": "DivergedError", "overrides": []})
    _job_folder(sweep, "e", cfg, {"val_acc": None, "macs_effective": 400_000})
    (sweep / "optuna.db").write_bytes(b"")  # a study's folder
    # b: beaten by a (more accurate and cheaper); e: no val_acc; with one objective only c
    expected = ["a", "c"] if len(objectives) == 2 else ["c"]

    s = R.report(sweep)
    assert [j.folder for j in s.front.front] == expected
    assert sorted((j.folder, j.status) for j in s.front.unscored) == [("d", "diverged"),
                                                                       ("e", "ok")]
    md = (sweep / "summary.md").read_text()
    head = "## Pareto front" if len(objectives) == 2 else "## Best trial"
    section = md.split(head)[1].split("## Failed")[0]
    assert "Trials without values: 1 diverged, 1 no value." in section
    assert "| d | diverged | DivergedError: loss is nan |" in section
    rows = [line for line in section.splitlines() if "`pruning.schedule.amount=" in line]
    assert [r.split("`pruning.schedule.amount=")[1][0] for r in rows] == expected
    assert (sweep / "pareto.png").exists() == (len(objectives) == 2)
    csv_rows = (sweep / "pareto.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[0] for r in csv_rows if r.split(",")[2] == "1") == expected
