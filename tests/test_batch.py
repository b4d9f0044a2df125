"""``chunkwise submit`` and the whole batch loop on a real Slurm (``tests/slurm_cluster.py``).

Real NanoAOD files from ``../shared/samples`` (skipped without them): three datasets, one file
truncated and one path missing. The job files ``submit`` writes are run as a user would run
them: the array through ``sbatch``, then ``status.sh``, ``resubmit.sh`` after the repair, and
``merge.sh``, whose result must equal one plain ``chunkwise run`` of the repaired fileset.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "samples"
pytestmark = pytest.mark.skipif(
    not (SAMPLES / "nano_dy.root").is_file(), reason="../shared/samples is not here"
)

PROCESSOR = "slowmet:SlowMET"
#: A processor beside the fileset (imported from the jobs' working directory), slowed down by
#: $SLOWMET_SECONDS per row chunk so that a job can be caught while it runs.
SLOWMET = """
import os
import time

from chunkwise.examples import METProcessor


class SlowMET(METProcessor):
    def process(self, events):
        time.sleep(float(os.environ.get("SLOWMET_SECONDS", "0")))
        return super().process(events)
"""


def make_work(root: Path, bare_dy: bool = False) -> Path:
    """The working directory: the files, the processor and ``fileset.json``; with ``bare_dy``,
    DY lists its files without their tree (``--treename Events`` names it)."""
    root.mkdir(parents=True, exist_ok=True)
    files = {"DY": {}, "Data": {}, "TT": {}}
    for i in range(4):
        shutil.copy(SAMPLES / "nano_dy.root", root / f"dy{i}.root")
        files["DY"][f"dy{i}.root"] = "Events"
    (root / "dy_trunc.root").write_bytes((SAMPLES / "nano_dy.root").read_bytes()[:150_000])
    files["DY"]["dy_trunc.root"] = "Events"
    files["DY"]["dy_missing.root"] = "Events"
    for i in range(2):
        shutil.copy(SAMPLES / "nano_dimuon.root", root / f"data{i}.root")
        files["Data"][f"data{i}.root"] = "Events"
    shutil.copy(SAMPLES / "nano_tt_v12.root", root / "tt0.root")
    files["TT"]["tt0.root"] = "Events"
    fileset: dict[str, Any] = {
        name: {"files": paths, "metadata": {"isMC": name != "Data"}}
        for name, paths in files.items()
    }
    if bare_dy:
        fileset["DY"]["files"] = list(files["DY"])
    (root / "fileset.json").write_text(json.dumps(fileset, indent=1))
    (root / "slowmet.py").write_text(SLOWMET)
    return root


def repair(work: Path) -> None:
    """What the physicist does after status names the bad files."""
    shutil.copy(SAMPLES / "nano_dy.root", work / "dy_trunc.root")
    shutil.copy(SAMPLES / "nano_dy.root", work / "dy_missing.root")


def cw(
    work: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chunkwise", *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )


def script(path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(path), *args], cwd="/", env=env, capture_output=True, text=True
    )


def submit(
    work: Path, out: str, env: dict[str, str], *extra: str, scheduler: str = "slurm"
) -> subprocess.CompletedProcess[str]:
    return cw(
        work,
        "submit",
        scheduler,
        "fileset.json",
        "--processor",
        PROCESSOR,
        "--cache",
        "cache",
        "--out",
        out,
        "--files-per-chunk",
        "2",
        *extra,
        env=env,
    )


def plain_run(work: Path, env: dict[str, str], *extra: str) -> tuple[Any, dict[str, Any]]:
    """One plain ``chunkwise run`` of the (repaired) fileset, without a cache."""
    done = cw(
        work,
        "run",
        "fileset.json",
        "--processor",
        PROCESSOR,
        "--output",
        "plain.coffea",
        "--report",
        "plain.json",
        "--no-progress",
        *extra,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return load_output(work / "plain.coffea"), json.loads((work / "plain.json").read_text())


def load_output(path: Path) -> Any:
    from coffea.util import load

    return load(str(path))


def assert_same_result(batch_dir: Path, work: Path, env: dict[str, str], *extra: str) -> None:
    """The merge's output and report against a plain run: histograms (values and variances),
    cutflow, and per dataset its files, events, Σw and completeness."""
    import numpy as np

    out = load_output(batch_dir / "result.coffea")
    report = json.loads((batch_dir / "report.json").read_text())
    plain_out, plain_report = plain_run(work, env, *extra)
    assert sorted(out) == sorted(plain_out) == ["MET", "cutflow"]
    assert dict(out["cutflow"]) == dict(plain_out["cutflow"])
    assert out["cutflow"]["all events"] == 4 * 40 + 2 * 40 + 2 * 40 + 200  # every file once
    assert list(out["MET"].axes[0]) == list(plain_out["MET"].axes[0])
    np.testing.assert_array_equal(out["MET"].values(flow=True), plain_out["MET"].values(flow=True))
    np.testing.assert_array_equal(
        out["MET"].variances(flow=True), plain_out["MET"].variances(flow=True)
    )
    assert report["complete"] and plain_report["complete"]

    def per_dataset(rep: dict[str, Any]) -> dict[str, Any]:
        keep = (
            "files_total",
            "files_ok",
            "files_bad",
            "events",
            "completeness",
            "sumw",
            "sumw2",
            "gen_events",
        )
        return {name: {k: row[k] for k in keep} for name, row in rep["datasets"].items()}

    # Σw and Σw² are float sums: over other groupings of the files (chunks, then their
    # merge) they can differ in the last bit.
    mine, plain = per_dataset(report), per_dataset(plain_report)
    for row in mine.values():
        for name in ("sumw", "sumw2"):
            if row[name] is not None:
                row[name] = pytest.approx(row[name], rel=1e-12)
    assert mine == plain
    assert per_dataset(report)["DY"]["completeness"] == 1.0
    assert per_dataset(report)["DY"].get("sumw"), "the merged report has DY's sum of weights"


def retried_and_merged(
    batch: Path, work: Path, env: dict[str, str], retry_done: Any, *extra: str
) -> None:
    """After ``resubmit.sh`` of a loop over ``make_work``'s fileset: the retry holds exactly
    the two repaired files, one per job; once ``retry_done()`` (true when its jobs all ended
    well), status is complete, resubmit.sh has nothing left, and merge.sh loads everything
    from the cache and equals a plain run (``extra``: its options)."""
    retry = json.loads((batch / "retry-1.json").read_text())
    assert {d: sorted(v["files"]) for d, v in retry.items()} == {
        "DY": ["dy_missing.root", "dy_trunc.root"]
    }
    assert retry["DY"]["metadata"] == {"isMC": True}
    assert (batch / "retry-1" / "jobs.txt").read_text().count("\n") == 2  # one file per job
    assert retry_done()
    final = script(batch / "status.sh", env)
    assert final.returncode == 0, final.stdout
    assert status_rows(final.stdout)["(all)"][5] == "9/9"
    # Once done, resubmit.sh says so and submits nothing.
    again = script(batch / "resubmit.sh", env)
    assert again.returncode == 0 and "nothing to resubmit" in again.stderr
    assert not (batch / "retry-2").exists() and not (batch / "retry-2.json").exists()
    merged = script(batch / "merge.sh", env, "--no-progress")
    assert merged.returncode == 0, merged.stderr
    report = json.loads((batch / "report.json").read_text())
    assert report["counts"]["files"]["processed"] == 0, report["counts"]  # all from the cache
    assert_same_result(batch, work, env, *extra)


def status_rows(text: str) -> dict[str, list[str]]:
    """``status``'s table, by dataset: the columns after the name."""
    rows = {}
    for line in text.splitlines():
        words = line.split()
        if words and words[0] in ("DY", "Data", "TT", "(all)"):
            rows[words[0]] = words[1:]
    return rows


