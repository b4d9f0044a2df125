"""Job files for a batch system: what ``chunkwise submit`` writes.

``write_batch`` writes, into a new directory ``DIR``:

- ``chunks/``: the split (``chunks/<hash>.json`` and ``chunks/manifest.json``, as ``chunkwise
  split`` writes them), and ``jobs.txt``, one chunk file per line, in the manifest's order;
- ``env.sh``: how a job gets the Python that has chunkwise (the current venv, conda
  environment or interpreter, or the ``setup`` given);
- ``task.sh CHUNK``: one chunk into the cache (``chunkwise run CHUNK ... --no-progress``); its
  exit status is ``chunkwise run``'s (1 when a file of the chunk is bad: the good ones are cached);
- ``job.slurm`` (an array of one task per line of ``jobs.txt``) or ``job.sub`` (HTCondor,
  ``queue chunk from jobs.txt``), each task's output and errors in ``logs/``;
- ``status.sh``, ``resubmit.sh`` and ``merge.sh``: the steps after the jobs, with the split and
  Runner options of the run spelled out.

Every path in the scripts is absolute, and each script changes to the directory ``submit`` ran in
(``workdir``) so that ``--processor module:Class`` imports and relative fileset paths resolve as
they did there. That needs the directory visible on the nodes: a shared file system, which Slurm
clusters have. For HTCondor without one (``shared_fs=False``), the job runs in its sandbox: the
chunk file, the processor's module and the cache key travel with it (``transfer_input_files``),
the cache must be a ``root://`` URL with a key, and ``setup`` must make chunkwise available on
the node (a CVMFS view or a container).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chunkwise.chunks import Chunk, SplitOptions
from chunkwise.errors import OptionError
from chunkwise.splitdir import write_split

__all__ = ["SCHEDULERS", "BatchPlan", "default_setup", "split_arguments", "write_batch"]

SCHEDULERS = ("slurm", "condor")
#: The job file of each scheduler, in ``DIR``.
JOB_FILE = {"slurm": "job.slurm", "condor": "job.sub"}
#: What ``submit`` writes besides the job file, to tell an earlier ``submit``'s directory.
RECORD = "submit.json"


@dataclass(frozen=True)
class BatchPlan:
    """What the job files run: everything ``chunkwise run`` needs, and where.

    Parameters
    ----------
    scheduler : {"slurm", "condor"}
    fileset : str
        The fileset the chunks come from (for the status and merge steps), absolute.
    processor : str
        ``module:Class``.
    cache : str
        The cache: an absolute directory, or a ``root://`` URL.
    workdir : str
        Where the jobs run (absolute): ``submit``'s working directory.
    options : SplitOptions
        How the fileset is split (repeated by the status, resubmit and merge steps).
    runner_args : sequence of str
        The Runner options that are part of the tag (``--schema``, ``--chunksize``,
        ``--no-weights``), as ``chunkwise run`` takes them.
    key_file : str, optional
        The cache's key file, absolute.
    setup : str, optional
        Shell lines that make chunkwise available (default: ``default_setup()``).
    retries : int
        ``chunkwise run --retries``.
    scheduler_options : sequence of str
        Extra ``#SBATCH`` options, or extra HTCondor submit lines (``key = value``).
    max_running : int, optional
        At most this many tasks at once (Slurm ``%N``; HTCondor ``max_materialize``).
    shared_fs : bool
        Whether ``workdir`` is visible on the nodes (HTCondor only: else files are transferred).
    module_file : str, optional
        The processor's module file, transferred to HTCondor jobs without a shared file system.
    """

    scheduler: str
    fileset: str
    processor: str
    cache: str
    workdir: str
    options: SplitOptions
    runner_args: Sequence[str] = ()
    key_file: str | None = None
    setup: str | None = None
    retries: int = 3
    scheduler_options: Sequence[str] = ()
    max_running: int | None = None
    shared_fs: bool = True
    module_file: str | None = None


def default_setup() -> str:
    """The shell lines that give a job this process's Python: its venv's ``activate`` (or its
    conda environment's ``bin`` first on ``PATH``), and ``chunkwise`` as this interpreter's
    ``-m chunkwise``, wherever its console script was installed."""
    lines = []
    prefix = os.environ.get("CONDA_PREFIX")
    executable = os.path.realpath(sys.executable)
    if sys.prefix != sys.base_prefix and os.path.exists(
        os.path.join(sys.prefix, "bin", "activate")
    ):
        lines.append(f". {shlex.quote(os.path.join(sys.prefix, 'bin', 'activate'))}")
    elif prefix and _inside(executable, os.path.realpath(prefix)):
        lines.append(f'export PATH={shlex.quote(os.path.join(prefix, "bin"))}:"$PATH"')
    lines.append(f'chunkwise() {{ {shlex.quote(sys.executable)} -m chunkwise "$@"; }}')
    return "\n".join(lines)


def _inside(path: str, directory: str) -> bool:
    try:
        return os.path.commonpath([path, directory]) == directory
    except ValueError:
        return False


def split_arguments(options: SplitOptions) -> list[str]:
    """The command-line options that split as ``options`` does."""
    args: list[str] = []
    if options.strategy is not None:
        args += ["--strategy", options.strategy]
    for flag, value in (
        ("--percentage", options.percentage),
        ("--files-per-chunk", options.files_per_chunk),
        ("--events-per-chunk", options.events_per_chunk),
    ):
        if value is not None:
            args += [flag, str(value)]
    if options.stable:
        args.append("--stable")
    if options.datasets is not None:
        args += ["--datasets", ",".join(options.datasets)]
    if options.treename is not None:
        args += ["--treename", options.treename]
    return args


def _command(words: Sequence[str]) -> str:
    """``words`` as one shell line, each quoted only where it must be, wrapped at 100."""
    quoted = [shlex.quote(w) for w in words]
    lines, line = [], ""
    for word in quoted:
        if line and len(line) + len(word) > 92 and word.startswith("-"):
            lines.append(line)
            line = "    " + word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return " \\\n".join(lines)


def _check_condor_path(path: str, what: str) -> None:
    if any(c.isspace() or c in "\"'$()" for c in path):
        raise OptionError(
            f"{what} {path!r} has a space, quote or $: HTCondor submit files cannot name it; "
            "use a directory without them"
        )


def _check_slurm_path(path: str, what: str) -> None:
    # #SBATCH values are read by sbatch, not a shell: a double-quoted value may hold spaces, but
    # not a quote, a backslash or a line break, and '%' in --output is a pattern.
    if any(c in '"\\%\n\r' for c in path):
        raise OptionError(
            f"{what} {path!r} has a quote, backslash, % or line break: a Slurm job file cannot "
            "name it; use a directory without them"
        )


def check_out(plan: BatchPlan, out: str) -> str:
    """``out``, absolute, if ``write_batch`` may write there: a new or empty directory whose
    paths (and the working directory) the job file can name.

    Raises
    ------
    chunkwise.errors.OptionError
        Saying what is wrong with which path.
    """
    given, out = out, os.path.abspath(out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise OptionError(
            f"--out {given!r} exists and is not an empty directory: give a new one (each "
            "submission keeps its own job files and logs)"
        )
    if not os.path.isdir(os.path.dirname(out)):
        raise OptionError(f"--out {given!r}: its parent directory does not exist; create it first")
    check = _check_condor_path if plan.scheduler == "condor" else _check_slurm_path
    check(out, "--out")
    check(plan.workdir, "the working directory")
    return out


def write_batch(plan: BatchPlan, chunks: Sequence[Chunk], out: str) -> dict[str, Any]:
    """Write the split, the job file and the step scripts into the new directory ``out``.

    Parameters
    ----------
    plan : BatchPlan
        What to run, and how.
    chunks : sequence of Chunk
        The fileset's chunks (``chunkwise.chunks.make_chunks`` with ``plan.options``).
    out : str
        A directory that does not exist yet, or is empty (its parent must exist).

    Returns
    -------
    dict
        What was written: ``dir``, ``job_file``, ``n_jobs``, ``n_files`` and ``submit`` (the
        command that submits the job file).

    Raises
    ------
    chunkwise.errors.OptionError
        As ``check_out``.
    OSError
        If a file cannot be written (a full disk): what was written is removed first.
    """
    out = check_out(plan, out)
    existed = os.path.isdir(out)  # and empty: check_out said so
    os.makedirs(out, exist_ok=True)
    try:
        return _write_all(plan, chunks, out)
    except BaseException:
        # Half a batch directory is worse than none (a rerun would find it not empty): what
        # was written here goes, and only that.
        if existed:
            for name in os.listdir(out):
                path = os.path.join(out, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
        else:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _write_all(plan: BatchPlan, chunks: Sequence[Chunk], out: str) -> dict[str, Any]:
    """The body of ``write_batch``, into the directory ``out``."""
    manifest = write_split(
        chunks, os.path.join(out, "chunks"), source=plan.fileset, options=plan.options
    )
    chunk_files = [os.path.join(out, "chunks", entry["file"]) for entry in manifest["chunks"]]
    logs = os.path.join(out, "logs")
    os.makedirs(logs, exist_ok=True)
    _write(os.path.join(out, "jobs.txt"), "".join(f"{path}\n" for path in chunk_files))
    _write(os.path.join(out, "env.sh"), _env_sh(plan), executable=False)
    _write(os.path.join(out, "task.sh"), _task_sh(plan, out), executable=True)
    job_file = os.path.join(out, JOB_FILE[plan.scheduler])
    if plan.scheduler == "slurm":
        _write(job_file, _slurm(plan, out, len(chunk_files)), executable=True)
        submit = f"sbatch {shlex.quote(job_file)}"
    else:
        _write(job_file, _condor(plan, out))
        submit = f"condor_submit {shlex.quote(job_file)}"
    _write(os.path.join(out, "status.sh"), _status_sh(plan, out), executable=True)
    _write(os.path.join(out, "resubmit.sh"), _resubmit_sh(plan, out), executable=True)
    _write(os.path.join(out, "merge.sh"), _merge_sh(plan, out), executable=True)
    n_files = sum(entry["n_files"] for entry in manifest["chunks"])
    written = {
        "dir": out,
        "job_file": job_file,
        "n_jobs": len(chunk_files),
        "n_files": n_files,
        "submit": submit,
    }
    record = {
        "scheduler": plan.scheduler,
        "fileset": plan.fileset,
        "cache": plan.cache,
        "processor": plan.processor,
        **written,
    }
    _write(os.path.join(out, RECORD), json.dumps(record, indent=1) + "\n")
    return written


def _write(path: str, text: str, executable: bool = False) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    if executable:
        mode = os.stat(path).st_mode
        os.chmod(path, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _q(path: str) -> str:
    return shlex.quote(path)


def _env_sh(plan: BatchPlan) -> str:
    setup = plan.setup if plan.setup is not None else default_setup()
    return (
        "# Sourced by every job and step: makes the Python that has chunkwise the one on PATH.\n"
        "# Written by 'chunkwise submit' (edit it, or pass --setup, for another environment).\n"
        f"{setup}\n"
    )


def _cache_args(plan: BatchPlan, key_file: str | None) -> list[str]:
    args = ["--cache", plan.cache]
    if key_file is not None:
        args += ["--cache-key-file", key_file]
    return args


def _in_job(plan: BatchPlan) -> tuple[str, str | None]:
    """How a job reaches its key file, and the line that enters its working directory."""
    if plan.shared_fs:
        return f"cd {_q(plan.workdir)}", plan.key_file
    # HTCondor's sandbox: the transferred files are in the job's working directory.
    key = os.path.basename(plan.key_file) if plan.key_file is not None else None
    return "# no shared file system: the job runs in its sandbox, with its files transferred", key


def _task_sh(plan: BatchPlan, out: str) -> str:
    enter, key = _in_job(plan)
    run = [
        "chunkwise",
        "run",
        _CHUNK,
        "--processor",
        plan.processor,
        *_cache_args(plan, key),
        *plan.runner_args,
        "--retries",
        str(plan.retries),
        "--no-progress",
    ]
    command = _command(run).replace(_CHUNK, '"$chunk"', 1)
    chunk = '"$1"' if plan.shared_fs else '"$(basename "$1")"'
    # Without a shared file system the job has no env.sh to read: its lines are here.
    setup = _source_env(out) if plan.shared_fs else _setup(plan)
    return f"""#!/bin/bash
# One job: run the chunk file given (a line of jobs.txt) into the cache. Written by
# 'chunkwise submit'. Its exit status is chunkwise run's: 0 when every file of the chunk is in
# the cache, 1 when one is bad (the others are cached, and the bad one is recorded for
# 'status'), 2 for bad input, 3 when the cache could not be written, 4 for a processor bug.
{setup}
{_FOUND}
set -euo pipefail
{enter}
chunk={chunk}
{command}
"""


#: Placeholders in a command line, replaced by shell variables once it is quoted.
_CHUNK = "__chunkwise_chunk__"
_RETRY_JSON = "__chunkwise_retry_json__"
_RETRY_DIR = "__chunkwise_retry_dir__"
#: After the setup: chunkwise must be there (a setup that failed is said, not run past).
_FOUND = (
    'command -v chunkwise >/dev/null || { echo "chunkwise is not found after the setup '
    '(env.sh): check it, or pass --setup to chunkwise submit" >&2; exit 2; }'
)


def _setup(plan: BatchPlan) -> str:
    return plan.setup if plan.setup is not None else default_setup()


def _source_env(out: str) -> str:
    return f". {_q(os.path.join(out, 'env.sh'))}"


def _slurm(plan: BatchPlan, out: str, n_jobs: int) -> str:
    array = f"1-{n_jobs}" + (f"%{plan.max_running}" if plan.max_running else "")
    extra = "".join(f"#SBATCH {option}\n" for option in plan.scheduler_options)
    log = os.path.join(out, "logs", "%A_%a.log")
    return f"""#!/bin/bash
# A Slurm array job: task i runs line CHUNKWISE_OFFSET + i of jobs.txt. Written by
# 'chunkwise submit'. Submit: sbatch {_q(os.path.join(out, "job.slurm"))}
# More lines than the cluster's MaxArraySize allows in one array: submit it in parts, e.g.
#   sbatch --array=1-1000 --export=ALL,CHUNKWISE_OFFSET=1000 job.slurm   (lines 1001-2000)
# ('chunkwise submit --submit' does this by itself).
#SBATCH --job-name=chunkwise
#SBATCH --array={array}
#SBATCH --output="{log}"
#SBATCH --chdir="{plan.workdir}"
#SBATCH --ntasks=1
#SBATCH --requeue
#SBATCH --open-mode=append
{extra}set -euo pipefail
line=$(( ${{CHUNKWISE_OFFSET:-0}} + SLURM_ARRAY_TASK_ID ))
chunk=$(sed -n "${{line}}p" {_q(os.path.join(out, "jobs.txt"))})
exec {_q(os.path.join(out, "task.sh"))} "$chunk"
"""


def _condor(plan: BatchPlan, out: str) -> str:
    lines = [
        "# An HTCondor job per line of jobs.txt. Written by 'chunkwise submit'.",
        f"# Submit: condor_submit {os.path.join(out, 'job.sub')}",
        "universe              = vanilla",
        f"executable            = {os.path.join(out, 'task.sh')}",
        "arguments             = $(chunk)",
        f"output                = {os.path.join(out, 'logs', '$(Cluster).$(Process).out')}",
        f"error                 = {os.path.join(out, 'logs', '$(Cluster).$(Process).err')}",
        f"log                   = {os.path.join(out, 'logs', 'condor.log')}",
        "request_cpus          = 1",
    ]
    if plan.shared_fs:
        lines += [f"initialdir            = {plan.workdir}", "should_transfer_files = IF_NEEDED"]
    else:
        transfer = ["$(chunk)"]
        for path in (plan.key_file, plan.module_file):
            if path is not None:
                _check_condor_path(path, "the file")
                transfer.append(path)
        lines += [
            "should_transfer_files = YES",
            f"transfer_input_files  = {', '.join(transfer)}",
        ]
    if plan.max_running:
        lines.append(f"max_materialize       = {plan.max_running}")
    lines += list(plan.scheduler_options)
    lines.append(f"queue chunk from {os.path.join(out, 'jobs.txt')}")
    return "\n".join(lines) + "\n"


def _step_header(out: str, what: str) -> str:
    said = textwrap.fill(
        f"{what} Written by 'chunkwise submit'; arguments are passed on to chunkwise.",
        width=98,
        initial_indent="# ",
        subsequent_indent="# ",
    )
    return f"""#!/bin/bash
{said}
{_source_env(out)}
{_FOUND}
set -euo pipefail
"""


def _local_cache_args(plan: BatchPlan) -> list[str]:
    return _cache_args(plan, plan.key_file)


#: The arguments given to a step script, safe under ``set -u`` in every bash.
_ARGS = '${1+"$@"}'


def _status_command(plan: BatchPlan) -> list[str]:
    return [
        "chunkwise",
        "status",
        plan.fileset,
        *_local_cache_args(plan),
        "--processor",
        plan.processor,
        *split_arguments(plan.options),
        *plan.runner_args,
    ]


def _status_sh(plan: BatchPlan, out: str) -> str:
    return (
        _step_header(
            out,
            "What is done, per dataset, with each bad file and its error; exit status 0 when "
            "everything is. While the jobs run too.",
        )
        + f"cd {_q(plan.workdir)}\n{_command(_status_command(plan))} {_ARGS}\n"
    )


def _resubmit_sh(plan: BatchPlan, out: str) -> str:
    remaining = [*_status_command(plan), "--write-remaining", _RETRY_JSON]
    submit = [
        "chunkwise",
        "submit",
        plan.scheduler,
        _RETRY_JSON,
        "--processor",
        plan.processor,
        *_local_cache_args(plan),
        *plan.runner_args,
        "--strategy",
        "by_dataset",
        "--files-per-chunk",
        "1",
        "--out",
        _RETRY_DIR,
        "--retries",
        str(plan.retries),
    ]
    if plan.options.treename is not None:  # files listed without their tree stay so
        submit += ["--treename", plan.options.treename]
    if plan.setup is not None:
        submit += ["--setup", plan.setup]
    if not plan.shared_fs:
        submit.append("--no-shared-fs")
    if plan.max_running:
        submit += ["--max-running", str(plan.max_running)]
    for option in plan.scheduler_options:
        submit.append(f"--scheduler-option={option}")

    def fill(words: list[str]) -> str:
        line = _command(words)
        return line.replace(_RETRY_JSON, '"$retry.json"').replace(_RETRY_DIR, '"$retry"')

    return (
        _step_header(
            out,
            "Resubmit exactly the files that are not done (failed or never run), one file per "
            "job, into retry-N/. Run it once the jobs have ended (it does not look at the "
            "queue), after repairing what made files fail (status names each with its error); "
            "repeat until status says all is done, or only files that stay bad are left. "
            "stdout is the new job id.",
        )
        + f"""cd {_q(plan.workdir)}
n=1
while [ -e {_q(out)}/retry-$n ] || [ -e {_q(out)}/retry-$n.json ]; do n=$((n + 1)); done
retry={_q(out)}/retry-$n
set +e
{fill(remaining)} >&2  # the table to stderr
rc=$?
set -e
case $rc in
  0) echo "everything is done: nothing to resubmit" >&2; rm -f "$retry.json"; exit 0 ;;
  1) ;;  # files are left: resubmit them
  *) rm -f "$retry.json"; exit "$rc" ;;
