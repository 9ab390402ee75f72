"""IPv6 (RFC 8200): the fixed header, the extension-header chain, builders.

Addresses are 128-bit integers. Every IPv6 address the stack accepts lies above
``0xFFFFFFFF`` (:func:`is_bad_address` refuses ``::/96`` -- the unspecified and
loopback addresses and the deprecated IPv4-compatible ones, RFC 4291 2.5.5.1 --
and the IPv4-mapped ``::ffff:0:0/96``, which must not appear on the wire,
RFC 4291 2.5.5.2), so one integer names an address of either family without
ambiguity: :func:`is_ipv6`.

Parsing is in two steps, each raising :class:`~tcpstack.wire.errors.Malformed`
with a named reason:

* :func:`parse_ipv6` checks the fixed header (version, payload length) and
  returns an :class:`~tcpstack.wire.records.IPv6Packet`;
* :func:`walk_headers` follows the chain of extension headers (RFC 8200 4) to
  the upper-layer header, with bounds (:data:`MAX_EXTENSION_HEADERS` headers,
  :data:`MAX_OPTIONS` options per options header, :data:`MAX_PADDING` bytes of
  consecutive padding; RFC 8504 5.3), and stops at a fragment header of a real
  fragment. What RFC 8200 answers with an ICMPv6 Parameter Problem raises
  :class:`ParameterProblem` (a :class:`Malformed` carrying the code and the
  pointer the message needs): an unrecognized next header, an unrecognized option
  whose type asks for one, a routing header with segments left, a hop-by-hop
  header anywhere but first, a first fragment without the whole header chain
  (RFC 7112).
"""

from __future__ import annotations

import struct

from tcpstack.wire.errors import BytesLike, Malformed
from tcpstack.wire.records import IPv6Packet

HEADER_LEN = 40
#: RFC 8200 5: every link carries 1280-byte packets; no path MTU is below it.
MIN_MTU = 1280

NH_HOP_BY_HOP = 0
NH_TCP = 6
NH_UDP = 17
NH_ROUTING = 43
NH_FRAGMENT = 44
NH_ESP = 50
NH_AH = 51
NH_ICMPV6 = 58
NH_NONE = 59
NH_DEST_OPTS = 60

#: Upper-layer protocols the stack handles (UDP only to say "port unreachable");
#: any other next header is unrecognized (RFC 8200 4: Parameter Problem, code 1).
UPPER_LAYER = frozenset({NH_TCP, NH_UDP, NH_ICMPV6, NH_NONE})

#: Bounds on the extension-header chain (RFC 8504 5.3 lets hosts set them; Linux
#: has the same defaults for options and padding): headers in one packet, options
#: other than padding in one hop-by-hop or destination-options header, bytes of
#: consecutive padding (a header never needs more than 7 to align).
MAX_EXTENSION_HEADERS = 8
MAX_OPTIONS = 8
MAX_PADDING = 7

#: ICMPv6 Parameter Problem codes (RFC 4443 3.4, RFC 7112).
PP_ERRONEOUS_HEADER = 0
PP_UNRECOGNIZED_NEXT_HEADER = 1
PP_UNRECOGNIZED_OPTION = 2
#: RFC 7112 5: "IPv6 First Fragment has incomplete IPv6 Header Chain".
PP_INCOMPLETE_HEADER_CHAIN = 3

#: The fixed part of each upper-layer header the stack knows (RFC 9293 3.1: TCP
#: 20 bytes before its options, RFC 768: UDP 8, RFC 4443 2.1: ICMPv6 type, code
#: and checksum 4). A first fragment must hold all of it (RFC 7112 5); for TCP
#: also the options its data offset announces.
_UPPER_HEADER_LEN = {NH_TCP: 20, NH_UDP: 8, NH_ICMPV6: 4, NH_NONE: 0}

_OPT_PAD1 = 0
_OPT_PADN = 1
_OPT_ROUTER_ALERT = 5  # RFC 2711: known, nothing for a host to do

_HDR = struct.Struct("!IHBBQQQQ")
_FRAG = struct.Struct("!BBHI")
_Q = struct.Struct("!QQ")
_H = struct.Struct("!H")
_LOW32 = 0xFFFFFFFF
_MAPPED = 0xFFFF << 32
_MULTICAST = 0xFF << 120
_LINK_LOCAL_MASK = 0xFFC0 << 112
_LINK_LOCAL = 0xFE80 << 112

_new = tuple.__new__


class ParameterProblem(Malformed):
    """A packet RFC 8200 discards with an ICMPv6 Parameter Problem: ``code`` and
    ``pointer`` (the offset of the offending byte in the packet) for the message."""

    __slots__ = ("code", "pointer")

    def __init__(self, reason: str, code: int, pointer: int) -> None:
        super().__init__(reason)
        self.code = code
        self.pointer = pointer


