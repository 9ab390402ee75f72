"""Throw-away Linux network namespaces for integration tests and benchmarks.

Everything that creates interfaces, addresses or routes must happen inside a
namespace made here, never in the machine's own one. :class:`NetNS` creates a
uniquely named namespace with ``ip netns add`` (which bind-mounts it under
``/run/netns/NAME``), runs commands in it through ``ip netns exec NAME ...``
(which ``setns()``-es and then ``exec``-s the command, so the PID of the
``Popen`` *is* the command's PID), and on exit stops what it started and
deletes the namespace. When the last process in a namespace is gone and its
mount is removed the kernel destroys the namespace together with every
interface in it (TUN devices included, persistent or not).

This is a helper module, not a test file.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tools.bench.netns import terminate, terminate_pid

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The repository checkout; put on ``PYTHONPATH`` of child interpreters."""



class NetNS:
    """A fresh network namespace that lives for the duration of a ``with`` block.

    >>> with NetNS() as ns:                                   # doctest: +SKIP
    ...     ns.run(["ip", "tuntap", "add", "mode", "tun", "name", "t0"], check=True)
    ...     print(ns.ip("-o", "link"))

    ``lo`` is brought up on entry. Processes started with :meth:`popen` (and
    anything else still living in the namespace) are stopped by PID on exit:
    SIGTERM, up to 5 s of grace, then SIGKILL. Then the namespace is deleted.
    """

    def __init__(self, prefix: str = "tcpst") -> None:
        self.name = f"{prefix}-{os.getpid()}-{secrets.token_hex(4)}"
        self._procs: list[subprocess.Popen[Any]] = []
        self._active = False

    # -- lifecycle ------------------------------------------------------------

    def __enter__(self) -> NetNS:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self._active = True
        try:
            self.ip("link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the processes started here, then delete the namespace. Idempotent."""
        if not self._active:
            return
        try:
            for proc in self._procs:
                terminate(proc)
            self._procs.clear()
            # Children of our children (or anything a test started with run()
            # and left behind) still pin the namespace: stop them by PID too.
            # Every process in this namespace was started by this helper's user.
            for pid in self.pids():
                terminate_pid(pid)
        finally:
            self._active = False
            subprocess.run(["ip", "netns", "delete", self.name], check=False, capture_output=True)

    # -- running things inside ------------------------------------------------

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed so that it runs inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """:func:`subprocess.run` inside the namespace (keyword arguments pass through)."""
        return subprocess.run(self.argv(argv), **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """:class:`subprocess.Popen` inside the namespace; stopped by PID on exit."""
        proc: subprocess.Popen[Any] = subprocess.Popen(self.argv(argv), **kwargs)
        self._procs.append(proc)
        return proc

    def python_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for a child interpreter that can import ``tcpstack``."""
        env = dict(os.environ)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
        env["PYTHONUNBUFFERED"] = "1"
        if extra:
            env.update(extra)
        return env

    def exec_python(
        self, code: str, timeout: float = 30.0, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``sys.executable -c code`` inside the namespace and capture its output.

        Output is text; ``tcpstack`` is importable. Raises
        :class:`subprocess.TimeoutExpired` (after killing the child) on timeout.
        """
        kwargs.setdefault("env", self.python_env())
        kwargs.setdefault("cwd", str(REPO_ROOT))
        result: subprocess.CompletedProcess[str] = subprocess.run(
            self.argv([sys.executable, "-c", code]),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )
        return result

    def popen_python(self, code: str, **kwargs: Any) -> subprocess.Popen[Any]:
        """:meth:`popen` of ``sys.executable -c code`` with ``tcpstack`` importable."""
        kwargs.setdefault("env", self.python_env())
        kwargs.setdefault("cwd", str(REPO_ROOT))
        return self.popen([sys.executable, "-c", code], **kwargs)

    def ip(self, *args: str) -> str:
        """Run ``ip -n NAME ARGS...`` and return its stdout; raises on failure."""
        result = subprocess.run(
            ["ip", "-n", self.name, *args], check=False, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, result.args, result.stdout, result.stderr
            )
        return result.stdout

    def pids(self) -> list[int]:
        """PIDs of the processes currently in this namespace (``ip netns pids``)."""
        result = subprocess.run(
            ["ip", "netns", "pids", self.name], check=False, capture_output=True, text=True
        )
        return [int(tok) for tok in result.stdout.split() if tok.isdigit()]


def require_root() -> str | None:
    """Why namespace tests cannot run here, or None if they can.

    Checks for root, the ``/dev/net/tun`` character device, the ``ip`` tool,
    and that a namespace can actually be created and deleted (root in a
    container may lack CAP_SYS_ADMIN). The result is cached. Use as
    ``if (reason := require_root()): pytest.skip(reason)``.
    """
    if os.geteuid() != 0:
        return "needs root (network namespaces and /dev/net/tun)"
    try:
        if not stat.S_ISCHR(os.stat("/dev/net/tun").st_mode):
            return "/dev/net/tun is not a character device"
    except OSError:
        return "/dev/net/tun is missing (no TUN support)"
    if shutil.which("ip") is None:
        return "the iproute2 'ip' command is not installed"
    probe = f"tcpst-probe-{os.getpid()}-{secrets.token_hex(4)}"
    added = subprocess.run(["ip", "netns", "add", probe], check=False, capture_output=True)
    if added.returncode != 0:
        detail = added.stderr.decode(errors="replace").strip().splitlines()
        return "cannot create network namespaces: " + (detail[-1] if detail else "ip netns add")
    subprocess.run(["ip", "netns", "delete", probe], check=False, capture_output=True)
    return None


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it returns something truthy or ``timeout`` seconds pass.

    Returns True if it became truthy, False on timeout. The predicate is tried
    at least once, and a last time at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval, remaining))
