"""chunkwise.tag: what changes the cache tag, what does not, and what it cannot see.

Processor modules are written into ``tmp_path``, one directory per version, and imported as a
new process would import them (earlier versions are dropped from ``sys.modules`` first), so an
"edited" module keeps its name, as it does when a user edits a file.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from typing import Any

import hist
import numpy as np
import pytest
from coffea import processor
from coffea.nanoevents import BaseSchema, NanoAODSchema

import chunkwise
from chunkwise.tag import (
    StaleModuleWarning,
    UnfingerprintableStateWarning,
    cache_tag,
    explain,
    tag_manifest,
)

RUNNER = processor.Runner(processor.IterativeExecutor(), schema=NanoAODSchema)

PROCESSOR = """
from coffea import processor

METCUT = {metcut}


class Proc(processor.ProcessorABC):
    def process(self, events):
        return {{"n": int((events.MET.pt > METCUT).sum())}}

    def postprocess(self, accumulator):
        return accumulator
"""

HELPED_PROCESSOR = """
import json  # the standard library: covered by the Python version, never hashed
import numpy as np  # installed: never hashed

from coffea import processor
from myhelpers import select_muons


class Proc(processor.ProcessorABC):
    def process(self, events):
        return {"n": len(select_muons(events))}

    def postprocess(self, accumulator):
        return accumulator
"""

HELPERS = """
import deeper


def select_muons(events):
    return events.Muon[events.Muon.pt > deeper.threshold()]
"""

DEEPER = """
def threshold():
    return {threshold}
"""


def _write(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        (directory / f"{name}.py").write_text(textwrap.dedent(source))


def _load(tmp_path: Path, directory: Path, name: str = "mymod") -> Any:
    """Import ``name`` from ``directory`` afresh, as a new process would."""
    for module_name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or ""
        if file.startswith(str(tmp_path)):
            del sys.modules[module_name]  # an earlier version, from another directory
    sys.path.insert(0, str(directory))
    importlib.invalidate_caches()
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(directory))


@pytest.fixture(autouse=True)
def _forget_tmp_modules(tmp_path: Path) -> Any:
    yield
    for module_name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[module_name]


def _tag_of(tmp_path: Path, version: str, files: dict[str, str]) -> str:
    directory = tmp_path / version
    _write(directory, files)
    module = _load(tmp_path, directory)
    return cache_tag(module.Proc(), RUNNER)


# -- code -------------------------------------------------------------------------------------
def test_a_module_constant_changes_the_tag(tmp_path: Path) -> None:
    first = _tag_of(tmp_path, "v1", {"mymod": PROCESSOR.format(metcut=0)})
    edited = _tag_of(tmp_path, "v2", {"mymod": PROCESSOR.format(metcut=50)})
    same_elsewhere = _tag_of(tmp_path, "v3", {"mymod": PROCESSOR.format(metcut=0)})
    assert first.startswith("Proc-") and len(first) == len("Proc-") + 16
    assert edited != first
    assert same_elsewhere == first  # where the project lives is not part of the tag


def test_code_in_the_users_own_imported_modules_changes_the_tag(tmp_path: Path) -> None:
    def files(threshold: int) -> dict[str, str]:
        return {
            "mymod": HELPED_PROCESSOR,
            "myhelpers": HELPERS,
            "deeper": DEEPER.format(threshold=threshold),
        }

    _write(tmp_path / "v1", files(20))
    old = tag_manifest(_load(tmp_path, tmp_path / "v1").Proc(), RUNNER)
    _write(tmp_path / "v2", files(25))  # only deeper.py, two imports away, differs
    new = tag_manifest(_load(tmp_path, tmp_path / "v2").Proc(), RUNNER)

    assert {"mymod", "myhelpers", "deeper", "mymod.Proc"} <= set(old["code"])
    # neither the standard library, nor installed packages, nor coffea: their versions cover them
    assert not {"json", "numpy", "coffea", "coffea.processor"} & set(old["code"])
    assert old["code"]["myhelpers"] == new["code"]["myhelpers"]
    assert explain(old, new) == ["code of module deeper changed"]
    assert json.dumps(old) != json.dumps(new)


def test_a_module_imported_inside_a_function_is_followed(tmp_path: Path) -> None:
    source = """
    from coffea import processor


    class Proc(processor.ProcessorABC):
        def process(self, events):
            import lazyhelper

            return lazyhelper.run(events)

        def postprocess(self, accumulator):
            return accumulator
    """
    lazy = "def run(events):\n    return {{'n': {n}}}\n"
    tags = []
    for version, n in (("v1", 1), ("v2", 2)):
        _write(tmp_path / version, {"mymod": source, "lazyhelper": lazy.format(n=n)})
        module = _load(tmp_path, tmp_path / version)
        sys.path.insert(0, str(tmp_path / version))
        try:
            importlib.import_module("lazyhelper")  # as after the first chunk ran
        finally:
            sys.path.remove(str(tmp_path / version))
        tags.append(cache_tag(module.Proc(), RUNNER))
    assert tags[0] != tags[1]


def test_data_a_helper_module_loads_at_import_changes_the_tag(tmp_path: Path) -> None:
    source = """
    from coffea import processor

    import scales

    YEAR = 2018


    class Proc(processor.ProcessorABC):
        def process(self, events):
            return {"w": scales.weight(YEAR) * len(events)}

        def postprocess(self, accumulator):
            return accumulator
    """
    helper = """
    import json
    from pathlib import Path

    SCALE = json.loads((Path(__file__).parent / "scale.json").read_text())


    def weight(year):
        return SCALE[str(year)]
    """
    tags = []
    for version, scale in (("v1", 1.0), ("v2", 1.1)):
        _write(tmp_path / version, {"mymod": source, "scales": helper})
        (tmp_path / version / "scale.json").write_text(json.dumps({"2018": scale}))
        module = _load(tmp_path, tmp_path / version)
        tags.append(cache_tag(module.Proc(), RUNNER))
        manifest = tag_manifest(module.Proc(), RUNNER)
    assert tags[0] != tags[1]  # the same .py files, another scale.json
    assert {"mymod.YEAR", "scales.SCALE"} <= set(manifest["globals"])
    assert "scales.json" not in manifest["globals"]  # only what the processor's code reads
    module.YEAR = 2017  # set at run time: the file still says 2018
    assert cache_tag(module.Proc(), RUNNER) != tags[1]


def test_a_module_edited_after_import_is_tagged_by_the_code_in_memory(tmp_path: Path) -> None:
    body = """
    from coffea import processor


    class Proc(processor.ProcessorABC):
        def process(self, events):
            return {{"n": len(events) * {factor}}}

        def postprocess(self, accumulator):
            return accumulator
    """
    _write(tmp_path / "v1", {"mymod": body.format(factor=1)})
    module = _load(tmp_path, tmp_path / "v1")
    fresh_old = cache_tag(module.Proc(), RUNNER)
    _write(tmp_path / "v1", {"mymod": body.format(factor=2)})  # edited, not reloaded
    with pytest.warns(StaleModuleWarning, match="mymod"):
        stale = cache_tag(module.Proc(), RUNNER)
    fresh_new = _tag_of(tmp_path, "v2", {"mymod": body.format(factor=2)})
    # the old code's results are never served to a process that runs the new code
    assert len({fresh_old, stale, fresh_new}) == 3


NOTEBOOK_CELL = """
from coffea import processor
from chunkwise.tag import cache_tag

