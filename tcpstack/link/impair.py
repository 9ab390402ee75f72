"""A seeded, sans-I/O fault injector for IP packets, and a device wrapper using it.

What it models is a lossy, slow, misbehaving path, in the spirit of smoltcp's
``FaultInjector`` middleware (``src/phy/fault_injector.rs``) and of Linux's
``netem`` queueing discipline (``tc-netem(8)``): a bottleneck link with a
bounded buffer, random loss, a fixed one-way delay with uniform jitter (so
packets may overtake one another), packets held back so that later ones
overtake them (reordering), duplication and single-bit corruption.
It is the project's one link model: ``tcpstack serve --impair``, the
independent relay ``tools/impair_relay.py``, the network simulator
``tests/sim/netsim.py`` and the engine tests' two-endpoint harness
(``Pair`` in ``tests/unit/tcp_helpers.py``) all use it.

Three pieces:

* :class:`ImpairSpec` -- the frozen description, parsed from a one-line
  ``key=value,...`` string such as ``"loss=5,delay=10ms,jitter=2ms,seed=7"``.
* :class:`Impairment` -- the sans-I/O engine. It never reads the clock or
  touches a device: packets go in with ``now``, come out either at once or
  later from :meth:`Impairment.due`, and :meth:`Impairment.next_deadline` says
  when to call it again. Each direction (``in``: towards the stack, ``out``:
  from the stack) has its own :class:`random.Random` seeded from the spec's
  seed and the direction's name, so the two streams of decisions never affect
  each other and the same seed always makes the same decisions.
* :class:`ImpairedDevice` -- wraps a packet device (``fileno``/``read_batch``/
  ``write_batch``, see :class:`tcpstack.aio.devices.PacketDevice`) and adds
  ``next_deadline``/``poll`` for the runtime's single timer
  (:class:`tcpstack.aio.devices.TimedDevice`).

A packet's way through one direction -- a bottleneck link, then a lossy,
slow stretch of path:

1. **Bottleneck** (``rate``, ``queue``). Packets leave the bottleneck one
   after another, a packet of ``n`` bytes ``n / rate`` seconds after the one
   before it left, or after it arrived if the link was idle (an idle link
   banks no credit, like netem's ``rate``). ``queue=N`` is the bottleneck's
   buffer, a FIFO of at most N packets waiting for or being put on the link: a
   packet arriving when it is full is tail-dropped (``tail_dropped``), as by a
   ``pfifo limit N`` in front of a shaper (``tc-pfifo(8)``, ``tc-tbf(8)``).
   Without ``queue`` the buffer is unbounded (``limit`` still applies).
   ``mark=N`` is ECN marking (RFC 3168 5, an AQM's step threshold as fq_codel's
   ``ce_threshold`` or DCTCP's K): a packet arriving when N or more packets wait
   in the buffer has its ECN field set to CE if it is ECN-capable (ECT(0) or
   ECT(1); ``ce_marked``) -- it is queued marked instead of being dropped later.
   Packets that are not ECN-capable pass unmarked (and meet the tail drop).
2. **Loss** (``loss``), after the bottleneck: a lost packet has used its time
   on the link, as one lost on a later hop does; congestion loss is the
   bottleneck's tail drop. (netem drops before its rate stage; the two only
   differ when ``loss`` and ``rate`` are both set.)
3. **Corruption** (``corrupt``): one bit flipped, see :func:`corrupt_packet`.
4. **Duplication** (``duplicate``): a second copy of the (possibly corrupted)
   packet, made behind the bottleneck (it takes no link time) and travelling
   with its own jitter, so it may arrive before the original.
5. **Delay**: the packet arrives ``delay`` plus a uniform jitter in
   ``[-jitter, +jitter]`` after leaving the bottleneck (netem's default uniform
   distribution; never before it left), plus ``reorder_delay`` if it is
   chosen for reordering (both copies of a duplicated packet are).
6. **Limit**: a direction holds at most ``limit`` packets at once (in the
   buffer and on the path, like netem's ``limit``); a packet that would exceed
   it is dropped (``overflow``), after it has used its link time. A safety
   bound more than a model.

Every decision has its own independent probability, as in netem, and exactly
seven random numbers are drawn per packet, in a fixed order, whatever the
outcome -- also for a packet tail-dropped or lost. So the k-th packet offered
to a direction always sees the same seven numbers for a given seed: two runs
differing in one parameter make aligned decisions (at 2 % loss, the same
packets as at 1 % are lost, and more; turning duplication on does not change
which packets are lost). A transport reacting to the difference will of
course offer different packets afterwards.

Packets carrying a virtio-net header (a TUN opened with ``IFF_VNET_HDR``) are
not supported: a 64 KiB TSO super-segment lost or corrupted as one unit is not
what a real path does, and such packets may carry partial checksums. The CLI
therefore turns offloads off when ``--impair`` is given.
"""

