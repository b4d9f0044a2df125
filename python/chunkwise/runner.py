"""``chunkwise.run``: process a fileset chunk by chunk with a coffea Runner, losing no work.

Each chunk of ``chunkwise.split_fileset`` is a unit of caching: its output is saved under
``chunkwise.hash_fileset(chunk)`` (see ``chunkwise.cache``) the moment its last file is done. The
unit of work is the file: every file of every open chunk is a task on the Runner's executor (this
process, one process pool, or one dask client for the whole run), so chunks run concurrently and
keep every worker busy, whatever their size (``chunkwise.engine``). A chunk with a bad file is
salvaged from its files' outputs, each cached under its own single-file hash, so only the files
that really fail are lost; the ``RunReport`` (``chunkwise.report``) says what fraction of each
dataset's files, and how many events, made it into the merged output.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from chunkwise._coffea import Plan, default_runner, plan
from chunkwise.cache import ChunkCache
from chunkwise.chunks import Chunk, SplitOptions, count_files, make_chunks, split_options
from chunkwise.engine import run_chunks
from chunkwise.errors import ChunkFailure
from chunkwise.extras import check_paths
from chunkwise.report import ChunkRecord, RunReport, add_counts, finish_report
from chunkwise.retry import RetryPolicy
from chunkwise.tag import check_opened
from chunkwise.tag import open_cache as _open_cache

__all__ = [
    "ChunkFailure",
    "ChunkRecord",
    "RunReport",
    "check_extras",
    "default_runner",
    "open_cache",
    "run",
]


def check_extras(chunks: Sequence[Chunk], alternatives: Iterable[Iterable[str]]) -> None:
    """Before anything runs: a ``root://`` path, or replica (each of ``alternatives`` lists a
    prefix's), needs ``chunkwise[xrootd]``; raise ``MissingExtraError`` if it is missing."""
    check_paths(p for chunk in chunks for files in chunk.files.values() for p in files)
    check_paths(a for alts in alternatives for a in alts)


def _checked(
    file_sums: Any,
    in_flight: int | None,
    retries: int,
    delay: float,
    replicas: Mapping[str, str | Sequence[str]] | None,
) -> RetryPolicy:
    """Check ``run``'s options before anything is read; return its retry policy."""
    if file_sums is not None and not callable(file_sums):
        raise TypeError(
            f"file_sums must be a function of an uproot file, got {type(file_sums).__name__}"
        )
    if in_flight is not None and (not isinstance(in_flight, int) or in_flight < 1):
        raise ValueError(f"in_flight must be a whole number of at least 1, got {in_flight!r}")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"retries must be a whole number of at least 0, got {retries!r}")
    if not isinstance(delay, (int, float)) or delay < 0:
        raise ValueError(f"retry_delay must be a number of seconds >= 0, got {delay!r}")
    table = []
    for prefix, alternatives in (replicas or {}).items():
        alts = (alternatives,) if isinstance(alternatives, str) else tuple(alternatives)
        if (
            not isinstance(prefix, str)
            or not prefix
            or not all(isinstance(a, str) and a for a in alts)
        ):
            raise ValueError(
                "replicas must map path prefixes to alternative prefixes (strings), got "
                f"{prefix!r}: {alternatives!r}"
            )
        table.append((prefix, alts))
    return RetryPolicy(retries, float(delay), tuple(table))


