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

import ast
import dis
import functools
import hashlib
import importlib.machinery
import inspect
import json
import os
import sys
import sysconfig
import types
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from chunkwise.cache import CACHE_FORMAT, CacheError, ChunkCache
from chunkwise.errors import StaleModuleWarning, UnfingerprintableStateWarning

__all__ = [
    "StaleModuleWarning",
    "UnfingerprintableStateWarning",
    "cache_tag",
    "explain",
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

# Packages whose code is covered by their version in the manifest, never by hashing their files.
_VERSIONED = ("coffea", "chunkwise")

_DIGEST_CHARS = 16  # hex digits of each component's digest in the manifest
_UNFINGERPRINTABLE = "unfingerprintable"
_UNKNOWN = "__chunkwise_unknown_module__"
_SKIPPED_CLASS_ATTRS = {"_abc_impl", "__abstractmethods__", "__weakref__", "__dict__"}


# -- digests ----------------------------------------------------------------------------------
def _digest(*parts: bytes | memoryview) -> bytes:
    """sha256 of length-framed parts: unambiguous however the parts are cut."""
    h = hashlib.sha256()
    for part in parts:
        n = part.nbytes if isinstance(part, memoryview) else len(part)
        h.update(n.to_bytes(8, "little"))
        h.update(part)
    return h.digest()


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _short(digest: bytes) -> str:
    return digest.hex()[:_DIGEST_CHARS]


def _hex(digest: bytes | None) -> str:
    """A manifest digest: 16 hex digits, or "unfingerprintable"."""
    return _UNFINGERPRINTABLE if digest is None else _short(digest)


def _qualname(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or "?"
    return f"{module}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def _type_name(value: Any) -> str:
    return _qualname(type(value))


def _const_digest(const: Any) -> bytes:
    """A code object's constant, independent of PYTHONHASHSEED (frozensets are sorted)."""
    if isinstance(const, types.CodeType):
        return _code_digest(const)
    if isinstance(const, tuple):
        return _digest(b"tuple", *(_const_digest(c) for c in const))
    if isinstance(const, frozenset):
        return _digest(b"frozenset", *sorted(_const_digest(c) for c in const))
    return _digest(_enc(type(const).__name__), _enc(repr(const)))


def _code_digest(code: types.CodeType) -> bytes:
    """What a code object does, without its line numbers or file name."""
    return _digest(
        b"code",
        code.co_code,
        _enc(",".join(code.co_names)),
        _enc(f"{code.co_argcount},{code.co_posonlyargcount},{code.co_kwonlyargcount}"),
        getattr(code, "co_exceptiontable", b""),
        *(_const_digest(c) for c in code.co_consts),
    )


def _nested_codes(code: types.CodeType) -> Iterable[types.CodeType]:
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield const
            yield from _nested_codes(const)


_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL", "DELETE_GLOBAL"})


_ATTR_OPS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})


@functools.lru_cache(maxsize=4096)
def _global_names(code: types.CodeType) -> frozenset[str]:
    """The globals a code object (and the code nested in it) reads, not its attribute names.

    A global followed by attribute loads is given with them, dotted (``"helpers.select"`` for
    ``helpers.select(events)``), so that a function reached through a module is followed too.
    """
    names = set()
    for c in (code, *_nested_codes(code)):
        chain: list[str] = []
        for ins in dis.get_instructions(c):
            if ins.opname in _ATTR_OPS and chain:
                chain.append(ins.argval)
                continue
            if chain:
                names.add(".".join(chain))
            chain = [ins.argval] if ins.opname in _GLOBAL_OPS else []
        if chain:
            names.add(".".join(chain))
    return frozenset(names)


def _unwrap_member(member: Any) -> Any:
    """The function behind a staticmethod, classmethod or property (its getter)."""
    if isinstance(member, (staticmethod, classmethod)):
        return member.__func__
    if isinstance(member, property):
        return member.fget
    return member


def _class_functions(cls: type) -> list[tuple[str, types.FunctionType]]:
    functions = []
    for name, member in vars(cls).items():
        if isinstance(member, property):
            for accessor in ("fget", "fset", "fdel"):
                f = getattr(member, accessor)
                if isinstance(f, types.FunctionType):
                    functions.append((f"{name}.{accessor}", f))
            continue
        member = _unwrap_member(member)
        if isinstance(member, types.FunctionType):
            functions.append((name, member))
    return sorted(functions, key=lambda item: item[0])


