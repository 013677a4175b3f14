"""Compaction removes zeroed filters/neurons for real and keeps the outputs; latency is measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from prunelab.models import LeNet, TextClassifier
from prunelab.pruning.compaction import (
    CompactionError,
    compact,
    compact_fields,
    compact_with_report,
    save_compact,
)
from prunelab.pruning.criteria import mask as criterion_mask
from prunelab.pruning.latency import efficiency_report, measure_latency

ATOL = 1e-5


def _mask(model: nn.Module, names: list[str], amount: float) -> nn.Module:
    for name in names:
        module = model.get_submodule(name)
        prune.custom_from_mask(module, "weight", criterion_mask("ln_structured", module.weight, amount))
    return model


def masked_lenet(amount: float = 0.5, seed: int = 0) -> LeNet:
    torch.manual_seed(seed)
    return _mask(LeNet(), ["conv1", "conv2", "fc1"], amount).eval()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class SmallCNN(nn.Module):
    """conv→BN→ReLU→conv→ReLU→adaptive pool→flatten→linear; ``pad2`` pads the second conv."""

    def __init__(self, pad2: int = 0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=pad2, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))


def small_cnn(pad2: int = 0) -> SmallCNN:
    torch.manual_seed(1)
    m = SmallCNN(pad2)
    with torch.no_grad():  # non-trivial BN statistics and affine terms, biases of both signs
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
        m.bn.weight.uniform_(0.5, 1.5)
        m.bn.bias.uniform_(-1, 1)
        m.conv1.bias.uniform_(-1, 1)
    return _mask(m, ["conv1", "conv2"], 0.5).eval()


def _diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


def test_lenet_50_percent_shrinks_and_keeps_outputs() -> None:
    masked = masked_lenet(0.5)
    x = torch.randn(8, 1, 28, 28)
    small, report = compact_with_report(masked, x[:1])
    assert (small.conv1.out_channels, small.conv2.out_channels, small.fc1.out_features) == (10, 25, 250)
    assert small.conv2.in_channels == 10 and small.fc1.in_features == 25 * 16
    assert small.fc2.out_features == 10  # the classifier keeps its outputs
    assert n_params(small) < n_params(masked) // 2
    assert _diff(small, masked, x) <= ATOL
    assert report.kept == {} and report.max_abs_diff <= ATOL
    # the zeroed filters' biases were folded forward, not dropped
    assert not torch.equal(small.fc2.bias, masked.fc2.bias)


def test_input_model_untouched_and_plain_zeroed_model_works() -> None:
    masked = masked_lenet(0.5)
    before = {k: v.clone() for k, v in masked.state_dict().items()}
    compact(masked, torch.randn(1, 1, 28, 28))
    assert prune.is_pruned(masked.conv1)
    assert all(torch.equal(before[k], v) for k, v in masked.state_dict().items())
    for name in ("conv1", "conv2", "fc1"):  # as after make_permanent
        prune.remove(masked.get_submodule(name), "weight")
    small = compact(masked, torch.randn(1, 1, 28, 28))
    assert small.conv1.out_channels == 10
    assert _diff(small, masked, torch.randn(4, 1, 28, 28)) <= ATOL


def test_small_cnn_with_batchnorm() -> None:
    masked = small_cnn(pad2=0)
    x = torch.randn(6, 3, 12, 12)
    small, report = compact_with_report(masked, x[:2])
    assert small.conv1.out_channels == 8 and small.bn.num_features == 8
    assert small.conv2.out_channels == 16 and small.fc.in_features == 16
    assert small.conv2.bias is not None  # created to receive the folded BN/ReLU constants
    assert _diff(small, masked, x) <= ATOL
    assert n_params(small) < n_params(masked)


def test_padded_consumer_keeps_what_cannot_fold() -> None:
    masked = small_cnn(pad2=1)
    x = torch.randn(6, 3, 12, 12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small, report = compact_with_report(masked, x[:2])
    # zero padding sees a constant channel only in part at the border: those stay, exactly
    assert report.kept.get("conv1", 0) > 0 and "padding" in report.reasons["conv1"]
    assert small.conv1.out_channels == 8 + report.kept["conv1"]
    assert small.conv2.out_channels == 16
    assert any("compact kept" in str(w.message) for w in caught)
    assert _diff(small, masked, x) <= ATOL


def test_mlp_with_token_ids() -> None:
    torch.manual_seed(2)
    masked = _mask(TextClassifier(vocab_size=50, embed_dim=8, hidden=20), ["fc1"], 0.5).eval()
    ids = torch.randint(0, 52, (5, 7))
    small = compact(masked, ids[:1])
    assert small.fc1.out_features == 10 and small.fc2.in_features == 10
    assert _diff(small, masked, ids) <= ATOL


def test_ignored_layers_keep_their_units() -> None:
    masked = masked_lenet(0.5)
    small = compact(masked, torch.randn(1, 1, 28, 28), ignored_layers=[masked.conv2])
    assert small.conv1.out_channels == 10 and small.conv2.out_channels == 50
    with pytest.raises(CompactionError):
        compact(masked, torch.randn(1, 1, 28, 28), ignored_layers=[nn.Linear(2, 2)])


def test_saved_model_loads_without_prunelab(tmp_path: Path) -> None:
    masked = masked_lenet(0.75)
    small = compact(masked, torch.randn(1, 1, 28, 28))
    path = save_compact(small, tmp_path / "compact_model.pt2", torch.randn(1, 1, 28, 28))
    x = torch.randn(3, 1, 28, 28)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(masked(x), tmp_path / "want.pt")
    code = (
        "import sys, torch\n"
        f"m = torch.export.load({str(path)!r}).module()\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        f"want = torch.load({str(tmp_path / 'want.pt')!r})\n"
        "d = max(float((m(x) - want).abs().max()), float((m(x[:1]) - want[:1]).abs().max()))\n"
        "assert 'prunelab' not in sys.modules, 'prunelab was imported'\n"
        "print(d)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip().splitlines()[-1]) <= ATOL


def test_compact_fields() -> None:
    masked = masked_lenet(0.5)
    x = torch.randn(1, 1, 28, 28)
    fields = compact_fields(compact(masked, x), x)
    assert fields["params_compact"] == 109_295
    assert 0 < fields["macs_compact"] < 2_293_000 / 2


def test_measure_latency_positive() -> None:
    lat = measure_latency(masked_lenet(0.5), torch.randn(1, 1, 28, 28), min_run_time=0.01)
    assert set(lat) == {"bs1", "bs256"} and all(v > 0 for v in lat.values())


def test_measure_latency_settings_work_on_a_copy(monkeypatch) -> None:
    x = torch.randn(1, 1, 28, 28)
    net = compact(masked_lenet(0.5), x)
    compiled = []
    # record what would be compiled (inductor itself takes seconds; the wiring is the point)
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled.append(m) or m)
    lat = measure_latency(net, x, batch_sizes=(2,), min_run_time=0.01, channels_last=True,
                          compile=True)
    assert lat["bs2"] > 0
    assert len(compiled) == 1 and compiled[0] is not net
    assert compiled[0].conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert net.conv2.weight.is_contiguous()  # the caller's model keeps its layout


def test_efficiency_report_fields() -> None:
    masked = masked_lenet(0.5)
    report = efficiency_report(None, masked, torch.randn(1, 1, 28, 28), batch_sizes=(1, 4),
                               min_run_time=0.01, devices=["cpu"])
    assert set(report["latency_ms"]) == {"dense", "masked", "compact"}
    for per_bs in report["latency_ms"].values():
        assert set(per_bs) == {"bs1", "bs4"} and all(v > 0 for v in per_bs.values())
    assert report["params_compact"] > 0 and report["macs_compact"] > 0
    assert prune.is_pruned(masked.conv1)  # untouched
    json.dumps(report)  # fit for results.json


def _fake_run(run_dir: Path) -> Path:
    """A finished run's files without training: config, final_model.pt, results.json."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(
        "model:\n  name: cnn\n  net:\n    _target_: prunelab.models.LeNet\n"
        "data:\n  name: mnist\n  _target_: prunelab.data.MNISTDataModule\n"
        f"  data_dir: {run_dir / 'no_data'}\n"  # the example input needs no data read
    )
    net = masked_lenet(0.5)
    for name in ("conv1", "conv2", "fc1"):
        prune.remove(net.get_submodule(name), "weight")
    torch.save(net.state_dict(), run_dir / "final_model.pt")
    (run_dir / "results.json").write_text(json.dumps({"status": "ok", "test_acc": 0.9}))
    return run_dir


