"""The asyncio Transport/Protocol contract of tcpstack's transports, end to end.

Two Networks linked in memory (:class:`aio_helpers.NetPair`): A (10.0.0.1) opens,
B (10.0.0.2) serves. Each test checks one promise of ``asyncio.Transport`` /
``asyncio.Protocol``: the order of callbacks, half-close and what ``eof_received``
returns, flow control in both directions (a paused reader closes the TCP window
and pauses the sender's transport; write-buffer marks), the exceptions handed to
``connection_lost``, BufferedProtocol delivery, and the errors of the calls.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from aio_helpers import (
    A_IP,
    B_IP,
    BufferedRecorder,
    NetPair,
    Recorder,
    live_tcbs,
    until,
    within,
)

from tcpstack.aio import Server, TcpTransport
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.state import State

PORT = 7100
SMALL = TcpConfig(rcv_buf=16 * 1024, snd_buf=16 * 1024)

MakeNets = Callable[..., NetPair]


@pytest.fixture
async def make_nets() -> AsyncIterator[MakeNets]:
    pairs: list[NetPair] = []

    def make(tcp_a: TcpConfig | None = None, tcp_b: TcpConfig | None = None,
             **kwargs: object) -> NetPair:
        pair = NetPair(tcp_a, tcp_b, **kwargs)  # type: ignore[arg-type]
        pairs.append(pair)
        return pair

    yield make
    for pair in pairs:
        await asyncio.wait_for(pair.aclose(), 5.0)


@pytest.fixture
async def nets(make_nets: MakeNets) -> NetPair:
    return make_nets()


async def serve(nets: NetPair, factory: Callable[[], asyncio.BaseProtocol],
                **kwargs: object) -> tuple[Server, list[Recorder]]:
    """A server on B whose protocols (made by ``factory``) are collected in the list."""
    made: list[Recorder] = []

    def record() -> asyncio.BaseProtocol:
        protocol = factory()
        assert isinstance(protocol, Recorder)
        made.append(protocol)
        return protocol

    server = await nets.b.create_server(record, B_IP, PORT, **kwargs)  # type: ignore[arg-type]
    return server, made


async def connect(nets: NetPair, protocol: Recorder | None = None
                  ) -> tuple[TcpTransport, Recorder]:
    protocol = protocol or Recorder()
    transport, got = await within(nets.a.create_connection(lambda: protocol, B_IP, PORT))
    assert got is protocol
    assert isinstance(transport, TcpTransport)
    return transport, protocol


async def accepted(made: list[Recorder]) -> Recorder:
    await until(lambda: made, "the server to accept")
    await within(made[0].made)
    return made[0]


# ------------------------------------------------------------------ callbacks


async def test_callbacks_come_in_asyncio_order_on_both_sides(nets: NetPair) -> None:
    """connection_made, data, eof_received, connection_lost -- on client and server."""
    _server, made = await serve(nets, lambda: Recorder(keep_open=None))
    transport, client = await connect(nets, Recorder(keep_open=None))
    server = await accepted(made)

    transport.write(b"hello")
    transport.write_eof()
    await within(server.eof)
    assert bytes(server.data) == b"hello"
    # eof_received returned None: the server's transport closed itself.
    assert await within(server.lost) is None
    assert await within(client.lost) is None
    assert client.reads() == ["connection_made", "eof_received", "connection_lost"]
    assert server.reads() == ["connection_made", "data", "eof_received", "connection_lost"]


async def test_eof_received_true_keeps_the_transport_open_for_writing(nets: NetPair) -> None:
    """Half-close: after the peer's FIN the protocol may still write, then close."""
    _server, made = await serve(nets, lambda: Recorder(keep_open=True))
    transport, client = await connect(nets)
    server = await accepted(made)
    assert transport.can_write_eof()

    transport.write(b"request")
    transport.write_eof()
    with pytest.raises(RuntimeError):
        transport.write(b"more")
    await within(server.eof)
    assert server.transport is not None and not server.transport.is_closing()
    server.transport.write(b"reply after your FIN")
    server.transport.close()
    await within(client.eof)
    assert bytes(client.data) == b"reply after your FIN"
    assert await within(server.lost) is None
    transport.close()
    assert await within(client.lost) is None


