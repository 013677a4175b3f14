"""PruningCallback on LightningModules defined only here: exact targets, zeros that stay zero,
lottery rewinding, permanent masks, and state that round-trips."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune
from torch.utils.data import DataLoader, TensorDataset

from prunelab.pruning import PruningCallback, build_plan, criteria


class TinyNet(L.LightningModule):
    """A user's own module: the callback must not need to know anything about it."""

    def __init__(self, weight_decay: float = 0.01) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 32), nn.ReLU(),
            nn.Linear(32, 3),
        )
        self.weight_decay = weight_decay

    def forward(self, x):
        return self.body(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=self.weight_decay)


def loader(n: int = 64, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 1).long()
    return DataLoader(TensorDataset(x, y), batch_size=16)


def fit(model, callbacks, max_epochs):
    trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=callbacks)
    trainer.fit(model, loader())
    return trainer


class StopAfter(L.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def targeted(model):
    return {"body.0.weight": model.body[0], "body.3.weight": model.body[3]}


class ZeroWatcher(L.Callback):
    """Records, after every optimizer step, whether every masked weight is still exactly zero."""

    def __init__(self):
        self.violations = 0
        self.checked = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for m in targeted(pl_module).values():
            if hasattr(m, "weight_mask"):
                # the effective weight that the next forward will use
                w = m.weight_orig * m.weight_mask
                self.violations += int((w[m.weight_mask == 0] != 0).sum())
                self.checked += 1


@pytest.mark.parametrize("method", ["l1_unstructured", "random_unstructured"])
def test_iterative_10_to_50_ends_at_exactly_50_percent(method):
    torch.manual_seed(0)
    model = TinyNet()
    plan = build_plan("iterative", amount=0.5, initial=0.1, step_size=0.05)
    assert len(plan) == 9
    cb = PruningCallback(plan, method=method, make_permanent=False)
    fit(model, [cb], max_epochs=10)
    for name, m in targeted(model).items():
        n = m.weight.numel()
        assert int((m.weight == 0).sum()) == round(0.5 * n), name
    # torch's own repeated calls would have compounded: 1 - 0.9*0.85*...; the history proves not
    assert [round(h["target"], 10) for h in cb.history] == [round(0.1 + 0.05 * k, 10) for k in range(9)]
    assert all(abs(h["achieved"] - h["target"]) < 0.01 for h in cb.history)
    # the final classifier stays dense by default
    assert (model.body[5].weight != 0).all()


def test_masked_weights_stay_zero_through_momentum_and_weight_decay():
    torch.manual_seed(1)
    model = TinyNet(weight_decay=0.1)
    watcher = ZeroWatcher()
    cb = PruningCallback([(0, 0.6)], method="l1_unstructured", make_permanent=False)
    fit(model, [cb, watcher], max_epochs=4)
    assert watcher.checked > 0 and watcher.violations == 0
    for m in targeted(model).values():
        # the zeros live in weight_orig itself, so the forward needs no multiply
        assert (m.weight_orig[m.weight_mask == 0] == 0).all()
        assert (m.weight[m.weight_mask == 0] == 0).all()


def test_make_permanent_leaves_plain_weights_with_zeros():
    torch.manual_seed(2)
    model = TinyNet()
    cb = PruningCallback([(0, 0.3), (1, 0.7)], method="l1_unstructured")
    fit(model, [cb], max_epochs=3)
    for m in targeted(model).values():
        assert not prune.is_pruned(m) and not hasattr(m, "weight_orig")
        assert isinstance(m.weight, nn.Parameter)
        assert int((m.weight == 0).sum()) == round(0.7 * m.weight.numel())
    plain = TinyNet()
    plain.load_state_dict(model.state_dict())  # loads into a model that never saw pruning
    assert torch.equal(plain.body[0].weight, model.body[0].weight)


def test_lottery_rewinding_restores_initial_values_of_survivors():
    torch.manual_seed(3)
    model = TinyNet()
    initial = {k: m.weight.detach().clone() for k, m in targeted(model).items()}
    cb = PruningCallback([(1, 0.5)], method="l1_unstructured", rewind=True, rewind_epoch=0,
                         make_permanent=False)
    fit(model, [cb], max_epochs=2)  # the step ends the last epoch: nothing trains after it
    for k, m in targeted(model).items():
        keep = m.weight_mask.bool()
        assert torch.equal(m.weight_orig[keep], initial[k][keep])
        assert (m.weight[~keep] == 0).all()
        assert int((~keep).sum()) == round(0.5 * keep.numel())


def test_global_scope_prunes_layers_unevenly_but_hits_the_total():
    torch.manual_seed(4)
    model = TinyNet()
    cb = PruningCallback([(0, 0.8)], method="global_magnitude", make_permanent=False)
    fit(model, [cb], max_epochs=1)
    zeros = sum(int((m.weight == 0).sum()) for m in targeted(model).values())
    total = sum(m.weight.numel() for m in targeted(model).values())
    assert zeros == round(0.8 * total)


def test_structured_zeroes_whole_filters():
    torch.manual_seed(5)
    model = TinyNet()
    cb = PruningCallback([(0, 0.5)], method="ln_structured", make_permanent=False)
    fit(model, [cb], max_epochs=1)
    conv = model.body[0].weight
    dead = (conv.flatten(1) == 0).all(dim=1)
    assert int(dead.sum()) == 4
    assert (conv.flatten(1)[~dead] != 0).any(dim=1).all()


@pytest.mark.parametrize("method", ["taylor", "fisher"])
def test_gradient_criteria_reach_target(method):
    torch.manual_seed(6)
    model = TinyNet()
    cb = PruningCallback([(1, 0.5)], method=criteria.method(method, grad_batches=2),
                         make_permanent=False)
    fit(model, [cb], max_epochs=2)
    zeros = sum(int((m.weight == 0).sum()) for m in targeted(model).values())
    total = sum(m.weight.numel() for m in targeted(model).values())
    assert zeros == round(0.5 * total)


def test_state_dict_round_trip_restores_schedule_and_generator():
    torch.manual_seed(7)
    model = TinyNet()
    cb = PruningCallback([(0, 0.2), (1, 0.4), (2, 0.6)], method="random_unstructured",
                         make_permanent=False)
    fit(model, [cb, StopAfter(1)], max_epochs=4)
    state = cb.state_dict()
    assert state["steps_done"] == 2 and len(state["history"]) == 2
    other = PruningCallback([(0, 0.2), (1, 0.4), (2, 0.6)], method="random_unstructured")
    other.targets = cb.targets
    other.load_state_dict(state)
    assert other.steps_done == 2
    assert torch.equal(other.generator.get_state(), cb.generator.get_state())


def test_masks_keep_a_channels_last_weights_layout():
    # a 1-input-channel conv weight is both NCHW- and NHWC-contiguous by flags; only its exact
    # strides keep the conv output (and everything after it) on the fast channels_last kernels
    model = TinyNet().to(memory_format=torch.channels_last)
    conv = model.body[0]
    strides = conv.weight.stride()
    pruning = PruningCallback(build_plan("iterative", amount=0.5, initial=0.25, step_size=0.25),
                              make_permanent=False)
    fit(model, [pruning], max_epochs=2)
    assert hasattr(conv, "weight_mask")
    assert conv.weight.stride() == strides
    x = torch.randn(2, 1, 8, 8).contiguous(memory_format=torch.channels_last)
    assert conv(x).is_contiguous(memory_format=torch.channels_last)


class ManualNet(TinyNet):
    """Manual optimisation: the user calls ``opt.step()`` inside ``training_step``."""

    def __init__(self) -> None:
        super().__init__(weight_decay=0.1)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        opt.zero_grad()
        x, y = batch
        self.manual_backward(F.cross_entropy(self(x), y))
        opt.step()


def test_masked_weights_stay_zero_under_manual_optimisation():
    torch.manual_seed(5)
    model = ManualNet()
    watcher = ZeroWatcher()
    fit(model, [PruningCallback([(0, 0.6)], make_permanent=False), watcher], max_epochs=3)
    assert watcher.checked > 0 and watcher.violations == 0
    for m in targeted(model).values():
        assert (m.weight_orig[m.weight_mask == 0] == 0).all()


def test_pruned_forward_equals_torchs_reparametrisation():
    # the forward uses weight_orig as it is; torch's hook would multiply by the mask first
    torch.manual_seed(6)
    model = TinyNet()
    fit(model, [PruningCallback([(0, 0.5), (1, 0.8)], make_permanent=False)], max_epochs=3)
    x = torch.randn(4, 1, 8, 8)
    ours = model(x)
    for m in targeted(model).values():
        prune.remove(m, "weight")  # folds weight_orig * weight_mask into a plain weight
    assert torch.equal(model(x), ours)


def test_loading_a_state_dict_with_live_pruned_entries_masks_them():
    # torch's own pruning keeps values under the mask in <p>_orig; they must not reach the forward
    torch.manual_seed(7)
    model = TinyNet()
    cb = PruningCallback([(0, 0.5)], make_permanent=False)
    fit(model, [cb], max_epochs=1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["body.0.weight_orig"] = torch.randn_like(state["body.0.weight_orig"])
    expected = state["body.0.weight_orig"] * state["body.0.weight_mask"]
    model.load_state_dict(state)
    assert torch.equal(model.body[0].weight_orig, expected)
    assert torch.equal(model.body[0].weight, expected)


class EvalNet(TinyNet):
    def __init__(self) -> None:
        super().__init__()
        self.evaluated: list[int] = []

    def validation_step(self, batch, batch_idx):
        pass

    def evaluate(self, dataloader):
        batches = list(dataloader)
        self.evaluated.append(len(batches))
        return {"acc": 0.5}


@pytest.mark.parametrize(("eval_batches", "expected"), [(1, [1, 1]), (2, [2, 2]), (None, [4, 4]), (0, [])])
def test_eval_batches_bounds_the_validation_after_each_step(eval_batches, expected):
    model = EvalNet()
    cb = PruningCallback([(0, 0.3), (1, 0.6)], eval_batches=eval_batches, verbose=False)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[cb],
                        num_sanity_val_steps=0)
    trainer.fit(model, loader(), loader(seed=1))  # 4 validation batches
    assert model.evaluated == expected
    after = [h["val_acc_after"] for h in cb.history]
    assert after == ([0.5, 0.5] if expected else [None, None])


def test_negative_eval_batches_is_a_config_error():
    from prunelab.errors import ConfigError

    with pytest.raises(ConfigError, match="eval_batches=-1"):
        PruningCallback([(0, 0.5)], eval_batches=-1)


def test_checkpoint_holds_plain_weights_that_load_into_the_plain_class(tmp_path):
    model = TinyNet()
    cb = PruningCallback([(0, 0.5)], make_permanent=False)
    trainer = fit(model, [cb], max_epochs=1)
    path = tmp_path / "x.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)["state_dict"]
    assert "body.0.weight" in state and not any(k.endswith(("_orig", "_mask")) for k in state)
    plain = TinyNet.load_from_checkpoint(path, weights_only=True)  # the user's own class
    assert float((plain.body[0].weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)


def test_chunked_training_resumes_masks_from_the_callback_state(tmp_path):
    model = TinyNet()
    plan = [(0, 0.3), (2, 0.6)]
    trainer = fit(model, [PruningCallback(plan)], max_epochs=2)  # a warning, not an error
    path = tmp_path / "chunk.ckpt"
    trainer.save_checkpoint(path)
    cb2 = PruningCallback(plan)
    trainer2 = L.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb2])
    trainer2.fit(TinyNet(), loader(), ckpt_path=path, weights_only=True)
    assert [h["target"] for h in cb2.history] == [0.3, 0.6]
    assert cb2.history[-1]["achieved"] == pytest.approx(0.6, abs=1e-3)


