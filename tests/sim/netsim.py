"""A deterministic in-memory network: two :class:`~tcpstack.stack.Stack` engines
wired through a pair of seeded, lossy, delaying links, driven by a fake clock.

Nothing here reads the wall clock or the global random generator: every random
draw comes from a :class:`random.Random` seeded from the ``seed`` argument, and
the engines get fixed ISN secrets and seeded generators, so the same arguments
always give the same :class:`Result`, bit for bit.

The topology::

    client 10.0.0.1 --- Link (client->server) ---> server 10.0.0.2:80
                    <-- Link (server->client) ----

A :class:`Link` models one direction of a path: a bottleneck that serializes
packets at ``bandwidth`` bytes/s through a FIFO of at most ``queue_limit``
packets (tail drop), then random loss, a one-way propagation ``delay`` plus
uniform ``jitter`` (which may reorder packets), and random duplication.

:func:`simulate` transfers ``size`` bytes from the client to the server, which
reads everything and closes when it sees the end of stream; the client closes
after queueing the last byte. It reports whether the bytes arrived intact, when
the server had read them all, the goodput, and how many client packets were
retransmissions.

The event loop: flush both engines (packets into the links, events to the two
small applications, repeated until nothing is pending), then advance the clock
to the earliest of the next link delivery and the engines' timer deadlines,
deliver every packet due by then, run due timers, and repeat -- until the
connection is closed on both ends, or a time or iteration bound is reached.
"""

from __future__ import annotations

import heapq
import ipaddress
import random
import struct
from dataclasses import dataclass, field, replace

from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp import events as ev
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import OutPacket

CLIENT_IP = "10.0.0.1"
SERVER_IP = "10.0.0.2"
SERVER_PORT = 80

#: Bytes handed to ``Tcb.send`` at a time by the sending application.
WRITE_CHUNK = 64 * 1024

_SEQ_MASK = 0xFFFFFFFF
_TCP_SYN = 0x02
_TCP_FIN = 0x01
_IP_TOTAL_LEN = struct.Struct("!H")
_TCP_SEQ = struct.Struct("!I")



def _flat(pkt: OutPacket) -> bytes:
    """One buffer for a packet that may come as ``(headers, payload)``."""
    return b"".join(pkt) if isinstance(pkt, tuple) else bytes(pkt)

def _seed_for(seed: int, purpose: str) -> int:
    """An independent, reproducible seed per random stream (no ``hash()``: it is salted)."""
    value = seed & 0xFFFFFFFFFFFF
    for ch in purpose:
        value = (value * 1_000_003 + ord(ch)) & 0xFFFFFFFFFFFFFFFF
    return value


@dataclass(slots=True)
class LinkStats:
    """What a :class:`Link` did to the packets offered to it."""

    offered: int = 0
    offered_bytes: int = 0
    delivered: int = 0
    lost: int = 0  # random loss
    tail_dropped: int = 0  # queue full
    duplicated: int = 0


