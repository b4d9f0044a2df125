"""What became of one file: ``ok``, ``bad`` or ``bug``.

A file is *bad* when its error, or an exception on the error's ``__cause__`` chain, is of a type
in the Runner's ``skipbadfiles`` (coffea's rule); any other error is a *bug* that must stop the
run. This module holds that rule, the one line each bad file gets in the report, and the
``Outcome`` a worker sends back for each file. Nothing here imports coffea.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Literal

from chunkwise.errors import OptionError, WorkerError, causes
from chunkwise.quiet import CaughtWarning
from chunkwise.retry import is_transient

__all__ = [
    "Outcome",
    "OutcomeKind",
    "allowed_exceptions",
    "bad_file_errors_named",
    "bad_file_types",
    "default_bad_file_errors",
    "error_text",
    "is_allowed",
    "user_exception",
    "user_traceback",
]


def default_bad_file_errors() -> tuple[type[BaseException], ...]:
    """The errors that make a bad file by default: ``OSError`` (missing, unreadable or
    truncated files, network failures) and ``uproot.KeyInFileError`` (no such tree; coffea's
    ``UprootMissTreeError`` is one), as the seed notebook suggests."""
    import uproot

    return (OSError, uproot.exceptions.KeyInFileError)


def bad_file_types(skipbadfiles: Any) -> tuple[type[BaseException], ...]:
    """The exception types that a Runner's ``skipbadfiles`` makes a bad file: ``True`` is
    ``OSError`` alone, as in coffea; a tuple of types is itself; ``False`` is none."""
    if skipbadfiles is True:
        return (OSError,)
    return tuple(skipbadfiles) if skipbadfiles else ()


def allowed_exceptions(runner: Any) -> tuple[type[BaseException], ...]:
    """The exception types that the Runner's ``skipbadfiles`` makes a bad file."""
    return bad_file_types(runner.skipbadfiles)


def is_allowed(allowed: tuple[type[BaseException], ...], exc: BaseException) -> bool:
    """coffea's rule: ``exc`` or an exception on its ``__cause__`` chain is of an allowed type.

    ``__context__`` (an exception raised while handling another) does not count, as in coffea.
    """
    return bool(allowed) and any(isinstance(current, allowed) for current in causes(exc))


