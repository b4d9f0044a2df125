"""The crash-safe, hash-keyed cache of chunk outputs.

Layout
------
``<root>/<tag>/<hash>.coffea``
    One chunk's output. ``<hash>`` is ``chunkwise.hash_fileset(chunk)``; ``<tag>`` names the
    processor code and Runner settings that made it (see ``chunkwise.tag.cache_tag``). An
    empty tag gives the flat ``<root>/<hash>.coffea`` layout of coffea's split_fileset notebook.
``<root>/<tag>/<hash>.salvage.json``
    Written when a chunk failed and was re-run file by file: it names the per-file chunks (and
    their hashes) and the files that failed, so that a rerun goes straight to the files.

Entry format
------------
An entry is one LZ4 frame with a content checksum, holding two pickles one after the other: the
output (written with cloudpickle, as ``coffea.util.save`` does) and then a small ``dict`` of
chunkwise bookkeeping (format version, hash, tag, events per dataset). ``coffea.util.load(path)``
reads the first pickle and so returns the output. Entries are pickles: load only caches that you
or people you trust wrote.

Safety
------
Writes go to a temporary file in the entry's directory, which is flushed, fsynced and then
``os.replace``d onto the final name, so a reader sees either the old entry, the new one or none,
never a torn one, also when two processes write the same entry. Every load checks the LZ4 frame
(its content checksum catches truncation and flipped bytes) and that the bookkeeping names the
expected hash; anything else is reported as ``"corrupt"``, which callers treat as a miss.
Directories that this module creates are user-only (mode 0o700); entries are 0o600.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CACHE_FORMAT",
    "ENTRY_SUFFIX",
    "SALVAGE_SUFFIX",
    "CacheEntry",
    "ChunkCache",
    "CorruptCacheEntryWarning",
    "SalvageRecord",
]

#: Version of the entry layout; part of every tag, so a format change never reads old entries.
CACHE_FORMAT = "chunkwise-cache-1"

ENTRY_SUFFIX = ".coffea"
SALVAGE_SUFFIX = ".salvage.json"

Status = Literal["cached", "missing", "corrupt", "salvaged"]


class CorruptCacheEntryWarning(UserWarning):
    """A cache entry could not be verified and will be recomputed."""


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


@dataclass
class SalvageRecord:
    """The per-file chunks of a chunk that failed and was re-run file by file.

    Attributes
    ----------
    chunk_hash : str
        Hash of the chunk that failed.
    error : str
        The chunk's own error, as text.
    parts : list of dict
        One ``{"dataset": ..., "path": ..., "hash": ...}`` per file, where ``hash`` is the hash
        of the single-file chunk whose output is cached under ``<hash>.coffea``.
    bad_files : dict
        ``{dataset: {path: "error text"}}`` for the files that failed on their own in the last
        attempt.
    """

    chunk_hash: str
    error: str
    parts: list[dict[str, str]]
    bad_files: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialize to the JSON stored in ``<hash>.salvage.json``."""
        return json.dumps(
            {
                "format": CACHE_FORMAT,
                "chunk_hash": self.chunk_hash,
                "error": self.error,
                "parts": self.parts,
                "bad_files": self.bad_files,
            },
            indent=1,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> SalvageRecord:
        """Parse ``to_json``'s output; raises ``ValueError`` on anything else."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            raise ValueError("not a chunkwise salvage record")
        parts = data["parts"]
        if not isinstance(parts, list) or not all(
            isinstance(p, dict) and {"dataset", "path", "hash"} <= p.keys() for p in parts
        ):
            raise ValueError("salvage record has malformed parts")
        return cls(
            chunk_hash=str(data["chunk_hash"]),
            error=str(data.get("error", "")),
            parts=parts,
            bad_files=dict(data.get("bad_files", {})),
        )


def _is_hash(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


class ChunkCache:
    """Hash-keyed, crash-safe storage of chunk outputs under ``<root>/<tag>/``.

    Creating a ``ChunkCache`` touches nothing on disk: the directory is created (user-only) by
    the first ``save``. All paths come from ``path`` and ``salvage_path``.

    Parameters
    ----------
    root : str or os.PathLike
        The cache directory.
    tag : str, optional
        Sub-directory for one processor/Runner configuration, usually
        ``chunkwise.tag.cache_tag(processor, runner)``. ``""`` (the default) stores entries
        directly in ``root``, the layout of the split_fileset notebook, so its existing
        ``<hash>.coffea`` files are read as hits.

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

    def __init__(self, root: str | os.PathLike[str], tag: str = "") -> None:
        if tag and (os.sep in tag or tag in (".", "..") or (os.altsep and os.altsep in tag)):
            raise ValueError(f"cache tag must be a plain directory name, got {tag!r}")
        self.root = Path(root)
        self.tag = tag
        self.directory = self.root / tag if tag else self.root
        self._directory_ready = False

    def __repr__(self) -> str:
        return f"ChunkCache({str(self.root)!r}, tag={self.tag!r})"

    # -- paths: the one source of truth ---------------------------------------------------------
    def path(self, chunk_hash: str) -> Path:
        """Path of the entry for ``chunk_hash``: ``<root>/<tag>/<hash>.coffea``."""
        if not _is_hash(chunk_hash):
            raise ValueError(
                f"expected a 64-character lowercase hex digest from hash_fileset, "
                f"got {chunk_hash!r}"
            )
        return self.directory / f"{chunk_hash}{ENTRY_SUFFIX}"

    def salvage_path(self, chunk_hash: str) -> Path:
        """Path of the salvage record for ``chunk_hash``: ``<root>/<tag>/<hash>.salvage.json``."""
        return self.path(chunk_hash).with_name(f"{chunk_hash}{SALVAGE_SUFFIX}")

    # -- reading --------------------------------------------------------------------------------
    def _read_verified(self, chunk_hash: str) -> tuple[Literal["hit", "miss", "corrupt"], Any]:
        """Return ("hit", decompressed bytes), ("miss", None) or ("corrupt", error text)."""
        import lz4.frame

        try:
            blob = self.path(chunk_hash).read_bytes()
        except FileNotFoundError:
            return "miss", None
        try:
            # Raises on a truncated frame and, for frames with a content checksum (all that
            # chunkwise writes), on any changed byte.
            return "hit", lz4.frame.decompress(blob)
        except Exception as exc:  # lz4 raises RuntimeError; be broad, a bad entry is a miss
            return "corrupt", f"LZ4 frame does not verify: {exc}"

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
        """
        status, payload = self._read_verified(chunk_hash)
        if status == "miss":
            return CacheEntry("miss")
        if status == "hit":
            try:
                stream = io.BytesIO(payload)
                output = pickle.load(stream)
                info: dict[str, Any] = {}
                if stream.tell() < len(payload):
                    info = pickle.load(stream)
                    if not isinstance(info, dict) or info.get("format") != CACHE_FORMAT:
                        raise ValueError("trailing data is not chunkwise bookkeeping")
                    if info.get("hash") != chunk_hash:
                        raise ValueError(
                            f"entry was written for chunk {info.get('hash')!r}, not this one"
                        )
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

    def status(self, chunk_hash: str) -> Status:
        """Report the state of a chunk's entry without unpickling it.

        Parameters
        ----------
        chunk_hash : str
            ``chunkwise.hash_fileset(chunk)``.

        Returns
        -------
        str
            ``"cached"`` (entry present and its LZ4 checksum verifies), ``"corrupt"`` (present
            but fails verification), ``"salvaged"`` (no entry, but a salvage record: look at
            ``load_salvage(chunk_hash).parts`` and their own ``status``) or ``"missing"``.

        Notes
        -----
        It checks the LZ4 frame (so truncation and flipped bytes show as ``"corrupt"``) but
        does not unpickle, so it cannot tell that an intact entry was copied under another
        chunk's name; ``load`` does.
        """
        state, _ = self._read_verified(chunk_hash)
        if state == "hit":
            return "cached"
        if state == "corrupt":
            return "corrupt"
        if self.salvage_path(chunk_hash).exists():
            return "salvaged"
        return "missing"

    def load_salvage(self, chunk_hash: str) -> SalvageRecord | None:
        """Read the salvage record of ``chunk_hash``, or ``None`` if there is none or it is
        unreadable (an unreadable record is ignored with a warning: the chunk is re-run)."""
        path = self.salvage_path(chunk_hash)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            record = SalvageRecord.from_json(text)
            if record.chunk_hash != chunk_hash:
                raise ValueError(f"record names chunk {record.chunk_hash!r}")
            return record
        except (ValueError, KeyError, TypeError) as exc:
            warnings.warn(
                f"chunkwise: ignoring unreadable salvage record {path} ({exc})",
                CorruptCacheEntryWarning,
                stacklevel=2,
            )
            return None

    def hashes(self) -> Iterator[str]:
        """Yield the hashes that have an entry file (verified or not) in this tag's directory."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        for name in sorted(names):
            if name.endswith(ENTRY_SUFFIX) and _is_hash(name[: -len(ENTRY_SUFFIX)]):
                yield name[: -len(ENTRY_SUFFIX)]

    # -- writing --------------------------------------------------------------------------------
    def _ensure_directory(self) -> None:
        if self._directory_ready:
            return
        for directory in (self.root, self.directory):
            try:
                directory.mkdir(mode=0o700, parents=True)
            except FileExistsError:
                continue
            # mkdir's mode is filtered by the umask, which can only remove bits: set it exactly.
            os.chmod(directory, 0o700)
        self._directory_ready = True

    def _write_atomic(self, path: Path, data: bytes) -> None:
        self._ensure_directory()
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            # No fsync of the directory after the rename: a power cut can then at worst lose the
            # new name (a cache miss, recomputed), never expose a torn entry; it saves ~30% of
            # a save's time.
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

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
        import lz4.frame

        meta = dict(info or {})
        meta.update(format=CACHE_FORMAT, hash=chunk_hash, tag=self.tag)
        trailer = pickle.dumps(meta, protocol=pickle.HIGHEST_PROTOCOL)
        return lz4.frame.compress(
            b"".join((pickled_output, trailer)), content_checksum=True, store_size=True
        )

    def write(self, chunk_hash: str, data: bytes) -> Path:
        """Atomically write ``encode``'s bytes as the entry of ``chunk_hash``; returns its path."""
        path = self.path(chunk_hash)
        self._write_atomic(path, data)
        return path

    def save(self, chunk_hash: str, output: Any, info: Mapping[str, Any] | None = None) -> Path:
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
        pathlib.Path
            The entry's path, readable with ``coffea.util.load``.
        """
        return self.write(chunk_hash, self.encode(chunk_hash, output, info))

    def save_salvage(self, record: SalvageRecord) -> Path:
        """Atomically write ``record`` to ``salvage_path(record.chunk_hash)``."""
        path = self.salvage_path(record.chunk_hash)
        self._write_atomic(path, record.to_json().encode("utf-8"))
        return path

    def remove(self, chunk_hash: str) -> None:
        """Delete the entry and salvage record of ``chunk_hash``, if present."""
        for path in (self.path(chunk_hash), self.salvage_path(chunk_hash)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
