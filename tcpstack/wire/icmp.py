"""ICMPv4 (RFC 792): echo request/reply and destination-unreachable messages."""

from __future__ import annotations

import struct

from tcpstack.wire import checksum as _ck
from tcpstack.wire.errors import BytesLike, Malformed

ECHO_REPLY = 0
DEST_UNREACHABLE = 3
ECHO_REQUEST = 8

CODE_PROTOCOL_UNREACHABLE = 2
CODE_PORT_UNREACHABLE = 3

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
