"""SEGMENT ARRIVES (RFC 9293 3.10.7.3 and 3.10.7.4): the receive side of a connection.

:func:`segment_arrives` follows the RFC's steps in order; each function below is
one step and cites it. Segments that the rules reject are counted by reason
(``tcb.counters``) and answered as the RFC says (an ACK, a RST, or nothing):

========================  ===============================================  ===============
reason                    what was wrong                                   rule
========================  ===============================================  ===============
tcp_closed_connection     a segment for a connection that is already gone  3.10.7.1
tcp_syn_sent_bad_ack      SYN-SENT: ACK outside (ISS, SND.NXT] (RST sent)  3.10.7.3 first
tcp_syn_sent_rst_ignored  SYN-SENT: RST without an acceptable ACK          3.10.7.3 second
tcp_syn_sent_no_syn       SYN-SENT: neither SYN nor RST                    3.10.7.3 fifth
tcp_paws_rejected         timestamp older than TS.Recent (ACK sent)        RFC 7323 5.3
tcp_seq_unacceptable      outside the receive window (ACK sent)            3.10.7.4 first
tcp_rst_out_of_window     RST outside the receive window                   3.10.7.4 first
tcp_rst_challenged        RST in the window but not at RCV.NXT             RFC 5961 3.2
tcp_syn_challenged        SYN in a synchronized state (challenge ACK)      RFC 5961 4.2
tcp_no_ack                no ACK bit                                       3.10.7.4 fifth
tcp_syn_received_bad_ack  SYN-RECEIVED: ACK not of our SYN (RST sent)      3.10.7.4 fifth
tcp_ack_unsent            ACK of data not yet sent (challenge ACK)         RFC 5961 5.2
tcp_ack_too_old           ACK far below SND.UNA (challenge ACK)            RFC 5961 5.2
tcp_data_after_fin        text or a second FIN after the peer's FIN        3.10.7.4 7th, 8th
tcp_data_after_close      text after a full close (RST sent)               RFC 2525 2.17
tcp_ooo_queue_full        out-of-order data beyond the queue's piece cap   (resources)
tcp_ooo_memory_pressure   out-of-order data while the stack's memory is    (resources)
                          over its limit
tcp_time_wait_rst         RST in TIME-WAIT, ignored                        RFC 1337
tcp_time_wait_segment     TIME-WAIT: anything but the retransmitted FIN    3.10.7.4
========================  ===============================================  ===============

The ACKs these draw are rate-limited (RFC 5961 7, see :mod:`tcpstack.tcp.ack_policy`);
a suppressed one is counted as ``tcp_challenge_ack_limited`` or
``tcp_oow_ack_limited``, a suppressed repeat SYN,ACK as ``tcp_syn_repeat_limited``.
"""

from __future__ import annotations

from tcpstack.tcp import ack_policy, autotune, ecn, fastopen, handshake, output, teardown
from tcpstack.tcp import events as ev
from tcpstack.tcp.ack_processing import ack_advance, process_ack
from tcpstack.tcp.control import ControlBlock
from tcpstack.tcp.reassembly import ReassemblyFull
from tcpstack.tcp.seq import seq_add, seq_diff, seq_ge, seq_gt, seq_in_window, seq_le, seq_lt
from tcpstack.tcp.state import RECEIVES_TEXT, State, Trigger
from tcpstack.wire.errors import BytesLike
from tcpstack.wire.tcp import ACK, FIN, RST, SYN, TcpSegment

PAWS_IDLE_LIMIT = 24 * 24 * 3600.0  # RFC 7323 5.5: TS.Recent is invalid after 24 days idle


def segment_arrives(tcb: ControlBlock, seg: TcpSegment, now: float) -> None:
    """Process an arriving segment (RFC 9293 3.10.7.3 and 3.10.7.4)."""
    state = tcb.state
    tcb.last_rcv = now
    tcb.ka_probes = 0
    if state is State.SYN_SENT:
        receive_syn_sent(tcb, seg, now)
    elif state is State.CLOSED or state is State.LISTEN:
        tcb.drop("tcp_closed_connection")
    elif state is State.TIME_WAIT:
        receive_time_wait(tcb, seg, now)
    else:
        receive_synchronized(tcb, seg, now)


# ------------------------------------------------------------------ SYN-SENT


