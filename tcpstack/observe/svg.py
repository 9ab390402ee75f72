"""SVG drawings for the dashboard: ladders and per-connection plots.

Drawn on the server, in Python, so the page needs no charting library and the
pictures can be tested without a browser:

* :func:`ladder_svg` -- a sequence diagram of one or more ladder phases
  (:mod:`tcpstack.observe.ladder`): the peer on the left, the stack on the right,
  one arrow per segment (``<g class="arrow syn ...">``), labelled with flags and
  relative sequence numbers, time down the left margin, notes and reasons in red;
* :func:`time_sequence_svg` -- Stevens/tcptrace style: each data segment a
  vertical bar from its first to its last sequence number at the time it was
  sent (retransmissions red), the cumulative ACK as a green step line, the right
  edge of the receive window in yellow, SACKed ranges in purple;
* :func:`cc_svg` -- cwnd and ssthresh (bytes) and SRTT/RTO (ms) over time.

Every text is escaped; nothing from a packet reaches the page unescaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final
from xml.sax.saxutils import escape

from tcpstack.observe.ladder import Ladder

FONT: Final = 'font-family="ui-monospace, Menlo, Consolas, monospace"'
TIME_AXIS: Final = "time (s) since the connection opened"


def _t(x: float, y: float, text: str, size: int = 11, anchor: str = "start",
       cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{c}>'
            f"{escape(text)}</text>")


def _label(ev: dict[str, Any]) -> str:
    if "label" in ev:  # a TLS flight
        return str(ev["label"])
    seq = ev["rel_seq"] if ev.get("rel_seq") is not None else ev["seq"]
    text = f"{ev['flags']} seq={seq}"
    if ev.get("ack") is not None:
        ack = ev["rel_ack"] if ev.get("rel_ack") is not None else ev["ack"]
        text += f" ack={ack}"
    text += f" win={ev['win']}"
    if ev.get("len"):
        text += f" len={ev['len']}"
    return text


def _options(ev: dict[str, Any]) -> str:
    if "records" in ev:  # a TLS flight
        text = f"{len(ev['records'])} record(s), {ev['bytes']} B"
        return text + (f", +{ev['after_ms']:.3f} ms" if ev.get("after_ms") else "")
    o = ev.get("options", {})
    parts = []
    if "mss" in o:
        parts.append(f"MSS {o['mss']}")
    if "wscale" in o:
        parts.append(f"WS {o['wscale']}")
    if o.get("sack_permitted"):
        parts.append("SACK-perm")
    if "tsval" in o:
        parts.append(f"TS {o['tsval']}/{o['tsecr']}")
    if o.get("md5"):
        parts.append("MD5")
    if "ao" in o:
        parts.append(f"AO {o['ao'][0]}/{o['ao'][1]}")
    if "tfo" in o:
        parts.append("TFO req" if o["tfo"] == "request" else "TFO cookie")
    return " ".join(parts)


def _peer_label(text: str, left: float) -> str:
    """The peer's name over its lifeline at ``left``, or from the left edge when it
    is too long to be centred there (an IPv6 endpoint: up to 47 characters, about
    6.6 pixels each at 12 px) -- never cut off at the drawing's edge."""
    if len(text) * _CHAR_WIDTH_12 / 2 > left - 4:
        return _t(4, 18, text, 12, "start", "end")
    return _t(left, 18, text, 12, "middle", "end")


_CHAR_WIDTH_12: Final = 6.6
"""The average width of a character of the 12 px sans-serif font, in pixels."""


