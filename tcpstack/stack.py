"""The sans-I/O network stack: IP packets in, IP packets out, one deadline.

:class:`Stack` validates each received packet (dropping and counting malformed
ones by reason), answers ICMP echo, demultiplexes TCP segments to connections by
their 4-tuple with a fallback to listeners, and answers segments for closed ports
with RST (RFC 9293 3.10.7.1). It is dual-stack: IPv4 and IPv6 packets arrive on
the same device, their addresses are integers of either family (IPv6 ones lie
above ``0xFFFFFFFF``, :mod:`tcpstack.wire.ipv6`), and the same engine serves
both -- what differs (headers, ICMP, the MSS, the path-MTU floor) stays here and
in :mod:`tcpstack.wire`. It keeps one timer heap for all connections and
exposes a single :meth:`Stack.next_deadline`, so the event loop needs one timer.
It holds the TCP-MD5 keys (RFC 2385, :mod:`tcpstack.tcp.md5keys`) and TCP-AO's
master key tuples (RFC 5925, :mod:`tcpstack.tcp.aokeys`): it checks the signatures
of what arrives before anything else looks at a segment, and signs what leaves.

Usage by an I/O shell, per wake-up::

    for pkt in device_packets:
        stack.receive(pkt, now)
    stack.handle_timer(now)            # if the deadline passed
    for tcb in stack.take_notified():  # connections with events
        ... tcb.take_events() ...
    device.write_batch(stack.packets_to_send(now))

Application calls on a TCB (send, recv, close) mark it dirty; the next
:meth:`packets_to_send` transmits what they caused.

Nothing here performs I/O or reads the clock.
"""

from __future__ import annotations

import dataclasses
import heapq
import ipaddress
import logging
import random
import secrets
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import count
from typing import Protocol

from tcpstack.counters import Counters
from tcpstack.fragments import MAX_DATAGRAM_IPV6, Reassembler
from tcpstack.tcp.aokeys import AoConn, AoKeys, Mkt
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.isn import IsnGenerator
from tcpstack.tcp.limits import Commons, MemoryPool, ReplyBudget, TokenBucket
from tcpstack.tcp.listener import Listener
from tcpstack.tcp.md5keys import Md5Keys
from tcpstack.tcp.passive import CookieMode, PassiveOpener
from tcpstack.tcp.seq import seq_add, seq_gt
from tcpstack.tcp.state import State
from tcpstack.tcp.syncookies import SynCookies
from tcpstack.tcp.tcb import Tcb
from tcpstack.tcp.tfocookies import FastOpen, FastOpenCache, FastOpenKeys
from tcpstack.wire import icmp as icmp_wire
from tcpstack.wire import icmpv6 as icmp6_wire
from tcpstack.wire import ipv6 as ipv6_wire
from tcpstack.wire import md5sig, tcpao, virtio
from tcpstack.wire.errors import BytesLike, Malformed
from tcpstack.wire.ipv4 import (
    FLAG_MF,
    FRAG_OFFSET_MASK,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    build_ipv4,
    fragment_field,
    parse_ipv4,
)
from tcpstack.wire.syn import SYN_FLAG, read_plain_syn, write_syn_ack
from tcpstack.wire.tcp import (
    ACK,
    FIN,
    MD5_ONLY,
    NO_OPTIONS,
    RST,
    SYN,
    OutPacket,
    OutSegment,
    TcpSegment,
    emit_tcp,
    emit_tcp_parts,
    parse_tcp,
)
from tcpstack.wire.triage import flow_key, is_bare_syn

log = logging.getLogger("tcpstack.stack")

Key = tuple[int, int, int, int]  # (local ip, local port, remote ip, remote port)

SYN_DEFERRED_BATCHES = 4
"""SYNs that open connections (and cookie ACKs) beyond a batch's budget set aside for later
rounds, in budgets: a burst of up to this many budgets' worth is answered a few
milliseconds late instead of dropped (which costs a legitimate client a 1 s SYN
retransmission). SYNs answered with a cookie are not budgeted (they start nothing)."""

_TIMER_HEAP_SLACK = 64
"""Stale timer entries tolerated beyond one per connection before the heap is rebuilt."""

EPHEMERAL_PORTS = range(32768, 61000)  # Linux's default ip_local_port_range

IPV4_TCP_HEADERS = 40  # IPv4 and TCP headers without options: path MTU - this = MSS
IPV6_TCP_HEADERS = 60  # the same over IPv6 (RFC 8200 8.3: the MSS is the MTU - 60)
PMTU_CACHE_SIZE = 4096  # destinations whose lowered path MTU is remembered

#: RFC 1191 7: the MTU plateaus, for "fragmentation needed" from routers that do
#: not report the next hop's MTU (the field is 0): the next plateau below the
#: length of the packet that did not fit.
MTU_PLATEAUS = (32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68)


@dataclass(frozen=True, slots=True)
class StackConfig:
    """Stack-wide settings: our own addresses (IPv4, IPv6 or both) and the TCP tunables.

    ``tcp.mss`` is the IPv4 MSS (the MTU - 40); IPv6 connections advertise 20
    bytes less (RFC 8200 8.3).
    """

    addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = (
        ipaddress.IPv4Address("10.0.0.2"),)
    tcp: TcpConfig = field(default_factory=TcpConfig)
    ttl: int = 64
    answer_ping: bool = True
    #: Packets in and out carry a virtio-net header (TUN opened with IFF_VNET_HDR);
    #: TCP checksums are then left to the kernel.
    vnet_hdr: bool = False
    #: Large TCP payloads leave as ``(headers, payload)`` for a gathering write instead
    #: of being copied into one buffer (the device must accept such tuples).
    scatter: bool = False
    #: RSTs for segments that have no connection, per second (burst: a tenth of it).
    rst_rate_limit: int = 1000
    #: ICMP errors (unreachables) per second (burst: 50), as Linux's icmp_msgs_per_sec.
    icmp_rate_limit: int = 1000
    #: SYN cookies (RFC 4987): "auto" when a listener's SYN queue is full, "always",
    #: or "off" (then SYNs beyond the queue are dropped).
    syncookies: str = "auto"
    #: New connections a batch of received packets may start (SYNs queued, cookies
    #: accepted): the stack spends the rest of each batch on the connections it has.
    #: Those beyond it wait, up to ``SYN_DEFERRED_BATCHES`` times as many, for the
    #: next rounds of the event loop (:meth:`Stack.next_deadline` asks for one at
    #: once); beyond that, dropped. A SYN answered with a cookie starts nothing and is
    #: not counted: a flood's SYNs are answered as they are read, a read being
    #: bounded (the runtime's batch) as is the work it brings.
    syn_batch_limit: int = 64
    #: Connections (not counting TIME-WAIT) beyond which SYNs are dropped.
    max_connections: int = 100_000
    #: Connections in TIME-WAIT beyond which the oldest is ended early (as Linux's
    #: tcp_max_tw_buckets).
    max_time_wait: int = 32_768
    #: Bytes all connections together may hold in their buffers (like Linux's
    #: tcp_mem): beyond it windows stop growing, out-of-order data is not queued and
    #: new connections are refused, until applications read and peers acknowledge.
    max_buffered: int = 512 * 1024 * 1024
    #: The smallest path MTU believed from a "fragmentation needed" message: smaller
    #: (forged) values are raised to it and counted. RFC 1191's 552 bytes, Linux's
    #: min_pmtu; PLPMTUD never goes below it either.
    min_pmtu: int = 552
    #: Reassemble IPv4 fragments (RFC 791 3.2) within the bounds below; off, every
    #: fragment is dropped and counted as ``ipv4_fragment``.
    reassembly: bool = True
    #: Bytes all partial datagrams may hold (one source: a quarter of it), as
    #: Linux's ipfrag_high_thresh (4 MiB).
    frag_memory: int = 4 * 1024 * 1024
    #: Seconds a datagram has to be completed from its first fragment (RFC 791's
    #: reassembly timer; Linux's ipfrag_time).
    frag_timeout: float = 30.0
    #: TCP-MD5 keys (RFC 2385): (peer address or prefix, key) pairs; segments to
    #: and from those peers are signed and checked (see :meth:`Stack.set_md5_key`).
    md5_keys: tuple[tuple[str, bytes | str], ...] = field(default=(), repr=False)
    #: TCP-AO master key tuples (RFC 5925; see :meth:`Stack.add_ao_key`). A peer with
    #: MKTs uses TCP-AO, whatever TCP-MD5 key it may also have.
    ao_keys: tuple[Mkt, ...] = field(default=(), repr=False)
    #: TCP Fast Open server keys (RFC 7413 4.1.2; 16 bytes each): the primary makes
    #: cookies, a second one (the backup) is accepted too. None given: a random
    #: primary. Listeners take Fast Open only if they ask (``Stack.listen(fastopen=)``).
    tfo_keys: tuple[bytes, ...] = field(default=(), repr=False)
    #: Seconds between Fast Open key rotations: each period's key is derived from the
    #: primary (so worker processes agree), a cookie staying valid for one or two
    #: periods; 0: never (as Linux).
    tfo_key_rotation: float = 0.0

    def __post_init__(self) -> None:
        if not self.addresses:
            raise ValueError("the stack needs at least one address")
        if self.rst_rate_limit < 1 or self.icmp_rate_limit < 1:
            raise ValueError("RST and ICMP rate limits must be at least 1 per second")
        if self.syncookies not in {m.value for m in CookieMode}:
            raise ValueError(f"syncookies must be auto, always or off, not {self.syncookies!r}")
        if self.syn_batch_limit < 1 or self.max_connections < 1 or self.max_time_wait < 1:
            raise ValueError("connection limits must be at least 1")
        if self.max_buffered < 64 * 1024:
            raise ValueError("max_buffered must be at least 64 KiB")
        for a in self.addresses:
            if isinstance(a, ipaddress.IPv6Address):
                if ipv6_wire.is_bad_address(int(a)):
                    raise ValueError(f"{a} cannot be the stack's address (unspecified, "
                                     "loopback, IPv4-compatible or -mapped, multicast "
                                     "or link-local)")
            elif a.is_multicast or a.is_unspecified or a == ipaddress.IPv4Address(0xFFFFFFFF):
                raise ValueError(f"{a} cannot be a host address")
        if not 256 * 1024 <= self.frag_memory <= 1 << 30:
            raise ValueError(f"fragment memory {self.frag_memory} out of range 256 KiB..1 GiB")
        if not 1 <= self.frag_timeout <= 120:
            raise ValueError("frag_timeout must be within 1..120 seconds")
        if not 128 <= self.min_pmtu <= 65535:
            raise ValueError(f"minimum path MTU {self.min_pmtu} out of range 128..65535")
        if not 1 <= self.ttl <= 255:
            raise ValueError(f"TTL {self.ttl} out of range 1..255")
        Md5Keys(self.md5_keys)  # raises ValueError on a bad peer or key
        AoKeys(self.ao_keys)  # raises ValueError on clashing IDs
        FastOpenKeys(self.tfo_keys, self.tfo_key_rotation)  # ValueError on bad keys


