"""``chunkwise submit``: a fileset's chunks as a Slurm array or HTCondor jobs, with the steps
after them (status, resubmission, merge), written and, with ``--submit``, submitted."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

from chunkwise.batch import BatchPlan, check_out, write_batch
from chunkwise.cli._common import cache_key, load, split, split_options
from chunkwise.cli._processor import processor_of, runner_of
from chunkwise.errors import CacheError, OptionError, UsageError, one_line
from chunkwise.runner import check_extras, record_split
from chunkwise.tag import open_cache

__all__ = ["cmd_submit"]

SUBMIT = {"slurm": "sbatch", "condor": "condor_submit"}
#: condor_submit's "N job(s) submitted to cluster C."
_CONDOR_CLUSTER = re.compile(r"submitted to cluster (\d+)")
#: scontrol show config's "MaxArraySize = 1001".
_MAX_ARRAY = re.compile(r"^MaxArraySize\s*=\s*(\d+)", re.MULTILINE)


def _runner_args(args: argparse.Namespace) -> list[str]:
    """The Runner options that differ from their defaults, as ``chunkwise run`` takes them."""
    out: list[str] = []
    if args.schema != "NanoAODSchema":
        out += ["--schema", args.schema]
    if args.chunksize != 100_000:
        out += ["--chunksize", str(args.chunksize)]
    if args.no_weights:
        out.append("--no-weights")
    return out


def _module_file(proc: object) -> str | None:
    """The file of the processor's module, if it is a plain module beside the working directory
    (a package or an installed module travels with the environment, not with the job)."""
    module = sys.modules.get(type(proc).__module__)
    path = getattr(module, "__file__", None)
    if path is None or os.path.basename(path) == "__init__.py":
        return None
    path = os.path.abspath(path)
    return path if os.path.dirname(path) == os.getcwd() else None


def _check(args: argparse.Namespace) -> tuple[str, str | None]:
    """The cache (absolute if local) and the key file (absolute), checked."""
    remote = args.cache.startswith("root://")
    key_file = args.cache_key_file or os.environ.get("CHUNKWISE_CACHE_KEY_FILE") or None
    if args.no_shared_fs:
        if args.scheduler != "condor":
            raise UsageError(
                "--no-shared-fs is for HTCondor; a Slurm job runs where it was submitted, "
                "on the cluster's shared file system"
            )
        if not remote or key_file is None:
            raise UsageError(
                "--no-shared-fs needs a cache the jobs reach over the network: --cache "
                "root://host//dir with --cache-key-file"
            )
        if args.setup is None:
            raise UsageError(
                "--no-shared-fs needs --setup: how a job gets chunkwise on a node that does "
                "not see this venv (e.g. 'source /cvmfs/.../setup.sh')"
            )
    if not remote and os.path.exists(args.cache) and not os.path.isdir(args.cache):
        raise UsageError(f"--cache {args.cache!r} is a file; give a directory")
    cache = args.cache if remote else os.path.abspath(args.cache)
    return cache, None if key_file is None else os.path.abspath(key_file)


def _max_array_size() -> int | None:
    """The cluster's ``MaxArraySize`` (array indices must stay below it), if scontrol says."""
    if shutil.which("scontrol") is None:
        return None
    done = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True)
    found = _MAX_ARRAY.search(done.stdout)
    return int(found.group(1)) if done.returncode == 0 and found else None


def _slurm_parts(n_jobs: int, max_array: int | None) -> list[tuple[int, int]]:
    """``(offset, count)`` of each array to submit: one, unless MaxArraySize is smaller."""
    if max_array is None or n_jobs < max_array:
        return [(0, n_jobs)]
    size = max(1, max_array - 1)
    return [(offset, min(size, n_jobs - offset)) for offset in range(0, n_jobs, size)]


