"""Shared harness for the tests of the built-in services (``tcpstack.apps``).

This is a helper module, not a test file. It offers two ways to drive a handler:

* over real loopback sockets: :func:`serving` runs a handler under
  :func:`asyncio.start_server` and, when the block ends, checks that every call
  returned without an exception and closed its writer; :func:`connection` opens
  a client connection to it;
* without sockets: :class:`FakeWriter` records what a handler does with its
  writer (and can refuse to drain or to finish closing, like a peer that never
  reads); :class:`ResettingReader` hands out some chunks and then fails like a
  reset connection; :func:`reader_with` is an ``asyncio.StreamReader`` holding
  given bytes and then EOF.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tcpstack.apps import StreamHandler

HANDLER_EXIT_TIMEOUT = 10.0
"""Seconds every handler gets to return once its test is over (generous: loaded CI)."""


class Tracked:
    """Wraps a handler to record its tasks and whether it closed its writer."""

    def __init__(self, handler: StreamHandler) -> None:
        self._handler = handler
        self.tasks: list[asyncio.Task[object]] = []
        self.unclosed = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        await self._handler(reader, writer)
        if not writer.is_closing():
            self.unclosed += 1


@contextlib.asynccontextmanager
async def serving(handler: StreamHandler) -> AsyncIterator[int]:
    """Run ``handler`` on a loopback port; on exit check every call ended cleanly."""
    tracked = Tracked(handler)
    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
    if tracked.tasks:
        done, pending = await asyncio.wait(tracked.tasks, timeout=HANDLER_EXIT_TIMEOUT)
        assert not pending, "a handler never returned"
        for task in done:
            assert task.exception() is None, "an exception escaped the handler"
    assert tracked.unclosed == 0, "a handler returned without closing its writer"


@contextlib.asynccontextmanager
async def connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A loopback client connection to ``port``, closed when the block ends."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class FakeTransport:
    """The ``transport`` of a :class:`FakeWriter`: records an abort (RST)."""

    def __init__(self, writer: FakeWriter) -> None:
        self._writer = writer

    def abort(self) -> None:
        self._writer.aborted = True
        self._writer.closed = True
        self._writer.unblock()


class FakeWriter:
    """A ``StreamWriterLike`` that records what a handler does with it.

    ``stuck_drain``: every ``drain()`` waits until the writer is aborted, like
    a peer that never reads. ``stuck_close``: ``wait_closed()`` waits until an
    abort, like a peer that never acknowledges our FIN. ``fail_wait_closed``:
    ``wait_closed()`` raises as if the peer had reset the connection.
    """

    def __init__(
        self,
        *,
        fail_wait_closed: bool = False,
        stuck_drain: bool = False,
        stuck_close: bool = False,
        fail_drain: BaseException | None = None,
    ) -> None:
        self.writes: list[bytes] = []
        self.drains = 0
        self.closed = False
        self.waited = False
        self.aborted = False
        self.eof_written = False
        self.sockopts: list[tuple[int, int, int]] = []
        self.transport = FakeTransport(self)
        self._fail_wait_closed = fail_wait_closed
        self._stuck_drain = stuck_drain
        self._stuck_close = stuck_close
        self._fail_drain = fail_drain
        self._released = asyncio.Event()

    @property
    def written(self) -> bytes:
        """Everything written, in order."""
        return b"".join(self.writes)

    def unblock(self) -> None:
        self._released.set()

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    async def drain(self) -> None:
        self.drains += 1
        if self._fail_drain is not None:
            raise self._fail_drain
        if self._stuck_drain and not self.aborted:
            await self._released.wait()
        if self.aborted:
            raise ConnectionResetError("aborted")

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    async def wait_closed(self) -> None:
        self.waited = True
        if self._stuck_close and not self.aborted:
            await self._released.wait()
        if self._fail_wait_closed:
            raise ConnectionResetError("peer reset")

    def get_extra_info(self, name: str) -> object:
        if name == "peername":
            return ("192.0.2.7", 4242)
        if name == "socket":
            return FakeSocket(self)
        return None


class FakeSocket:
    """What ``get_extra_info("socket")`` returns for a :class:`FakeWriter`."""

    def __init__(self, writer: FakeWriter) -> None:
        self._writer = writer

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self._writer.sockopts.append((level, option, value))


class ResettingReader:
    """A ``StreamReaderLike`` that hands out some chunks, then fails as on a TCP reset."""

    def __init__(self, chunks: list[bytes], exc: Exception | None = None) -> None:
        self._chunks = list(chunks)
        self._exc = exc or ConnectionResetError("peer reset")

    async def read(self, n: int) -> bytes:
        if self._chunks:
            return self._chunks.pop(0)
        raise self._exc

    async def readline(self) -> bytes:
        raise self._exc

    async def readexactly(self, n: int) -> bytes:
        raise self._exc

    async def readuntil(self, separator: bytes) -> bytes:
        raise self._exc

    def at_eof(self) -> bool:
        return False


class SilentReader:
    """A ``StreamReaderLike`` whose peer never sends anything (and never closes)."""

    async def _forever(self) -> bytes:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def read(self, n: int) -> bytes:
        return await self._forever()

    async def readline(self) -> bytes:
        return await self._forever()

    async def readexactly(self, n: int) -> bytes:
        return await self._forever()

    async def readuntil(self, separator: bytes) -> bytes:
        return await self._forever()

    def at_eof(self) -> bool:
        return False


def reader_with(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    """An ``asyncio.StreamReader`` holding ``data`` (then EOF unless ``eof`` is False)."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


