"""TCP Fast Open (RFC 7413): the option, the keys and cookies, the client's cache, the
server's rules at a listener and the client's, packet by packet with a fake clock;
then two stacks and two asyncio networks end to end."""

from __future__ import annotations

import asyncio
import ipaddress
import random

import pytest
from aio_helpers import B_IP, NetPair, within
from tcp_helpers import (
    BASE_CONFIG,
    ISS,
    LOCAL,
    REMOTE,
    REMOTE_IP,
    Wire,
    ip,
    packet,
    parse,
    pattern,
    stack,
    stack_pair,
)

from tcpstack.aio import open_connection
from tcpstack.cli import parse_tfo_keys
from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp import events as ev
from tcpstack.tcp.fastopen import DEFER_LIMIT
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.tcp.tfocookies import (
    COOKIE_LEN,
    LOSS_BASE_SECONDS,
    FastOpen,
    FastOpenCache,
    FastOpenKeys,
    format_key,
    parse_key,
)
from tcpstack.wire.tcp import (
    ACK,
    FIN,
    MAX_OPTIONS_LEN,
    RST,
    SYN,
    TcpOptions,
    TcpSegment,
    emit_tcp,
    encode_options,
    parse_options,
)

KEY = bytes(range(16))
OTHER_KEY = bytes(range(16, 32))
CLIENT = "10.0.0.1"
SERVER = "10.0.0.2"


def ip6(addr: str) -> int:
    return int(ipaddress.IPv6Address(addr))


def _key_source(seed: int = 0) -> random.Random:
    return random.Random(seed)


def _keys(*keys: bytes, rotate_every: float = 0.0) -> FastOpenKeys:
    rng = _key_source()
    return FastOpenKeys(keys, rotate_every, random_key=rng.randbytes)


# ---------------------------------------------------------------- the option


@pytest.mark.parametrize(("raw", "expected"), [
    (bytes((34, 2)), b""),  # a cookie request
    (bytes((34, 10)) + bytes(range(8)), bytes(range(8))),
    (bytes((34, 6)) + b"abcd", b"abcd"),  # the shortest cookie
    (bytes((34, 18)) + bytes(16), bytes(16)),  # the longest
])
def test_the_option_is_a_request_or_a_cookie(raw: bytes, expected: bytes) -> None:
    assert parse_options(memoryview(raw + bytes(-len(raw) % 4))).tfo == expected


@pytest.mark.parametrize("length", [3, 4, 5, 9, 20])
def test_a_cookie_of_a_wrong_length_is_ignored(length: int) -> None:
    """RFC 7413 4.1.1: 4 to 16 bytes, even; others are ignored (as Linux does)."""
    raw = bytes((34, length)) + bytes(length - 2)
    assert parse_options(memoryview(raw + bytes(-len(raw) % 4))).tfo is None


def test_the_option_goes_last_in_a_syn_padded_with_nops() -> None:
    opts = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamps=(1, 0),
                      tfo=bytes(range(8)))
    raw = encode_options(opts, syn=True)
    assert len(raw) == 32 and len(raw) <= MAX_OPTIONS_LEN
    assert raw[20:] == bytes((34, 10)) + bytes(range(8)) + bytes((1, 1))
    assert parse_options(memoryview(raw)) == opts
    request = encode_options(TcpOptions(mss=1460, tfo=b""), syn=True)
    assert request == bytes((2, 4, 5, 180, 34, 2, 1, 1))


def test_the_option_is_left_out_when_the_syn_has_no_room() -> None:
    """Beside a TCP-MD5 signature the 40 option bytes cannot hold a cookie."""
    opts = TcpOptions(mss=1460, wscale=7, sack_permitted=True, md5=True,
                      tfo=bytes(range(16)))
    raw = encode_options(opts, syn=True, md5=True)
    assert len(raw) <= MAX_OPTIONS_LEN
    assert parse_options(memoryview(raw)).tfo is None


# ---------------------------------------------------------------- keys and cookies


def test_a_cookie_is_the_servers_own_for_one_client() -> None:
    keys = _keys(KEY)
    c1 = keys.cookie(ip(SERVER), ip(CLIENT), 0.0)
    assert len(c1) == COOKIE_LEN
    assert keys.cookie(ip(SERVER), ip(CLIENT), 100.0) == c1  # no rotation: stable
    assert keys.cookie(ip(SERVER), ip("10.0.0.3"), 0.0) != c1
    assert _keys(OTHER_KEY).cookie(ip(SERVER), ip(CLIENT), 0.0) != c1
    assert keys.check(c1, ip(SERVER), ip(CLIENT), 0.0) == 1
    assert keys.check(c1, ip(SERVER), ip("10.0.0.3"), 0.0) == 0
    assert keys.check(c1[:4], ip(SERVER), ip(CLIENT), 0.0) == 0


