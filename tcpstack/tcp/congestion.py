"""Pluggable congestion control (RFC 5681): NewReno and CUBIC here, BBR in
:mod:`tcpstack.tcp.bbr`, and the registry the configuration names them from.

A controller owns ``cwnd`` and ``ssthresh`` in bytes and is told about ACKs and
losses; the TCB asks it nothing else. New algorithms subclass
:class:`~tcpstack.tcp.controller.CongestionControl` (its interface) and register
in :data:`ALGORITHMS`.
"""

from __future__ import annotations

from tcpstack.tcp.bbr import Bbr
from tcpstack.tcp.controller import (
    INITIAL_SSTHRESH,
    CongestionControl,
    initial_window,
)

CUBIC_C = 0.4  # RFC 9438 4.1
CUBIC_BETA = 0.7  # RFC 9438 4.6: the multiplicative decrease
CUBIC_ALPHA = 3 * (1 - CUBIC_BETA) / (1 + CUBIC_BETA)  # RFC 9438 4.3: Reno-friendly increase


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


ALGORITHMS: dict[str, type[CongestionControl]] = {"newreno": NewReno, "cubic": Cubic,
                                                  "bbr": Bbr}


def create(name: str, mss: int, iw_segments: int = 10, hystart: bool = False,
           seed: int = 0) -> CongestionControl:
    """The controller ``name``; ``hystart``: leave its initial slow start by HyStart++
    (NewReno, CUBIC); ``seed``: for an algorithm's random choices (BBR's)."""
    try:
        cls = ALGORITHMS[name]
    except KeyError:
        raise ValueError(
            f"unknown congestion control {name!r} (choose from {', '.join(sorted(ALGORITHMS))})"
        ) from None
    if cls is Bbr:
        return Bbr(mss, iw_segments, hystart, seed)
    return cls(mss, iw_segments, hystart)


__all__ = ["ALGORITHMS", "INITIAL_SSTHRESH", "Bbr", "CongestionControl", "Cubic", "NewReno",
           "create", "initial_window"]