def receive_syn_sent(tcb: ControlBlock, seg: TcpSegment, now: float) -> None:
    """RFC 9293 3.10.7.3: SEGMENT ARRIVES in SYN-SENT."""
    flags = seg.flags
    ack_ok = False
    if flags & ACK:
        # First: an ACK outside (ISS, SND.NXT] gets a RST unless it is one.
        if seq_le(seg.ack, tcb.iss) or seq_gt(seg.ack, tcb.snd_max):
            tcb.drop("tcp_syn_sent_bad_ack")
            if not flags & RST:
                output.send_rst(tcb, seg.ack)
            return
        ack_ok = True
    if flags & RST:
        # Second: a RST is acceptable only with an acceptable ACK (RFC 5961 3.2).
        if ack_ok:
            teardown.terminate(tcb, "refused", Trigger.RCV_RST)
        else:
            tcb.drop("tcp_syn_sent_rst_ignored")
        return
    if not flags & SYN:
        tcb.drop("tcp_syn_sent_no_syn")
        return
    # Fourth: the SYN.
    tcb.irs = seg.seq
    tcb.rcv_nxt = seq_add(seg.seq, 1)
    # Our SYN advertised an unscaled window; only now is its base known.
    tcb.rcv_adv = seq_add(tcb.rcv_nxt, handshake.syn_window(tcb.cfg, tcb.cfg.window_scaling))
    handshake.negotiate(tcb, seg.options)
    handshake.record_syn_timestamp(tcb, seg, now)
    if ack_ok:
        ecn.on_syn_ack(tcb, seg)
        if tcb.tfo is not None:
            fastopen.on_syn_ack(tcb, seg, now)  # RFC 7413 4.1.3, 4.2.1
        _established_by_syn_ack(tcb, seg, now)
    else:
        if tcb.cfg.ecn == "accecn":
            # RFC 9768 3.1.2: in a simultaneous open each end answers the other's
            # SYN as a server would (AccECN if it asks, Table 2's reflection).
            ecn.on_peer_syn(tcb, seg)
        else:
            # RFC 3168 6.1.1 for a simultaneous open: both SYNs must ask.
            tcb.ecn_ok = ecn.asked(tcb) and seg.flags & ecn.SETUP == ecn.SETUP
        # Simultaneous open: SYN-RECEIVED, answer with SYN,ACK on our ISS.
        tcb.fire(Trigger.RCV_SYN)
        tcb.snd_wnd = seg.window
        tcb.snd_wl1 = seg.seq
        tcb.snd_wl2 = tcb.iss
        tcb.retries = 0
        handshake.send_syn(tcb, now, ack=True)


def _established_by_syn_ack(tcb: ControlBlock, seg: TcpSegment, now: float) -> None:
    """RFC 9293 3.10.7.3 fourth: our SYN is acknowledged: ESTABLISHED, ACK the SYN."""
    ack_advance(tcb, seg.ack, now, seg)
    tcb.snd_wnd = seg.window  # SYN windows are unscaled
    tcb.max_snd_wnd = tcb.snd_wnd
    tcb.snd_wl1 = seg.seq
    tcb.snd_wl2 = seg.ack
    tcb.fire(Trigger.RCV_SYN_ACK)
    _run_queued_close(tcb)
    handshake.after_handshake(tcb)
    tcb.ack_pending = True
    tcb.events.append(ev.ESTABLISHED)
    tcb.mark()
    if seg.payload or seg.flags & FIN:
        process_text(tcb, seg, now, tcb.rcv_nxt)


def _run_queued_close(tcb: ControlBlock) -> None:
    """A CLOSE queued before the handshake completed is carried out on reaching
    ESTABLISHED (RFC 9293 3.10.4): the FIN goes out after the queued data."""
    if tcb.fin_queued:
        tcb.fire_app(Trigger.CLOSE)


# ----------------------------------------------------- the synchronized states


def acceptable(tcb: ControlBlock, seg: TcpSegment) -> bool:
    """The segment acceptability test of RFC 9293 3.10.7.4 (first)."""
    wnd = seq_diff(tcb.rcv_adv, tcb.rcv_nxt)
    if wnd < 0:
        wnd = 0
    seg_len = seg.seg_len
    if seg_len == 0:
        if wnd == 0:
            return seg.seq == tcb.rcv_nxt
        return seq_in_window(seg.seq, tcb.rcv_nxt, wnd)
    if wnd == 0:
        return False
    return seq_in_window(seg.seq, tcb.rcv_nxt, wnd) or seq_in_window(
        seq_add(seg.seq, seg_len - 1), tcb.rcv_nxt, wnd
    )


