"""The TCP connection states of RFC 9293 3.3.2."""

from __future__ import annotations

import enum


class State(enum.Enum):
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"

    def __str__(self) -> str:
        return self.value


# States in which the application may still queue data for sending.
CAN_SEND = frozenset({State.SYN_SENT, State.SYN_RECEIVED, State.ESTABLISHED, State.CLOSE_WAIT})

# States in which received segment text is delivered (RFC 9293 3.10.7.4, seventh step).
RECEIVES_TEXT = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2})

# What a local CLOSE (shutdown of the sending direction) does in each state
# (RFC 9293 3.10.4). States not listed have nothing left to close.
CLOSE_TRANSITIONS: dict[State, State] = {
    State.SYN_RECEIVED: State.FIN_WAIT_1,
    State.ESTABLISHED: State.FIN_WAIT_1,
    State.CLOSE_WAIT: State.LAST_ACK,
}

# What the acknowledgment of our FIN does (RFC 9293 3.10.7.4, fifth step).
FIN_ACKED_TRANSITIONS: dict[State, State] = {
    State.FIN_WAIT_1: State.FIN_WAIT_2,
    State.CLOSING: State.TIME_WAIT,
    State.LAST_ACK: State.CLOSED,
}

# What the peer's FIN does (RFC 9293 3.10.7.4, eighth step), before our FIN is acked.
FIN_RECEIVED_TRANSITIONS: dict[State, State] = {
    State.SYN_RECEIVED: State.CLOSE_WAIT,
    State.ESTABLISHED: State.CLOSE_WAIT,
    State.FIN_WAIT_1: State.CLOSING,
    State.FIN_WAIT_2: State.TIME_WAIT,
}
