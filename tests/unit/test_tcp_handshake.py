"""Connection establishment: LISTEN, SYN-RECEIVED and SYN-SENT (RFC 9293 3.5, 3.10.7)."""

from __future__ import annotations

import ipaddress
import random

import pytest
from tcp_helpers import (
    IRS,
    ISS,
    LOCAL,
    PEER_WINDOW,
    REMOTE,
    Pair,
    Wire,
    base_config,
    check_segment,
    expect,
    expect_nothing,
    expect_one,
    peer,
    stack,
    syn_from_peer,
    tcb_established,
    tcb_established_active,
    tcb_listen_syn_received,
    tcb_syn_sent,
)

from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp import events as ev
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.congestion import initial_window
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import ACK, CWR, ECE, FIN, PSH, RST, SYN, TcpOptions, TcpSegment

# ------------------------------------------------------------------ LISTEN


def listening_wire(backlog: int = 128, cfg: TcpConfig | None = None) -> Wire:
    w = Wire(stack(cfg=cfg))
    w.stack.listen(80, backlog)
    return w


def test_listen_syn_sends_syn_ack_with_mss_only() -> None:
    """RFC 9293 3.10.7.2: LISTEN + SYN -> SYN-RECEIVED, <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>.
    RFC 9293 3.7.1: MSS is sent in the SYN; RFC 7323 2.2: no window scale unless offered."""
    w = listening_wire()
    (synack,) = w.send(syn_from_peer(mss=1460, wscale=None))
    check_segment(synack, SYN | ACK, ack=IRS + 1)
    assert synack.options.mss == 1460
    assert synack.options.wscale is None
    assert synack.window == PEER_WINDOW  # SYN windows are never scaled (RFC 7323 2.2)
    (tcb,) = w.stack.tcbs.values()
    assert tcb.state is State.SYN_RECEIVED
    assert synack.seq == tcb.iss
    assert w.stack.counters["tcp_syn_accepted"] == 1


def test_listen_syn_with_wscale_gets_wscale_in_syn_ack() -> None:
    """RFC 7323 2.2: window scale is sent in a SYN,ACK only if the SYN carried it."""
    cfg = base_config(rcv_buf=256 * 1024)
    w = listening_wire(cfg=cfg)
    (synack,) = w.send(syn_from_peer(mss=1460, wscale=7))
    assert synack.options.mss == 1460
    assert synack.options.wscale == cfg.rcv_wscale == 3
    (tcb,) = w.stack.tcbs.values()
    assert tcb.snd_wscale == 7 and tcb.rcv_wscale == 3


def test_listen_ack_draws_rst() -> None:
    """RFC 9293 3.10.7.2: LISTEN + ACK -> <SEQ=SEG.ACK><CTL=RST>."""
    w = listening_wire()
    (rst,) = w.send(TcpSegment(40000, 80, 7, 12345, ACK, 1000))
    check_segment(rst, RST, seq=12345)
    assert not w.stack.tcbs


def test_listen_rst_ignored() -> None:
    """RFC 9293 3.10.7.2: LISTEN + RST is ignored."""
    w = listening_wire()
    assert w.send(TcpSegment(40000, 80, 7, 0, RST, 0)) == []
    assert not w.stack.tcbs
    assert w.stack.counters["tcp_listen_rst_ignored"] == 1


def test_listen_syn_with_ece_cwr_accepted_without_ecn() -> None:
    """RFC 3168 6.1.1: an ECN-setup SYN (ECE|CWR) from a peer; a host not doing ECN
    (``ecn="off"``) answers with a plain SYN,ACK (neither ECE nor CWR)."""
    w = listening_wire(cfg=TcpConfig(ecn="off"))
    (synack,) = w.send(syn_from_peer(flags=SYN | ECE | CWR))
    check_segment(synack, SYN | ACK, ack=IRS + 1)
    assert not synack.flags & (ECE | CWR)


