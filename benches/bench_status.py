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
  they are written empty: only their names matter, and the records are real. **cold** is the
  first status, without the tag's index (a run writes it; here the cache was filled by hand):
  it reads every record and writes the index, which the timed (best) calls then use.

With ``--xrootd N`` it also serves a half-full cache of N files over the real XRootD server of
the tests (``tests/xrootd_server.py``, which needs root and ``xrootd``), with request tracing on,
and counts the requests one ``status`` makes: with the index a run leaves, and without it.

It prints each status time as a ratio to split + hash (the target is at most 3x). With
``--before REV`` it also times the status of git revision REV (loaded from ``git show``) on the
empty cache of the first size, for a before/after row.

Usage: ``python benches/bench_status.py [--sizes 20000 200000 1000000] [--repeat 3]
[--before REV] [--xrootd 100000]``
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
import time
import warnings
from pathlib import Path

from bench_core import best, make_fileset

import chunkwise
from chunkwise.cache import ChunkCache, SalvageRecord
from chunkwise.cache.index import IndexedRecord
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


def time_sizes(args: argparse.Namespace) -> None:
    """The table of status times against split + hash, one row per size."""
    print(
        f"{'files':>10} {'chunks':>7} {'split+hash s':>12} {'empty s':>8} {'ratio':>6} "
        f"{'half s':>7} {'ratio':>6} {'cold s':>7} {'ratio':>6} {'entries':>8} {'records':>8}"
    )
    before_row = None
    for n in args.sizes:
        fileset = make_fileset(n, 100)
        base = best(functools.partial(make_chunks, fileset, SPLIT), args.repeat)
        chunks = make_chunks(fileset, SPLIT)
        work = Path(tempfile.mkdtemp(dir=args.dir, prefix="bench-status-"))
        try:
            empty = ChunkCache(work / "empty", TAG)
            empty.check(create=True)
            look_empty = functools.partial(chunkwise.status, fileset, empty, split=SPLIT)
            t_empty = best(look_empty, args.repeat)
            half = ChunkCache(work / "half", TAG)
            half.check(create=True)
            entries, records = fill_half(half, chunks)
            t0 = time.perf_counter()  # no index yet: every record is read, and indexed
            report = chunkwise.status(fileset, half, split=SPLIT)
            t_cold = time.perf_counter() - t0
            assert report.overall.files_failed == records, report
            t_half = best(
                functools.partial(chunkwise.status, fileset, half, split=SPLIT), args.repeat
            )
            print(
                f"{n:>10,} {len(chunks):>7,} {base:>12.3f} {t_empty:>8.3f} "
                f"{t_empty / base:>5.1f}x {t_half:>7.3f} {t_half / base:>5.1f}x "
                f"{t_cold:>7.3f} {t_cold / base:>5.1f}x {entries:>8,} {records:>8,}"
            )
            if args.before and before_row is None:
                status = old_status(args.before)
                t_old = best(functools.partial(status, fileset, empty, split=SPLIT), 1)
                before_row = (n, base, t_old, t_empty)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        del fileset, chunks
    if before_row is not None:
        n, base, t_old, t_new = before_row
        print(
            f"\nempty cache, {n:,} files: status at {args.before} {t_old:.3f} s "
            f"({t_old / base:.0f}x split+hash), now {t_new:.3f} s ({t_new / base:.1f}x): "
            f"{t_old / t_new:.0f}x faster"
        )


def count_requests(n: int) -> None:
    """Requests of one status on a half-full root:// cache of ``n`` files, as the server logs
    them: with the index a run leaves, and without any index."""
    import pwd

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from xrootd_server import XRootDServer, export_dir, make_readable, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        print(f"\nroot:// requests: skipped ({reason})")
        return
    key = b"a group key of 32 bytes, for benches"
    fileset = make_fileset(n, 100)
    chunks = make_chunks(fileset, SPLIT)
    export = export_dir()
    try:
        disk = ChunkCache(export / "cache", TAG, key=key)
        disk.check(create=True)
        entries, records = fill_half(disk, chunks)
        salvaged = {
            name: disk.load_salvage(name[: -len(".salvage.json")]).bad_files
            for name in os.listdir(disk.directory)
            if name.endswith(".salvage.json")
        }
        nobody = pwd.getpwnam("nobody")
        for path in [export / "cache", disk.directory, *Path(disk.directory).iterdir()]:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        make_readable(export)
        with XRootDServer(export, trace=True) as server:
            url = server.url(export / "cache")
            # What a run leaves: its records in the index, as the engine writes it at the end,
            # over root:// (the sizes and times the server shows).
            remote = ChunkCache(url, TAG, key=key)
            written = {}
            for name, bad in salvaged.items():
                stat = remote.stat(remote.directory / name)
                written[name] = IndexedRecord(stat.size, stat.mtime, bad)
            remote.update_index({}, written)

            def asked() -> int:
                before = len(server.requests())
                report = chunkwise.status(fileset, url, tag=TAG, cache_key=key, split=SPLIT)
                assert report.overall.files_failed == records
                time.sleep(0.5)  # the daemon logs as it answers
                return len(server.requests()) - before

            with_index = asked()
            os.unlink(disk.index_path)
            without = asked()
        target = len(chunks) // 100
        print(
            f"\nroot:// cache, {n:,} files, {len(chunks):,} chunks ({entries:,} entries, "
            f"{records:,} salvage records): status made {with_index} requests with the index "
            f"a run leaves (target: at most {target} + a constant), {without} without it"
        )
    finally:
        shutil.rmtree(export, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[20_000, 200_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--before", metavar="REV", help="also time the status of this revision")
    ap.add_argument("--dir", default=None, help="where to make the caches (default: a temp dir)")
    ap.add_argument("--xrootd", type=int, metavar="N", help="count root:// requests for N files")
    args = ap.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    if args.sizes:
        time_sizes(args)
    if args.xrootd:
        count_requests(args.xrootd)


if __name__ == "__main__":
    main()
