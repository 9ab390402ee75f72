"""Data transfer in ESTABLISHED: delivery, receive window, sender windows, SWS avoidance,
zero-window probing and send-buffer back-pressure (RFC 9293 3.8.6, 3.10.7.4)."""

from __future__ import annotations

from itertools import pairwise

import pytest
from tcp_helpers import (
    IRS,
    ISS,
    base_config,
    expect,
    expect_nothing,
    expect_one,
    peer,
    tcb_established,
)

from tcpstack.tcp import events as ev
from tcpstack.tcp.congestion import initial_window
from tcpstack.tcp.seq import seq_add, seq_ge
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import ACK, PSH, TcpSegment

RCV = IRS + 1
SND = ISS + 1


# --------------------------------------------------------------- receiving


def test_established_in_order_data_delivered_and_acked() -> None:
    """RFC 9293 3.10.7.4 seventh: in-order text goes to the receive buffer, RCV.NXT
    advances, and <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> is sent."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, ACK | PSH, payload=b"GET / HTTP/1.0\r\n"), 0.3)
    tcb.receive(peer(tcb, ACK | PSH, payload=b"\r\n"), 0.3)
    assert tcb.take_events() == [ev.DataReceived()]  # coalesced per batch
    expect_one(tcb, 0.3, ACK, seq=SND, ack=RCV + 18)  # one ACK for the batch
    assert tcb.recv(4) == b"GET "
    assert tcb.recv() == b"/ HTTP/1.0\r\n\r\n"
    assert tcb.recv() == b""
    tcb.receive(peer(tcb, payload=b"more"), 0.4)
    assert tcb.take_events() == [ev.DataReceived()]  # a new batch, a new event


def test_established_receive_window_shrinks_as_buffer_fills() -> None:
    """RFC 9293 3.8.6.2.2: the advertised window is what the buffer can still take,
    and the right edge (RCV.NXT + RCV.WND) never moves left."""
    tcb = tcb_established(base_config(rcv_buf=8192))
    edge = RCV + 8192
    windows = []
    for _ in range(8):
        tcb.receive(peer(tcb, payload=b"d" * 1024), 0.3)
        ack = expect_one(tcb, 0.3, ACK)
        windows.append(ack.window)
        new_edge = seq_add(ack.ack, ack.window)
        assert seq_ge(new_edge, edge), "right edge moved left"
        edge = new_edge
    assert windows == [8192 - 1024 * i for i in range(1, 9)]
    assert windows[-1] == 0


def test_established_small_reads_do_not_reopen_window() -> None:
    """RFC 9293 3.8.6.2.2 (receiver SWS avoidance): the window opens only when it can
    grow by min(RCV.BUFF/2, MSS); tiny reads do not announce tiny windows."""
    tcb = tcb_established(base_config(rcv_buf=8192))
    for _ in range(8):
        tcb.receive(peer(tcb, payload=b"d" * 1024), 0.3)
    assert expect_one(tcb, 0.3, ACK).window == 0
    tcb.recv(100)
    expect_nothing(tcb, 0.4)  # no window update for 100 bytes
    tcb.receive(peer(tcb, seq=RCV - 1), 0.5)  # provoke an ACK (unacceptable)
    assert expect_one(tcb, 0.5, ACK).window == 0  # still closed: 100 < min(4096, 1460)


def test_established_zero_window_then_recv_sends_window_update() -> None:
    """RFC 9293 3.8.6.2.2 / RFC 1122 4.2.3.3: once the application frees enough space,
    a window update ACK is sent."""
    tcb = tcb_established(base_config(rcv_buf=4096))
    for chunk in (1460, 1460, 1176):
        tcb.receive(peer(tcb, payload=b"z" * chunk), 0.3)
    assert expect_one(tcb, 0.3, ACK).window == 0
    assert len(tcb.recv()) == 4096
    upd = expect_one(tcb, 0.4, ACK, seq=SND, ack=RCV + 4096)
    assert upd.window == 4096


def test_established_receive_window_scaled() -> None:
    """RFC 7323 2.3: the window field is RCV.WND >> Rcv.Wind.Shift."""
    cfg = base_config(rcv_buf=256 * 1024)
    tcb = tcb_established(cfg, wscale=2)
    assert tcb.rcv_wscale == 3
    tcb.receive(peer(tcb, payload=b"q" * 1000), 0.3)
    ack = expect_one(tcb, 0.3, ACK)
    assert ack.window == (256 * 1024 - 1000) >> 3


# ----------------------------------------------------------------- sending


def sent_bytes(segs: list[TcpSegment]) -> int:
    return sum(len(s.payload) for s in segs)


def test_established_send_segments_of_mss_with_psh_on_last() -> None:
    """RFC 9293 3.7.1 (segments at most the effective MSS) and 3.9.1 (PSH on the last)."""
    tcb = tcb_established()
    tcb.send(b"a" * 3000)
    segs = expect(tcb, 0.3, 3)
    assert [len(s.payload) for s in segs] == [1460, 1460, 80]
    assert [s.seq for s in segs] == [SND, SND + 1460, SND + 2920]
    assert all(s.ack == RCV for s in segs)
    assert [bool(s.flags & PSH) for s in segs] == [False, False, True]
    assert b"".join(bytes(s.payload) for s in segs) == b"a" * 3000


def test_established_sender_respects_peer_window() -> None:
    """RFC 9293 3.8.6: never send beyond SND.UNA + SND.WND."""
    tcb = tcb_established(window=3000)
    tcb.send(b"w" * 10000)
    segs = expect(tcb, 0.3)
    assert sent_bytes(segs) <= 3000
    assert sent_bytes(segs) == 2920  # two full segments; the 80-byte tail waits (SWS)
    expect_nothing(tcb, 0.3)
    tcb.receive(peer(tcb, window=3000), 0.4)  # everything acked, window 3000 again
    assert sent_bytes(expect(tcb, 0.4)) == 2920


def test_established_sender_respects_cwnd() -> None:
    """RFC 5681 3.1: at most min(cwnd, rwnd) outstanding; IW per RFC 6928."""
    tcb = tcb_established(base_config(rcv_buf=1 << 20), wscale=8, window=4096)  # rwnd 1 MiB
    assert tcb.snd_wnd == 4096 << 8  # the handshake ACK's window is scaled (RFC 7323 2.2)
    tcb.send(b"c" * 100_000)
    segs = expect(tcb, 0.3)
    assert sent_bytes(segs) <= tcb.cc.cwnd
    assert sent_bytes(segs) >= initial_window(1460) - 1460
    assert len(segs) == 10


def test_established_sender_sws_no_small_segment_while_data_outstanding() -> None:
    """RFC 9293 3.8.6.2.1 (sender SWS avoidance): with data outstanding and more queued
    than fits, a short segment is not sent; it goes once it can be full-sized."""
    tcb = tcb_established(window=2000)
    tcb.send(b"s" * 5000)
    segs = expect(tcb, 0.3)
    assert [len(s.payload) for s in segs] == [1460]  # not 1460 + 540
    tcb.receive(peer(tcb, ack=SND + 1460, window=2000), 0.4)
    segs = expect(tcb, 0.4)
    assert [len(s.payload) for s in segs] == [1460]


def test_established_sender_small_final_segment_sent_when_all_fits() -> None:
    """RFC 9293 3.8.6.2.1: a short segment may go if it is all the data queued."""
    tcb = tcb_established()
    tcb.send(b"hi")
    expect_one(tcb, 0.3, ACK | PSH, seq=SND, payload=b"hi")
    tcb.send(b"there")  # hi is still outstanding; all remaining fits -> sent
    expect_one(tcb, 0.3, ACK | PSH, seq=SND + 2, payload=b"there")


def test_established_data_carries_ack_no_separate_ack() -> None:
    """RFC 9293 3.10.7.4: acknowledgments piggyback on outgoing data."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, payload=b"req"), 0.3)
    tcb.send(b"resp")
    expect_one(tcb, 0.3, ACK | PSH, ack=RCV + 3, payload=b"resp")


