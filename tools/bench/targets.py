"""The three systems under test, each in namespaces of its own.

* :class:`TcpstackTarget` -- namespace A: ``tcpstack serve`` creates the TUN
  ``tcpstack0`` (host side 10.0.0.1/24 and fd00::1/64, stack 10.0.0.2 and
  fd00::2); clients run in A.
* :class:`KernelTarget` -- namespace S runs :mod:`tools.bench.kernel_server`
  on 10.9.0.1 and fd09::1, namespace C the clients on 10.9.0.2 and fd09::2; a
  veth pair joins them.
* :class:`PytcpTarget` -- namespace P: a TAP ``tap7`` (host side 10.8.0.1/24
  and fd08::1/64) with PyTCP on 10.8.0.2 and fd08::2 behind it, run by
  :mod:`tools.bench.pytcp_server` under PyTCP's own virtualenv; clients run in P.

A target's server process runs one of four applications (:attr:`Target.app`):
``services`` (tcpstack's own HTTP, echo and discard services: ``tcpstack serve``
on the stack, :mod:`tools.bench.kernel_server` on the kernel), ``tfo`` (the same
services with TCP Fast Open on: ``tcpstack serve --tfo``, the kernel server with
``TCP_FASTOPEN`` on its listeners and ``net.ipv4.tcp_fastopen=3`` in its
namespace; tcpstack and the kernel only), ``cc:NAME`` (the same services with
congestion control NAME, ``cubic`` or ``bbr``: ``tcpstack serve
--congestion-control NAME``, the kernel server with ``TCP_CONGESTION`` set on its
listeners, which accepted connections inherit; tcpstack and the kernel only) or
``web`` (the aiohttp application of :mod:`tools.bench.web_server`, plain HTTP
and HTTPS, on either stack); each workload says which one it needs
(:data:`tools.bench.settings.WORKLOAD_APPS`).

Every address is a 10.x address, or for the IPv6 workloads a unique local
(``fd00::/8``) one, inside these namespaces.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from tools.bench import client as client_mod
from tools.bench.netns import Netns, SetupError, terminate, wait_for
from tools.bench.settings import TFO_QUEUE, WEB_HTTP_PORT, WEB_HTTPS_PORT, Sizes

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_NOFILE = 65536
"""RLIMIT_NOFILE given to every server process started (needed by the kernel reference)."""

TCPSTACK_NAMES = {"reno": "newreno"}
"""Kernel congestion control names that tcpstack spells differently."""


def tcpstack_algorithm(name: str) -> str:
    """The kernel's congestion control ``name`` as ``tcpstack serve`` spells it."""
    return TCPSTACK_NAMES.get(name, name)

COMPARABLE_ALGORITHMS = ("cubic", "bbr", "reno")
"""Kernel congestion controls tcpstack also has (under :data:`TCPSTACK_NAMES`)."""

PORT_RANGE = "10000 65000"
"""Client ephemeral ports in the client namespaces (room for many short connections)."""


def kernel_default_congestion_control() -> str:
    """``net.ipv4.tcp_congestion_control`` as a fresh network namespace gets it: the
    algorithm the kernel reference would use unless told otherwise ("" if unreadable)."""
    ns = Netns("cc")
    try:
        ns.create()
        got = ns.run(["cat", "/proc/sys/net/ipv4/tcp_congestion_control"], timeout=10.0)
        return got.stdout.strip()
    except (SetupError, OSError, subprocess.SubprocessError):
        return ""
    finally:
        ns.close()


