"""The connection table (``tcpstack ss``): one row per connection, and its detail.

:func:`rows` reads the connections' own variables (the TCB fields are public)
plus what the :class:`~tcpstack.observe.core.Observatory` adds (age, and in full
mode the retransmissions it saw and byte counts beyond 4 GiB). Rows are
JSON-ready dicts; :func:`render_rows` prints them like ``ss -tin``.

Filters, as ``ss`` has them: ``state`` (a state name such as ``established``,
or ``connected``, ``synchronized``, ``all``), ``port`` (local or remote port),
``sport``/``dport`` (local/remote), ``address`` (``IP:PORT`` of either end).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, Final

from tcpstack.observe.core import ConnInfo, Observatory, bytes_acked, bytes_received
from tcpstack.observe.ladder import endpoint
from tcpstack.stack import Stack
from tcpstack.tcp.seq import MASK
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb

Row = dict[str, Any]

STATE_NAMES: Final = {s.value.lower(): s for s in State}
STATE_NAMES.update({s.name.lower(): s for s in State})
GROUPS: Final[dict[str, frozenset[State]]] = {
    "all": frozenset(State),
    "connected": frozenset(State) - {State.LISTEN, State.SYN_SENT, State.CLOSED},
    "synchronized": frozenset(State) - {State.LISTEN, State.SYN_SENT, State.SYN_RECEIVED,
                                        State.CLOSED},
}


def states_for(name: str) -> frozenset[State]:
    """The states a ``--state`` filter name stands for; ValueError if unknown."""
    key = name.strip().lower()
    if key in GROUPS:
        return GROUPS[key]
    if key in STATE_NAMES:
        return frozenset({STATE_NAMES[key]})
    known = sorted({s.value.lower() for s in State} | set(GROUPS))
    raise ValueError(f"unknown state {name!r} (known: {', '.join(known)})")




def row(tcb: Tcb, info: ConnInfo | None, now: float, packets: bool) -> Row:
    """One connection's row."""
    rtt = tcb.rtt
    cc = tcb.cc
    srtt = rtt.srtt
    out: Row = {
        "id": info.id if info is not None else None,
        "state": tcb.state.value,
        "local": endpoint(tcb.local_ip, tcb.local_port),
        "remote": endpoint(tcb.remote_ip, tcb.remote_port),
        "send_q": tcb.send_buffered,
        "recv_q": tcb.recv_buffered,
        "rtt_ms": None if srtt is None else round(srtt * 1000, 3),
        "rttvar_ms": round(rtt.rttvar * 1000, 3),
        "rto_ms": round(rtt.rto * 1000, 3),
        "mss": tcb.snd_mss,
        "cwnd": cc.cwnd,
        "cwnd_segments": cc.cwnd // max(1, tcb.seg_mss),
        "ssthresh": None if cc.ssthresh >= 1 << 30 else cc.ssthresh,
        "snd_wnd": tcb.snd_wnd,
        "in_flight": (tcb.snd_max - tcb.snd_una) & MASK,
        "bytes_acked": bytes_acked(tcb, info if packets else None),
        "bytes_received": bytes_received(tcb, info if packets else None),
        "retrans": info.retrans if info is not None and packets else None,
        "retrans_bytes": info.retrans_bytes if info is not None and packets else None,
        "sack": tcb.sack_ok,
        "ts": tcb.ts_ok,
        "wscale": [tcb.snd_wscale, tcb.rcv_wscale] if tcb.wscale_ok else None,
        "age_s": round(now - info.created, 3) if info is not None else None,
        "cc": type(cc).__name__.lower(),
    }
    return out


def rows(stack: Stack, observatory: Observatory | None, now: float, *,
         state: str | None = None, port: int | None = None, sport: int | None = None,
         dport: int | None = None, address: str | None = None) -> list[Row]:
    """Rows for every connection passing the filters, in table order."""
    wanted = states_for(state) if state else GROUPS["all"]
    conns = observatory.conns if observatory is not None else {}
    packets = observatory is not None and observatory.packets
    out = []
    for tcb in list(stack.tcbs.values()):
        if tcb.state not in wanted:
            continue
        if port is not None and port not in (tcb.local_port, tcb.remote_port):
            continue
        if sport is not None and tcb.local_port != sport:
            continue
        if dport is not None and tcb.remote_port != dport:
            continue
        if address is not None and address not in (endpoint(tcb.local_ip, tcb.local_port),
                                                   endpoint(tcb.remote_ip, tcb.remote_port)):
            continue
        out.append(row(tcb, conns.get(tcb), now, packets))
    return out


