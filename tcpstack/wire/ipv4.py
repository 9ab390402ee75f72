"""IPv4 header parsing and building (RFC 791)."""

from __future__ import annotations

import struct
from typing import Final

from tcpstack.wire import checksum as _ck
from tcpstack.wire.errors import BytesLike as Buffer
from tcpstack.wire.errors import Malformed
from tcpstack.wire.records import IPv4Packet

PROTO_ICMP: Final = 1
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17

HEADER_LEN: Final = 20
_FLAG_DF: Final = 0x4000
_FLAG_MF: Final = 0x2000
_FRAG_OFFSET_MASK: Final = 0x1FFF

_HDR: Final = struct.Struct("!BBHHHBBHII")


_new = tuple.__new__  # NamedTuple construction without its Python-level argument handling


def parse_ipv4(data: Buffer, fragments: bool = False) -> IPv4Packet:
    """Parse and validate an IPv4 packet; raise :class:`Malformed` naming what is wrong.

    Checks (RFC 791 3.1, RFC 1122 3.2.1): version, IHL >= 5, total length within the
    buffer and covering the header, header checksum. A fragment is refused as
    ``ipv4_fragment`` unless ``fragments`` (the caller reassembles: see
    :func:`fragment_field` and :mod:`tcpstack.fragments`).
    """
    buf = memoryview(data)
    n = len(buf)
    if n < 1:
        raise Malformed("ip_truncated")
    version = buf[0] >> 4
    if version != 4:
        raise Malformed("ip_bad_version")  # IPv6 goes to tcpstack.wire.ipv6
    if n < HEADER_LEN:
        raise Malformed("ipv4_truncated")
    vihl, tos, total, ident, frag, ttl, proto, _csum, src, dst = _HDR.unpack_from(buf)
    hlen = (vihl & 0x0F) * 4
    if hlen < HEADER_LEN:
        raise Malformed("ipv4_bad_ihl")
    if hlen > n:
        raise Malformed("ipv4_truncated")
    if total < hlen or total > n:
        raise Malformed("ipv4_bad_length")
    if not _ck.verify(_ck.partial(buf[:hlen])):
        raise Malformed("ipv4_bad_checksum")
    if frag & (_FLAG_MF | _FRAG_OFFSET_MASK) and not fragments:
        raise Malformed("ipv4_fragment")
    return _new(IPv4Packet, (src, dst, proto, ttl, tos, ident, hlen, buf[hlen:total]))


def fragment_field(data: Buffer) -> int:
    """The MF flag and fragment offset of a parsed packet's header (0: not a
    fragment): test ``& FLAG_MF``; the offset in bytes is ``(field & 0x1FFF) * 8``."""
    return ((data[6] << 8) | data[7]) & (_FLAG_MF | _FRAG_OFFSET_MASK)


FLAG_MF: Final = _FLAG_MF
FRAG_OFFSET_MASK: Final = _FRAG_OFFSET_MASK


def pack_ipv4_header(
    buf: bytearray | memoryview,
    offset: int,
    src: int,
    dst: int,
    proto: int,
    payload_len: int,
    ident: int,
    ttl: int = 64,
    tos: int = 0,
) -> None:
    """Write a 20-byte IPv4 header (DF set, no options) with its checksum into ``buf``."""
    total = HEADER_LEN + payload_len
    _HDR.pack_into(buf, offset, 0x45, tos, total, ident & 0xFFFF, _FLAG_DF, ttl, proto,
                   header_checksum(total, ident, ttl, proto, src, dst, tos), src, dst)


def header_checksum(total: int, ident: int, ttl: int, proto: int, src: int, dst: int,
                    tos: int = 0) -> int:
    """The checksum field of the header :func:`pack_ipv4_header` writes (DF set, no
    options), summed from the fields rather than from the bytes (RFC 1071)."""
    return _ck.finish(0x4500 + tos + total + (ident & 0xFFFF) + _FLAG_DF + (ttl << 8) + proto
                      + src + dst)


def build_ipv4(
    src: int, dst: int, proto: int, payload: Buffer, ident: int = 0, ttl: int = 64
) -> bytearray:
    """Return a complete IPv4 packet around ``payload``."""
    p = memoryview(payload)
    out = bytearray(HEADER_LEN + len(p))
    pack_ipv4_header(out, 0, src, dst, proto, len(p), ident, ttl)
    out[HEADER_LEN:] = p
    return out
