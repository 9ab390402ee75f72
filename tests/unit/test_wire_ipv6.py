"""IPv6 wire layer (RFC 8200): the fixed header, the extension-header walk with its
bounds and Parameter Problems, builders, and TCP over IPv6 (pseudo-header, emit)."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from checksum_ref import ref_sum

from tcpstack.wire import checksum as ck
from tcpstack.wire import virtio
from tcpstack.wire.errors import Malformed
from tcpstack.wire.ipv6 import (
    HEADER_LEN,
    MAX_EXTENSION_HEADERS,
    NH_AH,
    NH_DEST_OPTS,
    NH_FRAGMENT,
    NH_HOP_BY_HOP,
    NH_ICMPV6,
    NH_ROUTING,
    NH_TCP,
    NH_UDP,
    PP_ERRONEOUS_HEADER,
    PP_INCOMPLETE_HEADER_CHAIN,
    PP_UNRECOGNIZED_NEXT_HEADER,
    PP_UNRECOGNIZED_OPTION,
    HeaderChain,
    ParameterProblem,
    address_bytes,
    build_fragments,
    build_ipv6,
    is_bad_address,
    is_ipv6,
    parse_ipv6,
    reassembled_header,
    set_payload_length,
    walk_headers,
)
from tcpstack.wire.tcp import ACK, PSH, SYN, TcpOptions, TcpSegment, emit_tcp, parse_tcp

A = int(ipaddress.IPv6Address("fd00::1"))
B = int(ipaddress.IPv6Address("fd00::2"))


def ref_pseudo(src: int, dst: int, nh: int, length: int) -> bytes:
    """The IPv6 pseudo-header as RFC 8200 8.1 draws it."""
    return address_bytes(src) + address_bytes(dst) + struct.pack("!IxxxB", length, nh)


def options_header(nh: int, options: bytes) -> bytes:
    """A hop-by-hop or destination-options header: ``options`` padded to 8n - 2."""
    body = options
    pad = (-(len(body) + 2)) % 8
    if pad == 1:
        body += b"\x00"
    elif pad:
        body += bytes((1, pad - 2)) + bytes(pad - 2)
    return bytes((nh, (len(body) + 2) // 8 - 1)) + body


def walk(packet: bytes | bytearray) -> HeaderChain:
    ip = parse_ipv6(packet)
    return walk_headers(ip.packet, ip.next_header)


def problem(packet: bytes | bytearray) -> ParameterProblem:
    with pytest.raises(ParameterProblem) as info:
        walk(packet)
    return info.value


def reason(packet: bytes | bytearray) -> str:
    with pytest.raises(Malformed) as info:
        walk(packet)
    return info.value.reason


# ------------------------------------------------------------- fixed header


def test_fixed_header_round_trip() -> None:
    pkt = build_ipv6(A, B, NH_TCP, b"payload", hop_limit=7)
    assert len(pkt) == HEADER_LEN + 7
    assert pkt[0] >> 4 == 6
    ip = parse_ipv6(pkt)
    assert (ip.src, ip.dst, ip.next_header, ip.hop_limit) == (A, B, NH_TCP, 7)
    assert bytes(ip.packet[HEADER_LEN:]) == b"payload"
    assert bytes(pkt[8:24]) == ipaddress.IPv6Address(A).packed


def test_trailing_link_padding_is_trimmed() -> None:
    ip = parse_ipv6(build_ipv6(A, B, NH_TCP, b"abc") + b"\0" * 5)
    assert len(ip.packet) == HEADER_LEN + 3


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "ip_truncated"),
        (b"\x45" + bytes(39), "ip_bad_version"),
        (b"\x60" + bytes(38), "ipv6_truncated"),
        (bytes(build_ipv6(A, B, NH_TCP, b"abcd"))[:-1], "ipv6_bad_length"),
        (bytes(build_ipv6(A, B, NH_HOP_BY_HOP, b""))[:4] + b"\0\0"
         + bytes(build_ipv6(A, B, NH_HOP_BY_HOP, b""))[6:], "ipv6_jumbogram"),
    ],
)
def test_bad_fixed_header_reasons(data: bytes, why: str) -> None:
    with pytest.raises(Malformed) as info:
        parse_ipv6(data)
    assert info.value.reason == why


def test_address_classes() -> None:
    """Every address the stack accepts is above 2**32, so the families never collide."""
    for good in ("fd00::2", "2001:db8::1", "fe00::1"):
        a = int(ipaddress.IPv6Address(good))
        assert is_ipv6(a) and not is_bad_address(a)
    for bad in ("::", "::1", "::10.0.0.1", "::ffff:10.0.0.1", "ff02::1", "fe80::1",
                "febf::1"):
        assert is_bad_address(int(ipaddress.IPv6Address(bad))), bad
    assert not is_ipv6(int(ipaddress.IPv4Address("255.255.255.255")))


# ------------------------------------------------------------- extension headers


def test_no_extension_headers() -> None:
    chain = walk(build_ipv6(A, B, NH_TCP, bytes(20)))
    assert (chain.proto, chain.offset, chain.nh_offset) == (NH_TCP, 40, 6)


def test_walk_through_every_kind() -> None:
    """Hop-by-hop (with Router Alert and an option to skip), routing with no segments
    left, an atomic fragment (RFC 6946), destination options, then TCP."""
    hbh = options_header(NH_ROUTING, bytes((5, 2, 0, 0)) + bytes((0x1E, 1, 0)))
    routing = bytes((NH_FRAGMENT, 0, 4, 0)) + bytes(4)  # type 4, segments left 0
    atomic = struct.pack("!BBHI", NH_DEST_OPTS, 0, 0, 99)
    dopts = options_header(NH_TCP, b"")
    payload = hbh + routing + atomic + dopts + bytes(20)
    chain = walk(build_ipv6(A, B, NH_HOP_BY_HOP, payload))
    assert chain.proto == NH_TCP
    assert chain.offset == 40 + len(payload) - 20
    assert chain.nh_offset == 40 + len(hbh) + len(routing) + len(atomic)


def test_fragment_stops_the_walk() -> None:
    frag = struct.pack("!BBHI", NH_TCP, 0, 1232 | 1, 0xABCDEF01)
    chain = walk(build_ipv6(A, B, NH_FRAGMENT, frag + bytes(16)))
    assert chain.proto == NH_FRAGMENT
    assert (chain.frag_offset, chain.frag_more, chain.frag_ident, chain.frag_next) == (
        1232, True, 0xABCDEF01, NH_TCP)
    assert (chain.unfragmentable, chain.offset) == (40, 48)


@pytest.mark.parametrize("nh", [NH_AH, 50, 253, 135, 4])
def test_unknown_next_header_is_parameter_problem_code_1(nh: int) -> None:
    """RFC 8200 4: an unrecognized Next Header -> Parameter Problem code 1, pointing
    at the byte that named it (here after a destination-options header)."""
    pkt = build_ipv6(A, B, NH_DEST_OPTS, options_header(nh, b"") + bytes(8))
    p = problem(pkt)
    assert (p.reason, p.code, p.pointer) == ("ipv6_unknown_next_header",
                                             PP_UNRECOGNIZED_NEXT_HEADER, 40)
    p = problem(build_ipv6(A, B, nh, bytes(8)))
    assert p.pointer == 6


def test_hop_by_hop_not_first_is_parameter_problem() -> None:
    """RFC 8200 4.3: hop-by-hop only immediately after the IPv6 header."""
    pkt = build_ipv6(A, B, NH_DEST_OPTS, options_header(NH_HOP_BY_HOP, b"")
                     + options_header(NH_TCP, b"") + bytes(20))
    p = problem(pkt)
    assert (p.code, p.pointer) == (PP_UNRECOGNIZED_NEXT_HEADER, 40)


def test_routing_header_with_segments_left() -> None:
    """RFC 8200 4.4: segments left non-zero at a host -> code 0 at the routing type."""
    routing = bytes((NH_TCP, 2, 0, 1)) + bytes(4) + address_bytes(A)
    p = problem(build_ipv6(A, B, NH_ROUTING, routing + bytes(20)))
    assert (p.reason, p.code, p.pointer) == ("ipv6_routing_segments_left",
                                             PP_ERRONEOUS_HEADER, 42)


@pytest.mark.parametrize(("kind", "outcome"), [
    (0x1E, None),  # 00: skip
    (0x5E, "ipv6_unknown_option"),  # 01: discard silently
    (0x9E, PP_UNRECOGNIZED_OPTION),  # 10: discard, Parameter Problem code 2
    (0xDE, PP_UNRECOGNIZED_OPTION),  # 11: likewise (unicast destination)
    (0xC2, PP_UNRECOGNIZED_OPTION),  # jumbo payload: not supported
])
def test_unrecognized_option_action_bits(kind: int, outcome: str | int | None) -> None:
    """RFC 8200 4.2: the two high bits of an unrecognized option's type."""
    pkt = build_ipv6(A, B, NH_DEST_OPTS,
                     options_header(NH_TCP, bytes((1, 0)) + bytes((kind, 4)) + bytes(4))
                     + bytes(20))
    if outcome is None:
        assert walk(pkt).proto == NH_TCP
    elif isinstance(outcome, str):
        assert reason(pkt) == outcome
    else:
        p = problem(pkt)
        assert (p.code, p.pointer) == (outcome, 40 + 2 + 2)


