"""Server parity with ``asyncio.Server``: serving, closing, clients, sockets, binding.

Network B has two addresses here (10.0.0.2 and 10.0.0.3) so that binding to one
address, to several and to all of them can be told apart from the client side.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator

import pytest
from aio_helpers import B_IP, NetPair, Recorder, echo, until, within

from tcpstack.aio import Server, TcpStreamWriter, open_connection, start_server
from tcpstack.tcp.state import State

PORT = 7400
C_IP = "10.0.0.3"


@pytest.fixture
async def nets() -> AsyncIterator[NetPair]:
    pair = NetPair(more_b=[C_IP])
    yield pair
    await asyncio.wait_for(pair.aclose(), 5.0)


async def round_trip(nets: NetPair, host: str, port: int = PORT) -> bytes:
    reader, writer = await within(open_connection(host, port, network=nets.a))
    writer.write(b"ping")
    data = await within(reader.readexactly(4))
    writer.close()
    return data


async def test_sockets_report_the_bound_addresses(nets: NetPair) -> None:
    everywhere = await start_server(echo, None, PORT, network=nets.b)
    assert [s.getsockname() for s in everywhere.sockets] == [("0.0.0.0", PORT)]
    two = await start_server(echo, [C_IP, B_IP], PORT + 1, network=nets.b)
    assert sorted(s.getsockname() for s in two.sockets) == [(B_IP, PORT + 1),
                                                            (C_IP, PORT + 1)]
    free = await start_server(echo, B_IP, 0, network=nets.b)
    ((host, port),) = [s.getsockname() for s in free.sockets]
    assert host == B_IP and 1024 <= port <= 65535
    assert await round_trip(nets, B_IP, port) == b"ping"
    assert free.get_loop() is asyncio.get_running_loop()
    free.close()
    assert free.sockets == ()


async def test_a_server_bound_to_one_address_refuses_the_others(nets: NetPair) -> None:
    await start_server(echo, C_IP, PORT, network=nets.b)
    assert await round_trip(nets, C_IP) == b"ping"
    with pytest.raises(ConnectionRefusedError):
        await within(open_connection(B_IP, PORT, network=nets.a))


async def test_servers_on_different_addresses_share_a_port(nets: NetPair) -> None:
    seen: list[str] = []

    def tagging(tag: str):  # type: ignore[no-untyped-def]
        async def handler(reader: asyncio.StreamReader, writer: TcpStreamWriter) -> None:
            seen.append(tag)
            await echo(reader, writer)
        return handler

    await start_server(tagging("b"), B_IP, PORT, network=nets.b)
    await start_server(tagging("c"), C_IP, PORT, network=nets.b)
    assert await round_trip(nets, C_IP) == b"ping"
    assert await round_trip(nets, B_IP) == b"ping"
    assert seen == ["c", "b"]


async def test_overlapping_bindings_raise_eaddrinuse(nets: NetPair) -> None:
    await start_server(echo, B_IP, PORT, network=nets.b)
    for host in (B_IP, None, [C_IP, B_IP]):
        with pytest.raises(OSError) as info:
            await start_server(echo, host, PORT, network=nets.b)
        assert info.value.errno == errno.EADDRINUSE
    await start_server(echo, None, PORT + 1, network=nets.b)
    with pytest.raises(OSError) as info:
        await start_server(echo, C_IP, PORT + 1, network=nets.b)
    assert info.value.errno == errno.EADDRINUSE


async def test_binding_an_address_the_stack_does_not_have_fails(nets: NetPair) -> None:
    for host in ("10.9.9.9", "localhost"):
        with pytest.raises(OSError) as info:
            await start_server(echo, host, PORT, network=nets.b)
        assert info.value.errno == errno.EADDRNOTAVAIL


async def test_restart_on_a_port_with_time_wait_connections(nets: NetPair) -> None:
    """The server closes first, so its side of the connection lingers in TIME-WAIT;
    a new server may take the port at once (SO_REUSEADDR, asyncio's default), but
    not with reuse_address=False (as Linux without the option)."""
    async def close_first(reader: asyncio.StreamReader, writer: TcpStreamWriter) -> None:
        await reader.readexactly(4)
        writer.write(b"pong")
        writer.close()

    server = await start_server(close_first, B_IP, PORT, network=nets.b)
    reader, writer = await within(open_connection(B_IP, PORT, network=nets.a))
    writer.write(b"ping")
    assert await within(reader.read()) == b"pong"
    writer.close()
    await within(writer.wait_closed())
    await until(lambda: any(t.state is State.TIME_WAIT for t in nets.b.stack.tcbs.values()),
                "TIME-WAIT on the server side")
    server.close()
    await within(server.wait_closed())

    with pytest.raises(OSError) as info:
        await start_server(echo, B_IP, PORT, network=nets.b, reuse_address=False)
    assert info.value.errno == errno.EADDRINUSE
    restarted = await start_server(echo, B_IP, PORT, network=nets.b)
    assert restarted.is_serving()
    assert await round_trip(nets, B_IP) == b"ping"


async def test_start_serving_false_refuses_until_start_serving(nets: NetPair) -> None:
    server = await start_server(echo, B_IP, PORT, network=nets.b, start_serving=False)
    assert not server.is_serving()
    with pytest.raises(ConnectionRefusedError):
        await within(open_connection(B_IP, PORT, network=nets.a))
    # The port is taken all the same.
    with pytest.raises(OSError):
        await start_server(echo, B_IP, PORT, network=nets.b)
    await server.start_serving()
    await server.start_serving()  # idempotent
    assert server.is_serving()
    assert await round_trip(nets, B_IP) == b"ping"


async def test_listen_starts_serving_without_yielding_to_the_loop(nets: NetPair) -> None:
    """Server.listen: several servers made to listen one after another, with no
    packet read in between (the daemon's start-up: SYNs already queued must not meet
    a port that is not listening yet)."""
    first = await start_server(echo, B_IP, PORT, network=nets.b, start_serving=False)
    second = await start_server(echo, B_IP, PORT + 1, network=nets.b, start_serving=False)
    reads = nets.b.stack.counters["ip_received"]
    first.listen()
    second.listen()
    first.listen()  # idempotent
    assert first.is_serving() and second.is_serving()
    assert {PORT, PORT + 1} <= set(nets.b.stack.listeners)
    assert nets.b.stack.counters["ip_received"] == reads
    assert await round_trip(nets, B_IP) == b"ping"
    second.close()
    with pytest.raises(RuntimeError):
        second.listen()


async def test_serve_forever_serves_until_close_and_refuses_a_second_caller(
        nets: NetPair) -> None:
    server = await start_server(echo, B_IP, PORT, network=nets.b, start_serving=False)
    forever = asyncio.ensure_future(server.serve_forever())
    await until(server.is_serving, "serving")
    with pytest.raises(RuntimeError):
        await server.serve_forever()
    assert await round_trip(nets, B_IP) == b"ping"
    server.close()
    with pytest.raises(asyncio.CancelledError):
        await within(forever)
    with pytest.raises(RuntimeError):
        await server.serve_forever()
    with pytest.raises(RuntimeError):
        await server.start_serving()


async def test_close_clients_and_abort_clients(nets: NetPair) -> None:
    made: list[Recorder] = []

    def factory() -> Recorder:
        made.append(Recorder())
        return made[-1]

    server = await nets.b.create_server(factory, B_IP, PORT)
    clients = [Recorder(keep_open=None) for _ in range(4)]  # close on the server's FIN
    for c in clients:
        await within(nets.a.create_connection(lambda c=c: c, B_IP, PORT))  # type: ignore[misc]
    await until(lambda: len(server.transports) == 4, "four accepted")

    first_two = list(server.transports)[:2]
    for transport in first_two:
        transport.abort()
    await until(lambda: len(server.transports) == 2, "two left")
    server.close_clients()
    results = await within(asyncio.gather(*(c.lost for c in clients)))
    assert sorted(map(type, results), key=str) == sorted(
        [ConnectionResetError, ConnectionResetError, type(None), type(None)], key=str)

    # abort_clients resets them all.
    more = [Recorder() for _ in range(2)]
    for c in more:
        await within(nets.a.create_connection(lambda c=c: c, B_IP, PORT))  # type: ignore[misc]
    await until(lambda: len(server.transports) == 2, "two more accepted")
    server.abort_clients()
    for c in more:
        assert isinstance(await within(c.lost), ConnectionResetError)


async def test_wait_closed_waits_for_close_and_every_connection(nets: NetPair) -> None:
    server = await start_server(echo, B_IP, PORT, network=nets.b)
    reader, writer = await within(open_connection(B_IP, PORT, network=nets.a))
    waiting = asyncio.ensure_future(server.wait_closed())
    await asyncio.sleep(0.02)
    assert not waiting.done(), "wait_closed returned before close()"
    server.close()
    await asyncio.sleep(0.02)
    assert not waiting.done(), "wait_closed returned with a connection open"
    writer.close()
    await within(waiting)
    assert await within(reader.read()) == b""


async def test_async_with_closes_the_server(nets: NetPair) -> None:
    async with await start_server(echo, B_IP, PORT, network=nets.b) as server:
        assert isinstance(server, Server) and server.is_serving()
        assert await round_trip(nets, B_IP) == b"ping"
    assert not server.is_serving()
    with pytest.raises(ConnectionRefusedError):
        await within(open_connection(B_IP, PORT, network=nets.a))
