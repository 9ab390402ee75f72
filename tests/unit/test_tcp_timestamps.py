"""TCP timestamps (RFC 7323): negotiation, TSval/TSecr on every segment, the TS.Recent
update rule, PAWS, RTT measurement from echoed timestamps, and the MSS reduction."""

from __future__ import annotations

import pytest
from tcp_helpers import (
    BASE_CONFIG,
    IRS,
    ISS,
    LOCAL,
    PEER_TS0,
    REMOTE,
    RTT,
    base_config,
    expect,
    expect_one,
    our_tsval,
    pattern,
    peer,
    peer_opts,
    peer_tsval,
    syn_with_options,
    tcb_established_opts,
)

from tcpstack.tcp import events as ev
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import (
    ACK,
    FIN,
    NO_OPTIONS,
    RST,
    SYN,
    TcpOptions,
    TcpSegment,
    encode_options,
)

RCV = IRS + 1
SND = ISS + 1
DATA = pattern(20_000, seed=9)


def ts_tcb(**cfg: object) -> Tcb:
    """ESTABLISHED with timestamps (no SACK), after two in-order segments, each ACKed,
    so Last.ACK.sent is current; TS.Recent is then the peer's TSval of t = 0.5.

    (Two, not one: see test_first_data_after_passive_open_updates_ts_recent.)"""
    tcb = tcb_established_opts(base_config(**cfg) if cfg else None, sack=False, ts=True)
    for off, t in ((0, 0.2), (50, 0.5)):
        tcb.receive(peer(tcb, payload=DATA[off:off + 50], options=peer_opts(tcb, t)), t)
        if not expect(tcb, t):  # delayed ACK
            tcb.handle_timer(t + tcb.cfg.delayed_ack)
            expect_one(tcb, t + tcb.cfg.delayed_ack, ACK, ack=RCV + off + 50)
    tcb.take_events()
    return tcb


def data_at(tcb: Tcb, off: int, n: int, now: float, tsval: int | None = None,
            ack: int | None = None) -> TcpSegment:
    """The peer's bytes ``[off, off + n)`` with timestamps (TSval from its clock)."""
    return peer(tcb, seq=RCV + off, payload=DATA[off:off + n], ack=ack,
                options=peer_opts(tcb, now, tsval=tsval))


def tsecr(seg: TcpSegment) -> int:
    assert seg.options.timestamps is not None, f"no timestamps on {seg!r}"
    return seg.options.timestamps[1]


def tsval(seg: TcpSegment) -> int:
    assert seg.options.timestamps is not None, f"no timestamps on {seg!r}"
    return seg.options.timestamps[0]


# -------------------------------------------------------------- negotiation


def test_synack_echoes_syn_tsval() -> None:
    """RFC 7323 3.2: a SYN,ACK answering a SYN with TSopt carries TSopt, TSecr = the
    SYN's TSval."""
    syn = syn_with_options(ts=(12345, 0))
    tcb = Tcb.passive_open(BASE_CONFIG, LOCAL, REMOTE, syn, ISS, 0.0)
    (synack,) = expect(tcb, 0.0, 1)
    assert synack.options.timestamps == (our_tsval(tcb, 0.0), 12345)
    assert tcb.ts_ok


def test_timestamps_not_used_when_syn_lacked_them() -> None:
    """RFC 7323 3.2: TSopt is sent in a SYN,ACK only if the SYN had it, and then never
    on any later segment."""
    tcb = Tcb.passive_open(BASE_CONFIG, LOCAL, REMOTE, syn_with_options(sack=True),
                           ISS, 0.0)
    (synack,) = expect(tcb, 0.0, 1)
    assert synack.options.timestamps is None
    tcb.receive(peer(tcb), 0.1)
    tcb.send(b"x" * 3000)
    for seg in expect(tcb, 0.2, 3):
        assert seg.options.timestamps is None
    assert not tcb.ts_ok and tcb.seg_mss == 1460


def test_timestamps_not_used_when_disabled_locally() -> None:
    """RFC 7323 3.2: with timestamps disabled the SYN,ACK does not echo TSopt."""
    tcb = Tcb.passive_open(base_config(timestamps=False), LOCAL, REMOTE,
                           syn_with_options(ts=(1, 0)), ISS, 0.0)
    (synack,) = expect(tcb, 0.0, 1)
    assert synack.options.timestamps is None and not tcb.ts_ok


