"""What prunelab.internals relies on in torch and Lightning still holds, and each fallback
gives the fast path's results. A failure here after an upgrade names the internal that changed."""

from __future__ import annotations

import inspect

import lightning as L
import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import DataLoader, TensorDataset

from prunelab import internals as X
from prunelab.models import LeNet

INSTALLED = f"torch {torch.__version__}, lightning {L.__version__}"
MEASURED = f"torch {X.MEASURED_ON['torch']}, lightning {X.MEASURED_ON['lightning']}"


@pytest.mark.parametrize("flag", ["FAST_ATTRIBUTES", "FAST_PROFILER", "BATCH_PROGRESS",
                                  "ORDERED_PARAMETERS", "PRUNE_HOOK_NAMES", "FOREACH_MUL",
                                  "CONV_FORWARD", "DEVICE_CONSTRUCTORS"])
def test_every_internal_is_still_there(flag: str) -> None:
    assert getattr(X, flag), (
        f"prunelab.internals.{flag}: the torch/Lightning internal it relies on changed "
        f"({INSTALLED}; measured on {MEASURED}); prunelab runs on its slower fallback: "
        "check the workaround's docstring, then update it or drop it")


# ---------------------------------------------------------------- FastAttributes


class _Fast(X.FastAttributes, nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.plain = 0


@pytest.mark.parametrize("fast", [True, False])
def test_fast_attributes_assign_like_nn_module(fast: bool, monkeypatch) -> None:
    monkeypatch.setattr(X, "FAST_ATTRIBUTES", fast)
    m = _Fast()
    m.plain = 5
    assert vars(m)["plain"] == 5
    m.plain = nn.Parameter(torch.ones(2))  # a tensor: nn.Module's path registers it
    assert "plain" in dict(m.named_parameters()) and "plain" not in vars(m)
    m.sub = 1
    m.sub = nn.Linear(2, 2)
    assert "sub" in dict(m.named_children()) and "sub" not in vars(m)
    m.register_buffer("buf", torch.zeros(1))
    m.buf = torch.ones(1)  # a buffer stays a buffer
    assert torch.equal(dict(m.named_buffers())["buf"], torch.ones(1))


# ---------------------------------------------------------------- NoProfiler


def test_lightning_profiles_every_hook_through_profiler_profile() -> None:
    from lightning.pytorch.trainer import call

    # the share NoProfiler saves exists only while Lightning calls profiler.profile per hook
    for fn in (call._call_callback_hooks, call._call_lightning_module_hook):
        assert "profiler.profile(" in inspect.getsource(fn), fn.__name__
    p = X.NoProfiler()
    assert p.profile("a") is p.profile("b")  # one shared context, no generator per call
    X._passthrough_profile_is_a_no_op.cache_clear()
    try:  # the fallback: Lightning's own (generator-based) context
        import lightning.pytorch.profilers as profilers

        original = profilers.PassThroughProfiler.summary
        profilers.PassThroughProfiler.summary = lambda self: "recorded"
        assert not X.FAST_PROFILER and p.profile("a") is not p.profile("a")
    finally:
        profilers.PassThroughProfiler.summary = original
        X._passthrough_profile_is_a_no_op.cache_clear()
    assert X.FAST_PROFILER
    with p.profile("x"):
        pass
    assert p.summary() == ""


# ---------------------------------------------------------------- batch_index


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.fc(x).squeeze(-1), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Record(L.Callback):
    def __init__(self) -> None:
        self.public: list[int] = []
        self.read: list[int | None] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.public.append(batch_idx)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.read.append(X.batch_index(trainer))


@pytest.mark.parametrize("accumulate", [1, 2])
def test_batch_index_is_the_batch_lightning_passes_to_the_hooks(accumulate: int) -> None:
    data = TensorDataset(torch.randn(20, 3), torch.randn(20))
    record = _Record()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        accumulate_grad_batches=accumulate, callbacks=[record])
    trainer.fit(_Tiny(), DataLoader(data, batch_size=4))
    # an optimizer step follows the last batch of each accumulation window
    stepped = [i for i in record.public if (i + 1) % accumulate == 0 or i == 4]
    assert record.read == stepped and len(record.read) == 2 * len(range(0, 5, accumulate))


