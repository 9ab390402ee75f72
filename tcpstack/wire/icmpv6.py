"""ICMPv6 (RFC 4443): echo, the error messages, and the TCP segment an error quotes.

The message layout is ICMPv4's (type, code, checksum, a 32-bit field, a body),
so :class:`~tcpstack.wire.icmp.IcmpMessage` and
:class:`~tcpstack.wire.icmp.QuotedTcp` serve both; the checksum differs: it
covers an IPv6 pseudo-header (RFC 4443 2.3, RFC 8200 8.1) with next header 58.
"""

from __future__ import annotations

import errno
import struct

from tcpstack.wire import checksum as _ck
from tcpstack.wire.errors import BytesLike, Malformed
from tcpstack.wire.icmp import IcmpMessage, QuotedTcp
from tcpstack.wire.ipv6 import (
    HEADER_LEN as IPV6_HEADER_LEN,
)
from tcpstack.wire.ipv6 import (
    MAX_EXTENSION_HEADERS,
    MIN_MTU,
    NH_DEST_OPTS,
    NH_FRAGMENT,
    NH_HOP_BY_HOP,
    NH_ICMPV6,
    NH_ROUTING,
    NH_TCP,
)

DEST_UNREACHABLE = 1
PACKET_TOO_BIG = 2
TIME_EXCEEDED = 3
PARAMETER_PROBLEM = 4
ECHO_REQUEST = 128
ECHO_REPLY = 129

#: Destination-unreachable codes (RFC 4443 3.1).
CODE_NO_ROUTE = 0
CODE_ADMIN_PROHIBITED = 1
CODE_BEYOND_SCOPE = 2
CODE_ADDRESS_UNREACHABLE = 3
CODE_PORT_UNREACHABLE = 4
CODE_SOURCE_POLICY = 5
CODE_REJECT_ROUTE = 6

#: What each destination-unreachable code means to a connection: the errno a
#: socket reports and whether it is a hard error, as Linux's icmpv6_err_convert
#: (RFC 4443 3.1; RFC 5461 4 leaves the choice to the implementation). Code 7
#: (RFC 6550: error in the source routing header) is soft like "no route".
UNREACHABLE_ERRORS: dict[int, tuple[int, bool]] = {
    CODE_NO_ROUTE: (errno.ENETUNREACH, False),
    CODE_ADMIN_PROHIBITED: (errno.EACCES, True),
    CODE_BEYOND_SCOPE: (errno.EHOSTUNREACH, False),
    CODE_ADDRESS_UNREACHABLE: (errno.EHOSTUNREACH, False),
    CODE_PORT_UNREACHABLE: (errno.ECONNREFUSED, True),
    CODE_SOURCE_POLICY: (errno.EACCES, True),
    CODE_REJECT_ROUTE: (errno.EACCES, True),
    7: (errno.ENETUNREACH, False),
}
#: Time exceeded is soft (RFC 1122 4.2.3.9's rule, carried over); a parameter
#: problem is hard, as in Linux (EPROTO) -- it ends only a handshake (RFC 5461 4).
TIME_EXCEEDED_ERROR = (errno.EHOSTUNREACH, False)
PARAMETER_PROBLEM_ERROR = (errno.EPROTO, True)

HEADER_LEN = 8
#: RFC 4443 2.4 (c): an error quotes as much of the invoking packet as fits in a
#: minimum-MTU packet.
MAX_QUOTE = MIN_MTU - IPV6_HEADER_LEN - HEADER_LEN

_HDR = struct.Struct("!BBHI")
_H = struct.Struct("!H")
_QUOTED_TCP = struct.Struct("!HHI")
_QUOTED_PLEN = struct.Struct("!H")
_Q = struct.Struct("!QQ")


def is_error(type_: int) -> bool:
    """RFC 4443 2.1: types 0-127 are errors, 128-255 informational."""
    return type_ < 128


def _checksum_base(src: int, dst: int, length: int) -> int:
    return _ck.pseudo_header_ipv6(src, dst, NH_ICMPV6, length)


def parse_icmpv6(data: BytesLike, src: int, dst: int, verify_checksum: bool = True
                 ) -> IcmpMessage:
    """Parse an ICMPv6 message from ``src`` to ``dst``; raises :class:`Malformed`
    (``icmpv6_truncated``, ``icmpv6_bad_checksum``)."""
    buf = memoryview(data)
    n = len(buf)
    if n < HEADER_LEN:
        raise Malformed("icmpv6_truncated")
    if verify_checksum and not _ck.verify(_checksum_base(src, dst, n) + _ck.partial(buf)):
        raise Malformed("icmpv6_bad_checksum")
    type_, code, _csum, rest = _HDR.unpack_from(buf)
    return IcmpMessage(type_, code, rest, buf[HEADER_LEN:])


def build_icmpv6(src: int, dst: int, type_: int, code: int, rest: int, body: BytesLike
                 ) -> bytearray:
    """An ICMPv6 message from ``src`` to ``dst`` with its checksum."""
    b = memoryview(body)
    out = bytearray(HEADER_LEN + len(b))
    _HDR.pack_into(out, 0, type_, code, 0, rest & 0xFFFFFFFF)
    out[HEADER_LEN:] = b
    _H.pack_into(out, 2, _ck.finish(_checksum_base(src, dst, len(out)) + _ck.partial(out)))
    return out


