"""Write a small review data set as CSV files: ``python make_data.py <data_dir>``.

Writes ``<data_dir>/reviews/train.csv`` and ``test.csv`` (columns ``text,label``; label ``pos``
or ``neg``), so that ``prunelab --config-dir conf model=mymlp data=mycsv data_dir=<data_dir>``
has something to learn from.
"""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

POSITIVE = ["great", "wonderful", "moving", "superb", "funny", "loved"]
NEGATIVE = ["dull", "awful", "boring", "clumsy", "hated", "worst"]
FILLER = ["the", "film", "plot", "actors", "was", "and", "a", "story", "it", "really", "scenes"]


def review(rng: random.Random, positive: bool) -> str:
    words = rng.choices(FILLER, k=rng.randint(5, 15))
    for _ in range(3):
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if positive else NEGATIVE))
    return " ".join(words).capitalize() + rng.choice([".", "!", "..."])


def write(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["text", "label"])
        for i in range(n):
            out.writerow([review(rng, i % 2 == 0), "pos" if i % 2 == 0 else "neg"])


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "data") / "reviews"
    write(root / "train.csv", 2000, seed=0)
    write(root / "test.csv", 500, seed=1)
    print(f"wrote {root}/train.csv and {root}/test.csv")
