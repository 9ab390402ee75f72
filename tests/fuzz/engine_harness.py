"""Drive one TCB with abstract actions and check its invariants after every step.

Helper for ``test_engine_fuzz.py`` (not a test file). Hypothesis draws *abstract*
actions -- "a segment whose sequence number is RCV.NXT + 3", "the application
reads 100 bytes", "time moves to the next deadline" -- and :class:`Driver` turns
them into concrete calls on a :class:`Tcb` against its current variables, so
that segments land near and far from the window edges whatever state the
connection has reached.

The peer is hostile but consistent: the byte it sends at sequence number ``s``
is always ``peer_byte(s)``, whatever segment carries it, so whatever the
application reads must be exactly those bytes in order. Likewise the application
writes ``app_byte(i)`` at stream offset ``i``, so every byte the TCB sends (new
or retransmitted) can be checked against its sequence number.

:meth:`Driver.check` asserts the invariants listed in :data:`INVARIANTS`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from itertools import pairwise

from tcp_helpers import (
    ISS,
    LOCAL,
    REMOTE,
    peer,
    peer_opts,
    peer_tsval,
    syn_with_options,
    tcb_established_active,
    tcb_established_opts,
    tcb_syn_sent,
)

from tcpstack.tcp import events as ev
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.seq import MASK, seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt
from tcpstack.tcp.state import TRANSITIONS, State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import ACK, FIN, RST, SYN, OutSegment, TcpOptions, TcpSegment

INVARIANTS = """\
after every action:
  - the state is one of the transition table's; once CLOSED it stays CLOSED
  - SND.UNA <= SND.NXT; the send buffer starts within one of SND.UNA and holds
    everything in flight; it stays within snd_buf plus one application write
  - receive buffer + reassembly queue <= rcv_buf; queued runs are sorted, apart,
    after RCV.NXT, inside the advertised window and before a recorded FIN; their
    sizes and piece counts add up and stay within the cap; the SACK blocks name
    distinct queued runs
  - RCV.NXT never passes the advertised right edge (by one, for a FIN at the edge)
  - scoreboard records: non-empty, sorted, non-overlapping, covering exactly
    [SND.UNA, SND.MAX) once the SYN is acknowledged; sacked_bytes and lost_bytes
    equal the sums over the records; no record both SACKed and lost
  - cwnd >= one segment
  - next_deadline() is None or finite (None once CLOSED)
  - the application reads exactly the peer's bytes, in order
  - at most one Terminated event, and nothing after it
at every flush:
  - every window field fits 16 bits, and the right edge we advertise never moves left
  - data we send is the application's bytes at those sequence numbers; a FIN
    follows the last byte written and only after the application closed
  - nothing beyond SND.MAX; in TIME-WAIT only pure ACKs
  - once a flush has seen CLOSED, nothing more is ever sent
an application call the table refuses raises ConnectionError and changes nothing
"""

# ------------------------------------------------------------------ byte streams

_PERIOD = 65521  # prime: patterns do not line up with segment or buffer sizes
MAX_PAYLOAD = 9000
_PEER = random.Random(0x5EED).randbytes(_PERIOD)
_PEER2 = _PEER + _PEER[:MAX_PAYLOAD + 1]
_APP = random.Random(0xA99).randbytes(_PERIOD)
_APP3 = _APP * 3


def peer_bytes(seq: int, n: int) -> bytes:
    """The ``n`` bytes the peer sends from sequence number ``seq`` (mod 2**32)."""
    out = b""
    seq &= MASK
    while n > 0:
        chunk = min(n, (1 << 32) - seq)  # up to the wrap of sequence space
        start = seq % _PERIOD
        out += _PEER2[start:start + chunk]
        n -= chunk
        seq = 0
    return out


def app_bytes(offset: int, n: int) -> bytes:
    """The ``n`` bytes the application writes from stream offset ``offset``."""
    out = b""
    while n > 0:
        chunk = min(n, _PERIOD)
        start = offset % _PERIOD
        out += _APP3[start:start + chunk]
        n -= chunk
        offset += chunk
    return out


# ------------------------------------------------------------------ actions


@dataclass(frozen=True)
class Seg:
    """A segment from the peer; sequence numbers are (base, offset) resolved when sent.

    ``seq`` bases: ``nxt`` (RCV.NXT), ``edge`` (the advertised right edge), ``irs``,
    ``abs`` (the offset is the absolute value). ``ack`` bases: ``una``, ``max``,
    ``iss``, ``abs``. SACK block ends: (``una`` | ``max`` | ``abs``, offset).
    ``ts``: None, or (TSval offset from the peer's clock, TSecr: None = echo ours
    of one RTT ago, else an absolute value).
    """

    flags: int
    seq: tuple[str, int]
    ack: tuple[str, int]
    window: int = 65535
    length: int = 0
    sack: tuple[tuple[tuple[str, int], tuple[str, int]], ...] = ()
    ts: tuple[int, int | None] | None = (0, None)
    syn_opts: tuple[int | None, int | None, bool] = (1460, None, False)  # mss, wscale, sackok
    urgent: int = 0


@dataclass(frozen=True)
class Send:
    n: int


@dataclass(frozen=True)
class Recv:
    n: int


@dataclass(frozen=True)
class Shutdown:
    pass


@dataclass(frozen=True)
class Close:
    pass


@dataclass(frozen=True)
class Abort:
    pass


@dataclass(frozen=True)
class NoDelay:
    on: bool


@dataclass(frozen=True)
class Advance:
    """Move the clock by ``dt`` (None: to the next deadline, plus ``extra``); if a
    timer is due, run the timers and flush, as the stack's runtime does."""

    dt: float | None
    extra: float = 0.0


