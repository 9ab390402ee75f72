"""The fault injector (:mod:`tcpstack.link.impair`), its device wrapper and runtime hook.

Everything here is sans-I/O with explicit times, except the runtime test, which
runs a real :class:`~tcpstack.aio.network.Network` on a fake pipe-backed device
and the event loop's clock, and the CLI tests, which run ``tcpstack serve``
with ``TunDevice.open`` replaced by a guard (no interface is ever created).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import struct
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import pytest

from tcpstack.aio.devices import TimedDevice
from tcpstack.aio.network import Network
from tcpstack.link.impair import ImpairedDevice, Impairment, ImpairSpec, corrupt_packet
from tcpstack.stack import Stack, StackConfig
from tcpstack.wire import checksum as ck
from tcpstack.wire.errors import Malformed
from tcpstack.wire.icmp import ECHO_REPLY, ECHO_REQUEST, build_icmp, parse_icmp
from tcpstack.wire.ipv4 import PROTO_ICMP, PROTO_UDP, build_ipv4, parse_ipv4
from tcpstack.wire.tcp import ACK, PSH, TcpSegment, emit_tcp_ipv4, parse_tcp

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT = int(ipaddress.IPv4Address("10.0.0.1"))
STACK = int(ipaddress.IPv4Address("10.0.0.2"))


def tcp_packet(i: int = 0, payload: bytes = b"hello, impaired world") -> bytearray:
    seg = TcpSegment(40000, 80, 1000 + i, 1, ACK | PSH, 65535, payload=payload)
    return emit_tcp_ipv4(seg, CLIENT, STACK, ident=i)


def echo_request(i: int = 0, src: int = CLIENT, dst: int = STACK) -> bytearray:
    return build_ipv4(src, dst, PROTO_ICMP, build_icmp(ECHO_REQUEST, 0, 0x1234_0000 | i,
                                                       b"ping" * 8), ident=i)


def udp_packet(checksum: int | None) -> bytearray:
    """A UDP datagram; ``checksum=None`` computes it, 0 means "no checksum" (RFC 768)."""
    data = b"udp payload!"
    udp = bytearray(struct.pack("!HHHH", 5353, 53, 8 + len(data), 0) + data)
    if checksum is None:
        checksum = ck.finish(ck.pseudo_header_ipv4(CLIENT, STACK, PROTO_UDP, len(udp))
                             + ck.partial(udp)) or 0xFFFF
    struct.pack_into("!H", udp, 6, checksum)
    return build_ipv4(CLIENT, STACK, PROTO_UDP, udp)


def numbered(n: int) -> list[bytes]:
    """``n`` distinct small packets whose first 4 bytes say their index."""
    return [i.to_bytes(4, "big") + b"x" * 60 for i in range(n)]


def index_of(packet: bytes | bytearray | memoryview) -> int:
    return int.from_bytes(bytes(packet[:4]), "big")


def bit_difference(a: bytes | bytearray, b: bytes | bytearray) -> int:
    assert len(a) == len(b)
    return sum(bin(x ^ y).count("1") for x, y in zip(a, b, strict=True))


# ----------------------------------------------------------------- parsing


def test_parse_full_example() -> None:
    spec = ImpairSpec.parse(
        "loss=5,delay=10ms,jitter=2ms,reorder=10,duplicate=2,corrupt=1,seed=7,dir=both")
    assert spec == ImpairSpec(loss=5, delay=0.010, jitter=0.002, reorder=10, duplicate=2,
                              corrupt=1, seed=7, direction="both")
    assert spec.effective_reorder_delay == pytest.approx(0.020)  # 2 * delay


@pytest.mark.parametrize(("text", "expected"), [
    ("delay=250us", ImpairSpec(delay=250e-6)),
    ("delay=1.5s", ImpairSpec(delay=1.5)),
    ("delay=0", ImpairSpec()),
    ("loss=2.5%", ImpairSpec(loss=2.5)),
    (" LOSS = 3 , dup=4 ", ImpairSpec(loss=3, duplicate=4)),
    ("reorder=5,reorder_delay=30ms", ImpairSpec(reorder=5, reorder_delay=0.030)),
    ("rate=8mbit", ImpairSpec(rate=1e6)),
    ("rate=2kbps", ImpairSpec(rate=2000)),
    ("rate=1500", ImpairSpec(rate=1500)),
    ("rate=80mbit,queue=100", ImpairSpec(rate=10e6, queue=100)),
    ("limit=10,seed=-3,direction=OUT", ImpairSpec(limit=10, seed=-3, direction="out")),
])
def test_parse_units_and_aliases(text: str, expected: ImpairSpec) -> None:
    assert ImpairSpec.parse(text) == expected


def test_text_form_round_trips() -> None:
    spec = ImpairSpec(loss=5, delay=0.01, jitter=250e-6, reorder=1, reorder_delay=2.0,
                      duplicate=2, corrupt=0.5, rate=1e6, queue=20, limit=50, seed=9,
                      direction="in")
    assert ImpairSpec.parse(str(spec)) == spec
    assert str(ImpairSpec()) == "none"
    assert ImpairSpec().is_noop and not ImpairSpec(loss=1).is_noop


@pytest.mark.parametrize(("text", "fragment"), [
    ("bogus=1", "unknown key 'bogus'"),
    ("loss=abc", "not a number"),
    ("loss=nan", "not a finite number"),
    ("loss=101", "0..100"),
    ("corrupt=-1", "0..100"),
    ("delay=10", "needs a unit"),
    ("delay=10parsecs", "not a number"),
    ("delay=-5ms", "out of range"),
    ("jitter=2h", "not a number"),
    ("seed=1.5", "not an integer"),
    ("limit=0", "out of range"),
    ("rate=1mbit,queue=0", "out of range"),
    ("rate=1mbit,queue=2.5", "not an integer"),
    ("queue=10", "give a rate too"),
    ("rate=0", "positive"),
    ("dir=sideways", "both, in, out"),
    ("loss=1,loss=2", "given twice"),
    ("loss", "expected key=value"),
    ("loss=", "missing value"),
    ("", "empty"),
])
def test_parse_errors_are_clear_one_liners(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        ImpairSpec.parse(text)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ValueError, match="percentage"):
        ImpairSpec(loss=150)
    with pytest.raises(ValueError, match="dir"):
        ImpairSpec(direction="up")
    with pytest.raises(ValueError, match="seconds"):
        ImpairSpec(delay=-1)
    with pytest.raises(ValueError, match="queue"):
        ImpairSpec(rate=1000, queue=0)
    with pytest.raises(ValueError, match="give a rate too"):
        ImpairSpec(queue=10)


# ----------------------------------------------------------------- loss


def test_loss_rate_is_within_statistical_bounds_and_deterministic() -> None:
    n = 20_000
    imp = Impairment(ImpairSpec(loss=5, seed=1))
    delivered = imp.inbound(numbered(n), now=0.0)
    dropped = n - len(delivered)
    # Binomial(n, 0.05): sd ~ 30.8; 5 sd either side.
    assert abs(dropped - 1000) < 5 * 31
    assert imp.counters["in_dropped"] == dropped
    assert imp.counters["in_packets"] == n
    # The survivors keep their order, and the same seed drops exactly the same packets.
    assert [index_of(p) for p in delivered] == sorted(index_of(p) for p in delivered)
    again = Impairment(ImpairSpec(loss=5, seed=1)).inbound(numbered(n), now=0.0)
    assert [index_of(p) for p in again] == [index_of(p) for p in delivered]
    other = Impairment(ImpairSpec(loss=5, seed=2)).inbound(numbered(n), now=0.0)
    assert [index_of(p) for p in other] != [index_of(p) for p in delivered]


def test_no_impairment_passes_the_same_objects_through() -> None:
    packets = numbered(10)
    imp = Impairment(ImpairSpec(seed=3))
    out = imp.outbound(packets, now=5.0)
    assert all(a is b for a, b in zip(out, packets, strict=True))
    assert imp.next_deadline() is None


# ----------------------------------------------------------------- delay, jitter, reorder


def test_delay_holds_packets_until_now_plus_delay() -> None:
    imp = Impairment(ImpairSpec(delay=0.010))
    first, second = numbered(2)
    assert imp.inbound([first], now=100.0) == []
    assert imp.outbound([second], now=100.002) == []
    assert imp.next_deadline() == pytest.approx(100.010)
    assert imp.due(100.0099) == ([], [])
    assert imp.due(100.010) == ([first], [])
    assert imp.next_deadline() == pytest.approx(100.012)
    assert imp.due(100.011) == ([], [])
    assert imp.due(100.0125) == ([], [second])
    assert imp.next_deadline() is None
    assert imp.counters["in_delayed"] == 1 and imp.counters["out_delayed"] == 1


def test_delay_keeps_fifo_order() -> None:
    imp = Impairment(ImpairSpec(delay=0.05))
    packets = numbered(50)
    for i, p in enumerate(packets):
        imp.inbound([p], now=i * 0.001)
    released, _ = imp.due(10.0)
    assert released == packets


def drive(imp: Impairment, packets: list[bytes], spacing: float,
          step: float = 0.0005) -> list[tuple[float, bytes]]:
    """Send ``packets`` inbound ``spacing`` s apart; return (release time, packet)."""
    out: list[tuple[float, bytes]] = []
    t = 0.0
    pending = list(packets)
    next_send = 0.0
    for _ in range(1_000_000):
        if not pending and imp.next_deadline() is None:
            break
        due_in, _ = imp.due(t)
        out += [(t, p) for p in due_in]
        while pending and next_send <= t:
            out += [(t, p) for p in imp.inbound([pending.pop(0)], now=t)]
            next_send += spacing
        t += step
    return out


def test_jitter_reorders_and_stays_within_bounds() -> None:
    imp = Impairment(ImpairSpec(delay=0.010, jitter=0.004, seed=11))
    packets = numbered(300)
    released = drive(imp, packets, spacing=0.001)
    order = [index_of(p) for _, p in released]
    assert sorted(order) == list(range(300))  # nothing lost or duplicated
    assert order != list(range(300))  # but reordered
    for t, p in released:
        sent = index_of(p) * 0.001
        assert 0.006 - 1e-9 <= t - sent <= 0.014 + 0.001 + 1e-9


def test_reorder_holds_some_packets_back_so_later_ones_overtake() -> None:
    spec = ImpairSpec(reorder=25, reorder_delay=0.005, seed=4)
    imp = Impairment(spec)
    released = drive(imp, numbered(400), spacing=0.001)
    reordered = imp.counters["in_reordered"]
    assert 60 < reordered < 140  # Binomial(400, 0.25): 100 +- 4.3 sd
    assert imp.counters["in_delayed"] == reordered  # only those were held
    order = [index_of(p) for _, p in released]
    assert sorted(order) == list(range(400)) and order != list(range(400))


def test_rate_serialises_packets() -> None:
    imp = Impairment(ImpairSpec(rate=1000))  # bytes per second
    a, b = b"a" * 100, b"b" * 100
    assert imp.outbound([a, b], now=0.0) == []
    assert imp.due(0.0999) == ([], [])
    assert imp.due(0.1) == ([], [a])
    assert imp.due(0.1999) == ([], [])
    assert imp.due(0.2) == ([], [b])
    # An idle link does not bank credit.
    assert imp.outbound([a], now=5.0) == []
    assert imp.next_deadline() == pytest.approx(5.1)


def test_limit_bounds_the_held_packets() -> None:
    imp = Impairment(ImpairSpec(delay=1.0, limit=3))
    assert imp.inbound(numbered(5), now=0.0) == []
    assert imp.held() == 3
    assert imp.counters["in_overflow"] == 2


def releases(imp: Impairment) -> list[tuple[float, bytes]]:
    """Drain everything ``imp`` holds inbound: (exact release time, packet) in order."""
    out: list[tuple[float, bytes]] = []
    while (t := imp.next_deadline()) is not None:
        out += [(t, p) for p in imp.due_inbound(t)]
    return out


def test_rate_and_delay_add_up() -> None:
    """A packet arrives ``delay`` after it has left the bottleneck."""
    imp = Impairment(ImpairSpec(rate=1000, delay=0.010))
    imp.inbound([b"x" * 100, b"y" * 100], now=0.0)
    assert releases(imp) == [(pytest.approx(0.110), b"x" * 100),
                             (pytest.approx(0.210), b"y" * 100)]


def test_queue_tail_drops_when_the_bottleneck_buffer_is_full() -> None:
    imp = Impairment(ImpairSpec(rate=1000, queue=3))  # 10-byte packets: 10 ms each
    assert imp.inbound([b"z" * 10] * 5, now=0.0) == []
    assert imp.counters["in_tail_dropped"] == 2
    assert imp.held() == 3
    # The first packet left at 0.010: room for exactly one more.
    imp.inbound([b"z" * 10, b"z" * 10], now=0.015)
    assert imp.counters["in_tail_dropped"] == 3
    # It queued behind the others: the link is busy until 0.030, so it leaves at 0.040.
    assert [t for t, _ in releases(imp)] == pytest.approx([0.010, 0.020, 0.030, 0.040])
    assert imp.counters["in_overflow"] == 0 and imp.counters["in_dropped"] == 0


def test_queue_counts_only_packets_at_the_bottleneck_not_those_on_the_path() -> None:
    """``queue`` is the bottleneck's buffer; packets already on the (long) path do not
    fill it -- only ``limit`` bounds everything a direction holds."""
    spec = ImpairSpec(rate=1000, queue=2, delay=5.0)
    imp = Impairment(spec)
    for i in range(100):  # one 10-byte packet every 20 ms: each leaves before the next
        imp.inbound([b"p" * 10], now=i * 0.020)
    assert imp.held() == 100 and imp.counters["in_tail_dropped"] == 0
    limited = Impairment(replace(spec, limit=30))
    for i in range(100):
        limited.inbound([b"p" * 10], now=i * 0.020)
    assert limited.held() == 30 and limited.counters["in_overflow"] == 70
    assert limited.counters["in_tail_dropped"] == 0


def test_queue_without_tail_drops_is_no_queue() -> None:
    """A buffer that never fills changes nothing: same releases as an unbounded one."""
    packets = numbered(200)
    bounded = Impairment(ImpairSpec(rate=64_000, queue=200, delay=0.01, loss=10, seed=2))
    unbounded = Impairment(ImpairSpec(rate=64_000, delay=0.01, loss=10, seed=2))
    for imp in (bounded, unbounded):
        imp.inbound(packets, now=0.0)
    assert releases(bounded) == releases(unbounded)
    assert bounded.counters["in_tail_dropped"] == 0


def test_loss_happens_behind_the_bottleneck() -> None:
    """A lost packet has used its time on the link: the survivors leave exactly when
    they would have without any loss."""
    packets = numbered(200)  # 64 bytes each: 64 ms at 1000 bytes/s
    clean = Impairment(ImpairSpec(rate=1000, seed=5))
    lossy = Impairment(ImpairSpec(rate=1000, loss=30, seed=5))
    for imp in (clean, lossy):
        imp.inbound(packets, now=0.0)
    when = {index_of(p): t for t, p in releases(clean)}
    survived = releases(lossy)
    assert 200 - len(survived) == lossy.counters["in_dropped"] > 30
    for t, p in survived:
        assert t == when[index_of(p)]


def test_duplicate_takes_no_link_time_and_has_its_own_jitter() -> None:
    # Without jitter the copy arrives with its original, and the next packet is not
    # pushed back by it.
    imp = Impairment(ImpairSpec(rate=1000, duplicate=100))
    a, b = b"a" * 100, b"b" * 100
    imp.inbound([a, b], now=0.0)
    assert releases(imp) == [(pytest.approx(0.1), a), (pytest.approx(0.1), a),
                             (pytest.approx(0.2), b), (pytest.approx(0.2), b)]
    # With jitter each copy draws its own: it arrives at another time than its
    # original (before or after it), within delay +- jitter of sending.
    imp = Impairment(ImpairSpec(delay=0.010, jitter=0.005, duplicate=100, seed=3))
    imp.inbound(numbered(300), now=0.0)
    arrivals: dict[int, list[float]] = {}
    for t, p in releases(imp):
        arrivals.setdefault(index_of(p), []).append(t)
    assert all(len(times) == 2 for times in arrivals.values())
    assert all(0.005 <= t <= 0.015 for times in arrivals.values() for t in times)
    differ = sum(1 for first, second in arrivals.values() if first != second)
    assert differ == 300


def test_jitter_is_uniform_on_both_sides_of_the_delay() -> None:
    """netem's default: uniform in [delay - jitter, delay + jitter]."""
    n = 4000
    imp = Impairment(ImpairSpec(delay=0.010, jitter=0.004, limit=n, seed=12))
    imp.inbound(numbered(n), now=0.0)
    times = [t for t, _ in releases(imp)]
    assert len(times) == n
    assert 0.006 <= min(times) < 0.0062 and 0.0138 < max(times) <= 0.014
    # U(6 ms, 14 ms): mean 10 ms, sd 2.31 ms; the sample mean's sd is 0.037 ms.
    assert abs(sum(times) / n - 0.010) < 5 * 0.0000366
    below = sum(1 for t in times if t < 0.010)
    assert abs(below - n / 2) < 5 * 32  # Binomial(n, 1/2): sd 31.6


