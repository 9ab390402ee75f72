"""A read's packets sorted before they are parsed: bare SYNs, and flows.

Under a SYN flood most packets of a read from the device are bare SYNs (flags SYN
alone, RFC 9293 3.1): new clients, real or spoofed. The stack processes the rest of
the read first -- the segments of connections it already has -- and writes what
they produced before it answers the SYNs (RFC 4987 3: a flood must not starve
established connections). These functions look at the raw bytes only, without
checking them: a packet that is malformed is simply not a bare SYN here, and the
parsers decide about it as they always do.

Moving a bare SYN behind the rest of its read must not reorder one flow: a later
packet of the same addresses and ports (a RST after its SYN, say) must stay behind
it. :func:`flow_key` names a packet's flow for that check.
"""

from __future__ import annotations

from typing import Final

from tcpstack.wire.errors import BytesLike

_PROTO_TCP: Final = 6
_SYN_ONLY: Final = 0x02
_IPV6_HEADER: Final = 40
_FRAGMENT: Final = 0x3F  # IPv4 MF and the fragment offset's high bits (byte 6)
_HEADS: Final = 60 + 20  # the longest IPv4 header and a TCP header's fixed part


def is_bare_syn(packet: BytesLike, start: int) -> bool:
    """True if ``packet`` (its IP header at ``start``, after any virtio-net header) is
    an unfragmented IPv4 or IPv6 TCP segment whose flags are SYN alone (the AE, CWR
    and ECE bits included: an ECN-setup SYN has them and is not a bare one here).

    IPv6 counts only when TCP follows the fixed header directly: a SYN behind
    extension headers is processed in order, with the rest of its read."""
    # Typed as bytes (what the TUN reads give), indexing compiles to native reads.
    p = packet if isinstance(packet, bytes) else bytes(packet[:start + _HEADS])
    n = len(p)
    if n <= start:
        return False
    version = p[start] >> 4
    if version == 4:
        ihl = (p[start] & 0x0F) * 4
        if ihl < 20 or n < start + ihl + 20 or p[start + 9] != _PROTO_TCP \
                or p[start + 6] & _FRAGMENT or p[start + 7]:
            return False
        return p[start + ihl + 13] == _SYN_ONLY and p[start + ihl + 12] & 0x0F == 0
    if version == 6:
        if n < start + _IPV6_HEADER + 20 or p[start + 6] != _PROTO_TCP:
            return False
        flags = start + _IPV6_HEADER + 13
        return p[flags] == _SYN_ONLY and p[flags - 1] & 0x0F == 0
    return False


def flow_key(packet: BytesLike, start: int) -> bytes:
    """The bytes that name ``packet``'s flow: its source and destination addresses
    and the first four bytes after the IP header (TCP's ports). Packets of one TCP
    connection share it; the key of anything else is some other string, which is
    all the ordering check needs (b"" for what is too short to have one)."""
    n = len(packet)
    if n <= start:
        return b""
    version = packet[start] >> 4
    if version == 4:
        ihl = (packet[start] & 0x0F) * 4
        if n < start + ihl + 4:
            return b""
        return bytes(packet[start + 12:start + 20]) + bytes(packet[start + ihl:start + ihl + 4])
    if version == 6 and n >= start + _IPV6_HEADER + 4:
        return bytes(packet[start + 8:start + _IPV6_HEADER + 4])
    return b""
