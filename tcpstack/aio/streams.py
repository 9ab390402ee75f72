"""asyncio-style streams over tcpstack connections.

:class:`TcpStreamReader` and :class:`TcpStreamWriter` mirror the API of
``asyncio.StreamReader`` / ``asyncio.StreamWriter`` (read, readline, readexactly,
readuntil, write, drain with back-pressure, write_eof, close, wait_closed,
get_extra_info) so code written for asyncio's streams runs unchanged.

The reader consumes the connection's receive buffer directly -- there is no second
buffer -- so the TCP window the peer sees is exactly the space the application has
not yet read: a slow reader slows the sender down (RFC 9293 3.8.6).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from tcpstack.aio.sockopts import ConnectionSocket, sockaddr
from tcpstack.tcp import events as ev
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb

log = logging.getLogger("tcpstack.streams")

DEFAULT_LIMIT = 2**16  # same default as asyncio's streams

ClientConnectedCallback = Callable[
    ["TcpStreamReader", "TcpStreamWriter"], Awaitable[None] | None
]


class StreamHost(Protocol):
    """What connections and servers need from the network that owns them
    (:class:`tcpstack.aio.network.Network` is one; tests may provide others)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def addresses(self) -> frozenset[int]:
        """The stack's own addresses (IPv4 and IPv6), as integers."""
        ...

    def kick(self) -> None:
        """Flush what application calls caused, once, in this loop iteration."""

    def register(self, tcb: Tcb, limit: int, nodelay: bool) -> Connection: ...

    def forget(self, conn: Connection) -> None: ...

    def unlisten(self, server: Server) -> None: ...

    def start_server(self, callback: ClientConnectedCallback, port: int, *, backlog: int,
                     limit: int, nodelay: bool, v6only: bool = False) -> Server: ...

    def connect(self, host: str, port: int, limit: int, nodelay: bool) -> Connection: ...


def _error_for(reason: str | None, code: int = 0) -> OSError | None:
    """The exception a connection that ended for ``reason`` raises; ``code`` (an
    errno from an ICMP error, see :class:`~tcpstack.tcp.events.Terminated`) takes
    precedence, as a kernel socket's ``SO_ERROR`` would (``OSError`` picks the
    subclass, e.g. :class:`ConnectionRefusedError` for ``ECONNREFUSED``)."""
    if reason is None or reason == "aborted":
        return None
    if code:
        return OSError(code, os.strerror(code))
    if reason == "reset":
        return ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    if reason == "refused":
        return ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    if reason == "timeout":
        return TimeoutError(errno.ETIMEDOUT, "Connection timed out")
    return ConnectionError(reason)


