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


class ConnectionSocket:
    """The subset of :class:`socket.socket` that maps onto a TCB."""

    family = socket.AF_INET
    type = socket.SOCK_STREAM
    proto = socket.IPPROTO_TCP

    def __init__(self, tcb: Tcb) -> None:
        self._tcb = tcb

    def getpeername(self) -> tuple[str, int]:
        return (str(ipaddress.IPv4Address(self._tcb.remote_ip)), self._tcb.remote_port)

    def getsockname(self) -> tuple[str, int]:
        return (str(ipaddress.IPv4Address(self._tcb.local_ip)), self._tcb.local_port)

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

    ``getsockname()`` gives ``(address, port)`` (``"0.0.0.0"`` for every address of
    the stack). There is no file descriptor behind it; options a listening socket
    reports are answered, setting any raises ``OSError(ENOPROTOOPT)``.
    """

    family = socket.AF_INET
    type = socket.SOCK_STREAM
    proto = socket.IPPROTO_TCP

    def __init__(self, address: str, port: int) -> None:
        self._name = (address, port)

    def getsockname(self) -> tuple[str, int]:
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
        return f"<ListenerSocket {self._name[0]}:{self._name[1]}>"
