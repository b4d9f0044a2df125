"""The cache tag: the sub-directory that names the code and settings which made an entry.

``chunkwise.run`` stores entries under ``<cache>/<tag>/<hash>.coffea``. The hash names the chunk
(its files); the tag names everything else that changes the output: the processor's code (and
the code of your own modules that it uses), its state, the Runner settings and the versions of
coffea, chunkwise and Python. Editing one of those gives a new tag, so stale results are never
served.

``tag_manifest`` lists these parts, each with a digest; ``cache_tag`` hashes the manifest and
``explain`` says which parts differ between two manifests. What cannot be fingerprinted (an open
file, a lock, a module object held as state, ...) is named in an
``UnfingerprintableStateWarning``: the tag cannot see changes to it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import sys
import types
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chunkwise.cache import CACHE_FORMAT, CacheError, ChunkCache
from chunkwise.codebase import (
    _UNFINGERPRINTABLE,
    _VERSIONED,
    _class_namespace,
    _digest,
    _enc,
    _hex,
    _qualname,
    _short,
)
from chunkwise.errors import StaleModuleWarning, UnfingerprintableStateWarning
from chunkwise.extras import module_version
from chunkwise.fingerprint import _describe, _Fingerprinter, _guarded, _is_code

__all__ = [
    "StaleModuleWarning",
    "UnfingerprintableStateWarning",
    "cache_tag",
    "explain",
    "check_opened",
    "open_cache",
    "tag_manifest",
    "tag_of",
]

# Runner fields that change what a processor returns for the same files. chunksize and
# align_clusters change the row chunks, which processors that count chunks (like the notebook's
# cutflow) see; maxchunks truncates; schema and format change the events themselves.
# ``skipbadfiles`` is left out on purpose: it only decides which errors make a file "bad"
# (salvaged around) rather than raised. A cache entry is only ever written for a chunk, or a
# single file, that ran without error, so no entry's content depends on it. The executor,
# ``savemetrics``, ``xrootdtimeout``, ... do not change any chunk's output either.
_OUTPUT_RUNNER_FIELDS = ("schema", "format", "maxchunks", "chunksize", "align_clusters")


def _versions() -> dict[str, str | None]:
    """The versions of Python (major.minor: bytecode depends on it), coffea and chunkwise."""
    implementation = sys.implementation.name
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return {
        "python": python if implementation == "cpython" else f"{implementation} {python}",
        "coffea": module_version("coffea"),
        "chunkwise": module_version("chunkwise"),
    }


def _user_stacklevel() -> int:
    """The stacklevel, for ``warnings.warn`` in the caller, of the first frame outside chunkwise."""
    frame: types.FrameType | None = sys._getframe(2)
    level = 2
    while frame is not None:
        name = frame.f_globals.get("__name__") or ""
        if name != "chunkwise" and not name.startswith("chunkwise."):
            break
        frame = frame.f_back
        level += 1
    return level


def _processor_state(processor: Any) -> dict[str, Any]:
    state = dict(getattr(processor, "__dict__", {}))
    for klass in type(processor).__mro__:
        slots = vars(klass).get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__") and hasattr(processor, name):
                state.setdefault(name, getattr(processor, name))
    return {str(k): v for k, v in state.items()}


def _class_code(
    walk: _Fingerprinter,
    processor: Any,
    versions: dict[str, str | None],
    code: dict[str, dict[str, str]],
) -> list[type]:
    """Add the processor's classes (or the processor, a function) to ``code``, and the versions
    of the packages of its installed base classes to ``versions``; return its classes."""
    cls = type(processor)
    # The processor's classes. Their modules' files go in "code" through the module walk.
    classes = [k for k in cls.__mro__ if k is not object]
    if isinstance(processor, (types.FunctionType, types.MethodType, functools.partial)):
        classes = []
        digest = _guarded(walk, processor, "processor")
        code[_qualname(processor)] = {"digest": _hex(digest), "what": "function"}
    for klass in classes:
        module = klass.__module__ or ""
        top = module.partition(".")[0]
        if top in ("builtins", "coffea") or top in sys.stdlib_module_names:
            continue
        ns = _class_namespace(klass)
        kind = walk.kind(ns)
        key = f"{module}.{klass.__qualname__}"
        if kind == "installed":
            if top not in _VERSIONED:
                versions.setdefault(top, module_version(top))
            try:  # as in earlier versions of the tag, for chunkwise's own example processors
                text = inspect.getsource(klass)
                digest = _digest(b"class source", _enc(text))
            except (OSError, TypeError):
                digest = walk.value(klass, f"class {key}")
            code[key] = {"digest": _short(digest), "what": "class"}
            continue
        if kind == "user":
            walk.schedule_module(ns)
        walk.active[id(klass)] = walk.depth
        try:
            digest = _guarded(walk, klass, f"class {key}", walk.class_body)
        finally:
            del walk.active[id(klass)]
        code[key] = {"digest": _hex(digest), "what": "class"}
    return classes


def _state(walk: _Fingerprinter, processor: Any) -> dict[str, dict[str, str]]:
    """The processor's attributes, each fingerprinted at any depth."""
    state: dict[str, dict[str, str]] = {}
    for name, value in sorted(_processor_state(processor).items()):
        path = f"processor.{name}"
        before = len(walk.problems)
        digest = _guarded(walk, value, path)
        whole = len(walk.problems) > before and walk.problems[-1].startswith(f"{path} (")
        state[name] = {
            "digest": _UNFINGERPRINTABLE if whole else _hex(digest),
            "what": _describe(value),
        }
    return state


