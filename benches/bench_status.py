"""What ``chunkwise.status`` costs against the split it looks up, from 10^5 to 10^7 files.

For each size it builds the synthetic fileset of ``bench_core.py`` (100 datasets, CMS-like
paths), splits it with ``strategy="by_dataset", files_per_chunk=50`` and times, best of
``--repeat``:

- **split + hash**: ``split_fileset`` and ``hash_filesets`` of the chunks, the floor any
  look-up by chunk has to pay;
- **status, empty**: ``chunkwise.status`` on a cache whose tag directory is empty;
- **status, half full**: on a cache where 40 % of the chunks have their entry and 10 % are
  salvaged (every file but one has its own entry, and a real, authenticated salvage record
  names the bad one). ``status`` does not open entries (``verify=False``, the default), so
  they are written empty: only their names matter, and the records are real.

It prints each status time as a ratio to split + hash (the target is at most 3x). With
``--before REV`` it also times the status of git revision REV (loaded from ``git show``) on the
empty cache of the first size, for a before/after row.

Usage: ``python benches/bench_status.py [--sizes 20000 200000 1000000] [--repeat 3]
[--before REV]``
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import random
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from bench_core import best, make_fileset

import chunkwise
from chunkwise.cache import ChunkCache, SalvageRecord
from chunkwise.chunks import SplitOptions, make_chunks

SPLIT = SplitOptions(strategy="by_dataset", files_per_chunk=50)
TAG = "bench"


def fill_half(cache: ChunkCache, chunks: list, seed: int = 7) -> tuple[int, int]:
    """40 % of the chunks get an entry, 10 % are salvaged; returns (entries, records)."""
    rng = random.Random(seed)
    directory = Path(cache.directory)
    entries = records = 0
    for chunk in chunks:
        u = rng.random()
        if u < 0.4:
            (directory / f"{chunk.hash}.coffea").touch()
            entries += 1
        elif u < 0.5:
            parts = list(chunk.part_files.items())
            bad_hash, (dataset, path) = parts[rng.randrange(len(parts))]
            for part_hash, _ in parts:
                if part_hash != bad_hash:
                    (directory / f"{part_hash}.coffea").touch()
                    entries += 1
            cache.save_salvage(
                SalvageRecord(
                    chunk.hash,
                    "1 file(s) failed",
                    [{"dataset": d, "path": p, "hash": h} for h, (d, p) in parts],
                    {dataset: {path: "OSError: truncated"}},
                )
            )
            records += 1
    return entries, records


def old_status(rev: str):
    """``chunkwise.cache_status.status`` as it was at git revision ``rev``."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "show", f"{rev}:python/chunkwise/cache_status.py"],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / "old_cache_status.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_cache_status", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_cache_status"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--before", metavar="REV", help="also time the status of this revision")
    ap.add_argument("--dir", default=None, help="where to make the caches (default: a temp dir)")
    args = ap.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    header = (
        f"{'files':>10} {'chunks':>7} {'split+hash s':>12} {'empty s':>8} {'ratio':>6} "
        f"{'half s':>7} {'ratio':>6} {'entries':>8} {'records':>8}"
    )
    print(header)
    before_row = None
    for n in args.sizes:
        fileset = make_fileset(n, 100)
        base = best(functools.partial(make_chunks, fileset, SPLIT), args.repeat)
        chunks = make_chunks(fileset, SPLIT)
        work = Path(tempfile.mkdtemp(dir=args.dir, prefix="bench-status-"))
        try:
            empty = ChunkCache(work / "empty", TAG)
            empty.check(create=True)
            t_empty = best(
                functools.partial(chunkwise.status, fileset, empty, split=SPLIT), args.repeat
            )
            half = ChunkCache(work / "half", TAG)
            half.check(create=True)
            entries, records = fill_half(half, chunks)
            report = chunkwise.status(fileset, half, split=SPLIT)
            assert report.overall.files_failed == records, report
            t_half = best(
                functools.partial(chunkwise.status, fileset, half, split=SPLIT), args.repeat
            )
            print(
                f"{n:>10,} {len(chunks):>7,} {base:>12.3f} {t_empty:>8.3f} "
                f"{t_empty / base:>5.1f}x {t_half:>7.3f} {t_half / base:>5.1f}x "
                f"{entries:>8,} {records:>8,}"
            )
            if args.before and before_row is None:
                status = old_status(args.before)
                t_old = best(functools.partial(status, fileset, empty, split=SPLIT), 1)
                before_row = (n, base, t_old, t_empty)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if before_row is not None:
        n, base, t_old, t_new = before_row
        print(
            f"\nempty cache, {n:,} files: status at {args.before} {t_old:.3f} s "
            f"({t_old / base:.0f}x split+hash), now {t_new:.3f} s ({t_new / base:.1f}x): "
            f"{t_old / t_new:.0f}x faster"
        )


if __name__ == "__main__":
    main()
