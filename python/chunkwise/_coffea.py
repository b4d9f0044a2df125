"""Everything chunkwise knows about coffea's Runner and executors, in one place.

chunkwise runs a fileset as *units*: single-file chunks (``split_fileset(chunk,
strategy="by_dataset", files_per_chunk=1)``), each processed by :func:`process_unit` with an
in-process coffea ``Runner`` (an ``IterativeExecutor`` with the caller's Runner settings) on
whatever runs the caller's executor: this process, the ``FuturesExecutor``'s process pool, or the
``DaskExecutor``'s cluster. One pool or client serves the whole run (:meth:`Plan.backend`).

This module is the only one that imports coffea:

- making and preparing Runners (:func:`default_runner`, :func:`plan`);
- running one unit and returning an :class:`Outcome` (:func:`process_unit`), reading coffea's
  wrapped output (``"out"``, ``"processed"``, ``"exception"``) with hard look-ups and
  classifying errors with coffea's own rule: an error is a bad file when it, or an exception
  on its ``__cause__`` chain, is an instance of the Runner's ``skipbadfiles`` types;
- running units without coffea's progress bars;
- merging outputs (:func:`merge`);
- building a run's parts from names, for the command line and notebooks alike: the processor
  (:func:`load_processor`), the Runner (:func:`make_runner`), the executor
  (:func:`make_executor`), and saving the merged output (:func:`save_output`).

What is not coffea's lives beside it: ``chunkwise.retry`` (transient errors, retries, XRootD),
``chunkwise.sums`` (the per-file sums of weights), ``chunkwise.quiet`` (warnings),
``chunkwise.shipping`` (pickling the processor and outputs) and ``chunkwise.backends`` (pools
and clients).

``tests/test_coffea_contract.py`` pins these to coffea 2026.9: an upgrade that renames a key or
changes a message fails there, loudly, instead of changing chunkwise's behaviour silently.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from coffea import nanoevents, processor
from coffea import util as coffea_util
from coffea.processor import ProcessorABC, defaultdict_accumulator

from chunkwise.atomic import atomic_path
from chunkwise.backends import Backend, _DaskBackend, _InProcessBackend, _PoolBackend
from chunkwise.errors import (
    BadWeightsError,
    OptionError,
    ProcessorUnavailableError,
    WorkerError,
    causes,
    one_line,
)
from chunkwise.extras import dask_jobqueue, distributed
from chunkwise.outcomes import (
    Outcome,
    _failure,
    bad_file_errors_named,
    bad_file_types,
    default_bad_file_errors,
    is_allowed,
)
from chunkwise.quiet import _portable, capture
from chunkwise.retry import RetryPolicy, _is_stale_handle, _run_with_retries
from chunkwise.shipping import LocalProcessor, dumps_output, loads_processor
from chunkwise.sums import _probe, read_file_sums

__all__ = [
    "NO_CHUNKS_SURVIVED",
    "BadWeightsError",
    "Plan",
    "ProcessorABC",
    "defaultdict_accumulator",
    "load_processor",
    "make_executor",
    "make_runner",
    "save_output",
    "schema_named",
    "ProcessorUnavailableError",
    "WorkerError",
    "cpu_count",
    "default_runner",
    "merge",
    "plan",
    "process_unit",
]

#: The start of the ValueError coffea's Runner raises when preprocessing left no work item (for
#: one file: it has no entries).
NO_CHUNKS_SURVIVED = "No chunks survived preprocessing"

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
    bad_file_notes : list of str
        What was adjusted that changes the result only if a file is bad: for the report when
        one is.
    """

    runner: Any
    kind: Literal["iterative", "futures", "dask"]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    bad_file_notes: list[str] = field(default_factory=list)

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
    bad_file_notes = []
    if not runner.skipbadfiles:
        settings["skipbadfiles"] = default_bad_file_errors()
        bad_file_notes.append(
            "the Runner has skipbadfiles=False; chunkwise treats OSError and KeyInFileError as "
            "bad files, so that one broken file does not end the run"
        )
    settings["use_result_type"] = True
    if runner.maxchunks is not None:
        notes.append(
            f"maxchunks={runner.maxchunks} applies to each file: chunkwise runs files "
            "separately, where a plain Runner applies it to each dataset"
        )
    return Plan(runner, kind, settings, notes, bad_file_notes)


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


