"""A glance at a raw packet before it is parsed: is it a request for a new connection?

Used to order a batch read from the device (see :meth:`tcpstack.stack.Stack.requests_last`),
so it reads fixed offsets only and validates nothing: the packet is parsed, checked
and counted as usual afterwards, whatever the glance said. A wrong answer (a
malformed packet) only changes where in its batch the packet is processed.
"""

from __future__ import annotations

from tcpstack.wire.errors import BytesLike

_PROTO_TCP = 6
_SYN = 0x02
#: FIN, SYN, RST and ACK: a connection request has SYN alone of these (RFC 9293 3.5).
_OPENING_BITS = 0x17


def is_connection_request(packet: BytesLike, offset: int = 0) -> bool:
    """True for an IPv4 or IPv6 packet carrying a TCP SYN without ACK, RST or FIN.

    ``offset`` skips a prefix (the virtio-net header). IPv4 fragments and IPv6
    packets with extension headers are never requests here (they are parsed in
    their turn)."""
    if len(packet) < offset + 20:
        return False
    first = packet[offset]
    version = first >> 4
    if version == 4:
        if packet[offset + 9] != _PROTO_TCP:
            return False
        if packet[offset + 6] & 0x3F or packet[offset + 7]:  # MF or a fragment offset
            return False
        flags_at = offset + (first & 0x0F) * 4 + 13
    elif version == 6:
        if packet[offset + 6] != _PROTO_TCP:  # TCP right after the fixed header only
            return False
        flags_at = offset + 40 + 13
    else:
        return False
    return flags_at < len(packet) and packet[flags_at] & _OPENING_BITS == _SYN


__all__ = ["is_connection_request"]
