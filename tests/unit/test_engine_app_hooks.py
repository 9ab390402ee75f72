"""Two small engine hooks the asyncio transports use: :meth:`Tcb.recv_into` (a zero-copy
RECEIVE for ``asyncio.BufferedProtocol``) and listeners bound to some local addresses
(:meth:`Stack.listen` with ``addresses``, :meth:`Stack.listen_on`)."""

from __future__ import annotations

import ipaddress

import pytest
from tcp_helpers import (
    IRS,
    REMOTE_IP,
    Wire,
    base_config,
    check_segment,
    expect,
    expect_nothing,
    expect_one,
    ip,
    pattern,
    peer,
    peer_opts,
    syn_from_peer,
    tcb_established,
    tcb_established_opts,
)

from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp.state import State
from tcpstack.wire.tcp import ACK, PSH, RST, SYN, TcpSegment

# ------------------------------------------------------------------ recv_into


def test_recv_into_moves_unread_bytes_into_the_buffer_in_order() -> None:
    tcb = tcb_established(base_config())
    tcb.receive(peer(tcb, ACK | PSH, payload=b"hello world"), 0.2)
    buf = bytearray(5)
    assert tcb.recv_into(buf) == 5
    assert buf == b"hello"
    assert tcb.recv_buffered == 6
    view = memoryview(bytearray(100))
    assert tcb.recv_into(view[10:]) == 6
    assert bytes(view[10:16]) == b" world"
    assert tcb.recv_buffered == 0


def test_recv_into_with_nothing_buffered_or_an_empty_buffer_returns_zero() -> None:
    tcb = tcb_established(base_config())
    assert tcb.recv_into(bytearray(10)) == 0
    tcb.receive(peer(tcb, ACK | PSH, payload=b"x"), 0.2)
    assert tcb.recv_into(bytearray()) == 0
    assert tcb.recv_buffered == 1


def test_recv_into_reopens_a_closed_window_like_recv() -> None:
    """Reading makes room: once the window can grow by enough (RFC 1122 4.2.3.3) the
    TCB sends a window update, as after :meth:`Tcb.recv`."""
    cfg = base_config(rcv_buf=4096, mss=1024)
    tcb = tcb_established(cfg)
    for _ in range(4):
        tcb.receive(peer(tcb, ACK | PSH, payload=b"z" * 1024), 0.2)
    segs = expect(tcb, 0.2)
    assert segs[-1].window == 0
    got = tcb.recv_into(bytearray(4096))
    assert got == 4096
    update = expect(tcb, 0.3)
    assert update, "no window update after recv_into emptied the buffer"
    check_segment(update[-1], ACK, window=4096)


def test_recv_into_sends_an_owed_delayed_ack_like_recv() -> None:
    """The read-time ACK rule (Linux's tcp_cleanup_rbuf) holds for a read into the
    caller's buffer too: a short pushed segment's delayed ACK goes out once a read has
    emptied the receive buffer, not before."""
    tcb = tcb_established(base_config(delayed_ack=0.04, rcv_buf=0xFFFF))
    tcb.receive(peer(tcb, ACK | PSH, payload=b"q" * 300), 1.0)
    expect_nothing(tcb, 1.0)
    assert tcb.recv_into(bytearray(100)) == 100
    expect_nothing(tcb, 1.001)  # 200 bytes still unread: the ACK may wait
    assert tcb.recv_into(bytearray(1000)) == 200
    expect_one(tcb, 1.002, ACK, ack=IRS + 1 + 300)
    assert tcb.timers.delack is None


def test_recv_into_counts_as_reading_for_receive_buffer_autotuning() -> None:
    """Dynamic right-sizing measures what the application takes per round trip; bytes
    taken with recv_into count as recv's do, so a BufferedProtocol reader's window
    grows too (here from 64 KiB to more than twice the last round's 80 segments)."""
    kib, full = 1024, 1448  # a full segment's payload with timestamps
    tcb = tcb_established_opts(base_config(autotune=True, rcv_buf=64 * kib, snd_buf=64 * kib),
                               wscale=7)
    into = bytearray(full * 100)
    now = 1.0
    for segments in (10, 20, 40, 80, 1):
        for _ in range(segments):
            tcb.receive(peer(tcb, payload=pattern(full), options=peer_opts(tcb, now)), now)
        while tcb.recv_into(into):
            pass
        expect(tcb, now)
        now += 0.11  # a little more than the round trip: one measurement per round
    assert tcb.rcv_space >= 2 * 80 * full


# ------------------------------------------------------- listeners on some addresses


def two_address_stack() -> Stack:
    config = StackConfig(addresses=(ipaddress.IPv4Address("10.0.0.2"),
                                    ipaddress.IPv4Address("10.0.0.3")))
    return Stack(config)


def syn_to(st: Stack, dst: str) -> list[TcpSegment]:
    w = Wire(st)
    w.local_ip = ip(dst)
    return list(w.send(syn_from_peer()))


def test_listener_on_one_address_answers_syns_to_it_only() -> None:
    st = two_address_stack()
    st.listen(80, addresses=[ip("10.0.0.3")])
    (reply,) = syn_to(st, "10.0.0.3")
    check_segment(reply, SYN | ACK)
    (refused,) = syn_to(st, "10.0.0.2")
    check_segment(refused, RST | ACK)
    assert st.counters["tcp_closed_port"] == 1
    assert [t.local_ip for t in st.tcbs.values()] == [ip("10.0.0.3")]
    assert all(t.remote_ip == REMOTE_IP for t in st.tcbs.values())


def test_listen_on_widens_and_unlisten_forgets_the_addresses() -> None:
    st = two_address_stack()
    st.listen(80, addresses=[ip("10.0.0.3")])
    st.listen_on(80, None)
    (reply,) = syn_to(st, "10.0.0.2")
    check_segment(reply, SYN | ACK)
    st.unlisten(80)
    st.listen(80)
    assert [t.state for t in st.tcbs.values()] == [State.SYN_RECEIVED]
    (again,) = syn_to(st, "10.0.0.3")
    check_segment(again, SYN | ACK)


def test_listen_on_a_port_without_a_listener_is_an_error() -> None:
    st = two_address_stack()
    with pytest.raises(KeyError):
        st.listen_on(81, [ip("10.0.0.2")])
    st.listen(81)
    st.unlisten(81)
    with pytest.raises(KeyError):
        st.listen_on(81, None)
