"""The dual-stack demux: IPv6 connections on the same engine (RFC 8200, RFC 4443,
RFC 8201, RFC 6528 and SYN cookies over IPv6 4-tuples), dual-stack and IPv6-only
listeners, ICMPv6 echo and errors, extension headers and fragments."""

from __future__ import annotations

import errno
import ipaddress
import random
import struct

import pytest
from tcp_helpers import IRS, Pair, check_segment, syn_from_peer

from tcpstack.stack import IPV6_TCP_HEADERS, Stack, StackConfig
from tcpstack.tcp import events as ev
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.state import State
from tcpstack.wire import icmpv6
from tcpstack.wire.ipv4 import parse_ipv4
from tcpstack.wire.ipv6 import (
    NH_DEST_OPTS,
    NH_FRAGMENT,
    NH_ICMPV6,
    NH_TCP,
    NH_UDP,
    build_fragments,
    build_ipv6,
    parse_ipv6,
    walk_headers,
)
from tcpstack.wire.tcp import ACK, PSH, RST, SYN, TcpOptions, TcpSegment, emit_tcp, parse_tcp

ME6 = ipaddress.IPv6Address("fd00::2")
PEER6 = ipaddress.IPv6Address("fd00::1")
ME4 = ipaddress.IPv4Address("10.0.0.2")
PEER4 = ipaddress.IPv4Address("10.0.0.1")


def dual(addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = (ME4, ME6),
         **changes: object) -> Stack:
    config = StackConfig(addresses=addresses, **changes)  # type: ignore[arg-type]
    return Stack(config, isn_secret=b"a secret of 16+ bytes", rng=random.Random(3))


class Peer:
    """Plays a host on the other side of the TUN, in either family."""

    def __init__(self, st: Stack, v6: bool = True) -> None:
        self.stack = st
        self.me = int(PEER6 if v6 else PEER4)
        self.them = int(ME6 if v6 else ME4)
        self.now = 0.0

    def send_raw(self, pkt: bytes | bytearray) -> list[bytearray]:
        self.stack.receive(pkt, self.now)
        return [p for p in self.stack.packets_to_send(self.now) if isinstance(p, bytearray)]

    def send(self, seg: TcpSegment) -> list[TcpSegment]:
        return [self.tcp(p) for p in self.send_raw(emit_tcp(seg, self.me, self.them, 1))]

    def tcp(self, pkt: bytearray) -> TcpSegment:
        if pkt[0] >> 4 == 6:
            ip6 = parse_ipv6(pkt)
            assert (ip6.src, ip6.dst) == (self.them, self.me)
            chain = walk_headers(ip6.packet, ip6.next_header)
            assert chain.proto == NH_TCP
            return parse_tcp(bytes(ip6.packet[chain.offset:]), ip6.src, ip6.dst)
        ip4 = parse_ipv4(pkt)
        assert (ip4.src, ip4.dst) == (self.them, self.me)
        return parse_tcp(bytes(ip4.payload), ip4.src, ip4.dst)

    def icmp(self, pkt: bytearray) -> icmpv6.IcmpMessage:
        ip6 = parse_ipv6(pkt)
        assert ip6.next_header == NH_ICMPV6 and (ip6.src, ip6.dst) == (self.them, self.me)
        return icmpv6.parse_icmpv6(ip6.packet[40:], ip6.src, ip6.dst)

    def handshake(self, port: int = 80, sport: int = 40000) -> TcpSegment:
        (synack,) = self.send(syn_from_peer(src_port=sport, dst_port=port))
        check_segment(synack, SYN | ACK, ack=IRS + 1)
        assert self.send(TcpSegment(sport, port, IRS + 1, synack.seq + 1, ACK, 65535)) == []
        return synack


# ------------------------------------------------------------------ connections


def test_passive_open_over_ipv6_advertises_mtu_minus_60() -> None:
    st = dual()
    st.listen(80)
    synack = Peer(st).handshake()
    assert synack.options.mss == 1460 - 20  # RFC 8200 8.3
    (tcb,) = st.tcbs.values()
    assert (tcb.local_ip, tcb.remote_ip) == (int(ME6), int(PEER6))
    assert tcb.state is State.ESTABLISHED and tcb.mss_floor == 1280 - IPV6_TCP_HEADERS


