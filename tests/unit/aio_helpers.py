"""An in-memory, root-free packet device pair for the asyncio-layer tests.

:class:`PairDevice` wraps one end of an ``AF_UNIX``/``SOCK_SEQPACKET`` socketpair, which
keeps packet boundaries, so two :class:`~tcpstack.aio.network.Network` objects on the
same event loop can talk to each other as if over a point-to-point link.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

from tcpstack.aio.network import Network
from tcpstack.stack import StackConfig
from tcpstack.tcp.config import TcpConfig

A_IP = "10.0.0.1"
B_IP = "10.0.0.2"


class PairDevice:
    """One end of a SOCK_SEQPACKET socketpair, shaped as a ``PacketDevice``."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.sent = 0
        self.dropped = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_batch(self, max_packets: int = 256, bufsize: int = 65600) -> list[bytes]:
        out: list[bytes] = []
        while len(out) < max_packets:
            try:
                pkt = self.sock.recv(bufsize)
            except BlockingIOError:
                break
            if not pkt:
                break
            out.append(pkt)
        return out

    def write_batch(self, packets: Iterable[Any]) -> int:
        n = 0
        for pkt in packets:
            data = b"".join(pkt) if isinstance(pkt, tuple) else pkt
            try:
                self.sock.send(data)
            except BlockingIOError:
                self.dropped += 1
                continue  # a full link drops; TCP retransmits
            n += 1
        self.sent += n
        return n

    def close(self) -> None:
        self.sock.close()

    @staticmethod
    def pair() -> tuple[PairDevice, PairDevice]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return PairDevice(a), PairDevice(b)


def stack_config(ip: str, tcp: TcpConfig | None = None) -> StackConfig:
    return StackConfig(addresses=(ipaddress.IPv4Address(ip),), tcp=tcp or TcpConfig())


class NetPair:
    """Two Networks, A (10.0.0.1) and B (10.0.0.2), linked by a :class:`PairDevice` pair."""

    def __init__(self, tcp_a: TcpConfig | None = None, tcp_b: TcpConfig | None = None) -> None:
        self.dev_a, self.dev_b = PairDevice.pair()
        self.a = Network(self.dev_a, stack_config(A_IP, tcp_a))
        self.b = Network(self.dev_b, stack_config(B_IP, tcp_b))

    async def aclose(self) -> None:
        try:
            await self.a.aclose(grace=0.5)
            await self.b.aclose(grace=0.5)
        finally:
            self.dev_a.close()
            self.dev_b.close()
