"""tcpstack: a userspace TCP/IP stack in Python over a Linux TUN device.

Layers, bottom up (data flows one way through them):

* :mod:`tcpstack.wire` -- header views and builders (IPv4, TCP, ICMP, checksums).
* :mod:`tcpstack.tcp` -- the sans-I/O TCP engine (TCBs, ISNs, RTO, congestion control).
* :mod:`tcpstack.stack` -- the sans-I/O demultiplexer: packets in, packets out.
* :mod:`tcpstack.link` -- devices (the TUN interface).
* :mod:`tcpstack.aio` -- the asyncio shell and the public streams API.
* :mod:`tcpstack.apps` -- built-in services (HTTP, echo, discard).
"""

__version__ = "0.1.0"
