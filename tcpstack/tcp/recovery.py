"""Loss recovery: detecting losses, retransmission timeout, tail loss probes, undo.

* :func:`detect_loss` -- after each ACK: RACK with SACK (RFC 8985 6), NewReno's
  three duplicate ACKs and partial ACKs without (RFC 5681 3.2, RFC 6582 3.2),
  entering and leaving fast recovery (RFC 6675 5).
* :func:`on_rack_timer` -- a suspect segment's reordering window passed (RFC 8985 6.3).
* :func:`on_tlp_timer` / :func:`end_tlp_episode` -- tail loss probes (RFC 8985 7).
* :func:`on_rto` -- the retransmission timeout (RFC 6298 5.4-5.7, RFC 5681 3.1,
  RFC 6675 5.1), the SYN retries, and zero-window retransmissions that do not
  count toward giving up (RFC 1122 4.2.2.17).
* :func:`undo_spurious` -- a retransmission was unnecessary (RFC 3522, RFC 4015).

The retransmissions themselves go out in :func:`tcpstack.tcp.output.send_data`,
which resends records the scoreboard marks lost, within the congestion window.
"""

from __future__ import annotations

from tcpstack.tcp import ack_policy, handshake, output, teardown
from tcpstack.tcp.control import ControlBlock
from tcpstack.tcp.seq import seq_diff, seq_ge
from tcpstack.tcp.state import State, Trigger
from tcpstack.wire.tcp import ACK, PSH

DUPTHRESH = 3  # RFC 5681 3.2


def detect_loss(tcb: ControlBlock, now: float, advanced: bool, newly_sacked: int,
                prior_flight: int) -> None:
    """Loss detection after an ACK: RACK with SACK (RFC 8985 6), NewReno without
    (RFC 6582), and entry to / exit from fast recovery (RFC 6675 5)."""
    sb = tcb.scoreboard
    if tcb.recovery_point is not None and seq_ge(tcb.snd_una, tcb.recovery_point):
        tcb.recovery_point = None  # RFC 6675 5 / RFC 6582 3.2 step 3: full ACK ends it
        tcb.rtx_tsval = None
    if tcb.rto_high is not None and seq_ge(tcb.snd_una, tcb.rto_high):
        tcb.rto_high = None
        tcb.rtx_tsval = None
    if tcb.sack_ok:
        if advanced or newly_sacked or tcb.timers.rack is not None:
            newly_lost, timeout = sb.detect_loss(now, tcb.rtt.srtt)
            tcb.timers.rack = timeout
            if newly_lost:
                _on_loss_detected(tcb, now, prior_flight)
    elif tcb.recovery_point is None and tcb.rto_high is None:
        if tcb.dupacks >= DUPTHRESH and sb.recs:
            # RFC 5681 3.2 / RFC 6582 3.2 step 2: fast retransmit of SND.UNA;
            # ssthresh from the flight before limited transmit added to it.
            sb.mark_lost_from(tcb.snd_una, limit=1)
            _on_loss_detected(tcb, now, tcb.dupack_flight or prior_flight)
    elif advanced and sb.recs:
        # RFC 6582 3.2 step 3: a partial ACK -- the next hole is lost too.
        if sb.first_lost() is None:
            sb.mark_lost_from(tcb.snd_una, limit=1)
        tcb.rtx_now = True
        tcb.mark()


def _on_loss_detected(tcb: ControlBlock, now: float, flight: int) -> None:
    # One window reduction per episode: none while an earlier RTO's or fast
    # recovery's data is still outstanding (RFC 6582 3.2, RFC 6675 5).
    if tcb.recovery_point is None and tcb.rto_high is None:
        tcb.recovery_point = tcb.snd_max
        tcb.scoreboard.on_recovery()
        tcb.cc.on_loss(flight, now)
        # RFC 6675 5 (4.3) / RFC 5681 3.2: the first retransmission goes at once.
        tcb.rtx_now = True
        if tcb.rtx_tsval is None and tcb.ts_ok:
            tcb.rtx_tsval = tcb.tsval(now)
    tcb.mark()


def on_rack_timer(tcb: ControlBlock, now: float) -> None:
    """RFC 8985 6.3: the reordering window passed for a suspect segment."""
    tcb.timers.rack = None
    flight = seq_diff(tcb.snd_max, tcb.snd_una)
    newly_lost, tcb.timers.rack = tcb.scoreboard.detect_loss(now, tcb.rtt.srtt)
    if newly_lost:
        _on_loss_detected(tcb, now, flight)


def undo_spurious(tcb: ControlBlock) -> None:
    """A retransmission proved unnecessary: restore the window, forget the losses."""
    tcb.cc.undo()
    tcb.rtx_tsval = None
    tcb.recovery_point = None
    tcb.rto_high = None
    tcb.scoreboard.forget_losses()


# ------------------------------------------------------------ tail loss probes


