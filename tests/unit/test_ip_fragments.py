"""IPv4 fragment reassembly (RFC 791 3.2, RFC 815) and its bounds, alone and in the stack."""

from __future__ import annotations

import struct
from collections import Counter

import pytest
from tcp_helpers import Wire, ip, packet, peer, stack

from tcpstack.fragments import FRAGMENT_OVERHEAD, MAX_FRAGMENTS, Reassembler
from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp.config import TcpConfig
from tcpstack.wire import icmp
from tcpstack.wire.checksum import checksum
from tcpstack.wire.ipv4 import PROTO_ICMP, PROTO_UDP, build_ipv4, parse_ipv4
from tcpstack.wire.tcp import ACK, SYN, TcpOptions, TcpSegment

KEY = (1, 2, 17, 7)
HDR = bytes(20)


def reassembler(memory: int = 1 << 20, timeout: float = 30.0) -> Reassembler:
    return Reassembler(Counter(), memory, timeout)


def test_fragments_in_any_order_give_the_datagram_back() -> None:
    r = reassembler()
    data = bytes(range(256)) * 10
    assert r.add(KEY, HDR, 1600, False, data[1600:], 0.0) is None
    assert r.add(KEY, HDR, 0, True, data[:800], 0.0) is None
    whole = r.add(KEY, HDR, 800, True, data[800:1600], 0.0)
    assert whole is not None and whole[1] == data
    assert r.used == 0 and len(r) == 0
    assert r.counters["ipv4_reassembled"] == 1


def test_the_whole_datagram_header_is_the_first_fragments_with_fragment_fields_cleared() -> None:
    r = reassembler()
    first = build_ipv4(ip("10.0.0.1"), ip("10.0.0.2"), PROTO_UDP, bytes(16), ident=9)
    first[6] = 0x20 | 0x40  # MF and DF
    whole = r.add(KEY, first[:20], 0, True, bytes(16), 0.0)
    assert whole is None
    whole = r.add(KEY, bytes(20), 16, False, bytes(4), 0.0)
    assert whole is not None
    pkt = parse_ipv4(whole[0] + whole[1])  # valid: length and checksum fixed, no MF
    assert len(pkt.payload) == 20 and pkt.ident == 9


def test_overlapping_fragment_discards_the_datagram() -> None:
    r = reassembler()
    r.add(KEY, HDR, 0, True, bytes(16), 0.0)
    assert r.add(KEY, HDR, 8, True, bytes(16), 0.0) is None
    assert r.counters["ipv4_frag_overlap"] == 1
    assert len(r) == 0 and r.used == 0
    # What was held is gone: the rest alone cannot complete it.
    assert r.add(KEY, HDR, 16, False, bytes(8), 0.0) is None


def test_exact_duplicate_is_dropped_without_harm() -> None:
    r = reassembler()
    r.add(KEY, HDR, 0, True, bytes(16), 0.0)
    assert r.add(KEY, HDR, 0, True, bytes(16), 0.0) is None
    assert r.counters["ipv4_frag_duplicate"] == 1
    assert r.add(KEY, HDR, 16, False, bytes(3), 0.0) is not None


@pytest.mark.parametrize(("offset", "more", "size", "reason"), [
    (0, True, 12, "ipv4_frag_bad_length"),  # not a multiple of 8
    (0, True, 0, "ipv4_frag_bad_length"),
    (65528, False, 100, "ipv4_frag_too_big"),  # the ping of death
])
def test_malformed_fragments_are_dropped_and_counted(
        offset: int, more: bool, size: int, reason: str) -> None:
    r = reassembler()
    assert r.add(KEY, HDR, offset, more, bytes(size), 0.0) is None
    assert r.counters[reason] == 1
    assert len(r) == 0


def test_fragments_disagreeing_with_the_end_discard_the_datagram() -> None:
    r = reassembler()
    r.add(KEY, HDR, 0, True, bytes(64), 0.0)
    assert r.add(KEY, HDR, 32, False, bytes(8), 0.0) is None  # ends inside a held piece
    assert r.counters["ipv4_frag_inconsistent"] == 1
    r.add(KEY, HDR, 64, False, bytes(8), 0.0)
    assert r.add(KEY, HDR, 80, True, bytes(8), 0.0) is None  # beyond the end
    assert r.counters["ipv4_frag_inconsistent"] == 2


def test_incomplete_datagrams_expire_after_the_timeout() -> None:
    r = reassembler(timeout=30.0)
    r.add(KEY, HDR, 0, True, bytes(8), 0.0)
    r.expire(29.9)
    assert len(r) == 1
    r.expire(30.0)
    assert len(r) == 0 and r.used == 0
    assert r.counters["ipv4_frag_timeout"] == 1
    # The late rest starts a new datagram, which cannot complete without its head.
    assert r.add(KEY, HDR, 8, False, bytes(8), 31.0) is None


