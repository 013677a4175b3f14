"""prunelab report on synthetic job folders with known numbers (no training)."""

from __future__ import annotations

import csv
import json
import statistics
from io import StringIO
from pathlib import Path

import numpy as np
import pytest

from prunelab import report as R
from prunelab.cli import report as report_cli

DENSE = {0: 0.9800, 1: 0.9700}
# (method, amount) -> {seed: (test_acc, sparsity reached)}
PRUNED = {
    ("l1_unstructured", 0.5): {0: (0.9790, 0.5001), 1: (0.9720, 0.4999)},
    ("l1_unstructured", 0.9): {0: (0.9760, 0.9000), 1: (0.9660, 0.9002)},
    ("random_unstructured", 0.5): {0: (0.9700, 0.5000), 1: (0.9650, 0.5000)},
    ("random_unstructured", 0.9): {0: (0.9000, 0.9000), 1: (0.8700, 0.9000)},
}
PARAMS, MACS = 100_000, 2_000_000


def _results(method: str, amount: float, seed: int, acc: float, sparsity: float) -> dict:
    dense = method == "dense"
    return {
        "status": "ok", "model": "cnn", "data": "mnist",
        "schedule": "none" if dense else "one_shot", "method": method, "amount": amount,
        "seed": seed, "test_acc": acc, "test_loss": 0.1, "val_acc": acc,
        "sparsity_global": sparsity, "sparsity_layers": {"conv1.weight": sparsity},
        "params_total": PARAMS, "params_nonzero": int(PARAMS * (1 - sparsity)),
        "macs_dense": MACS, "macs_effective": int(MACS * (1 - sparsity)),
        "fit_seconds": 10.0 + seed, "epoch_seconds": [5.0, 5.0], "epochs": 2,
        "pruning_history": [],
        "overrides": ([f"pruning={'none' if dense else 'one_shot'}", f"seed={seed}"]
                      + ([] if dense else [f"pruning/method={method}", f"pruning.amount={amount}"])),
        "versions": {},
    }


def _hydra(folder: Path, schedule: str, method: str, amount: float, seed: int,
           overrides: list[str]) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(
        f"model:\n  name: cnn\ndata:\n  name: mnist\n  seed: ${{seed}}\npruning:\n"
        f"  schedule: {schedule}\n  amount: {amount}\n  method:\n    name: {method}\nseed: {seed}\n")
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))


