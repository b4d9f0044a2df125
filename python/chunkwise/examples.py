"""A small processor and synthetic NanoAOD-like files to try ``chunkwise.run`` without a grid.

``METProcessor`` is the processor of coffea's *split_fileset* notebook, made importable (and so
picklable by reference) and safe to call many times: it builds a fresh accumulator in every
``process`` call instead of filling one kept on ``self``.

``write_nanoaod_like`` writes a deterministic ROOT file with the branches that
``coffea.nanoevents.NanoAODSchema`` needs for ``events.MET`` and ``events.Muon``, and
``make_demo_fileset`` lays out a two-dataset fileset with one missing path and one truncated file,
the failures that ``chunkwise.run`` is built to survive.

This module imports coffea, hist, numpy and uproot; ``import chunkwise`` does not import it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import awkward as ak
import hist
import numpy as np
import uproot
from coffea import processor

__all__ = [
    "DEMO_DATASETS",
    "METProcessor",
    "make_demo_fileset",
    "write_nanoaod_like",
]

#: The demo's datasets: name -> (number of good files, events per file).
DEMO_DATASETS: dict[str, tuple[int, int]] = {
    "DYJets": (5, 2000),
    "TTbar": (4, 1500),
}


class METProcessor(processor.ProcessorABC):
    """Fill a MET histogram per dataset and count events and chunks.

    The output is a ``dict`` with

    - ``"MET"``: a ``hist.Hist`` with a growing ``dataset`` category and 50 bins of MET in
      [0, 100) GeV;
    - ``"cutflow"``: a ``defaultdict_accumulator(int)`` with ``"all events"`` and
      ``"number of chunks"`` (the number of row chunks that coffea made, which depends on the
      Runner's ``chunksize``).

    Examples
    --------
    >>> from coffea import processor
    >>> from chunkwise.examples import METProcessor
    >>> runner = processor.Runner(processor.IterativeExecutor())  # doctest: +SKIP
    >>> out = runner(fileset, processor_instance=METProcessor())  # doctest: +SKIP
    >>> out["cutflow"]["all events"]  # doctest: +SKIP
    """

    def process(self, events: Any) -> dict[str, Any]:
        dataset = events.metadata["dataset"]
        met = events.MET.pt
        out = {
            "MET": hist.Hist(
                hist.axis.StrCategory([], name="dataset", label="", growth=True),
                hist.axis.Regular(50, 0, 100, name="MET", label="MET [GeV]"),
            ),
            "cutflow": processor.defaultdict_accumulator(int),
        }
        out["cutflow"]["all events"] += len(met)
        out["cutflow"]["number of chunks"] += 1
        out["MET"].fill(dataset=dataset, MET=met)
        return out

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


def write_nanoaod_like(
    path: str | os.PathLike[str], n_events: int, seed: int, *, treename: str = "Events"
) -> Path:
    """Write a small NanoAOD-like ROOT file, the same bytes of data for the same arguments.

    The tree has ``run``, ``luminosityBlock``, ``event``, ``MET_pt``, ``MET_phi`` and a jagged
    muon collection ``Muon_pt``, ``Muon_eta``, ``Muon_phi`` counted by ``nMuon``, which is what
    ``coffea.nanoevents.NanoAODSchema`` needs to build ``events.MET`` and ``events.Muon``.

    Parameters
    ----------
    path : str or os.PathLike
        Where to write the file; its directory must exist. An existing file is overwritten.
    n_events : int
        Number of events (0 writes an empty tree with the same branches).
    seed : int
        Seed of the random numbers; the same seed gives the same values.
    treename : str, optional
        Name of the tree, ``"Events"`` by default.

    Returns
    -------
    pathlib.Path
        The path written.

    Examples
    --------
    >>> from chunkwise.examples import write_nanoaod_like
    >>> write_nanoaod_like(tmp_path / "a.root", n_events=1000, seed=1)  # doctest: +SKIP
    """
    if n_events < 0:
        raise ValueError(f"n_events must be >= 0, got {n_events}")
    rng = np.random.default_rng(seed)
    n_muon = rng.poisson(1.2, n_events).astype(np.int32)
    n_total = int(n_muon.sum())
    muons = ak.unflatten(
        ak.zip(
            {
                "pt": rng.exponential(20.0, n_total).astype(np.float32) + 3.0,
                "eta": rng.uniform(-2.4, 2.4, n_total).astype(np.float32),
                "phi": rng.uniform(-np.pi, np.pi, n_total).astype(np.float32),
            }
        ),
        n_muon,
    )
    data = {
        "run": np.full(n_events, 1, dtype=np.uint32),
        "luminosityBlock": (np.arange(n_events) // 1000 + 1).astype(np.uint32),
        "event": (np.arange(n_events) + 1 + seed * 1_000_000).astype(np.uint64),
        "MET_pt": rng.exponential(30.0, n_events).astype(np.float32),
        "MET_phi": rng.uniform(-np.pi, np.pi, n_events).astype(np.float32),
        "Muon": muons,
    }
    path = Path(path)
    with uproot.recreate(path) as f:
        # uproot names a record's counter "n" + name ("nMuon") and its fields "Muon_pt", etc.
        f[treename] = data
    return path


def make_demo_fileset(directory: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Write the demo's files into ``directory`` and return a fileset that names them.

    Two datasets (see ``DEMO_DATASETS``): ``DYJets`` with 5 good files of 2,000 events plus a
    path that does not exist, and ``TTbar`` with 4 good files of 1,500 events plus a copy of a
    good file truncated to a third of its size (reading it raises ``OSError``). Calling it again
    on the same directory rewrites the same files.

    Parameters
    ----------
    directory : str or os.PathLike
        Folder for the files; created if missing.

    Returns
    -------
    dict
        ``{dataset: {"files": {path: "Events", ...}}}``, the per-file treename form that
        ``chunkwise.split_fileset`` and ``coffea.processor.Runner`` accept. Paths are absolute.

    Examples
    --------
    >>> import chunkwise
    >>> from chunkwise.examples import METProcessor, make_demo_fileset
    >>> fileset = make_demo_fileset("demo_files")  # doctest: +SKIP
    >>> report = chunkwise.run(fileset, METProcessor(), files_per_chunk=2)  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    fileset: dict[str, dict[str, Any]] = {}
    seed = 0
    for dataset, (n_files, n_events) in DEMO_DATASETS.items():
        files: dict[str, str] = {}
        for i in range(n_files):
            seed += 1
            path = write_nanoaod_like(directory / f"{dataset}_{i}.root", n_events, seed)
            files[str(path)] = "Events"
        fileset[dataset] = {"files": files}

    missing = directory / "DYJets_missing.root"
    if missing.exists():
        missing.unlink()
    fileset["DYJets"]["files"][str(missing)] = "Events"

    good = directory / "TTbar_0.root"
    truncated = directory / "TTbar_truncated.root"
    blob = good.read_bytes()
    truncated.write_bytes(blob[: len(blob) // 3])
    fileset["TTbar"]["files"][str(truncated)] = "Events"
    return fileset
