"""Echo (RFC 862) and discard (RFC 863) as asyncio protocols: what the daemon runs.

The stream versions (:class:`~tcpstack.apps.EchoService` called with a reader and
a writer) keep a task, its coroutine frames, a stream reader and writer per
connection -- about 4 KiB each, most of what an idle connection costs. These
protocols answer from the transport's callbacks instead, with the same limits
(:class:`~tcpstack.apps.limits.ServiceLimits`) and the same counters:

* ``idle_timeout`` -- nothing arrived for that long: close (FIN), counted as
  ``<service>_idle_timeout``;
* ``send_timeout`` -- echo only: the transport asked us to stop writing (the peer
  does not read) and did not let us resume for that long: reset, counted as
  ``echo_send_timeout``. While writing is paused, reading is paused too, so a peer
  that sends without reading is throttled by TCP flow control, as the stream
  version's ``drain()`` does;
* ``close_timeout`` -- the close (after EOF from the peer, or an idle timeout) did
  not complete for that long: reset, counted as ``<service>_close_timeout``;
* keepalive (RFC 1122 4.2.3.6) switched on through ``get_extra_info("socket")``,
  or counted as ``<service>_keepalive_unavailable``.

A connection's one deadline lives in the loop's shared guard clock
(:func:`~tcpstack.apps.limits.guard_clock`): no timer handle per connection. The
deadline moves lazily -- input only records the new one; when the clock's entry
comes due early, it is scheduled again for the current deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import ClassVar, Final, cast

from tcpstack.apps.limits import ServiceLimits, guard_clock, switch_keepalive_on

logger = logging.getLogger("tcpstack.apps")

IDLE: Final = 1  # waiting for input
SEND: Final = 2  # writing paused: waiting for the peer to read
CLOSE: Final = 3  # closing: waiting for the close to complete


class ByteServiceProtocol(asyncio.Protocol):
    """What echo and discard share: the limits, on the transport's callbacks.

    ``name`` prefixes the counters; :meth:`data_received` in the subclasses does
    the service's work."""

    __slots__ = ("__weakref__", "_deadline", "_kind", "_loop", "_timer_entry",
                 "_timer_when", "counters", "limits", "received", "transport")

    name: ClassVar[str] = "service"
    verb: ClassVar[str] = "received"  # for the log: "N bytes <verb>, peer sent EOF"

    def __init__(self, limits: ServiceLimits, counters: Counter[str]) -> None:
        self.limits = limits
        self.counters = counters
        self.transport: asyncio.Transport | None = None
        self.received = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kind = 0  # IDLE, SEND or CLOSE; 0 when nothing is bounded
        self._deadline = 0.0
        self._timer_when: float | None = None  # when our clock entry is due
        self._timer_entry = -1  # its number in the clock (-1: none)

    # -- the deadline -----------------------------------------------------------

    def _bound(self, kind: int, timeout: float | None) -> None:
        """From now on wait for ``kind`` at most ``timeout`` seconds (None: for ever)."""
        if timeout is None:
            self._kind = 0
            return
        loop = self._loop
        assert loop is not None
        self._kind = kind
        deadline = self._deadline = loop.time() + timeout
        if self._timer_when is None or self._timer_when > deadline:
            self._timer_when = deadline  # an earlier entry of ours goes stale
            self._timer_entry = guard_clock(loop).schedule(deadline, self)

    def _on_timer(self) -> None:
        """The shared clock's entry for us is due (see :class:`_GuardClock`)."""
        self._timer_when = None
        self._timer_entry = -1
        kind = self._kind
        loop = self._loop
        if not kind or loop is None:
            return
        if loop.time() < self._deadline:
            self._timer_when = self._deadline
            self._timer_entry = guard_clock(loop).schedule(self._deadline, self)
            return
        transport = self.transport
        if transport is None:
            return
        if kind == IDLE:
            self._count("idle_timeout")
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("%s %s: idle for %ss, closing", self.name, self._peer(),
                             self.limits.idle_timeout)
            self._close(transport)
        elif kind == SEND:
            self._count("send_timeout")
            self._kind = 0
            transport.abort()
        else:
            self._count("close_timeout")
            self._kind = 0
            transport.abort()

    def _count(self, reason: str) -> None:
        self.counters[f"{self.name}_{reason}"] += 1

    def _peer(self) -> object:
        transport = self.transport
        return transport.get_extra_info("peername") if transport is not None else None

    def _close(self, transport: asyncio.Transport) -> None:
        """Close (FIN after what is queued), at most ``close_timeout``; then reset."""
        self._bound(CLOSE, self.limits.close_timeout)
        transport.close()

    # -- the transport's callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses: no isinstance.)
        self.transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        keepalive = self.limits.keepalive
        if keepalive is not None and not switch_keepalive_on(
                transport.get_extra_info("socket"), keepalive):
            self._count("keepalive_unavailable")
        self._bound(IDLE, self.limits.idle_timeout)

    def _input(self, n: int) -> None:
        """``n`` bytes arrived: the idle deadline moves (lazily, see the module)."""
        self.received += n
        if self._kind == IDLE:
            timeout = self.limits.idle_timeout
            loop = self._loop
            if timeout is not None and loop is not None:
                self._deadline = loop.time() + timeout

    def eof_received(self) -> bool:
        """The peer sent FIN (RFC 862/863: it is done): close once our data is out."""
        transport = self.transport
        if transport is not None:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("%s %s: %d bytes %s, peer sent EOF", self.name, self._peer(),
                             self.received, self.verb)
            self._close(transport)
        return True  # we close it ourselves (above), bounded

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s: aborted after %d bytes: %r", self.name, self._peer(),
                         self.received, exc)
        self._kind = 0
        self._timer_when = None
        self._timer_entry = -1  # our clock entry, if any, is stale now
        self.transport = None


class EchoProtocol(ByteServiceProtocol):
    """RFC 862: every byte received goes back. When the transport asks us to stop
    writing (its buffer is full: the peer does not read) we stop reading too, for at
    most ``send_timeout``; then the connection is reset."""

    __slots__ = ()
    name = "echo"
    verb = "echoed"

    def data_received(self, data: bytes) -> None:
        self._input(len(data))
        transport = self.transport
        if transport is not None and self._kind != CLOSE:
            transport.write(data)

    def pause_writing(self) -> None:
        transport = self.transport
        if transport is None or self._kind == CLOSE:
            return
        transport.pause_reading()
        self._bound(SEND, self.limits.send_timeout)

    def resume_writing(self) -> None:
        transport = self.transport
        if transport is None or self._kind == CLOSE:
            return
        transport.resume_reading()
        self._bound(IDLE, self.limits.idle_timeout)


class DiscardProtocol(ByteServiceProtocol):
    """RFC 863: every byte received is dropped; nothing is sent."""

    __slots__ = ()
    name = "discard"
    verb = "discarded"

    def data_received(self, data: bytes) -> None:
        self._input(len(data))


__all__ = ["ByteServiceProtocol", "DiscardProtocol", "EchoProtocol"]
