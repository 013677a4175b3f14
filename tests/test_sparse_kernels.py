"""Sparse-kernel layers: the same outputs as the dense (masked) layers, within 1e-5."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from prunelab.export.sparse import SparseConv2d, SparseLinear, sparsify, to_sparse_layer
from prunelab.models import LeNet
from prunelab.pruning import criteria as M


def prune_(module: nn.Module, density: float, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.weight.mul_((torch.rand(module.weight.shape, generator=g) < density).float())
    return module


@pytest.mark.parametrize("bias", [True, False])
def test_sparse_linear_matches_linear(bias):
    torch.manual_seed(0)
    lin = prune_(nn.Linear(64, 33, bias=bias), 0.05)
    x = torch.randn(4, 7, 64)  # any leading dims
    got = SparseLinear(lin)(x)
    assert got.shape == (4, 7, 33)
    torch.testing.assert_close(got, lin(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride,padding,dilation", [(1, 0, 1), (2, 1, 1), (1, 2, 2), ((2, 1), (0, 1), 1)])
@pytest.mark.parametrize("channels_last_in", [False, True])
@pytest.mark.parametrize("channels_last_out", [False, True])
def test_sparse_conv_matches_conv(stride, padding, dilation, channels_last_in, channels_last_out):
    torch.manual_seed(1)
    conv = prune_(nn.Conv2d(6, 10, (3, 4), stride=stride, padding=padding, dilation=dilation), 0.2)
    x = torch.randn(3, 6, 13, 11)
    if channels_last_in:
        x = x.contiguous(memory_format=torch.channels_last)
    got = SparseConv2d(conv, channels_last=channels_last_out)(x)
    torch.testing.assert_close(got, conv(x), rtol=1e-5, atol=1e-5)
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last_out


def test_unsupported_convolutions_stay_dense():
    assert to_sparse_layer(nn.Conv2d(4, 4, 3, groups=2)) is None
    assert to_sparse_layer(nn.Conv2d(4, 4, 3, padding="same")) is None
    assert to_sparse_layer(nn.ReLU()) is None


def masked_lenet(amount: float) -> LeNet:
    torch.manual_seed(0)
    net = LeNet().eval()
    names = ("conv1", "conv2", "fc1")
    masks = M.compute_masks("global_magnitude", {n: net.get_submodule(n).weight.detach() for n in names}, amount)
    for n in names:
        prune.custom_from_mask(net.get_submodule(n), "weight", masks[n])
    return net


def folded(masked: LeNet) -> LeNet:
    net = LeNet().eval()
    state = masked.state_dict()
    net.load_state_dict({k.removesuffix("_orig"): v * state.get(k.removesuffix("_orig") + "_mask", 1)
                         for k, v in state.items() if not k.endswith("_mask")})
    return net


@pytest.mark.parametrize("force", [True, False])
def test_sparsified_lenet_equals_the_masked_model(force):
    masked = masked_lenet(0.98)
    x = torch.randn(16, 1, 28, 28)
    net, choices = sparsify(folded(masked), x, repeats=3, force=force)
    kinds = {name: type(net.get_submodule(name)).__name__ for name in ("conv1", "conv2", "fc1", "fc2")}
    if force:  # every layer at most half dense switched (fc2 is dense, conv1 ~84 % dense)
        assert kinds == {"conv1": "Conv2d", "conv2": "SparseConv2d", "fc1": "SparseLinear",
                         "fc2": "Linear"}
    for c in choices:
        assert c.sparse == (kinds[c.name].startswith("Sparse"))
        if c.sparse and not force:
            assert c.model_sparse_ms is not None and c.model_dense_ms is not None
    with torch.no_grad():
        for batch in (x, torch.randn(1, 1, 28, 28), torch.randn(64, 1, 28, 28)):
            torch.testing.assert_close(net(batch), masked(batch), rtol=0, atol=1e-5)


def test_sparsify_leaves_the_input_network_alone():
    plain = folded(masked_lenet(0.95))
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    sparsify(plain, torch.randn(2, 1, 28, 28), repeats=1, force=True)
    assert all(type(m) in (LeNet, nn.Conv2d, nn.Linear) for m in plain.modules())
    assert all(torch.equal(before[k], v) for k, v in plain.state_dict().items())


@pytest.mark.parametrize("dense_ms,sparse_ms,switched", [(1.0, 2.0, False), (1.0, 0.99, False),
                                                        (1.0, 0.9, True)])
def test_a_layer_switches_only_when_the_network_is_faster_beyond_the_margin(
        monkeypatch, dense_ms, sparse_ms, switched):
    import prunelab.export.sparse as S

    monkeypatch.setattr(S, "paired_ms", lambda a, b, repeats=20: (a(), b(), dense_ms, sparse_ms)[2:])
    net, choices = sparsify(folded(masked_lenet(0.98)), torch.randn(4, 1, 28, 28), repeats=1)
    fc1 = next(c for c in choices if c.name == "fc1")
    assert fc1.sparse == switched
    assert isinstance(net.fc1, SparseLinear) == switched
    assert fc1.model_dense_ms == dense_ms
