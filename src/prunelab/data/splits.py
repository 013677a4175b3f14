"""Held-out parts of a data set that comes as one file or folder, and labels given as names.

Generic data sets (CSV/JSONL text, image folders, torchvision sets) may lack a validation or a
test part. Both are cut from the training part by a seeded permutation: the validation cut by
the run's seed (as for MNIST and IMDB), the test cut by a fixed seed, so that every seed of a
study is tested on the same samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from prunelab.errors import ConfigError, DataMissingError

TEST_SPLIT_SEED = 0


def holdout_count(size: float | int, n: int, what: str) -> int:
    """``size`` as a number of samples: a count (an int >= 0) or a fraction of ``n`` in [0, 1)."""
    value = float(size)
    if isinstance(size, bool) or value < 0 or (not value.is_integer() and value >= 1):
        raise ConfigError(f"data.{what}={size} must be a count >= 0 or a fraction in [0, 1)")
    count = int(value) if value >= 1 or value == 0 else int(round(value * n))
    if count >= n:
        raise ConfigError(f"data.{what}={size} leaves no training samples: the data has {n}")
    return count


def holdout(n: int, size: float | int, seed: int, what: str) -> tuple[Tensor, Tensor]:
    """(kept, held-out) indices: the last ``size`` of a permutation seeded by ``seed``."""
    count = holdout_count(size, n, what)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return perm[: n - count], perm[n - count :]


def class_index(values: Sequence[Any], classes: Sequence[str] | None, num_classes: int,
                source: str) -> dict[str, int] | None:
    """How raw labels become class indices; ``None``: integer labels, used as they are.

    ``classes`` given: a label must be one of those names, its index is its position. Without
    it, integer labels (ints or digit strings) are indices; other labels are names, numbered in
    sorted order, and the training part must hold exactly ``num_classes`` of them.
    """
    if classes is not None:
        index = {str(c): i for i, c in enumerate(classes)}
        if len(index) != int(num_classes):
            raise ConfigError(f"data.classes names {len(index)} classes, data.num_classes="
                              f"{num_classes}: make them agree")
        return index
    if all(_is_int(v) for v in values):
        return None
    names = sorted({str(v) for v in values})
    if len(names) != int(num_classes):
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise DataMissingError(f"{source} holds {len(names)} classes ({shown}), data.num_classes="
                               f"{num_classes}: set data.num_classes={len(names)}, or list the "
                               "classes in data.classes")
    return {name: i for i, name in enumerate(names)}


def label_ids(values: Sequence[Any], index: dict[str, int] | None, num_classes: int,
              source: str) -> Tensor:
    """Class indices (int64) of raw labels by :func:`class_index`'s rule; a label outside the
    declared classes is one line naming the file and the label."""
    if index is not None:
        bad = next((v for v in values if str(v) not in index), None)
        if bad is not None:
            raise DataMissingError(f"{source}: label {bad!r} is not one of the classes "
                                   f"{list(index)} (data.classes, or those of the training file)")
        return torch.tensor([index[str(v)] for v in values], dtype=torch.long)
    bad = next((v for v in values if not _is_int(v)), None)
    if bad is not None:
        raise DataMissingError(f"{source}: label {bad!r} is not an integer like the training "
                               "file's labels; name the classes with data.classes")
    ids = torch.tensor([int(v) for v in values], dtype=torch.long)
    if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= int(num_classes)):
        raise DataMissingError(
            f"{source}: labels run from {int(ids.min())} to {int(ids.max())}, outside "
            f"0..{int(num_classes) - 1} for data.num_classes={num_classes}; set "
            "data.num_classes, or name the classes with data.classes")
    return ids


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()
