"""Pluggable congestion control (RFC 5681), with the initial window of RFC 6928.

A controller owns ``cwnd`` and ``ssthresh`` in bytes and is told about ACKs and
losses; the TCB asks it nothing else. New algorithms subclass
:class:`CongestionControl` and register in :data:`ALGORITHMS`.
"""

from __future__ import annotations


def initial_window(mss: int, segments: int = 10) -> int:
    """RFC 6928 2: IW = min(10*MSS, max(2*MSS, 14600)) for the default 10 segments."""
    if segments == 10:
        return min(10 * mss, max(2 * mss, 14600))
    return max(1, segments) * mss


class CongestionControl:
    """Base class: the interface every algorithm implements."""

    name = "base"
    __slots__ = ("cwnd", "mss", "ssthresh")

    def __init__(self, mss: int, iw_segments: int = 10) -> None:
        self.mss = mss
        self.cwnd = initial_window(mss, iw_segments)
        # RFC 5681 3.1: ssthresh starts arbitrarily high.
        self.ssthresh = 1 << 30

    def on_ack(self, acked: int, flight: int, now: float) -> None:
        """``acked`` new bytes were cumulatively acknowledged; ``flight`` before the ACK."""
        raise NotImplementedError

    def on_timeout(self, flight: int, now: float) -> None:
        """A retransmission timeout fired (RFC 5681 3.1, equation 4 and the loss window)."""
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss

    def set_mss(self, mss: int) -> None:
        self.mss = mss


class NewReno(CongestionControl):
    """Slow start and congestion avoidance of RFC 5681 3.1 with appropriate byte counting."""

    name = "newreno"
    __slots__ = ("_ca_acc",)

    def __init__(self, mss: int, iw_segments: int = 10) -> None:
        super().__init__(mss, iw_segments)
        self._ca_acc = 0

    def on_ack(self, acked: int, flight: int, now: float) -> None:
        if self.cwnd < self.ssthresh:
            # Slow start: grow by at most one SMSS per ACK (RFC 5681 3.1, eq. 2;
            # byte counting with L = 2 SMSS per RFC 3465).
            self.cwnd += min(acked, 2 * self.mss)
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


ALGORITHMS: dict[str, type[CongestionControl]] = {"newreno": NewReno}


def create(name: str, mss: int, iw_segments: int = 10) -> CongestionControl:
    try:
        cls = ALGORITHMS[name]
    except KeyError:
        raise ValueError(
            f"unknown congestion control {name!r} (choose from {', '.join(sorted(ALGORITHMS))})"
        ) from None
    return cls(mss, iw_segments)
