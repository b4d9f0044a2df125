"""The optional parts: ``chunkwise[dask]`` and ``chunkwise[xrootd]``.

Without an extra, what needs it ends before anything runs: the command line with one line that
names the extra to install and exit status 2, the API with a ``MissingExtraError`` (a
``ModuleNotFoundError``). Nothing is written, and no file is processed.

The test environment has every extra installed, so each test here runs chunkwise in a
subprocess whose import system finds no ``distributed`` (or no ``fsspec_xrootd``/``XRootD``),
exactly as Python reports a package that is not installed. CI also runs the quick start in a
fresh venv without the extras and checks ``--executor dask`` there, for real.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chunkwise.extras import MissingExtraError, xrootd_paths

PROCESSOR = "chunkwise.examples:METProcessor"

# Run the code that follows with the named top-level packages uninstalled, as far as imports see.
WITHOUT = textwrap.dedent(
    """
    import sys

    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    BLOCKED = set(sys.argv[1].split(","))
    sys.meta_path.insert(0, NotInstalled())
    del sys.argv[1]
    """
)

CLI = WITHOUT + "from chunkwise.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def cli_without(blocked: str, *args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CLI, blocked, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def assert_one_line_naming(result: subprocess.CompletedProcess, extra: str, *words: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"pip install 'chunkwise[{extra}]'" in lines[0], lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture
def local_fileset(tmp_path: Path) -> Path:
    """A fileset of files that need no extra (they need not exist: nothing is run)."""
    path = tmp_path / "fileset.json"
    path.write_text(json.dumps({"DY": {"files": {"/data/dy.root": "Events"}}}))
    return path


@pytest.mark.parametrize(
    "option", [["--executor", "dask"], ["--executor", "dask", "--scheduler", "tcp://127.0.0.1:9"]]
)
def test_dask_without_the_extra_is_one_line_naming_it(
    tmp_path: Path, local_fileset: Path, option: list[str]
):
    result = cli_without(
        "distributed",
        "run",
        local_fileset,
        "--processor",
        PROCESSOR,
        "--cache",
        tmp_path / "cache",
        *option,
        cwd=tmp_path,
    )
    what = "--scheduler" if "--scheduler" in option else "--executor dask"
    assert_one_line_naming(result, "dask", f"chunkwise run: error: {what} needs distributed")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.entry"))


def test_a_root_path_without_the_extra_is_one_line_before_anything_runs(tmp_path: Path):
    demo = tmp_path / "demo"
    # A good local file first, so that a run that did not check first would process it.
    code = WITHOUT + textwrap.dedent(
        f"""
        from chunkwise.examples import make_demo_fileset
        fileset = make_demo_fileset({str(demo)!r})
        fileset["DYJets"]["files"]["root://eos.example//store/dy.root"] = "Events"
        import json
        json.dump(fileset, open({str(tmp_path / "fileset.json")!r}, "w"))
        """
    )
    subprocess.run([sys.executable, "-c", code, "nothing"], check=True, timeout=300)
    cache = tmp_path / "cache"
    for blocked in ("fsspec_xrootd", "XRootD"):
        result = cli_without(
            blocked,
            "run",
            tmp_path / "fileset.json",
            "--processor",
            PROCESSOR,
            "--cache",
            cache,
            "--files-per-chunk",
            "1",
            cwd=tmp_path,
        )
        assert_one_line_naming(
            result,
            "xrootd",
            "the root:// path 'root://eos.example//store/dy.root' needs fsspec-xrootd and xrootd",
        )
        assert not any(cache.rglob("*.entry")), "a file was processed before the check"


def test_the_api_raises_module_not_found_naming_the_extra(tmp_path: Path):
    code = WITHOUT + textwrap.dedent(
        """
        import chunkwise
        from chunkwise.examples import METProcessor
        from chunkwise.extras import MissingExtraError
        fileset = {"DY": {"files": {"root://eos.example//store/dy.root": "Events"}}}
        try:
            chunkwise.run(fileset, METProcessor(), progress=False)
        except ModuleNotFoundError as err:
            assert isinstance(err, MissingExtraError), type(err)
            print(err.name, err.extra, err, sep="|")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "fsspec_xrootd"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    name, extra, message = result.stdout.strip().split("|")
    assert (name, extra) == ("fsspec_xrootd", "xrootd")
    assert message.endswith("pip install 'chunkwise[xrootd]'")


def test_a_root_cache_without_the_extra_is_one_line(tmp_path: Path, local_fileset: Path):
    cache = "root://127.0.0.1//tmp/cache"
    for command in (["status", local_fileset, "--cache", cache], ["cache", "ls", cache]):
        result = cli_without("fsspec_xrootd", *command, cwd=tmp_path)
        assert_one_line_naming(result, "xrootd", f"the root:// cache {cache!r} needs")


def test_a_replica_on_root_needs_the_extra_too(tmp_path: Path, local_fileset: Path):
    code = WITHOUT + textwrap.dedent(
        """
        import chunkwise
        from chunkwise.examples import METProcessor
        from chunkwise.extras import MissingExtraError
        fileset = {"DY": {"files": {"/data/dy.root": "Events"}}}
        try:
            chunkwise.run(fileset, METProcessor(), progress=False,
                          replicas={"/data/": "root://mirror.example//data/"})
        except MissingExtraError as err:
            print(err)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "XRootD"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "root://mirror.example//data/" in result.stdout
    assert "pip install 'chunkwise[xrootd]'" in result.stdout


def test_a_broken_package_is_not_called_missing():
    # A ModuleNotFoundError from inside an installed package is its own bug, not a missing
    # extra: it propagates as it is.
    code = WITHOUT + textwrap.dedent(
        """
        from chunkwise import extras
        try:
            extras.distributed("--executor dask")
        except extras.MissingExtraError:
            print("missing extra")
        except ModuleNotFoundError as err:
            print("propagated", err.name)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "tornado"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "propagated tornado"


def test_xrootd_paths_finds_the_first_remote_one():
    assert xrootd_paths(["/a.root", "root://h//b.root", "roots://h//c.root"]) == "root://h//b.root"
    assert xrootd_paths(["/a.root", "file:///b.root", "ROOT.root"]) is None
    assert issubclass(MissingExtraError, ModuleNotFoundError)
