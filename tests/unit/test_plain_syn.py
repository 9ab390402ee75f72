"""The plain SYN's own path (tcpstack.wire.syn, Stack._answer_plain_syn): under a SYN
flood a SYN answered with a cookie builds no segment objects -- and nothing it does
differs from the general path: the same bytes out, the same counters."""

from __future__ import annotations

import ipaddress
import random
import struct

from hypothesis import given
from hypothesis import strategies as st
from tcp_helpers import packet

from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp.config import TcpConfig
from tcpstack.wire import virtio
from tcpstack.wire.ipv4 import parse_ipv4
from tcpstack.wire.records import OutSegment, TcpOptions
from tcpstack.wire.syn import read_plain_syn, write_syn_ack
from tcpstack.wire.tcp import ACK, CWR, ECE, FIN, RST, SYN, emit_tcp, parse_tcp

SERVER = int(ipaddress.IPv4Address("10.0.0.2"))
CLIENT = int(ipaddress.IPv4Address("10.0.0.1"))
SECRET = b"plain syn secret"

# -------------------------------------------------------------- wire: writing


@given(wscale=st.integers(-1, 14), sack=st.booleans(),
       tsval=st.one_of(st.just(-1), st.integers(0, 0xFFFFFFFF)),
       tsecr=st.integers(0, 0xFFFFFFFF), seq=st.integers(0, 0xFFFFFFFF),
       ack=st.integers(0, 0xFFFFFFFF), ident=st.integers(0, 0xFFFF),
       window=st.integers(0, 0xFFFF), mss=st.integers(0, 0xFFFF), vnet=st.booleans())
def test_syn_ack_is_written_byte_for_byte_as_emit_tcp_writes_it(
        wscale: int, sack: bool, tsval: int, tsecr: int, seq: int, ack: int, ident: int,
        window: int, mss: int, vnet: bool) -> None:
    sack = sack and tsval >= 0  # a cookie SYN,ACK offers SACK only beside timestamps
    opts = TcpOptions(mss=mss, wscale=None if wscale < 0 else wscale, sack_permitted=sack,
                      timestamps=None if tsval < 0 else (tsval, tsecr))
    seg = OutSegment(80, 40000, seq, ack, SYN | ACK, window, opts)
    expected = emit_tcp(seg, SERVER, CLIENT, ident, 64, vnet)
    got = write_syn_ack(SERVER, CLIENT, 80, 40000, seq, ack, window, mss, wscale, sack, tsval,
                        tsecr, ident, 64, vnet)
    assert bytes(got) == bytes(expected)


# -------------------------------------------------------------- wire: reading


