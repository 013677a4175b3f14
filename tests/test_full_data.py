"""Runs on the full data sets, skipped without them (``../shared/data`` next to the checkout, or
``PRUNELAB_SHARED_DATA``). The headline numbers take minutes of CPU (slow); one short pruned run
on real MNIST stays in the fast suite so CI trains on real data every time."""

import json
import os
import subprocess
import sys

import pytest

from conftest import shared_data_or_skip


def run(tmp_path, *overrides):
    data = shared_data_or_skip()
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "prunelab", f"data_dir={data}", "logger=csv",
         "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", *overrides],
        capture_output=True, text=True, timeout=3600, env={**os.environ}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.slow  # make test-all: the time budget of make test (docs/design/testing.md)
def test_short_pruned_run_on_real_mnist(tmp_path, make_cfg):
    """The real files through the whole pipeline in seconds: 2 × 120 batches, 80 % global
    magnitude after the first epoch, tested on all 10,000 real test images."""
    import lightning as L

    from prunelab.run import run as run_in_process

    class CountTestImages(L.Callback):
        seen = 0

        def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                              dataloader_idx=0):
            self.seen += len(batch[1])

    data = shared_data_or_skip()
    cfg = make_cfg(f"data_dir={data}", f"data.cache_dir={tmp_path / 'cache'}",
                   "data.download=false", "logger=none", "trainer.enable_progress_bar=false",
                   "trainer.max_epochs=2", "trainer.limit_train_batches=120",
                   "trainer.limit_val_batches=1", "pruning=one_shot", "pruning.schedule.start_epoch=0",
                   "pruning/method=global_magnitude", "pruning.schedule.amount=0.8", tiny=False)
    counter = CountTestImages()
    r = run_in_process(cfg, tmp_path / "run", callbacks=[counter])
    assert counter.seen == 10000
    assert r["status"] == "ok" and r["data"] == "mnist" and r["epochs"] == 2
    assert [h["target"] for h in r["pruning_history"]] == [0.8]
    assert r["sparsity_global"] == pytest.approx(0.8, abs=1e-4)
    assert r["test_acc"] >= 0.95


@pytest.mark.slow
def test_cnn_default_recipe_reaches_99_percent_in_3_epochs(tmp_path):
    r = run(tmp_path, "model=cnn", "pruning=none", "trainer.max_epochs=3")
    assert r["test_acc"] >= 0.990


@pytest.mark.slow
def test_text_model_reaches_87_percent_in_5_epochs(tmp_path):
    r = run(tmp_path, "model=text", "pruning=none", "trainer.max_epochs=5")
    assert r["test_acc"] >= 0.87
