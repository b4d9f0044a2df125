"""chunkwise.run over the real XRootD protocol: a local ``xrootd`` daemon, and its faults.

The files are read through ``root://127.0.0.1:PORT//tmp/...`` from a real ``xrootd`` server
(``tests/xrootd_server.py``); the oracle is a plain coffea Runner over the same files' local
paths, minus the bad ones.

1. The seed notebook (coffea's *split_fileset* notebook) over root://: two datasets, one with a
   path on an invalid host; ``by_dataset``, ``by_dataset`` with ``percentage=20``, and mixed
   ``percentage=20`` with a cache keyed by ``hash_fileset``.
2. Faults, each losing only what it must and never hanging: a missing file, an invalid host, a
   file without the tree, a truncated file, a server killed mid-run, a server stalled past the
   Runner's ``xrootdtimeout``, and a server that comes back. Each is timed (``pytest -s`` prints
   the times, and a table at the end of the module); a watchdog kills the servers of a test that
   runs far past its limit, so a hang fails the test instead of blocking the suite.
3. Retries: permanent errors are not retried, transient ones are (with backoff).
4. Replicas: server A is down, its files are read from server B, and everything (the cache keys,
   ``bad_files``, completeness) stays on A's logical paths; also with the CLI's ``--replica``.
5. A non-ASCII file name: it is read, or it is a bad file with a clear reason; never an abort.
6. coffea's real NanoAOD samples served over XRootD (skipped when ../shared/samples is absent).

The server needs the ``xrootd`` binary (Debian's xrootd-server) and root (it drops to
``nobody``); without them every test here is skipped, with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot
from coffea import processor
from coffea.dataset_tools import hash_fileset, split_fileset
from coffea.nanoevents import NanoAODSchema
from coffea.util import coffea_console, load

import chunkwise
import chunkwise.cache
import chunkwise.cache_status
import chunkwise.cli
import chunkwise.cli.cache
import chunkwise.runner
import chunkwise.store.xrootd
import chunkwise.tag
from chunkwise.examples import METProcessor, write_nanoaod_like
from chunkwise.runner import RunReport

sys.path.insert(0, str(Path(__file__).resolve().parent))
from xrootd_server import (  # noqa: E402
    XRootDServer,
    XRootDStartError,
    export_dir,
    free_port,
    make_readable,
    unavailable_reason,
)

TESTS = Path(__file__).resolve().parent
SAMPLES = TESTS.parent.parent / "shared" / "samples"

pytestmark = [
    pytest.mark.filterwarnings("ignore:Missing cross-reference index"),
    pytest.mark.filterwarnings("ignore:Performed attempt"),
    pytest.mark.filterwarnings("ignore:Skipping bad file"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

N_EVENTS = 200  # per file: small files, so the module runs in well under a minute of work
NO_HANG = 60.0  # seconds: generous, but a hang (XRootD's defaults: minutes) fails it
INVALID_HOST = (
    "root://eeeeeeospublic.invalid//eos/opendata/cms/mc/RunIISummer20UL16NanoAODv9/"
    "GluGluHToWWTo2L2Nu_M125_TuneCP5_13TeV_powheg2_JHUGenV714_pythia8/NANOAODSIM/"
    "106X_mcRun2_asymptotic_v17-v2/260000/A41320F6-C9F9-574C-8DD2-BD98C200E4EE.root"
)

#: name -> (seconds, what happened): filled by the fault tests, printed at the end of the module.
TIMINGS: dict[str, tuple[float, str]] = {}


# -- servers and files ------------------------------------------------------------------------
def _require_xrootd() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def _start(server: XRootDServer) -> XRootDServer:
    try:
        return server.start()
    except XRootDStartError as err:
        pytest.skip(f"the xrootd server did not start: {err}")


class Servers:
    """Makes servers and export directories for one test (or module), and cleans them all up:
    threads that restart a server are joined, clients' open handles on the servers are closed,
    the daemons are stopped by PID, and the directories are removed."""

    def __init__(self) -> None:
        self.servers: list[XRootDServer] = []
        self.dirs: list[Path] = []
        self.threads: list[threading.Thread] = []
        self.closed = threading.Event()

    def directory(self) -> Path:
        path = export_dir()
        self.dirs.append(path)
        return path

    def server(self, directory: Path, *, start: bool = True, trace: bool = False) -> XRootDServer:
        """A server of ``directory``; not started (``start=False``) it still has a port, on
        which nothing listens: a server that is down. ``trace`` logs every request."""
        make_readable(directory)
        server = XRootDServer(directory, port=None if start else free_port(), trace=trace)
        self.servers.append(server)
        return _start(server) if start else server

    def restart_later(self, server: XRootDServer, seconds: float) -> threading.Thread:
        """Start ``server`` again (same port) ``seconds`` from now, in a thread."""

        def restart() -> None:
            if not self.closed.wait(seconds):
                server.restart()

        thread = threading.Thread(target=restart, name="xrootd-restart", daemon=True)
        self.threads.append(thread)
        thread.start()
        return thread

    def close(self) -> None:
        self.closed.set()
        for thread in self.threads:
            thread.join(timeout=30)
        for server in self.servers:
            _drop_client_handles(server)
            server.close()  # by PID, resumed first if it was stalled
        for path in self.dirs:
            shutil.rmtree(path, ignore_errors=True)


def _drop_client_handles(server: XRootDServer) -> None:
    """Close the file handles that fsspec-xrootd keeps open on ``server`` (for 30 s after their
    last use), while it can still answer; on a dead server, forget them. Otherwise they are
    closed at interpreter exit, on a server long gone, and fsspec-xrootd prints the error."""
    try:
        from fsspec_xrootd import XRootDFileSystem
    except ImportError:
        return
    for fs in list(XRootDFileSystem._cache.values()):
        if getattr(fs, "hostid", None) != f"127.0.0.1:{server.port}":
            continue
        try:
            fs.invalidate_cache()
        except Exception:  # the server is dead or stalled: nothing to close on it
            handles = getattr(getattr(fs, "_readonly_filehandle_cache", None), "_cache", None)
            if isinstance(handles, dict):
                handles.clear()


@pytest.fixture
def servers() -> Iterator[Servers]:
    _require_xrootd()
    made = Servers()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module", autouse=True)
def timing_table() -> Iterator[None]:
    yield
    if not TIMINGS:
        return
    width = max(len(name) for name in TIMINGS)
    lines = ["", "XRootD faults: wall time of each chunkwise.run", "-" * (width + 40)]
    for name, (seconds, what) in TIMINGS.items():
        lines.append(f"{name:<{width}}  {seconds:7.2f} s  {what}")
    print("\n".join(lines))


class Timed:
    """Times a block and records it in ``TIMINGS``; a watchdog SIGKILLs ``servers`` if the
    block runs ``rescue_after`` seconds, so that a client stuck on them gets an error and the
    test fails instead of hanging the suite."""

    def __init__(self, name: str, *servers: XRootDServer, rescue_after: float = 2 * NO_HANG):
        self.name = name
        self.servers = servers
        self.rescued = threading.Event()
        self.seconds = 0.0
        self.what = ""
        self._timer = threading.Timer(rescue_after, self._rescue)
        self._timer.daemon = True

    def _rescue(self) -> None:
        self.rescued.set()
        for server in self.servers:
            server.kill()

    def __enter__(self) -> Timed:
        self._start = time.perf_counter()
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self.seconds = time.perf_counter() - self._start
        what = self.what + (" [RESCUED by the watchdog: it hung]" if self.rescued.is_set() else "")
        TIMINGS[self.name] = (self.seconds, what)
        print(f"\n[xrootd] {self.name}: {self.seconds:.2f} s {what}")


def write_good(directory: Path, stem: str, n_files: int, seed: int) -> list[Path]:
    return [
        write_nanoaod_like(directory / f"{stem}_{i}.root", N_EVENTS, seed=seed + i)
        for i in range(n_files)
    ]


def write_truncated(source: Path, target: Path) -> Path:
    blob = source.read_bytes()
    target.write_bytes(blob[: len(blob) // 3])
    return target


def write_without_events(path: Path) -> Path:
    """A valid ROOT file with a tree, but not ``Events`` (like coffea's bad_delphes.root)."""
    with uproot.recreate(path) as f:
        f["Other"] = {"x": np.arange(5, dtype=np.int32)}
    return path


def fileset_of(**datasets: list[str]) -> dict[str, Any]:
    return {d: {"files": dict.fromkeys(paths, "Events")} for d, paths in datasets.items()}


def oracle(**datasets: list[Path]) -> Any:
    """A plain coffea Runner over the local paths of the good files (its bars muted)."""
    runner = processor.Runner(processor.IterativeExecutor(status=False), schema=NanoAODSchema)
    local = fileset_of(**{d: [str(p) for p in paths] for d, paths in datasets.items()})
    quiet, coffea_console.quiet = coffea_console.quiet, True
    try:
        return runner(local, processor_instance=METProcessor())
    finally:
        coffea_console.quiet = quiet


def brief(report: RunReport) -> str:
    """What a run lost and retried, by file name, for the timing table."""
    bad = []
    for files in report.bad_files.values():
        for path, reason in files.items():
            kind, _, message = reason.partition(": ")
            bad.append(f"{Path(path).name}: {kind}: {message.rsplit('] ', 1)[-1][:45]}")
    retried = {Path(p).name: n for files in report.retries.values() for p, n in files.items()}
    served = sum(len(files) for files in report.replicas.values())
    text = f"bad={bad or 0} retries={retried or 0}"
    return text + (f" replicas={served}" if served else "")


def assert_same_output(got: Any, expected: Any) -> None:
    """Same MET histogram per dataset and the same cutflow."""
    got_datasets = set(got["MET"].axes["dataset"])
    assert got_datasets == set(expected["MET"].axes["dataset"])
    for dataset in got_datasets:
        np.testing.assert_array_equal(
            got["MET"][{"dataset": dataset}].values(flow=True),
            expected["MET"][{"dataset": dataset}].values(flow=True),
        )
    assert dict(got["cutflow"]) == dict(expected["cutflow"])


def assert_one_line_reasons(report: RunReport) -> None:
    for files in report.bad_files.values():
        for path, reason in files.items():
            assert reason and "\n" not in reason and "Traceback" not in reason, (path, reason)


def runner_with_timeout(seconds: int) -> Any:
    """chunkwise's default Runner, with ``xrootdtimeout`` (seconds per XRootD request)."""
    return dataclasses.replace(chunkwise.runner.default_runner(), xrootdtimeout=seconds)


# -- 1. the seed notebook over root:// --------------------------------------------------------
@pytest.fixture(scope="module")
def notebook() -> Iterator[dict[str, Any]]:
    """The notebook's fileset, served: SingleMu_0 has the invalid-host path and 4 good files,
    SingleMu_1 has 5 good files."""
    _require_xrootd()
    made = Servers()
    try:
        directory = made.directory()
        good0 = write_good(directory, "SingleMu_0", 4, seed=100)
        good1 = write_good(directory, "SingleMu_1", 5, seed=200)
        server = made.server(directory)
        fileset = {
            "SingleMu_0": {
                "files": {INVALID_HOST: "Events", **{server.url(p): "Events" for p in good0}}
            },
            "SingleMu_1": {"files": {server.url(p): "Events" for p in good1}},
        }
        yield {
            "fileset": fileset,
            "oracle": oracle(SingleMu_0=good0, SingleMu_1=good1),
            "server": server,
        }
    finally:
        made.close()


NOTEBOOK_WAYS = {
    "by_dataset": {"strategy": "by_dataset"},
    "by_dataset-percentage20": {"strategy": "by_dataset", "percentage": 20},
    "percentage20-cache": {"percentage": 20},
}


def assert_notebook_report(report: RunReport, expected: Any) -> None:
    assert_same_output(report.output, expected)
    assert list(report.bad_files) == ["SingleMu_0"]
    assert list(report.bad_files["SingleMu_0"]) == [INVALID_HOST]
    assert_one_line_reasons(report)
    assert report.completeness == {"SingleMu_0": 4 / 5, "SingleMu_1": 1.0}
    assert report.events == {"SingleMu_0": 4 * N_EVENTS, "SingleMu_1": 5 * N_EVENTS}
    assert report.files_total == {"SingleMu_0": 5, "SingleMu_1": 5}
    assert not report.complete


@pytest.mark.parametrize("way", list(NOTEBOOK_WAYS))
def test_the_seed_notebook_over_root(way: str, notebook: dict[str, Any], tmp_path: Path) -> None:
    fileset, expected = notebook["fileset"], notebook["oracle"]
    options = NOTEBOOK_WAYS[way]
    cache = tmp_path / "chunk_cache" if way.endswith("cache") else None
    chunks = split_fileset(fileset, **options)  # coffea's own, as in the notebook

    with Timed(f"notebook {way}") as clock:
        report = chunkwise.run(fileset, METProcessor(), cache=cache, progress=False, **options)
        clock.what = f"{len(report.chunks)} chunks, {brief(report)}"
    assert clock.seconds < NO_HANG

    assert_notebook_report(report, expected)
    assert [record.hash for record in report.chunks] == [hash_fileset(c) for c in chunks]
    reason = report.bad_files["SingleMu_0"][INVALID_HOST]
    assert "OSError" in reason and "invalid address" in reason.lower(), reason
    # only the chunk that holds the invalid path is touched: failed when it is alone in it,
    # salvaged (its good files kept) when it shares it
    for record, chunk in zip(report.chunks, chunks, strict=True):
        has_bad = INVALID_HOST in chunk.get("SingleMu_0", {}).get("files", {})
        if not has_bad:
            assert record.status == "processed"
        else:
            n_files = sum(len(d["files"]) for d in chunk.values())
            assert record.status == ("failed" if n_files == 1 else "salvaged")
    assert report.n_failed == 1

    if cache is None:
        return
    # the notebook's cache: one entry per good chunk, named by coffea's hash_fileset
    entries = {p.stem for p in report.cache.directory.glob("*.coffea")}
    whole = {hash_fileset(c) for c in chunks if INVALID_HOST not in c["SingleMu_0"]["files"]}
    assert whole <= entries
    rerun = chunkwise.run(fileset, METProcessor(), cache=cache, progress=False, **options)
    assert rerun.n_processed == 0  # everything that succeeded is loaded
    assert rerun.n_cached == report.n_processed
    assert rerun.n_failed == 1  # the invalid host is tried again, and fails again
    assert_notebook_report(rerun, expected)


# -- 2. faults ---------------------------------------------------------------------------------
def test_a_missing_file_fails_at_once_and_is_not_retried(servers: Servers) -> None:
    directory = servers.directory()
    good = write_good(directory, "good", 2, seed=1)
    server = servers.server(directory)
    missing = server.url(directory / "missing.root")
    fileset = fileset_of(D=[*map(server.url, good), missing])

    with Timed("missing file", server) as clock:
        report = chunkwise.run(fileset, METProcessor(), files_per_chunk=1, progress=False)
        clock.what = brief(report)
    assert clock.seconds < 5

    assert_same_output(report.output, oracle(D=good))
    assert list(report.bad_files["D"]) == [missing]
    reason = report.bad_files["D"][missing]
    assert "[3011]" in reason and "no such file" in reason.lower(), reason
    assert report.retries == {}
    assert_one_line_reasons(report)


def test_an_invalid_host_is_a_bad_file(servers: Servers) -> None:
    directory = servers.directory()
    good = write_good(directory, "good", 2, seed=3)
    server = servers.server(directory)
    fileset = fileset_of(D=[*map(server.url, good), INVALID_HOST])

    with Timed("invalid host", server) as clock:
        report = chunkwise.run(fileset, METProcessor(), progress=False)
        clock.what = brief(report)
    assert clock.seconds < NO_HANG

    assert_same_output(report.output, oracle(D=good))
    assert list(report.bad_files["D"]) == [INVALID_HOST]
    assert "invalid address" in report.bad_files["D"][INVALID_HOST].lower()
    assert report.completeness == {"D": 2 / 3}
    assert_one_line_reasons(report)


def test_a_file_without_the_tree_is_a_bad_file_and_is_not_retried(servers: Servers) -> None:
    directory = servers.directory()
    good = write_good(directory, "good", 2, seed=5)
    no_tree = write_without_events(directory / "no_events.root")
    server = servers.server(directory)
    fileset = fileset_of(D=[*map(server.url, good), server.url(no_tree)])

    with Timed("file without the tree", server) as clock:
        report = chunkwise.run(fileset, METProcessor(), progress=False)  # the default Runner
        clock.what = brief(report)
    assert clock.seconds < NO_HANG

    assert_same_output(report.output, oracle(D=good))
    assert list(report.bad_files["D"]) == [server.url(no_tree)]
    reason = report.bad_files["D"][server.url(no_tree)]
    assert "KeyInFileError" in reason and "Events" in reason, reason
    assert report.retries == {}
    assert_one_line_reasons(report)


def test_a_truncated_file_over_xrootd_is_a_bad_file_and_is_not_retried(
    servers: Servers,
) -> None:
    directory = servers.directory()
    good = write_good(directory, "good", 2, seed=7)
    truncated = write_truncated(good[0], directory / "truncated.root")
    server = servers.server(directory)
    fileset = fileset_of(D=[*map(server.url, good), server.url(truncated)])

    with Timed("truncated file", server) as clock:
        report = chunkwise.run(fileset, METProcessor(), progress=False)
        clock.what = brief(report)
    assert clock.seconds < NO_HANG

    assert_same_output(report.output, oracle(D=good))
    assert list(report.bad_files["D"]) == [server.url(truncated)]
    assert report.bad_files["D"][server.url(truncated)].startswith("OSError")
    assert report.retries == {}
    assert_one_line_reasons(report)


class KillServerAfter(processor.ProcessorABC):
    """``METProcessor``, which SIGKILLs a server's daemon once ``after`` files of dataset
    ``dataset`` are done. Files are counted with marker files in ``marks``: every file gets a
    fresh copy of the processor, so nothing kept on ``self`` would count them."""

    def __init__(self, pid: int, after: int, dataset: str, marks: str) -> None:
        self.pid, self.after, self.dataset, self.marks = pid, after, dataset, marks

    def process(self, events: Any) -> Any:
        out = METProcessor().process(events)  # reads everything it needs first
        if events.metadata["dataset"] == self.dataset:
            marks = Path(self.marks)
            (marks / Path(events.metadata["filename"]).name).touch()
            if len(list(marks.iterdir())) == self.after:
                os.kill(self.pid, signal.SIGKILL)
        return out

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


def test_a_server_killed_mid_run_loses_only_its_remaining_files(
    servers: Servers, tmp_path: Path
) -> None:
    dir_a, dir_b = servers.directory(), servers.directory()
    files_a = write_good(dir_a, "A", 4, seed=11)
    files_b = write_good(dir_b, "B", 2, seed=21)
    server_a, server_b = servers.server(dir_a), servers.server(dir_b)
    urls_a = [server_a.url(p) for p in files_a]
    fileset = fileset_of(A=urls_a, B=[server_b.url(p) for p in files_b])
    marks = tmp_path / "marks"
    marks.mkdir()
    assert server_a.proc is not None
    proc = KillServerAfter(server_a.proc.pid, after=2, dataset="A", marks=str(marks))

    with Timed("server killed mid-run", server_a, server_b) as clock:
        report = chunkwise.run(
            fileset, proc, files_per_chunk=1, retries=1, retry_delay=0.1, progress=False
        )
        clock.what = brief(report)
    assert clock.seconds < NO_HANG
    assert not server_a.running  # it was killed by the processor, after 2 files of A

    done = {name.name for name in marks.iterdir()}
    assert len(done) == 2
    lost = [url for url in urls_a if Path(url).name not in done]
    kept = [p for p in files_a if p.name in done]
    assert_same_output(report.output, oracle(A=kept, B=files_b))
    # the rest of A is bad, each after a retry; B, on another server, is whole
    assert set(report.bad_files) == {"A"}
    assert sorted(report.bad_files["A"]) == sorted(lost)
    for url in lost:
        assert "connection" in report.bad_files["A"][url].lower(), report.bad_files["A"][url]
    assert report.retries == {"A": dict.fromkeys(lost, 1)}
    assert report.completeness == {"A": 0.5, "B": 1.0}
    assert_one_line_reasons(report)


def test_a_stalled_server_is_a_bad_file_within_the_timeout(servers: Servers) -> None:
    timeout = 3
    dir_a, dir_b = servers.directory(), servers.directory()
    (stalled_file,) = write_good(dir_a, "A", 1, seed=31)
    (good,) = write_good(dir_b, "B", 1, seed=32)
    server_a, server_b = servers.server(dir_a), servers.server(dir_b)
    fileset = fileset_of(A=[server_a.url(stalled_file)], B=[server_b.url(good)])
    server_a.stall()  # SIGSTOP: connections are accepted by the kernel, nothing answers

    try:
        with Timed(f"server stalled (xrootdtimeout={timeout})", server_a) as clock:
            report = chunkwise.run(
                fileset, METProcessor(), runner_with_timeout(timeout), retries=0, progress=False
            )
            clock.what = brief(report)
    finally:
        server_a.resume()
    assert not clock.rescued.is_set()
    assert clock.seconds < NO_HANG
    # one request, bounded by the Runner's xrootdtimeout (3 x, for slack)
    assert clock.seconds < 3 * timeout, (
        f"the stalled file took {clock.seconds:.1f} s with xrootdtimeout={timeout}"
    )

    assert_same_output(report.output, oracle(B=[good]))
    assert list(report.bad_files) == ["A"]
    assert list(report.bad_files["A"]) == [server_a.url(stalled_file)]
    assert report.retries == {}
    assert_one_line_reasons(report)


def test_a_server_that_comes_back_is_retried_and_the_run_is_complete(
    servers: Servers,
) -> None:
    directory = servers.directory()
    files = write_good(directory, "back", 2, seed=41)
    server = servers.server(directory)
    urls = [server.url(p) for p in files]
    server.stop()
    thread = servers.restart_later(server, 3.0)

    with Timed("server back after 3 s (default retries)", server) as clock:
        report = chunkwise.run(fileset_of(D=urls), METProcessor(), progress=False)
        clock.what = brief(report)
    thread.join(timeout=30)
    assert clock.seconds < 30

    assert report.complete, report.summary()
    assert_same_output(report.output, oracle(D=files))
    # the first file was tried while the server was down; the second may have found it back
    assert set(report.retries) == {"D"}
    assert urls[0] in report.retries["D"]
    assert set(report.retries["D"]) <= set(urls)
    assert all(1 <= n <= 3 for n in report.retries["D"].values())
    assert report.bad_files == {}


def test_a_server_that_comes_back_after_its_files_were_read(servers: Servers) -> None:
    """The same, in a process that read the files before the outage (a long session, or an
    earlier run): fsspec-xrootd keeps their handles open, and they go stale with the server."""
    directory = servers.directory()
    files = write_good(directory, "warm", 2, seed=51)
    server = servers.server(directory)
    fileset = fileset_of(D=[server.url(p) for p in files])
    first = chunkwise.run(fileset, METProcessor(), progress=False)
    assert first.complete
    server.stop()
    thread = servers.restart_later(server, 3.0)

    with Timed("server back after 3 s, files read before", server) as clock:
        try:
            report = chunkwise.run(fileset, METProcessor(), progress=False)
        except Exception as exc:
            clock.what = f"RAISED {type(exc).__name__}: {exc}"[:200]
            raise
        clock.what = brief(report)
    thread.join(timeout=30)
    assert clock.seconds < 30

    assert report.complete, report.summary()
    assert_same_output(report.output, oracle(D=files))
    assert report.retries and set(report.retries["D"]) <= set(fileset["D"]["files"])


# -- 3. retries ---------------------------------------------------------------------------------
def test_permanent_errors_are_not_retried_and_transient_ones_are(servers: Servers) -> None:
    directory = servers.directory()
    good = write_good(directory, "good", 1, seed=61)
    no_tree = write_without_events(directory / "no_events.root")
    up = servers.server(directory)
    down = servers.server(directory, start=False)  # a port on which nothing listens
    missing, refused = up.url(directory / "missing.root"), down.url(good[0])
    fileset = fileset_of(D=[up.url(good[0]), missing, up.url(no_tree), refused])

    with Timed("retries: permanent vs refused (2 retries)", up) as clock:
        report = chunkwise.run(
            fileset, METProcessor(), files_per_chunk=1, retries=2, retry_delay=0.2, progress=False
        )
        clock.what = brief(report)
    assert clock.seconds < NO_HANG
    # backoff: 0.2 s then 0.4 s, each times 0.75 to 1.25
    assert clock.seconds >= 0.75 * (0.2 + 0.4)

    assert_same_output(report.output, oracle(D=good))
    assert set(report.bad_files["D"]) == {missing, up.url(no_tree), refused}
    assert report.retries == {"D": {refused: 2}}  # only the refused connection
    assert "connection" in report.bad_files["D"][refused].lower()
    assert_one_line_reasons(report)


def test_retries_zero_tries_a_refused_connection_once(servers: Servers) -> None:
    directory = servers.directory()
    (good,) = write_good(directory, "good", 1, seed=71)
    down = servers.server(directory, start=False)

    with Timed("retries=0: refused connection") as clock:
        report = chunkwise.run(
            fileset_of(D=[down.url(good)]), METProcessor(), retries=0, progress=False
        )
        clock.what = brief(report)
    assert clock.seconds < 5
    assert report.retries == {}
    assert list(report.bad_files["D"]) == [down.url(good)]


# -- 4. replicas ------------------------------------------------------------------------------
@pytest.fixture
def replicated(servers: Servers) -> dict[str, Any]:
    """The same files under two directories; server A (never started) is down, B is up."""
    dir_a, dir_b = servers.directory(), servers.directory()
    files_a = write_good(dir_a, "R", 3, seed=81)
    for path in files_a:
        shutil.copy(path, dir_b / path.name)
    server_a = servers.server(dir_a, start=False)
    server_b = servers.server(dir_b)
    return {
        "files": files_a,
        "a": server_a,
        "b": server_b,
        "fileset": fileset_of(R=[server_a.url(p) for p in files_a]),
        "replicas": {server_a.prefix: [server_b.prefix]},
    }


def test_replicas_serve_the_files_of_a_server_that_is_down(
    replicated: dict[str, Any], tmp_path: Path
) -> None:
    fileset, files = replicated["fileset"], replicated["files"]
    server_a, server_b = replicated["a"], replicated["b"]
    cache = tmp_path / "cache"

    with Timed("replicas: A down, B serves (1 retry)", server_b) as clock:
        report = chunkwise.run(
            fileset,
            METProcessor(),
            files_per_chunk=2,
            cache=cache,
            replicas=replicated["replicas"],
            retries=1,
            retry_delay=0.1,
            progress=False,
        )
        clock.what = brief(report)
    assert clock.seconds < NO_HANG

    assert report.complete, report.summary()
    assert_same_output(report.output, oracle(R=files))
    urls_a = list(fileset["R"]["files"])
    served = {server_a.url(p): server_b.url(server_b.export_dir / p.name) for p in files}
    assert report.replicas == {"R": served}
    assert set(report.retries.get("R", {})) <= set(urls_a)  # retried on A: logical paths
    # the cache is keyed by the logical paths: the chunks of A's fileset, as coffea hashes them
    expected = [hash_fileset(c) for c in chunkwise.split_fileset(fileset, files_per_chunk=2)]
    assert [record.hash for record in report.chunks] == expected
    assert {p.stem for p in report.cache.directory.glob("*.coffea")} == set(expected)

    # A comes back: a plain run over A's paths finds everything in that cache
    _start(server_a)
    rerun = chunkwise.run(fileset, METProcessor(), files_per_chunk=2, cache=cache, progress=False)
    assert rerun.n_processed == 0 and rerun.n_cached == len(expected)
    assert rerun.replicas == {} and rerun.retries == {}
    assert_same_output(rerun.output, oracle(R=files))


def test_a_file_on_no_replica_is_bad_under_its_logical_path(replicated: dict[str, Any]) -> None:
    server_a = replicated["a"]
    fileset = replicated["fileset"]
    gone = server_a.url(server_a.export_dir / "nowhere.root")
    fileset["R"]["files"][gone] = "Events"

    report = chunkwise.run(
        fileset,
        METProcessor(),
        replicas=replicated["replicas"],
        retries=0,
        progress=False,
    )
    assert_same_output(report.output, oracle(R=replicated["files"]))
    assert list(report.bad_files) == ["R"] and list(report.bad_files["R"]) == [gone]
    assert "[3011]" in report.bad_files["R"][gone]  # B's answer, the last one tried
    assert gone not in report.replicas.get("R", {})
    assert report.completeness == {"R": 3 / 4}
    assert_one_line_reasons(report)


def test_the_cli_replica_option(replicated: dict[str, Any], tmp_path: Path) -> None:
    source = tmp_path / "fileset.json"
    source.write_text(json.dumps(replicated["fileset"]))
    out = tmp_path / "out.coffea"
    (prefix, (alternative,)) = next(iter(replicated["replicas"].items()))

    with Timed("CLI --replica A=B --retries 0", replicated["b"]) as clock:
        result = subprocess.run(
            [
                sys.executable, "-m", "chunkwise", "run", str(source),
                "--processor", "chunkwise.examples:METProcessor",
                "--retries", "0", "--replica", f"{prefix}={alternative}",
                "--output", str(out), "--no-progress",
            ],
            capture_output=True,
            text=True,
            timeout=240,
        )  # fmt: skip
        clock.what = f"exit status {result.returncode}"
    assert clock.seconds < 120  # a subprocess that imports coffea
    assert result.returncode == 0, result.stdout + result.stderr
    assert "complete" in result.stdout and "INCOMPLETE" not in result.stdout
    assert "Traceback" not in result.stderr
    assert_same_output(load(out), oracle(R=replicated["files"]))


# -- 5. a non-ASCII file name -------------------------------------------------------------------
@pytest.mark.parametrize("where", ["xrootd", "local"])
def test_a_non_ascii_file_name_never_aborts_the_run(where: str, servers: Servers) -> None:
    directory = servers.directory()
    good = write_good(directory, "good", 1, seed=91)
    odd = write_nanoaod_like(directory / "mü_ñ.root", N_EVENTS, seed=92)
    if where == "xrootd":
        server = servers.server(directory)
        paths = [server.url(good[0]), server.url(odd)]
    else:
        paths = [str(good[0]), str(odd)]
    odd_path = paths[1]

    with Timed(f"non-ASCII name ({where})") as clock:
        try:
            report = chunkwise.run(fileset_of(D=paths), METProcessor(), progress=False)
        except Exception as exc:
            clock.what = f"RAISED {type(exc).__name__}"
            pytest.fail(f"the run aborted on {odd_path!r}: {type(exc).__name__}: {exc}")
        clock.what = "read" if report.complete else brief(report)
    assert clock.seconds < NO_HANG

    if report.complete:
        assert_same_output(report.output, oracle(D=[good[0], odd]))
    else:  # a bad file, with a reason that says what is wrong with it
        assert list(report.bad_files["D"]) == [odd_path]
        assert_one_line_reasons(report)
        assert_same_output(report.output, oracle(D=good))


# -- 6. coffea's NanoAOD samples over XRootD ------------------------------------------------------
class SumProcessor(processor.ProcessorABC):
    """Entries, the sum of MET_pt and the number of muons, per dataset."""

    def process(self, events: Any) -> Any:
        dataset = events.metadata["dataset"]
        return {
            dataset: {
                "events": len(events),
                "met": float(np.sum(events.MET.pt)),
                "muons": int(ak.sum(ak.num(events.Muon))),
            }
        }

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


@pytest.mark.filterwarnings("ignore:Branch .* already exists:RuntimeWarning")
def test_the_nanoaod_samples_over_xrootd(servers: Servers) -> None:
    if not (SAMPLES / "nano_dy.root").is_file():
        pytest.skip(f"no NanoAOD samples in {SAMPLES} (a fresh clone has no ../shared)")
    directory = servers.directory()
    for name in ("nano_dy.root", "nano_dimuon.root", "bad_delphes.root"):
        shutil.copy(SAMPLES / name, directory / name)
    truncated = directory / "nano_dy_truncated.root"
    truncated.write_bytes((SAMPLES / "nano_dy.root").read_bytes()[:150_000])
    server = servers.server(directory)
    url = server.url
    fileset = fileset_of(
        DY=[url(directory / "nano_dy.root"), url(truncated)],
        Data=[url(directory / "nano_dimuon.root"), url(directory / "bad_delphes.root")],
    )

    with Timed("NanoAOD samples (truncated, no tree)", server) as clock:
        report = chunkwise.run(fileset, SumProcessor(), progress=False)
        clock.what = brief(report)
    assert clock.seconds < NO_HANG

    out = report.output
    assert out["DY"]["events"] == 40 and out["Data"]["events"] == 40
    assert out["DY"]["met"] == pytest.approx(1253.3066, abs=1e-3)
    assert out["Data"]["met"] == pytest.approx(1706.5270, abs=1e-3)
    assert (out["DY"]["muons"], out["Data"]["muons"]) == (18, 84)
    assert report.bad_files.keys() == {"DY", "Data"}
    assert list(report.bad_files["DY"]) == [url(truncated)]
    assert report.bad_files["DY"][url(truncated)].startswith("OSError")
    assert list(report.bad_files["Data"]) == [url(directory / "bad_delphes.root")]
    assert "KeyInFileError" in report.bad_files["Data"][url(directory / "bad_delphes.root")]
    assert report.retries == {}  # both are permanent
    assert_one_line_reasons(report)


# -- the helper itself ----------------------------------------------------------------------------
def test_the_server_helper_stops_restarts_stalls_and_cleans_up() -> None:
    _require_xrootd()
    directory = export_dir()
    try:
        (path,) = write_good(directory, "h", 1, seed=99)
        with XRootDServer(directory) as server:
            port = server.port
            assert server.url(path) == f"root://127.0.0.1:{port}/{path}"
            assert server.url(path).startswith(f"root://127.0.0.1:{port}//tmp/")
            assert uproot.open(server.url(path), timeout=10)["Events"].num_entries == N_EVENTS
            server.stall()
            server.resume()
            server.restart()
            assert server.port == port and server.running
            assert server.proc is not None
            pid = server.proc.pid
            server.kill()
            assert not server.running
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)  # reaped: no zombie, no stray daemon
            workdir = server._workdir
        assert not workdir.exists()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- 7. a cache on root:// ----------------------------------------------------------------------
