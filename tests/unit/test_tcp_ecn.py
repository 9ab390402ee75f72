"""ECN (RFC 3168): negotiation, ECT on new data only, the receiver's ECE echo until
CWR, the sender's once-per-window reduction, SYN cookies carrying ECN, the IP
header's ECN field in and out, and the impairment's CE marking."""

from __future__ import annotations

import ipaddress
import random

import pytest
from tcp_helpers import (
    IRS,
    ISS,
    LOCAL,
    REMOTE,
    REMOTE_PORT,
    base_config,
    drain,
    expect,
    ip,
    opening_ladder,
    parse,
    peer,
    peer_tsval,
    stack_pair,
    syn_with_options,
)
from test_stack_end_to_end import transfer

from tcpstack.link.impair import Impairment, ImpairSpec, mark_ce
from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.seq import seq_add
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire import checksum as ck
from tcpstack.wire.ipv4 import parse_ipv4
from tcpstack.wire.tcp import (
    ACK,
    CE,
    CWR,
    ECE,
    ECT_0,
    NOT_ECT,
    SYN,
    OutSegment,
    TcpOptions,
    TcpSegment,
    emit_tcp,
    parse_tcp,
)

SETUP = ECE | CWR


def passive(flags: int = SYN | SETUP, **cfg: object) -> Tcb:
    syn = syn_with_options(flags=flags, sack=True)
    return Tcb.passive_open(base_config(**cfg), LOCAL, REMOTE, syn, ISS, 0.0)


def established(**cfg: object) -> Tcb:
    """A passive connection that agreed to ECN, quiescent."""
    tcb = passive(**cfg)
    drain(tcb, 0.0)
    tcb.receive(peer(tcb), 0.1)
    assert tcb.state is State.ESTABLISHED and tcb.ecn_ok
    return drain(tcb, 0.1)


# ------------------------------------------------------------------ negotiation


def test_ecn_setup_syn_gets_an_ecn_setup_syn_ack_by_default() -> None:
    """RFC 3168 6.1.1: SYN with ECE and CWR -> SYN,ACK with ECE only; as Linux's
    default (tcp_ecn=2) we agree when asked."""
    tcb = passive()
    (synack,) = expect(tcb, 0.0, 1)
    assert synack.flags == SYN | ACK | ECE
    assert synack.ecn == NOT_ECT  # SYN,ACKs are never ECT (6.1.1)
    assert tcb.ecn_ok


def test_a_syn_without_ecn_flags_gets_no_ecn() -> None:
    """(ECE alone or CWR alone asks for Accurate ECN: RFC 9768 3.1.2, in
    test_tcp_accecn.py.)"""
    tcb = passive(SYN)
    (synack,) = expect(tcb, 0.0, 1)
    assert not synack.flags & SETUP and not tcb.ecn_ok


def test_ecn_off_declines() -> None:
    tcb = passive(ecn="off")
    (synack,) = expect(tcb, 0.0, 1)
    assert synack.flags == SYN | ACK and not tcb.ecn_ok


def _active(mode: str) -> tuple[Tcb, OutSegment]:
    tcb = Tcb.active_open(base_config(ecn=mode), LOCAL, REMOTE, ISS, 0.0)
    (syn,) = expect(tcb, 0.0, 1)
    return tcb, syn


@pytest.mark.parametrize(("reply", "agreed"), [(ECE, True), (ECE | CWR, False), (0, False)])
def test_active_open_asks_when_on_and_agrees_only_on_an_ecn_setup_syn_ack(
        reply: int, agreed: bool) -> None:
    """RFC 3168 6.1.1: our SYN has ECE|CWR; ECE alone back means yes, ECE and CWR
    (a reflected SYN) or neither means no."""
    tcb, syn = _active("on")
    assert syn.flags == SYN | SETUP
    tcb.receive(TcpSegment(REMOTE_PORT, 80, IRS, seq_add(ISS, 1), SYN | ACK | reply, 65535,
                           TcpOptions(mss=1460)), 0.1)
    assert tcb.state is State.ESTABLISHED and tcb.ecn_ok is agreed


def test_active_open_does_not_ask_by_default() -> None:
    _, syn = _active("passive")
    assert not syn.flags & SETUP