def test_active_open_negotiates_and_echoes_synack_tsval() -> None:
    """RFC 7323 3.2: our SYN offers TSopt (TSecr 0); the SYN,ACK's TSval is echoed in
    the ACK that completes the handshake."""
    tcb = Tcb.active_open(BASE_CONFIG, LOCAL, REMOTE, ISS, 1.0)
    (syn,) = expect(tcb, 1.0, 1)
    assert syn.options.timestamps == (our_tsval(tcb, 1.0), 0)
    synack = TcpSegment(REMOTE[1], LOCAL[1], IRS, SND, SYN | ACK, 65535,
                        TcpOptions(mss=1460, timestamps=(4242, tsval(syn))))
    tcb.receive(synack, 1.1)
    assert tcb.state is State.ESTABLISHED and tcb.ts_ok
    ack = expect_one(tcb, 1.1, ACK, ack=RCV)
    assert ack.options.timestamps == (our_tsval(tcb, 1.1), 4242)
    assert tcb.rtt.srtt == pytest.approx(0.1)  # RFC 7323 4.1: the echo gives the RTT


def test_timestamp_clock_is_per_connection_offset_milliseconds() -> None:
    """RFC 7323 5.4 / 7.1: TSval ticks once per millisecond and starts from a random
    per-connection offset, so two connections show unrelated values."""
    syn = syn_with_options(ts=(1, 0))
    t1 = Tcb.passive_open(BASE_CONFIG, LOCAL, REMOTE, syn, 1000, 0.0)
    t2 = Tcb.passive_open(BASE_CONFIG, LOCAL, (REMOTE[0], 40001), syn, 777_777, 0.0)
    (a,) = expect(t1, 0.0, 1)
    (b,) = expect(t2, 0.0, 1)
    assert t1.ts_offset != t2.ts_offset
    assert tsval(a) != tsval(b)
    assert abs(tsval(a) - tsval(b)) > 1000  # not merely a few ms apart
    t1.receive(peer(t1, options=TcpOptions(timestamps=(2, tsval(a)))), 0.1)
    t1.send(b"x")
    (seg,) = expect(t1, 2.5, 1)
    assert (tsval(seg) - tsval(a)) & 0xFFFFFFFF == 2500


def test_segment_payload_shrinks_by_timestamp_option() -> None:
    """RFC 6691 / RFC 7323 3: the MSS excludes TCP options, so with the 12-byte
    timestamp option every full segment carries MSS - 12 bytes of data."""
    tcb = tcb_established_opts(sack=False, ts=True)
    assert tcb.seg_mss == 1460 - 12
    tcb.send(DATA[:3000])
    segs = expect(tcb, 1.0, 3)
    assert [len(s.payload) for s in segs] == [1448, 1448, 104]
    assert b"".join(bytes(s.payload) for s in segs) == DATA[:3000]
    assert len(encode_options(segs[0].options, syn=False)) == 12


# ------------------------------------------------- TSopt on every segment


def test_every_non_rst_segment_carries_tsopt_echoing_ts_recent() -> None:
    """RFC 7323 3.2: once negotiated, TSopt MUST be sent in every non-RST segment, with
    TSval from our clock and TSecr = TS.Recent: data, pure ACKs, duplicate ACKs,
    retransmissions and FIN."""
    tcb = ts_tcb()
    recent = peer_tsval(0.5)
    tcb.send(DATA[:2000])
    sent = expect(tcb, 1.0, 2)  # data
    tcb.receive(data_at(tcb, 5000, 100, 1.05, ack=SND), 1.05)  # out of order: dup ACK
    sent += expect(tcb, 1.05, 1)
    d = tcb.next_deadline()
    assert d is not None
    tcb.handle_timer(d)  # retransmission timeout
    retx = expect(tcb, d, 1)
    sent += retx
    tcb.shutdown_write()
    tcb.receive(peer(tcb, options=peer_opts(tcb, d + 0.1, tsecr=tsval(retx[0]))), d + 0.1)
    sent += expect(tcb, d + 0.1)  # the FIN
    (fin,) = [s for s in sent if s.flags & FIN]
    assert tsecr(fin) == peer_tsval(d + 0.1)  # the ACK before it refreshed TS.Recent
    for seg in sent:
        assert seg.options.timestamps is not None, seg
    assert [tsecr(s) for s in sent[:4]] == [recent] * 4
    assert tsval(sent[0]) == our_tsval(tcb, 1.0)
    assert tsval(retx[0]) == our_tsval(tcb, d)


