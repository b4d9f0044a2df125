"""``chunkwise run`` and ``chunkwise demo``: the commands that run the processor. ``run`` checks
every option first, opens the cache once, calls ``chunkwise.run`` once with it, and prints what
came back."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from chunkwise._coffea import make_executor, save_output
from chunkwise.cache import ChunkCache
from chunkwise.chunks import SplitOptions
from chunkwise.cli._common import (
    EXIT_BUG,
    EXIT_CACHE,
    EXIT_INCOMPLETE,
    EXIT_OK,
    below,
    cache_key,
    check_output_file,
    good_enough,
    load,
    min_completeness,
    split,
    split_options,
    write_json,
)
from chunkwise.cli._processor import processor_of, runner_of
from chunkwise.errors import (
    CacheError,
    DemoError,
    OptionError,
    ProcessorUnavailableError,
    UsageError,
    WorkerError,
    one_line,
)
from chunkwise.examples import run_demo
from chunkwise.extras import dask_jobqueue, distributed
from chunkwise.filesets import hash_in_name
from chunkwise.outcomes import user_exception, user_traceback
from chunkwise.report import RunReport
from chunkwise.runner import check_extras, run
from chunkwise.tag import open_cache

__all__ = ["cmd_demo", "cmd_run"]


# ----------------------------------------------------------------------------- run


def _check_run_options(args: argparse.Namespace) -> float | None:
    """Every option that needs no file or import; returns --min-completeness."""
    if args.executor == "iterative" and args.workers is not None:
        raise UsageError("--workers needs --executor futures or dask")
    if args.job_option and args.executor != "slurm":
        raise UsageError("--job-option is for --executor slurm")
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
        check_output_file(path, option, (args.fileset,))
    threshold = min_completeness(args.min_completeness)
    if args.plot is not None and not args.plot.lower().endswith((".png", ".pdf", ".svg")):
        raise UsageError(f"--plot {args.plot!r}: give a file name ending in .png, .pdf or .svg")
    plot_options = (args.lumi, args.com, args.experiment, args.plot_text)
    if args.plot is None and plot_options != (None, None, None, None):
        raise UsageError(
            "--lumi, --com, --experiment and --plot-text label the plot: give --plot FILE too"
        )
    return threshold


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


def _open_cache(args: argparse.Namespace, proc: Any, key: bytes | None) -> ChunkCache | None:
    """The run's cache, opened under its tag and prepared, before any executor starts: the
    processor is fingerprinted here, once, and ``chunkwise.run`` is given this cache."""
    if args.cache is None:
        return None
    try:
        cache = open_cache(
            args.cache,
            proc,
            runner_of(args),
            tag=args.tag,
            key=key,
            force_tag=args.force_tag,
            weights=not args.no_weights,
        )
        cache.prepare()
    except ValueError as err:
        raise UsageError(f"--tag: {err}") from None
    except CacheError as err:
        raise UsageError(str(err)) from None
    print(f"cache: {cache.directory}", file=sys.stderr)
    return cache


def _execute(
    args: argparse.Namespace,
    work: tuple[Any, SplitOptions | None],
    proc: Any,
    key: bytes | None,
    replicas: dict[str, list[str]],
) -> RunReport | None:
    """Start the executor (an unreachable scheduler is said before anything is written), open
    the cache once, and call ``chunkwise.run``; None after a bug (said on stderr)."""
    closers: list[Callable[[], Any]] = []
    try:
        try:
            executor, closers = make_executor(
                args.executor, args.workers, args.scheduler, args.job_option or ()
            )
        except OptionError as err:
            given = "--executor slurm:" if args.executor == "slurm" else "--scheduler"
            raise UsageError(f"{given} {err}") from None
        if args.executor == "slurm":
            n = args.workers or 2
            print(
                f"dask: {n} worker{'s' if n > 1 else ''} asked of Slurm, one job each (a job "
                "that ends is replaced); chunks run as they join (squeue shows the jobs)",
                file=sys.stderr,
            )
        cache = _open_cache(args, proc, key)
        fileset, split = work
        return run(
            fileset,
            proc,
            runner_of(args, executor),
            split=split,
            cache=cache,
            retries=args.retries,
            replicas=replicas,
            salvage=not args.no_salvage,
            progress=not args.no_progress,
            weights=not args.no_weights,
            quiet=not args.verbose,
        )
    except (KeyboardInterrupt, UsageError):
        raise
    except (CacheError, ProcessorUnavailableError) as err:
        raise UsageError(str(err)) from None
    except Exception as err:
        _say_bug(err, args.verbose)
        return None
    finally:
        for close in reversed(closers):
            close()


def _say_bug(err: BaseException, verbose: bool) -> None:
    """What went wrong, as a Python bug reads: the user's part of the traceback (all of it
    with ``--verbose``), then one line naming the real exception, its file and dataset."""
    bug = getattr(err, "chunkwise_bug", False)
    if verbose or not bug:
        traceback.print_exc()
    else:
        print(
            getattr(err, "chunkwise_traceback", "") or user_traceback(err), file=sys.stderr, end=""
        )
    if bug:
        raised = user_exception(err)
        dataset, path = getattr(err, "chunkwise_file", ("?", "?"))
        # A WorkerError stands in for an exception that did not pickle; its text names it.
        said = one_line(raised)
        if not isinstance(raised, WorkerError):
            said = f"{type(raised).__name__}: {said}"
        what = f"the processor raised {said} ({dataset}, {os.path.basename(path)})"
    else:  # a worker that died, a lost cluster, an output that does not pickle...
        what = f"the run failed: {type(err).__name__}: {one_line(err)}"
    more = "" if verbose or not bug else " (--verbose shows the whole traceback)"
    print(
        f"chunkwise run: error: {what}; chunks finished so far are cached: fix it and rerun{more}",
        file=sys.stderr,
    )


def cmd_run(args: argparse.Namespace) -> int:
    """Check everything, open the cache, run, print the summary, save and plot."""
    fileset = load(args.fileset, check_name=True)
    chunks = split(fileset, args, args.fileset)
    threshold = _check_run_options(args)
    key = cache_key(args)
    replicas = _replicas(args.replica)
    runner_of(args)  # a bad --schema or --bad-file-errors is a usage error before any work
    # A missing extra is said before the cache is opened or anything runs.
    if args.executor == "dask":
        distributed("--scheduler" if args.scheduler is not None else "--executor dask")
    elif args.executor == "slurm":
        dask_jobqueue("--executor slurm")
    check_extras(chunks, replicas.values())
    proc = processor_of(args)
    # A fileset is handed over with its split options, which the run records for 'status'; a
    # chunk file that 'split' wrote is not the split, and goes as the one chunk it is.
    work = (fileset, split_options(args)) if hash_in_name(args.fileset) is None else (chunks, None)
    report = _execute(args, work, proc, key, replicas)
    if report is None:
        return EXIT_BUG
    print(report.summary())
    n_bad = sum(len(files) for files in report.bad_files.values())
    accepted = not report.complete and good_enough(
        "run", threshold, report.completeness, f"{n_bad} bad files are left out"
    )
    if accepted:
        report.notes.append(f"accepted as INCOMPLETE by --min-completeness {threshold:g}")
    elif not report.complete and threshold is not None:
        below("run", threshold, report.completeness)
    if args.report is not None:
        write_json(report.to_dict(), args.report)
        print(f"wrote the report to {args.report}", file=sys.stderr)
    if report.cache_problem is not None:
        print(f"chunkwise run: warning: {report.cache_problem}", file=sys.stderr)
    if report.output is None:
        print("no chunk succeeded: nothing to save or plot", file=sys.stderr)
    else:
        _save_and_plot(args, report)
    if report.complete:
        return EXIT_OK if report.cache_problem is None else EXIT_CACHE
    return EXIT_OK if accepted else EXIT_INCOMPLETE


def _save_and_plot(args: argparse.Namespace, report: RunReport) -> None:
    if args.output is not None:
        save_output(report.output, args.output)
        print(f"saved the merged output to {args.output}", file=sys.stderr)
    if args.plot is None:
        return
    from chunkwise.plot import plot_histograms  # matplotlib: only when a plot is asked for

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


# ----------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    """The demo: a small NanoAOD-like fileset, a run with salvage and cache, and a rerun."""
    try:
        return run_demo(args.dir)
    except DemoError as err:
        raise UsageError(str(err)) from None
