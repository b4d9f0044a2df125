"""Every exception and warning chunkwise raises on purpose, in one place.

Each is also importable from the module that raises it (``chunkwise.cache.CacheError``, ...), as
before. This module imports nothing of chunkwise: every other module may import it.

Bad input
    ``FilesetError`` (a fileset file), ``OptionError`` (a value that cannot be used),
    ``MissingExtraError`` (an optional package), ``DemoError``, ``UsageError``
    (the command line's).
The cache
    ``CacheError`` (a cache that cannot be used), ``CorruptCacheEntryWarning`` (an entry or
    record that does not verify: it is recomputed or ignored).
The processor and its workers
    ``ProcessorUnavailableError``, ``WorkerError``, ``BadWeightsError``, ``ChunkFailure``.
The cache tag
    ``UnfingerprintableStateWarning``, ``StaleModuleWarning``.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = [
    "BadWeightsError",
    "CacheError",
    "ChunkFailure",
    "CorruptCacheEntryWarning",
    "DemoError",
    "FilesetError",
    "MissingExtraError",
    "OptionError",
    "ProcessorUnavailableError",
    "StaleModuleWarning",
    "UnfingerprintableStateWarning",
    "UsageError",
    "WorkerError",
    "add_note",
    "causes",
    "one_line",
]


class FilesetError(ValueError):
    """A fileset file that cannot be read, or whose content is not a fileset.

    The message is a single line that says what is wrong and what to do.
    """


class OptionError(ValueError):
    """A value chunkwise was given that it cannot use: a ``module:Class`` that does not load,
    a schema or exception name that does not exist, a directory it may not write into.

    The message is one line, starting with the value as given: what is wrong and what to do.
    The command line prints it after the option's name (``--processor 'x:Y': ...``).
    """


class UsageError(Exception):
    """Bad input to a command of the command line: one line on stderr, exit status 2."""


class MissingExtraError(ModuleNotFoundError):
    """An optional package chunkwise needs for what was asked is not installed.

    ``name`` is the module that is missing and ``extra`` the pip extra that installs it.
    """

    def __init__(self, message: str, *, name: str, extra: str) -> None:
        super().__init__(message, name=name)
        self.extra = extra


class DemoError(Exception):
    """The demo cannot start (for example, its directory belongs to something else)."""


class CacheError(Exception):
    """A cache that cannot be used: not a directory, not writable, or not trusted.

    The message is one line that says what is wrong and what to do.
    """


class CorruptCacheEntryWarning(UserWarning):
    """A cache entry or record could not be verified and will be recomputed or ignored."""


class ProcessorUnavailableError(RuntimeError):
    """The processor cannot be loaded where the work runs (a module the workers lack)."""


class BadWeightsError(OSError):
    """A file's ``Runs`` tree holds sums of weights that are not finite (NaN or infinite): the
    file cannot be normalized, so it is a bad file (an ``OSError``, as a corrupt file is)."""


class WorkerError(RuntimeError):
    """An exception from a worker that could not be sent back as itself (it does not pickle)."""


class ChunkFailure(Exception):
    """A chunk failed without an exception of its own: coffea dropped some of its files
    silently, or the failure was recorded by an earlier run (the text is all that is left)."""


class UnfingerprintableStateWarning(UserWarning):
    """Part of the processor's state (or a global its code reads) cannot be fingerprinted.

    The cache tag does not change when that part changes: pass ``cache_tag=`` to
    ``chunkwise.run`` explicitly (and change it) when it does.
    """


class StaleModuleWarning(UserWarning):
    """A module of your own was edited on disk after it was imported.

    The process still runs the old code; the tag follows the code in memory (not the file), so
    entries made by it are never served to a process that runs the new code.
    """


def causes(exc: BaseException, *, context: bool = False) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first, each once.

    Parameters
    ----------
    exc : BaseException
        Where the walk starts.
    context : bool, optional
        Follow ``__context__`` (raised while handling another) where there is no
        ``__cause__``. coffea's ``skipbadfiles`` rule follows ``__cause__`` alone (the
        default); telling a transient error from a permanent one reads both.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (current.__context__ if context else None)


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, also on Python 3.10 (which has no ``add_note``)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # pragma: no cover - Python 3.10
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]


def one_line(err: BaseException) -> str:
    """The first line of ``str(err)``, or its class name when it has no text."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
