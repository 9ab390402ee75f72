"""asyncio streams over tcpstack, built on its transports as asyncio builds its own.

:func:`start_server` and :func:`open_connection` take the same arguments as
:func:`asyncio.start_server` and :func:`asyncio.open_connection` (plus the network
to use) and hand out a real :class:`asyncio.StreamReader` and a
:class:`TcpStreamWriter` (an :class:`asyncio.StreamWriter`), so code and type
annotations written for asyncio's streams work unchanged.

:class:`StreamProtocol` feeds the reader from the transport (the reader pauses
the transport when it holds more than twice its limit, so the TCP window closes
behind a reader that does not read) and implements the writer's flow control:
``drain()`` waits only while the transport has paused writing, and otherwise
returns without yielding. The writer adds what asyncio's cannot do over a foreign
transport: :meth:`TcpStreamWriter.start_tls` (uvloop's ``loop.start_tls`` accepts
only its own transports), and a :class:`BrokenPipeError` from ``drain()`` after
writing to a connection the peer has reset, as a kernel socket's send reports it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl as ssl_module
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from tcpstack.aio import tls
from tcpstack.aio.server import ProtocolFactory, Server

if TYPE_CHECKING:
    from asyncio import transports

log = logging.getLogger("tcpstack.streams")

DEFAULT_LIMIT = 2**16  # asyncio's default

TcpStreamReader = asyncio.StreamReader
"""The reader is asyncio's own (the name is kept for code written for older versions)."""

ClientConnectedCallback = Callable[
    [asyncio.StreamReader, "TcpStreamWriter"], Awaitable[None] | None
]


class StreamNetwork(Protocol):
    """What the stream functions need: asyncio's two transport-level calls."""

    async def create_server(
        self, protocol_factory: ProtocolFactory, host: Any = ..., port: int | None = ...,
        *, backlog: int = ..., ssl: ssl_module.SSLContext | None = ...,
        reuse_address: bool | None = ..., start_serving: bool = ...,
        ssl_handshake_timeout: float | None = ..., ssl_shutdown_timeout: float | None = ...,
        syn_backlog: int | None = ..., fast_open: bool | int = ...,
    ) -> Server: ...

    async def create_connection(
        self, protocol_factory: ProtocolFactory, host: str | None = ...,
        port: int | None = ..., *, ssl: bool | ssl_module.SSLContext | None = ...,
        server_hostname: str | None = ..., local_addr: tuple[str, int] | None = ...,
        ssl_handshake_timeout: float | None = ..., ssl_shutdown_timeout: float | None = ...,
        fast_open: bool = ...,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]: ...


class StreamProtocol(asyncio.Protocol):
    """Connects a transport to an :class:`asyncio.StreamReader` and a :class:`TcpStreamWriter`.

    With ``client_connected_cb`` (a server's), the callback gets the pair once the
    connection is made; a coroutine runs as a task, and if it fails the error goes
    to the loop's exception handler and the connection is closed (as asyncio).
    """

    def __init__(self, reader: asyncio.StreamReader,
                 client_connected_cb: ClientConnectedCallback | None = None, *,
                 nodelay: bool = True) -> None:
        self._loop = asyncio.get_running_loop()
        self._reader = reader
        self._callback = client_connected_cb
        self._nodelay = nodelay
        self._transport: asyncio.Transport | None = None
        self._writer: TcpStreamWriter | None = None
        self._over_ssl = False
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []  # few, if any
        self._lost = False
        # Made when first awaited (wait_closed) or when the connection ends: an idle
        # connection does not carry a future it may never need.
        self._closed: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        #: The connection ended with a reset from the peer.
        self.reset = False
        #: Written to after the peer reset (drain() raises BrokenPipeError).
        self.wrote_after_reset = False

    @property
    def server_side(self) -> bool:
        return self._callback is not None

    @property
    def writer(self) -> TcpStreamWriter:
        if self._writer is None:
            raise RuntimeError("the connection is not made yet")
        return self._writer

    # ------------------------------------------------------------ transport callbacks

    def connection_made(self, transport: transports.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._reader.set_transport(transport)
        self._over_ssl = transport.get_extra_info("sslcontext") is not None
        if not self._nodelay:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        self._writer = TcpStreamWriter(transport, self, self._reader, self._loop)
        if self._callback is None:
            return
        result = self._callback(self._reader, self._writer)
        if asyncio.iscoroutine(result):
            self._task = self._loop.create_task(result)
            self._task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._task = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        self._loop.call_exception_handler({
            "message": "Unhandled exception in client_connected_cb",
            "exception": exc,
            "transport": self._transport,
        })
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        closed = self._closed_future()
        if exc is None:
            self._reader.feed_eof()
            if not closed.done():
                closed.set_result(None)
        else:
            self.reset = isinstance(exc, ConnectionResetError)
            self._reader.set_exception(exc)
            if not closed.done():
                closed.set_exception(exc)
        while self._drain_waiters:
            waiter = self._drain_waiters.pop(0)
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)

    def data_received(self, data: bytes) -> None:
        self._reader.feed_data(data)

    def eof_received(self) -> bool:
        self._reader.feed_eof()
        # TLS cannot half-close: close the transport (as asyncio's streams do).
        return not self._over_ssl

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        while self._drain_waiters:
            waiter = self._drain_waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------ for the writer

    async def drain_helper(self) -> None:
        """Return at once unless writing is paused; then wait for resume_writing."""
        if self._lost:
            raise ConnectionResetError("Connection lost")
        if not self._paused:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._drain_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._drain_waiters:
                self._drain_waiters.remove(waiter)

    def _closed_future(self) -> asyncio.Future[None]:
        closed = self._closed
        if closed is None:
            closed = self._closed = self._loop.create_future()
            closed.add_done_callback(_retrieve)
        return closed

    async def wait_closed(self) -> None:
        # Shielded: cancelling one waiter must not cancel the connection's future.
        await asyncio.shield(self._closed_future())

    def upgraded(self, transport: asyncio.Transport) -> None:
        """The connection now runs over TLS through ``transport``."""
        self._transport = transport
        self._over_ssl = True


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a future's exception as seen (wait_closed may never be awaited)."""
    if not future.cancelled():
        future.exception()


