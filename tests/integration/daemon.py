"""Start and stop ``tcpstack serve`` inside a test's network namespace.

This is a helper module for ``test_daemon*.py``, not a test file.

:class:`Daemon` runs ``python -m tcpstack serve ARGS...`` with
:meth:`NetNS.popen` (so the namespace helper also knows its PID and stops it if
a test forgets to), sends its stdout and stderr to a log file, and waits --
bounded -- until the TUN interface is up and a TCP connection to the stack
succeeds. :meth:`Daemon.stop` sends SIGTERM and waits, bounded, for the exit
status; it returns the status and the whole log.

Clients run inside the namespace as child interpreters: :func:`run_client`
runs a script that prints one ``RESULT {json}`` line and returns those fields.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from tests.netns import NetNS, wait_for

INTERFACE = "tcpstack0"
HOST_ADDRESS = "10.0.0.1"
STACK_ADDRESS = "10.0.0.2"

START_TIMEOUT = 10.0
"""Seconds the daemon gets to bring its interface up and accept a connection."""

STOP_TIMEOUT = 10.0
"""Seconds the daemon gets to exit after SIGTERM before it is killed."""

# Tries to connect to the stack until it works or the deadline passes; one
# child interpreter per start instead of one per attempt.
_PROBE = """
import socket, sys, time
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
last = "no attempt"
while time.monotonic() < deadline:
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            print("CONNECTED", flush=True)
            # Finish the teardown before the test goes on (its packets must not
            # land in a capture the test starts next): send our FIN, then wait,
            # briefly, for the stack's.
            s.shutdown(socket.SHUT_WR)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass
            sys.exit(0)
    except OSError as e:
        last = repr(e)
    time.sleep(0.1)
