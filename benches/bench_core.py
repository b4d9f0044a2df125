"""Benchmark chunkwise's Rust core against coffea 2026.9.0 and against the physical floor.

Builds a synthetic fileset (default: 1M files in 100 datasets, CMS-like ~190-character
``root://`` paths, small metadata) and, in one run, times:

- ``hash_fileset`` of the whole fileset: coffea, chunkwise, and the floor, which is hashlib's
  SHA-256 of the same canonical bytes, built beforehand;
- ``split_fileset(strategy="by_dataset", percentage=1)`` and ``split_fileset(percentage=5)``;
- hashing the 10,000 chunks of the by_dataset/percentage=1 split: a loop of coffea's
  ``hash_fileset`` against one ``chunkwise.hash_filesets`` call;
- ``split_fileset(..., events_per_chunk=N)`` against ``files_per_chunk`` on a preprocessed
  fileset (default 1M files; ``num_entries`` per file, as coffea's ``preprocess`` writes);
- ``hash_fileset`` and ``hash_filesets`` of a preprocessed fileset (default 500k files) against
  coffea and its SHA-256 floor;
- the peak RSS growth of ``hash_fileset`` (in a fresh subprocess per implementation);
- ``split_fileset(..., stable=True)`` against the positional split it replaces, on 1M files
  (files) and on the preprocessed fileset (events), then, on 10,000 CMS-like paths of one
  dataset at 50 files per chunk, how many chunk hashes survive growth (0.1 %, 1 %, 10 % new
  files at random sorted positions) for positional and stable splitting against the ideal, and
  the stable chunk-size distribution.

It prints ratios, which is what to quote on a noisy 2-core machine.

Usage: ``python benches/bench_core.py [--files N] [--datasets D] [--repeat R]
[--only plain,events,preprocessed,stable] [--growth-trials T]``
"""

from __future__ import annotations

import argparse
import bisect
import functools
import gc
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import time


def make_fileset(n_files: int, n_datasets: int, seed: int = 2026) -> dict:
    rng = random.Random(seed)
    per = n_files // n_datasets
    fileset = {}
    for d in range(n_datasets):
        sample = f"GluGluHToWWTo2L2Nu_M125_TuneCP5_13TeV_powheg2_JHUGenV714_pythia8_{d:03d}"
        base = (
            "root://cmsxrootd.fnal.gov//store/mc/RunIISummer20UL16NanoAODv9/"
            f"{sample}/NANOAODSIM/106X_mcRun2_asymptotic_v17-v2/"
        )
        files = {}
        for _ in range(per):
            u = rng.getrandbits(128)
            h = f"{u:032X}"
            name = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
            files[f"{base}{rng.randrange(10000, 99999)}/{name}.root"] = "Events"
        fileset[f"Dataset_{d:03d}"] = {
            "files": files,
            "metadata": {"xsec": 1.0 + d, "is_mc": True, "year": 2016},
        }
    return fileset


def make_preprocessed(n_files: int, n_datasets: int, seed: int = 2027) -> dict:
    """The same kind of fileset after coffea's ``preprocess``: a dict per file with
    ``object_path``, ``steps``, ``num_entries`` (1k-200k events) and ``uuid``."""
    rng = random.Random(seed)
    fileset = make_fileset(n_files, n_datasets, seed)
    for data in fileset.values():
        files = {}
        for path in data["files"]:
            n = rng.randrange(1_000, 200_000)
            step = 100_000
            files[path] = {
                "object_path": "Events",
                "steps": [[s, min(s + step, n)] for s in range(0, n, step)],
                "num_entries": n,
                "uuid": f"{rng.getrandbits(128):032x}",
            }
        data["files"] = files
    return fileset


