"""A cache you can trust: what chunkwise reads from disk, and what it does when the disk fails.

Each test reproduces a row of the table in issue 8 (what a new user, or an attacker on the same
machine, could do) and shows the fix. Another user is a real one (``nobody``, through
``setpriv``), a full or read-only disk is a real tmpfs; those tests skip, saying why, when not
run as root.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lz4.frame
import pytest
from coffea import processor
from coffea.nanoevents import NanoAODSchema

import chunkwise
from chunkwise.cache import (
    CACHE_FORMAT,
    RECORD_FORMAT,
    CacheError,
    ChunkCache,
    CorruptCacheEntryWarning,
    load_key,
)
from chunkwise.examples import METProcessor, write_nanoaod_like
from chunkwise.tag import cache_tag, tag_manifest

pytestmark = [
    pytest.mark.filterwarnings("ignore:Missing cross-reference index"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root: setpriv and mount act as others")
NOBODY = 65534


def runner() -> Any:
    return processor.Runner(
        processor.IterativeExecutor(retries=0), schema=NanoAODSchema, skipbadfiles=True
    )


@pytest.fixture(scope="module")
def fileset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("trust")
    paths = [str(write_nanoaod_like(directory / f"f{i}.root", 100, seed=i)) for i in range(4)]
    return {"D": {"files": dict.fromkeys(paths, "Events")}}


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory under /tmp that every user may write to (tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="chunkwise-trust-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_nobody(script: str, cwd: Path) -> None:
    """Run a shell script as the user nobody (root's Python is not theirs to run)."""
    subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
         "sh", "-ec", textwrap.dedent(script)],
        cwd=cwd, check=True, timeout=60,
    )  # fmt: skip


def evil_entry(marker: Path) -> bytes:
    """An LZ4-framed pickle that, when unpickled, creates ``marker``: what an attacker plants."""

    class Evil:
        def __reduce__(self) -> Any:
            return (open, (str(marker), "w"))

    return lz4.frame.compress(pickle.dumps(Evil()), content_checksum=True, store_size=True)