def test_jitter_never_releases_before_the_bottleneck() -> None:
    imp = Impairment(ImpairSpec(rate=1000, delay=0.001, jitter=0.050, seed=1))
    imp.inbound(numbered(50), now=0.0)  # 64-byte packets leave 64 ms apart
    for t, p in releases(imp):
        assert t >= 0.064 * (index_of(p) + 1) - 1e-12


# ----------------------------------------------------------------- duplicate


def test_duplicates_follow_their_original_and_are_separate_objects() -> None:
    n = 10_000
    packets = [bytearray(p) for p in numbered(n)]
    imp = Impairment(ImpairSpec(duplicate=10, seed=5))
    out = imp.inbound(packets, now=0.0)
    dups = imp.counters["in_duplicated"]
    assert abs(dups - 1000) < 5 * 30  # Binomial(n, 0.1): sd 30
    assert len(out) == n + dups
    seen = 0
    for i, p in enumerate(out):
        if i and out[i - 1] == p:
            assert out[i - 1] is not p
            seen += 1
    assert seen == dups


# ----------------------------------------------------------------- corrupt


@pytest.mark.parametrize("make", [tcp_packet, echo_request], ids=["tcp", "icmp"])
def test_corruption_flips_one_bit_that_the_parsers_detect(make: object) -> None:
    assert callable(make)
    imp = Impairment(ImpairSpec(corrupt=100, seed=8))
    for i in range(200):
        original: bytearray = make(i)
        pristine = bytes(original)
        (damaged,) = imp.inbound([original], now=0.0)
        assert original == pristine, "the caller's buffer was modified"
        assert damaged is not original
        assert bit_difference(damaged, pristine) == 1
        with pytest.raises(Malformed):
            ip = parse_ipv4(damaged)
            if ip.proto == PROTO_ICMP:
                parse_icmp(ip.payload)
            else:
                parse_tcp(ip.payload, ip.src, ip.dst)
        ip = parse_ipv4(damaged)  # the flip is in the payload: the IP header is intact
        assert (ip.src, ip.dst) == (CLIENT, STACK)
    assert imp.counters["in_corrupted"] == 200