# ----------------------------------------------------------------------------- job files


def test_submit_writes_job_files_that_say_every_step(tmp_path: Path):
    work = make_work(tmp_path / "work")
    env = dict(os.environ)
    done = submit(work, "batch", env, "--max-running", "3", "--scheduler-option=--partition=debug")
    assert done.returncode == 0, done.stderr
    batch = work / "batch"
    assert done.stdout.strip() == str(batch / "job.slurm")
    manifest = json.loads((batch / "chunks" / "manifest.json").read_text())
    jobs = (batch / "jobs.txt").read_text().splitlines()
    assert len(jobs) == manifest["n_chunks"] == 3  # the i-th 2 files of every dataset
    for line, entry in zip(jobs, manifest["chunks"], strict=True):
        assert line == str(batch / "chunks" / entry["file"])
        hashed = cw(work, "hash", line)
        assert hashed.stdout.split()[0] == entry["hash"]
    slurm = (batch / "job.slurm").read_text()
    assert f"#SBATCH --array=1-{len(jobs)}%3\n" in slurm
    assert "#SBATCH --partition=debug\n" in slurm
    assert f'#SBATCH --chdir="{work}"\n' in slurm
    for name in ("job.slurm", "task.sh", "status.sh", "resubmit.sh", "merge.sh", "env.sh"):
        checked = subprocess.run(["bash", "-n", str(batch / name)], capture_output=True, text=True)
        assert checked.returncode == 0, (name, checked.stderr)
    for name in ("task.sh", "status.sh", "resubmit.sh", "merge.sh", "job.slurm"):
        assert os.access(batch / name, os.X_OK), name
    task = (batch / "task.sh").read_text()
    assert "chunkwise run" in task and f"--cache {work / 'cache'}" in task
    assert f"--processor {PROCESSOR}" in task and "--no-progress" in task
    # The split was recorded in the cache: status without options splits as the jobs do.
    status = cw(work, "status", "fileset.json", "--cache", "cache")
    assert status.returncode == 1, status.stderr
    assert "split: files_per_chunk=2" in status.stdout
    assert status_rows(status.stdout)["(all)"][:4] == ["3", "0", "0", "3"]

    # HTCondor: one job per line of jobs.txt, on a shared file system.
    done = submit(work, "condor", env, scheduler="condor")
    assert done.returncode == 0, done.stderr
    sub = (work / "condor" / "job.sub").read_text()
    assert f"queue chunk from {work / 'condor' / 'jobs.txt'}\n" in sub
    assert f"executable            = {work / 'condor' / 'task.sh'}\n" in sub
    assert f"initialdir            = {work}\n" in sub
    assert "arguments             = $(chunk)\n" in sub


