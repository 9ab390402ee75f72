"""The observer the daemon attaches to its stack, and what it knows per connection.

:class:`Observatory` implements :class:`tcpstack.stack.Observer`. It has two modes:

* **light** (``packets=False``): only connections opening and closing and the
  packets sent for no connection (RSTs, SYN cookies) are seen. That costs a few
  microseconds per connection and nothing per packet; it is enough for the
  connection table's ages and for logging refusals and resets.
* **full** (``packets=True``): every TCP segment in and out. Then ladders
  (:mod:`tcpstack.observe.ladder`), histories (:mod:`tcpstack.observe.history`),
  retransmission counts per connection, exact byte counts beyond 4 GiB and the
  handshake/RTT observations for metrics are kept, each only if switched on.

Subscribers are plain callables in the ``on_*`` lists. Nothing here does I/O or
reads a clock; ``epoch`` turns the stack's clock into wall-clock time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from tcpstack.observe import history as hist
from tcpstack.observe.ladder import OPENING_STATES, Ladder, LadderBook
from tcpstack.observe.reasons import TERMINATION, UNINTERESTING
from tcpstack.observe.tls import HANDSHAKE as TLS_HANDSHAKE
from tcpstack.observe.tls import MAX_BYTES as TLS_MAX_BYTES
from tcpstack.observe.tls import TlsWatch
from tcpstack.stack import Key, Stack
from tcpstack.tcp.seq import MASK, seq_gt, seq_lt
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire import virtio
from tcpstack.wire.errors import Malformed
from tcpstack.wire.ipv4 import PROTO_TCP, parse_ipv4
from tcpstack.wire.ipv6 import HEADER_LEN as IPV6_HEADER_LEN
from tcpstack.wire.ipv6 import parse_ipv6
from tcpstack.wire.tcp import ACK, RST, SYN, OutPacket, OutSegment, TcpSegment, parse_tcp

log = logging.getLogger("tcpstack.observe")

PEER_FIN_SEEN = frozenset({State.CLOSE_WAIT, State.LAST_ACK, State.CLOSING, State.TIME_WAIT})


class ConnInfo:
    """What the observatory adds to a connection's own variables."""

    __slots__ = ("acked_wraps", "created", "established", "high", "history", "id", "key",
                 "last_rcv_nxt", "last_una", "rcvd_wraps", "retrans", "retrans_bytes",
                 "syn_sent_at", "tls", "tls_over")

    def __init__(self, ident: int, key: Key, now: float) -> None:
        self.id = ident
        self.key = key
        self.created = now
        self.established: float | None = None
        self.syn_sent_at: float | None = None
        self.retrans = 0
        self.retrans_bytes = 0
        self.high: int | None = None  # highest sequence number sent (for retransmissions)
        self.last_una: int | None = None
        self.last_rcv_nxt: int | None = None
        self.acked_wraps = 0
        self.rcvd_wraps = 0
        self.history: hist.History | None = None
        # The TLS handshake being followed (with ladders on), and whether that is over
        # (done, not TLS, or joined too late to see the first bytes).
        self.tls: TlsWatch | None = None
        self.tls_over = False


def bytes_acked(tcb: Tcb, info: ConnInfo | None = None) -> int:
    """Data bytes of ours the peer acknowledged (SYN and FIN not counted)."""
    state = tcb.state
    if state is State.SYN_SENT or state is State.SYN_RECEIVED or tcb.snd_una == tcb.iss:
        return 0
    n = (tcb.snd_una - tcb.iss - 1) & MASK
    fin = tcb.fin_seq()
    if fin is not None and seq_gt(tcb.snd_una, fin):
        n -= 1
    return max(0, n) + (info.acked_wraps << 32 if info is not None else 0)


def bytes_received(tcb: Tcb, info: ConnInfo | None = None) -> int:
    """Data bytes received in order from the peer (SYN and FIN not counted)."""
    state = tcb.state
    if state is State.SYN_SENT or state is State.LISTEN or state is State.CLOSED:
        return 0
    n = (tcb.rcv_nxt - tcb.irs - 1) & MASK
    if state in PEER_FIN_SEEN:
        n -= 1
    return max(0, n) + (info.rcvd_wraps << 32 if info is not None else 0)


def tcb_key(tcb: Tcb) -> Key:
    return (tcb.local_ip, tcb.local_port, tcb.remote_ip, tcb.remote_port)


