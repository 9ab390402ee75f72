"""The Discard Protocol (RFC 863) over a byte stream.

RFC 863, "TCP Based Discard Service": once a connection is established, any
data received is thrown away; no response is sent.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Final

from tcpstack.apps import CLIENT_ERRORS, StreamReaderLike, StreamWriterLike
from tcpstack.apps.limits import ConnectionGuard, IdleTimeout, ServiceLimits
from tcpstack.apps.protocols import DiscardProtocol
from tcpstack.counters import Counters

logger = logging.getLogger("tcpstack.discard")

CHUNK_SIZE: Final = 65536
"""Most bytes asked of the reader per read."""


class DiscardService:
    """Read and drop everything until EOF, then close (RFC 863).

    A connection silent for ``limits.idle_timeout`` is closed; limits that
    fire are counted in ``counters`` as ``discard_<reason>``.
    """

    def __init__(self, *, limits: ServiceLimits | None = None,
                 counters: Counter[str] | None = None) -> None:
        self.limits = limits if limits is not None else ServiceLimits()
        self.counters: Counter[str] = counters if counters is not None else Counters()

    def protocol(self) -> DiscardProtocol:
        """A new :class:`~tcpstack.apps.protocols.DiscardProtocol` with these limits and
        counters: the factory for ``create_server``, which the daemon uses (the
        same service without a task and streams per connection)."""
        return DiscardProtocol(self.limits, self.counters)

    async def __call__(self, reader: StreamReaderLike, writer: StreamWriterLike) -> None:
        """Discard one connection's input until EOF, a limit or a reset."""
        guard = ConnectionGuard("discard", writer, self.limits, self.counters)
        peer = writer.get_extra_info("peername")
        total = 0
        try:
            guard.start()
            while True:
                data = await guard.wait_input(reader.read(CHUNK_SIZE))
                if not data:
                    break
                total += len(data)
            logger.debug("discard %s: %d bytes discarded, peer sent EOF", peer, total)
        except IdleTimeout:
            logger.debug("discard %s: idle for %ss, closing", peer, self.limits.idle_timeout)
        except CLIENT_ERRORS as exc:
            logger.debug("discard %s: aborted after %d bytes: %r", peer, total, exc)
        finally:
            await guard.close()


discard: Final = DiscardService()
"""A :class:`DiscardService` with the default limits."""
