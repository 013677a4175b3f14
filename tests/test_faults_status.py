"""Fault injection: a run that did not do what was asked is never reported "ok".

Each test injects one fault (a NaN in the weights, a learning rate that blows up, a pruning
step that misses its target, a meaningless config value, a damaged results.json) and checks the
behaviour a user relies on: a clear one-line error, the right status on disk, a report that
lists the job as what it is.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from prunelab import report as R
from prunelab.cli import report as report_cli
from prunelab.cli import search as search_cli
from prunelab.errors import ConfigError, DivergedError, ResultError
from prunelab.pruning import PruningCallback
from prunelab.pruning import criteria as M
from prunelab.run import FAILED, RESULTS, run, run_or_record_failure

from conftest import TINY

FAST = ["trainer=fast", "logger=none"]


class PoisonWeights(L.Callback):
    """Fill ``net.fc1.weight`` with ``value`` at a chosen moment (the fault to inject)."""

    def __init__(self, when: str, epoch: int = 0, batch: int = 2, value: float = math.nan) -> None:
        self.when, self.epoch, self.batch, self.value = when, epoch, batch, value

    def _poison(self, pl_module: L.LightningModule) -> None:
        with torch.no_grad():
            pl_module.net.fc1.weight.fill_(self.value)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.when == "train" and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            self._poison(pl_module)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if self.when == "val" and trainer.current_epoch == self.epoch:
            self._poison(pl_module)


# --------------------------------------------------------------------------- divergence


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nan_loss_in_training_stops_the_run_as_diverged(make_cfg, tmp_path, value):
    cfg = make_cfg(*FAST, "pruning=one_shot", "pruning.schedule.start_epoch=1", "pruning.schedule.amount=0.5")
    run_dir = tmp_path / "run"
    with pytest.raises(DivergedError, match=r"train loss is (nan|inf) in epoch 1") as info:
        _run(cfg, run_dir, [PoisonWeights("train", epoch=1, batch=2, value=value)])
    # stopped within the epoch it happened, before the pruning step saw the weights
    assert info.value.epoch == 1 and info.value.stage == "train"
    assert info.value.step == 8  # the epoch's last batch (4 an epoch): checked before val
    assert not (run_dir / RESULTS).exists()


def _run(cfg, run_dir: Path, callbacks: list) -> dict:
    return run(cfg, run_dir, [], callbacks=callbacks)


def test_nan_in_validation_stops_the_run_as_diverged(make_cfg, tmp_path):
    cfg = make_cfg(*FAST)
    with pytest.raises(DivergedError, match="val loss is nan in epoch 0") as info:
        _run(cfg, tmp_path / "run", [PoisonWeights("val", epoch=0)])
    assert info.value.stage == "val" and info.value.epoch == 0


def test_diverged_job_records_status_epoch_and_step_and_the_sweep_goes_on(make_cfg, tmp_path,
                                                                         monkeypatch):
    import prunelab.run as prun

    real_run = prun.run
    poison = PoisonWeights("train", epoch=0, batch=1)

    def run_with_fault(cfg, run_dir, overrides=None, callbacks=None):
        return real_run(cfg, run_dir, overrides, callbacks=[poison])

    monkeypatch.setattr(prun, "run", run_with_fault)
    cfg = make_cfg(*FAST)
    job = tmp_path / "sweep" / "seed=0"
    # in a sweep: recorded, no exception, the launcher moves on to the next job
    assert run_or_record_failure(cfg, job, ["seed=0"], multirun=True) is None
    failed = json.loads((job / FAILED).read_text())
    assert failed["status"] == "diverged" and failed["error_type"] == "DivergedError"
    assert failed["epoch"] == 0 and failed["step"] == 4 and failed["stage"] == "train"
    assert "\n" not in failed["error"] and "diverged" in failed["error"]
    # a single run: the error propagates (the entry point exits non-zero)
    with pytest.raises(DivergedError):
        run_or_record_failure(cfg, tmp_path / "single", [], multirun=False)
    assert json.loads((tmp_path / "single" / FAILED).read_text())["status"] == "diverged"

    # the report lists it with the failed jobs, never as ok
    monkeypatch.setattr(prun, "run", real_run)
    ok = tmp_path / "sweep" / "seed=1"
    run(make_cfg(*FAST, "seed=1"), ok, ["seed=1"])
    s = R.report(tmp_path / "sweep")
    status = {j.folder: j.status for j in s.jobs}
    assert status == {"seed=0": "diverged", "seed=1": "ok"}
    md = (tmp_path / "sweep" / "summary.md").read_text()
    bad = md.split("## Failed and incomplete jobs")[1].split("## All jobs")[0]
    assert "seed=0" in bad and "diverged" in bad and "seed=1" not in bad


def test_huge_learning_rate_through_the_entry_point_exits_non_zero(tiny_data, tmp_path):
    """Today's symptom: lr 1e6 exits 0 "ok" with a NaN loss and sparsity 0 against 0.5."""
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "prunelab", "model.optimizer.lr=1e6", "pruning=one_shot",
         "pruning.schedule.start_epoch=0", "pruning.schedule.amount=0.5", "trainer=fast", "trainer.max_epochs=2",
         f"data_dir={tiny_data}", *TINY, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]  # Lightning's INFO lines come before it
    assert last.startswith("prunelab: error: training diverged") and "Traceback" not in proc.stderr
    assert not (run_dir / RESULTS).exists()
    assert json.loads((run_dir / FAILED).read_text())["status"] == "diverged"


