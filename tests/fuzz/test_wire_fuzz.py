"""Property tests for the wire parsers and builders.

* Arbitrary bytes: every parser (IPv4, TCP and its options, ICMP, the virtio-net
  header) either returns or raises :class:`Malformed` with one of the reasons its
  docstring documents -- never anything else.
* Round trips: what a builder emits parses back to the same fields, and what
  parses from arbitrary bytes is emitted again consistently (every field the
  builder can carry survives parse -> build -> parse).
* Bit flips in an emitted packet are always detected.
"""

from __future__ import annotations

from collections.abc import Callable

from fuzz_settings import examples
from hypothesis import given
from hypothesis import strategies as st

from tcpstack.wire import checksum as ck
from tcpstack.wire import virtio
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

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
sack_block = st.tuples(u32, u32)
u24 = st.integers(0, 0xFFFFFF)
accecn_fields = st.none() | st.tuples(u24, u24, u24)

# The reasons each parser documents (its docstring; the stack counts them by name).
IPV4_REASONS = frozenset({"ip_truncated", "ip_bad_version",
                          "ipv4_truncated", "ipv4_bad_ihl", "ipv4_bad_length",
                          "ipv4_bad_checksum", "ipv4_fragment"})
TCP_REASONS = frozenset({"tcp_truncated", "tcp_bad_data_offset", "tcp_bad_checksum",
                         "tcp_bad_option_length"})
OPTION_REASONS = frozenset({"tcp_bad_option_length"})
ICMP_REASONS = frozenset({"icmp_truncated", "icmp_bad_checksum"})
VNET_REASONS = frozenset({"vnet_truncated"})


# ---------------------------------------------------------------- arbitrary input


def _parses_or_malformed(reasons: frozenset[str], fn: Callable[..., object],
                         *args: object) -> bool:
    """Call ``fn``; True if it returned, False if it raised Malformed with one of
    ``reasons``; any other exception (or reason) fails the test."""
    try:
        fn(*args)
    except Malformed as exc:
        assert exc.reason in reasons, f"undocumented reason {exc.reason!r}"
        assert str(exc) == exc.reason
        return False
    return True


@examples(300)
@given(st.binary(max_size=128))
def test_parse_ipv4_on_arbitrary_bytes_returns_or_raises_a_documented_malformed(
        data: bytes) -> None:
    _parses_or_malformed(IPV4_REASONS, parse_ipv4, data)


@examples(300)
@given(st.binary(max_size=20), st.binary(max_size=64), u8, u16)
def test_parse_ipv4_on_mutated_header_only_raises_malformed(
    head: bytes, tail: bytes, first: int, total: int
) -> None:
    # Bias toward version 4 with plausible lengths so deeper checks are reached.
    buf = bytearray(build_ipv4(1, 2, PROTO_TCP, tail))
    buf[: len(head)] = head
    buf[0] = 0x40 | (first & 0x0F)
    buf[2:4] = total.to_bytes(2, "big")
    if _parses_or_malformed(IPV4_REASONS, parse_ipv4, buf):
        pkt = parse_ipv4(buf)
        assert pkt.header_len + len(pkt.payload) <= len(buf)


@examples(200)
@given(st.binary(min_size=20, max_size=20), st.binary(max_size=40), st.data())
def test_parse_ipv4_with_a_valid_header_checksum_reaches_every_check(
    head: bytes, tail: bytes, data: st.DataObject
) -> None:
    # A random header whose checksum is made valid: the length, IHL and fragment
    # checks run on garbage that passes the checksum.
    buf = bytearray(head + tail)
    buf[0] = 0x40 | data.draw(st.integers(0, 15), label="ihl")
    hlen = max(20, (buf[0] & 0x0F) * 4)
    if hlen <= len(buf):
        buf[10:12] = b"\0\0"
        buf[10:12] = ck.checksum(buf[:hlen]).to_bytes(2, "big")
    if _parses_or_malformed(IPV4_REASONS, parse_ipv4, buf):
        pkt = parse_ipv4(buf)
        assert 20 <= pkt.header_len <= 60
        assert pkt.header_len + len(pkt.payload) <= len(buf)


