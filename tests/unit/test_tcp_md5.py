"""TCP-MD5 signatures (RFC 2385): the digest, checked against segments Linux signed,
the per-peer key table, and the stack signing what it sends and dropping, counted,
what arrives unsigned, wrongly signed or signed unasked."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from tcp_helpers import (
    IRS,
    REMOTE_PORT,
    Wire,
    ip,
    parse,
    peer_tsval,
    stack,
    stack_pair,
    syn_with_options,
)
from test_stack_end_to_end import transfer

from tcpstack.link.impair import ImpairSpec
from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.control import MD5_OPTION_LEN
from tcpstack.tcp.md5keys import Md5Keys
from tcpstack.tcp.seq import seq_add
from tcpstack.tcp.state import State
from tcpstack.wire import checksum as ck
from tcpstack.wire import md5sig
from tcpstack.wire.ipv4 import parse_ipv4
from tcpstack.wire.tcp import (
    ACK,
    MD5_ONLY,
    RST,
    SYN,
    OutSegment,
    TcpOptions,
    TcpSegment,
    emit_tcp,
    encode_options,
    parse_tcp,
)

KEY = b"tcpstack-test-key"
PEER = "10.0.0.1"
US = "10.0.0.2"

# Segments Linux 6.18 signed with KEY between two kernel sockets (TCP_MD5SIG) in a
# private namespace, captured on its loopback: 10.9.0.1:55987 -> 10.9.0.2:7000
# (SYN; an ACK; the server's RST,ACK) and fd09::1 -> fd09::2 (SYN; data).
LINUX_V4 = (
    "4500004887a4400040069ef70a0900010a090002dab31b58b2df656100000000d002ffd7144f0000"
    "010113125c527201cb6958f078cf7db5fcf45ac70204ffd7010104020103030a",
    "4500003c87a5400040069f020a0900010a090002dab31b58b2df656266284d5ea010004014430000"
    "01011312ec8b3aacfe08799720701c40622fa7ab",
    "4500003c805640004006a6510a0900020a0900011b58dab366284d73b2df6574a014004014430000"
    "01011312275f2c8285b53c2d22882459a2e5bcff",
)
LINUX_V6 = (
    "600a46b300340640fd090000000000000000000000000001fd09000000000000000000000000000299"
    "1f1b58d693197500000000d002ffc4fa5000000101131234ef0d60f8ebb028a19c10d8b0abfbc00204"
    "ffc4010104020103030a",
    "600a46b3003a0640fd090000000000000000000000000001fd09000000000000000000000000000299"
    "1f1b58d6931976cbf0e69ba0180040fa560000010113121d2753a102384fad465913ebd0df3ef54745"
    "54202f20485454502f312e300d0a0d0a",
)


def _v4(hexed: str) -> tuple[int, int, memoryview]:
    p = parse_ipv4(bytes.fromhex(hexed))
    return p.src, p.dst, p.payload


def _v6(hexed: str) -> tuple[int, int, memoryview]:
    b = bytes.fromhex(hexed)
    return int.from_bytes(b[8:24], "big"), int.from_bytes(b[24:40], "big"), memoryview(b)[40:]


# ------------------------------------------------------------------ the digest


@pytest.mark.parametrize("hexed", LINUX_V4)
def test_digest_matches_segments_linux_signed_over_ipv4(hexed: str) -> None:
    """RFC 2385 2.0: pseudo-header, TCP header without options and with a zero
    checksum, data, key -- the bytes Linux hashes, whatever the flags (SYN, ACK, RST)."""
    src, dst, tcp = _v4(hexed)
    seg = parse_tcp(tcp, src, dst, verify_checksum=False)  # loopback: partial checksums
    assert seg.options.md5
    assert md5sig.verify(src, dst, tcp, KEY)
    assert not md5sig.verify(src, dst, tcp, KEY[:-1] + b"X")
    assert not md5sig.verify(dst, src, tcp, KEY)  # the addresses are covered


@pytest.mark.parametrize("hexed", LINUX_V6)
def test_digest_matches_segments_linux_signed_over_ipv6(hexed: str) -> None:
    """The IPv6 pseudo-header (RFC 8200 8.1), as Linux's tcp_v6_md5_hash_headers."""
    src, dst, tcp = _v6(hexed)
    assert md5sig.verify(src, dst, tcp, KEY)
    assert not md5sig.verify(src, dst, tcp, b"another key")


