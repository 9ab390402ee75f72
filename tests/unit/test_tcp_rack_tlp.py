"""RACK-TLP loss detection (RFC 8985): time-based loss marking with a reordering window,
the reordering timer, and tail loss probes with their congestion response."""

from __future__ import annotations

import pytest
from tcp_helpers import (
    ISS,
    base_config,
    expect,
    our_tsval,
    pattern,
    peer,
    peer_opts,
    tcb_established_opts,
)

from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.scoreboard import Scoreboard
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import TcpSegment

SND = ISS + 1
MT = 1448  # payload per segment with timestamps


def seg_no(segs: list[TcpSegment]) -> list[int]:
    return [(s.seq - SND) // MT for s in segs if s.payload]


def ack(tcb: Tcb, una: int, sacked: tuple[tuple[int, int], ...], now: float,
        sent_at: float) -> list[TcpSegment]:
    """The peer ACKs segment number ``una`` and SACKs ``[a, b)`` ranges of segment numbers;
    TSecr echoes our TSval of ``sent_at``. Returns what we send in response."""
    blocks = tuple((SND + a * MT, SND + b * MT) for a, b in sacked)
    tcb.receive(peer(tcb, ack=SND + una * MT,
                     options=peer_opts(tcb, now, sack=blocks, tsecr=our_tsval(tcb, sent_at))),
                now)
    return expect(tcb, now)


def sender(cfg: TcpConfig | None = None) -> Tcb:
    return tcb_established_opts(cfg or base_config(tlp=False))


# --------------------------------------------------------------- RACK unit


def test_scoreboard_reo_wnd_is_quarter_min_rtt_capped_by_srtt() -> None:
    """RFC 8985 6.2 step 4: RACK.reo_wnd = min(RACK.min_RTT / 4, SRTT) (reo_wnd_mult 1)."""
    sb = Scoreboard()
    assert sb.reo_wnd(0.1) == 0.0  # no RTT measured yet
    sb.on_send(SND, SND + 100, 1.0)
    sb.ack(SND + 100, 1.4)
    assert sb.min_rtt == pytest.approx(0.4)
    assert sb.reo_wnd(1.0) == pytest.approx(0.1)
    assert sb.reo_wnd(0.05) == pytest.approx(0.05)


def test_scoreboard_detect_loss_marks_and_returns_timeout() -> None:
    """RFC 8985 6.2 step 5: a segment sent before RACK.segment is lost once
    RACK.rtt + reo_wnd has elapsed since it was sent; otherwise the returned timeout is
    when that will happen."""
    sb = Scoreboard()
    sb.on_send(SND, SND + 100, 1.00)
    sb.on_send(SND + 100, SND + 200, 1.03)
    sb.on_send(SND + 200, SND + 300, 1.05)
    sb.sack(((SND + 200, SND + 300),), SND, SND + 300, 1.15)  # RACK.rtt = 0.1
    reo = 0.1 / 4
    lost, timeout = sb.detect_loss(1.15, 0.1)
    assert lost == 100 and sb.recs[0].lost  # sent at 1.00: 1.00 + 0.125 <= 1.15
    assert not sb.recs[1].lost
    assert timeout == pytest.approx(1.03 + 0.1 + reo)
    lost, timeout = sb.detect_loss(1.03 + 0.1 + reo, 0.1)
    assert lost == 100 and sb.recs[1].lost and timeout is None
    assert sb.lost_bytes == 200


def test_scoreboard_segment_sent_after_rack_segment_is_not_suspect() -> None:
    """RFC 8985 6.2 step 5: only segments sent before the most recently delivered one
    can be inferred lost."""
    sb = Scoreboard()
    sb.on_send(SND, SND + 100, 1.0)
    sb.on_send(SND + 100, SND + 200, 1.2)
    sb.sack(((SND, SND + 100),), SND, SND + 200, 1.1)
    assert sb.detect_loss(5.0, 0.1) == (0, None)


def test_scoreboard_ignores_too_quick_ack_of_retransmission_without_timestamps() -> None:
    """RFC 8985 6.2 step 2: an ACK for a retransmitted segment that comes sooner than
    min_RTT after the retransmission must be for the original; it does not update
    RACK.xmit_ts."""
    sb = Scoreboard()
    sb.on_send(SND, SND + 100, 1.0)
    sb.on_send(SND + 100, SND + 200, 1.0)
    sb.sack(((SND + 100, SND + 200),), SND, SND + 200, 1.1)  # min_RTT 0.1
    sb.mark_lost_from(SND, limit=1)
    sb.on_retransmit(sb.recs[0], 1.5)
    sb.ack(SND + 200, 1.52, echo=None)
    assert sb.rack_xmit_ts == pytest.approx(1.0)


# --------------------------------------------------------------- RACK in a TCB


def test_rack_marks_earlier_segment_lost_once_rtt_plus_reo_wnd_passed() -> None:
    """RFC 8985 6.2: segment 0 (sent at 1.00) precedes SACKed segment 1 (sent at 1.05,
    RACK.rtt = 0.1); at 1.15, 1.00 + 0.1 + 0.025 has passed, so 0 is lost and resent at
    once."""
    tcb = sender()
    tcb.send(pattern(MT))
    expect(tcb, 1.0, 1)
    tcb.send(pattern(MT, seed=1))
    expect(tcb, 1.05, 1)
    out = ack(tcb, 0, ((1, 2),), 1.15, sent_at=1.05)
    assert seg_no(out) == [0]
    assert tcb.recovery_point is not None


def test_rack_arms_reordering_timer_with_exact_deadline() -> None:
    """RFC 8985 6.3: when a suspect segment's reordering window has not yet passed, the
    reordering timer is armed for xmit_ts + RACK.rtt + reo_wnd; when it fires the
    segment is marked lost and retransmitted."""
    tcb = sender()
    tcb.send(pattern(2 * MT))
    expect(tcb, 1.0, 2)
    out = ack(tcb, 0, ((1, 2),), 1.1, sent_at=1.0)
    assert out == []
    assert tcb.timers.rack == pytest.approx(1.0 + 0.1 + 0.1 / 4)
    assert tcb.next_deadline() == pytest.approx(1.125)
    tcb.handle_timer(1.12)
    assert expect(tcb, 1.12) == []
    tcb.handle_timer(1.125)
    assert seg_no(expect(tcb, 1.125)) == [0]


def test_rack_reordering_within_window_causes_no_retransmission() -> None:
    """RFC 8985 3.4 / 6.2: a segment that arrives late but within the reordering window
    is not retransmitted and the window is not reduced."""
    tcb = sender()
    tcb.send(pattern(2 * MT))
    expect(tcb, 1.0, 2)
    cwnd = tcb.cc.cwnd
    assert ack(tcb, 0, ((1, 2),), 1.1, sent_at=1.0) == []
    assert ack(tcb, 2, (), 1.12, sent_at=1.0) == []  # segment 0 was only reordered
    tcb.handle_timer(1.125)
    assert expect(tcb, 1.125) == []
    assert tcb.cc.cwnd >= cwnd and tcb.recovery_point is None


def test_rack_no_loss_marking_without_sack() -> None:
    """RFC 8985 (requires SACK): a connection without SACK has no RACK timer; only
    duplicate ACKs or the RTO detect loss."""
    tcb = tcb_established_opts(base_config(tlp=False), sack=False)
    tcb.send(pattern(2 * MT))
    expect(tcb, 1.0, 2)
    tcb.receive(peer(tcb, ack=SND, options=peer_opts(tcb, 1.1)), 1.1)
    assert tcb.timers.rack is None
    assert expect(tcb, 1.1) == []


# ---------------------------------------------------------------------- TLP


def tlp_sender(**cfg: object) -> Tcb:
    return tcb_established_opts(base_config(**cfg))


def test_tlp_scheduled_two_srtt_after_send() -> None:
    """RFC 8985 7.2: with SACK and data in flight, PTO = 2 * SRTT (SRTT = 0.1 here),
    earlier than the RTO (0.3)."""
    tcb = tlp_sender()
    tcb.send(pattern(2 * MT))
    expect(tcb, 1.0, 2)
    assert tcb.timers.tlp == pytest.approx(1.2)
    assert tcb.next_deadline() == pytest.approx(1.2)
    assert tcb.timers.rto == pytest.approx(1.3)


def test_tlp_one_segment_in_flight_adds_worst_case_delayed_ack() -> None:
    """RFC 8985 7.2: with one segment in flight, PTO = 2 * SRTT + WCDelAckT (200 ms)."""
    tcb = tlp_sender(rto_min=1.0)
    tcb.send(pattern(MT))
    expect(tcb, 1.0, 1)
    assert tcb.timers.tlp == pytest.approx(1.0 + 0.2 + 0.2)


def test_tlp_pto_capped_at_rto_expiration() -> None:
    """RFC 8985 7.2: "If Now() + PTO > TCP_RTO_expiration(): PTO = TCP_RTO_expiration()
    - Now()" -- the probe replaces the timeout."""
    tcb = tlp_sender()
    tcb.send(pattern(MT))
    expect(tcb, 1.0, 1)
    cwnd = tcb.cc.cwnd
    assert tcb.timers.tlp == pytest.approx(1.3)
    tcb.handle_timer(1.3)
    assert seg_no(expect(tcb, 1.3)) == [0]
    assert tcb.cc.cwnd == cwnd


def test_tlp_restarted_by_ack_of_new_data_even_when_nothing_is_sent() -> None:
    """RFC 8985 7.2: an ACK that cumulatively acknowledges new data restarts the PTO,
    also when it lets nothing new go out: the probe is timed from that ACK, not from
    the send before it (which would probe a flight that is being acknowledged)."""
    tcb = tlp_sender()
    tcb.send(pattern(3 * MT))
    expect(tcb, 1.0, 3)
    assert tcb.timers.tlp == pytest.approx(1.2)
    assert ack(tcb, 1, (), 1.15, 1.0) == []  # nothing new to send, no ACK owed
    assert tcb.timers.tlp is not None and tcb.timers.tlp > 1.3
    tcb.handle_timer(1.2)
    assert expect(tcb, 1.2) == []
    assert tcb.counters["tcp_retrans_tlp"] == 0


def test_tlp_not_restarted_by_ack_while_data_is_sacked() -> None:
    """RFC 8985 7.2: with SACKed data RACK watches the flight; the ACK leaves the PTO."""
    tcb = tlp_sender()
    tcb.send(pattern(4 * MT))
    expect(tcb, 1.0, 4)
    ack(tcb, 1, ((3, 4),), 1.15, 1.0)
    assert tcb.timers.tlp == pytest.approx(1.2)


def test_tlp_probe_sends_new_data_when_available() -> None:
    """RFC 8985 7.3: the probe is a previously unsent segment if one exists and the
    receive window allows -- even when cwnd is full."""
    tcb = tlp_sender(initial_window=2)
    tcb.send(pattern(4 * MT))
    assert seg_no(expect(tcb, 1.0)) == [0, 1]
    tcb.handle_timer(1.2)
    assert seg_no(expect(tcb, 1.2)) == [2]
    assert tcb.snd_max == SND + 3 * MT


def test_tlp_probe_retransmits_last_segment_without_new_data() -> None:
    """RFC 8985 7.3: with nothing new to send, the probe retransmits the highest-sequence
    segment sent."""
    tcb = tlp_sender()
    tcb.send(pattern(3 * MT))
    expect(tcb, 1.0, 3)
    tcb.handle_timer(1.2)
    (probe,) = expect(tcb, 1.2, 1)
    assert probe.seq == SND + 2 * MT
    assert bytes(probe.payload) == pattern(3 * MT)[2 * MT:]


def test_tlp_probe_arms_rto_and_only_one_probe() -> None:
    """RFC 8985 7.3: after sending the probe the RTO timer is armed (RTO from now); no
    second probe is scheduled before an ACK arrives, so next comes the RTO."""
    tcb = tlp_sender()
    tcb.send(pattern(2 * MT))
    expect(tcb, 1.0, 2)
    tcb.handle_timer(1.2)
    expect(tcb, 1.2, 1)
    assert tcb.timers.rto == pytest.approx(1.2 + tcb.rtt.rto)
    assert tcb.timers.tlp is None
    assert tcb.next_deadline() == pytest.approx(1.5)
    tcb.handle_timer(1.5)
    assert seg_no(expect(tcb, 1.5)) == [0]  # the RTO retransmits from SND.UNA
    assert tcb.cc.cwnd == MT


def test_tlp_not_scheduled_when_disabled_or_without_sack() -> None:
    """RFC 8985 7 (TLP relies on SACK/RACK) and TcpConfig(tlp=False): no probe timer."""
    for tcb in (tlp_sender(tlp=False), tcb_established_opts(sack=False)):
        tcb.send(pattern(2 * MT))
        expect(tcb, 1.0, 2)
        assert tcb.timers.tlp is None
        assert tcb.next_deadline() == pytest.approx(1.3)


def test_tlp_repairing_a_loss_reduces_cwnd_once() -> None:
    """RFC 8985 7.4: if the probe retransmission repaired a loss (its ACK carries no
    D-SACK), the sender invokes the congestion response once."""
    tcb = tlp_sender()
    tcb.send(pattern(2 * MT))
    expect(tcb, 1.0, 2)
    cwnd = tcb.cc.cwnd
    ack(tcb, 1, (), 1.1, sent_at=1.0)  # segment 0 arrives, segment 1 was lost
    pto = tcb.timers.tlp  # restarted by that ACK (RFC 8985 7.2)
    assert pto is not None and pto > 1.2
    tcb.handle_timer(pto)
    assert seg_no(expect(tcb, pto)) == [1]
    ack(tcb, 2, (), pto + 0.1, sent_at=pto)
    reduced = tcb.cc.cwnd
    assert reduced < cwnd
    assert tcb.cc.ssthresh == reduced
    tcb.send(pattern(MT))
    expect(tcb, pto + 0.1, 1)
    ack(tcb, 3, (), pto + 0.2, sent_at=pto + 0.1)
    assert tcb.cc.ssthresh == reduced  # one response, not one per ACK


def test_tlp_answered_by_dsack_does_not_reduce_cwnd() -> None:
    """RFC 8985 7.4: if the probe was a needless retransmission -- the ACK carries a
    D-SACK for it -- there was no loss and cwnd stays."""
    tcb = tlp_sender()
    tcb.send(pattern(2 * MT))
    expect(tcb, 1.0, 2)
    cwnd = tcb.cc.cwnd
    tcb.handle_timer(1.2)  # both segments arrived; the ACKs were merely slow
    assert seg_no(expect(tcb, 1.2)) == [1]
    ack(tcb, 2, ((1, 2),), 1.3, sent_at=1.2)  # ACK of everything + D-SACK of the probe
    assert tcb.cc.cwnd >= cwnd


def test_tlp_with_new_data_does_not_reduce_cwnd() -> None:
    """RFC 8985 7.4: a probe that carried new data retransmitted nothing, so its ACK
    never triggers a congestion response."""
    tcb = tlp_sender(initial_window=2)
    tcb.send(pattern(3 * MT))
    expect(tcb, 1.0, 2)
    cwnd = tcb.cc.cwnd
    tcb.handle_timer(1.2)
    assert seg_no(expect(tcb, 1.2)) == [2]
    ack(tcb, 3, (), 1.3, sent_at=1.2)
    assert tcb.cc.cwnd >= cwnd
    assert tcb.cc.ssthresh >= 1 << 30


def test_tlp_not_sent_during_recovery() -> None:
    """RFC 8985 7.2: the probe timer is for tails of flights not already in loss
    recovery; during recovery RACK and the RTO do the work."""
    tcb = tlp_sender()
    tcb.send(pattern(2 * MT))
    expect(tcb, 1.0, 2)
    tcb.send(pattern(MT, seed=1))
    expect(tcb, 1.05, 1)  # the probe timer is now due at 1.25
    out = ack(tcb, 0, ((2, 3),), 1.15, sent_at=1.05)  # 0 and 1 deemed lost at once
    assert tcb.recovery_point is not None
    # PRR (RFC 9937 3): one segment was delivered, so one retransmission goes now.
    assert seg_no(out) == [0]
    tcb.handle_timer(1.25)
    assert expect(tcb, 1.25) == []


def fast_path_sender() -> Tcb:
    """A connection whose SRTT is half a millisecond (a local path)."""
    tcb = tlp_sender()
    for _ in range(80):
        tcb.rtt.sample(0.0005)
    return tcb


def test_tlp_pto_never_below_40_ms() -> None:
    """Deviation from RFC 8985 7.2 (Linux: 10 ms): PTO >= 40 ms, since a receiver whose
    application is slow may hold its ACK for its delayed-ACK time."""
    tcb = fast_path_sender()
    tcb.send(pattern(3 * MT))
    expect(tcb, 1.0, 3)
    assert tcb.timers.tlp == pytest.approx(1.04)


def test_tlp_pto_adds_delayed_ack_time_below_two_full_segments() -> None:
    """RFC 8985 7.2: with less than two full segments in flight the receiver may delay
    its ACK, so WCDelAckT (200 ms) is added -- which puts the probe at the RTO."""
    tcb = fast_path_sender()
    tcb.send(pattern(MT + MT // 2))
    expect(tcb, 1.0, 2)
    assert tcb.timers.rto is not None
    assert tcb.timers.tlp == pytest.approx(tcb.timers.rto)
    assert tcb.timers.tlp > 1.2


def test_reo_wnd_grows_with_dsacks_once_per_round_trip_and_resets_after_16_recoveries() -> None:
    """RFC 8985 6.2 step 4: each D-SACK (at most one per round trip) adds min_RTT/4 to
    the reordering window, capped at SRTT; 16 recoveries without one reset it."""
    sb = Scoreboard()
    sb.on_send(SND, SND + 100, 1.0)
    sb.on_send(SND + 100, SND + 200, 1.0)
    sb.ack(SND + 100, 1.4)  # min_RTT = RACK.rtt = 0.4
    assert sb.reo_wnd(10.0) == pytest.approx(0.1)
    dsack = ((SND, SND + 100),)  # below the cumulative ACK: a duplicate
    sb.sack(dsack, SND + 100, SND + 200, 1.5, ack=SND + 100)
    assert sb.dsack_seen == 1 and sb.reo_wnd(10.0) == pytest.approx(0.2)
    sb.sack(dsack, SND + 100, SND + 200, 1.6, ack=SND + 100)  # same round trip
    assert sb.dsack_seen == 2 and sb.reo_wnd(10.0) == pytest.approx(0.2)
    sb.sack(dsack, SND + 100, SND + 200, 2.0, ack=SND + 100)  # a round trip later
    assert sb.reo_wnd(10.0) == pytest.approx(0.3)
    assert sb.reo_wnd(0.25) == pytest.approx(0.25)  # never above SRTT
    for _ in range(15):
        sb.on_recovery()
    assert sb.reo_wnd(10.0) == pytest.approx(0.3)
    sb.on_recovery()
    assert sb.reo_wnd(10.0) == pytest.approx(0.1)
