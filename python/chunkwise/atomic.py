"""Write a file, or replace a directory, so that readers see either the old content or the
complete new one.

chunkwise writes its outputs (merged results, plots, reports, split directories) through these,
so a run that is interrupted or fails never leaves a torn file behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "replace_dir", "umask"]


def umask() -> int:
    """The process's umask (read without changing it for longer than the call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """The name of a new temporary file next to ``path``, for a writer that opens files by
    name; on success it is fsynced and renamed to ``path``.

    If the ``with`` block raises, the temporary file is removed and ``path`` is untouched.
    The file has the permissions a plain ``open()`` would give it.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        # mkstemp makes the file user-only; give it the permissions a plain open() would.
        os.fchmod(fd, 0o666 & ~umask())
        os.close(fd)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success, fsync it and rename it to ``path``.

    If the ``with`` block raises, the temporary file is removed and ``path`` is untouched.

    Parameters
    ----------
    path : str or os.PathLike
        The final file name. Its directory must exist.
    mode : str, optional
        ``"wb"`` (default) or ``"w"`` for text, written as UTF-8.

    Yields
    ------
    file object
        The open temporary file.

    Examples
    --------
    >>> with atomic_write("result.json", "w") as f:  # doctest: +SKIP
    ...     f.write("{}")
    """
    encoding = None if "b" in mode else "utf-8"
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as f:
        yield f


def replace_dir(new: str, target: str) -> None:
    """Move directory ``new`` to ``target``, replacing an existing ``target`` directory: the
    old one is renamed aside first and put back if the move fails."""
    if not os.path.exists(target):
        os.rename(new, target)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old.", dir=os.path.dirname(target))
    os.rmdir(old)
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
