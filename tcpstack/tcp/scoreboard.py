"""The sender's record of what is in flight: SACK scoreboard and RACK loss detection.

One :class:`Sent` record per transmitted run of bytes (a segment, or a TSO
super-segment of ``seg``-sized segments), in sequence order, from SND.UNA to
SND.MAX. The scoreboard

* marks records SACKed from the peer's SACK blocks (RFC 2018, RFC 6675 4),
  splitting a super-segment that a block covers only in part -- but only at its
  segment boundaries, as Linux does (``tcp_match_skb_to_sack``): a SACK block
  never marks part of a segment, so a peer cannot split the scoreboard into
  records smaller than a segment, and the number of records stays bounded by the
  segments in flight whatever the peer sends;
* keeps ``sacked_bytes`` and ``lost_bytes`` so that RFC 6675's *pipe* is
  ``flight - sacked - lost`` in O(1);
* runs RACK (RFC 8985 6.2): a record sent before the most recently sent
  delivered record is lost once ``rack.rtt + reo_wnd`` has passed since it was
  sent; otherwise the reordering timer is armed for it. Records waiting for that
  verdict are also kept in transmission order (RFC 8985's time-ordered list, like
  Linux's tsorted queue), so each ACK looks only at those whose verdict can
  change: amortized O(1), not a scan of everything in flight;
* detects duplicate SACK blocks (RFC 2883) for spurious-retransmission handling.

Records are found by binary search over their sequence numbers.
"""

from __future__ import annotations

from bisect import bisect_right, insort

from tcpstack.tcp.rate import DeliveryRate
from tcpstack.tcp.seq import seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt

REO_WND_MIN = 0.002
"""The smallest reordering window, in seconds (see :meth:`Scoreboard.reo_wnd`)."""

class Sent:
    """A transmitted run ``[start, end)`` of ``seg``-byte segments and its delivery state
    (``seg`` 0: the run went out as one segment).

    The ``r_*`` fields (delivery rate estimation, :mod:`tcpstack.tcp.rate`) are set
    only on the scoreboards that sample rates: a loss-based sender does not pay for
    them per transmission."""

    r_delivered: int
    r_delivered_time: float
    r_first_sent: float
    r_app_limited: bool

    __slots__ = ("acked", "end", "lost", "r_app_limited", "r_delivered", "r_delivered_time",
                 "r_first_sent", "retrans", "sacked", "seg", "start", "xmit_ts")

    def __init__(self, start: int, end: int, xmit_ts: float, seg: int = 0) -> None:
        self.start = start
        self.end = end
        self.xmit_ts = xmit_ts
        self.seg = seg
        self.retrans = 0
        self.sacked = False
        self.lost = False
        self.acked = False  # cumulatively acknowledged: gone from the scoreboard

    @property
    def length(self) -> int:
        return seq_diff(self.end, self.start)

    def __repr__(self) -> str:
        flags = "".join(c for c, on in (("S", self.sacked), ("L", self.lost),
                                         ("R", self.retrans > 0)) if on)
        return f"Sent({self.start}-{self.end} t={self.xmit_ts:.4f} {flags})"