# -- another user's cache -------------------------------------------------------------------
@needs_root
def test_another_users_cache_is_refused_before_any_work(
    fileset: dict[str, Any], open_dir: Path
) -> None:
    chunks = chunkwise.split_fileset(fileset, files_per_chunk=2)
    tag = cache_tag(METProcessor(), runner())
    marker = open_dir / "pwned"
    blob = evil_entry(marker)
    (open_dir / "blob").write_bytes(blob)
    names = " ".join(f"{chunkwise.hash_fileset(c)}.coffea" for c in chunks)
    as_nobody(
        f"""
        umask 0
        mkdir -p cache/{tag}
        chmod 1777 cache cache/{tag}
        for name in {names}; do cp blob cache/{tag}/$name; done
        """,
        open_dir,
    )
    assert (open_dir / "cache").stat().st_uid == NOBODY
    with pytest.raises(CacheError, match="owned by user 'nobody'.*never loads pickles"):
        chunkwise.run(fileset, METProcessor(), runner(), files_per_chunk=2,
                      cache=open_dir / "cache", progress=False)  # fmt: skip
    assert not marker.exists()

    # the command line: one line, exit 2, nothing run or unpickled
    source = open_dir / "fileset.json"
    source.write_text(json.dumps(fileset))
    result = subprocess.run(
        [sys.executable, "-m", "chunkwise", "run", str(source), "--files-per-chunk", "2",
         "--processor", "chunkwise.examples:METProcessor", "--cache", str(open_dir / "cache"),
         "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "owned by user 'nobody'" in result.stderr
    assert not marker.exists()


def test_a_group_writable_cache_of_your_own_is_refused(
    fileset: dict[str, Any], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o775)
    with pytest.raises(CacheError, match=r"writable by group or others \(mode 775\).*chmod go-w"):
        chunkwise.run(fileset, METProcessor(), runner(), cache=cache, progress=False)
    with pytest.raises(CacheError, match="writable by group or others"):
        chunkwise.status(fileset, cache)


def test_a_file_without_chunkwise_bookkeeping_is_never_unpickled(
    fileset: dict[str, Any], tmp_path: Path
) -> None:
    cache, marker = tmp_path / "cache", tmp_path / "pwned"
    tag = cache_tag(METProcessor(), runner())
    (chunk,) = chunkwise.split_fileset(fileset)
    (cache / tag).mkdir(parents=True, mode=0o700)
    (cache / tag / f"{chunkwise.hash_fileset(chunk)}.coffea").write_bytes(evil_entry(marker))
    with pytest.warns(CorruptCacheEntryWarning, match="no chunkwise footer"):
        report = chunkwise.run(fileset, METProcessor(), runner(), cache=cache, progress=False)
    assert not marker.exists()
    assert report.n_processed == 1 and report.complete  # recomputed, and overwritten
    assert ChunkCache(cache, tag).load(chunkwise.hash_fileset(chunk)).hit


# -- a cache shared with a key -------------------------------------------------------------
@needs_root
def test_a_shared_cache_with_a_key(fileset: dict[str, Any], open_dir: Path) -> None:
    key_file = open_dir / "key"
    key_file.write_bytes(os.urandom(32).hex().encode())
    key_file.chmod(0o640)
    as_nobody("umask 0; mkdir shared; chmod 2777 shared", open_dir)
    shared, marker = open_dir / "shared", open_dir / "pwned"
    key = load_key(key_file)

    # refused without the key (another user's, world-writable), accepted with it
    with pytest.raises(CacheError, match="owned by user 'nobody'"):
        chunkwise.run(fileset, METProcessor(), runner(), cache=shared, progress=False)
    first = chunkwise.run(
        fileset, METProcessor(), runner(), files_per_chunk=2, cache=shared, cache_key=key,
        progress=False,
    )  # fmt: skip
    assert first.n_processed == 2

    # an entry planted by someone without the key, in chunkwise's own format, is rejected
    # before anything is unpickled
    tag = first.cache.tag
    victim = next((shared / tag).glob("*.coffea"))
    forged = ChunkCache(shared, tag).encode_pickled(
        victim.stem, lz4.frame.decompress(evil_entry(marker)), {}
    )
    victim.write_bytes(forged)
    with pytest.warns(CorruptCacheEntryWarning, match="digest does not match"):
        second = chunkwise.run(
            fileset, METProcessor(), runner(), files_per_chunk=2, cache=shared, cache_key=key,
            progress=False,
        )  # fmt: skip
    assert not marker.exists()
    assert (second.n_cached, second.n_processed) == (1, 1)

    # a wrong key authenticates nothing
    with pytest.warns(CorruptCacheEntryWarning):
        third = chunkwise.run(
            fileset, METProcessor(), runner(), files_per_chunk=2, cache=shared,
            cache_key=b"another key of 32 bytes, not it!", progress=False,
        )  # fmt: skip
    assert third.n_cached == 0

    key_file.chmod(0o644)
    with pytest.raises(CacheError, match="readable by everyone"):
        load_key(key_file)


# -- files that are not entries ------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fifo", "symlink-to-dev-zero", "directory"])
def test_an_entry_that_is_not_a_regular_file_is_not_read(
    kind: str, fileset: dict[str, Any], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    tag = cache_tag(METProcessor(), runner())
    (chunk,) = chunkwise.split_fileset(fileset)
    entry = cache / tag / f"{chunkwise.hash_fileset(chunk)}.coffea"
    entry.parent.mkdir(parents=True, mode=0o700)
    if kind == "fifo":
        os.mkfifo(entry)
    elif kind == "directory":
        entry.mkdir()
    else:
        entry.symlink_to("/dev/zero")
    start = time.monotonic()
    status = chunkwise.status(fileset, cache)
    assert status.overall.corrupt == 1 and time.monotonic() - start < 10
    if kind == "directory":
        return  # os.replace cannot put an entry over a directory: the run reports it
    with pytest.warns(CorruptCacheEntryWarning, match="not read"):
        report = chunkwise.run(fileset, METProcessor(), runner(), cache=cache, progress=False)
    assert report.complete and report.n_processed == 1 and report.cache_problem is None
    assert entry.is_file() and not entry.is_symlink()  # replaced by a real entry


# -- records that do not fit ----------------------------------------------------------------
@pytest.mark.parametrize("damage", ["no-parts", "parts-twice", "foreign-bad-file"])
def test_a_salvage_record_that_does_not_fit_is_ignored(
    damage: str, fileset: dict[str, Any], tmp_path: Path
) -> None:
    paths = list(fileset["D"]["files"])
    missing = str(tmp_path / "missing.root")
    broken = {"D": {"files": dict.fromkeys([*paths, missing], "Events")}}
    cache = tmp_path / "cache"
    first = chunkwise.run(broken, METProcessor(), runner(), cache=cache, progress=False)
    (record,) = first.chunks
    assert record.status == "salvaged" and first.events == {"D": 400}

    # a record that verifies (written by chunkwise itself) but does not fit its chunk
    saved = first.cache.load_salvage(record.hash)
    if damage == "no-parts":
        saved.parts = []
    elif damage == "parts-twice":
        saved.parts = saved.parts + saved.parts
    else:
        saved.bad_files = {"D": {"/elsewhere/x.root": "bad"}}
    first.cache.save_salvage(saved)

    with pytest.warns(CorruptCacheEntryWarning, match="ignoring the salvage record of chunk"):
        again = chunkwise.run(broken, METProcessor(), runner(), cache=cache, progress=False)
    # never "complete" with half (or double) the events: the chunk is run again
    assert again.events == {"D": 400} and not again.complete
    assert set(again.bad_files["D"]) == {missing}
    assert again.completeness == {"D": 4 / 5}
    status = chunkwise.status(broken, cache)
    assert status.datasets["D"].files_done in (0, 4)  # a misfit record counts nothing


# -- temporary files of killed writers -----------------------------------------------------
def test_stale_temporaries_are_shown_and_removed_but_not_a_live_writers(
    fileset: dict[str, Any], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = chunkwise.run(fileset, METProcessor(), runner(), cache=cache, progress=False)
    directory = first.cache.directory
    stale = directory / f".{'a' * 64}.coffea.x1y2z3.tmp"
    stale.write_bytes(b"\x04\x22\x4d\x18 torn by a kill")
    live = directory / f".{'b' * 64}.coffea.q9w8e7.tmp"
    live.write_bytes(b"being written")
    fresh = directory / f".{'c' * 64}.coffea.r5t6y7.tmp"
    fresh.write_bytes(b"just created")
    old = time.time() - 3600
    for path in (stale, live):
        os.utime(path, (old, old))
    unrelated = directory / ".my-own-notes.tmp"  # not chunkwise's: never touched
    unrelated.write_text("mine")
    os.utime(unrelated, (old, old))

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, time; f = open(sys.argv[1], 'rb'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
         str(live)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        status = chunkwise.status(fileset, cache)
        assert status.stale_temporaries == 1
        assert "1 temporary files of killed runs" in status.summary()
        report = chunkwise.run(fileset, METProcessor(), runner(), cache=cache, progress=False)
        assert any("removed 1 temporary files" in note for note in report.notes)
        assert not stale.exists() and live.exists() and fresh.exists() and unrelated.exists()
    finally:
        holder.kill()
        holder.wait()
    with open(live, "rb") as f:  # the lock died with its holder: now it is stale
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert chunkwise.status(fileset, cache).stale_temporaries == 1


# -- the disk ------------------------------------------------------------------------------
@needs_root
def test_a_full_disk_mid_run_is_a_cache_problem_and_the_result_is_kept(
    fileset: dict[str, Any], tmpfs: Path, tmp_path: Path
) -> None:
    cache = tmpfs / "cache"
    tag = cache_tag(METProcessor(), runner())
    ChunkCache(cache, tag).prepare()
    free = shutil.disk_usage(tmpfs).free
    (tmpfs / "filler").write_bytes(b"\0" * (free - 3 * 4096))  # room for about two entries

    report = chunkwise.run(
        fileset, METProcessor(), runner(), files_per_chunk=1, cache=cache, progress=False
    )
    on_disk = len(list((cache / tag).glob("*.coffea")))
    assert 0 < on_disk < 4
    assert report.cache_problem is not None
    assert "No space left on device" in report.cache_problem
    assert f"{on_disk} of 4 entries were saved" in report.cache_problem
    assert report.complete and report.output["cutflow"]["all events"] == 400
    assert not list((cache / tag).glob(".*.tmp"))  # failed writes leave nothing behind

    # the command line: a warning line, the output still written, exit 3
    (tmpfs / "filler").unlink()
    shutil.rmtree(cache)
    ChunkCache(cache, tag).prepare()
    (tmpfs / "filler").write_bytes(b"\0" * (shutil.disk_usage(tmpfs).free - 3 * 4096))
    source, out = tmp_path / "fileset.json", tmp_path / "out.coffea"
    source.write_text(json.dumps(fileset))
    result = subprocess.run(
        [sys.executable, "-m", "chunkwise", "run", str(source), "--files-per-chunk", "1",
         "--processor", "chunkwise.examples:METProcessor", "--cache", str(cache),
         "--output", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "the cache could not be written (No space left on device" in result.stderr
    assert "Traceback" not in result.stderr and "processor" not in result.stderr
    assert out.is_file()


@needs_root
def test_a_read_only_cache_fails_before_any_work(fileset: dict[str, Any], tmp_path: Path) -> None:
    mount = tmp_path / "ro"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,mode=0700", "tmpfs", str(mount)],
        capture_output=True, text=True,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        with pytest.raises(CacheError, match="Read-only file system"):
            chunkwise.run(fileset, METProcessor(), runner(), cache=mount, progress=False)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize(
    ("cache", "words"),
    [
        ("/proc/chunkwise-cache", "cannot create it"),
        ("{file}/sub", "a part of this path is a file"),
        ("{file}", "is a file"),
    ],
)
def test_an_unusable_cache_is_one_line_before_any_work(
    cache: str, words: str, fileset: dict[str, Any], tmp_path: Path
) -> None:
    a_file = tmp_path / "afile"
    a_file.write_text("not a cache")
    cache = cache.format(file=a_file)
    log = tmp_path / "processed.log"
    module = tmp_path / "logging_processor.py"
    module.write_text(
        textwrap.dedent(
            f"""
            from chunkwise.examples import METProcessor

            class Logging(METProcessor):
                def process(self, events):
                    open({str(log)!r}, "a").write("processed\\n")
                    return super().process(events)
            """
        )
    )
    source = tmp_path / "fileset.json"
    source.write_text(json.dumps(fileset))
    for args in (["--cache", cache], ["--cache", str(tmp_path / "c"), "--tag", "../x"]):
        result = subprocess.run(
            [sys.executable, "-m", "chunkwise", "run", str(source), "--processor",
             "logging_processor:Logging", *args, "--no-progress"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        expected = words if args[0] == "--cache" and args[1] == cache else "--tag"
        assert expected in result.stderr
    assert not log.exists()  # nothing was processed
    assert a_file.read_text() == "not a cache"


# -- housekeeping commands ------------------------------------------------------------------
def test_cache_ls_verify_and_prune(fileset: dict[str, Any], tmp_path: Path) -> None:
    def cli(*args: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chunkwise", "cache", *map(str, args)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    cache = tmp_path / "cache"
    current = chunkwise.run(fileset, METProcessor(), runner(), files_per_chunk=1, cache=cache,
                            progress=False).cache  # fmt: skip
    chunkwise.run(fileset, METProcessor(), runner(), cache=cache, cache_tag="old",
                  progress=False)  # fmt: skip
    listed = cli("ls", cache)
    assert listed.returncode == 0
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[2:]}
    assert set(rows) == {current.tag, "old"}
    assert rows[current.tag][2] == "4" and rows["old"][2] == "1"

    assert cli("verify", cache).returncode == 0
    entry = next(current.directory.glob("*.coffea"))
    entry.write_bytes(entry.read_bytes()[:-10])
    verified = cli("verify", cache, "--tag", current.tag)
    assert verified.returncode == 1
    assert f"corrupt: {entry}" in verified.stdout
    assert "3 entries verify, 1 corrupt" in verified.stdout

    (cache / "old" / "my-notes.txt").write_text("not chunkwise's")
    dry = cli("prune", cache, "--processor", "chunkwise.examples:METProcessor", "--dry-run")
    assert dry.returncode == 0 and "would remove old" in dry.stdout
    assert (cache / "old").is_dir()
    kept = cli("prune", cache, "--keep", current.tag)
    assert kept.returncode == 1 and "my-notes.txt" in kept.stderr
    assert (cache / "old" / "my-notes.txt").exists()  # nothing of the user's is deleted
    (cache / "old" / "my-notes.txt").unlink()
    pruned = cli("prune", cache, "--keep", current.tag)
    assert pruned.returncode == 0 and "removed old" in pruned.stdout
    assert not (cache / "old").exists() and current.directory.is_dir()
    assert cli("prune", cache, "--keep", "nothing-like-it").returncode == 2


def test_prune_and_explain_take_every_option_of_the_tag(
    fileset: dict[str, Any], tmp_path: Path
) -> None:
    """A user who runs with --no-weights keeps that tag when pruning: --no-weights is part of
    the tag, and prune and explain take it as run and status do."""

    def cli(*args: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chunkwise", "cache", *map(str, args)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    cache, proc = tmp_path / "cache", "chunkwise.examples:METProcessor"
    weighted = chunkwise.run(fileset, METProcessor(), runner(), cache=cache, progress=False)
    unweighted = chunkwise.run(
        fileset, METProcessor(), runner(), cache=cache, progress=False, weights=False
    )
    assert weighted.cache is not None and unweighted.cache is not None
    assert weighted.cache.tag != unweighted.cache.tag

    same = cli("explain", cache, unweighted.cache.tag, "--processor", proc, "--no-weights")
    assert same.returncode == 0 and "nothing differs" in same.stdout, same
    differs = cli("explain", cache, unweighted.cache.tag, "--processor", proc)
    assert differs.returncode == 1 and "weights False -> True" in differs.stdout, differs

    pruned = cli("prune", cache, "--processor", proc, "--no-weights")
    assert pruned.returncode == 0, pruned.stderr
    assert f"removed {weighted.cache.tag}" in pruned.stdout
    assert unweighted.cache.directory.is_dir()  # the tag the user works with is kept
    assert not weighted.cache.directory.exists()


# -- the tag's manifest -----------------------------------------------------------------------
def test_an_explicit_tag_made_by_other_settings_is_refused_and_explained(
    fileset: dict[str, Any], tmp_path: Path
) -> None:
    """The row "--tag <old tag> after changing the binning": refused, never mixed."""
    module = tmp_path / "binned_ana.py"

    def write(bins: int) -> None:
        module.write_text(
            textwrap.dedent(
                f"""
                import hist
                from coffea import processor

                class Binned(processor.ProcessorABC):
                    def __init__(self):
                        self.bins = {bins}

                    def process(self, events):
                        h = hist.Hist.new.Reg(self.bins, 0, 100, name="MET").Double()
                        return {{"MET": h.fill(events.MET.pt)}}

                    def postprocess(self, accumulator):
                        return accumulator
                """
            )
        )

    source = tmp_path / "fileset.json"
    source.write_text(json.dumps(fileset))
    cache = tmp_path / "cache"

    def cli(*args: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chunkwise", *map(str, args)],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip

    write(50)
    first = cli("run", source, "--processor", "binned_ana:Binned", "--cache", cache,
                "--no-progress")  # fmt: skip
    assert first.returncode == 0, first.stderr
    old_tag = Path(first.stderr.split("cache: ")[1].split()[0]).name
    manifest = json.loads((cache / old_tag / "tag.json").read_text())
    assert manifest["processor"] == "binned_ana.Binned"

    write(20)  # the binning changed
    refused = cli("run", source, "--processor", "binned_ana:Binned", "--cache", cache,
                  "--tag", old_tag, "--no-progress")  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "was made by another processor or other settings" in refused.stderr
    assert "--force-tag" in refused.stderr
    assert len(list((cache / old_tag).glob("*.coffea"))) == 1  # nothing mixed in

    explained = cli("cache", "explain", cache, old_tag, "--processor", "binned_ana:Binned")
    assert explained.returncode == 1
    assert "state 'bins' changed" in explained.stdout

    fresh = cli("run", source, "--processor", "binned_ana:Binned", "--cache", cache,
                "--no-progress")  # fmt: skip
    assert fresh.returncode == 0  # its own, new tag
    new_tag = Path(fresh.stderr.split("cache: ")[1].split()[0]).name
    assert new_tag != old_tag
    between = cli("cache", "explain", cache, old_tag, new_tag)
    assert "state 'bins' changed" in between.stdout
    same = cli("cache", "explain", cache, new_tag, "--processor", "binned_ana:Binned")
    assert same.returncode == 0 and "nothing differs" in same.stdout


# -- found in review ---------------------------------------------------------------------------
def test_a_keyed_flat_cache_never_unpickles_a_file_without_the_footer(
    fileset: dict[str, Any], tmp_path: Path
) -> None:
    cache, marker = tmp_path / "flat", tmp_path / "pwned"
    cache.mkdir(mode=0o700)
    (chunk,) = chunkwise.split_fileset(fileset)
    (cache / f"{chunkwise.hash_fileset(chunk)}.coffea").write_bytes(evil_entry(marker))
    with pytest.warns(CorruptCacheEntryWarning, match="no chunkwise footer"):
        report = chunkwise.run(
            fileset, METProcessor(), runner(), cache=cache, cache_tag="",
            cache_key=b"a key of our group, 32 bytes long", progress=False,
        )  # fmt: skip
    assert not marker.exists() and report.n_processed == 1
    with pytest.raises(TypeError, match="cache key must be non-empty bytes"):
        chunkwise.run(fileset, METProcessor(), runner(), cache=cache, cache_key="text")


def test_an_entry_moved_to_another_tag_is_not_loaded(
    fileset: dict[str, Any], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = chunkwise.run(fileset, METProcessor(), runner(), cache=cache, progress=False)
    other = ChunkCache(cache, "other")
    other.prepare()
    (entry,) = first.cache.directory.glob("*.coffea")
    shutil.copy(entry, other.directory / entry.name)
    with pytest.warns(CorruptCacheEntryWarning, match="under tag"):
        assert other.load(entry.stem).status == "corrupt"


def test_prune_never_follows_a_symlinked_tag(fileset: dict[str, Any], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    current = chunkwise.run(fileset, METProcessor(), runner(), cache=cache, progress=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / f"{'d' * 64}.coffea").write_bytes(b"someone's file")
    (cache / "linked").symlink_to(elsewhere)
    result = subprocess.run(
        [sys.executable, "-m", "chunkwise", "cache", "prune", str(cache),
         "--keep", current.cache.tag],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (elsewhere / f"{'d' * 64}.coffea").exists()  # the symlink is not a tag: untouched
    with pytest.raises(CacheError, match="symlink"):
        from chunkwise.cache import remove_tag

        remove_tag(cache, "linked")


def test_prune_of_a_local_cache_takes_no_key(fileset: dict[str, Any], tmp_path: Path) -> None:
    """A key authenticates entries; it does not make a group's tags yours to delete: a local
    cache is pruned only if it is your own, and --cache-key-file is refused (the variable
    $CHUNKWISE_CACHE_KEY_FILE, set for 'run', is not used)."""
    cache = tmp_path / "cache"
    current = chunkwise.run(fileset, METProcessor(), runner(), cache=cache, progress=False).cache
    ChunkCache(cache, "old").save("e" * 64, {"old": 1})
    keyfile = tmp_path / "key"
    keyfile.write_bytes(b"a group key of 32 bytes, for tests")
    keyfile.chmod(0o600)
    prune = [sys.executable, "-m", "chunkwise", "cache", "prune", str(cache), "--keep", current.tag]
    refused = subprocess.run(
        [*prune, "--cache-key-file", str(keyfile)], capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "only a root:// cache is pruned with a key" in refused.stderr
    assert (cache / "old").is_dir()
    environ = {**os.environ, "CHUNKWISE_CACHE_KEY_FILE": str(keyfile)}
    cache.chmod(0o770)  # a group's cache: the key in the environment does not open it
    shared = subprocess.run(prune, capture_output=True, text=True, timeout=120, env=environ)
    assert shared.returncode == 2 and "writable by group" in shared.stderr
    assert (cache / "old").is_dir()
    cache.chmod(0o700)
    pruned = subprocess.run(prune, capture_output=True, text=True, timeout=120, env=environ)
    assert pruned.returncode == 0, pruned.stderr
    assert not (cache / "old").exists() and current.directory.is_dir()


# -- authenticated records ----------------------------------------------------------------------
KEY = b"a group key of 32 bytes, for tests"
SEALS = {None: "sha256:", KEY: "hmac-sha256:"}
EVENTS = {"D": 400}


def two_salvaged_chunks(
    fileset: dict[str, Any], tmp_path: Path, key: bytes | None = None, tag: str | None = None
) -> tuple[dict[str, Any], Any]:
    """Run two chunks of three files, each with a missing file: two salvage records."""
    good = sorted(fileset["D"]["files"])  # f0 ... f3; the missing ones sort before f0 and f2
    missing = [str(Path(good[i]).with_name(f"f{i}-missing.root")) for i in (0, 2)]
    broken = {"D": {"files": dict.fromkeys([*good, *missing], "Events")}}
    first = salvage_run(broken, tmp_path, key, tag)
    assert [r.status for r in first.chunks] == ["salvaged", "salvaged"]
    assert first.events == EVENTS
    return broken, first


def salvage_run(broken: dict[str, Any], tmp_path: Path, key: bytes | None, tag: str | None) -> Any:
    return chunkwise.run(
        broken, METProcessor(), runner(), files_per_chunk=3, cache=tmp_path / "cache",
        cache_key=key, cache_tag=tag, progress=False,
    )  # fmt: skip


def resumed(record: Any) -> bool:
    """Whether a salvaged chunk went on from its salvage record (else it was run again)."""
    text = str(record.exception)
    assert text.startswith(("failed in an earlier run: ", "1 file(s) failed: ")), text
    return text.startswith("failed in an earlier run: ")


@pytest.mark.parametrize("key", [None, KEY], ids=["keyless", "keyed"])
def test_records_written_by_chunkwise_verify_and_are_used(
    key: bytes | None, fileset: dict[str, Any], tmp_path: Path
) -> None:
    broken, first = two_salvaged_chunks(fileset, tmp_path, key)
    cache = first.cache
    for path in [cache.manifest_path, *(cache.salvage_path(r.hash) for r in first.chunks)]:
        data = json.loads(path.read_text())  # readable JSON, with its format and tag
        assert data["record"] == RECORD_FORMAT and data["mac"].startswith(SEALS[key])
    assert json.loads(cache.manifest_path.read_text())["processor"].endswith("METProcessor")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorruptCacheEntryWarning)
        assert cache.read_manifest() == tag_manifest(METProcessor(), runner())
        for record in first.chunks:
            saved = cache.load_salvage(record.hash)
            assert saved is not None and saved.chunk_hash == record.hash
            assert saved.bad_files == record.bad_files
        again = salvage_run(broken, tmp_path, key, None)
    assert all(resumed(r) for r in again.chunks)  # each went on from its record
    assert again.events == EVENTS and again.cache.tag == cache.tag


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("edited", "SHA-256 does not match"),
        ("torn", "not whole JSON"),
        ("another-chunk", "SHA-256 does not match"),
        ("another-tag", "SHA-256 does not match"),
    ],
)
def test_a_damaged_or_copied_salvage_record_is_ignored_and_the_chunk_run_again(
    damage: str, why: str, fileset: dict[str, Any], tmp_path: Path
) -> None:
    broken, first = two_salvaged_chunks(fileset, tmp_path, tag="two")
    cache = first.cache
    victim, other = (cache.salvage_path(r.hash) for r in first.chunks)
    data = json.loads(victim.read_text())
    if damage == "edited":  # a hand edit: the error text, as if from another run
        data["error"] = "EDITED"
        victim.write_text(json.dumps(data))
    elif damage == "torn":
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    elif damage == "another-chunk":  # a valid record, under another chunk's name
        shutil.copy(other, victim)
    else:  # the same chunk's record in another tag, with other words in it, copied here
        elsewhere = ChunkCache(tmp_path / "cache", "one")
        record = cache.load_salvage(first.chunks[0].hash)
        elsewhere.save_salvage(dataclasses.replace(record, error="FROM TAG ONE"))
        shutil.copy(elsewhere.salvage_path(record.chunk_hash), victim)
    with pytest.warns(CorruptCacheEntryWarning) as caught:
        again = salvage_run(broken, tmp_path, None, "two")
    (line,) = [str(w.message) for w in caught if "salvage record" in str(w.message)]
    assert line.startswith(f"chunkwise: ignoring the salvage record {victim}: ")
    assert why in line and "the chunk is run again" in line
    assert [resumed(r) for r in again.chunks] == [False, True]  # only the victim
    assert again.events == EVENTS  # never wrong: 4 good files, each once
    assert "FROM TAG ONE" not in str(again.chunks[0].exception)
    with warnings.catch_warnings():  # the run wrote it again, whole and authenticated
        warnings.simplefilter("error", CorruptCacheEntryWarning)
        assert cache.load_salvage(first.chunks[0].hash) is not None


@pytest.mark.parametrize(
    ("forgery", "why"),
    [
        ("another-key", "HMAC does not match"),
        ("keyless", "written without a key"),
        ("old-format", "older chunkwise"),
    ],
)
def test_a_keyed_cache_ignores_a_record_without_its_hmac(
    forgery: str, why: str, fileset: dict[str, Any], tmp_path: Path
) -> None:
    broken, first = two_salvaged_chunks(fileset, tmp_path, KEY)
    cache = first.cache
    record = cache.load_salvage(first.chunks[0].hash)
    forged = dataclasses.replace(record, error="FORGED")
    victim = cache.salvage_path(record.chunk_hash)
    if forgery == "old-format":  # what the previous chunkwise wrote: no authentication
        victim.write_text(json.dumps({"format": CACHE_FORMAT, **forged.to_dict()}))
    else:
        forger = ChunkCache(tmp_path / "forger", cache.tag, key=None if forgery == "keyless"
                            else b"the forger's own key, 32 bytes!")  # fmt: skip
        shutil.copy(forger.save_salvage(forged), victim)
    with pytest.warns(CorruptCacheEntryWarning, match=f"ignoring the salvage record.*{why}"):
        again = salvage_run(broken, tmp_path, KEY, None)
    assert [resumed(r) for r in again.chunks] == [False, True]
    assert "FORGED" not in str(again.chunks[0].exception)
    assert again.events == EVENTS


def test_a_local_cache_without_a_key_reads_records_of_the_previous_format(
    fileset: dict[str, Any], tmp_path: Path
) -> None:
    """Only you can write there (the ownership rule): the old records are yours, and used."""
    broken, first = two_salvaged_chunks(fileset, tmp_path, tag="mine")
    cache = first.cache
    record = cache.load_salvage(first.chunks[0].hash)
    old = {"format": CACHE_FORMAT, **dataclasses.replace(record, error="OLD").to_dict()}
    cache.salvage_path(record.chunk_hash).write_text(json.dumps(old, indent=1, sort_keys=True))
    manifest = tag_manifest(METProcessor(), runner())
    cache.manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorruptCacheEntryWarning)
        assert cache.read_manifest() == manifest
        again = salvage_run(broken, tmp_path, None, "mine")  # the explicit tag is accepted
    assert [resumed(r) for r in again.chunks] == [True, True]
    assert str(again.chunks[0].exception) == "failed in an earlier run: OLD"


def test_a_failure_record_that_does_not_verify_shows_the_chunk_never_run(
    fileset: dict[str, Any], tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    missing = str(tmp_path / "missing.root")
    lost = {"D": {"files": {missing: "Events"}}}
    first = chunkwise.run(lost, METProcessor(), runner(), cache=cache_dir, progress=False)
    (chunk,) = first.chunks
    failure = first.cache.failure_path(chunk.hash)
    assert json.loads(failure.read_text())["mac"].startswith("sha256:")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorruptCacheEntryWarning)
        status = chunkwise.status(lost, cache_dir)
    assert status.overall.failed == 1 and status.failed["D"][missing]

    data = json.loads(failure.read_text())
    data["bad_files"]["D"][missing] = "EDITED"
    failure.write_text(json.dumps(data))
    with pytest.warns(CorruptCacheEntryWarning) as caught:
        status = chunkwise.status(lost, cache_dir)
    (line,) = [str(w.message) for w in caught]
    assert line.startswith(f"chunkwise: ignoring the failure record {failure}: ")
    assert "SHA-256 does not match" in line and "never run" in line
    assert status.overall.never_run == 1 and status.overall.failed == 0


def test_a_salvage_record_copied_over_a_failure_record_is_ignored(
    fileset: dict[str, Any], tmp_path: Path
) -> None:
    """The kind of record is authenticated too: a salvage record is no failure record."""
    broken, first = two_salvaged_chunks(fileset, tmp_path)
    cache = first.cache
    chunk_hash = first.chunks[0].hash
    shutil.copy(cache.salvage_path(chunk_hash), cache.failure_path(chunk_hash))
    with pytest.warns(CorruptCacheEntryWarning, match="ignoring the failure record.*SHA-256"):
        assert cache.load_failure(chunk_hash) is None


@pytest.mark.parametrize(
    ("key", "forgery", "why"),
    [
        (KEY, "old-format", "older chunkwise"),
        (KEY, "another-key", "HMAC does not match"),
        (KEY, "another-tag", "HMAC does not match"),
        (None, "another-tag", "SHA-256 does not match"),
        (None, "edited", "SHA-256 does not match"),
    ],
    ids=["keyed-old-format", "keyed-another-key", "keyed-another-tag", "another-tag", "edited"],
)
def test_a_forged_manifest_never_makes_an_explicit_tag_accepted(
    key: bytes | None, forgery: str, why: str, fileset: dict[str, Any], tmp_path: Path
) -> None:
    """Tag "mine" holds entries of one processor; a tag.json claiming another processor's
    settings is ignored, so that a run of that processor with --tag mine is refused."""
    root = tmp_path / "cache"
    options = dict(cache=root, cache_key=key, progress=False)
    chunkwise.run(fileset, METProcessor(), runner(), cache_tag="mine", **options)
    changed = METProcessor()
    changed.note = "other settings"  # another state: another manifest
    claim = tag_manifest(changed, runner())
    mine = ChunkCache(root, "mine", key=key)
    if forgery == "old-format":
        mine.manifest_path.write_text(json.dumps(claim, indent=1, sort_keys=True))
    elif forgery == "another-key":
        forger = ChunkCache(tmp_path / "forger", "mine", key=b"the forger's own key, 32 bytes!")
        shutil.copy(forger.write_manifest(claim), mine.manifest_path)
    elif forgery == "another-tag":  # that processor's own, authentic tag.json, copied over
        theirs = chunkwise.run(fileset, changed, runner(), cache_tag="theirs", **options).cache
        shutil.copy(theirs.manifest_path, mine.manifest_path)
    else:  # hand-edited to claim the other settings, its tag left as it was
        data = json.loads(mine.manifest_path.read_text())
        sealed = {k: data[k] for k in ("record", "mac")}
        mine.manifest_path.write_text(json.dumps({**claim, **sealed}))
    with pytest.warns(CorruptCacheEntryWarning, match=f"ignoring {mine.manifest_path}: .*{why}"):
        with pytest.raises(CacheError, match="unknown origin .no tag.json that verifies.*force"):
            chunkwise.run(fileset, changed, runner(), cache_tag="mine", **options)
    assert len(list(mine.directory.glob("*.coffea"))) == 1  # nothing mixed in
    # the same claim, written by chunkwise with the cache's key, would be believed
    mine.write_manifest(claim)
    assert chunkwise.run(fileset, changed, runner(), cache_tag="mine", **options).n_cached == 1


def test_cache_explain_reads_the_manifests_of_a_keyed_cache_with_its_key(
    fileset: dict[str, Any], tmp_path: Path
) -> None:
    root = tmp_path / "cache"
    chunkwise.run(fileset, METProcessor(), runner(), cache=root, cache_key=KEY,
                  cache_tag="one", progress=False)  # fmt: skip
    chunkwise.run(fileset, METProcessor(), runner(), cache=root, cache_key=KEY,
                  cache_tag="two", progress=False)  # fmt: skip
    keyfile = tmp_path / "key"
    keyfile.write_bytes(KEY)
    keyfile.chmod(0o600)

    def explain(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chunkwise", "cache", "explain", str(root), "one", "two",
             *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    same = explain("--cache-key-file", str(keyfile))
    assert same.returncode == 0 and "nothing differs" in same.stdout, same.stderr
    keyless = explain()  # a group's cache is not opened without its key
    assert keyless.returncode == 2 and "writable by group" in keyless.stderr
    (root / "two" / "tag.json").write_bytes((root / "one" / "tag.json").read_bytes())
    copied = explain("--cache-key-file", str(keyfile))  # one's tag.json is no manifest of two
    assert copied.returncode == 2 and "no tag.json that verifies" in copied.stderr
    assert "CorruptCacheEntryWarning" in copied.stderr and "HMAC does not match" in copied.stderr


# -- a cache directory that the file system will not let you read -------------------------------
#: Run as root without the capabilities that let root read and search any directory: file modes
#: then apply to it as to any user, while the files stay its own (so the trust checks pass).
WITHOUT_DAC = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
    "--",
]


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_a_cache_directory_you_may_not_read_is_one_line_not_a_crash(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "tagA").mkdir(parents=True)
    cache.chmod(0o700)
    source = tmp_path / "fileset.json"
    source.write_text(json.dumps({"D": {"files": {"/data/a.root": "Events"}}}))
    (cache / "tagA").chmod(0)
    try:
        for args in (
            ("cache", "ls", cache),
            ("cache", "verify", cache),
            ("cache", "prune", cache, "--keep", "tagB"),
            ("status", source, "--cache", cache),
        ):
            result = subprocess.run(
                [*WITHOUT_DAC, sys.executable, "-m", "chunkwise", *map(str, args)],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert result.returncode == 2, (args, result.stdout, result.stderr)
            assert "Traceback" not in result.stderr and "internal error" not in result.stderr
            (line,) = result.stderr.splitlines()
            assert f"{cache / 'tagA'}: Permission denied" in line, line
    finally:
        (cache / "tagA").chmod(0o700)
    assert (cache / "tagA").is_dir()  # prune removed nothing
