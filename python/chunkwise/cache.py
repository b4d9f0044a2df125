"""The crash-safe, hash-keyed cache of chunk outputs, and what it trusts.

Layout
------
``<root>/<tag>/<hash>.coffea``
    One chunk's output. ``<hash>`` is ``chunkwise.hash_fileset(chunk)``; ``<tag>`` names the
    processor code and Runner settings that made it (see ``chunkwise.tag.cache_tag``). An
    empty tag gives the flat ``<root>/<hash>.coffea`` layout of coffea's split_fileset notebook.
``<root>/<tag>/<hash>.salvage.json``
    Written when a chunk had a bad file: it names the chunk's single-file parts (and their
    hashes) and the files that failed, so that a rerun goes straight to the files.
``<root>/<tag>/tag.json``
    What went into the tag (see ``chunkwise.tag.tag_manifest``).

Entry format
------------
An entry is one LZ4 frame with a content checksum and its content size in the header, holding
the output pickled with cloudpickle (as ``coffea.util.save`` writes it, so ``coffea.util.load``
reads it), a pickled ``dict`` of chunkwise bookkeeping (format, hash, tag, events and sums of
weights per dataset),
and a 64-byte footer: a magic string, the two lengths, and a digest of both pickles: SHA-256,
or, for a cache shared with a key, HMAC-SHA256 with that key.

What is trusted
---------------
Nothing is unpickled before all of this holds:

- the cache root and the tag directory are directories owned by you and writable by no one
  else (the rule ssh's ``StrictModes`` applies to ``~/.ssh``), or the cache has a key;
- the entry is a regular file (no symlink, FIFO or device), read up to its size, and its frame
  declares a content size that LZ4 could have produced from it;
- the frame's checksum holds, the footer's digest matches (with the key, if any), and the
  bookkeeping names this chunk's hash.

A file without chunkwise's footer is a miss, except in the flat layout (``tag=""``), which reads
the entries of coffea's notebook as they are. Writes go to a temporary file in the entry's
directory, held under an exclusive ``flock`` while written, fsynced and then ``os.replace``d onto
the final name, so a reader sees the old entry, the new one or none, never a torn one; a
temporary file that no writer holds is a leftover of a killed run, which
``remove_stale_temporaries`` deletes. Directories this module creates are mode 0o700, entries
0o600.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import math
import os
import pickle
import stat
import struct
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CACHE_FORMAT",
    "ENTRY_SUFFIX",
    "MANIFEST_NAME",
    "FAILURE_SUFFIX",
    "SALVAGE_SUFFIX",
    "CacheEntry",
    "CacheError",
    "ChunkCache",
    "CorruptCacheEntryWarning",
    "SalvageRecord",
    "TagSummary",
    "list_tags",
    "load_key",
    "remove_tag",
]

#: Version of the entry layout; part of every tag, so a format change never reads old entries.
CACHE_FORMAT = "chunkwise-cache-2"

ENTRY_SUFFIX = ".coffea"
SALVAGE_SUFFIX = ".salvage.json"
#: The record of a chunk lost whole (one file, or salvage off): its bad files and their errors,
#: so that ``status`` tells a failed chunk from one never run. A ``SalvageRecord`` with no parts.
FAILURE_SUFFIX = ".failed.json"
MANIFEST_NAME = "tag.json"
TEMP_SUFFIX = ".tmp"

_MAGIC = b"\x00chunkwise-entry2"  # 17 bytes
_FOOTER = struct.Struct("<17sQQ32s")  # magic, len(output pickle), len(bookkeeping), digest
_LZ4_MAX_RATIO = 255  # no LZ4 frame decompresses to more than this many bytes per byte read
_MAX_SALVAGE_BYTES = 256 * 1024 * 1024

Status = Literal["cached", "missing", "corrupt", "salvaged"]


class CacheError(Exception):
    """A cache that cannot be used: not a directory, not writable, or not trusted.

    The message is one line that says what is wrong and what to do.
    """


class CorruptCacheEntryWarning(UserWarning):
    """A cache entry or record could not be verified and will be recomputed or ignored."""


def load_key(path: str | os.PathLike[str]) -> bytes:
    """Read a shared cache's key from a file (its bytes, stripped of surrounding whitespace).

    Raises
    ------
    CacheError
        If the file cannot be read, is empty, or is readable by others than its owner and
        group (a key others can read authenticates nothing).
    """
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            key = f.read(1 << 16).strip()
    except OSError as err:
        raise CacheError(f"cache key file {os.fspath(path)!r}: {err.strerror or err}") from None
    if mode & stat.S_IROTH:
        raise CacheError(
            f"cache key file {os.fspath(path)!r} is readable by everyone; "
            f"chmod o-r {os.fspath(path)} so that only your group can read it"
        )
    if len(key) < 16:
        raise CacheError(
            f"cache key file {os.fspath(path)!r} holds {len(key)} bytes; use at least 16 "
            "random bytes, e.g. head -c 32 /dev/urandom | base64 > KEYFILE"
        )
    return key


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
    """The single-file parts of a chunk that had a bad file, each cached on its own.

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

    def misfit(self, parts: Mapping[str, tuple[str, str]]) -> str | None:
        """Why this record does not fit its chunk, or None if it does.

        Parameters
        ----------
        parts : mapping
            ``{part hash: (dataset, path)}`` of the chunk's single-file parts.

        A record read back from disk is used only if it names each part exactly once, with
        its dataset and path, and its bad files are among the chunk's files: a record can
        make a run slower (a retry), never wrong (files counted twice, or never).
        """
        named = [(p.get("hash"), (p.get("dataset"), p.get("path"))) for p in self.parts]
        if len(named) != len(parts) or dict(named) != dict(parts):
            return "it does not name each of the chunk's files exactly once"
        files = set(parts.values())
        for dataset, bad in self.bad_files.items():
            if not isinstance(bad, dict) or not all((dataset, p) in files for p in bad):
                return "its bad files are not files of the chunk"
        return None

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


