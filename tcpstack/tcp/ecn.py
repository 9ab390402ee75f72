"""Explicit Congestion Notification in TCP: classic (RFC 3168 6.1), as Linux does
it, and Accurate ECN (RFC 9768).

Negotiation (RFC 3168 6.1.1): an ECN-setup SYN carries ECE and CWR, an ECN-setup
SYN,ACK ECE alone; any other combination means no ECN. ``TcpConfig.ecn`` is
"passive" (agree when asked: Linux's default ``tcp_ecn=2``), "on" (ask in our
SYNs too: ``tcp_ecn=1``), "accecn" (ask for Accurate ECN: AE, CWR and ECE, as
Linux's ``tcp_ecn=3``) or "off". Every mode but "off" agrees to what a peer's SYN
asks, AccECN included. A SYN that has to be retransmitted asks no more (6.1.1.1:
a middlebox may drop ECN-setup SYNs), as Linux's; an AccECN SYN,ACK likewise goes
again without its flags (RFC 9768 3.1.4), and an AccECN end that sent or got such
a flagless handshake packet sends no ECT (3.1.5).

Once agreed:

* the **sender** marks new data ECT(0) -- not retransmissions, pure ACKs, window
  probes or SYNs (6.1.5, 6.1.6) -- and answers an ACK carrying ECE at most once
  per window of data (6.1.2) with the reduction a loss would cause, spread over
  the round trip by proportional rate reduction and without retransmitting
  (Linux's CWR state); the next new data segment carries CWR. A loss detected
  during that round turns it into fast recovery without a second reduction.
* the **receiver**, when a segment arrives with CE in its IP header, sets ECE on
  every segment it sends until a segment with CWR arrives (6.1.3), and sends the
  ACK reporting the first CE at once instead of delaying it (as Linux's quick-ACK
  on CE).

With **Accurate ECN** (RFC 9768; the counters and tables in
:mod:`tcpstack.tcp.accecn`) there is no ECE echo and no CWR: every segment but a
SYN or RST carries the ACE field, the count of CE-marked packets received (mod 8),
and pure ACKs the AccECN option (byte counts per codepoint) where it fits beside
SACK blocks -- once the peer has sent one (its SYN,ACK, or the client's first ACK).
The receiver ACKs at once when the codepoint of arriving data changes or two CE
marks await feedback (3.2.2.5.1). The sender takes the ACE change on each ACK
that delivers data (guarded against wrap, Appendix A.2) and, for any new marks,
reduces the window as for ECE: once per round trip (the classic reaction, as
Linux's CUBIC and Reno over AccECN). The handshake's reflections (Tables 2 and 4)
show whether the path mangles the IP-ECN field; if so our data goes Not-ECT, while
feedback goes on (3.1.5, 3.2.2.3). Data goes ECT(0), new data only, as classic.

Counters: ``tcp_ecn_ce_received`` (segments that arrived marked CE),
``tcp_ecn_ece_reduced`` (window reductions for ECE or AccECN feedback),
``tcp_ecn_cwr_received``, ``tcp_accecn_negotiated`` (connections in AccECN mode),
``tcp_accecn_ce_delivered`` (CE marks the peer fed back), ``tcp_accecn_mangled``
(a handshake showed the IP-ECN field zeroed or changed: no ECT).
"""

from __future__ import annotations

from tcpstack.tcp import accecn
from tcpstack.tcp.accecn import AccEcn
from tcpstack.tcp.control import ControlBlock
from tcpstack.wire.tcp import AE, CE, CWR, ECE, NOT_ECT, TcpSegment

SETUP = ECE | CWR


def syn_flags(tcb: ControlBlock) -> int:
    """Our SYN's ECN flags: ECE|CWR if we ask for ECN ("on"), AE too if for AccECN
    ("accecn", RFC 9768 3.1.1); the first transmission only."""
    if tcb.retries:
        return 0
    mode = tcb.cfg.ecn
    return SETUP if mode == "on" else AE | SETUP if mode == "accecn" else 0


def asked(tcb: ControlBlock) -> bool:
    """Whether our latest SYN asked for ECN (it is not resent asking)."""
    return tcb.cfg.ecn in ("on", "accecn") and not tcb.syn_retransmitted


