"""TCP header and option parsing, encoding, and the IPv4+TCP emitter."""

from __future__ import annotations

import itertools
import struct

import pytest
from checksum_ref import ref_sum

from tcpstack.wire.errors import Malformed
from tcpstack.wire.ipv4 import HEADER_LEN as IPV4_HEADER_LEN
from tcpstack.wire.ipv4 import PROTO_TCP, parse_ipv4
from tcpstack.wire.tcp import (
    ACK,
    CWR,
    ECE,
    FIN,
    HEADER_LEN,
    MAX_OPTIONS_LEN,
    NO_OPTIONS,
    PSH,
    RST,
    SYN,
    URG,
    TcpOptions,
    TcpSegment,
    emit_tcp_ipv4,
    encode_options,
    flags_str,
    parse_options,
    parse_tcp,
)

SRC = 0x0A000001  # 10.0.0.1
DST = 0x0A000002  # 10.0.0.2
TS = (0x01020304, 0xA0B0C0D0)
BLOCKS = ((1000, 2000), (3000, 4000), (0xFFFFFF00, 0x00000100), (7, 8))


def pseudo(src: int, dst: int, length: int) -> bytes:
    return struct.pack("!IIBBH", src, dst, 0, PROTO_TCP, length)


def raw_segment(
    *,
    options: bytes = b"",
    payload: bytes = b"",
    data_offset: int | None = None,
    flags: int = ACK,
    good_checksum: bool = True,
    src: int = SRC,
    dst: int = DST,
) -> bytearray:
    """A hand-assembled TCP segment; the checksum is computed with the reference sum."""
    if data_offset is None:
        assert len(options) % 4 == 0
        data_offset = 5 + len(options) // 4
    seg = bytearray(
        struct.pack("!HHIIBBHHH", 1234, 80, 111, 222, data_offset << 4, flags, 512, 0, 0)
    )
    seg += options + payload
    csum = ~ref_sum(pseudo(src, dst, len(seg)) + bytes(seg)) & 0xFFFF
    if not good_checksum:
        csum ^= 0x0100
    struct.pack_into("!H", seg, 16, csum)
    return seg


def tcp_reason(data: bytes | bytearray, **kwargs: bool) -> str:
    with pytest.raises(Malformed) as info:
        parse_tcp(data, SRC, DST, **kwargs)
    return info.value.reason


def option_reason(raw: bytes) -> str:
    with pytest.raises(Malformed) as info:
        parse_options(memoryview(raw))
    return info.value.reason


def emit_and_parse(seg: TcpSegment, src: int = SRC, dst: int = DST) -> TcpSegment:
    raw = emit_tcp_ipv4(seg, src, dst, ident=42)
    ip = parse_ipv4(raw)
    assert ip.proto == PROTO_TCP
    assert (ip.src, ip.dst) == (src, dst)
    return parse_tcp(ip.payload, ip.src, ip.dst)


def tcp_options_bytes(raw: bytearray) -> bytes:
    doff = (raw[IPV4_HEADER_LEN + 12] >> 4) * 4
    return bytes(raw[IPV4_HEADER_LEN + HEADER_LEN : IPV4_HEADER_LEN + doff])


# ---------------------------------------------------------------- round trips

SYN_COMBOS = [
    TcpOptions(mss=mss, wscale=ws, sack_permitted=sp, timestamps=ts)
    for mss, ws, sp, ts in itertools.product((None, 1460), (None, 7), (False, True), (None, TS))
]


@pytest.mark.parametrize("opts", SYN_COMBOS, ids=repr)
@pytest.mark.parametrize("flags", [SYN, SYN | ACK])
def test_syn_options_round_trip(opts: TcpOptions, flags: int) -> None:
    seg = TcpSegment(40000, 443, 0xDEADBEEF, 0x01020304 if flags & ACK else 0, flags, 64240, opts)
    got = emit_and_parse(seg)
    assert got.options == opts
    assert (got.src_port, got.dst_port, got.seq, got.ack) == (40000, 443, seg.seq, seg.ack)
    assert (got.flags, got.window, got.urgent) == (flags, 64240, 0)
    assert bytes(got.payload) == b""


