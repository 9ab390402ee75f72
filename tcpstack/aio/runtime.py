"""Run a :class:`~tcpstack.stack.Stack` on an asyncio event loop.

The runtime holds no protocol logic. Per wake-up it reads every packet the device
has (until EAGAIN), feeds them to the stack with one timestamp, runs due timers,
hands connection events to their owners, and writes all resulting packets. A read
that mixes bare SYNs with other packets is fed in two passes with a flush between
(:meth:`~tcpstack.stack.Stack.receive_batch`, then ``receive_rest``): under a SYN
flood, a connection's reply is written before the read's SYNs are answered.

Time: the stack is given :func:`time.monotonic` (microseconds), not uvloop's
``loop.time()``, which is libuv's clock truncated to milliseconds; both count
from the same origin, so the stack's deadlines serve as ``call_at`` times. The
clock is read again when output is built: a batch of ACKs may take milliseconds
to process (longer if the process is preempted), and segments stamped with the
batch's arrival time would make RACK and the probe timer count that time as
network delay. A timer wake-up first reads whatever the device holds: after the
process was descheduled, the ACKs that arrived meanwhile must be seen before a
retransmission or probe timeout is judged to have expired. One
``loop.call_at`` handle serves the whole stack; it is re-armed only when the
stack's deadline moves earlier (a late wake-up is harmless: the stack re-checks).
Application calls (write, read, close) only mark connections dirty; a single
``call_soon`` flush per loop iteration gathers their output.

What the runtime needs from a device, and how it reports a device's failure, is in
:mod:`tcpstack.aio.devices` (kept in Python: the runtime itself is compiled with
the engine, and mypyc builds typing protocols poorly).

A device may hold packets itself (a :class:`TimedDevice`, such as
:class:`tcpstack.link.impair.ImpairedDevice` delaying them): the single timer is
then armed for the earlier of the stack's and the device's deadlines, and every
wake-up first polls the device, feeding the inbound packets it releases to the
stack.

Device trouble, decided here once:

* **The device went away** (a TUN interface deleted under us: reads and writes
  fail with ``EBADFD``, the descriptor polls ``EPOLLERR``), or it reported end
  of file: the runtime stops driving it at once (no busy loop on a descriptor
  that is always "readable") and reports a :class:`DeviceError` to its owner
  (``on_fatal``; without one it logs the error once). Whatever the stack still
  sends afterwards is counted as ``device_write_gone``. Other read errors are
  counted (``device_read_error``) and reading goes on.
* **The device refused a write for now** (``ENOBUFS``, ``EAGAIN``): the refused
  packets are copied and retried a bounded number of times
  (:data:`WRITE_RETRY_DELAYS`) with later output queued behind them, so order
  is kept; what still does not go out is dropped and counted by reason
  (``device_write_enobufs``, ``device_write_eagain``, or ``device_write_short``
  for a device that did not say why). Written retries count as
  ``device_write_retried``.
* **The device rejected one packet** (any other error, e.g. ``EIO`` while the
  link is down, ``EINVAL``): that packet alone is dropped and counted as
  ``device_write_<errno name>``; the rest of the batch is still written.

Every drop is also added to ``device_write_dropped``: a RST or SYN-ACK is never
lost without a count (TCP retransmits data and SYN-ACKs; a lost RST is answered
again when the peer retransmits).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from tcpstack.aio.devices import (
    DeviceError,
    FatalHandler,
    PacketDevice,
    StallReporting,
    TimedDevice,
)
from tcpstack.stack import Stack
from tcpstack.tcp.events import Event
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import OutPacket

log = logging.getLogger("tcpstack.runtime")

READ_BUFSIZE = 65536 + 64  # a 64 KiB IP packet plus a virtio-net header
MAX_FLUSH_ROUNDS = 8  # event handlers may cause more output; bound the re-flush loop

FATAL_ERRNOS: Final = frozenset({errno.EBADFD, errno.EBADF, errno.ENODEV, errno.ENXIO})
"""Errors meaning the device is gone for good, on reads and writes alike."""

FATAL_READ_ERRNOS: Final = FATAL_ERRNOS | {errno.EIO}
"""A TUN read never fails with EIO while its interface exists; a write does, while
the link is down, which is not fatal (the administrator may bring it up again)."""

STALL_ERRNOS: Final = frozenset({errno.ENOBUFS, errno.EAGAIN})
"""Errors meaning "no room right now": worth a retry."""

WRITE_RETRY_DELAYS: tuple[float, ...] = (0.0, 0.001, 0.01)
"""Seconds before each retry of refused packets (the first on the next loop pass)."""

MAX_HELD_PACKETS: Final = 4096
"""Most packets kept for a retry; beyond it new output is dropped (and counted)."""


EventHandler = Callable[[Tcb, list[Event]], None]


def _stack_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """The clock the stack runs on: :func:`time.monotonic` when the loop's own clock
    is that one (asyncio's; uvloop's, truncated to milliseconds), else the loop's
    (a test loop with virtual time)."""
    if abs(loop.time() - time.monotonic()) < 1.0:
        return time.monotonic
    return loop.time


class StackRuntime:
    """Owns the device's reader callback and the stack's single timer.

    ``on_fatal`` (also settable later as the attribute) is called once with a
    :class:`DeviceError` when the device fails for good; the runtime has then
    stopped driving it, and :attr:`error` holds the error.
    """

    def __init__(
        self,
        stack: Stack,
        device: PacketDevice,
        on_events: EventHandler,
        loop: asyncio.AbstractEventLoop | None = None,
        batch: int = 256,
        *,
        on_fatal: FatalHandler | None = None,
    ) -> None:
        self.stack = stack
        self.device = device
        self.loop = loop or asyncio.get_running_loop()
        self.on_fatal = on_fatal
        self.error: DeviceError | None = None
        self._on_events = on_events
        self._batch = batch
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._flush_scheduled = False
        self._running = False
        self._timed: TimedDevice | None = device if isinstance(device, TimedDevice) else None
        # Packets the device refused for now (copies), and how often they were tried.
        self._held: deque[bytearray] = deque()
        self._held_reason = "short"
        self._held_tries = 0
        self._retry: asyncio.TimerHandle | None = None
        self.clock = _stack_clock(self.loop)

    def start(self) -> None:
        self._running = True
        self.loop.add_reader(self.device.fileno(), self._on_readable)
        self._rearm()

    def stop(self) -> None:
        """Stop driving the device; held packets get one last write attempt."""
        if not self._running:
            return
        self._running = False
        self.loop.remove_reader(self.device.fileno())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_when = None
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._held and self.error is None:
            held = list(self._held)
            self._held.clear()
            written = self._write(held)
            self._count_drop(self._held_reason, len(held) - written)

    @property
    def failed(self) -> bool:
        """True once the device has failed for good (see :attr:`error`)."""
        return self.error is not None

    def _fail(self, error: DeviceError) -> None:
        """The device is gone: stop driving it and tell the owner, once."""
        if self.error is not None:
            return
        self.error = error
        self.stack.counters["device_failed"] += 1
        self._drop_held(self._held_reason)
        self.stop()
        if self.on_fatal is None:
            log.error("device %s", error)
        else:
            self.on_fatal(error)

    # --------------------------------------------------------------- drivers

    def _read(self) -> bool:
        """Read what the device holds now into the stack; False if it failed for good."""
        try:
            packets = self.device.read_batch(self._batch, READ_BUFSIZE)
        except EOFError:
            self._fail(DeviceError("read", None, "end of file"))
            return False
        except OSError as e:
            if e.errno in FATAL_READ_ERRNOS:
                self._fail(DeviceError("read", e.errno, e.strerror or str(e)))
                return False
            log.warning("device read failed: %s", e)
            self.stack.counters["device_read_error"] += 1
            return True
        if packets:
            stack = self.stack
            syns = stack.receive_batch(packets, self.clock())
            if syns:  # the connections' replies go out before the read's SYNs are answered
                self._process()
                stack.receive_rest(syns, self.clock())
        return True

    def _on_readable(self) -> None:
        if self._read():
            self._process()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        # Packets that arrived while the process was not running come first: the
        # ACK that would cancel a probe or a retransmission may be among them.
        if not self._read():
            return
        now = self.clock()
        self._poll_device(now)
        self.stack.handle_timer(now)
        self._process()

    def kick(self) -> None:
        """Schedule one flush for this loop iteration (after application calls)."""
        if not self._flush_scheduled and self._running:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        self._process()

    def flush_now(self) -> None:
        """Flush immediately (used at shutdown)."""
        self._process()

    # --------------------------------------------------------------- work

    def _poll_device(self, now: float) -> None:
        """Let a :class:`TimedDevice` release what it held; feed the inbound part."""
        if self._timed is None:
            return
        try:
            packets = self._timed.poll()
        except OSError as e:
            log.error("device poll failed: %s", e)
            self.stack.counters["device_write_error"] += 1
            return
        receive = self.stack.receive
        for pkt in packets:
            receive(pkt, now)

    def _process(self) -> None:
        stack = self.stack
        clock = self.clock
        self._poll_device(clock())
        for _ in range(MAX_FLUSH_ROUNDS):
            packets = stack.packets_to_send(clock())
            if packets:
                self._send(packets)
                # Release views into send buffers before applications write again.
                del packets
            notified = stack.take_notified()
            if not notified:
                break
            for tcb in notified:
                events = tcb.take_events()
                if events:
                    try:
                        self._on_events(tcb, events)
                    except Exception:
                        stack.counters["internal_error"] += 1
                        log.exception("error while delivering connection events")
            if not stack.has_pending_output():
                break
        self._rearm()

    # --------------------------------------------------------------- writing

    def _send(self, packets: Sequence[OutPacket]) -> None:
        """Write ``packets``; keep copies of those refused for now; count every loss."""
        if self.error is not None:
            self._count_drop("gone", len(packets))
            return
        if self._held:
            self._hold(packets)  # keep the order: behind what is waiting
            return
        start = self._write(packets)
        if start < len(packets):
            self._hold(packets[start:])

    def _write(self, packets: Sequence[OutPacket]) -> int:
        """Write as many of ``packets`` as the device takes now; return how many went
        out or were dropped (the rest were refused for now)."""
        done = 0
        while done < len(packets):
            batch = packets[done:] if done else packets
            try:
                written = self.device.write_batch(batch)
            except OSError as e:
                written = int(getattr(e, "written", 0))
                if e.errno in STALL_ERRNOS:  # raised rather than reported: the same
                    done += written
                    self._held_reason = errno.errorcode[e.errno].lower()
                    break
                if e.errno in FATAL_ERRNOS:
                    self._count_drop("gone", len(batch) - written)
                    self._fail(DeviceError("write", e.errno, e.strerror or str(e)))
                    return len(packets)
                # This one packet was rejected: drop it alone and go on.
                self._count_drop(errno.errorcode.get(e.errno or 0, "error").lower(), 1)
                done += written + 1
                continue
            done += written
            if written < len(batch):
                code = self.device.last_write_errno \
                    if isinstance(self.device, StallReporting) else None
                self._held_reason = errno.errorcode[code].lower() \
                    if code in STALL_ERRNOS and code is not None else "short"
                break
        return done

    def _hold(self, packets: Sequence[OutPacket]) -> None:
        """Keep copies of ``packets`` for a retry (they may be views into send buffers)."""
        room = MAX_HELD_PACKETS - len(self._held)
        for pkt in packets[:room]:
            self._held.append(bytearray().join(pkt) if isinstance(pkt, tuple) else bytearray(pkt))
        if len(packets) > room:
            self._count_drop(self._held_reason, len(packets) - room)
        if not self._running:  # stopped: no retry will come
            self._drop_held(self._held_reason)
            return
        if self._held and self._retry is None:
            delay = WRITE_RETRY_DELAYS[min(self._held_tries, len(WRITE_RETRY_DELAYS) - 1)]
            self._retry = self.loop.call_later(delay, self._retry_held)

    def _retry_held(self) -> None:
        """Try the held packets again; after the last retry, drop and count the rest."""
        self._retry = None
        if not self._held or self.error is not None:
            return
        self._held_tries += 1
        held = list(self._held)
        self._held.clear()
        counters = self.stack.counters
        dropped_before = counters["device_write_dropped"]
        done = self._write(held)
        if self.failed:
            return
        counters["device_write_retried"] += done - (counters["device_write_dropped"]
                                                    - dropped_before)
        rest = held[done:]
        if not rest:
            self._held_tries = 0
        elif self._held_tries >= len(WRITE_RETRY_DELAYS):
            self._held_tries = 0
            self._count_drop(self._held_reason, len(rest))
        else:
            self._hold(rest)

    def _drop_held(self, reason: str) -> None:
        if self._held:
            self._count_drop(reason, len(self._held))
            self._held.clear()

    def _count_drop(self, reason: str, n: int) -> None:
        if n > 0:
            counters = self.stack.counters
            counters[f"device_write_{reason}"] += n
            counters["device_write_dropped"] += n

    def _rearm(self) -> None:
        if not self._running:
            return
        deadline = self.stack.next_deadline()
        if self._timed is not None:
            held = self._timed.next_deadline()
            if held is not None and (deadline is None or held < deadline):
                deadline = held
        if deadline is None:
            return
        if self._timer is not None and self._timer_when is not None \
                and self._timer_when <= deadline:
            return  # the armed timer fires no later than needed
        if self._timer is not None:
            self._timer.cancel()
        self._timer_when = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)
