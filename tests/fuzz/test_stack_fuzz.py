"""Property tests of :class:`tcpstack.stack.Stack`: random and mutated packets.

A Stack with listeners (one with a tiny backlog) receives a random sequence of
packets -- valid handshakes, data, FINs and RSTs from a few peers that follow
what the stack answers, ICMP, UDP, other protocols, IPv6, fragments and raw
garbage -- each possibly mutated (bit flips, truncation, garbage options, bad
checksums and valid checksums over garbage, wrong addresses, a virtio-net header
that vouches for a bad checksum), interleaved with application calls on the
connections it made and with clock advances. After every packet:

* nothing raised and nothing was counted as ``internal_error``;
* the packet was counted by a reason (a drop, a reply, an accepted SYN, ...)
  unless it reached an existing connection (whose drops the engine counts);
* every connection keeps the engine invariants (``engine_harness.check_tcb``);
* each listener's half-open count matches its SYN-RECEIVED connections and stays
  within its SYN queue, its accept queue within its backlog; the stack's deadline
  is None or finite;
* everything the stack sends parses with valid checksums, from one of its own
  addresses to a unicast one.
"""

from __future__ import annotations

import ipaddress
import math
import random
import struct
from collections import Counter
from dataclasses import dataclass, field

from engine_harness import check_tcb
from fuzz_settings import examples
from hypothesis import given
from hypothesis import strategies as st

from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp.accecn import ace_flags
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.seq import seq_add
from tcpstack.tcp.state import State
from tcpstack.wire import checksum as ck
from tcpstack.wire import icmp as icmp_wire
from tcpstack.wire import virtio
from tcpstack.wire.errors import Malformed
from tcpstack.wire.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP, build_ipv4, parse_ipv4
from tcpstack.wire.tcp import (
    ACK,
    FIN,
    NO_OPTIONS,
    PSH,
    RST,
    SYN,
    TcpOptions,
    TcpSegment,
    emit_tcp_ipv4,
    parse_tcp,
)
from tools.fuzz_daemon import fix_ip_checksum, fix_l4_checksum

US = int(ipaddress.IPv4Address("10.0.0.2"))
# 80: backlog 64; 7 (drawn twice as often): SYN queue 1, so SYN cookies answer; 81: none
PORTS = (80, 7, 7, 81)
PEERS = (("10.0.0.1", 40000), ("10.0.0.1", 40001), ("10.0.0.7", 5555), ("192.0.2.9", 1))
BAD_SOURCES = ("0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1", "10.0.0.2")
NOT_COUNTED = frozenset({"ip_received", "tcp_received"})
MAX_WRITE = 3000


def _ip(addr: str) -> int:
    return int(ipaddress.IPv4Address(addr))


# ------------------------------------------------------------------ the peers


@dataclass
class Peer:
    """A client that follows the stack's answers (as far as mutations let it)."""

    addr: int
    port: int
    dport: int
    seq: int  # our next sequence number
    ack: int = 0  # the stack's next sequence number, once its SYN,ACK was seen


@dataclass
class World:
    stack: Stack
    vnet: bool
    rng: random.Random
    peers: list[Peer] = field(default_factory=list)
    now: float = 0.0
    ident: int = 0


# ------------------------------------------------------------------ packets

@dataclass(frozen=True)
class Packet:
    """``kind`` says what a well-behaved sender would send; ``mutation`` how it is spoiled."""

    kind: str
    peer: int
    dport: int
    length: int
    flags: int
    mutation: str
    where: int
    value: int
    vnet_flags: int


# Repetitions weight the draw: mostly a conversation, with everything else mixed in.
KINDS = ("syn", "syn", "syn", "ack", "ack", "ack", "ack", "data", "data", "data", "data",
         "fin", "rst", "rst_off", "tcp_random", "icmp_echo", "icmp_other", "udp",
         "proto_other", "ipv6", "bad_version", "fragment", "raw")
MUTATIONS = ("none",) * 12 + (
    "bitflip", "truncate", "extend", "options_garbage", "bad_ip_checksum", "bad_l4_checksum",
    "garbage_fixed", "wrong_dst", "bad_source", "byte_fixed")

packets = st.builds(
    Packet,
    kind=st.sampled_from(KINDS),
    peer=st.integers(0, len(PEERS) - 1),
    dport=st.sampled_from(PORTS),
    length=st.sampled_from([0, 0, 1, 100, 536, 1460]),
    flags=st.integers(0, 0x1FF),  # AE too: SYNs asking for Accurate ECN (RFC 9768)
    mutation=st.sampled_from(MUTATIONS),
    where=st.integers(0, 2000),
    value=st.integers(0, 0xFFFFFFFF),
    vnet_flags=st.sampled_from([0, 0, virtio.F_NEEDS_CSUM, virtio.F_DATA_VALID, 0xFF]),
)


