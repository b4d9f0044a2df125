"""``chunkwise.status``: how much of a fileset is in the cache, without running anything.

``chunkwise status`` prints what :func:`status` returns. The tag directory is listed once. A
file is *done* when the listing holds its chunk's entry or its own (a salvaged chunk, or files
run on their own), and *failed* when a salvage or failure record of the tag, whatever split or
fileset it came from, names it with its error. A chunk (or a dataset's part of it) is done when
all its files are, corrupt when its entry is not a regular file (or, with ``verify``, fails
verification), failed when one of its files failed, and never run otherwise.
"""

from __future__ import annotations

import contextlib
import html
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chunkwise.cache import (
    ENTRY_SUFFIX,
    FAILURE_SUFFIX,
    SALVAGE_SUFFIX,
    CacheError,
    ChunkCache,
    is_remote,
)
from chunkwise.cache.directory import Listing, _is_hash
from chunkwise.cache.index import KEY_CHARS, IndexedRecord, split_keys
from chunkwise.chunks import (
    SPLIT_FIELDS,
    Chunk,
    SplitOptions,
    count_files,
    make_chunks,
    split_options,
)
from chunkwise.display import bad_files_html, bar, page, table
from chunkwise.table import format_table
from chunkwise.tag import cache_tag

__all__ = ["DatasetStatus", "StatusReport", "find_tag", "status", "status_cache"]


@dataclass
class DatasetStatus:
    """Counts for one dataset (or, in ``StatusReport.overall``, for all of them).

    A chunk is *done* (every file is in the cache: its entry, or each file's own), *failed*
    (a file of it failed in the last run that tried it: ``StatusReport.failed`` names them),
    *never run* (nothing of it is known) or *corrupt* (its entry fails verification). A chunk
    with files of several datasets counts once in each of them (for each, by its own files),
    and once overall. ``files_elsewhere`` are files not done whose output is merged into an
    entry of another split: a run with this split computes them again.
    """

    chunks: int = 0
    done: int = 0
    failed: int = 0
    never_run: int = 0
    corrupt: int = 0
    files: int = 0
    files_done: int = 0
    files_failed: int = 0
    files_elsewhere: int = 0

    @property
    def fraction(self) -> float:
        """The fraction of files done (1.0 for no files)."""
        return self.files_done / self.files if self.files else 1.0

    def row(self, name: str) -> tuple[str, ...]:
        """The cells of this dataset's row in :meth:`StatusReport.table`."""
        return (
            name,
            str(self.chunks),
            str(self.done),
            str(self.failed),
            str(self.never_run),
            str(self.corrupt),
            f"{self.files_done}/{self.files} ({self.fraction:.1%})",
            str(self.files_failed),
            str(self.files_elsewhere),
        )


