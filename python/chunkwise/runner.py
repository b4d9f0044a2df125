"""``chunkwise.run``: process a fileset chunk by chunk with a coffea Runner, losing no work.

Each chunk of ``chunkwise.split_fileset`` is run on its own, its output is cached under
``chunkwise.hash_fileset(chunk)`` (see ``chunkwise.cache``), a chunk that fails is re-run file by
file so that only the files that really fail are lost, and the ``RunReport`` says what fraction of
each dataset's files, and how many events, made it into the merged output.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from chunkwise import _core
from chunkwise.cache import ChunkCache, SalvageRecord
from chunkwise.cache import cache_tag as _derive_cache_tag
from chunkwise.filesets import runner_fileset
from chunkwise.quiet import mute_coffea_bars

__all__ = ["ChunkFailure", "ChunkRecord", "RunReport", "default_runner", "run"]

ChunkStatus = Literal["processed", "cached", "failed", "salvaged"]

_NO_CHUNKS_MESSAGES = ("No chunks survived preprocessing", "No chunks returned results")


class ChunkFailure(Exception):
    """A chunk failed without an exception of its own: coffea dropped some of its files
    silently, or the failure was recorded by an earlier run (the text is all that is left)."""


@dataclass
class ChunkRecord:
    """What happened to one chunk (or, inside ``parts``, to one file of a salvaged chunk).

    Attributes
    ----------
    hash : str
        ``chunkwise.hash_fileset(fileset)``, the cache key.
    fileset : dict
        The chunk itself.
    status : {"processed", "cached", "failed", "salvaged"}
        ``processed``: computed in this call; ``cached``: loaded from the cache; ``failed``:
        none of its output is in the result; ``salvaged``: the chunk failed as a whole and was
        re-run file by file (see ``parts``).
    exception : BaseException or None
        Why the chunk failed (for ``failed`` and ``salvaged``).
    seconds : float
        Wall time spent on this chunk, parts included.
    events : dict
        ``{dataset: events}`` in the output from this chunk.
    bad_files : dict
        ``{dataset: {path: "error text"}}``: this chunk's files that are not in the output.
    parts : list of ChunkRecord
        For a salvaged chunk, one record per file.
    """

    hash: str
    fileset: dict[str, Any]
    status: ChunkStatus
    exception: BaseException | None = None
    seconds: float = 0.0
    events: dict[str, int] = field(default_factory=dict)
    bad_files: dict[str, dict[str, str]] = field(default_factory=dict)
    parts: list[ChunkRecord] = field(default_factory=list)


@dataclass
class RunReport:
    """The result of ``chunkwise.run``.

    Attributes
    ----------
    output : object
        The merged accumulator of everything that succeeded (``None`` if nothing did).
    chunks : list of ChunkRecord
        One record per chunk, in the order they were run.
    bad_files : dict
        ``{dataset: {path: "error text"}}`` for every file missing from ``output``.
    completeness : dict
        ``{dataset: fraction of its files in output}``; a file with 0 events counts as in.
    events : dict
        ``{dataset: events processed}`` (``maxchunks`` limits these).
    n_processed : int
        Chunks, or single files of salvaged chunks, computed successfully in this call.
    n_cached : int
        Chunks (or single files of salvaged chunks) loaded from the cache.
    n_failed : int
        Chunks (or single files of salvaged chunks) that failed.
    files_total : dict
        ``{dataset: number of files}`` over all chunks.
    cache : ChunkCache or None
        Where the entries are, if a cache was used.
    notes : list of str
        Things worth knowing, e.g. that the Runner was copied with ``use_result_type=True``.
    """

    output: Any = None
    chunks: list[ChunkRecord] = field(default_factory=list)
    bad_files: dict[str, dict[str, str]] = field(default_factory=dict)
    completeness: dict[str, float] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    n_processed: int = 0
    n_cached: int = 0
    n_failed: int = 0
    files_total: dict[str, int] = field(default_factory=dict)
    cache: ChunkCache | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True only when every file of every dataset is in ``output``."""
        return self.n_failed == 0 and all(f == 1.0 for f in self.completeness.values())

    def summary(self) -> str:
        """A per-dataset table: files ok, bad and total, events, and the fraction of files in.

        Returns
        -------
        str
            The table, followed by chunk counts and any notes.
        """
        rows = [("dataset", "files ok", "bad", "total", "events", "fraction")]
        for dataset in sorted(self.files_total):
            total = self.files_total[dataset]
            bad = len(self.bad_files.get(dataset, {}))
            rows.append(
                (
                    dataset,
                    str(total - bad),
                    str(bad),
                    str(total),
                    f"{self.events.get(dataset, 0):,}",
                    f"{self.completeness.get(dataset, 0.0):.1%}",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

        def fmt(row: Sequence[str]) -> str:
            cells = [row[0].ljust(widths[0])]
            cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
            return "  ".join(cells).rstrip()

        lines = [fmt(rows[0]), "  ".join("-" * w for w in widths)]
        lines += [fmt(row) for row in rows[1:]]
        lines.append("")
        lines.append(
            f"chunks: {len(self.chunks)} ({self.n_processed} processed, {self.n_cached} cached, "
            f"{self.n_failed} failed); "
            + ("complete" if self.complete else "INCOMPLETE: see bad_files")
        )
        for dataset in sorted(self.bad_files):
            for path, error in sorted(self.bad_files[dataset].items()):
                lines.append(f"  bad: {dataset}: {path}: {error}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def default_runner() -> Any:
    """The Runner that ``run`` uses when none is given.

    Returns
    -------
    coffea.processor.Runner
        ``IterativeExecutor``, ``NanoAODSchema``, ``skipbadfiles=True`` (``OSError`` is a bad
        file) and ``use_result_type=True``.
    """
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    return processor.Runner(
        executor=processor.IterativeExecutor(status=False),
        schema=NanoAODSchema,
        skipbadfiles=True,
        use_result_type=True,
    )


# -- helpers ------------------------------------------------------------------------------------
def _files_of(chunk: Mapping[str, Any]) -> dict[str, dict[str, str | None]]:
    """``{dataset: {path: treename}}`` of a self-contained chunk."""
    out: dict[str, dict[str, str | None]] = {}
    for dataset, spec in chunk.items():
        if isinstance(spec, Mapping):
            files = spec.get("files", {})
            default = spec.get("treename")
        else:
            files, default = spec, None
        if isinstance(files, Mapping):
            out[dataset] = {str(p): _treename(t, default) for p, t in files.items()}
        else:
            out[dataset] = {str(p): default for p in files}
    return out


def _treename(value: Any, default: str | None) -> str | None:
    """The tree of one ``files`` entry: a name, ``None``, or coffea's preprocessed form."""
    if isinstance(value, Mapping):  # {"object_path": tree, "steps": ..., ...}
        value = value.get("object_path")
    return value if value is not None else default


def _n_files(chunk: Mapping[str, Any]) -> int:
    return sum(len(files) for files in _files_of(chunk).values())


def _error_text(exc: BaseException) -> str:
    # coffea wraps the cause ("Failed processing file: ..."); the innermost message says most.
    inner = exc
    seen = {id(inner)}
    while inner.__cause__ is not None and id(inner.__cause__) not in seen:
        inner = inner.__cause__
        seen.add(id(inner))
    text = " ".join(f"{type(inner).__name__}: {inner}".split())
    return text if len(text) <= 300 else text[:297] + "..."


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        chain.append(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return chain


def _allowed(runner: Any) -> tuple[type[BaseException], ...]:
    skip = runner.skipbadfiles
    if skip is True:
        return (OSError,)
    return tuple(skip) if skip else ()


def _is_allowed(runner: Any, exc: BaseException) -> bool:
    allowed = _allowed(runner)
    return bool(allowed) and any(isinstance(c, allowed) for c in _exception_chain(exc))


def _merge(total: Any, output: Any) -> Any:
    from coffea.processor import accumulate

    if output is None:
        return total
    if total is None:
        return output  # a fresh object (computed or unpickled): safe to add into in place
    return accumulate([output], total)


def _add_counts(into: dict[str, int], counts: Mapping[str, int]) -> None:
    for key, value in counts.items():
        into[key] = into.get(key, 0) + int(value)


def _add_bad(into: dict[str, dict[str, str]], bad: Mapping[str, Mapping[str, str]]) -> None:
    for dataset, files in bad.items():
        into.setdefault(dataset, {}).update(files)


@dataclass
class _Outcome:
    ok: bool
    output: Any = None
    events: dict[str, int] = field(default_factory=dict)
    bad_files: dict[str, dict[str, str]] = field(default_factory=dict)
    exception: BaseException | None = None


class _EntryWriter:
    """Writes cache entries on one background thread.

    A save is dominated by ``fsync``, which would otherwise add about a millisecond to every
    chunk; on this thread it overlaps the next chunk's computation. The output is pickled on
    the caller's thread (it is merged in place afterwards), and ``flush`` waits for every write,
    so that when ``run`` returns or raises, everything finished is on disk. A SIGKILL can lose
    a write in flight, which only means recomputing that chunk: the rename is still atomic.
    """

    def __init__(self, cache: ChunkCache | None) -> None:
        self.cache = cache
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: list[concurrent.futures.Future[Any]] = []

    def save(self, chunk_hash: str, output: Any, info: Mapping[str, Any]) -> None:
        if self.cache is None:
            return
        data = self.cache.encode(chunk_hash, output, info)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="chunkwise-cache"
            )
        self._pending.append(self._pool.submit(self.cache.write, chunk_hash, data))
        self._reap(wait=False)

    def _reap(self, wait: bool) -> None:
        still = []
        for future in self._pending:
            if wait or future.done():
                future.result()  # re-raises a failed write (e.g. disk full)
            else:
                still.append(future)
        self._pending = still

    def close(self) -> None:
        try:
            self._reap(wait=True)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


class _Progress:
    """One bar over the chunks, with processed/cached/failed counts; a no-op when disabled."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.counts = {"processed": 0, "cached": 0, "failed": 0}
        self._progress: Any = None
        if enabled and total:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("chunkwise"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(),
            )
            self._task = self._progress.add_task("chunks", total=total, counts=self._text())

    def _text(self) -> str:
        c = self.counts
        return f"{c['processed']} processed, {c['cached']} cached, {c['failed']} failed"

    def __enter__(self) -> _Progress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self, record: ChunkRecord) -> None:
        for unit in record.parts or [record]:
            if unit.status in self.counts:
                self.counts[unit.status] += 1
        if self._progress is not None:
            self._progress.update(self._task, advance=1, counts=self._text())


# -- the run loop -------------------------------------------------------------------------------
class _Loop:
    def __init__(
        self, runner: Any, processor_instance: Any, cache: ChunkCache | None, salvage: bool
    ) -> None:
        self.runner = runner
        self.processor = processor_instance
        self.cache = cache
        self.salvage = salvage
        self.foreign_entries = 0
        self.writer = _EntryWriter(cache)

    def _probe(self, path: str, treename: str | None) -> tuple[int | None, BaseException | None]:
        """Open a file that coffea left out and count its entries, to tell an empty file (fine)
        from a bad one (and get the error coffea swallowed)."""
        if self.runner.format != "root":
            return None, None
        import uproot

        try:
            with uproot.open(path, timeout=self.runner.xrootdtimeout) as f:
                return int(f[treename or "Events"].num_entries), None
        except Exception as exc:
            return None, exc

    def compute(self, chunk: dict[str, Any]) -> _Outcome:
        """Run one chunk and decide whether all of its files are in the output.

        How dropped files are found: ``Runner.run`` (unlike ``Runner.__call__``) returns coffea's
        wrapped output, whose ``"processed"`` entry is the set of WorkItems (file, entry range)
        that were actually processed. Any file of the chunk without a WorkItem was either empty
        (coffea makes no WorkItem for 0 entries) or dropped: a recoverable executor swallows
        preprocessing errors, and a chunk whose files all fail raises ``ValueError("No chunks
        survived preprocessing")``. Only those few files are opened again to tell the two
        apart. This relies on nothing but the Runner's public ``run`` method, works the same for
        every executor, and does not depend on ``savemetrics`` or the metadata cache.
        """
        files = _files_of(chunk)
        try:
            # The cache key is the chunk's own hash; the Runner reads {path: tree}.
            result = self.runner.run(runner_fileset(chunk), self.processor)
        except ValueError as exc:
            if not any(m in str(exc) for m in _NO_CHUNKS_MESSAGES):
                raise
            output, processed, failure = None, set(), exc
        else:
            if result.is_err():
                return _Outcome(False, exception=result.exception)
            wrapped = result.unwrap()
            exception = wrapped.get("exception", 0)
            if exception != 0:
                # a recoverable executor captured an allowed error: the output is partial
                return _Outcome(False, exception=exception)
            output, processed, failure = wrapped["out"], wrapped.get("processed", set()), None

        events: dict[str, int] = {d: 0 for d in files}
        covered: set[tuple[str, str]] = set()
        for item in processed:
            events[item.dataset] = events.get(item.dataset, 0) + len(item)
            covered.add((item.dataset, item.filename))

        bad: dict[str, dict[str, str]] = {}
        first_error: BaseException | None = None
        for dataset, paths in files.items():
            for path, treename in paths.items():
                if (dataset, path) in covered:
                    continue
                n_entries, error = self._probe(path, treename)
                if error is not None and not _is_allowed(self.runner, error):
                    raise error  # outside skipbadfiles: a bug, not a bad file
                if n_entries == 0:
                    continue  # an empty file is complete
                if n_entries is not None and self.runner.maxchunks is not None:
                    continue  # left out by maxchunks, on purpose
                if error is not None:
                    text = _error_text(error)
                    first_error = first_error or error
                elif n_entries is None:
                    text = "not processed by coffea (dropped in preprocessing)"
                else:
                    text = (
                        f"coffea dropped it without an error, but it opens now with "
                        f"{n_entries} entries (a transient failure?): rerun to retry"
                    )
                bad.setdefault(dataset, {})[path] = text
        if bad:
            n_bad = sum(len(v) for v in bad.values())
            names = "; ".join(f"{p}: {t}" for v in bad.values() for p, t in v.items())
            missing = ChunkFailure(f"{n_bad} file(s) missing from the output: {names}")
            missing.__cause__ = first_error or failure
            return _Outcome(False, exception=missing, bad_files=bad)
        return _Outcome(True, output=output, events=events)

    def lookup(self, chunk: dict[str, Any], chunk_hash: str) -> tuple[ChunkRecord | None, Any]:
        """A ``cached`` record and the output if the cache has a verified entry."""
        if self.cache is None:
            return None, None
        start = time.perf_counter()
        entry = self.cache.load(chunk_hash)
        if not entry.hit:
            return None, None
        if "events" not in entry.info:
            self.foreign_entries += 1
        record = ChunkRecord(chunk_hash, chunk, "cached", events=dict(entry.info.get("events", {})))
        record.seconds = time.perf_counter() - start
        return record, entry.output

    def run_unit(
        self, chunk: dict[str, Any], chunk_hash: str, *, lookup: bool = True
    ) -> tuple[ChunkRecord, Any]:
        """Cache lookup, else compute and cache: one chunk, no salvage."""
        if lookup:
            cached, output = self.lookup(chunk, chunk_hash)
            if cached is not None:
                return cached, output
        start = time.perf_counter()
        outcome = self.compute(chunk)
        if outcome.ok:
            self.writer.save(chunk_hash, outcome.output, {"events": outcome.events})
            record = ChunkRecord(chunk_hash, chunk, "processed", events=outcome.events)
            record.seconds = time.perf_counter() - start
            return record, outcome.output
        assert outcome.exception is not None
        bad = outcome.bad_files
        if not bad:  # the whole unit failed: every file of it is missing
            text = _error_text(outcome.exception)
            bad = {d: dict.fromkeys(paths, text) for d, paths in _files_of(chunk).items()}
        record = ChunkRecord(chunk_hash, chunk, "failed", outcome.exception, bad_files=bad)
        record.seconds = time.perf_counter() - start
        return record, None

    def salvage_parts(
        self,
        chunk: dict[str, Any],
        chunk_hash: str,
        error: BaseException,
        record: SalvageRecord | None = None,
    ) -> tuple[ChunkRecord, Any]:
        """Re-run a failed chunk file by file; each file is its own hashed, cached chunk."""
        start = time.perf_counter()
        part_chunks = _core.split_fileset(chunk, strategy="by_dataset", files_per_chunk=1)
        by_hash = dict(zip(_core.hash_filesets(part_chunks), part_chunks, strict=True))
        if record is None or any(p["hash"] not in by_hash for p in record.parts):
            parts = []
            for part_hash, part in by_hash.items():
                ((dataset, paths),) = _files_of(part).items()
                (path,) = paths
                parts.append({"dataset": dataset, "path": path, "hash": part_hash})
            record = SalvageRecord(chunk_hash, _error_text(error), parts)
            if self.cache is not None:
                # Before running the parts, so that a rerun after a crash goes to the files.
                self.cache.save_salvage(record)
        chunk_record = ChunkRecord(chunk_hash, chunk, "salvaged", error)
        bad_before = record.bad_files
        record.bad_files = {}
        total = None
        for part in record.parts:
            part_record, output = self.run_unit(by_hash[part["hash"]], part["hash"])
            chunk_record.parts.append(part_record)
            _add_counts(chunk_record.events, part_record.events)
            _add_bad(chunk_record.bad_files, part_record.bad_files)
            _add_bad(record.bad_files, part_record.bad_files)
            total = _merge(total, output)
        if self.cache is not None and record.bad_files != bad_before:
            self.cache.save_salvage(record)
        chunk_record.seconds = time.perf_counter() - start
        return chunk_record, total

    def run_chunk(self, chunk: dict[str, Any], chunk_hash: str) -> tuple[ChunkRecord, Any]:
        cached, output = self.lookup(chunk, chunk_hash)
        if cached is not None:
            return cached, output
        if self.salvage and self.cache is not None:
            previous = self.cache.load_salvage(chunk_hash)
            if previous is not None:  # failed in an earlier run: go straight to its files
                error = ChunkFailure(f"failed in an earlier run: {previous.error}")
                return self.salvage_parts(chunk, chunk_hash, error, previous)
        record, output = self.run_unit(chunk, chunk_hash, lookup=False)
        if record.status != "failed" or not self.salvage or _n_files(chunk) < 2:
            return record, output
        assert record.exception is not None
        salvaged, output = self.salvage_parts(chunk, chunk_hash, record.exception)
        salvaged.seconds += record.seconds
        return salvaged, output


def _prepare_runner(runner: Any, notes: list[str]) -> Any:
    """A copy of ``runner`` that returns Ok/Err, skips bad files and shows no per-chunk bars."""
    if runner is None:
        return default_runner()
    if getattr(runner, "use_dataframes", False):
        raise ValueError(
            "chunkwise.run needs accumulator outputs, but this Runner's DaskExecutor has "
            "use_dataframes=True: use use_dataframes=False"
        )
    changes: dict[str, Any] = {}
    if not runner.use_result_type:
        changes["use_result_type"] = True
    if not runner.skipbadfiles:
        changes["skipbadfiles"] = True
    if changes:
        settings = ", ".join(f"{k}={v!r}" for k, v in changes.items())
        notes.append(f"ran a copy of the Runner with {settings}; the Runner passed in is unchanged")
    # chunkwise shows one bar over the chunks; the executors' own bars would repeat per chunk.
    executor = runner.executor.copy(status=False)
    if runner.pre_executor is runner.executor:
        pre_executor = executor
    else:
        pre_executor = runner.pre_executor.copy(status=False)
    return dataclasses.replace(runner, executor=executor, pre_executor=pre_executor, **changes)


def run(
    fileset: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    processor_instance: Any,
    runner: Any = None,
    *,
    strategy: str | None = None,
    datasets: Iterable[str] | Callable[..., Any] | tuple[Any, ...] | None = None,
    percentage: int | None = None,
    files_per_chunk: int | None = None,
    treename: str | None = None,
    cache: str | Path | None = None,
    cache_tag: str | None = None,
    salvage: bool = True,
    progress: bool = True,
) -> RunReport:
    """Run a coffea processor over a fileset chunk by chunk, caching and salvaging.

    Each chunk is run with the Runner; its output is saved under ``hash_fileset(chunk)`` in the
    cache and merged with ``coffea.processor.accumulate``. A chunk that fails (an error inside
    the Runner's ``skipbadfiles`` set, ``"No chunks survived preprocessing"``, or an ``Ok``
    that silently left files out) is re-run file by file when ``salvage`` is on. A rerun with
    the same cache loads what succeeded and retries only what failed.

    Parameters
    ----------
    fileset : dict or list of dict
        A coffea fileset, split here with ``chunkwise.split_fileset``, or a list of chunks that
        is already split (then ``strategy``, ``datasets``, ``percentage``, ``files_per_chunk``
        and ``treename`` must be left unset). Chunks must be self-contained (carry their
        treename), as ``hash_fileset`` requires.
    processor_instance : coffea.processor.ProcessorABC
        The processor. It must be picklable for executors that run it elsewhere.
    runner : coffea.processor.Runner, optional
        Any Runner. If ``use_result_type`` or ``skipbadfiles`` is off, a copy with
        ``use_result_type=True`` and ``skipbadfiles=True`` is used (the report's ``notes`` say
        so); the Runner passed in is never changed. Its executors' progress bars are turned off
        in the copy. ``None`` means ``default_runner()``: IterativeExecutor and NanoAODSchema.
    strategy, datasets, percentage, files_per_chunk, treename
        Passed to ``chunkwise.split_fileset`` when ``fileset`` is a dict.
    cache : str or os.PathLike, optional
        Cache directory (created user-only). ``None``: no cache, nothing is written.
    cache_tag : str, optional
        Sub-directory of ``cache``. ``None`` derives it from the processor's class source and
        the Runner settings that change the output (``chunkwise.cache.cache_tag``); ``""``
        uses ``cache`` itself, the flat layout of coffea's split_fileset notebook.
    salvage : bool, optional
        Re-run a failed chunk file by file (default True).
    progress : bool, optional
        Show one progress bar over the chunks (default True).

    Returns
    -------
    RunReport
        The merged output, a record per chunk, the bad files with their errors, and the
        completeness and events per dataset. ``print(report.summary())`` shows a table.

    Raises
    ------
    Exception
        Any exception outside the Runner's ``skipbadfiles`` set (a bug in the processor, say),
        after every chunk finished so far has been saved: fix it and rerun to resume.

    Examples
    --------
    >>> import chunkwise
    >>> from chunkwise.examples import METProcessor, make_demo_fileset
    >>> fileset = make_demo_fileset("demo_files")  # doctest: +SKIP
    >>> report = chunkwise.run(fileset, METProcessor(), files_per_chunk=2,
    ...                        cache="chunk_cache")  # doctest: +SKIP
    >>> report.completeness  # doctest: +SKIP
    {'DYJets': 0.8333333333333334, 'TTbar': 0.8}
    >>> hist = report.output["MET"]  # doctest: +SKIP
    """
    split_args = {
        "strategy": strategy,
        "datasets": datasets,
        "percentage": percentage,
        "files_per_chunk": files_per_chunk,
        "treename": treename,
    }
    if isinstance(fileset, Mapping):
        chunks = _core.split_fileset(
            dict(fileset),
            strategy,
            datasets,
            percentage,
            treename,
            files_per_chunk=files_per_chunk,
        )
    elif isinstance(fileset, Sequence) and not isinstance(fileset, (str, bytes)):
        given = [name for name, value in split_args.items() if value is not None]
        if given:
            raise ValueError(
                f"fileset is already a list of chunks, so {', '.join(given)} cannot apply: "
                "pass the unsplit fileset dict, or split it yourself and leave them unset"
            )
        chunks = [dict(c) for c in fileset]
    else:
        raise TypeError(
            f"fileset must be a fileset dict or a list of chunks, got {type(fileset).__name__}"
        )

    report = RunReport()
    runner = _prepare_runner(runner, report.notes)
    chunk_cache: ChunkCache | None = None
    if cache is not None:
        tag = _derive_cache_tag(processor_instance, runner) if cache_tag is None else cache_tag
        chunk_cache = ChunkCache(cache, tag)
        report.cache = chunk_cache

    hashes = _core.hash_filesets(chunks)
    for chunk in chunks:
        for dataset, paths in _files_of(chunk).items():
            report.files_total[dataset] = report.files_total.get(dataset, 0) + len(paths)

    loop = _Loop(runner, processor_instance, chunk_cache, salvage)
    total = None
    try:
        try:
            with mute_coffea_bars(), _Progress(len(chunks), progress) as bar:
                for chunk, chunk_hash in zip(chunks, hashes, strict=True):
                    record, output = loop.run_chunk(chunk, chunk_hash)
                    report.chunks.append(record)
                    total = _merge(total, output)
                    bar.advance(record)
        finally:
            loop.writer.close()  # everything finished is on disk before returning or raising
    except Exception as exc:
        if chunk_cache is not None and hasattr(exc, "add_note"):
            exc.add_note(
                f"chunkwise: {len(report.chunks)} of {len(chunks)} chunks finished and are saved "
                f"in {chunk_cache.directory}; fix the error and rerun to resume"
            )
        raise

    report.output = total
    for record in report.chunks:
        for unit in record.parts or [record]:
            if unit.status == "processed":
                report.n_processed += 1
            elif unit.status == "cached":
                report.n_cached += 1
            elif unit.status == "failed":
                report.n_failed += 1
        _add_counts(report.events, record.events)
        if record.parts or record.status == "failed":
            _add_bad(report.bad_files, record.bad_files)
    for dataset, n_files in report.files_total.items():
        report.events.setdefault(dataset, 0)
        n_bad = len(report.bad_files.get(dataset, {}))
        report.completeness[dataset] = (n_files - n_bad) / n_files if n_files else 1.0
    if loop.foreign_entries:
        report.notes.append(
            f"{loop.foreign_entries} cache entries were not written by chunkwise (plain "
            "coffea.util.save?): their events are not counted"
        )
    return report
