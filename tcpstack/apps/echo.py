"""The Echo Protocol (RFC 862) over a byte stream.

RFC 862, "TCP Based Echo Service": once a connection is established, any data
received is sent back, until the calling user terminates the connection.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Final

from tcpstack.apps import CLIENT_ERRORS, StreamReaderLike, StreamWriterLike
from tcpstack.apps.limits import ConnectionGuard, IdleTimeout, ServiceLimits
from tcpstack.apps.protocols import EchoProtocol
from tcpstack.counters import Counters

logger = logging.getLogger("tcpstack.echo")

CHUNK_SIZE: Final = 65536
"""Most bytes asked of the reader per read."""


class EchoService:
    """Send back every byte received until EOF, then close (RFC 862).

    Each chunk is written and followed by a drain, so a peer that sends
    faster than it reads is throttled by TCP flow control instead of growing
    our send buffer without bound; a peer that stops reading altogether is
    reset after ``limits.send_timeout``. A connection silent for
    ``limits.idle_timeout`` is closed. Limits that fire are counted in
    ``counters`` as ``echo_<reason>`` (see
    :class:`~tcpstack.apps.limits.ConnectionGuard`).
    """

    def __init__(self, *, limits: ServiceLimits | None = None,
                 counters: Counter[str] | None = None) -> None:
        self.limits = limits if limits is not None else ServiceLimits()
        self.counters: Counter[str] = counters if counters is not None else Counters()

    def protocol(self) -> EchoProtocol:
        """A new :class:`~tcpstack.apps.protocols.EchoProtocol` with these limits and
        counters: the factory for ``create_server``, which the daemon uses (the
        same service without a task and streams per connection)."""
        return EchoProtocol(self.limits, self.counters)

    async def __call__(self, reader: StreamReaderLike, writer: StreamWriterLike) -> None:
        """Echo one connection until EOF, a limit or a reset."""
        guard = ConnectionGuard("echo", writer, self.limits, self.counters)
        peer = writer.get_extra_info("peername")
        total = 0
        try:
            guard.start()
            while True:
                data = await guard.wait_input(reader.read(CHUNK_SIZE))
                if not data:
                    break
                writer.write(data)
                await guard.drain()
                total += len(data)
            logger.debug("echo %s: %d bytes echoed, peer sent EOF", peer, total)
        except IdleTimeout:
            logger.debug("echo %s: idle for %ss, closing", peer, self.limits.idle_timeout)
        except CLIENT_ERRORS as exc:
            logger.debug("echo %s: aborted after %d bytes: %r", peer, total, exc)
        finally:
            await guard.close()


echo: Final = EchoService()
"""An :class:`EchoService` with the default limits."""