def make_sweep(root: Path, dense: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    jobs = []
    if dense:
        jobs += [("dense", 0.0, s, a, 0.0) for s, a in DENSE.items()]
    for (m, amount), by_seed in PRUNED.items():
        jobs += [(m, amount, s, a, sp) for s, (a, sp) in by_seed.items()]
    for m, amount, seed, acc, sp in jobs:
        res = _results(m, amount, seed, acc, sp)
        d = root / ",".join(sorted(res["overrides"])).replace("/", ".")
        _hydra(d, res["schedule"], m, amount, seed, res["overrides"])
        (d / "results.json").write_text(json.dumps(res))
    bad = ["pruning=one_shot", "pruning/method=random_unstructured", "pruning.amount=1.5", "seed=0"]
    failed = root / "failed_job"
    _hydra(failed, "one_shot", "random_unstructured", 1.5, 0, bad)
    (failed / "failed.json").write_text(json.dumps({
        "status": "failed", "error": "pruning.amount=1.5 is outside [0, 1)",
        "error_type": "ConfigError", "overrides": bad}))
    running = ["pruning=one_shot", "pruning/method=l1_unstructured", "pruning.amount=0.95",
               "seed=1"]
    _hydra(root / "running_job", "one_shot", "l1_unstructured", 0.95, 1, running)
    (root / ".submitit").mkdir()  # hidden folders are not jobs
    return root


def _expected(method: str, amount: float) -> dict:
    by_seed = PRUNED[(method, amount)]
    accs = [a for a, _ in by_seed.values()]
    drops = [100 * (DENSE[s] - a) for s, (a, _) in by_seed.items()]
    return {"mean": statistics.fmean(accs), "std": statistics.stdev(accs),
            "drop": statistics.fmean(drops),
            "sparsity": statistics.fmean(sp for _, sp in by_seed.values())}


def test_report_files_rows_and_pivot(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "sweep")
    assert report_cli.main([str(sweep), "--delta", "0.5"]) == 0
    for name in ("summary.csv", "summary.md", "acc_vs_sparsity.png", "acc_vs_macs.png"):
        assert (sweep / name).is_file(), name

    rows = list(csv.DictReader(StringIO((sweep / "summary.csv").read_text())))
    assert len(rows) == 2 + 8 + 2
    assert list(rows[0]) == R.CSV_COLUMNS
    status = {r["folder"]: r["status"] for r in rows}
    assert status["failed_job"] == "failed" and status["running_job"] == "incomplete"
    assert sum(s == "ok" for s in status.values()) == 10
    failed = next(r for r in rows if r["folder"] == "failed_job")
    assert "outside [0, 1)" in failed["error"] and failed["amount"] == "1.5"
    assert failed["method"] == "random_unstructured"
    # every ok row equals its own results.json, drop against the same seed's dense run
    for r in rows:
        if r["status"] != "ok":
            continue
        res = json.loads((sweep / r["folder"] / "results.json").read_text())
        assert float(r["test_acc"]) == res["test_acc"]
        assert float(r["sparsity_global"]) == res["sparsity_global"]
        assert int(r["params_nonzero"]) == res["params_nonzero"]
        assert int(r["macs_effective"]) == res["macs_effective"]
        assert int(r["seed"]) == res["seed"] and r["method"] == res["method"]
        want = 100 * (DENSE[res["seed"]] - res["test_acc"])
        assert float(r["drop_pts"]) == pytest.approx(want, abs=1e-9)

    s = R.summarize(sweep, delta=0.5)
    pruned = {(p.method, p.amount): p for p in s.points if p.method != "dense"}
    assert set(pruned) == set(PRUNED)
    md = (sweep / "summary.md").read_text()
    for key, p in pruned.items():
        e = _expected(*key)
        assert p.n == 2
        assert p.mean("test_acc") == pytest.approx(e["mean"])
        assert p.std("test_acc") == pytest.approx(e["std"])
        assert p.mean("drop_pts") == pytest.approx(e["drop"])
        assert p.mean("sparsity_global") == pytest.approx(e["sparsity"])
        cell = f"{100 * e['mean']:.2f} ± {100 * e['std']:.2f} ({e['drop']:+.2f})"
        assert cell in md, cell
    dense = statistics.fmean(DENSE.values()), statistics.stdev(DENSE.values())
    assert f"{100 * dense[0]:.2f} ± {100 * dense[1]:.2f} % over 2 seed(s)" in md
    # highest sparsity within 0.5 pts: L1 keeps 90 % (drop 0.4), random only 50 % (drop 0.75 > 0.5
    # at 0.5 too, so none)
    assert s.best["l1_unstructured"]["answer"] == 0.9
    assert s.best["random_unstructured"]["answer"] is None
    wide = R.summarize(sweep, delta=1.0).best
    assert wide["random_unstructured"]["answer"] == 0.5
    # failed and incomplete jobs are listed, with their reasons
    assert "failed_job | failed | ConfigError" in md and "running_job | incomplete" in md


def _assert_nontrivial_png(path: Path) -> None:
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.shape[0] >= 200 and img.shape[1] >= 200
    colours = np.unique(img.reshape(-1, img.shape[-1]).round(3), axis=0)
    assert len(colours) > 20


def test_plots_are_real_images(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "sweep")
    s = R.report(sweep, out=tmp_path / "out")
    assert {f.name for f in s.files} >= {"acc_vs_sparsity.png", "acc_vs_macs.png"}
    _assert_nontrivial_png(tmp_path / "out" / "acc_vs_sparsity.png")
    _assert_nontrivial_png(tmp_path / "out" / "acc_vs_macs.png")
    assert not (sweep / "summary.csv").exists()  # --out leaves the sweep dir alone


def test_baseline_from_another_dir(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "pruned", dense=False)
    no_base = R.summarize(sweep)
    assert all(j.drop_pts is None for j in no_base.jobs)
    assert "no dense baseline" in no_base.best["l1_unstructured"]["reason"]

    dense_sweep = tmp_path / "dense"
    for seed, acc in DENSE.items():
        d = dense_sweep / f"pruning=none,seed={seed}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(_results("dense", 0.0, seed, acc, 0.0)))
    assert report_cli.main([str(sweep), "--baseline", str(dense_sweep)]) == 0
    rows = [r for r in csv.DictReader(StringIO((sweep / "summary.csv").read_text())) if r["status"] == "ok"]
    assert len(rows) == 8
    for r in rows:
        want = 100 * (DENSE[int(r["seed"])] - float(r["test_acc"]))
        assert float(r["drop_pts"]) == pytest.approx(want)
    # a single run folder works as a baseline too
    one = R.summarize(sweep, [dense_sweep / "pruning=none,seed=0"])
    assert {j.seed for j in one.jobs if j.drop_pts is not None} == {0}


@pytest.mark.parametrize("kind", ["missing", "empty", "file", "bad-baseline"])
def test_bad_sweep_dir_is_one_line_exit_2(tmp_path: Path, kind: str,
                                          capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "x"
    args = [str(target)]
    if kind == "empty":
        (target / "not_a_job").mkdir(parents=True)
    elif kind == "file":
        target.write_text("hi")
    elif kind == "bad-baseline":
        make_sweep(target, dense=False)
        args += ["--baseline", str(tmp_path / "nowhere")]
    assert report_cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prunelab report: error:") and "\n" not in err


def test_unreadable_results_are_listed(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "sweep")
    bad = sweep / "broken"
    bad.mkdir()
    (bad / "results.json").write_text("{not json")
    s = R.summarize(sweep)
    assert next(j for j in s.jobs if j.folder == "broken").status == "unreadable"
    (sweep / "search.json").write_text(json.dumps({
        "delta": 0.5, "lo": 0.5, "hi": 0.99, "overrides": ["pruning=one_shot"],
        "methods": {"l1_unstructured": {"status": "found", "message": "amount 0.93 (drop 0.4)"}}}))
    R.report(sweep)
    md = (sweep / "summary.md").read_text()
    assert "Bisection search" in md and "amount 0.93 (drop 0.4)" in md


def test_notes_on_unfair_baselines(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "sweep")
    assert R.summarize(sweep).notes == []
    for d in sweep.glob("pruning=none,seed=*"):  # dense trained fewer epochs than pruned
        res = json.loads((d / "results.json").read_text())
        (d / "results.json").write_text(json.dumps({**res, "epochs": 3}))
    other = sweep / "pruning=none,seed=0,trainer.max_epochs=3"  # a second dense configuration
    other.mkdir()
    res = _results("dense", 0.0, 0, 0.5, 0.0)
    res["overrides"] += ["trainer.max_epochs=3"]
    (other / "results.json").write_text(json.dumps(res))
    notes = R.summarize(sweep).notes
    assert any("2 different dense configurations" in n for n in notes)
    assert any("dense runs trained 2/3 epochs, pruned runs 2" in n for n in notes)
    R.report(sweep)
    assert "> **Note:**" in (sweep / "summary.md").read_text()


# ---------------------------------------------------------------- exported artifacts (bytes)

DENSE_BYTES = 400_000
# (method, amount, seed, encoding folder) -> (artifact bytes, test acc measured from the file)
EXPORTS = {
    ("l1_unstructured", 0.5, 0, "kmeans4"): (60_000, 0.9780),
    ("l1_unstructured", 0.5, 1, "kmeans4"): (62_000, 0.9710),
    ("l1_unstructured", 0.9, 0, "kmeans4"): (14_000, 0.9750),
    ("l1_unstructured", 0.9, 0, "int8"): (20_000, 0.9761),
    ("l1_unstructured", 0.9, 0, "kmeans3-ft1"): (12_000, 0.9740),
    ("dense", 0.0, 0, "int8"): (110_000, 0.9800),
}


def _job_dir(sweep: Path, method: str, amount: float, seed: int) -> Path:
    for d in sweep.iterdir():
        f = d / "results.json"
        if f.is_file():
            r = json.loads(f.read_text())
            if (r["method"], r["amount"], r["seed"]) == (method, amount, seed):
                return d
    raise AssertionError((method, amount, seed))


def write_export(job: Path, enc: str, size: int, acc: float) -> Path:
    """An export.json as ``prunelab export`` writes it (the fields the report reads)."""
    folder = job / "export" / enc
    folder.mkdir(parents=True)
    (folder / "export.json").write_text(json.dumps({
        "artifact": str(folder / "model.plx"), "encoding": enc.split("-")[0],
        "artifact_bytes": size, "dense_bytes": DENSE_BYTES, "ratio": DENSE_BYTES / size,
        "test_acc": acc, "test_error": 1 - acc, "test_samples": 10_000}))
    return folder / "export.json"


def exported_sweep(root: Path) -> Path:
    sweep = make_sweep(root)
    for (m, a, seed, enc), (size, acc) in EXPORTS.items():
        write_export(_job_dir(sweep, m, a, seed), enc, size, acc)
    return sweep


def test_report_adds_artifact_columns_table_and_bytes_plot(tmp_path: Path) -> None:
    sweep = exported_sweep(tmp_path / "sweep")
    # a damaged export.json is left out, the rest of the report stands
    (_job_dir(sweep, "random_unstructured", 0.9, 0) / "export" / "int8").mkdir(parents=True)
    (_job_dir(sweep, "random_unstructured", 0.9, 0) / "export" / "int8" / "export.json"
     ).write_text("{trunc")
    s = R.report(sweep)
    assert sweep / "acc_vs_bytes.png" in s.files
    _assert_nontrivial_png(sweep / "acc_vs_bytes.png")

    rows = list(csv.DictReader(StringIO((sweep / "summary.csv").read_text())))
    encs = ["int8", "kmeans4", "kmeans3-ft1"]  # in the codec's order, fine-tuned after plain
    assert list(rows[0])[len(R.CSV_COLUMNS):] == [
        f"{p}{e}" for e in encs for p in ("artifact_bytes_", "ratio_", "artifact_test_acc_")]
    by_folder = {r["folder"]: r for r in rows}
    for (m, a, seed, enc), (size, acc) in EXPORTS.items():
        r = by_folder[_job_dir(sweep, m, a, seed).name]
        assert int(r[f"artifact_bytes_{enc}"]) == size
        assert float(r[f"ratio_{enc}"]) == pytest.approx(DENSE_BYTES / size)
        assert float(r[f"artifact_test_acc_{enc}"]) == acc
    unexported = by_folder[_job_dir(sweep, "random_unstructured", 0.9, 0).name]
    assert all(unexported[c] == "" for c in R.export_columns(s.jobs))

    md = (sweep / "summary.md").read_text()
    assert "## Artifacts: test accuracy vs bytes" in md
    # l1 at 0.5, kmeans4: two seeds, mean bytes 61,000, mean acc (97.80 + 97.10) / 2
    assert "| l1_unstructured | 0.5 | kmeans4 | 2 | 61,000 | 6.6 | 97.45 | 97.55 |" in md
    assert "| dense | — | int8 | 1 | 110,000 | 3.6 | 98.00 |" in md
    assert "![acc_vs_bytes](acc_vs_bytes.png)" in md

    fig = R.plot_bytes(s, "cnn", "mnist")
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    k4 = lines["l1_unstructured · kmeans4"]
    assert list(k4.get_xdata()) == [14_000, 61_000]  # one point per amount, seeds averaged
    assert list(k4.get_ydata()) == pytest.approx([2.5, 100 * (1 - 0.9745)])
    assert "l1_unstructured · kmeans3-ft1" in lines and "dense · int8" in lines
    star = next(ln for label, ln in lines.items() if label.startswith("dense fp32 state dict"))
    assert list(star.get_xdata()) == [DENSE_BYTES]  # at the dense size and the dense error
    assert list(star.get_ydata()) == pytest.approx([100 * (1 - statistics.fmean(DENSE.values()))])
    assert fig.axes[0].get_xscale() == "log"


def test_bytes_plot_and_columns_come_back_from_the_csv(tmp_path: Path) -> None:
    sweep = exported_sweep(tmp_path / "sweep")
    R.report(sweep, out=tmp_path / "first")
    (tmp_path / "first" / "acc_vs_bytes.png").unlink()
    s = R.replot(tmp_path / "first" / "summary.csv")
    assert (tmp_path / "first" / "acc_vs_bytes.png").is_file()
    job = next(j for j in s.jobs if j.method == "l1_unstructured" and j.amount == 0.9
               and j.seed == 0)
    assert job.exports["kmeans4"] == {"artifact_bytes": 14_000, "ratio": DENSE_BYTES / 14_000,
                                      "test_acc": 0.975, "dense_bytes": DENSE_BYTES}


# ---------------------------------------------------------------- the trade-off: bytes, latency

# format -> (bytes, test acc measured from the file, latency ratio at batch 256 and 1 or None)
DEPLOYED = {"onnx": (400_500, 0.9760, (1.0, 1.0)), "onnx-int8": (104_000, 0.9750, (0.6, 0.4)),
            "executorch-int8-compact": (26_000, 0.9740, (0.2, 0.1)),
            "executorch-int8": (103_000, 0.9755, None)}  # exported with --no-latency
EAGER_MS = {"dense": {"bs256": 20.0, "bs1": 0.4}, "masked": {"bs256": 21.0, "bs1": 0.42},
            "compact": {"bs256": 5.0, "bs1": 0.2}}


def write_deployed(job: Path, fmt: str, size: int, acc: float,
                   ratios: tuple[float, float] | None) -> None:
    """An export.json as ``prunelab export --format`` writes it (the keys the report reads)."""
    folder = job / "export" / fmt
    folder.mkdir(parents=True)
    rec = {"format": fmt, "artifact": str(folder / "model.pte"), "artifact_bytes": size,
           "dense_bytes": DENSE_BYTES, "ratio": DENSE_BYTES / size, "test_acc": acc,
           "runtime": {"onnxruntime" if fmt.startswith("onnx") else "executorch": "1.0"}}
    if fmt.endswith("-compact"):
        rec["compacted_from"] = str(job / "compact_model.pt2")
    if ratios is not None:
        rec.update(latency_ratio=dict(zip(("bs256", "bs1"), ratios, strict=True)),
                   latency_ms={"bs256": 10.0 * ratios[0], "bs1": 0.2 * ratios[1]},
                   dense_latency_ms={"bs256": 10.0, "bs1": 0.2}, threads=2)
    (folder / "export.json").write_text(json.dumps(rec))


def deployed_sweep(root: Path) -> tuple[Path, Path]:
    """The sweep with one job compacted, quantised and exported in four formats, and three
    exports that went wrong; (sweep, that job)."""
    sweep = make_sweep(root)
    job = _job_dir(sweep, "l1_unstructured", 0.9, 0)
    res = json.loads((job / "results.json").read_text())
    res.update(latency_ms=EAGER_MS, params_compact=20_000, int8_test_acc=0.9757)
    (job / "results.json").write_text(json.dumps(res))
    for fmt, (size, acc, ratios) in DEPLOYED.items():
        write_deployed(job, fmt, size, acc, ratios)
    write_deployed(job, "executorch", 401_000, 0.9760, (1.0, 1.0))
    write_export(job, "int8", 20_000, 0.9761)  # a .plx artifact: sized, never timed
    rec = json.loads((job / "export" / "executorch" / "export.json").read_text())
    rec["latency_ratio"] = {"bs256": "fast", "bs1": -1}  # a damaged value: a blank cell
    (job / "export" / "executorch" / "export.json").write_text(json.dumps(rec))
    (job / "export" / "onnx-compact").mkdir()  # the export died before its export.json
    (job / "export" / "onnx-int8-compact").mkdir()
    (job / "export" / "onnx-int8-compact" / "export.json").write_text('{"format": "x"}')
    return sweep, job


def test_trade_off_table_lists_every_variant_with_bytes_latency_and_error(tmp_path: Path) -> None:
    sweep, job = deployed_sweep(tmp_path / "sweep")
    s = R.report(sweep)  # the damaged exports are notes, not a crash
    md = (sweep / "summary.md").read_text()
    assert "## Trade-off: bytes, latency and test error per format" in md
    f = job.name
    for row in [
        f"| {f} | dense (baseline) | fp32 | state dict | each runtime | 400,000 | 1.0 | 1 | 1 | 2.00 |",
        f"| {f} | masked | fp32 | final_model.pt | PyTorch eager | 400,000 | 1.0 | 1.05 | 1.05 | 2.40 |",
        f"| {f} | compacted | fp32 | compact_model.pt2 | PyTorch eager | 80,000 | 5.0 | 0.25 | 0.50 | 2.40 |",
        f"| {f} | masked | int8 | quantized_model.pt2 | PyTorch | — | — | — | — | 2.43 |",
        f"| {f} | masked | int8 | int8 | PyTorch (.plx) | 20,000 | 20.0 | — | — | 2.39 |",
        f"| {f} | masked | fp32 | onnx | ONNX Runtime | 400,500 | 1.0 | 1.00 | 1.00 | 2.40 |",
        f"| {f} | masked | int8 | onnx-int8 | ONNX Runtime | 104,000 | 3.8 | 0.60 | 0.40 | 2.50 |",
        f"| {f} | masked | fp32 | executorch | ExecuTorch | 401,000 | 1.0 | — | — | 2.40 |",
        f"| {f} | masked | int8 | executorch-int8 | ExecuTorch | 103,000 | 3.9 | — | — | 2.45 |",
        f"| {f} | compacted | int8 | executorch-int8-compact | ExecuTorch | 26,000 | 15.4 | 0.20 "
        "| 0.10 | 2.60 |",
    ]:
        assert row in md, row
    notes = md.split("Exports left out or incomplete:")[1].split("##")[0]
    assert f"`{f}/export/onnx-compact: no export.json (the export did not finish)" in notes
    assert f"`{f}/export/onnx-int8-compact/export.json: no artifact_bytes, left out`" in notes
    assert "latency_ratio[bs256] 'fast' is not a positive number" in notes
    assert "latency_ratio[bs1] -1 is not a positive number" in notes
    assert "onnx-compact |" not in md

    rows = {r["folder"]: r for r in csv.DictReader(StringIO((sweep / "summary.csv").read_text()))}
    assert float(rows[f]["latency_ratio_bs256_onnx-int8"]) == 0.6
    assert float(rows[f]["latency_ratio_bs1_executorch-int8-compact"]) == 0.1
    assert rows[f]["artifact_bytes_int8"] == "20000"
    assert "latency_ratio_bs256_int8" not in rows[f]  # a .plx encoding is not timed
    assert "latency_ratio_bs256_executorch-int8" not in rows[f]  # --no-latency

    assert sweep / "acc_vs_latency.png" in s.files
    _assert_nontrivial_png(sweep / "acc_vs_latency.png")
    assert "![acc_vs_latency](acc_vs_latency.png)" in md


def test_latency_plot_places_each_format_at_its_ratio_in_its_runtime(tmp_path: Path) -> None:
    sweep, _ = deployed_sweep(tmp_path / "sweep")
    s = R.summarize(sweep)
    fig = R.plot_latency(s, "cnn", "mnist")
    for ax, bs in zip(fig.axes[:2], (0, 1), strict=True):
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        for fmt, (_, acc, ratios) in DEPLOYED.items():
            label = f"l1_unstructured · {fmt}"
            if ratios is None:
                assert label not in lines  # not timed: not on this plot
                continue
            assert list(lines[label].get_xdata()) == [ratios[bs]]
            assert list(lines[label].get_ydata()) == pytest.approx([100 * (1 - acc)])
        eager = lines["l1_unstructured · compacted fp32, PyTorch"]
        assert list(eager.get_xdata()) == [(0.25, 0.5)[bs]]
        dense = next(ln for label, ln in lines.items() if label.startswith("dense fp32"))
        assert list(dense.get_xdata()) == [1.0]
        assert list(dense.get_ydata()) == pytest.approx([100 * (1 - statistics.fmean(DENSE.values()))])
        # int8 filled, fp32 hollow: told apart without colour
        int8, fp32 = lines["l1_unstructured · onnx-int8"], lines["l1_unstructured · onnx"]
        assert int8.get_markerfacecolor() != "none" and fp32.get_markerfacecolor() == "none"
        assert int8.get_color() != fp32.get_color()
    fig = R.plot_bytes(s, "cnn", "mnist")
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert list(lines["l1_unstructured · compacted fp32, PyTorch"].get_xdata()) == [80_000]
    assert list(lines["l1_unstructured · executorch-int8-compact"].get_xdata()) == [26_000]


def test_latency_plot_comes_back_from_the_csv(tmp_path: Path) -> None:
    sweep, _ = deployed_sweep(tmp_path / "sweep")
    R.report(sweep, out=tmp_path / "first")
    (tmp_path / "first" / "acc_vs_latency.png").unlink()
    s = R.replot(tmp_path / "first" / "summary.csv")
    assert tmp_path / "first" / "acc_vs_latency.png" in s.files
    job = next(j for j in s.jobs if j.method == "l1_unstructured" and j.amount == 0.9
               and j.seed == 0)
    assert job.exports["onnx-int8"]["latency_ratio_bs1"] == 0.4


def test_no_bytes_plot_without_exports(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "sweep")
    s = R.report(sweep)
    assert not (sweep / "acc_vs_bytes.png").exists()
    assert not (sweep / "acc_vs_latency.png").exists()
    assert "Artifacts" not in (sweep / "summary.md").read_text()
    assert "Trade-off" not in (sweep / "summary.md").read_text()
    assert all(not j.exports for j in s.jobs)
