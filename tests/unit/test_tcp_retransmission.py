"""Retransmission timeout, backoff, Karn's rule, give-up (RFC 6298, RFC 5681 3.1,
RFC 9293 3.8.1 and 3.8.3)."""

from __future__ import annotations

import pytest
from tcp_helpers import (
    IRS,
    ISS,
    RTT,
    base_config,
    expect,
    expect_nothing,
    expect_one,
    peer,
    tcb_established,
)

from tcpstack.tcp import events as ev
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import ACK, PSH

RCV = IRS + 1
SND = ISS + 1


def sending(n: int = 3 * 1460, cfg: TcpConfig | None = None, now: float = 1.0) -> Tcb:
    """ESTABLISHED (SRTT = 0.1 s, RTO = 0.3 s) with ``n`` bytes just sent at ``now``."""
    tcb = tcb_established(cfg)
    tcb.send(bytes(i % 251 for i in range(n)))
    expect(tcb, now)
    return tcb


def test_handshake_gives_first_rtt_sample() -> None:
    """RFC 6298 2.2: the first measurement (here the SYN,ACK's) sets SRTT and RTTVAR."""
    tcb = tcb_established()
    assert tcb.rtt.srtt == pytest.approx(RTT)
    assert tcb.rtt.rttvar == pytest.approx(RTT / 2)
    assert tcb.rtt.rto == pytest.approx(RTT + 4 * RTT / 2)


def test_established_send_starts_rto_timer() -> None:
    """RFC 6298 5.1: sending data with the timer off starts it (RTO from now)."""
    tcb = sending(now=1.0)
    assert tcb.next_deadline() == pytest.approx(1.0 + 0.3)


def test_established_ack_restarts_rto_timer() -> None:
    """RFC 6298 5.3: an ACK of new data restarts the timer for the remaining data."""
    tcb = sending(now=1.0)
    tcb.receive(peer(tcb, ack=SND + 1460), 1.2)
    d = tcb.next_deadline()
    assert d is not None and d == pytest.approx(1.2 + tcb.rtt.rto)


def test_established_all_acked_stops_rto_timer() -> None:
    """RFC 6298 5.2: when all outstanding data is acknowledged, turn off the timer."""
    tcb = sending()
    tcb.receive(peer(tcb), 1.1)
    assert tcb.next_deadline() is None


def test_established_rtt_sample_from_data() -> None:
    """RFC 6298 2.3: a new sample R' updates RTTVAR then SRTT."""
    tcb = sending(now=1.0)
    tcb.receive(peer(tcb), 1.5)
    rttvar = 0.75 * 0.05 + 0.25 * abs(0.1 - 0.5)
    srtt = 0.875 * 0.1 + 0.125 * 0.5
    assert tcb.rtt.srtt == pytest.approx(srtt)
    assert tcb.rtt.rttvar == pytest.approx(rttvar)


def test_established_rto_retransmits_from_snd_una() -> None:
    """RFC 6298 5.4 / RFC 5681 3.1: on timeout retransmit the earliest unacknowledged
    segment; cwnd drops to one segment, so only that one goes."""
    tcb = sending(3 * 1460, now=1.0)
    tcb.receive(peer(tcb, ack=SND + 1460), 1.1)  # first segment acked
    expect(tcb, 1.1)
    d = tcb.next_deadline()
    assert d is not None
    tcb.handle_timer(d)
    seg = expect_one(tcb, d, ACK, seq=SND + 1460, ack=RCV)
    assert bytes(seg.payload) == bytes(i % 251 for i in range(1460, 2920))
    # Nothing new goes out: the scoreboard drives the retransmission (RFC 6675 5.1).
    assert tcb.snd_max == SND + 3 * 1460
    assert tcb.cc.cwnd == 1460


def test_established_rto_sets_ssthresh_from_flight() -> None:
    """RFC 5681 3.1 eq. 4: ssthresh = max(FlightSize / 2, 2*SMSS)."""
    tcb = sending(8 * 1460, now=1.0)
    d = tcb.next_deadline()
    assert d is not None
    tcb.handle_timer(d)
    assert tcb.cc.ssthresh == 4 * 1460
    assert tcb.cc.cwnd == 1460


