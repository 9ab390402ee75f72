"""SYN cookies (RFC 4987 3.6), listen queues and the stack's connection limits."""

from __future__ import annotations

import ipaddress
import random

import pytest
from tcp_helpers import IRS, Wire, packet, parse, pattern, stack_pair

from tcpstack.stack import SYN_DEFERRED_BATCHES, Stack, StackConfig
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.seq import seq_add
from tcpstack.tcp.state import State
from tcpstack.tcp.syncookies import (
    MSS_TABLE,
    TICK_SECONDS,
    SynCookies,
    decode_ts_options,
    encode_ts_options,
    mss_index,
)
from tcpstack.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpOptions, TcpSegment

SECRET = bytes(range(32))
TUPLE = (0x0A000002, 80, 0x0A000001, 40000)
PEER = 0x0A000001


def server(**config: object) -> Stack:
    cfg = StackConfig(addresses=(ipaddress.IPv4Address("10.0.0.2"),), **config)
    return Stack(cfg, isn_secret=b"server secret 16", rng=random.Random(5))


def syn(port: int = 40000, *, seq: int = IRS, ts: bool = True, wscale: int | None = 7,
        sack: bool = True, mss: int = 1460) -> TcpSegment:
    return TcpSegment(port, 80, seq, 0, SYN, 64240, TcpOptions(
        mss=mss, wscale=wscale, sack_permitted=sack, timestamps=(1000, 0) if ts else None))


# ------------------------------------------------------------------- cookies


def test_cookie_checks_for_the_syn_it_was_made_for() -> None:
    c = SynCookies(SECRET)
    cookie = c.make(*TUPLE, IRS, 1460, 100.0)
    assert c.check(*TUPLE, IRS, cookie, 100.0) == 1460
    assert c.check(*TUPLE, IRS, cookie, 100.0 + TICK_SECONDS) == 1460  # next tick: valid
    assert c.check(*TUPLE, IRS + 1, cookie, 100.0) is None  # another SYN
    assert c.check(TUPLE[0], 80, PEER, 40001, IRS, cookie, 100.0) is None  # another port
    assert c.check(*TUPLE, IRS, cookie ^ 1, 100.0) is None  # tampered
    assert c.check(*TUPLE, IRS, cookie, 100.0 + 3 * TICK_SECONDS) is None  # expired
    assert SynCookies(bytes(32)).check(*TUPLE, IRS, cookie, 100.0) is None  # other secret


def test_a_cookie_from_before_the_clocks_first_tick_is_refused_not_raised() -> None:
    # Found by tests/fuzz/test_stack_fuzz.py: within the first tick (a clock that
    # starts at 0, or a machine booted less than a minute ago) the previous tick is
    # -1, and a cookie naming tick 31 made the MAC computation raise.
    c = SynCookies(SECRET)
    for cookie in (0xF8000000, 0xFFFFFFFF, 0xF9234567):  # tick bits 31
        assert c.check(*TUPLE, IRS, cookie, 10.0) is None


def test_cookie_carries_the_largest_table_mss_not_above_the_peers() -> None:
    c = SynCookies(SECRET)
    for peer_mss, expect in ((9000, 1460), (1460, 1460), (1450, 1440), (1000, 536), (100, 216)):
        assert c.check(*TUPLE, IRS, c.make(*TUPLE, IRS, peer_mss, 5.0), 5.0) == expect
    assert MSS_TABLE[mss_index(1359)] == 1300
    # The fast path for the top entry agrees with the table, at and around it.
    assert mss_index(MSS_TABLE[-1]) == len(MSS_TABLE) - 1
    assert mss_index(MSS_TABLE[-1] - 1) == len(MSS_TABLE) - 2
    for mss in range(0, 9001, 7):
        best = max((i for i, m in enumerate(MSS_TABLE) if m <= mss), default=0)
        assert mss_index(mss) == best, mss


@pytest.mark.parametrize(("wscale", "sack"), [(None, False), (0, True), (7, False), (14, True)])
def test_timestamp_carries_window_scale_and_sack(wscale: int | None, sack: bool) -> None:
    for tsval in (0, 63, 64, 1_000_000, 0xFFFFFFFF):
        enc = encode_ts_options(tsval, wscale, sack)
        assert decode_ts_options(enc) == (wscale, sack)
        assert ((tsval - enc) & 0xFFFFFFFF) < 64  # never ahead, at most 63 ms behind