def test_cli_compacts_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prunelab.cli.compact import main

    run_dir = _fake_run(tmp_path / "run")
    rc = main([str(run_dir), "--min-run-time", "0.01", "--batch-sizes", "1,2"])
    assert rc == 0
    out = capsys.readouterr().err  # the result goes through prunelab's logging (stderr)
    assert "params" in out and "latency bs2" in out
    results = json.loads((run_dir / "results.json").read_text())
    assert results["test_acc"] == 0.9 and results["params_compact"] == 109_295
    assert results["macs_compact"] > 0 and set(results["latency_ms"]) == {"dense", "masked", "compact"}
    assert (run_dir / "compact_model.pt2").exists()
    assert not list(run_dir.glob("*.tmp*"))


@pytest.mark.parametrize("what", ["missing", "no_config", "bad_weights"])
def test_cli_bad_run_dir_is_one_line_exit_2(tmp_path: Path, what: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from prunelab.cli.compact import main

    run_dir = tmp_path / "run"
    if what != "missing":
        _fake_run(run_dir)
    if what == "no_config":
        (run_dir / ".hydra" / "config.yaml").unlink()
    if what == "bad_weights":
        (run_dir / "final_model.pt").write_bytes(b"not a model")
    assert main([str(run_dir), "--no-latency"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prunelab compact: error:") and len(err.splitlines()) == 1


def test_cli_takes_the_input_from_the_data_module_not_the_data_sets_name(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A data config under another name (a user's own copy of mnist.yaml) compacts the same."""
    from prunelab.cli.compact import main

    run_dir = _fake_run(tmp_path / "run")
    config = run_dir / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("name: mnist", "name: my_digits"))
    assert main([str(run_dir), "--no-latency"]) == 0, capsys.readouterr().err
    assert json.loads((run_dir / "results.json").read_text())["params_compact"] == 109_295


def test_example_input_comes_from_the_data_module(tmp_path: Path) -> None:
    from prunelab.data import IMDBDataModule, MNISTDataModule, example_input

    x = example_input(MNISTDataModule(data_dir=str(tmp_path / "none")))
    assert x.shape == (1, 1, 28, 28) and x.dtype == torch.float32
    ids = example_input(IMDBDataModule(data_dir=str(tmp_path / "none"), vocab_size=50, max_len=7))
    assert ids.shape == (1, 7) and int(ids.min()) >= 2 and int(ids.max()) < 52
    assert not (tmp_path / "none").exists()  # nothing read, nothing downloaded

    class Own:  # a data module without example_input(): its first test sample
        def prepare_data(self) -> None:
            self.prepared = True

        def setup(self, stage: str) -> None:
            assert stage == "test" and self.prepared

        def test_dataloader(self) -> list:
            return [(torch.arange(30.0).view(5, 3, 2), torch.zeros(5))]

    assert torch.equal(example_input(Own()), torch.arange(6.0).view(1, 3, 2))
