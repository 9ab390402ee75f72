"""SEGMENT ARRIVES in synchronized states: acceptability, RST, SYN and ACK checks
(RFC 9293 3.10.7.4 with RFC 5961 as adopted by RFC 9293)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tcp_helpers import (
    IRS,
    ISS,
    base_config,
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
    tcb_listen_syn_received,
)

from tcpstack.tcp import events as ev
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import ACK, FIN, PSH, RST, SYN

RCV = IRS + 1  # RCV.NXT of a fresh tcb_established()
SND = ISS + 1  # SND.NXT of a fresh tcb_established()


def zero_window_tcb() -> Tcb:
    """ESTABLISHED with a 4096-byte receive buffer the peer has filled: RCV.WND = 0."""
    tcb = tcb_established(base_config(rcv_buf=4096))
    for chunk in (1460, 1460, 1176):
        tcb.receive(peer(tcb, payload=b"z" * chunk), 0.2)
    ack = expect_one(tcb, 0.2, ACK, ack=RCV + 4096)
    assert ack.window == 0
    return tcb


# ---------------------------------------------------- acceptability (first)


def test_established_zero_len_zero_window_seq_eq_rcv_nxt_acceptable() -> None:
    """RFC 9293 3.10.7.4 table, case 1: len 0, RCV.WND 0 -> acceptable iff SEG.SEQ = RCV.NXT."""
    tcb = zero_window_tcb()
    tcb.receive(peer(tcb, window=1234), 0.3)
    expect_nothing(tcb, 0.3)
    assert tcb.snd_wnd == 1234  # processed: the window update took effect


def test_established_zero_len_zero_window_other_seq_unacceptable() -> None:
    """RFC 9293 3.10.7.4 table, case 1: any other SEG.SEQ is unacceptable -> ACK, drop."""
    tcb = zero_window_tcb()
    tcb.receive(peer(tcb, seq=tcb.rcv_nxt + 1, window=1234), 0.3)
    expect_one(tcb, 0.3, ACK, seq=SND, ack=tcb.rcv_nxt, window=0)
    assert tcb.snd_wnd != 1234


@pytest.mark.parametrize(("offset", "ok"), [(0, True), (1, True), (65534, True),
                                            (65535, False), (-1, False), (-70000, False)])
def test_established_zero_len_open_window(offset: int, ok: bool) -> None:
    """RFC 9293 3.10.7.4 table, case 2: len 0, RCV.WND > 0 ->
    RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND; unacceptable ones are ACKed and dropped."""
    tcb = tcb_established()  # RCV.WND = 65535 (no scaling)
    tcb.receive(peer(tcb, seq=RCV + offset), 0.3)
    if ok:
        expect_nothing(tcb, 0.3)
    else:
        expect_one(tcb, 0.3, ACK, seq=SND, ack=RCV)


def test_established_data_zero_window_unacceptable_but_ack_processed() -> None:
    """RFC 9293 3.10.7.4 table, case 3: len > 0 with RCV.WND = 0 is unacceptable, but
    "special allowance should be made to accept valid ACKs": the ACK field is processed."""
    tcb = zero_window_tcb()
    tcb.send(b"a" * 100)
    expect(tcb, 0.3, 1)
    tcb.receive(peer(tcb, payload=b"more", ack=SND + 100), 0.4)
    assert tcb.recv_buffered == 4096  # text not taken
    assert tcb.snd_una == SND + 100  # ACK processed
    expect_one(tcb, 0.4, ACK, ack=RCV + 4096, window=0)


def test_established_data_open_window_in_window_start_acceptable() -> None:
    """RFC 9293 3.10.7.4 table, case 4: RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, payload=b"abc"), 0.3)
    assert tcb.recv() == b"abc"
    expect_one(tcb, 0.3, ACK, ack=RCV + 3)


def test_established_old_duplicate_data_acked_rcv_nxt_unchanged() -> None:
    """RFC 9293 3.10.7.4: an old duplicate (entirely below RCV.NXT) is unacceptable:
    <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, and RCV.NXT does not move."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, payload=b"0123456789"), 0.3)
    expect(tcb, 0.3)
    tcb.recv()
    tcb.receive(peer(tcb, seq=RCV, payload=b"0123456789"), 0.4)
    expect_one(tcb, 0.4, ACK, seq=SND, ack=RCV + 10)
    assert tcb.rcv_nxt == RCV + 10
    assert tcb.recv() == b""


def test_established_partially_overlapping_segment_trimmed() -> None:
    """RFC 9293 3.10.7.4 case 4 (end in window) and seventh step: the already received
    front is trimmed and only new bytes are delivered."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, payload=b"hello "), 0.3)
    tcb.receive(peer(tcb, seq=RCV + 3, payload=b"lo world"), 0.3)
    assert tcb.recv() == b"hello world"
    assert tcb.rcv_nxt == RCV + 11
    expect_one(tcb, 0.3, ACK, ack=RCV + 11)


