"""A pruning step's immediate cost: the accuracy before (a logged metric) and right after it.

``val_acc_after`` comes from the module's ``evaluate(dataloader)`` on the first few validation
batches: a whole validation pass per step would cost more than the pruning does. The trainer is
used through its public attributes; nothing here imports Lightning.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any

from torch import Tensor, nn

from prunelab.errors import ConfigError

_MISSING = object()


def check_evaluate(module: nn.Module, eval_batches: int | None) -> None:
    """A module's ``evaluate`` must take the loader (one argument): refused before training."""
    evaluate = getattr(module, "evaluate", None)
    if not callable(evaluate) or eval_batches == 0:
        return
    try:
        inspect.signature(evaluate).bind(None)
    except TypeError:
        raise ConfigError(f"{type(module).__name__}.evaluate must take one argument, the "
                          "validation loader, and return {'acc': ...}; or pass eval_batches=0 "
                          "to skip the measurement after each pruning step") from None
    except ValueError:  # no signature to inspect (a builtin): trust it
        pass


def metric(trainer: Any, key: str) -> float | None:
    """A metric the module logged (``trainer.callback_metrics``), or None."""
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)


def evaluate_after_step(trainer: Any, module: nn.Module, eval_batches: int | None) -> float | None:
    """The module's accuracy on its first ``eval_batches`` validation batches (None: no
    ``evaluate``, no validation data, or ``eval_batches=0``)."""
    evaluate = getattr(module, "evaluate", None)
    loaders = trainer.val_dataloaders
    if not callable(evaluate) or loaders is None or eval_batches == 0:
        return None
    limit = trainer.limit_val_batches
    loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
    limits = [n for n in (limit if isinstance(limit, int) else None, eval_batches)
              if n is not None and n > 0]
    if limits:
        loader = FirstBatches(loader, min(limits))
    out = evaluate(loader)
    acc = out.get("acc", _MISSING) if isinstance(out, Mapping) else _MISSING
    if acc is not None and (isinstance(acc, bool) or not isinstance(acc, int | float | Tensor)):
        raise ConfigError(f"{type(module).__name__}.evaluate(dataloader) must return a dict "
                          f"with an 'acc' entry (a number, or None for no data), got {out!r:.80}")
    return None if acc is None else float(acc)  # None: an empty validation set


class FirstBatches:
    """The first ``n`` batches of a loader, behaving like the loader otherwise.

    A module's ``evaluate(dataloader)`` may read ``dataloader.dataset``, ``batch_size`` or
    ``len(dataloader)``: every attribute but the iteration comes from the real loader.
    """

    def __init__(self, loader: Any, n: int) -> None:
        self.loader, self.n = loader, n

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(self.loader):
            if i >= self.n:
                break
            yield batch

    def __len__(self) -> int:
        try:
            return min(self.n, len(self.loader))
        except TypeError:
            return self.n

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)