METCUT = {metcut}
BINS = {{"a", "b", "c"}}


def passes(met):
    return met > METCUT


class Processor(processor.ProcessorABC):
    def process(self, events):
        return {{"n": int(passes(events.MET.pt).sum()), "bins": len(BINS)}}

    def postprocess(self, accumulator):
        return accumulator


print(cache_tag(Processor()))
"""


def _notebook_tag(metcut: int, hashseed: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", NOTEBOOK_CELL.format(metcut=metcut)],
        env={**os.environ, "PYTHONHASHSEED": hashseed},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_a_notebook_global_that_the_class_reads_changes_the_tag() -> None:
    # Defined in __main__ from a string: no source file, so the tag reads the class's bytecode
    # and the globals it reads, here through a helper function (METCUT) and directly (BINS).
    assert _notebook_tag(0, "1") == _notebook_tag(0, "2")
    assert _notebook_tag(0, "1") != _notebook_tag(50, "1")


# -- state ------------------------------------------------------------------------------------
class Holder(processor.ProcessorABC):
    """A processor whose attributes are whatever the test gives it."""

    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)

    def process(self, events: Any) -> Any:
        return {}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


class Corrections:
    def __init__(self, scale: float) -> None:
        self.scale = scale


@dataclasses.dataclass(frozen=True)
class Cuts:
    pt: float
    eta: float = 2.4


def _scaler(factor: float) -> Any:
    return lambda x: x * factor


def _hist(bins: int = 10, label: str = "MET", fill: tuple[float, ...] = (1.0,)) -> hist.Hist:
    h = hist.Hist.new.Reg(bins, 0, 200, name="met", label=label).StrCat(["A"], name="d").Weight()
    h.fill(met=np.array(fill) * 20, d="A")
    return h


def _nested(leaf: int, depth: int = 7) -> Any:
    value: Any = leaf
    for i in range(depth):
        value = {f"level{i}": [value]}
    return value


STATE_CHANGES = {
    "int-keyed dict": ({2018: 59.7}, {2018: 41.5}),
    "dict key type": ({1: "a"}, {"1": "a"}),
    "array values": (np.arange(3.0), np.array([0.0, 1.0, 3.0])),
    "array dtype": (np.arange(3, dtype=np.float64), np.arange(3, dtype=np.float32)),
    "array shape": (np.zeros((2, 3)), np.zeros((3, 2))),
    "non-contiguous array": (np.arange(6.0).reshape(2, 3).T, np.arange(6.0).reshape(3, 2)),
    "object array": (np.array([{"a": 1}], dtype=object), np.array([{"a": 2}], dtype=object)),
    "numpy scalar": (np.float64(1.5), np.float64(2.5)),
    "numpy scalar dtype": (np.float32(1.5), np.float64(1.5)),
    "set": ({"mu", "e"}, {"mu", "tau"}),
    "frozenset": (frozenset({1, 2}), frozenset({1, 3})),
    "set vs frozenset": ({1, 2}, frozenset({1, 2})),
    "hist contents": (_hist(fill=(1.0,)), _hist(fill=(2.0,))),
    "hist axis": (_hist(bins=10), _hist(bins=20)),
    "hist label": (_hist(label="MET"), _hist(label="MET [GeV]")),
    "deep nesting": (_nested(1), _nested(2)),
    "tuple vs list": ((1, 2), [1, 2]),
    "bool vs int": (True, 1),
    "int vs float": (1, 1.0),
    "user object": (Corrections(1.0), Corrections(1.1)),
    "dataclass": (Cuts(20.0), Cuts(25.0)),
    "dataclass default": (Cuts(20.0), Cuts(20.0, eta=2.5)),
    "closure": (_scaler(2.0), _scaler(3.0)),
    "lambda code": (lambda x: x > 1, lambda x: x >= 1),
    "bytes": (b"\x00", b"\x01"),
    "None vs empty": (None, ""),
}


@pytest.mark.parametrize("before, after", STATE_CHANGES.values(), ids=STATE_CHANGES.keys())
def test_changing_an_attribute_changes_the_tag(before: Any, after: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnfingerprintableStateWarning)
        tag = cache_tag(Holder(x=before), RUNNER)
        assert cache_tag(Holder(x=after), RUNNER) != tag
        assert cache_tag(Holder(x=copy.deepcopy(before)), RUNNER) == tag  # equal: same tag


def test_a_cycle_in_the_state_is_fingerprinted() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    proc = Holder(loop=loop)
    proc.me = proc
    tag = cache_tag(proc, RUNNER)
    again: list[Any] = [1]
    again.append(again)
    other = Holder(loop=again)
    other.me = other
    assert cache_tag(other, RUNNER) == tag
    other.loop[0] = 2
    assert cache_tag(other, RUNNER) != tag


def test_the_tag_is_the_same_in_processes_with_other_hash_seeds(tmp_path: Path) -> None:
    module = """
    import hist
    import numpy as np
    from coffea import processor


    class Proc(processor.ProcessorABC):
        def __init__(self):
            self.channels = {"ee", "mumu", "emu", "tautau", "jets"}
            self.mixed = {2018: "a", "2017": ("b", frozenset({"x", "y", "z"})), 3.5: None}
            self.weights = np.linspace(0, 1, 7)
            self.hist = hist.Hist.new.StrCat(["z", "y", "x"], name="c").Double()

        def process(self, events):
            return {}

        def postprocess(self, accumulator):
            return accumulator
    """
    _write(tmp_path / "mod", {"seedmod": module})
    script = (
        f"import sys, json; sys.path.insert(0, {str(tmp_path / 'mod')!r})\n"
        "import seedmod\n"
        "from chunkwise.tag import cache_tag, tag_manifest\n"
        "print(cache_tag(seedmod.Proc()))\n"
        "print(json.dumps(tag_manifest(seedmod.Proc()), sort_keys=True))\n"
    )
    outputs = set()
    for seed in ("0", "1", "12345"):
        result = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1, outputs


def test_unfingerprintable_state_warns_and_names_its_path(tmp_path: Path) -> None:
    path = tmp_path / "jec.txt"
    path.write_bytes(b"x")
    with open(path, "rb") as jec:
        proc = Holder(corrections={"jec": jec, "scale": 1.0})
        with pytest.warns(UnfingerprintableStateWarning) as caught:
            manifest = tag_manifest(proc, RUNNER)
    message = str(caught[0].message)
    assert "processor.corrections['jec'] (an _io.BufferedReader)" in message
    assert "cache_tag=" in message
    assert manifest["unfingerprintable"] == ["processor.corrections['jec'] (an _io.BufferedReader)"]

    sock = socket.socket()
    try:
        for value, name in (
            (threading.Lock(), "_thread.lock"),
            ((i for i in range(3)), "builtins.generator"),
            (io, "builtins.module"),
            (sock, "socket.socket"),
        ):
            with pytest.warns(UnfingerprintableStateWarning, match=f"processor.x .*{name}"):
                manifest = tag_manifest(Holder(x=value), RUNNER)
            assert manifest["state"]["x"]["digest"] == "unfingerprintable"
    finally:
        sock.close()


# -- versions and the Runner ------------------------------------------------------------------
def test_versions_change_the_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    import coffea

    base = tag_manifest(Holder(), RUNNER)
    assert base["versions"]["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert base["versions"]["coffea"] == coffea.__version__
    assert base["versions"]["chunkwise"] == chunkwise.__version__
    tag = cache_tag(Holder(), RUNNER)

    monkeypatch.setattr(coffea, "__version__", "2026.8.0")
    assert cache_tag(Holder(), RUNNER) != tag
    assert explain(base, tag_manifest(Holder(), RUNNER)) == [
        f"coffea version {base['versions']['coffea']} -> 2026.8.0"
    ]
    monkeypatch.undo()
    assert cache_tag(Holder(), RUNNER) == tag
    monkeypatch.setattr(chunkwise._core, "__version__", "9.9.9")
    assert cache_tag(Holder(), RUNNER) != tag


def test_the_runner_settings_that_change_the_output_change_the_tag() -> None:
    def tag(**settings: Any) -> str:
        runner = processor.Runner(processor.IterativeExecutor(), **settings)
        return cache_tag(Holder(), runner)

    base = tag(schema=NanoAODSchema)
    changed = [
        tag(schema=BaseSchema),
        tag(schema=NanoAODSchema, chunksize=50_000),
        tag(schema=NanoAODSchema, maxchunks=2),
        tag(schema=NanoAODSchema, align_clusters=True),
        tag(schema=NanoAODSchema, format="parquet"),
    ]
    assert len({base, *changed}) == 6
    # skipbadfiles decides which errors are salvaged, not what a chunk that ran returns
    assert tag(schema=NanoAODSchema, skipbadfiles=True, savemetrics=True) == base


# -- manifest and explain ---------------------------------------------------------------------
def test_the_manifest_is_json_and_hashes_to_the_tag() -> None:
    proc = Holder(lumi={2018: 59.7}, weights=np.ones(3), cuts=Cuts(20.0), h=_hist())
    manifest = tag_manifest(proc, RUNNER)
    assert json.loads(json.dumps(manifest)) == manifest
    assert set(manifest) >= {"format", "versions", "processor", "code", "state", "runner"}
    assert manifest["processor"] == f"{__name__}.Holder"
    assert manifest["state"]["lumi"]["what"] == "builtins.dict of 1"
    assert manifest["state"]["weights"]["what"] == "numpy.ndarray float64 (3,)"
    assert manifest["runner"]["chunksize"] == RUNNER.chunksize
    assert cache_tag(proc, RUNNER).startswith("Holder-")


def test_explain_names_each_difference() -> None:
    old = tag_manifest(Holder(lumi={2018: 59.7}, cut=20), RUNNER)
    assert explain(old, copy.deepcopy(old)) == []

    runner = processor.Runner(processor.IterativeExecutor(), schema=NanoAODSchema, chunksize=500)
    new = tag_manifest(Holder(lumi={2018: 41.5}, cut=30, extra="x"), runner)
    new["versions"]["coffea"] = "2099.1.0"
    new["code"][f"{__name__}.Holder"]["digest"] = "0" * 16
    assert explain(old, new) == [
        f"coffea version {old['versions']['coffea']} -> 2099.1.0",
        f"code of class {__name__}.Holder changed",
        "state 'cut' changed (int 20 -> int 30)",
        "state 'extra' added",
        "state 'lumi' changed",
        f"runner chunksize {RUNNER.chunksize} -> 500",
    ]
