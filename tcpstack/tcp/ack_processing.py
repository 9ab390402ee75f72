"""What an arriving ACK does to the sender (RFC 9293 3.10.7.4, fifth step).

:func:`process_ack` checks the acknowledgment number (RFC 5961 5.2 for ACKs far
below SND.UNA), applies SACK blocks (RFC 2018), counts duplicate ACKs (RFC 5681
2), takes the send-window update (3.10.7.4) and hands loss detection to
:mod:`tcpstack.tcp.recovery`. :func:`ack_advance` moves SND.UNA: it releases
acknowledged bytes, samples the RTT (RFC 7323 4.1 from the echoed timestamp,
else RFC 6298 with Karn's rule), detects spurious retransmissions (Eifel, RFC
3522), grows the congestion window, restarts or stops the retransmission timer
(RFC 6298 5.2, 5.3), and notices that our FIN was acknowledged.
"""

from __future__ import annotations

from tcpstack.tcp import ack_policy, autotune, ecn, output, recovery, teardown
from tcpstack.tcp import events as ev
from tcpstack.tcp.control import ControlBlock
from tcpstack.tcp.seq import MASK, seq_diff, seq_ge, seq_gt, seq_le, seq_lt
from tcpstack.wire.tcp import ECE, FIN, SYN, TcpSegment


def process_ack(tcb: ControlBlock, seg: TcpSegment, now: float) -> bool:
    """The ACK field (RFC 9293 3.10.7.4, fifth). Returns False if the segment is dropped."""
    ack = seg.ack
    if seq_gt(ack, tcb.snd_max):
        # RFC 5961 5.2: acknowledges something not yet sent: challenge ACK, drop.
        tcb.drop("tcp_ack_unsent")
        ack_policy.challenge_ack(tcb, now)
        return False
    if seq_lt(ack, (tcb.snd_una - max(tcb.max_snd_wnd, 1)) & MASK):
        # RFC 5961 5.2: far too old an ACK is suspicious: challenge ACK, drop.
        tcb.drop("tcp_ack_too_old")
        ack_policy.challenge_ack(tcb, now)
        return False
    sb = tcb.scoreboard
    prior_flight = seq_diff(tcb.snd_max, tcb.snd_una)
    prior_una = tcb.snd_una
    prior_sacked = sb.sacked_bytes
    newly_sacked = 0
    rate = sb.rate
    if rate is not None:
        rate.start_ack(output.pipe(tcb, prior_flight))
    echo = echo_time(tcb, seg, now)
    if echo is not None:
        autotune.rtt_sample(tcb, now - echo)
    a = tcb.accecn
    if seg.flags & ECE and tcb.ecn_ok and a is None and seq_ge(ack, tcb.snd_una):
        # RFC 3168 6.1.2, before this ACK could grow the window it reduces (not for
        # an old, reordered ACK: Linux's tcp_ack ignores its ECE too).
        ecn.on_ece(tcb, prior_flight, now)
    if tcb.sack_ok and seg.options.sack_blocks and sb.recs:
        newly_sacked = sb.sack(seg.options.sack_blocks, tcb.snd_una, tcb.snd_max, now,
                               echo, ack)
        if newly_sacked:
            # Newly SACKed bytes left the network: pipe fell, so the window may
            # let more go (RFC 6675 5 step 5, for a duplicate ACK too).
            tcb.mark()
    advanced = seq_gt(ack, tcb.snd_una)
    if a is not None:
        # RFC 9768 3.2.2.5: the CE marks in the ACE field, read against the data this
        # ACK delivers (RFC 9937's DeliveredData) -- before it could grow the window
        # it reduces, as for ECE.
        delivered = newly_sacked
        if advanced:
            delivered += seq_diff(ack, tcb.snd_una) - sb.sacked_below(ack)
        ecn.on_accecn_ack(tcb, a, seg, delivered, prior_flight, now)
    if advanced:
        ack_advance(tcb, ack, now, seg, echo)
        if rate is not None and not tcb.sack_ok:
            rate.on_reno_ack(seq_diff(ack, prior_una), tcb.seg_mss)
        tcb.dupacks = 0
        tcb.dupack_flight = 0
    elif prior_flight and not seg.payload and not seg.flags & (SYN | FIN) \
            and (seg.window << tcb.snd_wscale) == tcb.snd_wnd and ack == tcb.snd_una:
        # A duplicate ACK by RFC 5681 2's definition.
        if tcb.dupacks == 0:
            tcb.dupack_flight = prior_flight
        tcb.dupacks += 1
        if not tcb.sack_ok:
            if rate is not None:
                rate.on_reno_dupack(tcb.seg_mss, prior_flight, now)
            tcb.mark()
    update_send_window(tcb, seg)
    if tcb.probes and seq_ge(ack, tcb.snd_una):
        tcb.probes = 0
    cc = tcb.cc
    if sb.recs or tcb.recovery_point is not None:
        newly_lost = recovery.detect_loss(tcb, now, advanced, newly_sacked, prior_flight)
        if tcb.recovery_point is not None and not cc.controls_recovery:
            # RFC 9937 DeliveredData: the change in SND.UNA plus the change in SACKed
            # bytes; without SACK a duplicate ACK stands for one segment.
            delivered = seq_diff(tcb.snd_una, prior_una) + sb.sacked_bytes - prior_sacked
            if not tcb.sack_ok and not advanced and tcb.dupacks:
                delivered = tcb.seg_mss
            recovery.reduce_window(tcb, delivered, advanced, newly_lost)
    if rate is not None and not seq_lt(ack, prior_una):
        # A model-based controller (BBR) sets its window and pacing rate from the
        # ACK's delivery rate sample (draft-cheng-iccrg-delivery-rate-estimation);
        # not from an old, reordered ACK (as Linux's old_ack path).
        rs = rate.finish_ack(now, sb.min_rtt)
        cc.on_rate_sample(rs, rate, output.pipe(tcb, seq_diff(tcb.snd_max, tcb.snd_una)),
                          loss_state(tcb), now)
        tcb.mark()
    # RFC 9293 3.10.8: an ACK that brings no progress does not extend the user timeout.
    expired = tcb.stall_since is not None and recovery.user_timeout_expired(tcb, now)
    return not expired


