"""``chunkwise.status``: how much of a fileset is in the cache, without running anything.

``chunkwise status`` prints what :func:`status` returns. A chunk is *done* when its entry is in
the cache and verifies, or when every one of its files has its own entry (a salvaged chunk, or
files run on their own). A chunk that is not done has *failed* when the last run that tried it
recorded a bad file (the salvage record, or the failure record of a chunk lost whole, names
them with their errors), is *corrupt* when its entry fails verification, and was *never run*
otherwise.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chunkwise.cache import ENTRY_SUFFIX, ChunkCache, is_remote
from chunkwise.chunks import SPLIT_FIELDS, SplitOptions, make_chunks, split_options
from chunkwise.display import bad_files_html, bar, page, table
from chunkwise.table import format_table
from chunkwise.tag import cache_tag

__all__ = ["DatasetStatus", "StatusReport", "find_tag", "status"]


@dataclass
class DatasetStatus:
    """Counts for one dataset (or, in ``StatusReport.overall``, for all of them).

    A chunk is *done* (every file is in the cache: its entry, or each file's own), *failed*
    (a file of it failed in the last run that tried it: ``StatusReport.failed`` names them),
    *never run* (nothing of it is known) or *corrupt* (its entry fails verification). A chunk
    with files of several datasets counts once in each of them, and once overall.
    """

    chunks: int = 0
    done: int = 0
    failed: int = 0
    never_run: int = 0
    corrupt: int = 0
    files: int = 0
    files_done: int = 0
    files_failed: int = 0

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
    """

    cache: ChunkCache
    datasets: dict[str, DatasetStatus] = field(default_factory=dict)
    overall: DatasetStatus = field(default_factory=DatasetStatus)
    incomplete: list[str] = field(default_factory=list)
    failed: dict[str, dict[str, str]] = field(default_factory=dict)
    remaining: dict[str, list[str]] = field(default_factory=dict)
    stale_temporaries: int = 0

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
        header += ["failed files", "completeness"]
        rows = []
        for name in sorted(self.datasets):
            d = self.datasets[name]
            row = [name, *map(str, (d.chunks, d.done, d.failed, d.never_run, d.corrupt))]
            row += [f"{d.files_done}/{d.files}", str(d.files_failed), bar(d.fraction)]
            rows.append(row)
        if self.complete:
            advice = "every chunk is in the cache: a run of this fileset loads it all."
        else:
            advice = (
                "run the fileset again with this cache (only what is not done runs), or "
                "report.remaining_fileset(fileset) for exactly the files left."
            )
        where = f"<p>cache: <code>{html.escape(str(self.cache.directory))}</code></p>"
        parts = [where, table(header, rows, raw=[8]), bad_files_html("Failed files", self.failed)]
        title = "chunkwise.status: " + (
            "complete" if self.complete else f"{len(self.incomplete)} chunks not complete"
        )
        notes = []
        if self.stale_temporaries:
            notes.append(
                f"{self.stale_temporaries} temporary files of killed runs are in the cache; the "
                "next run removes them"
            )
        return page(title, self.complete, parts, notes, advice)

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
        lines = [f"cache: {where}{exists}", self.table()]
        for dataset in sorted(self.failed):
            for path, error in sorted(self.failed[dataset].items()):
                lines.append(f"  failed: {dataset}: {path}: {error}")
        lines.append(last)
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
) -> StatusReport:
    """Look each chunk of a fileset up in the cache of ``chunkwise.run``; run nothing.

    Parameters
    ----------
    fileset : dict or list of dict
        The fileset (split with ``split``, which must be the options ``run`` used) or a list
        of chunks.
    cache : str, os.PathLike or ChunkCache
        The cache directory given to ``run``, or the cache ``chunkwise.open_cache`` opened
        (then ``tag``, ``processor_instance``, ``runner`` and ``cache_key`` are its own).
    split : SplitOptions, optional
        How ``run`` split the fileset. The options as keywords of their own still work, with a
        ``DeprecationWarning``.
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

    Returns
    -------
    StatusReport
        Per dataset, the chunks done, failed, never run and corrupt, the files done, and
        the failed files with their errors.

    Raises
    ------
    ValueError
        For bad split options, or a cache with several tags and no way to pick one.
    chunkwise.cache.CacheError
        For a cache that is not trusted (see ``chunkwise.run``).

    Examples
    --------
    >>> split = chunkwise.SplitOptions(percentage=20)
    >>> report = chunkwise.status(fileset, "chunk_cache", split=split)  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
    >>> report.incomplete  # doctest: +SKIP
    ['5febc050...']
    """
    # The split options given one keyword each (deprecated): exactly the parameters so named.
    legacy = {name: value for name, value in locals().items() if name in SPLIT_FIELDS}
    chunks = make_chunks(fileset, split_options(split, legacy, "status"))
    store = _opened(cache, tag, processor_instance, runner, cache_key, file_sums, weights)
    report = StatusReport(store)
    report.stale_temporaries = sum(1 for _ in store.temporaries())
    seen: set[str] = set()
    for chunk in chunks:
        if chunk.hash in seen:
            continue
        seen.add(chunk.hash)
        done, failed, category = _look_up(store, chunk)
        _count_chunk(report.overall, category)
        for dataset, paths in chunk.files.items():
            row = report.datasets.setdefault(dataset, DatasetStatus())
            _count_chunk(row, category)
            left = report.remaining.setdefault(dataset, [])
            for path in paths:
                if (dataset, path) in done:
                    row.files_done += 1
                    report.overall.files_done += 1
                    continue
                left.append(path)
                error = failed.get((dataset, path))
                if error is not None:
                    report.failed.setdefault(dataset, {})[path] = error
                    row.files_failed += 1
                    report.overall.files_failed += 1
            row.files += len(paths)
            report.overall.files += len(paths)
        if category != "done":
            report.incomplete.append(chunk.hash)
    return report


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


