"""The ``chunkwise`` command line, run the way users run it: as a subprocess.

Each test reads like a README section: split a fileset into chunk files for a batch system, hash
them, run a processor over them, ask ``status`` what is done, and try the demo. Bad input must
end with one line on stderr, exit status 2 and nothing written.

``split``, ``hash`` and ``status`` do not import coffea, so their subprocesses are cheap; the
tests that ``run`` a processor are grouped so that coffea is imported as few times as possible.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

PROCESSOR = "chunkwise.examples:METProcessor"


def cli(*args: str | os.PathLike[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m chunkwise ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "chunkwise", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def assert_usage_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit status 2, one line on stderr (no traceback) that contains ``words``, no stdout."""
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("chunkwise"), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == ""


def tree_of(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# A fileset in the three shapes that coffea's Runner accepts, with per-dataset metadata.
FILESET = {
    "DY": {
        "files": {f"root://eos.example//dy/{i}.root": "Events" for i in (3, 0, 4, 1, 2)},
        "metadata": {"xsec": 6077.2, "is_mc": True},
    },
    "Data": [f"/data/run{i}.root" for i in range(4)],
    "TT": {"files": [f"/tt/{i}.root" for i in range(3)], "treename": "Events"},
}


@pytest.fixture
def fileset_json(tmp_path: Path) -> Path:
    path = tmp_path / "fileset.json"
    path.write_text(json.dumps(FILESET))
    return path


# --------------------------------------------------------------------------------------- split


def test_import_is_cheap():
    heavy = "{'coffea', 'matplotlib', 'dask', 'uproot'}"
    code = f"import sys, chunkwise.cli; print(sorted({heavy} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_status_and_cache_commands_do_not_import_coffea(tmp_path: Path, fileset_json: Path):
    """A batch job that loops on ``status`` pays for no coffea import (without --processor)."""
    code = (
        "import sys\n"
        "from chunkwise.cli import main\n"
        "main(['status', sys.argv[1], '--treename', 'Events', '--cache', sys.argv[2]])\n"
        "main(['cache', 'ls', sys.argv[2]])\n"
        "print(sorted({'coffea', 'uproot', 'dask'} & set(sys.modules)))\n"
    )
    args = [sys.executable, "-c", code, str(fileset_json), str(tmp_path / "cache")]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr


@pytest.mark.parametrize("suffix", [".json", ".json.gz", ".yaml", ".yml"])
def test_split_writes_chunks_named_by_their_coffea_hash(tmp_path: Path, suffix: str):
    from coffea.dataset_tools import hash_fileset as coffea_hash
    from coffea.dataset_tools import split_fileset as coffea_split

    # The forms coffea's dataset tools write: dataset_query saves .json or .yaml,
    # preprocessing saves .json.gz.
    source = tmp_path / f"fileset{suffix}"
    if suffix == ".json.gz":
        with gzip.open(source, "wt") as f:
            json.dump(FILESET, f, indent=2)
    elif suffix == ".json":
        source.write_text(json.dumps(FILESET, indent=2))
    else:
        source.write_text(yaml.dump(FILESET, default_flow_style=False))
    out = tmp_path / "chunks"

    result = cli("split", source, "--percentage", "50", "--treename", "Events", "--out", out)

    assert result.returncode == 0, result.stderr
    expected = coffea_split(FILESET, percentage=50, treename="Events")
    listed = result.stdout.split()
    assert len(listed) == len(expected) == 2
    assert "wrote 2 chunks (12 files)" in result.stderr

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_chunks"] == 2
    assert manifest["options"]["percentage"] == 50
    chunks_on_disk = []
    for entry, path, chunk in zip(manifest["chunks"], listed, expected, strict=True):
        content = json.loads(Path(path).read_text())
        chunks_on_disk.append(content)
        # the file's name, the manifest and coffea all agree on the hash of the file's content
        assert Path(path).name == f"{entry['hash']}.json" == entry["file"]
        assert coffea_hash(content) == entry["hash"] == coffea_hash(chunk)
        assert entry["datasets"] == {d: len(v["files"]) for d, v in chunk.items()}
        assert entry["n_files"] == sum(entry["datasets"].values())
    assert chunks_on_disk == expected
    assert sorted(os.listdir(out)) == sorted([*(Path(p).name for p in listed), "manifest.json"])

    # `hash` prints the same digests; the manifest in the glob is recognised and skipped.
    result = cli("hash", *sorted(out.iterdir()))
    assert result.returncode == 0, result.stderr
    printed = dict(line.split("  ", 1)[::-1] for line in result.stdout.splitlines())
    assert printed == {str(out / e["file"]): e["hash"] for e in manifest["chunks"]}


def test_split_options_strategy_datasets_files_per_chunk(tmp_path: Path, fileset_json: Path):
    out = tmp_path / "chunks"
    result = cli(
        "split", fileset_json, "--strategy", "by_dataset", "--files-per-chunk", "2",
        "--datasets", "DY,TT", "--out", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    counts = [entry["datasets"] for entry in manifest["chunks"]]
    # by_dataset never mixes; at most 2 files of a dataset per chunk; Data is left out
    assert counts == [{"DY": 2}, {"DY": 2}, {"DY": 1}, {"TT": 2}, {"TT": 1}]
    assert manifest["options"]["datasets"] == ["DY", "TT"]


def test_split_force_replaces_a_previous_split(tmp_path: Path, fileset_json: Path):
    out = tmp_path / "chunks"
    common = ("--treename", "Events", "--out", out)
    assert cli("split", fileset_json, "--percentage", "50", *common).returncode == 0
    before = tree_of(out)

    again = cli("split", fileset_json, "--percentage", "25", *common)
    assert_usage_error(again, "not empty", "--force")
    assert tree_of(out) == before

    forced = cli("split", fileset_json, "--percentage", "25", *common, "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads((out / "manifest.json").read_text())["n_chunks"] == 4
    assert len(tree_of(out)) == 5
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no staging left over


BAD_FILES = {
    "malformed.json": ('{"DY": {"files": ["a.root"]', "malformed JSON", "line 1"),
    "malformed.yaml": ("DY:\n  files: [a.root\n", "malformed YAML", "line"),
    "list.json": ('["a.root", "b.root"]', "must be a mapping", "got list"),
    "empty.json": ("{}", "no datasets"),
    "nofiles.json": ('{"DY": {"treename": "Events"}}', "'DY'", "no 'files' entry"),
    "filesint.json": ('{"DY": {"files": 3}}', "'DY'", "'files' must be"),
    "badpath.yaml": ("DY:\n  - 12\n", "non-empty string", "12"),
    "badtree.json": ('{"DY": {"files": {"a.root": 5}}}', "a.root", "tree name"),
    "fileset.txt": ("{}", "unsupported file type", ".json"),
    "notgzip.json.gz": ("{}", "gzip"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_split_rejects_bad_input_with_one_line_and_writes_nothing(tmp_path: Path, name: str):
    content, *words = BAD_FILES[name]
    source = tmp_path / name
    source.write_text(content)
    result = cli("split", source, "--out", tmp_path / "chunks")
    assert_usage_error(result, name, *words)
    assert os.listdir(tmp_path) == [name]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--percentage", "30"], ["--percentage", "divide 100"]),
        (["--percentage", "50", "--files-per-chunk", "2"], ["not allowed with"]),
        (["--files-per-chunk", "0"], ["--files-per-chunk", "at least 1"]),
        (["--bogus"], ["unrecognized arguments: --bogus"]),
        (["--strategy", "by_file"], ["invalid choice"]),
        (["--datasets", "DY,Nope"], ["'Nope' not in", "'Data'"]),
        ([], ["'Data'", "without a tree name", "--treename"]),
    ],
)
def test_split_rejects_bad_options(tmp_path: Path, fileset_json: Path, args, words):
    out = tmp_path / "chunks"
    result = cli("split", fileset_json, "--out", out, *args)
    assert_usage_error(result, *words)
    assert not out.exists()


def test_missing_file_and_missing_subcommand(tmp_path: Path):
    assert_usage_error(
        cli("split", tmp_path / "nope.json", "--out", tmp_path / "o"), "no such file"
    )
    assert_usage_error(cli("hash", tmp_path / "nope.json"), "nope.json", "no such file")
    assert_usage_error(cli(), "choose a command")
    assert_usage_error(cli("frobnicate"), "invalid choice")
    assert os.listdir(tmp_path) == []


def test_hash_prints_nothing_when_any_chunk_is_bad(tmp_path: Path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"DY": {"files": {"a.root": "Events"}}}))
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"DY": ["a.root"]}))  # no tree name: not self-contained
    result = cli("hash", good, bare)
    assert_usage_error(result, "bare.json", "cannot hash")