def loss_state(tcb: ControlBlock) -> int:
    """Where the sender stands, as Linux's TCP_CA_* values: 4 after a timeout (until
    what was then in flight is acknowledged), 3 in fast recovery, 2 reducing for
    ECE, 0 otherwise."""
    if tcb.rto_high is not None:
        return 4
    if tcb.recovery_point is not None:
        return 2 if tcb.in_cwr else 3
    return 0


def update_send_window(tcb: ControlBlock, seg: TcpSegment) -> None:
    """RFC 9293 3.10.7.4: take SEG.WND only from a newer segment (SND.WL1/SND.WL2)."""
    ack = seg.ack
    if seq_lt(tcb.snd_wl1, seg.seq) or (tcb.snd_wl1 == seg.seq and seq_le(tcb.snd_wl2, ack)):
        wnd = seg.window << tcb.snd_wscale
        if wnd > tcb.snd_wnd:
            tcb.mark()
        tcb.snd_wnd = wnd
        tcb.snd_wl1 = seg.seq
        tcb.snd_wl2 = ack
        if wnd > tcb.max_snd_wnd:
            tcb.max_snd_wnd = wnd
        if wnd:
            tcb.timers.persist = None
            tcb.persist_backoff = 0


def echo_time(tcb: ControlBlock, seg: TcpSegment, now: float) -> float | None:
    """When (on our clock) the transmission this segment acknowledges was sent,
    from its echoed timestamp (RFC 7323 4); None without one."""
    ts = seg.options.timestamps
    if not tcb.ts_ok or ts is None or ts[1] == 0:
        return None
    age_ms = (tcb.tsval(now) - ts[1]) & MASK
    if age_ms >= 0x7FFFFFFF:
        return None
    return now - age_ms / 1000.0


