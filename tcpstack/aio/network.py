"""A stack bound to a packet device on an event loop, with asyncio's networking calls.

:class:`Network` runs a sans-I/O :class:`~tcpstack.stack.Stack` over a device
(a TUN, or an in-memory one in tests) and offers what an asyncio event loop
offers for TCP, over the userspace stack:

* ``create_server(protocol_factory, host, port, ...)`` and
  ``create_connection(protocol_factory, host, port, ...)``, with TLS (``ssl=``);
* the stream helpers ``start_server`` and ``open_connection`` built on them.

Which server a new connection belongs to, and whether a port is free, is decided
here: a server binds a port on one, several or all of the stack's addresses;
overlapping bindings fail with ``OSError(EADDRINUSE)``. A port whose old
connections linger in TIME-WAIT can be listened on again at once (as with
``SO_REUSEADDR``, asyncio's default); with ``reuse_address=False`` any connection
still using the port makes the bind fail, as Linux does without the option.

Active opens go only where the device leads: with ``routes`` given (the
networks the TUN reaches), other destinations fail with ``OSError(ENETUNREACH)``,
as would the stack's own, loopback, multicast and broadcast addresses.

For a ready-made TUN, see :class:`tcpstack.aio.entry.TunStack`.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import random
import socket
import ssl as ssl_module
from collections.abc import Iterable, Sequence
from typing import Any

from tcpstack.aio import streams, tls
from tcpstack.aio.devices import FatalHandler, PacketDevice
from tcpstack.aio.runtime import StackRuntime
from tcpstack.aio.server import ProtocolFactory, Server
from tcpstack.aio.transports import TcpTransport
from tcpstack.stack import EPHEMERAL_PORTS, Stack, StackConfig
from tcpstack.tcp import events as ev
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire import ipv6 as ipv6_wire

log = logging.getLogger("tcpstack.network")

Route = ipaddress.IPv4Network | ipaddress.IPv6Network | str


def _overlap(a: frozenset[int] | None, b: frozenset[int] | None) -> bool:
    return a is None or b is None or bool(a & b)


class Network:
    """Runs a :class:`~tcpstack.stack.Stack` over ``device`` on the running loop.

    Create it inside a coroutine (it binds to the running loop) with a device that
    is already open and configured. ``routes`` are the networks reachable through
    the device (None: anywhere). ``on_fatal`` is called once if the device fails
    for good (see :class:`~tcpstack.aio.runtime.StackRuntime`).
    """

    def __init__(self, device: PacketDevice, config: StackConfig | None = None, *,
                 stack: Stack | None = None, on_fatal: FatalHandler | None = None,
                 routes: Iterable[Route] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.stack = stack or Stack(config)
        self.device = device
        self.routes = None if routes is None else \
            tuple(ipaddress.ip_network(r) for r in routes)
        self.runtime = StackRuntime(self.stack, device, self._on_events, self.loop,
                                    on_fatal=on_fatal)
        self._bindings: dict[int, list[Server]] = {}
        self._transports: set[TcpTransport] = set()
        self._rng = random.Random()
        self._closed = False
        self.runtime.start()

    # ------------------------------------------------------------ servers

    async def create_server(
        self,
        protocol_factory: ProtocolFactory,
        host: str | Sequence[str] | None = None,
        port: int | None = None,
        *,
        backlog: int = 100,
        ssl: ssl_module.SSLContext | None = None,
        reuse_address: bool | None = None,
        start_serving: bool = True,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        syn_backlog: int | None = None,
        fast_open: bool | int = False,
    ) -> Server:
        """Listen on ``port`` (0 or None: a free one) of ``host``; like
        ``loop.create_server``. ``host`` None, ``""`` or ``"::"``: every address of
        the stack, IPv4 and IPv6 (``"::"`` as a dual-stack socket); ``"0.0.0.0"``:
        every IPv4 address; else one address (either family) or a list of them --
        a list of the IPv6 addresses is what ``IPV6_V6ONLY`` on ``"::"`` gives.

        ``fast_open`` takes TCP Fast Open (RFC 7413): clients holding a cookie send
        their first data in the SYN, and the connection reaches ``protocol_factory``
        with it before the handshake completes. True: at most ``backlog`` such
        connections in SYN-RECEIVED at once; a number: at most that many (as
        Linux's ``TCP_FASTOPEN`` socket option); beyond it, the ordinary handshake."""
        self._check_open()
        if isinstance(fast_open, bool):
            tfo_queue = max(1, backlog) if fast_open else 0
        elif isinstance(fast_open, int) and fast_open >= 0:
            tfo_queue = fast_open
        else:
            raise ValueError(f"fast_open must be a bool or a queue length >= 0, "
                             f"not {fast_open!r}")
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise TypeError(f"ssl argument must be an SSLContext or None, got {ssl!r}")
        if ssl is None and (ssl_handshake_timeout is not None
                            or ssl_shutdown_timeout is not None):
            raise ValueError("ssl timeouts are only meaningful with ssl")
        addresses = self._local_addresses(host)
        port = self._bind_port(addresses, port, reuse_address)
        server = Server(self, protocol_factory, addresses, port, backlog=backlog,
                        syn_backlog=syn_backlog, fast_open=tfo_queue, ssl=ssl,
                        names=self._socket_names(host),
                        ssl_handshake_timeout=ssl_handshake_timeout,
                        ssl_shutdown_timeout=ssl_shutdown_timeout)
        self._bindings.setdefault(port, []).append(server)
        if start_serving:
            await server.start_serving()
        return server

    def _local_addresses(self, host: str | Sequence[str] | None) -> frozenset[int] | None:
        hosts = [host] if host is None or isinstance(host, str) else list(host)
        if any(h in (None, "", "::") for h in hosts):
            return None
        out: set[int] = set()
        for h in hosts:
            if h is None:
                continue
            if h == "0.0.0.0":
                out.update(a for a in self.stack.addresses if a <= 0xFFFFFFFF)
                continue
            try:
                addr = int(ipaddress.ip_address(h))
            except ValueError:
                raise OSError(errno.EADDRNOTAVAIL,
                              f"cannot bind {h!r}: not an IP address") from None
            if addr not in self.stack.addresses:
                raise OSError(errno.EADDRNOTAVAIL, f"{h} is not an address of this stack")
            out.add(addr)
        return frozenset(out)

    def _socket_names(self, host: str | Sequence[str] | None) -> list[str]:
        """The addresses a server's sockets report, as asyncio's would be bound:
        host None or ``""`` one wildcard per family the stack has (``"0.0.0.0"``,
        ``"::"``), ``"::"`` the one dual-stack ``AF_INET6`` socket, ``"0.0.0.0"``
        one ``AF_INET`` socket, an address itself; a list, each in its order."""
        hosts = [host] if host is None or isinstance(host, str) else list(host)
        families = {6 if ipv6_wire.is_ipv6(a) else 4 for a in self.stack.addresses}
        names: list[str] = []
        for h in hosts:
            if h in (None, ""):
                found = [w for w, v in (("0.0.0.0", 4), ("::", 6)) if v in families]
            else:
                found = [str(ipaddress.ip_address(h))]
            names.extend(n for n in found if n not in names)
        return names

    def _bind_port(self, addresses: frozenset[int] | None, port: int | None,
                   reuse_address: bool | None) -> int:
        if not port:
            return self._free_port()
        if not 1 <= port <= 65535:
            raise OverflowError(f"port must be 0-65535, not {port}")
        for other in self._bindings.get(port, ()):
            if _overlap(other.addresses, addresses):
                raise OSError(errno.EADDRINUSE, f"port {port} is already in use")
        if reuse_address is False:
            for tcb in self.stack.connections():
                if tcb.local_port == port and (addresses is None or tcb.local_ip in addresses):
                    raise OSError(errno.EADDRINUSE, f"port {port} is still used by "
                                  f"{tcb.state} connections (reuse_address=False)")
        return port

    def _free_port(self) -> int:
        used = {tcb.local_port for tcb in self.stack.connections()}
        used.update(self._bindings, self.stack.listeners)
        n = len(EPHEMERAL_PORTS)
        start = self._rng.randrange(n)
        for i in range(n):
            port = EPHEMERAL_PORTS[(start + i) % n]
            if port not in used:
                return port
        raise OSError(errno.EADDRINUSE, "no free port")

    def start_listening(self, server: Server) -> None:
        """Have the engine take connections for ``server`` (with the port's others)."""
        port = server.port
        serving = [s for s in self._bindings.get(port, ()) if s.is_serving() or s is server]
        addresses = self._union(serving)
        if port in self.stack.listeners:
            self.stack.listen_on(port, addresses)
        else:
            self.stack.listen(port, server.backlog, server.syn_backlog, addresses,
                              fastopen=server.fast_open)

    def stop_listening(self, server: Server) -> None:
        port = server.port
        serving = [s for s in self._bindings.get(port, ()) if s.is_serving() and s is not server]
        if not serving:
            self.stack.unlisten(port)
        else:
            self.stack.listen_on(port, self._union(serving))

    def release(self, server: Server) -> None:
        """``server`` closed: stop listening for it and free its binding."""
        if server.is_serving():
            self.stop_listening(server)
        bound = self._bindings.get(server.port, [])
        if server in bound:
            bound.remove(server)
        if not bound:
            self._bindings.pop(server.port, None)

    @staticmethod
    def _union(servers: list[Server]) -> frozenset[int] | None:
        out: set[int] = set()
        for s in servers:
            if s.addresses is None:
                return None
            out |= s.addresses
        return frozenset(out)

    def _server_for(self, port: int, local_ip: int) -> Server | None:
        for server in self._bindings.get(port, ()):
            if server.is_serving() and (server.addresses is None
                                        or local_ip in server.addresses):
                return server
        return None

    @property
    def servers(self) -> tuple[Server, ...]:
        """The servers bound now (serving or not)."""
        return tuple(s for bound in self._bindings.values() for s in bound)

    # ------------------------------------------------------------ connections

    async def create_connection(
        self,
        protocol_factory: ProtocolFactory,
        host: str | None = None,
        port: int | None = None,
        *,
        ssl: bool | ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        local_addr: tuple[str, int] | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        fast_open: bool = False,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """Active open to ``host:port``; like ``loop.create_connection``.

        Errors as asyncio's: :class:`ConnectionRefusedError` (RST to our SYN),
        :class:`TimeoutError` (SYN retransmissions exhausted), ``OSError`` with
        ``ENETUNREACH`` (no route through the device), ``EADDRNOTAVAIL`` or
        ``EADDRINUSE`` (``local_addr``). A name is resolved with the host's
        resolver and its addresses tried in turn. Cancelling leaves nothing behind.

        ``fast_open`` (TCP Fast Open, RFC 7413; Linux's ``TCP_FASTOPEN_CONNECT``):
        returns at once, before the handshake, and the SYN carries what the protocol
        writes before the event loop next runs (a request, a TLS ClientHello) with
        the cookie the stack holds for the server -- or asks the server for one, the
        data following the handshake as usual. A failed handshake is then reported
        as asyncio reports a lost connection: to ``connection_lost`` (a stream
        reader's read raises it). Only the first address of a name is tried.
        """
        self._check_open()
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if ssl and server_hostname is None:
            if not host:
                raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
        if not ssl and (ssl_handshake_timeout is not None or ssl_shutdown_timeout is not None):
            raise ValueError("ssl timeouts are only meaningful with ssl")
        if host is None or port is None:
            raise ValueError("host and port must be given")
        errors: list[OSError] = []
        transport: TcpTransport | None = None
        for ip in await self._resolve(host, port):
            try:
                transport = await self._connect(ip, port, local_addr, fast_open)
                break
            except OSError as e:
                errors.append(e)
        if transport is None:
            if len(errors) == 1 or all(str(e) == str(errors[0]) for e in errors):
                raise errors[0]
            raise OSError(f"Multiple exceptions: {', '.join(str(e) for e in errors)}")
        try:
            protocol = protocol_factory()
        except BaseException:
            transport.abort()
            raise
        if not ssl:
            transport.attach(protocol)
            return transport, protocol
        ssl_protocol, waiter = tls.wrap(
            protocol, tls.client_context(ssl), server_side=False,
            server_hostname=server_hostname, handshake_timeout=ssl_handshake_timeout,
            shutdown_timeout=ssl_shutdown_timeout)
        transport.attach(ssl_protocol)
        try:
            await waiter
        except BaseException:
            transport.abort()
            raise
        return tls.app_transport(ssl_protocol), protocol

    async def _resolve(self, host: str, port: int) -> list[str]:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return [host]
        infos = await self.loop.getaddrinfo(host, port, family=socket.AF_UNSPEC,
                                            type=socket.SOCK_STREAM)
        out: list[str] = []
        for *_, sockaddr in infos:
            if sockaddr[0] not in out:
                out.append(str(sockaddr[0]))
        if not out:
            raise OSError("getaddrinfo() returned empty list")
        return out

    def check_route(self, ip: str) -> None:
        """Raise ``OSError(ENETUNREACH)`` unless ``ip`` is reachable through the device."""
        addr = ipaddress.ip_address(ip)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if addr.is_unspecified or addr.is_multicast or addr.is_loopback or addr.is_link_local \
                or int(addr) == 0xFFFFFFFF or int(addr) in self.stack.addresses:
            raise OSError(errno.ENETUNREACH, f"Network is unreachable: {ip} "
                          "cannot be reached through the stack's device")
        if self.routes is not None and not any(addr in net for net in self.routes):
            raise OSError(errno.ENETUNREACH, f"Network is unreachable: no route to {ip} "
                          f"(the device reaches {', '.join(map(str, self.routes))})")

    async def _connect(self, ip: str, port: int, local_addr: tuple[str, int] | None,
                       fast_open: bool = False) -> TcpTransport:
        self.check_route(ip)
        local_ip: str | None = None
        local_port: int | None = None
        if local_addr is not None:
            host, lport = local_addr
            if host not in ("", "0.0.0.0", "::"):
                try:
                    ipaddress.ip_address(host)
                except ValueError:
                    raise OSError(errno.EADDRNOTAVAIL,
                                  f"cannot bind {host!r}: not an IP address") from None
                local_ip = host
            if lport:
                if lport in self.stack.listeners or lport in self._bindings:
                    raise OSError(errno.EADDRINUSE, f"local port {lport} is in use by a server")
                local_port = lport
        tcb = self.stack.connect(ip, port, self.runtime.clock(), local_ip, local_port,
                                 fast_open=fast_open)
        transport = TcpTransport(self, tcb)
        self.runtime.kick()
        if fast_open:
            transport.connected_early()  # the handshake's outcome goes to the protocol
        else:
            await transport.wait_connected()
        return transport

    # ------------------------------------------------------------ streams

    async def start_server(self, client_connected_cb: streams.ClientConnectedCallback,
                           host: str | Sequence[str] | None = None, port: int | None = None,
                           **kwargs: Any) -> Server:
        """:func:`tcpstack.aio.streams.start_server` on this network."""
        return await streams.start_server(client_connected_cb, host, port, network=self,
                                          **kwargs)

    async def open_connection(self, host: str | None = None, port: int | None = None,
                              **kwargs: Any) -> tuple[asyncio.StreamReader,
                                                      streams.TcpStreamWriter]:
        """:func:`tcpstack.aio.streams.open_connection` on this network."""
        return await streams.open_connection(host, port, network=self, **kwargs)

    # ------------------------------------------------------------ state

    @property
    def connections(self) -> frozenset[TcpTransport]:
        """Transports whose connection is open (or opening)."""
        return frozenset(self._transports)

    @property
    def addresses(self) -> frozenset[int]:
        return self.stack.addresses

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("network is closed")

    async def aclose(self, grace: float = 2.0) -> None:
        """Stop listening, close every connection (FIN), wait up to ``grace`` seconds,
        then reset whatever is left and stop driving the device."""
        if self._closed:
            return
        self._closed = True
        for server in self.servers:
            server.close()
        transports = list(self._transports)
        for transport in transports:
            transport.close()
        self.runtime.flush_now()
        if transports:
            waits = [asyncio.ensure_future(t.wait_closed()) for t in transports]
            _done, pending = await asyncio.wait(waits, timeout=grace)
            for w in pending:
                w.cancel()
        # Anything still open (peer gone, or a handler that never finished) gets RST,
        # and orphaned TCBs (TIME-WAIT, closing) are dropped with it.
        self.stack.abort_all()
        self.runtime.flush_now()
        self.runtime.stop()

    # ------------------------------------------------------------ for transports

    def kick(self) -> None:
        self.runtime.kick()

    def track(self, transport: TcpTransport) -> None:
        self._transports.add(transport)

    def forget(self, transport: TcpTransport) -> None:
        self._transports.discard(transport)

    def _on_events(self, tcb: Tcb, events: list[ev.Event]) -> None:
        user = tcb.user
        if user is not None:
            user.on_events(events)
            return
        listener = tcb.listener
        if listener is None:
            return
        # A passive connection with no owner yet: hand it to its server once it is
        # established (and not if it died in SYN-RECEIVED).
        if any(type(e) is ev.Terminated for e in events):
            return
        if any(type(e) is ev.Established for e in events):
            server = self._server_for(listener.port, tcb.local_ip)
            if server is None:
                tcb.abort()
                return
            transport = server.accept(tcb)
            rest = [e for e in events if type(e) is not ev.Established]
            if rest and tcb.user is transport:
                transport.on_events(rest)


__all__ = ["Network"]
