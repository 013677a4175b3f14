"""Text → padded token ids: torchtext's ``basic_english`` rules, a frequency vocabulary, caching.

Shared by every text data set (IMDB, CSV/JSONL files), so they tokenise identically. The
vocabulary is the ``vocab_size`` most frequent tokens of the training texts, ties broken
alphabetically, after ``<pad>``=0 and ``<unk>``=1. The result is also saved as a ``tokenizers``
WordLevel tokenizer (JSON) next to the cached ids, so that new text can be encoded identically
later. The bulk encoding runs the same rules through ``str.lower``/``str.replace``/``str.split``
and a dict lookup: every rule but the last is a literal replacement, and this is faster than
``encode_batch`` (docs/results/README.md; a test asserts both give the same ids).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from torch import Tensor

from prunelab.io import atomic_write

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
# Bump when the tokenisation rules or the cache layout change: old caches are then ignored.
TOKENIZER_VERSION = "basic_english-1"

# torchtext's basic_english, in its order, after lower-casing. All patterns are literal strings
# (torchtext writes them as escaped regexes); its final ``\s+`` -> " " only affects spacing,
# which whitespace splitting makes irrelevant.
BASIC_ENGLISH_RULES: tuple[tuple[str, str], ...] = (
    ("'", " '  "),
    ('"', ""),
    (".", " . "),
    ("<br />", " "),
    (",", " , "),
    ("(", " ( "),
    (")", " ) "),
    ("!", " ! "),
    ("?", " ? "),
    (";", " "),
    (":", " "),
)


def basic_english_normalize(text: str) -> str:
    """Lower-case and space out punctuation exactly like torchtext's ``basic_english``."""
    text = text.lower()
    for pattern, replacement in BASIC_ENGLISH_RULES:
        text = text.replace(pattern, replacement)
    return text


def basic_english_tokenize(text: str) -> list[str]:
    """torchtext's ``get_tokenizer("basic_english")(text)``."""
    return basic_english_normalize(text).split()


def build_vocab(normalized_texts: Iterable[str], vocab_size: int) -> dict[str, int]:
    """``<pad>``=0, ``<unk>``=1, then the ``vocab_size`` most frequent tokens (ties: A-Z).

    The same order as torchtext's ``build_vocab_from_iterator`` and tokenizers'
    ``WordLevelTrainer``; made explicit here so it cannot drift between versions.
    """
    counts = Counter(itertools.chain.from_iterable(t.split() for t in normalized_texts))
    for special in (PAD, UNK):
        counts.pop(special, None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:vocab_size]
    vocab = {PAD: PAD_ID, UNK: UNK_ID}
    vocab.update((token, i) for i, (token, _) in enumerate(ranked, start=2))
    return vocab


def build_tokenizer(vocab: dict[str, int]) -> Tokenizer:
    """A ``tokenizers`` WordLevel tokenizer applying the basic_english rules with ``vocab``."""
    tokenizer = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Lowercase()]
        + [normalizers.Replace(pattern, repl) for pattern, repl in BASIC_ENGLISH_RULES]
        + [normalizers.Replace(Regex(r"\s+"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


def encode(
    normalized_texts: Iterable[str], vocab: dict[str, int], max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of each text, truncated to ``max_len``, as (flat int32 ids, int32 lengths)."""
    get = vocab.get
    rows = [[get(w, UNK_ID) for w in text.split()[:max_len]] for text in normalized_texts]
    lengths = np.fromiter(map(len, rows), dtype=np.int32, count=len(rows))
    flat = np.fromiter(
        itertools.chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum())
    )
    return flat, lengths


def pad_flat(flat: Tensor, lengths: Tensor, max_len: int) -> Tensor:
    """Flat ids + lengths -> right-padded int32 [N, max_len] (one masked assignment)."""
    out = torch.full((len(lengths), max_len), PAD_ID, dtype=torch.int32)
    out[torch.arange(max_len) < lengths.unsqueeze(1)] = flat
    return out


def encode_parts(texts: dict[str, list[str]], vocab_size: int, max_len: int,
                 tokenizer_path: Path, vocab_part: str = "train") -> dict[str, Tensor]:
    """Build the vocabulary from ``texts[vocab_part]``, save its tokenizer, encode every part.

    Returns ``vocab_len`` and, per part, ``<part>_ids`` (flat int32) and ``<part>_lengths``
    (int32): the layout :func:`pad_flat` turns into a padded [N, max_len] tensor.
    """
    normalized = {name: [basic_english_normalize(t) for t in part] for name, part in texts.items()}
    vocab = build_vocab(normalized[vocab_part], vocab_size)
    atomic_write(tokenizer_path, build_tokenizer(vocab).to_str(pretty=True))
    data: dict[str, Tensor] = {"vocab_len": torch.tensor(len(vocab))}
    for name, part in normalized.items():
        flat, lengths = encode(part, vocab, max_len)
        data[f"{name}_ids"] = torch.from_numpy(flat)
        data[f"{name}_lengths"] = torch.from_numpy(lengths)
    return data
