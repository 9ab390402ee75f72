"""Explicit Congestion Notification in TCP (RFC 3168 6.1), as Linux does it.

Negotiation (RFC 3168 6.1.1): an ECN-setup SYN carries ECE and CWR, an ECN-setup
SYN,ACK ECE alone; any other combination means no ECN. ``TcpConfig.ecn`` is
"passive" (agree when asked: Linux's default ``tcp_ecn=2``), "on" (ask in our
SYNs too: ``tcp_ecn=1``) or "off". A SYN that has to be retransmitted asks no
more (6.1.1.1: a middlebox may drop ECN-setup SYNs), as Linux's.

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

Counters: ``tcp_ecn_ce_received`` (segments that arrived marked CE),
``tcp_ecn_ece_reduced`` (window reductions for ECE), ``tcp_ecn_cwr_received``.
"""

from __future__ import annotations

from tcpstack.tcp.control import ControlBlock
from tcpstack.wire.tcp import CE, CWR, ECE, TcpSegment

SETUP = ECE | CWR


def syn_flags(tcb: ControlBlock) -> int:
    """ECE|CWR for our SYN if we ask for ECN: configured "on", first transmission."""
    return SETUP if tcb.cfg.ecn == "on" and tcb.retries == 0 else 0


def asked(tcb: ControlBlock) -> bool:
    """Whether our latest SYN asked for ECN (it is not resent asking)."""
    return tcb.cfg.ecn == "on" and not tcb.syn_retransmitted


def on_peer_syn(tcb: ControlBlock, flags: int) -> None:
    """A passive open: agree if the SYN is an ECN-setup SYN and we may."""
    tcb.ecn_ok = tcb.cfg.ecn != "off" and flags & SETUP == SETUP


def on_syn_ack(tcb: ControlBlock, flags: int) -> None:
    """An active open's SYN,ACK: ECN is on if we asked and it is an ECN-setup SYN,ACK
    (ECE without CWR; both set is a reflected SYN, RFC 3168 6.1.1)."""
    tcb.ecn_ok = asked(tcb) and flags & SETUP == ECE


def on_segment(tcb: ControlBlock, seg: TcpSegment) -> None:
    """An acceptable segment arrived on a connection with ECN (RFC 3168 6.1.3)."""
    if seg.flags & CWR:
        tcb.counters["tcp_ecn_cwr_received"] += 1
        tcb.ecn_echo = False
    if seg.ecn == CE and seg.payload:  # data only, as Linux (tcp_event_data_recv)
        tcb.counters["tcp_ecn_ce_received"] += 1
        if not tcb.ecn_echo:
            tcb.ecn_echo = True
            tcb.ack_pending = True  # tell the sender at once, not after a delay
            tcb.mark()


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


__all__ = ["asked", "on_ece", "on_peer_syn", "on_segment", "on_syn_ack", "syn_flags"]
