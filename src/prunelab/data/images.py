"""Image classification from local files: any torchvision data set by name, or an image folder.

``TorchvisionDataModule`` opens ``torchvision.datasets.<name>(root, download=False)`` (its
train and test parts when the class has them); ``ImageFolderDataModule`` reads
``<root>/<class>/<image>`` folders (or ``<root>/train/...`` and ``<root>/test/...``) with
``ImageFolder``. Either way the images are decoded once into a uint8 [N, C, H, W] tensor cache
and kept in memory as uint8; each batch is converted to float and standardised per channel
(mean and std of the training images unless the config gives them), so an epoch costs no PIL
decoding and a quarter of the memory of float images.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from prunelab import bounds
from prunelab.data.common import (
    SplitLoaders,
    TensorBatchLoader,
    cache_key,
    check_file_data_args,
    file_identity,
    load_or_build,
    require_classes,
    resolve_cache_dir,
)
from prunelab.data.splits import TEST_SPLIT_SEED, holdout
from prunelab.errors import ConfigError, DataMissingError
from prunelab.messages import get_logger

log = get_logger(__name__)

CACHE_VERSION = 1


def to_tensors(dataset: Any, image_size: Sequence[int] | None, channels: int | None,
               source: str) -> tuple[Tensor, Tensor]:
    """uint8 images [N, C, H, W] and int64 labels [N] of a map-style ``(image, label)`` set."""
    from torchvision.transforms import functional as TF

    images, labels = [], []
    for i in range(len(dataset)):
        image, label = dataset[i]
        if not isinstance(image, Tensor):
            if channels is not None:
                image = image.convert({1: "L", 3: "RGB"}[int(channels)])
            image = TF.pil_to_tensor(image)
        elif image.dim() == 2:
            image = image.unsqueeze(0)
        if image_size is not None:
            image = TF.resize(image, list(image_size), antialias=True)
        if images and image.shape != images[0].shape:
            raise DataMissingError(
                f"{source}: image {i} is {tuple(image.shape)} (C, H, W), image 0 is "
                f"{tuple(images[0].shape)}; set data.image_size=[H, W] and data.channels")
        images.append(image.to(torch.uint8))
        labels.append(int(label))
    if not images:
        raise DataMissingError(f"{source} holds no images")
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def _load_image(path: str) -> Any:
    """A PIL image in its stored mode when that is L or RGB (ImageFolder's own loader makes
    everything RGB), else converted to RGB; ``data.channels`` converts further."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            image.load()
    except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for damaged files
        raise DataMissingError(f"{path} is not a readable image ({type(err).__name__}: "
                               f"{str(err).strip().splitlines()[0] if str(err).strip() else '?'}); "
                               "replace or remove it") from None
    return image if image.mode in ("L", "RGB") else image.convert("RGB")


