"""Handshake ladders: each connection's opening and teardown, segment by segment.

A :class:`LadderBook` is fed by the :class:`~tcpstack.observe.core.Observatory` with
the segments of connections that are opening or closing (and of segments that
found no connection), together with the counter names the engine incremented for
each segment -- its *reasons*. It records them as :class:`Rung` values and, when
a phase is over, hands the ladder as a JSON-ready dict to its ``emit`` callback:

* ``opening`` -- from the first SYN to the connection being synchronized (for an
  active open: including our ACK), or to its failure; with what was negotiated
  (effective MSS, window scale shifts, SACK, timestamps, the first RTT sample);
* ``closing`` -- from the first FIN or RST to TIME-WAIT or CLOSED (at most
  :data:`MAX_CLOSING_RUNGS` rungs; the rest are counted as ``omitted``);
* ``refused`` -- a segment that found no connection, and the RST (or nothing)
  that answered it, with the reason;
* ``failed`` -- a connection that ended while still opening (refused, reset,
  timed out);
* ``tls`` -- the TLS handshake above TCP (:mod:`tcpstack.observe.tls`): one
  arrow per flight, what the ClientHello offered and the ServerHello chose, and
  the time each flight took.

:func:`render_text` draws such a dict as a two-column, time-stamped ladder;
:func:`render_json` gives it as one JSON line. Both run anywhere (the ``tcpstack
trace`` client renders what the daemon sends). Nothing here does I/O or reads a
clock: times are the stack's ``now`` plus the ``epoch`` offset given.

Bounds: at most :data:`MAX_OPEN_LADDERS` ladders in progress (beyond, new ones
are not started and counted in :attr:`LadderBook.skipped`), stateless SYN-cookie
exchanges remembered for at most :data:`MAX_COOKIE_LADDERS` 4-tuples.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from tcpstack.observe.reasons import TERMINATION, describe
from tcpstack.tcp.info import ecn_mode
from tcpstack.tcp.seq import MASK
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import ACK, AE, CWR, ECE, FIN, PSH, RST, SYN, URG, TcpOptions

Key = tuple[int, int, int, int]
Ladder = dict[str, Any]
Emit = Callable[[Ladder], None]

MAX_OPEN_LADDERS: Final = 16384
MAX_COOKIE_LADDERS: Final = 1024
MAX_CLOSING_RUNGS: Final = 24
MAX_OPENING_RUNGS: Final = 24

OPENING_STATES: Final = frozenset({State.LISTEN, State.SYN_SENT, State.SYN_RECEIVED})
CLOSED_BY_PEER_FIN: Final = frozenset({State.CLOSE_WAIT, State.LAST_ACK, State.CLOSING,
                                       State.TIME_WAIT})

_FLAG_WORDS: Final = ((SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (PSH, "PSH"), (ACK, "ACK"),
                      (URG, "URG"), (ECE, "ECE"), (CWR, "CWR"), (AE, "AE"))


def _flag_words(flags: int) -> str:
    return ",".join(word for bit, word in _FLAG_WORDS if flags & bit) or "none"


_FLAG_TEXT: Final = tuple(_flag_words(f) for f in range(512))


def flag_words(flags: int) -> str:
    """``SYN,ACK``-style flag names (AE too: RFC 9768's ninth flag)."""
    return _FLAG_TEXT[flags & 0x1FF]


def endpoint(ip: int, port: int) -> str:
    """``a.b.c.d:port`` (formatted directly: ``ipaddress`` is slow for this), or
    ``[v6::address]:port`` for IPv6 (addresses above ``0xFFFFFFFF``)."""
    if ip > 0xFFFFFFFF:
        return f"[{ipaddress.IPv6Address(ip)}]:{port}"
    return f"{ip >> 24 & 255}.{ip >> 16 & 255}.{ip >> 8 & 255}.{ip & 255}:{port}"


def parse_endpoint(text: str) -> tuple[int, int]:
    """``(address, port)`` as the stack holds them from ``IP:PORT`` or
    ``[IPv6]:PORT`` in any spelling (``[FD00:0::1]:80`` is ``[fd00::1]:80``); an
    IPv4-mapped IPv6 address means its IPv4 address, as in the stack. The inverse
    of :func:`endpoint`. Raises ValueError with a one-line message."""
    host, sep, port = text.strip().rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if not sep or not host or (":" in host and not bracketed):
        raise ValueError(f"expected IP:PORT or [IPv6]:PORT, not {text!r}")
    try:
        address = ipaddress.IPv6Address(host[1:-1]) if bracketed else \
            ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"invalid address {host!r} in {text!r}") from None
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid port {port!r} in {text!r}")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return int(address.ipv4_mapped), int(port)
    return int(address), int(port)


