"""Observation in the daemon: its flags, what it opens before dropping privileges,
and what it runs on the event loop.

``tcpstack serve`` calls, in order:

1. :func:`add_arguments` (the "observation and logs" argument group);
2. :func:`check` -- flag combinations, and that ``prometheus-client`` is there
   when ``--metrics`` is given (a one-line error otherwise);
3. :meth:`Resources.open` -- as root, before privileges are dropped: the capture
   file, the control socket, kernel sockets for the HTTP endpoints, the
   dashboard's static files;
4. :meth:`Resources.wrap_device` -- the counting/capturing device around the TUN;
5. :meth:`Resources.start` -- on the loop: the observatory (light, or full when a
   flag needs every packet), ladders printed for ``--trace-handshakes``, the
   control server, metrics and dashboard (on the kernel or through the stack),
   the refusal log, SIGHUP reopening the capture;
6. :meth:`Resources.stop_serving` at shutdown, :meth:`Resources.close` at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import ipaddress
import logging
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tcpstack.observe.control import (
    ControlError,
    ControlServer,
    bind_socket,
    default_socket_path,
)
from tcpstack.observe.core import Observatory
from tcpstack.observe.ladder import Ladder, render_json, render_text
from tcpstack.observe.pcap import FORMATS, PcapWriter
from tcpstack.observe.web import BindAddress, HttpServer, bind_kernel_socket

log = logging.getLogger("tcpstack.observe")

PRELOAD = ("tcpstack.observe.core", "tcpstack.observe.ladder", "tcpstack.observe.table",
           "tcpstack.observe.control", "tcpstack.observe.device", "tcpstack.observe.pcap",
           "tcpstack.observe.web", "tcpstack.observe.logs", "tcpstack.observe.svg",
           "tcpstack.observe.dashboard", "tcpstack.observe.history",
           "tcpstack.observe.metrics", "prometheus_client")
"""Modules imported before privileges are dropped (see ``preload_modules``)."""


def _bind_address(value: str) -> BindAddress:
    try:
        return BindAddress.parse(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _nonneg_int(value: str) -> int:
    try:
        n = int(value, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} must not be negative")
    return n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``serve``'s observation flags, in their own group."""
    g = parser.add_argument_group("observation and logs")
    g.add_argument("--trace-handshakes", action="store_true",
                   help="print every connection's opening and teardown as a ladder "
                        "(stdout)")
    g.add_argument("--trace-format", choices=("text", "json"), default="text",
                   help="ladders as a text drawing or as JSON lines (default: text)")
    g.add_argument("--pcap", type=Path, default=None, metavar="FILE",
                   help="write every packet in and out to FILE (pcapng, or classic pcap "
                        "for a .pcap name); SIGHUP reopens it")
    g.add_argument("--pcap-format", choices=FORMATS, default=None,
                   help="capture format (default: from the file name)")
    g.add_argument("--pcap-snaplen", type=_nonneg_int, default=0, metavar="BYTES",
                   help="bytes kept of each packet, 0 for all (default: 0)")
    g.add_argument("--pcap-max-size", type=_nonneg_int, default=0, metavar="BYTES",
                   help="rotate the capture before it grows beyond this, 0 never "
                        "(default: 0)")
    g.add_argument("--pcap-files", type=int, default=2, metavar="N",
                   help="with --pcap-max-size: files kept, FILE, FILE.1 ... (default: 2)")
    g.add_argument("--metrics", type=_bind_address, default=None, metavar="ADDR:PORT",
                   help="serve Prometheus metrics at http://ADDR:PORT/metrics (an address "
                        "of the stack: served through the stack itself; IPv6 as "
                        "[ADDR]:PORT)")
    g.add_argument("--dashboard", type=_bind_address, default=None, metavar="ADDR:PORT",
                   help="serve the live web view at http://ADDR:PORT/ (an address of the "
                        "stack: served through the stack itself; IPv6 as [ADDR]:PORT)")
    g.add_argument("--observe", action="store_true",
                   help="watch every packet even without the flags above (tcpstack ss "
                        "then shows retransmissions)")
    g.add_argument("--control-socket", type=Path, default=None, metavar="PATH",
                   help="UNIX socket for tcpstack ss / trace (default: "
                        "/run/tcpstack/INTERFACE[@netns-INODE].sock as root)")
    g.add_argument("--no-control-socket", action="store_true",
                   help="no control socket (tcpstack ss and trace cannot attach)")
    g.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="log lines for people (text) or one JSON object per line "
                        "(default: text)")