class _Shipped(ProcessorABC):  # type: ignore[misc]
    """The processor as a unit hands it to coffea's Runner, which pickles it and loads a fresh
    copy for every work item: pickled, it is the blob it came in, and loaded, it is
    ``loads_processor``'s copy, so that its code keeps its file names (a copy pickled by
    cloudpickle anew would be ``<dynamic-code>`` again on a worker that cannot import it)."""

    def __init__(self, blob: bytes | LocalProcessor, processor_instance: Any) -> None:
        self.blob = blob
        self.processor_instance = processor_instance

    def __reduce__(self) -> tuple[Any, ...]:
        return _fresh_processor, (self.blob,)

    def process(self, events: Any) -> Any:
        return self.processor_instance.process(events)

    def postprocess(self, accumulator: Any) -> Any:
        return self.processor_instance.postprocess(accumulator)


def _fresh_processor(blob: bytes | LocalProcessor) -> Any:
    return loads_processor(blob)[0]


def _worker_runner(settings: Mapping[str, Any]) -> Any:
    from coffea import processor

    options = dict(settings)
    executor = _unit_executor_class()(status=False, retries=options.pop("retries"))
    return processor.Runner(executor=executor, **options)


# -- one unit ----------------------------------------------------------------------------------


def _is_non_ascii_path(exc: BaseException, path: str) -> bool:
    """coffea's fault with a non-ASCII path, on the chain (``__context__`` too)."""
    return not path.isascii() and any(
        isinstance(error, UnicodeEncodeError) for error in causes(exc, context=True)
    )


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
    processor_blob: bytes | LocalProcessor,
    treename: str | None,
    fileset: Mapping[str, Any],
    path: str,
) -> Outcome:
    allowed = bad_file_types(settings["skipbadfiles"])
    try:
        # A fresh copy per unit: a processor that keeps state on self must not leak it
        # from one file into the next.
        processor_instance, file_sums, weights = loads_processor(processor_blob)
        runner = _worker_runner(settings)
    except Exception as exc:
        return _failure("bug", exc)
    try:
        # Read first: a file whose sums cannot be read cannot be normalized, so it is a bad
        # file (or, for an error outside skipbadfiles, a bug) before any work is spent on it.
        sums = read_file_sums(runner, path, file_sums, weights, treename)
    except Exception as exc:
        return _failure("bad" if is_allowed(allowed, exc) else "bug", exc)
    try:
        result = runner.run(fileset, _Shipped(processor_blob, processor_instance))
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


