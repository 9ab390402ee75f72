"""The asyncio streams layer end to end: two Networks linked in memory on one loop.

Network A (10.0.0.1) and Network B (10.0.0.2) each drive their own end of an
AF_UNIX/SOCK_SEQPACKET socketpair (:class:`tests.unit.aio_helpers.PairDevice`), so
the whole path -- streams, runtime, stack, TCP engine, wire format -- runs for real
without root, TUN devices or namespaces. Every wait is bounded by ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from aio_helpers import A_IP, B_IP, NetPair

from tcpstack.aio import Server, TcpStreamReader, TcpStreamWriter, open_connection, start_server
from tcpstack.tcp.config import TcpConfig

T = TypeVar("T")

TIMEOUT = 5.0
PORT = 7000

Handler = Callable[[TcpStreamReader, TcpStreamWriter], Awaitable[None]]
MakeNets = Callable[..., NetPair]


async def within(aw: Awaitable[T], timeout: float = TIMEOUT) -> T:
    return await asyncio.wait_for(aw, timeout)


@pytest.fixture
async def make_nets() -> AsyncIterator[MakeNets]:
    pairs: list[NetPair] = []

    def make(tcp_a: TcpConfig | None = None, tcp_b: TcpConfig | None = None) -> NetPair:
        pair = NetPair(tcp_a, tcp_b)
        pairs.append(pair)
        return pair

    yield make
    for pair in pairs:
        await asyncio.wait_for(pair.aclose(), TIMEOUT)


@pytest.fixture
async def nets(make_nets: MakeNets) -> NetPair:
    return make_nets()


class Accepted:
    """A server callback that records each accepted (reader, writer) and keeps it open."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[TcpStreamReader, TcpStreamWriter]] = asyncio.Queue()

    def __call__(self, reader: TcpStreamReader, writer: TcpStreamWriter) -> None:
        self.queue.put_nowait((reader, writer))

    async def next(self) -> tuple[TcpStreamReader, TcpStreamWriter]:
        return await within(self.queue.get())


async def echo_handler(reader: TcpStreamReader, writer: TcpStreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        return
    writer.close()


def sender(payload: bytes, *, pause_after: int | None = None) -> Handler:
    """A server callback that writes ``payload`` (optionally in two writes) and closes."""

    async def handler(_reader: TcpStreamReader, writer: TcpStreamWriter) -> None:
        if pause_after is None:
            writer.write(payload)
        else:
            writer.write(payload[:pause_after])
            await writer.drain()
            await asyncio.sleep(0.05)  # the first part leaves as a segment of its own
            writer.write(payload[pause_after:])
        await writer.drain()
        writer.close()

    return handler


async def connect_to(
    nets: NetPair, handler: Any, *, limit: int | None = None
) -> tuple[Server, TcpStreamReader, TcpStreamWriter]:
    server = await start_server(handler, port=PORT, network=nets.b)
    kwargs: dict[str, Any] = {} if limit is None else {"limit": limit}
    reader, writer = await within(open_connection(B_IP, PORT, network=nets.a, **kwargs))
    return server, reader, writer


# ------------------------------------------------------------------ connect and echo


async def test_echo_round_trip_and_addresses(nets: NetPair) -> None:
    accepted = Accepted()
    await start_server(accepted, port=PORT, network=nets.b)
    reader, writer = await within(open_connection(B_IP, PORT, network=nets.a))
    s_reader, s_writer = await accepted.next()

    peer = writer.get_extra_info("peername")
    local = writer.get_extra_info("sockname")
    assert peer == (B_IP, PORT)
    assert local[0] == A_IP
    assert 1024 <= local[1] <= 65535
    assert s_writer.get_extra_info("peername") == local
    assert s_writer.get_extra_info("sockname") == (B_IP, PORT)
    assert writer.get_extra_info("no-such-key", "dflt") == "dflt"

    writer.write(b"ping\n")
    await within(writer.drain())
    assert await within(s_reader.readline()) == b"ping\n"
    s_writer.write(b"pong\n")
    await within(s_writer.drain())
    assert await within(reader.readline()) == b"pong\n"


async def test_echo_many_round_trips_through_echo_server(nets: NetPair) -> None:
    _server, reader, writer = await connect_to(nets, echo_handler)
    for i in range(20):
        msg = f"message {i}\n".encode()
        writer.write(msg)
        await within(writer.drain())
        assert await within(reader.readexactly(len(msg))) == msg


async def test_socket_extra_info_supports_nodelay_and_keepalive(nets: NetPair) -> None:
    _server, _reader, writer = await connect_to(nets, Accepted())
    sock = writer.get_extra_info("socket")
    assert sock is not None
    assert sock.getpeername() == (B_IP, PORT)
    assert sock.getsockname() == writer.get_extra_info("sockname")

    # asyncio's streams (and ours) start with Nagle off.
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1

    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, (0).to_bytes(4, "little"))
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0

    with pytest.raises(OSError) as info:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert info.value.errno == errno.ENOPROTOOPT
    with pytest.raises(OSError) as info:
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    assert info.value.errno == errno.ENOPROTOOPT


