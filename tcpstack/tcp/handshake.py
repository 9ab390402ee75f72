"""Opening a connection: our SYN or SYN,ACK and what the handshake agrees.

* :func:`start_passive` / :func:`start_active` -- the OPEN calls (RFC 9293 3.10.1,
  3.10.7.2): record the peer's SYN, send ours.
* :func:`negotiate` -- apply the peer's SYN options: MSS (RFC 9293 3.7.1, RFC 6691),
  window scale and timestamps (RFC 7323 2.2, 3.2), SACK-permitted (RFC 2018 2);
  on a signed connection (RFC 2385) SACK is preferred to timestamps, as Linux.
* :func:`send_syn` -- (re)send our SYN or SYN,ACK and run its retransmission timer.
* :func:`after_handshake` -- RFC 6298 5.7 and RFC 5681 3.1 after a lost SYN.
* :func:`cookie_syn_ack` / :func:`start_from_cookie` -- the stateless SYN,ACK of
  SYN cookies (RFC 4987 3.6) and the connection rebuilt from the ACK.

Fast Open (RFC 7413) rides on these: the cookie option in our SYN or SYN,ACK,
the data of a client's SYN taken by :func:`start_passive`, and the data our own
SYN carries (:func:`send_syn`); its rules are in :mod:`tcpstack.tcp.fastopen`.

The segments of the handshake itself are processed in :mod:`tcpstack.tcp.inbound`.
"""

from __future__ import annotations

from tcpstack.tcp import accecn, congestion, ecn, fastopen, syncookies
from tcpstack.tcp.accecn import AccEcn
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.control import DEFAULT_PEER_MSS, TS_OPTION_LEN, ControlBlock
from tcpstack.tcp.output import make
from tcpstack.tcp.seq import seq_add, seq_gt
from tcpstack.tcp.state import State, Trigger
from tcpstack.wire.errors import BytesLike
from tcpstack.wire.tcp import ACK, ECE, SYN, OutSegment, TcpOptions, TcpSegment, new_tuple


def start_passive(tcb: ControlBlock, syn: TcpSegment, now: float) -> None:
    """A listener received ``syn`` (RFC 9293 3.10.7.2): SYN-RECEIVED, send SYN,ACK."""
    tcb.irs = syn.seq
    tcb.rcv_nxt = seq_add(syn.seq, 1)
    tcb.last_rcv = now
    negotiate(tcb, syn.options)
    ecn.on_peer_syn(tcb, syn)
    record_syn_timestamp(tcb, syn, now)
    # The window in a SYN is never scaled (RFC 7323 2.2).
    tcb.snd_wnd = syn.window
    tcb.max_snd_wnd = syn.window
    tcb.snd_wl1 = syn.seq
    tcb.snd_wl2 = tcb.iss
    tcb.fire(Trigger.RCV_SYN)
    if fastopen.sends_early(tcb):
        fastopen.accept_syn_data(tcb, syn)  # RFC 7413 4.2.2: a valid cookie
    send_syn(tcb, now, ack=True)


def start_active(tcb: ControlBlock, now: float) -> None:
    """An active OPEN (RFC 9293 3.10.1): send SYN, enter SYN-SENT. With Fast Open
    (``tcb.tfo``) the SYN waits for the application's first write, to carry it -- at
    most :data:`tcpstack.tcp.fastopen.DEFER_LIMIT` (RFC 7413 4.1.3; Linux's
    ``TCP_FASTOPEN_CONNECT``)."""
    tcb.fire_app(Trigger.CONNECT)
    tfo = tcb.tfo
    if tfo is not None and tfo.deferred:
        # Until the first write, or the deadline (fastopen.DEFER_LIMIT).
        tfo.defer_until = now + fastopen.DEFER_LIMIT
        tcb.timers.rto = tfo.defer_until
        tcb.mark()
        return
    send_syn(tcb, now, ack=False)


