"""The parts of coffea that chunkwise relies on, pinned to the supported version.

Everything chunkwise knows of coffea's Runner and executors lives in ``chunkwise._coffea``. This
file checks each of those assumptions against the installed coffea, so that an upgrade that
renames a key of the wrapped output, changes a message, or changes how errors are classified
fails here, loudly, instead of changing chunkwise's behaviour silently.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import coffea
import pytest
from coffea import processor
from coffea.nanoevents import NanoAODSchema

from chunkwise import _coffea, outcomes, quiet
from chunkwise.examples import METProcessor, write_nanoaod_like

pytestmark = [
    pytest.mark.filterwarnings("ignore:Missing cross-reference index"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

SUPPORTED = "2026.9.0"


def test_the_supported_coffea_version_is_installed() -> None:
    assert coffea.__version__ == SUPPORTED, (
        f"chunkwise._coffea is written against coffea {SUPPORTED}; check every test in this "
        "file against the new version, then update SUPPORTED"
    )


def _runner(**kwargs: Any) -> Any:
    return processor.Runner(
        processor.IterativeExecutor(status=False, retries=0),
        schema=NanoAODSchema,
        skipbadfiles=True,
        use_result_type=True,
        **kwargs,
    )


def test_wrapped_output_has_out_processed_and_exception(tmp_path: Path) -> None:
    path = write_nanoaod_like(tmp_path / "a.root", 250, seed=1)
    result = _runner(chunksize=100).run({"d": {"files": {str(path): "Events"}}}, METProcessor())
    assert result.is_ok()
    wrapped = result.unwrap()
    assert {"out", "processed", "exception"} <= set(wrapped)
    assert wrapped["exception"] == 0
    items = wrapped["processed"]
    assert sum(len(item) for item in items) == 250
    assert {(item.dataset, item.filename) for item in items} == {("d", str(path))}
    assert len(items) == 2  # coffea makes round(250 / 100) equal row chunks


def test_an_empty_file_is_one_work_item_of_no_entries(tmp_path: Path) -> None:
    path = write_nanoaod_like(tmp_path / "empty.root", 0, seed=1)
    result = _runner().run({"d": {"files": {str(path): "Events"}}}, METProcessor())
    (item,) = result.unwrap()["processed"]
    assert len(item) == 0


def test_no_work_items_gives_the_no_chunks_message() -> None:
    with pytest.raises(ValueError) as raised:
        _runner().run({"d": {"files": {}}}, METProcessor())
    assert str(raised.value).startswith(_coffea.NO_CHUNKS_SURVIVED)


def test_a_bad_file_is_an_err_and_a_bug_raises(tmp_path: Path) -> None:
    missing = {"d": {"files": {str(tmp_path / "missing.root"): "Events"}}}
    result = _runner().run(missing, METProcessor())
    assert result.is_err() and isinstance(result.exception, FileNotFoundError)

    class Buggy(METProcessor):
        def process(self, events: Any) -> Any:
            raise KeyError("a bug")

    path = write_nanoaod_like(tmp_path / "a.root", 10, seed=1)
    with pytest.raises(Exception, match="Failed processing file") as raised:
        _runner().run({"d": {"files": {str(path): "Events"}}}, Buggy())
    assert isinstance(raised.value.__cause__, KeyError)  # coffea wraps with "from"


def _chain_cases() -> list[BaseException]:
    plain = OSError("plain")
    caused = RuntimeError("caused")
    caused.__cause__ = FileNotFoundError("inner")
    contexted = RuntimeError("context only")
    contexted.__context__ = OSError("inner")
    deep = ValueError("deep")
    deep.__cause__ = RuntimeError("middle")
    deep.__cause__.__cause__ = TimeoutError("innermost")
    return [plain, caused, contexted, deep, KeyError("unrelated")]


@pytest.mark.parametrize("exc", _chain_cases(), ids=lambda e: str(e))
@pytest.mark.parametrize("skip", [True, (FileNotFoundError,), (KeyError,)], ids=str)
def test_error_classification_is_coffeas_chain_rule(exc: BaseException, skip: Any) -> None:
    from coffea.util import _exception_chain

    runner = processor.Runner(processor.IterativeExecutor(), skipbadfiles=skip)
    allowed = runner._allowed_exceptions
    coffea_says = any(isinstance(c, allowed) for c in _exception_chain(exc))
    assert outcomes.is_allowed(outcomes.allowed_exceptions(runner), exc) == coffea_says


def test_retry_warning_text(tmp_path: Path) -> None:
    runner = processor.Runner(
        processor.IterativeExecutor(status=False, retries=1),
        schema=NanoAODSchema,
        skipbadfiles=True,
        use_result_type=True,
    )
    with pytest.warns(UserWarning, match=quiet.RETRY_WARNING):
        runner.run({"d": {"files": {str(tmp_path / "missing.root"): "Events"}}}, METProcessor())


def test_units_run_without_progress_bars(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """coffea's IterativeExecutor draws bars even with status=False; the units' executor, a
    subclass that keeps coffea's call protocol ``(items, function, accumulator) -> (out, 0)``,
    draws none, and the Runner accepts it."""
    path = write_nanoaod_like(tmp_path / "a.root", 20, seed=1)
    fileset = {"d": {"files": {str(path): "Events"}}}
    settings = _coffea.plan(_runner()).settings
    result = _coffea._worker_runner(settings).run(fileset, METProcessor())
    assert result.unwrap()["out"]["cutflow"]["all events"] == 20
    assert capsys.readouterr() == ("", "")
    _runner().run(fileset, METProcessor())  # the control: coffea's own executor draws
    assert "Processing" in capsys.readouterr().out


def test_runner_fields_that_workers_rebuild_from() -> None:
    names = {f.name for f in dataclasses.fields(processor.Runner)}
    shipped = names - set(_coffea._NOT_SHIPPED)
    assert {"executor", "pre_executor", "metadata_cache"} <= names
    assert {
        "chunksize",
        "maxchunks",
        "skipbadfiles",
        "xrootdtimeout",
        "align_clusters",
        "savemetrics",
        "use_result_type",
        "schema",
        "format",
    } <= shipped
    # every shipped field is accepted back by the constructor
    settings = _coffea.plan(_runner()).settings
    assert _coffea._worker_runner(settings).chunksize == 100_000


def test_executor_attributes_the_backends_read() -> None:
    futures = processor.FuturesExecutor(workers=3)
    assert futures.workers == 3 and callable(futures.pool)  # a class, instantiated per call
    dask = processor.DaskExecutor()
    assert dask.client is None and dask.priority == 0
    assert processor.IterativeExecutor().retries == 3


def test_the_recoverable_path_hides_a_bug_in_the_only_work_item(tmp_path: Path) -> None:
    """coffea's recoverable executor captures the bug and, with no other work item, the Runner
    raises "No chunks returned results" instead. This is why chunkwise never lets coffea's
    executors run its units (it runs an in-process Runner per file on the executor's workers and
    classifies every error itself): with coffea's own recoverable path a bug would look like a
    run with no results."""
    path = write_nanoaod_like(tmp_path / "a.root", 10, seed=1)

    class Buggy(METProcessor):
        def process(self, events: Any) -> Any:
            raise ValueError("a bug")

    runner = processor.Runner(
        processor.FuturesExecutor(workers=1, recoverable=True, status=False, retries=0),
        schema=NanoAODSchema,
        skipbadfiles=True,
        use_result_type=True,
    )
    with warnings.catch_warnings(), pytest.raises(ValueError, match="No chunks returned results"):
        warnings.simplefilter("ignore")
        runner.run({"d": {"files": {str(path): "Events"}}}, Buggy())
