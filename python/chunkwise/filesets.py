"""Read fileset files in the forms coffea's dataset tools write, and check their shape.

coffea's ``dataset_query`` saves filesets as ``.json`` or ``.yaml``, and its preprocessing step
saves ``.json.gz``. All three, plus ``.yml``, load here into the plain ``dict`` that
``split_fileset`` and coffea's ``Runner`` take. A file that cannot be read, or whose content is
not a fileset, raises :class:`FilesetError` with a one-line message that names the file, the
place in it and what to do.

Some input that a JSON or YAML parser would take is refused, because in a fileset it can only be
a mistake or an attack, and letting it through costs memory, time or files:

* nesting deeper than :data:`MAX_DEPTH` (100) levels of mappings and lists. A real fileset is at
  most about 6 deep (preprocessed: dataset, "files", path, "steps", step); without a bound a
  deeply nested file ends in a RecursionError. JSON is checked by a scan of its brackets (outside
  strings) before it is parsed, so a 100,000-deep document never reaches the recursive parser;
* YAML aliases (``*name``, refused at the first one, before anything is built): a 526-byte file
  of nested aliases (the "billion laughs") would otherwise expand to gigabytes;
* a key that appears twice in one mapping: a dataset name twice at the top level, a file path
  twice in a dataset's "files" (JSON and YAML parsers would silently keep only the last one).

:func:`name_mismatch` tells whether a chunk file that ``chunkwise split`` named by its hash was
edited afterwards, so that it is cached under another hash than its name.

Nothing heavy is imported at module import time: ``yaml`` is imported only for YAML files.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
from collections.abc import Mapping
from itertools import accumulate
from typing import Any

from chunkwise.errors import FilesetError

__all__ = [
    "FilesetError",
    "MAX_DEPTH",
    "SUFFIXES",
    "check_fileset",
    "hash_in_name",
    "load_fileset",
    "name_mismatch",
]

#: File name endings that :func:`load_fileset` understands.
SUFFIXES = (".json", ".json.gz", ".yaml", ".yml", ".yaml.gz", ".yml.gz")

#: How deeply mappings and lists may nest in a fileset file (the top-level mapping is level 1).
#: A real fileset needs at most about 6 levels.
MAX_DEPTH = 100


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


def _too_deep(path: str, where: str = "") -> FilesetError:
    return FilesetError(
        f"{path}: {where}nested deeper than {MAX_DEPTH} levels, the limit for filesets "
        "(a real one needs about 6); fix the file"
    )


# The JSON depth scan works on bytes, where deleting and mapping characters runs at C speed.
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"')
_TO_SQUARE = bytes.maketrans(b"{}", b"[]")


def _json_too_deep(text: str) -> bool:
    """Whether the brackets of JSON ``text``, outside strings, nest deeper than MAX_DEPTH.

    Only the structure is looked at, never parsed: escapes are dropped first (so that ``\\"``
    does not end a string), then everything but brackets and quotes, then the strings.
    """
    data = text.encode("utf-8", "surrogatepass")
    if b"\\" in data:
        data = _ESCAPE.sub(b"", data)
    data = data.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in data:  # strings with brackets in them (rare), or an unterminated one
        data = _STRING.sub(b"", data).replace(b'"', b"")
    brackets = data.translate(_TO_SQUARE)
    if brackets.count(b"[") <= MAX_DEPTH:
        return False
    # Each pass drops every innermost pair, so a document MAX_DEPTH deep is empty after
    # MAX_DEPTH passes; a pair still there after them has MAX_DEPTH levels inside it.
    data = brackets
    for _ in range(MAX_DEPTH):
        shorter = data.replace(b"[]", b"")
        if len(shorter) == len(data):
            break
        data = shorter
    if not data:
        return False
    if b"[]" in data:
        return True
    # Unbalanced brackets: the JSON is malformed, but the parser would still recurse as deep as
    # the openers go, so measure that exactly.
    depth = accumulate(1 if c == 0x5B else -1 for c in brackets)
    return max(depth) > MAX_DEPTH


def _duplicate(path: str, where: str, root: Any, container: Any, key: Any) -> FilesetError:
    """The error for ``key`` appearing twice in ``container``, which lies somewhere in ``root``."""
    if container is root:
        what = f"dataset {key!r} appears twice; merge its files into one entry"
    else:
        what = f"key {key!r} appears twice in one mapping; keep one"
        if isinstance(root, Mapping):
            for name, data in root.items():
                if data is container:
                    what = f"dataset {name!r}: {key!r} appears twice; keep one"
                    break
                if isinstance(data, Mapping) and data.get("files") is container:
                    what = f"dataset {name!r}: file {key!r} appears twice; keep one entry"
                    break
    return FilesetError(f"{path}: {where}{what}")


def _loads(path: str, text: str) -> Any:
    """``json.loads``, but a key twice in one object raises FilesetError."""
    duplicates: list[tuple[dict[str, Any], str]] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    duplicates.append((obj, key))
                    break
                seen.add(key)
        return obj

    try:
        data = json.loads(text, object_pairs_hook=pairs_hook)
    except json.JSONDecodeError as err:
        raise FilesetError(
            f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}; "
            "fix the file"
        ) from None
    except RecursionError:  # the depth scan should have caught it; never a traceback
        raise _too_deep(path) from None
    if duplicates:
        # Objects are built innermost first; report a repeated dataset before anything inside.
        obj, key = next(((o, k) for o, k in duplicates if o is data), duplicates[0])
        raise _duplicate(path, "", data, obj, key)
    return data


def _parse_json(path: str, text: str) -> Any:
    if _json_too_deep(text):
        raise _too_deep(path)
    return _loads(path, text)


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


@functools.cache
def _yaml_loader(c: bool = True) -> type:
    """The YAML loader for filesets: safe, no aliases, bounded depth, no key twice.

    Built on libyaml's parser (``yaml.CSafeLoader``) when ``c`` and PyYAML has it, else on
    ``yaml.SafeLoader``. Either way the nodes are composed by PyYAML's Python composer, extended
    here to refuse an alias event and too deep a collection before building anything.
    """
    import yaml
    from yaml.composer import Composer
    from yaml.events import AliasEvent, MappingStartEvent, SequenceStartEvent
    from yaml.nodes import MappingNode, ScalarNode

    class Checks:
        path = "fileset"
        depth = 0
        root: Any = None

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(AliasEvent):  # type: ignore[attr-defined]
                event = self.peek_event()  # type: ignore[attr-defined]
                raise FilesetError(
                    f"{self.path}: {_at(event.start_mark)}YAML aliases (*{event.anchor}) are not "
                    "supported in filesets; write the value out"
                )
            # libyaml's check_event compares classes with `is`: name both collection starts.
            if not self.check_event(SequenceStartEvent, MappingStartEvent):  # type: ignore[attr-defined]
                return super().compose_node(parent, index)  # type: ignore[misc]
            if self.depth >= MAX_DEPTH:
                raise _too_deep(self.path, _at(self.peek_event().start_mark))  # type: ignore[attr-defined]
            self.depth += 1
            try:
                return super().compose_node(parent, index)  # type: ignore[misc]
            finally:
                self.depth -= 1

        def construct_document(self, node: Any) -> Any:
            self.root = node
            return super().construct_document(node)  # type: ignore[misc]

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            mapping = super().construct_mapping(node, deep=deep)  # type: ignore[misc]
            if len(mapping) != len(node.value):
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    key = self.construct_object(key_node)  # type: ignore[attr-defined]
                    if key in seen:
                        raise self.duplicate(node, key, key_node)
                    seen.add(key)
            return mapping

        def duplicate(self, node: Any, key: Any, key_node: Any) -> FilesetError:
            where = _at(key_node.start_mark)
            root = self.root
            if node is root:
                return _duplicate(self.path, where, root, root, key)
            # What _duplicate looks through: each dataset's node, or {"files": node} if the
            # mapping with the repeated key is that dataset's "files".
            datasets: dict[str, Any] = {}
            if isinstance(root, MappingNode):
                for name_node, value in root.value:
                    datasets[name_node.value] = value
                    if isinstance(value, MappingNode):
                        for k, v in value.value:
                            if v is node and isinstance(k, ScalarNode) and k.value == "files":
                                datasets[name_node.value] = {"files": node}
            return _duplicate(self.path, where, datasets, node, key)

    if c and hasattr(yaml, "CSafeLoader"):

        class CFilesetLoader(Checks, Composer, yaml.CSafeLoader):
            def __init__(self, stream: str) -> None:
                yaml.CSafeLoader.__init__(self, stream)
                Composer.__init__(self)

        return CFilesetLoader

    class FilesetLoader(Checks, yaml.SafeLoader):
        pass

    return FilesetLoader


def _compose(path: str, text: str, c: bool) -> Any:
    """Load ``text`` with the fileset loader; a YAMLError is left to the caller."""
    loader = _yaml_loader(c)(text)
    loader.path = path
    try:
        return loader.get_single_data()
    except RecursionError:  # the depth bound should have caught it; never a traceback
        raise _too_deep(path) from None
    finally:
        loader.dispose()


def _malformed(path: str, err: Exception) -> FilesetError:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or type(err).__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return FilesetError(f"{path}: malformed YAML{where}: {problem}; fix the file")


def _parse_yaml(path: str, text: str, c: bool = True) -> Any:
    import yaml

    try:
        data = _compose(path, text, c)
    except yaml.YAMLError as err:
        # libyaml has limits of its own (since 0.2.6 a nesting depth of 1000, met while it reads
        # ahead, before chunkwise's bound on composed collections is reached). Its verdict is
        # not chunkwise's: the pure-Python parser reads one event at a time, so it meets
        # chunkwise's own bounds (depth, aliases, a key twice) where they are first broken.
        if c:
            try:
                _compose(path, text, False)
            except yaml.YAMLError:
                pass
        raise _malformed(path, err) from None
    # Keep only what JSON can hold, so that a YAML fileset and its chunk files written as JSON
    # hash the same (YAML would otherwise give dates, sets and non-string keys).
    try:
        text = json.dumps(data, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise FilesetError(
            f"{path}: holds a value JSON cannot represent ({err}); quote it as a string"
        ) from None
    return _loads(path, text)  # keys YAML tells apart but JSON does not (1 and "1") clash here


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


_HASH_NAME = re.compile(r"[0-9a-f]{64}")


def hash_in_name(path: str | os.PathLike[str]) -> str | None:
    """The hash in a chunk file's name, ``<64 lowercase hex>.json`` as ``chunkwise split``
    writes it, or None for any other name.

    Examples
    --------
    >>> hash_in_name("chunks/" + "ab" * 32 + ".json") == "ab" * 32
    True
    >>> hash_in_name("fileset.json") is None
    True
    """
    stem, ext = os.path.splitext(os.path.basename(os.fspath(path)))
    return stem if ext == ".json" and _HASH_NAME.fullmatch(stem) else None


def name_mismatch(path: str | os.PathLike[str], digest: str) -> str | None:
    """Say so if the chunk file ``path`` is named by a hash other than ``digest``, its content's.

    Parameters
    ----------
    path : str or os.PathLike
        A fileset file; only names ``<64 lowercase hex>.json`` (as ``chunkwise split`` writes
        them) are checked.
    digest : str
        ``hash_fileset`` of the file's content: the key it is cached under.

    Returns
    -------
    str or None
        A one-line warning (without a prefix) if the file was edited after it was split, else
        None.

    Examples
    --------
    >>> name_mismatch("fileset.json", "00" * 32) is None
    True
    >>> name_mismatch("chunks/" + "ab" * 32 + ".json", "ab" * 32) is None
    True
    >>> name_mismatch("chunks/" + "ab" * 32 + ".json", "cd" * 32)  # doctest: +ELLIPSIS
    'chunks/abab...abab.json was edited after split: its content hashes to cdcdcdcdcdcdcdcd…, ...'
    """
    named = hash_in_name(path)
    if named is None or named == digest:
        return None
    return (
        f"{os.fspath(path)} was edited after split: its content hashes to {digest[:16]}\u2026, "
        "so it is cached under that hash, not its name"
    )
