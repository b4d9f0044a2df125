"""Everything chunkwise knows about coffea's Runner and executors, in one place.

chunkwise runs a fileset as *units*: single-file chunks (``split_fileset(chunk,
strategy="by_dataset", files_per_chunk=1)``), each processed by :func:`process_unit` with an
in-process coffea ``Runner`` (an ``IterativeExecutor`` with the caller's Runner settings) on
whatever runs the caller's executor: this process, the ``FuturesExecutor``'s process pool, or the
``DaskExecutor``'s cluster. One pool or client serves the whole run (:class:`Backend`).

This module is the only one that reads coffea's internals:

- making and preparing Runners (:func:`default_runner`, :func:`plan`);
- running one unit and returning an :class:`Outcome` (:func:`process_unit`), reading coffea's
  wrapped output (``"out"``, ``"processed"``, ``"exception"``) with hard look-ups and
  classifying errors with coffea's own rule: an error is a bad file when it, or an exception
  on its ``__cause__`` chain, is an instance of the Runner's ``skipbadfiles`` types;
- running units without coffea's progress bars, and capturing warnings (:func:`capture`);
- merging outputs (:func:`merge`).

``tests/test_coffea_contract.py`` pins these to coffea 2026.9: an upgrade that renames a key or
changes a message fails there, loudly, instead of changing chunkwise's behaviour silently.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import importlib.metadata
import os
import pickle
import re
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from chunkwise.errors import BadWeightsError, ProcessorUnavailableError, WorkerError

__all__ = [
    "NO_CHUNKS_SURVIVED",
    "Backend",
    "Outcome",
    "Plan",
    "ProcessorUnavailableError",
    "RetryPolicy",
    "WorkerError",
    "add_note",
    "capture",
    "default_bad_file_errors",
    "default_runner",
    "dumps_processor",
    "error_text",
    "GEN_WEIGHTS",
    "read_file_sums",
    "is_allowed",
    "is_transient",
    "dumps_output",
    "load_output",
    "merge",
    "plan",
    "pickled_output",
    "process_unit",
]

#: The start of the ValueError coffea's Runner raises when preprocessing left no work item (for
#: one file: it has no entries).
NO_CHUNKS_SURVIVED = "No chunks survived preprocessing"

#: The warning coffea's automatic retries emit before every new attempt. The final error is in
#: the report, so these are noise unless the caller asks for detail.
RETRY_WARNING = "Performed attempt"

# Runner fields a worker needs to rebuild the Runner. The executors are replaced by an in-process
# one, and the metadata cache is left to the worker (the default one is a process-wide LRU).
_NOT_SHIPPED = ("executor", "pre_executor", "metadata_cache")


# -- Runners -------------------------------------------------------------------------------------
def default_runner() -> Any:
    """The Runner that ``chunkwise.run`` uses when none is given.

    Returns
    -------
    coffea.processor.Runner
        ``IterativeExecutor``, ``NanoAODSchema``, ``skipbadfiles=DEFAULT_BAD_FILE_ERRORS``
        (``OSError``, and ``uproot.KeyInFileError``: a file without the tree) and
        ``use_result_type=True``.
    """
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    return processor.Runner(
        executor=processor.IterativeExecutor(status=False),
        schema=NanoAODSchema,
        skipbadfiles=default_bad_file_errors(),
        use_result_type=True,
    )


def default_bad_file_errors() -> tuple[type[BaseException], ...]:
    """The errors that make a bad file by default: ``OSError`` (missing, unreadable or
    truncated files, network failures) and ``uproot.KeyInFileError`` (no such tree; coffea's
    ``UprootMissTreeError`` is one), as the seed notebook suggests."""
    import uproot

    return (OSError, uproot.exceptions.KeyInFileError)


def bad_file_types(skipbadfiles: Any) -> tuple[type[BaseException], ...]:
    """The exception types that a Runner's ``skipbadfiles`` makes a bad file: ``True`` is
    ``OSError`` alone, as in coffea; a tuple of types is itself; ``False`` is none."""
    if skipbadfiles is True:
        return (OSError,)
    return tuple(skipbadfiles) if skipbadfiles else ()


def allowed_exceptions(runner: Any) -> tuple[type[BaseException], ...]:
    """The exception types that the Runner's ``skipbadfiles`` makes a bad file."""
    return bad_file_types(runner.skipbadfiles)