# ---------------------------------------------------------- persist timer


def zero_window_sender() -> Tcb:
    """ESTABLISHED, the peer acknowledged everything and announced a zero window; 500
    bytes are queued."""
    tcb = tcb_established(window=1000)
    tcb.send(b"p" * 1500)
    expect(tcb, 0.3)
    tcb.receive(peer(tcb, window=0), 0.4)  # acks the 1000 sent, window closes
    assert tcb.snd_una == SND + 1000 and tcb.snd_wnd == 0
    expect_nothing(tcb, 0.4)
    return tcb


def test_established_zero_window_arms_persist_timer() -> None:
    """RFC 9293 3.8.6.1: with a zero window and data queued, the persist timer runs."""
    tcb = zero_window_sender()
    assert tcb.timers.persist is not None
    assert tcb.next_deadline() == tcb.timers.persist
    assert tcb.timers.rto is None


def test_established_persist_probe_sent_and_backs_off() -> None:
    """RFC 9293 3.8.6.1 / RFC 1122 4.2.2.17: probe the zero window, exponentially backing off."""
    tcb = zero_window_sender()
    gaps = []
    now = 0.4
    for _ in range(4):
        d = tcb.next_deadline()
        assert d is not None
        gaps.append(d - now)
        now = d
        tcb.handle_timer(now)
        probe = expect_one(tcb, now, ACK)
        assert len(probe.payload) <= 1
        assert probe.seq in (SND + 999, SND + 1000)  # below or at SND.UNA: forces an ACK
        tcb.receive(peer(tcb, window=0), now + 0.05)  # answered, still closed
        expect_nothing(tcb, now + 0.05)
    assert all(b == pytest.approx(2 * a) for a, b in pairwise(gaps))


