"""Connection teardown: FIN-WAIT-1/2, CLOSING, TIME-WAIT, CLOSE-WAIT, LAST-ACK, aborts
(RFC 9293 3.6, 3.10.4, 3.10.5, 3.10.7.4; RFC 1337; RFC 2525 2.17)."""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest
from tcp_helpers import (
    IRS,
    ISS,
    RTT,
    base_config,
    connected_pair,
    expect,
    expect_nothing,
    expect_one,
    peer,
    tcb_close_wait,
    tcb_closing,
    tcb_established,
    tcb_fin_wait_1,
    tcb_fin_wait_2,
    tcb_last_ack,
    tcb_time_wait,
)

from tcpstack.tcp import events as ev
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpSegment

RCV = IRS + 1
SND = ISS + 1
T_TW = 3 * RTT  # when tcb_time_wait() entered TIME-WAIT


# ------------------------------------------------------------ active close


def test_established_close_sends_fin_enters_fin_wait_1() -> None:
    """RFC 9293 3.10.4: CLOSE in ESTABLISHED -> FIN-WAIT-1, <SEQ=SND.NXT><CTL=FIN,ACK>."""
    tcb = tcb_established()
    tcb.close()
    assert tcb.state is State.FIN_WAIT_1
    expect_one(tcb, 0.3, FIN | ACK, seq=SND, ack=RCV)
    assert tcb.snd_nxt == SND + 1
    assert tcb.next_deadline() is not None  # the FIN is retransmittable


def test_established_close_fin_piggybacks_on_last_data_segment() -> None:
    """RFC 9293 3.10.4: the FIN follows all queued data; it rides on the last segment."""
    tcb = tcb_established()
    tcb.send(b"d" * 2000)
    tcb.close()
    segs = expect(tcb, 0.3, 2)
    assert [len(s.payload) for s in segs] == [1460, 540]
    assert not segs[0].flags & FIN
    assert segs[1].flags == ACK | PSH | FIN
    assert segs[1].seq == SND + 1460
    assert tcb.snd_nxt == SND + 2001


def test_fin_wait_1_fin_waits_for_window_with_data() -> None:
    """RFC 9293 3.10.4: the FIN is sent only after the data queued before CLOSE."""
    tcb = tcb_established(window=1460)
    tcb.send(b"d" * 2000)
    tcb.close()
    (seg,) = expect(tcb, 0.3, 1)
    assert not seg.flags & FIN
    tcb.receive(peer(tcb, window=1460), 0.4)
    expect_one(tcb, 0.4, ACK | PSH | FIN, seq=SND + 1460)


def test_fin_wait_1_ack_of_fin_enters_fin_wait_2() -> None:
    """RFC 9293 3.10.7.4 fifth: FIN-WAIT-1 + ACK of our FIN -> FIN-WAIT-2."""
    tcb = tcb_fin_wait_1()
    tcb.receive(peer(tcb), 0.3)
    assert tcb.state is State.FIN_WAIT_2
    assert tcb.take_events() == [ev.FinAcked()]
    expect_nothing(tcb, 0.3)


def test_fin_wait_1_ack_not_covering_fin_stays() -> None:
    """RFC 9293 3.10.7.4: only an ACK that covers the FIN moves on to FIN-WAIT-2."""
    tcb = tcb_established()
    tcb.send(b"x" * 100)
    tcb.close()
    expect(tcb, 0.3)
    tcb.receive(peer(tcb, ack=SND + 100), 0.4)
    assert tcb.state is State.FIN_WAIT_1


def test_fin_wait_1_fin_retransmitted_on_timeout() -> None:
    """RFC 9293 3.10.4 / RFC 6298 5.4: the FIN is retransmitted until acknowledged."""
    tcb = tcb_fin_wait_1()
    d = tcb.next_deadline()
    assert d is not None
    tcb.handle_timer(d)
    expect_one(tcb, d, FIN | ACK, seq=SND, ack=RCV)


def test_fin_wait_2_fin_enters_time_wait() -> None:
    """RFC 9293 3.10.7.4 eighth: FIN-WAIT-2 + FIN -> TIME-WAIT, ACK the FIN, start 2 MSL."""
    tcb = tcb_fin_wait_2(half_close=True)
    tcb.receive(peer(tcb, ACK | FIN), 1.0)
    assert tcb.state is State.TIME_WAIT
    expect_one(tcb, 1.0, ACK, seq=SND + 1, ack=RCV + 1)
    assert tcb.take_events() == [ev.EndOfStream()]
    assert tcb.next_deadline() == pytest.approx(1.0 + 2 * 30.0)


