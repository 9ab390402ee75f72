"""The sender's record of what is in flight: SACK scoreboard and RACK loss detection.

One :class:`Sent` record per transmitted run of bytes (a segment, or a TSO
super-segment), in sequence order, from SND.UNA to SND.MAX. The scoreboard

* marks records SACKed from the peer's SACK blocks (RFC 2018, RFC 6675 4),
  splitting records that are only partly covered;
* keeps ``sacked_bytes`` and ``lost_bytes`` so that RFC 6675's *pipe* is
  ``flight - sacked - lost`` in O(1);
* runs RACK (RFC 8985 6.2): a record sent before the most recently sent
  delivered record is lost once ``rack.rtt + reo_wnd`` has passed since it was
  sent; otherwise the reordering timer is armed for it;
* detects duplicate SACK blocks (RFC 2883) for spurious-retransmission handling.
"""

from __future__ import annotations

from tcpstack.tcp.seq import seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt


class Sent:
    """A transmitted run ``[start, end)`` and its delivery state."""

    __slots__ = ("end", "lost", "retrans", "sacked", "start", "xmit_ts")

    def __init__(self, start: int, end: int, xmit_ts: float) -> None:
        self.start = start
        self.end = end
        self.xmit_ts = xmit_ts
        self.retrans = 0
        self.sacked = False
        self.lost = False

    @property
    def length(self) -> int:
        return seq_diff(self.end, self.start)

    def __repr__(self) -> str:
        flags = "".join(c for c, on in (("S", self.sacked), ("L", self.lost),
                                         ("R", self.retrans > 0)) if on)
        return f"Sent({self.start}-{self.end} t={self.xmit_ts:.4f} {flags})"


