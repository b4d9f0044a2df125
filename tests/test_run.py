"""chunkwise.run on real ROOT files: every executor, the cache, salvage, crashes, code edits.

The scenario: dataset ``A`` has three good files, a missing path, a truncated copy of a good file
(``OSError``) and a file with 0 events; dataset ``B`` has two good files and a ROOT file without
an ``Events`` tree (``uproot.KeyInFileError``, a bad file only because the Runner's
``skipbadfiles`` tuple names it). The oracle is a plain coffea Runner over the good files alone.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uproot
from coffea import processor
from coffea.nanoevents import BaseSchema, NanoAODSchema
from coffea.util import load, save

import chunkwise
import chunkwise.runner
from chunkwise.cache import ChunkCache, CorruptCacheEntryWarning
from chunkwise.examples import METProcessor, make_demo_fileset, write_nanoaod_like
from chunkwise.runner import ChunkFailure, RunReport
from chunkwise.tag import cache_tag

TESTS = Path(__file__).resolve().parent
SAMPLES = TESTS.parent.parent / "shared" / "samples"

pytestmark = [
    pytest.mark.filterwarnings("ignore:Missing cross-reference index"),
    pytest.mark.filterwarnings("ignore:Performed attempt"),
    pytest.mark.filterwarnings("ignore:Skipping bad file"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

BAD_SKIP = (OSError, uproot.exceptions.KeyInFileError)
EVENTS = {"A": 3 * 400, "B": 2 * 300}


# -- the files --------------------------------------------------------------------------------
def _write_scenario(directory: Path) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    good_a = [write_nanoaod_like(directory / f"A_{i}.root", 400, seed=10 + i) for i in range(3)]
    good_b = [write_nanoaod_like(directory / f"B_{i}.root", 300, seed=20 + i) for i in range(2)]
    empty = write_nanoaod_like(directory / "A_empty.root", 0, seed=30)
    truncated = directory / "A_truncated.root"
    blob = good_a[0].read_bytes()
    truncated.write_bytes(blob[: len(blob) // 3])
    no_events = directory / "B_no_events.root"
    with uproot.recreate(no_events) as f:
        f["Other"] = {"x": np.arange(5, dtype=np.int32)}
    missing = directory / "A_missing.root"
    return {
        "good": {"A": [*map(str, good_a), str(empty)], "B": list(map(str, good_b))},
        "bad": {"A": {str(missing), str(truncated)}, "B": {str(no_events)}},
        "fileset": {
            "A": {"files": {str(p): "Events" for p in [*good_a, empty, missing, truncated]}},
            "B": {"files": {str(p): "Events" for p in [*good_b, no_events]}},
        },
    }


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _write_scenario(tmp_path_factory.mktemp("files"))


@pytest.fixture(scope="module")
def oracle(scenario: dict[str, Any]) -> Any:
    """A plain coffea Runner over only the good files (the 0-event file included)."""
    runner = processor.Runner(processor.IterativeExecutor(status=False), schema=NanoAODSchema)
    good = {d: {"files": dict.fromkeys(paths, "Events")} for d, paths in scenario["good"].items()}
    return runner(good, processor_instance=METProcessor())


def make_runner(executor: Any) -> Any:
    return processor.Runner(executor, schema=NanoAODSchema, skipbadfiles=BAD_SKIP)


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


def assert_scenario_report(report: RunReport, scenario: dict[str, Any]) -> None:
    assert {d: set(files) for d, files in report.bad_files.items()} == scenario["bad"]
    assert report.completeness == pytest.approx({"A": 4 / 6, "B": 2 / 3})
    assert report.events == EVENTS
    assert report.files_total == {"A": 6, "B": 3}
    assert not report.complete
    # the 0-event file is complete, not bad
    assert not any("A_empty" in path for path in report.bad_files["A"])


# -- executors --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dask_client() -> Any:
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def process_pool() -> Any:
    # One pool for the module: FuturesExecutor would otherwise start a new one per Runner call.
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
        yield pool


EXECUTORS = ["iterative", "futures", "futures-recoverable", "dask"]


def make_executor(name: str, request: pytest.FixtureRequest) -> Any:
    if name == "iterative":
        return processor.IterativeExecutor(retries=0)
    if name.startswith("futures"):
        return processor.FuturesExecutor(
            pool=request.getfixturevalue("process_pool"),
            workers=2,
            retries=0,
            recoverable=name.endswith("recoverable"),
        )
    return processor.DaskExecutor(client=request.getfixturevalue("dask_client"), retries=0)


@pytest.mark.parametrize("executor_name", EXECUTORS)
def test_every_executor_matches_coffea_on_the_good_files(
    executor_name: str,
    scenario: dict[str, Any],
    oracle: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    runner = make_runner(make_executor(executor_name, request))
    report = chunkwise.run(
        scenario["fileset"], METProcessor(), runner, files_per_chunk=2, cache=tmp_path
    )
    assert_same_output(report.output, oracle)
    assert_scenario_report(report, scenario)
    # every chunk that held a bad file was salvaged (failed, if all its files were bad), the
    # others processed whole
    statuses = set()
    for record in report.chunks:
        n_bad = sum(len(files) for files in record.bad_files.values())
        expected = "processed" if not n_bad else "failed" if n_bad == record.n_files else "salvaged"
        assert record.status == expected
        statuses.add(record.status)
    assert "salvaged" in statuses
    assert report.n_failed == 3 and report.n_cached == 0
    # the caller's Runner was not changed
    assert runner.use_result_type is False

    rerun = chunkwise.run(
        scenario["fileset"], METProcessor(), runner, files_per_chunk=2, cache=tmp_path
    )
    assert rerun.n_processed == 0
    assert rerun.n_cached == report.n_processed
    assert rerun.n_failed == 3  # only the bad files are tried again
    assert_same_output(rerun.output, oracle)
    assert_scenario_report(rerun, scenario)


def test_recoverable_executor_drops_a_file_silently_and_run_reports_it(
    scenario: dict[str, Any], process_pool: Any
) -> None:
    good = scenario["good"]["A"][0]
    missing = next(p for p in scenario["bad"]["A"] if p.endswith("A_missing.root"))
    chunk = {"A": {"files": {good: "Events", missing: "Events"}}}
    runner = processor.Runner(
        processor.FuturesExecutor(pool=process_pool, retries=0, recoverable=True, status=False),
        schema=NanoAODSchema,
        skipbadfiles=True,
        use_result_type=True,
    )
    # coffea alone: Ok, with nothing saying that half of the chunk is missing
    assert runner(chunk, processor_instance=METProcessor()).is_ok()

    report = chunkwise.run([chunk], METProcessor(), runner, progress=False)
    (record,) = report.chunks
    assert record.status == "salvaged"
    assert isinstance(record.exception, ChunkFailure)
    assert set(report.bad_files["A"]) == {missing}
    assert "FileNotFoundError" in report.bad_files["A"][missing]
    assert report.events == {"A": 400}
    assert report.completeness == {"A": 0.5}


def test_a_chunk_whose_only_file_fails_is_a_failure_not_an_exception(
    scenario: dict[str, Any], process_pool: Any
) -> None:
    truncated = next(p for p in scenario["bad"]["A"] if p.endswith("A_truncated.root"))
    runner = make_runner(processor.FuturesExecutor(pool=process_pool, retries=0, recoverable=True))
    chunks = [{"A": {"files": {truncated: "Events"}}}]
    with pytest.raises(ValueError, match="No chunks survived preprocessing"):
        processor.Runner(
            runner.executor, schema=NanoAODSchema, skipbadfiles=True, use_result_type=True
        )(chunks[0], processor_instance=METProcessor())

    report = chunkwise.run(chunks, METProcessor(), runner, progress=False)
    assert [r.status for r in report.chunks] == ["failed"]
    assert report.output is None
    assert report.n_failed == 1 and report.completeness == {"A": 0.0}
    assert "OSError" in report.bad_files["A"][truncated]


def test_a_chunk_of_only_empty_files_is_complete(scenario: dict[str, Any]) -> None:
    empty = scenario["good"]["A"][-1]
    report = chunkwise.run([{"A": {"files": {empty: "Events"}}}], METProcessor(), progress=False)
    assert report.complete
    assert report.events == {"A": 0} and report.bad_files == {}
    assert report.n_processed == 1


def test_salvage_off_loses_the_whole_chunk(scenario: dict[str, Any]) -> None:
    runner = make_runner(processor.IterativeExecutor(retries=0))
    report = chunkwise.run(
        scenario["fileset"], METProcessor(), runner, files_per_chunk=2, salvage=False
    )
    failed = [r for r in report.chunks if r.status == "failed"]
    assert failed and all(not r.parts for r in failed)
    lost = {p for r in failed for files in r.bad_files.values() for p in files}
    assert lost > set().union(*scenario["bad"].values())  # good files went with the bad ones
    assert report.completeness["A"] < 4 / 6


def test_an_error_outside_skipbadfiles_propagates_after_caching(
    scenario: dict[str, Any], oracle: Any, tmp_path: Path
) -> None:
    # skipbadfiles=True covers OSError only: the file without an Events tree is a bug here
    runner = processor.Runner(
        processor.IterativeExecutor(retries=0), schema=NanoAODSchema, skipbadfiles=True
    )
    with pytest.raises(uproot.exceptions.KeyInFileError):
        chunkwise.run(
            scenario["fileset"],
            METProcessor(),
            runner,
            strategy="by_dataset",
            files_per_chunk=2,
            cache=tmp_path,
            progress=False,
        )
    tag = cache_tag(METProcessor(), runner)
    saved = list(ChunkCache(tmp_path, tag).hashes())
    assert saved  # dataset A's chunks ran first and are safe

    # the rerun resumes from them (same output settings, so the same tag)
    report = chunkwise.run(
        scenario["fileset"],
        METProcessor(),
        make_runner(processor.IterativeExecutor(retries=0)),
        strategy="by_dataset",
        files_per_chunk=2,
        cache=tmp_path,
        progress=False,
    )
    assert report.n_cached == len(saved)
    assert_same_output(report.output, oracle)


class _ZeroDivisionProcessor(METProcessor):
    def process(self, events: Any) -> Any:
        return 1 / 0


def test_a_processor_bug_propagates(scenario: dict[str, Any]) -> None:
    good = scenario["good"]["B"][0]
    with pytest.raises(Exception, match="ZeroDivisionError") as raised:
        chunkwise.run([{"B": {"files": {good: "Events"}}}], _ZeroDivisionProcessor())
    assert isinstance(raised.value.__cause__, ZeroDivisionError)  # coffea wraps it


def test_callers_runner_is_not_mutated(scenario: dict[str, Any]) -> None:
    executor = processor.IterativeExecutor(retries=0)
    runner = processor.Runner(executor, schema=NanoAODSchema)
    before = (runner.use_result_type, runner.skipbadfiles, runner.executor, executor.status)
    chunkwise.run({"B": scenario["good"]["B"]}, METProcessor(), runner, treename="Events")
    assert (runner.use_result_type, runner.skipbadfiles, runner.executor, executor.status) == (
        before
    )


# -- salvage and reruns -----------------------------------------------------------------------
def test_rerun_goes_straight_to_the_files_and_retries_only_the_bad_ones(
    tmp_path: Path, oracle: Any
) -> None:
    scenario = _write_scenario(tmp_path / "files")
    runner = make_runner(processor.IterativeExecutor(retries=0))
    kwargs = dict(files_per_chunk=3, cache=tmp_path / "cache", progress=False)
    first = chunkwise.run(scenario["fileset"], METProcessor(), runner, **kwargs)
    salvaged = [r for r in first.chunks if r.status == "salvaged"]
    assert salvaged
    cache = first.cache
    assert cache is not None
    for record in salvaged:
        assert cache.status(record.hash) == "salvaged"
        saved = cache.load_salvage(record.hash)
        assert saved is not None
        assert {p["hash"] for p in saved.parts} == {p.hash for p in record.parts}

    # the missing file appears: the rerun loads everything else and computes only that file
    missing = next(p for p in scenario["bad"]["A"] if p.endswith("A_missing.root"))
    write_nanoaod_like(missing, 100, seed=99)
    second = chunkwise.run(scenario["fileset"], METProcessor(), runner, **kwargs)
    assert second.n_processed == 1
    assert second.n_failed == 2
    assert missing not in second.bad_files["A"]
    assert second.events["A"] == EVENTS["A"] + 100
    assert second.completeness["A"] == pytest.approx(5 / 6)
    for record in second.chunks:
        if record.status == "salvaged":
            assert "earlier run" in str(record.exception)  # the chunk itself was not re-run


# -- the cache --------------------------------------------------------------------------------
@pytest.fixture()
def cached_run(scenario: dict[str, Any], tmp_path: Path) -> tuple[RunReport, Any]:
    runner = make_runner(processor.IterativeExecutor(retries=0))
    report = chunkwise.run(
        scenario["fileset"],
        METProcessor(),
        runner,
        strategy="by_dataset",
        files_per_chunk=2,
        cache=tmp_path / "cache",
        progress=False,
    )
    return report, runner


def _processed_hash(report: RunReport) -> str:
    return next(r.hash for r in report.chunks if r.status == "processed")


def test_cache_entries_are_user_only_and_readable_by_coffea(
    cached_run: tuple[RunReport, Any], tmp_path: Path
) -> None:
    report, _ = cached_run
    cache = report.cache
    assert cache is not None
    assert stat.S_IMODE(os.stat(tmp_path / "cache").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(cache.directory).st_mode) == 0o700
    record = next(r for r in report.chunks if r.status == "processed")
    path = cache.path(record.hash)
    assert path == tmp_path / "cache" / cache.tag / f"{record.hash}.coffea"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    from_coffea = load(str(path))
    entry = cache.load(record.hash)
    assert entry.hit and entry.info["events"] == record.events
    assert_same_output(from_coffea, entry.output)
    assert not [p for p in cache.directory.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("damage", ["truncate", "flip-byte"])
def test_a_corrupt_entry_is_recomputed(
    damage: str, cached_run: tuple[RunReport, Any], scenario: dict[str, Any]
) -> None:
    report, runner = cached_run
    cache = report.cache
    assert cache is not None
    key = _processed_hash(report)
    path = cache.path(key)
    blob = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    else:
        blob[len(blob) // 2] ^= 0x01
        path.write_bytes(blob)
    assert cache.status(key) == "corrupt"

    with pytest.warns(CorruptCacheEntryWarning, match=key):
        rerun = chunkwise.run(
            scenario["fileset"],
            METProcessor(),
            runner,
            strategy="by_dataset",
            files_per_chunk=2,
            cache=cache.root,
            progress=False,
        )
    assert rerun.n_processed == 1
    assert cache.status(key) == "cached"
    assert_same_output(rerun.output, report.output)


def test_chunk_cache_api(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path / "cache", "MyProcessor-0123456789abcdef")
    key = chunkwise.hash_fileset({"A": {"files": {"/a.root": "Events"}}})
    assert not (tmp_path / "cache").exists()  # nothing is created before the first save
    assert cache.status(key) == "missing" and cache.load(key).status == "miss"
    assert list(cache.hashes()) == []

    path = cache.save(key, {"n": 3}, {"events": {"A": 3}})
    assert path == tmp_path / "cache" / "MyProcessor-0123456789abcdef" / f"{key}.coffea"
    assert cache.status(key) == "cached" and list(cache.hashes()) == [key]
    entry = cache.load(key)
    assert entry.hit and entry.output == {"n": 3} and entry.info["events"] == {"A": 3}
    assert load(str(path)) == {"n": 3}

    # an entry copied under another chunk's name is not that chunk's output
    other = chunkwise.hash_fileset({"A": {"files": {"/b.root": "Events"}}})
    shutil.copy(path, cache.path(other))
    with pytest.warns(CorruptCacheEntryWarning, match="written for chunk"):
        assert cache.load(other).status == "corrupt"

    cache.remove(key)
    assert cache.status(key) == "missing"
    with pytest.raises(ValueError, match="hash_fileset"):
        cache.path("../../etc/passwd")
    with pytest.raises(ValueError, match="plain directory name"):
        ChunkCache(tmp_path, "../elsewhere")


def test_notebook_flat_cache_written_by_coffea_is_read(
    scenario: dict[str, Any], oracle: Any, tmp_path: Path
) -> None:
    """cache_tag="" reads the <cache>/<hash>.coffea files of the notebook's hand-written loop."""
    runner = processor.Runner(
        processor.IterativeExecutor(retries=0, status=False),
        schema=NanoAODSchema,
        skipbadfiles=BAD_SKIP,
        use_result_type=True,
    )
    chunks = chunkwise.split_fileset(scenario["fileset"], strategy="by_dataset")
    for chunk in chunks:  # the notebook's loop (its good chunks only: ours have a bad file each)
        good = {
            d: {"files": {p: t for p, t in v["files"].items() if p in scenario["good"][d]}}
            for d, v in chunk.items()
        }
        result = runner(good, processor_instance=METProcessor())
        save(result.unwrap(), str(tmp_path / f"{chunkwise.hash_fileset(good)}.coffea"))
    good_fileset = {
        d: {"files": dict.fromkeys(paths, "Events")} for d, paths in scenario["good"].items()
    }
    report = chunkwise.run(
        good_fileset,
        METProcessor(),
        runner,
        strategy="by_dataset",
        cache=tmp_path,
        cache_tag="",
        progress=False,
    )
    assert report.n_cached == 2 and report.n_processed == 0
    assert_same_output(report.output, oracle)
    assert any("not written by chunkwise" in note for note in report.notes)


