"""Trying a bad file again: which errors are transient, the retry policy (backoff and replicas),
and the XRootD client settings that let a dead server fail fast instead of hanging.

Nothing here needs coffea: the run of a unit is passed in (``chunkwise._coffea`` runs it).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from chunkwise.errors import causes

# RetryPolicy and is_transient, and the private names that chunkwise's own modules import.
__all__ = [
    "RetryPolicy",
    "_forget_xrootd_handles",
    "_is_stale_handle",
    "_run_with_retries",
    "_xrootd_fails_fast",
    "is_transient",
]


# Words of errors that another try will not fix, and of errors it may fix, as uproot, fsspec
# and the XRootD client word them ("[3011]" is XRootD's kXR_NotFound, "[3010]" kXR_NotAuthorized).
_PERMANENT_WORDS = (
    "[3011]",
    "[3010]",
    "no such file",
    "not found",
    "permission denied",
    "not authorized",
    "invalid address",
    "is a directory",
)
_TRANSIENT_WORDS = (
    "connection error",
    "connection refused",
    "connection reset",
    "operation expired",
    "timed out",
    "timeout",
    "socket error",
    "broken pipe",
    "temporarily unavailable",
    "[3012]",  # kXR_ServerError
    "[3024]",  # kXR_Overloaded
    "[3007]",  # kXR_IOError
)


def is_transient(exc: BaseException) -> bool:
    """Whether a bad file's error may go away if the file is tried again.

    Connection refused or reset, timeouts and server-side errors are transient; a file that
    does not exist, is not readable, has no such tree or is corrupt is not. The whole chain
    (``__cause__`` and ``__context__``) is read, innermost first.
    """
    import uproot

    for error in reversed(list(causes(exc, context=True))):
        if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
            return False
        if isinstance(error, uproot.exceptions.KeyInFileError):
            return False
        if isinstance(error, (ConnectionError, TimeoutError)):
            return True
        text = str(error).lower()
        if any(word in text for word in _PERMANENT_WORDS):
            return False
        if any(word in text for word in _TRANSIENT_WORDS):
            return True
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """How a bad file is tried again before it is called bad.

    Attributes
    ----------
    retries : int
        Tries after the first, for transient errors only, on each of the file's paths.
    delay : float
        Seconds before the first retry; each next one waits twice as long, times a random
        factor between 0.75 and 1.25 (jitter, so that many workers do not retry in step).
    replicas : tuple of (prefix, tuple of alternatives)
        A file whose path starts with a prefix is tried, after its own path, at each
        alternative prefix in turn.
    """

    retries: int = 3
    delay: float = 1.0
    replicas: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def paths(self, path: str) -> list[str]:
        """The file's own path, then its replicas' paths, in order."""
        out = [path]
        for prefix, alternatives in self.replicas:
            if path.startswith(prefix):
                out += [alt + path[len(prefix) :] for alt in alternatives]
        return out


def _moved(fileset: Mapping[str, Any], old: str, new: str) -> dict[str, Any]:
    """The single-file ``fileset`` with its file at ``new`` instead of ``old``."""
    ((dataset, spec),) = fileset.items()
    files = spec["files"]
    if isinstance(files, Mapping):
        moved: Any = {new if p == old else p: t for p, t in files.items()}
    else:
        moved = [new if p == old else p for p in files]
    return {dataset: {**spec, "files": moved}}


_XRD_LOCK = threading.Lock()
_xrd_depth = 0
_xrd_saved: list[tuple[str, int]] = []
# A file on a server that does not answer should fail in seconds, so that chunkwise's own
# retries (with backoff) and replicas take over; the XRootD client's default is to keep trying
# to connect for 120 s. The user's XRD_* environment variables win.
_XRD_SETTINGS = (
    ("ConnectionWindow", "XRD_CONNECTIONWINDOW", 5),
    ("ConnectionRetry", "XRD_CONNECTIONRETRY", 1),
    # After a connection error the client fails every request to that server at once for
    # StreamErrorWindow seconds (1800 by default): a retry would never reach the network.
    ("StreamErrorWindow", "XRD_STREAMERRORWINDOW", 0),
    # Timeouts are checked every TimeoutResolution seconds (15 by default), so a stalled
    # server would be noticed up to 15 s after Runner.xrootdtimeout.
    ("TimeoutResolution", "XRD_TIMEOUTRESOLUTION", 1),
)


@contextlib.contextmanager
def _xrootd_fails_fast(paths: list[str]) -> Iterator[None]:
    """Shorten the XRootD client's own connection retries inside the block (and restore them
    when the last block in this process ends)."""
    global _xrd_depth, _xrd_saved
    if not any(p.startswith(("root://", "roots://")) for p in paths):
        yield
        return
    try:
        from XRootD.client import EnvGetInt, EnvPutInt
    except ImportError:  # no XRootD client: uproot will say so for the file
        yield
        return
    with _XRD_LOCK:
        if _xrd_depth == 0:
            _xrd_saved = []
            for name, variable, value in _XRD_SETTINGS:
                if variable not in os.environ:
                    _xrd_saved.append((name, EnvGetInt(name)))
                    EnvPutInt(name, value)
        _xrd_depth += 1
    try:
        yield
    finally:
        with _XRD_LOCK:
            _xrd_depth -= 1
            if _xrd_depth == 0:
                for name, value in _xrd_saved:
                    EnvPutInt(name, value)


def _forget_xrootd_handles(path: str) -> None:
    """Drop fsspec-xrootd's cached file systems before a remote file is (re)opened.

    They keep file handles open for 30 s after their last use (each retry is a use); after the
    server restarts, such a handle raises "I/O operation on closed file" forever. A new file
    system opens a new handle; the XRootD client's connections are pooled below it.
    """
    if not path.startswith(("root://", "roots://")):
        return
    try:
        from fsspec_xrootd import XRootDFileSystem
    except ImportError:
        return
    XRootDFileSystem.clear_instance_cache()


def _is_stale_handle(exc: BaseException) -> bool:
    """A remote file handle that outlived its server, on the chain (``__context__`` too)."""
    return any(
        isinstance(error, ValueError) and "closed file" in str(error)
        for error in causes(exc, context=True)
    )


class _Attempt(Protocol):
    """What :func:`_run_with_retries` reads and sets of a run's outcome
    (``chunkwise.outcomes.Outcome``)."""

    kind: Any
    transient: bool
    retries: int
    served: str | None
    error: str


_O = TypeVar("_O", bound=_Attempt)


def _run_with_retries(
    policy: RetryPolicy,
    fileset: Mapping[str, Any],
    path: str,
    run: Callable[[Mapping[str, Any], str], _O],
    outcome: _O,
) -> _O:
    """Run ``run(unit, candidate)`` on the file's path, then on its replicas, trying a
    transient error again with backoff, until one is not ``"bad"``.

    ``outcome`` is what is returned when nothing runs; otherwise the last bad outcome,
    with the retries counted and the replicas named in its error.
    """
    import random

    retries = 0
    paths = policy.paths(path)
    with _xrootd_fails_fast(paths):
        for candidate in paths:
            unit = fileset if candidate == path else _moved(fileset, path, candidate)
            for attempt in range(policy.retries + 1):
                if attempt:
                    retries += 1
                    pause = policy.delay * 2 ** (attempt - 1) * random.uniform(0.75, 1.25)
                    time.sleep(pause)
                _forget_xrootd_handles(candidate)
                outcome = run(unit, candidate)
                if outcome.kind != "bad":
                    outcome.retries = retries
                    outcome.served = None if candidate == path else candidate
                    return outcome
                if not outcome.transient:
                    break
    outcome.retries = retries
    if len(paths) > 1:
        outcome.error = f"{outcome.error} (and on its {len(paths) - 1} replicas)"
    return outcome