def test_established_persist_answered_probes_never_abort() -> None:
    """RFC 9293 3.8.6.1 (MUST-?): the connection must not be aborted while the receiver
    keeps answering probes, however many."""
    cfg = base_config(max_retries=3, rto_max=2.0)
    tcb = tcb_established(cfg, window=1000)
    tcb.send(b"p" * 1500)
    expect(tcb, 0.3)
    tcb.receive(peer(tcb, window=0), 0.4)
    expect(tcb, 0.4)
    probes = 0
    for _ in range(20):
        d = tcb.next_deadline()
        assert d is not None
        tcb.handle_timer(d)
        probes += len(expect(tcb, d))
        tcb.receive(peer(tcb, window=0), d + 0.01)
        expect(tcb, d + 0.01)
    assert probes == 20
    assert tcb.state is State.ESTABLISHED
    # The window opens: the queued data flows.
    tcb.receive(peer(tcb, window=1000), 100.0)
    segs = expect(tcb, 100.0)
    assert b"".join(bytes(s.payload) for s in segs) == b"p" * 500
    assert tcb.timers.persist is None


def test_established_persist_unanswered_probes_time_out() -> None:
    """RFC 9293 3.8.6.1: a peer that never answers the probes may be given up on."""
    cfg = base_config(max_retries=3)
    tcb = tcb_established(cfg, window=1000)
    tcb.send(b"p" * 1500)
    expect(tcb, 0.3)
    tcb.receive(peer(tcb, window=0), 0.4)
    expect(tcb, 0.4)
    for _ in range(10):
        d = tcb.next_deadline()
        if d is None:
            break
        tcb.handle_timer(d)
        expect(tcb, d)
    assert tcb.state is State.CLOSED
    assert tcb.take_events()[-1] == ev.Terminated("timeout")


def test_established_window_opening_ack_resumes_sending() -> None:
    """RFC 9293 3.8.6.1: a window update ends persist mode; the data goes immediately."""
    tcb = zero_window_sender()
    tcb.receive(peer(tcb, window=65535), 1.0)
    seg = expect_one(tcb, 1.0, ACK | PSH, seq=SND + 1000)
    assert len(seg.payload) == 500
    assert tcb.timers.persist is None and tcb.timers.rto is not None


# --------------------------------------------------- send buffer back-pressure


def test_established_send_buffer_back_pressure_write_space() -> None:
    """RFC 9293 3.10.2 (SEND may block when buffers are full): once the unacknowledged
    data falls to half of snd_buf, a WriteSpace event tells the writer to continue."""
    cfg = base_config(snd_buf=4096)
    tcb = tcb_established(cfg)
    tcb.send(b"b" * 3000)
    assert tcb.send_buffered == 3000
    tcb.send(b"b" * 2000)  # above the high-water mark
    segs = expect(tcb, 0.3)
    assert sent_bytes(segs) == 5000
    tcb.receive(peer(tcb, ack=SND + 2000), 0.4)  # 3000 left > 2048
    assert ev.WriteSpace() not in tcb.take_events()
    tcb.receive(peer(tcb, ack=SND + 3000), 0.45)  # 2000 left <= 2048
    assert tcb.take_events() == [ev.WriteSpace()]
    tcb.receive(peer(tcb, ack=SND + 5000), 0.5)
    assert tcb.take_events() == []  # once per blocking episode


def test_established_no_write_space_event_without_blocking() -> None:
    """RFC 9293 3.10.2: a writer that never blocked gets no wake-up."""
    tcb = tcb_established(base_config(snd_buf=4096))
    tcb.send(b"b" * 1000)
    expect(tcb, 0.3)
    tcb.receive(peer(tcb), 0.4)
    assert tcb.take_events() == []


def test_send_after_shutdown_raises() -> None:
    """RFC 9293 3.10.2: SEND after CLOSE -> "error: connection closing"."""
    tcb = tcb_established()
    tcb.shutdown_write()
    with pytest.raises(ConnectionError):
        tcb.send(b"late")



def test_established_window_closed_with_data_in_flight_not_aborted() -> None:
    """RFC 1122 4.2.2.17 / RFC 9293 3.8.6.1: "As long as the receiving TCP continues to
    send acknowledgments in response to the probe segments, the sending TCP MUST allow
    the connection to stay open." Here the window closes while data is outstanding
    (the receiver dropped it: its buffer was full)."""
    tcb = tcb_established(base_config(max_retries=3))
    tcb.send(b"x" * 3000)
    expect(tcb, 1.0, 3)
    tcb.receive(peer(tcb, ack=SND, window=0), 1.05)  # nothing accepted, window closed
    expect_nothing(tcb, 1.05)
    probes = 0
    now = 1.05
    for _ in range(12):
        d = tcb.next_deadline()
        assert d is not None
        now = d
        tcb.handle_timer(now)
        assert tcb.state is State.ESTABLISHED, f"aborted after {probes} answered probes"
        probes += len(expect(tcb, now))
        tcb.receive(peer(tcb, ack=SND, window=0), now + 0.05)  # every probe is answered
        expect(tcb, now + 0.05)
    assert probes >= 4