def raw_syn(options: bytes = b"", *, flags: int = SYN, payload: bytes = b"", sport: int = 40000,
            dport: int = 80, seq: int = 12345, reserved: int = 0, frag: int = 0x4000,
            tos: int = 0) -> bytearray:
    """An IPv4 SYN with these exact option bytes (padded to a word with EOL), checksums right."""
    options += bytes(-len(options) % 4)
    seg = OutSegment(sport, dport, seq, 0, flags, 64240, TcpOptions(), payload)
    pkt = bytearray(emit_tcp(seg, CLIENT, SERVER, 7))
    pkt[40:40] = options
    struct.pack_into("!H", pkt, 2, len(pkt))
    pkt[32] = ((20 + len(options)) // 4) << 4 | reserved
    struct.pack_into("!HB", pkt, 6, frag, pkt[8])
    pkt[1] = tos
    return fix_checksums(pkt)


def fix_checksums(pkt: bytearray) -> bytearray:
    from tcpstack.wire import checksum as ck

    pkt[10:12] = b"\0\0"
    struct.pack_into("!H", pkt, 10, ck.checksum(pkt[:20]))
    pkt[36:38] = b"\0\0"
    tcp_len = len(pkt) - 20
    total = ck.pseudo_header_ipv4(CLIENT, SERVER, 6, tcp_len) + ck.partial(pkt[20:])
    struct.pack_into("!H", pkt, 36, ck.finish(total))
    return pkt


def option(kind: int, body: bytes) -> bytes:
    return bytes((kind, 2 + len(body))) + body


LINUX_SYN_OPTIONS = (option(2, struct.pack("!H", 1460)) + option(4, b"")
                     + option(8, struct.pack("!II", 4_000_000, 0)) + b"\x01" + option(3, b"\x07"))

#: Option bytes drawn from what the plain path reads and what it must decline.
_OPTION_PIECES = st.sampled_from([
    option(2, struct.pack("!H", 1460)), option(2, struct.pack("!H", 0)), option(2, b"\x05"),
    option(3, b"\x07"), option(3, b"\x0f"), option(3, b""), option(4, b""), option(4, b"\x00"),
    option(8, struct.pack("!II", 99, 0)), option(8, b"\x00" * 6), option(34, b""),
    option(34, b"\x01" * 8), option(19, b"\x00" * 16), option(29, b"\x01\x02" + b"\0" * 12),
    option(5, struct.pack("!II", 1, 2)), option(172, b""), option(99, b"xy"),
    b"\x01", b"\x00", b"\x02", b"\x08\x0a\x00", b"\x03\x01",
])


@given(pieces=st.lists(_OPTION_PIECES, max_size=8))
def test_reading_agrees_with_the_general_parser_or_declines(pieces: list[bytes]) -> None:
    opts = b"".join(pieces)[:40]
    pkt = raw_syn(opts)
    got = read_plain_syn(bytes(pkt), 0, True)
    try:
        ip = parse_ipv4(pkt)
        seg = parse_tcp(ip.payload, ip.src, ip.dst)
    except Exception:
        assert got is None  # what the general path finds malformed is never read here
        return
    if got is None:
        return  # declined: the general path decides
    o = seg.options
    assert not (o.tfo is not None or o.md5 or o.ao is not None or o.sack_blocks or o.accecn)
    src, dst, sport, dport, seq, mss, wscale, sack, tsval = got
    assert (src, dst, sport, dport, seq) == (ip.src, ip.dst, seg.src_port, seg.dst_port,
                                             seg.seq)
    assert mss == (o.mss or 0)
    assert wscale == (-1 if o.wscale is None else o.wscale)
    assert bool(sack) == o.sack_permitted
    assert tsval == (-1 if o.timestamps is None else o.timestamps[0])


def test_a_linux_syn_is_read_with_all_four_options() -> None:
    assert read_plain_syn(bytes(raw_syn(LINUX_SYN_OPTIONS)), 0, True) == (
        CLIENT, SERVER, 40000, 80, 12345, 1460, 7, 1, 4_000_000)


def test_what_is_not_a_plain_syn_is_declined() -> None:
    mss = option(2, struct.pack("!H", 1460))
    declined = {
        "SYN,ACK": raw_syn(mss, flags=SYN | ACK),
        "SYN,FIN": raw_syn(mss, flags=SYN | FIN),
        "SYN,RST": raw_syn(mss, flags=SYN | RST),
        "ECN setup": raw_syn(mss, flags=SYN | ECE | CWR),
        "AE bit": raw_syn(mss, reserved=1),
        "reserved bit": raw_syn(mss, reserved=2),
        "data": raw_syn(mss, payload=b"GET /"),
        "fragment": raw_syn(mss, frag=0x2000),
        "port zero": raw_syn(mss, sport=0),
        "Fast Open": raw_syn(mss + option(34, b"")),
        "repeated MSS": raw_syn(mss + mss),
        "option past the header": raw_syn(b"\x01" * 6 + b"\x02\x04"),
    }
    bad_ip_sum = raw_syn(mss)
    bad_ip_sum[10] ^= 0xFF
    bad_tcp_sum = raw_syn(mss)
    bad_tcp_sum[36] ^= 0xFF
    declined["IP checksum"] = bad_ip_sum
    declined["TCP checksum"] = bad_tcp_sum
    declined["trailing bytes"] = raw_syn(mss) + b"\0\0\0\0"
    for name, pkt in declined.items():
        assert read_plain_syn(bytes(pkt), 0, True) is None, name
    # A TCP checksum the kernel vouched for (virtio-net) is not checked again.
    assert read_plain_syn(bytes(bad_tcp_sum), 0, False) is not None


# ---------------------------------------------------- the stack: both paths


def two_stacks(vnet: bool, cookies: str, **tcp: object) -> tuple[Stack, Stack]:
    """Two identical stacks, one with the plain-SYN path and one without, each with
    a listener on port 80 (SYN queue of 2) and on 443."""
    stacks = []
    for fast in (True, False):
        cfg = StackConfig(addresses=(ipaddress.IPv4Address("10.0.0.2"),), vnet_hdr=vnet,
                          syncookies=cookies, syn_batch_limit=4, tcp=TcpConfig(**tcp))
        s = Stack(cfg, isn_secret=SECRET, rng=random.Random(9))
        s.plain_syn_path = fast
        s.listen(80, backlog=4, syn_backlog=2)
        s.listen(443, backlog=1, syn_backlog=2)
        stacks.append(s)
    return stacks[0], stacks[1]


_SHAPES = st.sampled_from(["plain", "linux", "ts only", "mss only", "no options", "ecn",
                           "fin", "ack", "data", "bad sum", "tfo", "other port", "closed port",
                           "to another host", "from ourselves", "broadcast source", "repeat"])


def shaped(shape: str, sport: int, seq: int) -> tuple[bytearray, int]:
    """(an IPv4 packet of this shape from the client, its destination port)."""
    ts = option(8, struct.pack("!II", seq ^ 0x5555, 0))
    mss = option(2, struct.pack("!H", 1200 + sport % 300))
    dport = 443 if shape == "other port" else 81 if shape == "closed port" else 80
    opts = {"linux": LINUX_SYN_OPTIONS, "ts only": b"\x01\x01" + ts, "mss only": mss,
            "no options": b"", "tfo": mss + option(34, b"")}.get(shape, mss + ts)
    flags = {"ecn": SYN | ECE | CWR, "fin": SYN | FIN, "ack": ACK}.get(shape, SYN)
    pkt = raw_syn(opts, flags=flags, sport=sport, dport=dport, seq=seq,
                  payload=b"x" if shape == "data" else b"")
    if shape == "bad sum":
        pkt[36] ^= 1
    if shape in ("to another host", "from ourselves", "broadcast source"):
        addr = {"to another host": (CLIENT, 0x0A000009), "from ourselves": (SERVER, SERVER),
                "broadcast source": (0xFFFFFFFF, SERVER)}[shape]
        struct.pack_into("!II", pkt, 12, *addr)
        pkt = fix_any(pkt)
    return pkt, dport


def fix_any(pkt: bytearray) -> bytearray:
    from tcpstack.wire import checksum as ck

    src, dst = struct.unpack_from("!II", pkt, 12)
    pkt[10:12] = b"\0\0"
    struct.pack_into("!H", pkt, 10, ck.checksum(pkt[:20]))
    pkt[36:38] = b"\0\0"
    total = ck.pseudo_header_ipv4(src, dst, 6, len(pkt) - 20) + ck.partial(pkt[20:])
    struct.pack_into("!H", pkt, 36, ck.finish(total))
    return pkt


@given(shapes=st.lists(st.tuples(_SHAPES, st.integers(1024, 1100),
                                 st.integers(0, 0xFFFFFFFF), st.booleans()),
                       min_size=1, max_size=40),
       vnet=st.booleans(), trusted=st.booleans(),
       cookies=st.sampled_from(["auto", "always", "off"]),
       timestamps=st.booleans(), sack=st.booleans(), window_scaling=st.booleans())
def test_the_plain_path_sends_and_counts_what_the_general_path_does(
        shapes: list[tuple[str, int, int, bool]], vnet: bool, trusted: bool, cookies: str,
        timestamps: bool, sack: bool, window_scaling: bool) -> None:
    fast, general = two_stacks(vnet, cookies, timestamps=timestamps, sack=sack,
                               window_scaling=window_scaling)
    now = 1000.0
    last: bytearray | None = None
    for shape, sport, seq, flush in shapes:
        if shape == "repeat" and last is not None:
            pkt = last
        else:
            pkt, _ = shaped("plain" if shape == "repeat" else shape, sport, seq)
        last = pkt
        if vnet:
            flags = virtio.F_DATA_VALID if trusted else 0
            pkt = bytearray(virtio.HDR.pack(flags, 0, 0, 0, 0, 0)) + pkt
        for s in (fast, general):
            s.receive(bytes(pkt), now)
        if flush:
            for s in (fast, general):
                s.handle_timer(now)  # the next round: what was set aside goes first
            assert [bytes(p) if not isinstance(p, tuple) else p
                    for p in fast.packets_to_send(now)] == \
                [bytes(p) if not isinstance(p, tuple) else p
                 for p in general.packets_to_send(now)]
        now += 0.25
    assert [bytes(p) for p in fast.packets_to_send(now) if not isinstance(p, tuple)] == \
        [bytes(p) for p in general.packets_to_send(now) if not isinstance(p, tuple)]
    assert dict(fast.counters) == dict(general.counters)
    assert set(fast.tcbs) == set(general.tcbs)
    assert len(fast._deferred) == len(general._deferred)


def flood_syn(i: int) -> bytes:
    return bytes(raw_syn(LINUX_SYN_OPTIONS, sport=1024 + i, seq=i * 7919))


def test_a_plain_syn_to_a_listener_in_cookie_mode_takes_the_plain_path() -> None:
    s, _ = two_stacks(False, "auto")
    now = 10.0
    # The SYN queue (2) fills through the general path: these open connections.
    assert not s._answer_plain_syn(flood_syn(0), now)
    s.receive(flood_syn(0), now)
    s.receive(flood_syn(1), now)
    assert s.counters["tcp_syn_accepted"] == 2
    assert len(s.packets_to_send(now)) == 2  # their SYN,ACKs
    # Now it is full: cookies, answered by the plain path.
    assert s._answer_plain_syn(flood_syn(2), now)
    assert s.counters["tcp_syncookie_sent"] == 1
    (reply,) = s.packets_to_send(now)
    ip = parse_ipv4(reply)
    seg = parse_tcp(ip.payload, ip.src, ip.dst)
    assert (seg.flags, seg.ack, seg.options.mss) == (SYN | ACK, 2 * 7919 + 1, 1460)
    # A packet of an open connection's 4-tuple, or a signed peer, is not for it.
    assert not s._answer_plain_syn(flood_syn(0), now)
    s.set_md5_key("10.0.0.9", b"a key")
    assert not s._answer_plain_syn(flood_syn(3), now)


def test_the_cookie_the_plain_path_sent_opens_the_connection() -> None:
    s, _ = two_stacks(False, "always")
    now = 50.0
    s.receive(flood_syn(5), now)
    (reply,) = s.packets_to_send(now)
    ip = parse_ipv4(reply)
    synack = parse_tcp(ip.payload, ip.src, ip.dst)
    assert synack.options.wscale is not None and synack.options.sack_permitted
    ack = OutSegment(1024 + 5, 80, (5 * 7919 + 1) & 0xFFFFFFFF, (synack.seq + 1) & 0xFFFFFFFF,
                     ACK, 502, TcpOptions(timestamps=(4_000_100, synack.options.timestamps[0])))
    s.receive(packet(ack, CLIENT, SERVER), now + 0.01)
    assert s.counters["tcp_syncookie_accepted"] == 1
    (tcb,) = s.tcbs.values()
    assert tcb.state.name == "ESTABLISHED"
    assert (tcb.snd_wscale, tcb.sack_ok) == (7, True)  # echoed back through the TSval


def test_syns_answered_with_cookies_neither_spend_nor_wait_for_the_syn_budget() -> None:
    """A cookie SYN,ACK starts nothing (RFC 4987 3.6), so the batch's SYN budget (4
    here), kept for what does, holds none back: a burst far beyond the budget and the
    deferral cap (4 budgets) is answered in its own batch, none set aside or dropped
    -- by both paths alike."""
    fast, general = two_stacks(False, "always")
    now = 20.0
    for i in range(100):
        for s in (fast, general):
            s.receive(flood_syn(i), now)
    for s in (fast, general):
        assert s.counters["tcp_syncookie_sent"] == 100
        assert s.counters["tcp_syn_deferred"] == 0 and s.counters["tcp_syn_batch_limit"] == 0
        assert not s._deferred
    out = [bytes(p) for p in fast.packets_to_send(now)]
    assert len(out) == 100 and out == [bytes(p) for p in general.packets_to_send(now)]
    assert dict(fast.counters) == dict(general.counters)


def test_syns_that_open_connections_still_spend_the_budget_beside_cookie_ones() -> None:
    """With the SYN queue not yet full (cookies "auto"), SYNs open connections and are
    budgeted; once it is full, the rest are cookie SYNs, answered beyond the budget."""
    s, _ = two_stacks(False, "auto")  # a SYN queue of 2, a budget of 4
    now = 10.0
    for i in range(10):
        s.receive(flood_syn(i), now)
    assert s.counters["tcp_syn_accepted"] == 2  # the SYN queue's two
    assert s.counters["tcp_syncookie_sent"] == 8  # the rest, none held back
    assert s.counters["tcp_syn_deferred"] == 0
    assert len(s.packets_to_send(now)) == 10
