"""Chunks as values: a chunk's fileset, its hash and its files, worked out once.

``run``, ``status`` and the command line all need, for every chunk, its cache key
(``hash_fileset``), the files it holds per dataset and, for salvage, its single-file parts.
:func:`make_chunks` computes these once, with the Rust core, and nothing else walks a chunk's
``files`` again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chunkwise import _core

_ascii = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]

__all__ = [
    "SPLIT_FIELDS",
    "Chunk",
    "SplitOptions",
    "count_files",
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
        """``{part hash: (dataset, path)}`` of the chunk's single-file parts.

        Worked out without building the parts when the chunk is plain (see
        :func:`_plain_part_hashes`): ``status`` needs only this, for every chunk not done.
        """
        if "parts" not in self.__dict__ and not (self.n_files == 1 and len(self.files) == 1):
            plain = _plain_part_hashes(self.fileset)
            if plain is not None:
                return plain
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


#: The fields of a dataset that its hash covers besides ``files``, in the canonical order.
_HASHED_FIELDS = ("metadata", "preload", "treename")
_COLLECTIONS = (list, tuple, set, frozenset)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=256)
def _checked_template(head: str, tail: str, name: str, spec_json: str) -> bool:
    """Whether the template of one dataset gives the core's hash, checked on one file."""
    path = "/chunkwise/check.root"
    dataset = json.loads(spec_json)
    dataset["files"] = {path: dataset.pop("\0value")}
    expected = _core.hash_fileset({name: dataset})
    got = hashlib.sha256(f"{head}{_ascii(path)}{tail}".encode()).hexdigest()
    return got == expected


def _plain_part_hashes(fileset: Mapping[str, Any]) -> dict[str, tuple[str, str]] | None:
    """``{hash: (dataset, path)}`` of each file as a chunk of its own, hashed here in Python, or
    None when the chunk is not plain enough for that (then the parts are built and hashed by
    the core).

    The hash of a chunk is the SHA-256 of one JSON text (coffea's canonical document). For one
    file of a dataset it is ``{"<dataset>":{"files":[["<path>",<tree>]],<fields>}}``: the
    text before and after the path is the same for every file of the dataset with the same
    tree, so each file costs one string escape and one SHA-256. Only plain datasets take this
    way (a dict of ``str`` paths to ``str`` or ``None`` trees, and fields that JSON encodes),
    and each template is checked once against the core before it is used.
    """
    out: dict[str, tuple[str, str]] = {}
    for name, spec in fileset.items():
        if not isinstance(name, str) or type(spec) is not dict:
            return None
        files = spec.get("files")
        if type(files) is not dict:
            return None
        fields = {}
        try:
            for key in _HASHED_FIELDS:
                if key in spec:
                    value = spec[key]
                    if key == "preload" and isinstance(value, _COLLECTIONS):
                        value = sorted(value)
                    fields[key] = value
            extra = "".join(f",{_ascii(k)}:{_canonical(v)}" for k, v in fields.items())
        except (TypeError, ValueError):
            return None
        templates: dict[Any, tuple[str, str]] = {}
        head = f'{{{_ascii(name)}:{{"files":[['
        for path, tree in files.items():
            if type(path) is not str or (tree is not None and type(tree) is not str):
                return None  # a preprocessed entry ({"object_path": ..., "steps": ...}), say
            template = templates.get(tree)
            if template is None:
                tail = f",{_canonical(tree)}]]{extra}}}}}"
                spec_json = _canonical({**fields, "\0value": tree})
                if not _checked_template(head, tail, name, spec_json):
                    return None
                template = templates[tree] = (head, tail)
            digest = hashlib.sha256(f"{template[0]}{_ascii(path)}{template[1]}".encode())
            out[digest.hexdigest()] = (name, path)
    return out


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

    def describe(self) -> str:
        """The options that are set, as one would write them (``"files_per_chunk=2, stable"``;
        ``"the defaults"`` when none is)."""
        parts = [
            f"{name}={getattr(self, name)!r}" for name in SPLIT_FIELDS
            if getattr(self, name) is not None
        ]  # fmt: skip
        parts += ["stable"] if self.stable else []
        return ", ".join(parts) or "the defaults"

    def to_record(self) -> dict[str, Any] | None:
        """The options as JSON (only those set), for a cache's ``split.json``; ``None`` when
        they cannot be written down (``datasets`` given as a callable or patterns)."""
        record: dict[str, Any] = {}
        for name in SPLIT_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "datasets":
                if isinstance(value, str) or callable(value):
                    return None
                value = list(value)
                if not all(isinstance(d, str) for d in value):
                    return None
            record[name] = value
        if self.stable:
            record["stable"] = True
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SplitOptions:
        """The options ``to_record`` wrote.

        Raises
        ------
        ValueError
            If ``record`` is not such a record.
        """
        known = (*SPLIT_FIELDS, "stable")
        if not isinstance(record, Mapping) or not set(record) <= set(known):
            raise ValueError(f"not a record of split options: {record!r}")
        options = dict(record)
        if isinstance(options.get("datasets"), list):
            options["datasets"] = tuple(options["datasets"])
        return cls(**options)

    def same_as(self, other: SplitOptions) -> bool:
        """Whether both are the same options, as ``to_record`` writes them (``False`` when
        they cannot be written down)."""
        mine = self.to_record()
        return mine is not None and mine == other.to_record()

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


def count_files(fileset: Mapping[str, Any]) -> int:
    """How many files a fileset names, over all its datasets (what a run records beside its
    split options, for ``status`` to tell the whole fileset from the files left to do)."""
    total = 0
    for spec in fileset.values():
        files = spec.get("files", ()) if isinstance(spec, Mapping) else spec
        total += len(files) if isinstance(files, (Mapping, list, tuple)) else 0
    return total


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