def is_allowed(allowed: tuple[type[BaseException], ...], exc: BaseException) -> bool:
    """coffea's rule: ``exc`` or an exception on its ``__cause__`` chain is of an allowed type.

    ``__context__`` (an exception raised while handling another) does not count, as in coffea.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if allowed and isinstance(current, allowed):
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


def error_text(exc: BaseException, limit: int = 300) -> str:
    """One line for a bad file: the innermost exception on the ``__cause__`` chain.

    coffea wraps the cause ("Failed processing file: ..."); the innermost message says most.
    """
    inner, seen = exc, {id(exc)}
    while inner.__cause__ is not None and id(inner.__cause__) not in seen:
        inner = inner.__cause__
        seen.add(id(inner))
    text = " ".join(f"{type(inner).__name__}: {inner}".split())
    # "Failed to submit <bound method File.open of <XRootD...File object at 0x7f...>> request"
    text = re.sub(r"<bound method ([\w.]+) of <[^<>]*>>", r"\1", text)
    text = re.sub(r" at 0x[0-9a-f]+", "", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Plan:
    """How a run executes: the executor kind, its workers, and what each unit needs.

    Attributes
    ----------
    runner : coffea.processor.Runner
        The caller's Runner (never modified).
    kind : {"iterative", "futures", "dask"}
        Where units run.
    settings : dict
        The Runner fields a worker rebuilds its in-process Runner from.
    notes : list of str
        What was adjusted, for the report.
    """

    runner: Any
    kind: Literal["iterative", "futures", "dask"]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def maxchunks(self) -> int | None:
        """The Runner's ``maxchunks`` (which chunkwise applies to each file)."""
        return self.settings.get("maxchunks")

    def backend(self) -> Backend:
        """Open the pool or client that runs this plan's units (close it when done)."""
        executor = self.runner.executor
        if self.kind == "futures":
            return _PoolBackend(executor)
        if self.kind == "dask":
            return _DaskBackend(executor)
        return _InProcessBackend()


def plan(runner: Any) -> Plan:
    """Check a Runner and decide how ``chunkwise.run`` executes with it.

    Parameters
    ----------
    runner : coffea.processor.Runner or None
        ``None`` means :func:`default_runner`.

    Returns
    -------
    Plan

    Raises
    ------
    ValueError
        For a Runner whose output is not an accumulator (``use_dataframes=True``) or whose
        executor chunkwise cannot schedule on.
    """
    from coffea import processor

    notes: list[str] = []
    if runner is None:
        runner = default_runner()
    if not isinstance(runner, processor.Runner):
        raise TypeError(
            f"runner must be a coffea.processor.Runner, got {type(runner).__name__}; "
            "pass processor.Runner(executor=...) or leave it out"
        )
    executor = runner.executor
    if getattr(runner, "use_dataframes", False):
        raise ValueError(
            "chunkwise.run needs accumulator outputs, but this Runner's DaskExecutor has "
            "use_dataframes=True: use use_dataframes=False"
        )
    kind: Literal["iterative", "futures", "dask"]
    if isinstance(executor, processor.DaskExecutor):
        kind = "dask"
    elif isinstance(executor, processor.FuturesExecutor):
        kind = "futures"
    elif isinstance(executor, processor.IterativeExecutor):
        kind = "iterative"
    else:
        raise ValueError(
            f"chunkwise.run schedules chunks on IterativeExecutor, FuturesExecutor and "
            f"DaskExecutor; {type(executor).__name__} is not supported: use one of those"
        )
    settings = {
        f.name: getattr(runner, f.name)
        for f in dataclasses.fields(runner)
        if f.name not in _NOT_SHIPPED
    }
    # chunkwise retries transient errors itself, with backoff and replicas (RetryPolicy);
    # coffea's own retries would try every error again, at once, permanent ones too.
    settings["retries"] = 0
    if not runner.skipbadfiles:
        settings["skipbadfiles"] = default_bad_file_errors()
        notes.append(
            "the Runner has skipbadfiles=False; chunkwise treats OSError and KeyInFileError as "
            "bad files, so that one broken file does not end the run"
        )
    settings["use_result_type"] = True
    if runner.maxchunks is not None:
        notes.append(
            f"maxchunks={runner.maxchunks} applies to each file: chunkwise runs files "
            "separately, where a plain Runner applies it to each dataset"
        )
    return Plan(runner, kind, settings, notes)


@functools.lru_cache(maxsize=1)
def _unit_executor_class() -> type:
    from coffea.processor import IterativeExecutor, accumulate

    class UnitExecutor(IterativeExecutor):  # type: ignore[misc]
        """coffea's IterativeExecutor without its progress bars.

        A unit is one file, so the bars would be drawn (and rendered by rich, about 10 ms a
        call, even on a quiet console) twice per file for nothing.
        """

        def __call__(self, items: Any, function: Any, accumulator: Any) -> Any:
            return accumulate(map(function, items), accumulator), 0

    return UnitExecutor


def _worker_runner(settings: Mapping[str, Any]) -> Any:
    from coffea import processor

    options = dict(settings)
    executor = _unit_executor_class()(status=False, retries=options.pop("retries"))
    return processor.Runner(executor=executor, **options)


