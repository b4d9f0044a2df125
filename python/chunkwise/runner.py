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

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from chunkwise._coffea import Plan, RetryPolicy, default_runner, plan
from chunkwise.cache import ChunkCache
from chunkwise.chunks import SPLIT_FIELDS, Chunk, SplitOptions, make_chunks, split_options
from chunkwise.engine import run_chunks
from chunkwise.errors import ChunkFailure
from chunkwise.extras import check_paths
from chunkwise.report import ChunkRecord, RunReport, add_counts, finish_report
from chunkwise.tag import open_cache

__all__ = ["ChunkFailure", "ChunkRecord", "RunReport", "default_runner", "run"]


def _check_extras(chunks: Sequence[Chunk], policy: RetryPolicy) -> None:
    """Before anything runs: a root:// path (or replica) needs ``chunkwise[xrootd]``."""
    check_paths(p for chunk in chunks for files in chunk.files.values() for p in files)
    check_paths(a for _, alts in policy.replicas for a in alts)


def _retry_policy(
    retries: int, delay: float, replicas: Mapping[str, str | Sequence[str]] | None
) -> RetryPolicy:
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
    strategy: str | None = None,
    datasets: Iterable[str] | Callable[..., Any] | tuple[Any, ...] | None = None,
    percentage: int | None = None,
    files_per_chunk: int | None = None,
    treename: str | None = None,
    events_per_chunk: int | None = None,
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
        The processor. It is pickled with cloudpickle, and its class's module is shipped by
        value when it is your own code (not an installed package), so workers that cannot
        import it still run it. Each file gets a fresh copy of it, as each of coffea's work
        items does; ``postprocess`` is called on each file's output.
    runner : coffea.processor.Runner, optional
        Any Runner with an ``IterativeExecutor`` (files run in this process, one at a time), a
        ``FuturesExecutor`` (one process pool of ``workers`` processes serves the whole run, or
        the ``pool`` instance you gave) or a ``DaskExecutor`` (its client). Its settings
        (schema, chunksize, skipbadfiles, retries, xrootdtimeout, ...) apply to every file. The
        Runner passed in is never changed. ``None`` means ``default_runner()``:
        IterativeExecutor and NanoAODSchema.
    split : SplitOptions, optional
        How to split a fileset dict, e.g. ``SplitOptions(files_per_chunk=2)``: the options of
        ``chunkwise.split_fileset`` (``events_per_chunk`` packs the files of a preprocessed
        fileset by ``num_entries``). The options as keywords of their own (``files_per_chunk=2``)
        still work, with a ``DeprecationWarning``.
    cache : str, os.PathLike or ChunkCache, optional
        Cache directory (created user-only), or a directory on an XRootD server given as
        ``"root://host//absolute/dir"`` (for sites without a shared file system; it needs
        ``cache_key``, see ``chunkwise.cache``). ``None``: no cache, nothing is written. A
        cache opened with ``chunkwise.open_cache`` is used as it is (then ``cache_tag``,
        ``cache_key`` and ``force_tag`` are its own): nothing is fingerprinted again.
    cache_tag : str, optional
        Sub-directory of ``cache``. ``None`` derives it from everything that can change the
        output: the processor's code and state, the Runner settings that matter and the
        versions (``chunkwise.tag.cache_tag``). ``""`` uses ``cache`` itself, the flat layout
        of coffea's split_fileset notebook. Each tag directory keeps a manifest of what went
        into it (``tag.json``); an explicit tag whose manifest differs from this processor's
        is refused (``force_tag``).
    salvage : bool, optional
        Keep the good files of a chunk that has a bad one, each cached on its own (default
        True). With ``False`` such a chunk is lost whole.
    progress : bool, optional
        Show one progress bar over the chunks (default True).
    in_flight : int, optional
        The most chunks open at once. An open chunk holds its finished files' outputs (LZ4-
        compressed) until its last file is done, so this bounds memory. The default, four
        times the number of workers, keeps every worker busy; at most four files per worker
        (plus four) are submitted at a time. With an IterativeExecutor it is 1.
    cache_key : bytes, optional
        The key of a cache shared by a group (read it with ``chunkwise.cache.load_key``):
        entries are authenticated with it before anything is unpickled. Without a key, the
        cache's directories must be yours and writable by no one else; a root:// cache always
        needs one.
    force_tag : bool, optional
        Write into an explicit ``cache_tag`` even though its manifest says another processor
        or other settings made it (default False: refused, since their outputs would mix).
    retries : int, optional
        How many times a file whose error is transient (a refused or reset connection, a
        timeout, a server-side error) is tried again, with exponential backoff from
        ``retry_delay`` seconds and jitter (default 3, from 1 s). Permanent errors (no such
        file, permission denied, no such tree, a corrupt file) are not retried. They replace
        the executor's own ``retries``, which would try every error again at once.
    retry_delay : float, optional
        Seconds before the first retry; each next one waits twice as long (default 1.0).
    replicas : dict, optional
        ``{path prefix: alternative prefix or list of them}``: a file whose path starts with a
        prefix is tried at each alternative in turn (each with the retries) before it is
        called bad, e.g. ``{"root://siteA//store/": ["root://siteB//store/"]}``. Cache keys,
        ``bad_files`` and completeness stay on the path written in the fileset;
        ``report.replicas`` says which replica served a file.
    file_sums : callable, optional
        Per-file quantities to sum like the generator weights: called on the worker, once
        per file that succeeds, with the file opened by uproot (a ``ReadOnlyDirectory``), it
        returns ``{name: number}`` (or None). ``report.sums[dataset][name]`` is the total over
        exactly the files in the output, and the values are cached with each entry. An error
        it raises counts as the file's (a bad file if in ``skipbadfiles``, else a bug). For
        example ``lambda f: {"lumi_blocks": f["LuminosityBlocks"].num_entries}``. ROOT files
        only. The generator weights (``report.sumw``) are read whether or not it is given.
    weights : bool, optional
        Read each file's generator weights from its ``Runs`` tree (default True). uproot takes
        about 4 ms a file to read a ``Runs`` tree, nothing next to processing a NanoAOD file
        but noticeable on many tiny files; ``False`` skips it (for data, say) and leaves
        ``report.sumw`` at ``None``.
    quiet : bool, optional
        ``True`` (default): coffea's progress bars are off in every process, coffea's
        "Performed attempt" retry warnings are dropped (the report has each bad file's final
        error), and each distinct other warning raised while processing is shown once, in
        this process, under your warning filters. ``False``: every warning is shown, and each
        bad file's traceback is logged on the ``"chunkwise"`` logger.

    Returns
    -------
    RunReport
        The merged output, a record per chunk, the bad files with their errors, and the
        completeness and events per dataset. ``print(report.summary())`` shows a table.

    Raises
    ------
    Exception
        Any exception outside the Runner's ``skipbadfiles`` set (a bug in the processor, say),
        with coffea's rule (the exception or its ``__cause__`` chain), from any executor, after
        every chunk finished so far has been saved: fix it and rerun to resume.
    chunkwise._coffea.ProcessorUnavailableError
        Before any work, if the executor's workers cannot load the processor.
    chunkwise.cache.CacheError
        Before any work, if the cache cannot be created or written, or is not trusted (owned
        by another user, or writable by group or others, without a key). A write that fails
        during the run (a full disk) is not raised: ``report.cache_problem`` says what was
        saved, and the result is returned.

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
    >>> report = chunkwise.run(fileset, METProcessor(), files_per_chunk=2,
    ...                        cache="chunk_cache")  # doctest: +SKIP
    >>> report.completeness  # doctest: +SKIP
    {'DYJets': 0.8333333333333334, 'TTbar': 0.8}
    >>> hist = report.output["MET"]  # doctest: +SKIP
    """
    if file_sums is not None and not callable(file_sums):
        raise TypeError(
            f"file_sums must be a function of an uproot file, got {type(file_sums).__name__}"
        )
    if in_flight is not None and (not isinstance(in_flight, int) or in_flight < 1):
        raise ValueError(f"in_flight must be a whole number of at least 1, got {in_flight!r}")
    policy = _retry_policy(retries, retry_delay, replicas)
    # The split options given one keyword each (deprecated): exactly the parameters so named.
    legacy = {name: value for name, value in locals().items() if name in SPLIT_FIELDS}
    chunks = make_chunks(fileset, split_options(split, legacy, "chunkwise.run"))
    _check_extras(chunks, policy)
    execution = plan(runner)
    report = RunReport(notes=list(execution.notes))
    if cache is not None:
        report.cache = _opened(
            cache,
            cache_tag,
            cache_key,
            force_tag,
            processor_instance,
            execution,
            file_sums,
            weights,
        )
        removed = report.cache.prepare()  # before any work: CacheError says what is wrong
        if removed:
            report.notes.append(
                f"removed {removed} temporary files that killed runs left in "
                f"{report.cache.directory}"
            )
    for chunk in chunks:
        add_counts(report.files_total, {d: len(p) for d, p in chunk.files.items()})
    engine = run_chunks(
        chunks,
        execution,
        processor_instance,
        report.cache,
        salvage=salvage,
        in_flight=in_flight,
        quiet=quiet,
        progress=progress,
        policy=policy,
        file_sums=file_sums,
        weights=weights,
    )
    report.output = engine.total
    report.retries = engine.retries
    report.replicas = engine.replicas
    report.cache_problem = engine.writer.problem()
    if report.cache_problem is not None:
        report.notes.append(report.cache_problem)
    report.chunks = [engine.records[i] for i in sorted(engine.records)]
    finish_report(
        report,
        maxchunks=execution.maxchunks,
        unsummed_entries=engine.unsummed_entries,
        foreign_entries=engine.foreign_entries,
    )
    return report


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
        return open_cache(
            cache, tag, key, force, processor_instance, execution.runner, file_sums, weights
        )
    given = [name for name, v in (("cache_tag", tag), ("cache_key", key)) if v is not None]
    if given or force:
        raise ValueError(
            f"cache is an opened ChunkCache, which has its own tag and key: leave "
            f"{', '.join(given + ['force_tag'] * force)} unset"
        )
    return cache
