"""The user's code as the cache tag sees it: digests of code objects (without their line
numbers), whose module a function or class is (the user's own, installed, or without a source
file), and what a module's file holds (its digest, its code objects, its imports)."""

from __future__ import annotations

import ast
import hashlib
import os
import sys
import sysconfig
import types
from collections.abc import Iterable, Mapping
from typing import Any

# Private to chunkwise: the names chunkwise.fingerprint and chunkwise.tag import.
__all__ = [
    "_UNFINGERPRINTABLE",
    "_VERSIONED",
    "_class_functions",
    "_class_namespace",
    "_code_digest",
    "_digest",
    "_enc",
    "_hex",
    "_namespace_kind",
    "_nested_codes",
    "_qualname",
    "_resolve_import",
    "_short",
    "_source_info",
    "_type_name",
]

# Packages whose code is covered by their version in the manifest, never by hashing their files.
_VERSIONED = ("coffea", "chunkwise")

_DIGEST_CHARS = 16  # hex digits of each component's digest in the manifest
_UNFINGERPRINTABLE = "unfingerprintable"
_UNKNOWN = "__chunkwise_unknown_module__"


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

    The rule follows ``chunkwise.shipping._is_users_own_module`` (which decides what is shipped
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
