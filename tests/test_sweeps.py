"""Sweeps through the real entry point (``python -m prunelab -m``) with the joblib and the
submitit-local launchers, the report on their folders, and the bisection search.

Tiny data and 2 epochs (one-shot pruning at the end of epoch 0, one fine-tuning epoch) keep each
test well under a minute on 2 cores.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest

from prunelab import report as R
from prunelab import search as S
from prunelab.cli import report as report_cli
from prunelab.cli import search as search_cli

ROOT = Path(__file__).resolve().parents[1]
APP = [sys.executable, "-m", "prunelab", "-m"]
EPOCHS = "trainer.max_epochs=2"


def tiny(data: Path) -> list[str]:
    return [f"data_dir={data}", "data.val_size=40", "data.eval_batch_size=64", "logger=csv",
            "trainer=fast", "trainer.enable_progress_bar=false", EPOCHS]


PRUNE = ["pruning=one_shot", "pruning.schedule.start_epoch=0"]


def _env() -> dict[str, str]:
    env = dict(os.environ, MPLBACKEND="Agg", HYDRA_FULL_ERROR="0")
    env.pop("OMP_NUM_THREADS", None)  # let the launchers choose
    return env


def sweep(cwd: Path, *args: str, timeout: int = 300, status: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([*APP, *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == status, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _assert_nontrivial_png(path: Path) -> None:
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(path)
    assert img.shape[0] >= 200 and img.shape[1] >= 200
    assert len(np.unique(img.reshape(-1, img.shape[-1]).round(3), axis=0)) > 20


def _check_rows_match_results(sweep_dir: Path, rows: list[dict]) -> None:
    for r in rows:
        if r["status"] != "ok":
            continue
        res = json.loads((sweep_dir / r["folder"] / "results.json").read_text())
        assert r["method"] == res["method"] and float(r["amount"]) == res["amount"]
        assert int(r["seed"]) == res["seed"] and r["schedule"] == res["schedule"]
        assert float(r["test_acc"]) == res["test_acc"]
        assert float(r["sparsity_global"]) == res["sparsity_global"]
        assert int(r["params_nonzero"]) == res["params_nonzero"]
        assert int(r["macs_effective"]) == res["macs_effective"]
        assert float(r["fit_seconds"]) == res["fit_seconds"]


def test_joblib_grid_dense_and_report(tiny_data: Path, tmp_path: Path, make_cfg) -> None:
    out = tmp_path / "sweep"
    grid = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                 f"hydra.sweep.dir={out}", *tiny(tiny_data), *PRUNE,
                 "pruning/method=l1_unstructured,random_unstructured", "pruning.schedule.amount=0.5,0.8")
    assert "Joblib.Parallel(n_jobs=2" in grid.stdout + grid.stderr
    # progress over the jobs while they run, then the sweep's summary and the report command
    for k in range(1, 5):
        assert grid.stderr.count(f"job {k}/4 done: ") == 1, grid.stderr[-3000:]
    assert "sweep finished: 4 jobs: 4 done, 0 skipped (finished earlier), 0 failed" in grid.stderr
    assert " -m prunelab report sweep\n" in grid.stderr  # relative to the cwd
    # the dense baseline: in the README a separate `-m pruning=none` sweep into the same
    # folder; here the same run in-process (saves a process start), in the folder Hydra would use
    from prunelab.run import run

    dense_overrides = [*tiny(tiny_data), "pruning=none"]
    run(make_cfg(*dense_overrides), out / "pruning=none,trainer=fast", dense_overrides)
    folders = sorted(p for p in out.iterdir() if (p / "results.json").is_file())
    assert len(folders) == 5, [p.name for p in out.iterdir()]

    assert report_cli.main([str(out)]) == 0
    rows = list(csv.DictReader(StringIO((out / "summary.csv").read_text())))
    assert len(rows) == 5 and all(r["status"] == "ok" for r in rows)
    _check_rows_match_results(out, rows)
    results = [json.loads((f / "results.json").read_text()) for f in folders]
    dense = next(r for r in results if r["method"] == "dense")
    assert dense["schedule"] == "none" and dense["sparsity_global"] == 0.0
    s = R.summarize(out)
    for res in results:
        if res["method"] == "dense":
            continue
        assert res["sparsity_global"] == pytest.approx(res["amount"], abs=0.01)
        p = next(p for p in s.points if (p.method, p.amount) == (res["method"], res["amount"]))
        assert p.n == 1 and p.mean("test_acc") == res["test_acc"] and p.std("test_acc") == 0.0
        assert p.mean("drop_pts") == pytest.approx(100 * (dense["test_acc"] - res["test_acc"]))
        assert p.mean("macs_effective") == res["macs_effective"]
    md = (out / "summary.md").read_text()
    assert "## Test accuracy: method × amount" in md and "| l1_unstructured |" in md
    assert "## Highest sparsity within 0.5 pts of dense" in md
    for png in ("acc_vs_sparsity.png", "acc_vs_macs.png"):
        _assert_nontrivial_png(out / png)


@pytest.mark.slow  # make test-all: the time budget of make test (docs/design/testing.md)
def test_slurm_local_grid_with_invalid_amount(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    proc = sweep(tmp_path, "hydra/launcher=slurm_local", f"hydra.sweep.dir={out}",
                 *tiny(tiny_data), *PRUNE, "pruning/method=l1_unstructured", "pruning.schedule.amount=0.5,1.5",
                 status=2)  # every job ran; one had a bad value
    assert (out / ".submitit").is_dir()
    # the jobs ran in other processes; the launching one reports them and names the failed one
    assert proc.stderr.count("job 1/2 ") == 1 and proc.stderr.count("job 2/2 ") == 1
    assert "sweep finished: 2 jobs: 1 done, 0 skipped (finished earlier), 1 failed" in proc.stderr
    assert re.search(r"failed: \S*pruning\.amount=1\.5\S* — ConfigError: pruning\.schedule\.amount=1\.5 must be a fraction in \[0, 1\)",
                     proc.stderr), proc.stderr[-3000:]
    jobs = {p.name: p for p in out.iterdir() if not p.name.startswith(".") and p.is_dir()}
    assert len(jobs) == 2
    bad = next(p for name, p in jobs.items() if "1.5" in name)
    good = next(p for name, p in jobs.items() if "0.5" in name)
    assert (bad / "failed.json").is_file() and (good / "results.json").is_file()

    assert report_cli.main([str(out)]) == 0
    rows = {r["folder"]: r for r in csv.DictReader(StringIO((out / "summary.csv").read_text()))}
    assert rows[bad.name]["status"] == "failed" and "fraction in [0, 1)" in rows[bad.name]["error"]
    assert rows[bad.name]["amount"] == "1.5" and rows[bad.name]["method"] == "l1_unstructured"
    assert rows[good.name]["status"] == "ok" and rows[good.name]["drop_pts"] == ""
    _check_rows_match_results(out, list(rows.values()))
    md = (out / "summary.md").read_text()
    assert f"| {bad.name} | failed | ConfigError" in md
    assert "No dense baseline" in md


@pytest.mark.slow  # four job processes (30 s); make test-all runs it
def test_launchers_limit_threads_per_job(tmp_path: Path) -> None:
    """joblib: OMP_NUM_THREADS = max(1, cpus // n_jobs); slurm_local: = cpus_per_task."""
    app = tmp_path / "probe_app.py"
    app.write_text(f'''
import json, os
import hydra
from hydra.core.hydra_config import HydraConfig
from prunelab.config import register
register()

@hydra.main(version_base="1.3", config_path="{ROOT / "conf"}", config_name="config")
def main(cfg):
    import torch
    with open(os.path.join(HydraConfig.get().runtime.output_dir, "t.json"), "w") as f:
        json.dump([os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()], f)

main()
''')
    cpus = os.cpu_count() or 1
    for launcher, extra, want in [("joblib", "hydra.launcher.n_jobs=2", max(1, cpus // 2)),
                                  ("slurm_local", "hydra.launcher.cpus_per_task=1", 1)]:
        proc = subprocess.run([sys.executable, str(app), "-m", f"hydra/launcher={launcher}",
                               extra, f"hydra.sweep.dir={tmp_path / launcher}", "seed=0,1"],
                              cwd=tmp_path, env=_env(), capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        got = [json.loads(p.read_text()) for p in (tmp_path / launcher).glob("*/t.json")]
        assert got == [[str(want), want]] * 2, (launcher, got)


# --------------------------------------------------------------------------------------------
# bisection
# --------------------------------------------------------------------------------------------


def _fake(drop_at: float, calls: list[float]):
    """Monotone: drop 0 below ``drop_at``, 5 pts above."""

    def probe(a: float) -> S.Probe:
        calls.append(a)
        return S.Probe(a, 0.0 if a <= drop_at else 5.0, 0.9, a)

    return probe


def test_bisect_brackets_the_threshold() -> None:
    calls: list[float] = []
    r = S.bisect(_fake(0.83, calls), 0.5, 0.99, delta=0.5, iters=6)
    assert r["status"] == "found" and calls[:2] == [0.5, 0.99] and len(calls) == 8
    lo, hi = r["bracket"]
    assert lo <= 0.83 < hi and hi - lo <= (0.99 - 0.5) / 2**6 + 1e-4
    assert r["amount"] == lo and r["sparsity"] == lo
    assert [p["amount"] for p in r["probes"]] == sorted(calls)
    assert S.message("m", r, 0.5, 0.5, 0.99).startswith(f"highest amount within 0.5 pts of "
                                                         f"dense: {lo:g}")
    assert S.bisect(_fake(0.995, []), 0.5, 0.99, 0.5, 6)["status"] == "hi"
    none = S.bisect(_fake(0.3, calls := []), 0.5, 0.99, 0.5, 6)
    assert none["status"] == "none" and none["amount"] is None and calls == [0.5]

    def broken(a: float) -> S.Probe:
        return S.Probe(a, None, None, None, [], "boom") if a > 0.6 else S.Probe(a, 0.0, 0.9, a)

    err = S.bisect(broken, 0.5, 0.99, 0.5, 6)
    assert err["status"] == "error" and "boom" in err["error"]


def test_search_end_to_end_reuses_probes(tiny_data: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sweep"
    overrides = [*tiny(tiny_data), *PRUNE]
    args = ["--method", "l1_unstructured", "--lo", "0.5", "--hi", "0.9", "--iters", "1",
            "--sweep-dir", str(out), *overrides]
    # a huge delta: the upper end passes (probes: dense, lo, hi)
    assert search_cli.main([*args, "--delta", "100"]) == 0
    first = json.loads((out / "search.json").read_text())
    r = first["methods"]["l1_unstructured"]
    assert r["status"] == "hi" and r["amount"] == 0.9 and len(r["probes"]) == 2
    assert (out / "search-dense" / "results.json").is_file()
    for a in ("0.5", "0.9"):
        res = json.loads((out / "search-l1_unstructured" / f"amount={a}" / "results.json")
                         .read_text())
        assert res["amount"] == float(a) and res["method"] == "l1_unstructured"
        assert res["sparsity_global"] == pytest.approx(float(a), abs=0.01)
    dense = json.loads((out / "search-dense" / "results.json").read_text())
    assert dense["schedule"] == "none" and dense["epochs"] == 2  # same epoch budget
    probe_hi = next(p for p in r["probes"] if p["amount"] == 0.9)
    hi_res = json.loads((out / "search-l1_unstructured" / "amount=0.9" / "results.json")
                        .read_text())
    assert probe_hi["drop_pts"] == pytest.approx(100 * (dense["test_acc"] - hi_res["test_acc"]))
    capsys.readouterr()

    # a delta below lo's drop: lo fails; everything is reused, nothing runs again
    lo_drop = next(p for p in r["probes"] if p["amount"] == 0.5)["drop_pts"]
    assert lo_drop > 0  # tiny data, 2 epochs: pruning half the weights at once costs accuracy
    assert search_cli.main([*args, "--delta", f"{lo_drop / 2}"]) == 0
    text = capsys.readouterr().err  # progress goes through prunelab's logging (stderr)
    assert "run 1:" not in text and "reusing" in text
    r2 = json.loads((out / "search.json").read_text())["methods"]["l1_unstructured"]
    assert r2["status"] == "none" and len(r2["probes"]) == 1

    # the report lists the probes and shows the search's answer
    s = R.report(out)
    assert len([j for j in s.jobs if j.status == "ok"]) == 3
    assert "Bisection search" in (out / "summary.md").read_text()

    # other overrides into the same folders are refused, not silently mixed
    assert search_cli.main(["--method", "l1_unstructured", "--hi", "0.9", "--iters", "0",
                   "--sweep-dir", str(out), *overrides, "model.optimizer.lr=0.2"]) == 2
    assert "another name=" in capsys.readouterr().err


def test_search_rejects_bad_arguments(capsys: pytest.CaptureFixture) -> None:
    assert search_cli.main(["--method", "l1_unstructured", "pruning=none"]) == 2  # nothing to search
    assert "needs a pruning schedule" in capsys.readouterr().err
    assert search_cli.main(["--method", "l1_unstructured", "--lo", "0.9", "--hi", "0.5",
                   "pruning=one_shot"]) == 2
    assert search_cli.main(["--method", "nope", "pruning=one_shot"]) == 2
    assert "bad overrides" in capsys.readouterr().err
    assert search_cli.main(["--method", "l1_unstructured", "pruning=one_shot", "pruning.schedule.amount=0.3"]) == 2


def test_search_without_a_schedule_probes_one_shot() -> None:
    """No pruning= typed: the probes prune with one_shot (before: refused), and say so."""
    from prunelab.components import component_name
    from prunelab.search import DEFAULT_SCHEDULE, Runner

    runner = Runner(["trainer=fast"], None, [])
    assert runner.overrides == [DEFAULT_SCHEDULE, "trainer=fast"]
    cfg = runner.compose([*runner.overrides, "pruning/method=l1_unstructured"])
    assert component_name(cfg.pruning.schedule) == "one_shot"


def test_mnist_sweep_presets_are_valid(make_cfg) -> None:
    """Every job of experiment=sweep_mnist_amounts passes the config check (the schedule fits
    the epochs) and has the dense preset's epoch budget and sweep name."""
    from prunelab.run import check_config, make_callback

    dense = make_cfg("experiment=sweep_mnist_dense")
    assert dense.pruning.schedule._target_ == "prunelab.pruning.schedules.Dense"
    for method in ("l1_unstructured", "global_magnitude", "random_unstructured"):
        for amount in (0.5, 0.8, 0.9, 0.95):
            cfg = make_cfg("experiment=sweep_mnist_amounts", f"pruning/method={method}",
                           f"pruning.schedule.amount={amount}")
            check_config(cfg)
            plan = make_callback(cfg)[0].plan
            assert plan[-1].target == amount and plan[-1].epoch < cfg.trainer.max_epochs - 1
            assert cfg.trainer.max_epochs == dense.trainer.max_epochs
            assert cfg.name == dense.name
    # the default iterative schedule cannot reach 0.95 in its epochs: the reason for the preset
    with pytest.raises(Exception, match="max_epochs"):
        make_callback(make_cfg("pruning=iterative", "pruning.schedule.amount=0.95"))
