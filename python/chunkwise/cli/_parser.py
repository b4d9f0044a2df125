"""The ``chunkwise`` argument parser: every command, its options and their help.

A command's ``func`` is the name of its function, ``"module:function"`` in this package, imported
only when the command runs: ``chunkwise split`` never imports coffea.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from chunkwise import _core

__all__ = ["EXECUTORS", "Parser", "build_parser"]

EXECUTORS = ("iterative", "futures", "dask", "slurm")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line rather than usage plus message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the ``chunkwise`` argument parser with its five subcommands.

    Returns
    -------
    argparse.ArgumentParser
        Parse with ``parse_args``; each subcommand's namespace has a ``func`` to call.

    Examples
    --------
    >>> args = build_parser().parse_args(["hash", "chunk.json"])
    >>> args.chunks
    ['chunk.json']
    """
    parser = Parser(
        prog="chunkwise",
        description=(
            "Split coffea filesets into chunks named by their hash, run them with a cache that "
            "survives failures, and see what is done."
        ),
    )
    parser.add_argument("--version", action="version", version=f"chunkwise {_core.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _split_commands(sub)
    _status_command(sub)
    _run_command(sub)
    _submit_command(sub)
    _cache_commands(sub)
    return parser


def _split_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``split`` and ``hash``."""
    p = sub.add_parser(
        "split",
        help="write each chunk of a fileset to DIR/<hash>.json, plus DIR/manifest.json",
        description=(
            "Split FILESET into chunks and write each one to DIR/<hash>.json, with "
            "DIR/manifest.json listing every chunk's hash, datasets and file counts. The chunk "
            "file paths are printed one per line, ready for a batch system's job list."
        ),
    )
    p.add_argument("fileset", metavar="FILESET", help="a .json, .json.gz, .yaml or .yml fileset")
    add_split_options(p)
    p.add_argument("--out", required=True, metavar="DIR", help="new or empty output directory")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace DIR if an earlier split made it (and it holds nothing else)",
    )
    p.set_defaults(func="split:cmd_split")

    p = sub.add_parser(
        "hash",
        help="print the hash of each chunk file",
        description="Print 'HASH  PATH' for each chunk file: the key chunkwise caches it under.",
    )
    p.add_argument("chunks", nargs="+", metavar="CHUNK", help="a chunk or fileset file")
    p.set_defaults(func="split:cmd_hash")


def _status_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``status``."""
    p = sub.add_parser(
        "status",
        help="show, per dataset, how much of a fileset is in the cache (runs nothing)",
        description=(
            "Split FILESET as the last 'run' into this cache did (or with the split options "
            "given) and look each file up in the cache: print, per dataset, the chunks done, "
            "failed (with each bad file and its error, from any split), never run and "
            "corrupt, and the fraction of files done. Exit status 0 when everything is "
            "done (or --min-completeness is reached), 1 if not, 2 for bad input."
        ),
    )
    p.add_argument("fileset", metavar="FILESET", help="a .json, .json.gz, .yaml or .yml fileset")
    p.add_argument(
        "--cache",
        required=True,
        metavar="DIR",
        help="the cache directory (or root:// URL) of 'run'",
    )
    add_key_option(p)
    add_split_options(p)
    tag = p.add_argument_group("which cache tag to read (default: the only one in DIR)")
    tag.add_argument("--tag", metavar="T", help="the tag, as 'run' printed it ('' for flat)")
    tag.add_argument(
        "--processor", metavar="MODULE:CLASS", help="derive the tag from this processor"
    )
    add_runner_options(p)
    p.add_argument(
        "--verify",
        action="store_true",
        help="also read and verify each entry of the fileset (default: an entry the cache "
        "lists counts as done, and 'run' verifies it before use)",
    )
    p.add_argument(
        "--list-incomplete",
        action="store_true",
        help="print only the hashes of chunks that are not complete, one per line",
    )
    p.add_argument(
        "--write-remaining",
        metavar="FILE",
        help="write a fileset (JSON) of exactly the files not done, failed or never run, with "
        "each dataset's other fields: run it to resubmit",
    )
    add_min_completeness(p, "every chunk is done")
    p.set_defaults(func="status:cmd_status")


def _run_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``run`` and ``demo``."""
    p = sub.add_parser(
        "run",
        help="run a processor over a fileset, chunk by chunk, with a cache and salvage",
        description=(
            "Split FILESET, run it with chunkwise.run (every file a task on the executor; a "
            "cache; a chunk with a bad file keeps its good files), print the per-dataset "
            "summary and save the merged output. Exit status 0 when every file is in the "
            "result, 1 when something is missing, 2 for bad input, 3 when the cache could not "
            "be written, 4 when the processor raised a bug."
        ),
    )
    add_fileset_and_processor(p)
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="iterative",
        help="how each chunk runs: in this process (default), a process pool, dask, or dask "
        "workers started as Slurm jobs (slurm: chunkwise[slurm], dask-jobqueue)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="processes for futures or dask; Slurm jobs (one worker each, default 2) for slurm",
    )
    p.add_argument(
        "--job-option",
        action="append",
        metavar="OPT",
        help="an extra #SBATCH option of each slurm worker's job, e.g. --job-option="
        "--partition=short (repeatable; dask's jobqueue.slurm configuration applies too)",
    )
    p.add_argument(
        "--scheduler", metavar="ADDRESS", help="a running dask scheduler, e.g. tcp://host:8786"
    )
    add_split_options(p)
    add_runner_options(p)
    p.add_argument(
        "--cache",
        metavar="DIR",
        help="cache chunk outputs in this directory, or root://host//dir with --cache-key-file "
        "(default: no cache)",
    )
    add_key_option(p)
    p.add_argument(
        "--tag", metavar="T", help="cache tag (default: derived from processor and Runner)"
    )
    p.add_argument(
        "--force-tag",
        action="store_true",
        help="write into --tag even if another processor or other settings made it",
    )
    p.add_argument("--output", metavar="FILE", help="save the merged output (coffea.util.save)")
    p.add_argument(
        "--report",
        metavar="FILE",
        help="write the run's report as JSON (completeness, sums of weights, bad files, chunks)",
    )
    add_min_completeness(p, "every file is in the result")
    plot = p.add_argument_group("the plot")
    plot.add_argument(
        "--plot",
        metavar="FILE",
        help="draw the 1D histograms of the output to FILE (.png, .pdf or .svg), one panel each",
    )
    plot.add_argument(
        "--lumi", type=positive_number, metavar="FB", help="integrated luminosity in fb^-1"
    )
    plot.add_argument(
        "--com", type=positive_number, metavar="TEV", help="centre-of-mass energy in TeV"
    )
    plot.add_argument(
        "--experiment",
        choices=["CMS", "ATLAS", "LHCb", "ALICE"],
        help="whose mplhep style and label (default CMS)",
    )
    plot.add_argument(
        "--plot-text",
        metavar="TEXT",
        help="words after the experiment name (default 'Private Work'; e.g. 'Simulation "
        "Preliminary')",
    )
    p.add_argument("--no-salvage", action="store_true", help="lose a chunk with a bad file whole")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show every warning and each bad file's traceback as they come, and a processor "
        "bug's whole traceback",
    )
    files = p.add_argument_group("bad files, retries and replicas")
    files.add_argument(
        "--retries",
        type=whole_number,
        default=3,
        metavar="N",
        help="tries after the first for transient errors (refused, timed out), with "
        "backoff from 1 s (default 3); permanent errors are not retried",
    )
    files.add_argument(
        "--replica",
        action="append",
        metavar="PREFIX=ALT",
        help="try a file whose path starts with PREFIX at ALT instead when it fails "
        "(repeatable; alternatives are tried in order)",
    )
    files.add_argument(
        "--bad-file-errors",
        metavar="NAMES",
        help="exceptions that make a file bad rather than end the run "
        "(default OSError,KeyInFileError)",
    )
    p.set_defaults(func="run:cmd_run")

    p = sub.add_parser(
        "demo",
        help="write a small NanoAOD-like fileset and show run, salvage and cache on it",
        description=(
            "Write a small NanoAOD-like fileset of real ROOT files (one path missing, one file "
            "truncated), run the MET processor over it with percentage=20, a cache and salvage, "
            "print what happened, draw met.png, then run again to show the cache."
        ),
    )
    p.add_argument(
        "--dir",
        default="chunkwise-demo",
        metavar="DIR",
        help="where to put the files, cache and met.png (default ./chunkwise-demo)",
    )
    p.set_defaults(func="run:cmd_demo")


def _submit_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``submit``."""
    p = sub.add_parser(
        "submit",
        help="write (and submit) a Slurm array job or HTCondor jobs, one per chunk",
        description=(
            "Split FILESET and write, into the new directory DIR: the chunk files, jobs.txt, a "
            "job file (job.slurm: a Slurm array; job.sub: HTCondor, 'queue chunk from "
            "jobs.txt'), task.sh (one chunk into the cache), env.sh (the Python environment) "
            "and the steps after: status.sh, resubmit.sh (exactly the files not done, one per "
            "job) and merge.sh. The split is recorded in the cache for 'status'. Prints the "
            "job file, or with --submit the job id."
        ),
    )
    p.add_argument("scheduler", choices=["slurm", "condor"], help="which job file to write")
    add_fileset_and_processor(p)
    p.add_argument(
        "--cache",
        required=True,
        metavar="DIR",
        help="the cache every job writes to: a directory the nodes share, or "
        "root://host//dir with --cache-key-file",
    )
    add_key_option(p)
    p.add_argument("--out", required=True, metavar="DIR", help="new or empty directory")
    add_split_options(p)
    add_runner_options(p)
    p.add_argument(
        "--retries",
        type=whole_number,
        default=3,
        metavar="N",
        help="each job's tries after the first for transient errors (default 3)",
    )
    p.add_argument(
        "--setup",
        metavar="LINES",
        help="shell lines that give a job the Python with chunkwise, e.g. 'source "
        "/cvmfs/.../setup.sh' (default: this venv's activate, or this Python's directory)",
    )
    p.add_argument(
        "--max-running",
        type=positive_int,
        metavar="N",
        help="at most N jobs at once (Slurm --array=1-M%%N, HTCondor max_materialize)",
    )
    p.add_argument(
        "--scheduler-option",
        action="append",
        metavar="OPT",
        help="an extra #SBATCH option ('--partition=short') or HTCondor submit line "
        "('request_memory = 2GB'); repeatable",
    )
    p.add_argument(
        "--no-shared-fs",
        action="store_true",
        help="HTCondor without a shared file system: transfer the chunk, the key and the "
        "processor's module with each job (needs a root:// cache and --setup)",
    )
    p.add_argument(
        "--submit",
        action="store_true",
        help="submit it (sbatch or condor_submit) and print the job id",
    )
    p.set_defaults(func="submit:cmd_submit")


def _cache_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``cache ls|verify|prune|explain``."""
    p = sub.add_parser(
        "cache",
        help="list, verify and prune a cache's tags",
        description="Look after a cache directory of 'run': one sub-directory (tag) per "
        "processor and Runner configuration.",
    )
    cache_sub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    q = cache_sub.add_parser("ls", help="list the tags: processor, entries, size, age")
    q.add_argument("cache", metavar="DIR")
    add_key_option(q)
    q.set_defaults(func="cache:cmd_ls")
    q = cache_sub.add_parser(
        "verify", help="check every entry without unpickling it (exit 1 if one is corrupt)"
    )
    q.add_argument("cache", metavar="DIR")
    q.add_argument("--tag", metavar="T", help="only this tag (default: all)")
    add_key_option(q)
    q.set_defaults(func="cache:cmd_verify")
    q = cache_sub.add_parser(
        "prune", help="remove every tag but the current one (only what chunkwise wrote)"
    )
    q.add_argument("cache", metavar="DIR")
    q.add_argument("--keep", action="append", metavar="TAG", help="a tag to keep (repeatable)")
    q.add_argument("--processor", metavar="MODULE:CLASS", help="keep the tag of this processor")
    add_runner_options(q)
    q.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    q.add_argument(
        "--cache-key-file",
        metavar="FILE",
        help="key of a root:// cache, which needs one (default: $CHUNKWISE_CACHE_KEY_FILE); "
        "a local cache is pruned only if it is your own, without a key",
    )
    q.set_defaults(func="cache:cmd_prune")
    q = cache_sub.add_parser(
        "explain",
        help="say what differs between two tags (or a tag and the current processor)",
    )
    q.add_argument("cache", metavar="DIR")
    q.add_argument("old", metavar="TAG")
    q.add_argument("new", metavar="TAG2", nargs="?")
    q.add_argument("--processor", metavar="MODULE:CLASS", help="compare with this processor")
    add_runner_options(q)
    add_key_option(q)
    q.set_defaults(func="cache:cmd_explain")


# ----------------------------------------------------------------------------- argument types


def _at_least(minimum: int, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a number of at least {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    return _at_least(1, text)


def whole_number(text: str) -> int:
    """A whole number of at least 0."""
    return _at_least(0, text)


def percentage(text: str) -> int:
    value = positive_int(text)
    if value > 100 or 100 % value:
        raise argparse.ArgumentTypeError(
            f"{value} does not divide 100 evenly; use e.g. 10, 20, 25 or 50"
        )
    return value


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def dataset_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected names separated by commas, got {text!r}")
    return names


# ----------------------------------------------------------------------------- option groups


def add_split_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("how to split the fileset into chunks")
    group.add_argument(
        "--strategy",
        choices=["by_dataset"],
        help="by_dataset: never mix datasets in one chunk (default: mix them)",
    )
    size = group.add_mutually_exclusive_group()
    size.add_argument(
        "--percentage",
        type=percentage,
        metavar="P",
        help="each chunk gets P%% of every dataset's files (P divides 100)",
    )
    size.add_argument(
        "--files-per-chunk",
        type=positive_int,
        metavar="N",
        help="each chunk gets at most N files of every dataset",
    )
    size.add_argument(
        "--events-per-chunk",
        type=positive_int,
        metavar="N",
        help="each chunk gets files of every dataset worth at most N events, by their "
        "num_entries (a preprocessed fileset); a larger file gets a chunk of its own",
    )
    group.add_argument(
        "--stable",
        action="store_true",
        help="cut chunks where the files' hashes say, so that adding or removing files keeps "
        "every other chunk and its cache entry; --files-per-chunk or --events-per-chunk is then "
        "the mean size (N/4 to 4N); never mixes datasets. For any fileset that will grow",
    )
    group.add_argument(
        "--datasets",
        type=dataset_list,
        metavar="A,B",
        help="only these datasets (comma-separated names)",
    )
    group.add_argument(
        "--treename",
        metavar="T",
        help="tree name for datasets that list paths without one (e.g. Events)",
    )


def add_fileset_and_processor(parser: argparse.ArgumentParser) -> None:
    """The FILESET argument and ``--processor``, of the commands that run a processor."""
    parser.add_argument(
        "fileset", metavar="FILESET", help="a .json, .json.gz, .yaml or .yml fileset"
    )
    parser.add_argument(
        "--processor",
        required=True,
        metavar="MODULE:CLASS",
        help="the coffea processor class, created without arguments",
    )


def add_min_completeness(parser: argparse.ArgumentParser, complete: str) -> None:
    parser.add_argument(
        "--min-completeness",
        type=float,
        metavar="F",
        help=f"exit 0 when every dataset has at least this fraction of its files (0-1) done, "
        f"with a loud note of what is missing (default: only when {complete})",
    )


def add_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-key-file",
        metavar="FILE",
        help="key of a cache shared by a group (default: $CHUNKWISE_CACHE_KEY_FILE); without "
        "one, the cache must be yours and writable by no one else",
    )


def add_runner_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Runner settings (they are part of the cache tag)")
    group.add_argument(
        "--schema",
        default="NanoAODSchema",
        metavar="NAME",
        help="coffea.nanoevents schema, e.g. NanoAODSchema (default), BaseSchema, PHYSLITESchema",
    )
    group.add_argument(
        "--chunksize",
        type=positive_int,
        default=100_000,
        metavar="N",
        help="events per row chunk inside a file (default 100000)",
    )
    group.add_argument(
        "--no-weights",
        action="store_true",
        help="do not read each file's generator weights (its Runs tree, a few ms a file); "
        "for status and cache: the run had --no-weights",
    )