def _runner_settings(
    walk: _Fingerprinter, runner: Any, code: dict[str, dict[str, str]]
) -> dict[str, Any]:
    """The Runner settings that change the output (a schema class without a source file goes
    in ``code`` too)."""
    settings: dict[str, Any] = {}
    for name in _OUTPUT_RUNNER_FIELDS:
        value = getattr(runner, name, None)
        if value is None or isinstance(value, (str, int, float, bool)):
            settings[name] = value
        elif isinstance(value, type):
            settings[name] = _qualname(value)
            digest = _guarded(walk, value, f"runner.{name}")  # a schema of the user's: its code
            if walk.kind(_class_namespace(value)) == "nosource":
                code[_qualname(value)] = {"digest": _hex(digest), "what": "class"}
        else:
            digest = _guarded(walk, value, f"runner.{name}")
            settings[name] = f"{_hex(digest)} {_describe(value)}"
    return settings


def _reached(walk: _Fingerprinter, code: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Walk the modules and globals reached so far (they lead to more): each module's entry
    goes in ``code``; the data globals are returned."""
    globals_: dict[str, dict[str, str]] = {}
    while walk.module_queue or walk.global_queue:
        if walk.module_queue:
            ns = walk.module_queue.pop(0)
            name = ns.get("__name__") or "?"
            entry = _guarded(walk, ns, f"module {name}", walk.module_entry)
            code[name] = entry or {"digest": _UNFINGERPRINTABLE, "what": "module"}
            continue
        ns, name = walk.global_queue.pop(0)
        if name not in ns:
            continue
        value = ns[name]
        key = f"{ns.get('__name__') or '?'}.{name}"
        path = f"global {name} of {ns.get('__name__') or '?'}"
        if isinstance(value, types.ModuleType) or (walk.kind(ns) == "user" and _is_code(value)):
            _guarded(walk, value, path, walk.follow)  # its file or version covers its code
            continue
        digest = _guarded(walk, value, path)
        globals_[key] = {
            "digest": _hex(digest),
            "what": _describe(value),
        }
    return globals_


def _warn(walk: _Fingerprinter) -> list[str]:
    """Warn of stale modules and of what could not be fingerprinted; return the latter."""
    problems = sorted(set(walk.problems))
    if walk.stale:
        warnings.warn(
            f"chunkwise: module(s) {', '.join(sorted(walk.stale))} changed on disk after being "
            "imported: this process runs the old code, so the cache tag follows the code in "
            "memory. Restart (or importlib.reload them and re-create the processor) to run "
            "the new code.",
            StaleModuleWarning,
            stacklevel=_user_stacklevel(),
        )
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        warnings.warn(
            f"chunkwise: the cache tag cannot see changes to {shown}: it cannot fingerprint "
            "them. If they change what the processor returns, pass cache_tag= to "
            "chunkwise.run explicitly (and change it when they change).",
            UnfingerprintableStateWarning,
            stacklevel=_user_stacklevel(),
        )
    return problems


def tag_manifest(
    processor: Any, runner: Any = None, file_sums: Any = None, weights: bool = True
) -> dict[str, Any]:
    """Everything that names a processor's cache entries, part by part.

    Parameters
    ----------
    processor : coffea.processor.ProcessorABC or callable
        The processor instance.
    runner : coffea.processor.Runner, optional
        The Runner; ``None`` means ``chunkwise.runner.default_runner()``, as in ``chunkwise.run``.
    file_sums : callable, optional
        ``chunkwise.run``'s per-file hook, whose results are saved with the entries.
    weights : bool, optional
        ``chunkwise.run``'s ``weights``: entries written without the generator weights get a
        tag of their own (``"weights": false``), so that a run that wants them never loads
        entries that lack them.

    Returns
    -------
    dict
        A JSON-serializable dict with these keys:

        ``format``
            chunkwise's cache entry format.
        ``versions``
            ``python`` (major.minor: bytecode depends on it), ``coffea``, ``chunkwise`` and
            the package of any installed base class of the processor.
        ``processor``
            The processor's qualified class name.
        ``code``
            ``{name: {"digest": ..., "what": ...}}`` for the files of the user's own modules
            that define the processor's class and its bases, and every user module they reach
            through their globals and imports, transitively (never installed packages or the
            standard library: their versions cover them); and for each class of the processor
            (its bytecode and class attributes; a class without a source file, e.g. from a
            notebook, is also covered by the globals its methods read, see ``globals``).
        ``globals``
            ``{"module.NAME": {"digest": ..., "what": ...}}``: the globals that the processor's
            code reads, directly or through the functions and classes of the user's that it
            calls: for a user module, its data globals (set at import from a file, or at run
            time, which the module's file does not show); for code without a source file (a
            notebook), every global but modules (a ``METCUT`` or a helper function).
        ``state``
            ``{attribute: {"digest": ..., "what": ...}}`` for the processor's attributes,
            fingerprinted at any depth.
        ``runner``
            The Runner settings that change the output.
        ``hooks``
            ``{"file_sums": {"digest": ..., "what": ...}}`` when a ``file_sums`` hook is given
            (its code, defaults, closure and the user modules and globals it reaches).
        ``unfingerprintable``
            The parts that could not be fingerprinted (each also named in an
            ``UnfingerprintableStateWarning``).

    Warns
    -----
    UnfingerprintableStateWarning
        When part of the state cannot be fingerprinted (an open file, a lock, a socket, a
        module object, a generator, ...): the tag does not change when it does.
    StaleModuleWarning
        When a module of the user's was edited on disk after it was imported.
    """
    if runner is None:
        from chunkwise._coffea import default_runner

        runner = default_runner()
    walk = _Fingerprinter()
    walk.active[id(processor)] = 0  # the processor's own reference to itself is a cycle
    walk.depth = 1
    versions = _versions()
    code: dict[str, dict[str, str]] = {}
    classes = _class_code(walk, processor, versions, code)
    state = _state(walk, processor)
    settings = _runner_settings(walk, runner, code)
    hooks: dict[str, dict[str, str]] = {}
    if file_sums is not None:
        digest = _guarded(walk, file_sums, "file_sums")
        hooks["file_sums"] = {"digest": _hex(digest), "what": _describe(file_sums)}
    # Modules and globals reached so far lead to more.
    globals_ = _reached(walk, code)
    problems = _warn(walk)
    manifest = {
        "format": CACHE_FORMAT,
        "versions": versions,
        "processor": _qualname(processor) if not classes else _qualname(type(processor)),
        "code": dict(sorted(code.items())),
        "globals": dict(sorted(globals_.items())),
        "state": state,
        "runner": settings,
        "unfingerprintable": problems,
    }
    if hooks:  # absent without a hook, so that the tags of runs without one do not change
        manifest["hooks"] = hooks
    if not weights:
        manifest["weights"] = False
    return manifest


def _canonical(manifest: Mapping[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def cache_tag(
    processor: Any, runner: Any = None, file_sums: Any = None, weights: bool = True
) -> str:
    """The cache sub-directory name for a processor and Runner configuration.

    The tag changes when any part of ``tag_manifest(processor, runner)`` changes:

    - the code: the file of every module of the user's own (not installed, not the standard
      library) that defines the processor's class or a base class, and of every user module
      that those reach through their globals or imports, transitively; the processor's classes'
      bytecode and class attributes; for a class without a source file (a notebook), the
      globals its methods read, e.g. a cut defined in another cell;
    - the data globals that the processor's code reads, directly or through functions of the
      user's own modules that it calls (a table loaded at import, a ``YEAR`` set at run time);
    - the processor's attributes, at any depth: numbers, strings, containers with any keys,
      numpy arrays and scalars, histograms, dataclasses and other objects (by their pickled
      state), functions (code, defaults and closures) and classes;
    - the Runner settings that change the output: ``schema``, ``format``, ``maxchunks``,
      ``chunksize`` and ``align_clusters``;
    - the versions of Python (major.minor), coffea and chunkwise, and chunkwise's entry format.

    It does not change with the executor, ``skipbadfiles``, ``savemetrics`` or the versions of
    other installed packages. Files that the processor reads while it runs (a correction file
    opened in ``process``) are not seen: pass an explicit ``cache_tag`` to ``chunkwise.run``
    when those change. Parts it cannot fingerprint are named in an
    ``UnfingerprintableStateWarning``.

    Parameters
    ----------
    processor, runner, file_sums, weights
        As for :func:`tag_manifest`: the processor instance, the Runner (``None`` means the
        default one, as in ``chunkwise.run``), ``chunkwise.run``'s per-file hook and
        ``weights``.

    Returns
    -------
    str
        ``"<ProcessorClass>-<16 hex digits>"``, a valid directory name: the first 16 hex digits
        of the sha256 of the manifest's canonical JSON.

    Examples
    --------
    >>> from chunkwise.tag import cache_tag
    >>> cache_tag(METProcessor(), runner)  # doctest: +SKIP
    'METProcessor-3f1c0a9b7d2e4f60'
    """
    return tag_of(tag_manifest(processor, runner, file_sums, weights))


def tag_of(manifest: Mapping[str, Any]) -> str:
    """The tag that ``cache_tag`` gives for a manifest of ``tag_manifest``."""
    digest = hashlib.sha256(_canonical(manifest)).hexdigest()
    short = str(manifest.get("processor", "")).rpartition(".")[2]
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in short)
    return f"{name or 'processor'}-{digest[:16]}"


def explain(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two manifests, one line per part.

    Parameters
    ----------
    old, new : dict
        Two results of ``tag_manifest`` (e.g. one saved as JSON next to a cache).

    Returns
    -------
    list of str
        Lines such as ``"state 'lumi' changed"``, ``"code of module myhelpers changed"``,
        ``"coffea version 2026.8.0 -> 2026.9.0"`` or ``"runner chunksize 100000 -> 50000"``;
        empty when the manifests are the same.

    Examples
    --------
    >>> explain(tag_manifest(old_processor), tag_manifest(new_processor))  # doctest: +SKIP
    ["state 'cut' changed (int 20 -> int 30)"]
    """
    lines: list[str] = []

    def entries(section: str, label: Any, *, values: bool = False, detail: bool = True) -> None:
        a, b = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(a) | set(b), key=str):
            if key not in a:
                lines.append(f"{label(key, b[key])} added")
            elif key not in b:
                lines.append(f"{label(key, a[key])} removed")
            elif a[key] != b[key]:
                if values:
                    lines.append(f"{label(key, b[key])} {a[key]} -> {b[key]}")
                    continue
                line = f"{label(key, b[key])} changed"
                what_a, what_b = a[key].get("what"), b[key].get("what")
                if detail and what_a != what_b:
                    line += f" ({what_a} -> {what_b})"
                lines.append(line)

    if old.get("format") != new.get("format"):
        lines.append(f"cache entry format {old.get('format')} -> {new.get('format')}")
    entries("versions", lambda k, _: f"{k} version", values=True)
    if old.get("processor") != new.get("processor"):
        lines.append(f"processor {old.get('processor')} -> {new.get('processor')}")
    entries("code", lambda k, e: f"code of {e.get('what', 'code').split(',')[0]} {k}", detail=False)
    entries("globals", lambda k, _: "global {1} of {0}".format(*k.rsplit(".", 1)))
    entries("state", lambda k, _: f"state {k!r}")
    entries("runner", lambda k, _: f"runner {k}", values=True)
    entries("hooks", lambda k, _: f"hook {k}")
    if old.get("weights", True) != new.get("weights", True):
        lines.append(f"weights {old.get('weights', True)} -> {new.get('weights', True)}")
    a, b = set(old.get("unfingerprintable") or ()), set(new.get("unfingerprintable") or ())
    lines += [f"unfingerprintable now: {p}" for p in sorted(b - a)]
    lines += [f"no longer unfingerprintable: {p}" for p in sorted(a - b)]
    known = {"format", "versions", "processor", "code", "globals", "state", "runner"}
    for key in sorted((set(old) | set(new)) - known - {"unfingerprintable"}):
        if old.get(key) != new.get(key):
            lines.append(f"{key} changed")
    return lines