# -- whose module is it -----------------------------------------------------------------------
def _installed_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib") if k in paths}
    return tuple(sorted(d.rstrip(os.sep) + os.sep for d in dirs))


_INSTALLED_DIRS = _installed_dirs()
_FILE_KIND: dict[str, str] = {}


def _file_kind(path: str) -> str:
    """``"installed"`` for files of the standard library or of site-packages, else ``"user"``."""
    kind = _FILE_KIND.get(path)
    if kind is None:
        real = os.path.realpath(path)
        parts = real.split(os.sep)
        if "site-packages" in parts or "dist-packages" in parts:
            kind = "installed"
        elif real.startswith(_INSTALLED_DIRS):
            kind = "installed"
        elif not os.path.isfile(real):
            kind = "nosource"
        else:
            kind = "user"
        _FILE_KIND[path] = kind
    return kind


def _namespace_kind(ns: Mapping[str, Any]) -> str:
    """How to fingerprint the code of a module, given its globals.

    ``"user"``: the user's own module with a source file (not built in, not the standard
    library, not in site-packages, not coffea or chunkwise), hashed by its file.
    ``"installed"``: covered by versions, fingerprinted by name only.
    ``"nosource"``: the user's code without a file (a notebook, ``python -c``, exec), whose
    functions are fingerprinted by their bytecode and the globals they read.

    The rule follows ``chunkwise._coffea._is_users_own_module`` (which decides what is shipped
    to workers by value), except that it decides "installed" by the file's place rather than
    by package metadata: a package of your own installed in editable mode is your code too.
    """
    name = ns.get("__name__") or ""
    top = name.partition(".")[0]
    if (
        ns.get(_UNKNOWN)
        or top in sys.stdlib_module_names
        or top in sys.builtin_module_names
        or top in _VERSIONED
    ):
        return "installed"
    file = ns.get("__file__")
    if not isinstance(file, str) or not file:
        return "nosource"
    return _file_kind(file)


def _class_namespace(cls: type) -> Mapping[str, Any]:
    """The globals of the module that defined ``cls``.

    Its module if the class is found there under its name; else (a class nested in a function,
    or from a module that was re-imported or removed from ``sys.modules``) the globals of its
    own methods; else its module by name. A class found nowhere (a compiled extension's) counts
    as installed.
    """
    module = sys.modules.get(cls.__module__)
    if module is not None and getattr(module, cls.__name__, None) is cls:
        return vars(module)
    prefix = f"{cls.__qualname__}."
    for _, f in _class_functions(cls):
        if f.__qualname__.startswith(prefix):
            return f.__globals__
    if module is not None:
        return vars(module)
    return {"__name__": cls.__module__, _UNKNOWN: True}


