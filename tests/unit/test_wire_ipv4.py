"""IPv4 header building and validation."""

from __future__ import annotations

import struct

import pytest

from tcpstack.wire import checksum as ck
from tcpstack.wire.errors import Malformed
from tcpstack.wire.ipv4 import (
    HEADER_LEN,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    build_ipv4,
    pack_ipv4_header,
    parse_ipv4,
)

SRC = 0x0A000001  # 10.0.0.1
DST = 0xC0A80102  # 192.168.1.2


def craft(
    *,
    version: int = 4,
    ihl: int = 5,
    total: int | None = None,
    frag: int = 0x4000,
    payload: bytes = b"",
    options: bytes = b"",
    fix_checksum: bool = True,
    proto: int = PROTO_TCP,
) -> bytearray:
    """A hand-built IPv4 packet, independent of the code under test (except the checksum)."""
    hdr_len = HEADER_LEN + len(options)
    if total is None:
        total = hdr_len + len(payload)
    hdr = bytearray(
        struct.pack(
            "!BBHHHBBHII", (version << 4) | ihl, 0, total, 0x1234, frag, 64, proto, 0, SRC, DST
        )
    )
    hdr += options
    if fix_checksum:
        struct.pack_into("!H", hdr, 10, ck.checksum(hdr))
    return hdr + payload


def reason_of(data: bytes | bytearray) -> str:
    with pytest.raises(Malformed) as info:
        parse_ipv4(data)
    return info.value.reason


def test_crafted_packet_parses() -> None:
    pkt = parse_ipv4(craft(payload=b"hello"))
    assert (pkt.src, pkt.dst, pkt.proto, pkt.ttl, pkt.ident) == (SRC, DST, PROTO_TCP, 64, 0x1234)
    assert bytes(pkt.payload) == b"hello"


@pytest.mark.parametrize("proto", [PROTO_ICMP, PROTO_TCP, PROTO_UDP])
@pytest.mark.parametrize("payload", [b"", b"x", b"abcd" * 100, bytes(range(256))])
def test_build_then_parse_round_trips(proto: int, payload: bytes) -> None:
    raw = build_ipv4(SRC, DST, proto, payload, ident=0xBEEF, ttl=17)
    assert len(raw) == HEADER_LEN + len(payload)
    pkt = parse_ipv4(raw)
    assert pkt.src == SRC
    assert pkt.dst == DST
    assert pkt.proto == proto
    assert pkt.ttl == 17
    assert pkt.tos == 0
    assert pkt.ident == 0xBEEF
    assert pkt.header_len == HEADER_LEN
    assert bytes(pkt.payload) == payload


def test_built_header_has_df_set_and_no_options() -> None:
    raw = build_ipv4(SRC, DST, PROTO_TCP, b"")
    assert raw[0] == 0x45
    (frag,) = struct.unpack_from("!H", raw, 6)
    assert frag == 0x4000


def test_build_truncates_ident_to_16_bits() -> None:
    assert parse_ipv4(build_ipv4(SRC, DST, PROTO_TCP, b"", ident=0x12345)).ident == 0x2345


@pytest.mark.parametrize(
    ("src", "dst", "ident", "ttl"),
    [(0, 0, 0, 0), (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFF, 255), (SRC, DST, 1, 64), (1, 2, 0x8000, 1)],
)
def test_built_header_checksum_verifies(src: int, dst: int, ident: int, ttl: int) -> None:
    raw = build_ipv4(src, dst, PROTO_TCP, b"payload", ident=ident, ttl=ttl)
    assert ck.verify(ck.partial(raw[:HEADER_LEN]))
    # Recomputing the checksum over the header with the field zeroed gives the same value.
    hdr = bytearray(raw[:HEADER_LEN])
    stored = struct.unpack_from("!H", hdr, 10)[0]
    hdr[10:12] = b"\x00\x00"
    assert ck.checksum(hdr) == stored


@pytest.mark.parametrize("tos", [0, 0x10, 0xB8, 0xFF])
def test_pack_ipv4_header_at_offset_with_tos(tos: int) -> None:
    buf = bytearray(7 + HEADER_LEN + 3)
    pack_ipv4_header(buf, 7, SRC, DST, PROTO_UDP, 3, ident=9, ttl=33, tos=tos)
    buf[7 + HEADER_LEN :] = b"abc"
    assert buf[:7] == bytes(7)
    pkt = parse_ipv4(memoryview(buf)[7:])
    assert pkt.tos == tos
    assert pkt.ttl == 33
    assert pkt.proto == PROTO_UDP
    assert bytes(pkt.payload) == b"abc"


