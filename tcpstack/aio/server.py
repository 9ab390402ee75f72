"""A listening server with the shape of :class:`asyncio.Server`.

:class:`Server` is what ``create_server`` returns: ``start_serving``,
``serve_forever``, ``is_serving``, ``close``, ``wait_closed`` (after ``close``,
until every connection it accepted has ended, as asyncio since 3.12),
``close_clients``, ``abort_clients``, ``sockets`` (one
:class:`~tcpstack.aio.sockopts.ListenerSocket` per address) and ``async with``.

The server keeps the transports it accepted; the network decides which server a
new connection belongs to (by port and local address) and when a port is free.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl as ssl_module
from collections.abc import Callable, Sequence
from typing import Protocol

from tcpstack.aio import tls
from tcpstack.aio.sockopts import ListenerSocket
from tcpstack.aio.transports import TcpTransport, TransportHost
from tcpstack.tcp.tcb import Tcb

log = logging.getLogger("tcpstack.server")

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class ServerHost(TransportHost, Protocol):
    """What a server needs from its network: starting and stopping to listen."""

    def start_listening(self, server: Server) -> None: ...

    def stop_listening(self, server: Server) -> None: ...

    def release(self, server: Server) -> None:
        """The server is closed: its port (and addresses) are free again."""


class Server(asyncio.AbstractServer):
    """Listens on ``port`` of some addresses of a network (``addresses`` None: all).

    ``names`` are the addresses :attr:`sockets` report, one socket each (``"::"``
    and ``"0.0.0.0"`` for the wildcards); by default the addresses themselves, or
    ``"0.0.0.0"`` for all.
    """

    def __init__(
        self,
        net: ServerHost,
        protocol_factory: ProtocolFactory,
        addresses: frozenset[int] | None,
        port: int,
        *,
        backlog: int = 100,
        syn_backlog: int | None = None,
        fast_open: int = 0,
        ssl: ssl_module.SSLContext | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        self._net = net
        self._loop = net.loop
        self._factory = protocol_factory
        self.addresses = addresses
        self.port = port
        self.backlog = backlog
        self.syn_backlog = syn_backlog
        #: Connections opened by TCP Fast Open still in SYN-RECEIVED, at most (0: off).
        self.fast_open = fast_open
        self._ssl = ssl
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        if names is None:
            names = ["0.0.0.0"] if addresses is None else \
                sorted(str(ipaddress.ip_address(a)) for a in addresses)
        self._sockets = tuple(ListenerSocket(name, port) for name in names)
        self._serving = False
        self._closed = False
        self._transports: set[TcpTransport] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._serving_forever: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} sockets={self.sockets!r}>"

    # ------------------------------------------------------------ asyncio.Server API

    @property
    def sockets(self) -> tuple[ListenerSocket, ...]:
        return () if self._closed else self._sockets

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        """Start accepting connections (``create_server(start_serving=False)`` waits
        for this: until then SYNs are answered with RST, as a socket not listening)."""
        self.listen()
        await asyncio.sleep(0)

    def listen(self) -> None:
        """:meth:`start_serving` without yielding to the event loop: several servers
        started one after another this way all listen before the stack reads another
        packet (none of the SYNs already queued meets a port not yet listening)."""
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        if not self._serving:
            self._net.start_listening(self)
            self._serving = True

    async def serve_forever(self) -> None:
        """Serve until cancelled (then close and wait for the connections) or closed."""
        if self._serving_forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        await self.start_serving()
        self._serving_forever = self._loop.create_future()
        try:
            await self._serving_forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever = None

    def close(self) -> None:
        """Stop listening (new SYNs get RST); accepted connections carry on."""
        if self._closed:
            return
        self._closed = True
        self._net.release(self)
        self._serving = False
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()
        self._wake_if_done()

    def close_clients(self) -> None:
        """Close every connection this server accepted (FIN after what is queued)."""
        for transport in list(self._transports):
            transport.close()

    def abort_clients(self) -> None:
        """Reset every connection this server accepted."""
        for transport in list(self._transports):
            transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the server is closed and all its connections have ended."""
        if self._closed and not self._transports:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()

    # ------------------------------------------------------------ for the network

    @property
    def transports(self) -> frozenset[TcpTransport]:
        """The connections this server accepted that are still open."""
        return frozenset(self._transports)

    def accept(self, tcb: Tcb) -> TcpTransport:
        """Give an established passive connection its transport and protocol."""
        transport = TcpTransport(self._net, tcb, owner=self)
        self._transports.add(transport)
        try:
            protocol = self._factory()
        except Exception:
            log.exception("protocol factory of %r failed", self)
            transport.abort()
            return transport
        if self._ssl is not None:
            ssl_protocol, _ = tls.wrap(protocol, self._ssl, server_side=True,
                                       handshake_timeout=self._ssl_handshake_timeout,
                                       shutdown_timeout=self._ssl_shutdown_timeout)
            transport.attach(ssl_protocol)
        else:
            transport.attach(protocol)
        return transport

    def _detach(self, transport: TcpTransport) -> None:
        self._transports.discard(transport)
        self._wake_if_done()

    def _wake_if_done(self) -> None:
        if not self._closed or self._transports:
            return
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


__all__ = ["ProtocolFactory", "Server", "ServerHost"]
