"""Limits that keep a peer from pinning a service's connection for ever.

A TCP connection costs memory and a task for as long as it lives, and the peer
decides how long that is unless the service bounds it. The knobs, with
defaults in the spirit of nginx and Linux:

* :class:`ServiceLimits` -- for every service: how long to wait for input
  (``idle_timeout``), how long one ``drain()`` may wait for a peer that does
  not read (``send_timeout``; then the connection is reset), how long a close
  may take (``close_timeout``; then reset), and TCP keepalive settings for
  each connection (:class:`Keepalive`, RFC 1122 4.2.3.6), so that a peer that
  vanished without a FIN or RST is noticed within minutes, not hours.
* :class:`HttpLimits` -- for the HTTP service: total time to receive a
  request head (``header_timeout``, against slowloris) and a body
  (``body_timeout``), the largest body (``max_body``, RFC 9110 15.5.14: 413)
  and how many requests one connection may carry (``max_requests``).

:class:`ConnectionGuard` applies the per-connection part for a handler and
counts every limit that fires under ``<service>_<reason>`` in a
:class:`collections.Counter` the daemon logs at shutdown.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import socket
import weakref
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from itertools import count
from types import TracebackType
from typing import Final, Protocol, TypeVar, runtime_checkable

from tcpstack.apps import CLIENT_ERRORS, StreamWriterLike

_T = TypeVar("_T")

MAX_TIMEOUT: Final = 1e6
"""Largest accepted timeout in seconds (about 11.5 days); larger is a typo."""

MAX_KEEPIDLE: Final = 32767
"""Linux's ``MAX_TCP_KEEPIDLE`` and ``MAX_TCP_KEEPINTVL`` (seconds)."""

MAX_KEEPCNT: Final = 127
"""Linux's ``MAX_TCP_KEEPCNT``."""

MAX_BODY_LIMIT: Final = 1 << 40
"""Largest configurable request body limit (1 TiB)."""


def check_timeout(name: str, value: float | None) -> None:
    """Raise :class:`ValueError` unless ``value`` is None or a sane positive duration."""
    if value is None:
        return
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT):
        raise ValueError(f"{name} must be a positive number of seconds up to "
                         f"{MAX_TIMEOUT:g}, not {value!r}")


