"""Rate limits for what a stack sends unasked: challenge ACKs, out-of-window ACKs,
RSTs and ICMP errors. Sans-I/O: every call takes ``now``; randomness is injected.

* :class:`ReplyBudget` -- RFC 5961 7: a global budget of challenge ACKs per
  second. A fixed global count is a side channel (CVE-2016-5696: an off-path
  attacker counted the challenge ACKs it provoked to infer a connection's
  sequence numbers), so, as Linux since that fix, the budget of each one-second
  window is drawn at random between half and one and a half times the limit.
* :class:`TokenBucket` -- a rate with a burst, for RSTs to closed ports and ICMP
  errors (like Linux's icmp_msgs_per_sec / icmp_msgs_burst).

The per-connection limit (at most one such reply per ``cfg.invalid_ratelimit``
seconds, Linux's tcp_invalid_ratelimit) lives with the connection; see
:func:`tcpstack.tcp.ack_policy.challenge_ack`.
"""

from __future__ import annotations

import random


class ReplyBudget:
    """The stack-wide budget of challenge ACKs per second, randomized per second."""

    __slots__ = ("_left", "_rng", "_window", "per_second")

    def __init__(self, per_second: int, rng: random.Random | None = None) -> None:
        if per_second < 1:
            raise ValueError("the challenge ACK budget must be at least 1 per second")
        self.per_second = per_second
        self._rng = rng or random.Random(0)
        self._window = -1
        self._left = 0

    def allow(self, now: float) -> bool:
        """Spend one reply of the current second's budget, if any is left."""
        window = int(now)
        if window != self._window:
            self._window = window
            half = self.per_second // 2
            self._left = half + self._rng.randrange(self.per_second + 1)
        if self._left <= 0:
            return False
        self._left -= 1
        return True


class TokenBucket:
    """``rate`` events per second on average, at most ``burst`` at once."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    def allow(self, now: float) -> bool:
        if self._last is not None and now > self._last:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now if self._last is None else max(self._last, now)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
