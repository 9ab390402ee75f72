"""The connection table, metrics, dashboard drawings, control socket and logs, checked
against connections whose traffic the test knows (two stacks in memory)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tcp_helpers import Pair, stack_pair

from tcpstack.observe import control, svg, table
from tcpstack.observe.core import Observatory
from tcpstack.observe.dashboard import Dashboard
from tcpstack.observe.logs import JsonFormatter, RefusalLog
from tcpstack.observe.metrics import Metrics
from tcpstack.stack import Stack
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import AnySegment

N, M = 4, 30_000


def transfer(packets: bool = True, setup: Callable[[Observatory], Any] | None = None
             ) -> tuple[Pair[Stack], Observatory, list[Tcb]]:
    """N connections from A to B's port 7; each sends M bytes to B, B echoes them.
    ``setup`` gets the observatory before any traffic."""
    net = stack_pair()
    obs = Observatory(net.b, packets=packets)
    obs.enable_ladders()
    obs.enable_history()
    obs.attach()
    if setup is not None:
        setup(obs)
    net.b.listen(7)
    clients = [net.a.connect("10.0.0.2", 7, net.now) for _ in range(N)]
    net.run(until=lambda: all(c.state is State.ESTABLISHED for c in clients)
            and len(net.b.tcbs) == N
            and all(t.state is State.ESTABLISHED for t in net.b.tcbs.values()))
    for c in clients:
        c.send(bytes(M))

    def echo() -> None:
        for t in net.b.tcbs.values():
            data = t.recv()
            if data:
                t.send(data)
        for c in clients:
            c.recv()

    net.run(echo, until=lambda: all(t.snd_una == t.snd_max and t.recv_buffered == 0
                                    and t.snd_max != t.iss + 1
                                    for t in net.b.tcbs.values()))
    return net, obs, clients


def test_table_rows_show_the_bytes_each_connection_moved() -> None:
    net, obs, _ = transfer()
    rows = table.rows(net.b, obs, net.now, state="established", port=7)
    assert len(rows) == N
    for r in rows:
        assert (r["bytes_received"], r["bytes_acked"]) == (M, M)
        assert (r["send_q"], r["recv_q"], r["retrans"]) == (0, 0, 0)
        assert r["state"] == "ESTABLISHED" and r["sack"] and r["ts"]
        assert r["rtt_ms"] is not None and r["id"] is not None
        # A short transfer on a clean path: still in its initial slow start, which
        # HyStart++ (on by default) watches; the detail view lists it.
        assert r["hystart"] == "slow start" and r["hystart_exit_rtt_ms"] is None
    assert table.rows(net.b, obs, net.now, state="time-wait") == []
    assert len(table.rows(net.b, obs, net.now, sport=7)) == N
    assert table.rows(net.b, obs, net.now, dport=7) == []
    text = table.render_rows(rows)
    assert text.count("ESTABLISHED") == N and f"bytes_acked:{M}" in text
    one = table.detail(net.b, obs, net.now, rows[0]["remote"])
    assert len(one) == 1 and one[0]["snd_una"] == one[0]["snd_nxt"]
    assert "hystart                slow start" in table.render_detail(one)


def test_light_mode_still_counts_bytes_from_the_sequence_numbers() -> None:
    net, obs, _ = transfer(packets=False)
    rows = table.rows(net.b, obs, net.now)
    assert {(r["bytes_received"], r["bytes_acked"], r["retrans"]) for r in rows} == {
        (M, M, None)}
    assert all(r["age_s"] is not None for r in rows)


def test_unknown_state_filter_is_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError, match="established"):
        table.states_for("establishd")


def test_retransmissions_are_counted_per_connection_and_by_kind() -> None:
    lost: set[int] = set()

    def lose(src: Stack, seg: AnySegment) -> bool:
        # Drop the 5th data packet from B once.
        nonlocal count
        if src is net.b and len(seg.payload) > 0:
            count += 1
            if count == 5 and 5 not in lost:
                lost.add(5)
                return True
        return False

    count = 0
    net = stack_pair()
    net.drop = lose
    obs = Observatory(net.b, packets=True)
    obs.attach()
    net.b.listen(80)
    c = net.a.connect("10.0.0.2", 80, 0.0)
    net.run(until=lambda: c.state is State.ESTABLISHED and bool(net.b.tcbs))
    (srv,) = net.b.tcbs.values()
    srv.send(bytes(200_000))

    def read() -> None:
        c.recv()

    net.run(read, until=lambda: srv.snd_una == srv.snd_max)
    (r,) = table.rows(net.b, obs, net.now)
    assert r["retrans"] >= 1 and r["bytes_acked"] == 200_000
    kinds = sum(net.b.counters[k] for k in ("tcp_retrans_rack", "tcp_retrans_tlp",
                                            "tcp_retrans_rto", "tcp_retrans_fast"))
    assert kinds == r["retrans"]


def test_metrics_scrape_reports_connections_handshakes_and_every_counter() -> None:
    made: list[Metrics] = []
    net, _obs, _ = transfer(setup=lambda o: made.append(Metrics(o.stack, o)))
    body, ctype = made[0].render()
    assert ctype.startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}
    assert samples[("tcpstack_connections", (("state", "ESTABLISHED"),))] == N
    assert samples[("tcpstack_listeners", ())] == 1
    assert samples[("tcpstack_handshake_duration_seconds_count", ())] == N
    assert samples[("tcpstack_rtt_seconds_count", (("sample", "initial"),))] == N
    for name, value in net.b.counters.items():
        assert samples[("tcpstack_events_total", (("counter", name),))] == value
    assert samples[("tcpstack_packets_total", (("direction", "in"),))] == \
        net.b.counters["ip_received"]
    assert ("tcpstack_drops_total", (("reason", "tcp_received"),)) not in samples


def test_dashboard_draws_the_ladder_and_plots_of_a_connection() -> None:
    made: list[Dashboard] = []
    _net, _obs, _ = transfer(setup=lambda o: made.append(Dashboard(o, o.time)))
    dash = made[0]
    snap = dash.snapshot()
    assert len(snap["rows"]) == N
    ident = snap["rows"][0]["id"]
    routes = dash.routes()
    page = routes["/"]("/", {})
    assert b"/static/app.js" in page.body and "Content-Security-Policy" in page.headers
    ladder = routes["/api/conn/"](f"/api/conn/{ident}/ladder.svg", {})
    root = ET.fromstring(ladder.body)
    arrows = [g.get("class") for g in root.iter("{http://www.w3.org/2000/svg}g")
              if "arrow" in (g.get("class") or "")]
    assert arrows == ["arrow in syn", "arrow out syn ack", "arrow in ack"]
    tseq = ET.fromstring(routes["/api/conn/"](f"/api/conn/{ident}/tseq.svg", {"dir": ["in"]})
                         .body)
    segs = [e for e in tseq.iter("{http://www.w3.org/2000/svg}line")
            if e.get("class") == "seg"]
    assert len(segs) >= M // 1448
    cc = ET.fromstring(routes["/api/conn/"](f"/api/conn/{ident}/cc.svg", {}).body)
    assert any(e.get("class") == "cwnd" for e in cc.iter("{http://www.w3.org/2000/svg}polyline"))
    info = json.loads(routes["/api/conn/"](f"/api/conn/{ident}", {}).body)
    assert info["row"]["bytes_received"] == M and info["history"]["segments"]
    with pytest.raises(KeyError):
        routes["/api/conn/"]("/api/conn/99999", {})
    with pytest.raises(KeyError):
        routes["/static/"]("/static/../../etc/passwd", {})


def test_plots_span_the_records_kept_and_label_axes_readably() -> None:
    """When the ring has dropped the oldest records, the time axis starts at the
    first one kept (not at the connection's start); large values get k/M."""
    history = {"segments": [[100.0 + i / 10, "out", i * 1448, (i + 1) * 1448, 0, 65535, 0x10,
                             [], False] for i in range(20)] +
               [[100.05 + i / 10, "in", 0, 0, (i + 1) * 1448, 4_000_000, 0x10, [], False]
                for i in range(20)]}
    history["segments"].sort(key=lambda s: s[0])
    root = ET.fromstring(svg.time_sequence_svg(history))
    labels = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "100" in labels  # the first time label is the first record's
    assert any(label and label.endswith("M") for label in labels)  # 4 MB window edge
    samples = {"samples": [[50.0 + i, 20_000 + i, 40_000, 0.01, 0.002, 0.21, 9000]
                           for i in range(5)]}
    cc = [t.text for t in ET.fromstring(svg.cc_svg(samples)).iter(
        "{http://www.w3.org/2000/svg}text")]
    assert "50" in cc and "44k" in cc  # ssthresh 40,000 x 1.1 at the top of the axis


def test_svg_text_from_packets_is_escaped() -> None:
    doc = {"type": "ladder", "phase": "refused", "id": 1, "local": "<a>", "remote": "&",
           "role": "none", "start": 0.0, "isn": {}, "outcome": "refused",
           "why": "<script>alert(1)</script>", "events": []}
    out = svg.ladder_svg([doc])
    assert "<script>" not in out and "&lt;script&gt;" in out
    ET.fromstring(out)


async def test_control_socket_answers_ss_and_streams_ladders(tmp_path: Path) -> None:
    net, obs, _ = transfer(packets=False)
    obs.disable_ladders()
    path = tmp_path / "c.sock"
    sock = control.bind_socket(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    server = control.ControlServer(net.b, obs, lambda: net.now)
    await server.start(sock, path)
    try:
        answer = await asyncio.to_thread(control.request, path, {"cmd": "ss", "port": 7})
        assert len(answer["rows"]) == N and answer["observing"] == "light"
        with pytest.raises(control.ControlError, match="unknown command"):
            await asyncio.to_thread(control.request, path, {"cmd": "nope"})
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b'{"cmd": "trace"}\n')
        first = json.loads(await reader.readline())
        assert first["ok"] and obs.packets and obs.ladders is not None
        # A new connection while traced: its opening ladder arrives.
        net.a.connect("10.0.0.2", 7, net.now)
        net.run(until=lambda: len(net.b.tcbs) == N + 1 and all(
            t.state is State.ESTABLISHED for t in net.b.tcbs.values()))
        doc = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert doc["phase"] == "opening" and doc["outcome"] == "established"
        writer.close()
        for _ in range(100):
            if not obs.packets:
                break
            await asyncio.sleep(0.01)
        assert not obs.packets and obs.ladders is None  # back to light mode
    finally:
        await server.close()
    assert not path.exists()


def test_a_live_socket_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    sock = control.bind_socket(path)
    try:
        with pytest.raises(control.ControlError, match="in use"):
            control.bind_socket(path)
    finally:
        sock.close()
    control.bind_socket(path).close()  # stale now: replaced


def test_no_daemon_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(control.ControlError, match="does not exist"):
        control.request(tmp_path / "none.sock", {"cmd": "ss"})


def test_refusals_are_logged_once_each_within_a_rate_limit(
        caplog: pytest.LogCaptureFixture) -> None:
    net = stack_pair()
    obs = Observatory(net.b)
    obs.attach()
    refusals = RefusalLog(obs, rate=5, burst=5)
    caplog.set_level(logging.INFO, logger="tcpstack.refusals")
    for i in range(20):  # 20 SYNs to a closed port in the same instant
        net.a.connect("10.0.0.2", 81, net.now, local_port=20000 + i)
    net.step()
    net.step()
    lines = [r for r in caplog.records if r.name == "tcpstack.refusals"]
    assert len(lines) == 5 and refusals.suppressed == 15
    assert all("no listener on port 81" in r.getMessage() for r in lines)
    refusals.tick(1e9)
    assert "15 refusal/reset line(s) suppressed" in caplog.records[-1].getMessage()


def test_json_log_lines_carry_the_fields() -> None:
    record = logging.LogRecord("tcpstack.refusals", logging.INFO, "f", 1, "refused %s",
                               ("x",), None)
    record.remote = "10.0.0.1:5"
    out: dict[str, Any] = json.loads(JsonFormatter().format(record))
    assert out["message"] == "refused x" and out["remote"] == "10.0.0.1:5"
    assert out["level"] == "info" and out["time"].endswith("Z")


async def test_http_server_serves_the_page_events_and_errors_over_a_socket() -> None:
    from tcpstack.observe.web import HttpServer

    made: list[Dashboard] = []
    transfer(setup=lambda o: made.append(Dashboard(o, o.time)))
    http = HttpServer(made[0].routes(), "dashboard")
    server = await asyncio.start_server(http.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def get(path: str, method: str = "GET") -> tuple[str, bytes]:
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            length = int(head.lower().split("content-length: ")[1].split("\r\n")[0])
            body = await reader.readexactly(length) if method == "GET" else b""
            return head, body

        head, body = await get("/")  # keep-alive: the same connection serves them all
        assert head.startswith("HTTP/1.1 200") and b"<title>tcpstack" in body
        head, body = await get("/static/app.js")
        assert "text/javascript" in head and b"EventSource" in body
        head, body = await get("/api/connections")
        assert len(json.loads(body)["rows"]) == N
        head, _ = await get("/nothing")
        assert head.startswith("HTTP/1.1 404")
        head, _ = await get("/api/conn/1/tseq.svg?dir=sideways")
        assert head.startswith("HTTP/1.1 400")
        head, _ = await get("/", "HEAD")
        assert head.startswith("HTTP/1.1 200")
        writer.write(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 405")
        writer.close()
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write(b"GET /api/events HTTP/1.1\r\n\r\n")
        head2 = (await r2.readuntil(b"\r\n\r\n")).decode()
        assert "text/event-stream" in head2
        event = b""
        while b"data: " not in event:
            event = await asyncio.wait_for(r2.readuntil(b"\n\n"), 5)
        assert len(json.loads(event.split(b"data: ", 1)[1])["rows"]) == N
        await http.close()  # ends the stream
        assert await asyncio.wait_for(r2.read(), 5) == b""
        w2.close()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("vnet", [False, True])
def test_only_the_rsts_among_control_packets_reach_stray_rst_subscribers(vnet: bool) -> None:
    # Without ladders the observatory reads the flags of each control packet in place
    # (a SYN flood's cookie SYN,ACKs are never parsed): RSTs still reach it, over
    # IPv4 and IPv6, with or without a virtio-net header.
    from tcpstack.wire.records import OutSegment, TcpOptions
    from tcpstack.wire.tcp import ACK, RST, SYN, emit_tcp

    net = stack_pair()
    obs = Observatory(net.b)
    obs.attach()
    seen: list[tuple[int, int, int, int]] = []
    obs.on_stray_rst.append(lambda key, now: seen.append(key))
    v4, peer4 = 0x0A000002, 0x0A000001
    v6, peer6 = (0xFD00 << 112) | 2, (0xFD00 << 112) | 1
    synack = OutSegment(80, 5000, 1, 2, SYN | ACK, 100, TcpOptions(mss=1460))
    rst = OutSegment(81, 5001, 0, 7, RST | ACK, 0, TcpOptions())
    packets: list[Any] = [emit_tcp(synack, v4, peer4, 1, vnet=vnet),
                          emit_tcp(rst, v4, peer4, 2, vnet=vnet),
                          emit_tcp(synack, v6, peer6, 3, vnet=vnet),
                          (emit_tcp(rst, v6, peer6, 4, vnet=vnet), b"")]
    net.b.config = dataclasses.replace(net.b.config, vnet_hdr=vnet)
    obs.on_control(packets, 1.0)
    assert seen == [(v4, 81, peer4, 5001), (v6, 81, peer6, 5001)]
    obs.on_stray_rst.clear()
    obs.on_control(packets, 2.0)  # no subscriber, no ladders: nothing looked at
    assert obs.now == 2.0