def test_a_retransmitted_syn_stops_asking() -> None:
    """RFC 3168 6.1.1.1: an ECN-setup SYN may be what a middlebox drops; Linux resends
    a plain one."""
    tcb, syn = _active("on")
    assert syn.flags == SYN | SETUP
    tcb.handle_timer(1.5)
    (again,) = expect(tcb, 1.5, 1)
    assert again.flags == SYN


def test_a_syn_cookie_carries_ecn_in_its_timestamp() -> None:
    """Stateless, as Linux: the cookie SYN,ACK agrees (ECE) and the TSval's bit comes
    back in the ACK, making the connection ECN-capable."""
    st = Stack(StackConfig(addresses=(ipaddress.IPv4Address("10.0.0.2"),),
                           syncookies="always"), rng=random.Random(3))
    st.listen(80)
    syn = syn_with_options(flags=SYN | SETUP, sack=True, wscale=7, ts=(peer_tsval(0), 0))
    st.receive(emit_tcp(syn._replace(dst_port=80), ip("10.0.0.1"), ip("10.0.0.2"), 1), 0.0)
    (pkt,) = st.packets_to_send(0.0)
    synack = parse(pkt).seg
    assert synack.flags == SYN | ACK | ECE and synack.options.timestamps is not None
    ack = TcpSegment(REMOTE_PORT, 80, seq_add(IRS, 1), seq_add(synack.seq, 1), ACK, 1000,
                     TcpOptions(timestamps=(peer_tsval(0.01), synack.options.timestamps[0])))
    st.receive(emit_tcp(ack, ip("10.0.0.1"), ip("10.0.0.2"), 2), 0.01)
    (tcb,) = st.tcbs.values()
    assert tcb.state is State.ESTABLISHED and tcb.ecn_ok


# ------------------------------------------------------------------ sender


def test_new_data_is_ect0_retransmissions_and_pure_acks_are_not() -> None:
    """RFC 3168 6.1.5 (no ECT on retransmissions) and 6.1.4 (nor on pure ACKs)."""
    tcb = established()
    tcb.send(b"x" * 3000)
    segs = expect(tcb, 0.2)
    assert segs and all(s.ecn == ECT_0 for s in segs)
    tcb.handle_timer(5.0)  # a probe or the RTO: a segment sent before, again
    (rtx,) = expect(tcb, 5.0, 1)
    assert rtx.seq in {s.seq for s in segs} and rtx.ecn == NOT_ECT
    tcb.receive(peer(tcb, payload=b"hi"), 5.1)
    acks = [s for s in expect(tcb, 5.1) if not s.payload]
    assert acks and all(s.ecn == NOT_ECT for s in acks)


def test_ece_reduces_the_window_once_per_window_and_the_next_data_has_cwr() -> None:
    """RFC 3168 6.1.2: halve (CUBIC: x0.7) on ECE, at most once per window of data,
    no retransmission; the first new data after it carries CWR."""
    tcb = established(congestion_control="cubic")
    tcb.send(b"x" * 40_000)
    first = expect(tcb, 0.2)
    cwnd = tcb.cc.cwnd
    tcb.receive(peer(tcb, ack=first[0].seq + len(first[0].payload), flags=ACK | ECE), 0.3)
    assert tcb.counters["tcp_ecn_ece_reduced"] == 1
    assert tcb.cc.ssthresh == int(cwnd * 0.7)
    assert tcb.scoreboard.lost_bytes == 0
    after = expect(tcb, 0.3)
    assert after and after[0].flags & CWR and after[0].seq == first[-1].seq + 1460
    assert not any(s.flags & CWR for s in after[1:])
    # More ECE within the same window: no second reduction.
    tcb.receive(peer(tcb, ack=first[1].seq + 1460, flags=ACK | ECE), 0.31)
    assert tcb.counters["tcp_ecn_ece_reduced"] == 1
    # Once all of that window is acknowledged, a new ECE reduces again.
    tcb.receive(peer(tcb, flags=ACK), 0.4)
    expect(tcb, 0.4)
    tcb.send(b"y" * 3000)
    expect(tcb, 0.41)
    tcb.receive(peer(tcb, flags=ACK | ECE), 0.5)
    assert tcb.counters["tcp_ecn_ece_reduced"] == 2


def test_ece_is_ignored_without_ecn() -> None:
    tcb = established(ecn="passive")
    tcb.ecn_ok = False
    tcb.send(b"x" * 10_000)
    expect(tcb, 0.2)
    cwnd = tcb.cc.cwnd
    tcb.receive(peer(tcb, flags=ACK | ECE), 0.3)
    assert tcb.cc.cwnd >= cwnd and tcb.counters["tcp_ecn_ece_reduced"] == 0


