"""ICMP parsing and the echo-reply / destination-unreachable builders."""

from __future__ import annotations

import struct

import pytest
from checksum_ref import ref_sum

from tcpstack.wire.errors import Malformed
from tcpstack.wire.icmp import (
    CODE_FRAG_NEEDED,
    CODE_PORT_UNREACHABLE,
    CODE_PROTOCOL_UNREACHABLE,
    DEST_UNREACHABLE,
    ECHO_REPLY,
    ECHO_REQUEST,
    HEADER_LEN,
    build_echo_reply,
    build_frag_needed,
    build_icmp,
    build_unreachable,
    parse_icmp,
    parse_quoted_tcp,
)
from tcpstack.wire.ipv4 import PROTO_TCP, build_ipv4


def ref_valid(msg: bytes | bytearray) -> bool:
    """What a receiver such as Linux accepts: the one's-complement sum is 0xFFFF."""
    return ref_sum(bytes(msg)) == 0xFFFF


def echo_request(ident: int, seq: int, data: bytes) -> bytes:
    """An echo request assembled by hand, checksummed with the reference sum."""
    msg = bytearray(struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq) + data)
    struct.pack_into("!H", msg, 2, ~ref_sum(bytes(msg)) & 0xFFFF)
    return bytes(msg)


def reason_of(data: bytes | bytearray) -> str:
    with pytest.raises(Malformed) as info:
        parse_icmp(data)
    return info.value.reason


def test_hand_built_echo_request_parses() -> None:
    msg = parse_icmp(echo_request(0x1234, 7, b"ping!"))
    assert (msg.type, msg.code) == (ECHO_REQUEST, 0)
    assert msg.rest == (0x1234 << 16) | 7
    assert bytes(msg.body) == b"ping!"


@pytest.mark.parametrize(
    ("ident", "seq", "data"),
    [
        (1, 1, b""),
        (0xFFFF, 0xFFFF, b"x"),
        (0x4D2, 300, bytes(range(56))),
        (7, 0, b"\xff" * 1471),
        (0, 1, b"\x00" * 8),
    ],
)
def test_echo_reply_mirrors_id_seq_and_data(ident: int, seq: int, data: bytes) -> None:
    reply = build_echo_reply(parse_icmp(echo_request(ident, seq, data)))
    rtype, code, _csum, rident, rseq = struct.unpack_from("!BBHHH", reply)
    assert (rtype, code) == (ECHO_REPLY, 0)
    assert (rident, rseq) == (ident, seq)
    assert bytes(reply[HEADER_LEN:]) == data
    assert ref_valid(reply)
    parsed = parse_icmp(reply)
    assert parsed.type == ECHO_REPLY
    assert bytes(parsed.body) == data


def test_echo_reply_to_all_zero_request_has_valid_checksum() -> None:
    reply = build_echo_reply(parse_icmp(echo_request(0, 0, bytes(16))))
    assert ref_valid(reply)


def test_all_zero_message_is_bad_checksum() -> None:
    assert not ref_valid(bytes(HEADER_LEN))
    assert reason_of(bytes(HEADER_LEN)) == "icmp_bad_checksum"


@pytest.mark.parametrize("n", range(HEADER_LEN))
def test_message_shorter_than_header_is_truncated(n: int) -> None:
    assert reason_of(echo_request(1, 2, b"")[:n]) == "icmp_truncated"


@pytest.mark.parametrize("index", [0, 1, 2, 4, 7, 8, 12])
def test_corrupted_byte_is_bad_checksum(index: int) -> None:
    msg = bytearray(echo_request(1, 2, b"payload!!"))
    msg[index] ^= 0x10
    assert reason_of(msg) == "icmp_bad_checksum"


def test_body_truncation_breaks_checksum() -> None:
    assert reason_of(echo_request(1, 2, b"abcdef")[:-2]) == "icmp_bad_checksum"


def test_build_icmp_checksum_verifies_with_odd_body() -> None:
    msg = build_icmp(13, 0, 0xAABBCCDD, b"odd")
    assert ref_valid(msg)
    parsed = parse_icmp(msg)
    assert (parsed.type, parsed.code, parsed.rest) == (13, 0, 0xAABBCCDD)
    assert bytes(parsed.body) == b"odd"


