"""The transmission control block: one TCP connection's state machine (RFC 9293).

A :class:`Tcb` is driven by four kinds of input, each taking the current time:

* :meth:`Tcb.receive` -- a parsed segment arrived for this connection;
* :meth:`Tcb.handle_timer` -- the deadline from :meth:`Tcb.next_deadline` passed;
* application calls -- :meth:`send`, :meth:`recv`, :meth:`shutdown_write`,
  :meth:`close`, :meth:`abort`;
* :meth:`Tcb.segments_to_send` -- the owner collects what to transmit.

Processing a segment only updates state and sets flags; segments are generated
when the owner calls :meth:`segments_to_send`, normally once per batch of received
packets, so a burst of arrivals is answered with one ACK (or with data carrying it).
Events for the application accumulate in :attr:`events`.

The code follows the "SEGMENT ARRIVES" procedure of RFC 9293 3.10.7, in order;
comments cite the step. On top of it: out-of-order reassembly with SACK and
D-SACK (RFC 2018, RFC 2883), timestamps with PAWS (RFC 7323), loss recovery
from a SACK scoreboard with RACK-TLP (RFC 6675, RFC 8985) or, for peers without
SACK, NewReno (RFC 6582), Eifel undo of spurious retransmissions (RFC 3522,
RFC 4015), delayed ACKs, Nagle's algorithm and keepalives (RFC 1122).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tcpstack.tcp import congestion
from tcpstack.tcp import events as ev
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.reassembly import ReassemblyQueue
from tcpstack.tcp.rtt import RttEstimator
from tcpstack.tcp.scoreboard import Scoreboard, Sent
from tcpstack.tcp.seq import (
    MASK,
    seq_add,
    seq_diff,
    seq_ge,
    seq_gt,
    seq_in_window,
    seq_le,
    seq_lt,
)
from tcpstack.tcp.state import (
    CAN_SEND,
    CLOSE_TRANSITIONS,
    FIN_ACKED_TRANSITIONS,
    FIN_RECEIVED_TRANSITIONS,
    RECEIVES_TEXT,
    State,
)
from tcpstack.wire.tcp import ACK, FIN, NO_OPTIONS, PSH, RST, SYN, TcpOptions, TcpSegment

DEFAULT_PEER_MSS = 536  # RFC 9293 3.7.1: assumed when the SYN carries no MSS option
TS_OPTION_LEN = 12  # NOP, NOP, kind 8, length 10 (RFC 7323 3)
PAWS_IDLE_LIMIT = 24 * 24 * 3600.0  # RFC 7323 5.5: TS.Recent is invalid after 24 days idle
WORST_CASE_DELAYED_ACK = 0.2  # RFC 8985 7.2 WCDelAckT
MIN_PTO = 0.04  # floor of the tail-loss-probe timeout (see _arm_tlp)
AUTOCORK_FLIGHT_SEGMENTS = 4  # see _send_data
DUPTHRESH = 3  # RFC 5681 3.2


# Shared, always-empty stand-ins for connections in TIME-WAIT (see _enter_time_wait).
_IDLE_SCOREBOARD = Scoreboard()
_IDLE_REASSEMBLY = ReassemblyQueue()


class Tcb:
    """One connection. Create with :meth:`passive_open` or :meth:`active_open`."""

    __slots__ = (
        "_ack_pending",
        "_closed_by_app",
        "_data_event_pending",
        "_delack",
        "_dirty",
        "_dsack",
        "_dupack_flight",
        "_dupacks",
        "_fin_queued",
        "_heap_deadline",
        "_ka_probes",
        "_last_ack_sent",
        "_last_rcv",
        "_on_dirty",
        "_ooo",
        "_out",
        "_persist_backoff",
        "_probes",
        "_rcv_mss",
        "_rcv_unacked",
        "_recovery",
        "_retries",
        "_rto_high",
        "_rtt_seq",
        "_rtt_time",
        "_rtx_now",
        "_rtx_tsval",
        "_sb",
        "_sndbuf",
        "_syn_retransmitted",
        "_tlp_dsack",
        "_tlp_high",
        "_tlp_rtx",
        "_ts_recent",
        "_ts_recent_age",
        "_write_blocked",
        "cc",
        "cfg",
        "delack_deadline",
        "events",
        "fin_wait_deadline",
        "gso_size",
        "half_open",
        "irs",
        "iss",
        "keepalive",
        "keepalive_count",
        "keepalive_deadline",
        "keepalive_idle",
        "keepalive_interval",
        "listener",
        "local_ip",
        "local_port",
        "max_snd_wnd",
        "nodelay",
        "persist_deadline",
        "rack_deadline",
        "rcv_adv",
        "rcv_buf",
        "rcv_nxt",
        "rcv_wscale",
        "remote_ip",
        "remote_port",
        "rto_deadline",
        "rtt",
        "sack_ok",
        "seg_mss",
        "snd_buf_seq",
        "snd_max",
        "snd_mss",
        "snd_una",
        "snd_wl1",
        "snd_wl2",
        "snd_wnd",
        "snd_wscale",
        "state",
        "time_wait_deadline",
        "tlp_deadline",
        "ts_offset",
        "ts_ok",
        "user",
        "wscale_ok",
    )

    def __init__(
        self,
        cfg: TcpConfig,
        local: tuple[int, int],
        remote: tuple[int, int],
        iss: int,
    ) -> None:
        self.cfg = cfg
        self.local_ip, self.local_port = local
        self.remote_ip, self.remote_port = remote
        self.state = State.CLOSED
        self.iss = iss
        self.irs = 0
        # Send sequence space (RFC 9293 3.3.1). Retransmissions are driven by the
        # scoreboard, never by rewinding, so SND.NXT is always snd_max (see snd_nxt).
        self.snd_una = iss
        self.snd_max = iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_snd_wnd = 0
        self.snd_wscale = 0
        self.wscale_ok = False
        self.snd_mss = DEFAULT_PEER_MSS
        # Receive sequence space. rcv_adv is the right edge last advertised,
        # which must never move left (RFC 9293 3.8.6.2.2).
        self.rcv_nxt = 0
        self.rcv_adv = 0
        self.rcv_wscale = 0
        self.rcv_buf = bytearray()
        # Bytes not yet acknowledged, sent or not; _sndbuf[0] has sequence snd_buf_seq.
        self._sndbuf = bytearray()
        self.snd_buf_seq = seq_add(iss, 1)
        self._fin_queued = False
        self._closed_by_app = False
        self._write_blocked = False
        self._ack_pending = False
        self._data_event_pending = False
        self._out: list[TcpSegment] = []
        self.events: list[ev.Event] = []
        self.rtt = RttEstimator(cfg.rto_initial, cfg.rto_min, cfg.rto_max)
        self._rtt_seq: int | None = None
        self._rtt_time = 0.0
        self._retries = 0
        self._syn_retransmitted = False
        self._probes = 0
        self._persist_backoff = 0
        self.cc: congestion.CongestionControl = congestion.create(
            cfg.congestion_control, DEFAULT_PEER_MSS, cfg.initial_window
        )
        # Options agreed in the handshake, and the payload per segment they leave.
        self.sack_ok = False
        self.ts_ok = False
        self.seg_mss = DEFAULT_PEER_MSS
        self.gso_size = DEFAULT_PEER_MSS
        # RFC 7323: our clock offset (unpredictable per connection, RFC 7323 7.1),
        # the peer's TSval to echo and when it was recorded.
        self.ts_offset = (iss * 0x9E3779B1) & MASK
        self._ts_recent = 0
        self._ts_recent_age = -1.0
        self._last_ack_sent = 0
        # Receive side: out-of-order runs, a pending D-SACK, delayed-ACK state.
        self._ooo = ReassemblyQueue()
        self._dsack: tuple[int, int] | None = None
        self._delack = False
        self._rcv_unacked = 0
        # Largest segment payload seen from the peer (Linux's rcv_mss): what a
        # "full-sized segment" is for the delayed-ACK rule.
        self._rcv_mss = min(cfg.mss, DEFAULT_PEER_MSS)
        # Send side: the scoreboard, recovery point, dup-ACK count (NewReno),
        # the TSval of the first retransmission of an episode (Eifel), TLP state.
        self._sb = Scoreboard()
        self._recovery: int | None = None
        self._rto_high: int | None = None  # SND.MAX at the last RTO, until acknowledged
        self._dupacks = 0
        self._dupack_flight = 0  # flight when the first duplicate ACK arrived
        self._rtx_now = False  # one retransmission may ignore pipe (recovery entry)
        self._rtx_tsval: int | None = None
        self._tlp_high: int | None = None
        self._tlp_rtx = False
        self._tlp_dsack = 0
        self.nodelay = not cfg.nagle
        self.keepalive = cfg.keepalive
        self.keepalive_idle = cfg.keepalive_idle
        self.keepalive_interval = cfg.keepalive_interval
        self.keepalive_count = cfg.keepalive_count
        self._ka_probes = 0
        self._last_rcv = 0.0
        self.rto_deadline: float | None = None
        self.persist_deadline: float | None = None
        self.time_wait_deadline: float | None = None
        self.fin_wait_deadline: float | None = None
        self.delack_deadline: float | None = None
        self.rack_deadline: float | None = None
        self.tlp_deadline: float | None = None
        self.keepalive_deadline: float | None = None
        # Owner's bookkeeping: the stack's dirty-list hook and timer-heap entry,
        # the listener that spawned a passive connection, the application handle.
        self._dirty = False
        self._on_dirty: Callable[[Tcb], None] | None = None
        self._heap_deadline: float | None = None
        self.listener: Any = None
        self.half_open = False
        self.user: Any = None

    # ------------------------------------------------------------------ opening

    @classmethod
    def passive_open(
        cls,
        cfg: TcpConfig,
        local: tuple[int, int],
        remote: tuple[int, int],
        syn: TcpSegment,
        iss: int,
        now: float,
    ) -> Tcb:
        """A listener received ``syn`` (RFC 9293 3.10.7.2): enter SYN-RECEIVED, send SYN,ACK."""
        tcb = cls(cfg, local, remote, iss)
        tcb.irs = syn.seq
        tcb.rcv_nxt = seq_add(syn.seq, 1)
        tcb._last_rcv = now
        tcb._negotiate(syn.options, offered_wscale=syn.options.wscale is not None)
        if tcb.ts_ok and syn.options.timestamps is not None:
            tcb._ts_recent = syn.options.timestamps[0]
            tcb._ts_recent_age = now
        # The window in a SYN is never scaled (RFC 7323 2.2).
        tcb.snd_wnd = syn.window
        tcb.max_snd_wnd = syn.window
        tcb.snd_wl1 = syn.seq
        tcb.snd_wl2 = iss
        tcb.state = State.SYN_RECEIVED
        tcb._send_syn(now, ack=True)
        return tcb

    @classmethod
    def active_open(
        cls, cfg: TcpConfig, local: tuple[int, int], remote: tuple[int, int], iss: int, now: float
    ) -> Tcb:
        """An active OPEN (RFC 9293 3.10.1): send SYN, enter SYN-SENT."""
        tcb = cls(cfg, local, remote, iss)
        tcb.state = State.SYN_SENT
        tcb._send_syn(now, ack=False)
        return tcb

    def _negotiate(self, opts: TcpOptions, offered_wscale: bool) -> None:
        """Apply the peer's SYN options: MSS (RFC 9293 3.7.1), window scale and timestamps
        (RFC 7323 2.2, 3.2), SACK-permitted (RFC 2018 2)."""
        peer_mss = opts.mss if opts.mss else DEFAULT_PEER_MSS
        self.snd_mss = max(64, min(peer_mss, self.cfg.mss))
        self.sack_ok = self.cfg.sack and opts.sack_permitted
        self.ts_ok = self.cfg.timestamps and opts.timestamps is not None
        # RFC 9293 3.7.1 / RFC 6691: the MSS excludes options, so the payload of a
        # segment shrinks by the options it carries.
        self.seg_mss = self.snd_mss - (TS_OPTION_LEN if self.ts_ok else 0)
        self.gso_size = self.seg_mss
        self.cc.set_mss(self.seg_mss)
        self.cc.cwnd = congestion.initial_window(self.seg_mss, self.cfg.initial_window)
        self.wscale_ok = self.cfg.window_scaling and offered_wscale and opts.wscale is not None
        if self.wscale_ok:
            self.snd_wscale = opts.wscale or 0
            self.rcv_wscale = self.cfg.rcv_wscale
        else:
            self.snd_wscale = 0
            self.rcv_wscale = 0

    def _syn_segment(self, now: float, ack: bool) -> TcpSegment:
        """Our SYN (active open) or SYN,ACK; its window is never scaled (RFC 7323 2.2)."""
        if ack:
            opts = self._syn_options(now)
        else:
            opts = TcpOptions(mss=self.cfg.mss, sack_permitted=self.cfg.sack)
            if self.cfg.window_scaling:
                opts.wscale = self.cfg.rcv_wscale
            if self.cfg.timestamps:
                opts.timestamps = (self._tsval(now), 0)
        return TcpSegment(self.local_port, self.remote_port, self.iss,
                          self.rcv_nxt if ack else 0, SYN | ACK if ack else SYN,
                          min(self.cfg.rcv_buf, 0xFFFF), opts)

    def _send_syn(self, now: float, ack: bool) -> None:
        """Send (or resend on a timeout) our SYN or SYN,ACK and run its timer."""
        seg = self._syn_segment(now, ack)
        self._out.append(seg)
        self.rcv_adv = seq_add(self.rcv_nxt, seg.window)
        if ack:
            self._last_ack_sent = self.rcv_nxt  # RFC 7323 4.3: Last.ACK.sent
        self.snd_max = seq_add(self.iss, 1)
        if self._retries == 0:
            self._rtt_seq = self.snd_max
            self._rtt_time = now
        self.rto_deadline = now + self.rtt.rto
        self._mark()

    @property
    def snd_nxt(self) -> int:
        """SND.NXT (RFC 9293 3.3.1): the next new sequence number to send."""
        return self.snd_max

    # ---------------------------------------------------------------- app calls

    @property
    def send_buffered(self) -> int:
        """Bytes queued for sending and not yet acknowledged."""
        return len(self._sndbuf)

    @property
    def can_send(self) -> bool:
        return self.state in CAN_SEND and not self._fin_queued

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` (RFC 9293 3.10.2 SEND). Raises ConnectionError if not allowed."""
        if not self.can_send:
            raise ConnectionError(f"cannot send in state {self.state} after shutdown")
        if not data:
            return
        try:
            self._sndbuf += data
        except BufferError:
            # A segment still holds a view of the buffer (see _send_data): grow a copy.
            self._sndbuf = self._sndbuf + data
        if len(self._sndbuf) > self.cfg.snd_buf:
            self._write_blocked = True
        self._mark()

    def set_nodelay(self, on: bool) -> None:
        """Disable (``on``) or re-enable Nagle's algorithm for this connection."""
        self.nodelay = on
        self._mark()

    def set_keepalive(self, on: bool, idle: float | None = None,
                      interval: float | None = None, count: int | None = None) -> None:
        """Keepalive probes after ``idle`` seconds of silence (RFC 1122 4.2.3.6)."""
        if idle is not None:
            if idle <= 0:
                raise ValueError("keepalive idle time must be positive")
            self.keepalive_idle = idle
        if interval is not None:
            if interval <= 0:
                raise ValueError("keepalive interval must be positive")
            self.keepalive_interval = interval
        if count is not None:
            if count < 1:
                raise ValueError("keepalive count must be at least 1")
            self.keepalive_count = count
        self.keepalive = on
        self.keepalive_deadline = None
        self._mark()

    @property
    def recv_buffered(self) -> int:
        return len(self.rcv_buf)

    def recv(self, n: int = -1) -> bytes:
        """Take up to ``n`` bytes (all if negative) from the receive buffer (3.10.3 RECEIVE)."""
        buf = self.rcv_buf
        if n < 0 or n >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:n])
            del buf[:n]
        if data:
            self._window_update_check()
        return data

    def _window_update_check(self) -> None:
        """Send a window update when reading opened the window substantially.

        RFC 9293 3.8.6.2.2 (receiver SWS avoidance) and RFC 1122 4.2.3.3: announce
        a larger window once it grows by min(half the buffer, 2 * MSS) or more.
        """
        if self.state not in RECEIVES_TEXT:
            return
        advertised = seq_diff(self.rcv_adv, self.rcv_nxt)
        free = self.cfg.rcv_buf - len(self.rcv_buf) - self._ooo.nbytes
        if free - advertised >= min(self.cfg.rcv_buf // 2, 2 * self.cfg.mss):
            self._ack_pending = True
            self._mark()

    def shutdown_write(self) -> None:
        """Half-close: send FIN after the queued data (RFC 9293 3.10.4 CLOSE)."""
        if self._fin_queued:
            return
        self._fin_queued = True
        if self.state is State.SYN_RECEIVED or self.state is State.SYN_SENT:
            # RFC 9293 3.10.4: queue the FIN until ESTABLISHED is reached.
            self._mark()
            return
        nxt = CLOSE_TRANSITIONS.get(self.state)
        if nxt is None:
            return
        self._fin_queued = True
        self.state = nxt
        self._mark()

    def close(self) -> None:
        """Full close: no more sending or receiving by the application.

        Unread received data makes this an abort (RST), as RFC 2525 2.17 asks and
        Linux does, so the peer learns its data was not consumed.
        """
        if self.state is State.CLOSED:
            return
        self._closed_by_app = True
        if self.state is State.SYN_SENT:
            # RFC 9293 3.10.4: CLOSE in SYN-SENT deletes the TCB; nothing was exchanged.
            self._terminate(None)
            return
        if self.rcv_buf and self.state not in (State.TIME_WAIT, State.CLOSED):
            self.rcv_buf.clear()
            self.abort()
            return
        self.shutdown_write()
        self._mark()  # segments_to_send arms the FIN-WAIT-2 timeout if needed

    def abort(self) -> None:
        """ABORT (RFC 9293 3.10.5): send RST if synchronized, and drop everything."""
        if self.state is State.CLOSED:
            return
        if self.state in (State.SYN_RECEIVED, State.ESTABLISHED, State.FIN_WAIT_1,
                          State.FIN_WAIT_2, State.CLOSE_WAIT):
            self._out.append(
                TcpSegment(self.local_port, self.remote_port, self.snd_max, self.rcv_nxt,
                           RST | ACK, 0)
            )
        self._terminate("aborted")

    # --------------------------------------------------------------- receiving

    def receive(self, seg: TcpSegment, now: float) -> None:
        """Process an arriving segment (RFC 9293 3.10.7.3 and 3.10.7.4)."""
        state = self.state
        self._last_rcv = now
        self._ka_probes = 0
        if state is State.SYN_SENT:
            self._receive_syn_sent(seg, now)
        elif state is State.CLOSED or state is State.LISTEN:
            return
        else:
            self._receive_synchronized(seg, now)

    def _receive_syn_sent(self, seg: TcpSegment, now: float) -> None:
        """RFC 9293 3.10.7.3: SEGMENT ARRIVES in SYN-SENT."""
        flags = seg.flags
        ack_ok = False
        if flags & ACK:
            # First: an ACK outside (ISS, SND.NXT] gets a RST unless it is one.
            if seq_le(seg.ack, self.iss) or seq_gt(seg.ack, self.snd_max):
                if not flags & RST:
                    self._send_rst(seg.ack)
                return
            ack_ok = True
        if flags & RST:
            # Second: a RST is acceptable only with an acceptable ACK (RFC 5961 3.2).
            if ack_ok:
                self._terminate("refused")
            return
        if not flags & SYN:
            return
        # Fourth: the SYN.
        self.irs = seg.seq
        self.rcv_nxt = seq_add(seg.seq, 1)
        # Our SYN advertised an unscaled window; only now is its base known.
        self.rcv_adv = seq_add(self.rcv_nxt, min(self.cfg.rcv_buf, 0xFFFF))
        self._negotiate(seg.options, offered_wscale=seg.options.wscale is not None)
        if self.ts_ok and seg.options.timestamps is not None:
            self._ts_recent = seg.options.timestamps[0]
            self._ts_recent_age = now
        if ack_ok:
            self._ack_advance(seg.ack, now, seg)
            self.snd_wnd = seg.window  # SYN windows are unscaled
            self.max_snd_wnd = self.snd_wnd
            self.snd_wl1 = seg.seq
            self.snd_wl2 = seg.ack
            self.state = State.FIN_WAIT_1 if self._fin_queued else State.ESTABLISHED
            self._after_handshake()
            self._ack_pending = True
            self.events.append(ev.ESTABLISHED)
            self._mark()
            if seg.payload or seg.flags & FIN:
                self._process_text(seg, now, self.rcv_nxt)
        else:
            # Simultaneous open: SYN-RECEIVED, answer with SYN,ACK on our ISS.
            self.state = State.SYN_RECEIVED
            self.snd_wnd = seg.window
            self.snd_wl1 = seg.seq
            self.snd_wl2 = self.iss
            self._retries = 0
            self._send_syn(now, ack=True)

    def _acceptable(self, seg: TcpSegment) -> bool:
        """The segment acceptability test of RFC 9293 3.10.7.4 (first)."""
        wnd = seq_diff(self.rcv_adv, self.rcv_nxt)
        if wnd < 0:
            wnd = 0
        seg_len = seg.seg_len
        if seg_len == 0:
            if wnd == 0:
                return seg.seq == self.rcv_nxt
            return seq_in_window(seg.seq, self.rcv_nxt, wnd)
        if wnd == 0:
            return False
        return seq_in_window(seg.seq, self.rcv_nxt, wnd) or seq_in_window(
            seq_add(seg.seq, seg_len - 1), self.rcv_nxt, wnd
        )

    def _receive_synchronized(self, seg: TcpSegment, now: float) -> None:
        """RFC 9293 3.10.7.4: SEGMENT ARRIVES in SYN-RECEIVED and the synchronized states."""
        flags = seg.flags
        if self.state is State.TIME_WAIT:
            self._receive_time_wait(seg, now)
            return
        if self.state is State.SYN_RECEIVED and flags & SYN and not flags & ACK \
                and seg.seq == self.irs:
            # A retransmitted SYN: our SYN,ACK was lost; send it again (the timer and
            # the RTT measurement carry on as they are).
            self._out.append(self._syn_segment(now, ack=True))
            self._mark()
            return
        # RFC 7323 5.3: PAWS -- a timestamp older than TS.Recent marks an old duplicate.
        ts = seg.options.timestamps
        if self.ts_ok and ts is not None and not flags & RST and self._ts_recent_age >= 0 \
                and seq_lt(ts[0], self._ts_recent) \
                and now - self._ts_recent_age < PAWS_IDLE_LIMIT:
            self._ack_pending = True
            self._mark()
            return
        # First: sequence number check.
        if not self._acceptable(seg):
            if flags & RST:
                return
            # RFC 9293 3.10.7.4: zero-window special case -- an ACK at RCV.NXT is
            # still processed even though its text cannot be accepted.
            if seg.seq == self.rcv_nxt and flags & ACK and not flags & SYN:
                self._process_ack(seg, now)
            n = len(seg.payload)
            if n and self.sack_ok and seq_le(seq_add(seg.seq, n), self.rcv_nxt):
                self._dsack = (seg.seq, seq_add(seg.seq, n))  # RFC 2883 4.1.1
            self._ack_pending = True
            self._mark()
            return
        # Second: RST (RFC 5961 3.2, adopted by RFC 9293): exact match resets,
        # anything else in the window draws a challenge ACK.
        if flags & RST:
            if seg.seq == self.rcv_nxt:
                self._terminate(None if self.state in (State.CLOSING, State.LAST_ACK)
                                else "reset")
            else:
                self._ack_pending = True
                self._mark()
            return
        # Fourth: a SYN in a synchronized state draws a challenge ACK (RFC 5961 4.2).
        if flags & SYN:
            self._ack_pending = True
            self._mark()
            return
        # RFC 7323 4.3: remember the TSval to echo, from a segment that covers the
        # last ACK we sent.
        if self.ts_ok and ts is not None and seq_le(seg.seq, self._last_ack_sent) \
                and (self._ts_recent_age < 0 or seq_ge(ts[0], self._ts_recent)):
            self._ts_recent = ts[0]
            self._ts_recent_age = now
        # Fifth: segments without ACK are dropped.
        if not flags & ACK:
            return
        if self.state is State.SYN_RECEIVED:
            if seq_gt(seg.ack, self.snd_una) and seq_le(seg.ack, self.snd_max):
                self.state = State.ESTABLISHED
                self._after_handshake()
                self.snd_wnd = seg.window << self.snd_wscale
                self.max_snd_wnd = self.snd_wnd
                self.snd_wl1 = seg.seq
                self.snd_wl2 = seg.ack
                self.events.append(ev.ESTABLISHED)
                self._mark()
                if self._fin_queued:
                    # CLOSE was called in SYN-RECEIVED: now the FIN can go.
                    self.state = State.FIN_WAIT_1
            else:
                self._send_rst(seg.ack)
                return
        if not self._process_ack(seg, now):
            return
        if self.state is State.CLOSED:
            return
        self._process_text(seg, now, seg.seq)

    def _after_handshake(self) -> None:
        """Consequences of a lost SYN or SYN,ACK once the connection is established.

        RFC 6298 5.7: without an RTT sample the RTO restarts at 3 s; RFC 5681 3.1 and
        RFC 6928 2: the initial window is one segment.
        """
        if self._syn_retransmitted:
            if self.rtt.srtt is None:
                self.rtt.reinitialize(max(3.0, self.cfg.rto_min))
            self.cc.cwnd = self.snd_mss

    def _receive_time_wait(self, seg: TcpSegment, now: float) -> None:
        """TIME-WAIT: re-ACK a retransmitted FIN and restart 2*MSL (RFC 9293 3.10.7.4).

        A RST is ignored here, following RFC 1337 (TIME-WAIT assassination hazards).
        A new SYN is handled by the stack before it reaches this TCB (RFC 6191).
        """
        if seg.flags & RST:
            return
        if seg.flags & FIN or seg.seg_len:
            self.time_wait_deadline = now + 2 * self.cfg.msl
        self._ack_pending = True
        self._mark()

    def _process_ack(self, seg: TcpSegment, now: float) -> bool:
        """The ACK field (RFC 9293 3.10.7.4, fifth). Returns False if the segment is dropped."""
        ack = seg.ack
        if seq_gt(ack, self.snd_max):
            # Acknowledges something not yet sent: ACK and drop.
            self._ack_pending = True
            self._mark()
            return False
        if seq_lt(ack, (self.snd_una - max(self.max_snd_wnd, 1)) & MASK):
            # RFC 5961 5.2: far too old an ACK is suspicious: challenge ACK, drop.
            self._ack_pending = True
            self._mark()
            return False
        sb = self._sb
        prior_flight = seq_diff(self.snd_max, self.snd_una)
        newly_sacked = 0
        echo = self._echo_time(seg, now)
        if self.sack_ok and seg.options.sack_blocks and sb.recs:
            newly_sacked = sb.sack(seg.options.sack_blocks, self.snd_una, self.snd_max, now,
                                   echo, ack)
        advanced = seq_gt(ack, self.snd_una)
        if advanced:
            self._ack_advance(ack, now, seg, echo)
            self._dupacks = 0
            self._dupack_flight = 0
        elif prior_flight and not seg.payload and not seg.flags & (SYN | FIN) \
                and (seg.window << self.snd_wscale) == self.snd_wnd and ack == self.snd_una:
            # A duplicate ACK by RFC 5681 2's definition.
            if self._dupacks == 0:
                self._dupack_flight = prior_flight
            self._dupacks += 1
            if not self.sack_ok:
                self._mark()
        # Window update (RFC 9293 3.10.7.4): only from a newer segment.
        if seq_lt(self.snd_wl1, seg.seq) or (
            self.snd_wl1 == seg.seq and seq_le(self.snd_wl2, ack)
        ):
            wnd = seg.window << self.snd_wscale
            if wnd > self.snd_wnd:
                self._mark()
            self.snd_wnd = wnd
            self.snd_wl1 = seg.seq
            self.snd_wl2 = ack
            if wnd > self.max_snd_wnd:
                self.max_snd_wnd = wnd
            if wnd:
                self.persist_deadline = None
                self._persist_backoff = 0
        if self._probes and seq_ge(ack, self.snd_una):
            self._probes = 0
        if sb.recs or self._recovery is not None:
            self._detect_loss(now, advanced, newly_sacked, prior_flight)
        return True

    def _detect_loss(self, now: float, advanced: bool, newly_sacked: int,
                     prior_flight: int) -> None:
        """Loss detection after an ACK: RACK with SACK (RFC 8985 6), NewReno without
        (RFC 6582), and entry to / exit from fast recovery (RFC 6675 5)."""
        sb = self._sb
        if self._recovery is not None and seq_ge(self.snd_una, self._recovery):
            self._recovery = None  # RFC 6675 5 / RFC 6582 3.2 step 3: full ACK ends it
            self._rtx_tsval = None
        if self._rto_high is not None and seq_ge(self.snd_una, self._rto_high):
            self._rto_high = None
            self._rtx_tsval = None
        if self.sack_ok:
            if advanced or newly_sacked or self.rack_deadline is not None:
                newly_lost, timeout = sb.detect_loss(now, self.rtt.srtt)
                self.rack_deadline = timeout
                if newly_lost:
                    self._on_loss_detected(now, prior_flight)
        elif self._recovery is None and self._rto_high is None:
            if self._dupacks >= DUPTHRESH and sb.recs:
                # RFC 5681 3.2 / RFC 6582 3.2 step 2: fast retransmit of SND.UNA;
                # ssthresh from the flight before limited transmit added to it.
                sb.mark_lost_from(self.snd_una, limit=1)
                self._on_loss_detected(now, self._dupack_flight or prior_flight)
        elif advanced and sb.recs:
            # RFC 6582 3.2 step 3: a partial ACK -- the next hole is lost too.
            if sb.first_lost() is None:
                sb.mark_lost_from(self.snd_una, limit=1)
            self._rtx_now = True
            self._mark()

    def _on_loss_detected(self, now: float, flight: int) -> None:
        # One window reduction per episode: none while an earlier RTO's or fast
        # recovery's data is still outstanding (RFC 6582 3.2, RFC 6675 5).
        if self._recovery is None and self._rto_high is None:
            self._recovery = self.snd_max
            self._sb.on_recovery()
            self.cc.on_loss(flight, now)
            # RFC 6675 5 (4.3) / RFC 5681 3.2: the first retransmission goes at once.
            self._rtx_now = True
            if self._rtx_tsval is None and self.ts_ok:
                self._rtx_tsval = self._tsval(now)
        self._mark()

    def _echo_time(self, seg: TcpSegment, now: float) -> float | None:
        """When (on our clock) the transmission this segment acknowledges was sent,
        from its echoed timestamp (RFC 7323 4); None without one."""
        ts = seg.options.timestamps
        if not self.ts_ok or ts is None or ts[1] == 0:
            return None
        age_ms = (self._tsval(now) - ts[1]) & MASK
        if age_ms >= 0x7FFFFFFF:
            return None
        return now - age_ms / 1000.0

    def _ack_advance(self, ack: int, now: float, seg: TcpSegment | None = None,
                     echo: float | None = None) -> None:
        """New data acknowledged: SND.UNA moves to ``ack``."""
        flight = seq_diff(self.snd_max, self.snd_una)
        self.snd_una = ack
        # Drop acknowledged bytes from the send buffer.
        n = seq_diff(ack, self.snd_buf_seq)
        k = 0
        if n > 0:
            k = min(n, len(self._sndbuf))
            if k:
                try:
                    del self._sndbuf[:k]
                except BufferError:
                    self._sndbuf = self._sndbuf[k:]  # a segment still holds a view
                self.snd_buf_seq = seq_add(self.snd_buf_seq, k)
        ts = seg.options.timestamps if seg is not None else None
        tsecr_ok = self.ts_ok and ts is not None and ts[1] != 0
        self._sb.ack(ack, now, echo)
        # RTT: from the echoed timestamp when there is one (RFC 7323 4.1, no Karn
        # ambiguity), else from the one timed segment (RFC 6298 3, Karn's rule).
        if tsecr_ok and ts is not None:
            rtt_ms = (self._tsval(now) - ts[1]) & MASK
            if rtt_ms < 0x7FFFFFFF:
                self.rtt.sample(rtt_ms / 1000.0)
                self.cc.srtt = self.rtt.srtt
            self._rtt_seq = None
            # Eifel detection (RFC 3522): the ACK echoes a timestamp older than our
            # first retransmission, so the original arrived: undo (RFC 4015).
            if self._rtx_tsval is not None and seq_lt(ts[1], self._rtx_tsval):
                self._undo_spurious()
        elif self._rtt_seq is not None and seq_ge(ack, self._rtt_seq):
            self.rtt.sample(now - self._rtt_time)
            self.cc.srtt = self.rtt.srtt
            self._rtt_seq = None
        self._retries = 0
        self.rtt.reset_backoff()
        if k and self._recovery is None:
            # Only acknowledged data grows the window, not our SYN or FIN (RFC 6928 2),
            # and not during recovery (RFC 6675 5).
            self.cc.on_ack(k, flight, now)
        if self._tlp_high is not None and seq_ge(ack, self._tlp_high):
            # RFC 8985 7.4: the probe's episode is over; if it repaired a loss (no
            # D-SACK for it came back), the network dropped data: react once.
            if self._tlp_rtx and self._sb.dsack_seen == self._tlp_dsack \
                    and self._recovery is None and self._rto_high is None:
                self.cc.on_loss(flight, now)
            self._tlp_high = None
        # RFC 6298 5.2 / 5.3: stop the timer when all is acknowledged, else restart it.
        if self.snd_una == self.snd_max:
            self.rto_deadline = None
            self.tlp_deadline = None
            self.rack_deadline = None
        else:
            self.rto_deadline = now + self.rtt.rto
        if self._write_blocked and len(self._sndbuf) <= self.cfg.snd_buf // 2:
            self._write_blocked = False
            self.events.append(ev.WRITE_SPACE)
        if self._fin_queued and self.snd_una == self.snd_max and \
                seq_diff(self.snd_max, self.snd_buf_seq) == 1 and not self._sndbuf:
            self._fin_acked(now)
        self._mark()

    def _undo_spurious(self) -> None:
        """A retransmission proved unnecessary: restore the window, forget the losses."""
        self.cc.undo()
        self._rtx_tsval = None
        self._recovery = None
        self._rto_high = None
        for rec in self._sb.recs:
            if rec.lost:
                rec.lost = False
        self._sb.lost_bytes = 0

    def _fin_acked(self, now: float) -> None:
        nxt = FIN_ACKED_TRANSITIONS.get(self.state)
        if nxt is None:
            return
        self.events.append(ev.FIN_ACKED)
        if nxt is State.CLOSED:
            self._terminate(None)
            return
        self.state = nxt
        if nxt is State.TIME_WAIT:
            self._enter_time_wait(now)

    def _process_text(self, seg: TcpSegment, now: float, seq: int) -> None:
        """Segment text and FIN (RFC 9293 3.10.7.4, seventh and eighth)."""
        payload = seg.payload
        n = len(payload)
        fin = bool(seg.flags & FIN)
        if n:
            if self.state not in RECEIVES_TEXT:
                # CLOSE-WAIT, CLOSING, LAST-ACK: the peer already sent FIN; ignore.
                return
            if self._closed_by_app:
                # Data after a full close: the application will never read it
                # (RFC 1122 4.2.2.13, RFC 2525 2.17): reset.
                self.abort()
                return
            # Trim what we already have from the front; report it as D-SACK (RFC 2883 4.1.1).
            skip = seq_diff(self.rcv_nxt, seq)
            if skip > 0:
                if self.sack_ok:
                    self._dsack = (seq, seq_add(seq, min(skip, n)))
                payload = payload[skip:]
                seq = self.rcv_nxt
                n = len(payload)
                self._ack_pending = True
            # ... and what exceeds the advertised window at the back.
            room = seq_diff(self.rcv_adv, seq)
            if n > room:
                payload = payload[:max(room, 0)]
                n = len(payload)
                fin = False
            if seq != self.rcv_nxt:
                # Out of order: queue it and send a duplicate ACK at once (RFC 5681 4.2),
                # carrying SACK blocks (RFC 2018 4).
                if n:
                    dup = self._ooo.add(seq, payload, self.rcv_nxt)
                    if dup is not None and self.sack_ok:
                        self._dsack = dup
                if fin:
                    self._ooo.fin_seq = seq_add(seq, n)
                self._ack_pending = True
                self._mark()
                return
            if n:
                if n > self._rcv_mss:
                    self._rcv_mss = min(n, self.cfg.mss)
                self.rcv_buf += payload
                self.rcv_nxt = seq_add(self.rcv_nxt, n)
                self._rcv_unacked += n
                if self._ooo:
                    self._pull_reassembled()
                if not self._data_event_pending:
                    self._data_event_pending = True
                    self.events.append(ev.DATA_RECEIVED)
                # RFC 1122 4.2.3.2 / RFC 5681 4.2: ACK at least every second full-sized
                # segment; otherwise the ACK may wait for the delayed-ACK timer.
                if self._rcv_unacked >= 2 * self._rcv_mss or not self.cfg.delayed_ack:
                    self._ack_pending = True
                else:
                    self._delack = True
            self._mark()
        if fin:
            if seq_add(seq, n) == self.rcv_nxt:
                self._receive_fin(now)
            else:
                # An out-of-order FIN draws a duplicate ACK like out-of-order data.
                self._ooo.fin_seq = seq_add(seq, n)
                self._ack_pending = True
                self._mark()
        elif self._ooo.fin_seq is not None and self._ooo.fin_seq == self.rcv_nxt:
            self._ooo.fin_seq = None
            self._receive_fin(now)

    def _pull_reassembled(self) -> None:
        """Move queued runs that now continue RCV.NXT into the receive buffer.

        Filling a hole is acknowledged at once (RFC 5681 4.2).
        """
        ooo = self._ooo
        while True:
            data = ooo.pop_ready(self.rcv_nxt)
            if data is None:
                break
            self.rcv_buf += data
            self.rcv_nxt = seq_add(self.rcv_nxt, len(data))
        ooo.drop_below(self.rcv_nxt)
        self._ack_pending = True

    def _receive_fin(self, now: float) -> None:
        """Eighth step: the peer's FIN (RFC 9293 3.10.7.4)."""
        self.rcv_nxt = seq_add(self.rcv_nxt, 1)
        self._ack_pending = True
        self._mark()
        state = self.state
        nxt = FIN_RECEIVED_TRANSITIONS.get(state)
        if nxt is None:
            return  # CLOSE-WAIT, CLOSING, LAST-ACK: a retransmitted FIN; just ACK it.
        self.events.append(ev.END_OF_STREAM)
        self.state = nxt
        if nxt is State.TIME_WAIT:
            self._enter_time_wait(now)

    def _enter_time_wait(self, now: float) -> None:
        self.rto_deadline = None
        self.persist_deadline = None
        self.fin_wait_deadline = None
        self.tlp_deadline = self.rack_deadline = self.keepalive_deadline = None
        # Like Linux's compact timewait sockets: a connection in TIME-WAIT only re-ACKs
        # FINs, so it lets go of its send and reassembly machinery (fewer live objects
        # for the garbage collector while thousands of connections linger for 2*MSL).
        self._sb = _IDLE_SCOREBOARD
        self._ooo = _IDLE_REASSEMBLY
        self.time_wait_deadline = now + 2 * self.cfg.msl

    # ---------------------------------------------------------------- sending

    def _tsval(self, now: float) -> int:
        """Our timestamp clock: milliseconds plus the per-connection offset (RFC 7323 5.4)."""
        return (int(now * 1000) + self.ts_offset) & MASK

    def _syn_options(self, now: float) -> TcpOptions:
        """Options of our SYN,ACK: MSS always; window scale, SACK-permitted and
        timestamps only if the peer offered them."""
        opts = TcpOptions(mss=self.cfg.mss, sack_permitted=self.sack_ok)
        if self.wscale_ok:
            opts.wscale = self.rcv_wscale
        if self.ts_ok:
            opts.timestamps = (self._tsval(now), self._ts_recent)
        return opts

    def _options(self, now: float) -> TcpOptions:
        """Options for a non-SYN segment: timestamps (RFC 7323 3.2: on every segment once
        agreed) and SACK blocks, a pending D-SACK first (RFC 2883 4)."""
        if not self.ts_ok and not (self.sack_ok and (self._ooo or self._dsack)):
            return NO_OPTIONS
        opts = TcpOptions()
        if self.ts_ok:
            opts.timestamps = (self._tsval(now), self._ts_recent)
        if self.sack_ok and (self._dsack is not None or self._ooo.nbytes):
            limit = 3 if self.ts_ok else 4
            blocks: list[tuple[int, int]] = []
            if self._dsack is not None:
                blocks.append(self._dsack)
                self._dsack = None
            if self._ooo.nbytes:
                blocks.extend(self._ooo.sack_blocks(limit - len(blocks)))
            if blocks:
                opts.sack_blocks = tuple(blocks)
        return opts

    def _window_field(self) -> int:
        """The window to advertise, scaled, never shrinking the right edge (3.8.6.2.2)."""
        free = self.cfg.rcv_buf - len(self.rcv_buf) - self._ooo.nbytes
        advertised = seq_diff(self.rcv_adv, self.rcv_nxt)
        if advertised < 0:
            advertised = 0
        # Receiver SWS avoidance: move the right edge only by a worthwhile amount.
        wnd = free if free - advertised >= min(self.cfg.rcv_buf // 2, self.cfg.mss) else advertised
        wnd = max(wnd, advertised)
        shift = self.rcv_wscale
        field = wnd >> shift
        if (field << shift) < advertised:
            field += 1
        if field > 0xFFFF:
            field = 0xFFFF
        self.rcv_adv = seq_add(self.rcv_nxt, field << shift)
        return field

    def _send_rst(self, seq: int) -> None:
        self._out.append(TcpSegment(self.local_port, self.remote_port, seq, 0, RST, 0))
        self._mark()

    def _acked_now(self) -> None:
        """Any segment we send carries the current ACK: nothing is owed any more."""
        self._ack_pending = False
        self._delack = False
        self.delack_deadline = None
        self._rcv_unacked = 0
        self._last_ack_sent = self.rcv_nxt

    def segments_to_send(self, now: float) -> list[TcpSegment]:
        """Everything this connection wants transmitted now; clears the dirty mark."""
        self._dirty = False
        self._data_event_pending = False
        state = self.state
        if state is State.FIN_WAIT_2 and self._closed_by_app and \
                self.fin_wait_deadline is None:
            # Linux tcp_fin_timeout: an orphaned FIN-WAIT-2 does not wait forever.
            self.fin_wait_deadline = now + self.cfg.fin_timeout
        if state in (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1,
                     State.CLOSING, State.LAST_ACK):
            self._send_data(now)
        if self._ack_pending and state is not State.CLOSED and state is not State.SYN_SENT:
            self._out.append(
                TcpSegment(self.local_port, self.remote_port, self.snd_max, self.rcv_nxt,
                           ACK, self._window_field(), self._options(now))
            )
            self._acked_now()
        elif self._delack and self.delack_deadline is None:
            self.delack_deadline = now + self.cfg.delayed_ack
        if self.keepalive and self.keepalive_deadline is None and state is State.ESTABLISHED:
            self.keepalive_deadline = self._last_rcv + self.keepalive_idle
        out = self._out
        self._out = []
        return out

    def _send_data(self, now: float) -> None:
        """Transmit what the windows allow: first segments judged lost (RFC 6675 5
        NextSeg rule 1), then new data, then the FIN (RFC 9293 3.8.6, 3.10.4)."""
        dsack = self._dsack
        opts = self._options(now) if (self.ts_ok or self.sack_ok) else NO_OPTIONS
        # RFC 2883 4: a D-SACK block is reported once -- on the first segment only.
        rest = opts
        if dsack is not None and opts.sack_blocks and opts.sack_blocks[0] == dsack:
            rest = TcpOptions(timestamps=opts.timestamps, sack_blocks=opts.sack_blocks[1:])
        extra = 4 + 8 * len(opts.sack_blocks) if opts.sack_blocks else 0
        mss = self.seg_mss - extra
        self.gso_size = mss
        # With TSO the device cuts large segments into MSS-sized ones.
        seg_max = max(mss, self.cfg.tso_size // mss * mss)
        sb = self._sb
        cwnd = self.cc.cwnd
        sent_any = False
        # 1. Retransmissions (pipe = flight - SACKed - lost, RFC 6675 4).
        while sb.lost_bytes > 0:
            pipe = self._pipe(seq_diff(self.snd_max, self.snd_una))
            if pipe > 0 and cwnd - pipe < mss and not self._rtx_now:
                break
            self._rtx_now = False
            rec = sb.first_lost()
            if rec is None:
                break
            allowed = max(mss, (cwnd - pipe) // mss * mss)
            self._retransmit(rec, min(allowed, seg_max), opts, now)
            opts = rest
            sent_any = True
        # 2. New data.
        buf = self._sndbuf
        while True:
            off = seq_diff(self.snd_max, self.snd_buf_seq)
            unsent = len(buf) - off
            if unsent > 0:
                flight = seq_diff(self.snd_max, self.snd_una)
                usable = min(self.snd_wnd - flight, cwnd - self._pipe(flight))
                n = min(unsent, seg_max, usable)
                if n <= 0:
                    if self.snd_wnd == 0 and flight == 0:
                        self._arm_persist(now)
                    break
                if n < mss and n < unsent and flight > 0:
                    break  # sender SWS avoidance (RFC 9293 3.8.6.2.1)
                if n < mss and flight > 0 and not self._fin_queued and (
                        not self.nodelay or flight >= AUTOCORK_FLIGHT_SEGMENTS * mss):
                    # Nagle (RFC 9293 3.7.4): one small segment in flight at most. Even
                    # with no-delay, a small tail waits while much is in flight (like
                    # Linux's autocorking): the next ACK or write comes soon and sends
                    # it in a full segment instead of a runt.
                    break
                # A view, not a copy: the packet builder copies it once into the
                # packet. Resizing the buffer while a view is alive falls back to a
                # copy (send() and _ack_advance), so held segments stay valid.
                payload = memoryview(buf)[off:off + n]
                flags = ACK
                if n == unsent:
                    flags |= PSH
                    if self._fin_queued:
                        flags |= FIN
                self._emit(flags, payload, opts, now)
                opts = rest
                sent_any = True
                continue
            if self._fin_queued and off == len(buf) and \
                    self.state in (State.FIN_WAIT_1, State.CLOSING, State.LAST_ACK):
                self._emit(FIN | ACK, b"", opts, now)
                sent_any = True
            break
        if sent_any:
            self._acked_now()
            self._arm_tlp(now)
        else:
            self._dsack = dsack  # still owed: the pure ACK will carry it

    def _pipe(self, flight: int) -> int:
        """RFC 6675 4 *pipe*: bytes believed in the network.

        Without SACK, each duplicate ACK stands for one segment that left the network
        (as Linux emulates SACK for Reno peers); this gives RFC 3042 limited transmit
        and RFC 6582's window inflation during recovery.
        """
        sb = self._sb
        pipe = flight - sb.sacked_bytes - sb.lost_bytes
        if not self.sack_ok and self._dupacks:
            pipe -= min(self._dupacks * self.seg_mss, max(0, pipe - self.seg_mss))
        return pipe

    def _fin_seq(self) -> int | None:
        """The sequence number our FIN occupies, once the application closed."""
        if not self._fin_queued:
            return None
        return seq_add(self.snd_buf_seq, len(self._sndbuf))

    def _retransmit(self, rec: Sent, limit: int, opts: TcpOptions, now: float) -> None:
        """Send record ``rec`` again (at most ``limit`` bytes of it)."""
        if rec.length > limit:
            i = self._sb.recs.index(rec)
            self._sb._split(i, seq_add(rec.start, limit))
            rec = self._sb.recs[i]
        fin_seq = self._fin_seq()
        end = rec.end
        flags = ACK
        if fin_seq is not None and seq_gt(end, fin_seq):
            end = fin_seq
            flags |= FIN
        off = seq_diff(rec.start, self.snd_buf_seq)
        n = seq_diff(end, rec.start)
        payload = memoryview(self._sndbuf)[off:off + n] if n > 0 else b""
        if payload and rec.end == self.snd_max:
            flags |= PSH
        self._out.append(TcpSegment(self.local_port, self.remote_port, rec.start, self.rcv_nxt,
                                    flags, self._window_field(), opts, payload))
        self._sb.on_retransmit(rec, now)
        self._rtt_seq = None  # Karn's rule (RFC 6298 3)
        if self._rtx_tsval is None and self.ts_ok:
            self._rtx_tsval = self._tsval(now)
        if self.rto_deadline is None:
            self.rto_deadline = now + self.rtt.rto

    def _emit(self, flags: int, payload: bytes | memoryview, opts: TcpOptions,
              now: float) -> None:
        """Send new data (and/or the FIN) at SND.MAX."""
        seq = self.snd_max
        seg = TcpSegment(self.local_port, self.remote_port, seq, self.rcv_nxt, flags,
                         self._window_field(), opts, payload)
        self._out.append(seg)
        end = seq_add(seq, seg.seg_len)
        # Fresh data: time it if no measurement is running (RFC 6298 3, Karn).
        if self._rtt_seq is None and not self.ts_ok:
            self._rtt_seq = end
            self._rtt_time = now
        self._sb.on_send(seq, end, now)
        self.snd_max = end
        if self.rto_deadline is None:
            self.rto_deadline = now + self.rtt.rto

    def _arm_tlp(self, now: float) -> None:
        """RFC 8985 7.2: schedule a tail loss probe two SRTTs after the last send."""
        if not (self.cfg.tlp and self.sack_ok) or self._recovery is not None \
                or self.rtt.srtt is None or self._tlp_high is not None:
            return
        flight = seq_diff(self.snd_max, self.snd_una)
        if flight == 0:
            return
        pto = 2 * self.rtt.srtt
        if flight < 2 * self.seg_mss:
            # The receiver may hold its ACK for less than two full segments.
            pto += WORST_CASE_DELAYED_ACK
        # Deviation from RFC 8985 (and Linux's 10 ms): never below a typical delayed-
        # ACK time, since a receiver whose application is not reading may hold its ACK
        # that long even with more in flight; on fast local paths SRTT is microseconds.
        pto = max(pto, MIN_PTO)
        deadline = now + pto
        if self.rto_deadline is not None and deadline > self.rto_deadline:
            deadline = self.rto_deadline  # RFC 8985 7.2: PTO = min(PTO, RTO)
        self.tlp_deadline = deadline

    def _arm_persist(self, now: float) -> None:
        """RFC 9293 3.8.6.1: probe a zero window on a backed-off timer."""
        if self.persist_deadline is None:
            delay = min(self.rtt.rto * (1 << min(self._persist_backoff, 16)), self.cfg.rto_max)
            self.persist_deadline = now + delay

    # ----------------------------------------------------------------- timers

    def next_deadline(self) -> float | None:
        """The earliest time at which :meth:`handle_timer` must run, or None."""
        best: float | None = None
        for d in (self.rto_deadline, self.persist_deadline, self.time_wait_deadline,
                  self.fin_wait_deadline, self.delack_deadline, self.rack_deadline,
                  self.tlp_deadline, self.keepalive_deadline):
            if d is not None and (best is None or d < best):
                best = d
        return best

    def handle_timer(self, now: float) -> None:
        """Run every timer whose deadline has passed."""
        if self.time_wait_deadline is not None and now >= self.time_wait_deadline:
            self.time_wait_deadline = None
            self._terminate(None)
            return
        if self.fin_wait_deadline is not None and now >= self.fin_wait_deadline:
            self.fin_wait_deadline = None
            if self.state is State.FIN_WAIT_2:
                self._terminate(None)
                return
        if self.delack_deadline is not None and now >= self.delack_deadline:
            self.delack_deadline = None
            if self._delack:
                self._ack_pending = True
                self._mark()
        if self.rack_deadline is not None and now >= self.rack_deadline:
            self.rack_deadline = None
            # RFC 8985 6.3: the reordering window passed for a suspect segment.
            flight = seq_diff(self.snd_max, self.snd_una)
            newly_lost, self.rack_deadline = self._sb.detect_loss(now, self.rtt.srtt)
            if newly_lost:
                self._on_loss_detected(now, flight)
        if self.tlp_deadline is not None and now >= self.tlp_deadline:
            # Before the RTO: a probe due at the same time re-arms the RTO instead.
            self.tlp_deadline = None
            self._on_tlp(now)
        if self.rto_deadline is not None and now >= self.rto_deadline:
            self.rto_deadline = None
            self.tlp_deadline = None
            self._on_rto(now)
            if self.state is State.CLOSED:
                return
        if self.persist_deadline is not None and now >= self.persist_deadline:
            self.persist_deadline = None
            self._on_persist(now)
        if self.keepalive_deadline is not None and now >= self.keepalive_deadline:
            self.keepalive_deadline = None
            self._on_keepalive(now)

    def _on_rto(self, now: float) -> None:
        """Retransmission timeout (RFC 6298 5.4-5.7, RFC 5681 3.1, RFC 6675 5.1)."""
        if self.snd_una == self.snd_max:
            return
        state = self.state
        if self.snd_wnd == 0 and state not in (State.SYN_SENT, State.SYN_RECEIVED):
            # The peer closed its window with our data in flight: the retransmissions
            # become zero-window probes, which do not count toward giving up while
            # they are answered (RFC 1122 4.2.2.17; Linux does the same).
            self.rtt.backoff()
            self._rtt_seq = None  # Karn: what is in flight may be sent again
            self._arm_persist(now)
            self._mark()
            return
        self._retries += 1
        if state is State.SYN_SENT:
            limit = self.cfg.syn_retries
        elif state is State.SYN_RECEIVED:
            limit = self.cfg.synack_retries
        else:
            limit = self.cfg.max_retries
        if self._retries > limit:
            self._terminate("timeout")
            return
        self.rtt.backoff()
        self._rtt_seq = None  # Karn: no sample from a retransmitted segment
        if state is State.SYN_SENT or state is State.SYN_RECEIVED:
            self._syn_retransmitted = True
            self.cc.on_timeout(seq_diff(self.snd_max, self.snd_una), now)
            self._send_syn(now, ack=state is State.SYN_RECEIVED)
            return
        flight = seq_diff(self.snd_max, self.snd_una)
        self.cc.on_timeout(flight, now)
        # Everything not SACKed is presumed lost and goes out again in order, as the
        # one-segment window allows (RFC 6675 5.1, RFC 5681 3.1).
        self._sb.mark_lost_from()
        self._recovery = None  # slow start from here (RFC 5681 3.1), not fast recovery
        self._rto_high = self.snd_max
        self._dupacks = 0
        self.rack_deadline = None
        self._tlp_high = None
        if self._rtx_tsval is None and self.ts_ok:
            self._rtx_tsval = self._tsval(now)
        self.rto_deadline = now + self.rtt.rto
        self._mark()

    def _on_tlp(self, now: float) -> None:
        """RFC 8985 7.3: send a probe -- new data if possible, else the last segment."""
        if self.snd_una == self.snd_max or self._recovery is not None:
            return
        sb = self._sb
        opts = self._options(now)
        mss = self.seg_mss - (4 + 8 * len(opts.sack_blocks) if opts.sack_blocks else 0)
        off = seq_diff(self.snd_max, self.snd_buf_seq)
        unsent = len(self._sndbuf) - off
        flight = seq_diff(self.snd_max, self.snd_una)
        retransmitted = False
        if unsent > 0 and self.snd_wnd - flight >= min(unsent, mss):
            n = min(unsent, mss)
            flags = ACK | (PSH if n == unsent else 0)
            self._emit(flags, memoryview(self._sndbuf)[off:off + n], opts, now)
        else:
            rec = sb.last_unsacked()
            if rec is None:
                return
            if rec.length > mss:
                i = sb.recs.index(rec)
                sb._split(i, seq_add(rec.end, -mss))
                rec = sb.recs[i + 1]
            self._retransmit(rec, mss, opts, now)
            self._rtx_tsval = None  # a probe is not an episode for Eifel
            retransmitted = True
        self._tlp_high = self.snd_max
        self._tlp_rtx = retransmitted
        self._tlp_dsack = sb.dsack_seen
        self._acked_now()
        self.rto_deadline = now + self.rtt.rto
        self._mark()

    def _on_persist(self, now: float) -> None:
        """Zero-window probe: an old sequence number forces the peer to ACK its window."""
        if self.snd_wnd != 0 or self.state not in (State.ESTABLISHED, State.CLOSE_WAIT,
                                                   State.FIN_WAIT_1, State.CLOSING,
                                                   State.LAST_ACK):
            return
        self._probes += 1
        if self._probes > self.cfg.max_retries:
            self._terminate("timeout")
            return
        self._out.append(
            TcpSegment(self.local_port, self.remote_port, seq_add(self.snd_una, -1),
                       self.rcv_nxt, ACK, self._window_field(), self._options(now))
        )
        self._persist_backoff += 1
        self._arm_persist(now)
        self._mark()

    def _on_keepalive(self, now: float) -> None:
        """RFC 1122 4.2.3.6: after ``keepalive_idle`` of silence, probe every
        ``keepalive_interval``; give up after ``keepalive_count`` unanswered probes."""
        if not self.keepalive or self.state is not State.ESTABLISHED:
            return
        idle_until = self._last_rcv + self.keepalive_idle
        if self._ka_probes == 0 and now < idle_until:
            self.keepalive_deadline = idle_until  # traffic since: wait again
            return
        if self.snd_una != self.snd_max:
            # Data in flight: the retransmission timer watches the peer instead.
            self.keepalive_deadline = now + self.keepalive_interval
            return
        if self._ka_probes >= self.keepalive_count:
            self._terminate("timeout")
            return
        self._ka_probes += 1
        # Linux-style probe: SEG.SEQ = SND.NXT - 1 and no data; the peer must ACK it.
        self._out.append(
            TcpSegment(self.local_port, self.remote_port, seq_add(self.snd_max, -1),
                       self.rcv_nxt, ACK, self._window_field(), self._options(now))
        )
        self.keepalive_deadline = now + self.keepalive_interval
        self._mark()

    # ------------------------------------------------------------- bookkeeping

    def _terminate(self, error: str | None) -> None:
        """Enter CLOSED and report it; the owner removes the TCB."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self.rto_deadline = self.persist_deadline = None
        self.time_wait_deadline = self.fin_wait_deadline = None
        self.delack_deadline = self.rack_deadline = None
        self.tlp_deadline = self.keepalive_deadline = None
        self._sndbuf = bytearray()
        self._sb.clear()
        self._ooo.clear()
        self._ack_pending = False
        self.events.append(ev.Terminated(error))
        self._mark()

    def _mark(self) -> None:
        if not self._dirty:
            self._dirty = True
            if self._on_dirty is not None:
                self._on_dirty(self)

    def take_events(self) -> list[ev.Event]:
        out = self.events
        self.events = []
        return out

    def __repr__(self) -> str:
        return (
            f"<Tcb {self.local_port}->{self.remote_port} {self.state} "
            f"una={self.snd_una} nxt={self.snd_nxt} rcv_nxt={self.rcv_nxt}>"
        )
