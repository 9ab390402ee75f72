"""Path MTU: RFC 1191 / RFC 8201 "fragmentation needed" and RFC 4821-style probing
for black holes (Linux tcp_mtu_probing=1), in the engine with a fake clock and
through the demux with real ICMP packets."""

from __future__ import annotations

import pytest
from tcp_helpers import (
    ISS,
    RTT,
    base_config,
    drain,
    expect,
    ip,
    packet,
    peer,
    stack,
    tcb_established,
)

from tcpstack.stack import IPV4_TCP_HEADERS, Stack
from tcpstack.tcp.control import MIN_PATH_MSS
from tcpstack.tcp.path import BASE_MSS
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire import icmp
from tcpstack.wire.ipv4 import PROTO_ICMP, build_ipv4, parse_ipv4
from tcpstack.wire.tcp import ACK, SYN, TcpOptions, TcpSegment, parse_tcp

NOW = 1.0


def _in_flight(tcb: Tcb, segments: int, now: float = NOW) -> list[TcpSegment]:
    tcb.send(bytes(segments * tcb.seg_mss))
    return expect(tcb, now)


# ------------------------------------------------------------------ engine


def test_frag_needed_lowers_the_mss_and_resends_what_no_longer_fits_at_once() -> None:
    tcb = tcb_established()
    sent = _in_flight(tcb, 4)
    assert [len(s.payload) for s in sent] == [1460] * 4
    cwnd = tcb.cc.cwnd
    assert tcb.on_packet_too_big(1240, tcb.snd_una, NOW + 0.01)
    assert (tcb.snd_mss, tcb.seg_mss) == (1240, 1240)
    resent = expect(tcb, NOW + 0.01)
    assert resent, "the dropped segments go out again without waiting for the RTO"
    assert resent[0].seq == ISS + 1
    assert all(len(s.payload) <= 1240 for s in resent)
    assert tcb.cc.cwnd == cwnd  # dropped for their size, not congestion
    assert tcb.counters["tcp_pmtu_lowered"] == 1
    # Everything arrives: the whole stream, re-cut, is acknowledged.
    tcb.receive(peer(tcb, ack=tcb.snd_max), NOW + 0.02)
    assert tcb.snd_una == tcb.snd_max


def test_frag_needed_quoting_a_segment_not_in_flight_is_ignored() -> None:
    tcb = tcb_established()
    _in_flight(tcb, 2)
    assert not tcb.on_packet_too_big(1000, ISS, NOW)  # our SYN: long acknowledged
    assert not tcb.on_packet_too_big(1000, tcb.snd_max, NOW)  # not sent yet
    assert tcb.snd_mss == 1460
    assert tcb.counters["tcp_icmp_out_of_window"] == 2


def test_frag_needed_never_raises_the_mss() -> None:
    tcb = tcb_established()
    _in_flight(tcb, 2)
    assert tcb.on_packet_too_big(1200, tcb.snd_una, NOW)
    assert not tcb.on_packet_too_big(1400, tcb.snd_una, NOW)
    assert tcb.snd_mss == 1200
    assert tcb.counters["tcp_pmtu_not_lower"] == 1


def test_engine_keeps_the_floor_whatever_it_is_told() -> None:
    tcb = tcb_established()
    _in_flight(tcb, 2)
    assert tcb.on_packet_too_big(8, tcb.snd_una, NOW)
    assert tcb.snd_mss == MIN_PATH_MSS


def test_a_lowered_mss_expires_and_the_full_size_is_tried_again() -> None:
    cfg = base_config(pmtu_expires=60.0)
    tcb = tcb_established(cfg)
    _in_flight(tcb, 1)
    assert tcb.on_packet_too_big(1000, tcb.snd_una, NOW)
    drain(tcb, NOW)
    tcb.receive(peer(tcb, ack=tcb.snd_max), NOW + 0.1)
    drain(tcb, NOW + 0.1)
    assert [len(s.payload) for s in _in_flight(tcb, 1, NOW + 1)] == [1000]
    tcb.receive(peer(tcb, ack=tcb.snd_max), NOW + 1.1)
    drain(tcb, NOW + 1.1)
    later = NOW + 61
    tcb.send(bytes(1460))
    assert [len(s.payload) for s in expect(tcb, later)] == [1460]
    assert tcb.counters["tcp_pmtu_expired"] == 1


def _run_rtos(tcb: Tcb, count: int, now: float) -> tuple[float, list[TcpSegment]]:
    """Let ``count`` retransmission timeouts fire; return the time and what the
    last one sent."""
    sent: list[TcpSegment] = []
    for _ in range(count):
        deadline = tcb.timers.rto
        assert deadline is not None
        now = deadline
        tcb.handle_timer(now)
        sent = expect(tcb, now)
    return now, sent


def test_black_hole_two_timeouts_of_full_sized_segments_lower_the_mss() -> None:
    """RFC 4821 / Linux tcp_mtu_probing=1: a path that silently drops large packets
    (ICMP filtered) is found by timeouts; the retransmission fits BASE_MSS."""
    tcb = tcb_established()
    _in_flight(tcb, 3)
    now, first = _run_rtos(tcb, 1, NOW)
    assert len(first[0].payload) == 1460 and tcb.snd_mss == 1460  # one RTO: just loss
    now, second = _run_rtos(tcb, 1, now)
    assert tcb.snd_mss == BASE_MSS
    assert second and all(len(s.payload) <= BASE_MSS for s in second)
    assert tcb.counters["tcp_plpmtud_lowered"] == 1
    # The smaller segment gets through: the connection recovers.
    tcb.receive(peer(tcb, ack=second[-1].seq + len(second[-1].payload)), now + RTT)
    assert tcb.retries == 0


