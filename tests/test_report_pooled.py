"""prunelab report over several sweep folders (seeds from different sweeps pooled into one
point), series keyed by schedule and method, and budget runs shown by their budget."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import sys
from io import StringIO
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from test_report import _assert_nontrivial_png

from prunelab import report as R
from prunelab.cli import report as report_cli

ROOT = Path(__file__).resolve().parents[1]
PARAMS, MACS = 100_000, 2_000_000
DENSE = {0: 0.9940, 1: 0.9944, 2: 0.9936}


def _config(schedule: str, method: str, amount: float, seed: int, epochs: int,
            budget: int | None = None) -> dict:
    """A saved .hydra/config.yaml as a run writes it (the keys the report reads, a few more)."""
    return {
        "model": {"name": "cnn", "optimizer": {"lr": 0.05}},
        "data": {"name": "mnist", "seed": "${seed}", "data_dir": "${data_dir}"},
        "trainer": {"max_epochs": epochs, "enable_progress_bar": False},
        "pruning": {"schedule": schedule, "description": "text", "amount": amount,
                    "n_steps": 20 if epochs == 40 else 3, "budget": {"macs": budget,
                                                                     "params": None},
                    "method": {"name": method, "scope": "global"}},
        "seed": seed, "name": "whatever", "threads": 1, "data_dir": "data",
    }


def write_job(sweep: Path, folder: str, schedule: str, method: str, amount: float, seed: int,
              acc: float, sparsity: float, epochs: int = 40, overrides: list[str] | None = None,
              budget: dict | None = None, history_cost: dict | None = None) -> Path:
    """One finished job folder: results.json and .hydra/{config,overrides}.yaml."""
    d = sweep / folder
    (d / ".hydra").mkdir(parents=True)
    limit = (budget or history_cost or {}).get("limit")
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        _config(schedule, method, amount, seed, epochs, limit)))
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides or [f"seed={seed}"]))
    res = {
        "status": "ok", "model": "cnn", "data": "mnist", "schedule": schedule,
        "method": "dense" if schedule == "none" else method, "amount": amount, "seed": seed,
        "test_acc": acc, "test_loss": 0.1, "val_acc": acc, "sparsity_global": sparsity,
        "sparsity_layers": {}, "params_total": PARAMS,
        "params_nonzero": round(PARAMS * (1 - sparsity)), "macs_dense": MACS,
        "macs_effective": round(MACS * (1 - sparsity)), "fit_seconds": 1.0,
        "epoch_seconds": [], "epochs": epochs,
        "pruning_history": [{"step": 0, "cost": history_cost}] if history_cost else [],
        "overrides": overrides or [f"seed={seed}"], "versions": {},
    }
    if budget:
        res["budget"] = budget
        res["macs_compact"] = budget["reached"]
        res["params_compact"] = 15_000
    (d / "results.json").write_text(json.dumps(res))
    return d


# seed 0 launched with the preset's values spelled out; seeds 1 and 2 with experiment=<preset>
SPELLED = ["pruning=agp", "pruning.schedule.amount=0.99", "pruning.schedule.n_steps=20", "trainer.max_epochs=40"]
# (schedule, method, amount, epochs) -> {seed: (test_acc, sparsity reached)}
PRUNED = {
    ("agp", "global_magnitude", 0.99, 40): {0: (0.9923, 0.99), 1: (0.9921, 0.99), 2: (0.9930, 0.99)},
    ("agp", "global_magnitude", 0.995, 40): {0: (0.9913, 0.995), 1: (0.9905, 0.995)},
    ("at_init", "snip", 0.99, 40): {0: (0.9880, 0.99), 2: (0.9870, 0.99)},
    ("agp", "global_magnitude", 0.99, 5): {0: (0.9850, 0.99)},  # same method, other epochs
}


def pooled_sweeps(root: Path) -> list[Path]:
    a, b = root / "one" / "rec0", root / "two" / "rec_99"
    for (sched, method, amount, epochs), by_seed in PRUNED.items():
        for seed, (acc, sp) in by_seed.items():
            first = seed == 0
            ov = ([*SPELLED, f"seed={seed}"] if first else [f"experiment=x{amount}", f"seed={seed}"])
            write_job(a if first else b, f"{sched},{method},{amount},{epochs},s{seed}", sched,
                      method, amount, seed, acc, sp, epochs, overrides=ov)
    for seed, acc in DENSE.items():
        write_job(a if seed == 0 else b, f"dense,s{seed}", "none", "global_magnitude", 0.0, seed,
                  acc, 0.0, 40, overrides=["pruning=none", f"seed={seed}"])
    return [a, b]


def _pm(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def test_several_folders_pool_seeds_into_one_point_per_schedule_and_method(tmp_path: Path) -> None:
    dirs = pooled_sweeps(tmp_path)
    out = tmp_path / "report"
    assert report_cli.main([*map(str, dirs), "--out", str(out)]) == 0
    s = R.summarize(dirs)
    pts = {(p.schedule, p.method, p.amount, p.jobs[0].epochs): p for p in s.points
           if p.method != "dense"}
    assert set(pts) == set(PRUNED)  # at_init snip and agp magnitude are separate series
    md = (out / "summary.md").read_text()
    for key, by_seed in PRUNED.items():
        p = pts[key]
        assert p.n == len(by_seed) and {j.seed for j in p.jobs} == set(by_seed)
        mean, std = _pm([a for a, _ in by_seed.values()])
        assert p.mean("test_acc") == pytest.approx(mean)
        assert p.std("test_acc") == pytest.approx(std)
        # the table: accuracy and error, mean ± std over seeds, and the seed count
        row = (f"| {p.series} | {key[2]:g} | {len(by_seed)} | {100 * mean:.2f} ± {100 * std:.2f} "
               f"| {100 * (1 - mean):.2f} ± {100 * std:.2f} |")
        assert row in md, row
    # the 40-epoch magnitude runs of both sweeps are one series, labelled apart from the 5-epoch one
    g40, g5 = pts[("agp", "global_magnitude", 0.99, 40)], pts[("agp", "global_magnitude", 0.99, 5)]
    assert g40.series == pts[("agp", "global_magnitude", 0.995, 40)].series != g5.series
    assert "max_epochs=5" in g5.series and "max_epochs=40" in g40.series
    assert "(at_init)" in pts[("at_init", "snip", 0.99, 40)].series
    assert "(agp)" in g40.series
    # the dense baseline pools the seeds of both folders
    dmean, dstd = _pm(list(DENSE.values()))
    assert f"{100 * dmean:.2f} ± {100 * dstd:.2f} % over 3 seed(s)" in md
    # job folders are named by their sweep
    rows = list(csv.DictReader(StringIO((out / "summary.csv").read_text())))
    assert {r["folder"].split("/")[0] for r in rows} == {"rec0", "rec_99"}

    # the plot: test error vs weights kept, both axes log, one line per series, dense as a line
    fig = R.plot_pair(s, "cnn", "mnist", "sparsity")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.containers) == 3  # magnitude 40 ep (2 points), magnitude 5 ep, snip
    labels = [c.get_label() for c in ax.containers]
    assert sum("seeds per point: 2/3" in x for x in labels) == 1
    line = ax.containers[labels.index(next(x for x in labels if "2/3" in x))].lines[0]
    assert list(line.get_xdata()) == pytest.approx([1.0, 0.5])  # % kept, 99 % then 99.5 %
    dense = [ln for ln in ax.get_lines() if ln.get_label().startswith("dense:")]
    assert len(dense) == 1 and list(dense[0].get_ydata()) == pytest.approx([100 * (1 - dmean)] * 2)
    _assert_nontrivial_png(out / "acc_vs_sparsity.png")


def test_budget_runs_are_shown_by_their_budget(tmp_path: Path) -> None:
    sweep = tmp_path / "rec_struct"
    # a results.json with the budget record, and one written before it (cost in the history):
    # their amounts differ, but the budget is what they were asked for, so they are one point
    write_job(sweep, "experiment=x,seed=0", "agp", "ln_structured", 0.9, 0, 0.9920, 0.86, 20,
              budget={"metric": "macs", "limit": 160_000, "reached": 155_188, "dense": MACS})
    write_job(sweep, "experiment=x,seed=1", "agp", "ln_structured", 0.8, 1, 0.9910, 0.85, 20,
              history_cost={"metric": "macs", "limit": 160_000, "reached": 158_000,
                            "dense": MACS})
    write_job(sweep, "experiment=x,seed=2", "agp", "ln_structured", 0.9, 2, 0.9900, 0.87, 20,
              budget={"metric": "macs", "limit": 100_000, "reached": 99_000, "dense": MACS})
    s = R.report(sweep)
    pts = [p for p in s.points if p.method != "dense"]
    assert sorted((p.budget, p.n) for p in pts) == [("macs=100000", 1), ("macs=160000", 2)]
    assert all(p.amount is None for p in pts)
    p160 = next(p for p in pts if p.budget == "macs=160000")
    assert p160.setting == "macs ≤ 160k" and p160.series == pts[0].series == "ln_structured macs budget"
    assert p160.mean("budget_reached") == pytest.approx((155_188 + 158_000) / 2)
    md = (sweep / "summary.md").read_text()
    assert "## Budget runs" in md
    assert "| ln_structured macs budget | macs ≤ 160k | 2 | 157k |" in md
    # no amount pivot or "highest sparsity" answer built from the misleading amounts
    assert "method × amount" not in md and "amount 0.9 →" not in md
    rows = {r["folder"]: r for r in csv.DictReader(StringIO((sweep / "summary.csv").read_text()))}
    assert rows["experiment=x,seed=0"]["budget"] == "macs=160000" and rows["experiment=x,seed=0"]["budget_reached"] == "155188"
    assert rows["experiment=x,seed=1"]["budget"] == "macs=160000" and rows["experiment=x,seed=1"]["budget_reached"] == "158000"
    assert rows["experiment=x,seed=0"]["macs_compact"] == "155188"
    # and back from the csv
    again = R.summarize_csv(sweep / "summary.csv")
    assert sorted(p.budget for p in again.points) == ["macs=100000", "macs=160000"]


def test_several_folders_need_out_and_missing_ones_are_noted(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dirs = pooled_sweeps(tmp_path)
    assert report_cli.main([*map(str, dirs)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "prunelab report: error: several folders: give --out DIR for the pooled report"
    gone = tmp_path / "not_yet"
    assert report_cli.main([*map(str, dirs), str(gone), "--out", str(tmp_path / "o")]) == 2
    assert f"{gone}: no such directory" in capsys.readouterr().err
    assert not (tmp_path / "o" / "summary.csv").exists()
    assert report_cli.main([*map(str, dirs), str(gone), "--out", str(tmp_path / "o"),
                            "--skip-missing"]) == 0
    assert f"{gone}: no such folder, left out" in (tmp_path / "o" / "summary.md").read_text()


def test_baseline_from_a_report_csv(tmp_path: Path) -> None:
    dirs = pooled_sweeps(tmp_path)
    R.report(dirs, out=tmp_path / "first")
    for d in dirs:  # the dense job folders are gone; their rows in the csv remain
        for dense in d.glob("dense,*"):
            shutil.rmtree(dense)
    assert all(j.drop_pts is None for j in R.summarize(dirs).jobs)
    s = R.summarize(dirs, [tmp_path / "first" / "summary.csv"])
    ok = [j for j in s.jobs if j.status == "ok"]
    assert len(ok) == 8 and all(
        j.drop_pts == pytest.approx(100 * (DENSE[j.seed] - j.test_acc)) for j in ok)


def _make_records():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "make_records.py"
    spec = importlib.util.spec_from_file_location("make_records", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_records"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_make_records_checks_every_seed_and_the_mean_of_each_preset(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Runs of a preset pool across roots; a run with a recipe override is not the preset's;
    each goal is judged per seed and on the mean, and says what misses."""
    mk = _make_records()
    one, two = tmp_path / "a" / "sweeps", tmp_path / "b" / "sweeps"

    def run(root: Path, preset: str, seed: int, acc: float, *extra: str, outdated: bool = False,
            **kw) -> Path:
        overrides = [f"experiment={preset}", f"seed={seed}", "threads=1", "name=x", *extra]
        d = write_job(root / preset, f"s{seed}" + "".join(extra) + "old" * outdated, "agp",
                      "global_magnitude", 0.99, seed, acc, 0.99, 40, overrides=overrides, **kw)
        # the run's config holds what the preset file sets (an outdated run: one value differs)
        own = OmegaConf.load(ROOT / "conf" / "experiment" / f"{preset}.yaml")
        cfg = OmegaConf.merge(OmegaConf.load(d / ".hydra" / "config.yaml"),
                              {k: v for k, v in own.items() if k != "defaults"})
        if outdated:
            OmegaConf.update(cfg, next(iter(mk.preset_settings(preset))), "other")
        OmegaConf.save(cfg, d / ".hydra" / "config.yaml")
        return d

    # lenet5_99: seeds 0-4 at 0.70, 0.72, 0.74, 0.68, 0.71 % (mean 0.71 > 0.70), across roots
    for seed, err in enumerate((0.70, 0.72, 0.74, 0.68, 0.71)):
        run(one if seed < 2 else two, "lenet5_99", seed, 1 - err / 100, *(["quantize=ptq"] * (seed == 0)))
    run(two, "lenet5_99", 0, 0.9, "pruning/method=taylor")  # another recipe: not the preset
    # made with an earlier version of the preset file (newer, yet left out, and said so)
    run(two, "lenet5_99", 1, 0.95, outdated=True)
    # lenet5_99_64: every seed inside both limits
    for seed in range(5):
        run(one, "lenet5_99_64", seed, 0.9930)
    # lenet5_structured_160k: float32 accuracies whose mean error is 0.80 % to 1e-6 meet
    # "mean <= 0.80"; seed 4's network is over the MAC budget
    for seed, acc in enumerate((0.9922999739646912, 0.9923999905586243, 0.9912999868392944,
                                0.9919999837875366, 0.9919999837875366)):
        run(one, "lenet5_structured_160k", seed, acc,
            budget={"metric": "macs", "limit": 160_000, "reached": 170_000 if seed == 4 else 150_000})
    # imdb_95: 3 seeds, 1.2 points below the dense reference's 87.0 %
    for seed in range(3):
        write_job(two / "dense", f"d{seed}", "none", "dense", 0.0, seed, 0.870, 0.0, 5,
                  overrides=["experiment=study_imdb", "pruning=none", "trainer.max_epochs=5",
                             f"seed={seed}"])
        run(two, "imdb_95", seed, 0.858)
    out = tmp_path / "records"
    assert mk.main(["--roots", str(one), str(two), str(tmp_path / "nowhere"), "--out", str(out)]) == 0
    assert "does not exist" in capsys.readouterr().err
    md = (out / "records.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| `experiment=lenet5_99`"))
    assert "| 0.70, 0.72, 0.74, 0.68, 0.71 | 0.71 ± 0.02 % | not met: mean 0.71 % > 0.70 |" in row
    row = next(line for line in md.splitlines() if line.startswith("| `experiment=lenet5_99_64`"))
    assert row.endswith("| met |")
    row = next(line for line in md.splitlines() if line.startswith("| `experiment=imdb_95`"))
    assert ("| 1.20, 1.20, 1.20, —, — | 1.20 ± 0.00 pts | not met: mean 1.20 pts > 1.00; "
            "seed(s) 3, 4 not run |") in row
    row = next(line for line in md.splitlines() if line.startswith("| `experiment=lenet5_structured_160k`"))
    assert row.endswith("| 0.77, 0.76, 0.87, 0.80, 0.80 | 0.80 ± 0.04 % | not met: seed 4: 170000 MACs > 160000 |")
    row = next(line for line in md.splitlines() if line.startswith("| `experiment=lenet5_structured_100k`"))
    assert row.endswith("| not met: seed(s) 0, 1, 2, 3, 4 not run |")
    assert "Dense IMDB reference" in md and "87.00 %" in md
    # the quantised run shows its int8 error beside the fp32 one; the taylor run is nowhere
    assert "| lenet5_99 | 0 | 0.70 % |" in md and "10.00 %" not in md and "5.00 %" not in md
    assert "lenet5_99 seed 1: " in md and "made with an earlier version of the preset" in md
    assert (out / "records.png").stat().st_size > 10_000


def test_pruned_runs_are_compared_with_the_strongest_dense_configuration(tmp_path):
    """Dense runs of two budgets (10 epochs overfits: worse): the drop is measured against the
    better one, not the average of both."""
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        write_job(sweep, f"dense5_{seed}", "none", "dense", 0.0, seed, 0.870, 0.0, epochs=5)
        write_job(sweep, f"dense10_{seed}", "none", "dense", 0.0, seed, 0.856, 0.0, epochs=10)
        write_job(sweep, f"snip_{seed}", "at_init", "snip", 0.9, seed, 0.864, 0.9, epochs=10)
    s = R.report([sweep], out=tmp_path / "out")
    snip = next(p for p in s.points if p.method == "snip")
    assert snip.mean("drop_pts") == pytest.approx(0.6)  # 87.0 - 86.4, not 86.3 - 86.4
    assert any("strongest of 2 dense configurations: max_epochs=5" in src
               for src in s.baseline.sources)