def negotiate(tcb: ControlBlock, opts: TcpOptions, cookie: bool = False) -> None:
    """Apply the peer's SYN options: MSS (RFC 9293 3.7.1), window scale and timestamps
    (RFC 7323 2.2, 3.2), SACK-permitted (RFC 2018 2).

    A signed connection's 20-byte MD5 option (RFC 2385) leaves no room for a SACK
    block beside timestamps in the 40 option bytes. As Linux, it then goes without
    timestamps when SACK is agreed: our SYN does not offer them, our SYN,ACK declines
    them -- but not after a ``cookie``, whose SYN,ACK carried them (they hold the
    cookie's window scale and SACK bits, :mod:`tcpstack.tcp.syncookies`)."""
    cfg = tcb.cfg
    peer_mss = opts.mss if opts.mss else DEFAULT_PEER_MSS
    tcb.peer_mss = max(64, min(peer_mss, cfg.mss))
    # ... and no more than the path allows (RFC 1191, tcpstack.tcp.path).
    tcb.snd_mss = max(64, min(tcb.peer_mss, tcb.path_mss))
    tcb.sack_ok = cfg.sack and opts.sack_permitted
    tcb.ts_ok = cfg.timestamps and opts.timestamps is not None
    if tcb.md5 and not cookie and (tcb.sack_ok or tcb.state is State.SYN_SENT):
        tcb.ts_ok = False
    # RFC 9293 3.7.1 / RFC 6691: the MSS excludes options, so the payload of a
    # segment shrinks by the options it carries.
    tcb.opt_len = (TS_OPTION_LEN if tcb.ts_ok else 0) + tcb.sig_len
    tcb.seg_mss = tcb.snd_mss - tcb.opt_len
    tcb.gso_size = tcb.seg_mss
    tcb.cc.set_mss(tcb.seg_mss)
    tcb.cc.cwnd = congestion.initial_window(tcb.seg_mss, cfg.initial_window)
    # RFC 7323 2.2: scaling applies only if both SYNs carry the option.
    tcb.wscale_ok = cfg.window_scaling and opts.wscale is not None
    if tcb.wscale_ok:
        tcb.snd_wscale = opts.wscale or 0
        tcb.rcv_wscale = cfg.rcv_wscale
    else:
        tcb.snd_wscale = 0
        tcb.rcv_wscale = 0


def record_syn_timestamp(tcb: ControlBlock, syn: TcpSegment, now: float) -> None:
    """RFC 7323 4.3: the TSval of the peer's SYN is the first TS.Recent."""
    if tcb.ts_ok and syn.options.timestamps is not None:
        tcb.ts_recent = syn.options.timestamps[0]
        tcb.ts_recent_age = now


def syn_window(cfg: TcpConfig, scaled: bool) -> int:
    """The window of our SYN or SYN,ACK: the receive buffer, at most 65535 (a SYN's
    window is never scaled, RFC 7323 2.2) -- and, when ``scaled`` (the SYN offers or
    the SYN,ACK agrees to window scaling), rounded down to a multiple of our scale
    factor so that later, scaled windows can advertise exactly the same right edge
    (else the first scaled window would have to round up, and a retransmitted SYN,ACK
    would move the edge left)."""
    shift = cfg.rcv_wscale if scaled else 0
    return min(cfg.rcv_buf, 0xFFFF) >> shift << shift


def syn_segment(tcb: ControlBlock, now: float, ack: bool,
                payload: BytesLike = b"") -> OutSegment:
    """Our SYN (active open) or SYN,ACK; its window is never scaled (RFC 7323 2.2).

    A SYN offers everything we are configured for; a SYN,ACK answers only what
    the peer's SYN offered. MSS always (RFC 9293 3.7.1). ``payload``: a Fast Open
    SYN's data (RFC 7413 4.1.3).
    """
    cfg = tcb.cfg
    # RFC 7413 4.1.1: the cookie (or request) of a client's first SYN -- not of its
    # retransmissions, as Linux -- and the cookie a server's SYN,ACK gives.
    fo = tcb.tfo
    tfo = None
    if fo is not None and fo.client != ack and (ack or tcb.retries == 0):
        tfo = fo.cookie
    # TcpOptions fields: mss, wscale, sack_permitted, sack_blocks, timestamps, md5, ao,
    # tfo, accecn.
    if ack:
        # RFC 9768 3.2.3: an AccECN SYN,ACK carries the option (the initial counts),
        # where it fits; not a retransmitted one (3.1.4).
        a = tcb.accecn
        opts = new_tuple(TcpOptions, (
            cfg.mss, tcb.rcv_wscale if tcb.wscale_ok else None, tcb.sack_ok, (),
            (tcb.tsval(now), tcb.ts_recent) if tcb.ts_ok else None, tcb.md5, None, tfo,
            a.option_fields() if a is not None and not tcb.syn_retransmitted else None))
    else:
        opts = new_tuple(TcpOptions, (
            cfg.mss, cfg.rcv_wscale if cfg.window_scaling else None, cfg.sack, (),
            (tcb.tsval(now), 0) if cfg.timestamps and not tcb.md5 else None, tcb.md5,
            None, tfo, None))
    # RFC 3168 6.1.1: an ECN-setup SYN,ACK carries ECE; an ECN-setup SYN ECE and CWR
    # (and AE to ask for AccECN, whose SYN,ACK reflects the SYN: RFC 9768 3.1).
    flags = SYN | ACK | ecn.syn_ack_flags(tcb) if ack else SYN | ecn.syn_flags(tcb)
    return make(tcb, tcb.iss, tcb.rcv_nxt if ack else 0, flags,
                syn_window(cfg, tcb.wscale_ok if ack else cfg.window_scaling), opts,
                payload)


