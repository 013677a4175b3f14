"""IMDB preparation: first-time tokenisation + vocabulary of the 50,000 reviews vs a cached load.

    .venv/bin/python benchmarks/imdb_prep.py [--quick] [--data-dir D]

Through the public API, as a run does it: ``IMDBDataModule(data_dir=..., cache_dir=<fresh temp
dir>).prepare_data(); .setup("fit")``. The first pass reads the archive (or extracted folder),
builds the vocabulary and encodes every review into the empty cache; the second pass, with a
new DataModule on the same cache dir, only loads the cached ids. Printed: seconds of each part,
and the ratio first/cached. ``--quick`` times one cached load instead of the best of three.

Data: ``--data-dir``, else ``$PRUNELAB_DATA``, else ``../shared/data`` (``aclImdb_v1.tar.gz``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    env = os.environ.get("PRUNELAB_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def timed(data_dir: Path, cache_dir: Path) -> dict[str, float]:
    from prunelab.data import IMDBDataModule

    dm = IMDBDataModule(data_dir=str(data_dir), cache_dir=str(cache_dir))
    t0 = time.perf_counter()
    dm.prepare_data()
    t1 = time.perf_counter()
    hit = getattr(dm, "cache_hit", None)  # after prepare_data: did it find a cache?
    dm.setup("fit")
    t2 = time.perf_counter()
    n = sum(len(part[-1]) for part in (dm.train_data, dm.val_data, dm.test_data) if part)
    return {"prepare": t1 - t0, "setup": t2 - t1, "total": t2 - t0, "reviews": n,
            "cache_hit": hit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one cached load, not best of 3")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    data_dir = args.data_dir or default_data_dir()
    if not ((data_dir / "aclImdb_v1.tar.gz").exists() or (data_dir / "aclImdb").exists()):
        sys.exit(f"no aclImdb_v1.tar.gz or aclImdb/ under {data_dir}: pass --data-dir")
    try:
        import prunelab.data  # noqa: F401
    except ImportError as err:
        sys.exit(f"prunelab.data.IMDBDataModule is not importable yet: {err}")
    print(f"# imdb_prep  {time.strftime('%Y-%m-%d %H:%M')}  data {data_dir}  cpus {os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="prunelab-imdb-cache-") as cache:
        first = timed(data_dir, Path(cache))
        cached = [timed(data_dir, Path(cache)) for _ in range(1 if args.quick else 3)]
    best = min(cached, key=lambda r: r["total"])
    for label, r in (("first (empty cache)", first), ("cached (best)", best)):
        print(f"  {label:<20} prepare_data {r['prepare']:7.2f} s   setup {r['setup']:6.2f} s   "
              f"total {r['total']:7.2f} s   reviews {r['reviews']:,}   cache_hit {r['cache_hit']}")
    print(f"  first / cached: {first['total'] / best['total']:.1f}x")


if __name__ == "__main__":
    main()