def receive_synchronized(tcb: ControlBlock, seg: TcpSegment, now: float) -> None:
    """RFC 9293 3.10.7.4: SEGMENT ARRIVES in SYN-RECEIVED and the synchronized states
    (TIME-WAIT has its own, shorter path: :func:`receive_time_wait`)."""
    flags = seg.flags
    if tcb.state is State.SYN_RECEIVED and flags & SYN and not flags & ACK \
            and seg.seq == tcb.irs:
        # A retransmitted SYN: our SYN,ACK was lost; send it again (the timer and
        # the RTT measurement carry on as they are) -- at most once per
        # cfg.invalid_ratelimit, so repeated SYNs cannot make us a SYN,ACK cannon.
        tcb.fire(Trigger.RCV_SYN)
        ecn.on_repeated_syn(tcb, seg)  # AccECN reflects the latest SYN (RFC 9768 3.1.5)
        if now - tcb.last_oow_reply < tcb.cfg.invalid_ratelimit:
            tcb.drop("tcp_syn_repeat_limited")
            return
        tcb.last_oow_reply = now
        tcb.out.append(handshake.syn_segment(tcb, now, ack=True))
        tcb.mark()
        return
    if tcb.ts_ok and _paws_rejects(tcb, seg, now):
        return
    if not acceptable(tcb, seg):
        _reject_unacceptable(tcb, seg, now)
        return
    if flags & RST:
        _receive_rst(tcb, seg, now)
        return
    if flags & SYN:
        # Fourth: a SYN in a synchronized state draws a challenge ACK (RFC 5961 4.2).
        tcb.drop("tcp_syn_challenged")
        ack_policy.challenge_ack(tcb, now)
        return
    # Fifth: segments without ACK are dropped.
    if not flags & ACK:
        tcb.drop("tcp_no_ack")
        return
    if tcb.state is State.SYN_RECEIVED and not _ack_of_syn(tcb, seg):
        return
    if not process_ack(tcb, seg, now):
        return
    # RFC 7323 4.3: TS.Recent, only now that the ACK was found acceptable (as Linux
    # does): a blind segment in the window with a huge TSval but a bad ACK must not
    # poison it, or PAWS would drop every later real segment.
    if tcb.ts_ok:
        _update_ts_recent(tcb, seg, now)
    if tcb.state is State.CLOSED:
        return
    if tcb.ecn_ok:
        ecn.on_segment(tcb, seg)  # CE and CWR (RFC 3168 6.1.3)
    process_text(tcb, seg, now, seg.seq)


def _paws_rejects(tcb: ControlBlock, seg: TcpSegment, now: float) -> bool:
    """RFC 7323 5.3: a timestamp older than TS.Recent marks an old duplicate: ACK it,
    drop it (not a RST: 5.3 R1)."""
    ts = seg.options.timestamps
    if tcb.ts_ok and ts is not None and not seg.flags & RST and tcb.ts_recent_age >= 0 \
            and seq_lt(ts[0], tcb.ts_recent) \
            and now - tcb.ts_recent_age < PAWS_IDLE_LIMIT:
        tcb.drop("tcp_paws_rejected")
        ack_policy.reply_unasked(tcb, now, bool(seg.payload))
        return True
    return False


def _reject_unacceptable(tcb: ControlBlock, seg: TcpSegment, now: float) -> None:
    """RFC 9293 3.10.7.4 first: a segment that fails the sequence number check is
    dropped with an ACK (never for a RST); one at RCV.NXT still has its ACK
    processed when the window is zero; a duplicate is reported as D-SACK."""
    flags = seg.flags
    if flags & RST:
        tcb.drop("tcp_rst_out_of_window")
        return
    tcb.drop("tcp_seq_unacceptable")
    # RFC 9293 3.10.7.4: zero-window special case -- an ACK at RCV.NXT is
    # still processed even though its text cannot be accepted.
    if seg.seq == tcb.rcv_nxt and flags & ACK and not flags & SYN:
        process_ack(tcb, seg, now)
    n = len(seg.payload)
    if n and tcb.sack_ok and seq_le(seq_add(seg.seq, n), tcb.rcv_nxt):
        tcb.dsack = (seg.seq, seq_add(seg.seq, n))  # RFC 2883 4.1.1
    ack_policy.reply_unasked(tcb, now, n > 0)


