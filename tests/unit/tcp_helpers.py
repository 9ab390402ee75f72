"""Fixtures and helpers for the sans-I/O TCP engine tests (test_tcp_*.py, test_stack_*.py).

Two levels:

* single-TCB helpers: build a :class:`Tcb` in any RFC 9293 state in one line
  (``tcb_established()``, ``tcb_fin_wait_2()``, ...), forge segments as the peer
  would send them (:func:`peer`), and assert on what the TCB transmits
  (:func:`expect`, :func:`expect_one`, :func:`expect_nothing`);
* two ends and a path: :class:`Pair` joins two TCBs (:func:`connected_pair`) or
  two Stacks (:func:`stack_pair`) through one seeded
  :class:`tcpstack.link.impair.Impairment` -- the project's one link model, the
  same as behind ``tcpstack serve --impair`` and the network simulator -- with a
  fake clock; :class:`Wire` drives one Stack with hand-made packets.

Time is a plain float passed as ``now``; nothing here reads a clock, and every
random decision comes from a seeded generator.

Conventions for the single-TCB helpers: the TCB under test is 10.0.0.2:80
("local"), the peer is 10.0.0.1:40000. Our ISS is :data:`ISS`, the peer's is
:data:`IRS`, unless a helper is told otherwise.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pytest

from tcpstack.build import is_compiled
from tcpstack.link.impair import Impairment, ImpairSpec
from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp import events as ev
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.seq import seq_add
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.errors import Malformed
from tcpstack.wire.ipv4 import PROTO_TCP, parse_ipv4
from tcpstack.wire.tcp import (
    ACK,
    FIN,
    NO_OPTIONS,
    SYN,
    AnySegment,
    TcpOptions,
    TcpSegment,
    emit_tcp_ipv4,
    flags_str,
    parse_tcp,
)

#: For tests that instrument the engine's Python internals (replacing a module
#: function or a class attribute to count calls): the compiled build runs the same
#: algorithm but cannot be instrumented that way.
PURE_ONLY = pytest.mark.skipif(
    is_compiled(), reason="instruments pure-Python internals; the compiled build runs "
                          "the same source")

# The RFC 9293 baseline that the per-state tests check segment by segment: every
# segment is ACKed at once and small segments are not held back. Delayed ACKs and
# Nagle's algorithm (on by default) have their own tests (test_tcp_ack_policy.py).
# The loss-recovery tests check RFC 5681/6582 arithmetic, so the baseline runs NewReno
# (CUBIC, the default, has its own tests in test_tcp_cubic.py); windows are checked
# field by field, so buffers keep their configured size (autotuning, on by default,
# has its own tests in test_tcp_autotune.py).
BASE_CONFIG = TcpConfig(delayed_ack=0.0, nagle=False, congestion_control="newreno",
                        autotune=False)


def base_config(**changes: Any) -> TcpConfig:
    """:data:`BASE_CONFIG` with some settings changed."""
    return dataclasses.replace(BASE_CONFIG, **changes)

LOCAL_IP = int(ipaddress.IPv4Address("10.0.0.2"))
REMOTE_IP = int(ipaddress.IPv4Address("10.0.0.1"))
LOCAL_PORT = 80
REMOTE_PORT = 40000
LOCAL = (LOCAL_IP, LOCAL_PORT)
REMOTE = (REMOTE_IP, REMOTE_PORT)

ISS = 1000  # our initial send sequence number
IRS = 5000  # the peer's initial sequence number
PEER_WINDOW = 65535
RTT = 0.1  # the handshake RTT used by the builders (SRTT = 0.1, RTO = 0.3 afterwards)

MASK = 0xFFFFFFFF


# ---------------------------------------------------------------- segments


def peer(
    tcb: Tcb,
    flags: int = ACK,
    *,
    seq: int | None = None,
    ack: int | None = None,
    payload: bytes = b"",
    window: int = PEER_WINDOW,
    options: TcpOptions = NO_OPTIONS,
) -> TcpSegment:
    """A segment from the peer to ``tcb``.

    By default it is the "expected" one: SEQ = RCV.NXT of ``tcb``, ACK = SND.NXT
    (everything ``tcb`` sent is acknowledged), and the window is :data:`PEER_WINDOW`
    (a raw header field, i.e. before any window scaling).
    """
    return TcpSegment(
        tcb.remote_port,
        tcb.local_port,
        tcb.rcv_nxt if seq is None else seq & MASK,
        tcb.snd_nxt if ack is None else ack & MASK,
        flags,
        window,
        options,
        payload,
    )


def syn_from_peer(
    *,
    seq: int = IRS,
    flags: int = SYN,
    mss: int | None = 1460,
    wscale: int | None = None,
    window: int = PEER_WINDOW,
    src_port: int = REMOTE_PORT,
    dst_port: int = LOCAL_PORT,
) -> TcpSegment:
    """The peer's opening SYN, with the given options."""
    return TcpSegment(src_port, dst_port, seq & MASK, 0, flags, window,
                      TcpOptions(mss=mss, wscale=wscale))


