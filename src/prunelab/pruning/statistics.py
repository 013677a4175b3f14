"""What a criterion scores with besides the weights: gradient statistics and probe batches.

Gradient criteria (``taylor``, ``fisher``) read the statistics of the last ``grad_batches``
training batches before a step, gathered after each backward pass; probing criteria (``snip``,
``grasp``, ``synflow``) get a :class:`~prunelab.pruning.criteria.Probe` right before the step,
with the first training batches taken without consuming the global random state. Under DDP the
statistics are averaged over the ranks, so every rank computes the same masks. The trainer is
used through its public attributes only; nothing here imports Lightning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from prunelab.errors import ConfigError
from prunelab.internals import batch_index
from prunelab.pruning import criteria as C
from prunelab.pruning.masks import param
from prunelab.pruning.targets import Target


def loss_of(module: nn.Module, batch: Any) -> Tensor:
    """The training loss of ``batch``: ``loss_and_logits`` if the module has it (no metric
    side effects), else its ``training_step`` (a tensor or a dict with ``"loss"``)."""
    direct = getattr(module, "loss_and_logits", None)
    if callable(direct):
        return direct(batch)[0]
    out = module.training_step(batch, 0)  # type: ignore[operator]
    loss = out.get("loss") if isinstance(out, Mapping) else out
    if not isinstance(loss, Tensor):
        raise ConfigError(f"{type(module).__name__}.training_step returned no loss tensor; the "
                          "probing pruning methods (snip, grasp) need one")
    return loss


class Statistics:
    """The statistics of one pruning step, for the criterion ``method``."""

    def __init__(self, method: C.Method) -> None:
        self.method = method
        self.stats: dict[str, dict] = {}
        self._batches: list[Any] = []

    def reset(self) -> None:
        self.stats = {}

    def release(self) -> None:
        """Forget the training batches held for probing (after a step)."""
        self._batches = []

    def gather(self, targets: Sequence[Target], trainer: Any) -> None:
        """Add this optimizer step's gradients if it is one of the epoch's last ``grad_batches``
        (call it where gradients are unscaled and averaged over ranks)."""
        n_batches = trainer.num_training_batches
        batch_idx = batch_index(trainer)  # None: unknown, as for a loader of unknown length
        if (n_batches != float("inf") and batch_idx is not None
                and batch_idx < n_batches - self.method.grad_batches):
            return
        for t in targets:
            p = param(t)
            if p.grad is None:
                continue
            w = getattr(t.module, t.parameter).detach()
            self.stats[t.name] = C.accumulate_grad_stats(self.stats.get(t.name), w, p.grad.detach())

    def for_step(self, targets: Sequence[Target], trainer: Any | None) -> dict[str, dict] | None:
        """The statistics the criterion scores this step with (None: it needs none)."""
        spec = self.method.spec
        if spec.needs_grads:
            return self._reduced(targets, trainer)
        if spec.probe is not None:
            return self._probe(targets, trainer)
        return None

    def train_batches(self, trainer: Any, n: int) -> list[Any]:
        """The first ``n`` training batches on the module's device, the global RNG untouched."""
        if len(self._batches) < n:
            loader = trainer.train_dataloader
            if isinstance(loader, Mapping):
                loader = next(iter(loader.values()), None)
            elif isinstance(loader, list | tuple):
                loader = loader[0] if loader else None
            if loader is None:
                raise RuntimeError(f"pruning method {self.method.name!r} needs training batches, "
                                   "but the trainer has no training dataloader yet")
            batches = []
            with torch.random.fork_rng(devices=[]):
                for batch in loader:
                    batches.append(trainer.strategy.batch_to_device(batch))
                    if len(batches) >= n:
                        break
            self._batches = batches
        return self._batches[:n]

    def _probe(self, targets: Sequence[Target], trainer: Any | None) -> dict[str, dict]:
        if trainer is None:
            raise ConfigError(f"pruning method {self.method.name!r} probes the model and its "
                              "training data: it runs inside Trainer.fit, not from apply_target alone")
        module = trainer.lightning_module
        probe = C.Probe(
            module=module,
            params={t.name: param(t) for t in targets},
            loss=lambda batch: loss_of(module, batch),
            batches=lambda n: self.train_batches(trainer, n),
            grad_batches=self.method.grad_batches,
        )
        buffers = {k: b.detach().clone() for k, b in module.named_buffers()}
        try:
            self.stats = self.method.spec.probe(probe)  # type: ignore[misc]
        finally:  # probing forwards must not move BatchNorm statistics
            with torch.no_grad():
                for k, b in module.named_buffers():
                    if k in buffers:
                        b.copy_(buffers[k])
        return self._reduced(targets, trainer)

    def _reduced(self, targets: Sequence[Target], trainer: Any | None) -> dict[str, dict]:
        missing = [t.name for t in targets if t.name not in self.stats]
        if missing:
            raise RuntimeError(
                f"method {self.method.name!r} needs gradient statistics but none were gathered "
                f"for {missing}: the pruning epoch ran no backward pass"
            )
        if trainer is None or trainer.world_size == 1:
            return self.stats
        return {name: {k: trainer.strategy.reduce(v, reduce_op="mean") if isinstance(v, Tensor)
                       else v for k, v in st.items()} for name, st in self.stats.items()}
