"""A small processor and synthetic NanoAOD-like files to try ``chunkwise.run`` without a grid.

``METProcessor`` is the processor of coffea's *split_fileset* notebook, made importable (and so
picklable by reference) and safe to call many times: it builds a fresh accumulator in every
``process`` call instead of filling one kept on ``self``.

``write_nanoaod_like`` writes a deterministic ROOT file with the branches that
``coffea.nanoevents.NanoAODSchema`` needs for ``events.MET`` and ``events.Muon``, a generator
weight and NanoAOD's ``Runs`` tree with the sums of weights, with Drell-Yan-like or ttbar-like
distributions; ``make_demo_fileset`` lays out a two-dataset fileset with one missing path and
one truncated file, the failures that ``chunkwise.run`` is built to survive.

``run_demo`` is ``chunkwise demo``: the whole idea of chunkwise on real ROOT files, in under a
minute.

1. Write a small NanoAOD-like fileset (``make_demo_fileset``): two datasets, nine good files, one
   path that does not exist and one truncated file.
2. Run ``METProcessor`` over it with ``chunkwise.run``, ``percentage=20``, a cache and salvage.
3. Print what happened to each chunk and how complete each dataset is, and draw ``met.png``.
4. Run again: everything loads from the cache and the histogram is the same.

Everything goes into one directory (``./chunkwise-demo`` by default): ``files/``, ``cache/``,
``fileset.json``, ``report.json`` and ``met.png``.

This module imports coffea, hist, numpy and uproot; ``import chunkwise`` does not import it.
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

import awkward as ak
import hist
import numpy as np
import uproot

from chunkwise._coffea import ProcessorABC, defaultdict_accumulator, make_runner
from chunkwise.chunks import SplitOptions
from chunkwise.errors import DemoError
from chunkwise.plot import plot_histograms
from chunkwise.runner import run
from chunkwise.table import format_table

__all__ = [
    "DEMO_DATASETS",
    "DEMO_PROCESSES",
    "METProcessor",
    "make_demo_fileset",
    "run_demo",
    "write_nanoaod_like",
]

#: The demo's datasets: name -> (number of good files, events per file).
DEMO_DATASETS: dict[str, tuple[int, int]] = {
    "DYJets": (5, 2000),
    "TTbar": (4, 1500),
}


class METProcessor(ProcessorABC):
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
    from chunkwise.chunks import SplitOptions
    from chunkwise.errors import DemoError
    from chunkwise.plot import plot_histograms
    from chunkwise.runner import run
    from chunkwise.table import format_table
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
            "cutflow": defaultdict_accumulator(int),
        }
        out["cutflow"]["all events"] += len(met)
        out["cutflow"]["number of chunks"] += 1
        out["MET"].fill(dataset=dataset, MET=met)
        return out

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


#: The physics process each demo dataset imitates (see ``write_nanoaod_like``).
DEMO_PROCESSES: dict[str, str] = {"DYJets": "dy", "TTbar": "ttbar"}

#: Fraction of negative generator weights: an NLO (MadGraph5_aMC@NLO-like) Drell-Yan sample has
#: many, a POWHEG-like ttbar sample very few.
_NEGATIVE_WEIGHT_FRACTION = {"dy": 0.16, "ttbar": 0.004}

_Z_MASS, _Z_WIDTH, _MUON_MASS = 91.19, 2.50, 0.10566  # GeV


def _pt_eta_phi(px: Any, py: Any, pz: Any) -> tuple[Any, Any, Any]:
    pt = np.hypot(px, py)
    return pt, np.arcsinh(pz / np.maximum(pt, 1e-9)), np.arctan2(py, px)


def _z_to_mumu(rng: np.random.Generator, n: int) -> tuple[Any, Any, Any, Any]:
    """Two muons per event from a Z boson: Breit-Wigner mass, soft recoil, isotropic decay."""
    mass = np.clip(_Z_MASS + 0.5 * _Z_WIDTH * rng.standard_cauchy(n), 60.0, 120.0)
    z_pt = rng.gamma(1.5, 7.0, n)
    z_rapidity = rng.normal(0.0, 1.4, n)
    z_phi = rng.uniform(-np.pi, np.pi, n)
    mt = np.hypot(mass, z_pt)
    energy = mt * np.cosh(z_rapidity)
    z_p = np.stack([z_pt * np.cos(z_phi), z_pt * np.sin(z_phi), mt * np.sinh(z_rapidity)])
    # The decay in the Z rest frame (muon mass neglected), then boosted to the lab.
    cos_theta = rng.uniform(-1.0, 1.0, n)
    sin_theta = np.sqrt(1.0 - cos_theta**2)
    phi = rng.uniform(-np.pi, np.pi, n)
    half = mass / 2
    p_star = half * np.stack([sin_theta * np.cos(phi), sin_theta * np.sin(phi), cos_theta])
    beta = z_p / energy
    gamma = energy / mass
    pts, etas, phis = [], [], []
    for sign in (1.0, -1.0):
        p = sign * p_star
        beta_p = (beta * p).sum(axis=0)
        coefficient = (gamma - 1.0) * beta_p / np.maximum((beta**2).sum(axis=0), 1e-12)
        lab = p + beta * (coefficient + gamma * half)
        pt, eta, phi_lab = _pt_eta_phi(*lab)
        pts.append(pt)
        etas.append(eta)
        phis.append(phi_lab)
    charge = np.where(rng.uniform(size=n) < 0.5, 1, -1)
    return np.stack(pts, 1), np.stack(etas, 1), np.stack(phis, 1), np.stack([charge, -charge], 1)


def _ttbar_muons(rng: np.random.Generator, n: int) -> tuple[Any, Any, Any, Any]:
    """Prompt muons from the W decays (pT around 40 GeV) and soft ones from b decays."""
    width = 4  # at most 2 prompt + 2 soft muons; unused slots fall out of the acceptance
    prompt = rng.uniform(size=(n, 2)) < 0.13  # W -> mu nu, directly or through a tau
    soft = rng.uniform(size=(n, 2)) < 0.15
    pt = np.concatenate([rng.gamma(3.0, 15.0, (n, 2)), 3.0 + rng.exponential(5.0, (n, 2))], 1)
    pt[~np.concatenate([prompt, soft], 1)] = 0.0
    eta = rng.normal(0.0, 1.3, (n, width))
    phi = rng.uniform(-np.pi, np.pi, (n, width))
    charge = np.where(rng.uniform(size=(n, width)) < 0.5, 1, -1)
    return pt, eta, phi, charge


def _met(rng: np.random.Generator, process: str, n: int) -> tuple[Any, Any]:
    """Missing transverse momentum: resolution only for Drell-Yan, neutrinos for ttbar."""
    if process == "dy":
        # No neutrinos: a Gaussian resolution of about 12 GeV per component (a Rayleigh
        # distribution peaking near 12 GeV) and a few mismeasured events in a falling tail.
        true_pt = np.where(rng.uniform(size=n) < 0.03, rng.exponential(25.0, n), 0.0)
        sigma = 12.0
    else:
        # Neutrinos from W decays in the lepton+jets and dilepton channels give a broad
        # spectrum with a long tail; all-hadronic events have little genuine MET.
        leptonic = rng.uniform(size=n) < 0.55
        true_pt = np.where(leptonic, rng.gamma(2.2, 32.0, n), rng.gamma(2.0, 8.0, n))
        sigma = 16.0
    true_phi = rng.uniform(-np.pi, np.pi, n)
    mex = true_pt * np.cos(true_phi) + rng.normal(0.0, sigma, n)
    mey = true_pt * np.sin(true_phi) + rng.normal(0.0, sigma, n)
    return np.hypot(mex, mey), np.arctan2(mey, mex)


def write_nanoaod_like(
    path: str | os.PathLike[str],
    n_events: int,
    seed: int,
    *,
    treename: str = "Events",
    process: str = "dy",
) -> Path:
    """Write a small NanoAOD-like ROOT file, the same bytes of data for the same arguments.

    The events tree has ``run``, ``luminosityBlock``, ``event``, ``genWeight``, ``MET_pt``,
    ``MET_phi`` and a jagged muon collection ``Muon_pt``, ``Muon_eta``, ``Muon_phi``,
    ``Muon_mass``, ``Muon_charge`` counted by ``nMuon``, which is what
    ``coffea.nanoevents.NanoAODSchema`` needs to build ``events.MET`` and ``events.Muon``. A
    ``Runs`` tree holds one entry, as in NanoAOD: ``run``, ``genEventCount`` (the number of
    events), ``genEventSumw`` and ``genEventSumw2`` (the sums of ``genWeight`` and of its
    square, in double precision).

    The distributions imitate ``process``:

    - ``"dy"`` (Drell-Yan, Z to two muons): two opposite-charge muons from a Z boson, so their
      invariant mass peaks at 91 GeV and each has a pT near 40 GeV; a MET of a few tens of GeV
      from resolution alone (no neutrinos); generator weights near 1 with 16% negative ones,
      as in an NLO sample.
    - ``"ttbar"``: few muons (from W and b decays); a broad MET from the neutrinos with a
      long tail beyond 100 GeV; almost no negative weights.

    Only muons with pT > 3 GeV and ``abs(eta) < 2.4`` are kept, ordered by decreasing pT.

    Parameters
    ----------
    path : str or os.PathLike
        Where to write the file; its directory must exist. An existing file is overwritten.
    n_events : int
        Number of events (0 writes an empty tree with the same branches).
    seed : int
        Seed of the random numbers; the same seed gives the same values.
    treename : str, optional
        Name of the events tree, ``"Events"`` by default.
    process : {"dy", "ttbar"}, optional
        Which physics the distributions imitate; ``"dy"`` by default.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        If ``n_events`` is negative or ``process`` is not one of the above.

    Examples
    --------
    >>> from chunkwise.examples import write_nanoaod_like
    >>> write_nanoaod_like(tmp_path / "a.root", n_events=1000, seed=1)  # doctest: +SKIP
    >>> write_nanoaod_like(tmp_path / "t.root", 1000, seed=2, process="ttbar")  # doctest: +SKIP
    """
    if n_events < 0:
        raise ValueError(f"n_events must be >= 0, got {n_events}")
    if process not in _NEGATIVE_WEIGHT_FRACTION:
        raise ValueError(
            f"process must be one of {sorted(_NEGATIVE_WEIGHT_FRACTION)}, got {process!r}"
        )
    rng = np.random.default_rng(seed)
    if process == "dy":
        pt, eta, phi, charge = _z_to_mumu(rng, n_events)
    else:
        pt, eta, phi, charge = _ttbar_muons(rng, n_events)
    # The acceptance of a NanoAOD muon, and NanoAOD's ordering by decreasing pT.
    accepted = (pt > 3.0) & (np.abs(eta) < 2.4)
    order = np.argsort(np.where(accepted, -pt, np.inf), axis=1, kind="stable")
    n_muon = accepted.sum(axis=1).astype(np.int32)
    keep = np.arange(pt.shape[1]) < n_muon[:, None]

    def muon_field(values: Any, dtype: Any) -> Any:
        return np.take_along_axis(values, order, axis=1)[keep].astype(dtype)

    muons = ak.unflatten(
        ak.zip(
            {
                "pt": muon_field(pt, np.float32),
                "eta": muon_field(eta, np.float32),
                "phi": muon_field(phi, np.float32),
                "mass": np.full(int(n_muon.sum()), _MUON_MASS, dtype=np.float32),
                "charge": muon_field(charge, np.int32),
            }
        ),
        n_muon,
    )
    met_pt, met_phi = _met(rng, process, n_events)
    negative = rng.uniform(size=n_events) < _NEGATIVE_WEIGHT_FRACTION[process]
    gen_weight = (np.where(negative, -1.0, 1.0) * rng.normal(1.0, 0.03, n_events)).astype(
        np.float32
    )
    data = {
        "run": np.full(n_events, 1, dtype=np.uint32),
        "luminosityBlock": (np.arange(n_events) // 1000 + 1).astype(np.uint32),
        "event": (np.arange(n_events) + 1 + seed * 1_000_000).astype(np.uint64),
        "genWeight": gen_weight,
        "MET_pt": met_pt.astype(np.float32),
        "MET_phi": met_phi.astype(np.float32),
        "Muon": muons,
    }
    weights = gen_weight.astype(np.float64)  # summed in double precision, as NanoAOD does
    runs = {
        "run": np.array([1], dtype=np.uint32),
        "genEventCount": np.array([n_events], dtype=np.int64),
        "genEventSumw": np.array([weights.sum()], dtype=np.float64),
        "genEventSumw2": np.array([(weights**2).sum()], dtype=np.float64),
    }
    path = Path(path)
    with uproot.recreate(path) as f:
        # uproot names a record's counter "n" + name ("nMuon") and its fields "Muon_pt", etc.
        f[treename] = data
        f["Runs"] = runs
    return path


def make_demo_fileset(directory: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Write the demo's files into ``directory`` and return a fileset that names them.

    Two datasets (see ``DEMO_DATASETS``): ``DYJets`` with 5 good Drell-Yan-like files of 2,000
    events plus a path that does not exist, and ``TTbar`` with 4 good ttbar-like files of 1,500
    events (see ``write_nanoaod_like``) plus a copy of a good file truncated to a third of its
    size (reading it raises ``OSError``). Calling it again on the same directory rewrites the
    same files.

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
            path = write_nanoaod_like(
                directory / f"{dataset}_{i}.root", n_events, seed, process=DEMO_PROCESSES[dataset]
            )
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


# -- the demo ---------------------------------------------------------------------------------
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
    >>> from chunkwise.examples import run_demo
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

    runner = make_runner(schema="NanoAODSchema")
    cache = directory / "cache"
    options: dict[str, Any] = dict(
        split=SplitOptions(percentage=20), cache=str(cache), salvage=True
    )
    progress = sys.stderr.isatty()

    say()
    say("2. First run: chunkwise.run(fileset, METProcessor(), runner, cache=...,")
    say("   split=SplitOptions(percentage=20), salvage=True). Every file is its own task;")
    say("   a chunk with a bad file keeps its good files, each cached on its own (salvage).")
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