def test_corruption_percentage() -> None:
    imp = Impairment(ImpairSpec(corrupt=2, seed=6))
    n = 10_000
    out = imp.outbound([tcp_packet(i % 100) for i in range(n)], now=0.0)
    assert len(out) == n
    assert abs(imp.counters["out_corrupted"] - 200) < 5 * 14  # sd 14


def udp_checksum_ok(packet: bytes | bytearray) -> bool:
    ip = parse_ipv4(packet)
    udp = ip.payload
    if struct.unpack_from("!H", udp, 6)[0] == 0:
        return True  # no checksum: nothing can be detected
    return ck.verify(ck.pseudo_header_ipv4(ip.src, ip.dst, PROTO_UDP, len(udp)) + ck.partial(udp))


def test_corruption_completes_a_missing_or_partial_checksum_first() -> None:
    for u in (0.0, 0.3, 0.56, 0.999):
        # UDP without a checksum: one is computed, so the flip is detectable.
        damaged = corrupt_packet(udp_packet(checksum=0), u)
        assert damaged is not None
        assert not udp_checksum_ok(damaged)
        # TCP with only the pseudo-header sum (as checksum offload leaves it).
        pkt = tcp_packet()
        tcp_len = len(pkt) - 20
        pseudo = ck.pseudo_header_ipv4(CLIENT, STACK, 6, tcp_len)
        struct.pack_into("!H", pkt, 20 + 16, pseudo % 0xFFFF)
        with pytest.raises(Malformed):
            parse_tcp(parse_ipv4(pkt).payload, CLIENT, STACK)  # not valid yet: partial
        damaged = corrupt_packet(pkt, u)
        assert damaged is not None
        with pytest.raises(Malformed):
            parse_tcp(parse_ipv4(damaged).payload, CLIENT, STACK)
        # Exactly one bit differs from the completed packet.
        fixed = bytearray(pkt)
        struct.pack_into("!H", fixed, 36, 0)
        struct.pack_into("!H", fixed, 36, ck.finish(pseudo + ck.partial(fixed[20:])))
        parse_tcp(parse_ipv4(fixed).payload, CLIENT, STACK)
        assert bit_difference(damaged, fixed) == 1


