"""HyStart++ (RFC 9406): when the initial slow start ends, and how the window grows meanwhile.

The controller is driven directly (rounds by sequence number, RTT samples in
seconds); the last test runs the whole engine through the network simulator.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tcpstack.tcp import congestion
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.hystart import CSS, CSS_ROUNDS, DONE, N_RTT_SAMPLE, SLOW_START, HyStart

MSS = 1000


def _round(cc: congestion.CongestionControl, start: int, rtts: list[float],
           per_ack: int = MSS) -> int:
    """One round of ACKs, one RTT sample each: the first reaches the previous round's
    end ``start`` (which starts this round, to end at ``start + len(rtts) * per_ack``),
    the others stay short of that end."""
    end = start + len(rtts) * per_ack
    for i, rtt in enumerate(rtts):
        cc.on_ack_seq(start + i * per_ack, end)
        cc.on_rtt(rtt)
        cc.on_ack(per_ack, 10 * per_ack, 0.0)
    return end


def _cubic(hystart: bool = True) -> congestion.CongestionControl:
    return congestion.create("cubic", MSS, 10, hystart)


def test_a_rise_past_the_threshold_leaves_slow_start_for_conservative_slow_start() -> None:
    cc = _cubic()
    seq = _round(cc, 0, [0.010] * N_RTT_SAMPLE)
    assert cc.hystart is not None and cc.hystart.phase == SLOW_START
    # RttThresh = max(4 ms, min(10 ms / 8, 16 ms)) = 4 ms: 14 ms is the line.
    _round(cc, seq, [0.0141] * N_RTT_SAMPLE)
    assert cc.hystart.phase == CSS
    assert cc.hystart.exit_rtt == pytest.approx(0.0141)
    before = cc.cwnd
    cc.on_ack(2 * MSS, 10 * MSS, 0.0)
    assert cc.cwnd - before == 2 * MSS // 4, "CSS grows a quarter as fast"
    assert cc.ssthresh == congestion.INITIAL_SSTHRESH, "still a slow start, not avoidance"


def test_a_rise_below_the_threshold_keeps_slow_start() -> None:
    cc = _cubic()
    seq = _round(cc, 0, [0.010] * N_RTT_SAMPLE)
    seq = _round(cc, seq, [0.0139] * N_RTT_SAMPLE)
    assert cc.hystart is not None and cc.hystart.phase == SLOW_START
    before = cc.cwnd
    cc.on_ack(2 * MSS, 10 * MSS, 0.0)
    assert cc.cwnd - before == 2 * MSS


def test_the_threshold_is_an_eighth_of_the_rtt_within_4_and_16_ms() -> None:
    # 80 ms: the threshold is 10 ms (an eighth), so 89 ms does not trigger, 90 ms does.
    for rtt, phase in ((0.089, SLOW_START), (0.0901, CSS)):
        cc = _cubic()
        seq = _round(cc, 0, [0.080] * N_RTT_SAMPLE)
        _round(cc, seq, [rtt] * N_RTT_SAMPLE)
        assert cc.hystart is not None and cc.hystart.phase == phase, rtt
    # 400 ms: capped at 16 ms.
    cc = _cubic()
    seq = _round(cc, 0, [0.400] * N_RTT_SAMPLE)
    _round(cc, seq, [0.4161] * N_RTT_SAMPLE)
    assert cc.hystart is not None and cc.hystart.phase == CSS


def test_fewer_than_eight_samples_decide_nothing() -> None:
    cc = _cubic()
    seq = _round(cc, 0, [0.010] * N_RTT_SAMPLE)
    _round(cc, seq, [0.050] * (N_RTT_SAMPLE - 1))
    assert cc.hystart is not None and cc.hystart.phase == SLOW_START


def test_the_minimum_of_the_round_counts_not_one_late_sample() -> None:
    cc = _cubic()
    seq = _round(cc, 0, [0.010] * N_RTT_SAMPLE)
    # Delayed ACKs make single samples late; the round's minimum is what matters.
    _round(cc, seq, [0.050, 0.011] + [0.060] * (N_RTT_SAMPLE - 2))
    assert cc.hystart is not None and cc.hystart.phase == SLOW_START


def test_an_rtt_back_below_the_baseline_resumes_slow_start() -> None:
    cc = _cubic()
    seq = _round(cc, 0, [0.010] * N_RTT_SAMPLE)
    seq = _round(cc, seq, [0.020] * N_RTT_SAMPLE)
    assert cc.hystart is not None and cc.hystart.phase == CSS
    _round(cc, seq, [0.019] * N_RTT_SAMPLE)
    assert cc.hystart.phase == SLOW_START
    before = cc.cwnd
    cc.on_ack(2 * MSS, 10 * MSS, 0.0)
    assert cc.cwnd - before == 2 * MSS


def test_after_five_rounds_of_css_congestion_avoidance_starts_at_the_window() -> None:
    cc = _cubic()
    seq = _round(cc, 0, [0.010] * N_RTT_SAMPLE)
    seq = _round(cc, seq, [0.020] * N_RTT_SAMPLE)
    for _ in range(CSS_ROUNDS - 1):
        seq = _round(cc, seq, [0.020] * N_RTT_SAMPLE)
        assert cc.hystart is not None and cc.hystart.phase == CSS
        assert cc.ssthresh == congestion.INITIAL_SSTHRESH
    cwnd = cc.cwnd
    cc.on_ack_seq(seq, seq + 10 * MSS)  # the end of the fifth round
    assert cc.hystart is not None and cc.hystart.phase == DONE
    assert cc.ssthresh == cwnd
    assert cc.cwnd >= cc.ssthresh, "from here CUBIC's congestion avoidance grows it"


def test_a_loss_ends_hystart_for_the_connection() -> None:
    cc = _cubic()
    seq = _round(cc, 0, [0.010] * N_RTT_SAMPLE)
    cc.on_loss(cc.cwnd, 0.0)
    assert cc.hystart is not None and cc.hystart.phase == DONE
    cc.undo()  # even when the loss was spurious: only the initial slow start uses it
    _round(cc, seq, [0.050] * N_RTT_SAMPLE)
    assert cc.hystart.phase == DONE
    assert cc.ssthresh == congestion.INITIAL_SSTHRESH


def test_a_timeout_ends_hystart_too() -> None:
    cc = congestion.create("newreno", MSS, 10, True)
    cc.on_timeout(cc.cwnd, 0.0)  # before any ACK of data, even
    assert cc.hystart_phase == DONE


def test_sequence_numbers_wrap_between_rounds() -> None:
    hs = HyStart()
    assert not hs.on_ack(0xFFFFFF00, 0xFFFFFFF0)
    hs.on_rtt(0.01)
    assert hs.samples == 1
    hs.on_ack(0xFFFFFFE0, 0x10)  # before the end of the round: the same round
    assert hs.samples == 1
    hs.on_ack(0x00000000, 0x100)  # past it, across the wrap: a new round
    assert hs.samples == 0
    assert hs.last_min == pytest.approx(0.01)


def test_config_turns_it_on_by_default_and_off_on_request() -> None:
    assert TcpConfig().hystart
    on = congestion.create("cubic", MSS, 10, TcpConfig().hystart)
    assert on.hystart is None and on.hystart_phase == SLOW_START, "made at the first ACK"
    on.on_ack_seq(0, 10 * MSS)
    assert isinstance(on.hystart, HyStart)
    assert congestion.create("cubic", MSS, 10, False).hystart_phase is None
    off = _cubic(hystart=False)
    seq = _round(off, 0, [0.010] * N_RTT_SAMPLE)
    _round(off, seq, [0.050] * N_RTT_SAMPLE)
    before = off.cwnd
    off.on_ack(2 * MSS, 10 * MSS, 0.0)
    assert off.cwnd - before == 2 * MSS


def test_through_the_engine_it_overflows_the_queue_less_for_the_same_goodput() -> None:
    """The simulator's 1 ms path with a 100-packet queue (tests/sim): the initial slow
    start overflows it; with HyStart++ it overflows it less, at any seed."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.sim.netsim import simulate

    for seed in (1, 2, 3):
        runs = {hs: simulate(loss=0.0, rtt=0.001, size=2_000_000, cc="cubic",
                             bandwidth=10e6, queue=100, seed=seed, tcp=TcpConfig(hystart=hs))
                for hs in (False, True)}
        assert all(r.delivered_ok for r in runs.values())
        assert runs[True].tail_drops < runs[False].tail_drops, (seed, runs)
        assert runs[True].goodput_mbit >= 0.95 * runs[False].goodput_mbit, (seed, runs)