def listeners(stack: Stack) -> list[Row]:
    """The listening ports with their queues (as ``ss -tl``)."""
    out = []
    for port, lst in sorted(stack.listeners.items()):
        out.append({"state": "LISTEN", "local": f"*:{port}", "remote": "*:*",
                    "recv_q": lst.pending, "send_q": lst.backlog,
                    "half_open": lst.half_open})
    return out


def detail(stack: Stack, observatory: Observatory | None, now: float,
           address: str) -> list[Row]:
    """Everything about the connections with an end at ``address`` (``IP:PORT``)."""
    out = []
    conns = observatory.conns if observatory is not None else {}
    for r in rows(stack, observatory, now, address=address):
        tcb = _find(stack, r)
        if tcb is None:
            continue
        info = conns.get(tcb)
        sb = tcb.scoreboard
        r.update({
            "iss": tcb.iss, "irs": tcb.irs, "snd_una": tcb.snd_una, "snd_nxt": tcb.snd_max,
            "rcv_nxt": tcb.rcv_nxt, "rcv_wnd_edge": tcb.rcv_adv, "max_snd_wnd": tcb.max_snd_wnd,
            "payload_per_segment": tcb.seg_mss, "sacked_bytes": sb.sacked_bytes,
            "lost_bytes": sb.lost_bytes, "scoreboard_records": len(sb.recs),
            "reassembly_bytes": tcb.reassembly.nbytes, "in_recovery": tcb.recovery_point
            is not None, "rto_recovery": tcb.rto_high is not None, "retries": tcb.retries,
            "dupacks": tcb.dupacks, "nodelay": tcb.nodelay, "keepalive": tcb.keepalive,
            "timers": {name: round(value - now, 6) for name, value in _timers(tcb)},
            "established_at_s": None if info is None or info.established is None
            else round(now - info.established, 3),
        })
        out.append(r)
    return out


def _timers(tcb: Tcb) -> Iterable[tuple[str, float]]:
    t = tcb.timers
    for name in ("rto", "tlp", "rack", "delack", "persist", "keepalive", "time_wait",
                 "fin_wait"):
        value = getattr(t, name, None)
        if value is not None:
            yield name, value


def _find(stack: Stack, r: Row) -> Tcb | None:
    lip, _, lport = r["local"].partition(":")
    rip, _, rport = r["remote"].partition(":")
    key = (int(ipaddress.IPv4Address(lip)), int(lport), int(ipaddress.IPv4Address(rip)),
           int(rport))
    return stack.tcbs.get(key)


# ------------------------------------------------------------------- rendering


def _num(value: Any, suffix: str = "") -> str:
    return "-" if value is None else f"{value}{suffix}"


def render_rows(table: list[Row], info: bool = True) -> str:
    """Rows as ``ss -tin`` does: a header, one line per connection, then (with
    ``info``) an indented line of internals."""
    lines = [f"{'State':<13}{'Recv-Q':>8}{'Send-Q':>8}  {'Local Address:Port':<22}"
             f"{'Peer Address:Port':<22}"]
    for r in table:
        lines.append(f"{r['state']:<13}{r['recv_q']:>8}{r['send_q']:>8}  "
                     f"{r['local']:<22}{r['remote']:<22}")
        if info and "cwnd" in r:
            flags = []
            if r["ts"]:
                flags.append("ts")
            if r["sack"]:
                flags.append("sack")
            if r["wscale"]:
                flags.append(f"wscale:{r['wscale'][0]},{r['wscale'][1]}")
            rtt = "rtt:-" if r["rtt_ms"] is None else f"rtt:{r['rtt_ms']}/{r['rttvar_ms']}"
            parts = [
                *flags, r["cc"], f"rto:{r['rto_ms']:g}", rtt, f"mss:{r['mss']}",
                f"cwnd:{r['cwnd_segments']}", f"cwnd_bytes:{r['cwnd']}",
                f"ssthresh:{_num(r['ssthresh'])}", f"bytes_acked:{r['bytes_acked']}",
                f"bytes_received:{r['bytes_received']}", f"unacked:{r['in_flight']}",
                f"retrans:{_num(r['retrans'])}", f"snd_wnd:{r['snd_wnd']}",
                f"age:{_num(r['age_s'], 's')}", f"id:{_num(r['id'])}"]
            lines.append("\t " + " ".join(parts))
    return "\n".join(lines)


def render_detail(table: list[Row]) -> str:
    """Per-connection detail, one ``key: value`` per line."""
    if not table:
        return "no such connection"
    blocks = []
    for r in table:
        lines = [f"{r['local']} <-> {r['remote']}  {r['state']}"]
        for key, value in r.items():
            if key in ("local", "remote", "state"):
                continue
            lines.append(f"  {key:<22} {value}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


__all__ = ["detail", "listeners", "render_detail", "render_rows", "row", "rows", "states_for"]