def test_empty_buffer_is_truncated() -> None:
    assert reason_of(b"") == "ip_truncated"


@pytest.mark.parametrize("version", [0, 1, 5, 7, 15])
def test_non_ip_version_is_bad_version(version: int) -> None:
    assert reason_of(craft(version=version)) == "ip_bad_version"


def test_version_nibble_alone_decides_bad_version() -> None:
    assert reason_of(b"\x55") == "ip_bad_version"


def test_parse_ipv4_refuses_ipv6() -> None:
    """The demux sends IPv6 to tcpstack.wire.ipv6; parse_ipv4 takes version 4 only."""
    assert reason_of(craft(version=6)) == "ip_bad_version"
    assert reason_of(b"\x60") == "ip_bad_version"


@pytest.mark.parametrize("n", [1, 10, 19])
def test_short_buffer_is_truncated(n: int) -> None:
    assert reason_of(craft()[:n]) == "ipv4_truncated"


@pytest.mark.parametrize("ihl", [0, 1, 4])
def test_ihl_below_five_is_bad_ihl(ihl: int) -> None:
    assert reason_of(craft(ihl=ihl)) == "ipv4_bad_ihl"


def test_ihl_past_the_buffer_is_truncated() -> None:
    # IHL 15 claims 60 header bytes but only 20 are present.
    assert reason_of(craft(ihl=15, total=20)) == "ipv4_truncated"


def test_total_length_beyond_buffer_is_bad_length() -> None:
    assert reason_of(craft(payload=b"abcd", total=HEADER_LEN + 5)) == "ipv4_bad_length"


def test_total_length_below_header_is_bad_length() -> None:
    assert reason_of(craft(payload=b"abcd", total=HEADER_LEN - 1)) == "ipv4_bad_length"


def test_total_length_below_header_with_options_is_bad_length() -> None:
    raw = craft(ihl=6, options=b"\x01\x01\x01\x00", total=HEADER_LEN + 2, payload=b"ab")
    assert reason_of(raw) == "ipv4_bad_length"


def test_corrupted_header_is_bad_checksum() -> None:
    raw = craft(payload=b"data")
    raw[8] ^= 0x01  # TTL
    assert reason_of(raw) == "ipv4_bad_checksum"


def test_zeroed_checksum_field_is_bad_checksum() -> None:
    assert reason_of(craft(payload=b"data", fix_checksum=False)) == "ipv4_bad_checksum"


def test_payload_corruption_is_not_covered_by_header_checksum() -> None:
    raw = craft(payload=b"data")
    raw[-1] ^= 0xFF
    assert bytes(parse_ipv4(raw).payload) == b"dat" + bytes([ord("a") ^ 0xFF])


def test_more_fragments_flag_is_fragment() -> None:
    assert reason_of(craft(frag=0x2000, payload=b"x")) == "ipv4_fragment"


@pytest.mark.parametrize("offset", [1, 0x100, 0x1FFF])
def test_nonzero_fragment_offset_is_fragment(offset: int) -> None:
    assert reason_of(craft(frag=offset, payload=b"x")) == "ipv4_fragment"


def test_dont_fragment_alone_is_accepted() -> None:
    assert bytes(parse_ipv4(craft(frag=0x4000, payload=b"x")).payload) == b"x"
    assert bytes(parse_ipv4(craft(frag=0, payload=b"x")).payload) == b"x"


def test_header_options_are_skipped() -> None:
    raw = craft(ihl=6, options=b"\x01\x01\x01\x00", payload=b"body")
    pkt = parse_ipv4(raw)
    assert pkt.header_len == 24
    assert bytes(pkt.payload) == b"body"


def test_trailing_bytes_after_total_length_are_excluded() -> None:
    raw = craft(payload=b"real") + b"ethernet-padding"
    assert bytes(parse_ipv4(raw).payload) == b"real"


def test_payload_is_a_view_onto_the_original_buffer() -> None:
    raw = craft(payload=b"abcdef")
    pkt = parse_ipv4(raw)
    assert isinstance(pkt.payload, memoryview)
    assert pkt.payload.obj is raw
    raw[HEADER_LEN] = ord("Z")
    assert bytes(pkt.payload) == b"Zbcdef"