# ------------------------------------------------------------------ receiver


def test_ce_is_echoed_at_once_and_until_cwr() -> None:
    """RFC 3168 6.1.3: CE -> ECE on every segment we send until a CWR arrives; the
    first ACK goes at once (not delayed, as Linux's quick ACK on CE)."""
    tcb = established(delayed_ack=0.2)
    tcb.receive(peer(tcb, payload=b"a" * 100)._replace(ecn=CE), 0.2)
    (ack,) = expect(tcb, 0.2, 1)
    assert ack.flags & ECE and tcb.counters["tcp_ecn_ce_received"] == 1
    tcb.send(b"reply")
    (data,) = expect(tcb, 0.21, 1)
    assert data.flags & ECE  # data too carries the echo
    tcb.receive(peer(tcb, payload=b"b" * 100, flags=ACK | CWR), 0.3)
    after = expect(tcb, 0.3)
    tcb.handle_timer(0.7)  # the delayed ACK of that data
    after += expect(tcb, 0.7)
    assert after and not any(seg.flags & ECE for seg in after)
    assert not tcb.ecn_echo


def test_ce_and_cwr_together_keep_echoing() -> None:
    """A CWR for the old mark on a segment itself marked: the echo goes on."""
    tcb = established()
    tcb.receive(peer(tcb, payload=b"a")._replace(ecn=CE), 0.2)
    expect(tcb, 0.2)
    tcb.receive(peer(tcb, payload=b"b", flags=ACK | CWR)._replace(ecn=CE), 0.3)
    (ack,) = expect(tcb, 0.3, 1)
    assert ack.flags & ECE


def test_ce_without_ecn_agreed_is_not_echoed() -> None:
    tcb = established(ecn="passive")
    tcb.ecn_ok = False
    tcb.receive(peer(tcb, payload=b"a")._replace(ecn=CE), 0.2)
    assert not any(s.flags & ECE for s in expect(tcb, 0.2))


# ------------------------------------------------------------------ the IP header


@pytest.mark.parametrize(("src", "dst"), [("10.0.0.2", "10.0.0.1"), ("fd00::2", "fd00::1")])
def test_the_ecn_field_goes_into_the_ip_header_and_comes_back_out(src: str,
                                                                  dst: str) -> None:
    s, d = int(ipaddress.ip_address(src)), int(ipaddress.ip_address(dst))
    seg = OutSegment(80, 40000, 1, 2, ACK, 100, payload=b"data", ecn=ECT_0)
    pkt = emit_tcp(seg, s, d, 1)
    field = pkt[1] & 3 if s < 1 << 32 else (pkt[1] >> 4) & 3
    assert field == ECT_0
    if s < 1 << 32:
        assert ck.checksum(pkt[:20]) == 0  # the header checksum covers the TOS byte
    marked = mark_ce(pkt)
    assert marked is not None
    st = Stack(StackConfig(addresses=(ipaddress.ip_address(dst),)))
    seen: list[int] = []
    st.attach_observer(_Recorder(seen))
    st.receive(marked, 0.0)
    assert seen == [CE]


class _Recorder:
    def __init__(self, seen: list[int]) -> None:
        self.seen = seen

    def before_segment(self, key: object, seg: TcpSegment, now: float) -> None:
        self.seen.append(seg.ecn)

    def after_segment(self, *args: object) -> None: ...

    def on_send(self, *args: object) -> None: ...

    def on_control(self, *args: object) -> None: ...

    def on_open(self, *args: object) -> None: ...

    def on_close(self, *args: object) -> None: ...


def test_mark_ce_marks_only_ecn_capable_packets() -> None:
    plain = emit_tcp(OutSegment(80, 40000, 1, 2, ACK, 100), ip("10.0.0.2"), ip("10.0.0.1"), 1)
    assert mark_ce(plain) is None
    ect = emit_tcp(OutSegment(80, 40000, 1, 2, ACK, 100, ecn=ECT_0), ip("10.0.0.2"),
                   ip("10.0.0.1"), 1)
    marked = mark_ce(ect)
    assert marked is not None and marked[1] & 3 == CE
    assert ck.checksum(marked[:20]) == 0
    assert mark_ce(marked) is None  # already CE
    assert parse_tcp(parse_ipv4(marked).payload, ip("10.0.0.2"), ip("10.0.0.1"))


