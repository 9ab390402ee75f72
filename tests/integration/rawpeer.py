"""A scripted TCP peer for integration tests: hand-made segments to the daemon, and its answers.

This is a helper module, not a test file. It runs *inside* a test's network
namespace, in a child interpreter (see :func:`tests.integration.daemon.run_client`),
next to a daemon started with :class:`tests.integration.daemon.Daemon`.

Sending
    :class:`RawSender` writes complete IPv4 packets with a raw socket
    (``socket(AF_INET, SOCK_RAW, IPPROTO_RAW)``, which implies ``IP_HDRINCL``),
    built by the stack's own :func:`tcpstack.wire.tcp.emit_tcp_ipv4` from an
    :class:`~tcpstack.wire.tcp.OutSegment`: any source address, sequence and
    acknowledgment numbers, flags, window and options (timestamps, SACK blocks).
    The kernel routes them to ``10.0.0.2`` through ``tcpstack0`` like any packet.

Receiving
    :class:`PacketTap` is an ``AF_PACKET`` socket bound to ``tcpstack0`` (the host
    side of the TUN) with a classic BPF filter attached, so only TCP packets (to
    one address, if asked) are queued for Python. It sees the daemon's packets as
    the kernel receives them from the TUN -- before routing decides anything --
    and, for a sniffer, the kernel's own packets on their way to the daemon. With
    offloads on, a daemon segment may be a TSO super-segment of up to 64 KiB; its
    TCP checksum is only partial there, so it is not verified.

Why the kernel does not reset our connections
    A scripted connection needs a source address whose packets the kernel of the
    namespace routes to the TUN but does not answer. Two ways were considered:

    * a firewall rule in the test namespace dropping the kernel's RSTs for the
      scripted port: one more tool (``nft`` is not everywhere) and one more piece
      of state per test;
    * a source address in the TUN's subnet that no interface owns
      (:data:`PEER_ADDRESS`, ``10.0.0.3``): this is what we use. The daemon's
      answers reach the kernel through the TUN addressed to ``10.0.0.3``; that is
      not a local address, and with IPv4 forwarding off (:func:`forbid_forwarding`
      makes sure in the test namespace) the kernel drops them silently
      (``ip_error`` sends no ICMP when the input device does not forward). The
      ``AF_PACKET`` tap has seen them by then. No TCP socket of the kernel is
      involved, so no RST is ever sent for the scripted connection.

    Forged segments *into a kernel client's connection* (blind injection, TS
    poisoning) use the kernel's own address ``10.0.0.1`` and the client's port as
    their source: what the daemon answers then goes to that real connection, as
    it would for an off-path attacker's forgeries.

Everything blocks for a bounded time only: each receive takes a timeout and
raises :class:`PeerTimeout` (naming what was awaited) when it passes.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import random
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from tcpstack.wire.errors import Malformed
from tcpstack.wire.ipv4 import PROTO_TCP, parse_ipv4
from tcpstack.wire.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    OutSegment,
    TcpOptions,
    TcpSegment,
    emit_tcp_ipv4,
    flags_str,
    parse_tcp,
)

INTERFACE = "tcpstack0"
HOST_ADDRESS = "10.0.0.1"
STACK_ADDRESS = "10.0.0.2"
PEER_ADDRESS = "10.0.0.3"
"""The scripted peer's address: in the TUN's subnet, owned by no interface."""

SPOOF_NETWORK = ipaddress.IPv4Network("10.0.0.0/24")
"""Spoofed SYN sources are drawn from here (excluding the host and the stack)."""

FORGED_TTL = 255
"""The IP TTL of every packet a :class:`RawSender` builds (the kernel and the daemon
use 64), so that a tap watching a kernel connection can tell forgeries apart."""

MASK = 0xFFFFFFFF
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>; the socket module has no constant for it
_READ_SIZE = 1 << 17  # a TSO super-segment is at most 64 KiB; room to spare
_CLK_TCK = float(os.sysconf("SC_CLK_TCK"))


def ip_int(address: str | int) -> int:
    """An IPv4 address as the integer the wire builders take."""
    return address if isinstance(address, int) else int(ipaddress.IPv4Address(address))


def seq_add(a: int, n: int) -> int:
    return (a + n) & MASK


def seq_diff(a: int, b: int) -> int:
    """``a - b`` in sequence space, as a signed 32-bit distance."""
    d = (a - b) & MASK
    return d - (1 << 32) if d & 0x80000000 else d


class PeerTimeout(AssertionError):
    """What the scripted peer waited for did not arrive in time."""


def forbid_forwarding() -> None:
    """Make sure IPv4 forwarding is off in this namespace (see the module docstring).

    Call it from inside the test's namespace: the sysctl is per namespace."""
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
        f.write("0\n")


