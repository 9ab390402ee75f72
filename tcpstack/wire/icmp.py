"""ICMPv4 (RFC 792): echo request/reply, destination unreachable, and the errors
that quote one of our packets (:func:`parse_quoted_tcp`)."""

from __future__ import annotations

import errno
import struct

from tcpstack.wire import checksum as _ck
from tcpstack.wire.errors import BytesLike, Malformed

ECHO_REPLY = 0
DEST_UNREACHABLE = 3
SOURCE_QUENCH = 4  # deprecated by RFC 6633: ignored
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
PARAMETER_PROBLEM = 12

#: Destination-unreachable codes (RFC 792, RFC 1122 3.2.2.1, RFC 1812 5.2.7.1).
CODE_NET_UNREACHABLE = 0
CODE_HOST_UNREACHABLE = 1
CODE_PROTOCOL_UNREACHABLE = 2
CODE_PORT_UNREACHABLE = 3
CODE_FRAG_NEEDED = 4  # "fragmentation needed and DF set" (RFC 1191)
CODE_ADMIN_PROHIBITED = 13  # "communication administratively prohibited" (RFC 1812)

#: What each destination-unreachable code means to a connection: the errno a
#: socket reports (Linux's icmp_err_convert) and whether it is a hard error. RFC 1122
#: 4.2.3.9 makes codes 0, 1 and 5 soft and 2 and 3 hard; the administrative
#: prohibitions (9, 10, 13, RFC 1812 5.2.7.1), unknown or isolated destinations
#: (6-8) and precedence failures (14, 15) are hard as in Linux; the TOS variants of
#: 0 and 1 (11, 12) soft like them. Code 4 (fragmentation needed) is path MTU
#: discovery's, not an error.
UNREACHABLE_ERRORS: dict[int, tuple[int, bool]] = {
    CODE_NET_UNREACHABLE: (errno.ENETUNREACH, False),
    CODE_HOST_UNREACHABLE: (errno.EHOSTUNREACH, False),
    CODE_PROTOCOL_UNREACHABLE: (errno.ENOPROTOOPT, True),
    CODE_PORT_UNREACHABLE: (errno.ECONNREFUSED, True),
    5: (errno.EOPNOTSUPP, False),  # source route failed
    6: (errno.ENETUNREACH, True),  # destination network unknown
    7: (errno.EHOSTDOWN, True),  # destination host unknown
    8: (errno.ENONET, True),  # source host isolated
    9: (errno.ENETUNREACH, True),  # network administratively prohibited
    10: (errno.EHOSTUNREACH, True),  # host administratively prohibited
    11: (errno.ENETUNREACH, False),  # network unreachable for TOS
    12: (errno.EHOSTUNREACH, False),  # host unreachable for TOS
    CODE_ADMIN_PROHIBITED: (errno.EHOSTUNREACH, True),
    14: (errno.EHOSTUNREACH, True),  # host precedence violation
    15: (errno.EHOSTUNREACH, True),  # precedence cutoff in effect
}
#: RFC 1122 4.2.3.9: time exceeded and parameter problem are soft errors.
TIME_EXCEEDED_ERROR = (errno.EHOSTUNREACH, False)
PARAMETER_PROBLEM_ERROR = (errno.EPROTO, False)

_IPV4_MIN_HEADER = 20
_PROTO_TCP = 6

HEADER_LEN = 8
_HDR = struct.Struct("!BBHI")
_H = struct.Struct("!H")


class IcmpMessage:
    """A parsed, checksum-verified ICMP message. ``body`` follows the 8-byte header."""

    __slots__ = ("body", "code", "rest", "type")

    def __init__(self, type_: int, code: int, rest: int, body: memoryview) -> None:
        self.type = type_
        self.code = code
        self.rest = rest
        self.body = body


