"""Stable splitting: ``split_fileset(..., stable=True)`` and what it guarantees.

The rule (README, "Stable splitting") is written again here, plainly, from the README's text:
:func:`reference_split` is the independent implementation the core is checked against, and it
also says which *stretch* each chunk belongs to, which is what the locality bound is about.
Then, with hypothesis: one file added or removed changes only the chunks of two consecutive
stretches (the one it falls in and the next), many changes only those of the stretches they
touch and the ones after them, every other chunk keeps its exact ``hash_fileset``; a change to a
dataset's metadata changes all of its chunks and nothing else; the size bounds hold. Golden
values pin the format. Last, ``chunkwise run --stable`` over real files, grown between two runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chunkwise
from chunkwise.chunks import SplitOptions, make_chunks, split_options

coffea_tools = pytest.importorskip("coffea.dataset_tools")

EXAMPLES = int(os.environ.get("CHUNKWISE_HYPOTHESIS_EXAMPLES", "1500")) // 3
SETTINGS = settings(
    max_examples=max(EXAMPLES, 50),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- the rule, written plainly from the README -------------------------------------------------

TAG = b"chunkwise-stable-split/1"
MAX_SIZE = 2**60


def boundary_hash(dataset: str, path: str) -> int:
    """The first 8 bytes, big-endian, of SHA-256(TAG, u64be(len(dataset)), dataset, path)."""
    d = dataset.encode("utf-8", "surrogatepass")
    p = path.encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(TAG + len(d).to_bytes(8, "big") + d + p).digest()
    return int.from_bytes(digest[:8], "big")


def rule(size: int) -> tuple[int, int, int]:
    """``(m, M, D)``: the minimum, the maximum and the divisor for chunks of about ``size``."""
    s = min(size, MAX_SIZE)
    m = max(1, s // 4)
    return m, 4 * s, s - m + 1


def reference_stretches(
    dataset: str, paths: list[str], events: list[int] | None, size: int
) -> list[list[tuple[int, int]]]:
    """One dataset's stretches, each as the ``[start, end)`` ranges of its chunks.

    ``paths`` are in sorted order; ``events`` gives each file's ``num_entries`` (``None``:
    ``files_per_chunk``, every file weighs 1).
    """
    m, big_m, d = rule(size)
    n = len(paths)
    w = [1] * n if events is None else [min(e, big_m) for e in events]
    candidate = [boundary_hash(dataset, p) * d < w[i] * 2**64 for i, p in enumerate(paths)]
    cuts, since = [], 0
    for i in range(n):
        since += w[i]
        if candidate[i]:
            if since >= m and i < n - 1:
                cuts.append(i + 1)
            since = 0
    out, start = [], 0
    for end in [*cuts, n] if n else []:
        total = sum(w[start:end])
        if total <= big_m:
            out.append([(start, end)])
        else:
            k = -(-total // big_m)
            pieces, piece, before = [], start, 0
            for i in range(start, end - 1):
                after = before + w[i]
                if k * after // total > k * before // total:
                    pieces.append((piece, i + 1))
                    piece = i + 1
                before = after
            pieces.append((piece, end))
            out.append(pieces)
        start = end
    return out


def num_entries(value: Any) -> int | None:
    """A file's ``num_entries``, if usable: an int (not a bool) >= 0 in a dict."""
    if not isinstance(value, dict):
        return None
    n = dict.get(value, "num_entries")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        return None
    return n


class Missing(Exception):
    """The reference's error for a file without a usable ``num_entries``."""


def reference_split(
    fileset: dict[Any, Any],
    size: int,
    *,
    events: bool = False,
    datasets: Any = None,
    treename: str | None = None,
) -> list[tuple[dict[str, Any], int]]:
    """The chunks of ``split_fileset(fileset, stable=True, ...)``, each with its stretch's number
    (counted over the whole fileset).

    Datasets are selected and normalized by coffea itself, as by ``strategy="by_dataset"``.
    """
    whole = coffea_tools.split_fileset(
        fileset, strategy="by_dataset", datasets=datasets, treename=treename
    )
    out: list[tuple[dict[str, Any], int]] = []
    stretch_number = 0
    for name, data in (next(iter(c.items())) for c in whole):
        files = data["files"]
        is_dict = isinstance(files, dict)
        items = sorted(files.items()) if is_dict else sorted(files)
        paths = [item[0] for item in items] if is_dict else list(items)
        counts = None
        if events:
            counts = [num_entries(item[1]) if is_dict else None for item in items]
            if None in counts:
                raise Missing(paths[counts.index(None)])
        for pieces in reference_stretches(name, paths, counts, size):
            for start, end in pieces:
                part = items[start:end]
                out.append(
                    ({name: {**data, "files": dict(part) if is_dict else part}}, stretch_number)
                )
            stretch_number += 1
    return out