async def test_get_extra_info_answers_as_asyncio(nets: NetPair) -> None:
    _server, made = await serve(nets, Recorder)
    transport, _client = await connect(nets)
    server = await accepted(made)
    assert server.transport is not None
    peer = transport.get_extra_info("peername")
    local = transport.get_extra_info("sockname")
    assert peer == (B_IP, PORT)
    assert local[0] == A_IP
    assert server.transport.get_extra_info("peername") == local
    sock = transport.get_extra_info("socket")
    assert sock.getsockname() == local and sock.getpeername() == peer
    assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
    # asyncio turns Nagle off on TCP transports.
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    for name in ("sslcontext", "ssl_object", "peercert"):
        assert transport.get_extra_info(name) is None
    assert transport.get_extra_info("nonsense", "default") == "default"


async def test_write_takes_bytes_like_objects_only_and_copies_mutable_ones(
        nets: NetPair) -> None:
    _server, made = await serve(nets, Recorder)
    transport, _client = await connect(nets)
    server = await accepted(made)
    with pytest.raises(TypeError):
        transport.write("text")  # type: ignore[arg-type]
    buf = bytearray(b"abc")
    transport.write(buf)
    buf[:] = b"XYZ"  # reusing the buffer after write() must not change what is sent
    transport.writelines([b"d", memoryview(b"ef"), bytearray(b"g")])
    transport.write(b"")
    await until(lambda: len(server.data) >= 7, "7 bytes at the server")
    assert bytes(server.data) == b"abcdefg"


# ------------------------------------------------------------------ flow control


