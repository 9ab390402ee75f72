"""Every segment the engine rejects is counted by a named reason (tcpstack/tcp/inbound.py).

Each case sends one bad segment to a connection in the right state and checks
the reason's counter moved by one, what the RFC says to answer (an ACK, a RST or
nothing), and that the connection kept its state. The last test shows that the
counters a connection updates are the stack's own, so the daemon reports them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tcp_helpers import (
    IRS,
    ISS,
    Wire,
    drain,
    our_tsval,
    peer,
    peer_tsval,
    syn_from_peer,
    tcb_close_wait,
    tcb_established,
    tcb_established_opts,
    tcb_fin_wait_1,
    tcb_listen_syn_received,
    tcb_syn_sent,
    tcb_time_wait,
)

from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpOptions, TcpSegment

NOW = 1.0

# (reason, make the connection, the bad segment, what the connection sends back)
Case = tuple[str, Callable[[], Tcb], Callable[[Tcb], TcpSegment], int | None]


def _closed() -> Tcb:
    tcb = tcb_established()
    tcb.abort()
    return drain(tcb, NOW)


def _old_timestamp(tcb: Tcb) -> TcpSegment:
    stale = TcpOptions(timestamps=(peer_tsval(0.0) - 1000, our_tsval(tcb, 0.0)))
    return peer(tcb, ACK | PSH, payload=b"x", options=stale)


CASES: list[Case] = [
    ("tcp_closed_connection", _closed, lambda t: peer(t, ACK), None),
    ("tcp_syn_sent_bad_ack", tcb_syn_sent, lambda t: peer(t, ACK, seq=IRS, ack=ISS), RST),
    ("tcp_syn_sent_rst_ignored", tcb_syn_sent, lambda t: peer(t, RST, seq=IRS, ack=0), None),
    ("tcp_syn_sent_no_syn", tcb_syn_sent, lambda t: peer(t, ACK, seq=IRS), None),
    ("tcp_paws_rejected", tcb_established_opts, _old_timestamp, ACK),
    ("tcp_seq_unacceptable", tcb_established,
     lambda t: peer(t, ACK | PSH, seq=t.rcv_nxt + (1 << 20), payload=b"far"), ACK),
    ("tcp_rst_out_of_window", tcb_established,
     lambda t: peer(t, RST, seq=t.rcv_nxt + (1 << 20)), None),
    ("tcp_rst_challenged", tcb_established, lambda t: peer(t, RST, seq=t.rcv_nxt + 1), ACK),
    ("tcp_syn_challenged", tcb_established, lambda t: peer(t, SYN), ACK),
    ("tcp_no_ack", tcb_established, lambda t: peer(t, PSH, payload=b"no ack"), None),
    ("tcp_syn_received_bad_ack", tcb_listen_syn_received, lambda t: peer(t, ACK, ack=ISS), RST),
    ("tcp_ack_unsent", tcb_established, lambda t: peer(t, ACK, ack=t.snd_nxt + 10), ACK),
    ("tcp_ack_too_old", tcb_established,
     lambda t: peer(t, ACK, ack=t.snd_una - (1 << 20)), ACK),
    ("tcp_data_after_fin", tcb_close_wait, lambda t: peer(t, ACK | PSH, payload=b"late"), None),
    ("tcp_data_after_close", tcb_fin_wait_1,
     lambda t: peer(t, ACK | PSH, ack=t.snd_una, payload=b"unread"), RST | ACK),
    ("tcp_time_wait_rst", tcb_time_wait, lambda t: peer(t, RST), None),
    ("tcp_time_wait_segment", tcb_time_wait, lambda t: peer(t, ACK | PSH, payload=b"x"), ACK),
]


@pytest.mark.parametrize(("reason", "make", "segment", "answer"), CASES,
                         ids=[c[0] for c in CASES])
def test_rejected_segment_is_counted_by_reason(
        reason: str, make: Callable[[], Tcb], segment: Callable[[Tcb], TcpSegment],
        answer: int | None) -> None:
    tcb = make()
    state = tcb.state
    before = dict(tcb.counters)
    tcb.receive(segment(tcb), NOW)
    assert tcb.counters[reason] == before.get(reason, 0) + 1
    moved = {k for k, v in tcb.counters.items() if v != before.get(k, 0)}
    assert moved == {reason}, f"other counters moved too: {moved}"
    out = tcb.segments_to_send(NOW)
    if answer is None:
        assert out == []
    else:
        assert [s.flags for s in out] == [answer]
    if reason != "tcp_data_after_close":  # that one resets the connection (RFC 2525 2.17)
        assert tcb.state is state


def test_engine_drops_are_counted_in_the_stacks_counters() -> None:
    """A connection counts into its stack's counters: the daemon sees engine drops."""
    w = Wire()
    w.stack.listen(80)
    (synack,) = w.send(syn_from_peer(seq=IRS))
    tcb = next(iter(w.stack.connections()))
    assert tcb.counters is w.stack.counters
    w.send(TcpSegment(40000, 80, IRS + 1, synack.seq + 1, ACK, 65535))
    assert tcb.state is State.ESTABLISHED
    w.send(TcpSegment(40000, 80, IRS + 1, synack.seq + 1, SYN, 65535))  # challenge ACK
    assert w.stack.counters["tcp_syn_challenged"] == 1
    w.send(TcpSegment(40000, 80, IRS + 1, synack.seq + 1, FIN | ACK, 65535))
    assert tcb.state is State.CLOSE_WAIT