# ------------------------------------------------------- through the stack


def _handshake_with_cookie(st: Stack, client_syn: TcpSegment, payload: bytes = b"") -> Wire:
    w = Wire(st)
    before = len(st.tcbs)
    (synack,) = w.send(client_syn)
    assert synack.flags == SYN | ACK and len(st.tcbs) == before  # stateless
    ts = synack.options.timestamps
    opts = TcpOptions(timestamps=(2000, ts[0])) if ts else TcpOptions()
    w.send(TcpSegment(client_syn.src_port, 80, seq_add(client_syn.seq, 1),
                      seq_add(synack.seq, 1), ACK | (PSH if payload else 0), 502, opts,
                      payload), 0.1)
    return w


def test_cookie_connection_is_established_with_the_options_the_syn_offered() -> None:
    st = server(syncookies="always")
    st.listen(80)
    w = _handshake_with_cookie(st, syn(), b"GET / HTTP/1.0\r\n\r\n")
    (tcb,) = st.tcbs.values()
    assert tcb.state is State.ESTABLISHED
    assert tcb.snd_mss == 1460 and tcb.ts_ok and tcb.sack_ok
    assert tcb.wscale_ok and tcb.snd_wscale == 7
    assert tcb.snd_wnd == 502 << 7
    assert tcb.recv() == b"GET / HTTP/1.0\r\n\r\n"
    assert st.counters["tcp_syncookie_sent"] == 1
    assert st.counters["tcp_syncookie_accepted"] == 1
    assert st.listeners[80].half_open == 0
    del w


def test_cookie_without_timestamps_offers_neither_window_scale_nor_sack() -> None:
    """Without timestamps they cannot travel back (RFC 4987 3.6; Linux clears them)."""
    st = server(syncookies="always")
    st.listen(80)
    w = Wire(st)
    (synack,) = w.send(syn(ts=False))
    assert synack.options.wscale is None and not synack.options.sack_permitted
    w.send(TcpSegment(40000, 80, IRS + 1, seq_add(synack.seq, 1), ACK, 64240), 0.1)
    (tcb,) = st.tcbs.values()
    assert tcb.state is State.ESTABLISHED
    assert not (tcb.ts_ok or tcb.sack_ok or tcb.wscale_ok)


def test_ack_with_a_wrong_cookie_draws_rst_and_is_counted() -> None:
    st = server(syncookies="always")
    st.listen(80)
    w = Wire(st)
    (synack,) = w.send(syn())
    (rst,) = w.send(TcpSegment(40000, 80, IRS + 1, seq_add(synack.seq, 2), ACK, 64240), 0.1)
    assert rst.flags == RST and not st.tcbs
    assert st.counters["tcp_syncookie_invalid"] == 1


def test_syn_queue_overflow_falls_back_to_cookies_and_a_client_still_connects() -> None:
    """A spoofed SYN flood fills the SYN queue; further SYNs get cookies, so a real
    client still connects, and the queue never grows past its bound."""
    st = server()
    st.listen(80, backlog=16, syn_backlog=32)
    w = Wire(st)
    rng = random.Random(9)
    for i in range(2000):
        src = int(ipaddress.IPv4Address("10.9.0.0")) + rng.randrange(1, 60000)
        w.peer_ip = src
        w.send(syn(port=1024 + i % 50000, seq=rng.randrange(1 << 32)), i * 1e-3)
    assert st.listeners[80].half_open == 32
    assert len(st.tcbs) == 32
    assert st.counters["tcp_syncookie_sent"] > 1000
    w.peer_ip = PEER
    _handshake_with_cookie(st, syn(port=55555), b"hello")
    real = [t for t in st.tcbs.values() if t.remote_port == 55555]
    assert real and real[0].state is State.ESTABLISHED and real[0].recv() == b"hello"


