"""Fault injection: hostile files never run code, outputs stay inside outputs/, concurrent
launches do not share a run folder, write failures are one line and leave nothing half-written.

Each test builds the fault itself (a pickle that would run a command, a config naming a
function that writes a file, a held lock, a full disk) and checks that the side effect did not
happen, not only the message.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from inprocess import prunelab_in_process

from conftest import TINY

# ---------------------------------------------------------------- helpers


def cli(*args: str, cwd: Path, module: str = "prunelab", prelude: str = "",
        timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m <module> args`` in a subprocess; ``prelude`` runs first (fault injection)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if prelude:
        code = (textwrap.dedent(prelude) + f"\nimport runpy, sys\nsys.argv = [{module!r}, *{list(args)!r}]\n"
                f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n")
        argv = [sys.executable, "-c", code]
    else:
        argv = [sys.executable, "-m", module, *args]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess, *needles: str, after_start: bool = False) -> str:
    """Exit 2 and one error line; ``after_start``: Lightning's own start-up lines may precede it."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    if after_start:
        assert sum("error" in ln.lower() for ln in lines) == 1, proc.stderr
        lines = lines[-1:]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


class Evil:
    """Pickles as a call of ``os.system``: loading with weights_only=False would run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_checkpoint(path: Path, marker: Path) -> Path:
    """A file shaped like a prunelab checkpoint, with a command hidden in its pickle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 0, "global_step": 1, "state_dict": {}, "hook": Evil(marker),
                "callbacks": {"RunState": {"config": {}}}}, path)
    return path


LENET_CONFIG = "model:\n  name: cnn\n  net:\n    _target_: prunelab.models.LeNet\ndata:\n  name: mnist\n"


def fake_run_dir(run_dir: Path, config: str = LENET_CONFIG, weights: bool = True) -> Path:
    """A run folder's files without training: config, final_model.pt, results.json."""
    from prunelab.models import LeNet

    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(config)
    if weights:
        torch.save(LeNet().state_dict(), run_dir / "final_model.pt")
    (run_dir / "results.json").write_text(json.dumps({"status": "ok", "test_acc": 0.9}))
    return run_dir


RUN = ["pruning=one_shot", "pruning.schedule.start_epoch=0", "pruning.schedule.amount=0.5", "trainer=fast", *TINY]
TWO_EPOCHS = [*RUN, "trainer.max_epochs=2"]


@pytest.fixture(scope="module")
def finished(tiny_data, tmp_path_factory) -> Path:
    """A short finished lottery run (history, rewind weights and RNG state in its checkpoint)."""
    from hydra import compose
    from omegaconf import OmegaConf

    from prunelab import confsource
    from prunelab.run import run

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    with confsource.initialize():
        cfg = compose("config", overrides=[
            *TINY, f"data_dir={tiny_data}", "pruning=lottery", "pruning.schedule.rate=0.3",
            "pruning.schedule.amount=0.6", "trainer=fast", "trainer.max_epochs=3"])
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    run(cfg, run_dir)
    return run_dir


# ---------------------------------------------------------------- loading never runs code


def test_prunelab_checkpoints_load_with_weights_only(finished):
    ckpt = torch.load(finished / "checkpoints" / "last.ckpt", weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("PruningCallback"))
    assert len(state["history"]) == 3 and state["rewind_state"] and state["generator"].numel() > 0
    run_state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("RunState"))
    assert run_state["config"]["pruning"]["schedule"]["_target_"] == "prunelab.pruning.schedules.Lottery"


def test_resume_loads_every_file_with_weights_only(finished, tmp_path, tiny_data, monkeypatch, make_cfg):
    """prunelab's own check and Lightning's load inside fit(ckpt_path=...) both refuse pickles."""
    from prunelab.run import run

    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    first = json.loads((run_dir / "results.json").read_text())
    (run_dir / "results.json").unlink()
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    again = run(make_cfg("pruning=lottery", "pruning.schedule.rate=0.3", "pruning.schedule.amount=0.6",
                         "trainer=fast", "trainer.max_epochs=3"), run_dir)
    assert len(calls) >= 2 and all(w is True for w in calls), calls  # ours and Lightning's
    assert again["pruning_history"][-1]["achieved"] == first["pruning_history"][-1]["achieved"]
    assert again["test_acc"] == first["test_acc"]