def test_corruption_never_zeroes_a_udp_checksum() -> None:
    pkt = udp_packet(checksum=None)
    for k in range(1000):
        damaged = corrupt_packet(pkt, k / 1000)
        assert damaged is not None
        assert not udp_checksum_ok(damaged)


def test_corruption_of_a_bare_ip_header_hits_its_checksum() -> None:
    bare = build_ipv4(CLIENT, STACK, 253, b"")
    damaged = corrupt_packet(bare, 0.5)
    assert damaged is not None and bit_difference(damaged, bare) == 1
    with pytest.raises(Malformed, match="ipv4_bad_checksum"):
        parse_ipv4(damaged)
    assert corrupt_packet(b"\x00" * 10, 0.5) is None  # not an IP packet: left alone


# ----------------------------------------------------------------- independence


def test_same_seed_same_decisions_for_every_impairment() -> None:
    spec = ImpairSpec(loss=10, delay=0.005, jitter=0.003, reorder=10, duplicate=5, corrupt=5,
                      seed=42)
    runs = []
    for _ in range(2):
        imp = Impairment(spec)
        released = drive(imp, [bytes(tcp_packet(i)) for i in range(300)], spacing=0.001)
        runs.append((released, dict(imp.counters)))
    assert runs[0] == runs[1]