def describe(segs: Iterable[TcpSegment]) -> str:
    return ", ".join(
        f"[{flags_str(s.flags)}] seq={s.seq} ack={s.ack} win={s.window} len={len(s.payload)}"
        for s in segs
    )


def check_segment(
    seg: TcpSegment,
    flags: int | None = None,
    *,
    seq: int | None = None,
    ack: int | None = None,
    payload: bytes | None = None,
    window: int | None = None,
) -> TcpSegment:
    """Assert fields of ``seg`` (``flags`` must match exactly); return it."""
    what = describe([seg])
    if flags is not None:
        assert seg.flags == flags, f"flags {flags_str(seg.flags)} != {flags_str(flags)}: {what}"
    if seq is not None:
        assert seg.seq == seq & MASK, f"seq {seg.seq} != {seq & MASK}: {what}"
    if ack is not None:
        assert seg.ack == ack & MASK, f"ack {seg.ack} != {ack & MASK}: {what}"
    if payload is not None:
        assert bytes(seg.payload) == payload, f"payload differs: {what}"
    if window is not None:
        assert seg.window == window, f"window {seg.window} != {window}: {what}"
    return seg


def expect(tcb: Tcb, now: float, count: int | None = None) -> list[TcpSegment]:
    """Collect what ``tcb`` sends at ``now``; optionally assert how many segments."""
    segs = tcb.segments_to_send(now)
    if count is not None:
        assert len(segs) == count, f"expected {count} segment(s), got {describe(segs)}"
    return segs


def expect_one(
    tcb: Tcb,
    now: float,
    flags: int | None = None,
    *,
    seq: int | None = None,
    ack: int | None = None,
    payload: bytes | None = None,
    window: int | None = None,
) -> TcpSegment:
    """Assert ``tcb`` sends exactly one segment now, with the given fields; return it."""
    (seg,) = expect(tcb, now, 1)
    return check_segment(seg, flags, seq=seq, ack=ack, payload=payload, window=window)


def expect_nothing(tcb: Tcb, now: float) -> None:
    segs = tcb.segments_to_send(now)
    assert not segs, f"expected silence, got {describe(segs)}"


def events(tcb: Tcb) -> list[ev.Event]:
    return tcb.take_events()


def drain(tcb: Tcb, now: float) -> Tcb:
    """Discard pending output and events (used by the builders)."""
    tcb.segments_to_send(now)
    tcb.take_events()
    return tcb


# ------------------------------------------------------------ state builders


def tcb_listen_syn_received(
    cfg: TcpConfig | None = None,
    *,
    iss: int = ISS,
    irs: int = IRS,
    mss: int | None = 1460,
    wscale: int | None = None,
    window: int = PEER_WINDOW,
    now: float = 0.0,
    keep_output: bool = False,
) -> Tcb:
    """LISTEN + SYN -> SYN-RECEIVED (RFC 9293 3.10.7.2). The SYN,ACK is drained
    unless ``keep_output``."""
    syn = syn_from_peer(seq=irs, mss=mss, wscale=wscale, window=window)
    tcb = Tcb.passive_open(cfg or BASE_CONFIG, LOCAL, REMOTE, syn, iss, now)
    assert tcb.state is State.SYN_RECEIVED
    return tcb if keep_output else drain(tcb, now)