def _receive_rst(tcb: ControlBlock, seg: TcpSegment, now: float) -> None:
    """Second (RFC 5961 3.2, adopted by RFC 9293): a RST exactly at RCV.NXT resets;
    anything else in the window draws a challenge ACK."""
    if seg.seq != tcb.rcv_nxt:
        tcb.drop("tcp_rst_challenged")
        ack_policy.challenge_ack(tcb, now)
        return
    # CLOSING and LAST-ACK: the application already closed; it is not an error.
    error = None if tcb.state in (State.CLOSING, State.LAST_ACK) else "reset"
    teardown.terminate(tcb, error, Trigger.RCV_RST)


def _update_ts_recent(tcb: ControlBlock, seg: TcpSegment, now: float) -> None:
    """RFC 7323 4.3: remember the TSval to echo, from a segment that covers the last
    ACK we sent."""
    ts = seg.options.timestamps
    if tcb.ts_ok and ts is not None and seq_le(seg.seq, tcb.last_ack_sent) \
            and (tcb.ts_recent_age < 0 or seq_ge(ts[0], tcb.ts_recent)):
        tcb.ts_recent = ts[0]
        tcb.ts_recent_age = now


def _ack_of_syn(tcb: ControlBlock, seg: TcpSegment) -> bool:
    """Fifth, SYN-RECEIVED: an ACK of our SYN establishes the connection; any other
    ACK gets a RST (RFC 9293 3.10.7.4)."""
    if not (seq_gt(seg.ack, tcb.snd_una) and seq_le(seg.ack, tcb.snd_max)):
        tcb.drop("tcp_syn_received_bad_ack")
        output.send_rst(tcb, seg.ack)
        return False
    tcb.fire(Trigger.RCV_ACK_OF_SYN)
    handshake.after_handshake(tcb)
    ecn.on_first_ack(tcb, seg)  # AccECN: how our SYN,ACK arrived (RFC 9768 3.2.2.3)
    tcb.snd_wnd = seg.window << tcb.snd_wscale
    tcb.max_snd_wnd = tcb.snd_wnd
    tcb.snd_wl1 = seg.seq
    tcb.snd_wl2 = seg.ack
    if not fastopen.sends_early(tcb):
        tcb.events.append(ev.ESTABLISHED)  # (a Fast Open child's came with its SYN)
    tcb.mark()
    _run_queued_close(tcb)
    return True


def receive_time_wait(tcb: ControlBlock, seg: TcpSegment, now: float) -> None:
    """TIME-WAIT (RFC 9293 3.10.7.4): only the peer's retransmitted FIN -- a FIN whose
    segment ends exactly at RCV.NXT, as Linux checks -- is acknowledged again with
    the 2 MSL timer restarted. Anything else gets an ACK and is dropped without
    touching the timer (a SYN is answered by a challenge ACK, RFC 5961 4.2), so
    no peer can keep the connection in TIME-WAIT.

    A RST is ignored here, following RFC 1337 (TIME-WAIT assassination hazards).
    A new SYN above the old sequence space is handled by the stack before it
    reaches this TCB (RFC 6191).
    """
    flags = seg.flags
    if flags & RST:
        tcb.drop("tcp_time_wait_rst")
        tcb.fire(Trigger.RCV_RST)
        return
    if flags & SYN:
        tcb.drop("tcp_syn_challenged")
        ack_policy.challenge_ack(tcb, now)
    elif flags & FIN and seq_add(seg.seq, seg.seg_len) == tcb.rcv_nxt:
        tcb.fire(Trigger.RCV_FIN)
        tcb.timers.time_wait = now + 2 * tcb.cfg.msl
        ack_policy.ack_now(tcb)
    else:
        tcb.drop("tcp_time_wait_segment")
        ack_policy.reply_unasked(tcb, now, bool(seg.payload))


# ------------------------------------------------------------- text and FIN


