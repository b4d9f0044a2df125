"""``chunkwise.run``: process a fileset chunk by chunk with a coffea Runner, losing no work.

Each chunk of ``chunkwise.split_fileset`` is a unit of caching: its output is saved under
``chunkwise.hash_fileset(chunk)`` (see ``chunkwise.cache``) the moment its last file is done. The
unit of work is the file: every file of every open chunk is a task on the Runner's executor (this
process, one process pool, or one dask client for the whole run), so chunks run concurrently and
keep every worker busy, whatever their size. A chunk with a bad file is salvaged from its files'
outputs, each cached under its own single-file hash, so only the files that really fail are lost;
the ``RunReport`` says what fraction of each dataset's files, and how many events, made it into
the merged output.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from chunkwise._coffea import (
    Outcome,
    Plan,
    RetryPolicy,
    add_note,
    default_runner,
    dumps_processor,
    load_output,
    merge,
    pickled_output,
    plan,
    process_unit,
    reissue,
)
from chunkwise._coffea import error_text as _error_text
from chunkwise.cache import CacheError, ChunkCache, CorruptCacheEntryWarning, SalvageRecord
from chunkwise.chunks import Chunk, make_chunks
from chunkwise.table import format_table
from chunkwise.tag import explain, tag_manifest, tag_of

__all__ = ["ChunkFailure", "ChunkRecord", "RunReport", "default_runner", "open_cache", "run"]

ChunkStatus = Literal["processed", "cached", "failed", "salvaged"]

_log = logging.getLogger("chunkwise")


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
        none of its output is in the result; ``salvaged``: the chunk had a bad file, and its
        files were kept one by one, each cached on its own (see ``parts``).
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
        Things worth knowing, e.g. that ``maxchunks`` applies to each file.
    cache_problem : str or None
        Why the cache could not be written during the run (a full disk, say), with how many
        entries were saved; ``None`` when every write succeeded.
    retries : dict
        ``{dataset: {path: retries}}`` for the files tried again in this call.
    replicas : dict
        ``{dataset: {path: replica path}}`` for the files that a replica served.
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
    cache_problem: str | None = None
    retries: dict[str, dict[str, int]] = field(default_factory=dict)
    replicas: dict[str, dict[str, str]] = field(default_factory=dict)

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
        header = ("dataset", "files ok", "bad", "total", "events", "fraction")
        rows = []
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
        lines = [format_table(header, rows)]
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


def _add_counts(into: dict[str, int], counts: Mapping[str, int]) -> None:
    for key, value in counts.items():
        into[key] = into.get(key, 0) + int(value)


def _add_bad(into: dict[str, dict[str, str]], bad: Mapping[str, Mapping[str, str]]) -> None:
    for dataset, files in bad.items():
        into.setdefault(dataset, {}).update(files)


class _EntryWriter:
    """Writes cache entries on one background thread, and keeps count.

    A save is dominated by ``fsync``; on this thread it overlaps the computation. The output is
    pickled on the caller's thread (it is merged in place afterwards), and ``close`` waits for
    every write, so that when ``run`` returns or raises, everything finished is on disk. A
    SIGKILL can lose a write in flight, which only means recomputing that chunk: the rename is
    still atomic.

    A write that fails (a full disk, a read-only or vanished directory) is a cache problem, not
    a processing one: the writer stops writing, remembers the first error and how many entries
    it saved, and the run goes on computing; ``run`` reports it and returns the result.
    """

    def __init__(self, cache: ChunkCache | None) -> None:
        self.cache = cache
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: list[concurrent.futures.Future[Any]] = []
        self.saved = 0  # entries written
        self.unsaved = 0  # entries not written after a failure
        self.error: OSError | None = None

    def put(self, chunk_hash: str, data: bytes) -> None:
        """Write ``ChunkCache.encode``'s bytes as the entry of ``chunk_hash``."""
        assert self.cache is not None
        self._submit(True, self.cache.write, chunk_hash, data)

    def put_salvage(self, record: SalvageRecord) -> None:
        """Write a salvage record, after the entries put before it (one thread, in order)."""
        assert self.cache is not None
        self._submit(False, self.cache.save_salvage, record)

    def _write(self, entry: bool, fn: Callable[..., Any], *args: Any) -> None:
        if self.error is not None:
            self.unsaved += entry
            return
        try:
            fn(*args)
        except OSError as err:
            self.error = err
            self.unsaved += entry
        else:
            self.saved += entry

    def _submit(self, entry: bool, fn: Callable[..., Any], *args: Any) -> None:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="chunkwise-cache"
            )
        self._pending.append(self._pool.submit(self._write, entry, fn, *args))
        self._pending = [f for f in self._pending if not f.done()]

    def close(self) -> None:
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pending = []
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def problem(self) -> str | None:
        """One line on a failed write: what failed and what was saved, or None."""
        if self.error is None or self.cache is None:
            return None
        err = self.error
        what = f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
        return (
            f"the cache could not be written ({what}); {self.saved} of "
            f"{self.saved + self.unsaved} entries were saved in {self.cache.directory}, the "
            "rest will be computed again by the next run; the result is complete all the same"
        )


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