# -- shipping the processor ------------------------------------------------------------------
_PICKLE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _installed_top_level_names() -> frozenset[str]:
    """The top-level import names of every installed distribution.

    Not ``importlib.metadata.packages_distributions()``: on Python 3.10 it reads only
    ``top_level.txt``, which wheels built by hatchling, flit or maturin (coffea's, chunkwise's)
    do not have, so coffea itself would count as the user's code and be pickled by value. The
    names come from ``top_level.txt`` where there is one, else from the files the
    distribution installed (as Python 3.11 and later infer them).
    """
    names: set[str] = set()
    for dist in importlib.metadata.distributions():
        names.update((dist.read_text("top_level.txt") or "").split())
        for file in dist.files or ():
            parts = file.parts
            if not parts or parts[0] == ".." or parts[0].endswith((".dist-info", ".data")):
                continue
            if len(parts) > 1:
                names.add(parts[0])
            elif file.suffix in (".py", ".so", ".pyd"):
                names.add(parts[0].partition(".")[0])
    return frozenset(names)


def _is_users_own_module(name: str) -> bool:
    """True for a module of the user's own code: not built in, not stdlib, not installed."""
    if name in ("__main__", "builtins") or not name:
        return False  # cloudpickle ships __main__ by value already
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return False
    module = sys.modules.get(name)
    if module is None or getattr(module, "__file__", None) is None:
        return False
    return top not in _installed_top_level_names()


def dumps_processor(processor_instance: Any, file_sums: Any = None, weights: bool = True) -> bytes:
    """Pickle the processor (with the ``file_sums`` hook and whether to read the generator
    weights) so that workers which cannot import their modules still load them.

    The modules of the processor's class, of its base classes and of the hook that are the
    user's own code (not installed, not the standard library) are pickled by value with
    cloudpickle, so an external ``dask worker`` started elsewhere needs only the installed
    packages. :func:`process_unit` loads the pair.
    """
    import cloudpickle

    names = [klass.__module__ for klass in type(processor_instance).__mro__]
    if file_sums is not None:
        names.append(getattr(file_sums, "__module__", None) or "")
    modules = {sys.modules[name] for name in names if _is_users_own_module(name)}
    with _PICKLE_LOCK:  # cloudpickle's by-value registry is global: never leave it changed
        registered = []
        try:
            for module in modules:
                try:
                    cloudpickle.register_pickle_by_value(module)
                except ValueError:  # already registered by the caller
                    continue
                registered.append(module)
            return cloudpickle.dumps(
                (processor_instance, file_sums, weights), protocol=pickle.HIGHEST_PROTOCOL
            )
        finally:
            for module in registered:
                cloudpickle.unregister_pickle_by_value(module)


def check_processor(blob: bytes) -> str | None:
    """Load the processor where units run; return why it failed, or None. Runs on a worker."""
    import cloudpickle

    try:
        cloudpickle.loads(blob)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# -- quiet, in every process -----------------------------------------------------------------
@dataclass(frozen=True)
class CaughtWarning:
    """A warning raised while a unit ran, sent back to be shown (or not) in the caller."""

    message: str
    category: type[Warning]
    filename: str
    lineno: int


_QUIET_LOCK = threading.Lock()
_quiet_depth = 0
_quiet_saved: Any = None  # the showwarning the outermost active block replaced
_last_showwarning: Any = warnings.showwarning  # what the last outermost block found
_local = threading.local()


def _route_warning(message: Any, category: Any, filename: Any, lineno: Any, *args: Any) -> None:
    sink = getattr(_local, "sink", None)
    if sink is not None:
        sink.append(CaughtWarning(str(message), category, str(filename), int(lineno)))
        return
    saved = _quiet_saved
    if saved is None and warnings.showwarning is _route_warning:
        # Another thread's warnings.catch_warnings() put this hook back after the last block
        # ended (catch_warnings is not thread-safe): take it out again, and show the warning.
        warnings.showwarning = _last_showwarning
    show = saved if saved is not None else _last_showwarning
    show(message, category, filename, lineno, *args)


@contextlib.contextmanager
def capture() -> Iterator[list[CaughtWarning]]:
    """Collect this thread's warnings inside the block instead of printing them.

    The warnings raised by this thread are appended to the yielded list; other threads'
    warnings are shown as usual. The hook on ``warnings.showwarning`` is reference-counted, so
    nested and concurrent blocks (two ``run`` calls in two threads, dask's worker threads)
    restore exactly what they found when the last one ends. (coffea's progress bars need no
    muting: units run under :func:`_unit_executor_class`'s executor, which draws none.)
    """
    global _quiet_depth, _quiet_saved, _last_showwarning

    with _QUIET_LOCK:
        if _quiet_depth == 0:
            if warnings.showwarning is not _route_warning:
                _last_showwarning = warnings.showwarning
            _quiet_saved = _last_showwarning
            warnings.showwarning = _route_warning
        _quiet_depth += 1
    previous = getattr(_local, "sink", None)
    sink: list[CaughtWarning] = []
    _local.sink = sink
    try:
        yield sink
    finally:
        _local.sink = previous
        with _QUIET_LOCK:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _quiet_saved is not None:
                if warnings.showwarning is _route_warning:
                    warnings.showwarning = _quiet_saved
                _quiet_saved = None


