"""An in-memory, root-free packet device pair for the asyncio-layer tests.

:class:`PairDevice` wraps one end of an ``AF_UNIX``/``SOCK_SEQPACKET`` socketpair, which
keeps packet boundaries, so two :class:`~tcpstack.aio.network.Network` objects on the
same event loop can talk to each other as if over a point-to-point link.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from tcpstack.aio.network import Network
from tcpstack.aio.streams import TcpStreamWriter
from tcpstack.stack import StackConfig
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb

T = TypeVar("T")

A_IP = "10.0.0.1"
B_IP = "10.0.0.2"


class PairDevice:
    """One end of a SOCK_SEQPACKET socketpair, shaped as a ``PacketDevice``."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.sent = 0
        self.dropped = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_batch(self, max_packets: int = 256, bufsize: int = 65600) -> list[bytes]:
        out: list[bytes] = []
        while len(out) < max_packets:
            try:
                pkt = self.sock.recv(bufsize)
            except BlockingIOError:
                break
            if not pkt:
                break
            out.append(pkt)
        return out

    def write_batch(self, packets: Iterable[Any]) -> int:
        n = 0
        for pkt in packets:
            data = b"".join(pkt) if isinstance(pkt, tuple) else pkt
            try:
                self.sock.send(data)
            except BlockingIOError:
                self.dropped += 1
                continue  # a full link drops; TCP retransmits
            n += 1
        self.sent += n
        return n

    def close(self) -> None:
        self.sock.close()

    @staticmethod
    def pair() -> tuple[PairDevice, PairDevice]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return PairDevice(a), PairDevice(b)


def stack_config(ip: str, tcp: TcpConfig | None = None, *more: str) -> StackConfig:
    return StackConfig(addresses=tuple(ipaddress.IPv4Address(a) for a in (ip, *more)),
                       tcp=tcp or TcpConfig())


class NetPair:
    """Two Networks, A (10.0.0.1) and B (10.0.0.2), linked by a :class:`PairDevice` pair.

    ``routes_a`` are the networks A's device reaches (None: anywhere);
    ``more_b`` are addresses B has besides 10.0.0.2.
    """

    def __init__(self, tcp_a: TcpConfig | None = None, tcp_b: TcpConfig | None = None, *,
                 routes_a: Iterable[str] | None = None, more_b: Iterable[str] = ()) -> None:
        self.dev_a, self.dev_b = PairDevice.pair()
        self.a = Network(self.dev_a, stack_config(A_IP, tcp_a), routes=routes_a)
        self.b = Network(self.dev_b, stack_config(B_IP, tcp_b, *more_b))

    async def aclose(self) -> None:
        try:
            await self.a.aclose(grace=0.5)
            await self.b.aclose(grace=0.5)
        finally:
            self.dev_a.close()
            self.dev_b.close()


# ------------------------------------------------------------------ waiting

TIMEOUT = 5.0
"""Seconds any single wait in the asyncio-layer tests may take (generous: loaded CI)."""


async def within(aw: Awaitable[T], timeout: float = TIMEOUT) -> T:
    """``aw``, or :class:`TimeoutError` after ``timeout`` seconds."""
    return await asyncio.wait_for(aw, timeout)


async def until(predicate: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` on the running loop until it is true; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.005)


def live_tcbs(net: Network) -> list[Tcb]:
    """Connections of ``net``'s stack that are not over (TIME-WAIT counts as over)."""
    return [t for t in net.stack.tcbs.values()
            if t.state not in (State.CLOSED, State.TIME_WAIT)]


# ------------------------------------------------------------------ a recording protocol


class Recorder(asyncio.Protocol):
    """Records every callback in ``calls`` (names; the bytes received in ``data``).

    ``keep_open`` is what ``eof_received`` returns; ``pause_on_connect`` pauses
    reading in ``connection_made``.
    """

    def __init__(self, *, keep_open: bool | None = True, pause_on_connect: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.calls: list[str] = []
        self.data = bytearray()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[Exception | None] = loop.create_future()
        self.made: asyncio.Future[None] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()
        self.keep_open = keep_open
        self.pause_on_connect = pause_on_connect
        self.write_buffer_at_pause: list[int] = []
        self.write_buffer_at_resume: list[int] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.calls.append("connection_made")
        self.transport = transport
        if self.pause_on_connect:
            transport.pause_reading()
        self.made.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.calls.append("data_received")
        self.data += data

    def eof_received(self) -> bool | None:
        self.calls.append("eof_received")
        self.eof.set_result(None)
        return self.keep_open

    def pause_writing(self) -> None:
        self.calls.append("pause_writing")
        assert self.transport is not None
        self.write_buffer_at_pause.append(self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        self.calls.append("resume_writing")
        assert self.transport is not None
        self.write_buffer_at_resume.append(self.transport.get_write_buffer_size())

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append("connection_lost")
        self.lost.set_result(exc)

    def reads(self) -> list[str]:
        """The callbacks in order, each run of data deliveries collapsed to "data"."""
        out: list[str] = []
        for c in self.calls:
            name = "data" if c in ("data_received", "get_buffer", "buffer_updated") else c
            if name in ("pause_writing", "resume_writing"):
                continue
            if not out or out[-1] != name:
                out.append(name)
        return out


class BufferedRecorder(Recorder, asyncio.BufferedProtocol):
    """A :class:`Recorder` that receives through ``get_buffer``/``buffer_updated``,
    into a buffer of ``chunk`` bytes."""

    def __init__(self, *, chunk: int = 65536, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._buf = bytearray(chunk)
        self.sizehints: list[int] = []

    def get_buffer(self, sizehint: int) -> memoryview:
        self.calls.append("get_buffer")
        self.sizehints.append(sizehint)
        return memoryview(self._buf)

    def buffer_updated(self, nbytes: int) -> None:
        self.calls.append("buffer_updated")
        self.data += self._buf[:nbytes]

    def data_received(self, data: bytes) -> None:
        raise AssertionError("a BufferedProtocol must not get data_received")


async def echo(reader: asyncio.StreamReader, writer: TcpStreamWriter) -> None:
    """A stream handler that sends back what it reads until EOF (or a reset)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        return
    writer.close()
