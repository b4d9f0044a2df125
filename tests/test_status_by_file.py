"""Every file accounted for: ``status`` names bad files by file, whatever split or datasets made
them, counts a dataset's own files, uses the split its run recorded, and reads the cache in one
listing.

Real NanoAOD files from ``../shared/samples`` (skipped without them): copies of ``nano_dy.root``
and ``nano_tt_v12.root``, a truncated copy and a path that does not exist; the command line runs
in the files' directory, so that the paths (and the chunk hashes) are the same in every run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import chunkwise
from chunkwise.cache import ChunkCache, CorruptCacheEntryWarning
from chunkwise.cache.index import file_keys
from chunkwise.chunks import SplitOptions

SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "samples"
needs_samples = pytest.mark.skipif(
    not (SAMPLES / "nano_dy.root").is_file(), reason="../shared/samples is not here"
)
PROCESSOR = ("--processor", "chunkwise.examples:METProcessor")
DY = ["dy_1.root", "dy_2.root", "dy_3.root", "dy_trunc.root", "dy_missing.root"]
TT = ["tt_1.root", "tt_2.root"]
DATA = ["mu_1.root", "mu_2.root"]
BAD = {"dy_trunc.root", "dy_missing.root"}


def cli(*args: Any, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chunkwise", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=600,
    )  # fmt: skip


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A directory with the samples' copies (no ``dy_missing.root``) and two filesets."""
    for name in DY[:3]:
        shutil.copy(SAMPLES / "nano_dy.root", tmp_path / name)
    (tmp_path / "dy_trunc.root").write_bytes((SAMPLES / "nano_dy.root").read_bytes()[:150_000])
    for name in TT:
        shutil.copy(SAMPLES / "nano_tt_v12.root", tmp_path / name)
    for name in DATA:
        shutil.copy(SAMPLES / "nano_dimuon.root", tmp_path / name)
    write(tmp_path / "fileset.json", DY=DY, TTbar=TT)
    write(tmp_path / "grown.json", DY=DY, TTbar=TT, Data=DATA)
    return tmp_path


def write(path: Path, **datasets: list[str]) -> None:
    path.write_text(
        json.dumps(
            {name: {"files": dict.fromkeys(paths, "Events")} for name, paths in datasets.items()}
        )
    )


def rows(stdout: str) -> dict[str, list[str]]:
    """The status table's rows: dataset -> [chunks, done, failed, never run, corrupt, files
    done, files failed, other split]."""
    out = {}
    for line in stdout.splitlines():
        cells = line.split()  # "3/5 (60.0%)" is two cells
        if len(cells) == 10 and cells[1].isdigit():
            out[cells[0]] = [*cells[1:7], *cells[8:]]
    return out


def computed_files(report: dict[str, Any]) -> int:
    """How many files a run's JSON report says were computed (not loaded from the cache)."""
    n = 0
    for chunk in report["chunks"]:
        if "parts" in chunk:
            n += sum(1 for p in chunk["parts"] if p["status"] in ("processed", "failed"))
        elif chunk["status"] in ("processed", "failed"):
            n += sum(chunk["files"].values())
    return n


