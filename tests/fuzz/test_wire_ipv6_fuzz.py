"""Property tests for the IPv6 and ICMPv6 wire layer: round trips, and arbitrary or
mutated input ending in a result or :class:`Malformed` (with a reason), never in
another exception."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tcpstack.wire.errors import Malformed
from tcpstack.wire.icmpv6 import build_icmpv6, parse_icmpv6, parse_quoted_tcp
from tcpstack.wire.ipv6 import (
    HEADER_LEN,
    MAX_EXTENSION_HEADERS,
    NH_DEST_OPTS,
    NH_FRAGMENT,
    NH_HOP_BY_HOP,
    NH_ROUTING,
    NH_TCP,
    ParameterProblem,
    build_ipv6,
    parse_ipv6,
    walk_headers,
)
from tcpstack.wire.tcp import TcpOptions, TcpSegment, emit_tcp, parse_tcp

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

address = st.integers(1 << 33, (1 << 128) - 1)
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def _walk_or_malformed(data: bytes) -> None:
    try:
        ip = parse_ipv6(data)
        chain = walk_headers(ip.packet, ip.next_header)
    except ParameterProblem as p:
        assert p.reason
        assert 0 <= p.pointer < len(data)  # the pointer names a byte of the packet
        return
    except Malformed as e:
        assert e.reason
        return
    assert HEADER_LEN <= chain.offset <= len(ip.packet)


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    _walk_or_malformed(b"\x60" + data)


# Extension headers built from random parts: plausible enough to reach the walk's
# deeper checks (options, routing, fragments, the bounds).
ext_kind = st.sampled_from([NH_HOP_BY_HOP, NH_DEST_OPTS, NH_ROUTING, NH_FRAGMENT, NH_TCP, 51, 7])
ext_header = st.tuples(ext_kind, st.integers(0, 3), st.binary(min_size=6, max_size=30))


@FUZZ
@given(ext_kind, st.lists(ext_header, max_size=MAX_EXTENSION_HEADERS + 2),
       st.binary(max_size=40))
def test_random_extension_chains(first: int, headers: list[tuple[int, int, bytes]],
                                 tail: bytes) -> None:
    body = b""
    for nh, length, data in headers:
        size = (length + 1) * 8
        body += bytes((nh, length)) + (data * 8)[: size - 2].ljust(size - 2, b"\0")
    _walk_or_malformed(bytes(build_ipv6(1 << 100, 1 << 101, first, body + tail)))


@FUZZ
@given(address, address, u8, st.binary(max_size=300), st.integers(0, 255))
def test_ipv6_round_trip(src: int, dst: int, nh: int, payload: bytes, hop: int) -> None:
    assume(payload or nh != NH_HOP_BY_HOP)  # payload length 0 + hop-by-hop: a jumbogram
    ip = parse_ipv6(build_ipv6(src, dst, nh, payload, hop))
    assert (ip.src, ip.dst, ip.next_header, ip.hop_limit) == (src, dst, nh, hop)
    assert bytes(ip.packet[HEADER_LEN:]) == payload


@FUZZ
@given(address, address, u16, u16, u32, u32, u8, u16, st.binary(max_size=200),
       st.one_of(st.none(), st.tuples(u32, u32)))
def test_tcp_over_ipv6_round_trip(src: int, dst: int, sport: int, dport: int, seq: int,
                                  ack: int, flags: int, window: int, payload: bytes,
                                  ts: tuple[int, int] | None) -> None:
    seg = TcpSegment(sport, dport, seq, ack, flags & 0x3F & ~0x02, window,
                     TcpOptions(timestamps=ts), payload)
    pkt = emit_tcp(seg, src, dst, 0)
    ip = parse_ipv6(pkt)
    chain = walk_headers(ip.packet, ip.next_header)
    assert chain.proto == NH_TCP
    back = parse_tcp(ip.packet[chain.offset:], ip.src, ip.dst)
    assert (back.src_port, back.dst_port, back.seq, back.ack, back.window) == (
        sport, dport, seq, ack, window)
    assert bytes(back.payload) == payload
    assert back.options.timestamps == ts


@FUZZ
@given(address, address, u8, u8, u32, st.binary(max_size=200), st.integers(0, 200))
def test_icmpv6_round_trip_and_corruption(src: int, dst: int, type_: int, code: int,
                                          rest: int, body: bytes, flip: int) -> None:
    msg = build_icmpv6(src, dst, type_, code, rest, body)
    parsed = parse_icmpv6(msg, src, dst)
    assert (parsed.type, parsed.code, parsed.rest, bytes(parsed.body)) == (
        type_, code, rest, body)
    if flip < len(msg):
        msg[flip] ^= 0x40
        try:
            parse_icmpv6(msg, src, dst)
        except Malformed as e:
            assert e.reason == "icmpv6_bad_checksum"
        else:
            raise AssertionError("a flipped bit went unnoticed")


@FUZZ
@given(st.binary(max_size=120))
def test_quoted_tcp_only_raises_malformed(data: bytes) -> None:
    try:
        parse_quoted_tcp(b"\x60" + data)
    except Malformed as e:
        assert e.reason.startswith("icmp_quote_")
