"""``TagDirectory``: one tag directory of a cache, as a whole (``ChunkCache`` is one).

Its trust, its listing, the temporary files that killed runs left in it, its manifest and the
atomic writes of its files, through the store of its root (``chunkwise.store``). See
``chunkwise.cache`` for the layout and what is trusted.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chunkwise.cache.index import INDEX_NAME, TagIndex
from chunkwise.cache.records import _MAX_SALVAGE_BYTES, RecordKind, _seal, _unseal
from chunkwise.chunks import SplitOptions
from chunkwise.errors import CacheError, CorruptCacheEntryWarning
from chunkwise.store import TEMP_SUFFIX, FileStat, RemotePath, Store, Unsafe, open_store

__all__ = [
    "ENTRY_SUFFIX",
    "FAILURE_SUFFIX",
    "MANIFEST_NAME",
    "SALVAGE_SUFFIX",
    "SPLIT_NAME",
    "TagDirectory",
]

ENTRY_SUFFIX = ".coffea"
SALVAGE_SUFFIX = ".salvage.json"
#: The record of a chunk lost whole (one file, or salvage off): its bad files and their errors,
#: so that ``status`` tells a failed chunk from one never run. A ``SalvageRecord`` with no parts.
FAILURE_SUFFIX = ".failed.json"
MANIFEST_NAME = "tag.json"
#: The split options of the last run that split a fileset into this tag (``status`` uses them).
SPLIT_NAME = "split.json"
#: How many runs' split options ``split.json`` keeps.
_SPLIT_RUNS = 16


_HASH = re.compile("[0-9a-f]{64}")


def _is_hash(text: str) -> bool:
    """Whether ``text`` is a chunk hash: 64 lowercase hex digits."""
    return _HASH.fullmatch(text) is not None


def _is_our_temporary(name: str) -> bool:
    """A name of chunkwise's temporary files: ``.<entry, record or manifest>.<random>.tmp``."""
    if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
        return False
    suffixes = (ENTRY_SUFFIX, SALVAGE_SUFFIX, FAILURE_SUFFIX, MANIFEST_NAME, SPLIT_NAME, INDEX_NAME)
    return any(f"{s}." in name for s in suffixes)


@dataclass(frozen=True)
class Listing:
    """One listing of a tag directory (``TagDirectory.listing``).

    Attributes
    ----------
    kinds : dict
        ``{name: kind}`` (``FileStat.kind``).
    """

    kinds: dict[str, str]
    _stats: dict[str, FileStat]
    _directory: TagDirectory | None

    def stat(self, name: str) -> FileStat | None:
        """The size and time of a listed name, or None if it is gone since."""
        if name in self._stats or self._directory is None:
            return self._stats.get(name)
        try:
            return self._directory._store.stat(self._directory.directory / name)
        except FileNotFoundError:
            return None