def wants_packets(args: argparse.Namespace) -> bool:
    """Whether the flags need every packet observed from the start."""
    return bool(args.trace_handshakes or args.metrics or args.dashboard or args.observe)


def check(args: argparse.Namespace, workers: int) -> None:
    """Flag combinations; ValueError with a one-line message."""
    if workers > 1 and (wants_packets(args) or args.pcap is not None):
        raise ValueError("--trace-handshakes, --pcap, --metrics, --dashboard and --observe "
                         "work with one worker only")
    if args.pcap_files < 1:
        raise ValueError("--pcap-files must be at least 1")
    if args.pcap_max_size and args.pcap_max_size < 4096:
        raise ValueError("--pcap-max-size must be at least 4096 bytes")
    if args.metrics is not None and importlib.util.find_spec("prometheus_client") is None:
        raise ValueError("--metrics needs the prometheus-client package "
                         "(pip install 'tcpstack[metrics]')")
    if args.metrics is not None and args.dashboard is not None and \
            args.metrics == args.dashboard:
        raise ValueError("--metrics and --dashboard cannot share an address and port")


@dataclass
class _Endpoint:
    name: str
    address: BindAddress
    kernel_socket: socket.socket | None = None  # None: served through the stack
    server: Any = None
    http: HttpServer | None = None


