"""A real single-node Slurm for tests: ``munged``, ``slurmctld`` and ``slurmd`` of Debian's
``slurm-wlm`` and ``munge``, in a directory of their own.

``SlurmCluster.start(root)`` writes a ``slurm.conf`` for one node (this host, at 127.0.0.1, with
``CPUS`` CPUs so that several array tasks run at once on a 2-core machine), with its own munge
key and socket, free ports, and every state, spool, PID and log file under ``root``; no cgroups
(``proctrack/linuxproc``, ``task/none``), no accounting, ``SlurmUser=root``. It waits until
``sinfo`` shows the node idle. The clients (``sbatch``, ``squeue``, ``scontrol``) find it through
``SLURM_CONF``: ``cluster.env()`` is the environment to run them with.

Every daemon started is stopped by its PID: by ``stop()``, and, should the session end first, by
an ``atexit`` finalizer. Nothing is killed by name, and the machine's own munge and Slurm
configuration (``/etc/munge``, ``/etc/slurm``) is neither read nor changed.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["SlurmCluster", "SlurmStartError", "install", "unavailable_reason"]

START_TIMEOUT = 60.0
#: CPUs the node announces (``SlurmdParameters=config_overrides`` lets it exceed the hardware's).
CPUS = 4
PACKAGES = {
    "munged": "munge",
    "slurmctld": "slurm-wlm",
    "slurmd": "slurm-wlm",
    "sbatch": "slurm-wlm",
}


class SlurmStartError(RuntimeError):
    """A daemon did not start, or the node did not become idle in time (with the logs' tails)."""


def _missing() -> list[str]:
    return sorted({pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None})


def install() -> str | None:
    """Install what is missing with apt-get (as root); None if all is there, else why not."""
    missing = _missing()
    if not missing:
        return None
    if os.geteuid() != 0:
        return f"{', '.join(missing)} not installed, and installing needs root"
    if shutil.which("apt-get") is None:
        return f"{', '.join(missing)} not installed, and there is no apt-get"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0 or _missing():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        return f"apt-get install {' '.join(missing)} failed: {' '.join(tail)}"
    return None


def unavailable_reason() -> str | None:
    """Why a Slurm cannot run here, or None (installs the packages when it can)."""
    if not hasattr(os, "geteuid"):
        return "Slurm needs a POSIX system"
    if os.geteuid() != 0:
        return "the test Slurm runs its daemons as root (SlurmUser=root)"
    return install()


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SlurmCluster:
    """One node, one partition (``debug``), started under ``root`` and stopped by PID."""

    def __init__(self, root: Path, settings: tuple[str, ...] = ()) -> None:
        self.root = Path(root)
        self.settings = settings
        self.conf = self.root / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]
        self._pids: list[int] = []

    # --- life --------------------------------------------------------------------------
    @classmethod
    def start(cls, root: Path, settings: tuple[str, ...] = ()) -> SlurmCluster:
        """Start one, with extra ``slurm.conf`` lines (``settings``, e.g. ``MaxArraySize=3``)."""
        cluster = cls(root, settings)
        atexit.register(cluster.stop)
        try:
            cluster._start()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _start(self) -> None:
        root = self.root
        for sub in ("munge", "state", "spool", "log"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        # munged wants its key private to it, and its socket's directory reachable by all (jobs
        # of other users authenticate through it too).
        root.chmod(0o711)
        (root / "munge").chmod(0o711)
        key = root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        socket_path = root / "munge" / "munge.socket"
        subprocess.run(
            [
                "munged",
                "--force",
                f"--socket={socket_path}",
                f"--key-file={key}",
                f"--pid-file={root / 'munge' / 'munged.pid'}",
                f"--log-file={root / 'log' / 'munged.log'}",
                f"--seed-file={root / 'munge' / 'seed'}",
            ],
            check=True,
            capture_output=True,
        )
        self._pids.append(self._read_pid(root / "munge" / "munged.pid"))
        ctld_port, d_port = _free_ports(2)
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=chunkwise-tests",
                    f"SlurmctldHost={self.node}(127.0.0.1)",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    f"SlurmctldPort={ctld_port}",
                    f"SlurmdPort={d_port}",
                    "AuthType=auth/munge",
                    f"AuthInfo=socket={socket_path}",
                    "CredType=cred/munge",
                    f"StateSaveLocation={root / 'state'}",
                    f"SlurmdSpoolDir={root / 'spool'}",
                    f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                    f"SlurmdPidFile={root / 'slurmd.pid'}",
                    f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "SlurmdParameters=config_overrides",
                    # Keep finished jobs visible to scontrol for the tests' checks.
                    "MinJobAge=3600",
                    "JobRequeue=1",
                    f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory=8000"
                    " State=UNKNOWN",
                    "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    *self.settings,
                    "",
                ]
            )
        )
        for daemon, pid_file, extra in (
            ("slurmctld", "slurmctld.pid", ["-i"]),
            ("slurmd", "slurmd.pid", ["-N", self.node]),
        ):
            done = subprocess.run(
                [daemon, "-f", str(self.conf), *extra], capture_output=True, text=True
            )
            if done.returncode != 0:
                raise SlurmStartError(f"{daemon} did not start: {done.stderr.strip()}{self.logs()}")
            self._pids.append(self._read_pid(root / pid_file))
        deadline = time.monotonic() + START_TIMEOUT
        state = ""
        while time.monotonic() < deadline:
            done = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%t"], env=self.env(), capture_output=True, text=True
            )
            state = done.stdout.strip()
            if done.returncode == 0 and state == "idle":
                return
            time.sleep(0.5)
        raise SlurmStartError(f"the node is {state or 'unknown'}, not idle{self.logs()}")

    def _read_pid(self, path: Path) -> int:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                return int(path.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                time.sleep(0.1)
        raise SlurmStartError(f"no PID in {path}{self.logs()}")

    def stop(self) -> None:
        """Cancel the jobs still in the cluster (else their ``slurmstepd`` would outlive
        ``slurmd``), then stop every daemon it started (SIGTERM, then SIGKILL after 10 s)."""
        if self._pids:
            try:
                self.run("scancel", "--full", "--partition=debug", check=False)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    queue = self.run("squeue", "-h", "-o", "%i", check=False)
                    if queue.returncode != 0 or not queue.stdout.strip():
                        break
                    time.sleep(0.2)
            except OSError:
                pass
        pids, self._pids = self._pids, []
        for pid in reversed(pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 10
        for pid in pids:
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    # --- use ---------------------------------------------------------------------------
    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with ``SLURM_CONF`` set."""
        return dict(os.environ if base is None else base, SLURM_CONF=str(self.conf))

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command against this cluster."""
        return subprocess.run(
            list(cmd), env=self.env(), capture_output=True, text=True, check=check
        )

    def job_states(self, job_id: str) -> dict[str, str]:
        """``{task id: state}`` of every task of an array job (or ``{job id: state}``)."""
        done = self.run("scontrol", "-o", "show", "job", job_id, check=False)
        states = {}
        for line in done.stdout.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            task = fields.get("ArrayTaskId") or fields.get("JobId", "")
            states[task] = fields.get("JobState", "")
        return states

    def task_times(self, job_id: str) -> dict[str, tuple[str, str]]:
        """``{task id: (StartTime, EndTime)}`` of an array job's tasks (ISO times, to the
        second, which compare as strings)."""
        done = self.run("scontrol", "-o", "show", "job", job_id, check=False)
        times = {}
        for line in done.stdout.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            task = fields.get("ArrayTaskId") or fields.get("JobId", "")
            times[task] = (fields.get("StartTime", ""), fields.get("EndTime", ""))
        return times

    def wait(self, job_id: str, timeout: float = 300.0) -> dict[str, str]:
        """Wait until no task of the job is pending or running; return their states."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.job_states(job_id)
            if not states and time.monotonic() > deadline - timeout + 30:
                raise LookupError(f"no job {job_id!r} in scontrol{self.logs()}")
            if states and not any(
                s
                in (
                    "PENDING",
                    "RUNNING",
                    "CONFIGURING",
                    "COMPLETING",
                    "REQUEUED",
                    "RESIZING",
                    "SUSPENDED",
                )
                for s in states.values()
            ):
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {job_id} still {states} after {timeout:.0f} s{self.logs()}"
                )
            time.sleep(0.5)

    def logs(self, lines: int = 15) -> str:
        """The last lines of each daemon's log, for a failure's message."""
        out = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log"):
            path = self.root / "log" / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"\n--- {name}\n" + "\n".join(tail))
        return "".join(out)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours would look alive: reap it if it is one.
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return waited == 0