@dataclass(frozen=True)
class Opening:
    """What a cache was opened for by :func:`open_cache`: the very objects, and the manifest
    they made (None for the flat layout, which has none)."""

    processor: Any
    runner_key: tuple[Any, ...]
    file_sums: Any
    weights: bool
    manifest: dict[str, Any] | None


def _runner_key(runner: Any) -> tuple[Any, ...]:
    """The Runner settings that are part of the tag, as values to compare (not fingerprints)."""
    if runner is None:
        from chunkwise._coffea import default_runner

        runner = default_runner()
    return tuple(getattr(runner, name, None) for name in _OUTPUT_RUNNER_FIELDS)


def check_opened(
    cache: ChunkCache,
    processor_instance: Any,
    runner: Any,
    file_sums: Any = None,
    weights: bool = True,
) -> None:
    """Refuse to run a processor with a cache opened for another one.

    The same processor object, hook and Runner settings as :func:`open_cache` was given are
    trusted as they are (nothing is fingerprinted again). Anything else is fingerprinted, and
    must make the manifest the cache was opened with.

    Raises
    ------
    CacheError
        A cache opened for another processor or other settings, or not by ``open_cache``.
    """
    opened = cache.opened_for
    if not isinstance(opened, Opening):
        raise CacheError(
            f"cache {str(cache.directory)!r} was not opened with chunkwise.open_cache: give "
            "run its directory, or open it with chunkwise.open_cache(root, processor, runner)"
        )
    if opened.manifest is None:  # the flat layout: no tag, no manifest, as cache_tag=""
        return
    if (
        opened.processor is processor_instance
        and opened.file_sums is file_sums
        and opened.weights == weights
        and opened.runner_key == _runner_key(runner)
    ):
        return
    manifest = tag_manifest(processor_instance, runner, file_sums, weights)
    if manifest != opened.manifest:
        why = "; ".join(explain(opened.manifest, manifest)[:3]) or "their manifests differ"
        raise CacheError(
            f"cache {str(cache.directory)!r} was opened for another processor or other "
            f"settings ({why}): open it with chunkwise.open_cache for the one you run"
        )