@dataclass(frozen=True)
class Flush:
    pass


Action = Seg | Send | Recv | Shutdown | Close | Abort | NoDelay | Advance | Flush


# ------------------------------------------------------------------ start states


@dataclass(frozen=True)
class Start:
    """Where a run begins: a state reached the way the unit tests reach it."""

    state: str
    mss: int | None = 1460
    wscale: int | None = None
    sack: bool = True
    ts: bool = True
    in_flight: int = 0
    """Bytes the application wrote (and the TCB sent) before the state was steered to."""


START_STATES = ("SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "ESTABLISHED-active",
                "FIN-WAIT-1", "FIN-WAIT-1-half", "FIN-WAIT-2", "CLOSING", "TIME-WAIT",
                "CLOSE-WAIT", "LAST-ACK", "CLOSED")


def build(start: Start, cfg: TcpConfig) -> tuple[Tcb, float]:
    """A TCB in ``start.state`` and the time it got there."""
    now = 0.0
    if start.state == "SYN-SENT":
        return tcb_syn_sent(cfg), now
    if start.state == "SYN-RECEIVED":
        syn = syn_with_options(mss=start.mss, wscale=start.wscale, sack=start.sack,
                               ts=(peer_tsval(now), 0) if start.ts else None)
        tcb = Tcb.passive_open(cfg, LOCAL, REMOTE, syn, ISS, now)
        tcb.segments_to_send(now)
        tcb.take_events()
        return tcb, now
    if start.state == "ESTABLISHED-active":
        return tcb_established_active(cfg, mss=start.mss, wscale=start.wscale), 0.1
    tcb = tcb_established_opts(cfg, sack=start.sack, ts=start.ts, mss=start.mss,
                               wscale=start.wscale)
    now = 0.1
    if start.in_flight:
        tcb.send(app_bytes(0, start.in_flight))
        tcb.segments_to_send(now)

    def step(seg: TcpSegment) -> None:
        nonlocal now
        now += 0.1
        tcb.receive(seg, now)
        tcb.segments_to_send(now)

    def ack_all() -> None:
        # The peer acknowledges whatever was sent until our FIN is (bounded: the
        # congestion window opens with every round).
        for _ in range(100):
            step(peer(tcb, options=opts()))
            if tcb.state is State.FIN_WAIT_2:
                break

    def opts() -> TcpOptions:
        return peer_opts(tcb, now + 0.1)

    s = start.state
    if s in ("FIN-WAIT-1", "FIN-WAIT-2", "CLOSING", "TIME-WAIT"):
        tcb.close()
        tcb.segments_to_send(now)
    elif s == "FIN-WAIT-1-half":
        tcb.shutdown_write()
        tcb.segments_to_send(now)
    if s in ("FIN-WAIT-2", "TIME-WAIT"):
        ack_all()  # our FIN included
    if s == "CLOSING":
        step(peer(tcb, ACK | FIN, ack=tcb.snd_una, options=opts()))
    if s in ("TIME-WAIT", "CLOSE-WAIT", "LAST-ACK"):
        step(peer(tcb, ACK | FIN, ack=tcb.snd_una, options=opts()))
    if s == "LAST-ACK":
        tcb.close()
        tcb.segments_to_send(now)
    if s == "CLOSED":
        tcb.abort()
        tcb.segments_to_send(now)
    want = {"FIN-WAIT-1-half": "FIN-WAIT-1"}.get(s, s)
    assert str(tcb.state) == want, f"could not steer to {want}: {tcb!r}"
    tcb.take_events()
    return tcb, now