def _import_from(path: Path, name: str) -> Any:
    """Import ``path`` as module ``name``, as a fresh session after an edit would."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


PROCESSOR_SOURCE = """
from chunkwise.examples import METProcessor


class EditedProcessor(METProcessor):
    def process(self, events):
        out = super().process(events)
        out["cutflow"]["version"] += {version}
        return out
"""


def test_editing_the_processor_class_invalidates_its_entries(
    scenario: dict[str, Any], tmp_path: Path
) -> None:
    modules = []
    for version in (1, 2):
        directory = tmp_path / f"v{version}"
        directory.mkdir()
        source = textwrap.dedent(PROCESSOR_SOURCE).format(version=version)
        (directory / "edited_processor.py").write_text(source)
        modules.append(_import_from(directory / "edited_processor.py", "edited_processor"))
    del sys.modules["edited_processor"]
    fileset = {"B": {"files": dict.fromkeys(scenario["good"]["B"], "Events")}}
    cache = tmp_path / "cache"

    def run_with(module: Any) -> RunReport:
        return chunkwise.run(fileset, module.EditedProcessor(), cache=cache, progress=False)

    first = run_with(modules[0])
    edited = run_with(modules[1])
    again = run_with(modules[0])
    assert (first.n_processed, edited.n_processed, again.n_processed) == (1, 1, 0)
    assert first.output["cutflow"]["version"] == 2  # one row chunk per file
    assert edited.output["cutflow"]["version"] == 4
    assert again.output["cutflow"]["version"] == 2
    assert cache_tag(modules[0].EditedProcessor()) != cache_tag(modules[1].EditedProcessor())


NOTEBOOK_CELL = """
from chunkwise.examples import METProcessor
from chunkwise.tag import cache_tag