def run(
    fileset: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    processor_instance: Any,
    runner: Any = None,
    *,
    split: SplitOptions | None = None,
    cache: str | Path | ChunkCache | None = None,
    cache_tag: str | None = None,
    salvage: bool = True,
    progress: bool = True,
    in_flight: int | None = None,
    quiet: bool = True,
    cache_key: bytes | None = None,
    force_tag: bool = False,
    retries: int = 3,
    retry_delay: float = 1.0,
    replicas: Mapping[str, str | Sequence[str]] | None = None,
    file_sums: Callable[[Any], Mapping[str, float] | None] | None = None,
    weights: bool = True,
    **split_keywords: Any,
) -> RunReport:
    """Run a coffea processor over a fileset chunk by chunk, caching and salvaging.

    Every file of a chunk is a task on the Runner's executor, run there by an in-process coffea
    Runner with the same settings; as many chunks are open at once as keep every worker busy.
    The moment a chunk's last file is done, its output is saved under ``hash_fileset(chunk)``
    in the cache and merged with ``coffea.processor.accumulate``. A chunk with a bad file (an
    error inside the Runner's ``skipbadfiles`` set) is salvaged: each of its good files is
    cached as its own single-file chunk and merged, so only the bad files are lost. A rerun
    with the same cache loads what succeeded and retries only what failed.

    Parameters
    ----------
    fileset : dict or list of dict
        A coffea fileset, split here with ``split``, or a list of chunks that is already split
        (then ``split`` must set nothing). Chunks must be self-contained (carry their
        treename), as ``hash_fileset`` requires.
    processor_instance : coffea.processor.ProcessorABC
        The processor, pickled with cloudpickle; its module is shipped by value when it is your
        own code, so workers that cannot import it still run it. Each file gets a fresh copy of
        it, as each of coffea's work items does; ``postprocess`` runs on each file's output.
    runner : coffea.processor.Runner, optional
        With an ``IterativeExecutor`` (this process), a ``FuturesExecutor`` (one process pool
        for the whole run) or a ``DaskExecutor`` (its client). Its settings (schema, chunksize,
        skipbadfiles, xrootdtimeout, ...) apply to every file; it is never changed. ``None``:
        ``default_runner()``, an IterativeExecutor with NanoAODSchema.
    split : SplitOptions, optional
        How to split a fileset dict, e.g. ``SplitOptions(files_per_chunk=2)``: the options of
        ``chunkwise.split_fileset`` (``events_per_chunk`` packs the files of a preprocessed
        fileset by ``num_entries``). Given as keywords of their own (``files_per_chunk=2``),
        as before, they still work, with a ``DeprecationWarning``.
    cache : str, os.PathLike or ChunkCache, optional
        Cache directory (created user-only), or a directory on an XRootD server given as
        ``"root://host//absolute/dir"`` (for sites without a shared file system; it needs
        ``cache_key``, see ``chunkwise.cache``). ``None``: no cache, nothing is written. A
        cache opened with ``chunkwise.open_cache`` is used as it is (then ``cache_tag``,
        ``cache_key`` and ``force_tag`` are its own): nothing is fingerprinted again.
    cache_tag : str, optional
        Sub-directory of ``cache``. ``None`` derives it from all that can change the output:
        the processor's code and state, the Runner settings and the versions
        (``chunkwise.tag.cache_tag``). ``""`` is the notebook's flat layout. An explicit tag
        whose manifest (``tag.json``) differs from this processor's is refused (``force_tag``).
    salvage : bool, optional
        Keep the good files of a chunk that has a bad one, each cached on its own (default
        True). With ``False`` such a chunk is lost whole.
    progress : bool, optional
        Show one progress bar over the chunks (default True).
    in_flight : int, optional
        The most chunks open at once, which bounds memory: an open chunk holds its files'
        outputs (LZ4-compressed) until its last file is done. Default: four per worker (1 with
        an IterativeExecutor).
    cache_key : bytes, optional
        The key of a cache shared by a group (``chunkwise.cache.load_key``): every entry is
        authenticated with it before it is unpickled. Without one, the cache must be yours and
        writable by no one else; a root:// cache always needs one.
    force_tag : bool, optional
        Write into an explicit ``cache_tag`` that another processor or settings made.
    retries : int, optional
        How many times a file with a transient error (a refused or reset connection, a
        timeout) is tried again, with exponential backoff and jitter (default 3). Permanent
        errors (no such file or tree, a corrupt file) are not retried. These replace the
        executor's own ``retries``, which would try every error again at once.
    retry_delay : float, optional
        Seconds before the first retry; each next one waits twice as long (default 1.0).
    replicas : dict, optional
        ``{path prefix: alternative prefix or list of them}``, e.g.
        ``{"root://siteA//store/": ["root://siteB//store/"]}``: a file is tried at each
        alternative in turn before it is called bad; ``report.replicas`` says which served it.
    file_sums : callable, optional
        Per-file quantities to sum like the generator weights: called on the worker with each
        good file opened by uproot, it returns ``{name: number}`` (or None), e.g.
        ``lambda f: {"lumi_blocks": f["LuminosityBlocks"].num_entries}``.
        ``report.sums[dataset][name]`` totals exactly the files in the output. An error it
        raises counts as the file's.
    weights : bool, optional
        Read each file's generator weights from its ``Runs`` tree (default True; about 4 ms a
        file). ``False`` skips it (for data, say) and leaves ``report.sumw`` at ``None``.
    quiet : bool, optional
        ``True`` (default): coffea's retry warnings are dropped, installed packages' warnings
        are counted in ``report.notes``, and your code's are shown once each, under your
        filters. ``False``: every warning is shown, and each bad file's traceback is logged.

    Returns
    -------
    RunReport
        The merged output, a record per chunk, the bad files with their errors, and each
        dataset's completeness, events and sums of weights (``report.summary()``).

    Raises
    ------
    Exception
        Any exception outside the Runner's ``skipbadfiles`` set (a bug in the processor, say),
        with coffea's rule (the exception or its ``__cause__`` chain), from any executor, after
        every chunk finished so far has been saved: fix it and rerun to resume.
    chunkwise.errors.ProcessorUnavailableError
        Before any work, if the executor's workers cannot load the processor.
    chunkwise.errors.CacheError
        Before any work, if the cache cannot be created or written, or is not trusted. A write
        that fails during the run (a full disk) is not raised: ``report.cache_problem`` says
        what was saved.

    Notes
    -----
    The merged output equals that of one Runner call over the good files, up to the order in
    which floating-point sums were added (chunks merge in the order they finish). Counts match
    exactly.

    Examples
    --------
    >>> import chunkwise
    >>> from chunkwise.examples import METProcessor, make_demo_fileset
    >>> fileset = make_demo_fileset("demo_files")  # doctest: +SKIP
    >>> split = chunkwise.SplitOptions(files_per_chunk=2)
    >>> report = chunkwise.run(fileset, METProcessor(), split=split,
    ...                        cache="chunk_cache")  # doctest: +SKIP
    >>> report.completeness  # doctest: +SKIP
    {'DYJets': 0.8333333333333334, 'TTbar': 0.8}
    >>> hist = report.output["MET"]  # doctest: +SKIP
    """
    policy = _checked(file_sums, in_flight, retries, retry_delay, replicas)
    options = split_options(split, split_keywords, "run")
    chunks = make_chunks(fileset, options)
    check_extras(chunks, (alts for _, alts in policy.replicas))
    execution = plan(runner)
    report = RunReport(notes=list(execution.notes))
    if cache is not None:
        opened = (cache, cache_tag, cache_key, force_tag)
        report.cache = _opened(*opened, processor_instance, execution, file_sums, weights)
        _prepare(report.cache, report.notes)
    on_start = None
    if report.cache is not None and isinstance(fileset, Mapping):
        # Recorded once work begins, for ``status``; a list of chunks says nothing of a split.
        on_start = functools.partial(record_split, report.cache, options, fileset, report.notes)
    for chunk in chunks:
        add_counts(report.files_total, {d: len(p) for d, p in chunk.files.items()})
    settings = dict(salvage=salvage, in_flight=in_flight, quiet=quiet, progress=progress)
    engine = run_chunks(
        chunks, execution, processor_instance, report.cache, policy=policy,
        file_sums=file_sums, weights=weights, on_start=on_start,
        index=on_start is not None, **settings,
    )  # fmt: skip
    engine.fill(report)
    finish_report(
        report,
        maxchunks=execution.maxchunks,
        unsummed_entries=engine.unsummed_entries,
        foreign_entries=engine.foreign_entries,
    )
    if report.bad_files:  # only then did treating them as bad change the result
        report.notes += execution.bad_file_notes
    return report