def test_cookie_connection_carries_data_both_ways_between_two_stacks() -> None:
    """Interop with a real engine as the client: the cookie-made connection moves a
    megabyte each way byte-exact with window scaling, SACK and timestamps."""
    net = stack_pair(TcpConfig(delayed_ack=0.0))
    net.b = server(syncookies="always", tcp=TcpConfig(delayed_ack=0.0))
    net.b.listen(80)
    client = net.a.connect("10.0.0.2", 80, 0.0)
    net.run(until=lambda: client.state is State.ESTABLISHED and len(net.b.tcbs) == 1)
    (srv,) = net.b.tcbs.values()
    assert srv.sack_ok and srv.ts_ok and srv.wscale_ok
    up, down = pattern(1_000_000, 1), pattern(1_000_000, 2)
    got_up, got_down = bytearray(), bytearray()
    client.send(up)
    srv.send(down)

    def app() -> None:
        got_up.extend(srv.recv())
        got_down.extend(client.recv())

    net.run(app, until=lambda: len(got_up) == len(up) and len(got_down) == len(down))
    assert bytes(got_up) == up and bytes(got_down) == down


# ----------------------------------------------------------------- limits


def test_syn_budget_per_batch_leaves_the_rest_of_the_batch_to_established_connections() -> None:
    st = server(syn_batch_limit=4)
    st.listen(80)
    for i in range(10):
        st.receive(_packet(syn(port=2000 + i)), 0.0)
    assert len(st.tcbs) == 4
    assert st.counters["tcp_syn_deferred"] == 6  # set aside, not dropped
    assert st.counters["tcp_syn_batch_limit"] == 0
    assert len(st.packets_to_send(0.0)) == 4  # the batch ends: four SYN,ACKs
    deadline = st.next_deadline()
    assert deadline is not None and deadline <= 0.001  # the rest asks for a round at once
    st.handle_timer(0.001)  # the next round: another budget's worth, oldest first
    assert sorted(t.remote_port for t in st.tcbs.values()) == list(range(2000, 2008))
    assert len(st.packets_to_send(0.001)) == 4
    st.handle_timer(0.002)
    assert len(st.tcbs) == 10
    assert len(st.packets_to_send(0.002)) == 2
    deadline = st.next_deadline()
    assert deadline is not None and deadline > 0.5  # only the SYN,ACK timers are left


def test_syns_beyond_what_may_wait_are_dropped_and_counted() -> None:
    st = server(syn_batch_limit=2)
    st.listen(80)
    for i in range(20):
        st.receive(_packet(syn(port=2000 + i)), 0.0)
    assert len(st.tcbs) == 2
    waiting = SYN_DEFERRED_BATCHES * 2
    assert st.counters["tcp_syn_deferred"] == waiting
    assert st.counters["tcp_syn_batch_limit"] == 20 - 2 - waiting
    for r in range(1, SYN_DEFERRED_BATCHES + 2):
        st.packets_to_send(r / 1000)
        st.handle_timer(r / 1000)
    assert len(st.tcbs) == 2 + waiting


def test_acks_at_a_listener_do_not_spend_the_syn_budget() -> None:
    # Only what opens a connection spends it: a flood of stray ACKs (each drawing a
    # RST) must not leave a legitimate SYN in the same batch waiting.
    st = server(syn_batch_limit=2)
    st.listen(80)
    for i in range(10):
        st.receive(_packet(TcpSegment(3000 + i, 80, IRS, 12345, ACK, 1000)), 0.0)
    st.receive(_packet(syn(port=2000)), 0.0)
    assert st.counters["tcp_listen_ack_reset"] == 10
    assert st.counters["tcp_syn_deferred"] == 0
    assert len(st.tcbs) == 1


def test_a_valid_cookie_ack_beyond_the_budget_waits_and_then_connects() -> None:
    st = server(syncookies="always", syn_batch_limit=1)
    st.listen(80)
    cookies = {}
    for port in (2000, 2001):  # one SYN per batch: both answered with cookies
        st.receive(_packet(syn(port=port, ts=False)), 0.0)
        (synack,) = (_parse(p) for p in st.packets_to_send(0.0))
        cookies[port] = synack.seq
    for port, cookie in cookies.items():  # both ACKs in one batch
        st.receive(_packet(TcpSegment(port, 80, IRS + 1, seq_add(cookie, 1), ACK, 64240)), 0.1)
    assert len(st.tcbs) == 1 and st.counters["tcp_syn_deferred"] == 1
    st.packets_to_send(0.1)
    st.handle_timer(0.1)
    assert sorted(t.remote_port for t in st.tcbs.values()) == [2000, 2001]
    assert all(t.state is State.ESTABLISHED for t in st.tcbs.values())
    assert st.counters["tcp_syncookie_accepted"] == 2


