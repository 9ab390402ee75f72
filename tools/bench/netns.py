"""Throw-away network namespaces and the processes the benchmark starts in them.

Every interface, address, route and sysctl the benchmark touches lives in a
namespace created here with ``ip netns add``; nothing is ever configured in
the machine's own namespace. Commands run inside through ``ip netns exec NAME
...``, which ``setns()``-es and then ``exec``-s the command, so the PID of the
:class:`subprocess.Popen` is the command's own PID and it can be stopped by PID.

Cleanup is layered so that it also happens on errors, Ctrl-C and SIGTERM:
:meth:`Netns.close` (called from ``finally`` blocks and ``with``), plus an
:mod:`atexit` hook that closes whatever is still open.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

TERM_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL when stopping a process."""

_OPEN: dict[str, Netns] = {}


class SetupError(RuntimeError):
    """The benchmark environment could not be set up (a one-line reason)."""


class Netns:
    """A fresh, uniquely named network namespace with ``lo`` up.

    Use as a context manager or call :meth:`close` in a ``finally``; the
    namespace is also removed at interpreter exit if still open.
    """

    def __init__(self, role: str) -> None:
        self.name = f"tcpbench-{os.getpid()}-{secrets.token_hex(3)}-{role}"
        self._procs: list[subprocess.Popen[Any]] = []
        self._open = False

    def __enter__(self) -> Netns:
        self.create()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def create(self) -> None:
        """``ip netns add`` the namespace and bring ``lo`` up."""
        added = subprocess.run(
            ["ip", "netns", "add", self.name], capture_output=True, text=True, check=False
        )
        if added.returncode != 0:
            detail = (added.stderr.strip().splitlines() or ["ip netns add failed"])[-1]
            raise SetupError(f"cannot create network namespace {self.name}: {detail}")
        self._open = True
        _OPEN[self.name] = self
        try:
            self.ip("link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the processes started here (by PID), then delete the namespace. Idempotent.

        SIGINT/SIGTERM/SIGHUP are held back while this runs, so that a second
        Ctrl-C cannot leave a process (and so its namespace) behind; they are
        delivered when it is done.
        """
        if not self._open:
            return
        with _signals_deferred():
            self._close()

    def _close(self) -> None:
        try:
            for proc in reversed(self._procs):
                terminate(proc)
            self._procs.clear()
            # Anything still in the namespace was started by us (it is brand new
            # and only our commands ran in it): stop it by PID too.
            for pid in self.pids():
                terminate_pid(pid)
        finally:
            self._open = False
            _OPEN.pop(self.name, None)
            subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, check=False)

    # -- running things inside ------------------------------------------------

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed so that it runs inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the namespace; it is stopped by PID on :meth:`close`."""
        proc: subprocess.Popen[Any] = subprocess.Popen(self.argv(argv), **kwargs)
        self._procs.append(proc)
        return proc

    def forget(self, proc: subprocess.Popen[Any]) -> None:
        """Stop ``proc`` (by PID) now and stop tracking it."""
        terminate(proc)
        with contextlib.suppress(ValueError):
            self._procs.remove(proc)

    def run(
        self, argv: Sequence[str], timeout: float, check: bool = False, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace with text output captured.

        On timeout the child is killed (by PID) and
        :class:`subprocess.TimeoutExpired` propagates.
        """
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = self.popen(argv, text=True, **kwargs)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.forget(proc)
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._procs.remove(proc)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, proc.args, out, err)
        return result

    def ip(self, *args: str) -> str:
        """``ip -n NAME ARGS...``; returns stdout, raises :class:`SetupError` on failure."""
        result = subprocess.run(
            ["ip", "-n", self.name, *args], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            detail = (result.stderr.strip().splitlines() or ["failed"])[-1]
            raise SetupError(f"ip -n {self.name} {' '.join(args)}: {detail}")
        return result.stdout

    def sysctl(self, key: str, value: str) -> None:
        """Set a per-namespace sysctl (``net.*``) inside this namespace only."""
        if not key.startswith("net."):
            raise ValueError(f"refusing to set a non-network sysctl: {key}")
        path = "/proc/sys/" + key.replace(".", "/")
        result = self.run(["sh", "-c", f"echo '{value}' > {path}"], timeout=10.0)
        if result.returncode != 0:
            raise SetupError(f"sysctl {key} in {self.name}: {result.stderr.strip()}")

    def pids(self) -> list[int]:
        """PIDs of the processes currently in this namespace."""
        result = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, check=False
        )
        return [int(tok) for tok in result.stdout.split() if tok.isdigit()]


_DEFERRED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def terminate(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to ``proc`` by PID, wait up to :data:`TERM_GRACE`, then SIGKILL; reap."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=TERM_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=TERM_GRACE)


def terminate_pid(pid: int) -> None:
    """Like :func:`terminate` for a PID that is not our direct child."""
    if pid == os.getpid():
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + TERM_GRACE
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    return bool(fields) and fields[0] not in ("Z", "X")


def close_all() -> None:
    """Close every namespace still open (the atexit / signal safety net)."""
    for ns in list(_OPEN.values()):
        ns.close()


atexit.register(close_all)


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until truthy or ``timeout`` seconds pass; True if it became truthy."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval, remaining))


def read_vmrss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB from ``/proc/PID/status``, or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def drain_text(stream: IO[str] | None, limit: int = 4000) -> str:
    """Whatever is left in a finished process's text pipe, cut to ``limit`` chars."""
    if stream is None:
        return ""
    try:
        return stream.read()[-limit:]
    except (OSError, ValueError):
        return ""