@dataclass
class Resources:
    """What observation holds for one daemon (see the module docstring)."""

    args: argparse.Namespace
    writer: PcapWriter | None = None
    control_socket: socket.socket | None = None
    control_path: Path | None = None
    endpoints: list[_Endpoint] = field(default_factory=list)
    observatory: Observatory | None = None
    device: Any = None
    control: ControlServer | None = None
    refusals: Any = None
    out: TextIO = sys.stdout
    static: dict[str, bytes] | None = None
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _sighup: bool = False
    _flush_due: bool = False

    @classmethod
    def open(cls, args: argparse.Namespace, interface: str, stack_addresses: set[str],
             workers: int) -> Resources:
        """Open files and sockets while still privileged. Raises OSError/ControlError
        with a one-line message."""
        res = cls(args)
        try:
            if args.pcap is not None:
                res.writer = PcapWriter(args.pcap, args.pcap_format,
                                        snaplen=args.pcap_snaplen,
                                        max_bytes=args.pcap_max_size, files=args.pcap_files,
                                        interface=interface)
            if not args.no_control_socket and workers == 1:
                explicit = args.control_socket is not None
                path = args.control_socket or default_socket_path(interface)
                try:
                    res.control_socket = bind_socket(path)
                    res.control_path = path
                except ControlError as e:
                    if explicit:
                        raise
                    log.warning("%s; tcpstack ss and trace will not reach this daemon", e)
            for name in ("metrics", "dashboard"):
                address: BindAddress | None = getattr(args, name)
                if address is None:
                    continue
                ep = _Endpoint(name, address)
                if str(address.host) not in stack_addresses:
                    ep.kernel_socket = bind_kernel_socket(address)
                res.endpoints.append(ep)
            if args.dashboard is not None:
                from tcpstack.observe.dashboard import load_static

                res.static = load_static()
        except BaseException:
            res.close_now()
            raise
        return res

    # ------------------------------------------------------------- device

    def wrap_device(self, device: Any, vnet: bool) -> Any:
        """The counting/capturing wrapper, when metrics or a capture need it."""
        if self.writer is None and self.args.metrics is None:
            return device
        from tcpstack.observe.device import TapDevice

        self.device = TapDevice(device, vnet=vnet, writer=self.writer)
        return self.device

    # --------------------------------------------------------------- start

    async def start(self, net: Any) -> None:
        """Attach the observatory to ``net``'s stack and start every service."""
        from tcpstack.observe.logs import RefusalLog

        loop = asyncio.get_running_loop()
        stack = net.stack
        args = self.args
        packets = wants_packets(args)
        obs = Observatory(stack, epoch=time.time() - time.monotonic(), packets=packets,
                          clock=time.monotonic)
        self.observatory = obs
        obs.attach()
        self.refusals = RefusalLog(obs)
        if args.trace_handshakes:
            obs.enable_ladders()
            obs.on_ladder.append(self._print_ladder)
        if self.control_socket is not None and self.control_path is not None:
            self.control = ControlServer(stack, obs, obs.time, keep_packets=packets,
                                         keep_ladders=bool(args.trace_handshakes or
                                                           args.dashboard))
            await self.control.start(self.control_socket, self.control_path)
            self.control_socket = None
            log.info("control socket %s (tcpstack ss, tcpstack trace)", self.control_path)
        for ep in self.endpoints:
            routes = self._routes(ep.name, net, obs, loop)
            ep.http = HttpServer(routes, ep.name)
            if ep.kernel_socket is not None:
                ep.server = await asyncio.start_server(ep.http.handle, sock=ep.kernel_socket)
                ep.kernel_socket = None
                where = "on the host"
            else:
                ep.server = await net.start_server(ep.http.handle, str(ep.address.host),
                                                   ep.address.port)
                where = "through the stack"
            log.info("%s at http://%s/ (%s)", ep.name, ep.address, where)
        if self.writer is not None:
            log.info("capturing to %s (%s); SIGHUP reopens it", self.writer.path,
                     self.writer.format)
            loop.add_signal_handler(signal.SIGHUP, self._reopen)
            self._sighup = True
        self._tasks.append(asyncio.ensure_future(self._tick()))

    def _routes(self, name: str, net: Any, obs: Observatory,
                loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        if name == "metrics":
            from tcpstack.observe.metrics import Metrics, routes

            return routes(Metrics(net.stack, obs, self.device))
        from tcpstack.observe.dashboard import Dashboard

        return Dashboard(obs, obs.time, self.static).routes()

    def _print_ladder(self, doc: Ladder) -> None:
        """Write a finished ladder; the output is flushed once the event loop has
        done its current batch of packets (one write for all the ladders it made),
        or at once outside the loop."""
        text = render_json(doc) if self.args.trace_format == "json" else \
            render_text(doc) + "\n"
        try:
            self.out.write(text + "\n")
        except (OSError, ValueError):
            return
        if self._flush_due:
            return
        try:
            asyncio.get_running_loop().call_soon(self._flush_ladders)
            self._flush_due = True
        except RuntimeError:  # no loop running: flush now
            self._flush_ladders()

    def _flush_ladders(self) -> None:
        self._flush_due = False
        try:
            self.out.flush()
        except (OSError, ValueError):
            pass

    def _reopen(self) -> None:
        if self.writer is not None:
            self.writer.reopen()
            log.info("capture file %s reopened (SIGHUP)", self.writer.path)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.refusals is not None:
                self.refusals.tick(time.monotonic())

    # ---------------------------------------------------------------- stop

    async def stop_serving(self) -> None:
        """At shutdown: close the endpoints and the control socket (so that their
        long-lived connections do not hold up the drain)."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        if self.refusals is not None:
            self.refusals.tick(float("inf"))
        for ep in self.endpoints:
            if ep.http is not None:
                await ep.http.close()
            if ep.server is not None:
                ep.server.close()
                ep.server = None
        if self.control is not None:
            await self.control.close()
            self.control = None
        if self._sighup:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup = False
        self._flush_ladders()

    def close_now(self) -> None:
        """Release what :meth:`open` took (files, sockets); idempotent."""
        if self.writer is not None:
            self.writer.close()
        if self.control_socket is not None:
            self.control_socket.close()
            self.control_socket = None
            if self.control_path is not None:
                with contextlib.suppress(OSError):
                    self.control_path.unlink()
        for ep in self.endpoints:
            if ep.kernel_socket is not None:
                ep.kernel_socket.close()
                ep.kernel_socket = None

    def summary(self) -> str | None:
        """A line for the shutdown log, or None."""
        parts = []
        if self.writer is not None:
            parts.append(f"captured {self.writer.packets} packet(s) to {self.writer.path}"
                         f" ({self.writer.rotations} rotation(s))")
        if self.refusals is not None and self.refusals.logged:
            parts.append(f"{self.refusals.logged} refusal/reset line(s) logged")
        return "; ".join(parts) or None


def stack_addresses(addresses: Any) -> set[str]:
    return {str(ipaddress.ip_address(a)) for a in addresses}


__all__ = ["PRELOAD", "Resources", "add_arguments", "check", "stack_addresses",
           "wants_packets"]
