"""tcpstack: a userspace TCP/IP stack in Python over a Linux TUN device.

Layers, bottom up (data flows one way through them):

* :mod:`tcpstack.wire` -- header views and builders (IPv4, TCP, ICMP, checksums).
* :mod:`tcpstack.tcp` -- the sans-I/O TCP engine (TCBs, ISNs, RTO, congestion control).
* :mod:`tcpstack.stack` -- the sans-I/O demultiplexer: packets in, packets out.
* :mod:`tcpstack.link` -- devices (the TUN interface).
* :mod:`tcpstack.aio` -- the asyncio shell: transports, servers, streams, TLS.
* :mod:`tcpstack.apps` -- built-in services (HTTP, echo, discard).

The entry point for programs is :class:`tcpstack.TunStack`
(:class:`tcpstack.aio.entry.TunStack`), imported on first use so that
``import tcpstack`` stays cheap.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from tcpstack.aio.entry import TunStack


def __getattr__(name: str) -> Any:
    if name == "TunStack":
        from tcpstack.aio.entry import TunStack

        return TunStack
    raise AttributeError(f"module 'tcpstack' has no attribute {name!r}")


__all__ = ["TunStack", "__version__"]