def ack_advance(tcb: ControlBlock, ack: int, now: float, seg: TcpSegment | None = None,
                echo: float | None = None) -> None:
    """New data acknowledged: SND.UNA moves to ``ack``."""
    flight = seq_diff(tcb.snd_max, tcb.snd_una)
    tcb.snd_una = ack
    acked = tcb.sndbuf.release(seq_diff(ack, tcb.sndbuf.seq))
    tcb.scoreboard.ack(ack, now, echo)
    if acked:
        tcb.cc.on_ack_seq(ack, tcb.snd_nxt)  # data acknowledged: HyStart++'s rounds
    _sample_rtt(tcb, ack, now, seg)
    tcb.retries = 0
    tcb.blackhole_mark = 0
    tcb.rtt.reset_backoff()
    if acked and tcb.recovery_point is None:
        # Only acknowledged data grows the window, not our SYN or FIN (RFC 6928 2),
        # and not during recovery (RFC 6675 5).
        tcb.cc.on_ack(acked, flight, now)
    recovery.end_tlp_episode(tcb, ack, flight, now)
    _note_progress(tcb, ack, now)
    # RFC 6298 5.2 / 5.3: stop the timer when all is acknowledged, else restart it.
    if tcb.snd_una == tcb.snd_max:
        tcb.timers.stop_retransmission()
    else:
        tcb.timers.rto = now + tcb.rtt.rto
        if tcb.rto_high is None and not tcb.scoreboard.sacked_bytes:
            # RFC 8985 7.2: an ACK of new data restarts the probe timer (unless in
            # recovery or with SACKed data, where RACK watches), whether or not
            # it lets anything new be sent -- else a probe timed from a send long
            # ago fires while the flight is being acknowledged.
            output.arm_tlp(tcb, now)
    if tcb.write_blocked and len(tcb.sndbuf.data) <= autotune.send_space(tcb) // 2:
        tcb.write_blocked = False
        tcb.events.append(ev.WRITE_SPACE)
    if tcb.fin_queued and tcb.snd_una == tcb.snd_max and \
            seq_diff(tcb.snd_max, tcb.sndbuf.seq) == 1 and not len(tcb.sndbuf.data):
        teardown.fin_acked(tcb, now)
    tcb.mark()


def _note_progress(tcb: ControlBlock, ack: int, now: float) -> None:
    """The user timeout's clock (RFC 9293 3.10.8): it stops when nothing is left to
    send or acknowledge, and restarts only on real progress -- a full segment
    acknowledged -- so a peer cannot hold the connection by trickling 1-byte ACKs."""
    if ack == tcb.snd_max and not tcb.sndbuf.data:
        tcb.stall_since = None
    elif seq_diff(ack, tcb.progress_una) >= tcb.seg_mss:
        tcb.stall_since = now
        tcb.progress_una = ack


def _sample_rtt(tcb: ControlBlock, ack: int, now: float, seg: TcpSegment | None) -> None:
    """RTT: from the echoed timestamp when there is one (RFC 7323 4.1, no Karn
    ambiguity), else from the one timed segment (RFC 6298 3, Karn's rule)."""
    ts = seg.options.timestamps if seg is not None else None
    if tcb.ts_ok and ts is not None and ts[1] != 0:
        rtt_ms = (tcb.tsval(now) - ts[1]) & MASK
        if rtt_ms < 0x7FFFFFFF:
            tcb.rtt.sample(rtt_ms / 1000.0)
            tcb.cc.srtt = tcb.rtt.srtt
            tcb.cc.on_rtt(rtt_ms / 1000.0)
        tcb.rtt_seq = None
        # Eifel detection (RFC 3522): the ACK echoes a timestamp older than our
        # first retransmission, so the original arrived: undo (RFC 4015).
        if tcb.rtx_tsval is not None and seq_lt(ts[1], tcb.rtx_tsval):
            recovery.undo_spurious(tcb)
    elif tcb.rtt_seq is not None and seq_ge(ack, tcb.rtt_seq):
        tcb.rtt.sample(now - tcb.rtt_time)
        tcb.cc.srtt = tcb.rtt.srtt
        tcb.cc.on_rtt(now - tcb.rtt_time)
        tcb.rtt_seq = None