def tcb_syn_sent(
    cfg: TcpConfig | None = None, *, iss: int = ISS, now: float = 0.0, keep_output: bool = False
) -> Tcb:
    """CLOSED + active OPEN -> SYN-SENT (RFC 9293 3.10.1)."""
    tcb = Tcb.active_open(cfg or BASE_CONFIG, LOCAL, REMOTE, iss, now)
    assert tcb.state is State.SYN_SENT
    return tcb if keep_output else drain(tcb, now)


def tcb_established(
    cfg: TcpConfig | None = None,
    *,
    iss: int = ISS,
    irs: int = IRS,
    mss: int | None = 1460,
    wscale: int | None = None,
    window: int = PEER_WINDOW,
    now: float = 0.0,
) -> Tcb:
    """A passively opened connection after the three-way handshake, quiescent.

    The handshake takes :data:`RTT` seconds, so SRTT = RTT afterwards.
    """
    tcb = tcb_listen_syn_received(cfg, iss=iss, irs=irs, mss=mss, wscale=wscale,
                                  window=window, now=now)
    tcb.receive(peer(tcb, window=window), now + RTT)
    assert tcb.state is State.ESTABLISHED
    return drain(tcb, now + RTT)


def tcb_established_active(
    cfg: TcpConfig | None = None,
    *,
    iss: int = ISS,
    irs: int = IRS,
    mss: int | None = 1460,
    wscale: int | None = None,
    window: int = PEER_WINDOW,
    now: float = 0.0,
) -> Tcb:
    """An actively opened connection after SYN / SYN,ACK / ACK, quiescent."""
    tcb = tcb_syn_sent(cfg, iss=iss, now=now)
    tcb.receive(TcpSegment(REMOTE_PORT, LOCAL_PORT, irs & MASK, seq_add(iss, 1), SYN | ACK,
                           window, TcpOptions(mss=mss, wscale=wscale)), now + RTT)
    assert tcb.state is State.ESTABLISHED
    return drain(tcb, now + RTT)


def tcb_fin_wait_1(cfg: TcpConfig | None = None, *, half_close: bool = False,
                   now: float = 0.0) -> Tcb:
    """ESTABLISHED + CLOSE -> FIN-WAIT-1, our FIN sent and not yet acknowledged.

    ``half_close`` uses shutdown_write() (the application can still read) instead
    of close() (an orphaned connection)."""
    tcb = tcb_established(cfg, now=now)
    if half_close:
        tcb.shutdown_write()
    else:
        tcb.close()
    assert tcb.state is State.FIN_WAIT_1
    return drain(tcb, now + RTT)


def tcb_fin_wait_2(cfg: TcpConfig | None = None, *, half_close: bool = False,
                   now: float = 0.0) -> Tcb:
    """FIN-WAIT-1 + ACK of our FIN -> FIN-WAIT-2."""
    tcb = tcb_fin_wait_1(cfg, half_close=half_close, now=now)
    tcb.receive(peer(tcb), now + 2 * RTT)
    assert tcb.state is State.FIN_WAIT_2
    return drain(tcb, now + 2 * RTT)


def tcb_closing(cfg: TcpConfig | None = None, *, now: float = 0.0) -> Tcb:
    """FIN-WAIT-1 + the peer's FIN (not acknowledging ours) -> CLOSING."""
    tcb = tcb_fin_wait_1(cfg, now=now)
    tcb.receive(peer(tcb, ACK | FIN, ack=tcb.snd_una), now + 2 * RTT)
    assert tcb.state is State.CLOSING
    return drain(tcb, now + 2 * RTT)