@needs_samples
def test_bad_files_are_named_after_a_dataset_is_added(files: Path) -> None:
    """The case of the issue: datasets mixed in chunks by percentage, a truncated file and a
    missing path; then a dataset is added, so every mixed chunk gets a new hash."""
    first = cli("run", "fileset.json", "--percentage", "50", *PROCESSOR, "--cache", "cache",
                "--report", "first.json", cwd=files)  # fmt: skip
    assert first.returncode == 1, first.stderr

    grown = cli("status", "grown.json", "--cache", "cache",
                "--write-remaining", "rest.json", cwd=files)  # fmt: skip
    assert grown.returncode == 1, grown.stderr
    assert "split: percentage=50" in grown.stdout  # the run's, recorded
    failed = [line for line in grown.stdout.splitlines() if line.startswith("  failed: ")]
    assert len(failed) == 2
    assert any("DY: dy_trunc.root: " in line for line in failed)
    assert any("DY: dy_missing.root: " in line and "o such file" in line for line in failed)
    table = rows(grown.stdout)
    # A dataset's failed count is its own files': TTbar had no bad file.
    assert table["TTbar"][2] == "0" and table["TTbar"][6] == "0"
    assert table["DY"][6] == "2" and table["Data"][5] == "0/2"

    api = chunkwise.status(json.loads((files / "grown.json").read_text()), files / "cache")
    assert api.failed.keys() == {"DY"} and set(api.failed["DY"]) == BAD
    # Nothing counted twice: each file is done, or in the remaining fileset, once.
    rest = json.loads((files / "rest.json").read_text())
    for dataset, row in api.datasets.items():
        left = list(rest.get(dataset, {}).get("files", {}))
        assert row.files_done + len(left) == row.files
        assert len(set(left)) == len(left) and set(left) >= set(api.failed.get(dataset, {}))
    # The good files of the chunk that had the bad ones were cached one by one: still done.
    first_report = json.loads((files / "first.json").read_text())
    salvaged = {
        p["path"] for c in first_report["chunks"] for p in c.get("parts", ())
        if p["status"] == "processed"
    }  # fmt: skip
    assert salvaged and all(
        path not in rest.get(dataset, {}).get("files", {})
        for dataset in ("DY", "TTbar") for path in salvaged
    )  # fmt: skip
    # The files in whole entries of the old split are told apart from those never run: the
    # first chunk (dy_1-3, tt_1) was complete, and its entry names its files.
    assert table["DY"][7] == "3" and table["TTbar"][7] == "1" and table["Data"][7] == "0"
    assert table["DY"][5] == "0/5" and table["TTbar"][5] == "1/2"
    notes = [line for line in grown.stdout.splitlines() if line.startswith("note: ")]
    assert "split as the run over 7 files of DY, TTbar (percentage=50)" in notes[0]
    assert "4 files not done are in 1 entries of another split" in notes[1]
    assert api.other_entries == 1 and api.unknown_entries == 0
    assert api.overall.files_elsewhere == 4

    # A rerun of the grown fileset computes no file whose own output the cache holds.
    rerun = cli("run", "grown.json", "--percentage", "50", *PROCESSOR, "--cache", "cache",
                "--report", "rerun.json", cwd=files)  # fmt: skip
    assert rerun.returncode == 1, rerun.stderr
    report = json.loads((files / "rerun.json").read_text())
    loaded = {
        p["path"] for c in report["chunks"] for p in c.get("parts", ()) if p["status"] == "cached"
    }
    assert salvaged <= loaded


@needs_samples
def test_a_resplit_still_names_the_bad_files(files: Path) -> None:
    """Run by 20 %, look up with ``--files-per-chunk 2``: one line says the options differ,
    and the bad files are still named with their errors."""
    run = cli("run", "fileset.json", "--percentage", "20", *PROCESSOR, "--cache", "cache",
              cwd=files)  # fmt: skip
    assert run.returncode == 1, run.stderr
    same = cli("status", "fileset.json", "--cache", "cache", cwd=files)
    assert "split: percentage=20" in same.stdout and "note:" not in same.stdout
    other = cli("status", "fileset.json", "--files-per-chunk", "2", "--cache", "cache", cwd=files)
    assert other.returncode == 1
    assert "split: files_per_chunk=2" in other.stdout
    (note,) = [line for line in other.stdout.splitlines() if "not as the last run here" in line]
    assert "percentage=20" in note
    named = {line.split(": ")[2] for line in other.stdout.splitlines() if "  failed: " in line}
    assert named == BAD
    assert rows(other.stdout)["DY"][6] == "2" and rows(other.stdout)["TTbar"][6] == "0"


