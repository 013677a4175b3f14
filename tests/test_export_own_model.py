"""``prunelab export`` of your own network (a ``--config-dir`` model, examples/own_model).

Allowed with ``--allow-target`` as for ``evaluate`` and ``compact``; every encoding and the ONNX
file; the artifact names the class once, and loading it needs the same allow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import onnxruntime as ort  # the dev extra: the ONNX checks run, never skip
import plxfiles
import pytest
import torch
from inprocess import prunelab_in_process

from prunelab.cli import compact, evaluate, export, sensitivity
from prunelab.errors import CheckpointError
from prunelab.export import ENCODINGS, encode, load

from conftest import ROOT
from fakedata import fake_text_records, write_text_csv

EXAMPLE = ROOT / "examples" / "own_model"
CLASS = "mylab.nets.BagOfWordsMLP"


@pytest.fixture(scope="module")
def own_run(tmp_path_factory) -> Path:
    """A tiny pruned run of the example's BagOfWordsMLP, from the user's config dir."""
    sys.path.insert(0, str(EXAMPLE))  # mylab importable, as PYTHONPATH=$PWD in the docs
    root = tmp_path_factory.mktemp("own_export")
    write_text_csv(root / "data" / "reviews" / "train.csv", fake_text_records(80))
    write_text_csv(root / "data" / "reviews" / "test.csv", fake_text_records(40, seed=1))
    run_dir = root / "run"
    proc = prunelab_in_process(
        "--config-dir", EXAMPLE / "conf", "model=mymlp", "data=mycsv", "pruning=one_shot",
        "pruning.schedule.amount=0.8", "pruning.schedule.start_epoch=0", "trainer=fast", "trainer.max_epochs=1",
        f"data_dir={root / 'data'}", "logger=csv", f"hydra.run.dir={run_dir}", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    yield run_dir
    sys.path.remove(str(EXAMPLE))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("prunelab export: error: ")
    return err[0]


def test_export_of_your_own_network_needs_allow_target(own_run, capsys):
    assert export.main([str(own_run)]) == 2
    line = one_error_line(capsys)
    assert CLASS in line and "--allow-target mylab.nets" in line
    assert not (own_run / "export").exists()


def test_own_network_in_every_encoding_and_onnx(own_run, capsys, monkeypatch):
    out = own_run.parent / "shipped"
    assert export.main([str(own_run), "--encoding", "all", "--allow-target", "mylab.",
                        "--out", str(out)]) == 0
    run_state = torch.load(own_run / "final_model.pt", weights_only=True)
    ids = torch.randint(0, 1002, (3, 9))
    for enc in ENCODINGS:
        rec = json.loads((out / enc / "export.json").read_text())
        assert rec["encoding"] == enc and rec["test_samples"] == 40, enc
        assert 0 < rec["params_nonzero"] < rec["params_total"], enc  # pruned, and kept so
        onnx_file = out / enc / "model.onnx"
        assert rec["onnx"]["bytes"] == onnx_file.stat().st_size
        assert rec["onnx"]["max_abs_diff_onnxruntime"] < 1e-4, enc
        net = load(out / enc / "model.plx", allow=["mylab."])
        assert type(net).__name__ == "BagOfWordsMLP" and not net.training
        session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        with torch.no_grad():  # the ONNX file is the decoded network, at any review length
            assert abs(session.run(None, {"input": ids.numpy()})[0] - net(ids).numpy()).max() < 1e-4
    # fp32 is lossless: the file holds the run's weights bit for bit, and its accuracy
    fp32 = json.loads((out / "fp32" / "export.json").read_text())
    assert fp32["max_abs_weight_error"] == 0 and fp32["test_acc"] == fp32["source_test_acc"]
    loaded = load(out / "fp32" / "model.plx", allow=["mylab."]).state_dict()
    assert loaded.keys() == run_state.keys()
    assert all(torch.equal(loaded[k], run_state[k]) for k in run_state)
    # what rebuilds it: the class path, once, and the run's constructor arguments
    record = plxfiles.parts((out / "fp32" / "model.plx").read_bytes())[0]
    assert json.dumps(record).count(CLASS) == 1
    assert record["architecture"] == {
        "class": CLASS, "kwargs": {"vocab_size": 1000, "num_classes": 2, "embed_dim": 32,
                                   "hidden": 64}}
    capsys.readouterr()

    # the artifact is untrusted too: its class is built only where allowed
    with pytest.raises(CheckpointError, match=f"'{CLASS}'.*--allow-target mylab.nets"):
        load(out / "int8" / "model.plx")
    assert export.main([str(out / "int8" / "model.plx")]) == 2
    assert CLASS in one_error_line(capsys)
    assert export.main([str(out / "int8" / "model.plx"), "--allow-target", "mylab."]) == 0
    assert json.loads(capsys.readouterr().out)["architecture"]["class"] == CLASS
    monkeypatch.setenv("PRUNELAB_ALLOW_TARGETS", "mylab.nets")
    assert type(load(out / "kmeans1" / "model.plx")).__name__ == "BagOfWordsMLP"


def test_an_allowed_prefix_reaches_only_what_is_defined_under_it(own_run, tmp_path):
    """``mylab.nets`` imports torch's ``Tensor``: allowing ``mylab.`` does not make
    ``mylab.nets.Tensor`` (or anything else imported there) buildable from a file."""
    state = torch.load(own_run / "final_model.pt", weights_only=True)
    net = load_class(CLASS)(vocab_size=1000, num_classes=2, embed_dim=32, hidden=64)
    net.load_state_dict(state)
    data = encode(net, "fp32", {"vocab_size": 1000, "num_classes": 2, "embed_dim": 32,
                                "hidden": 64})
    record, payload, version = plxfiles.parts(data)
    record["architecture"]["class"] = "mylab.nets.Tensor"
    path = tmp_path / "imported.plx"
    path.write_bytes(plxfiles.repack(record, payload, version))
    with pytest.raises(CheckpointError, match="not a class or function defined there .*torch.Tensor"):
        load(path, allow=["mylab."])


def load_class(path: str):
    module, _, name = path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


def test_own_network_codebook_finetuning(own_run):
    """Fine-tuning rebuilds the run's whole training system: the user's class, allowed."""
    out = own_run.parent / "tuned"
    assert export.main([str(own_run), "--encoding", "kmeans2", "--finetune-epochs", "1",
                        "--no-eval", "--allow-target", "mylab.", "--out", str(out)]) == 0
    rec = json.loads((out / "kmeans2-ft1" / "export.json").read_text())
    assert rec["finetune"]["steps"] > 0 and rec["onnx"]["bytes"] > 0


@pytest.mark.parametrize("tool", [evaluate, compact, export, sensitivity])
def test_every_tool_that_loads_a_run_takes_allow_target(tool, capsys):
    with pytest.raises(SystemExit) as done:
        tool.main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--allow-target PREFIX" in text and "PRUNELAB_ALLOW_TARGETS" in text
