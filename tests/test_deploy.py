"""int8 models and deployable files: the run's quantize stage (PTQ, QAT) keeps pruned zeros
exact and stays near fp32; prunelab export --format writes ONNX and ExecuTorch files that run in
their own runtimes (without prunelab) and agree with PyTorch; bad names and damaged or foreign
files are one line."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime  # noqa: F401  (the dev extra: these tests never skip)
import pytest
import torch
from inprocess import prunelab_in_process
from torch import nn
from torch.nn import functional as F

from prunelab.assembly import check_nodes, make_quantization
from prunelab.cli import export as cli
from prunelab.errors import CheckpointError, ConfigError, PrunelabError
from prunelab.export import deploy, runtimes, timing
from prunelab.identity import result_config
from prunelab.loading import load_finished_run, run_test_loader
from prunelab.models import ClassifierSystem, TextClassifier
from prunelab.quantize import int8_weights, load_program, qat_finetune, quantize_int8

from conftest import TINY

FORMATS = ("onnx", "onnx-int8", "executorch", "executorch-int8")
FILES = {"onnx": "model.onnx", "onnx-int8": "model.onnx", "executorch": "model.pte",
         "executorch-int8": "model.pte"}


class TinyConv(nn.Module):
    """conv 1→8 3x3 → ReLU → fc 288→4: the layer kinds of the CNN, in milliseconds."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.fc = nn.Linear(8 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).flatten(1))