class Observer(Protocol):
    """What may watch a stack (see :meth:`Stack.attach_observer`); it must not change
    anything, only look. ``key`` is (local ip, local port, remote ip, remote port)."""

    def before_segment(self, key: Key, seg: TcpSegment, now: float) -> object:
        """A parsed TCP segment is about to be processed; the result goes to
        :meth:`after_segment`."""

    def after_segment(self, key: Key, seg: TcpSegment, token: object, now: float) -> None:
        """The segment was processed (its connection, if any, is in ``Stack.tcbs``)."""

    def on_send(self, tcb: Tcb, segments: list[OutSegment], now: float) -> None:
        """``tcb`` emits ``segments`` (packets are built right after)."""

    def on_control(self, packets: list[OutPacket], now: float) -> None:
        """Packets the stack sends for no connection: RSTs, stateless SYN,ACKs, ICMP."""

    def on_open(self, key: Key, tcb: Tcb) -> None:
        """A connection entered the table."""

    def on_close(self, key: Key, tcb: Tcb) -> None:
        """A connection left the table (its ``events`` still hold a Terminated)."""


def _is_bad_source(src: int) -> bool:
    """RFC 1122 3.2.1.3 / 4.2.3.10: never answer broadcast, multicast or 0.0.0.0 sources."""
    return src == 0 or src == 0xFFFFFFFF or (src >> 28) == 0xE or (src >> 24) == 0x7F


def _address(value: int | str) -> int:
    """An address as the stack holds it (an integer, IPv6 above 2**32); an IPv4-mapped
    IPv6 address means its IPv4 address, as on a dual-stack socket."""
    if isinstance(value, int):
        return value
    a = ipaddress.ip_address(value)
    if isinstance(a, ipaddress.IPv6Address):
        if a.ipv4_mapped is not None:
            return int(a.ipv4_mapped)
        if ipv6_wire.is_bad_address(int(a)):  # and "::1" must not pass for 0.0.0.1
            raise OSError(101, f"{a} is not reachable from this stack")
    return int(a)


def _quote(header: memoryview, payload: memoryview) -> memoryview:
    """What an ICMP error quotes of a datagram: its IP header and 8 bytes of payload."""
    return memoryview(bytes(header) + bytes(payload[:8]))