REMOTE_KEY = b"a group key of 32 bytes, for tests"


class RemoteCache:
    """A cache directory on a served export (owned by ``nobody``, who the daemon writes as),
    its ``root://`` URL, and files to run over."""

    def __init__(self, servers: Servers, *, served_data: bool) -> None:
        import pwd

        self.export = servers.directory()
        self.data = self.export / "data"
        self.data.mkdir()
        self.files = write_good(self.data, "f", 3, seed=70)
        self.disk = self.export / "cache"  # the cache as the server's disk holds it
        self.disk.mkdir()
        nobody = pwd.getpwnam("nobody")
        os.chown(self.disk, nobody.pw_uid, nobody.pw_gid)
        self.server = servers.server(self.export)
        self.url = self.server.url(self.disk)
        paths = [self.server.url(p) if served_data else str(p) for p in self.files]
        self.fileset = fileset_of(D=paths)

    def run(self, key: bytes | None = REMOTE_KEY, **options: Any) -> RunReport:
        return chunkwise.run(
            self.fileset,
            METProcessor(),
            files_per_chunk=1,
            cache=self.url,
            cache_key=key,
            progress=False,
            **options,
        )

    def entries(self) -> list[Path]:
        return sorted(self.disk.glob("*/*.coffea"))

    def temporaries(self) -> list[Path]:
        return sorted(p for p in self.disk.glob("*/.*") if p.name.endswith(".tmp"))