@dataclass
class StatusReport:
    """What :func:`status` found.

    Attributes
    ----------
    cache : ChunkCache
        The cache and tag that were read.
    datasets : dict
        ``{dataset: DatasetStatus}``.
    overall : DatasetStatus
        Every chunk counted once.
    incomplete : list of str
        The hashes of the chunks that are not done, in chunk order.
    failed : dict
        ``{dataset: {path: error}}``: the files that failed in the last run that tried them.
    remaining : dict
        ``{dataset: [path, ...]}``: every file not done (failed, never run, or in a corrupt
        entry), in fileset order; :meth:`remaining_fileset` makes a fileset of them.
    stale_temporaries : int
        Temporary files that killed runs left in the cache (the next ``run`` removes them).
    split : SplitOptions
        The split options the fileset was looked up with (given, or the last run's).
    notes : list of str
        What the numbers alone do not say: options that differ from the last run's.
    other_entries : int
        Entries of the tag that hold neither a chunk of this split nor one file of it: chunks
        of another split or fileset. A run with this split computes their files again
        (``DatasetStatus.files_elsewhere`` counts those of this fileset).
    unknown_entries : int
        Of those, the entries written before entries named their files (their files count as
        never run).
    """

    cache: ChunkCache
    datasets: dict[str, DatasetStatus] = field(default_factory=dict)
    overall: DatasetStatus = field(default_factory=DatasetStatus)
    incomplete: list[str] = field(default_factory=list)
    failed: dict[str, dict[str, str]] = field(default_factory=dict)
    remaining: dict[str, list[str]] = field(default_factory=dict)
    stale_temporaries: int = 0
    split: SplitOptions = field(default_factory=SplitOptions)
    notes: list[str] = field(default_factory=list)
    other_entries: int = 0
    unknown_entries: int = 0

    @property
    def complete(self) -> bool:
        """True when every chunk is done."""
        return not self.incomplete

    def reaches(self, min_completeness: float) -> bool:
        """Whether every dataset has at least this fraction of its files done."""
        if min_completeness >= 1.0:
            return self.complete
        return all(d.fraction >= min_completeness for d in self.datasets.values())

    def remaining_fileset(self, fileset: Mapping[str, Any]) -> dict[str, Any]:
        """The part of ``fileset`` that is not done: a coffea fileset to run next.

        Parameters
        ----------
        fileset : dict
            The fileset that was looked up (not split).

        Returns
        -------
        dict
            The same datasets, each with all its other fields (``metadata``, ...) and only
            the files not done, with their tree names as given; datasets with nothing left
            are left out. ``chunkwise.run`` on it (any split) fills the same cache: a later
            run of the whole fileset loads those files from it.
        """
        if not isinstance(fileset, Mapping):
            raise TypeError(
                "remaining_fileset needs the fileset dict that was looked up, not a list of "
                f"chunks (got {type(fileset).__name__})"
            )
        out: dict[str, Any] = {}
        for dataset, left in self.remaining.items():
            if not left or dataset not in fileset:
                continue
            keep = set(left)
            spec = fileset[dataset]
            if not isinstance(spec, Mapping):  # a bare list of files (with a treename option)
                out[dataset] = [p for p in spec if p in keep]
                continue
            entry = dict(spec)
            files = entry["files"]
            if isinstance(files, Mapping):
                entry["files"] = {p: v for p, v in files.items() if p in keep}
            else:
                entry["files"] = [p for p in files if p in keep]
            out[dataset] = entry
        return out

    def table(self) -> str:
        """The per-dataset table that ``chunkwise status`` prints."""
        header = (
            "dataset",
            "chunks",
            "done",
            "failed",
            "never run",
            "corrupt",
            "files done",
            "files failed",
            "other split",
        )
        rows = [self.datasets[name].row(name) for name in sorted(self.datasets)]
        if len(self.datasets) > 1:
            rows.append(self.overall.row("(all)"))
        return format_table(header, rows)

    def __repr__(self) -> str:
        o = self.overall
        state = "complete" if self.complete else f"{len(self.incomplete)} chunks not complete"
        return (
            f"<StatusReport {state}: {o.files_done}/{o.files} files done, {o.files_failed} "
            f"failed, {len(self.datasets)} datasets, in {self.cache.directory}>"
        )

    def _repr_html_(self) -> str:
        """The status in Jupyter: per dataset, chunks and files done, failed and never run,
        with a completeness bar; the failed files with their errors; what to do next."""
        header = ["dataset", "chunks", "done", "failed", "never run", "corrupt", "files done"]
        header += ["failed files", "other split", "completeness"]
        rows = []
        for name in sorted(self.datasets):
            d = self.datasets[name]
            row = [name, *map(str, (d.chunks, d.done, d.failed, d.never_run, d.corrupt))]
            row += [f"{d.files_done}/{d.files}", str(d.files_failed), str(d.files_elsewhere)]
            rows.append([*row, bar(d.fraction)])
        if self.complete:
            advice = "every chunk is in the cache: a run of this fileset loads it all."
        else:
            advice = (
                "run the fileset again with this cache (only what is not done runs), or "
                "report.remaining_fileset(fileset) for exactly the files left."
            )
        where = f"<p>cache: <code>{html.escape(str(self.cache.directory))}</code></p>"
        parts = [where, table(header, rows, raw=[9]), bad_files_html("Failed files", self.failed)]
        title = "chunkwise.status: " + (
            "complete" if self.complete else f"{len(self.incomplete)} chunks not complete"
        )
        notes = self._notes()
        if self.stale_temporaries:
            notes.append(
                f"{self.stale_temporaries} temporary files of killed runs are in the cache; the "
                "next run removes them"
            )
        return page(title, self.complete, parts, notes, advice)

    def _notes(self) -> list[str]:
        notes = list(self.notes)
        n = self.overall.files_elsewhere
        if n:
            notes.append(
                f"{n} files not done are in {self.other_entries} entries of another split or "
                "fileset (the 'other split' column): their outputs are merged there, so a run "
                "with this split computes them again"
            )
        if self.unknown_entries:
            notes.append(
                f"{self.unknown_entries} entries of another split or fileset were written by an "
                "older chunkwise and do not name their files: files of this fileset in them "
                "count as never run"
            )
        return notes

    def summary(self) -> str:
        """Where the cache is, the table, the failed files, and how many chunks are not done."""
        where = self.cache.directory
        exists = "" if where.is_dir() else "  (does not exist yet)"
        n = self.overall.chunks
        last = (
            f"{len(self.incomplete)} of {n} chunks are not complete"
            if self.incomplete
            else f"all {n} chunks are complete"
        )
        lines = [f"cache: {where}{exists}", f"split: {self.split.describe()}", self.table()]
        for dataset in sorted(self.failed):
            for path, error in sorted(self.failed[dataset].items()):
                lines.append(f"  failed: {dataset}: {path}: {error}")
        lines.append(last)
        lines += [f"note: {note}" for note in self._notes()]
        if self.stale_temporaries:
            lines.append(
                f"{self.stale_temporaries} temporary files of killed runs are in the cache; "
                "the next run removes them"
            )
        return "\n".join(lines)