class Scoreboard:
    """Records in flight plus RACK state (RFC 8985 6.1)."""

    __slots__ = ("_anchor", "_dsack_round", "_lost_hint", "_tsorted", "_tsorted_head",
                 "dsack_seen", "frozen", "lost_bytes", "min_rtt", "rack_end", "rack_rtt",
                 "rack_xmit_ts", "rate", "recs", "reo_wnd_mult", "reo_wnd_persist",
                 "sacked_bytes")

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
        # Sequence numbers compare relative to this anchor (at or below every record).
        self._anchor = 0
        # RACK's candidates in transmission order: (xmit_ts, end, record), ordered by
        # (xmit_ts, end). Entries go stale (the record was SACKed, acknowledged,
        # marked lost or sent again) and are skipped lazily; _tsorted_head is where
        # the live ones start.
        self._tsorted: list[tuple[float, int, Sent]] = []
        self._tsorted_head = 0
        # No lost record starts below this sequence number (None: none is lost).
        self._lost_hint: int | None = None
        self.frozen = False  # the shared scoreboard of TIME-WAIT connections: no changes
        #: Delivery rate estimation, for congestion controls that use it (BBR).
        self.rate: DeliveryRate | None = None

    # ---------------------------------------------------------------- records

    def on_send(self, start: int, end: int, now: float, seg: int = 0) -> None:
        """New data ``[start, end)`` was sent for the first time, as ``seg``-byte
        segments (0: as one segment)."""
        if self.frozen:
            raise RuntimeError("nothing is sent after a connection released its scoreboard")
        if not self.recs:
            self._anchor = start
        rec = Sent(start, end, now, seg)
        if self.rate is not None:
            self.rate.on_send(rec, now, not self.recs)
        self.recs.append(rec)
        self._tsorted.append((now, end, rec))

    def on_retransmit(self, rec: Sent, now: float) -> None:
        if rec.lost:
            rec.lost = False
            self.lost_bytes -= rec.length
        rec.retrans += 1
        rec.xmit_ts = now
        if self.rate is not None:
            self.rate.on_send(rec, now, False)
        self._tsorted.append((now, rec.end, rec))

    def clear(self) -> None:
        if self.frozen:
            return  # empty, and stays so
        for rec in self.recs:
            rec.acked = True
        self.recs.clear()
        self.sacked_bytes = self.lost_bytes = 0
        self._tsorted = []
        self._tsorted_head = 0
        self._lost_hint = None

    def _rel(self, rec: Sent) -> int:
        return seq_diff(rec.start, self._anchor)

    def _tsorted_key(self, entry: tuple[float, int, Sent]) -> tuple[float, int]:
        return entry[0], seq_diff(entry[1], self._anchor)

    def _index_at(self, seq: int) -> int:
        """Index of the record containing ``seq``, or of the first one after it."""
        recs = self.recs
        i = bisect_right(recs, seq_diff(seq, self._anchor), key=self._rel)
        if i and seq_gt(recs[i - 1].end, seq):
            return i - 1
        return i

    def _split(self, i: int, at: int) -> Sent:
        """Split record ``i`` at sequence ``at`` (strictly inside it); return the tail."""
        rec = self.recs[i]
        tail = Sent(at, rec.end, rec.xmit_ts, rec.seg)
        tail.retrans, tail.sacked, tail.lost = rec.retrans, rec.sacked, rec.lost
        if self.rate is not None:
            tail.r_delivered, tail.r_delivered_time = rec.r_delivered, rec.r_delivered_time
            tail.r_first_sent, tail.r_app_limited = rec.r_first_sent, rec.r_app_limited
        rec.end = at
        self.recs.insert(i + 1, tail)
        if not (rec.sacked or rec.lost):
            # The tail awaits RACK's verdict as the head does, right after it.
            insort(self._tsorted, (tail.xmit_ts, tail.end, tail), lo=self._tsorted_head,
                   key=self._tsorted_key)
        return tail

    def head(self, rec: Sent, limit: int) -> Sent:
        """The first ``limit`` bytes of ``rec`` as a record of their own (the rest is
        split off into the next record); ``rec`` itself if it is no longer."""
        if rec.length > limit:
            self._split(self._index_at(rec.start), seq_add(rec.start, limit))
        return rec

    def tail(self, rec: Sent, limit: int) -> Sent:
        """The last ``limit`` bytes of ``rec`` as a record of their own."""
        if rec.length > limit:
            return self._split(self._index_at(rec.start), seq_add(rec.end, -limit))
        return rec

    def forget_losses(self) -> None:
        """No record is lost after all (a retransmission proved spurious, RFC 3522)."""
        live = self._tsorted[self._tsorted_head:]
        for rec in self.recs:
            if rec.lost:
                rec.lost = False
                live.append((rec.xmit_ts, rec.end, rec))
        live.sort(key=self._tsorted_key)
        self._tsorted = live
        self._tsorted_head = 0
        self.lost_bytes = 0
        self._lost_hint = None

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

    def sacked_below(self, seq: int) -> int:
        """Bytes SACKed below ``seq``: what a cumulative ACK up to it acknowledges
        again (0 at once without SACKed bytes; else a walk over those records)."""
        if not self.sacked_bytes:
            return 0
        n = 0
        for rec in self.recs:
            if not seq_lt(rec.start, seq):
                break
            if rec.sacked:
                n += seq_diff(seq, rec.start) if seq_gt(rec.end, seq) else rec.length
        return n

    def ack(self, snd_una: int, now: float, echo: float | None = None) -> int:
        """Drop records below the new cumulative ACK; return how many bytes that acked."""
        if self.frozen:
            return 0
        recs = self.recs
        rate = self.rate
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
                if rate is not None:
                    rate.on_delivered(rec, n, now)
            if rec.lost:
                self.lost_bytes -= n
            rec.acked = True
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
                if rate is not None:
                    rate.on_delivered(rec, cut, now)
            if rec.lost:
                self.lost_bytes -= cut
            rec.start = snd_una
        self._anchor = snd_una
        return acked

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
        i = self._index_at(left)
        while i < len(recs):
            rec = recs[i]
            if seq_ge(rec.start, right):
                break
            if rec.sacked:
                i += 1
                continue
            lo = left if seq_gt(left, rec.start) else rec.start
            hi = right if seq_lt(right, rec.end) else rec.end
            if lo != rec.start or hi != rec.end:
                span = _whole_segments(rec, lo, hi)
                if span is None:
                    i += 1
                    continue
                lo, hi = span
                if lo != rec.start:
                    self._split(i, lo)
                    i += 1
                    rec = recs[i]
                if hi != rec.end:
                    self._split(i, hi)
            rec.sacked = True
            n = rec.length
            newly += n
            self.sacked_bytes += n
            if rec.lost:
                rec.lost = False
                self.lost_bytes -= n
            self._delivered(rec, now, echo)
            if self.rate is not None:
                self.rate.on_delivered(rec, n, now)
            i += 1
        return newly

    # ------------------------------------------------------------------ loss

    def reo_wnd(self, srtt: float | None) -> float:
        """RFC 8985 6.2 step 4: ``reo_wnd_mult`` quarters of the minimum RTT, at most SRTT
        -- but never below :data:`REO_WND_MIN`.

        Deviation (as Linux in effect, whose RACK timer ticks in jiffies, 1-4 ms): on
        a local path min_RTT is tens of microseconds, and packets written to a TUN from
        a process the scheduler moves between CPUs reach the kernel's per-CPU queues
        out of order by about a millisecond; without a floor every such reordering
        was a spurious retransmission (seen on a clean link with larger windows)."""
        if self.min_rtt is None:
            return 0.0
        w = self.reo_wnd_mult * self.min_rtt / 4
        if srtt is not None:
            w = min(w, srtt)
        return max(w, REO_WND_MIN)

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
        Walks the candidates in transmission order and stops at the first one that
        was sent after the RACK reference or whose window has not passed: every
        later one was sent later still.
        """
        if self.rack_rtt is None:
            return 0, None
        horizon = self.rack_rtt + self.reo_wnd(srtt)
        rack_ts, rack_end = self.rack_xmit_ts, self.rack_end
        entries = self._tsorted
        head = self._tsorted_head
        newly = 0
        timeout: float | None = None
        while head < len(entries):
            ts, _end, rec = entries[head]
            if rec.xmit_ts != ts or rec.sacked or rec.lost or rec.acked:
                head += 1  # stale
                continue
            if not (ts < rack_ts or (ts == rack_ts and seq_lt(rec.end, rack_end))):
                break  # sent after the reference
            deadline = ts + horizon
            if deadline > now:
                timeout = deadline
                break
            rec.lost = True
            n = rec.length
            self.lost_bytes += n
            newly += n
            self._note_lost(rec)
            head += 1
        self._compact(head)
        return newly, timeout

    def _compact(self, head: int) -> None:
        """Forget consumed candidate entries, in bulk once they are half the list."""
        if head > 64 and head * 2 > len(self._tsorted):
            del self._tsorted[:head]
            head = 0
        self._tsorted_head = head

    def _note_lost(self, rec: Sent) -> None:
        if self.rate is not None:
            self.rate.lost += rec.length
        hint = self._lost_hint
        if hint is None or seq_lt(rec.start, hint):
            self._lost_hint = rec.start

    def mark_lost_from(self, start: int | None = None, limit: int | None = None) -> int:
        """Mark unSACKed records lost: all (after an RTO, RFC 6675 5.1), or the first
        ``limit`` bytes from ``start`` (NewReno's retransmission of the next hole)."""
        newly = 0
        recs = self.recs
        i = 0 if start is None else self._index_at(start)
        if start is not None and i < len(recs) and seq_lt(recs[i].start, start):
            i += 1  # only records that start at or after ``start``
        for rec in recs[i:]:
            if limit is not None and newly >= limit:
                break
            if rec.sacked or rec.lost:
                continue
            rec.lost = True
            n = rec.length
            self.lost_bytes += n
            newly += n
            self._note_lost(rec)
        return newly

    def mark_lost_oversized(self, limit: int) -> int:
        """Mark lost every unSACKed record that went out in segments of more than
        ``limit`` bytes: the path's MTU fell below them, so they were dropped
        (RFC 1191 6.3); returns the bytes newly marked."""
        newly = 0
        for rec in self.recs:
            if rec.sacked or rec.lost:
                continue
            seg = rec.seg
            n = rec.length
            if (seg if 0 < seg < n else n) > limit:
                rec.lost = True
                self.lost_bytes += n
                newly += n
                self._note_lost(rec)
        return newly

    def first_lost(self) -> Sent | None:
        """The lowest record marked lost (the next to retransmit, RFC 6675 NextSeg)."""
        if not self.lost_bytes or self._lost_hint is None:
            return None
        recs = self.recs
        for i in range(self._index_at(self._lost_hint), len(recs)):
            rec = recs[i]
            if rec.lost:
                self._lost_hint = rec.start
                return rec
        self._lost_hint = None
        return None

    def last_unsacked(self) -> Sent | None:
        for rec in reversed(self.recs):
            if not rec.sacked:
                return rec
        return None


def _whole_segments(rec: Sent, lo: int, hi: int) -> tuple[int, int] | None:
    """The part of ``[lo, hi)`` (inside ``rec``) that covers whole segments of it, or
    None. Linux's tcp_match_skb_to_sack: a block starting inside a segment skips
    to the next segment boundary, one ending inside a segment stops at its start;
    a record sent as one segment is SACKed only whole."""
    seg = rec.seg
    if seg <= 0 or rec.length <= seg:
        return None
    off_lo = seq_diff(lo, rec.start)
    off_hi = seq_diff(hi, rec.start)
    off_lo = -(-off_lo // seg) * seg  # round up
    if hi != rec.end:
        off_hi = off_hi // seg * seg  # round down (the last segment may be short)
    if off_lo >= off_hi:
        return None
    return seq_add(rec.start, off_lo), seq_add(rec.start, off_hi)


def _released() -> Scoreboard:
    board = Scoreboard()
    board.frozen = True
    return board


#: The shared, empty scoreboard of connections in TIME-WAIT: they send nothing
#: more, so they hold no scoreboard of their own. It refuses every change (``frozen``).
RELEASED: Scoreboard = _released()