print("FAILED " + last, flush=True)
sys.exit(1)
"""


class DaemonError(AssertionError):
    """The daemon did not start, or did not stop, as expected (message has its log)."""


@dataclass(frozen=True)
class DaemonExit:
    """How a daemon run ended."""

    returncode: int
    log: str
    stop_seconds: float
    """Seconds from SIGTERM to exit (0 if it had already exited)."""


def link_exists(netns: NetNS, name: str = INTERFACE) -> bool:
    """Whether ``ip link show NAME`` finds the interface in ``netns``."""
    result = subprocess.run(
        ["ip", "-n", netns.name, "link", "show", name],
        check=False,
        capture_output=True,
        text=True,
    )
    return result.returncode == 0


def link_is_up(netns: NetNS, name: str = INTERFACE) -> bool:
    """Whether ``ip -o link show NAME`` reports the interface administratively up."""
    result = subprocess.run(
        ["ip", "-n", netns.name, "-o", "link", "show", name],
        check=False,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        return False
    flags = result.stdout.split("<", 1)[-1].split(">", 1)[0].split(",")
    return "UP" in flags


class Daemon:
    """``tcpstack serve`` running in ``netns``; use as a context manager.

    ``args`` are appended to ``serve``. ``probe_port`` is the port whose TCP
    connect marks the daemon ready (None: only wait for the interface).
    """

    def __init__(
        self,
        netns: NetNS,
        log_path: Path,
        args: tuple[str, ...] | list[str] = (),
        *,
        interface: str = INTERFACE,
        probe_port: int | None = 80,
        require_up: bool = True,
    ) -> None:
        self.netns = netns
        self.require_up = require_up
        self.log_path = log_path
        self.args = list(args)
        self.interface = interface
        self.probe_port = probe_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.result: DaemonExit | None = None
        self._log_file: TextIO | None = None

    # -- lifecycle ------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> Daemon:
        argv = [sys.executable, "-m", "tcpstack", "serve", *self.args]
        self._log_file = self.log_path.open("w")
        self.proc = self.netns.popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=self.netns.python_env(),
        )
        deadline = time.monotonic() + timeout
        up = wait_for(lambda: self.proc is None or self.proc.poll() is not None or self._ready(),
                      timeout=timeout)
        if self.proc.poll() is not None:
            raise DaemonError(f"daemon exited {self.proc.returncode} at start:\n{self.log}")
        if not up:
            raise DaemonError(f"{self.interface} not ready after {timeout}s:\n{self.log}")
        if self.probe_port is not None:
            remaining = max(deadline - time.monotonic(), 1.0)
            probe = subprocess.run(
                self.netns.argv(
                    [sys.executable, "-c", _PROBE, STACK_ADDRESS, str(self.probe_port),
                     str(remaining)]
                ),
                capture_output=True,
                text=True,
                timeout=remaining + 5.0,
                check=False,
            )
            if probe.returncode != 0:
                raise DaemonError(
                    f"no TCP connect to {STACK_ADDRESS}:{self.probe_port}: "
                    f"{probe.stdout.strip()} {probe.stderr.strip()}\n{self.log}"
                )
        return self

    def _ready(self) -> bool:
        if self.require_up:
            return link_is_up(self.netns, self.interface)
        # Not brought up (e.g. --no-configure): rely on the "serving" log line.
        return link_exists(self.netns, self.interface) and " serving " in self.log

    def stop(self, timeout: float = STOP_TIMEOUT, sig: int = signal.SIGTERM) -> DaemonExit:
        """Send ``sig`` (by PID), wait up to ``timeout`` s; kill it if it hangs (and fail)."""
        if self.result is not None:
            return self.result
        assert self.proc is not None, "daemon was never started"
        t0 = time.monotonic()
        hung = False
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                hung = True
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(timeout=timeout)
        elapsed = time.monotonic() - t0
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.result = DaemonExit(self.proc.returncode, self.log, elapsed)
        if hung:
            raise DaemonError(f"daemon ignored signal {sig} for {timeout}s:\n{self.log}")
        return self.result

    def __enter__(self) -> Daemon:
        try:
            return self.start()
        except BaseException:
            with contextlib.suppress(DaemonError):
                self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inspection -----------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log(self) -> str:
        """Everything the daemon wrote so far (stdout and stderr)."""
        if self._log_file is not None:
            self._log_file.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class DaemonFactory:
    """Starts daemons in one namespace (log files under ``log_dir``); stops them all."""

    def __init__(self, netns: NetNS, log_dir: Path) -> None:
        self.netns = netns
        self.log_dir = log_dir
        self.started: list[Daemon] = []

    def __call__(
        self, *args: str, probe_port: int | None = 80, require_up: bool = True
    ) -> Daemon:
        log_path = self.log_dir / f"daemon-{len(self.started)}.log"
        daemon = Daemon(
            self.netns, log_path, args, probe_port=probe_port, require_up=require_up
        )
        self.started.append(daemon)
        return daemon.start()

    def stop_all(self) -> list[DaemonExit]:
        results = []
        for daemon in self.started:
            if daemon.proc is not None:
                results.append(daemon.stop())
        return results


def assert_clean_exit(result: DaemonExit) -> None:
    """Exit status 0, no traceback and no ``internal_error`` counted in the log."""
    assert result.returncode == 0, f"daemon exited {result.returncode}:\n{result.log}"
    assert "Traceback" not in result.log, result.log
    assert "internal_error" not in parse_counters(result.log), result.log
    assert "stopped; counters:" in result.log, result.log


def parse_counters(log: str, label: str = "stopped; counters") -> dict[str, int]:
    """The counters from the daemon's ``LABEL: a=1, b=2`` log line (by default the
    stack's ``stopped; counters: ...``; the services' line is ``service counters``)."""
    for line in reversed(log.splitlines()):
        _, sep, rest = line.partition(f"{label}: ")
        if not sep:
            continue
        counters: dict[str, int] = {}
        for item in rest.split(","):
            key, eq, value = item.strip().partition("=")
            if eq and value.isdigit():
                counters[key] = int(value)
        return counters
    return {}


def run_client(netns: NetNS, body: str, timeout: float = 30.0) -> dict[str, Any]:
    """Run the Python script ``body`` inside ``netns``; return its ``RESULT`` fields.

    The script gets ``emit(**fields)`` to print the result line. It must exit 0.
    """
    code = (
        "import json\n"
        "def emit(**fields):\n"
        "    print('RESULT ' + json.dumps(fields), flush=True)\n"
        + textwrap.dedent(body)
    )
    proc = netns.exec_python(code, timeout=timeout)
    detail = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, detail
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, detail
    fields: dict[str, Any] = json.loads(lines[0][len("RESULT ") :])
    return fields