def options_json(opts: TcpOptions) -> dict[str, Any]:
    """The options a segment carried, only those present."""
    out: dict[str, Any] = {}
    if opts.mss is not None:
        out["mss"] = opts.mss
    if opts.wscale is not None:
        out["wscale"] = opts.wscale
    if opts.sack_permitted:
        out["sack_permitted"] = True
    if opts.timestamps is not None:
        out["tsval"], out["tsecr"] = opts.timestamps
    if opts.sack_blocks:
        out["sack"] = [list(b) for b in opts.sack_blocks]
    if opts.md5:
        out["md5"] = True
    if opts.ao is not None:
        out["ao"] = list(opts.ao)
    if opts.tfo is not None:
        # The cookie's length only: a client's cookie lets whoever can spoof its
        # address have a request taken in a SYN (RFC 7413 5.1).
        out["tfo"] = f"cookie {len(opts.tfo)} bytes" if opts.tfo else "request"
    if opts.accecn is not None:
        # RFC 9768 3.2.3: the fields as sent (ECT(0) and ECT(1) bytes start at 1).
        out["accecn"] = {k: v for k, v in zip(("ee0b", "eceb", "ee1b"), opts.accecn,
                                              strict=True) if v is not None}
    return out


@dataclass(slots=True)
class Rung:
    """One segment on a ladder. ``direction``: ``in`` (peer to stack) or ``out``."""

    t: float
    direction: str
    flags: int
    seq: int
    ack: int
    window: int
    length: int
    options: TcpOptions
    notes: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    shift: int = 0  # window scale shift that applies to ``window``


class _Ladder:
    """A ladder in progress (see the module docstring for its phases)."""

    __slots__ = ("closing", "cookie", "established_at", "id", "key", "local_isn", "omitted",
                 "phase", "remote_isn", "role", "rungs", "simultaneous", "start", "syn_seqs")

    def __init__(self, ident: int, key: Key, role: str, now: float) -> None:
        self.id = ident
        self.key = key
        self.role = role
        self.start = now
        self.phase = "opening"
        self.rungs: list[Rung] = []
        self.closing: list[Rung] = []
        self.local_isn: int | None = None
        self.remote_isn: int | None = None
        self.omitted = 0
        self.cookie = False
        self.established_at: float | None = None
        self.simultaneous = False
        # (direction, SYN/ACK flags, seq) of the SYNs seen: the same again is a
        # retransmission (a SYN,ACK after a SYN with the same ISN, in a
        # simultaneous open, is not).
        self.syn_seqs: set[tuple[str, int, int]] = set()

    def add(self, rung: Rung, rungs: list[Rung], limit: int) -> None:
        if rung.flags & SYN:
            mark = (rung.direction, rung.flags & (SYN | ACK), rung.seq)
            if mark in self.syn_seqs:
                rung.notes.append("retransmission")
            self.syn_seqs.add(mark)
            if rung.direction == "out":
                self.local_isn = rung.seq
            else:
                self.remote_isn = rung.seq
        if len(rungs) < limit:
            rungs.append(rung)
        else:
            self.omitted += 1