def test_misspelled_targets_key_is_one_clear_error():
    from prunelab.pruning import ConfigError

    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['inclde'\]; valid keys: types"):
        PruningCallback([(0, 0.5)], targets={"inclde": ["body.0.weight"]})


# ---------------------------------------------------------------- a client module's own conventions

class LoggingNet(TinyNet):
    """Logs its validation accuracy under a key of its own, and its evaluate reads the loader."""

    def __init__(self, key: str = "val/accuracy") -> None:
        super().__init__()
        self.key = key
        self.seen: list[tuple[int, int]] = []

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log(self.key, (self(x).argmax(-1) == y).float().mean())

    def evaluate(self, dataloader):
        # what a module written for a real DataLoader does: read its dataset and length
        self.seen.append((len(dataloader.dataset), len(dataloader)))
        correct = sum(int((self(x).argmax(-1) == y).sum()) for x, y in dataloader)
        return {"acc": correct / (len(dataloader) * dataloader.batch_size)}


def fit_with_val(model, cb, max_epochs=2):
    trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[cb], num_sanity_val_steps=0)
    trainer.fit(model, loader(), loader(seed=1))
    return trainer


def test_monitor_names_the_logged_key_that_becomes_val_acc_before(recwarn):
    cb = PruningCallback([(0, 0.3), (1, 0.6)], monitor="val/accuracy", verbose=False)
    fit_with_val(LoggingNet(), cb)
    before = [h["val_acc_before"] for h in cb.history]
    assert all(isinstance(b, float) and 0 <= b <= 1 for b in before), before
    assert not [w for w in recwarn if "never logs" in str(w.message)]


