"""Accurate ECN (RFC 9768): the option's encoding, the negotiation tables (2, 3 and
4) on both sides, the ACE counter the receiver sends, the sender's reading of it
(wrap guard included), the mangling fallbacks, SYN cookies, and two stacks
through a CE-marking bottleneck. The clock starts far from 0 (``T``)."""

from __future__ import annotations

import ipaddress
import random

import pytest
from tcp_helpers import (
    IRS,
    ISS,
    LOCAL,
    REMOTE,
    REMOTE_PORT,
    Pair,
    base_config,
    drain,
    expect,
    ip,
    opening_ladder,
    parse,
    peer,
    stack_pair,
    syn_with_options,
)
from test_stack_end_to_end import transfer

from tcpstack.link.impair import ImpairSpec
from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp import accecn
from tcpstack.tcp.accecn import AccEcn, ace, ce_delta, option_delta
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.info import tcp_info
from tcpstack.tcp.seq import seq_add
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import (
    ACK,
    AE,
    CE,
    CWR,
    ECE,
    ECT_0,
    ECT_1,
    NOT_ECT,
    RST,
    SYN,
    OutSegment,
    TcpOptions,
    TcpSegment,
    emit_tcp,
    encode_options,
    parse_options,
    parse_tcp,
)

T = 5000.0  # the tests' clock: far from 0, as the runtime's monotonic one
ALL = accecn.ACE_FLAGS  # AE | CWR | ECE
FIELDS_INIT = (1, 0, 1)  # the option's fields before any byte arrived (3.2.3)


def _ace_of(seg: OutSegment | TcpSegment) -> int:
    return ace(seg.flags)


def server(ip_ecn: int = NOT_ECT, flags: int = SYN | ALL,
           **cfg: object) -> tuple[Tcb, OutSegment]:
    """A passive open from a SYN with ``flags`` that arrived with IP-ECN ``ip_ecn``."""
    syn = syn_with_options(flags=flags, sack=True)._replace(ecn=ip_ecn)
    tcb = Tcb.passive_open(base_config(**cfg), LOCAL, REMOTE, syn, ISS, T)
    (synack,) = expect(tcb, T, 1)
    return tcb, synack


def server_established(first_ace: int = 2, **cfg: object) -> Tcb:
    """An AccECN server whose SYN,ACK was reflected as Not-ECT by the first ACK."""
    tcb, _ = server(**cfg)
    tcb.receive(peer(tcb, flags=ACK | accecn.ace_flags(first_ace)), T + 0.1)
    assert tcb.state is State.ESTABLISHED
    return drain(tcb, T + 0.1)


def client(**cfg: object) -> tuple[Tcb, OutSegment]:
    tcb = Tcb.active_open(base_config(ecn="accecn", **cfg), LOCAL, REMOTE, ISS, T)
    (syn,) = expect(tcb, T, 1)
    return tcb, syn


def syn_ack(flags: int, ecn: int = NOT_ECT,
            options: TcpOptions = TcpOptions(mss=1460)) -> TcpSegment:  # noqa: B008
    return TcpSegment(REMOTE_PORT, 80, IRS, seq_add(ISS, 1), SYN | ACK | flags, 65535,
                      options)._replace(ecn=ecn)


def client_established(**cfg: object) -> Tcb:
    tcb, _ = client(**cfg)
    tcb.receive(syn_ack(CWR, options=TcpOptions(mss=1460, accecn=FIELDS_INIT)), T + 0.1)
    assert tcb.accecn is not None
    return drain(tcb, T + 0.1)


# ------------------------------------------------------------------ the option


@pytest.mark.parametrize(("raw", "fields"), [
    (bytes((172, 11, 0, 0, 9, 0, 0, 3, 0, 1, 0)), (9, 3, 256)),
    (bytes((174, 11, 0, 1, 0, 0, 0, 3, 0, 0, 9)), (9, 3, 256)),  # order EE1B, ECEB, EE0B
    (bytes((172, 5, 0, 0, 7)), (7, None, None)),
    (bytes((174, 5, 0, 0, 7)), (None, None, 7)),
    (bytes((172, 8, 0, 0, 7, 0, 0, 2)), (7, 2, None)),
    (bytes((172, 2)), (None, None, None)),
])
def test_the_accecn_option_parses_in_either_order_and_any_length(
        raw: bytes, fields: tuple[int | None, ...]) -> None:
    """RFC 9768 3.2.3.1: kind 172 orders EE0B, ECEB, EE1B; kind 174 the reverse; a
    shorter option leaves out the trailing fields."""
    assert parse_options(memoryview(raw + bytes(-len(raw) % 4))).accecn == fields