def test_a_connections_reply_goes_out_before_the_cookie_syn_acks_of_its_batch() -> None:
    """Under a flood the answers to packets of no connection are most of a batch: an
    established connection's reply is written first, not behind them."""
    st = server(syncookies="always", tcp=TcpConfig(delayed_ack=0.0))  # ACK data at once
    st.listen(80)
    st.receive(_packet(syn(port=2000, ts=False)), 0.0)
    (synack,) = (_parse(p) for p in st.packets_to_send(0.0))
    st.receive(_packet(TcpSegment(2000, 80, IRS + 1, seq_add(synack.seq, 1), ACK, 64240)), 0.1)
    st.packets_to_send(0.1)
    (tcb,) = st.tcbs.values()
    assert tcb.state is State.ESTABLISHED
    for i in range(10):  # the flood first, then the connection's data, in one batch
        st.receive(_packet(syn(port=3000 + i)), 0.2)
    st.receive(_packet(TcpSegment(2000, 80, IRS + 1, seq_add(synack.seq, 1), ACK | PSH,
                                  64240, payload=b"GET / HTTP/1.0\r\n\r\n")), 0.2)
    out = [_parse(p) for p in st.packets_to_send(0.2)]
    assert [seg.flags & (SYN | ACK) for seg in out] == [ACK] + [SYN | ACK] * 10
    assert out[0].dst_port == 2000 and out[0].ack == IRS + 1 + 18


def test_connections_beyond_the_limit_are_refused_and_counted() -> None:
    st = server(max_connections=3)
    st.listen(80)
    w = Wire(st)
    for i in range(5):
        w.send(syn(port=2000 + i))
    assert len(st.tcbs) == 3
    assert st.counters["tcp_max_connections"] == 2


def test_accept_queue_full_drops_syns_until_the_owner_takes_connections() -> None:
    """Established passive connections wait in the accept queue (``backlog``) until the
    owner takes their Established event; while it is full, SYNs are dropped (Linux)."""
    st = server()
    st.listen(80, backlog=2)
    for i in range(2):
        st.receive(_packet(syn(port=2000 + i, ts=False)), 0.0)
    for out in st.packets_to_send(0.0):
        seg = _parse(out)
        st.receive(_packet(TcpSegment(seg.dst_port, 80, IRS + 1, seq_add(seg.seq, 1), ACK,
                                      64240)), 0.1)
    st.packets_to_send(0.1)
    assert st.listeners[80].pending == 2
    st.receive(_packet(syn(port=2100)), 0.2)
    assert st.counters["tcp_listen_accept_queue_full"] == 1
    st.take_notified()  # the owner takes them
    assert st.listeners[80].pending == 0
    st.receive(_packet(syn(port=2101)), 0.3)
    assert st.counters["tcp_syn_accepted"] == 3


def test_time_wait_beyond_the_cap_recycles_the_oldest() -> None:
    """As Linux's tcp_max_tw_buckets: at most ``max_time_wait`` connections linger."""
    net = stack_pair(TcpConfig(delayed_ack=0.0))
    net.a = Stack(StackConfig(addresses=(ipaddress.IPv4Address("10.0.0.1"),),
                              tcp=TcpConfig(delayed_ack=0.0), max_time_wait=5),
                  isn_secret=b"client secret 16", rng=random.Random(3))
    net.b.listen(80)
    def server_closes() -> None:
        for t in list(net.b.tcbs.values()):
            if t.state is State.CLOSE_WAIT:
                t.close()

    for _ in range(8):
        c = net.a.connect("10.0.0.2", 80, net.now)
        net.run(until=lambda c=c: c.state is State.ESTABLISHED)
        c.close()  # the client closes first: it ends in TIME-WAIT
        net.run(server_closes,
                until=lambda c=c: c.state in (State.TIME_WAIT, State.CLOSED))
    net.step()
    in_tw = [t for t in net.a.tcbs.values() if t.state is State.TIME_WAIT]
    assert len(in_tw) == 5
    assert net.a.counters["tcp_time_wait_recycled"] == 3