def test_a_root_cache_is_written_on_the_server_and_a_rerun_loads_it_all(
    servers: Servers,
) -> None:
    remote = RemoteCache(servers, served_data=True)
    with Timed("remote cache, first run", remote.server) as clock:
        first = remote.run()
        clock.what = f"{first.n_processed} processed, {first.n_cached} loaded"
    assert first.complete and first.n_processed == 3 and first.n_cached == 0
    assert first.cache_problem is None
    assert_same_output(first.output, oracle(D=remote.files))

    # on the server's disk: one entry per chunk, the manifest, and no temporary left
    entries = remote.entries()
    assert len(entries) == 3
    (tag_dir,) = {p.parent for p in entries}
    assert (tag_dir / "tag.json").is_file()
    assert remote.temporaries() == []
    assert {p.stem for p in entries} == {c.hash for c in first.chunks}
    # the bytes are those of a local keyed cache: a local ChunkCache verifies and loads them
    local = chunkwise.cache.ChunkCache(remote.disk, tag_dir.name, key=REMOTE_KEY)
    assert all(local.status(p.stem) == "cached" for p in entries)
    assert str(first.cache.directory) == f"{remote.url}/{tag_dir.name}"

    with Timed("remote cache, rerun", remote.server) as clock:
        rerun = remote.run()
        clock.what = f"{rerun.n_processed} processed, {rerun.n_cached} loaded"
    assert rerun.n_processed == 0 and rerun.n_cached == 3
    assert rerun.complete
    assert_same_output(rerun.output, first.output)
    assert rerun.events == first.events

    # status reads it too (the tag derived from the processor, as run does)
    status = chunkwise.status(
        remote.fileset,
        remote.url,
        processor_instance=METProcessor(),
        files_per_chunk=1,
        cache_key=REMOTE_KEY,
    )
    assert status.complete and status.overall.done == 3
    assert remote.url in status.summary()