def stable(fileset: dict[Any, Any], size: int, *, events: bool = False, **kwargs: Any) -> list:
    key = "events_per_chunk" if events else "files_per_chunk"
    return chunkwise.split_fileset(fileset, stable=True, **{key: size}, **kwargs)


def shape(chunks: list[dict[str, Any]]) -> list[Any]:
    """What a chunk is, with every key order and container type."""
    return [
        [(n, type(d["files"]).__name__, list(d["files"]), list(d)) for n, d in c.items()]
        for c in chunks
    ]


# --- strategies --------------------------------------------------------------------------------

SPECIAL = ['"', "\\", "\x00", "\n", "\x7f", "é", "μ", "\uffff", "😀", "\ud800", "\udfff"]
chars = st.one_of(st.sampled_from(SPECIAL), st.characters(exclude_categories=()))
PREFIXES = ["", "root://eospublic.cern.ch//eos/opendata/cms/mc/", "/store/data/Run2018A/"]
paths = st.builds(
    lambda pre, tail: pre + tail,
    st.sampled_from(PREFIXES),
    st.one_of(st.text(chars, max_size=8), st.text("ab/.0", max_size=4)),
)
names = st.one_of(st.sampled_from(["DY", "ttbar", "é", "Z\ud800", ""]), st.text(chars, max_size=4))
sizes = st.one_of(st.integers(1, 12), st.integers(1, 12), st.integers(13, 200), st.just(2**70))
counts = st.one_of(st.integers(0, 40), st.integers(0, 400), st.just(0), st.integers(2**63, 2**70))


def entry(n: int) -> dict[str, Any]:
    return {"object_path": "Events", "steps": [[0, n]], "num_entries": n, "uuid": "u"}


@st.composite
def datasets_of(draw: st.DrawFn, events: bool, max_files: int = 60) -> dict[str, Any]:
    ps = draw(st.lists(paths, max_size=max_files, unique=True))
    if events:
        files: Any = {p: entry(draw(counts)) for p in ps}
    else:
        files = draw(
            st.sampled_from(
                [
                    {p: "Events" for p in ps},
                    OrderedDict((p, "Events") for p in ps),
                    {p: None for p in ps},
                    list(ps),
                    tuple(ps),
                ]
            )
        )
    data: dict[str, Any] = {"files": files}
    if draw(st.booleans()):
        data["metadata"] = {"xsec": draw(st.floats(0, 1e4)), "is_mc": True}
    if isinstance(files, (list, tuple)) or draw(st.booleans()):
        data["treename"] = "Events"
    return data


def filesets(events: bool) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(names, datasets_of(events), max_size=3)


# --- the core follows the rule -----------------------------------------------------------------


@SETTINGS
@given(data=st.data(), events=st.booleans(), size=sizes)
def test_split_follows_the_written_rule(data: st.DataObject, events: bool, size: int) -> None:
    fileset = data.draw(filesets(events))
    kwargs = {"datasets": data.draw(st.sampled_from([None, sorted(fileset)[:1]]))}
    if data.draw(st.booleans()):
        kwargs["strategy"] = "by_dataset"  # stable=True implies it; saying it changes nothing
    ours = stable(fileset, size, events=events, **kwargs)
    kwargs.pop("strategy", None)
    ref = [c for c, _ in reference_split(fileset, size, events=events, **kwargs)]
    assert ours == ref
    assert shape(ours) == shape(ref)
    # Every chunk holds one dataset; together they hold every file exactly once.
    assert all(len(c) == 1 for c in ours)
    for name, data_ in fileset.items():
        if kwargs["datasets"] is not None and name not in kwargs["datasets"]:
            continue
        got = [p for c in ours if name in c for p in c[name]["files"]]
        assert got == sorted(data_["files"])


