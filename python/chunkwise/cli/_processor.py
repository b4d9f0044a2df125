"""The processor and the Runner a command names (``--processor``, ``--schema``,
``--chunksize``, ``--bad-file-errors``), built by the API, and the tag they make."""

from __future__ import annotations

import argparse
from typing import Any

from chunkwise._coffea import load_processor, make_runner, schema_named
from chunkwise.errors import OptionError, UsageError
from chunkwise.tag import tag_manifest

__all__ = ["processor_manifest", "processor_of", "runner_of"]


def processor_manifest(args: argparse.Namespace) -> dict[str, Any]:
    """The tag manifest of ``--processor`` with every option that is part of the tag (the
    Runner settings and --no-weights): the one place the CLI derives a tag from its options."""
    return tag_manifest(processor_of(args), runner_of(args), None, not args.no_weights)


def processor_of(args: argparse.Namespace) -> Any:
    """The processor ``--processor MODULE:CLASS`` names, created."""
    try:
        return load_processor(args.processor)
    except OptionError as err:
        raise UsageError(f"--processor {err}") from None


def runner_of(args: argparse.Namespace, executor: Any = None) -> Any:
    """The Runner of the command's Runner settings (``--schema``, ``--chunksize``,
    ``--bad-file-errors``), with ``executor`` (default: in this process)."""
    try:
        schema_named(args.schema)
    except OptionError as err:
        raise UsageError(f"--schema: {err}") from None
    try:
        return make_runner(
            executor,
            schema=args.schema,
            chunksize=args.chunksize,
            bad_file_errors=getattr(args, "bad_file_errors", None),
        )
    except OptionError as err:
        raise UsageError(f"--bad-file-errors: {err}") from None
