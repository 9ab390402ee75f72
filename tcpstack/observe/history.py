"""Bounded per-connection histories behind the dashboard's plots.

For each connection being watched, a :class:`History` keeps two ring buffers
(:class:`collections.deque` with ``maxlen``; the oldest entries fall out):

* :data:`SEGMENT_RING` segment records, ``(t, dir, seq, end, ack, window, flags,
  sack, retrans)``: every segment in and out, with the window in bytes (scaled)
  and sequence numbers relative to the sender's ISN -- what a time-sequence graph
  (Stevens, tcptrace) draws;
* :data:`SAMPLE_RING` samples of the sender's state, ``(t, cwnd, ssthresh, srtt,
  rttvar, rto, in_flight)``, taken after every arriving ACK that changed one of
  them.

A record is a tuple of small numbers, about 150 bytes with its deque slot, so a
full history is about 0.4 MB. :class:`HistoryBook` keeps histories for at most
:data:`MAX_CONNECTIONS` open connections (later ones get none until some close)
and the last :data:`KEEP_CLOSED` closed ones, so the whole is bounded by about
(MAX_CONNECTIONS + KEEP_CLOSED) x 0.4 MB in the worst case, and is small in
practice (a short HTTP connection leaves a dozen records).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Final

SEGMENT_RING: Final = 2048
SAMPLE_RING: Final = 1024
MAX_CONNECTIONS: Final = 256
KEEP_CLOSED: Final = 32

#: (t, dir, seq, end, ack, window, flags, sack blocks, retransmission)
SegmentRecord = tuple[float, str, int, int, int, int, int, tuple[tuple[int, int], ...], bool]
#: (t, cwnd, ssthresh, srtt, rttvar, rto, in_flight)
Sample = tuple[float, int, int, float | None, float, float, int]

SSTHRESH_INFINITE: Final = 1 << 30


class History:
    """One connection's rings; sequence numbers relative to each sender's ISN."""

    __slots__ = ("closed", "ident", "last_sample", "local_isn", "remote_isn", "samples",
                 "segments", "start")

    def __init__(self, ident: int, start: float, local_isn: int, remote_isn: int | None) -> None:
        self.ident = ident
        self.start = start
        self.local_isn = local_isn
        self.remote_isn = remote_isn
        self.segments: deque[SegmentRecord] = deque(maxlen=SEGMENT_RING)
        self.samples: deque[Sample] = deque(maxlen=SAMPLE_RING)
        self.last_sample: tuple[int, int, float | None, float] | None = None
        self.closed = False

    def sample(self, t: float, cwnd: int, ssthresh: int, srtt: float | None, rttvar: float,
               rto: float, in_flight: int) -> None:
        """Record the sender's state if it changed since the last sample."""
        key = (cwnd, ssthresh, srtt, rto)
        if key != self.last_sample:
            self.last_sample = key
            self.samples.append((t, cwnd, ssthresh, srtt, rttvar, rto, in_flight))

    def as_json(self) -> dict[str, Any]:
        """Everything, for the dashboard's API (times relative to the start)."""
        t0 = self.start
        return {
            "id": self.ident,
            "segments": [[round(s[0] - t0, 6), s[1], s[2], s[3], s[4], s[5], s[6],
                          [list(b) for b in s[7]], s[8]] for s in self.segments],
            "samples": [[round(s[0] - t0, 6), s[1],
                         None if s[2] >= SSTHRESH_INFINITE else s[2], s[3], s[4], s[5], s[6]]
                        for s in self.samples],
        }


class HistoryBook:
    """Histories by connection id: open ones (bounded) and the last closed ones."""

    def __init__(self) -> None:
        self.open: dict[int, History] = {}
        self.closed: OrderedDict[int, History] = OrderedDict()
        self.refused = 0

    def start(self, ident: int, now: float, local_isn: int,
              remote_isn: int | None) -> History | None:
        if len(self.open) >= MAX_CONNECTIONS:
            self.refused += 1
            return None
        h = History(ident, now, local_isn, remote_isn)
        self.open[ident] = h
        return h

    def finish(self, ident: int) -> None:
        h = self.open.pop(ident, None)
        if h is None:
            return
        h.closed = True
        self.closed[ident] = h
        while len(self.closed) > KEEP_CLOSED:
            self.closed.popitem(last=False)

    def get(self, ident: int) -> History | None:
        return self.open.get(ident) or self.closed.get(ident)


__all__ = ["KEEP_CLOSED", "MAX_CONNECTIONS", "SAMPLE_RING", "SEGMENT_RING", "History",
           "HistoryBook"]
