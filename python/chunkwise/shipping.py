"""What travels between this process and the workers: the processor (its user's own modules
pickled by value, so that workers need only the installed packages) and the outputs (cloudpickle
in an LZ4 frame)."""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import linecache
import os
import pickle
import sys
import threading
import types
import weakref
from typing import Any

__all__ = [
    "LocalProcessor",
    "check_processor",
    "dumps_output",
    "dumps_processor",
    "load_output",
    "loads_processor",
    "pickled_output",
]

_PICKLE_LOCK = threading.Lock()
#: The file name cloudpickle gives the code it pickles by value.
DYNAMIC_CODE = "<dynamic-code>"


@functools.lru_cache(maxsize=1)
def _installed_top_level_names() -> frozenset[str]:
    """The top-level import names of every installed distribution.

    Not ``importlib.metadata.packages_distributions()``: on Python 3.10 it reads only
    ``top_level.txt``, which wheels built by hatchling, flit or maturin (coffea's, chunkwise's)
    do not have, so coffea itself would count as the user's code and be pickled by value. The
    names come from ``top_level.txt`` where there is one, else from the files the
    distribution installed (as Python 3.11 and later infer them).
    """
    names: set[str] = set()
    for dist in importlib.metadata.distributions():
        names.update((dist.read_text("top_level.txt") or "").split())
        for file in dist.files or ():
            parts = file.parts
            if not parts or parts[0] == ".." or parts[0].endswith((".dist-info", ".data")):
                continue
            if len(parts) > 1:
                names.add(parts[0])
            elif file.suffix in (".py", ".so", ".pyd"):
                names.add(parts[0].partition(".")[0])
    return frozenset(names)


def _is_users_own_module(name: str) -> bool:
    """True for a module of the user's own code: not built in, not stdlib, not installed."""
    if name in ("__main__", "builtins") or not name:
        return False  # cloudpickle ships __main__ by value already
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return False
    module = sys.modules.get(name)
    if module is None or getattr(module, "__file__", None) is None:
        return False
    return top not in _installed_top_level_names()


def dumps_processor(processor_instance: Any, file_sums: Any = None, weights: bool = True) -> bytes:
    """Pickle the processor (with the ``file_sums`` hook and whether to read the generator
    weights) so that workers which cannot import their modules still load them.

    The modules of the processor's class, of its base classes and of the hook that are the
    user's own code (not installed, not the standard library) are pickled by value with
    cloudpickle, so an external ``dask worker`` started elsewhere needs only the installed
    packages. Their file names and source text travel with them: cloudpickle names such code
    ``<dynamic-code>``, and :func:`loads_processor` gives it its file back, so that a traceback
    from the processor shows the user's file, line and source, on every worker.
    """
    import cloudpickle

    names = [klass.__module__ for klass in type(processor_instance).__mro__]
    if file_sums is not None:
        names.append(getattr(file_sums, "__module__", None) or "")
    modules = {sys.modules[name] for name in names if _is_users_own_module(name)}
    sources = {module.__name__: _source(module) for module in modules}
    with _PICKLE_LOCK:  # cloudpickle's by-value registry is global: never leave it changed
        registered = []
        try:
            for module in modules:
                try:
                    cloudpickle.register_pickle_by_value(module)
                except ValueError:  # already registered by the caller
                    continue
                registered.append(module)
            return cloudpickle.dumps(
                (processor_instance, file_sums, weights, sources),
                protocol=pickle.HIGHEST_PROTOCOL,
            )
        finally:
            for module in registered:
                cloudpickle.unregister_pickle_by_value(module)


def _source(module: types.ModuleType) -> tuple[str, list[str]]:
    """A module's file name and the lines of its source (none if it cannot be read)."""
    filename = str(module.__file__)
    return filename, linecache.getlines(filename, module.__dict__)


