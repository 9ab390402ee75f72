"""Cancelling any wait on a tcpstack connection leaves it intact, or leaves nothing.

Every await point of the API is cancelled: a reader waiting for data, a writer
waiting in ``drain()``, a connect at each step of the handshake (one loop
iteration apart), a TLS handshake (see test_aio_tls.py), ``serve_forever`` while a
client is connecting. Afterwards a connection that survived still carries every
byte in order, and a connection that did not leaves no TCB behind on either stack.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from aio_helpers import B_IP, NetPair, live_tcbs, until, within

from tcpstack.aio import TcpStreamWriter, open_connection, start_server
from tcpstack.tcp.config import TcpConfig

PORT = 7200


@pytest.fixture
async def nets() -> AsyncIterator[NetPair]:
    # Small buffers that autotuning may not grow far: what the peer's reader and
    # TCB and our TCB can hold stays well below the 400 kB the drain tests write.
    pair = NetPair(TcpConfig(snd_buf=16 * 1024, snd_buf_max=32 * 1024),
                   TcpConfig(rcv_buf=16 * 1024, rcv_buf_max=32 * 1024))
    yield pair
    await asyncio.wait_for(pair.aclose(), 5.0)


class Peer:
    """A server on B that keeps each accepted stream pair for the test to drive."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[tuple[asyncio.StreamReader, TcpStreamWriter]] = \
            asyncio.Queue()

    def __call__(self, reader: asyncio.StreamReader, writer: TcpStreamWriter) -> None:
        self.accepted.put_nowait((reader, writer))

    async def next(self) -> tuple[asyncio.StreamReader, TcpStreamWriter]:
        return await within(self.accepted.get())


async def connected(nets: NetPair) -> tuple[asyncio.StreamReader, TcpStreamWriter,
                                             asyncio.StreamReader, TcpStreamWriter]:
    peer = Peer()
    await start_server(peer, port=PORT, network=nets.b)
    reader, writer = await within(open_connection(B_IP, PORT, network=nets.a))
    s_reader, s_writer = await peer.next()
    return reader, writer, s_reader, s_writer


@pytest.mark.parametrize("how", ["read", "readexactly", "readline", "readuntil"])
async def test_cancelled_read_loses_no_data(nets: NetPair, how: str) -> None:
    reader, _writer, _s_reader, s_writer = await connected(nets)
    calls = {
        "read": lambda: reader.read(100),
        "readexactly": lambda: reader.readexactly(10),
        "readline": lambda: reader.readline(),
        "readuntil": lambda: reader.readuntil(b"END"),
    }
    s_writer.write(b"part")  # less than any of the reads wants (but read: takes it)
    if how == "read":
        assert await within(reader.read(100)) == b"part"
        s_writer.write(b"")
    waiting = asyncio.ensure_future(calls[how]())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    s_writer.write(b"-rest\nof it END")
    await within(s_writer.drain())
    expected = b"-rest\nof it END" if how == "read" else b"part-rest\nof it END"
    assert await within(reader.readexactly(len(expected))) == expected


async def test_cancelled_drain_keeps_the_connection_and_its_bytes(nets: NetPair) -> None:
    _reader, writer, s_reader, _s_writer = await connected(nets)
    writer.transport.set_write_buffer_limits(high=4096)
    first = os.urandom(400_000)  # more than the peer's reader and TCB take
    writer.write(first)
    draining = asyncio.ensure_future(writer.drain())
    await asyncio.sleep(0.05)
    assert not draining.done(), "drain returned while the peer reads nothing"
    draining.cancel()
    with pytest.raises(asyncio.CancelledError):
        await draining
    second = os.urandom(50_000)
    writer.write(second)
    reading = asyncio.ensure_future(s_reader.readexactly(len(first) + len(second)))
    await within(writer.drain())
    assert await within(reading) == first + second


async def test_concurrent_drains_all_return_when_writing_resumes(nets: NetPair) -> None:
    """Several tasks waiting in drain() on one writer all wake (CPython gh-74116)."""
    _reader, writer, s_reader, _s_writer = await connected(nets)
    writer.transport.set_write_buffer_limits(high=4096)
    payload = os.urandom(400_000)  # more than the peer's reader and TCB take
    writer.write(payload)
    drains = [asyncio.ensure_future(writer.drain()) for _ in range(10)]
    await asyncio.sleep(0.02)
    assert not any(d.done() for d in drains)
    assert await within(s_reader.readexactly(len(payload))) == payload
    await within(asyncio.gather(*drains))


async def test_connect_cancelled_at_every_step_leaves_no_connection(nets: NetPair) -> None:
    async def handler(reader: asyncio.StreamReader, writer: TcpStreamWriter) -> None:
        await reader.read()
        writer.close()

    await start_server(handler, port=PORT, network=nets.b)
    outcomes = set()
    for steps in range(40):
        attempt = asyncio.ensure_future(open_connection(B_IP, PORT, network=nets.a))
        for _ in range(steps):
            await asyncio.sleep(0)
        attempt.cancel()
        try:
            _reader, writer = await attempt
        except asyncio.CancelledError:
            outcomes.add("cancelled")
        else:
            outcomes.add("connected")
            writer.close()
        await until(lambda: not live_tcbs(nets.a) and not live_tcbs(nets.b),
                    f"no live connection after cancelling at step {steps}")
        assert not nets.a.connections and not nets.b.connections
    # Both a cancelled handshake and a completed one were seen.
    assert outcomes == {"cancelled", "connected"}


async def test_wait_for_timeout_on_connect_to_a_silent_host_leaves_no_tcb(
        nets: NetPair) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(open_connection("10.0.0.3", PORT, network=nets.a), 0.1)
    assert not nets.a.stack.tcbs
    assert not nets.a.connections


async def test_cancelled_serve_forever_closes_the_server_and_refuses(nets: NetPair) -> None:
    server = await start_server(Peer(), port=PORT, network=nets.b, start_serving=False)
    serving = asyncio.ensure_future(server.serve_forever())
    await until(server.is_serving, "serving")
    attempt = asyncio.ensure_future(open_connection(B_IP, PORT, network=nets.a))
    await asyncio.sleep(0)
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert not server.is_serving()
    try:
        _reader, writer = await within(attempt)
    except ConnectionError:
        pass  # the SYN came after the listener was gone (RST)
    else:
        writer.close()
        await within(writer.wait_closed())
    await until(lambda: not live_tcbs(nets.a) and not live_tcbs(nets.b), "no live connection")
    with pytest.raises(ConnectionRefusedError):
        await within(open_connection(B_IP, PORT, network=nets.a))


async def test_cancelled_wait_closed_does_not_stop_the_close(nets: NetPair) -> None:
    _reader, writer, s_reader, _s_writer = await connected(nets)
    writer.write(b"bye")
    writer.close()
    waiting = asyncio.ensure_future(writer.wait_closed())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await within(s_reader.read()) == b"bye"
    await within(writer.wait_closed())
