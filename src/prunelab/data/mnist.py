"""MNIST as in-memory tensors: the canonical IDX files, decoded once and cached.

The four ``*-idx?-ubyte.gz`` files are read from ``<data_dir>/MNIST/raw`` (torchvision's
layout) or, when a read-only data_dir made us download elsewhere, from ``<cache_dir>/MNIST/raw``.
Files that are already there are decoded as they are, without md5 check, so the real files and
small test files go through the same code; only a download (torchvision's, md5-checked) fetches.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from functools import cached_property
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor

from prunelab import bounds
from prunelab.data.augment import random_shift
from prunelab.data.common import (
    TensorBatchLoader,
    cache_key,
    file_identity,
    is_writable_dir,
    load_or_build,
    require_classes,
    resolve_cache_dir,
)
from prunelab.errors import ConfigError, DataMissingError
from prunelab.messages import get_logger

log = get_logger(__name__)

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # torchvision's first mirror
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
CACHE_VERSION = 1
NUM_CLASSES = 10
IMAGE_SHAPE = (1, 28, 28)
MAX_SHIFT = 8  # data.augment_shift: beyond this a digit leaves the 28x28 frame


# --------------------------------------------------------------------------- raw files


def _find_file(raw_dir: Path, gz_name: str) -> Path | None:
    """The ``.gz`` file, or its extracted twin (torchvision leaves both after a download)."""
    for name in (gz_name, gz_name.removesuffix(".gz")):
        if (raw_dir / name).is_file():
            return raw_dir / name
    return None


def find_raw_files(raw_dirs: list[Path]) -> dict[str, Path] | None:
    """The first folder holding all four files, as {key: path}; ``None`` if none does."""
    for raw_dir in raw_dirs:
        found = {key: _find_file(raw_dir, name) for key, name in FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def read_idx(path: Path) -> np.ndarray:
    """Decode an IDX file (gzip-compressed or not) of unsigned bytes into an array."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)  # checks the CRC-32 and length at the stream's end
        except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
            raise DataMissingError(
                f"{path} is a corrupt gzip file ({type(err).__name__}: {err}); delete it and "
                f"retry (source: {MNIST_URL})"
            ) from err
    if len(raw) < 4 or raw[0:2] != b"\0\0" or raw[2] != 0x08:
        raise DataMissingError(f"{path} is not an IDX file of unsigned bytes; delete it and retry")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataMissingError(f"{path} has a damaged IDX header ({ndim} dims); delete it and retry")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):
        raise DataMissingError(
            f"{path} is truncated: header says {dims} ({math.prod(dims)} bytes) but holds "
            f"{data.size}; delete it and retry"
        )
    return data.reshape(dims)