def test_established_segment_beyond_window_acked_and_dropped() -> None:
    """RFC 9293 3.10.7.4: text wholly beyond RCV.NXT+RCV.WND is unacceptable."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, seq=RCV + 65535, payload=b"far"), 0.3)
    expect_one(tcb, 0.3, ACK, ack=RCV)
    assert tcb.recv_buffered == 0


def test_established_segment_past_right_edge_truncated() -> None:
    """RFC 9293 3.10.7.4 (seventh): text beyond the window is trimmed, a FIN with it dropped."""
    tcb = tcb_established(base_config(rcv_buf=4096))
    tcb.receive(peer(tcb, payload=b"x" * 4000), 0.3)
    expect(tcb, 0.3)
    tcb.receive(peer(tcb, ACK | FIN, payload=b"y" * 200), 0.3)
    assert tcb.recv_buffered == 4096
    assert tcb.state is State.ESTABLISHED  # the FIN lay outside the window
    expect_one(tcb, 0.3, ACK, ack=RCV + 4096, window=0)


def test_established_unacceptable_rst_is_not_answered() -> None:
    """RFC 9293 3.10.7.4 first step: unacceptable segment -> ACK, "unless the RST bit is set"."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, RST, seq=RCV - 10), 0.3)
    expect_nothing(tcb, 0.3)
    assert tcb.state is State.ESTABLISHED


def test_established_out_of_order_data_queued_with_duplicate_ack() -> None:
    """RFC 9293 3.10.7.4 seventh (segments beyond RCV.NXT may be held) and RFC 5681 4.2
    (an immediate duplicate ACK for out-of-order data); the gap filling delivers both."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, seq=RCV + 100, payload=b"later"), 0.3)
    expect_one(tcb, 0.3, ACK, seq=SND, ack=RCV)
    assert tcb.recv_buffered == 0
    tcb.receive(peer(tcb, payload=b"x" * 100), 0.4)
    assert tcb.rcv_nxt == RCV + 105
    assert tcb.recv(-1) == b"x" * 100 + b"later"
    expect_one(tcb, 0.4, ACK, ack=RCV + 105)  # filling a hole is ACKed at once


# ----------------------------------------------------------- RST (second)


@pytest.mark.parametrize(
    ("builder", "error"),
    [(tcb_established, "reset"), (tcb_fin_wait_1, "reset"), (tcb_fin_wait_2, "reset"),
     (tcb_close_wait, "reset"), (tcb_closing, None), (tcb_last_ack, None)],
)
def test_rst_exact_seq_terminates(builder: Callable[[], Tcb], error: str | None) -> None:
    """RFC 9293 3.10.7.4 second / RFC 5961 3.2: SEG.SEQ = RCV.NXT -> reset the connection.
    (CLOSING and LAST-ACK: "enter the CLOSED state, delete the TCB" -- orderly end.)"""
    tcb = builder()
    tcb.receive(peer(tcb, RST, ack=0), 1.0)
    assert tcb.state is State.CLOSED
    assert tcb.take_events() == [ev.Terminated(error)]
    expect_nothing(tcb, 1.0)
    assert tcb.next_deadline() is None


@pytest.mark.parametrize("offset", [1, 100, 65534])
def test_rst_in_window_not_exact_draws_challenge_ack(offset: int) -> None:
    """RFC 5961 3.2 (RFC 9293 3.10.7.4 second): in window but not exact -> challenge ACK
    <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>; the connection survives."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, RST, seq=RCV + offset), 0.3)
    expect_one(tcb, 0.3, ACK, seq=SND, ack=RCV)
    assert tcb.state is State.ESTABLISHED
    assert tcb.take_events() == []