def test_listen_syn_queue_full_without_cookies_drops_syn() -> None:
    """RFC 9293 3.10.7.2 leaves queueing to the implementation: with SYN cookies off,
    a SYN beyond the SYN queue is dropped silently (the client retransmits)."""
    st = Stack(StackConfig(addresses=(ipaddress.IPv4Address("10.0.0.2"),),
                           syncookies="off"), rng=random.Random(1))
    w = Wire(st)
    st.listen(80, backlog=1, syn_backlog=1)
    assert len(w.send(syn_from_peer(src_port=1111))) == 1
    assert w.send(syn_from_peer(src_port=2222)) == []
    assert w.stack.counters["tcp_listen_overflow"] == 1
    assert len(st.tcbs) == 1


# --------------------------------------------------- MSS negotiation (3.7.1)


@pytest.mark.parametrize(("peer_mss", "eff"), [(536, 536), (1000, 1000), (1460, 1460),
                                               (9000, 1460), (None, 536)])
def test_mss_negotiation(peer_mss: int | None, eff: int) -> None:
    """RFC 9293 3.7.1: send at most min(peer MSS, our MSS); absent option -> 536."""
    tcb = tcb_established(mss=peer_mss)
    assert tcb.snd_mss == eff
    tcb.send(b"x" * 5000)
    segs = expect(tcb, 1.0)
    assert max(len(s.payload) for s in segs) == eff
    assert tcb.cc.cwnd >= initial_window(eff)


def test_mss_negotiation_active_open() -> None:
    """RFC 9293 3.7.1: the SYN,ACK's MSS bounds what the active opener sends."""
    tcb = tcb_established_active(mss=700)
    assert tcb.snd_mss == 700
    tcb = tcb_established_active(mss=None)
    assert tcb.snd_mss == 536


# ------------------------------------------------------------- SYN-RECEIVED


def test_syn_received_syn_ack_fields() -> None:
    """RFC 9293 3.10.7.2: <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>, RCV.NXT = SEG.SEQ+1."""
    tcb = tcb_listen_syn_received(keep_output=True)
    seg = expect_one(tcb, 0.0, SYN | ACK, seq=ISS, ack=IRS + 1)
    assert seg.options.mss == 1460
    assert tcb.snd_nxt == ISS + 1 and tcb.snd_una == ISS
    assert tcb.rcv_nxt == IRS + 1


def test_syn_received_ack_establishes() -> None:
    """RFC 9293 3.10.7.4 fifth step: SYN-RECEIVED + acceptable ACK -> ESTABLISHED."""
    tcb = tcb_listen_syn_received()
    tcb.receive(peer(tcb), 0.1)
    assert tcb.state is State.ESTABLISHED
    assert tcb.snd_una == ISS + 1
    assert tcb.take_events() == [ev.Established()]
    expect_nothing(tcb, 0.1)  # a bare ACK needs no answer


def test_syn_received_ack_with_data_establishes_and_delivers() -> None:
    """RFC 9293 3.10.7.4: the ACK completing the handshake may carry data."""
    tcb = tcb_listen_syn_received()
    tcb.receive(peer(tcb, ACK, payload=b"hello"), 0.1)
    assert tcb.state is State.ESTABLISHED
    assert tcb.recv() == b"hello"
    expect_one(tcb, 0.1, ACK, seq=ISS + 1, ack=IRS + 1 + 5)


def test_syn_received_rst_with_exact_seq_closes() -> None:
    """RFC 9293 3.10.7.4 second step: SYN-RECEIVED (passive) + RST -> back to LISTEN."""
    tcb = tcb_listen_syn_received()
    tcb.receive(peer(tcb, RST, ack=0), 0.1)
    assert tcb.state is State.CLOSED
    assert [type(e) for e in tcb.take_events()] == [ev.Terminated]


