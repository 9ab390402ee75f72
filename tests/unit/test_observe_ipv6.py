"""The observation views with IPv6 connections: endpoints as ``[addr]:port`` in the
table, ladders, drawings and dashboard; ``address`` filters and ``detail`` lookups
by IPv6 address in any spelling; listeners by family; ``--dashboard [IPv6]:PORT``.
Two stacks in memory, a dual-stack server and an IPv6 client."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from tcp_helpers import Pair

from tcpstack.observe import control, svg, table
from tcpstack.observe.core import Observatory
from tcpstack.observe.daemon import stack_addresses
from tcpstack.observe.dashboard import Dashboard
from tcpstack.observe.ladder import endpoint, parse_endpoint
from tcpstack.observe.web import BindAddress, bind_kernel_socket
from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb

CLIENT6 = "fd00:0:0:1::abcd"
SERVER6 = "fd00::2"
SERVER4 = "10.0.0.2"
LONG6 = "2001:db8:1111:2222:3333:4444:5555:6666"  # an endpoint of the longest kind
M = 20_000


def _stack(*addresses: str, seed: int) -> Stack:
    config = StackConfig(addresses=tuple(ipaddress.ip_address(a) for a in addresses))
    return Stack(config, isn_secret=b"a secret of 16+ bytes", rng=random.Random(seed))


def ipv6_transfer(client: str = CLIENT6, *, dashboard: bool = False
                  ) -> tuple[Pair[Stack], Observatory, list[Tcb], list[Dashboard]]:
    """Two IPv6 connections from ``client`` to a dual-stack server's port 7, one from
    port 50000 and one from an ephemeral port; each sends M bytes, echoed back."""
    net = Pair(_stack(client, "10.0.0.1", seed=1), _stack(SERVER4, SERVER6, seed=2))
    obs = Observatory(net.b, packets=True)
    obs.enable_ladders()
    obs.enable_history()
    obs.attach()
    made = [Dashboard(obs, obs.time)] if dashboard else []
    net.b.listen(7)
    clients = [net.a.connect(SERVER6, 7, net.now, local_port=50000),
               net.a.connect(SERVER6, 7, net.now)]
    net.run(until=lambda: all(c.state is State.ESTABLISHED for c in clients)
            and len(net.b.tcbs) == 2
            and all(t.state is State.ESTABLISHED for t in net.b.tcbs.values()))
    for c in clients:
        c.send(bytes(M))

    def echo() -> None:
        for t in net.b.tcbs.values():
            if data := t.recv():
                t.send(data)
        for c in clients:
            c.recv()

    net.run(echo, until=lambda: all(t.snd_una == t.snd_max and t.recv_buffered == 0
                                    and t.snd_max != t.iss + 1
                                    for t in net.b.tcbs.values()))
    return net, obs, clients, made


def test_endpoints_round_trip_in_any_spelling() -> None:
    six = int(ipaddress.IPv6Address(CLIENT6))
    assert endpoint(six, 80) == "[fd00:0:0:1::abcd]:80"
    assert parse_endpoint("[fd00:0:0:1::abcd]:80") == (six, 80)
    assert parse_endpoint("[FD00:0000:0:1:0:0:0:ABCD]:80") == (six, 80)
    four = int(ipaddress.IPv4Address("10.0.0.1"))
    assert parse_endpoint("10.0.0.1:5") == (four, 5) == parse_endpoint(endpoint(four, 5))
    assert parse_endpoint("[::ffff:10.0.0.1]:5") == (four, 5)  # as the stack maps it
    for bad in ("fd00::1:80", "[fd00::1]", "[10.0.0.1]:80", "[fd00::g]:1", "10.0.0.1:x",
                "10.0.0.1:65536", "10.0.0.1", ":80"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)


def test_table_shows_ipv6_endpoints_and_filters_by_them() -> None:
    net, obs, clients, _ = ipv6_transfer()
    rows = table.rows(net.b, obs, net.now)
    assert len(rows) == 2
    assert {r["local"] for r in rows} == {"[fd00::2]:7"}
    assert {r["remote"] for r in rows} == {f"[{CLIENT6}]:50000",
                                           f"[{CLIENT6}]:{clients[1].local_port}"}
    assert all((r["bytes_received"], r["bytes_acked"]) == (M, M) for r in rows)
    # By either end, in any spelling of the address.
    for spelling in (f"[{CLIENT6}]:50000", "[FD00:0:0:1:0:0:0:ABCD]:50000"):
        (one,) = table.rows(net.b, obs, net.now, address=spelling)
        assert one["remote"] == f"[{CLIENT6}]:50000"
    assert len(table.rows(net.b, obs, net.now, address="[fd00:0::2]:7")) == 2
    assert table.rows(net.b, obs, net.now, address="[fd00::3]:7") == []
    assert table.rows(net.b, obs, net.now, address="10.0.0.2:7") == []
    with pytest.raises(ValueError, match="IPv6"):
        table.rows(net.b, obs, net.now, address="fd00::2:7")  # no brackets: ambiguous
    (detail,) = table.detail(net.b, obs, net.now, "[fd00:0:0:1:0::abcd]:50000")
    assert detail["snd_una"] == detail["snd_nxt"] and detail["remote"].endswith("]:50000")
    text = table.render_rows(rows)
    assert f"[{CLIENT6}]:50000" in text and "bytes_acked:" in text
    assert "[fd00::2]:7" in table.render_detail([detail])


def test_rendered_table_stays_aligned_with_long_ipv6_endpoints() -> None:
    net, obs, _, _ = ipv6_transfer(LONG6)
    rows = table.rows(net.b, obs, net.now)
    lines = table.render_rows(rows, info=False).splitlines()
    header, body = lines[0], lines[1:]
    peer_col = header.index("Peer Address:Port")
    for line, r in zip(body, rows, strict=True):
        assert line.index(r["remote"]) == peer_col  # the long local end did not push it
        assert line[peer_col - 1] == " "
    assert len(f"[{LONG6}]:50000") > 22


def test_listeners_are_shown_by_family() -> None:
    dual = _stack(SERVER4, SERVER6, seed=1)
    dual.listen(80)
    dual.listen(81, v6only=True)
    dual.listen(82, addresses=[int(ipaddress.IPv6Address(SERVER6)),
                               int(ipaddress.IPv4Address(SERVER4))])
    assert [r["local"] for r in table.listeners(dual)] == [
        "*:80", "[::]:81", "10.0.0.2:82", "[fd00::2]:82"]
    only6 = _stack(SERVER6, seed=1)
    only6.listen(80)
    only4 = _stack(SERVER4, seed=1)
    only4.listen(80)
    assert [r["local"] for r in table.listeners(only6)] == ["[::]:80"]
    assert [r["local"] for r in table.listeners(only4)] == ["0.0.0.0:80"]


def test_dashboard_ladders_and_drawings_name_ipv6_ends() -> None:
    _net, _obs, _, (dash,) = ipv6_transfer(LONG6, dashboard=True)
    snap = dash.snapshot()
    assert {r["local"] for r in snap["rows"]} == {"[fd00::2]:7"}
    assert snap["listeners"][0]["local"] == "*:7"
    assert {doc["remote"].rsplit(":", 1)[0] for doc in snap["recent"]} == {f"[{LONG6}]"}
    ident = next(r["id"] for r in snap["rows"] if r["remote"] == f"[{LONG6}]:50000")
    routes = dash.routes()
    info = json.loads(routes["/api/conn/"](f"/api/conn/{ident}", {}).body)
    assert info["row"]["remote"] == f"[{LONG6}]:50000"
    assert info["ladders"][0]["local"] == "[fd00::2]:7"
    root = ET.fromstring(routes["/api/conn/"](f"/api/conn/{ident}/ladder.svg", {}).body)
    texts = {t.text: t for t in root.iter("{http://www.w3.org/2000/svg}text")}
    peer = texts[f"peer [{LONG6}]:50000"]
    # Too long to centre over the peer's lifeline: it starts inside the drawing.
    assert peer.get("text-anchor") == "start" and float(peer.get("x", "-1")) >= 0
    assert "stack [fd00::2]:7" in texts
    short = svg.ladder_svg([{**info["ladders"][0], "remote": "10.0.0.1:5"}])
    (label,) = [t for t in ET.fromstring(short).iter("{http://www.w3.org/2000/svg}text")
                if t.text == "peer 10.0.0.1:5"]
    assert label.get("text-anchor") == "middle"


async def test_control_socket_detail_by_ipv6_address(tmp_path: Path) -> None:
    net, obs, _, _ = ipv6_transfer()
    path = tmp_path / "c.sock"
    server = control.ControlServer(net.b, obs, lambda: net.now)
    await server.start(control.bind_socket(path), path)
    try:
        answer = await asyncio.to_thread(control.request, path, {
            "cmd": "detail", "address": "[FD00:0:0:1:0:0:0:abcd]:50000"})
        (row,) = answer["rows"]
        assert row["remote"] == f"[{CLIENT6}]:50000" and row["local"] == "[fd00::2]:7"
        ss = await asyncio.to_thread(control.request, path, {"cmd": "ss", "listening": True})
        assert len(ss["rows"]) == 2 and ss["listeners"][0]["local"] == "*:7"
        with pytest.raises(control.ControlError, match=r"\[IPv6\]:PORT"):
            await asyncio.to_thread(control.request, path, {"cmd": "detail",
                                                            "address": "fd00::2:7"})
    finally:
        await server.close()


def test_dashboard_and_metrics_bind_addresses_take_ipv6() -> None:
    six = BindAddress.parse("[FD00::2]:8080")
    assert six.host == ipaddress.IPv6Address("fd00::2") and six.port == 8080
    assert str(six) == "[fd00::2]:8080"
    assert str(six.host) in stack_addresses([ipaddress.IPv6Address("fd00::2")])
    assert str(BindAddress.parse("127.0.0.1:9")) == "127.0.0.1:9"
    with pytest.raises(ValueError, match="brackets"):
        BindAddress.parse("fd00::2:8080")
    with pytest.raises(ValueError, match="invalid IPv6"):
        BindAddress.parse("[10.0.0.1]:8080")


def test_kernel_socket_for_an_ipv6_bind_address() -> None:
    """A ``--dashboard [::1]:PORT`` on the host: an IPv6 socket (loopback only)."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback here")
    sock = bind_kernel_socket(BindAddress.parse(f"[::1]:{port}"))
    try:
        assert sock.family == socket.AF_INET6
        assert sock.getsockname()[:2] == ("::1", port)
    finally:
        sock.close()
