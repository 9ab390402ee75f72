"""Congestion control: NewReno slow start / congestion avoidance (RFC 5681), IW (RFC 6928)."""

from __future__ import annotations

import pytest

from tcpstack.tcp import congestion
from tcpstack.tcp.congestion import NewReno, initial_window


@pytest.mark.parametrize(("mss", "iw"), [(1460, 14600), (536, 5360), (4000, 14600),
                                         (8960, 17920), (100, 1000)])
def test_initial_window_rfc6928(mss: int, iw: int) -> None:
    """RFC 6928 2: IW = min(10*MSS, max(2*MSS, 14600))."""
    assert initial_window(mss) == iw


def test_initial_window_custom_segment_count() -> None:
    """RFC 3390 / RFC 6928 3: a configured IW other than 10 segments is that many MSS."""
    assert initial_window(1460, 4) == 4 * 1460
    assert initial_window(1460, 1) == 1460


@pytest.mark.parametrize("mss", [1460, 536])
def test_newreno_starts_at_iw_with_huge_ssthresh(mss: int) -> None:
    """RFC 5681 3.1: cwnd starts at IW; ssthresh SHOULD start arbitrarily high."""
    cc = NewReno(mss)
    assert cc.cwnd == initial_window(mss)
    assert cc.ssthresh >= 1 << 30


def test_slow_start_grows_by_bytes_acked() -> None:
    """RFC 5681 3.1 eq. 2: in slow start cwnd += min(N, SMSS) per ACK."""
    cc = NewReno(1460)
    start = cc.cwnd
    for _ in range(10):
        cc.on_ack(1460, cc.cwnd, 0.0)
    assert cc.cwnd == start + 10 * 1460  # doubled after one window of ACKs
    cc.on_ack(100, cc.cwnd, 0.0)
    assert cc.cwnd == start + 10 * 1460 + 100


def test_slow_start_stretch_ack_is_limited() -> None:
    """RFC 3465 2.3 (ABC with L = 2*SMSS): one ACK grows cwnd by at most 2 SMSS."""
    cc = NewReno(1460)
    start = cc.cwnd
    cc.on_ack(10 * 1460, cc.cwnd, 0.0)
    assert cc.cwnd == start + 2 * 1460


def test_congestion_avoidance_one_mss_per_cwnd_of_acked_bytes() -> None:
    """RFC 5681 3.1 eq. 3: above ssthresh cwnd grows about one SMSS per RTT."""
    cc = NewReno(1000)
    cc.ssthresh = 5000
    cc.cwnd = 10000
    for _ in range(9):
        cc.on_ack(1000, 10000, 0.0)
    assert cc.cwnd == 10000  # 9000 bytes acked: not yet a full cwnd
    cc.on_ack(1000, 10000, 0.0)
    assert cc.cwnd == 11000
    for _ in range(11):  # another full (new) cwnd of acknowledged bytes
        cc.on_ack(1000, 11000, 0.0)
    assert cc.cwnd == 12000


def test_timeout_sets_ssthresh_to_half_flight_and_cwnd_to_one_mss() -> None:
    """RFC 5681 3.1 eq. 4: ssthresh = max(FlightSize/2, 2*SMSS); cwnd = LW = 1 SMSS."""
    cc = NewReno(1460)
    cc.cwnd = 40000
    cc.on_timeout(30000, 0.0)
    assert cc.ssthresh == 15000
    assert cc.cwnd == 1460


def test_timeout_ssthresh_floor_is_two_mss() -> None:
    """RFC 5681 3.1 eq. 4: ssthresh never below 2*SMSS."""
    cc = NewReno(1460)
    cc.on_timeout(1000, 0.0)
    assert cc.ssthresh == 2 * 1460
    assert cc.cwnd == 1460


def test_after_timeout_slow_start_then_avoidance() -> None:
    """RFC 5681 3.1: after a timeout, slow start up to ssthresh, then linear growth."""
    cc = NewReno(1000)
    cc.on_timeout(8000, 0.0)  # ssthresh 4000, cwnd 1000
    while cc.cwnd < cc.ssthresh:
        cc.on_ack(1000, cc.cwnd, 0.0)
    assert cc.cwnd == 4000
    cc.on_ack(1000, 4000, 0.0)
    assert cc.cwnd == 4000  # now in congestion avoidance


def test_create_rejects_unknown_algorithm() -> None:
    """RFC 5681 is the default algorithm; unknown names are rejected clearly."""
    assert isinstance(congestion.create("newreno", 1460), NewReno)
    with pytest.raises(ValueError, match="unknown congestion control 'vegas'"):
        congestion.create("vegas", 1460)
