"""RTT estimation and the retransmission timeout (RFC 6298)."""

from __future__ import annotations

import pytest

from tcpstack.tcp.rtt import RttEstimator


def make(initial: float = 1.0, rto_min: float = 0.2, rto_max: float = 120.0) -> RttEstimator:
    return RttEstimator(initial, rto_min, rto_max)


def test_initial_rto_before_any_sample() -> None:
    """RFC 6298 2.1: until a measurement is made, RTO is the initial value."""
    r = make(initial=1.0)
    assert r.srtt is None
    assert r.rto == 1.0


def test_first_sample_sets_srtt_and_rttvar() -> None:
    """RFC 6298 2.2: SRTT <- R, RTTVAR <- R/2, RTO <- SRTT + max(G, 4*RTTVAR)."""
    r = make()
    r.sample(0.5)
    assert r.srtt == pytest.approx(0.5)
    assert r.rttvar == pytest.approx(0.25)
    assert r.rto == pytest.approx(0.5 + 4 * 0.25)


def test_subsequent_samples_follow_rfc6298_2_3() -> None:
    """RFC 6298 2.3: RTTVAR <- 3/4 RTTVAR + 1/4 |SRTT - R'|, then SRTT <- 7/8 SRTT + 1/8 R'."""
    r = make()
    srtt, rttvar = 0.5, 0.25
    r.sample(0.5)
    for sample in (0.3, 0.9, 0.45, 0.45, 1.2):
        rttvar = 0.75 * rttvar + 0.25 * abs(srtt - sample)  # uses the old SRTT
        srtt = 0.875 * srtt + 0.125 * sample
        r.sample(sample)
        assert r.rttvar == pytest.approx(rttvar)
        assert r.srtt == pytest.approx(srtt)
        assert r.rto == pytest.approx(srtt + max(0.001, 4 * rttvar))


def test_granularity_term_when_variance_is_zero() -> None:
    """RFC 6298 2.3: RTO = SRTT + max(G, K*RTTVAR); with RTTVAR -> 0 the G term remains."""
    r = RttEstimator(1.0, rto_min=0.0001, rto_max=60.0, granularity=0.01)
    for _ in range(200):
        r.sample(0.05)
    assert r.rto == pytest.approx(0.06, abs=1e-3)


def test_rto_min_bounds_the_variance_term() -> None:
    """RFC 6298 2.4 lower bound, the Linux way: RTO = SRTT + max(G, 4*RTTVAR, rto_min),
    so a tiny RTTVAR from per-ACK samples cannot bring the RTO down to SRTT."""
    r = make(rto_min=0.2)
    r.sample(0.001)
    assert r.rto == pytest.approx(0.001 + 0.2)
    r = make(rto_min=0.2)
    for _ in range(50):
        r.sample(0.1)  # steady 100 ms: RTTVAR decays towards 0
    assert r.rto == pytest.approx(0.1 + 0.2, abs=1e-3)
    r = make(rto_min=0.2)
    r.sample(1.0)  # RTTVAR = 0.5: the variance term dominates
    assert r.rto == pytest.approx(1.0 + 4 * 0.5)


def test_rto_max_clamp() -> None:
    """RFC 6298 2.5: a maximum value may be placed on RTO (at least 60 s)."""
    r = make(rto_max=60.0)
    r.sample(50.0)
    assert r.rto == 60.0


def test_backoff_doubles_and_caps_at_rto_max() -> None:
    """RFC 6298 5.5: RTO <- RTO * 2 on each timeout; 2.5: bounded by the maximum."""
    r = make(initial=1.0, rto_max=60.0)
    seen = []
    for _ in range(10):
        r.backoff()
        seen.append(r.rto)
    assert seen[:5] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert seen[5:] == [60.0] * 5


def test_backoff_applies_to_measured_rto() -> None:
    """RFC 6298 5.5: the doubling applies to the computed RTO."""
    r = make()
    r.sample(0.4)  # RTO = 0.4 + 0.8 = 1.2
    r.backoff()
    r.backoff()
    assert r.rto == pytest.approx(4.8)


def test_new_sample_collapses_backoff() -> None:
    """RFC 6298 5 note after 5.7: a new measurement recomputes RTO, collapsing the backoff."""
    r = make()
    r.sample(0.4)
    for _ in range(4):
        r.backoff()
    assert r.rto == pytest.approx(1.2 * 16)
    r.sample(0.4)
    assert r.rto == pytest.approx(0.4 + max(0.001, 4 * 0.75 * 0.2))


def test_reset_backoff() -> None:
    """RFC 6298 5.7 note: the backoff can be collapsed (on new acknowledgments)."""
    r = make(initial=1.0)
    r.backoff()
    r.reset_backoff()
    assert r.rto == 1.0


def test_negative_sample_is_treated_as_zero() -> None:
    """RFC 6298 2: a measurement R is non-negative; a clock step must not give SRTT < 0."""
    r = make()
    r.sample(-3.0)
    assert r.srtt == 0.0
    assert r.rto == pytest.approx(0.2)
