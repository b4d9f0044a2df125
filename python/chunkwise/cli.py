"""The ``chunkwise`` command line: split, hash, status, run and demo.

Every subcommand parses its arguments, checks all of its input, and only then calls the Python
API (``chunkwise.split_fileset``, ``chunkwise.hash_fileset``, ``chunkwise.run``). Bad input ends
with one line on stderr that names the problem and what to do, exit status 2, and nothing
written. ``run`` exits 0 when every file made it into the result and 1 when something is missing.

Importing this module is cheap: coffea, dask and matplotlib are imported inside the subcommands
that need them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from chunkwise.extras import MissingExtraError, check_paths, distributed

if TYPE_CHECKING:  # pragma: no cover
    from chunkwise.chunks import Chunk

__all__ = ["UsageError", "main"]

EXECUTORS = ("iterative", "futures", "dask")

#: Exit statuses (see README, "Command line").
EXIT_OK = 0  # complete: every file is in the result (status: every chunk is done)
EXIT_INCOMPLETE = 1  # bad files, or chunks not done yet
EXIT_USAGE = 2  # bad input or configuration: nothing was run or written
EXIT_CACHE = 3  # run: the result is complete, but the cache could not be written
EXIT_BUG = 4  # run: the processor raised an error outside skipbadfiles (a bug)


class UsageError(Exception):
    """Bad input to a subcommand: reported as one line on stderr, with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line rather than usage plus message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ----------------------------------------------------------------------------- argument types


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _whole_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {value}")
    return value


def _percentage(text: str) -> int:
    value = _positive_int(text)
    if value > 100 or 100 % value:
        raise argparse.ArgumentTypeError(
            f"{value} does not divide 100 evenly; use e.g. 10, 20, 25 or 50"
        )
    return value


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _dataset_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected names separated by commas, got {text!r}")
    return names


# ----------------------------------------------------------------------------- shared helpers


def _add_split_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("how to split the fileset into chunks")
    group.add_argument(
        "--strategy",
        choices=["by_dataset"],
        help="by_dataset: never mix datasets in one chunk (default: mix them)",
    )
    size = group.add_mutually_exclusive_group()
    size.add_argument(
        "--percentage",
        type=_percentage,
        metavar="P",
        help="each chunk gets P%% of every dataset's files (P divides 100)",
    )
    size.add_argument(
        "--files-per-chunk",
        type=_positive_int,
        metavar="N",
        help="each chunk gets at most N files of every dataset",
    )
    size.add_argument(
        "--events-per-chunk",
        type=_positive_int,
        metavar="N",
        help="each chunk gets files of every dataset worth at most N events, by their "
        "num_entries (a preprocessed fileset); a larger file gets a chunk of its own",
    )
    group.add_argument(
        "--datasets",
        type=_dataset_list,
        metavar="A,B",
        help="only these datasets (comma-separated names)",
    )
    group.add_argument(
        "--treename",
        metavar="T",
        help="tree name for datasets that list paths without one (e.g. Events)",
    )


def _add_min_completeness(parser: argparse.ArgumentParser, complete: str) -> None:
    parser.add_argument(
        "--min-completeness",
        type=float,
        metavar="F",
        help=f"exit 0 when every dataset has at least this fraction of its files (0-1) done, "
        f"with a loud note of what is missing (default: only when {complete})",
    )


def _add_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-key-file",
        metavar="FILE",
        help="key of a cache shared by a group (default: $CHUNKWISE_CACHE_KEY_FILE); without "
        "one, the cache must be yours and writable by no one else",
    )


def _load(path: str, check_name: bool = False) -> dict[str, Any]:
    """Load a fileset file; bad ones raise UsageError.

    With ``check_name``, a chunk file named ``<hash>.json`` whose content hashes otherwise (it
    was edited after split) gets a warning line on stderr; loading goes on.
    """
    from chunkwise.filesets import FilesetError, hash_in_name, load_fileset

    try:
        fileset = load_fileset(path)
    except FilesetError as err:
        raise UsageError(str(err)) from None
    if check_name and hash_in_name(path) is not None:
        from chunkwise import hash_fileset

        try:
            digest = hash_fileset(fileset)
        except (ValueError, TypeError):
            pass  # not hashable as it is: splitting it reports why
        else:
            _warn_name_mismatch(path, digest)
    return fileset


def _warn_name_mismatch(path: str, digest: str) -> None:
    from chunkwise.filesets import name_mismatch

    message = name_mismatch(path, digest)
    if message is not None:
        print(f"chunkwise: warning: {message}", file=sys.stderr)


