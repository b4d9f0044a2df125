"""Fingerprinting a processor: digests of values that are the same in every process that
holds an equal value, and the user's modules and globals that its code reaches
(:class:`_Fingerprinter`). Digests of code and whose module it is: ``chunkwise.codebase``."""

from __future__ import annotations

import dis
import functools
import importlib.machinery
import os
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from chunkwise.codebase import (
    _UNFINGERPRINTABLE,
    _class_functions,
    _class_namespace,
    _code_digest,
    _digest,
    _enc,
    _namespace_kind,
    _nested_codes,
    _qualname,
    _resolve_import,
    _short,
    _source_info,
    _type_name,
)

# Private to chunkwise: the names chunkwise.tag imports.
__all__ = ["_Fingerprinter", "_describe", "_guarded", "_is_code"]

_SKIPPED_CLASS_ATTRS = {"_abc_impl", "__abstractmethods__", "__weakref__", "__dict__"}


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
