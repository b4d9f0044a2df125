"""A split directory: each chunk of a fileset in ``DIR/<hash>.json``, listed in
``DIR/manifest.json`` with its datasets and file counts (what ``chunkwise split`` writes, ready
for a batch system's job list).

The directory is written whole into a fresh directory beside ``DIR`` and renamed into place, so
an error or interruption leaves ``DIR`` as it was; an existing ``DIR`` is replaced only if an
earlier split made it and it holds nothing else, and never if the input fileset is inside it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from chunkwise import _core
from chunkwise.atomic import replace_dir, umask
from chunkwise.chunks import Chunk, SplitOptions
from chunkwise.errors import OptionError
from chunkwise.filesets import hash_in_name

__all__ = ["MANIFEST", "is_split_manifest", "write_split"]

MANIFEST = "manifest.json"


def write_split(
    chunks: Sequence[Chunk],
    out: str | os.PathLike[str],
    *,
    source: str | os.PathLike[str],
    options: SplitOptions,
    force: bool = False,
) -> dict[str, Any]:
    """Write each chunk to ``out/<hash>.json`` and the manifest to ``out/manifest.json``.

    Parameters
    ----------
    chunks : sequence of Chunk
        From ``chunkwise.chunks.make_chunks``; identical chunks share one file.
    out : str or os.PathLike
        A new or empty directory (its parent must exist), or one an earlier split made, with
        ``force``.
    source : str or os.PathLike
        The fileset file the chunks come from (recorded in the manifest, and never deleted).
    options : SplitOptions
        How it was split (recorded in the manifest).
    force : bool, optional
        Replace ``out`` if an earlier split made it and it holds nothing else.

    Returns
    -------
    dict
        The manifest: ``chunkwise`` (the version), ``fileset``, ``options``, ``n_chunks`` and
        ``chunks`` (each one's ``hash``, ``file``, ``datasets`` and ``n_files``).

    Raises
    ------
    chunkwise.errors.OptionError
        If ``out`` may not be written; the message starts with ``out`` as given.
    """
    given = os.fspath(out)
    out = os.path.abspath(given)
    if os.path.exists(out) and not os.path.isdir(out):
        raise OptionError(f"{given!r} is a file; give a directory")
    if os.path.isdir(out) and os.listdir(out):
        _check_replaceable(given, out, os.fspath(source), force)
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise OptionError(f"{given!r}: directory {parent!r} does not exist; create it first")
    manifest: dict[str, Any] = {
        "chunkwise": _core.__version__,
        "fileset": os.path.abspath(source),
        "options": {
            "strategy": options.strategy,
            "percentage": options.percentage,
            "files_per_chunk": options.files_per_chunk,
            "events_per_chunk": options.events_per_chunk,
            "datasets": options.datasets,
            "treename": options.treename,
            "stable": options.stable,
        },
        "n_chunks": 0,
        "chunks": [],
    }
    seen: set[str] = set()
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", dir=parent)
    try:
        for chunk in chunks:
            if chunk.hash in seen:  # identical chunks share one file
                continue
            seen.add(chunk.hash)
            _write_json(os.path.join(staging, f"{chunk.hash}.json"), chunk.fileset)
            counts = {dataset: len(paths) for dataset, paths in chunk.files.items()}
            manifest["chunks"].append(
                {
                    "hash": chunk.hash,
                    "file": f"{chunk.hash}.json",
                    "datasets": counts,
                    "n_files": sum(counts.values()),
                }
            )
        manifest["n_chunks"] = len(manifest["chunks"])
        _write_json(os.path.join(staging, MANIFEST), manifest)
        os.chmod(staging, 0o777 & ~umask())
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _write_json(path: str, data: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def is_split_manifest(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is the ``manifest.json`` of a split directory."""
    if os.path.basename(path) != MANIFEST:
        return False
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "chunkwise" in data and "chunks" in data


def _check_replaceable(given: str, out: str, source: str, force: bool) -> None:
    """Refuse the non-empty directory ``out`` unless ``force`` may replace it.

    It may if ``chunkwise split`` made it: a chunkwise manifest.json and nothing else but
    ``<hash>.json`` chunk files, so that nothing chunkwise did not write is lost. It never may
    if the input fileset lies inside it.
    """
    if _inside(source, out):
        raise OptionError(
            f"{given!r} holds the input fileset {source!r}; choose a new "
            "directory, chunkwise never deletes its input"
        )
    problem = _not_a_split(out)
    if not force:
        hint = " or add --force to replace it" if problem is None else ""
        raise OptionError(f"{given!r} is not empty; choose a new directory{hint}")
    if problem is not None:
        raise OptionError(
            f"{given!r} {problem}; choose a new directory, chunkwise never deletes "
            "what it did not make"
        )


def _inside(path: str, directory: str) -> bool:
    """Whether ``path`` lies inside ``directory``, as written or with symbolic links resolved."""
    for resolve in (os.path.abspath, os.path.realpath):
        inner, outer = resolve(path), resolve(directory)
        if os.path.commonpath([inner, outer]) == outer:
            return True
    return False


def _not_a_split(directory: str) -> str | None:
    """Why ``directory`` is not what ``chunkwise split`` writes, or None if it is."""
    # The manifest is the marker: split writes it into every directory it makes.
    if not is_split_manifest(os.path.join(directory, MANIFEST)):
        return "was not made by 'chunkwise split' (it has no chunkwise manifest.json)"
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name == MANIFEST:
            continue
        if hash_in_name(name) is not None and os.path.isfile(path) and not os.path.islink(path):
            continue
        return f"holds {name!r}, which 'chunkwise split' does not write"
    return None