def _decode_pair(images_path: Path, labels_path: Path) -> tuple[Tensor, Tensor]:
    """uint8 images [N, 28, 28] and int64 labels [N], checked against each other."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE[1:]:
        raise DataMissingError(f"{images_path} holds shape {images.shape}, expected [N, 28, 28]")
    if labels.shape != (images.shape[0],):
        raise DataMissingError(
            f"{labels_path} holds {labels.shape[0]} labels for {images.shape[0]} images in {images_path}"
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataMissingError(f"{labels_path} holds labels outside 0..9")
    require_classes(set(labels.tolist()), str(labels_path))
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def download_mnist(root: Path) -> None:
    """Fetch the four files with torchvision (which verifies their md5) into ``root/MNIST/raw``."""
    from torchvision.datasets import MNIST  # imported here: only a download needs it

    log.info("downloading MNIST into %s (about 11 MB, once) ...", root)
    MNIST(str(root), train=True, download=True)


# --------------------------------------------------------------------------- DataModule


class MNISTDataModule(L.LightningDataModule):
    """MNIST digits as normalised float32 [N, 1, 28, 28] images and int64 labels.

    Batches are ``(images, labels)``. Train/val come from the 60,000 training images through a
    seeded permutation (``random_split``'s), test is the 10,000 t10k images.
    """

    num_classes = NUM_CLASSES
    input_shape = IMAGE_SHAPE

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        seed: int = 0,
        cache_dir: str | None = None,
        download: bool = True,
        normalize_mean: float = 0.1307,
        normalize_std: float = 0.3081,
        num_classes: int = NUM_CLASSES,
        augment_shift: int = 0,
    ) -> None:
        super().__init__()
        if num_classes != NUM_CLASSES:
            raise ConfigError(f"data.num_classes={num_classes}: MNIST has {NUM_CLASSES} classes")
        bounds.integer("data.batch_size", batch_size, 1, bounds.MAX_BATCH_SIZE)
        bounds.integer("data.eval_batch_size", eval_batch_size, 1, bounds.MAX_BATCH_SIZE)
        bounds.integer("data.val_size", val_size, 0, bounds.MAX_SAMPLES)
        bounds.integer("data.seed", seed, 0, bounds.MAX_SEED)
        bounds.number("data.normalize_mean", normalize_mean, -1.0, 1.0)
        bounds.number("data.normalize_std", normalize_std, 0.0, lo_open=True)
        bounds.integer("data.augment_shift", augment_shift, 0, MAX_SHIFT,
                       hint="the pixels a training image may move, 0 for none")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.val_size = int(val_size)
        self.seed = int(seed)
        self.download = download
        self.normalize_mean = float(normalize_mean)
        self.normalize_std = float(normalize_std)
        self.augment_shift = int(augment_shift)
        self._cache_dir_arg = cache_dir
        self.train_data: tuple[Tensor, Tensor] | None = None
        self.val_data: tuple[Tensor, Tensor] | None = None
        self.test_data: tuple[Tensor, Tensor] | None = None

    def example_input(self) -> Tensor:
        """One random sample shaped and typed like a batch's images ([1, 1, 28, 28] float32),
        without reading the data set (see :func:`prunelab.data.example_input`)."""
        return torch.randn(1, *self.input_shape)

    @cached_property
    def cache_dir(self) -> Path:
        """Resolved on first use, not in __init__: building the config must not create folders."""
        return resolve_cache_dir(self.data_dir, self._cache_dir_arg)

    def _raw_dirs(self) -> list[Path]:
        return [self.data_dir / "MNIST" / "raw", self.cache_dir / "MNIST" / "raw"]

    def _missing_message(self, reason: str) -> str:
        looked = " and ".join(str(d) for d in self._raw_dirs())
        return (
            f"MNIST not found: looked in {looked} for {', '.join(FILES.values())} "
            f"(source: {MNIST_URL}); {reason}"
        )

    def _locate_or_download(self) -> dict[str, Path]:
        """Existing files as they are; else a torchvision download into a writable root."""
        found = find_raw_files(self._raw_dirs())
        if found is not None:
            return found
        if not self.download:
            raise DataMissingError(self._missing_message("download=False, so nothing was fetched"))
        root = self.data_dir if is_writable_dir(self.data_dir) else self.cache_dir
        try:
            download_mnist(root)
        except Exception as err:  # URLError, md5 mismatch (RuntimeError), OSError, ...
            first_line = (
                str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            )
            raise DataMissingError(self._missing_message(f"download failed: {first_line}")) from err
        found = find_raw_files(self._raw_dirs())
        if found is None:
            raise DataMissingError(self._missing_message("download finished but files are absent"))
        return found

    def _cache_path(self, files: dict[str, Path]) -> Path:
        key = cache_key(CACHE_VERSION, *(file_identity(files[k]) for k in FILES))
        return self.cache_dir / f"mnist_{key}.pt"

    def load_raw(self) -> dict[str, Tensor]:
        """uint8 images and int64 labels of both parts, from the cache or decoded (and cached)."""
        files = self._locate_or_download()
        path = self._cache_path(files)
        def decode() -> dict[str, Tensor]:
            log.info("preparing MNIST: decoding %s into a tensor cache (once) ...",
                     files["train_images"].parent)
            train_x, train_y = _decode_pair(files["train_images"], files["train_labels"])
            test_x, test_y = _decode_pair(files["test_images"], files["test_labels"])
            return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}

        return load_or_build(path, decode, "MNIST",
                             valid=lambda d: set(d) >= {"train_x", "train_y", "test_x", "test_y"})[0]

    def prepare_data(self) -> None:
        """Download if needed and write the decoded-tensor cache (rank 0 only under DDP)."""
        self.load_raw()

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28], scaled to [0, 1] then standardised."""
        x = images.unsqueeze(1).to(torch.float32).div_(255.0)
        return x.sub_(self.normalize_mean).div_(self.normalize_std)

    def split_indices(self, n_train_images: int) -> tuple[Tensor, Tensor]:
        """(train, val) indices: ``random_split(range(n), [n - val_size, val_size], g)``'s."""
        if self.val_size >= n_train_images:
            raise ConfigError(
                f"data.val_size={self.val_size} must be smaller than the {n_train_images} "
                "training images"
            )
        perm = torch.randperm(n_train_images, generator=torch.Generator().manual_seed(self.seed))
        n_fit = n_train_images - self.val_size
        return perm[:n_fit], perm[n_fit:]

    def setup(self, stage: str | None = None) -> None:
        """Build all three splits once (cheap from the cache; every DDP rank does this)."""
        if self.train_data is not None:
            return
        raw = self.load_raw()
        train_idx, val_idx = self.split_indices(len(raw["train_y"]))
        x, y = raw["train_x"], raw["train_y"]
        self.train_data = (self.normalize(x[train_idx]), y[train_idx])
        self.val_data = (self.normalize(x[val_idx]), y[val_idx])
        self.test_data = (self.normalize(raw["test_x"]), raw["test_y"])

    def _require(self, data: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        if data is None:
            raise RuntimeError("MNISTDataModule.setup() must run before asking for a dataloader")
        return data

    def train_dataloader(self) -> TensorBatchLoader:
        augment = self._shift if self.augment_shift else None
        return TensorBatchLoader(
            self._require(self.train_data), self.batch_size, shuffle=True, seed=self.seed,
            augment=augment,
        )

    def _shift(self, batch: tuple[Tensor, Tensor], gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """Training images moved by up to ``augment_shift`` pixels; the border is background."""
        images, labels = batch
        background = (0.0 - self.normalize_mean) / self.normalize_std
        return random_shift(images, self.augment_shift, background, gen), labels

    def val_dataloader(self) -> TensorBatchLoader:
        return TensorBatchLoader(self._require(self.val_data), self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> TensorBatchLoader:
        return TensorBatchLoader(self._require(self.test_data), self.eval_batch_size, shuffle=False)
