"""What ``chunkwise.run`` returns: a ``ChunkRecord`` per chunk, and the ``RunReport`` that adds
them up per dataset (files, events, completeness, sums of weights) and says what to know."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from chunkwise.cache import ChunkCache
from chunkwise.display import bad_files_html, bar, page, table
from chunkwise.extras import module_version
from chunkwise.outcomes import error_text
from chunkwise.sums import GEN_WEIGHTS, WEIGHT_GAPS
from chunkwise.table import format_table

__all__ = [
    "REPORT_SCHEMA",
    "ChunkRecord",
    "RunReport",
    "add_bad",
    "add_counts",
    "add_file_sums",
    "add_sums",
    "finish_report",
    "tally",
]

ChunkStatus = Literal["processed", "cached", "failed", "salvaged"]


@dataclass
class ChunkRecord:
    """What happened to one chunk (or, inside ``parts``, to one file of a salvaged chunk).

    Attributes
    ----------
    hash : str
        ``chunkwise.hash_fileset(fileset)``, the cache key.
    fileset : dict
        The chunk itself.
    status : {"processed", "cached", "failed", "salvaged"}
        ``processed``: computed in this call; ``cached``: loaded from the cache; ``failed``:
        none of its output is in the result; ``salvaged``: the chunk had a bad file, and its
        files were kept one by one, each cached on its own (see ``parts``).
    exception : BaseException or None
        Why the chunk failed (for ``failed`` and ``salvaged``).
    seconds : float
        Wall time spent on this chunk, parts included.
    events : dict
        ``{dataset: events}`` in the output from this chunk.
    bad_files : dict
        ``{dataset: {path: "error text"}}``: this chunk's files that are not in the output.
    parts : list of ChunkRecord
        For a salvaged chunk, one record per file.
    sums : dict
        ``{dataset: {name: [total, files]}}``: the per-file quantities (``sumw``, ``sumw2``,
        ``gen_events`` and the ``file_sums`` hook's) summed over this chunk's files in the
        output, with how many of those files had each.
    """

    hash: str
    fileset: dict[str, Any]
    status: ChunkStatus
    exception: BaseException | None = None
    seconds: float = 0.0
    events: dict[str, int] = field(default_factory=dict)
    bad_files: dict[str, dict[str, str]] = field(default_factory=dict)
    parts: list[ChunkRecord] = field(default_factory=list)
    sums: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    @property
    def n_files(self) -> int:
        """How many files the chunk has."""
        return sum(len(data["files"]) for data in self.fileset.values())


#: The version of ``RunReport.to_dict``'s layout; it changes only when a key changes meaning or
#: goes away (new keys may be added within a version).
REPORT_SCHEMA = "chunkwise-report/1"


@dataclass
class RunReport:
    """The result of ``chunkwise.run``.

    Attributes
    ----------
    output : object
        The merged accumulator of everything that succeeded (``None`` if nothing did).
    chunks : list of ChunkRecord
        One record per chunk, in the order they were run.
    bad_files : dict
        ``{dataset: {path: "error text"}}`` for every file missing from ``output``.
    completeness : dict
        ``{dataset: fraction of its files in output}``; a file with 0 events counts as in.
    events : dict
        ``{dataset: events processed}`` (``maxchunks`` limits these).
    sumw, sumw2 : dict
        ``{dataset: sum of generator weights (of their squares)}`` over exactly the files in
        ``output``, from each file's NanoAOD ``Runs`` tree (``genEventSumw``/``genEventSumw2``,
        or the older ``genEventSumw_`` names), all generated events before any selection:
        the denominator of an MC normalization ``xsec * lumi / sumw``. ``None`` for a dataset
        when a file in the output has no such tree (data) or no file is in the output.
    gen_events : dict
        ``{dataset: generated events}`` (``genEventCount``), the same way.
    sums : dict
        ``{dataset: {name: total or None}}``: every per-file quantity, summed the same way:
        ``sumw``, ``sumw2``, ``gen_events`` and what the ``file_sums`` hook returned. A total
        is ``None`` when a file in the output lacks it.
    files_total : dict
        ``{dataset: number of files}`` over all chunks.
    chunk_counts : dict
        Chunks by what became of them: ``processed``, ``cached``, ``salvaged`` (a bad file, the
        good ones kept) and ``failed`` (nothing of it in the output).
    file_counts : dict
        Files by what became of them: ``processed`` (computed in this call), ``cached`` and
        ``bad`` (not in the output).
    n_processed, n_cached, n_failed : int
        Cache entries (a whole chunk, or one file of a salvaged chunk) computed successfully in
        this call, loaded from the cache, and failed. ``chunk_counts`` and ``file_counts``
        count in one unit each.
    cache : ChunkCache or None
        Where the entries are, if a cache was used.
    notes : list of str
        Things worth knowing, e.g. that ``maxchunks`` applies to each file.
    cache_problem : str or None
        Why the cache could not be written during the run (a full disk, say), with how many
        entries were saved; ``None`` when every write succeeded.
    retries : dict
        ``{dataset: {path: retries}}`` for the files tried again in this call.
    replicas : dict
        ``{dataset: {path: replica path}}`` for the files that a replica served.
    """

    output: Any = None
    chunks: list[ChunkRecord] = field(default_factory=list)
    bad_files: dict[str, dict[str, str]] = field(default_factory=dict)
    completeness: dict[str, float] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    sumw: dict[str, float | None] = field(default_factory=dict)
    sumw2: dict[str, float | None] = field(default_factory=dict)
    gen_events: dict[str, int | None] = field(default_factory=dict)
    sums: dict[str, dict[str, float | None]] = field(default_factory=dict)
    n_processed: int = 0
    n_cached: int = 0
    n_failed: int = 0
    files_total: dict[str, int] = field(default_factory=dict)
    chunk_counts: dict[str, int] = field(default_factory=dict)
    file_counts: dict[str, int] = field(default_factory=dict)
    cache: ChunkCache | None = None
    notes: list[str] = field(default_factory=list)
    cache_problem: str | None = None
    retries: dict[str, dict[str, int]] = field(default_factory=dict)
    replicas: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True only when every file of every dataset is in ``output``."""
        return self.n_failed == 0 and all(f == 1.0 for f in self.completeness.values())

    def reaches(self, min_completeness: float) -> bool:
        """Whether every dataset has at least this fraction of its files in ``output``.

        Parameters
        ----------
        min_completeness : float
            A fraction between 0 and 1; ``1.0`` is the same as ``complete``.
        """
        if min_completeness >= 1.0:
            return self.complete
        return all(f >= min_completeness for f in self.completeness.values())

    def summary(self) -> str:
        """A per-dataset table: files ok, bad and total, events, the fraction of files in and,
        when some dataset has them, the sum of generator weights.

        Returns
        -------
        str
            The table, followed by chunk and file counts, the bad files and any notes.
        """
        header: tuple[str, ...] = ("dataset", "files ok", "bad", "total", "events", "fraction")
        with_sumw = any(v is not None for v in self.sumw.values())
        if with_sumw:
            header += ("sumw",)
        rows = []
        for dataset in sorted(self.files_total):
            total = self.files_total[dataset]
            bad = len(self.bad_files.get(dataset, {}))
            row = (
                dataset,
                str(total - bad),
                str(bad),
                str(total),
                f"{self.events.get(dataset, 0):,}",
                f"{self.completeness.get(dataset, 0.0):.1%}",
            )
            if with_sumw:
                sumw = self.sumw.get(dataset)
                row += ("-" if sumw is None else f"{sumw:.6g}",)
            rows.append(row)
        lines = [format_table(header, rows), ""]
        c, f = self.chunk_counts, self.file_counts
        lines.append(
            f"chunks: {len(self.chunks)} ({c.get('processed', 0)} processed, "
            f"{c.get('cached', 0)} cached, {c.get('salvaged', 0)} salvaged, "
            f"{c.get('failed', 0)} failed)"
        )
        lines.append(
            f"files: {sum(self.files_total.values())} ({f.get('processed', 0)} processed, "
            f"{f.get('cached', 0)} cached, {f.get('bad', 0)} bad); "
            + ("complete" if self.complete else "INCOMPLETE: see bad_files")
        )
        for dataset in sorted(self.bad_files):
            for path, error in sorted(self.bad_files[dataset].items()):
                lines.append(f"  bad: {dataset}: {path}: {error}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the output, as plain JSON-ready data (``chunkwise run --report``).

        Returns
        -------
        dict
            ``schema`` (``"chunkwise-report/1"``), ``complete``, ``datasets`` (per dataset:
            ``files_total``, ``files_ok``, ``files_bad``, ``events``, ``completeness``,
            ``sumw``, ``sumw2``, ``gen_events``, ``sums`` and ``bad_files`` as
            ``{path: error}``), ``counts`` (``chunks`` and ``files`` by status), ``chunks``
            (each one's ``hash``, ``status``, ``files``, ``events``, ``error`` and, for a
            salvaged chunk, its ``parts``), ``cache`` (``directory`` and ``tag``, or None),
            ``cache_problem``, ``retries``, ``replicas``, ``notes`` and ``versions``.

        Examples
        --------
        >>> import json
        >>> json.dumps(report.to_dict(), indent=1)  # doctest: +SKIP
        """
        datasets = {}
        for dataset in sorted(self.files_total):
            total = self.files_total[dataset]
            bad = self.bad_files.get(dataset, {})
            datasets[dataset] = {
                "files_total": total,
                "files_ok": total - len(bad),
                "files_bad": len(bad),
                "events": self.events.get(dataset, 0),
                "completeness": self.completeness.get(dataset, 0.0),
                "sumw": self.sumw.get(dataset),
                "sumw2": self.sumw2.get(dataset),
                "gen_events": self.gen_events.get(dataset),
                "sums": dict(self.sums.get(dataset, {})),
                "bad_files": dict(sorted(bad.items())),
            }

        def chunk(record: ChunkRecord) -> dict[str, Any]:
            out: dict[str, Any] = {
                "hash": record.hash,
                "status": record.status,
                "files": {d: len(data["files"]) for d, data in record.fileset.items()},
                "events": dict(record.events),
                "seconds": round(record.seconds, 3),
                "error": None if record.exception is None else error_text(record.exception),
            }
            if record.parts:
                out["parts"] = [
                    {
                        "hash": part.hash,
                        "dataset": dataset,
                        "path": path,
                        "status": part.status,
                        "error": part.bad_files.get(dataset, {}).get(path),
                    }
                    for part in record.parts
                    for dataset, data in part.fileset.items()
                    for path in data["files"]
                ]
            return out

        return {
            "schema": REPORT_SCHEMA,
            "complete": self.complete,
            "datasets": datasets,
            "counts": {
                "chunks": {"total": len(self.chunks), **self.chunk_counts},
                "files": {"total": sum(self.files_total.values()), **self.file_counts},
            },
            "chunks": [chunk(record) for record in self.chunks],
            "cache": None
            if self.cache is None
            else {"directory": str(self.cache.directory), "tag": self.cache.tag},
            "cache_problem": self.cache_problem,
            "retries": self.retries,
            "replicas": self.replicas,
            "notes": list(self.notes),
            "versions": {name: module_version(name) for name in ("chunkwise", "coffea")},
        }

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        n_bad = sum(len(files) for files in self.bad_files.values())
        n_files = sum(self.files_total.values())
        state = "complete" if self.complete else "INCOMPLETE"
        return (
            f"<RunReport {state}: {len(self.files_total)} datasets, {n_files - n_bad}/{n_files} "
            f"files, {sum(self.events.values()):,} events, {len(self.chunks)} chunks>"
        )

    def _repr_html_(self) -> str:
        """The report in Jupyter: per dataset, files ok and bad, events, completeness and Σw;
        the bad files with their errors; the notes; and what to do next."""
        with_sumw = any(v is not None for v in self.sumw.values())
        header = ["dataset", "files ok", "bad", "total", "events", "completeness"]
        header += ["Σw"] if with_sumw else []
        rows = []
        for dataset in sorted(self.files_total):
            total = self.files_total[dataset]
            bad = len(self.bad_files.get(dataset, {}))
            row = [dataset, str(total - bad), str(bad), str(total)]
            row += [f"{self.events.get(dataset, 0):,}", bar(self.completeness.get(dataset, 0.0))]
            if with_sumw:
                sumw = self.sumw.get(dataset)
                row.append("-" if sumw is None else f"{sumw:.6g}")
            rows.append(row)
        c, f = self.chunk_counts, self.file_counts
        counts = (
            f"<p>chunks: {len(self.chunks)} ({c.get('processed', 0)} processed, "
            f"{c.get('cached', 0)} cached, {c.get('salvaged', 0)} salvaged, "
            f"{c.get('failed', 0)} failed); files: {f.get('processed', 0)} processed, "
            f"{f.get('cached', 0)} cached, {f.get('bad', 0)} bad</p>"
        )
        if self.complete:
            advice = "every file is in report.output; a rerun with this cache loads it all."
        else:
            advice = (
                "fix or replace the bad files and rerun with the same cache: only they run "
                "again. chunkwise.status(...).remaining_fileset(fileset) lists what is left."
            )
        title = "chunkwise.run: " + ("complete" if self.complete else "INCOMPLETE")
        parts = [table(header, rows, raw=[5]), counts, bad_files_html("Bad files", self.bad_files)]
        return page(title, self.complete, parts, self.notes, advice)


def add_counts(into: dict[str, int], counts: Mapping[str, int]) -> None:
    for key, value in counts.items():
        into[key] = into.get(key, 0) + int(value)


def add_bad(into: dict[str, dict[str, str]], bad: Mapping[str, Mapping[str, str]]) -> None:
    for dataset, files in bad.items():
        into.setdefault(dataset, {}).update(files)


def add_file_sums(
    into: dict[str, dict[str, list[float]]], dataset: str, sums: Mapping[str, float]
) -> None:
    """Add one file's quantities: each name's total, and how many files had it."""
    totals = into.setdefault(dataset, {})
    for name, value in sums.items():
        entry = totals.setdefault(name, [0, 0])
        entry[0] += value
        entry[1] += 1


def add_sums(
    into: dict[str, dict[str, list[float]]], sums: Mapping[str, Mapping[str, Sequence[float]]]
) -> None:
    """Add the ``ChunkRecord.sums`` of a chunk."""
    for dataset, totals in sums.items():
        mine = into.setdefault(dataset, {})
        for name, (value, files) in totals.items():
            entry = mine.setdefault(name, [0, 0])
            entry[0] += value
            entry[1] += files


def tally(
    report: RunReport,
) -> tuple[dict[str, tuple[str, int, int]], dict[str, dict[str, int]]]:
    """Fill in a report's counts, bad files, completeness and sums from its chunk records.

    Returns ``{dataset: (name, files with it, files in the output)}`` for the datasets whose
    ``sumw`` (or, failing that, another total) only some of the files in the output have, and
    ``{dataset: {gap: files}}``: how many of its files in the output gave no generator weights,
    by why (``chunkwise.sums.WEIGHT_GAPS``).
    """
    gaps: dict[str, dict[str, int]] = {}
    partial: dict[str, tuple[str, int, int]] = {}
    report.chunk_counts = dict.fromkeys(("processed", "cached", "salvaged", "failed"), 0)
    report.file_counts = dict.fromkeys(("processed", "cached", "bad"), 0)
    sums: dict[str, dict[str, list[float]]] = {}
    for record in report.chunks:
        report.chunk_counts[record.status] += 1
        for unit in record.parts or [record]:
            file_status = "bad" if unit.status == "failed" else unit.status
            report.file_counts[file_status] += unit.n_files
            if unit.status == "processed":
                report.n_processed += 1
            elif unit.status == "cached":
                report.n_cached += 1
            elif unit.status == "failed":
                report.n_failed += 1
        add_counts(report.events, record.events)
        add_sums(sums, record.sums)
        if record.parts or record.status == "failed":
            add_bad(report.bad_files, record.bad_files)
    for dataset, totals in sums.items():
        for name in [name for name in totals if name in WEIGHT_GAPS]:
            gaps.setdefault(dataset, {})[name] = int(totals.pop(name)[1])
    for dataset, n_files in report.files_total.items():
        report.events.setdefault(dataset, 0)
        n_ok = n_files - len(report.bad_files.get(dataset, {}))
        report.completeness[dataset] = n_ok / n_files if n_files else 1.0
        # A total counts only if every file in the output gave it: a sum over some of the
        # files would normalize wrongly, silently.
        report.sums[dataset] = {
            name: (int(total) if name == "gen_events" else total)
            if files == n_ok and n_ok > 0
            else None
            for name, (total, files) in sorted(sums.get(dataset, {}).items())
        }
        for name, (_, files) in sorted(sums.get(dataset, {}).items(), key=lambda i: i[0] != "sumw"):
            if 0 < files < n_ok:
                partial[dataset] = (name, int(files), n_ok)
                break
        report.sumw[dataset] = report.sums[dataset].get("sumw")
        report.sumw2[dataset] = report.sums[dataset].get("sumw2")
        gen = report.sums[dataset].get("gen_events")
        report.gen_events[dataset] = None if gen is None else int(gen)
    return partial, gaps


def finish_report(
    report: RunReport,
    *,
    maxchunks: int | None,
    unsummed_entries: int,
    foreign_entries: int,
) -> None:
    """Fill in ``report``'s counts from its chunk records, and the notes on what they mean.

    Parameters
    ----------
    report : RunReport
        With ``chunks`` and ``files_total`` set.
    maxchunks : int or None
        The Runner's ``maxchunks``: with it, only part of each file ran, so no sum of
        weights (which covers a whole file) is given.
    unsummed_entries, foreign_entries : int
        Cache entries loaded that an older chunkwise wrote without sums of weights, and
        entries chunkwise did not write at all (plain ``coffea.util.save``).
    """
    partial, gaps = tally(report)
    if maxchunks is not None and any(v is not None for v in report.sumw.values()):
        for dataset in report.sums:
            for name in GEN_WEIGHTS:
                if name in report.sums[dataset]:
                    report.sums[dataset][name] = None
            report.sumw[dataset] = report.sumw2[dataset] = report.gen_events[dataset] = None
        report.notes.append(
            "sumw, sumw2 and gen_events are None: with maxchunks only part of each file is "
            "processed, while a Runs tree sums the whole file"
        )
    for dataset, (name, with_it, n_ok) in sorted(partial.items()):
        report.notes.append(
            f"{dataset}: {with_it} of its {n_ok} files in the output have {name}, so its {name} "
            "is None (files without a Runs tree mixed with files with one, or cache entries "
            "written with weights=False: rerun them with a new cache tag)"
        )
    for dataset in sorted(report.sumw):
        n_ok = report.files_total[dataset] - len(report.bad_files.get(dataset, {}))
        if report.sumw[dataset] is not None or n_ok == 0 or maxchunks is not None:
            continue
        why = [f"{WEIGHT_GAPS[g]} in {n} of {n_ok} files" for g, n in gaps.get(dataset, {}).items()]
        if why:  # (with weights=False, --no-weights, none was asked for: no note)
            report.notes.append(f"{dataset}: no sumw: {'; '.join(why)}")
    if unsummed_entries:
        report.notes.append(
            f"{unsummed_entries} cache entries were written by an older chunkwise that "
            "did not read sums of weights: sumw is None for their datasets; rerun with a new "
            "cache tag to have them"
        )
    if foreign_entries:
        report.notes.append(
            f"{foreign_entries} cache entries were not written by chunkwise (plain "
            "coffea.util.save?): their events are not counted"
        )