def test_time_wait_expires_after_2msl() -> None:
    """RFC 9293 3.10.7.4 / 3.6 (MUST-13): TIME-WAIT lasts 2 MSL, then CLOSED."""
    tcb = tcb_time_wait()
    tcb.handle_timer(T_TW + 2 * 30.0 - 0.001)
    assert tcb.state is State.TIME_WAIT
    tcb.handle_timer(T_TW + 2 * 30.0)
    assert tcb.state is State.CLOSED
    assert tcb.take_events() == [ev.Terminated(None)]
    expect_nothing(tcb, 100.0)


def test_time_wait_msl_configurable() -> None:
    """RFC 9293 3.4.2: MSL is an engineering choice; 2*MSL follows the setting."""
    tcb = tcb_time_wait(base_config(msl=2.5))
    assert tcb.next_deadline() == pytest.approx(T_TW + 5.0)
    tcb.handle_timer(T_TW + 5.0)
    assert tcb.state is State.CLOSED


def test_time_wait_retransmitted_fin_reacked_and_timer_restarted() -> None:
    """RFC 9293 3.10.7.4 eighth (TIME-WAIT): a retransmitted FIN is acknowledged and the
    2 MSL timeout restarted."""
    tcb = tcb_time_wait()
    tcb.receive(peer(tcb, ACK | FIN, seq=RCV), 10.0)  # the same FIN again
    expect_one(tcb, 10.0, ACK, seq=SND + 1, ack=RCV + 1)
    assert tcb.next_deadline() == pytest.approx(10.0 + 60.0)
    assert tcb.state is State.TIME_WAIT


@pytest.mark.parametrize(
    ("what", "flags", "seq_offset", "payload"),
    [
        ("data at RCV.NXT", ACK | PSH, 0, b"new"),
        ("a FIN beyond the old one", ACK | FIN, 0, b""),
        ("an old duplicate data segment", ACK | PSH, -5, b"old"),
        ("a FIN far out of the window", ACK | FIN, 1 << 20, b""),
        ("a SYN", SYN, 0, b""),
    ],
)
def test_time_wait_other_segments_do_not_extend_it(
        what: str, flags: int, seq_offset: int, payload: bytes) -> None:
    """RFC 9293 3.10.7.4: only the peer's retransmitted FIN restarts 2 MSL in TIME-WAIT
    (as Linux's tcp_timewait_state_process does). Anything else is answered with an
    ACK -- a challenge ACK for a SYN (RFC 5961 4.2) -- and counted; otherwise a peer
    could hold the connection in TIME-WAIT forever."""
    tcb = tcb_time_wait()
    deadline = tcb.next_deadline()
    dropped = sum(tcb.counters.values())
    tcb.receive(peer(tcb, flags, seq=RCV + 1 + seq_offset, payload=payload), 10.0)
    expect_one(tcb, 10.0, ACK, seq=SND + 1, ack=RCV + 1)
    assert tcb.next_deadline() == deadline, what
    assert tcb.state is State.TIME_WAIT
    assert sum(tcb.counters.values()) == dropped + 1, what


def test_time_wait_retransmitted_data_and_fin_restart_it() -> None:
    """A retransmission of the peer's last data segment with its FIN ends exactly at
    RCV.NXT: it is the retransmitted FIN (Linux: end_seq == rcv_nxt) and restarts 2 MSL."""
    tcb = tcb_time_wait()
    tcb.receive(peer(tcb, ACK | FIN, seq=RCV - 3, payload=b"end"), 10.0)
    expect_one(tcb, 10.0, ACK, seq=SND + 1, ack=RCV + 1)
    assert tcb.next_deadline() == pytest.approx(10.0 + 60.0)


def test_time_wait_rst_ignored() -> None:
    """RFC 1337 (TIME-WAIT assassination, fix TW1): ignore RST in TIME-WAIT."""
    tcb = tcb_time_wait()
    tcb.receive(peer(tcb, RST, ack=0), 5.0)
    tcb.receive(peer(tcb, RST | ACK), 5.0)
    assert tcb.state is State.TIME_WAIT
    expect_nothing(tcb, 5.0)
    assert tcb.take_events() == []
    assert tcb.counters["tcp_time_wait_rst"] == 2


