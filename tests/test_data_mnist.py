"""MNISTDataModule and the shared TensorBatchLoader, on tiny IDX files in the real format."""

from __future__ import annotations

import gzip
import os
import time
import urllib.error
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import random_split

from prunelab.data import MNISTDataModule
from prunelab.data import common as data_common
from prunelab.data import mnist as mnist_module
from prunelab.data.common import TensorBatchLoader, is_writable_dir, resolve_cache_dir
from prunelab.errors import ConfigError, DataMissingError

from fakedata import MNIST_FILES, fake_mnist_arrays, write_fake_mnist

N_TRAIN, N_TEST, VAL = 200, 50, 20


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A private HOME, so the per-user cache fallback never touches the real one."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return home


@pytest.fixture
def data_dir(tmp_path, home) -> Path:
    root = tmp_path / "data"
    write_fake_mnist(root, N_TRAIN, N_TEST)
    return root


def make_dm(data_dir: Path, **kwargs) -> MNISTDataModule:
    kwargs.setdefault("val_size", VAL)
    dm = MNISTDataModule(data_dir=str(data_dir), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture
def no_network(monkeypatch):
    """Every torchvision download attempt fails as without a network; records the calls."""
    calls = []

    def fail(url, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no network (simulated)")

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", fail)
    return calls


# --------------------------------------------------------------------------- content


def test_shapes_dtypes_and_normalisation(data_dir):
    dm = make_dm(data_dir)
    x, y = dm.train_data
    assert x.shape == (N_TRAIN - VAL, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (N_TRAIN - VAL,) and y.dtype == torch.int64
    assert dm.val_data[0].shape == (VAL, 1, 28, 28)
    test_images, test_labels = fake_mnist_arrays(N_TEST, seed=1)  # what write_fake_mnist wrote
    expected = (torch.from_numpy(test_images).float() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(dm.test_data[0], expected.unsqueeze(1))
    assert torch.equal(dm.test_data[1], torch.from_numpy(test_labels).long())


def test_split_is_seeded_like_random_split(data_dir):
    a, b, c = make_dm(data_dir, seed=3), make_dm(data_dir, seed=3), make_dm(data_dir, seed=4)
    assert torch.equal(a.val_data[1], b.val_data[1]) and torch.equal(a.val_data[0], b.val_data[0])
    assert not torch.equal(a.val_data[0], c.val_data[0])
    train_idx, val_idx = a.split_indices(N_TRAIN)
    ref = random_split(
        range(N_TRAIN), [N_TRAIN - VAL, VAL], generator=torch.Generator().manual_seed(3)
    )
    assert train_idx.tolist() == list(ref[0]) and val_idx.tolist() == list(ref[1])
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(N_TRAIN))


def test_val_size_too_large_or_negative_is_config_error(data_dir):
    with pytest.raises(ConfigError, match="val_size=200"):
        make_dm(data_dir, val_size=N_TRAIN)
    with pytest.raises(ConfigError, match="val_size"):
        MNISTDataModule(str(data_dir), val_size=-1)


def test_dataloaders_batch_sizes_and_order(data_dir):
    dm = make_dm(data_dir, batch_size=32, eval_batch_size=15)
    train = dm.train_dataloader()
    assert len(train) == 6 and [len(b[1]) for b in train] == [32] * 5 + [20]
    val = list(dm.val_dataloader())
    assert [len(b[1]) for b in val] == [15, 5]
    assert torch.equal(torch.cat([b[0] for b in val]), dm.val_data[0])  # unshuffled
    images, labels = next(iter(train))
    assert images.shape == (32, 1, 28, 28) and labels.dtype == torch.int64


# --------------------------------------------------------------------------- cache and dirs


def test_decoded_tensors_are_cached_and_reused(data_dir, monkeypatch):
    make_dm(data_dir)
    assert len(list((data_dir / ".prunelab_cache").glob("mnist_*.pt"))) == 1

    def no_decode(path):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(mnist_module, "read_idx", no_decode)
    dm = make_dm(data_dir)
    assert dm.train_data[0].shape[0] == N_TRAIN - VAL


def test_changed_source_files_invalidate_the_cache(data_dir):
    make_dm(data_dir)
    write_fake_mnist(data_dir, N_TRAIN + 10, N_TEST)
    os.utime(data_dir / "MNIST/raw" / MNIST_FILES["train_images"], ns=(1, 1))
    assert len(make_dm(data_dir).train_data[1]) == N_TRAIN + 10 - VAL


def test_read_only_data_dir_uses_user_cache(data_dir, home):
    os.chmod(data_dir, 0o555)
    try:
        assert not is_writable_dir(data_dir)
        dm = make_dm(data_dir)
        assert dm.cache_dir == home / ".cache" / "prunelab"
        assert list(dm.cache_dir.glob("mnist_*.pt"))
        assert not (data_dir / ".prunelab_cache").exists()
    finally:
        os.chmod(data_dir, 0o755)


def test_cache_dir_resolution(tmp_path, home, monkeypatch):
    assert resolve_cache_dir(tmp_path / "new" / "data") == tmp_path / "new/data/.prunelab_cache"
    assert resolve_cache_dir(tmp_path, tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.setattr(data_common, "is_writable_dir", lambda path: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir(tmp_path) == tmp_path / "xdg" / "prunelab"


# --------------------------------------------------------------------------- missing data


def test_missing_without_download_names_folder_files_and_url(tmp_path, home, no_network):
    dm = MNISTDataModule(str(tmp_path / "empty"), download=False)
    with pytest.raises(DataMissingError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert "\n" not in msg and isinstance(err.value, FileNotFoundError)
    assert str(tmp_path / "empty" / "MNIST" / "raw") in msg
    assert all(name in msg for name in MNIST_FILES.values())
    assert mnist_module.MNIST_URL in msg and "download=False" in msg
    assert no_network == []


def test_download_failure_gives_the_same_clear_error(tmp_path, home, no_network):
    dm = MNISTDataModule(str(tmp_path / "empty"), download=True)
    with pytest.raises(DataMissingError, match="download failed") as err:
        dm.setup()
    assert "\n" not in str(err.value) and "train-images-idx3-ubyte.gz" in str(err.value)
    assert no_network  # torchvision's downloader was really called


@pytest.mark.parametrize("writable", [True, False])
def test_download_goes_to_data_dir_or_cache(tmp_path, home, monkeypatch, writable):
    """A (simulated) torchvision download lands in data_dir, or the cache if read-only."""
    source = write_fake_mnist(tmp_path / "server", N_TRAIN, N_TEST)

    def fake_download(url, download_root, filename, md5):
        data = (source / filename).read_bytes()
        Path(download_root, filename).write_bytes(data)
        Path(download_root, filename.removesuffix(".gz")).write_bytes(gzip.decompress(data))

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", fake_download)
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755 if writable else 0o555)
    dm = make_dm(data_dir)
    root = data_dir if writable else home / ".cache" / "prunelab"
    assert (root / "MNIST" / "raw" / MNIST_FILES["train_images"]).is_file()
    assert dm.train_data[0].shape[0] == N_TRAIN - VAL


def test_corrupt_file_is_a_clear_error(data_dir):
    path = data_dir / "MNIST/raw" / MNIST_FILES["train_images"]
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    with pytest.raises(DataMissingError, match="truncated"):
        make_dm(data_dir)


# --------------------------------------------------------------------------- TensorBatchLoader


def orders(loader: TensorBatchLoader, epoch: int) -> torch.Tensor:
    loader.sampler.set_epoch(epoch)
    return torch.cat([b[0] for b in loader])


def test_shuffle_depends_only_on_seed_and_epoch():
    data = (torch.arange(100),)
    a = TensorBatchLoader(data, 16, shuffle=True, seed=1)
    b = TensorBatchLoader(data, 7, shuffle=True, seed=1)
    for _ in range(3):  # iterating more epochs does not change what epoch 2 is
        list(a)
    assert torch.equal(orders(a, 2), orders(b, 2))
    assert not torch.equal(orders(a, 2), orders(a, 3))
    assert not torch.equal(orders(a, 2), orders(TensorBatchLoader(data, 16, True, seed=2), 2))
    # (seed, epoch) pairs do not alias as with seed + epoch
    assert not torch.equal(orders(a, 0), orders(TensorBatchLoader(data, 16, True, seed=0), 1))
    assert sorted(orders(a, 5).tolist()) == list(range(100))


def test_drop_last_and_multi_tensor_batches():
    x, y = torch.randn(10, 3), torch.arange(10)
    loader = TensorBatchLoader((x, y), 4, shuffle=True, seed=0, drop_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 2
    for bx, by in batches:
        assert torch.equal(bx, x[by])
    with pytest.raises(ValueError, match="lengths differ"):
        TensorBatchLoader((x, y[:5]), 4, shuffle=False)


def test_ddp_shards_are_disjoint_equal_and_cover_the_permutation(monkeypatch):
    data = (torch.arange(103),)
    shards = [
        orders(TensorBatchLoader(data, 8, True, 0, rank=r, world_size=4), 3) for r in range(4)
    ]
    assert {len(s) for s in shards} == {25}
    flat = torch.cat(shards).tolist()
    assert len(set(flat)) == 100
    # the loader reads rank/world from torch.distributed when it is initialised
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: 2)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 4)
    loader = TensorBatchLoader(data, 8, True, 0)
    assert len(loader) == 4 and torch.equal(orders(loader, 3), shards[2])
    eval_loader = TensorBatchLoader(data, 10, shuffle=False)
    assert orders(eval_loader, 0).tolist() == list(range(2, 100, 4))


class TinyClassifier(L.LightningModule):
    """Logs the first labels of every training epoch to check Lightning's set_epoch calls."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        self.first_labels: dict[int, list[int]] = {}
        self.val_acc: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        if batch_idx == 0:
            self.first_labels[self.current_epoch] = y[:16].tolist()
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_acc.append((self.net(x).argmax(1) == y).float().mean().item())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(dm, max_epochs, ckpt_path=None, save_to=None) -> TinyClassifier:
    model = TinyClassifier()
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    if save_to is not None:
        trainer.save_checkpoint(save_to)
    return model


def test_lightning_fit_sets_epochs_and_resume_sees_same_batches(data_dir, tmp_path):
    dm = MNISTDataModule(str(data_dir), val_size=VAL, batch_size=32, seed=5)
    full = fit(dm, max_epochs=2)
    loader = dm.train_dataloader()
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        assert full.first_labels[epoch] == next(iter(loader))[1][:16].tolist()
    assert full.first_labels[0] != full.first_labels[1]
    assert max(full.val_acc) > 0.5  # the fake digits are learnable

    ckpt = tmp_path / "epoch1.ckpt"
    fit(MNISTDataModule(str(data_dir), val_size=VAL, batch_size=32, seed=5), 1, save_to=ckpt)
    resumed = fit(MNISTDataModule(str(data_dir), val_size=VAL, batch_size=32, seed=5), 2, ckpt)
    assert resumed.first_labels == {1: full.first_labels[1]}


# --------------------------------------------------------------------------- full data


def full_data_dir() -> Path:
    return Path(os.environ.get("PRUNELAB_DATA", "/work/shared/data"))


@pytest.mark.slow
def test_full_mnist(tmp_path):
    root = full_data_dir()
    if not all((root / "MNIST/raw" / name).is_file() for name in MNIST_FILES.values()):
        pytest.skip(f"full MNIST not at {root}/MNIST/raw (set PRUNELAB_DATA)")
    start = time.perf_counter()
    dm = MNISTDataModule(str(root), cache_dir=str(tmp_path / "cache"), download=False)
    dm.prepare_data()
    dm.setup()
    first = time.perf_counter() - start
    assert [len(d[1]) for d in (dm.train_data, dm.val_data, dm.test_data)] == [55000, 5000, 10000]
    x = torch.cat([dm.train_data[0], dm.val_data[0]])
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01
    start = time.perf_counter()
    MNISTDataModule(str(root), cache_dir=str(tmp_path / "cache"), download=False).setup()
    print(
        f"MNIST first prepare+setup {first:.2f}s, cached setup {time.perf_counter() - start:.2f}s"
    )
