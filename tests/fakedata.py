"""Tiny data sets in the real on-disk formats, learnable, for tests of the whole pipeline.

``write_fake_mnist`` writes the four canonical gzip IDX files; digit k is a bright bar in a
position that depends on k, plus noise, so even a linear model beats chance quickly.
``write_fake_imdb`` writes the ``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt`` layout (or
an ``aclImdb_v1.tar.gz`` of it): positive reviews use positive words, negative ones negative
words, both around shared filler, with punctuation and ``<br />`` to exercise the tokenizer.
Both are deterministic (seeded).
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from pathlib import Path

import numpy as np

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

POS_WORDS = ["great", "excellent", "wonderful", "brilliant", "loved", "superb"]
NEG_WORDS = ["awful", "boring", "terrible", "worst", "hated", "dull"]
FILLER = ["the", "movie", "film", "plot", "actor", "was", "and", "a", "scene", "story", "it's"]
PUNCT = [",", ".", "!", "?", "(really)", '"quoted"', "<br />", ";", ":"]


# --------------------------------------------------------------------------- MNIST


def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic (0, 0, 0x08, ndim), big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def fake_mnist_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [n, 28, 28] and labels uint8 [n]: digit k lights rows 2k+4..2k+6."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 * k + 4 : 2 * k + 7, 4:24] = 255
    return images, labels


def write_fake_mnist(root: str | Path, n_train: int = 200, n_test: int = 50, seed: int = 0) -> Path:
    """Write ``<root>/MNIST/raw/*-idx?-ubyte.gz`` (gzip IDX, as distributed); return raw dir."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    train_x, train_y = fake_mnist_arrays(n_train, seed)
    test_x, test_y = fake_mnist_arrays(n_test, seed + 1)
    arrays = {
        "train_images": train_x,
        "train_labels": train_y,
        "test_images": test_x,
        "test_labels": test_y,
    }
    for key, array in arrays.items():
        (raw / MNIST_FILES[key]).write_bytes(gzip.compress(_idx_bytes(array), mtime=0))
    return raw


# --------------------------------------------------------------------------- IMDB


def fake_review(positive: bool, rng: np.random.Generator, n_words: int = 12) -> str:
    """A review mixing filler with sentiment words, punctuation and the odd ``<br />``."""
    signal = POS_WORDS if positive else NEG_WORDS
    words = list(rng.choice(FILLER, size=n_words))
    for _ in range(max(3, n_words // 3)):  # enough signal for a tiny model in a few steps
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(signal)))
    words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(PUNCT)))
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def fake_imdb_reviews(n_per_class: int, seed: int = 0) -> dict[str, str]:
    """{member path: text} for ``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``."""
    rng = np.random.default_rng(seed)
    files = {}
    for part in ("train", "test"):
        for sentiment in ("pos", "neg"):
            positive = sentiment == "pos"
            for review_id in range(n_per_class):
                rating = int(rng.integers(7, 11) if positive else rng.integers(1, 5))
                n_words = int(rng.integers(4, 30))
                text = fake_review(positive, rng, n_words)
                files[f"aclImdb/{part}/{sentiment}/{review_id}_{rating}.txt"] = text
    return files


def write_fake_imdb(
    root: str | Path, n_per_class: int = 20, as_tar: bool = False, n_unsup: int = 0, seed: int = 0
) -> Path:
    """Write a tiny IMDB under ``root``; return the ``aclImdb`` folder or the ``.tar.gz``.

    ``n_unsup`` adds ``train/unsup/<id>_0.txt`` files, which a loader must ignore.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    files = fake_imdb_reviews(n_per_class, seed)
    files.update({f"aclImdb/train/unsup/{i}_0.txt": "unlabelled filler" for i in range(n_unsup)})
    if not as_tar:
        for name, text in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return root / "aclImdb"
    archive = root / "aclImdb_v1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in reversed(files.items()):  # an order unlike the folder's on purpose
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


# --------------------------------------------------------------------------- generic formats


def write_fake_torchvision_mnist(root: str | Path, name: str = "FashionMNIST", n_train: int = 120,
                                 n_test: int = 40, seed: int = 0) -> Path:
    """``<root>/<name>/raw/*-idx?-ubyte`` (uncompressed IDX), as torchvision's MNIST-family
    classes (``FashionMNIST``, ``KMNIST``, ``MNIST``) read them with ``download=False``."""
    raw = Path(root) / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    train_x, train_y = fake_mnist_arrays(n_train, seed)
    test_x, test_y = fake_mnist_arrays(n_test, seed + 1)
    for key, array in {"train_images": train_x, "train_labels": train_y,
                       "test_images": test_x, "test_labels": test_y}.items():
        (raw / MNIST_FILES[key].removesuffix(".gz")).write_bytes(_idx_bytes(array))
    return raw


def write_image_folder(root: str | Path, classes: tuple[str, ...] = ("cat", "dog", "eel"),
                       n_per_class: int = 12, size: tuple[int, int] = (8, 8), mode: str = "RGB",
                       splits: tuple[str, ...] = ("train", "test"), seed: int = 0) -> Path:
    """PNG files ``<root>/<split>/<class>/<i>.png`` (``splits=()``: ``<root>/<class>/``); class k
    is a bright band at row k, so the classes are learnable."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    for split in splits or ("",):
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                channels = 1 if mode == "L" else 3
                pixels = rng.integers(0, 60, size=(size[0], size[1], channels), dtype=np.uint8)
                pixels[k % size[0], :, :] = 255
                Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(
                    folder / f"{i}.png")
    return root


def fake_text_records(n: int, seed: int = 0, label_names: tuple[str, ...] = ("neg", "pos"),
                      ) -> list[tuple[str, str]]:
    """(text, label) pairs: label "pos" texts use positive words, "neg" negative ones."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        label = label_names[i % len(label_names)]
        records.append((fake_review(label == label_names[-1], rng, int(rng.integers(4, 20))),
                        label))
    return records


def write_text_csv(path: str | Path, records: list[tuple[str, object]], delimiter: str = ",",
                   fields: tuple[str, str] = ("text", "label")) -> Path:
    """A CSV (or TSV) file with a header row, written by the ``csv`` module (quoting included)."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(fields)
        writer.writerows(records)
    return path


def write_text_jsonl(path: str | Path, records: list[tuple[str, object]]) -> Path:
    """One JSON object ``{"text": ..., "label": ...}`` per line."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in records),
                    encoding="utf-8")
    return path
