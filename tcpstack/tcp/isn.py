"""Initial sequence numbers per RFC 6528.

``ISN = M + F(localip, localport, remoteip, remoteport, secretkey)`` where ``M`` is a
clock ticking every 4 microseconds and ``F`` is a keyed hash (BLAKE2s here) of the
connection 4-tuple under a secret drawn at random once per process. ISNs are thus
unpredictable to an off-path attacker across connections, yet increase
monotonically for repeated incarnations of the same 4-tuple (RFC 9293 3.4.1).
IPv6 4-tuples (addresses above ``0xFFFFFFFF``) are hashed with their full 128-bit
addresses (:func:`pack_tuple`).
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from typing import Final

from tcpstack.tcp.seq import MASK

_TUPLE: Final = struct.Struct("!IHIH")
_TUPLE6: Final = struct.Struct("!QQHQQH")
_LOW32: Final = 0xFFFFFFFF
_LOW64: Final = 0xFFFFFFFFFFFFFFFF
TICKS_PER_SECOND: Final = 250_000  # one tick every 4 microseconds (RFC 9293 3.4.1)


def pack_tuple(local_ip: int, local_port: int, remote_ip: int, remote_port: int) -> bytes:
    """The bytes of a 4-tuple that the keyed hashes take: 12 for IPv4, 36 for IPv6
    (the lengths differ, so the two families never share an input)."""
    if local_ip > _LOW32 or remote_ip > _LOW32:
        return _TUPLE6.pack(local_ip >> 64, local_ip & _LOW64, local_port,
                            remote_ip >> 64, remote_ip & _LOW64, remote_port)
    return _TUPLE.pack(local_ip, local_port, remote_ip, remote_port)


class IsnGenerator:
    """Produce RFC 6528 initial sequence numbers; ``now`` is supplied by the caller."""

    __slots__ = ("_isn_keyed", "_ts_keyed")

    def __init__(self, secret: bytes | None = None) -> None:
        key = secret if secret is not None else secrets.token_bytes(32)
        if not 16 <= len(key) <= 32:
            raise ValueError("ISN secret must be 16 to 32 bytes")
        # Keyed states, copied for each hash (cheaper than keying anew).
        self._isn_keyed = hashlib.blake2s(key=key, digest_size=4)
        self._ts_keyed = hashlib.blake2s(key=key, digest_size=4, person=b"tcp-ts")

    def offset(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int) -> int:
        """F(): the keyed hash of the 4-tuple, a 32-bit value."""
        h = self._isn_keyed.copy()
        h.update(pack_tuple(local_ip, local_port, remote_ip, remote_port))
        return int.from_bytes(h.digest(), "big")

    def ts_offset(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int) -> int:
        """The connection's timestamp-clock offset (RFC 7323 7.1): a keyed hash of the
        4-tuple alone, independent of the ISN's clock, so TSvals reveal neither the
        host's uptime nor the ISN (as Linux's secure_tcp_ts_off)."""
        h = self._ts_keyed.copy()
        h.update(pack_tuple(local_ip, local_port, remote_ip, remote_port))
        return int.from_bytes(h.digest(), "big")

    def isn(
        self, local_ip: int, local_port: int, remote_ip: int, remote_port: int, now: float
    ) -> int:
        """The ISN for a new connection on this 4-tuple at time ``now`` (seconds)."""
        m = int(now * TICKS_PER_SECOND)
        return (m + self.offset(local_ip, local_port, remote_ip, remote_port)) & MASK
