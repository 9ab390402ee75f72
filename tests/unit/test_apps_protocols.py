"""Echo (RFC 862) and discard (RFC 863) as asyncio protocols -- what the daemon runs:
the services' behaviour and limits over real loopback sockets and over tcpstack's
own transports, and the limits' edge cases against a fake transport."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import re
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest
from aio_helpers import B_IP, NetPair
from app_harness import connection

from tcpstack.aio import open_connection
from tcpstack.apps import DiscardService, EchoService, Keepalive, ServiceLimits
from tcpstack.apps.protocols import ByteServiceProtocol, DiscardProtocol, EchoProtocol

SHORT = 0.2
WAIT = 10.0

Service = EchoService | DiscardService


def _service(name: str, limits: ServiceLimits | None = None,
             counters: Counter[str] | None = None) -> Service:
    cls = EchoService if name == "echo" else DiscardService
    return cls(limits=limits if limits is not None else ServiceLimits(),
               counters=counters if counters is not None else Counter())


@contextlib.asynccontextmanager
async def serving(service: Service) -> AsyncIterator[tuple[int, list[ByteServiceProtocol]]]:
    """The service's protocol on a loopback port; the protocols made, for inspection.
    On exit every connection must have ended (connection_lost called)."""
    made: list[ByteServiceProtocol] = []

    def factory() -> ByteServiceProtocol:
        proto = service.protocol()
        made.append(proto)
        return proto

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], made
    finally:
        server.close()
        await server.wait_closed()


async def _until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# -- the services --------------------------------------------------------------


async def test_echo_returns_what_was_sent_and_closes_after_eof() -> None:
    payload = b"hello, echo\r\n" * 10
    async with serving(_service("echo")) as (port, made), \
            connection(port) as (reader, writer):
        writer.write(payload)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), WAIT) == payload
        await _until(lambda: made[0].transport is None)
    assert made[0].received == len(payload)


async def test_echo_answers_each_message_before_eof() -> None:
    async with serving(_service("echo")) as (port, _), connection(port) as (reader, writer):
        for message in (b"ping", b"second message", b"\x00\xff binary"):
            writer.write(message)
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(len(message)), WAIT) == message
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), WAIT) == b""


async def test_echo_large_transfer_round_trips_intact_under_back_pressure() -> None:
    """8 MiB sent faster than read back: the protocol's pause/resume keeps it whole."""
    payload = os.urandom(8 * 1024 * 1024)

    async def send(writer: asyncio.StreamWriter) -> None:
        for start in range(0, len(payload), 1 << 20):
            writer.write(payload[start : start + (1 << 20)])
            await writer.drain()
        writer.write_eof()

    counters: Counter[str] = Counter()
    async with serving(_service("echo", counters=counters)) as (port, _), \
            connection(port) as (reader, writer):
        sender = asyncio.create_task(send(writer))
        digest = hashlib.sha256()
        total = 0
        while chunk := await asyncio.wait_for(reader.read(1 << 16), WAIT):
            digest.update(chunk)
            total += len(chunk)
            if total < len(payload) // 2:
                await asyncio.sleep(0)  # a slow reader at first: writing pauses
        await sender
    assert total == len(payload)
    assert digest.digest() == hashlib.sha256(payload).digest()
    assert not counters  # no limit fired


@pytest.mark.parametrize("name", ["echo", "discard"])
async def test_a_client_reset_ends_the_connection_quietly(name: str) -> None:
    counters: Counter[str] = Counter()
    async with serving(_service(name, counters=counters)) as (port, made):
        sock = socket.create_connection(("127.0.0.1", port))
        try:
            sock.sendall(b"some data before the reset")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            sock.close()
        await _until(lambda: bool(made) and made[0].transport is None)
    assert not counters


async def test_discard_consumes_everything_and_writes_nothing() -> None:
    async with serving(_service("discard")) as (port, made), \
            connection(port) as (reader, writer):
        writer.write(b"x" * 1_000_000)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        await _until(lambda: made[0].transport is None)
    assert made[0].received == 1_000_000


async def test_discard_keeps_the_connection_open_until_eof() -> None:
    async with serving(_service("discard")) as (port, made), \
            connection(port) as (reader, writer):
        writer.write(b"first")
        await writer.drain()
        await _until(lambda: bool(made) and made[0].received == 5)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.2)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), WAIT) == b""