def test_status_of_a_root_cache_asks_the_server_alike_for_any_number_of_records(
    servers: Servers,
) -> None:
    """``status`` of a root:// cache lists its tag once and reads its index: the requests the
    server logs do not grow with the records (bad files) or entries. Without the index, each
    record is read once, and the index written anew makes the next status constant again."""
    import pwd

    export = servers.directory()
    data = export / "data"
    data.mkdir()
    # In sorted order: k_a, k_b (good), k_c (missing) for each k, so that each of the 8 chunks
    # of 3 files has one bad file, and a record.
    good = []
    for i, path in enumerate(write_good(data, "f", 16, seed=71)):
        good.append(str(path.rename(data / f"{i // 2:02d}_{'ab'[i % 2]}.root")))
    missing = [str(data / f"{k:02d}_c.root") for k in range(8)]
    disk = export / "cache"
    disk.mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(disk, nobody.pw_uid, nobody.pw_gid)
    server = servers.server(export, trace=True)
    url = server.url(disk)
    fileset = fileset_of(D=good + missing)
    split = chunkwise.SplitOptions(files_per_chunk=3)
    report = chunkwise.run(fileset, METProcessor(), split=split, cache=url, cache_key=REMOTE_KEY,
                           progress=False)  # fmt: skip
    assert report.files_total == {"D": 24} and len(report.bad_files["D"]) == 8
    (tag_dir,) = [p for p in disk.iterdir() if p.is_dir()]
    records = sorted(tag_dir.glob("*.salvage.json"))
    assert len(records) == 8 and (tag_dir / "index.json").is_file()

    def looked_up() -> tuple[Any, list[str]]:
        before = len(server.requests())
        status = chunkwise.status(fileset, url, cache_key=REMOTE_KEY)
        time.sleep(0.2)  # the daemon's log is written as it answers
        return status, server.requests()[before:]

    status, asked = looked_up()
    assert set(status.failed["D"]) == set(missing) and status.split == split
    assert status.overall.files_done == 16
    assert asked.count("dirlist") <= 3 and asked.count("open") <= 3, asked
    constant = len(asked)

    (tag_dir / "index.json").unlink()  # as if lost: every record is read once
    cold, asked_cold = looked_up()
    assert cold.failed == status.failed and not cold.notes
    assert asked_cold.count("open") >= len(records) + 2, asked_cold
    again, asked_again = looked_up()  # the index written anew
    assert again.failed == status.failed
    assert len(asked_again) == constant, (asked, asked_again)
    print(f"status of a root:// cache with {len(records)} records: {constant} requests with "
          f"the index, {len(asked_cold)} without it: {asked}")  # fmt: skip