def ladder_svg(ladders: Sequence[Ladder], width: int = 720) -> str:
    """One sequence diagram of the given ladder phases, top to bottom."""
    left, right = 150, width - 40
    row = 46
    events: list[tuple[Ladder, dict[str, Any]]] = [(d, e) for d in ladders
                                                    for e in d.get("events", [])]
    extra = sum(1 for d in ladders for _ in ("title", "outcome"))
    height = 60 + row * len(events) + 22 * extra + 24 * sum(
        1 for d in ladders if d.get("negotiated") or d.get("server_hello"))
    remote = ladders[0]["remote"] if ladders else "peer"
    local = ladders[0]["local"] if ladders else "stack"
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="ladder" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" {FONT}>',
           '<defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
           'fill="context-stroke"/></marker></defs>',
           _peer_label(f"peer {remote}", left),
           _t(width - 4, 18, f"stack {local}", 12, "end", "end"),
           f'<line x1="{left}" y1="26" x2="{left}" y2="{height - 6}" stroke="#888"/>',
           f'<line x1="{right}" y1="26" x2="{right}" y2="{height - 6}" stroke="#888"/>']
    y = 40.0
    for doc in ladders:
        title = {"opening": "opening", "closing": "teardown", "refused": "no connection",
                 "tls": "TLS"}
        out.append(_t(8, y, f"{title.get(doc['phase'], doc['phase'])} #{doc['id']}", 11,
                      cls="phase"))
        y += 22
        for ev in doc.get("events", []):
            y0, y1 = y, y + row - 14
            x0, x1 = (left, right) if ev["dir"] == "in" else (right, left)
            classes = " ".join(["arrow", ev["dir"]] +
                               [f.lower() for f in ev["flags"].split(",")])
            color = "#c00" if "RST" in ev["flags"] else "#06c" if "SYN" in ev["flags"] else \
                "#880" if "FIN" in ev["flags"] else "#070" if ev["flags"] == "TLS" else "#333"
            out.append(f'<g class="{classes}">')
            out.append(f'<line x1="{x0}" y1="{y0:.1f}" x2="{x1}" y2="{y1:.1f}" '
                       f'stroke="{color}" stroke-width="1.6" marker-end="url(#head)"/>')
            out.append(_t((left + right) / 2, (y0 + y1) / 2 - 4, _label(ev), 11, "middle"))
            opts = _options(ev)
            if opts:
                out.append(_t((left + right) / 2, (y0 + y1) / 2 + 9, opts, 9, "middle"))
            out.append(_t(8, y0 + 4, f"{ev['t'] * 1000:.3f} ms", 10))
            notes = list(ev.get("notes", [])) + [r["counter"] for r in ev.get("reasons", [])
                                                 if r["counter"] not in ("tcp_syn_accepted",)]
            if notes:
                out.append(_t(8, y0 + 16, "; ".join(notes)[:34], 9, cls="note"))
            out.append("</g>")
            y += row
        outcome = doc.get("outcome", "")
        why = doc.get("why")
        out.append(_t(left, y, f"=> {outcome}{': ' + why if why else ''}"[:100], 11,
                      cls="outcome"))
        y += 22
        sh = doc.get("server_hello")
        if doc["phase"] == "tls" and sh:
            ch = doc.get("client_hello", {})
            offered = ", ".join(ch.get("alpn", [])) or "-"
            text = (f"{sh.get('version')}, {sh.get('cipher')}, group {sh.get('group', '-')}; "
                    f"SNI {ch.get('sni', '-')}, ALPN offered {offered}")
            out.append(_t(left, y, text[:110], 10, cls="negotiated"))
            y += 24
        neg = doc.get("negotiated")
        if neg:
            rtt = neg.get("initial_rtt_ms")
            text = (f"MSS {neg['mss']}, WS {'on' if neg['window_scaling'] else 'off'}, "
                    f"SACK {'on' if neg['sack'] else 'off'}, TS "
                    f"{'on' if neg['timestamps'] else 'off'}, first RTT "
                    f"{'-' if rtt is None else f'{rtt:.3f} ms'}")
            out.append(_t(left, y, text, 10, cls="negotiated"))
            y += 24
    out.append("</svg>")
    return "\n".join(out)


# ----------------------------------------------------------------- plots


def _num(v: float) -> str:
    """An axis label: k/M/G with 3 significant digits from 10,000 up, else 4 digits."""
    for limit, scale, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(v) >= limit:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.4g}"


class _Axes:
    """A plot area; time runs from ``xmin`` (the oldest record kept) to ``xmax``."""

    def __init__(self, x0: float, y0: float, w: float, h: float, xmax: float, ymin: float,
                 ymax: float, xmin: float = 0.0) -> None:
        self.x0, self.y0, self.w, self.h = x0, y0, w, h
        self.xmin = xmin
        self.xmax = xmax if xmax > xmin else xmin + 1.0
        self.ymin = ymin
        self.ymax = ymax if ymax > ymin else ymin + 1

    def x(self, t: float) -> float:
        return self.x0 + self.w * (t - self.xmin) / (self.xmax - self.xmin)

    def y(self, v: float) -> float:
        return self.y0 + self.h - self.h * (v - self.ymin) / (self.ymax - self.ymin)

    def frame(self, xlabel: str, ylabel: str) -> list[str]:
        out = [f'<rect x="{self.x0}" y="{self.y0}" width="{self.w}" height="{self.h}" '
               'fill="none" stroke="#999"/>']
        for i in range(5):
            t = self.xmin + (self.xmax - self.xmin) * i / 4
            out.append(_t(self.x(t), self.y0 + self.h + 14, f"{t:.4g}", 9, "middle"))
            v = self.ymin + (self.ymax - self.ymin) * i / 4
            out.append(_t(self.x0 - 4, self.y(v) + 3, _num(v), 9, "end"))
        out.append(_t(self.x0 + self.w / 2, self.y0 + self.h + 28, xlabel, 10, "middle"))
        out.append(_t(self.x0, self.y0 - 6, ylabel, 10))
        return out


def _polyline(points: Iterable[tuple[float, float]], color: str, cls: str,
              step: bool = False) -> str:
    pts: list[tuple[float, float]] = []
    for x, y in points:
        if step and pts:
            pts.append((x, pts[-1][1]))
        pts.append((x, y))
    if not pts:
        return ""
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    return f'<polyline class="{cls}" points="{coords}" fill="none" stroke="{color}"/>'


def _empty(width: int, height: int, text: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'{FONT}>{_t(20, 30, text, 12)}</svg>')


