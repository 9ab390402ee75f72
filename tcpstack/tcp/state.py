"""The TCP state machine as data: RFC 9293 3.3.2's states and the one transition table.

Every state change of a connection goes through :data:`TRANSITIONS`
(``state -> trigger -> next state``), looked up by
:meth:`tcpstack.tcp.control.ControlBlock.fire` (segments and timers) and
:meth:`tcpstack.tcp.control.ControlBlock.fire_app` (application calls). A pair
that is not in the table is refused and changes nothing: an application call
raises the :class:`OSError` that :func:`refusal` gives (the "error: ..."
responses of RFC 9293 3.10.1-3.10.5); a segment or timer is dropped and counted
(the engine checks before it fires, so a refused network trigger is a bug
guard, counted as ``tcp_illegal_transition``).

A self-loop (the state maps to itself) records an event the RFC handles without
a change of state, such as a SEND in ESTABLISHED or the peer's retransmitted FIN
in TIME-WAIT; listing it keeps the table a complete map of what is legal.

RFC 9293 3.10.7.4 (eighth step) also says CLOSE-WAIT, CLOSING and LAST-ACK
"remain" on a FIN; but there the peer's FIN is already in, so a FIN can only be
a duplicate, which fails the sequence check (first step) and is acknowledged
there. A FIN at RCV.NXT in those states would be a second FIN beyond the first:
it is dropped and counted, not taken (the table refuses it).

The diagram of RFC 9293 3.3.2 (Figure 5), with two choices of ours, both as Linux:

* a connection made by a listener is born in LISTEN and leaves it with the
  SYN that created it (the listener itself lives in :mod:`tcpstack.tcp.listener`);
  a RST in SYN-RECEIVED deletes it rather than returning to LISTEN;
* CLOSE (shutting down the sending direction) in SYN-SENT or SYN-RECEIVED queues
  the FIN until the handshake completes (RFC 9293 3.10.4 allows this for
  SYN-RECEIVED), so the FIN leaves from ESTABLISHED. The API's full close
  (``Tcb.close``) of a SYN-SENT connection deletes it as 3.10.4 says, through
  ABORT (no RST: nothing was synchronized).
"""

from __future__ import annotations

import enum
import errno


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

    # Members are singletons compared by identity: hash them by identity too, in C
    # (Enum's own __hash__ is Python code, slow in per-segment set and dict lookups).
    __hash__ = object.__hash__

    def __str__(self) -> str:
        return self.value


class Trigger(enum.Enum):
    """What can move a connection from one state to another."""

    # Application calls (RFC 9293 3.10.1-3.10.5).
    CONNECT = "CONNECT"  # active OPEN
    SEND = "SEND"
    CLOSE = "CLOSE"  # close the sending direction (FIN after the queued data)
    ABORT = "ABORT"
    # Segments (RFC 9293 3.10.7), after the checks that make them acceptable.
    RCV_SYN = "SYN"  # a SYN without ACK
    RCV_SYN_ACK = "SYN,ACK"  # in SYN-SENT, acknowledging our SYN
    RCV_ACK_OF_SYN = "ACK of SYN"  # in SYN-RECEIVED
    RCV_FIN = "FIN"  # the peer's FIN, in sequence
    RCV_ACK_OF_FIN = "ACK of FIN"  # our FIN newly acknowledged
    RCV_RST = "RST"  # an acceptable reset
    ICMP_HARD_ERROR = "ICMP hard error"  # before synchronization (tcpstack.tcp.path)
    # Timers.
    TIMEOUT = "timeout"  # retransmissions, probes or keepalives exhausted
    TIME_WAIT_DONE = "2MSL"  # RFC 9293 3.10.8: TIME-WAIT timeout
    FIN_WAIT_2_TIMEOUT = "FIN-WAIT-2 timeout"  # orphaned FIN-WAIT-2 (Linux tcp_fin_timeout)

    __hash__ = object.__hash__  # as for State

    def __str__(self) -> str:
        return self.value


#: The application calls among the triggers: refused with an exception, not a count.
APP_TRIGGERS = frozenset({Trigger.CONNECT, Trigger.SEND, Trigger.CLOSE, Trigger.ABORT})

_S = State
_T = Trigger

