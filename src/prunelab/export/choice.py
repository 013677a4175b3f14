"""The default encoding of ``prunelab export``: chosen per file, by validation accuracy.

One fixed encoding is not safe for every run: ``kmeans5`` costs one run nothing and another a
few hundredths of a point. ``auto`` therefore encodes the network in each of
:data:`CANDIDATES`, decodes each file and measures it on the run's **validation** split (never
the test set, which stays the measurement of the file that is kept), and keeps the smallest
file that is at least as accurate there as the run's own network; when none is, the most
accurate (the smaller of equals). The record says which was chosen and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: the name that asks for the choice (``--encoding auto``, the default)
AUTO = "auto"
#: what it chooses from: each is at least 90 times smaller than the dense fp32 weights on a
#: 99 %-sparse LeNet (docs/results/export)
CANDIDATES = ("kmeans5", "kmeans6", "kmeans8")
RULE = ("the smallest file whose validation accuracy is at least the run's own; if none is, "
        "the most accurate")


@dataclass
class Candidate:
    """One encoding tried: its file's size and validation accuracy (None: not measured)."""

    encoding: str
    bytes: int
    val_acc: float | None
    payload: Any = None  # what the caller needs to write it if chosen

    def record(self) -> dict[str, Any]:
        return {"encoding": self.encoding, "bytes": self.bytes, "val_acc": self.val_acc}


def choose(candidates: list[Candidate], reference: float | None) -> tuple[Candidate, str]:
    """(the chosen candidate, why) by :data:`RULE`; without measurements (``reference`` or a
    candidate's accuracy None) the first candidate, the smallest coding."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    if reference is None or any(c.val_acc is None for c in candidates):
        return candidates[0], "not measured (no evaluation): the first candidate"
    by_size = sorted(candidates, key=lambda c: c.bytes)
    for c in by_size:
        if c.val_acc >= reference:
            return c, (f"the smallest file whose validation accuracy ({c.val_acc:.4f}) is at "
                       f"least the run's own ({reference:.4f})")
    best = max(by_size, key=lambda c: c.val_acc)  # max keeps the first (smallest) of equals
    return best, (f"no file is as accurate as the run's own network on the validation split "
                  f"({reference:.4f}): the most accurate ({best.val_acc:.4f})")


def record(chosen: Candidate, reason: str, candidates: list[Candidate],
           reference: float | None, samples: int | None) -> dict[str, Any]:
    """What export.json says about the choice."""
    return {"encoding": chosen.encoding, "rule": RULE, "reason": reason,
            "reference_val_acc": reference, "val_samples": samples,
            "candidates": [c.record() for c in candidates]}
