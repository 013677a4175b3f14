"""The two networks: sizes from the reference articles, and the text model's masked mean."""

import pytest
import torch
from torch import nn

from prunelab.models import LeNet, TextClassifier


def test_cnn_has_the_articles_431080_parameters():
    net = LeNet()
    assert sum(p.numel() for p in net.parameters()) == 431_080
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_text_model_averages_over_each_reviews_tokens_not_over_the_batch():
    torch.manual_seed(0)
    net = TextClassifier(vocab_size=30, embed_dim=8, hidden=16)
    a = torch.tensor([[5, 6, 7, 0, 0]])
    b = torch.tensor([[9, 2, 0, 0, 0]])
    batch = torch.cat([a, b])
    # a review's logit does not depend on the other reviews of its batch (mean(dim=0) on
    # batch-first input, the article's bug, would make both logits equal)
    out = net(batch)
    assert torch.allclose(out[0], net(a)[0]) and torch.allclose(out[1], net(b)[0])
    assert not torch.allclose(out[0], out[1])


def test_text_model_ignores_padding():
    torch.manual_seed(1)
    net = TextClassifier(vocab_size=30, embed_dim=8, hidden=16)
    short = torch.tensor([[5, 6, 7]])
    padded = torch.tensor([[5, 6, 7, 0, 0, 0, 0]])
    assert torch.allclose(net(short), net(padded))
    # and the mean is the mean of the real tokens' embeddings
    emb = net.embedding.weight[[5, 6, 7]].mean(0)
    expected = net.fc2(torch.relu(net.fc1(emb))).squeeze(-1)
    assert torch.allclose(net(padded)[0], expected, atol=1e-6)


def test_channels_last_system_computes_the_same_function():
    from prunelab.models import ClassifierSystem

    torch.manual_seed(2)
    plain = ClassifierSystem(net=LeNet(), optimizer=None)
    nhwc = ClassifierSystem(net=LeNet(), optimizer=None, channels_last=True)
    nhwc.net.load_state_dict(plain.net.state_dict())
    assert nhwc.net.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    batch = (torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]))
    loss_a, logits_a, _ = plain.loss_and_logits(batch)
    loss_b, logits_b, _ = nhwc.loss_and_logits(batch)
    assert torch.allclose(logits_a, logits_b, atol=1e-5)


def test_cnn_pool_then_relu_equals_the_articles_relu_then_pool_with_gradients():
    from torch.nn import functional as F

    torch.manual_seed(3)
    net = LeNet()
    x = torch.randn(8, 1, 28, 28)
    y = torch.randint(0, 10, (8,))

    def article_forward(x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(net.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(net.conv2(x)), 2, 2)
        return net.fc2(F.relu(net.fc1(x.flatten(1))))

    grads = []
    outs = []
    for forward in (net.forward, article_forward):
        net.zero_grad()
        out = forward(x)
        F.cross_entropy(out, y).backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in net.parameters()])
    assert torch.equal(outs[0], outs[1])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-6)


def test_cnn_config_trains_in_channels_last(make_cfg):
    from prunelab.run import instantiate_model

    system = instantiate_model(make_cfg("model=cnn"))
    assert system.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("binary", [False, True])
def test_epoch_sums_give_the_sample_weighted_means_and_start_afresh(binary):
    from prunelab.models.system import EpochSums

    g = torch.Generator().manual_seed(4)
    sums = EpochSums(binary)
    losses, hits, n = 0.0, 0, 0
    for size in (5, 3, 7):  # unequal batches: a mean of batch means would be wrong
        logits = torch.randn(size, generator=g) if binary else torch.randn(size, 4, generator=g)
        y = torch.randint(0, 2 if binary else 4, (size,), generator=g)
        y = y.float() if binary else y  # BCE takes float labels
        loss = torch.rand((), generator=g)
        sums.update(loss, logits, y)
        pred = (logits > 0).long() if binary else logits.argmax(-1)
        losses += float(loss) * size
        hits += int((pred == y).sum())
        n += size
    loss_mean, acc = sums.pop()
    assert loss_mean == pytest.approx(losses / n, rel=1e-6)
    assert acc == pytest.approx(hits / n)
    assert sums.pop() is None  # reset: the next epoch starts from zero


