"""IMDB sentiment (Maas et al. 2011) as padded token-id tensors, without torchtext.

Source, first found: an extracted ``<data_dir>/aclImdb/`` folder, ``<data_dir>/aclImdb_v1.tar.gz``
(read member by member, never extracted), ``<cache_dir>/aclImdb_v1.tar.gz``, else a download
of the official archive into the cache dir (md5-checked; only a file we downloaded is checked).
Whatever the source, what was read must be complete (:func:`check_complete`; an archive's gzip
CRC is checked too) before anything is cached, so a damaged copy stops the run with one line.

Tokenisation (:mod:`prunelab.data.tokens`, shared with the CSV/JSONL text data sets) is
torchtext's ``basic_english``; the vocabulary is built from all 25,000 *train* reviews
(validation reviews included: the standard recipe; it uses no labels). The token ids are cached,
so the 50,000 reviews are encoded once (the times: docs/results/README.md).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Any

import lightning as L
import torch
from tokenizers import Tokenizer
from torch import Tensor

from prunelab import bounds
from prunelab.data.common import (
    SplitLoaders,
    TensorBatchLoader,
    cache_key,
    file_identity,
    load_or_build,
    require_classes,
    resolve_cache_dir,
    trim_padding,
)
from prunelab.data.tokens import (  # noqa: F401  (re-exported: imdb's tokenizer API)
    BASIC_ENGLISH_RULES,
    PAD,
    PAD_ID,
    TOKENIZER_VERSION,
    UNK,
    UNK_ID,
    basic_english_normalize,
    basic_english_tokenize,
    build_tokenizer,
    build_vocab,
    encode,
    encode_parts,
    pad_flat,
)
from prunelab.errors import ConfigError, DataMissingError
from prunelab.io import atomic_save
from prunelab.messages import get_logger

log = get_logger(__name__)

URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
ARCHIVE_NAME = "aclImdb_v1.tar.gz"
ARCHIVE_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
FOLDER_NAME = "aclImdb"
PARTS = ("train", "test")
SENTIMENTS = ("pos", "neg")
# 2: only a read that passed the completeness and gzip CRC checks is cached (a cache written by
# version 1 may hold a silently truncated read of a damaged archive)
CACHE_VERSION = 2
# The test reviews are stored pos-then-neg; evaluation order is this fixed permutation of them,
# so that the first batches (``limit_test_batches``, ``trainer=fast``) hold both classes.
EVAL_ORDER_SEED = 0


_MEMBER_RE = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
_URLS_RE = re.compile(r"(?:^|/)aclImdb/(train|test)/urls_(pos|neg)\.txt$")
_FILE_RE = re.compile(r"(\d+)_(\d+)\.txt$")


# --------------------------------------------------------------------------- reading


@dataclass
class Part:
    """The reviews of one part (train or test), in a fixed order: pos then neg, by file id."""

    texts: list[str]
    labels: list[float]


def _assemble(items: Iterable[tuple[str, str, int, str]]) -> dict[str, Part]:
    """(part, sentiment, id, text) in any order -> sorted Parts, so folder and archive agree."""
    by_part: dict[str, list[tuple[int, int, str]]] = {p: [] for p in PARTS}
    for part, sentiment, review_id, text in items:
        by_part[part].append((SENTIMENTS.index(sentiment), review_id, text))
    parts = {}
    for part, rows in by_part.items():
        rows.sort(key=lambda r: (r[0], r[1]))
        parts[part] = Part([r[2] for r in rows], [1.0 if r[0] == 0 else 0.0 for r in rows])
    return parts


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _count_lines(raw: bytes) -> int:
    return sum(1 for line in raw.splitlines() if line.strip())


def check_complete(path: Path, items: list[tuple[str, str, int, str]],
                   expected: dict[tuple[str, str], int]) -> None:
    """Refuse a partial data set, naming ``path`` and what is missing.

    The official split has 12,500 reviews in each of train/pos, train/neg, test/pos and
    test/neg, numbered ``0..12499`` in each folder. Without reading a list of file names, a
    damaged copy is recognised by the same structure at any size: every folder non-empty, ids
    ``0..n-1`` without gaps or repeats, the same ``n`` in all four folders, and, where the
    official ``urls_{pos,neg}.txt`` files are present, as many reviews as they have lines.
    """
    ids: dict[tuple[str, str], list[int]] = {(p, s): [] for p in PARTS for s in SENTIMENTS}
    for part, sentiment, review_id, _ in items:
        ids[(part, sentiment)].append(review_id)
    hint = f"the data set is incomplete or damaged; replace it with a complete copy (source: {URL})"
    for (part, sentiment), found in ids.items():
        where = f"aclImdb/{part}/{sentiment}/"
        if not found:
            raise DataMissingError(
                f"{path} holds no reviews in {where} (expected <id>_<rating>.txt files; "
                f"source: {URL})"
            )
        unique = set(found)
        if len(unique) != len(found):
            raise DataMissingError(f"{path}: {where} holds {len(found) - len(unique)} repeated "
                                   f"review ids; {hint}")
        gaps = sorted(set(range(max(unique) + 1)) - unique)
        if gaps:
            shown = ", ".join(map(str, gaps[:5])) + (", ..." if len(gaps) > 5 else "")
            raise DataMissingError(f"{path}: {where} lacks {len(gaps)} of reviews 0..{max(unique)} "
                                   f"(ids {shown}); {hint}")
        want = expected.get((part, sentiment))
        if want is not None and want != len(found):
            raise DataMissingError(f"{path}: {where} holds {len(found)} reviews, its "
                                   f"urls_{sentiment}.txt lists {want}; {hint}")
    counts = {f"{p}/{s}": len(v) for (p, s), v in ids.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{k} {n:,}" for k, n in counts.items())
        raise DataMissingError(f"{path}: the four folders must hold equally many reviews (the "
                               f"official split: 12,500 each), found {listed}; {hint}")


def read_folder(root: Path) -> dict[str, Part]:
    """Reviews of an extracted ``aclImdb/`` folder (``train/unsup`` is ignored), checked
    complete (:func:`check_complete`)."""
    items = []
    for part in PARTS:
        for sentiment in SENTIMENTS:
            with os.scandir(root / part / sentiment) as entries:
                for entry in entries:
                    m = _FILE_RE.fullmatch(entry.name)
                    if m and entry.is_file():
                        text = _decode(Path(entry.path).read_bytes())
                        items.append((part, sentiment, int(m.group(1)), text))
    expected = {(p, s): _count_lines((root / p / f"urls_{s}.txt").read_bytes())
                for p in PARTS for s in SENTIMENTS if (root / p / f"urls_{s}.txt").is_file()}
    check_complete(root, items, expected)
    return _assemble(items)


def read_archive(path: Path) -> dict[str, Part]:
    """Reviews of ``aclImdb_v1.tar.gz``, streamed member by member (nothing is extracted).

    The gzip stream is read to its end, where its CRC-32 and length are checked: tarfile alone
    stops quietly at the first damaged header and never checks the CRC, so a damaged archive
    would yield part of the reviews. Then :func:`check_complete` checks what was read.
    """
    items = []
    expected: dict[tuple[str, str], int] = {}
    try:
        with gzip.open(path, "rb") as gz:
            with tarfile.open(fileobj=gz, mode="r|") as tar:
                for member in tar:
                    m = _MEMBER_RE.search(member.name)
                    u = None if m else _URLS_RE.search(member.name)
                    if (m or u) and member.isfile():
                        fileobj = tar.extractfile(member)
                        assert fileobj is not None
                        raw = fileobj.read()
                        if len(raw) != member.size:
                            raise EOFError(f"{member.name} is cut short")
                        if m:
                            items.append((m.group(1), m.group(2), int(m.group(3)), _decode(raw)))
                        else:
                            expected[(u.group(1), u.group(2))] = _count_lines(raw)
            while gz.read(1 << 20):  # to the end of the stream: GzipFile checks the CRC there
                pass
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise DataMissingError(
            f"{path} is not a readable .tar.gz ({type(err).__name__}: {err}); it is damaged or "
            f"cut short: delete it and retry (source: {URL})"
        ) from err
    check_complete(path, items, expected)
    return _assemble(items)


def download_archive(dest: Path, url: str | None = None, md5: str | None = None) -> Path:
    """Stream ``url`` to ``dest`` (:func:`prunelab.io.atomic_save`: a failed or wrong download
    leaves nothing that looks like data), checking the md5 of what arrived.

    Defaults are read at call time (``URL``, ``ARCHIVE_MD5``) so tests can patch them.
    """
    url, md5 = url or URL, md5 or ARCHIVE_MD5
    digest = hashlib.md5()
    log.info("downloading %s to %s (84 MB, once) ...", url, dest)

    def fetch(out: IO[bytes]) -> None:
        with urllib.request.urlopen(url, timeout=60) as response:
            headers = getattr(response, "headers", None) or {}
            total = int(headers.get("Content-Length") or 0)
            done, shown = 0, 0
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
                done += len(chunk)
                if total and done * 10 // total > shown:  # every 10 %
                    shown = done * 10 // total
                    log.info("  %d %% of %.0f MB", 10 * shown, total / 1e6)
        if digest.hexdigest() != md5:
            raise ValueError(f"md5 of the download is {digest.hexdigest()}, expected {md5}")

    atomic_save(dest, fetch)
    return dest


@dataclass(frozen=True)
class Source:
    """Where the reviews come from, and an identity that changes when that data changes."""

    kind: str  # "folder" or "archive"
    path: Path

    def identity(self) -> str:
        if self.kind == "archive":
            return file_identity(self.path)
        dirs = [self.path / p / s for p in PARTS for s in SENTIMENTS]
        return "|".join([str(self.path.absolute())] + [str(d.stat().st_mtime_ns) for d in dirs])

    def read(self) -> dict[str, Part]:
        """All reviews, checked complete (a partial read raises, so it is never cached)."""
        return read_folder(self.path) if self.kind == "folder" else read_archive(self.path)


def eval_order(n: int) -> Tensor:
    """The fixed evaluation order of ``n`` test reviews (the same for every run and seed).

    The part is stored pos-then-neg; without this, the first test batches would all be
    positive reviews and a subset evaluation (``limit_test_batches``) would measure nothing.
    """
    return torch.randperm(n, generator=torch.Generator().manual_seed(EVAL_ORDER_SEED))


def _is_folder_source(root: Path) -> bool:
    return all((root / p / s).is_dir() for p in PARTS for s in SENTIMENTS)


# --------------------------------------------------------------------------- DataModule


class IMDBDataModule(SplitLoaders, L.LightningDataModule):
    """IMDB reviews as token ids (binary sentiment), padded per batch.

    Batches are ``(ids: int64 [B, L_batch], labels: float32 [B])``: ids padded with
    ``PAD_ID`` = 0 up to the longest review of the batch (at most ``max_len``), labels 1.0 for
    positive. Train/val: a seeded permutation of the 25,000 train reviews; test: the 25,000
    test reviews in a fixed shuffled order (:func:`eval_order`). The model's embedding needs ``num_embeddings`` = vocab_size + 2 rows.
    """

    pad_id = PAD_ID
    num_classes = 2

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        eval_batch_size: int = 512,
        vocab_size: int = 10000,
        max_len: int = 400,
        val_size: int = 2500,
        seed: int = 0,
        cache_dir: str | None = None,
        download: bool = True,
        num_classes: int = 2,
    ) -> None:
        super().__init__()
        if num_classes != 2:
            raise ConfigError(f"data.num_classes={num_classes}: IMDB has 2 classes (pos, neg)")
        bounds.integer("data.batch_size", batch_size, 1, bounds.MAX_BATCH_SIZE)
        bounds.integer("data.eval_batch_size", eval_batch_size, 1, bounds.MAX_BATCH_SIZE)
        bounds.integer("data.vocab_size", vocab_size, 1, bounds.MAX_VOCAB)
        bounds.integer("data.max_len", max_len, 1, bounds.MAX_LEN)
        bounds.integer("data.val_size", val_size, 0, bounds.MAX_SAMPLES)
        bounds.integer("data.seed", seed, 0, bounds.MAX_SEED)
        self.save_hyperparameters()
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.vocab_size = int(vocab_size)
        self.max_len = int(max_len)
        self.val_size = int(val_size)
        self.seed = int(seed)
        self.download = download
        self._cache_dir_arg = cache_dir
        self.cache_hit: bool | None = None  # set by prepare_data/setup: was the cache used?
        self.tokenizer_path: Path | None = None
        self.train_data: tuple[Tensor, Tensor, Tensor] | None = None
        self.val_data: tuple[Tensor, Tensor, Tensor] | None = None
        self.test_data: tuple[Tensor, Tensor, Tensor] | None = None
        self.test_order: Tensor | None = None  # test_data[i] is review test_order[i] of the part

    @property
    def num_embeddings(self) -> int:
        """Rows of the model's embedding: the vocabulary plus ``<pad>`` and ``<unk>``."""
        return self.vocab_size + 2

    @cached_property
    def cache_dir(self) -> Path:
        """Resolved on first use, not in __init__: building the config must not create folders."""
        return resolve_cache_dir(self.data_dir, self._cache_dir_arg)

    # ----------------------------------------------------------------- finding the data

    def _candidates(self) -> list[Source]:
        return [
            Source("folder", self.data_dir / FOLDER_NAME),
            Source("archive", self.data_dir / ARCHIVE_NAME),
            Source("archive", self.cache_dir / ARCHIVE_NAME),
        ]

    def _missing_message(self, reason: str) -> str:
        folder, archive, cached = (str(s.path) for s in self._candidates())
        return (
            f"IMDB not found: looked for {folder}/{{train,test}}/{{pos,neg}}/<id>_<rating>.txt, "
            f"{archive} and {cached} (source: {URL}); {reason}"
        )

    def find_source(self) -> Source:
        """The first present source; downloads the archive into the cache dir if none is."""
        for source in self._candidates():
            present = (
                _is_folder_source(source.path) if source.kind == "folder" else source.path.is_file()
            )
            if present:
                return source
        if not self.download:
            raise DataMissingError(self._missing_message("download=False, so nothing was fetched"))
        dest = self.cache_dir / ARCHIVE_NAME
        try:
            download_archive(dest)
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise DataMissingError(self._missing_message(f"download failed: {reason}")) from err
        return Source("archive", dest)

    # ----------------------------------------------------------------- cache

    def _cache_paths(self, source: Source) -> tuple[Path, Path]:
        key = cache_key(
            CACHE_VERSION, TOKENIZER_VERSION, self.vocab_size, self.max_len, source.identity()
        )
        return self.cache_dir / f"imdb_{key}.pt", self.cache_dir / f"imdb_{key}.tokenizer.json"

    def _build(self, source: Source, tokenizer_path: Path) -> dict[str, Any]:
        """Read, build the vocabulary from the train part, encode both parts; save tokenizer."""
        log.info("preparing IMDB from %s: reading, tokenizing and caching 50,000 reviews "
                 "(once per vocabulary size and max_len; about a minute) ...", source.path)
        parts = source.read()
        for name, part in parts.items():
            require_classes(part.labels, f"{source.path} ({name} part)", {1.0: "pos", 0.0: "neg"})
        log.info("  read %s reviews; building the vocabulary and encoding ...",
                 " + ".join(f"{len(p.texts):,} {name}" for name, p in parts.items()))
        data: dict[str, Any] = encode_parts({name: p.texts for name, p in parts.items()},
                                            self.vocab_size, self.max_len, tokenizer_path)
        for name, part in parts.items():
            data[f"{name}_labels"] = torch.tensor(part.labels, dtype=torch.float32)
        return data

    def load_encoded(self) -> dict[str, Any]:
        """Flat ids, lengths and labels of both parts: from the cache, else built and cached."""
        source = self.find_source()
        data_path, tokenizer_path = self._cache_paths(source)
        self.tokenizer_path = tokenizer_path
        data, self.cache_hit = load_or_build(
            data_path, lambda: self._build(source, tokenizer_path), "IMDB",
            use_cache=tokenizer_path.is_file())
        return data

    def load_tokenizer(self) -> Tokenizer:
        """The saved tokenizer (same ids as the batches, before truncation to ``max_len``)."""
        if self.tokenizer_path is None:
            self.load_encoded()
        assert self.tokenizer_path is not None
        return Tokenizer.from_file(str(self.tokenizer_path))

    # ----------------------------------------------------------------- Lightning hooks

    def prepare_data(self) -> None:
        """Download if needed and write the token cache (rank 0 only under DDP)."""
        self.load_encoded()

    def split_indices(self, n_train: int) -> tuple[Tensor, Tensor]:
        """(train, val) indices: ``random_split(range(n), [n - val_size, val_size], g)``'s."""
        if self.val_size >= n_train:
            raise ConfigError(
                f"data.val_size={self.val_size} must be smaller than the {n_train} train reviews"
            )
        perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(self.seed))
        return perm[: n_train - self.val_size], perm[n_train - self.val_size :]

    def setup(self, stage: str | None = None) -> None:
        """Build padded [N, max_len] int32 ids, lengths and labels for the three splits once."""
        if self.train_data is not None:
            return
        data = self.load_encoded()
        tensors = {}
        for name in PARTS:
            lengths = data[f"{name}_lengths"]
            ids = pad_flat(data[f"{name}_ids"], lengths, self.max_len)
            tensors[name] = (ids, lengths, data[f"{name}_labels"])
        train_idx, val_idx = self.split_indices(len(tensors["train"][2]))
        self.train_data = tuple(t[train_idx] for t in tensors["train"])  # type: ignore[assignment]
        self.val_data = tuple(t[val_idx] for t in tensors["train"])  # type: ignore[assignment]
        self.test_order = eval_order(len(tensors["test"][2]))
        self.test_data = tuple(t[self.test_order] for t in tensors["test"])  # type: ignore[assignment]

    def example_input(self) -> Tensor:
        """One random review of ``max_len`` in-vocabulary token ids ([1, max_len]), without
        reading the data set (see :func:`prunelab.data.example_input`)."""
        first = UNK_ID + 1  # ids of real tokens start after <pad> and <unk>
        return torch.randint(first, first + self.vocab_size, (1, self.max_len))

    def _loader(
        self, data: tuple[Tensor, ...] | None, batch_size: int, shuffle: bool
    ) -> TensorBatchLoader:
        if data is None:
            raise RuntimeError("IMDBDataModule.setup() must run before asking for a dataloader")
        return TensorBatchLoader(
            data, batch_size, shuffle=shuffle, seed=self.seed, transform=trim_padding
        )