def test_batch_index_is_unknown_without_the_internal(monkeypatch) -> None:
    monkeypatch.setattr(X, "_batch_progress_exists", lambda: False)
    assert X.batch_index(object()) is None


# ---------------------------------------------------------------- parameter order


def _order(m: nn.Module) -> list[str]:
    return [n for n, _ in m.named_parameters()]


@pytest.mark.parametrize("fast", [True, False])
def test_move_param_puts_a_parameter_back_in_its_slot(fast: bool, monkeypatch) -> None:
    monkeypatch.setattr(X, "ORDERED_PARAMETERS", fast)
    m = nn.Conv2d(2, 3, 3)
    weight = m.weight
    slot = X.param_slot(m, "weight")
    prune.identity(m, "weight")  # torch re-registers weight as weight_orig, at the end
    assert _order(m) == ["bias", "weight_orig"]
    X.move_param(m, "weight_orig", slot)
    assert _order(m) == ["weight_orig", "bias"] and m.weight_orig is weight
    # the optimizer's view (by position) follows
    assert [p is weight for p in m.parameters()] == [True, False]


# ---------------------------------------------------------------- pruning hooks


@pytest.mark.parametrize("fast", [True, False])
def test_pruned_tensors_by_hooks_and_by_names_agree(fast: bool, monkeypatch) -> None:
    monkeypatch.setattr(X, "PRUNE_HOOK_NAMES", fast)
    net = LeNet()
    prune.l1_unstructured(net.conv1, "weight", 0.5)
    prune.l1_unstructured(net.fc1, "bias", 0.5)
    X.MaskedInPlace.apply(net.fc2, "weight", torch.ones_like(net.fc2.weight))
    assert {n: X.pruned_tensors(m) for n, m in net.named_children()} == {
        "conv1": ["weight"], "conv2": [], "fc1": ["bias"], "fc2": ["weight"]}


def test_masked_in_place_uses_orig_as_it_is() -> None:
    m = nn.Linear(4, 3)
    mask = (torch.rand(3, 4) > 0.5).float()
    hook = X.MaskedInPlace.apply(m, "weight", mask)
    assert hook.tensor_name == "weight" and hook in m._forward_pre_hooks.values()
    with torch.no_grad():
        m.weight_orig.mul_(m.weight_mask)  # the callback's job: orig holds the zeros
    m(torch.randn(2, 4))
    assert m.weight.data_ptr() == m.weight_orig.data_ptr()  # a view, not orig * mask
    assert prune.is_pruned(m)
    prune.remove(m, "weight")
    assert bool((m.weight[mask == 0] == 0).all()) and bool((m.weight[mask == 1] != 0).all())


# ---------------------------------------------------------------- fused and functional ops


@pytest.mark.parametrize("fast", [True, False])
def test_mul_in_place(fast: bool, monkeypatch) -> None:
    monkeypatch.setattr(X, "FOREACH_MUL", fast)
    a, b = torch.randn(3, 4), torch.randn(5)
    ma, mb = (torch.rand(3, 4) > 0.5).float(), (torch.rand(5) > 0.5).float()
    want = (a * ma, b * mb)
    X.mul_in_place([a, b], [ma, mb])
    assert torch.equal(a, want[0]) and torch.equal(b, want[1])


@pytest.mark.parametrize("conv", [nn.Conv2d(3, 4, 3, padding=1), nn.Conv1d(2, 3, 3, stride=2),
                                  nn.Conv2d(3, 4, 3, padding=2, padding_mode="reflect",
                                            dilation=2, groups=1)])
def test_conv_forward_fast_and_fallback_agree(conv: nn.Module, monkeypatch) -> None:
    x = torch.randn(2, conv.in_channels, *([9] * (conv.weight.dim() - 2)))
    w = torch.randn_like(conv.weight)
    with torch.no_grad():
        fast = X.conv_forward(conv, x, w, None)
        monkeypatch.setattr(X, "CONV_FORWARD", False)
        slow = X.conv_forward(conv, x, w, None)
    assert torch.allclose(fast, slow, atol=1e-6)


def test_tensor_factories_fallback_is_part_of_torchs_list(monkeypatch) -> None:
    full = X.tensor_factories()
    monkeypatch.setattr(X, "DEVICE_CONSTRUCTORS", False)
    assert X.tensor_factories() <= full and torch.empty in X.tensor_factories()