def test_fast_attribute_assignment_keeps_module_semantics():
    from prunelab.models.system import ClassifierSystem

    system = ClassifierSystem(nn.Linear(2, 2), optimizer=torch.optim.SGD)
    system._current_fx_name = "training_step"  # Lightning's per-hook assignment: plain attribute
    assert system._current_fx_name == "training_step" and "_current_fx_name" in system.__dict__
    system.head = nn.Linear(2, 1)  # new names still register as modules, parameters, buffers
    system.scale = nn.Parameter(torch.ones(1))
    system.register_buffer("seen", torch.zeros(1))
    system.seen = torch.ones(1)  # a tensor assigned to a buffer name replaces the buffer
    assert "head" in system._modules and "scale" in system._parameters
    assert torch.equal(system._buffers["seen"], torch.ones(1)) and "seen" not in system.__dict__
    system.flag = None
    system.flag = nn.Linear(1, 1)  # a plain attribute may become a module, as in nn.Module
    assert "flag" in system._modules and "flag" not in system.__dict__
    names = {n for n, _ in system.named_parameters()}
    assert {"head.weight", "scale", "flag.weight"} <= names


@pytest.mark.parametrize("shape", [(3, 5, 24, 24), (2, 1, 8, 8), (4, 7, 6, 10), (2, 3, 7, 9)])
def test_inference_max_pool_equals_torchs(shape):
    from torch.nn import functional as F

    from prunelab.models.cnn import max_pool2x2

    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    x[0, 0, 0, 0] = float("nan")  # NaN propagates as in torch's max-pool
    x[-1, -1, -2:, -2:] = 1.5  # ties
    with torch.inference_mode():
        ours, ref = max_pool2x2(x), F.max_pool2d(x, 2, 2)
    assert ours.shape == ref.shape
    assert torch.equal(ours.nan_to_num(-9.0), ref.nan_to_num(-9.0))
    assert ours.isnan().sum() == ref.isnan().sum() == 1
    nchw = x.contiguous()  # and NCHW input, which takes torch's op
    with torch.no_grad():
        assert torch.equal(max_pool2x2(nchw).nan_to_num(-9.0), ref.nan_to_num(-9.0))


def test_macs_of_a_compacted_style_lenet_count_its_zeroed_filters():
    """A model without pruning hooks (made permanent, or compacted by hand) still gets its
    zeroed filters counted: effective MACs come from each layer's own FLOPs and density."""
    from prunelab.pruning.metrics import macs

    net = LeNet().to(memory_format=torch.channels_last)
    with torch.no_grad():
        net.conv2.weight[:25] = 0  # half the filters zero, no pruning hooks at all
    m = macs(net, torch.randn(1, 1, 28, 28))
    conv2 = 50 * 20 * 25 * 8 * 8
    assert m["macs_dense"] - m["macs_effective"] == conv2 // 2


def test_training_max_pool_keeps_torchs_gradient():
    from torch.nn import functional as F

    from prunelab.models.cnn import max_pool2x2

    x = torch.zeros(2, 3, 4, 4).contiguous(memory_format=torch.channels_last).requires_grad_()
    max_pool2x2(x).sum().backward()  # all ties: torch routes each window's gradient to one input
    ours = x.grad.clone()
    x.grad = None
    F.max_pool2d(x, 2, 2).sum().backward()
    assert torch.equal(ours, x.grad)


def test_evaluate_agrees_with_lightnings_validation():
    # the pruning callback's between-epoch check and the logged val_acc are the same measure
    from functools import partial

    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from prunelab.models import ClassifierSystem

    torch.manual_seed(8)
    model = ClassifierSystem(net=LeNet(), optimizer=partial(torch.optim.SGD, lr=0.1))
    data = DataLoader(TensorDataset(torch.randn(50, 1, 28, 28), torch.randint(0, 10, (50,))),
                      batch_size=16)
    ours = model.evaluate(data)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    logged = trainer.validate(model, data, verbose=False)[0]
    assert ours["acc"] == pytest.approx(logged["val_acc"])
    assert ours["loss"] == pytest.approx(logged["val_loss"], rel=1e-5)
    assert ours["loss"] > 0.0


def test_network_of_is_the_one_place_that_knows_the_net_attribute() -> None:
    import lightning as L

    from prunelab.models import ClassifierSystem, network_of

    net = LeNet()
    system = ClassifierSystem(net, optimizer=None)
    assert network_of(system) is net

    class OwnNetwork(L.LightningModule):  # a module that is its own network
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)
            self.net = "not a module"

    own = OwnNetwork()
    assert network_of(own) is own