class Link:
    """One direction of a path, with a fake clock supplied by the caller.

    A packet offered at ``now`` is tail-dropped if ``queue_limit`` packets are
    already waiting for (or being put on) the bottleneck; otherwise it leaves the
    bottleneck after its serialization time ``len / bandwidth`` behind the
    packets before it (no bottleneck if ``bandwidth`` is None). It is then lost
    with probability ``loss``, else delivered ``delay + U(0, jitter)`` seconds
    after it left, and with probability ``duplicate`` a second copy follows with
    its own jitter. Every packet consumes the same number of random draws
    whatever the parameters, so runs differing only in, say, the loss rate see
    aligned random streams.
    """

    __slots__ = ("_busy_until", "_departures", "_events", "_rng", "_seq", "bandwidth",
                 "delay", "duplicate", "jitter", "loss", "queue_limit", "stats")

    def __init__(self, rng: random.Random, *, loss: float = 0.0, delay: float = 0.0,
                 jitter: float = 0.0, bandwidth: float | None = None,
                 queue_limit: int | None = None, duplicate: float = 0.0) -> None:
        if not 0.0 <= loss <= 1.0 or not 0.0 <= duplicate <= 1.0:
            raise ValueError("loss and duplicate are probabilities in [0, 1]")
        if delay < 0 or jitter < 0:
            raise ValueError("delay and jitter must not be negative")
        if bandwidth is not None and bandwidth <= 0:
            raise ValueError("bandwidth must be positive (or None for no bottleneck)")
        if queue_limit is not None and queue_limit < 1:
            raise ValueError("the queue must hold at least one packet")
        self._rng = rng
        self.loss = loss
        self.delay = delay
        self.jitter = jitter
        self.bandwidth = bandwidth
        self.queue_limit = queue_limit
        self.duplicate = duplicate
        self.stats = LinkStats()
        self._busy_until = 0.0
        self._departures: list[float] = []  # a FIFO: departure times are non-decreasing
        self._events: list[tuple[float, int, bytes]] = []
        self._seq = 0

    def _push(self, when: float, packet: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._events, (when, self._seq, packet))

    def send(self, packet: bytes, now: float) -> None:
        """Offer ``packet`` to the link at time ``now``."""
        stats = self.stats
        stats.offered += 1
        stats.offered_bytes += len(packet)
        rng = self._rng
        u_loss, u_jitter, u_dup, u_dup_jitter = rng.random(), rng.random(), rng.random(), \
            rng.random()
        departure = now
        if self.bandwidth is not None:
            deps = self._departures
            # Packets that have left the bottleneck no longer occupy the queue.
            i = 0
            while i < len(deps) and deps[i] <= now:
                i += 1
            if i:
                del deps[:i]
            if self.queue_limit is not None and len(deps) >= self.queue_limit:
                stats.tail_dropped += 1
                return
            departure = max(now, self._busy_until) + len(packet) / self.bandwidth
            self._busy_until = departure
            deps.append(departure)
        if u_loss < self.loss:
            stats.lost += 1
            return
        self._push(departure + self.delay + self.jitter * u_jitter, packet)
        if u_dup < self.duplicate:
            stats.duplicated += 1
            self._push(departure + self.delay + self.jitter * u_dup_jitter, packet)

    def next_delivery(self) -> float | None:
        """When the next packet comes out of the link, or None if nothing is in flight."""
        return self._events[0][0] if self._events else None

    def deliver_due(self, now: float) -> list[bytes]:
        """Take every packet whose delivery time is at or before ``now``, in time order."""
        events = self._events
        out: list[bytes] = []
        while events and events[0][0] <= now:
            out.append(heapq.heappop(events)[2])
        self.stats.delivered += len(out)
        return out


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one :func:`simulate` run. Times are simulated seconds."""

    loss: float
    rtt: float
    size: int
    cc: str
    sack: bool
    timestamps: bool
    seed: int
    #: The server read exactly the bytes the client sent, and then the end of stream.
    delivered_ok: bool
    #: When the server had read all ``size`` bytes (None if it never did).
    completion_time: float | None
    #: ``size / completion_time`` in bytes/s (0.0 if the transfer did not complete).
    goodput: float
    #: Client packets carrying sequence space (data, SYN, FIN) already sent before.
    retransmits: int
    #: Retransmission timeouts of the client: its RTO grew across a timer run.
    rtos: int
    #: Every packet the client sent, and those carrying sequence space.
    client_packets: int
    client_data_packets: int
    server_packets: int
    #: Packets the links dropped at random, and at full queues (both directions).
    link_losses: int
    tail_drops: int
    #: Both ends finished the close handshake (client TIME-WAIT or CLOSED, server CLOSED).
    closed_cleanly: bool
    #: Simulated time when the loop ended, and the loop's iteration count.
    end_time: float
    iterations: int
    #: None, or why the run ended early: "time limit", "iteration limit", "idle"
    #: (nothing left to happen), or "client: <error>" / "server: <error>" for a
    #: connection that terminated with an error.
    failure: str | None = None

    @property
    def goodput_mbit(self) -> float:
        return self.goodput * 8 / 1e6


def make_payload(size: int, seed: int) -> bytes:
    """``size`` reproducible pseudo-random bytes."""
    return random.Random(_seed_for(seed, "payload")).randbytes(size)


@dataclass(slots=True)
class _Sender:
    """The client application: write everything with back-pressure, then close."""

    tcb: Tcb
    data: bytes
    offset: int = 0
    closed: bool = False
    error: str | None = None

    def service(self) -> None:
        tcb = self.tcb
        for e in tcb.take_events():
            if isinstance(e, ev.Terminated) and e.error is not None:
                self.error = e.error
        if self.closed or not tcb.can_send:
            return
        data = self.data
        high_water = tcb.send_space
        while self.offset < len(data) and tcb.send_buffered < high_water:
            end = min(len(data), self.offset + WRITE_CHUNK)
            tcb.send(data[self.offset:end])
            self.offset = end
        if self.offset >= len(data):
            tcb.close()
            self.closed = True


@dataclass(slots=True)
class _Receiver:
    """The server application: read everything, close on end of stream."""

    expected: int
    tcb: Tcb | None = None
    received: bytearray = field(default_factory=bytearray)
    complete_at: float | None = None
    eof: bool = False
    closed: bool = False
    error: str | None = None

    def service(self, now: float) -> None:
        tcb = self.tcb
        if tcb is None:
            return
        for e in tcb.take_events():
            if isinstance(e, ev.EndOfStream):
                self.eof = True
            elif isinstance(e, ev.Terminated) and e.error is not None:
                self.error = e.error
        if tcb.recv_buffered:
            self.received += tcb.recv()
            if self.complete_at is None and len(self.received) >= self.expected:
                self.complete_at = now
        if self.eof and not self.closed:
            tcb.close()
            self.closed = True


class _RetransmitCounter:
    """Counts client packets whose sequence space was already sent before.

    Reads the IPv4 and TCP headers directly (the engine's packets are well formed):
    a packet carrying ``n > 0`` units of sequence space (payload, SYN, FIN) that
    starts below the highest sequence number sent so far is a retransmission.
    """

    __slots__ = ("data_packets", "iss", "max_end", "packets", "retransmits")

    def __init__(self) -> None:
        self.iss: int | None = None
        self.max_end = 0  # relative to the ISS
        self.packets = 0
        self.data_packets = 0
        self.retransmits = 0

    def observe(self, packet: bytes | bytearray) -> None:
        self.packets += 1
        ihl = (packet[0] & 0x0F) * 4
        total = _IP_TOTAL_LEN.unpack_from(packet, 2)[0]
        doff = (packet[ihl + 12] >> 4) * 4
        flags = packet[ihl + 13]
        seg_len = total - ihl - doff + (1 if flags & _TCP_SYN else 0) + \
            (1 if flags & _TCP_FIN else 0)
        if seg_len <= 0:
            return
        seq = _TCP_SEQ.unpack_from(packet, ihl + 4)[0]
        if self.iss is None:
            self.iss = seq
        self.data_packets += 1
        start = (seq - self.iss) & _SEQ_MASK
        if start < self.max_end:
            self.retransmits += 1
        self.max_end = max(self.max_end, start + seg_len)


def simulate(*, loss: float, rtt: float, size: int, cc: str = "newreno", sack: bool = True,
             timestamps: bool = True, bandwidth: float | None = 10e6, queue: int | None = 100,
             jitter: float = 0.0, duplicate: float = 0.0, seed: int = 1,
             time_limit: float = 600.0, max_iterations: int = 2_000_000,
             tcp: TcpConfig | None = None) -> Result:
    """Transfer ``size`` bytes client -> server over a simulated path; see the module doc.

    ``loss``, ``jitter``, ``duplicate``, ``bandwidth`` (bytes/s, None = unlimited)
    and ``queue`` (packets, None = unbounded) apply to each direction; the one-way
    propagation delay is ``rtt / 2``. ``cc``, ``sack`` and ``timestamps`` override
    the corresponding fields of ``tcp`` (the engine's defaults if None).
    """
    base = tcp if tcp is not None else TcpConfig()
    cfg = replace(base, congestion_control=cc, sack=sack, timestamps=timestamps)

    def make_stack(address: str, role: str) -> Stack:
        secret = random.Random(_seed_for(seed, role + " isn")).randbytes(32)
        return Stack(StackConfig(addresses=(ipaddress.IPv4Address(address),), tcp=cfg),
                     isn_secret=secret, rng=random.Random(_seed_for(seed, role + " stack")))

    def make_link(direction: str) -> Link:
        return Link(random.Random(_seed_for(seed, direction)), loss=loss, delay=rtt / 2,
                    jitter=jitter, bandwidth=bandwidth, queue_limit=queue,
                    duplicate=duplicate)

    client = make_stack(CLIENT_IP, "client")
    server = make_stack(SERVER_IP, "server")
    c2s = make_link("client->server")
    s2c = make_link("server->client")
    server.listen(SERVER_PORT)
    data = make_payload(size, seed)
    now = 0.0
    sender = _Sender(client.connect(SERVER_IP, SERVER_PORT, now), data)
    receiver = _Receiver(size)
    counter = _RetransmitCounter()
    server_packets = 0
    rtos = 0
    failure: str | None = None
    iterations = 0

    def flush() -> None:
        nonlocal server_packets
        # Application calls mark connections dirty; go round until all is sent.
        for _ in range(16):
            for pkt in client.packets_to_send(now):
                flat = _flat(pkt)
                counter.observe(flat)
                c2s.send(flat, now)
            for pkt in server.packets_to_send(now):
                server_packets += 1
                s2c.send(_flat(pkt), now)
            client.take_notified()  # the sender polls its one connection
            for tcb in server.take_notified():
                if receiver.tcb is None:
                    receiver.tcb = tcb
            sender.service()
            receiver.service(now)
            if not (client.has_pending_output() or server.has_pending_output()):
                return

    def finished() -> bool:
        server_done = receiver.tcb is not None and receiver.tcb.state is State.CLOSED
        client_done = sender.tcb.state in (State.TIME_WAIT, State.CLOSED)
        return server_done and client_done

    while True:
        flush()
        if finished():
            break
        if sender.error is not None or receiver.error is not None:
            failure = f"client: {sender.error}" if sender.error else f"server: {receiver.error}"
            break
        iterations += 1
        if iterations > max_iterations:
            failure = "iteration limit"
            break
        candidates = [t for t in (c2s.next_delivery(), s2c.next_delivery(),
                                  client.next_deadline(), server.next_deadline())
                      if t is not None]
        if not candidates:
            failure = "idle"
            break
        t_next = min(candidates)
        if t_next > time_limit:
            failure = "time limit"
            break
        now = max(now, t_next)
        for pkt in c2s.deliver_due(now):
            server.receive(pkt, now)
        for pkt in s2c.deliver_due(now):
            client.receive(pkt, now)
        deadline = client.next_deadline()
        if deadline is not None and deadline <= now:
            rto_before = sender.tcb.rtt.rto
            client.handle_timer(now)
            if sender.tcb.rtt.rto > rto_before:
                rtos += 1
        deadline = server.next_deadline()
        if deadline is not None and deadline <= now:
            server.handle_timer(now)

    delivered_ok = receiver.eof and bytes(receiver.received) == data
    done = receiver.complete_at
    return Result(
        loss=loss, rtt=rtt, size=size, cc=cc, sack=sack, timestamps=timestamps, seed=seed,
        delivered_ok=delivered_ok,
        completion_time=done,
        goodput=size / done if done is not None and done > 0 and delivered_ok else 0.0,
        retransmits=counter.retransmits,
        rtos=rtos,
        client_packets=counter.packets,
        client_data_packets=counter.data_packets,
        server_packets=server_packets,
        link_losses=c2s.stats.lost + s2c.stats.lost,
        tail_drops=c2s.stats.tail_dropped + s2c.stats.tail_dropped,
        closed_cleanly=failure is None,
        end_time=now,
        iterations=iterations,
        failure=failure,
    )
