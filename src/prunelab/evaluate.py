"""Re-testing a finished or interrupted run (``prunelab evaluate <run dir | .ckpt>``).

The pruned weights are loaded into the *plain* network class named by the run's config (masks
folded into the weights), so what is measured is exactly what a user who takes the model away
gets: no Lightning, no pruning hooks.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from prunelab.loading import fold_state_dict_masks, load_finished_run

__all__ = ["evaluate", "fold_state_dict_masks", "load_plain_model"]


def load_plain_model(path: str | Path, allow: Iterable[str] = ()) -> tuple[nn.Module, DictConfig]:
    """The run's network class with its pruned weights; see :func:`prunelab.loading.load_finished_run`."""
    net, cfg, _ = load_finished_run(path, allow)
    return net, cfg


@torch.no_grad()
def evaluate(net: nn.Module, loader: Any, binary: bool) -> dict[str, float]:
    """Test accuracy of ``net`` on ``loader``'s (inputs, labels) batches, and the sample count."""
    correct = total = 0
    for x, y in loader:
        logits = net(x)
        pred = (logits > 0).long() if binary else logits.argmax(-1)
        correct += int((pred == y.long()).sum())
        total += y.shape[0]
    return {"test_acc": correct / max(total, 1), "test_samples": total}


if __name__ == "__main__":  # ``python -m prunelab.evaluate``, the command line of 0.1
    from prunelab.cli import old_module_form

    old_module_form("evaluate")