class Processor(METProcessor):
    def process(self, events):
        out = super().process(events)
        if events.metadata["dataset"] in {"A", "B", "C"}:
            out["cutflow"]["selected"] += CUT
        return out

print(cache_tag(Processor()))
"""


def _notebook_tag(cut: int, hashseed: str) -> str:
    # A class defined in __main__ from a string, as in a notebook: inspect cannot find its
    # source, so the tag comes from its bytecode, which must not depend on PYTHONHASHSEED.
    code = NOTEBOOK_CELL.replace("CUT", str(cut))
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONHASHSEED": hashseed},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_a_notebook_class_without_source_is_tagged_by_its_code() -> None:
    assert _notebook_tag(1, "1") == _notebook_tag(1, "2")
    assert _notebook_tag(1, "1") != _notebook_tag(2, "1")


def test_runner_settings_that_change_the_output_change_the_tag() -> None:
    def tag(**settings: Any) -> str:
        runner = processor.Runner(processor.IterativeExecutor(), **settings)
        return cache_tag(METProcessor(), runner)

    base = tag(schema=NanoAODSchema)
    assert tag(schema=NanoAODSchema, chunksize=1000) != base
    assert tag(schema=NanoAODSchema, maxchunks=3) != base
    assert tag(schema=BaseSchema) != base
    # settings that do not change the output do not change the tag
    assert tag(schema=NanoAODSchema, skipbadfiles=True, savemetrics=True) == base
    other = processor.Runner(processor.FuturesExecutor(workers=2), schema=NanoAODSchema)
    assert cache_tag(METProcessor(), other) == base


# -- crashes and concurrent runs --------------------------------------------------------------
def _child(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TESTS / "run_crash_child.py"), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_run_killed_midway_resumes_to_the_same_output(tmp_path: Path) -> None:
    sys.path.insert(0, str(TESTS))
    try:
        from run_crash_child import KillableMET, runner
    finally:
        sys.path.remove(str(TESTS))
    fileset = make_demo_fileset(tmp_path / "files")
    fileset_json = tmp_path / "fileset.json"
    fileset_json.write_text(json.dumps(fileset))
    cache = tmp_path / "cache"

    killed = _child(
        [str(fileset_json), str(cache), str(tmp_path / "never.coffea")],
        env={"CHUNKWISE_TEST_KILL_DIR": str(cache), "CHUNKWISE_TEST_KILL_AFTER": "4"},
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    # 4 entries, or 5 if the background write of the chunk before the kill got to its rename
    on_disk = len(list(cache.rglob("*.coffea")))
    assert on_disk in (4, 5)
    # a write torn by a kill leaves at most a temporary file, never a partial entry
    (next(cache.iterdir()) / ".0123.coffea.tmp").write_bytes(b"\x04\x22\x4d\x18 torn")

    with warnings.catch_warnings():
        warnings.simplefilter("error", CorruptCacheEntryWarning)
        resumed = chunkwise.run(
            fileset, KillableMET(), runner(), files_per_chunk=1, cache=cache, progress=False
        )
    uninterrupted = chunkwise.run(fileset, KillableMET(), runner(), files_per_chunk=1)
    assert resumed.n_cached == on_disk
    assert resumed.n_processed == uninterrupted.n_processed - on_disk
    assert_same_output(resumed.output, uninterrupted.output)
    assert resumed.bad_files == uninterrupted.bad_files


def test_two_processes_sharing_a_cache_get_the_same_output(tmp_path: Path) -> None:
    fileset = make_demo_fileset(tmp_path / "files")
    fileset_json = tmp_path / "fileset.json"
    fileset_json.write_text(json.dumps(fileset))
    cache = tmp_path / "cache"
    outputs = [tmp_path / f"out{i}.coffea" for i in range(2)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(TESTS / "run_crash_child.py"),
                str(fileset_json),
                str(cache),
                str(o),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for o in outputs
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    first, second = (load(str(o)) for o in outputs)
    assert_same_output(first, second)
    assert first["cutflow"]["all events"] == 5 * 2000 + 4 * 1500


# -- the real NanoAOD samples -----------------------------------------------------------------
@pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/samples is not there")
@pytest.mark.filterwarnings("ignore:Branch .* already exists")
def test_real_nanoaod_samples(tmp_path: Path) -> None:
    truncated = tmp_path / "nano_dy_truncated.root"
    truncated.write_bytes((SAMPLES / "nano_dy.root").read_bytes()[:150_000])
    fileset = {
        "DY": {
            "files": {
                str(SAMPLES / "nano_dy.root"): "Events",
                str(SAMPLES / "nano_dy_empty.root"): "Events",
                str(truncated): "Events",
            }
        },
        "Data": {
            "files": {
                str(SAMPLES / "nano_dimuon.root"): "Events",
                str(SAMPLES / "bad_delphes.root"): "Events",
            }
        },
    }
    runner = make_runner(processor.IterativeExecutor(retries=0))
    report = chunkwise.run(fileset, METProcessor(), runner, files_per_chunk=3, progress=False)
    assert report.events == {"DY": 40, "Data": 40}
    assert {d: set(f) for d, f in report.bad_files.items()} == {
        "DY": {str(truncated)},
        "Data": {str(SAMPLES / "bad_delphes.root")},
    }
    assert report.completeness == pytest.approx({"DY": 2 / 3, "Data": 1 / 2})
    assert report.output["cutflow"]["all events"] == 80


def test_summary_is_a_table_per_dataset(
    cached_run: tuple[RunReport, Any], scenario: dict[str, Any]
) -> None:
    report, _ = cached_run
    lines = report.summary().splitlines()
    header = ["dataset", "files", "ok", "bad", "total", "events", "fraction", "sumw"]
    assert lines[0].split() == header
    # The demo-like files carry a Runs tree: the sum of genEventSumw over the good files
    # (the empty file of A too: its generated events count), read here with uproot.
    sumw = {}
    for dataset, paths in scenario["good"].items():
        sumw[dataset] = 0.0
        for path in paths:
            with uproot.open(path) as f:
                sumw[dataset] += float(f["Runs"]["genEventSumw"].array(library="np").sum())
    assert report.sumw == pytest.approx(sumw, rel=1e-12)
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:4]}
    assert rows == {
        "A": ["4", "2", "6", "1,200", "66.7%", f"{sumw['A']:.6g}"],
        "B": ["2", "1", "3", "600", "66.7%", f"{sumw['B']:.6g}"],
    }
    assert "chunks: 5 (" in report.summary() and "files: 9 (" in report.summary()
    assert "INCOMPLETE" in report.summary()


def test_demo_fileset_is_deterministic(tmp_path: Path) -> None:
    first = make_demo_fileset(tmp_path / "a")
    second = make_demo_fileset(tmp_path / "b")
    assert {d: len(v["files"]) for d, v in first.items()} == {"DYJets": 6, "TTbar": 5}
    pairs = zip(
        sorted(p for v in first.values() for p in v["files"]),
        sorted(p for v in second.values() for p in v["files"]),
        strict=True,
    )
    readable = [(a, b) for a, b in pairs if Path(a).exists() and "truncated" not in a]
    assert len(readable) == 9
    for a, b in readable:
        np.testing.assert_array_equal(
            uproot.open(a)["Events"]["MET_pt"].array(library="np"),
            uproot.open(b)["Events"]["MET_pt"].array(library="np"),
        )


def test_preprocessed_fileset_runs_and_is_keyed_by_its_own_hash(scenario, oracle, tmp_path):
    """coffea's preprocessed form {path: {"object_path": ...}} runs; the cache keys are the
    chunks' own hashes, the same that `chunkwise split` names its files with."""
    preprocessed = {
        dataset: {
            "files": {
                path: {"object_path": "Events", "steps": None, "num_entries": None, "uuid": "u"}
                for path in data["files"]
            }
        }
        for dataset, data in scenario["fileset"].items()
    }
    report = chunkwise.run(
        preprocessed,
        METProcessor(),
        make_runner(processor.IterativeExecutor(status=False)),
        files_per_chunk=2,
        cache=tmp_path / "cache",
        progress=False,
    )
    assert_same_output(report.output, oracle)
    assert_scenario_report(report, scenario)
    chunks = chunkwise.split_fileset(preprocessed, files_per_chunk=2)
    assert [c.hash for c in report.chunks] == chunkwise.hash_filesets(chunks)
    cached = {p.stem for p in (tmp_path / "cache").rglob("*.coffea")}
    whole = {c.hash for c in report.chunks if c.status == "processed"}
    assert whole and whole <= cached


