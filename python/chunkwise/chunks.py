"""Chunks as values: a chunk's fileset, its hash and its files, worked out once.

``run``, ``status`` and the command line all need, for every chunk, its cache key
(``hash_fileset``), the files it holds per dataset and, for salvage, its single-file parts.
:func:`make_chunks` computes these once, with the Rust core, and nothing else walks a chunk's
``files`` again.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chunkwise import _core

__all__ = [
    "SPLIT_FIELDS",
    "Chunk",
    "SplitOptions",
    "make_chunks",
    "runner_fileset",
    "split_options",
]


@dataclass(frozen=True, eq=False)
class Chunk:
    """One chunk of a fileset.

    Attributes
    ----------
    hash : str
        ``chunkwise.hash_fileset(fileset)``: the cache key, equal to coffea's.
    fileset : dict
        The chunk itself, self-contained (it carries its tree names).
    files : dict
        ``{dataset: {path: treename}}``.
    """

    hash: str
    fileset: dict[str, Any]
    files: dict[str, dict[str, str | None]]

    @property
    def n_files(self) -> int:
        """Number of files in the chunk, over all its datasets."""
        return sum(len(paths) for paths in self.files.values())

    @functools.cached_property
    def parts(self) -> list[Chunk]:
        """The chunk's single-file chunks, in sorted order: the units of work and of salvage.

        A chunk of one file is its own only part.
        """
        if self.n_files == 1 and len(self.files) == 1:
            return [self]
        return _build(_core.split_fileset(self.fileset, strategy="by_dataset", files_per_chunk=1))

    @property
    def only_file(self) -> tuple[str, str | None]:
        """``(path, treename)`` of a single-file chunk (a part)."""
        ((path, treename),) = next(iter(self.files.values())).items()
        return path, treename

    @functools.cached_property
    def part_files(self) -> dict[str, tuple[str, str]]:
        """``{part hash: (dataset, path)}`` of the chunk's single-file parts."""
        out = {}
        for part in self.parts:
            ((dataset, paths),) = part.files.items()
            (path,) = paths
            out[part.hash] = (dataset, path)
        return out

    @functools.cached_property
    def runner_fileset(self) -> dict[str, Any]:
        """The chunk in the form coffea's Runner reads (see :func:`runner_fileset`)."""
        return runner_fileset(self.fileset)


def _treename(value: Any, default: str | None) -> str | None:
    """The tree of one ``files`` entry: a name, ``None``, or coffea's preprocessed form."""
    if isinstance(value, Mapping):  # {"object_path": tree, "steps": ..., ...}
        value = value.get("object_path")
    return value if value is not None else default


def _files_of(chunk: Mapping[str, Any]) -> dict[str, dict[str, str | None]]:
    out: dict[str, dict[str, str | None]] = {}
    for dataset, spec in chunk.items():
        if isinstance(spec, Mapping):
            files = spec.get("files", {})
            default = spec.get("treename")
        else:
            files, default = spec, None
        if isinstance(files, Mapping):
            out[dataset] = {str(p): _treename(t, default) for p, t in files.items()}
        else:
            out[dataset] = {str(p): default for p in files}
    return out


def _build(filesets: list[dict[str, Any]]) -> list[Chunk]:
    hashes = _core.hash_filesets(filesets)
    return [Chunk(h, fs, _files_of(fs)) for h, fs in zip(hashes, filesets, strict=True)]


#: The options of ``split_fileset``, in the order ``SplitOptions`` holds them.
SPLIT_FIELDS = (
    "strategy",
    "datasets",
    "percentage",
    "files_per_chunk",
    "treename",
    "events_per_chunk",
)