def timed(fn) -> float:
    """Seconds one call of ``fn`` takes, after a garbage collection."""
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def canonical_bytes(fileset: dict) -> bytes:
    """The canonical document, built independently of both implementations."""
    doc = {}
    for name in sorted(fileset):
        data = fileset[name]
        doc[name] = {"files": sorted(data["files"].items()), "metadata": data["metadata"]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


RSS_CHILD = """
import gc, sys
sys.path.insert(0, {benches!r})
from bench_core import make_fileset
import chunkwise, coffea.dataset_tools  # both imported, so that only the call differs
fn = coffea.dataset_tools.hash_fileset if {which!r} == "coffea" else chunkwise.hash_fileset
fs = make_fileset({n}, {d})
fn({{"warm": {{"files": {{"a": "Events"}}, "metadata": {{}}}}}})
gc.collect()

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

# Reset the peak RSS (VmHWM) to the current RSS, then see how far the call raises it.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmHWM:")
fn(fs)
print((status("VmHWM:") - before) / 1024)
"""


def rss_growth_mb(which: str, n: int, d: int) -> float:
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    code = RSS_CHILD.format(benches=here, n=n, d=d, which=which)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def print_rows(rows) -> None:
    print(f"{'work':<52} {'coffea':>9} {'chunkwise':>10} {'speed-up':>9} {'vs floor':>9}  target")
    for work, c, o, fl, target in rows:
        vs_floor = f"{o / fl:8.2f}x" if fl else ""
        coffea = f"{c:8.3f}s" if c is not None else f"{'-':>9}"
        speed = f"{c / o:8.1f}x" if c is not None else f"{'':>9}"
        print(f"{work:<52} {coffea} {o:9.3f}s {speed} {vs_floor:>9}  {target}")
        if fl:
            print(f"{'  (sha256 floor: hashlib over the prebuilt bytes)':<52} {'':>9} {fl:9.3f}s")


def bench_plain(args, rows) -> None:
    from coffea.dataset_tools import hash_fileset, split_fileset

    import chunkwise

    def row(work, coffea_s, ours_s, floor_s=None, target=""):
        rows.append((work, coffea_s, ours_s, floor_s, target))

    fs = make_fileset(args.files, args.datasets)
    doc = canonical_bytes(fs)
    assert hashlib.sha256(doc).hexdigest() == hash_fileset(fs) == chunkwise.hash_fileset(fs)
    print(
        f"plain fileset: {args.files:,} files in {args.datasets} datasets, "
        f"canonical JSON {len(doc) / 1e6:.0f} MB"
    )

    floor = best(functools.partial(hashlib.sha256, doc), args.repeat)
    del doc
    t_c = best(lambda: hash_fileset(fs), args.coffea_repeat)
    t_o = best(lambda: chunkwise.hash_fileset(fs), args.repeat)
    row("hash_fileset", t_c, t_o, floor, "<= 1.5x floor")

    chunks = split_fileset(fs, strategy="by_dataset", percentage=1)
    assert chunks == chunkwise.split_fileset(fs, strategy="by_dataset", percentage=1)
    t_c = best(lambda: split_fileset(fs, strategy="by_dataset", percentage=1), args.coffea_repeat)
    t_o = best(
        lambda: chunkwise.split_fileset(fs, strategy="by_dataset", percentage=1), args.repeat
    )
    row("split_fileset(by_dataset, percentage=1)", t_c, t_o, target=">= 80x coffea")

    t_c = best(lambda: split_fileset(fs, percentage=5), args.coffea_repeat)
    t_o = best(lambda: chunkwise.split_fileset(fs, percentage=5), args.repeat)
    row("split_fileset(percentage=5)", t_c, t_o, target=">= 25x coffea")

    ref = [hash_fileset(c) for c in chunks]
    assert chunkwise.hash_filesets(chunks) == ref
    t_c = best(lambda: [hash_fileset(c) for c in chunks], args.coffea_repeat)
    t_o = best(lambda: chunkwise.hash_filesets(chunks), args.repeat)
    row(f"hash_filesets({len(chunks):,} chunks) vs coffea loop", t_c, t_o, target=">= 10x coffea")
    t_loop = best(lambda: [chunkwise.hash_fileset(c) for c in chunks], args.repeat)
    row("  (chunkwise.hash_fileset loop, for reference)", t_c, t_loop)


def bench_events(args, rows) -> None:
    """events_per_chunk against files_per_chunk, on the same preprocessed fileset."""
    import chunkwise

    fs = make_preprocessed(args.events_files, args.datasets)
    n_files = sum(len(d["files"]) for d in fs.values())
    mean = sum(f["num_entries"] for d in fs.values() for f in d["files"].values()) / n_files
    print(f"preprocessed fileset: {n_files:,} files in {args.datasets} datasets (for events)")
    per = 100
    events = int(mean * per)
    by_files = chunkwise.split_fileset(fs, strategy="by_dataset", files_per_chunk=per)
    by_events = chunkwise.split_fileset(fs, strategy="by_dataset", events_per_chunk=events)
    t_f = best(
        lambda: chunkwise.split_fileset(fs, strategy="by_dataset", files_per_chunk=per),
        args.repeat,
    )
    t_e = best(
        lambda: chunkwise.split_fileset(fs, strategy="by_dataset", events_per_chunk=events),
        args.repeat,
    )
    rows.append(
        (f"split(by_dataset, files_per_chunk={per}): {len(by_files):,} chunks", None, t_f, None, "")
    )
    rows.append(
        (
            f"split(by_dataset, events_per_chunk={events:,}): {len(by_events):,}",
            None,
            t_e,
            None,
            f"<= 2x files_per_chunk: {t_e / t_f:.2f}x",
        )
    )
    t_f = best(lambda: chunkwise.split_fileset(fs, files_per_chunk=per), args.repeat)
    t_e = best(lambda: chunkwise.split_fileset(fs, events_per_chunk=events), args.repeat)
    rows.append((f"split(files_per_chunk={per}), mixed", None, t_f, None, ""))
    rows.append(
        (
            f"split(events_per_chunk={events:,}), mixed",
            None,
            t_e,
            None,
            f"<= 2x files_per_chunk: {t_e / t_f:.2f}x",
        )
    )


def bench_preprocessed(args, rows) -> None:
    """hash_fileset and hash_filesets of a preprocessed fileset."""
    from coffea.dataset_tools import hash_fileset, split_fileset

    import chunkwise

    fs = make_preprocessed(args.pre_files, args.datasets)
    doc = json.dumps(
        {
            n: {"files": sorted(d["files"].items()), "metadata": d["metadata"]}
            for n, d in fs.items()
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    assert hashlib.sha256(doc).hexdigest() == hash_fileset(fs) == chunkwise.hash_fileset(fs)
    print(
        f"preprocessed fileset: {args.pre_files:,} files in {args.datasets} datasets, "
        f"canonical JSON {len(doc) / 1e6:.0f} MB"
    )
    floor = best(functools.partial(hashlib.sha256, doc), args.repeat)
    del doc
    t_c = best(lambda: hash_fileset(fs), args.coffea_repeat)
    t_o = best(lambda: chunkwise.hash_fileset(fs), args.repeat)
    rows.append(("hash_fileset, preprocessed", t_c, t_o, floor, ">= 10x coffea, <= 1.5x floor"))
    chunks = split_fileset(fs, strategy="by_dataset", percentage=1)
    assert chunkwise.hash_filesets(chunks) == [hash_fileset(c) for c in chunks]
    t_c = best(lambda: [hash_fileset(c) for c in chunks], args.coffea_repeat)
    t_o = best(lambda: chunkwise.hash_filesets(chunks), args.repeat)
    rows.append(
        (f"hash_filesets({len(chunks):,} chunks), preprocessed", t_c, t_o, None, ">= 10x coffea")
    )


def cms_paths(rng: random.Random, n: int) -> list[str]:
    """``n`` CMS-like paths of one dataset (random UUID names in 1,000 block directories)."""
    base = (
        "root://cmsxrootd.fnal.gov//store/mc/RunIISummer20UL16NanoAODv9/"
        "DYJetsToLL_M-50_TuneCP5_13TeV-amcatnloFXFX-pythia8/NANOAODSIM/"
        "106X_mcRun2_asymptotic_v17-v1/"
    )
    out = []
    for _ in range(n):
        h = f"{rng.getrandbits(128):032X}"
        name = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        out.append(f"{base}{rng.randrange(10000, 11000)}/{name}.root")
    return out


def bench_stable(args, rows) -> None:
    """stable=True against the positional split: speed, growth, chunk sizes."""
    per = 50
    _stable_files_speed(args, rows, per)
    _stable_events_speed(args, rows, per)
    _stable_growth(args, per)


def ab_pairs(a, b, n: int) -> tuple[float, float, float]:
    """``n`` interleaved timings of ``a`` then ``b``: the best of each, and the median of the
    ratios b/a, which another job on the machine disturbs far less than either time."""
    import statistics

    ta, tb, ratios = [], [], []
    for _ in range(n):
        x, y = timed(a), timed(b)
        ta.append(x)
        tb.append(y)
        ratios.append(y / x)
    return min(ta), min(tb), statistics.median(ratios)


def _stable_files_speed(args, rows, per: int) -> None:
    import chunkwise

    fs = make_fileset(args.files, args.datasets)
    n_p = len(chunkwise.split_fileset(fs, strategy="by_dataset", files_per_chunk=per))
    n_s = len(chunkwise.split_fileset(fs, files_per_chunk=per, stable=True))
    t_p, t_s, ratio = ab_pairs(
        lambda: chunkwise.split_fileset(fs, strategy="by_dataset", files_per_chunk=per),
        lambda: chunkwise.split_fileset(fs, files_per_chunk=per, stable=True),
        3 * args.repeat,
    )
    rows.append((f"split(by_dataset, files_per_chunk={per}): {n_p:,} chunks", None, t_p, None, ""))
    rows.append(
        (
            f"split(files_per_chunk={per}, stable=True): {n_s:,}",
            None,
            t_s,
            None,
            f"<= 1.2x files_per_chunk: {ratio:.2f}x (median of {3 * args.repeat} pairs)",
        )
    )


def _stable_events_speed(args, rows, per: int) -> None:
    import chunkwise

    pre = make_preprocessed(args.events_files, args.datasets)
    n_files = sum(len(d["files"]) for d in pre.values())
    mean = sum(f["num_entries"] for d in pre.values() for f in d["files"].values()) / n_files
    events = int(mean * per)
    t_e, t_es, ratio = ab_pairs(
        lambda: chunkwise.split_fileset(pre, strategy="by_dataset", events_per_chunk=events),
        lambda: chunkwise.split_fileset(pre, events_per_chunk=events, stable=True),
        3 * args.repeat,
    )
    rows.append((f"split(by_dataset, events_per_chunk={events:,})", None, t_e, None, ""))
    rows.append(
        (
            f"split(events_per_chunk={events:,}, stable=True)",
            None,
            t_es,
            None,
            f"vs events_per_chunk: {ratio:.2f}x (median of {3 * args.repeat} pairs)",
        )
    )


def _stable_growth(args, per: int) -> None:
    import statistics

    import chunkwise

    # Growth: 10,000 CMS-like paths, 50 files per chunk, new files at random sorted positions.
    n, trials = 10_000, args.growth_trials
    print(
        f"\ngrowth: {n:,} CMS-like paths in one dataset, {per} files per chunk; fraction of the "
        f"old chunk hashes kept, mean of {trials} trials"
    )
    print(
        f"{'added':>12} {'positional':>11} {'stable':>8} {'ideal':>8} {'stable/ideal':>13} "
        f"{'ideal (stable chunks)':>22}"
    )

    def hashes(paths, **kwargs):
        fileset = {"DY": {"files": dict.fromkeys(paths, "Events"), "metadata": {"xsec": 6077.2}}}
        chunks = chunkwise.split_fileset(fileset, files_per_chunk=per, **kwargs)
        return chunks, chunkwise.hash_filesets(chunks)

    def untouched(chunks, new) -> float:
        """The fraction of ``chunks`` that no new file falls in (sorted order)."""
        new = sorted(new)
        kept = 0
        for c in chunks:
            files = list(c["DY"]["files"])
            lo, hi = files[0], files[-1]
            i = bisect.bisect_left(new, lo)
            kept += i == len(new) or new[i] > hi
        return kept / len(chunks)

    sizes: list[int] = []
    for frac in (0.001, 0.01, 0.1):
        got = {"positional": [], "stable": [], "ideal": [], "ideal_stable": []}
        for trial in range(trials):
            rng = random.Random(1000 * trial + int(frac * 1000))
            base = cms_paths(rng, n)
            new = cms_paths(rng, int(n * frac))
            for name, kwargs in (
                ("positional", {"strategy": "by_dataset"}),
                ("stable", {"stable": True}),
            ):
                old_chunks, old = hashes(base, **kwargs)
                _, grown = hashes(base + new, **kwargs)
                got[name].append(len(set(old) & set(grown)) / len(old))
                ideal = "ideal" if name == "positional" else "ideal_stable"
                got[ideal].append(untouched(old_chunks, new))
                if name == "stable" and frac == 0.001:
                    sizes += [len(c["DY"]["files"]) for c in old_chunks[:-1]]
        m = {k: statistics.mean(v) for k, v in got.items()}
        print(
            f"{len(new):>6} ({frac:>5.1%}) {m['positional']:>10.1%} {m['stable']:>8.1%} "
            f"{m['ideal']:>8.1%} {m['stable'] / m['ideal']:>12.2f}x {m['ideal_stable']:>21.1%}"
        )
    sizes.sort()
    print(
        f"stable chunk sizes (files_per_chunk={per}; {len(sizes):,} chunks of {trials} datasets, "
        f"each dataset's last left out): min {sizes[0]}, p1 {sizes[len(sizes) // 100]}, "
        f"median {sizes[len(sizes) // 2]}, mean {statistics.mean(sizes):.1f}, "
        f"p99 {sizes[int(0.99 * len(sizes))]}, max {sizes[-1]}  (bounds: {per // 4} to {4 * per})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--datasets", type=int, default=100)
    ap.add_argument("--events-files", type=int, default=1_000_000)
    ap.add_argument("--pre-files", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--coffea-repeat", type=int, default=1)
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--growth-trials", type=int, default=20)
    ap.add_argument(
        "--only",
        default="plain,events,preprocessed,stable",
        help="comma-separated sections: plain, events, preprocessed, stable",
    )
    args = ap.parse_args()
    only = set(args.only.split(","))

    rows: list = []
    if "plain" in only:
        bench_plain(args, rows)
    if "events" in only:
        bench_events(args, rows)
    if "preprocessed" in only:
        bench_preprocessed(args, rows)
    if "stable" in only:
        bench_stable(args, rows)
    print()
    print_rows(rows)
    print(f"(cores available: {len(os.sched_getaffinity(0))})")

    if not args.no_rss and "plain" in only:
        rc = rss_growth_mb("coffea", args.files, args.datasets)
        ro = rss_growth_mb("chunkwise", args.files, args.datasets)
        print(
            f"\npeak RSS growth of hash_fileset: coffea +{rc:.0f} MB, chunkwise +{ro:.0f} MB "
            f"(target <= 40 MB)"
        )
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nmax RSS of this process: {max_rss:.0f} MB")


if __name__ == "__main__":
    main()
