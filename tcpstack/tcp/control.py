"""The transmission control block as data (RFC 9293 3.3.1), and its bookkeeping.

:class:`ControlBlock` holds one connection's variables -- the send and receive
sequence spaces with RFC 9293's names, the negotiated options, the buffers, the
recovery state, the timers -- and the few operations every rule needs: changing
state through the transition table (:meth:`ControlBlock.fire`), counting a drop
by reason, and telling the owner that the connection has something to do.

The rules that read and change these variables live in one module per concern
(see ``tcpstack/tcp/README.md``); :class:`tcpstack.tcp.tcb.Tcb` puts them
together behind the public API. Nothing here performs I/O or reads a clock.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol, Self

from tcpstack.tcp import congestion
from tcpstack.tcp import events as ev
from tcpstack.tcp.accecn import AccEcn
from tcpstack.tcp.buffers import ReceiveBuffer, SendBuffer
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.controller import CongestionControl
from tcpstack.tcp.limits import Commons, standalone
from tcpstack.tcp.listener import Listener
from tcpstack.tcp.rate import DeliveryRate
from tcpstack.tcp.reassembly import DEFAULT_MAX_PIECES, ReassemblyQueue
from tcpstack.tcp.rtt import RttEstimator
from tcpstack.tcp.scoreboard import Scoreboard
from tcpstack.tcp.seq import MASK, seq_add
from tcpstack.tcp.state import APP_TRIGGERS, State, Trigger, next_state, refusal
from tcpstack.tcp.tfocookies import FastOpen
from tcpstack.tcp.timers import Timers
from tcpstack.wire.tcp import OutSegment

DEFAULT_PEER_MSS = 536  # RFC 9293 3.7.1: assumed when the SYN carries no MSS option
NO_PATH_LIMIT = 65535  # path_mss when the path has not lowered the MSS
MIN_PATH_MSS = 512  # default floor of the path MSS: RFC 1191's 552-byte IPv4 MTU minus 40
TS_OPTION_LEN = 12  # NOP, NOP, kind 8, length 10 (RFC 7323 3)
MD5_OPTION_LEN = 20  # NOP, NOP, kind 19, length 18 (RFC 2385 2.0)


def _unkeyed_offset(iss: int) -> int:
    return int.from_bytes(hashlib.blake2s(iss.to_bytes(4, "big"), digest_size=4).digest(), "big")


TransitionHook = Callable[["ControlBlock", State, Trigger, State], None]


class EventSink(Protocol):
    """Whoever owns a connection on the application side (e.g. an asyncio transport)."""

    def on_events(self, events: list[ev.Event]) -> None: ...




class ControlBlock:
    """One connection's state. The rules are in the modules of :mod:`tcpstack.tcp`."""

    # Grouped by concern rather than sorted: the groups are the map of this class.
    __slots__ = (  # noqa: RUF023
        # identity and configuration
        "cfg", "counters", "local_ip", "local_port", "remote_ip", "remote_port", "state",
        # send sequence space (RFC 9293 3.3.1) and what the handshake agreed
        "iss", "max_snd_wnd", "seg_mss", "gso_size", "snd_max", "snd_mss", "snd_una",
        "snd_wl1", "snd_wl2", "snd_wnd", "snd_wscale", "wscale_ok", "sack_ok", "ts_ok",
        "md5", "opt_len", "sig_len", "auth",
        # TCP Fast Open (RFC 7413): None unless the connection uses it
        "tfo",
        # ECN (RFC 3168): agreed; ECE owed to the peer; CWR owed on our next new data;
        # a window reduction for ECE in progress (Linux's CWR state); Accurate ECN's
        # counters (RFC 9768), None unless in AccECN mode
        "ecn_ok", "ecn_echo", "cwr_pending", "in_cwr", "accecn",
        # the path: the MSS the handshake agreed, the path's limit on it (RFC 1191,
        # RFC 4821) and when that limit expires, the floor, the last soft ICMP error
        "blackhole_mark", "mss_floor", "path_expires", "path_mss", "peer_mss", "pmtu_high",
        "soft_error",
        # the sender's buffer and the application's requests
        "closed_by_app", "fin_queued", "nodelay", "snd_space", "sndbuf", "write_blocked",
        # receive sequence space and buffers; receive-buffer autotuning
        "irs", "rcv_adv", "rcv_buf", "rcv_mss", "rcv_nxt", "rcv_rtt", "rcv_space", "rcv_wscale",
        "rcvq_copied", "rcvq_space", "rcvq_time", "reassembly",
        # ACK policy (when we acknowledge), and the limits on unsolicited replies
        "ack_pending", "delack", "dsack", "last_ack_sent", "last_oow_reply", "rcv_pushed",
        "rcv_unacked", "reply_budget",
        # timestamps (RFC 7323)
        "ts_offset", "ts_recent", "ts_recent_age",
        # round-trip time and congestion control
        "cc", "retries", "rtt", "rtt_seq", "rtt_time", "syn_retransmitted",
        # loss recovery (RFC 6675, RFC 6582, RFC 8985, RFC 3522)
        "dupack_flight", "dupacks", "prr_delivered", "prr_out", "recover_fs", "recovery_point",
        "rto_high", "rtx_now", "rtx_tsval",
        "scoreboard", "tlp_dsack", "tlp_high", "tlp_rtx",
        # probes: zero window and keepalive; the user timeout's progress clock
        "ka_probes", "keepalive", "keepalive_count", "keepalive_idle", "keepalive_interval",
        "last_rcv", "persist_backoff", "probes", "progress_una", "stall_since",
        # timers, output and events; when a paced sender may next send
        "data_event_pending", "events", "out", "pace_next", "timers",
        # the owner's links: dirty hook, timer bookkeeping, listener, application side,
        # the memory pool and what this connection is charged in it, a tracer
        "charged", "dirty", "half_open", "listener", "on_dirty", "on_transition", "pool",
        "timer_entry", "user",
    )

    def __init__(self, cfg: TcpConfig, local: tuple[int, int], remote: tuple[int, int],
                 iss: int, commons: Commons | None = None,
                 ts_offset: int | None = None) -> None:
        self.cfg = cfg
        if commons is None:
            commons = standalone(cfg.challenge_ack_limit, iss)
        #: Drops and other events counted by reason: the stack's own counters.
        self.counters: Counter[str] = commons.counters
        #: The stack-wide budget of challenge ACKs (RFC 5961 7).
        self.reply_budget = commons.reply_budget
        #: The stack-wide memory pool this connection's buffers are charged to.
        self.pool = commons.pool
        self.local_ip, self.local_port = local
        self.remote_ip, self.remote_port = remote
        self.state = State.CLOSED
        self._init_send(iss, ts_offset)
        self._init_receive()
        self._init_recovery()
        self._init_probes()
        self.timers = Timers()
        self.pace_next = 0.0
        self.out: list[OutSegment] = []
        self.events: list[ev.Event] = []
        self.data_event_pending = False
        self.dirty = False
        self.on_dirty: Callable[[Any], None] | None = None
        self.timer_entry: float | None = None
        self.listener: Listener | None = None
        self.half_open = False
        self.user: EventSink | None = None
        self.charged = 0
        #: Called after every change of state, as (connection, from, trigger, to):
        #: for tracing and tests; None (the default) costs one test per transition.
        self.on_transition: TransitionHook | None = None

    def _init_send(self, iss: int, ts_offset: int | None) -> None:
        cfg = self.cfg
        self.iss = iss
        # Retransmissions are driven by the scoreboard, never by rewinding, so SND.NXT
        # is always snd_max (see snd_nxt).
        self.snd_una = iss
        self.snd_max = iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_snd_wnd = 0
        self.snd_wscale = 0
        self.wscale_ok = False
        self.snd_mss = DEFAULT_PEER_MSS
        # snd_mss = min(peer_mss, path_mss): the handshake's MSS, lowered by what the
        # path allows (tcpstack.tcp.path).
        self.peer_mss = DEFAULT_PEER_MSS
        self.path_mss = NO_PATH_LIMIT
        self.path_expires: float | None = None
        self.mss_floor = MIN_PATH_MSS
        self.blackhole_mark = 0  # tcb.retries when PLPMTUD last lowered the MSS
        # SND.MAX when the path MSS fell, until acknowledged: what is resent for it
        # is not a retransmission Eifel may call spurious.
        self.pmtu_high: int | None = None
        self.soft_error = 0  # errno of the last soft ICMP error (Linux sk_err_soft)
        # Options agreed in the handshake, and the payload per segment they leave.
        self.sack_ok = False
        self.ts_ok = False
        #: Every segment is signed (RFC 2385): the stack has a key for the peer.
        self.md5 = False
        #: Bytes of the signature option on every segment: TCP-MD5's 20, TCP-AO's 16.
        self.sig_len = 0
        #: The stack's TCP-AO state of this connection (tcpstack.tcp.aokeys.AoConn).
        self.auth: Any = None
        #: Fast Open's state (tcpstack.tcp.tfocookies), for the connections that use it.
        self.tfo: FastOpen | None = None
        #: Option bytes on every segment (timestamps, the MD5 signature): the payload
        #: of a segment is the MSS less these (RFC 6691).
        self.opt_len = 0
        self.ecn_ok = False
        self.ecn_echo = False
        self.accecn: AccEcn | None = None
        self.cwr_pending = False
        self.in_cwr = False
        self.seg_mss = DEFAULT_PEER_MSS
        self.gso_size = DEFAULT_PEER_MSS
        self.sndbuf = SendBuffer(seq_add(iss, 1))
        self.fin_queued = False
        self.closed_by_app = False
        self.write_blocked = False
        self.nodelay = not cfg.nagle
        self.rtt = RttEstimator(cfg.rto_initial, cfg.rto_min, cfg.rto_max)
        self.rtt_seq: int | None = None
        self.rtt_time = 0.0
        self.retries = 0
        self.syn_retransmitted = False
        self.cc: CongestionControl = congestion.create(
            cfg.congestion_control, DEFAULT_PEER_MSS, cfg.initial_window, cfg.hystart, iss)
        # RFC 7323 7.1: our timestamp clock's offset, unpredictable per connection; the
        # stack derives it from its secret and the 4-tuple (IsnGenerator.ts_offset).
        # A TCB made without one (tests) mixes the ISS in, unkeyed.
        self.ts_offset = _unkeyed_offset(iss) if ts_offset is None else ts_offset & MASK

    def _init_receive(self) -> None:
        # rcv_adv is the right edge last advertised, which must never move left
        # (RFC 9293 3.8.6.2.2).
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0
        self.rcv_wscale = 0
        self.rcv_buf = ReceiveBuffer()
        self.reassembly = ReassemblyQueue(max(DEFAULT_MAX_PIECES,
                                              self.cfg.rcv_buf_limit // 4096))
        # The receive buffer's size -- the window we may offer -- and what autotuning
        # measures to grow it (tcpstack/tcp/autotune.py).
        self.rcv_space = self.cfg.rcv_buf
        # The send buffer's autotuned high-water mark: it only grows (see
        # autotune.send_space).
        self.snd_space = self.cfg.snd_buf
        self.rcvq_space = 0  # bytes read in the last measured round trip
        self.rcvq_copied = 0  # bytes read since rcvq_time
        self.rcvq_time = 0.0
        self.rcv_rtt: float | None = None  # the receiver's round-trip estimate
        # Largest segment payload seen from the peer (Linux's rcv_mss): what a
        # "full-sized segment" is for the delayed-ACK rule.
        self.rcv_mss = min(self.cfg.mss, DEFAULT_PEER_MSS)
        self.ack_pending = False
        self.delack = False
        self.rcv_unacked = 0
        self.rcv_pushed = False  # a short segment arrived since our last ACK
        self.dsack: tuple[int, int] | None = None
        self.last_ack_sent = 0  # RFC 7323 4.3 Last.ACK.sent
        self.last_oow_reply = -1e18  # when the last rate-limited reply went out
        # RFC 7323: the peer's TSval to echo and when it was recorded.
        self.ts_recent = 0
        self.ts_recent_age = -1.0

    def _init_recovery(self) -> None:
        self.scoreboard = Scoreboard()
        if self.cc.wants_rate:
            self.scoreboard.rate = DeliveryRate()  # (only for the controllers using it)
        self.recovery_point: int | None = None  # RFC 6675 RecoveryPoint / RFC 6582 recover
        self.rto_high: int | None = None  # SND.MAX at the last RTO, until acknowledged
        # Proportional rate reduction during fast recovery (RFC 9937): the flight
        # when recovery began, bytes delivered and bytes sent since.
        self.recover_fs = 0
        self.prr_delivered = 0
        self.prr_out = 0
        self.dupacks = 0
        self.dupack_flight = 0  # flight when the first duplicate ACK arrived
        self.rtx_now = False  # one retransmission may ignore pipe (recovery entry)
        self.rtx_tsval: int | None = None  # TSval of an episode's first retransmission
        self.tlp_high: int | None = None
        self.tlp_rtx = False
        self.tlp_dsack = 0

    def _init_probes(self) -> None:
        cfg = self.cfg
        self.probes = 0
        self.persist_backoff = 0
        self.keepalive = cfg.keepalive
        self.keepalive_idle = cfg.keepalive_idle
        self.keepalive_interval = cfg.keepalive_interval
        self.keepalive_count = cfg.keepalive_count
        self.ka_probes = 0
        self.last_rcv = 0.0
        # RFC 9293 3.10.8 user timeout: since when data outstanding made no progress
        # (None: nothing outstanding), and SND.UNA at that time.
        self.stall_since: float | None = None
        self.progress_una = 0

    # ------------------------------------------------------------ state changes

    def fire(self, trigger: Trigger) -> State | None:
        """Apply a segment or timer ``trigger`` through the transition table; return
        the new state.

        Returns None, counts ``tcp_illegal_transition`` and changes nothing if the
        table does not allow it (the callers check first; this guards the table).
        """
        before = self.state
        nxt = next_state(before, trigger)
        if nxt is None:
            self.counters["tcp_illegal_transition"] += 1
            return None
        self.state = nxt
        if self.on_transition is not None:
            self.on_transition(self, before, trigger, nxt)
        return nxt

    def fire_app(self, trigger: Trigger) -> State:
        """Apply an application call; raise the RFC's error, changing nothing, if the
        table does not allow it in the current state."""
        assert trigger in APP_TRIGGERS
        before = self.state
        nxt = next_state(before, trigger)
        if nxt is None:
            raise refusal(before, trigger)
        self.state = nxt
        if self.on_transition is not None:
            self.on_transition(self, before, trigger, nxt)
        return nxt

    def set_path_mss(self, mss: int, expires: float | None) -> None:
        """What the path allows (path MTU minus the IP and TCP headers), until
        ``expires`` (None: for good); the MSS in use becomes the smaller of it and
        the handshake's (see :mod:`tcpstack.tcp.path`)."""
        self.path_mss = mss
        self.path_expires = expires
        snd = max(64, min(self.peer_mss, mss))
        self.snd_mss = snd
        self.seg_mss = snd - self.opt_len
        self.cc.set_mss(self.seg_mss)

    def set_signed(self, signed: bool) -> None:
        """Start or stop signing every segment (RFC 2385: the stack's key for the peer
        was set or removed while the connection is open); the payload per segment
        follows the option bytes, as Linux's MSS does per segment."""
        self.md5 = signed
        self.set_signature_len(MD5_OPTION_LEN if signed else 0)

    def set_signature_len(self, n: int) -> None:
        """Every segment carries a signature option of ``n`` bytes from now on (TCP-MD5
        20, TCP-AO 16, none 0): the payload per segment shrinks by it (RFC 6691)."""
        self.sig_len = n
        self.opt_len = (TS_OPTION_LEN if self.ts_ok else 0) + n
        self.seg_mss = self.snd_mss - self.opt_len
        self.cc.set_mss(self.seg_mss)
        self.mark()

    def drop(self, reason: str) -> None:
        """Count a segment the engine dropped (or answered only with an ACK/RST)."""
        self.counters[reason] += 1

    # ------------------------------------------------------------- owner links

    def bind(self, on_dirty: Callable[[Self], None]) -> None:
        """Let the owner (the stack) know whenever this connection has work to flush."""
        self.on_dirty = on_dirty
        if self.dirty:
            on_dirty(self)

    def mark(self) -> None:
        """Something changed: the owner should call ``segments_to_send`` (once)."""
        if not self.dirty:
            self.dirty = True
            if self.on_dirty is not None:
                self.on_dirty(self)

    def take_events(self) -> list[ev.Event]:
        out = self.events
        self.events = []
        return out

    # ------------------------------------------------------------------ helpers

    @property
    def snd_nxt(self) -> int:
        """SND.NXT (RFC 9293 3.3.1): the next new sequence number to send."""
        return self.snd_max

    def tsval(self, now: float) -> int:
        """Our timestamp clock: milliseconds plus the per-connection offset (RFC 7323 5.4)."""
        return (int(now * 1000) + self.ts_offset) & MASK

    @property
    def footprint(self) -> int:
        """Bytes this connection holds in its buffers (for the stack's memory pool)."""
        return len(self.sndbuf.data) + len(self.rcv_buf.data) + self.reassembly.nbytes

    def fin_seq(self) -> int | None:
        """The sequence number our FIN occupies, once the application closed."""
        if not self.fin_queued:
            return None
        return self.sndbuf.end_seq

    def __repr__(self) -> str:
        return (
            f"<Tcb {self.local_port}->{self.remote_port} {self.state} "
            f"una={self.snd_una} nxt={self.snd_nxt} rcv_nxt={self.rcv_nxt}>"
        )