def test_options_after_the_accecn_option_are_parsed_too() -> None:
    """Linux writes the option right after timestamps: before SACK blocks on an ACK,
    before window scale on a SYN,ACK; nothing after it may be lost."""
    ts = bytes((1, 1, 8, 10)) + (111).to_bytes(4, "big") + (222).to_bytes(4, "big")
    sack = bytes((1, 1, 5, 10)) + (1000).to_bytes(4, "big") + (2000).to_bytes(4, "big")
    ack = parse_options(memoryview(ts + bytes((174, 11, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1))
                                   + sack))
    assert ack.timestamps == (111, 222) and ack.accecn == (1, 0, 1)
    assert ack.sack_blocks == ((1000, 2000),)
    synack = parse_options(memoryview(bytes((2, 4, 5, 0xB4, 4, 2)) + ts[2:]
                                      + bytes((174, 8, 0, 0, 1, 0, 0, 0, 1, 3, 3, 7))))
    assert (synack.mss, synack.sack_permitted, synack.accecn, synack.wscale) == \
        (1460, True, (None, 0, 1), 7)
    one = parse_options(memoryview(bytes((172, 5, 0, 0, 9, 1, 1, 1)) + ts))
    assert one.accecn == (9, None, None) and one.timestamps == (111, 222)


def test_an_accecn_option_of_another_length_is_ignored() -> None:
    assert parse_options(memoryview(bytes((172, 6, 0, 0, 1, 0, 1, 0)))).accecn is None


@pytest.mark.parametrize(("blocks", "n_fields"), [(0, 3), (1, 3), (2, 2), (3, 0)])
def test_the_option_takes_the_room_sack_blocks_leave(blocks: int, n_fields: int) -> None:
    """Beside timestamps (12 bytes) SACK blocks come first; the option gets as many
    fields as the rest of the 40 bytes holds, and is left out without room for one."""
    sack = tuple((i * 100, i * 100 + 50) for i in range(blocks))
    raw = encode_options(TcpOptions(timestamps=(1, 2), sack_blocks=sack,
                                    accecn=(5, 6, 7)), syn=False)
    assert len(raw) <= 40 and len(raw) % 4 == 0
    got = parse_options(memoryview(raw))
    assert got.sack_blocks == sack
    expected = (5, 6, 7)[:n_fields] + (None,) * (3 - n_fields)
    assert got.accecn == (None if n_fields == 0 else expected)


def test_a_syn_ack_carries_the_option_where_it_fits() -> None:
    _, synack = server()
    raw = encode_options(synack.options, syn=True)
    assert len(raw) <= 40 and parse_options(memoryview(raw)).accecn == FIELDS_INIT


def test_option_fields_are_24_bits_and_deltas_take_the_nearest_way() -> None:
    raw = encode_options(TcpOptions(accecn=(0x1234567, 0, 0xFFFFFF)), syn=False)
    assert parse_options(memoryview(raw)).accecn == (0x234567, 0, 0xFFFFFF)
    assert option_delta(0, 1 + 1000, 1) == 1000
    assert option_delta(0xFFFFF0, 0x10 + 1, 1) == 0x20  # across the 24-bit wrap
    assert option_delta(5000, 4001, 1) == -1000  # an older option (reordered ACK)


# ------------------------------------------------------------ server handshake


@pytest.mark.parametrize(("ecn", "reflected"), [
    (NOT_ECT, CWR), (ECT_1, CWR | ECE), (ECT_0, AE), (CE, AE | CWR)])
def test_the_syn_ack_reflects_the_syns_ip_ecn_field(ecn: int, reflected: int) -> None:
    """RFC 9768 Table 2; the SYN,ACK itself goes Not-ECT with the option's initial
    counts."""
    tcb, synack = server(ecn)
    assert synack.flags == SYN | ACK | reflected and synack.ecn == NOT_ECT
    assert synack.options.accecn == FIELDS_INIT
    assert tcb.ecn_ok and tcb.accecn is not None


@pytest.mark.parametrize("flags", [SYN | ECE, SYN | CWR, SYN | AE, SYN | AE | ECE,
                                   SYN | AE | CWR])
def test_any_other_nonclassic_flag_combination_asks_for_accecn(flags: int) -> None:
    """RFC 9768 3.1.2: anything but 000 and 011 is answered as if it were 111."""
    tcb, synack = server(flags=flags)
    assert tcb.accecn is not None and synack.flags == SYN | ACK | CWR


@pytest.mark.parametrize(("flags", "mode"), [(SYN | CWR | ECE, "classic"), (SYN, None)])
def test_classic_and_plain_syns_are_answered_as_before(flags: int, mode: str | None) -> None:
    tcb, synack = server(flags=flags)
    assert tcb.accecn is None
    assert tcp_info(tcb)["ecn_mode"] == mode
    assert synack.flags == SYN | ACK | (ECE if mode else 0)


def test_ecn_off_declines_accecn() -> None:
    tcb, synack = server(ecn="off")
    assert synack.flags == SYN | ACK and not tcb.ecn_ok and tcb.accecn is None