def process_text(tcb: ControlBlock, seg: TcpSegment, now: float, seq: int) -> None:
    """Segment text and FIN (RFC 9293 3.10.7.4, seventh and eighth)."""
    payload: BytesLike = seg.payload
    n = len(payload)
    fin = bool(seg.flags & FIN)
    if tcb.state not in RECEIVES_TEXT:
        # CLOSE-WAIT, CLOSING, LAST-ACK: the peer already sent its FIN, so text or a
        # FIN beyond it "should not occur": ignore them (seventh and eighth steps).
        if n or fin:
            tcb.drop("tcp_data_after_fin")
        return
    if n:
        if tcb.closed_by_app:
            # Data after a full close: the application will never read it
            # (RFC 1122 4.2.2.13, RFC 2525 2.17): reset.
            tcb.drop("tcp_data_after_close")
            teardown.abort(tcb)
            return
        skip = seq_diff(tcb.rcv_nxt, seq)
        if skip > 0:
            # Trim what we already have from the front; report it as D-SACK
            # (RFC 2883 4.1.1).
            if tcb.sack_ok:
                tcb.dsack = (seq, seq_add(seq, min(skip, n)))
            payload = payload[skip:]
            seq = tcb.rcv_nxt
            n = len(payload)
            tcb.ack_pending = True
        # ... and what exceeds the advertised window at the back, or lies beyond a
        # FIN already received out of order: nothing follows the peer's FIN.
        room = seq_diff(tcb.rcv_adv, seq)
        fin_seq = tcb.reassembly.fin_seq
        if fin_seq is not None:
            room = min(room, seq_diff(fin_seq, seq))
        if n > room:
            payload = payload[:max(room, 0)]
            n = len(payload)
            fin = False
        if seq != tcb.rcv_nxt:
            _queue_out_of_order(tcb, seq, payload, fin)
            return
        if n:
            _deliver_in_order(tcb, payload, now)
        tcb.mark()
    if fin:
        if seq_add(seq, n) == tcb.rcv_nxt:
            # A FIN recorded ahead of a hole is this one, carried again by the
            # retransmission that filled the hole (or one beyond where the stream
            # ends now): either way nothing of it stays queued.
            tcb.reassembly.fin_seq = None
            teardown.receive_fin(tcb, now)
        else:
            # An out-of-order FIN draws a duplicate ACK like out-of-order data.
            _note_fin_ahead(tcb, seq_add(seq, n))
            ack_policy.ack_now(tcb)
    elif tcb.reassembly.fin_seq is not None and tcb.reassembly.fin_seq == tcb.rcv_nxt:
        tcb.reassembly.fin_seq = None
        teardown.receive_fin(tcb, now)


def _queue_out_of_order(tcb: ControlBlock, seq: int, payload: BytesLike, fin: bool) -> None:
    """Data beyond RCV.NXT: queue it and send a duplicate ACK at once (RFC 5681 4.2),
    carrying SACK blocks (RFC 2018 4); a duplicate part is reported as D-SACK."""
    n = len(payload)
    ack_policy.ack_now(tcb)
    if n and tcb.pool.pressure:
        # The stack's buffers are over their limit: keep nothing that cannot be
        # delivered now (the peer will send it again).
        tcb.drop("tcp_ooo_memory_pressure")
        return
    if n:
        try:
            dup = tcb.reassembly.add(seq, payload, tcb.rcv_nxt)
        except ReassemblyFull:
            # Too many separate pieces queued (a peer sending tiny segments with
            # tiny holes): drop it; the peer will send it again.
            tcb.drop("tcp_ooo_queue_full")
            return
        if dup is not None and tcb.sack_ok:
            tcb.dsack = dup
    if fin:
        _note_fin_ahead(tcb, seq_add(seq, n))


def _note_fin_ahead(tcb: ControlBlock, fin_seq: int) -> None:
    """Remember the peer's FIN that arrived ahead of RCV.NXT (the first one wins) and
    forget anything queued beyond it: the stream ends there."""
    ooo = tcb.reassembly
    if ooo.fin_seq is not None:
        return
    ooo.fin_seq = fin_seq
    if ooo.drop_from(fin_seq, tcb.rcv_nxt):
        tcb.drop("tcp_data_after_fin")


def _deliver_in_order(tcb: ControlBlock, payload: BytesLike, now: float) -> None:
    """In-order data: into the receive buffer, with what it lets the reassembly
    queue release; a filled hole is acknowledged at once (RFC 5681 4.2)."""
    n = len(payload)
    tcb.rcv_buf.data += payload  # ReceiveBuffer.append, without a call per segment
    tcb.rcv_nxt = seq_add(tcb.rcv_nxt, n)
    if tcb.reassembly:
        _pull_reassembled(tcb)
    if not tcb.data_event_pending:
        tcb.data_event_pending = True
        tcb.events.append(ev.DATA_RECEIVED)
    ack_policy.on_data_received(tcb, n)
    autotune.on_data(tcb, now)


def _pull_reassembled(tcb: ControlBlock) -> None:
    """Move queued runs that now continue RCV.NXT into the receive buffer."""
    ooo = tcb.reassembly
    while True:
        data = ooo.pop_ready(tcb.rcv_nxt)
        if data is None:
            break
        tcb.rcv_buf.append(data)
        tcb.rcv_nxt = seq_add(tcb.rcv_nxt, len(data))
    ooo.drop_below(tcb.rcv_nxt)
    tcb.ack_pending = True
