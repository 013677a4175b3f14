"""Fault injection on data sets: damaged data is detected with one line, never half-used.

Small archives and IDX files written here stand in for the real ones; each fault is one a user
meets (a flipped byte, a cut download, a folder that lost files) and each test checks that the
run stops naming the file and what is wrong, and that nothing damaged is cached.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest
import torch

from prunelab.data import IMDBDataModule, MNISTDataModule
from prunelab.errors import DataMissingError

from fakedata import fake_imdb_reviews, write_fake_imdb, write_fake_mnist

N = 12  # reviews per folder


def imdb(data_dir: Path, cache: Path, **kw) -> IMDBDataModule:
    dm = IMDBDataModule(str(data_dir), cache_dir=str(cache), val_size=4, batch_size=8,
                        eval_batch_size=8, download=False, **kw)
    dm.prepare_data()
    dm.setup()
    return dm


def write_tar(path: Path, files: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def assert_refused(data_dir: Path, cache: Path, *needles: str) -> str:
    with pytest.raises(DataMissingError) as info:
        imdb(data_dir, cache)
    msg = str(info.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    assert not list(cache.glob("imdb_*.pt")), "a damaged read was cached"
    return msg


# --------------------------------------------------------------------------- IMDB


def test_gzip_crc_mismatch_is_detected(tmp_path):
    """tarfile stops at the end-of-archive blocks and never reads the gzip trailer: a stream
    whose data does not match its CRC-32 was accepted."""
    archive = write_fake_imdb(tmp_path / "d", N, as_tar=True)
    raw = bytearray(archive.read_bytes())
    raw[-8] ^= 0xFF  # the CRC-32 of the uncompressed data, in the gzip trailer
    archive.write_bytes(bytes(raw))
    assert_refused(archive.parent, tmp_path / "cache", str(archive), "CRC")


def test_flipped_byte_at_90_percent_is_detected(tmp_path):
    """Today's symptom on the real archive: part of the reviews read, and "ok"."""
    where = 0.9
    archive = write_fake_imdb(tmp_path / "d", N, as_tar=True)
    raw = bytearray(archive.read_bytes())
    raw[int(len(raw) * where)] ^= 0xFF
    archive.write_bytes(bytes(raw))
    assert_refused(archive.parent, tmp_path / "cache", str(archive))


def test_archive_missing_the_tail_of_a_folder_is_detected(tmp_path):
    """A valid gzip stream whose tar lost the last reviews of one folder (what a damaged
    header does: tarfile ends the archive there)."""
    files = fake_imdb_reviews(N)
    cut = [k for k in files if k.startswith("aclImdb/train/pos/")][-3:]
    archive = write_tar(tmp_path / "d" / "aclImdb_v1.tar.gz",
                        {k: v for k, v in files.items() if k not in cut})
    msg = assert_refused(archive.parent, tmp_path / "cache", str(archive), "train/pos 9")
    assert f"train/neg {N}" in msg


def test_folder_missing_a_review_in_the_middle_is_detected(tmp_path):
    root = write_fake_imdb(tmp_path / "d", N)
    next((root / "test" / "neg").glob("5_*.txt")).unlink()
    assert_refused(root.parent, tmp_path / "cache", str(root), "aclImdb/test/neg/", "ids 5")


def test_official_counts_file_is_checked(tmp_path):
    """The official archive lists each folder's reviews in urls_{pos,neg}.txt."""
    files = fake_imdb_reviews(N)
    for part in ("train", "test"):
        for s in ("pos", "neg"):
            files[f"aclImdb/{part}/urls_{s}.txt"] = "http://x\n" * N
    archive = write_tar(tmp_path / "ok" / "aclImdb_v1.tar.gz", files)
    assert len(imdb(archive.parent, tmp_path / "cache").test_data[2]) == 2 * N
    files["aclImdb/train/urls_neg.txt"] = "http://x\n" * (N + 2)
    archive = write_tar(tmp_path / "bad" / "aclImdb_v1.tar.gz", files)
    assert_refused(archive.parent, tmp_path / "cache2", "urls_neg.txt lists 14")


def test_damaged_read_is_not_cached_and_the_repaired_data_is_read(tmp_path):
    root = write_fake_imdb(tmp_path / "d", N)
    victim = next((root / "train" / "pos").glob("3_*.txt"))
    text = victim.read_text()
    victim.unlink()
    assert_refused(root.parent, tmp_path / "cache", "ids 3")
    victim.write_text(text)
    dm = imdb(root.parent, tmp_path / "cache")
    assert len(dm.test_data[2]) == 2 * N and len(list((tmp_path / "cache").glob("imdb_*.pt"))) == 1


def test_imdb_test_batches_mix_the_classes(tmp_path):
    """The test part is stored pos-then-neg: the first batches were all positive, so a subset
    evaluation (trainer=fast, limit_test_batches) measured nothing."""
    dm = imdb(write_fake_imdb(tmp_path / "d", 40).parent, tmp_path / "cache")
    first = next(iter(dm.test_dataloader()))[1]
    assert 0 < first.sum() < len(first)
    # a fixed order: the same in every run, seed and epoch
    again = imdb(tmp_path / "d", tmp_path / "cache", seed=7)
    assert torch.equal(again.test_data[2], dm.test_data[2])
    assert sorted(dm.test_data[2].tolist()) == sorted([0.0] * 40 + [1.0] * 40)


# --------------------------------------------------------------------------- MNIST


def mnist(data_dir: Path) -> MNISTDataModule:
    dm = MNISTDataModule(str(data_dir), cache_dir=str(data_dir / "cache"), val_size=10,
                         download=False)
    dm.prepare_data()
    return dm


@pytest.mark.parametrize("fault", ["zlib", "header"])
def test_mnist_decompression_errors_are_one_line_naming_the_file(tmp_path, fault):
    raw_dir = write_fake_mnist(tmp_path, n_train=40, n_test=10)
    victim = raw_dir / "train-images-idx3-ubyte.gz"
    good = victim.read_bytes()
    if fault == "zlib":  # an invalid deflate block: zlib.error, not an OSError
        bad = good[:10] + b"\xff\xff\xff\xff" + good[14:]
    else:  # an IDX header claiming more dims than it holds
        bad = gzip.compress(b"\0\0\x08\x09\0\0")
    victim.write_bytes(bad)
    with pytest.raises(DataMissingError) as info:
        mnist(tmp_path)
    msg = str(info.value)
    assert str(victim) in msg and "\n" not in msg
    assert not list((tmp_path / "cache").glob("mnist_*.pt"))


def test_a_cache_that_is_truncated_or_invalid_is_rebuilt_not_trusted(tmp_path):
    from prunelab.data.common import load_or_build

    path = tmp_path / "c.pt"
    builds = []

    def build():
        builds.append(1)
        return {"x": torch.arange(3)}

    data, hit = load_or_build(path, build, "test")
    assert not hit and len(builds) == 1 and path.is_file()
    data, hit = load_or_build(path, build, "test")
    assert hit and len(builds) == 1 and torch.equal(data["x"], torch.arange(3))
    path.write_bytes(path.read_bytes()[:20])  # truncated: rebuilt
    assert load_or_build(path, build, "test")[1] is False and len(builds) == 2
    assert load_or_build(path, build, "test", valid=lambda d: "y" in d)[1] is False
    assert load_or_build(path, build, "test", use_cache=False)[1] is False and len(builds) == 4