# -- the engine -----------------------------------------------------------------------------------
@dataclass(eq=False)
class _Open:
    """A chunk whose units are out: what came back so far."""

    index: int
    chunk: Chunk
    start: float
    resumed: SalvageRecord | None  # the record of an earlier run's salvage, if resuming it
    waiting: int = 0
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    cached: dict[str, tuple[ChunkRecord, Any]] = field(default_factory=dict)


class _Engine:
    """Runs chunks' units concurrently on one backend, finishing each chunk as its last unit
    returns: cache it, merge it, record it."""

    def __init__(
        self,
        plan: Plan,
        processor_instance: Any,
        cache: ChunkCache | None,
        salvage: bool,
        in_flight: int | None,
        quiet: bool,
        bar: _Progress,
        policy: RetryPolicy,
    ) -> None:
        self.plan = plan
        self.policy = policy
        self.retries: dict[str, dict[str, int]] = {}
        self.replicas: dict[str, dict[str, str]] = {}
        self.blob = dumps_processor(processor_instance)
        self.cache = cache
        self.salvage = salvage
        self.in_flight = in_flight
        self.quiet = quiet
        self.bar = bar
        self.writer = _EntryWriter(cache)
        self.records: dict[int, ChunkRecord] = {}
        self.total: Any = None
        self.foreign_entries = 0
        self.shown: set[tuple[Any, str]] = set()

    # -- scheduling ---------------------------------------------------------------------------
    def run(self, chunks: Sequence[Chunk]) -> None:
        with self.plan.backend() as backend:
            blob = backend.share(self.blob)
            backend.check(blob)
            queue_target = backend.queue_target()
            max_open = self.in_flight or backend.default_in_flight()
            futures: dict[Any, tuple[_Open, Chunk]] = {}
            n_open, next_index = 0, 0
            try:
                while next_index < len(chunks) or futures:
                    # Open chunks until the queue is full, then submit all their files at once
                    # (one message to a dask scheduler, not one per file).
                    batch: list[tuple[_Open, Chunk]] = []
                    while (
                        next_index < len(chunks)
                        and n_open < max_open
                        and len(futures) + len(batch) < queue_target
                    ):
                        opened = self._open(next_index, chunks[next_index])
                        next_index += 1
                        if opened is None:
                            continue  # done from the cache
                        state, todo = opened
                        n_open += 1
                        batch += [(state, part) for part in todo]
                        if backend.runs_at_submit:
                            break  # run it (and cache it) before opening the next
                    if batch:
                        args = [
                            (
                                blob,
                                self.plan.settings,
                                self.policy,
                                part.runner_fileset,
                                *part.only_file,
                            )
                            for _, part in batch
                        ]
                        submitted = backend.submit_many(process_unit, args)
                        futures.update(zip(submitted, batch, strict=True))
                    if not futures:
                        continue
                    bug: BaseException | None = None
                    for future in backend.wait_any(futures):
                        state, part = futures.pop(future)
                        if future.cancelled():
                            continue  # not run: the run stops for a bug
                        raised = self._arrived(state, part, future.result())
                        bug = bug or raised
                        if state.waiting == 0 and raised is None:
                            n_open -= 1
                            self._finish(state)
                    if bug is not None:
                        # Every chunk that finished in this round is saved, then the bug is
                        # raised.
                        raise bug
            except BaseException:
                backend.cancel(futures)
                raise

    def _open(self, index: int, chunk: Chunk) -> tuple[_Open, list[Chunk]] | None:
        start = time.perf_counter()
        hit = self._lookup(chunk)
        if hit is not None:
            record, output = hit
            record.seconds = time.perf_counter() - start
            self._add(index, record, output)
            return None
        resumed = self._salvage_record(chunk)
        state = _Open(index, chunk, start, resumed)
        todo = []
        for part in chunk.parts:
            cached = self._lookup(part) if resumed is not None else None
            if cached is not None:
                state.cached[part.hash] = cached
            else:
                todo.append(part)
        state.waiting = len(todo)
        if not todo:
            self._finish(state)
            return None
        return state, todo

    def _arrived(self, state: _Open, part: Chunk, outcome: Outcome) -> BaseException | None:
        """Record a unit's outcome; return the exception to raise for a bug."""
        state.waiting -= 1
        state.outcomes[part.hash] = outcome
        reissue(outcome.warnings, self.shown, self.quiet)
        ((dataset, paths),) = part.files.items()
        (path,) = paths
        if outcome.retries:
            self.retries.setdefault(dataset, {})[path] = outcome.retries
        if outcome.served is not None:
            self.replicas.setdefault(dataset, {})[path] = outcome.served
        if outcome.kind == "ok":
            return None
        if outcome.kind == "bad":
            if not self.quiet:
                _log.warning(
                    "bad file %s (%s): %s\n%s", path, dataset, outcome.error, outcome.traceback
                )
            return None
        exc = outcome.exception
        assert exc is not None
        if exc.__traceback__ is None:  # it crossed a process boundary
            add_note(
                exc,
                f"chunkwise: raised while processing {path} of dataset {dataset!r}; "
                f"where it ran:\n{outcome.traceback.rstrip()}",
            )
        with contextlib.suppress(AttributeError, TypeError):
            exc.chunkwise_bug = True  # type: ignore[attr-defined]
        return exc

    # -- finishing a chunk --------------------------------------------------------------------
    def _finish(self, state: _Open) -> None:
        chunk = state.chunk
        bad = {h: o for h, o in state.outcomes.items() if o.kind != "ok"}
        seconds = time.perf_counter() - state.start
        if state.resumed is None and not bad:
            self._finish_whole(state, seconds)
        elif state.resumed is None and (not self.salvage or chunk.n_files < 2):
            self._finish_failed(state, bad, seconds)
        else:
            self._finish_salvaged(state, bad, seconds)

    def _finish_whole(self, state: _Open, seconds: float) -> None:
        chunk = state.chunk
        events = dict.fromkeys(chunk.files, 0)
        output = None
        for part in chunk.parts:
            outcome = state.outcomes[part.hash]
            (dataset,) = part.files
            events[dataset] += outcome.events
            output = merge(output, load_output(outcome.payload))
        if chunk.parts == [chunk]:  # one file: write its pickle as it came, no second pickling
            self._save(chunk.hash, state.outcomes[chunk.hash].payload, output, events)
        else:
            self._save(chunk.hash, None, output, events)
        record = ChunkRecord(chunk.hash, chunk.fileset, "processed", events=events)
        record.seconds = seconds
        self._add(state.index, record, output)

    def _finish_failed(self, state: _Open, bad: Mapping[str, Outcome], seconds: float) -> None:
        chunk = state.chunk
        lost = "lost with its chunk: salvage is off"
        bad_files: dict[str, dict[str, str]] = {}
        for part in chunk.parts:
            ((dataset, paths),) = part.files.items()
            (path,) = paths
            outcome = bad.get(part.hash)
            bad_files.setdefault(dataset, {})[path] = outcome.error if outcome else lost
        first = next(iter(bad.values()))
        record = ChunkRecord(
            chunk.hash, chunk.fileset, "failed", first.exception, bad_files=bad_files
        )
        record.seconds = seconds
        self._add(state.index, record, None)

    def _finish_salvaged(self, state: _Open, bad: Mapping[str, Outcome], seconds: float) -> None:
        chunk = state.chunk
        if state.resumed is not None:
            error: BaseException = ChunkFailure(f"failed in an earlier run: {state.resumed.error}")
        else:
            names = "; ".join(f"{o.error}" for o in bad.values())
            error = ChunkFailure(f"{len(bad)} file(s) failed: {names}")
            error.__cause__ = next(iter(bad.values())).exception
        record = ChunkRecord(chunk.hash, chunk.fileset, "salvaged", error)
        salvage = SalvageRecord(chunk.hash, _error_text(error), [])
        total = None
        for part in chunk.parts:
            ((dataset, paths),) = part.files.items()
            (path,) = paths
            salvage.parts.append({"dataset": dataset, "path": path, "hash": part.hash})
            if part.hash in state.cached:
                part_record, output = state.cached[part.hash]
            else:
                outcome = state.outcomes[part.hash]
                if outcome.kind == "ok":
                    events = {dataset: outcome.events}
                    output = load_output(outcome.payload)
                    self._save(part.hash, outcome.payload, output, events)
                    part_record = ChunkRecord(part.hash, part.fileset, "processed", events=events)
                else:
                    part_bad = {dataset: {path: outcome.error}}
                    part_record = ChunkRecord(
                        part.hash, part.fileset, "failed", outcome.exception, bad_files=part_bad
                    )
                    output = None
                part_record.seconds = outcome.seconds
            record.parts.append(part_record)
            _add_counts(record.events, part_record.events)
            _add_bad(record.bad_files, part_record.bad_files)
            total = merge(total, output)
        salvage.bad_files = record.bad_files
        if state.resumed is not None and not record.bad_files:
            # Every file is in now: the chunk gets its whole entry, and later runs and
            # status see it as cached.
            self._save(chunk.hash, None, total, record.events)
        if state.resumed is not None:
            salvage.error = state.resumed.error
        if self.cache is not None and (
            state.resumed is None or state.resumed.bad_files != salvage.bad_files
        ):
            self.writer.put_salvage(salvage)
        record.seconds = seconds
        self._add(state.index, record, total)

    def _save(
        self, chunk_hash: str, payload: bytes | None, output: Any, events: dict[str, int]
    ) -> None:
        """Queue a cache entry: from the unit's payload if given, else by pickling ``output``."""
        if self.cache is None:
            return
        info = {"events": events}
        if payload is not None:
            data = self.cache.encode_pickled(chunk_hash, pickled_output(payload), info)
        else:  # pickled here, before the output is merged into (and changed with) the total
            data = self.cache.encode(chunk_hash, output, info)
        self.writer.put(chunk_hash, data)

    def _add(self, index: int, record: ChunkRecord, output: Any) -> None:
        self.records[index] = record
        self.total = merge(self.total, output)
        self.bar.advance(record)

    # -- the cache ----------------------------------------------------------------------------
    def _lookup(self, chunk: Chunk) -> tuple[ChunkRecord, Any] | None:
        """A ``cached`` record and the output if the cache has a verified entry."""
        if self.cache is None:
            return None
        entry = self.cache.load(chunk.hash)
        if not entry.hit:
            return None
        if "events" not in entry.info:
            self.foreign_entries += 1
        events = dict(entry.info.get("events", {}))
        return ChunkRecord(chunk.hash, chunk.fileset, "cached", events=events), entry.output

    def _salvage_record(self, chunk: Chunk) -> SalvageRecord | None:
        """An earlier run's salvage record for ``chunk``, if it fits the chunk exactly."""
        if not self.salvage or self.cache is None or chunk.n_files < 2:
            return None
        record = self.cache.load_salvage(chunk.hash)
        if record is None:
            return None
        why = record.misfit(chunk.part_files)
        if why is not None:
            warnings.warn(
                f"chunkwise: ignoring the salvage record of chunk {chunk.hash[:12]}: {why}; "
                "the chunk is run again",
                CorruptCacheEntryWarning,
                stacklevel=2,
            )
            return None
        return record