def test_memory_budget_refuses_fragments_but_keeps_what_it_holds() -> None:
    memory = 256 * 1024
    r = reassembler(memory=memory)
    sources = 8
    chunk = 8000
    held = 0
    for i in range(10_000):
        key = (i % sources, 2, 17, i)
        r.add(key, HDR, 0, True, bytes(chunk), 0.0)
        assert r.used <= memory
        held = max(held, len(r))
    assert r.counters["ipv4_frag_memory_full"] > 0
    assert r.used <= memory
    assert len(r) == held  # nothing held was evicted for newcomers


def test_one_source_cannot_take_more_than_a_quarter() -> None:
    memory = 1 << 20
    r = reassembler(memory=memory)
    for i in range(1000):
        r.add((5, 2, 17, i), HDR, 0, True, bytes(8000), 0.0)
    assert r.counters["ipv4_frag_source_limit"] > 0
    assert r.used <= memory // 4
    # Another source still gets room.
    refused = r.counters["ipv4_frag_source_limit"]
    used = r.used
    assert r.add((6, 2, 17, 1), HDR, 0, True, bytes(8000), 0.0) is None
    assert r.counters["ipv4_frag_source_limit"] == refused
    assert r.used == used + 8000 + FRAGMENT_OVERHEAD


def test_too_many_fragments_discard_the_datagram() -> None:
    r = reassembler()
    for i in range(MAX_FRAGMENTS):
        r.add(KEY, HDR, i * 8, True, bytes(8), 0.0)
    assert r.used == MAX_FRAGMENTS * (8 + FRAGMENT_OVERHEAD)
    r.add(KEY, HDR, MAX_FRAGMENTS * 8, True, bytes(8), 0.0)
    assert r.counters["ipv4_frag_too_many"] == 1
    assert r.used == 0


# ------------------------------------------------------------------- stack


def _fragments(packet: bytearray, size: int) -> list[bytearray]:
    """Cut an IPv4 packet (20-byte header) into fragments of ``size`` payload bytes."""
    header, payload = packet[:20], packet[20:]
    out = []
    for off in range(0, len(payload), size):
        part = payload[off:off + size]
        frag = build_ipv4(int.from_bytes(header[12:16], "big"),
                          int.from_bytes(header[16:20], "big"), header[9], part,
                          ident=int.from_bytes(header[4:6], "big"))
        more = off + size < len(payload)
        struct.pack_into("!H", frag, 6, (0x2000 if more else 0) | off // 8)
        frag[10:12] = b"\x00\x00"
        struct.pack_into("!H", frag, 10, checksum(frag[:20]))
        out.append(frag)
    return out


def test_stack_answers_a_fragmented_ping() -> None:
    st = stack()
    request = icmp.build_icmp(icmp.ECHO_REQUEST, 0, 0x00010001, bytes(range(256)) * 12)
    pkt = build_ipv4(ip("10.0.0.1"), ip("10.0.0.2"), PROTO_ICMP, request, ident=4242)
    for frag in reversed(_fragments(pkt, 1480)):
        st.receive(frag, 0.0)
    (reply,) = st.packets_to_send(0.0)
    msg = icmp.parse_icmp(parse_ipv4(reply).payload)
    assert msg.type == icmp.ECHO_REPLY and bytes(msg.body) == bytes(range(256)) * 12
    assert st.counters["ipv4_reassembled"] == 1


def test_stack_with_reassembly_off_drops_and_counts_fragments() -> None:
    st = Stack(StackConfig(tcp=TcpConfig(), reassembly=False))
    request = icmp.build_icmp(icmp.ECHO_REQUEST, 0, 1, bytes(3000))
    pkt = build_ipv4(ip("10.0.0.1"), ip("10.0.0.2"), PROTO_ICMP, request)
    for frag in _fragments(pkt, 1480):
        st.receive(frag, 0.0)
    assert st.packets_to_send(0.0) == []
    assert st.counters["ipv4_fragment"] == 3


def test_stack_takes_a_fragmented_tcp_segment() -> None:
    w = Wire()
    w.stack.listen(80)
    (synack,) = w.send(TcpSegment(40000, 80, 100, 0, SYN, 65535, TcpOptions(mss=1460)))
    w.send(TcpSegment(40000, 80, 101, synack.seq + 1, ACK, 65535))
    (tcb,) = w.stack.tcbs.values()
    data = bytes(range(256)) * 5
    seg = peer(tcb, ACK, payload=data)
    for frag in _fragments(packet(seg, "10.0.0.1", "10.0.0.2"), 512):
        w.stack.receive(frag, 0.1)
    assert tcb.recv() == data
