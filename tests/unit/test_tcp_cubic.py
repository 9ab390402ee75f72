"""CUBIC congestion control (RFC 9438): multiplicative decrease with beta = 0.7, fast
convergence, the cubic window curve, the Reno-friendly region, and its use by a TCB."""

from __future__ import annotations

import pytest
from tcp_helpers import ISS, base_config, expect, pattern, peer, tcb_established

from tcpstack.tcp import congestion
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.congestion import Cubic, NewReno

MSS = 1000
C = 0.4
BETA = 0.7
ALPHA = 3 * (1 - BETA) / (1 + BETA)


def cubic_at(w_max: float, cwnd: float, ssthresh: float | None = None) -> Cubic:
    """A CUBIC controller that has just reduced from ``w_max`` segments (a loss) to
    ``cwnd`` segments, in congestion avoidance."""
    cc = Cubic(MSS)
    cc.cwnd = int(w_max * MSS)
    cc.on_loss(cc.cwnd, 0.0)
    assert cc.cwnd == int(cwnd * MSS)
    if ssthresh is not None:
        assert cc.ssthresh == int(ssthresh * MSS)
    return cc


def run_rtts(cc: Cubic, start: float, seconds: float, rtt: float) -> list[tuple[float, float]]:
    """Acknowledge a full window every ``rtt`` for ``seconds``; return (t, cwnd in
    segments) after each round, t measured from ``start`` (the epoch's first ACK)."""
    cc.srtt = rtt
    out = []
    now = start
    while now - start < seconds - 1e-9:
        cc.on_ack(cc.cwnd, cc.cwnd, now)
        now += rtt
        out.append((now - start, cc.cwnd / MSS))
    return out


def w_cubic(t: float, w_max: float, k: float) -> float:
    """RFC 9438 4.2 eq. 1."""
    return C * (t - k) ** 3 + w_max


# ------------------------------------------------------------------ decrease


def test_cubic_loss_sets_ssthresh_to_beta_cwnd() -> None:
    """RFC 9438 4.6: on congestion detected by ACKs, ssthresh = cwnd * beta_cubic (0.7)
    and cwnd = ssthresh."""
    cubic_at(100, 70, ssthresh=70)


def test_cubic_ssthresh_at_least_two_segments() -> None:
    """RFC 9438 4.6 / RFC 5681: ssthresh never goes below 2 segments."""
    cc = Cubic(MSS)
    cc.cwnd = 2 * MSS
    cc.on_loss(cc.cwnd, 0.0)
    assert cc.ssthresh == 2 * MSS


def test_cubic_timeout_sets_ssthresh_and_one_segment() -> None:
    """RFC 9438 4.8: on an RTO ssthresh = cwnd * beta_cubic and cwnd = 1 segment (the
    loss window of RFC 5681)."""
    cc = Cubic(MSS)
    cc.cwnd = 50 * MSS
    cc.on_timeout(50 * MSS, 0.0)
    assert cc.ssthresh == 35 * MSS
    assert cc.cwnd == MSS


def test_cubic_slow_start_below_ssthresh_like_reno() -> None:
    """RFC 9438 4.10: below ssthresh CUBIC uses standard slow start."""
    cubic, reno = Cubic(MSS), NewReno(MSS)
    for _ in range(5):
        cubic.on_ack(MSS, cubic.cwnd, 0.0)
        reno.on_ack(MSS, reno.cwnd, 0.0)
    assert cubic.cwnd == reno.cwnd == 15 * MSS


def test_cubic_fast_convergence_lowers_w_max() -> None:
    """RFC 9438 4.7: a loss below the previous W_max sets W_max = cwnd * (1 + beta) / 2,
    so the window plateaus lower than the point of loss, releasing bandwidth."""
    cc = cubic_at(100, 70)
    cc.cwnd = 80 * MSS
    cc.on_loss(cc.cwnd, 10.0)  # second loss, below the previous W_max of 100
    assert cc.cwnd == 56 * MSS
    w_max = 80 * (1 + BETA) / 2  # 68
    k = ((w_max - 56) / C) ** (1 / 3)
    curve = run_rtts(cc, 20.0, k + 0.3, 0.3)  # long RTT: the cubic term dominates
    # At t + RTT = K the window reaches W_max (68), not the 80 of the last loss.
    _, w = min(curve, key=lambda p: abs(p[0] - k))
    assert w == pytest.approx(w_max, abs=1.0)


def test_cubic_no_fast_convergence_when_loss_above_previous_w_max() -> None:
    """RFC 9438 4.7: a loss at or above the last W_max sets W_max = cwnd."""
    cc = cubic_at(100, 70)
    cc.cwnd = 120 * MSS
    cc.on_loss(cc.cwnd, 10.0)
    assert cc.cwnd == 84 * MSS
    k = ((120 - 84) / C) ** (1 / 3)
    curve = run_rtts(cc, 20.0, k + 0.05, 0.1)
    _, w = min(curve, key=lambda p: abs(p[0] - k))
    assert w == pytest.approx(120, abs=1.0)


# ------------------------------------------------------------------- growth