from __future__ import annotations

import heapq
import math
import struct
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from itertools import count
from random import Random
from typing import Any, Final, Literal, Protocol, TypeVar

from tcpstack.counters import Counters
from tcpstack.wire import checksum as _ck
from tcpstack.wire.tcp import OutPacket

__all__ = [
    "DIRECTIONS",
    "ImpairSpec",
    "ImpairedDevice",
    "Impairment",
    "mark_ce",
]

Direction = Literal["in", "out"]
DIRECTIONS: Final[tuple[Direction, Direction]] = ("in", "out")
"""``in``: packets travelling towards the stack (device reads); ``out``: from it."""

_P = TypeVar("_P", bound=bytes | bytearray | memoryview)

DEFAULT_LIMIT: Final = 1000
"""Packets one direction may hold at once (netem's default ``limit``); more are dropped."""

MIN_REORDER_DELAY: Final = 0.010
"""The smallest default extra delay of a reordered packet (seconds)."""

_MAX_SECONDS: Final = 3600.0
_MAX_PACKETS: Final = 1_000_000
_DIRECTION_VALUES: Final = ("both", "in", "out")

_IPPROTO_ICMP: Final = 1
_IPPROTO_TCP: Final = 6
_IPPROTO_UDP: Final = 17
_H: Final = struct.Struct("!H")


# ----------------------------------------------------------------- the spec