def test_the_first_ack_reflecting_not_ect_completes_accecn() -> None:
    tcb = server_established()
    assert tcp_info(tcb)["ecn_mode"] == "accecn"
    assert tcb.counters["tcp_accecn_negotiated"] == 1
    tcb.send(b"x" * 3000)
    segs = expect(tcb, T + 0.2)
    assert segs and all(s.ecn == ECT_0 for s in segs)
    # No CWR and the ACE field at its initial 5 (101) on every segment.
    assert all(_ace_of(s) == 5 for s in segs)


@pytest.mark.parametrize(("first_ace", "ect", "s_ce"), [
    (2, True, 0), (5, True, 0), (1, True, 0), (7, True, 0),  # reflect nothing, or Not-ECT
    (3, False, 0), (4, False, 0), (6, False, 1)])
def test_a_changed_reflection_stops_ect_but_not_feedback(first_ace: int, ect: bool,
                                                         s_ce: int) -> None:
    """RFC 9768 3.1.5: 3 (ECT(1)), 4 (ECT(0)), 6 (CE) mean our Not-ECT SYN,ACK was
    changed on the way: our data goes Not-ECT, the ACE field goes on both ways; for
    6 the client's count starts at 6 and so does ours (Table 4: s.cep = 6) -- its
    next ACKs bring no new mark. 1, 5 and 7 reflect nothing and are fine (5: the
    first ACK was lost, this is a count)."""
    tcb = server_established(first_ace)
    a = tcb.accecn
    assert a is not None and a.ect is ect and a.feedback and a.s_ce == s_ce
    assert tcb.counters["tcp_accecn_mangled"] == (0 if ect else 1)
    tcb.send(b"x" * 3000)
    segs = expect(tcb, T + 0.2)
    assert all(s.ecn == (ECT_0 if ect else NOT_ECT) for s in segs)
    assert all(_ace_of(s) == 5 for s in segs)
    tcb.receive(peer(tcb, ack=segs[0].seq + len(segs[0].payload),
                     flags=ACK | accecn.ace_flags(5 + s_ce)), T + 0.3)
    assert tcb.counters["tcp_accecn_ce_delivered"] == 0


def test_ace_0_on_the_first_ack_means_no_ect_and_no_reading_of_ace() -> None:
    """RFC 9768 Table 4 note 1: a first ACK with ACE 0 comes from a client not in
    AccECN mode (or through a path zeroing the flags): send no ECT, read no ACE --
    its 000 is not 3 marks -- but keep sending the ACE field."""
    tcb = server_established(0)
    a = tcb.accecn
    assert a is not None and not a.ect and not a.feedback
    assert tcb.counters["tcp_accecn_mangled"] == 1
    tcb.send(b"x" * 3000)
    segs = expect(tcb, T + 0.2)
    assert segs and all(s.ecn == NOT_ECT and _ace_of(s) == 5 for s in segs)
    cwnd = tcb.cc.cwnd
    tcb.receive(peer(tcb, ack=segs[0].seq + len(segs[0].payload), flags=ACK), T + 0.3)
    assert tcb.counters["tcp_accecn_ce_delivered"] == 0
    assert tcb.counters["tcp_ecn_ece_reduced"] == 0 and tcb.cc.cwnd >= cwnd


def test_a_retransmitted_syn_ack_goes_without_flags_and_option_and_then_no_ect() -> None:
    """RFC 9768 3.1.4: the SYN,ACK may be what a middlebox drops; the retransmission
    goes without flags or option. A first ACK with ACE 0 then comes from a client
    that saw only it (note 1); either way, having sent a flagless SYN,ACK, we send
    no ECT (3.1.5)."""
    for first_ace in (0, 2):
        tcb, _ = server()
        tcb.handle_timer(T + 1.5)
        (again,) = expect(tcb, T + 1.5, 1)
        assert again.flags == SYN | ACK and again.options.accecn is None
        tcb.receive(peer(tcb, flags=ACK | accecn.ace_flags(first_ace)), T + 1.6)
        a = tcb.accecn
        assert tcb.state is State.ESTABLISHED and a is not None and not a.ect
        assert a.feedback is (first_ace != 0)
        tcb.send(b"x" * 100)
        (data,) = expect(tcb, T + 1.7, 1)
        assert data.ecn == NOT_ECT and _ace_of(data) == 5


@pytest.mark.parametrize(("flags", "ip_ecn", "reflected", "ect"), [
    (SYN | ALL, ECT_0, AE, True), (SYN, NOT_ECT, CWR, False)])
