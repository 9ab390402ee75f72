"""Rate limits for what a stack sends unasked: challenge ACKs, out-of-window ACKs,
RSTs and ICMP errors. Sans-I/O: every call takes ``now``; randomness is injected.

* :class:`ReplyBudget` -- RFC 5961 7: a global budget of challenge ACKs per
  second. A fixed global count is a side channel (CVE-2016-5696: an off-path
  attacker counted the challenge ACKs it provoked to infer a connection's
  sequence numbers), so, as Linux since that fix, the budget of each one-second
  window is drawn at random between half and one and a half times the limit.
* :class:`TokenBucket` -- a rate with a burst, for RSTs to closed ports and ICMP
  errors (like Linux's icmp_msgs_per_sec / icmp_msgs_burst).
* :class:`MemoryPool` -- the bytes all connections of a stack hold in their
  buffers, against a limit (like Linux's tcp_mem): under pressure, windows stop
  growing, out-of-order data is not queued and new connections are refused.

The per-connection limit (at most one such reply per ``cfg.invalid_ratelimit``
seconds, Linux's tcp_invalid_ratelimit) lives with the connection; see
:func:`tcpstack.tcp.ack_policy.challenge_ack`.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import NamedTuple

from tcpstack.counters import Counters


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


class MemoryPool:
    """Bytes held in connections' buffers (send, receive, reassembly), stack-wide.

    The stack charges each connection's footprint when it flushes it
    (:meth:`charge`); ``pressure`` is true while the total exceeds ``limit``.
    """

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the memory limit must be positive")
        self.limit = limit
        self.used = 0

    @property
    def pressure(self) -> bool:
        return self.used > self.limit

    def charge(self, before: int, after: int) -> int:
        """A connection's footprint went from ``before`` to ``after``; returns ``after``."""
        self.used += after - before
        return after


#: The pool of a connection made on its own (tests): never under pressure.
UNLIMITED = 1 << 62


class Commons(NamedTuple):
    """What the connections of one stack share: the counters every drop is counted
    in, the challenge-ACK budget and the memory pool. A connection made on its own
    (in tests) gets a private set (:func:`standalone`)."""

    counters: Counter[str]
    reply_budget: ReplyBudget
    pool: MemoryPool


def standalone(challenge_ack_limit: int, seed: int) -> Commons:
    """Commons for a connection that belongs to no stack (deterministic, unlimited)."""
    return Commons(Counters(), ReplyBudget(challenge_ack_limit, random.Random(seed)),
                   MemoryPool(UNLIMITED))
