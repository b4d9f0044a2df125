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

# File entries as coffea's preprocess writes them, and variations the core must encode exactly:
# big and negative ints, bools, None or empty steps, tuples, extra keys, nested values, and rare
# values (floats, non-str keys, lone surrogates, unencodable objects) that Python's json writes.
big_ints = st.one_of(
    st.integers(-(2**63) - 2, -(2**63) + 2),
    st.integers(2**63 - 2, 2**64 + 2),
    st.integers(-(2**200), 2**200),
)
entry_ints = st.one_of(st.integers(0, 10**6), st.integers(), big_ints, st.booleans())
steps = st.one_of(
    st.lists(st.lists(entry_ints, min_size=2, max_size=2), max_size=3),
    st.lists(st.lists(entry_ints, min_size=2, max_size=2), max_size=3),
    st.lists(st.tuples(entry_ints, entry_ints), max_size=2),
    st.lists(st.lists(entry_ints, max_size=3), max_size=2).map(tuple),
    st.none(),
    st.just([]),
    st.just([[]]),
)
entry_extras = st.one_of(
    st.none(),
    st.booleans(),
    entry_ints,
    any_text,
    steps,
    json_values,
    st.sampled_from([b"x", {1, 2}, float("nan"), 1.5, -0.0]),
)
preprocessed = st.builds(
    lambda obj, stp, n, uuid, extra, order: dict(
        sorted(
            {
                "object_path": obj,
                "steps": stp,
                "num_entries": n,
                "uuid": uuid,
                **extra,
            }.items(),
            key=lambda kv: order.index(kv[0]) if kv[0] in order else -1,
        )
    ),
    st.one_of(st.just("Events"), any_text),
    steps,
    st.one_of(entry_ints, st.none()),
    st.one_of(st.uuids().map(str), any_text),
    st.one_of(
        st.just({}),
        st.just({}),
        st.dictionaries(any_text, entry_extras, max_size=3),
        st.dictionaries(st.one_of(st.integers(0, 3), st.none()), entry_extras, max_size=2),
    ),
    st.permutations(["object_path", "steps", "num_entries", "uuid"]),
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


# --- events_per_chunk, against a plain-Python reference of the rule ---------------------------


class _NoNumEntries(Exception):
    """The reference's error: this file has no usable ``num_entries``."""

    def __init__(self, path, dataset):
        super().__init__(path, dataset)
        self.path, self.dataset = path, dataset


def _num_entries(value):
    """The file's ``num_entries`` if usable: an int (not a bool) >= 0 in a dict."""
    if not isinstance(value, dict):
        return None
    n = dict.get(value, "num_entries")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        return None
    return n


def reference_events_split(fileset, events_per_chunk, strategy=None, datasets=None, treename=None):
    """The ``events_per_chunk`` rule, written plainly.

    Datasets are selected and normalized as coffea does (coffea itself does that part). Then,
    per dataset, files in sorted path order are packed greedily: a file joins the current bin
    unless that would take the bin past ``events_per_chunk`` events, and a bin always takes at
    least one file. ``strategy="by_dataset"`` gives each dataset's bins in turn; ``None`` puts
    the i-th bin of every dataset in the i-th chunk.

    Parameters
    ----------
    fileset, strategy, datasets, treename
        As for ``split_fileset``.
    events_per_chunk : int
        The most events a bin holds, unless one file alone has more.

    Returns
    -------
    list of dict
        The chunks.

    Raises
    ------
    _NoNumEntries
        For the first file (datasets in order, files in sorted order) without a usable
        ``num_entries``, once every dataset's files have been sorted.
    """
    whole = coffea_tools.split_fileset(
        fileset, strategy="by_dataset", datasets=datasets, treename=treename
    )
    normalized = [next(iter(c.items())) for c in whole]
    listed = []
    for _, data in normalized:
        files = data.get("files", {})
        if isinstance(files, dict):
            listed.append((True, sorted(files.items())))
        elif isinstance(files, (list, tuple)):
            listed.append((False, sorted(files)))
        else:
            raise TypeError(
                f"Expected dataset['files'] to be a dict or list, got {type(files).__name__}"
            )
    per_dataset = []
    for (name, data), (is_dict, items) in zip(normalized, listed, strict=True):
        bins, current, total = [], [], 0
        for item in items:
            n = _num_entries(item[1]) if is_dict else None
            if n is None:
                raise _NoNumEntries(item[0] if is_dict else item, name)
            if current and total + n > events_per_chunk:
                bins.append(current)
                current, total = [], 0
            current.append(item)
            total += n
        if current:
            bins.append(current)
        rebuilt = [{**data, "files": dict(b) if is_dict else list(b)} for b in bins]
        per_dataset.append((name, rebuilt))
    if strategy == "by_dataset":
        return [{name: b} for name, bins in per_dataset for b in bins]
    n_chunks = max((len(bins) for _, bins in per_dataset), default=0)
    return [{name: bins[i] for name, bins in per_dataset if i < len(bins)} for i in range(n_chunks)]


entry_counts = st.one_of(
    st.integers(0, 120),
    st.integers(0, 120),
    st.integers(0, 120),
    st.just(0),
    st.integers(2**63 - 2, 2**70),
)


@st.composite
def file_entries(draw):
    """A preprocessed file entry, mostly usable, sometimes without a usable ``num_entries``."""
    n = draw(entry_counts)
    entry = {"object_path": "Events", "steps": [[0, n]], "num_entries": n, "uuid": "u"}
    kind = draw(st.integers(0, 30))
    if kind == 0:
        del entry["num_entries"]
    elif kind == 1:
        entry["num_entries"] = draw(st.sampled_from([None, True, -1, 1.5, "7", -(2**70)]))
    elif kind == 2:
        return draw(st.sampled_from(["Events", None]))
    elif kind == 3:
        return OrderedDict(entry)
    return entry


preprocessed_files = st.one_of(
    st.dictionaries(paths, file_entries(), max_size=12),
    st.dictionaries(paths, file_entries(), max_size=12),
    st.dictionaries(paths, file_entries(), max_size=12),
    st.dictionaries(st.one_of(paths, st.integers(-3, 3)), file_entries(), max_size=4),
    st.lists(paths, max_size=3),
    st.sampled_from([None, 5]),
)


@st.composite
def preprocessed_datasets(draw):
    data = {"files": draw(preprocessed_files)}
    if draw(st.booleans()):
        data["metadata"] = {"xsec": 1.0}
    if draw(st.integers(0, 3)) == 0:
        data["treename"] = "Events"
    return data


preprocessed_filesets = st.dictionaries(names, preprocessed_datasets(), max_size=4)


def _events_outcome(fileset, n, **kwargs):
    try:
        return "ok", reference_events_split(fileset, n, **kwargs)
    except _NoNumEntries as e:
        return "missing", e
    except Exception as e:  # noqa: BLE001 - compared by type and text
        return "err", e


@SETTINGS
@given(
    data=st.data(),
    fileset=preprocessed_filesets,
    n=st.one_of(st.integers(1, 300), st.integers(1, 300), st.just(2**70)),
)
def test_events_per_chunk_matches_the_reference(data, fileset, n):
    kwargs = {
        "strategy": data.draw(st.sampled_from([None, "by_dataset"])),
        "datasets": data.draw(dataset_selections(fileset)),
        "treename": data.draw(st.sampled_from([None, "Events"])),
    }
    ours = outcome(chunkwise.split_fileset, fileset, events_per_chunk=n, **kwargs)
    ref = _events_outcome(fileset, n, **kwargs)
    if ref[0] == "missing":
        assert ours[0] == "err" and type(ours[1]) is ValueError, ours
        assert f"file {ref[1].path!r} of dataset {ref[1].dataset!r}" in str(ours[1])
    else:
        assert_same_outcome(ours, ref)


@SETTINGS
@given(
    data=st.data(),
    fileset=st.dictionaries(
        names,
        st.fixed_dictionaries(
            {"files": st.one_of(plain_files_dict, odd_files_dict)},
            optional={"metadata": json_values, "treename": st.just("Events")},
        ),
        max_size=4,
    ),
    per_file=st.integers(0, 1000),
    k=st.integers(1, 13),
)
def test_events_per_chunk_with_equal_files_is_files_per_chunk(data, fileset, per_file, k):
    """With every file holding the same number of events, bins of k files' worth of events are
    bins of k files: exactly the chunks files_per_chunk=k gives (same shapes, types and order)."""
    for d in fileset.values():
        d["files"] = {p: {"num_entries": per_file, "uuid": "u"} for p in d["files"]}
    kwargs = {
        "strategy": data.draw(strategies),
        "datasets": data.draw(dataset_selections(fileset)),
    }
    by_files = outcome(chunkwise.split_fileset, fileset, files_per_chunk=k, **kwargs)
    # Empty files all fit in one bin, whatever k is.
    n = max(per_file * k, 1)
    by_events = outcome(chunkwise.split_fileset, fileset, events_per_chunk=n, **kwargs)
    if per_file == 0 and by_files[0] == "ok":
        by_files = outcome(chunkwise.split_fileset, fileset, files_per_chunk=2**70, **kwargs)
    assert_same_outcome(by_events, by_files)


# --- preprocessed filesets, whose file entries the core encodes itself ------------------------

preprocessed_chunks = st.dictionaries(
    names,
    st.fixed_dictionaries(
        {
            "files": st.one_of(
                st.dictionaries(paths, preprocessed, max_size=8),
                st.dictionaries(paths, st.one_of(preprocessed, tree_values), max_size=8),
                st.dictionaries(paths, preprocessed.map(OrderedDict), max_size=3),
            )
        },
        optional={"metadata": json_values, "treename": st.just("Events")},
    ),
    max_size=3,
)


@SETTINGS
@given(chunk=preprocessed_chunks)
def test_hash_preprocessed_matches_coffea(chunk):
    theirs = outcome(coffea_tools.hash_fileset, chunk)
    assert_same_outcome(outcome(chunkwise.hash_fileset, chunk), theirs)
    many = outcome(chunkwise.hash_filesets, [{}, chunk])
    if theirs[0] == "ok":
        assert many == ("ok", [coffea_tools.hash_fileset({}), theirs[1]])
    else:
        assert_same_outcome(many, theirs)
