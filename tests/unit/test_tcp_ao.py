"""TCP-AO (RFC 5925, RFC 5926): every RFC 9235 test vector (traffic keys and MACs,
both algorithms, options covered or not, IPv4 and IPv6), the sequence number
extension across a wrap, and two stacks talking TCP-AO: transfers through loss,
refusals counted by reason, key rollover by RNextKeyID, SYN cookies."""

from __future__ import annotations

import ipaddress

import pytest
from tcp_helpers import opening_ladder, stack_pair
from tcpao_vectors import CLIENT_KEYID, MASTER_KEY, SCENARIOS, SERVER_KEYID, Scenario
from test_stack_end_to_end import transfer

from tcpstack.link.impair import ImpairSpec
from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp.aokeys import AoConn, AoKeys, Mkt, _extension
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.state import State
from tcpstack.wire import tcpao
from tcpstack.wire.tcp import ACK, SYN, TcpSegment, parse_tcp

CLIENT4, SERVER4 = "10.11.12.13", "172.27.28.29"
CLIENT6, SERVER6 = "fd00::1", "fd00::2"


def _split(hexdump: str) -> tuple[int, int, bytes]:
    b = bytes.fromhex(hexdump)
    if b[0] >> 4 == 4:
        ihl = (b[0] & 15) * 4
        return int.from_bytes(b[12:16], "big"), int.from_bytes(b[16:20], "big"), b[ihl:]
    return int.from_bytes(b[8:24], "big"), int.from_bytes(b[24:40], "big"), b[40:]


CASES = [pytest.param(sc, i, id=f"{sc.section}-{i}-{p.sender}")
         for sc in SCENARIOS for i, p in enumerate(sc.packets)]


@pytest.mark.parametrize(("sc", "index"), CASES)
def test_rfc9235_traffic_key_and_mac(sc: Scenario, index: int) -> None:
    """RFC 5926 3.1 (KDFs) and 3.2 (MACs) over RFC 5925 5.1's message, SNE 0."""
    packet = sc.packets[index]
    src, dst, tcp = _split(packet.hexdump)
    sport, dport = int.from_bytes(tcp[:2], "big"), int.from_bytes(tcp[2:4], "big")
    flags = tcp[13]
    own, other = (sc.client_isn, sc.server_isn) if packet.sender == "client" else \
        (sc.server_isn, sc.client_isn)
    if flags & (SYN | ACK) == SYN:
        other = 0  # a SYN's key: the destination ISN is zero (RFC 5925 5.2)
    key = tcpao.traffic_key(sc.algorithm, MASTER_KEY,
                            tcpao.context(src, dst, sport, dport, own, other))
    assert key.hex() == packet.traffic_key
    message = tcpao.mac_input(src, dst, 0, tcp, sc.include_options)
    assert tcpao.mac(sc.algorithm, key, message).hex() == packet.mac
    at = tcpao.find_option(tcp)
    assert tcp[at + 2] == (CLIENT_KEYID if packet.sender == "client" else SERVER_KEYID)


@pytest.mark.parametrize(("sc", "index"), CASES)
def test_rfc9235_segments_pass_the_receivers_check(sc: Scenario, index: int) -> None:
    """The receiving side's state (AoConn.verify) accepts each vector segment, and
    refuses it with one bit of its data or header changed."""
    packet = sc.packets[index]
    src, dst, tcp = _split(packet.hexdump)
    ipv6 = src > 0xFFFFFFFF
    client, server = (CLIENT6, SERVER6) if ipv6 else (CLIENT4, SERVER4)
    sender_is_client = packet.sender == "client"
    peer = client if sender_is_client else server
    send_id, recv_id = (SERVER_KEYID, CLIENT_KEYID) if sender_is_client else \
        (CLIENT_KEYID, SERVER_KEYID)
    mkt = Mkt.make(peer, send_id, recv_id, MASTER_KEY, sc.algorithm, sc.include_options)
    sport, dport = int.from_bytes(tcp[:2], "big"), int.from_bytes(tcp[2:4], "big")
    conn = AoConn((mkt,), (dst, dport), (src, sport))
    seg = parse_tcp(tcp, src, dst, verify_checksum=False)  # (captured with offloads)
    own, theirs = (sc.server_isn, sc.client_isn) if sender_is_client else \
        (sc.client_isn, sc.server_isn)
    assert conn.verify(src, dst, memoryview(tcp), seg, own, theirs) is None
    damaged = bytearray(tcp)
    damaged[-1] ^= 0x01 if len(tcp) > (tcp[12] >> 4) * 4 else 0
    damaged[5] ^= 0x01  # the sequence number
    bad = AoConn((mkt,), (dst, dport), (src, sport))
    assert bad.verify(src, dst, memoryview(damaged), seg, own, theirs) == "tcp_ao_failure"