def test_a_cookie_of_the_backup_key_is_valid_but_second_best() -> None:
    old = _keys(KEY).cookie(ip(SERVER), ip(CLIENT), 0.0)
    keys = _keys(OTHER_KEY, KEY)
    assert keys.check(old, ip(SERVER), ip(CLIENT), 0.0) == 2
    keys.set(OTHER_KEY)
    assert keys.check(old, ip(SERVER), ip(CLIENT), 0.0) == 0


def test_rotating_keeps_the_previous_key_as_the_backup() -> None:
    keys = _keys(KEY)
    cookie = keys.cookie(ip(SERVER), ip(CLIENT), 0.0)
    keys.rotate()
    assert keys.primary != KEY and keys.backup == KEY
    assert keys.check(cookie, ip(SERVER), ip(CLIENT), 0.0) == 2
    keys.rotate()
    assert keys.check(cookie, ip(SERVER), ip(CLIENT), 0.0) == 0


def test_timed_rotation_keeps_a_cookie_for_one_or_two_periods_in_every_worker() -> None:
    """Keys derived from the primary and the period's number: two stacks sharing the
    primary (a daemon's workers) agree at any time without talking."""
    a, b = _keys(KEY, rotate_every=60.0), _keys(KEY, rotate_every=60.0)
    cookie = a.cookie(ip(SERVER), ip(CLIENT), 10.0)
    assert b.check(cookie, ip(SERVER), ip(CLIENT), 59.0) == 1
    assert b.check(cookie, ip(SERVER), ip(CLIENT), 61.0) == 2  # last period's
    assert a.check(cookie, ip(SERVER), ip(CLIENT), 125.0) == 0  # two periods on
    assert a.cookie(ip(SERVER), ip(CLIENT), 61.0) != cookie


@pytest.mark.parametrize("keys", [(bytes(15),), (KEY, KEY, KEY), (bytes(17),)])
def test_keys_of_the_wrong_size_or_number_are_refused(keys: tuple[bytes, ...]) -> None:
    with pytest.raises(ValueError, match="Fast Open key"):
        FastOpenKeys(keys)


def test_keys_are_read_as_linux_writes_them() -> None:
    text = "00010203-04050607-08090a0b-0c0d0e0f"
    assert parse_key(text) == KEY == parse_key(text.replace("-", ""))
    assert format_key(KEY) == text
    assert parse_tfo_keys(f"{text},{format_key(OTHER_KEY)}") == (KEY, OTHER_KEY)
    for bad in ("0011", "zz" * 16, f"{text},{text},{text}"):
        with pytest.raises(ValueError, match="--tfo-key"):
            parse_tfo_keys(bad)


def test_the_stack_refuses_bad_keys_and_rotation_intervals() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        StackConfig(tfo_keys=(b"short",))
    with pytest.raises(ValueError, match="rotation"):
        StackConfig(tfo_key_rotation=-1.0)


# ---------------------------------------------------------------- the client's cache


def test_the_cache_asks_first_then_remembers_cookie_and_mss() -> None:
    cache = FastOpenCache()
    server = ip(SERVER)
    assert cache.lookup(server, 0.0) == (b"", 0)
    cache.learn(server, b"cookie!!", 1400)
    assert cache.lookup(server, 0.0) == (b"cookie!!", 1400)
    cache.learn(server, None, 0)  # a SYN,ACK without: the old cookie stays
    assert cache.lookup(server, 0.0) == (b"cookie!!", 1400)


def test_the_cache_keeps_the_most_recent_servers() -> None:
    cache = FastOpenCache(size=3)
    for i in range(4):
        cache.learn(i + 1, b"c" * 8, 1000)
    assert len(cache) == 3 and cache.lookup(1, 0.0) == (b"", 0)  # the oldest went


def test_repeated_syn_losses_switch_fast_open_off_for_a_while() -> None:
    """As Linux: after the second SYN with data lost in a row, none for 60 s << 2."""
    cache = FastOpenCache()
    server = ip(SERVER)
    cache.learn(server, b"cookie!!", 1400)
    cache.syn_lost(server, 10.0)
    assert cache.lookup(server, 11.0) is not None  # one loss may be chance
    cache.syn_lost(server, 20.0)
    assert cache.lookup(server, 21.0) is None
    assert cache.lookup(server, 20.0 + 4 * LOSS_BASE_SECONDS + 1) == (b"cookie!!", 1400)
    cache.syn_lost(server, 500.0)
    cache.syn_data_acked(server)  # the path carries them after all
    assert cache.lookup(server, 501.0) == (b"cookie!!", 1400)


# ---------------------------------------------------------------- the server side


def _tfo_wire(fastopen: int = 8, **config: object) -> Wire:
    st = Stack(StackConfig(addresses=(ipaddress.IPv4Address(SERVER),), tcp=BASE_CONFIG,
                           tfo_keys=(KEY,), **config),  # type: ignore[arg-type]
               isn_secret=b"s" * 32, rng=random.Random(1))
    st.listen(80, fastopen=fastopen)
    return Wire(st)


