"""Read fileset files in the forms coffea's dataset tools write, and check their shape.

coffea's ``dataset_query`` saves filesets as ``.json`` or ``.yaml``, and its preprocessing step
saves ``.json.gz``. All three, plus ``.yml``, load here into the plain ``dict`` that
``split_fileset`` and coffea's ``Runner`` take. A file that cannot be read, or whose content is
not a fileset, raises :class:`FilesetError` with a one-line message that names the file, the
place in it and what to do.

Nothing heavy is imported at module import time: ``yaml`` is imported only for YAML files.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Mapping
from typing import Any

__all__ = [
    "FilesetError",
    "SUFFIXES",
    "check_fileset",
    "load_fileset",
]

#: File name endings that :func:`load_fileset` understands.
SUFFIXES = (".json", ".json.gz", ".yaml", ".yml", ".yaml.gz", ".yml.gz")


class FilesetError(ValueError):
    """A fileset file that cannot be read, or whose content is not a fileset.

    The message is a single line that says what is wrong and what to do.
    """


def _kind(path: str) -> tuple[str, bool]:
    """Return ``("json" | "yaml", gzipped)`` from the file name, or raise FilesetError."""
    name = path.lower()
    gzipped = name.endswith(".gz")
    if gzipped:
        name = name[: -len(".gz")]
    if name.endswith(".json"):
        return "json", gzipped
    if name.endswith((".yaml", ".yml")):
        return "yaml", gzipped
    raise FilesetError(
        f"{path}: unsupported file type; give a fileset ending in "
        + ", ".join(SUFFIXES[:-2])
        + " (coffea's dataset tools write these)"
    )


def _read_text(path: str, gzipped: bool) -> str:
    if not os.path.exists(path):
        raise FilesetError(f"{path}: no such file; check the path")
    if os.path.isdir(path):
        raise FilesetError(f"{path}: is a directory; give a fileset file instead")
    try:
        if gzipped:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return f.read()
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (gzip.BadGzipFile, EOFError) as err:
        raise FilesetError(
            f"{path}: not a complete gzip file ({err}); re-create it or drop the .gz ending"
        ) from None
    except UnicodeDecodeError:
        raise FilesetError(f"{path}: not UTF-8 text; is this really a fileset?") from None
    except OSError as err:
        raise FilesetError(f"{path}: cannot read it ({err.strerror or err})") from None


def _parse_json(path: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise FilesetError(
            f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}; "
            "fix the file"
        ) from None


def _parse_yaml(path: str, text: str) -> Any:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or type(err).__name__
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise FilesetError(f"{path}: malformed YAML{where}: {problem}; fix the file") from None
    # Keep only what JSON can hold, so that a YAML fileset and its chunk files written as JSON
    # hash the same (YAML would otherwise give dates, sets and non-string keys).
    try:
        return json.loads(json.dumps(data, allow_nan=True))
    except (TypeError, ValueError) as err:
        raise FilesetError(
            f"{path}: holds a value JSON cannot represent ({err}); quote it as a string"
        ) from None


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_paths(where: str, paths: Any) -> None:
    for path in paths:
        if not isinstance(path, str) or not path:
            raise FilesetError(
                f"{where}: every file path must be a non-empty string, got {path!r}; "
                "quote it in YAML"
            )


def _check_dataset(where: str, data: Any) -> None:
    if isinstance(data, list):
        _check_paths(where, data)
        return
    if not isinstance(data, Mapping):
        raise FilesetError(
            f"{where}: a dataset must be a list of paths or a mapping with a 'files' entry, "
            f"got {_type_name(data)}"
        )
    if "files" not in data:
        raise FilesetError(
            f"{where}: no 'files' entry; write {{\"files\": {{path: treename}}}} "
            "or a plain list of paths"
        )
    files = data["files"]
    if isinstance(files, list):
        _check_paths(f"{where}: 'files'", files)
    elif isinstance(files, Mapping):
        _check_paths(f"{where}: 'files'", files.keys())
        for path, spec in files.items():
            if spec is None or isinstance(spec, str):
                continue
            # coffea's preprocessing writes {path: {"object_path": ..., "steps": ...}}.
            if isinstance(spec, Mapping) and isinstance(spec.get("object_path"), str):
                continue
            raise FilesetError(
                f"{where}: file {path!r} maps to {_type_name(spec)}; give its tree name "
                "(e.g. \"Events\") or a preprocessed entry with an 'object_path'"
            )
    else:
        raise FilesetError(
            f"{where}: 'files' must be a list of paths or a mapping {{path: treename}}, "
            f"got {_type_name(files)}"
        )
    treename = data.get("treename")
    if treename is not None and not isinstance(treename, str):
        raise FilesetError(f"{where}: 'treename' must be a string, got {_type_name(treename)}")
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise FilesetError(f"{where}: 'metadata' must be a mapping, got {_type_name(metadata)}")
    preload = data.get("preload")
    if preload is not None and not isinstance(preload, list):
        raise FilesetError(
            f"{where}: 'preload' must be a list of branch names, got {_type_name(preload)}"
        )


def check_fileset(fileset: Any, source: str = "fileset") -> dict[str, Any]:
    """Check that ``fileset`` has the shape of a coffea fileset, and return it.

    Parameters
    ----------
    fileset : object
        The parsed content of a fileset file.
    source : str, optional
        What to call the fileset in error messages, usually its file name.

    Returns
    -------
    dict
        ``fileset`` itself, unchanged.

    Raises
    ------
    FilesetError
        If ``fileset`` is not a non-empty mapping ``{dataset: [path, ...]}`` or
        ``{dataset: {"files": {path: treename} | [path, ...], ...}}``.

    Examples
    --------
    >>> check_fileset({"ttbar": {"files": {"a.root": "Events"}}})
    {'ttbar': {'files': {'a.root': 'Events'}}}
    """
    if not isinstance(fileset, Mapping):
        raise FilesetError(
            f'{source}: a fileset must be a mapping {{dataset: {{"files": ...}}}}, '
            f"got {_type_name(fileset)}"
        )
    if not fileset:
        raise FilesetError(f"{source}: the fileset has no datasets; add at least one")
    for dataset, data in fileset.items():
        if not isinstance(dataset, str):
            raise FilesetError(
                f"{source}: dataset names must be strings, got {dataset!r}; quote it in YAML"
            )
        _check_dataset(f"{source}: dataset {dataset!r}", data)
    return dict(fileset)


def load_fileset(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a fileset from a ``.json``, ``.json.gz``, ``.yaml`` or ``.yml`` file.

    Parameters
    ----------
    path : str or os.PathLike
        The fileset file. The ending picks the format; ``.gz`` means gzip-compressed.

    Returns
    -------
    dict
        The fileset, as ``split_fileset`` and coffea's ``Runner`` take it.

    Raises
    ------
    FilesetError
        With a one-line message, if the file is missing, unreadable, malformed, or not shaped
        like a fileset.

    Examples
    --------
    >>> fileset = load_fileset("fileset.json")  # doctest: +SKIP
    >>> sorted(fileset)  # doctest: +SKIP
    ['DYJets', 'TTbar']
    """
    path = os.fspath(path)
    kind, gzipped = _kind(path)
    text = _read_text(path, gzipped)
    data = _parse_json(path, text) if kind == "json" else _parse_yaml(path, text)
    return check_fileset(data, path)
