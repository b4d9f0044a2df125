"""Warnings raised while units run, in every process: captured instead of printed
(:func:`capture`), sent back with the unit's outcome, and shown in the caller (:func:`reissue`)."""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

# _portable is for chunkwise._coffea (the warnings of an outcome sent back).
__all__ = ["RETRY_WARNING", "CaughtWarning", "_portable", "capture", "reissue"]

#: The warning coffea's automatic retries emit before every new attempt. The final error is in
#: the report, so these are noise unless the caller asks for detail.
RETRY_WARNING = "Performed attempt"


@dataclass(frozen=True)
class CaughtWarning:
    """A warning raised while a unit ran, sent back to be shown (or not) in the caller."""

    message: str
    category: type[Warning]
    filename: str
    lineno: int


_QUIET_LOCK = threading.Lock()
_quiet_depth = 0
_quiet_saved: Any = None  # the showwarning the outermost active block replaced
_last_showwarning: Any = warnings.showwarning  # what the last outermost block found
_local = threading.local()


def _route_warning(message: Any, category: Any, filename: Any, lineno: Any, *args: Any) -> None:
    sink = getattr(_local, "sink", None)
    if sink is not None:
        sink.append(CaughtWarning(str(message), category, str(filename), int(lineno)))
        return
    saved = _quiet_saved
    if saved is None and warnings.showwarning is _route_warning:
        # Another thread's warnings.catch_warnings() put this hook back after the last block
        # ended (catch_warnings is not thread-safe): take it out again, and show the warning.
        warnings.showwarning = _last_showwarning
    show = saved if saved is not None else _last_showwarning
    show(message, category, filename, lineno, *args)


@contextlib.contextmanager
def capture() -> Iterator[list[CaughtWarning]]:
    """Collect this thread's warnings inside the block instead of printing them.

    The warnings raised by this thread are appended to the yielded list; other threads'
    warnings are shown as usual. The hook on ``warnings.showwarning`` is reference-counted, so
    nested and concurrent blocks (two ``run`` calls in two threads, dask's worker threads)
    restore exactly what they found when the last one ends. (coffea's progress bars need no
    muting: units run under ``chunkwise._coffea._unit_executor_class``'s executor, which draws
    none.)
    """
    global _quiet_depth, _quiet_saved, _last_showwarning

    with _QUIET_LOCK:
        if _quiet_depth == 0:
            if warnings.showwarning is not _route_warning:
                _last_showwarning = warnings.showwarning
            _quiet_saved = _last_showwarning
            warnings.showwarning = _route_warning
        _quiet_depth += 1
    previous = getattr(_local, "sink", None)
    sink: list[CaughtWarning] = []
    _local.sink = sink
    try:
        yield sink
    finally:
        _local.sink = previous
        with _QUIET_LOCK:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _quiet_saved is not None:
                if warnings.showwarning is _route_warning:
                    warnings.showwarning = _quiet_saved
                _quiet_saved = None


def reissue(caught: Iterable[CaughtWarning], seen: set[tuple[Any, str]], quiet: bool) -> None:
    """Show warnings caught in units in the caller's process, under the caller's filters.

    With ``quiet`` each distinct (category, text) is shown once per run and coffea's retry
    warnings are dropped; without it every warning is shown.
    """
    for w in caught:
        if quiet:
            key = (w.category, w.message)
            if key in seen or w.message.startswith(RETRY_WARNING):
                continue
            seen.add(key)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _portable(caught: list[CaughtWarning]) -> list[CaughtWarning]:
    out = []
    for w in caught:
        category = w.category
        try:
            pickle.loads(pickle.dumps(category))
        except Exception:  # a warning class the caller could not unpickle
            category = UserWarning
        out.append(dataclasses.replace(w, category=category))
    return out