@examples(300)
@given(st.binary(max_size=128), u32, u32, st.booleans())
def test_parse_tcp_on_arbitrary_bytes_returns_or_raises_a_documented_malformed(
        data: bytes, src: int, dst: int, verify: bool) -> None:
    _parses_or_malformed(TCP_REASONS, parse_tcp, data, src, dst, verify)


@examples(300)
@given(st.binary(min_size=HEADER_LEN, max_size=HEADER_LEN), st.binary(max_size=60), u8)
def test_parse_tcp_with_arbitrary_options_only_raises_malformed(
    head: bytes, rest: bytes, doff: int
) -> None:
    buf = bytearray(head + rest)
    buf[12] = (doff & 0xF0) | (buf[12] & 0x0F)
    if _parses_or_malformed(TCP_REASONS, parse_tcp, buf, 0, 0, False):
        seg = parse_tcp(buf, 0, 0, verify_checksum=False)
        assert HEADER_LEN + len(seg.payload) <= len(buf)


@examples(300)
@given(st.binary(max_size=MAX_OPTIONS_LEN))
def test_parse_options_on_arbitrary_bytes_only_raises_malformed(data: bytes) -> None:
    if _parses_or_malformed(OPTION_REASONS, parse_options, memoryview(data)):
        opts = parse_options(memoryview(data))
        assert opts.wscale is None or 0 <= opts.wscale <= 14
        assert len(opts.sack_blocks) <= 4
        assert opts.mss is None or 0 <= opts.mss <= 0xFFFF


@examples(300)
@given(st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 8, 10, 11, 18, 30, 172, 174, 255]),
                max_size=MAX_OPTIONS_LEN))
def test_parse_options_on_option_like_bytes_only_raises_malformed(data: list[int]) -> None:
    # Drawing from option kinds and plausible lengths reaches the per-kind branches.
    _parses_or_malformed(OPTION_REASONS, parse_options, memoryview(bytes(data)))


@examples(200)
@given(st.binary(max_size=128), st.booleans())
def test_parse_icmp_on_arbitrary_bytes_returns_or_raises_a_documented_malformed(
        data: bytes, verify: bool) -> None:
    _parses_or_malformed(ICMP_REASONS, parse_icmp, data, verify)


@examples(100)
@given(st.binary(max_size=32))
def test_parse_vnet_flags_on_arbitrary_bytes_returns_the_first_byte_or_malformed(
        data: bytes) -> None:
    if _parses_or_malformed(VNET_REASONS, virtio.parse_flags, data):
        assert virtio.parse_flags(data) == data[0]
        assert len(data) >= virtio.HEADER_LEN
    else:
        assert len(data) < virtio.HEADER_LEN


# ---------------------------------------------------------------- emit -> parse


@st.composite
def segments(draw: st.DrawFn) -> TcpSegment:
    flags = draw(st.integers(0, 0x1FF))  # the ninth: AE (RFC 9768)
    ts = draw(st.none() | st.tuples(u32, u32))
    if flags & SYN:
        opts = TcpOptions(
            mss=draw(st.none() | u16),
            wscale=draw(st.none() | st.integers(0, 14)),
            sack_permitted=draw(st.booleans()),
            timestamps=ts,
            accecn=draw(accecn_fields),  # 20 bytes at most before it: all three fit
        )
    else:
        room = 3 if ts is not None else 4
        blocks = tuple(draw(st.lists(sack_block, max_size=room)))
        used = (12 if ts is not None else 0) + (4 + 8 * len(blocks) if blocks else 0)
        # The AccECN option (all three fields, 12 bytes padded) where it fits whole.
        opts = TcpOptions(sack_blocks=blocks, timestamps=ts,
                          accecn=draw(accecn_fields) if used <= 28 else None)
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


def _same_segment(got: TcpSegment, want: TcpSegment, options: TcpOptions) -> None:
    assert (got.src_port, got.dst_port, got.seq, got.ack, got.flags, got.window, got.urgent) \
        == (want.src_port, want.dst_port, want.seq, want.ack, want.flags, want.window,
            want.urgent)
    assert got.options == options
    assert bytes(got.payload) == bytes(want.payload)
    assert got.seg_len == want.seg_len


