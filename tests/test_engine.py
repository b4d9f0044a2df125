"""How chunkwise.run executes: concurrency, one pool per run, the in-flight bound, and bugs.

Every file of every open chunk is a task on the Runner's executor. These tests look at where and
when each file ran (the processor records its process id and start and end times), and at what
happens to an error outside the Runner's ``skipbadfiles`` set: it propagates, for every executor,
after the chunks that finished are saved.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from coffea import processor
from coffea.nanoevents import NanoAODSchema

import chunkwise
from chunkwise.cache import ChunkCache
from chunkwise.examples import write_nanoaod_like

pytestmark = [
    pytest.mark.filterwarnings("ignore:Missing cross-reference index"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


class SpanProcessor(processor.ProcessorABC):
    """Records, per file, the process that ran it and when; sleeps so that spans are long enough
    to tell overlapping from sequential. With ``fail_on`` set, a file whose name contains it
    raises ``ValueError`` (a bug, not a bad file). Every call appends a line to ``log``."""

    def __init__(self, sleep: float = 0.0, fail_on: str | None = None, log: str | None = None):
        self.sleep = sleep
        self.fail_on = fail_on
        self.log = log

    def process(self, events: Any) -> Any:
        filename = events.metadata["filename"]
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(os.path.basename(filename) + "\n")
        if self.fail_on is not None and self.fail_on in filename:
            raise ValueError(f"a bug on {os.path.basename(filename)}")
        start = time.time()
        time.sleep(self.sleep)
        span = (os.path.basename(filename), start, time.time(), os.getpid())
        return {"events": len(events), "spans": processor.list_accumulator([span])}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    directory = tmp_path_factory.mktemp("engine")
    return [str(write_nanoaod_like(directory / f"f{i}.root", 50, seed=i)) for i in range(8)]


def fileset_of(paths: list[str], missing: Path | None = None) -> dict[str, Any]:
    names = dict.fromkeys(paths, "Events")
    if missing is not None:
        names[str(missing)] = "Events"
    return {"D": {"files": names}}


@pytest.fixture(scope="module")
def pool() -> Any:
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as executor:
        yield executor


@pytest.fixture(scope="module")
def dask_client() -> Any:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def runner_for(name: str, request: pytest.FixtureRequest, **executor: Any) -> Any:
    if name == "iterative":
        ex: Any = processor.IterativeExecutor(retries=0, **executor)
    elif name.startswith("futures"):
        ex = processor.FuturesExecutor(
            pool=request.getfixturevalue("pool"),
            workers=2,
            retries=0,
            recoverable=name == "futures-recoverable",
            merging=name == "futures-merging",
            **executor,
        )
    else:
        ex = processor.DaskExecutor(client=request.getfixturevalue("dask_client"), retries=0)
    return processor.Runner(ex, schema=NanoAODSchema, skipbadfiles=True, use_result_type=True)


def spans(report: Any) -> list[tuple[str, float, float, int]]:
    return list(report.output["spans"])


# -- concurrency ----------------------------------------------------------------------------------
def test_one_pool_serves_the_whole_run_and_a_chunk_spreads_over_it(files: list[str]) -> None:
    runner = processor.Runner(
        processor.FuturesExecutor(workers=2, status=False), schema=NanoAODSchema
    )
    # one chunk of all files: both workers take part
    report = chunkwise.run(fileset_of(files), SpanProcessor(0.3), runner, progress=False)
    assert len(report.chunks) == 1
    assert len({pid for *_, pid in spans(report)}) == 2
    assert report.output["events"] == 8 * 50

    # one chunk per file: still the same two processes, not a new pool per chunk
    report = chunkwise.run(
        fileset_of(files), SpanProcessor(0.05), runner, files_per_chunk=1, progress=False
    )
    assert len(report.chunks) == 8 and report.complete
    pids = {pid for *_, pid in spans(report)}
    assert len(pids) <= 2 and os.getpid() not in pids


def _overlapping_chunks(report: Any) -> int:
    chunk_of = {
        os.path.basename(path): i
        for i, record in enumerate(report.chunks)
        for paths in record.fileset.values()
        for path in paths["files"]
    }
    overlaps = 0
    for (a, s1, e1, _), (b, s2, e2, _) in itertools.combinations(spans(report), 2):
        if chunk_of[a] != chunk_of[b] and s1 < e2 and s2 < e1:
            overlaps += 1
    return overlaps


def test_in_flight_bounds_the_chunks_open_at_once(
    files: list[str], request: pytest.FixtureRequest
) -> None:
    runner = runner_for("futures", request)
    bounded = chunkwise.run(
        fileset_of(files[:6]),
        SpanProcessor(0.2),
        runner,
        files_per_chunk=2,
        in_flight=1,
        progress=False,
    )
    assert len(bounded.chunks) == 3 and bounded.complete
    assert _overlapping_chunks(bounded) == 0  # the next chunk starts after the last one ended

    free = chunkwise.run(
        fileset_of(files[:4]), SpanProcessor(0.3), runner, files_per_chunk=1, progress=False
    )
    assert _overlapping_chunks(free) > 0  # by default, chunks run side by side

    with pytest.raises(ValueError, match="in_flight"):
        chunkwise.run(fileset_of(files[:1]), SpanProcessor(), runner, in_flight=0)


def test_salvage_reuses_the_good_files_outputs(files: list[str], tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    missing = tmp_path / "missing.root"
    runner = processor.Runner(
        processor.FuturesExecutor(workers=2, status=False, retries=0),
        schema=NanoAODSchema,
        skipbadfiles=True,
    )
    report = chunkwise.run(
        fileset_of(files[:4], missing),
        SpanProcessor(log=str(log)),
        runner,
        cache=tmp_path / "cache",
        progress=False,
    )
    (record,) = report.chunks
    assert record.status == "salvaged"
    assert [p.status for p in record.parts].count("processed") == 4
    assert set(report.bad_files["D"]) == {str(missing)}
    # each good file was processed exactly once: no re-run for the salvage
    calls = log.read_text().split()
    assert sorted(calls) == sorted(os.path.basename(p) for p in files[:4])
    assert report.output["events"] == 4 * 50


# -- bugs propagate, for every executor -----------------------------------------------------------
EXECUTORS = ["iterative", "futures", "futures-recoverable", "futures-merging", "dask"]


@pytest.mark.parametrize("files_per_chunk", [None, 1], ids=["whole", "one-file-chunks"])
@pytest.mark.parametrize("name", EXECUTORS)
def test_a_bug_propagates_after_finished_chunks_are_saved(
    name: str,
    files_per_chunk: int | None,
    files: list[str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    runner = runner_for(name, request)
    cache = tmp_path / "cache"
    fileset = {"A": {"files": dict.fromkeys(files[:3], "Events")}, "B": [files[3]]}
    with pytest.raises(Exception, match="a bug on f3.root") as raised:
        chunkwise.run(
            fileset,
            SpanProcessor(fail_on="f3.root"),
            runner,
            strategy="by_dataset",
            files_per_chunk=files_per_chunk,
            treename="Events",
            cache=cache,
            cache_tag="t",
            progress=False,
        )
    # coffea's own wrapping, with its cause, arrives whichever process raised it
    assert isinstance(raised.value.__cause__, ValueError)
    note = next(n for n in raised.value.__notes__ if "cache entries were saved" in n)
    saved = int(re.search(r"(\d+) cache entries were saved", note).group(1))
    assert len(list(ChunkCache(cache, "t").hashes())) == saved


def test_only_the_cause_chain_makes_a_bad_file(files: list[str]) -> None:
    class CausedByOSError(SpanProcessor):
        def process(self, events: Any) -> Any:
            raise RuntimeError("wrapped") from OSError("the disk")

    class ContextIsOSError(SpanProcessor):
        def process(self, events: Any) -> Any:
            try:
                raise OSError("the disk")
            except OSError:
                raise RuntimeError("raised while handling")  # noqa: B904 (the point: context only)

    runner = processor.Runner(
        processor.IterativeExecutor(retries=0), schema=NanoAODSchema, skipbadfiles=True
    )
    report = chunkwise.run(fileset_of(files[:1]), CausedByOSError(), runner, progress=False)
    assert report.n_failed == 1 and "OSError: the disk" in report.bad_files["D"][files[0]]

    with pytest.raises(Exception, match="raised while handling"):
        chunkwise.run(fileset_of(files[:1]), ContextIsOSError(), runner, progress=False)


@pytest.mark.parametrize("name", ["iterative", "futures", "dask"])
def test_a_processor_returning_none_is_a_bug(
    name: str, files: list[str], request: pytest.FixtureRequest
) -> None:
    class ReturnsNone(SpanProcessor):
        def process(self, events: Any) -> Any:
            return None

    with pytest.raises(ValueError, match="should not be None"):
        chunkwise.run(
            fileset_of(files[:2]), ReturnsNone(), runner_for(name, request), progress=False
        )


# -- retries and replicas (local files; tests/test_xrootd.py has them over a real server) ----------
class FlakyProcessor(SpanProcessor):
    """Raises ConnectionResetError the first time it sees each file (a marker file remembers),
    as a dropped connection would; fine after that."""

    def __init__(self, marks: str) -> None:
        super().__init__()
        self.marks = marks

    def process(self, events: Any) -> Any:
        mark = os.path.join(self.marks, os.path.basename(events.metadata["filename"]))
        if not os.path.exists(mark):
            open(mark, "w").close()
            raise ConnectionResetError("connection reset by peer")
        return super().process(events)


def test_transient_errors_are_retried_and_permanent_ones_are_not(
    files: list[str], tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    missing = tmp_path / "missing.root"
    report = chunkwise.run(
        fileset_of(files[:2], missing),
        FlakyProcessor(str(marks)),
        files_per_chunk=1,
        retry_delay=0.01,
        progress=False,
    )
    assert report.retries == {"D": dict.fromkeys(files[:2], 1)}  # not the missing file
    assert set(report.bad_files["D"]) == {str(missing)}
    assert report.output["events"] == 2 * 50

    for path in marks.iterdir():
        path.unlink()
    no_retries = chunkwise.run(
        fileset_of(files[:2]), FlakyProcessor(str(marks)), retries=0, progress=False
    )
    assert no_retries.retries == {} and len(no_retries.bad_files["D"]) == 2
    assert all("ConnectionResetError" in e for e in no_retries.bad_files["D"].values())


def test_a_replica_serves_a_file_and_the_cache_keeps_the_logical_path(
    files: list[str], tmp_path: Path
) -> None:
    site_a, site_b = tmp_path / "siteA", tmp_path / "siteB"
    site_a.mkdir()
    site_b.mkdir()
    for path in files[:3]:
        shutil.copy(path, site_b)
    logical = [str(site_a / os.path.basename(p)) for p in files[:3]]
    fileset = fileset_of(logical)
    cache = tmp_path / "cache"
    report = chunkwise.run(
        fileset,
        SpanProcessor(),
        files_per_chunk=1,
        replicas={f"{site_a}/": f"{site_b}/"},
        cache=cache,
        progress=False,
    )
    assert report.complete and report.output["events"] == 3 * 50
    assert report.replicas == {"D": {p: p.replace("siteA", "siteB") for p in logical}}
    keys = {chunkwise.hash_fileset(c) for c in chunkwise.split_fileset(fileset, files_per_chunk=1)}
    assert set(report.cache.hashes()) == keys  # keyed by the paths written in the fileset

    # every replica fails: bad, under its own path, with a word on the replicas
    os.remove(site_b / os.path.basename(files[0]))
    again = chunkwise.run(
        fileset_of(logical[:1]), SpanProcessor(), replicas={f"{site_a}/": [f"{site_b}/"]},
        progress=False,
    )  # fmt: skip
    (error,) = again.bad_files["D"].values()
    assert list(again.bad_files["D"]) == logical[:1]
    assert "FileNotFoundError" in error and "and on its 1 replicas" in error

    with pytest.raises(ValueError, match="replicas must map"):
        chunkwise.run(fileset, SpanProcessor(), replicas={"": ["x"]}, progress=False)
    with pytest.raises(ValueError, match="retries must be"):
        chunkwise.run(fileset, SpanProcessor(), retries=-1, progress=False)


@pytest.mark.parametrize(
    ("message", "transient"),
    [
        ("Failed to open file: [FATAL] Connection error", True),
        ("Failed to open file: [ERROR] Operation expired", True),
        ("[ERROR] Server responded with an error: [3012] Internal server error", True),
        (
            "Failed to open file: [ERROR] Server responded with an error: [3011] Unable to open "
            "/x.root; no such file or directory",
            False,
        ),  # fmt: skip
        ("XRootD error: [FATAL] Invalid address", False),
        ("expected Chunk of length 148, received 0 bytes from FSSpecSource", False),
    ],
)
def test_xrootd_errors_are_told_transient_or_permanent(message: str, transient: bool) -> None:
    from chunkwise.retry import is_transient

    wrapped = Exception("Failed to open file: WorkItem(...)")
    wrapped.__cause__ = OSError(message)
    assert is_transient(wrapped) is transient
    assert is_transient(ConnectionRefusedError()) and not is_transient(FileNotFoundError())


def test_a_salvaged_chunk_whose_files_all_come_back_gets_its_whole_entry(
    files: list[str], tmp_path: Path
) -> None:
    late = tmp_path / "late.root"
    fileset = fileset_of(files[:2], late)
    cache = tmp_path / "cache"
    first = chunkwise.run(fileset, SpanProcessor(), cache=cache, progress=False)
    assert [r.status for r in first.chunks] == ["salvaged"]
    shutil.copy(files[2], late)  # the missing file turns up
    second = chunkwise.run(fileset, SpanProcessor(), cache=cache, progress=False)
    assert second.complete and second.output["events"] == 3 * 50
    third = chunkwise.run(fileset, SpanProcessor(), cache=cache, progress=False)
    assert [r.status for r in third.chunks] == ["cached"]
    assert chunkwise.status(fileset, cache).complete


def test_a_one_file_chunk_with_an_empty_dataset_runs(files: list[str]) -> None:
    chunk = {"E": {"files": {}}, "D": {"files": {files[0]: "Events"}}}
    report = chunkwise.run([chunk], SpanProcessor(), progress=False)
    assert report.complete and report.output["events"] == 50
