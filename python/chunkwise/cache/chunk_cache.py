"""``ChunkCache``: one tag directory of a cache, its entries and its records.

See ``chunkwise.cache`` for the layout and what is trusted, ``chunkwise.cache.codec`` for the
bytes of an entry, ``chunkwise.cache.records`` for the records, and ``chunkwise.store`` for
where the files are.
"""

from __future__ import annotations

import contextlib
import pickle
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from chunkwise.cache.codec import (
    CACHE_FORMAT,
    decode_entry,
    encode_entry,
    unpickle_entry,
    unpickle_info,
)
from chunkwise.cache.directory import (
    ENTRY_SUFFIX,
    FAILURE_SUFFIX,
    SALVAGE_SUFFIX,
    TagDirectory,
    _is_hash,
)
from chunkwise.cache.index import IndexedRecord
from chunkwise.cache.records import _MAX_SALVAGE_BYTES, RecordKind, SalvageRecord, _seal
from chunkwise.errors import CorruptCacheEntryWarning
from chunkwise.store import FileStat, RemotePath, Unsafe

__all__ = ["CacheEntry", "ChunkCache", "Status"]

Status = Literal["cached", "missing", "corrupt", "salvaged"]


@dataclass(frozen=True)
class CacheEntry:
    """What ``ChunkCache.load`` found.

    Attributes
    ----------
    status : {"hit", "miss", "corrupt"}
        ``"hit"``: ``output`` holds the verified output. ``"miss"``: no entry.
        ``"corrupt"``: an entry exists but failed verification (``error`` says why); treat it
        as a miss, recompute and ``save`` over it.
    output : object
        The chunk's output (``None`` unless ``status == "hit"``; a hit may also hold ``None``
        when the chunk had no events at all).
    info : dict
        chunkwise's bookkeeping saved with the entry, e.g. ``info["events"]`` maps datasets to
        the number of events processed. Empty for entries written by plain ``coffea.util.save``.
    error : str
        Why a corrupt entry was rejected.
    """

    status: Literal["hit", "miss", "corrupt"]
    output: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def hit(self) -> bool:
        """True when the entry was found and verified."""
        return self.status == "hit"


