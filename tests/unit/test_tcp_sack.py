"""Selective acknowledgments: SACK-permitted negotiation and SACK block generation
(RFC 2018), duplicate SACK (RFC 2883), the sender's scoreboard (RFC 6675 4), and
ECN negotiation being declined (RFC 3168 6.1.1)."""

from __future__ import annotations

import dataclasses

import pytest
from tcp_helpers import (
    BASE_CONFIG,
    IRS,
    ISS,
    LOCAL,
    PURE_ONLY,
    REMOTE,
    base_config,
    expect,
    expect_one,
    pattern,
    peer,
    peer_opts,
    syn_with_options,
    tcb_established,
    tcb_established_opts,
)

from tcpstack.tcp import scoreboard as scoreboard_module
from tcpstack.tcp.scoreboard import Scoreboard
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import (
    ACK,
    CWR,
    ECE,
    MAX_OPTIONS_LEN,
    SYN,
    TcpSegment,
    encode_options,
)

RCV = IRS + 1
SND = ISS + 1
DATA = pattern(40_000, seed=5)


def deliver(tcb: Tcb, off: int, n: int, now: float = 1.0) -> TcpSegment:
    """The peer's bytes ``[off, off + n)`` arrive; return the single ACK they draw."""
    tcb.receive(peer(tcb, seq=RCV + off, payload=DATA[off:off + n],
                     options=peer_opts(tcb, now)), now)
    return expect_one(tcb, now, ACK)


def blocks(seg: TcpSegment) -> list[tuple[int, int]]:
    """SACK blocks as offsets from RCV."""
    return [(a - RCV, b - RCV) for a, b in seg.options.sack_blocks]


# -------------------------------------------------------------- negotiation


@pytest.mark.parametrize("offered", [True, False])
def test_synack_carries_sack_permitted_only_if_syn_had_it(offered: bool) -> None:
    """RFC 2018 2: SACK-permitted may be sent in a SYN,ACK only if it was received in
    the SYN."""
    tcb = Tcb.passive_open(BASE_CONFIG, LOCAL, REMOTE, syn_with_options(sack=offered),
                           ISS, 0.0)
    (synack,) = expect(tcb, 0.0, 1)
    assert synack.flags == SYN | ACK
    assert synack.options.sack_permitted is offered
    assert tcb.sack_ok is offered


def test_synack_without_sack_permitted_when_disabled_locally() -> None:
    """RFC 2018 2: SACK is used only if both ends enable it; with ``sack=False`` the
    SYN,ACK does not agree even though the SYN offered it."""
    tcb = Tcb.passive_open(base_config(sack=False), LOCAL, REMOTE,
                           syn_with_options(sack=True), ISS, 0.0)
    (synack,) = expect(tcb, 0.0, 1)
    assert not synack.options.sack_permitted
    assert not tcb.sack_ok


def test_active_open_offers_sack_permitted() -> None:
    """RFC 2018 2: a SACK-capable sender offers SACK-permitted in its SYN."""
    tcb = Tcb.active_open(BASE_CONFIG, REMOTE, LOCAL, ISS, 0.0)
    (syn,) = expect(tcb, 0.0, 1)
    assert syn.flags == SYN and syn.options.sack_permitted


def test_ecn_setup_syn_accepted_synack_has_neither_ece_nor_cwr() -> None:
    """RFC 3168 6.1.1: a host that does not do ECN (``ecn="off"``) answers an ECN-setup
    SYN (ECE|CWR) with a plain SYN,ACK: neither ECE nor CWR set, and the connection
    proceeds without them."""
    syn = syn_with_options(flags=SYN | ECE | CWR, sack=True)
    cfg = dataclasses.replace(BASE_CONFIG, ecn="off")
    tcb = Tcb.passive_open(cfg, LOCAL, REMOTE, syn, ISS, 0.0)
    (synack,) = expect(tcb, 0.0, 1)
    assert synack.flags == SYN | ACK
    assert not synack.flags & (ECE | CWR)
    tcb.receive(peer(tcb), 0.1)
    tcb.send(b"data")
    (seg,) = expect(tcb, 0.1, 1)
    assert not seg.flags & (ECE | CWR)


# -------------------------------------------------------- SACK generation


def test_no_sack_blocks_when_not_negotiated() -> None:
    """RFC 2018 3: SACK options are sent only if SACK-permitted was received in the SYN."""
    tcb = tcb_established_opts(sack=False, ts=False)
    ack = deliver(tcb, 2000, 1000)
    assert ack.ack == RCV
    assert ack.options.sack_blocks == ()
    plain = tcb_established()  # SYN without any options
    ack = deliver(plain, 2000, 1000)
    assert ack.options.sack_blocks == ()