# --------------------------------------------------------------------- receiving


class Received(NamedTuple):
    """A TCP segment seen on the TUN, with its addresses and when it was read."""

    src: int
    dst: int
    seg: TcpSegment  # the payload is a copy (bytes): it outlives the read buffer
    at: float
    ttl: int

    @property
    def forged(self) -> bool:
        """Sent by a :class:`RawSender` (which marks its packets with :data:`FORGED_TTL`)."""
        return self.ttl == FORGED_TTL

    def describe(self) -> str:
        s = self.seg
        return (f"{ipaddress.IPv4Address(self.src)}:{s.src_port} -> "
                f"{ipaddress.IPv4Address(self.dst)}:{s.dst_port} [{flags_str(s.flags)}] "
                f"seq={s.seq} ack={s.ack} win={s.window} len={len(s.payload)}")


def _bpf(instructions: Sequence[tuple[int, int, int, int]]
         ) -> tuple[bytes, ctypes.Array[ctypes.c_char]]:
    """A ``struct sock_fprog`` for ``instructions`` and the buffer it points into
    (which must stay alive until the filter is attached)."""
    code = b"".join(struct.pack("HBBI", *insn) for insn in instructions)
    buf = ctypes.create_string_buffer(code, len(code))
    return struct.pack("HL", len(instructions), ctypes.addressof(buf)), buf


def _tcp_filter(dst: int | None) -> list[tuple[int, int, int, int]]:
    """Classic BPF, offsets from the IP header (a TUN has no link header):
    accept IPv4 TCP packets (to ``dst`` if given), whole; drop the rest.

    Each instruction is (code, jump if true, jump if false, k)."""
    version = [(0x30, 0, 0, 0), (0x54, 0, 0, 0xF0)]  # ldb [0]; and #0xf0
    accept = (0x06, 0, 0, 0x40000)    # ret #262144
    drop = (0x06, 0, 0, 0)            # ret #0
    dst_check = [] if dst is None else [(0x20, 0, 0, 16), (0x15, 0, 1, dst)]  # ld [16]; jeq
    # jeq #0x40 and jeq #TCP skip, when false, to the final drop.
    tail = [*dst_check, accept, drop]
    return [*version, (0x15, 0, len(tail) + 1, 0x40),
            (0x30, 0, 0, 9), (0x15, 0, len(tail) - 1, PROTO_TCP), *tail]


