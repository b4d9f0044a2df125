"""Benchmark the throughput of chunkwise.run against one plain coffea Runner call.

What it measures
----------------
The same fileset (by default 64 synthetic NanoAOD-like files of 20,000 events, in two datasets
of 32 files, ``DYJets`` and ``TTbar``) is processed with ``chunkwise.examples.METProcessor`` on
the same executor, once per case:

- ``plain Runner call``: one ``coffea.processor.Runner`` call over all files, the baseline (a
  ratio of 1.00 by construction);
- ``chunkwise.run, no cache`` and ``chunkwise.run, cold cache`` with 1, 4, 16 and 64 chunks.
  The chunk counts come from ``files_per_chunk`` with ``strategy=None`` (the i-th bin of every
  dataset goes in the i-th chunk: 32, 8 and 2 files per chunk give 1, 4 and 16 chunks) and,
  for 64 chunks, ``strategy="by_dataset", files_per_chunk=1``. "Cold cache" is a fresh, empty
  cache directory for every repetition, so every chunk is run and written.
- chunkwise.run reads each file's generator weights (its ``Runs`` tree) by default, which the
  plain call does not: ``--no-weights-rows`` adds a ``weights=False`` row with no cache per chunk
  count, the engine alone, so that both costs are measured in the same run.

Executors: ``FuturesExecutor(workers=2)``, ``DaskExecutor`` on a ``LocalCluster`` of two
single-threaded worker processes, and (``--executors slurm``) ``DaskExecutor`` on a
dask-jobqueue ``SLURMCluster`` of two single-core worker jobs, on the Slurm ``SLURM_CONF``
names or else on the tests' single-node Slurm, started for the run (``--executors`` picks
them). Every FuturesExecutor call makes its own process pool; a plain Runner call pays that
once, and chunkwise.run pays it however often it calls the executor. That is the real cost of
the engine's design, so it is kept.

Before timing, each executor runs one untimed plain call (worker start-up, imports, the OS page
cache). Each timed call gets a Runner with a fresh, empty metadata cache (``--metadata-cache
fresh``, the default), so every call pays coffea's preprocessing as the first run of an analysis
does; ``--metadata-cache shared`` uses coffea's process-wide cache instead, which the warm-up
fills, so that no timed call preprocesses. The repetitions alternate: each repetition runs every
case of every executor once, in turn, so that drift on this shared machine hits all cases alike.

Every output is checked against the plain call's: the same ``cutflow["all events"]`` (the
number of files times the events per file) and the same MET histogram bin counts per dataset
(``numpy.allclose``; only the order of float summation may differ). A mismatch prints what
differs and exits with status 1.

How to read it
--------------
The table has, per executor and case, the median and the minimum (the least disturbed run)
wall time over the repetitions, each divided by the plain call's median (and minimum) on the
same executor. The ``target`` column grades each chunkwise.run row by its median ratio:
<= 1.10 with no cache, <= 1.15 with a cold cache. A line per executor sums the grades up. The
targets are a measurement, not a test: the script exits 0 whatever they say, and 1 only on a
wrong output.

Run: ``python benches/bench_throughput.py [--files 64] [--events 20000] [--repeats 3]
[--executors futures,dask] [--no-weights-rows]``; ``--quick`` (8 files of 2,000 events, 1
repetition, chunk counts 1, 4 and 8) checks in seconds that it runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Keep the output readable. These filters also apply in worker processes that re-import this
# script (dask's spawned workers); PYTHONWARNINGS carries them to pools that do not (loky's).
_IGNORED = (
    ("Missing cross-reference", RuntimeWarning),
    ("Performed attempt", UserWarning),
    ("", DeprecationWarning),
)
for _message, _category in _IGNORED:
    warnings.filterwarnings("ignore", message=_message, category=_category)
os.environ["PYTHONWARNINGS"] = ",".join(
    filter(
        None,
        [os.environ.get("PYTHONWARNINGS", "")] + [f"ignore:{m}:{c.__name__}" for m, c in _IGNORED],
    )
)

import numpy as np  # noqa: E402

import chunkwise  # noqa: E402

DATASETS = ("DYJets", "TTbar")
TARGETS = {"nocache": 1.10, "cache": 1.15}


class Mismatch(Exception):
    """An output differs from the plain Runner call's."""


