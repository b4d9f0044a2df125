"""Sums of generator weights over exactly the files in the output, and the ``file_sums`` hook.

Real files throughout: NanoAOD-like files written by uproot, each given a ``Runs`` tree with
known sums, and the real ``Runs`` tree of ``../shared/samples/nano_dy.root`` (older ``_`` names).
The oracle for the sample is uproot reading its ``Runs`` tree directly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uproot
from coffea import processor
from coffea.nanoevents import NanoAODSchema

import chunkwise
from chunkwise.cache import ChunkCache, CorruptCacheEntryWarning
from chunkwise.examples import METProcessor, write_nanoaod_like
from chunkwise.tag import cache_tag

SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "samples"

pytestmark = [
    pytest.mark.filterwarnings("ignore:Missing cross-reference index"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def _with_runs(path: Path, weights: list[float], old_names: bool = False) -> Path:
    """Give a file a NanoAOD Runs tree: one row per entry of ``weights`` (a run's sum)."""
    suffix = "_" if old_names else ""
    w = np.asarray(weights, dtype=np.float64)
    with uproot.update(path) as f:
        del f["Runs"]  # the example writer's own, replaced by one with known sums
        f["Runs"] = {
            "run": np.arange(1, len(w) + 1, dtype=np.uint32),
            f"genEventSumw{suffix}": w,
            f"genEventSumw2{suffix}": w**2 / 3,
            f"genEventCount{suffix}": np.full(len(w), 1000, dtype=np.int64),
        }
    return path


def _without_runs(path: Path) -> Path:
    """A file as data has it: no generator weights."""
    with uproot.update(path) as f:
        del f["Runs"]
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("sums")
    mc = [
        _with_runs(write_nanoaod_like(d / "mc0.root", 300, seed=1), [120.5, 3.25]),
        _with_runs(write_nanoaod_like(d / "mc1.root", 200, seed=2), [-7.0]),
        _with_runs(write_nanoaod_like(d / "mc2.root", 250, seed=3), [55.0], old_names=True),
        # Skimmed to nothing, but its generated events count for the normalization.
        _with_runs(write_nanoaod_like(d / "mc_empty.root", 0, seed=4), [9.0]),
    ]
    truncated = d / "mc_truncated.root"
    blob = _with_runs(write_nanoaod_like(d / "mc_t.root", 100, seed=5), [1000.0]).read_bytes()
    truncated.write_bytes(blob[: len(blob) // 2])
    data = [
        _without_runs(write_nanoaod_like(d / f"data{i}.root", 150, seed=10 + i)) for i in range(2)
    ]
    mixed = [mc[0], _without_runs(write_nanoaod_like(d / "mixed_norun.root", 100, seed=20))]
    return {
        "mc": mc,
        "truncated": truncated,
        "data": data,
        "fileset": {
            "MC": {"files": {str(p): "Events" for p in [*mc, truncated]}},
            "Data": {"files": {str(p): "Events" for p in data}},
            "Mixed": {"files": {str(p): "Events" for p in mixed}},
        },
    }


def _expected_mc() -> dict[str, float]:
    weights = [120.5, 3.25, -7.0, 55.0, 9.0]  # the truncated file's 1000 is not in the output
    return {
        "sumw": sum(weights),
        "sumw2": sum(w**2 / 3 for w in weights),
        "gen_events": 1000 * len(weights),
    }


@pytest.mark.parametrize("files_per_chunk", [1, 2, 10])
def test_sumw_covers_exactly_the_files_in_the_output(
    files: dict[str, Any], files_per_chunk: int, tmp_path: Path
) -> None:
    report = chunkwise.run(
        files["fileset"],
        METProcessor(),
        files_per_chunk=files_per_chunk,
        cache=tmp_path / "cache",
        progress=False,
    )
    assert set(report.bad_files["MC"]) == {str(files["truncated"])}
    expected = _expected_mc()
    assert report.sumw["MC"] == pytest.approx(expected["sumw"], rel=1e-12)
    assert report.sumw2["MC"] == pytest.approx(expected["sumw2"], rel=1e-12)
    assert report.gen_events["MC"] == expected["gen_events"]
    assert type(report.gen_events["MC"]) is int
    # Data has no Runs weights; a dataset where one file in the output lacks them cannot be
    # normalized by a partial sum, so it has none either.
    assert report.sumw["Data"] is None and report.gen_events["Data"] is None
    assert report.sumw["Mixed"] is None
    assert report.sums["Mixed"] == {"gen_events": None, "sumw": None, "sumw2": None}
    assert any(
        n.startswith("Mixed: 1 of its 2 files in the output have sumw") for n in report.notes
    )
    assert "sumw" in report.summary() and f"{expected['sumw']:.6g}" in report.summary()

    # From the cache, the same numbers, with nothing computed.
    again = chunkwise.run(
        files["fileset"],
        METProcessor(),
        files_per_chunk=files_per_chunk,
        cache=tmp_path / "cache",
        progress=False,
    )
    # Only the truncated file is tried again, and fails again.
    assert again.file_counts == {"processed": 0, "cached": 8, "bad": 1}
    assert again.sumw == report.sumw and again.sumw2 == report.sumw2
    assert again.gen_events == report.gen_events


def test_all_files_bad_gives_none(files: dict[str, Any]) -> None:
    fileset = {"MC": {"files": {str(files["truncated"]): "Events"}}}
    report = chunkwise.run(fileset, METProcessor(), progress=False)
    assert report.completeness == {"MC": 0.0}
    assert report.sumw == {"MC": None} and report.sums == {"MC": {}}


@pytest.mark.skipif(not (SAMPLES / "nano_dy.root").exists(), reason="needs ../shared/samples")
def test_real_runs_tree_of_nano_dy() -> None:
    path = str(SAMPLES / "nano_dy.root")
    with uproot.open(path) as f:
        runs = f["Runs"]
        sumw = float(runs["genEventSumw_"].array(library="np").sum())
        sumw2 = float(runs["genEventSumw2_"].array(library="np").sum())
        count = int(runs["genEventCount_"].array(library="np").sum())
    assert count == 850098  # the sample's README value, and a check of the oracle itself

    class Count(processor.ProcessorABC):
        def process(self, events: Any) -> dict[str, int]:
            return {"n": len(events)}

        def postprocess(self, accumulator: Any) -> Any:
            return accumulator

    runner = processor.Runner(
        executor=processor.IterativeExecutor(), schema=NanoAODSchema, skipbadfiles=True
    )
    report = chunkwise.run({"DY": {"files": {path: "Events"}}}, Count(), runner, progress=False)
    assert report.complete
    assert report.sumw["DY"] == pytest.approx(sumw, rel=1e-12)
    assert report.sumw2["DY"] == pytest.approx(sumw2, rel=1e-12)
    assert report.gen_events["DY"] == count
    # The normalization a physicist writes: xsec [pb] * lumi [1/pb] / sumw.
    scale = 6225.4 * 59.8e3 / report.sumw["DY"]
    assert math.isfinite(scale) and scale > 0


def _lumi_blocks(f: Any) -> dict[str, float]:
    return {"n_runs": f["Runs"].num_entries, "half": 0.5}


def test_file_sums_hook(files: dict[str, Any], tmp_path: Path) -> None:
    fileset = {"MC": files["fileset"]["MC"]}
    kwargs: dict[str, Any] = {"files_per_chunk": 2, "progress": False}
    runner = processor.Runner(
        executor=processor.FuturesExecutor(workers=2), schema=NanoAODSchema, skipbadfiles=True
    )
    report = chunkwise.run(
        fileset, METProcessor(), runner, file_sums=_lumi_blocks, cache=tmp_path, **kwargs
    )
    # mc0 has 2 runs, the others 1 each; the truncated file is out.
    assert report.sums["MC"]["n_runs"] == 5
    assert report.sums["MC"]["half"] == pytest.approx(2.0)  # four files in the output
    assert report.sumw["MC"] == pytest.approx(_expected_mc()["sumw"])
    # The hook is part of the tag: another hook does not reuse these entries.
    other = chunkwise.run(
        fileset,
        METProcessor(),
        file_sums=lambda f: {"n_runs": 0},
        cache=tmp_path,
        **kwargs,
    )
    assert other.file_counts["cached"] == 0 and other.sums["MC"]["n_runs"] == 0
    assert cache_tag(METProcessor(), None, _lumi_blocks) != cache_tag(METProcessor())
    assert cache_tag(METProcessor(), None, None) == cache_tag(METProcessor())


@pytest.mark.parametrize(
    ("hook", "error", "match"),
    [
        (lambda f: [1, 2], TypeError, "must return a dict"),
        (lambda f: {"sumw": 1.0}, ValueError, "other than sumw"),
        (lambda f: {"x": "1"}, TypeError, "values must be numbers"),
        (lambda f: {"x": float("nan")}, ValueError, "not finite"),
        (lambda f: f["NoSuchTree"], Exception, "NoSuchTree"),
    ],
)
def test_a_broken_hook_is_a_bug_not_a_bad_file(
    files: dict[str, Any], hook: Any, error: type[Exception], match: str
) -> None:
    fileset = {"MC": {"files": {str(files["mc"][0]): "Events"}}}
    runner = processor.Runner(
        executor=processor.IterativeExecutor(), schema=NanoAODSchema, skipbadfiles=(OSError,)
    )
    with pytest.raises(error, match=match):
        chunkwise.run(fileset, METProcessor(), runner, file_sums=hook, progress=False)


def test_file_sums_must_be_callable(files: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="file_sums must be a function"):
        chunkwise.run(files["fileset"], METProcessor(), file_sums={"x": 1})  # type: ignore[arg-type]


def test_entries_without_sums_give_none_and_a_note(files: dict[str, Any], tmp_path: Path) -> None:
    """An entry of an older chunkwise (events, no sums) is used, but its sumw is unknown."""
    fileset = {"MC": {"files": {str(p): "Events" for p in files["mc"][:2]}}}
    first = chunkwise.run(fileset, METProcessor(), cache=tmp_path, cache_tag="t", progress=False)
    (chunk,) = chunkwise.split_fileset(fileset, files_per_chunk=10)
    cache = ChunkCache(tmp_path, "t")
    key = chunkwise.hash_fileset(chunk)
    entry = cache.load(key)
    cache.save(key, entry.output, info={"events": entry.info["events"]})
    rerun = chunkwise.run(fileset, METProcessor(), cache=tmp_path, cache_tag="t", progress=False)
    assert rerun.file_counts["cached"] == 2
    assert first.sumw["MC"] is not None and rerun.sumw["MC"] is None
    assert any("did not read sums of weights" in note for note in rerun.notes)


def test_malformed_sums_make_an_entry_corrupt(files: dict[str, Any], tmp_path: Path) -> None:
    fileset = {"MC": {"files": {str(files["mc"][0]): "Events"}}}
    (chunk,) = chunkwise.split_fileset(fileset, files_per_chunk=1)
    cache = ChunkCache(tmp_path, "")
    key = chunkwise.hash_fileset(chunk)
    bad_sums = {"MC": {"sumw": [float("inf"), 1]}}
    cache.save(key, {"x": 1}, info={"events": {"MC": 300}, "sums": bad_sums})
    with pytest.warns(CorruptCacheEntryWarning, match="sums of weights are malformed"):
        report = chunkwise.run(fileset, METProcessor(), cache=tmp_path, cache_tag="")
    assert report.file_counts == {"processed": 1, "cached": 0, "bad": 0}
    assert report.sumw["MC"] == pytest.approx(120.5 + 3.25)


def test_report_to_dict_is_json(files: dict[str, Any], tmp_path: Path) -> None:
    report = chunkwise.run(
        files["fileset"], METProcessor(), files_per_chunk=3, cache=tmp_path, progress=False
    )
    data = json.loads(json.dumps(report.to_dict()))
    assert data["schema"] == "chunkwise-report/1"
    assert data["complete"] is False
    mc = data["datasets"]["MC"]
    assert mc["files_total"] == 5 and mc["files_ok"] == 4 and mc["files_bad"] == 1
    assert mc["completeness"] == pytest.approx(0.8)
    assert mc["sumw"] == pytest.approx(_expected_mc()["sumw"])
    assert list(mc["bad_files"]) == [str(files["truncated"])]
    assert data["datasets"]["Data"]["sumw"] is None
    assert data["datasets"]["Data"]["events"] == 300
    assert data["cache"] == {"directory": str(report.cache.directory), "tag": report.cache.tag}
    counts = data["counts"]
    assert counts["files"] == {"total": 9, "processed": 8, "cached": 0, "bad": 1}
    assert counts["chunks"]["total"] == len(report.chunks) == len(data["chunks"])
    assert sum(v for k, v in counts["chunks"].items() if k != "total") == len(report.chunks)
    statuses = {c["hash"]: c["status"] for c in data["chunks"]}
    assert statuses == {r.hash: r.status for r in report.chunks}
    salvaged = [c for c in data["chunks"] if c["status"] == "salvaged"]
    assert len(salvaged) == 1
    parts = {p["path"]: p for p in salvaged[0]["parts"]}
    assert parts[str(files["truncated"])]["status"] == "failed"
    assert parts[str(files["truncated"])]["error"]


def test_weights_false_reads_no_runs_tree(files: dict[str, Any], tmp_path: Path) -> None:
    """weights=False leaves sumw at None, and its entries get a tag of their own: a later run
    that wants weights never loads entries without them."""
    fileset = {"MC": {"files": {str(p): "Events" for p in files["mc"][:3]}}}
    kwargs: dict[str, Any] = {"files_per_chunk": 1, "cache": tmp_path, "progress": False}
    off = chunkwise.run(fileset, METProcessor(), weights=False, **kwargs)
    assert off.complete and off.sumw == {"MC": None} and off.sums == {"MC": {}}
    on = chunkwise.run(fileset, METProcessor(), **kwargs)
    assert on.file_counts["processed"] == 3 and on.cache.tag != off.cache.tag
    assert on.sumw["MC"] == pytest.approx(120.5 + 3.25 - 7.0 + 55.0)
    again = chunkwise.run(fileset, METProcessor(), weights=False, **kwargs)
    assert again.file_counts["cached"] == 3
    # With the hook alone, the file is still opened for it.
    hooked = chunkwise.run(
        fileset, METProcessor(), weights=False, file_sums=_lumi_blocks, progress=False
    )
    assert hooked.sums["MC"] == {"half": 1.5, "n_runs": 4}
    # status finds the tag of a run with a hook when given the same hook.
    chunkwise.run(fileset, METProcessor(), file_sums=_lumi_blocks, **kwargs)
    kwargs.pop("progress"), kwargs.pop("cache")
    found = chunkwise.status(
        fileset, tmp_path, processor_instance=METProcessor(), file_sums=_lumi_blocks, **kwargs
    )
    assert found.complete
    off_status = chunkwise.status(
        fileset, tmp_path, processor_instance=METProcessor(), weights=False, **kwargs
    )
    assert off_status.complete and off_status.cache.tag == off.cache.tag


def test_non_finite_weights_make_a_bad_file(files: dict[str, Any], tmp_path: Path) -> None:
    path = _with_runs(write_nanoaod_like(tmp_path / "nan.root", 50, seed=7), [float("nan")])
    fileset = {"MC": {"files": {str(path): "Events", str(files["mc"][1]): "Events"}}}
    report = chunkwise.run(fileset, METProcessor(), files_per_chunk=1, progress=False)
    assert list(report.bad_files["MC"]) == [str(path)]
    assert "BadWeightsError" in report.bad_files["MC"][str(path)]
    assert "genEventSumw sums to nan" in report.bad_files["MC"][str(path)]
    assert report.sumw["MC"] == pytest.approx(-7.0)
    json.dumps(report.to_dict(), allow_nan=False)


def test_salvage_off_loses_the_chunk_even_with_files_cached(
    files: dict[str, Any], tmp_path: Path
) -> None:
    good = [str(p) for p in files["mc"][:2]]
    fileset = {"MC": {"files": dict.fromkeys([*good, str(files["truncated"])], "Events")}}
    first = {"MC": {"files": dict.fromkeys(good, "Events")}}
    chunkwise.run(first, METProcessor(), files_per_chunk=1, cache=tmp_path, progress=False)
    lost = chunkwise.run(
        fileset, METProcessor(), files_per_chunk=10, cache=tmp_path, salvage=False, progress=False
    )
    assert [r.status for r in lost.chunks] == ["failed"] and lost.output is None
    assert lost.completeness == {"MC": 0.0} and lost.sumw == {"MC": None}
    kept = chunkwise.run(
        fileset, METProcessor(), files_per_chunk=10, cache=tmp_path, progress=False
    )
    assert [r.status for r in kept.chunks] == ["salvaged"]
    assert kept.file_counts == {"processed": 0, "cached": 2, "bad": 1}
    assert kept.sumw["MC"] == pytest.approx(120.5 + 3.25 - 7.0)


def test_maxchunks_gives_no_sumw(files: dict[str, Any]) -> None:
    fileset = {"MC": {"files": {str(files["mc"][0]): "Events"}}}
    runner = processor.Runner(
        executor=processor.IterativeExecutor(),
        schema=NanoAODSchema,
        skipbadfiles=True,
        chunksize=100,
        maxchunks=1,
    )
    report = chunkwise.run(fileset, METProcessor(), runner, progress=False)
    assert report.events == {"MC": 100}
    assert report.sumw == {"MC": None} and report.gen_events == {"MC": None}
    assert any("maxchunks" in note and "sumw" in note for note in report.notes)


def test_remaining_fileset_keeps_the_form(files: dict[str, Any], tmp_path: Path) -> None:
    paths = [str(p) for p in files["mc"][:2]] + [str(files["truncated"])]
    bare = {"MC": paths}
    chunkwise.run(bare, METProcessor(), treename="Events", cache=tmp_path, cache_tag="t")
    status = chunkwise.status(bare, tmp_path, tag="t", treename="Events")
    assert status.remaining_fileset(bare) == {"MC": [str(files["truncated"])]}
    with pytest.raises(TypeError, match="not a list of chunks"):
        status.remaining_fileset(chunkwise.split_fileset(bare, treename="Events"))  # type: ignore[arg-type]