class PacketTap:
    """TCP packets crossing ``interface`` (to ``dst`` only, if given), parsed.

    An ``AF_PACKET`` socket with a BPF filter; packets queued before the filter
    was attached are discarded at once.
    """

    def __init__(self, interface: str = INTERFACE, *, dst: str | int | None = None,
                 rcvbuf: int = 16 << 20) -> None:
        self.dst = None if dst is None else ip_int(dst)
        # ETH_P_ALL, not ETH_P_IP: only "all protocols" taps see outgoing packets.
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        prog, buf = _bpf(_tcp_filter(self.dst))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)
        del buf
        self.sock.bind((interface, 0))
        self._buf = bytearray(_READ_SIZE)
        self.sock.setblocking(False)
        while self._read_one() is not False:  # unfiltered leftovers
            pass

    def _read_one(self) -> Received | bool | None:
        """One packet: parsed, None if it is not for us, False if there is none."""
        try:
            n = self.sock.recv_into(self._buf)
        except BlockingIOError:
            return False
        now = time.monotonic()
        try:
            ip = parse_ipv4(memoryview(self._buf)[:n])
            if ip.proto != PROTO_TCP or (self.dst is not None and ip.dst != self.dst):
                return None
            seg = parse_tcp(ip.payload, ip.src, ip.dst, verify_checksum=False)
        except Malformed:
            return None
        return Received(ip.src, ip.dst, seg._replace(payload=bytes(seg.payload)), now, ip.ttl)

    def recv(self, timeout: float) -> Received | None:
        """The next packet, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            got = self._read_one()
            if isinstance(got, Received):
                return got
            if got is None:
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            select.select([self.sock], [], [], left)

    def drain(self) -> list[Received]:
        """Everything queued now, without waiting."""
        out: list[Received] = []
        while (got := self._read_one()) is not False:
            if isinstance(got, Received):
                out.append(got)
        return out

    def close(self) -> None:
        self.sock.close()


# ----------------------------------------------------------------------- sending


class RawSender:
    """Sends hand-built IPv4+TCP packets from any source address."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self._ident = random.randrange(0x10000)
        self.sent = 0

    def packet(self, seg: OutSegment, src: str | int, dst: str | int = STACK_ADDRESS) -> bytes:
        """The complete packet for ``seg`` (both checksums computed)."""
        self._ident = (self._ident + 1) & 0xFFFF
        return bytes(emit_tcp_ipv4(seg, ip_int(src), ip_int(dst), self._ident, FORGED_TTL))

    def send(self, seg: OutSegment, src: str | int, dst: str | int = STACK_ADDRESS) -> bool:
        """Send ``seg`` from ``src``; whether the kernel took it (see :meth:`send_packet`)."""
        return self.send_packet(self.packet(seg, src, dst), dst)

    def send_packet(self, packet: bytes, dst: str | int = STACK_ADDRESS) -> bool:
        """Send a prebuilt packet; a full device queue (ENOBUFS) drops it, as a link
        would, and the result is False."""
        try:
            self.sock.sendto(packet, (str(ipaddress.IPv4Address(ip_int(dst))), 0))
        except OSError:
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self.sock.close()


def spoofed_syn_packets(count: int, dst_port: int, rng: random.Random,
                        network: ipaddress.IPv4Network = SPOOF_NETWORK) -> Iterator[bytes]:
    """``count`` SYN packets to the stack from random sources in ``network`` (never
    the host's or the stack's address), random ports and sequence numbers, each
    with an MSS option like a real client's SYN."""
    base = int(network.network_address)
    size = network.num_addresses
    taken = {ip_int(HOST_ADDRESS), ip_int(STACK_ADDRESS)}
    options = TcpOptions(mss=1460)
    ident = 0
    dst = ip_int(STACK_ADDRESS)
    for _ in range(count):
        src = base + rng.randrange(1, size - 1)
        while src in taken:
            src = base + rng.randrange(1, size - 1)
        seg = OutSegment(rng.randrange(1024, 65536), dst_port, rng.getrandbits(32), 0, SYN,
                         64240, options)
        ident = (ident + 1) & 0xFFFF
        yield bytes(emit_tcp_ipv4(seg, src, dst, ident, FORGED_TTL))


# ---------------------------------------------------------------- a connection