def find_tag(root: str | os.PathLike[str], *, key: bytes | None = None) -> str:
    """The one tag in a cache directory (``""`` for the flat layout or an empty cache).

    The tags are the directories in ``root`` whose names do not start with ``.``, and ``""``
    when entries sit in ``root`` itself (the notebook's flat layout). A root:// cache is
    listed over XRootD, in one request.

    Parameters
    ----------
    root : str or os.PathLike
        The cache directory, or a ``root://host//dir`` URL.
    key : bytes, optional
        The cache's key: a root:// cache is refused without one before any request.

    Raises
    ------
    NotADirectoryError
        If ``root`` is a (local) file.
    ValueError
        If ``root`` holds several tags: the message names them.
    chunkwise.cache.CacheError
        For a root:// cache without a key, whose root is not a directory, or whose server
        cannot be reached.
    """
    if is_remote(root):
        listing = ChunkCache(root, key=key).contents()
        names = sorted(listing)
        tags = [n for n in names if not n.startswith(".") and listing[n].kind == "directory"]
    else:
        try:
            names = sorted(os.listdir(root))
        except FileNotFoundError:
            return ""
        tags = [n for n in names if not n.startswith(".") and os.path.isdir(os.path.join(root, n))]
    if any(n.endswith(ENTRY_SUFFIX) for n in names):
        tags.append("")  # the notebook's flat <cache>/<hash>.coffea layout
    if len(tags) > 1:
        shown = ", ".join(repr(t) for t in tags)
        raise ValueError(f"cache {str(root)!r} holds several tags ({shown}): pick one")
    return tags[0] if tags else ""


