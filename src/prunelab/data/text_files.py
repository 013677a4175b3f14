"""Text classification from local CSV, TSV or JSONL files of (text, label) records.

The texts go through IMDB's pipeline (:mod:`prunelab.data.tokens`): torchtext's
``basic_english`` rules, a vocabulary of the training texts' ``vocab_size`` most frequent
tokens, ids cached on disk (keyed by the files' identity and the settings), batches padded to
their longest text. Labels are integers ``0..num_classes-1`` or class names
(:func:`prunelab.data.splits.class_index`). Without a test file, ``test_size`` of the training
file is held out (by a fixed seed, the same for every run); the validation part is ``val_size``
of the rest (by the run's seed).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
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
    trim_padding,
)
from prunelab.data.splits import TEST_SPLIT_SEED, class_index, holdout, label_ids
from prunelab.data.tokens import TOKENIZER_VERSION, encode_parts, pad_flat
from prunelab.errors import ConfigError, DataMissingError
from prunelab.messages import get_logger

log = get_logger(__name__)

CACHE_VERSION = 1
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def read_records(path: Path, text_field: str, label_field: str) -> tuple[list[str], list[Any]]:
    """(texts, raw labels) of a CSV/TSV file with a header row, or of a JSONL file."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"{path}: unknown text file format {path.suffix!r}; use one of "
                          f"{', '.join(FORMATS)}")
    if not path.is_file():
        raise DataMissingError(f"{path} not found (a {kind.upper()} file of {text_field!r} and "
                               f"{label_field!r} records)")
    try:
        return _read_records(path, kind, text_field, label_field)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


