"""A run that says plainly what happened: a processor bug reads like a Python bug.

A processor with a typo (``events.Muonn``) run over real NanoAOD files from ``../shared/samples``
must end with the user's own frame (file, line and source text) and one last line naming the
real exception, the ROOT file and the dataset, exit status 4, under every executor. The source
travels with a processor shipped by value, so a worker without the user's files shows it too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "samples"
needs_samples = pytest.mark.skipif(
    not (SAMPLES / "nano_dy.root").is_file(), reason="../shared/samples is not here"
)

TYPO = """
import hist
from coffea import processor


class Typo(processor.ProcessorABC):
    def process(self, events):
        h = hist.Hist.new.Reg(10, 0, 100, name="pt").Double()
        muons = events.Muonn
        h.fill(pt=events.MET.pt)
        return {"MET": h, "n": len(muons)}

    def postprocess(self, accumulator):
        return accumulator


XSEC = {}


class Chained(processor.ProcessorABC):
    def process(self, events):
        try:
            xsec = XSEC[events.metadata["dataset"]]
        except KeyError as err:
            raise RuntimeError("no cross-section for DY; add it to XSEC") from err
        return {"xsec": xsec}

    def postprocess(self, accumulator):
        return accumulator
"""


def chunkwise_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chunkwise", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="module")
def typo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("typo")
    (directory / "analysis.py").write_text(TYPO)
    shutil.copy(SAMPLES / "nano_dy.root", directory / "f000000.root")
    fileset = {"DY": {"files": {str(directory / "f000000.root"): "Events"}}}
    (directory / "fileset.json").write_text(json.dumps(fileset))
    return directory


@needs_samples
@pytest.mark.parametrize("executor", ["iterative", "futures", "dask"])
def test_a_processor_bug_names_the_users_line_exception_and_file(typo_dir: Path, executor: str):
    workers = [] if executor == "iterative" else ["--workers", "1"]
    result = chunkwise_cli(
        "run", "fileset.json", "--processor", "analysis:Typo", "--no-progress",
        "--executor", executor, *workers, cwd=typo_dir,
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        "chunkwise run: error: the processor raised AttributeError: no field named 'Muonn' "
        "(DY, f000000.root); chunks finished so far are cached: fix it and rerun "
        "(--verbose shows the whole traceback)"
    )
    # The user's own frame, with the source line, as Python shows it; not cloudpickle's name.
    frame = f'  File "{typo_dir / "analysis.py"}", line 9, in process'
    assert frame in lines, result.stderr
    assert lines[lines.index(frame) + 1].strip() == "muons = events.Muonn"
    assert "<dynamic-code>" not in result.stderr
    # Python 3.12 and later add "Did you mean: 'Muon'?" to an AttributeError's line.
    assert any(line.startswith("AttributeError: no field named 'Muonn'") for line in lines)
    # coffea's wrapper and chunkwise's machinery are left out unless asked for.
    assert "Failed processing file" not in result.stderr
    assert "chunkwise/engine.py" not in result.stderr


@needs_samples
@pytest.mark.parametrize("executor", ["iterative", "futures"])
def test_the_users_own_exception_is_named_not_its_cause(typo_dir: Path, executor: str):
    """An error raised on purpose from another keeps its message; the chain shows both."""
    workers = [] if executor == "iterative" else ["--workers", "1"]
    result = chunkwise_cli(
        "run", "fileset.json", "--processor", "analysis:Chained", "--no-progress",
        "--executor", executor, *workers, cwd=typo_dir,
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(
        "chunkwise run: error: the processor raised RuntimeError: no cross-section for DY; "
        "add it to XSEC (DY, f000000.root);"
    ), lines[-1]
    assert "KeyError: 'DY'" in lines
    assert "The above exception was the direct cause of the following exception:" in lines
    assert "RuntimeError: no cross-section for DY; add it to XSEC" in lines
    assert "Failed processing file" not in result.stderr


@needs_samples
def test_verbose_shows_the_whole_traceback(typo_dir: Path):
    result = chunkwise_cli(
        "run", "fileset.json", "--processor", "analysis:Typo", "--no-progress", "--verbose",
        cwd=typo_dir,
    )  # fmt: skip
    assert result.returncode == 4
    assert "Failed processing file" in result.stderr  # coffea's wrapper, and its chain
    assert f'File "{typo_dir / "analysis.py"}", line 9, in process' in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith("chunks finished so far are cached: fix it and rerun")
    assert "AttributeError: no field named 'Muonn' (DY, f000000.root)" in last


def test_a_worker_without_the_users_files_still_shows_their_source(tmp_path: Path):
    """The processor's module is shipped by value with its source: loaded where its file is
    not, a traceback from it still shows the file name, the line and the source text."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "mymod.py").write_text(
        textwrap.dedent(
            """
            from chunkwise.examples import METProcessor


            def helper(x):
                return x.no_such_field


            class Mine(METProcessor):
                def process(self, events):
                    return helper(events)
            """
        )
    )
    blob = tmp_path / "blob"
    dump = (
        "import sys; sys.path.insert(0, sys.argv[1]); import mymod\n"
        "from chunkwise.shipping import dumps_processor\n"
        "open(sys.argv[2], 'wb').write(dumps_processor(mymod.Mine()))\n"
    )
    subprocess.run([sys.executable, "-c", dump, str(home), str(blob)], check=True)
    moved = tmp_path / "elsewhere"
    home.rename(moved)  # the worker has no such file
    load = (
        "import sys, traceback\n"
        "from chunkwise.shipping import loads_processor\n"
        "p, _, _ = loads_processor(open(sys.argv[1], 'rb').read())\n"
        "try:\n"
        "    p.process(object())\n"
        "except AttributeError:\n"
        "    traceback.print_exc()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", load, str(blob)], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    where = str(home / "mymod.py")
    assert f'File "{where}", line 11, in process' in result.stderr, result.stderr
    assert "return helper(events)" in result.stderr
    assert f'File "{where}", line 6, in helper' in result.stderr
    assert "return x.no_such_field" in result.stderr
    assert "<dynamic-code>" not in result.stderr
    assert not os.path.exists(where)


