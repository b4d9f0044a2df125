"""Bad input gets one clear line and loses nothing (issue 8).

A fileset file that would cost gigabytes (YAML alias bombs), crash the parser (nesting
100,000 deep) or silently lose data (a dataset or file path written twice) is refused with one
line that names the file and what to do. A chunk file edited after ``split`` gets a warning, and
``split --force`` replaces only a directory that ``split`` made and never one holding its input.

CLI tests run ``python -m chunkwise`` as a subprocess, like tests/test_cli.py; loader tests call
``load_fileset`` on real files.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from chunkwise import filesets
from chunkwise.filesets import MAX_DEPTH, FilesetError, load_fileset, name_mismatch


def cli(
    *args: str | os.PathLike[str], cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``python -m chunkwise ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "chunkwise", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
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


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (hidden ones too) with its content."""
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def load_error(path: Path) -> str:
    with pytest.raises(FilesetError) as info:
        load_fileset(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


# Both YAML loaders: on libyaml's parser (when PyYAML has it) and on PyYAML's pure Python one.
LOADERS = [pytest.param(True, id="libyaml"), pytest.param(False, id="pure-python")]

FILESET = {
    "DY": {
        "files": {f"root://eos.example//dy/{i}.root": "Events" for i in (3, 0, 4, 1, 2)},
        "metadata": {"xsec": 6077.2, "is_mc": True, "tags": ["a", "b"]},
    },
    "Data": {"files": [f"/data/run{i}.root" for i in range(4)], "treename": "Events"},
    "TT": [f"/tt/{i}.root" for i in range(3)],
}


# ----------------------------------------------------------------- ordinary filesets unchanged


def same(a: object, b: object) -> bool:
    """Equal, with the same key order at every level."""
    return a == b and json.dumps(a) == json.dumps(b)


def test_ordinary_filesets_load_exactly_as_before(tmp_path: Path):
    preprocessed = {
        "DY": {
            "files": {
                f"/dy/{i}.root": {
                    "object_path": "Events",
                    "steps": [[0, 50], [50, 100]],
                    "num_entries": 100,
                    "uuid": f"u{i}",
                }
                for i in (2, 0, 1)
            },
            "form": None,
            "metadata": None,
        }
    }
    for name, data in [("plain", FILESET), ("pre", preprocessed)]:
        (tmp_path / f"{name}.json").write_text(json.dumps(data, indent=2))
        with gzip.open(tmp_path / f"{name}.json.gz", "wt") as f:
            json.dump(data, f)
        for suffix in (".json", ".json.gz"):
            assert same(load_fileset(tmp_path / f"{name}{suffix}"), data)

    # YAML, as before: what yaml.safe_load gives, passed through JSON (int keys become strings).
    text = yaml.dump(FILESET, sort_keys=False) + "Extra:\n  files: {a.root: Events}\n"
    text += "  metadata: {1: one, 2.5: x, null: n, nested: {b: 1, a: 2}}\n"
    expected = json.loads(json.dumps(yaml.safe_load(text)))
    assert list(expected["Extra"]["metadata"]) == ["1", "2.5", "null", "nested"]
    for suffix in (".yaml", ".yml"):
        (tmp_path / f"f{suffix}").write_text(text)
        assert same(load_fileset(tmp_path / f"f{suffix}"), expected)
    for c in (True, False):
        assert same(filesets._parse_yaml("f.yaml", text, c=c), expected)

    # An anchor alone is harmless; brackets, braces and escaped quotes in strings do not nest.
    (tmp_path / "anchor.yaml").write_text("DY: &dy\n  files: {a.root: Events}\n")
    assert load_fileset(tmp_path / "anchor.yaml") == {"DY": {"files": {"a.root": "Events"}}}
    odd = {"D[{": {"files": {"[" * 300 + '\\"]{"' + "{" * 300 + ".root": "Events"}}}
    (tmp_path / "odd.json").write_text(json.dumps(odd))
    assert same(load_fileset(tmp_path / "odd.json"), odd)


# --------------------------------------------------------------------- 1. YAML aliases refused

# The "billion laughs": 9 levels of 9 aliases, a few hundred bytes that expand to 9**9 strings.
BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.mark.parametrize("c", LOADERS)
def test_yaml_alias_bomb_fails_at_once(tmp_path: Path, c: bool):
    assert len(BOMB.encode()) < 600
    start = time.perf_counter()
    with pytest.raises(FilesetError) as info:
        filesets._parse_yaml("bomb.yaml", BOMB, c=c)
    assert time.perf_counter() - start < 2
    assert str(info.value) == (
        "bomb.yaml: line 2, column 8: YAML aliases (*a) are not supported in filesets; "
        "write the value out"
    )


@pytest.mark.parametrize("c", LOADERS)
def test_yaml_aliases_and_merge_keys_are_refused(c: bool):
    shared = "common: &c {a.root: Events}\nDY:\n  files: *c\n"
    with pytest.raises(FilesetError, match=r"line 3, column 10: YAML aliases \(\*c\)"):
        filesets._parse_yaml("f.yaml", shared, c=c)
    merged = "base: &b {treename: Events}\nDY:\n  <<: *b\n  files: [a.root]\n"
    with pytest.raises(FilesetError, match=r"line 3, column 7: YAML aliases \(\*b\)"):
        filesets._parse_yaml("f.yaml", merged, c=c)


def test_cli_refuses_the_alias_bomb_with_one_line(tmp_path: Path):
    source = tmp_path / "bomb.yaml"
    source.write_text(BOMB)
    start = time.perf_counter()
    # Before, this took 2.5 GB and 25 s: the timeout turns a regression into a failure.
    result = cli("split", source, "--out", tmp_path / "chunks", timeout=60)
    elapsed = time.perf_counter() - start
    assert_usage_error(result, "bomb.yaml", "line 2, column 8", "YAML aliases (*a)")
    assert elapsed < 20  # interpreter start-up included; the refusal itself takes milliseconds
    assert os.listdir(tmp_path) == ["bomb.yaml"]
    assert_usage_error(cli("hash", source, timeout=60), "YAML aliases (*a)")


# ---------------------------------------------------------------------- 2. nesting is bounded


def nested_fileset(levels: int) -> dict:
    """A valid fileset whose deepest value sits ``levels`` mappings and lists down."""
    value: object = "x"
    for _ in range(levels - 3):  # the fileset, "DY" and "metadata" are the first three levels
        value = [value]
    return {"DY": {"files": {"a.root": "Events"}, "metadata": {"deep": value}}}


def write(path: Path, text: str) -> Path:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("suffix", [".json", ".json.gz", ".yaml"])
def test_nesting_up_to_the_limit_loads_and_one_more_level_is_refused(tmp_path: Path, suffix):
    dump = json.dumps if suffix.startswith(".json") else yaml.dump
    ok = write(tmp_path / f"ok{suffix}", dump(nested_fileset(MAX_DEPTH)))
    assert load_fileset(ok) == nested_fileset(MAX_DEPTH)
    deep = write(tmp_path / f"deep{suffix}", dump(nested_fileset(MAX_DEPTH + 1)))
    assert "nested deeper than 100 levels" in load_error(deep)


DEEP = {
    "deep.json": "[" * 100_000 + "]" * 100_000,
    "deep_objects.json": '{"a": ' * 100_000 + "1" + "}" * 100_000,
    "deep_unclosed.json": '{"DY": ' + "[" * 100_000,
    "deep.json.gz": "[" * 100_000 + "]" * 100_000,
    "deep_flow.yaml": "[" * 100_000 + "]" * 100_000,
    "deep_block.yaml": "".join(" " * i + f"k{i}:\n" for i in range(0, 400, 2)) + " " * 400 + "x\n",
    "deep_block_sequence.yaml": "- " * 100_000 + "x\n",
}


@pytest.mark.parametrize("name", sorted(DEEP))
def test_a_100000_deep_file_gets_one_line_not_a_recursion_error(tmp_path: Path, name: str):
    source = write(tmp_path / name, DEEP[name])
    start = time.perf_counter()
    message = load_error(source)
    assert time.perf_counter() - start < 2
    assert "nested deeper than 100 levels" in message
    if name.endswith(".yaml"):
        assert "line " in message  # YAML knows where: the first collection too deep

    result = cli("split", source, "--out", tmp_path / "chunks")
    assert_usage_error(result, name, "nested deeper than 100 levels")
    assert os.listdir(tmp_path) == [name]


@pytest.mark.parametrize("c", LOADERS)
@pytest.mark.parametrize("depth", [101, 999, 1_001, 100_000])
def test_yaml_depth_is_bounded_with_both_loaders(c: bool, depth: int):
    # The bound is chunkwise's own: the same line wherever the parser's limits lie (libyaml
    # has had one of 1000 since 0.2.6, PyYAML's Python parser has none).
    flow = "[" * depth + "]" * depth
    with pytest.raises(FilesetError, match="^f.yaml: line 1, column 101: nested deeper than 100"):
        filesets._parse_yaml("f.yaml", flow, c=c)
    block = "- " * depth + "x\n"
    with pytest.raises(FilesetError, match="^f.yaml: line 1, column 201: nested deeper than 100"):
        filesets._parse_yaml("f.yaml", block, c=c)


MALFORMED_YAML = {
    "an unclosed flow sequence": ("DY:\n  files: [a.root\n", 3, 1),
    "a tab where indentation goes": ("DY:\n  files:\n\t- a.root\n", 3, 1),
    "a mapping inside a plain value": ("DY: files: a.root\n", 1, 10),
    "a sequence closed by a brace": ("DY: {files: [a.root}\n", 1, 20),
}


@pytest.mark.parametrize("c", LOADERS)
@pytest.mark.parametrize("what", sorted(MALFORMED_YAML))
def test_a_document_the_yaml_parser_rejects_is_one_line_with_its_place(c: bool, what: str):
    text, line, column = MALFORMED_YAML[what]
    with pytest.raises(FilesetError) as info:
        filesets._parse_yaml("f.yaml", text, c=c)
    message = str(info.value)
    assert message.startswith(f"f.yaml: malformed YAML at line {line}, column {column}: ")
    assert message.endswith("; fix the file") and "\n" not in message


# ----------------------------------------------------------------- 3. a name written twice


DUPLICATES = {
    "dup.json": (
        '{"DY": {"files": {"a.root": "Events"}}, "TT": ["t.root"],\n'
        ' "DY": {"files": {"b.root": "Events"}}}',
        "dup.json: dataset 'DY' appears twice; merge its files into one entry",
    ),
    "dupfile.json": (
        '{"DY": {"files": {"a.root": "Events", "b.root": "Events", "a.root": "Other"}}}',
        "dupfile.json: dataset 'DY': file 'a.root' appears twice; keep one entry",
    ),
    "dup.yaml": (
        "DY:\n  files: {a.root: Events}\nTT: [t.root]\nDY:\n  files: {b.root: Events}\n",
        "dup.yaml: line 4, column 1: dataset 'DY' appears twice; merge its files into one entry",
    ),
    "dupfile.yaml": (
        "DY:\n  files:\n    a.root: Events\n    b.root: Events\n    a.root: Other\n",
        "dupfile.yaml: line 5, column 5: dataset 'DY': file 'a.root' appears twice; keep one entry",
    ),
}


@pytest.mark.parametrize("name", sorted(DUPLICATES))
def test_a_dataset_or_file_written_twice_is_named(tmp_path: Path, name: str):
    text, expected = DUPLICATES[name]
    source = write(tmp_path / name, text)
    assert load_error(source) == str(source.parent / expected)
    if name.endswith(".yaml"):
        for c in (True, False):
            with pytest.raises(FilesetError) as info:
                filesets._parse_yaml(name, text, c=c)
            assert str(info.value) == expected

    result = cli("split", source, "--treename", "Events", "--out", tmp_path / "chunks")
    assert_usage_error(result, expected.split(": ", 1)[1])
    assert os.listdir(tmp_path) == [name]
    assert_usage_error(cli("hash", source), "appears twice")


def test_other_keys_twice_are_refused_too(tmp_path: Path):
    cases = {
        "files.json": ('{"DY": {"files": ["a"], "files": ["b"]}}', "dataset 'DY': 'files'"),
        "meta.json": ('{"DY": {"files": ["a"], "metadata": {"x": 1, "x": 2}}}', "key 'x'"),
        "meta.yaml": ("DY:\n  files: [a]\n  metadata: {x: 1, x: 2}\n", "column 20: key 'x'"),
        # YAML tells 1 and '1' apart, JSON (and so the chunk files) does not
        "clash.yaml": ("DY:\n  files: [a]\n  metadata: {1: a, '1': b}\n", "key '1'"),
    }
    for name, (text, words) in cases.items():
        message = load_error(write(tmp_path / name, text))
        assert words in message and "appears twice" in message, message


# ------------------------------------------------------- 4. a chunk file edited after split


def test_hash_and_run_warn_about_a_chunk_file_edited_after_split(tmp_path: Path):
    from chunkwise.examples import make_demo_fileset

    fileset = make_demo_fileset(tmp_path / "files")
    broken = ("_missing", "_truncated")
    good = {
        dataset: {
            "files": {p: t for p, t in data["files"].items() if not Path(p).stem.endswith(broken)}
        }
        for dataset, data in fileset.items()
    }
    source = tmp_path / "fileset.json"
    source.write_text(json.dumps(good))
    split = cli("split", source, "--out", tmp_path / "chunks")
    assert split.returncode == 0, split.stderr
    (chunk_path,) = split.stdout.split()
    chunk = Path(chunk_path)
    name_hash = chunk.stem

    # Untouched, or only re-indented: the content still hashes to the name, no warning.
    chunk.write_text(json.dumps(json.loads(chunk.read_text()), indent=4))
    result = cli("hash", chunk)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout == f"{name_hash}  {chunk}\n"

    # Edited: drop a file from the first dataset. It is now cached under another hash.
    content = json.loads(chunk.read_text())
    first = next(iter(content.values()))["files"]
    first.pop(next(iter(first)))
    chunk.write_text(json.dumps(content))
    result = cli("hash", chunk)
    assert result.returncode == 0, result.stderr
    new_hash, printed_path = result.stdout.split()
    assert printed_path == str(chunk) and new_hash != name_hash
    assert result.stderr.splitlines() == [
        f"chunkwise: warning: {chunk} was edited after split: its content hashes to "
        f"{new_hash[:16]}\u2026, so it is cached under that hash, not its name"
    ]

    # One bad file among them: only its error line, no warning, nothing on stdout.
    bad = tmp_path / "bad.json"
    bad.write_text('{"DY": ["a.root"]}')
    assert_usage_error(cli("hash", chunk, bad), "bad.json", "cannot hash")

    # `run` warns the same way and still runs the chunk, cached under its content's hash.
    cache = tmp_path / "cache"
    run = cli(
        "run", chunk, "--processor", "chunkwise.examples:METProcessor", "--cache", cache,
        "--no-progress",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"{chunk} was edited after split" in run.stderr
    assert f"hashes to {new_hash[:16]}" in run.stderr
    cached = {p.stem.split(".")[0] for p in cache.rglob("*") if p.is_file()}
    assert new_hash in cached and name_hash not in cached


def test_name_mismatch_only_checks_names_that_split_writes():
    digest, other = "ab" * 32, "cd" * 32
    assert name_mismatch(f"chunks/{digest}.json", digest) is None
    assert "was edited after split" in name_mismatch(f"chunks/{digest}.json", other)
    for name in (f"{digest.upper()}.json", f"{digest}.json.gz", f"{digest[:-1]}.json", "f.json"):
        assert name_mismatch(name, other) is None


# ------------------------------------------- 5. --force replaces only what split itself made


def split_ok(*args: str | os.PathLike[str], cwd: Path | None = None) -> list[str]:
    result = cli("split", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_split_force_never_deletes_its_input(tmp_path: Path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "fileset.json").write_text(json.dumps(FILESET))
    (project / "analysis.py").write_text("print('my work')\n")
    (project / "notes").mkdir()
    (project / "notes" / "todo.txt").write_text("everything\n")
    # A manifest, as if an earlier split had written to the project directory itself.
    chunks = split_ok("fileset.json", "--treename", "Events", "--out", "chunks", cwd=project)
    (project / "manifest.json").write_bytes((project / "chunks" / "manifest.json").read_bytes())
    before = snapshot(tmp_path)

    for args in (["--force"], []):
        result = cli(
            "split", "fileset.json", "--treename", "Events", "--out", ".", *args, cwd=project
        )
        assert_usage_error(result, "holds the input fileset 'fileset.json'", "never deletes")
        assert snapshot(tmp_path) == before

    # A chunk file split again into its own directory: also its input.
    result = cli("split", chunks[0], "--files-per-chunk", "1", "--out", "chunks", "--force",
                 cwd=project)  # fmt: skip
    assert_usage_error(result, "holds the input fileset", "never deletes its input")
    # ... also when the input is reached through a symbolic link from outside.
    link = tmp_path / "link.json"
    link.symlink_to(project / chunks[0])
    result = cli("split", link, "--out", project / "chunks", "--force")
    assert_usage_error(result, "holds the input fileset", "never deletes its input")
    link.unlink()
    assert snapshot(tmp_path) == before


def test_split_force_refuses_a_directory_split_did_not_make(tmp_path: Path):
    source = tmp_path / "fileset.json"
    source.write_text(json.dumps(FILESET))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.txt").write_text("a week of work\n")
    before = snapshot(tmp_path)

    forced = cli("split", source, "--treename", "Events", "--out", mine, "--force")
    assert_usage_error(
        forced, "was not made by 'chunkwise split'", "manifest.json", "never deletes what it did"
    )
    plain = cli("split", source, "--treename", "Events", "--out", mine)
    assert_usage_error(plain, "is not empty; choose a new directory")
    assert "--force" not in plain.stderr  # no hint to force a directory it will not replace
    assert snapshot(tmp_path) == before

    # A real split, with a file of the user's put in afterwards: that file is not split's.
    chunks = tmp_path / "chunks"
    split_ok(source, "--treename", "Events", "--percentage", "50", "--out", chunks)
    (chunks / "jobs.txt").write_text("job list\n")
    before = snapshot(tmp_path)
    forced = cli("split", source, "--treename", "Events", "--out", chunks, "--force")
    assert_usage_error(forced, "holds 'jobs.txt', which 'chunkwise split' does not write")
    assert snapshot(tmp_path) == before

    # Without it, the directory is split's own and --force replaces it.
    (chunks / "jobs.txt").unlink()
    listed = split_ok(source, "--treename", "Events", "--percentage", "25", "--out", chunks,
                      "--force")  # fmt: skip
    assert sorted(os.listdir(chunks)) == sorted([*(Path(p).name for p in listed), "manifest.json"])
    assert sorted(os.listdir(tmp_path)) == ["chunks", "fileset.json", "mine"]