def test_a_repeated_syn_is_reflected_or_stops_ect(flags: int, ip_ecn: int, reflected: int,
                                                  ect: bool) -> None:
    """RFC 9768 3.1.5: the SYN,ACK answering a repeated SYN reflects that latest SYN;
    one without the flags (a client falling back) means no ECT from us."""
    tcb, first = server()
    assert first.flags == SYN | ACK | CWR
    again = syn_with_options(flags=flags, sack=True)._replace(ecn=ip_ecn)
    tcb.receive(again, T + 1.0)
    (synack,) = expect(tcb, T + 1.0, 1)
    assert synack.flags == SYN | ACK | reflected
    tcb.receive(peer(tcb, flags=ACK | CWR), T + 1.1)
    assert tcb.accecn is not None and tcb.accecn.ect is ect


# ------------------------------------------------------------ client handshake


def test_the_client_asks_with_all_three_flags_and_a_retransmission_does_not() -> None:
    tcb, syn = client()
    assert syn.flags == SYN | ALL and syn.ecn == NOT_ECT and syn.options.accecn is None
    tcb.handle_timer(T + 1.5)
    (again,) = expect(tcb, T + 1.5, 1)
    assert again.flags == SYN


@pytest.mark.parametrize(("flags", "mode", "ect"), [
    (0, None, False), (ALL, None, False),  # no ECN; a reflected SYN (broken)
    (ECE, "classic", True),
    (AE | ECE, "accecn", True),  # 101, unused so far: AccECN (3.1.3; Linux: classic)
    (CWR, "accecn", True),  # our Not-ECT SYN arrived Not-ECT
    (CWR | ECE, "accecn", False), (AE, "accecn", False), (AE | CWR, "accecn", False),
])
def test_the_client_reads_the_syn_ack_by_table_3(flags: int, mode: str | None,
                                                 ect: bool) -> None:
    """RFC 9768 Table 3, and 3.1.5: a SYN,ACK saying our Not-ECT SYN arrived ECT or
    CE shows a mangling path: AccECN feedback, but our data Not-ECT."""
    tcb, _ = client()
    tcb.receive(syn_ack(flags), T + 0.1)
    assert tcb.state is State.ESTABLISHED
    assert tcp_info(tcb)["ecn_mode"] == mode
    tcb.send(b"x" * 100)
    segs = expect(tcb, T + 0.1)
    data = [s for s in segs if s.payload]
    assert data and data[0].ecn == (ECT_0 if ect else NOT_ECT)


@pytest.mark.parametrize(("ecn", "first_ace"), [(NOT_ECT, 2), (ECT_1, 3), (ECT_0, 4),
                                                (CE, 6)])
def test_the_first_ack_reflects_the_syn_acks_ip_ecn_field(ecn: int, first_ace: int) -> None:
    """RFC 9768 Table 4; after it the ACE field counts CE packets from 5 -- 6 at once
    if the SYN,ACK itself came CE-marked."""
    tcb, _ = client()
    tcb.receive(syn_ack(CWR, ecn), T + 0.1)
    (ack,) = expect(tcb, T + 0.1, 1)
    assert ack.flags & ~ALL == ACK and _ace_of(ack) == first_ace
    tcb.send(b"x" * 10)
    (data,) = expect(tcb, T + 0.2, 1)
    assert _ace_of(data) == (6 if ecn == CE else 5)


def test_after_a_flagless_retransmitted_syn_an_accecn_syn_ack_still_counts() -> None:
    """RFC 9768 3.1.4.1, 3.1.5: the SYN,ACK may answer our first SYN; its mode is
    taken (the server is in it), but having sent a flagless SYN we send no ECT."""
    tcb, _ = client()
    tcb.handle_timer(T + 1.5)
    (again,) = expect(tcb, T + 1.5, 1)
    assert again.flags == SYN
    tcb.receive(syn_ack(CWR), T + 1.6)
    (ack,) = expect(tcb, T + 1.6, 1)
    assert tcp_info(tcb)["ecn_mode"] == "accecn" and _ace_of(ack) == 2
    assert tcb.accecn is not None and not tcb.accecn.ect


def test_a_classic_syn_ack_after_a_flagless_retransmitted_syn_means_no_ecn() -> None:
    """RFC 3168 6.1.1: no ECT after a non-ECN-setup SYN; classic ECN has no feedback
    mode apart from sending ECT, so the connection does no ECN (as with "on")."""
    tcb, _ = client()
    tcb.handle_timer(T + 1.5)
    expect(tcb, T + 1.5, 1)
    tcb.receive(syn_ack(ECE), T + 1.6)
    assert tcp_info(tcb)["ecn_mode"] is None
    tcb.send(b"x")
    assert all(s.ecn == NOT_ECT for s in expect(tcb, T + 1.7))


@pytest.mark.parametrize("end", ["rst", "abort"])
def test_no_reflecting_ack_once_the_connection_is_gone(end: str) -> None:
    """A RST (or abort) right after the SYN,ACK: nothing more is sent, the first ACK
    with its reflection included."""
    tcb, _ = client()
    tcb.receive(syn_ack(CWR), T + 0.1)
    if end == "rst":
        tcb.receive(peer(tcb, flags=RST), T + 0.1)
    else:
        tcb.abort()
    assert tcb.state is State.CLOSED
    assert all(s.flags & RST for s in expect(tcb, T + 0.1))