def _syn(payload: bytes = b"", cookie: bytes | None = b"", seq: int = 5000,
         port: int = 40000) -> TcpSegment:
    return TcpSegment(port, 80, seq, 0, SYN, 65535, TcpOptions(mss=1460, tfo=cookie),
                      payload)


def _cookie() -> bytes:
    return _keys(KEY).cookie(ip(SERVER), ip(CLIENT), 0.0)


def _ack(synack: TcpSegment, seq: int, payload: bytes = b"", flags: int = ACK,
         port: int = 40000) -> TcpSegment:
    return TcpSegment(port, 80, seq, (synack.seq + 1 + len(synack.payload)) & 0xFFFFFFFF,
                      flags, 65535, TcpOptions(), payload)


def test_a_cookie_request_gets_a_cookie_and_its_data_waits() -> None:
    w = _tfo_wire()
    (synack,) = w.send(_syn(b"GET /", cookie=b""))
    assert synack.flags == SYN | ACK and synack.options.tfo == _cookie()
    assert synack.ack == 5001  # the SYN only: no valid cookie, no data taken
    (tcb,) = w.stack.tcbs.values()
    assert tcb.recv_buffered == 0 and tcb.take_events() == []
    assert w.stack.counters["tcp_tfo_cookie_requested"] == 1
    assert w.stack.counters["tcp_tfo_passive"] == 0


def test_a_valid_cookie_hands_the_data_to_the_application_at_once() -> None:
    w = _tfo_wire()
    (synack,) = w.send(_syn(b"GET /", cookie=_cookie()))
    assert synack.ack == 5001 + 5 and synack.options.tfo is None
    (tcb,) = w.stack.tcbs.values()
    assert tcb.state is State.SYN_RECEIVED
    assert tcb.take_events() == [ev.ESTABLISHED, ev.DATA_RECEIVED]
    assert tcb.recv() == b"GET /"
    listener = w.stack.listeners[80]
    # In the accept queue at once (as Linux's Fast Open child), until taken.
    assert listener.tfo_pending == 1 and listener.half_open == 1 and listener.pending == 1
    w.stack.take_notified()
    assert listener.pending == 0
    # The answer goes out before the handshake completes (RFC 7413 4.2.2) ...
    tcb.send(b"200 OK")
    (data,) = w.out()
    assert data.seq == synack.seq + 1 and data.payload == b"200 OK"
    assert not data.flags & FIN
    # ... and the client's ACK of SYN and data ends SYN-RECEIVED, with no second
    # Established.
    out = w.send(TcpSegment(40000, 80, 5006, data.seq + 6, ACK, 65535))
    assert tcb.state is State.ESTABLISHED and out == []
    assert tcb.take_events() == []
    assert listener.tfo_pending == 0 and listener.half_open == 0 and listener.pending == 0
    assert w.stack.counters["tcp_tfo_passive"] == 1


def test_a_fast_open_childs_close_waits_for_the_handshake() -> None:
    w = _tfo_wire()
    w.send(_syn(b"GET /", cookie=_cookie()))
    (tcb,) = w.stack.tcbs.values()
    assert tcb.recv() == b"GET /"
    tcb.send(b"bye")
    tcb.close()
    (data,) = w.out()
    assert not data.flags & FIN and tcb.state is State.SYN_RECEIVED
    (fin,) = w.send(TcpSegment(40000, 80, 5006, data.seq + 3, ACK, 65535))
    assert fin.flags & FIN and fin.seq == data.seq + 3 and tcb.state is State.FIN_WAIT_1


def test_an_unknown_cookie_gets_a_fresh_one_and_the_data_comes_again() -> None:
    w = _tfo_wire()
    (synack,) = w.send(_syn(b"GET /", cookie=b"notmine!"))
    assert synack.ack == 5001 and synack.options.tfo == _cookie()
    assert w.stack.counters["tcp_tfo_passive_fail"] == 1
    (tcb,) = w.stack.tcbs.values()
    assert tcb.take_events() == []
    # The client sends its data again after the handshake: delivered once.
    w.send(_ack(synack, 5001, b"GET /", ACK))
    assert tcb.state is State.ESTABLISHED and tcb.recv() == b"GET /"


def test_a_retransmitted_syn_with_data_does_not_deliver_it_twice() -> None:
    w = _tfo_wire()
    (synack,) = w.send(_syn(b"GET /", cookie=_cookie()))
    (tcb,) = w.stack.tcbs.values()
    assert tcb.recv() == b"GET /"
    again = w.send(_syn(b"GET /", cookie=_cookie()), now=1.0)
    assert [s.flags for s in again] == [SYN | ACK] and again[0].ack == synack.ack
    assert tcb.recv_buffered == 0
    assert w.stack.counters["tcp_tfo_passive"] == 1


