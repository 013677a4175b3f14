"""Sensitivity analysis: each layer pruned alone, measured and restored; the CLI on a run folder."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from torch import nn

from prunelab.cli.sensitivity import main
from prunelab.errors import ConfigError
from prunelab.pruning.sensitivity import SensitivityTable, analyze, check_grid, derive_amounts


def two_layers() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 1, bias=False), nn.Linear(1, 4, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0, 3.0, 4.0]]))
        model[1].weight.copy_(torch.tensor([[10.0], [-20.0], [30.0], [-40.0]]))
    return model


def test_each_layer_is_pruned_alone_and_restored():
    model = two_layers()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def score(m: nn.Module) -> float:
        w0, w1 = m[0].weight.detach().flatten(), m[1].weight.detach().flatten()
        seen.append((int((w0 == 0).sum()), int((w1 == 0).sum())))
        return float(w0.abs().sum() / 10)  # an "accuracy" of 1.0 for the dense first layer

    table = analyze(model, score, ["0.weight", "1.weight"], [0.75, 0.5])
    assert table.amounts == [0.5, 0.75]
    # baseline; layer 0 at 0.5 (1 and -2 zeroed) and 0.75; then layer 1 alone
    assert seen == [(0, 0), (2, 0), (3, 0), (0, 2), (0, 3)]
    assert table.baseline == pytest.approx(1.0)
    assert table.drop("0.weight", 0.5) == pytest.approx(30.0)
    assert table.drop("0.weight", 0.75) == pytest.approx(60.0)
    assert table.drop("1.weight", 0.75) == pytest.approx(0.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_zeros_already_there_count_towards_the_amount():
    model = two_layers()
    with torch.no_grad():
        model[0].weight[0, 2:] = 0  # 3 and 4 gone: 50 % sparse already
    table = analyze(model, lambda m: float(m[0].weight.abs().sum()), ["0.weight"], [0.5, 0.75])
    assert table.sparsity["0.weight"] == 0.5
    assert table.accuracy["0.weight"][0.5] == pytest.approx(3.0)  # nothing more to zero
    assert table.accuracy["0.weight"][0.75] == pytest.approx(2.0)  # only |1| goes next


def test_derive_amounts_stops_at_the_first_amount_over_the_tolerance():
    t = SensitivityTable(baseline=0.99, layers=["a", "b", "c"], amounts=[0.5, 0.9, 0.99],
                         accuracy={"a": {0.5: 0.99, 0.9: 0.985, 0.99: 0.95},
                                   "b": {0.5: 0.97, 0.9: 0.99, 0.99: 0.99},  # lucky above a miss
                                   "c": {0.5: 0.99, 0.9: 0.99, 0.99: 0.99}})
    assert derive_amounts(t, 0.5) == {"a": 0.9, "b": 0.0, "c": 0.99}
    with pytest.raises(ConfigError, match="must be a drop"):
        derive_amounts(t, -1)


@pytest.mark.parametrize("grid, needle", [([], "empty"), ([0.5, 1.0], "amount 1.0"),
                                          ([0.0], "amount 0.0"), (["x"], "'x'"),
                                          ([float("nan")], "nan")])
def test_bad_grid_is_refused(grid, needle):
    with pytest.raises(ConfigError, match=needle):
        check_grid(grid)


def test_criteria_that_need_training_gradients_and_unknown_layers_are_refused():
    with pytest.raises(ConfigError, match="'taylor' needs gradient statistics"):
        analyze(two_layers(), lambda m: 1.0, ["0.weight"], [0.5], method="taylor")
    with pytest.raises(ConfigError, match="'fc9.weight' is not a parameter.*0.weight, 1.weight"):
        analyze(two_layers(), lambda m: 1.0, ["fc9.weight"], [0.5])


# ---------------------------------------------------------------- the command


@pytest.fixture
def run_dir(make_cfg, tmp_path) -> Path:
    """A run folder as prunelab leaves it: the config and a (half-pruned) final model."""
    from prunelab.run import instantiate_model

    cfg = make_cfg("model=cnn")
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    torch.manual_seed(0)
    net = instantiate_model(cfg).net
    with torch.no_grad():
        net.fc1.weight[net.fc1.weight.abs() < net.fc1.weight.abs().median()] = 0
    torch.save(net.state_dict(), run / "final_model.pt")
    return run


def test_command_writes_table_csv_plot_and_amounts(run_dir, capsys):
    from prunelab.evaluate import evaluate
    from prunelab.loading import load_finished_run
    from prunelab.pruning.criteria import mask

    model_file = (run_dir / "final_model.pt").read_bytes()
    rc = main([str(run_dir), "--amounts", "0.5,0.9,0.99", "--batches", "1",
               "--derive-amounts", "1.0"])
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "| net.fc1.weight | 400,000 | 50.0 % |" in out
    with open(run_dir / "sensitivity.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["layer"], float(r["amount"])) for r in rows] == [
        (layer, a) for layer in ("net.conv1.weight", "net.conv2.weight", "net.fc1.weight")
        for a in (0.5, 0.9, 0.99)]
    # one cell measured independently: conv2 alone at 90 % by magnitude, on the same batch
    net, cfg, _ = load_finished_run(run_dir)
    from prunelab.cli.sensitivity import val_batches

    batches = val_batches(cfg, None, 1)
    base = evaluate(net, batches, False)["test_acc"]
    with torch.no_grad():
        net.conv2.weight.mul_(mask("l1_unstructured", net.conv2.weight, 0.9))
    cell = next(r for r in rows if r["layer"] == "net.conv2.weight" and r["amount"] == "0.9")
    assert float(cell["baseline"]) == pytest.approx(base)
    assert float(cell["accuracy"]) == pytest.approx(evaluate(net, batches, False)["test_acc"])
    assert (run_dir / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    assert "validation batches" in (run_dir / "sensitivity.md").read_text()
    amounts = yaml.safe_load((run_dir / "sensitivity_amounts.yaml").read_text())["layer_amounts"]
    assert set(amounts) == {"net.conv1.weight", "net.conv2.weight", "net.fc1.weight"}
    assert amounts["net.fc1.weight"] >= 0.5  # already half zero: 0.5 changes nothing
    assert "layer_amounts:" in out
    assert (run_dir / "final_model.pt").read_bytes() == model_file  # the run is never changed


@pytest.mark.parametrize("args, needle", [
    (["--amounts", "0.5,1.2"], "amount 1.2"),
    (["--amounts", "0.5,abc"], "'abc' is not a number"),
    (["--batches", "0"], "--batches 0"),
    (["--layers", "net.fc9.weight"], "'net.fc9.weight' is not a parameter"),
    (["--method", "taylor"], "needs gradient statistics"),
])
def test_bad_input_is_one_line_and_exit_2(run_dir, capsys, args, needle):
    assert main([str(run_dir), "--batches", "1", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prunelab sensitivity: error:") and needle in err[0]
    assert not (run_dir / "sensitivity.csv").exists()


def test_no_finished_run_is_one_line_and_exit_2(run_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (run_dir / "final_model.pt").unlink()  # a run folder that never got to save a model
    for path, needle in ((tmp_path / "nowhere", "does not exist"),
                         (tmp_path / "empty", "not inside a prunelab run directory"),
                         (run_dir, "neither final_model.pt nor checkpoints/last.ckpt")):
        assert main([str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert not (run_dir / "sensitivity.csv").exists()
