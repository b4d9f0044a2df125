"""What every store of a cache offers: the seam between the cache and where its files are.

A store reads a whole file (bounded by its size, or a limit), writes a temporary file and moves it
into place, lists a directory, stats, removes, and checks that a directory may be trusted.
``chunkwise.store.local.LocalStore`` is the POSIX file system,
``chunkwise.store.xrootd.XRootDStore`` a directory tree on an XRootD server; the cache
(``chunkwise.cache``) holds one of them and knows nothing of which, beyond the three flags of
``Store``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

__all__ = ["TEMP_SUFFIX", "FileStat", "Store", "Unsafe"]

#: The suffix of the temporary files a store writes and then moves onto their names.
TEMP_SUFFIX = ".tmp"


class Unsafe(Exception):
    """A file in the cache that must not be read (a symlink, FIFO, device, oversized...)."""


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


P = TypeVar("P")


class Store(Protocol[P]):
    """The interface of a store, over its own kind of path ``P`` (``pathlib.Path`` or
    ``RemotePath``).

    Its errors are ``OSError`` (``FileNotFoundError`` for a name that does not exist), and
    ``chunkwise.errors.CacheError`` where a method says so.

    Attributes
    ----------
    remote : bool
        True for a store on a server (a root:// cache): only for how messages word things.
    needs_key : bool
        True when the store shows no owner or mode that could be checked, so that only a key
        makes it trusted: the key is checked before any request, and records of the previous,
        unauthenticated format are never read from it.
    transient_errors : bool
        True when its ``OSError`` can be a server that is down or slow rather than a problem
        of the cache: a record it cannot read is then ignored with a warning, like a torn one.
        A local ``OSError`` is raised as it is.
    """

    remote: bool
    needs_key: bool
    transient_errors: bool

    def read(self, path: P, limit: int | None = None) -> bytes | None:
        """The bytes of a regular file (at most its size, or ``Unsafe`` over ``limit``), or None
        if there is none; ``Unsafe`` for anything that must not be read."""

    def write_atomic(self, path: P, data: bytes, shared: bool) -> None:
        """Write ``data`` to a temporary file in ``path``'s directory and move it onto ``path``
        (``shared``: the cache is shared by a group, with a key)."""

    def listdir(self, path: P) -> list[str]:
        """The names in a directory."""

    def stat(self, path: P) -> FileStat:
        """What the store shows of ``path`` (a symbolic link is not followed)."""

    def scan(self, directory: P) -> list[tuple[str, FileStat]]:
        """Each name in ``directory`` with its ``stat``."""

    def kinds(self, directory: P) -> dict[str, str]:
        """Each name in ``directory`` with its kind (``FileStat.kind``), in one listing."""

    def remove(self, path: P) -> None:
        """Remove a file."""

    def rmdir(self, path: P) -> None:
        """Remove an empty directory."""

    def probe(self, directory: P) -> None:
        """Write and remove a file in ``directory``: raises ``OSError`` if it is not writable."""

    def temporaries(self, directory: P, min_age: float, ours: Callable[[str], bool]) -> Iterator[P]:
        """The temporary files in ``directory`` whose names ``ours`` accepts, that no writer
        holds and that are older than ``min_age`` seconds: leftovers of killed runs."""

    def check_directory(self, path: P, create: bool, key: bytes | None) -> bool:
        """Check that one directory of the cache may be trusted (with ``key``, the cache's key,
        if any), creating it if ``create``; False if it does not exist (and ``create`` is off).

        Raises ``CacheError`` for anything that is not a trusted directory."""
