"""Built-in application services, written as plain asyncio stream handlers.

* :class:`EchoService` (``echo``) -- the Echo Protocol (RFC 862): send back
  whatever arrives.
* :class:`DiscardService` (``discard``) -- the Discard Protocol (RFC 863):
  swallow whatever arrives.
* :class:`HttpService` -- a small HTTP/1.1 origin server (RFC 9110 semantics,
  RFC 9112 message syntax) with a root page, a ``/bytes/N`` generator and an
  optional static-file root.

Every service is an ``async def handler(reader, writer) -> None``. The
arguments only need the method subset described by :class:`StreamReaderLike`
and :class:`StreamWriterLike`, so the same handler runs under
:func:`asyncio.start_server` and over the project's own TCP streams. A
handler never lets client misbehaviour (resets, EOF in mid-request, overlong
lines, malformed requests) escape as an exception, and always closes its
writer before returning.

No peer can hold a connection for ever: each service takes
:class:`ServiceLimits` (idle, send and close timeouts, TCP keepalive), the HTTP
service also :class:`HttpLimits` (header and body timeouts, body size, requests
per connection); see :mod:`tcpstack.apps.limits`. Each service counts what it
refused or cut short in ``counters`` (a :class:`collections.Counter`, which
several services may share), keyed ``<service>_<reason>``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final, Protocol


class StreamReaderLike(Protocol):
    """The subset of :class:`asyncio.StreamReader` that the services use."""

    async def read(self, n: int, /) -> bytes:
        """Return up to ``n`` bytes; ``b""`` means EOF."""
        ...

    async def readline(self) -> bytes:
        """Return one line including its ``b"\\n"`` (or the rest of the data at EOF)."""
        ...

    async def readexactly(self, n: int, /) -> bytes:
        """Return exactly ``n`` bytes or raise :class:`asyncio.IncompleteReadError`."""
        ...

    async def readuntil(self, separator: bytes, /) -> bytes:
        """Return data up to and including ``separator``.

        Raises :class:`asyncio.IncompleteReadError` at EOF and
        :class:`asyncio.LimitOverrunError` when the buffer limit is hit.
        """
        ...

    def at_eof(self) -> bool:
        """True once the buffer is empty and EOF has been received."""
        ...


class TransportLike(Protocol):
    """The part of a writer's transport that the services use."""

    def abort(self) -> None:
        """Close at once, discarding queued data (TCP: send RST)."""
        ...


class StreamWriterLike(Protocol):
    """The subset of :class:`asyncio.StreamWriter` that the services use."""

    @property
    def transport(self) -> TransportLike:
        """The underlying transport (used to abort a connection)."""
        ...

    def write(self, data: bytes, /) -> None:
        """Queue ``data`` for sending."""
        ...

    async def drain(self) -> None:
        """Wait until the send buffer is below its high-water mark."""
        ...

    def write_eof(self) -> None:
        """Close the sending half (TCP FIN) after the queued data."""
        ...

    def can_write_eof(self) -> bool:
        """True if :meth:`write_eof` is supported."""
        ...

    def close(self) -> None:
        """Start closing the connection."""
        ...

    def is_closing(self) -> bool:
        """True once :meth:`close` has been called or the peer has gone."""
        ...

    async def wait_closed(self) -> None:
        """Wait until the connection is fully closed."""
        ...

    def get_extra_info(self, name: str, /) -> object:
        """Transport details, e.g. ``"peername"``."""
        ...


StreamHandler = Callable[[StreamReaderLike, StreamWriterLike], Awaitable[None]]
"""The shape of every service in this package."""

CLIENT_ERRORS: Final[tuple[type[Exception], ...]] = (
    OSError,  # ConnectionError (reset, broken pipe, aborted) and TimeoutError
    asyncio.IncompleteReadError,  # EOF in the middle of a readexactly/readuntil
    asyncio.LimitOverrunError,  # a readuntil separator not found within the buffer limit
)
"""Exceptions that mean "the peer misbehaved or went away", never a bug of ours."""


async def close_writer(writer: StreamWriterLike) -> None:
    """Close ``writer`` and wait for it, ignoring errors from a peer that already went away."""
    try:
        writer.close()
        await writer.wait_closed()
    except OSError:
        pass


# The services import the helpers above at run time, so they come after them.
from tcpstack.apps.discard import DiscardService, discard  # noqa: E402
from tcpstack.apps.echo import EchoService, echo  # noqa: E402
from tcpstack.apps.http import HttpService, pattern_bytes  # noqa: E402
from tcpstack.apps.limits import HttpLimits, Keepalive, ServiceLimits  # noqa: E402

__all__ = [
    "CLIENT_ERRORS",
    "DiscardService",
    "EchoService",
    "HttpLimits",
    "HttpService",
    "Keepalive",
    "ServiceLimits",
    "StreamHandler",
    "StreamReaderLike",
    "StreamWriterLike",
    "TransportLike",
    "close_writer",
    "discard",
    "echo",
    "pattern_bytes",
]