class LadderBook:
    """Builds ladders from what the observatory sees; ``emit`` gets each finished phase.

    ``epoch`` is added to the stack's clock to give wall-clock times; ``next_id``
    numbers connections (shared with the observatory so ids agree everywhere).
    """

    def __init__(self, emit: Emit, epoch: float = 0.0,
                 next_id: Callable[[], int] | None = None) -> None:
        self.emit = emit
        self.epoch = epoch
        self._ids = next_id or _counter()
        self.open: dict[Key, _Ladder] = {}
        self.cookies: OrderedDict[Key, _Ladder] = OrderedDict()
        self.pending_refusals: dict[Key, _Ladder] = {}
        self.skipped = 0

    # ------------------------------------------------------------- questions

    def wants(self, key: Key, flags: int, has_tcb: bool) -> bool:
        """Whether a segment for ``key`` belongs on a ladder (then the observatory
        records the reasons the engine counted for it)."""
        if flags & (SYN | FIN | RST) or not has_tcb:
            return True
        ladder = self.open.get(key)
        return ladder is not None and ladder.phase != "open"

    # -------------------------------------------------------------- feeding

    def segment_in(self, key: Key, flags: int, seq: int, ack: int, window: int, length: int,
                   options: TcpOptions, tcb: Tcb | None, reasons: list[str], now: float,
                   ident: int | None = None) -> None:
        """A segment from the peer was processed; ``tcb`` is its connection now."""
        shift = tcb.snd_wscale if tcb is not None and tcb.wscale_ok and not flags & SYN else 0
        rung = Rung(now, "in", flags, seq, ack, window, length, options, [], reasons, shift)
        ladder = self.open.get(key)
        if ladder is None and tcb is not None and key in self.cookies \
                and "tcp_syncookie_accepted" in reasons:
            ladder = self.cookies.pop(key)
            self.open[key] = ladder
        if ladder is None:
            if tcb is None:
                self._stray(key, rung, reasons, now)
                return
            if not flags & SYN and tcb.state not in OPENING_STATES and not flags & (FIN | RST):
                return  # a connection that was open before we looked
            ladder = self._start(key, "passive" if tcb.listener is not None else "active", now,
                                 ident)
            if ladder is None:
                return
            if tcb.state not in OPENING_STATES:
                ladder.phase = "open"
        if tcb is None:
            self._add(ladder, rung)
            if ladder.phase == "opening" and "tcp_syncookie_sent" in reasons:
                ladder.cookie = True
                rung.notes.append("answered statelessly with a SYN cookie")
                del self.open[key]
                self._remember_cookie(key, ladder)
            return
        if ladder.phase == "acking":
            self._finish_opening(ladder, tcb, now)  # no ACK of ours came: done anyway
        if ladder.phase == "opening" and flags & SYN and not flags & ACK \
                and tcb.state is State.SYN_RECEIVED and ladder.role == "active":
            rung.notes.append("simultaneous open: their SYN crossed ours")
            ladder.simultaneous = True
        self._add(ladder, rung)
        self._advance(ladder, tcb, now)

    def segments_out(self, key: Key, tcb: Tcb, segments: Iterable[Any], now: float,
                     ident: int | None = None) -> None:
        """``tcb`` sends ``segments`` (OutSegment values)."""
        ladder = self.open.get(key)
        if ladder is None:
            first = True
            for seg in segments:
                if first and seg.flags & SYN:
                    ladder = self._start(key, "active", now, ident)
                    break
                if seg.flags & (FIN | RST):
                    ladder = self._start(key, "passive" if tcb.listener else "active", now,
                                         ident)
                    if ladder is not None:
                        ladder.phase = "open"
                    break
                first = False
            if ladder is None:
                return
        if ladder.phase == "open" and not any(s.flags & (FIN | RST) for s in segments):
            return
        shift = tcb.rcv_wscale if tcb.wscale_ok else 0
        for seg in segments:
            self._add(ladder, Rung(now, "out", seg.flags, seg.seq, seg.ack, seg.window,
                                   len(seg.payload), seg.options, [], [],
                                   0 if seg.flags & SYN else shift))
        if ladder.phase == "acking":
            self._finish_opening(ladder, tcb, now)
        if ladder.phase == "time-wait":
            self._finish_closing(ladder, tcb)
            return
        self._advance(ladder, tcb, now)

    def control_out(self, key: Key, flags: int, seq: int, ack: int, window: int,
                    options: TcpOptions, now: float) -> None:
        """A packet sent for no connection (a RST, a SYN cookie's SYN,ACK)."""
        pending = self.pending_refusals.pop(key, None)
        if pending is not None:
            pending.rungs.append(Rung(now, "out", flags, seq, ack, window, 0, options))
            self._emit_refusal(pending)
            return
        ladder = self.cookies.get(key) or self.open.get(key)
        if ladder is not None:
            self._add(ladder, Rung(now, "out", flags, seq, ack, window, 0, options,
                                   ["SYN cookie in the ISN"] if flags & SYN else []))

    def flush_refusals(self) -> None:
        """Refusals whose answer did not come (rate-limited): emit them as they are."""
        for ladder in self.pending_refusals.values():
            self._emit_refusal(ladder)
        self.pending_refusals.clear()

    def closed(self, key: Key, tcb: Tcb, now: float) -> None:
        """The connection left the table."""
        ladder = self.open.pop(key, None)
        if ladder is None:
            return
        error = _termination(tcb)
        if ladder.phase == "acking":  # synchronized; our ACK never went out
            self._finish_opening(ladder, tcb, now)
        if ladder.phase == "opening":
            self.emit(self._opening_json(ladder, tcb, "failed", TERMINATION.get(error, error)))
        elif ladder.phase == "open" and error is not None:
            # Gone without a FIN or RST on the wire (a timeout): an empty teardown
            # that says why.
            ladder.phase = "closing"
            ladder.start = now
            ladder.omitted = 0
            self.emit(self._closing_json(ladder, "timeout" if error == "timeout" else "reset",
                                         TERMINATION.get(error, str(error))))
        elif ladder.phase in ("closing", "time-wait"):
            outcome = "reset" if error in ("reset", "aborted") else \
                "timeout" if error == "timeout" else "closed"
            why = "both FINs sent and acknowledged; the connection is gone" if error is None \
                else TERMINATION.get(error, str(error))
            last = ladder.closing[-1] if ladder.closing else None
            if error is None and last is not None and last.flags & RST:
                # RFC 9293 3.10.7.4: a RST while closing ends it at once, no error.
                outcome = "reset"
                why = ("the peer answered with RST: the connection is gone"
                       if last.direction == "in" else "we sent RST: the connection is gone")
            self.emit(self._closing_json(ladder, outcome, why))

    # -------------------------------------------------------------- internals

    def _start(self, key: Key, role: str, now: float, ident: int | None) -> _Ladder | None:
        if len(self.open) >= MAX_OPEN_LADDERS:
            self.skipped += 1
            return None
        ladder = _Ladder(ident if ident is not None else self._ids(), key, role, now)
        self.open[key] = ladder
        return ladder

    def _remember_cookie(self, key: Key, ladder: _Ladder) -> None:
        self.cookies[key] = ladder
        while len(self.cookies) > MAX_COOKIE_LADDERS:
            self.cookies.popitem(last=False)
            self.skipped += 1

    def _add(self, ladder: _Ladder, rung: Rung) -> None:
        if ladder.phase in ("opening", "acking"):
            ladder.add(rung, ladder.rungs, MAX_OPENING_RUNGS)
            return
        if ladder.phase == "open" and rung.flags & (FIN | RST):
            ladder.phase = "closing"
            ladder.start = rung.t
            ladder.omitted = 0
        if ladder.phase in ("closing", "time-wait"):
            ladder.add(rung, ladder.closing, MAX_CLOSING_RUNGS)

    def _advance(self, ladder: _Ladder, tcb: Tcb, now: float) -> None:
        state = tcb.state
        if ladder.phase == "opening" and state not in OPENING_STATES \
                and state is not State.CLOSED:
            ladder.established_at = now
            last = ladder.rungs[-1] if ladder.rungs else None
            if ladder.role == "active" and not ladder.simultaneous and last is not None \
                    and last.direction == "in":
                ladder.phase = "acking"  # our ACK completes it; it goes out next
            # (In a simultaneous open the crossing SYN,ACKs complete it: RFC 9293
            # 3.5 figure 8 has no third segment.)
            else:
                self._finish_opening(ladder, tcb, now)
        if ladder.phase == "closing" and state is State.TIME_WAIT:
            if tcb.ack_pending:
                ladder.phase = "time-wait"  # our ACK of their FIN goes out next
            else:
                self._finish_closing(ladder, tcb)

    def _finish_closing(self, ladder: _Ladder, tcb: Tcb) -> None:
        del self.open[ladder.key]
        self.emit(self._closing_json(
            ladder, "time-wait",
            f"TIME-WAIT for 2*MSL = {2 * tcb.cfg.msl:g} s, then the connection is gone"))

    def _finish_opening(self, ladder: _Ladder, tcb: Tcb, now: float) -> None:
        ladder.phase = "open"
        self.emit(self._opening_json(ladder, tcb, "established", None))
        ladder.rungs = []
        ladder.syn_seqs = set()

    def _stray(self, key: Key, rung: Rung, reasons: list[str], now: float) -> None:
        ladder = _Ladder(self._ids(), key, "none", now)
        ladder.rungs.append(rung)
        ladder.phase = "refused"
        if "tcp_rst_sent" in reasons or "tcp_syncookie_sent" in reasons:
            if "tcp_syncookie_sent" in reasons:
                ladder.cookie = True
                ladder.phase = "opening"
                ladder.role = "passive"
                ladder.remote_isn = rung.seq
                rung.notes.append("answered statelessly with a SYN cookie")
                self._remember_cookie(key, ladder)
                return
            old = self.pending_refusals.pop(key, None)
            if old is not None:
                self._emit_refusal(old)
            self.pending_refusals[key] = ladder  # its RST follows in the control packets
            return
        self._emit_refusal(ladder)

    def _emit_refusal(self, ladder: _Ladder) -> None:
        first = ladder.rungs[0]
        why = "; ".join(describe(r) for r in first.reasons) or "dropped"
        ladder.remote_isn = first.seq if first.flags & SYN else None
        outcome = "refused" if first.flags & SYN else "no connection"
        doc = self._base_json(ladder, "refused")
        doc.update(outcome=outcome, why=why, events=self._events(ladder, ladder.rungs))
        self.emit(doc)

    # ----------------------------------------------------------------- JSON

    def _base_json(self, ladder: _Ladder, phase: str) -> Ladder:
        lip, lport, rip, rport = ladder.key
        return {"type": "ladder", "phase": phase, "id": ladder.id,
                "local": endpoint(lip, lport), "remote": endpoint(rip, rport),
                "role": ladder.role, "start": round(ladder.start + self.epoch, 6),
                "isn": {"local": ladder.local_isn, "remote": ladder.remote_isn}}

    def _events(self, ladder: _Ladder, rungs: list[Rung]) -> list[dict[str, Any]]:
        out = []
        for r in rungs:
            if r.direction == "in":
                rel_seq, rel_ack = _rel(r.seq, ladder.remote_isn), _rel(r.ack, ladder.local_isn)
            else:
                rel_seq, rel_ack = _rel(r.seq, ladder.local_isn), _rel(r.ack, ladder.remote_isn)
            ev: dict[str, Any] = {
                "t": round(r.t - ladder.start, 6), "dir": r.direction,
                "flags": flag_words(r.flags), "seq": r.seq, "rel_seq": rel_seq,
                "ack": r.ack if r.flags & ACK else None,
                "rel_ack": rel_ack if r.flags & ACK else None,
                "win": r.window << r.shift, "len": r.length,
                "options": options_json(r.options)}
            if r.shift:
                ev["win_field"] = r.window
                ev["wscale"] = r.shift
            if r.notes:
                ev["notes"] = list(r.notes)
            if r.reasons:
                ev["reasons"] = [{"counter": c, "why": describe(c)} for c in r.reasons]
            out.append(ev)
        return out

    def _opening_json(self, ladder: _Ladder, tcb: Tcb, outcome: str, why: str | None) -> Ladder:
        doc = self._base_json(ladder, "opening")
        doc["events"] = self._events(ladder, ladder.rungs)
        doc["outcome"] = outcome
        if ladder.cookie:
            doc["syn_cookie"] = True
        if ladder.simultaneous:
            doc["simultaneous_open"] = True
        if why:
            doc["why"] = why
        if ladder.omitted:
            doc["omitted"] = ladder.omitted
        if outcome == "established":
            doc["negotiated"] = negotiated(tcb, ladder.rungs)
            if ladder.established_at is not None and ladder.rungs:
                doc["negotiated"]["handshake_ms"] = round(
                    (ladder.established_at - ladder.rungs[0].t) * 1000, 3)
        return doc

    def tls(self, key: Key, ident: int, role: str, start: float,
            result: dict[str, Any]) -> None:
        """Emit the ``tls`` phase of connection ``ident`` from a
        :class:`~tcpstack.observe.tls.TlsWatch` result; ``start`` is when the
        ClientHello began (the stack's clock)."""
        ladder = _Ladder(ident, key, role, start)
        doc = self._base_json(ladder, "tls")
        del doc["isn"]
        client_dir = result.get("client_dir") or "in"
        server_dir = "out" if client_dir == "in" else "in"
        events = []
        for flight in result["flights"]:
            events.append({
                "t": flight["t"], "dir": client_dir if flight["sender"] == "client"
                else server_dir, "flags": "TLS", "sender": flight["sender"],
                "label": _short_records(flight["label"]), "summary": flight["label"],
                "records": flight["records"], "bytes": flight["bytes"],
                "after_ms": flight["after_ms"], "took_ms": flight["took_ms"]})
        doc["events"] = events
        doc["outcome"] = result["outcome"]
        if result.get("why"):
            doc["why"] = result["why"]
        doc["client"] = "peer" if client_dir == "in" else "stack"
        for part in ("client_hello", "server_hello", "handshake_ms"):
            if part in result:
                doc[part] = result[part]
        self.emit(doc)

    def _closing_json(self, ladder: _Ladder, outcome: str, why: str) -> Ladder:
        doc = self._base_json(ladder, "closing")
        doc.update(events=self._events(ladder, ladder.closing), outcome=outcome, why=why)
        if ladder.omitted:
            doc["omitted"] = ladder.omitted
        return doc


