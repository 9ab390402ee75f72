"""A deterministic in-memory network: two :class:`~tcpstack.stack.Stack` engines
wired through a seeded, lossy, delaying path, driven by a fake clock.

Nothing here reads the wall clock or the global random generator: every random
draw comes from a generator seeded from the ``seed`` argument, and the engines
get fixed ISN secrets and seeded generators, so the same arguments always give
the same :class:`Result`, bit for bit.

The topology::

    client 10.0.0.1 --- path "out" (client->server) ---> server 10.0.0.2:80
                    <-- path "in"  (server->client) ----

The path is one :class:`tcpstack.link.impair.Impairment` -- the project's one
link model, also behind ``tcpstack serve --impair`` -- whose two directions
carry the two ways, each with its own random stream and the same settings: a
bottleneck serializing packets at ``bandwidth`` bytes/s through a FIFO of at
most ``queue`` packets (tail drop), then random loss, duplication, and a
one-way propagation delay of ``rtt / 2`` plus uniform jitter of +- ``jitter``
(which may reorder packets). See the module docstring of
:mod:`tcpstack.link.impair` for the exact order and the random draws.

:func:`simulate` transfers ``size`` bytes from the client to the server, which
reads everything and closes when it sees the end of stream; the client closes
after queueing the last byte (and not before its handshake is done). It reports
whether the bytes arrived intact, when the server had read them all, the
goodput, and how many client packets were retransmissions.

The event loop: flush both engines (packets into the path, events to the two
small applications, repeated until nothing is pending), then advance the clock
to the earliest of the next delivery and the engines' timer deadlines, deliver
every packet due by then, run due timers, and repeat -- until the connection is
closed on both ends, or a time or iteration bound is reached.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from dataclasses import dataclass, field, replace

from tcpstack.link.impair import Impairment, ImpairSpec
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

#: The path's bound on packets held per direction (:attr:`ImpairSpec.limit`), set out
#: of reach so that the queue's tail drop and random loss are the only drops.
PATH_LIMIT = 1_000_000

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
    #: The initial slow start was left by HyStart++ (RFC 9406; NewReno and CUBIC).
    hystart: bool
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
    #: Packets the path dropped at random, and at full queues (both directions).
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
        # CLOSE in SYN-SENT would delete the connection with the data queued (RFC 9293
        # 3.10.4), as it would for a short transfer queued at once: wait for the handshake.
        if self.offset >= len(data) and tcb.state is not State.SYN_SENT:
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
             jitter: float = 0.0, duplicate: float = 0.0, reorder: float = 0.0,
             seed: int = 1, time_limit: float = 600.0, max_iterations: int = 2_000_000,
             tcp: TcpConfig | None = None, hystart: bool | None = None) -> Result:
    """Transfer ``size`` bytes client -> server over a simulated path; see the module doc.

    ``loss``, ``duplicate`` and ``reorder`` (probabilities, 0..1; a reordered packet is
    held back by the impairment's reorder delay, max(RTT, 10 ms)), ``jitter`` (seconds, +-),
    ``bandwidth`` (bytes/s, None = unlimited) and ``queue`` (packets, None =
    unbounded; ignored without a bandwidth) apply to each direction; the one-way
    propagation delay is ``rtt / 2``. ``cc``, ``sack`` and ``timestamps`` override
    the corresponding fields of ``tcp`` (the engine's defaults if None), and so does
    ``hystart`` unless None.
    """
    base = tcp if tcp is not None else TcpConfig()
    cfg = replace(base, congestion_control=cc, sack=sack, timestamps=timestamps,
                  hystart=base.hystart if hystart is None else hystart)

    def make_stack(address: str, role: str) -> Stack:
        secret = random.Random(_seed_for(seed, role + " isn")).randbytes(32)
        return Stack(StackConfig(addresses=(ipaddress.IPv4Address(address),), tcp=cfg),
                     isn_secret=secret, rng=random.Random(_seed_for(seed, role + " stack")))

    client = make_stack(CLIENT_IP, "client")
    server = make_stack(SERVER_IP, "server")
    # "out" carries client -> server, "in" server -> client. The limit on held packets
    # is set out of reach: random loss and the full queue are the only drops here.
    path = Impairment(ImpairSpec(
        loss=loss * 100, duplicate=duplicate * 100, reorder=reorder * 100, delay=rtt / 2,
        jitter=jitter,
        rate=bandwidth, queue=queue if bandwidth is not None else None,
        limit=PATH_LIMIT, seed=seed))
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
            to_server = [_flat(pkt) for pkt in client.packets_to_send(now)]
            for flat in to_server:
                counter.observe(flat)
            to_client = [_flat(pkt) for pkt in server.packets_to_send(now)]
            server_packets += len(to_client)
            # Without delay or bottleneck a packet arrives at once (sent at the same
            # time, the two ways cross).
            for pkt in path.outbound(to_server, now):
                server.receive(pkt, now)
            for pkt in path.inbound(to_client, now):
                client.receive(pkt, now)
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
        candidates = [t for t in (path.next_deadline(), client.next_deadline(),
                                  server.next_deadline())
                      if t is not None]
        if not candidates:
            failure = "idle"
            break
        t_next = min(candidates)
        if t_next > time_limit:
            failure = "time limit"
            break
        now = max(now, t_next)
        to_client, to_server = path.due(now)
        for pkt in to_server:
            server.receive(pkt, now)
        for pkt in to_client:
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
        hystart=cfg.hystart and cc != "bbr", delivered_ok=delivered_ok,
        completion_time=done,
        goodput=size / done if done is not None and done > 0 and delivered_ok else 0.0,
        retransmits=counter.retransmits,
        rtos=rtos,
        client_packets=counter.packets,
        client_data_packets=counter.data_packets,
        server_packets=server_packets,
        link_losses=path.counters["out_dropped"] + path.counters["in_dropped"],
        tail_drops=path.counters["out_tail_dropped"] + path.counters["in_tail_dropped"],
        closed_cleanly=failure is None,
        end_time=now,
        iterations=iterations,
        failure=failure,
    )