def test_duplicate_ack_carries_sack_block_for_queued_data() -> None:
    """RFC 2018 4: an ACK for out-of-order data SHOULD carry SACK blocks describing the
    queued runs."""
    tcb = tcb_established_opts(ts=False)
    ack = deliver(tcb, 2000, 1000)
    assert ack.ack == RCV
    assert blocks(ack) == [(2000, 3000)]


def test_sack_first_block_contains_most_recent_segment() -> None:
    """RFC 2018 4: the first SACK block MUST specify the contiguous run containing the
    segment that triggered this ACK; the rest repeat the most recent earlier blocks."""
    tcb = tcb_established_opts(ts=False)
    assert blocks(deliver(tcb, 2000, 500)) == [(2000, 2500)]
    assert blocks(deliver(tcb, 6000, 500)) == [(6000, 6500), (2000, 2500)]
    assert blocks(deliver(tcb, 4000, 500)) == [(4000, 4500), (6000, 6500), (2000, 2500)]
    # Extending the oldest run moves it to the front, merged.
    assert blocks(deliver(tcb, 2500, 500)) == [(2000, 3000), (4000, 4500), (6000, 6500)]
    # Bridging two runs yields one block that covers both.
    assert blocks(deliver(tcb, 4500, 1500)) == [(4000, 6500), (2000, 3000)]


@pytest.mark.parametrize(("ts", "limit"), [(True, 3), (False, 4)])
def test_sack_block_count_limited_by_option_space(ts: bool, limit: int) -> None:
    """RFC 2018 3: 40 bytes of options hold at most 4 SACK blocks, or 3 when the 10-byte
    timestamp option is also present (RFC 7323)."""
    tcb = tcb_established_opts(ts=ts)
    ack = None
    for k in range(6):
        ack = deliver(tcb, 2000 + 2000 * k, 500)
    assert ack is not None
    assert len(ack.options.sack_blocks) == limit
    assert blocks(ack)[0] == (12000, 12500)  # still the most recent first
    assert len(encode_options(ack.options, syn=False)) <= MAX_OPTIONS_LEN
    assert (ack.options.timestamps is not None) is ts


def test_sack_blocks_disappear_when_gap_fills() -> None:
    """RFC 2018 4: SACK blocks describe only data above the cumulative ACK; when the hole
    fills, the ACK covers everything and carries no SACK option."""
    tcb = tcb_established_opts(ts=False)
    deliver(tcb, 1000, 1000)
    ack = deliver(tcb, 0, 1000)
    assert ack.ack == RCV + 2000
    assert ack.options.sack_blocks == ()


def test_sack_blocks_above_remaining_gap_still_reported() -> None:
    """RFC 2018 4: after a partial fill, runs beyond the remaining hole are still SACKed."""
    tcb = tcb_established_opts(ts=False)
    deliver(tcb, 1000, 1000)
    deliver(tcb, 3000, 1000)
    ack = deliver(tcb, 0, 1000)
    assert ack.ack == RCV + 2000
    assert blocks(ack) == [(3000, 4000)]


def test_data_segments_carry_sack_blocks_and_shrink_payload() -> None:
    """RFC 2018 4 (SACK in every ACK while data is queued) and RFC 6691 (the MSS excludes
    options): our data segments carry the SACK option, so their payload shrinks by the
    option's size."""
    tcb = tcb_established_opts(ts=False)
    deliver(tcb, 1000, 1000)
    tcb.send(pattern(5000))
    segs = expect(tcb, 1.1)
    assert all(blocks(s) == [(1000, 2000)] for s in segs)
    assert len(segs[0].payload) == 1460 - (4 + 8)  # NOP NOP kind len + one block


# ------------------------------------------------------------------- D-SACK


def test_dsack_for_fully_duplicate_segment_below_rcv_nxt() -> None:
    """RFC 2883 4.1.1: a segment entirely below RCV.NXT is reported as a D-SACK block,
    the first block of the ACK it triggers."""
    tcb = tcb_established_opts(ts=False)
    deliver(tcb, 0, 1000)
    ack = deliver(tcb, 0, 1000)  # the same segment again
    assert ack.ack == RCV + 1000
    assert blocks(ack)[:1] == [(0, 1000)]


def test_dsack_for_partial_duplicate_in_first_block() -> None:
    """RFC 2883 4.1.1: when a segment overlaps data already received, the duplicate part
    is reported as the first SACK block of the next ACK."""
    tcb = tcb_established_opts(ts=False)
    deliver(tcb, 0, 1000)
    ack = deliver(tcb, 500, 1000)  # [500, 1000) duplicate, [1000, 1500) new
    assert ack.ack == RCV + 1500
    assert blocks(ack)[:1] == [(500, 1000)]


