"""Delivery rate estimation (draft-cheng-iccrg-delivery-rate-estimation; Linux's
``tcp_rate.c``): how fast the network delivered our data, sampled on every ACK.

Each transmission records where the connection's delivery count stood when it
left (``Sent.r_delivered``, ``r_delivered_time``, ``r_first_sent``, ``r_app_limited``).
When an ACK (cumulative or SACK) reports a transmission delivered, the bytes
delivered since it left, over the longer of its send interval and its ACK
interval, are a delivery rate sample (the interval's longer half keeps ACK
compression from inflating it). One sample per ACK, from the most recently sent
transmission it reports: :class:`RateSample`.

A sample taken while the sender had nothing to send (the application was the
limit, not the network) is marked ``is_app_limited``: a model of the path must not
take its low rate for the path's (:meth:`DeliveryRate.check_app_limited`).

Only connections whose congestion control asks for samples (BBR) keep this
record (``Scoreboard.rate``); the others pay nothing. Nothing here performs I/O or
reads a clock.
"""

from __future__ import annotations

from typing import Protocol


class Transmission(Protocol):
    """What the estimator reads and writes on a record of the scoreboard."""

    xmit_ts: float
    retrans: int
    r_delivered: int
    r_delivered_time: float
    r_first_sent: float
    r_app_limited: bool


class RateSample:
    """One ACK's delivery rate sample (the draft's ``rs``).

    ``delivered`` bytes over ``interval`` seconds (``rate``: bytes per second);
    ``interval`` is 0 when the ACK gave no valid sample. ``prior_delivered`` is the
    delivery count when the sampled transmission left (BBR counts its round trips
    with it), ``acked_sacked`` the bytes this ACK newly reported delivered,
    ``losses`` the bytes newly marked lost while it was processed, ``rtt`` the
    round-trip time of the sampled transmission (None: a retransmission, ambiguous),
    ``prior_in_flight`` the bytes in flight before the ACK.
    """

    __slots__ = ("_newest_ts", "acked_sacked", "delivered", "interval", "is_app_limited",
                 "losses", "prior_delivered", "prior_in_flight", "prior_time", "rate", "rtt",
                 "send_elapsed")

    def __init__(self) -> None:
        self.prior_delivered = 0
        self.prior_time: float | None = None  # None: no transmission reported yet
        self.send_elapsed = 0.0
        self.delivered = 0
        self.interval = 0.0
        self.rate = 0.0
        self.is_app_limited = False
        self.rtt: float | None = None
        self.acked_sacked = 0
        self.losses = 0
        self.prior_in_flight = 0
        self._newest_ts = 0.0

    def __repr__(self) -> str:
        return (f"<RateSample {self.delivered} B / {self.interval * 1000:.3f} ms = "
                f"{self.rate / 1e6:.3f} MB/s{' app-limited' if self.is_app_limited else ''}>")