def reissue(caught: Iterable[CaughtWarning], seen: set[tuple[Any, str]], quiet: bool) -> None:
    """Show warnings caught in units in the caller's process, under the caller's filters.

    With ``quiet`` each distinct (category, text) is shown once per run and coffea's retry
    warnings are dropped; without it every warning is shown.
    """
    for w in caught:
        if quiet:
            key = (w.category, w.message)
            if key in seen or w.message.startswith(RETRY_WARNING):
                continue
            seen.add(key)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _portable(caught: list[CaughtWarning]) -> list[CaughtWarning]:
    out = []
    for w in caught:
        category = w.category
        try:
            pickle.loads(pickle.dumps(category))
        except Exception:  # a warning class the caller could not unpickle
            category = UserWarning
        out.append(dataclasses.replace(w, category=category))
    return out


# -- one unit ----------------------------------------------------------------------------------
OutcomeKind = Literal["ok", "bad", "bug"]


@dataclass
class Outcome:
    """What became of one unit (a single-file chunk).

    Attributes
    ----------
    kind : {"ok", "bad", "bug"}
        ``ok``: ``payload`` holds the output; ``bad``: a bad file (an error in the Runner's
        ``skipbadfiles`` set); ``bug``: any other error, which must propagate.
    payload : bytes or None
        The output pickled with cloudpickle (``None`` for a file with no entries).
    events : int
        Entries processed.
    exception : BaseException or None
        The error (for ``bad`` and ``bug``), or a :class:`WorkerError` standing in for one
        that does not pickle. Its ``__cause__`` chain is kept across processes (pickling
        alone drops it).
    error : str
        One line for the report.
    traceback : str
        The formatted traceback, from wherever the unit ran.
    seconds : float
        Time spent on the unit.
    warnings : list of CaughtWarning
        Warnings raised while it ran.
    transient : bool
        For ``bad``: the error may go away on a retry (a refused connection, a timeout).
    retries : int
        How many times the file was tried again (over all its replicas).
    served : str or None
        The replica's path that gave the output, when it is not the file's own path.
    sums : dict
        For ``ok``: the file's per-file quantities (:func:`read_file_sums`).
    """

    kind: OutcomeKind
    payload: bytes | None = None
    events: int = 0
    exception: BaseException | None = None
    error: str = ""
    traceback: str = ""
    seconds: float = 0.0
    warnings: list[CaughtWarning] = field(default_factory=list)
    causes: list[BaseException] = field(default_factory=list)
    transient: bool = False
    retries: int = 0
    served: str | None = None
    sums: dict[str, float] = field(default_factory=dict)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        chain = [self.exception, *self.causes]
        for exc, cause in zip(chain, chain[1:], strict=False):
            if exc is not None:
                exc.__cause__ = cause


def _portable_exception(exc: BaseException) -> BaseException:
    """``exc`` itself if it survives pickling, else a :class:`WorkerError` with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return WorkerError(f"{type(exc).__name__}: {exc}")
    return exc


def _failure(kind: OutcomeKind, exc: BaseException) -> Outcome:
    text = "".join(traceback.format_exception(exc))
    chain, seen = [], {id(exc)}
    cause = exc.__cause__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        chain.append(_portable_exception(cause))
        cause = cause.__cause__
    return Outcome(
        kind,
        exception=_portable_exception(exc),
        error=error_text(exc),
        traceback=text,
        causes=chain,
        transient=kind == "bad" and is_transient(exc),
    )


# Words of errors that another try will not fix, and of errors it may fix, as uproot, fsspec
# and the XRootD client word them ("[3011]" is XRootD's kXR_NotFound, "[3010]" kXR_NotAuthorized).
_PERMANENT_WORDS = (
    "[3011]",
    "[3010]",
    "no such file",
    "not found",
    "permission denied",
    "not authorized",
    "invalid address",
    "is a directory",
)
_TRANSIENT_WORDS = (
    "connection error",
    "connection refused",
    "connection reset",
    "operation expired",
    "timed out",
    "timeout",
    "socket error",
    "broken pipe",
    "temporarily unavailable",
    "[3012]",  # kXR_ServerError
    "[3024]",  # kXR_Overloaded
    "[3007]",  # kXR_IOError
)


def is_transient(exc: BaseException) -> bool:
    """Whether a bad file's error may go away if the file is tried again.

    Connection refused or reset, timeouts and server-side errors are transient; a file that
    does not exist, is not readable, has no such tree or is corrupt is not. The whole chain
    (``__cause__`` and ``__context__``) is read, innermost first.
    """
    import uproot

    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    for error in reversed(chain):
        if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
            return False
        if isinstance(error, uproot.exceptions.KeyInFileError):
            return False
        if isinstance(error, (ConnectionError, TimeoutError)):
            return True
        text = str(error).lower()
        if any(word in text for word in _PERMANENT_WORDS):
            return False
        if any(word in text for word in _TRANSIENT_WORDS):
            return True
    return False


def _probe(runner: Any, path: str, treename: str | None) -> tuple[int | None, BaseException | None]:
    """Count a file's entries: coffea made no work item from it, so is it empty or bad?"""
    if runner.format != "root":
        return None, None
    import uproot

    try:
        with uproot.open(path, timeout=runner.xrootdtimeout) as f:
            return int(f[treename or "Events"].num_entries), None
    except Exception as exc:
        return None, exc