def status(
    fileset: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    cache: str | Path | ChunkCache,
    *,
    split: SplitOptions | None = None,
    tag: str | None = None,
    processor_instance: Any = None,
    runner: Any = None,
    strategy: str | None = None,
    datasets: Iterable[str] | Callable[..., Any] | tuple[Any, ...] | None = None,
    percentage: int | None = None,
    files_per_chunk: int | None = None,
    treename: str | None = None,
    events_per_chunk: int | None = None,
    cache_key: bytes | None = None,
    file_sums: Any = None,
    weights: bool = True,
    verify: bool = False,
) -> StatusReport:
    """Look each file of a fileset up in the cache of ``chunkwise.run``; run nothing.

    The cache is listed once (one request on a root:// cache): a chunk whose entry is listed is
    done, and so is a file whose own entry is listed (salvaged, or run on its own). Bad files
    are remembered by file: every salvage and failure record of the tag names its bad files
    with their errors, whatever split or fileset made it, so a file that failed in a chunk of
    another split, or before datasets were added, is still named.

    Parameters
    ----------
    fileset : dict or list of dict
        The fileset, or a list of chunks (split already: then ``split`` is not given).
    cache : str, os.PathLike or ChunkCache
        The cache directory given to ``run``, or the cache ``chunkwise.open_cache`` opened
        (then ``tag``, ``processor_instance``, ``runner`` and ``cache_key`` are its own).
    split : SplitOptions, optional
        How to split the fileset. By default, as the last run that split a fileset into this
        tag did (it recorded its options), else ``split_fileset``'s defaults. Options that
        differ from the last run's are used, with a note in ``report.notes``. The options as
        keywords of their own still work, with a ``DeprecationWarning``.
    tag : str, optional
        The cache tag (``""`` for the flat layout). By default it is derived from
        ``processor_instance`` and ``runner`` when a processor is given, else it is the one tag
        in ``cache``.
    processor_instance, runner, file_sums, weights : optional
        Derive the tag as ``run`` does (``chunkwise.tag.cache_tag``): pass the ``file_sums``
        and ``weights`` that ``run`` was given, since they are part of the tag.
    strategy, datasets, percentage, files_per_chunk, treename, events_per_chunk
        Deprecated: ``split=SplitOptions(...)``.
    cache_key : bytes, optional
        The key of a shared cache, as given to ``run``.
    verify : bool, optional
        Also read and verify every listed entry of the fileset's chunks and files, so that an
        entry that fails verification counts as corrupt (default False: a listed entry counts
        as done, and ``run`` verifies each one before it uses it; ``chunkwise cache verify``
        checks a whole tag).

    Returns
    -------
    StatusReport
        Per dataset, the chunks done, failed, never run and corrupt, the files done and failed
        (a dataset's own files), the failed files with their errors, and the split used.

    Raises
    ------
    ValueError
        For bad split options, or a cache with several tags and no way to pick one.
    chunkwise.cache.CacheError
        For a cache that is not trusted (see ``chunkwise.run``).

    Examples
    --------
    >>> report = chunkwise.status(fileset, "chunk_cache")  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
    >>> report.incomplete  # doctest: +SKIP
    ['5febc050...']
    """
    # The split options given one keyword each (deprecated): exactly the parameters so named.
    legacy = {name: value for name, value in locals().items() if name in SPLIT_FIELDS}
    given = split_options(split, legacy, "status")
    if split is None and all(v is None for v in legacy.values()):
        given = None
    store = _opened(cache, tag, processor_instance, runner, cache_key, file_sums, weights)
    report = StatusReport(store)
    listing = store.listing()  # the one listing of the tag directory
    report.split = _split_to_use(given, store, fileset, report.notes)
    # A list of chunks is looked up as it is (split options given with one are refused).
    chunks = make_chunks(fileset, report.split if isinstance(fileset, Mapping) else given)
    found = _Found(store, listing, chunks, verify, report.notes)
    report.stale_temporaries = sum(1 for _ in store.temporaries())
    seen: set[str] = set()
    for chunk in chunks:
        if chunk.hash in seen:
            continue
        seen.add(chunk.hash)
        done, corrupt = found.chunk(chunk)
        chunk_failed = False
        n_chunk_done = 0
        for dataset, paths in chunk.files.items():
            row = report.datasets.setdefault(dataset, DatasetStatus())
            left = report.remaining.setdefault(dataset, [])
            n_done = n_failed = 0
            if done is None:  # the chunk's entry is listed: every file is done
                n_done = len(paths)
            elif not done and not found.bad and not found.elsewhere:  # nothing of it is known
                left.extend(paths)
            else:
                keys = found.keys_of(chunk) if found.elsewhere else {}
                for path in paths:
                    if (dataset, path) in done:
                        n_done += 1
                        continue
                    left.append(path)
                    if keys.get((dataset, path)) in found.elsewhere:
                        # Its output is merged into an entry of another split: a run with this
                        # split computes it again.
                        row.files_elsewhere += 1
                        report.overall.files_elsewhere += 1
                        continue
                    error = found.bad.get((dataset, path))
                    if error is not None:
                        report.failed.setdefault(dataset, {})[path] = error
                        n_failed += 1
            # A dataset's counts are its own files': a bad file of another dataset in a mixed
            # chunk does not make this dataset's part of it failed.
            _count(row, len(paths), n_done, n_failed, corrupt)
            _count(report.overall, len(paths), n_done, n_failed, None, chunk=False)
            chunk_failed |= n_failed > 0
            n_chunk_done += n_done
        if n_chunk_done < chunk.n_files:
            report.incomplete.append(chunk.hash)
        _count_chunk(report.overall, chunk.n_files, n_chunk_done, chunk_failed, corrupt)
    report.other_entries = len(found.others)
    report.unknown_entries = found.unknown
    found.save_index()
    return report