@dataclass(frozen=True)
class SplitOptions:
    """How a fileset is split into chunks: the options of ``chunkwise.split_fileset``, as one
    value that ``run``, ``status`` and the command line pass around.

    Attributes
    ----------
    strategy, datasets, percentage, files_per_chunk, treename, events_per_chunk
        As for ``chunkwise.split_fileset`` (and coffea's); ``None`` leaves each unset.
    stable : bool
        As for ``chunkwise.split_fileset``: content-defined chunks of about ``files_per_chunk``
        files (or ``events_per_chunk`` events) that keep their hashes when the fileset grows.
        ``False`` (the default) leaves it unset. It is not one of ``SPLIT_FIELDS``: ``run`` and
        ``status`` take it only inside a ``SplitOptions``.

    Examples
    --------
    >>> from chunkwise import SplitOptions
    >>> SplitOptions(files_per_chunk=2).split({"d": {"files": {"a.root": "Events"}}})
    [{'d': {'files': {'a.root': 'Events'}}}]
    """

    strategy: str | None = None
    datasets: Iterable[str] | Callable[..., Any] | tuple[Any, ...] | None = None
    percentage: int | None = None
    files_per_chunk: int | None = None
    treename: str | None = None
    events_per_chunk: int | None = None
    stable: bool = False

    def given(self) -> list[str]:
        """The names of the options that are set (``stable`` only when it is true)."""
        given = [name for name in SPLIT_FIELDS if getattr(self, name) is not None]
        return [*given, "stable"] if self.stable else given

    def split(self, fileset: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``chunkwise.split_fileset(fileset, **options)``: the chunks, as filesets.

        Raises
        ------
        ValueError, TypeError
            As ``split_fileset`` raises them.
        """
        return _core.split_fileset(
            dict(fileset),
            self.strategy,
            self.datasets,
            self.percentage,
            self.treename,
            files_per_chunk=self.files_per_chunk,
            events_per_chunk=self.events_per_chunk,
            stable=self.stable,
        )


def make_chunks(
    fileset: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    options: SplitOptions | None = None,
) -> list[Chunk]:
    """Split a fileset (or take a list of chunks as they are) and hash every chunk.

    Parameters
    ----------
    fileset : dict or list of dict
        A coffea fileset, split with ``options``, or a list of chunks already split (then
        ``options`` must set nothing). A list of :class:`Chunk` values is returned as it is.
    options : SplitOptions, optional
        How to split a fileset dict (default: ``split_fileset``'s defaults).

    Returns
    -------
    list of Chunk

    Raises
    ------
    ValueError, TypeError
        As ``split_fileset`` and ``hash_fileset`` raise them, or for split options given with a
        list of chunks.

    Examples
    --------
    >>> fileset = {"d": {"files": {"a.root": "Events"}}}
    >>> make_chunks(fileset, SplitOptions(files_per_chunk=1))[0].files
    {'d': {'a.root': 'Events'}}
    """
    options = SplitOptions() if options is None else options
    if isinstance(fileset, Mapping):
        filesets = options.split(fileset)
    elif isinstance(fileset, Sequence) and not isinstance(fileset, (str, bytes)):
        given = options.given()
        if given:
            raise ValueError(
                f"fileset is already a list of chunks, so {', '.join(given)} cannot apply: "
                "pass the unsplit fileset dict, or split it yourself and leave them unset"
            )
        if all(isinstance(c, Chunk) for c in fileset):
            return list(fileset)  # type: ignore[arg-type]
        filesets = [dict(c) for c in fileset]
    else:
        raise TypeError(
            f"fileset must be a fileset dict or a list of chunks, got {type(fileset).__name__}"
        )
    return _build(filesets)


def runner_fileset(fileset: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``fileset`` in the form coffea's ``Runner`` reads.

    coffea's preprocessing writes each file as ``{path: {"object_path": tree, "steps": ...}}``.
    The Runner reads whole files and wants ``{path: tree}``, so such entries are reduced to their
    tree name. Every other dataset is returned as it is. ``chunkwise.run`` hands each chunk to
    the Runner in this form, but keys the cache by the chunk as it is, so that ``chunkwise
    split``, ``run`` and ``status`` agree on every chunk's hash.

    Parameters
    ----------
    fileset : Mapping
        A fileset.

    Returns
    -------
    dict
        A new fileset, sharing unchanged datasets with ``fileset``.

    Examples
    --------
    >>> runner_fileset({"d": {"files": {"a.root": {"object_path": "Events", "steps": [[0, 5]]}}}})
    {'d': {'files': {'a.root': 'Events'}}}
    """
    out: dict[str, Any] = {}
    for dataset, data in fileset.items():
        files = data.get("files") if isinstance(data, Mapping) else None
        if isinstance(files, Mapping) and any(isinstance(v, Mapping) for v in files.values()):
            reduced = {
                path: spec["object_path"] if isinstance(spec, Mapping) else spec
                for path, spec in files.items()
            }
            out[dataset] = {**data, "files": reduced}
        else:
            out[dataset] = data
    return out


def split_options(
    split: SplitOptions | None, legacy: Mapping[str, Any], caller: str
) -> SplitOptions:
    """The ``SplitOptions`` of a call that also takes the split options one keyword each (the
    way before ``SplitOptions``): those still work, with a ``DeprecationWarning``.

    Parameters
    ----------
    split : SplitOptions or None
        What the caller was given as ``split=``.
    legacy : mapping
        The other keywords the caller was given: each must be a split option.
    caller : str
        The public function's name, for the messages (``"run"``).

    Raises
    ------
    TypeError
        For a keyword that is not a split option (as Python says it), or both ``split`` and
        an old keyword.
    """
    if split is not None and not isinstance(split, SplitOptions):
        raise TypeError(
            f"{caller}(): split must be a chunkwise.SplitOptions, got {type(split).__name__}; "
            "e.g. split=chunkwise.SplitOptions(percentage=10)"
        )
    unknown = sorted(set(legacy) - set(SPLIT_FIELDS))
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    given = {name: value for name, value in legacy.items() if value is not None}
    if not given:
        return SplitOptions() if split is None else split
    if split is not None:
        raise TypeError(
            f"{caller}(): give the split options once, as split=SplitOptions(...); got it and "
            f"{', '.join(given)}"
        )
    spelled = ", ".join(f"{name}={value!r}" for name, value in given.items())
    warnings.warn(
        f"chunkwise.{caller}({', '.join(f'{name}=' for name in given)}...) is deprecated: "
        f"pass split=chunkwise.SplitOptions({spelled})",
        DeprecationWarning,
        stacklevel=3,
    )
    return SplitOptions(**given)