def build_echo_reply(src: int, dst: int, request: IcmpMessage) -> bytearray:
    """The reply to an echo request: its identifier, sequence number and data
    (RFC 4443 4.2)."""
    return build_icmpv6(src, dst, ECHO_REPLY, 0, request.rest, request.body)


def build_error(src: int, dst: int, type_: int, code: int, rest: int,
                invoking_packet: BytesLike) -> bytearray:
    """An error message quoting ``invoking_packet`` as far as RFC 4443 2.4 (c) allows.
    ``rest`` is the 32-bit field: the MTU of a Packet Too Big, the pointer of a
    Parameter Problem, 0 otherwise."""
    return build_icmpv6(src, dst, type_, code, rest, memoryview(invoking_packet)[:MAX_QUOTE])


def _skip_headers(buf: memoryview, nh: int) -> tuple[int, int]:
    """(upper-layer protocol, its offset) of an IPv6 packet, extension headers
    skipped without checking them, at most MAX_EXTENSION_HEADERS; raises Malformed
    if they run out of the buffer or there are more, ``icmp_quote_fragment`` at a
    later fragment."""
    n = len(buf)
    offset = IPV6_HEADER_LEN
    for _ in range(MAX_EXTENSION_HEADERS + 1):
        if nh not in (NH_HOP_BY_HOP, NH_DEST_OPTS, NH_ROUTING, NH_FRAGMENT):
            return nh, offset
        if n < offset + 8:
            raise Malformed("icmp_quote_truncated")
        if nh == NH_FRAGMENT:
            if (buf[offset + 2] << 8 | buf[offset + 3]) & 0xFFF8:
                raise Malformed("icmp_quote_fragment")
            length = 8
        else:
            length = (buf[offset + 1] + 1) * 8
        nh = buf[offset]
        offset += length
    raise Malformed("icmp_quote_bad_header")


def is_icmpv6_error(packet: BytesLike) -> bool:
    """True if the IPv6 ``packet`` carries an ICMPv6 error message (or might: its
    headers cannot be followed), which RFC 4443 2.4 (e.1) forbids answering with
    another error."""
    buf = memoryview(packet)
    if len(buf) < IPV6_HEADER_LEN:
        return True
    try:
        nh, offset = _skip_headers(buf, buf[6])
    except Malformed:
        return True
    return nh == NH_ICMPV6 and (offset >= len(buf) or is_error(buf[offset]))


def parse_quoted_tcp(body: BytesLike) -> QuotedTcp:
    """The TCP segment an ICMPv6 error's ``body`` quotes; raises :class:`Malformed`.

    The quote is untrusted: it must start with an IPv6 header, then at most
    :data:`~tcpstack.wire.ipv6.MAX_EXTENSION_HEADERS` extension headers that fit in
    the quote, then 8 bytes of a TCP header -- not a later fragment, which would not
    start with it. Nothing is acted on before the connection's own checks (RFC 5927
    4). ``total_len`` is the quoted packet's length (header plus payload length).
    Reasons: ``icmp_quote_truncated``, ``icmp_quote_bad_header``,
    ``icmp_quote_not_tcp``, ``icmp_quote_fragment``.
    """
    buf = memoryview(body)
    n = len(buf)
    if n < IPV6_HEADER_LEN:
        raise Malformed("icmp_quote_truncated")
    if buf[0] >> 4 != 6:
        raise Malformed("icmp_quote_bad_header")
    plen = _QUOTED_PLEN.unpack_from(buf, 4)[0]
    s_hi, s_lo = _Q.unpack_from(buf, 8)
    d_hi, d_lo = _Q.unpack_from(buf, 24)
    nh, offset = _skip_headers(buf, buf[6])
    if nh != NH_TCP:
        raise Malformed("icmp_quote_not_tcp")
    if n < offset + 8:
        raise Malformed("icmp_quote_truncated")
    sport, dport, seq = _QUOTED_TCP.unpack_from(buf, offset)
    return QuotedTcp((s_hi << 64) | s_lo, (d_hi << 64) | d_lo, sport, dport, seq,
                     IPV6_HEADER_LEN + plen)


def build_packet_too_big(src: int, dst: int, mtu: int, invoking_packet: BytesLike
                         ) -> bytearray:
    """"Packet too big" with the next hop's MTU (RFC 4443 3.2), as a router sends it
    (used by tests and tools)."""
    return build_error(src, dst, PACKET_TOO_BIG, 0, mtu, invoking_packet)


__all__ = [
    "CODE_ADDRESS_UNREACHABLE", "CODE_ADMIN_PROHIBITED", "CODE_BEYOND_SCOPE", "CODE_NO_ROUTE",
    "CODE_PORT_UNREACHABLE", "CODE_REJECT_ROUTE", "CODE_SOURCE_POLICY", "DEST_UNREACHABLE",
    "ECHO_REPLY", "ECHO_REQUEST", "HEADER_LEN", "MAX_QUOTE", "PACKET_TOO_BIG",
    "PARAMETER_PROBLEM", "PARAMETER_PROBLEM_ERROR", "TIME_EXCEEDED", "TIME_EXCEEDED_ERROR",
    "UNREACHABLE_ERRORS", "build_echo_reply", "build_error", "build_icmpv6",
    "build_packet_too_big", "is_error", "is_icmpv6_error", "parse_icmpv6", "parse_quoted_tcp",
]