def test_the_reflecting_first_ack_is_a_pure_ack_before_any_data() -> None:
    """RFC 9768 3.2.2.1: only a pure ACK carries the handshake encoding; data written
    before the SYN,ACK follows it, with the count (5)."""
    tcb, _ = client()
    tcb.send(b"early bytes")
    tcb.receive(syn_ack(CWR, ECT_0), T + 0.1)
    first, data = expect(tcb, T + 0.1, 2)
    assert not first.payload and _ace_of(first) == 4  # the SYN,ACK came ECT(0)
    assert data.payload == b"early bytes" and _ace_of(data) == 5


def test_a_simultaneous_open_answers_the_peers_syn_as_a_server_would() -> None:
    """RFC 9768 3.1.2: each end of a simultaneous open enters the mode it would as a
    responder and reflects the other's SYN (Table 2); both end in AccECN mode."""
    cfg = base_config(ecn="accecn")
    a = Tcb.active_open(cfg, REMOTE, LOCAL, 111, T)
    b = Tcb.active_open(cfg, LOCAL, REMOTE, 999, T)
    syn_a, syn_b = a.segments_to_send(T), b.segments_to_send(T)
    for s in syn_a:
        b.receive(s._replace(ecn=ECT_1), T + 0.01)  # as if the path marked it ECT(1)
    for s in syn_b:
        a.receive(s, T + 0.01)
    assert a.state is State.SYN_RECEIVED and b.state is State.SYN_RECEIVED
    (synack_b,) = b.segments_to_send(T + 0.01)
    (synack_a,) = a.segments_to_send(T + 0.01)
    assert synack_b.flags == SYN | ACK | CWR | ECE and synack_a.flags == SYN | ACK | CWR
    pair = Pair(a, b, now=T + 0.01)
    a.receive(synack_b, T + 0.02)
    b.receive(synack_a, T + 0.02)
    pair.run(until=lambda: a.state is State.ESTABLISHED and b.state is State.ESTABLISHED)
    assert tcp_info(a)["ecn_mode"] == tcp_info(b)["ecn_mode"] == "accecn"
    a.send(b"ping")
    pair.run(until=lambda: b.recv_buffered == 4)
    assert b.recv() == b"ping"


def test_the_client_sends_the_option_only_if_the_syn_ack_had_one() -> None:
    for options, sends in ((TcpOptions(mss=1460, accecn=FIELDS_INIT), True),
                           (TcpOptions(mss=1460), False)):
        tcb, _ = client()
        tcb.receive(syn_ack(CWR, options=options), T + 0.1)
        (ack,) = expect(tcb, T + 0.1, 1)
        assert (ack.options.accecn == FIELDS_INIT) is sends
        assert (ack.options.accecn is None) is not sends


@pytest.mark.parametrize("client_option", [True, False])
def test_the_server_sends_the_option_on_pure_acks_only_once_the_client_did(
        client_option: bool) -> None:
    """RFC 9768 3.2.3: a peer whose first ACK came without the option may sit behind a
    path stripping it (as Linux, we then send none); data segments never carry it."""
    tcb, _ = server()
    opts = TcpOptions(accecn=FIELDS_INIT) if client_option else TcpOptions()
    tcb.receive(peer(tcb, flags=ACK | CWR, options=opts), T + 0.1)
    tcb.receive(peer(tcb, payload=b"q" * 100)._replace(ecn=ECT_0), T + 0.2)
    tcb.send(b"r" * 100)
    segs = expect(tcb, T + 0.2)
    acks = [s for s in segs if not s.payload]
    data = [s for s in segs if s.payload]
    assert data and all(s.options.accecn is None for s in data)
    tcb.receive(peer(tcb, payload=b"s" * 100)._replace(ecn=ECT_0), T + 0.3)
    acks += [s for s in expect(tcb, T + 0.3) if not s.payload]
    assert acks
    if client_option:  # 200 bytes of ECT(0) received so far: EE0B = 1 + 200
        assert acks[-1].options.accecn == (1 + 200, 0, 1)
    else:
        assert all(s.options.accecn is None for s in acks)


# --------------------------------------------------------------------- receiver