def _split_to_use(
    given: SplitOptions | None, store: ChunkCache, fileset: Any, notes: list[str]
) -> SplitOptions:
    """The split options to look up with: those given, else the recorded run's (see
    ``TagDirectory.recorded_split``), with a note when they differ, when the run was over
    other datasets, or when its options leave datasets of this fileset out."""
    if not isinstance(fileset, Mapping):
        return SplitOptions() if given is None else given
    recorded, run = store.recorded_split(fileset, count_files(fileset))
    if given is not None:
        if isinstance(recorded, SplitOptions) and not given.same_as(recorded):
            notes.append(
                f"split with {given.describe()}, not as the last run here "
                f"({recorded.describe()}): chunks are looked up as split here, and files one "
                "by one"
            )
        return given
    if isinstance(recorded, str):
        notes.append(
            f"the last run's split options were not recorded ({recorded}): split with "
            "the defaults; give the run's options"
        )
    if not isinstance(recorded, SplitOptions):
        return SplitOptions()
    assert run is not None
    if run["datasets"] != sorted(map(str, fileset)):
        notes.append(
            f"split as the run over {run['files']} files of {', '.join(run['datasets'])} "
            f"({recorded.describe()}), the closest this cache recorded"
        )
    selected = recorded.datasets
    if isinstance(selected, (list, tuple)):
        left_out = sorted(str(d) for d in fileset if d not in selected)
        if left_out:
            notes.append(
                f"the run's split selects only {', '.join(map(str, selected))}: "
                f"{', '.join(left_out)} not looked up; give split options to look them up"
            )
    return recorded