def test_directions_have_independent_random_streams() -> None:
    spec = ImpairSpec(loss=30, corrupt=10, seed=9)
    alone = Impairment(spec)
    inbound_alone = alone.inbound(numbered(500), now=0.0)
    mixed = Impairment(spec)
    inbound_mixed: list[bytes | bytearray] = []
    for p in numbered(500):
        mixed.outbound(numbered(3), now=0.0)  # outbound traffic must not shift inbound
        inbound_mixed += mixed.inbound([p], now=0.0)
    assert inbound_mixed == inbound_alone
    # ... and the two directions do not make the same decisions.
    assert Impairment(spec).outbound(numbered(500), now=0.0) != inbound_alone


def test_impairments_do_not_shift_each_others_decisions() -> None:
    lost_alone = Impairment(ImpairSpec(loss=20, seed=3)).inbound(numbered(1000), now=0.0)
    with_more = Impairment(ImpairSpec(loss=20, duplicate=30, reorder=30, seed=3))
    survivors = {index_of(p) for p in with_more.inbound(numbered(1000), 0.0)}
    survivors |= {index_of(p) for p in with_more.due(10.0)[0]}
    assert survivors == {index_of(p) for p in lost_alone}


def lost(spec: ImpairSpec, n: int = 2000, burst: int = 50) -> set[int]:
    """Indices of ``n`` numbered packets that never arrive (inbound), offered in bursts
    of ``burst`` packets 40 ms apart."""
    imp = Impairment(spec)
    got: set[int] = set()
    packets = numbered(n)
    for k in range(0, n, burst):
        now = k / burst * 0.040
        got |= {index_of(p) for p in imp.due_inbound(now)}
        got |= {index_of(p) for p in imp.inbound(packets[k:k + burst], now)}
    got |= {index_of(p) for p in imp.due_inbound(1e9)}
    gone = set(range(n)) - got
    assert len(gone) == imp.counters["in_dropped"] + imp.counters["in_tail_dropped"]
    return gone