# ------------------------------------------------------------------ reading


async def test_read_n_returns_at_most_n_and_read_all_reads_to_eof(nets: NetPair) -> None:
    payload = os.urandom(5000)
    _server, reader, _writer = await connect_to(nets, sender(payload))
    first = await within(reader.read(10))
    assert 1 <= len(first) <= 10
    second = await within(reader.read(100))
    assert 1 <= len(second) <= 100
    rest = await within(reader.read())
    assert first + second + rest == payload
    assert reader.at_eof()
    assert await within(reader.read()) == b""
    assert await within(reader.read(10)) == b""
    assert await within(reader.read(0)) == b""


async def test_readexactly_larger_than_receive_buffer_does_not_deadlock(
    make_nets: MakeNets,
) -> None:
    # Regression: the reader must move buffered data out of the (64 KiB) receive
    # buffer while it waits, or the window stays shut and readexactly never returns.
    nets = make_nets(tcp_a=TcpConfig(rcv_buf=64 * 1024))
    payload = os.urandom(1 << 20)
    _server, reader, _writer = await connect_to(nets, sender(payload))
    data = await within(reader.readexactly(len(payload)))
    assert data == payload
    assert await within(reader.read()) == b""


async def test_readexactly_at_eof_raises_incomplete_read_with_partial(nets: NetPair) -> None:
    _server, reader, _writer = await connect_to(nets, sender(b"abc"))
    with pytest.raises(asyncio.IncompleteReadError) as info:
        await within(reader.readexactly(10))
    assert info.value.partial == b"abc"
    assert info.value.expected == 10
    assert reader.at_eof()


async def test_readuntil_finds_multibyte_separator_split_across_segments(
    nets: NetPair,
) -> None:
    payload = b"hello\r\nworld"
    # "\r" ends the first segment, "\n" starts the second.
    _server, reader, _writer = await connect_to(nets, sender(payload, pause_after=6))
    assert await within(reader.readuntil(b"\r\n")) == b"hello\r\n"
    with pytest.raises(asyncio.IncompleteReadError) as info:
        await within(reader.readuntil(b"\r\n"))
    assert info.value.partial == b"world"


async def test_readuntil_separator_split_inside_longer_separator(nets: NetPair) -> None:
    payload = b"head--|--|==body"
    _server, reader, _writer = await connect_to(nets, sender(payload, pause_after=9))
    assert await within(reader.readuntil(b"--|==")) == b"head--|--|=="
    assert await within(reader.read()) == b"body"


async def test_readline_returns_partial_last_line_at_eof(nets: NetPair) -> None:
    _server, reader, _writer = await connect_to(nets, sender(b"one\ntwo"))
    assert await within(reader.readline()) == b"one\n"
    assert await within(reader.readline()) == b"two"
    assert await within(reader.readline()) == b""


async def test_readline_over_limit_raises_value_error_and_stream_stays_usable(
    nets: NetPair,
) -> None:
    # One write below the MSS: the long line and the next one arrive together.
    payload = b"x" * 1100 + b"\nok\n"
    _server, reader, _writer = await connect_to(nets, sender(payload), limit=1024)
    with pytest.raises(ValueError):
        await within(reader.readline())
    assert await within(reader.readline()) == b"ok\n"
    assert await within(reader.readline()) == b""


async def test_readuntil_over_limit_raises_limit_overrun_and_keeps_data(
    nets: NetPair,
) -> None:
    payload = b"y" * 1100 + b"\n"
    _server, reader, _writer = await connect_to(nets, sender(payload), limit=1024)
    with pytest.raises(asyncio.LimitOverrunError):
        await within(reader.readuntil(b"\n"))
    # Like asyncio, readuntil leaves the data in the buffer.
    assert await within(reader.read()) == payload