def test_ce_marks_count_into_ace_and_bytes_into_the_option() -> None:
    """RFC 9768 3.2.2.2: r.cep counts every CE packet, pure ACKs included; the
    option counts payload bytes per codepoint (ECT(0)/ECT(1) from 1)."""
    tcb = client_established()
    now = T + 0.2
    for i, (ecn, size) in enumerate([(CE, 100), (ECT_0, 200), (CE, 0), (ECT_1, 50),
                                     (CE, 300)]):
        tcb.receive(peer(tcb, payload=b"d" * size)._replace(ecn=ecn), now + i * 0.01)
    a = tcb.accecn
    assert a is not None and a.r_cep == 3
    assert (a.r_e0b, a.r_ceb, a.r_e1b) == (200, 400, 50)
    assert tcb.counters["tcp_ecn_ce_received"] == 3
    acks = [s for s in expect(tcb, now + 0.1) if not s.payload]
    assert acks and _ace_of(acks[-1]) == (5 + 3) & 7
    assert acks[-1].options.accecn == (201, 400, 51)
    assert tcp_info(tcb)["accecn"]["bytes_received"] == {"ect0": 200, "ect1": 50, "ce": 400}


def test_a_change_of_codepoint_or_two_marks_are_acked_at_once() -> None:
    """RFC 9768 3.2.2.5.1: with delayed ACKs, data whose IP-ECN field differs from the
    previous arrival's, or the second CE mark awaiting feedback, is ACKed at once."""
    tcb = client_established(delayed_ack=0.2)
    now = T + 0.2
    tcb.receive(peer(tcb, payload=b"a" * 100), now)  # Not-ECT, as the SYN,ACK: delayed
    assert not [s for s in expect(tcb, now) if not s.payload]
    tcb.receive(peer(tcb, payload=b"b" * 100)._replace(ecn=ECT_0), now + 0.01)
    (ack,) = expect(tcb, now + 0.01, 1)  # ECT(0) after Not-ECT: at once
    assert _ace_of(ack) == 5
    tcb.receive(peer(tcb, payload=b"c" * 100)._replace(ecn=CE), now + 0.02)
    (ack,) = expect(tcb, now + 0.02, 1)  # CE after ECT(0): at once
    assert _ace_of(ack) == 6
    tcb.receive(peer(tcb, payload=b"d" * 100)._replace(ecn=CE), now + 0.03)
    assert not expect(tcb, now + 0.03)  # one CE unreported, same codepoint: waits
    tcb.receive(peer(tcb, payload=b"e" * 100)._replace(ecn=CE), now + 0.04)
    (ack,) = expect(tcb, now + 0.04, 1)  # the second: at once
    assert _ace_of(ack) == (5 + 3) & 7


def test_a_ce_marked_pure_ack_counts_but_draws_no_ack() -> None:
    tcb = client_established()
    tcb.receive(peer(tcb)._replace(ecn=CE), T + 0.2)
    assert tcb.accecn is not None and tcb.accecn.r_cep == 1 and not expect(tcb, T + 0.2)
    tcb.send(b"x")
    (data,) = expect(tcb, T + 0.3, 1)
    assert _ace_of(data) == 6


def test_the_ace_field_wraps_modulo_8() -> None:
    tcb = client_established()
    for i in range(11):
        tcb.receive(peer(tcb, payload=b"z")._replace(ecn=CE), T + 0.2 + i * 0.01)
    acks = [s for s in expect(tcb, T + 0.4) if not s.payload]
    assert _ace_of(acks[-1]) == (5 + 11) & 7


# ----------------------------------------------------------------------- sender


def _sender(**cfg: object) -> tuple[Tcb, list[OutSegment]]:
    tcb = server_established(congestion_control="cubic", **cfg)
    tcb.send(b"x" * 40_000)
    return tcb, expect(tcb, T + 0.2)


def test_new_marks_in_ace_reduce_the_window_once_per_round_trip() -> None:
    """RFC 9768 3.2.2.5 with the classic reaction (3168 6.1.2, as Linux's CUBIC over
    AccECN): one reduction per window, no retransmission, and never CWR."""
    tcb, first = _sender()
    cwnd = tcb.cc.cwnd
    one = first[0].seq + len(first[0].payload)
    tcb.receive(peer(tcb, ack=one, flags=ACK | accecn.ace_flags(6)), T + 0.3)
    assert tcb.counters["tcp_accecn_ce_delivered"] == 1
    assert tcb.counters["tcp_ecn_ece_reduced"] == 1 and tcb.cc.ssthresh == int(cwnd * 0.7)
    assert tcb.scoreboard.lost_bytes == 0
    after = expect(tcb, T + 0.3)
    # No CWR: ACE (AE|ECE: 5, our own count, nothing received CE) on all of them.
    assert after and all(_ace_of(s) == 5 for s in after)
    # Two more marks in the same window: counted, no second reduction.
    tcb.receive(peer(tcb, ack=one + 2920, flags=ACK | accecn.ace_flags(8)), T + 0.31)
    assert tcb.counters["tcp_accecn_ce_delivered"] == 3
    assert tcb.counters["tcp_ecn_ece_reduced"] == 1
    assert tcp_info(tcb)["accecn"]["ce_delivered"] == 3