def _raised(exc: BaseException, path: str) -> Outcome:
    """An error the Runner raised (outside ``skipbadfiles``): a bug, but for two known faults
    of a file that are not the processor's."""
    if _is_stale_handle(exc):  # a remote file handle that outlived its server
        outcome = _failure("bad", exc)
        outcome.transient = True
        return outcome
    if _is_non_ascii_path(exc, path):
        outcome = _failure("bad", exc)
        outcome.error = (
            "coffea 2026.9 cannot process a path with non-ASCII characters (it hashes file "
            "names as ASCII); rename the file, or give its percent-encoded URL"
        )
        return outcome
    return _failure("bug", exc)


def _run_unit(
    settings: Mapping[str, Any],
    processor_blob: bytes,
    fileset: Mapping[str, Any],
    path: str,
    treename: str | None,
) -> Outcome:
    import cloudpickle

    allowed = bad_file_types(settings["skipbadfiles"])
    try:
        # A fresh copy per unit: a processor that keeps state on self must not leak it
        # from one file into the next.
        processor_instance, file_sums, weights = cloudpickle.loads(processor_blob)
        runner = _worker_runner(settings)
    except Exception as exc:
        return _failure("bug", exc)
    try:
        # Read first: a file whose sums cannot be read cannot be normalized, so it is a bad
        # file (or, for an error outside skipbadfiles, a bug) before any work is spent on it.
        sums = read_file_sums(runner, path, file_sums, weights)
    except Exception as exc:
        return _failure("bad" if is_allowed(allowed, exc) else "bug", exc)
    try:
        result = runner.run(fileset, processor_instance)
    except ValueError as exc:
        if not str(exc).startswith(NO_CHUNKS_SURVIVED):
            return _raised(exc, path)
        n_entries, error = _probe(runner, path, treename)
        if error is not None:
            return _failure("bad" if is_allowed(allowed, error) else "bug", error)
        if n_entries == 0:
            return Outcome("ok", payload=None, events=0, sums=sums)  # an empty file is complete
        return Outcome(
            "bad",
            error=f"coffea made no work item from it ({n_entries} entries); rerun to retry",
        )
    except Exception as exc:
        return _raised(exc, path)
    if result.is_err():  # the Runner matched skipbadfiles with coffea's chain rule
        return _failure("bad", result.exception)
    wrapped = result.unwrap()
    exception = wrapped["exception"]
    if exception != 0:  # a recoverable executor's capture; the in-process one never is
        return _failure("bad" if is_allowed(allowed, exception) else "bug", exception)
    events = sum(len(item) for item in wrapped["processed"])
    return Outcome("ok", payload=dumps_output(wrapped["out"]), events=events, sums=sums)


#: NanoAOD's Runs tree holds, per luminosity block range, sums over all generated events of the
#: file before any selection; older NanoAOD versions end the names in "_" (nano_dy.root of
#: ../shared/samples does).
GEN_WEIGHTS = {
    "sumw": ("genEventSumw", "genEventSumw_"),
    "sumw2": ("genEventSumw2", "genEventSumw2_"),
    "gen_events": ("genEventCount", "genEventCount_"),
}


def read_file_sums(
    runner: Any, path: str, file_sums: Any = None, weights: bool = True
) -> dict[str, float]:
    """A file's per-file quantities: its generator weights, and what ``file_sums`` gives.

    Read just before the file is processed, so that they are cached with its output and cover
    exactly the files in the result.

    Parameters
    ----------
    runner : coffea.processor.Runner
        For the file format and the XRootD timeout.
    path : str
        The file.
    file_sums : callable, optional
        The user's hook: called with the file opened by uproot, returns ``{name: number}``
        (or None for nothing).
    weights : bool, optional
        Read the generator weights (default True). Reading a ``Runs`` tree's metadata with
        uproot takes a few milliseconds a file.

    Returns
    -------
    dict
        ``sumw``, ``sumw2`` and ``gen_events`` summed over the ``Runs`` tree when the file has
        one with those branches (none of them otherwise: data), and the hook's quantities.

    Raises
    ------
    Exception
        Whatever reading the file or the hook raised; a ``TypeError`` or ``ValueError`` for a
        hook that returns something else than finite numbers under new names.
    """
    if runner.format != "root" or (not weights and file_sums is None):
        return {}
    import uproot

    found: dict[str, float] = {}
    with uproot.open(path, timeout=runner.xrootdtimeout) as f:
        if weights:
            try:
                found.update(_gen_weights(f, path))
            except Exception as exc:
                add_note(
                    exc,
                    f"chunkwise: raised while reading the Runs tree of {path} for its generator "
                    "weights; weights=False (--no-weights) skips it",
                )
                raise
        if file_sums is not None:
            extra = file_sums(f)
            if extra is not None:
                found.update(_checked_sums(extra, file_sums))
    return found


