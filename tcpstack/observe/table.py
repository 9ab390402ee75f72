"""The connection table (``tcpstack ss``): one row per connection, and its detail.

:func:`rows` reads the connections' own variables (the TCB fields are public)
plus what the :class:`~tcpstack.observe.core.Observatory` adds (age, and in full
mode the retransmissions it saw and byte counts beyond 4 GiB). Rows are
JSON-ready dicts; :func:`render_rows` prints them like ``ss -tin``.

Filters, as ``ss`` has them: ``state`` (a state name such as ``established``,
or ``connected``, ``synchronized``, ``all``), ``port`` (local or remote port),
``sport``/``dport`` (local/remote), ``address`` (``IP:PORT`` or ``[IPv6]:PORT``
of either end, in any spelling of the address).

Endpoints are shown as ``ss`` shows them: ``10.0.0.2:80``, ``[fd00::2]:80``; a
listener on every address of a dual-stack stack as ``*:80``, on every IPv4 or
every IPv6 address as ``0.0.0.0:80`` or ``[::]:80``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from tcpstack.observe.core import ConnInfo, Observatory, bytes_acked, bytes_received
from tcpstack.observe.ladder import endpoint, parse_endpoint
from tcpstack.stack import Stack
from tcpstack.tcp.info import ecn_mode
from tcpstack.tcp.seq import MASK
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.ipv6 import is_ipv6

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
        "md5": tcb.md5,
        "ao": tcb.auth.info() if tcb.auth is not None else None,
        "ecn": tcb.ecn_ok,
        "ecn_mode": ecn_mode(tcb),
        "fastopen": tcb.tfo.result or None if tcb.tfo is not None else None,
        "wscale": [tcb.snd_wscale, tcb.rcv_wscale] if tcb.wscale_ok else None,
        "age_s": round(now - info.created, 3) if info is not None else None,
        "cc": type(cc).__name__.lower(),
        # HyStart++ (RFC 9406): where the initial slow start is, and the round's
        # minimum RTT that ended it.
        "hystart": cc.hystart_phase,
        "bbr": cc.info(),
        "hystart_exit_rtt_ms": None if cc.hystart is None or cc.hystart.exit_rtt is None
        else round(cc.hystart.exit_rtt * 1000, 3),
    }
    return out


def rows(stack: Stack, observatory: Observatory | None, now: float, *,
         state: str | None = None, port: int | None = None, sport: int | None = None,
         dport: int | None = None, address: str | None = None) -> list[Row]:
    """Rows for every connection passing the filters, in table order. A malformed
    ``address`` raises ValueError."""
    end = None if address is None else parse_endpoint(address)
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
        if end is not None and end != (tcb.local_ip, tcb.local_port) \
                and end != (tcb.remote_ip, tcb.remote_port):
            continue
        out.append(row(tcb, conns.get(tcb), now, packets))
    return out


def listeners(stack: Stack) -> list[Row]:
    """The listening ports with their queues (as ``ss -tl``): one row per local
    address a listener is bound to, or one for all of them (``*``, ``0.0.0.0`` or
    ``[::]`` as the families it takes say)."""
    families = {6 if is_ipv6(a) else 4 for a in stack.addresses}
    out: list[Row] = []
    for port, lst in sorted(stack.listeners.items()):
        only, v6only = stack.listening_on(port)
        if only is not None:
            locals_ = [endpoint(a, port) for a in sorted(only)]
        elif v6only or families == {6}:
            locals_ = [f"[::]:{port}"]
        elif families == {4}:
            locals_ = [f"0.0.0.0:{port}"]
        else:
            locals_ = [f"*:{port}"]
        out.extend({"state": "LISTEN", "local": local, "remote": "*:*",
                    "recv_q": lst.pending, "send_q": lst.backlog,
                    "half_open": lst.half_open} for local in locals_)
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
    return stack.tcbs.get((*parse_endpoint(r["local"]), *parse_endpoint(r["remote"])))


# ------------------------------------------------------------------- rendering


def _num(value: Any, suffix: str = "") -> str:
    return "-" if value is None else f"{value}{suffix}"


def render_rows(table: list[Row], info: bool = True) -> str:
    """Rows as ``ss -tin`` does: a header, one line per connection, then (with
    ``info``) an indented line of internals. The address columns widen for long
    (IPv6) endpoints, so that they stay aligned."""
    wl = max([22, *(len(r["local"]) + 2 for r in table)])
    wr = max([22, *(len(r["remote"]) + 2 for r in table)])
    lines = [f"{'State':<13}{'Recv-Q':>8}{'Send-Q':>8}  {'Local Address:Port':<{wl}}"
             f"{'Peer Address:Port':<{wr}}"]
    for r in table:
        lines.append(f"{r['state']:<13}{r['recv_q']:>8}{r['send_q']:>8}  "
                     f"{r['local']:<{wl}}{r['remote']:<{wr}}")
        if info and "cwnd" in r:
            flags = []
            if r["ts"]:
                flags.append("ts")
            if r["sack"]:
                flags.append("sack")
            if r["wscale"]:
                flags.append(f"wscale:{r['wscale'][0]},{r['wscale'][1]}")
            if r.get("ecn"):
                flags.append("accecn" if r.get("ecn_mode") == "accecn" else "ecn")
            if r.get("md5"):
                flags.append("md5")
            if r.get("ao"):
                flags.append(f"ao:{r['ao']['keyid']}/{r['ao']['rnext']}")
            if r.get("fastopen"):
                flags.append(f"fastopen:{r['fastopen'].replace(' ', '_')}")
            rtt = "rtt:-" if r["rtt_ms"] is None else f"rtt:{r['rtt_ms']}/{r['rttvar_ms']}"
            bbr = r.get("bbr")
            cc_text = r["cc"]
            if bbr:
                # As ss shows Linux's: bbr:(bw:...,mrtt:...,pacing_gain:...,cwnd_gain:...)
                cc_text += (f" bbr:(mode:{bbr['mode']},bw:{_rate(bbr['bw'])},"
                            f"mrtt:{_num(bbr['min_rtt_ms'])},pacing_gain:{bbr['pacing_gain']:g},"
                            f"cwnd_gain:{bbr['cwnd_gain']:g}"
                            f"{',policed' if bbr['policed'] else ''}) "
                            f"pacing_rate:{_rate(bbr['pacing_rate'])}")
            parts = [
                *flags, cc_text, f"rto:{r['rto_ms']:g}", rtt, f"mss:{r['mss']}",
                f"cwnd:{r['cwnd_segments']}", f"cwnd_bytes:{r['cwnd']}",
                f"ssthresh:{_num(r['ssthresh'])}", f"bytes_acked:{r['bytes_acked']}",
                f"bytes_received:{r['bytes_received']}", f"unacked:{r['in_flight']}",
                f"retrans:{_num(r['retrans'])}", f"snd_wnd:{r['snd_wnd']}",
                f"age:{_num(r['age_s'], 's')}", f"id:{_num(r['id'])}"]
            lines.append("\t " + " ".join(parts))
    return "\n".join(lines)


def _rate(bytes_per_second: float) -> str:
    """A rate in bits per second, as ss prints it (``12.3Mbps``)."""
    bits = bytes_per_second * 8
    for unit, scale in (("Gbps", 1e9), ("Mbps", 1e6), ("Kbps", 1e3)):
        if bits >= scale:
            return f"{bits / scale:.1f}{unit}"
    return f"{bits:.0f}bps"


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