def test_option_bounds() -> None:
    """RFC 8504 5.3: at most 8 options and 7 bytes of consecutive padding."""
    nine = b"".join(bytes((0x1E, 0)) for _ in range(9))
    assert reason(build_ipv6(A, B, NH_DEST_OPTS, options_header(NH_TCP, nine)
                             + bytes(20))) == "ipv6_too_many_options"
    eight = b"".join(bytes((0x1E, 0)) for _ in range(8))
    assert walk(build_ipv6(A, B, NH_DEST_OPTS, options_header(NH_TCP, eight) + bytes(20))
                ).proto == NH_TCP
    padded = bytes((NH_TCP, 1)) + bytes((1, 12)) + bytes(12)  # PadN of 14 bytes
    assert reason(build_ipv6(A, B, NH_DEST_OPTS, padded + bytes(20))) \
        == "ipv6_too_much_padding"
    runs = bytes((NH_TCP, 1)) + bytes(14)  # fourteen Pad1
    assert reason(build_ipv6(A, B, NH_DEST_OPTS, runs + bytes(20))) == "ipv6_too_much_padding"
    overrun = bytes((NH_TCP, 0)) + bytes((0x1E, 9)) + bytes(2)
    assert reason(build_ipv6(A, B, NH_DEST_OPTS, overrun + bytes(20))) \
        == "ipv6_option_truncated"