@needs_samples
def test_write_remaining_resubmit_and_merge(files: Path) -> None:
    """The resubmission loop: the files left are written, the missing one is repaired and
    the rest run one file per chunk, and the merge loads everything from the cache: it equals
    one run of the repaired fileset from scratch."""
    split = ("--strategy", "by_dataset", "--files-per-chunk", "2")
    first = cli("run", "fileset.json", *split, *PROCESSOR, "--cache", "cache", cwd=files)
    assert first.returncode == 1, first.stderr
    status = cli("status", "fileset.json", "--cache", "cache", "--write-remaining", "rest.json",
                 cwd=files)  # fmt: skip
    rest = json.loads((files / "rest.json").read_text())
    assert set(rest) == {"DY"} and set(rest["DY"]["files"]) == BAD, status.stdout

    shutil.copy(SAMPLES / "nano_dy.root", files / "dy_missing.root")  # the path is repaired
    retry = cli("run", "rest.json", "--strategy", "by_dataset", "--files-per-chunk", "1",
                *PROCESSOR, "--cache", "cache", cwd=files)  # fmt: skip
    assert retry.returncode == 1, retry.stderr  # the truncated file stays bad

    # Status of the whole fileset still splits as its own run did, not as the retry did.
    after = cli("status", "fileset.json", "--cache", "cache", cwd=files)
    assert "split: strategy='by_dataset', files_per_chunk=2" in after.stdout, after.stdout
    named = [line for line in after.stdout.splitlines() if "  failed: " in line]
    assert len(named) == 1 and "dy_trunc.root" in named[0]
    assert rows(after.stdout)["DY"][5] == "4/5"

    merge = cli("run", "fileset.json", *split, *PROCESSOR, "--cache", "cache",
                "--report", "merge.json", "--output", "merge.coffea", cwd=files)  # fmt: skip
    assert merge.returncode == 1
    report = json.loads((files / "merge.json").read_text())
    assert computed_files(report) == 1  # only the truncated file is tried again
    write(files / "good.json", DY=[p for p in DY if p != "dy_trunc.root"], TTbar=TT)
    scratch = cli("run", "good.json", *split, *PROCESSOR, "--output", "scratch.coffea", cwd=files)
    assert scratch.returncode == 0, scratch.stderr
    from coffea.util import load

    merged, expected = load(files / "merge.coffea"), load(files / "scratch.coffea")
    assert merged["cutflow"] == expected["cutflow"]
    np.testing.assert_allclose(merged["MET"].values(), expected["MET"].values(), rtol=1e-12)


@needs_samples
def test_per_dataset_counts_are_per_file(files: Path) -> None:
    """A mixed chunk whose bad file is DY's counts as failed for DY only (the API's rows)."""
    fileset = json.loads((files / "fileset.json").read_text())
    cli("run", "fileset.json", "--percentage", "50", *PROCESSOR, "--cache", "cache", cwd=files)
    report = chunkwise.status(fileset, files / "cache")
    tt, dy = report.datasets["TTbar"], report.datasets["DY"]
    assert (tt.files_done, tt.files, tt.files_failed, tt.failed) == (2, 2, 0, 0)
    assert (dy.files_done, dy.files_failed) == (3, 2) and dy.failed >= 1
    assert report.overall.files_failed == 2 and report.overall.failed == dy.failed


# -- the split record ---------------------------------------------------------------------------
def test_split_options_round_trip_through_their_record() -> None:
    options = SplitOptions(strategy="by_dataset", datasets=["b", "a"], files_per_chunk=3)
    record = options.to_record()
    assert record == {"strategy": "by_dataset", "datasets": ["b", "a"], "files_per_chunk": 3}
    back = SplitOptions.from_record(json.loads(json.dumps(record)))
    assert back.same_as(options) and back.split({"a": {"files": {"x": "T"}}}) == options.split(
        {"a": {"files": {"x": "T"}}}
    )
    assert not back.same_as(SplitOptions(strategy="by_dataset", datasets=["a", "b"]))
    assert SplitOptions(files_per_chunk=4, stable=True).to_record() == {
        "files_per_chunk": 4,
        "stable": True,
    }
    assert SplitOptions(datasets=lambda name: True).to_record() is None
    assert SplitOptions().describe() == "the defaults"
    with pytest.raises(ValueError, match="not a record of split options"):
        SplitOptions.from_record({"files_per_chunk": 2, "chunk_size": 3})


