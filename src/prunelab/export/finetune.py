"""Trained quantisation (Deep Compression): fine-tune the shared values of a k-means codebook.

Post-training weight sharing (``kmeans<b>``) moves every weight to its nearest shared value and
costs accuracy at 2-3 bits. Deep Compression recovers it by training the shared values
themselves: each weight tensor's non-zeros are clustered once (the export's own 1-D k-means), then
with the cluster of every weight and the sparsity pattern fixed, the centroids are trained on the
training data. The gradient of a shared value is the sum of the gradients of the weights in its
cluster; weights that are zero stay exactly zero. Tensors the artifact stores exactly (biases)
train alongside by default. Afterwards every weight tensor holds at most ``2**bits`` distinct
non-zero values, which the ``kmeans<bits>`` encoding then stores without further loss.

Pure torch on a :class:`~prunelab.models.system.ClassifierSystem` and a datamodule; no
Lightning trainer.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from prunelab.bounds import MAX_EPOCHS
from prunelab.errors import ConfigError
from prunelab.export import codecs
from prunelab.messages import get_logger

log = get_logger(__name__)

# Adam's step size for the shared values; on the 99 %-sparse LeNet 1e-3 recovered more of the
# 2-3 bit loss in one epoch than 1e-4 (docs/results/export)
LR = 1e-3


@dataclass
class SharedTensor:
    """One weight tensor as a codebook: ``weight.flatten()[index] = centroids[codes]``."""

    name: str
    weight: nn.Parameter
    index: Tensor  # flat (row-major) positions of the non-zeros
    codes: Tensor  # the cluster of each non-zero
    centroids: nn.Parameter  # the shared values, float32

    @torch.no_grad()
    def write(self) -> None:
        """Set the weight from the centroids; every other entry stays zero."""
        flat = torch.zeros(self.weight.numel(), dtype=self.weight.dtype)
        flat[self.index] = self.centroids[self.codes].to(self.weight.dtype)
        self.weight.copy_(flat.view(self.weight.shape))

    @torch.no_grad()
    def gather_grad(self) -> None:
        """Centroid gradient = the sum of its cluster's weight gradients."""
        grad = self.weight.grad.reshape(-1)[self.index].to(self.centroids.dtype)
        self.centroids.grad = torch.zeros_like(self.centroids).index_add_(0, self.codes, grad)


def check(epochs: int, lr: float) -> None:
    """ConfigError naming the bad value unless epochs >= 0 and the learning rate is > 0."""
    if not isinstance(epochs, int) or not 0 <= epochs <= MAX_EPOCHS:
        raise ConfigError(f"--finetune-epochs must be a whole number >= 0 (0: no fine-tuning; "
                          f"at most {MAX_EPOCHS}), got {epochs}")
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"the fine-tuning learning rate must be a number > 0, got {lr}")


def share_weights(net: nn.Module, bits: int) -> list[SharedTensor]:
    """Cluster each weight tensor's non-zeros into at most ``2**bits`` shared values (as the
    ``kmeans<bits>`` encoding does) and write the shared values into ``net``."""
    if not 1 <= int(bits) <= 8:
        raise ConfigError(f"codebook bits must be 1..8, got {bits}")
    shared = []
    for name, p in net.named_parameters():
        if not codecs.is_weight(p) or p.numel() == 0:
            continue
        flat = p.detach().cpu().reshape(-1).to(torch.float32)
        index = torch.nonzero(flat, as_tuple=True)[0]
        if not len(index):
            continue
        codebook, codes = codecs.kmeans_1d(flat[index].numpy(), 2 ** int(bits))
        s = SharedTensor(name, p, index, torch.from_numpy(codes.astype("int64")),
                         nn.Parameter(torch.from_numpy(codebook.copy())))
        s.write()
        shared.append(s)
    return shared