def _tcp(w: World, p: Peer, flags: int, seq: int, ack: int, payload: bytes = b"",
         options: TcpOptions = NO_OPTIONS, ecn: int = 0) -> bytearray:
    w.ident += 1
    seg = TcpSegment(p.port, p.dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, 65535,
                     options, payload, 0, ecn)
    return emit_tcp_ipv4(seg, p.addr, US, w.ident)


def base_packet(w: World, pk: Packet) -> bytearray:
    p = w.peers[pk.peer]
    data = bytes((pk.value >> (8 * (i % 4))) & 0xFF for i in range(pk.length))
    kind = pk.kind
    if kind == "syn":
        p.dport = pk.dport
        p.seq = pk.value
        p.ack = 0
        opts = TcpOptions(mss=1460, wscale=pk.where % 15, sack_permitted=bool(pk.flags & 1),
                          timestamps=(pk.value, 0) if pk.flags & 2 else None)
        # The flags' top three bits ask for ECN or Accurate ECN (RFC 9768 3.1.2) in
        # every combination; the low two the IP-ECN field (ECT, CE) -- here as below.
        pkt = _tcp(w, p, SYN | ace_flags(pk.flags >> 6), p.seq, 0, options=opts,
                   ecn=pk.flags & 3)
        p.seq = seq_add(p.seq, 1)
        return pkt
    if kind == "ack":
        return _tcp(w, p, ACK | ace_flags(pk.flags >> 6), p.seq, p.ack, ecn=pk.flags & 3)
    if kind == "data":
        pkt = _tcp(w, p, ACK | PSH | ace_flags(pk.flags >> 6), p.seq, p.ack, data,
                   ecn=pk.flags & 3)
        p.seq = seq_add(p.seq, len(data))
        return pkt
    if kind == "fin":
        pkt = _tcp(w, p, ACK | FIN, p.seq, p.ack)
        p.seq = seq_add(p.seq, 1)
        return pkt
    if kind == "rst":
        return _tcp(w, p, RST, p.seq, 0)
    if kind == "rst_off":
        return _tcp(w, p, RST | ACK, p.seq + 1 + pk.where, p.ack)
    if kind == "tcp_random":
        return _tcp(w, p, pk.flags, pk.value, pk.value * 7 + pk.where, data)
    w.ident += 1
    if kind == "icmp_echo":
        return build_ipv4(p.addr, US, PROTO_ICMP,
                          icmp_wire.build_icmp(icmp_wire.ECHO_REQUEST, 0, pk.value, data),
                          w.ident)
    if kind == "icmp_other":
        return build_ipv4(p.addr, US, PROTO_ICMP,
                          icmp_wire.build_icmp(pk.flags & 0xFF, pk.where & 0xFF, pk.value, data),
                          w.ident)
    if kind == "udp":
        return build_ipv4(p.addr, US, PROTO_UDP,
                          struct.pack("!HHHH", p.port, pk.dport, 8 + len(data), 0) + data,
                          w.ident)
    if kind == "proto_other":
        return build_ipv4(p.addr, US, 47 + pk.flags % 100, data, w.ident)
    if kind == "ipv6":
        return bytearray(b"\x60" + bytes(39) + data)
    if kind == "bad_version":
        pkt = build_ipv4(p.addr, US, PROTO_TCP, data, w.ident)
        pkt[0] = (pk.flags % 16 << 4) | 5 if pk.flags % 16 not in (4, 6) else 0x55
        return pkt
    if kind == "fragment":
        pkt = _tcp(w, p, ACK, p.seq, p.ack, data)
        frag = 0x2000 | (pk.where & 0x1FFF) if pk.flags & 1 else (pk.where & 0x1FFF) or 1
        pkt[6:8] = frag.to_bytes(2, "big")
        fix_ip_checksum(pkt)
        return pkt
    return bytearray(w.rng.randbytes(pk.length))  # raw


