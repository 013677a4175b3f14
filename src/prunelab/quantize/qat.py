"""Quantisation-aware fine-tuning (PT2E ``prepare_qat_pt2e``) of a pruned network.

After the run's training, the network is captured with fake quantisation of its weights and
activations (the XNNPACK quantizer's QAT configuration: the same int8 grid as post-training
quantisation) and fine-tuned for a few epochs on the run's training data with the run's own
loss, so that its weights learn to live on the int8 grid. The pruning mask is fixed: every
weight that was zero is zero again after each optimizer step, so the int8 model keeps exactly
the run's zeros. Runs on the CPU (the int8 model is a CPU model).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from prunelab.errors import ConfigError, DivergedError
from prunelab.messages import get_logger
from prunelab.models import NETWORK_ATTR, network_of
from prunelab.quantize.pt2e import capture, import_extra, plain_copy, xnnpack_quantizer

log = get_logger(__name__)


def zero_masks(net: nn.Module) -> dict[str, Tensor]:
    """``{parameter name: where it is non-zero}`` of every weight tensor (2+ dims) with zeros."""
    return {name: p.detach() != 0 for name, p in net.named_parameters()
            if p.dim() > 1 and bool((p == 0).any())}


@contextlib.contextmanager
def network_swapped(system: nn.Module, net: nn.Module) -> Iterator[None]:
    """``system`` computing with ``net`` (its loss, its input handling), put back afterwards."""
    original = network_of(system)
    setattr(system, NETWORK_ATTR, net)
    try:
        yield
    finally:
        setattr(system, NETWORK_ATTR, original)


def qat_finetune(system: Any, train_batches: Any, example: Tensor, *, epochs: int, lr: float,
                 per_channel: bool = True) -> tuple[torch.fx.GraphModule, dict[str, Any]]:
    """The int8 model of ``system``'s network after ``epochs`` epochs of fake-quantised
    fine-tuning on ``train_batches`` (an iterable of (inputs, labels), iterated once per
    epoch), with ``system``'s optimizer class at learning rate ``lr`` and its loss; and a record
    of the fine-tuning. ``system`` and its network are not changed."""
    import_extra("quantize=qat")
    # lazy: the optional extra
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    net = plain_copy(network_of(system))
    masks = zero_masks(net)
    prepared = prepare_qat_pt2e(capture(net, example, train=True),
                                xnnpack_quantizer(per_channel, qat=True))
    params = dict(prepared.named_parameters())
    lost = sorted(set(masks) - set(params))
    if lost:  # the mask could not be kept: refuse rather than ship weights that grew back
        raise ConfigError(f"quantize=qat: the captured network has no parameter {lost[0]!r} "
                          "to keep its pruned zeros on")
    optimizer = system.optimizer_factory(prepared.parameters(), lr=lr)
    move_exported_model_to_train(prepared)
    start, losses, steps = time.perf_counter(), [], 0
    with network_swapped(system, prepared):
        for _ in range(epochs):
            total, count = 0.0, 0
            for x, y in train_batches:
                loss, _, _ = system.loss_and_logits((x.cpu().contiguous(), y.cpu()))
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise DivergedError(f"quantize=qat: the fine-tuning loss is {value} at step "
                                        f"{steps}; lower quantize.lr", step=steps, stage="qat")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    for name, keep in masks.items():
                        params[name].mul_(keep)
                total, count, steps = total + value * len(y), count + len(y), steps + 1
            losses.append(total / max(count, 1))
    move_exported_model_to_eval(prepared)
    record = {"epochs": epochs, "steps": steps, "lr": lr, "train_loss": losses,
              "seconds": round(time.perf_counter() - start, 2)}
    log.info("quantize=qat: %d epoch(s), %d steps, training loss %s", epochs, steps,
             ", ".join(f"{v:.4f}" for v in losses))
    return convert_pt2e(prepared), record