class Connection:
    """Glue between one TCB and its reader/writer: turns engine events into wake-ups."""

    __slots__ = ("_closed", "_drain_waiter", "_established", "_read_waiter", "closing",
                 "eof", "error", "net", "reader", "tcb", "writer")

    def __init__(self, net: StreamHost, tcb: Tcb, limit: int = DEFAULT_LIMIT,
                 nodelay: bool = True) -> None:
        self.net = net
        self.tcb = tcb
        tcb.user = self
        if nodelay:
            # Like asyncio, which sets TCP_NODELAY on every stream socket; the engine
            # itself keeps Nagle on by default (RFC 9293 3.7.4).
            tcb.set_nodelay(True)
        loop = net.loop
        self.eof = False
        self.error: OSError | None = None
        self.closing = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._established: asyncio.Future[None] = loop.create_future()
        self._closed: asyncio.Future[None] = loop.create_future()
        self.reader = TcpStreamReader(self, limit)
        self.writer = TcpStreamWriter(self)
        if tcb.state not in (State.SYN_SENT, State.SYN_RECEIVED):
            self._established.set_result(None)

    # engine -> application
    def on_events(self, events: list[ev.Event]) -> None:
        for e in events:
            if isinstance(e, ev.DataReceived):
                self._wake_reader()
            elif isinstance(e, ev.EndOfStream):
                self.eof = True
                self._wake_reader()
            elif isinstance(e, ev.WriteSpace):
                self._wake_drain()
            elif isinstance(e, ev.Established):
                if not self._established.done():
                    self._established.set_result(None)
            elif isinstance(e, ev.FinAcked):
                if not self._closed.done():
                    self._closed.set_result(None)
            elif isinstance(e, ev.Terminated):
                self._terminated(_error_for(e.error, e.errno))
        if self.tcb.state is State.TIME_WAIT:
            # Both directions are finished; only the engine's 2*MSL wait remains. The
            # TCB no longer needs its application objects (and holding them for 2*MSL
            # costs memory and garbage-collector time); reading what is buffered still
            # works through self.tcb.
            self.net.forget(self)
            self.tcb.user = None

    def _terminated(self, error: OSError | None) -> None:
        self.net.forget(self)
        if error is not None and self.error is None:
            self.error = error
        self.eof = True
        self._wake_reader()
        self._wake_drain()
        if not self._established.done():
            self._established.set_exception(
                error or ConnectionAbortedError(errno.ECONNABORTED, "Connection aborted"))
        if not self._closed.done():
            self._closed.set_result(None)

    def _wake_reader(self) -> None:
        w = self._read_waiter
        if w is not None:
            self._read_waiter = None
            if not w.done():
                w.set_result(None)

    def _wake_drain(self) -> None:
        w = self._drain_waiter
        if w is not None:
            self._drain_waiter = None
            if not w.done():
                w.set_result(None)

    async def wait_readable(self) -> None:
        if self._read_waiter is not None:
            raise RuntimeError("another coroutine is already waiting for incoming data")
        self._read_waiter = self.net.loop.create_future()
        try:
            await self._read_waiter
        finally:
            self._read_waiter = None

    async def wait_established(self) -> None:
        await self._established

    # application -> engine
    def kick(self) -> None:
        self.net.kick()

    def abort(self) -> None:
        """Reset the connection at once (RST), like ``transport.abort()``; a no-op
        once the connection is gone."""
        self.closing = True
        if self.tcb.state is not State.CLOSED:
            self.tcb.abort()
            self.kick()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        tcb = self.tcb
        if name == "peername":
            return sockaddr(tcb.remote_ip, tcb.remote_port)
        if name == "sockname":
            return sockaddr(tcb.local_ip, tcb.local_port)
        if name == "tcb":
            return tcb
        if name == "socket":
            return ConnectionSocket(tcb)
        return default

    def is_closing(self) -> bool:
        return self.closing or self.tcb.state is State.CLOSED


