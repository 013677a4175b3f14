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


# ------------------------------------------------------------ ordinary nn.Module behaviour


def sparse_layers(bias: bool = True) -> dict[str, nn.Module]:
    torch.manual_seed(2)
    return {"linear": SparseLinear(prune_(nn.Linear(12, 5, bias=bias), 0.2)),
            "conv": SparseConv2d(prune_(nn.Conv2d(3, 4, 3, padding=1, bias=bias), 0.2)),
            "conv_channels_last": SparseConv2d(prune_(nn.Conv2d(3, 4, 3, bias=bias), 0.2), True)}


def example(kind: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    shape = (2, 12) if kind == "linear" else (2, 3, 9, 9)
    return torch.randn(*shape, generator=torch.Generator().manual_seed(3)).to(dtype)


@pytest.mark.parametrize("kind", ["linear", "conv", "conv_channels_last"])
@pytest.mark.parametrize("bias", [True, False])
def test_sparse_layers_have_a_state_dict_and_buffers(kind, bias):
    layer = sparse_layers(bias)[kind]
    names = ["weight", "bias"] if bias else ["weight"]
    assert [n for n, _ in layer.named_buffers()] == names
    state = layer.state_dict()
    assert list(state) == names and state["weight"].layout == torch.sparse_csr
    # the weights of one layer load into another (another sparsity pattern, other nnz)
    other = sparse_layers(bias)[kind]
    with torch.no_grad():
        for b in other.buffers():
            b.values().mul_(2) if b.layout == torch.sparse_csr else b.mul_(2)
    other.load_state_dict(state)
    torch.testing.assert_close(other(example(kind)), layer(example(kind)), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["linear", "conv", "conv_channels_last"])
def test_sparse_layers_move_and_cast_like_any_module(kind):
    layer = sparse_layers()[kind]
    expected = layer(example(kind)).double()
    assert layer.double() is layer and layer.weight.dtype == layer.bias.dtype == torch.float64
    torch.testing.assert_close(layer(example(kind, torch.float64)), expected, rtol=1e-5, atol=1e-5)
    layer.to(torch.float32)
    assert layer.to("cpu") is layer and layer.weight.dtype == torch.float32
    assert layer(example(kind)).dtype == torch.float32


def test_a_sparsified_network_saves_and_loads_its_weights(tmp_path):
    net, _ = sparsify(folded(masked_lenet(0.98)), torch.randn(4, 1, 28, 28), repeats=1, force=True)
    x = torch.randn(3, 1, 28, 28)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    again, _ = sparsify(folded(masked_lenet(0.98)), torch.randn(4, 1, 28, 28), repeats=1, force=True)
    with torch.no_grad():
        again.conv2.weight.values().zero_()
    again.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    torch.testing.assert_close(again(x), net(x), rtol=0, atol=0)


def test_threads_running_one_sparse_conv_get_their_own_im2col_memory():
    """Each thread reuses its own scratch tensor: two threads at once, at different batch sizes,
    both get the dense convolution's answer."""
    import threading

    torch.manual_seed(4)
    conv = prune_(nn.Conv2d(8, 8, 3, padding=1), 0.2)
    layer = SparseConv2d(conv)
    inputs = [torch.randn(n, 8, 32, 32) for n in (1, 7)]
    wanted = [conv(x).detach() for x in inputs]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(i: int) -> None:
        try:
            start.wait()
            for _ in range(30):
                torch.testing.assert_close(layer(inputs[i]), wanted[i], rtol=1e-5, atol=1e-5)
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert "_scratch" not in dict(layer.named_buffers()) and len(layer.state_dict()) == 2