# -- an HTTP/1.1 client's view ----------------------------------------------


@dataclass
class Response:
    """One parsed HTTP/1.1 response."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def length(self) -> int:
        return int(self.headers["content-length"])


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, _reason = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"duplicate header {name}"
        headers[name.lower()] = value.strip()
    return int(status), headers


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Read one status line and header section."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return _parse_head(head[:-4])


async def read_response(reader: asyncio.StreamReader, *, head_only: bool = False) -> Response:
    """Read one response (its body by ``Content-Length``, none if ``head_only``)."""
    status, headers = await read_head(reader)
    length = int(headers["content-length"])
    body = b"" if head_only else await asyncio.wait_for(reader.readexactly(length), 10)
    return Response(status, headers, body)


def parse_responses(data: bytes, *, allow_head: bool = False) -> list[Response]:
    """Split what a handler wrote into responses; fails on anything malformed.

    Interim ``100 Continue`` responses are skipped; bodies are framed by
    ``Content-Length``. With ``allow_head`` a response directly followed by
    the next status line (or by nothing) is taken as an answer to HEAD,
    which announces a length but has no body (none of the service's bodies
    starts with a status line).
    """
    responses: list[Response] = []
    rest = data
    while rest:
        end = rest.find(b"\r\n\r\n")
        assert end >= 0, f"incomplete response head: {rest[:200]!r}"
        status, headers = _parse_head(rest[:end])
        rest = rest[end + 4 :]
        if status == 100:
            continue
        length = int(headers["content-length"])
        if allow_head and (not rest or rest.startswith(b"HTTP/1.1 ")):
            length = 0
        assert len(rest) >= length, "response body shorter than its Content-Length"
        responses.append(Response(status, headers, rest[:length]))
        rest = rest[length:]
    return responses


async def assert_closed_by_server(reader: asyncio.StreamReader) -> None:
    """The server sends nothing more and closes (FIN)."""
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def exchange(port: int, raw: bytes, *, head_only: bool = False) -> Response:
    """Send one raw request, return its response (the connection is then dropped)."""
    async with connection(port) as (reader, writer):
        writer.write(raw)
        await writer.drain()
        return await read_response(reader, head_only=head_only)


def get(path: str, *extra: str, method: str = "GET", version: str = "HTTP/1.1") -> bytes:
    """A request head with ``Host: test`` and the ``extra`` header lines."""
    lines = [f"{method} {path} {version}", "Host: test", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