class _Found:
    """What the cache's one listing, its index, and the records and entries the index does not
    describe say of a fileset's chunks (see ``chunkwise.cache.index``)."""

    def __init__(
        self,
        store: ChunkCache,
        listing: Listing,
        chunks: Sequence[Chunk],
        verify: bool,
        notes: list[str],
    ) -> None:
        self.store = store
        self.verify = verify
        self.listing = listing
        entries: dict[str, str] = {}
        records: list[str] = []
        for name, kind in listing.kinds.items():
            if name.endswith(ENTRY_SUFFIX) and _is_hash(name[: -len(ENTRY_SUFFIX)]):
                entries[name[: -len(ENTRY_SUFFIX)]] = kind
            elif name.endswith((SALVAGE_SUFFIX, FAILURE_SUFFIX)):
                records.append(name)
        self.entries = entries
        self.index, why = store.read_index()
        self.dirty = bool(why)  # written anew at the end, when something was read
        if why:
            notes.append(f"the cache's index was not used ({why}); it is written anew")
        self._mine = {chunk.hash: chunk for chunk in chunks}
        # Part hashes are worked out for the chunks a salvage record names, and for every chunk
        # not done only when the listing holds other entries still: files cached one by one
        # without a record (a run of the files left, one per chunk), or chunks of another split.
        self._salvaged = {
            name[: -len(SALVAGE_SUFFIX)] for name in records if name.endswith(SALVAGE_SUFFIX)
        }
        explained = set(self._mine)
        for chunk_hash in self._salvaged:  # done since or not, its files' entries stay
            chunk = self._mine.get(chunk_hash)
            if chunk is not None and chunk.n_files > 1:
                explained.update(chunk.part_files)
        self._explained = explained
        self._everywhere = any(h not in explained for h in entries)
        self.bad = self._bad_files(records)
        # The entries of another split (neither a chunk nor a file of this one), and the keys
        # of the files they hold; ``unknown``: those written before entries named their files.
        self.others: list[str] = []
        self.elsewhere: set[str] = set()
        self.unknown = 0
        if self._everywhere:
            self._other_entries(chunks)

    def _bad_files(self, records: list[str]) -> dict[tuple[str, str], str]:
        """``{(dataset, path): error}`` from every record listed, the newest last; a record
        whose chunk has its entry now (it was run again, whole) is out of date. The index
        gives a record's bad files while the listing shows it as the index does; any other
        record is read."""
        dated = []
        for name in records:
            suffix = SALVAGE_SUFFIX if name.endswith(SALVAGE_SUFFIX) else FAILURE_SUFFIX
            chunk_hash = name[: -len(suffix)]
            if not _is_hash(chunk_hash) or chunk_hash in self.entries:
                continue
            stat = self.listing.stat(name)
            if stat is not None:
                dated.append((stat.mtime, name, stat.size, chunk_hash, suffix))
        bad: dict[tuple[str, str], str] = {}
        for mtime, name, size, chunk_hash, suffix in sorted(dated):
            named = self.index.bad_files(name, size, mtime)
            if named is None:
                read = (
                    self.store.load_salvage if suffix == SALVAGE_SUFFIX else self.store.load_failure
                )
                record = read(chunk_hash)
                if record is None:
                    continue
                named = record.bad_files
                self.index.records[name] = IndexedRecord(size, mtime, named)
                self.dirty = True
            for dataset, paths in named.items():
                if isinstance(paths, Mapping):
                    for path, error in paths.items():
                        bad[(str(dataset), str(path))] = str(error)
        return bad

    def _other_entries(self, chunks: Sequence[Chunk]) -> None:
        """Find the entries of another split and the keys of their files: from the index, or
        from each entry's own bookkeeping (read and verified once, then indexed)."""
        parts = set(self._explained)
        for chunk in chunks:
            if chunk.n_files > 1 and self._cached(chunk.hash) != "done":
                parts.update(chunk.part_files)
        others = [h for h in self.entries if h not in parts]
        if others:  # files run on their own (a retry) whose chunk was put together since
            for chunk in chunks:
                if chunk.n_files > 1 and self._cached(chunk.hash) == "done":
                    parts.update(chunk.part_files)
            others = [h for h in others if h not in parts]
        self.others = others
        for chunk_hash in others:
            keys = self.index.entries.get(chunk_hash)
            if keys is None:  # not described yet: its bookkeeping names its files
                info = self.store.load_info(chunk_hash)
                keys = info.get("files", "") if info is not None else None
                if keys is None:
                    continue  # it does not verify: a run says so when it uses it
                self.index.entries[chunk_hash] = keys
                self.dirty = True
            if not keys:  # written before entries named their files
                self.unknown += 1
            self.elsewhere.update(split_keys(keys))

    def keys_of(self, chunk: Chunk) -> dict[tuple[str, str], str]:
        """``{(dataset, path): key}`` of a chunk's files (see ``chunkwise.cache.index``)."""
        if chunk.n_files == 1 and len(chunk.files) == 1:
            ((dataset, paths),) = chunk.files.items()
            return {(dataset, path): chunk.hash[:KEY_CHARS] for path in paths}
        return {where: h[:KEY_CHARS] for h, where in chunk.part_files.items()}

    def _cached(self, chunk_hash: str) -> str:
        """``"done"``, ``"corrupt"`` or ``"missing"`` for one entry of the listing."""
        kind = self.entries.get(chunk_hash)
        if kind is None:
            return "missing"
        if kind != "file":
            return "corrupt"  # never read: a symbolic link, a FIFO, a directory
        if self.verify and self.store.status(chunk_hash) != "cached":
            return "corrupt"
        return "done"

    def chunk(self, chunk: Chunk) -> tuple[set[tuple[str, str]] | None, bool]:
        """The chunk's files whose output the cache holds (``None``: all of them), and whether
        its entry is corrupt."""
        state = self._cached(chunk.hash)
        if state == "done":
            return None, False
        done: set[tuple[str, str]] = set()
        if chunk.n_files > 1 and (self._everywhere or chunk.hash in self._salvaged):
            done = {where for h, where in chunk.part_files.items() if self._cached(h) == "done"}
        return done, state == "corrupt"

    def save_index(self) -> None:
        """Write the index anew if anything had to be read (best effort: ``status`` only
        reads a cache, and one it may not write is looked up the same way next time)."""
        if not self.dirty:
            return
        self.index.keep_only(self.listing.kinds, self.entries)
        with contextlib.suppress(OSError, CacheError):
            self.store.write_index(self.index)