def _run_submit(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    said = (done.stderr.strip() or done.stdout.strip()).splitlines()
    if done.returncode != 0:
        raise UsageError(
            f"{cmd[0]} failed: {said[-1] if said else f'exit status {done.returncode}'}"
        )
    return done.stdout


def _submit(scheduler: str, job_file: str, n_jobs: int, max_running: int | None) -> list[str]:
    """Submit the job file; the job ids (Slurm: one per array) or the cluster id (HTCondor)."""
    tool = SUBMIT[scheduler]
    if shutil.which(tool) is None:
        raise UsageError(
            f"{tool} is not on PATH: the files are written; submit from a node that has it: "
            f"{tool} {job_file}"
        )
    if scheduler == "slurm":
        parts = _slurm_parts(n_jobs, _max_array_size())
        if len(parts) == 1:
            return [_run_submit([tool, "--parsable", job_file]).strip().split(";")[0]]
        limit = f"%{max_running}" if max_running else ""
        return [
            _run_submit(
                [
                    tool,
                    "--parsable",
                    f"--array=1-{count}{limit}",
                    f"--export=ALL,CHUNKWISE_OFFSET={offset}",
                    job_file,
                ]
            )
            .strip()
            .split(";")[0]
            for offset, count in parts
        ]
    out = _run_submit([tool, job_file])
    found = _CONDOR_CLUSTER.search(out)
    if found is None:
        raise UsageError(f"{tool} said no cluster id: {' '.join(out.split())}")
    return [found.group(1)]


def cmd_submit(args: argparse.Namespace) -> int:
    """Split, record the split in the cache, write the job files; submit with --submit."""
    fileset = load(args.fileset, check_name=True)
    chunks = split(fileset, args, args.fileset)
    cache_path, key_file = _check(args)
    key = cache_key(args)
    runner_of(args)  # a bad --schema is a usage error before any work
    check_extras(chunks, ())
    proc = processor_of(args)
    options = split_options(args)
    plan = BatchPlan(
        scheduler=args.scheduler,
        fileset=os.path.abspath(args.fileset),
        processor=args.processor,
        cache=cache_path,
        workdir=os.getcwd(),
        options=options,
        runner_args=_runner_args(args),
        key_file=key_file,
        setup=args.setup,
        retries=args.retries,
        scheduler_options=args.scheduler_option or (),
        max_running=args.max_running,
        shared_fs=not args.no_shared_fs,
        module_file=_module_file(proc) if args.no_shared_fs else None,
    )
    try:
        check_out(plan, args.out)  # before the cache is touched
    except OptionError as err:
        raise UsageError(one_line(err)) from None
    # The tag's manifest and the split are written once, here, not raced by every job: 'status'
    # of the fileset then splits as the jobs did without being told.
    try:
        cache = open_cache(cache_path, proc, runner_of(args), key=key, weights=not args.no_weights)
        cache.prepare()
    except CacheError as err:
        raise UsageError(str(err)) from None
    notes: list[str] = []
    record_split(cache, options, fileset, notes)
    try:
        written = write_batch(plan, chunks, args.out)
    except OptionError as err:
        raise UsageError(one_line(err)) from None
    except OSError as err:
        raise UsageError(
            f"--out {args.out!r}: the job files could not be written "
            f"({err.strerror or one_line(err)}); nothing was left there"
        ) from None
    out = written["dir"]
    print(
        f"wrote {_jobs(written['n_jobs'])} ({written['n_files']} files) to {out}: "
        f"{os.path.basename(written['job_file'])}, jobs.txt, task.sh, env.sh, status.sh, "
        f"resubmit.sh, merge.sh; cache: {cache.directory}",
        file=sys.stderr,
    )
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not args.submit:
        print(f"submit with: {written['submit']}", file=sys.stderr)
        print(written["job_file"])
        return 0
    jobs = _submit(args.scheduler, written["job_file"], written["n_jobs"], args.max_running)
    what = "array job" if args.scheduler == "slurm" else "cluster"
    if len(jobs) > 1:
        what = f"{len(jobs)} array jobs (the cluster's MaxArraySize is below {written['n_jobs']})"
    print(
        f"submitted {what} {', '.join(jobs)} ({_jobs(written['n_jobs'])}); then: "
        f"{out}/status.sh, {out}/resubmit.sh, {out}/merge.sh",
        file=sys.stderr,
    )
    print("\n".join(jobs))
    return 0


def _jobs(n: int) -> str:
    return "1 job" if n == 1 else f"{n} jobs"
