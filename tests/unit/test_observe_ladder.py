"""Handshake ladders (tcpstack.observe.ladder) built from a stack driven packet by
packet: what each rung says, what was negotiated, why a connection was refused."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest
from tcp_helpers import Pair, Wire, stack_pair

from tcpstack.observe.core import Observatory
from tcpstack.observe.ladder import render_json, render_text
from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp.state import State
from tcpstack.wire.tcp import ACK, FIN, RST, SYN, AnySegment, TcpOptions, TcpSegment

IRS = 5000
PEER_PORT = 40000


def watched(st: Any = None) -> tuple[Wire, list[dict[str, Any]]]:
    """A Wire whose stack has a full observatory with ladders; the list collects them."""
    wire = Wire(st)
    obs = Observatory(wire.stack, packets=True)
    obs.enable_ladders()
    seen: list[dict[str, Any]] = []
    obs.on_ladder.append(seen.append)
    obs.attach()
    return wire, seen


def syn(options: TcpOptions, seq: int = IRS, port: int = 80) -> TcpSegment:
    return TcpSegment(PEER_PORT, port, seq, 0, SYN, 64240, options)


def handshake(wire: Wire, options: TcpOptions) -> TcpSegment:
    """Peer SYN, stack SYN,ACK, peer ACK; returns the SYN,ACK."""
    (syn_ack,) = wire.send(syn(options), now=1.0)
    ts = (syn_ack.options.timestamps[0], 100) if syn_ack.options.timestamps and \
        options.timestamps else None
    wire.send(TcpSegment(PEER_PORT, 80, IRS + 1, syn_ack.seq + 1, ACK, 502,
                         TcpOptions(timestamps=(101, ts[0]) if ts else None)), now=1.002)
    return syn_ack


COMBOS = [
    pytest.param(dict(sack=True, ts=True, ws=True), id="sack-ts-ws"),
    pytest.param(dict(sack=False, ts=False, ws=False), id="none"),
    pytest.param(dict(sack=True, ts=False, ws=False), id="sack-only"),
    pytest.param(dict(sack=False, ts=True, ws=False), id="ts-only"),
    pytest.param(dict(sack=False, ts=False, ws=True), id="ws-only"),
    pytest.param(dict(sack=True, ts=True, ws=True, mss=1200), id="mss-clamped"),
]


@pytest.mark.parametrize("combo", COMBOS)
def test_opening_ladder_shows_the_three_arrows_options_and_what_was_negotiated(
        combo: dict[str, Any]) -> None:
    wire, seen = watched()
    wire.stack.listen(80)
    opts = TcpOptions(mss=combo.get("mss", 1460), wscale=7 if combo["ws"] else None,
                      sack_permitted=combo["sack"],
                      timestamps=(100, 0) if combo["ts"] else None)
    syn_ack = handshake(wire, opts)
    (doc,) = [d for d in seen if d["phase"] == "opening"]
    assert doc["outcome"] == "established"
    assert [(e["dir"], e["flags"]) for e in doc["events"]] == [
        ("in", "SYN"), ("out", "SYN,ACK"), ("in", "ACK")]
    syn_ev, syn_ack_ev, ack_ev = doc["events"]
    assert doc["isn"] == {"remote": IRS, "local": syn_ack.seq}
    assert (syn_ev["rel_seq"], syn_ack_ev["rel_seq"], syn_ack_ev["rel_ack"]) == (0, 0, 1)
    assert (ack_ev["rel_seq"], ack_ev["rel_ack"]) == (1, 1)
    assert syn_ev["seq"] == IRS and syn_ack_ev["ack"] == IRS + 1
    # The SYN,ACK answers only what the SYN offered.
    answered = syn_ack_ev["options"]
    assert answered["mss"] == 1460
    assert ("wscale" in answered) == combo["ws"]
    assert answered.get("sack_permitted", False) == combo["sack"]
    assert ("tsval" in answered) == combo["ts"]
    assert syn_ev["options"].get("mss") == combo.get("mss", 1460)
    neg = doc["negotiated"]
    assert neg["mss"] == combo.get("mss", 1460)
    assert neg["payload_per_segment"] == neg["mss"] - (12 if combo["ts"] else 0)
    assert (neg["sack"], neg["timestamps"], neg["window_scaling"]) == (
        combo["sack"], combo["ts"], combo["ws"])
    assert neg["peer_wscale"] == (7 if combo["ws"] else None)
    assert neg["initial_rtt_ms"] == pytest.approx(2.0, abs=0.01)  # SYN,ACK out to ACK in
    assert neg["srtt_ms"] == pytest.approx(2.0, abs=0.01)  # RFC 6298 2.2: SRTT = R
    assert neg["handshake_ms"] == pytest.approx(2.0, abs=0.01)
    text = render_text(doc)
    assert text.count("|--") == 2 and text.count("|<") == 1
    assert f"peer ISN {IRS}" in text and "negotiated: MSS" in text
    assert ("SACK on" if combo["sack"] else "SACK off") in text
    assert ("window scaling on" if combo["ws"] else "window scaling off") in text
    assert render_json(doc).startswith('{"type":"ladder"')


def test_syn_to_a_closed_port_is_a_refused_ladder_with_its_reason() -> None:
    wire, seen = watched()
    (rst,) = wire.send(syn(TcpOptions(mss=1460), port=81), now=2.0)
    assert rst.flags & RST
    (doc,) = seen
    assert doc["phase"] == "refused" and doc["outcome"] == "refused"
    assert [(e["dir"], e["flags"]) for e in doc["events"]] == [("in", "SYN"),
                                                               ("out", "RST,ACK")]
    reasons = {r["counter"] for r in doc["events"][0]["reasons"]}
    assert {"tcp_closed_port", "tcp_rst_sent"} <= reasons
    assert "no listener" in doc["why"]
    assert doc["events"][1]["rel_ack"] == 1  # RST,ACK acknowledges the SYN
    assert "no listener on this port" in render_text(doc)


def test_a_syn_dropped_by_a_full_accept_queue_says_so() -> None:
    wire, seen = watched()
    wire.stack.listen(80, backlog=1)
    handshake(wire, TcpOptions(mss=1460))  # fills the accept queue (nobody accepts)
    seen.clear()
    assert wire.send(TcpSegment(PEER_PORT + 1, 80, 9000, 0, SYN, 64240,
                                TcpOptions(mss=1460)), now=3.0) == []
    (doc,) = seen
    assert doc["outcome"] == "refused"
    assert "accept queue" in doc["why"]
    assert [e["dir"] for e in doc["events"]] == ["in"]


def test_a_retransmitted_syn_ack_is_marked_and_karn_leaves_no_rtt_sample() -> None:
    wire, seen = watched()
    wire.stack.listen(80)
    (syn_ack,) = wire.send(syn(TcpOptions(mss=1460)), now=1.0)
    again = wire.tick(1.0 + 1.5)  # the initial RTO is 1 s
    assert again and again[0].flags == SYN | ACK
    wire.send(TcpSegment(PEER_PORT, 80, IRS + 1, syn_ack.seq + 1, ACK, 502), now=2.6)
    (doc,) = seen
    flags = [(e["dir"], e["flags"], e.get("notes", [])) for e in doc["events"]]
    assert flags[:3] == [("in", "SYN", []), ("out", "SYN,ACK", []),
                         ("out", "SYN,ACK", ["retransmission"])]
    assert doc["negotiated"]["syn_retransmitted"] is True
    assert doc["negotiated"]["initial_rtt_ms"] is None
    assert "** retransmission" in render_text(doc)
    assert "Karn" in render_text(doc)


def test_teardown_ladder_follows_the_fins_to_time_wait() -> None:
    wire, seen = watched()
    wire.stack.listen(80)
    syn_ack = handshake(wire, TcpOptions(mss=1460))
    (tcb,) = wire.stack.tcbs.values()
    tcb.take_events()
    tcb.close()  # we close first: FIN-WAIT-1
    (fin,) = wire.out()
    assert fin.flags & FIN
    ours = syn_ack.seq + 2
    (ack,) = wire.send(TcpSegment(PEER_PORT, 80, IRS + 1, ours, ACK | FIN, 502), now=4.0)
    assert tcb.state is State.TIME_WAIT and ack.flags == ACK
    (doc,) = [d for d in seen if d["phase"] == "closing"]
    assert [(e["dir"], e["flags"]) for e in doc["events"]] == [
        ("out", "FIN,ACK"), ("in", "FIN,ACK"), ("out", "ACK")]
    assert [e["rel_seq"] for e in doc["events"]] == [1, 1, 2]
    assert doc["id"] == seen[0]["id"]
    assert doc["outcome"] == "time-wait"
    assert "2*MSL" in doc["why"]


def test_a_reset_from_the_peer_ends_the_ladder_with_the_reason() -> None:
    wire, seen = watched()
    wire.stack.listen(80)
    syn_ack = handshake(wire, TcpOptions(mss=1460))
    wire.send(TcpSegment(PEER_PORT, 80, IRS + 1, syn_ack.seq + 1, RST | ACK, 0), now=5.0)
    wire.out()
    (doc,) = [d for d in seen if d["phase"] == "closing"]
    assert doc["outcome"] == "reset"
    assert "reset by the peer" in doc["why"]
    assert doc["events"][0]["flags"] == "RST,ACK"


def test_syn_cookie_opening_is_one_ladder_marked_stateless() -> None:
    wire, seen = watched(stack_with_cookies())
    wire.stack.listen(80)
    (syn_ack,) = wire.send(syn(TcpOptions(mss=1460)), now=1.0)
    assert wire.stack.tcbs == {}
    wire.send(TcpSegment(PEER_PORT, 80, IRS + 1, syn_ack.seq + 1, ACK, 502), now=1.01)
    (doc,) = seen
    assert doc["outcome"] == "established" and doc["syn_cookie"] is True
    assert [(e["dir"], e["flags"]) for e in doc["events"]] == [
        ("in", "SYN"), ("out", "SYN,ACK"), ("in", "ACK")]
    assert "SYN cookie" in render_text(doc)


def stack_with_cookies() -> Stack:
    return Stack(StackConfig(addresses=(ipaddress.IPv4Address("10.0.0.2"),),
                             syncookies="always"), rng=random.Random(3))


def test_active_open_ladder_ends_with_our_ack() -> None:
    net = stack_pair()
    obs = Observatory(net.a, packets=True)
    obs.enable_ladders()
    seen: list[dict[str, Any]] = []
    obs.on_ladder.append(seen.append)
    obs.attach()
    net.b.listen(80)
    tcb = net.a.connect("10.0.0.2", 80, net.now)
    net.run(until=lambda: tcb.state is State.ESTABLISHED and not net.a.has_pending_output())
    net.step()
    (doc,) = seen
    assert doc["role"] == "active"
    assert [(e["dir"], e["flags"]) for e in doc["events"]] == [
        ("out", "SYN"), ("in", "SYN,ACK"), ("out", "ACK")]
    assert doc["negotiated"]["sack"] and doc["negotiated"]["timestamps"]
    assert doc["id"] == obs.info(tcb).id  # type: ignore[union-attr]


def test_window_fields_are_shown_scaled_once_scaling_is_agreed() -> None:
    wire, seen = watched()
    wire.stack.listen(80)
    handshake(wire, TcpOptions(mss=1460, wscale=7))
    ack = seen[0]["events"][2]
    assert (ack["win"], ack["win_field"], ack["wscale"]) == (502 << 7, 502, 7)
    assert "win field 502 << 7" in render_text(seen[0])
    assert "win_field" not in seen[0]["events"][0]  # a SYN's window is never scaled


def test_a_stack_configured_without_sack_and_timestamps_answers_without_them() -> None:
    from tcpstack.tcp.config import TcpConfig

    st = Stack(StackConfig(addresses=(ipaddress.IPv4Address("10.0.0.2"),),
                           tcp=TcpConfig(sack=False, timestamps=False, mss=1200)),
               rng=random.Random(5))
    wire, seen = watched(st)
    wire.stack.listen(80)
    handshake(wire, TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamps=(100, 0)))
    (doc,) = seen
    answered = doc["events"][1]["options"]
    assert answered["mss"] == 1200 and "sack_permitted" not in answered
    assert "tsval" not in answered and answered["wscale"] >= 0
    neg = doc["negotiated"]
    assert (neg["mss"], neg["sack"], neg["timestamps"], neg["window_scaling"]) == (
        1200, False, False, True)
    assert "offered: peer 1460, stack 1200" in render_text(doc)


def observed_net(lose: Any = None) -> tuple[Pair[Stack], list[dict[str, Any]]]:
    """Two stacks back to back; A has a full observatory with ladders."""
    net = stack_pair()
    net.drop = lose
    obs = Observatory(net.a, packets=True)
    obs.enable_ladders()
    seen: list[dict[str, Any]] = []
    obs.on_ladder.append(seen.append)
    obs.attach()
    return net, seen


def test_simultaneous_open_is_marked_and_its_syn_ack_is_no_retransmission() -> None:
    """RFC 9293 3.5 figure 8: both SYNs cross; each side answers with a SYN,ACK that
    repeats its ISN -- a new segment, not a retransmission."""
    net, seen = observed_net()
    ta = net.a.connect("10.0.0.2", 5000, 0.0, local_port=6000)
    tb = net.b.connect("10.0.0.1", 6000, 0.0, local_port=5000)
    from_a, from_b = net.a.packets_to_send(0.0), net.b.packets_to_send(0.0)
    net.now = 0.001
    for pkt in from_a:
        net.b.receive(pkt, net.now)
    for pkt in from_b:
        net.a.receive(pkt, net.now)
    net.run(until=lambda: ta.state is State.ESTABLISHED and tb.state is State.ESTABLISHED
            and not net.a.has_pending_output())
    (doc,) = seen
    assert doc["outcome"] == "established" and doc["simultaneous_open"] is True
    events = [(e["dir"], e["flags"]) for e in doc["events"]]
    assert events[:3] == [("out", "SYN"), ("in", "SYN"), ("out", "SYN,ACK")]
    assert ("in", "SYN,ACK") in events
    notes = [n for e in doc["events"] for n in e.get("notes", [])]
    assert notes == ["simultaneous open: their SYN crossed ours"]
    assert doc["events"][1]["rel_seq"] == 0 and doc["events"][2]["rel_ack"] == 1
    text = render_text(doc)
    assert text.startswith("== 10.0.0.1:6000 -> 10.0.0.2:5000  opening  (we connect")
    assert "** simultaneous open" in text and "** retransmission" not in text


def test_an_active_open_refused_by_the_peer_shows_our_retransmitted_syn_and_why() -> None:
    dropped: list[bytes] = []

    def lose_first(src: Stack, seg: AnySegment) -> bool:
        if not dropped:
            dropped.append(bytes(seg.payload))
            return True
        return False

    net, seen = observed_net(lose_first)
    tcb = net.a.connect("10.0.0.2", 81, 0.0)  # B listens nowhere
    net.run(until=lambda: tcb.state is State.CLOSED)
    (doc,) = seen
    assert doc["phase"] == "opening" and doc["outcome"] == "failed"
    assert "refused by the peer" in doc["why"]
    assert [(e["dir"], e["flags"], e.get("notes", [])) for e in doc["events"]] == [
        ("out", "SYN", []), ("out", "SYN", ["retransmission"]), ("in", "RST,ACK", [])]
    assert doc["events"][1]["t"] == pytest.approx(1.0)  # the initial RTO (RFC 6298 2.1)
    assert doc["events"][2]["rel_ack"] == 1
    assert "=> failed: refused by the peer" in render_text(doc)


def test_a_connection_that_times_out_gets_a_teardown_that_says_why() -> None:
    established: list[bool] = []

    def lose_after_handshake(src: Stack, seg: AnySegment) -> bool:
        return bool(established)

    net, seen = observed_net(lose_after_handshake)
    net.b.listen(80)
    tcb = net.a.connect("10.0.0.2", 80, 0.0)
    net.run(until=lambda: tcb.state is State.ESTABLISHED and not net.a.has_pending_output())
    net.step()
    established.append(True)  # from here on the link loses everything
    tcb.send(b"x" * 100)
    net.run(until=lambda: tcb.state is State.CLOSED)
    opening, closing = seen
    assert opening["outcome"] == "established"
    assert closing["phase"] == "closing" and closing["id"] == opening["id"]
    assert closing["outcome"] == "timeout" and closing["events"] == []
    assert "timed out" in closing["why"]
    assert "=> timeout: timed out" in render_text(closing)


def test_an_ack_with_a_forged_syn_cookie_is_refused_with_the_reason() -> None:
    wire, seen = watched(stack_with_cookies())
    wire.stack.listen(80)
    wire.send(syn(TcpOptions(mss=1460)), now=1.0)  # cookies are in use from now on
    seen.clear()
    (rst,) = wire.send(TcpSegment(PEER_PORT + 1, 80, IRS + 1, 123456, ACK, 502), now=1.01)
    assert rst.flags & RST and wire.stack.tcbs == {}
    (doc,) = seen
    assert doc["phase"] == "refused" and doc["outcome"] == "no connection"
    assert [(e["dir"], e["flags"]) for e in doc["events"]] == [("in", "ACK"), ("out", "RST")]
    assert "no valid SYN cookie" in doc["why"]
    assert "[tcp_syncookie_invalid]" in render_text(doc)


def test_a_rst_answering_our_fin_makes_the_teardown_a_reset() -> None:
    """As curl does after a TLS close_notify it no longer reads: FIN from the peer,
    our FIN (with data), their RST in LAST-ACK (RFC 9293 3.10.7.4)."""
    wire, seen = watched()
    wire.stack.listen(80)
    syn_ack = handshake(wire, TcpOptions(mss=1460))
    (tcb,) = wire.stack.tcbs.values()
    tcb.take_events()
    wire.send(TcpSegment(PEER_PORT, 80, IRS + 1, syn_ack.seq + 1, ACK | FIN, 502), now=2.0)
    tcb.send(b"bye")
    tcb.close()
    assert any(s.flags & FIN for s in wire.out())
    assert tcb.state is State.LAST_ACK
    wire.send(TcpSegment(PEER_PORT, 80, IRS + 2, 0, RST, 0), now=2.1)
    (doc,) = [d for d in seen if d["phase"] == "closing"]
    assert doc["outcome"] == "reset"
    assert doc["why"] == "the peer answered with RST: the connection is gone"
    assert doc["events"][-1]["flags"] == "RST" and doc["events"][-1]["dir"] == "in"