@pytest.mark.parametrize("nblocks", range(5))
@pytest.mark.parametrize("ts", [None, TS], ids=["no_ts", "ts"])
def test_data_segment_options_round_trip(nblocks: int, ts: tuple[int, int] | None) -> None:
    opts = TcpOptions(sack_blocks=BLOCKS[:nblocks], timestamps=ts)
    seg = TcpSegment(80, 50000, 1, 2, ACK | PSH, 1000, opts, b"some data")
    got = emit_and_parse(seg)
    # 12 bytes of timestamps leave room for only three 8-byte SACK blocks.
    expected_blocks = BLOCKS[: min(nblocks, 3)] if ts else BLOCKS[:nblocks]
    assert got.options == TcpOptions(sack_blocks=expected_blocks, timestamps=ts)
    assert bytes(got.payload) == b"some data"


def test_four_sack_blocks_fit_without_timestamps() -> None:
    opts = TcpOptions(sack_blocks=BLOCKS)
    encoded = encode_options(opts, syn=False)
    assert len(encoded) == 2 + 2 + 4 * 8
    assert len(encoded) <= MAX_OPTIONS_LEN
    assert emit_and_parse(TcpSegment(1, 2, 3, 4, ACK, 5, opts)).options.sack_blocks == BLOCKS


def test_sack_blocks_are_cut_to_three_alongside_timestamps() -> None:
    opts = TcpOptions(sack_blocks=BLOCKS, timestamps=TS)
    encoded = encode_options(opts, syn=False)
    assert len(encoded) == 12 + 4 + 3 * 8 == MAX_OPTIONS_LEN
    got = emit_and_parse(TcpSegment(1, 2, 3, 4, ACK, 5, opts))
    assert got.options.sack_blocks == BLOCKS[:3]
    assert got.options.timestamps == TS


def test_segment_without_options_has_data_offset_five() -> None:
    raw = emit_tcp_ipv4(TcpSegment(1, 2, 3, 4, ACK, 5), SRC, DST, ident=0)
    assert raw[IPV4_HEADER_LEN + 12] >> 4 == 5
    got = parse_tcp(parse_ipv4(raw).payload, SRC, DST)
    assert got.options is NO_OPTIONS
    assert got.options == TcpOptions()


def test_syn_only_options_are_not_sent_on_data_segments() -> None:
    opts = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamps=TS)
    got = emit_and_parse(TcpSegment(1, 2, 3, 4, ACK, 5, opts))
    assert got.options == TcpOptions(timestamps=TS)


def test_sack_blocks_are_not_sent_on_syn() -> None:
    opts = TcpOptions(mss=536, sack_blocks=BLOCKS[:1])
    got = emit_and_parse(TcpSegment(1, 2, 3, 0, SYN, 5, opts))
    assert got.options == TcpOptions(mss=536)


@pytest.mark.parametrize("urgent", [0, 1, 0xFFFF])
def test_urgent_pointer_round_trips(urgent: int) -> None:
    seg = TcpSegment(1, 2, 3, 4, ACK | URG, 5, payload=b"!", urgent=urgent)
    assert emit_and_parse(seg).urgent == urgent


@pytest.mark.parametrize("payload", [b"", b"x", b"odd", b"\xff" * 1461, bytes(range(256)) * 4])
def test_payload_round_trips_with_valid_checksum(payload: bytes) -> None:
    seg = TcpSegment(0xFFFF, 0, 0xFFFFFFFF, 0, FIN | ACK | PSH, 0xFFFF, payload=payload)
    raw = emit_tcp_ipv4(seg, SRC, DST, ident=7)
    assert len(raw) == IPV4_HEADER_LEN + HEADER_LEN + len(payload)
    tcp_bytes = bytes(raw[IPV4_HEADER_LEN:])
    assert ref_sum(pseudo(SRC, DST, len(tcp_bytes)) + tcp_bytes) == 0xFFFF
    got = emit_and_parse(seg)
    assert bytes(got.payload) == payload
    assert (got.src_port, got.dst_port, got.seq, got.window) == (0xFFFF, 0, 0xFFFFFFFF, 0xFFFF)


def test_emitted_packet_has_valid_ipv4_header() -> None:
    raw = emit_tcp_ipv4(TcpSegment(1, 2, 3, 4, ACK, 5, payload=b"abc"), SRC, DST, ident=99, ttl=3)
    ip = parse_ipv4(raw)
    assert (ip.ttl, ip.ident, ip.header_len) == (3, 99, IPV4_HEADER_LEN)
    assert struct.unpack_from("!H", raw, 2)[0] == len(raw)
    assert ref_sum(bytes(raw[:IPV4_HEADER_LEN])) == 0xFFFF


