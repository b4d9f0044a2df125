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
    GEN_WEIGHTS,
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
from chunkwise.cache import ChunkCache, CorruptCacheEntryWarning, SalvageRecord
from chunkwise.chunks import Chunk, make_chunks
from chunkwise.errors import ChunkFailure
from chunkwise.extras import check_paths
from chunkwise.table import format_table
from chunkwise.tag import _version, open_cache

__all__ = ["ChunkFailure", "ChunkRecord", "RunReport", "default_runner", "run"]

ChunkStatus = Literal["processed", "cached", "failed", "salvaged"]

_log = logging.getLogger("chunkwise")


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
    sums : dict
        ``{dataset: {name: [total, files]}}``: the per-file quantities (``sumw``, ``sumw2``,
        ``gen_events`` and the ``file_sums`` hook's) summed over this chunk's files in the
        output, with how many of those files had each.
    """

    hash: str
    fileset: dict[str, Any]
    status: ChunkStatus
    exception: BaseException | None = None
    seconds: float = 0.0
    events: dict[str, int] = field(default_factory=dict)
    bad_files: dict[str, dict[str, str]] = field(default_factory=dict)
    parts: list[ChunkRecord] = field(default_factory=list)
    sums: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    @property
    def n_files(self) -> int:
        """How many files the chunk has."""
        return sum(len(data["files"]) for data in self.fileset.values())


#: The version of ``RunReport.to_dict``'s layout; it changes only when a key changes meaning or
#: goes away (new keys may be added within a version).
REPORT_SCHEMA = "chunkwise-report/1"


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
    sumw, sumw2 : dict
        ``{dataset: sum of generator weights (of their squares)}`` over exactly the files in
        ``output``, from each file's NanoAOD ``Runs`` tree (``genEventSumw``/``genEventSumw2``,
        or the older ``genEventSumw_`` names), all generated events before any selection:
        the denominator of an MC normalization ``xsec * lumi / sumw``. ``None`` for a dataset
        when a file in the output has no such tree (data) or no file is in the output.
    gen_events : dict
        ``{dataset: generated events}`` (``genEventCount``), the same way.
    sums : dict
        ``{dataset: {name: total or None}}``: every per-file quantity, summed the same way:
        ``sumw``, ``sumw2``, ``gen_events`` and what the ``file_sums`` hook returned. A total
        is ``None`` when a file in the output lacks it.
    files_total : dict
        ``{dataset: number of files}`` over all chunks.
    chunk_counts : dict
        Chunks by what became of them: ``processed``, ``cached``, ``salvaged`` (a bad file, the
        good ones kept) and ``failed`` (nothing of it in the output).
    file_counts : dict
        Files by what became of them: ``processed`` (computed in this call), ``cached`` and
        ``bad`` (not in the output).
    n_processed, n_cached, n_failed : int
        Cache entries (a whole chunk, or one file of a salvaged chunk) computed successfully in
        this call, loaded from the cache, and failed. ``chunk_counts`` and ``file_counts``
        count in one unit each.
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
    sumw: dict[str, float | None] = field(default_factory=dict)
    sumw2: dict[str, float | None] = field(default_factory=dict)
    gen_events: dict[str, int | None] = field(default_factory=dict)
    sums: dict[str, dict[str, float | None]] = field(default_factory=dict)
    n_processed: int = 0
    n_cached: int = 0
    n_failed: int = 0
    files_total: dict[str, int] = field(default_factory=dict)
    chunk_counts: dict[str, int] = field(default_factory=dict)
    file_counts: dict[str, int] = field(default_factory=dict)
    cache: ChunkCache | None = None
    notes: list[str] = field(default_factory=list)
    cache_problem: str | None = None
    retries: dict[str, dict[str, int]] = field(default_factory=dict)
    replicas: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True only when every file of every dataset is in ``output``."""
        return self.n_failed == 0 and all(f == 1.0 for f in self.completeness.values())

    def reaches(self, min_completeness: float) -> bool:
        """Whether every dataset has at least this fraction of its files in ``output``.

        Parameters
        ----------
        min_completeness : float
            A fraction between 0 and 1; ``1.0`` is the same as ``complete``.
        """
        if min_completeness >= 1.0:
            return self.complete
        return all(f >= min_completeness for f in self.completeness.values())

    def summary(self) -> str:
        """A per-dataset table: files ok, bad and total, events, the fraction of files in and,
        when some dataset has them, the sum of generator weights.

        Returns
        -------
        str
            The table, followed by chunk and file counts, the bad files and any notes.
        """
        header: tuple[str, ...] = ("dataset", "files ok", "bad", "total", "events", "fraction")
        with_sumw = any(v is not None for v in self.sumw.values())
        if with_sumw:
            header += ("sumw",)
        rows = []
        for dataset in sorted(self.files_total):
            total = self.files_total[dataset]
            bad = len(self.bad_files.get(dataset, {}))
            row = (
                dataset,
                str(total - bad),
                str(bad),
                str(total),
                f"{self.events.get(dataset, 0):,}",
                f"{self.completeness.get(dataset, 0.0):.1%}",
            )
            if with_sumw:
                sumw = self.sumw.get(dataset)
                row += ("-" if sumw is None else f"{sumw:.6g}",)
            rows.append(row)
        lines = [format_table(header, rows), ""]
        c, f = self.chunk_counts, self.file_counts
        lines.append(
            f"chunks: {len(self.chunks)} ({c.get('processed', 0)} processed, "
            f"{c.get('cached', 0)} cached, {c.get('salvaged', 0)} salvaged, "
            f"{c.get('failed', 0)} failed)"
        )
        lines.append(
            f"files: {sum(self.files_total.values())} ({f.get('processed', 0)} processed, "
            f"{f.get('cached', 0)} cached, {f.get('bad', 0)} bad); "
            + ("complete" if self.complete else "INCOMPLETE: see bad_files")
        )
        for dataset in sorted(self.bad_files):
            for path, error in sorted(self.bad_files[dataset].items()):
                lines.append(f"  bad: {dataset}: {path}: {error}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the output, as plain JSON-ready data (``chunkwise run --report``).

        Returns
        -------
        dict
            ``schema`` (``"chunkwise-report/1"``), ``complete``, ``datasets`` (per dataset:
            ``files_total``, ``files_ok``, ``files_bad``, ``events``, ``completeness``,
            ``sumw``, ``sumw2``, ``gen_events``, ``sums`` and ``bad_files`` as
            ``{path: error}``), ``counts`` (``chunks`` and ``files`` by status), ``chunks``
            (each one's ``hash``, ``status``, ``files``, ``events``, ``error`` and, for a
            salvaged chunk, its ``parts``), ``cache`` (``directory`` and ``tag``, or None),
            ``cache_problem``, ``retries``, ``replicas``, ``notes`` and ``versions``.

        Examples
        --------
        >>> import json
        >>> json.dumps(report.to_dict(), indent=1)  # doctest: +SKIP
        """
        datasets = {}
        for dataset in sorted(self.files_total):
            total = self.files_total[dataset]
            bad = self.bad_files.get(dataset, {})
            datasets[dataset] = {
                "files_total": total,
                "files_ok": total - len(bad),
                "files_bad": len(bad),
                "events": self.events.get(dataset, 0),
                "completeness": self.completeness.get(dataset, 0.0),
                "sumw": self.sumw.get(dataset),
                "sumw2": self.sumw2.get(dataset),
                "gen_events": self.gen_events.get(dataset),
                "sums": dict(self.sums.get(dataset, {})),
                "bad_files": dict(sorted(bad.items())),
            }

        def chunk(record: ChunkRecord) -> dict[str, Any]:
            out: dict[str, Any] = {
                "hash": record.hash,
                "status": record.status,
                "files": {d: len(data["files"]) for d, data in record.fileset.items()},
                "events": dict(record.events),
                "seconds": round(record.seconds, 3),
                "error": None if record.exception is None else _error_text(record.exception),
            }
            if record.parts:
                out["parts"] = [
                    {
                        "hash": part.hash,
                        "dataset": dataset,
                        "path": path,
                        "status": part.status,
                        "error": part.bad_files.get(dataset, {}).get(path),
                    }
                    for part in record.parts
                    for dataset, data in part.fileset.items()
                    for path in data["files"]
                ]
            return out

        return {
            "schema": REPORT_SCHEMA,
            "complete": self.complete,
            "datasets": datasets,
            "counts": {
                "chunks": {"total": len(self.chunks), **self.chunk_counts},
                "files": {"total": sum(self.files_total.values()), **self.file_counts},
            },
            "chunks": [chunk(record) for record in self.chunks],
            "cache": None
            if self.cache is None
            else {"directory": str(self.cache.directory), "tag": self.cache.tag},
            "cache_problem": self.cache_problem,
            "retries": self.retries,
            "replicas": self.replicas,
            "notes": list(self.notes),
            "versions": {name: _version(name) for name in ("chunkwise", "coffea")},
        }

    def __str__(self) -> str:
        return self.summary()


def _add_counts(into: dict[str, int], counts: Mapping[str, int]) -> None:
    for key, value in counts.items():
        into[key] = into.get(key, 0) + int(value)


def _add_bad(into: dict[str, dict[str, str]], bad: Mapping[str, Mapping[str, str]]) -> None:
    for dataset, files in bad.items():
        into.setdefault(dataset, {}).update(files)


def _add_file_sums(
    into: dict[str, dict[str, list[float]]], dataset: str, sums: Mapping[str, float]
) -> None:
    """Add one file's quantities: each name's total, and how many files had it."""
    totals = into.setdefault(dataset, {})
    for name, value in sums.items():
        entry = totals.setdefault(name, [0, 0])
        entry[0] += value
        entry[1] += 1


def _add_sums(
    into: dict[str, dict[str, list[float]]], sums: Mapping[str, Mapping[str, Sequence[float]]]
) -> None:
    """Add the ``ChunkRecord.sums`` of a chunk."""
    for dataset, totals in sums.items():
        mine = into.setdefault(dataset, {})
        for name, (value, files) in totals.items():
            entry = mine.setdefault(name, [0, 0])
            entry[0] += value
            entry[1] += files


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

    def put_failure(self, record: SalvageRecord) -> None:
        """Write the record of a chunk lost whole (its bad files), after earlier writes."""
        assert self.cache is not None
        self._submit(False, self.cache.save_failure, record)

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
    """One bar over the files, with an ETA and the chunks done; a no-op when disabled.

    The bar advances as each file returns (the unit of work), so it moves within a chunk; the
    text says how many chunks are finished and how many files were bad.
    """

    def __init__(self, files: int, chunks: int, enabled: bool) -> None:
        self.chunks_total = chunks
        self.chunks_done = 0
        self.bad = 0
        self._progress: Any = None
        if enabled and files:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("chunkwise"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("files · {task.fields[counts]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(stderr=True),  # stdout is for the summary
            )
            self._task = self._progress.add_task("files", total=files, counts=self._text())

    def _text(self) -> str:
        return f"{self.chunks_done}/{self.chunks_total} chunks, {self.bad} bad files"

    def __enter__(self) -> _Progress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def files(self, n: int, bad: int = 0) -> None:
        """``n`` files returned (``bad`` of them bad)."""
        self.bad += bad
        if self._progress is not None:
            self._progress.update(self._task, advance=n, counts=self._text())

    def chunk(self, record: ChunkRecord, files: int) -> None:
        """A chunk is finished; ``files`` of its files had not been counted yet (cached)."""
        self.chunks_done += 1
        self.files(files)


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
        file_sums: Callable[[Any], Mapping[str, float] | None] | None = None,
        weights: bool = True,
    ) -> None:
        self.plan = plan
        self.policy = policy
        self.retries: dict[str, dict[str, int]] = {}
        self.replicas: dict[str, dict[str, str]] = {}
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
        self._entries: frozenset[str] | None = None
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
            self._add(index, record, output, uncounted=chunk.n_files)
            return None
        resumed = self._salvage_record(chunk)
        state = _Open(index, chunk, start, resumed)
        todo = []
        # Files cached one by one (by a salvage, or a run of the remaining files with one file
        # per chunk) are loaded, and only the others run. Outside a salvage being resumed, only
        # the entries the cache's directory listed are looked up: one listing, not one failed
        # open (or, on root://, one round trip) per file of every new chunk.
        listed = self._listed() if resumed is None and chunk.n_files > 1 else frozenset()
        for part in chunk.parts:
            look = resumed is not None or part.hash in listed
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
            _add_file_sums(sums, dataset, outcome.sums)
            output = merge(output, load_output(outcome.payload))
        if chunk.parts == [chunk]:  # one file: write its pickle as it came, no second pickling
            self._save(chunk.hash, state.outcomes[chunk.hash].payload, output, events, sums)
        else:
            self._save(chunk.hash, None, output, events, sums)
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
        salvage = SalvageRecord(chunk.hash, "" if error is None else _error_text(error), [])
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
                    _add_file_sums(sums, dataset, outcome.sums)
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
            _add_counts(record.events, part_record.events)
            _add_sums(record.sums, part_record.sums)
            _add_bad(record.bad_files, part_record.bad_files)
            total = merge(total, output)
        salvage.bad_files = record.bad_files
        if not record.bad_files:
            # Every file is in now: the chunk gets its whole entry, and later runs and
            # status see it as cached.
            self._save(chunk.hash, None, total, record.events, record.sums)
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
    ) -> None:
        """Queue a cache entry: from the unit's payload if given, else by pickling ``output``."""
        if self.cache is None:
            return
        info = {"events": events, "sums": sums}
        if payload is not None:
            data = self.cache.encode_pickled(chunk_hash, pickled_output(payload), info)
        else:  # pickled here, before the output is merged into (and changed with) the total
            data = self.cache.encode(chunk_hash, output, info)
        self.writer.put(chunk_hash, data)

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
        _add_sums(record.sums, entry.info.get("sums", {}))
        return record, entry.output

    def _listed(self) -> frozenset[str]:
        """The hashes with an entry in the cache when first asked (read once per run)."""
        if self._entries is None:
            try:
                self._entries = frozenset(self.cache.hashes()) if self.cache else frozenset()
            except OSError:  # unlistable: then per-file entries are not looked for
                self._entries = frozenset()
        return self._entries

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


def _count(report: RunReport) -> dict[str, tuple[str, int, int]]:
    """Fill in a report's counts, bad files, completeness and sums from its chunk records.

    Returns ``{dataset: (name, files with it, files in the output)}`` for the datasets whose
    ``sumw`` (or, failing that, another total) only some of the files in the output have.
    """
    partial: dict[str, tuple[str, int, int]] = {}
    report.chunk_counts = dict.fromkeys(("processed", "cached", "salvaged", "failed"), 0)
    report.file_counts = dict.fromkeys(("processed", "cached", "bad"), 0)
    sums: dict[str, dict[str, list[float]]] = {}
    for record in report.chunks:
        report.chunk_counts[record.status] += 1
        for unit in record.parts or [record]:
            file_status = "bad" if unit.status == "failed" else unit.status
            report.file_counts[file_status] += unit.n_files
            if unit.status == "processed":
                report.n_processed += 1
            elif unit.status == "cached":
                report.n_cached += 1
            elif unit.status == "failed":
                report.n_failed += 1
        _add_counts(report.events, record.events)
        _add_sums(sums, record.sums)
        if record.parts or record.status == "failed":
            _add_bad(report.bad_files, record.bad_files)
    for dataset, n_files in report.files_total.items():
        report.events.setdefault(dataset, 0)
        n_ok = n_files - len(report.bad_files.get(dataset, {}))
        report.completeness[dataset] = n_ok / n_files if n_files else 1.0
        # A total counts only if every file in the output gave it: a sum over some of the
        # files would normalize wrongly, silently.
        report.sums[dataset] = {
            name: (int(total) if name == "gen_events" else total)
            if files == n_ok and n_ok > 0
            else None
            for name, (total, files) in sorted(sums.get(dataset, {}).items())
        }
        for name, (_, files) in sorted(sums.get(dataset, {}).items(), key=lambda i: i[0] != "sumw"):
            if 0 < files < n_ok:
                partial[dataset] = (name, int(files), n_ok)
                break
        report.sumw[dataset] = report.sums[dataset].get("sumw")
        report.sumw2[dataset] = report.sums[dataset].get("sumw2")
        gen = report.sums[dataset].get("gen_events")
        report.gen_events[dataset] = None if gen is None else int(gen)
    return partial


def _check_extras(chunks: Sequence[Chunk], policy: RetryPolicy) -> None:
    """Before anything runs: a root:// path (or replica) needs ``chunkwise[xrootd]``."""
    check_paths(p for chunk in chunks for files in chunk.files.values() for p in files)
    check_paths(a for _, alts in policy.replicas for a in alts)


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
    events_per_chunk: int | None = None,
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
    file_sums: Callable[[Any], Mapping[str, float] | None] | None = None,
    weights: bool = True,
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
    strategy, datasets, percentage, files_per_chunk, treename, events_per_chunk
        Passed to ``chunkwise.split_fileset`` when ``fileset`` is a dict
        (``events_per_chunk`` packs the files of a preprocessed fileset by ``num_entries``).
    cache : str or os.PathLike, optional
        Cache directory (created user-only), or a directory on an XRootD server given as
        ``"root://host//absolute/dir"`` (for sites without a shared file system; it needs
        ``cache_key``, see ``chunkwise.cache``). ``None``: no cache, nothing is written.
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
        cache's directories must be yours and writable by no one else; a root:// cache always
        needs one.
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
    file_sums : callable, optional
        Per-file quantities to sum like the generator weights: called on the worker, once
        per file that succeeds, with the file opened by uproot (a ``ReadOnlyDirectory``), it
        returns ``{name: number}`` (or None). ``report.sums[dataset][name]`` is the total over
        exactly the files in the output, and the values are cached with each entry. An error
        it raises counts as the file's (a bad file if in ``skipbadfiles``, else a bug). For
        example ``lambda f: {"lumi_blocks": f["LuminosityBlocks"].num_entries}``. ROOT files
        only. The generator weights (``report.sumw``) are read whether or not it is given.
    weights : bool, optional
        Read each file's generator weights from its ``Runs`` tree (default True). uproot takes
        about 4 ms a file to read a ``Runs`` tree, nothing next to processing a NanoAOD file
        but noticeable on many tiny files; ``False`` skips it (for data, say) and leaves
        ``report.sumw`` at ``None``.
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
    if file_sums is not None and not callable(file_sums):
        raise TypeError(
            f"file_sums must be a function of an uproot file, got {type(file_sums).__name__}"
        )
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
        events_per_chunk=events_per_chunk,
    )
    _check_extras(chunks, policy)
    execution = plan(runner)
    report = RunReport(notes=list(execution.notes))
    chunk_cache: ChunkCache | None = None
    if cache is not None:
        chunk_cache = open_cache(
            cache,
            cache_tag,
            cache_key,
            force_tag,
            processor_instance,
            execution.runner,
            file_sums,
            weights,
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

    with _Progress(sum(report.files_total.values()), len(chunks), progress) as bar:
        engine = _Engine(
            execution,
            processor_instance,
            chunk_cache,
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
    partial = _count(report)
    if execution.maxchunks is not None and any(v is not None for v in report.sumw.values()):
        for dataset in report.sums:
            for name in GEN_WEIGHTS:
                if name in report.sums[dataset]:
                    report.sums[dataset][name] = None
            report.sumw[dataset] = report.sumw2[dataset] = report.gen_events[dataset] = None
        report.notes.append(
            "sumw, sumw2 and gen_events are None: with maxchunks only part of each file is "
            "processed, while a Runs tree sums the whole file"
        )
    for dataset, (name, with_it, n_ok) in sorted(partial.items()):
        report.notes.append(
            f"{dataset}: {with_it} of its {n_ok} files in the output have {name}, so its {name} "
            "is None (files without a Runs tree mixed with files with one, or cache entries "
            "written with weights=False: rerun them with a new cache tag)"
        )
    if engine.unsummed_entries:
        report.notes.append(
            f"{engine.unsummed_entries} cache entries were written by an older chunkwise that "
            "did not read sums of weights: sumw is None for their datasets; rerun with a new "
            "cache tag to have them"
        )
    if engine.foreign_entries:
        report.notes.append(
            f"{engine.foreign_entries} cache entries were not written by chunkwise (plain "
            "coffea.util.save?): their events are not counted"
        )
    return report
