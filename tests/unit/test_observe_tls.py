"""The TLS handshake on the ladder (tcpstack.observe.tls): real TLS 1.3 and 1.2
handshakes made by the standard library's ssl module over two stacks in memory,
an alert, a connection that is not TLS, and the parser's bounds."""

from __future__ import annotations

import ssl
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from tcp_helpers import Pair, stack_pair

from tcpstack.observe import svg
from tcpstack.observe.core import Observatory
from tcpstack.observe.ladder import render_json, render_text
from tcpstack.observe.tls import MAX_BYTES, TlsWatch
from tcpstack.stack import Stack
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb

certs = pytest.importorskip("tcpstack.certs")
pytest.importorskip("cryptography", reason="throwaway certificates need cryptography")

CERT = certs.self_signed(dns_names=("example.test",))


def contexts(client_max: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
             server_min: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
             ) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = certs.server_context(CERT, alpn=("h2", "http/1.1"))
    server.minimum_version = server_min
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.maximum_version = client_max
    client.set_alpn_protocols(["h2", "http/1.1"])
    return client, server


class TlsEnd:
    """An ssl.SSLObject over memory BIOs, pumping its bytes through a connection."""

    def __init__(self, context: ssl.SSLContext, server: bool) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=server,
                                    server_hostname=None if server else "example.test")
        self.done = False
        self.error: ssl.SSLError | None = None

    def pump(self, tcb: Tcb) -> None:
        data = tcb.recv()
        if data:
            self.incoming.write(data)
        if not self.done and self.error is None:
            try:
                self.obj.do_handshake()
                self.done = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as e:
                self.error = e
        out = self.outgoing.read()
        if out and tcb.state in (State.ESTABLISHED, State.CLOSE_WAIT):
            tcb.send(out)


def handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, *,
              observe_server: bool = True
              ) -> tuple[list[dict[str, Any]], TlsEnd, TlsEnd, Pair[Stack]]:
    """Client on A, server on B; the observed stack's ladders are returned."""
    net = stack_pair()
    obs = Observatory(net.b if observe_server else net.a, packets=True)
    obs.enable_ladders()
    seen: list[dict[str, Any]] = []
    obs.on_ladder.append(seen.append)
    obs.attach()
    net.b.listen(443)
    a = net.a.connect("10.0.0.2", 443, net.now)
    net.run(until=lambda: a.state is State.ESTABLISHED and len(net.b.tcbs) == 1)
    (b,) = net.b.tcbs.values()
    client, server = TlsEnd(client_ctx, False), TlsEnd(server_ctx, True)

    def app() -> None:
        client.pump(a)
        server.pump(b)

    net.run(app, until=lambda: (client.done and server.done) or client.error is not None
            or server.error is not None)
    if client.done and server.done:
        client.obj.write(b"GET / HTTP/1.1\r\n\r\n")
        client.pump(a)
        net.run(app, until=lambda: not net.a.has_pending_output())
    return seen, client, server, net


def tls_ladder(seen: list[dict[str, Any]]) -> dict[str, Any]:
    (doc,) = [d for d in seen if d["phase"] == "tls"]
    return doc


def test_a_tls13_handshake_shows_the_hellos_flights_and_timing() -> None:
    seen, _client, server, _ = handshake(*contexts())
    doc = tls_ladder(seen)
    assert doc["outcome"] == "established" and doc["client"] == "peer"
    assert doc["id"] == next(d for d in seen if d["phase"] == "opening")["id"]
    ch, sh = doc["client_hello"], doc["server_hello"]
    assert ch["sni"] == "example.test" and ch["alpn"] == ["h2", "http/1.1"]
    assert ch["versions"][0] == "TLS 1.3" and "x25519" in ch["groups"]
    assert ch["key_shares"] and ch["key_shares"][0] in ch["groups"]
    assert sh["version"] == "TLS 1.3" == {"TLSv1.3": "TLS 1.3"}[server.obj.version() or ""]
    assert sh["cipher"] == server.obj.cipher()[0]  # OpenSSL names TLS 1.3 suites as IANA
    assert sh["group"] == ch["key_shares"][0]
    assert "alpn" not in sh and server.obj.selected_alpn_protocol() == "h2"  # encrypted
    events = doc["events"]
    assert [(e["sender"], e["dir"]) for e in events] == [
        ("client", "in"), ("server", "out"), ("client", "in")]
    assert events[0]["records"] == ["ClientHello"]
    assert events[1]["records"][0] == "ServerHello" and "encrypted" in events[1]["records"]
    assert "encrypted" in events[2]["records"]  # the client's Finished
    assert all(e["after_ms"] >= 0 and e["took_ms"] >= 0 for e in events)
    assert doc["handshake_ms"] >= events[-1]["t"] * 1000 - 1e-6
    text = render_text(doc)
    assert "TLS handshake" in text and "SNI example.test; ALPN h2, http/1.1" in text
    assert f"=> TLS established: TLS 1.3, {sh['cipher']}, group {sh['group']}" in text
    assert "ALPN protocol travels encrypted" in text
    assert text.count("|--") == 2 and text.count("|<") == 1
    assert render_json(doc).startswith('{"type":"ladder","phase":"tls"')
    drawing = ET.fromstring(svg.ladder_svg(seen))  # TCP opening, then TLS: one diagram
    arrows = [g.get("class") for g in drawing.iter("{http://www.w3.org/2000/svg}g")
              if "arrow" in (g.get("class") or "")]
    assert arrows == ["arrow in syn", "arrow out syn ack", "arrow in ack",
                      "arrow in tls", "arrow out tls", "arrow in tls"]