def test_fin_wait_1_fin_and_ack_together_enter_time_wait() -> None:
    """RFC 9293 3.10.7.4 eighth: FIN-WAIT-1 + FIN that also ACKs our FIN -> TIME-WAIT."""
    tcb = tcb_fin_wait_1()
    tcb.receive(peer(tcb, ACK | FIN), 0.5)
    assert tcb.state is State.TIME_WAIT
    expect_one(tcb, 0.5, ACK, seq=SND + 1, ack=RCV + 1)
    assert tcb.take_events() == [ev.FinAcked(), ev.EndOfStream()]
    assert tcb.next_deadline() == pytest.approx(0.5 + 60.0)


# ---------------------------------------------------------- simultaneous close


def test_fin_wait_1_fin_enters_closing() -> None:
    """RFC 9293 3.10.7.4 eighth: FIN-WAIT-1 + FIN (ours not yet acked) -> CLOSING, ACK it."""
    tcb = tcb_fin_wait_1()
    tcb.receive(peer(tcb, ACK | FIN, ack=SND), 0.5)
    assert tcb.state is State.CLOSING
    expect_one(tcb, 0.5, ACK, seq=SND + 1, ack=RCV + 1)
    assert tcb.take_events() == [ev.EndOfStream()]


def test_closing_ack_enters_time_wait() -> None:
    """RFC 9293 3.10.7.4 fifth: CLOSING + ACK of our FIN -> TIME-WAIT."""
    tcb = tcb_closing()
    tcb.receive(peer(tcb), 1.0)
    assert tcb.state is State.TIME_WAIT
    assert tcb.take_events() == [ev.FinAcked()]
    assert tcb.next_deadline() == pytest.approx(1.0 + 60.0)


def test_simultaneous_close_two_tcbs() -> None:
    """RFC 9293 3.6 figure 13: both close at once -> CLOSING -> TIME-WAIT on both sides."""
    pair = connected_pair()
    pair.a.close()
    pair.b.close()
    seen_a: set[State] = set()
    seen_b: set[State] = set()

    def watch() -> None:
        seen_a.add(pair.a.state)
        seen_b.add(pair.b.state)

    pair.run(watch, until=lambda: pair.a.state is State.CLOSED and pair.b.state is State.CLOSED)
    for seen in (seen_a, seen_b):
        assert State.CLOSING in seen and State.TIME_WAIT in seen
    assert ev.Terminated(None) in pair.a.take_events()
    assert ev.Terminated(None) in pair.b.take_events()


# ------------------------------------------------------------- passive close


def test_established_fin_enters_close_wait() -> None:
    """RFC 9293 3.10.7.4 eighth: ESTABLISHED + FIN -> CLOSE-WAIT, ACK it, signal end."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, ACK | FIN, payload=b"bye"), 0.5)
    assert tcb.state is State.CLOSE_WAIT
    expect_one(tcb, 0.5, ACK, seq=SND, ack=RCV + 4)
    assert tcb.take_events() == [ev.DataReceived(), ev.EndOfStream()]
    assert tcb.recv() == b"bye"


def test_established_out_of_order_fin_not_processed() -> None:
    """RFC 9293 3.10.7.4 eighth: a FIN is processed only when it is the next in sequence."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, ACK | FIN, seq=RCV + 10), 0.5)
    assert tcb.state is State.ESTABLISHED
    assert tcb.rcv_nxt == RCV
    assert tcb.take_events() == []


def test_established_out_of_order_fin_draws_duplicate_ack() -> None:
    """RFC 5681 4.2: an out-of-order segment SHOULD draw an immediate duplicate ACK;
    a FIN above RCV.NXT reveals a hole just as data does (and the engine does send the
    duplicate ACK for out-of-order data)."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, ACK | FIN, seq=RCV + 10), 0.5)
    expect_one(tcb, 0.5, ACK, ack=RCV)


def test_close_wait_close_sends_fin_enters_last_ack() -> None:
    """RFC 9293 3.10.4: CLOSE in CLOSE-WAIT -> LAST-ACK, FIN sent."""
    tcb = tcb_close_wait()
    tcb.close()
    assert tcb.state is State.LAST_ACK
    expect_one(tcb, 1.0, FIN | ACK, seq=SND, ack=RCV + 1)


def test_close_wait_can_still_send() -> None:
    """RFC 9293 3.10.2: SEND is allowed in CLOSE-WAIT (half-closed by the peer)."""
    tcb = tcb_close_wait()
    tcb.send(b"late reply")
    expect_one(tcb, 1.0, ACK | PSH, seq=SND, payload=b"late reply")


def test_close_wait_data_ignored() -> None:
    """RFC 9293 3.10.7.4 seventh: text after the peer's FIN is ignored in CLOSE-WAIT."""
    tcb = tcb_close_wait()
    tcb.receive(peer(tcb, payload=b"zombie"), 1.0)
    assert tcb.recv_buffered == 0
    assert tcb.rcv_nxt == RCV + 1


