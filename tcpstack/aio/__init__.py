"""The asyncio shell: drives the sans-I/O stack from an event loop, and the public API.

* :class:`~tcpstack.aio.network.Network` -- a stack bound to a packet device, with
  ``create_server`` / ``create_connection`` (transports and protocols, TLS).
* :class:`~tcpstack.aio.entry.TunStack` -- the same on a TUN interface it sets up.
* :func:`start_server` / :func:`open_connection` -- asyncio streams on top.
"""

from tcpstack.aio.entry import TunStack
from tcpstack.aio.network import Network
from tcpstack.aio.server import Server
from tcpstack.aio.streams import (
    StreamProtocol,
    TcpStreamReader,
    TcpStreamWriter,
    open_connection,
    start_server,
)
from tcpstack.aio.transports import TcpTransport

__all__ = [
    "Network",
    "Server",
    "StreamProtocol",
    "TcpStreamReader",
    "TcpStreamWriter",
    "TcpTransport",
    "TunStack",
    "open_connection",
    "start_server",
]
