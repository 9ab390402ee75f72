"""Scenarios of CPython's own asyncio stream tests (Lib/test/test_asyncio/test_streams.py),
written afresh to run over tcpstack instead of kernel sockets.

Each test names the CPython test whose scenario it replays. Where CPython uses a
small HTTP test server, a stream handler on network B plays it: it answers
``HTTP/1.0 200 OK`` and ``Test message``, then closes. The tests of
``StreamReader`` fed by hand are not repeated: the reader *is* asyncio's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aio_helpers import B_IP, NetPair, live_tcbs, until, within

from tcpstack.aio import Server, TcpStreamWriter, open_connection, start_server

PORT = 7300
RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nTest message"


@pytest.fixture
async def nets() -> AsyncIterator[NetPair]:
    pair = NetPair()
    yield pair
    await asyncio.wait_for(pair.aclose(), 5.0)


@pytest.fixture
def messages() -> list[dict[str, Any]]:
    """What reaches the loop's exception handler during the test."""
    found: list[dict[str, Any]] = []
    loop = asyncio.get_event_loop()
    loop.set_exception_handler(lambda _loop, context: found.append(context))
    yield found  # type: ignore[misc]
    loop.set_exception_handler(None)


async def http_server(nets: NetPair) -> Server:
    async def handle(reader: asyncio.StreamReader, writer: TcpStreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            pass  # the client left without a request
        else:
            writer.write(RESPONSE)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    return await start_server(handle, B_IP, PORT, network=nets.b)


async def test_open_connection(nets: NetPair, messages: list[dict[str, Any]]) -> None:
    """test_open_connection / test_async_writer_api."""
    await http_server(nets)
    reader, writer = await within(open_connection(B_IP, PORT, network=nets.a))
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    assert await within(reader.readline()) == b"HTTP/1.0 200 OK\r\n"
    data = await within(reader.read())
    assert data.endswith(b"\r\n\r\nTest message")
    writer.close()
    await within(writer.wait_closed())
    assert messages == []


async def test_open_connection_error(nets: NetPair) -> None:
    """test_open_connection_error: nothing listens."""
    with pytest.raises(ConnectionRefusedError):
        await within(open_connection(B_IP, PORT, network=nets.a))


async def test_start_server(nets: NetPair) -> None:
    """test_start_server: a line-echo server, several clients, then close."""
    async def handle_client(reader: asyncio.StreamReader, writer: TcpStreamWriter) -> None:
        data = await reader.readline()
        writer.write(data)
        await writer.drain()
        writer.close()

    server = await start_server(handle_client, B_IP, 0, network=nets.b)
    (sock,) = server.sockets
    host, port = sock.getsockname()
    assert host == B_IP and port > 0

    async def client(msg: bytes) -> bytes:
        reader, writer = await open_connection(host, port, network=nets.a)
        writer.write(msg)
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return line

    got = await within(asyncio.gather(*(client(f"hello {i}\n".encode()) for i in range(5))))
    assert got == [f"hello {i}\n".encode() for i in range(5)]
    server.close()
    await within(server.wait_closed())
    assert server.sockets == ()


async def test_drain_raises(nets: NetPair, messages: list[dict[str, Any]]) -> None:
    """test_drain_raises (bpo-25441): the server closes at once; a write/drain loop
    must end with an error instead of spinning for ever."""
    async def close_at_once(_reader: asyncio.StreamReader, writer: TcpStreamWriter) -> None:
        writer.close()

    await start_server(close_at_once, B_IP, PORT, network=nets.b)
    _reader, writer = await within(open_connection(B_IP, PORT, network=nets.a))

    # drain() yields only when the transport pauses writing, so the loop sees the
    # reset once it has written more than the TCB's send space and the transport's
    # high mark (the same size by default): a few hundred KiB here. CPython writes
    # 4 bytes at a time, into a kernel that reports the reset from send() itself.
    async def keep_writing() -> None:
        for _ in range(10_000):
            writer.write(b"foo\n" * 256)
            await writer.drain()

    with pytest.raises((ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        await within(keep_writing())
    assert messages == []


async def test_wait_closed_on_close(nets: NetPair) -> None:
    await http_server(nets)
    reader, writer = await within(open_connection(B_IP, PORT, network=nets.a))
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    assert await within(reader.readline()) == b"HTTP/1.0 200 OK\r\n"
    assert (await within(reader.read())).endswith(b"Test message")
    assert not writer.is_closing()
    writer.close()
    assert writer.is_closing()
    await within(writer.wait_closed())


async def test_wait_closed_on_close_with_unread_data(nets: NetPair) -> None:
    await http_server(nets)
    reader, writer = await within(open_connection(B_IP, PORT, network=nets.a))
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    assert await within(reader.readline()) == b"HTTP/1.0 200 OK\r\n"
    writer.close()  # the rest of the response is never read
    await within(writer.wait_closed())
    await until(lambda: not live_tcbs(nets.a), "the connection gone")


async def test_async_writer_api_exception_after_close(
        nets: NetPair, messages: list[dict[str, Any]]) -> None:
    await http_server(nets)
    reader, writer = await within(open_connection(B_IP, PORT, network=nets.a))
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    assert await within(reader.readline()) == b"HTTP/1.0 200 OK\r\n"
    await within(reader.read())
    writer.close()
    with pytest.raises(ConnectionResetError):
        writer.write(b"data")
        await within(writer.drain())
    assert messages == []


async def test_eof_feed_when_closing_writer(nets: NetPair,
                                            messages: list[dict[str, Any]]) -> None:
    """bpo-35065: closing the writer feeds EOF to the reader."""
    await http_server(nets)
    reader, writer = await within(open_connection(B_IP, PORT, network=nets.a))
    writer.close()
    await within(writer.wait_closed())
    assert reader.at_eof()
    assert await within(reader.read()) == b""
    assert messages == []


async def test_unhandled_exceptions(nets: NetPair, messages: list[dict[str, Any]]) -> None:
    """test_unhandled_exceptions: an exception escaping client_connected_cb goes to the
    loop's exception handler, and the connection is closed."""
    async def handler(_reader: asyncio.StreamReader, _writer: TcpStreamWriter) -> None:
        raise ZeroDivisionError

    await start_server(handler, B_IP, PORT, network=nets.b)
    reader, writer = await within(open_connection(B_IP, PORT, network=nets.a))
    assert await within(reader.read()) == b""  # closed by the server
    writer.close()
    await until(lambda: messages, "the exception handler")
    assert messages[0]["message"] == "Unhandled exception in client_connected_cb"
    assert isinstance(messages[0]["exception"], ZeroDivisionError)


async def test_read_limit_and_readline_limit_over_the_network(nets: NetPair) -> None:
    """test_readline_limit / test_readuntil_limit_found_sep over a connection."""
    async def send(_reader: asyncio.StreamReader, writer: TcpStreamWriter) -> None:
        writer.write(b"1" * 10 + b"\n" + b"2" * 20 + b"\n" + b"ok\n")
        await writer.drain()
        writer.close()

    await start_server(send, B_IP, PORT, network=nets.b)
    reader, _writer = await within(open_connection(B_IP, PORT, network=nets.a, limit=15))
    assert await within(reader.readline()) == b"1" * 10 + b"\n"
    await until(lambda: reader.at_eof() or len(getattr(reader, "_buffer", b"")) >= 24,
                "the rest buffered")
    with pytest.raises(ValueError):
        await within(reader.readline())
    assert await within(reader.readline()) == b"ok\n"
