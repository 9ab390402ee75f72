"""Property tests for the wire parsers and the IPv4+TCP emitter."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpstack.wire.errors import Malformed
from tcpstack.wire.icmp import build_icmp, parse_icmp
from tcpstack.wire.ipv4 import PROTO_TCP, build_ipv4, parse_ipv4
from tcpstack.wire.tcp import (
    HEADER_LEN,
    MAX_OPTIONS_LEN,
    SYN,
    TcpOptions,
    TcpSegment,
    emit_tcp_ipv4,
    encode_options,
    parse_options,
    parse_tcp,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
sack_block = st.tuples(u32, u32)


# ---------------------------------------------------------------- arbitrary input


def _parses_or_malformed(fn: Callable[..., object], *args: object) -> bool:
    """Call ``fn``; True if it returned, False if it raised Malformed; other errors propagate."""
    try:
        fn(*args)
    except Malformed as exc:
        assert isinstance(exc.reason, str)
        assert exc.reason
        return False
    return True


@FUZZ
@given(st.binary(max_size=128))
def test_parse_ipv4_only_raises_malformed(data: bytes) -> None:
    _parses_or_malformed(parse_ipv4, data)


@FUZZ
@given(st.binary(max_size=20), st.binary(max_size=64), u8, u16)
def test_parse_ipv4_on_mutated_header_only_raises_malformed(
    head: bytes, tail: bytes, first: int, total: int
) -> None:
    # Bias toward version 4 with plausible lengths so deeper checks are reached.
    buf = bytearray(build_ipv4(1, 2, PROTO_TCP, tail))
    buf[: len(head)] = head
    buf[0] = 0x40 | (first & 0x0F)
    buf[2:4] = total.to_bytes(2, "big")
    if _parses_or_malformed(parse_ipv4, buf):
        pkt = parse_ipv4(buf)
        assert pkt.header_len + len(pkt.payload) <= len(buf)


@FUZZ
@given(st.binary(max_size=128), u32, u32, st.booleans())
def test_parse_tcp_only_raises_malformed(data: bytes, src: int, dst: int, verify: bool) -> None:
    _parses_or_malformed(parse_tcp, data, src, dst, verify)


@FUZZ
@given(st.binary(min_size=HEADER_LEN, max_size=HEADER_LEN), st.binary(max_size=60), u8)
def test_parse_tcp_with_arbitrary_options_only_raises_malformed(
    head: bytes, rest: bytes, doff: int
) -> None:
    buf = bytearray(head + rest)
    buf[12] = (doff & 0xF0) | (buf[12] & 0x0F)
    if _parses_or_malformed(parse_tcp, buf, 0, 0, False):
        seg = parse_tcp(buf, 0, 0, verify_checksum=False)
        assert HEADER_LEN + len(seg.payload) <= len(buf)


@FUZZ
@given(st.binary(max_size=MAX_OPTIONS_LEN))
def test_parse_options_only_raises_malformed(data: bytes) -> None:
    if _parses_or_malformed(parse_options, memoryview(data)):
        opts = parse_options(memoryview(data))
        assert opts.wscale is None or 0 <= opts.wscale <= 14
        assert len(opts.sack_blocks) <= 4


@FUZZ
@given(st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 8, 10, 18, 30, 255]), max_size=MAX_OPTIONS_LEN))
def test_parse_options_on_option_like_bytes_only_raises_malformed(data: list[int]) -> None:
    # Drawing from option kinds and plausible lengths reaches the per-kind branches.
    _parses_or_malformed(parse_options, memoryview(bytes(data)))


@FUZZ
@given(st.binary(max_size=128))
def test_parse_icmp_only_raises_malformed(data: bytes) -> None:
    _parses_or_malformed(parse_icmp, data)


# ---------------------------------------------------------------- emit -> parse


@st.composite
def segments(draw: st.DrawFn) -> TcpSegment:
    flags = draw(u8)
    ts = draw(st.none() | st.tuples(u32, u32))
    if flags & SYN:
        opts = TcpOptions(
            mss=draw(st.none() | u16),
            wscale=draw(st.none() | st.integers(0, 14)),
            sack_permitted=draw(st.booleans()),
            timestamps=ts,
        )
    else:
        room = 3 if ts is not None else 4
        opts = TcpOptions(
            sack_blocks=tuple(draw(st.lists(sack_block, max_size=room))), timestamps=ts
        )
    return TcpSegment(
        src_port=draw(u16),
        dst_port=draw(u16),
        seq=draw(u32),
        ack=draw(u32),
        flags=flags,
        window=draw(u16),
        options=opts,
        payload=draw(st.binary(max_size=1500)),
        urgent=draw(u16),
    )


@FUZZ
@given(segments(), u32, u32, u16, u8)
def test_emit_then_parse_round_trips(
    seg: TcpSegment, src: int, dst: int, ident: int, ttl: int
) -> None:
    raw = emit_tcp_ipv4(seg, src, dst, ident, ttl)
    ip = parse_ipv4(raw)
    assert (ip.src, ip.dst, ip.proto, ip.ident, ip.ttl) == (src, dst, PROTO_TCP, ident, ttl)
    got = parse_tcp(ip.payload, ip.src, ip.dst)
    assert got.src_port == seg.src_port
    assert got.dst_port == seg.dst_port
    assert got.seq == seg.seq
    assert got.ack == seg.ack
    assert got.flags == seg.flags
    assert got.window == seg.window
    assert got.urgent == seg.urgent
    assert got.options == seg.options
    assert bytes(got.payload) == bytes(seg.payload)
    assert got.seg_len == seg.seg_len


@FUZZ
@given(segments())
def test_encoded_options_are_word_aligned_and_fit(seg: TcpSegment) -> None:
    enc = encode_options(seg.options, bool(seg.flags & SYN))
    assert len(enc) % 4 == 0
    assert len(enc) <= MAX_OPTIONS_LEN
    assert parse_options(memoryview(enc)) == seg.options


@FUZZ
@given(u8, u8, u32, st.binary(max_size=600))
def test_build_icmp_then_parse_round_trips(type_: int, code: int, rest: int, body: bytes) -> None:
    msg = parse_icmp(build_icmp(type_, code, rest, body))
    assert (msg.type, msg.code, msg.rest) == (type_, code, rest)
    assert bytes(msg.body) == body


# ---------------------------------------------------------------- bit flips


@FUZZ
@given(segments(), u32, u32, st.data())
def test_single_bit_flip_in_emitted_packet_is_detected(
    seg: TcpSegment, src: int, dst: int, data: st.DataObject
) -> None:
    raw = emit_tcp_ipv4(seg, src, dst, ident=1)
    bit = data.draw(st.integers(0, len(raw) * 8 - 1), label="bit")
    raw[bit // 8] ^= 1 << (bit % 8)
    # The IPv4 header checksum covers bytes 0-19 and the TCP checksum covers the rest,
    # and flipping one bit always changes a one's-complement sum, so every flip must be
    # caught: either by a checksum or by an earlier structural check.
    try:
        ip = parse_ipv4(raw)
        parse_tcp(ip.payload, ip.src, ip.dst)
    except Malformed as exc:
        if bit < 20 * 8:
            assert exc.reason.startswith(("ip_", "ipv4_", "ipv6_"))
        else:
            assert exc.reason in {"tcp_bad_checksum", "tcp_bad_data_offset"}
    else:
        raise AssertionError(f"bit flip {bit} went undetected")