@dataclass(frozen=True, slots=True)
class Keepalive:
    """TCP keepalive for a service's connections (RFC 1122 4.2.3.6), in whole seconds.

    After ``idle`` seconds without a segment from the peer, a probe is sent
    every ``interval`` seconds; ``count`` unanswered probes end the connection.
    The defaults find a vanished peer in 60 + 6 x 10 = 120 s; Linux's own
    defaults (7200 s, 75 s, 9) would leave a dead connection pinned for over
    two hours. The bounds are Linux's (``tcp_sock_set_keepidle`` and friends).
    """

    idle: int = 60
    interval: int = 10
    count: int = 6

    def __post_init__(self) -> None:
        if not 1 <= self.idle <= MAX_KEEPIDLE:
            raise ValueError(f"keepalive idle time must be 1..{MAX_KEEPIDLE} s, not {self.idle}")
        if not 1 <= self.interval <= MAX_KEEPIDLE:
            raise ValueError(
                f"keepalive interval must be 1..{MAX_KEEPIDLE} s, not {self.interval}")
        if not 1 <= self.count <= MAX_KEEPCNT:
            raise ValueError(f"keepalive probe count must be 1..{MAX_KEEPCNT}, not {self.count}")


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """Per-connection limits shared by all services; times in seconds, None = unbounded.

    ``idle_timeout``
        Longest wait for input: for echo and discard, between any two reads;
        for HTTP, for the first byte of a request (the first one, and each
        next one on a persistent connection). The connection is then closed
        normally (FIN), with no response.
    ``send_timeout``
        Longest a single ``drain()`` may wait for the peer to make room (to
        read and acknowledge), like nginx's ``send_timeout``. The connection
        is then reset (RST): a FIN would queue behind the unread data.
    ``close_timeout``
        Longest the close may take once the service is done (the FIN
        acknowledged, or the peer gone); then the connection is reset.
    ``keepalive``
        TCP keepalive settings switched on for each connection, or None to
        leave the connection's default.
    """

    idle_timeout: float | None = 60.0
    send_timeout: float | None = 60.0
    close_timeout: float | None = 10.0
    keepalive: Keepalive | None = field(default_factory=Keepalive)

    def __post_init__(self) -> None:
        check_timeout("idle timeout", self.idle_timeout)
        check_timeout("send timeout", self.send_timeout)
        check_timeout("close timeout", self.close_timeout)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Request limits of the HTTP service; times in seconds, None = unbounded.

    ``header_timeout``
        Total time from the first byte of a request to the end of its head,
        however the bytes trickle in (a per-read timer would let a client
        sending one byte a minute hold the connection for ever). Then 408.
    ``body_timeout``
        Total time to receive the whole request body after the head. Then 408.
    ``max_body``
        Largest request body in bytes (``Content-Length`` or the sum of the
        chunks), like nginx's ``client_max_body_size``. Then 413 (RFC 9110
        15.5.14) and the connection closes.
    ``max_requests``
        Requests served on one connection; the last response says
        ``Connection: close`` (nginx's ``keepalive_requests``).
    """

    header_timeout: float | None = 60.0
    body_timeout: float | None = 60.0
    max_body: int = 1 << 20
    max_requests: int = 1000

    def __post_init__(self) -> None:
        check_timeout("header timeout", self.header_timeout)
        check_timeout("body timeout", self.body_timeout)
        if not 0 <= self.max_body <= MAX_BODY_LIMIT:
            raise ValueError(
                f"maximum body size must be 0..{MAX_BODY_LIMIT} bytes, not {self.max_body}")
        if not 1 <= self.max_requests <= 1_000_000_000:
            raise ValueError(
                f"requests per connection must be 1..1000000000, not {self.max_requests}")


@runtime_checkable
class _SocketOptions(Protocol):
    """What ``get_extra_info("socket")`` must offer to set keepalive."""

    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...


def switch_keepalive_on(sock: object, keepalive: Keepalive) -> bool:
    """Switch TCP keepalive on (RFC 1122 4.2.3.6) through ``sock``'s ``setsockopt``
    (what a transport's ``get_extra_info("socket")`` gives, on kernel sockets and on
    tcpstack connections alike). False if ``sock`` has no socket options or refuses
    them."""
    if not isinstance(sock, _SocketOptions):
        return False
    try:
        # The timing first: on some stacks switching keepalive on arms the timer
        # with whatever idle time is set at that moment.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, keepalive.idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, keepalive.interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, keepalive.count)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    except (OSError, ValueError):
        return False
    return True


class Timed(Protocol):
    """What the guard clock calls: a :class:`ConnectionGuard`, or a service protocol
    (:mod:`tcpstack.apps.protocols`) that bounds its waits itself."""

    _timer_entry: int

    def _on_timer(self) -> None: ...


class LimitExpired(Exception):
    """A :meth:`ConnectionGuard.bound` block outlasted its time limit (``kind`` says which)."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"{kind} time limit expired")
        self.kind = kind


class SendTimeout(ConnectionAbortedError):
    """A ``drain()`` outlasted ``send_timeout``; the connection has been reset."""


class IdleTimeout(Exception):
    """Nothing arrived for ``idle_timeout``; the connection should be closed."""


class _Bound:
    """The context manager :meth:`ConnectionGuard.bound` returns."""

    __slots__ = ("_guard", "_kind", "_timeout")

    def __init__(self, guard: ConnectionGuard, kind: str, timeout: float | None) -> None:
        self._guard = guard
        self._kind = kind
        self._timeout = timeout

    def __enter__(self) -> None:
        self._guard._arm(self._kind, self._timeout)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._guard._disarm(self._kind) and exc_type is asyncio.CancelledError:
            raise LimitExpired(self._kind) from None


COMPACT_MIN: Final = 1024
"""A guard clock's heap is rebuilt without its stale entries once it holds at least
this many and twice as many as after the last rebuild."""


class _GuardClock:
    """One event-loop timer for every :class:`ConnectionGuard` on a loop.

    A timer handle per connection costs about 600 bytes (the handle, its
    libuv timer under uvloop, the bound method), which for ten thousand idle
    connections is most of what an idle connection costs beyond its TCB. The
    guards' deadlines live in one heap instead, as ``(when, seq, weakref to the
    guard)``, and one ``call_at`` handle is armed for the earliest. An entry
    goes stale when its guard re-arms earlier, stops, or goes away; stale
    entries are skipped when due, and the heap is rebuilt without them once it
    has doubled since the last rebuild (amortised O(1) per entry, memory at
    most about twice the armed guards).
    """

    __slots__ = ("_floor", "_handle", "_heap", "_loop", "_seq", "_when")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, weakref.ref[Timed]]] = []
        self._seq = count()
        self._handle: asyncio.TimerHandle | None = None
        self._when = math.inf
        self._floor = COMPACT_MIN

    def schedule(self, when: float, guard: Timed) -> int:
        """Call ``guard._on_timer()`` at ``when`` unless the entry is stale by then
        (the guard's ``_timer_entry`` is no longer the number returned here)."""
        heap = self._heap
        seq = next(self._seq)
        heapq.heappush(heap, (when, seq, weakref.ref(guard)))
        if len(heap) >= self._floor:
            self._compact()
        if when < self._when:
            self._arm(when)
        return seq

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(when, self._fire)
        self._when = when

    def _compact(self) -> None:
        live = [entry for entry in self._heap if _is_live(entry)]
        heapq.heapify(live)
        self._heap = live
        self._floor = max(COMPACT_MIN, 2 * len(live))

    def _fire(self) -> None:
        self._handle = None
        self._when = math.inf
        now = self._loop.time()
        # A guard may schedule again from _on_timer (arming our timer if that is
        # earlier than what is armed): read the heap afresh each time.
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            guard = entry[2]()
            if guard is not None and guard._timer_entry == entry[1]:
                guard._on_timer()
        heap = self._heap
        if heap and heap[0][0] < self._when:
            self._arm(heap[0][0])

    @property
    def pending(self) -> int:
        """Entries held, stale ones included (for tests and introspection)."""
        return len(self._heap)