class LocalProcessor:
    """The processor of a run whose units run in the caller's own process: never pickled.

    Pickling a processor by value and loading it back in the process that defined it makes
    cloudpickle hand back the user's own class with its methods replaced by copies, whose
    globals are a snapshot: a later run in the same process would not see a changed module
    global. Here each unit, and each of coffea's work items, gets a ``copy.deepcopy`` of the
    processor instead; its class is untouched. Pickled (coffea pickles what it is given), it is
    a reference to itself in this process.
    """

    _alive: weakref.WeakValueDictionary[int, LocalProcessor] = weakref.WeakValueDictionary()

    def __init__(self, processor_instance: Any, file_sums: Any, weights: bool) -> None:
        self.processor_instance = processor_instance
        self.file_sums = file_sums
        self.weights = weights
        LocalProcessor._alive[id(self)] = self

    def __reduce__(self) -> tuple[Any, ...]:
        return _local_processor, (id(self),)


def _local_processor(key: int) -> LocalProcessor:
    return LocalProcessor._alive[key]


def loads_processor(blob: bytes | LocalProcessor) -> tuple[Any, Any, bool]:
    """The processor, ``file_sums`` hook and ``weights`` of :func:`dumps_processor` (or a
    fresh copy of a :class:`LocalProcessor`'s), with the code of the user's modules named by
    its file again (and its source known to ``linecache`` where the file is not on this
    machine). Runs where the units run."""
    if isinstance(blob, LocalProcessor):
        return copy.deepcopy(blob.processor_instance), blob.file_sums, blob.weights
    import cloudpickle

    processor_instance, file_sums, weights, sources = cloudpickle.loads(blob)
    if sources:
        _restore_filenames(type(processor_instance), file_sums, sources)
    return processor_instance, file_sums, weights


def _restore_filenames(klass: type, hook: Any, sources: dict[str, tuple[str, list[str]]]) -> None:
    """Name the by-value code of the user's modules by its file, and make its source readable.

    Every function reachable from the processor's classes, the hook, and the module globals
    their code reads gets its code objects (nested ones too) back with the module's file name.
    """
    for filename, lines in sources.values():
        if lines and not os.path.exists(filename):  # a worker without the user's files
            # mtime None: linecache.checkcache keeps the entry (it cannot be stale).
            linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
    seen: set[int] = set()
    todo: list[Any] = [hook, *klass.__mro__]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or obj is None:
            continue
        seen.add(id(obj))
        if isinstance(obj, type):
            if obj.__module__ in sources:
                todo.extend(vars(obj).values())
        elif isinstance(obj, (staticmethod, classmethod)):
            todo.append(obj.__func__)
        elif isinstance(obj, property):
            todo.extend((obj.fget, obj.fset, obj.fdel))
        elif isinstance(obj, types.FunctionType) and obj.__module__ in sources:
            filename = sources[obj.__module__][0]
            obj.__code__ = _renamed(obj.__code__, filename)
            names = obj.__code__.co_names
            todo.extend(obj.__globals__[n] for n in names if n in obj.__globals__)


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    """``code`` and the code objects nested in it, named by ``filename`` where cloudpickle
    named them ``<dynamic-code>``."""
    consts = tuple(
        _renamed(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts
    )
    if code.co_filename == DYNAMIC_CODE:
        return code.replace(co_filename=filename, co_consts=consts)
    return code.replace(co_consts=consts) if consts != code.co_consts else code


def check_processor(blob: bytes | LocalProcessor) -> str | None:
    """Load the processor where units run; return why it failed, or None. Runs on a worker."""
    try:
        loads_processor(blob)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def dumps_output(output: Any) -> bytes:
    """An output as it travels and waits for its chunk: cloudpickle in an LZ4 frame.

    Histograms are mostly zeros: compressed, the outputs of a chunk's finished files cost little
    memory while its last files run.
    """
    import cloudpickle
    import lz4.frame

    return lz4.frame.compress(cloudpickle.dumps(output, protocol=pickle.HIGHEST_PROTOCOL))


def pickled_output(payload: bytes) -> bytes:
    """The plain pickle of a :func:`dumps_output` payload, e.g. to write a cache entry."""
    import lz4.frame

    return lz4.frame.decompress(payload)


def load_output(payload: bytes | None) -> Any:
    """The output of a :func:`dumps_output` payload (``None`` for ``None``)."""
    return None if payload is None else pickle.loads(pickled_output(payload))
