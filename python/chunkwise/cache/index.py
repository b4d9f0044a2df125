"""The index of a tag directory: what its records and entries hold, so that ``status`` need not
open them.

``<root>/<tag>/index.json`` is a record (authenticated like the others, bound to its tag): for
each salvage or failure record, its size and modification time as the directory listed them and
the bad files it names; for each chunk entry of several files, the keys of its files. It is an
accelerator, never the truth: the listing says what exists, a record whose size or time differs
from its line (rewritten since) is read again, an entry the index does not describe is read
when its files are needed, and an index that is torn, edited, or from another tag or key is
ignored and written anew. A run given a fileset writes it when it finishes; ``status`` writes it
when it had to read what the index did not describe.

A file's key is the first ``KEY_CHARS`` hex digits of its part hash (the hash of the chunk of
that one file, ``Chunk.part_files``): it names the file, its dataset and their metadata, as the
cache keys do, in 16 characters instead of a path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["INDEX_NAME", "KEY_CHARS", "IndexedRecord", "TagIndex", "file_keys", "split_keys"]

INDEX_NAME = "index.json"
#: Hex digits of a part hash that key a file in the index: 64 bits, so that two files of even
#: 10^8 collide with a probability below 10^-3.
KEY_CHARS = 16


def file_keys(part_hashes: Iterable[str]) -> str:
    """The keys of a chunk's files, as the index (and an entry's ``info["files"]``) holds them:
    one string, the sorted keys one after another."""
    return "".join(sorted(h[:KEY_CHARS] for h in part_hashes))


def split_keys(keys: str) -> list[str]:
    """The keys in one of ``file_keys``' strings."""
    return [keys[i : i + KEY_CHARS] for i in range(0, len(keys), KEY_CHARS)]


@dataclass(frozen=True)
class IndexedRecord:
    """One record as the index describes it: valid while the listing shows this size and time."""

    size: int
    mtime: float
    bad_files: dict[str, dict[str, str]]


@dataclass
class TagIndex:
    """What ``index.json`` holds.

    Attributes
    ----------
    records : dict
        ``{record file name: IndexedRecord}``.
    entries : dict
        ``{chunk hash: file_keys(...)}`` for entries of several files.
    """

    records: dict[str, IndexedRecord] = field(default_factory=dict)
    entries: dict[str, str] = field(default_factory=dict)

    def bad_files(self, name: str, size: int, mtime: float) -> dict[str, dict[str, str]] | None:
        """The bad files of a listed record, if the index describes it as listed."""
        known = self.records.get(name)
        if known is None or known.size != size or known.mtime != mtime:
            return None
        return known.bad_files

    def keep_only(self, names: Iterable[str], hashes: Iterable[str]) -> None:
        """Forget what is no longer listed."""
        names, hashes = set(names), set(hashes)
        self.records = {n: r for n, r in self.records.items() if n in names}
        self.entries = {h: k for h, k in self.entries.items() if h in hashes}

    def to_dict(self) -> dict[str, Any]:
        """The index's content, as ``TagDirectory.write_index`` seals it."""
        return {
            "records": {
                name: {"size": r.size, "mtime": r.mtime, "bad_files": r.bad_files}
                for name, r in sorted(self.records.items())
            },
            "entries": dict(sorted(self.entries.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TagIndex:
        """Parse ``to_dict``'s output, as a verified index holds it.

        Raises
        ------
        ValueError
            If ``data`` is not an index's content.
        """
        records, entries = data.get("records"), data.get("entries")
        if not isinstance(records, dict) or not isinstance(entries, dict):
            raise ValueError("not a chunkwise index")
        index = cls()
        for name, r in records.items():
            bad = r.get("bad_files") if isinstance(r, dict) else None
            if not (
                isinstance(bad, dict)
                and all(isinstance(p, dict) for p in bad.values())
                and isinstance(r.get("size"), int)
                and isinstance(r.get("mtime"), (int, float))
            ):
                raise ValueError(f"its line for {name!r} is malformed")
            index.records[name] = IndexedRecord(r["size"], float(r["mtime"]), bad)
        for chunk_hash, keys in entries.items():
            if not isinstance(keys, str) or len(keys) % KEY_CHARS:
                raise ValueError(f"its line for entry {chunk_hash!r} is malformed")
            index.entries[chunk_hash] = keys
        return index
