"""Pluggable congestion control (RFC 5681), with the initial window of RFC 6928.

A controller owns ``cwnd`` and ``ssthresh`` in bytes and is told about ACKs and
losses; the TCB asks it nothing else. New algorithms subclass
:class:`CongestionControl` and register in :data:`ALGORITHMS`.
"""

from __future__ import annotations

from tcpstack.tcp.hystart import SLOW_START, HyStart

CUBIC_C = 0.4  # RFC 9438 4.1
CUBIC_BETA = 0.7  # RFC 9438 4.6: the multiplicative decrease
CUBIC_ALPHA = 3 * (1 - CUBIC_BETA) / (1 + CUBIC_BETA)  # RFC 9438 4.3: Reno-friendly increase


def initial_window(mss: int, segments: int = 10) -> int:
    """RFC 6928 2: IW = min(10*MSS, max(2*MSS, 14600)) for the default 10 segments."""
    if segments == 10:
        return min(10 * mss, max(2 * mss, 14600))
    return max(1, segments) * mss


INITIAL_SSTHRESH = 1 << 30
"""RFC 5681 3.1: ssthresh starts arbitrarily high (it is this until the first loss)."""


class CongestionControl:
    """Base class: the interface every algorithm implements."""

    name = "base"
    __slots__ = ("_hystart_on", "_saved", "cwnd", "hystart", "mss", "srtt", "ssthresh")

    def __init__(self, mss: int, iw_segments: int = 10, hystart: bool = False) -> None:
        self.mss = mss
        self.cwnd = initial_window(mss, iw_segments)
        self.ssthresh = INITIAL_SSTHRESH
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


class NewReno(CongestionControl):
    """Slow start and congestion avoidance of RFC 5681 3.1 with appropriate byte counting."""

    name = "newreno"
    __slots__ = ("_ca_acc",)

    def __init__(self, mss: int, iw_segments: int = 10, hystart: bool = False) -> None:
        super().__init__(mss, iw_segments, hystart)
        self._ca_acc = 0

    def on_ack(self, acked: int, flight: int, now: float) -> None:
        if self.cwnd < self.ssthresh:
            # Slow start (RFC 5681 3.1, eq. 2; byte counting with L = 2 SMSS per RFC 3465).
            self.cwnd += self.slow_start_increase(acked)
            return
        # Congestion avoidance: about one SMSS per RTT (RFC 5681 3.1, eq. 3),
        # by counting acknowledged bytes against cwnd.
        self._ca_acc += acked
        if self._ca_acc >= self.cwnd:
            self._ca_acc -= self.cwnd
            self.cwnd += self.mss

    def on_timeout(self, flight: int, now: float) -> None:
        super().on_timeout(flight, now)
        self._ca_acc = 0


class Cubic(CongestionControl):
    """CUBIC (RFC 9438): window growth as a cubic function of time since the last loss.

    Windows are tracked in segments as floats internally (RFC 9438 4.1); ``cwnd`` is
    exposed in bytes like every controller.
    """

    name = "cubic"
    __slots__ = ("_epoch", "_k", "_w_est", "_w_last_max", "_w_max")

    def __init__(self, mss: int, iw_segments: int = 10, hystart: bool = False) -> None:
        super().__init__(mss, iw_segments, hystart)
        self._epoch: float | None = None
        self._w_max = 0.0
        self._w_last_max = 0.0
        self._k = 0.0
        self._w_est = 0.0

    def on_ack(self, acked: int, flight: int, now: float) -> None:
        if self.cwnd < self.ssthresh:
            # Slow start as in RFC 5681 (RFC 9438 4.10), with HyStart++ if enabled.
            self.cwnd += self.slow_start_increase(acked)
            return
        mss = self.mss
        cwnd_seg = self.cwnd / mss
        if self._epoch is None:
            # RFC 9438 4.2: a congestion-avoidance epoch starts.
            self._epoch = now
            self._w_est = cwnd_seg
            if self._w_max <= cwnd_seg:
                self._k = 0.0
                self._w_max = cwnd_seg
            else:
                self._k = ((self._w_max - cwnd_seg) / CUBIC_C) ** (1 / 3)
        rtt = self.srtt if self.srtt is not None else 0.1
        t = now - self._epoch + rtt
        target = CUBIC_C * (t - self._k) ** 3 + self._w_max  # eq. 1 at t + RTT (4.2)
        target = min(max(target, cwnd_seg), 1.5 * cwnd_seg)  # RFC 9438 4.4: bounded
        # Reno-friendly estimate (RFC 9438 4.3, eq. 4).
        # RFC 9438 4.3: alpha becomes 1 once the estimate reaches the window from
        # before the last reduction.
        alpha = 1.0 if self._w_est >= self._w_max else CUBIC_ALPHA
        self._w_est += alpha * (acked / mss) / cwnd_seg
        if self._w_est > target:
            target = self._w_est
        # Grow by (target - cwnd) / cwnd per acknowledged segment (RFC 9438 4.4/4.5).
        inc = (target - cwnd_seg) / cwnd_seg * (acked / mss)
        self.cwnd = int((cwnd_seg + inc) * mss)

    def _reduce(self) -> None:
        cwnd_seg = self.cwnd / self.mss
        # Fast convergence (RFC 9438 4.7).
        if cwnd_seg < self._w_last_max:
            self._w_last_max = cwnd_seg
            self._w_max = cwnd_seg * (1 + CUBIC_BETA) / 2
        else:
            self._w_last_max = cwnd_seg
            self._w_max = cwnd_seg
        self._epoch = None

    def on_loss(self, flight: int, now: float) -> None:
        self.end_slow_start_search()
        self.save()
        self._reduce()
        # RFC 9438 4.6: ssthresh = cwnd * beta, at least 2 segments.
        self.ssthresh = max(int(self.cwnd * CUBIC_BETA), 2 * self.mss)
        self.cwnd = self.ssthresh

    def on_timeout(self, flight: int, now: float) -> None:
        self.end_slow_start_search()
        self.save()
        self._reduce()
        self.ssthresh = max(int(self.cwnd * CUBIC_BETA), 2 * self.mss)
        self.cwnd = self.mss

    def undo(self) -> None:
        super().undo()
        self._epoch = None


ALGORITHMS: dict[str, type[CongestionControl]] = {"newreno": NewReno, "cubic": Cubic}


def create(name: str, mss: int, iw_segments: int = 10, hystart: bool = False
           ) -> CongestionControl:
    """The controller ``name``; ``hystart``: leave its initial slow start by HyStart++."""
    try:
        cls = ALGORITHMS[name]
    except KeyError:
        raise ValueError(
            f"unknown congestion control {name!r} (choose from {', '.join(sorted(ALGORITHMS))})"
        ) from None
    return cls(mss, iw_segments, hystart)