def test_a_full_fast_open_queue_means_the_ordinary_handshake() -> None:
    w = _tfo_wire(fastopen=1)
    w.send(_syn(b"first", cookie=_cookie(), port=40000))
    (synack,) = w.send(_syn(b"second", cookie=_cookie(), port=40001))
    assert synack.ack == 5001 and synack.options.tfo is None  # no data, no cookie
    assert w.stack.counters["tcp_tfo_listen_overflow"] == 1
    assert w.stack.counters["tcp_tfo_passive"] == 1


def test_a_listener_without_fast_open_ignores_the_option() -> None:
    w = _tfo_wire(fastopen=0)
    (synack,) = w.send(_syn(b"GET /", cookie=_cookie()))
    assert synack.ack == 5001 and synack.options.tfo is None
    assert not [k for k in w.stack.counters if k.startswith("tcp_tfo")]


def test_no_fast_open_for_a_syn_answered_with_a_cookie() -> None:
    """A SYN cookie keeps no state, so no data can be taken (as Linux)."""
    w = _tfo_wire(syncookies="always")
    (synack,) = w.send(_syn(b"GET /", cookie=_cookie()))
    assert synack.ack == 5001 and synack.options.tfo is None
    assert not w.stack.tcbs


def test_no_fast_open_with_a_tcp_md5_peer() -> None:
    """No room for a cookie beside the signature: a signed SYN with a valid cookie
    and data gets the ordinary handshake, its data not taken."""
    w = _tfo_wire(md5_keys=((CLIENT, b"k"),))
    assert w.stack.listeners[80].fastopen
    syn = _syn(b"GET /", cookie=_cookie())
    w.stack.receive(emit_tcp(syn, ip(CLIENT), ip(SERVER), 1, md5_key=b"k"), 0.0)
    (synack,) = [parse(bytes(pkt)).seg for pkt in w.stack.packets_to_send(0.0)]
    assert synack.flags == SYN | ACK and synack.options.md5
    assert synack.ack == 5001 and synack.options.tfo is None
    (tcb,) = w.stack.tcbs.values()
    assert tcb.tfo is None and tcb.recv_buffered == 0
    assert not [k for k in w.stack.counters if k.startswith("tcp_tfo")]


def test_a_cookie_of_the_backup_key_is_taken_and_replaced() -> None:
    w = _tfo_wire()
    old_cookie = _cookie()
    w.stack.set_tfo_keys(OTHER_KEY, KEY)
    (synack,) = w.send(_syn(b"GET /", cookie=old_cookie))
    assert synack.ack == 5006  # taken
    assert synack.options.tfo == _keys(OTHER_KEY).cookie(ip(SERVER), ip(CLIENT), 0.0)
    assert w.stack.counters["tcp_tfo_passive_alt_key"] == 1


def test_a_cookie_request_while_the_queue_is_full_gets_no_cookie() -> None:
    """As Linux's tcp_try_fastopen: a full Fast Open queue answers nothing Fast Open."""
    w = _tfo_wire(fastopen=1)
    w.send(_syn(b"first", cookie=_cookie(), port=40000))
    (synack,) = w.send(_syn(cookie=b"", port=40001))
    assert synack.options.tfo is None
    assert w.stack.counters["tcp_tfo_cookie_requested"] == 1
    assert w.stack.counters["tcp_tfo_listen_overflow"] == 1


def test_fast_open_children_wait_in_the_accept_queue() -> None:
    """Each counts against the backlog until the application takes it (as Linux puts
    a Fast Open child in the accept queue at once): a full queue drops the next SYN."""
    w = _tfo_wire()
    w.stack.listeners[80].backlog = 2
    for port in (40000, 40001):
        w.send(_syn(b"GET /", cookie=_cookie(), port=port))
    assert w.stack.listeners[80].pending == 2
    assert w.send(_syn(b"GET /", cookie=_cookie(), port=40002)) == []
    assert w.stack.counters["tcp_listen_accept_queue_full"] == 1
    w.stack.take_notified()
    assert w.stack.listeners[80].pending == 0
    (synack,) = w.send(_syn(b"GET /", cookie=_cookie(), port=40003))
    assert synack.ack == 5006


def test_the_option_outside_a_syn_is_ignored() -> None:
    w = _tfo_wire()
    (synack,) = w.send(_syn())
    (tcb,) = w.stack.tcbs.values()
    ack = TcpSegment(40000, 80, 5001, synack.seq + 1, ACK, 65535,
                     TcpOptions(tfo=_cookie()), b"data")
    w.send(ack)
    assert tcb.state is State.ESTABLISHED and tcb.recv() == b"data"
    assert w.stack.counters["tcp_tfo_passive"] == 0