def time_sequence_svg(history: dict[str, Any], direction: str = "out", width: int = 720,
                      height: int = 360) -> str:
    """Time-sequence graph of one direction's data (``out``: what the stack sent)."""
    segs = history.get("segments", [])
    other = "in" if direction == "out" else "out"
    data = [s for s in segs if s[1] == direction and s[3] != s[2]]
    acks = [s for s in segs if s[1] == other and s[6] & 0x10]
    if not data and not acks:
        return _empty(width, height, "no data segments recorded yet")
    tmin, tmax = segs[0][0], segs[-1][0]
    ys = [s[3] for s in data] + [s[4] for s in acks]
    ymax = max(ys + [s[4] + s[5] for s in acks]) if ys else 1
    ymin = min([s[2] for s in data] + [s[4] for s in acks]) if ys else 0
    ax = _Axes(70, 24, width - 90, height - 78, tmax + (tmax - tmin) * 0.02, ymin,
               ymax + (ymax - ymin) * 0.02 + 1, tmin)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="tseq" width="{width}" '
           f'height="{height}" {FONT}>']
    out += ax.frame(TIME_AXIS, f"sequence number (relative), data sent "
                    f"{'by the stack' if direction == 'out' else 'by the peer'}")
    out.append(_polyline(((ax.x(s[0]), ax.y(s[4])) for s in acks), "#2a2", "ack",
                         step=True))
    out.append(_polyline(((ax.x(s[0]), ax.y(min(s[4] + s[5], ax.ymax))) for s in acks),
                         "#cc0", "rwnd", step=True))
    for s in data:
        color = "#d00" if s[8] else "#036"
        cls = "seg retrans" if s[8] else "seg"
        x = ax.x(s[0])
        out.append(f'<line class="{cls}" x1="{x:.1f}" y1="{ax.y(s[2]):.1f}" x2="{x:.1f}" '
                   f'y2="{ax.y(s[3]):.1f}" stroke="{color}" stroke-width="2"/>')
    for s in acks:
        for left, right in s[7]:
            x = ax.x(s[0])
            out.append(f'<line class="sack" x1="{x:.1f}" y1="{ax.y(left):.1f}" x2="{x:.1f}" '
                       f'y2="{ax.y(right):.1f}" stroke="#a0a" stroke-width="4" '
                       'stroke-opacity="0.6"/>')
    legend = [("#036", "data"), ("#d00", "retransmission"), ("#2a2", "ACK"),
              ("#cc0", "receive window edge"), ("#a0a", "SACKed")]
    x = 80.0
    for color, name in legend:
        out.append(f'<rect x="{x}" y="{height - 14}" width="10" height="8" fill="{color}"/>')
        out.append(_t(x + 14, height - 6, name, 9))
        x += 30 + 6 * len(name)
    out.append("</svg>")
    return "\n".join(out)


def cc_svg(history: dict[str, Any], width: int = 720, height: int = 420) -> str:
    """cwnd/ssthresh (top) and SRTT/RTO (bottom) over time."""
    samples = history.get("samples", [])
    if not samples:
        return _empty(width, height, "no ACKs recorded yet")
    tmin, tmax = samples[0][0], samples[-1][0]
    tmax += (tmax - tmin) * 0.02
    top_h = (height - 100) / 2
    cwnd_max = max([s[1] for s in samples] + [s[6] for s in samples] +
                   [s[2] for s in samples if s[2] is not None])
    a1 = _Axes(80, 24, width - 100, top_h, tmax, 0, cwnd_max * 1.1, tmin)
    rtts = [s[3] * 1000 for s in samples if s[3] is not None]
    rtos = [s[5] * 1000 for s in samples]
    a2 = _Axes(80, 24 + top_h + 50, width - 100, top_h, tmax, 0,
               max(rtts + rtos) * 1.1 if rtts or rtos else 1, tmin)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="cc" width="{width}" '
           f'height="{height}" {FONT}>']
    out += a1.frame(TIME_AXIS, "bytes: cwnd (blue), ssthresh (orange), in flight (grey)")
    out.append(_polyline(((a1.x(s[0]), a1.y(s[6])) for s in samples), "#aaa", "inflight",
                         step=True))
    out.append(_polyline(((a1.x(s[0]), a1.y(s[1])) for s in samples), "#06c", "cwnd",
                         step=True))
    out.append(_polyline(((a1.x(s[0]), a1.y(s[2])) for s in samples if s[2] is not None),
                         "#e80", "ssthresh", step=True))
    out += a2.frame(TIME_AXIS, "ms: SRTT (green), RTO (red)")
    out.append(_polyline(((a2.x(s[0]), a2.y(s[3] * 1000)) for s in samples
                          if s[3] is not None), "#2a2", "srtt", step=True))
    out.append(_polyline(((a2.x(s[0]), a2.y(s[5] * 1000)) for s in samples), "#c00", "rto",
                         step=True))
    out.append("</svg>")
    return "\n".join(out)


__all__ = ["cc_svg", "ladder_svg", "time_sequence_svg"]