@pytest.mark.parametrize("where", ["ckpt_path", "auto_resume"])
def test_pickled_code_in_a_checkpoint_never_runs_in_a_run(tiny_data, tmp_path, where, make_cfg):
    from omegaconf import OmegaConf

    marker = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    if where == "ckpt_path":
        ckpt = evil_checkpoint(tmp_path / "gift.ckpt", marker)
        extra = [f"ckpt_path={ckpt}"]
    else:
        # this command's own run folder (its saved config), with a planted last.ckpt
        cfg = make_cfg(*TWO_EPOCHS, f"data_dir={tiny_data}", tiny=False)
        (run_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
        ckpt = evil_checkpoint(run_dir / "checkpoints" / "last.ckpt", marker)
        extra = []
    proc = prunelab_in_process(*TWO_EPOCHS, f"data_dir={tiny_data}", *extra,
                               f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert not marker.exists()  # the command hidden in the pickle did not run
    one_line_error(proc, str(ckpt), "refusing")
    assert not (run_dir / "results.json").exists() and ckpt.exists()  # nothing deleted


@pytest.mark.parametrize("tool", ["evaluate", "compact"])
def test_pickled_code_in_a_run_folder_never_runs_in_evaluate_or_compact(tmp_path, tool, capsys):
    from prunelab.cli import compact, evaluate

    marker = tmp_path / "pwned"
    run_dir = fake_run_dir(tmp_path / "run", weights=False)  # no final_model.pt: last.ckpt is used
    ckpt = evil_checkpoint(run_dir / "checkpoints" / "last.ckpt", marker)
    main = evaluate.main if tool == "evaluate" else compact.main
    rc = main([str(run_dir)] + (["--no-latency"] if tool == "compact" else []))
    assert not marker.exists()  # the command hidden in the pickle did not run
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(ckpt) in err[0] and "refusing" in err[0], err


# The example: Hydra would build the Path and call write_text on it.
WRITE_TEXT = """\
model:
  name: cnn
  net:
    _target_: pathlib.Path.write_text
    self: {{_target_: pathlib.Path, _args_: ["{marker}"]}}
    data: pwned
data:
  name: mnist
"""
HIDDEN_IN_DATA = LENET_CONFIG.replace("data:\n  name: mnist\n", """\
data:
  name: mnist
  _target_: prunelab.data.MNISTDataModule
  data_dir: {{_target_: pathlib.Path.write_text, self: {{_target_: pathlib.Path, _args_: ["{marker}"]}}, data: x}}
""")


@pytest.mark.parametrize("config", [WRITE_TEXT, HIDDEN_IN_DATA], ids=["net", "nested_in_data"])
@pytest.mark.parametrize("tool", ["evaluate", "compact"])
def test_saved_config_targets_outside_the_allow_list_are_refused(tmp_path, tool, config, capsys):
    from prunelab.cli import compact, evaluate

    marker = tmp_path / "pwned"
    run_dir = fake_run_dir(tmp_path / "run", config.format(marker=marker))
    main = evaluate.main if tool == "evaluate" else compact.main
    rc = main([str(run_dir)] + (["--no-latency"] if tool == "compact" else []))
    assert not marker.exists()  # Path.write_text was not called
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "pathlib.Path" in err[0] and "--allow-target" in err[0] and "config.yaml" in err[0]


def test_own_targets_load_when_the_user_allows_them(tmp_path, monkeypatch):
    from prunelab.errors import UnsafeInputError
    from prunelab.evaluate import load_plain_model

    config = "model:\n  net:\n    _target_: torch.nn.Linear\n    in_features: 3\n    out_features: 2\n"
    run_dir = fake_run_dir(tmp_path / "run", config, weights=False)
    torch.save(torch.nn.Linear(3, 2).state_dict(), run_dir / "final_model.pt")
    with pytest.raises(UnsafeInputError, match="torch.nn.Linear"):
        load_plain_model(run_dir)
    net, _ = load_plain_model(run_dir, allow=["torch.nn."])
    assert isinstance(net, torch.nn.Linear)
    monkeypatch.setenv("PRUNELAB_ALLOW_TARGETS", "torch.nn.Linear")
    assert isinstance(load_plain_model(run_dir)[0], torch.nn.Linear)


def test_evaluate_and_compact_agree_on_an_interrupted_run(finished, tmp_path):
    """Both take final_model.pt when present, else checkpoints/last.ckpt (masks folded)."""
    from prunelab.cli.compact import load_run
    from prunelab.evaluate import load_plain_model

    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    final = {k: v.clone() for k, v in load_run(run_dir)[0].state_dict().items()}
    (run_dir / "final_model.pt").unlink()
    from_ckpt = load_run(run_dir)[0].state_dict()
    from_eval = load_plain_model(run_dir)[0].state_dict()
    for key, value in final.items():
        assert torch.equal(from_ckpt[key], value) and torch.equal(from_eval[key], value), key


# ---------------------------------------------------------------- paths stay inside outputs/


@pytest.mark.parametrize("name", ["../../../escaped", "/tmp/prunelab-abs-escape", "ok,../../escaped"],
                         ids=["dotdot", "absolute", "swept"])
def test_name_cannot_lead_out_of_outputs(tiny_data, tmp_path, name):
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    proc = prunelab_in_process("-m", f"name={name}", "trainer.fast_dev_run=true",
                               f"data_dir={tiny_data}", *TINY, cwd=work)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "a" / "escaped").exists()
    assert not Path("/tmp/prunelab-abs-escape").exists()
    assert not (work / "outputs").exists()  # refused before any job (the "ok" one included)
    one_line_error(proc, "name=", "outputs/sweeps")


def test_check_name_accepts_plain_names_only():
    from prunelab.errors import OutputError
    from prunelab.outputs import check_name

    for good in ("study", "mnist_2026-11.v2", "group/study"):
        assert check_name(good) == good
    for bad in ("..", "a/../../b", "/abs", "~user", "", "C:x", "./"):
        with pytest.raises(OutputError):
            check_name(bad)


def test_search_refuses_an_escaping_name():
    from prunelab.errors import PrunelabError
    from prunelab.search import Runner

    with pytest.raises(PrunelabError, match="outputs/sweeps"):
        Runner(["name=../../x", "pruning=one_shot"], None, [])


# ---------------------------------------------------------------- one process per run folder


@pytest.mark.slow
def test_second_launch_of_a_running_run_is_refused(tiny_data, tmp_path):
    """Two real launches: the second says who holds the folder, the first is not disturbed.
    (The tests below hold the lock from this process: the same check, without a training run.)"""
    run_dir = tmp_path / "run"
    # long enough (about 0.2 s an epoch) to be still training when the second one starts
    args = ["pruning=one_shot", "pruning.schedule.start_epoch=0", "trainer.max_epochs=200", *TINY,
            "data.batch_size=8", f"data_dir={tiny_data}", f"hydra.run.dir={run_dir}"]
    first = subprocess.Popen([sys.executable, "-m", "prunelab", *args], cwd=tmp_path,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        for line in first.stdout:
            if "epoch 0: pruned" in line:  # training, lock held
                break
        second = cli(*args, cwd=tmp_path)
        still_running = first.poll() is None
    finally:
        first.kill()
        first.wait(timeout=60)
    assert still_running
    one_line_error(second, "in progress", f"PID {first.pid}", socket.gethostname())
    assert not (run_dir / "failed.json").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").exists()  # the first one's, not removed


def test_lock_is_taken_by_the_run_itself_for_api_callers(make_cfg, tmp_path):
    """run() holds the lock (not only the command line), so in-process callers are covered."""
    from prunelab.errors import RunInProgressError
    from prunelab.run import run
    from prunelab.runlock import RunLock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with RunLock(run_dir), pytest.raises(RunInProgressError, match=f"PID {os.getpid()}"):
        run(make_cfg("trainer.fast_dev_run=true"), run_dir)
    assert not (run_dir / "results.json").exists()


def test_locked_run_folder_is_refused_and_left_alone(tiny_data, tmp_path):
    from prunelab.runlock import RunLock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with RunLock(run_dir):
        proc = cli(*TWO_EPOCHS, f"data_dir={tiny_data}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    one_line_error(proc, str(run_dir), f"PID {os.getpid()}", socket.gethostname())
    assert not (run_dir / "failed.json").exists() and not (run_dir / "checkpoints").exists()
    assert not (run_dir / ".hydra").exists()  # refused before Hydra writes into the folder
    assert not (run_dir / ".prunelab.lock").exists()  # released by its holder


def test_lock_of_a_dead_process_is_taken_over(make_cfg, tmp_path, caplog):
    from prunelab.run import run

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".prunelab.lock").write_text(json.dumps(
        {"pid": dead.pid, "host": socket.gethostname(), "since": "earlier"}))
    results = run(make_cfg("trainer.fast_dev_run=true"), run_dir)
    assert results["status"] == "ok"
    assert f"taking over the lock of process {dead.pid}" in caplog.text
    assert not (run_dir / ".prunelab.lock").exists()


def test_sweep_skips_jobs_another_launcher_is_working_on(tiny_data, tmp_path):
    from prunelab.runlock import RunLock

    sweep = tmp_path / "sweep"
    busy = sweep / "seed1"
    busy.mkdir(parents=True)
    with RunLock(busy):
        proc = cli("-m", "seed=0,1", "trainer.fast_dev_run=true", f"data_dir={tiny_data}", *TINY,
                   f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=seed${seed}", cwd=tmp_path)
    # the others ran; the sweep's status says not every job is done, as that job alone would
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("in progress elsewhere, skipped") == 1 and "job failed" not in proc.stderr
    assert "0 failed, 1 in progress elsewhere" in proc.stderr
    assert (sweep / "seed0" / "results.json").exists()
    assert not (busy / "results.json").exists() and not (busy / "failed.json").exists()


# ---------------------------------------------------------------- output faults


def test_unwritable_output_folder_is_one_line(tiny_data, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the output folder should go")
    run_dir = blocker / "run"
    proc = prunelab_in_process(*TWO_EPOCHS, f"data_dir={tiny_data}", f"hydra.run.dir={run_dir}",
                               cwd=tmp_path)
    one_line_error(proc, str(blocker), f"Errno {errno.ENOTDIR}")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_one_line(tiny_data, tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        proc = prunelab_in_process(*TWO_EPOCHS, f"data_dir={tiny_data}",
                                   f"hydra.run.dir={parent / 'run'}", cwd=tmp_path)
    finally:
        parent.chmod(0o755)
    one_line_error(proc, str(parent), f"Errno {errno.EACCES}")


FULL_DISK_ON_SECOND_CHECKPOINT = """
import builtins, errno, prunelab.io
calls = []
class HalfFull:  # the disk fills up after the first 4 kB written
    def __init__(self, f):
        self.f, self.n = f, 0
    def write(self, data):
        if self.n > 4096:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.n += len(data)
        return self.f.write(data)
    def __getattr__(self, name):
        return getattr(self.f, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.f.close()
def full_disk_open(path, mode="r", *args, **kwargs):
    f = builtins.open(path, mode, *args, **kwargs)
    if ".last.ckpt." in str(path):
        calls.append(path)
        return HalfFull(f) if len(calls) > 1 else f
    return f
prunelab.io.open = full_disk_open
"""

def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    proc = cli(*RUN, "trainer.max_epochs=3", f"data_dir={tiny_data}", f"hydra.run.dir={run_dir}",
               cwd=tmp_path, prelude=FULL_DISK_ON_SECOND_CHECKPOINT)
    last = run_dir / "checkpoints" / "last.ckpt"
    one_line_error(proc, str(last), f"Errno {errno.ENOSPC}", after_start=True)
    assert not list(run_dir.rglob("*.tmp")), list(run_dir.rglob("*.tmp"))
    assert torch.load(last, weights_only=True)["epoch"] == 0  # the previous one, intact
    assert not (run_dir / "results.json").exists()


def test_full_disk_while_writing_results_leaves_no_half_file(make_cfg, tmp_path, monkeypatch):
    import builtins

    import prunelab.io
    import prunelab.run as pr
    from prunelab.errors import OutputError

    def full_disk_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)  # noqa: SIM115 (returned open, as open does)
        if Path(path).name.startswith(".results.json.") and str(path).endswith(".tmp"):
            f.write(b"{ half")  # the write got this far
            f.close()
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return f

    run_dir = tmp_path / "run"
    cfg = make_cfg(*TWO_EPOCHS)
    monkeypatch.setattr(prunelab.io, "open", full_disk_open, raising=False)
    with pytest.raises(OutputError) as err:
        pr.run_or_record_failure(cfg, run_dir, [], multirun=False)
    message = str(err.value)
    assert str(run_dir / "results.json") in message and f"Errno {errno.ENOSPC}" in message
    assert "free some space" in message and len(message.splitlines()) == 1
    assert not (run_dir / "results.json").exists()
    assert not list(run_dir.rglob("*.tmp")), list(run_dir.rglob("*.tmp"))
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    # once there is space again, the same run re-tests the final model and finishes
    monkeypatch.undo()
    assert pr.run(cfg, run_dir)["status"] == "ok"
    assert json.loads((run_dir / "results.json").read_text())["status"] == "ok"