def test_fast_open_over_ipv6() -> None:
    server6, client6 = "fd00::2", "fd00::1"
    st = Stack(StackConfig(addresses=(ipaddress.IPv6Address(server6),), tcp=BASE_CONFIG,
                           tfo_keys=(KEY,)))
    st.listen(80, fastopen=4)
    cookie = _keys(KEY).cookie(ip6(server6), ip6(client6), 0.0)
    assert cookie != _keys(KEY).cookie(ip6(server6), ip6("fd00::3"), 0.0)
    st.receive(emit_tcp(_syn(b"GET /", cookie=cookie), ip6(client6), ip6(server6), 1), 0.0)
    (tcb,) = st.tcbs.values()
    assert tcb.recv() == b"GET /" and st.counters["tcp_tfo_passive"] == 1


def test_a_lost_syn_ack_resends_it_and_then_the_data_sent_meanwhile() -> None:
    w = _tfo_wire()
    (synack,) = w.send(_syn(b"GET /", cookie=_cookie()))
    (tcb,) = w.stack.tcbs.values()
    body = pattern(3000)
    tcb.send(body)
    first = w.out()
    assert sum(len(s.payload) for s in first) == 3000
    # Nothing comes back: the SYN,ACK's timer fires; it goes again, and SND.MAX
    # still covers the data.
    again = w.tick(5.0)
    assert [s.flags & SYN for s in again][:1] == [SYN]
    assert tcb.snd_nxt == synack.seq + 1 + 3000
    # The client got the retransmitted SYN,ACK only: it acknowledges the SYN; the
    # data, marked lost, goes again in order.
    out = w.send(TcpSegment(40000, 80, 5006, synack.seq + 1, ACK, 65535), now=5.1)
    resent = [s for s in out + w.tick(5.2) if s.payload]
    assert resent and resent[0].seq == synack.seq + 1
    assert b"".join(bytes(s.payload) for s in resent)[:len(body)] == \
        body[:sum(len(s.payload) for s in resent)]
    assert tcb.state is State.ESTABLISHED


# ---------------------------------------------------------------- the client side


def _client(cookie: bytes | None, cache: FastOpenCache | None = None, mss: int = 1460,
            data: bytes = b"") -> tuple[Tcb, list[TcpSegment]]:
    fo = FastOpen(cookie, client=True, deferred=True, mss=mss, cache=cache)
    tcb = Tcb.active_open(BASE_CONFIG, REMOTE, LOCAL, ISS, 0.0, fast_open=fo)
    assert tcb.state is State.SYN_SENT
    if data:
        tcb.send(data)
    return tcb, [parse(packet(s, REMOTE_IP, LOCAL[0])).seg for s in tcb.segments_to_send(0.0)]


def _synack(tcb: Tcb, ack: int, cookie: bytes | None = None, mss: int = 1400) -> TcpSegment:
    return TcpSegment(80, 40000, 9000, ack, SYN | ACK, 65535, TcpOptions(mss=mss, tfo=cookie))


def test_the_syn_waits_for_the_first_write_and_carries_it() -> None:
    fo = FastOpen(b"cookie!!", client=True, deferred=True, mss=1400)
    tcb = Tcb.active_open(BASE_CONFIG, REMOTE, LOCAL, ISS, 0.0, fast_open=fo)
    assert tcb.next_deadline() == DEFER_LIMIT
    assert tcb.segments_to_send(0.001) == []  # nothing written yet: no SYN
    tcb.send(b"GET / HTTP/1.0\r\n\r\n")
    (syn,) = tcb.segments_to_send(0.002)
    assert syn.flags == SYN and syn.options.tfo == b"cookie!!"
    assert bytes(syn.payload) == b"GET / HTTP/1.0\r\n\r\n"
    assert tcb.snd_nxt == ISS + 1 + 18 and tcb.counters["tcp_tfo_syn_data_sent"] == 1
    assert fo.result == "syn data"
    assert tcb.next_deadline() == pytest.approx(0.002 + BASE_CONFIG.rto_initial)


def test_without_a_write_the_deferred_syn_goes_after_a_while() -> None:
    """An application that reads first (it should not ask for Fast Open) still gets
    its connection, DEFER_LIMIT later, with a SYN carrying the cookie alone."""
    fo = FastOpen(b"cookie!!", client=True, deferred=True, mss=1400)
    tcb = Tcb.active_open(BASE_CONFIG, REMOTE, LOCAL, ISS, 0.0, fast_open=fo)
    tcb.handle_timer(DEFER_LIMIT)
    (syn,) = tcb.segments_to_send(DEFER_LIMIT)
    assert syn.payload == b"" and syn.options.tfo == b"cookie!!" and fo.result == "syn cookie"
    assert tcb.counters["tcp_retrans_syn"] == 0  # the wait was no timeout


def test_a_close_before_the_handshake_sends_the_data_then_the_fin() -> None:
    """asyncio's close() flushes what was written: so does the engine's CLOSE of a
    Fast Open connection still in SYN-SENT (instead of deleting it)."""
    tcb, _ = _client(b"cookie!!", data=b"bye")
    tcb.close()
    assert tcb.state is State.SYN_SENT and tcb.fin_queued
    tcb.receive(_synack(tcb, ISS + 4), 0.1)
    assert tcb.state is State.FIN_WAIT_1
    (fin,) = tcb.segments_to_send(0.1)
    assert fin.flags & FIN and fin.seq == ISS + 4