def test_dsack_for_duplicate_of_queued_out_of_order_data() -> None:
    """RFC 2883 4.2.1: a duplicate of queued out-of-order data is reported in the first
    block (D-SACK), followed by the SACK block of the run containing it."""
    tcb = tcb_established_opts(ts=False)
    deliver(tcb, 2000, 1000)
    ack = deliver(tcb, 2000, 1000)
    assert ack.ack == RCV
    assert blocks(ack) == [(2000, 3000), (2000, 3000)]


def test_dsack_piggybacked_on_data_then_not_repeated() -> None:
    """RFC 2883 4: the D-SACK goes in the first block of the next segment sent (here a
    data segment) and is not repeated in later ACKs."""
    tcb = tcb_established_opts(ts=False)
    deliver(tcb, 2000, 1000)
    tcb.receive(peer(tcb, seq=RCV + 2000, payload=DATA[2000:3000]), 1.1)
    tcb.send(b"reply")
    (seg,) = expect(tcb, 1.1, 1)
    assert seg.payload == b"reply"
    assert blocks(seg) == [(2000, 3000), (2000, 3000)]
    later = deliver(tcb, 5000, 500, now=1.2)
    assert blocks(later) == [(5000, 5500), (2000, 3000)]


def test_dsack_reported_on_exactly_one_segment_of_a_burst() -> None:
    """RFC 2883 4: "each duplicate contiguous sequence of data received is reported in
    at most one D-SACK block"."""
    tcb = tcb_established_opts(ts=False)
    deliver(tcb, 2000, 1000)
    tcb.receive(peer(tcb, seq=RCV + 2000, payload=DATA[2000:3000]), 1.1)
    tcb.send(pattern(4000))
    segs = expect(tcb, 1.1, 3)
    with_dsack = [s for s in segs if blocks(s)[:2] == [(2000, 3000), (2000, 3000)]]
    assert len(with_dsack) == 1


# ------------------------------------------------------ sender scoreboard


def test_scoreboard_sack_marks_and_splits_records() -> None:
    """RFC 6675 4: SACKed bytes are tracked exactly, splitting a transmitted run that a
    block covers only in part."""
    sb = Scoreboard()
    sb.on_send(SND, SND + 3000, 1.0, seg=1000)  # TSO super-segments of 1000-byte segments
    sb.on_send(SND + 3000, SND + 6000, 1.0, seg=1000)
    newly = sb.sack(((SND + 1000, SND + 4000),), SND, SND + 6000, 1.1)
    assert newly == 3000 and sb.sacked_bytes == 3000
    spans = [(r.start - SND, r.end - SND, r.sacked) for r in sb.recs]
    assert spans == [(0, 1000, False), (1000, 3000, True), (3000, 4000, True),
                     (4000, 6000, False)]
    # Repeating the block adds nothing.
    assert sb.sack(((SND + 1000, SND + 4000),), SND, SND + 6000, 1.2) == 0


def test_scoreboard_ignores_invalid_blocks() -> None:
    """RFC 2018 / RFC 6675 4: blocks beyond SND.MAX or with left >= right are bogus and
    must not mark anything."""
    sb = Scoreboard()
    sb.on_send(SND, SND + 2000, 1.0)
    assert sb.sack(((SND + 1000, SND + 3000), (SND + 500, SND + 500)),
                   SND, SND + 2000, 1.1) == 0
    assert sb.sacked_bytes == 0


def test_scoreboard_counts_dsack_only_in_first_block() -> None:
    """RFC 2883 4: a first block at or below the cumulative ACK is a D-SACK."""
    sb = Scoreboard()
    sb.on_send(SND + 1000, SND + 2000, 1.0, seg=500)
    sb.sack(((SND, SND + 500),), SND + 1000, SND + 2000, 1.1)
    assert sb.dsack_seen == 1
    sb.sack(((SND + 1000, SND + 1500), (SND, SND + 500)), SND + 1000, SND + 2000, 1.1)
    assert sb.dsack_seen == 1  # a later block below SND.UNA is merely stale
    assert sb.sacked_bytes == 500


def test_scoreboard_cumulative_ack_releases_sacked_and_lost_bytes() -> None:
    """RFC 6675 4 (pipe bookkeeping): cumulatively acknowledged records leave the
    scoreboard with their SACKed and lost bytes."""
    sb = Scoreboard()
    for i in range(4):
        sb.on_send(SND + 1000 * i, SND + 1000 * (i + 1), 1.0)
    sb.sack(((SND + 2000, SND + 3000),), SND, SND + 4000, 1.1)
    sb.mark_lost_from()
    assert (sb.sacked_bytes, sb.lost_bytes) == (1000, 3000)
    assert sb.ack(SND + 3500, 1.2) == 3000
    assert (sb.sacked_bytes, sb.lost_bytes) == (0, 500)
    assert [(r.start - SND, r.end - SND) for r in sb.recs] == [(3500, 4000)]