@dataclass(frozen=True, slots=True)
class ImpairSpec:
    """What to do to packets; all probabilities are percentages (0-100).

    What each one does, and in which order, is described in the module
    docstring: ``rate`` (bytes per second; None: no bottleneck) and ``queue``
    (the bottleneck's FIFO buffer in packets, tail drop; None: unbounded; needs
    a ``rate``) come first, then ``loss``, ``corrupt``, ``duplicate`` (the copy
    has its own jitter), and the release ``delay`` +- ``jitter`` (uniform,
    symmetric as in netem) seconds after leaving the bottleneck, plus
    ``reorder_delay`` for the ``reorder`` percentage of packets. ``mark`` (packets,
    needs a ``rate``) marks ECN-capable packets CE once that many wait in the
    bottleneck's buffer.
    ``reorder_delay`` defaults to ``max(2 * delay, 10 ms)`` (see
    :attr:`effective_reorder_delay`). ``limit`` bounds the packets held per
    direction. ``direction`` is ``"both"``, ``"in"`` (only packets towards the
    stack) or ``"out"``. ``seed`` chooses the random streams.
    """

    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    reorder: float = 0.0
    reorder_delay: float | None = None
    duplicate: float = 0.0
    corrupt: float = 0.0
    rate: float | None = None
    queue: int | None = None
    mark: int | None = None
    limit: int = DEFAULT_LIMIT
    seed: int = 0
    direction: str = "both"

    def __post_init__(self) -> None:
        for name in ("loss", "reorder", "duplicate", "corrupt"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 100.0):
                raise ValueError(f"{name} must be a percentage in 0..100, not {value!r}")
        for name in ("delay", "jitter", "reorder_delay"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0.0 <= value <= _MAX_SECONDS):
                raise ValueError(f"{name} must be 0..{_MAX_SECONDS:g} seconds, not {value!r}")
        if self.rate is not None and not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"rate must be a positive number of bytes/s, not {self.rate!r}")
        if self.queue is not None:
            if not 1 <= self.queue <= _MAX_PACKETS:
                raise ValueError(f"queue must be 1..{_MAX_PACKETS} packets, not {self.queue!r}")
            if self.rate is None:
                raise ValueError("queue is the buffer of the rate bottleneck: give a rate too")
        if self.mark is not None:
            if not 1 <= self.mark <= _MAX_PACKETS:
                raise ValueError(f"mark must be 1..{_MAX_PACKETS} packets, not {self.mark!r}")
            if self.rate is None:
                raise ValueError("mark is a threshold of the rate bottleneck's buffer: "
                                 "give a rate too")
        if not 1 <= self.limit <= _MAX_PACKETS:
            raise ValueError(f"limit must be 1..{_MAX_PACKETS} packets, not {self.limit!r}")
        if self.direction not in _DIRECTION_VALUES:
            raise ValueError(f"dir must be one of both, in, out, not {self.direction!r}")

    # -- derived ----------------------------------------------------------------

    @property
    def effective_reorder_delay(self) -> float:
        """The extra hold time of a reordered packet."""
        if self.reorder_delay is not None:
            return self.reorder_delay
        return max(2.0 * self.delay, MIN_REORDER_DELAY)

    def applies_to(self, direction: Direction) -> bool:
        """Whether packets travelling in ``direction`` are impaired at all."""
        return self.direction in ("both", direction) and not self.is_noop

    @property
    def is_noop(self) -> bool:
        """True when no packet would ever be changed, dropped or held."""
        return (self.loss == 0 and self.delay == 0 and self.jitter == 0 and self.reorder == 0
                and self.duplicate == 0 and self.corrupt == 0 and self.rate is None)

    # -- text form --------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> ImpairSpec:
        """Parse ``"loss=5,delay=10ms,jitter=2ms,reorder=10,duplicate=2,corrupt=1,seed=7"``.

        Keys: ``loss``, ``reorder``, ``duplicate`` (or ``dup``), ``corrupt`` as
        percentages (``5`` or ``5%``); ``delay``, ``jitter``, ``reorder_delay`` as
        times with a unit (``us``, ``ms`` or ``s``; a bare ``0`` is allowed);
        ``rate`` in bytes/s, or with a tc-style unit (``kbit``, ``mbit``,
        ``gbit``, ``bit`` are bits/s; ``bps``, ``kbps``, ``mbps``, ``gbps``
        bytes/s); ``queue`` (the bottleneck's buffer, packets; needs ``rate``),
        ``mark`` (ECN: CE on ECN-capable packets once that many are queued; needs
        ``rate``),
        ``limit`` (packets held per direction), ``seed`` (integer),
        ``dir`` (or ``direction``: ``both``, ``in``, ``out``). Raises
        :class:`ValueError` with a one-line message for anything wrong.
        """
        if not text.strip():
            raise ValueError("empty impairment spec (example: loss=5,delay=10ms,seed=1)")
        values: dict[str, Any] = {}
        for item in text.split(","):
            item = item.strip()
            key, eq, raw = item.partition("=")
            key, raw = key.strip().lower(), raw.strip()
            if not eq or not key:
                raise ValueError(f"expected key=value, got {item!r}")
            name = _ALIASES.get(key)
            if name is None:
                raise ValueError(
                    f"unknown key {key!r} (known: {', '.join(sorted(_PARSERS))})")
            if name in values:
                raise ValueError(f"{key!r} given twice")
            if not raw:
                raise ValueError(f"{key}: missing value")
            values[name] = _PARSERS[_CANONICAL_KEY[name]](key, raw)
        return cls(**values)

    def __str__(self) -> str:
        """The canonical text form (only non-default settings); :meth:`parse` reads it."""
        parts: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            key = _CANONICAL_KEY[f.name]
            if f.name in ("loss", "reorder", "duplicate", "corrupt"):
                parts.append(f"{key}={value:g}%")
            elif f.name in ("delay", "jitter", "reorder_delay"):
                parts.append(f"{key}={_format_seconds(value)}")
            elif f.name == "rate":
                parts.append(f"{key}={value:g}bps")
            else:
                parts.append(f"{key}={value}")
        return ",".join(parts) or "none"