def test_dual_stack_listener_takes_both_families_v6only_refuses_ipv4() -> None:
    st = dual()
    st.listen(80)
    st.listen(81, v6only=True)
    Peer(st, v6=False).handshake(80)
    Peer(st, v6=True).handshake(80, 40001)
    Peer(st, v6=True).handshake(81, 40002)
    (rst,) = Peer(st, v6=False).send(syn_from_peer(dst_port=81))
    check_segment(rst, RST | ACK, seq=0, ack=IRS + 1)
    assert len(st.tcbs) == 3
    st.unlisten(81)
    st.listen(81)
    Peer(st, v6=False).handshake(81, 40003)


def test_ipv6_data_both_ways_between_two_stacks() -> None:
    """Two stacks, one IPv6 address each: the engine is the same, bytes arrive exact."""
    net = Pair(dual((ipaddress.IPv6Address("fd00::1"),)), dual((ME6,)))
    server = net.b.listen(80)
    assert server is not None
    client = net.a.connect("fd00::2", 80, 0.0)
    data = bytes(random.Random(5).randbytes(300_000))
    got = bytearray()
    sent = False

    def app() -> None:
        nonlocal sent
        if client.state is State.ESTABLISHED and not sent:
            client.send(data)
            client.close()
            sent = True
        for tcb in net.b.tcbs.values():
            got.extend(tcb.recv(1 << 20))

    net.run(app, until=lambda: len(got) == len(data))
    assert bytes(got) == data
    (srv,) = [t for t in net.b.tcbs.values()]
    assert srv.snd_mss == 1440 and client.snd_mss == 1440


def test_active_open_to_ipv6_and_ipv4_mapped() -> None:
    st = dual()
    tcb = st.connect("fd00::1", 443, 0.0)
    (pkt,) = st.packets_to_send(0.0)
    assert isinstance(pkt, bytearray)
    syn = Peer(st).tcp(pkt)
    assert syn.flags == SYN and syn.dst_port == 443 and syn.options.mss == 1440
    assert tcb.local_ip == int(ME6)
    mapped = st.connect("::ffff:10.0.0.1", 443, 0.0)
    assert (mapped.local_ip, mapped.remote_ip) == (int(ME4), int(PEER4))
    with pytest.raises(OSError) as info:
        st.connect("fd00::1", 443, 0.0, local_ip="10.0.0.2")
    assert info.value.errno == 97
    with pytest.raises(OSError):
        st.connect("::1", 443, 0.0)
    with pytest.raises(OSError) as info:
        dual((ME4,)).connect("fd00::1", 80, 0.0)
    assert info.value.errno == 101


def test_isn_and_cookies_use_the_whole_ipv6_tuple() -> None:
    """RFC 6528 over IPv6: addresses differing only in their high bits give different
    ISNs; SYN cookies (always on) complete a handshake over IPv6."""
    st = dual(syncookies="always")
    isn = st._isn
    a = isn.offset(int(ME6), 80, int(PEER6), 40000)
    b = isn.offset(int(ME6), 80, int(PEER6) ^ (1 << 120), 40000)
    assert a != b
    st.listen(80)
    p = Peer(st)
    (synack,) = p.send(syn_from_peer())
    assert st.counters["tcp_syncookie_sent"] == 1 and not st.tcbs
    p.send(TcpSegment(40000, 80, IRS + 1, synack.seq + 1, ACK, 65535))
    assert st.counters["tcp_syncookie_accepted"] == 1
    (tcb,) = st.tcbs.values()
    assert tcb.state is State.ESTABLISHED and tcb.remote_ip == int(PEER6)


def test_closed_port_rst_over_ipv6_is_rate_limited() -> None:
    st = dual(rst_rate_limit=10)
    p = Peer(st)
    answers = [p.send(syn_from_peer(dst_port=81, src_port=1000 + i)) for i in range(5)]
    assert sum(len(a) for a in answers) == 1  # burst: a tenth of 10 per second
    assert st.counters["tcp_rst_rate_limited"] == 4


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(("src", "dst", "counter"), [
    ("fd00::1", "ff02::16", "ipv6_multicast_ignored"),  # the kernel's MLD report
    ("fd00::1", "fd00::3", "ip_not_for_us"),
    ("::", "fd00::2", "ip_bad_source"),
    ("::1", "fd00::2", "ip_bad_source"),
    ("::ffff:10.0.0.1", "fd00::2", "ip_bad_source"),
    ("ff02::1", "fd00::2", "ip_bad_source"),
    ("fd00::2", "fd00::2", "ip_bad_source"),
])
def test_addresses_checked(src: str, dst: str, counter: str) -> None:
    st = dual()
    st.listen(80)
    pkt = emit_tcp(syn_from_peer(), int(PEER6), int(ME6), 0)
    pkt[8:24] = ipaddress.IPv6Address(src).packed
    pkt[24:40] = ipaddress.IPv6Address(dst).packed
    st.receive(pkt, 0.0)
    assert st.counters[counter] == 1
    assert st.packets_to_send(0.0) == [] and not st.tcbs