class Stack:
    """The sans-I/O stack. All methods take ``now`` where time matters; none raise on input."""

    def __init__(self, config: StackConfig | None = None, *, isn_secret: bytes | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config or StackConfig()
        self.tcp_config = self.config.tcp
        self.addresses = frozenset(int(a) for a in self.config.addresses)
        # The source of an active open to each family: its first configured address.
        self._primary = next((int(a) for a in self.config.addresses if a.version == 4), None)
        self._primary6 = next((int(a) for a in self.config.addresses if a.version == 6), None)
        # IPv6 connections: the same engine, an MSS 20 bytes smaller (RFC 8200 8.3).
        self.tcp_config6 = dataclasses.replace(
            self.tcp_config, mss=max(88, self.tcp_config.mss - (IPV6_TCP_HEADERS
                                                                 - IPV4_TCP_HEADERS)))
        self.counters: Counter[str] = Counters()
        self.tcbs: dict[Key, Tcb] = {}
        self.listeners: dict[int, Listener] = {}
        secret = isn_secret if isn_secret is not None else secrets.token_bytes(32)
        self._isn = IsnGenerator(secret)
        self._rng = rng or random.SystemRandom()
        self._dirty: list[Tcb] = []
        self._now = 0.0  # the time of the last flush or timer run
        self._notified: list[Tcb] = []
        self._control: list[OutPacket] = []
        # (deadline, tie-break, 4-tuple): entries name a connection by its key, so an
        # entry left behind by a closed connection holds no reference to it.
        self._timers: list[tuple[float, int, Key]] = []
        self._timer_seq = count()
        self._ident = self._rng.randrange(0x10000)
        self._vnet = self.config.vnet_hdr
        #: Answer plain SYNs in SYN-cookie mode without building segments
        #: (:meth:`_answer_plain_syn`); off, every packet takes the general path (the
        #: tests compare the two).
        self.plain_syn_path = True
        # What we send unasked is rate-limited: challenge ACKs (RFC 5961 7), RSTs to
        # segments without a connection, ICMP errors.
        self.memory = MemoryPool(self.config.max_buffered)
        self._commons = Commons(self.counters,
                                ReplyBudget(self.tcp_config.challenge_ack_limit, self._rng),
                                self.memory)
        self._rst_bucket = TokenBucket(self.config.rst_rate_limit,
                                       max(1, self.config.rst_rate_limit // 10))
        self._icmp_bucket = TokenBucket(self.config.icmp_rate_limit, 50)
        #: TCP Fast Open (RFC 7413): the server's keys, the client's cookies by server.
        self.fastopen = FastOpenKeys(self.config.tfo_keys, self.config.tfo_key_rotation)
        self.tfo_cache = FastOpenCache()
        self._passive = PassiveOpener(self.tcp_config, self._isn, SynCookies(secret),
                                      CookieMode(self.config.syncookies), self._commons,
                                      self.fastopen)
        self._passive6 = PassiveOpener(self.tcp_config6, self._isn, SynCookies(secret),
                                       CookieMode(self.config.syncookies), self._commons,
                                       self.fastopen)
        self._syn_budget = self.config.syn_batch_limit
        # The SYN budget the first pass of a split read left, until receive_rest.
        self._pass_budget: int | None = None
        # Segments that would open a connection, beyond the budget of their batch:
        # (4-tuple, segment, sequence limit after TIME-WAIT, when it was set aside).
        self._deferred: deque[tuple[Key, TcpSegment, int | None, float]] = deque()
        self._deferred_cap = SYN_DEFERRED_BATCHES * self.config.syn_batch_limit
        # Passive connections established but not yet claimed by the owner (their
        # Established event not yet taken): each listener's accept queue.
        self._unclaimed: set[Tcb] = set()
        # Connections in TIME-WAIT, oldest first (for the max_time_wait cap).
        self._time_wait: dict[Tcb, None] = {}
        # Listeners bound to some local addresses only (port -> addresses).
        self._listen_on: dict[int, frozenset[int]] = {}
        # RFC 1191 6.3: path MTUs learned from "fragmentation needed", per
        # destination, with their expiry, oldest first; new connections start there.
        self.pmtu_cache: dict[int, tuple[int, float]] = {}
        self._mss_floor = self.config.min_pmtu - IPV4_TCP_HEADERS
        self.fragments: Reassembler | None = None
        self.fragments6: Reassembler | None = None
        if self.config.reassembly:
            self.fragments = Reassembler(self.counters, self.config.frag_memory,
                                         self.config.frag_timeout)
            self.fragments6 = Reassembler(self.counters, self.config.frag_memory,
                                          self.config.frag_timeout, "ipv6",
                                          MAX_DATAGRAM_IPV6, ipv6_wire.set_payload_length)
        # RFC 8201 4: no IPv6 path MTU below 1280, whatever min_pmtu says for IPv4.
        self._min_pmtu6 = max(ipv6_wire.MIN_MTU, self.config.min_pmtu)
        self._mss_floor6 = self._min_pmtu6 - IPV6_TCP_HEADERS
        # Listeners that take IPv6 connections only (IPV6_V6ONLY).
        self._v6only: set[int] = set()
        # TCP-MD5 keys by peer; without any, one flag test per segment.
        self._md5_keys = Md5Keys(self.config.md5_keys)
        self._md5_on = bool(self._md5_keys)
        self._ao_keys = AoKeys(self.config.ao_keys)
        self._ao_on = bool(self._ao_keys)
        # Connections using TCP-AO: checked even once their peer's MKTs are gone.
        self._ao_conns = 0

        # Who watches (tcpstack.observe): None costs one attribute test per packet.
        self.observer: Observer | None = None
        self._packet_observer: Observer | None = None

    def set_md5_key(self, peer: str | int, key: bytes | str) -> None:
        """Sign segments to ``peer`` (an address, or a prefix such as ``10.0.0.0/24``)
        with ``key`` and accept from it only segments so signed (RFC 2385). Open
        connections to the peer (not those using TCP-AO) start with their next
        segment, as a Linux socket whose ``TCP_MD5SIG`` key is set. Raises
        ValueError on a bad peer or key (1 to 80 bytes; text is taken as UTF-8)."""
        self._md5_keys.set(peer, key)
        self._md5_on = True
        self._resign_connections()

    def remove_md5_key(self, peer: str | int) -> bool:
        """Forget the key of exactly ``peer``; whether there was one. Open connections
        it covered (and no other key does) stop signing."""
        found = self._md5_keys.remove(peer)
        self._md5_on = bool(self._md5_keys)
        self._resign_connections()
        return found

    def md5_peers(self) -> list[str]:
        """The peers (addresses and prefixes) that have TCP-MD5 keys; never the keys."""
        return self._md5_keys.peers()

    def _resign_connections(self) -> None:
        """TCP-MD5 keys changed: open connections follow them (not those using TCP-AO)."""
        for tcb in self.tcbs.values():
            if tcb.auth is not None:
                continue
            signed = self._md5_on and self._md5_keys.lookup(tcb.remote_ip) is not None
            if tcb.md5 != signed:
                tcb.set_signed(signed)

    def _md5_key(self, remote: int) -> bytes | None:
        if self._ao_on and self._ao_keys.for_peer(remote):
            return None  # TCP-AO, not TCP-MD5, with this peer (RFC 5925 1)
        return self._md5_keys.lookup(remote) if self._md5_on else None

    def add_ao_key(self, peer: str | int, send_id: int, recv_id: int, key: bytes | str,
                   algorithm: str = "hmac-sha1", include_options: bool = True) -> None:
        """Add a TCP-AO master key tuple (RFC 5925 3.1) for ``peer`` (an address or
        prefix): SendID, RecvID, the master key (1 to 80 bytes), the algorithm
        (``hmac-sha1`` or ``aes-128-cmac``, RFC 5926) and whether the MAC covers the
        other options. New connections with the peer use TCP-AO; open ones that
        already do may roll over to it (see :meth:`ao_prefer`). ValueError if the
        tuple is malformed or its RecvID is taken."""
        self._ao_keys.add(Mkt.make(peer, send_id, recv_id, key, algorithm, include_options))
        self._ao_on = True
        self._refresh_ao()

    def remove_ao_key(self, peer: str | int, send_id: int) -> bool:
        """Remove the MKT of ``peer`` with ``send_id``; whether there was one. Open
        connections keep TCP-AO (it cannot be dropped mid-connection) with the MKTs
        they have left; one left with none keeps its last."""
        found = self._ao_keys.remove(peer, send_id)
        self._ao_on = bool(self._ao_keys)
        self._refresh_ao()
        return found

    def ao_prefer(self, peer: str | int, recv_id: int) -> int:
        """Key rollover (RFC 5925 7.5.2): ask ``peer`` (an address) to send with the MKT
        whose RecvID is ``recv_id``, on every open connection with it, by putting it
        in our RNextKeyID. Returns how many connections now ask."""
        address = _address(peer)
        n = 0
        for tcb in self.tcbs.values():
            conn = tcb.auth
            if tcb.remote_ip == address and isinstance(conn, AoConn) \
                    and any(m.recv_id == recv_id for m in conn.mkts):
                conn.rnext = recv_id
                tcb.mark()
                n += 1
        return n

    def ao_peers(self) -> list[str]:
        """The TCP-AO master key tuples as ``peer (SendID/RecvID, algorithm)``."""
        return self._ao_keys.peers()

    def _refresh_ao(self) -> None:
        for tcb in self.tcbs.values():
            conn = tcb.auth
            if isinstance(conn, AoConn):
                mkts = self._ao_keys.for_peer(tcb.remote_ip)
                if mkts:
                    conn.update(mkts)

    def set_tfo_keys(self, primary: bytes, backup: bytes | None = None) -> None:
        """Make Fast Open cookies (RFC 7413 4.1.2) with ``primary`` from now on and accept
        those made with ``backup`` too (16 bytes each; see
        :func:`tcpstack.tcp.fastopen.parse_key` for Linux's text form) -- a rotation
        that clients do not notice if ``backup`` is the previous primary. Raises
        ValueError on a key of another length."""
        self.fastopen.set(primary, backup)

    def rotate_tfo_key(self) -> None:
        """A new random Fast Open primary key; the current one becomes the backup."""
        self.fastopen.rotate()

    def attach_observer(self, observer: Observer | None, *, packets: bool = True) -> None:
        """Let ``observer`` watch connections open and close and the control packets;
        with ``packets`` also every TCP segment in and out. None detaches."""
        self.observer = observer
        self._packet_observer = observer if packets else None

    # --------------------------------------------------------------- control

    def listen(self, port: int, backlog: int = 128, syn_backlog: int | None = None,
               addresses: Iterable[int] | None = None, *, v6only: bool = False,
               fastopen: int = 0) -> Listener:
        """Open a listener on ``port`` on all stack addresses, or only on ``addresses``;
        of both families unless ``v6only`` (as a socket's ``IPV6_V6ONLY``: IPv4 clients
        then find the port closed).

        ``backlog`` bounds its accept queue, ``syn_backlog`` its SYN queue (default:
        the larger of ``backlog`` and 256); see :class:`Listener`. For
        ``addresses``, see :meth:`listen_on`. ``fastopen`` > 0 takes TCP Fast Open
        (RFC 7413) with at most that many such connections still in SYN-RECEIVED.
        """
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} out of range 1..65535")
        if port in self.listeners:
            raise OSError(98, f"port {port} already has a listener")
        listener = Listener(port, max(1, backlog), syn_backlog, fastopen)
        self.listeners[port] = listener
        self.listen_on(port, addresses)
        if v6only:
            self._v6only.add(port)
        return listener

    def listen_on(self, port: int, addresses: Iterable[int] | None) -> None:
        """Let the listener on ``port`` take connections to these local addresses only
        (None: every address of the stack). A segment for another address is
        answered as at a closed port (RST), as a socket bound to one address is.
        Raises :class:`KeyError` if ``port`` has no listener."""
        if port not in self.listeners:
            raise KeyError(f"port {port} has no listener")
        if addresses is None:
            self._listen_on.pop(port, None)
        else:
            self._listen_on[port] = frozenset(addresses)

    def listening_on(self, port: int) -> tuple[frozenset[int] | None, bool]:
        """What the listener on ``port`` takes: its local addresses (None: every
        address of the stack) and whether it is IPv6-only (:meth:`listen`)."""
        return self._listen_on.get(port), port in self._v6only

    def unlisten(self, port: int) -> None:
        """Close a listener; established connections are not affected."""
        self.listeners.pop(port, None)
        self._listen_on.pop(port, None)
        self._v6only.discard(port)

    def connect(self, remote_ip: int | str, remote_port: int, now: float,
                local_ip: int | str | None = None, local_port: int | None = None, *,
                fast_open: bool = False) -> Tcb:
        """Active OPEN (RFC 9293 3.10.1): returns a TCB in SYN-SENT.

        Addresses are strings or integers of either family (IPv4-mapped IPv6
        addresses mean their IPv4 address, as on a dual-stack socket); without
        ``local_ip`` the source is the stack's first address of the peer's family.

        ``fast_open`` (RFC 7413 4.1.3, as Linux's ``TCP_FASTOPEN_CONNECT``): the SYN
        waits for the next :meth:`packets_to_send` and carries what was written by
        then, with the cookie this stack holds for the server -- or, with none yet,
        asks for one (the data then follows the handshake). Not on signed
        connections (TCP-MD5, TCP-AO: no room for the option), nor while SYNs with
        data to the server were recently lost.
        """
        rip = _address(remote_ip)
        v6 = ipv6_wire.is_ipv6(rip)
        if local_ip is None:
            primary = self._primary6 if v6 else self._primary
            if primary is None:
                raise OSError(101, f"the stack has no IPv{6 if v6 else 4} address")
            lip = primary
        else:
            lip = _address(local_ip)
        if lip not in self.addresses:
            raise OSError(99, f"{ipaddress.ip_address(lip)} is not an address of this stack")
        if ipv6_wire.is_ipv6(lip) != v6:
            raise OSError(97, "local and remote addresses of different families")
        if not 1 <= remote_port <= 65535:
            raise ValueError(f"port {remote_port} out of range 1..65535")
        if local_port is None:
            local_port = self._pick_port(lip, rip, remote_port)
        key = (lip, local_port, rip, remote_port)
        if key in self.tcbs:
            raise OSError(98, "connection already exists")
        iss = self._isn.isn(lip, local_port, rip, remote_port, now)
        signed = self._md5_key(rip) is not None
        mkts = self._ao_keys.for_peer(rip) if self._ao_on else ()
        tfo = None
        if fast_open and not signed and not mkts:
            cached = self.tfo_cache.lookup(rip, now)
            if cached is None:
                self.counters["tcp_tfo_active_disabled"] += 1
            else:
                tfo = FastOpen(cached[0], client=True, deferred=True, mss=cached[1],
                               cache=self.tfo_cache)
        tcb = Tcb.active_open(self.tcp_config6 if v6 else self.tcp_config, (lip, local_port),
                              (rip, remote_port), iss, now, self._commons,
                              self._isn.ts_offset(*key), signed, tfo)
        if mkts:
            tcb.auth = AoConn(mkts, (lip, local_port), (rip, remote_port))
            tcb.set_signature_len(tcpao.OPTION_LEN)
            self._ao_conns += 1
        self._adopt(key, tcb, now)
        return tcb

    def _pick_port(self, lip: int, rip: int, rport: int) -> int:
        n = len(EPHEMERAL_PORTS)
        start = self._rng.randrange(n)
        for i in range(n):
            port = EPHEMERAL_PORTS[(start + i) % n]
            if (lip, port, rip, rport) not in self.tcbs and port not in self.listeners:
                return port
        raise OSError(99, "no free local port")

    def _adopt(self, key: Key, tcb: Tcb, now: float) -> None:
        """Own ``tcb``: index it, start it at the path MTU known for its peer, and have
        it report when it has output (it has: its SYN)."""
        self.tcbs[key] = tcb
        v6 = ipv6_wire.is_ipv6(key[2])
        tcb.mss_floor = self._mss_floor6 if v6 else self._mss_floor
        known = self.pmtu_cache.get(key[2])
        if known is not None:
            if known[1] > now:
                tcb.set_path_mss(known[0] - (IPV6_TCP_HEADERS if v6 else IPV4_TCP_HEADERS),
                                 known[1])
            else:
                del self.pmtu_cache[key[2]]
        tcb.bind(self._mark_dirty)
        if self.observer is not None:
            self.observer.on_open(key, tcb)

    def _remember_pmtu(self, remote: int, mtu: int, now: float) -> None:
        """Cache a lowered path MTU for ``remote`` (RFC 1191 6.3), bounded in size:
        the oldest entry makes room."""
        cache = self.pmtu_cache
        cache.pop(remote, None)
        if len(cache) >= PMTU_CACHE_SIZE:
            del cache[next(iter(cache))]
        cache[remote] = (mtu, now + self.tcp_config.pmtu_expires)

    def _mark_dirty(self, tcb: Tcb) -> None:
        self._dirty.append(tcb)

    # --------------------------------------------------------------- receive

    def receive_batch(self, packets: Iterable[BytesLike], now: float) -> list[BytesLike]:
        """Process the packets of one read from the device (see :meth:`receive`), all
        but its bare SYNs, which are returned, in order, for :meth:`receive_rest`.

        Under a SYN flood most of a read is bare SYNs (flags SYN alone): a connection's
        segment among them is processed, and its reply can be written (the caller
        flushes in between), before they are -- new connections, real or spoofed, do
        not hold up the ones that exist. A later packet of a set-aside SYN's flow is
        set aside behind it (:func:`tcpstack.wire.triage.flow_key`): no flow is
        reordered. A read of only SYNs, or of none, is processed in one pass
        (returns []).
        """
        start = virtio.HEADER_LEN if self._vnet else 0
        syns: list[BytesLike] = []
        flows: set[bytes] | None = None  # of the set-aside packets, once needed
        others = False  # something was processed in this pass
        receive = self.receive
        for packet in packets:
            if is_bare_syn(packet, start):
                syns.append(packet)
                if flows is not None:
                    flows.add(flow_key(packet, start))
                continue
            if syns:
                if flows is None:
                    flows = {flow_key(p, start) for p in syns}
                if flow_key(packet, start) in flows:
                    syns.append(packet)
                    continue
            others = True
            receive(packet, now)  # a direct (native, when compiled) call
        if not others:  # only SYNs (and their flows' packets): one pass
            for packet in syns:
                receive(packet, now)
            return []
        self._pass_budget = self._syn_budget
        return syns

    def receive_rest(self, packets: Iterable[BytesLike], now: float) -> None:
        """The second pass of a read (:meth:`receive_batch`'s set-aside packets), after
        the caller has written the first pass's output. The SYN budget is what the
        first pass left, not a fresh one: a read opens at most ``syn_batch_limit``
        connections, however it is split."""
        left = self._pass_budget
        if left is not None:
            self._pass_budget = None
            if left < self._syn_budget:
                self._syn_budget = left
        receive = self.receive
        for packet in packets:
            receive(packet, now)

    def receive(self, packet: BytesLike, now: float) -> None:
        """Process one IP packet. Malformed input is counted by reason and dropped."""
        try:
            if not self._answer_plain_syn(packet, now):
                self._receive(packet, now)
        except Malformed as e:
            self.counters[e.reason] += 1
        except Exception:  # a bug must not take the stack down; make it loud instead
            self.counters["internal_error"] += 1
            log.exception("internal error while processing a packet")

    def _answer_plain_syn(self, packet: BytesLike, now: float) -> bool:
        """Answer a plain IPv4 SYN (:mod:`tcpstack.wire.syn`) to a listener that answers
        with SYN cookies (RFC 4987) without building segment objects: under a SYN flood
        nearly every packet is one, and the general path costs several times more per
        packet. True if answered; False for everything else -- another packet, a SYN
        that opens a connection or is refused, a connection's 4-tuple, signing keys, a
        packet observer -- which :meth:`_receive` then takes, deciding as it would
        have decided here (the tests compare both paths' output and counters)."""
        start = virtio.HEADER_LEN if self._vnet else 0
        if not isinstance(packet, bytes) or len(packet) < start + 40 \
                or packet[start + 33] != SYN_FLAG \
                or not self.plain_syn_path or self._packet_observer is not None \
                or self._md5_on or self._ao_on or self._ao_conns:
            return False
        # No listener answering with cookies on its port: not worth reading further.
        at_port = self.listeners.get(packet[start + 22] << 8 | packet[start + 23])
        if at_port is None or not self._passive.answers_with_cookie(at_port):
            return False
        syn = read_plain_syn(packet, start,
                             not (start and virtio.checksum_trusted(packet[0])))
        if syn is None:
            return False
        src, dst, sport, dport, seq, mss, wscale, sack, tsval = syn
        if dst not in self.addresses or _is_bad_source(src) or src in self.addresses:
            return False
        key = (dst, dport, src, sport)
        if key in self.tcbs:
            return False
        listener = self._listener_for(dst, dport)  # at_port, if its addresses allow
        if listener is None:
            return False
        if self._open_refusal(budget=False) is not None:
            return False  # the general path counts the refusal
        counters = self.counters
        counters["ip_received"] += 1
        counters["tcp_received"] += 1
        cookie, window, our_mss, our_wscale, our_sack, our_tsval = \
            self._passive.plain_syn_cookie(key, seq, mss, wscale, bool(sack), tsval, now)
        self._control.append(write_syn_ack(dst, src, dport, sport, cookie, seq_add(seq, 1),
                                           window, our_mss, our_wscale, our_sack, our_tsval,
                                           tsval, self._next_ident(), self.config.ttl,
                                           self._vnet))
        return True

    def _receive(self, packet: BytesLike, now: float) -> None:
        self.counters["ip_received"] += 1
        trusted = False
        if self._vnet:
            # The kernel computed or vouched for the L4 checksum (virtio NEEDS_CSUM /
            # DATA_VALID); the header itself is stripped.
            trusted = virtio.checksum_trusted(virtio.parse_flags(packet))
            packet = memoryview(packet)[virtio.HEADER_LEN:]
        if len(packet) and packet[0] >> 4 == 6:
            self._receive_ipv6(packet, trusted, now)
            return
        fragments = self.fragments
        ip = parse_ipv4(packet, fragments is not None)
        if ip.dst not in self.addresses:
            self.counters["ip_not_for_us"] += 1
            return
        if _is_bad_source(ip.src) or ip.src in self.addresses:
            self.counters["ip_bad_source"] += 1
            return
        proto = ip.proto
        payload = ip.payload
        header = memoryview(packet)[: ip.header_len]
        if fragments is not None:
            frag = fragment_field(packet)
            if frag:
                whole = fragments.add((ip.src, ip.dst, proto, ip.ident), header,
                                      (frag & FRAG_OFFSET_MASK) * 8, bool(frag & FLAG_MF),
                                      payload, now)
                if whole is None:
                    return
                header = memoryview(whole[0])
                payload = memoryview(whole[1])
                trusted = False  # no offload vouches for a reassembled datagram
        if proto == PROTO_TCP:
            self._receive_tcp(ip.src, ip.dst, payload, now, not trusted, ip.tos & 3)
        elif proto == PROTO_ICMP:
            self._receive_icmp(ip.src, ip.dst, payload, not trusted, now)
        elif proto == PROTO_UDP:
            # RFC 1122 4.1.3.1: no UDP listener -> ICMP port unreachable.
            self.counters["udp_port_unreachable"] += 1
            self._send_icmp_error(ip.dst, ip.src, icmp_wire.CODE_PORT_UNREACHABLE,
                                  _quote(header, payload), now)
        else:
            # RFC 1122 3.2.2.1: protocol unreachable.
            self.counters["ip_unknown_protocol"] += 1
            self._send_icmp_error(ip.dst, ip.src, icmp_wire.CODE_PROTOCOL_UNREACHABLE,
                                  _quote(header, payload), now)

    # ------------------------------------------------------------ IPv6 input

    def _receive_ipv6(self, packet: BytesLike, trusted: bool, now: float) -> None:
        """One IPv6 packet (RFC 8200): the fixed header, the extension headers walked
        (:func:`~tcpstack.wire.ipv6.walk_headers`), a fragment reassembled, then TCP,
        ICMPv6, or an ICMPv6 error back (rate-limited, RFC 4443 2.4 f): Parameter
        Problem for what the walk cannot pass, port unreachable for UDP.

        Only our unicast addresses are accepted: multicast (the kernel's router
        solicitations and MLD reports, ``ipv6_multicast_ignored``) and other
        addresses are dropped, so no neighbour discovery happens here -- a TUN has
        no link layer for it to resolve (see the README)."""
        ip = ipv6_wire.parse_ipv6(packet)
        dst = ip.dst
        if dst not in self.addresses:
            self.counters["ipv6_multicast_ignored" if ipv6_wire.is_multicast(dst)
                          else "ip_not_for_us"] += 1
            return
        src = ip.src
        if ipv6_wire.is_bad_address(src) or src in self.addresses:
            self.counters["ip_bad_source"] += 1
            return
        whole = ip.packet
        try:
            chain = ipv6_wire.walk_headers(whole, ip.next_header)
            if chain.proto == ipv6_wire.NH_FRAGMENT:
                fragments = self.fragments6
                if fragments is None:
                    self.counters["ipv6_fragment"] += 1
                    return
                header = ipv6_wire.reassembled_header(whole, chain) if chain.frag_offset == 0 \
                    else whole[:chain.unfragmentable]
                done = fragments.add((src, dst, ipv6_wire.NH_FRAGMENT, chain.frag_ident), header,
                                     chain.frag_offset, chain.frag_more, whole[chain.offset:], now)
                if done is None:
                    return
                whole = memoryview(done[0] + done[1])
                trusted = False  # no offload vouches for a reassembled datagram
                chain = ipv6_wire.walk_headers(whole, whole[6])
                if chain.proto == ipv6_wire.NH_FRAGMENT:
                    self.counters["ipv6_frag_nested"] += 1
                    return
        except ipv6_wire.ParameterProblem as problem:
            self.counters[problem.reason] += 1
            self._send_icmp6_error(dst, src, icmp6_wire.PARAMETER_PROBLEM, problem.code,
                                   problem.pointer, whole, now)
            return
        proto = chain.proto
        payload = whole[chain.offset:]
        if proto == ipv6_wire.NH_TCP:
            self._receive_tcp(src, dst, payload, now, not trusted, ip.traffic_class & 3)
        elif proto == ipv6_wire.NH_ICMPV6:
            self._receive_icmpv6(src, dst, payload, not trusted, now)
        elif proto == ipv6_wire.NH_UDP:
            self.counters["udp_port_unreachable"] += 1
            self._send_icmp6_error(dst, src, icmp6_wire.DEST_UNREACHABLE,
                                   icmp6_wire.CODE_PORT_UNREACHABLE, 0, whole, now)
        else:
            self.counters["ipv6_no_next_header"] += 1  # RFC 8200 4.7: nothing follows

    def _receive_icmpv6(self, src: int, dst: int, payload: memoryview, verify: bool,
                        now: float) -> None:
        """ICMPv6 (RFC 4443): echo requests answered (4.2), errors to their connection;
        anything else (neighbour discovery among them) counted and ignored."""
        msg = icmp6_wire.parse_icmpv6(payload, src, dst, verify)
        t = msg.type
        if t == icmp6_wire.ECHO_REQUEST:
            if not self.config.answer_ping:
                self.counters["icmpv6_echo_ignored"] += 1
                return
            self.counters["icmpv6_echo_replied"] += 1
            self._send_ipv6(dst, src, ipv6_wire.NH_ICMPV6,
                            icmp6_wire.build_echo_reply(dst, src, msg))
        elif icmp6_wire.DEST_UNREACHABLE <= t <= icmp6_wire.PARAMETER_PROBLEM:
            self._receive_icmpv6_error(msg, now)
        else:
            self.counters[f"icmpv6_type_{t}_ignored"] += 1

    def _receive_icmpv6_error(self, msg: icmp_wire.IcmpMessage, now: float) -> None:
        """An ICMPv6 error about one of our segments: as :meth:`_receive_icmp_error`,
        with RFC 4443's codes; "packet too big" (3.2) goes to path MTU discovery
        (RFC 8201) with the IPv6 floor of 1280 bytes."""
        quote = icmp6_wire.parse_quoted_tcp(msg.body)
        tcb = self._quoted_connection(quote)
        if tcb is None:
            return
        t = msg.type
        if t == icmp6_wire.PACKET_TOO_BIG:
            self.counters["icmpv6_packet_too_big"] += 1
            self._path_too_big(tcb, min(msg.rest, 0xFFFF), quote, now)
            return
        if t == icmp6_wire.DEST_UNREACHABLE:
            meaning = icmp6_wire.UNREACHABLE_ERRORS.get(msg.code)
            if meaning is None:
                self.counters[f"icmpv6_unreachable_code_{msg.code}_ignored"] += 1
                return
        elif t == icmp6_wire.TIME_EXCEEDED:
            meaning = icmp6_wire.TIME_EXCEEDED_ERROR
        else:
            meaning = icmp6_wire.PARAMETER_PROBLEM_ERROR
        tcb.on_icmp_error(meaning[0], meaning[1], quote.seq)

    def _send_icmp6_error(self, src: int, dst: int, type_: int, code: int, rest: int,
                          invoking: memoryview, now: float) -> None:
        """An ICMPv6 error within the stack's ICMP rate limit (RFC 4443 2.4 f), never
        about an ICMPv6 error (2.4 e.1)."""
        if icmp6_wire.is_icmpv6_error(invoking):
            self.counters["icmpv6_error_about_error"] += 1
            return
        if not self._icmp_bucket.allow(now):
            self.counters["icmp_rate_limited"] += 1
            return
        self._send_ipv6(src, dst, ipv6_wire.NH_ICMPV6,
                        icmp6_wire.build_error(src, dst, type_, code, rest, invoking))

    def _send_ipv6(self, src: int, dst: int, next_header: int, payload: bytearray) -> None:
        pkt = ipv6_wire.build_ipv6(src, dst, next_header, payload, self.config.ttl)
        self._control.append(bytearray(virtio.PLAIN) + pkt if self._vnet else pkt)

    # ------------------------------------------------------------ ICMP (both families)

    def _receive_icmp(self, src: int, dst: int, payload: memoryview, verify: bool,
                      now: float) -> None:
        msg = icmp_wire.parse_icmp(payload, verify)
        t = msg.type
        if t == icmp_wire.ECHO_REQUEST:
            if not self.config.answer_ping:
                self.counters["icmp_echo_ignored"] += 1
                return
            self.counters["icmp_echo_replied"] += 1
            self._send_icmp(dst, src, icmp_wire.build_echo_reply(msg))
        elif t == icmp_wire.DEST_UNREACHABLE or t == icmp_wire.TIME_EXCEEDED \
                or t == icmp_wire.PARAMETER_PROBLEM:
            self._receive_icmp_error(msg, now)
        elif t == icmp_wire.SOURCE_QUENCH:
            self.counters["icmp_source_quench_ignored"] += 1  # RFC 6633: deprecated
        else:
            self.counters[f"icmp_type_{t}_ignored"] += 1

    def _receive_icmp_error(self, msg: icmp_wire.IcmpMessage, now: float) -> None:
        """An ICMP error: find the connection whose segment it quotes and tell it
        (RFC 1122 4.2.3.9, RFC 5927). The connection checks the quoted sequence
        number before acting (:mod:`tcpstack.tcp.path`); here only the quote's
        form and 4-tuple are checked, each failure counted."""
        quote = icmp_wire.parse_quoted_tcp(msg.body)
        tcb = self._quoted_connection(quote)
        if tcb is None:
            return
        t = msg.type
        if t == icmp_wire.DEST_UNREACHABLE and msg.code == icmp_wire.CODE_FRAG_NEEDED:
            self._frag_needed(tcb, msg.rest & 0xFFFF, quote, now)
            return
        if t == icmp_wire.DEST_UNREACHABLE:
            meaning = icmp_wire.UNREACHABLE_ERRORS.get(msg.code)
            if meaning is None:  # unassigned
                self.counters[f"icmp_unreachable_code_{msg.code}_ignored"] += 1
                return
        elif t == icmp_wire.TIME_EXCEEDED:
            meaning = icmp_wire.TIME_EXCEEDED_ERROR
        else:
            meaning = icmp_wire.PARAMETER_PROBLEM_ERROR
        tcb.on_icmp_error(meaning[0], meaning[1], quote.seq)

    def _quoted_connection(self, quote: icmp_wire.QuotedTcp) -> Tcb | None:
        """The connection whose segment an ICMP error (either family) quotes, or None
        (counted: not from our address, or no such connection)."""
        if quote.src not in self.addresses:
            self.counters["icmp_error_not_ours"] += 1
            return None
        tcb = self.tcbs.get((quote.src, quote.src_port, quote.dst, quote.dst_port))
        if tcb is None:
            self.counters["icmp_error_no_connection"] += 1
        return tcb

    def _frag_needed(self, tcb: Tcb, mtu: int, quote: icmp_wire.QuotedTcp, now: float) -> None:
        """RFC 1191: "fragmentation needed and DF set" for ``tcb``'s segment, with the
        next-hop MTU (or, where a router left it 0, the plateau below the quoted
        packet's length, RFC 1191 5)."""
        self.counters["icmp_frag_needed"] += 1
        if mtu == 0:
            mtu = next((p for p in MTU_PLATEAUS if p < quote.total_len), 68)
        self._path_too_big(tcb, mtu, quote, now)

    def _path_too_big(self, tcb: Tcb, mtu: int, quote: icmp_wire.QuotedTcp, now: float) -> None:
        """RFC 1191 / RFC 8201: the path to ``quote.dst`` carries at most ``mtu`` bytes.
        The MTU is raised to the floor if smaller -- ``min_pmtu`` for IPv4, 1280 (or
        ``min_pmtu`` if larger) for IPv6 (RFC 8201 4) -- since a forged tiny MTU
        would make every segment a runt, and handed to the connection, which checks
        the quoted sequence number; a lowered MTU is cached for the destination."""
        v6 = ipv6_wire.is_ipv6(quote.dst)
        floor = self._min_pmtu6 if v6 else self.config.min_pmtu
        headers = IPV6_TCP_HEADERS if v6 else IPV4_TCP_HEADERS
        if mtu < floor:
            self.counters["icmp_pmtu_below_floor"] += 1
            mtu = floor
        if tcb.on_packet_too_big(mtu - headers, quote.seq, now):
            self._remember_pmtu(quote.dst, tcb.path_mss + headers, now)

    def _send_icmp_error(self, src: int, dst: int, code: int, quote: memoryview,
                         now: float) -> None:
        """An ICMP destination unreachable, within the ICMP error rate limit."""
        if not self._icmp_bucket.allow(now):
            self.counters["icmp_rate_limited"] += 1
            return
        self._send_icmp(src, dst, icmp_wire.build_unreachable(code, quote))

    def _send_icmp(self, src: int, dst: int, message: bytearray) -> None:
        pkt = build_ipv4(src, dst, PROTO_ICMP, message, self._next_ident(), self.config.ttl)
        self._control.append(bytearray(virtio.PLAIN) + pkt if self._vnet else pkt)

    def _receive_tcp(self, src: int, dst: int, payload: memoryview, now: float,
                     verify: bool = True, ecn: int = 0) -> None:
        seg = parse_tcp(payload, src, dst, verify, ecn)
        self.counters["tcp_received"] += 1
        opts = seg.options
        checked = self._md5_on or self._ao_on or self._ao_conns or opts.md5 \
            or opts.ao is not None
        obs = self._packet_observer
        if obs is not None:
            key = (dst, seg.dst_port, src, seg.src_port)
            token = obs.before_segment(key, seg, now)
            if not checked or self._signature_ok(src, dst, payload, seg):
                self._demux_tcp(src, dst, seg, now)
            obs.after_segment(key, seg, token, now)
        elif not checked or self._signature_ok(src, dst, payload, seg):
            self._demux_tcp(src, dst, seg, now)

    def _signature_ok(self, src: int, dst: int, raw: memoryview, seg: TcpSegment) -> bool:
        """RFC 2385 2.0 and 4.0 (and Linux's tcp_inbound_md5_hash), RFC 5925 7.3: a
        segment must be signed as its connection is -- with TCP-AO (fixed when it
        opened), with TCP-MD5 (following the peer's key), or not at all; without a
        connection, as the key tables say for its peer. Whatever fails is dropped,
        counted, before any state sees it -- SYNs and RSTs alike, and never answered."""
        opts = seg.options
        tcb = self.tcbs.get((dst, seg.dst_port, src, seg.src_port))
        if tcb is not None and not (tcb.state is State.TIME_WAIT
                                    and seg.flags & (SYN | ACK | RST) == SYN):
            conn = tcb.auth
            if isinstance(conn, AoConn):
                if opts.md5:
                    return self._refuse("tcp_ao_with_md5")  # RFC 5925 1: never both
                irs = seg.seq if tcb.state is State.SYN_SENT else tcb.irs
                reason = conn.verify(src, dst, raw, seg, tcb.iss, irs)
                return True if reason is None else self._refuse(reason)
            if opts.ao is not None:
                return self._refuse("tcp_ao_unexpected")
            return self._md5_ok(src, dst, raw, seg,
                                self._md5_keys.lookup(src) if tcb.md5 else None)
        # No connection (or a SYN that may reopen one in TIME-WAIT): the key tables.
        if self._ao_on:
            mkts = self._ao_keys.for_peer(src)
            if mkts:
                return self._ao_ok(src, dst, raw, seg, mkts)
        if opts.ao is not None:
            return self._refuse("tcp_ao_unexpected")
        return self._md5_ok(src, dst, raw, seg, self._md5_key(src))

    def _refuse(self, reason: str) -> bool:
        self.counters[reason] += 1
        return False

    def _md5_ok(self, src: int, dst: int, raw: memoryview, seg: TcpSegment,
                key: bytes | None) -> bool:
        """RFC 2385 2.0: signed with ``key`` if there is one, else not signed at all."""
        if key is None:
            return self._refuse("tcp_md5_unexpected") if seg.options.md5 else True
        if not seg.options.md5:
            return self._refuse("tcp_md5_missing")
        if not md5sig.verify(src, dst, raw, key):
            return self._refuse("tcp_md5_failure")
        return True

    def _demux_tcp(self, src: int, dst: int, seg: TcpSegment, now: float) -> None:
        if seg.dst_port == 0 or seg.src_port == 0:
            self.counters["tcp_port_zero"] += 1
            return
        flags = seg.flags
        if flags & SYN and flags & (FIN | RST):
            # Nonsense that scanners send (SYN+FIN, SYN+RST): dropped before anything
            # looks at it, whatever the port (Linux drops both at a listener too).
            self.counters["tcp_syn_fin" if flags & FIN else "tcp_syn_rst"] += 1
            return
        self._dispatch((dst, seg.dst_port, src, seg.src_port), seg, now)

    def _dispatch(self, key: Key, seg: TcpSegment, now: float,
                  old_snd_max: int | None = None) -> None:
        """Hand a parsed segment to its connection, or to its port's listener."""
        tcb = self.tcbs.get(key)
        listener = self._listener_for(key[0], seg.dst_port)
        if tcb is not None:
            if tcb.state is State.TIME_WAIT and listener is not None \
                    and seg.flags & (SYN | ACK | RST) == SYN and seq_gt(seg.seq, tcb.rcv_nxt):
                # RFC 9293 3.10.7.4 note / RFC 6191: a new SYN above the old sequence
                # space may reopen a connection in TIME-WAIT; the new ISS must lie
                # above the old incarnation's sequence numbers (RFC 9293 3.6.1).
                self.counters["tcp_time_wait_reused"] += 1
                old_snd_max = tcb.snd_max
                self._remove(key, tcb)
            else:
                tcb.receive(seg, now)
                return
        if listener is None:
            self.counters["tcp_closed_port"] += 1
            self._reply_rst(key[0], key[2], seg, now)
            return
        self._receive_listen(listener, key, seg, now, old_snd_max)

    def _listener_for(self, dst: int, port: int) -> Listener | None:
        """The listener on ``port`` that takes connections to ``dst``: none if it is
        bound to other addresses (:meth:`listen_on`), or IPv6-only and ``dst`` IPv4."""
        listener = self.listeners.get(port)
        if listener is None:
            return None
        if self._listen_on:
            only = self._listen_on.get(port)
            if only is not None and dst not in only:
                return None
        if self._v6only and port in self._v6only and not ipv6_wire.is_ipv6(dst):
            return None
        return listener

    def _ao_ok(self, src: int, dst: int, raw: memoryview, seg: TcpSegment,
               mkts: tuple[Mkt, ...]) -> bool:
        """RFC 5925 7.3 for a segment with no connection from a peer with MKTs: a SYN
        is checked with its own ISN, an ACK (a SYN cookie's) with the ISNs its numbers
        imply -- a stray segment fails."""
        if seg.options.md5:
            return self._refuse("tcp_ao_with_md5")  # RFC 5925 1: never both
        conn = AoConn.for_syn(mkts, (dst, seg.dst_port), (src, seg.src_port), seg.options.ao)
        if seg.flags & (SYN | ACK) == SYN:
            reason = conn.verify(src, dst, raw, seg, 0, seg.seq)
        else:
            reason = conn.verify(src, dst, raw, seg, seq_add(seg.ack, -1), seq_add(seg.seq, -1))
        return True if reason is None else self._refuse(reason)

    def _receive_listen(self, listener: Listener, key: Key, seg: TcpSegment, now: float,
                        old_snd_max: int | None = None) -> None:
        """RFC 9293 3.10.7.2: SEGMENT ARRIVES in LISTEN (see :mod:`tcpstack.tcp.passive`)."""
        passive = self._passive6 if ipv6_wire.is_ipv6(key[0]) else self._passive
        # A SYN answered with a cookie starts nothing (RFC 4987 3.6: no state until its
        # ACK): the batch's SYN budget, kept for what does, does not hold it back.
        cookie_syn = seg.flags & (SYN | ACK | RST) == SYN and passive.answers_with_cookie(listener)
        refusal = self._open_refusal(budget=not cookie_syn)
        md5_key = self._md5_key(key[2])
        mkts = self._ao_keys.for_peer(key[2]) if self._ao_on else ()
        verdict = passive.segment(listener, key, seg, now, may_open=refusal is None,
                                  old_snd_max=old_snd_max, signed=md5_key is not None,
                                  fastopen_ok=not mkts)
        conn = None
        if mkts:
            conn = AoConn.for_syn(mkts, (key[0], key[1]), (key[2], key[3]), seg.options.ao)
        if verdict.refused:
            if refusal == "tcp_syn_batch_limit" and len(self._deferred) < self._deferred_cap:
                self._deferred.append((key, seg, old_snd_max, now))
                self.counters["tcp_syn_deferred"] += 1
            else:
                self.counters[refusal or "tcp_syn_batch_limit"] += 1
            return
        if verdict.tcb is not None:
            self._syn_budget -= 1
            if conn is not None:
                verdict.tcb.auth = conn
                verdict.tcb.set_signature_len(tcpao.OPTION_LEN)
                self._ao_conns += 1
            self._adopt(key, verdict.tcb, now)
            tfo = verdict.tcb.tfo
            if tfo is not None and tfo.child:
                # Handed to the application at once: in the accept queue until taken,
                # as Linux's Fast Open child.
                self._unclaimed.add(verdict.tcb)
                listener.pending += 1
            if verdict.tcb.state is State.SYN_RECEIVED and seg.flags & ACK:
                verdict.tcb.receive(seg, now)  # the ACK that carried a valid cookie
        elif verdict.reply is not None:  # a cookie SYN,ACK
            reply = verdict.reply
            ao = None if conn is None else conn.signing(reply.flags, reply.seq, reply.seq,
                                                        seg.seq)
            self._control.append(emit_tcp(reply, key[0], key[2], self._next_ident(),
                                          self.config.ttl, self._vnet, md5_key=md5_key,
                                          ao=ao))
        elif verdict.reset:
            self._reply_rst(key[0], key[2], seg, now)

    def _open_refusal(self, budget: bool = True) -> str | None:
        """Why a segment may not open a connection now (the counter to bump), or None:
        the SYN budget of this batch is spent (``budget``: it applies), the connection
        limit reached, or buffer memory short. Only what does open one spends the
        budget: a SYN answered with a cookie neither spends nor waits for it."""
        if budget and self._syn_budget <= 0:
            return "tcp_syn_batch_limit"
        if len(self.tcbs) - len(self._time_wait) >= self.config.max_connections:
            return "tcp_max_connections"
        if self.memory.pressure:
            return "tcp_memory_pressure_refused"
        return None

    def _replay_deferred(self, now: float) -> None:
        """Open what earlier batches set aside, oldest first, within this round's budget."""
        deferred = self._deferred
        while deferred and self._syn_budget > 0:
            key, seg, old_snd_max, _ = deferred.popleft()
            self._dispatch(key, seg, now, old_snd_max)

    def _reply_rst(self, local: int, remote: int, seg: TcpSegment, now: float) -> None:
        """RST for a segment that has no connection (RFC 9293 3.10.7.1).

        Never in answer to a RST. If the segment has ACK, the RST takes its sequence
        number from SEG.ACK; otherwise it is <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
        """
        if seg.flags & RST:
            return
        if self._ao_on and self._ao_keys.for_peer(remote):
            # RFC 5925 7.7: with no connection there are no ISNs to sign with.
            self.counters["tcp_ao_rst_not_sent"] += 1
            return
        if not self._rst_bucket.allow(now):
            self.counters["tcp_rst_rate_limited"] += 1
            return
        md5_key = self._md5_key(remote)
        opts = NO_OPTIONS if md5_key is None else MD5_ONLY
        if seg.flags & ACK:
            rst = OutSegment(seg.dst_port, seg.src_port, seg.ack, 0, RST, 0, opts)
        else:
            rst = OutSegment(seg.dst_port, seg.src_port, 0, seq_add(seg.seq, seg.seg_len),
                             RST | ACK, 0, opts)
        self.counters["tcp_rst_sent"] += 1
        self._control.append(emit_tcp(rst, local, remote, self._next_ident(), self.config.ttl,
                                      self._vnet, md5_key=md5_key))

    # ---------------------------------------------------------------- output

    def packets_to_send(self, now: float) -> list[OutPacket]:
        """Flush every connection touched since the last call; return IP packets to write.

        The connections' segments come first, then the answers to packets of no
        connection (SYN cookies' SYN,ACKs, RSTs, ICMP errors): under a SYN flood
        those are most of a batch, and a connection's reply need not wait behind
        their writes. (Between different connections the order means nothing to TCP.)
        Also the end of a batch: the budget of new connections starts afresh.
        """
        self._now = now
        self._syn_budget = self.config.syn_batch_limit
        control = self._control
        self._control = []
        dirty = self._dirty
        self._dirty = []
        ttl = self.config.ttl
        vnet = self._vnet
        scatter = self.config.scatter
        if self.observer is not None and control:
            self.observer.on_control(control, now)
        if not dirty:
            self.counters["ip_sent"] += len(control)
            return control
        out: list[OutPacket] = []
        obs = self._packet_observer
        for tcb in dirty:
            segments = tcb.segments_to_send(now)
            if obs is not None and segments:
                obs.on_send(tcb, segments, now)
            md5_key = self._md5_keys.lookup(tcb.remote_ip) if tcb.md5 else None
            auth = tcb.auth
            for seg in segments:
                ao = None if auth is None else auth.signing(seg.flags, seg.seq, tcb.iss,
                                                            tcb.irs)
                out.append(emit_tcp_parts(seg, tcb.local_ip, tcb.remote_ip, self._next_ident(),
                                          ttl, vnet, tcb.gso_size, scatter, md5_key, ao))
            self._after_flush(tcb)
        out += control
        self.counters["ip_sent"] += len(out)
        return out

    def _after_flush(self, tcb: Tcb) -> None:
        tcb.charged = self.memory.charge(tcb.charged, tcb.footprint)
        state = tcb.state
        if tcb.half_open and state is not State.SYN_RECEIVED:
            self._release_half_open(tcb)
        if tcb.events:
            self._notified.append(tcb)
        if state is State.CLOSED:
            key = (tcb.local_ip, tcb.local_port, tcb.remote_ip, tcb.remote_port)
            if self.tcbs.get(key) is tcb:
                self._remove(key, tcb)
            return
        if state is State.TIME_WAIT and tcb not in self._time_wait:
            self._enter_time_wait(tcb)
        self._schedule(tcb)

    def _enter_time_wait(self, tcb: Tcb) -> None:
        """Keep at most ``max_time_wait`` connections in TIME-WAIT: beyond it the oldest
        ends early (its 4-tuple is free again), as Linux's tcp_max_tw_buckets."""
        tw = self._time_wait
        tw[tcb] = None
        while len(tw) > self.config.max_time_wait:
            oldest = next(iter(tw))
            del tw[oldest]
            self.counters["tcp_time_wait_recycled"] += 1
            oldest.abort()  # no RST from TIME-WAIT (RFC 9293 3.10.5); removed at its flush

    def _remove(self, key: Key, tcb: Tcb) -> None:
        del self.tcbs[key]
        if tcb.auth is not None:
            self._ao_conns -= 1
        if self.observer is not None:
            self.observer.on_close(key, tcb)
        tcb.charged = self.memory.charge(tcb.charged, 0)
        self._release_half_open(tcb)
        self._time_wait.pop(tcb, None)
        self._claim(tcb)

    def _release_half_open(self, tcb: Tcb) -> None:
        """A passive TCB leaving SYN-RECEIVED frees its SYN-queue slot, exactly once,
        and, established, waits in the accept queue until its owner takes it."""
        if tcb.half_open:
            tcb.half_open = False
            listener = tcb.listener
            if listener is not None:
                listener.half_open -= 1
                if tcb.tfo is not None and tcb.tfo.child:
                    # A Fast Open child entered the accept queue with its SYN; one that
                    # ends here keeps its Fast Open slot a while (Listener.fastopen).
                    listener.tfo_pending -= 1
                    if tcb.state is State.CLOSED:
                        listener.hold_fastopen_slot(self._now)
                elif tcb.state is not State.CLOSED and tcb not in self._unclaimed:
                    self._unclaimed.add(tcb)
                    listener.pending += 1

    def _claim(self, tcb: Tcb) -> None:
        if tcb in self._unclaimed:
            self._unclaimed.discard(tcb)
            if tcb.listener is not None:
                tcb.listener.pending -= 1

    def has_pending_output(self) -> bool:
        """True if a connection or control packet is waiting for :meth:`packets_to_send`."""
        return bool(self._dirty or self._control)

    def take_notified(self) -> list[Tcb]:
        """Connections that have events waiting (call after :meth:`packets_to_send`).

        Taking a new passive connection's events (its Established) is what accepts
        it: it leaves its listener's accept queue.
        """
        out = self._notified
        self._notified = []
        if self._unclaimed:
            for tcb in out:
                self._claim(tcb)
        return out

    # ---------------------------------------------------------------- timers

    def _schedule(self, tcb: Tcb) -> None:
        """Put the connection's deadline on the heap unless an earlier entry is there.

        ``tcb.timer_entry`` (the owner's field on the TCB) is the earliest entry of
        this connection on the heap; later or stale entries are skipped when popped.
        Entries name the connection by its 4-tuple, not the object: one whose
        connection has gone (reset, say, with a keepalive deadline two hours away)
        keeps nothing of it alive. Stale entries are bounded too: once the heap holds
        more than twice as many entries as there are connections (plus a margin), it
        is rebuilt with one entry per connection, in time linear in the connections,
        which amortizes to O(1) per entry pushed.
        """
        d = tcb.timers.next_deadline()
        if d is not None and (tcb.timer_entry is None or d < tcb.timer_entry):
            tcb.timer_entry = d
            timers = self._timers
            key = (tcb.local_ip, tcb.local_port, tcb.remote_ip, tcb.remote_port)
            heapq.heappush(timers, (d, next(self._timer_seq), key))
            if len(timers) > 2 * len(self.tcbs) + _TIMER_HEAP_SLACK:
                self._compact_timers()

    def _compact_timers(self) -> None:
        """Rebuild the heap (in place: :meth:`handle_timer` may be iterating it) with
        each connection's earliest entry only."""
        seq = self._timer_seq
        self._timers[:] = [(tcb.timer_entry, next(seq), key)
                           for key, tcb in self.tcbs.items() if tcb.timer_entry is not None]
        heapq.heapify(self._timers)

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` should next run (may be early: a spurious wake is cheap).

        At once (a time already past) while segments wait for a SYN budget."""
        d = self._timers[0][0] if self._timers else None
        if self._deferred:
            since = self._deferred[0][3]
            if d is None or since < d:
                d = since
        return d

    def handle_timer(self, now: float) -> None:
        """Open what waits for a SYN budget (:data:`SYN_DEFERRED_BATCHES`), then run all
        connection timers due at ``now``. Lazy: stale entries are skipped."""
        self._now = now
        if self._deferred:
            self._replay_deferred(now)
        timers = self._timers
        while timers and timers[0][0] <= now:
            d, _, key = heapq.heappop(timers)
            tcb = self.tcbs.get(key)
            if tcb is None:
                continue  # the connection has gone
            if tcb.timer_entry == d:
                tcb.timer_entry = None
            if tcb.state is State.CLOSED:
                continue
            actual = tcb.timers.next_deadline()
            if actual is not None and actual <= now:
                try:
                    tcb.handle_timer(now)  # marks the connection for the next flush
                except Exception:
                    self.counters["internal_error"] += 1
                    log.exception("internal error in a connection timer")
                    tcb.mark()
            else:
                self._schedule(tcb)

    # ---------------------------------------------------------------- misc

    def _next_ident(self) -> int:
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident

    def connections(self) -> Iterable[Tcb]:
        return self.tcbs.values()

    def abort_all(self) -> None:
        """Reset every connection (used at shutdown after the grace period)."""
        for tcb in list(self.tcbs.values()):
            if tcb.state is not State.CLOSED:
                tcb.abort()


__all__ = ["Listener", "Observer", "Stack", "StackConfig"]
