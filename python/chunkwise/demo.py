"""``chunkwise demo``: the whole idea of chunkwise on real ROOT files, in under a minute.

1. Write a small NanoAOD-like fileset (``chunkwise.examples.make_demo_fileset``): two datasets,
   nine good files, one path that does not exist and one truncated file.
2. Run the MET processor of coffea's split_fileset notebook over it with ``chunkwise.run``,
   ``percentage=20``, a cache and salvage.
3. Print what happened to each chunk and how complete each dataset is, and draw ``met.png``.
4. Run again: everything loads from the cache and the histogram is the same.

Everything goes into one directory (``./chunkwise-demo`` by default): ``files/``, ``cache/``,
``fileset.json``, ``report.json`` and ``met.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, TextIO

from chunkwise.errors import DemoError
from chunkwise.table import format_table

__all__ = ["DemoError", "run_demo"]

_MARKER = ".chunkwise-demo"


def _prepare(directory: Path) -> None:
    """Make ``directory`` ready for a fresh demo run, refusing to touch foreign directories."""
    if directory.exists() and not directory.is_dir():
        raise DemoError(f"--dir {str(directory)!r} is a file; give a new or empty directory")
    if directory.is_dir() and any(directory.iterdir()) and not (directory / _MARKER).exists():
        raise DemoError(
            f"--dir {str(directory)!r} is not empty and was not made by chunkwise demo; "
            "give a new or empty directory"
        )
    parent = directory.resolve().parent
    if not parent.is_dir():
        raise DemoError(f"--dir: directory {str(parent)!r} does not exist; create it first")
    directory.mkdir(exist_ok=True)
    (directory / _MARKER).write_text("made by `chunkwise demo`; safe to delete\n")
    # Start from an empty cache, so that the first run really computes.
    shutil.rmtree(directory / "cache", ignore_errors=True)
    (directory / "met.png").unlink(missing_ok=True)
    (directory / "report.json").unlink(missing_ok=True)


def _short(exc: Any) -> str:
    if exc is None:
        return ""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:70]


def _chunk_table(report: Any, bad_files: dict[str, dict[str, str]]) -> str:
    rows = [("chunk", "hash", "files", "status", "seconds", "lost files")]
    for i, record in enumerate(report.chunks, 1):
        counts = " ".join(
            f"{dataset}:{len(data['files'])}" for dataset, data in sorted(record.fileset.items())
        )
        lost = [
            os.path.basename(path)
            for dataset, data in record.fileset.items()
            for path in data["files"]
            if path in bad_files.get(dataset, {})
        ]
        note = ", ".join(lost) or _short(record.exception)
        rows.append(
            (str(i), record.hash[:12], counts, record.status, f"{record.seconds:.2f}", note)
        )
    return format_table(rows[0], rows[1:], align="l" * len(rows[0]))


def _counts(report: Any) -> str:
    files, chunks = report.file_counts, report.chunk_counts
    return (
        f"files: {files['processed']} computed, {files['cached']} from cache, {files['bad']} bad; "
        f"chunks: {chunks['processed']} computed, {chunks['cached']} cached, "
        f"{chunks['salvaged']} salvaged, {chunks['failed']} failed"
    )


def run_demo(
    directory: str | os.PathLike[str] = "chunkwise-demo", out: TextIO | None = None
) -> int:
    """Run the chunkwise demo in ``directory`` and print what happens.

    Parameters
    ----------
    directory : str or os.PathLike, optional
        Where to write the ROOT files, the cache, ``fileset.json``, ``report.json`` and
        ``met.png``. It must be new, empty, or a directory an earlier demo made (its cache is
        then cleared first).
    out : text stream, optional
        Where to print the report; ``sys.stdout`` by default.

    Returns
    -------
    int
        0 when the demo behaved as designed (the second run computed nothing and gave the same
        histogram), 1 otherwise.

    Raises
    ------
    DemoError
        If ``directory`` cannot be used.

    Examples
    --------
    >>> from chunkwise.demo import run_demo
    >>> run_demo("/tmp/chunkwise-demo")  # doctest: +SKIP
    """
    out = out or sys.stdout
    directory = Path(directory)
    _prepare(directory)

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    with warnings.catch_warnings():
        # The synthetic files hold only MET and Muon, so NanoAODSchema warns about every other
        # collection's cross-references; that is expected here and would bury the report.
        warnings.filterwarnings("ignore", "Missing cross-reference", RuntimeWarning)
        return _demo(directory, say)


def _demo(directory: Path, say: Any) -> int:
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    from chunkwise.examples import METProcessor, make_demo_fileset
    from chunkwise.plot import plot_histograms
    from chunkwise.runner import run

    started = time.perf_counter()
    say(f"chunkwise demo in {directory}")
    say()
    say("1. Writing a NanoAOD-like fileset of real ROOT files")
    fileset = make_demo_fileset(directory / "files")
    with open(directory / "fileset.json", "w", encoding="utf-8") as f:
        json.dump(fileset, f, indent=1)
    for dataset, data in fileset.items():
        names = [os.path.basename(p) for p in data["files"]]
        broken = [n for n in names if "missing" in n or "truncated" in n]
        say(f"   {dataset}: {len(names)} files, broken on purpose: {', '.join(broken)}")

    runner = processor.Runner(
        executor=processor.IterativeExecutor(status=False),
        schema=NanoAODSchema,
        skipbadfiles=True,
        use_result_type=True,
    )
    cache = directory / "cache"
    options: dict[str, Any] = dict(percentage=20, cache=str(cache), salvage=True)
    progress = sys.stderr.isatty()

    say()
    say("2. First run: chunkwise.run(fileset, METProcessor(), runner, percentage=20,")
    say("   cache=..., salvage=True). Every file is its own task; a chunk with a bad")
    say("   file keeps its good files, each cached on its own (salvage).")
    t0 = time.perf_counter()
    first = run(fileset, METProcessor(), runner, progress=progress, **options)
    t_first = time.perf_counter() - t0
    say()
    say(_chunk_table(first, first.bad_files))
    say()
    for i, record in enumerate(first.chunks, 1):
        if record.status == "salvaged":
            ok = sum(part.status != "failed" for part in record.parts)
            say(
                f"   Chunk {i} had a bad file, so it was salvaged: its {ok} good files of "
                f"{len(record.parts)} were kept, each cached on its own, instead of none."
            )
    say(f"   {_counts(first)}, in {t_first:.1f} s")
    say()
    say("3. What made it into the result")
    say(first.summary())
    say()
    say("   The sum of generator weights (each file's Runs tree) covers exactly the files in")
    say("   the result, so an MC normalization xsec * lumi / sumw is honest about what is missing:")
    for dataset in sorted(first.sumw):
        sumw, gen = first.sumw[dataset], first.gen_events[dataset]
        if sumw is not None:
            say(
                f"   {dataset}: sumw = {sumw:.6g} over {gen:,} generated events "
                f"({first.completeness[dataset]:.1%} of its files)"
            )
    report_json = directory / "report.json"
    with open(report_json, "w", encoding="utf-8") as f:
        json.dump(first.to_dict(), f, indent=1)
    say(f"   wrote {report_json} (the same as chunkwise run --report)")
    png = directory / "met.png"
    if first.output is not None:
        plot_histograms(
            first.output,
            png,
            completeness=first.completeness,
            text="Simulation Private Work",
        )
        say(f"   wrote {png}")

    say()
    say("4. Second run, same call: everything that succeeded loads from the cache")
    t0 = time.perf_counter()
    second = run(fileset, METProcessor(), runner, progress=progress, **options)
    t_second = time.perf_counter() - t0
    say()
    say(_chunk_table(second, second.bad_files))
    say()
    same = (
        first.output is not None
        and second.output is not None
        and first.output["MET"] == second.output["MET"]
        and dict(first.output["cutflow"]) == dict(second.output["cutflow"])
    )
    say(
        f"   {_counts(second)}, in {t_second:.1f} s; "
        f"same histogram as the first run: {'yes' if same else 'NO'}"
    )
    say()
    say(f"Done in {time.perf_counter() - started:.1f} s. Try the command line on these files:")
    fs = directory / "fileset.json"
    say(f"   chunkwise status {fs} --percentage 20 --cache {cache}")
    say(f"   chunkwise split {fs} --percentage 20 --out {directory / 'chunks'}")
    ok = same and second.file_counts["processed"] == 0 and second.sumw == first.sumw
    if not ok:
        say("The second run did not behave as expected: please report this as a bug.")
    return 0 if ok else 1