# ------------------------------------------------------------------ the driver


@dataclass
class Driver:
    """Applies actions to ``tcb`` and checks :data:`INVARIANTS` after each."""

    tcb: Tcb
    now: float
    max_write: int
    written: int = 0
    read: int = 0
    fin_requested: bool = False
    closed_flushed: bool = False
    max_edge: int | None = None
    terminated: bool = False
    was_closed: bool = False
    sent: list[OutSegment] = field(default_factory=list)

    def __post_init__(self) -> None:
        tcb = self.tcb
        self.written = len(tcb.sndbuf.data) if tcb.state is not State.CLOSED else 0
        self.fin_requested = tcb.fin_queued
        if tcb.state not in (State.SYN_SENT, State.CLOSED):
            self.max_edge = tcb.rcv_adv
        self.terminated = self.was_closed = tcb.state is State.CLOSED
        self.check()

    # -- segments -------------------------------------------------------------

    def _seq(self, base: str, off: int) -> int:
        tcb = self.tcb
        origin = {"nxt": tcb.rcv_nxt, "edge": tcb.rcv_adv, "irs": tcb.irs, "abs": 0}[base]
        return seq_add(origin, off)

    def _ack(self, base: str, off: int) -> int:
        tcb = self.tcb
        origin = {"una": tcb.snd_una, "max": tcb.snd_max, "iss": tcb.iss, "abs": 0}[base]
        return seq_add(origin, off)

    def segment(self, a: Seg) -> TcpSegment:
        tcb = self.tcb
        seq = self._seq(*a.seq)
        ts: tuple[int, int] | None = None
        if a.ts is not None:
            tsval = seq_add(peer_tsval(self.now), a.ts[0])
            tsecr = a.ts[1]
            if tsecr is None:
                tsecr = (int(max(0.0, self.now - 0.1) * 1000) + tcb.ts_offset) & MASK
            ts = (tsval, tsecr & MASK)
        if a.flags & SYN:
            mss, wscale, sack_ok = a.syn_opts
            opts = TcpOptions(mss=mss, wscale=wscale, sack_permitted=sack_ok, timestamps=ts)
        else:
            blocks = tuple((self._ack(*left), self._ack(*right)) for left, right in a.sack)
            opts = TcpOptions(sack_blocks=blocks, timestamps=ts)
        payload = peer_bytes(seq, a.length)
        return TcpSegment(REMOTE[1], LOCAL[1], seq, self._ack(*a.ack), a.flags, a.window,
                          opts, payload, a.urgent)

    # -- actions ----------------------------------------------------------------

    def apply(self, action: Action) -> None:
        tcb = self.tcb
        if isinstance(action, Seg):
            tcb.receive(self.segment(action), self.now)
        elif isinstance(action, Advance):
            if action.dt is None:
                d = tcb.next_deadline()
                if d is None:
                    return
                self.now = max(self.now, d) + action.extra
            else:
                self.now += action.dt
            d = tcb.next_deadline()
            if d is not None and d <= self.now:
                tcb.handle_timer(self.now)
                # As the runtime does (and Stack's usage says): what timers send is
                # flushed before the next segment is received.
                self.flush()
        elif isinstance(action, Flush):
            self.flush()
        elif isinstance(action, Recv):
            self.recv(action.n)
        elif isinstance(action, NoDelay):
            tcb.set_nodelay(action.on)
        else:
            self.app_call(action)
        self.check()

    def recv(self, n: int) -> None:
        data = self.tcb.recv(n)
        if data:
            start = seq_add(self.tcb.irs, 1 + self.read)
            assert data == peer_bytes(start, len(data)), (
                f"the application read bytes the peer never sent at stream offset {self.read}")
            self.read += len(data)

    def app_call(self, action: Send | Shutdown | Close | Abort) -> None:
        tcb = self.tcb
        if isinstance(action, Send) and tcb.send_buffered > tcb.cfg.snd_buf:
            return  # the streams API waits in drain() until the buffer drains
        before = (tcb.state, tcb.snd_max, len(tcb.sndbuf.data), tcb.fin_queued,
                  tcb.closed_by_app)
        try:
            if isinstance(action, Send):
                tcb.send(app_bytes(self.written, action.n))
            elif isinstance(action, Shutdown):
                tcb.shutdown_write()
            elif isinstance(action, Close):
                tcb.close()
            else:
                tcb.abort()
        except ConnectionError:
            after = (tcb.state, tcb.snd_max, len(tcb.sndbuf.data), tcb.fin_queued,
                     tcb.closed_by_app)
            assert after == before, f"a refused {action} changed the connection"
            return
        if isinstance(action, Send):
            self.written += action.n
        elif not isinstance(action, Abort):
            self.fin_requested = True

    # -- output -----------------------------------------------------------------

    def flush(self) -> None:
        tcb = self.tcb
        out = tcb.segments_to_send(self.now)
        if self.closed_flushed:
            assert not out, f"sent after CLOSED: {out}"
        for seg in out:
            self._check_segment(seg)
        self.sent += out
        if tcb.state is State.CLOSED:
            self.closed_flushed = True

    def _check_segment(self, seg: OutSegment) -> None:
        tcb = self.tcb
        assert (seg.src_port, seg.dst_port) == (LOCAL[1], REMOTE[1])
        assert 0 <= seg.window <= 0xFFFF, f"window field {seg.window}"
        if seg.flags & RST:
            assert not seg.payload
            return
        if seg.flags & SYN:
            assert seg.seq == tcb.iss and not seg.payload
        assert seq_le(seq_add(seg.seq, seg.seg_len), tcb.snd_max), \
            f"{seg} goes beyond SND.MAX={tcb.snd_max}"
        if tcb.state is State.TIME_WAIT:
            assert seg.flags & (SYN | FIN) == 0 and not seg.payload, f"{seg} in TIME-WAIT"
        if seg.payload:
            off = seq_diff(seg.seq, seq_add(tcb.iss, 1))
            n = len(seg.payload)
            assert off >= 0 and off + n <= self.written, \
                f"{seg} carries stream offsets {off}..{off + n}, written {self.written}"
            assert bytes(seg.payload) == app_bytes(off, n), f"{seg} carries the wrong bytes"
        if seg.flags & FIN:
            assert self.fin_requested, f"{seg}: FIN without a close"
            assert seq_add(seg.seq, len(seg.payload)) == seq_add(tcb.iss, 1 + self.written), \
                f"{seg}: the FIN is not after the last byte written ({self.written})"
        if seg.flags & ACK:
            shift = 0 if seg.flags & SYN else tcb.rcv_wscale
            edge = seq_add(seg.ack, seg.window << shift)
            if self.max_edge is not None:
                assert seq_ge(edge, self.max_edge), (
                    f"{seg}: advertised right edge {edge} left of {self.max_edge}")
            if self.max_edge is None or seq_gt(edge, self.max_edge):
                self.max_edge = edge

    # -- invariants -------------------------------------------------------------

    def check(self) -> None:
        tcb = self.tcb
        if self.was_closed:
            assert tcb.state is State.CLOSED, f"left CLOSED for {tcb.state}"
        self.was_closed = tcb.state is State.CLOSED
        self._check_events()
        check_tcb(tcb, self.max_write)

    def _check_events(self) -> None:
        for e in self.tcb.take_events():
            assert not self.terminated, f"event {e} after Terminated"
            if isinstance(e, ev.Terminated):
                self.terminated = True
        if self.tcb.state is State.CLOSED:
            assert self.terminated, "CLOSED without a Terminated event"