def finetune_codebook(system: Any, datamodule: Any, bits: int, epochs: int, lr: float = LR,
                      seed: int = 0, train_exact: bool = True,
                      max_batches: int | None = None) -> dict[str, Any]:
    """Trained quantisation of ``system.net`` in place; returns what was done and its losses.

    ``system`` is a :class:`~prunelab.models.system.ClassifierSystem` (its ``loss_and_logits``
    gives the loss), ``datamodule`` one of prunelab's datamodules (its training split is used).
    Adam on the shared values (and, with ``train_exact``, on the tensors stored exactly:
    biases), learning rate ``lr`` decayed to zero by a cosine over ``epochs``.
    ``max_batches`` caps the batches per epoch (tests). Zeros stay zero: only the centroids of
    the non-zeros are trained.
    """
    check(epochs, lr)
    torch.manual_seed(seed)
    net = system.net
    shared = share_weights(net, bits)
    weights = {id(s.weight) for s in shared}
    exact = [p for p in net.parameters()
             if id(p) not in weights and p.is_floating_point() and not codecs.is_weight(p)]
    for p in net.parameters():  # the weights get gradients but are never stepped
        p.requires_grad_(id(p) in weights or (train_exact and any(p is q for q in exact)))
    params = [s.centroids for s in shared] + (exact if train_exact else [])
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    steps_per_epoch = len(loader) if max_batches is None else min(len(loader), max_batches)
    total = max(1, int(epochs) * steps_per_epoch)
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    losses: list[float] = []
    t0 = time.perf_counter()
    was_training = system.training
    system.train()
    for _ in range(int(epochs)):
        sums, n = 0.0, 0
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            opt.zero_grad(set_to_none=True)
            for s in shared:
                s.weight.grad = None
            loss, _, _ = system.loss_and_logits(batch)
            loss.backward()
            for s in shared:
                s.gather_grad()
            opt.step()
            sched.step()
            for s in shared:
                s.write()
            sums += float(loss.detach())
            n += 1
        losses.append(sums / max(n, 1))
    system.train(was_training)
    for p in net.parameters():
        p.requires_grad_(True)
        p.grad = None
    return {"bits": int(bits), "epochs": int(epochs), "lr": lr, "optimizer": "adam, cosine decay",
            "steps": int(epochs) * steps_per_epoch, "train_exact": train_exact,
            "train_loss": losses, "seconds": round(time.perf_counter() - t0, 1),
            "codebooks": {s.name: int(len(s.centroids)) for s in shared}}


def finetune_run_model(net: nn.Module, cfg: Any, bits: int, epochs: int, lr: float = LR,
                       data_dir: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A fine-tuned copy of a finished run's plain network (``net``, masks folded), trained on
    the run's own training data with the run's model settings (loss, input layout)."""
    from prunelab.run import instantiate_data, instantiate_model  # lazy: Lightning and Hydra

    cfg = copy.deepcopy(cfg)
    if data_dir:
        cfg.data_dir = data_dir
    system = instantiate_model(cfg)
    system.net.load_state_dict(net.state_dict())
    info = finetune_codebook(system, instantiate_data(cfg), bits, epochs, lr,
                             seed=int(cfg.get("seed") or 0))
    return system.net.eval(), info


def for_encoding(net: nn.Module, cfg: Any, encoding: str, epochs: int, lr: float,
                 data_dir: str | None, folder: Path) -> tuple[nn.Module, dict[str, Any] | None, Path]:
    """(network to encode, fine-tuning record or None, output folder) for one encoding of an
    export: with ``epochs`` > 0 a ``kmeans<b>`` encoding gets a fine-tuned copy written to
    ``<encoding>-ft<epochs>/``; other encodings (and ``epochs`` = 0) the run's network as is."""
    bits = codecs.kmeans_bits(encoding)
    if not epochs:
        return net, None, folder
    if bits is None:
        log.warning("%s: codebook fine-tuning applies to the kmeans encodings only; exported "
                    "as trained", encoding)
        return net, None, folder
    tuned, info = finetune_run_model(net, cfg, bits, epochs, lr, data_dir)
    log.info("%s: codebook fine-tuned %d epoch(s), train loss %s (%s s)", encoding, epochs,
             " -> ".join(f"{x:.4f}" for x in info["train_loss"]), info["seconds"])
    return tuned, info, folder.with_name(f"{encoding}-ft{epochs}")