@pytest.mark.parametrize("offset", [65535, 1 << 20, -1, -1000])
def test_rst_out_of_window_silently_dropped(offset: int) -> None:
    """RFC 5961 3.2: a RST outside the window is discarded without reply."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, RST, seq=RCV + offset), 0.3)
    expect_nothing(tcb, 0.3)
    assert tcb.state is State.ESTABLISHED


def test_rst_in_syn_received_in_window_draws_challenge_ack() -> None:
    """RFC 5961 3.2 applies in SYN-RECEIVED too."""
    tcb = tcb_listen_syn_received()
    tcb.receive(peer(tcb, RST, seq=RCV + 5, ack=0), 0.3)
    assert tcb.state is State.SYN_RECEIVED
    expect_one(tcb, 0.3, ACK, ack=RCV)


# ----------------------------------------------------------- SYN (fourth)


@pytest.mark.parametrize("seq", [RCV, RCV + 10, IRS, IRS - 100000])
def test_established_syn_draws_challenge_ack(seq: int) -> None:
    """RFC 9293 3.10.7.4 fourth / RFC 5961 4.2: a SYN in a synchronized state, whatever its
    sequence number, draws a challenge ACK and is dropped."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, SYN, seq=seq, ack=0), 0.3)
    expect_one(tcb, 0.3, ACK, seq=SND, ack=RCV)
    assert tcb.state is State.ESTABLISHED
    assert tcb.take_events() == []


@pytest.mark.parametrize("builder", [tcb_fin_wait_1, tcb_fin_wait_2, tcb_close_wait,
                                     tcb_last_ack, tcb_closing])
def test_syn_in_closing_states_draws_challenge_ack(builder: Callable[[], Tcb]) -> None:
    """RFC 9293 3.10.7.4 fourth: the challenge ACK applies in every synchronized state."""
    tcb = builder()
    state = tcb.state
    tcb.receive(peer(tcb, SYN, ack=0), 1.0)
    expect_one(tcb, 1.0, ACK, seq=tcb.snd_nxt, ack=tcb.rcv_nxt)
    assert tcb.state is state


# ----------------------------------------------------------- ACK (fifth)


def test_established_segment_without_ack_dropped() -> None:
    """RFC 9293 3.10.7.4 fifth: "if the ACK bit is off, drop the segment and return"."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, PSH, payload=b"noack"), 0.3)
    assert tcb.recv_buffered == 0
    expect_nothing(tcb, 0.3)


def test_established_ack_of_unsent_data_acked_and_dropped() -> None:
    """RFC 9293 3.10.7.4 fifth: SEG.ACK > SND.NXT -> send an ACK, drop the segment."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, ack=SND + 500, payload=b"data"), 0.3)
    expect_one(tcb, 0.3, ACK, seq=SND, ack=RCV)
    assert tcb.snd_una == SND
    assert tcb.recv_buffered == 0


def test_established_too_old_ack_draws_challenge_ack() -> None:
    """RFC 5961 5.2: SEG.ACK < SND.UNA - MAX.SND.WND is suspicious -> challenge ACK, drop."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, ack=SND - 70000, payload=b"data"), 0.3)
    expect_one(tcb, 0.3, ACK, seq=SND, ack=RCV)
    assert tcb.recv_buffered == 0


def test_established_duplicate_ack_in_range_accepted() -> None:
    """RFC 9293 3.10.7.4 fifth: SEG.ACK < SND.UNA (but recent) is ignored, text processed."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, ack=SND - 100, payload=b"ok"), 0.3)
    assert tcb.recv() == b"ok"
    assert tcb.snd_una == SND


def test_established_new_ack_advances_snd_una() -> None:
    """RFC 9293 3.10.7.4 fifth: SND.UNA < SEG.ACK =< SND.NXT -> SND.UNA <- SEG.ACK."""
    tcb = tcb_established()
    tcb.send(b"x" * 1000)
    expect(tcb, 0.3, 1)
    tcb.receive(peer(tcb, ack=SND + 400), 0.35)
    assert tcb.snd_una == SND + 400
    assert tcb.send_buffered == 600
    tcb.receive(peer(tcb), 0.4)
    assert tcb.snd_una == SND + 1000
    assert tcb.send_buffered == 0
    assert tcb.next_deadline() is None  # RFC 6298 5.2: all acked -> timer off


def test_established_window_update_from_newer_segment() -> None:
    """RFC 9293 3.10.7.4 fifth: update SND.WND if SND.WL1 < SEG.SEQ or
    (SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK)."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, window=3000), 0.3)
    assert tcb.snd_wnd == 3000
    tcb.receive(peer(tcb, payload=b"a", window=4000), 0.3)
    assert tcb.snd_wnd == 4000
    assert tcb.snd_wl1 == RCV