def error_text(exc: BaseException, limit: int = 300) -> str:
    """One line for a bad file: the innermost exception on the ``__cause__`` chain.

    coffea wraps the cause ("Failed processing file: ..."); the innermost message says most.
    """
    *_, inner = causes(exc)
    text = " ".join(f"{type(inner).__name__}: {inner}".split())
    # "Failed to submit <bound method File.open of <XRootD...File object at 0x7f...>> request"
    text = re.sub(r"<bound method ([\w.]+) of <[^<>]*>>", r"\1", text)
    text = re.sub(r" at 0x[0-9a-f]+", "", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


OutcomeKind = Literal["ok", "bad", "bug"]


@dataclass
class Outcome:
    """What became of one unit (a single-file chunk).

    Attributes
    ----------
    kind : {"ok", "bad", "bug"}
        ``ok``: ``payload`` holds the output; ``bad``: a bad file (an error in the Runner's
        ``skipbadfiles`` set); ``bug``: any other error, which must propagate.
    payload : bytes or None
        The output pickled with cloudpickle (``None`` for a file with no entries).
    events : int
        Entries processed.
    exception : BaseException or None
        The error (for ``bad`` and ``bug``), or a :class:`WorkerError` standing in for one
        that does not pickle. Its ``__cause__`` chain is kept across processes (pickling
        alone drops it).
    error : str
        One line for the report.
    traceback : str
        The formatted traceback, from wherever the unit ran.
    seconds : float
        Time spent on the unit.
    warnings : list of CaughtWarning
        Warnings raised while it ran.
    transient : bool
        For ``bad``: the error may go away on a retry (a refused connection, a timeout).
    retries : int
        How many times the file was tried again (over all its replicas).
    served : str or None
        The replica's path that gave the output, when it is not the file's own path.
    sums : dict
        For ``ok``: the file's per-file quantities (``chunkwise.sums.read_file_sums``).
    user_traceback : str
        For ``bug``: :func:`user_traceback`, the part of the traceback that is the user's.
    """

    kind: OutcomeKind
    payload: bytes | None = None
    events: int = 0
    exception: BaseException | None = None
    error: str = ""
    traceback: str = ""
    seconds: float = 0.0
    warnings: list[CaughtWarning] = field(default_factory=list)
    causes: list[BaseException] = field(default_factory=list)
    transient: bool = False
    retries: int = 0
    served: str | None = None
    sums: dict[str, float] = field(default_factory=dict)
    user_traceback: str = ""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        chain = [self.exception, *self.causes]
        for exc, cause in zip(chain, chain[1:], strict=False):
            if exc is not None:
                exc.__cause__ = cause


def _portable_exception(exc: BaseException) -> BaseException:
    """``exc`` itself if it survives pickling, else a :class:`WorkerError` with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return WorkerError(f"{type(exc).__name__}: {exc}")
    return exc


def _failure(kind: OutcomeKind, exc: BaseException) -> Outcome:
    text = "".join(traceback.format_exception(exc))
    chain = [_portable_exception(cause) for cause in list(causes(exc))[1:]]
    return Outcome(
        kind,
        exception=_portable_exception(exc),
        error=error_text(exc),
        traceback=text,
        user_traceback=user_traceback(exc) if kind == "bug" else "",
        causes=chain,
        transient=kind == "bad" and is_transient(exc),
    )


#: How coffea words the plain ``Exception`` it wraps a processor's error in.
COFFEA_WRAPPER = "Failed processing file"


def user_exception(exc: BaseException) -> BaseException:
    """The error the processor raised: ``exc`` without coffea's wrapper (a plain ``Exception``,
    ``Failed processing file: ...``, whose ``__cause__`` is the processor's own error)."""
    for current in causes(exc):
        if not (type(current) is Exception and str(current).startswith(COFFEA_WRAPPER)):
            return current
    return exc


def user_traceback(exc: BaseException) -> str:
    """:func:`user_exception` as Python would show it, its own chain included, each traceback
    from its first frame outside coffea and chunkwise: the processor's own lines, not the
    machinery around them."""
    shown = traceback.TracebackException.from_exception(user_exception(exc))
    machinery = tuple(
        os.path.dirname(str(module.__file__)) + os.sep
        for module in (sys.modules.get("coffea"), sys.modules.get("chunkwise"))
        if module is not None and getattr(module, "__file__", None)
    )
    part: traceback.TracebackException | None = shown
    while part is not None:
        frames = list(part.stack)
        start = next((i for i, f in enumerate(frames) if not f.filename.startswith(machinery)), 0)
        part.stack = traceback.StackSummary.from_list(frames[start:])
        part = part.__cause__ or (None if part.__suppress_context__ else part.__context__)
    return "".join(shown.format())


def bad_file_errors_named(names: str | None) -> tuple[type[BaseException], ...]:
    """The exception classes named, comma-separated, among Python's and
    ``uproot.exceptions``; ``None`` gives ``default_bad_file_errors()``.

    Raises
    ------
    chunkwise.errors.OptionError
        For a name that is not such an exception.
    """
    import builtins

    import uproot

    if names is None:
        return default_bad_file_errors()
    classes = []
    for name in (n.strip() for n in names.split(",")):
        found = getattr(builtins, name, None) or getattr(uproot.exceptions, name, None)
        if not (isinstance(found, type) and issubclass(found, BaseException)):
            raise OptionError(
                f"{name!r} is not an exception of Python or "
                "uproot.exceptions; e.g. --bad-file-errors OSError,KeyInFileError"
            )
        classes.append(found)
    return tuple(classes)
