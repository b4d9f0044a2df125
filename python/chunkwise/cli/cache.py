"""``chunkwise cache ls|verify|prune|explain``: look after a cache directory of ``run``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from chunkwise.cache import ChunkCache, is_remote, list_tags, remove_tag
from chunkwise.cli._common import EXIT_INCOMPLETE, EXIT_OK, cache_call, cache_key
from chunkwise.errors import CacheError, UsageError
from chunkwise.table import format_table
from chunkwise.tag import explain, tag_of

__all__ = ["cmd_explain", "cmd_ls", "cmd_prune", "cmd_verify", "size"]


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")  # pragma: no cover


def _tag_cache(root: str, tag: str, key: bytes | None, what: str) -> ChunkCache:
    """The cache of one tag; a tag that is not a directory name is a usage error."""
    try:
        return ChunkCache(root, tag, key=key)
    except CacheError as err:
        raise UsageError(str(err)) from None
    except ValueError as err:
        raise UsageError(f"{what}: {err}") from None


def cmd_ls(args: argparse.Namespace) -> int:
    """List the tags: processor, entries, size, age."""
    key = cache_key(args)
    tags = cache_call(lambda: list_tags(args.cache, key=key))
    if not tags:
        print(f"{args.cache}: no cache here yet")
        return EXIT_OK
    now = time.time()
    rows = [
        (
            t.tag or "(flat)",
            t.processor,
            str(t.entries),
            size(t.bytes),
            _age(now - t.newest) if t.newest else "-",
        )
        for t in tags
    ]
    print(format_table(("tag", "processor", "entries", "size", "newest"), rows, "llrrr"))
    return EXIT_OK


def _current_tags(args: argparse.Namespace) -> set[str]:
    keep = set(args.keep or ())
    if args.processor is not None:
        from chunkwise.cli._processor import processor_manifest  # coffea: only for --processor

        keep.add(tag_of(processor_manifest(args)))
    if not keep:
        raise UsageError("say which tag to keep: --keep TAG, or --processor MODULE:CLASS")
    return keep


def _prune_key(args: argparse.Namespace) -> bytes | None:
    """The key prune uses: a root:// cache's (it needs one, as for every command), and none
    for a local cache, which is pruned only if it is your own (a key authenticates entries;
    it does not make a group's directories yours to delete)."""

    if is_remote(args.cache):
        return cache_key(args)
    if args.cache_key_file is not None:
        raise UsageError(
            "--cache-key-file: only a root:// cache is pruned with a key; a local cache is "
            "pruned without one, and only if it is your own"
        )
    return None


def cmd_prune(args: argparse.Namespace) -> int:
    """Remove every tag but the ones to keep (only what chunkwise wrote)."""

    keep = _current_tags(args)
    key = _prune_key(args)
    tags = [t for t in cache_call(lambda: list_tags(args.cache, key=key)) if t.tag]
    if not any(t.tag in keep for t in tags):
        raise UsageError(
            f"--keep: none of {', '.join(sorted(keep))} is in {args.cache}; nothing removed "
            "(check the tag with 'chunkwise cache ls')"
        )
    status = EXIT_OK
    for t in tags:
        if t.tag in keep:
            continue
        if args.dry_run:
            print(f"would remove {t.tag} ({t.entries} entries, {size(t.bytes)})")
            continue
        try:
            remove_tag(args.cache, t.tag, key=key)
        except CacheError as err:
            print(f"chunkwise cache prune: kept {t.tag}: {err}", file=sys.stderr)
            status = EXIT_INCOMPLETE
            continue
        print(f"removed {t.tag} ({t.entries} entries, {size(t.bytes)})")
    return status


def cmd_explain(args: argparse.Namespace) -> int:
    """Say what differs between two tags, or a tag and the current processor."""
    key = cache_key(args)

    def manifest_of(tag: str) -> dict[str, Any]:
        cache = _tag_cache(args.cache, tag, key, "tag")
        found = cache_call(cache.read_manifest)
        if found is None:
            raise UsageError(
                f"{cache.directory}: no tag.json that verifies; it was not written by this "
                "chunkwise (with this cache's key, if it has one)"
            )
        return found

    old = manifest_of(args.old)
    if args.new is not None:
        new, name = manifest_of(args.new), args.new
    elif args.processor is not None:
        from chunkwise.cli._processor import processor_manifest  # coffea: only for --processor

        new = processor_manifest(args)
        name = f"the current {args.processor}"
    else:
        raise UsageError("compare with a second TAG, or with --processor MODULE:CLASS")
    lines = explain(old, new)
    if not lines:
        print(f"{args.old} and {name}: nothing differs")
        return EXIT_OK
    print(f"from {args.old} to {name}:")
    for line in lines:
        print(f"  {line}")
    return EXIT_INCOMPLETE


def cmd_verify(args: argparse.Namespace) -> int:
    """Check every entry without unpickling it."""

    key = cache_key(args)
    tags = [args.tag] if args.tag is not None else [t.tag for t in cache_call(
        lambda: list_tags(args.cache, key=key)
    )]  # fmt: skip
    bad = 0
    for tag in tags:
        cache = _tag_cache(args.cache, tag, key, "--tag")
        counts = {"cached": 0, "corrupt": 0}
        for digest in cache_call(lambda c=cache: list(c.hashes())):
            state = cache_call(lambda c=cache, d=digest: c.status(d))
            if state == "corrupt":
                print(f"corrupt: {cache.path(digest)}")
            counts["cached" if state == "cached" else "corrupt"] += 1
        stale = sum(1 for _ in cache.temporaries())
        bad += counts["corrupt"]
        print(
            f"{tag or '(flat)'}: {counts['cached']} entries verify, {counts['corrupt']} corrupt"
            + (f", {stale} stale temporary files" if stale else "")
        )
    return EXIT_INCOMPLETE if bad else EXIT_OK
