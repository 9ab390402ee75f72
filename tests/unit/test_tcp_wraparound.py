"""Whole connections whose sequence numbers wrap past 2**32 (RFC 9293 3.4: all sequence
arithmetic is modulo 2**32)."""

from __future__ import annotations

import hashlib

import pytest
from tcp_helpers import base_config, connected_pair, stack_pair

from tcpstack.tcp import events as ev
from tcpstack.tcp.isn import TICKS_PER_SECOND, IsnGenerator
from tcpstack.tcp.seq import seq_diff
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import TcpSegment

TOP = 2**32


def blob(n: int, tag: bytes) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(tag + i.to_bytes(4, "big")).digest()
        i += 1
    return bytes(out[:n])


def exchange(a: Tcb, b: Tcb, run: object, data_a: bytes, data_b: bytes) -> tuple[bytes, bytes]:
    got_a, got_b = bytearray(), bytearray()
    pos = {"a": 0, "b": 0}

    def app() -> None:
        for name, tcb, data in (("a", a, data_a), ("b", b, data_b)):
            if tcb.state in (State.ESTABLISHED, State.CLOSE_WAIT) and pos[name] < len(data):
                if tcb.send_buffered < 32 * 1024:
                    tcb.send(data[pos[name]:pos[name] + 8192])
                    pos[name] += 8192
        got_a.extend(a.recv())
        got_b.extend(b.recv())

    assert callable(run)
    run(app, until=lambda: len(got_b) >= len(data_a) and len(got_a) >= len(data_b))
    run(until=lambda: a.snd_una == a.snd_max and b.snd_una == b.snd_max)
    return bytes(got_a), bytes(got_b)


@pytest.mark.parametrize(("iss_a", "iss_b"), [(TOP - 100, TOP - 50), (TOP - 1, TOP - 30000),
                                              (2**31 - 10, TOP - 5)])
def test_transfer_across_sequence_wrap(iss_a: int, iss_b: int) -> None:
    """RFC 9293 3.4: a transfer crossing 2**32 in both directions is byte-exact, and the
    connection closes in order afterwards."""
    pair = connected_pair(iss_a=iss_a, iss_b=iss_b)
    data_a, data_b = blob(100_000, b"a"), blob(60_000, b"b")
    got_a, got_b = exchange(pair.a, pair.b, pair.run, data_a, data_b)
    assert got_b == data_a and got_a == data_b
    assert seq_diff(pair.a.snd_una, iss_a) == 1 + len(data_a)
    assert seq_diff(pair.b.snd_una, iss_b) == 1 + len(data_b)
    pair.a.close()
    pair.b.close()
    pair.run(until=lambda: pair.a.state is State.CLOSED and pair.b.state is State.CLOSED)
    assert pair.a.take_events()[-1] == ev.Terminated(None)
    assert pair.b.take_events()[-1] == ev.Terminated(None)


def test_transfer_across_wrap_with_losses() -> None:
    """RFC 6298 5.4 + RFC 9293 3.4: go-back retransmission from SND.UNA works across the wrap."""
    pair = connected_pair(iss_a=TOP - 3000, iss_b=TOP - 10)
    counter = {"n": 0}

    def lose(src: Tcb, seg: TcpSegment) -> bool:
        counter["n"] += 1
        return counter["n"] % 7 == 0 and len(seg.payload) > 0

    pair.drop = lose
    data_a, data_b = blob(50_000, b"x"), blob(20_000, b"y")
    got_a, got_b = exchange(pair.a, pair.b, pair.run, data_a, data_b)
    assert got_b == data_a and got_a == data_b
    assert pair.filtered > 5
    assert pair.a.state is State.ESTABLISHED and pair.b.state is State.ESTABLISHED


def test_stack_connection_with_isn_near_2_32() -> None:
    """RFC 6528: pick the clock so the Stack's ISN lands just below 2**32; the whole
    Stack-to-Stack transfer then wraps."""
    secret = bytes(range(16))
    a_ip, b_ip, port = 0x0A000001, 0x0A000002, 45000
    offset = IsnGenerator(secret).offset(a_ip, port, b_ip, 80)
    ticks = (TOP - 700 - offset) % TOP
    start = ticks / TICKS_PER_SECOND
    net = stack_pair(base_config(msl=1.0), secret_a=secret)
    net.now = start
    net.b.listen(80)
    client = net.a.connect("10.0.0.2", 80, start, local_port=port)
    assert TOP - 1000 < client.iss < TOP
    server: list[Tcb] = []

    def watch() -> None:
        if not server and net.b.tcbs:
            server.extend(net.b.tcbs.values())

    net.run(watch, until=lambda: client.state is State.ESTABLISHED and bool(server)
            and server[0].state is State.ESTABLISHED)
    data = blob(30_000, b"s")
    got = bytearray()

    def app() -> None:
        if client.send_buffered == 0 and client.state is State.ESTABLISHED and not got:
            client.send(data)
        got.extend(server[0].recv())

    net.run(app, until=lambda: len(got) >= len(data))
    assert bytes(got) == data
    assert client.snd_una < 30_000  # wrapped past zero