def _gen_weights(f: Any, path: str) -> dict[str, float]:
    import math

    runs = f["Runs"] if "Runs" in f else None
    if not hasattr(runs, "arrays"):  # neither a TTree nor an RNTuple: data
        return {}
    names = set(runs.keys())
    branches = {
        key: next((b for b in candidates if b in names), None)
        for key, candidates in GEN_WEIGHTS.items()
    }
    if not all(branches.values()):
        return {}
    arrays = runs.arrays(list(branches.values()), library="np")
    found: dict[str, float] = {}
    for key, branch in branches.items():
        total = arrays[branch].sum()
        if not math.isfinite(float(total)):
            raise BadWeightsError(
                f"its Runs tree's {branch} sums to {float(total)}: the file cannot be normalized"
            )
        found[key] = int(total) if key == "gen_events" else float(total)
    return found


def _checked_sums(extra: Any, hook: Any) -> dict[str, float]:
    import math
    import numbers

    name = getattr(hook, "__qualname__", None) or repr(hook)
    if not isinstance(extra, Mapping):
        raise TypeError(
            f"file_sums hook {name} returned {type(extra).__name__}; it must return a dict "
            "of {name: number} (or None)"
        )
    out: dict[str, float] = {}
    for key, value in extra.items():
        if not isinstance(key, str) or key in GEN_WEIGHTS:
            raise ValueError(
                f"file_sums hook {name} returned the key {key!r}; use str keys other than "
                f"{', '.join(GEN_WEIGHTS)} (chunkwise reads those from the Runs tree)"
            )
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                f"file_sums hook {name} returned {key!r}: {type(value).__name__}; values "
                "must be numbers"
            )
        if not math.isfinite(float(value)):
            raise ValueError(f"file_sums hook {name} returned {key!r}: {value}, not finite")
        out[key] = int(value) if isinstance(value, numbers.Integral) else float(value)
    return out


@dataclass(frozen=True)
class RetryPolicy:
    """How a bad file is tried again before it is called bad.

    Attributes
    ----------
    retries : int
        Tries after the first, for transient errors only, on each of the file's paths.
    delay : float
        Seconds before the first retry; each next one waits twice as long, times a random
        factor between 0.75 and 1.25 (jitter, so that many workers do not retry in step).
    replicas : tuple of (prefix, tuple of alternatives)
        A file whose path starts with a prefix is tried, after its own path, at each
        alternative prefix in turn.
    """

    retries: int = 3
    delay: float = 1.0
    replicas: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def paths(self, path: str) -> list[str]:
        """The file's own path, then its replicas' paths, in order."""
        out = [path]
        for prefix, alternatives in self.replicas:
            if path.startswith(prefix):
                out += [alt + path[len(prefix) :] for alt in alternatives]
        return out


def _moved(fileset: Mapping[str, Any], old: str, new: str) -> dict[str, Any]:
    """The single-file ``fileset`` with its file at ``new`` instead of ``old``."""
    ((dataset, spec),) = fileset.items()
    files = spec["files"]
    if isinstance(files, Mapping):
        moved: Any = {new if p == old else p: t for p, t in files.items()}
    else:
        moved = [new if p == old else p for p in files]
    return {dataset: {**spec, "files": moved}}


_XRD_LOCK = threading.Lock()
_xrd_depth = 0
_xrd_saved: list[tuple[str, int]] = []
# A file on a server that does not answer should fail in seconds, so that chunkwise's own
# retries (with backoff) and replicas take over; the XRootD client's default is to keep trying
# to connect for 120 s. The user's XRD_* environment variables win.
_XRD_SETTINGS = (
    ("ConnectionWindow", "XRD_CONNECTIONWINDOW", 5),
    ("ConnectionRetry", "XRD_CONNECTIONRETRY", 1),
    # After a connection error the client fails every request to that server at once for
    # StreamErrorWindow seconds (1800 by default): a retry would never reach the network.
    ("StreamErrorWindow", "XRD_STREAMERRORWINDOW", 0),
    # Timeouts are checked every TimeoutResolution seconds (15 by default), so a stalled
    # server would be noticed up to 15 s after Runner.xrootdtimeout.
    ("TimeoutResolution", "XRD_TIMEOUTRESOLUTION", 1),
)


@contextlib.contextmanager
def _xrootd_fails_fast(paths: list[str]) -> Iterator[None]:
    """Shorten the XRootD client's own connection retries inside the block (and restore them
    when the last block in this process ends)."""
    global _xrd_depth, _xrd_saved
    if not any(p.startswith(("root://", "roots://")) for p in paths):
        yield
        return
    try:
        from XRootD.client import EnvGetInt, EnvPutInt
    except ImportError:  # no XRootD client: uproot will say so for the file
        yield
        return
    with _XRD_LOCK:
        if _xrd_depth == 0:
            _xrd_saved = []
            for name, variable, value in _XRD_SETTINGS:
                if variable not in os.environ:
                    _xrd_saved.append((name, EnvGetInt(name)))
                    EnvPutInt(name, value)
        _xrd_depth += 1
    try:
        yield
    finally:
        with _XRD_LOCK:
            _xrd_depth -= 1
            if _xrd_depth == 0:
                for name, value in _xrd_saved:
                    EnvPutInt(name, value)


