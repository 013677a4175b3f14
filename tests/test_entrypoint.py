"""The real ``python -m prunelab`` entry point, in subprocesses, on tiny data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from inprocess import prunelab_in_process

from conftest import ROOT, TINY


def prunelab(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300):
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "prunelab", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("model", ["cnn", "text"])
def test_fast_dev_run_through_the_entry_point(tiny_data, tmp_path, model):
    # a real process for one model; the same command line in-process for the other
    run_dir = tmp_path / "run"
    command = prunelab if model == "cnn" else prunelab_in_process
    proc = command(f"model={model}", "trainer.fast_dev_run=true", f"data_dir={tiny_data}",
                    *TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["model"] == model and results["status"] == "ok"
    assert 0.0 <= results["test_acc"] <= 1.0
    assert results["params_total"] > 0 and results["versions"]["prunelab"]
    assert f"model={model}" in results["overrides"]


def test_pruned_run_writes_pruning_results(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    # two steps (epochs 0, 1) and a fine-tuning epoch, not the preset's 10 epochs
    proc = prunelab_in_process("pruning=iterative", "pruning.schedule.step_size=null", "pruning.schedule.n_steps=2",
                    "pruning.schedule.initial=0.3", "pruning.schedule.amount=0.6", "trainer=fast",
                    "trainer.max_epochs=3",
                    f"data_dir={tiny_data}", *TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((run_dir / "results.json").read_text())
    assert [h["target"] for h in r["pruning_history"]] == pytest.approx([0.3, 0.6])
    assert r["sparsity_global"] == pytest.approx(0.6, abs=1e-4)
    assert r["macs_effective"] < r["macs_dense"]
    assert r["params_nonzero"] < r["params_total"]
    assert set(r["sparsity_layers"]) == {"net.conv1.weight", "net.conv2.weight", "net.fc1.weight"}
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "metrics.csv").exists()


def test_incompatible_model_and_data_is_one_line(tiny_data, tmp_path):
    proc = prunelab("model=text", "data=mnist", f"data_dir={tiny_data}",
                    f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert "model=text" in err[0] and "data=mnist" in err[0] and "text+imdb" in err[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("model", ["cnn", "text"])
def test_missing_data_offline_is_one_clear_line(tmp_path, model):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = prunelab_in_process(f"model={model}", f"data_dir={empty}", "data.download=false",
                    f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert str(empty) in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr


def test_bad_amount_is_rejected_before_training(tiny_data, tmp_path):
    proc = prunelab_in_process("pruning=one_shot", "pruning.schedule.amount=1.5", f"data_dir={tiny_data}",
                    f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "pruning.schedule.amount=1.5 must be a fraction in [0, 1)" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unknown_method_lists_the_valid_ones(tiny_data, tmp_path):
    proc = prunelab_in_process("pruning=one_shot", "pruning.method.name=magic", f"data_dir={tiny_data}",
                    f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "'magic'" in proc.stderr and "l1_unstructured" in proc.stderr


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "prunelab"
    assert script.exists(), "pip install -e . should create the prunelab console script"
    assert (ROOT / "conf" / "config.yaml").exists()


def test_structured_run_compacts_and_measures_latency(tiny_data, tmp_path, monkeypatch):
    import prunelab.pruning.latency as latency

    real = latency.measure_latency

    def short(model, example, batch_sizes, device, min_run_time):
        # each timing as run() does it, on smaller batches and shorter: 3 s instead of 20
        return real(model, example, (1, 4), device, min_run_time=0.01)

    monkeypatch.setattr(latency, "measure_latency", short)
    run_dir = tmp_path / "run"
    proc = prunelab_in_process("pruning=one_shot", "pruning.schedule.start_epoch=1", "pruning.schedule.amount=0.5",
                    "pruning/method=ln_structured", "pruning.compact=true", "trainer=fast",
                    f"data_dir={tiny_data}", *TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((run_dir / "results.json").read_text())
    assert r["params_compact"] < r["params_nonzero"] <= r["params_total"]
    assert r["macs_compact"] < r["macs_dense"]
    for kind in ("dense", "masked", "compact"):
        assert all(v > 0 for v in r["latency_ms"][kind].values())
    assert (run_dir / "compact_model.pt2").exists()


@pytest.mark.parametrize(("extra", "profiler"), [((), "NoProfiler"),
                                                 (("+trainer.profiler=simple",), "SimpleProfiler")])
def test_run_takes_extra_callbacks_and_a_configured_profiler(make_cfg, tmp_path, extra, profiler):
    import lightning as L

    from prunelab.run import LastCheckpoint, run

    class Spy(L.Callback):
        def __init__(self) -> None:
            self.epochs: list[int] = []

        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.epochs.append(trainer.current_epoch)
            self.global_step = trainer.global_step
            self.profiler = type(trainer.profiler).__name__
            self.checkpoints = [type(c).__name__ for c in trainer.checkpoint_callbacks]

    spy = Spy()
    results = run(make_cfg("trainer=fast", "trainer.max_epochs=2", "logger=none", *extra),
                  tmp_path / "run", callbacks=[spy])
    assert results["status"] == "ok" and spy.epochs == [0, 1]
    assert spy.profiler == profiler  # a config's profiler wins over the no-op default
    assert spy.checkpoints == [LastCheckpoint.__name__]  # no ModelCheckpoint added by Lightning
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == spy.global_step > 0  # after the last epoch


@pytest.mark.parametrize("args", [["--help"]])
def test_a_closed_output_pipe_ends_quietly(args, tmp_path):
    """``prunelab ... | head`` whose reader has gone: no traceback, the shell's SIGPIPE status."""
    from prunelab.cli import EXIT_BROKEN_PIPE

    read, write = os.pipe()
    os.close(read)  # the reader went away before anything was written
    try:
        proc = subprocess.run([sys.executable, "-m", "prunelab", *args], cwd=tmp_path,
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert proc.stderr == ""
    assert proc.returncode == EXIT_BROKEN_PIPE