def pruned(net: nn.Module, sparsity: float = 0.7, seed: int = 0) -> nn.Module:
    """``net`` with ``sparsity`` of each weight tensor zeroed, as after pruning."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("weight"):
                p.mul_((torch.rand(p.shape, generator=g) >= sparsity).float())
    return net.eval()


def inputs(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def assert_zeros_kept(model: torch.fx.GraphModule, net: nn.Module) -> None:
    weights = int8_weights(model)
    state = net.state_dict()
    assert set(weights) == {n for n in state if n.endswith("weight")}
    pruned_tensors = 0
    for name, (values, dequantised) in weights.items():
        w = state[name]
        assert values.dtype == torch.int8 and values.shape == w.shape
        pruned_tensors += bool((w == 0).any())
        assert torch.all(values[w == 0] == 0), f"{name}: a pruned weight is not int8 zero"
        assert torch.all(dequantised[w == 0] == 0), name
    assert pruned_tensors


def test_ptq_keeps_every_pruned_zero_and_rounds_within_half_a_step_per_channel():
    torch.manual_seed(0)
    net = pruned(TinyConv())
    x = inputs(128)
    model = quantize_int8(net, x[:1], [x[i:i + 32] for i in range(0, 128, 32)])
    assert_zeros_kept(model, net)
    for name, (_, dq) in int8_weights(model).items():
        w = net.state_dict()[name]
        # symmetric per output channel: step = max |w_c| / 127, by hand
        step = w.abs().flatten(1).amax(1) / 127
        err = (dq - w).abs().flatten(1).amax(1)
        assert torch.all(err <= step / 2 + 1e-7), name
    with torch.no_grad():
        want, got = net(x), model(x)
    assert float((got - want).abs().max()) < 0.05 * float(want.abs().max())
    assert float((got.argmax(1) == want.argmax(1)).float().mean()) >= 0.9


def test_qat_fine_tunes_with_the_mask_fixed_and_stays_near_fp32():
    torch.manual_seed(0)
    net = pruned(TinyConv())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    system = ClassifierSystem(net, functools.partial(torch.optim.Adam, lr=0.1), num_classes=4)
    x = inputs(128)
    with torch.no_grad():
        y = net(x).argmax(1)  # its own predictions: fine-tuning must not move them far
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 128, 32)]
    model, record = qat_finetune(system, batches, x[:1], epochs=3, lr=1e-4)
    assert record["steps"] == 12 and len(record["train_loss"]) == 3
    assert record["train_loss"][-1] < record["train_loss"][0]  # it trained
    # Adam moves every weight with a gradient by about lr a step, 12 steps: several int8 steps of
    # fc.weight's scale (max |w| / 127 ~ 5e-4): only the fixed mask keeps the zeros
    assert_zeros_kept(model, net)
    for k, v in net.state_dict().items():  # the run's own network is left as it was
        assert torch.equal(v, before[k]), k
    with torch.no_grad():
        agree = (model(x).argmax(1) == y).float().mean()
    assert float(agree) >= 0.9


def test_dynamic_activations_quantise_a_text_model_s_linear_layers_per_row(tmp_path):
    """activations=dynamic: int8 weights with the zeros kept, each input row's range measured
    as it runs; the program lowers to ExecuTorch and its file runs there."""
    torch.manual_seed(0)
    net = pruned(TextClassifier(vocab_size=50, embed_dim=8, hidden=6), 0.5)
    ids = torch.randint(2, 52, (64, 12), generator=torch.Generator().manual_seed(2))
    model = quantize_int8(net, ids[:2], [ids[:32]], dynamic=True)
    weights = int8_weights(model)
    assert {"fc1.weight", "fc2.weight"} <= set(weights)  # the embedding stays fp32 in XNNPACK
    for name in ("fc1.weight", "fc2.weight"):
        w, (values, _) = net.state_dict()[name], weights[name]
        assert values.dtype == torch.int8 and torch.all(values[w == 0] == 0), name
    assert any("choose_qparams" in str(n.target) for n in model.graph.nodes)  # per-row scales
    with torch.no_grad():
        want, got = net(ids), model(ids)
    assert float((got - want).abs().max()) < 0.05 * float(want.abs().max())
    path = tmp_path / "dynamic.pte"
    path.write_bytes(deploy.pte_bytes(model, ids[:2]))
    out = runtimes.open_file(path)(ids[:5])
    assert out.shape == (5,) and float((out - got[:5]).abs().max()) < 1e-3
    # the run's choice carries to the ONNX int8 file: ONNX Runtime's dynamic quantisation
    source = deploy.Source(net, ids[:1], lambda: iter([ids[:32]]), dynamic=True)
    written = deploy.write("onnx-int8", source, tmp_path / "dynamic.onnx")
    assert "quantize_dynamic" in written.record["quantized_by"]
    assert written.record["zeros_exact"] is True
    out = runtimes.open_file(tmp_path / "dynamic.onnx")(ids)
    assert float((out - want).abs().max()) < 0.05 * float(want.abs().max())


@pytest.mark.slow  # make test-all: the time budget of make test (docs/design/testing.md)
def test_a_text_model_s_int8_program_takes_any_batch_and_length(tmp_path):
    torch.manual_seed(0)
    net = pruned(TextClassifier(vocab_size=50, embed_dim=8, hidden=6), 0.5)
    ids = torch.randint(2, 52, (64, 12), generator=torch.Generator().manual_seed(2))
    source = deploy.Source(net, ids[:1], lambda: iter([ids[:32], ids[32:]]))
    written = deploy.write("executorch-int8", source, tmp_path / "text.pte")
    assert written.record["zeros_exact"] is True
    run = runtimes.open_file(tmp_path / "text.pte")
    for shape in [(1, 5), (3, 12), (300, 7)]:  # 300: over the planned batch, run in parts
        x = torch.randint(0, 52, shape, generator=torch.Generator().manual_seed(3))
        got, want = run(x), written.reference(x)
        assert got.shape == (shape[0],)
        assert bool(((got > 0) == (want > 0)).all()) and float((got - want).abs().max()) < 0.05


# ------------------------------------------------------------------ the run and the command


@pytest.fixture(scope="module")
def quantized_run(tiny_data, tmp_path_factory) -> Path:
    """A tiny pruned MNIST run with quantize=ptq, trained by the command line (in-process)."""
    run_dir = tmp_path_factory.mktemp("deploy_run") / "run"
    proc = prunelab_in_process(
        "pruning=one_shot", "pruning.schedule.amount=0.9", "pruning.schedule.start_epoch=0",
        "pruning/method=global_magnitude", "trainer=fast", "trainer.max_epochs=2",
        "quantize=ptq", "quantize.calibration_batches=2", f"data_dir={tiny_data}", *TINY,
        f"hydra.run.dir={run_dir}", cwd=run_dir.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "int8 test accuracy" in proc.stdout + proc.stderr  # the run's summary says it
    return run_dir


@pytest.fixture(scope="module")
def exported(quantized_run) -> Path:
    # the .plx encodings go in the same list; timed with few rounds on one thread (the 2 cores
    # are shared): the test is what is recorded, not the figure
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(timing, "REPS", 3)
        assert cli.main([str(quantized_run), "--format", ",".join((*FORMATS, "int8")),
                         "--threads", "1"]) == 0
    return quantized_run


def test_the_run_records_its_int8_model_beside_the_fp32_one(quantized_run):
    results = json.loads((quantized_run / "results.json").read_text())
    assert results["quantize"]["method"] == "ptq"
    assert results["quantize"]["calibration_batches"] == 2
    assert results["int8_test_samples"] == results["test_samples"] == 80
    program = load_program(quantized_run / "quantized_model.pt2").module()
    net, cfg, _ = load_finished_run(quantized_run)
    right = total = 0
    with torch.no_grad():
        for x, y in run_test_loader(cfg):
            right += int((program(x).argmax(1) == y).sum())
            total += len(y)
    assert results["int8_test_acc"] == right / total  # the saved model is the measured one
    assert_zeros_kept(program, net)


def test_each_format_is_written_measured_and_recorded(exported):
    for fmt in FORMATS:
        folder = exported / "export" / fmt
        rec = json.loads((folder / "export.json").read_text())
        path = folder / FILES[fmt]
        assert rec["format"] == fmt and rec["artifact"] == str(path)
        assert rec["artifact_bytes"] == path.stat().st_size
        assert rec["test_samples"] == 80 and 0 <= rec["test_acc"] <= 1
        assert rec["dense_bytes"] == 431_080 * 4
        if fmt.endswith("int8"):
            assert rec["zeros_exact"] is True and rec["artifact_bytes"] < rec["dense_bytes"] / 3
            assert rec["agreement"] >= 0.9
        else:  # fp32: the run's own network, to float rounding
            assert rec["agreement"] == 1.0 and rec["max_abs_diff"] < 1e-4
            assert rec["test_acc"] == rec["source_test_acc"]
    plx = json.loads((exported / "export" / "int8" / "export.json").read_text())
    assert plx["format"] == plx["encoding"] == "int8" and plx["artifact"].endswith("model.plx")
    rec = json.loads((exported / "export" / "executorch-int8" / "export.json").read_text())
    assert "the run" in rec["quantized_by"]  # the run's own int8 model, not a new one
    assert rec["agreement"] == 1.0  # XNNPACK's integer kernels, same int8 model
    results = json.loads((exported / "results.json").read_text())
    assert rec["test_acc"] == results["int8_test_acc"]


def test_each_file_is_timed_against_the_dense_fp32_file_of_its_own_runtime(exported):
    fp32 = {"onnxruntime": exported / "export" / "onnx" / "model.onnx",
            "executorch": exported / "export" / "executorch" / "model.pte"}
    for fmt in FORMATS:
        rec = json.loads((exported / "export" / fmt / "export.json").read_text())
        runtime = next(iter(rec["runtime"]))
        assert rec["threads"] == 1 and rec["latency_reps"] == 3
        for key in ("latency_ms", "dense_latency_ms", "latency_ratio"):
            assert set(rec[key]) == {"bs256", "bs1"}, (fmt, key)
            assert all(v > 0 for v in rec[key].values()), (fmt, key)
        if fmt.endswith("int8"):  # paired with the fp32 file of its runtime, never eager PyTorch
            assert rec["latency_baseline"] == str(fp32[runtime]), fmt
        else:  # the fp32 file of the run's network is the dense baseline itself
            assert rec["latency_baseline"] == "this file"
            assert rec["latency_ratio"] == {"bs256": 1.0, "bs1": 1.0}
            assert rec["latency_ms"] == rec["dense_latency_ms"]
    plx = json.loads((exported / "export" / "int8" / "export.json").read_text())
    assert "latency_ms" not in plx  # a .plx artifact runs in PyTorch: not timed


class FakeClock:
    """``time.perf_counter`` of the timing module: each call of a fake file advances it."""

    def __init__(self) -> None:
        self.now, self.order = 0.0, []

    def perf_counter(self) -> float:
        return self.now

    def call(self, name: str, ms: float):
        def run() -> None:
            self.order.append(name)
            self.now += ms / 1e3
        return run


def test_latency_is_the_median_of_rounds_paired_with_the_baseline(monkeypatch):
    clock = FakeClock()
    opened = []

    def timed_call(path, x, threads):  # the file takes 0.01 ms a sample, the dense 0.04
        opened.append((path.name, tuple(x.shape), threads))
        ms = 0.01 if path.name == "small.onnx" else 0.04
        return clock.call(path.name, ms * x.shape[0])

    monkeypatch.setattr(timing, "time", clock)
    monkeypatch.setattr(runtimes, "timed_call", timed_call)
    rec = timing.measure(Path("small.onnx"), Path("dense.onnx"), torch.zeros(1, 1, 8, 8),
                         threads=2, reps=4)
    assert rec["latency_ms"] == pytest.approx({"bs256": 2.56, "bs1": 0.01})
    assert rec["dense_latency_ms"] == pytest.approx({"bs256": 10.24, "bs1": 0.04})
    assert rec["latency_ratio"] == pytest.approx({"bs256": 0.25, "bs1": 0.25})
    assert rec["threads"] == 2 and rec["latency_baseline"] == "dense.onnx"
    assert opened == [("small.onnx", (256, 1, 8, 8), 2), ("dense.onnx", (256, 1, 8, 8), 2),
                      ("small.onnx", (1, 1, 8, 8), 2), ("dense.onnx", (1, 1, 8, 8), 2)]
    clock.order.clear()
    # blocks of one call, no warm-up time: 3 warm-up and 3 sizing calls each, then the rounds,
    # both files in each, the one that starts alternating
    ms = timing.paired({"a": clock.call("a", 1.0), "b": clock.call("b", 3.0)}, reps=4,
                       block_s=1e-9, warmup_s=0.0)
    assert clock.order == ["a"] * 6 + ["b"] * 6 + ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert ms == {"a": pytest.approx([1.0] * 4), "b": pytest.approx([3.0] * 4)}
    clock.order.clear()
    same = timing.measure(Path("small.onnx"), Path("small.onnx"), torch.zeros(1, 1, 8, 8),
                          threads=1, reps=2)
    assert same["latency_ratio"] == {"bs256": 1.0, "bs1": 1.0}
    assert set(clock.order) == {"small.onnx"}  # its own baseline: timed once


@pytest.fixture(scope="module")
def compacted_run(quantized_run, tmp_path_factory) -> tuple[Path, nn.Module]:
    """A copy of the run whose compact_model.pt2 holds its network without half of conv2's
    filters and of fc1's neurons (as compaction saves a structured-pruned run's network)."""
    from prunelab.pruning.compaction import compact_with_report, save_compact

    copy = tmp_path_factory.mktemp("compacted") / "run"
    shutil.copytree(quantized_run, copy, ignore=shutil.ignore_patterns("export", "checkpoints"))
    net, _, _ = load_finished_run(copy)
    with torch.no_grad():
        for layer in (net.conv2, net.fc1):
            n = layer.weight.shape[0]
            layer.weight[: n // 2] = 0
            layer.bias[: n // 2] = 0
    example = torch.zeros(2, 1, 28, 28)
    small, _ = compact_with_report(net, example)
    save_compact(small, copy / "compact_model.pt2", example)
    return copy, small


def test_the_compacted_network_is_exported_timed_and_recorded(compacted_run):
    run, small = compacted_run
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(timing, "REPS", 3)
        assert cli.main([str(run), "--format", "onnx-int8-compact,onnx-compact",
                         "--threads", "1"]) == 0
    params = sum(p.numel() for p in small.parameters())
    assert params < 431_080 / 2
    for fmt in ("onnx-compact", "onnx-int8-compact"):
        rec = json.loads((run / "export" / fmt / "export.json").read_text())
        assert rec["compacted_from"] == str(run / "compact_model.pt2")
        assert rec["params_total"] == params and rec["dense_bytes"] == 431_080 * 4
        assert rec["ratio"] > (3 if fmt == "onnx-compact" else 10)
        assert rec["test_samples"] == 80 and rec["agreement"] >= (1.0 if fmt == "onnx-compact"
                                                                   else 0.9)
        # no onnx in the list: the dense baseline is the run's network as --format onnx,
        # made for the timing, compared in ONNX Runtime
        assert rec["latency_baseline"].startswith("the run's network as --format onnx ")
        assert all(v > 0 for v in rec["latency_ratio"].values())
    x = torch.randn(5, 1, 28, 28)
    got = runtimes.open_file(run / "export" / "onnx-compact" / "model.onnx")(x)
    with torch.no_grad():
        assert torch.allclose(got, small(x), atol=1e-4)
    assert not (run / "export" / "onnx").exists()


def test_a_compact_format_without_a_compacted_network_is_one_line(quantized_run, capsys):
    capsys.readouterr()
    assert cli.main([str(quantized_run), "--format", "onnx,executorch-int8-compact",
                     "--out", str(quantized_run / "elsewhere")]) == 2
    line = one_error_line(capsys)
    assert "compact_model.pt2" in line and f"prunelab compact {quantized_run}" in line
    assert not (quantized_run / "elsewhere").exists()


def test_no_latency_leaves_the_timing_out(quantized_run, tmp_path, monkeypatch):
    monkeypatch.setattr(timing, "measure", None)  # would raise if called
    assert cli.main([str(quantized_run), "--format", "onnx-int8", "--no-latency", "--no-eval",
                     "--out", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / "onnx-int8" / "export.json").read_text())
    assert rec["format"] == "onnx-int8" and not [k for k in rec if "latency" in k]
    assert list(tmp_path.iterdir()) == [tmp_path / "onnx-int8"]  # no baseline file left


@pytest.mark.parametrize("threads", ["0", "-3"])
def test_a_bad_thread_count_is_one_line(quantized_run, capsys, threads):
    capsys.readouterr()
    assert cli.main([str(quantized_run), "--format", "onnx", "--threads", threads,
                     "--out", str(quantized_run / "elsewhere")]) == 2
    assert f"--threads {threads}: must be an integer in [1, 1024]" in one_error_line(capsys)
    assert not (quantized_run / "elsewhere").exists()


SCRIPT = """
import json, sys
import numpy as np
import onnxruntime as ort
import torch
from executorch.runtime import Runtime
x = np.load(sys.argv[1])
out = {}
for name, path in json.loads(sys.argv[2]).items():
    if path.endswith(".onnx"):
        s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        logits = s.run(None, {s.get_inputs()[0].name: x})[0]
    else:
        m = Runtime.get().load_program(path).load_method("forward")
        logits = m.execute([torch.from_numpy(x)])[0].numpy()
    out[name] = logits.tolist()