def test_console_script_is_installed(tmp_path: Path, fileset_json: Path):
    exe = shutil.which("chunkwise")
    if exe is None:
        pytest.skip("the chunkwise console script is not on PATH (pip install -e . installs it)")
    result = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("chunkwise ")
    result = subprocess.run([exe, "hash", fileset_json], capture_output=True, text=True)
    assert_usage_error(result, "'Data'")


# ---------------------------------------------------------------------------- run and status


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from chunkwise.examples import make_demo_fileset

    directory = tmp_path_factory.mktemp("files")
    return directory, make_demo_fileset(directory)


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=1))
    return path


def met_sums(output) -> dict[str, float]:
    h = output["MET"]
    return {d: float(h[{"dataset": d}].sum(flow=True)) for d in h.axes["dataset"]}


def test_run_then_status_on_a_fileset_with_bad_files(tmp_path: Path, demo_files):
    from coffea.util import load

    _, fileset = demo_files
    source = write_json(tmp_path / "fileset.json", fileset)
    cache, out, png = tmp_path / "cache", tmp_path / "out.coffea", tmp_path / "met.png"
    split = ("--percentage", "20")

    before = cli("status", source, *split, "--cache", cache)
    assert before.returncode == 1, before.stderr
    assert "(does not exist yet)" in before.stdout
    assert "0/6 (0.0%)" in before.stdout and "0/5 (0.0%)" in before.stdout
    assert not cache.exists()  # status runs nothing and writes nothing

    result = cli(
        "run", source, "--processor", PROCESSOR, *split, "--cache", cache,
        "--output", out, "--plot", png,
    )  # fmt: skip
    # One path is missing and one file is truncated: incomplete, exit status 1.
    assert result.returncode == 1, result.stderr
    assert "INCOMPLETE" in result.stdout
    assert "DYJets_missing.root" in result.stdout and "TTbar_truncated.root" in result.stdout
    assert "83.3%" in result.stdout and "80.0%" in result.stdout
    assert "Traceback" not in result.stderr
    assert "Performed attempt" not in result.stderr  # coffea's retry chatter is kept out
    # Only the good files are in the saved output: 5 x 2000 DYJets and 4 x 1500 TTbar events.
    output = load(out)
    assert met_sums(output) == {"DYJets": 10_000, "TTbar": 6_000}
    assert output["cutflow"]["all events"] == 16_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    after = cli("status", source, *split, "--cache", cache)
    assert after.returncode == 1
    rows = {line.split()[0]: line.split() for line in after.stdout.splitlines()[1:]}
    # dataset  chunks  done  failed  never run  corrupt  files done  files failed
    assert rows["DYJets"][1:6] == ["3", "2", "1", "0", "0"]
    assert rows["DYJets"][6] == "5/6" and rows["DYJets"][8] == "1"
    assert rows["TTbar"][6] == "4/5" and rows["TTbar"][8] == "1"
    assert "2 of 5 chunks are not complete" in after.stdout
    # A failed chunk is not "never run": its bad files are named, with their errors; the
    # missing path is a one-file chunk (lost whole), the truncated one was salvaged.
    failed = [line for line in after.stdout.splitlines() if line.startswith("  failed: ")]
    assert len(failed) == 2
    assert any("DYJets_missing.root" in line and "No such file" in line for line in failed)
    assert any("TTbar_truncated.root" in line for line in failed)

    listed = cli("status", source, *split, "--cache", cache, "--list-incomplete")
    assert listed.returncode == 1
    incomplete = listed.stdout.split()
    assert len(incomplete) == 2 and all(len(h) == 64 for h in incomplete)

    # A second tag in the same cache makes the default ambiguous: status asks for --tag.
    (cache / "OtherProcessor-0123456789abcdef").mkdir()
    ambiguous = cli("status", source, *split, "--cache", cache)
    assert_usage_error(ambiguous, "several tags", "--tag")
    tag = next(line for line in result.stderr.splitlines() if line.startswith("cache: "))
    tag = os.path.basename(tag.removeprefix("cache: "))
    explicit = cli("status", source, *split, "--cache", cache, "--tag", tag)
    assert explicit.stdout == after.stdout

    # The Python API returns what the command prints.
    import chunkwise

    api = chunkwise.status(fileset, cache, tag=tag, percentage=20)
    assert api.summary() + "\n" == after.stdout
    assert (api.datasets["DYJets"].files_done, api.datasets["DYJets"].files) == (5, 6)
    assert not api.complete and sorted(api.incomplete) == sorted(incomplete)

    # A torn entry (say, from a full disk) shows up as corrupt with --verify, and its files as
    # not done; without it, the listed entry counts as done (run verifies it before use).
    # Tear a whole chunk's entry, not one of a salvaged chunk's per-file entries.
    parts = {
        part["hash"]
        for record in (cache / tag).glob("*.salvage.json")
        for part in json.loads(record.read_text())["parts"]
    }
    entry = min(e for e in (cache / tag).glob("*.coffea") if e.stem not in parts)
    entry.write_bytes(entry.read_bytes()[:100])
    listed = cli("status", source, *split, "--cache", cache, "--tag", tag)
    assert "2 of 5 chunks are not complete" in listed.stdout
    torn = cli("status", source, *split, "--cache", cache, "--tag", tag, "--verify")
    assert torn.returncode == 1
    assert "3 of 5 chunks are not complete" in torn.stdout
    (all_row,) = [line.split() for line in torn.stdout.splitlines() if line.startswith("(all)")]
    assert all_row[1:6] == ["5", "2", "2", "0", "1"]  # chunks done failed never-run corrupt
    assert_usage_error(cli("status", source, "--cache", cache, "--tag", "a/b"), "--tag")

    # A record edited by hand does not verify: the command says so in one line, without the
    # source file and line that Python's warnings add, and shows its chunk as never run.
    (record,) = (cache / tag).glob("*.salvage.json")
    record.write_text(record.read_text().replace('"error": "', '"error": "edited '))
    edited = cli("status", source, *split, "--cache", cache, "--tag", tag, "--verify")
    assert edited.returncode == 1
    (line,) = edited.stderr.splitlines()
    assert line.startswith("CorruptCacheEntryWarning: chunkwise: ignoring the salvage record ")
    assert record.name in line and "does not match" in line
    (all_row,) = [line.split() for line in edited.stdout.splitlines() if line.startswith("(all)")]
    assert all_row[1:6] == ["5", "2", "1", "1", "1"]  # the salvaged chunk: never run