def test_a_monitored_key_never_logged_warns_once_and_leaves_null():
    cb = PruningCallback([(0, 0.3), (1, 0.6)], verbose=False)  # default monitor: val_acc
    with pytest.warns(UserWarning, match=r"never logs 'val_acc'.*\['val/accuracy'\]") as caught:
        fit_with_val(LoggingNet(), cb)
    assert len([w for w in caught if "never logs" in str(w.message)]) == 1
    assert [h["val_acc_before"] for h in cb.history] == [None, None]


def test_evaluate_gets_a_loader_with_its_dataset_and_the_first_batches():
    model = LoggingNet()
    cb = PruningCallback([(0, 0.3), (1, 0.6)], monitor="val/accuracy", eval_batches=2,
                         verbose=False)
    fit_with_val(model, cb)
    assert model.seen == [(64, 2), (64, 2)]  # the real dataset; len() is the batches it yields
    assert all(0 <= h["val_acc_after"] <= 1 for h in cb.history)


def test_a_plan_past_max_epochs_warns_in_the_python_api():
    with pytest.warns(UserWarning, match=r"epochs \[2\] lie beyond max_epochs=2"):
        trainer = fit(TinyNet(), [cb := PruningCallback([(0, 0.3), (2, 0.6)], verbose=False)], 2)
    assert trainer.current_epoch == 2 and [h["target"] for h in cb.history] == [0.3]


class ScalarEvalNet(LoggingNet):
    def evaluate(self, dataloader):  # returns a bare number, not {"acc": ...}
        return 0.5


class NoArgEvalNet(LoggingNet):
    def evaluate(self):  # takes no loader at all
        return {"acc": 0.5}


def test_evaluate_returning_no_acc_dict_is_one_clear_error():
    from prunelab.pruning import ConfigError

    cb = PruningCallback([(0, 0.3)], monitor="val/accuracy", verbose=False)
    with pytest.raises(ConfigError, match=r"ScalarEvalNet.evaluate\(dataloader\) must return a "
                                          r"dict with an 'acc' entry.*got 0.5"):
        fit_with_val(ScalarEvalNet(), cb, max_epochs=1)


def test_evaluate_that_takes_no_loader_is_refused_at_setup():
    from prunelab.pruning import ConfigError

    model = NoArgEvalNet()
    cb = PruningCallback([(0, 0.3)], monitor="val/accuracy", verbose=False)
    with pytest.raises(ConfigError, match=r"NoArgEvalNet.evaluate must take one argument"):
        fit_with_val(model, cb, max_epochs=1)
    assert cb.history == [] and model.global_step == 0  # refused before any training