def test_syn_received_rst_returns_to_listen_via_stack() -> None:
    """RFC 9293 3.10.7.4: SYN-RECEIVED + RST (SEQ = RCV.NXT) returns to LISTEN: the TCB
    goes, the listener stays, and the backlog slot is released."""
    w = listening_wire(backlog=1)
    assert len(w.send(syn_from_peer(src_port=1111))) == 1
    listener = w.stack.listeners[80]
    assert listener.half_open == 1
    assert w.send(TcpSegment(1111, 80, IRS + 1, 0, RST, 0)) == []
    assert not w.stack.tcbs
    assert listener.half_open == 0
    # The listener still accepts, and the one-slot backlog has room again.
    (synack2,) = w.send(syn_from_peer(src_port=2222, seq=777))
    check_segment(synack2, SYN | ACK, ack=778)
    assert w.stack.counters["tcp_listen_overflow"] == 0


def test_syn_received_duplicate_syn_retransmits_syn_ack() -> None:
    """RFC 9293 3.10.7.4: a retransmitted SYN (our SYN,ACK was lost) gets the SYN,ACK again."""
    tcb = tcb_listen_syn_received()
    tcb.receive(syn_from_peer(), 0.5)
    seg = expect_one(tcb, 0.5, SYN | ACK, seq=ISS, ack=IRS + 1)
    assert seg.options.mss == 1460
    assert tcb.state is State.SYN_RECEIVED


@pytest.mark.parametrize("bad_ack", [ISS, ISS + 2, ISS - 5000, ISS + 100000])
def test_syn_received_bad_ack_draws_rst(bad_ack: int) -> None:
    """RFC 9293 3.10.7.4 fifth step: SYN-RECEIVED + unacceptable ACK -> <SEQ=SEG.ACK><CTL=RST>."""
    tcb = tcb_listen_syn_received()
    tcb.receive(peer(tcb, ACK, ack=bad_ack), 0.1)
    expect_one(tcb, 0.1, RST, seq=bad_ack)
    assert tcb.state is State.SYN_RECEIVED


def test_syn_received_synack_retransmitted_on_timeout() -> None:
    """RFC 6298 5.4/5.5, RFC 9293 3.8.1: SYN,ACK retransmitted with the RTO doubling."""
    tcb = tcb_listen_syn_received(keep_output=True)
    expect(tcb, 0.0, 1)
    assert tcb.next_deadline() == pytest.approx(1.0)
    tcb.handle_timer(1.0)
    expect_one(tcb, 1.0, SYN | ACK, seq=ISS, ack=IRS + 1)
    assert tcb.next_deadline() == pytest.approx(3.0)
    tcb.handle_timer(3.0)
    expect_one(tcb, 3.0, SYN | ACK, seq=ISS)
    assert tcb.next_deadline() == pytest.approx(7.0)


def test_syn_received_gives_up_after_synack_retries() -> None:
    """RFC 9293 3.8.3 (R2): give up after the configured number of retransmissions."""
    tcb = tcb_listen_syn_received(base_config(synack_retries=3))
    sent = 0
    while tcb.state is State.SYN_RECEIVED:
        d = tcb.next_deadline()
        assert d is not None
        tcb.handle_timer(d)
        sent += sum(1 for s in tcb.segments_to_send(d) if s.flags == SYN | ACK)
    assert sent == 3
    assert tcb.take_events() == [ev.Terminated("timeout")]


def test_syn_received_timeout_frees_backlog_in_stack() -> None:
    """RFC 9293 3.8.3 (R2 for SYN): give-up in SYN-RECEIVED removes the TCB and releases
    the backlog slot."""
    w = listening_wire(backlog=1, cfg=base_config(synack_retries=2))
    w.send(syn_from_peer(src_port=1111))
    synacks = 0
    for _ in range(10):
        d = w.stack.next_deadline()
        if d is None:
            break
        synacks += len(w.tick(d))
    assert synacks == 2
    assert not w.stack.tcbs
    assert w.stack.listeners[80].half_open == 0
    assert len(w.send(syn_from_peer(src_port=2222))) == 1


