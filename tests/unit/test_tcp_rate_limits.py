"""What the stack sends unasked is rate-limited (RFC 5961 7; Linux's tcp_invalid_ratelimit,
tcp_challenge_ack_limit and icmp_msgs_per_sec): challenge ACKs, ACKs to out-of-window
segments, repeated SYN,ACKs, RSTs to closed ports, ICMP errors."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

from tcp_helpers import (
    IRS,
    LOCAL,
    REMOTE,
    Wire,
    base_config,
    expect,
    peer,
    stack,
    syn_from_peer,
    tcb_established,
    tcb_listen_syn_received,
)

from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp.limits import Commons, MemoryPool, ReplyBudget, TokenBucket
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.ipv4 import PROTO_UDP, build_ipv4
from tcpstack.wire.tcp import ACK, PSH, RST, SYN


def test_challenge_acks_at_most_one_per_interval_per_connection() -> None:
    """RFC 5961 7 / Linux tcp_invalid_ratelimit (0.5 s): a burst of in-window RSTs
    draws one challenge ACK; the rest are counted; after the interval, another."""
    tcb = tcb_established()
    for t in (1.0, 1.1, 1.2, 1.49):
        tcb.receive(peer(tcb, RST, seq=tcb.rcv_nxt + 1), t)
    assert [s.flags for s in expect(tcb, 1.5)] == [ACK]
    assert tcb.counters["tcp_challenge_ack_limited"] == 3
    tcb.receive(peer(tcb, SYN), 1.6)  # a SYN challenge shares the interval
    assert [s.flags for s in expect(tcb, 1.6)] == [ACK]


def test_out_of_window_data_is_always_acknowledged() -> None:
    """RFC 5681 4.2: duplicates with data need their (duplicate) ACK for the sender's
    recovery: only segments without data are rate-limited."""
    tcb = tcb_established()
    old = tcb.rcv_nxt - 100
    for i in range(5):
        tcb.receive(peer(tcb, ACK | PSH, seq=old, payload=b"x" * 10), 1.0 + i * 0.01)
        assert [s.flags for s in expect(tcb, 1.0 + i * 0.01)] == [ACK]
    for i in range(5):  # the same without data: one ACK, then silence
        tcb.receive(peer(tcb, ACK, seq=old), 2.0 + i * 0.01)
    assert len(expect(tcb, 2.1)) == 1
    assert tcb.counters["tcp_oow_ack_limited"] == 4


def test_repeated_syn_gets_at_most_one_syn_ack_per_interval() -> None:
    """A SYN repeated in SYN-RECEIVED is answered with our SYN,ACK again, but not
    more than once per interval: repeated SYNs cannot make us a SYN,ACK cannon."""
    tcb = tcb_listen_syn_received(now=0.0)
    for i in range(10):
        tcb.receive(syn_from_peer(seq=IRS), 0.6 + i * 0.01)
    out = expect(tcb, 0.7)
    assert [s.flags for s in out] == [SYN | ACK]
    assert tcb.counters["tcp_syn_repeat_limited"] == 9


def test_global_challenge_ack_budget_is_randomized_per_second() -> None:
    """RFC 5961 7 and the CVE-2016-5696 fix: the stack-wide budget per second is drawn
    at random between half and one and a half times the limit, so an off-path
    attacker cannot learn anything from counting the challenge ACKs it provokes."""

    def answered(seed: int, second: float) -> int:
        budget = ReplyBudget(100, random.Random(seed))
        counters: Counter[str] = Counter()
        commons = Commons(counters, budget, MemoryPool(1 << 40))
        n = 0
        for port in range(1000, 1400):
            syn = syn_from_peer(seq=IRS, src_port=port)
            tcb = Tcb.passive_open(base_config(), LOCAL, (REMOTE[0], port), syn, 7, 0.0,
                                   commons)
            tcb.segments_to_send(0.0)
            tcb.receive(peer(tcb), 0.1)
            tcb.segments_to_send(0.1)
            tcb.receive(peer(tcb, SYN), second)  # draws a challenge ACK if allowed
            n += len(tcb.segments_to_send(second))
        assert counters["tcp_challenge_ack_limited"] == 400 - n
        return n

    counts = {answered(seed, 5.0) for seed in range(6)}
    assert all(50 <= c <= 150 for c in counts)
    assert len(counts) > 1  # not a fixed number


def test_budget_refills_each_second() -> None:
    budget = ReplyBudget(10, random.Random(1))
    first = sum(budget.allow(3.0) for _ in range(100))
    assert 5 <= first <= 15
    assert not budget.allow(3.99)
    assert budget.allow(4.0)


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=100, burst=10)
    assert sum(bucket.allow(1.0) for _ in range(50)) == 10
    assert sum(bucket.allow(1.1) for _ in range(50)) == 10  # 0.1 s refills 10
    assert sum(bucket.allow(1.1) for _ in range(50)) == 0


def test_rsts_to_closed_ports_are_rate_limited_and_counted() -> None:
    """A flood of segments to closed ports draws at most the RST rate (burst first)."""
    st = Stack(StackConfig(addresses=(ipaddress.IPv4Address("10.0.0.2"),), rst_rate_limit=100),
               rng=random.Random(3))
    w = Wire(st)
    replies = sum(len(w.send(syn_from_peer(seq=IRS + i, src_port=2000 + i, dst_port=81), 1.0))
                  for i in range(50))
    assert replies == 10  # the burst
    assert st.counters["tcp_rst_rate_limited"] == 40
    assert len(w.send(syn_from_peer(seq=IRS, src_port=3000, dst_port=81), 2.0)) == 1


def test_icmp_errors_are_rate_limited_and_counted() -> None:
    st = stack()
    sent = 0
    for i in range(200):
        udp = bytes(8)
        st.receive(build_ipv4(int(ipaddress.IPv4Address("10.0.0.1")), next(iter(st.addresses)),
                              PROTO_UDP, udp, i), 1.0)
        sent += len(st.packets_to_send(1.0))
    assert sent == 50  # the burst; the rest counted
    assert st.counters["icmp_rate_limited"] == 150
    assert st.counters["udp_port_unreachable"] == 200
