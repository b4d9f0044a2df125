"""Fixed cases for the Rust core: golden digests, the drop-in API, files_per_chunk, safety."""

from __future__ import annotations

import random
import subprocess
import sys
import threading

import pytest

import chunkwise

# The notebook's fileset (``shared/seed/split_fileset_notebook.txt``): two datasets of five
# CMS open-data files, the first with a broken host name.
_STORE = (
    "//eos/opendata/cms/mc/RunIISummer20UL16NanoAODv9/"
    "GluGluHToWWTo2L2Nu_M125_TuneCP5_13TeV_powheg2_JHUGenV714_pythia8/NANOAODSIM/"
    "106X_mcRun2_asymptotic_v17-v2/260000/"
)
_IDS_0 = [
    "A41320F6-C9F9-574C-8DD2-BD98C200E4EE",
    "A7FEFB1C-387F-2B4D-A111-C53CC9371EC7",
    "AB10FBAB-92C0-C043-933D-117FCC5704BA",
    "C6E8BB7F-7F54-0C4C-9EDF-479C7DBB12E4",
    "CB90AA65-868A-F548-A291-3837A3113162",
]
_IDS_1 = [
    "18B53494-657F-5744-8131-58ABA4EE00ED",
    "2CCE1139-F301-C341-AE1E-4D27AF294018",
    "300C603C-F1DD-4A40-B4DD-F4E0B239A460",
    "39251543-EE21-9C4C-80D5-5D9178F55C71",
    "3BD29D89-9C4A-E743-8616-C6806281BF12",
]


def notebook_fileset():
    host0 = ["root://eeeeeeospublic.cern.ch"] + ["root://eospublic.cern.ch"] * 4
    return {
        "SingleMu_0": {
            "files": {f"{h}{_STORE}{i}.root": "Events" for h, i in zip(host0, _IDS_0, strict=True)}
        },
        "SingleMu_1": {
            "files": {f"root://eospublic.cern.ch{_STORE}{i}.root": "Events" for i in _IDS_1}
        },
    }


def test_notebook_percentage_20_digests_match_the_notebook():
    chunks = chunkwise.split_fileset(notebook_fileset(), percentage=20)
    assert len(chunks) == 5
    # The notebook printed these prefixes; the full digests are coffea 2026.9.0's.
    assert [chunkwise.hash_fileset(c) for c in chunks] == [
        "5febc050e0c6fefd226d9c8d0221d6a1e526cf55f72714781924fb4d607cc1bf",
        "326dec702b8d8dcb5c4881b54ba79d7a36912b1259b4ceb8350d67d105a1e187",
        "28afadc5fe045cb3bf10c6c8efbc079157bb36ce5aa7447727878bf98bc1eca8",
        "7aab00fd83b06bd9f31837be92d777646460ba26b2f9329563db9a6c3b92142b",
        "bc4cbe30948b20ca0ad981f21aeec3690b38892bd16070f58f66c9927da67054",
    ]
    # Each mixed chunk holds one file of each dataset; the broken host sorts first.
    assert all(len(c) == 2 and all(len(d["files"]) == 1 for d in c.values()) for c in chunks)
    assert next(iter(chunks[0]["SingleMu_0"]["files"])).startswith("root://eeeeeeospublic")


def test_notebook_by_dataset_digests():
    chunks = chunkwise.split_fileset(notebook_fileset(), strategy="by_dataset")
    assert [list(c) for c in chunks] == [["SingleMu_0"], ["SingleMu_1"]]
    assert chunkwise.hash_filesets(chunks) == [
        "b43df18a3eb2468f71638669d3fd7b19eb3b135f6d2c6795bbfa7d0eef856b6b",
        "d73666d309681b466efd20014dafd2af3df6182396aad37aa68e1d8f074af219",
    ]


