"""Initial sequence numbers per RFC 6528.

``ISN = M + F(localip, localport, remoteip, remoteport, secretkey)`` where ``M`` is a
clock ticking every 4 microseconds and ``F`` is a keyed hash (BLAKE2s here) of the
connection 4-tuple under a secret drawn at random once per process. ISNs are thus
unpredictable to an off-path attacker across connections, yet increase
monotonically for repeated incarnations of the same 4-tuple (RFC 9293 3.4.1).
"""

from __future__ import annotations

import hashlib
import secrets
import struct

from tcpstack.tcp.seq import MASK

_TUPLE = struct.Struct("!IHIH")
TICKS_PER_SECOND = 250_000  # one tick every 4 microseconds (RFC 9293 3.4.1)


class IsnGenerator:
    """Produce RFC 6528 initial sequence numbers; ``now`` is supplied by the caller."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        if not 16 <= len(self._secret) <= 32:
            raise ValueError("ISN secret must be 16 to 32 bytes")

    def offset(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int) -> int:
        """F(): the keyed hash of the 4-tuple, a 32-bit value."""
        h = hashlib.blake2s(
            _TUPLE.pack(local_ip, local_port, remote_ip, remote_port),
            key=self._secret,
            digest_size=4,
        )
        return int.from_bytes(h.digest(), "big")

    def ts_offset(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int) -> int:
        """The connection's timestamp-clock offset (RFC 7323 7.1): a keyed hash of the
        4-tuple alone, independent of the ISN's clock, so TSvals reveal neither the
        host's uptime nor the ISN (as Linux's secure_tcp_ts_off)."""
        h = hashlib.blake2s(
            _TUPLE.pack(local_ip, local_port, remote_ip, remote_port),
            key=self._secret,
            digest_size=4,
            person=b"tcp-ts",
        )
        return int.from_bytes(h.digest(), "big")

    def isn(
        self, local_ip: int, local_port: int, remote_ip: int, remote_port: int, now: float
    ) -> int:
        """The ISN for a new connection on this 4-tuple at time ``now`` (seconds)."""
        m = int(now * TICKS_PER_SECOND)
        return (m + self.offset(local_ip, local_port, remote_ip, remote_port)) & MASK