def test_any_flipped_bit_outside_the_options_breaks_the_signature() -> None:
    """Header fields, data and addresses are covered; the checksum is not."""
    src, dst, tcp = _v4(LINUX_V4[0])
    raw = bytearray(tcp)
    at = md5sig.find_digest(raw)
    for i in range(len(raw)):
        if 16 <= i < 18 or 20 <= i < (raw[12] >> 4) * 4:
            continue  # the checksum and the options
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        assert not md5sig.verify(src, dst, flipped, KEY), i
    zeroed = bytearray(raw)
    zeroed[16:18] = b"\xff\xff"
    assert md5sig.verify(src, dst, zeroed, KEY)
    assert at == 24  # after NOP, NOP, kind, length: where Linux puts it


def test_emit_signs_a_segment_that_verifies_and_keeps_a_valid_checksum() -> None:
    seg = OutSegment(80, 40000, 1000, 2000, ACK, 512, TcpOptions(timestamps=(5, 6)),
                     b"payload" * 100)
    pkt = emit_tcp(seg, ip(US), ip(PEER), 1, md5_key=KEY)
    p = parse_ipv4(pkt)
    parsed = parse_tcp(p.payload, p.src, p.dst)  # checksum verified
    assert parsed.options.md5 and parsed.options.timestamps == (5, 6)
    assert bytes(parsed.payload) == b"payload" * 100
    assert md5sig.verify(p.src, p.dst, p.payload, KEY)


def test_a_scattered_payload_is_signed_like_a_copied_one() -> None:
    from tcpstack.wire.tcp import emit_tcp_parts
    seg = OutSegment(80, 40000, 1, 2, ACK, 512, MD5_ONLY, bytes(range(256)) * 16)
    head, payload = emit_tcp_parts(seg, ip(US), ip(PEER), 1, md5_key=KEY)  # type: ignore[misc]
    whole = bytes(head) + bytes(payload)
    assert whole == bytes(emit_tcp(seg, ip(US), ip(PEER), 1, md5_key=KEY))


def test_option_space_with_a_signature() -> None:
    """40 option bytes: the signature takes 20; SACK blocks fit 2 beside it, none
    beside it and timestamps (the option is then left out, not sent empty)."""
    blocks = ((1, 2), (3, 4), (5, 6), (7, 8))
    only_sack = encode_options(TcpOptions(sack_blocks=blocks), syn=False, md5=True)
    assert len(only_sack) == 40 and only_sack[20:24] == bytes((1, 1, 5, 18))
    with_ts = encode_options(TcpOptions(sack_blocks=blocks, timestamps=(1, 2)), False, True)
    assert len(with_ts) == 32 and 5 not in with_ts[20:24]
    syn = encode_options(TcpOptions(mss=1460, wscale=7, sack_permitted=True,
                                    timestamps=(1, 2)), syn=True, md5=True)
    assert len(syn) == 40


# ------------------------------------------------------------------ key table


def test_key_table_longest_prefix_wins() -> None:
    keys = Md5Keys([("10.0.0.0/8", b"eight"), ("10.1.0.0/16", "sixteen"),
                    ("10.1.2.3", b"host"), ("fd00::/64", b"six")])
    assert keys.lookup(ip("10.1.2.3")) == b"host"
    assert keys.lookup(ip("10.1.9.9")) == b"sixteen"
    assert keys.lookup(ip("10.200.0.1")) == b"eight"
    assert keys.lookup(ip("11.0.0.1")) is None
    assert keys.lookup(int(ipaddress.IPv6Address("fd00::5"))) == b"six"
    assert keys.lookup(int(ipaddress.IPv6Address("fd01::5"))) is None
    assert keys.remove("10.1.0.0/16") and not keys.remove("10.1.0.0/16")
    assert keys.lookup(ip("10.1.9.9")) == b"eight"
    assert sorted(keys.peers()) == ["10.0.0.0/8", "10.1.2.3", "fd00::/64"]


