"""Fuzz the running daemon with random and mutated packets: ``python -m tools.fuzz_daemon``.

::

    sudo python -m tools.fuzz_daemon --packets 1000000 --seed 1

Creates a network namespace of its own, starts ``tcpstack serve`` there (TUN
``tcpstack0``, host side 10.0.0.1, stack 10.0.0.2; short lifetimes for leftover
state, :data:`DAEMON_FLAGS`) and writes packets straight
into the TUN's host side through an ``AF_PACKET`` socket, so that nothing in the
kernel's IP layer repairs or filters them: bad IPv4 checksums, wrong lengths,
wrong versions, fragments and plain garbage reach the daemon as written. The mix:

* conversations of spoofed peers (10.0.0.3-254) with the HTTP, echo, discard and a
  closed port: handshakes completed from the SYN,ACKs a sniffer on the same
  interface sees, in-order, out-of-order, duplicate and zero-window data, hostile
  SACK blocks and timestamps, each conversation ended by a RST (sometimes after a
  FIN) so that it leaves nothing behind;
* mutations of valid packets (SYN, ACK, data, FIN, RST, ICMP echo and others, UDP,
  other protocols): bit flips, truncation, extension, garbage TCP options, bad IP
  or transport checksums, valid checksums over garbage, wrong destination, bad
  sources, fragments, wrong IP versions, IPv6;
* raw random bytes.

Every ``--probe-every`` packets a real kernel TCP client (in the namespace) opens a
new connection to echo and checks the bytes come back, and a long-lived kernel
connection does a round trip; every ``--curl-every`` packets and at the end
``curl`` fetches the HTTP page (and, at the end, 1 MB). The daemon's VmRSS is
sampled at every probe. Pass/fail: the daemon never exits and never logs a
traceback or an internal error, every probe succeeds, it stops cleanly on SIGTERM,
and its RSS grows by no more than ``--rss-limit-mib`` between the end of the
warm-up (the first 5 % of the packets) and the peak (see the README for why that
bound). The daemon's counters (every drop by reason) are printed from its
shutdown log, with the kernel's count of packets the daemon did not read in time.

Bounded in count (``--packets``) and time (``--max-seconds``); the sender paces
itself on the TUN's queue. Exit status: 0 pass, 1 fail (or could not set up), 2
bad arguments, 130 interrupted. The last line of output is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from tcpstack.wire import checksum as ck
from tcpstack.wire.icmp import build_icmp
from tcpstack.wire.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP, build_ipv4
from tcpstack.wire.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    TcpOptions,
    TcpSegment,
    emit_tcp_ipv4,
)
from tools.bench.netns import Netns, SetupError, read_vmrss_kib, terminate

PROG = "python -m tools.fuzz_daemon"
INTERFACE = "tcpstack0"
HOST = "10.0.0.1"
STACK = "10.0.0.2"
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
CLONE_NEWNET = 0x40000000

MAX_CONVERSATIONS = 64
"""Spoofed conversations open at once (each ends with a RST)."""
CONVERSATION_BYTES = 4096
"""At most this much data per conversation: bounds what the daemon may hold for us."""
MAX_BACKLOG = 512
"""Packets written to the TUN but not yet read by the daemon before the sender waits."""
DAEMON_FLAGS = ("--msl", "1", "--idle-timeout", "3", "--keepalive", "3",
                "--keepalive-interval", "1", "--keepalive-count", "2", "--syn-backlog", "64")
"""Short lifetimes for the state the fuzzer legitimately leaves behind -- TIME-WAIT (2
MSL), a connection whose last RST missed (the services' idle timeout, keepalive), a
half-open one whose SYN,ACK goes nowhere (a SYN queue of 64 per listener; beyond it,
stateless SYN cookies) -- so that it stops growing within seconds: past the warm-up, RSS
growth means a leak, not live connections. Every other setting is the daemon's default."""
MAX_RST_CANDIDATES = 8
"""At the end of a conversation, RSTs at this many sequence numbers the daemon's RCV.NXT
may have reached (besides our next one), most recent first."""

_STACK_IP = int.from_bytes(socket.inet_aton(STACK), "big")
_HOST_IP = int.from_bytes(socket.inet_aton(HOST), "big")
_NO_OPTS = TcpOptions()


class FuzzError(RuntimeError):
    """The run could not be set up (a one-line reason)."""


# ----------------------------------------------------------------- namespaces


_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def inside(ns: Netns) -> Iterator[None]:
    """Run the body with this thread in ``ns`` (sockets created there stay there)."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns.name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise FuzzError(f"setns into {ns.name}: {os.strerror(err)}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover - cannot happen
                os.abort()
    finally:
        os.close(own)
        os.close(target)


# ----------------------------------------------------------------- packets


def fix_ip_checksum(buf: bytearray) -> None:
    """Recompute the header checksum of an IPv4 packet in ``buf`` (in place)."""
    if len(buf) >= 20 and buf[0] >> 4 == 4:
        hlen = min(len(buf), max(20, (buf[0] & 0x0F) * 4))
        buf[10:12] = b"\0\0"
        buf[10:12] = ck.checksum(buf[:hlen]).to_bytes(2, "big")


def fix_l4_checksum(buf: bytearray) -> None:
    """Recompute, in place, the TCP, UDP or ICMP checksum of an IPv4 packet with a
    20-byte header (the property tests of the stack use it too)."""
    if len(buf) < 28 or buf[0] != 0x45:
        return
    proto = buf[9]
    body = memoryview(buf)[20:]
    src, dst = struct.unpack_from("!II", buf, 12)
    if proto == PROTO_TCP and len(body) >= 20:
        body[16:18] = b"\0\0"
        total = ck.pseudo_header_ipv4(src, dst, PROTO_TCP, len(body)) + ck.partial(body)
        body[16:18] = ck.finish(total).to_bytes(2, "big")
    elif proto == PROTO_UDP:
        body[6:8] = b"\0\0"
        total = ck.pseudo_header_ipv4(src, dst, PROTO_UDP, len(body)) + ck.partial(body)
        body[6:8] = ck.finish(total).to_bytes(2, "big")
    elif proto == PROTO_ICMP:
        body[2:4] = b"\0\0"
        body[2:4] = ck.checksum(body).to_bytes(2, "big")


@dataclass
class Conversation:
    """A spoofed client talking to the daemon as far as what it sees lets it."""

    src: int
    sport: int
    dport: int
    isn: int
    seq: int  # our next in-order sequence number (out-of-order data may reach beyond it)
    tsval: int | None  # our timestamp clock (None: no timestamps), ticking with each segment
    ack: int | None = None  # the daemon's next sequence number, from its SYN,ACK
    sent: int = 0
    steps: int = 0
    budget: int = 10
    fin_sent: bool = False
    # Where the daemon's RCV.NXT may be other than ``seq``: the start of an in-order
    # segment it may have refused (a full window), the end of out-of-order data that a
    # later segment may have joined up. Most recent last, at most MAX_RST_CANDIDATES;
    # ``out_of_order`` keeps every such segment (a conversation has few steps).
    marks: list[int] = field(default_factory=list)
    out_of_order: list[tuple[int, int]] = field(default_factory=list)  # [start, end)

    def mark(self, seq: int) -> None:
        seq &= 0xFFFFFFFF
        if seq in self.marks:
            self.marks.remove(seq)
        self.marks.append(seq)
        del self.marks[:-MAX_RST_CANDIDATES]

    def joined_up(self) -> int:
        """The daemon's RCV.NXT if it took everything: our in-order data extended by
        the out-of-order data that joins it."""
        nxt = self.seq
        for start, end in sorted(self.out_of_order):
            if start <= nxt:
                nxt = max(nxt, end)
        return nxt


@dataclass
class Stats:
    kinds: Counter[str] = field(default_factory=Counter)
    replies: Counter[str] = field(default_factory=Counter)


class PacketSource:
    """Seeded generator of the packets to inject; learns from the daemon's replies."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.conversations: dict[tuple[int, int, int], Conversation] = {}
        # Conversations we reset: if the daemon answers (a challenge ACK, RFC 5961),
        # its ACK field is its RCV.NXT and the next RST goes exactly there.
        self.dying: dict[tuple[int, int, int], int] = {}
        self.pending: list[bytearray] = []
        self.stats = Stats()
        self.ident = 0

    # -- building blocks ------------------------------------------------------

    def _tcp(self, src: int, sport: int, dport: int, seq: int, ack: int, flags: int,
             payload: bytes = b"", options: TcpOptions = _NO_OPTS, window: int = 65535,
             dst: int = _STACK_IP) -> bytearray:
        self.ident = (self.ident + 1) & 0xFFFF
        seg = TcpSegment(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, window,
                         options, payload)
        return emit_tcp_ipv4(seg, src, dst, self.ident)

    def _ip(self, src: int, proto: int, payload: bytes) -> bytearray:
        self.ident = (self.ident + 1) & 0xFFFF
        return build_ipv4(src, _STACK_IP, proto, payload, self.ident)

    def _options(self) -> TcpOptions:
        r = self.rng
        if r.random() < 0.5:
            return _NO_OPTS
        ts = (r.getrandbits(32), r.getrandbits(32)) if r.random() < 0.5 else None
        blocks = tuple((r.getrandbits(32), r.getrandbits(32))
                       for _ in range(r.randrange(4 if ts is None else 3)))
        return TcpOptions(sack_blocks=blocks, timestamps=ts)

    # -- the next packet ----------------------------------------------------------

    def next_packet(self, index: int) -> tuple[bytes | bytearray, int]:
        """The packet to inject and its ethertype."""
        if self.pending:
            return self.pending.pop(), ETH_P_IP
        r = self.rng.random()
        if r < 0.30:
            return self._conversation_step(index), ETH_P_IP
        if r < 0.85:
            return self._mutated(), ETH_P_IP
        if r < 0.92:
            self.stats.kinds["ipv6"] += 1
            n = self.rng.randrange(0, 80)
            return b"\x60" + self.rng.randbytes(39 + n), ETH_P_IPV6
        self.stats.kinds["raw"] += 1
        data = bytearray(self.rng.randbytes(self.rng.randrange(1, 200)))
        if self.rng.random() < 0.6:
            data[0] = 0x40 | (data[0] & 0x0F)  # looks like IPv4: deeper checks run
        return data, ETH_P_IP

    # -- conversations ------------------------------------------------------------

    def _conversation_step(self, index: int) -> bytearray:
        rng = self.rng
        if len(self.conversations) < MAX_CONVERSATIONS and (
                not self.conversations or rng.random() < 0.15):
            return self._open(index)
        key = rng.choice(list(self.conversations))
        c = self.conversations[key]
        c.steps += 1
        if c.ack is None:
            if c.steps > 6:  # no SYN,ACK seen: reset the half-open connection
                return self._end(c, "conv_rst_unanswered")
            self.stats.kinds["conv_syn_again"] += 1
            return self._tcp(c.src, c.sport, c.dport, c.seq - 1, 0, SYN,
                             options=TcpOptions(mss=1460))
        if c.steps >= c.budget or c.sent >= CONVERSATION_BYTES:
            if not c.fin_sent and rng.random() < 0.5:
                c.fin_sent = True
                self.stats.kinds["conv_fin"] += 1
                pkt = self._tcp(c.src, c.sport, c.dport, c.seq, c.ack, ACK | FIN)
                c.mark(c.seq)  # the FIN may not be taken (a hole before it)
                c.seq += 1
                return pkt
            return self._end(c, "conv_rst")
        return self._conversation_data(c)

    def _open(self, index: int) -> bytearray:
        rng = self.rng
        while True:
            src = _HOST_IP & 0xFFFFFF00 | rng.randrange(3, 255)
            sport = rng.randrange(1024, 65536)
            dport = rng.choice((80, 80, 7, 7, 9, 81))
            if (src, sport, dport) not in self.conversations:
                break
        isn = rng.getrandbits(32)
        tsval = rng.getrandbits(32) if rng.random() < 0.5 else None
        c = Conversation(src, sport, dport, isn, isn + 1, tsval, budget=rng.randrange(3, 30))
        self.conversations[(src, sport, dport)] = c
        self.stats.kinds["conv_syn"] += 1
        opts = TcpOptions(mss=rng.choice((536, 1460, 64)), wscale=rng.choice((None, 0, 7, 14)),
                          sack_permitted=rng.random() < 0.7,
                          timestamps=(tsval, 0) if tsval is not None else None)
        return self._tcp(src, sport, dport, isn, 0, SYN, options=opts)

    def _end(self, c: Conversation, kind: str) -> bytearray:
        """A RST at our next in-order sequence number, then RSTs at the other places
        the daemon's RCV.NXT may be (:attr:`Conversation.marks`): it may have taken
        less (a full window) or more (out-of-order data that a later segment joined
        up). The one that matches ends the connection; one inside the window but not
        exact draws a challenge ACK (RFC 5961 3.2), and so does an old ACK sent last
        (RFC 9293 3.10.7.4): their ACK field is the daemon's RCV.NXT, and :meth:`learn`
        queues a RST exactly there. The connection must go: otherwise the daemon
        rightly keeps it, and its RSS would measure our leftovers."""
        self.stats.kinds[kind] += 1
        key = (c.src, c.sport, c.dport)
        del self.conversations[key]
        self.dying[key] = 0
        if len(self.dying) > 4 * MAX_CONVERSATIONS:
            del self.dying[next(iter(self.dying))]
        if c.ack is not None:
            # Sent last (``pending`` is a stack): an ACK far below the window.
            self.pending.append(self._tcp(c.src, c.sport, c.dport, c.isn, c.ack, ACK))
            sent = {c.seq & 0xFFFFFFFF}
            # A stack: the RST where RCV.NXT most likely is goes out right after this one.
            for seq in (*c.marks, c.joined_up() & 0xFFFFFFFF):
                if seq not in sent:
                    sent.add(seq)
                    self.pending.append(self._tcp(c.src, c.sport, c.dport, seq, 0, RST))
        return self._tcp(c.src, c.sport, c.dport, c.seq, 0, RST)

    def _conversation_data(self, c: Conversation) -> bytearray:
        rng = self.rng
        assert c.ack is not None
        ts = None
        if c.tsval is not None:  # a clock that ticks: PAWS (RFC 7323) must not drop us
            c.tsval = (c.tsval + rng.randrange(1, 10)) & 0xFFFFFFFF
            ts = (c.tsval, 0)
        r = rng.random()
        if c.dport == 80 and c.sent == 0:
            data = b"GET /bytes/%d HTTP/1.1\r\nHost: fuzz\r\n\r\n" % rng.choice((0, 100, 20000))
        else:
            data = rng.randbytes(rng.choice((0, 1, 100, 536, 1400)))
        opts = TcpOptions(timestamps=ts)
        if r < 0.1:  # hostile SACK blocks: tiny, reversed, beyond what was sent
            a = c.ack
            ends = [((a + rng.randrange(-3000, 3000)) & 0xFFFFFFFF,
                     (a + rng.randrange(-3000, 3000)) & 0xFFFFFFFF)
                    for _ in range(rng.randrange(1, 4))]
            blocks = tuple((min(x, y), max(x, y)) if rng.random() < 0.7 else (x, y)
                           for x, y in ends)
            opts = TcpOptions(sack_blocks=blocks, timestamps=ts)
            self.stats.kinds["conv_sack"] += 1
        if r < 0.2:  # out of order: a hole before it
            self.stats.kinds["conv_out_of_order"] += 1
            start = c.seq + rng.randrange(1, 3000)
            if data:
                c.mark(start + len(data))
                c.out_of_order.append((start, start + len(data)))
            return self._tcp(c.src, c.sport, c.dport, start, c.ack, ACK, data, opts)
        if r < 0.25:  # a duplicate of old data
            self.stats.kinds["conv_duplicate"] += 1
            return self._tcp(c.src, c.sport, c.dport, c.seq - len(data), c.ack, ACK, data, opts)
        if r < 0.3:
            self.stats.kinds["conv_zero_window"] += 1
            return self._tcp(c.src, c.sport, c.dport, c.seq, c.ack, ACK, b"", opts, window=0)
        self.stats.kinds["conv_data"] += 1
        if data:
            c.mark(c.seq)
        pkt = self._tcp(c.src, c.sport, c.dport, c.seq, c.ack, ACK | PSH, data, opts)
        c.seq += len(data)
        c.sent += len(data)
        return pkt

    def learn(self, reply: bytes) -> None:
        """A packet the daemon sent: a SYN,ACK or data moves a conversation along."""
        if len(reply) < 40 or reply[0] != 0x45:
            return
        proto = reply[9]
        if proto != PROTO_TCP:
            self.stats.replies["icmp" if proto == PROTO_ICMP else "other"] += 1
            return
        dst = int.from_bytes(reply[16:20], "big")
        sport, dport, seq = struct.unpack_from("!HHI", reply, 20)
        flags = reply[33]
        self.stats.replies["rst" if flags & RST else "syn_ack" if flags & SYN else "tcp"] += 1
        c = self.conversations.get((dst, dport, sport))
        if c is None:
            tries = self.dying.get((dst, dport, sport))
            if tries is not None and not flags & RST and flags & ACK and tries < 2:
                self.dying[(dst, dport, sport)] = tries + 1
                ack = int.from_bytes(reply[28:32], "big")
                self.pending.append(self._tcp(dst, dport, sport, ack, 0, RST))
                self.stats.kinds["conv_rst_again"] += 1
            return
        if flags & RST:
            del self.conversations[(dst, dport, sport)]
            return
        doff = (reply[32] >> 4) * 4
        length = int.from_bytes(reply[2:4], "big") - 20 - doff
        if flags & SYN:
            c.ack = (seq + 1) & 0xFFFFFFFF
        elif c.ack is not None:
            end = (seq + max(0, length) + (1 if flags & FIN else 0)) & 0xFFFFFFFF
            if 0 < (end - c.ack) & 0xFFFFFFFF < 1 << 30:
                c.ack = end

    # -- mutations ----------------------------------------------------------------

    def _template(self) -> tuple[str, bytearray]:
        rng = self.rng
        kind = rng.choice(("syn", "ack", "data", "fin", "rst", "tcp_random", "icmp_echo",
                           "icmp_other", "udp", "proto_other", "fragment"))
        # The host's own address: the kernel answers the daemon's SYN,ACKs with RSTs,
        # so that SYNs surviving mutation do not pile up half-open connections.
        src = _HOST_IP
        sport = rng.randrange(1024, 30000)
        dport = rng.choice((80, 7, 9, 81, rng.randrange(1, 65536)))
        seq, ack = rng.getrandbits(32), rng.getrandbits(32)
        data = rng.randbytes(rng.choice((0, 0, 1, 20, 536, 1400)))
        if kind == "syn":
            opts = TcpOptions(mss=rng.choice((None, 0, 1, 536, 1460, 65535)),
                              wscale=rng.choice((None, 0, 14, 255)),
                              sack_permitted=rng.random() < 0.5,
                              timestamps=(seq, 0) if rng.random() < 0.5 else None)
            return kind, self._tcp(src, sport, dport, seq, 0, SYN, options=opts)
        if kind in ("ack", "data", "fin", "rst", "tcp_random"):
            flags = {"ack": ACK, "data": ACK | PSH, "fin": ACK | FIN, "rst": RST,
                     "tcp_random": rng.getrandbits(8)}[kind]
            payload = data if kind in ("data", "tcp_random") else b""
            return kind, self._tcp(src, sport, dport, seq, ack, flags, payload,
                                   self._options(), rng.getrandbits(16))
        if kind == "icmp_echo":
            return kind, self._ip(src, PROTO_ICMP,
                                  bytes(build_icmp(8, 0, rng.getrandbits(32), data)))
        if kind == "icmp_other":
            return kind, self._ip(src, PROTO_ICMP, bytes(build_icmp(
                rng.getrandbits(8), rng.getrandbits(8), rng.getrandbits(32), data)))
        if kind == "udp":
            udp = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
            pkt = self._ip(src, PROTO_UDP, udp)
            fix_l4_checksum(pkt)
            return kind, pkt
        if kind == "proto_other":
            return kind, self._ip(src, rng.choice((0, 2, 41, 47, 50, 132, 255)), data)
        pkt = self._tcp(src, sport, dport, seq, ack, ACK, data)  # fragment
        frag = rng.choice((0x2000, 0x2000 | rng.randrange(1, 0x2000), rng.randrange(1, 0x2000)))
        pkt[6:8] = frag.to_bytes(2, "big")
        fix_ip_checksum(pkt)
        return kind, pkt

    def _mutated(self) -> bytearray:
        rng = self.rng
        kind, pkt = self._template()
        m = rng.choice(("none", "bitflip", "bitflip", "truncate", "extend", "options_garbage",
                        "bad_ip_checksum", "bad_l4_checksum", "garbage_fixed", "byte_fixed",
                        "wrong_dst", "bad_source", "bad_version", "bad_ihl", "bad_length"))
        self.stats.kinds[f"{kind}/{m}"] += 1
        n = len(pkt)
        if m == "bitflip":
            for _ in range(rng.randrange(1, 4)):
                bit = rng.randrange(n * 8)
                pkt[bit // 8] ^= 1 << (bit % 8)
        elif m == "truncate":
            del pkt[rng.randrange(n):]
        elif m == "extend":
            pkt += rng.randbytes(rng.randrange(1, 64))
        elif m == "options_garbage" and pkt[9] == PROTO_TCP and n >= 40:
            words = rng.randrange(1, 11)
            pkt[32] = ((5 + words) << 4) | (pkt[32] & 0x0F)
            pkt[40:40] = rng.randbytes(words * 4)
            pkt[2:4] = len(pkt).to_bytes(2, "big")
            fix_ip_checksum(pkt)
            fix_l4_checksum(pkt)
        elif m == "bad_ip_checksum":
            pkt[10] ^= rng.randrange(1, 256)
        elif m == "bad_l4_checksum" and n >= 38:
            pkt[36 if pkt[9] == PROTO_TCP else 22] ^= rng.randrange(1, 256)
        elif m == "garbage_fixed" and n > 20:
            start = rng.randrange(20, n)
            pkt[start:] = rng.randbytes(n - start)
            fix_l4_checksum(pkt)
        elif m == "byte_fixed":
            pkt[rng.randrange(n)] = rng.getrandbits(8)
            fix_ip_checksum(pkt)
            fix_l4_checksum(pkt)
        elif m == "wrong_dst":
            pkt[16:20] = rng.getrandbits(32).to_bytes(4, "big")
            fix_ip_checksum(pkt)
            fix_l4_checksum(pkt)
        elif m == "bad_source":
            bad = rng.choice(("0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1", STACK))
            pkt[12:16] = socket.inet_aton(bad)
            fix_ip_checksum(pkt)
            fix_l4_checksum(pkt)
        elif m == "bad_version":
            pkt[0] = (rng.choice((0, 1, 5, 7, 15)) << 4) | (pkt[0] & 0x0F)
        elif m == "bad_ihl":
            pkt[0] = 0x40 | rng.randrange(16)
            fix_ip_checksum(pkt)
        elif m == "bad_length":
            pkt[2:4] = rng.getrandbits(16).to_bytes(2, "big")
            fix_ip_checksum(pkt)
        return pkt


# ----------------------------------------------------------------- probes


class Probes:
    """Real kernel TCP clients inside the namespace."""

    def __init__(self, ns: Netns) -> None:
        self.ns = ns
        self.ok = 0
        self.failed: list[str] = []
        self.curl_ok = 0
        self.persistent: socket.socket | None = None
        self.rng = random.Random(7)

    def _connect(self, port: int) -> socket.socket:
        with inside(self.ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(5.0)
        try:
            sock.connect((STACK, port))
        except OSError:
            sock.close()
            raise
        return sock

    @staticmethod
    def _round_trip(sock: socket.socket, data: bytes) -> None:
        sock.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = sock.recv(len(data) - len(got))
            if not chunk:
                raise ConnectionError("echo closed the connection")
            got += chunk
        if got != data:
            raise ConnectionError("echo returned different bytes")

    def echo(self) -> str | None:
        """A fresh connection and a round trip on the long-lived one; None if both worked."""
        data = self.rng.randbytes(64)
        last = ""
        for _ in range(2):  # one retry: a SYN may meet a full queue for a moment
            try:
                with self._connect(7) as sock:
                    self._round_trip(sock, data)
                if self.persistent is None:
                    self.persistent = self._connect(7)
                self._round_trip(self.persistent, data[::-1])
                self.ok += 1
                return None
            except OSError as exc:
                last = f"echo probe: {type(exc).__name__}: {exc}"
                if self.persistent is not None:
                    self.persistent.close()
                    self.persistent = None
                    last += " (long-lived connection lost)"
                time.sleep(1.0)
        return last

    def curl(self, path: str = "/", size: int | None = None) -> str | None:
        argv = ["curl", "-sS", "-o", "/dev/null", "--max-time", "15", "-w",
                "%{http_code} %{size_download}", f"http://{STACK}{path}"]
        try:
            proc = self.ns.run(argv, timeout=30)
        except subprocess.TimeoutExpired:
            return f"curl {path}: timed out"
        fields = proc.stdout.split()
        if proc.returncode != 0 or not fields or fields[0] != "200":
            return f"curl {path}: exit {proc.returncode} {proc.stdout.strip()} " \
                   f"{proc.stderr.strip()[-200:]}"
        if size is not None and fields[1:] != [str(size)]:
            return f"curl {path}: got {fields[1:]} bytes, expected {size}"
        self.curl_ok += 1
        return None

    def close(self) -> None:
        if self.persistent is not None:
            self.persistent.close()
            self.persistent = None


# ----------------------------------------------------------------- the run


@dataclass
class Options:
    packets: int
    seed: int
    probe_every: int
    curl_every: int
    max_seconds: float
    rss_limit_mib: float
    log_dir: Path


def _tun_counters(pid: int) -> tuple[int, int]:
    """(packets the daemon read from the TUN, packets the kernel dropped for it)."""
    try:
        for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines():
            name, sep, rest = line.partition(":")
            if sep and name.strip() == INTERFACE:
                f = rest.split()
                return int(f[9]), int(f[11])
    except (OSError, ValueError, IndexError):
        pass
    return 0, 0


def _parse_counters(log: str) -> dict[str, int]:
    for line in reversed(log.splitlines()):
        _, sep, rest = line.partition("stopped; counters: ")
        if sep:
            out = {}
            for item in rest.split(","):
                k, eq, v = item.strip().partition("=")
                if eq and v.isdigit():
                    out[k] = int(v)
            return out
    return {}


def _wait_ready(ns: Netns, daemon: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise FuzzError(f"the daemon exited with status {daemon.returncode} at start-up")
        try:
            with inside(ns):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with sock:
                sock.settimeout(1.0)
                sock.connect((STACK, 7))
                return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise FuzzError(f"the daemon did not answer on {STACK}:7 within {timeout:g} s ({last})")


def run(opts: Options, progress: bool = True) -> dict[str, Any]:
    """One fuzzing run; returns the result document (``verdict`` is pass or fail)."""
    opts.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = opts.log_dir / f"fuzz-daemon-seed{opts.seed}.log"
    failures: list[str] = []
    result: dict[str, Any] = {"packets_requested": opts.packets, "seed": opts.seed,
                              "daemon_log": str(log_path)}

    def say(msg: str) -> None:
        if progress:
            print(f"fuzz_daemon: {msg}", file=sys.stderr, flush=True)

    with Netns("fuzz") as ns, log_path.open("wb") as log:
        daemon = ns.popen([sys.executable, "-m", "tcpstack", "serve", "--log-level", "info",
                           *DAEMON_FLAGS],
                          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                          env=_python_env())
        _wait_ready(ns, daemon, 20.0)
        with inside(ns):
            inject = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
            sniff = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        probes = Probes(ns)
        try:
            inject.bind((INTERFACE, ETH_P_IP))
            sniff.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            sniff.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            sniff.bind((INTERFACE, ETH_P_ALL))
            sniff.setblocking(False)
            problem = probes.echo() or probes.curl()
            if problem:
                raise FuzzError(f"the daemon does not serve before fuzzing: {problem}")
            rss_start = read_vmrss_kib(daemon.pid) or 0
            say(f"daemon pid {daemon.pid} serving, VmRSS {rss_start / 1024:.1f} MiB; "
                f"sending {opts.packets:,} packets (seed {opts.seed})")
            src = PacketSource(opts.seed)
            read0, dropped0 = _tun_counters(daemon.pid)
            rss: dict[str, int] = {"start": rss_start}
            peak = rss_start
            warm_at = max(1, opts.packets // 20)
            mid_at = opts.packets // 2
            sent = 0
            t0 = time.monotonic()
            deadline = t0 + opts.max_seconds
            v6_addr = (INTERFACE, ETH_P_IPV6)
            while sent < opts.packets:
                if time.monotonic() > deadline:
                    failures.append(f"time limit: only {sent:,} of {opts.packets:,} packets "
                                    f"in {opts.max_seconds:g} s")
                    break
                batch = min(256, opts.packets - sent)
                for _ in range(batch):
                    pkt, ethertype = src.next_packet(sent)
                    try:
                        if ethertype == ETH_P_IP:
                            inject.send(pkt)
                        else:
                            inject.sendto(pkt, v6_addr)
                    except OSError as exc:  # e.g. a packet the device refuses outright
                        src.stats.kinds[f"send_error_{exc.errno}"] += 1
                    sent += 1
                _drain(sniff, src)
                _pace(daemon.pid, read0, dropped0, sent, deadline)
                if daemon.poll() is not None:
                    failures.append(f"the daemon exited with status {daemon.returncode} "
                                    f"after {sent:,} packets")
                    break
                if sent % opts.probe_every < batch or sent == opts.packets:
                    problem = probes.echo()
                    if sent % opts.curl_every < batch:
                        problem = problem or probes.curl()
                    now_rss = read_vmrss_kib(daemon.pid) or 0
                    peak = max(peak, now_rss)
                    if sent >= warm_at and "warm" not in rss:
                        rss["warm"] = now_rss
                    if sent >= mid_at and "mid" not in rss:
                        rss["mid"] = now_rss
                    if problem:
                        failures.append(f"after {sent:,} packets: {problem}")
                        break
                    if progress and sent % (opts.probe_every * 10) < batch:
                        el = time.monotonic() - t0
                        say(f"{sent:,} packets, {sent / el:,.0f}/s, VmRSS "
                            f"{now_rss / 1024:.1f} MiB, {len(src.conversations)} conversations")
            elapsed = time.monotonic() - t0
            time.sleep(0.5)
            _drain(sniff, src)
            read1, dropped1 = _tun_counters(daemon.pid)
            if not failures and daemon.poll() is None:
                for problem in (probes.echo(), probes.curl(),
                                probes.curl("/bytes/1000000", 1_000_000)):
                    if problem:
                        failures.append(f"at the end: {problem}")
            rss["end"] = read_vmrss_kib(daemon.pid) or 0
            rss["peak"] = max(peak, rss["end"])
            rss.setdefault("warm", rss_start)
            rss.setdefault("mid", rss["end"])
        finally:
            probes.close()
            inject.close()
            sniff.close()
            status = _stop(daemon)
        log.flush()
        text = log_path.read_text(errors="replace")

    counters = _parse_counters(text)
    growth_kib = rss["peak"] - rss["warm"]
    if status != 0:
        failures.append(f"the daemon exited with status {status} on SIGTERM")
    if "Traceback" in text:
        failures.append("the daemon logged a traceback")
    if "internal_error" in counters or "internal error" in text:
        failures.append(f"the daemon counted internal errors: "
                        f"{counters.get('internal_error', '?')}")
    if not counters:
        failures.append("no counters in the daemon's shutdown log")
    if growth_kib > opts.rss_limit_mib * 1024:
        failures.append(f"VmRSS grew by {growth_kib / 1024:.1f} MiB after the warm-up "
                        f"(limit {opts.rss_limit_mib:g} MiB)")
    result.update({
        "packets_sent": sent,
        "seconds": round(elapsed, 1),
        "packets_per_second": round(sent / elapsed) if elapsed > 0 else 0,
        "tun_read_by_daemon": read1 - read0,
        "tun_dropped_by_kernel": dropped1 - dropped0,
        "probes_ok": probes.ok,
        "curl_ok": probes.curl_ok,
        "rss_kib": rss,
        "rss_growth_kib": growth_kib,
        "rss_limit_mib": opts.rss_limit_mib,
        "daemon_exit_status": status,
        "daemon_counters": counters,
        "kinds": dict(src.stats.kinds.most_common()),
        "replies": dict(src.stats.replies),
        "failures": failures,
        "verdict": "fail" if failures else "pass",
    })
    return result


def _drain(sniff: socket.socket, src: PacketSource) -> None:
    for _ in range(4096):
        try:
            data = sniff.recv(65535)
        except BlockingIOError:
            return
        src.learn(data)


def _pace(pid: int, read0: int, dropped0: int, sent: int, deadline: float) -> None:
    """Wait (bounded) while more than MAX_BACKLOG packets sit unread in the TUN queue."""
    while time.monotonic() < deadline:
        read, dropped = _tun_counters(pid)
        if sent - (read - read0) - (dropped - dropped0) <= MAX_BACKLOG:
            return
        time.sleep(0.0005)


def _stop(daemon: subprocess.Popen[bytes]) -> int:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            terminate(daemon, signal.SIGKILL)
            return -9
    return daemon.returncode


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ----------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"fuzz_daemon: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Send random and mutated packets to tcpstack serve "
                "in a namespace of its own and check that it keeps serving. Needs root.")
    p.add_argument("--packets", type=_positive_int, default=1_000_000, metavar="N",
                   help="packets to send (default: %(default)s)")
    p.add_argument("--seed", type=_seed, default=1, metavar="S",
                   help="seed of the packet generator (default: %(default)s)")
    p.add_argument("--probe-every", type=_positive_int, default=10_000, metavar="N",
                   help="an echo probe every N packets (default: %(default)s)")
    p.add_argument("--curl-every", type=_positive_int, default=100_000, metavar="N",
                   help="a curl probe every N packets (default: %(default)s)")
    p.add_argument("--max-seconds", type=_positive_float, default=900.0, metavar="T",
                   help="give up (and fail) after T seconds of sending (default: %(default)s)")
    p.add_argument("--rss-limit-mib", type=_positive_float, default=32.0, metavar="MIB",
                   help="fail if the daemon's VmRSS grows by more than this after the "
                        "warm-up (default: %(default)s)")
    p.add_argument("--log-dir", type=Path, default=None, metavar="DIR",
                   help="where the daemon's log goes (default: a new temporary directory)")
    return p


def preflight() -> None:
    if os.geteuid() != 0:
        raise FuzzError("must run as root (network namespaces, TUN, raw sockets)")
    try:
        if not stat.S_ISCHR(os.stat("/dev/net/tun").st_mode):
            raise FuzzError("/dev/net/tun is not a character device")
    except FileNotFoundError:
        raise FuzzError("/dev/net/tun is missing (no TUN support)") from None
    missing = [t for t in ("ip", "curl") if shutil.which(t) is None]
    if missing:
        raise FuzzError("missing tools: " + ", ".join(missing))


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def report(result: dict[str, Any]) -> str:
    rss = result["rss_kib"]
    mib = {k: f"{v / 1024:.1f}" for k, v in rss.items()}
    counters = result["daemon_counters"]
    lines = [
        f"packets: {result['packets_sent']:,} of {result['packets_requested']:,} sent in "
        f"{result['seconds']:g} s ({result['packets_per_second']:,}/s); the daemon read "
        f"{result['tun_read_by_daemon']:,} from the TUN, the kernel dropped "
        f"{result['tun_dropped_by_kernel']:,} it did not read in time",
        f"probes: {result['probes_ok']} echo, {result['curl_ok']} curl succeeded",
        f"daemon VmRSS (MiB): start {mib['start']}, after warm-up {mib['warm']}, mid-run "
        f"{mib['mid']}, peak {mib['peak']}, end {mib['end']}; growth after warm-up "
        f"{result['rss_growth_kib'] / 1024:.1f} (limit {result['rss_limit_mib']:g})",
        "daemon counters: " + (_counters_line(counters) or "none"),
    ]
    lines += [f"FAILED: {f}" for f in result["failures"]]
    lines.append(f"verdict: {result['verdict']}")
    return "\n".join(lines)


def _counters_line(counters: dict[str, int]) -> str:
    """The counters, with the per-type ``icmp_type_N_ignored`` ones folded into one."""
    icmp = {k: v for k, v in counters.items()
            if k.startswith("icmp_type_") and k.endswith("_ignored")}
    rest = sorted((k, v) for k, v in counters.items() if k not in icmp)
    parts = [f"{k}={v:,}" for k, v in rest]
    if icmp:
        parts.append(f"icmp_type_N_ignored={sum(icmp.values()):,} ({len(icmp)} types)")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    log_dir: Path = args.log_dir or Path(tempfile.mkdtemp(prefix="fuzz-daemon-"))
    opts = Options(args.packets, args.seed, args.probe_every, args.curl_every,
                   args.max_seconds, args.rss_limit_mib, log_dir)
    try:
        preflight()
        result = run(opts)
    except (FuzzError, SetupError) as exc:
        print(f"fuzz_daemon: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fuzz_daemon: interrupted; namespace and daemon cleaned up", file=sys.stderr)
        return 130
    print(report(result))
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if result["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