def test_syn_received_close_sends_fin_after_establishment() -> None:
    """RFC 9293 3.10.4: CLOSE in SYN-RECEIVED queues the FIN until ESTABLISHED."""
    tcb = tcb_listen_syn_received()
    tcb.close()
    expect_nothing(tcb, 0.05)
    tcb.receive(peer(tcb), 0.1)
    assert tcb.state is State.FIN_WAIT_1
    expect_one(tcb, 0.1, FIN | ACK, seq=ISS + 1, ack=IRS + 1)


# ----------------------------------------------------------------- SYN-SENT


def test_syn_sent_syn_has_mss_and_wscale() -> None:
    """RFC 9293 3.10.1 / 3.7.1 / RFC 7323 2.2: <SEQ=ISS><CTL=SYN> with MSS and window scale."""
    cfg = base_config(rcv_buf=256 * 1024)
    tcb = tcb_syn_sent(cfg, keep_output=True)
    seg = expect_one(tcb, 0.0, SYN, seq=ISS, ack=0)
    assert seg.options.mss == 1460
    assert seg.options.wscale == 3
    # Unscaled, and a multiple of 2**3 so that scaled windows can keep its edge.
    assert seg.window == 0xFFFF & ~7


def test_retransmitted_syn_ack_never_offers_less_than_an_ack_sent_before() -> None:
    """RFC 9293 3.8.6.2.2: the right edge never moves left. In SYN-RECEIVED the window
    stays what the SYN,ACK offered, and that is a multiple of the scale factor, so an
    ACK sent meanwhile (here to an out-of-window segment) and a retransmitted SYN,ACK
    offer exactly the same edge."""
    tcb = tcb_listen_syn_received(base_config(rcv_buf=256 * 1024), wscale=7)
    tcb.receive(peer(tcb, ACK, seq=tcb.rcv_nxt + 10**6), 0.05)
    (ack,) = expect(tcb, 0.05, 1)
    edge = ack.ack + (ack.window << tcb.rcv_wscale)
    deadline = tcb.next_deadline()
    assert deadline is not None
    tcb.handle_timer(deadline)
    (synack,) = expect(tcb, deadline, 1)
    assert synack.flags == SYN | ACK and synack.ack + synack.window == edge


def test_syn_sent_no_wscale_when_disabled() -> None:
    """RFC 7323 2.2: window scaling is optional; off means no option in the SYN."""
    tcb = tcb_syn_sent(base_config(window_scaling=False), keep_output=True)
    seg = expect_one(tcb, 0.0, SYN)
    assert seg.options.wscale is None


def test_syn_sent_syn_ack_establishes_and_acks() -> None:
    """RFC 9293 3.10.7.3: SYN-SENT + SYN,ACK -> ESTABLISHED, <SEQ=SND.NXT><ACK=RCV.NXT><ACK>."""
    tcb = tcb_syn_sent()
    tcb.receive(TcpSegment(40000, 80, IRS, ISS + 1, SYN | ACK, 1000, TcpOptions(mss=1400)), 0.1)
    assert tcb.state is State.ESTABLISHED
    assert tcb.take_events() == [ev.Established()]
    expect_one(tcb, 0.1, ACK, seq=ISS + 1, ack=IRS + 1)
    assert tcb.snd_una == ISS + 1
    assert tcb.snd_wnd == 1000
    assert tcb.irs == IRS


def test_syn_sent_syn_ack_with_wscale_scales_later_windows() -> None:
    """RFC 7323 2.2: the SYN,ACK window is unscaled, later windows are shifted by SND.WND.SCALE."""
    tcb = tcb_syn_sent(base_config(rcv_buf=256 * 1024))
    tcb.receive(TcpSegment(40000, 80, IRS, ISS + 1, SYN | ACK, 1000,
                           TcpOptions(mss=1460, wscale=4)), 0.1)
    assert tcb.snd_wnd == 1000
    expect(tcb, 0.1)
    tcb.receive(peer(tcb, window=1000), 0.2)
    assert tcb.snd_wnd == 16000
    assert tcb.rcv_wscale == 3