def test_checksum_depends_on_pseudo_header_addresses() -> None:
    raw = emit_tcp_ipv4(TcpSegment(1, 2, 3, 4, ACK, 5, payload=b"abc"), SRC, DST, ident=1)
    tcp_bytes = parse_ipv4(raw).payload
    assert parse_tcp(tcp_bytes, SRC, DST).seq == 3
    with pytest.raises(Malformed) as info:
        parse_tcp(tcp_bytes, SRC, DST + 1)
    assert info.value.reason == "tcp_bad_checksum"


# ---------------------------------------------------------------- encoding layout


@pytest.mark.parametrize("opts", SYN_COMBOS, ids=repr)
def test_syn_options_put_mss_first_and_window_scale_last(opts: TcpOptions) -> None:
    enc = encode_options(opts, syn=True)
    assert len(enc) % 4 == 0
    assert len(enc) <= MAX_OPTIONS_LEN
    if opts.mss is not None:
        assert enc[:4] == struct.pack("!BBH", 2, 4, opts.mss)
    if opts.wscale is not None:
        assert enc[-4:] == bytes((1, 3, 3, opts.wscale))
    assert parse_options(memoryview(enc)) == opts


def test_full_syn_options_match_linux_byte_layout() -> None:
    opts = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamps=TS)
    expected = (
        bytes((2, 4, 0x05, 0xB4))
        + bytes((4, 2, 8, 10))
        + struct.pack("!II", *TS)
        + bytes((1, 3, 3, 7))
    )
    assert encode_options(opts, syn=True) == expected


def test_syn_sack_permitted_without_timestamps_is_nop_padded() -> None:
    assert encode_options(TcpOptions(sack_permitted=True), syn=True) == bytes((1, 1, 4, 2))


def test_data_segment_options_match_linux_byte_layout() -> None:
    opts = TcpOptions(sack_blocks=BLOCKS[:1], timestamps=TS)
    expected = (
        bytes((1, 1, 8, 10))
        + struct.pack("!II", *TS)
        + bytes((1, 1, 5, 10))
        + struct.pack("!II", *BLOCKS[0])
    )
    assert encode_options(opts, syn=False) == expected


@pytest.mark.parametrize("nblocks", range(5))
@pytest.mark.parametrize("ts", [None, TS], ids=["no_ts", "ts"])
def test_data_options_are_word_aligned_and_fit_header(
    nblocks: int, ts: tuple[int, int] | None
) -> None:
    enc = encode_options(TcpOptions(sack_blocks=BLOCKS[:nblocks], timestamps=ts), syn=False)
    assert len(enc) % 4 == 0
    assert len(enc) <= MAX_OPTIONS_LEN


# ---------------------------------------------------------------- raw option parsing


def test_empty_option_list_parses_to_nothing() -> None:
    assert parse_options(memoryview(b"")) == TcpOptions()


def test_nops_are_skipped() -> None:
    got = parse_options(memoryview(b"\x01\x01\x01\x02\x04\x05\xb4\x01\x01\x04\x02"))
    assert got == TcpOptions(mss=1460, sack_permitted=True)


def test_eol_ends_the_list_even_before_garbage() -> None:
    # After EOL come bytes that would be an MSS option and then a zero-length option.
    got = parse_options(memoryview(b"\x03\x03\x05\x00\x02\x04\x05\xb4\x09\x00"))
    assert got == TcpOptions(wscale=5)


def test_trailing_eol_padding_is_accepted() -> None:
    assert parse_options(memoryview(b"\x02\x04\x02\x18\x00\x00\x00\x00")).mss == 536


def test_unknown_option_is_skipped_by_its_length() -> None:
    # Kind 30 (MPTCP), length 6, whose body looks like an MSS option.
    raw = b"\x1e\x06\x02\x04\x00\x01" + b"\x02\x04\x05\xb4" + b"\x01\x01"
    assert parse_options(memoryview(raw)) == TcpOptions(mss=1460)


def test_unknown_option_with_only_kind_and_length_is_skipped() -> None:
    assert parse_options(memoryview(b"\xfe\x02\x04\x02")) == TcpOptions(sack_permitted=True)


@pytest.mark.parametrize("kind", [2, 3, 8, 30])
def test_option_length_zero_is_malformed(kind: int) -> None:
    assert option_reason(bytes((kind, 0, 0, 0))) == "tcp_bad_option_length"


