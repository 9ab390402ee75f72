"""Round-trip time estimation and the retransmission timeout (RFC 6298)."""

from __future__ import annotations


class RttEstimator:
    """SRTT/RTTVAR smoothing and the RTO with exponential backoff.

    Deliberate deviation, as Linux does: ``rto_min`` (default 200 ms) bounds the
    variance term rather than the whole RTO, RTO = SRTT + max(G, 4*RTTVAR, rto_min),
    instead of RFC 6298 2.4's floor of 1 s on the RTO. With per-ACK timestamp samples
    RTTVAR becomes tiny, and a bare 200 ms floor would let the timer fire during
    ordinary fast recovery on paths of 100 ms or more.
    """

    __slots__ = ("_backoff", "_rto", "granularity", "rto_max", "rto_min", "rttvar", "srtt")

    def __init__(
        self, initial: float, rto_min: float, rto_max: float, granularity: float = 0.001
    ) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto_min = rto_min
        self.rto_max = rto_max
        self.granularity = granularity
        # RFC 6298 2.1: until a measurement is made, RTO is the initial value.
        self._rto = initial
        self._backoff = 0

    def sample(self, r: float) -> None:
        """Take an RTT measurement ``r`` (seconds) -- RFC 6298 2.2 and 2.3.

        Callers follow Karn's rule (RFC 6298 3): never sample a retransmitted segment.
        """
        r = max(r, 0.0)
        if self.srtt is None:
            self.srtt = r
            self.rttvar = r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        self._rto = self.srtt + max(self.granularity, 4 * self.rttvar, self.rto_min)
        # RFC 6298 5.7 (after backoff, a new sample collapses the backoff).
        self._backoff = 0

    def reinitialize(self, rto: float) -> None:
        """Restart from ``rto`` with no backoff (RFC 6298 5.7, after a lost SYN)."""
        self._rto = rto
        self._backoff = 0

    def backoff(self) -> None:
        """RFC 6298 5.5: double the RTO after a retransmission timeout."""
        self._backoff += 1

    def reset_backoff(self) -> None:
        self._backoff = 0

    @property
    def rto(self) -> float:
        """The current RTO, clamped to [rto_min, rto_max] (RFC 6298 2.4, 2.5)."""
        value = max(self.rto_min, self._rto) * (1 << min(self._backoff, 30))
        return min(value, self.rto_max)
