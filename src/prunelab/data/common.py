"""Shared data helpers: where data and caches live, and a fast in-memory batch loader.

Both data sets fit in memory as a few tensors, so batches are cut from those tensors with one
index operation each; a ``torch.utils.data.DataLoader`` would spend most of its time collating
single samples in Python.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from prunelab import bounds
from prunelab.errors import ConfigError, DataMissingError
from prunelab.io import atomic_write
from prunelab.messages import get_logger

_log = get_logger(__name__)

CACHE_SUBDIR = ".prunelab_cache"

Batch = tuple[Any, ...]


# --------------------------------------------------------------------------- directories


def is_writable_dir(path: str | Path) -> bool:
    """Whether files could be created in ``path`` (or in the folder that would hold it).

    A missing folder counts as writable when its nearest existing ancestor is. ``os.access``
    says yes to root for any mode, so for root a folder without any write bit (the shared,
    read-only data folder, mode 555) is treated as read-only too: its owner meant it so.
    """
    p = Path(path).expanduser().absolute()
    while not p.exists():
        if p.parent == p:
            return False
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
        return False
    if os.geteuid() == 0:
        return bool(p.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return True


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/prunelab``, else ``~/.cache/prunelab``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "prunelab"


def resolve_cache_dir(data_dir: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Return (and create) the folder for extracted files and decoded-tensor caches.

    Default: ``<data_dir>/.prunelab_cache`` when ``data_dir`` is writable, so caches sit next
    to the data they come from; else the per-user cache, because a shared data folder may be
    read-only.
    """
    if cache_dir is not None:
        path = Path(cache_dir).expanduser()
    elif is_writable_dir(data_dir):
        path = Path(data_dir).expanduser() / CACHE_SUBDIR
    else:
        path = user_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"cache_dir {str(path)!r} cannot be created ({err.strerror}); "
            "set data.cache_dir to a writable folder"
        ) from err
    return path


def file_identity(path: str | Path) -> str:
    """A cheap identity for a source file or folder: absolute path, size and mtime.

    Used in cache keys so that replacing the data invalidates the cache without hashing
    megabytes on every run.
    """
    p = Path(path).absolute()
    st = p.stat()
    return f"{p}:{st.st_size}:{st.st_mtime_ns}"