class TcpStreamReader:
    """Reads from a connection's receive buffer; the API of ``asyncio.StreamReader``.

    Data normally stays in the connection's receive buffer until read, so the window
    the peer sees is the unread space. When a read needs more than that buffer holds
    (``readexactly`` of a large size, a long line), the reader moves the buffered
    data into its own buffer before waiting -- as asyncio resumes reading while a
    read waits -- so the window reopens and the read can complete.
    """

    def __init__(self, conn: Connection, limit: int = DEFAULT_LIMIT) -> None:
        if limit <= 0:
            raise ValueError("limit must be positive")
        self._conn = conn
        self._limit = limit
        self._head = bytearray()

    def _has_data(self) -> bool:
        return bool(self._head) or self._conn.tcb.recv_buffered > 0

    def _buffered(self) -> int:
        return len(self._head) + self._conn.tcb.recv_buffered

    def _check_error(self) -> None:
        if self._conn.error is not None and not self._has_data():
            raise self._conn.error

    def at_eof(self) -> bool:
        """True when the peer has closed and everything received has been read."""
        return self._conn.eof and not self._has_data()

    def exception(self) -> BaseException | None:
        return self._conn.error

    def _take(self, n: int) -> bytes:
        """Remove up to ``n`` bytes (all if negative): the reader's buffer first."""
        tcb = self._conn.tcb
        head = self._head
        if not head:
            data = tcb.recv(n)
        elif 0 <= n <= len(head):
            data = bytes(head[:n])
            del head[:n]
        else:
            data = bytes(head) + tcb.recv(-1 if n < 0 else n - len(head))
            head.clear()
        if data:
            self._conn.kick()  # reading may open the window: let the flush decide
        return data

    def _spill(self) -> None:
        """Move what the connection holds into the reader's buffer; the window reopens."""
        data = self._conn.tcb.recv(-1)
        if data:
            self._head += data
            self._conn.kick()

    def _find(self, sub: bytes, start: int) -> tuple[int, int]:
        """Where ``sub`` is in the buffered data (from ``start``), and how much is
        buffered. Data the reader has spilled is moved there first, so the search
        runs over one contiguous buffer."""
        if self._head:
            self._spill()
            return self._head.find(sub, start), len(self._head)
        tcb = self._conn.tcb
        return tcb.recv_find(sub, start), tcb.recv_buffered

    async def _wait(self) -> None:
        self._check_error()
        await self._conn.wait_readable()

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes; with ``n < 0``, everything until EOF (as asyncio does)."""
        if n == 0:
            return b""
        if n < 0:
            parts = []
            while True:
                if self._has_data():
                    parts.append(self._take(-1))
                elif self._conn.eof:
                    self._check_error()
                    return b"".join(parts)
                else:
                    await self._wait()
        while not self._has_data():
            if self._conn.eof:
                self._check_error()
                return b""
            await self._wait()
        return self._take(n)

    async def readexactly(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        while self._buffered() < n:
            if self._conn.eof:
                self._check_error()
                raise asyncio.IncompleteReadError(self._take(-1), n)
            self._spill()
            await self._wait()
        return self._take(n)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Data up to and including ``separator``; asyncio's errors at EOF and over the limit."""
        seplen = len(separator)
        if seplen == 0:
            raise ValueError("Separator should be at least one-byte string")
        start = 0
        while True:
            idx, buffered = self._find(separator, start)
            if idx >= 0:
                end = idx + seplen
                if end > self._limit:
                    raise asyncio.LimitOverrunError(
                        "Separator is found, but chunk is longer than limit", idx)
                return self._take(end)
            start = max(0, buffered + 1 - seplen)
            if buffered >= self._limit:
                raise asyncio.LimitOverrunError(
                    "Separator is not found, and chunk exceed the limit", buffered)
            if self._conn.eof:
                self._check_error()
                raise asyncio.IncompleteReadError(self._take(-1), None)
            self._spill()  # keeps the search offset: the data keeps its order
            await self._wait()

    async def readline(self) -> bytes:
        """A line ending in ``\\n``, or the rest of the data at EOF (asyncio semantics)."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            return e.partial
        except asyncio.LimitOverrunError as e:
            if self._find(b"\n", e.consumed)[0] == e.consumed:
                self._take(e.consumed + 1)
            else:
                self._take(-1)
            raise ValueError(e.args[0]) from None

    def __aiter__(self) -> TcpStreamReader:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if line == b"":
            raise StopAsyncIteration
        return line


class TcpStreamWriter:
    """Writes into a connection's send buffer; the API of ``asyncio.StreamWriter``."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._eof_written = False

    @property
    def transport(self) -> Connection:
        return self._conn

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; never blocks. Use :meth:`drain` for back-pressure."""
        if self._eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        conn = self._conn
        if conn.closing or not conn.tcb.can_send:
            # Like asyncio's transports: writes after close or on a dead connection
            # are dropped; drain() reports the error.
            return
        conn.tcb.send(data)
        conn.kick()

    def writelines(self, data: list[bytes] | tuple[bytes, ...]) -> None:
        for chunk in data:
            self.write(chunk)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: send FIN after the queued data; reading continues."""
        if self._eof_written:
            return
        self._eof_written = True
        tcb = self._conn.tcb
        if tcb.state is not State.CLOSED:
            tcb.shutdown_write()
            self._conn.kick()

    async def drain(self) -> None:
        """Wait until the unacknowledged send buffer is below the high-water mark."""
        conn = self._conn
        if conn.error is not None:
            raise conn.error
        while conn.tcb.send_buffered > conn.tcb.send_space and conn.tcb.state \
                is not State.CLOSED:
            waiter = conn.net.loop.create_future()
            conn._drain_waiter = waiter
            await waiter
            if conn.error is not None:
                raise conn.error
        if conn.tcb.state is State.CLOSED and conn.error is None and not conn.closing:
            raise ConnectionResetError(errno.ECONNRESET, "Connection lost")
        # asyncio's transports write at once; ours send from the loop (the flush that
        # write() scheduled). Yielding once lets it run between a writer's chunks.
        await asyncio.sleep(0)

    def close(self) -> None:
        conn = self._conn
        if conn.closing:
            return
        conn.closing = True
        if conn.tcb.state is not State.CLOSED:
            conn.tcb.close()
            conn.kick()

    def is_closing(self) -> bool:
        return self._conn.is_closing()

    async def wait_closed(self) -> None:
        """Wait until our FIN is acknowledged or the connection has ended."""
        await asyncio.shield(self._conn._closed)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._conn.get_extra_info(name, default)

    def __repr__(self) -> str:
        return f"<TcpStreamWriter {self._conn.tcb!r}>"