async def test_async_iteration_yields_lines_until_eof(nets: NetPair) -> None:
    _server, reader, _writer = await connect_to(nets, sender(b"a\nbb\nccc\nlast"))

    async def collect() -> list[bytes]:
        return [line async for line in reader]

    assert await within(collect()) == [b"a\n", b"bb\n", b"ccc\n", b"last"]


# ------------------------------------------------------------------ writing


async def test_write_eof_half_close_peer_sees_eof_and_can_still_reply(nets: NetPair) -> None:
    async def handler(reader: TcpStreamReader, writer: TcpStreamWriter) -> None:
        request = await reader.read()  # to EOF
        assert reader.at_eof()
        writer.write(b"got " + request)
        await writer.drain()
        writer.close()

    _server, reader, writer = await connect_to(nets, handler)
    assert writer.can_write_eof()
    writer.write(b"request")
    writer.write_eof()
    with pytest.raises(RuntimeError):
        writer.write(b"after eof")
    assert await within(reader.read()) == b"got request"


async def test_drain_blocks_until_peer_reads_then_all_bytes_arrive_in_order(
    make_nets: MakeNets,
) -> None:
    nets = make_nets(tcp_a=TcpConfig(snd_buf=16 * 1024))
    accepted = Accepted()
    _server, _reader, writer = await connect_to(nets, accepted)
    s_reader, _s_writer = await accepted.next()

    payload = os.urandom(1 << 20)
    writer.write(payload)
    drain = asyncio.ensure_future(writer.drain())
    done, _ = await asyncio.wait([drain], timeout=0.2)
    assert not done, "drain completed although the peer reads nothing"

    received = await within(s_reader.readexactly(len(payload)))
    await within(drain)
    assert received == payload


# ------------------------------------------------------------------ errors


async def test_connect_to_port_without_listener_is_refused(nets: NetPair) -> None:
    with pytest.raises(ConnectionRefusedError):
        await within(open_connection(B_IP, 9999, network=nets.a))
    assert not nets.a.connections


async def test_peer_abort_makes_read_raise_connection_reset(nets: NetPair) -> None:
    accepted = Accepted()
    _server, reader, writer = await connect_to(nets, accepted)
    _s_reader, s_writer = await accepted.next()

    s_writer.transport.abort()
    with pytest.raises(ConnectionResetError):
        await within(reader.read())
    assert isinstance(reader.exception(), ConnectionResetError)

    writer.write(b"into the void")  # dropped, does not raise
    with pytest.raises(BrokenPipeError):  # as a kernel socket's send after a reset
        await within(writer.drain())


async def test_data_read_before_the_reset_arrives_is_kept(nets: NetPair) -> None:
    accepted = Accepted()
    _server, reader, _writer = await connect_to(nets, accepted)
    _s_reader, s_writer = await accepted.next()
    s_writer.write(b"last words")
    await within(s_writer.drain())
    assert await within(reader.read(100)) == b"last words"
    s_writer.transport.abort()
    with pytest.raises(ConnectionResetError):
        await within(reader.read(100))


async def test_write_after_close_is_ignored(nets: NetPair) -> None:
    accepted = Accepted()
    _server, _reader, writer = await connect_to(nets, accepted)
    s_reader, _s_writer = await accepted.next()

    writer.write(b"before")
    writer.close()
    assert writer.is_closing()
    writer.write(b"after")  # no exception, nothing sent
    await within(writer.wait_closed())
    assert await within(s_reader.read()) == b"before"


# ------------------------------------------------------------------ server and shutdown


async def test_server_close_refuses_new_connections_but_keeps_existing(nets: NetPair) -> None:
    server = await start_server(echo_handler, port=PORT, network=nets.b)
    reader, writer = await within(open_connection(B_IP, PORT, network=nets.a))
    assert server.is_serving()

    server.close()
    assert not server.is_serving()
    with pytest.raises(ConnectionRefusedError):
        await within(open_connection(B_IP, PORT, network=nets.a))

    writer.write(b"still here")
    await within(writer.drain())
    assert await within(reader.readexactly(10)) == b"still here"
    # wait_closed waits for the connections too (asyncio since 3.12).
    waiting = asyncio.ensure_future(server.wait_closed())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    writer.close()
    await within(waiting)


