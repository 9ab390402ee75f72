"""A read's connections before its SYNs: Stack.receive_batch sets the bare SYNs of a
read aside (tcpstack.wire.triage), the runtime writes what the rest produced, then
Stack.receive_rest answers the SYNs -- without reordering any flow, and without a
second SYN budget for the read."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import struct

import pytest
from tcp_helpers import IRS, packet, parse

from tcpstack.aio.runtime import StackRuntime
from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.seq import seq_add
from tcpstack.tcp.state import State
from tcpstack.wire import virtio
from tcpstack.wire.tcp import (
    ACK,
    CWR,
    ECE,
    FIN,
    PSH,
    RST,
    SYN,
    OutPacket,
    TcpOptions,
    TcpSegment,
)
from tcpstack.wire.triage import flow_key, is_bare_syn

GET = b"GET / HTTP/1.0\r\n\r\n"


def server(**config: object) -> Stack:
    cfg = StackConfig(addresses=(ipaddress.IPv4Address("10.0.0.2"),),
                      tcp=TcpConfig(delayed_ack=0.0), **config)
    return Stack(cfg, isn_secret=b"read order secret", rng=random.Random(3))


def syn(port: int, dport: int = 80) -> bytearray:
    return packet(TcpSegment(port, dport, IRS, 0, SYN, 64240, TcpOptions(mss=1460)),
                  "10.0.0.1", "10.0.0.2")


def seg(port: int, seq: int, ack: int, flags: int, payload: bytes = b"",
        dport: int = 80) -> bytearray:
    return packet(TcpSegment(port, dport, seq, ack, flags, 64240, payload=payload),
                  "10.0.0.1", "10.0.0.2")


def out(st: Stack, now: float) -> list[TcpSegment]:
    return [parse(b"".join(p) if isinstance(p, tuple) else bytes(p)).seg
            for p in st.packets_to_send(now)]


def established(st: Stack, port: int = 2000) -> int:
    """A connection on ``port`` through a cookie handshake; returns our ISS + 1."""
    st.receive_rest(st.receive_batch([syn(port)], 0.0), 0.0)
    (synack,) = out(st, 0.0)
    snd = seq_add(synack.seq, 1)
    assert st.receive_batch([seg(port, IRS + 1, snd, ACK)], 0.1) == []
    out(st, 0.1)
    assert [t.state for t in st.tcbs.values()] == [State.ESTABLISHED]
    return snd


# ------------------------------------------------------------------- triage


def _ipv6_tcp(flags: int, data_offset_low: int = 0, next_header: int = 6) -> bytes:
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, 20, next_header, 64,
                      socket.inet_pton(socket.AF_INET6, "fd00::1"),
                      socket.inet_pton(socket.AF_INET6, "fd00::2"))
    return ip6 + struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x50 | data_offset_low, flags,
                             1000, 0, 0)


@pytest.mark.parametrize("flags, bare", [
    (SYN, True), (SYN | ACK, False), (SYN | FIN, False), (SYN | RST, False),
    (SYN | ECE | CWR, False), (ACK, False), (0, False)])
def test_only_syn_alone_is_a_bare_syn_in_ipv4_and_ipv6(flags: int, bare: bool) -> None:
    ip4 = bytes(packet(TcpSegment(40000, 80, 1, 0, flags, 1000), "10.0.0.1", "10.0.0.2"))
    assert is_bare_syn(ip4, 0) is bare
    assert is_bare_syn(bytes(virtio.HEADER_LEN) + ip4, virtio.HEADER_LEN) is bare
    assert is_bare_syn(_ipv6_tcp(flags), 0) is bare


def test_every_flag_combination_is_judged_alike_in_bytes_bytearray_and_memoryview() -> None:
    for flags in range(256):
        ip4 = bytes(packet(TcpSegment(40000, 80, 1, 0, flags, 1000), "10.0.0.1", "10.0.0.2"))
        verdict = is_bare_syn(ip4, 0)
        assert verdict is (flags == SYN)
        assert is_bare_syn(bytearray(ip4), 0) is verdict
        assert is_bare_syn(memoryview(ip4), 0) is verdict
        assert flow_key(memoryview(ip4), 0) == flow_key(ip4, 0)


def test_fragments_the_ae_bit_other_protocols_and_short_packets_are_not_bare_syns() -> None:
    ip4 = bytearray(syn(40000))
    assert is_bare_syn(ip4, 0)
    frag = bytearray(ip4)
    frag[6] |= 0x20  # more fragments
    later = bytearray(ip4)
    later[7] = 1  # a fragment offset
    ae = bytearray(ip4)
    ae[20 + 12] |= 0x01  # the AE bit beside the data offset
    udp = bytearray(ip4)
    udp[9] = 17
    for p in (frag, later, ae, udp, ip4[:39], b"", b"\x45", b"\x00" * 60):
        assert not is_bare_syn(bytes(p), 0)
    assert not is_bare_syn(_ipv6_tcp(SYN, data_offset_low=1), 0)
    assert not is_bare_syn(_ipv6_tcp(SYN, next_header=0), 0)  # behind a hop-by-hop header


def test_flow_key_is_shared_by_one_flow_and_differs_between_flows() -> None:
    a = flow_key(syn(40000), 0)
    assert a == flow_key(seg(40000, IRS + 1, 7, ACK, b"data"), 0)
    assert a != flow_key(syn(40001), 0)
    assert a != flow_key(syn(40000, dport=81), 0)
    assert flow_key(_ipv6_tcp(SYN), 0) == flow_key(_ipv6_tcp(ACK), 0) != a
    assert flow_key(b"", 0) == flow_key(b"\x45\x00", 0) == b""


# -------------------------------------------------------------------- stack


def test_a_connections_segment_is_processed_before_the_syns_of_its_read() -> None:
    st = server(syncookies="always")
    st.listen(80)
    snd = established(st)
    read = [syn(3000 + i) for i in range(5)] + [seg(2000, IRS + 1, snd, ACK | PSH, GET)] + \
        [syn(3005 + i) for i in range(5)]
    syns = st.receive_batch(read, 0.2)
    assert syns == read[:5] + read[6:]
    first = out(st, 0.2)  # what the runtime writes before answering them
    assert [(s.flags, s.dst_port, s.ack) for s in first] == [(ACK, 2000, IRS + 1 + len(GET))]
    assert st.counters["tcp_syncookie_sent"] == 1  # the handshake's, none of this read's
    st.receive_rest(syns, 0.2)
    rest = out(st, 0.2)
    assert [s.dst_port for s in rest] == list(range(3000, 3010))
    assert all(s.flags == SYN | ACK for s in rest)


def test_a_read_of_only_syns_or_of_none_is_processed_in_one_pass() -> None:
    st = server(syncookies="always")
    st.listen(80)
    assert st.receive_batch([syn(3000 + i) for i in range(4)], 0.0) == []
    assert len(out(st, 0.0)) == 4
    snd = established(st)
    assert st.receive_batch([seg(2000, IRS + 1, snd, ACK | PSH, GET)], 0.2) == []
    assert len(out(st, 0.2)) == 1


def test_a_later_packet_of_a_set_aside_syns_flow_stays_behind_it() -> None:
    """A SYN, then a RST of the same flow, in one read: processed in that order (the
    RST then resets the half-open connection the SYN made), not the RST first."""
    st = server()  # no cookies: the SYN makes a half-open connection
    st.listen(80)
    snd = established(st)
    read = [syn(4000), seg(2000, IRS + 1, snd, ACK | PSH, GET), seg(4000, IRS + 1, 0, RST)]
    syns = st.receive_batch(read, 0.2)
    assert syns == [read[0], read[2]]
    out(st, 0.2)
    st.receive_rest(syns, 0.2)
    out(st, 0.2)
    assert [t.remote_port for t in st.tcbs.values()] == [2000]  # 4000 opened, then reset


def test_the_second_pass_gets_what_the_first_left_of_the_syn_budget() -> None:
    """A read opens at most syn_batch_limit connections, however it is split: the flush
    between the passes does not start a fresh budget."""
    st = server(syn_batch_limit=1)
    st.listen(81, syn_backlog=1)  # port 81 answers with cookies once one SYN waits
    st.listen(80)  # port 80's SYNs open connections, spending the budget
    st.receive_rest(st.receive_batch([syn(1000, dport=81)], 0.0), 0.0)
    out(st, 0.0)
    st.receive_rest(st.receive_batch([syn(1001, dport=81)], 0.0), 0.0)
    (cookie,) = out(st, 0.0)
    assert st.counters["tcp_syncookie_sent"] == 1
    read = [syn(2000), seg(1001, IRS + 1, seq_add(cookie.seq, 1), ACK, dport=81)]
    syns = st.receive_batch(read, 0.1)  # the cookie ACK opens one: the budget is spent
    assert syns == read[:1]
    out(st, 0.1)
    st.receive_rest(syns, 0.1)
    assert st.counters["tcp_syncookie_accepted"] == 1
    assert st.counters["tcp_syn_deferred"] == 1  # the SYN waits for the next round
    assert not any(t.remote_port == 2000 for t in st.tcbs.values())
    st.packets_to_send(0.1)
    st.handle_timer(0.1)
    assert any(t.remote_port == 2000 for t in st.tcbs.values())


# ------------------------------------------------------------------ runtime


class ReadDevice:
    """A device that hands out scripted reads and records each write call."""

    def __init__(self) -> None:
        self.sock, self.peer = socket.socketpair()
        self.sock.setblocking(False)
        self.inbox: list[bytes] = []
        self.writes: list[list[bytes]] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_batch(self, max_packets: int = 256, bufsize: int = 65536) -> list[bytes]:
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            pass
        batch, self.inbox = self.inbox, []
        return batch

    def write_batch(self, packets: list[OutPacket]) -> int:
        self.writes.append([b"".join(p) if isinstance(p, tuple) else bytes(p)
                            for p in packets])
        return len(packets)


async def test_the_runtime_writes_a_connections_reply_before_answering_the_reads_syns(
) -> None:
    st = server(syncookies="always")
    st.listen(80)
    snd = established(st)
    dev = ReadDevice()
    rt = StackRuntime(st, dev, lambda tcb, events: None)
    rt.start()
    try:
        dev.inbox = [bytes(syn(3000 + i)) for i in range(8)] + \
            [bytes(seg(2000, IRS + 1, snd, ACK | PSH, GET))]
        dev.peer.send(b"!")
        for _ in range(200):
            if sum(len(w) for w in dev.writes) >= 9:
                break
            await asyncio.sleep(0.005)
        first, second = dev.writes[0], [p for w in dev.writes[1:] for p in w]
        assert [parse(p).seg.dst_port for p in first] == [2000]
        assert [parse(p).seg.flags for p in second] == [SYN | ACK] * 8
    finally:
        rt.stop()
        dev.sock.close()
        dev.peer.close()


def test_the_budget_a_split_read_left_applies_to_its_own_second_pass_only() -> None:
    st = server(syn_batch_limit=1)
    st.listen(81, syn_backlog=1)
    st.listen(80)
    st.receive_rest(st.receive_batch([syn(1000, dport=81)], 0.0), 0.0)
    out(st, 0.0)
    st.receive_rest(st.receive_batch([syn(1001, dport=81)], 0.0), 0.0)
    (cookie,) = out(st, 0.0)
    read = [syn(2000), seg(1001, IRS + 1, seq_add(cookie.seq, 1), ACK, dport=81)]
    syns = st.receive_batch(read, 0.1)
    st.receive_rest(syns, 0.1)
    st.packets_to_send(0.1)  # the read is over: a fresh budget
    st.receive_rest([], 0.2)  # nothing set aside: nothing of the old read applies
    st.receive_rest(st.receive_batch([syn(3000)], 0.2), 0.2)
    assert any(t.remote_port == 3000 for t in st.tcbs.values())
    assert st.counters["tcp_syn_deferred"] == 1  # only 2000, earlier