# ------------------------------------------------------------------ invariants


def check_tcb(tcb: Tcb, max_write: int) -> None:
    """The invariants of one connection that need no history (see :data:`INVARIANTS`);
    ``max_write`` is the largest single write the application makes."""
    state = tcb.state
    assert state in TRANSITIONS
    deadline = tcb.next_deadline()
    assert deadline is None or math.isfinite(deadline), f"deadline {deadline}"
    if state is State.CLOSED:
        assert deadline is None, f"CLOSED with a timer: {tcb.timers}"
    _check_receive(tcb)
    if state is State.CLOSED:
        return
    assert seq_le(tcb.snd_una, tcb.snd_max), f"SND.UNA {tcb.snd_una} > SND.MAX"
    _check_send_buffer(tcb, max_write)
    _check_scoreboard(tcb)
    assert tcb.cc.cwnd >= tcb.cc.mss, f"cwnd {tcb.cc.cwnd} < one segment ({tcb.cc.mss})"


def _check_send_buffer(tcb: Tcb, max_write: int) -> None:
    buf = tcb.sndbuf
    assert -1 <= seq_diff(buf.seq, tcb.snd_una) <= 1, \
        f"send buffer starts at {buf.seq}, SND.UNA {tcb.snd_una}"
    in_flight_from_buf = seq_diff(tcb.snd_max, buf.seq)
    assert in_flight_from_buf <= len(buf.data) + 1, \
        f"SND.MAX {tcb.snd_max} beyond the buffer ({buf.seq} + {len(buf.data)} + FIN)"
    assert len(buf.data) <= tcb.cfg.snd_buf + max_write, \
        f"send buffer {len(buf.data)} > snd_buf {tcb.cfg.snd_buf} + one write"

