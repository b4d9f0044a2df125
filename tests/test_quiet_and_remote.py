"""chunkwise.run is quiet in every process, leaves no global state behind, and ships the
processor to dask workers that cannot import it.

- Quiet: a run over good and bad files, on a process pool and on a multi-process dask cluster,
  prints nothing but what the script itself prints (checked on the real stdout and stderr of a
  child process and its workers); ``quiet=False`` brings the retry warnings and the bad files'
  tracebacks back.
- Global state: ``coffea.util.coffea_console.quiet`` and ``warnings.showwarning`` are what they
  were after a run returns, after it raises, and after two runs in two threads at once.
- Remote: a real ``dask scheduler`` and ``dask worker`` (separate processes, started in an empty
  directory without the test's modules on their path) run a processor defined in a module only
  the test process can import; a processor whose module imports a helper the worker lacks fails
  with ``ProcessorUnavailableError`` before any work.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from coffea import processor
from coffea.nanoevents import NanoAODSchema
from coffea.util import coffea_console

import chunkwise
from chunkwise._coffea import ProcessorUnavailableError
from chunkwise.examples import METProcessor, write_nanoaod_like

pytestmark = [
    pytest.mark.filterwarnings("ignore:Missing cross-reference index"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

N_EVENTS = 200
SUBPROCESS_TIMEOUT = 240


# -- files ----------------------------------------------------------------------------------
def _write_files(directory: Path, n_good: int, seed: int) -> dict[str, Any]:
    """``n_good`` good files, a missing path and a truncated copy of a good file."""
    directory.mkdir(parents=True, exist_ok=True)
    good = [
        write_nanoaod_like(directory / f"good_{i}.root", N_EVENTS, seed=seed + i)
        for i in range(n_good)
    ]
    truncated = directory / "truncated.root"
    blob = good[0].read_bytes()
    truncated.write_bytes(blob[: len(blob) // 3])
    missing = directory / "missing.root"
    return {"good": [str(p) for p in good], "bad": [str(missing), str(truncated)]}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _write_files(tmp_path_factory.mktemp("files"), n_good=4, seed=1)


def _fileset(dataset: str, paths: list[str]) -> dict[str, Any]:
    return {dataset: {"files": dict.fromkeys(paths, "Events")}}


def _oracle(fileset: dict[str, Any], processor_instance: Any) -> Any:
    """A plain in-process coffea Runner over (good) files."""
    runner = processor.Runner(processor.IterativeExecutor(status=False), schema=NanoAODSchema)
    return runner(fileset, processor_instance=processor_instance)


def assert_same_output(got: Any, expected: Any) -> None:
    datasets = set(got["MET"].axes["dataset"])
    assert datasets == set(expected["MET"].axes["dataset"])
    for dataset in datasets:
        np.testing.assert_array_equal(
            got["MET"][{"dataset": dataset}].values(flow=True),
            expected["MET"][{"dataset": dataset}].values(flow=True),
        )
    assert dict(got["cutflow"]) == dict(expected["cutflow"])


# -- 1. quiet in every process ----------------------------------------------------------------
QUIET_SCRIPT = r"""
import json
import sys
import warnings

# Legitimate processor-level warnings (NanoAODSchema on synthetic files), shown once by design.
warnings.filterwarnings("ignore", message="Missing cross-reference", category=RuntimeWarning)

from coffea import processor
from coffea.nanoevents import NanoAODSchema

import chunkwise
from chunkwise.examples import METProcessor

fileset = json.loads(sys.argv[1])
kind = sys.argv[2]
n_files = sum(len(v["files"]) for v in fileset.values())


def go(executor):
    runner = processor.Runner(executor, schema=NanoAODSchema, skipbadfiles=True)
    for files_per_chunk in (1, n_files):
        split = chunkwise.SplitOptions(files_per_chunk=files_per_chunk)
        report = chunkwise.run(fileset, METProcessor(), runner, split=split, progress=False)
        print(f"=== summary files_per_chunk={files_per_chunk}", flush=True)
        print(report.summary(), flush=True)
        print(json.dumps(report.events), flush=True)
        print("=== end", flush=True)