def process_unit(
    processor_blob: bytes | LocalProcessor,
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
        ``chunkwise.shipping.dumps_processor`` of the processor.
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
        attempt = functools.partial(_run_unit, settings, processor_blob, treename)
        outcome = _run_with_retries(policy, fileset, path, attempt, Outcome("bad"))
    outcome.warnings = _portable(caught)
    outcome.seconds = time.perf_counter() - start
    return outcome


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


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# -- building what a run needs from names (the command line's, or a notebook's) -----------------
def load_processor(spec: str) -> Any:
    """Import ``module:Class`` and return an instance of that coffea processor.

    Parameters
    ----------
    spec : str
        ``module:Class`` (or ``module:instance``), e.g. ``chunkwise.examples:METProcessor``.
        The working directory is put on ``sys.path`` if it is not there, so that a processor
        module beside the fileset imports the same way under ``python -m`` and the console
        script.

    Returns
    -------
    coffea.processor.ProcessorABC

    Raises
    ------
    chunkwise.errors.OptionError
        With one line starting with ``spec``: what is wrong and what to do.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise OptionError(
            f"{spec!r}: write it as module:Class, e.g. --processor chunkwise.examples:METProcessor"
        )
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise OptionError(
                f"{spec!r}: no module named {err.name!r}; check the name, run from "
                "its directory or add that directory to PYTHONPATH"
            ) from None
        raise OptionError(
            f"{spec!r}: importing {module_name!r} failed: {one_line(err)}; install what it needs"
        ) from None
    except Exception as err:
        raise OptionError(
            f"{spec!r}: importing {module_name!r} failed: "
            f"{type(err).__name__}: {one_line(err)}; fix the module"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise OptionError(f"{spec!r}: {module_name!r} has no {attr!r}; check the class name")
        obj = getattr(obj, part)
    if isinstance(obj, type):
        if not issubclass(obj, ProcessorABC):
            raise OptionError(f"{spec!r}: {attr} is not a coffea.processor.ProcessorABC subclass")
        try:
            obj = obj()
        except Exception as err:
            raise OptionError(
                f"{spec!r}: {attr}() failed: {type(err).__name__}: "
                f"{one_line(err)}; the class must be creatable without arguments"
            ) from None
    if not isinstance(obj, ProcessorABC):
        raise OptionError(f"{spec!r}: {attr} is not a coffea processor class or instance")
    return obj


def schema_named(name: str) -> Any:
    """The ``coffea.nanoevents`` schema class called ``name`` (case and a ``Schema`` suffix
    do not matter: ``nanoaod`` is ``NanoAODSchema``).

    Raises
    ------
    chunkwise.errors.OptionError
        For a name no schema has; the message lists them.
    """
    names = sorted(n for n in dir(nanoevents) if n.endswith("Schema") and n != "Schema")
    wanted = name.lower().removesuffix("schema")
    for candidate in names:
        if candidate.lower().removesuffix("schema") == wanted:
            return getattr(nanoevents, candidate)
    raise OptionError(f"unknown schema {name!r}; choose one of {', '.join(names)}")


def make_runner(
    executor: Any = None,
    *,
    schema: str = "NanoAODSchema",
    chunksize: int = 100_000,
    bad_file_errors: str | None = None,
) -> Any:
    """The coffea Runner that ``chunkwise run`` builds from its options.

    Parameters
    ----------
    executor : coffea executor, optional
        Default ``IterativeExecutor(status=False)``.
    schema : str, optional
        A ``coffea.nanoevents`` schema's name (see ``schema_named``).
    chunksize : int, optional
        Events per row chunk inside a file.
    bad_file_errors : str, optional
        Comma-separated exception names that make a file bad (``bad_file_errors_named``).

    Returns
    -------
    coffea.processor.Runner
        With ``use_result_type=True``, the way chunkwise runs every file.
    """
    return processor.Runner(
        executor=processor.IterativeExecutor(status=False) if executor is None else executor,
        schema=schema_named(schema),
        chunksize=chunksize,
        skipbadfiles=bad_file_errors_named(bad_file_errors),
        use_result_type=True,
    )


def make_executor(
    kind: str,
    workers: int | None = None,
    scheduler: str | None = None,
    job_options: Sequence[str] = (),
) -> tuple[Any, list[Callable[[], Any]]]:
    """A coffea executor by name, and what to call (in reverse order) to shut it down.

    Parameters
    ----------
    kind : {"iterative", "futures", "dask", "slurm"}
        In this process, a process pool, dask (a ``LocalCluster`` of ``workers``
        single-threaded workers, or the running ``scheduler``), or dask with ``workers``
        workers started as Slurm jobs (``slurm_cluster``).
    workers : int, optional
        Processes (default: the cores this process may use, as a batch slot allots them; for
        ``slurm``, 2).
    scheduler : str, optional
        Address of a running dask scheduler, e.g. ``tcp://host:8786``.
    job_options : sequence of str
        For ``slurm``: extra ``#SBATCH`` options of each worker's job.

    Raises
    ------
    chunkwise.errors.MissingExtraError
        For dask without ``chunkwise[dask]``, slurm without ``chunkwise[slurm]``.
    chunkwise.errors.OptionError
        If the scheduler cannot be reached, or Slurm refuses the workers' jobs.
    """
    if kind == "slurm":
        cluster = slurm_cluster(workers or 2, job_options)
        closers: list[Callable[[], Any]] = [cluster.close]
        client = distributed("--executor slurm").Client(cluster)
        closers.append(client.close)
        return processor.DaskExecutor(client=client, status=False), closers
    workers = workers or cpu_count()
    if kind == "iterative":
        return processor.IterativeExecutor(status=False), []
    if kind == "futures":
        return processor.FuturesExecutor(workers=workers, status=False), []
    dask = distributed("--scheduler" if scheduler is not None else "--executor dask")
    closers = []
    if scheduler is not None:
        try:
            client = dask.Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as err:
            raise OptionError(
                f"{scheduler!r}: cannot connect ({one_line(err)}); "
                "check the address and that the scheduler is running"
            ) from None
        closers.append(client.close)
    else:
        # Its workers log at ERROR only: a cluster shut down after a bug would otherwise log
        # each cancelled task after the run's last line.
        cluster = dask.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        closers.append(cluster.close)
        client = dask.Client(cluster)
        closers.append(client.close)
    return processor.DaskExecutor(client=client, status=False), closers


def slurm_cluster(workers: int, job_options: Sequence[str] = ()) -> Any:
    """A dask-jobqueue ``SLURMCluster`` of ``workers`` single-threaded workers, one Slurm job
    each, asked for now (they join as Slurm starts them).

    What dask's configuration sets (``jobqueue.slurm`` in ``~/.config/dask/jobqueue.yaml``:
    queue, account, walltime, memory...) is kept; what it leaves unset is one core and 2 GiB a
    worker. The jobs run this Python (``sys.executable``) with this process's environment, so
    the nodes must see it: a shared file system, as Slurm clusters have.

    Parameters
    ----------
    workers : int
        How many worker jobs.
    job_options : sequence of str
        Extra ``#SBATCH`` options of each job, e.g. ``["--partition=short"]``.

    Raises
    ------
    chunkwise.errors.MissingExtraError
        Without ``chunkwise[slurm]`` (dask-jobqueue).
    chunkwise.errors.OptionError
        If ``sbatch`` is missing or refuses the jobs (its message).
    """
    jobqueue = dask_jobqueue("--executor slurm")
    import dask.config

    config = dask.config.get("jobqueue.slurm", default={}) or {}
    options, walltime = _split_walltime(job_options, config.get("walltime") or "00:30:00")
    seconds = walltime_seconds(walltime)
    # No dashboard nobody looks at (it would take, or warn about, a login node's port 8787),
    # unless dask's configuration asks for one.
    scheduler_options = dict(config.get("scheduler-options") or {})
    if not any(key.startswith("dashboard") for key in scheduler_options):
        scheduler_options["dashboard"] = False
    kwargs: dict[str, Any] = {
        "silence_logs": "error",
        "scheduler_options": scheduler_options,
        "walltime": walltime,
        "job_extra_directives": [*(config.get("job-extra-directives") or []), *options],
    }
    if seconds is not None:
        # A worker leaves on its own before Slurm ends its job at the walltime, and a new job
        # takes its place (adapt, below): a run longer than one job's walltime goes on.
        margin = min(300, max(20, seconds // 10))
        kwargs["worker_extra_args"] = [
            *(config.get("worker-extra-args") or []),
            "--lifetime",
            f"{max(10, seconds - margin)}s",
            "--lifetime-stagger",
            f"{max(1, margin // 4)}s",
        ]
    if config.get("cores") is None:
        kwargs.update(cores=1, processes=1)
    if config.get("memory") is None:
        kwargs["memory"] = "2GiB"
    if shutil.which("sbatch") is None:
        raise OptionError("sbatch is not on PATH: run on a node that can submit Slurm jobs")
    cluster = jobqueue.SLURMCluster(**kwargs)
    try:
        # A job Slurm would refuse (a bad option, no such partition) is said now, in sbatch's
        # words, rather than logged in the background while the run waits for workers.
        refused = _sbatch_test_only(cluster.job_script())
        if refused is not None:
            raise OptionError(f"sbatch --test-only of a worker's job failed: {refused}")
        # Always `workers` jobs: one that ends (its walltime, a node lost, scancel) is replaced.
        cluster.adapt(minimum_jobs=workers, maximum_jobs=workers)
    except BaseException:
        cluster.close()
        raise
    return cluster


def _split_walltime(options: Sequence[str], default: str) -> tuple[list[str], str]:
    """The job options without a time limit (``--time=T``, ``-t T``, ``--time T``), and the
    time limit: the last one given, else ``default``."""
    kept: list[str] = []
    walltime = default
    items = list(options)
    i = 0
    while i < len(items):
        option = items[i]
        if option.startswith("--time="):
            walltime = option.split("=", 1)[1]
        elif option in ("--time", "-t") and i + 1 < len(items):
            walltime = items[i + 1]
            i += 1
        elif option.startswith("-t") and len(option) > 2:
            walltime = option[2:].lstrip("=")
        else:
            kept.append(option)
        i += 1
    return kept, walltime


def walltime_seconds(text: str) -> int | None:
    """Seconds in a Slurm time limit (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``,
    ``D-H:M:S``), or None for one that is not (``UNLIMITED``, a typo: Slurm says so).

    Examples
    --------
    >>> walltime_seconds("00:30:00"), walltime_seconds("1-2"), walltime_seconds("90")
    (1800, 93600, 5400)
    """
    days, _, rest = text.strip().rpartition("-")
    try:
        parts = [int(p) for p in rest.split(":")]
        n_days = int(days) if days else 0
    except ValueError:
        return None
    if days:
        units = [3600, 60, 1][: len(parts)]  # D-H, D-H:M, D-H:M:S
    else:
        units = {1: [60], 2: [60, 1], 3: [3600, 60, 1]}.get(len(parts), [])
    if not units or len(units) != len(parts) or any(p < 0 for p in parts):
        return None
    return n_days * 86400 + sum(p * u for p, u in zip(parts, units, strict=True))


def _sbatch_test_only(script: str) -> str | None:
    """``sbatch --test-only`` of a job script: None if Slurm would take it, else its error."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="chunkwise-") as f:
        f.write(script)
        f.flush()
        done = subprocess.run(["sbatch", "--test-only", f.name], capture_output=True, text=True)
    if done.returncode == 0:
        return None
    lines = [line.removeprefix("sbatch: error: ") for line in done.stderr.strip().splitlines()]
    return lines[0] if lines else f"exit status {done.returncode}"


def save_output(output: Any, path: str | os.PathLike[str]) -> None:
    """Save a run's merged output with ``coffea.util.save`` (``coffea.util.load`` reads it),
    atomically: a reader sees the old file or the new one, never a torn one."""
    with atomic_path(path) as tmp:
        coffea_util.save(output, tmp)