def _check_receive(tcb: Tcb) -> None:
    q = tcb.reassembly
    held = len(tcb.rcv_buf.data) + q.nbytes
    assert held <= tcb.cfg.rcv_buf, (
        f"receive buffer {len(tcb.rcv_buf.data)} + reassembly {q.nbytes} > "
        f"rcv_buf {tcb.cfg.rcv_buf}")
    runs = [(r.seq, r.size) for r in q._runs]
    for r in q._runs:
        assert r.alive and r.size == sum(len(p) for p in r.pieces), (
            f"run at {r.seq}: size {r.size}, pieces {[len(p) for p in r.pieces]}")
    assert q.nbytes == sum(n for _, n in runs), "reassembly nbytes != its runs"
    assert q.pieces == sum(len(r.pieces) for r in q._runs) <= q.max_pieces, (
        f"{q.pieces} pieces counted, {sum(len(r.pieces) for r in q._runs)} queued, "
        f"cap {q.max_pieces}")
    blocks = q.sack_blocks(len(runs) + 1)
    assert len(set(blocks)) == len(blocks) and all(
        (s, seq_diff(e, s)) in runs for s, e in blocks), (
        f"SACK blocks {blocks} are not distinct queued runs {runs}")
    state = tcb.state
    if state in (State.SYN_SENT, State.CLOSED):
        return
    fin_in = state in (State.CLOSE_WAIT, State.CLOSING, State.LAST_ACK, State.TIME_WAIT)
    fin = q.fin_seq
    if fin is not None:
        assert seq_gt(fin, tcb.rcv_nxt), f"recorded FIN {fin} not after RCV.NXT {tcb.rcv_nxt}"
    prev_end: int | None = None
    for start, size in runs:
        assert size > 0, "an empty run in the reassembly queue"
        end = seq_add(start, size)
        assert seq_gt(start, tcb.rcv_nxt), (
            f"{tcb!r}: queued run at {start} not after RCV.NXT (runs {runs}, FIN at {fin})")
        assert seq_le(end, tcb.rcv_adv), f"run ending {end} beyond the window {tcb.rcv_adv}"
        if fin is not None:
            assert seq_le(end, fin), f"run ending {end} beyond the peer's FIN at {fin}"
        if prev_end is not None:
            assert seq_lt(prev_end, start), "reassembly runs touch or overlap"
        prev_end = end
    assert seq_diff(tcb.rcv_adv, tcb.rcv_nxt) >= (-1 if fin_in else 0), (
        f"RCV.NXT {tcb.rcv_nxt} beyond the advertised edge {tcb.rcv_adv}")

def _check_scoreboard(tcb: Tcb) -> None:
    sb = tcb.scoreboard
    recs = sb.recs
    sacked = lost = 0
    for rec in recs:
        assert seq_lt(rec.start, rec.end), f"empty or inverted record {rec}"
        assert not (rec.sacked and rec.lost), f"record both SACKed and lost: {rec}"
        sacked += rec.length if rec.sacked else 0
        lost += rec.length if rec.lost else 0
    for a, b in pairwise(recs):
        assert a.end == b.start, f"records not contiguous: {a} then {b}"
    assert sb.sacked_bytes == sacked, f"sacked_bytes {sb.sacked_bytes} != {sacked}"
    assert sb.lost_bytes == lost, f"lost_bytes {sb.lost_bytes} != {lost}"
    if tcb.state is State.TIME_WAIT or not seq_gt(tcb.snd_una, tcb.iss):
        return  # no data sent before the SYN is acknowledged; TIME-WAIT holds none
    if recs:
        assert recs[0].start == tcb.snd_una and recs[-1].end == tcb.snd_max, (
            f"records cover {recs[0].start}..{recs[-1].end}, "
            f"not [SND.UNA, SND.MAX) = [{tcb.snd_una}, {tcb.snd_max})")
    else:
        assert tcb.snd_una == tcb.snd_max, (
            f"{seq_diff(tcb.snd_max, tcb.snd_una)} bytes in flight with no record")
