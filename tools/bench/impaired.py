"""An impaired path in front of a target: the same relay for tcpstack and the kernel.

:class:`ImpairedPath` adds, for the duration of one repetition::

    namespace I (kernel clients)              the target's server namespace
    rc0 10.30.0.2/24 (TUN)                    rs0 10.30.0.1/24 (TUN), forwarding on
    route <target host>/32 dev rc0                  |
           \\                                       /
            `-- tools/impair_relay.py: rc0 <-> rs0, a seeded impairment per direction

so a client in I reaches the target's address (tcpstack's 10.0.0.2 behind its TUN,
or the kernel server's 10.9.0.1) through the relay. Direction a2b is client ->
server, b2a server -> client. The relay is the same program with the same seeds
for both targets, so both see the same loss, delay and reordering; its CPU cost is
the same for both too.

Everything is torn down afterwards: the relay stopped by PID, ``rs0`` deleted,
namespace I removed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from tools.bench.netns import Netns, SetupError, terminate, wait_for

CLIENT_TUN = "rc0"
SERVER_TUN = "rs0"
CLIENT_ADDRESS = "10.30.0.2"
SERVER_ADDRESS = "10.30.0.1"
RELAY_START_TIMEOUT = 15.0


class ImpairedPath:
    """A client namespace joined to ``server_ns`` through the impairing relay."""

    def __init__(self, server_ns: Netns, host: str, log_dir: Path, *, a2b: str | None,
                 b2a: str | None, duration_limit: float, python_env: dict[str, str],
                 cwd: Path, client_sysctls: dict[str, str] | None = None) -> None:
        self.server_ns = server_ns
        self.host = host
        self.log_dir = log_dir
        self.a2b = a2b
        self.b2a = b2a
        self.duration_limit = duration_limit
        self.env = python_env
        self.cwd = cwd
        self.client_sysctls = dict(client_sysctls or {})
        """Extra ``net.*`` sysctls set in namespace I (e.g. ``net.ipv4.tcp_fastopen``)."""
        self.client_ns: Netns | None = None
        self.relay: subprocess.Popen[str] | None = None
        self.counters: dict[str, int] = {}
        self._out: IO[str] | None = None
        self._err: IO[str] | None = None
        self._made_server_tun = False

    def __enter__(self) -> ImpairedPath:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _setup(self) -> None:
        cli = Netns("I")
        cli.create()
        self.client_ns = cli
        srv = self.server_ns
        for ns, name, address in ((cli, CLIENT_TUN, CLIENT_ADDRESS),
                                  (srv, SERVER_TUN, SERVER_ADDRESS)):
            ns.ip("tuntap", "add", "mode", "tun", "name", name)
            if ns is srv:
                self._made_server_tun = True
            ns.ip("link", "set", name, "txqueuelen", "5000")
            ns.ip("addr", "add", f"{address}/24", "dev", name)
            ns.ip("link", "set", name, "up")
        cli.ip("route", "add", f"{self.host}/32", "dev", CLIENT_TUN)
        for ns in (cli, srv):
            ns.sysctl("net.ipv4.conf.all.rp_filter", "0")
            ns.sysctl(f"net.ipv4.conf.{'rc0' if ns is cli else 'rs0'}.rp_filter", "0")
        srv.sysctl("net.ipv4.ip_forward", "1")
        cli.sysctl("net.ipv4.ip_local_port_range", "10000 65000")
        for key, value in self.client_sysctls.items():
            cli.sysctl(key, value)
        argv = [sys.executable, "-m", "tools.impair_relay",
                "--ns-a", cli.name, "--tun-a", CLIENT_TUN,
                "--ns-b", srv.name, "--tun-b", SERVER_TUN,
                "--duration-limit", f"{self.duration_limit:g}"]
        if self.a2b is not None:
            argv += ["--impair-a2b", self.a2b]
        if self.b2a is not None:
            argv += ["--impair-b2a", self.b2a]
        self._out = (self.log_dir / "relay.out").open("w")
        self._err = (self.log_dir / "relay.err").open("w")
        # The relay runs in our own namespace and setns()-es into I and the
        # server namespace only to attach to the two TUNs.
        self.relay = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                      stderr=self._err, text=True, env=self.env,
                                      cwd=str(self.cwd))
        relay = self.relay
        ready = wait_for(lambda: relay.poll() is not None or "READY" in self._read("relay.out"),
                         timeout=RELAY_START_TIMEOUT)
        if relay.poll() is not None or not ready:
            raise SetupError("the impairing relay did not start: "
                             + (self._read("relay.err").strip().splitlines() or ["?"])[-1])

    def _read(self, name: str) -> str:
        for f in (self._out, self._err):
            if f is not None:
                f.flush()
        try:
            return (self.log_dir / name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a client command in namespace I (killed by PID on timeout)."""
        if self.client_ns is None:
            raise SetupError("impaired path not set up")
        return self.client_ns.run(argv, timeout=timeout, env=self.env, cwd=str(self.cwd))

    def close(self) -> None:
        """Stop the relay (collecting its counters), delete rs0 and namespace I."""
        if self.relay is not None:
            terminate(self.relay)
            self.relay = None
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and "COUNTERS" not in self._read("relay.out"):
                time.sleep(0.05)
            for line in self._read("relay.out").splitlines():
                if line.startswith("COUNTERS "):
                    loaded: dict[str, Any] = json.loads(line[len("COUNTERS "):])
                    self.counters = {k: int(v) for k, v in loaded.items()
                                     if isinstance(v, int | float)}
        for f in (self._out, self._err):
            if f is not None:
                f.close()
        self._out = self._err = None
        if self._made_server_tun:
            self._made_server_tun = False
            try:
                self.server_ns.ip("link", "del", SERVER_TUN)
            except SetupError:
                pass  # gone with its namespace already
        if self.client_ns is not None:
            self.client_ns.close()
            self.client_ns = None