class Server:
    """A listening port; the shape of ``asyncio.Server`` (close, wait_closed, serve_forever)."""

    def __init__(self, net: StreamHost, port: int, callback: ClientConnectedCallback,
                 limit: int, nodelay: bool = True) -> None:
        self._net = net
        self.port = port
        self._callback = callback
        self._limit = limit
        self._nodelay = nodelay
        self._serving = True
        self._closed = net.loop.create_future()
        self._tasks: set[asyncio.Task[None]] = set()

    def _accept(self, tcb: Tcb) -> Connection:
        """Give an established passive connection to the application's callback."""
        conn = self._net.register(tcb, self._limit, self._nodelay)
        try:
            result = self._callback(conn.reader, conn.writer)
        except Exception:
            log.exception("client_connected_cb raised")
            conn.abort()
            return conn
        if asyncio.iscoroutine(result):
            task = self._net.loop.create_task(result)
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        return conn

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("connection handler failed", exc_info=task.exception())

    @property
    def sockets(self) -> tuple[()]:
        return ()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._net.loop

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        """Stop listening; existing connections carry on."""
        if self._serving:
            self._serving = False
            self._net.unlisten(self)
            if not self._closed.done():
                self._closed.set_result(None)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def start_serving(self) -> None:
        return None

    async def serve_forever(self) -> None:
        try:
            await asyncio.shield(self._closed)
        finally:
            self.close()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()



async def start_server(
    client_connected_cb: ClientConnectedCallback,
    host: str | None = None,
    port: int | None = None,
    *,
    network: StreamHost,
    backlog: int = 128,
    limit: int = DEFAULT_LIMIT,
    nodelay: bool = True,
    v6only: bool = False,
) -> Server:
    """Listen on ``port`` of ``network``; like :func:`asyncio.start_server`.

    ``host`` is accepted for signature compatibility; a listener serves every
    address of the stack, IPv4 and IPv6, unless ``v6only`` (like a socket's
    ``IPV6_V6ONLY``: IPv6 clients only). ``nodelay`` (default on, as asyncio
    does) disables Nagle's algorithm on accepted connections.
    """
    if port is None:
        raise ValueError("port is required")
    if host not in (None, "", "0.0.0.0", "::") and \
            int(ipaddress.ip_address(host)) not in network.addresses:
        raise OSError(errno.EADDRNOTAVAIL, f"{host} is not an address of this stack")
    return network.start_server(client_connected_cb, port, backlog=backlog, limit=limit,
                                nodelay=nodelay, v6only=v6only)


async def open_connection(
    host: str, port: int, *, network: StreamHost, limit: int = DEFAULT_LIMIT,
    nodelay: bool = True,
) -> tuple[TcpStreamReader, TcpStreamWriter]:
    """Active open to ``host:port``; like :func:`asyncio.open_connection`."""
    conn = network.connect(host, port, limit, nodelay)
    await conn.wait_established()
    return conn.reader, conn.writer