def _split(fileset: dict[str, Any], args: argparse.Namespace, source: str) -> list[Chunk]:
    """Split ``fileset`` with the split options in ``args``; bad options raise UsageError."""
    from chunkwise import split_fileset

    if args.datasets is not None:
        unknown = [name for name in args.datasets if name not in fileset]
        if unknown:
            raise UsageError(
                f"--datasets: {', '.join(map(repr, unknown))} not in {source}; "
                f"it has {', '.join(map(repr, sorted(fileset)))}"
            )
    if args.treename is None:
        for dataset, data in fileset.items():
            if args.datasets is not None and dataset not in args.datasets:
                continue
            files = data.get("files") if isinstance(data, dict) else data
            if isinstance(files, list) and not (isinstance(data, dict) and "treename" in data):
                raise UsageError(
                    f"{source}: dataset {dataset!r} lists its files without a tree name; "
                    "pass --treename (e.g. --treename Events)"
                )
    try:
        chunks = split_fileset(
            fileset,
            strategy=args.strategy,
            datasets=args.datasets,
            percentage=args.percentage,
            treename=args.treename,
            files_per_chunk=args.files_per_chunk,
            events_per_chunk=args.events_per_chunk,
        )
    except (ValueError, TypeError) as err:
        raise UsageError(f"{source}: {_one_line(err)}") from None
    if not chunks:
        raise UsageError(f"{source}: no files to split; check --datasets and the fileset")
    return _chunks(chunks, source)


def _chunks(filesets: list[dict[str, Any]], source: str) -> list[Chunk]:
    """Hash every chunk once; a chunk that cannot be hashed raises UsageError."""
    from chunkwise.chunks import make_chunks

    try:
        return make_chunks(filesets)
    except (ValueError, TypeError) as err:
        raise UsageError(f"{source}: cannot hash: {_one_line(err)}") from None


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _check_writable_dir(path: str, what: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"{what}: directory {directory!r} does not exist; create it first")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"{what}: cannot write to {directory!r}; choose another place")


def _check_output_file(path: str | None, option: str, inputs: tuple[str, ...]) -> None:
    """A file the command will write: not a directory, in a writable directory, no input."""
    if path is None:
        return
    if os.path.isdir(path):
        raise UsageError(f"{option} {path!r} is a directory; give a file name")
    for source in inputs:
        if os.path.exists(path) and os.path.samefile(path, source):
            raise UsageError(f"{option} {path!r} is the input fileset; give another file name")
    _check_writable_dir(path, option)


def _min_completeness(value: float | None) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise UsageError(
            f"--min-completeness {value}: give a fraction of files between 0 and 1, e.g. 0.95"
        )
    return value


def _good_enough(
    command: str, threshold: float | None, fractions: Mapping[str, float], missing: str
) -> bool:
    """Whether an incomplete result passes ``--min-completeness``; says so loudly if it does."""
    if threshold is None or not all(f >= threshold for f in fractions.values()):
        return False
    short = ", ".join(f"{d} {f:.1%}" for d, f in sorted(fractions.items()) if f < 1.0)
    print(
        f"chunkwise {command}: note: INCOMPLETE but accepted (--min-completeness {threshold:g}):"
        f" {short}; {missing}",
        file=sys.stderr,
    )
    return True


def _below(command: str, threshold: float, fractions: Mapping[str, float]) -> None:
    short = ", ".join(f"{d} {f:.1%}" for d, f in sorted(fractions.items()) if f < threshold)
    print(
        f"chunkwise {command}: INCOMPLETE, below --min-completeness {threshold:g}: {short}",
        file=sys.stderr,
    )


def _write_json(data: Any, path: str) -> None:
    from chunkwise.atomic import atomic_write

    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=1, allow_nan=False)
        f.write("\n")


# ----------------------------------------------------------------------------- split