def _counter() -> Callable[[], int]:
    n = 0

    def nxt() -> int:
        nonlocal n
        n += 1
        return n

    return nxt


def _rel(value: int, isn: int | None) -> int | None:
    return None if isn is None else (value - isn) & MASK


def _termination(tcb: Tcb) -> str | None:
    for e in reversed(tcb.events):
        if type(e).__name__ == "Terminated":
            error: str | None = getattr(e, "error", None)
            return error
    return None


def handshake_rtt(rungs: list[Rung]) -> float | None:
    """Seconds from our SYN (or SYN,ACK) to the segment that acknowledged it, on the
    ladder's clock; None if ours was sent more than once (Karn's rule, RFC 6298 3)."""
    ours = [r for r in rungs if r.direction == "out" and r.flags & SYN]
    if len(ours) != 1:
        return None
    syn = ours[0]
    want = (syn.seq + 1) & MASK
    for r in rungs:
        if r.direction == "in" and r.t >= syn.t and r.flags & ACK and r.ack == want:
            return r.t - syn.t
    return None


def negotiated(tcb: Tcb, rungs: list[Rung]) -> dict[str, Any]:
    """What the handshake agreed, read from the connection and the SYNs' options."""
    peer_syn = next((r for r in rungs if r.direction == "in" and r.flags & SYN), None)
    our_syn = next((r for r in rungs if r.direction == "out" and r.flags & SYN), None)
    srtt = tcb.rtt.srtt
    first_rtt = handshake_rtt(rungs)
    return {
        "mss": tcb.snd_mss,
        "payload_per_segment": tcb.seg_mss,
        "peer_mss_option": peer_syn.options.mss if peer_syn is not None else None,
        "our_mss_option": our_syn.options.mss if our_syn is not None else None,
        "window_scaling": tcb.wscale_ok,
        "peer_wscale": tcb.snd_wscale if tcb.wscale_ok else None,
        "our_wscale": tcb.rcv_wscale if tcb.wscale_ok else None,
        "sack": tcb.sack_ok,
        "timestamps": tcb.ts_ok,
        "md5": tcb.md5,
        "ao": tcb.auth.info() if tcb.auth is not None else None,
        "ecn": tcb.ecn_ok,
        "ecn_mode": ecn_mode(tcb),
        "fastopen": tcb.tfo.result or None if tcb.tfo is not None else None,
        "initial_rtt_ms": None if first_rtt is None else round(first_rtt * 1000, 3),
        "srtt_ms": None if srtt is None else round(srtt * 1000, 3),
        "rto_ms": round(tcb.rtt.rto * 1000, 3),
        "cwnd": tcb.cc.cwnd,
        "peer_window": tcb.snd_wnd,
        "syn_retransmitted": tcb.syn_retransmitted,
    }