def _not_utf8(path: Path) -> DataMissingError:
    """One line naming the file, the line and byte that are not UTF-8, and what to do."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8-sig")
        where = ""
    except UnicodeDecodeError as full:  # its offsets count from the file's start
        line = raw.count(b"\n", 0, full.start) + 1
        where = f" (line {line}: byte 0x{raw[full.start]:02x})"
    return DataMissingError(
        f"{path} is not UTF-8 text{where}: prunelab reads text files as UTF-8; convert it, e.g. "
        f"iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix} (for a file "
        "written in Latin-1 / Windows-1252)")


def _read_records(path: Path, kind: str, text_field: str,
                  label_field: str) -> tuple[list[str], list[Any]]:
    texts: list[str] = []
    labels: list[Any] = []
    # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
    with open(path, encoding="utf-8-sig", newline="") as f:
        if kind == "jsonl":
            rows: Any = (_json_line(path, n, line) for n, line in enumerate(f, 1) if line.strip())
        else:
            reader = csv.DictReader(f, delimiter="\t" if kind == "tsv" else ",")
            missing = [k for k in (text_field, label_field) if k not in (reader.fieldnames or [])]
            if missing:
                raise DataMissingError(f"{path}: no column {missing[0]!r} in its header "
                                       f"{reader.fieldnames}; set data.text_field / "
                                       "data.label_field")
            rows = reader
        for n, row in enumerate(rows, 1):
            if text_field not in row or label_field not in row or row[label_field] in ("", None):
                raise DataMissingError(f"{path}: record {n} lacks {text_field!r} or "
                                       f"{label_field!r} (it has {sorted(row)})")
            texts.append(str(row[text_field] or ""))
            labels.append(row[label_field])
    if not texts:
        raise DataMissingError(f"{path} holds no records")
    return texts, labels


def _json_line(path: Path, n: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataMissingError(f"{path}: line {n} is not JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise DataMissingError(f"{path}: line {n} is not a JSON object")
    return row


class TextFilesDataModule(SplitLoaders, L.LightningDataModule):
    """Batches ``(ids: int64 [B, L_batch], labels: int64 [B])`` from local text files.

    ``train`` (and ``test``, optional) are paths to ``.csv``/``.tsv`` (header row) or
    ``.jsonl`` files. The model's embedding needs ``vocab_size + 2`` rows (``<pad>``, ``<unk>``).
    """

    input_kind = "tokens"

    def __init__(
        self,
        train: str,
        num_classes: int,
        test: str | None = None,
        text_field: str = "text",
        label_field: str = "label",
        classes: Sequence[str] | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        vocab_size: int = 10000,
        max_len: int = 400,
        val_size: float = 0.1,
        test_size: float = 0.2,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        check_file_data_args(batch_size, eval_batch_size, num_classes, val_size, test_size, seed)
        bounds.integer("data.vocab_size", vocab_size, 1, bounds.MAX_VOCAB)
        bounds.integer("data.max_len", max_len, 1, bounds.MAX_LEN)
        self.train_path = Path(train).expanduser()
        self.test_path = Path(test).expanduser() if test else None
        self.num_classes = int(num_classes)
        self.text_field, self.label_field = text_field, label_field
        self.classes = list(classes) if classes is not None else None
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.vocab_size, self.max_len = int(vocab_size), int(max_len)
        self.val_size, self.test_size = val_size, test_size
        self.seed = int(seed)
        self._cache_dir_arg = cache_dir
        self.tokenizer_path: Path | None = None
        self.cache_hit: bool | None = None
        self.train_data: tuple[Tensor, ...] | None = None
        self.val_data: tuple[Tensor, ...] | None = None
        self.test_data: tuple[Tensor, ...] | None = None

    @cached_property
    def cache_dir(self) -> Path:
        return resolve_cache_dir(self.train_path.parent, self._cache_dir_arg)

    def _cache_paths(self) -> tuple[Path, Path]:
        files = [self.train_path, *([self.test_path] if self.test_path else [])]
        for path in files:
            if not path.is_file():
                read_records(path, self.text_field, self.label_field)  # the one-line error
        key = cache_key(CACHE_VERSION, TOKENIZER_VERSION, self.vocab_size, self.max_len,
                        self.text_field, self.label_field, self.classes, self.num_classes,
                        None if self.test_path else self.test_size,
                        *(file_identity(p) for p in files))
        stem = f"text_{self.train_path.stem}_{key}"
        return self.cache_dir / f"{stem}.pt", self.cache_dir / f"{stem}.tokenizer.json"

    def _build(self, tokenizer_path: Path) -> dict[str, Tensor]:
        texts, raw = read_records(self.train_path, self.text_field, self.label_field)
        require_classes({str(v).strip() for v in raw}, str(self.train_path))
        index = class_index(raw, self.classes, self.num_classes, str(self.train_path))
        labels = label_ids(raw, index, self.num_classes, str(self.train_path))
        if self.test_path is not None:
            test_texts, test_raw = read_records(self.test_path, self.text_field, self.label_field)
            require_classes({str(v).strip() for v in test_raw}, str(self.test_path))
            test_labels = label_ids(test_raw, index, self.num_classes, str(self.test_path))
        else:  # held out before the vocabulary is built: it sees training texts only
            keep, out = holdout(len(texts), self.test_size, TEST_SPLIT_SEED, "test_size")
            test_texts, test_labels = [texts[i] for i in out], labels[out]
            texts, labels = [texts[i] for i in keep], labels[keep]
        data = encode_parts({"train": texts, "test": test_texts}, self.vocab_size,
                            self.max_len, tokenizer_path)
        data["train_labels"], data["test_labels"] = labels, test_labels
        return data

    def load_encoded(self) -> dict[str, Tensor]:
        """Flat ids, lengths and labels of the train and test parts: cached, else built."""
        data_path, tokenizer_path = self._cache_paths()
        self.tokenizer_path = tokenizer_path
        data, self.cache_hit = load_or_build(
            data_path, lambda: self._build(tokenizer_path), f"{self.train_path} (tokenized)",
            use_cache=tokenizer_path.is_file())
        return data

    def prepare_data(self) -> None:
        self.load_encoded()

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is not None:
            return
        data = self.load_encoded()
        parts = {}
        for name in ("train", "test"):
            lengths = data[f"{name}_lengths"]
            parts[name] = (pad_flat(data[f"{name}_ids"], lengths, self.max_len), lengths,
                           data[f"{name}_labels"])
        n = len(parts["train"][2])
        train_idx, val_idx = holdout(n, self.val_size, self.seed, "val_size")
        self.train_data = tuple(t[train_idx] for t in parts["train"])
        self.val_data = tuple(t[val_idx] for t in parts["train"])
        self.test_data = parts["test"]

    def _loader(self, data: tuple[Tensor, ...] | None, batch_size: int,
                shuffle: bool) -> TensorBatchLoader:
        if data is None:
            raise RuntimeError("TextFilesDataModule.setup() must run before asking for a loader")
        return TensorBatchLoader(data, batch_size, shuffle=shuffle, seed=self.seed,
                                 transform=trim_padding)

