"""The echo (RFC 862) and discard (RFC 863) services, over loopback asyncio streams."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct

import pytest
from app_harness import FakeWriter, ResettingReader, connection, reader_with, serving

from tcpstack.apps import StreamReaderLike, StreamWriterLike, discard, echo


def test_fakes_satisfy_the_stream_protocols() -> None:
    reader: StreamReaderLike = ResettingReader([])
    writer: StreamWriterLike = FakeWriter()
    assert reader.at_eof() is False
    assert writer.can_write_eof() is True


# -- echo -----------------------------------------------------------------


async def test_echo_returns_what_was_sent() -> None:
    payload = b"hello, echo\r\n" * 10
    async with serving(echo) as port, connection(port) as (reader, writer):
        writer.write(payload)
        writer.write_eof()
        received = await asyncio.wait_for(reader.read(), 5)
    assert received == payload


async def test_echo_answers_each_message_before_eof() -> None:
    async with serving(echo) as port, connection(port) as (reader, writer):
        for message in (b"ping", b"second message", b"\x00\xff binary"):
            writer.write(message)
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(len(message)), 5) == message
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_echo_large_transfer_round_trips_intact_under_back_pressure() -> None:
    payload = os.urandom(8 * 1024 * 1024)

    async def send(writer: asyncio.StreamWriter) -> None:
        for start in range(0, len(payload), 1 << 20):
            writer.write(payload[start : start + (1 << 20)])
            await writer.drain()
        writer.write_eof()

    async with serving(echo) as port, connection(port) as (reader, writer):
        sender = asyncio.create_task(send(writer))
        digest = hashlib.sha256()
        total = 0
        while chunk := await asyncio.wait_for(reader.read(1 << 16), 10):
            digest.update(chunk)
            total += len(chunk)
        await sender
    assert total == len(payload)
    assert digest.digest() == hashlib.sha256(payload).digest()


async def test_echo_survives_a_client_reset() -> None:
    async with serving(echo) as port:
        sock = socket.create_connection(("127.0.0.1", port))
        try:
            sock.sendall(b"some data before the reset")
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            sock.close()
        await asyncio.sleep(0.05)
    # serving() asserts that the handler returned without raising and closed its writer.


async def test_echo_swallows_reset_and_closes_writer() -> None:
    writer = FakeWriter(fail_wait_closed=True)
    await echo(ResettingReader([b"abc", b"def"]), writer)
    assert bytes(writer.written) == b"abcdef"
    assert writer.closed and writer.waited


# -- discard --------------------------------------------------------------


async def test_discard_reads_to_eof() -> None:
    payload = os.urandom(2 * 1024 * 1024)
    async with serving(discard) as port, connection(port) as (reader, writer):
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        # Had the server closed with data unread, the kernel would reset the
        # connection and this read would raise instead of seeing a clean EOF.
        received = await asyncio.wait_for(reader.read(), 5)
    assert received == b""


async def test_discard_keeps_connection_open_until_eof() -> None:
    async with serving(discard) as port, connection(port) as (reader, writer):
        writer.write(b"x" * 1000)
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.2)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_discard_consumes_everything_and_writes_nothing() -> None:
    reader = reader_with(b"a" * 200_000)
    writer = FakeWriter()
    await discard(reader, writer)
    assert reader.at_eof()
    assert writer.written == b""
    assert writer.closed and writer.waited


async def test_discard_swallows_reset_and_closes_writer() -> None:
    writer = FakeWriter(fail_wait_closed=True)
    await discard(ResettingReader([b"partial"]), writer)
    assert writer.written == b""
    assert writer.closed and writer.waited