def test_submit_without_a_shared_file_system_transfers_what_a_job_needs(tmp_path: Path):
    work = make_work(tmp_path / "work")
    key = work / "cache.key"
    key.write_bytes(os.urandom(32).hex().encode())
    key.chmod(0o600)
    cache = f"root://127.0.0.1:1094/{tmp_path}/cache"
    common = ["submit", "condor", "fileset.json", "--processor", PROCESSOR, "--files-per-chunk"]
    # The cache must be reachable from the sandbox, and the environment said.
    done = cw(work, *common, "2", "--cache", "cache", "--out", "c1", "--no-shared-fs")
    assert done.returncode == 2 and "root://" in done.stderr and len(done.stderr.splitlines()) == 1
    done = cw(
        work,
        *common,
        "2",
        "--cache",
        str(work / "c"),
        "--out",
        "c2",
        "--no-shared-fs",
        "--scheduler-option=x",
        "--cache-key-file",
        str(key),
    )
    assert done.returncode == 2 and "root://" in done.stderr
    done = cw(
        work,
        "submit",
        "slurm",
        "fileset.json",
        "--processor",
        PROCESSOR,
        "--cache",
        cache,
        "--cache-key-file",
        str(key),
        "--out",
        "s",
        "--no-shared-fs",
    )
    assert done.returncode == 2 and "HTCondor" in done.stderr
    assert not (work / "c1").exists() and not (work / "c2").exists() and not (work / "s").exists()
    # Written (the cache is opened to record the split; here no server answers, so the
    # plan is written from a local cache and checked for what it transfers).
    from chunkwise.batch import BatchPlan, write_batch
    from chunkwise.chunks import SplitOptions, make_chunks

    fileset = json.loads((work / "fileset.json").read_text())
    options = SplitOptions(files_per_chunk=2)
    plan = BatchPlan(
        scheduler="condor",
        fileset=str(work / "fileset.json"),
        processor=PROCESSOR,
        cache=cache,
        workdir=str(work),
        options=options,
        key_file=str(key),
        setup="source /cvmfs/sft.cern.ch/lcg/views/LCG_107/x86_64-el9-gcc13-opt/setup.sh",
        shared_fs=False,
        module_file=str(work / "slowmet.py"),
    )
    written = write_batch(plan, make_chunks(fileset, options), str(work / "nofs"))
    sub = Path(written["job_file"]).read_text()
    assert f"transfer_input_files  = $(chunk), {key}, {work / 'slowmet.py'}\n" in sub
    assert "should_transfer_files = YES\n" in sub and "initialdir" not in sub
    task = (work / "nofs" / "task.sh").read_text()
    assert "--cache-key-file cache.key" in task and f"cd {work}" not in task
    assert 'chunk="$(basename "$1")"' in task
    assert "source /cvmfs/" in (work / "nofs" / "env.sh").read_text()
    # The sandbox has no env.sh: the job carries the setup itself.
    assert "source /cvmfs/" in task and f". {work / 'nofs' / 'env.sh'}" not in task


