"""A local XRootD server for tests: start, kill, stop, restart, stall and resume it.

``XRootDServer(export_dir)`` runs Debian's ``xrootd`` (``xrootd-server``) exporting one
directory on 127.0.0.1 at a free port, so that uproot reads ``server.url(path)``
(``root://127.0.0.1:PORT//abs/path``) over the real protocol. The daemon drops to the user
``nobody`` (``-R nobody``), which needs root, and ``nobody`` must be able to read the exported
directory, its parents and its files (``export_dir()`` makes such a directory under /tmp).

Every server started is stopped by its PID: by ``stop()``, by the context manager, and, should a
test fail before either, by an ``atexit`` finalizer. Nothing is ever killed by name.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType

__all__ = [
    "XRootDServer",
    "XRootDStartError",
    "export_dir",
    "free_port",
    "make_readable",
    "unavailable_reason",
]

START_TIMEOUT = 10.0

_RUNNING: weakref.WeakSet[XRootDServer] = weakref.WeakSet()
#: A request in the log of a daemon with ``xrootd.trace request``.
_REQUEST = re.compile(r"Xrootd_Protocol: \S+ req=(\w+)")


class XRootDStartError(RuntimeError):
    """The server did not accept connections in time (the message has the log's tail)."""


def unavailable_reason() -> str | None:
    """Why a server cannot run here (no ``xrootd`` binary, not root), or None."""
    if shutil.which("xrootd") is None:
        return "the xrootd binary is not on PATH (apt-get install xrootd-server)"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "xrootd -R nobody needs root to drop privileges"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def export_dir(prefix: str = "chunkwise-xrootd-") -> Path:
    """A new directory under /tmp that ``nobody`` can read (mode 0755); remove it yourself."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def make_readable(path: str | os.PathLike[str]) -> None:
    """``chmod a+rX`` on ``path`` and, for a directory, everything under it."""
    root = Path(path)
    items = [root, *root.rglob("*")] if root.is_dir() else [root]
    for item in items:
        mode = item.stat().st_mode
        extra = 0o555 if item.is_dir() else 0o444
        item.chmod(mode | extra)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class XRootDServer:
    """One ``xrootd`` daemon exporting ``export_dir`` on ``127.0.0.1:port``.

    Parameters
    ----------
    export_dir : str or os.PathLike
        The directory to serve (absolute; readable by ``nobody``).
    port : int, optional
        The port; a free one is picked at the first ``start()`` and kept by ``restart()``.
    """

    def __init__(
        self, export_dir: str | os.PathLike[str], port: int | None = None, *, trace: bool = False
    ) -> None:
        self.export_dir = Path(export_dir).resolve()
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        # the config, the log (-l) and the admin files (all.adminpath), which the daemon
        # writes as nobody: the directory is nobody's
        self._workdir = Path(tempfile.mkdtemp(prefix="chunkwise-xrootd-cfg-", dir="/tmp"))
        _give_to_nobody(self._workdir)
        self.config = self._workdir / "xrootd.cfg"
        config = f"all.export {self.export_dir}\nall.adminpath {self._workdir}\n"
        if trace:  # every client request is logged: requests() counts them
            config += "xrootd.trace request\n"
        self.config.write_text(config)
        self.config.chmod(0o644)  # root's file, which nobody reads
        self.logfile = self._workdir / "xrootd.log"
        self.outfile = self._workdir / "xrootd.out"  # what it prints before it has a log
        self._finalizer = weakref.finalize(self, _cleanup, None, self._workdir)

    # -- addresses -----------------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        """``root://127.0.0.1:PORT/`` + the export directory + ``/``."""
        return self.url(self.export_dir) + "/"

    def url(self, path: str | os.PathLike[str]) -> str:
        """The ``root://`` URL of an absolute local path under the export directory."""
        if self.port is None:
            raise RuntimeError("start() the server first: it has no port yet")
        absolute = Path(path)
        if not absolute.is_absolute():
            absolute = self.export_dir / absolute
        return f"root://127.0.0.1:{self.port}/{absolute}"

    # -- life cycle ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> XRootDServer:
        """Start the daemon and wait until its port accepts TCP connections.

        A port picked here that another process took in the meantime is replaced by another
        free one (twice at most); a port given, or kept for ``restart()``, is not.

        Raises
        ------
        XRootDStartError
            If it exits, or does not listen within ``timeout`` seconds (with the log's tail).
        """
        if self.running:
            return self
        tries = 3 if self.port is None else 1
        for attempt in range(tries):
            if self.port is None or attempt:
                self.port = free_port()
            try:
                return self._start(timeout)
            except XRootDStartError:
                if attempt + 1 == tries:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _start(self, timeout: float) -> XRootDServer:
        assert self.port is not None
        cmd = ["xrootd", "-R", "nobody", "-c", str(self.config), "-p", str(self.port)]
        cmd += ["-l", str(self.logfile)]
        with open(self.outfile, "ab") as output:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a ^C of the tests does not reach it: stopped by PID
            )
        _RUNNING.add(self)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _cleanup, self.proc, self._workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise XRootDStartError(f"xrootd exited at once: {self.log_tail()}")
            if _port_open(self.port):
                return self
            time.sleep(0.05)
        self.kill()
        raise XRootDStartError(
            f"xrootd did not listen on 127.0.0.1:{self.port} within {timeout:.0f} s: "
            f"{self.log_tail()}"
        )

    def kill(self) -> None:
        """SIGKILL the daemon (by PID) and reap it: connections drop without a goodbye."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            # a stopped process dies of SIGKILL too, but resume it so nothing lingers
            _signal(proc, signal.SIGKILL)
            _signal(proc, signal.SIGCONT)
        proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM the daemon (by PID), SIGKILL it if it lingers, and reap it."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal(proc, signal.SIGCONT)
            _signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait(timeout=10)
        self.proc = None
        # the port is closed once the process is gone; wait for that (it is our port)
        deadline = time.monotonic() + 5
        while self.port is not None and _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self, timeout: float = START_TIMEOUT) -> XRootDServer:
        """Stop (if running) and start again on the same port."""
        self.stop()
        deadline = time.monotonic() + timeout
        while True:  # should the old socket linger a moment, try again
            try:
                return self.start(timeout=max(1.0, deadline - time.monotonic()))
            except XRootDStartError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def stall(self) -> None:
        """SIGSTOP the daemon: it keeps its sockets but answers nothing."""
        if not self.running:
            raise RuntimeError("the server is not running")
        assert self.proc is not None
        _signal(self.proc, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a stalled daemon."""
        if self.proc is not None and self.proc.poll() is None:
            _signal(self.proc, signal.SIGCONT)

    def close(self) -> None:
        """Stop the daemon and remove its config and log directory."""
        try:
            self.stop()
        finally:
            self._finalizer()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the daemon's log and of what it printed."""
        tail = []
        for path in (self.logfile, self.outfile):
            try:
                text = path.read_text(errors="replace").strip()
            except OSError:
                continue
            if text:
                tail += text.splitlines()[-lines:]
        return "\n".join(tail) or "(no log)"

    def requests(self) -> list[str]:
        """The clients' requests the daemon logged so far (with ``trace=True``), in order: one
        name each (``stat``, ``dirlist``, ``open``, ``read``, ...), without a session's
        ``protocol`` and ``login``, which are not requests for a file."""
        try:
            log = self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return []
        names = [m.group(1) for m in _REQUEST.finditer(log)]
        return [n for n in names if n not in ("protocol", "login")]

    def __enter__(self) -> XRootDServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"XRootDServer({str(self.export_dir)!r}, port={self.port}, {state})"


def _give_to_nobody(path: Path) -> None:
    try:
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
        path.chmod(0o755)
    except (ImportError, KeyError, PermissionError):  # not root: it cannot run anyway
        path.chmod(0o777)


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


def _cleanup(proc: subprocess.Popen[bytes] | None, workdir: Path) -> None:
    if proc is not None and proc.poll() is None:
        _signal(proc, signal.SIGKILL)
        _signal(proc, signal.SIGCONT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    shutil.rmtree(workdir, ignore_errors=True)


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        try:
            server.close()
        except Exception:  # at exit: do what can be done
            pass
