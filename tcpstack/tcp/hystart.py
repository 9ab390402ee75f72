"""HyStart++ (RFC 9406): leave the initial slow start when the RTT starts to climb.

Standard slow start doubles the window every round trip until a loss, which on a
path with a queue means overflowing it: a burst of losses and a long recovery.
HyStart++ watches the minimum RTT of each round (RFC 9406 4.2): once it rises by
more than a threshold over the previous round's, the queue is building, and the
sender moves to *Conservative Slow Start* (CSS), growing a quarter as fast; if
the RTT falls back below the baseline the rise was noise and slow start resumes,
and after :data:`CSS_ROUNDS` rounds of CSS the sender settles into congestion
avoidance with ``ssthresh = cwnd``. It applies only to the initial slow start
(RFC 9406 4.2: later ones have an ssthresh to stop at); a loss ends it as it ends
any slow start.

This object keeps the per-round state; the congestion controller asks it how much
a slow-start ACK may grow the window and tells it RTT samples and round ends.
A *round* ends when the ACK reaches ``window_end``, the SND.NXT of the moment the
round began (RFC 9406 4.2).
"""

from __future__ import annotations

from typing import Final

from tcpstack.tcp.seq import seq_ge

# RFC 9406 4.3: the recommended constants.
MIN_RTT_THRESH: Final = 0.004  # seconds
MAX_RTT_THRESH: Final = 0.016  # seconds
MIN_RTT_DIVISOR: Final = 8
N_RTT_SAMPLE: Final = 8
CSS_GROWTH_DIVISOR: Final = 4
CSS_ROUNDS: Final = 5

INF: Final = float("inf")

SLOW_START: Final = "slow start"
CSS: Final = "conservative slow start"
DONE: Final = "done"


class HyStart:
    """The state of RFC 9406 4.2 for one connection's initial slow start."""

    __slots__ = ("css_baseline", "css_rounds", "current_min", "exit_rtt", "last_min", "phase",
                 "samples", "window_end")

    def __init__(self) -> None:
        self.phase = SLOW_START
        self.window_end: int | None = None
        self.last_min = INF  # lastRoundMinRTT
        self.current_min = INF  # currentRoundMinRTT
        self.samples = 0  # rttSampleCount
        self.css_baseline = INF  # cssBaselineMinRtt
        self.css_rounds = 0
        #: The round's minimum RTT that made it leave slow start (for the connection
        #: table), or None while it has not.
        self.exit_rtt: float | None = None

    def on_ack(self, ack: int, snd_nxt: int) -> bool:
        """An ACK moved SND.UNA to ``ack`` while SND.NXT is ``snd_nxt``. Returns True
        when this ends the last round of CSS: the caller then enters congestion
        avoidance with ``ssthresh = cwnd`` (RFC 9406 4.2)."""
        if self.phase == DONE:
            return False
        if self.window_end is not None and not seq_ge(ack, self.window_end):
            return False
        # A round starts (RFC 9406 4.2, "at the start of each round").
        self.window_end = snd_nxt
        self.last_min = self.current_min
        self.current_min = INF
        self.samples = 0
        if self.phase == CSS:
            self.css_rounds += 1
            if self.css_rounds >= CSS_ROUNDS:
                self.phase = DONE
                return True
        return False

    def on_rtt(self, rtt: float) -> None:
        """An RTT sample from this ACK: track the round's minimum and decide on the
        delay increase (RFC 9406 4.2)."""
        if self.phase == DONE:
            return
        if rtt < self.current_min:
            self.current_min = rtt
        self.samples += 1
        if self.samples < N_RTT_SAMPLE or self.last_min == INF:
            return
        if self.phase == SLOW_START:
            thresh = max(MIN_RTT_THRESH, min(self.last_min / MIN_RTT_DIVISOR, MAX_RTT_THRESH))
            if self.current_min >= self.last_min + thresh:
                self.css_baseline = self.current_min
                self.exit_rtt = self.current_min
                self.phase = CSS
                self.css_rounds = 0
        elif self.current_min < self.css_baseline:
            # The increase was spurious: back to slow start.
            self.css_baseline = INF
            self.phase = SLOW_START

    def growth(self, increase: int) -> int:
        """What a slow-start ACK that would grow the window by ``increase`` bytes
        grows it by now: all of it in slow start, a quarter in CSS."""
        if self.phase == CSS:
            return increase // CSS_GROWTH_DIVISOR
        return increase

    def stop(self) -> None:
        """A loss or a timeout: slow start is over for good (RFC 9406 4.2)."""
        self.phase = DONE


__all__ = ["CSS", "CSS_GROWTH_DIVISOR", "CSS_ROUNDS", "DONE", "MAX_RTT_THRESH",
           "MIN_RTT_DIVISOR", "MIN_RTT_THRESH", "N_RTT_SAMPLE", "SLOW_START", "HyStart"]