# ------------------------------------------------------------------- rendering

WIDTH: Final = 58  # inner width of the arrows


def _format_options(opts: dict[str, Any] | None) -> str:
    if not opts:
        return ""
    parts = []
    if "mss" in opts:
        parts.append(f"mss {opts['mss']}")
    if opts.get("sack_permitted"):
        parts.append("sackOK")
    if "tsval" in opts:
        parts.append(f"TS val {opts['tsval']} ecr {opts['tsecr']}")
    if "wscale" in opts:
        parts.append(f"wscale {opts['wscale']}")
    if "sack" in opts:
        parts.extend(f"sack {left}-{right}" for left, right in opts["sack"])
    if opts.get("md5"):
        parts.append("md5 signed")
    if "ao" in opts:
        parts.append(f"TCP-AO keyid {opts['ao'][0]} rnext {opts['ao'][1]}")
    if "tfo" in opts:
        parts.append("TFO cookie request" if opts["tfo"] == "request"
                     else f"TFO {opts['tfo']}")
    if "accecn" in opts:
        fields = " ".join(f"{k.upper()} {v}" for k, v in opts["accecn"].items())
        parts.append(f"AccECN {fields}" if fields else "AccECN")
    return ", ".join(parts)


def _label(ev: dict[str, Any]) -> str:
    if "label" in ev:
        return str(ev["label"])
    seq = ev["rel_seq"]
    text = f"{ev['flags']} seq={ev['seq'] if seq is None else seq}"
    if ev["ack"] is not None:
        ack = ev["rel_ack"]
        text += f" ack={ev['ack'] if ack is None else ack}"
    text += f" win={ev['win']}"
    if ev["len"]:
        text += f" len={ev['len']}"
    return text


