"""Where a cache's files are: one store per protocol, behind one interface.

``open_store`` picks the store of a cache root: ``chunkwise.store.local.LocalStore`` for a local
directory, ``chunkwise.store.xrootd.XRootDStore`` for a ``root://`` URL. Both have the interface
of ``chunkwise.store.base.Store``; the cache (``chunkwise.cache``) goes through it for every file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chunkwise.errors import CacheError
from chunkwise.extras import REMOTE_SCHEMES
from chunkwise.store.base import TEMP_SUFFIX, FileStat, Store, Unsafe
from chunkwise.store.local import LocalStore
from chunkwise.store.xrootd import RemotePath, XRootDStore

__all__ = [
    "TEMP_SUFFIX",
    "FileStat",
    "LocalStore",
    "RemotePath",
    "Store",
    "Unsafe",
    "XRootDStore",
    "is_remote",
    "open_store",
]


def is_remote(root: str | os.PathLike[str]) -> bool:
    """True for a ``root://`` (or ``roots://``) cache URL, the one kind of remote cache."""
    return isinstance(root, str) and root.startswith(REMOTE_SCHEMES)


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


def open_store(root: str | os.PathLike[str]) -> tuple[Store[Any], Path | RemotePath]:
    """The store of a cache root, and the root as that store's path. Touches nothing.

    Parameters
    ----------
    root : str or os.PathLike
        A local directory, or a ``root://host//absolute/dir`` URL (a string).

    Raises
    ------
    CacheError
        If ``root`` is a URL of another kind (or a root:// one made a ``Path``), or a root://
        URL that names no absolute directory on its server.
    chunkwise.errors.MissingExtraError
        For a root:// URL, if the packages of chunkwise's ``xrootd`` extra are not installed.
    """
    if is_remote(root):
        assert isinstance(root, str)
        remote = XRootDStore(root)
        return remote, RemotePath(remote, remote.root)
    _check_local_root(root)
    return LocalStore(), Path(root)