def test_aes_cmac_matches_rfc4493() -> None:
    """RFC 4493 4's examples (the empty message and 40 bytes)."""
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    assert tcpao.aes_cmac(key, b"").hex() == "bb1d6929e95937287fa37d129b756746"
    msg = bytes.fromhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
                        "30c81c46a35ce411")
    assert tcpao.aes_cmac(key, msg).hex() == "dfa66747de9ae63030ca32611497c827"


def test_sequence_number_extension_counts_wraps_and_places_old_segments() -> None:
    """RFC 5925 6.2: the SNE grows when the sequence numbers wrap; a segment from
    before the wrap, arriving after it, still gets the old SNE."""
    sne, high, cur = _extension(0xFFFFFF00, 0, 0xFFFFFFF0)
    assert (sne, high, cur) == (0, 0xFFFFFFF0, 0)
    sne, high, cur = _extension(high, cur, 0x10)  # past the wrap
    assert (sne, high, cur) == (1, 0x10, 1)
    assert _extension(high, cur, 0xFFFFFFF8)[0] == 0  # a retransmission from before
    assert _extension(high, cur, 0x08)[0] == 1


def test_the_same_sequence_number_2_32_bytes_later_gets_another_mac() -> None:
    """The SNE is in the MAC (RFC 5925 6.2): a segment replayed from 4 GiB earlier,
    the same 32-bit sequence number, does not verify."""
    a, b = int(ipaddress.IPv4Address("10.0.0.1")), int(ipaddress.IPv4Address("10.0.0.2"))
    sender = AoConn((Mkt.make("10.0.0.2", 1, 1, b"k"),), (a, 1000), (b, 80))
    iss, seq = 0xFFFFFE00, 0xFFFFFF00
    first = sender.signing(ACK, seq, iss, 77)
    for later in (0x100, 0x7FFF0000, 0xC0000000):  # on past the wrap, and further
        sender.signing(ACK, later, iss, 77)
    again = sender.signing(ACK, seq, iss, 77)  # 2**32 bytes after the first
    assert (first[4], again[4]) == (0, 1)
    segment = bytes.fromhex("03e80050ffffff0000000000a0100100000000001d10010100000000"
                            "0000000000000000")
    macs = {tcpao.mac(s[2], s[3], tcpao.mac_input(a, b, s[4], segment, True))
            for s in (first, again)}
    assert len(macs) == 2


def test_mkts_need_distinct_ids_and_sane_values() -> None:
    keys = AoKeys([Mkt.make("10.0.0.1", 1, 1, b"s3cr3t-ao")])
    with pytest.raises(ValueError, match="RecvID 1"):
        keys.add(Mkt.make("10.0.0.1", 2, 1, b"k"))
    with pytest.raises(ValueError, match="SendID"):
        Mkt.make("10.0.0.1", 256, 1, b"k")
    with pytest.raises(ValueError, match="algorithm"):
        Mkt.make("10.0.0.1", 1, 1, b"k", "md5")
    keys.add(Mkt.make("10.0.0.0/8", 7, 7, b"wide"))
    assert [m.send_id for m in keys.for_peer(int(ipaddress.IPv4Address("10.0.0.1")))] == [1]
    assert [m.send_id for m in keys.for_peer(int(ipaddress.IPv4Address("10.9.0.1")))] == [7]
    assert "s3cr3t" not in repr(keys.for_peer(int(ipaddress.IPv4Address("10.0.0.1"))))


# ------------------------------------------------------------------ two stacks


def _pair(alg: str = "hmac-sha1", include: bool = True, loss: float = 3,
          **tcp: object):  # type: ignore[no-untyped-def]
    cfg = TcpConfig(msl=1.0, rto_min=0.2, **tcp)  # type: ignore[arg-type]
    net = stack_pair(cfg, path=ImpairSpec(loss=loss, seed=9))
    net.a.add_ao_key("10.0.0.2", 1, 2, b"a shared secret", alg, include)
    net.b.add_ao_key("10.0.0.1", 2, 1, b"a shared secret", alg, include)
    return net


@pytest.mark.parametrize(("alg", "include"), [("hmac-sha1", True), ("aes-128-cmac", False)])
def test_two_stacks_transfer_through_loss_with_every_segment_authenticated(
        alg: str, include: bool) -> None:
    net = _pair(alg, include)
    unauthenticated = []
    sizes = []

    def watch(src: object, seg: TcpSegment) -> bool:
        if seg.options.ao is None:
            unauthenticated.append(seg)
        sizes.append(len(seg.payload))
        return False

    net.drop = watch
    client, server = transfer(net, 200_000, 50_000)
    assert bytes(server.received) == client.data and bytes(client.received) == server.data
    assert net.dropped >= 2 and not unauthenticated
    for st in (net.a, net.b):
        assert not {k: v for k, v in st.counters.items() if k.startswith("tcp_ao_") and v}
    assert max(sizes) == 1460 - tcpao.OPTION_LEN - 12  # timestamps stay beside TCP-AO