@dataclass
class Case:
    """One timed configuration on one executor."""

    executor: str
    kind: str  # "plain", "nocache" or "cache"
    strategy: str | None = None
    files_per_chunk: int | None = None
    n_chunks: int | None = None
    weights: bool = True
    times: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.kind == "plain":
            return "plain Runner call over all files"
        cache = "no cache" if self.kind == "nocache" else "cold cache"
        split = f"{self.strategy or 'mixed'}, {self.files_per_chunk}/chunk"
        weights = "" if self.weights else ", no weights"
        return f"chunkwise.run, {cache} ({split}{weights})"


def write_fileset(directory: Path, n_files: int, n_events: int) -> dict[str, Any]:
    """Write ``n_files`` files split evenly over the two datasets; deterministic seeds."""
    from chunkwise.examples import write_nanoaod_like

    per_dataset = n_files // len(DATASETS)
    fileset: dict[str, Any] = {}
    seed = 0
    for dataset in DATASETS:
        files = {}
        for i in range(per_dataset):
            seed += 1
            path = write_nanoaod_like(directory / f"{dataset}_{i:03d}.root", n_events, seed)
            files[str(path.resolve())] = "Events"
        fileset[dataset] = {"files": files}
    return fileset


def split_plans(per_dataset: int, quick: bool) -> list[tuple[int, str | None, int]]:
    """(intended chunks, strategy, files_per_chunk) for each chunkwise.run case.

    Mixed chunks (strategy None) of ``per_dataset // k`` files of each dataset give ``k``
    chunks; ``by_dataset`` with one file per chunk gives one chunk per file.
    """
    wanted = (1, 4) if quick else (1, 4, 16)
    plans: list[tuple[int, str | None, int]] = [
        (k, None, per_dataset // k) for k in wanted if k <= per_dataset and per_dataset % k == 0
    ]
    n_files = per_dataset * len(DATASETS)
    if n_files not in {k for k, _, _ in plans}:
        plans.append((n_files, "by_dataset", 1))
    return plans


def make_runner(executor: Any, metadata_cache: str) -> Any:
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    extra = {"metadata_cache": {}} if metadata_cache == "fresh" else {}
    return processor.Runner(
        executor=executor,
        schema=NanoAODSchema,
        skipbadfiles=True,
        use_result_type=True,
        **extra,
    )


def plain_call(fileset: dict[str, Any], runner: Any) -> Any:
    from chunkwise.examples import METProcessor

    result = runner(fileset, processor_instance=METProcessor())
    if not result.is_ok():
        raise Mismatch(f"the plain Runner call failed: {result}")
    return result.unwrap()


def met_counts(output: Any) -> dict[str, np.ndarray]:
    """The MET histogram's bin counts (flow bins included) per dataset."""
    hist = output["MET"]
    return {
        str(name): np.asarray(hist[{"dataset": name}].values(flow=True))
        for name in hist.axes["dataset"]
    }


def check(output: Any, reference: dict[str, np.ndarray], n_expected: int, what: str) -> None:
    """Raise Mismatch unless ``output`` matches the plain call's event count and histogram."""
    if output is None:
        raise Mismatch(f"{what}: no output")
    n_events = output["cutflow"]["all events"]
    if n_events != n_expected:
        raise Mismatch(f"{what}: cutflow['all events'] = {n_events}, expected {n_expected}")
    counts = met_counts(output)
    if sorted(counts) != sorted(reference):
        raise Mismatch(f"{what}: MET datasets {sorted(counts)}, expected {sorted(reference)}")
    for name, values in reference.items():
        if counts[name].shape != values.shape or not np.allclose(counts[name], values):
            diff = np.flatnonzero(~np.isclose(counts[name], values))
            raise Mismatch(f"{what}: MET bin counts of {name} differ in bins {diff.tolist()}")


def run_case(
    case: Case,
    fileset: dict[str, Any],
    executor: Any,
    args: argparse.Namespace,
    cachedir: Path,
) -> tuple[float, Any]:
    """Time one call of ``case``; return (seconds, merged output)."""
    from chunkwise.examples import METProcessor

    runner = make_runner(executor, args.metadata_cache)
    if case.kind == "plain":
        start = time.perf_counter()
        output = plain_call(fileset, runner)
        return time.perf_counter() - start, output

    cache = tempfile.mkdtemp(prefix="cache-", dir=cachedir) if case.kind == "cache" else None
    try:
        start = time.perf_counter()
        report = chunkwise.run(
            fileset,
            METProcessor(),
            runner,
            split=chunkwise.SplitOptions(
                strategy=case.strategy, files_per_chunk=case.files_per_chunk
            ),
            cache=cache,
            progress=False,
            weights=case.weights,
        )
        elapsed = time.perf_counter() - start
    finally:
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)
    return elapsed, report.output