@examples(200)
@given(segments(), u32, u32, u16, st.integers(1, 255))
def test_emit_then_parse_round_trips(
    seg: TcpSegment, src: int, dst: int, ident: int, ttl: int
) -> None:
    raw = emit_tcp_ipv4(seg, src, dst, ident, ttl)
    ip = parse_ipv4(raw)
    assert (ip.src, ip.dst, ip.proto, ip.ident, ip.ttl) == (src, dst, PROTO_TCP, ident, ttl)
    got = parse_tcp(ip.payload, ip.src, ip.dst)
    _same_segment(got, seg, seg.options)


@examples(150)
@given(segments(), u32, u32, st.integers(0, 1500))
def test_vnet_emit_leaves_a_checksum_the_kernel_completes_and_a_consistent_header(
    seg: TcpSegment, src: int, dst: int, gso_size: int
) -> None:
    raw = emit_tcp_ipv4(seg, src, dst, 7, 64, vnet=True, gso_size=gso_size)
    flags, gso_type, hdr_len, gso, csum_start, csum_offset = virtio.HDR.unpack_from(raw)
    assert flags == virtio.parse_flags(raw) == virtio.F_NEEDS_CSUM
    assert virtio.checksum_trusted(flags)
    pkt = bytearray(raw[virtio.HEADER_LEN:])
    ip = parse_ipv4(pkt)
    tcp_hlen = HEADER_LEN + len(encode_options(seg.options, bool(seg.flags & SYN))) \
        if seg.options != TcpOptions() else HEADER_LEN
    assert (csum_start, csum_offset, hdr_len) == (20, 16, 20 + tcp_hlen)
    if gso_size and len(seg.payload) > gso_size:
        assert (gso_type, gso) == (virtio.GSO_TCPV4, gso_size)
    else:
        assert (gso_type, gso) == (virtio.GSO_NONE, 0)
    # What the kernel does for NEEDS_CSUM: checksum [csum_start, end) including the
    # pseudo-header sum already in the field, store it at csum_start + csum_offset.
    field = csum_start + csum_offset
    pkt[field:field + 2] = ck.checksum(pkt[csum_start:]).to_bytes(2, "big")
    got = parse_tcp(memoryview(pkt)[ip.header_len:], ip.src, ip.dst, verify_checksum=True)
    _same_segment(got, seg, seg.options)


@examples(200)
@given(segments())
def test_encoded_options_are_word_aligned_and_fit(seg: TcpSegment) -> None:
    enc = encode_options(seg.options, bool(seg.flags & SYN))
    assert len(enc) % 4 == 0
    assert len(enc) <= MAX_OPTIONS_LEN
    assert parse_options(memoryview(enc)) == seg.options


@examples(200)
@given(u8, u8, u32, st.binary(max_size=600))
def test_build_icmp_then_parse_round_trips(type_: int, code: int, rest: int, body: bytes) -> None:
    msg = parse_icmp(build_icmp(type_, code, rest, body))
    assert (msg.type, msg.code, msg.rest) == (type_, code, rest)
    assert bytes(msg.body) == body


@examples(200)
@given(u32, u32, u8, st.binary(max_size=600), u16, st.integers(1, 255))
def test_build_ipv4_then_parse_round_trips(
    src: int, dst: int, proto: int, payload: bytes, ident: int, ttl: int
) -> None:
    pkt = parse_ipv4(build_ipv4(src, dst, proto, payload, ident, ttl))
    assert (pkt.src, pkt.dst, pkt.proto, pkt.ident, pkt.ttl, pkt.tos, pkt.header_len) == (
        src, dst, proto, ident, ttl, 0, 20)
    assert bytes(pkt.payload) == payload


# ------------------------------------------------- parse -> emit -> parse (arbitrary)


