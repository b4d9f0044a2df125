"""Differential tests: chunkwise against coffea 2026.9.0, the oracle, on adversarial inputs.

For every generated fileset and argument set, both implementations must return equal values of
the same container types with the same key order, byte-identical digests, or the same exception
type with a message that starts with coffea's exact text (chunkwise may add a hint after it).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict, defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chunkwise

coffea_tools = pytest.importorskip("coffea.dataset_tools")

EXAMPLES = int(os.environ.get("CHUNKWISE_HYPOTHESIS_EXAMPLES", "1500"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strings -----------------------------------------------------------------------------------

# Characters that stress the JSON escaper and the sort: quotes, backslash, control characters,
# DEL, Latin-1, BMP, astral, and lone surrogates (which have no UTF-8 form).
SPECIAL = ['"', "\\", "\x00", "\x1f", "\n", "\t", "\x7f", "é", "μ", "\uffff", "😀"]
SPECIAL += ["\ud800", "\udfff"]
any_text = st.text(st.characters(exclude_categories=()), max_size=6)
chars = st.one_of(st.sampled_from(SPECIAL), st.characters(exclude_categories=()))
PREFIXES = ["", "root://eospublic.cern.ch//eos/opendata/cms/mc/", "/store/data/Run2018A/", "a"]
paths = st.builds(
    lambda pre, tail: pre + tail,
    st.sampled_from(PREFIXES),
    st.one_of(st.text(chars, max_size=8), st.text("ab/.0", max_size=4)),
)
names = st.one_of(st.sampled_from(["A", "B", "ttbar", "DY", "é", "Z\ud800"]), any_text)

# --- JSON-ish values ---------------------------------------------------------------------------

floats = st.one_of(
    st.sampled_from([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 1e-05, 1e16, 1.5]),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**200),
    floats,
    any_text,
)


def _containers(children):
    return st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.one_of(any_text, st.integers(-5, 20)), children, max_size=3),
        st.dictionaries(any_text, children, max_size=3),
        st.dictionaries(st.integers(-100, 100), children, max_size=3),
    )


json_values = st.recursive(scalars, _containers, max_leaves=8)
# Values json cannot encode, or that sort_keys cannot order.
bad_values = st.sampled_from([{1, 2}, b"bytes", object, {"a": 1, 2: "b"}, {(1,): 2}, complex(1, 2)])
metadata = st.one_of(*[json_values] * 7, bad_values)

preprocessed = st.builds(
    lambda n, uuid: {"object_path": "Events", "steps": [[0, n]], "num_entries": n, "uuid": uuid},
    st.integers(0, 10**6),
    st.uuids().map(str),
)
tree_values = st.one_of(
    st.just("Events"),
    st.just("Events"),
    st.none(),
    st.sampled_from(["Events", "T", "é"]),
    preprocessed,
    any_text,
    st.integers(),
)

# --- files and datasets ------------------------------------------------------------------------

plain_files_dict = st.dictionaries(paths, tree_values, max_size=12)
odd_keys = st.one_of(paths, st.integers(-3, 3), st.just(float("nan")), st.tuples(paths))
odd_files_dict = st.dictionaries(odd_keys, tree_values, max_size=5)
path_lists = st.lists(paths, max_size=12)
odd_lists = st.lists(st.one_of(paths, st.integers(-3, 3), st.none()), max_size=5)

files_values = st.one_of(
    plain_files_dict,
    plain_files_dict,
    plain_files_dict.map(OrderedDict),
    plain_files_dict.map(lambda d: defaultdict(str, d)),
    odd_files_dict,
    path_lists,
    path_lists.map(tuple),
    odd_lists,
    st.sampled_from([None, "a.root", 5, {"a", "b"}]),
)

preloads = st.one_of(
    st.lists(st.sampled_from(["Muon_pt", "Jet_pt", "é", "MET_pt"]), max_size=4),
    st.frozensets(st.sampled_from(["Muon_pt", "Jet_pt", "MET_pt"]), max_size=3),
    st.sets(st.sampled_from(["Muon_pt", "Jet_pt", "MET_pt"]), max_size=3),
    st.lists(st.sampled_from(["Muon_pt", "Jet_pt"]), max_size=2).map(tuple),
    st.lists(st.one_of(st.integers(0, 3), st.just("x")), max_size=3),  # may not sort
    st.just("Muon_pt"),
    json_values,
)


@st.composite
def dataset_values(draw):
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(path_lists)  # bare list
    if kind == 1:
        return draw(path_lists.map(tuple))
    if kind == 2:
        return draw(st.sampled_from([None, 3, "files", {"a"}]))  # not a dataset
    data = {}
    keys = draw(
        st.lists(
            st.sampled_from(["files", "treename", "metadata", "preload", "compressed_form"]),
            unique=True,
            max_size=5,
        )
    )
    if draw(st.integers(0, 5)) > 0 and "files" not in keys:
        keys.insert(draw(st.integers(0, len(keys))), "files")
    for key in keys:
        if key == "files":
            data[key] = draw(files_values)
        elif key == "treename":
            data[key] = draw(st.one_of(st.just("Events"), tree_values))
        elif key == "metadata":
            data[key] = draw(metadata)
        elif key == "preload":
            data[key] = draw(preloads)
        else:
            data[key] = draw(any_text)
    if kind == 3:
        return OrderedDict(data)
    return data


filesets = st.dictionaries(names, dataset_values(), max_size=4) | st.dictionaries(
    st.one_of(names, st.integers(0, 3)), dataset_values(), max_size=3
)

# Mostly valid arguments, so that most examples get as far as the splitting itself.
percentages = st.one_of(
    st.none(),
    st.sampled_from([1, 2, 4, 5, 10, 20, 25, 50, 100, True]),
    st.sampled_from([1, 2, 4, 5, 10, 20, 25, 50, 100, True]),
    st.sampled_from([1, 2, 4, 5, 10, 20, 25, 50, 100, True]),
    st.sampled_from([False, 0, 3, 30, -5, 200, 20.0, "20", 2**70]),
)
strategies = st.sampled_from([None] * 4 + ["by_dataset"] * 4 + ["per_file", 0])


@st.composite
def dataset_selections(draw, fileset):
    kind = draw(st.integers(0, 5))
    keys = list(fileset)
    if kind == 0:
        return None
    if kind in (1, 2):
        chosen = draw(st.lists(st.sampled_from([*keys, "missing", "A"]), max_size=4))
        return chosen if kind == 1 else tuple(chosen)
    if kind == 3:
        return draw(st.sampled_from(["AB", "", "ttbar"]))  # a string iterates its characters
    if kind == 4:
        salt = draw(st.integers(0, 3))
        return lambda name: (len(str(name)) + salt) % 2 == 0
    return draw(st.sampled_from([[["unhashable"]], 5]))


# --- comparison --------------------------------------------------------------------------------


def assert_same(a, b, where="result"):
    """Equal values, same container types, same key order (NaN-safe via identity)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert len(a) == len(b), f"{where}: size"
        assert all(x is y or x == y for x, y in zip(a.keys(), b.keys(), strict=True)), (
            f"{where}: key order"
        )
        for (ka, va), (_, vb) in zip(a.items(), b.items(), strict=True):
            assert_same(va, vb, f"{where}[{ka!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a is b or a == b, f"{where}: {a!r} != {b!r}"


def outcome(fn, *args, **kwargs):
    try:
        return "ok", fn(*args, **kwargs)
    except RecursionError:
        raise
    except Exception as e:  # noqa: BLE001 - the exception's type and text are what we compare
        return "err", e


def assert_same_outcome(ours, theirs):
    """The same value, or the same exception type with a message that starts with coffea's."""
    assert ours[0] == theirs[0], f"chunkwise {ours!r} vs coffea {theirs!r}"
    if ours[0] == "err":
        mine, coffeas = ours[1], theirs[1]
        assert type(mine) is type(coffeas), (
            f"exception type: chunkwise {mine!r} vs coffea {coffeas!r}"
        )
        assert str(mine).startswith(str(coffeas)), (
            f"message: chunkwise {str(mine)!r} does not start with coffea's {str(coffeas)!r}"
        )
    else:
        assert_same(ours[1], theirs[1])


# --- the tests ---------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data(), fileset=filesets)
def test_split_fileset_matches_coffea(data, fileset):
    kwargs = {
        "strategy": data.draw(strategies),
        "datasets": data.draw(dataset_selections(fileset)),
        "percentage": data.draw(percentages),
        "treename": data.draw(st.sampled_from([None, "Events", "Events", "T"])),
    }
    kwargs = {k: v for k, v in kwargs.items() if v is not None or data.draw(st.booleans())}
    ours = outcome(chunkwise.split_fileset, fileset, **kwargs)
    theirs = outcome(coffea_tools.split_fileset, fileset, **kwargs)
    assert_same_outcome(ours, theirs)
    if ours[0] == "ok":
        # Chunks of the split are what people hash: compare those digests too.
        digests = [outcome(chunkwise.hash_fileset, c) for c in ours[1]]
        for chunk, mine in zip(theirs[1], digests, strict=True):
            assert_same_outcome(mine, outcome(coffea_tools.hash_fileset, chunk))
        if all(d[0] == "ok" for d in digests):
            assert chunkwise.hash_filesets(ours[1]) == [d[1] for d in digests]


@SETTINGS
@given(chunk=filesets)
def test_hash_fileset_matches_coffea(chunk):
    ours = outcome(chunkwise.hash_fileset, chunk)
    theirs = outcome(coffea_tools.hash_fileset, chunk)
    assert_same_outcome(ours, theirs)
    many = outcome(chunkwise.hash_filesets, [chunk, {}, chunk])
    if theirs[0] == "ok":
        assert many == ("ok", [theirs[1], coffea_tools.hash_fileset({}), theirs[1]])
    else:
        assert_same_outcome(many, theirs)


@settings(max_examples=max(EXAMPLES // 5, 50), deadline=None)
@given(
    fileset=st.dictionaries(
        names, st.dictionaries(paths, st.just("Events"), max_size=40).map(lambda f: {"files": f})
    ),
    size=st.integers(1, 45),
    by_dataset=st.booleans(),
)
def test_files_per_chunk_partitions_each_dataset(fileset, size, by_dataset):
    strategy = "by_dataset" if by_dataset else None
    chunks = chunkwise.split_fileset(fileset, strategy=strategy, files_per_chunk=size)
    for name, data in fileset.items():
        got = [p for c in chunks if name in c for p in c[name]["files"]]
        # Every file exactly once, in sorted order, at most `size` per chunk.
        assert got == sorted(data["files"])
        assert all(len(c[name]["files"]) <= size for c in chunks if name in c)
    # A size that divides evenly gives the same chunks as the matching percentage.
    for p in (50, 25, 20, 10):
        n_bins = 100 // p
        if all(len(d["files"]) == size * n_bins for d in fileset.values()) and fileset:
            assert chunks == coffea_tools.split_fileset(fileset, strategy=strategy, percentage=p)


# --- unusual containers, checked case by case ----------------------------------------------


class _ItemsOverride(dict):
    def items(self):
        return [("z", {"files": {"b": "E"}})]


class _Str(str):
    pass


class _RepeatsAName(dict):
    def items(self):
        return [("a", {"files": {"x": "E"}}), ("b", {"files": {"y": "E"}}), ("a", {"files": {}})]


def _mapping_cases():
    from collections import UserDict
    from types import MappingProxyType

    two = {"files": {"x": "E", "y": "E"}}
    return [
        ([], {}),
        (None, {}),
        ("abc", {}),
        ([("a", 1)], {}),
        ([], {"datasets": ["a"]}),
        (["a"], {"datasets": ["a"]}),
        ({"a": 1}, {"datasets": 5}),
        (_ItemsOverride(a=two), {"percentage": 50}),
        (_RepeatsAName(), {}),
        (_RepeatsAName(), {"percentage": 50}),
        (_RepeatsAName(), {"strategy": "by_dataset", "percentage": 50}),
        (UserDict({"a": two}), {"percentage": 50}),
        (MappingProxyType({"a": two}), {"percentage": 50}),
        ({"a": {"files": {_Str("b"): "E", _Str("a"): "E"}}}, {"percentage": 50}),
        ({"a": {"files": {"b": "E", 1: "E"}}}, {"percentage": 50}),
        ({"a": two, "b": {"files": None}}, {"percentage": 50}),
        ({"a": {"files": ["b", None]}, "b": {"files": None}}, {"percentage": 50, "treename": "T"}),
        ({"a": two}, {"strategy": ["by_dataset"]}),
        ({"a": two}, {"percentage": 2**64}),
        ({"a": two}, {"datasets": lambda k: 1 / 0}),
        ({"a": two}, {"datasets": lambda k: [1]}),
        ({"a": ("x", "y")}, {"treename": 5, "percentage": 50}),
    ]


@pytest.mark.parametrize(("fileset", "kwargs"), _mapping_cases())
def test_split_unusual_containers_match_coffea(fileset, kwargs):
    ours = outcome(chunkwise.split_fileset, fileset, **kwargs)
    theirs = outcome(coffea_tools.split_fileset, fileset, **kwargs)
    assert_same_outcome(ours, theirs)


def _chunk_cases():
    from collections import UserDict

    files = {"files": {"x": "E"}}
    unencodable = {"files": {"x": "E"}, "metadata": {"k": {1, 2}}}
    return [
        [],
        None,
        "abc",
        {"a": None},
        {"a": {"files": None}},
        _ItemsOverride(a={"files": {}}),
        UserDict({"a": files}),
        # Which error comes first: structure (any dataset) before encoding (in document order).
        {"a": unencodable, "b": 5},
        {"a": unencodable, "b": {"files": ["x"]}},
        {("t",): {"files": {}}},
        {1: {"files": {}}, 2: {"files": {}}},
        {1.5: {"files": {}}, None: {"files": {}}},
        {True: {"files": {}}},
        {"a": {"files": {"x": "E"}, "preload": {1, "a"}}},
        {"a": {"files": {"x": "E"}, "metadata": float("nan")}},
        {"a": OrderedDict(files={"x": "E"}, treename="T")},
        {"a": defaultdict(int, files={"y": "E", "x": None})},
        {"a": {"files": {_Str("x"): _Str("E")}}},
        {_Str("a"): {"files": {}}},
        {"a": {"files": {"x": {"object_path": "E", "steps": [[0, 1]]}, "y": set()}}},
    ]


@pytest.mark.parametrize("chunk", _chunk_cases())
def test_hash_unusual_containers_match_coffea(chunk):
    assert_same_outcome(
        outcome(chunkwise.hash_fileset, chunk), outcome(coffea_tools.hash_fileset, chunk)
    )