async def test_paused_reader_closes_the_window_and_pauses_the_senders_transport(
        make_nets: MakeNets) -> None:
    """pause_reading: the receiver's TCB fills, it advertises a zero window, the
    sender's TCB fills, its transport buffers past the high mark and calls
    pause_writing; resume_reading reopens the window and everything arrives."""
    nets = make_nets(SMALL, SMALL)
    _server, made = await serve(nets, lambda: Recorder(pause_on_connect=True))
    transport, client = await connect(nets)
    server = await accepted(made)
    assert server.transport is not None and not server.transport.is_reading()
    transport.set_write_buffer_limits(high=8192, low=2048)

    payload = os.urandom(200 * 1024)
    transport.write(payload)
    server_tcb = server.transport.get_extra_info("tcb")
    client_tcb = transport.get_extra_info("tcb")
    # (a scaled window field may round the offer up by a few bytes)
    await until(lambda: server_tcb.recv_buffered >= SMALL.rcv_buf, "the receive buffer full")
    await until(lambda: client_tcb.snd_wnd == 0, "the sender to see a zero window")
    assert server.data == b""
    assert client.calls.count("pause_writing") == 1
    assert client.write_buffer_at_pause[0] > 8192
    assert "resume_writing" not in client.calls

    server.transport.resume_reading()
    await until(lambda: client_tcb.snd_wnd > 0, "the window to reopen")
    await until(lambda: len(server.data) == len(payload), "all data at the server")
    assert bytes(server.data) == payload
    # Everything read: the receiver advertises its whole buffer again.
    await until(lambda: client_tcb.snd_wnd >= SMALL.rcv_buf // 2, "the full window back")
    await until(lambda: "resume_writing" in client.calls, "resume_writing")
    assert client.write_buffer_at_resume[0] <= 2048
    assert transport.get_write_buffer_size() == 0


async def test_write_buffer_marks_call_pause_and_resume_exactly_past_them(
        make_nets: MakeNets) -> None:
    """pause_writing once the transport buffer exceeds ``high`` (not at it),
    resume_writing once it is at or below ``low``."""
    nets = make_nets(SMALL, SMALL)
    _server, made = await serve(nets, lambda: Recorder(pause_on_connect=True))
    transport, client = await connect(nets)
    server = await accepted(made)
    high, low = 10_000, 3_000
    transport.set_write_buffer_limits(high=high, low=low)
    assert transport.get_write_buffer_limits() == (low, high)

    # Nothing is acknowledged while this runs (no await): the TCB takes its
    # send space plus one byte, the transport buffers the rest.
    space = transport.tcb.send_space
    assert space >= SMALL.snd_buf
    transport.write(b"a" * (space + 1))
    assert transport.get_write_buffer_size() == 0
    transport.write(b"b" * high)
    assert transport.get_write_buffer_size() == high
    assert "pause_writing" not in client.calls
    transport.write(b"c")
    assert client.calls.count("pause_writing") == 1
    assert client.write_buffer_at_pause == [high + 1]
    transport.write(b"d" * 5000)  # still paused: no second call
    assert client.calls.count("pause_writing") == 1

    assert server.transport is not None
    server.transport.resume_reading()
    await until(lambda: "resume_writing" in client.calls, "resume_writing")
    assert client.write_buffer_at_resume[0] <= low
    total = space + 1 + high + 1 + 5000
    await until(lambda: len(server.data) == total, "everything at the server")


async def test_set_write_buffer_limits_defaults_and_validation(nets: NetPair) -> None:
    _server, _made = await serve(nets, Recorder)
    transport, client = await connect(nets)
    space = transport.tcb.send_space
    assert transport.get_write_buffer_limits() == (space // 4, space)
    transport.set_write_buffer_limits(low=1000)
    assert transport.get_write_buffer_limits() == (1000, 4000)
    transport.set_write_buffer_limits(high=1000)
    assert transport.get_write_buffer_limits() == (250, 1000)
    transport.set_write_buffer_limits(high=0)
    assert transport.get_write_buffer_limits() == (0, 0)
    with pytest.raises(ValueError):
        transport.set_write_buffer_limits(high=10, low=20)
    with pytest.raises(ValueError):
        transport.set_write_buffer_limits(high=-1)
    assert transport.get_write_buffer_limits() == (0, 0)
    transport.set_write_buffer_limits()  # back to the default
    assert transport.get_write_buffer_limits() == (space // 4, space)
    # Lowering the high mark below what is buffered pauses at once.
    transport.write(b"x" * (transport.tcb.send_space + 1 + 500))
    assert transport.get_write_buffer_size() == 500
    assert "pause_writing" not in client.calls
    transport.set_write_buffer_limits(high=100)
    assert client.calls.count("pause_writing") == 1


async def test_default_marks_follow_the_send_space_and_explicit_ones_stay(
        nets: NetPair) -> None:
    """By default the high mark is the connection's send space (twice the congestion
    window, autotuned): pause_writing once more than that waits beyond the TCB's own
    buffer, and both marks grow with the window. Explicit limits do not move."""
    _server, made = await serve(nets, lambda: Recorder(pause_on_connect=True))
    transport, client = await connect(nets)
    server = await accepted(made)
    tcb = transport.tcb
    space = tcb.send_space
    assert space >= nets.a.stack.tcp_config.snd_buf
    transport.write(b"a" * (space + 1))  # the TCB, just past its mark
    transport.write(b"b" * space)  # the transport buffer, at the high mark
    assert transport.get_write_buffer_size() == space
    assert "pause_writing" not in client.calls
    transport.write(b"c")
    assert client.calls == ["connection_made", "pause_writing"]
    assert client.write_buffer_at_pause == [space + 1]

    # A bulk transfer opens the congestion window: the send space, and the marks, grow.
    assert server.transport is not None
    server.transport.resume_reading()
    await until(lambda: "resume_writing" in client.calls, "resume_writing")
    assert client.write_buffer_at_resume[0] <= transport.get_write_buffer_limits()[0]
    # The in-memory link drops what its socket buffer cannot take (as a full device
    # queue does), and a loss halves the window: write until it has grown, within a
    # bound no working window growth comes near (20 writes suffice without loss).
    for _ in range(200):
        transport.write(os.urandom(256 * 1024))
        await until(lambda: transport.get_write_buffer_size() == 0, "the buffer to drain")
        if tcb.send_space > space:
            break
    grown = tcb.send_space
    assert grown > space, (
        f"the send space did not grow with the congestion window: {dict(tcb.counters)}")
    assert transport.get_write_buffer_limits() == (grown // 4, grown)

    transport.set_write_buffer_limits(high=5000)
    assert transport.get_write_buffer_limits() == (1250, 5000)
    transport.write(os.urandom(1 << 20))
    await until(lambda: transport.get_write_buffer_size() == 0, "the buffer to drain")
    assert transport.get_write_buffer_limits() == (1250, 5000)


async def test_a_send_space_that_falls_under_what_the_tcb_holds_does_not_stall_writes(
        make_nets: MakeNets) -> None:
    """Under memory pressure the send space drops back to ``snd_buf``, possibly below
    what the TCB already holds. A write then still leaves the TCB past its mark (one
    byte if need be), so the TCB reports WriteSpace once it drains and the data
    waiting in the transport follows; nothing stalls."""
    nets = make_nets(TcpConfig(snd_buf=8 * 1024),
                     TcpConfig(rcv_buf=4 * 1024, rcv_buf_max=4 * 1024))
    _server, made = await serve(nets, lambda: Recorder(pause_on_connect=True))
    transport, _client = await connect(nets)
    server = await accepted(made)
    tcb = transport.tcb
    space = tcb.send_space
    assert space > 16 * 1024  # twice the initial window, above snd_buf
    first = os.urandom(space - 1000)
    transport.write(first)  # all into the TCB, below its mark
    assert transport.get_write_buffer_size() == 0
    await until(lambda: tcb.snd_wnd == 0, "the paused reader's window to close")
    assert tcb.send_buffered > 8 * 1024

    pool = tcb.pool
    limit = pool.limit
    pool.limit = 1  # memory pressure: the send space is snd_buf again
    try:
        assert tcb.send_space == 8 * 1024 < tcb.send_buffered
        second = os.urandom(3000)
        transport.write(second)
        assert transport.get_write_buffer_size() == len(second) - 1
    finally:
        pool.limit = limit
    assert server.transport is not None
    server.transport.resume_reading()
    await until(lambda: len(server.data) == len(first) + len(second), "every byte")
    assert bytes(server.data) == first + second
    assert transport.get_write_buffer_size() == 0


async def test_pause_and_resume_reading_are_idempotent_and_reported(nets: NetPair) -> None:
    _server, made = await serve(nets, Recorder)
    transport, _client = await connect(nets)
    server = await accepted(made)
    assert transport.is_reading()
    transport.pause_reading()
    transport.pause_reading()
    assert not transport.is_reading()
    assert server.transport is not None
    server.transport.write(b"held")
    await asyncio.sleep(0.05)
    transport.resume_reading()
    transport.resume_reading()
    assert transport.is_reading()
    transport.close()
    assert not transport.is_reading()


# ------------------------------------------------------------------ BufferedProtocol


@pytest.mark.parametrize("chunk", [1, 1000, 65536])
async def test_buffered_protocol_receives_everything_through_get_buffer(
        nets: NetPair, chunk: int) -> None:
    _server, made = await serve(nets, lambda: BufferedRecorder(chunk=chunk))
    transport, _client = await connect(nets)
    server = await accepted(made)
    payload = os.urandom(300_000 if chunk > 1 else 3000)
    transport.write(payload)
    transport.write_eof()
    await within(server.eof)
    assert bytes(server.data) == payload
    assert isinstance(server, BufferedRecorder)
    assert all(h > 0 for h in server.sizehints)
    assert "data_received" not in server.calls


# ------------------------------------------------------------------ closing and errors


async def test_close_sends_everything_queued_then_connection_lost_none(
        make_nets: MakeNets) -> None:
    nets = make_nets(SMALL, SMALL)
    _server, made = await serve(nets, Recorder)
    transport, client = await connect(nets)
    server = await accepted(made)
    payload = os.urandom(500_000)
    transport.write(payload)
    assert transport.get_write_buffer_size() > 0
    transport.close()
    assert transport.is_closing()
    transport.write(b"dropped")  # after close: ignored
    await within(server.eof)
    assert bytes(server.data) == payload
    assert await within(client.lost) is None
    assert client.calls[-1] == "connection_lost"


async def test_abort_resets_the_peer_and_loses_the_connection_at_once(nets: NetPair) -> None:
    _server, made = await serve(nets, Recorder)
    transport, client = await connect(nets)
    server = await accepted(made)
    transport.write(b"x" * 100_000)
    transport.abort()
    assert transport.is_closing()
    assert transport.get_write_buffer_size() == 0
    assert await within(client.lost) is None
    exc = await within(server.lost)
    assert isinstance(exc, ConnectionResetError)
    assert exc.errno == errno.ECONNRESET
    assert not live_tcbs(nets.a) and not live_tcbs(nets.b)
    assert not nets.a.connections and not nets.b.connections


async def test_connection_lost_is_called_once_even_after_close_and_abort(
        nets: NetPair) -> None:
    _server, made = await serve(nets, Recorder)
    transport, client = await connect(nets)
    await accepted(made)
    transport.close()
    transport.abort()
    transport.close()
    await within(client.lost)
    await asyncio.sleep(0.05)
    assert client.calls.count("connection_lost") == 1


async def test_connect_to_a_closed_port_raises_connection_refused(nets: NetPair) -> None:
    with pytest.raises(ConnectionRefusedError) as info:
        await within(nets.a.create_connection(Recorder, B_IP, PORT + 1))
    assert info.value.errno == errno.ECONNREFUSED
    assert not live_tcbs(nets.a) and not nets.a.connections


async def test_connect_with_syn_retries_exhausted_raises_timeout(make_nets: MakeNets) -> None:
    nets = make_nets(TcpConfig(rto_initial=0.2, syn_retries=1))
    with pytest.raises(TimeoutError) as info:
        # 10.0.0.3 does not exist: nothing answers the SYNs.
        await within(nets.a.create_connection(Recorder, "10.0.0.3", PORT))
    assert info.value.errno == errno.ETIMEDOUT
    assert not live_tcbs(nets.a)


async def test_unreachable_destinations_raise_enetunreach(make_nets: MakeNets) -> None:
    nets = make_nets(routes_a=["10.0.0.0/24"])
    for host in ("192.0.2.1", "127.0.0.1", "0.0.0.0", "224.0.0.1", A_IP):
        with pytest.raises(OSError) as info:
            await within(nets.a.create_connection(Recorder, host, PORT))
        assert info.value.errno == errno.ENETUNREACH, host
    assert not nets.a.stack.tcbs


async def test_local_addr_binds_the_connection_and_conflicts_are_errors(
        nets: NetPair) -> None:
    await serve(nets, Recorder)
    transport, _ = await within(
        nets.a.create_connection(Recorder, B_IP, PORT, local_addr=(A_IP, 40123)))
    assert transport.get_extra_info("sockname") == (A_IP, 40123)
    with pytest.raises(OSError) as info:
        await nets.a.create_connection(Recorder, B_IP, PORT, local_addr=(A_IP, 40123))
    assert info.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as info:
        await nets.a.create_connection(Recorder, B_IP, PORT, local_addr=("10.0.0.9", 0))
    assert info.value.errno == errno.EADDRNOTAVAIL


async def test_peer_reset_mid_stream_loses_with_connection_reset(nets: NetPair) -> None:
    _server, made = await serve(nets, Recorder)
    transport, client = await connect(nets)
    server = await accepted(made)
    transport.write(b"some data")
    await until(lambda: server.data, "data at the server")
    assert server.transport is not None
    server.transport.abort()
    exc = await within(client.lost)
    assert isinstance(exc, ConnectionResetError)
    assert transport.is_closing()
    transport.write(b"into the void")  # dropped; asyncio's transports do not raise


async def test_protocol_error_in_data_received_aborts_the_connection(nets: NetPair) -> None:
    class Broken(Recorder):
        def data_received(self, data: bytes) -> None:
            raise RuntimeError("protocol bug")

    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        _server, made = await serve(nets, Broken)
        transport, client = await connect(nets)
        server = await accepted(made)
        transport.write(b"boom")
        exc = await within(server.lost)
        assert isinstance(exc, RuntimeError)
        assert isinstance(await within(client.lost), ConnectionResetError)
        assert any(isinstance(c.get("exception"), RuntimeError) for c in reported)
    finally:
        loop.set_exception_handler(None)


async def test_connection_lost_waits_for_data_of_a_paused_reader_before_a_reset(
        nets: NetPair) -> None:
    """What arrived before the reset is delivered on resume, then the error."""
    _server, made = await serve(nets, Recorder)
    transport, client = await connect(nets, Recorder(pause_on_connect=True))
    server = await accepted(made)
    assert server.transport is not None
    server.transport.write(b"before the reset")
    await until(lambda: transport.get_extra_info("tcb").recv_buffered == 16, "data held")
    server.transport.abort()
    await until(lambda: transport.get_extra_info("tcb").state is State.CLOSED, "the reset")
    await asyncio.sleep(0.02)
    assert not client.lost.done()
    transport.resume_reading()
    assert isinstance(await within(client.lost), ConnectionResetError)
    assert bytes(client.data) == b"before the reset"
    assert client.reads() == ["connection_made", "data", "connection_lost"]


async def test_tcp_info_reports_what_the_handshake_agreed(nets: NetPair) -> None:
    """get_extra_info("tcp_info"): the options both ends agreed, TCP-MD5 included
    (RFC 2385, keys set on both stacks for each other), and live estimates."""
    nets.a.stack.set_md5_key(B_IP, b"shared secret")
    nets.b.stack.set_md5_key(A_IP, b"shared secret")
    _server, made = await serve(nets, Recorder)
    transport, _client = await connect(nets)
    server = await accepted(made)
    assert server.transport is not None
    transport.write(b"x" * 10_000)
    await until(lambda: len(server.data) == 10_000, "the data at the server")
    for info in (transport.get_extra_info("tcp_info"),
                 server.transport.get_extra_info("tcp_info")):
        assert info["state"] == "ESTABLISHED"
        assert info["md5"] is True and info["sack"] is True
        assert info["timestamps"] is False  # a signature and SACK leave them no room
        assert info["payload_per_segment"] == info["mss"] - 20
        assert info["congestion_control"] == "cubic"
        assert info["srtt_ms"] is not None and info["cwnd"] > 0
    assert transport.get_extra_info("tcp_info") is not transport.get_extra_info("tcp_info")
    for st in (nets.a.stack, nets.b.stack):
        assert st.counters["tcp_md5_failure"] == st.counters["tcp_md5_missing"] == 0