class ChunkCache(TagDirectory):
    """Hash-keyed, crash-safe storage of chunk outputs under ``<root>/<tag>/``.

    Creating a ``ChunkCache`` touches nothing on disk. ``prepare`` (which ``chunkwise.run``
    calls before any work) creates the directories user-only and checks that they are trusted
    and writable. All paths come from ``path`` and ``salvage_path``.

    Parameters
    ----------
    root : str or os.PathLike
        The cache directory.
    tag : str, optional
        Sub-directory for one processor/Runner configuration, usually
        ``chunkwise.tag.cache_tag(processor, runner)``. ``""`` (the default) stores entries
        directly in ``root``, the layout of the split_fileset notebook, so its existing
        ``<hash>.coffea`` files (written by ``coffea.util.save``) are read as hits.
    key : bytes, optional
        The key of a cache shared by a group (see ``load_key``). Entries are then
        authenticated with HMAC-SHA256 and checked before anything is unpickled, and the
        directories may belong to others and be group-writable.

    Raises
    ------
    ValueError
        If ``tag`` is not a plain directory name.

    Examples
    --------
    >>> import chunkwise
    >>> from chunkwise.cache import ChunkCache
    >>> from chunkwise.tag import cache_tag
    >>> cache = ChunkCache("chunk_cache", cache_tag(processor, runner))  # doctest: +SKIP
    >>> key = chunkwise.hash_fileset(chunk)  # doctest: +SKIP
    >>> cache.status(key)  # doctest: +SKIP
    'missing'
    >>> cache.save(key, output, info={"events": {"DY": 4000}})  # doctest: +SKIP
    >>> cache.load(key).output  # doctest: +SKIP
    """

    def __repr__(self) -> str:
        return f"ChunkCache({str(self.root)!r}, tag={self.tag!r})"

    # -- paths: the one source of truth ---------------------------------------------------------
    def path(self, chunk_hash: str) -> Path | RemotePath:
        """Path of the entry for ``chunk_hash``: ``<root>/<tag>/<hash>.coffea``."""
        if not _is_hash(chunk_hash):
            raise ValueError(
                f"expected a 64-character lowercase hex digest from hash_fileset, "
                f"got {chunk_hash!r}"
            )
        return self.directory / f"{chunk_hash}{ENTRY_SUFFIX}"

    def salvage_path(self, chunk_hash: str) -> Path | RemotePath:
        """Path of the salvage record for ``chunk_hash``: ``<root>/<tag>/<hash>.salvage.json``."""
        return self.path(chunk_hash).with_name(f"{chunk_hash}{SALVAGE_SUFFIX}")

    def failure_path(self, chunk_hash: str) -> Path | RemotePath:
        """Where the failure record of a chunk lost whole goes: ``<hash>.failed.json``."""
        return self.path(chunk_hash).with_name(f"{chunk_hash}{FAILURE_SUFFIX}")

    # -- reading --------------------------------------------------------------------------------
    def _read_verified(self, chunk_hash: str) -> tuple[Literal["hit", "miss", "corrupt"], Any]:
        """("hit", (output pickle, bookkeeping pickle or None)), ("miss", None) or
        ("corrupt", why). Nothing is unpickled here."""
        if not self.check():
            return "miss", None
        try:
            blob = self._store.read(self.path(chunk_hash))
        except Unsafe as err:
            return "corrupt", f"not read: {err}"
        except OSError as err:
            return "corrupt", f"cannot read it ({err.strerror or err})"
        if blob is None:
            return "miss", None
        # No tag and no key: the notebook's flat layout (see decode_entry).
        return decode_entry(blob, key=self.key, flat=not self.tag and self.key is None)

    def load(self, chunk_hash: str, *, warn: bool = True) -> CacheEntry:
        """Load and verify the entry for ``chunk_hash``.

        Parameters
        ----------
        chunk_hash : str
            ``chunkwise.hash_fileset(chunk)``.
        warn : bool, optional
            Emit a ``CorruptCacheEntryWarning`` for a corrupt entry (default True).

        Returns
        -------
        CacheEntry
            ``status`` is ``"hit"``, ``"miss"`` or ``"corrupt"``. A corrupt entry is left on
            disk; the next ``save`` replaces it.

        Raises
        ------
        CacheError
            If the cache's directories are not trusted (see ``check``).
        """
        status, payload = self._read_verified(chunk_hash)
        if status == "miss":
            return CacheEntry("miss")
        if status == "hit":
            output_bytes, info_bytes = payload
            try:
                output, info = unpickle_entry(output_bytes, info_bytes, chunk_hash, self.tag)
                return CacheEntry("hit", output, info)
            except Exception as exc:
                payload = f"cannot unpickle: {type(exc).__name__}: {exc}"
        if warn:
            warnings.warn(
                f"chunkwise: cache entry {self.path(chunk_hash)} is corrupt ({payload}); "
                "it will be recomputed and overwritten",
                CorruptCacheEntryWarning,
                stacklevel=2,
            )
        return CacheEntry("corrupt", error=str(payload))

    def load_info(self, chunk_hash: str) -> dict[str, Any] | None:
        """The bookkeeping of a verified entry, without unpickling its output (``info["files"]``
        holds the keys of its files, see ``chunkwise.cache.index``); None for no entry, or one
        that does not verify (no warning: ``load`` warns when a run uses it)."""
        status, payload = self._read_verified(chunk_hash)
        if status != "hit":
            return None
        try:
            return unpickle_info(payload[1], chunk_hash, self.tag)
        except Exception:  # a corrupt entry: the run that loads it says so
            return None

    def update_index(
        self, entries: Mapping[str, str], records: Mapping[str, IndexedRecord]
    ) -> None:
        """Add what a run wrote to the tag's index: the keys of its entries' files, and its
        records' bad files with the size and time each had once written. A record that one
        listing of the directory shows otherwise was written again since (by another run):
        it is left to ``status`` to read. Lines for what is no longer listed are dropped.
        Raises ``OSError`` or ``CacheError`` if the directory cannot be listed or written
        (the index is only an accelerator)."""
        listing = self.contents()
        index, _ = self.read_index()
        for name, written in records.items():
            stat = listing.get(name)
            if stat is not None and (stat.size, stat.mtime) == (written.size, written.mtime):
                index.records[name] = written
        index.entries.update(
            (h, keys) for h, keys in entries.items() if f"{h}{ENTRY_SUFFIX}" in listing
        )
        hashes = {n[: -len(ENTRY_SUFFIX)] for n in listing if n.endswith(ENTRY_SUFFIX)}
        index.keep_only(listing, hashes)
        self.write_index(index)

    def stat(self, path: Path | RemotePath) -> FileStat:
        """The size and time of a file of this tag, as its store shows them."""
        return self._store.stat(path)

    def status(self, chunk_hash: str) -> Status:
        """Report the state of a chunk's entry without unpickling it.

        Parameters
        ----------
        chunk_hash : str
            ``chunkwise.hash_fileset(chunk)``.

        Returns
        -------
        str
            ``"cached"`` (entry present and verified), ``"corrupt"`` (present but fails
            verification), ``"salvaged"`` (no entry, but a salvage record: look at
            ``load_salvage(chunk_hash).parts`` and their own ``status``) or ``"missing"``.
        """
        state, _ = self._read_verified(chunk_hash)
        if state == "hit":
            return "cached"
        if state == "corrupt":
            return "corrupt"
        if self.salvage_path(chunk_hash).is_file():
            return "salvaged"
        return "missing"

    def load_salvage(self, chunk_hash: str) -> SalvageRecord | None:
        """Read the salvage record of ``chunk_hash``, or ``None`` if there is none or it does
        not verify (it is then ignored with a warning: the chunk is run again).

        The caller still checks that the record fits its chunk (``SalvageRecord.misfit``).
        """
        return self._load_record(self.salvage_path(chunk_hash), chunk_hash, "salvage")

    def load_failure(self, chunk_hash: str) -> SalvageRecord | None:
        """Read the failure record of a chunk lost whole in its last run (no ``parts``; its
        ``bad_files`` name every file of the chunk), or ``None`` if there is none or it does
        not verify (ignored with a warning: ``status`` shows the chunk as never run)."""
        return self._load_record(self.failure_path(chunk_hash), chunk_hash, "failure")

    def _load_record(
        self, path: Path | RemotePath, chunk_hash: str, kind: Literal["salvage", "failure"]
    ) -> SalvageRecord | None:
        if not self.check():
            return None
        try:
            blob = self._store.read(path, limit=_MAX_SALVAGE_BYTES)
            if blob is None:
                return None
            data = self._unseal(blob, kind, chunk_hash)
            if data.get("format", CACHE_FORMAT) != CACHE_FORMAT:  # a record of the old format
                raise ValueError(f"its format {data.get('format')!r} is not {CACHE_FORMAT!r}")
            record = SalvageRecord.from_dict(data)
            if record.chunk_hash != chunk_hash:
                raise ValueError(f"it names chunk {record.chunk_hash!r}")
            return record
        except (Unsafe, OSError, ValueError) as exc:
            if isinstance(exc, OSError) and not self._store.transient_errors:
                raise
            then = (
                "the chunk is run again"
                if kind == "salvage"
                else "'status' shows the chunk as never run until it runs again"
            )
            warnings.warn(
                f"chunkwise: ignoring the {kind} record {path}: {exc}; {then}",
                CorruptCacheEntryWarning,
                stacklevel=3,
            )
            return None

    def hashes(self) -> Iterator[str]:
        """Yield the hashes that have an entry file (verified or not) in this tag's directory."""
        if not self._may_request():
            return
        try:
            names = self._store.listdir(self.directory)
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in sorted(names):
            if name.endswith(ENTRY_SUFFIX) and _is_hash(name[: -len(ENTRY_SUFFIX)]):
                yield name[: -len(ENTRY_SUFFIX)]

    # -- writing --------------------------------------------------------------------------------
    def encode(self, chunk_hash: str, output: Any, info: Mapping[str, Any] | None = None) -> bytes:
        """The bytes of an entry, as ``save`` would write them (see ``save`` for the arguments).

        Pickling happens here, so that the caller may change ``output`` afterwards and write
        the bytes later, e.g. on another thread, with ``write``.
        """
        import cloudpickle

        pickled = cloudpickle.dumps(output, protocol=pickle.HIGHEST_PROTOCOL)
        return self.encode_pickled(chunk_hash, pickled, info)

    def encode_pickled(
        self, chunk_hash: str, pickled_output: bytes, info: Mapping[str, Any] | None = None
    ) -> bytes:
        """Like ``encode``, for an output that is already pickled (``cloudpickle.dumps``)."""
        return encode_entry(pickled_output, info, chunk_hash=chunk_hash, tag=self.tag, key=self.key)

    def write(self, chunk_hash: str, data: bytes) -> Path | RemotePath:
        """Atomically write ``encode``'s bytes as the entry of ``chunk_hash``; returns its path."""
        path = self.path(chunk_hash)
        self._write_atomic(path, data)
        return path

    def save(
        self, chunk_hash: str, output: Any, info: Mapping[str, Any] | None = None
    ) -> Path | RemotePath:
        """Atomically write ``output`` as the entry of ``chunk_hash``.

        Parameters
        ----------
        chunk_hash : str
            ``chunkwise.hash_fileset(chunk)``.
        output : object
            Anything cloudpickle can pickle, usually the chunk's accumulator.
        info : mapping, optional
            Extra bookkeeping stored after the output (must be picklable), e.g.
            ``{"events": {dataset: n}}``. The keys ``format``, ``hash`` and ``tag`` are set here.

        Returns
        -------
        pathlib.Path or RemotePath
            The entry's path, readable with ``coffea.util.load`` (a local one).
        """
        return self.write(chunk_hash, self.encode(chunk_hash, output, info))

    def save_salvage(self, record: SalvageRecord) -> Path | RemotePath:
        """Atomically write ``record`` to ``salvage_path(record.chunk_hash)``, authenticated
        (see ``RECORD_FORMAT``)."""
        return self._save_record(record, self.salvage_path(record.chunk_hash), "salvage")

    def save_failure(self, record: SalvageRecord) -> Path | RemotePath:
        """Atomically write the record of a chunk lost whole to ``failure_path``,
        authenticated."""
        return self._save_record(record, self.failure_path(record.chunk_hash), "failure")

    def _save_record(
        self, record: SalvageRecord, path: Path | RemotePath, kind: RecordKind
    ) -> Path | RemotePath:
        data = _seal(
            record.to_dict(), key=self.key, kind=kind, tag=self.tag, chunk_hash=record.chunk_hash
        )
        self._write_atomic(path, data)
        return path

    def remove(self, chunk_hash: str) -> None:
        """Delete the entry and the salvage and failure records of ``chunk_hash``, if present."""
        paths = (
            self.path(chunk_hash),
            self.salvage_path(chunk_hash),
            self.failure_path(chunk_hash),
        )
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                self._store.remove(path)