def _forget_xrootd_handles(path: str) -> None:
    """Drop fsspec-xrootd's cached file systems before a remote file is (re)opened.

    They keep file handles open for 30 s after their last use (each retry is a use); after the
    server restarts, such a handle raises "I/O operation on closed file" forever. A new file
    system opens a new handle; the XRootD client's connections are pooled below it.
    """
    if not path.startswith(("root://", "roots://")):
        return
    try:
        from fsspec_xrootd import XRootDFileSystem
    except ImportError:
        return
    XRootDFileSystem.clear_instance_cache()


def _is_stale_handle(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ValueError) and "closed file" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_non_ascii_path(exc: BaseException, path: str) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UnicodeEncodeError) and not path.isascii():
            return True
        current = current.__cause__ or current.__context__
    return False


def _run_with_retries(
    settings: Mapping[str, Any],
    policy: RetryPolicy,
    processor_blob: bytes,
    fileset: Mapping[str, Any],
    path: str,
    treename: str | None,
) -> Outcome:
    import random

    retries = 0
    outcome = Outcome("bad")
    paths = policy.paths(path)
    with _xrootd_fails_fast(paths):
        for candidate in paths:
            unit = fileset if candidate == path else _moved(fileset, path, candidate)
            for attempt in range(policy.retries + 1):
                if attempt:
                    retries += 1
                    pause = policy.delay * 2 ** (attempt - 1) * random.uniform(0.75, 1.25)
                    time.sleep(pause)
                _forget_xrootd_handles(candidate)
                outcome = _run_unit(settings, processor_blob, unit, candidate, treename)
                if outcome.kind != "bad":
                    outcome.retries = retries
                    outcome.served = None if candidate == path else candidate
                    return outcome
                if not outcome.transient:
                    break
    outcome.retries = retries
    if len(paths) > 1:
        outcome.error = f"{outcome.error} (and on its {len(paths) - 1} replicas)"
    return outcome


def process_unit(
    processor_blob: bytes,
    settings: Mapping[str, Any],
    policy: RetryPolicy,
    fileset: Mapping[str, Any],
    path: str,
    treename: str | None,
) -> Outcome:
    """Run one single-file chunk with an in-process Runner; never raises. Runs on a worker.

    Parameters
    ----------
    processor_blob : bytes
        :func:`dumps_processor` of the processor.
    settings : dict
        :attr:`Plan.settings`.
    policy : RetryPolicy
        Retries and replicas for a bad file.
    fileset : dict
        The unit in the form coffea's Runner reads (one dataset, one file).
    path, treename : str
        The unit's file and tree, to tell an empty file from a bad one.

    Returns
    -------
    Outcome
    """
    start = time.perf_counter()
    with capture() as caught:
        outcome = _run_with_retries(settings, policy, processor_blob, fileset, path, treename)
    outcome.warnings = _portable(caught)
    outcome.seconds = time.perf_counter() - start
    return outcome


def dumps_output(output: Any) -> bytes:
    """An output as it travels and waits for its chunk: cloudpickle in an LZ4 frame.

    Histograms are mostly zeros: compressed, the outputs of a chunk's finished files cost little
    memory while its last files run.
    """
    import cloudpickle
    import lz4.frame

    return lz4.frame.compress(cloudpickle.dumps(output, protocol=pickle.HIGHEST_PROTOCOL))


def pickled_output(payload: bytes) -> bytes:
    """The plain pickle of a :func:`dumps_output` payload, e.g. to write a cache entry."""
    import lz4.frame

    return lz4.frame.decompress(payload)


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, also on Python 3.10 (which has no ``add_note``)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # pragma: no cover - Python 3.10
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]


def load_output(payload: bytes | None) -> Any:
    """The output of a :func:`dumps_output` payload (``None`` for ``None``)."""
    return None if payload is None else pickle.loads(pickled_output(payload))


def merge(total: Any, output: Any) -> Any:
    """Add ``output`` into ``total`` with coffea's ``accumulate``; ``total`` may be None.

    ``total`` is changed in place; ``output`` is not (unless it becomes ``total``, when
    ``total`` is None: pass a fresh object then).
    """
    from coffea.processor import accumulate

    if output is None:
        return total
    if total is None:
        return output
    return accumulate([output], total)


