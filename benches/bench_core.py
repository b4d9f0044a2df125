"""Benchmark chunkwise's Rust core against coffea 2026.9.0 and against the physical floor.

Builds a synthetic fileset (default: 1M files in 100 datasets, CMS-like ~190-character
``root://`` paths, small metadata) and, in one run, times:

- ``hash_fileset`` of the whole fileset: coffea, chunkwise, and the floor, which is hashlib's
  SHA-256 of the same canonical bytes, built beforehand;
- ``split_fileset(strategy="by_dataset", percentage=1)`` and ``split_fileset(percentage=5)``;
- hashing the 10,000 chunks of the by_dataset/percentage=1 split: a loop of coffea's
  ``hash_fileset`` against one ``chunkwise.hash_filesets`` call;
- the peak RSS growth of ``hash_fileset`` (in a fresh subprocess per implementation).

It prints ratios, which is what to quote on a noisy 2-core machine.

Usage: ``python benches/bench_core.py [--files N] [--datasets D] [--repeat R]``
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import json
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--datasets", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--coffea-repeat", type=int, default=1)
    ap.add_argument("--no-rss", action="store_true")
    args = ap.parse_args()

    from coffea.dataset_tools import hash_fileset, split_fileset

    import chunkwise

    fs = make_fileset(args.files, args.datasets)
    doc = canonical_bytes(fs)
    assert hashlib.sha256(doc).hexdigest() == hash_fileset(fs) == chunkwise.hash_fileset(fs)
    print(
        f"fileset: {args.files:,} files in {args.datasets} datasets, "
        f"canonical JSON {len(doc) / 1e6:.0f} MB\n"
    )

    rows = []

    def row(work, coffea_s, ours_s, floor_s=None, target=""):
        rows.append((work, coffea_s, ours_s, floor_s, target))

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
    row(f"hash_filesets({len(chunks):,} chunks) vs coffea loop", t_c, t_o, target=">= 5x coffea")
    t_loop = best(lambda: [chunkwise.hash_fileset(c) for c in chunks], args.repeat)
    row("  (chunkwise.hash_fileset loop, for reference)", t_c, t_loop)

    print(f"{'work':<50} {'coffea':>9} {'chunkwise':>10} {'speed-up':>9} {'vs floor':>9}  target")
    for work, c, o, fl, target in rows:
        vs_floor = f"{o / fl:8.2f}x" if fl else ""
        print(f"{work:<50} {c:8.3f}s {o:9.3f}s {c / o:8.1f}x {vs_floor:>9}  {target}")
    if fl := rows[0][3]:
        print(f"{'sha256 floor (hashlib over the prebuilt bytes)':<50} {'':>9} {fl:9.3f}s")

    if not args.no_rss:
        del chunks, fs
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