@pytest.mark.parametrize(
    ("chunk", "digest"),
    [
        ({}, "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"),
        (
            {"ds": {"files": ["b.root", "a.root"], "treename": "Events"}},
            "6326ca92298a7fd807a346fb59898405750fd106b191189e3c2ee50ba47065eb",
        ),
        (
            {
                "ttbar": {
                    "files": {
                        "f.root": {
                            "object_path": "Events",
                            "steps": [[0, 100], [100, 200]],
                            "num_entries": 200,
                            "uuid": "1f3e",
                        }
                    },
                    "metadata": {"xsec": 831.76, "is_mc": True},
                    "preload": {"Muon_pt", "Electron_pt"},
                }
            },
            "4c89785ef708819c07311eba1b0fd39cf85e229d7e6310d177e7fca626475f1e",
        ),
        (
            {
                "dé/μ😀": {
                    "files": {'a\x00"\\\x7f.root': None},
                    "metadata": {
                        2: "b",
                        10: [1e-05, 1e16, -0.0, float("nan"), float("inf"), 2**70, None],
                    },
                    "treename": "Events",
                }
            },
            "b55549631adfa099c4998270e9eeedf65945936f57afb64c1b33463684c016af",
        ),
    ],
    ids=["empty", "list-files", "preprocessed", "quirky"],
)
def test_golden_digests(chunk, digest):
    assert chunkwise.hash_fileset(chunk) == digest
    assert chunkwise.hash_filesets([chunk, chunk]) == [digest, digest]


def test_digest_ignores_insertion_order_and_bookkeeping_keys():
    a = {"d": {"files": {"x": "Events", "y": "Events"}, "compressed_form": "..."}}
    b = {"d": {"files": {"y": "Events", "x": "Events"}}}
    assert chunkwise.hash_fileset(a) == chunkwise.hash_fileset(b)
    c = {"d": {"files": {"y": "Events", "x": "Events"}, "metadata": {"xsec": 1.0}}}
    assert chunkwise.hash_fileset(c) != chunkwise.hash_fileset(b)


def test_split_reuses_the_callers_objects():
    meta = {"xsec": 1.0}
    fs = {"d": {"files": {"b": "Events", "a": "Events"}, "metadata": meta}}
    (whole,) = chunkwise.split_fileset(fs)
    assert whole["d"] is fs["d"]
    first, second = chunkwise.split_fileset(fs, percentage=50)
    assert first["d"]["metadata"] is meta
    assert list(first["d"]["files"]) == ["a"] and list(second["d"]["files"]) == ["b"]
    assert fs["d"]["files"] == {"b": "Events", "a": "Events"}  # the input is not changed


def test_files_per_chunk_any_size():
    fs = {
        "big": {"files": {f"f{i:03d}.root": "Events" for i in range(7)}},
        "small": {"files": ["s1.root", "s0.root"], "treename": "Events"},
    }
    mixed = chunkwise.split_fileset(fs, files_per_chunk=3)
    assert [{k: list(v["files"]) for k, v in c.items()} for c in mixed] == [
        {"big": ["f000.root", "f001.root", "f002.root"], "small": ["s0.root", "s1.root"]},
        {"big": ["f003.root", "f004.root", "f005.root"]},
        {"big": ["f006.root"]},
    ]
    per_ds = chunkwise.split_fileset(fs, strategy="by_dataset", files_per_chunk=3)
    assert [(list(c), len(next(iter(c.values()))["files"])) for c in per_ds] == [
        (["big"], 3),
        (["big"], 3),
        (["big"], 1),
        (["small"], 2),
    ]
    # A size larger than any dataset (even larger than a machine word) gives one chunk.
    assert chunkwise.split_fileset(fs, files_per_chunk=2**70) == chunkwise.split_fileset(
        fs, percentage=100
    )
    only_small = chunkwise.split_fileset(fs, datasets=["small"], files_per_chunk=1)
    assert [list(c["small"]["files"]) for c in only_small] == [["s0.root"], ["s1.root"]]
    # 20,000 chunks of 50 files: a size no percentage can give.
    many = {"d": {"files": {f"/store/{i:07d}.root": "Events" for i in range(1_000_000)}}}
    chunks = chunkwise.split_fileset(many, files_per_chunk=50)
    assert len(chunks) == 20_000
    assert all(len(c["d"]["files"]) == 50 for c in chunks)
    assert next(iter(chunks[-1]["d"]["files"])) == "/store/0999950.root"


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"files_per_chunk": 0}, ValueError),
        ({"files_per_chunk": -3}, ValueError),
        ({"files_per_chunk": -(2**70)}, ValueError),
        ({"files_per_chunk": 2.0}, TypeError),
        ({"files_per_chunk": True}, TypeError),
        ({"files_per_chunk": 5, "percentage": 20}, ValueError),
    ],
)
def test_files_per_chunk_rejects_bad_values(kwargs, exc):
    with pytest.raises(exc, match="files_per_chunk"):
        chunkwise.split_fileset({"d": {"files": {"a": "Events"}}}, **kwargs)