def test_a_close_before_anything_is_written_deletes_the_connection() -> None:
    fo = FastOpen(b"cookie!!", client=True, deferred=True)
    tcb = Tcb.active_open(BASE_CONFIG, REMOTE, LOCAL, ISS, 0.0, fast_open=fo)
    tcb.close()
    assert tcb.state is State.CLOSED and tcb.segments_to_send(0.0) == []


def test_the_syns_data_is_limited_by_the_servers_mss_less_all_options() -> None:
    """As Linux: MSS - 40, whatever the SYN,ACK will agree to; the rest follows."""
    _, (syn,) = _client(b"cookie!!", mss=1000, data=pattern(5000))
    assert len(syn.payload) == 1000 - MAX_OPTIONS_LEN
    _, (syn,) = _client(b"cookie!!", mss=0, data=pattern(5000))  # unknown: 536
    assert len(syn.payload) == 536 - MAX_OPTIONS_LEN


def test_without_a_cookie_the_syn_asks_for_one_and_carries_no_data() -> None:
    cache = FastOpenCache()
    tcb, (syn,) = _client(b"", cache, data=b"hello")
    assert syn.options.tfo == b"" and syn.payload == b""
    tcb.receive(_synack(tcb, ISS + 1, cookie=b"fresh!!!"), 0.1)
    assert tcb.state is State.ESTABLISHED and tcb.tfo is not None
    assert tcb.tfo.result == "cookie received"
    assert cache.lookup(LOCAL[0], 1.0) == (b"fresh!!!", 1400)
    (data,) = [s for s in tcb.segments_to_send(0.1) if s.payload]
    assert bytes(data.payload) == b"hello" and data.seq == ISS + 1


def test_data_the_server_took_in_the_syn_is_acknowledged_there() -> None:
    cache = FastOpenCache()
    cache.syn_lost(LOCAL[0], 0.0)
    tcb, _ = _client(b"cookie!!", cache, data=b"hello")
    tcb.receive(_synack(tcb, ISS + 6), 0.1)
    assert tcb.state is State.ESTABLISHED and tcb.snd_una == ISS + 6
    assert tcb.send_buffered == 0 and tcb.counters["tcp_tfo_active"] == 1
    assert [s.payload for s in tcb.segments_to_send(0.1)] == [b""]  # the ACK only
    assert cache._entries[LOCAL[0]][2] == 0  # the losses forgotten


def test_data_the_server_did_not_take_goes_again_as_new_data() -> None:
    """RFC 7413 4.2.1: a SYN,ACK acknowledging the SYN only: the data is sent right
    after the handshake, as new data -- not a loss: no retransmission counted, the
    window not reduced."""
    tcb, _ = _client(b"cookie!!", data=b"hello")
    cwnd = tcb.cc.cwnd
    tcb.receive(_synack(tcb, ISS + 1, cookie=b"another!"), 0.1)
    assert tcb.state is State.ESTABLISHED and tcb.counters["tcp_tfo_active_fail"] == 1
    out = tcb.segments_to_send(0.1)
    (data,) = [s for s in out if s.payload]
    assert data.seq == ISS + 1 and bytes(data.payload) == b"hello"
    assert tcb.cc.cwnd >= cwnd
    assert not [k for k in tcb.counters if k.startswith("tcp_retrans")]


def test_a_retransmitted_syn_carries_neither_data_nor_the_option() -> None:
    """As Linux: the retry is a plain SYN. If only it got through, the server
    acknowledges the SYN alone: the data follows the handshake, and the path is
    suspected of dropping SYNs with data (no cookie came back either)."""
    cache = FastOpenCache()
    tcb, (syn,) = _client(b"cookie!!", cache, data=b"hello")
    assert syn.payload == b"hello"
    tcb.handle_timer(tcb.next_deadline() or 0.0)
    (again,) = tcb.segments_to_send(1.5)
    assert again.flags == SYN and again.payload == b"" and again.options.tfo is None
    assert tcb.snd_nxt == ISS + 6  # still covers the first SYN's data
    tcb.receive(_synack(tcb, ISS + 1), 2.0)
    (data,) = [s for s in tcb.segments_to_send(2.0) if s.payload]
    assert bytes(data.payload) == b"hello" and data.seq == ISS + 1
    assert cache._entries[LOCAL[0]][2] == 1 and tcb.counters["tcp_tfo_active_fail"] == 1