def test_events_per_chunk_through_run_and_status(tmp_path: Path) -> None:
    """run and status split a preprocessed fileset by num_entries, as split_fileset does."""
    sizes = [900, 300, 300, 200, 1500]
    paths = [
        write_nanoaod_like(tmp_path / f"f{i}.root", n, seed=40 + i) for i, n in enumerate(sizes)
    ]
    fileset = {
        "D": {
            "files": {
                str(p): {"object_path": "Events", "steps": None, "num_entries": n, "uuid": "u"}
                for p, n in zip(paths, sizes, strict=True)
            }
        }
    }
    report = chunkwise.run(
        fileset, METProcessor(), events_per_chunk=1000, cache=tmp_path / "c", progress=False
    )
    # Sorted by path: [900], [300 300 200], [1500] (a file over N stands alone).
    assert [sum(r.events.values()) for r in report.chunks] == [900, 800, 1500]
    assert report.complete and report.events == {"D": sum(sizes)}
    expected = chunkwise.split_fileset(fileset, events_per_chunk=1000)
    assert [r.hash for r in report.chunks] == chunkwise.hash_filesets(expected)
    assert chunkwise.status(fileset, tmp_path / "c", events_per_chunk=1000).complete
    with pytest.raises(ValueError, match="events_per_chunk"):
        chunkwise.run(fileset, METProcessor(), events_per_chunk=1000, files_per_chunk=2)