class TagDirectory:
    """One tag directory of a cache: ``<root>/<tag>/``, or the root itself for the flat layout.

    The base of ``ChunkCache``, which adds the chunks' entries and records; see it for the
    parameters. Creating one touches nothing.
    """

    def __init__(
        self, root: str | os.PathLike[str], tag: str = "", *, key: bytes | None = None
    ) -> None:
        if tag and (
            os.sep in tag or (os.altsep and os.altsep in tag) or tag.startswith(".") or "\0" in tag
        ):
            raise ValueError(
                f"cache tag must be a plain directory name, got {tag!r}; "
                "use letters, digits, '-' and '_'"
            )
        if key is not None and (not isinstance(key, bytes) or not key):
            raise TypeError(
                f"cache key must be non-empty bytes (e.g. chunkwise.cache.load_key(path)), "
                f"got {type(key).__name__}"
            )
        self._store: Store[Any]
        self.root: Path | RemotePath
        self._store, self.root = open_store(root)
        self.tag = tag
        self.directory = self.root / tag if tag else self.root
        self.key = key
        self._checked = False
        self._removed: int | None = None  # what ``prepare`` removed, once it has run
        # What ``chunkwise.open_cache`` opened it for (``chunkwise.tag.Opening``), so that
        # ``run`` given this cache can tell the same processor and settings from others.
        self.opened_for: Any = None

    @property
    def manifest_path(self) -> Path | RemotePath:
        """Path of the tag's manifest: ``<root>/<tag>/tag.json``."""
        return self.directory / MANIFEST_NAME

    # -- trust ----------------------------------------------------------------------------------
    def check(self, *, create: bool = False) -> bool:
        """Check that the cache's directories may be trusted (and create them if asked).

        Returns
        -------
        bool
            False when the directories do not exist (and ``create`` is off): an empty cache.

        Raises
        ------
        CacheError
            A path that is not a directory, or a directory owned by another user or writable
            by group or others, without a key.
        """
        if self._checked:
            return True
        exists = self._store.check_directory(self.root, create, self.key)
        if exists and self.tag:
            exists = self._store.check_directory(self.directory, create, self.key)
        self._checked = exists
        return exists

    def _may_request(self) -> bool:
        """Whether the store may be asked anything: a store that needs a key (a root:// one)
        has it checked first, before any request. False: the directories do not exist."""
        return not self._store.needs_key or self.check()

    def prepare(self) -> int:
        """Before any work: create and check the directories, make sure entries can be
        written, and remove temporary files that killed runs left behind.

        It does this once per ``ChunkCache``: a later call (``chunkwise.run`` given a cache that
        ``chunkwise run`` prepared) asks nothing of the store and returns the same count.

        Returns
        -------
        int
            The number of stale temporary files removed.

        Raises
        ------
        CacheError
            With one line: what is wrong with the cache and what to do.
        """
        if self._removed is not None:
            return self._removed
        self.check(create=True)
        try:
            self._store.probe(self.directory)
        except OSError as err:
            raise CacheError(
                f"cache {str(self.directory)!r} is not writable ({err.strerror or err}); "
                "choose a directory you can write to"
            ) from None
        self._removed = self.remove_stale_temporaries()
        return self._removed

    # -- records (the manifest here; the chunks' records are ChunkCache's) -------------------
    @property
    def _legacy_records(self) -> bool:
        """Whether records of the previous, unauthenticated format are read: only in a local
        cache without a key, whose directories only you can write (see ``check``)."""
        return self.key is None and not self._store.needs_key

    def _unseal(self, blob: bytes, kind: RecordKind, chunk_hash: str = "") -> dict[str, Any]:
        data, _ = _unseal(
            blob,
            key=self.key,
            kind=kind,
            tag=self.tag,
            chunk_hash=chunk_hash,
            # Only kinds an older chunkwise wrote unsealed may be read in the old format.
            legacy=self._legacy_records and kind in ("salvage", "failure", "manifest"),
        )
        return data

    def read_manifest(self) -> dict[str, Any] | None:
        """The tag's manifest (what went into the tag), or None.

        None when there is none, and when it does not verify: it is then ignored with a
        ``CorruptCacheEntryWarning`` (a forged, torn or copied ``tag.json`` is never used).
        """
        if not self.tag:
            return None
        then = (
            "it counts as missing (a run of this tag writes it again; an explicit tag holding "
            "entries then needs --force-tag)"
        )
        return self._read_record(self.manifest_path, "manifest", then)

    @property
    def split_path(self) -> Path | RemotePath:
        """Path of the last run's split options: ``<root>/<tag>/split.json``."""
        return self.directory / SPLIT_NAME

    def read_split(self, *, warn: bool = True) -> list[dict[str, Any]]:
        """The split records of the last runs that split a fileset into this tag, oldest first.

        Each is ``{"split": options or None, "why": text, "files": n, "datasets": names,
        "time": t}``: ``split`` is ``SplitOptions.to_record``'s dict, or ``None`` when the
        options could not be written down (``why`` says why); ``files`` and ``datasets`` are
        how many files and which datasets the run's fileset had. Empty when there are none,
        and when the record does not verify (it is ignored with a ``CorruptCacheEntryWarning``).
        """
        then = "status splits with the options it is given"
        record = self._read_record(self.split_path, "split", then if warn else None)
        runs = record.get("runs") if record is not None else None
        if not isinstance(runs, list):
            return []
        return [
            r for r in runs
            if isinstance(r, dict) and isinstance(r.get("files"), int)
            and isinstance(r.get("datasets"), list)
        ]  # fmt: skip

    def write_split(self, options: SplitOptions, datasets: Iterable[str], n_files: int) -> None:
        """Record the split options of a run over a fileset of these datasets and ``n_files``
        files, beside those of the runs before it (the last ``_SPLIT_RUNS``, one per options
        and fileset size)."""
        written = options.to_record()
        why = "" if written is not None else "its datasets were given as a callable or patterns"
        names = sorted(map(str, datasets))
        run = {"split": written, "why": why, "files": n_files, "datasets": names}
        runs = [
            r for r in self.read_split(warn=False)  # one that does not verify is replaced
            if (r["split"], r["files"], r["datasets"]) != (written, n_files, names)
        ]  # fmt: skip
        runs = [*runs, {**run, "time": round(time.time())}][-_SPLIT_RUNS:]
        data = _seal({"runs": runs}, key=self.key, kind="split", tag=self.tag)
        self._write_atomic(self.split_path, data)

    def recorded_split(
        self, datasets: Iterable[str], n_files: int
    ) -> tuple[SplitOptions | str | None, dict[str, Any] | None]:
        """The split options a fileset of these datasets and ``n_files`` files was most likely
        run with, and the run's record.

        The last run over the same datasets and as many files; else, of the runs over the same
        datasets, the one over the most files (the fileset grew, or a run of the files left
        had fewer); else the run over the most files (datasets were added or removed). The
        options are ``None`` when no run recorded them, and a text saying why when they
        could not be written down.
        """
        runs = self.read_split()
        if not runs:
            return None, None
        names = sorted(map(str, datasets))
        alike = [r for r in runs if r["datasets"] == names]
        exact = [r for r in alike if r["files"] == n_files]
        if exact:
            chosen = exact[-1]
        else:
            chosen = max(reversed(alike or runs), key=lambda r: r["files"])
        try:
            if chosen.get("split") is None:
                return str(chosen.get("why") or "they could not be written down"), chosen
            return SplitOptions.from_record(chosen["split"]), chosen
        except (ValueError, TypeError) as err:
            warnings.warn(
                f"chunkwise: ignoring {self.split_path}: {err}", CorruptCacheEntryWarning,
                stacklevel=2,
            )  # fmt: skip
            return None, None

    @property
    def index_path(self) -> Path | RemotePath:
        """Path of the tag's index: ``<root>/<tag>/index.json`` (see ``chunkwise.cache.index``)."""
        return self.directory / INDEX_NAME

    def read_index(self) -> tuple[TagIndex, str]:
        """The tag's index (empty when there is none), and why an index that is there was not
        used (``""`` when it was, or there is none): torn, edited, or from another tag or key.
        An index is an accelerator, so one that is not used is only rebuilt, without a
        warning."""
        if not self.check():
            return TagIndex(), ""
        try:
            blob = self._store.read(self.index_path, limit=_MAX_SALVAGE_BYTES)
            if blob is None:
                return TagIndex(), ""
            return TagIndex.from_dict(self._unseal(blob, "index")), ""
        except (Unsafe, ValueError) as exc:
            return TagIndex(), str(exc)
        except OSError as exc:
            if not self._store.transient_errors:
                raise
            return TagIndex(), str(exc)

    def write_index(self, index: TagIndex) -> None:
        """Atomically write the tag's index, authenticated."""
        data = _seal(index.to_dict(), key=self.key, kind="index", tag=self.tag)
        self._write_atomic(self.index_path, data)

    def _read_record(
        self, path: Path | RemotePath, kind: RecordKind, then: str | None
    ) -> dict[str, Any] | None:
        """A record of the tag directory, verified, or None (missing, or ignored with a warning
        that says what happens ``then``; without a warning for ``then=None``)."""
        if not self.check():
            return None
        try:
            blob = self._store.read(path, limit=_MAX_SALVAGE_BYTES)
            if blob is None:
                return None
            return self._unseal(blob, kind)
        except (Unsafe, ValueError) as exc:
            why: Exception = exc
        except OSError as exc:
            if not self._store.transient_errors:
                raise
            why = exc
        if then is not None:
            warnings.warn(
                f"chunkwise: ignoring {path}: {why}; {then}", CorruptCacheEntryWarning, stacklevel=3
            )
        return None

    def write_manifest(self, manifest: Mapping[str, Any]) -> Path | RemotePath:
        """Atomically write the tag's manifest, authenticated (see ``RECORD_FORMAT``).

        Raises
        ------
        ValueError
            If the manifest has a ``record`` or ``mac`` field, which the file adds.
        """
        data = _seal(manifest, key=self.key, kind="manifest", tag=self.tag)
        self._write_atomic(self.manifest_path, data)
        return self.manifest_path

    # -- listing --------------------------------------------------------------------------------
    def contents(self) -> dict[str, FileStat]:
        """Everything in this tag's directory (the root for the flat layout), by name.

        Returns
        -------
        dict
            ``{name: FileStat}`` in listing order: each file's kind, size and modification
            time. Empty when the directory does not exist. Over XRootD this is one request.

        Raises
        ------
        CacheError
            If the cache is not trusted (see ``check``; a remote one needs its key before any
            request), or, for a remote cache, if the server cannot list the directory. A local
            directory that cannot be listed raises ``OSError``.
        """
        if not self.check():
            return {}
        try:
            return dict(self._store.scan(self.directory))  # a server's failure: a CacheError
        except (FileNotFoundError, NotADirectoryError):
            return {}  # removed since it was checked

    def listing(self) -> Listing:
        """Every name in this tag's directory with its kind, from one listing; the size and
        time of a name are asked for one by one (``Listing.stat``), except over XRootD, where
        the one request has them all. Empty when the directory does not exist; raises as
        ``contents`` does."""
        if not self.check():
            return Listing({}, {}, None)
        try:
            if self._store.remote:
                stats = dict(self._store.scan(self.directory))
                return Listing({n: s.kind for n, s in stats.items()}, stats, None)
            return Listing(self._store.kinds(self.directory), {}, self)
        except (FileNotFoundError, NotADirectoryError):
            return Listing({}, {}, None)

    # -- temporary files ------------------------------------------------------------------------
    def temporaries(self, min_age: float = 60.0) -> Iterator[Path | RemotePath]:
        """Yield chunkwise's temporary files in this tag's directory that no writer holds and
        that are older than ``min_age`` seconds: leftovers of killed runs.

        On a remote cache no lock can be seen, so a temporary counts as a leftover only when
        it is older than ``chunkwise.store.xrootd.REMOTE_STALE_AGE`` seconds (by the server's
        modification time).
        """
        if not self._may_request():
            return
        yield from self._store.temporaries(self.directory, min_age, _is_our_temporary)

    def remove_stale_temporaries(self, min_age: float = 60.0) -> int:
        """Delete the temporary files of ``temporaries``; return how many were deleted."""
        removed = 0
        for path in list(self.temporaries(min_age)):
            with contextlib.suppress(FileNotFoundError):
                self._store.remove(path)
                removed += 1
        return removed

    # -- writing --------------------------------------------------------------------------------
    def _write_atomic(self, path: Path | RemotePath, data: bytes) -> None:
        self.check(create=True)
        self._store.write_atomic(path, data, shared=self.key is not None)
