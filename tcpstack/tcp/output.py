"""The send side: building segments and deciding what goes out (RFC 9293 3.8.6, 3.7.4).

* :func:`make` is the one place an outgoing segment is built; everything the
  engine sends (SYN, data, ACK, FIN, RST, probes) goes through it.
* :func:`flush` collects a connection's output: retransmissions of segments judged
  lost first (RFC 6675 5, NextSeg rule 1), then new data within the send and
  congestion windows, then the FIN; then a pure ACK if one is still owed.
* Sender silly-window avoidance and Nagle's algorithm (RFC 9293 3.8.6.2.1, 3.7.4),
  with Linux-like autocorking: a sub-MSS tail waits while much is in flight.
* After sending, the tail-loss-probe (RFC 8985 7.2) and persist (3.8.6.1) timers.
* Pacing, for controllers with a pacing rate (BBR): each transmission has a
  departure time, and the ``pace`` timer wakes the sender for the next one.
"""

from __future__ import annotations

from tcpstack.tcp import ack_policy
from tcpstack.tcp.control import NO_PATH_LIMIT, ControlBlock
from tcpstack.tcp.rate import DeliveryRate
from tcpstack.tcp.scoreboard import Sent
from tcpstack.tcp.seq import seq_add, seq_diff, seq_gt
from tcpstack.tcp.state import SENDS_DATA, State
from tcpstack.tcp.window import window_field
from tcpstack.wire.errors import BytesLike
from tcpstack.wire.tcp import (
    ACK,
    CWR,
    ECE,
    ECT_0,
    FIN,
    MAX_OPTIONS_LEN,
    MD5_ONLY,
    NO_OPTIONS,
    PSH,
    RST,
    SYN,
    OutSegment,
    TcpOptions,
    new_tuple,
)

WORST_CASE_DELAYED_ACK = 0.2  # RFC 8985 7.2 WCDelAckT
MIN_PTO = 0.04  # floor of the tail-loss-probe timeout (see arm_tlp)
AUTOCORK_FLIGHT_SEGMENTS = 4  # see _send_new_data
PACE_BURST = 1 / 1024  # seconds of data a paced sender sends at once (see send_data)
PACE_CREDIT = 0.001  # seconds a late pacing timer may catch up (see _paced)


def make(tcb: ControlBlock, seq: int, ack: int, flags: int, window: int,
         options: TcpOptions = NO_OPTIONS, payload: BytesLike = b"",
         ecn: int = 0) -> OutSegment:
    """Build a segment of this connection (the engine's only segment constructor).

    On a signed connection every segment, RSTs included, says so (RFC 2385 2.0);
    the stack writes the digest. While the peer is owed an ECN echo, every segment
    but a SYN or RST carries ECE (RFC 3168 6.1.3); with AccECN all of those carry
    the ACE field instead (RFC 9768 3.2.2). ``ecn``: the IP header's ECN field
    (ECT(0) on new data, see :func:`emit_new`)."""
    if tcb.md5 and not options.md5:
        options = MD5_ONLY if options is NO_OPTIONS else options._replace(md5=True)
    if tcb.ecn_echo and not flags & (SYN | RST):
        flags |= ECE
    a = tcb.accecn
    if a is not None and not flags & (SYN | RST):
        flags |= a.ace_to_send(not payload)
    return new_tuple(OutSegment, (tcb.local_port, tcb.remote_port, seq, ack, flags, window,
                                  options, payload, 0, ecn))


def options(tcb: ControlBlock, now: float) -> TcpOptions:
    """Options for a non-SYN segment: timestamps (RFC 7323 3.2: on every segment once
    agreed) and SACK blocks, a pending D-SACK first (RFC 2883 4)."""
    ooo = tcb.reassembly
    if not tcb.ts_ok and not (tcb.sack_ok and (ooo or tcb.dsack)):
        return NO_OPTIONS
    timestamps = (tcb.tsval(now), tcb.ts_recent) if tcb.ts_ok else None
    blocks: list[tuple[int, int]] = []
    # As many blocks as the 40 option bytes leave room for (RFC 2018 3): 4, 3 beside
    # timestamps, 2 beside a signature, none beside both (as Linux).
    limit = (MAX_OPTIONS_LEN - 4 - tcb.opt_len) // 8
    if tcb.sack_ok and limit > 0 and (tcb.dsack is not None or ooo.nbytes):
        if tcb.dsack is not None:
            blocks.append(tcb.dsack)
            tcb.dsack = None
        if ooo.nbytes:
            blocks.extend(ooo.sack_blocks(limit - len(blocks)))
    return new_tuple(TcpOptions, (None, None, False, tuple(blocks), timestamps, tcb.md5, None,
                                   None, None))