def test_submit_refuses_bad_usage_in_one_line_and_keeps_what_is_there(tmp_path: Path):
    work = make_work(tmp_path / "work")
    (work / "batch").mkdir()
    (work / "batch" / "mine.txt").write_text("keep me")
    done = submit(work, "batch", dict(os.environ))
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "not an empty directory" in done.stderr
    assert (work / "batch" / "mine.txt").read_text() == "keep me"
    assert sorted(p.name for p in (work / "batch").iterdir()) == ["mine.txt"]
    assert not (work / "cache").exists()  # refused before the cache was touched
    done = cw(
        work,
        "submit",
        "slurm",
        "fileset.json",
        "--processor",
        "nosuch:P",
        "--cache",
        "cache",
        "--out",
        "b2",
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert not (work / "b2").exists()
    # --submit where sbatch is not on PATH: the files are written, and the command to use said.
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + ":/nonexistent")
    done = submit(work, "b3", env, "--submit")
    if shutil.which("sbatch", path=env["PATH"]) is None:
        assert done.returncode == 2 and "sbatch is not on PATH" in done.stderr
        assert (work / "b3" / "job.slurm").is_file()


def test_submit_on_a_full_disk_says_so_and_leaves_nothing(tmp_path: Path, tmpfs: Path):
    work = make_work(tmp_path / "work")
    (tmpfs / "filler").write_bytes(b"\0" * (shutil.disk_usage(tmpfs).free - 8192))
    (tmpfs / "empty").mkdir()
    for out in (tmpfs / "batch", tmpfs / "empty"):
        done = submit(work, str(out), dict(os.environ))
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"chunkwise submit: error: --out {str(out)!r}: the job files could not be written "
            "(No space left on device); nothing was left there"
        ]
    assert sorted(p.name for p in tmpfs.iterdir()) == ["empty", "filler"]
    assert list((tmpfs / "empty").iterdir()) == []


# ----------------------------------------------------------------------------- on real Slurm