def test_ts_recent_updated_by_in_order_segment() -> None:
    """RFC 7323 4.3 (2): a segment with SEG.TSval >= TS.Recent and SEG.SEQ <=
    Last.ACK.sent updates TS.Recent; the next ACK echoes it."""
    tcb = ts_tcb()
    tcb.receive(data_at(tcb, 100, 100, 1.0), 1.0)
    ack = expect_one(tcb, 1.0, ACK, ack=RCV + 200)
    assert tsecr(ack) == peer_tsval(1.0)


def test_ts_recent_not_updated_by_out_of_order_segment() -> None:
    """RFC 7323 4.3: a segment beyond Last.ACK.sent (here: out of order) must not update
    TS.Recent, so the duplicate ACK echoes the older value; the segment that fills the
    gap does update it."""
    tcb = ts_tcb()
    tcb.receive(data_at(tcb, 1000, 100, 1.0), 1.0)
    assert tsecr(expect_one(tcb, 1.0, ACK, ack=RCV + 100)) == peer_tsval(0.5)
    tcb.receive(data_at(tcb, 100, 900, 1.2), 1.2)
    assert tsecr(expect_one(tcb, 1.2, ACK, ack=RCV + 1100)) == peer_tsval(1.2)


def test_delayed_ack_echoes_earliest_unacknowledged_tsval() -> None:
    """RFC 7323 4.3 (and its example in 4.2): when one ACK covers several segments, it
    echoes the TSval of the earliest one -- only that one covers Last.ACK.sent."""
    tcb = ts_tcb(delayed_ack=0.2)
    tcb.receive(data_at(tcb, 100, 500, 1.0), 1.0)
    assert expect(tcb, 1.0) == []  # delayed
    tcb.receive(data_at(tcb, 600, 500, 1.01), 1.01)
    assert expect(tcb, 1.01) == []
    tcb.handle_timer(1.2)
    ack = expect_one(tcb, 1.2, ACK, ack=RCV + 1100)
    assert tsecr(ack) == peer_tsval(1.0)


def test_first_data_after_passive_open_updates_ts_recent() -> None:
    """RFC 7323 4.3: Last.ACK.sent is the ACK field of the last segment we sent -- after a
    passive open, the SYN,ACK's -- so the first in-order data segment updates TS.Recent
    and is echoed."""
    tcb = tcb_established_opts(sack=False, ts=True)
    tcb.receive(data_at(tcb, 0, 100, 1.0), 1.0)
    ack = expect_one(tcb, 1.0, ACK, ack=RCV + 100)
    assert tsecr(ack) == peer_tsval(1.0)


# --------------------------------------------------------------------- PAWS


def test_paws_drops_old_timestamp_and_acks() -> None:
    """RFC 7323 5.3 R1: a segment whose TSval is older than TS.Recent is an old duplicate:
    drop it (no data delivered) and send an ACK."""
    tcb = ts_tcb()
    stale = PEER_TS0 + 100  # older than TS.Recent = peer_tsval(0.5)
    tcb.receive(data_at(tcb, 100, 500, 1.0, tsval=stale), 1.0)
    assert tcb.rcv_nxt == RCV + 100
    assert tcb.recv_buffered == 100
    assert ev.DATA_RECEIVED not in tcb.take_events()
    ack = expect_one(tcb, 1.0, ACK, ack=RCV + 100)
    assert tsecr(ack) == peer_tsval(0.5)


def test_paws_dropped_segment_ack_field_is_ignored() -> None:
    """RFC 7323 5.3 R1: the whole segment is discarded, including its ACK field."""
    tcb = ts_tcb()
    tcb.send(DATA[:1000])
    expect(tcb, 1.0, 1)
    tcb.receive(peer(tcb, ack=SND + 1000,
                     options=peer_opts(tcb, 1.1, tsval=PEER_TS0 + 100)), 1.1)
    assert tcb.snd_una == SND
    tcb.receive(peer(tcb, ack=SND + 1000, options=peer_opts(tcb, 1.1)), 1.1)
    assert tcb.snd_una == SND + 1000


def test_paws_does_not_apply_to_rst() -> None:
    """RFC 7323 5.3 R1: PAWS is not applied to RST segments; an exact RST resets."""
    tcb = ts_tcb()
    tcb.receive(peer(tcb, RST, options=peer_opts(tcb, 1.0, tsval=PEER_TS0 + 1)), 1.0)
    assert tcb.state is State.CLOSED
    assert ev.Terminated("reset") in tcb.take_events()


def test_paws_equal_timestamp_accepted() -> None:
    """RFC 7323 5.3: only TSval strictly less than TS.Recent fails; equal timestamps are
    normal (several segments per clock tick)."""
    tcb = ts_tcb()
    tcb.receive(data_at(tcb, 100, 100, 1.0, tsval=peer_tsval(0.5)), 1.0)
    assert tcb.rcv_nxt == RCV + 200


