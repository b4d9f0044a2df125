"""``chunkwise submit condor`` and the whole batch loop on a real HTCondor pool.

The same loop as ``test_batch.py``'s on Slurm, with its files and helpers: the jobs of
``job.sub`` through ``condor_submit``, then ``status.sh``, ``resubmit.sh`` after the repair, and
``merge.sh``, whose result must equal one plain ``chunkwise run`` of the repaired fileset.

It needs a pool that runs this user's jobs on this file system: skipped, with the reason, unless
``condor_submit`` is on PATH, ``condor_status`` shows a slot and the user is not root (HTCondor
runs no job as root). CI runs it inside the chroot of ``.ci/condor-pool``, as its ``jobuser``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_batch import (
    SAMPLES,
    make_work,
    repair,
    retried_and_merged,
    script,
    status_rows,
    submit,
)

pytestmark = pytest.mark.skipif(
    not (SAMPLES / "nano_dy.root").is_file(), reason="../shared/samples is not here"
)

#: Seconds a set of jobs may take, from submission to the last one's end.
WAIT = 300
#: The job log's "Job terminated" event and how it ended.
_TERMINATED = re.compile(
    r"^005 \((\d+)\.(\d+)\.\d+\) .*\n\s*\(\d+\) (?:Normal termination \(return value (\d+)\)"
    r"|Abnormal termination \(signal (\d+)\))",
    re.MULTILINE,
)


def unavailable_reason() -> str | None:
    """Why no job can be run on an HTCondor pool from here, or None."""
    if shutil.which("condor_submit") is None:
        return "condor_submit is not on PATH"
    if os.geteuid() == 0:
        return "running as root, and HTCondor runs no job as root"
    try:
        done = subprocess.run(
            ["condor_status", "-af", "Name", "State"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"condor_status: {err}"
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        return f"condor_status does not answer: {said[-1] if said else done.returncode}"
    if not done.stdout.strip():
        return "condor_status shows no slot"
    return None


@pytest.fixture(scope="module")
def condor() -> None:
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CHUNKWISE_TEST_CONDOR") == "require":  # CI: it must run
            pytest.fail(f"CHUNKWISE_TEST_CONDOR=require, and no HTCondor pool: {reason}")
        pytest.skip(f"no HTCondor pool: {reason}")


def run(*cmd: str, timeout: float = 60) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (cmd, done.stdout, done.stderr)
    return done.stdout


def queue(cluster: str) -> str:
    """The cluster's jobs still in the queue, for an assertion's message."""
    return subprocess.run(
        ["condor_q", cluster, "-af", "ProcId", "JobStatus", "HoldReason"],
        capture_output=True,
        text=True,
    ).stdout


def wait(log: Path, job: str) -> dict[int, int]:
    """Wait (at most ``WAIT`` s) for the job ``cluster`` or ``cluster.proc`` of the job log to
    end; how each of the cluster's jobs that ended did: its exit status, or minus its signal."""
    done = subprocess.run(
        ["condor_wait", "-wait", str(WAIT), str(log), job], capture_output=True, text=True
    )
    assert done.returncode == 0, (done.stdout, done.stderr, queue(job.split(".")[0]))
    ended = {}
    for cluster, proc, status, signal in _TERMINATED.findall(log.read_text()):
        if int(cluster) == int(job.split(".")[0]):
            ended[int(proc)] = int(status) if status else -int(signal)
    return ended