def test_batch_loop_on_slurm_equals_one_plain_run(slurm, tmp_path: Path):
    """The array, status while and after it runs, the repair and resubmission of exactly what
    is not done, and the merge, as the README says to run them."""
    work = make_work(tmp_path / "work", bare_dy=True)
    env = slurm.env()
    # Held, so that status can be read while the array is part-way: one task released first.
    done = submit(work, "batch", env, "--treename", "Events")
    assert done.returncode == 0, done.stderr
    held = slurm.run("sbatch", "--parsable", "--hold", done.stdout.strip())
    job = held.stdout.strip()
    assert job.isdigit(), held.stdout
    batch = work / "batch"
    n_jobs = len((batch / "jobs.txt").read_text().splitlines())
    assert slurm.job_states(job) == {f"1-{n_jobs}": "PENDING"}
    slurm.run("scontrol", "release", f"{job}_1")
    slurm.wait(f"{job}_1")
    while_running = script(batch / "status.sh", env)
    assert while_running.returncode == 1, while_running.stderr
    rows = status_rows(while_running.stdout)
    assert rows["(all)"][:4] == [str(n_jobs), "1", "0", str(n_jobs - 1)], while_running.stdout
    slurm.run("scontrol", "release", f"{job}_[2-{n_jobs}]")
    states = slurm.wait(job)
    assert len(states) == n_jobs and set(states.values()) <= {"COMPLETED", "FAILED"}
    # Each task has its own log, with chunkwise run's summary.
    logs = sorted((batch / "logs").iterdir())
    assert len(logs) == n_jobs
    assert all("chunks: 1 (" in log.read_text() for log in logs)
    after = script(batch / "status.sh", env)
    assert after.returncode == 1
    assert "failed: DY: dy_missing.root: FileNotFoundError" in after.stdout
    assert "failed: DY: dy_trunc.root: OSError" in after.stdout
    rows = status_rows(after.stdout)
    assert rows["DY"][5:8] == ["4/6", "(66.7%)", "2"], after.stdout
    assert rows["Data"][5] == "2/2" and rows["TT"][5] == "1/1"
    # Merging now would compute what is not done on this machine: merge.sh refuses, in a line.
    early = script(batch / "merge.sh", env)
    assert early.returncode == 1, early.stderr
    assert early.stderr.strip().splitlines()[-1].startswith("merge.sh: not everything is done")
    assert not (batch / "result.coffea").exists() and not (batch / "report.json").exists()

    repair(work)
    resubmitted = script(batch / "resubmit.sh", env)
    assert resubmitted.returncode == 0, resubmitted.stderr
    retry_job = resubmitted.stdout.strip()
    retried_and_merged(
        batch,
        work,
        env,
        lambda: set(slurm.wait(retry_job).values()) == {"COMPLETED"},
        "--treename",
        "Events",
    )