def is_ipv6(address: int) -> bool:
    """True for an IPv6 address as the stack holds them (see the module docstring)."""
    return address > _LOW32


def is_bad_address(address: int) -> bool:
    """Addresses that never belong to a peer: ``::/96`` (unspecified, loopback,
    IPv4-compatible), IPv4-mapped, multicast (RFC 4291 2.7: never a source), and
    link-local ones, which need a scope the stack does not track."""
    return (address <= _LOW32 or address >> 32 == 0xFFFF or address >= _MULTICAST
            or address & _LINK_LOCAL_MASK == _LINK_LOCAL)


def is_multicast(address: int) -> bool:
    return address >= _MULTICAST


def address_bytes(address: int) -> bytes:
    """The 16 bytes of an address."""
    return _Q.pack(address >> 64, address & 0xFFFFFFFFFFFFFFFF)


def parse_ipv6(data: BytesLike) -> IPv6Packet:
    """Parse and check an IPv6 fixed header (RFC 8200 3); raise :class:`Malformed`.

    Reasons: ``ip_truncated``, ``ip_bad_version``, ``ipv6_truncated`` (under 40
    bytes), ``ipv6_bad_length`` (payload length beyond the buffer; bytes after it
    are ignored, as link padding), ``ipv6_jumbogram`` (payload length 0 with a
    hop-by-hop header: RFC 2675 jumbograms, which no link of ours carries).
    """
    buf = memoryview(data)
    n = len(buf)
    if n < 1:
        raise Malformed("ip_truncated")
    if buf[0] >> 4 != 6:
        raise Malformed("ip_bad_version")
    if n < HEADER_LEN:
        raise Malformed("ipv6_truncated")
    vtf, plen, nh, hlim, s_hi, s_lo, d_hi, d_lo = _HDR.unpack_from(buf)
    if plen == 0 and nh == NH_HOP_BY_HOP:
        raise Malformed("ipv6_jumbogram")
    end = HEADER_LEN + plen
    if end > n:
        raise Malformed("ipv6_bad_length")
    return _new(IPv6Packet, ((s_hi << 64) | s_lo, (d_hi << 64) | d_lo, nh, hlim,
                             (vtf >> 20) & 0xFF, vtf & 0xFFFFF, buf[:end]))


class HeaderChain:
    """Where :func:`walk_headers` stopped.

    ``proto`` is the upper-layer protocol whose header starts at ``offset``, or
    :data:`NH_FRAGMENT` for a fragment: then ``offset`` is where the fragment's
    data starts, ``unfragmentable`` where its fragment header starts (the length
    of the per-fragment headers), and ``frag_offset`` (bytes), ``frag_more``,
    ``frag_ident`` and ``frag_next`` are the fragment header's fields.
    ``nh_offset`` is the offset of the byte that named ``proto`` (a Parameter
    Problem's pointer; after reassembly, the byte to rewrite).
    """

    __slots__ = ("frag_ident", "frag_more", "frag_next", "frag_offset", "nh_offset",
                 "offset", "proto", "unfragmentable")

    def __init__(self, proto: int, offset: int, nh_offset: int) -> None:
        self.proto = proto
        self.offset = offset
        self.nh_offset = nh_offset
        self.unfragmentable = 0
        self.frag_offset = 0
        self.frag_more = False
        self.frag_ident = 0
        self.frag_next = NH_NONE