@pytest.mark.parametrize(("setup", "reason"), [
    ("wrong key", "tcp_ao_failure"),
    ("no key at a", "tcp_ao_missing"),
    ("no key at b", "tcp_ao_unexpected"),
    ("other ids", "tcp_ao_key_not_found"),
])
def test_mismatched_keys_refuse_the_connection_counted(setup: str, reason: str) -> None:
    net = stack_pair(TcpConfig(syn_retries=2, rto_initial=0.2, rto_min=0.2))
    if setup == "wrong key":
        net.a.add_ao_key("10.0.0.2", 1, 1, b"one key")
        net.b.add_ao_key("10.0.0.1", 1, 1, b"another")
    elif setup == "no key at a":
        net.b.add_ao_key("10.0.0.1", 1, 1, b"k")
    elif setup == "no key at b":
        net.a.add_ao_key("10.0.0.2", 1, 1, b"k")
    else:
        net.a.add_ao_key("10.0.0.2", 1, 1, b"k")
        net.b.add_ao_key("10.0.0.1", 5, 5, b"k")
    net.b.listen(80)
    tcb = net.a.connect("10.0.0.2", 80, net.now)
    net.run(max_time=10.0)
    assert tcb.state is State.CLOSED and not net.b.tcbs
    assert net.b.counters[reason] >= 1
    assert net.b.counters["tcp_rst_sent"] == 0


def test_key_rollover_follows_the_peers_rnextkeyid() -> None:
    """RFC 5925 7.5.2: each side asks for the key it wants with RNextKeyID; the other
    switches its sending MKT; the old MKT can then go, the connection carrying on."""
    net = stack_pair(TcpConfig(msl=1.0))
    for st, peer in ((net.a, "10.0.0.2"), (net.b, "10.0.0.1")):
        st.add_ao_key(peer, 1, 1, b"old key")
        st.add_ao_key(peer, 2, 2, b"new key")
    net.b.listen(80)
    client = net.a.connect("10.0.0.2", 80, net.now)
    net.run(until=lambda: client.state is State.ESTABLISHED)
    (server,) = net.b.tcbs.values()
    keyids: list[tuple[object, int]] = []

    def watch(src: object, seg: TcpSegment) -> bool:
        assert seg.options.ao is not None
        keyids.append((src, seg.options.ao[0]))
        return False

    net.drop = watch
    assert net.a.ao_prefer("10.0.0.2", 2) == 1 and net.b.ao_prefer("10.0.0.1", 2) == 1
    got = bytearray()
    client.send(b"x" * 50_000)
    net.run(lambda: got.extend(server.recv()), until=lambda: len(got) >= 50_000)
    assert keyids[-1][1] == 2 and {k for s, k in keyids[-4:]} == {2}
    assert net.a.remove_ao_key("10.0.0.2", 1) and net.b.remove_ao_key("10.0.0.1", 1)
    got.clear()
    server.send(b"y" * 30_000)
    net.run(lambda: got.extend(client.recv()), until=lambda: len(got) >= 30_000)
    assert bytes(got) == b"y" * 30_000
    for st in (net.a, net.b):
        assert not {k: v for k, v in st.counters.items() if k.startswith("tcp_ao_") and v}


def test_syn_cookies_work_with_tcp_ao() -> None:
    """The stateless SYN,ACK is signed with the cookie as ISN; the ACK is checked with
    the ISNs its numbers imply, then the connection is rebuilt."""
    net = stack_pair(TcpConfig(msl=1.0))
    net.b = Stack(StackConfig(addresses=(ipaddress.IPv4Address("10.0.0.2"),),
                              syncookies="always", tcp=TcpConfig(msl=1.0)))
    net.a.add_ao_key("10.0.0.2", 3, 4, b"k", "aes-128-cmac")
    net.b.add_ao_key("10.0.0.1", 4, 3, b"k", "aes-128-cmac")
    client, server = transfer(net, 30_000, 10_000)
    assert bytes(server.received) == client.data
    assert net.b.counters["tcp_syncookie_accepted"] == 1
    for st in (net.a, net.b):
        assert not {k: v for k, v in st.counters.items() if k.startswith("tcp_ao_") and v}