def test_check_every_batch_budget_is_one_sync_per_n_batches(make_cfg, tmp_path, monkeypatch):
    """The loss sum is read (a host-device sync) every check_every batches and at epoch end,
    not per batch."""
    from prunelab.models import system

    reads = []
    real = system.torch.isfinite

    def counting(t):
        reads.append(1)
        return real(t)

    monkeypatch.setattr(system.torch, "isfinite", counting)
    cfg = make_cfg(*FAST, "data.batch_size=16", "trainer.limit_train_batches=7",
                   "trainer.max_epochs=1", "+model.check_every=3")
    run(cfg, tmp_path / "run", [])
    assert len(reads) == 3  # after batches 3, 6 and the last one (7)


@pytest.mark.slow
def test_ddp_ranks_stop_together_when_one_diverges(tmp_path):
    """Only rank 0 sees the NaN batch; both ranks must stop at the same check, not hang."""
    script = Path(__file__).parent / "ddp_diverge.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {p.name: p.read_text() for p in tmp_path.glob("rank*.txt")}
    assert results == {"rank0.txt": "diverged epoch=0 step=3", "rank1.txt": "diverged epoch=0 step=3"}


# --------------------------------------------------------------------------- pruning checks


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(10, 20)
        self.b = nn.Linear(20, 2)


def _bound(method: str = "l1_unstructured", **kw) -> tuple[PruningCallback, Tiny]:
    torch.manual_seed(0)
    net = Tiny()
    cb = PruningCallback([(0, 0.5)], method=M.method(method, **kw),
                         targets={"skip_last": False})
    cb.bind(net)
    return cb, net


def test_nan_weights_refuse_the_step_naming_the_layer():
    cb, net = _bound()
    with torch.no_grad():
        net.b.weight[0, :3] = math.nan
    with pytest.raises(DivergedError, match=r"cannot prune b\.weight .* 3 of its 40 weights"):
        cb.apply_target(0.5)
    assert not hasattr(net.a, "weight_mask")  # no partial step was applied


@pytest.mark.parametrize("method,kw", [("l1_unstructured", {}), ("ln_structured", {}),
                                       ("global_magnitude", {}), ("taylor", {"scope": "global"})])
def test_a_step_that_misses_its_target_is_an_error(monkeypatch, method, kw):
    cb, net = _bound(method, **kw)
    real = M.compute_masks

    def one_short(*args, **kwargs):  # a criterion bug: leaves the step short
        masks = real(*args, **kwargs)
        m = masks["a.weight"]
        zero = (m == 0).nonzero()
        m[tuple(zero[: m.shape[1] + 1 if method == "ln_structured" else 2].T)] = 1
        return masks

    monkeypatch.setattr(M, "compute_masks", one_short)
    if method == "taylor":
        cb.stats.stats = {t.name: M.accumulate_grad_stats(None, getattr(t.module, t.parameter),
                                                           torch.randn_like(getattr(t.module, t.parameter)))
                     for t in cb.targets}
    with pytest.raises(ResultError, match="pruning step to 0.5000"):
        cb.apply_target(0.5)


@pytest.mark.parametrize("method", ["l1_unstructured", "ln_structured", "random_structured",
                                    "global_magnitude", "random_unstructured"])