_DASHES: Final = "-" * WIDTH


def _arrow(ev: dict[str, Any]) -> str:
    label = f" {_label(ev)} "
    if len(label) > WIDTH - 6:
        label = label[:WIDTH - 7] + "~ "
    fill = _DASHES[:WIDTH - 4 - len(label)]
    if ev["dir"] == "in":
        return f"|--{label}{fill}>|"
    return f"|<{fill}{label}--|"


_stamp_cache: list[Any] = [None, ""]  # [whole second, its text]


def _stamp(epoch: float) -> str:
    whole = int(epoch)
    if _stamp_cache[0] != whole:  # ladders come many per second: format each second once
        _stamp_cache[0] = whole
        _stamp_cache[1] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole))
    return f"{_stamp_cache[1]}.{round((epoch - whole) * 1e6):06d} UTC"


_TITLE: Final = {"opening": "opening", "closing": "teardown", "refused": "no connection",
                 "tls": "TLS handshake"}
_ROLE: Final = {"passive": "they connect to us", "active": "we connect to them"}
_DETAIL: Final = f"   {'':9}  |   "


def render_text(doc: Ladder) -> str:
    """A ladder dict (from :class:`LadderBook`) as a two-column terminal drawing."""
    lines: list[str] = []
    remote, local = doc["remote"], doc["local"]
    phase = doc["phase"]
    role = _ROLE.get(doc["role"], "")
    ends = f"{local} -> {remote}" if doc["role"] == "active" else f"{remote} -> {local}"
    lines.append(f"== {ends}  {_TITLE.get(phase, phase)}"
                 f"{'  (' + role + ')' if role and phase == 'opening' else ''}"
                 f"  #{doc['id']}  {_stamp(doc['start'])}")
    if phase == "opening" or phase == "refused":
        isn = doc.get("isn", {})
        parts = []
        if isn.get("remote") is not None:
            parts.append(f"peer ISN {isn['remote']}")
        if isn.get("local") is not None:
            parts.append(f"stack ISN {isn['local']}")
        if parts:
            lines.append("   " + ", ".join(parts) + "  (seq/ack below: relative to the ISNs)")
    lines.append(f"   {'t (ms)':>9}  {remote:<{WIDTH // 2}}{local:>{WIDTH - WIDTH // 2 + 2}}")
    if phase == "tls":
        lines.extend(_tls_lines(doc))
        return "\n".join(lines)
    detail = _DETAIL
    for ev in doc.get("events", ()):
        lines.append(f"   {ev['t'] * 1000:9.3f}  {_arrow(ev)}")
        opts = _format_options(ev.get("options"))
        ack = ev["ack"]
        abs_part = f"abs seq {ev['seq']}" if ack is None else f"abs seq {ev['seq']} ack {ack}"
        text = f"{opts}; {abs_part}" if opts else abs_part
        if "win_field" in ev:
            text += f"; win field {ev['win_field']} << {ev['wscale']}"
        lines.append(detail + text)
        if "notes" in ev:
            lines.extend(f"{detail}** {note}" for note in ev["notes"])
        if "reasons" in ev:
            lines.extend(f"{detail}[{r['counter']}] {r['why']}" for r in ev["reasons"])
    if doc.get("omitted"):
        lines.append(f"   ... {doc['omitted']} more segment(s) not shown")
    why = doc.get("why")
    lines.append(f"   => {doc.get('outcome', '')}{': ' + why if why else ''}")
    neg = doc.get("negotiated")
    if neg:
        lines.extend("   " + line for line in describe_negotiated(neg))
    return "\n".join(lines)


