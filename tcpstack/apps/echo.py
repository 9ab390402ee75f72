"""The Echo Protocol (RFC 862) over a byte stream.

RFC 862, "TCP Based Echo Service": once a connection is established, any data
received is sent back, until the calling user terminates the connection.
"""

from __future__ import annotations

import logging
from typing import Final

from tcpstack.apps import CLIENT_ERRORS, StreamReaderLike, StreamWriterLike, close_writer

logger = logging.getLogger("tcpstack.echo")

CHUNK_SIZE: Final = 65536
"""Most bytes asked of the reader per read."""


async def echo(reader: StreamReaderLike, writer: StreamWriterLike) -> None:
    """Send back every byte received until EOF, then close (RFC 862).

    Each chunk is written and followed by ``await writer.drain()``, so a peer
    that sends faster than it reads is throttled by TCP flow control instead
    of growing our send buffer without bound.
    """
    peer = writer.get_extra_info("peername")
    total = 0
    try:
        while True:
            data = await reader.read(CHUNK_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
            total += len(data)
        logger.debug("echo %s: %d bytes echoed, peer sent EOF", peer, total)
    except CLIENT_ERRORS as exc:
        logger.debug("echo %s: aborted after %d bytes: %r", peer, total, exc)
    finally:
        await close_writer(writer)
