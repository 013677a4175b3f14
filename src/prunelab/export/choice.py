"""The default encoding of ``prunelab export``: chosen per file, by validation accuracy.

One fixed encoding is not safe for every run: ``kmeans5`` costs one run nothing and another a
few hundredths of a point. ``auto`` therefore encodes the network in each of
:data:`CANDIDATES`, decodes each file and measures it on the run's **validation** split (never
the test set, which stays the measurement of the file that is kept), and keeps the smallest
file that is at least as accurate there as the run's own network; when none is, the most
accurate (the smaller of equals). With a byte budget (``--max-bytes``) the candidates are
:data:`BUDGET_CANDIDATES` and the most accurate file within the budget is kept (none within
it: the smallest, said so). The record says which was chosen and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: the name that asks for the choice (``--encoding auto``, the default)
AUTO = "auto"
#: what it chooses from: each is at least 90 times smaller than the dense fp32 weights on a
#: 99 %-sparse LeNet (docs/results/export)
CANDIDATES = ("kmeans5", "kmeans6", "kmeans8")
#: what it chooses from under a byte budget: the smaller codings
BUDGET_CANDIDATES = ("kmeans5", "kmeans4", "kmeans3", "kmeans2")
RULE = ("the smallest file whose validation accuracy is at least the run's own; if none is, "
        "the most accurate")
BUDGET_RULE = "the most accurate file (validation) within the byte budget; the smaller of equals"


@dataclass
class Candidate:
    """One encoding tried: its file's size and validation accuracy (None: not measured)."""

    encoding: str
    bytes: int
    val_acc: float | None
    payload: Any = None  # what the caller needs to write it if chosen

    def record(self) -> dict[str, Any]:
        return {"encoding": self.encoding, "bytes": self.bytes, "val_acc": self.val_acc}


def choose(candidates: list[Candidate], reference: float | None,
           max_bytes: int | None = None) -> tuple[Candidate, str]:
    """(the chosen candidate, why): by :data:`RULE`, or with ``max_bytes`` by
    :data:`BUDGET_RULE`; without measurements (``reference`` or a candidate's accuracy None)
    the first candidate, or the largest file within the budget."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    by_size = sorted(candidates, key=lambda c: c.bytes)
    measured = reference is not None and all(c.val_acc is not None for c in candidates)
    if max_bytes is not None:
        fit = [c for c in by_size if c.bytes <= max_bytes]
        if not fit:
            return by_size[0], f"no file within {max_bytes:,} bytes: the smallest"
        if not measured:
            return fit[-1], f"not measured (no evaluation): the largest within {max_bytes:,} bytes"
        best = max(fit, key=lambda c: c.val_acc)  # max keeps the first (smallest) of equals
        return best, (f"the most accurate file within {max_bytes:,} bytes (validation "
                      f"{best.val_acc:.4f}; the run's own {reference:.4f})")
    if not measured:
        return candidates[0], "not measured (no evaluation): the first candidate"
    for c in by_size:
        if c.val_acc >= reference:
            return c, (f"the smallest file whose validation accuracy ({c.val_acc:.4f}) is at "
                       f"least the run's own ({reference:.4f})")
    best = max(by_size, key=lambda c: c.val_acc)
    return best, (f"no file is as accurate as the run's own network on the validation split "
                  f"({reference:.4f}): the most accurate ({best.val_acc:.4f})")


def record(chosen: Candidate, reason: str, candidates: list[Candidate],
           reference: float | None, samples: int | None,
           max_bytes: int | None = None) -> dict[str, Any]:
    """What export.json says about the choice."""
    return {"encoding": chosen.encoding, "rule": RULE if max_bytes is None else BUDGET_RULE,
            "max_bytes": max_bytes, "reason": reason,
            "reference_val_acc": reference, "val_samples": samples,
            "candidates": [c.record() for c in candidates]}