def tcb_time_wait(cfg: TcpConfig | None = None, *, now: float = 0.0) -> Tcb:
    """FIN-WAIT-2 + the peer's FIN -> TIME-WAIT (entered at ``now + 3 * RTT``)."""
    tcb = tcb_fin_wait_2(cfg, now=now)
    tcb.receive(peer(tcb, ACK | FIN), now + 3 * RTT)
    assert tcb.state is State.TIME_WAIT
    return drain(tcb, now + 3 * RTT)


def tcb_close_wait(cfg: TcpConfig | None = None, *, now: float = 0.0) -> Tcb:
    """ESTABLISHED + the peer's FIN -> CLOSE-WAIT."""
    tcb = tcb_established(cfg, now=now)
    tcb.receive(peer(tcb, ACK | FIN), now + 2 * RTT)
    assert tcb.state is State.CLOSE_WAIT
    return drain(tcb, now + 2 * RTT)


def tcb_last_ack(cfg: TcpConfig | None = None, *, now: float = 0.0) -> Tcb:
    """CLOSE-WAIT + CLOSE -> LAST-ACK, our FIN sent."""
    tcb = tcb_close_wait(cfg, now=now)
    tcb.close()
    assert tcb.state is State.LAST_ACK
    return drain(tcb, now + 2 * RTT)


# ------------------------------------------------ two endpoints and the path between


Endpoint = TypeVar("Endpoint", Tcb, Stack)