def control_segment(tcb: ControlBlock, seq: int, flags: int, now: float) -> OutSegment:
    """A segment carrying no data (ACK, probe, FIN) with the current ACK and window.

    With AccECN it carries the AccECN option (RFC 9768 3.2.3.3), where it fits
    beside the SACK blocks, once the peer has sent one; data segments do not (the
    option would cost payload, and the ACE field is on every segment)."""
    opts = options(tcb, now)
    a = tcb.accecn
    if a is not None and a.opt_seen:
        opts = opts._replace(accecn=a.option_fields())
    return make(tcb, seq, tcb.rcv_nxt, flags, window_field(tcb), opts)


def send_probe(tcb: ControlBlock, seq: int, now: float) -> None:
    """An ACK at an old sequence number that the peer must answer (a zero-window
    probe, RFC 9293 3.8.6.1, or a keepalive, RFC 1122 4.2.3.6)."""
    tcb.out.append(control_segment(tcb, seq, ACK, now))
    tcb.mark()


def send_rst(tcb: ControlBlock, seq: int) -> None:
    """<SEQ=seq><CTL=RST> (RFC 9293 3.10.7.3 first, 3.10.7.4 fifth)."""
    tcb.out.append(make(tcb, seq, 0, RST, 0))
    tcb.mark()


def send_abort_rst(tcb: ControlBlock) -> None:
    """<SEQ=SND.NXT><ACK=RCV.NXT><CTL=RST,ACK> (RFC 9293 3.10.5 ABORT)."""
    tcb.out.append(make(tcb, tcb.snd_max, tcb.rcv_nxt, RST | ACK, 0))


# ----------------------------------------------------------------- flushing


def flush(tcb: ControlBlock, now: float) -> list[OutSegment]:
    """Everything this connection wants transmitted now; clears the dirty mark."""
    tcb.dirty = False
    tcb.data_event_pending = False
    state = tcb.state
    if state is State.FIN_WAIT_2 and tcb.closed_by_app and tcb.timers.fin_wait is None:
        # Linux tcp_fin_timeout: an orphaned FIN-WAIT-2 does not wait forever.
        tcb.timers.fin_wait = now + tcb.cfg.fin_timeout
    tfo = tcb.tfo
    a = tcb.accecn
    if a is not None and a.reflect is not None and state is not State.SYN_SENT \
            and state is not State.CLOSED:
        # RFC 9768 3.2.2.1: the client's first ACK, which reflects the SYN,ACK's
        # IP-ECN field, is a pure ACK -- before any data.
        tcb.out.append(control_segment(tcb, tcb.snd_max, ACK, now))
        ack_policy.on_ack_sent(tcb)
    if state in SENDS_DATA:
        send_data(tcb, now)
    elif tfo is not None and tfo.child and state is State.SYN_RECEIVED:
        send_data(tcb, now)  # RFC 7413 4.2.2: a Fast Open child sends at once
    if tcb.ack_pending and state is not State.CLOSED and state is not State.SYN_SENT:
        tcb.out.append(control_segment(tcb, tcb.snd_max, ACK, now))
        ack_policy.on_ack_sent(tcb)
    elif tcb.delack and tcb.timers.delack is None:
        ack_policy.arm_delayed_ack(tcb, now)
    if tcb.keepalive and tcb.timers.keepalive is None and state is State.ESTABLISHED:
        tcb.timers.keepalive = tcb.last_rcv + tcb.keepalive_idle
    out = tcb.out
    tcb.out = []
    return out


