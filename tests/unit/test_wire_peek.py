"""The glance that orders a device batch: which packets are requests for new connections."""

from __future__ import annotations

import ipaddress

import pytest
from tcp_helpers import packet, syn_from_peer

from tcpstack.stack import Stack, StackConfig
from tcpstack.wire import virtio
from tcpstack.wire.ipv6 import build_ipv6
from tcpstack.wire.peek import is_connection_request
from tcpstack.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpOptions, TcpSegment, emit_tcp_ipv4

PEER, US = "10.0.0.1", "10.0.0.2"


def _v4(flags: int) -> bytes:
    return bytes(packet(syn_from_peer(flags=flags), PEER, US))


@pytest.mark.parametrize(("flags", "asks"), [
    (SYN, True),
    (SYN | PSH, True),  # PSH does not change what the segment asks for
    (SYN | ACK, False),
    (SYN | FIN, False),
    (SYN | RST, False),
    (ACK, False),
    (RST, False),
    (FIN | ACK, False),
])
def test_ipv4_tcp_flags_decide(flags: int, asks: bool) -> None:
    assert is_connection_request(_v4(flags)) is asks


def test_ipv4_header_options_move_the_tcp_header() -> None:
    plain = bytearray(_v4(SYN))
    # Insert 4 bytes of IP options (NOPs and an end of list) and fix IHL.
    with_opts = plain[:20] + bytes([1, 1, 1, 0]) + plain[20:]
    with_opts[0] = 0x46
    assert is_connection_request(bytes(with_opts))
    # The same bytes with IHL left at 5 would put the flags somewhere else.
    wrong = bytearray(with_opts)
    wrong[0] = 0x45
    assert not is_connection_request(bytes(wrong))


@pytest.mark.parametrize("frag", [0x2000, 0x0001, 0x2010])  # MF, an offset, both
def test_ipv4_fragments_are_not_requests(frag: int) -> None:
    pkt = bytearray(_v4(SYN))
    pkt[6:8] = frag.to_bytes(2, "big")
    assert not is_connection_request(bytes(pkt))


def test_dont_fragment_does_not_matter() -> None:
    pkt = bytearray(_v4(SYN))
    pkt[6:8] = (0x4000).to_bytes(2, "big")
    assert is_connection_request(bytes(pkt))


def test_ipv6_syn_is_a_request_and_an_extension_header_hides_it() -> None:
    src, dst = int(ipaddress.IPv6Address("fd00::1")), int(ipaddress.IPv6Address("fd00::2"))
    seg = TcpSegment(40000, 80, 1, 0, SYN, 65535, TcpOptions(mss=1440))
    tcp = bytes(emit_tcp_ipv4(seg, 1, 2, 1))[20:]  # the TCP header (checksum irrelevant)
    assert is_connection_request(bytes(build_ipv6(src, dst, 6, tcp)))
    ack = bytearray(tcp)
    ack[13] = ACK
    assert not is_connection_request(bytes(build_ipv6(src, dst, 6, bytes(ack))))
    # Hop-by-hop options first (next header 0): not looked through.
    hop = bytes([6, 0, 1, 4, 0, 0, 0, 0])
    assert not is_connection_request(bytes(build_ipv6(src, dst, 0, hop + tcp)))


def test_other_protocols_truncated_and_garbage_are_not_requests() -> None:
    pkt = bytearray(_v4(SYN))
    pkt[9] = 17  # UDP
    assert not is_connection_request(bytes(pkt))
    assert not is_connection_request(_v4(SYN)[:33])  # ends before the flags byte
    assert not is_connection_request(b"")
    assert not is_connection_request(bytes(60))  # version 0
    assert not is_connection_request(b"\xff" * 60)  # version 15


def test_an_offset_skips_the_virtio_header() -> None:
    pkt = bytes(virtio.PLAIN) + _v4(SYN)
    assert is_connection_request(pkt, virtio.HEADER_LEN)
    assert not is_connection_request(pkt)


def _stack() -> Stack:
    return Stack(StackConfig(addresses=(ipaddress.IPv4Address(US),)))


def test_requests_last_keeps_each_part_in_arrival_order() -> None:
    syns = [bytes(packet(syn_from_peer(src_port=p), PEER, US)) for p in (1001, 1002, 1003)]
    acks = [bytes(packet(syn_from_peer(src_port=p, flags=ACK), PEER, US)) for p in (2001, 2002)]
    batch = [syns[0], acks[0], syns[1], syns[2], acks[1]]
    rest, requests = _stack().requests_last(batch)
    assert list(rest) == acks
    assert list(requests) == syns


def test_a_batch_of_one_kind_comes_back_whole() -> None:
    syns = [bytes(packet(syn_from_peer(src_port=p), PEER, US)) for p in (1001, 1002)]
    acks = [bytes(packet(syn_from_peer(src_port=p, flags=ACK), PEER, US)) for p in (2001, 2002)]
    st = _stack()
    for batch in (syns, acks, []):
        rest, requests = st.requests_last(batch)
        assert list(rest) == batch
        assert list(requests) == []