def _retry_policy(
    retries: int, delay: float, replicas: Mapping[str, str | Sequence[str]] | None
) -> RetryPolicy:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"retries must be a whole number of at least 0, got {retries!r}")
    if not isinstance(delay, (int, float)) or delay < 0:
        raise ValueError(f"retry_delay must be a number of seconds >= 0, got {delay!r}")
    table = []
    for prefix, alternatives in (replicas or {}).items():
        alts = (alternatives,) if isinstance(alternatives, str) else tuple(alternatives)
        if (
            not isinstance(prefix, str)
            or not prefix
            or not all(isinstance(a, str) and a for a in alts)
        ):
            raise ValueError(
                "replicas must map path prefixes to alternative prefixes (strings), got "
                f"{prefix!r}: {alternatives!r}"
            )
        table.append((prefix, alts))
    return RetryPolicy(retries, float(delay), tuple(table))


def open_cache(
    root: str | Path,
    tag: str | None,
    key: bytes | None,
    force: bool,
    processor_instance: Any,
    runner: Any,
) -> ChunkCache:
    """The cache of a run, with its tag's manifest written or checked, as ``run`` opens it.

    The flat layout (``tag=""``) has no manifest. ``tag=None`` derives the tag from the
    manifest (``chunkwise.tag.cache_tag``).

    Returns
    -------
    ChunkCache

    Raises
    ------
    CacheError
        An explicit tag that another processor or other settings made, unless ``force``.
    """
    if tag == "":
        return ChunkCache(root, "", key=key)
    manifest = tag_manifest(processor_instance, runner)
    cache = ChunkCache(root, tag_of(manifest) if tag is None else tag, key=key)
    cache.check(create=True)
    existing = cache.read_manifest()
    if existing == manifest:
        return cache
    if tag is not None and not force:
        if existing is not None:
            why = "; ".join(explain(existing, manifest)[:3]) or "its manifest differs"
            made = f"was made by another processor or other settings ({why})"
        elif next(cache.hashes(), None) is not None:
            made = "holds entries of unknown origin (no tag.json)"
        else:
            made = None
        if made is not None:
            raise CacheError(
                f"cache tag {tag!r} {made}: writing into it would mix their outputs; use "
                "another tag, or force_tag=True (--force-tag) if you know they agree"
            )
    try:
        cache.write_manifest(manifest)
    except OSError as err:
        raise CacheError(
            f"cache {str(cache.directory)!r} is not writable ({err.strerror or err}); "
            "choose a directory you can write to"
        ) from None
    return cache


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
    in_flight: int | None = None,
    quiet: bool = True,
    cache_key: bytes | None = None,
    force_tag: bool = False,
    retries: int = 3,
    retry_delay: float = 1.0,
    replicas: Mapping[str, str | Sequence[str]] | None = None,
) -> RunReport:
    """Run a coffea processor over a fileset chunk by chunk, caching and salvaging.

    Every file of a chunk is a task on the Runner's executor, run there by an in-process coffea
    Runner with the same settings; as many chunks are open at once as keep every worker busy.
    The moment a chunk's last file is done, its output is saved under ``hash_fileset(chunk)``
    in the cache and merged with ``coffea.processor.accumulate``. A chunk with a bad file (an
    error inside the Runner's ``skipbadfiles`` set) is salvaged: each of its good files is
    cached as its own single-file chunk and merged, so only the bad files are lost. A rerun
    with the same cache loads what succeeded and retries only what failed.

    Parameters
    ----------
    fileset : dict or list of dict
        A coffea fileset, split here with ``chunkwise.split_fileset``, or a list of chunks that
        is already split (then ``strategy``, ``datasets``, ``percentage``, ``files_per_chunk``
        and ``treename`` must be left unset). Chunks must be self-contained (carry their
        treename), as ``hash_fileset`` requires.
    processor_instance : coffea.processor.ProcessorABC
        The processor. It is pickled with cloudpickle, and its class's module is shipped by
        value when it is your own code (not an installed package), so workers that cannot
        import it still run it. Each file gets a fresh copy of it, as each of coffea's work
        items does; ``postprocess`` is called on each file's output.
    runner : coffea.processor.Runner, optional
        Any Runner with an ``IterativeExecutor`` (files run in this process, one at a time), a
        ``FuturesExecutor`` (one process pool of ``workers`` processes serves the whole run, or
        the ``pool`` instance you gave) or a ``DaskExecutor`` (its client). Its settings
        (schema, chunksize, skipbadfiles, retries, xrootdtimeout, ...) apply to every file. The
        Runner passed in is never changed. ``None`` means ``default_runner()``:
        IterativeExecutor and NanoAODSchema.
    strategy, datasets, percentage, files_per_chunk, treename
        Passed to ``chunkwise.split_fileset`` when ``fileset`` is a dict.
    cache : str or os.PathLike, optional
        Cache directory (created user-only). ``None``: no cache, nothing is written.
    cache_tag : str, optional
        Sub-directory of ``cache``. ``None`` derives it from everything that can change the
        output: the processor's code and state, the Runner settings that matter and the
        versions (``chunkwise.tag.cache_tag``). ``""`` uses ``cache`` itself, the flat layout
        of coffea's split_fileset notebook. Each tag directory keeps a manifest of what went
        into it (``tag.json``); an explicit tag whose manifest differs from this processor's
        is refused (``force_tag``).
    salvage : bool, optional
        Keep the good files of a chunk that has a bad one, each cached on its own (default
        True). With ``False`` such a chunk is lost whole.
    progress : bool, optional
        Show one progress bar over the chunks (default True).
    in_flight : int, optional
        The most chunks open at once. An open chunk holds its finished files' outputs (LZ4-
        compressed) until its last file is done, so this bounds memory. The default, four
        times the number of workers, keeps every worker busy; at most four files per worker
        (plus four) are submitted at a time. With an IterativeExecutor it is 1.
    cache_key : bytes, optional
        The key of a cache shared by a group (read it with ``chunkwise.cache.load_key``):
        entries are authenticated with it before anything is unpickled. Without a key, the
        cache's directories must be yours and writable by no one else.
    force_tag : bool, optional
        Write into an explicit ``cache_tag`` even though its manifest says another processor
        or other settings made it (default False: refused, since their outputs would mix).
    retries : int, optional
        How many times a file whose error is transient (a refused or reset connection, a
        timeout, a server-side error) is tried again, with exponential backoff from
        ``retry_delay`` seconds and jitter (default 3, from 1 s). Permanent errors (no such
        file, permission denied, no such tree, a corrupt file) are not retried. They replace
        the executor's own ``retries``, which would try every error again at once.
    retry_delay : float, optional
        Seconds before the first retry; each next one waits twice as long (default 1.0).
    replicas : dict, optional
        ``{path prefix: alternative prefix or list of them}``: a file whose path starts with a
        prefix is tried at each alternative in turn (each with the retries) before it is
        called bad, e.g. ``{"root://siteA//store/": ["root://siteB//store/"]}``. Cache keys,
        ``bad_files`` and completeness stay on the path written in the fileset;
        ``report.replicas`` says which replica served a file.
    quiet : bool, optional
        ``True`` (default): coffea's progress bars are off in every process, coffea's
        "Performed attempt" retry warnings are dropped (the report has each bad file's final
        error), and each distinct other warning raised while processing is shown once, in
        this process, under your warning filters. ``False``: every warning is shown, and each
        bad file's traceback is logged on the ``"chunkwise"`` logger.

    Returns
    -------
    RunReport
        The merged output, a record per chunk, the bad files with their errors, and the
        completeness and events per dataset. ``print(report.summary())`` shows a table.

    Raises
    ------
    Exception
        Any exception outside the Runner's ``skipbadfiles`` set (a bug in the processor, say),
        with coffea's rule (the exception or its ``__cause__`` chain), from any executor, after
        every chunk finished so far has been saved: fix it and rerun to resume.
    chunkwise._coffea.ProcessorUnavailableError
        Before any work, if the executor's workers cannot load the processor.
    chunkwise.cache.CacheError
        Before any work, if the cache cannot be created or written, or is not trusted (owned
        by another user, or writable by group or others, without a key). A write that fails
        during the run (a full disk) is not raised: ``report.cache_problem`` says what was
        saved, and the result is returned.

    Notes
    -----
    The merged output equals that of one Runner call over the good files, up to the order in
    which floating-point sums were added (chunks merge in the order they finish). Counts match
    exactly.

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
    if in_flight is not None and (not isinstance(in_flight, int) or in_flight < 1):
        raise ValueError(f"in_flight must be a whole number of at least 1, got {in_flight!r}")
    policy = _retry_policy(retries, retry_delay, replicas)
    chunks = make_chunks(
        fileset,
        strategy=strategy,
        datasets=datasets,
        percentage=percentage,
        files_per_chunk=files_per_chunk,
        treename=treename,
    )
    execution = plan(runner)
    report = RunReport(notes=list(execution.notes))
    chunk_cache: ChunkCache | None = None
    if cache is not None:
        chunk_cache = open_cache(
            cache, cache_tag, cache_key, force_tag, processor_instance, execution.runner
        )
        removed = chunk_cache.prepare()  # before any work: CacheError says what is wrong
        if removed:
            report.notes.append(
                f"removed {removed} temporary files that killed runs left in "
                f"{chunk_cache.directory}"
            )
        report.cache = chunk_cache
    for chunk in chunks:
        _add_counts(report.files_total, {d: len(p) for d, p in chunk.files.items()})

    with _Progress(len(chunks), progress) as bar:
        engine = _Engine(
            execution, processor_instance, chunk_cache, salvage, in_flight, quiet, bar, policy
        )
        try:
            try:
                engine.run(chunks)
            finally:
                engine.writer.close()  # everything finished is on disk before returning or raising
        except Exception as exc:
            if chunk_cache is not None:
                add_note(
                    exc,
                    f"chunkwise: {len(engine.records)} of {len(chunks)} chunks finished; "
                    f"{engine.writer.saved} cache entries were saved in "
                    f"{chunk_cache.directory}; fix the error and rerun to resume",
                )
            raise

    report.output = engine.total
    report.retries = engine.retries
    report.replicas = engine.replicas
    report.cache_problem = engine.writer.problem()
    if report.cache_problem is not None:
        report.notes.append(report.cache_problem)
    report.chunks = [engine.records[i] for i in sorted(engine.records)]
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
    if engine.foreign_entries:
        report.notes.append(
            f"{engine.foreign_entries} cache entries were not written by chunkwise (plain "
            "coffea.util.save?): their events are not counted"
        )
    return report