def open_cache(
    root: str | Path,
    processor_instance: Any,
    runner: Any = None,
    *,
    tag: str | None = None,
    key: bytes | None = None,
    force_tag: bool = False,
    file_sums: Callable[[Any], Mapping[str, float] | None] | None = None,
    weights: bool = True,
) -> ChunkCache:
    """Open the cache of a run under its tag, with the tag's manifest written or checked: what
    ``chunkwise.run`` does first, done once, so that the opened cache can be given to ``run``
    and ``status`` (and the processor is fingerprinted once).

    Parameters
    ----------
    root : str or os.PathLike
        A local directory, or a ``root://host//dir`` URL (a string).
    processor_instance, runner, file_sums, weights
        As given to ``run``: they make the tag (``chunkwise.tag.cache_tag``).
    tag : str, optional
        An explicit tag; ``""`` is the flat layout, which has no manifest.
    key : bytes, optional
        The cache's key (``chunkwise.cache.load_key``).
    force_tag : bool, optional
        Write into an explicit tag that another processor or other settings made.

    Returns
    -------
    ChunkCache
        Created and checked; ``prepare()`` is left to the run (it writes a probe and removes
        stale temporaries). It remembers what it was opened for: ``run`` given the same
        processor object and settings fingerprints nothing again, and refuses other ones
        whose tag differs (``check_opened``).

    Raises
    ------
    CacheError
        A cache that cannot be used, or an explicit tag that another processor or other
        settings made, unless ``force_tag``.

    Examples
    --------
    >>> processor = MyProcessor()
    >>> cache = chunkwise.open_cache("chunk_cache", processor, runner)  # doctest: +SKIP
    >>> report = chunkwise.run(fileset, processor, runner, cache=cache)  # doctest: +SKIP
    """
    force = force_tag
    opening = Opening(processor_instance, _runner_key(runner), file_sums, weights, None)
    if tag == "":
        cache = ChunkCache(root, "", key=key)
        cache.opened_for = opening
        return cache
    manifest = tag_manifest(processor_instance, runner, file_sums, weights)
    cache = ChunkCache(root, tag_of(manifest) if tag is None else tag, key=key)
    cache.opened_for = dataclasses.replace(opening, manifest=manifest)
    cache.check(create=True)
    existing = cache.read_manifest()
    if existing == manifest:
        return cache
    if tag is not None and not force:
        if existing is not None:
            why = "; ".join(explain(existing, manifest)[:3]) or "its manifest differs"
            made = f"was made by another processor or other settings ({why})"
        elif next(cache.hashes(), None) is not None:
            # A tag.json that does not verify counts as none (it was warned about): a forged
            # or copied manifest never makes an explicit tag accepted.
            made = "holds entries of unknown origin (no tag.json that verifies)"
        else:
            made = None
        if made is not None:
            raise CacheError(
                f"cache tag {tag!r} {made}: writing into it would mix their outputs; use "
                "another tag, or force_tag=True (--force-tag) if you know they agree"
            )
    try:
        cache.write_manifest(manifest)
    except OSError as err:
        raise CacheError(
            f"cache {str(cache.directory)!r} is not writable ({err.strerror or err}); "
            "choose a directory you can write to"
        ) from None
    return cache