def cache_key(*parts: object) -> str:
    """A short stable hash of the values that determine a cache file's content."""
    text = "\x1f".join(str(part) for part in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# A cache file is one header line, then torch.save's bytes. The header's size and SHA-256 of
# those bytes catch any damage (a flipped bit inside a tensor loads without error otherwise).
CACHE_MAGIC = b"prunelab-cache 1"


def cache_bytes(obj: object) -> bytes:
    """``obj`` as a cache file's content: the header line, then ``torch.save``'s bytes."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    header = b"%s size=%d sha256=%s\n" % (CACHE_MAGIC, len(payload),
                                          hashlib.sha256(payload).hexdigest().encode())
    return header + payload


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """:func:`cache_bytes` of ``obj``, written atomically (:func:`prunelab.io.atomic_write`),
    so readers never see half a file.

    Several processes (DDP ranks, sweep jobs) may build the same cache at once; the last
    rename wins and every version is complete.
    """
    atomic_write(path, cache_bytes(obj))


def read_cache(path: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(data, None)`` for an intact cache; ``(None, why)`` for a damaged or foreign one;
    ``(None, None)`` when there is none."""
    path = Path(path)
    if not path.is_file():
        return None, None
    try:
        with open(path, "rb") as f:
            header = f.readline(256)  # streamed: no copy of the whole file in memory
            fields = dict(x.split(b"=", 1) for x in header.split()[2:] if b"=" in x)
            if not header.startswith(CACHE_MAGIC + b" ") or not {b"size", b"sha256"} <= set(fields):
                return None, "has no checksum header (an older prunelab's, or not a cache)"
            size = os.fstat(f.fileno()).st_size - len(header)
            if fields[b"size"] != str(size).encode():
                return None, f"is {size} bytes long, its header says {fields[b'size'].decode()}"
            if hashlib.file_digest(f, "sha256").hexdigest().encode() != fields[b"sha256"].strip():
                return None, "does not match its checksum (damaged on disk)"
            f.seek(len(header))
            return torch.load(f, map_location="cpu", weights_only=True), None
    except OSError as err:
        return None, f"cannot be read ({err.strerror or err})"
    except Exception as err:  # intact bytes that are no cache of ours
        return None, f"does not load ({type(err).__name__})"


def load_cache(path: str | Path) -> dict[str, Any] | None:
    """Load a cache written by :func:`atomic_torch_save`; ``None`` if absent, damaged or
    unreadable (:func:`read_cache` says why)."""
    return read_cache(path)[0]


def load_or_build(path: str | Path, build: Callable[[], dict[str, Any]], what: str,
                  use_cache: bool = True,
                  valid: Callable[[dict[str, Any]], bool] = lambda data: True,
                  ) -> tuple[dict[str, Any], bool]:
    """``(data, hit)``: the cache at ``path`` when ``use_cache`` and it is intact (its checksum)
    and ``valid``; else ``build()``, saved there atomically. One place for every data module's
    cache rule: a damaged, truncated or stale cache is rebuilt (with a one-line note), never
    trusted and never an error."""
    data, damage = read_cache(path) if use_cache else (None, None)
    if data is not None and valid(data):
        return data, True
    if damage:
        _log.warning("%s: the cache %s %s; rebuilding it", what, path, damage)
    t0 = time.perf_counter()
    data = build()
    atomic_torch_save(data, path)
    _log.info("%s ready in %.1f s, cached in %s", what, time.perf_counter() - t0, path)
    return data, False


# --------------------------------------------------------------------------- labels


def check_file_data_args(batch_size: Any, eval_batch_size: Any, num_classes: Any, val_size: Any,
                         test_size: Any, seed: Any) -> None:
    """The arguments every data module over the user's own files takes, each in its range
    (:mod:`prunelab.bounds`), before any file is read."""
    bounds.integer("data.batch_size", batch_size, 1, bounds.MAX_BATCH_SIZE)
    bounds.integer("data.eval_batch_size", eval_batch_size, 1, bounds.MAX_BATCH_SIZE)
    bounds.integer("data.num_classes", num_classes, 1, bounds.MAX_CLASSES)
    bounds.count_or_fraction("data.val_size", val_size)
    bounds.count_or_fraction("data.test_size", test_size, empty=False)  # no test: no result
    bounds.integer("data.seed", seed, 0, bounds.MAX_SEED)


def require_classes(labels: Tensor | Iterable[Any], source: str,
                    names: Mapping[Any, str] | None = None) -> None:
    """Refuse a data set whose labels hold fewer than two classes (one line naming ``source``
    and the classes found): any model scores 100 % on one class, which measures nothing.

    ``names`` maps label values to the class names shown (an image folder's folder names).
    Every data module that reads labels calls this on what it read, before anything is cached.
    """
    found = labels.unique().tolist() if isinstance(labels, Tensor) else sorted(set(labels), key=str)
    if len(found) >= 2:
        return
    shown = ", ".join(str(names.get(v, v)) if names else str(v) for v in found) or "none"
    raise DataMissingError(
        f"{source} holds {len(found)} class{'' if len(found) == 1 else 'es'} ({shown}): a "
        "classifier needs samples of at least two classes (on one class any model scores "
        "100 %); add samples of the other classes, or point the data config at the full set")


# --------------------------------------------------------------------------- batching


def distributed_rank_world() -> tuple[int, int]:
    """(rank, world_size) of the initialised default process group, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def epoch_generator(seed: int, epoch: int, stream: str = "") -> torch.Generator:
    """A generator seeded from (seed, epoch) alone, by a hash of the pair.

    ``seed + epoch`` (DistributedSampler's choice) would give run seed=1 at epoch 0 the order
    of run seed=0 at epoch 1; packing both into one 64-bit number fails too, because torch's
    CPU generator keeps only the low 32 bits of its seed. ``stream`` names an independent
    sequence for the same pair (the shuffle order is the unnamed one).
    """
    key = f"{seed},{epoch}" + (f",{stream}" if stream else "")
    digest = hashlib.blake2b(key.encode(), digest_size=4).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little"))


class EpochSampler:
    """Yields the sample order of one epoch: a function of (seed, epoch) and the DDP shard.

    Lightning calls ``set_epoch`` on ``dataloader.sampler`` before every epoch (also after a
    resume), so an epoch's order never depends on how many epochs this process has run.
    Under DDP every rank draws the same permutation and keeps every world_size-th element,
    after cutting it to a multiple of world_size: disjoint, equal-size shards (at most
    world_size - 1 samples per epoch are left out, as with ``drop_last`` samplers).
    """

    def __init__(
        self,
        num_samples: int,
        shuffle: bool,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self._rank = rank
        self._world_size = world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rank_world(self) -> tuple[int, int]:
        """Explicit rank/world_size if given, else those of torch.distributed (read lazily,
        because the loader is usually built before the process group exists)."""
        rank, world = distributed_rank_world()
        return (
            rank if self._rank is None else self._rank,
            world if self._world_size is None else self._world_size,
        )

    def shard_size(self) -> int:
        _, world = self.rank_world()
        return self.num_samples // world if world > 1 else self.num_samples

    def indices(self) -> Tensor | None:
        """This rank's sample indices for the current epoch; ``None`` means ``0..n-1`` in order."""
        rank, world = self.rank_world()
        if not self.shuffle and world == 1:
            return None
        if self.shuffle:
            order = torch.randperm(
                self.num_samples, generator=epoch_generator(self.seed, self.epoch)
            )
        else:
            order = torch.arange(self.num_samples)
        if world > 1:
            order = order[: self.shard_size() * world][rank::world]
        return order

    def __iter__(self) -> Iterator[int]:
        order = self.indices()
        return iter(range(self.num_samples) if order is None else order.tolist())

    def __len__(self) -> int:
        return self.shard_size()


class TensorBatchLoader:
    """An iterable of batches sliced from in-memory tensors; usable as a Lightning dataloader.

    Each batch is ``tuple(t[idx] for t in tensors)`` with one index tensor per batch, then
    passed through ``transform`` if given (e.g. :func:`trim_padding`), then through ``augment``
    if given: ``augment(batch, generator)`` with one generator per epoch, seeded from (seed,
    epoch), so augmented batches are as reproducible as the order. Not a ``DataLoader``,
    so Lightning neither injects a DistributedSampler nor warns about workers; DDP sharding
    is done by :class:`EpochSampler`. ``sampler.set_epoch`` fixes the shuffle order.
    """

    def __init__(
        self,
        tensors: Sequence[Tensor],
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        transform: Callable[..., Batch] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        augment: Callable[[Batch, torch.Generator], Batch] | None = None,
    ) -> None:
        tensors = tuple(tensors)
        if not tensors:
            raise ValueError("TensorBatchLoader needs at least one tensor")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError(f"tensor lengths differ: {[len(t) for t in tensors]}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors = tensors
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.transform = transform
        self.augment = augment
        self.sampler = EpochSampler(n, shuffle, seed, rank=rank, world_size=world_size)
        # Lightning's _is_dataloader_shuffled reads batch_sampler whenever sampler exists.
        self.batch_sampler = None

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (before ``drop_last``)."""
        return self.sampler.shard_size()

    def set_epoch(self, epoch: int) -> None:
        """Shortcut for ``sampler.set_epoch``."""
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self.sampler.indices()
        bs = self.batch_size
        gen = (epoch_generator(self.sampler.seed, self.sampler.epoch, "augment")
               if self.augment is not None else None)
        for b in range(len(self)):
            if order is None:  # plain slices are views: no copy at all
                batch = tuple(t[b * bs : (b + 1) * bs] for t in self.tensors)
            else:
                idx = order[b * bs : (b + 1) * bs]
                batch = tuple(t[idx] for t in self.tensors)
            if self.transform is not None:
                batch = self.transform(*batch)
            yield batch if gen is None else self.augment(batch, gen)


def trim_padding(ids: Tensor, lengths: Tensor, *rest: Tensor) -> Batch:
    """Cut right-padded ``ids`` [B, L_max] to the batch's longest sequence; drop ``lengths``.

    Returns ``(ids.long() [B, L_batch], *rest)``. At least one column is kept so that a batch
    of empty texts still has a valid shape.
    """
    width = max(int(lengths.max()), 1) if len(lengths) else 1
    return (ids[:, :width].long(), *rest)


def example_input(datamodule: Any) -> Tensor:
    """One input sample (batch of one) of the kind ``datamodule``'s test batches hold.

    Generic code (compaction, latency, export) takes the shape of a network's input from here,
    never from a data set's name. A data module that knows its input without reading the data
    says so with an ``example_input()`` method (prunelab's MNIST and IMDB modules do); for any
    other, its data are prepared and the first test batch's first sample is returned.
    """
    own = getattr(datamodule, "example_input", None)
    if callable(own):
        return own()
    datamodule.prepare_data()
    datamodule.setup("test")
    return next(iter(datamodule.test_dataloader()))[0][:1]


def test_set_size(datamodule: Any) -> int | None:
    """Samples in ``datamodule``'s whole test set (``limit_test_batches`` tests fewer); None
    when its loader does not say (no ``tensors`` or sized ``dataset``)."""
    try:
        loader = datamodule.test_dataloader()
    except Exception:
        return None
    tensors = getattr(loader, "tensors", None)
    if tensors:
        return len(tensors[0])
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        return None


class SplitLoaders:
    """The three loaders of a data module that holds its splits as tensors: the module sets
    ``train_data``/``val_data``/``test_data``, ``batch_size``, ``eval_batch_size`` and defines
    ``_loader(data, batch_size, shuffle)``."""

    def train_dataloader(self) -> TensorBatchLoader:
        return self._loader(self.train_data, self.batch_size, shuffle=True)

    def val_dataloader(self) -> TensorBatchLoader:
        return self._loader(self.val_data, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> TensorBatchLoader:
        return self._loader(self.test_data, self.eval_batch_size, shuffle=False)