_SHORT: Final = (("ChangeCipherSpec", "CCS"), ("ServerKeyExchange", "SKE"),
                 ("ClientKeyExchange", "CKE"), ("ServerHelloDone", "Done"),
                 ("NewSessionTicket", "Ticket"), ("Certificate", "Cert"),
                 ("EncryptedExtensions", "EE"))


def _short_records(summary: str) -> str:
    """A flight's records, abbreviated to fit on an arrow (the detail line has them
    in full)."""
    for name, short in _SHORT:
        summary = summary.replace(name, short)
    return summary


def _tls_lines(doc: Ladder) -> list[str]:
    """The flights of a ``tls`` ladder, what each hello said, and the outcome."""
    lines = []
    ch, sh = doc.get("client_hello"), doc.get("server_hello")
    for i, ev in enumerate(doc.get("events", [])):
        lines.append(f"   {ev['t'] * 1000:9.3f}  {_arrow(ev)}")
        details = []
        if i == 0 and ch is not None:
            details.extend(describe_client_hello(ch))
        if sh is not None and ev["records"] and ev["records"][0].startswith("ServerHello"):
            details.extend(describe_server_hello(sh))
        details.append(f"{ev['summary']}: {len(ev['records'])} record(s), {ev['bytes']} bytes")
        if i:
            details.append(f"{ev['after_ms']:.3f} ms after the previous flight; its records "
                           f"arrived over {ev['took_ms']:.3f} ms")
        lines.extend(f"   {'':9}  |   {d}" for d in details)
    outcome, why = doc.get("outcome", ""), doc.get("why")
    summary = f"   => TLS {outcome}"
    if outcome == "established" and sh is not None:
        summary += f": {sh.get('version')}, {sh.get('cipher')}"
        if sh.get("group"):
            summary += f", group {sh['group']}"
        summary += f", in {doc.get('handshake_ms', 0):.3f} ms"
    if why:
        summary += f": {why}"
    lines.append(summary)
    if outcome == "established" and sh is not None and "alpn" not in sh:
        lines.append("      (the chosen ALPN protocol travels encrypted in TLS 1.3)"
                     if sh.get("version") == "TLS 1.3" else "      (no ALPN chosen)")
    return lines