def test_more_loss_loses_the_same_packets_and_more() -> None:
    """Seven draws per packet: the k-th packet's loss draw is the same at any loss rate."""
    one, two = lost(ImpairSpec(loss=1, seed=21)), lost(ImpairSpec(loss=2, seed=21))
    assert one < two
    assert abs(len(one) - 20) < 5 * 4.5 and abs(len(two) - 40) < 5 * 6.3  # Binomial(2000, p)


def test_tail_drops_and_other_impairments_do_not_shift_the_loss_draws() -> None:
    """A packet dropped at the full buffer still consumes its draws, and so do the
    duplicate, corruption, reorder and jitter decisions: what a busy path loses is what
    its buffer drops plus exactly what a plain 5 % loss loses with the same seed."""
    busy = ImpairSpec(rate=64_000, queue=20, duplicate=20, corrupt=20, reorder=20,
                      delay=0.005, jitter=0.003, seed=8)  # 64-byte packets: 1 ms each
    tail_dropped = lost(busy)
    # Of each burst of 50 arriving at once, 20 fit in the buffer: 40 x 30 are dropped.
    assert len(tail_dropped) == 1200
    random_loss = lost(ImpairSpec(loss=5, seed=8))
    assert lost(replace(busy, loss=5)) == tail_dropped | random_loss
    # Random losses of packets that passed the buffer after others were tail-dropped.
    assert max(random_loss - tail_dropped) > min(tail_dropped)


