"""A simulated impaired path between a kernel client and the tcpstack daemon.

This is a helper module for the integration tests, not a test file.

:class:`PathSim` builds, inside two throw-away namespaces, the topology::

    namespace C (kernel client)            namespace S (server side, ip_forward=1)
    rc0 10.30.0.2/24 (TUN)                 rs0 10.30.0.1/24 (TUN)
    route 10.0.0.0/24 dev rc0              tcpstack0 10.0.0.1/24 -> tcpstack 10.0.0.2
           \\                                   /
            `-- tools/impair_relay.py: rc0 <-> rs0, seeded impairment per direction

A client in C reaches 10.0.0.2 through ``rc0``; the relay (a process in the
machine's own namespace that only *attaches* to the two pre-created persistent
TUNs, see :mod:`tools.impair_relay`) copies each packet to ``rs0`` through its
impairment; S forwards it into ``tcpstack0`` where the daemon answers; replies
travel back the same way. Direction A->B of the relay is client->server
(``a2b``), B->A is server->client (``b2a``).

With ``ipv6=True`` the same path also carries IPv6 (rc0 fd30::2/64, rs0
fd30::1/64, route fd00::/64 dev rc0 in C, IPv6 forwarding in S) and the
clients (:meth:`PathSim.curl`, :meth:`PathSim.ping`) use fd00::2; otherwise IPv6
is disabled in both namespaces, so no router solicitations or MLD reports
cross the relay and the daemon serves IPv4 only.

Everything is created in the two namespaces; on exit the relay and the daemon
are stopped by PID and both namespaces are deleted (which destroys the TUNs).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from tests.integration.daemon import (
    STACK_ADDRESS,
    STACK_ADDRESS6,
    Daemon,
    DaemonExit,
    run_client,
)
from tests.netns import REPO_ROOT, NetNS, wait_for

CLIENT_TUN = "rc0"
SERVER_TUN = "rs0"
CLIENT_ADDRESS = "10.30.0.2"
SERVER_RELAY_ADDRESS = "10.30.0.1"
RELAY_PREFIX = 24
STACK_NETWORK = "10.0.0.0/24"
CLIENT_ADDRESS6 = "fd30::2/64"
SERVER_RELAY_ADDRESS6 = "fd30::1/64"
STACK_NETWORK6 = "fd00::/64"

RELAY_START_TIMEOUT = 15.0
RELAY_STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class RelayExit:
    """How the relay ended: exit status, its ``COUNTERS`` and everything it printed."""

    returncode: int
    counters: dict[str, int]
    log: str


def _sysctl(ns: NetNS, *settings: str) -> None:
    """``sysctl -w`` inside ``ns``; settings the kernel lacks are ignored."""
    for setting in settings:
        ns.run(["sysctl", "-qw", setting], check=False, capture_output=True)


class PathSim:
    """The client namespace, the impaired relay and the daemon; a context manager.

    ``impair`` (both directions) and ``impair_a2b``/``impair_b2a`` are relay
    specs (:meth:`tcpstack.link.impair.ImpairSpec.parse` syntax); None leaves
    the path clean. ``daemon_args`` go to ``tcpstack serve``.
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        impair: str | None = None,
        impair_a2b: str | None = None,
        impair_b2a: str | None = None,
        daemon_args: Sequence[str] = (),
        relay_duration_limit: float = 600.0,
        ipv6: bool = False,
    ) -> None:
        self.log_dir = log_dir
        self.ipv6 = ipv6
        self.address = STACK_ADDRESS6 if ipv6 else STACK_ADDRESS
        self.impair = impair
        self.impair_a2b = impair_a2b
        self.impair_b2a = impair_b2a
        self.daemon_args = list(daemon_args)
        self.relay_duration_limit = relay_duration_limit
        self.server = NetNS(prefix="tcpst-s")
        self.client = NetNS(prefix="tcpst-c")
        self.daemon: Daemon | None = None
        self.relay: subprocess.Popen[bytes] | None = None
        self.relay_result: RelayExit | None = None
        self._relay_out: TextIO | None = None
        self._relay_err: TextIO | None = None
        self._exits = contextlib.ExitStack()

    # -- lifecycle ------------------------------------------------------------

    def __enter__(self) -> PathSim:
        try:
            self._exits.enter_context(self.server)
            self._exits.enter_context(self.client)
            self._exits.callback(self._stop_daemon_quietly)
            self._exits.callback(self._stop_relay_quietly)  # runs first (LIFO)
            self._configure_namespaces()
            self.daemon = Daemon(self.server, self.log_dir / "daemon.log", self.daemon_args)
            self.daemon.start()
            self._create_relay_tuns()
            self._start_relay()
        except BaseException:
            self._exits.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exits.close()

    def _configure_namespaces(self) -> None:
        # No IPv6 chatter (router solicitations, MLD) through the relay; loose
        # reverse-path filtering; S routes between rs0 and tcpstack0.
        for ns in (self.server, self.client):
            if self.ipv6:  # IPv6 on, but no router solicitations
                _sysctl(ns, "net.ipv6.conf.all.router_solicitations=0",
                        "net.ipv6.conf.default.router_solicitations=0")
            else:
                _sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1")
            _sysctl(ns, "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
        self.server.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True,
                        capture_output=True)
        if self.ipv6:
            self.server.run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], check=True,
                            capture_output=True)

    def _create_relay_tuns(self) -> None:
        for ns, name, address, address6 in (
                (self.client, CLIENT_TUN, CLIENT_ADDRESS, CLIENT_ADDRESS6),
                (self.server, SERVER_TUN, SERVER_RELAY_ADDRESS, SERVER_RELAY_ADDRESS6)):
            ns.ip("tuntap", "add", "mode", "tun", "name", name)
            ns.ip("link", "set", name, "txqueuelen", "5000")
            ns.ip("addr", "add", f"{address}/{RELAY_PREFIX}", "dev", name)
            if self.ipv6:
                ns.ip("addr", "add", address6, "dev", name, "nodad")
            ns.ip("link", "set", name, "up")
            _sysctl(ns, f"net.ipv4.conf.{name}.rp_filter=0")
        # A TUN is point-to-point: the client reaches the stack's network through rc0.
        # (S has 10.30.0.0/24 dev rs0 from rs0's address.)
        self.client.ip("route", "add", STACK_NETWORK, "dev", CLIENT_TUN)
        if self.ipv6:
            self.client.ip("-6", "route", "add", STACK_NETWORK6, "dev", CLIENT_TUN)

    def _start_relay(self) -> None:
        argv = [sys.executable, "-m", "tools.impair_relay",
                "--ns-a", self.client.name, "--tun-a", CLIENT_TUN,
                "--ns-b", self.server.name, "--tun-b", SERVER_TUN,
                "--duration-limit", str(self.relay_duration_limit)]
        for opt, spec in (("--impair", self.impair), ("--impair-a2b", self.impair_a2b),
                          ("--impair-b2a", self.impair_b2a)):
            if spec is not None:
                argv += [opt, spec]
        self._relay_out = (self.log_dir / "relay.out").open("w")
        self._relay_err = (self.log_dir / "relay.err").open("w")
        # The relay runs in the machine's own namespace and setns()-es its thread
        # into C and S only to attach to the TUNs there.
        self.relay = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._relay_out, stderr=self._relay_err,
            cwd=str(REPO_ROOT), env=self.server.python_env())
        relay = self.relay
        ready = wait_for(lambda: relay.poll() is not None or "READY" in self._read("relay.out"),
                         timeout=RELAY_START_TIMEOUT)
        if relay.poll() is not None or not ready:
            raise AssertionError(f"relay did not start (exit {relay.poll()}):\n"
                                 + self._read("relay.out") + self._read("relay.err"))

    def _read(self, name: str) -> str:
        for f in (self._relay_out, self._relay_err):
            if f is not None:
                f.flush()
        try:
            return (self.log_dir / name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- stopping -------------------------------------------------------------

    def stop_relay(self, timeout: float = RELAY_STOP_TIMEOUT) -> RelayExit:
        """SIGTERM the relay by PID; return its exit status and counters."""
        if self.relay_result is not None:
            return self.relay_result
        assert self.relay is not None, "relay never started"
        if self.relay.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.relay.send_signal(signal.SIGTERM)
            try:
                self.relay.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.relay.kill()
                self.relay.wait(timeout=timeout)
        out, err = self._read("relay.out"), self._read("relay.err")
        for f in (self._relay_out, self._relay_err):
            if f is not None:
                f.close()
        self._relay_out = self._relay_err = None
        counters: dict[str, int] = {}
        for line in out.splitlines():
            if line.startswith("COUNTERS "):
                counters = json.loads(line[len("COUNTERS "):])
        self.relay_result = RelayExit(self.relay.returncode, counters, out + err)
        return self.relay_result

    def stop_daemon(self) -> DaemonExit:
        assert self.daemon is not None
        return self.daemon.stop()

    def _stop_relay_quietly(self) -> None:
        if self.relay is not None:
            self.stop_relay()

    def _stop_daemon_quietly(self) -> None:
        if self.daemon is not None and self.daemon.proc is not None:
            with contextlib.suppress(AssertionError):
                self.daemon.stop()

    # -- clients in C ---------------------------------------------------------

    def run(self, argv: Sequence[str], timeout: float = 60.0,
            **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` in the client namespace (output captured)."""
        kwargs.setdefault("capture_output", True)
        return self.client.run(list(argv), timeout=timeout, check=False, **kwargs)

    def python(self, body: str, timeout: float = 60.0) -> dict[str, Any]:
        """Run a Python client in C that calls ``emit(**fields)``; return the fields."""
        return run_client(self.client, body, timeout=timeout)

    def curl(self, path: str, timeout: float = 120.0) -> bytes:
        """GET ``http://10.0.0.2{path}`` (or fd00::2) from C with curl; the body (fails on
        error)."""
        t0 = time.monotonic()
        host = f"[{self.address}]" if self.ipv6 else self.address
        out = self.run(["curl", "-sS", "--fail", "-m", str(timeout), "-o", "-",
                        f"http://{host}{path}"], timeout=timeout + 10)
        assert out.returncode == 0, (
            f"curl {path} failed after {time.monotonic() - t0:.1f}s (exit {out.returncode}): "
            f"{out.stderr.decode(errors='replace')}")
        body: bytes = out.stdout
        return body

    def ping(self, count: int = 3, interval: float = 0.2,
             wait: float = 2.0) -> subprocess.CompletedProcess[str]:
        """``ping -c COUNT`` 10.0.0.2 (or fd00::2) from C (text output; not checked)."""
        return self.run(["ping", "-n", "-c", str(count), "-i", str(interval), "-W", str(wait),
                         self.address], timeout=count * interval + wait + 10, text=True)