def send_syn(tcb: ControlBlock, now: float, ack: bool) -> None:
    """Send (or resend on a timeout) our SYN or SYN,ACK and run its timer.

    Fast Open (RFC 7413): a client's first SYN carries what the application wrote
    (:func:`tcpstack.tcp.fastopen.syn_payload`), which SND.MAX then covers; a
    retransmitted one carries no data, but SND.MAX keeps covering the first one's,
    so that a late SYN,ACK acknowledging it is taken. A Fast Open child resending
    its SYN,ACK keeps the data it sent since in flight, marked lost, to go again
    once the handshake is done."""
    tfo = tcb.tfo
    client = tfo is not None and tfo.client and not ack
    n = fastopen.syn_payload(tcb) if client else 0
    seg = syn_segment(tcb, now, ack, memoryview(tcb.sndbuf.data)[:n] if n else b"")
    tcb.out.append(seg)
    tcb.rcv_adv = seq_add(tcb.rcv_nxt, seg.window)
    if ack:
        tcb.last_ack_sent = tcb.rcv_nxt  # RFC 7323 4.3: Last.ACK.sent
    syn_end = seq_add(tcb.iss, 1)
    if tfo is not None and tfo.child and seq_gt(tcb.snd_max, syn_end):
        tcb.scoreboard.mark_lost_from()
        tcb.rto_high = tcb.snd_max
    elif not (client and tcb.retries):
        tcb.snd_max = seq_add(syn_end, n)
    if tfo is not None and client and tcb.retries == 0:
        tfo.syn_data = n
        name, tfo.result = (("tcp_tfo_syn_data_sent", "syn data") if n else
                            ("tcp_tfo_cookie_request_sent", "cookie requested")
                            if tfo.cookie == b"" else ("tcp_tfo_syn_cookie_sent", "syn cookie"))
        tcb.counters[name] += 1
    if tcb.retries == 0:
        tcb.rtt_seq = syn_end
        tcb.rtt_time = now
    tcb.timers.rto = now + tcb.rtt.rto
    tcb.mark()


def cookie_syn_ack(cfg: TcpConfig, local: tuple[int, int], remote: tuple[int, int],
                   syn: TcpSegment, cookie: int, ts_offset: int, now: float,
                   signed: bool = False) -> OutSegment:
    """Our SYN,ACK to ``syn`` without keeping state (RFC 4987 3.6): the ISS is the
    cookie. Window scale and SACK-permitted can only be echoed when the SYN carries
    timestamps, which then carry them back (see :mod:`tcpstack.tcp.syncookies`);
    without timestamps the SYN,ACK offers neither, as Linux does. ``signed``: the
    stack signs it (RFC 2385); MSS, SACK-permitted, timestamps, window scale and
    the signature fill the 40 option bytes exactly."""
    opts = syn.options
    ts = opts.timestamps if cfg.timestamps else None
    # Classic ECN too rides in the TSval (as Linux's cookie_ecn_ok); AccECN needs no
    # state: the SYN,ACK reflects the SYN (RFC 9768 Table 2) and the client's first
    # ACK shows it took AccECN (as Linux's cookie_accecn_ok).
    accecn_ok = cfg.ecn != "off" and accecn.syn_requests_accecn(syn.flags)
    agree_ecn = ts is not None and cfg.ecn != "off" and not accecn_ok \
        and syn.flags & ecn.SETUP == ecn.SETUP
    wscale, sack, tsval, window = cookie_syn_ack_options(
        cfg, -1 if opts.wscale is None else opts.wscale, opts.sack_permitted, ts is not None,
        ts_offset, now, agree_ecn)
    timestamps = None if ts is None else (tsval, ts[0])
    options = new_tuple(TcpOptions, (cfg.mss, None if wscale < 0 else wscale, sack, (),
                                     timestamps, signed, None, None,
                                     accecn.INITIAL_FIELDS if accecn_ok else None))
    return new_tuple(OutSegment, (local[1], remote[1], cookie, seq_add(syn.seq, 1),
                                  SYN | ACK | (ECE if agree_ecn else 0)
                                  | (accecn.REFLECT[syn.ecn] if accecn_ok else 0),
                                  window, options, b"", 0, 0))