def test_a_tls12_handshake_seen_from_the_client_side_has_four_flights() -> None:
    seen, client, _server, _ = handshake(*contexts(client_max=ssl.TLSVersion.TLSv1_2),
                                         observe_server=False)
    doc = tls_ladder(seen)
    assert doc["outcome"] == "established" and doc["client"] == "stack"
    sh = doc["server_hello"]
    assert sh["version"] == "TLS 1.2" and sh["alpn"] == "h2"
    assert sh["group"]  # from the ServerKeyExchange
    assert sh["cipher"].startswith("TLS_ECDHE_")
    senders = [(e["sender"], e["dir"]) for e in doc["events"]]
    assert senders == [("client", "out"), ("server", "in"), ("client", "out"),
                       ("server", "in")]
    assert doc["events"][1]["records"][:2] == ["ServerHello", "Certificate"]
    assert "ChangeCipherSpec" in doc["events"][2]["records"]
    assert client.obj.version() == "TLSv1.2"


def test_a_version_the_server_refuses_ends_the_ladder_with_its_alert() -> None:
    seen, _client, server, _ = handshake(*contexts(client_max=ssl.TLSVersion.TLSv1_2,
                                                   server_min=ssl.TLSVersion.TLSv1_3))
    assert server.error is not None
    doc = tls_ladder(seen)
    assert doc["outcome"] == "alert"
    assert doc["why"] == "server sent alert fatal protocol_version (70)"
    assert doc["events"][-1]["records"] == ["Alert fatal protocol_version"]
    assert "=> TLS alert: server sent alert fatal protocol_version" in render_text(doc)


def test_a_connection_that_is_not_tls_gets_no_tls_ladder() -> None:
    net = stack_pair()
    obs = Observatory(net.b, packets=True)
    obs.enable_ladders()
    seen: list[dict[str, Any]] = []
    obs.on_ladder.append(seen.append)
    obs.attach()
    net.b.listen(80)
    a = net.a.connect("10.0.0.2", 80, net.now)
    net.run(until=lambda: a.state is State.ESTABLISHED and len(net.b.tcbs) == 1)
    a.send(b"\x16\x03GET / HTTP/1.1\r\n\r\n"[2:])
    net.run(until=lambda: not net.a.has_pending_output())
    (info,) = obs.conns.values()
    assert info.tls is None and info.tls_over
    assert [d["phase"] for d in seen] == ["opening"]


def client_hello_bytes() -> bytes:
    client, _ = contexts()
    end = TlsEnd(client, False)
    with pytest.raises(ssl.SSLWantReadError):
        end.obj.do_handshake()
    return end.outgoing.read()


def test_pieces_out_of_order_are_put_together() -> None:
    hello = client_hello_bytes()
    watch = TlsWatch()
    half = len(hello) // 2
    watch.feed("in", half, hello[half:], 1.0)  # the second half first
    assert watch.client_hello is None and watch.records == []
    watch.feed("in", 0, hello[:half], 2.0)
    assert watch.client_hello is not None and watch.client_hello["sni"] == "example.test"
    assert watch.records[0].label == "ClientHello" and watch.records[0].t == 2.0


def test_a_handshake_longer_than_the_bound_is_reported_and_dropped() -> None:
    watch = TlsWatch()
    record = b"\x16\x03\x03\x40\x00" + bytes(0x4000)  # 16 KiB handshake fragments
    offset = 0
    while watch.active:
        watch.feed("in", offset, record, 1.0)
        offset += len(record)
        assert offset <= MAX_BYTES + len(record)
    assert watch.result is not None and watch.result["outcome"] == "not followed"
    assert watch.dirs["in"].buf == bytearray()  # nothing kept