def test_syn_sent_syn_ack_without_wscale_disables_scaling() -> None:
    """RFC 7323 2.2: scaling is used only if both SYNs carried the option."""
    tcb = tcb_syn_sent(base_config(rcv_buf=256 * 1024))
    tcb.receive(TcpSegment(40000, 80, IRS, ISS + 1, SYN | ACK, 1000, TcpOptions(mss=1460)), 0.1)
    assert tcb.snd_wscale == 0 and tcb.rcv_wscale == 0
    ack = expect_one(tcb, 0.1, ACK)
    assert ack.window == 0xFFFF  # unscaled window, capped at 16 bits


def test_syn_sent_rst_with_acceptable_ack_refused() -> None:
    """RFC 9293 3.10.7.3: SYN-SENT + RST with an acceptable ACK -> "connection refused"."""
    tcb = tcb_syn_sent()
    tcb.receive(TcpSegment(40000, 80, 0, ISS + 1, RST | ACK, 0), 0.1)
    assert tcb.state is State.CLOSED
    assert tcb.take_events() == [ev.Terminated("refused")]
    expect_nothing(tcb, 0.1)


def test_syn_sent_rst_without_ack_ignored() -> None:
    """RFC 9293 3.10.7.3 / RFC 5961 3.2: in SYN-SENT a RST without ACK is dropped."""
    tcb = tcb_syn_sent()
    tcb.receive(TcpSegment(40000, 80, 0, 0, RST, 0), 0.1)
    assert tcb.state is State.SYN_SENT
    assert tcb.take_events() == []
    expect_nothing(tcb, 0.1)


@pytest.mark.parametrize("bad_ack", [ISS, ISS - 1, ISS + 2, ISS + 70000])
def test_syn_sent_bad_ack_draws_rst(bad_ack: int) -> None:
    """RFC 9293 3.10.7.3 first: SEG.ACK =< ISS or > SND.NXT -> <SEQ=SEG.ACK><CTL=RST>."""
    tcb = tcb_syn_sent()
    tcb.receive(TcpSegment(40000, 80, IRS, bad_ack, SYN | ACK, 1000), 0.1)
    expect_one(tcb, 0.1, RST, seq=bad_ack)
    assert tcb.state is State.SYN_SENT


def test_syn_sent_bad_ack_with_rst_is_silently_dropped() -> None:
    """RFC 9293 3.10.7.3: "If the RST bit is set, discard the segment and return" -- no
    RST in reply to a RST."""
    tcb = tcb_syn_sent()
    tcb.receive(TcpSegment(40000, 80, IRS, ISS + 77, RST | ACK, 0), 0.1)
    expect_nothing(tcb, 0.1)
    assert tcb.state is State.SYN_SENT


def test_syn_sent_segment_without_syn_or_rst_dropped() -> None:
    """RFC 9293 3.10.7.3 fifth: neither SYN nor RST -> drop."""
    tcb = tcb_syn_sent()
    tcb.receive(TcpSegment(40000, 80, IRS, ISS + 1, ACK, 1000), 0.1)
    assert tcb.state is State.SYN_SENT
    expect_nothing(tcb, 0.1)


def test_syn_sent_simultaneous_open_syn_received() -> None:
    """RFC 9293 3.10.7.3 fourth (simultaneous open): SYN without ACK -> SYN-RECEIVED,
    <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>; the peer's ACK then establishes."""
    tcb = tcb_syn_sent()
    tcb.receive(TcpSegment(40000, 80, IRS, 0, SYN, 2000, TcpOptions(mss=1460)), 0.1)
    assert tcb.state is State.SYN_RECEIVED
    expect_one(tcb, 0.1, SYN | ACK, seq=ISS, ack=IRS + 1)
    tcb.receive(TcpSegment(40000, 80, IRS + 1, ISS + 1, ACK, 2000), 0.2)
    assert tcb.state is State.ESTABLISHED
    assert tcb.take_events() == [ev.Established()]