def test_a_late_syn_ack_for_the_first_syn_is_taken_not_reset() -> None:
    """The first SYN (with data) arrived; its SYN,ACK came after our timeout. It
    acknowledges the data: taken, no RST (the server has delivered the data)."""
    cache = FastOpenCache()
    tcb, _ = _client(b"cookie!!", cache, data=b"hello")
    tcb.handle_timer(tcb.next_deadline() or 0.0)
    tcb.segments_to_send(1.5)  # the plain retry
    tcb.receive(_synack(tcb, ISS + 6), 1.6)
    assert tcb.state is State.ESTABLISHED and tcb.snd_una == ISS + 6
    assert tcb.counters["tcp_syn_sent_bad_ack"] == 0 and tcb.counters["tcp_tfo_active"] == 1
    assert [s.flags for s in tcb.segments_to_send(1.6)] == [ACK]


def test_a_syn_ack_taking_part_of_the_data_gets_the_rest_as_new_data() -> None:
    tcb, _ = _client(b"cookie!!", data=b"hello world")
    tcb.receive(_synack(tcb, ISS + 1 + 5), 0.1)
    assert tcb.snd_una == ISS + 6 and tcb.snd_nxt == ISS + 6
    (data,) = [s for s in tcb.segments_to_send(0.1) if s.payload]
    assert bytes(data.payload) == b" world" and data.seq == ISS + 6


def test_the_stack_stops_using_fast_open_after_repeated_syn_losses() -> None:
    st = stack(CLIENT)
    server = ip(SERVER)
    st.tfo_cache.learn(server, b"cookie!!", 1460)
    st.tfo_cache.syn_lost(server, 0.0)
    st.tfo_cache.syn_lost(server, 1.0)
    tcb = st.connect(SERVER, 80, 2.0, fast_open=True)
    assert tcb.tfo is None and st.counters["tcp_tfo_active_disabled"] == 1
    (pkt,) = st.packets_to_send(2.0)
    assert parse(pkt).seg.options.tfo is None


def test_no_fast_open_on_a_signed_connection() -> None:
    st = Stack(StackConfig(addresses=(ipaddress.IPv4Address(CLIENT),),
                           md5_keys=((SERVER, b"k"),)))
    assert st.connect(SERVER, 80, 0.0, fast_open=True).tfo is None


# ---------------------------------------------------------------- end to end


def test_two_stacks_a_cookie_then_requests_in_the_syn() -> None:
    """The first connection gets a cookie; the next ones send their request in the SYN
    and get the answer one round trip sooner (seen here as the server receiving the
    request before the handshake completes)."""
    net = stack_pair()
    net.b.listen(80, fastopen=4)
    syns: list[TcpSegment] = []

    def watch(src: Stack, seg: object) -> bool:
        if src is net.a and isinstance(seg, TcpSegment) and seg.flags & SYN:
            syns.append(seg)
        return False

    net.drop = watch
    states: list[State] = []
    for i in range(3):
        client = net.a.connect(SERVER, 80, net.now, fast_open=True)
        client.send(b"request %d" % i)

        def app(client: Tcb = client) -> None:
            for tcb in list(net.b.tcbs.values()):
                if tcb.recv_buffered:
                    states.append(tcb.state)
                    tcb.recv()
                    tcb.send(b"answer")
                    tcb.close()
            if client.recv_buffered:
                client.recv()
            if client.state is State.CLOSE_WAIT:
                client.close()

        net.run(app, until=lambda c=client: c.state in (State.TIME_WAIT, State.CLOSED),
                max_time=net.now + 30)
        net.now += 1.0
    assert [bytes(s.payload) for s in syns] == [b"", b"request 1", b"request 2"]
    assert [s.options.tfo == b"" for s in syns] == [True, False, False]
    assert states == [State.ESTABLISHED, State.SYN_RECEIVED, State.SYN_RECEIVED]
    assert net.a.counters["tcp_tfo_active"] == 2
    assert net.b.counters["tcp_tfo_passive"] == 2


async def test_asyncio_fast_open_client_and_server() -> None:
    nets = NetPair()
    try:
        seen: list[tuple[str, str]] = []

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await reader.read(100)
            seen.append((request.decode(), writer.get_extra_info("tcp_info")["state"]))
            writer.write(b"re: " + request)
            await writer.drain()
            writer.close()

        server = await nets.b.start_server(handler, B_IP, 80, fast_open=True)
        replies = []
        for i in range(2):
            reader, writer = await open_connection(B_IP, 80, network=nets.a, fast_open=True)
            writer.write(b"hi %d" % i)
            replies.append((await within(reader.read()),
                            writer.get_extra_info("tcp_info")["fastopen"]))
            writer.close()
        assert replies == [(b"re: hi 0", "cookie received"), (b"re: hi 1", "data acked")]
        assert seen == [("hi 0", "ESTABLISHED"), ("hi 1", "SYN-RECEIVED")]
        server.close()
    finally:
        await nets.aclose()