def test_batch_workflow_split_run_each_chunk_then_status(tmp_path: Path, demo_files):
    """The README's batch example: one job per chunk file, then `status` over the fileset."""
    _, fileset = demo_files
    broken = ("_missing", "_truncated")
    good = {
        dataset: {
            "files": {
                p: t for p, t in data["files"].items() if not any(map(p.__contains__, broken))
            }
        }
        for dataset, data in fileset.items()
    }
    source = write_json(tmp_path / "good.json", good)
    cache = tmp_path / "cache"

    split = cli("split", source, "--percentage", "50", "--out", tmp_path / "chunks")
    jobs = split.stdout.split()
    assert split.returncode == 0 and len(jobs) == 2

    # Each job runs one chunk file; here one with the futures executor, one iterative.
    first = cli(
        "run", jobs[0], "--processor", PROCESSOR, "--cache", cache,
        "--executor", "futures", "--workers", "1", "--no-progress",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "complete" in first.stdout and "INCOMPLETE" not in first.stdout

    halfway = cli("status", source, "--percentage", "50", "--cache", cache)
    assert halfway.returncode == 1
    assert "1 of 2 chunks are not complete" in halfway.stdout
    missing = cli("status", source, "--percentage", "50", "--cache", cache, "--list-incomplete")
    assert [f"{h}.json" for h in missing.stdout.split()] == [Path(jobs[1]).name]

    second = cli("run", jobs[1], "--processor", PROCESSOR, "--cache", cache, "--no-progress")
    assert second.returncode == 0, second.stderr

    done = cli("status", source, "--percentage", "50", "--cache", cache)
    assert done.returncode == 0, done.stdout
    assert "all 2 chunks are complete" in done.stdout
    assert "9/9 (100.0%)" in done.stdout

    # Running the whole fileset now loads everything from the cache.
    rerun = cli("run", source, "--processor", PROCESSOR, "--percentage", "50", "--cache", cache)
    assert rerun.returncode == 0
    assert "chunks: 2 (0 processed, 2 cached, 0 salvaged, 0 failed)" in rerun.stdout
    assert "files: 9 (0 processed, 9 cached, 0 bad); complete" in rerun.stdout


def test_run_rejects_bad_usage_before_writing_anything(tmp_path: Path, demo_files):
    _, fileset = demo_files
    source = write_json(tmp_path / "fileset.json", fileset)
    outputs = ("--cache", tmp_path / "cache", "--output", tmp_path / "o.coffea")
    cases = [
        (["--processor", "no_such_module:P"], ["no module named 'no_such_module'"]),
        (["--processor", "json:Nope"], ["'json' has no 'Nope'"]),
        (["--processor", "METProcessor"], ["module:Class"]),
        (["--processor", "json:JSONDecoder"], ["not a coffea.processor.ProcessorABC"]),
        (["--processor", PROCESSOR, "--workers", "2"], ["--workers needs"]),
        (["--processor", PROCESSOR, "--scheduler", "tcp://x:1"], ["--scheduler needs"]),
        (["--processor", PROCESSOR, "--plot", tmp_path / "no" / "p.png"], ["does not exist"]),
        (["--processor", PROCESSOR, "--schema", "Nano"], ["unknown schema", "NanoAODSchema"]),
        (["--processor", PROCESSOR, "--executor", "condor"], ["invalid choice"]),
    ]
    for args, words in cases:
        assert_usage_error(cli("run", source, *args, *outputs), *words)
    assert sorted(os.listdir(tmp_path)) == ["fileset.json"]


def test_run_reports_a_processor_bug_with_its_traceback(tmp_path: Path, demo_files):
    _, fileset = demo_files
    one_file = {"DYJets": {"files": dict(list(fileset["DYJets"]["files"].items())[:1])}}
    source = write_json(tmp_path / "fileset.json", one_file)
    (tmp_path / "buggy.py").write_text(
        textwrap.dedent(
            """
            from coffea import processor

            class Buggy(processor.ProcessorABC):
                def process(self, events):
                    raise ZeroDivisionError("a bug in the processor")

                def postprocess(self, accumulator):
                    return accumulator

            class NeedsArgs(Buggy):
                def __init__(self, year):
                    self.year = year
            """
        )
    )
    # The processor module is found in the working directory, as `python -m` users expect.
    result = cli("run", source, "--processor", "buggy:Buggy", "--output", "o.coffea", cwd=tmp_path)
    assert result.returncode == 4  # a bug, told apart from bad files (1) and bad usage (2)
    assert "ZeroDivisionError: a bug in the processor" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("chunkwise run: error:")
    assert not (tmp_path / "o.coffea").exists()

    result = cli("run", source, "--processor", "buggy:NeedsArgs", cwd=tmp_path)
    assert_usage_error(result, "NeedsArgs() failed", "without arguments")


# --------------------------------------------------------------------------------------- demo


def test_demo_runs_salvages_caches_and_draws(tmp_path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image

    directory = tmp_path / "demo"
    result = cli("demo", "--dir", directory)

    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    # 1. the files, with the two broken on purpose
    assert "DYJets: 6 files, broken on purpose: DYJets_missing.root" in text
    assert "TTbar: 5 files, broken on purpose: TTbar_truncated.root" in text
    # 2. per-chunk outcome: the mixed chunk with the missing file was salvaged file by file
    assert "salvaged" in text and "its 2 good files of 3 were kept" in text
    # 3. per-dataset completeness
    assert "83.3%" in text and "80.0%" in text and "INCOMPLETE" in text
    # 4. the second run computes nothing and gives the same histogram
    assert "0 computed" in text and "same histogram as the first run: yes" in text
    assert "Traceback" not in result.stderr
    assert "Performed attempt" not in result.stderr
    assert "Missing cross-reference" not in result.stderr

    png = directory / "met.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 400
    assert image.std() > 0.05  # not a blank canvas

    # The demo's own directory can be reused; a foreign one is refused and left alone.
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    refused = cli("demo", "--dir", foreign)
    assert_usage_error(refused, "not empty", "chunkwise demo")
    assert os.listdir(foreign) == ["thesis.tex"]


# ----------------------------------------------------------------- coffea's preprocessed form


def test_split_and_status_read_a_preprocessed_fileset(tmp_path: Path):
    """coffea's preprocessing writes {path: {"object_path": ..., "steps": ...}} in .json.gz."""
    from coffea.dataset_tools import hash_fileset as coffea_hash

    from chunkwise.chunks import runner_fileset

    preprocessed = {
        "DY": {
            "files": {
                f"/dy/{i}.root": {"object_path": "Events", "steps": [[0, 100]], "num_entries": 100}
                for i in range(4)
            },
            "form": None,
        }
    }
    source = tmp_path / "pre_available.json.gz"
    with gzip.open(source, "wt") as f:
        json.dump(preprocessed, f, indent=2)

    split = cli("split", source, "--files-per-chunk", "2", "--out", tmp_path / "chunks")
    assert split.returncode == 0, split.stderr
    for path in split.stdout.split():
        assert coffea_hash(json.loads(Path(path).read_text())) == Path(path).stem

    # run hands coffea's Runner {path: treename}, but keys the cache by the chunk as it is, so
    # status, run and split agree on every chunk's hash.
    assert runner_fileset(preprocessed)["DY"]["files"] == dict.fromkeys(
        preprocessed["DY"]["files"], "Events"
    )
    status = cli("status", source, "--files-per-chunk", "2", "--cache", tmp_path / "cache")
    assert status.returncode == 1
    assert "0/4 (0.0%)" in status.stdout
    listed = cli(
        "status",
        source,
        "--files-per-chunk",
        "2",
        "--cache",
        tmp_path / "cache",
        "--list-incomplete",
    )
    assert sorted(listed.stdout.split()) == sorted(Path(p).stem for p in split.stdout.split())


def test_report_remaining_and_min_completeness(tmp_path: Path, demo_files):
    """The resubmission loop: run, --report, status --write-remaining, run what remains."""
    _, fileset = demo_files
    fileset = {
        name: {**data, "metadata": {"xsec": 1.5, "name": name}} for name, data in fileset.items()
    }
    source = write_json(tmp_path / "fileset.json", fileset)
    cache, report = tmp_path / "cache", tmp_path / "report.json"
    split = ("--files-per-chunk", "2", "--strategy", "by_dataset")
    never = write_json(tmp_path / "first.json", {"DYJets": fileset["DYJets"]})

    # Only DYJets runs first: TTbar's chunks are never run.
    first = cli("run", never, "--processor", PROCESSOR, *split, "--cache", cache, "--no-progress")
    assert first.returncode == 1, first.stderr

    status = cli(
        "status", source, *split, "--cache", cache, "--write-remaining", tmp_path / "rem.json"
    )
    assert status.returncode == 1
    rows = {line.split()[0]: line.split() for line in status.stdout.splitlines()[1:]}
    assert rows["DYJets"][1:6] == ["3", "2", "1", "0", "0"]  # one chunk salvaged: failed
    assert rows["TTbar"][1:6] == ["3", "0", "0", "3", "0"]  # never run
    remaining = json.loads((tmp_path / "rem.json").read_text())
    # Exactly the files not done: DYJets' missing file and all of TTbar, with their metadata.
    assert list(remaining["DYJets"]["files"]) == [
        p for p in fileset["DYJets"]["files"] if "missing" in p
    ]
    assert remaining["TTbar"]["files"] == fileset["TTbar"]["files"]
    assert remaining["TTbar"]["metadata"] == {"xsec": 1.5, "name": "TTbar"}
    assert "wrote the 6 files not done (2 datasets)" in status.stderr

    # Resubmit what remains (one file per job, as on a batch system), with a JSON report.
    again = cli(
        "run", tmp_path / "rem.json", "--processor", PROCESSOR, "--files-per-chunk", "1",
        "--cache", cache, "--no-progress", "--report", report,
    )  # fmt: skip
    assert again.returncode == 1  # the missing and the truncated file are still bad
    data = json.loads(report.read_text())
    assert data["schema"] == "chunkwise-report/1" and data["complete"] is False
    assert (
        data["datasets"]["TTbar"]["files_ok"] == 4 and data["datasets"]["TTbar"]["files_bad"] == 1
    )
    assert data["datasets"]["DYJets"]["files_ok"] == 0
    assert [os.path.basename(p) for p in data["datasets"]["TTbar"]["bad_files"]] == [
        "TTbar_truncated.root"
    ]
    assert data["counts"]["files"] == {"total": 6, "processed": 4, "cached": 0, "bad": 2}
    assert data["cache"]["directory"].startswith(str(cache))

    # The whole fileset now loads every good file from the cache, computing nothing.
    final = cli("run", source, "--processor", PROCESSOR, *split, "--cache", cache,
                "--no-progress", "--report", report)  # fmt: skip
    assert final.returncode == 1
    data = json.loads(report.read_text())
    assert data["counts"]["files"] == {"total": 11, "processed": 0, "cached": 9, "bad": 2}
    assert {d: v["completeness"] for d, v in data["datasets"].items()} == pytest.approx(
        {"DYJets": 5 / 6, "TTbar": 4 / 5}
    )
    # Good enough, said out loud: exit 0 at 80 %, not at 85 %.
    ok = cli("status", source, *split, "--cache", cache, "--min-completeness", "0.8")
    assert ok.returncode == 0
    assert (
        "INCOMPLETE but accepted (--min-completeness 0.8): DYJets 83.3%, TTbar 80.0%" in ok.stderr
    )
    assert (
        cli("status", source, *split, "--cache", cache, "--min-completeness", "0.85").returncode
        == 1
    )
    run_ok = cli("run", source, "--processor", PROCESSOR, *split, "--cache", cache,
                 "--no-progress", "--min-completeness", "0.8")  # fmt: skip
    assert run_ok.returncode == 0 and "2 bad files are left out" in run_ok.stderr
    assert_usage_error(
        cli("status", source, "--cache", cache, "--min-completeness", "80"), "between 0 and 1"
    )
    assert_usage_error(
        cli("status", source, "--cache", cache, "--write-remaining", source), "input fileset"
    )


def test_the_bar_counts_files_on_stderr(tmp_path: Path, demo_files):
    """The progress display goes to stderr (stdout is the summary), counts files, and has an ETA."""
    _, fileset = demo_files
    source = write_json(tmp_path / "fileset.json", fileset)
    result = cli("run", source, "--processor", PROCESSOR, "--files-per-chunk", "3")
    assert result.returncode == 1
    assert "chunkwise" in result.stderr and "11/11 files" in result.stderr
    assert "2/2 chunks, 2 bad files" in result.stderr and "eta" in result.stderr
    assert "files ·" not in result.stdout
    assert result.stdout.startswith("dataset")


def test_new_user_findings(tmp_path: Path, demo_files):
    """What a new user ran into: a wrong tag looked like "nothing ran"; a chunk of only bad
    files counted as salvaged; a threshold not met said nothing; plot options without --plot."""
    _, fileset = demo_files
    source = write_json(tmp_path / "fileset.json", fileset)
    cache = tmp_path / "cache"
    split = ("--files-per-chunk", "2", "--strategy", "by_dataset")
    run = cli("run", source, "--processor", PROCESSOR, *split, "--cache", cache, "--no-progress")
    assert run.returncode == 1

    wrong = cli("status", source, *split, "--cache", cache, "--tag", "wrongtag")
    assert_usage_error(wrong, "has no tag 'wrongtag'", "METProcessor-")

    below = cli("status", source, *split, "--cache", cache, "--min-completeness", "0.9")
    assert below.returncode == 1
    assert "INCOMPLETE, below --min-completeness 0.9: DYJets 83.3%, TTbar 80.0%" in below.stderr

    report = tmp_path / "r.json"
    accepted = cli("run", source, "--processor", PROCESSOR, *split, "--cache", cache,
                   "--no-progress", "--min-completeness", "0.8", "--report", report)  # fmt: skip
    assert accepted.returncode == 0
    assert (
        "accepted as INCOMPLETE by --min-completeness 0.8"
        in json.loads(report.read_text())["notes"]
    )

    for option in (("--experiment", "ATLAS"), ("--plot-text", "hi"), ("--lumi", "59.8")):
        assert_usage_error(
            cli("run", source, "--processor", PROCESSOR, *option), "give --plot FILE too"
        )
    labelled = cli("run", source, "--processor", PROCESSOR, *split, "--cache", cache,
                   "--no-progress", "--plot", tmp_path / "p.png", "--lumi", "59.8")  # fmt: skip
    assert "--lumi 59.8 labels the plot" in labelled.stderr

    # A chunk whose every file is bad is failed, not salvaged.
    bad = write_json(tmp_path / "bad.json", {"D": {"files": {
        str(tmp_path / "no1.root"): "Events", str(tmp_path / "no2.root"): "Events"}}})  # fmt: skip
    allbad = cli("run", bad, "--processor", PROCESSOR, "--no-progress", "--report", report)
    assert allbad.returncode == 1
    assert "chunks: 1 (0 processed, 0 cached, 0 salvaged, 1 failed)" in allbad.stdout
    assert [c["status"] for c in json.loads(report.read_text())["chunks"]] == ["failed"]


def test_run_opens_its_cache_and_fingerprints_the_processor_once(
    tmp_path: Path, demo_files, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture
):
    """One ``chunkwise run --cache`` derives the tag (fingerprinting the processor) once and
    opens and prepares its cache once; the temporaries a killed run left are removed then, and
    the note saying so reaches the output."""
    from chunkwise.cli import main

    _, fileset = demo_files
    small = {"TTbar": {"files": dict(list(fileset["TTbar"]["files"].items())[:2])}}
    source = write_json(tmp_path / "fileset.json", small)
    cache = tmp_path / "cache"
    args = ["run", str(source), "--processor", PROCESSOR, "--cache", str(cache), "--no-progress"]
    assert main(args) == 0
    (tag_dir,) = [p for p in cache.iterdir() if p.is_dir()]
    leftover = tag_dir / f".{'0' * 64}.coffea.k1lled.tmp"  # what a run killed mid-write leaves
    leftover.write_bytes(b"torn")
    os.utime(leftover, (1e9, 1e9))
    capsys.readouterr()
    calls = request.getfixturevalue("opening_counts")  # counted from here on

    assert main(args) == 0
    out = capsys.readouterr().out
    assert calls == {"tag": 1, "open": 1, "clean": 1}, calls
    assert not leftover.exists()
    assert f"removed 1 temporary files that killed runs left in {tag_dir}" in out
    assert "chunks: 1 (0 processed, 1 cached" in out


def test_an_unreachable_scheduler_is_one_line_and_nothing_is_written(tmp_path: Path, demo_files):
    _, fileset = demo_files
    source = write_json(tmp_path / "fileset.json", fileset)
    cache = tmp_path / "cache"
    result = cli(
        "run", source, "--processor", PROCESSOR, "--cache", cache,
        "--executor", "dask", "--scheduler", "tcp://127.0.0.1:1",
    )  # fmt: skip
    assert_usage_error(result, "--scheduler 'tcp://127.0.0.1:1': cannot connect")
    assert not cache.exists()  # the executor is started before the cache is opened


def test_output_cut_short_by_its_reader_is_no_error(tmp_path: Path) -> None:
    """``chunkwise split ... | head -1``: the reader goes away, and the command says nothing of
    it (it used to print 'error: Broken pipe' and exit 2)."""
    fileset = tmp_path / "big.json"
    fileset.write_text(
        json.dumps({"D": {"files": {f"/x/{i}.root": "Events" for i in range(5000)}}})
    )
    script = (
        f"{sys.executable} -m chunkwise split {fileset} --files-per-chunk 1 --out {tmp_path / 'c'}"
        " 2>err.txt | head -n 1 >/dev/null; echo ${PIPESTATUS[0]}"
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)  # fmt: skip
    assert done.stdout.strip() == "0"
    assert (tmp_path / "err.txt").read_text() == ""
    assert len(list((tmp_path / "c").glob("*.json"))) == 5001  # every chunk and the manifest
