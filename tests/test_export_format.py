"""Format version 2 of the ``.plx`` artifact: streams, sparse and 8-bit biases, row/column
positions, dead units zeroed before encoding; version-1 files still load as before."""

from __future__ import annotations

import struct

import numpy as np
import plxfiles
import pytest
import torch
from test_export import sparse_lenet  # the network the version-1 fixtures were written from

from prunelab.errors import CheckpointError, ConfigError
from prunelab.export import codecs, container, deadunits, decode, encode, manifest, read
from prunelab.export.choice import Candidate, choose
from prunelab.models import LeNet

from conftest import ROOT

V1 = ROOT / "tests" / "fixtures" / "plx_v1"
V1_ENCODINGS = ("fp32", "int8", "kmeans4")


def version_of(data: bytes) -> int:
    return struct.unpack_from("<H", data, 8)[0]


# ---------------------------------------------------------------------------- version 1 still loads

@pytest.mark.parametrize("encoding", V1_ENCODINGS)
def test_version_1_files_decode_as_before(encoding):
    """The committed files of the previous writer decode to the tensors today's writer stores
    for the same network: the same weights (the same k-means), biases exact."""
    path = V1 / f"lenet_999_{encoding}.plx"
    assert version_of(path.read_bytes()) == 1
    record, old = read(path)
    assert record["metadata"] == {"fixture": "format version 1"}
    net = sparse_lenet(0.999, 0)
    data = encode(net, encoding)
    assert version_of(data) == container.VERSION == 2
    _, new = decode(data)
    assert old.keys() == new.keys() == net.state_dict().keys()
    for name, t in net.state_dict().items():
        assert torch.equal(old[name], new[name]), name
        assert torch.equal(old[name] == 0, t == 0), name
        if name.endswith("bias") or encoding == "fp32":
            assert torch.equal(old[name], t), name


@pytest.mark.parametrize("encoding", V1_ENCODINGS)
def test_version_2_is_smaller_than_version_1(encoding):
    """Streams of like bytes compress better than one frame of all of them."""
    v1 = (V1 / f"lenet_999_{encoding}.plx").stat().st_size
    v2 = len(encode(sparse_lenet(0.999, 0), encoding, metadata={"fixture": "format version 1"}))
    assert v2 < v1 - 100, (v2, v1)


def test_a_version_3_file_names_the_versions_read(tmp_path):
    data = bytearray(encode(sparse_lenet(0.99, 0), "kmeans4"))
    data[8:10] = struct.pack("<H", 3)
    path = tmp_path / "future.plx"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="version 3; this prunelab reads versions 1, 2"):
        read(path)


# ---------------------------------------------------------------------------- positions

@pytest.mark.parametrize("shape", [(6, 5), (7, 3, 2, 2), (1, 9), (9, 1, 4), (3, 3)])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.4, 1.0])
def test_row_and_column_positions_roundtrip(shape, density):
    rng = np.random.default_rng(sum(shape) + int(100 * density))
    mask = rng.random(shape) < density
    if mask.ndim >= 2 and shape[0] > 2 and shape[1] > 1:  # an empty row and an empty column
        mask[1] = False
        mask[:, 0] = False
    fields, data = codecs.encode_sub(mask)
    assert fields["rows"] == int(mask.reshape(shape[0], -1).any(1).sum())
    idx = codecs.decode_sub(data, shape, int(mask.sum()), fields["rows"], fields["cols"],
                            fields["inner"], fields["width"])
    assert np.array_equal(idx, np.flatnonzero(mask))


def test_dead_rows_and_columns_are_coded_by_rows_and_columns():
    """fc1 with most neurons and inputs empty (dead units): its positions say which rows and
    columns hold anything, then where inside them, in fewer bytes than a flat coding."""
    net = dead_rows_lenet()
    data = encode(net, "kmeans4")
    record, state = decode(data)
    entry = next(e for e in record["tensors"] if e["name"] == "fc1.weight")
    w = net.fc1.weight.detach() != 0
    assert entry["positions"] == "sub"
    assert (entry["rows"], entry["cols"]) == (int(w.any(1).sum()), int(w.any(0).sum()))
    assert entry["rows"] <= 50 and entry["cols"] <= 100
    assert torch.equal(state["fc1.weight"] == 0, net.fc1.weight == 0)
    flat = codecs.encode_positions(net.fc1.weight.detach().reshape(-1).numpy() != 0)[1]
    sub = codecs.encode_sub(net.fc1.weight.detach().numpy() != 0)[1]
    assert codecs._zlen(sub) < codecs._zlen(flat)


# ---------------------------------------------------------------------------- values