# -- source files -----------------------------------------------------------------------------
class _SourceInfo:
    """What the tag needs from one version of a module's file (cached by mtime and size)."""

    def __init__(self, path: str, data: bytes) -> None:
        self.digest = _digest(b"file", data)
        self.checkable = path.endswith(".py")  # else compiled (.pyc, .so): no code to compare
        self.codes: set[bytes] = set()  # digests of every code object the file compiles to
        self.imports: set[tuple[str, int]] = set()  # (module, level) of every import statement
        if not self.checkable:
            return
        try:
            tree = ast.parse(data, path)
            code = compile(tree, path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            return  # mid-edit: the file cannot be what the process runs (no codes match)
        self.codes = {_code_digest(c) for c in _nested_codes(code)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                self.imports.update((alias.name, 0) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                self.imports.add((base, node.level))
                for alias in node.names:
                    self.imports.add((f"{base}.{alias.name}" if base else alias.name, node.level))


_SOURCES: dict[str, tuple[tuple[int, int], _SourceInfo]] = {}


def _source_info(path: str) -> _SourceInfo | None:
    try:
        stat = os.stat(path)
        key = (stat.st_mtime_ns, stat.st_size)
        cached = _SOURCES.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        with open(path, "rb") as f:
            info = _SourceInfo(path, f.read())
    except OSError:
        return None
    _SOURCES[path] = (key, info)
    return info


def _resolve_import(name: str, level: int, ns: Mapping[str, Any]) -> str:
    if not level:
        return name
    package = ns.get("__package__") or ""
    parts = package.split(".") if package else []
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, name] if name else parts)


def _wrapped_function(value: Any) -> types.FunctionType | None:
    """The Python function inside a wrapper (functools.wraps, lru_cache, numba), if any."""
    for attribute in ("__wrapped__", "py_func"):
        try:
            wrapped = getattr(value, attribute, None)
        except Exception:  # a proxy whose __getattr__ does more than look
            return None
        if isinstance(wrapped, types.FunctionType):
            return wrapped
    return None


def _is_code(value: Any) -> bool:
    """Code rather than data: covered by its module's source or its package's version."""
    code_types = (
        type,
        types.ModuleType,
        types.FunctionType,
        types.BuiltinFunctionType,
        types.MethodType,
    )
    return isinstance(value, code_types) or _wrapped_function(value) is not None


# -- the walk ---------------------------------------------------------------------------------
class _Fingerprinter:
    """Digests of values, and the modules and globals they lead to."""

    def __init__(self) -> None:
        self.numpy = sys.modules.get("numpy")
        self.active: dict[int, int] = {}  # id -> depth, for cycles
        self.memo: dict[int, tuple[Any, bytes]] = {}  # keeps the object alive: ids stay unique
        self.depth = 0
        self.problems: list[str] = []
        self.problem_ids: set[int] = set()
        self.kinds: dict[int, tuple[Mapping[str, Any], str]] = {}
        self.module_queue: list[Mapping[str, Any]] = []
        self.modules_seen: set[str] = set()
        self.global_queue: list[tuple[Mapping[str, Any], str]] = []
        self.globals_seen: set[tuple[str, str]] = set()
        self.stale: list[str] = []

    # -- code ---------------------------------------------------------------------------------
    def kind(self, ns: Mapping[str, Any]) -> str:
        cached = self.kinds.get(id(ns))
        if cached is None:
            cached = self.kinds[id(ns)] = (ns, _namespace_kind(ns))
        return cached[1]

    def schedule_module(self, ns: Mapping[str, Any]) -> None:
        name = ns.get("__name__") or "?"
        if name not in self.modules_seen:
            self.modules_seen.add(name)
            self.module_queue.append(ns)

    def schedule_globals(self, ns: Mapping[str, Any], names: Iterable[str]) -> None:
        """Queue the globals that code reads; ``"mod.attr"``: also ``attr`` of a user module."""
        for dotted in sorted(names):
            name, *attributes = dotted.split(".")
            self._schedule_global(ns, name)
            target = ns.get(name)
            while attributes and isinstance(target, types.ModuleType):
                module_ns = vars(target)
                if self.kind(module_ns) == "installed":
                    break
                name = attributes.pop(0)
                self._schedule_global(module_ns, name)
                target = module_ns.get(name)

    def _schedule_global(self, ns: Mapping[str, Any], name: str) -> None:
        key = (ns.get("__name__") or "?", name)
        if name in ns and not name.startswith("__") and key not in self.globals_seen:
            self.globals_seen.add(key)
            self.global_queue.append((ns, name))

    def code_reference(self, value: Any) -> None:
        """Follow a module, function or class found in a user module's globals."""
        ns: Mapping[str, Any]
        if isinstance(value, types.ModuleType):
            ns = vars(value)
        elif isinstance(value, types.FunctionType):
            ns = value.__globals__
        elif isinstance(value, type):
            ns = _class_namespace(value)
        else:
            return
        if self.kind(ns) == "user":
            self.schedule_module(ns)

    def module_entry(self, ns: Mapping[str, Any], label: str) -> dict[str, str]:
        """The code entry of a user module: its file, plus the loaded code if that differs."""
        name = ns.get("__name__") or "?"
        file = ns["__file__"]
        info = _source_info(file)
        if info is None:
            self.problems.append(f"module {name} (its file {os.path.basename(file)} is unreadable)")
            return {"digest": _UNFINGERPRINTABLE, "what": "module"}
        # Every module, function or class the module's globals hold may be code of the user's.
        for value in list(ns.values()):
            self.code_reference(value)
        for imported, level in sorted(info.imports):
            module = sys.modules.get(_resolve_import(imported, level, ns))
            if module is not None:
                self.code_reference(module)
        # A function or method that is not in the file any more: the process runs old code.
        loaded = []
        for value in list(ns.values()):
            if isinstance(value, types.FunctionType) and value.__globals__ is ns:
                loaded.append(value.__code__)
            elif isinstance(value, type) and _class_namespace(value) is ns:
                loaded.extend(f.__code__ for _, f in _class_functions(value))
        digests = sorted({_code_digest(c) for c in loaded if c.co_filename == file})
        # Only code that Python's own loader compiled can be compared with the file: an import
        # hook (pytest's assertion rewriting, say) compiles something else from it.
        loader = ns.get("__loader__")
        plain = type(loader) in (importlib.machinery.SourceFileLoader, type(None))
        if not (info.checkable and plain) or all(d in info.codes for d in digests):
            return {"digest": _short(_digest(b"module", info.digest)), "what": "module"}
        self.stale.append(name)
        entry = _digest(b"stale module", info.digest, *digests)
        return {"digest": _short(entry), "what": "module, edited since it was imported"}

    def function(self, f: types.FunctionType, path: str) -> bytes:
        ns = f.__globals__
        kind = self.kind(ns)
        parts = [
            b"function",
            _enc(_qualname(f)),
            self.value(f.__defaults__, f"{path}.__defaults__"),
            self.value(f.__kwdefaults__, f"{path}.__kwdefaults__"),
        ]
        for name, cell in zip(f.__code__.co_freevars, f.__closure__ or (), strict=False):
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                parts.append(b"empty cell")
            else:
                parts.append(self.value(contents, f"{path}.<closure {name}>"))
        if kind != "installed":
            parts.append(_code_digest(f.__code__))
            # The globals it reads: for a user module, the data among them (set at import from
            # a file, or at run time, which the module's file does not show) and the code they
            # lead to; without a source file, all of them.
            self.schedule_globals(ns, _global_names(f.__code__))
        if kind == "user":
            self.schedule_module(ns)
        return _digest(*parts)

    def follow(self, value: Any, path: str) -> None:
        """Walk the code that a user module's function reads through a global."""
        if isinstance(value, type) and self.kind(_class_namespace(value)) != "installed":
            for name, f in _class_functions(value):
                self.value(f, f"{path}.{name}")
        self.value(value, path, module_ok=True)

    def class_body(self, cls: type, path: str) -> bytes:
        """A class by its methods' bytecode and its other attributes' values."""
        parts = [b"class body", _enc(_qualname(cls))]
        for name, f in _class_functions(cls):
            parts += [_enc(name), self.function(f, f"{path}.{name}")]
        for name, member in sorted(vars(cls).items()):
            if (name.startswith("__") and name.endswith("__")) or name in _SKIPPED_CLASS_ATTRS:
                continue
            if isinstance(member, (staticmethod, classmethod, property, types.FunctionType)):
                continue
            if type(member).__name__ in ("member_descriptor", "getset_descriptor"):
                continue  # __slots__
            parts += [_enc(name), self.value(member, f"{path}.{name}")]
        return _digest(*parts)

    def klass(self, cls: type, path: str) -> bytes:
        ns = _class_namespace(cls)
        kind = self.kind(ns)
        if kind == "user":
            self.schedule_module(ns)
        if kind != "nosource":
            return _digest(b"class", _enc(_qualname(cls)))
        bases = self.value(cls.__bases__, f"{path}.__bases__")
        return _digest(b"class", _enc(_qualname(cls)), bases, self.class_body(cls, path))

    # -- values -------------------------------------------------------------------------------
    def problem(self, path: str, value: Any) -> bytes:
        name = _type_name(value)
        article = "an" if name.lstrip("_")[:1].lower() in "aeiou" else "a"
        self.problems.append(f"{path} ({article} {name})")
        self.problem_ids.add(id(value))
        return _digest(b"unfingerprintable", _enc(name))

    def value(self, value: Any, path: str, *, module_ok: bool = False) -> bytes:
        """A digest of ``value`` that is the same in every process that holds an equal value."""
        t = type(value)
        if value is None:
            return b"\x00" * 32
        if t is bool:
            return _digest(b"bool", b"1" if value else b"0")
        if t is int:
            return _digest(b"int", _enc(str(value)))
        if t is float or t is complex:
            return _digest(_enc(t.__name__), _enc(repr(value)))
        if t is str:
            return _digest(b"str", _enc(value))
        if t is bytes:
            return _digest(b"bytes", value)
        np = self.numpy
        if np is not None and isinstance(value, np.generic):
            return _digest(b"numpy scalar", _enc(value.dtype.str), value.tobytes())
        if isinstance(value, types.ModuleType):
            ns = vars(value)
            if self.kind(ns) == "user":
                self.schedule_module(ns)
            # A module's state (its globals, mutable at run time) is not fingerprinted.
            return (
                _digest(b"module", _enc(value.__name__)) if module_ok else self.problem(path, value)
            )
        key = id(value)
        if key in self.active:
            return _digest(b"cycle", _enc(str(self.depth - self.active[key])))
        memo = self.memo.get(key)
        if memo is not None:
            if key in self.problem_ids:  # name it again, at this path
                return self.problem(path, value)
            return memo[1]
        self.active[key] = self.depth
        self.depth += 1
        try:
            result = self._composite(value, path)
        finally:
            self.depth -= 1
            del self.active[key]
        self.memo[key] = (value, result)
        return result

    def _composite(self, value: Any, path: str) -> bytes:
        t = type(value)
        name = _enc(_type_name(value))
        np = self.numpy
        if isinstance(value, (list, tuple)):
            parts = [self.value(v, f"{path}[{i}]") for i, v in enumerate(value)]
            return _digest(b"sequence", name, *parts, *self._extra(value, path))
        if isinstance(value, (dict, types.MappingProxyType)):
            parts = []
            for k, v in value.items():
                label = f"[{repr(k)[:60]}]"
                parts.append(self.value(k, f"{path}<key {label}>") + self.value(v, path + label))
            factory = getattr(value, "default_factory", None)
            extra = [self.value(factory, f"{path}.default_factory")] if factory else []
            return _digest(b"mapping", name, *sorted(parts), *extra, *self._extra(value, path))
        if isinstance(value, (set, frozenset)):
            parts = sorted(self.value(v, f"{path}{{...}}") for v in value)
            return _digest(b"set", name, *parts, *self._extra(value, path))
        if t is bytearray or t is memoryview:
            return _digest(name, bytes(value))
        if np is not None and isinstance(value, np.ndarray):
            return self._array(value, path)
        if isinstance(value, types.FunctionType):
            return self.function(value, path)
        if isinstance(value, types.MethodType):
            func = self.value(value.__func__, f"{path}.__func__")
            return _digest(b"method", func, self.value(value.__self__, f"{path}.__self__"))
        if isinstance(value, type):
            return self.klass(value, path)
        if isinstance(value, types.CodeType):
            return _code_digest(value)
        wrapped = _wrapped_function(value)
        if wrapped is not None:  # functools.wraps, lru_cache, numba, ...
            return _digest(b"wrapper", name, self.value(wrapped, f"{path}.__wrapped__"))
        return self._object(value, path)

    def _extra(self, value: Any, path: str) -> list[bytes]:
        """The ``__dict__`` of a subclass of a built-in container, if it has one."""
        extra = getattr(value, "__dict__", None)
        return [self.value(extra, path)] if extra else []

    def _array(self, array: Any, path: str) -> bytes:
        dtype = array.dtype
        head = [b"ndarray", _enc(_type_name(array)), _enc(dtype.str), _enc(repr(array.shape))]
        if dtype.names is not None:
            head.append(_enc(repr(dtype.descr)))
        if dtype.hasobject:  # pointers: walk the objects instead
            body = self.value(array.tolist(), path)
        else:
            contiguous = sys.modules["numpy"].ascontiguousarray(array)
            body = _digest(memoryview(contiguous).cast("B"))
        return _digest(*head, body, *self._extra(array, path))

    def _object(self, value: Any, path: str) -> bytes:
        """Any other object, through the state it would be pickled with."""
        cls = type(value)
        head = self.value(cls, f"{path}.__class__")
        try:
            reduced = value.__reduce_ex__(4)
        except Exception:
            return self.problem(path, value)
        if isinstance(reduced, str):  # a global, pickled by name
            return _digest(b"global", head, _enc(reduced))
        if not isinstance(reduced, tuple) or len(reduced) < 2:
            return self.problem(path, value)
        func, args, *rest = reduced
        parts = [b"object", head, self.value(func, f"{path}<reduce>")]
        args_path = f"{path}<args>"
        parts.append(self.value(args, args_path))
        state = rest[0] if rest else None
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state_dict, slots = state  # (__dict__, __slots__ values)
            parts.append(self._state(state_dict, path))
            parts.append(self._state(slots, path))
        else:
            parts.append(self._state(state, path))
        if len(rest) > 1 and rest[1] is not None:
            parts.append(self.value(list(rest[1]), f"{path}<items>"))
        if len(rest) > 2 and rest[2] is not None:
            parts.append(self.value(dict(rest[2]), path))
        return _digest(*parts)

    def _state(self, state: Any, path: str) -> bytes:
        if isinstance(state, dict) and all(isinstance(k, str) for k in state):
            entries = sorted(
                self.value(k, path) + self.value(v, f"{path}.{k}") for k, v in state.items()
            )
            return _digest(b"state", *entries)
        return self.value(state, f"{path}<state>")


# -- manifest ---------------------------------------------------------------------------------
def _describe(value: Any) -> str:
    """A short, deterministic description of a value for the manifest."""
    t = type(value)
    if value is None or t in (bool, int, float, complex, str):
        text = repr(value)
        return f"{t.__name__} {text}" if len(text) <= 40 else f"{t.__name__} of {len(text)} chars"
    try:
        shape = getattr(value, "shape", None)
        dtype = getattr(value, "dtype", None)
    except Exception:
        shape = dtype = None
    if isinstance(shape, tuple) and dtype is not None:
        return f"{_type_name(value)} {dtype} {shape}"
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return f"{_type_name(value)} of {len(value)}"
    if isinstance(value, type):
        return f"class {_qualname(value)}"
    return _type_name(value)


def _version(module_name: str) -> str | None:
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = __import__(module_name)
        except ImportError:
            return None
    version = getattr(module, "__version__", None)
    return version if isinstance(version, str) else None


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


def _guarded(
    walk: _Fingerprinter, value: Any, path: str, how: Callable[[Any, str], Any] | None = None
) -> Any:
    """``walk.value`` (or ``how``), or None and a problem named if fingerprinting fails."""
    try:
        if how is not None:
            return how(value, path)
        return walk.value(value, path, module_ok=path.startswith("global "))
    except RecursionError:
        walk.problems.append(f"{path} (nested too deeply)")
    except Exception as exc:  # a __reduce_ex__ or a property that raises, say
        walk.problems.append(f"{path} (failed: {type(exc).__name__})")
    return None


def _processor_state(processor: Any) -> dict[str, Any]:
    state = dict(getattr(processor, "__dict__", {}))
    for klass in type(processor).__mro__:
        slots = vars(klass).get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__") and hasattr(processor, name):
                state.setdefault(name, getattr(processor, name))
    return {str(k): v for k, v in state.items()}


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
    cls = type(processor)
    walk = _Fingerprinter()
    walk.active[id(processor)] = 0  # the processor's own reference to itself is a cycle
    walk.depth = 1

    implementation = sys.implementation.name
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    versions: dict[str, str | None] = {
        "python": python if implementation == "cpython" else f"{implementation} {python}",
        "coffea": _version("coffea"),
        "chunkwise": _version("chunkwise"),
    }

    # The processor's classes. Their modules' files go in "code" through the module walk.
    code: dict[str, dict[str, str]] = {}
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
                versions.setdefault(top, _version(top))
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

    hooks: dict[str, dict[str, str]] = {}
    if file_sums is not None:
        digest = _guarded(walk, file_sums, "file_sums")
        hooks["file_sums"] = {"digest": _hex(digest), "what": _describe(file_sums)}

    # Modules and globals reached so far lead to more.
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
    manifest = {
        "format": CACHE_FORMAT,
        "versions": versions,
        "processor": _qualname(processor) if not classes else _qualname(cls),
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
    processor : coffea.processor.ProcessorABC or callable
        The processor instance.
    runner : coffea.processor.Runner, optional
        The Runner; ``None`` means ``chunkwise.runner.default_runner()``, as in ``chunkwise.run``.

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


def open_cache(
    root: str | Path,
    tag: str | None,
    key: bytes | None,
    force: bool,
    processor_instance: Any,
    runner: Any,
    file_sums: Callable[[Any], Mapping[str, float] | None] | None = None,
    weights: bool = True,
) -> ChunkCache:
    """The cache of a run, with its tag's manifest written or checked, as ``run`` opens it.

    ``root`` is a local directory or a ``root://host//dir`` URL (a string).

    The flat layout (``tag=""``) has no manifest. ``tag=None`` derives the tag from the
    manifest (``chunkwise.tag.cache_tag``), which covers the ``file_sums`` hook.

    Returns
    -------
    ChunkCache

    Raises
    ------
    CacheError
        An explicit tag that another processor or other settings made, unless ``force``.
    """
    if tag == "":
        return ChunkCache(root, "", key=key)
    manifest = tag_manifest(processor_instance, runner, file_sums, weights)
    cache = ChunkCache(root, tag_of(manifest) if tag is None else tag, key=key)
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