def cookie_syn_ack_options(cfg: TcpConfig, peer_wscale: int, peer_sack: bool,
                           peer_ts: bool, ts_offset: int, now: float,
                           agree_ecn: bool) -> tuple[int, bool, int, int]:
    """What a cookie SYN,ACK offers (RFC 4987 3.6, RFC 7323 2.2): (our window scale
    shift, -1 for none; SACK-permitted; our TSval, -1 for none; the window field).
    Window scaling and SACK are offered only if the SYN carried timestamps
    (``peer_ts``), whose TSval then carries the peer's shift (``peer_wscale``, -1:
    none) and SACK-permitted back to us (:func:`syncookies.encode_ts_options`).
    Decided here for both the general path and :mod:`tcpstack.wire.syn`'s."""
    ts = peer_ts and cfg.timestamps
    wscale = cfg.rcv_wscale if ts and cfg.window_scaling and peer_wscale >= 0 else -1
    sack = ts and cfg.sack and peer_sack
    tsval = -1
    if ts:
        tsval = syncookies.encode_ts_options((int(now * 1000) + ts_offset) & 0xFFFFFFFF,
                                             peer_wscale if wscale >= 0 else None, sack,
                                             agree_ecn)
    return wscale, sack, tsval, syn_window(cfg, wscale >= 0)


def start_from_cookie(tcb: ControlBlock, ack: TcpSegment, peer_mss: int, now: float) -> None:
    """Rebuild the SYN-RECEIVED connection a valid cookie stands for (RFC 4987 3.6),
    from the ACK completing the handshake; the caller then processes that ACK,
    which establishes it. The peer's window scale and SACK-permitted come from the
    echoed TSval's low bits; without timestamps there are neither."""
    tcb.irs = seq_add(ack.seq, -1)
    tcb.rcv_nxt = ack.seq
    tcb.last_rcv = now
    ts = ack.options.timestamps if tcb.cfg.timestamps else None
    wscale, sack = syncookies.decode_ts_options(ts[1]) if ts else (None, False)
    negotiate(tcb, new_tuple(TcpOptions, (peer_mss, wscale, sack, (), ts, False, None, None,
                                          None)),
              cookie=True)
    tcb.ecn_ok = ts is not None and tcb.cfg.ecn != "off" and syncookies.decode_ts_ecn(ts[1])
    if tcb.cfg.ecn != "off" and accecn.ace(ack.flags) > 1:
        # RFC 9768 3.1.2 / 3.2.2.3: only an AccECN client's first ACK has ACE above 1
        # (our SYN,ACK's reflection is not known here: taken as Not-ECT, as it went).
        tcb.ecn_ok = True
        tcb.accecn = AccEcn()
    if tcb.ts_ok and ts is not None:
        tcb.ts_recent = ts[0]
        tcb.ts_recent_age = now
    # Our SYN,ACK went out statelessly, with the window of every SYN,ACK of ours.
    tcb.snd_max = seq_add(tcb.iss, 1)
    tcb.rcv_adv = seq_add(tcb.rcv_nxt, syn_window(tcb.cfg, tcb.wscale_ok))
    tcb.last_ack_sent = tcb.rcv_nxt
    tcb.fire(Trigger.RCV_SYN)  # LISTEN -> SYN-RECEIVED, as if the SYN had been queued


def after_handshake(tcb: ControlBlock) -> None:
    """Consequences of a lost SYN or SYN,ACK once the connection is established.

    RFC 6298 5.7: without an RTT sample the RTO restarts at 3 s; RFC 5681 3.1 and
    RFC 6928 2: the initial window is one segment.
    """
    if tcb.syn_retransmitted:
        if tcb.rtt.srtt is None:
            tcb.rtt.reinitialize(max(3.0, tcb.cfg.rto_min))
        tcb.cc.cwnd = tcb.snd_mss


__all__ = ["after_handshake", "cookie_syn_ack", "cookie_syn_ack_options", "negotiate",
           "record_syn_timestamp", "send_syn", "start_active", "start_from_cookie",
           "start_passive", "syn_segment", "syn_window"]