async def test_write_and_close_before_the_handshake_delivers_the_data() -> None:
    """asyncio's close() flushes: a fast_open client that writes and closes at once
    still delivers (the SYN carries the data when a cookie is held)."""
    nets = NetPair()
    try:
        got: list[bytes] = []

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.append(await reader.read())
            writer.close()

        await nets.b.start_server(handler, B_IP, 80, fast_open=True)
        for i in range(2):
            _, writer = await open_connection(B_IP, 80, network=nets.a, fast_open=True)
            writer.write(b"log line %d" % i)
            writer.close()
            await within(writer.wait_closed())
        await within(_until(lambda: len(got) == 2))
        assert got == [b"log line 0", b"log line 1"]
        assert nets.a.stack.counters["tcp_tfo_active"] == 1
    finally:
        await nets.aclose()


async def test_the_first_write_rides_in_the_syn_even_under_wait_for() -> None:
    """asyncio.wait_for runs the open in another task (Python 3.11): the SYN still
    waits for the write instead of leaving at the next turn of the loop."""
    nets = NetPair()
    try:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.read(100))
            writer.close()

        await nets.b.start_server(handler, B_IP, 80, fast_open=True)
        results = []
        for _ in range(2):
            reader, writer = await asyncio.wait_for(
                open_connection(B_IP, 80, network=nets.a, fast_open=True), 5)
            writer.write(b"ping")
            results.append((await within(reader.read()),
                            writer.get_extra_info("tcp_info")["fastopen"]))
            writer.close()
        assert results == [(b"ping", "cookie received"), (b"ping", "data acked")]
    finally:
        await nets.aclose()


async def _until(predicate: object) -> None:
    while not predicate():  # type: ignore[operator]
        await asyncio.sleep(0.005)


async def test_a_refused_fast_open_connection_surfaces_as_the_readers_error() -> None:
    nets = NetPair()
    try:
        reader, writer = await open_connection(B_IP, 81, network=nets.a, fast_open=True)
        assert writer.get_extra_info("peername") == (B_IP, 81)
        writer.write(b"anyone?")
        with pytest.raises(ConnectionRefusedError):
            await within(reader.read())
        assert nets.a.stack.counters["tcp_tfo_cookie_request_sent"] == 1
    finally:
        await nets.aclose()


def test_ladder_table_and_tcp_info_show_fast_open() -> None:
    """The SYN's cookie and data in the handshake ladder, how it went in its summary,
    the connection table and ``tcp_info``."""
    from tcpstack.observe.core import Observatory
    from tcpstack.observe.ladder import render_text
    from tcpstack.observe.table import render_rows, rows
    from tcpstack.tcp.info import tcp_info

    net = stack_pair()
    net.b.listen(80, fastopen=4)
    net.a.tfo_cache.learn(ip(SERVER), net.b.fastopen.cookie(ip(SERVER), ip(CLIENT), 0.0),
                          1460)
    obs = Observatory(net.b, packets=True)
    obs.enable_ladders()
    seen: list[dict[str, object]] = []
    obs.on_ladder.append(seen.append)
    obs.attach()
    client = net.a.connect(SERVER, 80, net.now, fast_open=True)
    client.send(b"GET /")
    net.run(until=lambda: client.state is State.ESTABLISHED and bool(seen))
    (doc,) = [d for d in seen if d["phase"] == "opening"]
    text = render_text(doc)  # type: ignore[arg-type]
    assert "TFO cookie " in text and "Fast Open (RFC 7413): data accepted" in text, text
    (row,) = rows(net.b, None, net.now)
    assert "fastopen:data_accepted" in render_rows([row], info=True)
    assert tcp_info(client)["fastopen"] == "data acked"
    (server,) = net.b.tcbs.values()
    assert tcp_info(server)["fastopen"] == "data accepted"


def test_a_reset_fast_open_connection_keeps_its_slot_for_a_minute() -> None:
    """A SYN with data and a stolen cookie, its source spoofed: the real client answers
    our SYN,ACK with a RST. As Linux, the slot stays taken for 60 s, so a flood of
    such SYNs cannot get past --tfo-queue by having each reset at once."""
    w = _tfo_wire(fastopen=1)
    (synack,) = w.send(_syn(b"spoofed", cookie=_cookie(), port=40000))
    w.stack.take_notified()
    w.send(TcpSegment(40000, 80, synack.ack, 0, RST, 0), now=0.1)
    assert not w.stack.tcbs and w.stack.listeners[80].tfo_pending == 0
    (synack,) = w.send(_syn(b"next", cookie=_cookie(), port=40001), now=30.0)
    assert synack.ack == 5001  # the ordinary handshake: the slot is held
    assert w.stack.counters["tcp_tfo_listen_overflow"] == 1
    w.send(TcpSegment(40001, 80, 5001, synack.seq + 1, RST, 0), now=30.1)
    (synack,) = w.send(_syn(b"later", cookie=_cookie(), port=40002), now=61.0)
    assert synack.ack == 5006  # a minute on: Fast Open again