@pytest.mark.parametrize("encoding", ["fp32", "int8", "kmeans3"])
def test_biases_are_sparse_and_exact_by_default_or_8_bit(encoding):
    net = sparse_lenet(0.99, 2)
    with torch.no_grad():
        net.fc1.bias[::3] = 0  # the biases of dead units
    exact = decode(encode(net, encoding))[1]
    small = decode(encode(net, encoding, biases="int8"))[1]
    for name, t in net.state_dict().items():
        if t.dim() != 1:
            assert torch.equal(exact[name], small[name]), name  # weights: as before
            continue
        assert torch.equal(exact[name], t), name
        nz = t[t != 0]
        step = float(nz.max() - nz.min()) / 255
        assert torch.equal(small[name] == 0, t == 0), name
        assert float((small[name] - t).abs().max()) <= step / 2 * 1.001 + 1e-7, name
    assert len(encode(net, encoding, biases="int8")) < len(encode(net, encoding)) - 1000


def test_an_unknown_bias_coding_is_refused():
    with pytest.raises(ConfigError, match="'int4'; valid: fp32, int8"):
        encode(LeNet(), "kmeans4", biases="int4")


# ---------------------------------------------------------------------------- hostile version 2

def dead_rows_lenet() -> LeNet:
    """fc1 with 50 of its 500 neurons and 100 of its 800 inputs in use."""
    net = sparse_lenet(0.9, 1)
    with torch.no_grad():
        net.fc1.weight[50:] = 0
        net.fc1.weight[:, 100:] = 0
    return net


def _v2_with(edit) -> bytes:
    record, payload, version = plxfiles.parts(encode(dead_rows_lenet(), "kmeans4"))
    sizes = plxfiles.stream_sizes(record, 10 ** 6)
    entry = next(e for e in record["tensors"] if e["name"] == "fc1.weight")
    assert entry["positions"] == "sub"
    frames = record["frames"]
    edit(entry, record)
    return plxfiles.repack(record, payload, version, sizes,
                           record["frames"] if record["frames"] is not frames else None)


@pytest.mark.parametrize("edit, message", [
    (lambda e, r: e.update(rows=e["rows"] + 1),  # the bytes or the count no longer add up
     "positions stream declares|rows or columns do not match"),
    (lambda e, r: e.update(rows=501), "rows=501 outside 0..500"),
    (lambda e, r: e.update(inner="sub"), "inner is 'sub'"),
    (lambda e, r: e.update(cols=10 ** 12), "cols=1000000000000 outside"),
    (lambda e, r: r.update(frames=[1, 2]), "frames are"),
    (lambda e, r: r.update(frames=[r["frames"][0] + 1, *r["frames"][1:]]), "corrupt"),
])
def test_edited_version_2_manifests_are_refused(tmp_path, edit, message):
    path = tmp_path / "edited.plx"
    path.write_bytes(_v2_with(edit))
    with pytest.raises(CheckpointError, match=message) as err:
        read(path)
    assert str(err.value).startswith(str(path))


def test_rows_that_disagree_with_their_count_are_refused(tmp_path):
    """The row bitmask itself edited (a valid checksum): the count no longer matches."""
    record, payload, version = plxfiles.parts(encode(dead_rows_lenet(), "kmeans4"))
    plan_entries = manifest.check(record, "x", 10 ** 6, version=2).entries
    off = next(lay.sections["pos"][0] for name, _, lay in plan_entries if name == "fc1.weight")
    payload = bytearray(payload)
    payload[off + 40] |= 0x80  # row 320, empty: now claimed
    path = tmp_path / "rows.plx"
    path.write_bytes(plxfiles.repack(record, bytes(payload), version))
    with pytest.raises(CheckpointError, match="rows or columns do not match"):
        read(path)


# ---------------------------------------------------------------------------- dead units

def dead_lenet() -> LeNet:
    """A LeNet with dead units of every kind, and a chain of them.

    conv1 filter 0: read by no conv2 weight (unread); fc1 neuron 5: no input, negative bias
    (emits ReLU(b) = 0); neuron 6: no input, positive bias (a non-zero constant); neuron 7: read
    by no fc2 weight (unread), and the only reader of conv2 channel 3, which therefore goes too.
    """
    torch.manual_seed(0)
    net = LeNet().eval()
    with torch.no_grad():
        net.conv2.weight[:, 0] = 0
        net.fc1.weight[:, 48:64] = 0  # conv2 channel 3's 16 features ...
        net.fc1.weight[7, 48:64] = 0.3  # ... read by neuron 7 alone
        net.fc1.weight[5:7] = 0
        net.fc1.bias[5], net.fc1.bias[6] = -0.2, 0.4
        net.fc2.weight[:, 7] = 0
    return net


