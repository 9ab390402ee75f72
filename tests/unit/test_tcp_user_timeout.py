"""The user timeout (RFC 9293 3.10.8, RFC 5482; Linux TCP_USER_TIMEOUT): data that makes
no progress for ``cfg.user_timeout`` seconds ends the connection, whatever keeps it
alive meanwhile -- a zero window held while probes are answered, or a window opened
a byte at a time. Answered zero-window probes alone never end it sooner (RFC 1122
4.2.2.17); ending it for lack of progress is the resource policy RFC 6429 allows."""

from __future__ import annotations

from tcp_helpers import base_config, expect, peer, tcb_established

from tcpstack.tcp import events as ev
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb

UT = 60.0


def _sender(user_timeout: float = UT) -> Tcb:
    tcb = tcb_established(base_config(user_timeout=user_timeout, rto_max=10.0), window=1000)
    tcb.send(b"p" * 20_000)
    expect(tcb, 0.2)
    return tcb


def _run(tcb: Tcb, until: float, answer: int) -> float:
    """Let timers fire until ``until``; the peer answers each probe with a window of
    ``answer`` bytes, acknowledging what arrived. Returns the time it stopped."""
    now = 0.3
    expect(tcb, now)  # the flush after the last segment arms the timers
    while tcb.state is not State.CLOSED:
        deadline = tcb.next_deadline()
        if deadline is None or deadline > until:
            break
        now = deadline
        tcb.handle_timer(now)
        sent = expect(tcb, now)
        if sent:
            ack = max(s.seq + len(s.payload) for s in sent)
            ack = max(ack, tcb.snd_una) if answer else tcb.snd_una
            tcb.receive(peer(tcb, ack=ack, window=answer), now + 0.01)
            expect(tcb, now + 0.01)
    return now


def test_zero_window_held_with_probes_answered_ends_at_the_user_timeout() -> None:
    tcb = _sender()
    tcb.receive(peer(tcb, window=0), 0.3)
    _run(tcb, 0.9 * UT, answer=0)
    assert tcb.state is State.ESTABLISHED  # answered probes keep it open meanwhile
    _run(tcb, 3 * UT, answer=0)
    assert tcb.state is State.CLOSED
    assert ev.Terminated("timeout") in tcb.take_events()
    assert tcb.counters["tcp_user_timeout"] == 1


def test_window_opened_a_byte_at_a_time_is_no_progress() -> None:
    """A reader that opens its window one byte at a time does not reset the clock:
    progress is a full segment acknowledged (or everything)."""
    tcb = _sender()
    tcb.receive(peer(tcb, window=1), 0.3)
    _run(tcb, 3 * UT, answer=1)
    assert tcb.state is State.CLOSED
    assert tcb.counters["tcp_user_timeout"] == 1
    assert tcb.snd_una > tcb.iss + 1000  # it did trickle: bytes were acknowledged


def test_slow_but_real_progress_never_times_out() -> None:
    """A full segment acknowledged every half user timeout is progress: the reader
    opens its window by one segment at a time, slowly, and reads it."""
    tcb = _sender()
    tcb.receive(peer(tcb, window=0), 0.3)
    expect(tcb, 0.3)
    now = 0.3
    for _ in range(8):
        now += UT / 2
        tcb.receive(peer(tcb, window=1460), now)
        sent = expect(tcb, now)
        assert sum(len(s.payload) for s in sent) == 1460
        tcb.receive(peer(tcb, window=0), now + 0.01)  # acknowledged; the window closes
        expect(tcb, now + 0.01)
        assert tcb.state is State.ESTABLISHED
    assert tcb.counters["tcp_user_timeout"] == 0


def test_idle_connection_has_no_user_timeout_clock() -> None:
    tcb = tcb_established(base_config(user_timeout=UT))
    assert tcb.stall_since is None and tcb.next_deadline() is None
    tcb.send(b"x")
    expect(tcb, 100.0)
    tcb.receive(peer(tcb), 100.1)
    assert tcb.stall_since is None  # all acknowledged: the clock stops


def test_user_timeout_zero_disables_it() -> None:
    tcb = _sender(user_timeout=0)
    tcb.receive(peer(tcb, window=0), 0.3)
    _run(tcb, 20 * UT, answer=0)
    assert tcb.state is State.ESTABLISHED