def test_established_rto_backoff_doubles() -> None:
    """RFC 6298 5.5/5.6: each expiry doubles RTO and restarts the timer."""
    tcb = sending(1000, now=1.0)
    now = 1.0
    gaps = []
    for _ in range(5):
        d = tcb.next_deadline()
        assert d is not None
        gaps.append(d - now)
        now = d
        tcb.handle_timer(now)
        expect_one(tcb, now, ACK | PSH, seq=SND)
    assert gaps == pytest.approx([0.3, 0.6, 1.2, 2.4, 4.8])


def test_established_after_rto_slow_start_resends_the_rest() -> None:
    """RFC 5681 3.1: after the timeout, slow start resends the rest as ACKs arrive."""
    tcb = sending(3 * 1460, now=1.0)
    tcb.handle_timer(1.3)
    expect_one(tcb, 1.3, seq=SND)
    tcb.receive(peer(tcb, ack=SND + 1460), 1.4)
    segs = expect(tcb, 1.4)
    assert [s.seq for s in segs] == [SND + 1460, SND + 2920]


def test_established_karn_no_sample_from_retransmission() -> None:
    """RFC 6298 3 (Karn): RTT samples MUST NOT be taken from retransmitted segments."""
    tcb = sending(1000, now=1.0)
    before = (tcb.rtt.srtt, tcb.rtt.rttvar)
    tcb.handle_timer(1.3)
    expect(tcb, 1.3)
    tcb.receive(peer(tcb), 1.35)  # ambiguous: for the original or the retransmission?
    assert (tcb.rtt.srtt, tcb.rtt.rttvar) == before
    # Fresh data is timed again.
    tcb.send(b"n" * 100)
    expect(tcb, 2.0)
    tcb.receive(peer(tcb), 2.2)
    assert tcb.rtt.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)


def test_established_gives_up_after_max_retries() -> None:
    """RFC 9293 3.8.3 (R2) / RFC 1122 4.2.3.5: after max_retries retransmissions -> close,
    reported as a timeout."""
    tcb = sending(1000, cfg=base_config(max_retries=4), now=1.0)
    retransmissions = 0
    for _ in range(20):
        d = tcb.next_deadline()
        if d is None:
            break
        tcb.handle_timer(d)
        retransmissions += len(expect(tcb, d))
    assert retransmissions == 4
    assert tcb.state is State.CLOSED
    assert tcb.take_events() == [ev.Terminated("timeout")]


def test_established_new_ack_resets_retries() -> None:
    """RFC 9293 3.8.3: the retry count is per segment; progress (a new ACK) resets it."""
    tcb = sending(3 * 1460, cfg=base_config(max_retries=3), now=1.0)
    now = 1.0
    for _ in range(3):  # three timeouts: one short of giving up
        d = tcb.next_deadline()
        assert d is not None
        now = d
        tcb.handle_timer(now)
        expect(tcb, now)
    tcb.receive(peer(tcb, ack=SND + 1460), now + 0.01)
    expect(tcb, now + 0.01)
    for _ in range(3):  # three more timeouts are tolerated again
        d = tcb.next_deadline()
        assert d is not None
        now = d
        tcb.handle_timer(now)
        expect(tcb, now)
    assert tcb.state is State.ESTABLISHED
    d = tcb.next_deadline()
    assert d is not None
    tcb.handle_timer(d)
    assert tcb.state is State.CLOSED


def test_established_new_ack_collapses_backoff() -> None:
    """RFC 6298 5 (note after 5.7): RTO recomputed once a new ACK arrives; no runaway backoff."""
    tcb = sending(2 * 1460, now=1.0)
    tcb.handle_timer(1.3)
    tcb.handle_timer(1.9)
    expect(tcb, 1.9)
    tcb.receive(peer(tcb, ack=SND + 1460), 2.0)
    d = tcb.next_deadline()
    assert d is not None
    assert d - 2.0 == pytest.approx(0.3)


def test_timer_spurious_call_does_nothing() -> None:
    """RFC 6298 5.4: retransmit only when the timer expires; an early wake-up is a no-op."""
    tcb = sending(1000, now=1.0)
    tcb.handle_timer(1.1)
    expect_nothing(tcb, 1.1)
    assert tcb.next_deadline() == pytest.approx(1.3)