class Observatory:
    """Watches a :class:`~tcpstack.stack.Stack`; see the module docstring.

    Attach it with :meth:`attach` (or the stack's ``attach_observer``). Turn parts
    on with :meth:`enable_ladders` and :meth:`enable_history`.
    """

    def __init__(self, stack: Stack, *, epoch: float = 0.0, packets: bool = False,
                 clock: Callable[[], float] | None = None) -> None:
        self.stack = stack
        self.counters = stack.counters
        self.epoch = epoch
        #: A finer clock than the stack's for the times recorded (uvloop's clock
        #: ticks in milliseconds); None: the stack's ``now``. ``epoch`` converts it.
        self.clock = clock
        self.packets = packets
        self.now = 0.0
        self.conns: dict[Tcb, ConnInfo] = {}
        self._next_id = 0
        self.ladders: LadderBook | None = None
        self.history: hist.HistoryBook | None = None
        #: Called with every finished ladder phase (a JSON-ready dict).
        self.on_ladder: list[Callable[[Ladder], None]] = []
        #: Called when a connection is synchronized: (info, tcb, now).
        self.on_established: list[Callable[[ConnInfo, Tcb, float], None]] = []
        #: Called when a connection leaves the table: (info, tcb, error, now);
        #: ``error`` as in :class:`tcpstack.tcp.events.Terminated`.
        self.on_ended: list[Callable[[ConnInfo, Tcb, str | None, float], None]] = []
        #: Called for each RST the stack sends for no connection: (key, now), the
        #: key being (local ip, local port, remote ip, remote port).
        self.on_stray_rst: list[Callable[[Key, float], None]] = []

    # ------------------------------------------------------------- switches

    def attach(self) -> None:
        """(Re)attach to the stack in the current mode."""
        self.stack.attach_observer(self, packets=self.packets)

    def set_packets(self, on: bool) -> None:
        """Switch between light and full mode."""
        self.packets = on
        self.attach()

    def enable_ladders(self) -> LadderBook:
        """Start building ladders (needs full mode to see anything)."""
        if self.ladders is None:
            self.ladders = LadderBook(self._emit_ladder, self.epoch, self._new_id)
        return self.ladders

    def disable_ladders(self) -> None:
        self.ladders = None

    def enable_history(self) -> hist.HistoryBook:
        """Start keeping per-connection histories (full mode)."""
        if self.history is None:
            self.history = hist.HistoryBook()
        return self.history

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _emit_ladder(self, doc: Ladder) -> None:
        for callback in self.on_ladder:
            try:
                callback(doc)
            except Exception:
                log.exception("ladder subscriber failed")

    def info(self, tcb: Tcb) -> ConnInfo | None:
        return self.conns.get(tcb)

    # --------------------------------------------------- the Observer seam

    def time(self) -> float:
        """The observatory's current time (its clock, or the last ``now`` seen)."""
        return self.clock() if self.clock is not None else self.now

    def on_open(self, key: Key, tcb: Tcb) -> None:
        if self.clock is not None:
            self.now = self.clock()
        info = ConnInfo(self._new_id(), key, self.now)
        self.conns[tcb] = info
        if self.history is not None and self.packets:
            info.history = self.history.start(
                info.id, self.now, tcb.iss,
                None if tcb.state is State.SYN_SENT else tcb.irs)

    def on_close(self, key: Key, tcb: Tcb) -> None:
        if self.clock is not None:
            self.now = self.clock()
        info = self.conns.pop(tcb, None)
        error = _termination(tcb)
        watch = info.tls if info is not None else None
        if watch is not None and info is not None:
            watch.close(self.now, "the connection ended during the TLS handshake: " +
                        TERMINATION.get(error, str(error)))
            self._tls_result(info, tcb, watch)
        if self.ladders is not None:
            self.ladders.closed(key, tcb, self.now)
        if info is None:
            return
        if info.history is not None and self.history is not None:
            self.history.finish(info.id)
        for callback in self.on_ended:
            callback(info, tcb, error, self.now)

    def on_control(self, packets: list[OutPacket], now: float) -> None:
        ladders = self.ladders
        if ladders is None and not self.on_stray_rst:
            if self.clock is None:
                self.now = now
            return  # nothing to see: a SYN flood's cookie SYN,ACKs cost nothing here
        if self.clock is not None:
            now = self.clock()
        self.now = now
        vnet = self.stack.config.vnet_hdr
        for pkt in packets:
            if ladders is None and not _tcp_flags(pkt, vnet) & RST:
                continue  # only RSTs matter without ladders: not parsed
            parsed = _parse_out(pkt, vnet)
            if parsed is None:
                continue
            src, dst, seg = parsed
            key = (src, seg.src_port, dst, seg.dst_port)
            if seg.flags & RST:
                for callback in self.on_stray_rst:
                    callback(key, now)
            if ladders is not None:
                ladders.control_out(key, seg.flags, seg.seq, seg.ack, seg.window, seg.options,
                                    now)
        if ladders is not None:
            ladders.flush_refusals()

    def before_segment(self, key: Key, seg: TcpSegment, now: float) -> object:
        if self.clock is not None:
            now = self.clock()
        self.now = now
        ladders = self.ladders
        if ladders is not None and ladders.wants(key, seg.flags, key in self.stack.tcbs):
            return dict(self.counters)
        return None

    def after_segment(self, key: Key, seg: TcpSegment, token: object, now: float) -> None:
        now = self.now  # the time taken before it
        tcb = self.stack.tcbs.get(key)
        info = self.conns.get(tcb) if tcb is not None else None
        if info is not None and tcb is not None:
            self._track_in(info, tcb, seg, now)
            if self.ladders is not None and not info.tls_over and seg.payload:
                start = (seg.seq + (1 if seg.flags & SYN else 0) - tcb.irs - 1) & MASK
                self._tls_feed(info, tcb, "in", start, seg.payload, now)
        if token is not None and self.ladders is not None:
            assert isinstance(token, dict)
            counters = self.counters
            reasons = [k for k, v in counters.items()
                       if v != token.get(k, 0) and k not in UNINTERESTING]
            self.ladders.segment_in(key, seg.flags, seg.seq, seg.ack, seg.window,
                                    len(seg.payload), seg.options, tcb, reasons, now,
                                    info.id if info is not None else None)

    def on_send(self, tcb: Tcb, segments: list[OutSegment], now: float) -> None:
        if self.clock is not None:
            now = self.clock()
        self.now = now
        info = self.conns.get(tcb)
        if info is not None:
            self._track_out(info, tcb, segments, now)
            if self.ladders is not None and not info.tls_over:
                for seg in segments:
                    if seg.payload and not info.tls_over:
                        start = (seg.seq - tcb.iss - 1) & MASK
                        self._tls_feed(info, tcb, "out", start, seg.payload, now)
        if self.ladders is not None:
            self.ladders.segments_out(tcb_key(tcb), tcb, segments, now,
                                      info.id if info is not None else None)

    # ------------------------------------------------------------- tracking

    def _track_in(self, info: ConnInfo, tcb: Tcb, seg: TcpSegment, now: float) -> None:
        una = tcb.snd_una
        last = info.last_una
        if last is not None and una < last and seq_gt(una, last):
            info.acked_wraps += 1
        info.last_una = una
        rcv = tcb.rcv_nxt
        last = info.last_rcv_nxt
        if last is not None and rcv < last and seq_gt(rcv, last):
            info.rcvd_wraps += 1
        info.last_rcv_nxt = rcv
        state = tcb.state
        if info.established is None and state not in OPENING_STATES \
                and state is not State.CLOSED:
            info.established = now
            if info.syn_sent_at is not None:
                info.created = min(info.created, info.syn_sent_at)
            for callback in self.on_established:
                callback(info, tcb, now)
        h = info.history
        if h is not None:
            if h.remote_isn is None and state is not State.SYN_SENT:
                h.remote_isn = tcb.irs
            rel = (seg.seq - h.remote_isn) & MASK if h.remote_isn is not None else seg.seq
            win = seg.window if seg.flags & SYN else seg.window << tcb.snd_wscale
            sack = tuple(((a - h.local_isn) & MASK, (b - h.local_isn) & MASK)
                         for a, b in seg.options.sack_blocks)
            ack = (seg.ack - h.local_isn) & MASK if seg.flags & ACK else 0
            h.segments.append((now, "in", rel, (rel + seg.seg_len) & MASK, ack, win,
                               seg.flags, sack, False))
            if seg.flags & ACK:
                cc = tcb.cc
                rtt = tcb.rtt
                h.sample(now, cc.cwnd, cc.ssthresh, rtt.srtt, rtt.rttvar, rtt.rto,
                         (tcb.snd_max - tcb.snd_una) & MASK)

    def _track_out(self, info: ConnInfo, tcb: Tcb, segments: list[OutSegment],
                   now: float) -> None:
        high = info.high
        h = info.history
        for seg in segments:
            n = seg.seg_len
            if n == 0 and h is None:
                continue
            flags = seg.flags
            if flags & RST:
                n = 0
            retrans = False
            if n:
                end = (seg.seq + n) & MASK
                if high is not None and seq_lt(seg.seq, high):
                    retrans = True
                    info.retrans += 1
                    info.retrans_bytes += len(seg.payload)
                if high is None or seq_gt(end, high):
                    high = end
                if flags & SYN and info.syn_sent_at is None:
                    info.syn_sent_at = now
            if h is not None:
                rel = (seg.seq - h.local_isn) & MASK
                ack = (seg.ack - h.remote_isn) & MASK \
                    if h.remote_isn is not None and flags & ACK else 0
                win = seg.window if flags & SYN else seg.window << tcb.rcv_wscale
                h.segments.append((now, "out", rel, (rel + n) & MASK, ack, win, flags, (),
                                   retrans))
        info.high = high

    def _tls_feed(self, info: ConnInfo, tcb: Tcb, direction: str, offset: int,
                  payload: Any, now: float) -> None:
        """Stream bytes of a connection whose TLS handshake may be followed."""
        watch = info.tls
        if watch is None:
            # Joined after the first bytes, or not a TLS record first: nothing to follow.
            if offset != 0 or payload[0] != TLS_HANDSHAKE:
                info.tls_over = True
                return
            watch = info.tls = TlsWatch()
        if offset < TLS_MAX_BYTES:
            watch.feed(direction, offset, bytes(payload[:TLS_MAX_BYTES - offset]), now)
        if not watch.active:
            self._tls_result(info, tcb, watch)

    def _tls_result(self, info: ConnInfo, tcb: Tcb, watch: TlsWatch) -> None:
        info.tls = None
        info.tls_over = True
        result = watch.result
        if result is not None and self.ladders is not None and watch.start is not None:
            self.ladders.tls(info.key, info.id, "passive" if tcb.listener is not None
                             else "active", watch.start, result)

    # ------------------------------------------------------------ questions

    def connection_by_id(self, ident: int) -> tuple[Tcb, ConnInfo] | None:
        for tcb, info in self.conns.items():
            if info.id == ident:
                return tcb, info
        return None


