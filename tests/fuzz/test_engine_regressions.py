"""Minimal reproductions of what the property tests and the daemon fuzzer found.

Each was first recorded here as an expected failure; all are fixed now, and each
stays as a plain regression test: the property tests would find them again only
by chance.
"""

from __future__ import annotations

import gc

from tcp_helpers import (
    IRS,
    LOCAL_PORT,
    REMOTE_PORT,
    Wire,
    base_config,
    peer,
    syn_from_peer,
    tcb_established,
    tcb_listen_syn_received,
)

from tcpstack.tcp.seq import seq_add, seq_ge
from tcpstack.tcp.state import State
from tcpstack.wire.tcp import ACK, FIN, RST, TcpSegment


def test_connection_reset_with_a_delayed_ack_owed_has_no_deadline_left() -> None:
    tcb = tcb_established(base_config(delayed_ack=0.04))
    tcb.receive(peer(tcb, ACK, payload=b"x"), 1.0)  # one small segment: the ACK may wait
    tcb.receive(peer(tcb, RST), 1.0)  # ... but the peer resets the connection
    tcb.segments_to_send(1.0)
    assert tcb.state is State.CLOSED
    assert tcb.next_deadline() is None, f"a CLOSED connection still has timers: {tcb.timers}"


def test_retransmitted_syn_ack_does_not_move_the_right_edge_left() -> None:
    # rcv_buf 256 KiB: window scale 3, so an ACK can advertise more than a SYN,ACK.
    tcb = tcb_listen_syn_received(base_config(rcv_buf=262144), wscale=7)
    tcb.receive(peer(tcb, ACK, seq=tcb.rcv_nxt + 10**6), 0.05)  # out of window: ACK it
    (ack,) = tcb.segments_to_send(0.05)
    edge = seq_add(ack.ack, ack.window << tcb.rcv_wscale)
    deadline = tcb.next_deadline()
    assert deadline is not None
    tcb.handle_timer(deadline)  # the SYN,ACK is retransmitted
    (synack,) = tcb.segments_to_send(deadline)
    assert synack.flags & ACK
    assert seq_ge(seq_add(synack.ack, synack.window), edge), (
        f"the SYN,ACK's right edge {synack.ack + synack.window} is left of the ACK's {edge}")


def test_data_beyond_an_out_of_order_fin_is_not_delivered_and_the_fin_still_ends_the_stream(
) -> None:
    tcb = tcb_established()
    r = tcb.rcv_nxt
    tcb.receive(peer(tcb, ACK | FIN, seq=r + 10), 1.0)  # the FIN, after a hole
    tcb.receive(peer(tcb, ACK, seq=r + 10, payload=b"x" * 10), 1.0)  # "data" after the FIN
    tcb.receive(peer(tcb, ACK, seq=r, payload=b"a" * 10), 1.0)  # the hole fills
    tcb.segments_to_send(1.0)
    assert tcb.recv() == b"a" * 10, "bytes past the peer's FIN reached the application"
    assert tcb.state is State.CLOSE_WAIT, f"the peer's FIN was lost: {tcb!r}"


def test_data_queued_beyond_the_peers_fin_is_dropped_when_the_fin_is_taken() -> None:
    tcb = tcb_established()
    r = tcb.rcv_nxt
    tcb.receive(peer(tcb, ACK | FIN, seq=r + 10), 1.0)  # the FIN, after a hole
    tcb.receive(peer(tcb, ACK, seq=r + 11, payload=b"x" * 10), 1.0)  # beyond the FIN
    tcb.receive(peer(tcb, ACK, seq=r, payload=b"a" * 10), 1.0)  # the hole fills
    tcb.segments_to_send(1.0)
    assert tcb.state is State.CLOSE_WAIT
    assert not tcb.reassembly.nbytes, (
        f"{tcb.reassembly.nbytes} bytes beyond the FIN stay queued in CLOSE-WAIT")


def test_a_reset_connection_is_not_kept_alive_by_the_stacks_timers() -> None:
    # Found by tools/fuzz_daemon.py: the daemon's RSS grew ~25 MiB per 100,000
    # packets, as the timer heap held every closed connection (and its buffers)
    # until its last deadline passed: up to rto_max, or the keepalive idle time.
    w = Wire()
    w.stack.listen(80)
    (synack,) = w.send(syn_from_peer(), 0.0)
    w.send(TcpSegment(REMOTE_PORT, LOCAL_PORT, IRS + 1, seq_add(synack.seq, 1), ACK, 65535),
           0.1)
    (tcb,) = w.stack.tcbs.values()
    tcb.send(b"x" * 1000)  # data in flight: the retransmission timer runs
    w.out()
    w.send(TcpSegment(REMOTE_PORT, LOCAL_PORT, IRS + 1, 0, RST, 0), 0.2)  # the peer resets
    assert tcb.state is State.CLOSED
    assert not w.stack.tcbs
    held = [r for r in gc.get_referrers(tcb) if isinstance(r, tuple)]
    assert not held, f"timer entries {held} keep the closed connection alive"


def test_the_timer_heap_stays_bounded_when_connections_come_and_go() -> None:
    w = Wire()
    w.stack.listen(80)
    now = 0.0
    for port in range(20000, 20500):  # 500 connections, one after the other
        w.send(syn_from_peer(src_port=port), now)
        (tcb,) = w.stack.tcbs.values()
        w.send(TcpSegment(port, LOCAL_PORT, IRS + 1, seq_add(tcb.iss, 1), ACK, 65535), now)
        tcb.send(b"x" * 100)  # a retransmission deadline, seconds away
        w.out()
        w.send(TcpSegment(port, LOCAL_PORT, IRS + 1, 0, RST, 0), now)
        assert not w.stack.tcbs
        now += 0.001
    # Their deadlines have not passed; without compaction 500 entries would wait.
    assert len(w.stack._timers) <= 2 + 64, f"{len(w.stack._timers)} timer entries for none"