def test_close_wait_retransmitted_fin_reacked() -> None:
    """RFC 9293 3.10.7.4: a retransmitted FIN (old sequence number) is acknowledged."""
    tcb = tcb_close_wait()
    tcb.receive(peer(tcb, ACK | FIN, seq=RCV), 1.0)
    expect_one(tcb, 1.0, ACK, seq=SND, ack=RCV + 1)
    assert tcb.state is State.CLOSE_WAIT
    assert tcb.take_events() == []


def test_last_ack_ack_closes() -> None:
    """RFC 9293 3.10.7.4 fifth: LAST-ACK + ACK of our FIN -> CLOSED."""
    tcb = tcb_last_ack()
    tcb.receive(peer(tcb), 1.0)
    assert tcb.state is State.CLOSED
    assert tcb.take_events() == [ev.FinAcked(), ev.Terminated(None)]
    expect_nothing(tcb, 1.0)
    assert tcb.next_deadline() is None


def test_last_ack_fin_retransmitted_on_timeout() -> None:
    """RFC 9293 3.10.4 / RFC 6298 5.4: LAST-ACK retransmits the FIN."""
    tcb = tcb_last_ack()
    d = tcb.next_deadline()
    assert d is not None
    tcb.handle_timer(d)
    expect_one(tcb, d, FIN | ACK, seq=SND)


def test_passive_close_full_sequence_two_tcbs() -> None:
    """RFC 9293 3.6 figure 12: A closes; B sees EndOfStream, closes; A ends in TIME-WAIT."""
    pair = connected_pair()
    pair.a.send(b"last words")
    pair.a.close()
    pair.run(until=lambda: pair.b.state is State.CLOSE_WAIT and pair.a.state is State.FIN_WAIT_2)
    assert pair.b.recv() == b"last words"
    assert ev.EndOfStream() in pair.b.take_events()
    pair.b.close()
    pair.run(until=lambda: pair.b.state is State.CLOSED)
    assert pair.a.state is State.TIME_WAIT
    assert pair.b.take_events()[-1] == ev.Terminated(None)


# ----------------------------------------------------------------- half close


def test_half_close_keeps_receiving() -> None:
    """RFC 9293 3.10.4: after CLOSE (our FIN) the connection still receives until the
    peer's FIN -- FIN-WAIT-1/2 deliver text."""
    tcb = tcb_fin_wait_1(half_close=True)
    tcb.receive(peer(tcb, ack=SND, payload=b"still "), 0.5)
    assert tcb.state is State.FIN_WAIT_1
    tcb.receive(peer(tcb, payload=b"talking"), 0.6)
    assert tcb.state is State.FIN_WAIT_2
    assert tcb.recv() == b"still talking"
    expect_one(tcb, 0.6, ACK, ack=RCV + 13)
    tcb.receive(peer(tcb, ACK | FIN), 0.7)
    assert tcb.state is State.TIME_WAIT


def test_half_closed_fin_wait_2_has_no_timeout() -> None:
    """RFC 9293 3.10.4: a half-closed (not orphaned) FIN-WAIT-2 waits for the peer's FIN."""
    tcb = tcb_fin_wait_2(half_close=True)
    assert tcb.next_deadline() is None


def test_fin_wait_2_orphan_times_out_after_fin_timeout() -> None:
    """Linux tcp_fin_timeout (RFC 9293 3.6 allows a bounded FIN-WAIT-2 for a fully closed
    connection): an orphaned FIN-WAIT-2 is deleted after fin_timeout."""
    tcb = tcb_fin_wait_2(base_config(fin_timeout=7.0))
    d = tcb.next_deadline()
    assert d == pytest.approx(2 * RTT + 7.0)
    tcb.handle_timer(d - 0.01)
    assert tcb.state is State.FIN_WAIT_2
    tcb.handle_timer(d)
    assert tcb.state is State.CLOSED
    assert tcb.take_events() == [ev.Terminated(None)]