def python_env() -> dict[str, str]:
    """Environment for child interpreters: ``tools`` and ``tcpstack`` importable."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _raise_nofile() -> None:
    """A high RLIMIT_NOFILE for a server process, set before exec.

    Raising the hard limit needs CAP_SYS_RESOURCE; without it the soft limit
    goes up to the hard one.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= SERVER_NOFILE:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (SERVER_NOFILE, max(hard, SERVER_NOFILE)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def default_pinning() -> tuple[int, int] | None:
    """(server CPU, client CPU): the first two CPUs this process may use, or None if < 2."""
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else None


def _preexec(cpu: int | None, server: bool) -> Callable[[], None]:
    def setup_child() -> None:
        if server:
            _raise_nofile()
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    return setup_child


class Target:
    """A server under test, with the namespace its clients run in."""

    name = "?"
    service_ports = "80,7,9"
    web_ports = f"{WEB_HTTP_PORT},{WEB_HTTPS_PORT}"
    ready_timeout = 30.0
    supports_web = True
    """Whether the aiohttp application can run on this stack."""
    flood_subnet = ""
    """Where the spoofed SYN flood's source addresses come from (the link's subnet)."""
    flood_exclude: tuple[str, ...] = ()
    """Addresses of that subnet in use (never spoofed)."""

    def __init__(self, sizes: Sizes, log_dir: Path) -> None:
        self.sizes = sizes
        self.log_dir = log_dir
        self.host = ""
        """The server's IPv4 address, as the clients reach it."""
        self.host6 = ""
        """The server's IPv6 address ("" if it has none): the IPv6 workloads use it."""
        self.server: subprocess.Popen[Any] | None = None
        self.server_ns: Netns | None = None
        self.client_ns: Netns | None = None
        self.namespaces: list[Netns] = []
        self.starts = 0
        self.fresh = False
        """True while the running server process has not served a workload yet."""
        self.pin: tuple[int, int] | None = None
        """(server CPU, client CPU) to pin processes to, or None to let the scheduler decide."""
        self.app = "services"
        """Which application the server runs: ``services``, ``tfo``, ``cc:NAME`` or ``web``."""
        self.web_tls: tuple[Path, Path] | None = None
        """Certificate and key files (PEM) for the web application's HTTPS port."""
        self.congestion_control = ""
        """The congestion control of every workload but the bbr one (which chooses its
        own): an algorithm name, or "" for the stack's own default."""
        self.notes: list[str] = []
        self._log: IO[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------

    def setup(self) -> None:
        """Create the namespaces and start the server; raises :class:`SetupError`."""
        raise NotImplementedError

    def server_argv(self) -> list[str]:
        """The server command for the current :attr:`app`."""
        if self.app == "web":
            return self.web_argv()
        if self.app == "tfo":
            return self.tfo_argv()
        if self.app.startswith("cc:"):
            return self.cc_argv(self.app[len("cc:"):])
        return self.services_argv()

    def services_argv(self) -> list[str]:
        raise NotImplementedError

    def tfo_argv(self) -> list[str]:
        """The services with TCP Fast Open on (the tfo workload only)."""
        raise SetupError(f"{self.name} cannot run the services with TCP Fast Open")

    def cc_argv(self, algorithm: str) -> list[str]:
        """The services with congestion control ``algorithm`` (the bbr workload only)."""
        raise SetupError(f"{self.name} cannot choose its congestion control")

    def web_argv(self) -> list[str]:
        raise SetupError(f"{self.name} cannot run the web application")

    def _web_server(self, stack: str) -> list[str]:
        if self.web_tls is None:
            raise SetupError(f"{self.name}: no certificate for the web application")
        cert, key = self.web_tls
        argv = [sys.executable, "-m", "tools.bench.web_server", "--stack", stack,
                "--host", self.host, "--cert", str(cert), "--key", str(key)]
        if self.congestion_control:
            algorithm = self.congestion_control
            if stack == "tcpstack":
                algorithm = tcpstack_algorithm(algorithm)
            argv += ["--congestion-control", algorithm]
        return argv

    @property
    def ports(self) -> str:
        """The ports the running application listens on (probed at start-up)."""
        return self.web_ports if self.app == "web" else self.service_ports

    def teardown(self) -> None:
        """Stop every process (by PID) and delete every namespace. Idempotent.

        Afterwards :meth:`setup` may be called again: it starts as a new target's does
        (the usual services, on new namespaces).
        """
        try:
            self.stop_server()
        finally:
            for ns in reversed(self.namespaces):
                ns.close()
            self.namespaces.clear()
            self.server_ns = self.client_ns = None
            self.app, self.fresh = "services", False

    def _new_ns(self, role: str) -> Netns:
        ns = Netns(role)
        self.namespaces.append(ns)
        ns.create()
        return ns

    @property
    def server_pid(self) -> int:
        return self.server.pid if self.server is not None else 0

    def clients(self) -> Netns:
        if self.client_ns is None:
            raise SetupError(f"{self.name}: not set up")
        return self.client_ns

    def start_server(self) -> None:
        """Start the server in its namespace and wait (bounded) until all ports answer."""
        if self.server_ns is None:
            raise SetupError(f"{self.name}: not set up")
        self.starts += 1
        log_path = self.log_dir / f"{self.name}-{self.app}-server-{self.starts}.log"
        self._log = log_path.open("wb")
        self.server = self.server_ns.popen(
            self.server_argv(), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, env=python_env(), cwd=str(REPO_ROOT),
            preexec_fn=_preexec(self.pin[0] if self.pin else None, server=True),
        )
        self.wait_ready(log_path)
        self.fresh = True

    def address(self, ipv6: bool) -> str:
        """The server's address of one family, as the clients reach it."""
        if not ipv6:
            return self.host
        if not self.host6:
            raise SetupError(f"{self.name}: no IPv6 address")
        return self.host6

    def wait_ready(self, log_path: Path) -> None:
        """Wait until every port answers, on the IPv6 address too when the services have one."""
        hosts = [self.host] + ([self.host6] if self.host6 and self.app == "services" else [])
        for host in hosts:
            result = client_run(self, ["probe", "--host", host, "--ports", self.ports,
                                       "--timeout", f"{self.ready_timeout:g}"],
                                timeout=self.ready_timeout + 15)
            if self.server is not None and self.server.poll() is not None:
                raise SetupError(f"{self.name} server exited with status "
                                 f"{self.server.returncode} during start-up: "
                                 f"{_last_line(log_path)}")
            if "error" in result:
                raise SetupError(f"{self.name} server did not become ready on {host}: "
                                 f"{result['error']}; log: {_last_line(log_path)}")

    def stop_server(self) -> None:
        if self.server is not None:
            if self.server_ns is not None:
                self.server_ns.forget(self.server)
            else:
                terminate(self.server)
            self.server = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart_server(self) -> None:
        """A fresh server process (clean memory baseline for the idle workload)."""
        self.stop_server()
        self.start_server()

    def ensure_fresh(self, app: str = "services") -> None:
        """Make sure the next workload starts on a server process that served nothing yet,
        running ``app``.

        Then no workload inherits another's leftovers (thousands of closing
        connections, TIME-WAIT state, grown heaps, pending garbage collection).
        """
        if app != self.app:
            self.app = app
            self.fresh = False
        if self.server is not None and self.server.poll() is not None:
            self.notes.append(f"{self.name} server had exited (status "
                              f"{self.server.returncode}) after a workload; restarted")
            self.fresh = False
        if not self.fresh or self.server is None:
            self.restart_server()
        self.fresh = False

    def run_client(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a client command in the client namespace (on the client CPU when pinned).

        Raises :class:`subprocess.TimeoutExpired` after killing it (by PID) on timeout.
        """
        return self.clients().run(
            argv, timeout=timeout, env=python_env(), cwd=str(REPO_ROOT),
            preexec_fn=_preexec(self.pin[1] if self.pin else None, server=False))

    def describe(self) -> str:
        return self.name


class TcpstackTarget(Target):
    name = "tcpstack"
    ready_timeout = 20.0
    flood_subnet = "10.0.0.0/24"
    flood_exclude = ("10.0.0.1", "10.0.0.2")

    def setup(self) -> None:
        ns = self._new_ns("A")
        self.server_ns = self.client_ns = ns
        ns.sysctl("net.ipv4.ip_local_port_range", PORT_RANGE)  # IPv6 ports come from it too
        self.host = "10.0.0.2"
        self.host6 = "fd00::2"
        self.start_server()

    def services_argv(self) -> list[str]:
        return self._services(self.congestion_control)

    def _services(self, algorithm: str) -> list[str]:
        # The daemon's defaults, spelled out: the IPv6 workloads depend on them.
        # It adds the TUN's IPv6 address without duplicate address detection.
        argv = [sys.executable, "-m", "tcpstack", "serve", "--log-level", "warning",
                "--address", self.host, "--host-address", "10.0.0.1/24",
                "--address6", self.host6, "--host-address6", "fd00::1/64"]
        if algorithm:
            argv += ["--congestion-control", tcpstack_algorithm(algorithm)]
        return argv

    def tfo_argv(self) -> list[str]:
        # Its own server start: no other workload runs with Fast Open on.
        return [*self.services_argv(), "--tfo", "--tfo-queue", str(TFO_QUEUE)]

    def cc_argv(self, algorithm: str) -> list[str]:
        return self._services(algorithm)

    def web_argv(self) -> list[str]:
        return self._web_server("tcpstack")

    def restart_server(self) -> None:
        # The TUN goes away with the process; wait (bounded) before the next one creates it.
        self.stop_server()
        ns = self.server_ns
        if ns is not None:
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                try:
                    ns.ip("link", "show", "tcpstack0")
                except SetupError:
                    break
                time.sleep(0.1)
        self.start_server()

    def describe(self) -> str:
        return ("tcpstack over TUN (10.0.0.1 -> 10.0.0.2 and fd00::1 -> fd00::2, one "
                "namespace): tcpstack serve, or for aiohttp/https the web application on "
                "TunStack + TcpStackSite")


class KernelTarget(Target):
    name = "kernel"
    ready_timeout = 20.0
    flood_subnet = "10.9.0.0/24"
    flood_exclude = ("10.9.0.1", "10.9.0.2")
    _fastopen_default = "1"
    """``net.ipv4.tcp_fastopen`` of the server namespace as created (read at set-up)."""
    _fastopen = "1"
    """Its value now."""

    def setup(self) -> None:
        srv = self._new_ns("S")
        cli = self._new_ns("C")
        self.server_ns, self.client_ns = srv, cli
        # The veth pair is created inside S with its peer placed straight into C.
        srv.ip("link", "add", "vbench-s", "type", "veth", "peer", "name", "vbench-c",
               "netns", cli.name)
        srv.ip("addr", "add", "10.9.0.1/24", "dev", "vbench-s")
        cli.ip("addr", "add", "10.9.0.2/24", "dev", "vbench-c")
        # IPv6 without duplicate address detection: a tentative address could not be
        # bound (the server) or used as a source (the clients) for a second or so, and
        # nothing else is on this link.
        srv.ip("-6", "addr", "add", "fd09::1/64", "dev", "vbench-s", "nodad")
        cli.ip("-6", "addr", "add", "fd09::2/64", "dev", "vbench-c", "nodad")
        srv.ip("link", "set", "vbench-s", "up")
        cli.ip("link", "set", "vbench-c", "up")
        cli.sysctl("net.ipv4.ip_local_port_range", PORT_RANGE)  # IPv6 ports come from it too
        self.host = "10.9.0.1"
        self.host6 = "fd09::1"
        for ns, dev in ((srv, "vbench-s"), (cli, "vbench-c")):
            _wait_ipv6_usable(ns, dev)
        cookies = srv.run(["cat", "/proc/sys/net/ipv4/tcp_syncookies"], timeout=10.0)
        self.notes.append(f"kernel server namespace: net.ipv4.tcp_syncookies = "
                          f"{cookies.stdout.strip() or '?'} (the Linux default: SYN cookies "
                          "once a listener's SYN queue is full)")
        fastopen = srv.run(["cat", "/proc/sys/net/ipv4/tcp_fastopen"], timeout=10.0)
        self._fastopen_default = self._fastopen = fastopen.stdout.strip() or "1"
        self.start_server()

    def start_server(self) -> None:
        # Fast Open's server bit (2) for the tfo workload only, the namespace's own
        # value (Linux's default 1: client only) for every other one.
        wanted = "3" if self.app == "tfo" else self._fastopen_default
        if self.server_ns is not None and wanted != self._fastopen:
            self.server_ns.sysctl("net.ipv4.tcp_fastopen", wanted)
            self._fastopen = wanted
        super().start_server()

    def services_argv(self) -> list[str]:
        return self._services(self.congestion_control)

    def _services(self, algorithm: str) -> list[str]:
        argv = [sys.executable, "-m", "tools.bench.kernel_server", "--host", self.host,
                "--host", self.host6, "--nofile", str(SERVER_NOFILE)]
        if algorithm:
            argv += ["--congestion-control", algorithm]
        return argv

    def tfo_argv(self) -> list[str]:
        return [*self.services_argv(), "--tfo-queue", str(TFO_QUEUE)]

    def cc_argv(self, algorithm: str) -> list[str]:
        # Per socket: TCP_CONGESTION on the listeners (read back at start-up), which the
        # accepted connections inherit; the namespace's default stays as it is.
        return self._services(algorithm)

    def web_argv(self) -> list[str]:
        return self._web_server("kernel")

    def describe(self) -> str:
        return ("Linux TCP: asyncio.start_server + uvloop with the same tcpstack.apps "
                "services, or for aiohttp/https the same web application on web.SockSite; "
                "veth 10.9.0.2 -> 10.9.0.1 and fd09::2 -> fd09::1 between two namespaces")


class PytcpTarget(Target):
    name = "pytcp"
    ready_timeout = 45.0  # PyTCP probes its addresses (ARP) before it answers
    supports_web = False  # PyTCP has BSD-like sockets, no asyncio transports for aiohttp

    def __init__(self, sizes: Sizes, log_dir: Path, python: Path, version: str) -> None:
        super().__init__(sizes, log_dir)
        self.python = python
        self.version = version

    def setup(self) -> None:
        ns = self._new_ns("P")
        self.server_ns = self.client_ns = ns
        ns.ip("tuntap", "add", "mode", "tap", "name", "tap7")
        ns.ip("addr", "add", "10.8.0.1/24", "dev", "tap7")
        # No DAD on the kernel's side; PyTCP runs its own for fd08::2 (RFC 4862 5.4)
        # before it answers, which the readiness probe waits for.
        ns.ip("-6", "addr", "add", "fd08::1/64", "dev", "tap7", "nodad")
        ns.ip("link", "set", "tap7", "up")
        ns.sysctl("net.ipv4.ip_local_port_range", PORT_RANGE)
        self.host = "10.8.0.2"
        self.host6 = "fd08::2"
        self.start_server()

    def services_argv(self) -> list[str]:
        script = Path(__file__).with_name("pytcp_server.py")
        return [str(self.python), "-O", str(script), "--interface", "tap7",
                "--address", "10.8.0.2/24", "--address6", f"{self.host6}/64"]

    def describe(self) -> str:
        return (f"PyTCP {self.version} on TAP tap7 (10.8.0.1 -> 10.8.0.2 and fd08::1 -> "
                "fd08::2, one namespace)")


def _wait_ipv6_usable(ns: Netns, dev: str, timeout: float = 5.0) -> None:
    """Wait (bounded) until ``dev`` in ``ns`` has its global IPv6 address and none tentative.

    The addresses are added with ``nodad``, so this normally returns at once; it
    guards against a kernel that ignores the flag or an address that failed DAD.
    """
    def usable() -> bool:
        out = ns.ip("-6", "addr", "show", "dev", dev, "scope", "global")
        return "inet6" in out and "tentative" not in out and "dadfailed" not in out

    if not wait_for(usable, timeout):
        detail = ns.ip("-6", "addr", "show", "dev", dev).strip().replace("\n", " ")
        raise SetupError(f"the IPv6 address of {dev} did not become usable within "
                         f"{timeout:g}s: {detail[-200:]}")


def client_run(target: Target, args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``python -m tools.bench.client ARGS`` in the target's client namespace.

    Returns the client's RESULT fields, or ``{"error": ...}`` when it timed
    out (it is killed by PID), crashed, or printed no result.
    """
    argv = [sys.executable, "-m", "tools.bench.client", *args]
    try:
        proc = target.run_client(argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g}s (hard timeout)"}
    return client_result(proc)


def client_result(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The RESULT fields a finished ``tools.bench.client`` printed, or ``{"error": ...}``."""
    for line in proc.stdout.splitlines():
        if line.startswith(client_mod.RESULT_PREFIX):
            fields: dict[str, Any] = json.loads(line[len(client_mod.RESULT_PREFIX):])
            return fields
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"client exited with status {proc.returncode}: {tail}"}


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][-300:] if lines else "(empty log)"