def test_header_count_bound() -> None:
    """More than MAX_EXTENSION_HEADERS headers: dropped, however well formed."""
    n = MAX_EXTENSION_HEADERS
    ok = b"".join(options_header(NH_DEST_OPTS if i < n - 1 else NH_TCP, b"") for i in range(n))
    assert walk(build_ipv6(A, B, NH_DEST_OPTS, ok + bytes(20))).proto == NH_TCP
    too_many = b"".join(options_header(NH_DEST_OPTS if i < n else NH_TCP, b"")
                        for i in range(n + 1))
    assert reason(build_ipv6(A, B, NH_DEST_OPTS, too_many + bytes(20))) \
        == "ipv6_too_many_headers"


@pytest.mark.parametrize("nh", [NH_HOP_BY_HOP, NH_DEST_OPTS, NH_ROUTING, NH_FRAGMENT])
def test_truncated_extension_header(nh: int) -> None:
    assert reason(build_ipv6(A, B, nh, bytes(6))) == "ipv6_ext_truncated"
    if nh != NH_FRAGMENT:
        assert reason(build_ipv6(A, B, nh, bytes((NH_TCP, 3)) + bytes(14))) \
            == "ipv6_ext_truncated"


def test_fragments_and_reassembled_header() -> None:
    data = bytes(range(256)) * 10
    frags = build_fragments(A, B, NH_ICMPV6, data, 1000, 7)
    assert len(frags) == 3
    chains = [walk(f) for f in frags]
    assert [c.frag_offset for c in chains] == [0, 1000, 2000]
    assert [c.frag_more for c in chains] == [True, True, False]
    joined = b"".join(bytes(f[48:]) for f in frags)
    assert joined == data
    first = chains[0]
    header = set_payload_length(reassembled_header(frags[0], first), len(data))
    whole = parse_ipv6(header + joined)
    assert whole.next_header == NH_ICMPV6
    assert len(whole.packet) == 40 + len(data)