assert not [m for m in sys.modules if m.startswith("prunelab")]
print(json.dumps(out))
"""


def test_the_files_run_without_prunelab_and_match_pytorch(exported, tmp_path):
    net, cfg, _ = load_finished_run(exported)
    int8 = load_program(exported / "quantized_model.pt2").module()
    x, _ = next(iter(run_test_loader(cfg)))
    np.save(tmp_path / "x.npy", x.numpy())
    paths = {f: str(exported / "export" / f / FILES[f]) for f in FORMATS}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "x.npy"),
                           json.dumps(paths)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = {k: torch.tensor(v) for k, v in json.loads(proc.stdout.splitlines()[-1]).items()}
    with torch.no_grad():
        fp32, q = net(x), int8(x)
    for fmt in ("onnx", "executorch"):
        assert torch.allclose(got[fmt], fp32, atol=1e-4), fmt
    assert torch.equal(got["executorch-int8"].argmax(1), q.argmax(1))
    assert float((got["executorch-int8"] - q).abs().max()) < 0.05 * float(q.abs().max())
    assert float((got["onnx-int8"].argmax(1) == fp32.argmax(1)).float().mean()) >= 0.9


def test_a_file_given_alone_is_checked_and_described(exported, capsys):
    capsys.readouterr()
    assert cli.main([str(exported / "export" / "onnx-int8" / "model.onnx")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["runtime"] == "onnxruntime" and info["quantized"] is True
    assert cli.main([str(exported / "export" / "executorch" / "model.pte")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["runtime"] == "executorch" and info["check"] == [1, 10]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_an_unknown_format_is_one_line_before_anything_is_written(quantized_run, capsys):
    assert cli.main([str(quantized_run), "--format", "onnx,tflite"]) == 2
    line = one_error_line(capsys)
    assert "'tflite'" in line and "executorch-int8" in line and "kmeans4" in line
    assert "executorch-int8-compact" in line
    assert not (quantized_run / "export" / "tflite").exists()


def _damaged(exported: Path, tmp: Path, kind: str) -> Path:
    onnx = (exported / "export" / "onnx" / "model.onnx").read_bytes()
    pte = (exported / "export" / "executorch" / "model.pte").read_bytes()
    content, name = {
        "truncated onnx": (onnx[: len(onnx) // 2], "model.onnx"),
        "text as onnx": (b"not a model\n" * 50, "model.onnx"),
        "truncated pte": (pte[: len(pte) // 2], "model.pte"),
        "onnx as pte": (onnx, "model.pte"),
        "pickle as pte": ((exported / "final_model.pt").read_bytes(), "model.pte"),
    }[kind]
    path = tmp / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("kind", ["truncated onnx", "text as onnx", "truncated pte",
                                  "onnx as pte", "pickle as pte"])
def test_a_damaged_or_foreign_file_is_refused_in_one_line(exported, tmp_path, capsys, kind):
    path = _damaged(exported, tmp_path, kind)
    capsys.readouterr()
    assert cli.main([str(path)]) == 2
    assert str(path) in one_error_line(capsys)
    with pytest.raises(CheckpointError):
        runtimes.open_file(path)


def test_a_damaged_int8_model_in_the_run_is_one_line(quantized_run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(quantized_run, copy, ignore=shutil.ignore_patterns("export", "checkpoints"))
    saved = copy / "quantized_model.pt2"
    saved.write_bytes(saved.read_bytes()[:1000])
    with pytest.raises(CheckpointError):
        load_program(saved)
    capsys.readouterr()
    assert cli.main([str(copy), "--format", "executorch-int8", "--no-eval"]) == 2
    assert "quantized_model.pt2 is not a readable torch.export program" in one_error_line(capsys)
    assert not (copy / "export" / "executorch-int8" / "model.pte").exists()


def test_a_missing_extra_is_one_line_naming_it(make_cfg, quantized_run, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("executorch", "onnxruntime")
                        else real(name, *a))
    with pytest.raises(ConfigError, match=r"^quantize=ptq needs executorch .*"
                                          r"pip install 'prunelab\[executorch\]'$"):
        make_quantization(make_cfg("quantize=ptq"))
    for fmt, extra in (("executorch-int8", "executorch"), ("onnx", "onnxruntime")):
        capsys.readouterr()
        assert cli.main([str(quantized_run), "--format", fmt, "--out",
                         str(quantized_run / "elsewhere")]) == 2
        assert f"pip install 'prunelab[{extra}]'" in one_error_line(capsys)
    assert not (quantized_run / "elsewhere").exists()


@pytest.mark.parametrize("overrides,message", [
    (["quantize=qat", "quantize.epochs=0"], "quantize.epochs=0: must be an integer in [1, 1000]"),
    (["quantize=qat", "quantize.lr=-1"], "quantize.lr=-1"),
    (["quantize=ptq", "quantize.calibration_batches=0"], "quantize.calibration_batches=0"),
    (["quantize=ptq", "quantize.per_channel=maybe"], "quantize.per_channel='maybe'"),
    (["quantize=ptq", "quantize.activations=per_row"],
     "quantize.activations='per_row': not an option; valid: static, dynamic"),
])
def test_a_bad_quantize_value_is_one_line(make_cfg, overrides, message):
    with pytest.raises(PrunelabError) as err:
        make_quantization(make_cfg(*overrides))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_key_the_stage_does_not_take_is_refused_before_anything_runs(make_cfg):
    with pytest.raises(ConfigError, match=r"^quantize.epochs: not a key of ptq"):
        check_nodes(make_cfg("quantize=ptq", "+quantize.epochs=2"))


def test_quantize_none_is_the_run_of_before_and_ptq_is_another(make_cfg):
    plain = result_config(make_cfg())
    assert "quantize" not in plain  # a run folder of an earlier release resumes as it was
    ptq = result_config(make_cfg("quantize=ptq"))
    assert ptq["quantize"] == {"_target_": "prunelab.quantize.PTQ", "calibration_batches": 32,
                               "per_channel": True, "activations": "static"}
    assert {k: v for k, v in ptq.items() if k != "quantize"} == plain
