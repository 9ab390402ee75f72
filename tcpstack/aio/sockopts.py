"""Socket-like objects: ``get_extra_info("socket")`` of a connection, ``Server.sockets``.

Code written for asyncio often tunes its sockets, e.g.
``writer.get_extra_info("socket").setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)``.
:class:`ConnectionSocket` accepts the TCP options that make sense for a userspace
connection and maps them onto the engine; anything else raises ``OSError(ENOPROTOOPT)``
as a kernel socket would for an unknown option.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from tcpstack.tcp.tcb import Tcb

SockAddr = tuple[str, int] | tuple[str, int, int, int]


def sockaddr(address: int, port: int) -> SockAddr:
    """The address a socket reports for ``address`` (an integer of either family):
    ``(host, port)`` for IPv4, ``(host, port, flowinfo, scope_id)`` for IPv6, as
    asyncio's ``get_extra_info("peername")`` gives them (the stack sends no flow
    label and has no scoped addresses: both are 0)."""
    if address > 0xFFFFFFFF:
        return (str(ipaddress.IPv6Address(address)), port, 0, 0)
    return (str(ipaddress.IPv4Address(address)), port)


class ConnectionSocket:
    """The subset of :class:`socket.socket` that maps onto a TCB."""

    type = socket.SOCK_STREAM
    proto = socket.IPPROTO_TCP

    def __init__(self, tcb: Tcb) -> None:
        self._tcb = tcb

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if self._tcb.local_ip > 0xFFFFFFFF else socket.AF_INET

    def getpeername(self) -> SockAddr:
        return sockaddr(self._tcb.remote_ip, self._tcb.remote_port)

    def getsockname(self) -> SockAddr:
        return sockaddr(self._tcb.local_ip, self._tcb.local_port)

    def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
        tcb = self._tcb
        v = int.from_bytes(value, "little") if isinstance(value, bytes) else int(value)
        if level == socket.IPPROTO_TCP and option == socket.TCP_NODELAY:
            tcb.set_nodelay(bool(v))
        elif level == socket.SOL_SOCKET and option == socket.SO_KEEPALIVE:
            tcb.set_keepalive(bool(v))
        elif level == socket.IPPROTO_TCP and option == socket.TCP_KEEPIDLE:
            tcb.set_keepalive(tcb.keepalive, idle=float(v))
        elif level == socket.IPPROTO_TCP and option == socket.TCP_KEEPINTVL:
            tcb.set_keepalive(tcb.keepalive, interval=float(v))
        elif level == socket.IPPROTO_TCP and option == socket.TCP_KEEPCNT:
            tcb.set_keepalive(tcb.keepalive, count=v)
        else:
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")

    def getsockopt(self, level: int, option: int) -> int:
        tcb = self._tcb
        if level == socket.IPPROTO_TCP and option == socket.TCP_NODELAY:
            return int(tcb.nodelay)
        if level == socket.SOL_SOCKET and option == socket.SO_KEEPALIVE:
            return int(tcb.keepalive)
        if level == socket.IPPROTO_TCP and option == socket.TCP_KEEPIDLE:
            return int(tcb.keepalive_idle)
        if level == socket.IPPROTO_TCP and option == socket.TCP_KEEPINTVL:
            return int(tcb.keepalive_interval)
        if level == socket.IPPROTO_TCP and option == socket.TCP_KEEPCNT:
            return tcb.keepalive_count
        if level == socket.IPPROTO_TCP and option == socket.TCP_MAXSEG:
            return tcb.seg_mss
        if level == socket.SOL_SOCKET and option == socket.SO_ERROR:
            # As Linux: the pending soft error (an ICMP error that did not end the
            # connection, RFC 1122 4.2.3.9), cleared by reading it.
            return tcb.take_soft_error()
        raise OSError(errno.ENOPROTOOPT, "Protocol not available")

    def fileno(self) -> int:
        return -1

    def __repr__(self) -> str:
        return f"<ConnectionSocket {self.getsockname()} -> {self.getpeername()}>"


class ListenerSocket:
    """What ``Server.sockets`` holds: the address a server listens on, socket-shaped.

    ``address`` is a textual address: one of the stack's, ``"0.0.0.0"`` (every IPv4
    address) or ``"::"`` (every address, both families). As with asyncio's
    sockets, an IPv6 one has :attr:`family` ``AF_INET6`` and ``getsockname()``
    gives ``(address, port, flowinfo, scope_id)``; an IPv4 one ``AF_INET`` and
    ``(address, port)``. There is no file descriptor behind it; options a
    listening socket reports are answered, setting any raises
    ``OSError(ENOPROTOOPT)``.
    """

    type = socket.SOCK_STREAM
    proto = socket.IPPROTO_TCP

    def __init__(self, address: str, port: int) -> None:
        ip = ipaddress.ip_address(address)
        self.family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        self._name: SockAddr = (str(ip), port, 0, 0) if ip.version == 6 else (str(ip), port)

    def getsockname(self) -> SockAddr:
        return self._name

    def getsockopt(self, level: int, option: int) -> int:
        if level == socket.SOL_SOCKET and option in (socket.SO_ACCEPTCONN, socket.SO_REUSEADDR):
            return 1
        raise OSError(errno.ENOPROTOOPT, "Protocol not available")

    def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
        raise OSError(errno.ENOPROTOOPT, "Protocol not available")

    def fileno(self) -> int:
        return -1

    def __repr__(self) -> str:
        host, port = self._name[0], self._name[1]
        shown = f"[{host}]" if self.family == socket.AF_INET6 else host
        return f"<ListenerSocket {shown}:{port}>"
