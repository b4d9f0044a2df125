"""How chunkwise's core scales from 1M to 10M files (chunkwise only: coffea would take minutes).

For each size it builds the synthetic fileset of ``bench_core.py`` (100 datasets, CMS-like
paths) and prints the time per file of ``hash_fileset``, ``split_fileset(files_per_chunk=50)``
and ``split_fileset(strategy="by_dataset", percentage=1)``, and the peak RSS growth of
``hash_fileset``. Time per file that stays flat (n log n with a small log factor) and memory
growth that stays proportional to n mean the core scales.

Usage: ``python benches/bench_scaling.py [--sizes 1000000 10000000]``
"""

from __future__ import annotations

import argparse
import gc

from bench_core import make_fileset, timed

import chunkwise


def vm(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    raise KeyError(key)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    args = ap.parse_args()
    print(
        f"{'files':>12} {'hash s':>8} {'ns/file':>8} {'split/50 s':>11} {'ns/file':>8} "
        f"{'by_ds,1% s':>11} {'ns/file':>8} {'hash RSS +MB':>13}"
    )
    for n in args.sizes:
        fs = make_fileset(n, 100)
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = vm("VmHWM:")
        t_hash = timed(lambda fs=fs: chunkwise.hash_fileset(fs))
        rss = (vm("VmHWM:") - before) / 1024
        t_hash = min(t_hash, timed(lambda fs=fs: chunkwise.hash_fileset(fs)))
        t_fpc = timed(lambda fs=fs: chunkwise.split_fileset(fs, files_per_chunk=50))
        t_bd = timed(lambda fs=fs: chunkwise.split_fileset(fs, strategy="by_dataset", percentage=1))
        print(
            f"{n:>12,} {t_hash:8.3f} {t_hash / n * 1e9:8.0f} {t_fpc:11.3f} {t_fpc / n * 1e9:8.0f} "
            f"{t_bd:11.3f} {t_bd / n * 1e9:8.0f} {rss:13.0f}",
            flush=True,
        )
        del fs
        gc.collect()


if __name__ == "__main__":
    main()