def test_config_refuses_unusable_ipv6_addresses() -> None:
    for bad in ("::1", "fe80::1", "ff02::1", "::ffff:1.2.3.4", "::"):
        with pytest.raises(ValueError):
            StackConfig(addresses=(ipaddress.IPv6Address(bad),))
    StackConfig(addresses=(ME6,))  # IPv6 only is fine


def test_bad_tcp_checksum_over_ipv6() -> None:
    st = dual()
    st.listen(80)
    pkt = emit_tcp(syn_from_peer(), int(PEER6), int(ME6), 0)
    pkt[-1] ^= 0xFF
    st.receive(pkt, 0.0)
    assert st.counters["tcp_bad_checksum"] == 1 and not st.tcbs


# ------------------------------------------------------------------ ICMPv6


def echo_request(ident: int = 7, seq: int = 1, data: bytes = b"ping6") -> bytearray:
    msg = icmpv6.build_icmpv6(int(PEER6), int(ME6), icmpv6.ECHO_REQUEST, 0,
                              (ident << 16) | seq, data)
    return build_ipv6(int(PEER6), int(ME6), NH_ICMPV6, msg)


def test_echo_answered() -> None:
    st = dual()
    p = Peer(st)
    (reply,) = p.send_raw(echo_request(data=b"abc" * 100))
    msg = p.icmp(reply)
    assert (msg.type, msg.rest, bytes(msg.body)) == (icmpv6.ECHO_REPLY, (7 << 16) | 1,
                                                      b"abc" * 100)
    assert st.counters["icmpv6_echo_replied"] == 1
    quiet = dual(answer_ping=False)
    assert Peer(quiet).send_raw(echo_request()) == []
    assert quiet.counters["icmpv6_echo_ignored"] == 1


def test_neighbour_discovery_to_us_is_counted_and_ignored() -> None:
    st = dual()
    ns = icmpv6.build_icmpv6(int(PEER6), int(ME6), 135, 0, 0, bytes(16))
    assert Peer(st).send_raw(build_ipv6(int(PEER6), int(ME6), NH_ICMPV6, ns, 255)) == []
    assert st.counters["icmpv6_type_135_ignored"] == 1


def test_echo_behind_extension_headers_and_in_fragments() -> None:
    st = dual()
    p = Peer(st)
    dopts = bytes((NH_ICMPV6, 0)) + bytes((1, 4)) + bytes(4)
    msg = icmpv6.build_icmpv6(int(PEER6), int(ME6), icmpv6.ECHO_REQUEST, 0, 5, b"x" * 40)
    (reply,) = p.send_raw(build_ipv6(int(PEER6), int(ME6), NH_DEST_OPTS, dopts + msg))
    assert bytes(p.icmp(reply).body) == b"x" * 40
    big = icmpv6.build_icmpv6(int(PEER6), int(ME6), icmpv6.ECHO_REQUEST, 0, 6, bytes(3000))
    frags = build_fragments(int(PEER6), int(ME6), NH_ICMPV6, big, 1232, 99)
    assert len(frags) == 3
    out: list[bytearray] = []
    for f in reversed(frags):  # out of order
        out += p.send_raw(f)
    (reply,) = out
    assert p.icmp(reply).rest == 6 and len(p.icmp(reply).body) == 3000
    assert st.counters["ipv6_reassembled"] == 1


def test_overlapping_ipv6_fragments_discard_the_datagram() -> None:
    """RFC 5722: overlapping fragments -> the whole datagram is dropped."""
    st = dual()
    p = Peer(st)
    msg = icmpv6.build_icmpv6(int(PEER6), int(ME6), icmpv6.ECHO_REQUEST, 0, 6, bytes(2000))
    frags = build_fragments(int(PEER6), int(ME6), NH_ICMPV6, msg, 1024, 5)
    overlap = bytearray(build_fragments(int(PEER6), int(ME6), NH_ICMPV6, msg, 512, 5)[1])
    overlap[43] |= 1  # "more fragments": a middle piece at 512, overlapping 0..1024
    assert p.send_raw(frags[0]) == [] and p.send_raw(overlap) == []
    assert p.send_raw(frags[1]) == []
    assert st.counters["ipv6_frag_overlap"] == 1
    off = dual(reassembly=False)
    assert Peer(off).send_raw(frags[0]) == []
    assert off.counters["ipv6_fragment"] == 1