def walk_headers(packet: memoryview, next_header: int, offset: int = HEADER_LEN,
                 nh_offset: int = 6) -> HeaderChain:
    """Follow the extension headers of ``packet`` (the whole IPv6 packet) from
    ``offset``, where a header of type ``next_header`` (named by the byte at
    ``nh_offset``) starts, to the upper-layer header or a fragment (RFC 8200 4).

    * hop-by-hop options (only directly after the fixed header, RFC 8200 4.3) and
      destination options (4.6): their options are checked (:func:`_check_options`);
    * routing (4.4): with segments left the packet is for a router we are not --
      Parameter Problem, code 0, pointing at the routing type; with none it is
      skipped;
    * fragment (4.5): an atomic fragment (offset 0, no more fragments, RFC 6946)
      is skipped; a real one ends the walk (the caller reassembles, then walks the
      reassembled packet from ``frag_next``). A first fragment (offset 0) must
      carry the entire header chain, up to and including the upper-layer header
      (RFC 7112 5, RFC 8200 4.5; :func:`header_chain_complete`): otherwise
      Parameter Problem, code 3, pointer 0 (``ipv6_frag_header_chain_incomplete``)
      -- the rest of the chain could hide in a later fragment, out of sight of
      anything that filters on the first;
    * anything else must be an upper layer the stack knows (:data:`UPPER_LAYER`):
      otherwise Parameter Problem, code 1, pointing at the next-header byte.

    ESP and AH are not understood (no IPsec) and so are unrecognized next headers.
    Drops without a message: ``ipv6_ext_truncated``, ``ipv6_too_many_headers``
    and the options' reasons.
    """
    n = len(packet)
    headers = 0
    while True:
        if next_header in (NH_HOP_BY_HOP, NH_DEST_OPTS, NH_ROUTING):
            if next_header == NH_HOP_BY_HOP and offset != HEADER_LEN:
                raise ParameterProblem("ipv6_hop_by_hop_misplaced",
                                       PP_UNRECOGNIZED_NEXT_HEADER, nh_offset)
            headers += 1
            if headers > MAX_EXTENSION_HEADERS:
                raise Malformed("ipv6_too_many_headers")
            if offset + 8 > n:
                raise Malformed("ipv6_ext_truncated")
            length = (packet[offset + 1] + 1) * 8
            if offset + length > n:
                raise Malformed("ipv6_ext_truncated")
            if next_header == NH_ROUTING:
                if packet[offset + 3]:
                    raise ParameterProblem("ipv6_routing_segments_left",
                                           PP_ERRONEOUS_HEADER, offset + 2)
            else:
                _check_options(packet, offset + 2, offset + length)
            nh_offset = offset
            next_header = packet[offset]
            offset += length
            continue
        if next_header == NH_FRAGMENT:
            headers += 1
            if headers > MAX_EXTENSION_HEADERS:
                raise Malformed("ipv6_too_many_headers")
            if offset + 8 > n:
                raise Malformed("ipv6_ext_truncated")
            nxt, _reserved, off_m, ident = _FRAG.unpack_from(packet, offset)
            if off_m & 0xFFF9 == 0:  # offset 0 and M clear: an atomic fragment
                nh_offset = offset
                next_header = nxt
                offset += 8
                continue
            if off_m & 0xFFF8 == 0 and not header_chain_complete(packet, offset + 8, nxt):
                raise ParameterProblem("ipv6_frag_header_chain_incomplete",
                                       PP_INCOMPLETE_HEADER_CHAIN, 0)
            chain = HeaderChain(NH_FRAGMENT, offset + 8, nh_offset)
            chain.unfragmentable = offset
            chain.frag_offset = off_m & 0xFFF8
            chain.frag_more = bool(off_m & 1)
            chain.frag_ident = ident
            chain.frag_next = nxt
            return chain
        if next_header not in UPPER_LAYER:
            raise ParameterProblem("ipv6_unknown_next_header", PP_UNRECOGNIZED_NEXT_HEADER,
                                   nh_offset)
        return HeaderChain(next_header, offset, nh_offset)


def header_chain_complete(packet: memoryview, offset: int, next_header: int) -> bool:
    """Whether ``packet`` holds the rest of an IPv6 header chain from ``offset``,
    where a header of type ``next_header`` starts (the fragmentable part of a first
    fragment): every extension header whole, then the upper-layer header (its
    fixed part, :data:`_UPPER_HEADER_LEN`; for TCP with the options its data
    offset announces) -- RFC 7112 5's test of a first fragment.

    Headers are only measured here, not checked: the walk of the reassembled
    packet does that. An upper layer the stack does not know has no length to
    check (it is refused after reassembly); a chain beyond
    :data:`MAX_EXTENSION_HEADERS` headers likewise.
    """
    n = len(packet)
    for _ in range(MAX_EXTENSION_HEADERS + 1):
        if next_header in (NH_HOP_BY_HOP, NH_DEST_OPTS, NH_ROUTING):
            if offset + 2 > n:
                return False
            length = (packet[offset + 1] + 1) * 8
        elif next_header == NH_FRAGMENT:
            length = 8
        else:
            break
        if offset + length > n:
            return False
        next_header = packet[offset]
        offset += length
    else:
        return True
    need = _UPPER_HEADER_LEN.get(next_header, 0)
    if next_header == NH_TCP and offset + 13 <= n:
        need = max(need, (packet[offset + 12] >> 4) * 4)
    return offset + need <= n