@pytest.mark.parametrize(("flags", "reason"), [(SYN | FIN, "tcp_syn_fin"),
                                               (SYN | RST, "tcp_syn_rst")])
def test_nonsense_flag_combinations_are_dropped_and_counted(flags: int, reason: str) -> None:
    st = server()
    st.listen(80)
    w = Wire(st)
    assert w.send(TcpSegment(40000, 80, IRS, 0, flags, 1000)) == []
    assert w.send(TcpSegment(40000, 81, IRS, 0, flags, 1000)) == []  # closed port: no RST
    assert st.counters[reason] == 2 and not st.tcbs


def _packet(seg: TcpSegment) -> bytearray:
    return packet(seg, "10.0.0.1", "10.0.0.2")


def _parse(pkt: bytes | bytearray | tuple[bytes, bytes]) -> TcpSegment:
    data = b"".join(pkt) if isinstance(pkt, tuple) else bytes(pkt)
    return parse(data).seg


def test_memory_pressure_clamps_windows_and_refuses_new_connections() -> None:
    """Like Linux's tcp_mem: when the bytes held in all buffers exceed the stack's
    limit, windows are clamped to four segments -- connections whose applications
    read still move, slowly; the others stop --, out-of-order data is not queued and
    new connections are refused, until applications read and the pressure goes."""
    net = stack_pair(TcpConfig(delayed_ack=0.0))
    net.b = server(max_buffered=64 * 1024, tcp=TcpConfig(delayed_ack=0.0))
    net.b.listen(80)
    clients = [net.a.connect("10.0.0.2", 80, 0.0, local_port=50000 + i) for i in range(3)]
    net.run(until=lambda: len(net.b.tcbs) == 3
            and all(t.state is State.ESTABLISHED for t in net.b.tcbs.values()))
    by_port = {t.remote_port: t for t in net.b.tcbs.values()}
    hogs, reader = [by_port[50000], by_port[50001]], by_port[50002]
    for c in clients[:2]:
        c.send(pattern(300_000))
    net.run(until=lambda: net.b.memory.pressure and not net.b.has_pending_output())
    edges = {t: t.rcv_adv for t in hogs}
    mss = net.b.tcp_config.mss
    clients[2].send(pattern(2_000_000))
    got = 0
    widest = 0

    def read() -> None:
        nonlocal got, widest
        got += len(reader.recv())
        if got > 100_000:  # past the window offered before the pressure began
            widest = max(widest, (reader.rcv_adv - reader.rcv_nxt) & 0xFFFFFFFF)

    net.run(read, until=lambda: got == 2_000_000)  # the reading connection moves
    assert widest <= 4 * mss
    assert all(t.rcv_adv == edge for t, edge in edges.items())  # the full ones do not
    late = net.a.connect("10.0.0.2", 80, net.now, local_port=50100)
    net.run(until=lambda: net.b.counters["tcp_memory_pressure_refused"] > 0)
    assert late.state is State.SYN_SENT
    net.run(lambda: [t.recv() for t in hogs], until=lambda: late.state is State.ESTABLISHED)


def test_an_ipv4_cookie_macs_the_same_bytes_as_the_general_4_tuple_packing() -> None:
    # The IPv4 MAC input is packed in one go; it must equal isn.pack_tuple's 4-tuple
    # followed by the rest, as for IPv6 (cookies made before and after agree).
    import hashlib
    import struct

    from tcpstack.tcp.isn import pack_tuple

    c = SynCookies(SECRET)
    cookie = c.make(*TUPLE, IRS, 1460, 100.0)
    tick, idx = int(100.0 // TICK_SECONDS), MSS_TABLE.index(1460)
    data = pack_tuple(*TUPLE) + struct.pack("!IQB", IRS, tick, idx)
    mac = hashlib.blake2s(data, key=SECRET, digest_size=4, person=b"syncooki").digest()
    assert cookie & 0xFFFFFF == int.from_bytes(mac, "big") & 0xFFFFFF
