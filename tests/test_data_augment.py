"""Random translation of training images: what moves, what fills, what stays reproducible."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prunelab.data import MNISTDataModule
from prunelab.data.augment import random_shift
from prunelab.errors import ConfigError

from fakedata import write_fake_mnist


def test_each_image_is_its_own_translation_with_background_borders():
    torch.manual_seed(0)
    x = torch.rand(64, 2, 9, 7)
    out = random_shift(x, 2, -5.0, torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-5.0)
    moved = set()
    for i in range(64):
        # exactly one of the 25 crops of the padded image, channels moved together
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if torch.equal(out[i], padded[i, :, dy:dy + 9, dx:dx + 7])]
        assert len(hits) == 1
        moved.add(hits[0])
    assert len(moved) > 10  # the offsets vary across the batch
    assert random_shift(x, 0, -5.0, torch.Generator()) is x


def test_offsets_never_exceed_the_limit():
    x = torch.zeros(200, 1, 5, 5)
    x[:, :, 2, 2] = 1.0  # one lit pixel in the centre
    out = random_shift(x, 1, 0.0, torch.Generator().manual_seed(0))
    ys, xs = torch.nonzero(out[:, 0] == 1.0, as_tuple=True)[1:]
    assert len(ys) == 200 and set(ys.tolist()) == {1, 2, 3} and set(xs.tolist()) == {1, 2, 3}


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = tmp_path / "data"
    write_fake_mnist(root, 120, 30)
    return root


def make_dm(data_dir: Path, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(str(data_dir), val_size=20, batch_size=32, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def epoch_batches(dm: MNISTDataModule, epoch: int) -> list[torch.Tensor]:
    loader = dm.train_dataloader()
    loader.set_epoch(epoch)
    return [b[0] for b in loader]


def test_training_batches_move_per_seed_and_epoch_evaluation_does_not(data_dir):
    plain = make_dm(data_dir, seed=1)
    shifted = make_dm(data_dir, seed=1, augment_shift=2)
    p0, s0 = epoch_batches(plain, 0), epoch_batches(shifted, 0)
    assert len(p0) == len(s0) and not all(torch.equal(a, b) for a, b in zip(p0, s0, strict=True))
    # the border that enters is the normalised background, the labels are untouched
    background = (0.0 - shifted.normalize_mean) / shifted.normalize_std
    assert torch.isclose(s0[0].min(), torch.tensor(background))
    # a function of (seed, epoch) alone: a resumed epoch sees the batches an uninterrupted run saw
    epoch_batches(shifted, 0)
    assert all(torch.equal(a, b) for a, b in
               zip(epoch_batches(make_dm(data_dir, seed=1, augment_shift=2), 1),
                   epoch_batches(shifted, 1), strict=True))
    assert not all(torch.equal(a, b) for a, b in
                   zip(epoch_batches(shifted, 1), s0, strict=True))
    for name in ("val_dataloader", "test_dataloader"):
        assert all(torch.equal(a[0], b[0]) for a, b in
                   zip(getattr(plain, name)(), getattr(shifted, name)(), strict=True))


def test_the_shuffle_order_is_the_same_with_or_without_shifts(data_dir):
    plain, shifted = make_dm(data_dir, seed=4), make_dm(data_dir, seed=4, augment_shift=1)
    for a, b in zip(plain.train_dataloader(), shifted.train_dataloader(), strict=True):
        assert torch.equal(a[1], b[1])


@pytest.mark.parametrize("bad", [-1, 9, 1.5, "2"])
def test_a_bad_shift_is_one_line_naming_the_value_and_range(data_dir, bad):
    with pytest.raises(ConfigError, match=r"data\.augment_shift=.*\[0, 8\]"):
        MNISTDataModule(str(data_dir), augment_shift=bad)