def test_job_file_is_what_condor_submit_reads(condor: None, tmp_path: Path):
    """``condor_submit -dry-run`` of ``job.sub``: a job per line of ``jobs.txt``, each running
    ``task.sh`` on its chunk in the working directory, with a ``--scheduler-option`` applied."""
    work = make_work(tmp_path / "work")
    env = dict(os.environ)
    done = submit(work, "batch", env, "--scheduler-option=request_memory = 300", scheduler="condor")
    assert done.returncode == 0, done.stderr
    batch = work / "batch"
    said = run("condor_submit", "-dry-run", "-", str(batch / "job.sub"))
    # The first job's whole ad, then each other job's differences, each ended by a line ".".
    ads: list[dict[str, str]] = []
    ad: dict[str, str] = {}
    for line in said.splitlines():
        if line == ".":
            ads.append(dict(ads[0], **ad) if ads else ad)
            ad = {}
        elif "=" in line:
            name, value = line.split("=", 1)
            ad[name] = value
    jobs = (batch / "jobs.txt").read_text().splitlines()
    assert len(ads) == len(jobs) == 3, said
    for i, (ad, chunk) in enumerate(zip(ads, jobs, strict=True)):
        assert ad["ProcId"] == str(i) and ad["Args"] == f'"{chunk}"', said
        assert ad["Cmd"] == f'"{batch / "task.sh"}"' and ad["Iwd"] == f'"{work}"', said
        out = batch / "logs" / f"{ad['ClusterId']}.{i}.out"
        assert ad["Out"] == f'"{out}"' and ad["RequestMemory"] == "300", said


def test_batch_loop_on_condor_equals_one_plain_run(condor: None, tmp_path: Path):
    """The jobs, status while and after they run, the repair and resubmission of exactly what
    is not done, and the merge, as the README says to run them."""
    work = make_work(tmp_path / "work")
    env = dict(os.environ)
    # Held, so that status can be read while the jobs are part-way: one job released first.
    done = submit(work, "batch", env, scheduler="condor")
    assert done.returncode == 0, done.stderr
    batch = work / "batch"
    assert done.stdout.strip() == str(batch / "job.sub")
    submitted = run("condor_submit", "-append", "hold = True", str(batch / "job.sub"))
    n_jobs = len((batch / "jobs.txt").read_text().splitlines())
    found = re.search(r"(\d+) job\(s\) submitted to cluster (\d+)\.", submitted)
    assert found is not None, submitted
    assert int(found.group(1)) == n_jobs == 3
    cluster = found.group(2)
    held = run("condor_q", cluster, "-af", "ProcId", "JobStatus").split("\n")
    assert sorted(line for line in held if line) == [f"{i} 5" for i in range(n_jobs)]  # held
    log = batch / "logs" / "condor.log"
    run("condor_release", f"{cluster}.0")
    assert wait(log, f"{cluster}.0") == {0: 0}
    while_running = script(batch / "status.sh", env)
    assert while_running.returncode == 1, while_running.stderr
    rows = status_rows(while_running.stdout)
    assert rows["(all)"][:4] == [str(n_jobs), "1", "0", str(n_jobs - 1)], while_running.stdout
    run("condor_release", cluster)
    ended = wait(log, cluster)
    # Every job ended by itself; the one with the bad files with chunkwise run's status 1.
    assert sorted(ended) == list(range(n_jobs)) and sorted(ended.values()) == [0, 0, 1], ended
    # Each job has its own output and error, with chunkwise run's summary.
    for proc in range(n_jobs):
        text = "".join(
            (batch / "logs" / f"{cluster}.{proc}.{ext}").read_text() for ext in ("out", "err")
        )
        assert "chunks: 1 (" in text, text
    assert len(list((batch / "logs").glob(f"{cluster}.*.out"))) == n_jobs
    after = script(batch / "status.sh", env)
    assert after.returncode == 1
    assert "failed: DY: dy_missing.root: FileNotFoundError" in after.stdout
    assert "failed: DY: dy_trunc.root: OSError" in after.stdout
    rows = status_rows(after.stdout)
    assert rows["DY"][5:8] == ["4/6", "(66.7%)", "2"], after.stdout
    assert rows["Data"][5] == "2/2" and rows["TT"][5] == "1/1"

    repair(work)
    resubmitted = script(batch / "resubmit.sh", env)
    assert resubmitted.returncode == 0, resubmitted.stderr
    retry_cluster = resubmitted.stdout.strip()
    assert retry_cluster.isdigit() and retry_cluster != cluster, resubmitted.stdout
    retried_and_merged(
        batch,
        work,
        env,
        lambda: wait(batch / "retry-1" / "logs" / "condor.log", retry_cluster) == {0: 0, 1: 0},
    )
