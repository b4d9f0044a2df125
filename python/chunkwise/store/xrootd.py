"""A cache's store on an XRootD server: ``XRootDStore``, for a ``root://`` cache.

A cache on an XRootD server
---------------------------
``ChunkCache("root://host//absolute/dir", tag, key=key)`` keeps the same layout and the same
bytes on a server, through fsspec (``fsspec-xrootd``), for sites with no shared file system.
All file access goes through a small storage seam (``chunkwise.store.base.Store``),
``chunkwise.store.local.LocalStore`` (the POSIX rules of ``chunkwise.cache``, unchanged) or
``XRootDStore``: read a whole file (bounded by its size, or a limit), write a temporary and move
it into place, list a directory, stat, remove, mkdir.

- Trust: XRootD shows no owner or mode that chunkwise could check, so a remote cache is
  trusted by its key alone. Without a key it is refused (``CacheError``) before any request.
  Every entry is verified exactly as a local one (LZ4 checksum, the footer's HMAC-SHA256 with
  the key, ``_check_info``) before anything is unpickled; a truncated or forged entry is
  corrupt and recomputed. Records and ``tag.json`` are JSON, never unpickled, and carry an
  HMAC-SHA256 with the key (see ``chunkwise.cache.records``): one forged, torn or copied from
  elsewhere is ignored. Not authenticated: the listing of names (a file can be removed, or an
  old record with a valid HMAC put back under its own name, which can make a run retry files
  or ``status`` show an old error, never a wrong result).
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
import posixpath
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from chunkwise.errors import CacheError
from chunkwise.extras import needs_xrootd
from chunkwise.store.base import TEMP_SUFFIX, FileStat, Unsafe

__all__ = ["REMOTE_BLOCK", "REMOTE_STALE_AGE", "REMOTE_TIMEOUT", "RemotePath", "XRootDStore"]

#: Seconds each request to a remote cache's server may take (fsspec-xrootd's ``timeout``).
REMOTE_TIMEOUT = 60
#: A remote temporary file older than this (seconds, by the server's clock) is a leftover: no
#: lock can be seen over XRootD, and no single entry takes an hour to write.
REMOTE_STALE_AGE = 3600.0
#: Bytes per read or write request to a remote cache, so that each request of a large entry
#: finishes well within ``REMOTE_TIMEOUT``.
REMOTE_BLOCK = 8 * 1024 * 1024


class RemotePath:
    """A file or directory of a remote cache: ``str()`` is its URL (``root://host//a/b``).

    It has what ``ChunkCache`` and its callers use of ``pathlib.Path`` (``/``, ``name``,
    ``parent``, ``with_name``, ``is_file``, ``is_dir``), and no ``__fspath__``, so that no
    ``os`` function can mistake it for a local path.
    """

    __slots__ = ("path", "store")

    def __init__(self, store: XRootDStore, path: str) -> None:
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


class XRootDStore:
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
    needs_key = True  # XRootD shows no owner or mode: the key is the only trust
    transient_errors = True

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
        from chunkwise.retry import _xrootd_fails_fast

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
            raise Unsafe("not a regular file")
        size = int(info.get("size") or 0)
        if limit is not None and size > limit:
            raise Unsafe(f"{size} bytes, more than a record can be")
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
        """Each name in ``directory`` with its ``stat``, from one listing request.

        Raises
        ------
        FileNotFoundError, NotADirectoryError
            If ``directory`` is not there, or not a directory.
        CacheError
            If the server cannot list it (it is down, or you may not read there).
        """
        try:
            listing = self._listing(directory)
        except (FileNotFoundError, NotADirectoryError):
            raise
        except OSError as err:
            raise CacheError(
                f"cache {str(directory)!r}: {err.strerror or err}; check that the server "
                "is up and that you may read there"
            ) from None
        return [(name, _remote_stat(item)) for name, item in listing]

    def kinds(self, directory: RemotePath) -> dict[str, str]:
        """Each name in ``directory`` with its kind, from one listing request (see ``scan``)."""
        return {name: info.kind for name, info in self.scan(directory)}

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

    def temporaries(
        self, directory: RemotePath, min_age: float, ours: Callable[[str], bool]
    ) -> Iterator[RemotePath]:
        try:
            listing = self._listing(directory)
        except (FileNotFoundError, NotADirectoryError):
            return
        now = time.time()
        for name, item in listing:
            if not ours(name) or item.get("type") != "file":
                continue
            if now - float(item.get("mtime") or now) < max(min_age, REMOTE_STALE_AGE):
                continue
            yield directory / name

    def check_directory(self, path: RemotePath, create: bool, key: bytes | None) -> bool:
        """A remote cache is trusted by its key alone: XRootD shows no owner that could be
        checked, so without a key it is refused before any request is made."""
        if key is None:
            raise CacheError(
                f"cache {self.url(self.root)!r} is remote: chunkwise cannot see who may write "
                "there, so a root:// cache needs a key that authenticates every entry; give "
                "one (cache_key=chunkwise.cache.load_key(FILE) / --cache-key-file FILE)"
            )
        try:
            kind = self.kind(path)
            if kind is None and create:
                self.makedirs(path)
                kind = self.kind(path)
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


def _remote_stat(info: Mapping[str, Any]) -> FileStat:
    kind = str(info.get("type"))
    return FileStat(
        kind if kind in ("file", "directory") else "other",
        int(info.get("size") or 0),
        float(info.get("mtime") or 0.0),
    )