@pytest.mark.parametrize(("direction", "impaired", "clean"), [
    ("in", "inbound", "outbound"), ("out", "outbound", "inbound"),
])
def test_direction_selects_what_is_impaired(direction: str, impaired: str, clean: str) -> None:
    imp = Impairment(ImpairSpec(loss=100, direction=direction))
    assert getattr(imp, impaired)(numbered(10), 0.0) == []
    assert getattr(imp, clean)(numbered(10), 0.0) == numbered(10)


# ----------------------------------------------------------------- ImpairedDevice


class FakeDevice:
    """A PacketDevice double: queued reads, recorded writes, an optional refusal."""

    def __init__(self) -> None:
        self.to_read: list[bytes] = []
        self.written: list[bytes] = []
        self.accept: int | None = None
        self.name = "fake0"

    def fileno(self) -> int:
        return -1

    def read_batch(self, max_packets: int = 256, bufsize: int = 65536) -> list[bytes]:
        batch, self.to_read = self.to_read[:max_packets], self.to_read[max_packets:]
        return batch

    def write_batch(self, packets: Iterable[bytes | bytearray]) -> int:
        items = [bytes(p) for p in packets]
        if self.accept is not None:
            items = items[: self.accept]
        self.written += items
        return len(items)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_impaired_device_delays_both_directions() -> None:
    dev, clock = FakeDevice(), FakeClock()
    imp = ImpairedDevice(dev, Impairment(ImpairSpec(delay=0.010)), clock)
    assert isinstance(imp, TimedDevice)
    assert imp.name == "fake0"  # other attributes are the wrapped device's
    a, b, c = numbered(3)
    dev.to_read = [a]
    assert imp.read_batch() == []
    assert imp.write_batch([b]) == 1  # taken, though held
    assert dev.written == []
    assert imp.next_deadline() == pytest.approx(0.010)
    clock.now = 0.005
    assert imp.poll() == []
    clock.now = 0.010
    dev.to_read = [c]
    # Due packets first, then what was just read (held in turn).
    assert imp.read_batch() == [a]
    assert dev.written == [b]  # read_batch also sends what became due
    assert imp.next_deadline() == pytest.approx(0.020)
    clock.now = 0.020
    assert imp.poll() == [c]
    assert imp.next_deadline() is None


def test_impaired_device_counts_what_the_device_refuses() -> None:
    dev, clock = FakeDevice(), FakeClock()
    imp = ImpairedDevice(dev, Impairment(ImpairSpec(duplicate=100)), clock)
    dev.accept = 1
    assert imp.write_batch(numbered(1)) == 1
    assert imp.counters["out_device_refused"] == 1