def parse_icmp(data: BytesLike, verify_checksum: bool = True) -> IcmpMessage:
    """Parse an ICMP message; raises :class:`Malformed` (truncated or bad checksum)."""
    buf = memoryview(data)
    if len(buf) < HEADER_LEN:
        raise Malformed("icmp_truncated")
    if verify_checksum and not _ck.verify(_ck.partial(buf)):
        raise Malformed("icmp_bad_checksum")
    type_, code, _csum, rest = _HDR.unpack_from(buf)
    return IcmpMessage(type_, code, rest, buf[HEADER_LEN:])


def build_icmp(type_: int, code: int, rest: int, body: BytesLike) -> bytearray:
    """An ICMP message with its checksum."""
    b = memoryview(body)
    out = bytearray(HEADER_LEN + len(b))
    _HDR.pack_into(out, 0, type_, code, 0, rest)
    out[HEADER_LEN:] = b
    _H.pack_into(out, 2, _ck.checksum(out))
    return out


def build_echo_reply(request: IcmpMessage) -> bytearray:
    """The reply to an echo request: same identifier, sequence number and data (RFC 792)."""
    return build_icmp(ECHO_REPLY, 0, request.rest, request.body)


def build_unreachable(code: int, original_ip_packet: BytesLike) -> bytearray:
    """Destination unreachable quoting the original IP header and first 8 payload bytes.

    RFC 1812 4.3.2.3 allows quoting more; like Linux we quote up to 548 bytes so the
    whole message fits in 576.
    """
    quoted = memoryview(original_ip_packet)[:548]
    return build_icmp(DEST_UNREACHABLE, code, 0, quoted)


class QuotedTcp:
    """The start of one of our TCP segments as an ICMP error quotes it (RFC 792: the
    IP header and at least the first 8 bytes of its payload -- the TCP ports and
    sequence number). ``total_len`` is the quoted packet's IP total length."""

    __slots__ = ("dst", "dst_port", "seq", "src", "src_port", "total_len")

    def __init__(self, src: int, dst: int, src_port: int, dst_port: int, seq: int,
                 total_len: int) -> None:
        self.src = src
        self.dst = dst
        self.src_port = src_port
        self.dst_port = dst_port
        self.seq = seq
        self.total_len = total_len


_QUOTED_IP = struct.Struct("!BBHHHBBHII")
_QUOTED_TCP = struct.Struct("!HHI")


def parse_quoted_tcp(body: BytesLike) -> QuotedTcp:
    """The TCP segment an ICMP error's ``body`` quotes; raises :class:`Malformed`.

    The quote is untrusted (anyone can send ICMP): it must be an IPv4 header of a
    valid length followed by 8 bytes of a TCP header, and not a later fragment
    (which would not start with the TCP header). Its checksums are not checked --
    a router may quote a header it has already changed (TTL) -- so nothing here is
    acted on before the connection's own checks (RFC 5927 4).
    """
    buf = memoryview(body)
    n = len(buf)
    if n < _IPV4_MIN_HEADER:
        raise Malformed("icmp_quote_truncated")
    vihl, _tos, total, _ident, frag, _ttl, proto, _csum, src, dst = _QUOTED_IP.unpack_from(buf)
    hlen = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or hlen < _IPV4_MIN_HEADER:
        raise Malformed("icmp_quote_bad_header")
    if n < hlen + 8:
        raise Malformed("icmp_quote_truncated")
    if proto != _PROTO_TCP:
        raise Malformed("icmp_quote_not_tcp")
    if frag & 0x1FFF:
        raise Malformed("icmp_quote_fragment")
    sport, dport, seq = _QUOTED_TCP.unpack_from(buf, hlen)
    return QuotedTcp(src, dst, sport, dport, seq, total)


def build_frag_needed(next_hop_mtu: int, original_ip_packet: BytesLike) -> bytearray:
    """"Fragmentation needed and DF set" with the next-hop MTU (RFC 1191 4), as a
    router sends it (used by tests and tools)."""
    quoted = memoryview(original_ip_packet)[:548]
    return build_icmp(DEST_UNREACHABLE, CODE_FRAG_NEEDED, next_hop_mtu & 0xFFFF, quoted)