def test_error_messages_are_coffeas_then_say_what_to_do():
    # coffea's own test matches these words (`pytest.raises(ValueError, match="Unknown strategy")`).
    with pytest.raises(ValueError, match="^Unknown strategy 'per_file'. Use 'by_dataset' or None."):
        chunkwise.split_fileset({}, strategy="per_file")
    with pytest.raises(ValueError, match="^Dataset 'd' uses list-format files;.*treename=\""):
        chunkwise.split_fileset({"d": ["a.root"]})
    with pytest.raises(ValueError, match="^'percentage' must be an int.*files_per_chunk=N"):
        chunkwise.split_fileset({"d": {"files": {}}}, percentage=30)
    with pytest.raises(TypeError, match="^Unsupported dataset value type for 'd': list"):
        chunkwise.hash_fileset({"d": ["a.root"]})
    # A name Rust cannot hold (a lone surrogate) is formatted as coffea's f-string formats it.
    with pytest.raises(ValueError) as e:
        chunkwise.split_fileset({"x\ud800": {"files": ["a"]}})
    assert str(e.value).startswith("Dataset 'x\ud800' uses list-format files without")


def test_deep_metadata_raises_recursion_error_not_a_crash():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    chunk = {"d": {"files": {"a": "Events"}, "metadata": deep}}
    with pytest.raises(RecursionError):
        chunkwise.hash_fileset(chunk)
    with pytest.raises(RecursionError):
        chunkwise.hash_filesets([chunk])
    # Splitting never serializes metadata, so it is fine with it.
    assert chunkwise.split_fileset(chunk, percentage=50)[0]["d"]["metadata"] is deep


def test_concurrent_mutation_never_crashes():
    # Over 20,000 files in all, so that hash_fileset takes its threaded path.
    files = {f"/store/{i:05d}.root": "Events" for i in range(12_000)}
    fs = {"d": {"files": files, "metadata": {"k": [1, 2, 3]}}, "e": {"files": dict(files)}}
    stop = threading.Event()

    def mutate():
        i = 0
        while not stop.is_set():
            i += 1
            files[f"/new/{i}"] = "Events"
            files.pop(f"/new/{i - 1}", None)
            if i % 50 == 0:
                files[i] = "Events"  # a key that breaks sorting
                files.pop(i)
            fs["e"]["files"] = dict(files) if i % 2 else list(files)

    t = threading.Thread(target=mutate)
    t.start()
    outcomes = set()
    try:
        for _ in range(60):
            for call in (
                lambda: chunkwise.hash_fileset(fs),
                lambda: chunkwise.hash_filesets([fs, fs]),
                lambda: chunkwise.split_fileset(fs, percentage=10, treename="Events"),
            ):
                try:
                    call()
                    outcomes.add("ok")
                except (RuntimeError, TypeError, ValueError) as e:
                    outcomes.add(type(e).__name__)
    finally:
        stop.set()
        t.join()
    assert "ok" in outcomes
    # After the storm, results are still exact.
    from coffea.dataset_tools import hash_fileset as coffea_hash

    fs["e"]["files"] = dict(files)
    assert chunkwise.hash_fileset(fs) == coffea_hash(fs)


