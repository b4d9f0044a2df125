"""``chunkwise split`` and ``chunkwise hash``: chunk files for a batch system, and their keys."""

from __future__ import annotations

import argparse
import os
import sys

from chunkwise.cli._common import hash_chunks, load, split, split_options, warn_name_mismatch
from chunkwise.errors import OptionError, UsageError
from chunkwise.splitdir import is_split_manifest, write_split

__all__ = ["cmd_hash", "cmd_split"]


def cmd_split(args: argparse.Namespace) -> int:
    """Write each chunk to ``--out``/<hash>.json and the manifest; print the chunk files."""
    fileset = load(args.fileset)
    found = split(fileset, args, args.fileset)
    try:
        manifest = write_split(
            found, args.out, source=args.fileset, options=split_options(args), force=args.force
        )
    except OptionError as err:
        raise UsageError(f"--out {err}") from None
    for entry in manifest["chunks"]:
        print(os.path.join(args.out, entry["file"]))
    n_files = sum(entry["n_files"] for entry in manifest["chunks"])
    print(
        f"wrote {manifest['n_chunks']} chunks ({n_files} files) and manifest.json to {args.out}",
        file=sys.stderr,
    )
    return 0


def cmd_hash(args: argparse.Namespace) -> int:
    """Print 'HASH  PATH' for each chunk file."""
    lines = []
    hashes = []
    for path in args.chunks:
        if is_split_manifest(path):
            continue  # so that `chunkwise hash DIR/*.json` works on a split directory
        (chunk,) = hash_chunks([load(path)], path)
        lines.append(f"{chunk.hash}  {path}")
        hashes.append((path, chunk.hash))
    # Only once every file is read: a bad one later on still gets its one error line alone.
    for path, digest in hashes:
        warn_name_mismatch(path, digest)
    print("\n".join(lines))
    return 0