def status_cache(root: str | Path, tag: str, key: bytes | None = None) -> ChunkCache:
    """The cache of one tag under ``root``, for :func:`status` to read.

    Raises
    ------
    ValueError
        If ``root`` holds tags, but not this one (a typo, or other options than the run's).
    """
    return _opened(root, tag, None, None, key, None, True)


def _opened(
    cache: str | Path | ChunkCache,
    tag: str | None,
    processor_instance: Any,
    runner: Any,
    cache_key: bytes | None,
    file_sums: Any,
    weights: bool,
) -> ChunkCache:
    """The cache to look in: the one given, opened already, or the tag's under ``cache``."""
    if isinstance(cache, ChunkCache):
        given = [
            name
            for name, value in (
                ("tag", tag),
                ("processor_instance", processor_instance),
                ("runner", runner),
                ("cache_key", cache_key),
            )
            if value is not None
        ]
        if given:
            raise ValueError(
                "cache is an opened ChunkCache, which has its own tag and key: leave "
                f"{', '.join(given)} unset"
            )
        return cache
    if tag is None:
        if processor_instance is not None:
            tag = cache_tag(processor_instance, runner, file_sums, weights)
        else:
            tag = find_tag(cache, key=cache_key)
    store = ChunkCache(cache, tag, key=cache_key)
    if tag and not is_remote(cache) and os.path.isdir(cache) and not store.directory.is_dir():
        held = sorted(
            n for n in os.listdir(cache) if not n.startswith(".") and os.path.isdir(Path(cache) / n)
        )
        if held:  # a typo, or other options than the run's: not "nothing has run yet"
            raise ValueError(
                f"cache {str(cache)!r} has no tag {tag!r}; it holds "
                + ", ".join(repr(t) for t in held)
                + " (chunkwise cache ls shows them): check --tag, --processor and the options "
                "that make the tag"
            )
    return store


def _count(
    row: DatasetStatus,
    n_files: int,
    n_done: int,
    n_failed: int,
    corrupt: bool | None,
    *,
    chunk: bool = True,
) -> None:
    """Add one chunk's files of one dataset to ``row`` (and the chunk, with ``chunk``)."""
    row.files += n_files
    row.files_done += n_done
    row.files_failed += n_failed
    if chunk:
        _count_chunk(row, n_files, n_done, n_failed > 0, bool(corrupt))


def _count_chunk(
    row: DatasetStatus, n_files: int, n_done: int, failed: bool, corrupt: bool
) -> None:
    row.chunks += 1
    if n_done == n_files:
        row.done += 1
    elif corrupt:
        row.corrupt += 1
    elif failed:
        row.failed += 1
    else:
        row.never_run += 1