def on_peer_syn(tcb: ControlBlock, seg: TcpSegment) -> None:
    """A passive open: agree to AccECN if the SYN asks for it (RFC 9768 3.1.2), to
    classic ECN if it is an ECN-setup SYN (RFC 3168 6.1.1) -- unless "off"."""
    flags = seg.flags
    if tcb.cfg.ecn == "off":
        tcb.ecn_ok = False
    elif accecn.syn_requests_accecn(flags):
        tcb.ecn_ok = True
        tcb.accecn = AccEcn(seg.ecn)
    else:
        tcb.ecn_ok = flags & SETUP == SETUP


def syn_ack_flags(tcb: ControlBlock) -> int:
    """Our SYN,ACK's ECN flags: AccECN's reflection of the SYN's IP-ECN field (RFC
    9768 Table 2) -- none on a retransmission (3.1.4) --, ECE for classic ECN."""
    a = tcb.accecn
    if a is not None:
        return 0 if tcb.syn_retransmitted else accecn.REFLECT[a.syn_ecn]
    return ECE if tcb.ecn_ok else 0


def on_syn_ack(tcb: ControlBlock, seg: TcpSegment) -> None:
    """An active open's SYN,ACK. Asking for classic ECN, ECN is on for an ECN-setup
    SYN,ACK (ECE without CWR; both set is a reflected SYN, RFC 3168 6.1.1). Asking
    for AccECN, RFC 9768 Table 3 decides -- also after our SYN was resent without
    the flags: the SYN,ACK may answer the first one (3.1.4.1) --: no ECN, classic,
    or AccECN, whose SYN,ACK also says how our (Not-ECT) SYN arrived: changed means
    a mangling path. Either that or a flagless SYN of ours keeps our data Not-ECT
    (3.1.5). A CE-marked SYN,ACK counts in r.cep."""
    flags = seg.flags
    if tcb.cfg.ecn == "accecn":
        mode = accecn.synack_mode(flags)
        # Classic ECN answering our first SYN after a flagless one: no ECN (RFC 3168
        # 6.1.1: no ECT after a non-ECN-setup SYN), as "on" and Linux.
        tcb.ecn_ok = mode == "accecn" or (mode == "classic" and not tcb.syn_retransmitted)
        if mode == "accecn":
            a = tcb.accecn = AccEcn(seg.ecn)
            a.reflect = seg.ecn  # our first ACK says how the SYN,ACK came (Table 4)
            if seg.ecn == CE:
                a.r_cep = 1
            reflected = accecn.reflected_ecn(accecn.ace(flags))
            if reflected is not None and reflected != NOT_ECT:
                _mangled(tcb, a)
            elif tcb.syn_retransmitted:
                a.ect = False
            if seg.options.accecn is not None:
                a.take_option(seg.options.accecn)
            tcb.counters["tcp_accecn_negotiated"] += 1
    elif asked(tcb):
        tcb.ecn_ok = flags & SETUP == ECE
    else:
        tcb.ecn_ok = False


def on_repeated_syn(tcb: ControlBlock, seg: TcpSegment) -> None:
    """A SYN again in SYN-RECEIVED (our SYN,ACK was lost): on an AccECN connection the
    SYN,ACK answering it reflects this latest SYN (RFC 9768 3.1.5); one without the
    flags (a client falling back) means our data goes Not-ECT."""
    a = tcb.accecn
    if a is None:
        return
    if accecn.syn_requests_accecn(seg.flags):
        a.syn_ecn = seg.ecn
    elif accecn.ace(seg.flags) == 0:
        a.ect = False