def _look_up(
    store: ChunkCache, chunk: Any
) -> tuple[set[tuple[str, str]], dict[tuple[str, str], str], str]:
    """A chunk's files done and failed (with their errors), and its category."""
    state = store.status(chunk.hash)
    files = {(d, p) for d, paths in chunk.files.items() for p in paths}
    if state == "cached":
        return files, {}, "done"
    done: set[tuple[str, str]] = set()
    if chunk.n_files > 1:  # files cached one by one (salvaged, or run on their own)
        done = {where for part, where in chunk.part_files.items() if store.status(part) == "cached"}
    failed: dict[tuple[str, str], str] = {}
    # A chunk lost whole, then salvaged by a later run, has both records: the salvage record,
    # applied last, has the errors of the last run that tried each file.
    lost = store.load_failure(chunk.hash)
    if lost is not None and lost.chunk_hash == chunk.hash:
        failed.update(_named(lost.bad_files, files))
    salvage = store.load_salvage(chunk.hash) if state == "salvaged" else None
    if salvage is not None and salvage.misfit(chunk.part_files) is None:
        failed.update(_named(salvage.bad_files, files))
    failed = {where: error for where, error in failed.items() if where not in done}
    if done == files:
        return done, {}, "done"
    if state == "corrupt":
        return done, failed, "corrupt"
    return done, failed, "failed" if failed else "never_run"


def _named(bad: Mapping[str, Any], files: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """A record's bad files that are files of the chunk (a record is checked, not trusted)."""
    out = {}
    for dataset, paths in bad.items():
        if isinstance(paths, Mapping):
            for path, error in paths.items():
                if (dataset, path) in files:
                    out[(dataset, path)] = str(error)
    return out


def _count_chunk(counts: DatasetStatus, category: str) -> None:
    counts.chunks += 1
    setattr(counts, category, getattr(counts, category) + 1)
