"""Trained quantisation: shared values fine-tuned with the codebook and the zeros fixed."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from test_export import sparse_lenet
from torch import nn

from prunelab.errors import ConfigError
from prunelab.export import codecs, decode, encode
from prunelab.export import finetune as ft
from prunelab.models.system import ClassifierSystem


class OneBatch:
    """A datamodule whose training split is one fixed batch, ``n`` times per epoch."""

    def __init__(self, batch: tuple[torch.Tensor, torch.Tensor], n: int = 1) -> None:
        self.batch, self.n = batch, n

    def prepare_data(self) -> None:
        pass

    def setup(self, stage: str | None = None) -> None:
        assert stage == "fit"

    def train_dataloader(self) -> list:
        return [self.batch] * self.n


def fixed_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g)


def system_of(net: nn.Module) -> ClassifierSystem:
    return ClassifierSystem(net, optimizer=partial(torch.optim.SGD, lr=0.1))


def loss_on(system: ClassifierSystem, batch) -> float:
    system.eval()
    with torch.no_grad():
        return float(system.loss_and_logits(batch)[0])


@pytest.mark.parametrize("bits", [2, 3])
def test_finetuned_codebook_keeps_bits_zeros_and_lowers_the_loss(bits):
    net = sparse_lenet(0.9)
    zeros = {n: p.detach() == 0 for n, p in net.named_parameters() if codecs.is_weight(p)}
    system = system_of(net)
    batch = fixed_batch()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    ft.share_weights(net, bits)  # the clustered starting point, as kmeans<bits> would store it
    clustered_loss = loss_on(system, batch)
    for n, p in net.named_parameters():  # start again from the run's weights
        p.data.copy_(before[n])
    info = ft.finetune_codebook(system, OneBatch(batch, 5), bits, epochs=2, lr=1e-3)
    assert info["steps"] == 10 and len(info["train_loss"]) == 2
    for name, p in net.named_parameters():
        if not codecs.is_weight(p):
            continue
        w = p.detach()
        assert torch.equal(w == 0, zeros[name]), name  # zeros exactly zero, non-zeros non-zero
        assert len(torch.unique(w[w != 0])) <= 2 ** bits, name
        assert info["codebooks"][name] <= 2 ** bits
    assert loss_on(system, batch) < clustered_loss
    # the kmeans<bits> encoding stores the fine-tuned values exactly
    _, state = decode(encode(net, f"kmeans{bits}"))
    for name, t in net.state_dict().items():
        assert torch.equal(state[name], t), name


def test_a_shared_value_gets_the_sum_of_its_weights_gradients():
    lin = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 1.0, 3.0], [3.0, 1.0, 0.0, 0.0]]))
    (s,) = ft.share_weights(lin, 1)  # two clusters: {1, 1, 1} and {3, 3}
    assert sorted(s.centroids.tolist()) == [1.0, 3.0]
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    lin(x).sum().backward()  # d/dw[i, j] = x[j]
    s.gather_grad()
    one, three = (0, 1) if s.centroids[0] == 1.0 else (1, 0)
    # weights equal to 1 sit at (0,0), (0,2), (1,1): x0 + x2 + x1; equal to 3 at (0,3), (1,0)
    assert s.centroids.grad[one] == pytest.approx(1 + 3 + 2)
    assert s.centroids.grad[three] == pytest.approx(4 + 1)
    assert s.index.tolist() == [0, 2, 3, 4, 5]  # the zeros are not in the codebook


def test_bias_stays_put_without_train_exact():
    net = sparse_lenet(0.9)
    bias = net.fc2.bias.detach().clone()
    ft.finetune_codebook(system_of(net), OneBatch(fixed_batch(), 2), 3, epochs=1, lr=1e-3,
                         train_exact=False)
    assert torch.equal(net.fc2.bias, bias)
    assert all(p.requires_grad for p in net.parameters())


def test_exact_codebook_when_values_are_already_shared():
    # 4 distinct values: Lloyd's k-means from a linear start merges 0.9, 0.95 and 1.0 into one
    # cluster (two centres stay empty); they are already a codebook of 4 and must stay exact
    w = torch.tensor([-1.0, 0.9, 0.0, 0.95, 1.0, 0.9] * 4).reshape(4, 6)
    net = sparse_lenet(0.99)
    with torch.no_grad():
        net.fc2.weight.zero_()
        net.fc2.weight[:4, :6] = w
    _, state = decode(encode(net, "kmeans2"))
    assert torch.equal(state["fc2.weight"], net.fc2.weight)
    assert len(codecs.kmeans_1d(w[w != 0].numpy(), 4)[0]) < 4  # what plain k-means would do


@pytest.mark.parametrize("epochs,lr,match", [(-1, 1e-4, "finetune-epochs.*-1"),
                                             (1, 0.0, "learning rate.*0.0")])
def test_bad_settings_are_refused(epochs, lr, match):
    with pytest.raises(ConfigError, match=match):
        ft.check(epochs, lr)
