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
``<root>/<tag>/<hash>.failed.json``
    Written when a chunk was lost whole: its bad files and their errors, for ``status``.
``<root>/<tag>/tag.json``
    What went into the tag (see ``chunkwise.tag.tag_manifest``).

Record format
-------------
The records (salvage and failure records, ``tag.json``) are JSON objects: their content plus
two fields, ``"record": RECORD_FORMAT`` and ``"mac"``, an authentication tag over the canonical
JSON (sorted keys, no spaces, ASCII) of everything else and over where the record belongs: its
kind, its tag and, for salvage and failure records, its chunk hash. The tag is
``"hmac-sha256:<hex>"`` with the cache's key, else ``"sha256:<hex>"``: a plain digest catches a
torn or hand-edited record, not a forger (whoever can write the file can recompute it). A
record that does not verify (torn, edited, forged, written with another key, or copied from
another chunk, tag or kind) is ignored with a ``CorruptCacheEntryWarning``, as if it were
missing. Records of the previous format (no ``record`` field, no tag) are read only from a local
cache without a key, which only you can write; a keyed or root:// cache ignores them.

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

A cache on an XRootD server
---------------------------
``ChunkCache("root://host//absolute/dir", tag, key=key)`` keeps the same layout and the same
bytes on a server, through fsspec (``fsspec-xrootd``), for sites with no shared file system.
All file access goes through a small storage seam, ``_LocalStore`` (the POSIX rules above,
unchanged) or ``_RemoteStore``: read a whole file (bounded by its size, or a limit), write a
temporary and move it into place, list a directory, stat, remove, mkdir.

- Trust: XRootD shows no owner or mode that chunkwise could check, so a remote cache is
  trusted by its key alone. Without a key it is refused (``CacheError``) before any request.
  Every entry is verified exactly as a local one (LZ4 checksum, the footer's HMAC-SHA256 with
  the key, ``_check_info``) before anything is unpickled; a truncated or forged entry is
  corrupt and recomputed. Records and ``tag.json`` are JSON, never unpickled, and carry an
  HMAC-SHA256 with the key (see "Record format"): one forged, torn or copied from elsewhere is
  ignored. Not authenticated: the listing of names (a file can be removed, or an old record
  with a valid HMAC put back under its own name, which can make a run retry files or
  ``status`` show an old error, never a wrong result).
- Atomicity: a file is written as ``.<name>.<random>.tmp`` in its directory (a name no reader
  opens) and then moved onto its name with XRootD's ``mv``, a ``rename(2)`` on the server that
  replaces the old file. A server that dies mid-write leaves at most a temporary file; the
  writer's ``OSError`` becomes the run's ``cache_problem``.