class ImageTensorsDataModule(SplitLoaders, L.LightningDataModule):
    """Shared part: cache, splits, per-channel standardisation, batch loaders.

    Subclasses implement :meth:`read` (``train_x``, ``train_y`` and, when the source has a
    test part, ``test_x``, ``test_y``) and :meth:`identity` (what the cache is keyed on).
    """

    input_kind = "image"

    def __init__(self, num_classes: int, batch_size: int = 64, eval_batch_size: int = 1000,
                 val_size: float = 0.1, test_size: float = 0.2, seed: int = 0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 image_size: Sequence[int] | None = None, channels: int | None = None,
                 cache_dir: str | None = None, cache_root: str | Path = ".") -> None:
        super().__init__()
        check_file_data_args(batch_size, eval_batch_size, num_classes, val_size, test_size, seed)
        if channels is not None and (not bounds.is_int(channels) or channels not in (1, 3)):
            raise ConfigError(f"data.channels={channels} must be 1, 3 or null (as stored)")
        for i, side in enumerate(image_size or []):
            bounds.integer(f"data.image_size.{i}", side, 1, bounds.MAX_IMAGE_SIDE)
        for key, values in (("mean", mean), ("std", std)):
            for i, v in enumerate(values or []):
                bounds.number(f"data.{key}.{i}", v, 0.0, lo_open=key == "std")
        self.num_classes = int(num_classes)
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.val_size, self.test_size, self.seed = val_size, test_size, int(seed)
        self.mean, self.std = mean, std
        self.image_size = list(image_size) if image_size is not None else None
        self.channels = channels
        self._cache_dir_arg, self._cache_root = cache_dir, cache_root
        self.train_data: tuple[Tensor, Tensor] | None = None
        self.val_data: tuple[Tensor, Tensor] | None = None
        self.test_data: tuple[Tensor, Tensor] | None = None
        self._scale: tuple[Tensor, Tensor] | None = None
        self.sample_shape: list[int] | None = None  # [C, H, W], known once the files are read

    @cached_property
    def cache_dir(self) -> Path:
        return resolve_cache_dir(self._cache_root, self._cache_dir_arg)

    def read(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def identity(self) -> str:
        raise NotImplementedError

    def load_tensors(self) -> dict[str, Tensor]:
        """The decoded images and labels: from the cache, else read and cached."""
        key = cache_key(CACHE_VERSION, type(self).__name__, self.identity(), self.image_size,
                        self.channels)
        path = self.cache_dir / f"images_{key}.pt"
        return load_or_build(path, self._read_checked,
                             f"{self.identity().split('|')[0]} (decoded)")[0]

    def _read_checked(self) -> dict[str, Tensor]:
        data = self.read()
        for part in ("train", "test"):
            if f"{part}_y" in data:
                self._check_labels(data[f"{part}_y"], part)
        return data

    def _check_labels(self, labels: Tensor, part: str) -> None:
        require_classes(labels, f"{self.identity().split('|')[0]} ({part} part)")
        if len(labels) and int(labels.max()) >= self.num_classes:
            raise DataMissingError(
                f"{self.identity().split('|')[0]}: the {part} labels reach "
                f"{int(labels.max())}, data.num_classes={self.num_classes}: set "
                f"data.num_classes={int(labels.max()) + 1}")

    def prepare_data(self) -> None:
        self.sample_shape = list(self.load_tensors()["train_x"].shape[1:])

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is not None:
            return
        data = self.load_tensors()
        x, y = data["train_x"], data["train_y"]
        if "test_x" in data:
            test = (data["test_x"], data["test_y"])
        else:
            keep, out = holdout(len(y), self.test_size, TEST_SPLIT_SEED, "test_size")
            test, x, y = (x[out], y[out]), x[keep], y[keep]
        train_idx, val_idx = holdout(len(y), self.val_size, self.seed, "val_size")
        self.train_data = (x[train_idx], y[train_idx])
        self.val_data = (x[val_idx], y[val_idx])
        self.test_data = test
        self._scale = self._standardisation(self.train_data[0])
        self.sample_shape = list(x.shape[1:])

    def _standardisation(self, train_x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-channel (mean, std) on the [0, 1] scale, shaped [1, C, 1, 1]."""
        c = train_x.shape[1]
        if self.mean is None or self.std is None:
            flat = train_x.transpose(0, 1).reshape(c, -1).float().div_(255)
            mean, std = flat.mean(1), flat.std(1).clamp_min(1e-6)
        else:
            mean, std = torch.tensor(list(self.mean)), torch.tensor(list(self.std))
            if mean.numel() not in (1, c) or std.numel() not in (1, c) or (std <= 0).any():
                raise ConfigError(f"data.mean={list(self.mean)} / data.std={list(self.std)} "
                                  f"must have 1 or {c} values (std > 0)")
        return (mean.float().reshape(1, -1, 1, 1).expand(1, c, 1, 1).contiguous(),
                std.float().reshape(1, -1, 1, 1).expand(1, c, 1, 1).contiguous())

    def normalize(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """A uint8 batch as standardised float32 (the loaders' per-batch transform)."""
        assert self._scale is not None
        mean, std = self._scale
        return x.float().div_(255).sub_(mean).div_(std), y

    def _loader(self, data: tuple[Tensor, Tensor] | None, batch_size: int,
                shuffle: bool) -> TensorBatchLoader:
        if data is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for a "
                               "dataloader")
        return TensorBatchLoader(data, batch_size, shuffle=shuffle, seed=self.seed,
                                 transform=self.normalize)


def vision_dataset_class(name: str) -> type:
    """``torchvision.datasets.<name>``, or a ConfigError naming the closest valid names."""
    from torchvision import datasets
    from torchvision.datasets import VisionDataset

    names = sorted(n for n in dir(datasets) if isinstance(getattr(datasets, n), type)
                   and issubclass(getattr(datasets, n), VisionDataset)
                   and n not in ("VisionDataset", "DatasetFolder", "ImageFolder"))
    if name not in names:
        close = difflib.get_close_matches(name, names, 5, 0.5) or names[:8]
        raise ConfigError(f"data.dataset={name!r} is not a torchvision image data set; closest: "
                          f"{', '.join(close)} (or data=image_folder for your own folders)")
    return getattr(datasets, name)


class TorchvisionDataModule(ImageTensorsDataModule):
    """``torchvision.datasets.<name>(root, ..., download=False)``: local files only.

    The train and test parts come from ``train=True/False`` or ``split="train"/"test"`` when
    the class takes either; otherwise the one part is split (``test_size``).
    """

    def __init__(self, dataset: str, root: str, num_classes: int, **kwargs: Any) -> None:
        self.dataset_class = vision_dataset_class(dataset)
        self.name = dataset
        self.root = Path(root).expanduser()
        super().__init__(num_classes, cache_root=self.root, **kwargs)

    def identity(self) -> str:
        folder = self.root / self.name
        probe = folder if folder.exists() else self.root
        return f"{self.name} in {self.root}|{file_identity(probe) if probe.exists() else ''}"

    def _open(self, **part: Any) -> Any:
        try:
            return self.dataset_class(str(self.root), **part, download=False)
        except (RuntimeError, FileNotFoundError, OSError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DataMissingError(
                f"torchvision {self.name} not found under {self.root} ({first}); put its files "
                "there as torchvision lays them out (prunelab never downloads it)") from None

    def read(self) -> dict[str, Tensor]:
        params = inspect.signature(self.dataset_class.__init__).parameters
        parts: dict[str, Any] = {}
        if "train" in params:
            parts = {"train": {"train": True}, "test": {"train": False}}
        elif "split" in params:
            parts = {"train": {"split": "train"}, "test": {"split": "test"}}
        else:
            parts = {"train": {}}
        data = {}
        for part, kwargs in parts.items():
            x, y = to_tensors(self._open(**kwargs), self.image_size, self.channels,
                              f"{self.name} ({part}) in {self.root}")
            data[f"{part}_x"], data[f"{part}_y"] = x, y
        return data


class ImageFolderDataModule(ImageTensorsDataModule):
    """``<root>/<class>/<image>`` (one part, ``test_size`` held out) or ``<root>/train/<class>/``
    and ``<root>/test/<class>/`` (``val/`` is taken when there is no ``test/``).

    Classes are the sub-folder names in sorted order (``ImageFolder``'s rule); the training
    part must have ``num_classes`` of them and the test part the same names.
    """

    def __init__(self, root: str, num_classes: int, **kwargs: Any) -> None:
        self.root = Path(root).expanduser()
        # the cache goes next to the folder, not into it, where it would be read as a class
        super().__init__(num_classes, cache_root=self.root.parent, **kwargs)

    def parts(self) -> dict[str, Path]:
        if not self.root.is_dir():
            raise DataMissingError(f"image folder {self.root} not found (expected "
                                   f"{self.root}/<class>/<image> or {self.root}/train/<class>/...)")
        test = next((self.root / n for n in ("test", "val") if (self.root / n).is_dir()), None)
        if (self.root / "train").is_dir() and test is not None:
            return {"train": self.root / "train", "test": test}
        return {"train": self.root}

    def identity(self) -> str:
        stamps = []
        for folder in self.parts().values():
            stamps += [file_identity(p) for p in sorted(folder.iterdir()) if p.is_dir()]
        return f"{self.root}|" + "|".join(stamps)

    def read(self) -> dict[str, Tensor]:
        from torchvision.datasets import ImageFolder

        data, classes = {}, None
        for part, folder in self.parts().items():
            try:
                dataset = ImageFolder(str(folder), loader=_load_image)
            except (FileNotFoundError, RuntimeError) as err:
                raise DataMissingError(f"{folder}: {str(err).splitlines()[0]}") from None
            if classes is None:
                require_classes(dataset.targets, str(folder), dict(enumerate(dataset.classes)))
                classes = dataset.classes
                if len(classes) != self.num_classes:
                    shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
                    raise DataMissingError(
                        f"{folder} holds {len(classes)} class folders ({shown}), "
                        f"data.num_classes={self.num_classes}: set "
                        f"data.num_classes={len(classes)}")
            elif dataset.classes != classes:
                raise DataMissingError(f"{folder}'s class folders {dataset.classes} differ from "
                                       f"the training part's {classes}")
            x, y = to_tensors(dataset, self.image_size, self.channels, str(folder))
            data[f"{part}_x"], data[f"{part}_y"] = x, y
        return data