def test_cubic_k_from_w_max_and_cwnd_epoch() -> None:
    """RFC 9438 4.2 eq. 2: K = cbrt((W_max - cwnd_epoch) / C) -- here cbrt(30 / 0.4)."""
    cc = cubic_at(100, 70)
    cc.srtt = 0.1
    cc.on_ack(MSS, cc.cwnd, 5.0)  # the first ACK in congestion avoidance starts the epoch
    assert cc._k == pytest.approx(75 ** (1 / 3))


def test_cubic_window_follows_cubic_curve() -> None:
    """RFC 9438 4.2 / 4.4: in congestion avoidance the window after t seconds is about
    W_cubic(t + RTT) = C * (t + RTT - K)^3 + W_max: concave below W_max, flat around K,
    convex beyond."""
    w_max, rtt = 100.0, 0.2
    cc = cubic_at(w_max, 70)
    k = ((w_max - 70) / C) ** (1 / 3)
    curve = run_rtts(cc, 5.0, 7.0, rtt)
    for t, w in curve:
        if t >= 1.0:  # from here on the cubic term dominates the Reno-friendly estimate
            assert w == pytest.approx(w_cubic(t, w_max, k), abs=1.0), t
    at = {round(t, 1): w for t, w in curve}
    assert at[1.0] < at[2.0] < at[3.0] < w_max  # concave region, approaching W_max
    assert abs(at[4.2] - w_max) < 1.0  # plateau
    assert (at[7.0] - at[6.0]) > (at[6.0] - at[5.0]) > 0  # convex region


def test_cubic_growth_at_least_reno_friendly_estimate() -> None:
    """RFC 9438 4.3: cwnd is never below W_est, the window a Reno-like AIMD(alpha, beta)
    flow would have; with a short RTT that estimate dominates the flat cubic curve."""
    w_max, rtt = 100.0, 0.01
    cc = cubic_at(w_max, 70)
    k = ((w_max - 70) / C) ** (1 / 3)
    curve = run_rtts(cc, 5.0, 0.5, rtt)
    for t, w in curve:
        w_est = 70 + ALPHA * t / rtt  # RFC 9438 eq. 4, one window per RTT
        assert w >= w_est - 1.0, t
    t, w = curve[-1]
    assert w > w_cubic(t, w_max, k) + 10  # Reno-friendly region
    assert w == pytest.approx(70 + ALPHA * t / rtt, abs=1.0)


def test_cubic_reno_friendly_alpha_becomes_one_above_cwnd_prior() -> None:
    """RFC 9438 4.3: "Once W_est has grown to reach the cwnd at the time of most recently
    setting ssthresh ... the sender SHOULD set alpha_cubic to 1"."""
    rtt = 0.01
    cc = cubic_at(100, 70)
    curve = run_rtts(cc, 5.0, 2.0, rtt)  # W_est passes 100 after ~57 RTTs
    w0, w1 = curve[-101][1], curve[-1][1]
    assert w0 > 100
    assert (w1 - w0) == pytest.approx(100 * 1.0, abs=3.0)  # 1 segment per RTT


def test_cubic_growth_bounded_per_rtt() -> None:
    """RFC 9438 4.4: the target is at most 1.5 * cwnd, so one RTT never grows the window
    by more than half."""
    cc = cubic_at(100, 70)
    cc.cwnd = 20 * MSS  # far below W_max: the curve wants a huge jump
    cc.ssthresh = 10 * MSS
    before = cc.cwnd
    run_rtts(cc, 5.0, 0.1, 0.1)
    assert cc.cwnd <= 1.5 * before + MSS


# --------------------------------------------------------------- in the TCB


def test_cubic_selected_by_config_and_used_by_tcb() -> None:
    """RFC 9438: TcpConfig(congestion_control="cubic") gives each connection a CUBIC
    controller, whose beta = 0.7 reduction applies on fast retransmit."""
    tcb = tcb_established(base_config(congestion_control="cubic"))
    assert isinstance(tcb.cc, Cubic) and tcb.cc.name == "cubic"
    tcb.send(pattern(10 * 1460))
    expect(tcb, 1.0, 10)
    cwnd = tcb.cc.cwnd
    for i in range(3):
        tcb.receive(peer(tcb, ack=ISS + 1), 1.1 + i / 1000)
        expect(tcb, 1.1 + i / 1000)
    assert tcb.cc.ssthresh == int(cwnd * BETA)  # not FlightSize / 2 as NewReno
    assert tcb.cc.cwnd == tcb.cc.ssthresh


def test_default_congestion_control_is_cubic() -> None:
    """Without configuration the engine uses CUBIC (RFC 9438), as the daemon and Linux do."""
    assert TcpConfig().congestion_control == "cubic"
    tcb = tcb_established(TcpConfig())
    assert type(tcb.cc) is Cubic


def test_unknown_congestion_control_rejected() -> None:
    """The algorithm name is validated once, when the configuration is made."""
    with pytest.raises(ValueError, match="congestion control"):
        TcpConfig(congestion_control="vegas")
    with pytest.raises(ValueError):
        congestion.create("vegas", 1460)