# -- where units run -------------------------------------------------------------------------
class Backend:
    """One pool or client for a whole run: submit units, wait for any, cancel, close."""

    workers: int = 1
    #: Units run inside ``submit`` (this process): open one chunk at a time.
    runs_at_submit: bool = False

    def queue_target(self) -> int:
        """How many units to keep submitted: enough that no worker waits for the next one
        while this process learns that the last one finished (a round trip on dask)."""
        return 4 * self.workers + 4

    def default_in_flight(self) -> int:
        """The default bound on open chunks (see ``chunkwise.run``'s ``in_flight``)."""
        return 4 * self.workers

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def submit_many(self, fn: Callable[..., Any], args: list[tuple[Any, ...]]) -> list[Any]:
        """``[submit(fn, *a) for a in args]``, in one go where the backend can batch."""
        return [self.submit(fn, *a) for a in args]

    def wait_any(self, futures: Iterable[Any]) -> set[Any]:
        """Block until at least one of ``futures`` is done; return the done ones."""
        raise NotImplementedError

    def share(self, blob: bytes) -> Any:
        """Something to pass to ``submit`` in place of ``blob``, sent to workers once."""
        return blob

    def check(self, blob: Any) -> None:
        """Raise :class:`ProcessorUnavailableError` if the workers cannot load the processor."""

    def cancel(self, futures: Iterable[Any]) -> None:
        for future in futures:
            future.cancel()

    def close(self) -> None:
        pass

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _InProcessBackend(Backend):
    """Units run when submitted, so one chunk at a time: each is cached before the next."""

    workers = 1
    runs_at_submit = True

    def queue_target(self) -> int:
        return 1

    def default_in_flight(self) -> int:
        return 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # KeyboardInterrupt and SystemExit stop the run at once
            future.set_exception(exc)
        return future

    def submit_many(self, fn: Callable[..., Any], args: list[tuple[Any, ...]]) -> list[Any]:
        futures = []
        for a in args:
            future = self.submit(fn, *a)
            futures.append(future)
            outcome = future.result() if future.exception() is None else None
            if outcome is None or getattr(outcome, "kind", None) == "bug":
                break  # the run stops here: do not process the chunk's other files first
        for _ in range(len(args) - len(futures)):
            skipped: concurrent.futures.Future[Any] = concurrent.futures.Future()
            skipped.cancel()
            futures.append(skipped)
        return futures

    def wait_any(self, futures: Iterable[Any]) -> set[Any]:
        return set(futures)  # all done at submit


def _unavailable(reason: str, where: str) -> ProcessorUnavailableError:
    return ProcessorUnavailableError(
        f"the processor cannot be loaded on the {where} ({reason}); make the modules it "
        "imports importable there (install them, or with dask use client.upload_file), "
        "then rerun"
    )


class _PoolBackend(Backend):
    def __init__(self, executor: Any) -> None:
        pool = executor.pool
        self._own = not isinstance(pool, concurrent.futures.Executor)
        self.pool = pool(max_workers=executor.workers) if self._own else pool
        self.workers = max(1, int(getattr(self.pool, "_max_workers", executor.workers) or 1))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.pool.submit(fn, *args)

    def wait_any(self, futures: Iterable[Any]) -> set[Any]:
        done, _ = concurrent.futures.wait(
            list(futures), return_when=concurrent.futures.FIRST_COMPLETED
        )
        return done

    def check(self, blob: Any) -> None:
        reason = self.pool.submit(check_processor, blob).result()
        if reason is not None:
            raise _unavailable(reason, "process pool's workers")

    def close(self) -> None:
        if self._own:
            self.pool.shutdown(wait=True)


def _identity(value: Any) -> Any:
    return value


class _DaskBackend(Backend):
    def __init__(self, executor: Any) -> None:
        import distributed

        self._distributed = distributed
        self._own = executor.client is None
        self.client = distributed.Client(threads_per_worker=1) if self._own else executor.client
        self.priority = executor.priority
        info = self.client.scheduler_info()
        threads = sum(w.get("nthreads", 1) for w in info.get("workers", {}).values())
        self.workers = max(1, threads)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False, priority=self.priority)

    def submit_many(self, fn: Callable[..., Any], args: list[tuple[Any, ...]]) -> list[Any]:
        # One message to the scheduler for a chunk's files, not one per file.
        columns = [list(column) for column in zip(*args, strict=True)] if args else []
        return list(self.client.map(fn, *columns, pure=False, priority=self.priority))

    def wait_any(self, futures: Iterable[Any]) -> set[Any]:
        done, _ = self._distributed.wait(list(futures), return_when="FIRST_COMPLETED")
        return set(done)

    def share(self, blob: bytes) -> Any:
        # The bytes go to the scheduler once and reach each worker once, as coffea's own
        # heavy_input does (client.scatter is not robust on adaptive clusters).
        return self.client.submit(_identity, blob, pure=False)

    def check(self, blob: Any) -> None:
        try:
            reason = self.client.submit(check_processor, blob, pure=False).result()
        except Exception as exc:  # e.g. chunkwise itself is missing on the workers
            raise _unavailable(f"{type(exc).__name__}: {exc}", "dask workers") from None
        if reason is not None:
            raise _unavailable(reason, "dask workers")

    def cancel(self, futures: Iterable[Any]) -> None:
        futures = list(futures)
        if futures:
            self.client.cancel(futures)

    def close(self) -> None:
        if self._own:
            self.client.close()


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
