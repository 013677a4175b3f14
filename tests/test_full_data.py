"""The headline numbers on the full data sets (slow: minutes of CPU; skipped without the data)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import shared_data_or_skip

pytestmark = pytest.mark.slow


def run(tmp_path, *overrides):
    data = shared_data_or_skip()
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "prunelab", f"data_dir={data}", "logger=csv",
         "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", *overrides],
        capture_output=True, text=True, timeout=3600, env={**os.environ}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "results.json").read_text())


def test_cnn_default_recipe_reaches_99_percent_in_3_epochs(tmp_path):
    r = run(tmp_path, "model=cnn", "pruning=none", "trainer.max_epochs=3")
    assert r["test_acc"] >= 0.990


def test_text_model_reaches_87_percent_in_5_epochs(tmp_path):
    r = run(tmp_path, "model=text", "pruning=none", "trainer.max_epochs=5")
    assert r["test_acc"] >= 0.87