def _cmd_split(args: argparse.Namespace) -> int:
    fileset = _load(args.fileset)
    chunks = _split(fileset, args, args.fileset)

    out = os.path.abspath(args.out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {args.out!r} is a file; give a directory")
    if os.path.isdir(out) and os.listdir(out):
        _check_replaceable(args, out)
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise UsageError(f"--out: directory {parent!r} does not exist; create it first")

    manifest = {
        "chunkwise": _version(),
        "fileset": os.path.abspath(args.fileset),
        "options": {
            "strategy": args.strategy,
            "percentage": args.percentage,
            "files_per_chunk": args.files_per_chunk,
            "events_per_chunk": args.events_per_chunk,
            "datasets": args.datasets,
            "treename": args.treename,
        },
        "n_chunks": 0,
        "chunks": [],
    }
    seen: set[str] = set()
    # Everything goes into a fresh directory next to --out, renamed into place at the end, so
    # that an error or interruption leaves --out as it was.
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", dir=parent)
    try:
        for chunk in chunks:
            if chunk.hash in seen:  # identical chunks share one file
                continue
            seen.add(chunk.hash)
            with open(os.path.join(staging, f"{chunk.hash}.json"), "w", encoding="utf-8") as f:
                json.dump(chunk.fileset, f, indent=1)
                f.write("\n")
            counts = {dataset: len(paths) for dataset, paths in chunk.files.items()}
            manifest["chunks"].append(
                {
                    "hash": chunk.hash,
                    "file": f"{chunk.hash}.json",
                    "datasets": counts,
                    "n_files": sum(counts.values()),
                }
            )
        manifest["n_chunks"] = len(manifest["chunks"])
        with open(os.path.join(staging, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.write("\n")
        os.chmod(staging, 0o777 & ~_umask())
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    for entry in manifest["chunks"]:
        print(os.path.join(args.out, entry["file"]))
    n_files = sum(entry["n_files"] for entry in manifest["chunks"])
    print(
        f"wrote {manifest['n_chunks']} chunks ({n_files} files) and manifest.json to {args.out}",
        file=sys.stderr,
    )
    return 0


def _check_replaceable(args: argparse.Namespace, out: str) -> None:
    """Refuse the non-empty directory ``out`` unless --force may replace it.

    It may if ``chunkwise split`` made it: a chunkwise manifest.json and nothing else but
    ``<hash>.json`` chunk files, so that nothing chunkwise did not write is lost. It never may
    if the input fileset lies inside it.
    """
    if _inside(args.fileset, out):
        raise UsageError(
            f"--out {args.out!r} holds the input fileset {args.fileset!r}; choose a new "
            "directory, chunkwise never deletes its input"
        )
    problem = _not_a_split(out)
    if not args.force:
        hint = " or add --force to replace it" if problem is None else ""
        raise UsageError(f"--out {args.out!r} is not empty; choose a new directory{hint}")
    if problem is not None:
        raise UsageError(
            f"--out {args.out!r} {problem}; choose a new directory, chunkwise never deletes "
            "what it did not make"
        )


def _inside(path: str, directory: str) -> bool:
    """Whether ``path`` lies inside ``directory``, as written or with symbolic links resolved."""
    for resolve in (os.path.abspath, os.path.realpath):
        inner, outer = resolve(path), resolve(directory)
        if os.path.commonpath([inner, outer]) == outer:
            return True
    return False


def _not_a_split(directory: str) -> str | None:
    """Why ``directory`` is not what ``chunkwise split`` writes, or None if it is."""
    from chunkwise.filesets import hash_in_name

    # The manifest is the marker: split writes it into every directory it makes.
    if not _is_manifest(os.path.join(directory, "manifest.json")):
        return "was not made by 'chunkwise split' (it has no chunkwise manifest.json)"
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name == "manifest.json":
            continue
        if hash_in_name(name) is not None and os.path.isfile(path) and not os.path.islink(path):
            continue
        return f"holds {name!r}, which 'chunkwise split' does not write"
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_dir(new: str, target: str) -> None:
    """Move directory ``new`` to ``target``, replacing an existing ``target`` directory."""
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


def _version() -> str:
    from chunkwise import __version__

    return __version__


# ----------------------------------------------------------------------------- hash


def _is_manifest(path: str) -> bool:
    if os.path.basename(path) != "manifest.json":
        return False
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "chunkwise" in data and "chunks" in data


def _cmd_hash(args: argparse.Namespace) -> int:
    lines = []
    hashes = []
    for path in args.chunks:
        if _is_manifest(path):
            continue  # so that `chunkwise hash DIR/*.json` works on a split directory
        (chunk,) = _chunks([_load(path)], path)
        lines.append(f"{chunk.hash}  {path}")
        hashes.append((path, chunk.hash))
    # Only once every file is read: a bad one later on still gets its one error line alone.
    for path, digest in hashes:
        _warn_name_mismatch(path, digest)
    print("\n".join(lines))
    return 0


# ----------------------------------------------------------------------------- processors, Runners


def _add_runner_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Runner settings (they are part of the cache tag)")
    group.add_argument(
        "--schema",
        default="NanoAODSchema",
        metavar="NAME",
        help="coffea.nanoevents schema, e.g. NanoAODSchema (default), BaseSchema, PHYSLITESchema",
    )
    group.add_argument(
        "--chunksize",
        type=_positive_int,
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


def _schema(name: str) -> Any:
    from coffea import nanoevents

    names = sorted(n for n in dir(nanoevents) if n.endswith("Schema") and n != "Schema")
    wanted = name.lower().removesuffix("schema")
    for candidate in names:
        if candidate.lower().removesuffix("schema") == wanted:
            return getattr(nanoevents, candidate)
    raise UsageError(f"--schema: unknown schema {name!r}; choose one of {', '.join(names)}")


def _load_processor(spec: str) -> Any:
    """Import ``module:Class`` and return an instance of that coffea processor."""
    import importlib

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(
            f"--processor {spec!r}: write it as module:Class, "
            "e.g. --processor chunkwise.examples:METProcessor"
        )
    # The console script does not put the working directory on sys.path; `python -m` does.
    # Add it, so that a processor module next to the fileset imports the same way in both.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise UsageError(
                f"--processor {spec!r}: no module named {err.name!r}; check the name, run from "
                "its directory or add that directory to PYTHONPATH"
            ) from None
        raise UsageError(
            f"--processor {spec!r}: importing {module_name!r} failed: {_one_line(err)}; "
            "install what it needs"
        ) from None
    except Exception as err:
        raise UsageError(
            f"--processor {spec!r}: importing {module_name!r} failed: "
            f"{type(err).__name__}: {_one_line(err)}; fix the module"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(
                f"--processor {spec!r}: {module_name!r} has no {attr!r}; check the class name"
            )
        obj = getattr(obj, part)

    from coffea.processor import ProcessorABC

    if isinstance(obj, type):
        if not issubclass(obj, ProcessorABC):
            raise UsageError(
                f"--processor {spec!r}: {attr} is not a coffea.processor.ProcessorABC subclass"
            )
        try:
            obj = obj()
        except Exception as err:
            raise UsageError(
                f"--processor {spec!r}: {attr}() failed: {type(err).__name__}: "
                f"{_one_line(err)}; the class must be creatable without arguments"
            ) from None
    if not isinstance(obj, ProcessorABC):
        raise UsageError(
            f"--processor {spec!r}: {attr} is not a coffea processor class or instance"
        )
    return obj


def _make_runner(args: argparse.Namespace, executor: Any) -> Any:
    from coffea import processor

    return processor.Runner(
        executor=executor,
        schema=_schema(args.schema),
        chunksize=args.chunksize,
        skipbadfiles=_bad_file_errors(getattr(args, "bad_file_errors", None)),
        use_result_type=True,
    )


def _bad_file_errors(names: str | None) -> tuple[type[BaseException], ...]:
    """The exception classes named in --bad-file-errors (builtins or uproot.exceptions)."""
    import builtins

    import uproot

    from chunkwise._coffea import default_bad_file_errors

    if names is None:
        return default_bad_file_errors()
    classes = []
    for name in (n.strip() for n in names.split(",")):
        found = getattr(builtins, name, None) or getattr(uproot.exceptions, name, None)
        if not (isinstance(found, type) and issubclass(found, BaseException)):
            raise UsageError(
                f"--bad-file-errors: {name!r} is not an exception of Python or "
                "uproot.exceptions; e.g. --bad-file-errors OSError,KeyInFileError"
            )
        classes.append(found)
    return tuple(classes)


def _replicas(specs: list[str] | None) -> dict[str, list[str]]:
    """--replica PREFIX=ALTERNATIVE, repeatable, alternatives in the order given."""
    table: dict[str, list[str]] = {}
    for spec in specs or ():
        prefix, sep, alternative = spec.partition("=")
        if not sep or not prefix or not alternative:
            raise UsageError(
                f"--replica {spec!r}: write it as PREFIX=ALTERNATIVE, e.g. "
                "--replica root://siteA//store/=root://siteB//store/"
            )
        table.setdefault(prefix, []).append(alternative)
    return table


# ----------------------------------------------------------------------------- status


def _processor_manifest(args: argparse.Namespace) -> dict[str, Any]:
    """The tag manifest of ``--processor`` with every option that is part of the tag (the
    Runner settings and --no-weights): the one place the CLI derives a tag from its options."""
    from coffea import processor

    from chunkwise.tag import tag_manifest

    proc = _load_processor(args.processor)
    runner = _make_runner(args, processor.IterativeExecutor())
    return tag_manifest(proc, runner, None, not args.no_weights)


def _resolve_tag(args: argparse.Namespace) -> str:
    """The cache tag status reads: --tag, else derived from --processor, else the only one."""
    from chunkwise.cache_status import find_tag
    from chunkwise.tag import tag_of

    if args.tag is not None:
        return args.tag
    if args.processor is not None:
        return tag_of(_processor_manifest(args))
    from chunkwise.cache import CacheError

    try:
        return find_tag(args.cache, key=_cache_key(args))
    except CacheError as err:
        raise UsageError(str(err)) from None
    except NotADirectoryError:
        raise UsageError(f"--cache {args.cache!r} is a file; give the cache directory") from None
    except ValueError as err:
        raise UsageError(
            f"--cache: {err} with --tag, or give --processor (and the Runner settings) to derive it"
        ) from None


def _cmd_status(args: argparse.Namespace) -> int:
    from chunkwise.cache_status import status

    fileset = _load(args.fileset)
    chunks = _split(fileset, args, args.fileset)
    if os.path.exists(args.cache) and not os.path.isdir(args.cache):
        raise UsageError(f"--cache {args.cache!r} is a file; give the cache directory")
    _check_output_file(args.write_remaining, "--write-remaining", (args.fileset,))
    threshold = _min_completeness(args.min_completeness)
    tag = _resolve_tag(args)
    from chunkwise.cache import CacheError

    try:
        report = status(chunks, args.cache, tag=tag, cache_key=_cache_key(args))
    except ValueError as err:
        raise UsageError(f"--tag: {err}") from None
    except CacheError as err:
        raise UsageError(str(err)) from None
    if args.list_incomplete:
        for digest in report.incomplete:
            print(digest)
    else:
        print(report.summary())
    if args.write_remaining is not None:
        remaining = report.remaining_fileset(fileset)
        _write_json(remaining, args.write_remaining)
        n = sum(
            len(data["files"] if isinstance(data, Mapping) else data) for data in remaining.values()
        )
        print(
            f"wrote the {n} files not done ({len(remaining)} datasets) to "
            f"{args.write_remaining}" + ("" if n else ": nothing remains"),
            file=sys.stderr,
        )
    if report.complete:
        return EXIT_OK
    fractions = {d: row.fraction for d, row in report.datasets.items()}
    n_left = report.overall.files - report.overall.files_done
    if _good_enough("status", threshold, fractions, f"{n_left} files are not done"):
        return EXIT_OK
    if threshold is not None:
        _below("status", threshold, fractions)
    return EXIT_INCOMPLETE


# ----------------------------------------------------------------------------- run


def _cmd_run(args: argparse.Namespace) -> int:
    fileset = _load(args.fileset, check_name=True)
    chunks = _split(fileset, args, args.fileset)
    if args.executor == "iterative" and args.workers is not None:
        raise UsageError("--workers needs --executor futures or dask")
    if args.scheduler is not None and args.executor != "dask":
        raise UsageError("--scheduler needs --executor dask")
    if args.workers is not None and args.scheduler is not None:
        raise UsageError("--workers starts a local cluster; leave it out with --scheduler")
    if args.cache is not None and os.path.exists(args.cache) and not os.path.isdir(args.cache):
        raise UsageError(f"--cache {args.cache!r} is a file; give a directory")
    for option, path in (
        ("--output", args.output),
        ("--plot", args.plot),
        ("--report", args.report),
    ):
        _check_output_file(path, option, (args.fileset,))
    threshold = _min_completeness(args.min_completeness)
    if args.plot is not None and not args.plot.lower().endswith((".png", ".pdf", ".svg")):
        raise UsageError(f"--plot {args.plot!r}: give a file name ending in .png, .pdf or .svg")
    plot_options = (args.lumi, args.com, args.experiment, args.plot_text)
    if args.plot is None and plot_options != (None, None, None, None):
        raise UsageError(
            "--lumi, --com, --experiment and --plot-text label the plot: give --plot FILE too"
        )

    key = _cache_key(args)
    replicas = _replicas(args.replica)
    _bad_file_errors(args.bad_file_errors)  # a bad name is a usage error before any work
    # A missing extra is said before the cache is opened or anything runs.
    if args.executor == "dask":
        distributed("--scheduler" if args.scheduler is not None else "--executor dask")
    check_paths(p for chunk in chunks for files in chunk.files.values() for p in files)
    check_paths(a for alternatives in replicas.values() for a in alternatives)
    proc = _load_processor(args.processor)
    from chunkwise._coffea import ProcessorUnavailableError
    from chunkwise.cache import CacheError
    from chunkwise.runner import run

    if args.cache is not None:
        # The tag and the cache are checked before any executor starts or any work is done.
        from coffea import processor

        from chunkwise.tag import open_cache

        try:
            cache = open_cache(
                args.cache,
                args.tag,
                key,
                args.force_tag,
                proc,
                _make_runner(args, processor.IterativeExecutor()),
                weights=not args.no_weights,
            )
            cache.prepare()
        except ValueError as err:
            raise UsageError(f"--tag: {err}") from None
        except CacheError as err:
            raise UsageError(str(err)) from None
        print(f"cache: {cache.directory}", file=sys.stderr)

    closers: list[Callable[[], Any]] = []
    try:
        runner = _make_runner(args, _make_executor(args, closers))
        try:
            report = run(
                chunks,
                proc,
                runner,
                cache=args.cache,
                cache_tag=args.tag,
                cache_key=key,
                force_tag=args.force_tag,
                retries=args.retries,
                replicas=replicas,
                salvage=not args.no_salvage,
                progress=not args.no_progress,
                weights=not args.no_weights,
            )
        except (KeyboardInterrupt, UsageError):
            raise
        except (CacheError, ProcessorUnavailableError) as err:
            raise UsageError(str(err)) from None
        except Exception as err:
            import traceback

            traceback.print_exc()
            if getattr(err, "chunkwise_bug", False):
                what = f"the processor raised {type(err).__name__}, which is not a bad-file error"
            else:  # a worker that died, a lost cluster, an output that does not pickle...
                what = f"the run failed: {type(err).__name__}: {_one_line(err)}"
            print(
                f"chunkwise run: error: {what}; chunks finished so far are cached: fix it "
                "and rerun",
                file=sys.stderr,
            )
            return EXIT_BUG
    finally:
        for close in reversed(closers):
            close()

    print(report.summary())
    n_bad = sum(len(files) for files in report.bad_files.values())
    accepted = not report.complete and _good_enough(
        "run", threshold, report.completeness, f"{n_bad} bad files are left out"
    )
    if accepted:
        report.notes.append(f"accepted as INCOMPLETE by --min-completeness {threshold:g}")
    elif not report.complete and threshold is not None:
        _below("run", threshold, report.completeness)
    if args.report is not None:
        _write_json(report.to_dict(), args.report)
        print(f"wrote the report to {args.report}", file=sys.stderr)
    if report.cache_problem is not None:
        print(f"chunkwise run: warning: {report.cache_problem}", file=sys.stderr)
    if report.output is None:
        print("no chunk succeeded: nothing to save or plot", file=sys.stderr)
    else:
        if args.output is not None:
            _save_output(report.output, args.output)
            print(f"saved the merged output to {args.output}", file=sys.stderr)
        if args.plot is not None:
            from chunkwise.plot import plot_histograms

            plotted = plot_histograms(
                report.output,
                args.plot,
                completeness=report.completeness,
                lumi=args.lumi,
                com=args.com,
                experiment=args.experiment or "CMS",
                text="Private Work" if args.plot_text is None else args.plot_text,
            )
            if args.lumi is not None:
                print(
                    f"note: --lumi {args.lumi:g} labels the plot; the histograms are drawn as "
                    "the processor filled them (scale MC by xsec * lumi / sumw in the processor "
                    "or on report.output)",
                    file=sys.stderr,
                )
            if plotted.drawn:
                print(f"plotted {', '.join(plotted.drawn)} to {args.plot}", file=sys.stderr)
            else:
                print("the output holds no 1D histograms: --plot wrote nothing", file=sys.stderr)
            if plotted.note() is not None:
                print(plotted.note(), file=sys.stderr)
    if report.complete:
        return EXIT_OK if report.cache_problem is None else EXIT_CACHE
    return EXIT_OK if accepted else EXIT_INCOMPLETE


def _cache_key(args: argparse.Namespace) -> bytes | None:
    """The shared cache's key, from --cache-key-file or $CHUNKWISE_CACHE_KEY_FILE."""
    from chunkwise.cache import CacheError, load_key

    path = args.cache_key_file or os.environ.get("CHUNKWISE_CACHE_KEY_FILE") or None
    if path is None:
        return None
    try:
        return load_key(path)
    except CacheError as err:
        raise UsageError(str(err)) from None


def _make_executor(args: argparse.Namespace, closers: list[Callable[[], Any]]) -> Any:
    from coffea import processor

    from chunkwise._coffea import cpu_count

    workers = args.workers or cpu_count()  # the cores this process may use (a batch slot's)

    if args.executor == "iterative":
        return processor.IterativeExecutor(status=False)
    if args.executor == "futures":
        return processor.FuturesExecutor(workers=workers, status=False)
    dask = distributed("--scheduler" if args.scheduler is not None else "--executor dask")
    Client, LocalCluster = dask.Client, dask.LocalCluster

    if args.scheduler is not None:
        try:
            client = Client(args.scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as err:
            raise UsageError(
                f"--scheduler {args.scheduler!r}: cannot connect ({_one_line(err)}); "
                "check the address and that the scheduler is running"
            ) from None
        closers.append(client.close)
    else:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            dashboard_address=None,
        )
        closers.append(cluster.close)
        client = Client(cluster)
        closers.append(client.close)
    return processor.DaskExecutor(client=client, status=False)


def _save_output(output: Any, path: str) -> None:
    """Save with coffea.util.save to a temporary name, then rename: never a torn file."""
    from coffea.util import save

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        save(output, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------- cache


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")  # pragma: no cover


def _cache_call(fn: Callable[[], Any]) -> Any:
    from chunkwise.cache import CacheError

    try:
        return fn()
    except CacheError as err:
        raise UsageError(str(err)) from None


def _cmd_cache_ls(args: argparse.Namespace) -> int:
    import time

    from chunkwise.cache import list_tags
    from chunkwise.table import format_table

    key = _cache_key(args)
    tags = _cache_call(lambda: list_tags(args.cache, key=key))
    if not tags:
        print(f"{args.cache}: no cache here yet")
        return EXIT_OK
    now = time.time()
    rows = [
        (
            t.tag or "(flat)",
            t.processor,
            str(t.entries),
            _size(t.bytes),
            _age(now - t.newest) if t.newest else "-",
        )
        for t in tags
    ]
    print(format_table(("tag", "processor", "entries", "size", "newest"), rows, "llrrr"))
    return EXIT_OK


def _current_tags(args: argparse.Namespace) -> set[str]:
    keep = set(args.keep or ())
    if args.processor is not None:
        from chunkwise.tag import tag_of

        keep.add(tag_of(_processor_manifest(args)))
    if not keep:
        raise UsageError("say which tag to keep: --keep TAG, or --processor MODULE:CLASS")
    return keep


def _prune_key(args: argparse.Namespace) -> bytes | None:
    """The key prune uses: a root:// cache's (it needs one, as for every command), and none
    for a local cache, which is pruned only if it is your own (a key authenticates entries;
    it does not make a group's directories yours to delete)."""
    from chunkwise.cache import is_remote

    if is_remote(args.cache):
        return _cache_key(args)
    if args.cache_key_file is not None:
        raise UsageError(
            "--cache-key-file: only a root:// cache is pruned with a key; a local cache is "
            "pruned without one, and only if it is your own"
        )
    return None


def _cmd_cache_prune(args: argparse.Namespace) -> int:
    from chunkwise.cache import CacheError, list_tags, remove_tag

    keep = _current_tags(args)
    key = _prune_key(args)
    tags = [t for t in _cache_call(lambda: list_tags(args.cache, key=key)) if t.tag]
    if not any(t.tag in keep for t in tags):
        raise UsageError(
            f"--keep: none of {', '.join(sorted(keep))} is in {args.cache}; nothing removed "
            "(check the tag with 'chunkwise cache ls')"
        )
    status = EXIT_OK
    for t in tags:
        if t.tag in keep:
            continue
        if args.dry_run:
            print(f"would remove {t.tag} ({t.entries} entries, {_size(t.bytes)})")
            continue
        try:
            remove_tag(args.cache, t.tag, key=key)
        except CacheError as err:
            print(f"chunkwise cache prune: kept {t.tag}: {err}", file=sys.stderr)
            status = EXIT_INCOMPLETE
            continue
        print(f"removed {t.tag} ({t.entries} entries, {_size(t.bytes)})")
    return status


def _cmd_cache_explain(args: argparse.Namespace) -> int:
    from chunkwise.cache import CacheError, ChunkCache
    from chunkwise.tag import explain

    key = _cache_key(args)

    def manifest_of(tag: str) -> dict[str, Any]:
        try:
            cache = ChunkCache(args.cache, tag, key=key)
        except CacheError as err:
            raise UsageError(str(err)) from None
        except ValueError as err:
            raise UsageError(f"tag: {err}") from None
        found = _cache_call(cache.read_manifest)
        if found is None:
            raise UsageError(
                f"{cache.directory}: no tag.json that verifies; it was not written by this "
                "chunkwise (with this cache's key, if it has one)"
            )
        return found

    old = manifest_of(args.old)
    if args.new is not None:
        new, name = manifest_of(args.new), args.new
    elif args.processor is not None:
        new = _processor_manifest(args)
        name = f"the current {args.processor}"
    else:
        raise UsageError("compare with a second TAG, or with --processor MODULE:CLASS")
    lines = explain(old, new)
    if not lines:
        print(f"{args.old} and {name}: nothing differs")
        return EXIT_OK
    print(f"from {args.old} to {name}:")
    for line in lines:
        print(f"  {line}")
    return EXIT_INCOMPLETE


def _cmd_cache_verify(args: argparse.Namespace) -> int:
    from chunkwise.cache import CacheError, ChunkCache, list_tags

    key = _cache_key(args)
    tags = [args.tag] if args.tag is not None else [t.tag for t in _cache_call(
        lambda: list_tags(args.cache, key=key)
    )]  # fmt: skip
    bad = 0
    for tag in tags:
        try:
            cache = ChunkCache(args.cache, tag, key=key)
        except CacheError as err:
            raise UsageError(str(err)) from None
        except ValueError as err:
            raise UsageError(f"--tag: {err}") from None
        counts = {"cached": 0, "corrupt": 0}
        for digest in _cache_call(lambda c=cache: list(c.hashes())):
            state = _cache_call(lambda c=cache, d=digest: c.status(d))
            if state == "corrupt":
                print(f"corrupt: {cache.path(digest)}")
            counts["cached" if state == "cached" else "corrupt"] += 1
        stale = sum(1 for _ in cache.temporaries())
        bad += counts["corrupt"]
        print(
            f"{tag or '(flat)'}: {counts['cached']} entries verify, {counts['corrupt']} corrupt"
            + (f", {stale} stale temporary files" if stale else "")
        )
    return EXIT_INCOMPLETE if bad else EXIT_OK


# ----------------------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace) -> int:
    from chunkwise.demo import DemoError, run_demo

    try:
        return run_demo(args.dir)
    except DemoError as err:
        raise UsageError(str(err)) from None


# ----------------------------------------------------------------------------- parser


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
    parser = _Parser(
        prog="chunkwise",
        description=(
            "Split coffea filesets into chunks named by their hash, run them with a cache that "
            "survives failures, and see what is done."
        ),
    )
    parser.add_argument("--version", action="version", version=f"chunkwise {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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
    _add_split_options(p)
    p.add_argument("--out", required=True, metavar="DIR", help="new or empty output directory")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace DIR if an earlier split made it (and it holds nothing else)",
    )
    p.set_defaults(func=_cmd_split)

    p = sub.add_parser(
        "hash",
        help="print the hash of each chunk file",
        description="Print 'HASH  PATH' for each chunk file: the key chunkwise caches it under.",
    )
    p.add_argument("chunks", nargs="+", metavar="CHUNK", help="a chunk or fileset file")
    p.set_defaults(func=_cmd_hash)

    p = sub.add_parser(
        "status",
        help="show, per dataset, how much of a fileset is in the cache (runs nothing)",
        description=(
            "Split FILESET as 'run' would and look each chunk up in the cache: print, per "
            "dataset, the chunks done, failed (with each bad file and its error), never run "
            "and corrupt, and the fraction of files done. Exit status 0 when everything is "
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
    _add_key_option(p)
    _add_split_options(p)
    tag = p.add_argument_group("which cache tag to read (default: the only one in DIR)")
    tag.add_argument("--tag", metavar="T", help="the tag, as 'run' printed it ('' for flat)")
    tag.add_argument(
        "--processor", metavar="MODULE:CLASS", help="derive the tag from this processor"
    )
    _add_runner_options(p)
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
    _add_min_completeness(p, "every chunk is done")
    p.set_defaults(func=_cmd_status)

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
    p.add_argument("fileset", metavar="FILESET", help="a .json, .json.gz, .yaml or .yml fileset")
    p.add_argument(
        "--processor",
        required=True,
        metavar="MODULE:CLASS",
        help="the coffea processor class, created without arguments",
    )
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="iterative",
        help="how each chunk runs: in this process (default), a process pool, or dask",
    )
    p.add_argument(
        "--workers", type=_positive_int, metavar="N", help="processes for futures or dask"
    )
    p.add_argument(
        "--scheduler", metavar="ADDRESS", help="a running dask scheduler, e.g. tcp://host:8786"
    )
    _add_split_options(p)
    _add_runner_options(p)
    p.add_argument(
        "--cache",
        metavar="DIR",
        help="cache chunk outputs in this directory, or root://host//dir with --cache-key-file "
        "(default: no cache)",
    )
    _add_key_option(p)
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
    _add_min_completeness(p, "every file is in the result")
    plot = p.add_argument_group("the plot")
    plot.add_argument(
        "--plot",
        metavar="FILE",
        help="draw the 1D histograms of the output to FILE (.png, .pdf or .svg), one panel each",
    )
    plot.add_argument(
        "--lumi", type=_positive_number, metavar="FB", help="integrated luminosity in fb^-1"
    )
    plot.add_argument(
        "--com", type=_positive_number, metavar="TEV", help="centre-of-mass energy in TeV"
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
    files = p.add_argument_group("bad files, retries and replicas")
    files.add_argument(
        "--retries",
        type=_whole_number,
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
    p.set_defaults(func=_cmd_run)

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
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "cache",
        help="list, verify and prune a cache's tags",
        description="Look after a cache directory of 'run': one sub-directory (tag) per "
        "processor and Runner configuration.",
    )
    cache_sub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    q = cache_sub.add_parser("ls", help="list the tags: processor, entries, size, age")
    q.add_argument("cache", metavar="DIR")
    _add_key_option(q)
    q.set_defaults(func=_cmd_cache_ls)
    q = cache_sub.add_parser(
        "verify", help="check every entry without unpickling it (exit 1 if one is corrupt)"
    )
    q.add_argument("cache", metavar="DIR")
    q.add_argument("--tag", metavar="T", help="only this tag (default: all)")
    _add_key_option(q)
    q.set_defaults(func=_cmd_cache_verify)
    q = cache_sub.add_parser(
        "prune", help="remove every tag but the current one (only what chunkwise wrote)"
    )
    q.add_argument("cache", metavar="DIR")
    q.add_argument("--keep", action="append", metavar="TAG", help="a tag to keep (repeatable)")
    q.add_argument("--processor", metavar="MODULE:CLASS", help="keep the tag of this processor")
    _add_runner_options(q)
    q.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    q.add_argument(
        "--cache-key-file",
        metavar="FILE",
        help="key of a root:// cache, which needs one (default: $CHUNKWISE_CACHE_KEY_FILE); "
        "a local cache is pruned only if it is your own, without a key",
    )
    q.set_defaults(func=_cmd_cache_prune)
    q = cache_sub.add_parser(
        "explain",
        help="say what differs between two tags (or a tag and the current processor)",
    )
    q.add_argument("cache", metavar="DIR")
    q.add_argument("old", metavar="TAG")
    q.add_argument("new", metavar="TAG2", nargs="?")
    q.add_argument("--processor", metavar="MODULE:CLASS", help="compare with this processor")
    _add_runner_options(q)
    _add_key_option(q)
    q.set_defaults(func=_cmd_cache_explain)

    return parser


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
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        print(
            "chunkwise: error: choose a command: split, hash, status, run, cache or demo "
            "(see 'chunkwise --help')",
            file=sys.stderr,
        )
        return EXIT_USAGE
    with warnings.catch_warnings():  # restored on return: main() may run inside a program
        warnings.showwarning = _OneLineWarnings(warnings.showwarning)
        return _call(func, args)


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
        from chunkwise.cache import CorruptCacheEntryWarning
        from chunkwise.tag import StaleModuleWarning, UnfingerprintableStateWarning

        ours = (CorruptCacheEntryWarning, StaleModuleWarning, UnfingerprintableStateWarning)
        if not issubclass(category, ours):
            self.replaced(message, category, filename, lineno, file, line)
            return
        text = " ".join(str(message).split())
        print(f"{category.__name__}: {text}", file=sys.stderr if file is None else file)


def _call(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return func(args)
    except (UsageError, MissingExtraError) as err:
        print(f"chunkwise {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        hint = "; finished chunks are cached, rerun to resume" if args.command == "run" else ""
        print(f"chunkwise {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    except OSError as err:  # the file system said no (a directory you may not read, a bad disk)
        where = f"{err.filename}: " if err.filename else ""
        print(
            f"chunkwise {args.command}: error: {where}{err.strerror or err}; check that it "
            "exists and that you may read it (and write it, for a cache)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except Exception as err:  # a crash of chunkwise itself: not "incomplete", not bad input
        import traceback

        traceback.print_exc()
        print(
            f"chunkwise {args.command}: internal error: {type(err).__name__}: {_one_line(err)}; "
            "please report it",
            file=sys.stderr,
        )
        return EXIT_BUG