def test_large_chunks_match_coffea_on_the_threaded_path():
    from coffea.dataset_tools import hash_fileset as coffea_hash

    rng = random.Random(7)
    fs = {}
    for d in range(6):
        store = f"root://xrootd.example//store/{d}/"
        paths = [f"{store}{rng.getrandbits(64):016x}.root" for _ in range(9000)]
        fs[f"ds{d}"] = {"files": dict.fromkeys(paths, "Events"), "metadata": {"d": d}}
    fs["ds1"]["files"] = list(fs["ds1"]["files"])
    fs["ds1"]["treename"] = "Events"
    fs["ds2"]["files"]["/store/é/\udc80.root"] = None  # a lone surrogate: Python encodes it
    preprocessed = {"object_path": "Events", "num_entries": 5}
    fs["ds3"]["files"] = dict.fromkeys(fs["ds3"]["files"], preprocessed)
    fs["ds4"]["files"] = {p: "EO"[i % 2] for i, p in enumerate(fs["ds4"]["files"])}
    assert chunkwise.hash_fileset(fs) == coffea_hash(fs)
    assert chunkwise.hash_filesets([fs, {}]) == [coffea_hash(fs), coffea_hash({})]


def test_large_chunk_errors_come_in_coffeas_order():
    """coffea checks every dataset's structure before it encodes anything: a later dataset's
    structural error wins over an earlier dataset's unencodable metadata."""
    from coffea.dataset_tools import hash_fileset as coffea_hash

    files = {f"/store/{i:06d}.root": "Events" for i in range(30_000)}
    chunk = {
        "a": {"files": files, "metadata": {"runs": {1, 2}}},  # a set: json cannot encode it
        "b": {"files": ["x.root"]},  # list files without a treename: a ValueError
    }
    with pytest.raises(ValueError) as ours:
        chunkwise.hash_fileset(chunk)
    with pytest.raises(ValueError):
        coffea_hash(chunk)
    assert "treename" in str(ours.value)
    chunk["b"]["treename"] = "Events"
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        chunkwise.hash_fileset(chunk)
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        chunkwise.hash_filesets([{}, chunk])


def test_import_is_cheap_and_does_not_import_coffea():
    code = (
        "import sys, chunkwise; "
        "assert 'coffea' not in sys.modules and 'uproot' not in sys.modules; "
        "print(chunkwise.hash_fileset({}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def test_signatures_are_drop_in():
    import inspect

    from coffea.dataset_tools import hash_fileset, split_fileset

    ours = inspect.signature(chunkwise.split_fileset).parameters
    theirs = inspect.signature(split_fileset).parameters
    assert list(ours)[: len(theirs)] == list(theirs)
    assert all(ours[p].default is None for p in theirs if p != "fileset")
    assert ours["files_per_chunk"].kind is inspect.Parameter.KEYWORD_ONLY
    assert ours["events_per_chunk"].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(chunkwise.hash_fileset).parameters) == list(
        inspect.signature(hash_fileset).parameters
    )


def _no_panic(call):
    """Run ``call``; an ordinary exception is fine, a PanicException (a BaseException) is not."""
    try:
        call()
        return "ok"
    except Exception as e:  # noqa: BLE001 - any ordinary exception is an acceptable outcome
        return type(e).__name__
    except BaseException as e:
        if type(e).__name__ == "PanicException" or type(e).__module__ == "pyo3_runtime":
            pytest.fail(f"PanicException out of chunkwise: {e!r}")
        raise


