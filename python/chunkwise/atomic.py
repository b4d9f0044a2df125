"""Write a file so that readers see either the old content or the complete new one.

The command line writes its outputs (merged results, plots, split manifests) through
:func:`atomic_write`, so a run that is interrupted or fails never leaves a torn file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["atomic_write"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    try:
        # mkstemp makes the file user-only; give it the permissions a plain open() would.
        os.fchmod(fd, 0o666 & ~_umask())
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
