"""``chunkwise.status``: how much of a fileset is in the cache, without running anything.

``chunkwise status`` prints what :func:`status` returns. A chunk is *done* when its entry is in
the cache and verifies, or, for a chunk that failed and was salvaged file by file, when every
one of its files has its own entry.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chunkwise.cache import ENTRY_SUFFIX, ChunkCache
from chunkwise.chunks import make_chunks
from chunkwise.table import format_table

__all__ = ["DatasetStatus", "StatusReport", "find_tag", "status"]


@dataclass
class DatasetStatus:
    """Counts for one dataset (or, in ``StatusReport.overall``, for all of them).

    A chunk with files of several datasets counts once in each of them, and once overall.
    """

    chunks: int = 0
    cached: int = 0
    salvaged: int = 0
    missing: int = 0
    corrupt: int = 0
    files: int = 0
    files_done: int = 0

    @property
    def fraction(self) -> float:
        """The fraction of files done (1.0 for no files)."""
        return self.files_done / self.files if self.files else 1.0

    def row(self, name: str) -> tuple[str, ...]:
        """The cells of this dataset's row in :meth:`StatusReport.table`."""
        return (
            name,
            str(self.chunks),
            str(self.cached),
            str(self.salvaged),
            str(self.missing),
            str(self.corrupt),
            f"{self.files_done}/{self.files} ({self.fraction:.1%})",
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
    stale_temporaries : int
        Temporary files that killed runs left in the cache (the next ``run`` removes them).
    """

    cache: ChunkCache
    datasets: dict[str, DatasetStatus] = field(default_factory=dict)
    overall: DatasetStatus = field(default_factory=DatasetStatus)
    incomplete: list[str] = field(default_factory=list)
    stale_temporaries: int = 0

    @property
    def complete(self) -> bool:
        """True when every chunk is done."""
        return not self.incomplete

    def table(self) -> str:
        """The per-dataset table that ``chunkwise status`` prints."""
        header = ("dataset", "chunks", "cached", "salvaged", "missing", "corrupt", "files done")
        rows = [self.datasets[name].row(name) for name in sorted(self.datasets)]
        if len(self.datasets) > 1:
            rows.append(self.overall.row("(all)"))
        return format_table(header, rows)

    def summary(self) -> str:
        """Where the cache is, the table, and how many chunks are not complete."""
        where = self.cache.directory
        exists = "" if where.is_dir() else "  (does not exist yet)"
        n = self.overall.chunks
        last = (
            f"{len(self.incomplete)} of {n} chunks are not complete"
            if self.incomplete
            else f"all {n} chunks are complete"
        )
        lines = [f"cache: {where}{exists}", self.table(), last]
        if self.stale_temporaries:
            lines.append(
                f"{self.stale_temporaries} temporary files of killed runs are in the cache; "
                "the next run removes them"
            )
        return "\n".join(lines)


def find_tag(root: str | os.PathLike[str]) -> str:
    """The one tag in a cache directory (``""`` for the flat layout or an empty cache).

    Raises
    ------
    NotADirectoryError
        If ``root`` is a file.
    ValueError
        If ``root`` holds several tags: the message names them.
    """
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
    cache: str | Path,
    *,
    tag: str | None = None,
    processor_instance: Any = None,
    runner: Any = None,
    strategy: str | None = None,
    datasets: Iterable[str] | Callable[..., Any] | tuple[Any, ...] | None = None,
    percentage: int | None = None,
    files_per_chunk: int | None = None,
    treename: str | None = None,
    cache_key: bytes | None = None,
) -> StatusReport:
    """Look each chunk of a fileset up in the cache of ``chunkwise.run``; run nothing.

    Parameters
    ----------
    fileset : dict or list of dict
        The fileset (split with the options below, which must be the ones ``run`` used) or a
        list of chunks.
    cache : str or os.PathLike
        The cache directory given to ``run``.
    tag : str, optional
        The cache tag (``""`` for the flat layout). By default it is derived from
        ``processor_instance`` and ``runner`` when a processor is given, else it is the one tag
        in ``cache``.
    processor_instance, runner : optional
        Derive the tag as ``run`` does (``chunkwise.tag.cache_tag``).
    strategy, datasets, percentage, files_per_chunk, treename
        As for ``chunkwise.split_fileset``.
    cache_key : bytes, optional
        The key of a shared cache, as given to ``run``.

    Returns
    -------
    StatusReport
        Per dataset, the chunks cached, salvaged, missing and corrupt, and the files done.

    Raises
    ------
    ValueError
        For bad split options, or a cache with several tags and no way to pick one.
    chunkwise.cache.CacheError
        For a cache that is not trusted (see ``chunkwise.run``).

    Examples
    --------
    >>> report = chunkwise.status(fileset, "chunk_cache", percentage=20)  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
    >>> report.incomplete  # doctest: +SKIP
    ['5febc050...']
    """
    chunks = make_chunks(
        fileset,
        strategy=strategy,
        datasets=datasets,
        percentage=percentage,
        files_per_chunk=files_per_chunk,
        treename=treename,
    )
    if tag is None:
        if processor_instance is not None:
            from chunkwise.tag import cache_tag

            tag = cache_tag(processor_instance, runner)
        else:
            tag = find_tag(cache)
    store = ChunkCache(cache, tag, key=cache_key)
    report = StatusReport(store)
    report.stale_temporaries = sum(1 for _ in store.temporaries())
    seen: set[str] = set()
    for chunk in chunks:
        if chunk.hash in seen:
            continue
        seen.add(chunk.hash)
        state = store.status(chunk.hash)
        done: set[tuple[str, str]] = set()
        if state == "cached":
            done = {(d, p) for d, paths in chunk.files.items() for p in paths}
        elif state == "salvaged":
            record = store.load_salvage(chunk.hash)
            if record is not None and record.misfit(chunk.part_files) is None:
                done = {
                    chunk.part_files[part["hash"]]
                    for part in record.parts
                    if store.status(part["hash"]) == "cached"
                }
        _count_chunk(report.overall, state)
        chunk_done = True
        for dataset, paths in chunk.files.items():
            row = report.datasets.setdefault(dataset, DatasetStatus())
            _count_chunk(row, state)
            n_done = sum((dataset, p) in done for p in paths)
            for counts in (row, report.overall):
                counts.files += len(paths)
                counts.files_done += n_done
            chunk_done = chunk_done and n_done == len(paths)
        if not chunk_done:
            report.incomplete.append(chunk.hash)
    return report


def _count_chunk(counts: DatasetStatus, state: str) -> None:
    counts.chunks += 1
    setattr(counts, state, getattr(counts, state) + 1)
