"""Benchmark chunkwise.run against the loop a physicist writes by hand.

1. Overhead: ~20 chunks of synthetic NanoAOD-like files, each run through a coffea Runner.
   The baseline is a bare loop of Runner calls that merges the outputs; chunkwise.run does the
   same work plus hashing, cache writes (fsync included) and bookkeeping. Target: <= 5%.
2. A fully cached rerun of 1,000 chunks: split, hash, verify, unpickle and merge every entry.
   Target: <= 2 s.

Run: ``python benches/bench_run.py [--chunks 20] [--events 200000] [--cached 1000]``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore")

import chunkwise  # noqa: E402
from chunkwise.cache import ChunkCache  # noqa: E402
from chunkwise.examples import METProcessor, write_nanoaod_like  # noqa: E402
from chunkwise.tag import cache_tag  # noqa: E402


@contextlib.contextmanager
def quiet_bars() -> Iterator[None]:
    """coffea's IterativeExecutor draws bars even with status=False; rendering them costs
    about 10 ms a call, which the baseline loop should not pay."""
    from coffea.util import coffea_console

    before = coffea_console.quiet
    coffea_console.quiet = True
    try:
        yield
    finally:
        coffea_console.quiet = before


def make_runner() -> Any:
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    return processor.Runner(
        executor=processor.IterativeExecutor(status=False, retries=0),
        schema=NanoAODSchema,
        skipbadfiles=True,
        use_result_type=True,
    )


def bare_loop(chunks: list[dict[str, Any]], runner: Any) -> Any:
    """The notebook's loop without the cache: run each chunk, merge the Ok outputs."""
    from coffea.processor import accumulate

    total = None
    with quiet_bars():
        for chunk in chunks:
            result = runner(chunk, processor_instance=METProcessor())
            if result.is_ok():
                out = result.unwrap()
                total = out if total is None else accumulate([out], total)
    return total


def bench_overhead(n_chunks: int, n_events: int, repeats: int, workdir: Path) -> list[tuple]:
    files = workdir / "files"
    files.mkdir()
    fileset = {
        "A": {
            "files": {
                str(write_nanoaod_like(files / f"f{i}.root", n_events, seed=i)): "Events"
                for i in range(n_chunks)
            }
        }
    }
    chunks = chunkwise.split_fileset(fileset, files_per_chunk=1)
    runner = make_runner()
    bare_loop(chunks, runner)  # warm up: imports, uproot, the metadata cache

    timings: dict[str, list[float]] = {"bare": [], "nocache": [], "cache": []}
    for i in range(repeats):
        start = time.perf_counter()
        bare_loop(chunks, runner)
        timings["bare"].append(time.perf_counter() - start)

        start = time.perf_counter()
        chunkwise.run(chunks, METProcessor(), runner, progress=False)
        timings["nocache"].append(time.perf_counter() - start)

        start = time.perf_counter()
        report = chunkwise.run(
            chunks, METProcessor(), runner, cache=workdir / f"cache{i}", progress=False
        )
        timings["cache"].append(time.perf_counter() - start)
        assert report.n_processed == n_chunks, report.summary()

    # This machine is shared, so single runs vary by several percent: report the median and
    # the minimum (the least disturbed run) of runs taken in turn.
    base_median = statistics.median(timings["bare"])
    base_min = min(timings["bare"])
    rows = [("bare loop of Runner calls", base_median, 1.0, base_min, 1.0)]
    labels = (("nocache", "chunkwise.run, no cache"), ("cache", "chunkwise.run, cold cache"))
    for key, label in labels:
        median, least = statistics.median(timings[key]), min(timings[key])
        rows.append((label, median, median / base_median, least, least / base_min))
        per_chunk = (median - base_median) / n_chunks * 1e3
        print(f"{label}: {per_chunk:+.2f} ms per chunk over the bare loop (medians)")
    return rows


def bench_cached(n_chunks: int, repeats: int, workdir: Path) -> list[tuple]:
    # Entries are written directly (a real run of 1,000 chunks would take minutes): each holds
    # the real output of METProcessor on one file, as a processed chunk would.
    path = write_nanoaod_like(workdir / "one.root", 2000, seed=1)
    runner = make_runner()
    with quiet_bars():
        output = runner(
            {"A": {"files": {str(path): "Events"}}}, processor_instance=METProcessor()
        ).unwrap()
    fileset = {
        dataset: {
            "files": {f"/store/{dataset}/file{i}.root": "Events" for i in range(n_chunks // 2)}
        }
        for dataset in ("A", "B")
    }
    chunks = chunkwise.split_fileset(fileset, strategy="by_dataset", files_per_chunk=1)
    cache = ChunkCache(workdir / "cache1k", cache_tag(METProcessor(), runner))
    for chunk, digest in zip(chunks, chunkwise.hash_filesets(chunks), strict=True):
        cache.save(digest, output, {"events": {next(iter(chunk)): 2000}})

    rows = []
    for progress in (False, True):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            report = chunkwise.run(
                fileset,
                METProcessor(),
                runner,
                split=chunkwise.SplitOptions(strategy="by_dataset", files_per_chunk=1),
                cache=cache.root,
                progress=progress,
            )
            times.append(time.perf_counter() - start)
            assert report.n_cached == len(chunks) and report.n_processed == 0
        label = f"cached rerun, {len(chunks)} chunks, progress={progress}"
        rows.append((label, statistics.median(times), None, min(times), None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--cached", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "overhead").mkdir()
        (workdir / "cached").mkdir()
        rows = bench_overhead(args.chunks, args.events, args.repeats, workdir / "overhead")
        rows += bench_cached(args.cached, max(args.repeats // 2, 2), workdir / "cached")

    print(f"\n{args.chunks} chunks x {args.events:,} events; {args.repeats} runs each\n")
    print(f"| {'case':<44} | {'median s':>8} | {'ratio':>6} | {'min s':>7} | {'ratio':>6} |")
    print(f"|{'-' * 46}|{'-' * 9}:|{'-' * 7}:|{'-' * 8}:|{'-' * 7}:|")
    for label, median, ratio, least, least_ratio in rows:
        r1 = f"{ratio:.3f}" if ratio is not None else "-"
        r2 = f"{least_ratio:.3f}" if least_ratio is not None else "-"
        print(f"| {label:<44} | {median:8.3f} | {r1:>6} | {least:7.3f} | {r2:>6} |")
    overhead = max(r[2] for r in rows if r[2] is not None) - 1
    cached = max(r[1] for r in rows if r[2] is None)
    print(
        f"\noverhead {overhead:+.1%} by medians (target <= 5%); "
        f"cached rerun {cached:.2f} s (target <= 2 s)"
    )


if __name__ == "__main__":
    main()