def test_ladder_table_and_tcp_info_show_tcp_ao_never_the_key() -> None:
    from tcpstack.observe.ladder import render_json, render_text
    from tcpstack.observe.table import render_rows, rows
    from tcpstack.tcp.info import tcp_info
    net = stack_pair(TcpConfig(msl=1.0))
    net.a.add_ao_key("10.0.0.2", 1, 2, b"ladder-secret")
    net.b.add_ao_key("10.0.0.1", 2, 1, b"ladder-secret")
    doc, client = opening_ladder(net)
    text = render_text(doc)  # type: ignore[arg-type]
    assert "TCP-AO keyid 1 rnext 2" in text  # the client's SYN, as it arrived
    assert "TCP-AO (RFC 5925) hmac-sha1, sending with key 2, asking for 1" in text
    assert "16 bytes go to TCP-AO" in text
    assert "ladder-secret" not in text and "ladder-secret" not in render_json(doc)  # type: ignore[arg-type]
    (row,) = rows(net.b, None, net.now)
    assert " ao:2/1 " in render_rows([row], info=True)
    info = tcp_info(client)
    assert info["ao"] == {"keyid": 1, "rnext": 2, "algorithm": "hmac-sha1",
                          "options_covered": True}
    assert "ladder-secret" not in repr(info)


def _connected(net):  # type: ignore[no-untyped-def]
    net.b.listen(80)
    client = net.a.connect("10.0.0.2", 80, net.now)
    net.run(until=lambda: client.state is State.ESTABLISHED and bool(net.b.tcbs))
    (server,) = net.b.tcbs.values()
    return client, server


def _forge(net, server, payload: bytes = b"EVIL") -> None:  # type: ignore[no-untyped-def]
    """An unsigned data segment exactly in the server's window, from the client's
    address and port."""
    from tcpstack.wire.tcp import emit_tcp
    seg = TcpSegment(server.remote_port, 80, server.rcv_nxt, server.snd_nxt, ACK, 1000,
                     payload=payload)
    net.b.receive(emit_tcp(seg, int(ipaddress.IPv4Address("10.0.0.1")),
                           int(ipaddress.IPv4Address("10.0.0.2")), 1), net.now)


def test_a_tcp_ao_connection_outlives_its_peers_mkts() -> None:
    """RFC 5925: TCP-AO cannot be dropped mid-connection. With every MKT of the
    peer removed, the connection goes on with the tuple it had, still refusing
    unsigned segments."""
    net = stack_pair(TcpConfig(msl=1.0))
    net.a.add_ao_key("10.0.0.2", 1, 2, b"k")
    net.b.add_ao_key("10.0.0.1", 2, 1, b"k")
    client, server = _connected(net)
    assert net.a.remove_ao_key("10.0.0.2", 1) and net.b.remove_ao_key("10.0.0.1", 2)
    _forge(net, server)
    assert net.b.counters["tcp_ao_missing"] == 1 and server.recv() == b""
    got = bytearray()
    client.send(b"z" * 20_000)
    net.run(lambda: got.extend(server.recv()), until=lambda: len(got) >= 20_000)
    assert bytes(got) == b"z" * 20_000


def test_a_tcp_md5_connection_stays_md5_when_the_peer_gets_an_mkt() -> None:
    """The mode is the connection's: an MKT added for a peer with an open TCP-MD5
    connection applies to its next connections; this one keeps its signatures."""
    net = stack_pair(TcpConfig(msl=1.0))
    net.a.set_md5_key("10.0.0.2", b"md5 key")
    net.b.set_md5_key("10.0.0.1", b"md5 key")
    client, server = _connected(net)
    net.a.add_ao_key("10.0.0.2", 1, 2, b"k")
    net.b.add_ao_key("10.0.0.1", 2, 1, b"k")
    net.b.set_md5_key("10.0.0.1", b"md5 key")  # re-setting the key changes nothing
    assert client.md5 and server.md5 and client.auth is None
    _forge(net, server)
    assert net.b.counters["tcp_md5_missing"] == 1
    got = bytearray()
    client.send(b"m" * 20_000)
    net.run(lambda: got.extend(server.recv()), until=lambda: len(got) >= 20_000)
    assert bytes(got) == b"m" * 20_000
    for st in (net.a, net.b):
        assert st.counters["tcp_ao_with_md5"] == st.counters["tcp_md5_failure"] == 0


def test_a_segment_with_two_tcp_ao_options_is_malformed() -> None:
    from tcpstack.wire.errors import Malformed
    from tcpstack.wire.tcp import parse_options
    one = bytes((29, 16, 1, 1)) + bytes(12)
    with pytest.raises(Malformed, match="tcp_ao_duplicate"):
        parse_options(memoryview(one + one))
    assert parse_options(memoryview(one)).ao == (1, 1)
