"""The compressed artifact: exact round trips, bounded quantisation error, refusal of bad files."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort  # the dev extra: the ONNX checks run, never skip
import plxfiles
import pytest
import torch
from inprocess import prunelab_in_process

from prunelab.cli import export as cli
from prunelab.errors import CheckpointError, ConfigError
from prunelab.export import ENCODINGS, codecs, container, decode, encode, load, runs
from prunelab.export import read as read_artifact
from prunelab.models import LeNet, TextClassifier

from conftest import ROOT, TINY

KMEANS = [e for e in ENCODINGS if e.startswith("kmeans")]


def sparse_lenet(sparsity: float = 0.95, seed: int = 0) -> LeNet:
    """A LeNet whose weights (not biases) have ``sparsity`` zeros, as after pruning."""
    torch.manual_seed(seed)
    net = LeNet()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("weight"):
                p.mul_((torch.rand_like(p) >= sparsity).float())
    return net


def roundtrip(net: torch.nn.Module, encoding: str) -> dict[str, torch.Tensor]:
    _, state = decode(encode(net, encoding))
    return state


def test_fp32_is_lossless_and_keeps_dtypes():
    net = sparse_lenet(0.9)
    state = roundtrip(net, "fp32")
    for name, t in net.state_dict().items():
        assert state[name].dtype == t.dtype and torch.equal(state[name], t), name


@pytest.mark.parametrize("encoding", ["int8", *KMEANS])
def test_quantised_encodings_keep_zeros_and_biases_exact(encoding):
    net = sparse_lenet(0.95)
    state = roundtrip(net, encoding)
    for name, t in net.state_dict().items():
        if name.endswith("bias"):
            assert torch.equal(state[name], t), name
        else:
            assert torch.all(state[name][t == 0] == 0), f"{name}: a pruned weight came back"


def test_int8_error_is_at_most_half_a_step_per_channel():
    net = sparse_lenet(0.5)
    state = roundtrip(net, "int8")
    for name, t in net.state_dict().items():
        if not name.endswith("weight"):
            continue
        for c in range(t.shape[0]):
            nz = t[c][t[c] != 0]
            step = float(nz.max() - nz.min()) / 255
            err = float((state[name][c][t[c] != 0] - nz).abs().max())
            assert err <= step / 2 * 1.001 + 1e-7, (name, c, err, step)


@pytest.mark.parametrize("encoding", KMEANS)
def test_kmeans_shares_at_most_2_to_the_bits_values_each_the_nearest(encoding):
    bits = codecs.kmeans_bits(encoding)
    net = sparse_lenet(0.9)
    state = roundtrip(net, encoding)
    for name, t in net.state_dict().items():
        if not name.endswith("weight"):
            continue
        mask = t != 0
        got = state[name][mask]
        book = torch.unique(got)
        assert len(book) <= 2 ** bits
        # every non-zero became the shared value nearest to it
        nearest = book[(t[mask].unsqueeze(1) - book).abs().argmin(1)]
        assert torch.allclose(got, nearest, atol=1e-6), name
        rel = float((got - t[mask]).norm() / t[mask].norm())
        assert rel < {1: 0.7, 2: 0.35, 3: 0.2}.get(bits, 0.1), (name, rel)


@pytest.mark.parametrize("density", [0.0, 0.001, 0.3, 0.97, 1.0])
def test_positions_roundtrip_in_every_coding(density):
    rng = np.random.default_rng(0)
    mask = rng.random(200_003) < density
    mask[[0, -1]] = density > 0  # first and last entries
    coding, data, width = codecs.encode_positions(mask)
    assert coding == ("all" if density == 1.0 else "index" if density < 0.01 else "bitmask")
    idx = codecs.decode_positions(coding, data, mask.size, int(mask.sum()), width)
    assert np.array_equal(idx, np.flatnonzero(mask))
    for other in ("bitmask", "index"):  # the coding not chosen decodes too
        if other == "bitmask":
            raw, w = np.packbits(mask).tobytes(), 0
        else:
            gaps = np.diff(np.flatnonzero(mask), prepend=-1) - 1
            w = max(1, (int(gaps.max(initial=0)).bit_length() + 7) // 8)
            raw = codecs.shuffle(gaps, w)
        assert np.array_equal(codecs.decode_positions(other, raw, mask.size, int(mask.sum()), w),
                              np.flatnonzero(mask))


def test_index_coding_spans_gaps_wider_than_two_bytes():
    mask = np.zeros(300_000, dtype=bool)
    mask[[5, 200_000, 299_999]] = True
    coding, data, width = codecs.encode_positions(mask)
    assert coding == "index" and width == 3
    assert list(codecs.decode_positions(coding, data, mask.size, 3, width)) == [5, 200_000, 299_999]


def test_text_model_roundtrip_and_load(tmp_path):
    from prunelab.export import save

    torch.manual_seed(0)
    net = TextClassifier(vocab_size=50, embed_dim=8, hidden=6)
    path = tmp_path / "text.plx"
    save(net, path, "fp32", {"vocab_size": 50, "embed_dim": 8, "hidden": 6})
    loaded = load(path)
    ids = torch.randint(0, 52, (3, 7))
    assert torch.equal(loaded(ids), net.eval()(ids))


def test_torchvision_network_roundtrips_through_its_builder(tmp_path, make_cfg, monkeypatch):
    # model=torchvision's network is made by a function, not a class of its own: the artifact
    # names prunelab's builder and the run's arguments, and loading rebuilds it by name
    from prunelab.export import save
    from prunelab.export.runs import network_builder, network_kwargs
    from prunelab.models import torchvision_net

    cfg = make_cfg("model=torchvision", "model.arch=shufflenet_v2_x0_5", "data=torchvision",
                   "data.dataset=KMNIST", "model.net.in_channels=1")
    kwargs = network_kwargs(cfg)
    assert kwargs == {"arch": "shufflenet_v2_x0_5", "num_classes": 10, "in_channels": 1,
                      "weights": None}
    torch.manual_seed(0)
    net = torchvision_net(**kwargs).eval()
    path = tmp_path / "model.plx"
    save(net, path, "fp32", kwargs, builder=network_builder(cfg))
    loaded = load(path)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    with pytest.raises(ConfigError, match="cannot export a torchvision.models"):
        save(net, tmp_path / "other.plx", "fp32", kwargs)  # no builder: its class is foreign
    # a file asking the builder for a weight set: loading never downloads one
    record, payload, version = plxfiles.parts(path.read_bytes())
    record["architecture"]["kwargs"]["weights"] = "DEFAULT"
    path.write_bytes(plxfiles.repack(record, payload, version))

    def no_download(*args, **kwargs):
        raise AssertionError("a load fetched a weight set")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    with torch.no_grad():
        assert torch.equal(load(path)(x), net(x))


# ---------------------------------------------------------------------------- bad files

@pytest.fixture
def artifact_file(tmp_path: Path) -> Path:
    from prunelab.export import save

    path = tmp_path / "model.plx"
    save(sparse_lenet(0.98), path, "kmeans4")
    return path


def test_load_gives_the_network_in_eval_mode(artifact_file):
    net = load(artifact_file)
    assert isinstance(net, LeNet) and not net.training
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("keep", [0, 5, container.HEADER_BYTES, -1])
def test_truncated_artifact_is_named_truncated(artifact_file, keep):
    data = artifact_file.read_bytes()
    artifact_file.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    with pytest.raises(CheckpointError, match="truncated|not a prunelab export") as err:
        load(artifact_file)
    if keep not in (0, 5):
        assert "truncated" in str(err.value)


def test_flipped_byte_fails_the_checksum(artifact_file):
    data = bytearray(artifact_file.read_bytes())
    data[len(data) // 2] ^= 0x40
    artifact_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load(artifact_file)


def test_a_pickle_file_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "final_model.pt"
    torch.save(sparse_lenet().state_dict(), path)
    calls = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a))
    with pytest.raises(CheckpointError, match="not a prunelab export artifact"):
        load(path)
    assert calls == []


def test_loading_never_unpickles(artifact_file, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling during load")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert isinstance(load(artifact_file), LeNet)


def test_a_foreign_class_in_the_manifest_is_refused(tmp_path):
    manifest = {"format": "prunelab-export", "encoding": "fp32", "tensors": [],
                "architecture": {"class": "os.system", "kwargs": {"command": "echo hi"}}}
    path = tmp_path / "evil.plx"
    path.write_bytes(container.pack(manifest, b""))
    with pytest.raises(CheckpointError, match="'os.system'.*refusing"):
        load(path)


def _lenet_manifest_with_fc2_bias(shape: list[int], data: list[int]) -> dict:
    """A hand-made LeNet manifest holding one raw fc2.bias section (shape, payload span)."""
    return {"format": "prunelab-export", "encoding": "fp32",
            "architecture": {"class": "prunelab.models.cnn.LeNet", "kwargs": {}},
            "tensors": [{"name": "fc2.bias", "shape": shape, "dtype": "float32",
                         "kind": "raw", "data": data}]}


def test_a_section_outside_the_payload_is_corrupt(tmp_path):
    manifest = _lenet_manifest_with_fc2_bias(shape=[10], data=[0, 40])
    path = tmp_path / "short.plx"
    path.write_bytes(container.pack(manifest, b"\0" * 12))
    with pytest.raises(CheckpointError, match="corrupt"):
        load(path)


def test_unknown_encoding_and_foreign_network_are_refused():
    with pytest.raises(ConfigError, match="'int4'.*valid: fp32, int8, kmeans8"):
        encode(LeNet(), "int4")
    # any importable class can be stored, with the arguments that rebuild it
    with pytest.raises(ConfigError, match=r"Linear\(\*\*\{\}\) fails .*in_features"):
        encode(torch.nn.Linear(2, 2), "fp32")
    with pytest.raises(ConfigError, match=r"builds a different network \(wrong shape weight"):
        encode(torch.nn.Linear(2, 2), "fp32", {"in_features": 3, "out_features": 2})

    class Local(torch.nn.Linear):
        pass

    with pytest.raises(ConfigError, match="cannot be imported by that path"):
        encode(Local(2, 2), "fp32", {"in_features": 2, "out_features": 2})


def test_load_needs_neither_lightning_nor_hydra(artifact_file):
    code = (
        "import sys\n"
        "for m in ('lightning', 'pytorch_lightning', 'hydra', 'omegaconf'):\n"
        "    sys.modules[m] = None  # any import of them fails\n"
        "import torch\n"
        "from prunelab.export import load\n"
        f"net = load({str(artifact_file)!r})\n"
        "print(type(net).__name__, net(torch.zeros(1, 1, 28, 28)).shape[1])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["LeNet", "10"]


# ---------------------------------------------------------------------------- CLI on a real run

@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory) -> Path:
    """A tiny pruned MNIST run, trained by the command line (in-process: a few seconds)."""
    run_dir = tmp_path_factory.mktemp("export_run") / "run"
    proc = prunelab_in_process(
        "pruning=one_shot", "pruning.schedule.amount=0.9", "pruning.schedule.start_epoch=0",
        "pruning/method=global_magnitude", "trainer=fast", "trainer.max_epochs=2",
        f"data_dir={tiny_data}", *TINY, f"hydra.run.dir={run_dir}", cwd=run_dir.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_cli_exports_measures_and_reports(finished_run, capsys):
    assert cli.main([str(finished_run), "--encoding", "fp32", "--encoding", "kmeans4"]) == 0
    fp32 = json.loads((finished_run / "export" / "fp32" / "export.json").read_text())
    k4 = json.loads((finished_run / "export" / "kmeans4" / "export.json").read_text())
    for rec, enc in ((fp32, "fp32"), (k4, "kmeans4")):
        path = Path(rec["artifact"])
        assert path == finished_run / "export" / enc / "model.plx"
        assert rec["encoding"] == enc and rec["artifact_bytes"] == path.stat().st_size
        assert rec["dense_bytes"] == 431_080 * 4
        assert rec["ratio"] == pytest.approx(rec["dense_bytes"] / rec["artifact_bytes"])
        assert rec["test_samples"] == 80 and 0 <= rec["test_acc"] <= 1
    # lossless: the file's accuracy and weights are the run's own
    assert fp32["max_abs_weight_error"] == 0 and fp32["test_acc"] == fp32["source_test_acc"]
    assert k4["artifact_bytes"] < fp32["artifact_bytes"] < fp32["dense_bytes"] / 5
    assert fp32["params_nonzero"] == k4["params_nonzero"]
    err = capsys.readouterr().err  # progress goes through prunelab's logging (stderr)
    assert "x smaller than the dense state dict" in err
    # the file alone: the CLI checks it and names what it holds
    assert cli.main([fp32["artifact"]]) == 0
    assert '"prunelab.models.cnn.LeNet"' in capsys.readouterr().out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("prunelab export: error: ")
    return err[0]


def test_cli_refuses_a_run_without_a_finished_model(finished_run, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    (unfinished / ".hydra").mkdir(parents=True)
    (unfinished / ".hydra" / "config.yaml").write_text(
        (finished_run / ".hydra" / "config.yaml").read_text())
    assert cli.main([str(unfinished)]) == 2
    assert "no finished model" in one_error_line(capsys)
    assert not (unfinished / "export").exists()
    assert cli.main([str(tmp_path)]) == 2
    assert "not a prunelab run directory" in one_error_line(capsys)


def test_cli_refuses_an_unknown_encoding_before_writing(finished_run, capsys):
    assert cli.main([str(finished_run), "--encoding", "zip"]) == 2
    line = one_error_line(capsys)
    assert "'zip'" in line and "kmeans4" in line
    assert not (finished_run / "export" / "zip").exists()


def test_cli_finetunes_the_codebook_into_its_own_folder(finished_run, tiny_data, capsys):
    out = finished_run.parent / "ft_out"
    assert cli.main([str(finished_run), "--encoding", "kmeans2", "--encoding", "int8",
                     "--finetune-epochs", "1", "--out", str(out),
                     "--data-dir", str(tiny_data)]) == 0
    rec = json.loads((out / "kmeans2-ft1" / "export.json").read_text())
    assert rec["encoding"] == "kmeans2" and rec["finetune"]["epochs"] == 1
    assert rec["finetune"]["steps"] > 0 and len(rec["finetune"]["train_loss"]) == 1
    _, state = read_artifact(out / "kmeans2-ft1" / "model.plx")
    run_net = torch.load(finished_run / "final_model.pt", weights_only=True)
    for name, t in state.items():
        if codecs.is_weight(t):
            assert len(torch.unique(t[t != 0])) <= 4, name
            assert torch.equal(t == 0, run_net[name] == 0), name  # the sparsity pattern is the run's
    # int8 has no codebook: exported as trained, in its usual folder
    assert json.loads((out / "int8" / "export.json").read_text())["finetune"] is None
    assert "applies to the kmeans encodings only" in capsys.readouterr().err


def test_cli_writes_the_onnx_beside_the_artifact_without_a_test_pass(finished_run):
    out = finished_run.parent / "no_eval_out"
    assert cli.main([str(finished_run), "--encoding", "int8", "--no-eval", "--out", str(out)]) == 0
    rec = json.loads((out / "int8" / "export.json").read_text())
    assert "test_acc" not in rec
    assert rec["onnx"]["bytes"] == (out / "int8" / "model.onnx").stat().st_size


def test_cli_default_chooses_the_encoding_by_validation_accuracy(finished_run, capsys):
    """No --encoding: kmeans5, kmeans6 or kmeans8, whichever is the smallest file at least as
    accurate as the run on its validation split; export.json says which and why."""
    out = finished_run.parent / "default_out"
    assert cli.main([str(finished_run), "--out", str(out)]) == 0
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    rec = json.loads((folder / "export.json").read_text())
    chosen = rec["chosen"]
    assert rec["encoding"] == folder.name == chosen["encoding"]
    assert [c["encoding"] for c in chosen["candidates"]] == ["kmeans5", "kmeans6", "kmeans8"]
    assert chosen["val_samples"] == 40 and chosen["reference_val_acc"] is not None
    fits = [c for c in chosen["candidates"] if c["val_acc"] >= chosen["reference_val_acc"]]
    if fits:
        assert rec["encoding"] == min(fits, key=lambda c: c["bytes"])["encoding"]
    else:
        assert rec["encoding"] == max(chosen["candidates"], key=lambda c: c["val_acc"])["encoding"]
    size = {c["encoding"]: c["bytes"] for c in chosen["candidates"]}[rec["encoding"]]
    assert rec["artifact_bytes"] == size == (folder / "model.plx").stat().st_size
    assert "default encoding: " + rec["encoding"] in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--max-bytes", "10"], "--max-bytes must be a whole number of bytes >= 22, got 10"),
    (["--encoding", "kmeans4", "--max-bytes", "3450"], "give it with --encoding auto"),
])
def test_cli_refuses_a_byte_budget_it_cannot_apply(finished_run, capsys, args, message):
    out = finished_run.parent / "budget_out"
    assert cli.main([str(finished_run), *args, "--out", str(out)]) == 2
    assert message in one_error_line(capsys)
    assert not out.exists()


def test_cli_writes_8_bit_biases_and_folds_dead_units(finished_run):
    out = finished_run.parent / "small_out"
    assert cli.main([str(finished_run), "--encoding", "kmeans3", "--biases", "int8",
                     "--dead-units", "fold", "--out", str(out)]) == 0
    rec = json.loads((out / "kmeans3-b8" / "export.json").read_text())
    assert rec["biases"] == "int8" and rec["dead_units"]["mode"] == "fold"
    assert rec["dead_units"]["kept"] is None
    assert {t["name"]: t["values"] for t in rec["tensors"]}["fc1.bias"] == "int8"
    plain = out / "plain"
    assert cli.main([str(finished_run), "--encoding", "kmeans3", "--dead-units", "keep",
                     "--out", str(plain)]) == 0
    assert rec["artifact_bytes"] < json.loads(
        (plain / "kmeans3" / "export.json").read_text())["artifact_bytes"] - 1000


def test_cli_refuses_negative_finetune_epochs_before_writing(finished_run, capsys):
    out = finished_run.parent / "neg_out"
    assert cli.main([str(finished_run), "--encoding", "kmeans2", "--finetune-epochs", "-1",
                     "--out", str(out)]) == 2
    assert "--finetune-epochs must be a whole number >= 0" in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("damage", ["pickle", "truncated", "text"])
def test_cli_refuses_bad_artifact_files(tmp_path, capsys, damage):
    path = tmp_path / "model.plx"
    if damage == "pickle":
        torch.save(LeNet().state_dict(), path)
    elif damage == "truncated":
        path.write_bytes(encode(sparse_lenet(), "int8")[:-100])
    else:
        path.write_text("hello\n")
    assert cli.main([str(path)]) == 2
    line = one_error_line(capsys)
    assert str(path) in line
    assert ("truncated" if damage == "truncated" else "not a prunelab export artifact") in line


def test_onnx_is_skipped_gracefully_without_onnx(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx fails
    with caplog.at_level("INFO", logger="prunelab.export.runs"):
        assert runs.export_onnx(LeNet().eval(), torch.zeros(1, 1, 28, 28), tmp_path / "m.onnx") is None
    assert "onnx is not installed" in caplog.text
    assert not (tmp_path / "m.onnx").exists()


def test_onnx_export_of_the_decoded_model(tmp_path):
    net = load_artifact_net(tmp_path)
    info = runs.export_onnx(net, torch.zeros(1, 1, 28, 28), tmp_path / "m.onnx")
    assert info is not None and (tmp_path / "m.onnx").stat().st_size == info["bytes"]
    assert info["max_abs_diff_onnxruntime"] < 1e-4


def load_artifact_net(tmp_path: Path) -> torch.nn.Module:
    from prunelab.export import save

    save(sparse_lenet(0.98), tmp_path / "m.plx", "int8")
    return load(tmp_path / "m.plx")


def test_tensors_that_do_not_fit_the_network_are_named(tmp_path):
    manifest = _lenet_manifest_with_fc2_bias(shape=[3], data=[0, 12])
    path = tmp_path / "partial.plx"
    path.write_bytes(container.pack(manifest, b"\0" * 12))
    with pytest.raises(CheckpointError, match=r"missing conv1.weight, .* \.\.\.; wrong shape fc2.bias"):
        load(path)


def test_onnx_of_a_text_model_takes_any_review_length(tmp_path):
    """Token ids are padded per batch: the ONNX file must not fix the first batch's length."""
    net = TextClassifier(vocab_size=50, embed_dim=8, hidden=8).eval()
    info = runs.export_onnx(net, torch.randint(2, 40, (1, 7)), tmp_path / "t.onnx")
    assert info is not None
    session = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    ids = torch.randint(2, 40, (3, 12))
    got = session.run(None, {"input": ids.numpy()})[0]
    with torch.no_grad():
        assert abs(got - net(ids).numpy()).max() < 1e-5
