"""SYN cookies (RFC 4987 3.6): answer a SYN without keeping state, and rebuild the
connection from the ACK that completes the handshake.

When a listener's queue of half-open connections is full, the stack answers a SYN
with a SYN,ACK whose initial sequence number *is* the state: the cookie. The
client's ACK carries it back (SEG.ACK - 1); if it checks out, the connection is
created then, already established, as if the SYN had been queued.

A cookie, 32 bits, like Linux's (``net/ipv4/syncookies.c``):

====  =========  =====================================================================
bits  field      meaning
====  =========  =====================================================================
5     ``tick``   the time in 64-second ticks, modulo 32: a cookie is valid for the tick
                 it was made in and the next (64 to 128 s)
3     ``mss``    index into :data:`MSS_TABLE` of the largest MSS not above the peer's
24    ``mac``    BLAKE2s, keyed by the stack's secret, of the 4-tuple (IPv6 addresses
                 in full), the client's ISN, the full tick and the MSS index: a blind
                 attacker must guess it (one chance in 2**24 per try)
====  =========  =====================================================================

Window scaling and SACK-permitted do not fit in 32 bits. As Linux does, when the
client's SYN carries timestamps they travel in the low 6 bits of our SYN,ACK's
TSval, which the client echoes in every segment's TSecr: 4 bits of its window
scale shift (15: none) and 1 bit for SACK-permitted (:func:`encode_ts_options`).
Without timestamps the connection has neither. The TSval is lowered to clear
those bits, so the first RTT sample may read up to 63 ms long; later samples
correct it.

Nothing here performs I/O or reads a clock.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

from tcpstack.tcp.isn import pack_tuple
from tcpstack.tcp.seq import MASK

#: MSS values a cookie can carry (3 bits), as Linux's msstab plus small and jumbo-ish
#: common values. The index of the largest one not above the peer's MSS is sent.
MSS_TABLE = (216, 536, 1200, 1300, 1360, 1400, 1440, 1460)

TICK_SECONDS: Final = 64
_TICK_BITS: Final = 5
_MSS_BITS: Final = 3
_MAC_BITS: Final = 32 - _TICK_BITS - _MSS_BITS
_MAC_MASK: Final = (1 << _MAC_BITS) - 1
_REST: Final = struct.Struct("!IQB")  # after the 4-tuple (isn.pack_tuple: IPv4 or IPv6)
_IPV4_INPUT: Final = struct.Struct("!IHIHIQB")  # an IPv4 4-tuple (pack_tuple's) and the rest
_LOW32: Final = 0xFFFFFFFF

#: Low bits of a cookie SYN,ACK's TSval: window scale shift (4 bits, 15 = none),
#: SACK-permitted (1 bit) and, as Linux's, ECN agreed (1 bit).
TS_OPTION_BITS: Final = 6
_TS_MASK: Final = (1 << TS_OPTION_BITS) - 1
_NO_WSCALE: Final = 0xF
_SACK_BIT: Final = 0x10
_ECN_BIT: Final = 0x20


_TOP_INDEX: Final[int] = len(MSS_TABLE) - 1
_TOP_MSS: Final[int] = MSS_TABLE[_TOP_INDEX]
"""MSS_TABLE's last entry and its index, read once: most SYNs (an Ethernet path's
MSS) stop there, without reading the table."""


def mss_index(peer_mss: int) -> int:
    """Index of the largest :data:`MSS_TABLE` entry not above ``peer_mss`` (0 if all are)."""
    if peer_mss >= _TOP_MSS:
        return _TOP_INDEX
    table = MSS_TABLE
    for i in range(len(table) - 1, 0, -1):  # the table is sorted: from the top
        if table[i] <= peer_mss:
            return i
    return 0


class SynCookies:
    """Makes and checks cookies under a secret (16 to 32 bytes)."""

    __slots__ = ("_keyed",)

    def __init__(self, secret: bytes) -> None:
        if not 16 <= len(secret) <= 32:
            raise ValueError("SYN cookie secret must be 16 to 32 bytes")
        # The keyed state, copied for each MAC: cheaper than keying anew (the key
        # block is compressed once).
        self._keyed = hashlib.blake2s(key=secret, digest_size=4, person=b"syncooki")

    def _mac(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int,
             peer_isn: int, tick: int, mss_idx: int) -> int:
        h = self._keyed.copy()
        if local_ip > _LOW32 or remote_ip > _LOW32:
            h.update(pack_tuple(local_ip, local_port, remote_ip, remote_port)
                     + _REST.pack(peer_isn, tick, mss_idx))
        else:  # the same bytes, in one go
            h.update(_IPV4_INPUT.pack(local_ip, local_port, remote_ip, remote_port, peer_isn,
                                      tick, mss_idx))
        return int.from_bytes(h.digest(), "big") & _MAC_MASK

    def make(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int,
             peer_isn: int, peer_mss: int, now: float) -> int:
        """The cookie (our ISS) for a SYN with sequence number ``peer_isn``."""
        tick = int(now // TICK_SECONDS)
        idx = mss_index(peer_mss)
        mac = self._mac(local_ip, local_port, remote_ip, remote_port, peer_isn, tick, idx)
        return (((tick & 0x1F) << (32 - _TICK_BITS)) | (idx << _MAC_BITS) | mac) & MASK

    def check(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int,
              peer_isn: int, cookie: int, now: float) -> int | None:
        """The peer's MSS if ``cookie`` is one we made for this SYN within the last
        tick or two, else None."""
        tick_now = int(now // TICK_SECONDS)
        low = cookie >> (32 - _TICK_BITS)
        idx = (cookie >> _MAC_BITS) & ((1 << _MSS_BITS) - 1)
        for tick in (tick_now, tick_now - 1):
            if tick & 0x1F != low or tick < 0:  # no tick before the clock's start
                continue
            if self._mac(local_ip, local_port, remote_ip, remote_port, peer_isn, tick,
                         idx) == cookie & _MAC_MASK:
                return MSS_TABLE[idx]
        return None


def encode_ts_options(tsval: int, wscale: int | None, sack: bool, ecn: bool = False) -> int:
    """Our TSval with the peer's window scale, SACK-permitted and ECN in its low bits,
    never ahead of ``tsval`` (a TSval must not run ahead of the clock)."""
    bits = (_NO_WSCALE if wscale is None else min(wscale, 14)) | (_SACK_BIT if sack else 0) \
        | (_ECN_BIT if ecn else 0)
    value = (tsval & ~_TS_MASK & MASK) | bits
    if ((value - tsval) & MASK) < 0x80000000 and value != tsval:
        value = (value - (1 << TS_OPTION_BITS)) & MASK
    return value


def decode_ts_options(tsecr: int) -> tuple[int | None, bool]:
    """(the peer's window scale or None, SACK-permitted) from an echoed cookie TSval."""
    wscale = tsecr & 0xF
    return (None if wscale == _NO_WSCALE else wscale), bool(tsecr & _SACK_BIT)


def decode_ts_ecn(tsecr: int) -> bool:
    """Whether the cookie's SYN,ACK agreed to ECN (RFC 3168), from its echoed TSval."""
    return bool(tsecr & _ECN_BIT)