def record_split(
    cache: ChunkCache, options: SplitOptions, fileset: Mapping[str, Any], notes: list[str]
) -> None:
    """Write the run's split options into its tag directory, for ``status``; a write that
    fails is a note (``status`` then needs the options given), not an error."""
    try:
        cache.write_split(options, fileset, count_files(fileset))
    except OSError as err:
        notes.append(
            f"the split options were not recorded in {cache.split_path} "
            f"({err.strerror or err}): give them to 'status'"
        )


def _prepare(cache: ChunkCache, notes: list[str]) -> None:
    """Before any work (a ``CacheError`` says what is wrong), once per cache; the temporary
    files that killed runs left, and that this removed, are noted."""
    removed = cache.prepare()
    if removed:
        notes.append(
            f"removed {removed} temporary files that killed runs left in {cache.directory}"
        )


def _opened(
    cache: str | Path | ChunkCache,
    tag: str | None,
    key: bytes | None,
    force: bool,
    processor_instance: Any,
    execution: Plan,
    file_sums: Callable[[Any], Mapping[str, float] | None] | None,
    weights: bool,
) -> ChunkCache:
    """The run's cache: the one given, opened already, or opened here under its tag."""
    if not isinstance(cache, ChunkCache):
        return _open_cache(
            cache,
            processor_instance,
            execution.runner,
            tag=tag,
            key=key,
            force_tag=force,
            file_sums=file_sums,
            weights=weights,
        )
    given = [name for name, v in (("cache_tag", tag), ("cache_key", key)) if v is not None]
    if given or force:
        raise ValueError(
            f"cache is an opened ChunkCache, which has its own tag and key: leave "
            f"{', '.join(given + ['force_tag'] * force)} unset"
        )
    check_opened(cache, processor_instance, execution.runner, file_sums, weights)
    return cache


def open_cache(
    root: str | Path,
    tag: str | None,
    key: bytes | None,
    force: bool,
    processor_instance: Any,
    runner: Any,
    file_sums: Callable[[Any], Mapping[str, float] | None] | None = None,
    weights: bool = True,
) -> ChunkCache:
    """Deprecated: ``chunkwise.open_cache(root, processor, runner, tag=..., key=...,
    force_tag=..., file_sums=..., weights=...)``, which this calls."""
    warnings.warn(
        "chunkwise.runner.open_cache(root, tag, key, force, processor, runner, ...) is "
        "deprecated: use chunkwise.open_cache(root, processor, runner, tag=tag, key=key, "
        "force_tag=force, ...)",
        DeprecationWarning,
        stacklevel=2,
    )
    return _open_cache(
        root,
        processor_instance,
        runner,
        tag=tag,
        key=key,
        force_tag=force,
        file_sums=file_sums,
        weights=weights,
    )