def test_an_ack_delivering_nothing_is_not_read() -> None:
    """A reordered ACK or a window update (no new data acknowledged) is not read for
    ACE (as Linux's FLAG_FORWARD_PROGRESS); the next one that delivers data is."""
    tcb, first = _sender()
    tcb.receive(peer(tcb, ack=tcb.snd_una, flags=ACK | accecn.ace_flags(6),
                     window=60_000), T + 0.3)
    assert tcb.counters["tcp_accecn_ce_delivered"] == 0
    tcb.receive(peer(tcb, ack=first[0].seq + 1460, flags=ACK | accecn.ace_flags(6)), T + 0.31)
    assert tcb.counters["tcp_accecn_ce_delivered"] == 1


def test_unchanged_ace_changes_nothing() -> None:
    tcb, first = _sender()
    cwnd = tcb.cc.cwnd
    tcb.receive(peer(tcb, ack=first[1].seq + 1460, flags=ACK | accecn.ace_flags(5)), T + 0.3)
    assert tcb.counters["tcp_accecn_ce_delivered"] == 0 and tcb.cc.cwnd >= cwnd


@pytest.mark.parametrize(("ace_value", "expected", "packets", "ce_bytes", "marks"), [
    (6, 5, 2, None, 1),       # few packets: ACE cannot have wrapped
    (5, 5, 7, None, 0),
    (6, 5, 10, None, 9),      # 10 packets, ACE +1: 1 or 9 -- the safe estimate is 9
    (5, 5, 10, None, 8),      # ACE unchanged over 10 packets: 0 or 8 -> 8
    (6, 5, 10, 1460, 1),      # the option shows one packet's worth of CE bytes
    (6, 5, 10, 9 * 1460, 9),  # ... or nine
    (6, 5, 10, 0, 1),         # no CE bytes at all: no wrap
    (6, 5, 10, 700, 1),       # under one packet's worth: the plain delta
    (6, 5, 10, 3 * 1460, 9),  # more than the plain delta's worth: the safe estimate
    (2, 7, 3, None, 3),       # modulo 8
])
def test_ce_delta_guards_against_ace_wrap(ace_value: int, expected: int, packets: int,
                                          ce_bytes: int | None, marks: int) -> None:
    """RFC 9768 3.2.2.5 and Appendix A.2 (as Linux's __tcp_accecn_process)."""
    assert ce_delta(ace_value, expected, packets, 1460, ce_bytes) == marks


def test_a_big_ack_over_a_wrapped_ace_counts_the_safe_estimate() -> None:
    tcb, first = _sender()
    end = first[9].seq + len(first[9].payload)  # ten segments at once, ACE unchanged
    tcb.receive(peer(tcb, ack=end, flags=ACK | accecn.ace_flags(5)), T + 0.3)
    assert tcb.counters["tcp_accecn_ce_delivered"] == 8
    assert tcb.counters["tcp_ecn_ece_reduced"] == 1


def test_the_option_resolves_a_possible_wrap() -> None:
    tcb, first = _sender()
    a = tcb.accecn
    assert a is not None
    # The option (seen since the handshake) says no CE bytes: no marks at all.
    end = first[9].seq + len(first[9].payload)
    opt = TcpOptions(accecn=(1 + 10 * 1460, 0, 1))
    tcb.receive(peer(tcb, ack=end, flags=ACK | accecn.ace_flags(5), options=opt), T + 0.3)
    assert tcb.counters["tcp_accecn_ce_delivered"] == 0 and a.s_e0b == 10 * 1460
    info = tcp_info(tcb)["accecn"]
    assert info["option"] and info["bytes_delivered"]["ect0"] == 10 * 1460


def test_a_zeroed_option_is_ignored_from_then_on() -> None:
    """RFC 9768 3.2.3.2: EE0B or EE1B at 0 in the first option means a path zeroing
    it (their counts start at 1)."""
    a = AccEcn()
    assert a.take_option((0, 0, 0)) is None and a.opt_seen == 2
    assert a.take_option((1 + 1460, 1460, 1)) is None and a.s_e0b == 0
    b = AccEcn()
    assert b.take_option((1, 0, 1)) == 0 and b.opt_seen == 1
    assert b.take_option((1 + 1460, 1460, 1)) == 1460
    assert b.take_option((1, 0, 1)) is None  # older than the last: not reliable


# --------------------------------------------------------------- SYN cookies