# -- the limits ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["echo", "discard"])
async def test_an_idle_connection_is_closed_after_idle_timeout_and_counted(name: str) -> None:
    counters: Counter[str] = Counter()
    async with serving(_service(name, ServiceLimits(idle_timeout=SHORT), counters)) \
            as (port, _), connection(port) as (reader, _writer):
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
    assert counters[f"{name}_idle_timeout"] == 1


@pytest.mark.parametrize("name", ["echo", "discard"])
async def test_input_moves_the_idle_deadline(name: str) -> None:
    """The idle timeout bounds silence, not the life of a busy connection."""
    counters: Counter[str] = Counter()
    async with serving(_service(name, ServiceLimits(idle_timeout=0.5), counters)) \
            as (port, _), connection(port) as (reader, writer):
        for _ in range(30):  # a ping every 0.05 s for 1.5 s: three times the timeout
            writer.write(b"ping")
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write_eof()
        await asyncio.wait_for(reader.read(), WAIT)
    assert counters[f"{name}_idle_timeout"] == 0


async def test_an_echo_client_that_sends_but_never_reads_is_reset() -> None:
    counters: Counter[str] = Counter()
    service = _service("echo", ServiceLimits(send_timeout=SHORT), counters)
    async with serving(service) as (port, _), connection(port) as (_reader, writer):
        chunk = b"y" * (1 << 20)
        try:
            async with asyncio.timeout(WAIT):
                while counters["echo_send_timeout"] == 0:
                    writer.write(chunk)
                    await writer.drain()
        except ConnectionError:
            pass  # the reset reached our writes first
        await _until(lambda: counters["echo_send_timeout"] == 1)


class FakeTransport(asyncio.Transport):
    """Records what a protocol does; ``stuck_close``: close() never completes."""

    def __init__(self, stuck_close: bool = False, sock: object = None) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = self.aborted = self.reading_paused = False
        self.stuck_close = stuck_close
        self.protocol: asyncio.Protocol | None = None
        self.sock = sock

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.sock if name == "socket" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:  # type: ignore[override]
        self.written += data

    def close(self) -> None:
        self.closed = True
        if not self.stuck_close and self.protocol is not None:
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        if self.protocol is not None:
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)
            self.protocol = None

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False


def _made(proto: ByteServiceProtocol, transport: FakeTransport) -> None:
    transport.protocol = proto
    proto.connection_made(transport)


@pytest.mark.parametrize("name", ["echo", "discard"])
async def test_a_close_that_never_completes_is_reset_after_close_timeout(name: str) -> None:
    counters: Counter[str] = Counter()
    proto = _service(name, ServiceLimits(close_timeout=SHORT, keepalive=None),
                     counters).protocol()
    transport = FakeTransport(stuck_close=True)
    _made(proto, transport)
    proto.data_received(b"bye")
    assert proto.eof_received() is True  # we close, bounded
    assert transport.closed and not transport.aborted
    await _until(lambda: transport.aborted)
    assert counters[f"{name}_close_timeout"] == 1
    assert transport.written == (b"bye" if name == "echo" else b"")


async def test_a_paused_writer_stops_reading_and_resuming_rearms_the_idle_bound() -> None:
    """While the transport's buffer is full (the peer does not read) echo reads no
    more; if writing resumes in time nothing fires, and silence after that is
    bounded by the idle timeout again."""
    counters: Counter[str] = Counter()
    proto = EchoProtocol(ServiceLimits(send_timeout=0.5, idle_timeout=SHORT,
                                       keepalive=None), counters)
    transport = FakeTransport()
    _made(proto, transport)
    proto.pause_writing()
    assert transport.reading_paused
    await asyncio.sleep(0.3)  # past the idle timeout, within the send timeout
    proto.resume_writing()
    assert not transport.reading_paused and not counters
    await _until(lambda: transport.closed)
    assert counters == Counter({"echo_idle_timeout": 1})


class RecordingSocket:
    def __init__(self, fail: bool = False) -> None:
        self.options: dict[tuple[int, int], int] = {}
        self.fail = fail

    def setsockopt(self, level: int, option: int, value: int, /) -> None:
        if self.fail:
            raise OSError("not supported")
        self.options[(level, option)] = value


@pytest.mark.parametrize("name", ["echo", "discard"])
async def test_keepalive_goes_on_through_the_socket_options(name: str) -> None:
    sock = RecordingSocket()
    proto = _service(name, ServiceLimits(keepalive=Keepalive(30, 5, 4))).protocol()
    _made(proto, FakeTransport(sock=sock))
    assert sock.options == {
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE): 30,
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL): 5,
        (socket.IPPROTO_TCP, socket.TCP_KEEPCNT): 4,
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE): 1,
    }
    proto.connection_lost(None)