class Pair(Generic[Endpoint]):
    """Two TCBs, or two Stacks, joined by one seeded :class:`Impairment`, with a fake clock.

    The path between them is the project's one link model,
    :mod:`tcpstack.link.impair`: ``a`` -> ``b`` travels its ``out`` direction,
    ``b`` -> ``a`` its ``in`` direction. The default path is clean (every packet
    arrives at once); give an :class:`ImpairSpec` for loss, delay, jitter,
    duplication, corruption, a bottleneck, and call :meth:`set_path` to change it
    between phases of a test (e.g. a clean handshake, then a lossy transfer).

    TCBs talk in IPv4 packets too: what a TCB sends is emitted with
    :func:`emit_tcp_ipv4` and parsed back with :func:`parse_ipv4` and
    :func:`parse_tcp` (checksums verified) before the other TCB receives it; a
    packet that does not parse -- one the path corrupted -- is discarded and
    counted in :attr:`discarded` by reason. Stacks exchange their own packets
    and do their own checking.

    ``drop`` is test scaffolding, not part of the path: it is called with the
    sender and every segment it sends, before the path, and returns True to drop
    that segment ("lose the first FIN"); those are counted in :attr:`filtered`.
    """

    def __init__(self, a: Endpoint, b: Endpoint, path: ImpairSpec | None = None, *,
                 now: float = 0.0,
                 drop: Callable[[Endpoint, AnySegment], bool] | None = None) -> None:
        self.a: Endpoint = a
        self.b: Endpoint = b
        self.path = Impairment(path if path is not None else ImpairSpec())
        self.now = now
        self.drop: Callable[[Endpoint, AnySegment], bool] | None = drop
        self.sent = 0  # segments (TCBs) or packets (Stacks) the two ends sent
        self.filtered = 0
        self.discarded: Counter[str] = Counter()
        self._ident = 0

    def set_path(self, spec: ImpairSpec) -> None:
        """From now on, packets travel through a fresh ``Impairment(spec)``."""
        assert self.path.held() == 0, "packets are still on the old path"
        self.path = Impairment(spec)

    @property
    def dropped(self) -> int:
        """Packets the path lost at random, both directions."""
        counters = self.path.counters
        return counters["out_dropped"] + counters["in_dropped"]

    # -- moving packets -----------------------------------------------------------

    def step(self) -> bool:
        """Deliver what the path releases now and one round of output of both ends;
        True if anything was sent or delivered."""
        now = self.now
        path = self.path
        sent = self.sent
        # Collect both ends' output first: segments sent at the same time cross.
        from_a = self._output(self.a, now)
        from_b = self._output(self.b, now)
        to_b = path.due_outbound(now) + path.outbound(from_a, now)
        to_a = path.due_inbound(now) + path.inbound(from_b, now)
        for pkt in to_b:
            self._input(self.b, pkt, now)
        for pkt in to_a:
            self._input(self.a, pkt, now)
        return self.sent != sent or bool(to_a or to_b)

    def run(self, app: Callable[[], None] | None = None, *,
            until: Callable[[], bool] | None = None, max_time: float | None = None,
            max_rounds: int = 200_000) -> None:
        """Exchange packets, calling ``app`` every round, advancing the clock when quiet.

        Returns when ``until()`` holds at a quiet moment (a round moved nothing and
        nothing waits to be sent), or, without ``until``, once nothing is left to
        happen (no packet on the path, no timer). When quiet, the clock moves to the
        next packet arrival or timer; arrivals are delivered before timers run. Fails
        if it goes idle before ``until()`` holds, passes ``max_time`` simulated
        seconds, or does not settle within ``max_rounds`` rounds.
        """
        for _ in range(max_rounds):
            if app is not None:
                app()
            if self.step() or self._output_pending():
                continue
            if until is not None and until():
                return
            times = [t for t in (self.a.next_deadline(), self.b.next_deadline(),
                                 self.path.next_deadline()) if t is not None]
            if not times:
                assert until is None, "Pair.run went idle before the condition held"
                return
            self.now = max(self.now, min(times))
            assert max_time is None or self.now <= max_time, (
                f"not done after {max_time} simulated seconds")
            to_a, to_b = self.path.due(self.now)
            for pkt in to_b:
                self._input(self.b, pkt, self.now)
            for pkt in to_a:
                self._input(self.a, pkt, self.now)
            for end in (self.a, self.b):
                deadline = end.next_deadline()
                if deadline is not None and deadline <= self.now:
                    end.handle_timer(self.now)
        raise AssertionError("Pair.run did not settle")

    def _output(self, src: Endpoint, now: float) -> list[bytearray]:
        """What ``src`` sends now, as IPv4 packets, less what ``drop`` removes."""
        drop = self.drop
        out: list[bytearray] = []
        if isinstance(src, Tcb):
            for seg in src.segments_to_send(now):
                self.sent += 1
                if drop is not None and drop(src, seg):
                    self.filtered += 1
                    continue
                self._ident = (self._ident + 1) & 0xFFFF
                out.append(emit_tcp_ipv4(seg, src.local_ip, src.remote_ip, self._ident))
            return out
        for pkt in src.packets_to_send(now):
            self.sent += 1
            # A gathered (headers, payload) packet (payloads of 2 KiB and more) is joined.
            flat = bytearray(b"".join(pkt)) if isinstance(pkt, tuple) else pkt
            if drop is not None and drop(src, parse(flat).seg):
                self.filtered += 1
                continue
            out.append(flat)
        src.take_notified()  # nobody waits for them; keep the list short
        return out

    def _input(self, dst: Endpoint, pkt: bytes | bytearray, now: float) -> None:
        if not isinstance(dst, Tcb):
            dst.receive(pkt, now)
            return
        try:
            ip = parse_ipv4(pkt)
            seg = parse_tcp(ip.payload, ip.src, ip.dst)
        except Malformed as e:
            self.discarded[e.reason] += 1
            return
        dst.receive(seg, now)

    def _output_pending(self) -> bool:
        return any(not isinstance(end, Tcb) and end.has_pending_output()
                   for end in (self.a, self.b))


def connected_pair(
    cfg_a: TcpConfig | None = None,
    cfg_b: TcpConfig | None = None,
    *,
    iss_a: int = ISS,
    iss_b: int = IRS,
) -> Pair[Tcb]:
    """An active opener ``a`` (10.0.0.1:40000) and a passive opener ``b`` (10.0.0.2:80),
    handshake completed over a clean path, events taken."""
    a = Tcb.active_open(cfg_a or BASE_CONFIG, REMOTE, LOCAL, iss_a, 0.0)
    (out,) = a.segments_to_send(0.0)
    syn = parse(packet(out, REMOTE_IP, LOCAL_IP)).seg  # as the listener would get it
    b = Tcb.passive_open(cfg_b or BASE_CONFIG, LOCAL, REMOTE, syn, iss_b, 0.0)
    pair = Pair(a, b)
    pair.run(until=lambda: a.state is State.ESTABLISHED and b.state is State.ESTABLISHED)
    a.take_events()
    b.take_events()
    return pair


