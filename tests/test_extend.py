"""Adding a criterion (with a knob of its own), a schedule, a model, a data set and a logger from
outside prunelab: each one Python file plus one YAML in a user's config folder
(examples/extend), run end to end through the command line, nothing in prunelab edited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from inprocess import prunelab_in_process

from conftest import ROOT

EXTEND = ROOT / "examples" / "extend"
ALL_FIVE = ["--config-dir", str(EXTEND / "conf"), "model=tiny_mlp", "data=blobs",
            "pruning=cosine_ramp", "pruning/method=fan_in_magnitude", "logger=jsonl",
            "trainer.enable_progress_bar=false"]
# cosine_ramp's targets, by hand: 0.8 * (1 - cos(pi * k / 4)) / 2 for k = 1..4
RAMP = [0.1171572875, 0.4, 0.6828427125, 0.8]


def prunelab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real command line in a fresh process, the user's files importable via PYTHONPATH."""
    path = os.pathsep.join([str(EXTEND), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "prunelab", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_five_components_of_your_own_run_end_to_end_and_the_knob_takes_effect(tmp_path):
    results = {}
    for alpha in ("0.0", "1.0"):
        run_dir = tmp_path / f"alpha_{alpha}"
        proc = prunelab(*ALL_FIVE, f"pruning.method.alpha={alpha}", f"hydra.run.dir={run_dir}",
                        cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[alpha] = json.loads((run_dir / "results.json").read_text())
        rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert sum("val_acc" in r for r in rows) == results[alpha]["epochs"], rows  # your logger
        assert (run_dir / "metrics.csv").is_file()  # next to the built-in one
    for r in results.values():
        assert (r["model"], r["data"], r["schedule"], r["method"]) == (
            "tiny_mlp", "blobs", "cosine_ramp", "fan_in_magnitude")
        assert [h["target"] for h in r["pruning_history"]] == RAMP
        assert [h["epoch"] for h in r["pruning_history"]] == [0, 1, 2, 3]
        assert r["sparsity_global"] == pytest.approx(0.8, abs=1e-3)  # one threshold over both
    plain, scaled = (results[a]["sparsity_layers"] for a in ("0.0", "1.0"))
    # alpha=1 weighs fc2's weights (fan-in 32) twice fc1's (fan-in 16): fc2 keeps more of them
    assert scaled["net.fc2.weight"] < plain["net.fc2.weight"]
    assert scaled["net.fc1.weight"] > plain["net.fc1.weight"]


@pytest.mark.parametrize("override,message", [
    ("pruning.method.beta=1", "pruning.method.beta: not a key of fan_in_magnitude; valid: scope, alpha"),
    ("pruning.method.alpha=9", "pruning.method.alpha=9 must be a number in [0, 4]"),
    ("pruning.schedule.every=2", "pruning.schedule.every: not a key of cosine_ramp; valid: "
                                 "amount, n_steps, start_epoch"),
    ("pruning.schedule.n_steps=0", "pruning.schedule.n_steps=0 must be an integer >= 1"),
    ("+logger.jsonl.bogus=1", "logger.jsonl.bogus: not a key of jsonl_logger.JsonlLogger; "
                              "valid: filename"),
])
def test_your_components_check_their_keys_and_values_like_the_built_in_ones(
        tmp_path, monkeypatch, override, message):
    monkeypatch.syspath_prepend(str(EXTEND))
    proc = prunelab_in_process(*ALL_FIVE, override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("prunelab: error:")]
    assert lines == [f"prunelab: error: {message}"], proc.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training


def test_the_extension_folder_holds_one_python_file_and_one_yaml_per_component():
    assert sorted(p.name for p in EXTEND.glob("*.py")) == [
        "blobs.py", "cosine_ramp.py", "fan_in_magnitude.py", "jsonl_logger.py", "tiny_mlp.py"]
    assert sorted(str(p.relative_to(EXTEND / "conf")) for p in (EXTEND / "conf").rglob("*.yaml")) == [
        "data/blobs.yaml", "logger/jsonl.yaml", "model/tiny_mlp.yaml", "pruning/cosine_ramp.yaml",
        "pruning/method/fan_in_magnitude.yaml"]
