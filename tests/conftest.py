"""Fixtures shared by the test files."""

from __future__ import annotations

import collections
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def opening_counts(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """Count, without changing them, the three costly steps of opening a run's cache: deriving
    the tag (the processor's fingerprint: ``tag``), building a ``ChunkCache`` (``open``: its
    trust checks) and cleaning up stale temporaries (``clean``: a listing of its directory)."""
    import chunkwise.tag
    from chunkwise.cache import ChunkCache

    calls: collections.Counter[str] = collections.Counter()

    def count(owner: Any, name: str, label: str) -> None:
        real = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[label] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    count(chunkwise.tag, "tag_manifest", "tag")
    count(ChunkCache, "__init__", "open")
    count(ChunkCache, "remove_stale_temporaries", "clean")
    return calls


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real single-node Slurm (``tests/slurm_cluster.py``), started once for the session and
    stopped by PID at its end; skipped, with the reason, where it cannot run.
    ``CHUNKWISE_TEST_SLURM=off`` turns it off (CI runs the Slurm tests in one of its venvs), and
    ``CHUNKWISE_TEST_SLURM=require`` makes a Slurm that cannot start a failure, not a skip."""
    import os

    from slurm_cluster import SlurmCluster, unavailable_reason

    if os.environ.get("CHUNKWISE_TEST_SLURM") == "off":
        pytest.skip("CHUNKWISE_TEST_SLURM=off: the Slurm tests run in another of CI's venvs")
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CHUNKWISE_TEST_SLURM") == "require":  # CI: it must run
            pytest.fail(f"CHUNKWISE_TEST_SLURM=require, and no Slurm: {reason}")
        pytest.skip(f"no Slurm: {reason}")
    cluster = SlurmCluster.start(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs (a disk to fill), unmounted after the test; skipped where it
    cannot be mounted (not root)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)],
        capture_output=True, text=True,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)