def test_a_task_killed_mid_chunk_and_requeued_loses_nothing(slurm, tmp_path: Path):
    work = make_work(tmp_path / "my work")  # a space in every path the job files name
    repair(work)
    env = dict(slurm.env(), SLOWMET_SECONDS="3")
    done = submit(work, "batch", env, "--max-running", "1", "--submit")
    assert done.returncode == 0, done.stderr
    job = done.stdout.strip()
    batch = work / "batch"
    log = batch / "logs" / f"{job}_1.log"
    # Wait until task 1 is inside the chunk (the cache is open), then kill it outright.
    deadline = time.monotonic() + 120
    while not (log.exists() and "cache:" in log.read_text()):
        assert time.monotonic() < deadline, slurm.job_states(job)
        time.sleep(0.2)
    time.sleep(2)
    slurm.run("scancel", "--signal=KILL", f"{job}_1")
    deadline = time.monotonic() + 60
    while slurm.job_states(f"{job}_1").get("1") in ("RUNNING", "COMPLETING"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    killed_state = slurm.job_states(f"{job}_1")["1"]
    assert killed_state in ("CANCELLED", "FAILED"), killed_state
    assert "chunks: 1 (" not in log.read_text()  # it never finished
    status = script(batch / "status.sh", env)
    assert status.returncode == 1
    slurm.run("scontrol", "requeue", f"{job}_1")
    slurm.run("scontrol", "update", f"JobId={job}_1", "StartTime=now")  # no requeue delay
    states = slurm.wait(job, timeout=600)
    assert set(states.values()) == {"COMPLETED"}, states
    text = log.read_text()
    assert text.count("cache:") == 2 and "chunks: 1 (1 processed" in text  # the retry's
    verify = cw(work, "cache", "verify", "cache", env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    merged = script(batch / "merge.sh", env, "--no-progress")
    assert merged.returncode == 0, merged.stderr
    assert json.loads((batch / "report.json").read_text())["counts"]["files"]["processed"] == 0
    assert_same_result(batch, work, dict(env, SLOWMET_SECONDS="0"))


def test_tasks_at_the_same_time_on_one_cache(slurm, tmp_path: Path):
    """The same array submitted twice at once: up to four tasks run together, two of them on
    the same chunk, all writing one cache."""
    work = make_work(tmp_path / "work")
    repair(work)
    env = dict(slurm.env(), SLOWMET_SECONDS="0.5")
    done = submit(work, "batch", env)
    assert done.returncode == 0, done.stderr
    first = slurm.run("sbatch", "--parsable", "--hold", done.stdout.strip()).stdout.strip()
    again = slurm.run("sbatch", "--parsable", "--hold", str(work / "batch" / "job.slurm"))
    second = again.stdout.strip()
    slurm.run("scontrol", "release", first)
    slurm.run("scontrol", "release", second)
    seen_running = 0
    deadline = time.monotonic() + 600
    while True:
        states = {
            **slurm.job_states(first),
            **{f"b{k}": v for k, v in slurm.job_states(second).items()},
        }
        seen_running = max(seen_running, sum(s == "RUNNING" for s in states.values()))
        if not any(
            s in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING") for s in states.values()
        ):
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.2)
    assert set(states.values()) == {"COMPLETED"}, states
    assert seen_running >= 2, "no two tasks ran at the same time"
    # Some chunk ran in both arrays at once (Slurm's start and end times, to the second).
    a, b = slurm.task_times(first), slurm.task_times(second)
    overlapping = [t for t in a if t in b and a[t][0] <= b[t][1] and b[t][0] <= a[t][1]]
    assert overlapping, (a, b)
    verify = cw(work, "cache", "verify", "cache", env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    status = script(work / "batch" / "status.sh", env)
    assert status.returncode == 0, status.stdout
    merged = script(work / "batch" / "merge.sh", env, "--no-progress")
    assert merged.returncode == 0, merged.stderr
    assert (
        json.loads((work / "batch" / "report.json").read_text())["counts"]["files"]["processed"]
        == 0
    )
    assert_same_result(work / "batch", work, dict(env, SLOWMET_SECONDS="0"))


@pytest.fixture(scope="module")
def slurm_small_arrays(slurm, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A second single-node Slurm whose arrays hold at most 2 tasks (``MaxArraySize=3``)."""
    from slurm_cluster import SlurmCluster

    cluster = SlurmCluster.start(tmp_path_factory.mktemp("slurm-small"), ("MaxArraySize=3",))
    yield cluster
    cluster.stop()


def test_more_jobs_than_the_cluster_takes_in_one_array_go_in_several(
    slurm_small_arrays, tmp_path: Path
):
    slurm = slurm_small_arrays
    work = make_work(tmp_path / "work")
    repair(work)
    env = slurm.env()
    by_file = ("--strategy", "by_dataset")  # with --files-per-chunk 2: 5 chunks
    too_big = slurm.run("sbatch", "--parsable", "--array=1-5", "--wrap", "true", check=False)
    assert too_big.returncode != 0  # what the one array would get
    done = submit(work, "batch", env, *by_file, "--submit")
    assert done.returncode == 0, done.stderr
    jobs = done.stdout.split()
    assert len(jobs) == 3 and "3 array jobs" in done.stderr, done.stderr
    tasks = {}
    for job in jobs:
        tasks[job] = slurm.wait(job)
    assert [len(t) for t in tasks.values()] == [2, 2, 1]
    assert all(set(t.values()) == {"COMPLETED"} for t in tasks.values()), tasks
    status = script(work / "batch" / "status.sh", env)
    assert status.returncode == 0, status.stdout
    assert status_rows(status.stdout)["(all)"][:2] == ["5", "5"]