@pytest.mark.parametrize("kind", [2, 4, 99])
def test_option_length_one_is_malformed(kind: int) -> None:
    assert option_reason(bytes((1, kind, 1, 0))) == "tcp_bad_option_length"


@pytest.mark.parametrize(
    "raw",
    [b"\x02\x05\x05\xb4", b"\x01\x01\x08\x0a\x00\x00\x00\x00", b"\x1e\x28\x00\x00"],
    ids=["mss", "timestamps", "unknown"],
)
def test_option_length_past_the_header_is_malformed(raw: bytes) -> None:
    assert option_reason(raw) == "tcp_bad_option_length"


@pytest.mark.parametrize("raw", [b"\x02", b"\x01\x01\x01\x03", b"\x02\x04\x05\xb4\x1e"])
def test_missing_length_byte_at_the_end_is_malformed(raw: bytes) -> None:
    assert option_reason(raw) == "tcp_bad_option_length"


@pytest.mark.parametrize(
    "raw",
    [
        b"\x02\x03\x05",  # MSS, length 3
        b"\x02\x06\x05\xb4\x00\x00",  # MSS, length 6
        b"\x03\x04\x07\x00",  # window scale, length 4
        b"\x04\x03\x00",  # SACK-permitted, length 3
        b"\x08\x08" + bytes(6),  # timestamps, length 8
        b"\x05\x02",  # SACK with no blocks
        b"\x05\x09" + bytes(7),  # SACK, length not 2 + 8k
    ],
    ids=["mss3", "mss6", "ws4", "sackperm3", "ts8", "sack2", "sack9"],
)
def test_known_option_with_wrong_length_is_ignored(raw: bytes) -> None:
    # The malformed option is ignored and the option after it still parses.
    got = parse_options(memoryview(raw + b"\x02\x04\x02\x18"))
    assert got == TcpOptions(mss=536)


@pytest.mark.parametrize(("shift", "expected"), [(0, 0), (7, 7), (14, 14), (15, 14), (255, 14)])
def test_window_scale_above_14_is_clamped(shift: int, expected: int) -> None:
    assert parse_options(memoryview(bytes((1, 3, 3, shift)))).wscale == expected


@pytest.mark.parametrize("n", range(1, 5))
def test_raw_sack_blocks_parse(n: int) -> None:
    raw = bytes((5, 2 + 8 * n)) + b"".join(struct.pack("!II", *b) for b in BLOCKS[:n])
    assert parse_options(memoryview(raw)).sack_blocks == BLOCKS[:n]


def test_raw_timestamps_parse() -> None:
    raw = b"\x01\x01\x08\x0a" + struct.pack("!II", 5, 0xFFFFFFFF)
    assert parse_options(memoryview(raw)).timestamps == (5, 0xFFFFFFFF)


# ---------------------------------------------------------------- raw segment parsing


def test_raw_segment_parses_header_fields() -> None:
    seg = parse_tcp(raw_segment(payload=b"hi", flags=ACK | PSH), SRC, DST)
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack) == (1234, 80, 111, 222)
    assert (seg.flags, seg.window, seg.urgent) == (ACK | PSH, 512, 0)
    assert bytes(seg.payload) == b"hi"
    assert seg.options is NO_OPTIONS


def test_raw_segment_options_are_parsed() -> None:
    raw = raw_segment(options=b"\x02\x04\x05\xb4\x01\x03\x03\x08", flags=SYN)
    assert parse_tcp(raw, SRC, DST).options == TcpOptions(mss=1460, wscale=8)


def test_bad_option_inside_segment_is_malformed() -> None:
    assert tcp_reason(raw_segment(options=b"\x02\x00\x00\x00")) == "tcp_bad_option_length"


@pytest.mark.parametrize("n", [0, 1, 12, 19])
def test_segment_shorter_than_header_is_truncated(n: int) -> None:
    assert tcp_reason(raw_segment()[:n]) == "tcp_truncated"


@pytest.mark.parametrize("doff", range(5))
def test_data_offset_below_five_is_bad(doff: int) -> None:
    assert tcp_reason(raw_segment(data_offset=doff, payload=b"abcd")) == "tcp_bad_data_offset"