def test_status_picks_the_run_over_the_same_fileset_else_the_closest(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path / "cache", "t")

    def recorded(datasets: str, n: int) -> Any:
        return cache.recorded_split(datasets.split(","), n)[0]

    assert recorded("A,B", 10) is None
    cache.write_split(SplitOptions(percentage=20), ["B", "A"], 10)
    cache.write_split(SplitOptions(files_per_chunk=1), ["A"], 3)  # a retry of the files left
    assert recorded("A,B", 10) == SplitOptions(percentage=20)
    assert recorded("A", 3) == SplitOptions(files_per_chunk=1)
    assert recorded("A,B", 12) == SplitOptions(percentage=20)  # grown
    assert recorded("A,B,C", 14) == SplitOptions(percentage=20)  # a dataset added
    cache.write_split(SplitOptions(files_per_chunk=9), ["X", "Y"], 10)  # another, same size
    assert recorded("A,B", 10) == SplitOptions(percentage=20)
    cache.write_split(SplitOptions(percentage=10), ["A", "B"], 10)  # the same, split otherwise
    assert recorded("A,B", 10) == SplitOptions(percentage=10)
    cache.write_split(SplitOptions(datasets=callable), ["A", "B"], 10)
    assert "callable" in str(recorded("A,B", 10))
    for n in range(40):
        cache.write_split(SplitOptions(files_per_chunk=n + 1), ["A"], 100 + n)
    assert len(cache.read_split()) == 16


def test_a_recorded_split_that_selects_datasets_says_what_it_leaves_out(tmp_path: Path) -> None:
    fileset = {
        "TTbar": {"files": {f"/t/{i}.root": "Events" for i in range(3)}},
        "DY": {"files": {f"/d/{i}.root": "Events" for i in range(2)}},
    }
    cache = ChunkCache(tmp_path / "c", "t")
    cache.write_split(SplitOptions(datasets=("TTbar",), files_per_chunk=1), fileset, 5)
    report = chunkwise.status(fileset, cache)
    assert set(report.datasets) == {"TTbar"} and not report.complete
    assert any("selects only TTbar: DY not looked up" in n for n in report.notes)
    only_dy = {"DY": fileset["DY"]}
    report = chunkwise.status(only_dy, cache)  # a run over other datasets: said, and its split
    assert any("split as the run over 5 files of DY, TTbar" in n for n in report.notes)
    assert any("DY not looked up" in n for n in report.notes) and not report.datasets