@pytest.mark.parametrize(("sock", "counted"), [(None, 1), (RecordingSocket(fail=True), 1)])
async def test_a_transport_without_keepalive_is_counted_not_fatal(sock: object,
                                                                  counted: int) -> None:
    counters: Counter[str] = Counter()
    proto = EchoProtocol(ServiceLimits(), counters)
    transport = FakeTransport(sock=sock)
    _made(proto, transport)
    proto.data_received(b"abc")
    assert transport.written == b"abc"
    assert counters["echo_keepalive_unavailable"] == counted
    proto.connection_lost(None)


async def test_keepalive_none_leaves_the_socket_alone() -> None:
    sock = RecordingSocket()
    proto = DiscardProtocol(ServiceLimits(keepalive=None), Counter())
    _made(proto, FakeTransport(sock=sock))
    assert sock.options == {}
    proto.connection_lost(None)


async def test_a_finished_connection_leaves_nothing_armed_in_the_clock() -> None:
    """connection_lost makes the clock entry stale: the protocol can go away, and
    a due stale entry calls nothing."""
    counters: Counter[str] = Counter()
    proto = EchoProtocol(ServiceLimits(idle_timeout=SHORT, keepalive=None), counters)
    transport = FakeTransport()
    _made(proto, transport)
    proto.connection_lost(None)
    del proto
    gc.collect()
    await asyncio.sleep(SHORT * 2)
    assert not counters and not transport.closed


# -- over tcpstack's own transports -----------------------------------------------


@pytest.mark.parametrize("name", ["echo", "discard"])
async def test_the_protocols_serve_over_tcpstack_with_keepalive_on_the_tcb(name: str) -> None:
    nets = NetPair()
    service = _service(name, ServiceLimits(keepalive=Keepalive(45, 7, 3)))
    made: list[ByteServiceProtocol] = []

    def factory() -> ByteServiceProtocol:
        made.append(service.protocol())
        return made[-1]

    try:
        await nets.b.create_server(factory, None, 7007)
        reader, writer = await asyncio.wait_for(
            open_connection(B_IP, 7007, network=nets.a), WAIT)
        writer.write(b"hello")
        if name == "echo":
            assert await asyncio.wait_for(reader.readexactly(5), WAIT) == b"hello"
        tcb = made[0].transport.get_extra_info("tcb")  # type: ignore[union-attr]
        assert (tcb.keepalive, tcb.keepalive_idle, tcb.keepalive_interval,
                tcb.keepalive_count) == (True, 45.0, 7.0, 3)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        await _until(lambda: made[0].transport is None)
    finally:
        await nets.aclose()
    assert made[0].received == 5


def test_the_protocols_serve_on_uvloop_too() -> None:
    """uvloop's transports are not asyncio.Transport subclasses: the services must
    not care (the benchmark's kernel reference runs them there)."""
    import uvloop

    async def main() -> tuple[bytes, int]:
        counters: Counter[str] = Counter()
        async with serving(_service("echo", counters=counters)) as (port, made), \
                connection(port) as (reader, writer):
            writer.write(b"on uvloop")
            writer.write_eof()
            data = await asyncio.wait_for(reader.read(), WAIT)
            await _until(lambda: made[0].transport is None)
        return data, sum(counters.values())

    assert uvloop.run(main()) == (b"on uvloop", 0)


@pytest.mark.parametrize(("name", "verb"), [("echo", "echoed"), ("discard", "discarded")])
async def test_the_end_of_a_connection_is_logged_as_the_stream_services_do(
        name: str, verb: str, caplog: pytest.LogCaptureFixture) -> None:
    """``<service> PEER: N bytes <verb>, peer sent EOF`` at debug level: what the
    daemon's log has always said (tests and users read it)."""
    caplog.set_level(logging.DEBUG, logger="tcpstack.apps")
    async with serving(_service(name)) as (port, made), \
            connection(port) as (reader, writer):
        writer.write(b"z" * 1234)
        writer.write_eof()
        await asyncio.wait_for(reader.read(), WAIT)
        await _until(lambda: made[0].transport is None)
    assert re.search(rf"{name} .*: 1234 bytes {verb}, peer sent EOF", caplog.text)