def test_parsed_body_is_a_view_onto_the_buffer() -> None:
    buf = bytearray(echo_request(1, 2, b"abc"))
    msg = parse_icmp(buf)
    assert msg.body.obj is buf
    buf[-1] = ord("Z")
    assert bytes(msg.body) == b"abZ"


@pytest.mark.parametrize("code", [CODE_PROTOCOL_UNREACHABLE, CODE_PORT_UNREACHABLE])
def test_unreachable_quotes_small_original_packet_whole(code: int) -> None:
    original = build_ipv4(0x0A000001, 0x0A000002, PROTO_TCP, b"0123456789abcdef")
    msg = build_unreachable(code, original)
    assert ref_valid(msg)
    parsed = parse_icmp(msg)
    assert (parsed.type, parsed.code, parsed.rest) == (DEST_UNREACHABLE, code, 0)
    assert bytes(parsed.body) == bytes(original)


@pytest.mark.parametrize("size", [547, 548, 549, 1500])
def test_unreachable_quotes_at_most_548_bytes(size: int) -> None:
    original = build_ipv4(1, 2, PROTO_TCP, bytes(i & 0xFF for i in range(size - 20)))
    assert len(original) == size
    msg = build_unreachable(CODE_PORT_UNREACHABLE, original)
    assert len(msg) == HEADER_LEN + min(size, 548)
    assert bytes(msg[HEADER_LEN:]) == bytes(original[:548])
    assert ref_valid(msg)
    # The message plus a 20-byte IPv4 header fits the 576-byte minimum datagram size.
    assert 20 + len(msg) <= 576


# ------------------------------------------------------- quoted TCP segments


def _tcp_packet(sport: int = 80, dport: int = 40000, seq: int = 0x01020304,
                src: int = 0x0A000002, dst: int = 0x0A000001) -> bytearray:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x10, 1000, 0, 0)
    return build_ipv4(src, dst, PROTO_TCP, tcp, ident=7)


def test_parse_quoted_tcp_reads_addresses_ports_and_sequence_number() -> None:
    pkt = _tcp_packet()
    msg = parse_icmp(build_unreachable(CODE_PORT_UNREACHABLE, pkt[:28]))
    q = parse_quoted_tcp(msg.body)
    assert (q.src, q.dst, q.src_port, q.dst_port, q.seq) == (
        0x0A000002, 0x0A000001, 80, 40000, 0x01020304)
    assert q.total_len == len(pkt)


def test_parse_quoted_tcp_accepts_ip_options_in_the_quote() -> None:
    tcp = struct.pack("!HHI", 1, 2, 3)
    hdr = bytearray(_tcp_packet()[:20])
    hdr[0] = 0x46  # IHL 6: four bytes of options
    quote = bytes(hdr) + b"\x01\x01\x01\x00" + tcp
    assert parse_quoted_tcp(quote).seq == 3


@pytest.mark.parametrize(("quote", "reason"), [
    (b"\x45" + bytes(10), "icmp_quote_truncated"),
    (bytes(_tcp_packet()[:27]), "icmp_quote_truncated"),  # 7 bytes of TCP header
    (b"\x65" + bytes(_tcp_packet()[1:28]), "icmp_quote_bad_header"),
    (b"\x44" + bytes(_tcp_packet()[1:28]), "icmp_quote_bad_header"),
    (bytes(_tcp_packet()[:9]) + b"\x11" + bytes(_tcp_packet()[10:28]), "icmp_quote_not_tcp"),
    (bytes(_tcp_packet()[:6]) + b"\x00\x10" + bytes(_tcp_packet()[8:28]), "icmp_quote_fragment"),
])
def test_parse_quoted_tcp_rejects_what_cannot_be_one_of_our_segments(
        quote: bytes, reason: str) -> None:
    with pytest.raises(Malformed) as e:
        parse_quoted_tcp(quote)
    assert e.value.reason == reason


def test_frag_needed_carries_the_next_hop_mtu() -> None:
    pkt = _tcp_packet()
    msg = parse_icmp(build_frag_needed(1280, pkt))
    assert (msg.type, msg.code, msg.rest & 0xFFFF) == (DEST_UNREACHABLE, CODE_FRAG_NEEDED, 1280)
    assert parse_quoted_tcp(msg.body).seq == 0x01020304
