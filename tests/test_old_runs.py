"""Run folders written by prunelab 0.1 (the flat ``pruning`` config, tests/fixtures/old_runs) still
resume, evaluate, compact, export and report; their configs and the old command-line spellings
are brought to today's shape by one converter (prunelab.legacy)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from inprocess import prunelab_in_process
from omegaconf import OmegaConf

from prunelab.legacy import upgrade

from conftest import ROOT

OLD = ROOT / "tests" / "fixtures" / "old_runs"


def old_run(name: str, tmp_path: Path) -> Path:
    run_dir = tmp_path / name
    shutil.copytree(OLD / name, run_dir)
    return run_dir


def saved_overrides(run_dir: Path) -> list[str]:
    return list(yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()))


def test_an_old_config_converts_to_today_s_nodes():
    old = OmegaConf.to_container(OmegaConf.load(OLD / "agp" / ".hydra" / "config.yaml"))
    new, notes = upgrade(old)
    assert notes == []  # a saved config is converted silently
    pruning = new["pruning"]
    assert pruning["schedule"] == {"_target_": "prunelab.pruning.schedules.AGP", "amount": 0.6,
                                   "start_epoch": 0, "every": 1, "n_steps": 2, "initial": 0.0}
    assert pruning["method"]["_target_"] == "prunelab.pruning.criteria.GlobalMagnitude"
    assert {k: v for k, v in pruning["method"].items() if k != "description"} == {
        "_target_": "prunelab.pruning.criteria.GlobalMagnitude", "scope": "global"}  # n, dim...: inert
    assert pruning["targets"] == {"_target_": "prunelab.pruning.targets.Targets",
                                  "types": ["Embedding", "Linear"], "include": [], "exclude": [],
                                  "skip_last": True, "parameter": "weight"}
    assert pruning["_target_"] == "prunelab.pruning.PruningCallback" and "budget" not in pruning
    assert "rate" not in pruning and "update_every" not in pruning  # inert in an agp run
    assert new["trainer"]["_target_"] == "lightning.Trainer"
    assert new["logger"]["csv"] == {"_target_": "prunelab.curves.csv_logger"}
    assert "tensorboard" not in new["logger"]  # was false
    assert upgrade(new) == (new, [])  # today's shape is left as it is


def test_an_old_dense_config_and_an_unknown_criterion_convert():
    old = OmegaConf.to_container(OmegaConf.load(OLD / "dense" / ".hydra" / "config.yaml"))
    assert upgrade(old)[0]["pruning"]["schedule"] == {"_target_": "prunelab.pruning.schedules.Dense"}
    old["pruning"].update(schedule="explicit", amount="${prunelab_last_target:${pruning.steps}}",
                          steps=[[0, 0.5]], round_to=4, method={"name": "my_own", "n": 2.0})
    new = upgrade(old)[0]["pruning"]
    assert new["schedule"] == {"_target_": "prunelab.pruning.schedules.Explicit", "steps": [[0, 0.5]]}
    assert new["method"] == {"_target_": "prunelab.pruning.criteria.ByName", "criterion": "my_own",
                             "norm": 2.0, "round_to": 4}  # n: the norm order's earlier name


def test_an_interrupted_old_run_resumes_with_its_own_command(tiny_data, tmp_path):
    """Relaunched as it was launched (the old spellings): the checkpoint's config (old shape)
    matches, the schedule continues at its second step, the results are complete."""
    run_dir = old_run("agp", tmp_path)
    saved = json.loads(json.dumps(_checkpoint_history(run_dir)))
    proc = prunelab_in_process(*saved_overrides(run_dir), f"data_dir={tiny_data}",
                               f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stderr
    assert "deprecated: pruning.amount is now pruning.schedule.amount" in proc.stderr
    r = json.loads((run_dir / "results.json").read_text())
    assert (r["status"], r["schedule"], r["method"], r["amount"]) == ("ok", "agp", "global_magnitude", 0.6)
    assert [h["target"] for h in r["pruning_history"]] == [0.0, 0.6]
    assert r["pruning_history"][0] == saved[0]  # step 0 came from the old checkpoint, not redone
    assert r["sparsity_global"] == pytest.approx(0.6, abs=1e-3) and r["epochs"] == 2
    assert (run_dir / "final_model.pt").exists()


def test_an_old_run_resumes_with_today_s_spellings_and_refuses_another_setting(tiny_data, tmp_path):
    from prunelab.errors import CheckpointError
    from prunelab.run import resolve_ckpt, result_config, upgraded

    def config(*changes: str) -> dict:
        from hydra import compose

        from prunelab import confsource

        new = [o.replace("pruning.amount", "pruning.schedule.amount")
                .replace("pruning.n_steps", "pruning.schedule.n_steps")
                .replace("pruning.start_epoch", "pruning.schedule.start_epoch")
               for o in saved_overrides(OLD / "agp")]
        with confsource.initialize():
            cfg = compose("config", overrides=[*new, f"data_dir={tiny_data}", *changes])
        return result_config(upgraded(cfg))

    run_dir = old_run("agp", tmp_path)
    assert resolve_ckpt("last", run_dir, config()).epoch == 1
    with pytest.raises(CheckpointError, match=r"pruning.schedule.amount=0.6 in the checkpoint, 0.7 now"):
        resolve_ckpt("last", run_dir, config("pruning.schedule.amount=0.7"))


def test_a_finished_old_run_evaluates_compacts_exports_and_reports(tiny_data, tmp_path):
    run_dir = old_run("dense", tmp_path / "sweep")
    for argv in (["evaluate", run_dir, "--data-dir", tiny_data],
                 ["compact", run_dir, "--no-latency"],
                 ["export", run_dir, "--data-dir", tiny_data],
                 ["sensitivity", run_dir, "--data-dir", tiny_data, "--batches", "1",
                  "--amounts", "0.5"],
                 ["report", tmp_path / "sweep"]):
        proc = prunelab_in_process(*argv, cwd=tmp_path)
        assert proc.returncode == 0, (argv, proc.stderr[-2000:])
    assert "test_acc" in json.loads((run_dir / "results.json").read_text())
    assert (run_dir / "export" / "kmeans5" / "model.plx").exists()
    summary = (tmp_path / "sweep" / "summary.csv").read_text().splitlines()
    assert len(summary) == 2 and ",ok,text,imdb,dense,none," in summary[1]


def _checkpoint_history(run_dir: Path) -> list[dict]:
    from prunelab.loading import load_checkpoint

    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("PruningCallback"))
    return state["history"]
