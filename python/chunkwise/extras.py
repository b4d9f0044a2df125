"""Optional dependencies, imported on demand, each with the extra that installs it.

chunkwise's core needs nothing, and ``chunkwise.run`` needs coffea and the packages it declares.
Three parts are optional, as pip extras:

========================  ===========================================  ====================
extra                     packages                                     needed for
========================  ===========================================  ====================
``chunkwise[dask]``       distributed                                  ``--executor dask``,
                                                                       ``--scheduler``
``chunkwise[slurm]``      distributed, dask-jobqueue                   ``--executor slurm``
                                                                       (dask workers as
                                                                       Slurm jobs)
``chunkwise[xrootd]``     fsspec-xrootd, xrootd (the XRootD client)    ``root://`` paths in
                                                                       a fileset, a
                                                                       ``root://`` cache
========================  ===========================================  ====================

A missing one raises :class:`MissingExtraError`, a ``ModuleNotFoundError`` whose message names
what needed it and the command that installs it. chunkwise asks for an extra before anything
runs, so a run never dies halfway for want of a package.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from types import ModuleType

from chunkwise.errors import MissingExtraError

__all__ = [
    "MissingExtraError",
    "check_paths",
    "dask_jobqueue",
    "distributed",
    "module_version",
    "needs_xrootd",
    "xrootd_paths",
]

REMOTE_SCHEMES = ("root://", "roots://")


def _import(modules: Iterable[str], extra: str, packages: str, what: str) -> list[ModuleType]:
    loaded = []
    for module in modules:
        try:
            loaded.append(importlib.import_module(module))
        except ModuleNotFoundError as err:
            if err.name is None or module.split(".")[0] != err.name.split(".")[0]:
                raise  # the package is there but broken inside: not a missing extra
            raise MissingExtraError(
                f"{what} needs {packages}, which is not installed; "
                f"pip install 'chunkwise[{extra}]'",
                name=err.name,
                extra=extra,
            ) from None
    return loaded


def distributed(what: str = "a dask cluster") -> ModuleType:
    """Import and return ``distributed``, or raise MissingExtraError naming ``chunkwise[dask]``.

    Parameters
    ----------
    what : str
        What needs it, for the message (``"--executor dask"``).
    """
    return _import(["distributed"], "dask", "distributed", what)[0]


def dask_jobqueue(what: str = "--executor slurm") -> ModuleType:
    """Import and return ``dask_jobqueue`` (and ``distributed``), or raise MissingExtraError
    naming ``chunkwise[slurm]``.

    Parameters
    ----------
    what : str
        What needs it, for the message.
    """
    return _import(["distributed", "dask_jobqueue"], "slurm", "dask-jobqueue", what)[1]


def needs_xrootd(what: str) -> None:
    """Check that fsspec-xrootd and the XRootD client import, or raise MissingExtraError
    naming ``chunkwise[xrootd]``.

    Parameters
    ----------
    what : str
        What needs them, for the message (``"the root:// path 'root://host//f.root'"``).
    """
    _import(["XRootD.client", "fsspec_xrootd"], "xrootd", "fsspec-xrootd and xrootd", what)


def xrootd_paths(paths: Iterable[str]) -> str | None:
    """The first ``root://`` or ``roots://`` path of ``paths``, or None."""
    return next((p for p in paths if isinstance(p, str) and p.startswith(REMOTE_SCHEMES)), None)


def check_paths(paths: Iterable[str]) -> None:
    """Raise MissingExtraError naming ``chunkwise[xrootd]`` if one of ``paths`` (files to read,
    or replica prefixes) is on ``root://`` and fsspec-xrootd or the XRootD client is missing."""
    remote = xrootd_paths(paths)
    if remote is not None:
        needs_xrootd(f"the root:// path {remote!r}")


def module_version(module_name: str) -> str | None:
    """The ``__version__`` of an importable module (imported if it is not yet), or None;
    chunkwise's own is the Rust core's, from Cargo.toml."""
    if module_name == "chunkwise":  # the Rust core's (Cargo.toml's), as chunkwise.__version__
        from chunkwise._core import __version__ as version
    else:
        module = sys.modules.get(module_name)
        if module is None:
            try:
                module = __import__(module_name)
            except ImportError:
                return None
        version = getattr(module, "__version__", None)
    return version if isinstance(version, str) else None