def make_executors(names: list[str], stack: list[Any]) -> dict[str, Any]:
    from coffea import processor

    executors: dict[str, Any] = {}
    for name in names:
        if name == "futures":
            executors[name] = processor.FuturesExecutor(workers=2, status=False)
        elif name == "dask":
            from distributed import Client, LocalCluster

            cluster = LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                dashboard_address=None,
                processes=True,
            )
            stack.append(cluster)
            client = Client(cluster)
            stack.append(client)
            executors[name] = processor.DaskExecutor(client=client, status=False)
        elif name == "slurm":
            executors[name] = slurm_executor(stack)
        else:
            raise SystemExit(f"unknown executor {name!r}: use futures, dask and/or slurm")
    return executors


class _Stopper:
    """Something on the close stack that stops the test Slurm this script started."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    def close(self) -> None:
        self.cluster.stop()


def slurm_executor(stack: list[Any]) -> Any:
    """``DaskExecutor`` on a dask-jobqueue ``SLURMCluster`` of two single-core worker jobs.

    The Slurm is the one ``SLURM_CONF`` names; without it, the tests' single-node Slurm
    (``tests/slurm_cluster.py``) is started for the run, and stopped at its end."""
    from coffea import processor
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    if "SLURM_CONF" not in os.environ:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from slurm_cluster import SlurmCluster, unavailable_reason

        reason = unavailable_reason()
        if reason is not None:
            raise SystemExit(f"--executors slurm: no Slurm: {reason}")
        slurm = SlurmCluster.start(Path(tempfile.mkdtemp(prefix="bench-slurm-")))
        stack.append(_Stopper(slurm))
        os.environ["SLURM_CONF"] = str(slurm.conf)
        print(f"started a single-node Slurm ({slurm.conf})")
    cluster = SLURMCluster(
        cores=1,
        processes=1,
        memory="2GiB",
        scheduler_options={"dashboard": False},
        silence_logs="error",
    )
    stack.append(cluster)
    cluster.scale(jobs=2)
    client = Client(cluster)
    stack.append(client)
    client.wait_for_workers(2, timeout=120)
    return processor.DaskExecutor(client=client, status=False)


def fmt_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def print_table(cases: list[Case]) -> None:
    widths = (8, 58, 6, 8, 6, 8, 6, 11)
    header = ["executor", "case", "chunks", "median s", "ratio", "min s", "ratio", "target"]
    print(
        fmt_row(
            [
                h.ljust(w) if i < 2 else h.rjust(w)
                for i, (h, w) in enumerate(zip(header, widths, strict=True))
            ]
        )
    )
    print(
        "|" + "|".join("-" * (w + 1) + (":" if i >= 2 else "-") for i, w in enumerate(widths)) + "|"
    )
    summaries = []
    for name in dict.fromkeys(c.executor for c in cases):
        rows = [c for c in cases if c.executor == name]
        base = rows[0]
        base_median, base_min = statistics.median(base.times), min(base.times)
        verdicts = []
        for case in rows:
            median, least = statistics.median(case.times), min(case.times)
            ratio = median / base_median
            if case.kind == "plain":
                target, chunks = "-", "-"
            else:
                ok = ratio <= TARGETS[case.kind]
                verdicts.append(ok)
                target = f"<={TARGETS[case.kind]:.2f} {'PASS' if ok else 'FAIL'}"
                chunks = str(case.n_chunks)
            cells = [
                name.ljust(widths[0]),
                case.label.ljust(widths[1]),
                chunks.rjust(widths[2]),
                f"{median:{widths[3]}.3f}",
                f"{ratio:{widths[4]}.2f}",
                f"{least:{widths[5]}.3f}",
                f"{least / base_min:{widths[6]}.2f}",
                target.rjust(widths[7]),
            ]
            print(fmt_row(cells))
        summaries.append(
            f"{name}: targets (median ratio to the plain call): no cache <= "
            f"{TARGETS['nocache']:.2f}x, cold cache <= {TARGETS['cache']:.2f}x; "
            f"{sum(verdicts)} of {len(verdicts)} rows PASS"
            + ("" if all(verdicts) else f", {len(verdicts) - sum(verdicts)} FAIL")
        )
    print()
    for line in summaries:
        print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=64, help="files, split over 2 datasets")
    parser.add_argument("--events", type=int, default=20_000, help="events per file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--executors", default="futures,dask", help="futures, dask and/or slurm, comma-separated"
    )
    parser.add_argument(
        "--metadata-cache",
        choices=("fresh", "shared"),
        default="fresh",
        help="fresh: every timed call preprocesses (default); shared: coffea's global cache",
    )
    parser.add_argument(
        "--no-weights-rows",
        action="store_true",
        help="also time chunkwise.run(weights=False), no cache: the engine without the Runs read",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 8 files of 2,000 events, 1 repetition"
    )
    args = parser.parse_args()
    if args.quick:
        args.files, args.events, args.repeats = 8, 2000, 1
    if args.files < 2 or args.files % 2:
        parser.error("--files must be an even number >= 2")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    names = [n.strip() for n in args.executors.split(",") if n.strip()]

    from coffea.util import coffea_console

    coffea_console.quiet = True  # coffea draws its bars even with status=False

    stack: list[Any] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench_throughput-") as tmp:
            workdir = Path(tmp)
            (workdir / "files").mkdir()
            (workdir / "caches").mkdir()
            start = time.perf_counter()
            fileset = write_fileset(workdir / "files", args.files, args.events)
            print(
                f"wrote {args.files} files x {args.events:,} events "
                f"in {time.perf_counter() - start:.1f} s"
            )
            n_expected = args.files * args.events

            plans = split_plans(args.files // len(DATASETS), args.quick)
            for intended, strategy, per_chunk in plans:
                actual = len(
                    chunkwise.split_fileset(fileset, strategy=strategy, files_per_chunk=per_chunk)
                )
                print(f"strategy={strategy!r}, files_per_chunk={per_chunk}: {actual} chunks")
                assert actual == intended, f"expected {intended} chunks, got {actual}"

            executors = make_executors(names, stack)
            cases: list[Case] = []
            references: dict[str, dict[str, np.ndarray]] = {}
            for name, executor in executors.items():
                start = time.perf_counter()
                warm = plain_call(fileset, make_runner(executor, args.metadata_cache))
                print(f"{name}: warm-up plain call {time.perf_counter() - start:.2f} s")
                if warm["cutflow"]["all events"] != n_expected:
                    raise Mismatch(
                        f"{name} warm-up: cutflow['all events'] = "
                        f"{warm['cutflow']['all events']}, expected {n_expected}"
                    )
                references[name] = met_counts(warm)
                cases.append(Case(name, "plain"))
                for intended, strategy, per_chunk in plans:
                    for kind in ("nocache", "cache"):
                        cases.append(Case(name, kind, strategy, per_chunk, intended))
                    if args.no_weights_rows:
                        cases.append(
                            Case(name, "nocache", strategy, per_chunk, intended, weights=False)
                        )

            for rep in range(args.repeats):
                start = time.perf_counter()
                for case in cases:
                    elapsed, output = run_case(
                        case, fileset, executors[case.executor], args, workdir / "caches"
                    )
                    check(
                        output,
                        references[case.executor],
                        n_expected,
                        f"{case.executor}, {case.label}, {case.n_chunks or 1} chunks",
                    )
                    case.times.append(elapsed)
                print(f"repetition {rep + 1}/{args.repeats}: {time.perf_counter() - start:.1f} s")
    except Mismatch as exc:
        print(f"\nCORRECTNESS MISMATCH: {exc}", file=sys.stderr)
        return 1
    finally:
        for thing in reversed(stack):  # the client, then its cluster
            thing.close()

    print(
        f"\n{args.files} files x {args.events:,} events ({len(DATASETS)} datasets); "
        f"{args.repeats} repetitions, alternating; metadata cache: {args.metadata_cache}; "
        "outputs checked against the plain call\n"
    )
    print_table(cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
