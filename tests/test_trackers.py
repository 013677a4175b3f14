"""logger=mlflow and logger=wandb write params, per-epoch metrics, per-layer sparsity and the
final results to local stores; skipped, with the reason, where the package is not installed."""

from __future__ import annotations

import importlib.util

import pytest

from prunelab.errors import ConfigError
from prunelab.run import run

PRUNED = ["pruning=iterative", "pruning.initial=0.3", "pruning.amount=0.6",
          "pruning.step_size=null", "pruning.n_steps=2", "trainer=fast", "trainer.max_epochs=2"]


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
    assert got.data.params["pruning.amount"] == "0.6" and got.data.params["model.name"] == "cnn"
    assert got.data.metrics["result/test_acc"] == pytest.approx(results["test_acc"])
    assert got.data.metrics["result/sparsity_global"] == pytest.approx(0.6, abs=1e-4)
    assert got.data.metrics["result/final_sparsity/net.conv1.weight"] == pytest.approx(
        results["sparsity_layers"]["net.conv1.weight"])
    val = client.get_metric_history(run_id, "val_acc")
    assert len(val) == 2  # one point per epoch
    steps = client.get_metric_history(run_id, "sparsity/net.conv1.weight")
    assert [round(m.value, 2) for m in steps] == [0.3, 0.6]
    assert got.info.status == "FINISHED"


@pytest.mark.skipif(_missing("wandb"), reason="wandb not installed (pip install 'prunelab[wandb]')")
def test_wandb_offline_run_is_written_in_the_run_folder(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = make_cfg(*PRUNED, "logger=wandb")
    results = run(cfg, tmp_path / "run")
    assert results["status"] == "ok"
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert runs and any(p.suffix == ".wandb" for p in runs[0].iterdir())


def test_missing_tracker_package_is_one_line(make_cfg, tmp_path, monkeypatch):
    import prunelab.trackers as trackers

    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None)
    cfg = make_cfg(*PRUNED, "logger=mlflow")
    with pytest.raises(ConfigError, match=r"logger=mlflow needs the mlflow package.*"
                                          r"pip install 'prunelab\[mlflow\]'"):
        run(cfg, tmp_path / "run")