def _encodable(opts: TcpOptions, syn: bool) -> TcpOptions:
    """The part of ``opts`` that :func:`encode_options` writes (SYN: no SACK blocks;
    otherwise only timestamps and as many SACK blocks as fit)."""
    if syn:
        return TcpOptions(mss=opts.mss, wscale=opts.wscale, sack_permitted=opts.sack_permitted,
                          timestamps=opts.timestamps)
    room = (MAX_OPTIONS_LEN - (12 if opts.timestamps is not None else 0) - 4) // 8
    return TcpOptions(sack_blocks=opts.sack_blocks[:room], timestamps=opts.timestamps)


@st.composite
def tcp_bytes(draw: st.DrawFn) -> bytes:
    """A TCP header with a plausible data offset and option bytes drawn from real kinds."""
    head = bytearray(draw(st.binary(min_size=HEADER_LEN, max_size=HEADER_LEN)))
    kinds = st.sampled_from([0, 1, 2, 3, 4, 5, 8, 10, 18, 34, 255]) | u8
    opts = bytes(draw(st.lists(kinds, max_size=MAX_OPTIONS_LEN)))
    opts += bytes(-len(opts) % 4)
    head[12] = ((HEADER_LEN + len(opts)) // 4) << 4 | (head[12] & 0x0F)
    return bytes(head) + opts + draw(st.binary(max_size=64))


@examples(300)
@given(tcp_bytes(), u32, u32)
def test_parsed_tcp_segment_is_emitted_again_with_every_field_the_builder_carries(
    data: bytes, src: int, dst: int
) -> None:
    try:
        seg = parse_tcp(data, src, dst, verify_checksum=False)
    except Malformed as exc:
        assert exc.reason in TCP_REASONS
        return
    raw = emit_tcp_ipv4(seg, src, dst, 1)
    ip = parse_ipv4(raw)
    again = parse_tcp(ip.payload, src, dst)  # and its checksum is right
    _same_segment(again, seg, _encodable(seg.options, bool(seg.flags & SYN)))


@examples(200)
@given(st.binary(min_size=20, max_size=80), st.data())
def test_parsed_ipv4_packet_is_built_again_with_the_same_fields(
    data: bytes, draw: st.DataObject
) -> None:
    buf = bytearray(data)
    buf[0] = 0x45
    buf[2:4] = len(buf).to_bytes(2, "big")
    buf[6:8] = draw.draw(st.sampled_from([b"\0\0", b"\x40\0"]), label="flags")
    buf[10:12] = b"\0\0"
    buf[10:12] = ck.checksum(buf[:20]).to_bytes(2, "big")
    pkt = parse_ipv4(buf)
    again = parse_ipv4(build_ipv4(pkt.src, pkt.dst, pkt.proto, pkt.payload, pkt.ident, pkt.ttl))
    assert (again.src, again.dst, again.proto, again.ident, again.ttl) == (
        pkt.src, pkt.dst, pkt.proto, pkt.ident, pkt.ttl)
    assert bytes(again.payload) == bytes(pkt.payload)


@examples(200)
@given(st.binary(min_size=8, max_size=200))
def test_parsed_icmp_message_is_built_again_byte_for_byte(data: bytes) -> None:
    msg = parse_icmp(data, verify_checksum=False)
    rebuilt = build_icmp(msg.type, msg.code, msg.rest, msg.body)
    assert rebuilt[:2] == data[:2] and rebuilt[4:] == data[4:]
    again = parse_icmp(rebuilt)  # the rebuilt checksum verifies
    assert (again.type, again.code, again.rest, bytes(again.body)) == (
        msg.type, msg.code, msg.rest, bytes(msg.body))
    if _parses_or_malformed(ICMP_REASONS, parse_icmp, data):
        # The original checksum was right: only the two encodings of zero may differ.
        assert rebuilt[2:4] == data[2:4] or {rebuilt[2:4], data[2:4]} == {b"\0\0", b"\xff\xff"}


# ---------------------------------------------------------------- bit flips


@examples(300)
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
            assert exc.reason in IPV4_REASONS
        else:
            assert exc.reason in {"tcp_bad_checksum", "tcp_bad_data_offset"}
    else:
        raise AssertionError(f"bit flip {bit} went undetected")
