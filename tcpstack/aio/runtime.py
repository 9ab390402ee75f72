"""Run a :class:`~tcpstack.stack.Stack` on an asyncio event loop.

The runtime holds no protocol logic. Per wake-up it reads every packet the device
has (until EAGAIN), feeds them to the stack with one timestamp, runs due timers,
hands connection events to their owners, and writes all resulting packets. One
``loop.call_at`` handle serves the whole stack; it is re-armed only when the
stack's deadline moves earlier (a late wake-up is harmless: the stack re-checks).
Application calls (write, read, close) only mark connections dirty; a single
``call_soon`` flush per loop iteration gathers their output.

A device may hold packets itself (a :class:`TimedDevice`, such as
:class:`tcpstack.link.impair.ImpairedDevice` delaying them): the single timer is
then armed for the earlier of the stack's and the device's deadlines, and every
wake-up first polls the device, feeding the inbound packets it releases to the
stack.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from tcpstack.stack import Stack
from tcpstack.tcp.events import Event
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import OutPacket

log = logging.getLogger("tcpstack.runtime")

READ_BUFSIZE = 65536 + 64  # a 64 KiB IP packet plus a virtio-net header
MAX_FLUSH_ROUNDS = 8  # event handlers may cause more output; bound the re-flush loop


class PacketDevice(Protocol):
    """What the runtime needs from a device (a TUN, or a test double)."""

    def fileno(self) -> int: ...

    def read_batch(self, max_packets: int = ..., bufsize: int = ...) -> list[bytes]: ...

    def write_batch(self, packets: Iterable[OutPacket]) -> int: ...


@runtime_checkable
class TimedDevice(PacketDevice, Protocol):
    """A device that holds packets until deadlines of its own (e.g. a fault injector).

    ``poll`` sends the held outbound packets that are due and returns the held
    inbound ones that are due; ``next_deadline`` is when that next happens.
    """

    def next_deadline(self) -> float | None: ...

    def poll(self) -> list[bytes]: ...


EventHandler = Callable[[Tcb, list[Event]], None]


class StackRuntime:
    """Owns the device's reader callback and the stack's single timer."""

    def __init__(
        self,
        stack: Stack,
        device: PacketDevice,
        on_events: EventHandler,
        loop: asyncio.AbstractEventLoop | None = None,
        batch: int = 256,
    ) -> None:
        self.stack = stack
        self.device = device
        self.loop = loop or asyncio.get_running_loop()
        self._on_events = on_events
        self._batch = batch
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._flush_scheduled = False
        self._running = False
        self._timed: TimedDevice | None = device if isinstance(device, TimedDevice) else None

    def start(self) -> None:
        self._running = True
        self.loop.add_reader(self.device.fileno(), self._on_readable)
        self._rearm()

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        self.loop.remove_reader(self.device.fileno())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_when = None

    # --------------------------------------------------------------- drivers

    def _on_readable(self) -> None:
        try:
            packets = self.device.read_batch(self._batch, READ_BUFSIZE)
        except OSError as e:
            log.error("device read failed: %s", e)
            self.stack.counters["device_read_error"] += 1
            return
        now = self.loop.time()
        self.stack.receive_batch(packets, now)
        self._process(now)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        now = self.loop.time()
        self._poll_device(now)
        self.stack.handle_timer(now)
        self._process(now)

    def kick(self) -> None:
        """Schedule one flush for this loop iteration (after application calls)."""
        if not self._flush_scheduled and self._running:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        self._process(self.loop.time())

    def flush_now(self) -> None:
        """Flush immediately (used at shutdown)."""
        self._process(self.loop.time())

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

    def _process(self, now: float) -> None:
        stack = self.stack
        self._poll_device(now)
        for _ in range(MAX_FLUSH_ROUNDS):
            packets = stack.packets_to_send(now)
            if packets:
                try:
                    written = self.device.write_batch(packets)
                except OSError as e:
                    log.error("device write failed: %s", e)
                    stack.counters["device_write_error"] += 1
                    written = 0
                if written < len(packets):
                    # TCP retransmits what was lost here; count it.
                    stack.counters["device_write_dropped"] += len(packets) - written
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