class TcpStreamWriter(asyncio.StreamWriter):
    """An :class:`asyncio.StreamWriter` over a tcpstack transport (see the module doc)."""

    def __init__(self, transport: asyncio.Transport, protocol: StreamProtocol,
                 reader: asyncio.StreamReader | None,
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(transport, protocol, reader, loop)
        self._transport = transport
        self._stream = protocol
        self._reader = reader
        self._loop = loop

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._stream.reset:
            self._stream.wrote_after_reset = True
        self._transport.write(data)

    async def drain(self) -> None:
        """Wait only if the transport has paused writing; raise what ended the connection.

        After a write to a connection the peer has reset, :class:`BrokenPipeError`;
        on a closed or closing writer, :class:`ConnectionResetError` (as asyncio).
        """
        if self._stream.wrote_after_reset:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        if self._reader is not None:
            exc = self._reader.exception()
            if exc is not None:
                raise exc
        if self._transport.is_closing():
            # Let connection_lost run, so a writer loop sees the error. A closing
            # transport takes no more data: like asyncio's (whose connection_lost
            # follows close() at once), report the connection as lost.
            await asyncio.sleep(0)
            await self._stream.drain_helper()
            raise ConnectionResetError("Connection lost")
        await self._stream.drain_helper()

    async def wait_closed(self) -> None:
        await self._stream.wait_closed()

    async def start_tls(self, sslcontext: ssl_module.SSLContext, *,
                        server_hostname: str | None = None,
                        ssl_handshake_timeout: float | None = None,
                        ssl_shutdown_timeout: float | None = None) -> None:
        """Upgrade the connection to TLS (the server side if this writer is a server's)."""
        await self.drain()
        self._transport = await tls.start_tls(
            self._transport, self._stream, sslcontext, server_side=self._stream.server_side,
            server_hostname=server_hostname, ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        self._stream.upgraded(self._transport)


async def start_server(
    client_connected_cb: ClientConnectedCallback,
    host: Any = None,
    port: int | None = None,
    *,
    network: StreamNetwork,
    limit: int = DEFAULT_LIMIT,
    backlog: int = 100,
    ssl: ssl_module.SSLContext | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
    start_serving: bool = True,
    reuse_address: bool | None = None,
    nodelay: bool = True,
    syn_backlog: int | None = None,
    fast_open: bool | int = False,
) -> Server:
    """Like :func:`asyncio.start_server`, on ``network``.

    ``host`` None (or ``""``, ``"::"``) listens on every address of the stack,
    IPv4 and IPv6; ``"0.0.0.0"`` on every IPv4 address; else on the given address
    (or list of addresses; the stack's IPv6 addresses alone are ``IPV6_V6ONLY``).
    ``nodelay=False`` keeps Nagle's algorithm on for the accepted connections
    (asyncio turns it off). ``fast_open``: take TCP Fast Open (see
    :meth:`tcpstack.aio.network.Network.create_server`).
    """
    loop = asyncio.get_running_loop()

    def factory() -> StreamProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return StreamProtocol(reader, client_connected_cb, nodelay=nodelay)

    return await network.create_server(
        factory, host, port, backlog=backlog, ssl=ssl,
        ssl_handshake_timeout=ssl_handshake_timeout, ssl_shutdown_timeout=ssl_shutdown_timeout,
        start_serving=start_serving, reuse_address=reuse_address, syn_backlog=syn_backlog,
        fast_open=fast_open)


async def open_connection(
    host: str | None = None,
    port: int | None = None,
    *,
    network: StreamNetwork,
    limit: int = DEFAULT_LIMIT,
    ssl: bool | ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    local_addr: tuple[str, int] | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
    nodelay: bool = True,
    fast_open: bool = False,
) -> tuple[asyncio.StreamReader, TcpStreamWriter]:
    """Like :func:`asyncio.open_connection`, an active open on ``network``.

    ``fast_open`` (TCP Fast Open): returns before the handshake; what is written
    before the next ``await`` goes in the SYN (see
    :meth:`tcpstack.aio.network.Network.create_connection`); a failed handshake
    surfaces as the reader's error."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = StreamProtocol(reader, nodelay=nodelay)
    if fast_open:
        await network.create_connection(
            lambda: protocol, host, port, ssl=ssl, server_hostname=server_hostname,
            local_addr=local_addr, ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout, fast_open=True)
    else:
        await network.create_connection(
            lambda: protocol, host, port, ssl=ssl, server_hostname=server_hostname,
            local_addr=local_addr, ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
    return reader, protocol.writer


__all__ = [
    "DEFAULT_LIMIT",
    "ClientConnectedCallback",
    "StreamNetwork",
    "StreamProtocol",
    "TcpStreamReader",
    "TcpStreamWriter",
    "open_connection",
    "start_server",
]
