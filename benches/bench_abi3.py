"""A/B of two builds of chunkwise's core in one process: a version-specific build against an
abi3 (stable ABI) build, on the workloads of ``bench_core.py``.

Both extension modules are loaded side by side (each ``.so`` has its own statics, so PyO3's
one-initialisation rule holds for each), and every row times A and B in turn, ``--pairs``
times, on the same Python objects. It prints each row's median B/A ratio and its min and max
over the pairs, which is what to quote on a noisy 2-core machine.

Usage::

    python benches/bench_abi3.py A.so B.so [--files N] [--pre-files N] [--pairs P]

where ``A.so`` and ``B.so`` are ``chunkwise/_core.*.so`` taken from the two wheels (for example
``maturin build --release`` and ``maturin build --release --features pyo3/abi3-py310``).
Each wheel's own outputs are checked equal before anything is timed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_core import make_fileset, make_preprocessed, timed  # noqa: E402


def load(path: str, alias: str):
    """Load the extension module at ``path`` (its init function is ``PyInit__core``)."""
    spec = importlib.util.spec_from_file_location("chunkwise._core", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[alias] = module
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="the version-specific _core .so")
    ap.add_argument("b", help="the abi3 _core .so")
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--pre-files", type=int, default=500_000)
    ap.add_argument("--datasets", type=int, default=100)
    ap.add_argument("--pairs", type=int, default=5)
    args = ap.parse_args()

    a, b = load(args.a, "_core_a"), load(args.b, "_core_b")
    fs = make_fileset(args.files, args.datasets)
    pre = make_preprocessed(args.pre_files, args.datasets)
    chunks = a.split_fileset(fs, strategy="by_dataset", percentage=1)
    pre_chunks = a.split_fileset(pre, strategy="by_dataset", percentage=1)
    n = sum(len(d["files"]) for d in pre.values())
    mean = sum(f["num_entries"] for d in pre.values() for f in d["files"].values()) / n
    events = int(mean * 100)

    rows = [
        ("hash_fileset", lambda m: m.hash_fileset(fs)),
        (
            "split_fileset(by_dataset, percentage=1)",
            lambda m: m.split_fileset(fs, strategy="by_dataset", percentage=1),
        ),
        ("split_fileset(percentage=5)", lambda m: m.split_fileset(fs, percentage=5)),
        (f"hash_filesets({len(chunks):,} chunks)", lambda m: m.hash_filesets(chunks)),
        (
            "split(by_dataset, files_per_chunk=100), preprocessed",
            lambda m: m.split_fileset(pre, strategy="by_dataset", files_per_chunk=100),
        ),
        (
            f"split(by_dataset, events_per_chunk={events:,})",
            lambda m: m.split_fileset(pre, strategy="by_dataset", events_per_chunk=events),
        ),
        ("hash_fileset, preprocessed", lambda m: m.hash_fileset(pre)),
        (
            f"hash_filesets({len(pre_chunks):,} chunks), preprocessed",
            lambda m: m.hash_filesets(pre_chunks),
        ),
    ]
    print(
        f"Python {sys.version.split()[0]}; plain fileset {args.files:,} files, preprocessed "
        f"{args.pre_files:,}; {args.pairs} A/B pairs per row; cores: "
        f"{len(os.sched_getaffinity(0))}"
    )
    print(f"A = {os.path.basename(args.a)}\nB = {os.path.basename(args.b)}\n")
    print(
        f"| {'work':<54} | {'A median s':>10} | {'B median s':>10} | {'B/A median':>10} | "
        f"{'B/A min':>7} | {'B/A max':>7} |"
    )
    print(f"|{'-' * 56}|{'-' * 11}:|{'-' * 11}:|{'-' * 11}:|{'-' * 8}:|{'-' * 8}:|")
    worst = 0.0
    for name, fn in rows:
        assert fn(a) == fn(b), f"{name}: the two builds disagree"
        ta, tb, ratio = [], [], []
        for _ in range(args.pairs):
            x, y = timed(lambda f=fn: f(a)), timed(lambda f=fn: f(b))
            ta.append(x)
            tb.append(y)
            ratio.append(y / x)
        med = statistics.median(ratio)
        worst = max(worst, med)
        print(
            f"| {name:<54} | {statistics.median(ta):10.3f} | {statistics.median(tb):10.3f} | "
            f"{med:10.3f} | {min(ratio):7.3f} | {max(ratio):7.3f} |"
        )
    verdict = "within" if worst <= 1.03 else "NOT within"
    print(f"\nworst median B/A: {worst:.3f} ({verdict} 3 % on every row)")


if __name__ == "__main__":
    main()