# ------------------------------------------------------------- stack level


def ip(addr: str) -> int:
    return int(ipaddress.IPv4Address(addr))


def stack(addr: str = "10.0.0.2", cfg: TcpConfig | None = None, *, seed: int = 1,
          isn_secret: bytes | None = None) -> Stack:
    """A Stack with one address, a deterministic RNG and (optionally) a fixed ISN secret."""
    config = StackConfig(addresses=(ipaddress.IPv4Address(addr),), tcp=cfg or TcpConfig())
    return Stack(config, isn_secret=isn_secret, rng=random.Random(seed))


def packet(seg: AnySegment, src: str | int, dst: str | int, ident: int = 1) -> bytearray:
    """An IPv4 packet carrying ``seg``."""
    s = ip(src) if isinstance(src, str) else src
    d = ip(dst) if isinstance(dst, str) else dst
    return emit_tcp_ipv4(seg, s, d, ident)


@dataclass
class Parsed:
    src: int
    dst: int
    seg: TcpSegment


def parse(pkt: bytes | bytearray) -> Parsed:
    """Parse an IPv4+TCP packet produced by a Stack (checksums verified)."""
    p = parse_ipv4(pkt)
    assert p.proto == PROTO_TCP
    seg = parse_tcp(bytes(p.payload), p.src, p.dst)
    seg = seg._replace(payload=bytes(seg.payload))
    return Parsed(p.src, p.dst, seg)


class Wire:
    """Drive one Stack (10.0.0.2) by hand as the host 10.0.0.1 would."""

    def __init__(self, st: Stack | None = None, peer_addr: str = "10.0.0.1") -> None:
        self.stack = st or stack()
        self.peer_ip = ip(peer_addr)
        self.local_ip = next(iter(self.stack.addresses))
        self.now = 0.0

    def send(self, seg: TcpSegment, now: float | None = None) -> list[TcpSegment]:
        """Deliver ``seg`` from the peer; return the segments the stack sends back."""
        if now is not None:
            self.now = now
        self.stack.receive(packet(seg, self.peer_ip, self.local_ip), self.now)
        return self.out()

    def out(self) -> list[TcpSegment]:
        segs = []
        for pkt in self.stack.packets_to_send(self.now):
            p = parse(pkt)
            assert p.src == self.local_ip and p.dst == self.peer_ip
            segs.append(p.seg)
        return segs

    def tick(self, now: float) -> list[TcpSegment]:
        """Advance the clock to ``now``, run due timers, collect output."""
        self.now = now
        self.stack.handle_timer(now)
        return self.out()


def stack_pair(cfg: TcpConfig | None = None, *, seed: int = 7,
               secret_a: bytes | None = b"secret of host A",
               secret_b: bytes | None = b"secret of host B",
               path: ImpairSpec | None = None) -> Pair[Stack]:
    """Two Stacks, ``a`` = 10.0.0.1 and ``b`` = 10.0.0.2, joined by ``path`` (clean by
    default). ISN secrets are fixed by default so runs are reproducible."""
    return Pair(stack("10.0.0.1", cfg, seed=seed, isn_secret=secret_a),
                stack("10.0.0.2", cfg, seed=seed + 1, isn_secret=secret_b), path)


def opening_ladder(net: Pair[Stack], port: int = 80) -> tuple[dict[str, Any], Tcb]:
    """Open a connection from ``net.a`` to ``net.b:port`` with ``net.b``'s handshake
    ladders on; return the opening ladder's document and the client's Tcb."""
    from tcpstack.observe.core import Observatory
    obs = Observatory(net.b, packets=True)
    obs.enable_ladders()
    seen: list[dict[str, Any]] = []
    obs.on_ladder.append(seen.append)
    obs.attach()
    net.b.listen(port)
    client = net.a.connect("10.0.0.2", port, net.now)
    net.run(until=lambda: client.state is State.ESTABLISHED and bool(seen))
    (doc,) = [d for d in seen if d["phase"] == "opening"]
    return doc, client