def first_fragment(nh: int, fragmentable: bytes, carried: int) -> bytearray:
    """The first of several fragments: ``carried`` bytes (a multiple of 8) of
    ``fragmentable`` (whose first header is of type ``nh``), "more fragments" set."""
    frag = struct.pack("!BBHI", nh, 0, 1, 77)
    return build_ipv6(A, B, NH_FRAGMENT, frag + fragmentable[:carried])


TCP_WITH_OPTIONS = bytes(emit_tcp(TcpSegment(1, 2, 3, 4, SYN, 65535, TcpOptions(
    mss=1440, wscale=7, sack_permitted=True, timestamps=(1, 0))), A, B, 0)[HEADER_LEN:])


def test_first_fragment_must_carry_the_whole_header_chain() -> None:
    """RFC 7112 5: a first fragment without every header up to and including the
    upper-layer one is refused with Parameter Problem code 3, pointer 0."""
    assert len(TCP_WITH_OPTIONS) == 40 and TCP_WITH_OPTIONS[12] >> 4 == 10
    data = TCP_WITH_OPTIONS + bytes(64)
    for carried in (8, 16, 24, 32):  # short of the 20 fixed bytes, or of the options
        p = problem(first_fragment(NH_TCP, data, carried))
        assert (p.reason, p.code, p.pointer) == \
            ("ipv6_frag_header_chain_incomplete", PP_INCOMPLETE_HEADER_CHAIN, 0)
    chain = walk(first_fragment(NH_TCP, data, 40))
    assert (chain.proto, chain.frag_offset, chain.frag_more) == (NH_FRAGMENT, 0, True)


def test_first_fragment_chain_through_extension_headers() -> None:
    """Extension headers after the fragment header count too: each must be whole,
    and the upper-layer header behind them present."""
    dopts = options_header(NH_UDP, bytes((1, 10)) + bytes(10))  # 16 bytes
    assert len(dopts) == 16
    data = dopts + bytes(8) + bytes(40)
    for carried in (8, 16):  # the options header cut, then the UDP header missing
        assert problem(first_fragment(NH_DEST_OPTS, data, carried)).reason \
            == "ipv6_frag_header_chain_incomplete"
    assert walk(first_fragment(NH_DEST_OPTS, data, 24)).proto == NH_FRAGMENT
    # ICMPv6's header is 4 bytes; "no next header" has none.
    assert walk(first_fragment(NH_ICMPV6, bytes(16), 8)).proto == NH_FRAGMENT
    assert walk(first_fragment(59, bytes(16), 8)).proto == NH_FRAGMENT


