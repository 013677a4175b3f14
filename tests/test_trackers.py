"""logger=mlflow and logger=wandb write params, per-epoch metrics, per-layer sparsity and the
final results to local stores; skipped, with the reason, where the package is not installed."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest

from prunelab.errors import ConfigError
from prunelab.run import run

PRUNED = ["pruning=iterative", "pruning.schedule.initial=0.3", "pruning.schedule.amount=0.6",
          "pruning.schedule.step_size=null", "pruning.schedule.n_steps=2", "trainer=fast", "trainer.max_epochs=2"]


def _missing(package: str) -> bool:
    return importlib.util.find_spec(package) is None


@pytest.mark.skipif(_missing("mlflow"), reason="mlflow not installed (pip install 'prunelab[mlflow]')")
def test_mlflow_local_store_gets_params_curves_sparsity_and_results(make_cfg, tmp_path):
    from mlflow.tracking import MlflowClient

    store = f"file:{tmp_path / 'mlruns'}"
    cfg = make_cfg(*PRUNED, "logger=mlflow", f"logger.mlflow.tracking_uri={store}",
                   "logger.mlflow.experiment=test")
    results = run(cfg, tmp_path / "run")
    run_id = (tmp_path / "run" / "mlflow_run_id.txt").read_text().strip()
    client = MlflowClient(tracking_uri=store)
    got = client.get_run(run_id)
    assert len(client.search_runs([got.info.experiment_id])) == 1  # one tracker run per run
    assert got.data.params["pruning.schedule.amount"] == "0.6" and got.data.params["model.name"] == "cnn"
    assert got.data.metrics["result/test_acc"] == pytest.approx(results["test_acc"])
    assert got.data.metrics["result/sparsity_global"] == pytest.approx(0.6, abs=1e-4)
    assert got.data.metrics["result/final_sparsity/net.conv1.weight"] == pytest.approx(
        results["sparsity_layers"]["net.conv1.weight"])
    val = client.get_metric_history(run_id, "val_acc")
    assert len(val) == 2  # one point per epoch
    steps = client.get_metric_history(run_id, "sparsity/net.conv1.weight")
    assert [round(m.value, 2) for m in steps] == [0.3, 0.6]
    assert got.info.status == "FINISHED"


def _wandb_or_skip() -> None:
    """wandb and its reader of offline runs (``wandb leet inspect``), or a skip saying which."""
    if _missing("wandb"):
        pytest.skip("wandb not installed (pip install 'prunelab[wandb]')")
    probe = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--help"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("this wandb has no `wandb leet inspect` to read offline runs back")


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B offline, every folder of its own under tmp_path, no key: nothing leaves the machine
    and nothing asks to log in. Any run a failing test leaves open is closed after it."""
    _wandb_or_skip()
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield
    import wandb

    if wandb.run is not None:
        wandb.run.finish(exit_code=1)
    wandb.teardown()  # wandb keeps its first settings (the environment) for the process


def _wandb_run(run_dir: Path) -> dict:
    """The one offline W&B run in ``run_dir``, read back from its ``.wandb`` log by wandb's
    own reader: config, history rows, final summary, exit code, run id, offline flag."""
    (log_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    proc = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json",
                           str(log_file)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    got: dict = {"config": {}, "history": [], "summary": {}, "exit_code": None}
    for rec in records:
        kind = rec["type"]
        if kind == "run":
            got["run_id"] = rec["run"]["run_id"]
            feature = rec["run"].get("telemetry", {}).get("feature", {})
            got["offline"] = feature.get("offline", False)
            got["config"].update(rec["run"].get("config", {}).get("update", {}))
        elif kind == "config":
            got["config"].update(rec["config"].get("update", {}))
        elif kind == "history":
            got["history"].append(rec["history"]["item"])
        elif kind == "summary":
            got["summary"].update(rec["summary"].get("update", {}))
        elif kind == "exit":
            got["exit_code"] = rec["exit"].get("exit_code", 0)
    return got


def _series(history: list[dict], key: str) -> list[float]:
    return [row[key] for row in history if key in row]


def test_wandb_offline_run_gets_params_curves_sparsity_and_results(make_cfg, tmp_path,
                                                                   wandb_offline):
    cfg = make_cfg(*PRUNED, "logger=wandb")
    results = run(cfg, tmp_path / "run")
    got = _wandb_run(tmp_path / "run")
    assert got["offline"] and got["exit_code"] == 0
    # a resume of this folder continues the same W&B run
    assert got["run_id"] == hashlib.sha1(str((tmp_path / "run").absolute()).encode()
                                         ).hexdigest()[:16]
    assert got["config"]["pruning.schedule.amount"] == 0.6 and got["config"]["model.name"] == "cnn"
    assert len(_series(got["history"], "val_acc")) == 2  # one point per epoch
    steps = _series(got["history"], "sparsity/net.conv1.weight")
    assert [round(v, 2) for v in steps] == [0.3, 0.6]
    summary = got["summary"]
    assert summary["result/test_acc"] == pytest.approx(results["test_acc"])
    assert summary["result/sparsity_global"] == pytest.approx(0.6, abs=1e-4)
    assert summary["result/final_sparsity/net.conv1.weight"] == pytest.approx(
        results["sparsity_layers"]["net.conv1.weight"])


class _Boom(L.Callback):
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raise RuntimeError("boom")


def test_wandb_failed_run_is_closed_and_the_next_run_gets_its_own(make_cfg, tmp_path,
                                                                  wandb_offline):
    # a sweep runs its jobs one after the other in one process: a job that fails must not
    # leave its W&B run open for the next job to log into
    cfg = make_cfg("trainer=fast", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                   "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "logger=wandb")
    with pytest.raises(RuntimeError, match="boom"):
        run(cfg, tmp_path / "bad", callbacks=[_Boom()])
    results = run(cfg, tmp_path / "good")
    bad, good = _wandb_run(tmp_path / "bad"), _wandb_run(tmp_path / "good")
    assert bad["exit_code"] == 1 and good["exit_code"] == 0
    assert bad["run_id"] != good["run_id"]
    assert not _series(bad["history"], "result/test_acc")
    assert good["summary"]["result/test_acc"] == pytest.approx(results["test_acc"])


def test_wandb_online_without_a_login_is_one_line(make_cfg, tmp_path, wandb_offline,
                                                  monkeypatch):
    import wandb

    wandb.setup()  # as after an offline run earlier in this process: wandb keeps WANDB_MODE
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc key
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing leaves the machine
    cfg = make_cfg("trainer=fast", "logger=wandb", "logger.wandb.offline=false")
    with pytest.raises(ConfigError, match=r"logger=wandb could not start a W&B run: .*"
                                          r"wandb login.*logger.wandb.offline=true"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()


def test_missing_tracker_package_is_one_line(make_cfg, tmp_path, monkeypatch):
    import prunelab.trackers as trackers

    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None)
    cfg = make_cfg(*PRUNED, "logger=mlflow")
    with pytest.raises(ConfigError, match=r"logger=mlflow needs the mlflow package.*"
                                          r"pip install 'prunelab\[mlflow\]'"):
        run(cfg, tmp_path / "run")
