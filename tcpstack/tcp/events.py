"""Events the engine reports to the application layer. Plain, immutable values."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Established:
    """The three-way handshake completed (ESTABLISHED reached)."""


@dataclass(frozen=True, slots=True)
class DataReceived:
    """New in-order data is waiting in the receive buffer (coalesced: one per batch)."""


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The peer's FIN arrived: no more data will come after what is buffered."""


@dataclass(frozen=True, slots=True)
class WriteSpace:
    """The unacknowledged send buffer fell to or below the low-water mark."""


@dataclass(frozen=True, slots=True)
class FinAcked:
    """Our FIN was acknowledged: everything we sent has been received by the peer."""


@dataclass(frozen=True, slots=True)
class Terminated:
    """The connection is over and its TCB is gone (CLOSED).

    ``error`` is None for an orderly end, else one of ``"reset"`` (RST received),
    ``"refused"`` (RST in answer to our SYN), ``"timeout"`` (retransmissions
    exhausted), ``"unreachable"`` (a hard ICMP error ended the handshake) or
    ``"aborted"`` (closed locally with RST).

    ``errno`` (0 if none) is the error a socket would report instead of the
    reason's usual one: the hard ICMP error for ``"unreachable"``, and for
    ``"timeout"`` the last soft ICMP error if one arrived (as Linux reports
    ``EHOSTUNREACH`` rather than ``ETIMEDOUT`` then).
    """

    error: str | None = None
    errno: int = 0


Event = Established | DataReceived | EndOfStream | WriteSpace | FinAcked | Terminated

# Shared instances of the field-less events (they carry no data).
ESTABLISHED = Established()
DATA_RECEIVED = DataReceived()
END_OF_STREAM = EndOfStream()
WRITE_SPACE = WriteSpace()
FIN_ACKED = FinAcked()