class Scoreboard:
    """Records in flight plus RACK state (RFC 8985 6.1)."""

    __slots__ = ("_dsack_round", "dsack_seen", "lost_bytes", "min_rtt", "rack_end", "rack_rtt",
                 "rack_xmit_ts", "recs", "reo_wnd_mult", "reo_wnd_persist", "sacked_bytes")

    def __init__(self) -> None:
        self.recs: list[Sent] = []
        self.sacked_bytes = 0
        self.lost_bytes = 0
        self.rack_xmit_ts = 0.0
        self.rack_end = 0
        self.rack_rtt: float | None = None
        self.min_rtt: float | None = None
        self.dsack_seen = 0
        # RFC 8985 6.2 step 4: the reordering window grows with D-SACKs (spurious
        # retransmissions caused by reordering) and falls back after 16 recoveries.
        self.reo_wnd_mult = 1
        self.reo_wnd_persist = 0
        self._dsack_round = -1.0

    # ---------------------------------------------------------------- records

    def on_send(self, start: int, end: int, now: float) -> None:
        """New data ``[start, end)`` was sent for the first time."""
        self.recs.append(Sent(start, end, now))

    def on_retransmit(self, rec: Sent, now: float) -> None:
        if rec.lost:
            rec.lost = False
            self.lost_bytes -= rec.length
        rec.retrans += 1
        rec.xmit_ts = now

    def clear(self) -> None:
        self.recs.clear()
        self.sacked_bytes = self.lost_bytes = 0

    # -------------------------------------------------------------- delivery

    def _delivered(self, rec: Sent, now: float, echo: float | None) -> None:
        """RACK step 2 (RFC 8985 6.2): remember the most recently sent delivered record.

        ``echo`` is when the acknowledged transmission was sent, from the echoed
        timestamp; a retransmitted record acknowledged for its original
        transmission must not count as recently delivered.
        """
        if rec.retrans:
            if echo is not None:
                if echo < rec.xmit_ts - 0.002:
                    return  # the ACK is for an earlier transmission
            elif self.min_rtt is not None and now - rec.xmit_ts < self.min_rtt:
                return  # ambiguous: this may acknowledge the original transmission
        rtt = now - rec.xmit_ts
        if self.rack_rtt is None or rec.xmit_ts > self.rack_xmit_ts or (
                rec.xmit_ts == self.rack_xmit_ts and seq_gt(rec.end, self.rack_end)):
            self.rack_rtt = rtt
            self.rack_xmit_ts = rec.xmit_ts
            self.rack_end = rec.end
        if not rec.retrans and (self.min_rtt is None or rtt < self.min_rtt):
            self.min_rtt = rtt

    def ack(self, snd_una: int, now: float, echo: float | None = None) -> int:
        """Drop records below the new cumulative ACK; return how many bytes that acked."""
        recs = self.recs
        i = 0
        acked = 0
        while i < len(recs) and seq_le(recs[i].end, snd_una):
            rec = recs[i]
            n = rec.length
            acked += n
            if rec.sacked:
                self.sacked_bytes -= n
            else:
                self._delivered(rec, now, echo)
            if rec.lost:
                self.lost_bytes -= n
            i += 1
        if i:
            del recs[:i]
        if recs and seq_lt(recs[0].start, snd_una):
            rec = recs[0]
            cut = seq_diff(snd_una, rec.start)
            if rec.sacked:
                self.sacked_bytes -= cut
            else:
                self._delivered(rec, now, echo)
            if rec.lost:
                self.lost_bytes -= cut
            rec.start = snd_una
        return acked

    def head(self, rec: Sent, limit: int) -> Sent:
        """The first ``limit`` bytes of ``rec`` as a record of their own (the rest is
        split off into the next record); ``rec`` itself if it is no longer."""
        if rec.length > limit:
            i = self.recs.index(rec)
            self._split(i, seq_add(rec.start, limit))
            rec = self.recs[i]
        return rec

    def tail(self, rec: Sent, limit: int) -> Sent:
        """The last ``limit`` bytes of ``rec`` as a record of their own."""
        if rec.length > limit:
            i = self.recs.index(rec)
            self._split(i, seq_add(rec.end, -limit))
            rec = self.recs[i + 1]
        return rec

    def forget_losses(self) -> None:
        """No record is lost after all (a retransmission proved spurious, RFC 3522)."""
        for rec in self.recs:
            if rec.lost:
                rec.lost = False
        self.lost_bytes = 0

    def _split(self, i: int, at: int) -> None:
        """Split record ``i`` at sequence ``at`` (strictly inside it)."""
        rec = self.recs[i]
        tail = Sent(at, rec.end, rec.xmit_ts)
        tail.retrans, tail.sacked, tail.lost = rec.retrans, rec.sacked, rec.lost
        rec.end = at
        self.recs.insert(i + 1, tail)

    def sack(self, blocks: tuple[tuple[int, int], ...], snd_una: int, snd_max: int,
             now: float, echo: float | None = None, ack: int | None = None) -> int:
        """Apply SACK blocks; return newly SACKed bytes. D-SACK blocks are counted.

        RFC 2883 4: the first block is a D-SACK if it lies below the cumulative ACK
        carried with it (``ack``), or inside the second block.
        """
        newly = 0
        cum = snd_una if ack is None or seq_lt(ack, snd_una) else ack
        for n, (left, right) in enumerate(blocks):
            if not seq_lt(left, right) or seq_gt(right, snd_max):
                continue  # invalid: ignore (RFC 2018 is silent; Linux drops such blocks)
            if n == 0 and (seq_le(right, cum) or (
                    len(blocks) > 1 and seq_ge(left, blocks[1][0])
                    and seq_le(right, blocks[1][1]))):
                self.dsack_seen += 1
                # At most one increase per round trip (the RACK RTT stands in for it).
                if self.rack_rtt is None or now - self._dsack_round >= self.rack_rtt:
                    self._dsack_round = now
                    self.reo_wnd_mult += 1
                    self.reo_wnd_persist = 16
                continue
            if seq_le(right, snd_una):
                continue
            if seq_lt(left, snd_una):
                left = snd_una
            newly += self._mark_sacked(left, right, now, echo)
        return newly

    def _mark_sacked(self, left: int, right: int, now: float, echo: float | None) -> int:
        recs = self.recs
        newly = 0
        i = 0
        while i < len(recs):
            rec = recs[i]
            if seq_le(rec.end, left):
                i += 1
                continue
            if seq_ge(rec.start, right):
                break
            if rec.sacked:
                i += 1
                continue
            if seq_lt(rec.start, left):
                self._split(i, left)
                i += 1
                continue
            if seq_gt(rec.end, right):
                self._split(i, right)
            rec = recs[i]
            rec.sacked = True
            n = rec.length
            newly += n
            self.sacked_bytes += n
            if rec.lost:
                rec.lost = False
                self.lost_bytes -= n
            self._delivered(rec, now, echo)
            i += 1
        return newly

    # ------------------------------------------------------------------ loss

    def reo_wnd(self, srtt: float | None) -> float:
        """RFC 8985 6.2 step 4: ``reo_wnd_mult`` quarters of the minimum RTT, at most SRTT."""
        if self.min_rtt is None:
            return 0.0
        w = self.reo_wnd_mult * self.min_rtt / 4
        return min(w, srtt) if srtt is not None else w

    def on_recovery(self) -> None:
        """A loss recovery episode began: count down towards resetting the multiplier."""
        if self.reo_wnd_persist > 0:
            self.reo_wnd_persist -= 1
            if self.reo_wnd_persist == 0:
                self.reo_wnd_mult = 1

    def detect_loss(self, now: float, srtt: float | None) -> tuple[int, float | None]:
        """RACK_detect_loss (RFC 8985 6.2 step 5).

        Marks records lost and returns ``(newly_lost_bytes, reorder_timeout)`` where
        the timeout is the earliest time a remaining suspect would be declared lost.
        """
        if self.rack_rtt is None:
            return 0, None
        reo = self.reo_wnd(srtt)
        horizon = self.rack_rtt + reo
        newly = 0
        timeout: float | None = None
        for rec in self.recs:
            if rec.sacked or rec.lost:
                continue
            sent_before = rec.xmit_ts < self.rack_xmit_ts or (
                rec.xmit_ts == self.rack_xmit_ts and seq_lt(rec.end, self.rack_end))
            if not sent_before:
                continue
            deadline = rec.xmit_ts + horizon
            if deadline <= now:
                rec.lost = True
                n = rec.length
                self.lost_bytes += n
                newly += n
            elif timeout is None or deadline < timeout:
                timeout = deadline
        return newly, timeout

    def mark_lost_from(self, start: int | None = None, limit: int | None = None) -> int:
        """Mark unSACKed records lost: all (after an RTO, RFC 6675 5.1), or the first
        ``limit`` bytes from ``start`` (NewReno's retransmission of the next hole)."""
        newly = 0
        for rec in self.recs:
            if start is not None and seq_lt(rec.start, start):
                continue
            if limit is not None and newly >= limit:
                break
            if rec.sacked or rec.lost:
                continue
            rec.lost = True
            n = rec.length
            self.lost_bytes += n
            newly += n
        return newly

    def first_lost(self) -> Sent | None:
        for rec in self.recs:
            if rec.lost:
                return rec
        return None

    def last_unsacked(self) -> Sent | None:
        for rec in reversed(self.recs):
            if not rec.sacked:
                return rec
        return None


class _Released(Scoreboard):
    """The scoreboard of a connection that sends nothing more (TIME-WAIT): empty and
    immutable, so every such connection shares :data:`RELEASED`."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a released scoreboard is immutable")

    def on_send(self, start: int, end: int, now: float) -> None:
        raise RuntimeError("nothing is sent after the connection released its scoreboard")

    def clear(self) -> None:
        """Nothing to clear: it is empty and stays so."""


def _released() -> Scoreboard:
    sb = object.__new__(_Released)
    fresh = Scoreboard()
    for name in Scoreboard.__slots__:
        object.__setattr__(sb, name, getattr(fresh, name))
    object.__setattr__(sb, "recs", [])
    return sb


#: The shared, immutable, empty scoreboard of connections in TIME-WAIT.
RELEASED: Scoreboard = _released()