#: RFC 9293 3.3.2 / 3.10 as data. Each row lists what is legal in that state.
TRANSITIONS: dict[State, dict[Trigger, State]] = {
    _S.CLOSED: {
        _T.CONNECT: _S.SYN_SENT,  # 3.10.1
    },
    _S.LISTEN: {
        _T.RCV_SYN: _S.SYN_RECEIVED,  # 3.10.7.2 third
        _T.CLOSE: _S.CLOSED,  # 3.10.4
        _T.ABORT: _S.CLOSED,  # 3.10.5
    },
    _S.SYN_SENT: {
        _T.RCV_SYN_ACK: _S.ESTABLISHED,  # 3.10.7.3 fourth
        _T.RCV_SYN: _S.SYN_RECEIVED,  # 3.10.7.3 fourth: simultaneous open
        _T.RCV_RST: _S.CLOSED,  # 3.10.7.3 second: "connection reset" (refused)
        _T.ICMP_HARD_ERROR: _S.CLOSED,  # RFC 1122 4.2.3.9, RFC 5461: the connect fails
        _T.SEND: _S.SYN_SENT,  # 3.10.2: queued until ESTABLISHED
        _T.CLOSE: _S.SYN_SENT,  # the FIN waits for ESTABLISHED (see the module doc)
        _T.ABORT: _S.CLOSED,  # 3.10.5 (also the API's full close, 3.10.4)
        _T.TIMEOUT: _S.CLOSED,  # SYN retries exhausted
    },
    _S.SYN_RECEIVED: {
        _T.RCV_ACK_OF_SYN: _S.ESTABLISHED,  # 3.10.7.4 fifth
        _T.RCV_SYN: _S.SYN_RECEIVED,  # a retransmitted SYN: our SYN,ACK again
        _T.RCV_RST: _S.CLOSED,  # 3.10.7.4 second
        _T.ICMP_HARD_ERROR: _S.CLOSED,  # as a RST: the half-open connection is dropped
        _T.SEND: _S.SYN_RECEIVED,  # 3.10.2: queued until ESTABLISHED
        _T.CLOSE: _S.SYN_RECEIVED,  # 3.10.4: the FIN waits for ESTABLISHED
        _T.ABORT: _S.CLOSED,  # 3.10.5: RST
        _T.TIMEOUT: _S.CLOSED,  # SYN,ACK retries exhausted
    },
    _S.ESTABLISHED: {
        _T.RCV_FIN: _S.CLOSE_WAIT,  # 3.10.7.4 eighth
        _T.RCV_RST: _S.CLOSED,
        _T.SEND: _S.ESTABLISHED,
        _T.CLOSE: _S.FIN_WAIT_1,  # 3.10.4
        _T.ABORT: _S.CLOSED,
        _T.TIMEOUT: _S.CLOSED,
    },
    _S.FIN_WAIT_1: {
        _T.RCV_ACK_OF_FIN: _S.FIN_WAIT_2,  # 3.10.7.4 fifth
        _T.RCV_FIN: _S.CLOSING,  # 3.10.7.4 eighth (our FIN not yet acknowledged)
        _T.RCV_RST: _S.CLOSED,
        _T.CLOSE: _S.FIN_WAIT_1,  # 3.10.4: "ok", no second FIN
        _T.ABORT: _S.CLOSED,
        _T.TIMEOUT: _S.CLOSED,
    },
    _S.FIN_WAIT_2: {
        _T.RCV_FIN: _S.TIME_WAIT,  # 3.10.7.4 eighth
        _T.RCV_RST: _S.CLOSED,
        _T.CLOSE: _S.FIN_WAIT_2,
        _T.ABORT: _S.CLOSED,
        _T.FIN_WAIT_2_TIMEOUT: _S.CLOSED,
    },
    _S.CLOSE_WAIT: {
        _T.RCV_RST: _S.CLOSED,
        _T.SEND: _S.CLOSE_WAIT,  # 3.10.2: the other direction is still open
        _T.CLOSE: _S.LAST_ACK,  # 3.10.4
        _T.ABORT: _S.CLOSED,
        _T.TIMEOUT: _S.CLOSED,
    },
    _S.CLOSING: {
        _T.RCV_ACK_OF_FIN: _S.TIME_WAIT,  # 3.10.7.4 fifth
        _T.RCV_RST: _S.CLOSED,  # 3.10.7.4 second: close, no error
        _T.CLOSE: _S.CLOSING,
        _T.ABORT: _S.CLOSED,
        _T.TIMEOUT: _S.CLOSED,
    },
    _S.LAST_ACK: {
        _T.RCV_ACK_OF_FIN: _S.CLOSED,  # 3.10.7.4 fifth
        _T.RCV_RST: _S.CLOSED,
        _T.CLOSE: _S.LAST_ACK,
        _T.ABORT: _S.CLOSED,
        _T.TIMEOUT: _S.CLOSED,
    },
    _S.TIME_WAIT: {
        _T.RCV_FIN: _S.TIME_WAIT,  # the retransmitted FIN: ACK it, restart 2 MSL
        _T.RCV_RST: _S.TIME_WAIT,  # RFC 1337: ignored (TIME-WAIT assassination)
        _T.CLOSE: _S.TIME_WAIT,
        _T.ABORT: _S.CLOSED,  # 3.10.5: delete the TCB
        _T.TIME_WAIT_DONE: _S.CLOSED,  # 3.10.8
    },
}


def next_state(state: State, trigger: Trigger) -> State | None:
    """The state ``trigger`` leads to from ``state``, or None if it is not allowed there."""
    return TRANSITIONS[state].get(trigger)


def refusal(state: State, trigger: Trigger) -> OSError:
    """The error an application call gets where the table does not allow it
    (always a :class:`ConnectionError`, with the errno a socket would give)."""
    if state is State.CLOSED:
        # RFC 9293 3.10.2-3.10.5, CLOSED: "error: connection does not exist".
        return ConnectionError(errno.ENOTCONN, f"{trigger}: connection does not exist")
    if trigger is Trigger.CONNECT:
        return ConnectionError(errno.EISCONN, f"CONNECT: connection already exists ({state})")
    if trigger is Trigger.SEND:
        # RFC 9293 3.10.2, FIN-WAIT-* and later: "error: connection closing".
        return BrokenPipeError(errno.EPIPE, f"SEND: connection closing ({state})")
    return ConnectionError(errno.EINVAL, f"{trigger} not allowed in {state}")


# States in which the application may still queue data for sending.
CAN_SEND = frozenset(s for s, row in TRANSITIONS.items() if Trigger.SEND in row)

# States in which received segment text is delivered (RFC 9293 3.10.7.4, seventh step).
RECEIVES_TEXT = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2})

# States in which data and the FIN go out (RFC 9293 3.10.7.4 / 3.10.4).
SENDS_DATA = frozenset({State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1, State.CLOSING,
                        State.LAST_ACK})

# Synchronized states in which an ABORT sends a RST (RFC 9293 3.10.5).
ABORT_SENDS_RST = frozenset({State.SYN_RECEIVED, State.ESTABLISHED, State.FIN_WAIT_1,
                             State.FIN_WAIT_2, State.CLOSE_WAIT})