def test_simultaneous_open_two_tcbs() -> None:
    """RFC 9293 3.5 figure 8: both sides send SYN, both end ESTABLISHED, data flows."""
    cfg = base_config()
    a = Tcb.active_open(cfg, REMOTE, LOCAL, 111, 0.0)
    b = Tcb.active_open(cfg, LOCAL, REMOTE, 999, 0.0)
    syn_a = a.segments_to_send(0.0)
    syn_b = b.segments_to_send(0.0)
    for s in syn_a:
        b.receive(s, 0.01)
    for s in syn_b:
        a.receive(s, 0.01)
    assert a.state is State.SYN_RECEIVED and b.state is State.SYN_RECEIVED
    pair = Pair(a, b, now=0.01)
    pair.run(until=lambda: a.state is State.ESTABLISHED and b.state is State.ESTABLISHED)
    a.send(b"ping")
    pair.run(until=lambda: b.recv_buffered == 4)
    assert b.recv() == b"ping"
    assert ev.Established() in a.take_events() and ev.Established() in b.take_events()


def test_syn_sent_syn_retransmitted_with_exponential_backoff() -> None:
    """RFC 6298 2.1/5.5, RFC 9293 3.8.1: SYN retransmitted at 1, 3, 7, 15 s (RTO doubling)."""
    tcb = tcb_syn_sent(base_config(rto_initial=1.0))
    times = []
    for _ in range(4):
        d = tcb.next_deadline()
        assert d is not None
        tcb.handle_timer(d)
        expect_one(tcb, d, SYN, seq=ISS)
        times.append(d)
    assert times == pytest.approx([1.0, 3.0, 7.0, 15.0])


def test_syn_sent_gives_up_after_syn_retries() -> None:
    """RFC 9293 3.8.3 (R2 for SYN): give up after syn_retries retransmissions -> timeout."""
    tcb = tcb_syn_sent(base_config(syn_retries=3))
    syns = 0
    for _ in range(10):
        d = tcb.next_deadline()
        if d is None:
            break
        tcb.handle_timer(d)
        syns += len(tcb.segments_to_send(d))
    assert syns == 3
    assert tcb.state is State.CLOSED
    assert tcb.take_events() == [ev.Terminated("timeout")]


def test_syn_sent_close_deletes_tcb() -> None:
    """RFC 9293 3.10.4: CLOSE in SYN-SENT deletes the TCB, nothing is sent."""
    tcb = tcb_syn_sent()
    tcb.close()
    assert tcb.state is State.CLOSED
    assert tcb.take_events() == [ev.Terminated(None)]
    expect_nothing(tcb, 0.0)
    assert tcb.next_deadline() is None


def test_syn_sent_data_queued_goes_after_establishment() -> None:
    """RFC 9293 3.10.2: SEND in SYN-SENT queues the data until ESTABLISHED."""
    tcb = tcb_syn_sent()
    tcb.send(b"early")
    expect_nothing(tcb, 0.0)
    tcb.receive(TcpSegment(40000, 80, IRS, ISS + 1, SYN | ACK, 1000, TcpOptions(mss=1460)), 0.1)
    expect_one(tcb, 0.1, ACK | PSH, seq=ISS + 1, ack=IRS + 1, payload=b"early")


def test_syn_sent_karn_no_rtt_sample_from_retransmitted_syn() -> None:
    """RFC 6298 3 (Karn): the SYN,ACK answering a retransmitted SYN gives no RTT sample."""
    tcb = tcb_syn_sent()
    tcb.handle_timer(1.0)
    expect(tcb, 1.0)
    tcb.receive(TcpSegment(40000, 80, IRS, ISS + 1, SYN | ACK, 65535, TcpOptions(mss=1460)), 1.1)
    assert tcb.rtt.srtt is None


def test_syn_sent_rtt_sample_from_syn() -> None:
    """RFC 6298 2.2: the SYN's round trip is the first RTT measurement."""
    tcb = tcb_syn_sent(now=5.0)
    tcb.receive(TcpSegment(40000, 80, IRS, ISS + 1, SYN | ACK, 65535, TcpOptions(mss=1460)), 5.25)
    assert tcb.rtt.srtt == pytest.approx(0.25)


