"""The interface every congestion controller implements (RFC 5681), with the
initial window of RFC 6928.

A controller owns ``cwnd`` and ``ssthresh`` in bytes, and for those that pace
(BBR) the ``pacing_rate``; the engine tells it about ACKs, losses, timeouts and
recovery, and asks it nothing else. The algorithms are in
:mod:`tcpstack.tcp.congestion` (NewReno, CUBIC) and :mod:`tcpstack.tcp.bbr`.
"""

from __future__ import annotations

from typing import ClassVar

from tcpstack.tcp.hystart import SLOW_START, HyStart
from tcpstack.tcp.rate import DeliveryRate, RateSample


def initial_window(mss: int, segments: int = 10) -> int:
    """RFC 6928 2: IW = min(10*MSS, max(2*MSS, 14600)) for the default 10 segments."""
    if segments == 10:
        return min(10 * mss, max(2 * mss, 14600))
    return max(1, segments) * mss


INITIAL_SSTHRESH = 1 << 30
"""RFC 5681 3.1: ssthresh starts arbitrarily high (it is this until the first loss)."""


class CongestionControl:
    """Base class: the interface every algorithm implements.

    ``wants_rate``: the engine keeps delivery rate samples for it
    (:mod:`tcpstack.tcp.rate`) and calls :meth:`on_rate_sample` after every ACK;
    ``controls_recovery``: it sets the window during loss recovery itself (no
    proportional rate reduction, no ssthresh at the end). ``pacing_rate`` > 0:
    the sender spaces its transmissions at that many bytes per second.
    """

    name = "base"
    wants_rate: ClassVar[bool] = False
    controls_recovery: ClassVar[bool] = False
    __slots__ = ("_hystart_on", "_saved", "cwnd", "hystart", "mss", "pacing_rate", "srtt",
                 "ssthresh")

    def __init__(self, mss: int, iw_segments: int = 10, hystart: bool = False) -> None:
        self.mss = mss
        self.cwnd = initial_window(mss, iw_segments)
        self.ssthresh = INITIAL_SSTHRESH
        self.pacing_rate = 0.0
        self._saved: tuple[int, int] | None = None
        self.srtt: float | None = None  # kept current by the TCB, for delay-aware algorithms
        #: HyStart++ for the initial slow start (RFC 9406): made at the first ACK of
        #: data (an idle connection does not carry it), None if not used.
        self.hystart: HyStart | None = None
        self._hystart_on = hystart

    @property
    def hystart_phase(self) -> str | None:
        """Where HyStart++ is (see :mod:`tcpstack.tcp.hystart`), None if it is off."""
        if self.hystart is not None:
            return self.hystart.phase
        return SLOW_START if self._hystart_on else None

    def on_ack(self, acked: int, flight: int, now: float) -> None:
        """``acked`` new bytes were cumulatively acknowledged; ``flight`` before the ACK."""
        raise NotImplementedError

    def on_ack_seq(self, ack: int, snd_nxt: int) -> None:
        """An ACK of new data moved SND.UNA to ``ack`` with SND.NXT at ``snd_nxt``
        (before :meth:`on_rtt` and :meth:`on_ack` for the same ACK): HyStart++ counts
        its rounds with it (RFC 9406 4.2)."""
        if self.ssthresh != INITIAL_SSTHRESH:
            return  # past the initial slow start: nothing for HyStart++ (RFC 9406 4.2)
        hs = self.hystart
        if hs is None:
            if not self._hystart_on:
                return
            hs = self.hystart = HyStart()
        if hs.on_ack(ack, snd_nxt):
            # The last round of conservative slow start: congestion avoidance from here.
            self.ssthresh = self.cwnd

    def on_rtt(self, rtt: float) -> None:
        """An RTT sample taken from the ACK being processed."""
        hs = self.hystart
        if hs is not None and self.ssthresh == INITIAL_SSTHRESH:
            hs.on_rtt(rtt)

    def slow_start_increase(self, acked: int) -> int:
        """How much a slow-start ACK of ``acked`` bytes grows the window: at most 2 SMSS
        (RFC 5681 3.1 with RFC 3465's L = 2), a quarter of that in HyStart++'s
        conservative slow start (RFC 9406 4.2)."""
        increase = min(acked, 2 * self.mss)
        hs = self.hystart
        return increase if hs is None else hs.growth(increase)

    def on_timeout(self, flight: int, now: float) -> None:
        """A retransmission timeout fired (RFC 5681 3.1, equation 4 and the loss window)."""
        self.end_slow_start_search()
        self.save()
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss

    def on_loss(self, flight: int, now: float) -> None:
        """Loss detected by ACKs: enter fast recovery (RFC 5681 3.2, RFC 6675 5)."""
        self.end_slow_start_search()
        self.save()
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh

    def on_tlp_loss(self, flight: int, now: float) -> None:
        """A tail loss probe repaired a loss (RFC 8985 7.4): react once, as to a loss."""
        self.on_loss(flight, now)

    def on_recovery_end(self) -> None:
        """Fast recovery ended: the window is ssthresh (RFC 6675 5, RFC 9937 3)."""
        self.cwnd = self.ssthresh

    def on_rate_sample(self, rs: RateSample, rate: DeliveryRate, in_flight: int,
                       ca_state: int, now: float) -> None:
        """After every ACK, for controllers with ``wants_rate``: the ACK's delivery rate
        sample, the connection's delivery counters, the bytes in flight after it and
        the loss state (0 open, 2 reducing for ECE, 3 fast recovery, 4 after a
        timeout, as Linux's TCP_CA_* values)."""

    def on_tx_start(self, now: float, rate: DeliveryRate) -> None:
        """New data leaves with nothing in flight (after an idle period)."""

    def info(self) -> dict[str, object] | None:
        """The algorithm's own state for ``tcp_info`` and the connection table."""
        return None

    def on_congestion_signal(self, flight: int, now: float) -> None:
        """ECE (RFC 3168 6.1.2): the reduction a loss would cause -- and no undo can
        reverse it, since no retransmission caused it."""
        self.on_loss(flight, now)
        self._saved = None

    def end_slow_start_search(self) -> None:
        """A loss or timeout: HyStart++ is over for this connection (RFC 9406 4.2 --
        only the initial slow start uses it)."""
        if self.hystart is None and self._hystart_on:
            self.hystart = HyStart()
        if self.hystart is not None:
            self.hystart.stop()

    def save(self) -> None:
        """Remember the state before a reduction, for :meth:`undo`."""
        self._saved = (self.cwnd, self.ssthresh)

    def undo(self) -> None:
        """The reduction was caused by a spurious retransmission: restore the state
        from before it (Eifel response, RFC 4015 / RFC 3708)."""
        saved = self._saved
        if saved is not None:
            self.cwnd = max(self.cwnd, saved[0])
            self.ssthresh = max(self.ssthresh, saved[1])
            self._saved = None

    def set_mss(self, mss: int) -> None:
        self.mss = mss


__all__ = ["INITIAL_SSTHRESH", "CongestionControl", "initial_window"]
