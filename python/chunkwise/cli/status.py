"""``chunkwise status``: how much of a fileset is in the cache; runs nothing, and imports
coffea only to derive the tag from ``--processor``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from chunkwise.cache_status import find_tag, status, status_cache
from chunkwise.cli._common import (
    EXIT_INCOMPLETE,
    EXIT_OK,
    below,
    cache_key,
    check_output_file,
    check_split,
    good_enough,
    load,
    min_completeness,
    split_given,
    split_options,
    write_json,
)
from chunkwise.errors import CacheError, UsageError, one_line
from chunkwise.filesets import hash_in_name
from chunkwise.tag import tag_of

__all__ = ["cmd_status"]


def _resolve_tag(args: argparse.Namespace) -> str:
    """The cache tag status reads: --tag, else derived from --processor, else the only one."""
    if args.tag is not None:
        return args.tag
    if args.processor is not None:
        from chunkwise.cli._processor import processor_manifest  # coffea: only for --processor

        return tag_of(processor_manifest(args))
    try:
        return find_tag(args.cache, key=cache_key(args))
    except CacheError as err:
        raise UsageError(str(err)) from None
    except NotADirectoryError:
        raise UsageError(f"--cache {args.cache!r} is a file; give the cache directory") from None
    except ValueError as err:
        raise UsageError(
            f"--cache: {err} with --tag, or give --processor (and the Runner settings) to derive it"
        ) from None


def cmd_status(args: argparse.Namespace) -> int:
    """Look each file up in the cache; print the table (or the incomplete hashes)."""
    fileset = load(args.fileset)
    given = split_given(args)
    if given:
        check_split(fileset, args, args.fileset)
    if os.path.exists(args.cache) and not os.path.isdir(args.cache):
        raise UsageError(f"--cache {args.cache!r} is a file; give the cache directory")
    check_output_file(args.write_remaining, "--write-remaining", (args.fileset,))
    threshold = min_completeness(args.min_completeness)
    tag = _resolve_tag(args)
    try:
        cache = status_cache(args.cache, tag, cache_key(args))
    except ValueError as err:
        raise UsageError(f"--tag: {err}") from None
    try:
        # Without split options, status splits as the last run here did (it recorded them);
        # a chunk file that 'split' wrote is the one chunk it is, as for 'run'.
        split = split_options(args) if given else None
        looked_up: Any = fileset
        if split is None and hash_in_name(args.fileset) is not None:
            looked_up = [fileset]
        report = status(looked_up, cache, split=split, verify=args.verify)
    except (ValueError, TypeError) as err:
        raise UsageError(f"{args.fileset}: {one_line(err)}") from None
    except CacheError as err:
        raise UsageError(str(err)) from None
    if not report.overall.files:
        raise UsageError(
            f"{args.fileset}: no files to look up with the split {report.split.describe()}; "
            "check the fileset and the split options"
        )
    if args.list_incomplete:
        for digest in report.incomplete:
            print(digest)
    else:
        print(report.summary())
    if args.write_remaining is not None:
        remaining = report.remaining_fileset(fileset)
        write_json(remaining, args.write_remaining)
        n = sum(
            len(data["files"] if isinstance(data, Mapping) else data) for data in remaining.values()
        )
        print(
            f"wrote the {n} files not done ({len(remaining)} datasets) to "
            f"{args.write_remaining}" + ("" if n else ": nothing remains"),
            file=sys.stderr,
        )
    if report.complete:
        return EXIT_OK
    fractions = {d: row.fraction for d, row in report.datasets.items()}
    n_left = report.overall.files - report.overall.files_done
    if good_enough("status", threshold, fractions, f"{n_left} files are not done"):
        return EXIT_OK
    if threshold is not None:
        below("status", threshold, fractions)
    return EXIT_INCOMPLETE