def on_tlp_timer(tcb: ControlBlock, now: float) -> None:
    """RFC 8985 7.3: send a probe -- new data if possible, else the last segment."""
    tcb.timers.tlp = None
    if tcb.snd_una == tcb.snd_max or tcb.recovery_point is not None:
        return
    sb = tcb.scoreboard
    opts = output.options(tcb, now)
    mss = tcb.seg_mss - (4 + 8 * len(opts.sack_blocks) if opts.sack_blocks else 0)
    sndbuf = tcb.sndbuf
    off = seq_diff(tcb.snd_max, sndbuf.seq)
    unsent = len(sndbuf) - off
    flight = seq_diff(tcb.snd_max, tcb.snd_una)
    retransmitted = False
    if unsent > 0 and tcb.snd_wnd - flight >= min(unsent, mss):
        n = min(unsent, mss)
        flags = ACK | (PSH if n == unsent else 0)
        output.emit_new(tcb, flags, sndbuf.view(off, n), opts, now)
    else:
        rec = sb.last_unsacked()
        if rec is None:
            return
        output.retransmit(tcb, sb.tail(rec, mss), mss, opts, now)
        tcb.rtx_tsval = None  # a probe is not an episode for Eifel
        retransmitted = True
    tcb.tlp_high = tcb.snd_max
    tcb.tlp_rtx = retransmitted
    tcb.tlp_dsack = sb.dsack_seen
    ack_policy.on_ack_sent(tcb)
    tcb.timers.rto = now + tcb.rtt.rto
    tcb.mark()


def end_tlp_episode(tcb: ControlBlock, ack: int, flight: int, now: float) -> None:
    """RFC 8985 7.4: once the probe is acknowledged its episode is over; if it
    repaired a loss (no D-SACK for it came back), the network dropped data: react
    once."""
    if tcb.tlp_high is None or not seq_ge(ack, tcb.tlp_high):
        return
    if tcb.tlp_rtx and tcb.scoreboard.dsack_seen == tcb.tlp_dsack \
            and tcb.recovery_point is None and tcb.rto_high is None:
        tcb.cc.on_loss(flight, now)
    tcb.tlp_high = None


# -------------------------------------------------------- retransmission timeout


def user_timeout_expired(tcb: ControlBlock, now: float) -> bool:
    """RFC 9293 3.10.8 USER TIMEOUT (RFC 5482): data outstanding made no progress for
    ``cfg.user_timeout`` seconds: the connection is aborted ("timeout"), counted."""
    limit = tcb.cfg.user_timeout
    since = tcb.stall_since
    if limit <= 0 or since is None or now - since < limit:
        return False
    tcb.drop("tcp_user_timeout")
    teardown.terminate(tcb, "timeout", Trigger.TIMEOUT)
    return True


def on_rto(tcb: ControlBlock, now: float) -> None:
    """Retransmission timeout (RFC 6298 5.4-5.7, RFC 5681 3.1, RFC 6675 5.1)."""
    tcb.timers.rto = None
    tcb.timers.tlp = None
    if tcb.snd_una == tcb.snd_max or user_timeout_expired(tcb, now):
        return
    state = tcb.state
    handshaking = state is State.SYN_SENT or state is State.SYN_RECEIVED
    if tcb.snd_wnd == 0 and not handshaking:
        # The peer closed its window with our data in flight: the retransmissions
        # become zero-window probes, which do not count toward giving up while
        # they are answered (RFC 1122 4.2.2.17; Linux does the same).
        tcb.rtt.backoff()
        tcb.rtt_seq = None  # Karn: what is in flight may be sent again
        output.arm_persist(tcb, now)
        tcb.mark()
        return
    tcb.retries += 1
    if state is State.SYN_SENT:
        limit = tcb.cfg.syn_retries
    elif state is State.SYN_RECEIVED:
        limit = tcb.cfg.synack_retries
    else:
        limit = tcb.cfg.max_retries
    if tcb.retries > limit:
        teardown.terminate(tcb, "timeout", Trigger.TIMEOUT)
        return
    tcb.rtt.backoff()
    tcb.rtt_seq = None  # Karn: no sample from a retransmitted segment
    if handshaking:
        tcb.syn_retransmitted = True
        tcb.cc.on_timeout(seq_diff(tcb.snd_max, tcb.snd_una), now)
        handshake.send_syn(tcb, now, ack=state is State.SYN_RECEIVED)
        return
    _rto_enter_loss(tcb, now)


def _rto_enter_loss(tcb: ControlBlock, now: float) -> None:
    """Everything not SACKed is presumed lost and goes out again in order, as the
    one-segment window allows (RFC 6675 5.1, RFC 5681 3.1): slow start from here,
    not fast recovery."""
    flight = seq_diff(tcb.snd_max, tcb.snd_una)
    tcb.cc.on_timeout(flight, now)
    tcb.scoreboard.mark_lost_from()
    tcb.recovery_point = None
    tcb.rto_high = tcb.snd_max
    tcb.dupacks = 0
    tcb.timers.rack = None
    tcb.tlp_high = None
    if tcb.rtx_tsval is None and tcb.ts_ok:
        tcb.rtx_tsval = tcb.tsval(now)
    tcb.timers.rto = now + tcb.rtt.rto
    tcb.mark()