def describe_client_hello(ch: dict[str, Any]) -> list[str]:
    """A ClientHello's offer as short lines."""
    out = []
    first = [f"SNI {ch['sni']}" if "sni" in ch else "no SNI"]
    if "alpn" in ch:
        first.append("ALPN " + ", ".join(ch["alpn"]))
    out.append("ClientHello: " + "; ".join(first))
    versions = ch.get("versions") or [ch.get("legacy_version", "?")]
    out.append("  versions " + ", ".join(versions) + "; groups " +
               ", ".join(ch.get("groups", [])[:6]) +
               (" ..." if len(ch.get("groups", [])) > 6 else "") +
               ("; key shares " + ", ".join(ch["key_shares"]) if ch.get("key_shares") else ""))
    suites = ch.get("cipher_suites", [])
    out.append(f"  {len(suites)} cipher suites: " + ", ".join(suites[:3]) +
               (" ..." if len(suites) > 3 else ""))
    return out


def describe_server_hello(sh: dict[str, Any]) -> list[str]:
    """What a ServerHello chose, in one line."""
    if sh.get("hello_retry_request"):
        return ["HelloRetryRequest: the server wants a key share for another group"]
    text = f"ServerHello: {sh.get('version')}, {sh.get('cipher')}"
    if sh.get("group"):
        text += f", group {sh['group']}"
    if sh.get("alpn"):
        text += f", ALPN {sh['alpn']}"
    return [text]


def describe_negotiated(neg: dict[str, Any]) -> list[str]:
    """The negotiated parameters as short lines of text."""
    mss = f"MSS {neg['mss']} (payload {neg['payload_per_segment']} per segment"
    costs = (["12 bytes go to the timestamp option"] if neg["timestamps"] else []) + \
        (["20 bytes go to the MD5 signature"] if neg.get("md5") else []) + \
        (["16 bytes go to TCP-AO"] if neg.get("ao") else [])
    mss += f", {' and '.join(costs)})" if costs else ")"
    offered = f"offered: peer {neg['peer_mss_option']}, stack {neg['our_mss_option']}"
    if neg["window_scaling"]:
        ws = f"window scaling on: peer shifts by {neg['peer_wscale']}, we by {neg['our_wscale']}"
    else:
        ws = "window scaling off (both SYNs must carry it)"
    rtt = neg["initial_rtt_ms"]
    rtt_text = f"initial RTT sample {rtt:.3f} ms" if rtt is not None else \
        "no initial RTT sample (a SYN was retransmitted: Karn's rule)"
    srtt = neg.get("srtt_ms")
    if srtt is not None:
        rtt_text += f" (the stack's SRTT, on the event loop's clock: {srtt:.3f} ms)"
    out = [f"negotiated: {mss}; {offered}",
           f"            {ws}",
           f"            SACK {'on' if neg['sack'] else 'off'}, "
           f"timestamps {'on' if neg['timestamps'] else 'off'}, "
           f"{_ecn_text(neg)}"
           f"{'TCP-MD5 signed (RFC 2385), ' if neg.get('md5') else ''}"
           f"{_tfo_text(neg.get('fastopen'))}"
           f"{_ao_text(neg.get('ao'))}{rtt_text}, "
           f"RTO {neg['rto_ms']:.0f} ms, cwnd {neg['cwnd']} bytes"]
    if "handshake_ms" in neg:
        out[-1] += f", handshake took {neg['handshake_ms']:.3f} ms"
    return out


def _ecn_text(neg: dict[str, Any]) -> str:
    if not neg.get("ecn"):
        return ""
    if neg.get("ecn_mode") == "accecn":
        return "Accurate ECN (RFC 9768), "
    return "ECN on (RFC 3168), "


def _tfo_text(result: str | None) -> str:
    return f"Fast Open (RFC 7413): {result}, " if result else ""


def _ao_text(ao: dict[str, Any] | None) -> str:
    if not ao:
        return ""
    return (f"TCP-AO (RFC 5925) {ao['algorithm']}, sending with key {ao['keyid']}, "
            f"asking for {ao['rnext']}, ")


def render_json(doc: Ladder) -> str:
    """One JSON line."""
    text: str = json.dumps(doc, separators=(",", ":"))
    return text


__all__ = ["LadderBook", "Rung", "describe_client_hello", "describe_negotiated",
           "describe_server_hello", "flag_words", "negotiated", "render_json", "render_text"]
