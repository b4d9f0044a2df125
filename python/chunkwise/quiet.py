"""Warnings raised while units run, in every process: captured instead of printed
(:func:`capture`), sent back with the unit's outcome, and shown in the caller (:func:`reissue`)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import sysconfig
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

# _portable is for chunkwise._coffea (the warnings of an outcome sent back).
__all__ = [
    "RETRY_WARNING",
    "CaughtWarning",
    "WarningTally",
    "_portable",
    "capture",
    "reissue",
]

#: The warning coffea's automatic retries emit before every new attempt. The final error is in
#: the report, so these are noise unless the caller asks for detail.
RETRY_WARNING = "Performed attempt"


@dataclass(frozen=True)
class CaughtWarning:
    """A warning raised while a unit ran, sent back to be shown (or not) in the caller.

    ``origin`` names the installed package (or Python's standard library) module that raised
    it, e.g. ``"coffea's nanoevents.schemas.nanoaod"``, and is None for the user's own code;
    it is worked out where the warning was raised, where the path means something.
    """

    message: str
    category: type[Warning]
    filename: str
    lineno: int
    origin: str | None = None


def _origin(filename: str) -> str | None:
    """Which installed package or standard library module ``filename`` is, or None for a file
    of the user's own (anything else)."""
    path = os.path.abspath(filename)
    parts = path.split(os.sep)
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            inside = parts[len(parts) - parts[::-1].index(marker) :]
            break
    else:
        stdlib = sysconfig.get_paths()["stdlib"]
        if not path.startswith(stdlib + os.sep):
            return None
        module = os.path.relpath(path, stdlib).removesuffix(".py").replace(os.sep, ".")
        return f"Python's {module}"
    if not inside:
        return None
    top, module = inside[0], ".".join(inside[1:]).removesuffix(".py").removesuffix(".__init__")
    return f"{top}'s {module}" if module else top


@dataclass
class WarningTally:
    """The warnings of installed packages that a quiet run counted instead of showing: per
    origin, how many (as the caller's filters let through) and the first one."""

    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    first: dict[str, str] = dataclasses.field(default_factory=dict)

    def add(self, caught: CaughtWarning) -> None:
        origin = caught.origin or "?"
        self.counts[origin] = self.counts.get(origin, 0) + 1
        text = " ".join(caught.message.split())
        self.first.setdefault(origin, f"{caught.category.__name__}: {text}")

    def notes(self) -> list[str]:
        """One line per origin, most first."""
        return [
            f"{n} warning{'s' if n > 1 else ''} from {origin} (first: {self.first[origin]}); "
            "quiet=False (--verbose) shows each"
            for origin, n in sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        ]


_QUIET_LOCK = threading.Lock()
_quiet_depth = 0
_quiet_saved: Any = None  # the showwarning the outermost active block replaced
_last_showwarning: Any = warnings.showwarning  # what the last outermost block found
_local = threading.local()


def _route_warning(message: Any, category: Any, filename: Any, lineno: Any, *args: Any) -> None:
    sink = getattr(_local, "sink", None)
    if sink is not None:
        where = str(filename)
        sink.append(CaughtWarning(str(message), category, where, int(lineno), _origin(where)))
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


def reissue(
    caught: Iterable[CaughtWarning],
    seen: set[tuple[Any, str]],
    quiet: bool,
    tally: WarningTally | None = None,
) -> None:
    """Show warnings caught in units in the caller's process, under the caller's filters.

    With ``quiet``, coffea's retry warnings are dropped, the warnings of installed packages
    (coffea's schemas, uproot, ...) that the caller's filters let through are counted in
    ``tally`` instead of shown, and each distinct (category, text) of the user's own code is
    shown once per run. Without it every warning is shown.
    """
    for w in caught:
        if quiet:
            if w.message.startswith(RETRY_WARNING):
                continue
            if w.origin is not None and tally is not None:
                with capture() as let_through:  # the filters decide; nothing is printed
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                if let_through:
                    tally.add(w)
                continue
            key = (w.category, w.message)
            if key in seen:
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