def send_data(tcb: ControlBlock, now: float) -> None:
    """Transmit what the windows allow: first segments judged lost (RFC 6675 5
    NextSeg rule 1), then new data, then the FIN (RFC 9293 3.8.6, 3.10.4)."""
    expires = tcb.path_expires
    if expires is not None and now >= expires:
        # RFC 1191 6.3 / RFC 8201 4: a lowered path MTU is tried higher again after
        # a while (Linux: 10 minutes); if the path is still narrow, ICMP or PLPMTUD
        # lowers it once more.
        tcb.set_path_mss(NO_PATH_LIMIT, None)
        tcb.drop("tcp_pmtu_expired")
    dsack = tcb.dsack
    opts = options(tcb, now) if (tcb.ts_ok or tcb.sack_ok) else NO_OPTIONS
    # RFC 2883 4: a D-SACK block is reported once -- on the first segment only.
    rest = opts
    if dsack is not None and opts.sack_blocks and opts.sack_blocks[0] == dsack:
        rest = TcpOptions(timestamps=opts.timestamps, sack_blocks=opts.sack_blocks[1:])
    extra = 4 + 8 * len(opts.sack_blocks) if opts.sack_blocks else 0
    mss = tcb.seg_mss - extra
    tcb.gso_size = mss
    # With TSO the device cuts large segments into MSS-sized ones -- not signed ones,
    # each of which needs its own digest.
    seg_max = mss if tcb.sig_len else max(mss, tcb.cfg.tso_size // mss * mss)
    rate = tcb.cc.pacing_rate
    if rate > 0:
        # A paced sender sends bursts of about a millisecond's worth (Linux's TSO
        # autosizing at sk_pacing_shift 10), at least two segments.
        seg_max = min(seg_max, max(2 * mss, int(rate * PACE_BURST) // mss * mss))
    sent = tcb.scoreboard.lost_bytes > 0 and \
        _send_retransmissions(tcb, mss, seg_max, opts, rest, now)
    if sent:
        opts = rest
    sent = _send_new_data(tcb, mss, seg_max, opts, rest, now) or sent
    sample = tcb.scoreboard.rate
    if sample is not None:
        _check_app_limited(tcb, mss, sample)
    if sent:
        ack_policy.on_ack_sent(tcb)
        arm_tlp(tcb, now)
    else:
        tcb.dsack = dsack  # still owed: the pure ACK will carry it


def _send_retransmissions(tcb: ControlBlock, mss: int, seg_max: int, opts: TcpOptions,
                          rest: TcpOptions, now: float) -> bool:
    """RFC 6675 5 (NextSeg rule 1): resend lost records while pipe leaves room in cwnd
    (pipe = flight - SACKed - lost, RFC 6675 4); the first one of an episode goes
    at once (RFC 6675 5 step 4.3, RFC 5681 3.2)."""
    sb = tcb.scoreboard
    cwnd = tcb.cc.cwnd
    sent = False
    while sb.lost_bytes > 0:
        pipe_now = pipe(tcb, seq_diff(tcb.snd_max, tcb.snd_una))
        if pipe_now > 0 and cwnd - pipe_now < mss and not tcb.rtx_now:
            break
        if tcb.cc.pacing_rate > 0 and not _pace_allows(tcb, now):
            break
        tcb.rtx_now = False
        rec = sb.first_lost()
        if rec is None:
            break
        allowed = max(mss, (cwnd - pipe_now) // mss * mss)
        retransmit(tcb, rec, min(allowed, seg_max), opts, now)
        tcb.counters["tcp_retrans_rto" if tcb.rto_high is not None else
                     "tcp_retrans_rack" if tcb.sack_ok else "tcp_retrans_fast"] += 1
        opts = rest
        sent = True
    return sent


def _send_new_data(tcb: ControlBlock, mss: int, seg_max: int, opts: TcpOptions,
                   rest: TcpOptions, now: float) -> bool:
    """New data within min(send window, cwnd - pipe), then the FIN (RFC 9293 3.10.4)."""
    sndbuf = tcb.sndbuf
    buf = sndbuf.data
    cwnd = tcb.cc.cwnd
    paced = tcb.cc.pacing_rate > 0
    sent = False
    while True:
        off = seq_diff(tcb.snd_max, sndbuf.seq)
        unsent = len(buf) - off
        if unsent > 0:
            flight = seq_diff(tcb.snd_max, tcb.snd_una)
            usable = min(tcb.snd_wnd - flight, cwnd - pipe(tcb, flight))
            n = min(unsent, seg_max, usable)
            if n <= 0:
                if tcb.snd_wnd == 0 and flight == 0:
                    arm_persist(tcb, now)
                break
            if mss < n < unsent:
                # A super-segment the window cuts short ends on a segment boundary,
                # or the device's last piece is a runt (Linux's tcp_mss_split_point).
                n -= n % mss
            if n < mss and n < unsent and flight > 0:
                break  # sender SWS avoidance (RFC 9293 3.8.6.2.1)
            if n < mss and flight > 0 and not tcb.fin_queued and (
                    not tcb.nodelay or flight >= AUTOCORK_FLIGHT_SEGMENTS * mss):
                # Nagle (RFC 9293 3.7.4): one small segment in flight at most. Even
                # with no-delay, a small tail waits while much is in flight (like
                # Linux's autocorking): the next ACK or write comes soon and sends
                # it in a full segment instead of a runt.
                break
            if paced and not _pace_allows(tcb, now):
                break
            # A view, not a copy: the packet builder copies it once into the packet.
            payload = memoryview(buf)[off:off + n]
            flags = ACK
            if n == unsent:
                flags |= PSH
                if tcb.fin_queued and tcb.state is not State.SYN_RECEIVED:
                    # (A Fast Open child's FIN waits for the handshake, RFC 9293 3.10.4.)
                    flags |= FIN
            emit_new(tcb, flags, payload, opts, now)
            opts = rest
            sent = True
            continue
        if tcb.fin_queued and off == len(buf) and \
                tcb.state in (State.FIN_WAIT_1, State.CLOSING, State.LAST_ACK):
            emit_new(tcb, FIN | ACK, b"", opts, now)
            sent = True
        break
    return sent


def _pace_allows(tcb: ControlBlock, now: float) -> bool:
    """A paced sender (``cc.pacing_rate`` > 0: the callers check) sends when its next
    departure time has come, else arms the pacing timer for it (Linux's EDT pacing)."""
    at = tcb.pace_next
    if at <= now:
        return True
    if tcb.timers.pace is None or at < tcb.timers.pace:
        tcb.timers.pace = at
    return False


def _paced(tcb: ControlBlock, n: int, now: float) -> None:
    """``n`` bytes left a paced sender: the next departure is that much later at the
    pacing rate. A timer that woke late leaves up to :data:`PACE_CREDIT` of credit,
    so the event loop's millisecond timers do not lower the rate."""
    tcb.pace_next = max(tcb.pace_next, now - PACE_CREDIT) + n / tcb.cc.pacing_rate


def _check_app_limited(tcb: ControlBlock, mss: int, rate: DeliveryRate) -> None:
    """Less than a segment left to send, room in the window, no loss to repair: the
    application is the limit now, and rate samples say so (Linux's
    tcp_rate_check_app_limited)."""
    unsent = len(tcb.sndbuf.data) - seq_diff(tcb.snd_max, tcb.sndbuf.seq)
    if unsent >= mss or tcb.scoreboard.lost_bytes or tcb.write_blocked:
        return  # (write_blocked: the application has more waiting to come in)
    in_flight = pipe(tcb, seq_diff(tcb.snd_max, tcb.snd_una))
    if in_flight < tcb.cc.cwnd:
        rate.check_app_limited(in_flight)


def pipe(tcb: ControlBlock, flight: int) -> int:
    """RFC 6675 4 *pipe*: bytes believed in the network.

    Without SACK, each duplicate ACK stands for one segment that left the network
    (as Linux emulates SACK for Reno peers); this gives RFC 3042 limited transmit
    and RFC 6582's window inflation during recovery.
    """
    sb = tcb.scoreboard
    in_net = flight - sb.sacked_bytes - sb.lost_bytes
    if not tcb.sack_ok and tcb.dupacks:
        in_net -= min(tcb.dupacks * tcb.seg_mss, max(0, in_net - tcb.seg_mss))
    return in_net


def emit_new(tcb: ControlBlock, flags: int, payload: BytesLike, opts: TcpOptions,
             now: float) -> None:
    """Send new data (and/or the FIN) at SND.MAX. With ECN, data goes out ECT(0),
    the first after a reduction with CWR (RFC 3168 6.1.2, 6.1.5)."""
    seq = tcb.snd_max
    rate = tcb.scoreboard.rate
    if rate is not None and seq == tcb.snd_una:
        tcb.cc.on_tx_start(now, rate)  # nothing in flight: sending restarts
    if tcb.stall_since is None:
        # Nothing was outstanding: the user timeout's clock starts now.
        tcb.stall_since = now
        tcb.progress_una = tcb.snd_una
    ecn = 0
    if tcb.ecn_ok and payload:
        a = tcb.accecn
        if a is None:
            ecn = ECT_0
            if tcb.cwr_pending:
                tcb.cwr_pending = False
                flags |= CWR
        elif a.ect:  # AccECN has no CWR (RFC 9768 3.2.2)
            ecn = ECT_0
    seg = make(tcb, seq, tcb.rcv_nxt, flags, window_field(tcb), opts, payload, ecn)
    tcb.out.append(seg)
    end = seq_add(seq, seg.seg_len)
    # Fresh data: time it if no measurement is running (RFC 6298 3, Karn).
    if tcb.rtt_seq is None and not tcb.ts_ok:
        tcb.rtt_seq = end
        tcb.rtt_time = now
    tcb.scoreboard.on_send(seq, end, now, tcb.gso_size)
    if tcb.cc.pacing_rate > 0:
        _paced(tcb, len(payload), now)
    if tcb.recovery_point is not None:
        tcb.prr_out += seg.seg_len
    tcb.snd_max = end
    if tcb.timers.rto is None:
        tcb.timers.rto = now + tcb.rtt.rto


def retransmit(tcb: ControlBlock, rec: Sent, limit: int, opts: TcpOptions,
               now: float) -> None:
    """Send record ``rec`` again (at most ``limit`` bytes of it)."""
    rec = tcb.scoreboard.head(rec, limit)
    rec.seg = tcb.gso_size  # it goes out again as segments of today's size
    fin_seq = tcb.fin_seq()
    end = rec.end
    flags = ACK
    if fin_seq is not None and seq_gt(end, fin_seq):
        end = fin_seq
        flags |= FIN
    sndbuf = tcb.sndbuf
    n = seq_diff(end, rec.start)
    payload: BytesLike = sndbuf.view(seq_diff(rec.start, sndbuf.seq), n) if n > 0 else b""
    if payload and rec.end == tcb.snd_max:
        flags |= PSH
    seg = make(tcb, rec.start, tcb.rcv_nxt, flags, window_field(tcb), opts, payload)
    tcb.out.append(seg)
    if tcb.cc.pacing_rate > 0:
        _paced(tcb, n, now)
    if tcb.recovery_point is not None:
        tcb.prr_out += seg.seg_len
    tcb.scoreboard.on_retransmit(rec, now)
    tcb.rtt_seq = None  # Karn's rule (RFC 6298 3)
    if tcb.rtx_tsval is None and tcb.ts_ok and tcb.pmtu_high is None:
        # Not while resending what a smaller path MTU dropped: an ACK of earlier
        # data must not make that look spurious (Eifel, RFC 3522).
        tcb.rtx_tsval = tcb.tsval(now)
    if tcb.timers.rto is None:
        tcb.timers.rto = now + tcb.rtt.rto


# ------------------------------------------------------------ after sending


def arm_tlp(tcb: ControlBlock, now: float) -> None:
    """RFC 8985 7.2: schedule a tail loss probe two SRTTs after the last send."""
    srtt = tcb.rtt.srtt
    if not (tcb.cfg.tlp and tcb.sack_ok) or (tcb.recovery_point is not None
                                              and not tcb.in_cwr) \
            or srtt is None or tcb.tlp_high is not None:
        return
    flight = seq_diff(tcb.snd_max, tcb.snd_una)
    if flight == 0:
        return
    pto = 2 * srtt
    if flight < 2 * tcb.seg_mss:
        # The receiver may hold its ACK for less than two full segments.
        pto += WORST_CASE_DELAYED_ACK
    # Deviation from RFC 8985 (and Linux's 10 ms): never below a typical delayed-
    # ACK time, since a receiver whose application is not reading may hold its ACK
    # that long even with more in flight; on fast local paths SRTT is microseconds.
    pto = max(pto, MIN_PTO)
    deadline = now + pto
    rto = tcb.timers.rto
    if rto is not None and deadline > rto:
        deadline = rto  # RFC 8985 7.2: PTO = min(PTO, RTO)
    tcb.timers.tlp = deadline


def arm_persist(tcb: ControlBlock, now: float) -> None:
    """RFC 9293 3.8.6.1: probe a zero window on a backed-off timer."""
    if tcb.timers.persist is None:
        delay = min(tcb.rtt.rto * (1 << min(tcb.persist_backoff, 16)), tcb.cfg.rto_max)
        tcb.timers.persist = now + delay
        if tcb.stall_since is None:
            tcb.stall_since = now  # waiting for the window: the user timeout runs


__all__ = [
    "AUTOCORK_FLIGHT_SEGMENTS", "MIN_PTO", "WORST_CASE_DELAYED_ACK", "arm_persist", "arm_tlp",
    "control_segment", "emit_new", "flush", "make", "options", "pipe", "retransmit",
    "send_abort_rst", "send_data", "send_probe", "send_rst",
]
