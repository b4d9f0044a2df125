"""The ``chunkwise`` command line: split, hash, status, run, cache and demo.

Every command parses its arguments, checks all of its input, and only then calls the Python API
(``chunkwise.split_fileset``, ``chunkwise.run``, ``chunkwise.status``, ...). Bad input ends with
one line on stderr that names the problem and what to do, exit status 2, and nothing written.
``run`` exits 0 when every file made it into the result and 1 when something is missing.

The package: ``_parser`` (every command's options), ``_common`` (reading filesets, checking
outputs, the cache key), ``_processor`` (the processor and Runner the options name), and one
module per command group: ``split`` (split, hash), ``status``, ``run`` (run, demo), ``cache``
(cache ls, verify, prune, explain). A command's module is imported only when it runs, so
``chunkwise split`` never imports coffea.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from chunkwise.cli._common import EXIT_BUG, EXIT_OK, EXIT_USAGE
from chunkwise.cli._parser import build_parser
from chunkwise.errors import (
    CorruptCacheEntryWarning,
    MissingExtraError,
    StaleModuleWarning,
    UnfingerprintableStateWarning,
    UsageError,
    one_line,
)

__all__ = ["UsageError", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``chunkwise`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        The exit status: 0 on success, 1 when ``run`` left something out, 2 for bad usage.

    Examples
    --------
    >>> main(["hash", "chunks/3f1c.json"])  # doctest: +SKIP
    3f1c...  chunks/3f1c.json
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 0
    name: str | None = getattr(args, "func", None)
    if name is None:
        print(
            "chunkwise: error: choose a command: split, hash, status, run, cache or demo "
            "(see 'chunkwise --help')",
            file=sys.stderr,
        )
        return EXIT_USAGE
    with warnings.catch_warnings():  # restored on return: main() may run inside a program
        warnings.showwarning = _OneLineWarnings(warnings.showwarning)
        return _call(name, args)


class _OneLineWarnings:
    """A ``warnings.showwarning`` that shows chunkwise's own warnings as ``Category: message``
    on one line of stderr, without the source file and line that Python adds (they tell a user
    of the command line nothing), and passes other warnings to the one it replaced."""

    def __init__(self, replaced: Callable[..., None]) -> None:
        self.replaced = replaced

    def __call__(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        ours = (CorruptCacheEntryWarning, StaleModuleWarning, UnfingerprintableStateWarning)
        if not issubclass(category, ours):
            self.replaced(message, category, filename, lineno, file, line)
            return
        text = " ".join(str(message).split())
        print(f"{category.__name__}: {text}", file=sys.stderr if file is None else file)


def _call(name: str, args: argparse.Namespace) -> int:
    """Import the command's module, run the command, and turn its errors into exit statuses."""
    module, _, function = name.partition(":")
    try:
        func: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(f"chunkwise.cli.{module}"), function
        )
        return func(args)
    except (UsageError, MissingExtraError) as err:
        print(f"chunkwise {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        hint = "; finished chunks are cached, rerun to resume" if args.command == "run" else ""
        print(f"chunkwise {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of the output went away (``| head``): not an error
        # Python would say so again when it flushes stdout at exit; point it at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as err:  # the file system said no (a directory you may not read, a bad disk)
        where = f"{err.filename}: " if err.filename else ""
        print(
            f"chunkwise {args.command}: error: {where}{err.strerror or err}; check that it "
            "exists and that you may read it (and write it, for a cache)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except Exception as err:  # a crash of chunkwise itself: not "incomplete", not bad input
        traceback.print_exc()
        print(
            f"chunkwise {args.command}: internal error: {type(err).__name__}: {one_line(err)}; "
            "please report it",
            file=sys.stderr,
        )
        return EXIT_BUG