if kind == "futures":
    go(processor.FuturesExecutor(workers=2, status=False))  # coffea's default retries=3
else:
    import distributed

    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        go(processor.DaskExecutor(client=client, status=False))  # retries=3
"""

FORBIDDEN = ["Traceback", "Performed attempt", "Compute Failed", "Preprocessing", "Processing"]


def _split_summaries(text: str) -> tuple[list[str], str]:
    """The blocks between the script's markers, and everything printed outside them."""
    blocks, outside, current = [], [], None
    for line in text.splitlines():
        if line.startswith("=== summary"):
            current = []
        elif line == "=== end" and current is not None:
            blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
        else:
            outside.append(line)
    return blocks, "\n".join(outside)


@pytest.mark.parametrize("kind", ["futures", "dask"])
def test_quiet_in_every_process(kind: str, files: dict[str, Any]) -> None:
    if kind == "dask":
        pytest.importorskip("distributed")
    fileset = _fileset("A", files["good"] + files["bad"])
    result = subprocess.run(
        [sys.executable, "-c", QUIET_SCRIPT, json.dumps(fileset), kind],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    combined = result.stdout + result.stderr
    assert result.returncode == 0, combined[-4000:]
    for text in FORBIDDEN:
        assert text not in combined, f"{text!r} printed:\n{combined[-4000:]}"

    blocks, outside = _split_summaries(result.stdout)
    assert len(blocks) == 2, combined[-4000:]
    for block in blocks:
        summary, events = block.rsplit("\n", 1)
        assert json.loads(events) == {"A": len(files["good"]) * N_EVENTS}
        bad_lines = [line for line in summary.splitlines() if line.lstrip().startswith("bad:")]
        assert len(bad_lines) == 2, summary
        for path in files["bad"]:
            assert sum(path in line for line in bad_lines) == 1, summary
        assert "INCOMPLETE" in summary
    # nothing about the bad files (a log line, a warning) was printed by any process; only
    # distributed's own log lines (its cluster starting and stopping) may be there
    noise = outside + "\n" + result.stderr
    foreign = [
        line for line in noise.splitlines() if line.strip() and " - distributed." not in line
    ]
    assert foreign == [], noise[-4000:]
    for path in files["bad"]:
        assert path not in noise, noise[-4000:]
    for text in ("FileNotFoundError", "OSError", "bad file"):
        assert text not in noise, noise[-4000:]


# -- 2. quiet=False brings the detail back ----------------------------------------------------
def test_quiet_false_logs_tracebacks(
    files: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    missing = files["bad"][0]
    fileset = _fileset("A", [files["good"][0], missing])
    runner = processor.Runner(
        processor.IterativeExecutor(status=False, retries=1),
        schema=NanoAODSchema,
        skipbadfiles=True,
    )
    caplog.set_level(logging.WARNING, logger="chunkwise")
    # chunkwise's own retries replace the executor's (a missing file is not retried at all),
    # so coffea's "Performed attempt" warnings never come
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", "Missing cross-reference", RuntimeWarning)
        report = chunkwise.run(
            fileset, METProcessor(), runner, files_per_chunk=1, quiet=False, progress=False
        )
    assert report.retries == {}
    assert set(report.bad_files["A"]) == {missing}
    records = [r for r in caplog.records if r.name == "chunkwise"]
    about_missing = [r for r in records if missing in r.getMessage()]
    assert len(about_missing) == 1, [r.getMessage() for r in records]
    message = about_missing[0].getMessage()
    assert "Traceback (most recent call last)" in message
    assert "FileNotFoundError" in message
    assert about_missing[0].levelno >= logging.WARNING


def test_quiet_true_drops_retries_and_logs_nothing(
    files: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The contrast to the test above: the same run, quiet."""
    missing = files["bad"][0]
    fileset = _fileset("A", [files["good"][0], missing])
    runner = processor.Runner(
        processor.IterativeExecutor(status=False, retries=1),
        schema=NanoAODSchema,
        skipbadfiles=True,
    )
    caplog.set_level(logging.DEBUG, logger="chunkwise")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message="Missing cross-reference")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        report = chunkwise.run(fileset, METProcessor(), runner, files_per_chunk=1, progress=False)
    assert set(report.bad_files["A"]) == {missing}
    assert not [w for w in caught if "Performed attempt" in str(w.message)]
    assert not [r for r in caplog.records if r.name == "chunkwise"]


# -- 3. no global state changed ---------------------------------------------------------------
def _global_state() -> tuple[bool, Any]:
    return coffea_console.quiet, warnings.showwarning


class _ZeroDivisionProcessor(METProcessor):
    def process(self, events: Any) -> Any:
        return 1 / 0


class _SlowMET(METProcessor):
    """METProcessor that takes a while, so that two runs in two threads overlap, and notes
    when each ``process`` call ran (in ``log_dir``) so the test can check that they did."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = str(log_dir)

    def process(self, events: Any) -> Any:
        start = time.monotonic()
        time.sleep(0.1)
        out = super().process(events)
        dataset = events.metadata["dataset"]
        with open(Path(self.log_dir) / dataset, "a") as log:
            log.write(f"{start} {time.monotonic()}\n")
        return out


def _intervals(path: Path) -> list[tuple[float, float]]:
    return [tuple(map(float, line.split())) for line in path.read_text().splitlines()]


def _sentinel_showwarning(*args: Any, **kwargs: Any) -> None:  # pragma: no cover - never called
    raise AssertionError("unused")


@pytest.mark.parametrize("start", ["defaults", "caller-set"])
def test_global_state_is_restored_after_return_and_after_raise(
    start: str, files: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    if start == "caller-set":  # values the caller chose, not coffea's or Python's defaults
        monkeypatch.setattr(coffea_console, "quiet", not coffea_console.quiet)
        monkeypatch.setattr(warnings, "showwarning", _sentinel_showwarning)
    before = _global_state()
    fileset = _fileset("A", files["good"][:2] + files["bad"])
    runner = processor.Runner(
        processor.IterativeExecutor(status=False, retries=1),
        schema=NanoAODSchema,
        skipbadfiles=True,
    )
    report = chunkwise.run(fileset, METProcessor(), runner, files_per_chunk=2, progress=False)
    assert report.events == {"A": 2 * N_EVENTS}
    after = _global_state()
    assert after[0] is before[0] and after[1] is before[1]

    with pytest.raises(Exception, match="ZeroDivisionError") as raised:
        chunkwise.run(
            _fileset("A", files["good"][:1]), _ZeroDivisionProcessor(), runner, progress=False
        )
    assert isinstance(raised.value.__cause__, ZeroDivisionError)
    after = _global_state()
    assert after[0] is before[0] and after[1] is before[1]


def test_two_runs_in_two_threads(tmp_path: Path) -> None:
    sets = {
        "X": _write_files(tmp_path / "x", n_good=3, seed=100),
        "Y": _write_files(tmp_path / "y", n_good=2, seed=200),
    }
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    before = _global_state()
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}

    def work(dataset: str) -> None:
        try:
            runner = processor.Runner(
                processor.IterativeExecutor(status=False, retries=0),
                schema=NanoAODSchema,
                skipbadfiles=True,
            )
            fileset = _fileset(dataset, sets[dataset]["good"] + sets[dataset]["bad"])
            barrier.wait(timeout=30)
            results[dataset] = chunkwise.run(
                fileset, _SlowMET(log_dir), runner, files_per_chunk=1, progress=False
            )
        except BaseException as exc:  # reported by the main thread
            results[dataset] = exc

    threads = [threading.Thread(target=work, args=(d,), daemon=True) for d in sets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a run did not finish in 120 s"
    for dataset, info in sets.items():
        report = results[dataset]
        assert not isinstance(report, BaseException), repr(report)
        assert report.events == {dataset: len(info["good"]) * N_EVENTS}
        assert set(report.bad_files[dataset]) == set(info["bad"])
        assert set(report.output["MET"].axes["dataset"]) == {dataset}
        assert report.output["cutflow"]["all events"] == len(info["good"]) * N_EVENTS
    # the two runs really were processing at the same time
    x, y = _intervals(log_dir / "X"), _intervals(log_dir / "Y")
    assert len(x) == 3 and len(y) == 2
    assert any(a0 < b1 and b0 < a1 for a0, a1 in x for b0, b1 in y)
    after = _global_state()
    assert after[0] is before[0] and after[1] is before[1]


def test_an_in_process_run_leaves_the_users_class_as_it_is(
    files: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Units that run in the caller's process get copies of the processor, never a class
    loaded back by value over the user's own: a module global changed after a run counts in
    the next one, and the class's functions are the module's."""
    (tmp_path / "scaled.py").write_text(
        textwrap.dedent(
            """
            from chunkwise.examples import METProcessor

            SCALE = 1


            class Scaled(METProcessor):
                def process(self, events):
                    out = super().process(events)
                    out["cutflow"]["scaled events"] += SCALE * len(events)
                    return out
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import scaled  # type: ignore[import-not-found]

    process = scaled.Scaled.__dict__["process"]
    fileset = _fileset("A", files["good"][:1])
    split = chunkwise.SplitOptions(files_per_chunk=1)
    first = chunkwise.run(fileset, scaled.Scaled(), split=split, progress=False)
    assert scaled.Scaled.__dict__["process"] is process
    assert process.__globals__ is vars(scaled)
    scaled.SCALE = 2
    second = chunkwise.run(fileset, scaled.Scaled(), split=split, progress=False)
    n = first.events["A"]
    assert first.output["cutflow"]["scaled events"] == n
    assert second.output["cutflow"]["scaled events"] == 2 * n


# -- 4. processors reach remote workers -------------------------------------------------------
def _stop(proc: subprocess.Popen[Any]) -> None:
    """Terminate one process we started, by its PID; kill it if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _call_with_timeout(fn: Callable[[], Any], timeout: float) -> Any:
    """``fn()`` on a daemon thread; fail the test (not hang) if it takes longer than timeout."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"did not finish within {timeout} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A dask scheduler and one worker, as separate processes that know nothing of the
    directory the test writes its processor modules into."""
    distributed = pytest.importorskip("distributed")
    base = tmp_path_factory.mktemp("remote")
    modules = base / "modules"  # only the test process gets this on its path
    worker_cwd = base / "worker_cwd"  # empty: nothing importable from the worker's cwd
    scratch = base / "scratch"
    for directory in (modules, worker_cwd, scratch):
        directory.mkdir()
    scheduler_file = base / "scheduler.json"
    env = dict(os.environ)
    tests_dir = str(Path(__file__).resolve().parent)
    kept = [
        p
        for p in env.get("PYTHONPATH", "").split(os.pathsep)
        if p and Path(p).resolve() not in (modules.resolve(), Path(tests_dir))
    ]
    env["PYTHONPATH"] = os.pathsep.join(kept)
    if not kept:
        del env["PYTHONPATH"]

    procs: list[subprocess.Popen[Any]] = []
    client = None
    logs = {name: base / f"{name}.log" for name in ("scheduler", "worker")}
    try:
        with open(logs["scheduler"], "w") as log:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_scheduler",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        "0",
                        "--no-dashboard",
                        "--scheduler-file",
                        str(scheduler_file),
                    ],
                    cwd=worker_cwd,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.monotonic() + 30
        while not scheduler_file.exists() and time.monotonic() < deadline:
            if procs[0].poll() is not None:
                break
            time.sleep(0.1)
        if not scheduler_file.exists():
            pytest.skip(
                "the dask scheduler did not start within 30 s: "
                + logs["scheduler"].read_text()[-1000:]
            )
        with open(logs["worker"], "w") as log:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_worker",
                        "--scheduler-file",
                        str(scheduler_file),
                        "--nworkers",
                        "1",
                        "--nthreads",
                        "1",
                        "--no-nanny",  # one process, so stopping it by PID stops the worker
                        "--no-dashboard",
                        "--local-directory",
                        str(scratch),
                    ],
                    cwd=worker_cwd,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        try:
            client = distributed.Client(scheduler_file=str(scheduler_file), timeout="30s")
            client.wait_for_workers(1, timeout=30)
        except Exception as exc:
            pytest.skip(
                f"the dask worker did not start within 30 s ({type(exc).__name__}: {exc}): "
                + logs["worker"].read_text()[-1000:]
            )
        yield {"client": client, "modules": modules, "worker_cwd": worker_cwd}
    finally:
        if client is not None:
            client.close(timeout=10)
        for proc in reversed(procs):
            _stop(proc)


ANALYSIS_SOURCE = '''
import awkward as ak
import hist
from coffea import processor
{helper_import}

class MyAnalysis(processor.ProcessorABC):
    """Fill MET (scaled) and count events, as METProcessor does."""

    def process(self, events):
        dataset = events.metadata["dataset"]
        met = {met_expression}
        out = {{
            "MET": hist.Hist(
                hist.axis.StrCategory([], name="dataset", growth=True),
                hist.axis.Regular(40, 0, 200, name="MET"),
            ),
            "cutflow": processor.defaultdict_accumulator(int),
        }}
        out["cutflow"]["all events"] += len(met)
        out["cutflow"]["high MET"] += int(ak.sum(met > 50))
        out["MET"].fill(dataset=dataset, MET=met)
        return out

    def postprocess(self, accumulator):
        return accumulator
'''

HELPER_SOURCE = """
def scale(values):
    return 2 * values
"""


@pytest.fixture()
def analysis_module(
    remote: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Any]]:
    """Write and import a processor module (and optionally a helper it imports)."""
    created: list[str] = []
    monkeypatch.syspath_prepend(str(remote["modules"]))

    def make(with_helper: bool) -> Any:
        suffix = uuid.uuid4().hex[:12]
        name = f"myana_{suffix}"
        if with_helper:
            helper = f"myhelper_{suffix}"
            (remote["modules"] / f"{helper}.py").write_text(HELPER_SOURCE)
            created.append(helper)
            source = ANALYSIS_SOURCE.format(
                helper_import=f"import {helper} as helper",
                met_expression="helper.scale(events.MET.pt)",
            )
        else:
            source = ANALYSIS_SOURCE.format(helper_import="", met_expression="events.MET.pt")
        (remote["modules"] / f"{name}.py").write_text(textwrap.dedent(source))
        created.append(name)
        importlib.invalidate_caches()
        return importlib.import_module(name)

    yield make
    for name in created:
        sys.modules.pop(name, None)


def _worker_cannot_import(client: Any, name: str) -> bool:
    future = client.submit(importlib.import_module, name, pure=False)
    try:
        future.result(timeout=30)
    except ModuleNotFoundError:
        return True
    return False


def test_a_processor_from_the_users_own_module_runs_on_a_remote_worker(
    remote: dict[str, Any], analysis_module: Callable[..., Any], files: dict[str, Any]
) -> None:
    module = analysis_module(with_helper=False)
    client = remote["client"]
    assert _worker_cannot_import(client, module.__name__)  # the premise of the test
    fileset = _fileset("A", files["good"][:3])
    report = _call_with_timeout(
        lambda: chunkwise.run(
            fileset,
            module.MyAnalysis(),
            processor.Runner(
                processor.DaskExecutor(client=client, status=False, retries=0),
                schema=NanoAODSchema,
                skipbadfiles=True,
            ),
            files_per_chunk=2,
            progress=False,
        ),
        timeout=180,
    )
    assert report.complete
    assert report.events == {"A": 3 * N_EVENTS}
    assert report.n_processed == 2
    assert_same_output(report.output, _oracle(fileset, module.MyAnalysis()))
    assert report.output["cutflow"]["all events"] == 3 * N_EVENTS


def test_a_helper_module_missing_on_the_worker_fails_before_any_work(
    remote: dict[str, Any],
    analysis_module: Callable[..., Any],
    files: dict[str, Any],
    tmp_path: Path,
) -> None:
    module = analysis_module(with_helper=True)
    helper = module.helper.__name__
    client = remote["client"]
    assert _worker_cannot_import(client, helper)
    fileset = _fileset("A", files["good"][:2])
    # the processor itself works, in this process
    assert _oracle(fileset, module.MyAnalysis())["cutflow"]["all events"] == 2 * N_EVENTS
    cache = tmp_path / "cache"

    def go() -> Any:
        return chunkwise.run(
            fileset,
            module.MyAnalysis(),
            processor.Runner(
                processor.DaskExecutor(client=client, status=False, retries=0),
                schema=NanoAODSchema,
                skipbadfiles=True,
            ),
            files_per_chunk=1,
            cache=cache,
            progress=False,
        )

    with pytest.raises(ProcessorUnavailableError) as raised:
        _call_with_timeout(go, timeout=180)
    message = str(raised.value)
    assert "\n" not in message, message
    assert helper in message
    assert "importable" in message and "upload_file" in message  # says what to do
    # nothing was processed: no cache entry of any kind
    written = [p for p in cache.rglob("*") if p.is_file() and p.name != "tag.json"]
    assert written == []


def test_a_hook_left_behind_by_another_threads_catch_warnings_removes_itself() -> None:
    """catch_warnings is not thread-safe: a block entered while capture() is active and left
    after it ends puts chunkwise's hook back. The hook then shows the warning and steps aside."""
    from chunkwise import quiet

    shown: list[str] = []

    def mine(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
        shown.append(str(message))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = mine
        other_thread = warnings.catch_warnings()
        with quiet.capture():
            other_thread.__enter__()
        other_thread.__exit__(None, None, None)
        assert warnings.showwarning is quiet._route_warning  # left behind
        warnings.warn("still shown", UserWarning, stacklevel=1)
        assert shown == ["still shown"]
        assert warnings.showwarning is mine


def test_only_the_users_own_modules_are_shipped_by_value(
    analysis_module: Callable[..., Any],
) -> None:
    # Installed packages travel by reference, whatever wrote their wheel: coffea's and
    # chunkwise's wheels (hatchling, maturin) have no top_level.txt, which is all that
    # Python 3.10's packages_distributions() reads. Shipped by value, coffea's ProcessorABC
    # would arrive as a second class, and every FuturesExecutor run on 3.10 would fail.
    import pickletools

    import cloudpickle

    from chunkwise.shipping import _is_users_own_module, dumps_processor

    module = analysis_module(with_helper=False)
    blob = dumps_processor(module.MyAnalysis())
    listing = io.StringIO()
    pickletools.dis(blob, out=listing)
    text = listing.getvalue()
    assert "coffea.processor" in text  # referred to by name ...
    assert "'ProcessorABC'" in text
    assert "_make_skeleton_class" in text  # ... while the user's own class travels by value
    assert isinstance(cloudpickle.loads(blob)[0], processor.ProcessorABC)
    assert not _is_users_own_module("coffea.processor.processor")
    assert not _is_users_own_module("numpy")