esac
set +e
{fill(submit)} --submit {_ARGS}
rc=$?
set -e
# A submission refused before it wrote anything leaves nothing behind.
if [ "$rc" != 0 ] && [ ! -e "$retry" ]; then rm -f "$retry.json"; fi
exit "$rc"
"""
    )


def _merge_sh(plan: BatchPlan, out: str) -> str:
    merge = [
        "chunkwise",
        "run",
        plan.fileset,
        "--processor",
        plan.processor,
        *_local_cache_args(plan),
        *split_arguments(plan.options),
        *plan.runner_args,
        "--output",
        os.path.join(out, "result.coffea"),
        "--report",
        os.path.join(out, "report.json"),
    ]
    return (
        _step_header(
            out,
            "Merge: every chunk loads from the cache (a chunk whose files ran one per job is put "
            "together from their entries). It refuses while status says something is not done, "
            "since 'chunkwise run' would compute it here, on this machine: first argument "
            "--anyway to do just that (e.g. with --min-completeness 0.98 for files that stay "
            "bad). Other arguments go on, e.g. --plot result.pdf.",
        )
        + f"""cd {_q(plan.workdir)}
if [ "${{1:-}}" = --anyway ]; then
  shift
else
  set +e
  said=$({_command(_status_command(plan))} 2>&1 >/dev/null)
  rc=$?
  set -e
  if [ "$rc" -gt 1 ]; then echo "$said" >&2; exit "$rc"; fi
  if [ "$rc" = 1 ]; then
    echo "merge.sh: not everything is done ({_q(os.path.join(out, "status.sh"))} says what):" \
      "run resubmit.sh until it is, or 'merge.sh --anyway' to run what is left on this machine" >&2
    exit 1
  fi
fi
{_command(merge)} {_ARGS}
"""
    )