def test_large_datasets_follow_the_written_rule() -> None:
    """Thousands of files a dataset (hashed in blocks that share their common prefix), long
    shared prefixes, and paths that leave the prefix: the same chunks as the plain rule."""
    rng = random.Random(3)
    store = "root://cmsxrootd.fnal.gov//store/mc/RunIISummer20UL16NanoAODv9/" + "x" * 150
    fileset: dict[str, Any] = {}
    for d, n in enumerate((1, 2047, 2049, 7000)):
        paths_ = [
            f"{store}/{rng.randrange(10**5)}/{rng.getrandbits(128):032X}.root" for _ in range(n)
        ]
        paths_[n // 2] = f"/elsewhere/{d}.root"  # not under the common prefix
        fileset[f"DS{d}" * (d + 1)] = {"files": {p: entry(rng.randrange(0, 3000)) for p in paths_}}
    for size, events in ((50, False), (7, False), (10_000, True), (1, True)):
        got = stable(fileset, size, events=events)
        assert got == [c for c, _ in reference_split(fileset, size, events=events)]


def test_an_error_in_a_later_dataset_is_raised_and_nothing_hangs() -> None:
    rng = random.Random(4)
    fileset = {
        f"D{d}": {"files": {f"/s/{rng.getrandbits(64):x}.root": entry(5) for _ in range(5000)}}
        for d in range(4)
    }
    fileset["D2"]["files"]["/s/broken.root"] = "Events"
    with pytest.raises(ValueError, match="file '/s/broken.root' of dataset 'D2' has no"):
        stable(fileset, 100, events=True)
    assert len(stable(fileset, 100)) > 4 * 5000 // 200


def test_long_stretches_are_cut_into_equal_pieces() -> None:
    """Paths chosen to be no candidates: one stretch, cut into pieces between M/2 and M."""
    m, big_m, d = rule(4)
    quiet = [
        p for p in (f"/q/{i:05d}.root" for i in range(2000)) if boundary_hash("Q", p) * d >= 2**64
    ]
    chunks = stable({"Q": {"files": quiet[:101], "treename": "Events"}}, 4)
    assert [len(c["Q"]["files"]) for c in chunks] == [15, 14, 15, 14, 15, 14, 14]  # 101 in 7
    assert all(big_m // 2 <= len(c["Q"]["files"]) <= big_m for c in chunks)


def test_events_mode_reads_num_entries_as_events_per_chunk_does() -> None:
    fileset = {"d": {"files": {"a.root": entry(5), "b.root": {"num_entries": True}}}}
    for kwargs in ({}, {"stable": True}):
        with pytest.raises(ValueError, match="file 'b.root' of dataset 'd' has no 'num_entries'"):
            chunkwise.split_fileset(fileset, events_per_chunk=10, **kwargs)
    listed = {"d": {"files": ["a.root"], "treename": "Events"}}
    with pytest.raises(ValueError, match="file 'a.root' of dataset 'd' has no 'num_entries'"):
        chunkwise.split_fileset(listed, events_per_chunk=10, stable=True)


some_paths_ = st.one_of(
    paths,
    st.builds(
        lambda n: f"root://cms-xrd-global.cern.ch//store/data/Run2018D/{n:032X}.root",
        st.integers(0, 2**128 - 1),
    ),
)
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def readme_rule() -> Any:
    """``stable_ranges`` as the README writes it, run as it is."""
    if not README.is_file():
        pytest.skip("the README is not beside the tests")
    text = README.read_text(encoding="utf-8")
    start = text.index("def stable_ranges(")
    namespace: dict[str, Any] = {"hashlib": hashlib}
    exec(text[start : text.index("```", start)], namespace)  # noqa: S102 - our own README
    return namespace["stable_ranges"]


@SETTINGS
@given(
    ps=st.lists(some_paths_, max_size=120, unique=True),
    name=names,
    size=sizes,
    weights=st.one_of(st.none(), st.lists(counts, min_size=120, max_size=120)),
)
def test_the_readme_rule_is_the_rule(
    readme_rule: Any, ps: list[str], name: str, size: int, weights: list[int] | None
) -> None:
    ps = sorted(ps)
    events = None if weights is None else dict(zip(ps, weights, strict=False))
    fileset = {name: {"files": {p: "Events" if events is None else entry(events[p]) for p in ps}}}
    chunks = stable(fileset, size, events=events is not None)
    got = readme_rule(name, ps, [1] * len(ps) if events is None else [events[p] for p in ps], size)
    assert [list(c[name]["files"]) for c in chunks] == [ps[a:b] for a, b in got]


# --- the locality guarantee --------------------------------------------------------------------


def one_dataset(ps: list[str], events: dict[str, int] | None, metadata: Any = None) -> dict:
    files: dict[str, Any] = (
        {p: "Events" for p in ps} if events is None else {p: entry(events[p]) for p in ps}
    )
    data: dict[str, Any] = {"files": files}
    if metadata is not None:
        data["metadata"] = metadata
    return {"DS": data}


def split_with_stretches(
    ps: list[str], events: dict[str, int] | None, size: int
) -> tuple[list[str], dict[str, int], dict[str, int]]:
    """The chunks' hashes in order, each chunk's stretch (by hash), and each file's stretch."""
    fileset = one_dataset(ps, events)
    chunks = stable(fileset, size, events=events is not None)
    hashes = chunkwise.hash_filesets(chunks)
    ref = reference_split(fileset, size, events=events is not None)
    assert [c for c, _ in ref] == chunks
    stretch_of_chunk = {h: s for h, (_, s) in zip(hashes, ref, strict=True)}
    stretch_of_file = {p: s for c, s in ref for p in c["DS"]["files"]}
    return hashes, stretch_of_chunk, stretch_of_file


def touched_stretches(
    old: list[str], stretch_of_file: dict[str, int], added: set[str], removed: set[str]
) -> set[int]:
    """The stretches a change falls in: a removed file's, and for an added file the stretch of
    the first old file after it (the last stretch, if none is)."""
    touched = {stretch_of_file[p] for p in removed}
    ordered = sorted(old)
    for x in added:
        after = [p for p in ordered if p > x]
        touched.add(stretch_of_file[after[0]] if after else stretch_of_file[ordered[-1]])
    return touched


cms_paths = st.builds(
    lambda run, uid: f"root://cms-xrd-global.cern.ch//store/data/Run2018D/{run}/{uid:032X}.root",
    st.integers(100000, 100009),
    st.integers(0, 2**128 - 1),
)
some_paths = st.one_of(cms_paths, paths)


@SETTINGS
@given(
    data=st.data(),
    base=st.lists(some_paths, min_size=1, max_size=80, unique=True),
    size=st.one_of(st.integers(1, 8), st.integers(9, 30)),
    by_events=st.booleans(),
)
def test_one_file_added_or_removed_changes_at_most_two_stretches(
    data: st.DataObject, base: list[str], size: int, by_events: bool
) -> None:
    add = data.draw(st.booleans())
    if add:
        # Anywhere: first, last, or between two files.
        ends = st.sampled_from(["", "\U0010ffff" * 4, min(base)[:-1], max(base) + "~"])
        x = data.draw(st.one_of(some_paths, ends).filter(lambda p: p not in base))
        grown = [*base, x]
        added, removed = {x}, set()
    else:
        x = data.draw(
            st.one_of(st.sampled_from(sorted(base)), st.sampled_from([min(base), max(base)]))
        )
        grown = [p for p in base if p != x]
        added, removed = set(), {x}
    events = None
    if by_events:
        events = {p: data.draw(st.integers(0, 3 * size), label=p) for p in {*base, x}}
    old, stretch_of_chunk, stretch_of_file = split_with_stretches(base, events, size)
    new = chunkwise.hash_filesets(stable(one_dataset(grown, events), size, events=by_events))
    (s0,) = touched_stretches(base, stretch_of_file, added, removed)
    allowed = {s0, s0 + 1}
    lost = [h for h in old if h not in new]
    # Every chunk outside the two stretches keeps its exact hash.
    assert all(stretch_of_chunk[h] in allowed for h in lost), (s0, lost)
    # The two stretches are at most two chunks unless one was cut for its size; then at most
    # all of their pieces. New chunks replace just as few.
    pieces = sum(1 for h in old if stretch_of_chunk[h] in allowed)
    assert len(lost) <= pieces
    if pieces <= 2:
        gained = [h for h in new if h not in old]
        assert len(lost) <= 2 and len(gained) <= 2, (lost, gained)


@SETTINGS
@given(
    data=st.data(),
    base=st.lists(some_paths, min_size=1, max_size=100, unique=True),
    size=st.one_of(st.integers(1, 8), st.integers(9, 30)),
    by_events=st.booleans(),
)
def test_many_changes_keep_every_chunk_whose_stretches_they_miss(
    data: st.DataObject, base: list[str], size: int, by_events: bool
) -> None:
    removed = set(data.draw(st.lists(st.sampled_from(sorted(base)), max_size=6)))
    added = set(data.draw(st.lists(some_paths.filter(lambda p: p not in base), max_size=6)))
    grown = [p for p in base if p not in removed] + sorted(added)
    events = None
    if by_events:
        events = {p: data.draw(st.integers(0, 3 * size), label=p) for p in {*base, *added}}
    old, stretch_of_chunk, stretch_of_file = split_with_stretches(base, events, size)
    new = set(chunkwise.hash_filesets(stable(one_dataset(grown, events), size, events=by_events)))
    touched = touched_stretches(base, stretch_of_file, added, removed)
    # A chunk keeps its hash when nothing changed in its stretch or in the stretch before it.
    for h in old:
        s = stretch_of_chunk[h]
        if s not in touched and s - 1 not in touched:
            assert h in new, (s, touched)


def test_the_issue_21_fileset_keeps_its_chunks() -> None:
    """10,000 CMS-like paths in 50-file chunks: positional splitting keeps none of 200 chunk
    hashes when a file sorting first is added; stable splitting keeps all but the chunks of two
    stretches (here the first chunk or two)."""
    rng = random.Random(21)
    store = "root://cmsxrootd.fnal.gov//store/mc/RunIISummer20UL16NanoAODv9/DY/NANOAODSIM/"
    base = [f"{store}{rng.getrandbits(128):032X}.root" for _ in range(10_000)]
    grown = [*base, f"{store}0.root"]  # sorts first

    def kept(**kwargs: Any) -> tuple[int, int]:
        old = chunkwise.hash_filesets(chunkwise.split_fileset(one_dataset(base, None), **kwargs))
        new = chunkwise.hash_filesets(chunkwise.split_fileset(one_dataset(grown, None), **kwargs))
        return len(set(old) & set(new)), len(old)

    assert kept(strategy="by_dataset", files_per_chunk=50) == (0, 200)
    n_kept, n_old = kept(files_per_chunk=50, stable=True)
    assert n_kept >= n_old - 2 and 180 <= n_old <= 220


@SETTINGS
@given(
    base=st.lists(some_paths, min_size=1, max_size=60, unique=True),
    size=st.integers(1, 12),
    metadata=st.fixed_dictionaries({"xsec": st.floats(0, 1e4), "year": st.integers(2016, 2018)}),
)
def test_metadata_changes_every_chunk_of_its_dataset_and_nothing_else(
    base: list[str], size: int, metadata: dict[str, Any]
) -> None:
    fileset = one_dataset(base, None, metadata)
    fileset["other"] = {"files": {"o1.root": "Events", "o2.root": "Events"}}
    before = stable(fileset, size)
    changed = {**fileset, "DS": {**fileset["DS"], "metadata": {**metadata, "xsec": -1.0}}}
    after = stable(changed, size)
    # The same files in the same chunks: boundaries do not depend on metadata.
    assert [{n: list(d["files"]) for n, d in c.items()} for c in before] == [
        {n: list(d["files"]) for n, d in c.items()} for c in after
    ]
    for b, a in zip(before, after, strict=True):
        if "DS" in b:
            assert chunkwise.hash_fileset(b) != chunkwise.hash_fileset(a)
        else:
            assert chunkwise.hash_fileset(b) == chunkwise.hash_fileset(a)


@SETTINGS
@given(data=st.data(), size=sizes, by_events=st.booleans())
def test_size_bounds(data: st.DataObject, size: int, by_events: bool) -> None:
    """Files: every chunk has at most M = 4N files, and at least m = max(1, N // 4) but for a
    dataset's last. Events: a chunk's files before its last hold at most 4E events, and every
    chunk but a dataset's last holds at least max(1, E // 4)."""
    ps = data.draw(st.lists(some_paths, max_size=150, unique=True))
    events = None
    if by_events:
        small = st.integers(0, max(1, min(size, 2**20) // 3))
        events = {p: data.draw(st.one_of(small, small, counts), label=p) for p in ps}
    chunks = stable(one_dataset(ps, events), size, events=by_events)
    m, big_m, _ = rule(size)
    weights = [
        [1] * len(c["DS"]["files"]) if events is None else [events[p] for p in c["DS"]["files"]]
        for c in chunks
    ]
    for i, w in enumerate(weights):
        assert w, "no empty chunk"
        assert sum(w[:-1]) <= big_m and (events is not None or len(w) <= big_m)
        if i < len(weights) - 1:
            assert sum(w) >= m


def test_mean_chunk_size_is_about_the_size_asked_for() -> None:
    rng = random.Random(5)
    ps = [f"/store/mc/{rng.getrandbits(64):016x}.root" for _ in range(100_000)]
    for n in (4, 10, 50, 200):
        sizes_ = [len(c["DS"]["files"]) for c in stable(one_dataset(ps, None), n)]
        mean = sum(sizes_) / len(sizes_)
        # 1.00 N to 1.05 N in theory (m / N = 1/4 loses a few cuts), and sampling noise.
        assert 0.95 * n <= mean <= 1.15 * n, (n, mean)


# --- golden values: the format -----------------------------------------------------------------

# The format, pinned: these values must never change (a new rule needs a new TAG).
GOLDEN_BOUNDARY_HASHES = {
    ("DY", "a.root"): 0x2BBEA49788D5C83A,
    ("SingleMuon", "root://eospublic.cern.ch//eos/opendata/cms/Run2016H/SingleMuon/x.root"): (
        0x07027C9365D4BD16
    ),
    ("é", "\udc80.root"): 0xB7BC6B6497A1D3B9,  # a lone surrogate: its "surrogatepass" bytes
}


def golden_fileset() -> dict[str, Any]:
    """A fixed fileset: 40 and 12 paths named by SHA-256 of their index (nothing random)."""

    def uid(i: int) -> str:
        return hashlib.sha256(str(i).encode()).hexdigest()[:32].upper()

    store = "root://eospublic.cern.ch//eos/opendata/cms/Run2016H/SingleMuon/NANOAOD/"
    return {
        "SingleMuon": {
            "files": {f"{store}{i % 3}/{uid(i)}.root": "Events" for i in range(40)},
            "metadata": {"is_mc": False},
        },
        "DYJets": {
            "files": {
                f"/store/mc/DY/{uid(100 + i)}.root": entry(1000 * (i + 1)) for i in range(12)
            },
            "metadata": {"is_mc": True, "xsec": 6077.22},
        },
    }


# golden_fileset()["SingleMuon"], files_per_chunk=8: m = 2, M = 32, D = 7.
GOLDEN_FILES_SIZES = [13, 6, 7, 3, 3, 8]
GOLDEN_FILES_HASHES = [
    "bd2dc78ac58d9aa91ced666a85e7d6b21993945df6dad3329669bd5288a1e3d7",
    "cd45b100e2cfe73d0faec311cf4075aeea9970909f01f83d87b7eaef6998badd",
    "e10ae3a973f1153edd36296e36d72070d6ecc521713a79d28d9a1d57dbd2d522",
    "2737a888fb4050a2afcdcdefa8b3d1c22fa1ffa13bad45d667a3e716494b1e29",
    "bafddc6b361bf0d228a18b921842bf2f465a86a22eb075edd8ed647068ee1ecc",
    "00dc466e9b0b2382c56bf50499c9b471f5c7040f968c36ae50c012ce72bb6ce6",
]
# golden_fileset()["DYJets"], events_per_chunk=10_000: m = 2,500, M = 40,000, D = 7,501.
GOLDEN_EVENTS_SIZES = [1, 1, 2, 2, 1, 1, 1, 1, 2]
GOLDEN_EVENTS_HASHES = [
    "5c4787c808427acf96ee34c5697413efb89dce903774235c63e8890f2e74b561",
    "ac5466a923106445fcd3355b5515dac25ee6e312008be9561ee330dad9367877",
    "052f1f2201ad69f8871c390b2d57bb4a9c5faeac4d4562691ad910c6e6d059a6",
    "5308f2fd891877402c26eb5929e9d4ca8d0fe3996e3d3187254d15dd9a199974",
    "2efdd85ffee283d266969e4e489afcb93e6bc236fbcd8f0d026633db6c2a4d9f",
    "e293e8a8fe318d5699986b8c257f707f436c4ad6e7f307d1f683f6b16f2a1185",
    "7940a79ef8057616f38d7c7a882c7ba2fd23630fa0aa76a740e6d5600ddb1494",
    "9e58e7473abcab32f398867567719309a4fd0688537189061f86c3e8ede85f6c",
    "8ef45abf4b242423bfb1c1c764c019845766d3b5d58deb179d943a4a5ef340c5",
]


def test_golden_boundary_hashes() -> None:
    for (dataset, path), want in GOLDEN_BOUNDARY_HASHES.items():
        assert boundary_hash(dataset, path) == want, (
            dataset,
            path,
            hex(boundary_hash(dataset, path)),
        )


def test_golden_chunks() -> None:
    fileset = golden_fileset()
    by_files = stable({"SingleMuon": fileset["SingleMuon"]}, 8)
    assert [len(c["SingleMuon"]["files"]) for c in by_files] == GOLDEN_FILES_SIZES
    assert chunkwise.hash_filesets(by_files) == GOLDEN_FILES_HASHES
    by_events = stable({"DYJets": fileset["DYJets"]}, 10_000, events=True)
    assert [len(c["DYJets"]["files"]) for c in by_events] == GOLDEN_EVENTS_SIZES
    assert chunkwise.hash_filesets(by_events) == GOLDEN_EVENTS_HASHES
    # And the plain rule above gives the same.
    assert [c for c, _ in reference_split({"SingleMuon": fileset["SingleMuon"]}, 8)] == by_files
    ref = reference_split({"DYJets": fileset["DYJets"]}, 10_000, events=True)
    assert [c for c, _ in ref] == by_events


# --- arguments ---------------------------------------------------------------------------------

SMALL = {"d": {"files": {"a.root": "Events", "b.root": "Events"}}}


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"stable": True}, ValueError, r"^stable=True needs files_per_chunk=N or events_per_chunk"),
        (
            {"stable": True, "percentage": 50},
            ValueError,
            r"^stable=True cannot be combined with percentage",
        ),
        (
            {"stable": True, "percentage": 50, "files_per_chunk": 2},
            ValueError,
            r"^stable=True cannot be combined with percentage",
        ),
        ({"stable": True, "files_per_chunk": 0}, ValueError, r"^files_per_chunk=0 is not allowed"),
        ({"stable": True, "events_per_chunk": -1}, ValueError, r"^events_per_chunk=-1 is not"),
        ({"stable": True, "files_per_chunk": 2.0}, TypeError, r"^files_per_chunk must be an int"),
        ({"stable": 1, "files_per_chunk": 2}, TypeError, r"^stable must be a bool .*not int$"),
        ({"stable": None, "files_per_chunk": 2}, TypeError, r"^stable must be a bool .*NoneType"),
        ({"stable": "yes", "files_per_chunk": 2}, TypeError, r"^stable must be a bool .*not str"),
        (
            {"stable": True, "files_per_chunk": 2, "events_per_chunk": 9},
            ValueError,
            r"^events_per_chunk cannot be combined",
        ),
        (
            {"stable": True, "files_per_chunk": 2, "strategy": "by_file"},
            ValueError,
            r"^Unknown strategy 'by_file'",
        ),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        chunkwise.split_fileset(SMALL, **kwargs)


def test_names_and_paths_must_be_str() -> None:
    with pytest.raises(TypeError, match=r"^stable=True needs every dataset name to be a str.*int"):
        chunkwise.split_fileset({1: SMALL["d"]}, files_per_chunk=2, stable=True)
    with pytest.raises(TypeError, match=r"^stable=True needs every path to be a str.*file 3 of"):
        chunkwise.split_fileset({"d": {"files": {3: "E", 4: "E"}}}, files_per_chunk=2, stable=True)

    class Path_(str):
        def encode(self, *args: Any) -> bytes:  # never called: the str's own text is hashed
            raise AssertionError

    subclassed = {"d": {"files": {Path_("a.root"): "E", Path_("b\udc80"): "E"}}}
    plain = {"d": {"files": {"a.root": "E", "b\udc80": "E"}}}
    assert stable(subclassed, 1) == stable(plain, 1)


def test_stable_false_is_the_positional_split() -> None:
    fileset = golden_fileset()
    muon, dy = {"SingleMuon": fileset["SingleMuon"]}, {"DYJets": fileset["DYJets"]}
    for fs, kwargs in (
        (muon, {"files_per_chunk": 3}),
        (dy, {"events_per_chunk": 5000}),
        (fileset, {"strategy": "by_dataset"}),
        (fileset, {"percentage": 20}),
    ):
        assert chunkwise.split_fileset(fs, stable=False, **kwargs) == chunkwise.split_fileset(
            fs, **kwargs
        )
    assert chunkwise.split_fileset(fileset, stable=False, percentage=20) == (
        coffea_tools.split_fileset(fileset, percentage=20)
    )


def test_split_options_carry_stable() -> None:
    fileset = golden_fileset()
    options = SplitOptions(files_per_chunk=5, stable=True)
    assert options.split(fileset) == stable(fileset, 5)
    assert options.given() == ["files_per_chunk", "stable"]
    assert SplitOptions(files_per_chunk=5).given() == ["files_per_chunk"]
    assert SplitOptions().given() == []
    with pytest.raises(ValueError, match="so files_per_chunk, stable cannot apply"):
        make_chunks([{}], options)
    # stable is no deprecated keyword: only SplitOptions carries it.
    with pytest.raises(TypeError, match="unexpected keyword argument 'stable'"):
        split_options(None, {"stable": True}, "run")
    assert split_options(options, {"percentage": None}, "run") is options


# --- the command line and a real run -----------------------------------------------------------


def cli(*args: Any, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chunkwise", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


def test_cli_split_records_stable(tmp_path: Path) -> None:
    fileset = golden_fileset()
    path = tmp_path / "fileset.json"
    path.write_text(json.dumps(fileset))
    out = tmp_path / "s"
    result = cli(
        "split",
        path,
        "--stable",
        "--events-per-chunk",
        10_000,
        "--datasets",
        "DYJets",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["options"]["stable"] is True
    assert manifest["options"]["events_per_chunk"] == 10_000
    want = chunkwise.hash_filesets(stable({"DYJets": fileset["DYJets"]}, 10_000, events=True))
    assert [c["hash"] for c in manifest["chunks"]] == want
    result = cli("split", path, "--files-per-chunk", "5", "--out", tmp_path / "p")
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["options"]["stable"] is False
    result = cli("split", path, "--stable", "--out", tmp_path / "bad")
    assert result.returncode == 2
    assert "stable=True needs files_per_chunk=N or events_per_chunk=N" in result.stderr
    result = cli("split", path, "--stable", "--percentage", "20", "--out", tmp_path / "bad")
    assert result.returncode == 2 and "cannot be combined with percentage" in result.stderr


def test_run_grown_fileset_computes_only_the_disturbed_chunks(tmp_path: Path) -> None:
    """``chunkwise run --stable``, then three files more: only the chunks that hold them (and
    the neighbours the rule disturbs) run again, the rest load from the cache, and the result
    equals a run from scratch."""
    from chunkwise.examples import write_nanoaod_like

    files = tmp_path / "files"
    files.mkdir()

    def make(i: int) -> str:
        name = hashlib.sha256(f"file {i}".encode()).hexdigest()[:12]
        write_nanoaod_like(files / f"{name}.root", 300, seed=i)
        return f"files/{name}.root"  # relative to tmp_path: the same chunks in every run

    base = [make(i) for i in range(12)]
    more = [make(i) for i in range(12, 15)]

    def fileset_json(paths: list[str], name: str) -> Path:
        out = tmp_path / name
        out.write_text(json.dumps({"DY": {"files": dict.fromkeys(paths, "Events")}}))
        return out

    def run(fileset: Path, tag: str, *cache: Any) -> tuple[dict[str, Any], Any]:
        report, output = tmp_path / f"{tag}.json", tmp_path / f"{tag}.coffea"
        result = cli(
            "run",
            fileset,
            "--stable",
            "--files-per-chunk",
            "2",
            "--processor",
            "chunkwise.examples:METProcessor",
            *cache,
            "--report",
            report,
            "--output",
            output,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        from coffea.util import load

        return json.loads(report.read_text()), load(output)

    cache = ("--cache", tmp_path / "cache")
    first, _ = run(fileset_json(base, "base.json"), "first", *cache)
    assert {c["status"] for c in first["chunks"]} == {"processed"}
    grown = fileset_json(base + more, "grown.json")
    # Before the rerun, status of the grown fileset splits as the run recorded (stable), and
    # counts the chunks already done: 5 of the 8.
    looked = cli("status", grown, "--cache", tmp_path / "cache", cwd=tmp_path)
    assert "split: files_per_chunk=2, stable" in looked.stdout, looked.stdout
    (all_row,) = [r.split() for r in looked.stdout.splitlines() if r.startswith("DY ")]
    assert all_row[1:3] == ["8", "5"]
    second, output = run(grown, "second", *cache)
    scratch, expected = run(grown, "scratch")

    old = {c["hash"] for c in first["chunks"]}
    status = {c["hash"]: c["status"] for c in second["chunks"]}
    assert set(status) == {c["hash"] for c in scratch["chunks"]}
    # Exactly the chunks not seen before are computed; all others come from the cache.
    assert {h for h, s in status.items() if s == "processed"} == set(status) - old
    assert {h for h, s in status.items() if s == "cached"} == set(status) & old
    # And those are only chunks of the stretches the new files fall in, and of the next ones:
    # in the old split, the chunks no longer there; in the new, the chunks computed.
    for paths_, changed, hashes_ in (
        (base, set(more), old - set(status)),
        (base + more, set(), {h for h, s in status.items() if s == "processed"}),
    ):
        ref = reference_split({"DY": {"files": dict.fromkeys(paths_, "Events")}}, 2)
        stretch_of_file = {p: s for c, s in ref for p in c["DY"]["files"]}
        if changed:
            touched = touched_stretches(paths_, stretch_of_file, changed, set())
        else:  # the new split, from which removing the new files gives the old one
            touched = {stretch_of_file[p] for p in more}
        hashes = chunkwise.hash_filesets([c for c, _ in ref])
        disturbed = {
            h for h, (_, s) in zip(hashes, ref, strict=True) if s in touched or s - 1 in touched
        }
        assert hashes_ <= disturbed
    n_processed = sum(1 for s in status.values() if s == "processed")
    assert (n_processed, len(status), len(first["chunks"])) == (3, 8, 7)  # 5 of 7 kept
    # The same histograms as a run from scratch.
    assert output["cutflow"] == expected["cutflow"]
    np.testing.assert_allclose(output["MET"].values(), expected["MET"].values(), rtol=1e-12)