def test_impaired_device_counts_failed_writes_instead_of_raising() -> None:
    class Broken(FakeDevice):
        def write_batch(self, packets: Iterable[bytes | bytearray]) -> int:
            raise OSError(22, "Invalid argument")

    dev, clock = Broken(), FakeClock()
    imp = ImpairedDevice(dev, Impairment(ImpairSpec(delay=0.01)), clock)
    dev.to_read = numbered(1)
    assert imp.write_batch(numbered(2)) == 2
    clock.now = 0.01
    assert imp.read_batch() == []  # the due outbound write failed; reading still works
    assert imp.counters["out_device_error"] == 1
    clock.now = 0.02
    assert imp.poll() == numbered(1)


def test_impaired_device_refuses_vnet_header_devices() -> None:
    dev = FakeDevice()
    dev.vnet_hdr = True  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="offload"):
        ImpairedDevice(dev, Impairment(ImpairSpec(loss=1)), FakeClock())


# ----------------------------------------------------------------- runtime integration


class PipeDevice:
    """Packets "arrive" when a byte is written to a pipe (so the loop sees a readable fd)."""

    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.queue: list[bytes] = []
        self.written: list[tuple[float, bytes]] = []
        self.clock = FakeClock()  # replaced by the loop's clock in the test

    def deliver(self, packet: bytes | bytearray) -> None:
        self.queue.append(bytes(packet))
        os.write(self.wfd, b"!")

    def fileno(self) -> int:
        return self.rfd

    def read_batch(self, max_packets: int = 256, bufsize: int = 65536) -> list[bytes]:
        try:
            os.read(self.rfd, 4096)
        except BlockingIOError:
            pass
        batch, self.queue = self.queue, []
        return batch

    def write_batch(self, packets: Iterable[bytes | bytearray]) -> int:
        n = 0
        for p in packets:
            self.written.append((asyncio.get_running_loop().time(), bytes(p)))
            n += 1
        return n

    def close(self) -> None:
        os.close(self.rfd)
        os.close(self.wfd)


async def test_runtime_delivers_a_delayed_inbound_packet_after_the_delay() -> None:
    loop = asyncio.get_running_loop()
    pipe = PipeDevice()
    device = ImpairedDevice(pipe, Impairment(ImpairSpec(delay=0.05)), loop.time)
    net = Network(device, stack=Stack(StackConfig()))
    try:
        t0 = loop.time()
        pipe.deliver(echo_request(1))
        await asyncio.sleep(0.02)
        assert net.stack.counters["icmp_echo_replied"] == 0  # still held inbound
        for _ in range(100):
            if pipe.written:
                break
            await asyncio.sleep(0.01)
        assert net.stack.counters["icmp_echo_replied"] == 1
        assert len(pipe.written) == 1
        when, reply = pipe.written[0]
        # 50 ms inbound, then the reply is held 50 ms outbound.
        assert when - t0 >= 0.1 - 0.002
        ip = parse_ipv4(reply)
        assert (ip.src, ip.dst) == (STACK, CLIENT)
        assert parse_icmp(ip.payload).type == ECHO_REPLY
    finally:
        await net.aclose(grace=0.1)
        pipe.close()


# ----------------------------------------------------------------- the CLI flag

_GUARD = """
import sys
import tcpstack.link.tun as tun

def _refuse(name, **kwargs):
    print("GUARD offload=%s" % kwargs.get("offload"), file=sys.stderr, flush=True)
    raise SystemExit(99)

tun.TunDevice.open = _refuse
from tcpstack.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_guarded(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", _GUARD, *args], capture_output=True,
                          text=True, timeout=30, env=env, cwd=str(REPO_ROOT), check=False)


def test_cli_bad_impair_spec_is_one_error_line_and_exit_2() -> None:
    result = run_guarded("serve", "--impair", "bogus=1")
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tcpstack: error: argument --impair:")
    assert "unknown key 'bogus'" in lines[0]


def test_cli_impair_turns_offloads_off() -> None:
    assert "GUARD offload=False" in run_guarded("serve", "--impair", "loss=5").stderr
    assert "GUARD offload=True" in run_guarded("serve").stderr


def test_cli_help_shows_an_example() -> None:
    result = run_guarded("serve", "--help")
    assert "--impair SPEC" in result.stdout
    assert "loss=5,delay=10ms,jitter=2ms,seed=7" in " ".join(result.stdout.split())