def test_unknown_next_header_gets_parameter_problem_rate_limited() -> None:
    """RFC 8200 4 / RFC 4443 3.4 code 1 with the pointer; RFC 4443 2.4 (f)."""
    st = dual(icmp_rate_limit=1)
    p = Peer(st)
    pkt = build_ipv6(int(PEER6), int(ME6), 253, bytes(16))
    out = []
    for _ in range(60):
        out += p.send_raw(pkt)
    assert len(out) == 50  # the ICMP bucket's burst
    msg = p.icmp(out[0])
    assert (msg.type, msg.code, msg.rest) == (icmpv6.PARAMETER_PROBLEM, 1, 6)
    assert bytes(msg.body) == bytes(pkt)
    assert st.counters["ipv6_unknown_next_header"] == 60
    assert st.counters["icmp_rate_limited"] == 10


def test_udp_gets_port_unreachable_but_no_error_answers_an_error() -> None:
    st = dual()
    p = Peer(st)
    (err,) = p.send_raw(build_ipv6(int(PEER6), int(ME6), NH_UDP, bytes(12)))
    msg = p.icmp(err)
    assert (msg.type, msg.code) == (icmpv6.DEST_UNREACHABLE, icmpv6.CODE_PORT_UNREACHABLE)
    # An ICMPv6 error carrying an option that asks for a Parameter Problem: silence.
    bad_opt = bytes((NH_ICMPV6, 0)) + bytes((0x80, 4)) + bytes(4)
    inner = icmpv6.build_icmpv6(int(PEER6), int(ME6), icmpv6.TIME_EXCEEDED, 0, 0, bytes(48))
    assert p.send_raw(build_ipv6(int(PEER6), int(ME6), NH_DEST_OPTS, bad_opt + inner)) == []
    assert st.counters["icmpv6_error_about_error"] == 1


def _established_with_data(st: Stack, size: int = 4 * 1440) -> tuple[Peer, object]:
    st.listen(80)
    p = Peer(st)
    p.handshake()
    (tcb,) = st.tcbs.values()
    tcb.send(bytes(size))
    sent = st.packets_to_send(0.0)
    assert sent
    return p, tcb


def _error_about(pkt: bytes | bytearray, type_: int, code: int, rest: int = 0) -> bytearray:
    msg = icmpv6.build_error(int(PEER6), int(ME6), type_, code, rest, pkt)
    return build_ipv6(int(PEER6), int(ME6), NH_ICMPV6, msg)


def test_packet_too_big_lowers_the_mss_with_the_1280_floor() -> None:
    st = dual()
    st.listen(80)
    p = Peer(st)
    p.handshake()
    (tcb,) = st.tcbs.values()
    tcb.send(bytes(4 * 1440))
    (first, *_rest) = st.packets_to_send(0.0)
    assert isinstance(first, bytearray)
    resent = p.send_raw(_error_about(first, icmpv6.PACKET_TOO_BIG, 0, 1400))
    assert tcb.snd_mss == 1400 - 60 and st.counters["icmpv6_packet_too_big"] == 1
    assert resent and all(len(p.tcp(r).payload) <= 1340 for r in resent)
    assert st.pmtu_cache[int(PEER6)][0] == 1400
    # A forged 600-byte MTU cannot go below IPv6's 1280 (RFC 8201 4).
    p.send_raw(_error_about(first, icmpv6.PACKET_TOO_BIG, 0, 600))
    assert tcb.snd_mss == 1280 - 60
    assert st.counters["icmp_pmtu_below_floor"] == 1