- Leftovers: no lock can be seen over XRootD, so a temporary counts as a leftover only when it
  is older than ``REMOTE_STALE_AGE`` (an hour, by the server's modification time).
- Housekeeping: ``list_tags`` and ``remove_tag`` (``chunkwise cache ls`` and ``prune``) work
  through the same seam (``scan``: one listing request per directory, with kinds, sizes and
  times; ``stat``; ``remove``; ``rmdir``) and need the key like everything else, although
  they unpickle nothing: a root:// cache is never touched without its key, so a mistyped or
  missing key file is said at once, by every command alike. ``remove_tag`` removes a tag
  directory only if every name in it is chunkwise's and a regular file. A server shows what
  a symbolic link on its disk points to, so a link cannot be told from what it names.
- Not supported on a remote cache: modes: who may read and write is the server's
  authorization.
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
import posixpath
import secrets
import stat
import struct
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from chunkwise.errors import CacheError, CorruptCacheEntryWarning
from chunkwise.extras import needs_xrootd

__all__ = [
    "CACHE_FORMAT",
    "RECORD_FORMAT",
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
#: Version of the records (salvage and failure records, ``tag.json``): JSON objects with two
#: fields added, ``"record"`` (this string) and ``"mac"``, the authentication tag.
RECORD_FORMAT = "chunkwise-record-1"

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

    def to_dict(self) -> dict[str, Any]:
        """The record's content, as ``ChunkCache.save_salvage`` seals it (see ``RECORD_FORMAT``)."""
        return {
            "chunk_hash": self.chunk_hash,
            "error": self.error,
            "parts": self.parts,
            "bad_files": self.bad_files,
        }

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
    def from_dict(cls, data: Mapping[str, Any]) -> SalvageRecord:
        """Parse ``to_dict``'s output (as a verified record holds it).

        Raises
        ------
        ValueError
            If ``data`` is not a record's content: a record that is ignored, with a warning.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("chunk_hash"), str):
            raise ValueError("not a chunkwise salvage record")
        parts = data.get("parts")
        if not isinstance(parts, list) or not all(
            isinstance(p, dict) and {"dataset", "path", "hash"} <= p.keys() for p in parts
        ):
            raise ValueError("salvage record has malformed parts")
        bad_files = data.get("bad_files", {})
        if not isinstance(bad_files, dict):
            raise ValueError("salvage record has malformed bad files")
        return cls(
            chunk_hash=data["chunk_hash"],
            error=str(data.get("error", "")),
            parts=parts,
            bad_files=dict(bad_files),
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


# -- records: JSON with an authentication tag ---------------------------------------------------
RecordKind = Literal["salvage", "failure", "manifest"]
#: The two fields a record adds to its content: its format and its authentication tag.
_RECORD_FIELD, _MAC_FIELD = "record", "mac"


class _Unverified(ValueError):
    """A record that does not verify: it is ignored, never trusted."""


def _canonical_json(data: Any) -> bytes:
    """The one JSON text of ``data`` that a record's authentication tag covers."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _record_mac(
    key: bytes | None, kind: RecordKind, tag: str, chunk_hash: str, content: Mapping[str, Any]
) -> str:
    """``"hmac-sha256:<hex>"`` (with a key) or ``"sha256:<hex>"`` over a record's content and
    where it belongs: its kind, its tag and (for salvage and failure records) its chunk."""
    where = "\0".join((RECORD_FORMAT, kind, tag, chunk_hash)).encode("utf-8")
    body = _canonical_json(content)
    digest = _digest(key, struct.pack("<QQ", len(where), len(body)), where, body)
    return f"{'hmac-sha256' if key is not None else 'sha256'}:{digest.hex()}"


def _seal(
    content: Mapping[str, Any],
    *,
    key: bytes | None,
    kind: RecordKind,
    tag: str,
    chunk_hash: str = "",
) -> bytes:
    """The bytes of a record file: ``content`` with its format and authentication tag added.

    Raises
    ------
    ValueError
        If ``content`` already has a ``record`` or ``mac`` field, or holds a value JSON cannot
        hold exactly (NaN, infinity).
    """
    if _RECORD_FIELD in content or _MAC_FIELD in content:
        raise ValueError(
            f"a record's content may not have the fields {_RECORD_FIELD!r}, {_MAC_FIELD!r}"
        )
    sealed = {**content, _RECORD_FIELD: RECORD_FORMAT}
    sealed[_MAC_FIELD] = _record_mac(key, kind, tag, chunk_hash, sealed)
    return (json.dumps(sealed, indent=1, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def _unseal(
    blob: bytes,
    *,
    key: bytes | None,
    kind: RecordKind,
    tag: str,
    chunk_hash: str = "",
    legacy: bool,
) -> tuple[dict[str, Any], bool]:
    """A record file's content and whether it was authenticated, checked against the key and
    where it was read (kind, tag, chunk).

    ``legacy`` accepts a record of the previous format (no ``record`` field, no tag); it is
    then returned as it is, with ``False``.

    Raises
    ------
    _Unverified
        With the reason, for anything that does not verify: torn, edited, forged, written
        with another key, or for another kind, chunk or tag.
    """
    try:
        data = json.loads(blob.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise _Unverified(f"it is not whole JSON (torn?): {err}") from None
    if not isinstance(data, dict):
        raise _Unverified("it is not a JSON object")
    if _RECORD_FIELD not in data and _MAC_FIELD not in data:
        if legacy:
            return data, False
        raise _Unverified(
            "it was written by an older chunkwise, without authentication, and this cache is "
            "trusted only through its key"
        )
    if data.get(_RECORD_FIELD) != RECORD_FORMAT:
        raise _Unverified(
            f"its format {data.get(_RECORD_FIELD)!r} is not {RECORD_FORMAT!r} (another chunkwise?)"
        )
    mac = data.pop(_MAC_FIELD, None)
    if not isinstance(mac, str):
        raise _Unverified("it has no authentication tag ('mac')")
    try:
        expected = _record_mac(key, kind, tag, chunk_hash, data)
    except ValueError as err:  # NaN or infinity: never written by chunkwise
        raise _Unverified(f"it holds a value chunkwise never writes ({err})") from None
    if hmac.compare_digest(mac.encode("utf-8"), expected.encode("utf-8")):
        del data[_RECORD_FIELD]
        return data, True
    scheme = mac.partition(":")[0]
    if key is None and scheme == "hmac-sha256":
        why = "it was written with a key, and the cache was opened without one"
    elif key is not None and scheme == "sha256":
        why = "it was written without a key, and this cache has one"
    elif key is not None:
        why = (
            "its HMAC does not match: it was edited or torn, written with another key, or "
            "copied from another chunk, tag or kind of record"
        )
    else:
        why = (
            "its SHA-256 does not match: it was edited or torn, or copied from another chunk, "
            "tag or kind of record"
        )
    raise _Unverified(why)


# -- storage: the local file system, or a remote one through fsspec ----------------------------
#: Seconds each request to a remote cache's server may take (fsspec-xrootd's ``timeout``).
REMOTE_TIMEOUT = 60
#: A remote temporary file older than this (seconds, by the server's clock) is a leftover: no
#: lock can be seen over XRootD, and no single entry takes an hour to write.
REMOTE_STALE_AGE = 3600.0
#: Bytes per read or write request to a remote cache, so that each request of a large entry
#: finishes well within ``REMOTE_TIMEOUT``.
REMOTE_BLOCK = 8 * 1024 * 1024
_REMOTE_SCHEMES = ("root://", "roots://")


def is_remote(root: str | os.PathLike[str]) -> bool:
    """True for a ``root://`` (or ``roots://``) cache URL, the one kind of remote cache."""
    return isinstance(root, str) and root.startswith(_REMOTE_SCHEMES)


def _check_local_root(root: str | os.PathLike[str]) -> None:
    """Refuse a URL that would otherwise become an odd local directory (``s3:/bucket``), and a
    root:// URL made a ``Path`` (which merged its ``//``)."""
    text = os.fspath(root)
    if isinstance(text, bytes):
        return
    scheme, sep, _ = text.partition("://")
    if (sep and len(scheme) > 1 and scheme.isalnum()) or text.startswith(("root:/", "roots:/")):
        raise CacheError(
            f"cache {text!r}: the only remote caches are root:// ones, given as a string "
            "root://host//absolute/dir; otherwise give a local directory"
        )


@dataclass(frozen=True)
class FileStat:
    """What a cache's store tells of one name in a directory (see ``ChunkCache.contents``).

    Attributes
    ----------
    kind : {"file", "directory", "symlink", "other"}
        ``"file"`` is a regular file. A local symbolic link is ``"symlink"`` (never followed);
        an XRootD server shows what a link points to, so a remote name is never one.
    size : int
        Size in bytes.
    mtime : float
        Modification time (seconds since the epoch; the server's clock for a remote cache).
    """

    kind: str
    size: int
    mtime: float


def _local_kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    return "symlink" if stat.S_ISLNK(mode) else "other"


class _LocalStore:
    """The POSIX file system: regular files only, ``flock``'d temporaries and ``os.replace``."""

    remote = False

    @staticmethod
    def read(path: Path, limit: int | None = None) -> bytes | None:
        return _read_regular(path, limit)

    @staticmethod
    def write_atomic(path: Path, data: bytes, shared: bool) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        try:
            # Held until the file is renamed and closed: remove_stale_temporaries never
            # deletes a file that a live writer holds.
            fcntl.flock(fd, fcntl.LOCK_EX)
            if shared:  # the group reads and replaces a shared cache's entries
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

    @staticmethod
    def listdir(path: Path) -> list[str]:
        return os.listdir(path)

    @staticmethod
    def stat(path: Path) -> FileStat:
        """``os.lstat`` (a symbolic link is not followed); raises ``FileNotFoundError``."""
        st = os.lstat(path)
        return FileStat(_local_kind(st.st_mode), st.st_size, st.st_mtime)

    @classmethod
    def scan(cls, directory: Path) -> list[tuple[str, FileStat]]:
        """Each name in ``directory`` (in ``os.listdir``'s order) with its ``stat``; a name
        removed meanwhile is left out."""
        found = []
        for name in os.listdir(directory):
            with contextlib.suppress(FileNotFoundError):
                found.append((name, cls.stat(directory / name)))
        return found

    @staticmethod
    def remove(path: Path) -> None:
        path.unlink()

    @staticmethod
    def rmdir(path: Path) -> None:
        os.rmdir(path)

    @staticmethod
    def probe(directory: Path) -> None:
        fd, probe = tempfile.mkstemp(prefix=".chunkwise-probe.", dir=directory)
        os.close(fd)
        os.unlink(probe)

    @staticmethod
    def temporaries(directory: Path, min_age: float) -> Iterator[Path]:
        try:
            names = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return
        now = time.time()
        for name in names:
            if not _is_our_temporary(name):
                continue
            path = directory / name
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


class RemotePath:
    """A file or directory of a remote cache: ``str()`` is its URL (``root://host//a/b``).

    It has what ``ChunkCache`` and its callers use of ``pathlib.Path`` (``/``, ``name``,
    ``parent``, ``with_name``, ``is_file``, ``is_dir``), and no ``__fspath__``, so that no
    ``os`` function can mistake it for a local path.
    """

    __slots__ = ("path", "store")

    def __init__(self, store: _RemoteStore, path: str) -> None:
        self.store = store
        self.path = path

    def __str__(self) -> str:
        return self.store.url(self.path)

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(self.store, posixpath.join(self.path, name))

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def parent(self) -> RemotePath:
        return RemotePath(self.store, posixpath.dirname(self.path))

    def with_name(self, name: str) -> RemotePath:
        return self.parent / name

    def is_file(self) -> bool:
        return self.store.kind(self) == "file"

    def is_dir(self) -> bool:
        return self.store.kind(self) == "directory"


def _not_found(err: BaseException) -> bool:
    """An XRootD "no such file" (kXR_NotFound, 3011) as fsspec-xrootd words it."""
    text = str(err).lower()
    return "[3011]" in text or "no such file" in text


class _RemoteStore:
    """A directory tree on an XRootD server, through fsspec (``fsspec-xrootd``).

    Each operation is one or a few XRootD requests, each limited to ``REMOTE_TIMEOUT`` seconds,
    under chunkwise's short XRootD connection retries (a dead server fails in seconds, not the
    client's default minutes). Its errors are ``OSError``; "no such file" is
    ``FileNotFoundError``. fsspec's listings cache is off: another client's writes are seen.

    Atomicity is the server's rename: a file is written under a temporary name in the same
    directory (``.<name>.<random>.tmp``, which no reader opens) and then moved onto its name
    (XRootD's ``mv``, a ``rename(2)`` on the server's file system, which replaces the target).
    """

    remote = True

    def __init__(self, url: str) -> None:
        needs_xrootd(f"the root:// cache {url!r}")
        import fsspec

        try:
            fs, path = fsspec.core.url_to_fs(url, use_listings_cache=False, timeout=REMOTE_TIMEOUT)
        except Exception as exc:
            raise CacheError(f"cache {url!r}: not a usable root:// URL ({exc})") from None
        if not path.startswith("/") or "?" in path:
            raise CacheError(
                f"cache {url!r}: give an absolute directory on the server, with two slashes "
                "after the host: root://host//absolute/dir"
            )
        self.fs = fs
        self.url_given = url
        self.root = posixpath.normpath(path)

    def url(self, path: str) -> str:
        return str(self.fs.unstrip_protocol(path))

    @contextlib.contextmanager
    def _requests(self, what: str, path: str) -> Iterator[None]:
        """Fail fast, and turn every error into an OSError naming the operation and the URL."""
        from chunkwise._coffea import _xrootd_fails_fast

        try:
            with _xrootd_fails_fast([self.url_given]):
                yield
        except FileNotFoundError:
            raise
        except Exception as exc:  # fsspec-xrootd raises OSError, the client sometimes others
            if _not_found(exc):
                raise FileNotFoundError(errno.ENOENT, "no such file", self.url(path)) from None
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise OSError(errno.EIO, f"{what} failed: {detail}", self.url(path)) from None

    def info(self, path: RemotePath) -> dict[str, Any] | None:
        """``fs.info`` of ``path``, or None if there is no such file."""
        try:
            with self._requests("stat", path.path):
                return dict(self.fs.info(path.path))
        except FileNotFoundError:
            return None

    def kind(self, path: RemotePath) -> str | None:
        """``"file"``, ``"directory"``, ``"other"``, or None if there is nothing."""
        info = self.info(path)
        return None if info is None else str(info.get("type"))

    def read(self, path: RemotePath, limit: int | None = None) -> bytes | None:
        info = self.info(path)
        if info is None:
            return None
        if info.get("type") != "file":
            raise _Unsafe("not a regular file")
        size = int(info.get("size") or 0)
        if limit is not None and size > limit:
            raise _Unsafe(f"{size} bytes, more than a record can be")
        if size == 0:
            return b""
        blocks = []
        with self._requests("read", path.path):
            # A handle of its own (not fsspec-xrootd's cache of read handles, which could
            # still point at the file that a move has since replaced), closed at once.
            with self.fs.open(path.path, "rb", cache_type="none", size=size) as f:
                left = size
                while left > 0:
                    block = f.read(min(left, REMOTE_BLOCK))
                    if not block:
                        break  # shorter than it was: the verification calls it corrupt
                    blocks.append(block)
                    left -= len(block)
        return b"".join(blocks)

    def write_atomic(self, path: RemotePath, data: bytes, shared: bool) -> None:
        del shared  # permissions are the server's (its authorization), not chunkwise's
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}{TEMP_SUFFIX}")
        try:
            with self._requests("write", tmp.path):
                with self.fs.open(tmp.path, "wb") as f:
                    for start in range(0, len(data), REMOTE_BLOCK):
                        # bytes: the XRootD client takes no memoryview
                        f.write(data[start : start + REMOTE_BLOCK])
            with self._requests("move", path.path):
                self.fs.mv(tmp.path, path.path)
                self.fs.invalidate_cache(path.path)
        except BaseException:
            with contextlib.suppress(Exception):
                with self._requests("remove", tmp.path):
                    self.fs.rm_file(tmp.path)
            raise

    def listdir(self, path: RemotePath) -> list[str]:
        return [name for name, _ in self._listing(path)]

    def _listing(self, path: RemotePath) -> list[tuple[str, dict[str, Any]]]:
        with self._requests("list", path.path):
            items = self.fs.ls(path.path, detail=True)
        if len(items) == 1 and posixpath.normpath(items[0]["name"]) == path.path:
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))
        return [(posixpath.basename(item["name"].rstrip("/")), item) for item in items]

    def stat(self, path: RemotePath) -> FileStat:
        """What the server shows of ``path``; raises ``FileNotFoundError`` if there is none."""
        info = self.info(path)
        if info is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
        return _remote_stat(info)

    def scan(self, directory: RemotePath) -> list[tuple[str, FileStat]]:
        """Each name in ``directory`` with its ``stat``, from one listing request."""
        return [(name, _remote_stat(item)) for name, item in self._listing(directory)]

    def remove(self, path: RemotePath) -> None:
        with self._requests("remove", path.path):
            self.fs.rm_file(path.path)

    def rmdir(self, path: RemotePath) -> None:
        """Remove an empty directory (the server refuses one that is not empty)."""
        with self._requests("rmdir", path.path):
            self.fs.rmdir(path.path)

    def makedirs(self, path: RemotePath) -> None:
        with self._requests("mkdir", path.path):
            self.fs.makedirs(path.path, exist_ok=True)

    def probe(self, directory: RemotePath) -> None:
        probe = directory / f".chunkwise-probe.{secrets.token_hex(8)}"
        with self._requests("write", probe.path):
            with self.fs.open(probe.path, "wb") as f:
                f.write(b"chunkwise")
        self.remove(probe)

    def temporaries(self, directory: RemotePath, min_age: float) -> Iterator[RemotePath]:
        try:
            listing = self._listing(directory)
        except (FileNotFoundError, NotADirectoryError):
            return
        now = time.time()
        for name, item in listing:
            if not _is_our_temporary(name) or item.get("type") != "file":
                continue
            if now - float(item.get("mtime") or now) < max(min_age, REMOTE_STALE_AGE):
                continue
            yield directory / name


def _remote_stat(info: Mapping[str, Any]) -> FileStat:
    kind = str(info.get("type"))
    return FileStat(
        kind if kind in ("file", "directory") else "other",
        int(info.get("size") or 0),
        float(info.get("mtime") or 0.0),
    )


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
        self._store: _LocalStore | _RemoteStore
        if is_remote(root):
            assert isinstance(root, str)
            remote = _RemoteStore(root)
            self._store = remote
            self.root: Path | RemotePath = RemotePath(remote, remote.root)
        else:
            _check_local_root(root)
            self._store = _LocalStore()
            self.root = Path(root)
        self.tag = tag
        self.directory = self.root / tag if tag else self.root
        self.key = key
        self._checked = False

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

    @property
    def manifest_path(self) -> Path | RemotePath:
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

    def _check_remote_directory(self, path: RemotePath, create: bool) -> bool:
        """A remote cache is trusted by its key alone: XRootD shows no owner that could be
        checked, so without a key it is refused before any request is made."""
        if self.key is None:
            raise CacheError(
                f"cache {str(self.root)!r} is remote: chunkwise cannot see who may write "
                "there, so a root:// cache needs a key that authenticates every entry; give "
                "one (cache_key=chunkwise.cache.load_key(FILE) / --cache-key-file FILE)"
            )
        store = self._store
        assert isinstance(store, _RemoteStore)
        try:
            kind = store.kind(path)
            if kind is None and create:
                store.makedirs(path)
                kind = store.kind(path)
        except OSError as err:
            raise CacheError(
                f"cache {str(path)!r}: {err.strerror or err}; check that the server is up and "
                "that you may write there"
            ) from None
        if kind is None:
            return False
        if kind != "directory":
            raise CacheError(f"cache {str(path)!r} is not a directory; give a directory")
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
        check = self._check_remote_directory if self._store.remote else self._check_directory
        exists = check(self.root, create)  # type: ignore[operator]
        if exists and self.tag:
            exists = check(self.directory, create)  # type: ignore[operator]
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
            self._store.probe(self.directory)  # type: ignore[arg-type]
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
            blob = self._store.read(self.path(chunk_hash))
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

    @property
    def _legacy_records(self) -> bool:
        """Whether records of the previous, unauthenticated format are read: only in a local
        cache without a key, whose directories only you can write (see ``check``)."""
        return self.key is None and not self._store.remote

    def _unseal(self, blob: bytes, kind: RecordKind, chunk_hash: str = "") -> dict[str, Any]:
        data, _ = _unseal(
            blob,
            key=self.key,
            kind=kind,
            tag=self.tag,
            chunk_hash=chunk_hash,
            legacy=self._legacy_records,
        )
        return data

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
        except (_Unsafe, OSError, ValueError) as exc:
            if isinstance(exc, OSError) and not self._store.remote:
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

    def read_manifest(self) -> dict[str, Any] | None:
        """The tag's manifest (what went into the tag), or None.

        None when there is none, and when it does not verify: it is then ignored with a
        ``CorruptCacheEntryWarning`` (a forged, torn or copied ``tag.json`` is never used).
        """
        if not self.tag or not self.check():
            return None
        try:
            blob = self._store.read(self.manifest_path, limit=_MAX_SALVAGE_BYTES)
            if blob is None:
                return None
            return self._unseal(blob, "manifest")
        except (_Unsafe, ValueError) as exc:
            why = exc
        except OSError as exc:
            if not self._store.remote:
                raise
            why = exc
        warnings.warn(
            f"chunkwise: ignoring {self.manifest_path}: {why}; it counts as missing (a run "
            "of this tag writes it again; an explicit tag holding entries then needs "
            "--force-tag)",
            CorruptCacheEntryWarning,
            stacklevel=2,
        )
        return None

    def hashes(self) -> Iterator[str]:
        """Yield the hashes that have an entry file (verified or not) in this tag's directory."""
        if self._store.remote and not self.check():
            return
        try:
            names = self._store.listdir(self.directory)
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in sorted(names):
            if name.endswith(ENTRY_SUFFIX) and _is_hash(name[: -len(ENTRY_SUFFIX)]):
                yield name[: -len(ENTRY_SUFFIX)]

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
            return dict(self._store.scan(self.directory))  # type: ignore[arg-type]
        except (FileNotFoundError, NotADirectoryError):
            return {}  # removed since it was checked
        except OSError as err:
            if not self._store.remote:
                raise
            raise CacheError(
                f"cache {str(self.directory)!r}: {err.strerror or err}; check that the server "
                "is up and that you may read there"
            ) from None

    # -- temporary files ------------------------------------------------------------------------
    def temporaries(self, min_age: float = 60.0) -> Iterator[Path | RemotePath]:
        """Yield chunkwise's temporary files in this tag's directory that no writer holds and
        that are older than ``min_age`` seconds: leftovers of killed runs.

        On a remote cache no lock can be seen, so a temporary counts as a leftover only when
        it is older than ``REMOTE_STALE_AGE`` seconds (by the server's modification time).
        """
        if self._store.remote and not self.check():
            return
        yield from self._store.temporaries(self.directory, min_age)

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

    A tag directory is a directory in the root whose name does not start with ``.`` (locally,
    never a symbolic link). Only names and sizes are read, and each tag's ``tag.json`` (JSON,
    never unpickled); nothing is verified (``chunkwise cache verify`` does that).

    Parameters
    ----------
    root : str or os.PathLike
        The cache directory, or a ``root://host//dir`` URL.
    key : bytes, optional
        The cache's key. A root:// cache needs it, as for ``run`` and ``status``: without
        one it is refused before any request.

    Raises
    ------
    CacheError
        If the root is not a trusted directory (see ``ChunkCache.check``), or a root://
        cache's server cannot be reached or cannot list it.
    """
    top = ChunkCache(root, key=key)
    listing = top.contents()
    names = sorted(listing)
    candidates = [
        n
        for n in names
        if not n.startswith(".") and listing[n].kind == "directory"  # no symlinks
    ]
    if any(_ours(n) and n.endswith(ENTRY_SUFFIX) for n in names):
        candidates.insert(0, "")
    summaries = []
    for tag in candidates:
        cache = ChunkCache(root, tag, key=key)
        entries, size, newest = 0, 0, 0.0
        for name, st in (listing if not tag else cache.contents()).items():
            if not _ours(name):
                continue
            size += st.size
            if name.endswith(ENTRY_SUFFIX):
                entries += 1
                newest = max(newest, st.mtime)
        manifest = cache.read_manifest() if tag else None
        processor = str(manifest.get("processor", "?")) if manifest else "?"
        summaries.append(TagSummary(tag, processor, entries, size, newest))
    return summaries


def remove_tag(root: str | os.PathLike[str], tag: str, *, key: bytes | None = None) -> None:
    """Delete a tag directory, and only if everything in it is chunkwise's own.

    Every name in it must be one chunkwise writes (entries, records, ``tag.json`` and its
    temporaries) and a regular file; then each file is removed, and the directory.

    Parameters
    ----------
    root : str or os.PathLike
        The cache directory, or a ``root://host//dir`` URL.
    tag : str
        The tag directory to remove (not ``""``: the flat layout has none).
    key : bytes, optional
        A root:// cache's key, which it needs (it is refused without one before any request).
        A local cache is pruned without a key, and only if it is your own.

    Raises
    ------
    CacheError
        If the directory holds anything chunkwise did not write (it is then left whole), does
        not exist, or cannot be removed (e.g. a root:// cache's server is down).
    """
    cache = ChunkCache(root, tag, key=key if is_remote(root) else None)
    if not tag:
        raise CacheError("the flat layout has no tag directory to remove")
    store = cache._store
    where = str(cache.directory)
    try:
        if store.remote and not cache.check():  # the key, before any request
            raise CacheError(f"{where!r} does not exist")
        if store.stat(cache.directory).kind != "directory":  # type: ignore[arg-type]
            link = "" if store.remote else " (a symlink?)"
            raise CacheError(f"{where!r} is not a directory{link}; left it alone")
        if not cache.check():
            raise CacheError(f"{where!r} does not exist")
        listing = cache.contents()
        foreign = [n for n, st in listing.items() if not _ours(n) or st.kind != "file"]
        if foreign:
            raise CacheError(
                f"{where!r} holds {foreign[0]!r}, which chunkwise did not "
                "write; left it whole: remove it yourself if you mean to"
            )
        for name in listing:
            with contextlib.suppress(FileNotFoundError):
                store.remove(cache.directory / name)  # type: ignore[arg-type]
        store.rmdir(cache.directory)  # type: ignore[arg-type]
    except OSError as err:
        raise CacheError(f"cannot remove {where!r}: {err.strerror or err}") from None