def test_syn_received_lost_synack_initial_window_is_one_segment() -> None:
    """RFC 5681 3.1 / RFC 6928 2: after the SYN,ACK had to be retransmitted, the initial
    window is one segment."""
    tcb = tcb_listen_syn_received()
    tcb.handle_timer(1.0)
    expect_one(tcb, 1.0, SYN | ACK)
    tcb.receive(peer(tcb), 1.1)
    assert tcb.state is State.ESTABLISHED
    tcb.send(b"x" * 20000)
    segs = expect(tcb, 1.1)
    assert [len(s.payload) for s in segs] == [1460]


# ------------------------------------------ regressions: engine bugs found here


def test_syn_sent_window_after_syn_ack_never_exceeds_rcv_buf() -> None:
    """RFC 9293 3.8.6.2.2 / 3.3.1: RCV.WND is what the receive buffer can take."""
    cfg = base_config(rcv_buf=4096, window_scaling=False)
    tcb = tcb_syn_sent(cfg)
    irs = 0xBFFFFFFF  # any IRS with 0 < (65535 - IRS - 1) mod 2**32 < 2**31 shows it
    tcb.receive(TcpSegment(40000, 80, irs, ISS + 1, SYN | ACK, 65535, TcpOptions(mss=1460)), 0.1)
    ack = expect_one(tcb, 0.1, ACK)
    for i in range(10):
        tcb.receive(peer(tcb, seq=irs + 1 + 1460 * i, payload=b"x" * 1460), 0.2)
    assert ack.window <= 4096
    assert tcb.recv_buffered <= 4096


def test_handshake_does_not_grow_initial_window() -> None:
    """RFC 6928 2: "Neither the SYN/ACK nor its acknowledgment (ACK) in the three-way
    handshake should increase the initial window size." """
    assert tcb_established().cc.cwnd == initial_window(1460)
    assert tcb_established_active().cc.cwnd == initial_window(1460)


def test_syn_sent_lost_syn_initial_window_is_one_segment() -> None:
    """RFC 5681 3.1 / RFC 6928 2: if the SYN or SYN/ACK is lost, the initial window
    after a correctly transmitted SYN MUST be one segment."""
    tcb = tcb_syn_sent()
    tcb.handle_timer(1.0)  # SYN lost, retransmitted
    expect_one(tcb, 1.0, SYN)
    tcb.receive(TcpSegment(40000, 80, IRS, ISS + 1, SYN | ACK, 65535, TcpOptions(mss=1460)), 1.1)
    expect(tcb, 1.1)
    tcb.send(b"x" * 20000)
    segs = expect(tcb, 1.1)
    assert sum(len(s.payload) for s in segs) <= 1460


@pytest.mark.parametrize("side", ["active", "passive"])
def test_lost_syn_rto_reinitialised_to_3s(side: str) -> None:
    """RFC 6298 5.7: if the timer expired awaiting the ACK of a SYN and RTO < 3 s, RTO MUST
    be re-initialised to 3 s when data transmission begins."""
    if side == "active":
        tcb = tcb_syn_sent()
        tcb.handle_timer(1.0)
        expect(tcb, 1.0)
        tcb.receive(TcpSegment(40000, 80, IRS, ISS + 1, SYN | ACK, 65535,
                               TcpOptions(mss=1460)), 1.1)
    else:
        tcb = tcb_listen_syn_received()
        tcb.handle_timer(1.0)
        expect(tcb, 1.0)
        tcb.receive(peer(tcb), 1.1)
    assert tcb.state is State.ESTABLISHED
    expect(tcb, 1.1)
    tcb.send(b"data")
    expect(tcb, 1.2)
    d = tcb.next_deadline()
    assert d is not None
    assert d - 1.2 >= 3.0 - 1e-9