def on_first_ack(tcb: ControlBlock, seg: TcpSegment) -> None:
    """The server's AccECN handshake ends with the client's first ACK, whose ACE
    field reflects how our SYN,ACK arrived (RFC 9768 Table 4, 3.2.2.3).

    0 (Table 4 note 1): the client is not in AccECN mode -- it got only a
    retransmitted, flagless SYN,ACK -- or the path zeroes the flags: we stay in
    AccECN mode and keep sending the ACE field, but send no ECT and read no ACE. A
    reflection of anything but the Not-ECT we sent means a path changing the field:
    no ECT (3.1.5); of CE, the client's count starts at 6, so does ours (s.cep). A
    flagless SYN,ACK of ours (a retransmission) also means no ECT (3.1.5)."""
    a = tcb.accecn
    if a is None:
        return
    value = accecn.ace(seg.flags)
    a.skip_ace = True  # not a count: process_ack leaves it
    if value == 0:
        a.ect = False
        a.feedback = False
        if not tcb.syn_retransmitted:
            tcb.counters["tcp_accecn_mangled"] += 1
    elif not seg.payload:
        reflected = accecn.reflected_ecn(value)
        if reflected == CE:
            a.s_ce = 1  # Table 4: s.cep = 6
        if reflected is not None and reflected != NOT_ECT:
            _mangled(tcb, a)
    if tcb.syn_retransmitted:
        a.ect = False
    tcb.counters["tcp_accecn_negotiated"] += 1


def _mangled(tcb: ControlBlock, a: AccEcn) -> None:
    a.ect = False
    tcb.counters["tcp_accecn_mangled"] += 1


def on_segment(tcb: ControlBlock, seg: TcpSegment) -> None:
    """An acceptable segment arrived on a connection with ECN (RFC 3168 6.1.3; RFC
    9768 3.2.2.2 counts every packet, and asks for an ACK at once when the
    codepoint of arriving data changes or CE marks pile up)."""
    a = tcb.accecn
    if a is not None:
        if seg.ecn == CE:
            tcb.counters["tcp_ecn_ce_received"] += 1
        if a.received(seg.ecn, len(seg.payload)):
            tcb.ack_pending = True
            tcb.mark()
        return
    if seg.flags & CWR:
        tcb.counters["tcp_ecn_cwr_received"] += 1
        tcb.ecn_echo = False
    if seg.ecn == CE and seg.payload:  # data only, as Linux (tcp_event_data_recv)
        tcb.counters["tcp_ecn_ce_received"] += 1
        if not tcb.ecn_echo:
            tcb.ecn_echo = True
            tcb.ack_pending = True  # tell the sender at once, not after a delay
            tcb.mark()


def on_accecn_ack(tcb: ControlBlock, a: AccEcn, seg: TcpSegment, delivered: int,
                  flight: int, now: float) -> None:
    """An ACK on an AccECN connection (RFC 9768 3.2.2.5): ``delivered`` bytes of our
    data it newly acknowledges, cumulatively or by SACK. New CE marks in its ACE
    field (and option) reduce the window as ECE does. An ACK delivering nothing
    (reordered, or a window update) is not read, as Linux's."""
    if a.skip_ace:
        a.skip_ace = False
        if seg.options.accecn is not None:
            a.take_option(seg.options.accecn)
        return
    if delivered <= 0 or not a.feedback:
        return
    ce_bytes = a.take_option(seg.options.accecn) if seg.options.accecn is not None else None
    mss = tcb.seg_mss
    marks = accecn.ce_delta(accecn.ace(seg.flags), (a.s_ce + accecn.CEP_INIT) & 7,
                            -(-delivered // mss), mss, ce_bytes)
    if marks:
        a.s_ce += marks
        tcb.counters["tcp_accecn_ce_delivered"] += marks
        on_ece(tcb, flight, now)


def on_ece(tcb: ControlBlock, flight: int, now: float) -> None:
    """An ACK with ECE (RFC 3168 6.1.2): reduce the window, once per window of data.

    Not while a reduction is under way: fast recovery, an earlier ECE's, or the
    loss window of a timeout."""
    if tcb.recovery_point is not None or tcb.rto_high is not None or flight <= 0:
        return
    tcb.counters["tcp_ecn_ece_reduced"] += 1
    tcb.cc.on_congestion_signal(flight, now)
    tcb.recovery_point = tcb.snd_max
    tcb.in_cwr = True
    tcb.recover_fs = max(flight, 1)
    tcb.prr_delivered = 0
    tcb.prr_out = 0
    tcb.cwr_pending = True
    tcb.mark()


__all__ = ["asked", "on_accecn_ack", "on_ece", "on_first_ack", "on_peer_syn",
           "on_repeated_syn", "on_segment", "on_syn_ack", "syn_ack_flags", "syn_flags"]
