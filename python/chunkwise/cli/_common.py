"""What the commands share: reading a fileset and splitting it by the options, the checks of
the files a command will write, the cache key, and the exit statuses. Every error here is a
``UsageError``: one line, exit status 2. Nothing here imports coffea."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from chunkwise import _core
from chunkwise.atomic import atomic_write
from chunkwise.cache import load_key
from chunkwise.chunks import Chunk, SplitOptions, make_chunks
from chunkwise.errors import CacheError, FilesetError, UsageError, one_line
from chunkwise.filesets import hash_in_name, load_fileset, name_mismatch

#: Exit statuses (see README, "Command line").
EXIT_OK = 0  # complete: every file is in the result (status: every chunk is done)
EXIT_INCOMPLETE = 1  # bad files, or chunks not done yet
EXIT_USAGE = 2  # bad input or configuration: nothing was run or written
EXIT_CACHE = 3  # run: the result is complete, but the cache could not be written
EXIT_BUG = 4  # run: the processor raised an error outside skipbadfiles (a bug)


# ----------------------------------------------------------------------------- input


def load(path: str, check_name: bool = False) -> dict[str, Any]:
    """Load a fileset file; bad ones raise UsageError.

    With ``check_name``, a chunk file named ``<hash>.json`` whose content hashes otherwise (it
    was edited after split) gets a warning line on stderr; loading goes on.
    """
    try:
        fileset = load_fileset(path)
    except FilesetError as err:
        raise UsageError(str(err)) from None
    if check_name and hash_in_name(path) is not None:
        try:
            digest = _core.hash_fileset(fileset)
        except (ValueError, TypeError):
            pass  # not hashable as it is: splitting it reports why
        else:
            warn_name_mismatch(path, digest)
    return fileset


def warn_name_mismatch(path: str, digest: str) -> None:
    """A warning line on stderr when a ``<hash>.json`` chunk file's name is not its hash."""
    message = name_mismatch(path, digest)
    if message is not None:
        print(f"chunkwise: warning: {message}", file=sys.stderr)


def split(fileset: dict[str, Any], args: argparse.Namespace, source: str) -> list[Chunk]:
    """Split ``fileset`` with the split options in ``args``; bad options raise UsageError."""
    check_split(fileset, args, source)
    try:
        filesets = split_options(args).split(fileset)
    except (ValueError, TypeError) as err:
        raise UsageError(f"{source}: {one_line(err)}") from None
    if not filesets:
        raise UsageError(f"{source}: no files to split; check --datasets and the fileset")
    return hash_chunks(filesets, source)


def split_given(args: argparse.Namespace) -> bool:
    """Whether any split option was given on the command line."""
    return bool(split_options(args).given())


def check_split(fileset: dict[str, Any], args: argparse.Namespace, source: str) -> None:
    """What the split options in ``args`` need of ``fileset``: its datasets, its tree names."""
    if args.datasets is not None:
        unknown = [name for name in args.datasets if name not in fileset]
        if unknown:
            raise UsageError(
                f"--datasets: {', '.join(map(repr, unknown))} not in {source}; "
                f"it has {', '.join(map(repr, sorted(fileset)))}"
            )
    if args.treename is None:
        for dataset, data in fileset.items():
            if args.datasets is not None and dataset not in args.datasets:
                continue
            files = data.get("files") if isinstance(data, dict) else data
            if isinstance(files, list) and not (isinstance(data, dict) and "treename" in data):
                raise UsageError(
                    f"{source}: dataset {dataset!r} lists its files without a tree name; "
                    "pass --treename (e.g. --treename Events)"
                )


def hash_chunks(filesets: list[dict[str, Any]], source: str) -> list[Chunk]:
    """Hash every chunk once; a chunk that cannot be hashed raises UsageError."""
    try:
        return make_chunks(filesets)
    except (ValueError, TypeError) as err:
        raise UsageError(f"{source}: cannot hash: {one_line(err)}") from None


# ----------------------------------------------------------------------------- output


def _check_writable_dir(path: str, what: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"{what}: directory {directory!r} does not exist; create it first")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"{what}: cannot write to {directory!r}; choose another place")


def check_output_file(path: str | None, option: str, inputs: tuple[str, ...]) -> None:
    """A file the command will write: not a directory, in a writable directory, no input."""
    if path is None:
        return
    if os.path.isdir(path):
        raise UsageError(f"{option} {path!r} is a directory; give a file name")
    for source in inputs:
        if os.path.exists(path) and os.path.samefile(path, source):
            raise UsageError(f"{option} {path!r} is the input fileset; give another file name")
    _check_writable_dir(path, option)


def min_completeness(value: float | None) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise UsageError(
            f"--min-completeness {value}: give a fraction of files between 0 and 1, e.g. 0.95"
        )
    return value


def good_enough(
    command: str, threshold: float | None, fractions: Mapping[str, float], missing: str
) -> bool:
    """Whether an incomplete result passes ``--min-completeness``; says so loudly if it does."""
    if threshold is None or not all(f >= threshold for f in fractions.values()):
        return False
    short = ", ".join(f"{d} {f:.1%}" for d, f in sorted(fractions.items()) if f < 1.0)
    print(
        f"chunkwise {command}: note: INCOMPLETE but accepted (--min-completeness {threshold:g}):"
        f" {short}; {missing}",
        file=sys.stderr,
    )
    return True


def below(command: str, threshold: float, fractions: Mapping[str, float]) -> None:
    short = ", ".join(f"{d} {f:.1%}" for d, f in sorted(fractions.items()) if f < threshold)
    print(
        f"chunkwise {command}: INCOMPLETE, below --min-completeness {threshold:g}: {short}",
        file=sys.stderr,
    )


def write_json(data: Any, path: str) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=1, allow_nan=False)
        f.write("\n")


# ----------------------------------------------------------------------------- cache and tag


def cache_key(args: argparse.Namespace) -> bytes | None:
    """The shared cache's key, from --cache-key-file or $CHUNKWISE_CACHE_KEY_FILE."""
    path = args.cache_key_file or os.environ.get("CHUNKWISE_CACHE_KEY_FILE") or None
    if path is None:
        return None
    try:
        return load_key(path)
    except CacheError as err:
        raise UsageError(str(err)) from None


def cache_call(fn: Callable[[], Any]) -> Any:
    """``fn()``, with a ``CacheError`` said as a ``UsageError``."""
    try:
        return fn()
    except CacheError as err:
        raise UsageError(str(err)) from None


def split_options(args: argparse.Namespace) -> SplitOptions:
    """The ``SplitOptions`` of the command's split options."""
    return SplitOptions(
        strategy=args.strategy,
        datasets=args.datasets,
        percentage=args.percentage,
        files_per_chunk=args.files_per_chunk,
        treename=args.treename,
        events_per_chunk=args.events_per_chunk,
        stable=args.stable,
    )