def _owner(uid: int) -> str:
    import pwd

    try:
        return f"user {pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


class _Unsafe(Exception):
    """A file in the cache that must not be read (a symlink, FIFO, device, oversized...)."""


def _read_regular(path: Path, limit: int | None = None) -> bytes | None:
    """The bytes of a regular file, or None if there is none; never follows a symlink, never
    blocks on a FIFO, never reads more than the file's size (or ``limit``)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _Unsafe("a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Unsafe("not a regular file")
        if limit is not None and st.st_size > limit:
            raise _Unsafe(f"{st.st_size} bytes, more than a record can be")
        chunks, left = [], st.st_size
        while left > 0:
            block = os.read(fd, min(left, 1 << 24))
            if not block:
                break
            chunks.append(block)
            left -= len(block)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _digest(key: bytes | None, *parts: bytes) -> bytes:
    h = hmac.new(key, digestmod=hashlib.sha256) if key is not None else hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.digest()


class ChunkCache:
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
        self.root = Path(root)
        self.tag = tag
        self.directory = self.root / tag if tag else self.root
        self.key = key
        self._checked = False

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

    def failure_path(self, chunk_hash: str) -> Path:
        """Where the failure record of a chunk lost whole goes: ``<hash>.failed.json``."""
        return self.path(chunk_hash).with_name(f"{chunk_hash}{FAILURE_SUFFIX}")

    @property
    def manifest_path(self) -> Path:
        """Path of the tag's manifest: ``<root>/<tag>/tag.json``."""
        return self.directory / MANIFEST_NAME

    # -- trust ----------------------------------------------------------------------------------
    def _check_directory(self, path: Path, create: bool) -> bool:
        """Check one directory; return False if it does not exist (and ``create`` is off)."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if not create:
                return False
            try:
                path.mkdir(mode=0o700, parents=True)
            except FileExistsError:
                pass
            except OSError as err:
                raise CacheError(
                    f"cache {str(path)!r}: cannot create it ({err.strerror or err}); "
                    "choose a directory you can write to"
                ) from None
            st = os.stat(path)
            if st.st_uid == os.geteuid():
                # mkdir's mode is filtered by the umask, which can only remove bits. A keyed
                # cache is shared by a group: its directories are the group's too.
                os.chmod(path, 0o2770 if self.key is not None else 0o700)
                st = os.stat(path)
        except NotADirectoryError:
            raise CacheError(
                f"cache {str(path)!r}: a part of this path is a file; give a directory"
            ) from None
        except OSError as err:
            raise CacheError(f"cache {str(path)!r}: {err.strerror or err}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise CacheError(f"cache {str(path)!r} is not a directory; give a directory")
        if self.key is not None:
            return True  # entries are authenticated: the directory may be shared
        if st.st_uid != os.geteuid():
            raise CacheError(
                f"cache {str(path)!r} is owned by {_owner(st.st_uid)}, not by you: chunkwise "
                "never loads pickles another user could have written; use a cache directory "
                "of your own, or share one with a key (cache_key= / --cache-key-file)"
            )
        if st.st_mode & 0o022:
            raise CacheError(
                f"cache {str(path)!r} is writable by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):o}): chunkwise never loads pickles others could "
                f"have written; run chmod go-w {str(path)!r}, or share it with a key "
                "(cache_key= / --cache-key-file)"
            )
        return True

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
        exists = self._check_directory(self.root, create)
        if exists and self.tag:
            exists = self._check_directory(self.directory, create)
        self._checked = exists
        return exists

    def prepare(self) -> int:
        """Before any work: create and check the directories, make sure entries can be
        written, and remove temporary files that killed runs left behind.

        Returns
        -------
        int
            The number of stale temporary files removed.

        Raises
        ------
        CacheError
            With one line: what is wrong with the cache and what to do.
        """
        self.check(create=True)
        try:
            fd, probe = tempfile.mkstemp(prefix=".chunkwise-probe.", dir=self.directory)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise CacheError(
                f"cache {str(self.directory)!r} is not writable ({err.strerror or err}); "
                "choose a directory you can write to"
            ) from None
        return self.remove_stale_temporaries()

    # -- reading --------------------------------------------------------------------------------
    def _read_verified(self, chunk_hash: str) -> tuple[Literal["hit", "miss", "corrupt"], Any]:
        """("hit", (output pickle, bookkeeping pickle or None)), ("miss", None) or
        ("corrupt", why). Nothing is unpickled here."""
        import lz4.frame

        if not self.check():
            return "miss", None
        try:
            blob = _read_regular(self.path(chunk_hash))
        except _Unsafe as err:
            return "corrupt", f"not read: {err}"
        except OSError as err:
            return "corrupt", f"cannot read it ({err.strerror or err})"
        if blob is None:
            return "miss", None
        limit = _LZ4_MAX_RATIO * len(blob) + (1 << 16)  # more cannot come out of LZ4
        try:
            declared = lz4.frame.get_frame_info(blob)["content_size"]
            if declared and declared > limit:
                return "corrupt", "its LZ4 frame declares an impossible content size"
            decompressor = lz4.frame.LZ4FrameDecompressor()
            # Raises on a truncated frame and, with the content checksum that every entry
            # has, on any changed byte.
            content = decompressor.decompress(blob, max_length=limit)
            if not decompressor.eof:
                return "corrupt", "its LZ4 frame is truncated"
        except Exception as exc:  # lz4 raises RuntimeError; be broad, a bad entry is a miss
            return "corrupt", f"LZ4 frame does not verify: {exc}"
        footer = content[-_FOOTER.size :]
        if len(content) < _FOOTER.size or not footer.startswith(_MAGIC):
            if not self.tag and self.key is None:
                # The notebook's flat layout: coffea.util.save's entries, in a directory only
                # you can write (with a key, only authenticated entries are ever read).
                return "hit", (content, None)
            return "corrupt", "it has no chunkwise footer (not written by chunkwise)"
        _, n_output, n_info, digest = _FOOTER.unpack(footer)
        if n_output + n_info + _FOOTER.size != len(content):
            return "corrupt", "its footer does not match its length"
        body = memoryview(content)[: n_output + n_info]
        if not hmac.compare_digest(digest, _digest(self.key, body)):
            keyed = "this cache's key" if self.key is not None else "no key"
            return "corrupt", f"its digest does not match ({keyed}): not written by this cache"
        return "hit", (content[:n_output], content[n_output : n_output + n_info])

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
                info: dict[str, Any] = {}
                if info_bytes is not None:
                    info = pickle.loads(info_bytes)
                    _check_info(info, chunk_hash, self.tag)
                return CacheEntry("hit", pickle.loads(output_bytes), info)
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
        """Read the salvage record of ``chunk_hash``, or ``None`` if there is none or it is
        unreadable (an unreadable record is ignored with a warning: the chunk is re-run).

        The caller still checks that the record fits its chunk (``SalvageRecord.fits``).
        """
        return self._load_record(self.salvage_path(chunk_hash), chunk_hash, "salvage")

    def load_failure(self, chunk_hash: str) -> SalvageRecord | None:
        """Read the failure record of a chunk lost whole in its last run (no ``parts``; its
        ``bad_files`` name every file of the chunk), or ``None``."""
        return self._load_record(self.failure_path(chunk_hash), chunk_hash, "failure")

    def _load_record(self, path: Path, chunk_hash: str, what: str) -> SalvageRecord | None:
        if not self.check():
            return None
        try:
            blob = _read_regular(path, limit=_MAX_SALVAGE_BYTES)
            if blob is None:
                return None
            record = SalvageRecord.from_json(blob.decode("utf-8"))
            if record.chunk_hash != chunk_hash:
                raise ValueError(f"record names chunk {record.chunk_hash!r}")
            return record
        except (_Unsafe, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            warnings.warn(
                f"chunkwise: ignoring unreadable {what} record {path} ({exc})",
                CorruptCacheEntryWarning,
                stacklevel=2,
            )
            return None

    def read_manifest(self) -> dict[str, Any] | None:
        """The tag's manifest (what went into the tag), or None if there is none or it is
        unreadable."""
        if not self.tag or not self.check():
            return None
        try:
            blob = _read_regular(self.manifest_path, limit=_MAX_SALVAGE_BYTES)
            data = json.loads(blob.decode("utf-8")) if blob is not None else None
        except (_Unsafe, ValueError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def hashes(self) -> Iterator[str]:
        """Yield the hashes that have an entry file (verified or not) in this tag's directory."""
        try:
            names = os.listdir(self.directory)
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in sorted(names):
            if name.endswith(ENTRY_SUFFIX) and _is_hash(name[: -len(ENTRY_SUFFIX)]):
                yield name[: -len(ENTRY_SUFFIX)]

    # -- temporary files ------------------------------------------------------------------------
    def temporaries(self, min_age: float = 60.0) -> Iterator[Path]:
        """Yield chunkwise's temporary files in this tag's directory that no writer holds and
        that are older than ``min_age`` seconds: leftovers of killed runs."""
        try:
            names = os.listdir(self.directory)
        except (FileNotFoundError, NotADirectoryError):
            return
        now = time.time()
        for name in names:
            if not _is_our_temporary(name):
                continue
            path = self.directory / name
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                    continue
                if now - st.st_mtime < min_age:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live writer holds it
                yield path
            finally:
                os.close(fd)

    def remove_stale_temporaries(self, min_age: float = 60.0) -> int:
        """Delete the temporary files of ``temporaries``; return how many were deleted."""
        removed = 0
        for path in list(self.temporaries(min_age)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        return removed

    # -- writing --------------------------------------------------------------------------------
    def _write_atomic(self, path: Path, data: bytes) -> None:
        self.check(create=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        try:
            # Held until the file is renamed and closed: remove_stale_temporaries never
            # deletes a file that a live writer holds.
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.key is not None:  # the group reads and replaces a shared cache's entries
                os.fchmod(fd, 0o660)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                # No fsync of the directory after the rename: a power cut can then at worst
                # lose the new name (a cache miss, recomputed), never expose a torn entry.
                os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
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
        footer = _FOOTER.pack(
            _MAGIC, len(pickled_output), len(trailer), _digest(self.key, pickled_output, trailer)
        )
        return lz4.frame.compress(
            b"".join((pickled_output, trailer, footer)), content_checksum=True, store_size=True
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

    def save_failure(self, record: SalvageRecord) -> Path:
        """Atomically write the record of a chunk lost whole to ``failure_path``."""
        path = self.failure_path(record.chunk_hash)
        self._write_atomic(path, record.to_json().encode("utf-8"))
        return path

    def write_manifest(self, manifest: Mapping[str, Any]) -> Path:
        """Atomically write the tag's manifest."""
        text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        self._write_atomic(self.manifest_path, text.encode("utf-8"))
        return self.manifest_path

    def remove(self, chunk_hash: str) -> None:
        """Delete the entry and the salvage and failure records of ``chunk_hash``, if present."""
        paths = (
            self.path(chunk_hash),
            self.salvage_path(chunk_hash),
            self.failure_path(chunk_hash),
        )
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _check_info(info: Any, chunk_hash: str, tag: str) -> None:
    """Bookkeeping read back must be exactly what chunkwise writes, or the entry is corrupt."""
    if not isinstance(info, dict) or info.get("format") != CACHE_FORMAT:
        raise ValueError("its bookkeeping is not chunkwise's")
    if info.get("hash") != chunk_hash:
        raise ValueError(f"entry was written for chunk {info.get('hash')!r}, not this one")
    if info.get("tag") != tag:
        raise ValueError(f"entry was written under tag {info.get('tag')!r}, not this one")
    events = info.get("events", {})
    if not isinstance(events, dict) or not all(
        isinstance(k, str) and type(v) is int and v >= 0 for k, v in events.items()
    ):
        raise ValueError("its event counts are malformed")
    sums = info.get("sums", {})
    if not isinstance(sums, dict) or not all(
        isinstance(dataset, str)
        and isinstance(totals, dict)
        and all(
            isinstance(name, str)
            and isinstance(entry, list)
            and len(entry) == 2
            and type(entry[0]) in (int, float)
            and math.isfinite(entry[0])
            and type(entry[1]) is int
            and entry[1] >= 0
            for name, entry in totals.items()
        )
        for dataset, totals in sums.items()
    ):
        raise ValueError("its sums of weights are malformed")


# -- housekeeping ---------------------------------------------------------------------------
@dataclass
class TagSummary:
    """One tag directory of a cache, as ``chunkwise cache ls`` shows it.

    Attributes
    ----------
    tag : str
        The directory name (``""`` for the flat layout's entries in the root).
    processor : str
        The processor class named by the tag's manifest (``"?"`` without one).
    entries : int
        Entry files (verified or not).
    bytes : int
        Size of everything chunkwise wrote there.
    newest : float
        Modification time of the newest entry (0 for none).
    """

    tag: str
    processor: str
    entries: int
    bytes: int
    newest: float


def _is_our_temporary(name: str) -> bool:
    """A name of chunkwise's temporary files: ``.<entry, record or manifest>.<random>.tmp``."""
    if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
        return False
    suffixes = (ENTRY_SUFFIX, SALVAGE_SUFFIX, FAILURE_SUFFIX, MANIFEST_NAME)
    return any(f"{s}." in name for s in suffixes)


def _ours(name: str) -> bool:
    """A file name chunkwise writes in a tag directory."""
    if name == MANIFEST_NAME or _is_our_temporary(name):
        return True
    for suffix in (ENTRY_SUFFIX, SALVAGE_SUFFIX, FAILURE_SUFFIX):
        if name.endswith(suffix) and _is_hash(name[: -len(suffix)]):
            return True
    return False


def list_tags(root: str | os.PathLike[str], *, key: bytes | None = None) -> list[TagSummary]:
    """Summarise every tag directory of a cache (and the flat layout's entries, if any).

    Raises
    ------
    CacheError
        If the root is not a trusted directory (see ``ChunkCache.check``).
    """
    top = ChunkCache(root, key=key)
    if not top.check():
        return []
    summaries = []
    names = sorted(os.listdir(top.root))
    candidates = [
        n
        for n in names
        if not n.startswith(".") and stat.S_ISDIR(os.lstat(top.root / n).st_mode)  # no symlinks
    ]
    if any(_ours(n) and n.endswith(ENTRY_SUFFIX) for n in names):
        candidates.insert(0, "")
    for tag in candidates:
        cache = ChunkCache(root, tag, key=key)
        entries, size, newest = 0, 0, 0.0
        for name in os.listdir(cache.directory):
            if not _ours(name):
                continue
            st = os.lstat(cache.directory / name)
            size += st.st_size
            if name.endswith(ENTRY_SUFFIX):
                entries += 1
                newest = max(newest, st.st_mtime)
        manifest = cache.read_manifest() if tag else None
        processor = str(manifest.get("processor", "?")) if manifest else "?"
        summaries.append(TagSummary(tag, processor, entries, size, newest))
    return summaries


def remove_tag(root: str | os.PathLike[str], tag: str) -> None:
    """Delete a tag directory, and only if everything in it is chunkwise's own.

    Raises
    ------
    CacheError
        If the directory holds anything chunkwise did not write (it is then left whole).
    """
    cache = ChunkCache(root, tag)
    if not tag:
        raise CacheError("the flat layout has no tag directory to remove")
    try:
        st = os.lstat(cache.directory)
        if not stat.S_ISDIR(st.st_mode):
            raise CacheError(
                f"{str(cache.directory)!r} is not a directory (a symlink?); left it alone"
            )
        if not cache.check():
            raise CacheError(f"{str(cache.directory)!r} does not exist")
        names = os.listdir(cache.directory)
        foreign = [
            n
            for n in names
            if not _ours(n) or not stat.S_ISREG(os.lstat(cache.directory / n).st_mode)
        ]
        if foreign:
            raise CacheError(
                f"{str(cache.directory)!r} holds {foreign[0]!r}, which chunkwise did not "
                "write; left it whole: remove it yourself if you mean to"
            )
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(cache.directory / name)
        os.rmdir(cache.directory)
    except OSError as err:
        raise CacheError(f"cannot remove {str(cache.directory)!r}: {err.strerror or err}") from None