def test_fin_wait_2_close_after_half_close_arms_fin_timeout() -> None:
    """RFC 9293 3.10.4: shutdown_write then close -- the connection becomes orphaned and
    gets the FIN-WAIT-2 timeout (Linux tcp_fin_timeout)."""
    tcb = tcb_fin_wait_2(base_config(fin_timeout=5.0), half_close=True)
    tcb.close()
    expect(tcb, 1.0)
    assert tcb.next_deadline() == pytest.approx(6.0)


# ------------------------------------------------------------------- aborts


def test_established_close_with_unread_data_sends_rst() -> None:
    """RFC 2525 2.17 / RFC 1122 4.2.2.13: closing with unread received data resets."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, payload=b"unread"), 0.3)
    expect(tcb, 0.3)
    tcb.take_events()
    tcb.close()
    assert tcb.state is State.CLOSED
    expect_one(tcb, 0.4, RST | ACK, seq=SND, ack=RCV + 6)
    assert tcb.take_events() == [ev.Terminated("aborted")]


@pytest.mark.parametrize("builder", [tcb_fin_wait_1, tcb_fin_wait_2])
def test_data_after_full_close_draws_rst(builder: Callable[[], Tcb]) -> None:
    """RFC 1122 4.2.2.13 / RFC 2525 2.17: data arriving after the application fully closed
    cannot be delivered -> RST."""
    tcb = builder()
    tcb.receive(peer(tcb, ack=tcb.snd_una, payload=b"ignored?"), 1.0)
    assert tcb.state is State.CLOSED
    seg = expect_one(tcb, 1.0, RST | ACK)
    assert seg.seq == tcb.snd_nxt
    assert tcb.take_events()[-1] == ev.Terminated("aborted")


def test_abort_sends_rst_and_terminates() -> None:
    """RFC 9293 3.10.5: ABORT in a synchronized state sends <SEQ=SND.NXT><CTL=RST>."""
    tcb = tcb_established()
    tcb.abort()
    expect_one(tcb, 0.3, RST | ACK, seq=SND, ack=RCV)
    assert tcb.take_events() == [ev.Terminated("aborted")]
    assert tcb.next_deadline() is None
    # RFC 9293 3.10.5 CLOSED: "error: connection does not exist"; nothing changes.
    with pytest.raises(ConnectionError) as exc:
        tcb.abort()
    assert exc.value.errno == errno.ENOTCONN
    assert tcb.state is State.CLOSED
    expect_nothing(tcb, 0.3)


def test_abort_in_time_wait_sends_nothing() -> None:
    """RFC 9293 3.10.5: ABORT in CLOSING, LAST-ACK, TIME-WAIT: just delete the TCB."""
    tcb = tcb_time_wait()
    tcb.abort()
    expect_nothing(tcb, 1.0)
    assert tcb.state is State.CLOSED


def test_pair_lossy_close_completes() -> None:
    """RFC 9293 3.10.4: with the first FIN lost, retransmission still closes both sides."""
    pair = connected_pair()
    lost: list[int] = []

    def lose_first_fin(src: Tcb, seg: TcpSegment) -> bool:
        if seg.flags & FIN and not lost:
            lost.append(1)
            return True
        return False

    pair.drop = lose_first_fin
    pair.a.close()
    pair.run(until=lambda: pair.b.state is State.CLOSE_WAIT)
    pair.b.close()
    pair.run(until=lambda: pair.a.state is State.CLOSED and pair.b.state is State.CLOSED)
    assert lost == [1] and pair.filtered == 1


def test_reset_with_a_delayed_ack_owed_leaves_no_timer() -> None:
    """A connection ended by the peer's RST while it owed a delayed ACK starts no
    delayed-ACK timer: nothing is owed to a connection that no longer exists."""
    tcb = tcb_established(base_config(delayed_ack=0.04))
    tcb.receive(peer(tcb, ACK, payload=b"x"), 1.0)  # one small segment: the ACK may wait
    tcb.receive(peer(tcb, RST, seq=tcb.rcv_nxt), 1.0)
    expect_nothing(tcb, 1.0)
    assert tcb.state is State.CLOSED and tcb.next_deadline() is None