def test_paws_ts_recent_invalid_after_24_days_idle() -> None:
    """RFC 7323 5.5: after more than 24 days idle TS.Recent is invalid, so a segment
    with a TSval that looks old (the peer's clock wrapped) is accepted."""
    tcb = ts_tcb()
    later = 0.5 + 25 * 24 * 3600.0
    tcb.receive(data_at(tcb, 100, 100, later, tsval=PEER_TS0), later)
    assert tcb.rcv_nxt == RCV + 200


# --------------------------------------------------------------------- RTTM


def test_rtt_sample_from_tsecr_on_every_ack() -> None:
    """RFC 7323 4.1 / RFC 6298 2: each ACK of new data echoing a TSval gives an RTT
    sample (RTO computed from it)."""
    tcb = ts_tcb()
    tcb.send(DATA[:2000])
    expect(tcb, 1.0, 2)
    tcb.receive(peer(tcb, ack=SND + 1448, options=peer_opts(tcb, 1.3, tsecr=our_tsval(
        tcb, 1.0))), 1.3)
    srtt1 = 0.875 * RTT + 0.125 * 0.3
    assert tcb.rtt.srtt == pytest.approx(srtt1)
    tcb.receive(peer(tcb, ack=SND + 2000, options=peer_opts(tcb, 1.5, tsecr=our_tsval(
        tcb, 1.0))), 1.5)
    assert tcb.rtt.srtt == pytest.approx(0.875 * srtt1 + 0.125 * 0.5)


def test_rtt_sample_from_retransmitted_segment_via_tsecr() -> None:
    """RFC 7323 4.1 (RTTM): the echoed TSval says which transmission is acknowledged,
    so unlike Karn's rule (RFC 6298 3) a retransmitted segment yields a sample."""
    tcb = ts_tcb()
    tcb.send(DATA[:1000])
    expect(tcb, 1.0, 1)
    d = tcb.next_deadline()
    assert d == pytest.approx(1.3)
    tcb.handle_timer(1.3)
    (retx,) = expect(tcb, 1.3, 1)
    assert retx.seq == SND
    tcb.receive(peer(tcb, ack=SND + 1000, options=peer_opts(tcb, 1.36, tsecr=tsval(retx))),
                1.36)
    assert tcb.rtt.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * abs(0.1 - 0.06))
    assert tcb.rtt.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.06)
    assert tcb.rtt.rto == pytest.approx(tcb.rtt.srtt + max(0.2, 4 * tcb.rtt.rttvar))


def test_no_rtt_sample_from_ack_without_tsecr() -> None:
    """RFC 7323 4.1 / RFC 6298 3: with timestamps negotiated, an ACK that echoes nothing
    (TSecr 0) gives no sample from the timed-segment fallback after a retransmission."""
    tcb = ts_tcb()
    tcb.send(DATA[:1000])
    expect(tcb, 1.0, 1)
    tcb.handle_timer(1.3)
    expect(tcb, 1.3, 1)
    srtt = tcb.rtt.srtt
    tcb.receive(peer(tcb, ack=SND + 1000, options=NO_OPTIONS), 1.5)
    assert tcb.snd_una == SND + 1000
    assert tcb.rtt.srtt == srtt


@pytest.mark.parametrize("bad_ack", [1 << 20, -(1 << 24)], ids=["unsent", "far-below"])
def test_blind_segment_with_bad_ack_cannot_poison_ts_recent(bad_ack: int) -> None:
    """RFC 7323 4.3 with RFC 5961 5.2: TS.Recent is updated only from a segment whose
    ACK was found acceptable (as Linux does). A blind attacker who hits the window
    with a huge TSval but cannot know an acceptable ACK must not make PAWS drop all
    the real peer's later segments."""
    tcb = ts_tcb()
    huge = (peer_tsval(1.0) + 0x7000_0000) & 0xFFFFFFFF
    forged = peer(tcb, ACK, ack=tcb.snd_nxt + bad_ack,
                  options=TcpOptions(timestamps=(huge, our_tsval(tcb, 0.9))))
    tcb.receive(forged, 1.0)
    expect(tcb, 1.0)  # the ACK it draws
    tcb.receive(data_at(tcb, 100, 100, 1.1), 1.1)
    assert tcb.rcv_nxt == RCV + 200, "the real peer's data was dropped by PAWS"
    assert tcb.counters["tcp_paws_rejected"] == 0
