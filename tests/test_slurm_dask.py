"""``chunkwise.run`` on dask workers that a real Slurm starts (dask-jobqueue's ``SLURMCluster``,
``tests/slurm_cluster.py``), from Python and from ``chunkwise run --executor slurm``.

Real NanoAOD files from ``../shared/samples`` (skipped without them). The processor is defined
here, in a module the workers cannot import: it reaches them by value.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "samples"
pytestmark = pytest.mark.skipif(
    not (SAMPLES / "nano_dy.root").is_file(), reason="../shared/samples is not here"
)


def make_fileset(root: Path, n_dy: int = 6) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {"DY": {}, "Data": {}}
    for i in range(n_dy):
        shutil.copy(SAMPLES / "nano_dy.root", root / f"dy{i}.root")
        files["DY"][str(root / f"dy{i}.root")] = "Events"
    for i in range(2):
        shutil.copy(SAMPLES / "nano_dimuon.root", root / f"data{i}.root")
        files["Data"][str(root / f"data{i}.root")] = "Events"
    return {name: {"files": paths} for name, paths in files.items()}


def slow_met_processor(seconds: float) -> Any:
    """A MET processor that sleeps ``seconds`` per row chunk, defined in this test module."""
    import hist
    from coffea.processor import ProcessorABC, defaultdict_accumulator

    class SlowMETHere(ProcessorABC):
        def __init__(self, sleep: float) -> None:
            self.sleep = sleep

        def process(self, events: Any) -> dict[str, Any]:
            time.sleep(self.sleep)
            out = {
                "MET": hist.Hist(
                    hist.axis.StrCategory([], name="dataset", growth=True),
                    hist.axis.Regular(50, 0, 100, name="MET"),
                ),
                "cutflow": defaultdict_accumulator(int),
            }
            out["MET"].fill(dataset=events.metadata["dataset"], MET=events.MET.pt)
            out["cutflow"]["all events"] += len(events)
            return out

        def postprocess(self, accumulator: Any) -> Any:
            return accumulator

    return SlowMETHere(seconds)


def met_by_dataset(out: Any) -> dict[str, list[float]]:
    """The MET histogram's counts per dataset (a growing category's order is the fill order)."""
    h = out["MET"]
    return {name: h[{"dataset": name}].values(flow=True).tolist() for name in h.axes[0]}


def entries_in(cache: Path) -> int:
    return sum(1 for p in cache.rglob("*.coffea") if len(p.name) == 64 + len(".coffea"))


def test_run_on_slurm_workers_loses_nothing_when_a_worker_is_killed(
    slurm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    import chunkwise

    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))  # dask-jobqueue calls sbatch itself
    fileset = make_fileset(tmp_path / "files")
    proc = slow_met_processor(1.5)
    cluster = SLURMCluster(
        cores=1,
        processes=1,
        memory="2GiB",
        log_directory=str(tmp_path / "worker-logs"),
        silence_logs="error",
        scheduler_options={"dashboard": False},
    )
    client = Client(cluster)
    try:
        cluster.scale(jobs=2)
        client.wait_for_workers(2, timeout=120)
        jobs = [job.job_id for job in cluster.workers.values()]
        assert len(jobs) == 2 and all(j.isdigit() for j in jobs)
        running = slurm.job_states(jobs[0])
        assert running == {jobs[0]: "RUNNING"}, running  # the worker is a Slurm job
        runner = processor.Runner(
            processor.DaskExecutor(client=client, status=False),
            schema=NanoAODSchema,
        )
        cache = tmp_path / "cache"
        result: dict[str, Any] = {}

        def go() -> None:
            try:
                result["report"] = chunkwise.run(
                    fileset,
                    proc,
                    runner,
                    split=chunkwise.SplitOptions(strategy="by_dataset", files_per_chunk=1),
                    cache=cache,
                    progress=False,
                )
            except BaseException as err:  # said below, in the test's thread
                result["error"] = err

        thread = threading.Thread(target=go)
        thread.start()
        deadline = time.monotonic() + 180
        while entries_in(cache) < 2:
            assert thread.is_alive() and time.monotonic() < deadline, result
            time.sleep(0.1)
        killed = slurm.run("scancel", "--signal=KILL", jobs[0])
        assert killed.returncode == 0, killed.stderr
        thread.join(timeout=300)
        assert not thread.is_alive()
        assert "error" not in result, result.get("error")
        report = result["report"]
        assert report.complete, report.bad_files
        assert slurm.job_states(jobs[0])[jobs[0]] in ("CANCELLED", "FAILED", "COMPLETED")
        # The same call, plainly, on the same cluster (a worker replaced or not).
        plain = runner(fileset, processor_instance=slow_met_processor(0.0), treename="Events")
    finally:
        client.close()
        cluster.close()
    out = report.output
    assert dict(out["cutflow"]) == dict(plain["cutflow"]) == {"all events": 6 * 40 + 2 * 40}
    assert met_by_dataset(out) == met_by_dataset(plain)
    assert sorted(met_by_dataset(out)) == ["DY", "Data"]
    assert report.completeness == {"DY": 1.0, "Data": 1.0}
    assert report.file_counts["processed"] == 8  # each file once in the result
    # Every chunk is in the cache once: a second run loads all of them.
    again = chunkwise.run(
        fileset,
        proc,
        processor.Runner(processor.IterativeExecutor(), schema=NanoAODSchema),
        split=chunkwise.SplitOptions(strategy="by_dataset", files_per_chunk=1),
        cache=cache,
        progress=False,
    )
    assert again.file_counts == {"processed": 0, "cached": 8, "bad": 0}
    assert met_by_dataset(again.output) == met_by_dataset(plain)


def test_cli_executor_slurm(slurm, tmp_path: Path):
    fileset = make_fileset(tmp_path / "files", n_dy=3)
    (tmp_path / "fileset.json").write_text(json.dumps(fileset))
    env = slurm.env()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chunkwise", "run", "fileset.json", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )

    done = cli(
        "--processor",
        "chunkwise.examples:METProcessor",
        "--executor",
        "slurm",
        "--workers",
        "2",
        "--files-per-chunk",
        "1",
        "--cache",
        "cache",
        "--report",
        "report.json",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    assert "2 workers asked of Slurm" in done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["counts"]["files"] == {"total": 5, "processed": 5, "cached": 0, "bad": 0}
    # A job Slurm refuses is one line, before anything runs.
    refused = cli(
        "--processor",
        "chunkwise.examples:METProcessor",
        "--executor",
        "slurm",
        "--job-option=--partition=nosuch",
        "--cache",
        "cache",
    )
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "chunkwise run: error: --executor slurm: sbatch --test-only of a worker's job failed: "
        "invalid partition specified: nosuch"
    ]
    wrong = cli("--processor", "chunkwise.examples:METProcessor", "--job-option=--x")
    assert wrong.returncode == 2 and "--job-option is for --executor slurm" in wrong.stderr