def test_unread_and_zero_units_are_zeroed_and_the_outputs_are_identical():
    net = dead_lenet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    stripped, report = deadunits.strip(net, torch.randn(1, 1, 28, 28), "zero")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # not modified
    s = stripped.state_dict()
    assert not s["conv1.weight"][0].any() and s["conv1.bias"][0] == 0
    assert not s["fc1.weight"][7].any() and s["fc1.bias"][7] == 0  # unread neuron
    assert not s["conv2.weight"][3].any() and s["conv2.bias"][3] == 0  # ... and what only it read
    assert s["fc1.bias"][5] == 0 and not s["fc2.weight"][:, 5].any()  # ReLU(-0.2) = 0
    assert s["fc1.bias"][6] == 0.4 and s["fc2.weight"][:, 6].all()  # a constant: kept
    assert report.layers == {"conv1": {"unread": 1}, "conv2": {"unread": 1},
                             "fc1": {"unread": 1, "constant": 1}}
    assert report.max_abs_output_diff == 0 and report.kept is None
    x = torch.randn(64, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(stripped(x), net(x))
    # the dropped biases are zeros the file stores in a bit or less
    assert len(encode(stripped, "fp32")) < len(encode(net, "fp32")) - 500


def test_fold_moves_a_constant_into_the_next_bias():
    net = dead_lenet()
    stripped, report = deadunits.strip(net, torch.randn(1, 1, 28, 28), "fold")
    s = stripped.state_dict()
    assert s["fc1.bias"][6] == 0 and not s["fc2.weight"][:, 6].any()
    assert torch.allclose(s["fc2.bias"], net.fc2.bias + 0.4 * net.fc2.weight[:, 6])
    assert report.layers["fc1"] == {"unread": 1, "constant": 1, "folded": 1}
    x = torch.randn(64, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(stripped(x), net(x), atol=1e-5)
        assert torch.equal(stripped(x).argmax(1), net(x).argmax(1))


def test_keep_and_a_network_without_dead_units_are_left_alone():
    net = dead_lenet()
    assert deadunits.strip(net, torch.randn(1, 1, 28, 28), "keep")[0] is net
    dense = LeNet().eval()
    same, report = deadunits.strip(dense, torch.randn(1, 1, 28, 28))
    assert same is dense and report.params_removed == 0
    with pytest.raises(ConfigError, match="'all'; valid: keep, zero, fold"):
        deadunits.strip(net, torch.randn(1, 1, 28, 28), "all")


# ---------------------------------------------------------------------------- the default encoding

def test_the_default_is_the_smallest_file_as_accurate_as_the_run():
    k5, k6, k8 = (Candidate("kmeans5", 100, 0.9880), Candidate("kmeans6", 120, 0.9884),
                  Candidate("kmeans8", 150, 0.9890))
    chosen, why = choose([k8, k6, k5], reference=0.9884)
    assert chosen is k6 and "smallest file" in why
    chosen, why = choose([k5, k6, k8], reference=0.9880)
    assert chosen is k5


def test_without_an_accurate_enough_file_the_most_accurate_is_chosen():
    k5, k6, k8 = (Candidate("kmeans5", 100, 0.97), Candidate("kmeans6", 120, 0.98),
                  Candidate("kmeans8", 150, 0.98))
    chosen, why = choose([k5, k6, k8], reference=0.99)
    assert chosen is k6 and "most accurate" in why  # the smaller of two equals


def test_without_measurements_the_first_candidate_is_chosen():
    k5, k6 = Candidate("kmeans5", 100, None), Candidate("kmeans6", 90, None)
    assert choose([k5, k6], reference=None)[0] is k5


def test_under_a_byte_budget_the_most_accurate_file_within_it_is_chosen():
    k4, k3, k2 = (Candidate("kmeans4", 3600, 0.990), Candidate("kmeans3", 3300, 0.989),
                  Candidate("kmeans2", 3000, 0.989))
    chosen, why = choose([k4, k3, k2], reference=0.988, max_bytes=3450)
    assert chosen is k2 and "most accurate file within 3,450 bytes" in why  # smaller of equals
    assert choose([k4, k3, k2], reference=0.988, max_bytes=4000)[0] is k4
    assert choose([k4, k3], reference=None, max_bytes=3450)[0] is k3  # unmeasured: the largest
    chosen, why = choose([k4, k3], reference=0.988, max_bytes=1000)
    assert chosen is k3 and why == "no file within 1,000 bytes: the smallest"


def test_zeroing_that_would_change_an_output_keeps_the_network(monkeypatch):
    """The final check is the guard: made stricter than any change (a negative tolerance, as
    if zeroing had moved the outputs), the network is kept as trained, and why is said."""
    monkeypatch.setattr(deadunits, "TOLERANCE", -1.0)
    net = dead_lenet()
    kept, report = deadunits.strip(net, torch.randn(1, 1, 28, 28), "zero")
    assert kept is net and report.kept.startswith("the outputs would change by 0")
    assert all(torch.equal(v, dead_lenet().state_dict()[k]) for k, v in net.state_dict().items())


def test_a_network_the_dependency_graph_cannot_trace_is_exported_as_trained(monkeypatch):
    """Torch-Pruning fails on some graphs (a channel shuffle divides by zero): the export goes
    on with the network as trained, and says why."""
    import torch_pruning as tp

    def fail(*args, **kwargs):
        raise ZeroDivisionError("integer division or modulo by zero")

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", fail)
    net = dead_lenet()
    kept, report = deadunits.strip(net, torch.randn(1, 1, 28, 28))
    assert kept is net and report.params_removed == 0
    assert report.kept == ("its dependency graph cannot be built or used (ZeroDivisionError: "
                           "integer division or modulo by zero)")
