"""A cache's tag directories as a whole: ``list_tags`` (``chunkwise cache ls``) and
``remove_tag`` (``chunkwise cache prune``)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from chunkwise.cache.chunk_cache import ChunkCache
from chunkwise.cache.directory import (
    ENTRY_SUFFIX,
    FAILURE_SUFFIX,
    MANIFEST_NAME,
    SALVAGE_SUFFIX,
    SPLIT_NAME,
    _is_hash,
    _is_our_temporary,
)
from chunkwise.cache.index import INDEX_NAME
from chunkwise.errors import CacheError
from chunkwise.store import is_remote

__all__ = ["TagSummary", "list_tags", "remove_tag"]


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


def _ours(name: str) -> bool:
    """A file name chunkwise writes in a tag directory."""
    if name in (MANIFEST_NAME, SPLIT_NAME, INDEX_NAME) or _is_our_temporary(name):
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
        if not cache._may_request():  # the key, before any request
            raise CacheError(f"{where!r} does not exist")
        if store.stat(cache.directory).kind != "directory":
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
                store.remove(cache.directory / name)
        store.rmdir(cache.directory)
    except OSError as err:
        raise CacheError(f"cannot remove {where!r}: {err.strerror or err}") from None
