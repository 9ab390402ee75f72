"""A connection's named deadlines, and the one that comes first.

The engine never reads a clock: each timer is the absolute time (on the owner's
clock, in seconds) at which something must happen, or None when it is off. The
owner asks :meth:`Timers.next_deadline` for the earliest and calls
``Tcb.handle_timer(now)`` when it has passed; the TCB then runs every due timer
in :data:`ORDER`.

=============  =====================================================  ===========
timer          what happens when it fires                              rule
=============  =====================================================  ===========
``time_wait``  TIME-WAIT ends: the connection is deleted               RFC 9293 3.10.8
``fin_wait``   an orphaned FIN-WAIT-2 gives up                         Linux tcp_fin_timeout
``delack``     a delayed ACK goes out                                  RFC 1122 4.2.3.2
``rack``       a suspect segment's reordering window passed            RFC 8985 6.3
``tlp``        a tail loss probe is sent                               RFC 8985 7.3
``rto``        retransmission timeout                                  RFC 6298 5
``persist``    a zero-window probe is sent                             RFC 9293 3.8.6.1
``keepalive``  an idle connection is probed                            RFC 1122 4.2.3.6
``pace``       a paced sender may send again (BBR's pacing rate)       Linux tcp_bbr
=============  =====================================================  ===========
"""

from __future__ import annotations

#: The order in which due timers run within one ``handle_timer`` call. A tail
#: loss probe due together with the RTO runs first (it re-arms the RTO).
ORDER = ("time_wait", "fin_wait", "delack", "rack", "tlp", "rto", "persist", "keepalive",
         "pace")


class Timers:
    """One connection's deadlines (None = off)."""

    __slots__ = ORDER

    def __init__(self) -> None:
        self.time_wait: float | None = None
        self.fin_wait: float | None = None
        self.delack: float | None = None
        self.rack: float | None = None
        self.tlp: float | None = None
        self.rto: float | None = None
        self.persist: float | None = None
        self.keepalive: float | None = None
        self.pace: float | None = None

    def next_deadline(self) -> float | None:
        """The earliest deadline that is set, or None."""
        best: float | None = None
        for d in (self.rto, self.persist, self.time_wait, self.fin_wait, self.delack,
                  self.rack, self.tlp, self.keepalive, self.pace):
            if d is not None and (best is None or d < best):
                best = d
        return best

    def clear(self) -> None:
        """Stop every timer (the connection is closed)."""
        self.time_wait = self.fin_wait = self.delack = self.rack = None
        self.tlp = self.rto = self.persist = self.keepalive = self.pace = None

    def stop_retransmission(self) -> None:
        """Stop what watches data in flight: RTO, tail loss probe, reordering timer
        (RFC 6298 5.2: everything sent is acknowledged)."""
        self.rto = self.tlp = self.rack = None

    def stop_for_time_wait(self) -> None:
        """In TIME-WAIT only the 2*MSL timer runs (nothing is sent or expected)."""
        self.rto = self.persist = self.fin_wait = None
        self.tlp = self.rack = self.keepalive = self.pace = None

    def __repr__(self) -> str:
        on = ", ".join(f"{name}={getattr(self, name):.6f}" for name in ORDER
                       if getattr(self, name) is not None)
        return f"Timers({on})"
