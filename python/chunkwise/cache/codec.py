"""The bytes of a cache entry: writing them, and verifying them before anything is unpickled.

Entry format
------------
An entry is one LZ4 frame with a content checksum and its content size in the header, holding
the output pickled with cloudpickle (as ``coffea.util.save`` writes it, so ``coffea.util.load``
reads it), a pickled ``dict`` of chunkwise bookkeeping (format, hash, tag, events and sums of
weights per dataset),
and a 64-byte footer: a magic string, the two lengths, and a digest of both pickles: SHA-256,
or, for a cache shared with a key, HMAC-SHA256 with that key.
"""

from __future__ import annotations

import hmac
import math
import pickle
import struct
from collections.abc import Mapping
from typing import Any, Literal

from chunkwise.cache.index import KEY_CHARS
from chunkwise.cache.records import _digest

__all__ = ["CACHE_FORMAT", "decode_entry", "encode_entry", "unpickle_entry"]

#: Version of the entry layout; part of every tag, so a format change never reads old entries.
CACHE_FORMAT = "chunkwise-cache-2"

_MAGIC = b"\x00chunkwise-entry2"  # 17 bytes
_FOOTER = struct.Struct("<17sQQ32s")  # magic, len(output pickle), len(bookkeeping), digest
_LZ4_MAX_RATIO = 255  # no LZ4 frame decompresses to more than this many bytes per byte read


def encode_entry(
    pickled_output: bytes,
    info: Mapping[str, Any] | None,
    *,
    chunk_hash: str,
    tag: str,
    key: bytes | None,
) -> bytes:
    """The bytes of an entry: ``pickled_output`` (``cloudpickle.dumps``), the bookkeeping ``info``
    with ``format``, ``hash`` and ``tag`` set, and the footer with their digest (with ``key``,
    if any), in one LZ4 frame."""
    import lz4.frame

    meta = dict(info or {})
    meta.update(format=CACHE_FORMAT, hash=chunk_hash, tag=tag)
    trailer = pickle.dumps(meta, protocol=pickle.HIGHEST_PROTOCOL)
    footer = _FOOTER.pack(
        _MAGIC, len(pickled_output), len(trailer), _digest(key, pickled_output, trailer)
    )
    return lz4.frame.compress(
        b"".join((pickled_output, trailer, footer)), content_checksum=True, store_size=True
    )


def decode_entry(
    blob: bytes, *, key: bytes | None, flat: bool
) -> tuple[Literal["hit", "corrupt"], Any]:
    """Verify an entry's bytes: ("hit", (output pickle, bookkeeping pickle or None)) or
    ("corrupt", why). Nothing is unpickled here.

    ``flat``: a file without chunkwise's footer is a hit, its whole content the output pickle
    (the notebook's flat layout, in a cache without a key).
    """
    import lz4.frame

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
        if flat:
            # The notebook's flat layout: coffea.util.save's entries, in a directory only
            # you can write (with a key, only authenticated entries are ever read).
            return "hit", (content, None)
        return "corrupt", "it has no chunkwise footer (not written by chunkwise)"
    _, n_output, n_info, digest = _FOOTER.unpack(footer)
    if n_output + n_info + _FOOTER.size != len(content):
        return "corrupt", "its footer does not match its length"
    body = memoryview(content)[: n_output + n_info]
    if not hmac.compare_digest(digest, _digest(key, body)):
        keyed = "this cache's key" if key is not None else "no key"
        return "corrupt", f"its digest does not match ({keyed}): not written by this cache"
    return "hit", (content[:n_output], content[n_output : n_output + n_info])


def unpickle_entry(
    output_bytes: bytes, info_bytes: bytes | None, chunk_hash: str, tag: str
) -> tuple[Any, dict[str, Any]]:
    """The output and the bookkeeping of a verified entry (``decode_entry``'s hit), unpickled.

    Raises
    ------
    Exception
        Whatever unpickling raises, or ``ValueError`` if the bookkeeping is not what chunkwise
        wrote for ``chunk_hash`` under ``tag``: the entry is corrupt.
    """
    info: dict[str, Any] = {}
    if info_bytes is not None:
        info = pickle.loads(info_bytes)
        _check_info(info, chunk_hash, tag)
    return pickle.loads(output_bytes), info


def unpickle_info(info_bytes: bytes | None, chunk_hash: str, tag: str) -> dict[str, Any]:
    """The bookkeeping of a verified entry alone, checked as ``unpickle_entry`` checks it (the
    output is not unpickled). ``{}`` for an entry without chunkwise's bookkeeping."""
    if info_bytes is None:
        return {}
    info = pickle.loads(info_bytes)
    _check_info(info, chunk_hash, tag)
    return info


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
    files = info.get("files", "")  # the keys of its files (chunkwise.cache.index)
    if not isinstance(files, str) or len(files) % KEY_CHARS:
        raise ValueError("its file keys are malformed")
    for field in ("sums", "gaps"):  # gaps: files without generator weights, by why
        if not _sums_shaped(info.get(field, {})):
            raise ValueError(f"its {'sums of weights' if field == 'sums' else field} are malformed")


def _sums_shaped(sums: Any) -> bool:
    """``{dataset: {name: [finite total, files]}}``, as chunkwise writes sums."""
    return isinstance(sums, dict) and all(
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
    )
