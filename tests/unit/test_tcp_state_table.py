"""The transition table walked pair by pair (RFC 9293 3.3.2, 3.10).

For every (state, trigger) pair a real connection is put in the state and given
the trigger's real stimulus -- an application call, the segment a peer would
send, or the passage of time. Every state change the engine makes is recorded
(``ControlBlock.fire`` / ``fire_app`` are wrapped), and:

* a pair in :data:`TRANSITIONS` must fire the trigger from that state and end in
  the state the table names;
* an application call the table refuses must raise a :class:`ConnectionError`
  and change nothing;
* a segment or timer the table refuses must never fire that trigger from that
  state (and never reach the table's guard, ``tcp_illegal_transition``); a
  segment that is invalid in the state is dropped and counted by reason.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest
from tcp_helpers import (
    BASE_CONFIG,
    IRS,
    ISS,
    LOCAL,
    REMOTE,
    drain,
    peer,
    syn_from_peer,
    tcb_close_wait,
    tcb_closing,
    tcb_established,
    tcb_fin_wait_1,
    tcb_fin_wait_2,
    tcb_last_ack,
    tcb_listen_syn_received,
    tcb_syn_sent,
    tcb_time_wait,
)

from tcpstack.tcp import handshake
from tcpstack.tcp.control import ControlBlock
from tcpstack.tcp.seq import seq_add
from tcpstack.tcp.state import (
    APP_TRIGGERS,
    CAN_SEND,
    TRANSITIONS,
    State,
    Trigger,
    next_state,
)
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import ACK, FIN, RST, SYN

NOW = 1.0  # every fixture is quiescent by then

Fired = list[tuple[State, Trigger, State]]


def _closed() -> Tcb:
    tcb = tcb_established()
    tcb.abort()
    return drain(tcb, NOW)


def _listen() -> Tcb:
    # A passive connection is born in LISTEN (Tcb.passive_open) and leaves it with
    # its SYN at once; here it waits for the stimulus instead.
    tcb = Tcb(BASE_CONFIG, LOCAL, REMOTE, ISS)
    tcb.state = State.LISTEN
    return tcb


#: A connection in each state. FIN-WAIT-2 comes twice: closed by the application
#: (orphaned: its own timeout applies) or only shut down for writing.
BUILDERS: dict[State, Callable[[], Tcb]] = {
    State.CLOSED: _closed,
    State.LISTEN: _listen,
    State.SYN_SENT: tcb_syn_sent,
    State.SYN_RECEIVED: tcb_listen_syn_received,
    State.ESTABLISHED: tcb_established,
    State.FIN_WAIT_1: tcb_fin_wait_1,
    State.FIN_WAIT_2: tcb_fin_wait_2,
    State.CLOSE_WAIT: tcb_close_wait,
    State.CLOSING: tcb_closing,
    State.LAST_ACK: tcb_last_ack,
    State.TIME_WAIT: tcb_time_wait,
}

OUR_FIN_SENT = frozenset({State.FIN_WAIT_1, State.FIN_WAIT_2, State.CLOSING, State.LAST_ACK,
                          State.TIME_WAIT})
THEIR_FIN_RECEIVED = frozenset({State.CLOSE_WAIT, State.CLOSING, State.LAST_ACK,
                                State.TIME_WAIT})


def _run_timers(tcb: Tcb, limit: float = 100_000.0) -> None:
    """Let time pass with a silent peer until nothing is left to run (bounded)."""
    for _ in range(200):
        tcb.segments_to_send(NOW)
        deadline = tcb.next_deadline()
        if deadline is None or deadline > limit:
            return
        tcb.handle_timer(deadline)
    raise AssertionError("timers kept running")


def _stimulate(tcb: Tcb, trigger: Trigger) -> None:
    """Give ``tcb`` what would cause ``trigger``."""
    state = tcb.state
    if trigger is Trigger.CONNECT:
        handshake.start_active(tcb, NOW)
    elif trigger is Trigger.SEND:
        tcb.send(b"data")
    elif trigger is Trigger.CLOSE:
        tcb.shutdown_write()
    elif trigger is Trigger.ABORT:
        tcb.abort()
    elif trigger is Trigger.RCV_SYN:
        if state is State.LISTEN:
            handshake.start_passive(tcb, syn_from_peer(seq=IRS), NOW)
        else:  # in SYN-RECEIVED: the same SYN again
            tcb.receive(peer(tcb, SYN, seq=IRS, ack=0), NOW)
    elif trigger is Trigger.RCV_SYN_ACK:
        tcb.receive(peer(tcb, SYN | ACK, seq=IRS, ack=tcb.snd_nxt), NOW)
    elif trigger is Trigger.RCV_ACK_OF_SYN:
        tcb.receive(peer(tcb, ACK, ack=tcb.snd_nxt), NOW)
    elif trigger is Trigger.RCV_FIN:
        # In the states that already have the peer's FIN: the same FIN again.
        seq = seq_add(tcb.rcv_nxt, -1) if state in THEIR_FIN_RECEIVED else tcb.rcv_nxt
        tcb.receive(peer(tcb, FIN | ACK, seq=seq, ack=tcb.snd_una), NOW)
    elif trigger is Trigger.RCV_ACK_OF_FIN:
        # Where we sent no FIN, the ACK of one that would follow what we sent.
        ack = tcb.snd_nxt if state in OUR_FIN_SENT else seq_add(tcb.snd_nxt, 1)
        tcb.receive(peer(tcb, ACK, ack=ack), NOW)
    elif trigger is Trigger.RCV_RST:
        tcb.receive(peer(tcb, RST | ACK), NOW)
    elif trigger is Trigger.ICMP_HARD_ERROR:
        # A port unreachable quoting the oldest unacknowledged sequence number.
        tcb.on_icmp_error(errno.ECONNREFUSED, True, tcb.snd_una)
    elif trigger is Trigger.TIMEOUT:
        if tcb.can_send:
            tcb.send(b"data nobody acknowledges")
        _run_timers(tcb)
    elif trigger in (Trigger.TIME_WAIT_DONE, Trigger.FIN_WAIT_2_TIMEOUT):
        _run_timers(tcb)
    else:  # pragma: no cover - a new trigger needs a stimulus here
        raise AssertionError(f"no stimulus for {trigger}")


@pytest.fixture
def fired() -> Fired:
    """Every state change the engine makes, as (from, trigger, to): the tests hook
    it on the connection under test (``ControlBlock.on_transition``)."""
    return []


def _record(tcb: Tcb, log: Fired) -> None:
    def hook(_tcb: ControlBlock, before: State, trigger: Trigger, after: State) -> None:
        log.append((before, trigger, after))

    tcb.on_transition = hook


PAIRS = [(s, t) for s in State for t in Trigger]


@pytest.mark.parametrize(("state", "trigger"), PAIRS, ids=[f"{s.name}-{t.name}" for s, t in PAIRS])
def test_every_state_and_trigger_is_a_tested_transition_or_refusal(
        state: State, trigger: Trigger, fired: Fired) -> None:
    builder = BUILDERS[state]
    if trigger is Trigger.TIMEOUT and state is State.FIN_WAIT_2:
        # Half-closed: nothing is outstanding and no orphan timeout runs.
        def builder() -> Tcb:
            return tcb_fin_wait_2(half_close=True)
    tcb = builder()
    assert tcb.state is state
    _record(tcb, fired)
    expected = next_state(state, trigger)
    if expected is not None:
        _stimulate(tcb, trigger)
        assert (state, trigger, expected) in fired, fired
        assert tcb.counters["tcp_illegal_transition"] == 0
        if trigger in APP_TRIGGERS or trigger in (Trigger.RCV_RST, Trigger.RCV_ACK_OF_SYN,
                                                  Trigger.ICMP_HARD_ERROR):
            assert tcb.state is expected  # nothing else happens on the way
        return
    if trigger in APP_TRIGGERS:
        before = (tcb.snd_nxt, tcb.send_buffered, tcb.fin_queued)
        with pytest.raises(ConnectionError):
            _stimulate(tcb, trigger)
        assert tcb.state is state
        assert (tcb.snd_nxt, tcb.send_buffered, tcb.fin_queued) == before
        assert tcb.segments_to_send(NOW) == []
        return
    counted = sum(tcb.counters.values())
    _stimulate(tcb, trigger)
    assert not [f for f in fired if f[:2] == (state, trigger)], fired
    assert tcb.counters["tcp_illegal_transition"] == 0
    if trigger not in (Trigger.TIMEOUT, Trigger.TIME_WAIT_DONE, Trigger.FIN_WAIT_2_TIMEOUT) \
            and fired == [] and tcb.state is state and not _harmless(state, trigger):
        # The segment changed nothing: it was invalid here, so it must be counted.
        assert sum(tcb.counters.values()) > counted, (state, trigger)


def _harmless(state: State, trigger: Trigger) -> bool:
    """Stimuli that are ordinary, valid segments in ``state`` though they cannot
    cause ``trigger`` there: a plain ACK of everything we sent."""
    if trigger is Trigger.RCV_ACK_OF_FIN:
        return state is State.FIN_WAIT_2  # our FIN is already acknowledged
    return trigger is Trigger.RCV_ACK_OF_SYN and state not in (State.CLOSED, State.LISTEN,
                                                                State.SYN_SENT)


def test_table_lists_every_state() -> None:
    assert set(TRANSITIONS) == set(State)


def test_closed_is_left_only_by_connect_and_reached_from_every_other_state() -> None:
    assert set(TRANSITIONS[State.CLOSED]) == {Trigger.CONNECT}
    reaches_closed = {s for s, row in TRANSITIONS.items() if State.CLOSED in row.values()}
    assert reaches_closed == set(State) - {State.CLOSED}


def test_send_is_allowed_exactly_until_our_side_closes() -> None:
    """RFC 9293 3.10.2: SEND is legal until CLOSE; CAN_SEND is read off the table."""
    expected = {State.SYN_SENT, State.SYN_RECEIVED, State.ESTABLISHED, State.CLOSE_WAIT}
    assert set(CAN_SEND) == expected


def test_send_after_shutdown_raises_broken_pipe_and_changes_nothing() -> None:
    tcb = tcb_established()
    tcb.shutdown_write()
    queued = tcb.send_buffered
    with pytest.raises(BrokenPipeError):
        tcb.send(b"late")
    assert tcb.send_buffered == queued and tcb.state is State.FIN_WAIT_1


def test_close_in_syn_received_queues_the_fin_until_established() -> None:
    """RFC 9293 3.10.4: CLOSE in SYN-RECEIVED; the FIN leaves once ESTABLISHED is
    reached, which then goes straight on to FIN-WAIT-1."""
    tcb = tcb_listen_syn_received()
    tcb.shutdown_write()
    assert tcb.state is State.SYN_RECEIVED
    assert tcb.segments_to_send(NOW) == []
    tcb.receive(peer(tcb), NOW)
    assert tcb.state is State.FIN_WAIT_1
    (fin,) = tcb.segments_to_send(NOW)
    assert fin.flags & FIN