def test_a_root_cache_without_a_key_is_refused_before_any_work(servers: Servers) -> None:
    remote = RemoteCache(servers, served_data=False)
    with pytest.raises(chunkwise.cache.CacheError) as caught:
        remote.run(key=None)
    message = str(caught.value)
    assert "\n" not in message
    assert "root:// cache needs a key" in message and "--cache-key-file" in message
    assert list(remote.disk.iterdir()) == []  # nothing made on the server
    with pytest.raises(chunkwise.cache.CacheError, match="needs a key"):
        chunkwise.status(remote.fileset, remote.url, tag="t", files_per_chunk=1)


def test_a_root_cache_entry_truncated_on_the_server_is_corrupt_and_recomputed(
    servers: Servers,
) -> None:
    remote = RemoteCache(servers, served_data=False)
    first = remote.run()
    victim = remote.entries()[1]
    blob = victim.read_bytes()
    victim.write_bytes(blob[: len(blob) // 2])  # a torn entry, as a broken copy leaves it

    with pytest.warns(chunkwise.cache.CorruptCacheEntryWarning, match="corrupt"):
        rerun = remote.run()
    assert rerun.n_processed == 1 and rerun.n_cached == 2
    (redone,) = [r for r in rerun.chunks if r.status == "processed"]
    assert redone.hash == victim.stem
    assert_same_output(rerun.output, first.output)
    assert victim.read_bytes() == blob  # written again, whole
    assert remote.temporaries() == []


class _Forged:
    """Unpickling this creates a file: the proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_a_root_cache_with_another_key_trusts_nothing_and_unpickles_nothing(
    servers: Servers, tmp_path: Path
) -> None:
    remote = RemoteCache(servers, served_data=False)
    first = remote.run()
    entries = remote.entries()
    tag = entries[0].parent.name
    # a forger without the key replaces one entry with a pickle that acts when loaded
    import pickle

    marker = tmp_path / "unpickled"
    forger = chunkwise.cache.ChunkCache(remote.url, tag, key=b"the forger's own key, 32 bytes")
    forged = forger.encode_pickled(entries[0].stem, pickle.dumps(_Forged(marker)), {})
    entries[0].write_bytes(forged)

    with pytest.warns(chunkwise.cache.CorruptCacheEntryWarning, match="digest does not match"):
        rerun = remote.run()
    assert not marker.exists()
    assert rerun.n_processed == 1 and rerun.n_cached == 2
    assert_same_output(rerun.output, first.output)

    # and a run with another key takes none of the entries: all are recomputed
    with pytest.warns(chunkwise.cache.CorruptCacheEntryWarning):
        other = remote.run(key=b"another key that is 32 bytes long")
    assert other.n_processed == 3 and other.n_cached == 0
    assert not marker.exists()


def test_a_root_cache_server_killed_mid_write_leaves_no_torn_entry(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fsspec_xrootd.xrootd import XRootDFile

    remote = RemoteCache(servers, served_data=False)
    monkeypatch.setattr(chunkwise.store.xrootd, "REMOTE_BLOCK", 1024)  # an entry is many requests
    write = XRootDFile.write
    entries_started: list[str] = []

    def write_then_die(self: Any, data: bytes) -> int:
        name = Path(self.path).name
        if ".coffea" in name and name not in entries_started:
            entries_started.append(name)
            if len(entries_started) == 2:  # the second entry: one block, then the server dies
                written = write(self, data)
                remote.server.kill()
                return written
        return write(self, data)

    monkeypatch.setattr(XRootDFile, "write", write_then_die)
    with Timed("remote cache, server killed mid-write", remote.server) as clock:
        with warnings_ignored():
            first = remote.run()
        clock.what = f"saved {len(remote.entries())} entries; {first.cache_problem}"
    assert clock.seconds < NO_HANG
    monkeypatch.setattr(XRootDFile, "write", write)
    # the result is complete; the cache says what it could not save
    assert first.complete and first.n_processed == 3
    assert first.cache_problem is not None and "1 of 3 entries were saved" in first.cache_problem
    assert_same_output(first.output, oracle(D=remote.files))
    # on disk: the first entry, whole; the second only as a partial temporary file
    entries = remote.entries()
    assert len(entries) == 1
    (leftover,) = remote.temporaries()
    assert 0 < leftover.stat().st_size < 2048
    tag = entries[0].parent.name
    local = chunkwise.cache.ChunkCache(remote.disk, tag, key=REMOTE_KEY)
    assert local.status(entries[0].stem) == "cached"

    remote.server.restart()
    rerun = remote.run()
    assert rerun.n_cached == 1 and rerun.n_processed == 2
    assert_same_output(rerun.output, first.output)
    assert len(remote.entries()) == 3


def salvage_over_root(remote: RemoteCache, **options: Any) -> tuple[dict[str, Any], RunReport]:
    """One chunk of the three files and a missing one, on ``remote``'s cache: a salvage
    record on the server."""
    missing = str(remote.data / "f_9-missing.root")
    fileset = fileset_of(D=[*map(str, remote.files), missing])
    report = chunkwise.run(fileset, METProcessor(), files_per_chunk=4, cache=remote.url,
                           cache_key=REMOTE_KEY, progress=False, **options)  # fmt: skip
    ((chunk,),) = [report.chunks]
    assert chunk.status == "salvaged" and set(chunk.bad_files["D"]) == {missing}
    return fileset, report


@pytest.mark.parametrize(
    ("forgery", "why"),
    [
        ("another-key", "HMAC does not match"),
        ("old-format", "older chunkwise"),
        ("torn", "not whole JSON"),
        ("another-tag", "HMAC does not match"),
    ],
)
def test_a_root_cache_ignores_a_record_that_its_key_does_not_verify(
    forgery: str, why: str, servers: Servers
) -> None:
    remote = RemoteCache(servers, served_data=False)
    fileset, first = salvage_over_root(remote)
    (chunk,) = first.chunks
    tag = first.cache.tag
    victim = remote.disk / tag / f"{chunk.hash}.salvage.json"
    sealed = json.loads(victim.read_text())
    assert sealed["record"] == chunkwise.cache.RECORD_FORMAT
    assert sealed["mac"].startswith("hmac-sha256:")
    # written with the key, it verifies and is used: the rerun goes on from it
    rerun = chunkwise.run(fileset, METProcessor(), files_per_chunk=4, cache=remote.url,
                          cache_key=REMOTE_KEY, progress=False)  # fmt: skip
    assert str(rerun.chunks[0].exception).startswith("failed in an earlier run: ")

    record = chunkwise.cache.ChunkCache(remote.url, tag, key=REMOTE_KEY).load_salvage(chunk.hash)
    forged = dataclasses.replace(record, error="FORGED")
    if forgery == "another-key":
        forger = chunkwise.cache.ChunkCache(remote.url, tag, key=b"the forger's own 32-byte key!!")
        forger.save_salvage(forged)  # over XRootD, as a forger without the key would
    elif forgery == "old-format":  # as the previous chunkwise wrote it: not authenticated
        old = {"format": chunkwise.cache.CACHE_FORMAT, **forged.to_dict()}
        victim.write_text(json.dumps(old, indent=1, sort_keys=True))
    elif forgery == "torn":
        victim.write_bytes(victim.read_bytes()[:100])
    else:  # the same chunk's record of another tag, authentic there, copied on the server
        chunkwise.cache.ChunkCache(remote.url, "other", key=REMOTE_KEY).save_salvage(forged)
        victim.write_bytes((remote.disk / "other" / victim.name).read_bytes())
    with pytest.warns(chunkwise.cache.CorruptCacheEntryWarning) as caught:
        again = chunkwise.run(fileset, METProcessor(), files_per_chunk=4, cache=remote.url,
                              cache_key=REMOTE_KEY, progress=False)  # fmt: skip
    (line,) = [str(w.message) for w in caught if "salvage record" in str(w.message)]
    assert f"ignoring the salvage record {remote.url}/{tag}/{chunk.hash}.salvage.json" in line
    assert why in line and "the chunk is run again" in line
    (redone,) = again.chunks
    assert str(redone.exception).startswith("1 file(s) failed: ")  # run again, not resumed
    assert "FORGED" not in str(redone.exception)
    assert_same_output(again.output, oracle(D=remote.files))  # never wrong
    assert json.loads(victim.read_text())["mac"] == sealed["mac"]  # written again, whole


def test_a_forged_manifest_on_a_root_cache_never_makes_an_explicit_tag_accepted(
    servers: Servers,
) -> None:
    remote = RemoteCache(servers, served_data=False)
    first = remote.run(cache_tag="mine")
    assert first.n_processed == 3
    manifest = remote.disk / "mine" / "tag.json"
    authentic = json.loads(manifest.read_text())
    assert authentic["mac"].startswith("hmac-sha256:")
    changed = METProcessor()
    changed.note = "other settings"  # another manifest
    claim = chunkwise.tag.tag_manifest(changed)
    # a forger who can write on the server, but has no key, claims the other settings
    manifest.write_text(json.dumps({**claim, "record": authentic["record"],
                                    "mac": authentic["mac"]}))  # fmt: skip
    with pytest.warns(chunkwise.cache.CorruptCacheEntryWarning, match="HMAC does not match"):
        with pytest.raises(chunkwise.cache.CacheError, match="no tag.json that verifies"):
            chunkwise.run(remote.fileset, changed, files_per_chunk=1, cache=remote.url,
                          cache_key=REMOTE_KEY, cache_tag="mine", progress=False)  # fmt: skip
    assert len(list((remote.disk / "mine").glob("*.coffea"))) == 3  # nothing mixed in
    # the processor that made the tag gets its tag back: the manifest is written again
    with pytest.warns(chunkwise.cache.CorruptCacheEntryWarning, match="HMAC does not match"):
        again = remote.run(cache_tag="mine", force_tag=True)
    assert again.n_cached == 3
    assert json.loads(manifest.read_text()) == authentic


class warnings_ignored:
    """The cache's warnings while its server is down (entries it cannot read are corrupt)."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", chunkwise.cache.CorruptCacheEntryWarning)

    def __exit__(self, *exc: object) -> None:
        self._catch.__exit__(*exc)


def test_the_cli_runs_with_a_root_cache_and_reads_its_status(
    servers: Servers, tmp_path: Path
) -> None:
    remote = RemoteCache(servers, served_data=False)
    source = tmp_path / "fileset.json"
    source.write_text(json.dumps(remote.fileset))
    keyfile = tmp_path / "key"
    keyfile.write_bytes(REMOTE_KEY)
    keyfile.chmod(0o600)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "chunkwise", *args, "--files-per-chunk", "1"]
        return subprocess.run(command, capture_output=True, text=True, timeout=240)

    run = ["run", str(source), "--processor", "chunkwise.examples:METProcessor"]
    refused = cli(*run, "--cache", remote.url, "--no-progress")
    assert refused.returncode == 2, refused.stderr
    assert "needs a key" in refused.stderr and "Traceback" not in refused.stderr
    assert list(remote.disk.iterdir()) == []

    keyed = ["--cache", remote.url, "--cache-key-file", str(keyfile)]
    done = cli(*run, *keyed, "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("cache: ")]
    assert line.startswith(f"cache: {remote.url}/")
    tag = line.rsplit("/", 1)[1]
    assert len(remote.entries()) == 3

    status = cli("status", str(source), *keyed, "--tag", tag)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "all 3 chunks are complete" in status.stdout
    untagged = cli("status", str(source), *keyed)  # the one tag, found over XRootD
    assert untagged.returncode == 0, untagged.stdout + untagged.stderr
    assert untagged.stdout == status.stdout


class KeyedCli:
    """``python -m chunkwise ARGS`` with a key file for ``RemoteCache``'s cache."""

    def __init__(self, tmp_path: Path) -> None:
        self.keyfile = tmp_path / "key"
        self.keyfile.write_bytes(REMOTE_KEY)
        self.keyfile.chmod(0o600)

    def __call__(self, *args: str | Path, key: bool = True) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "chunkwise", *map(str, args)]
        if key:
            command += ["--cache-key-file", str(self.keyfile)]
        return subprocess.run(command, capture_output=True, text=True, timeout=240)


def one_line_error(result: subprocess.CompletedProcess[str], *wanted: str) -> str:
    """Assert exit 2 with one line on stderr holding ``wanted``; return that line."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    for text in wanted:
        assert text in line
    return line


def test_status_without_a_tag_finds_the_one_tag_of_a_root_cache(
    servers: Servers, tmp_path: Path
) -> None:
    remote = RemoteCache(servers, served_data=False)
    first = remote.run()
    # one chunk left out, so that the counts are not all alike
    (victim,) = [p for p in remote.entries() if p.stem == first.chunks[1].hash]
    victim.unlink()
    tag = first.cache.tag

    found = chunkwise.cache_status.find_tag(remote.url, key=REMOTE_KEY)
    assert found == tag
    given = chunkwise.status(remote.fileset, remote.url, tag=tag, files_per_chunk=1,
                             cache_key=REMOTE_KEY)  # fmt: skip
    looked_up = chunkwise.status(remote.fileset, remote.url, files_per_chunk=1,
                                 cache_key=REMOTE_KEY)  # fmt: skip
    assert looked_up.cache.tag == tag
    assert given.overall == looked_up.overall and given.datasets == looked_up.datasets
    assert looked_up.overall.done == 2 and looked_up.overall.never_run == 1
    assert looked_up.incomplete == [victim.stem]

    source = tmp_path / "fileset.json"
    source.write_text(json.dumps(remote.fileset))
    cli = KeyedCli(tmp_path)
    tagged = cli("status", source, "--cache", remote.url, "--files-per-chunk", "1", "--tag", tag)
    untagged = cli("status", source, "--cache", remote.url, "--files-per-chunk", "1")
    assert tagged.returncode == untagged.returncode == 1, untagged.stdout + untagged.stderr
    assert "1 of 3 chunks are not complete" in untagged.stdout
    assert untagged.stdout == tagged.stdout

    # without the key nothing is asked of the server: the same one line as run's
    with pytest.raises(chunkwise.cache.CacheError, match="needs a key"):
        chunkwise.status(remote.fileset, remote.url, files_per_chunk=1)
    keyless = cli("status", source, "--cache", remote.url, "--files-per-chunk", "1", key=False)
    one_line_error(keyless, "needs a key", "--cache-key-file")


def test_status_without_a_tag_on_a_root_cache_with_two_tags_names_both(
    servers: Servers, tmp_path: Path
) -> None:
    remote = RemoteCache(servers, served_data=False)
    tag = remote.run().cache.tag
    # a second tag (an entry of an earlier version of the processor), and a hidden directory,
    # which is no tag
    chunkwise.cache.ChunkCache(remote.url, "old", key=REMOTE_KEY).save("e" * 64, {"old": 1})
    (remote.disk / ".hidden").mkdir()
    make_readable(remote.disk)
    both = sorted([tag, "old"])
    expected = f"holds several tags ({both[0]!r}, {both[1]!r}): pick one"
    with pytest.raises(ValueError) as caught:
        chunkwise.status(remote.fileset, remote.url, files_per_chunk=1, cache_key=REMOTE_KEY)
    assert expected in str(caught.value) and "\n" not in str(caught.value)

    source = tmp_path / "fileset.json"
    source.write_text(json.dumps(remote.fileset))
    cli = KeyedCli(tmp_path)
    result = cli("status", source, "--cache", remote.url, "--files-per-chunk", "1")
    one_line_error(result, expected, "--tag", "--processor")
    # the local cache's error is the same line but for the cache's name
    local = tmp_path / "local"
    shutil.copytree(remote.disk, local)
    local_result = cli("status", source, "--cache", local, "--files-per-chunk", "1")
    assert local_result.stderr.replace(str(local), remote.url) == result.stderr


def test_cache_ls_verify_and_prune_on_a_root_cache(servers: Servers, tmp_path: Path) -> None:
    remote = RemoteCache(servers, served_data=False)
    current = remote.run().cache
    assert remote.run(cache_tag="old").cache.tag == "old"
    cli = KeyedCli(tmp_path)
    old_dir = remote.disk / "old"
    assert old_dir.is_dir() and (remote.disk / current.tag).is_dir()

    # ls: each tag with its processor, entries and the size of what chunkwise wrote there
    listed = cli("cache", "ls", remote.url)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[2:]}
    assert set(rows) == {current.tag, "old"}
    for tag in rows:
        files = list((remote.disk / tag).iterdir())
        manifest = json.loads((remote.disk / tag / "tag.json").read_text())
        size = chunkwise.cli.cache.size(sum(p.stat().st_size for p in files))
        assert rows[tag][1] == manifest["processor"]
        assert rows[tag][2] == "3"
        assert " ".join(rows[tag][3:5]) == size
    summaries = chunkwise.cache.list_tags(remote.url, key=REMOTE_KEY)
    assert [(t.tag, t.entries) for t in summaries] == sorted([(current.tag, 3), ("old", 3)])
    # verify, of every tag, now that they can be listed
    verified = cli("cache", "verify", remote.url)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.count("3 entries verify, 0 corrupt") == 2

    # the key, as for every command: refused before any request
    one_line_error(cli("cache", "ls", remote.url, key=False), "needs a key")
    one_line_error(cli("cache", "prune", remote.url, "--keep", current.tag, key=False),
                   "needs a key")  # fmt: skip
    with pytest.raises(chunkwise.cache.CacheError, match="needs a key"):
        chunkwise.cache.remove_tag(remote.url, "old")
    assert old_dir.is_dir()

    # a file that chunkwise did not write: the tag is left whole
    before = sorted(p.name for p in old_dir.iterdir())
    notes = old_dir / "my-notes.txt"
    notes.write_text("not chunkwise's")
    make_readable(notes)
    dry = cli("cache", "prune", remote.url, "--keep", current.tag, "--dry-run")
    assert dry.returncode == 0 and "would remove old (3 entries" in dry.stdout, dry.stderr
    kept = cli("cache", "prune", remote.url, "--keep", current.tag)
    assert kept.returncode == 1, kept.stdout + kept.stderr
    assert "kept old" in kept.stderr and "'my-notes.txt', which chunkwise did not write" in (
        kept.stderr
    )
    assert sorted(p.name for p in old_dir.iterdir()) == sorted([*before, notes.name])
    notes.unlink()
    # nor is one with a directory in it, even under an entry's name
    odd = old_dir / f"{'d' * 64}.coffea"
    odd.mkdir()
    make_readable(odd)
    with pytest.raises(chunkwise.cache.CacheError, match="which chunkwise did not write"):
        chunkwise.cache.remove_tag(remote.url, "old", key=REMOTE_KEY)
    assert sorted(p.name for p in old_dir.iterdir()) == sorted([*before, odd.name])
    odd.rmdir()

    pruned = cli("cache", "prune", remote.url, "--keep", current.tag)
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert "removed old (3 entries" in pruned.stdout
    assert not old_dir.exists()  # gone from the server's disk
    assert len(list((remote.disk / current.tag).glob("*.coffea"))) == 3
    assert remote.run().n_cached == 3  # the current tag is whole
    with pytest.raises(chunkwise.cache.CacheError, match="does not exist"):
        chunkwise.cache.remove_tag(remote.url, "old", key=REMOTE_KEY)
    one_line_error(cli("cache", "prune", remote.url, "--keep", "nothing-like-it"),
                   "none of nothing-like-it")  # fmt: skip


def test_cache_housekeeping_on_a_stopped_root_server_is_one_line(
    servers: Servers, tmp_path: Path
) -> None:
    remote = RemoteCache(servers, served_data=False)
    tag = remote.run().cache.tag
    source = tmp_path / "fileset.json"
    source.write_text(json.dumps(remote.fileset))
    cli = KeyedCli(tmp_path)
    remote.server.stop()

    commands = {
        "ls": ("cache", "ls", remote.url),
        "verify": ("cache", "verify", remote.url),
        "prune": ("cache", "prune", remote.url, "--keep", "other"),
        "status": ("status", source, "--cache", remote.url, "--files-per-chunk", "1"),
    }
    for name, args in commands.items():
        with Timed(f"remote cache {name}, server stopped", remote.server) as clock:
            result = cli(*args)
        assert clock.seconds < NO_HANG
        one_line_error(result, remote.url, "check that the server is up")
    calls = {
        "find_tag": lambda: chunkwise.cache_status.find_tag(remote.url, key=REMOTE_KEY),
        "list_tags": lambda: chunkwise.cache.list_tags(remote.url, key=REMOTE_KEY),
        "remove_tag": lambda: chunkwise.cache.remove_tag(remote.url, tag, key=REMOTE_KEY),
    }
    for name, call in calls.items():
        with pytest.raises(chunkwise.cache.CacheError) as caught:
            call()
        assert "\n" not in str(caught.value) and "Connection" in str(caught.value), name
    assert len(remote.entries()) == 3  # nothing removed