@pytest.mark.parametrize(("first_ace", "mode"), [(2, "accecn"), (0, None)])
def test_a_syn_cookie_reflects_and_the_first_ack_decides(first_ace: int,
                                                         mode: str | None) -> None:
    """Stateless, as Linux's cookie_accecn_ok: the cookie SYN,ACK reflects the SYN's
    field (Table 2: ECT(0) -> AE) with the option's initial counts; a first ACK
    whose ACE is above 1 can only come from an AccECN client, 0 from one that took
    no ECN."""
    st = Stack(StackConfig(addresses=(ipaddress.IPv4Address("10.0.0.2"),),
                           syncookies="always"), rng=random.Random(3))
    st.listen(80)
    syn = syn_with_options(flags=SYN | ALL, sack=True)._replace(dst_port=80, ecn=ECT_0)
    st.receive(emit_tcp(syn, ip("10.0.0.1"), ip("10.0.0.2"), 1), T)
    (pkt,) = st.packets_to_send(T)
    synack = parse(pkt).seg
    assert synack.flags == SYN | ACK | AE and synack.options.accecn == FIELDS_INIT
    assert st.counters["tcp_syncookie_sent"] == 1
    ack = TcpSegment(REMOTE_PORT, 80, seq_add(IRS, 1), seq_add(synack.seq, 1),
                     ACK | accecn.ace_flags(first_ace), 1000, TcpOptions())
    st.receive(emit_tcp(ack, ip("10.0.0.1"), ip("10.0.0.2"), 2), T + 0.01)
    (tcb,) = st.tcbs.values()
    assert tcb.state is State.ESTABLISHED and tcp_info(tcb)["ecn_mode"] == mode
    tcb.send(b"x" * 100)
    data = [parse(p).seg for p in st.packets_to_send(T + 0.02)]
    assert data and _ace_of(data[0]) == (5 if mode else 0)


# ------------------------------------------------------------------ end to end


def test_two_stacks_feed_back_every_ce_mark_through_a_marking_bottleneck() -> None:
    """AccECN between two stacks, both directions, through a bottleneck marking at 8
    queued packets: the senders learn of exactly the marks the path made -- where
    classic ECN learns of at most one per round trip -- and nothing is dropped."""
    path = ImpairSpec.parse("rate=2mbps,queue=40,mark=8,delay=5ms,seed=1")
    net = stack_pair(TcpConfig(msl=1.0, ecn="accecn"), path=path)
    client, server = transfer(net, 1_000_000, 300_000)
    assert bytes(server.received) == client.data and bytes(client.received) == server.data
    c = net.path.counters
    assert c["out_ce_marked"] > 0 and c["in_ce_marked"] > 0
    assert c["out_tail_dropped"] + c["in_tail_dropped"] == 0
    # a (10.0.0.1) sends 1 MB out; b sends 300 kB back in.
    assert net.a.counters["tcp_accecn_ce_delivered"] == c["out_ce_marked"]
    assert net.b.counters["tcp_accecn_ce_delivered"] == c["in_ce_marked"]
    assert net.b.counters["tcp_ecn_ce_received"] == c["out_ce_marked"]
    assert net.a.counters["tcp_ecn_ece_reduced"] > 0
    assert net.a.counters["tcp_accecn_negotiated"] == net.b.counters["tcp_accecn_negotiated"] == 1
    assert net.a.counters["tcp_retrans_segs"] == 0


def test_an_accecn_client_and_a_classic_only_peer_agree_classic_ecn() -> None:
    """A server answering 001 (classic only: Linux's default tcp_ecn=2) gives the
    AccECN client classic ECN: ECE and CWR as RFC 3168."""
    tcb, _ = client()
    tcb.receive(syn_ack(ECE), T + 0.1)
    drain(tcb, T + 0.1)
    tcb.receive(peer(tcb, payload=b"a")._replace(ecn=CE), T + 0.2)
    (ack,) = expect(tcb, T + 0.2, 1)
    assert ack.flags & ECE and not ack.flags & AE and tcb.ecn_echo


def test_the_ip_ecn_field_and_ae_flag_survive_the_wire() -> None:
    tcb = server_established()
    tcb.receive(peer(tcb, payload=b"q")._replace(ecn=CE), T + 0.2)
    (ack,) = expect(tcb, T + 0.2, 1)
    pkt = emit_tcp(ack, 0x0A000002, 0x0A000001, 1)
    back = parse_tcp(memoryview(pkt)[20:], 0x0A000002, 0x0A000001)
    assert back.flags == ack.flags and _ace_of(back) == 6 and back.flags & AE
    assert back.options.accecn == ack.options.accecn


def test_ladder_and_table_show_accecn() -> None:
    from tcpstack.observe.ladder import render_text
    from tcpstack.observe.table import render_rows, rows
    net = stack_pair(TcpConfig(ecn="accecn"))
    doc, _ = opening_ladder(net)
    events = doc["events"]
    assert isinstance(events, list)
    assert events[0]["flags"] == "SYN,ECE,CWR,AE" and events[1]["flags"] == "SYN,ACK,CWR"
    text = render_text(doc)  # type: ignore[arg-type]
    assert "Accurate ECN (RFC 9768)" in text and "AccECN EE0B 1 ECEB 0 EE1B 1" in text
    (row,) = rows(net.b, None, net.now)
    assert " accecn " in render_rows([row], info=True)
