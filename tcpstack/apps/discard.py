"""The Discard Protocol (RFC 863) over a byte stream.

RFC 863, "TCP Based Discard Service": once a connection is established, any
data received is thrown away; no response is sent.
"""

from __future__ import annotations

import logging
from typing import Final

from tcpstack.apps import CLIENT_ERRORS, StreamReaderLike, StreamWriterLike, close_writer

logger = logging.getLogger("tcpstack.discard")

CHUNK_SIZE: Final = 65536
"""Most bytes asked of the reader per read."""


async def discard(reader: StreamReaderLike, writer: StreamWriterLike) -> None:
    """Read and drop everything until EOF, then close (RFC 863)."""
    peer = writer.get_extra_info("peername")
    total = 0
    try:
        while True:
            data = await reader.read(CHUNK_SIZE)
            if not data:
                break
            total += len(data)
        logger.debug("discard %s: %d bytes discarded, peer sent EOF", peer, total)
    except CLIENT_ERRORS as exc:
        logger.debug("discard %s: aborted after %d bytes: %r", peer, total, exc)
    finally:
        await close_writer(writer)