def test_black_hole_halves_down_to_the_floor_and_stops_there() -> None:
    tcb = tcb_established(base_config(max_retries=20))
    _in_flight(tcb, 2)
    now, _ = _run_rtos(tcb, 2, NOW)
    assert tcb.snd_mss == BASE_MSS
    now, _ = _run_rtos(tcb, 1, now)
    assert tcb.snd_mss == BASE_MSS  # one more timeout at the new size is not enough
    now, sent = _run_rtos(tcb, 1, now)
    assert tcb.snd_mss == MIN_PATH_MSS  # 1024 // 2 = 512, the floor
    assert all(len(s.payload) <= MIN_PATH_MSS for s in sent)
    now, _ = _run_rtos(tcb, 2, now)
    assert tcb.snd_mss == MIN_PATH_MSS
    assert tcb.counters["tcp_plpmtud_at_floor"] == 1


def test_black_hole_detection_off_keeps_the_mss() -> None:
    tcb = tcb_established(base_config(mtu_probing=False))
    _in_flight(tcb, 2)
    _run_rtos(tcb, 4, NOW)
    assert tcb.snd_mss == 1460


def test_timeouts_of_small_segments_do_not_lower_the_mss() -> None:
    tcb = tcb_established()
    tcb.send(b"x" * 100)
    expect(tcb, NOW)
    _run_rtos(tcb, 4, NOW)
    assert tcb.snd_mss == 1460
    assert tcb.counters["tcp_plpmtud_lowered"] == 0


# ------------------------------------------------------------------- demux


PEER = "10.0.0.1"
ROUTER = "10.9.9.9"


def _established(st: Stack, now: float = 0.0) -> tuple[Tcb, int]:
    tcb = st.connect(PEER, 80, now)
    (syn,) = st.packets_to_send(now)
    iss = parse_tcp(bytes(parse_ipv4(syn).payload), ip("10.0.0.2"), ip(PEER)).seq
    synack = TcpSegment(80, tcb.local_port, 7000, (iss + 1) & 0xFFFFFFFF, SYN | ACK, 65535,
                        TcpOptions(mss=1460))
    st.receive(packet(synack, PEER, "10.0.0.2"), now + 0.01)
    st.packets_to_send(now + 0.01)
    return tcb, iss


def _frag_needed(mtu: int, quoted: bytes | bytearray) -> bytearray:
    return build_ipv4(ip(ROUTER), ip("10.0.0.2"), PROTO_ICMP,
                      icmp.build_frag_needed(mtu, quoted), ident=5)


def _send_data(st: Stack, tcb: Tcb, n: int, now: float) -> list[bytearray]:
    tcb.send(bytes(n))
    out = st.packets_to_send(now)
    assert all(isinstance(p, bytearray) for p in out)
    return [p for p in out if isinstance(p, bytearray)]


def test_stack_applies_frag_needed_and_remembers_the_destination() -> None:
    st = stack()
    tcb, _ = _established(st)
    pkts = _send_data(st, tcb, 4 * 1448, 0.1)
    assert max(len(p) for p in pkts) == 1500
    st.receive(_frag_needed(1280, pkts[0]), 0.11)
    resent = st.packets_to_send(0.11)
    assert resent and all(len(p) <= 1280 for p in resent)
    assert st.pmtu_cache[ip(PEER)][0] == 1280
    assert st.counters["icmp_frag_needed"] == 1
    # A new connection to the same destination starts at the learned size.
    tcb2, _ = _established(st, 0.2)
    assert tcb2.snd_mss == 1280 - IPV4_TCP_HEADERS


def test_stack_raises_a_forged_tiny_mtu_to_the_floor_and_counts_it() -> None:
    st = stack()
    tcb, _ = _established(st)
    pkts = _send_data(st, tcb, 2 * 1448, 0.1)
    st.receive(_frag_needed(68, pkts[0]), 0.11)
    assert st.counters["icmp_pmtu_below_floor"] == 1
    assert tcb.snd_mss == st.config.min_pmtu - IPV4_TCP_HEADERS
    assert all(len(p) <= st.config.min_pmtu for p in st.packets_to_send(0.11))


def test_stack_ignores_frag_needed_quoting_a_sequence_number_not_in_flight() -> None:
    st = stack()
    tcb, _ = _established(st)
    pkts = _send_data(st, tcb, 1448, 0.1)
    forged = bytearray(pkts[0][:48])
    forged[24:28] = ((tcb.snd_max + 5000) & 0xFFFFFFFF).to_bytes(4, "big")
    st.receive(_frag_needed(600, forged), 0.11)
    assert tcb.snd_mss == 1460
    assert st.counters["tcp_icmp_out_of_window"] == 1
    assert not st.pmtu_cache


@pytest.mark.parametrize(("length", "plateau"), [(1500, 1492), (1492, 1006), (9000, 8166)])
def test_stack_uses_the_rfc1191_plateau_when_the_router_gives_no_mtu(
        length: int, plateau: int) -> None:
    st = stack()
    tcb, _ = _established(st)
    pkts = _send_data(st, tcb, 1448, 0.1)
    quote = bytearray(pkts[0][:48])
    quote[2:4] = length.to_bytes(2, "big")  # the quoted total length
    st.receive(_frag_needed(0, quote), 0.11)
    expected = max(plateau, st.config.min_pmtu) - IPV4_TCP_HEADERS
    if expected < 1460:
        assert tcb.snd_mss == expected
    else:
        assert tcb.snd_mss == 1460  # a plateau above our size changes nothing
