"""The records of a cache: salvage and failure records, ``tag.json``, ``split.json`` and
``index.json``, as authenticated JSON.

Record format
-------------
The records (salvage and failure records, ``tag.json``, ``split.json``, ``index.json``) are JSON
objects: their content plus two fields, ``"record": RECORD_FORMAT`` and ``"mac"``, an authentication
tag over the canonical JSON (sorted keys, no spaces, ASCII) of everything else and over where the
record belongs: its kind, its tag and, for salvage and failure records, its chunk hash. The tag is
``"hmac-sha256:<hex>"`` with the cache's key, else ``"sha256:<hex>"``: a plain digest catches a torn
or hand-edited record, not a forger (whoever can write the file can recompute it). A record that
does not verify (torn, edited, forged, written with another key, or copied from another chunk, tag
or kind) is ignored with a ``CorruptCacheEntryWarning``, as if it were missing. Records of the
previous format (no ``record`` field, no tag) are read only from a local cache without a key, which
only you can write; a keyed or root:// cache ignores them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from chunkwise.errors import CacheError

__all__ = ["RECORD_FORMAT", "RecordKind", "SalvageRecord", "load_key"]

#: Version of the records (salvage and failure records, ``tag.json``): JSON objects with two
#: fields added, ``"record"`` (this string) and ``"mac"``, the authentication tag.
RECORD_FORMAT = "chunkwise-record-1"
#: The most bytes a record (or ``tag.json``) may have; a larger file is not read.
_MAX_SALVAGE_BYTES = 256 * 1024 * 1024


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


def _digest(key: bytes | None, *parts: bytes | memoryview) -> bytes:
    h = hmac.new(key, digestmod=hashlib.sha256) if key is not None else hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.digest()


# -- records: JSON with an authentication tag ---------------------------------------------------
RecordKind = Literal["salvage", "failure", "manifest", "split", "index"]
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
        if kind in ("index", "split"):  # chunkwise has written these sealed from the start
            raise _Unverified("it has no authentication tag: chunkwise did not write it")
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