def _is_live(entry: tuple[float, int, weakref.ref[Timed]]) -> bool:
    guard = entry[2]()
    return guard is not None and guard._timer_entry == entry[1]


_CLOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _GuardClock] = \
    weakref.WeakKeyDictionary()


def guard_clock(loop: asyncio.AbstractEventLoop) -> _GuardClock:
    """The guards' shared clock of ``loop`` (made on first use, gone with the loop)."""
    clock = _CLOCKS.get(loop)
    if clock is None:
        clock = _CLOCKS[loop] = _GuardClock(loop)
    return clock


class ConnectionGuard:
    """Applies :class:`ServiceLimits` to one connection of the service ``name``.

    Create it inside the connection's handler task. Every limit that fires is
    counted in ``counters`` as ``<name>_<reason>``: ``idle_timeout``,
    ``send_timeout``, ``close_timeout``, ``keepalive_unavailable``.

    The time limits cost next to nothing while they do not fire, which matters
    because one guards every read and every ``drain()``: instead of a timer
    per wait (an ``asyncio.timeout`` is one ``call_at`` and one cancellation,
    about 10 us each time), a guard keeps one lazily moved timer, in the
    manner of the stack's own timers, and all the guards of a loop share one
    event-loop timer (:class:`_GuardClock`). A wait only records its deadline; the
    timer is re-armed only when a deadline comes earlier than the armed one,
    and when it fires early it re-arms itself for the current deadline. When
    it fires with a wait past its deadline it cancels the handler's task, and
    the wait turns that cancellation into :class:`LimitExpired`, as
    ``asyncio.timeout`` does into :class:`TimeoutError`.
    """

    __slots__ = ("__weakref__", "_cancelling", "_clock", "_deadline", "_fired", "_kind", "_loop",
                 "_task", "_timer_entry", "_timer_when", "counters", "limits", "name",
                 "writer")

    def __init__(self, name: str, writer: StreamWriterLike, limits: ServiceLimits,
                 counters: Counter[str]) -> None:
        self.name = name
        self.writer = writer
        self.limits = limits
        self.counters = counters
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a ConnectionGuard must be created inside a task")
        self._task = task
        self._clock = guard_clock(self._loop)
        self._timer_when: float | None = None  # when our clock entry is due (None: none)
        self._timer_entry = -1  # its number in the clock (-1: none)
        self._kind: str | None = None  # the bounded wait in progress
        self._deadline: float | None = None
        self._fired: str | None = None  # the wait our timer cancelled
        self._cancelling = 0

    def count(self, reason: str) -> None:
        """Count one ``<name>_<reason>`` event."""
        self.counters[f"{self.name}_{reason}"] += 1

    # -- the lazy timer ---------------------------------------------------------

    def bound(self, kind: str, timeout: float | None) -> _Bound:
        """``with guard.bound(kind, seconds):`` -- the awaits inside must finish within
        ``timeout`` seconds in all (None: no limit), else :class:`LimitExpired`.

        Bounds do not nest.
        """
        return _Bound(self, kind, timeout)

    def _arm(self, kind: str, timeout: float | None) -> None:
        if self._kind is not None:
            raise RuntimeError(f"time limit {kind!r} inside {self._kind!r}")
        self._kind = kind
        if timeout is None:
            self._deadline = None
            return
        deadline = self._loop.time() + timeout
        self._deadline = deadline
        self._cancelling = self._task.cancelling()
        if self._timer_when is None or self._timer_when > deadline:
            self._timer_when = deadline  # an earlier entry of ours goes stale
            self._timer_entry = self._clock.schedule(deadline, self)

    def _disarm(self, kind: str) -> bool:
        """End the bounded wait; True if our timer cancelled the task for it."""
        self._kind = None
        self._deadline = None
        if self._fired != kind:
            return False
        self._fired = None
        return self._task.uncancel() <= self._cancelling

    def _on_timer(self) -> None:
        self._timer_when = None
        self._timer_entry = -1
        deadline = self._deadline
        if self._kind is None or deadline is None:
            return  # nothing bounded is waiting; the next wait re-arms
        if self._loop.time() < deadline:
            self._timer_when = deadline
            self._timer_entry = self._clock.schedule(deadline, self)
            return
        self._fired = self._kind
        self._task.cancel()

    def _stop_timer(self) -> None:
        self._timer_when = None
        self._timer_entry = -1  # our clock entry, if any, is stale now

    # -- what the services call ---------------------------------------------------

    def start(self) -> None:
        """Switch TCP keepalive on for the connection (RFC 1122 4.2.3.6), if configured.

        Goes through ``get_extra_info("socket").setsockopt`` like any asyncio
        program: that works on kernel sockets and on tcpstack connections
        alike. A transport without socket options is counted, not fatal.
        """
        keepalive = self.limits.keepalive
        if keepalive is not None and not switch_keepalive_on(
                self.writer.get_extra_info("socket"), keepalive):
            self.count("keepalive_unavailable")

    async def wait_input(self, read: Awaitable[_T]) -> _T:
        """Await ``read`` (a reader call) for at most ``idle_timeout``.

        Raises :class:`IdleTimeout` (and counts it) when nothing came in time.
        """
        try:
            with self.bound("idle", self.limits.idle_timeout):
                return await read
        except LimitExpired:
            self.count("idle_timeout")
            raise IdleTimeout from None

    async def drain(self) -> None:
        """``writer.drain()`` bounded by ``send_timeout``.

        When the bound is hit the connection is reset and :class:`SendTimeout`
        (a :class:`ConnectionError`) is raised.
        """
        try:
            with self.bound("send", self.limits.send_timeout):
                await self.writer.drain()
        except LimitExpired:
            self.count("send_timeout")
            self.abort()
            raise SendTimeout("peer did not read for the send timeout; connection reset") \
                from None

    def abort(self) -> None:
        """Reset the connection at once (RST), like ``transport.abort()``."""
        try:
            self.writer.transport.abort()
        except (OSError, RuntimeError):
            pass

    async def close(self) -> None:
        """Close the writer and wait for it, at most ``close_timeout``; then reset.

        Errors from a peer that already went away are ignored. Ends the
        guard: its timer is stopped.
        """
        try:
            with self.bound("close", self.limits.close_timeout):
                self.writer.close()
                await self.writer.wait_closed()
        except LimitExpired:
            self.count("close_timeout")
            self.abort()
        except CLIENT_ERRORS:
            pass
        finally:
            self._stop_timer()