def test_key_table_maps_ipv4_mapped_peers_and_replaces_keys() -> None:
    keys = Md5Keys()
    assert not keys
    keys.set("::ffff:10.0.0.1", b"one")
    keys.set("10.0.0.1", b"two")
    assert len(keys) == 1 and keys.lookup(ip("10.0.0.1")) == b"two"


@pytest.mark.parametrize(("peer", "key", "message"), [
    ("10.0.0.1", b"", "1 to 80 bytes"),
    ("10.0.0.1", b"k" * 81, "1 to 80 bytes"),
    ("10.0.0.300", b"k", "not an address or prefix"),
    ("10.0.0.1/24", b"k", "not an address or prefix"),  # host bits set
    ("::1.2.3.4", b"k", "no address a peer"),
])
def test_key_table_refuses_bad_peers_and_keys(peer: str, key: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Md5Keys([(peer, key)])
    with pytest.raises(ValueError, match=message):
        StackConfig(md5_keys=((peer, key),))


# ------------------------------------------------------------------ the stack


def keyed_stack(**tcp: object) -> Stack:
    st = stack(US, TcpConfig(**tcp))  # type: ignore[arg-type]
    st.set_md5_key(PEER, KEY)
    st.listen(80)
    return st


def signed(seg: TcpSegment, key: bytes = KEY, src: str = PEER, dst: str = US) -> bytearray:
    return emit_tcp(seg, ip(src), ip(dst), 1, md5_key=key)


def out(st: Stack, now: float = 0.0) -> list[bytearray]:
    return st.packets_to_send(now)


def assert_signed(pkt: bytearray, key: bytes = KEY) -> TcpSegment:
    p = parse_ipv4(pkt)
    assert md5sig.verify(p.src, p.dst, p.payload, key), parse(pkt).seg
    return parse(pkt).seg


def full_syn(seq: int = IRS, port: int = REMOTE_PORT) -> TcpSegment:
    """A SYN offering everything, as Linux's without a key."""
    return syn_with_options(seq=seq, wscale=7, sack=True,
                            ts=(peer_tsval(0), 0))._replace(src_port=port)


def test_signed_syn_gets_a_signed_syn_ack_preferring_sack_to_timestamps() -> None:
    """As Linux's SYN,ACK to a signed SYN offering both: SACK yes, timestamps no (the
    signature and timestamps would leave no room for a SACK block)."""
    st = keyed_stack()
    st.receive(signed(full_syn()), 0.0)
    (pkt,) = out(st)
    synack = assert_signed(pkt)
    assert synack.flags == SYN | ACK
    assert synack.options.sack_permitted and synack.options.timestamps is None
    assert synack.options.mss == 1460 and synack.options.md5
    (tcb,) = st.tcbs.values()
    assert tcb.md5 and tcb.sack_ok and not tcb.ts_ok
    assert tcb.seg_mss == 1460 - MD5_OPTION_LEN


def test_signed_syn_with_timestamps_only_keeps_them() -> None:
    st = keyed_stack()
    syn = syn_with_options(seq=IRS, wscale=7, sack=False, ts=(peer_tsval(0), 0))
    st.receive(signed(syn), 0.0)
    synack = assert_signed(out(st)[0])
    assert synack.options.timestamps is not None
    (tcb,) = st.tcbs.values()
    assert tcb.ts_ok and tcb.seg_mss == 1460 - MD5_OPTION_LEN - 12


@pytest.mark.parametrize("flags", [SYN, ACK, RST, RST | ACK])
def test_unsigned_segments_from_a_keyed_peer_are_dropped_counted_unanswered(
        flags: int) -> None:
    """RFC 2385 2.0: "unsigned segments from a peer with a key MUST be discarded" --
    SYNs and RSTs too, and no RST goes back for them."""
    st = keyed_stack()
    seg = TcpSegment(REMOTE_PORT, 80, IRS, 5, flags, 1000)
    st.receive(emit_tcp(seg, ip(PEER), ip(US), 1), 0.0)
    assert out(st) == []
    assert st.counters["tcp_md5_missing"] == 1
    assert not st.tcbs


def _with_digest(pkt: bytearray, digest: bytes) -> bytearray:
    """``pkt`` (IPv4, 20-byte header, signature first) with another digest, its TCP
    checksum made right again."""
    out = bytearray(pkt)
    out[44:60] = digest
    out[36:38] = b"\0\0"
    total = ck.pseudo_header_ipv4(ip(PEER), ip(US), 6, len(out) - 20) + ck.partial(out[20:])
    struct.pack_into("!H", out, 36, ck.finish(total))
    return out


def test_wrongly_signed_segments_are_dropped_and_counted() -> None:
    """A wrong key, and a digest lifted from another segment (a replay with a new
    sequence number): both fail, with valid checksums."""
    st = keyed_stack()
    st.receive(signed(full_syn(), b"wrong key"), 0.0)
    lifted = signed(full_syn(seq=IRS + 1))[44:60]
    st.receive(_with_digest(signed(full_syn()), lifted), 0.0)
    assert st.counters["tcp_bad_checksum"] == 0
    assert out(st) == []
    assert st.counters["tcp_md5_failure"] == 2
    assert not st.tcbs


def test_signed_segment_from_a_peer_without_a_key_is_dropped() -> None:
    """As Linux (TCPMD5Unexpected): we did not agree to sign with this peer."""
    st = stack(US)
    st.listen(80)
    st.receive(signed(full_syn()), 0.0)
    assert out(st) == []
    assert st.counters["tcp_md5_unexpected"] == 1


def test_rst_to_a_keyed_peer_for_a_closed_port_is_signed() -> None:
    st = keyed_stack()
    st.receive(signed(TcpSegment(REMOTE_PORT, 81, IRS, 0, SYN, 1000)), 0.0)
    (pkt,) = out(st)
    rst = assert_signed(pkt)
    assert rst.flags == RST | ACK and rst.ack == seq_add(IRS, 1)


def test_forged_unsigned_rst_cannot_reset_a_signed_connection() -> None:
    """What RFC 2385 is for (1.0): a spoofed RST, even exactly in window, is dropped."""
    st = keyed_stack()
    w = Wire(st)
    st.receive(signed(full_syn()), 0.0)
    synack = assert_signed(out(st)[0])
    st.receive(signed(TcpSegment(REMOTE_PORT, 80, seq_add(IRS, 1), seq_add(synack.seq, 1),
                                 ACK, 1000)), 0.01)
    (tcb,) = st.tcbs.values()
    assert tcb.state is State.ESTABLISHED
    assert w.send(TcpSegment(REMOTE_PORT, 80, tcb.rcv_nxt, 0, RST, 0)) == []
    assert tcb.state is State.ESTABLISHED
    assert st.counters["tcp_md5_missing"] == 1


def test_active_open_signs_its_syn_and_offers_no_timestamps() -> None:
    """Our SYN, as Linux's with a key: MSS, SACK-permitted, window scale and the
    signature; no timestamps."""
    st = stack(US)
    st.set_md5_key("10.0.0.0/24", KEY)
    tcb = st.connect(PEER, 80, 0.0)
    (pkt,) = out(st)
    syn = assert_signed(pkt)
    assert syn.flags == SYN and syn.options.timestamps is None
    assert syn.options.sack_permitted and syn.options.wscale is not None
    assert tcb.md5


def test_cookie_syn_ack_is_signed_and_keeps_timestamps() -> None:
    """With cookies, the SYN,ACK keeps timestamps (they carry the cookie's window
    scale and SACK bits, as Linux): MSS, SACK, timestamps, window scale and the
    signature fill the 40 option bytes; the connection then sends no SACK blocks."""
    st = Stack(StackConfig(addresses=(ipaddress.IPv4Address(US),), syncookies="always",
                           md5_keys=((PEER, KEY),)))
    st.listen(80)
    st.receive(signed(full_syn()), 0.0)
    (pkt,) = out(st)
    synack = assert_signed(pkt)
    assert synack.options.timestamps is not None and synack.options.sack_permitted
    assert not st.tcbs
    ack = TcpSegment(REMOTE_PORT, 80, seq_add(IRS, 1), seq_add(synack.seq, 1), ACK, 1000,
                     TcpOptions(timestamps=(peer_tsval(0.01), synack.options.timestamps[0])))
    st.receive(signed(ack), 0.01)
    (tcb,) = st.tcbs.values()
    assert tcb.state is State.ESTABLISHED and tcb.md5 and tcb.ts_ok and tcb.sack_ok
    assert st.counters["tcp_syncookie_accepted"] == 1


def test_removing_the_key_makes_the_peer_unkeyed_again() -> None:
    st = keyed_stack()
    assert st.remove_md5_key(PEER) and not st.remove_md5_key(PEER)
    st.receive(emit_tcp(full_syn(), ip(PEER), ip(US), 1), 0.0)
    (pkt,) = out(st)
    assert parse(pkt).seg.flags == SYN | ACK and not parse(pkt).seg.options.md5


def _signed_pair(**tcp: object):  # type: ignore[no-untyped-def]
    cfg = TcpConfig(msl=1.0, rto_min=0.2, **tcp)  # type: ignore[arg-type]
    net = stack_pair(cfg, path=ImpairSpec(loss=3, seed=5))
    net.a.set_md5_key("10.0.0.2", KEY)
    net.b.set_md5_key("10.0.0.1", KEY)
    return net


def test_signed_transfer_through_loss_is_byte_exact_and_every_segment_signed() -> None:
    """Two stacks keyed for each other move data both ways through 3 % loss: every
    segment is signed (none dropped for its signature), SACK repairs the losses,
    and no segment exceeds the MSS less the signature."""
    net = _signed_pair()
    sizes: list[int] = []
    net.drop = lambda src, seg: (sizes.append(len(seg.payload)), False)[1]
    client, server = transfer(net, 300_000, 100_000)
    assert bytes(server.received) == client.data
    assert bytes(client.received) == server.data
    assert net.dropped >= 3
    for st in (net.a, net.b):
        for reason in ("tcp_md5_missing", "tcp_md5_failure", "tcp_md5_unexpected",
                       "internal_error"):
            assert st.counters[reason] == 0, reason
    assert max(sizes) == 1460 - MD5_OPTION_LEN


def test_a_signed_connection_does_not_use_tso() -> None:
    """Each segment on the wire needs its own digest: no super-segments for the
    device to cut, whatever tso_size says."""
    net = _signed_pair(tso_size=65000)
    sizes: list[int] = []
    net.drop = lambda src, seg: (sizes.append(len(seg.payload)), False)[1]
    client, server = transfer(net, 200_000, 0)
    assert bytes(server.received) == client.data
    assert max(sizes) <= 1460 - MD5_OPTION_LEN


def test_sack_blocks_beside_a_signature_are_at_most_two() -> None:
    net = _signed_pair()
    most = 0

    def watch(src: object, seg: TcpSegment) -> bool:
        nonlocal most
        most = max(most, len(seg.options.sack_blocks))
        return False

    net.set_path(ImpairSpec(loss=15, seed=11))
    net.drop = watch
    client, server = transfer(net, 300_000, 0)
    assert bytes(server.received) == client.data
    assert most == 2


# ------------------------------------------------------------------ visibility


def test_ladder_marks_signed_segments_and_the_negotiated_signature() -> None:
    """--trace-handshakes: every arrow of a signed opening says so, the summary tells
    where the 20 option bytes went; an unsigned SYN from the keyed peer is drawn
    dropped, with its reason."""
    from tcpstack.observe.core import Observatory
    from tcpstack.observe.ladder import render_text
    st = keyed_stack()
    obs = Observatory(st, packets=True)
    obs.enable_ladders()
    seen: list[dict[str, object]] = []
    obs.on_ladder.append(seen.append)
    obs.attach()
    st.receive(signed(full_syn()), 1.0)
    synack = assert_signed(out(st, 1.0)[0])
    st.receive(signed(TcpSegment(REMOTE_PORT, 80, seq_add(IRS, 1), seq_add(synack.seq, 1),
                                 ACK, 1000)), 1.002)
    out(st, 1.002)
    (doc,) = [d for d in seen if d["phase"] == "opening"]
    assert [e["options"].get("md5") for e in doc["events"]] == [True, True, True]  # type: ignore[union-attr,index]
    assert doc["negotiated"]["md5"] is True  # type: ignore[index]
    text = render_text(doc)  # type: ignore[arg-type]
    assert "md5 signed" in text and "20 bytes go to the MD5 signature" in text
    assert "TCP-MD5 signed (RFC 2385)" in text
    seen.clear()
    st.receive(emit_tcp(full_syn(port=40001), ip(PEER), ip(US), 1), 2.0)
    assert out(st, 2.0) == []
    (doc,) = seen
    assert doc["outcome"] == "refused"
    assert "no TCP-MD5 signature" in str(doc["why"])
    assert "no TCP-MD5 signature" in render_text(doc)  # type: ignore[arg-type]


def test_connection_table_row_shows_the_signature() -> None:
    from tcpstack.observe.table import render_rows, rows
    st = keyed_stack()
    st.receive(signed(full_syn()), 0.0)
    out(st)
    (row,) = rows(st, None, 0.0)
    assert row["md5"] is True and row["sack"] is True and row["ts"] is False
    assert " md5 " in render_rows([row], info=True)


def test_keys_set_and_removed_while_connections_are_open_apply_to_them() -> None:
    """As a Linux socket whose TCP_MD5SIG key changes, open connections start (and
    stop) signing with their next segment, their segments shrinking (and growing)
    by the option's 20 bytes; the transfer carries on, nothing dropped."""
    net = stack_pair(TcpConfig(msl=1.0, rto_min=0.2))
    net.b.listen(80)
    client = net.a.connect("10.0.0.2", 80, net.now)
    net.run(until=lambda: client.state is State.ESTABLISHED)
    (server,) = net.b.tcbs.values()
    signed_sizes: list[int] = []
    unsigned_sizes: list[int] = []

    def watch(src: object, seg: TcpSegment) -> bool:
        (signed_sizes if seg.options.md5 else unsigned_sizes).append(len(seg.payload))
        return False

    net.drop = watch
    data = bytes(range(256)) * 1000
    got = bytearray()
    net.a.set_md5_key("10.0.0.2", KEY)
    net.b.set_md5_key("10.0.0.1", KEY)
    assert client.md5 and server.md5
    client.send(data)
    net.run(lambda: got.extend(server.recv()), until=lambda: len(got) >= len(data))
    assert bytes(got) == data
    assert max(signed_sizes) == server.snd_mss - MD5_OPTION_LEN - (12 if client.ts_ok else 0)
    assert not unsigned_sizes
    assert net.a.remove_md5_key("10.0.0.2") and net.b.remove_md5_key("10.0.0.1")
    assert not client.md5 and not server.md5
    got.clear()
    client.send(data)
    net.run(lambda: got.extend(server.recv()), until=lambda: len(got) >= len(data))
    assert bytes(got) == data and unsigned_sizes
    for st in (net.a, net.b):
        assert st.counters["tcp_md5_missing"] == st.counters["tcp_md5_unexpected"] == 0


def test_ipv4_mapped_prefixes_mean_their_ipv4_prefix() -> None:
    keys = Md5Keys([("::ffff:10.1.0.0/112", b"k")])
    assert keys.lookup(ip("10.1.3.4")) == b"k" and keys.peers() == ["10.1.0.0/16"]


def test_keys_stay_out_of_the_configurations_repr() -> None:
    config = StackConfig(md5_keys=((PEER, b"topsecret"),))
    assert "topsecret" not in repr(config)
    st = Stack(config)
    assert st.md5_peers() == [PEER] and "topsecret" not in repr(st.md5_peers())