def test_mutation_from_python_callbacks_gives_an_exception_not_a_panic():
    """Objects whose ``__lt__``/``__eq__``/``__hash__`` change the fileset, and garbage-collector
    callbacks that change it at every allocation, while chunkwise walks it."""
    import gc

    files = {f"/store/{i:04d}.root": "Events" for i in range(300)}
    other = {f"/other/{i:04d}.root": "Events" for i in range(300)}
    counter = [0]

    def mutate():
        counter[0] += 1
        i = counter[0]
        for d in (files, other):
            d[f"/new/{i}"] = "Events"
            d.pop(f"/new/{i - 1}", None)

    class Meddler:
        """A key or preload entry that changes the fileset whenever Python compares or hashes it."""

        def __init__(self, v):
            self.v = v

        def __lt__(self, o):
            mutate()
            return self.v < getattr(o, "v", 0)

        def __eq__(self, o):
            mutate()
            return self is o

        def __hash__(self):
            mutate()
            return hash(self.v)

    odd = dict(files)
    odd.update({Meddler(i): "Events" for i in range(5)})
    fs = {
        "a": {"files": files, "preload": [Meddler(2), Meddler(1)], "metadata": {"k": 1}},
        "b": {"files": other, "treename": "Events"},
        "c": {"files": {Meddler(i): "Events" for i in range(20)}},
        Meddler(9): {"files": dict(other)},
    }
    calls = [
        lambda: chunkwise.hash_fileset(fs),
        lambda: chunkwise.hash_filesets([fs, fs]),
        lambda: chunkwise.split_fileset(fs, percentage=10),
        lambda: chunkwise.split_fileset(fs, strategy="by_dataset", files_per_chunk=7),
        lambda: chunkwise.split_fileset(fs, datasets=["a", Meddler(9), "c"], percentage=50),
        lambda: chunkwise.hash_fileset({"a": {"files": odd}, "b": {"files": other}}),
    ]
    outcomes = {_no_panic(c) for c in calls}
    # The same calls again, with a garbage-collector callback that changes both dicts at every
    # collection, and collections as frequent as allocations can make them.
    threshold = gc.get_threshold()
    gc.callbacks.append(lambda phase, info: mutate())
    gc.set_threshold(1, 1, 1)
    try:
        outcomes |= {_no_panic(c) for c in calls}
    finally:
        gc.callbacks.pop()
        gc.set_threshold(*threshold)
    assert counter[0] > 0  # the callbacks did run
    assert "ok" in outcomes


def _preprocessed(counts):
    return {
        f"f{i}.root": {"object_path": "Events", "steps": [[0, n]], "num_entries": n, "uuid": "u"}
        for i, n in enumerate(counts)
    }


