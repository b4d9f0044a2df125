"""The cache tag: the sub-directory that names the code and settings which made an entry.

``chunkwise.run`` stores entries under ``<cache>/<tag>/<hash>.coffea``. The hash names the chunk
(its files); the tag names everything else that changes the output: the processor's code and
state and the Runner settings. Editing one of those gives a new tag, so stale results are never
served.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping
from typing import Any

from chunkwise.cache import CACHE_FORMAT

__all__ = ["cache_tag"]

# Runner fields that change what a processor returns for the same files. chunksize and
# align_clusters change the row chunks, which processors that count chunks (like the notebook's
# cutflow) see; maxchunks truncates; schema and format change the events themselves.
_OUTPUT_RUNNER_FIELDS = ("schema", "format", "maxchunks", "chunksize", "align_clusters")

_JSONABLE = (str, int, float, bool, type(None))


def _plain(value: Any, depth: int = 0) -> Any:
    """A JSON-able, deterministic stand-in for a processor attribute."""
    if isinstance(value, _JSONABLE):
        return value
    if depth < 4 and isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if depth < 4 and isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _plain(value[k], depth + 1) for k in sorted(value)}
    if isinstance(value, type):
        return f"<class {value.__module__}.{value.__qualname__}>"
    # Anything else (histograms, accumulators, sets whose order varies between processes) is
    # represented by its type only, so that the tag stays stable from one session to the next.
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _code_fingerprint(code: Any) -> list[Any]:
    """A deterministic description of a code object, for classes whose source is unavailable."""
    consts: list[Any] = []
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            consts.append(_code_fingerprint(const))
        elif isinstance(const, frozenset):
            consts.append(sorted(repr(c) for c in const))  # set order varies between processes
        else:
            consts.append(repr(const))
    return [code.co_code.hex(), consts, list(code.co_names)]


def _class_code(klass: type) -> list[Any]:
    functions: list[Any] = []
    for name, member in sorted(vars(klass).items()):
        for attr in ("__func__", "fget", "fset", "fdel"):  # static/class methods, properties
            member = getattr(member, attr, member)
        code = getattr(member, "__code__", None)
        if code is not None:
            functions.append([name, _code_fingerprint(code)])
    return functions


def _class_sources(cls: type) -> list[list[Any]]:
    sources: list[list[Any]] = []
    for klass in cls.__mro__:
        module = klass.__module__ or ""
        if klass is object or module in ("builtins", "abc") or module.startswith("coffea."):
            continue
        try:
            source: Any = inspect.getsource(klass)
        except (OSError, TypeError):
            # Defined in a notebook, a REPL or a module that is not in sys.modules: fall back
            # on the methods' bytecode, which changes when the code does (and with Python's
            # version, which only costs a recomputation).
            source = _class_code(klass)
        sources.append([f"{module}.{klass.__qualname__}", source])
    return sources


def cache_tag(processor: Any, runner: Any = None) -> str:
    """The cache sub-directory name for a processor and Runner configuration.

    The tag changes when any of these change:

    - the source code of the processor's class and of its base classes outside coffea (for a
      class whose source Python cannot find, e.g. one defined in a notebook, its methods'
      bytecode and constants instead);
    - the processor's plain attributes (str, numbers, bools, None and lists/dicts of them,
      e.g. a year or a cut value); other attributes contribute only their type;
    - the Runner settings that change the output: ``schema``, ``format``, ``maxchunks``,
      ``chunksize`` and ``align_clusters``;
    - chunkwise's entry format.

    It does not change with the executor, ``skipbadfiles``, ``savemetrics`` or the coffea
    version. Code that the processor calls outside its class (helper modules, correction files)
    is not seen: pass an explicit ``cache_tag`` to ``chunkwise.run`` when those change.

    Parameters
    ----------
    processor : coffea.processor.ProcessorABC or callable
        The processor instance.
    runner : coffea.processor.Runner, optional
        The Runner; ``None`` means ``chunkwise.runner.default_runner()``, as in ``chunkwise.run``.

    Returns
    -------
    str
        ``"<ProcessorClass>-<16 hex digits>"``, a valid directory name.

    Examples
    --------
    >>> from chunkwise.cache import cache_tag
    >>> cache_tag(METProcessor(), runner)  # doctest: +SKIP
    'METProcessor-3f1c0a9b7d2e4f60'
    """
    if runner is None:
        from chunkwise._coffea import default_runner

        runner = default_runner()
    cls = type(processor)
    state = getattr(processor, "__dict__", {})
    settings = {name: _plain(getattr(runner, name, None)) for name in _OUTPUT_RUNNER_FIELDS}
    description = {
        "format": CACHE_FORMAT,
        "processor": f"{cls.__module__}.{cls.__qualname__}",
        "sources": _class_sources(cls),
        "state": {k: _plain(v) for k, v in sorted(state.items()) if isinstance(k, str)},
        "runner": settings,
    }
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode("utf-8")).hexdigest()
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in cls.__name__) or "processor"
    return f"{name}-{digest[:16]}"
