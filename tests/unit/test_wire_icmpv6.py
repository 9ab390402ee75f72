"""ICMPv6 (RFC 4443): checksum over the IPv6 pseudo-header, echo, errors and their
quotes, and the quoted TCP segment an error carries."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from tcpstack.wire.errors import Malformed
from tcpstack.wire.icmpv6 import (
    DEST_UNREACHABLE,
    ECHO_REPLY,
    ECHO_REQUEST,
    MAX_QUOTE,
    PACKET_TOO_BIG,
    build_echo_reply,
    build_error,
    build_icmpv6,
    build_packet_too_big,
    is_error,
    parse_icmpv6,
    parse_quoted_tcp,
)
from tcpstack.wire.ipv6 import (
    NH_DEST_OPTS,
    NH_FRAGMENT,
    NH_ICMPV6,
    NH_TCP,
    NH_UDP,
    address_bytes,
    build_ipv6,
)
from tcpstack.wire.tcp import ACK, TcpSegment, emit_tcp

A = int(ipaddress.IPv6Address("fd00::1"))
B = int(ipaddress.IPv6Address("fd00::2"))


def ref_valid(src: int, dst: int, msg: bytes | bytearray) -> bool:
    data = address_bytes(src) + address_bytes(dst) + struct.pack("!IxxxB", len(msg), 58)
    data += bytes(msg) + b"\0" * (len(msg) % 2)
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def reason_of(fn: object, *args: object) -> str:
    with pytest.raises(Malformed) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.reason


def test_echo_round_trip_with_pseudo_header_checksum() -> None:
    req = build_icmpv6(A, B, ECHO_REQUEST, 0, (0x1234 << 16) | 9, b"ping6 data")
    assert ref_valid(A, B, req)
    msg = parse_icmpv6(req, A, B)
    assert (msg.type, msg.code, msg.rest, bytes(msg.body)) == (
        ECHO_REQUEST, 0, (0x1234 << 16) | 9, b"ping6 data")
    reply = build_echo_reply(B, A, msg)
    assert ref_valid(B, A, reply)
    back = parse_icmpv6(reply, B, A)
    assert (back.type, back.rest, bytes(back.body)) == (ECHO_REPLY, msg.rest, b"ping6 data")


def test_checksum_covers_the_addresses() -> None:
    """RFC 4443 2.3: unlike ICMPv4, the checksum includes the pseudo-header, so a
    message moved to another address pair fails."""
    req = build_icmpv6(A, B, ECHO_REQUEST, 0, 1, b"x")
    assert reason_of(parse_icmpv6, req, A, B + 1) == "icmpv6_bad_checksum"
    assert reason_of(parse_icmpv6, req[:7], A, B) == "icmpv6_truncated"
    parse_icmpv6(req, A, B + 1, False)  # the offload vouched for it: not checked


def test_error_quote_is_bounded_by_the_minimum_mtu() -> None:
    """RFC 4443 2.4 (c): as much of the invoking packet as fits in 1280 bytes."""
    big = build_ipv6(A, B, NH_UDP, bytes(3000))
    err = build_error(B, A, DEST_UNREACHABLE, 4, 0, big)
    assert len(err) == 8 + MAX_QUOTE == 1280 - 40
    assert bytes(err[8:]) == bytes(big[:MAX_QUOTE])
    assert ref_valid(B, A, err)
    small = build_ipv6(A, B, NH_UDP, bytes(10))
    assert bytes(build_error(B, A, DEST_UNREACHABLE, 4, 0, small)[8:]) == bytes(small)


def test_is_error() -> None:
    assert all(is_error(t) for t in (1, 2, 3, 4, 127))
    assert not any(is_error(t) for t in (128, 129, 135, 255))


def test_packet_too_big_carries_mtu_and_quote() -> None:
    seg = emit_tcp(TcpSegment(80, 40000, 777, 1, ACK, 100, payload=bytes(1400)), B, A, 0)
    ptb = build_packet_too_big(A, B, 1280, seg)
    msg = parse_icmpv6(ptb, A, B)
    assert (msg.type, msg.rest) == (PACKET_TOO_BIG, 1280)
    q = parse_quoted_tcp(msg.body)
    assert (q.src, q.dst, q.src_port, q.dst_port, q.seq) == (B, A, 80, 40000, 777)
    assert q.total_len == len(seg)


def test_quote_through_extension_headers() -> None:
    tcp = struct.pack("!HHI", 80, 40000, 42)
    dopts = bytes((NH_FRAGMENT, 0)) + bytes((1, 4)) + bytes(4)
    frag0 = struct.pack("!BBHI", NH_TCP, 0, 1, 5)  # first fragment: the TCP header is there
    q = parse_quoted_tcp(build_ipv6(B, A, NH_DEST_OPTS, dopts + frag0 + tcp))
    assert (q.src_port, q.dst_port, q.seq) == (80, 40000, 42)


@pytest.mark.parametrize(("body", "why"), [
    (bytes(39), "icmp_quote_truncated"),
    (b"\x45" + bytes(47), "icmp_quote_bad_header"),
    (bytes(build_ipv6(B, A, NH_TCP, bytes(7))), "icmp_quote_truncated"),
    (bytes(build_ipv6(B, A, NH_UDP, bytes(8))), "icmp_quote_not_tcp"),
    (bytes(build_ipv6(B, A, NH_ICMPV6, bytes(8))), "icmp_quote_not_tcp"),
    (bytes(build_ipv6(B, A, NH_FRAGMENT, struct.pack("!BBHI", NH_TCP, 0, 8, 1) + bytes(8))),
     "icmp_quote_fragment"),
    # A chain of destination-options headers longer than the bound.
    (bytes(build_ipv6(B, A, NH_DEST_OPTS,
                      b"".join(bytes((NH_DEST_OPTS, 0)) + bytes(6) for _ in range(10)))),
     "icmp_quote_bad_header"),
])
def test_bad_quotes(body: bytes, why: str) -> None:
    assert reason_of(parse_quoted_tcp, body) == why