class DeliveryRate:
    """A connection's delivery counters and the sample of the ACK being processed."""

    __slots__ = ("_lost_before", "_reno_delivered", "app_limited", "delivered",
                 "delivered_time", "first_sent_time", "lost", "sample")

    def __init__(self) -> None:
        #: Bytes delivered (cumulatively acknowledged or SACKed) so far: the draft's
        #: C.delivered; and when it last grew (C.delivered_time).
        self.delivered = 0
        self.delivered_time = 0.0
        #: When the transmission most recently reported delivered was sent.
        self.first_sent_time = 0.0
        #: Non-zero while the application is the limit: samples are app-limited
        #: until ``delivered`` passes it (C.app_limited). Set at first, as Linux's
        #: ``~0U``: the first flight is a bubble until its first ACK.
        self.app_limited = 1
        #: Bytes marked lost so far (Linux's tp->lost, in bytes).
        self.lost = 0
        self._lost_before = 0
        # Without SACK: bytes counted delivered by duplicate ACKs, not yet by SND.UNA.
        self._reno_delivered = 0
        self.sample = RateSample()

    # -------------------------------------------------------------- sending

    def on_send(self, rec: Transmission, now: float, nothing_in_flight: bool) -> None:
        """``rec`` is (re)transmitted at ``now``: note where delivery stood."""
        if nothing_in_flight:
            # A new flight after an idle period: its intervals start now.
            self.first_sent_time = now
            self.delivered_time = now
        rec.r_delivered = self.delivered
        rec.r_delivered_time = self.delivered_time
        rec.r_first_sent = self.first_sent_time
        rec.r_app_limited = self.app_limited != 0

    def check_app_limited(self, in_flight: int) -> None:
        """The sender has nothing more to send with room in its window: the samples
        until what is in flight now is delivered measure the application, not the
        path."""
        self.app_limited = (self.delivered + in_flight) or 1

    # -------------------------------------------------------------- an ACK

    def start_ack(self, prior_in_flight: int) -> None:
        """An ACK is about to be processed."""
        rs = self.sample = RateSample()
        rs.prior_in_flight = prior_in_flight
        self._lost_before = self.lost

    def on_delivered(self, rec: Transmission, n: int, now: float) -> None:
        """``n`` bytes of ``rec`` were newly reported delivered, at ``now``."""
        self.delivered += n
        self.delivered_time = now
        rs = self.sample
        rs.acked_sacked += n
        # The most recently sent transmission this ACK reports makes the sample.
        if rs.prior_time is None or rec.r_delivered > rs.prior_delivered or (
                rec.r_delivered == rs.prior_delivered and rec.xmit_ts > rs._newest_ts):
            rs.prior_delivered = rec.r_delivered
            rs.prior_time = rec.r_delivered_time
            rs.is_app_limited = rec.r_app_limited
            rs.send_elapsed = rec.xmit_ts - rec.r_first_sent
            rs.rtt = None if rec.retrans else now - rec.xmit_ts
            rs._newest_ts = rec.xmit_ts
            # The next sample's send interval starts where this one's ended.
            self.first_sent_time = rec.xmit_ts

    def on_reno_dupack(self, mss: int, flight: int, now: float) -> None:
        """Without SACK a duplicate ACK stands for one segment delivered beyond a hole
        (as Linux's tcp_add_reno_sack counts it): recovery may send one for it -- but
        no more of them than what is in flight beyond that hole
        (tcp_limit_reno_sacked)."""
        room = flight - mss - self._reno_delivered
        if room <= 0:
            return
        n = min(mss, room)
        self.delivered += n
        self.delivered_time = now
        self._reno_delivered += n
        self.sample.acked_sacked += n

    def on_reno_ack(self, acked: int, mss: int) -> None:
        """Without SACK, SND.UNA advanced by ``acked`` bytes: what duplicate ACKs
        counted already is not counted again -- the ACK counts ``acked`` less that,
        but at least a segment (Linux's tcp_remove_reno_sacks, in bytes)."""
        counted = self._reno_delivered
        if counted and acked > 0:
            own = min(acked, mss)
            taken = min(counted, acked - own)
            self.delivered -= taken
            self.sample.acked_sacked -= taken
            self._reno_delivered = max(0, counted - (acked - own))

    def finish_ack(self, now: float, min_rtt: float | None) -> RateSample:
        """The sample of the ACK just processed (the draft's UpdateRateSample)."""
        rs = self.sample
        if self.app_limited and self.delivered > self.app_limited:
            self.app_limited = 0  # what was in flight when it ran dry is delivered
        rs.losses = self.lost - self._lost_before
        if rs.prior_time is None:
            return rs  # nothing delivered: no sample
        rs.delivered = self.delivered - rs.prior_delivered
        ack_elapsed = self.delivered_time - rs.prior_time
        interval = max(rs.send_elapsed, ack_elapsed)
        # Shorter than the minimum RTT: an artifact (a stretched ACK after a gap);
        # no rate can be believed from it (Linux's tcp_rate_gen).
        if interval <= 0 or (min_rtt is not None and interval < min_rtt):
            return rs
        rs.interval = interval
        rs.rate = rs.delivered / interval
        return rs


__all__ = ["DeliveryRate", "RateSample", "Transmission"]
