"""The asyncio shell: drives the sans-I/O stack from an event loop, and the public API.

* :class:`~tcpstack.aio.network.Network` -- a stack bound to a packet device.
* :func:`start_server` / :func:`open_connection` -- asyncio-style streams on top.
"""

from tcpstack.aio.network import Network
from tcpstack.aio.streams import (
    Server,
    TcpStreamReader,
    TcpStreamWriter,
    open_connection,
    start_server,
)

__all__ = [
    "Network",
    "Server",
    "TcpStreamReader",
    "TcpStreamWriter",
    "open_connection",
    "start_server",
]