@pytest.mark.parametrize(("doff", "payload"), [(6, b""), (15, b"abcd"), (8, bytes(11))])
def test_data_offset_past_the_segment_is_bad(doff: int, payload: bytes) -> None:
    assert tcp_reason(raw_segment(data_offset=doff, payload=payload)) == "tcp_bad_data_offset"


def test_data_offset_covering_whole_segment_is_allowed() -> None:
    seg = parse_tcp(raw_segment(options=b"\x01\x01\x01\x00"), SRC, DST)
    assert bytes(seg.payload) == b""


def test_bad_checksum_is_rejected() -> None:
    assert tcp_reason(raw_segment(payload=b"data", good_checksum=False)) == "tcp_bad_checksum"


def test_corrupted_payload_is_bad_checksum() -> None:
    raw = raw_segment(payload=b"data!")
    raw[-1] ^= 0x40
    assert tcp_reason(raw) == "tcp_bad_checksum"


def test_verify_checksum_false_skips_the_check() -> None:
    raw = raw_segment(payload=b"data", good_checksum=False)
    assert bytes(parse_tcp(raw, SRC, DST, verify_checksum=False).payload) == b"data"
    assert parse_tcp(raw_segment(), 0, 0, verify_checksum=False).seq == 111


def test_verify_checksum_false_still_checks_structure() -> None:
    raw = raw_segment(data_offset=3, good_checksum=False)
    assert tcp_reason(raw, verify_checksum=False) == "tcp_bad_data_offset"


def test_parsed_payload_is_a_view_onto_the_buffer() -> None:
    raw = raw_segment(payload=b"abc")
    seg = parse_tcp(raw, SRC, DST)
    assert isinstance(seg.payload, memoryview)
    assert seg.payload.obj is raw
    raw[-1] = ord("Z")
    assert bytes(seg.payload) == b"abZ"


# ---------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("flags", "payload", "expected"),
    [
        (ACK, b"", 0),
        (ACK, b"hello", 5),
        (SYN, b"", 1),
        (FIN | ACK, b"", 1),
        (SYN | FIN, b"", 2),
        (FIN | ACK | PSH, b"abc", 4),
        (SYN | FIN, b"ab", 4),
        (RST, b"", 0),
    ],
)
def test_seg_len_counts_syn_and_fin(flags: int, payload: bytes, expected: int) -> None:
    assert TcpSegment(1, 2, 3, 4, flags, 5, payload=payload).seg_len == expected


def test_parsed_syn_seg_len() -> None:
    seg = emit_and_parse(TcpSegment(1, 2, 3, 0, SYN, 5, TcpOptions(mss=1460)))
    assert seg.seg_len == 1


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (0, "none"),
        (SYN, "S"),
        (SYN | ACK, "S."),
        (ACK, "."),
        (FIN | PSH | ACK, "FP."),
        (RST, "R"),
        (RST | ACK, "R."),
        (URG | ECE | CWR, "UEW"),
        (0xFF, "FSRP.UEW"),
    ],
)
def test_flags_str_uses_tcpdump_letters(flags: int, expected: str) -> None:
    assert flags_str(flags) == expected


def test_the_ae_flag_lives_in_the_data_offset_byte_and_round_trips() -> None:
    """RFC 9768 2: Accurate ECN's AE flag is the former NS bit, the low bit of the
    byte holding the data offset; parsed into ``flags`` as AE (0x100), written back
    there, the offset untouched."""
    from tcpstack.wire.ipv4 import parse_ipv4
    from tcpstack.wire.records import AE, flags_str
    from tcpstack.wire.tcp import ACK, CWR, ECE, SYN, TcpSegment, emit_tcp_ipv4, parse_tcp
    seg = TcpSegment(1234, 80, 1, 0, SYN | ECE | CWR | AE, 65535)
    pkt = emit_tcp_ipv4(seg, 0x0A000001, 0x0A000002, 1)
    tcp = bytes(pkt[20:])
    assert tcp[12] == (5 << 4) | 1 and tcp[13] == SYN | ECE | CWR
    ip = parse_ipv4(pkt)
    back = parse_tcp(ip.payload, ip.src, ip.dst)
    assert back.flags == SYN | ECE | CWR | AE and flags_str(back.flags) == "SEWe"
    plain = emit_tcp_ipv4(TcpSegment(1234, 80, 1, 0, ACK, 65535), 0x0A000001, 0x0A000002, 1)
    assert plain[32] == 5 << 4