def test_icmpv6_errors_reach_tcp_with_the_sequence_check() -> None:
    st = dual()
    st.listen(80)
    p = Peer(st)
    p.handshake()
    (tcb,) = st.tcbs.values()
    tcb.send(b"x" * 100)
    (seg_pkt,) = st.packets_to_send(0.0)
    assert isinstance(seg_pkt, bytearray)
    # Quoting a sequence number outside SND.UNA..SND.NXT: ignored, counted.
    forged = bytearray(seg_pkt)
    struct.pack_into("!I", forged, 44, (tcb.snd_una - 5000) & 0xFFFFFFFF)
    p.send_raw(_error_about(forged, icmpv6.DEST_UNREACHABLE, icmpv6.CODE_NO_ROUTE))
    assert st.counters["tcp_icmp_out_of_window"] == 1 and tcb.soft_error == 0
    # In window: a soft error recorded, the connection lives.
    p.send_raw(_error_about(seg_pkt, icmpv6.DEST_UNREACHABLE, icmpv6.CODE_NO_ROUTE))
    assert tcb.soft_error == errno.ENETUNREACH and tcb.state is State.ESTABLISHED
    p.send_raw(_error_about(seg_pkt, icmpv6.TIME_EXCEEDED, 0))
    assert tcb.soft_error == errno.EHOSTUNREACH


def test_port_unreachable_fails_an_ipv6_connect() -> None:
    st = dual()
    tcb = st.connect("fd00::1", 443, 0.0)
    (syn,) = st.packets_to_send(0.0)
    assert isinstance(syn, bytearray)
    Peer(st).send_raw(_error_about(syn, icmpv6.DEST_UNREACHABLE,
                                   icmpv6.CODE_PORT_UNREACHABLE))
    assert tcb.state is State.CLOSED
    (term,) = [e for e in tcb.take_events() if isinstance(e, ev.Terminated)]
    assert term.errno == errno.ECONNREFUSED


def test_tcp_in_ipv6_fragments_is_reassembled() -> None:
    st = dual()
    st.listen(80)
    p = Peer(st)
    synack = p.handshake()
    seg = TcpSegment(40000, 80, IRS + 1, synack.seq + 1, ACK | PSH, 65535,
                     TcpOptions(), b"q" * 3000)
    tcp_bytes = emit_tcp(seg, int(PEER6), int(ME6), 0)[40:]
    out: list[bytearray] = []
    for f in build_fragments(int(PEER6), int(ME6), NH_TCP, tcp_bytes, 1200, 1):
        assert f[6] == NH_FRAGMENT
        out += p.send_raw(f)
    (tcb,) = st.tcbs.values()
    assert tcb.recv(10_000) == b"q" * 3000


def test_tcp_config_mss_for_ipv6_follows_the_ipv4_one() -> None:
    st = Stack(StackConfig(addresses=(ME6,), tcp=TcpConfig(mss=8960)))
    assert st.tcp_config6.mss == 8940


def test_first_fragment_without_the_tcp_header_is_dropped_with_parameter_problem() -> None:
    """RFC 7112 5: a first fragment that does not hold the whole header chain (here
    12 bytes of a TCP header) is dropped and counted, and answered with Parameter
    Problem code 3, pointer 0, within the ICMP rate limit (RFC 4443 2.4 f); the
    later fragments then never make a datagram."""
    st = dual(icmp_rate_limit=1)
    st.listen(80)
    p = Peer(st)
    synack = p.handshake()
    seg = TcpSegment(40000, 80, IRS + 1, synack.seq + 1, ACK | PSH, 65535,
                     TcpOptions(), b"z" * 600)
    tcp_bytes = emit_tcp(seg, int(PEER6), int(ME6), 0)[40:]
    frags = build_fragments(int(PEER6), int(ME6), NH_TCP, tcp_bytes, 16, 9)
    assert len(frags[0]) == 40 + 8 + 16
    (reply,) = p.send_raw(frags[0])
    msg = p.icmp(reply)
    assert (msg.type, msg.code, msg.rest) == (icmpv6.PARAMETER_PROBLEM, 3, 0)
    assert bytes(msg.body) == bytes(frags[0])
    for f in frags[1:]:
        assert p.send_raw(f) == []
    (tcb,) = st.tcbs.values()
    assert tcb.recv(10_000) == b""
    assert st.counters["ipv6_frag_header_chain_incomplete"] == 1
    assert st.counters["ipv6_reassembled"] == 0
    out = []
    for _ in range(60):
        out += p.send_raw(frags[0])
    assert len(out) == 49  # the rest of the bucket's burst of 50
    assert st.counters["ipv6_frag_header_chain_incomplete"] == 61
    assert st.counters["icmp_rate_limited"] == 11
    whole = build_fragments(int(PEER6), int(ME6), NH_TCP, tcp_bytes, 24, 10)
    assert len(whole[0]) == 40 + 8 + 24  # the 20-byte header fits: reassembled
    for f in whole:
        p.send_raw(f)
    assert tcb.recv(10_000) == b"z" * 600
