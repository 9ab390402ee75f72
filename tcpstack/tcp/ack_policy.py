"""When we acknowledge: immediate ACKs, delayed ACKs (RFC 1122 4.2.3.2, RFC 5681 4.2).

Every rule that decides an ACK is owed goes through this module:

* :func:`ack_now` -- an ACK must go out with the next flush: out-of-order data or
  a hole filled (RFC 5681 4.2), a FIN, a duplicate, an unacceptable segment
  (RFC 9293 3.10.7.4), a challenge (RFC 5961), a window update, a PAWS reject;
* :func:`on_data_received` -- in-order data: ACK at least every second full-sized
  segment, else let the delayed-ACK timer decide (at most ``cfg.delayed_ack``);
* :func:`on_ack_sent` -- any segment we send carries the current ACK, so nothing
  is owed any more (data segments piggyback the ACK);
* :func:`on_application_read` -- a delayed ACK goes out when the application has
  consumed what it covers (Linux's tcp_cleanup_rbuf);
* :func:`arm_delayed_ack` / :func:`on_delayed_ack_timer` -- the timer itself;
* :func:`challenge_ack` / :func:`reply_unasked` -- ACKs to segments we reject,
  rate-limited so that a flood of forged segments cannot make us a flood source
  or a side channel (RFC 5961 7): at most one per ``cfg.invalid_ratelimit`` per
  connection (Linux's tcp_invalid_ratelimit) and, for challenge ACKs, within the
  stack's randomized per-second budget.
"""

from __future__ import annotations

from tcpstack.tcp.control import ControlBlock


def ack_now(tcb: ControlBlock) -> None:
    """Owe an ACK that goes out with the next flush."""
    tcb.ack_pending = True
    tcb.mark()


def on_data_received(tcb: ControlBlock, n: int) -> None:
    """``n`` in-order bytes arrived: RFC 1122 4.2.3.2 / RFC 5681 4.2 -- ACK at least
    every second full-sized segment; otherwise the ACK may wait for the timer.
    (The caller marks the connection for the flush.)"""
    if n > tcb.rcv_mss:
        # A super-segment (the kernel's GRO) stands for full-sized ones: our MSS less
        # the options they carry (RFC 6691: timestamps, a signature).
        tcb.rcv_mss = min(n, tcb.cfg.mss - tcb.opt_len)
    elif n < tcb.rcv_mss:
        tcb.rcv_pushed = True  # see on_application_read
    tcb.rcv_unacked += n
    if tcb.rcv_unacked >= 2 * tcb.rcv_mss or not tcb.cfg.delayed_ack:
        tcb.ack_pending = True
    else:
        tcb.delack = True


def on_ack_sent(tcb: ControlBlock) -> None:
    """A segment carrying the current ACK was sent: nothing is owed any more."""
    tcb.ack_pending = False
    tcb.delack = False
    tcb.timers.delack = None
    tcb.rcv_unacked = 0
    tcb.rcv_pushed = False
    tcb.last_ack_sent = tcb.rcv_nxt


def on_application_read(tcb: ControlBlock) -> None:
    """The application consumed received data: a delayed ACK still owed goes out now
    if waiting gains nothing, as Linux does on a read (tcp_cleanup_rbuf): when more
    than one full-sized segment is unacknowledged (only the every-second-segment
    threshold was missed, e.g. a full segment and a short tail), or when a short
    segment is and the read emptied the receive buffer (the end of the peer's write
    has been consumed). A sender with two segments unacknowledged probes after
    2 * SRTT + 2 ms (RFC 8985 TLP, Linux) -- well before our delayed-ACK timer."""
    if tcb.delack and (tcb.rcv_unacked > tcb.rcv_mss
                       or (tcb.rcv_pushed and not tcb.rcv_buf.data)):
        ack_now(tcb)


def arm_delayed_ack(tcb: ControlBlock, now: float) -> None:
    """After a flush that owed a delayed ACK but sent nothing: start its timer."""
    if tcb.delack and tcb.timers.delack is None:
        tcb.timers.delack = now + tcb.cfg.delayed_ack


def on_delayed_ack_timer(tcb: ControlBlock) -> None:
    if tcb.delack:
        ack_now(tcb)


def challenge_ack(tcb: ControlBlock, now: float) -> None:
    """A challenge ACK (RFC 5961 3.2, 4.2, 5.2), within the per-connection interval
    and the stack-wide randomized budget (RFC 5961 7); counted when suppressed."""
    if now - tcb.last_oow_reply < tcb.cfg.invalid_ratelimit \
            or not tcb.reply_budget.allow(now):
        tcb.counters["tcp_challenge_ack_limited"] += 1
        return
    tcb.last_oow_reply = now
    ack_now(tcb)


def reply_unasked(tcb: ControlBlock, now: float, carries_data: bool) -> bool:
    """An ACK answering a segment that was dropped (out of window, PAWS, TIME-WAIT).

    A segment with data always gets its ACK (the peer needs it to recover, RFC
    5681 4.2); one without data gets at most one per ``cfg.invalid_ratelimit``
    (as Linux's tcp_oow_rate_limited). Returns whether the ACK goes out.
    """
    if not carries_data:
        if now - tcb.last_oow_reply < tcb.cfg.invalid_ratelimit:
            tcb.counters["tcp_oow_ack_limited"] += 1
            return False
        tcb.last_oow_reply = now
    ack_now(tcb)
    return True