def test_a_correct_step_passes_the_check(method):
    cb, net = _bound(method)
    for target in (0.3, 0.37, 0.5):
        achieved = cb.apply_target(target)
        assert abs(achieved["global"] - target) < 0.06


# --------------------------------------------------------------------------- config values


@pytest.mark.parametrize("override,needle", [
    ("trainer.max_epochs=0", "trainer.max_epochs=0: must be an integer in [1, "),
    ("trainer.max_epochs=-1", "trainer.max_epochs=-1: must be an integer in [1, "),
    ("seed=-1", "seed=-1: must be an integer in [0, "),
    ("threads=-1", "threads=-1: must be an integer in [1, "),
    ("threads=0", "threads=0: must be an integer in [1, "),
    ('pruning.targets.include=["re:net.(fc"]',
     "pruning.targets.include pattern 're:net.(fc' is not a valid regular expression"),
    ("pruning.targets.exclude=[re:*conv]",
     "pruning.targets.exclude pattern 're:*conv' is not a valid regular expression"),
    ("model.scheduler.max_lr=1e6", "model.scheduler.max_lr=1000000.0 differs from"),
])
def test_bad_values_fail_before_any_work(make_cfg, tmp_path, monkeypatch, override, needle):
    import prunelab.run as prun

    def no_data(cfg):
        raise AssertionError("data was touched before the config was checked")

    monkeypatch.setattr(prun, "instantiate_data", no_data)
    cfg = make_cfg("pruning=one_shot", override)
    with pytest.raises(ConfigError) as info:
        run(cfg, tmp_path / "run", [])
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_optimizer_lr_drives_the_one_cycle_peak(make_cfg, tmp_path):
    """A sweep over model.optimizer.lr must change the runs: it is the one-cycle peak."""
    from prunelab.run import instantiate_model

    default = instantiate_model(make_cfg())
    assert default.scheduler_factory.keywords["max_lr"] == 0.05  # the recipe's numbers unchanged
    other = instantiate_model(make_cfg("model.optimizer.lr=0.01"))
    assert other.scheduler_factory.keywords["max_lr"] == 0.01
    a = run(make_cfg(*FAST, "trainer.max_epochs=2"), tmp_path / "a", [])
    b = run(make_cfg(*FAST, "trainer.max_epochs=2", "model.optimizer.lr=0.01"), tmp_path / "b", [])
    assert a["test_loss"] != b["test_loss"]


def test_too_short_one_cycle_run_is_one_line_not_a_division_by_zero(make_cfg, tmp_path):
    cfg = make_cfg(*FAST, "trainer.max_epochs=1", "trainer.limit_train_batches=4")
    with pytest.raises(ConfigError, match="cannot run exactly 1/pct_start = 4 optimizer steps .* has 4"):
        run(cfg, tmp_path / "run", [])


@pytest.mark.parametrize("args,needle", [(["--delta", "nan"], "--delta must be"),
                                         (["--delta", "-1"], "--delta must be"),
                                         (["--delta", "inf"], "--delta must be")])