def _check_options(packet: memoryview, start: int, end: int) -> None:
    """The options of a hop-by-hop or destination-options header (RFC 8200 4.2).

    Pad1, PadN and Router Alert are understood; an unrecognized option is handled
    as the two high bits of its type say: 00 skip it, 01 discard the packet
    (``ipv6_unknown_option``), 10 and 11 discard it with a Parameter Problem, code
    2, pointing at the option (11 only for a unicast destination: the stack takes
    no other). Bounds: ``ipv6_too_many_options``, ``ipv6_too_much_padding``;
    ``ipv6_option_truncated`` when an option runs past its header.
    """
    options = 0
    padding = 0
    i = start
    while i < end:
        kind = packet[i]
        if kind == _OPT_PAD1:
            padding += 1
            if padding > MAX_PADDING:
                raise Malformed("ipv6_too_much_padding")
            i += 1
            continue
        if i + 2 > end:
            raise Malformed("ipv6_option_truncated")
        size = 2 + packet[i + 1]
        if i + size > end:
            raise Malformed("ipv6_option_truncated")
        if kind == _OPT_PADN:
            padding += size
            if padding > MAX_PADDING:
                raise Malformed("ipv6_too_much_padding")
            i += size
            continue
        padding = 0
        options += 1
        if options > MAX_OPTIONS:
            raise Malformed("ipv6_too_many_options")
        if kind != _OPT_ROUTER_ALERT:
            action = kind >> 6
            if action == 1:
                raise Malformed("ipv6_unknown_option")
            if action >= 2:
                raise ParameterProblem("ipv6_unknown_option", PP_UNRECOGNIZED_OPTION, i)
        i += size


def pack_ipv6_header(buf: bytearray | memoryview, offset: int, src: int, dst: int,
                     next_header: int, payload_len: int, hop_limit: int = 64,
                     traffic_class: int = 0, flow_label: int = 0) -> None:
    """Write a 40-byte IPv6 header into ``buf`` at ``offset``."""
    _HDR.pack_into(buf, offset, (6 << 28) | ((traffic_class & 0xFF) << 20)
                   | (flow_label & 0xFFFFF), payload_len, next_header, hop_limit,
                   src >> 64, src & 0xFFFFFFFFFFFFFFFF, dst >> 64, dst & 0xFFFFFFFFFFFFFFFF)


def build_ipv6(src: int, dst: int, next_header: int, payload: BytesLike,
               hop_limit: int = 64) -> bytearray:
    """A complete IPv6 packet around ``payload`` (which may begin with extension
    headers: ``next_header`` names the first)."""
    p = memoryview(payload)
    out = bytearray(HEADER_LEN + len(p))
    pack_ipv6_header(out, 0, src, dst, next_header, len(p), hop_limit)
    out[HEADER_LEN:] = p
    return out


def build_fragments(src: int, dst: int, next_header: int, payload: BytesLike,
                    size: int, ident: int, hop_limit: int = 64) -> list[bytearray]:
    """``payload`` (the fragmentable part: upper-layer header and data) cut into
    fragments carrying at most ``size`` bytes each (rounded down to a multiple of
    8), each with a fragment header (RFC 8200 4.5). For tests and tools: the
    stack itself never fragments."""
    step = max(8, size - size % 8)
    p = memoryview(payload)
    out = []
    for start in range(0, max(len(p), 1), step):
        piece = p[start:start + step]
        more = start + step < len(p)
        frag = _FRAG.pack(next_header, 0, start | int(more), ident & 0xFFFFFFFF)
        out.append(build_ipv6(src, dst, NH_FRAGMENT, frag + bytes(piece), hop_limit))
    return out


def reassembled_header(first: BytesLike, chain: HeaderChain) -> bytes:
    """The per-fragment headers of a fragment (RFC 8200 4.5: the IPv6 header and
    the extension headers before the fragment header) with the byte that named
    the fragment header rewritten to the fragment's next header -- the header of
    the reassembled packet, its payload length still to be set
    (:func:`set_payload_length`)."""
    out = bytearray(memoryview(first)[:chain.unfragmentable])
    out[chain.nh_offset] = chain.frag_next
    return bytes(out)


def set_payload_length(header: BytesLike, payload_len: int) -> bytes:
    """``header`` (an IPv6 header and extension headers) with the payload length of
    a packet whose upper-layer part is ``payload_len`` bytes."""
    out = bytearray(header)
    _H.pack_into(out, 4, len(out) - HEADER_LEN + payload_len)
    return bytes(out)


__all__ = [
    "HEADER_LEN", "MAX_EXTENSION_HEADERS", "MAX_OPTIONS", "MAX_PADDING", "MIN_MTU",
    "NH_AH", "NH_DEST_OPTS", "NH_ESP", "NH_FRAGMENT", "NH_HOP_BY_HOP", "NH_ICMPV6",
    "NH_NONE", "NH_ROUTING", "NH_TCP", "NH_UDP", "PP_ERRONEOUS_HEADER",
    "PP_INCOMPLETE_HEADER_CHAIN", "PP_UNRECOGNIZED_NEXT_HEADER", "PP_UNRECOGNIZED_OPTION",
    "UPPER_LAYER", "HeaderChain", "IPv6Packet", "ParameterProblem", "address_bytes",
    "build_fragments", "build_ipv6", "header_chain_complete", "is_bad_address", "is_ipv6",
    "is_multicast", "pack_ipv6_header", "parse_ipv6", "reassembled_header",
    "set_payload_length", "walk_headers",
]