def mutate(w: World, pk: Packet, pkt: bytearray) -> bytearray:
    m = pk.mutation
    n = len(pkt)
    if m == "none" or n == 0:
        return pkt
    if m == "bitflip":
        bit = pk.where % (n * 8)
        pkt[bit // 8] ^= 1 << (bit % 8)
    elif m == "truncate":
        del pkt[pk.where % n:]
    elif m == "extend":
        pkt += w.rng.randbytes(pk.where % 64 + 1)
    elif m == "options_garbage":
        if n >= 40 and pkt[9] == PROTO_TCP:
            doff = 5 + pk.value % 11
            opts = w.rng.randbytes((doff - 5) * 4)
            pkt[32] = (doff << 4) | (pkt[32] & 0x0F)
            pkt[40:40] = opts
            pkt[2:4] = len(pkt).to_bytes(2, "big")
            fix_ip_checksum(pkt)
            fix_l4_checksum(pkt)
    elif m == "bad_ip_checksum":
        if n >= 12:
            pkt[10] ^= 1 + pk.value % 255
    elif m == "bad_l4_checksum":
        if n >= 38:
            pkt[36 if pkt[9] == PROTO_TCP else 22] ^= 1 + pk.value % 255
    elif m == "garbage_fixed":
        if n > 20:
            start = 20 + pk.where % (n - 20)
            pkt[start:] = w.rng.randbytes(n - start)
            fix_l4_checksum(pkt)
    elif m == "byte_fixed":
        pkt[pk.where % n] = pk.value & 0xFF
        fix_ip_checksum(pkt)
        fix_l4_checksum(pkt)
    elif m == "wrong_dst":
        if n >= 20:
            pkt[16:20] = (US ^ (1 + pk.value % 0xFFFF)).to_bytes(4, "big")
            fix_ip_checksum(pkt)
            fix_l4_checksum(pkt)
    elif m == "bad_source":
        if n >= 20:
            pkt[12:16] = _ip(BAD_SOURCES[pk.value % len(BAD_SOURCES)]).to_bytes(4, "big")
            fix_ip_checksum(pkt)
            fix_l4_checksum(pkt)
    return pkt


# ------------------------------------------------------------------ other actions


@dataclass(frozen=True)
class App:
    """An application call on the ``index``-th connection (in key order)."""

    index: int
    call: str


@dataclass(frozen=True)
class Tick:
    dt: float


Action = Packet | App | Tick

actions: st.SearchStrategy[Action] = st.one_of(
    packets, packets, packets, packets, packets, packets,
    st.builds(App, st.integers(0, 10), st.sampled_from(["recv", "recv", "send", "close",
                                                        "abort", "shutdown"])),
    st.builds(Tick, st.sampled_from([0.001, 0.05, 0.3, 1.0, 5.0, 40.0])),
)


# ------------------------------------------------------------------ checks


def _delivered_to_connection(w: World, raw: bytes | bytearray,
                             keys: set[tuple[int, int, int, int]]) -> bool:
    """Whether the stack would hand this packet to an existing connection (whose
    engine counts its own drops; an accepted segment counts nothing)."""
    buf = memoryview(raw)
    trusted = False
    try:
        if w.vnet:
            trusted = virtio.checksum_trusted(virtio.parse_flags(buf))
            buf = buf[virtio.HEADER_LEN:]
        ip = parse_ipv4(buf)
        if ip.proto != PROTO_TCP:
            return False
        seg = parse_tcp(ip.payload, ip.src, ip.dst, not trusted)
    except Malformed:
        return False
    return (ip.dst, seg.dst_port, ip.src, seg.src_port) in keys


def _check_output(w: World, out: list[bytearray | tuple[bytearray, bytes]]) -> None:
    for item in out:
        raw = bytearray(item[0]) + bytes(item[1]) if isinstance(item, tuple) else item
        needs_csum = False
        if w.vnet:
            needs_csum = bool(virtio.parse_flags(raw) & virtio.F_NEEDS_CSUM)
            raw = raw[virtio.HEADER_LEN:]
        ip = parse_ipv4(raw)
        assert ip.src == US, f"sent from {ipaddress.IPv4Address(ip.src)}"
        assert ip.dst not in {_ip(a) for a in BAD_SOURCES}, (
            f"answered {ipaddress.IPv4Address(ip.dst)}")
        if ip.proto == PROTO_TCP:
            body = bytearray(ip.payload)
            if needs_csum:  # what the kernel does for NEEDS_CSUM
                body[16:18] = ck.checksum(body).to_bytes(2, "big")
            seg = parse_tcp(body, ip.src, ip.dst)
            _learn(w, ip.dst, seg)
        else:
            assert ip.proto == PROTO_ICMP, f"sent protocol {ip.proto}"
            icmp_wire.parse_icmp(ip.payload)


def _learn(w: World, dst: int, seg: TcpSegment) -> None:
    """A peer takes the stack's SYN,ACK (and later segments) at face value."""
    for p in w.peers:
        if (p.addr, p.port, p.dport) == (dst, seg.dst_port, seg.src_port):
            if seg.flags & SYN:
                p.ack = seq_add(seg.seq, 1)
            elif seg.flags & ACK and seg.payload:
                p.ack = seq_add(seg.seq, len(seg.payload))


def _check_stack(w: World) -> None:
    st_ = w.stack
    assert st_.counters["internal_error"] == 0, "a packet or timer raised inside the stack"
    d = st_.next_deadline()
    assert d is None or math.isfinite(d)
    half_open: Counter[int] = Counter()
    for tcb in st_.tcbs.values():
        check_tcb(tcb, MAX_WRITE)
        if tcb.half_open:
            assert tcb.state is State.SYN_RECEIVED, f"{tcb!r} counted half-open"
            assert tcb.listener is not None
            half_open[tcb.listener.port] += 1
    for port, listener in st_.listeners.items():
        assert listener.half_open == half_open[port], (
            f"listener {port}: half_open {listener.half_open}, connections {half_open[port]}")
        assert 0 <= listener.half_open <= listener.syn_backlog, f"{listener!r}"
        assert 0 <= listener.pending <= listener.backlog, f"{listener!r}"


def apply(w: World, action: Action) -> None:
    st_ = w.stack
    if isinstance(action, Tick):
        w.now += action.dt
        d = st_.next_deadline()
        if d is not None and d <= w.now:
            st_.handle_timer(w.now)
    elif isinstance(action, App):
        tcbs = [t for _, t in sorted(st_.tcbs.items())]
        if tcbs:
            tcb = tcbs[action.index % len(tcbs)]
            try:
                if action.call == "recv":
                    tcb.recv(-1)
                elif action.call == "send":
                    if tcb.send_buffered <= tcb.cfg.snd_buf:
                        tcb.send(b"reply" * (MAX_WRITE // 5))
                elif action.call == "close":
                    tcb.close()
                elif action.call == "shutdown":
                    tcb.shutdown_write()
                else:
                    tcb.abort()
            except ConnectionError:
                pass
    else:
        pkt = mutate(w, action, base_packet(w, action))
        if w.vnet:
            pkt = bytearray(struct.pack("<BBHHHH", action.vnet_flags, 0, 0, 0, 0, 0)) + pkt
            if action.mutation == "truncate" and action.where % 7 == 0:
                del pkt[action.where % virtio.HEADER_LEN:]  # a short virtio-net header
        keys = set(st_.tcbs)
        before = Counter(st_.counters)
        st_.receive(pkt, w.now)
        counted = {k for k, v in st_.counters.items() if v != before[k]} - NOT_COUNTED
        assert counted or _delivered_to_connection(w, pkt, keys), (
            f"{action} was dropped without a reason: {pkt.hex()}")
    _check_output(w, st_.packets_to_send(w.now))
    st_.take_notified()
    for tcb in st_.tcbs.values():
        tcb.take_events()
    _check_stack(w)


def make_world(vnet: bool, seed: int, cfg: TcpConfig) -> World:
    stack = Stack(StackConfig(addresses=(ipaddress.IPv4Address(US),), tcp=cfg, vnet_hdr=vnet),
                  isn_secret=b"stack fuzz secret", rng=random.Random(seed))
    stack.listen(80, backlog=64)
    stack.listen(7, backlog=2, syn_backlog=1)  # full at once: SYN cookies answer
    w = World(stack, vnet, random.Random(seed))
    w.peers = [Peer(_ip(a), port, 80, seq=seed * 7919 + i) for i, (a, port) in enumerate(PEERS)]
    return w


tcp_configs = st.builds(
    TcpConfig, rcv_buf=st.sampled_from([1024, 65535, 262144]),
    snd_buf=st.sampled_from([1024, 262144]), msl=st.sampled_from([0.5, 30.0]),
    synack_retries=st.sampled_from([1, 5]), delayed_ack=st.sampled_from([0.0, 0.04]),
    sack=st.booleans(), timestamps=st.booleans(),
    ecn=st.sampled_from(["passive", "accecn", "off"]))


@examples(200)
@given(st.booleans(), st.integers(0, 1000), tcp_configs,
       st.lists(actions, min_size=30, max_size=100))
def test_stack_counts_every_dropped_packet_and_keeps_its_connections_consistent(
        vnet: bool, seed: int, cfg: TcpConfig, steps: list[Action]) -> None:
    w = make_world(vnet, seed, cfg)
    for action in steps:
        apply(w, action)