def test_sender_applies_peer_sack_blocks() -> None:
    """RFC 6675 4: SACK blocks in an ACK update the sender's scoreboard."""
    tcb = tcb_established_opts(base_config(tlp=False), ts=False)
    tcb.send(pattern(4 * 1460))
    expect(tcb, 1.0, 4)
    tcb.receive(peer(tcb, ack=SND, options=peer_opts(tcb, 1.1, sack=(
        (SND + 1460, SND + 2920),))), 1.1)
    assert tcb.scoreboard.sacked_bytes == 1460


# ------------------------------------------------- hostile SACK blocks (bounded cost)


def _tso_sender(nbytes: int) -> tuple[Tcb, int]:
    """An established sender with TSO, ``nbytes`` in flight as super-segments."""
    tcb = tcb_established_opts(base_config(tlp=False, tso_size=64_000, snd_buf=1 << 22),
                               ts=False, window=65535, wscale=7)
    tcb.send(pattern(nbytes))
    tcb.segments_to_send(1.0)
    return tcb, tcb.gso_size


def test_sack_blocks_never_split_the_scoreboard_below_a_segment() -> None:
    """A peer SACKing single bytes at odd offsets (Linux's tcp_match_skb_to_sack rule,
    RFC 6675 4 leaves the granularity to the sender): records are split only at
    segment boundaries, so their number stays bounded by the segments in flight."""
    tcb, mss = _tso_sender(300_000)
    flight = tcb.snd_nxt - tcb.snd_una
    for k in range(1, 2000):
        left = SND + 7 * k + 3
        tcb.receive(peer(tcb, ack=SND, options=peer_opts(tcb, 1.1, sack=(
            (left, left + 1),))), 1.1)
    sb = tcb.scoreboard
    assert len(sb.recs) <= -(-flight // mss)
    assert all(r.length >= mss for r in sb.recs[:-1])
    assert sb.sacked_bytes == 0  # no single byte marks a segment
    assert tcb.counters["internal_error"] == 0


def test_sack_of_whole_segments_inside_a_super_segment_still_marks_them() -> None:
    """RFC 6675 4: a block covering whole segments of a super-segment marks exactly
    those, and only the uncovered edges of partly covered segments stay unmarked."""
    tcb, mss = _tso_sender(10 * 1448)
    sb = tcb.scoreboard
    left, right = SND + 2 * mss + 5, SND + 6 * mss - 5
    tcb.receive(peer(tcb, ack=SND, options=peer_opts(tcb, 1.1, sack=((left, right),))), 1.1)
    assert sb.sacked_bytes == 2 * mss  # segments 3 and 4 lie entirely inside the block
    marked = [(r.start - SND, r.end - SND) for r in sb.recs if r.sacked]
    assert marked == [(3 * mss, 5 * mss)]


@PURE_ONLY
def test_rack_work_per_ack_does_not_grow_with_the_segments_in_flight(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """RACK looks only at candidates whose verdict can change (RFC 8985's time-ordered
    list): an ACK that SACKs the newest segment visits about as many records with 50
    or 2000 segments in flight (counted as reads of a record's ``lost`` flag)."""
    visits = 0
    member = scoreboard_module.Sent.__dict__["lost"]

    def read(rec: scoreboard_module.Sent) -> bool:
        nonlocal visits
        visits += 1
        return bool(member.__get__(rec))

    def write(rec: scoreboard_module.Sent, value: bool) -> None:
        member.__set__(rec, value)

    def cost(segments: int) -> int:
        nonlocal visits
        sb = Scoreboard()
        for i in range(segments):
            sb.on_send(SND + 1000 * i, SND + 1000 * (i + 1), 1.0 + i * 1e-6)
        newest = ((SND + 1000 * (segments - 1), SND + 1000 * segments),)
        sb.sack(newest, SND, SND + 1000 * segments, 1.1)
        sb.detect_loss(1.1, 0.1)  # arms the reordering timer for the first suspect
        visits = 0
        for k in range(20):  # later ACKs SACK nothing new
            sb.sack(newest, SND, SND + 1000 * segments, 1.1 + k * 1e-4)
            sb.detect_loss(1.1 + k * 1e-4, 0.1)
        return visits

    monkeypatch.setattr(scoreboard_module.Sent, "lost", property(read, write))
    small, large = cost(50), cost(2000)
    assert small > 0  # the instrument works
    assert large <= small * 1.5 + 20, (small, large)
