"""The engine of ``chunkwise.run``: every file of every open chunk is a task on one backend, and
each chunk is finished (cached, merged, recorded) the moment its last file returns.

``run_chunks`` is the whole of it: it opens chunks until every worker is busy, looks each one
up in the cache first (a whole entry, a salvage record, or single-file entries from the run's
one listing), submits the files that are left, and saves every finished chunk on one
background writer thread, so that what finished is on disk when it returns or raises.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chunkwise._coffea import Plan, merge, process_unit
from chunkwise.cache import (
    ENTRY_SUFFIX,
    SALVAGE_SUFFIX,
    CacheError,
    ChunkCache,
    CorruptCacheEntryWarning,
    SalvageRecord,
)
from chunkwise.cache.index import IndexedRecord, file_keys
from chunkwise.chunks import Chunk
from chunkwise.errors import ChunkFailure, add_note
from chunkwise.outcomes import Outcome, error_text
from chunkwise.progress import Progress
from chunkwise.quiet import WarningTally, reissue
from chunkwise.report import ChunkRecord, RunReport, add_bad, add_counts, add_file_sums, add_sums
from chunkwise.retry import RetryPolicy
from chunkwise.shipping import LocalProcessor, dumps_processor, load_output, pickled_output
from chunkwise.sums import WEIGHT_GAPS

__all__ = ["run_chunks"]

_log = logging.getLogger("chunkwise")


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
        # For the tag's index: the keys of the files of each entry of several files put, and
        # the bad files of each record put, by file name.
        self.entries: dict[str, str] = {}
        self.records: dict[str, IndexedRecord] = {}

    def put(self, chunk_hash: str, data: bytes, files: str = "") -> None:
        """Write ``ChunkCache.encode``'s bytes as the entry of ``chunk_hash``, which holds the
        files whose keys are ``files`` (see ``chunkwise.cache.index``; "" for one file)."""
        assert self.cache is not None
        if files:
            self.entries[chunk_hash] = files
        self._submit(True, self.cache.write, chunk_hash, data)

    def put_salvage(self, record: SalvageRecord) -> None:
        """Write a salvage record, after the entries put before it (one thread, in order)."""
        assert self.cache is not None
        self._submit(False, self._record, self.cache.save_salvage, record)

    def put_failure(self, record: SalvageRecord) -> None:
        """Write the record of a chunk lost whole (its bad files), after earlier writes."""
        assert self.cache is not None
        self._submit(False, self._record, self.cache.save_failure, record)

    def _record(self, save: Callable[[SalvageRecord], Any], record: SalvageRecord) -> None:
        """Write a record, and note its size and time at once, for the index (a later listing
        that shows other ones means another run wrote it since)."""
        path = save(record)
        assert self.cache is not None
        with contextlib.suppress(OSError):
            stat = self.cache.stat(path)
            self.records[path.name] = IndexedRecord(stat.size, stat.mtime, record.bad_files)

    def update_index(self) -> None:
        """Add what was written to the tag's index, after ``close`` (see
        ``chunkwise.cache.index``); a failure only leaves ``status`` to read it all."""
        if self.cache is None or self.error is not None or not (self.entries or self.records):
            return
        try:
            self.cache.update_index(self.entries, self.records)
        except (OSError, CacheError) as err:
            _log.debug("the cache's index was not updated: %s", err)

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
        bar: Progress,
        policy: RetryPolicy,
        file_sums: Callable[[Any], Mapping[str, float] | None] | None = None,
        weights: bool = True,
    ) -> None:
        self.plan = plan
        self.policy = policy
        self.retries: dict[str, dict[str, int]] = {}
        self.replicas: dict[str, dict[str, str]] = {}
        self.blob: bytes | LocalProcessor
        if plan.kind == "iterative":  # units run here: no pickling of the user's classes
            self.blob = LocalProcessor(processor_instance, file_sums, weights)
        else:
            self.blob = dumps_processor(processor_instance, file_sums, weights)
        self.cache = cache
        self.salvage = salvage
        self.in_flight = in_flight
        self.quiet = quiet
        self.bar = bar
        self.writer = _EntryWriter(cache)
        self.records: dict[int, ChunkRecord] = {}
        self.total: Any = None
        self.foreign_entries = 0
        self.unsummed_entries = 0  # written by a chunkwise that did not read sums of weights
        self._names: frozenset[str] | None = None  # the cache's listing, see _listed
        self._listing_done = False
        self.shown: set[tuple[Any, str]] = set()
        self.tally = WarningTally()  # installed packages' warnings, counted when quiet

    def fill(self, report: RunReport) -> None:
        """Put what the run made into ``report``: the output, the records in the chunks'
        order, retries, replicas and any cache problem (also as a note)."""
        report.output = self.total
        report.chunks = [self.records[i] for i in sorted(self.records)]
        report.retries = self.retries
        report.replicas = self.replicas
        report.cache_problem = self.writer.problem()
        if report.cache_problem is not None:
            report.notes.append(report.cache_problem)
        report.notes += self.tally.notes()

    # -- scheduling ---------------------------------------------------------------------------
    def run(self, chunks: Sequence[Chunk], on_start: Callable[[], None] | None = None) -> None:
        with self.plan.backend() as backend:
            blob = backend.share(self.blob)
            backend.check(blob)
            if on_start is not None:  # the workers can run the processor: work begins
                on_start()
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
        # Only what the cache's one listing holds is read: not one failed open (on root://, one
        # round trip) per chunk, per salvage record, or per file of every new chunk.
        hit = self._lookup(chunk) if self._may_hold(chunk.hash, ENTRY_SUFFIX) else None
        if hit is not None:
            record, output = hit
            record.seconds = time.perf_counter() - start
            self._add(index, record, output, uncounted=chunk.n_files)
            return None
        resumed = None
        if self._may_hold(chunk.hash, SALVAGE_SUFFIX):
            resumed = self._salvage_record(chunk)
        state = _Open(index, chunk, start, resumed)
        todo = []
        # Files cached one by one (by a salvage, or a run of the remaining files with one file
        # per chunk) are loaded, and only the others run. Outside a salvage being resumed, only
        # the entries the listing holds are looked up (none if it could not be listed).
        listed = self._listed() if resumed is None and chunk.n_files > 1 else frozenset()
        for part in chunk.parts:
            look = resumed is not None or f"{part.hash}{ENTRY_SUFFIX}" in (listed or ())
            cached = self._lookup(part) if look else None
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
        self.bar.files(1, bad=outcome.kind != "ok")
        reissue(outcome.warnings, self.shown, self.quiet, self.tally)
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
        where = f"chunkwise: raised while processing {path} of dataset {dataset!r}"
        if exc.__traceback__ is None:  # it crossed a process boundary
            where += f"; where it ran:\n{outcome.traceback.rstrip()}"
        add_note(exc, where)
        with contextlib.suppress(AttributeError, TypeError):
            # What the command line says of it: the file, and the user's part of the traceback.
            exc.chunkwise_bug = True  # type: ignore[attr-defined]
            exc.chunkwise_file = (dataset, path)  # type: ignore[attr-defined]
            exc.chunkwise_traceback = outcome.user_traceback  # type: ignore[attr-defined]
        return exc

    # -- finishing a chunk --------------------------------------------------------------------
    def _finish(self, state: _Open) -> None:
        chunk = state.chunk
        bad = {h: o for h, o in state.outcomes.items() if o.kind != "ok"}
        seconds = time.perf_counter() - state.start
        by_part = state.resumed is not None or bool(state.cached)
        if not by_part and not bad:
            self._finish_whole(state, seconds)
        elif bad and state.resumed is None and (not self.salvage or chunk.n_files < 2):
            self._finish_failed(state, bad, seconds)
        else:
            self._finish_salvaged(state, bad, seconds)

    def _finish_whole(self, state: _Open, seconds: float) -> None:
        chunk = state.chunk
        events = dict.fromkeys(chunk.files, 0)
        sums: dict[str, dict[str, list[float]]] = {}
        output = None
        for part in chunk.parts:
            outcome = state.outcomes[part.hash]
            (dataset,) = part.files
            events[dataset] += outcome.events
            add_file_sums(sums, dataset, outcome.sums)
            output = merge(output, load_output(outcome.payload))
        if chunk.parts == [chunk]:  # one file: write its pickle as it came, no second pickling
            self._save(chunk.hash, state.outcomes[chunk.hash].payload, output, events, sums)
        else:
            self._save(chunk.hash, None, output, events, sums, chunk)
        record = ChunkRecord(chunk.hash, chunk.fileset, "processed", events=events, sums=sums)
        record.seconds = seconds
        self._add(state.index, record, output, uncounted=0)

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
        if self.cache is not None:
            self.writer.put_failure(SalvageRecord(chunk.hash, first.error, [], bad_files))
        record.seconds = seconds
        self._add(state.index, record, None, uncounted=0)

    def _finish_salvaged(self, state: _Open, bad: Mapping[str, Outcome], seconds: float) -> None:
        chunk = state.chunk
        error: BaseException | None = None
        if state.resumed is not None:
            error = ChunkFailure(f"failed in an earlier run: {state.resumed.error}")
        elif bad:
            names = "; ".join(f"{o.error}" for o in bad.values())
            error = ChunkFailure(f"{len(bad)} file(s) failed: {names}")
            error.__cause__ = next(iter(bad.values())).exception
        record = ChunkRecord(chunk.hash, chunk.fileset, "salvaged", error)
        salvage = SalvageRecord(chunk.hash, "" if error is None else error_text(error), [])
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
                    sums: dict[str, dict[str, list[float]]] = {}
                    add_file_sums(sums, dataset, outcome.sums)
                    output = load_output(outcome.payload)
                    self._save(part.hash, outcome.payload, output, events, sums)
                    part_record = ChunkRecord(
                        part.hash, part.fileset, "processed", events=events, sums=sums
                    )
                else:
                    part_bad = {dataset: {path: outcome.error}}
                    part_record = ChunkRecord(
                        part.hash, part.fileset, "failed", outcome.exception, bad_files=part_bad
                    )
                    output = None
                part_record.seconds = outcome.seconds
            record.parts.append(part_record)
            add_counts(record.events, part_record.events)
            add_sums(record.sums, part_record.sums)
            add_bad(record.bad_files, part_record.bad_files)
            total = merge(total, output)
        salvage.bad_files = record.bad_files
        if not record.bad_files:
            # Every file is in now: the chunk gets its whole entry, and later runs and
            # status see it as cached.
            self._save(chunk.hash, None, total, record.events, record.sums, chunk)
            computed = any(part.status == "processed" for part in record.parts)
            record.status = "processed" if computed else "cached"
            record.exception = None
        elif all(part.status == "failed" for part in record.parts):
            record.status = "failed"  # nothing of it is in the output
        if state.resumed is not None:
            salvage.error = state.resumed.error
        if self.cache is not None and (
            (state.resumed is None and record.bad_files)
            or (state.resumed is not None and state.resumed.bad_files != salvage.bad_files)
        ):
            self.writer.put_salvage(salvage)
        record.seconds = seconds
        self._add(state.index, record, total, uncounted=len(state.cached))

    def _save(
        self,
        chunk_hash: str,
        payload: bytes | None,
        output: Any,
        events: dict[str, int],
        sums: dict[str, dict[str, list[float]]],
        chunk: Chunk | None = None,
    ) -> None:
        """Queue a cache entry: from the unit's payload if given, else by pickling ``output``.
        The entry of a ``chunk`` of several files says which (``info["files"]``)."""
        if self.cache is None:
            return
        # Why files gave no generator weights goes apart from the sums (``gaps``), which
        # hold only quantities, as every chunkwise reads them.
        gaps = {d: {n: v for n, v in t.items() if n in WEIGHT_GAPS} for d, t in sums.items()}
        plain = {d: {n: v for n, v in t.items() if n not in WEIGHT_GAPS} for d, t in sums.items()}
        info: dict[str, Any] = {"events": events, "sums": plain}
        if any(gaps.values()):
            info["gaps"] = {d: g for d, g in gaps.items() if g}
        # The keys of its files: a chunk's parts', or (one file) its own; the index holds
        # those of the entries of several files.
        several = chunk is not None and chunk.parts != [chunk]
        info["files"] = (
            file_keys(chunk.part_files) if chunk and several else file_keys([chunk_hash])
        )
        if payload is not None:
            data = self.cache.encode_pickled(chunk_hash, pickled_output(payload), info)
        else:  # pickled here, before the output is merged into (and changed with) the total
            data = self.cache.encode(chunk_hash, output, info)
        self.writer.put(chunk_hash, data, info["files"] if several else "")

    def _add(self, index: int, record: ChunkRecord, output: Any, uncounted: int) -> None:
        self.records[index] = record
        self.total = merge(self.total, output)
        self.bar.chunk(record, uncounted)

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
        elif "sums" not in entry.info:
            self.unsummed_entries += 1
        events = dict(entry.info.get("events", {}))
        record = ChunkRecord(chunk.hash, chunk.fileset, "cached", events=events)
        add_sums(record.sums, entry.info.get("sums", {}))
        add_sums(record.sums, entry.info.get("gaps", {}))
        return record, entry.output

    def _listed(self) -> frozenset[str] | None:
        """The names in the cache's tag directory when first asked (one listing per run), or
        None if it could not be listed."""
        if not self._listing_done:
            self._listing_done = True
            try:
                self._names = frozenset(self.cache.listing().kinds) if self.cache else frozenset()
            except (OSError, CacheError):
                self._names = None
        return self._names

    def _may_hold(self, chunk_hash: str, suffix: str) -> bool:
        """Whether the cache may hold ``<chunk_hash><suffix>``: it was listed, or the directory
        could not be listed (then the file is asked for)."""
        names = self._listed()
        return names is None or f"{chunk_hash}{suffix}" in names

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


def run_chunks(
    chunks: Sequence[Chunk],
    execution: Plan,
    processor_instance: Any,
    cache: ChunkCache | None,
    *,
    salvage: bool,
    in_flight: int | None,
    quiet: bool,
    progress: bool,
    policy: RetryPolicy,
    file_sums: Callable[[Any], Mapping[str, float] | None] | None,
    weights: bool,
    on_start: Callable[[], None] | None = None,
    index: bool = False,
) -> _Engine:
    """Run every chunk; return the engine, whose ``records``, ``total`` and counts the report
    is made of. Everything finished is written to the cache before this returns or raises; an
    exception (a bug in the processor) gets a note saying how much was saved. ``on_start`` is
    called once the workers are known to load the processor, before any chunk is looked up;
    with ``index``, what was written is added to the tag's index at the end."""
    n_files = sum(chunk.n_files for chunk in chunks)
    with Progress(n_files, len(chunks), progress) as bar:
        engine = _Engine(
            execution,
            processor_instance,
            cache,
            salvage,
            in_flight,
            quiet,
            bar,
            policy,
            file_sums,
            weights,
        )
        try:
            try:
                engine.run(chunks, on_start)
            finally:
                engine.writer.close()  # everything finished is on disk before returning or raising
            if index:  # after a run that finished (``status`` reads what a failed one wrote)
                engine.writer.update_index()
        except Exception as exc:
            if cache is not None:
                add_note(
                    exc,
                    f"chunkwise: {len(engine.records)} of {len(chunks)} chunks finished; "
                    f"{engine.writer.saved} cache entries were saved in "
                    f"{cache.directory}; fix the error and rerun to resume",
                )
            raise
    return engine