# ------------------------------------------------- SACK / timestamps builders
#
# The builders above open connections with a SYN that offers neither SACK nor
# timestamps. These open one that does (RFC 2018 2, RFC 7323 3.2), and model the
# peer's timestamp clock as milliseconds since PEER_TS0.

PEER_TS0 = 7_000_000  # the peer's TSval at time 0 (its clock ticks once per ms)


def peer_tsval(now: float) -> int:
    """The TSval the peer puts in a segment sent at ``now``."""
    return (PEER_TS0 + int(now * 1000)) & MASK


def our_tsval(tcb: Tcb, now: float) -> int:
    """The TSval ``tcb`` puts in a segment sent at ``now`` (ms plus its offset)."""
    return (int(now * 1000) + tcb.ts_offset) & MASK


def syn_with_options(
    *,
    seq: int = IRS,
    flags: int = SYN,
    mss: int | None = 1460,
    wscale: int | None = None,
    sack: bool = False,
    ts: tuple[int, int] | None = None,
    window: int = PEER_WINDOW,
) -> TcpSegment:
    """The peer's SYN offering SACK-permitted and/or timestamps."""
    return TcpSegment(REMOTE_PORT, LOCAL_PORT, seq & MASK, 0, flags, window,
                      TcpOptions(mss=mss, wscale=wscale, sack_permitted=sack, timestamps=ts))


def peer_opts(
    tcb: Tcb,
    now: float,
    *,
    sack: tuple[tuple[int, int], ...] = (),
    tsval: int | None = None,
    tsecr: int | None = None,
) -> TcpOptions:
    """Options of a segment the peer sends at ``now``: timestamps if ``tcb`` agreed to
    them (TSval from the peer's clock, TSecr by default our TSval of ``now - RTT``)
    and the given SACK blocks (absolute sequence numbers)."""
    ts = None
    if tcb.ts_ok:
        ts = (peer_tsval(now) if tsval is None else tsval,
              our_tsval(tcb, max(0.0, now - RTT)) if tsecr is None else tsecr)
    if ts is None and not sack:
        return NO_OPTIONS
    return TcpOptions(sack_blocks=tuple((a & MASK, b & MASK) for a, b in sack), timestamps=ts)


def tcb_established_opts(
    cfg: TcpConfig | None = None,
    *,
    sack: bool = True,
    ts: bool = True,
    iss: int = ISS,
    irs: int = IRS,
    mss: int | None = 1460,
    wscale: int | None = None,
    window: int = PEER_WINDOW,
    now: float = 0.0,
) -> Tcb:
    """Like :func:`tcb_established`, but the peer's SYN offers SACK-permitted and/or
    timestamps, and the handshake ACK echoes our SYN,ACK's TSval (SRTT = RTT)."""
    syn = syn_with_options(seq=irs, mss=mss, wscale=wscale, sack=sack,
                           ts=(peer_tsval(now), 0) if ts else None, window=window)
    tcb = Tcb.passive_open(cfg or BASE_CONFIG, LOCAL, REMOTE, syn, iss, now)
    (synack,) = tcb.segments_to_send(now)
    opts = NO_OPTIONS
    if ts and synack.options.timestamps is not None:
        opts = TcpOptions(timestamps=(peer_tsval(now + RTT), synack.options.timestamps[0]))
    tcb.receive(peer(tcb, window=window, options=opts), now + RTT)
    assert tcb.state is State.ESTABLISHED
    return drain(tcb, now + RTT)


def pattern(n: int, seed: int = 0) -> bytes:
    """``n`` bytes of a position-dependent pattern (so misplaced bytes are caught)."""
    return bytes((i * 7 + seed + i // 251) % 256 for i in range(n))
