"""IMDBDataModule on tiny aclImdb folders and archives in the real layout."""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
import urllib.error
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from prunelab.data import PAD_ID, IMDBDataModule
from prunelab.data import imdb as imdb_module
from prunelab.data.imdb import (
    basic_english_tokenize,
    build_tokenizer,
    build_vocab,
)
from prunelab.errors import ConfigError, DataMissingError

from fakedata import NEG_WORDS, POS_WORDS, write_fake_imdb

N = 20  # reviews per (part, sentiment)
VAL = 8


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """A private HOME, and no real network whatever a test does."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)

    def offline(url, timeout=None):
        raise urllib.error.URLError("no network (simulated)")

    monkeypatch.setattr(imdb_module.urllib.request, "urlopen", offline)
    return tmp_path / "home"


@pytest.fixture(params=["folder", "tar"])
def data_dir(request, tmp_path) -> Path:
    root = tmp_path / "data"
    write_fake_imdb(root, N, as_tar=request.param == "tar", n_unsup=3)
    return root


def make_dm(data_dir: Path, **kwargs) -> IMDBDataModule:
    kwargs.setdefault("val_size", VAL)
    kwargs.setdefault("batch_size", 8)
    dm = IMDBDataModule(data_dir=str(data_dir), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


# --------------------------------------------------------------------------- tokenisation

# torchtext.data.utils._basic_english_normalize, verbatim rules: the reference to match.
_TORCHTEXT_PATTERNS = [
    r"\'",
    r"\"",
    r"\.",
    r"<br \/>",
    r",",
    r"\(",
    r"\)",
    r"\!",
    r"\?",
    r"\;",
    r"\:",
    r"\s+",
]
_TORCHTEXT_REPLACEMENTS = [" '  ", "", " . ", " ", " , ", " ( ", " ) ", " ! ", " ? ", " ", " ", " "]


def torchtext_basic_english(line: str) -> list[str]:
    line = line.lower()
    for pattern, repl in zip(_TORCHTEXT_PATTERNS, _TORCHTEXT_REPLACEMENTS, strict=True):
        line = re.sub(pattern, repl, line)
    return line.split()


SAMPLES = [
    "Hello, World! It's <br />great.",
    'He said "no"; she: (maybe)?! ...',
    "<br /><br />Tabs\tand\nnewlines   and <br/> not-a-break",
    "don't WON'T l'amour 10/10 $5.99 e-mail ÉCOLE",
    "",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_tokenisation_matches_torchtext_basic_english(text):
    expected = torchtext_basic_english(text)
    assert basic_english_tokenize(text) == expected
    tokenizer = build_tokenizer({"<pad>": 0, "<unk>": 1})
    words = [
        w
        for w, _ in tokenizer.pre_tokenizer.pre_tokenize_str(
            tokenizer.normalizer.normalize_str(text)
        )
    ]
    assert words == expected


def test_documented_example():
    assert basic_english_tokenize("Hello, World! It's <br />great.") == [
        "hello", ",", "world", "!", "it", "'", "s", "great", ".",
    ]  # fmt: skip


def test_vocab_specials_frequency_order_and_cut():
    vocab = build_vocab(["b a c a b a", "d c <pad> <unk>"], vocab_size=3)
    assert vocab == {"<pad>": 0, "<unk>": 1, "a": 2, "b": 3, "c": 4}


# --------------------------------------------------------------------------- data module


def test_split_sizes_labels_and_vocab(data_dir):
    dm = make_dm(data_dir)
    ids, lengths, labels = dm.train_data
    assert ids.shape == (2 * N - VAL, 400) and ids.dtype == torch.int32
    assert labels.dtype == torch.float32 and set(labels.tolist()) <= {0.0, 1.0}
    assert len(dm.val_data[2]) == VAL and len(dm.test_data[2]) == 2 * N
    assert dm.test_data[2].sum() == N  # unsup reviews were ignored, pos/neg balanced
    vocab = dm.load_tokenizer().get_vocab()
    assert vocab["<pad>"] == PAD_ID == 0 and vocab["<unk>"] == 1
    assert dm.num_embeddings == 10002 and len(vocab) <= dm.num_embeddings
    positive = {vocab[w] for w in POS_WORDS if w in vocab}
    for row, label in zip(ids, labels, strict=True):  # labels follow the folder, words follow
        assert bool(positive & set(row.tolist())) == (label == 1.0)


def test_folder_and_archive_give_identical_tensors(tmp_path):
    folder = make_dm(write_fake_imdb(tmp_path / "f", N).parent)
    archive = make_dm(write_fake_imdb(tmp_path / "t", N, as_tar=True).parent)
    for a, b in zip(
        folder.train_data + folder.test_data, archive.train_data + archive.test_data, strict=True
    ):
        assert torch.equal(a, b)


def test_seeded_split_is_reproducible(data_dir):
    a, b, c = make_dm(data_dir, seed=1), make_dm(data_dir, seed=1), make_dm(data_dir, seed=2)
    assert torch.equal(a.val_data[0], b.val_data[0])
    assert not torch.equal(a.val_data[0], c.val_data[0])
    with pytest.raises(ConfigError, match="val_size=40"):
        make_dm(data_dir, val_size=2 * N)


def test_truncation(data_dir):
    dm = make_dm(data_dir, max_len=5)
    assert dm.train_data[0].shape[1] == 5 and int(dm.train_data[1].max()) == 5
    ids, labels = next(iter(dm.train_dataloader()))
    assert ids.shape == (8, 5)


def test_vocab_size_limits_ids(data_dir):
    dm = make_dm(data_dir, vocab_size=5)
    assert int(dm.train_data[0].max()) <= 6 and dm.num_embeddings == 7
    assert (dm.train_data[0] == 1).any()  # rare words became <unk>


def test_batches_are_padded_to_the_longest_review_of_the_batch(data_dir):
    dm = make_dm(data_dir)
    loader = dm.train_dataloader()
    widths = set()
    for ids, labels in loader:
        assert ids.dtype == torch.int64 and labels.dtype == torch.float32
        lengths = (ids != PAD_ID).sum(1)
        assert ids.shape[1] == int(lengths.max()) and labels.shape == (ids.shape[0],)
        # padding only at the end of each row
        assert torch.equal(ids != PAD_ID, torch.arange(ids.shape[1]) < lengths.unsqueeze(1))
        widths.add(ids.shape[1])
    assert len(widths) > 1 and max(widths) < 400
    loader.sampler.set_epoch(1)
    first_epoch1 = next(iter(loader))[1]
    loader2 = dm.train_dataloader()
    loader2.sampler.set_epoch(1)
    assert torch.equal(first_epoch1, next(iter(loader2))[1])
    val = list(dm.val_dataloader())
    assert sum(len(b[1]) for b in val) == VAL


def test_saved_tokenizer_reproduces_the_cached_ids(tmp_path):
    dm = make_dm(write_fake_imdb(tmp_path / "d", N).parent, val_size=0)
    tokenizer = Tokenizer.from_file(str(dm.tokenizer_path))
    root = tmp_path / "d" / "aclImdb" / "test"
    texts = [
        p.read_text()
        for s in ("pos", "neg")
        for p in sorted((root / s).iterdir(), key=lambda p: int(p.stem.split("_")[0]))
    ]
    ids, lengths, _ = dm.test_data  # in evaluation order: row i is review test_order[i]
    texts = [texts[i] for i in dm.test_order.tolist()]
    for text, row, n in zip(texts, ids, lengths, strict=True):
        assert tokenizer.encode(text).ids[:400] == row[:n].tolist()


# --------------------------------------------------------------------------- cache


def test_second_run_uses_the_cache_without_tokenising(data_dir, monkeypatch):
    first = make_dm(data_dir)
    assert len(list(first.cache_dir.glob("imdb_*.pt"))) == 1
    assert len(list(first.cache_dir.glob("imdb_*.tokenizer.json"))) == 1

    def boom(*args, **kwargs):
        raise AssertionError("tokenised again despite the cache")

    monkeypatch.setattr(imdb_module, "encode_parts", boom)
    second = make_dm(data_dir)
    assert second.cache_hit is True
    assert torch.equal(first.train_data[0], second.train_data[0])
    with pytest.raises(AssertionError, match="tokenised again"):
        make_dm(data_dir, max_len=50)  # another max_len is another cache entry


def test_read_only_data_dir_caches_in_home(data_dir, home):
    os.chmod(data_dir, 0o555)
    try:
        dm = make_dm(data_dir)
        assert dm.cache_dir == home / ".cache" / "prunelab" and dm.tokenizer_path.is_file()
        assert not (data_dir / ".prunelab_cache").exists()
    finally:
        os.chmod(data_dir, 0o755)


# --------------------------------------------------------------------------- missing / download


def test_missing_without_download_names_places_and_url(tmp_path):
    dm = IMDBDataModule(str(tmp_path / "empty"), download=False)
    with pytest.raises(DataMissingError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert "\n" not in msg and isinstance(err.value, FileNotFoundError)
    assert str(tmp_path / "empty" / "aclImdb") in msg
    assert str(tmp_path / "empty" / "aclImdb_v1.tar.gz") in msg
    assert imdb_module.URL in msg and "download=False" in msg


def test_download_failure_is_a_clear_error(tmp_path):
    dm = IMDBDataModule(str(tmp_path / "empty"), download=True)
    with pytest.raises(DataMissingError, match="download failed: no network") as err:
        dm.setup()
    assert "\n" not in str(err.value) and "aclImdb_v1.tar.gz" in str(err.value)
    assert not list(dm.cache_dir.glob("*.tmp"))  # no partial download left


def serve(monkeypatch, payload: bytes) -> list[str]:
    calls: list[str] = []

    def urlopen(url, timeout=None):
        calls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(imdb_module.urllib.request, "urlopen", urlopen)
    return calls


def test_download_is_md5_checked(tmp_path, monkeypatch):
    payload = write_fake_imdb(tmp_path / "server", N, as_tar=True).read_bytes()
    calls = serve(monkeypatch, payload)
    dm = IMDBDataModule(str(tmp_path / "empty"), val_size=VAL)
    with pytest.raises(DataMissingError, match="md5"):
        dm.prepare_data()
    assert calls == [imdb_module.URL] and not list(dm.cache_dir.glob("aclImdb*"))

    monkeypatch.setattr(imdb_module, "ARCHIVE_MD5", hashlib.md5(payload).hexdigest())
    dm.prepare_data()
    dm.setup()
    assert (dm.cache_dir / "aclImdb_v1.tar.gz").is_file() and len(dm.test_data[2]) == 2 * N
    again = make_dm(tmp_path / "empty")  # now found in the cache dir: no second download
    assert len(calls) == 2 and again.cache_hit


def test_corrupt_archive_is_a_clear_error(tmp_path):
    (tmp_path / "aclImdb_v1.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataMissingError, match="not a readable .tar.gz"):
        make_dm(tmp_path)


def test_fake_reviews_are_learnable(tmp_path):
    """A bag-of-words logistic regression separates the fake classes within a few steps."""
    dm = make_dm(write_fake_imdb(tmp_path / "d", N).parent, vocab_size=50)
    torch.manual_seed(0)
    bag = torch.nn.EmbeddingBag(dm.num_embeddings, 1, mode="mean", padding_idx=PAD_ID)
    opt = torch.optim.Adam(bag.parameters(), lr=0.1)
    loader = dm.train_dataloader()
    for epoch in range(20):
        loader.sampler.set_epoch(epoch)
        for ids, labels in loader:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(bag(ids).squeeze(1), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
    ids, labels = next(iter(dm.test_dataloader()))
    accuracy = ((bag(ids).squeeze(1) > 0).float() == labels).float().mean()
    assert accuracy > 0.85 and set(NEG_WORDS) & set(dm.load_tokenizer().get_vocab())


# --------------------------------------------------------------------------- full data


@pytest.mark.slow
def test_full_imdb(tmp_path):
    root = Path(os.environ.get("PRUNELAB_DATA", "/work/shared/data"))
    if not ((root / "aclImdb_v1.tar.gz").is_file() or (root / "aclImdb").is_dir()):
        pytest.skip(f"full IMDB not at {root} (aclImdb_v1.tar.gz or aclImdb/; set PRUNELAB_DATA)")
    cache = str(tmp_path / "cache")
    start = time.perf_counter()
    dm = IMDBDataModule(str(root), cache_dir=cache, download=False)
    dm.prepare_data()
    dm.setup()
    first = time.perf_counter() - start
    assert [len(d[2]) for d in (dm.train_data, dm.val_data, dm.test_data)] == [22500, 2500, 25000]
    assert dm.test_data[2].sum() == 12500 and len(dm.load_tokenizer().get_vocab()) == 10002
    start = time.perf_counter()
    cached = IMDBDataModule(str(root), cache_dir=cache, download=False)
    cached.setup()
    second = time.perf_counter() - start
    assert cached.cache_hit and torch.equal(cached.val_data[0], dm.val_data[0])
    print(f"IMDB first prepare+setup {first:.1f}s, cached setup {second:.2f}s")
    assert first < 60 and second < 5  # targets 30 s / 2 s on 2 free cores; slack for load
    tokenizer = dm.load_tokenizer()  # the saved tokenizer agrees with the bulk encoding
    ids, lengths, _ = dm.test_data
    texts = dm.find_source().read()["test"].texts
    for i in range(0, 25000, 250):
        text = texts[int(dm.test_order[i])]  # test_data is in evaluation order
        assert tokenizer.encode(text).ids[:400] == ids[i, : lengths[i]].tolist()
