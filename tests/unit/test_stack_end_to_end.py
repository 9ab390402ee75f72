"""Two Stacks joined by an in-memory path with a fake clock: bulk transfer, many
connections, ISN spread, loss recovery, corrupted packets (RFC 9293 end to end)."""

from __future__ import annotations

import hashlib
from itertools import pairwise

from tcp_helpers import Pair, ip, stack, stack_pair

from tcpstack.link.impair import ImpairSpec
from tcpstack.stack import Stack
from tcpstack.tcp import events as ev
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb

MB = 1 << 20


def payload(n: int, seed: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.blake2b(f"{seed}:{counter}".encode(), digest_size=64).digest()
        counter += 1
    return bytes(out[:n])


class Endpoint:
    """A minimal application: writes ``data`` with back-pressure, reads everything, and
    closes once it has sent all and seen the peer's end of stream."""

    def __init__(self, tcb: Tcb, data: bytes, chunk: int = 64 * 1024) -> None:
        self.tcb = tcb
        self.data = data
        self.off = 0
        self.chunk = chunk
        self.received = bytearray()
        self.eof = False
        self.closed = False
        self.terminated: ev.Terminated | None = None

    def poll(self) -> None:
        tcb = self.tcb
        for e in tcb.take_events():
            if isinstance(e, ev.EndOfStream):
                self.eof = True
            elif isinstance(e, ev.Terminated):
                self.terminated = e
        self.received += tcb.recv()
        if self.closed or tcb.state is State.CLOSED:
            return
        while self.off < len(self.data) and tcb.send_buffered < tcb.cfg.snd_buf:
            tcb.send(self.data[self.off:self.off + self.chunk])
            self.off += self.chunk
        if self.off >= len(self.data) and self.eof:
            tcb.close()
            self.closed = True
        elif self.off >= len(self.data) and not tcb.fin_queued:
            tcb.shutdown_write()


def transfer(net: Pair[Stack], size_ab: int, size_ba: int) -> tuple[Endpoint, Endpoint]:
    net.b.listen(80)
    client = Endpoint(net.a.connect("10.0.0.2", 80, net.now), payload(size_ab, 1))
    server: list[Endpoint] = []

    def app() -> None:
        if not server and net.b.tcbs:
            (tcb,) = net.b.tcbs.values()
            if tcb.state is State.ESTABLISHED:
                server.append(Endpoint(tcb, payload(size_ba, 2)))
        client.poll()
        for s in server:
            s.poll()

    net.run(app, until=lambda: bool(server) and client.tcb.state is State.CLOSED
            and server[0].tcb.state is State.CLOSED)
    app()
    return client, server[0]


def test_one_megabyte_both_directions_byte_exact() -> None:
    """RFC 9293 3.8 / 3.10: a full connection moves 1 MiB each way intact, then closes
    in order (one side via TIME-WAIT after 2 MSL)."""
    net = stack_pair(TcpConfig(msl=1.0))
    client, server = transfer(net, MB, MB)
    assert bytes(server.received) == client.data
    assert bytes(client.received) == server.data
    assert client.terminated == ev.Terminated(None)
    assert server.terminated == ev.Terminated(None)
    assert not net.a.tcbs and not net.b.tcbs
    for st in (net.a, net.b):
        assert st.counters["internal_error"] == 0
        assert st.counters["tcp_rst_sent"] == 0


def test_transfer_survives_packet_loss() -> None:
    """RFC 6298 / RFC 5681: with 8% of packets dropped, retransmission still delivers every
    byte in order."""
    net = stack_pair(TcpConfig(msl=1.0, rto_min=0.2), path=ImpairSpec(loss=8, seed=99))
    client, server = transfer(net, 200_000, 50_000)
    assert net.dropped >= 5
    assert bytes(server.received) == client.data
    assert bytes(client.received) == server.data
    assert client.terminated is not None and server.terminated is not None


def test_transfer_survives_corrupted_packets() -> None:
    """RFC 9293 3.1 / RFC 1071: every packet with a flipped bit fails the stack's TCP
    checksum check, is counted and dropped, and retransmission repairs the stream."""
    net = stack_pair(TcpConfig(msl=1.0, rto_min=0.2), path=ImpairSpec(corrupt=5, seed=4))
    client, server = transfer(net, 200_000, 50_000)
    assert bytes(server.received) == client.data
    assert bytes(client.received) == server.data
    corrupted = net.path.counters["out_corrupted"] + net.path.counters["in_corrupted"]
    assert corrupted >= 5
    # The path delivers at once, so every corrupted packet has reached a stack.
    rejected = sum(st.counters[reason] for st in (net.a, net.b)
                   for reason in ("tcp_bad_checksum", "tcp_bad_data_offset"))
    assert rejected == corrupted


def test_hundred_concurrent_connections() -> None:
    """RFC 9293 3.10.7: 4-tuple demultiplexing keeps 100 simultaneous connections apart."""
    net = stack_pair(TcpConfig(msl=0.5))
    net.b.listen(80, backlog=128)
    clients = {}
    for i in range(100):
        tcb = net.a.connect("10.0.0.2", 80, 0.0)
        clients[tcb] = f"hello from client {i:03d} ".encode() * 20
    answered: dict[Tcb, bytes] = {}
    server_seen: set[Tcb] = set()
    closed_clients: set[Tcb] = set()
    sent: set[Tcb] = set()

    def app() -> None:
        for tcb in list(net.b.tcbs.values()):  # echo server
            if tcb.state in (State.ESTABLISHED, State.CLOSE_WAIT):
                server_seen.add(tcb)
                data = tcb.recv()
                if data:
                    tcb.send(data)
                if tcb.state is State.CLOSE_WAIT and tcb.recv_buffered == 0:
                    tcb.close()
        for tcb, msg in clients.items():
            if tcb.state is State.ESTABLISHED and tcb not in sent:
                tcb.send(msg)
                sent.add(tcb)
            got = answered.get(tcb, b"") + tcb.recv()
            answered[tcb] = got
            if len(got) >= len(msg) and tcb not in closed_clients:
                tcb.close()
                closed_clients.add(tcb)

    net.run(app, until=lambda: not net.a.tcbs and not net.b.tcbs)
    assert len(server_seen) == 100
    assert all(answered[t] == m for t, m in clients.items())
    assert len({t.local_port for t in clients}) == 100
    assert net.b.listeners[80].half_open == 0


def test_fifty_isns_distinct_and_not_arithmetic() -> None:
    """RFC 6528 / RFC 9293 3.4.1: ISNs of different connections are unpredictable:
    all distinct, and not a fixed-step sequence."""
    st = stack("10.0.0.1")
    isns = [st.connect("10.0.0.2", 80, i * 0.001).iss for i in range(50)]
    assert len(set(isns)) == 50
    steps = {(b - a) & 0xFFFFFFFF for a, b in pairwise(isns)}
    assert len(steps) > 40
    same_time = [st.connect("10.0.0.3", 443, 5.0).iss for _ in range(50)]
    assert len(set(same_time)) == 50
    steps = {(b - a) & 0xFFFFFFFF for a, b in pairwise(same_time)}
    assert len(steps) > 40
    assert ip("10.0.0.1") in st.addresses
