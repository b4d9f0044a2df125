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
``<root>/<tag>/split.json``
    The split options of the last runs that split a fileset here: ``status`` splits with them
    when it is given none.
``<root>/<tag>/index.json``
    What the records and the entries of several files hold (bad files; the keys of the files),
    so that ``status`` reads neither (see ``chunkwise.cache.index``). Only an accelerator.

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
``remove_stale_temporaries`` deletes. Directories this package creates are mode 0o700, entries
0o600.

Modules
-------
``chunkwise.cache.chunk_cache``
    ``ChunkCache``, one tag directory's entries and records, and ``CacheEntry``.
``chunkwise.cache.directory``
    ``TagDirectory``, the base of ``ChunkCache``: a tag directory as a whole (its trust,
    listing, leftover temporaries and manifest), and the names of the layout.
``chunkwise.cache.codec``
    The entry format: the bytes of an entry and their verification.
``chunkwise.cache.index``
    ``TagIndex``, the content of ``index.json``, and the keys that name files in it.
``chunkwise.cache.records``
    The record format (salvage and failure records, ``tag.json``), ``SalvageRecord`` and
    ``load_key``.
``chunkwise.cache.housekeeping``
    ``list_tags`` and ``remove_tag``.
``chunkwise.store``
    Where the files are: the local file system, or an XRootD server (see
    ``chunkwise.store.xrootd`` for a cache on one).
"""

from __future__ import annotations

from chunkwise.cache.chunk_cache import CacheEntry, ChunkCache
from chunkwise.cache.codec import CACHE_FORMAT
from chunkwise.cache.directory import (
    ENTRY_SUFFIX,
    FAILURE_SUFFIX,
    MANIFEST_NAME,
    SALVAGE_SUFFIX,
    SPLIT_NAME,
)
from chunkwise.cache.housekeeping import TagSummary, list_tags, remove_tag
from chunkwise.cache.records import RECORD_FORMAT, SalvageRecord, load_key
from chunkwise.errors import CacheError, CorruptCacheEntryWarning
from chunkwise.store import TEMP_SUFFIX as TEMP_SUFFIX
from chunkwise.store import FileStat as FileStat
from chunkwise.store import RemotePath as RemotePath
from chunkwise.store import is_remote as is_remote

__all__ = [
    "CACHE_FORMAT",
    "RECORD_FORMAT",
    "ENTRY_SUFFIX",
    "MANIFEST_NAME",
    "FAILURE_SUFFIX",
    "SALVAGE_SUFFIX",
    "SPLIT_NAME",
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
