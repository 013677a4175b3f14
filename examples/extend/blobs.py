"""A data set of your own: Gaussian blobs, one per class, made from a seed (no files).

Any LightningDataModule works; prunelab reads ``num_classes`` (checked against the model's)
and takes its batches as ``(inputs, labels)``.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class Blobs(L.LightningDataModule):
    def __init__(self, num_classes: int = 3, features: int = 16, n_train: int = 256,
                 n_val: int = 64, n_test: int = 64, batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.num_classes, self.features, self.batch_size = num_classes, features, batch_size
        g = torch.Generator().manual_seed(seed)
        centres = 3 * torch.randn(num_classes, features, generator=g)

        def split(n: int) -> TensorDataset:
            y = torch.randint(num_classes, (n,), generator=g)
            return TensorDataset(centres[y] + torch.randn(n, features, generator=g), y)

        self.sets = {"train": split(n_train), "val": split(n_val), "test": split(n_test)}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["train"], batch_size=self.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(0))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["val"], batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["test"], batch_size=self.batch_size)