def test_events_per_chunk_packs_sorted_files_greedily():
    fs = {"big": {"files": _preprocessed([40, 30, 50, 200, 10, 10])}, "small": {"files": {}}}
    fs["small"]["files"] = _preprocessed([60, 60])
    mixed = chunkwise.split_fileset(fs, events_per_chunk=100)
    assert [{k: list(v["files"]) for k, v in c.items()} for c in mixed] == [
        {"big": ["f0.root", "f1.root"], "small": ["f0.root"]},  # 40+30 (+50 would pass 100)
        {"big": ["f2.root"], "small": ["f1.root"]},  # 50 (+200 would pass 100)
        {"big": ["f3.root"]},  # 200 > 100 stands alone
        {"big": ["f4.root", "f5.root"]},
    ]
    per_ds = chunkwise.split_fileset(fs, strategy="by_dataset", events_per_chunk=100)
    assert [(list(c), list(next(iter(c.values()))["files"])) for c in per_ds] == [
        (["big"], ["f0.root", "f1.root"]),
        (["big"], ["f2.root"]),
        (["big"], ["f3.root"]),
        (["big"], ["f4.root", "f5.root"]),
        (["small"], ["f0.root"]),
        (["small"], ["f1.root"]),
    ]
    only_small = chunkwise.split_fileset(fs, datasets=["small"], events_per_chunk=2**70)
    assert only_small == [{"small": fs["small"]}]


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"events_per_chunk": 0}, ValueError, "at least 1"),
        ({"events_per_chunk": -(2**70)}, ValueError, "at least 1"),
        ({"events_per_chunk": 2.0}, TypeError, "must be an int"),
        ({"events_per_chunk": True}, TypeError, "must be an int"),
        ({"events_per_chunk": 5, "percentage": 20}, ValueError, "cannot be combined"),
        ({"events_per_chunk": 5, "files_per_chunk": 2}, ValueError, "cannot be combined"),
    ],
)
def test_events_per_chunk_rejects_bad_values(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        chunkwise.split_fileset({"d": {"files": _preprocessed([1])}}, **kwargs)


def test_events_per_chunk_names_the_file_without_num_entries():
    files = _preprocessed([1, 2, 3])
    files["f1.root"] = {"object_path": "Events"}
    files["f2.root"] = "Events"
    with pytest.raises(ValueError, match="file 'f1.root' of dataset 'd' has no 'num_entries'"):
        chunkwise.split_fileset({"d": {"files": files}}, events_per_chunk=10)
    with pytest.raises(ValueError, match="file 'a.root' of dataset 'l'"):
        chunkwise.split_fileset({"l": ["b.root", "a.root"]}, treename="E", events_per_chunk=10)


def test_cli_split_events_per_chunk(tmp_path):
    import json

    source = tmp_path / "preprocessed.json"
    source.write_text(json.dumps({"d": {"files": _preprocessed([40, 30, 50, 200])}}))
    out = tmp_path / "chunks"
    run = [sys.executable, "-m", "chunkwise", "split", str(source), "--out", str(out)]
    done = subprocess.run([*run, "--events-per-chunk", "100"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["events_per_chunk"] == 100
    assert [c["datasets"] for c in manifest["chunks"]] == [{"d": 2}, {"d": 1}, {"d": 1}]
    both = subprocess.run(
        [*run, "--events-per-chunk", "100", "--files-per-chunk", "2", "--force"],
        capture_output=True,
        text=True,
    )
    assert both.returncode == 2 and "not allowed with" in both.stderr
    version = subprocess.run(
        [sys.executable, "-m", "chunkwise", "--version"], capture_output=True, text=True
    )
    assert (
        version.returncode == 0 and version.stdout.strip() == f"chunkwise {chunkwise.__version__}"
    )


def test_the_version_is_cargo_tomls_everywhere():
    import importlib.metadata
    import re
    from pathlib import Path

    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", chunkwise.__version__)
    assert chunkwise.__version__ == chunkwise._core.__version__
    try:
        assert importlib.metadata.version("chunkwise") == chunkwise.__version__
    except importlib.metadata.PackageNotFoundError:
        pass  # run from a source tree on PYTHONPATH: no metadata to compare
    cargo = Path(__file__).resolve().parent.parent / "Cargo.toml"
    if cargo.is_file():  # the source tree beside the tests
        written = re.search(r'^version = "([^"]+)"', cargo.read_text(), re.MULTILINE)
        assert written is not None and written.group(1) == chunkwise.__version__


def test_large_preprocessed_chunks_match_coffea():
    """Distinct file entries, natively encoded, on the threaded path, with a few rare values
    (a float, a lone surrogate, a dict subclass) that Python's json writes, and big ints."""
    from collections import OrderedDict

    from coffea.dataset_tools import hash_fileset as coffea_hash

    rng = random.Random(11)
    fs = {}
    for d in range(3):
        files = {}
        for i in range(9000):
            n = rng.randrange(0, 300_000)
            files[f"root://x//store/{d}/{rng.getrandbits(64):016x}.root"] = {
                "object_path": "Events",
                "steps": [[s, min(s + 100_000, n)] for s in range(0, n, 100_000)] or None,
                "num_entries": n if i % 1000 else 2**64 + i,
                "uuid": f"{rng.getrandbits(128):032x}",
            }
        fs[f"ds{d}"] = {"files": files, "metadata": {"d": d}}
    some = iter(fs["ds1"]["files"].values())
    next(some)["num_entries"] = 1.5
    next(some)["uuid"] = "\udc80"
    next(some)["sub"] = OrderedDict(b=1, a=2)  # a dict subclass: Python writes it
    next(some)["steps"] = ()
    next(some)["extra"] = {"b": [True, None], "a": -(2**70)}
    assert chunkwise.hash_fileset(fs) == coffea_hash(fs)
    assert chunkwise.hash_filesets([fs, {}]) == [coffea_hash(fs), coffea_hash({})]
    next(some)["bad"] = {1, 2}
    with pytest.raises(TypeError, match="^Object of type set is not JSON serializable"):
        chunkwise.hash_fileset(fs)
    with pytest.raises(TypeError, match="^Object of type set is not JSON serializable"):
        chunkwise.hash_filesets([{}, fs])