async def test_server_async_with_closes_on_exit(nets: NetPair) -> None:
    async with await start_server(echo_handler, port=PORT, network=nets.b) as server:
        assert server.is_serving()
        reader, writer = await within(open_connection(B_IP, PORT, network=nets.a))
        writer.write(b"x")
        assert await within(reader.readexactly(1)) == b"x"
        writer.close()  # leaving the block waits for the server's connections to end
    assert not server.is_serving()
    await within(server.wait_closed())
    with pytest.raises(ConnectionRefusedError):
        await within(open_connection(B_IP, PORT, network=nets.a))
    # The port can be listened on again.
    again = await start_server(echo_handler, port=PORT, network=nets.b)
    r2, w2 = await within(open_connection(B_IP, PORT, network=nets.a))
    w2.write(b"y")
    assert await within(r2.readexactly(1)) == b"y"
    again.close()


async def test_start_server_rejects_foreign_host(nets: NetPair) -> None:
    with pytest.raises(OSError) as info:
        await start_server(echo_handler, "10.9.9.9", PORT, network=nets.b)
    assert info.value.errno == errno.EADDRNOTAVAIL


async def test_network_aclose_closes_open_connections_and_returns(nets: NetPair) -> None:
    accepted = Accepted()
    _server, reader, _writer = await connect_to(nets, accepted)
    await accepted.next()
    assert len(nets.b.connections) == 1

    await within(nets.b.aclose(grace=1.0), 3.0)
    assert not nets.b.connections
    try:
        assert await within(reader.read()) == b""
    except ConnectionResetError:
        pass
    with pytest.raises(RuntimeError):
        await nets.b.start_server(echo_handler, port=PORT + 1)
    await within(nets.b.aclose())  # idempotent


async def test_callback_that_raises_resets_the_connection(nets: NetPair) -> None:
    def broken(_reader: TcpStreamReader, _writer: TcpStreamWriter) -> None:
        raise RuntimeError("handler bug")

    _server, reader, _writer = await connect_to(nets, broken)
    with pytest.raises(ConnectionResetError):
        await within(reader.read())
    assert not nets.b.connections


async def test_local_abort_ends_reads_without_error(nets: NetPair) -> None:
    accepted = Accepted()
    _server, reader, writer = await connect_to(nets, accepted)
    s_reader, _s_writer = await accepted.next()
    writer.transport.abort()
    assert writer.is_closing()
    assert await within(reader.read()) == b""
    with pytest.raises(ConnectionResetError, match="Connection lost"):  # as asyncio
        await within(writer.drain())
    await within(writer.wait_closed())
    with pytest.raises(ConnectionResetError):
        await within(s_reader.read())


async def test_close_right_after_large_write_still_delivers_everything(
    make_nets: MakeNets,
) -> None:
    nets = make_nets(tcp_a=TcpConfig(snd_buf=16 * 1024))
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(reader: TcpStreamReader, _writer: TcpStreamWriter) -> None:
        got.set_result(await reader.read())

    _server, _reader, writer = await connect_to(nets, handler)
    payload = os.urandom(1 << 20)
    writer.write(payload)
    writer.close()  # no drain: queued data still goes out before the FIN
    assert await within(got) == payload
    await within(writer.wait_closed())


async def test_readuntil_larger_than_receive_buffer_completes(make_nets: MakeNets) -> None:
    # The separator arrives after more data than the 4 KiB receive buffer holds and is
    # itself split across two writes.
    nets = make_nets(tcp_a=TcpConfig(rcv_buf=4096))
    payload = b"a" * 20000 + b"END!" + b"tail"
    _server, reader, _writer = await connect_to(
        nets, sender(payload, pause_after=20002), limit=1 << 20)
    assert await within(reader.readuntil(b"END!")) == payload[:20004]
    assert await within(reader.read()) == b"tail"


async def test_network_aclose_fails_pending_open_connection(nets: NetPair) -> None:
    # 10.0.0.3 does not exist: the SYN goes unanswered.
    pending = asyncio.ensure_future(open_connection("10.0.0.3", PORT, network=nets.a))
    await asyncio.sleep(0.05)
    assert not pending.done()
    await within(nets.a.aclose(grace=0.5), 3.0)
    with pytest.raises(ConnectionError):
        await within(pending)
