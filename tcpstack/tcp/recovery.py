"""Loss recovery: detecting losses, retransmission timeout, tail loss probes, undo.

* :func:`detect_loss` -- after each ACK: RACK with SACK (RFC 8985 6), NewReno's
  three duplicate ACKs and partial ACKs without (RFC 5681 3.2, RFC 6582 3.2),
  entering and leaving fast recovery (RFC 6675 5).
* :func:`reduce_window` -- during fast recovery, how much each ACK lets us send:
  proportional rate reduction (RFC 9937), so the window comes down to ssthresh
  smoothly and a burst of losses marked at once is not answered by a burst.
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

from tcpstack.tcp import ack_policy, handshake, output, path, teardown
from tcpstack.tcp.control import ControlBlock
from tcpstack.tcp.seq import seq_diff, seq_ge
from tcpstack.tcp.state import State, Trigger
from tcpstack.wire.tcp import ACK, PSH

DUPTHRESH = 3  # RFC 5681 3.2


def detect_loss(tcb: ControlBlock, now: float, advanced: bool, newly_sacked: int,
                prior_flight: int) -> bool:
    """Loss detection after an ACK: RACK with SACK (RFC 8985 6), NewReno without
    (RFC 6582), and entry to / exit from fast recovery (RFC 6675 5). True if this
    ACK revealed a new loss."""
    sb = tcb.scoreboard
    if tcb.recovery_point is not None and seq_ge(tcb.snd_una, tcb.recovery_point):
        tcb.recovery_point = None  # RFC 6675 5 / RFC 6582 3.2 step 3: full ACK ends it
        tcb.in_cwr = False
        tcb.rtx_tsval = None
        # RFC 9937 3: at the end of recovery the window is ssthresh (BBR: its own).
        tcb.cc.on_recovery_end()
    if tcb.rto_high is not None and seq_ge(tcb.snd_una, tcb.rto_high):
        tcb.rto_high = None
        tcb.rtx_tsval = None
    if tcb.pmtu_high is not None and seq_ge(tcb.snd_una, tcb.pmtu_high):
        tcb.pmtu_high = None
    if tcb.sack_ok:
        if advanced or newly_sacked or tcb.timers.rack is not None:
            newly_lost, timeout = sb.detect_loss(now, tcb.rtt.srtt)
            tcb.timers.rack = timeout
            if newly_lost:
                _on_loss_detected(tcb, now, prior_flight)
                return True
    elif (tcb.recovery_point is None or tcb.in_cwr) and tcb.rto_high is None:
        # (A reduction for ECE is no recovery: no partial ACKs, and three duplicate
        # ACKs still mean a loss, RFC 3168 6.1.2.)
        if tcb.dupacks >= DUPTHRESH and sb.recs:
            # RFC 5681 3.2 / RFC 6582 3.2 step 2: fast retransmit of SND.UNA;
            # ssthresh from the flight before limited transmit added to it.
            sb.mark_lost_from(tcb.snd_una, limit=1)
            _on_loss_detected(tcb, now, tcb.dupack_flight or prior_flight)
            return True
    elif advanced and sb.recs:
        # RFC 6582 3.2 step 3: a partial ACK -- the next hole is lost too.
        if sb.first_lost() is None:
            sb.mark_lost_from(tcb.snd_una, limit=1)
        tcb.rtx_now = True
        tcb.mark()
        return True
    return False


def _on_loss_detected(tcb: ControlBlock, now: float, flight: int) -> None:
    # One window reduction per episode: none while an earlier RTO's or fast
    # recovery's data is still outstanding (RFC 6582 3.2, RFC 6675 5).
    if tcb.recovery_point is None and tcb.rto_high is None:
        tcb.recovery_point = tcb.snd_max
        tcb.scoreboard.on_recovery()
        tcb.cc.on_loss(flight, now)
        tcb.cwr_pending = tcb.ecn_ok  # RFC 3168 6.1.2: CWR after any reduction
        tcb.recover_fs = max(flight, 1)
        tcb.prr_delivered = 0
        tcb.prr_out = 0
        # RFC 6675 5 (4.3) / RFC 5681 3.2: the first retransmission goes at once.
        tcb.rtx_now = True
        if tcb.rtx_tsval is None and tcb.ts_ok:
            tcb.rtx_tsval = tcb.tsval(now)
    elif tcb.in_cwr:
        # Loss while reducing for ECE: fast recovery from here, without a second
        # reduction (RFC 3168 6.1.2: once per window; as Linux's CWR -> Recovery).
        tcb.in_cwr = False
        tcb.recovery_point = tcb.snd_max
        tcb.scoreboard.on_recovery()
        tcb.rtx_now = True
        if tcb.rtx_tsval is None and tcb.ts_ok:
            tcb.rtx_tsval = tcb.tsval(now)
    tcb.mark()


def reduce_window(tcb: ControlBlock, delivered: int, advanced: bool, newly_lost: bool) -> None:
    """Proportional rate reduction (RFC 9937 3, as Linux's tcp_cwnd_reduction).

    Called after each ACK in fast recovery with the bytes it reported delivered
    (cumulatively or by SACK). While more than ssthresh is in the network, sending
    follows delivery in the proportion ssthresh / RecoverFS, so by the end of the
    round trip the flight is ssthresh. Once the flight is below ssthresh, it grows
    back to it no faster than slow start (the slow-start reduction bound): what was
    delivered, plus one segment on an ACK that advances SND.UNA without new loss.
    ``advanced``: the ACK moved SND.UNA; ``newly_lost``: it revealed a new loss.
    The result is expressed, as in Linux, by setting cwnd to pipe plus the bytes
    this ACK may send; at the end of recovery cwnd becomes ssthresh.
    """
    if tcb.recovery_point is None or delivered <= 0:
        return
    tcb.prr_delivered += delivered
    cc = tcb.cc
    ssthresh = cc.ssthresh
    in_net = output.pipe(tcb, seq_diff(tcb.snd_max, tcb.snd_una))
    if in_net > ssthresh:
        # ceil(prr_delivered * ssthresh / RecoverFS) - prr_out
        sndcnt = -(-tcb.prr_delivered * ssthresh // tcb.recover_fs) - tcb.prr_out
    else:
        sndcnt = max(tcb.prr_delivered - tcb.prr_out, delivered)
        if advanced and not newly_lost:
            sndcnt += tcb.seg_mss
        sndcnt = min(ssthresh - in_net, sndcnt)
    if sndcnt < 0:
        sndcnt = 0
    if tcb.prr_out == 0 and sndcnt < tcb.seg_mss:
        sndcnt = tcb.seg_mss  # the fast retransmit goes whatever the arithmetic says
    cc.cwnd = in_net + sndcnt


def on_rack_timer(tcb: ControlBlock, now: float) -> None:
    """RFC 8985 6.3: the reordering window passed for a suspect segment."""
    tcb.timers.rack = None
    flight = seq_diff(tcb.snd_max, tcb.snd_una)
    newly_lost, tcb.timers.rack = tcb.scoreboard.detect_loss(now, tcb.rtt.srtt)
    if newly_lost:
        entering = tcb.recovery_point is None and tcb.rto_high is None
        _on_loss_detected(tcb, now, flight)
        if entering and tcb.recovery_point is not None and not tcb.cc.controls_recovery:
            # No ACK came with this loss: as Linux (tcp_rack_reo_timeout), PRR runs
            # as if one segment had been delivered, so the episode starts with one
            # retransmission instead of cwnd - pipe of them at once.
            reduce_window(tcb, tcb.seg_mss, False, True)


def undo_spurious(tcb: ControlBlock) -> None:
    """A retransmission proved unnecessary: restore the window, forget the losses."""
    tcb.cc.undo()
    tcb.rtx_tsval = None
    tcb.recovery_point = None
    tcb.in_cwr = False
    tcb.rto_high = None
    tcb.scoreboard.forget_losses()


# ------------------------------------------------------------ tail loss probes


def on_tlp_timer(tcb: ControlBlock, now: float) -> None:
    """RFC 8985 7.3: send a probe -- new data if possible, else the last segment."""
    tcb.timers.tlp = None
    if tcb.snd_una == tcb.snd_max or (tcb.recovery_point is not None and not tcb.in_cwr):
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
        tcb.counters["tcp_retrans_tlp"] += 1
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
        tcb.cc.on_tlp_loss(flight, now)
        tcb.cwr_pending = tcb.ecn_ok
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
        tcb.counters["tcp_retrans_syn"] += 1
        tcb.syn_retransmitted = True
        if not tcb.cc.controls_recovery:
            # (A model-based controller starts with the connection, as Linux's BBR
            # is initialised after the handshake: nothing to tell it.)
            tcb.cc.on_timeout(seq_diff(tcb.snd_max, tcb.snd_una), now)
        handshake.send_syn(tcb, now, ack=state is State.SYN_RECEIVED)
        return
    path.on_repeated_timeout(tcb, now)  # a black hole for large segments? (RFC 4821)
    _rto_enter_loss(tcb, now)


def _rto_enter_loss(tcb: ControlBlock, now: float) -> None:
    """Everything not SACKed is presumed lost and goes out again in order, as the
    one-segment window allows (RFC 6675 5.1, RFC 5681 3.1): slow start from here,
    not fast recovery."""
    flight = seq_diff(tcb.snd_max, tcb.snd_una)
    tcb.counters["tcp_rto_timeouts"] += 1
    # Losses first, then the controller (as Linux's tcp_enter_loss): BBR's policer
    # detector counts them in its interval.
    tcb.scoreboard.mark_lost_from()
    tcb.cc.on_timeout(flight, now)
    tcb.cwr_pending = tcb.ecn_ok
    tcb.recovery_point = None
    tcb.in_cwr = False
    tcb.rto_high = tcb.snd_max
    tcb.dupacks = 0
    tcb.timers.rack = None
    tcb.tlp_high = None
    if tcb.rtx_tsval is None and tcb.ts_ok:
        tcb.rtx_tsval = tcb.tsval(now)
    tcb.timers.rto = now + tcb.rtt.rto
    tcb.mark()
