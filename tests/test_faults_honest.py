"""No input makes prunelab report "ok" while the numbers are wrong.

Each test feeds one input that used to finish as a plausible result: a learning rate that blows
the weights up without making them NaN, a data set of one class, a damaged tensor cache, a test
on part of the test set that looked like a full one, a results.json with a metric as a string,
a grayscale folder for a colour network, a verbose callback in a script that printed nothing.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from inprocess import prunelab_in_process
from torch import nn

from prunelab import report as R
from prunelab.cli import summary
from prunelab.data import (
    ImageFolderDataModule,
    IMDBDataModule,
    MNISTDataModule,
    TextFilesDataModule,
)
from prunelab.data import imdb as imdb_module
from prunelab.errors import ConfigError, DataMissingError, DivergedError
from prunelab.models.system import ClassifierSystem
from prunelab.pairing import check_configs, check_data
from prunelab.run import FAILED, RESULTS, instantiate_model, run, run_or_record_failure

from conftest import ROOT
from fakedata import (
    MNIST_FILES,
    _idx_bytes,
    fake_mnist_arrays,
    fake_text_records,
    write_fake_imdb,
    write_fake_mnist,
    write_image_folder,
    write_text_csv,
)

FAST = ["trainer=fast", "logger=none"]
# one optimizer step at lr 1e6: the weights grow by ~1e6 and the logits to ~1e20, still finite
# (more steps reach inf and NaN, which the non-finite check catches)
EXPLODE = {
    "cnn": ["model.optimizer.lr=1e6", "model.scheduler=null", "trainer.max_epochs=1",
            "trainer.limit_train_batches=1"],
    "text": ["model=text", "data=imdb", "model.optimizer.lr=1e6", "trainer.max_epochs=1",
             "trainer.limit_train_batches=1"],
}


# --------------------------------------------------------------------------- divergence


def test_the_rule_flags_exploded_losses_and_spares_weak_honest_ones():
    from prunelab.models.system import exploded

    # exploded: a hundred times worse than a uniform guess (ln 2 = 0.69, ln 10 = 2.30)
    assert "100 × ln 2" in exploded(1.1e19, 0.45, 2)
    assert exploded(231.0, 0.9, 10) and exploded(6.0e22, 0.1, 10)
    # ten times worse than guessing and no better than chance
    assert "no better than chance" in exploded(8.0, 0.5, 2)
    # weak or overfitted but honest: near ln K, or well above it with accuracy above chance
    assert exploded(2.3175, 0.0, 10) is None  # untrained: accuracy 0 on a tiny set, loss ln 10
    assert exploded(8.0, 0.62, 2) is None  # overconfident, overfitted, better than chance
    assert exploded(60.0, 0.7, 10) is None
    assert exploded(0.69, 0.41, 2) is None  # a collapsed model below 1/K on an unbalanced set
    assert exploded(5.0, 0.0, 1) is None  # one class: no guess to compare with


@pytest.mark.parametrize("model", ["cnn", "text"])
def test_exploding_but_finite_run_is_diverged_not_ok(make_cfg, tmp_path, model):
    """lr 1e6: the old code finished "ok" (test loss 1e19-1e22, accuracy at or below chance)."""
    cfg = make_cfg(*FAST, *EXPLODE[model])
    run_dir = tmp_path / "run"
    with pytest.raises(DivergedError, match=r"the val loss is [0-9.]+e\+\d+ in epoch 0 .*over "
                                             r"100 × ln (2|10)") as info:
        run_or_record_failure(cfg, run_dir, [], multirun=False)
    assert info.value.stage == "val" and info.value.epoch == 0
    failed = json.loads((run_dir / FAILED).read_text())
    assert failed["status"] == "diverged" and failed["stage"] == "val"
    assert not (run_dir / RESULTS).exists()


def test_the_test_loss_is_checked_where_there_is_no_validation(make_cfg, tmp_path):
    cfg = make_cfg(*FAST, *EXPLODE["cnn"], "data.val_size=0")
    with pytest.raises(DivergedError, match="the test loss is .* over 100 × ln 10") as info:
        run(cfg, tmp_path / "run", [])
    assert info.value.stage == "test"


def test_exploding_run_through_the_entry_point_exits_3(tiny_data, tmp_path):
    from conftest import TINY

    run_dir = tmp_path / "run"
    proc = prunelab_in_process(*FAST, *EXPLODE["text"], f"data_dir={tiny_data}", *TINY,
                               f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("prunelab: error: training diverged")
    assert json.loads((run_dir / FAILED).read_text())["status"] == "diverged"


def test_a_weak_but_honest_run_stays_ok(make_cfg, tmp_path):
    """One step at a modest rate: near ln 10, accuracy near (here even below) chance."""
    cfg = make_cfg(*FAST, "model.optimizer.lr=0.5", "trainer.max_epochs=1",
                   "trainer.limit_train_batches=1")
    r = run(cfg, tmp_path / "run", [])
    assert r["status"] == "ok" and r["test_loss"] < 3


# --------------------------------------------------------------------------- one class


def _one_class_mnist(root: Path) -> Path:
    raw = write_fake_mnist(root, n_train=40, n_test=10)
    images, labels = fake_mnist_arrays(40, 0)
    (raw / MNIST_FILES["train_labels"]).write_bytes(
        gzip.compress(_idx_bytes(np.full_like(labels, 3))))
    return raw / MNIST_FILES["train_labels"]


def test_one_class_is_refused_by_every_data_module(tmp_path, monkeypatch):
    labels = _one_class_mnist(tmp_path / "mnist")
    dm = MNISTDataModule(str(tmp_path / "mnist"), val_size=5, download=False)
    with pytest.raises(DataMissingError, match=rf"{labels} holds 1 class \(3\): a classifier "
                                               "needs samples of at least two classes"):
        dm.prepare_data()

    csv = write_text_csv(tmp_path / "text" / "train.csv",
                         [(t, 1) for t, _ in fake_text_records(40)])
    with pytest.raises(DataMissingError, match=rf"{csv} holds 1 class \(1\)"):
        TextFilesDataModule(str(csv), num_classes=2).prepare_data()

    folder = write_image_folder(tmp_path / "img", classes=("cat",), splits=())
    with pytest.raises(DataMissingError, match=rf"{folder} holds 1 class \(cat\)"):
        ImageFolderDataModule(str(folder), num_classes=1).prepare_data()
    with pytest.raises(DataMissingError, match=rf"{folder} holds 1 class \(cat\)"):
        ImageFolderDataModule(str(folder), num_classes=2).prepare_data()  # not "set 1"

    # IMDB's completeness check refuses an empty class folder first; behind it, the same rule
    root = write_fake_imdb(tmp_path / "imdb", n_per_class=6, as_tar=False)
    for part in ("train", "test"):
        for f in (root / part / "neg").iterdir():
            f.unlink()
    monkeypatch.setattr(imdb_module, "check_complete", lambda *a: None)
    with pytest.raises(DataMissingError, match=r"aclImdb \(train part\) holds 1 class \(pos\)"):
        IMDBDataModule(str(tmp_path / "imdb"), val_size=2, download=False).prepare_data()
    assert not list(tmp_path.rglob("*.pt"))  # nothing was cached


def test_one_class_csv_through_the_entry_point_exits_2(tmp_path):
    write_text_csv(tmp_path / "text" / "train.csv", [(t, 0) for t, _ in fake_text_records(60)])
    proc = prunelab_in_process("model=text", "data=text_files", *FAST, f"data_dir={tmp_path}",
                               f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "train.csv holds 1 class (0)" in last and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / RESULTS).exists()


# --------------------------------------------------------------------------- caches


def test_a_flipped_byte_in_a_tensor_cache_is_rebuilt_as_new(tmp_path, caplog):
    write_fake_mnist(tmp_path, n_train=60, n_test=20)

    def dm() -> MNISTDataModule:
        return MNISTDataModule(str(tmp_path), cache_dir=str(tmp_path / "cache"), val_size=5,
                               download=False)

    fresh = dm().load_raw()
    cache = next((tmp_path / "cache").glob("mnist_*.pt"))
    raw = bytearray(cache.read_bytes())
    at = bytes(raw).find(fresh["train_x"].numpy().tobytes()[:256])  # inside the tensor data
    assert at > 0
    raw[at + 100] ^= 0x40
    cache.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="prunelab"):
        again = dm().load_raw()
    assert all(torch.equal(again[k], fresh[k]) for k in fresh)
    # warnings only: another test may have left a prunelab logger at INFO (its progress lines)
    notes = [r.getMessage() for r in caplog.records
             if r.levelno >= logging.WARNING and "cache" in r.getMessage()]
    assert len(notes) == 1 and str(cache) in notes[0] and "checksum" in notes[0]
    assert "\n" not in notes[0]
    # rewritten intact: the next load is a plain cache hit, no note
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="prunelab"):
        dm().load_raw()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------- subset tests


def test_a_test_on_part_of_the_test_set_says_so(make_cfg, tmp_path):
    one = ["trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    r = run(make_cfg(*FAST, *one, "data.eval_batch_size=16"),
            tmp_path / "sweep" / "subset_job", [])
    assert (r["test_samples"], r["test_samples_total"]) == (32, 80)  # 2 batches of 16, of 80
    acc = dict(summary.rows(r))["test accuracy"]
    assert "on 32 of 80 test samples" in acc
    full = run(make_cfg(*FAST, *one, "trainer.limit_test_batches=null"),
               tmp_path / "sweep" / "whole_job", [])
    assert full["test_samples"] == full["test_samples_total"] == 80
    assert "test samples" not in dict(summary.rows(full))["test accuracy"]
    # the report marks the part-tested job, not the other
    s = R.summarize(tmp_path / "sweep")
    marked = [n for n in s.notes if "part of the test set" in n]
    assert len(marked) == 1 and "subset_job: 32 of 80 test samples" in marked[0]
    assert "whole_job" not in marked[0]


def test_a_metric_that_is_not_a_number_is_not_ranked(tmp_path, caplog):
    sweep = tmp_path / "sweep"
    good = {"status": "ok", "model": "cnn", "data": "mnist", "schedule": "one_shot",
            "method": "l1_unstructured", "amount": 0.5, "seed": 0, "test_acc": 0.91,
            "sparsity_global": 0.5}
    for name, payload in (("dense", {**good, "schedule": "none", "method": "dense",
                                     "amount": 0.0, "test_acc": 0.99}),
                          ("good", good), ("bad", {**good, "seed": 1, "test_acc": "0.98"}),
                          ("bad_count", {**good, "seed": 2, "params_nonzero": "12"})):
        (sweep / name).mkdir(parents=True)
        (sweep / name / RESULTS).write_text(json.dumps(payload))
    with caplog.at_level(logging.WARNING, logger="prunelab"):
        s = R.summarize(sweep)
    jobs = {j.folder: j for j in s.jobs}
    assert jobs["bad"].status == "incomplete" and jobs["bad"].test_acc is None
    assert jobs["bad_count"].status == "incomplete"
    warned = [r.getMessage() for r in caplog.records]
    assert any(str(sweep / "bad" / RESULTS) in w and "test_acc is '0.98'" in w for w in warned)
    assert any("params_nonzero is '12'" in w for w in warned)
    # only the good job is ranked: 0.98 does not beat 0.91
    pruned = [p for p in s.points if p.method != "dense"]
    assert [p.n for p in pruned] == [1] and pruned[0].mean("test_acc") == pytest.approx(0.91)


# --------------------------------------------------------------------------- channels


def test_a_grayscale_folder_for_a_colour_network_names_the_override_that_fixes_it(make_cfg,
                                                                                  tmp_path):
    write_image_folder(tmp_path / "images", size=(28, 28), mode="L", n_per_class=8)
    base = ["model=torchvision", "data=image_folder", "data.num_classes=3",
            f"data_dir={tmp_path}", "data.val_size=3"]
    cfg = make_cfg(*base)
    dm = ImageFolderDataModule(str(tmp_path / "images"), num_classes=3, val_size=3, batch_size=4)
    dm.prepare_data()
    with pytest.raises(ConfigError, match=r"gives 1-channel images \[1, 28, 28\]: set "
                                          r"model.net.in_channels=1 \(or data.channels=3") as e:
        check_data(cfg.model, cfg.data.name, dm)
    fixes = re.findall(r"(?:model|data)\.[\w.]+=\d+", str(e.value).split(": set ")[1])
    assert fixes == ["model.net.in_channels=1", "data.channels=3"]
    for fix in fixes:  # each named override passes the check and trains on a real batch
        cfg = make_cfg(*base, fix)
        dm = ImageFolderDataModule(str(tmp_path / "images"), num_classes=3, val_size=3,
                                   batch_size=4, channels=cfg.data.channels)
        dm.prepare_data()
        dm.setup("fit")
        check_data(cfg.model, cfg.data.name, dm)
        x, y = next(iter(dm.train_dataloader()))
        loss, logits, _ = instantiate_model(cfg).loss_and_logits((x, y))
        assert list(logits.shape) == [len(y), 3] and torch.isfinite(loss)


def test_a_colour_network_on_mnist_names_in_channels(make_cfg):
    cfg = make_cfg("model=torchvision", "model.net.in_channels=3")
    with pytest.raises(ConfigError, match=r"data=mnist gives 1-channel images \[1, 28, 28\]: "
                                          r"set model.net.in_channels=1$"):
        check_configs(cfg.model, cfg.data)


def test_an_own_network_of_the_wrong_channels_is_told_both_ways_out():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    system = ClassifierSystem(net, optimizer=torch.optim.SGD, num_classes=10)
    batch = (torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"model.net.in_channels=1\), or convert the images "
                                          r"to 3 \(data.channels=3"):
        system.loss_and_logits(batch)


# --------------------------------------------------------------------------- verbose callback


def test_verbose_callback_speaks_in_a_script_without_logging(tmp_path):
    """A plain script, no logging set up: Python drops INFO records, so this printed nothing."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import lightning as L, torch
        from torch import nn
        from torch.nn import functional as F
        from torch.utils.data import DataLoader, TensorDataset
        from prunelab.pruning import PruningCallback

        class Tiny(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
            def training_step(self, batch, i):
                return F.cross_entropy(self.net(batch[0]), batch[1])
            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        data = DataLoader(TensorDataset(torch.randn(32, 8), torch.randint(0, 2, (32,))),
                          batch_size=8)
        trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            callbacks=[PruningCallback([(0, 0.5)], verbose=True)])
        trainer.fit(Tiny(), data)
    """))
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "epoch 0: pruned to 0.5000 (target 0.5000)" in proc.stderr