def test_search_rejects_a_meaningless_delta(capsys, tmp_path, args, needle):
    rc = search_cli.main(["--method", "l1_unstructured", *args, "--sweep-dir", str(tmp_path / "s"),
                 "pruning=one_shot"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "s").exists()  # nothing ran


def test_search_over_an_explicit_schedule_is_refused(capsys, tmp_path):
    rc = search_cli.main(["--method", "l1_unstructured", "--sweep-dir", str(tmp_path / "s"),
                 "pruning=explicit"])
    assert rc == 2 and "pruning.schedule.steps, not an amount" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_search_probe_without_test_accuracy_is_an_error_not_a_crash(tiny_data, tmp_path, capsys):
    base = tmp_path / "base" / "dense"
    base.mkdir(parents=True)
    (base / RESULTS).write_text(json.dumps({
        "status": "ok", "model": "cnn", "data": "mnist", "schedule": "none", "method": "dense",
        "amount": 0.0, "seed": 0, "test_acc": 0.9}))
    rc = search_cli.main(["--method", "l1_unstructured", "--iters", "0", "--sweep-dir", str(tmp_path / "s"),
                 "--baseline", str(tmp_path / "base"), "pruning=one_shot", "pruning.schedule.start_epoch=0",
                 "trainer.max_epochs=2", *FAST, *TINY, f"data_dir={tiny_data}",
                 "trainer.limit_test_batches=0"])
    assert rc == 3  # the probe is an error in search.json (no valid result), not a TypeError
    out = json.loads((tmp_path / "s" / "search.json").read_text())["methods"]["l1_unstructured"]
    assert out["status"] == "error" and "no test accuracy" in out["error"]


def test_report_rejects_a_meaningless_delta(capsys, tmp_path):
    assert report_cli.main([str(tmp_path), "--delta", "nan"]) == 2
    assert "--delta must be" in capsys.readouterr().err


# --------------------------------------------------------------------------- results.json


def test_explicit_schedule_reports_the_amount_it_reached(make_cfg, tmp_path):
    cfg = make_cfg(*FAST, "pruning=explicit", "pruning.schedule.steps=[[0,0.3],[1,0.5]]",
                   "trainer.max_epochs=2")
    r = run(cfg, tmp_path / "run", [])
    assert r["amount"] == 0.5 and r["sparsity_global"] == pytest.approx(0.5, abs=1e-4)
    assert json.loads((tmp_path / "run" / RESULTS).read_text())["amount"] == 0.5


def test_explicit_schedule_refuses_an_amount_it_would_ignore(make_cfg, tmp_path):
    typed = ["pruning=explicit", "pruning.schedule.steps=[[0,0.3],[1,0.5]]",
             "pruning.schedule.amount=0.9"]
    with pytest.raises(ConfigError, match=r"^pruning.schedule.amount: not a key of explicit; valid: steps$"):
        run(make_cfg(*typed), tmp_path / "run", typed)  # typed on the command line, as run gets it
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_geometric_schedule_reports_its_final_target(make_cfg, tmp_path):
    from prunelab.run import make_callback

    cfg = make_cfg("pruning=geometric")  # results.json's amount is the plan's last target
    callback, _ = make_callback(cfg)
    assert callback.plan[-1].target == callback.final_target == cfg.pruning.schedule.amount == 0.8


def test_empty_validation_loader_gives_null_val_acc_after(make_cfg, tmp_path):
    cfg = make_cfg(*FAST, "data.val_size=0", "pruning=one_shot", "pruning.schedule.start_epoch=0",
                   "pruning.schedule.amount=0.5", "trainer.max_epochs=2")
    r = run(cfg, tmp_path / "run", [])
    assert r["val_acc"] is None and r["pruning_history"][0]["val_acc_after"] is None


# --------------------------------------------------------------------------- report


@pytest.mark.parametrize("value", ["missing", "0.9x", None, "NaN", 1.5])
def test_report_lists_a_job_without_valid_test_acc_as_incomplete(tmp_path, value):
    sweep = tmp_path / "sweep"
    good = {"status": "ok", "model": "cnn", "data": "mnist", "schedule": "one_shot",
            "method": "l1_unstructured", "amount": 0.5, "seed": 0, "test_acc": 0.98,
            "sparsity_global": 0.5}
    dense = {**good, "schedule": "none", "method": "dense", "amount": 0.0, "test_acc": 0.99,
             "sparsity_global": 0.0}
    bad = {**good, "seed": 1}
    if value == "missing":
        bad.pop("test_acc")
    else:
        bad["test_acc"] = float("nan") if value == "NaN" else value
    for name, payload in (("dense", dense), ("good", good), ("bad", bad)):
        (sweep / name).mkdir(parents=True)
        (sweep / name / RESULTS).write_text(json.dumps(payload))
    assert report_cli.main([str(sweep)]) == 0
    jobs = {j.folder: j for j in R.load_jobs(sweep)}
    assert jobs["bad"].status == "incomplete" and "test_acc" in jobs["bad"].error
    assert jobs["good"].status == "ok"
    md = (sweep / "summary.md").read_text()
    assert "bad" in md.split("## Failed and incomplete jobs")[1].split("## All jobs")[0]


def test_report_of_a_run_without_test(make_cfg, tmp_path):
    sweep = tmp_path / "sweep"
    run(make_cfg(*FAST, "trainer.limit_test_batches=0", "trainer.max_epochs=2"),
        sweep / "job", [])
    assert report_cli.main([str(sweep)]) == 0
    assert R.load_jobs(sweep)[0].status == "incomplete"