# -- quiet by default, with reasons ------------------------------------------------------------
FINE = """
import warnings

import hist
from coffea import processor


class Fine(processor.ProcessorABC):
    def process(self, events):
        warnings.warn("my own analysis warning", UserWarning)
        h = hist.Hist.new.StrCat([], growth=True, name="dataset").Reg(10, 0, 200, name="pt")
        h = h.Double().fill(dataset=events.metadata["dataset"], pt=events.MET.pt)
        return {"MET": h}

    def postprocess(self, accumulator):
        return accumulator
"""


@pytest.fixture(scope="module")
def three_samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Simulation with a Runs tree (nano_dy), simulation without one (nano_tt_v12), data."""
    directory = tmp_path_factory.mktemp("three")
    (directory / "analysis.py").write_text(FINE)
    fileset = {}
    for dataset, name in (("DY", "nano_dy"), ("TT", "nano_tt_v12"), ("Mu", "nano_dimuon")):
        shutil.copy(SAMPLES / f"{name}.root", directory / f"{name}.root")
        fileset[dataset] = {"files": {str(directory / f"{name}.root"): "Events"}}
    (directory / "fileset.json").write_text(json.dumps(fileset))
    return directory


@needs_samples
def test_a_default_run_shows_the_packages_warnings_once_counted_and_says_why_sumw_is_missing(
    three_samples: Path,
):
    args = ("run", "fileset.json", "--processor", "analysis:Fine", "--no-progress")
    result = chunkwise_cli(*args, cwd=three_samples)
    assert result.returncode == 0, result.stderr
    # Before the summary: only the user's own warning, once; none of coffea's schema's.
    shown = [line for line in result.stderr.splitlines() if "Warning: " in line]
    assert len(shown) == 1 and "UserWarning: my own analysis warning" in shown[0], shown
    assert "Missing cross-reference" not in result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith("note: ")]
    (counted,) = [n for n in notes if "warnings from coffea's nanoevents.schemas.nanoaod" in n]
    assert "(first: RuntimeWarning: Missing cross-reference" in counted
    assert "quiet=False (--verbose) shows each" in counted
    # Why each dataset without a sum of weights has none; nothing about the one with it.
    assert "note: TT: no sumw: no Runs tree in 1 of 1 files" in notes
    assert "note: Mu: no sumw: data (no genEventSumw, no genWeight) in 1 of 1 files" in notes
    assert not [n for n in notes if n.startswith("note: DY:")]

    verbose = chunkwise_cli(*args, "--verbose", cwd=three_samples)
    assert verbose.returncode == 0, verbose.stderr
    assert verbose.stderr.count("Missing cross-reference") >= 10
    assert "warnings from coffea's" not in verbose.stdout


def test_genevent_sumw_missing_is_told_from_data(tmp_path: Path):
    """A Runs tree without genEventSumw in a file whose events have genWeight is not data."""
    import numpy as np
    import uproot
    from coffea import processor

    from chunkwise.sums import WEIGHT_GAPS, read_file_sums

    runner = processor.Runner(processor.IterativeExecutor())
    for name, events in (("mc", {"genWeight": np.ones(3)}), ("data", {"x": np.ones(3)})):
        with uproot.recreate(tmp_path / f"{name}.root") as f:
            f["Events"] = events
            f["Runs"] = {"run": np.array([1], dtype=np.uint32)}
    mc = read_file_sums(runner, str(tmp_path / "mc.root"), None, True, "Events")
    data = read_file_sums(runner, str(tmp_path / "data.root"), None, True, "Events")
    assert mc == {"chunkwise:no_gen_weights": 1}
    assert WEIGHT_GAPS["chunkwise:no_gen_weights"] == "genEventSumw missing from the Runs tree"
    assert data == {"chunkwise:data": 1}


def test_the_skipbadfiles_note_comes_only_when_a_file_was_bad(tmp_path: Path):
    import warnings

    from coffea import processor

    import chunkwise
    from chunkwise.examples import METProcessor, write_nanoaod_like

    good = write_nanoaod_like(tmp_path / "good.root", 100, seed=1)
    runner = processor.Runner(processor.IterativeExecutor(), skipbadfiles=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clean = chunkwise.run({"A": {"files": {str(good): "Events"}}}, METProcessor(), runner)
        missing = {str(good): "Events", str(tmp_path / "missing.root"): "Events"}
        bad = chunkwise.run({"A": {"files": missing}}, METProcessor(), runner)
    assert not [n for n in clean.notes if "skipbadfiles=False" in n]
    assert [n for n in bad.notes if "skipbadfiles=False" in n]
    assert bad.completeness == {"A": 0.5}


@needs_samples
def test_why_sumw_is_missing_is_cached_apart_from_the_sums(tmp_path: Path):
    """The reasons travel with the entry, beside its sums (which every chunkwise reads as
    quantities), and a rerun from the cache still says them."""
    import warnings

    import chunkwise
    from chunkwise.cache import ChunkCache
    from chunkwise.examples import METProcessor

    shutil.copy(SAMPLES / "nano_tt_v12.root", tmp_path / "tt.root")
    fileset = {"TT": {"files": {str(tmp_path / "tt.root"): "Events"}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = chunkwise.run(fileset, METProcessor(), cache=tmp_path / "cache", progress=False)
        again = chunkwise.run(fileset, METProcessor(), cache=tmp_path / "cache", progress=False)
    note = "TT: no sumw: no Runs tree in 1 of 1 files"
    assert note in first.notes and note in again.notes
    assert again.file_counts["cached"] == 1
    entry = ChunkCache(tmp_path / "cache", first.cache.tag).load(first.chunks[0].hash)
    assert entry.info["sums"] == {"TT": {}}
    assert entry.info["gaps"] == {"TT": {"chunkwise:no_runs_tree": [1, 1]}}
    assert again.sums == {"TT": {}}  # the reasons are not quantities
