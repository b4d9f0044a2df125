"""What travels between this process and the workers: the processor (its user's own modules
pickled by value, so that workers need only the installed packages) and the outputs (cloudpickle
in an LZ4 frame)."""

from __future__ import annotations

import functools
import importlib.metadata
import pickle
import sys
import threading
from typing import Any

__all__ = [
    "check_processor",
    "dumps_output",
    "dumps_processor",
    "load_output",
    "pickled_output",
]

_PICKLE_LOCK = threading.Lock()


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
    packages. ``chunkwise._coffea.process_unit`` loads the pair.
    """
    import cloudpickle

    names = [klass.__module__ for klass in type(processor_instance).__mro__]
    if file_sums is not None:
        names.append(getattr(file_sums, "__module__", None) or "")
    modules = {sys.modules[name] for name in names if _is_users_own_module(name)}
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
                (processor_instance, file_sums, weights), protocol=pickle.HIGHEST_PROTOCOL
            )
        finally:
            for module in registered:
                cloudpickle.unregister_pickle_by_value(module)


def check_processor(blob: bytes) -> str | None:
    """Load the processor where units run; return why it failed, or None. Runs on a worker."""
    import cloudpickle

    try:
        cloudpickle.loads(blob)
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