def test_impairment_marks_above_its_threshold_and_keeps_its_random_decisions() -> None:
    """mark=N: ECN-capable packets meeting N or more queued are marked, the others
    queue unmarked; the seven draws per packet are unchanged, so loss decisions match
    a run without marking."""
    ect = bytes(emit_tcp(OutSegment(80, 40000, 1, 2, ACK, 100, payload=b"x" * 1000,
                                    ecn=ECT_0), ip("10.0.0.2"), ip("10.0.0.1"), 1))
    spec = ImpairSpec.parse("rate=100kbps,queue=50,mark=5,loss=10,seed=3")
    assert str(ImpairSpec.parse(str(spec))) == str(spec)
    with_mark, without = Impairment(spec), Impairment(ImpairSpec.parse(
        "rate=100kbps,queue=50,loss=10,seed=3"))
    for imp in (with_mark, without):
        imp.outbound([ect] * 30, 0.0)
    assert with_mark.counters["out_ce_marked"] == 25  # the 6th packet on meets 5 queued
    assert with_mark.counters["out_dropped"] == without.counters["out_dropped"]
    with pytest.raises(ValueError, match="rate"):
        ImpairSpec.parse("mark=5")


# ------------------------------------------------------------------ end to end


def test_ecn_through_a_marking_bottleneck_avoids_the_losses_a_tail_drop_causes() -> None:
    """Two stacks asking for ECN through a 2 MB/s bottleneck that marks at 8 queued
    packets and drops at 40: the marks slow the sender before the queue overflows --
    no tail drops, no retransmissions -- where the same path without ECN drops."""
    path = ImpairSpec.parse("rate=2mbps,queue=40,mark=8,delay=5ms,seed=1")
    results = {}
    for mode in ("on", "off"):
        net = stack_pair(TcpConfig(msl=1.0, ecn=mode), path=path)
        client, server = transfer(net, 1_000_000, 0)
        assert bytes(server.received) == client.data
        counters = net.path.counters
        results[mode] = (counters["out_tail_dropped"] + counters["in_tail_dropped"],
                         counters["out_ce_marked"] + counters["in_ce_marked"],
                         net.a.counters["tcp_ecn_ece_reduced"],
                         net.b.counters["tcp_ecn_ce_received"])
    drops, marks, reductions, ce = results["on"]
    assert drops == 0 and marks > 0 and reductions > 0 and ce == marks
    assert results["off"][0] > 0 and results["off"][1] == 0


def test_a_loss_while_reducing_for_ece_is_recovered_without_a_second_reduction() -> None:
    """RFC 3168 6.1.2: one reduction per window; a loss found during it becomes fast
    recovery (the hole is resent) with the window already reduced, as Linux's
    CWR -> Recovery."""
    tcb = established()
    tcb.send(b"x" * 14_600)
    sent = expect(tcb, 0.2)
    assert len(sent) == 10
    tcb.receive(peer(tcb, ack=sent[1].seq, flags=ACK | ECE), 0.3)  # the first one
    ssthresh = tcb.cc.ssthresh
    expect(tcb, 0.3)
    # The second segment is lost: the rest arrive and are SACKed.
    blocks = ((sent[2].seq, sent[-1].seq + 1460),)
    for i in range(3):
        tcb.receive(peer(tcb, ack=sent[1].seq,
                         options=TcpOptions(sack_blocks=blocks)), 0.31 + i / 1000)
    out = expect(tcb, 0.32) + expect(tcb, 0.5)
    tcb.handle_timer(0.5)
    out += expect(tcb, 0.5)
    assert any(s.seq == sent[1].seq for s in out), out  # the hole, resent
    assert tcb.cc.ssthresh == ssthresh
    assert tcb.counters["tcp_ecn_ece_reduced"] == 1
    assert tcb.recovery_point is not None and not tcb.in_cwr


def _established_without_sack() -> Tcb:
    syn = syn_with_options(flags=SYN | SETUP, sack=False)
    tcb = Tcb.passive_open(base_config(), LOCAL, REMOTE, syn, ISS, 0.0)
    drain(tcb, 0.0)
    tcb.receive(peer(tcb), 0.1)
    assert tcb.ecn_ok and not tcb.sack_ok
    return drain(tcb, 0.1)