def test_only_the_first_fragment_is_held_to_the_header_chain() -> None:
    """A later fragment carries no headers; an atomic fragment is no fragment
    (RFC 6946) and goes on to the upper layer, which judges a short header; an
    upper layer the stack does not know has no length to check here."""
    later = build_ipv6(A, B, NH_FRAGMENT, struct.pack("!BBHI", NH_TCP, 0, 8 | 1, 77)
                       + bytes(8))
    assert walk(later).frag_offset == 8
    atomic = build_ipv6(A, B, NH_FRAGMENT, struct.pack("!BBHI", NH_TCP, 0, 0, 77) + bytes(8))
    assert walk(atomic).proto == NH_TCP
    assert walk(first_fragment(253, bytes(16), 8)).proto == NH_FRAGMENT


# ------------------------------------------------------------- TCP over IPv6


def test_tcp_pseudo_header_matches_reference() -> None:
    for src, dst, length in ((A, B, 20), ((1 << 128) - 2, (1 << 127) + 5, 0xFFFF),
                             (B, A, 70000)):
        ref = ref_sum(ref_pseudo(src, dst, 6, length))
        assert ck.pseudo_header_ipv6(src, dst, 6, length) % 0xFFFF == ref % 0xFFFF


@pytest.mark.parametrize("payload", [b"", b"x", b"hello, world", bytes(range(256)) * 9])
def test_emit_and_parse_tcp_over_ipv6(payload: bytes) -> None:
    seg = TcpSegment(40000, 80, 123456, 654321, ACK | PSH, 500,
                     TcpOptions(timestamps=(1, 2)), payload)
    pkt = emit_tcp(seg, B, A, ident=0, ttl=33)
    ip = parse_ipv6(pkt)
    assert (ip.src, ip.dst, ip.next_header, ip.hop_limit) == (B, A, NH_TCP, 33)
    tcp_bytes = bytes(ip.packet[40:])
    # The kernel's rule: the one's-complement sum with the pseudo-header is 0xFFFF.
    assert ref_sum(ref_pseudo(B, A, 6, len(tcp_bytes)) + tcp_bytes) == 0xFFFF
    back = parse_tcp(tcp_bytes, B, A)
    assert (back.src_port, back.dst_port, back.seq, back.ack) == (40000, 80, 123456, 654321)
    assert bytes(back.payload) == payload
    assert back.options.timestamps == (1, 2)


def test_tcp_over_ipv6_bad_checksum() -> None:
    pkt = bytearray(emit_tcp(TcpSegment(1, 2, 3, 4, SYN, 5), B, A, 0))
    pkt[-1] ^= 1
    with pytest.raises(Malformed) as info:
        parse_tcp(bytes(pkt[40:]), B, A)
    assert info.value.reason == "tcp_bad_checksum"
    # The same bytes under IPv4 addresses would not verify either way round.
    with pytest.raises(Malformed):
        parse_tcp(bytes(emit_tcp(TcpSegment(1, 2, 3, 4, SYN, 5), B, A, 0)[40:]), 1, 2)


def test_emit_tcp_ipv6_with_vnet_header_asks_tso6() -> None:
    seg = TcpSegment(80, 40000, 1, 2, ACK, 100, payload=bytes(5000))
    pkt = emit_tcp(seg, B, A, 0, vnet=True, gso_size=1428)
    flags, gso, hdr_len, gso_size, start, off = virtio.HDR.unpack_from(pkt)
    assert (flags, gso, hdr_len, gso_size, start, off) == (
        virtio.F_NEEDS_CSUM, virtio.GSO_TCPV6, 60, 1428, 40, 16)
    body = bytes(pkt[virtio.HEADER_LEN:])
    field = struct.unpack_from("!H", body, 56)[0]
    # NEEDS_CSUM: the field holds the folded pseudo-header sum; adding the segment's
    # own sum (field zeroed) and complementing gives the real checksum.
    seg_bytes = bytearray(body[40:])
    seg_bytes[16:18] = b"\0\0"
    assert field == ref_sum(ref_pseudo(B, A, 6, len(seg_bytes)))
