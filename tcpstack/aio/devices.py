"""The device side of :mod:`tcpstack.aio.runtime`: what the runtime needs from a
packet device (a TUN, a fault injector, a test double), and how it reports that a
device failed for good.

Kept in plain Python while the runtime is compiled: these are typing protocols
(checked with ``isinstance`` at run time) and an exception, which mypyc builds
poorly; nothing here runs per packet.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from tcpstack.wire.tcp import OutPacket

__all__ = ["DeviceError", "FatalHandler", "PacketDevice", "StallReporting", "TimedDevice"]


class PacketDevice(Protocol):
    """What the runtime needs from a device (a TUN, or a test double).

    ``read_batch`` returns the packets queued now (``[]`` if none); it raises
    :class:`OSError` on failure and :class:`EOFError` at end of file.
    ``write_batch`` writes packets in order until one is not taken and returns
    how many were written; a device that can tell why it stopped sets
    ``last_write_errno`` (see :class:`StallReporting`). When it raises
    :class:`OSError` instead, the exception's ``written`` attribute, if
    present, says how many packets went out before the failing one.
    """

    def fileno(self) -> int: ...

    def read_batch(self, max_packets: int = ..., bufsize: int = ...) -> list[bytes]: ...

    def write_batch(self, packets: Iterable[OutPacket]) -> int: ...


@runtime_checkable
class StallReporting(Protocol):
    """A device that says why its last ``write_batch`` stopped short.

    ``last_write_errno`` is ``ENOBUFS`` or ``EAGAIN`` after a short write, None
    after a complete one.
    """

    last_write_errno: int | None


class DeviceError(Exception):
    """The device failed for good: ``operation`` ("read" or "write") and ``errno``
    (None for end of file) say how."""

    def __init__(self, operation: str, code: int | None, detail: str) -> None:
        what = errno.errorcode.get(code, str(code)) if code is not None else "EOF"
        super().__init__(f"{operation} failed: {what} ({detail})")
        self.operation = operation
        self.errno = code


FatalHandler = Callable[[DeviceError], None]


@runtime_checkable
class TimedDevice(PacketDevice, Protocol):
    """A device that holds packets until deadlines of its own (e.g. a fault injector).

    ``poll`` sends the held outbound packets that are due and returns the held
    inbound ones that are due; ``next_deadline`` is when that next happens.
    """

    def next_deadline(self) -> float | None: ...

    def poll(self) -> list[bytes]: ...