def test_without_sack_the_reduction_for_ece_retransmits_nothing() -> None:
    """No loss, no retransmission: the ACKs of the reduction's round are not NewReno
    partial ACKs (RFC 6582 applies to recovery from a loss)."""
    tcb = _established_without_sack()
    tcb.send(b"x" * 14_600)
    sent = expect(tcb, 0.2)
    for i, seg in enumerate(sent[:6]):
        flags = ACK | ECE if i == 0 else ACK
        tcb.receive(peer(tcb, ack=seg.seq + len(seg.payload), flags=flags), 0.3 + i / 100)
        for out in expect(tcb, 0.3 + i / 100):
            assert seq_add(out.seq, 0) not in {s.seq for s in sent}, "a retransmission"
    assert tcb.counters["tcp_ecn_ece_reduced"] == 1
    assert not any(k.startswith("tcp_retrans") for k in tcb.counters if tcb.counters[k])


def test_three_duplicate_acks_during_the_reduction_still_mean_a_loss_without_sack() -> None:
    tcb = _established_without_sack()
    tcb.send(b"x" * 14_600)
    sent = expect(tcb, 0.2)
    tcb.receive(peer(tcb, ack=sent[1].seq, flags=ACK | ECE), 0.3)
    expect(tcb, 0.3)
    for i in range(3):
        tcb.receive(peer(tcb, ack=sent[1].seq), 0.31 + i / 1000)
    out = expect(tcb, 0.32)
    assert any(s.seq == sent[1].seq for s in out), out  # fast retransmit of the hole
    assert tcb.counters["tcp_ecn_ece_reduced"] == 1 and not tcb.in_cwr


def test_cwr_follows_a_reduction_for_loss_too_and_later_ece_of_that_window_is_ignored(
        ) -> None:
    """RFC 3168 6.1.2: CWR goes on the first new data after any reduction; a receiver
    still echoing marks from the same window causes no second reduction."""
    tcb = established()
    tcb.send(b"x" * 14_600)
    sent = expect(tcb, 0.2)
    blocks = ((sent[2].seq, sent[-1].seq + 1460),)
    for i in range(3):
        tcb.receive(peer(tcb, ack=sent[1].seq, options=TcpOptions(sack_blocks=blocks)),
                    0.3 + i / 1000)
    expect(tcb, 0.31)
    tcb.handle_timer(0.5)
    expect(tcb, 0.5)
    ssthresh = tcb.cc.ssthresh
    assert tcb.cwr_pending
    tcb.receive(peer(tcb, ack=sent[1].seq, flags=ACK | ECE,
                     options=TcpOptions(sack_blocks=blocks)), 0.51)
    assert tcb.cc.ssthresh == ssthresh and tcb.counters["tcp_ecn_ece_reduced"] == 0
    tcb.receive(peer(tcb, flags=ACK), 0.6)  # everything, the hole too
    tcb.send(b"more")
    (data,) = [s for s in expect(tcb, 0.61) if s.payload]
    assert data.flags & CWR


def test_ece_on_an_old_ack_is_ignored() -> None:
    tcb = established()
    tcb.send(b"x" * 14_600)
    sent = expect(tcb, 0.2)
    tcb.receive(peer(tcb, ack=sent[4].seq), 0.3)
    tcb.receive(peer(tcb, ack=sent[2].seq, flags=ACK | ECE), 0.31)  # reordered, stale
    assert tcb.counters["tcp_ecn_ece_reduced"] == 0


def test_ce_on_a_segment_without_data_is_not_echoed() -> None:
    """As Linux: only data counts (a peer marking its pure ACKs ECN-capable does not
    make us echo)."""
    tcb = established()
    tcb.receive(peer(tcb)._replace(ecn=CE), 0.2)
    assert not tcb.ecn_echo and tcb.counters["tcp_ecn_ce_received"] == 0


def test_ladder_and_table_show_ecn() -> None:
    from tcpstack.observe.ladder import render_text
    from tcpstack.observe.table import render_rows, rows
    net = stack_pair(TcpConfig(ecn="on"))
    doc, _ = opening_ladder(net)
    flags = [e["flags"] for e in doc["events"]]
    assert "ECE" in flags[0] and "CWR" in flags[0] and "ECE" in flags[1]
    assert "ECN on (RFC 3168)" in render_text(doc)  # type: ignore[arg-type]
    (row,) = rows(net.b, None, net.now)
    assert " ecn " in render_rows([row], info=True)