def test_a_torn_or_foreign_split_record_is_not_trusted(tmp_path: Path) -> None:
    """``split.json`` torn, edited, or copied from another tag: one warning, then the options
    given (or the defaults), never the record's."""
    fileset = {"D": {"files": {f"/x/{i}.root": "Events" for i in range(6)}}}
    mine, other = ChunkCache(tmp_path / "c", "mine"), ChunkCache(tmp_path / "c", "other")
    other.write_split(SplitOptions(files_per_chunk=1), fileset, 6)
    mine.check(create=True)
    shutil.copy(other.split_path, mine.split_path)
    with pytest.warns(CorruptCacheEntryWarning, match="split.json.*does not match"):
        report = chunkwise.status(fileset, mine)
    assert report.split == SplitOptions() and report.overall.chunks == 1
    mine.write_split(SplitOptions(files_per_chunk=2), fileset, 6)
    assert chunkwise.status(fileset, mine).overall.chunks == 3
    text = Path(mine.split_path).read_text()
    Path(mine.split_path).write_text(text[: len(text) // 2])  # torn
    with pytest.warns(CorruptCacheEntryWarning, match="torn"):
        report = chunkwise.status(fileset, mine, split=SplitOptions(files_per_chunk=3))
    assert report.overall.chunks == 2 and not report.notes


def test_run_records_its_split_and_status_uses_it(tmp_path: Path) -> None:
    """``chunkwise.run`` records its split; ``status`` without one splits alike; a list of
    chunks records nothing."""
    from chunkwise.examples import METProcessor, make_demo_fileset

    fileset = make_demo_fileset(tmp_path / "files")
    split = SplitOptions(files_per_chunk=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = chunkwise.run(fileset, METProcessor(), split=split, cache=tmp_path / "cache",
                               progress=False)  # fmt: skip
    looked = chunkwise.status(fileset, tmp_path / "cache")
    assert looked.split == split and looked.overall.chunks == len(report.chunks)
    assert looked.overall.files_done == sum(report.files_total.values()) - sum(
        len(b) for b in report.bad_files.values()
    )
    before = report.cache.split_path.read_bytes()
    chunks = chunkwise.split_fileset(fileset, files_per_chunk=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chunkwise.run(chunks, METProcessor(), cache=tmp_path / "cache", progress=False)
    assert report.cache.split_path.read_bytes() == before


# -- part hashes without building the parts -----------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from chunkwise.chunks import _plain_part_hashes, make_chunks  # noqa: E402

# Strings that stress the JSON escaper (quotes, control characters, non-ASCII, astral, lone
# surrogates), and metadata of every JSON kind, including what the template cannot take.
_chars = st.one_of(
    st.sampled_from(['"', "\\", "\x00", "\n", "\x7f", "é", "😀", "\ud800"]),
    st.characters(exclude_categories=()),
)
_text = st.text(_chars, max_size=8)
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), _text
)  # fmt: skip
_json = st.recursive(
    _scalars,
    lambda c: st.one_of(
        st.lists(c, max_size=3),
        st.lists(c, max_size=3).map(tuple),
        st.dictionaries(st.one_of(_text, st.integers(-5, 5)), c, max_size=3),
    ),
    max_leaves=6,
)
# coffea's preprocessed form of a file's entry: not plain, so the core builds the parts.
_preprocessed = st.fixed_dictionaries(
    {"object_path": st.just("Events"), "steps": st.just([[0, 5]]), "num_entries": st.just(5)}
)
_dataset = st.fixed_dictionaries(
    {
        "files": st.dictionaries(
            _text,
            st.one_of(st.none(), st.sampled_from(["Events", "T"]), _text, _preprocessed),
            min_size=1,
            max_size=5,
        )
    },  # fmt: skip
    optional={
        "metadata": _json,
        "preload": st.one_of(st.lists(_text, max_size=3), st.frozensets(_text, max_size=3), _json),
        "treename": st.one_of(st.none(), _text),
        "other": _json,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_text, _dataset, min_size=1, max_size=3))
def test_plain_part_hashes_are_the_cores(fileset: dict[str, Any]) -> None:
    """Hashing each file's part from a template gives exactly the hashes of the parts the core
    builds and hashes (or declines, and the core's way is taken)."""
    try:
        (chunk,) = make_chunks(fileset)
        built = {}
        for part in chunk.parts:
            ((dataset, paths),) = part.files.items()
            (path,) = paths
            built[part.hash] = (dataset, path)
    except (ValueError, TypeError):
        return  # the core refuses this fileset: nothing to compare
    plain = _plain_part_hashes(chunk.fileset)
    assert plain is None or plain == built
    assert chunk.part_files == built


# -- the tag's index ----------------------------------------------------------------------------
@pytest.fixture
def demo_cache(tmp_path: Path) -> tuple[dict[str, Any], ChunkCache]:
    """The demo's fileset (a missing path, a truncated file) run by 2 files a chunk."""
    from chunkwise.examples import METProcessor, make_demo_fileset

    fileset = make_demo_fileset(tmp_path / "files")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = chunkwise.run(fileset, METProcessor(), split=SplitOptions(files_per_chunk=2),
                               cache=tmp_path / "cache", progress=False)  # fmt: skip
    assert sum(len(b) for b in report.bad_files.values()) == 2
    return fileset, report.cache


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files the local store reads, in order (counted, not changed)."""
    from chunkwise.store.local import LocalStore

    names: list[str] = []
    real = LocalStore.read

    def read(path: Path, limit: int | None = None) -> bytes | None:
        names.append(Path(path).name)
        return real(path, limit)

    monkeypatch.setattr(LocalStore, "read", staticmethod(read))
    return names


def test_after_a_run_status_reads_no_record_or_entry(
    demo_cache: tuple[dict[str, Any], ChunkCache], reads: list[str]
) -> None:
    fileset, cache = demo_cache
    report = chunkwise.status(fileset, cache)
    assert sorted(reads) == ["index.json", "split.json"]
    assert sum(len(f) for f in report.failed.values()) == 2 and not report.notes


@pytest.mark.parametrize("damage", ["torn", "edited", "another tag", "another key"])
def test_an_index_that_does_not_verify_is_rebuilt_not_trusted(
    damage: str, demo_cache: tuple[dict[str, Any], ChunkCache], reads: list[str], tmp_path: Path
) -> None:
    fileset, cache = demo_cache
    expected = chunkwise.status(fileset, cache).failed
    index = Path(cache.index_path)
    text = index.read_text()
    if damage == "torn":
        index.write_text(text[: len(text) // 2])
    elif damage == "edited":  # a bad file hidden by hand: the digest no longer matches
        data = json.loads(text)
        for line in data["records"].values():
            line["bad_files"] = {}
        index.write_text(json.dumps(data))
    elif damage == "another tag":  # a valid index, sealed for another tag, copied here
        other = ChunkCache(cache.root, "other")
        other.check(create=True)
        other.write_index(cache.read_index()[0])
        shutil.copy(other.index_path, index)
    else:  # a valid index of this tag, sealed with a key this cache does not have
        ChunkCache(cache.root, cache.tag, key=b"k" * 32).write_index(cache.read_index()[0])
    reads.clear()
    report = chunkwise.status(fileset, cache)
    assert report.failed == expected
    (note,) = report.notes
    assert note.startswith("the cache's index was not used (") and "written anew" in note
    assert sum(1 for name in reads if name.endswith(".salvage.json")) >= 1  # read, not trusted
    reads.clear()
    again = chunkwise.status(fileset, cache)  # the index written anew is used
    assert again.failed == expected and not again.notes
    assert sorted(reads) == ["index.json", "split.json"]


def test_a_record_rewritten_since_the_index_is_read_again(
    demo_cache: tuple[dict[str, Any], ChunkCache], reads: list[str]
) -> None:
    fileset, cache = demo_cache
    (name,) = [n for n in cache.read_index()[0].records if n.endswith(".salvage.json")][:1]
    record = cache.load_salvage(name[: -len(".salvage.json")])
    assert record is not None
    dataset = sorted(record.bad_files)[0]
    path = sorted(record.bad_files[dataset])[0]
    record.bad_files[dataset][path] = "OSError: failed again, otherwise"
    cache.save_salvage(record)  # as a later run would: another size and time
    reads.clear()
    report = chunkwise.status(fileset, cache)
    assert report.failed[dataset][path] == "OSError: failed again, otherwise"
    assert reads.count(name) == 1
    reads.clear()
    assert chunkwise.status(fileset, cache).failed[dataset][path].endswith("otherwise")
    assert name not in reads  # indexed anew


def test_status_on_a_cache_it_may_not_write_still_answers(
    demo_cache: tuple[dict[str, Any], ChunkCache], tmp_path: Path
) -> None:
    """The index is written by status only as a favour: a read-only tag directory (a cache
    shared read-only, a full disk) gets the same answer, from the records."""
    fileset, cache = demo_cache
    expected = chunkwise.status(fileset, cache).failed
    Path(cache.index_path).unlink()
    directory = Path(cache.directory)
    directory.chmod(0o500)
    try:
        report = subprocess.run(
            ["setpriv", "--reuid=0", "--inh-caps=-all", "--bounding-set=-all", sys.executable,
             "-c", "import chunkwise, json, sys; r = chunkwise.status(json.loads(sys.argv[1]), "
             "sys.argv[2]); print(json.dumps(r.failed, sort_keys=True))",
             json.dumps(fileset), str(cache.root)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        directory.chmod(0o700)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout) == expected
    assert not Path(cache.index_path).exists()


def test_entries_of_an_older_chunkwise_are_told_apart(tmp_path: Path) -> None:
    """An entry written before entries named their files (no ``info["files"]``) of another
    split: its files count as never run, and one note says why."""
    fileset = {"D": {"files": {f"/x/{i}.root": "Events" for i in range(4)}}}
    cache = ChunkCache(tmp_path / "c", "t")
    (whole,) = make_chunks(fileset)
    cache.save(whole.hash, {"n": 4}, info={"events": {"D": 40}})  # as chunkwise 0.x wrote it
    report = chunkwise.status(fileset, cache, split=SplitOptions(files_per_chunk=2))
    assert report.other_entries == 1 and report.unknown_entries == 1
    assert report.overall.files_elsewhere == 0 and report.overall.never_run == 2
    assert "written by an older chunkwise and do not name their files" in report.summary()
    keys = file_keys(whole.part_files)
    cache.save(whole.hash, {"n": 4}, info={"events": {"D": 40}, "files": keys})
    Path(cache.index_path).unlink(missing_ok=True)
    named = chunkwise.status(fileset, cache, split=SplitOptions(files_per_chunk=2))
    assert named.unknown_entries == 0 and named.overall.files_elsewhere == 4


def test_a_chunk_file_is_looked_up_as_the_one_chunk_it_is(tmp_path: Path) -> None:
    """``chunkwise status chunks/<hash>.json``, as ``run`` of that file: never split again with
    the options a run over a whole fileset recorded."""
    from chunkwise.examples import make_demo_fileset

    fileset = make_demo_fileset(tmp_path / "files")
    good = {
        d: {"files": {p: t for p, t in data["files"].items() if Path(p).is_file()
                      and "truncated" not in p}}
        for d, data in fileset.items()
    }  # fmt: skip
    (tmp_path / "good.json").write_text(json.dumps(good))
    proc, cache = ("--processor", "chunkwise.examples:METProcessor"), ("--cache", "cache")
    whole = cli("run", "good.json", "--files-per-chunk", "1", *proc, *cache, cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr  # records files_per_chunk=1
    split = cli("split", "good.json", "--files-per-chunk", "3", "--out", "chunks", cwd=tmp_path)
    assert split.returncode == 0, split.stderr
    chunk = sorted(p for p in (tmp_path / "chunks").glob("*.json") if p.name != "manifest.json")[0]
    run = cli("run", chunk, *proc, *cache, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    looked = cli("status", chunk, *cache, cwd=tmp_path)
    assert looked.returncode == 0, looked.stdout + looked.stderr
    assert "all 1 chunks are complete" in looked.stdout


def test_a_salvaged_chunk_completed_since_leaves_no_unknown_entries(
    tmp_path: Path, reads: list[str]
) -> None:
    """The bad files repaired and the fileset run again: every chunk is whole, the files'
    own entries stay, and status says nothing of entries of another split, nor reads them."""
    from chunkwise.examples import METProcessor, make_demo_fileset, write_nanoaod_like

    fileset = make_demo_fileset(tmp_path / "files")
    split = SplitOptions(files_per_chunk=2)
    options = {"split": split, "cache": tmp_path / "cache", "progress": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = chunkwise.run(fileset, METProcessor(), **options)
        for data in fileset.values():  # repair the missing and the truncated file
            for i, path in enumerate(data["files"]):
                if not Path(path).is_file() or "truncated" in path:
                    write_nanoaod_like(path, 500, seed=900 + i)
        second = chunkwise.run(fileset, METProcessor(), **options)
    assert not first.complete and second.complete
    reads.clear()
    report = chunkwise.status(fileset, tmp_path / "cache")
    assert report.complete and report.other_entries == 0 and report.unknown_entries == 0
    assert not report.notes and "note:" not in report.summary()
    assert not [n for n in reads if n.endswith(".coffea")]