def _termination(tcb: Tcb) -> str | None:
    for e in reversed(tcb.events):
        if type(e).__name__ == "Terminated":
            error: str | None = getattr(e, "error", None)
            return error
    return None


def _tcp_flags(pkt: OutPacket, vnet: bool) -> int:
    """The TCP flags of a packet the stack built, read in place (0 if it is no TCP
    packet): IPv4 with its header length, IPv6 without extension headers (the
    stack sends none)."""
    data: bytearray = pkt[0] if isinstance(pkt, tuple) else pkt
    base = virtio.HEADER_LEN if vnet else 0
    n = len(data)
    if n <= base:
        return 0
    version = data[base] >> 4
    if version == 4:
        at = base + (data[base] & 0x0F) * 4 + 13
        ok = n > base + 9 and data[base + 9] == PROTO_TCP
    elif version == 6:
        at = base + 40 + 13
        ok = n > base + 6 and data[base + 6] == PROTO_TCP
    else:
        return 0
    return data[at] if ok and at < n else 0


def _parse_out(pkt: OutPacket, vnet: bool) -> tuple[int, int, TcpSegment] | None:
    """(src, dst, segment) of a TCP packet the stack built, else None."""
    data: Any = pkt[0] if isinstance(pkt, tuple) else pkt
    view = memoryview(data)
    if vnet:
        view = view[virtio.HEADER_LEN:]
    try:
        if len(view) and view[0] >> 4 == 6:
            # The stack's own IPv6 packets carry no extension headers.
            ip6 = parse_ipv6(view)
            if ip6.next_header != PROTO_TCP:
                return None
            return ip6.src, ip6.dst, parse_tcp(ip6.packet[IPV6_HEADER_LEN:], ip6.src, ip6.dst,
                                               verify_checksum=False)
        ip = parse_ipv4(view)
        if ip.proto != PROTO_TCP:
            return None
        return ip.src, ip.dst, parse_tcp(ip.payload, ip.src, ip.dst, verify_checksum=False)
    except Malformed:
        return None


__all__ = ["ConnInfo", "Observatory", "bytes_acked", "bytes_received", "tcb_key"]