class ScriptedConnection:
    """One TCP connection played by hand from ``local`` (default :data:`PEER_ADDRESS`).

    Keeps the sequence state a peer needs (SND.NXT, RCV.NXT, the daemon's
    window scale, the timestamp to echo) so that segments can be built with
    defaults and any field overridden. Received in-order data advances RCV.NXT
    (only ``keep`` bytes of it are stored); nothing is acknowledged unless a
    method says so.
    """

    def __init__(self, tap: PacketTap, sender: RawSender, dst_port: int, *,
                 local: str = PEER_ADDRESS, src_port: int | None = None,
                 window: int = 65535, wscale: int = 7, sack: bool = True,
                 timestamps: bool = True, mss: int = 1460, keep: int = 1 << 20,
                 rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self.tap = tap
        self.sender = sender
        self.local = ip_int(local)
        self.remote = ip_int(STACK_ADDRESS)
        self.src_port = src_port if src_port is not None else self.rng.randrange(20000, 60000)
        self.dst_port = dst_port
        self.iss = self.rng.getrandbits(32)
        self.snd_nxt = self.iss
        self.snd_una = self.iss
        self.irs = 0
        self.rcv_nxt = 0
        self.synchronized = False  # the daemon's SYN,ACK arrived
        self.window = window  # bytes we advertise
        self.wscale = wscale
        self.offer_sack = sack
        self.offer_timestamps = timestamps
        self.mss = mss
        self.peer_wscale = 0
        self.peer_window = 0  # bytes, scaled
        self.sack_ok = False
        self.ts_ok = False
        self.ts_recent = 0
        self._ts_base = self.rng.getrandbits(32)
        self.keep = keep
        self.data = bytearray()  # the first ``keep`` in-order bytes received
        self.bytes_received = 0
        self.fin_received = False
        self.rst_received = False
        self.segments_received = 0
        self._markers = 0  # bytes of our data used by sync()

    # -- building and sending ------------------------------------------------

    def tsval(self) -> int:
        """Our timestamp clock: milliseconds, from a random origin."""
        return (self._ts_base + int(time.monotonic() * 1000)) & MASK

    def advertised(self, window: int | None = None) -> int:
        """The window field for ``window`` bytes (ours by default), scaled."""
        w = self.window if window is None else window
        return min(0xFFFF, w >> (self.wscale if self.synchronized else 0))

    def segment(self, flags: int = ACK, *, seq: int | None = None, ack: int | None = None,
                payload: bytes = b"", window: int | None = None,
                sack_blocks: Sequence[tuple[int, int]] = (),
                tsval: int | None = None, tsecr: int | None = None,
                options: TcpOptions | None = None) -> OutSegment:
        """A segment of this connection; every field defaults to the current state."""
        if options is None:
            ts = None
            if self.ts_ok:
                ts = (self.tsval() if tsval is None else tsval & MASK,
                      self.ts_recent if tsecr is None else tsecr & MASK)
            options = TcpOptions(sack_blocks=tuple(sack_blocks) if self.sack_ok else (),
                                 timestamps=ts)
        return OutSegment(self.src_port, self.dst_port,
                          self.snd_nxt if seq is None else seq & MASK,
                          (self.rcv_nxt if ack is None else ack & MASK) if flags & ACK else 0,
                          flags, self.advertised(window), options, payload)

    def send(self, seg: OutSegment) -> None:
        self.sender.send(seg, self.local, self.remote)

    def send_data(self, payload: bytes, flags: int = ACK | PSH) -> None:
        """Send ``payload`` in order at SND.NXT (one segment), advancing SND.NXT."""
        self.send(self.segment(flags, payload=payload))
        self.snd_nxt = seq_add(self.snd_nxt, len(payload) + (1 if flags & FIN else 0))

    def ack(self, *, ack: int | None = None, window: int | None = None,
            sack_blocks: Sequence[tuple[int, int]] = ()) -> None:
        """A pure ACK (of everything received in order unless ``ack`` says otherwise)."""
        self.send(self.segment(ACK, ack=ack, window=window, sack_blocks=sack_blocks))

    def fin(self) -> None:
        """Our FIN at SND.NXT (with ACK), advancing SND.NXT."""
        self.send_data(b"", ACK | FIN)

    def reset(self) -> None:
        """A RST at SND.NXT: ends the connection on the daemon's side at once."""
        self.send(self.segment(RST, seq=self.snd_nxt))

    # -- receiving -------------------------------------------------------------

    def mine(self, rx: Received) -> bool:
        s = rx.seg
        return (rx.src == self.remote and rx.dst == self.local
                and s.src_port == self.dst_port and s.dst_port == self.src_port)

    def _absorb(self, rx: Received) -> None:
        """Learn from a segment of this connection: timestamps, window, ACK, data, FIN."""
        seg = rx.seg
        self.segments_received += 1
        if seg.flags & RST:
            self.rst_received = True
            return
        ts = seg.options.timestamps
        if self.ts_ok and ts is not None:
            self.ts_recent = ts[0]
        if seg.flags & ACK:
            if seq_diff(seg.ack, self.snd_una) > 0:
                self.snd_una = seg.ack
            if not seg.flags & SYN:
                self.peer_window = seg.window << self.peer_wscale
        if not self.synchronized:
            return
        n = len(seg.payload)
        skip = seq_diff(self.rcv_nxt, seg.seq)
        if n and 0 <= skip < n:
            fresh = seg.payload[skip:]
            room = self.keep - len(self.data)
            if room > 0:
                self.data += fresh[:room]
            self.bytes_received += len(fresh)
            self.rcv_nxt = seq_add(self.rcv_nxt, len(fresh))
        if seg.flags & FIN and seq_add(seg.seq, n) == self.rcv_nxt:
            self.rcv_nxt = seq_add(self.rcv_nxt, 1)
            self.fin_received = True

    def poll(self, timeout: float) -> Received | None:
        """The next segment of this connection (absorbed), or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            rx = self.tap.recv(max(left, 0.0))
            if rx is None:
                return None
            if self.mine(rx):
                self._absorb(rx)
                return rx

    def expect(self, what: str, predicate: Callable[[Received], bool],
               timeout: float = 2.0) -> Received:
        """Read this connection's segments until one satisfies ``predicate``;
        :class:`PeerTimeout` naming ``what`` if none does within ``timeout``."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            rx = self.poll(deadline - time.monotonic())
            if rx is None:
                raise PeerTimeout(f"no {what} within {timeout}s; saw: {seen[-5:]}")
            seen.append(rx.describe())
            if predicate(rx):
                return rx

    def sync(self, timeout: float = 10.0) -> Received:
        """Wait until the daemon has processed everything sent so far on this connection.

        Sends again one byte the daemon already has (the next unused one of what
        this connection sent, from ISS+1 on) and waits for the ACK that reports it
        as a duplicate in a D-SACK block (RFC 2883 4.1.1): the daemon handles a
        connection's segments in order, so everything sent before has been handled.
        Needs SACK and data sent before (one byte of it per call).
        """
        if not self.sack_ok:
            raise ValueError("sync needs SACK")
        seq = seq_add(self.iss, 1 + self._markers)
        if seq_diff(self.snd_una, seq) <= 0:
            raise ValueError("sync needs one byte of acknowledged data per call")
        self._markers += 1
        self.send(self.segment(ACK, seq=seq, payload=b"m"))
        block = (seq, seq_add(seq, 1))
        return self.expect(f"D-SACK of marker {seq}",
                           lambda rx: rx.seg.options.sack_blocks[:1] == (block,), timeout)

    def drain(self) -> list[Received]:
        """Absorb whatever of this connection is queued now."""
        out = [rx for rx in self.tap.drain() if self.mine(rx)]
        for rx in out:
            self._absorb(rx)
        return out

    # -- the handshake ---------------------------------------------------------

    def syn(self) -> OutSegment:
        """Our SYN (at ISS) with the options this connection offers."""
        options = TcpOptions(mss=self.mss, wscale=self.wscale,
                             sack_permitted=self.offer_sack,
                             timestamps=(self.tsval(), 0) if self.offer_timestamps else None)
        return OutSegment(self.src_port, self.dst_port, self.iss, 0, SYN,
                          min(self.window, 0xFFFF), options)

    def open(self, timeout: float = 3.0) -> Received:
        """Active open: SYN, the daemon's SYN,ACK, our ACK. Returns the SYN,ACK."""
        self.send(self.syn())
        self.snd_nxt = seq_add(self.iss, 1)
        synack = self.expect("SYN,ACK",
                             lambda rx: rx.seg.flags & (SYN | ACK) == SYN | ACK
                             and rx.seg.ack == self.snd_nxt, timeout)
        opts = synack.seg.options
        self.irs = synack.seg.seq
        self.rcv_nxt = seq_add(self.irs, 1)
        self.synchronized = True
        self.snd_una = self.snd_nxt
        self.sack_ok = self.offer_sack and opts.sack_permitted
        self.ts_ok = self.offer_timestamps and opts.timestamps is not None
        if self.ts_ok and opts.timestamps is not None:
            self.ts_recent = opts.timestamps[0]
        if opts.wscale is None:
            self.wscale = 0
        else:
            self.peer_wscale = opts.wscale
        self.peer_window = synack.seg.window  # unscaled in a SYN,ACK
        self.ack()
        return synack

    def __repr__(self) -> str:
        return (f"<ScriptedConnection {ipaddress.IPv4Address(self.local)}:{self.src_port} -> "
                f":{self.dst_port} snd_nxt={self.snd_nxt} rcv_nxt={self.rcv_nxt}>")


# ------------------------------------------------- a kernel connection, observed


class ObservedConnection:
    """The sequence state of a kernel client's connection to the daemon, learned by
    watching its segments on a :class:`PacketTap` (what an attacker on the path, or
    one that guessed well, knows): what the daemon expects next (its RCV.NXT), what
    it has sent (its SND.NXT), its window, and the client's latest TSval.

    Only exact while the connection is quiet (no data in flight either way).
    """

    def __init__(self, client_port: int, server_port: int, *,
                 client: str = HOST_ADDRESS, server: str = STACK_ADDRESS) -> None:
        self.client = ip_int(client)
        self.server = ip_int(server)
        self.client_port = client_port
        self.server_port = server_port
        self.server_rcv_nxt: int | None = None  # the client's next sequence number
        self.server_snd_nxt: int | None = None  # the daemon's next sequence number
        self.server_window = 0  # bytes, scaled
        self.server_wscale = 0
        self.client_tsval: int | None = None
        self.seen = 0

    def _ahead(self, new: int, old: int | None) -> int:
        return new if old is None or seq_diff(new, old) > 0 else old

    def update(self, packets: Sequence[Received]) -> None:
        for rx in packets:
            if rx.forged:
                continue
            seg = rx.seg
            end = seq_add(seg.seq, seg.seg_len)
            if (rx.src, seg.src_port, rx.dst, seg.dst_port) == (
                    self.client, self.client_port, self.server, self.server_port):
                self.seen += 1
                self.server_rcv_nxt = self._ahead(end, self.server_rcv_nxt)
                if seg.options.timestamps is not None:
                    self.client_tsval = seg.options.timestamps[0]
            elif (rx.src, seg.src_port, rx.dst, seg.dst_port) == (
                    self.server, self.server_port, self.client, self.client_port):
                self.seen += 1
                if seg.flags & SYN:
                    self.server_wscale = seg.options.wscale or 0
                    self.server_window = seg.window
                else:
                    self.server_window = seg.window << self.server_wscale
                self.server_snd_nxt = self._ahead(end, self.server_snd_nxt)

    def forged(self, flags: int, seq: int, ack: int = 0, payload: bytes = b"",
               options: TcpOptions | None = None, window: int = 0xFFFF) -> OutSegment:
        """A segment that claims to come from the client on this connection."""
        return OutSegment(self.client_port, self.server_port, seq & MASK,
                          ack & MASK if flags & ACK else 0, flags, window,
                          options if options is not None else TcpOptions(), payload)


# ------------------------------------------------------------- the daemon itself


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads), from
    ``/proc/PID/stat`` (clock ticks, usually 10 ms each)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    ticks = int(fields[11]) + int(fields[12])
    return ticks / _CLK_TCK