def _parse_percent(key: str, raw: str) -> float:
    text = raw[:-1] if raw.endswith("%") else raw
    value = _float(key, text, raw)
    if not 0.0 <= value <= 100.0:
        raise ValueError(f"{key}: {raw!r} is not a percentage in 0..100")
    return value


_TIME_UNITS: Final = (("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0))


def _parse_seconds(key: str, raw: str) -> float:
    text = raw.lower()
    for suffix, scale in _TIME_UNITS:
        if text.endswith(suffix):
            value = _float(key, text[: -len(suffix)], raw) * scale
            break
    else:
        value = _float(key, text, raw)
        if value != 0:
            raise ValueError(f"{key}: {raw!r} needs a unit: us, ms or s (e.g. {raw}ms)")
    if not 0.0 <= value <= _MAX_SECONDS:
        raise ValueError(f"{key}: {raw!r} out of range 0..{_MAX_SECONDS:g}s")
    return value


# tc(8) conventions: "bit" units are bits per second, "bps" units bytes per second.
_RATE_UNITS: Final = (
    ("gbit", 1e9 / 8), ("mbit", 1e6 / 8), ("kbit", 1e3 / 8), ("bit", 1 / 8),
    ("gbps", 1e9), ("mbps", 1e6), ("kbps", 1e3), ("bps", 1.0),
)


def _parse_rate(key: str, raw: str) -> float:
    text = raw.lower()
    scale = 1.0
    for suffix, factor in _RATE_UNITS:
        if text.endswith(suffix):
            text, scale = text[: -len(suffix)], factor
            break
    value = _float(key, text, raw) * scale
    if not value > 0:
        raise ValueError(f"{key}: {raw!r} must be a positive rate")
    return value


def _parse_packets(key: str, raw: str) -> int:
    try:
        value = int(raw, 10)
    except ValueError:
        raise ValueError(f"{key}: {raw!r} is not an integer") from None
    if not 1 <= value <= _MAX_PACKETS:
        raise ValueError(f"{key}: {raw!r} out of range 1..{_MAX_PACKETS}")
    return value


def _parse_seed(key: str, raw: str) -> int:
    try:
        return int(raw, 10)
    except ValueError:
        raise ValueError(f"{key}: {raw!r} is not an integer") from None


def _parse_direction(key: str, raw: str) -> str:
    value = raw.lower()
    if value not in _DIRECTION_VALUES:
        raise ValueError(f"{key}: {raw!r} is not one of both, in, out")
    return value


def _float(key: str, text: str, raw: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{key}: {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{key}: {raw!r} is not a finite number")
    return value


def _format_seconds(value: float) -> str:
    if value == 0:
        return "0"
    if value < 1e-3:
        return f"{value * 1e6:g}us"
    if value < 1.0:
        return f"{value * 1e3:g}ms"
    return f"{value:g}s"


# text key -> parser; field name <-> canonical text key; accepted aliases.
_PARSERS: Final[dict[str, Callable[[str, str], Any]]] = {
    "loss": _parse_percent,
    "delay": _parse_seconds,
    "jitter": _parse_seconds,
    "reorder": _parse_percent,
    "reorder_delay": _parse_seconds,
    "duplicate": _parse_percent,
    "corrupt": _parse_percent,
    "rate": _parse_rate,
    "queue": _parse_packets,
    "mark": _parse_packets,
    "limit": _parse_packets,
    "seed": _parse_seed,
    "dir": _parse_direction,
}
_CANONICAL_KEY: Final = {name: name for name in _PARSERS} | {"direction": "dir"}
_ALIASES: Final = {name: name for name in _PARSERS if name != "dir"} | {
    "dir": "direction",
    "direction": "direction",
    "dup": "duplicate",
    "reorder-delay": "reorder_delay",
    "ce_threshold": "mark",
}


# ----------------------------------------------------------------- corruption


def _complete_checksum(buf: bytearray) -> None:
    """Make the transport checksum of an IPv4 packet in ``buf`` complete and valid.

    A packet may carry a partial checksum (only the pseudo-header sum, as with
    checksum offload) or none at all (UDP's optional zero, RFC 768). Either
    way a flipped bit would go unnoticed, so such a checksum is (re)computed
    here -- RFC 9293 3.1 (TCP, over the pseudo-header), RFC 768 (UDP, zero sent
    as all ones), RFC 792 (ICMP, over the message) -- before the corruption.
    Fragments and other protocols are left alone.
    """
    ihl = (buf[0] & 0x0F) * 4
    total = _H.unpack_from(buf, 2)[0]
    frag = _H.unpack_from(buf, 6)[0]
    proto = buf[9]
    if frag & 0x3FFF or total > len(buf) or total <= ihl:
        return
    seg = memoryview(buf)[ihl:total]
    length = len(seg)
    src = int.from_bytes(buf[12:16], "big")
    dst = int.from_bytes(buf[16:20], "big")
    if proto == _IPPROTO_TCP and length >= 20:
        field, pseudo = 16, _ck.pseudo_header_ipv4(src, dst, proto, length)
    elif proto == _IPPROTO_UDP and length >= 8:
        field, pseudo = 6, _ck.pseudo_header_ipv4(src, dst, proto, length)
    elif proto == _IPPROTO_ICMP and length >= 8:
        field, pseudo = 2, 0
    else:
        return
    present = _H.unpack_from(seg, field)[0]
    if (present != 0 or proto != _IPPROTO_UDP) and _ck.verify(pseudo + _ck.partial(seg)):
        return  # already complete
    _H.pack_into(seg, field, 0)
    value = _ck.finish(pseudo + _ck.partial(seg))
    if proto == _IPPROTO_UDP and value == 0:
        value = 0xFFFF  # RFC 768: a computed zero is transmitted as all ones
    _H.pack_into(seg, field, value)


def mark_ce(packet: bytes | bytearray | memoryview) -> bytes | None:
    """A copy of ``packet`` with its ECN field set to CE (RFC 3168 5, what a congested
    router does to an ECN-capable packet), the IPv4 header checksum updated; None if
    it is not ECN-capable (Not-ECT, already CE, or not IPv4/IPv6)."""
    if len(packet) < 20:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if packet[1] & 3 not in (1, 2) or ihl < 20 or ihl > len(packet):
            return None
        buf = bytearray(packet)
        buf[1] |= 3
        buf[10:12] = b"\0\0"
        _H.pack_into(buf, 10, _ck.checksum(buf[:ihl]))
        return bytes(buf)
    if version == 6 and len(packet) >= 40 and (packet[1] >> 4) & 3 in (1, 2):
        buf = bytearray(packet)
        buf[1] |= 0x30  # the traffic class's low two bits
        return bytes(buf)
    return None


def corrupt_packet(packet: bytes | bytearray | memoryview, u: float) -> bytes | None:
    """A copy of ``packet`` with one bit flipped, chosen by ``u`` in [0, 1); None if unsuited.

    For IPv4 the transport checksum is first completed (:func:`_complete_checksum`)
    and the bit is flipped in the IP payload, so the receiver's checksum check
    (a single-bit error always changes the one's-complement sum, RFC 1071)
    detects it; UDP's checksum field itself is spared so it can never become
    the "no checksum" zero. An IPv4 packet without payload gets the flip in its
    header checksum. IPv6 packets get a flip in the payload (TCP, UDP and ICMPv6
    checksums are mandatory there). Anything else is not corrupted. The caller's
    buffer is never modified.
    """
    buf = bytearray(packet)
    if len(buf) < 20:
        return None
    version = buf[0] >> 4
    if version == 4:
        ihl = (buf[0] & 0x0F) * 4
        total = min(_H.unpack_from(buf, 2)[0], len(buf))
        if ihl < 20 or ihl > len(buf):
            return None
        _complete_checksum(buf)
        start, end = ihl, total
        skip: tuple[int, int] | None = None
        if buf[9] == _IPPROTO_UDP and end - start >= 8:
            skip = (start + 6, start + 8)
        if end <= start:
            start, end, skip = 10, 12, None  # the IPv4 header checksum field
    elif version == 6:
        start, end, skip = 40, len(buf), None
        if end <= start:
            return None
    else:
        return None
    nbytes = end - start - (2 if skip else 0)
    bit = min(int(u * nbytes * 8), nbytes * 8 - 1)
    index = start + bit // 8
    if skip is not None and index >= skip[0]:
        index += skip[1] - skip[0]
    buf[index] ^= 1 << (bit % 8)
    return bytes(buf)


# ----------------------------------------------------------------- the engine


class _Channel:
    """One direction's state: its random stream, bottleneck and held packets."""

    __slots__ = ("buffered", "enabled", "heap", "link_free", "prefix", "rng", "seq")

    def __init__(self, spec: ImpairSpec, direction: Direction) -> None:
        self.enabled = spec.applies_to(direction)
        # A string seed is hashed with SHA-512 by random.Random (version 2), so the
        # stream is the same in every process, independent of PYTHONHASHSEED.
        self.rng = Random(f"tcpstack-impair:{spec.seed}:{direction}")
        self.heap: list[tuple[float, int, bytes]] = []
        self.seq = count()
        # When the bottleneck finishes the last packet given to it, and (only with a
        # ``queue``) when each packet in its buffer leaves it: a FIFO, non-decreasing.
        self.link_free = -math.inf
        self.buffered: deque[float] = deque()
        self.prefix = direction + "_"

    def due(self, now: float) -> list[bytes]:
        heap = self.heap
        out: list[bytes] = []
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        return out


class Impairment:
    """The sans-I/O fault injector: packets and ``now`` in, surviving packets out.

    :meth:`inbound` and :meth:`outbound` return the packets to deliver right
    away (unchanged objects when untouched; corrupted ones are fresh copies)
    and hold the others; :meth:`due` releases held packets whose time has
    come, in release order (packets due at the same time in the order they
    were given). Call :meth:`due` before handing over new packets so that held
    packets already due are not overtaken. :attr:`counters` counts, per
    direction (``in_``/``out_`` prefix): ``packets`` seen, ``tail_dropped`` (the
    bottleneck's buffer was full), ``ce_marked`` (ECN-capable packets marked CE
    above the ``mark`` threshold), ``dropped`` (random loss), ``corrupted``,
    ``duplicated``, ``reordered``, ``delayed`` (copies held past ``now``) and
    ``overflow`` (copies dropped because ``limit`` packets were held).
    """

    def __init__(self, spec: ImpairSpec) -> None:
        self.spec = spec
        self.counters: Counter[str] = Counters()
        self._channels = {d: _Channel(spec, d) for d in DIRECTIONS}
        self._reorder_delay = spec.effective_reorder_delay

    def inbound(self, packets: Iterable[_P], now: float) -> list[_P | bytes]:
        """Impair packets travelling towards the stack; return those delivered now."""
        return self._apply(self._channels["in"], packets, now)

    def outbound(self, packets: Iterable[_P], now: float) -> list[_P | bytes]:
        """Impair packets the stack sends; return those delivered now."""
        return self._apply(self._channels["out"], packets, now)

    def due_inbound(self, now: float) -> list[bytes]:
        """Held inbound packets due at ``now``, in release order."""
        return self._channels["in"].due(now)

    def due_outbound(self, now: float) -> list[bytes]:
        """Held outbound packets due at ``now``, in release order."""
        return self._channels["out"].due(now)

    def due(self, now: float) -> tuple[list[bytes], list[bytes]]:
        """``(inbound, outbound)`` held packets whose release time is at or before ``now``."""
        return self.due_inbound(now), self.due_outbound(now)

    def next_deadline(self) -> float | None:
        """The earliest release time of a held packet, or None if nothing is held."""
        times = [ch.heap[0][0] for ch in self._channels.values() if ch.heap]
        return min(times) if times else None

    def held(self) -> int:
        """How many packets are held (both directions)."""
        return sum(len(ch.heap) for ch in self._channels.values())

    # -- the decisions ------------------------------------------------------------

    def _apply(self, ch: _Channel, packets: Iterable[_P], now: float) -> list[_P | bytes]:
        if not ch.enabled:
            return list(packets)
        spec = self.spec
        counters = self.counters
        p = ch.prefix
        loss, dup, corrupt, reorder = (spec.loss / 100.0, spec.duplicate / 100.0,
                                       spec.corrupt / 100.0, spec.reorder / 100.0)
        rate, queue, delay, jitter = spec.rate, spec.queue, spec.delay, spec.jitter
        mark = spec.mark
        tracked = queue is not None or mark is not None  # the buffer's occupancy
        buffered = ch.buffered
        rand = ch.rng.random
        out: list[_P | bytes] = []
        for packet in packets:
            counters[p + "packets"] += 1
            # Seven draws per packet, always, in this order: see the module docstring.
            u_loss, u_dup, u_corrupt, u_bit, u_reorder, u_jitter, u_dup_jitter = (
                rand(), rand(), rand(), rand(), rand(), rand(), rand())
            # 1. The bottleneck and its buffer.
            pkt: _P | bytes = packet
            departure = now
            if rate is not None:
                if tracked:
                    # Packets that have left the link no longer occupy its buffer.
                    while buffered and buffered[0] <= now:
                        buffered.popleft()
                    if queue is not None and len(buffered) >= queue:
                        counters[p + "tail_dropped"] += 1
                        continue
                    if mark is not None and len(buffered) >= mark:
                        marked = mark_ce(packet)
                        if marked is not None:
                            counters[p + "ce_marked"] += 1
                            pkt = marked
                departure = max(now, ch.link_free) + len(packet) / rate
                ch.link_free = departure
                if tracked:
                    buffered.append(departure)
            # 2. Loss on the path behind the bottleneck.
            if u_loss < loss:
                counters[p + "dropped"] += 1
                continue
            # 3. Corruption.
            if u_corrupt < corrupt:
                damaged = corrupt_packet(pkt, u_bit)
                if damaged is not None:
                    counters[p + "corrupted"] += 1
                    pkt = damaged
            # 5. The release time (4., the copy, gets its own below).
            extra = 0.0
            if u_reorder < reorder:
                counters[p + "reordered"] += 1
                extra = self._reorder_delay
            release = max(departure + delay + (2.0 * u_jitter - 1.0) * jitter,
                          departure) + extra
            self._release(ch, pkt, release, now, out)
            if u_dup < dup:
                counters[p + "duplicated"] += 1
                # An independent copy, so nobody sees one object twice.
                release = max(departure + delay + (2.0 * u_dup_jitter - 1.0) * jitter,
                              departure) + extra
                self._release(ch, bytes(pkt), release, now, out)
        return out

    def _release(self, ch: _Channel, pkt: _P | bytes, release: float, now: float,
                 out: list[_P | bytes]) -> None:
        """Deliver ``pkt`` now (into ``out``) or hold it until ``release`` (6., the limit)."""
        if release <= now:
            out.append(pkt)
            return
        if len(ch.heap) >= self.spec.limit:
            self.counters[ch.prefix + "overflow"] += 1
            return
        self.counters[ch.prefix + "delayed"] += 1
        # Keep a private copy: the caller may reuse its buffer.
        held = pkt if isinstance(pkt, bytes) else bytes(pkt)
        heapq.heappush(ch.heap, (release, next(ch.seq), held))


# ----------------------------------------------------------------- the device


class _Device(Protocol):
    def fileno(self) -> int: ...

    def read_batch(self, max_packets: int = ..., bufsize: int = ...) -> list[bytes]: ...

    def write_batch(self, packets: Iterable[bytes | bytearray]) -> int: ...


class ImpairedDevice:
    """A packet device whose traffic passes through an :class:`Impairment`.

    ``read_batch`` returns the inbound packets due now (held ones first, then
    what was just read and survived); ``write_batch`` impairs outbound packets
    and writes those due now, reporting every packet as taken (losing them is
    the point). :meth:`poll` writes held outbound packets that became due and
    returns held inbound ones for the stack; :meth:`next_deadline` says when to
    poll next -- :class:`tcpstack.aio.runtime.StackRuntime` does both with its
    single timer. ``clock`` gives the time (the event loop's ``time``).

    Other attributes (``name``, ``mtu``, ``created`` ...) are the wrapped
    device's. A device that frames packets with a virtio-net header
    (``vnet_hdr``) is refused: open it without offloads.
    """

    def __init__(self, device: _Device, impairment: Impairment,
                 clock: Callable[[], float]) -> None:
        if getattr(device, "vnet_hdr", False):
            raise ValueError("cannot impair a device with virtio-net headers; "
                             "open it without offloads")
        self.device = device
        self.impairment = impairment
        self.clock = clock

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found on the wrapper itself.
        if name == "device":
            raise AttributeError(name)
        return getattr(self.device, name)

    @property
    def counters(self) -> Counter[str]:
        """The impairment's counters, plus ``out_device_refused`` (packets the device
        did not take) and ``out_device_error`` (writes that failed)."""
        return self.impairment.counters

    def fileno(self) -> int:
        return self.device.fileno()

    def read_batch(self, max_packets: int = 256, bufsize: int = 65536) -> list[bytes]:
        """Packets for the stack now: held ones now due, then newly read survivors."""
        now = self.clock()
        imp = self.impairment
        self._write(imp.due_outbound(now))
        packets = imp.due_inbound(now)
        packets += imp.inbound(self.device.read_batch(max_packets, bufsize), now)
        return packets

    def write_batch(self, packets: Iterable[OutPacket]) -> int:
        """Impair and write; returns the number of packets given (all are "taken").

        Gathered ``(headers, payload)`` packets are joined first: the impairment
        works on whole packets.
        """
        batch = [b"".join(p) if isinstance(p, tuple) else p for p in packets]
        now = self.clock()
        imp = self.impairment
        self._write(imp.due_outbound(now))
        self._write(imp.outbound(batch, now))
        return len(batch)

    def next_deadline(self) -> float | None:
        """When a held packet becomes due, or None."""
        return self.impairment.next_deadline()

    def poll(self) -> list[bytes]:
        """Write held outbound packets now due; return held inbound packets now due."""
        inbound, outbound = self.impairment.due(self.clock())
        self._write(outbound)
        return inbound

    def _write(self, packets: list[bytes | bytearray] | list[bytes]) -> None:
        if not packets:
            return
        try:
            written = self.device.write_batch(packets)
        except OSError:
            # Like a full queue, a rejected write loses the rest of the batch; a
            # dead device shows up on the next read.
            self.impairment.counters["out_device_error"] += 1
            return
        if written < len(packets):
            # The kernel's queue was full: a real drop, distinct from the impairment's.
            self.impairment.counters["out_device_refused"] += len(packets) - written
