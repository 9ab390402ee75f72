"""Buffer autotuning (tcpstack/tcp/autotune.py, as Linux's tcp_rcv_space_adjust and
tcp_sndbuf_expand) and proportional rate reduction in fast recovery (RFC 9937)."""

from __future__ import annotations

from tcp_helpers import (
    ISS,
    base_config,
    connected_pair,
    expect,
    pattern,
    peer,
    peer_opts,
    tcb_established_opts,
)

from tcpstack.tcp import output, window
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.limits import MemoryPool
from tcpstack.tcp.tcb import Tcb

SND = ISS + 1
MT = 1448  # payload of a full segment with timestamps
KIB = 1024


def autotuned(**changes: object) -> TcpConfig:
    return base_config(autotune=True, rcv_buf=64 * KIB, snd_buf=64 * KIB, **changes)


def advertised(tcb: Tcb) -> int:
    """The window (in bytes) our next segment offers."""
    return window.window_field(tcb) << tcb.rcv_wscale


def receive_round(tcb: Tcb, segments: int, now: float, *, read: bool = True) -> None:
    """The peer sends ``segments`` full segments in order at ``now``; the application
    reads them all at once unless ``read`` is false."""
    for _ in range(segments):
        tcb.receive(peer(tcb, payload=pattern(MT), options=peer_opts(tcb, now)), now)
    if read:
        tcb.recv(-1)
    expect(tcb, now)


def test_window_scale_chosen_for_the_largest_buffer() -> None:
    """RFC 7323 2.2: the shift is fixed at the SYN, so it must fit what autotuning may
    grow to, not the initial buffer."""
    assert TcpConfig(rcv_buf=64 * KIB, rcv_buf_max=6 * 1024 * KIB).rcv_wscale == 7
    assert TcpConfig(rcv_buf=60 * KIB, autotune=False).rcv_wscale == 0


def test_receive_buffer_grows_with_what_the_reader_takes_per_round_trip() -> None:
    """Dynamic right-sizing: a reader taking more each round trip gets a larger window,
    at least twice the per-RTT amount (room for a window in flight and one unread)."""
    tcb = tcb_established_opts(autotuned(), wscale=7)
    start = advertised(tcb)
    assert start <= 64 * KIB
    now = 1.0
    for segments in (10, 20, 40, 80):
        receive_round(tcb, segments, now)
        now += 0.11  # a little more than the RTT: one measurement per round
    receive_round(tcb, 1, now)  # the measurement of the 80-segment round happens here
    assert tcb.rcv_space >= 2 * 80 * MT
    assert advertised(tcb) > 2 * start
    assert tcb.rcv_space <= tcb.cfg.rcv_buf_limit


def test_receive_buffer_never_grows_past_its_maximum() -> None:
    tcb = tcb_established_opts(autotuned(rcv_buf_max=128 * KIB), wscale=7)
    now = 1.0
    for segments in (10, 20, 40, 44, 44, 44):
        receive_round(tcb, segments, now)
        now += 0.11
    assert tcb.rcv_space == 128 * KIB


def test_slow_reader_does_not_grow_the_receive_buffer() -> None:
    """What is measured is what the application read, not what arrived: data piling up
    unread (a slow reader) gives no reason for a bigger buffer."""
    tcb = tcb_established_opts(autotuned(), wscale=7)
    now = 1.0
    for _ in range(6):
        receive_round(tcb, 5, now, read=False)
        now += 0.11
    assert tcb.rcv_space == 64 * KIB


def test_no_growth_without_autotuning() -> None:
    tcb = tcb_established_opts(base_config(rcv_buf=64 * KIB))  # autotune off
    now = 1.0
    for segments in (10, 20, 40):
        receive_round(tcb, segments, now)
        now += 0.11
    assert tcb.rcv_space == 64 * KIB


def test_no_growth_under_memory_pressure() -> None:
    """Like Linux under tcp_memory_pressure: the stack's pool is over its limit, so
    buffers keep their size (and the send space its initial value)."""
    tcb = tcb_established_opts(autotuned(), wscale=7)
    pool = MemoryPool(1)
    pool.used = 2  # over the stack-wide limit
    tcb.pool = pool
    assert tcb.pool.pressure
    now = 1.0
    for segments in (10, 20, 40):
        receive_round(tcb, segments, now)
        now += 0.11
    assert tcb.rcv_space == 64 * KIB
    assert tcb.send_space == 64 * KIB


def test_send_space_follows_the_congestion_window() -> None:
    """The writer's high-water mark is twice cwnd, within [snd_buf, snd_buf_max]."""
    tcb = tcb_established_opts(autotuned(snd_buf_max=1024 * KIB), wscale=7)
    tcb.cc.cwnd = 10 * MT
    assert tcb.send_space == 64 * KIB  # never below the initial size
    tcb.cc.cwnd = 200 * MT
    assert tcb.send_space == 400 * MT
    tcb.cc.cwnd = 10_000 * MT
    assert tcb.send_space == 1024 * KIB


def test_send_space_does_not_shrink_when_the_window_does() -> None:
    """As Linux's sk_sndbuf: a reduction (a loss, BBR's packet conservation) leaves the
    data above a hole in the buffer; a high-water mark that fell with cwnd would stop
    the writer, and the new data whose SACKs reveal a lost retransmission."""
    tcb = tcb_established_opts(autotuned(snd_buf_max=1024 * KIB), wscale=7)
    tcb.cc.cwnd = 300 * MT
    assert tcb.send_space == 600 * MT
    tcb.cc.cwnd = 2 * MT  # e.g. BBR in its first round of recovery
    assert tcb.send_space == 600 * MT
    tcb.cc.cwnd = 350 * MT
    assert tcb.send_space == 700 * MT
    # Memory pressure takes it back to the initial size, for good.
    pool = MemoryPool(1)
    pool.used = 2
    tcb.pool = pool
    assert tcb.send_space == 64 * KIB
    pool.used = 0
    tcb.cc.cwnd = 10 * MT
    assert tcb.send_space == 64 * KIB


def test_write_blocks_above_the_send_space_and_unblocks_below_half() -> None:
    tcb = tcb_established_opts(autotuned(), wscale=7)
    tcb.cc.cwnd = 100 * MT  # send space 200 segments
    tcb.send(pattern(150 * MT))
    assert not tcb.write_blocked
    tcb.send(pattern(60 * MT))
    assert tcb.write_blocked


def test_bulk_transfer_grows_both_buffers_end_to_end() -> None:
    """Two autotuning ends: a long transfer over a path with a real RTT ends with a
    receive window and a send space larger than they started."""
    cfg = autotuned(initial_window=10)
    pair = connected_pair(cfg, cfg)
    data = pattern(4 * 1024 * KIB)
    offset = 0
    got = bytearray()

    def app() -> None:
        nonlocal offset
        while offset < len(data) and pair.a.send_buffered < pair.a.send_space:
            pair.a.send(data[offset:offset + 64 * KIB])
            offset += 64 * KIB
        got.extend(pair.b.recv(-1))

    pair.run(app, until=lambda: len(got) == len(data))
    assert bytes(got) == data
    assert pair.b.rcv_space > 64 * KIB
    assert pair.a.send_space > 64 * KIB


# ------------------------------------------------ proportional rate reduction


def sack_sender(segments: int, queued: int = 3) -> Tcb:
    """SACK and timestamps, NewReno; ``segments`` full segments sent at 1.0 out of
    ``queued`` times as many written."""
    cfg = base_config(initial_window=segments, tlp=False)
    tcb = tcb_established_opts(cfg, wscale=7)  # the peer's window never limits
    tcb.send(pattern(queued * segments * MT))
    assert len(expect(tcb, 1.0)) == segments
    return tcb


def sack_ack(tcb: Tcb, una: int, sacked: tuple[int, int], now: float) -> list[int]:
    """The peer ACKs segment ``una`` and SACKs segments [a, b); returns the segment
    numbers we send in answer."""
    a, b = sacked
    blocks = ((SND + a * MT, SND + b * MT),)
    tcb.receive(peer(tcb, ack=SND + una * MT, options=peer_opts(tcb, now, sack=blocks)), now)
    return [(s.seq - SND) // MT for s in expect(tcb, now) if s.payload]


def enter_recovery(tcb: Tcb, sacked: tuple[int, int], now: float) -> list[int]:
    """SACK ``sacked`` at ``now``, then let RACK's reordering window pass: the
    segments below it are lost and recovery begins. Returns what was sent."""
    out = sack_ack(tcb, 0, sacked, now)
    deadline = tcb.timers.rack
    assert deadline is not None
    tcb.handle_timer(deadline)
    out += [(s.seq - SND) // MT for s in expect(tcb, deadline) if s.payload]
    assert tcb.recovery_point is not None
    return out


def test_prr_sends_in_proportion_while_the_flight_is_above_ssthresh() -> None:
    """RFC 9937 3: with ssthresh half the flight (NewReno), each delivered segment
    releases about half a segment: over a whole window about ssthresh segments are
    sent, not a burst as soon as pipe falls below cwnd."""
    tcb = sack_sender(40)
    sent = enter_recovery(tcb, (4, 5), 1.1)  # segments 0-3 lost
    assert sent[-1] == 0  # the first hole goes at once
    assert tcb.cc.ssthresh == 41 * MT // 2  # half the flight (40 + 1 sent for the SACK)
    now = 1.13
    for n in range(5, 40):  # the others SACKed one by one
        sent += sack_ack(tcb, 0, (4, n + 1), now)
        now += 0.001
    # 36 segments delivered, one more counted at entry: ceil(37 * 20.5 / 41) = 19
    # sent in recovery, the holes first, then new data (after the one new segment
    # the first SACK sent).
    assert len(sent) == 1 + 19
    flight = (tcb.snd_max - tcb.snd_una) % 2**32
    assert output.pipe(tcb, flight) <= tcb.cc.ssthresh
    assert sent[1:5] == [0, 1, 2, 3]


def test_prr_never_bursts_when_many_segments_are_marked_lost_at_once() -> None:
    """RFC 9937 (the reason PRR exists): an event that reveals a big loss sends one
    retransmission, not cwnd - pipe of them."""
    tcb = sack_sender(40)
    sent = enter_recovery(tcb, (30, 31), 1.1)  # 30 segments lost at once
    assert sent == [40, 0]  # one new segment for the SACK, then one retransmission
    assert tcb.scoreboard.lost_bytes == 29 * MT


def test_prr_slow_start_bound_when_the_flight_fell_below_ssthresh() -> None:
    """RFC 9937 3 (PRR-SSRB): after heavy loss the flight is below ssthresh; it grows
    back no faster than slow start: what was delivered, plus one segment for an ACK
    that advances SND.UNA without revealing a new loss."""
    tcb = sack_sender(20, queued=1)
    enter_recovery(tcb, (16, 20), 1.1)  # segments 0-15 lost
    ssthresh = tcb.cc.ssthresh
    sent = sack_ack(tcb, 1, (16, 20), 1.3)  # the retransmitted segment 0 arrived
    assert sent == [1, 2]  # one delivered + one for the advance
    assert tcb.cc.cwnd <= ssthresh


def test_recovery_ends_with_cwnd_at_ssthresh() -> None:
    """RFC 9937 3: on leaving recovery the window is ssthresh (no burst, no collapse)."""
    tcb = sack_sender(20)
    enter_recovery(tcb, (1, 20), 1.1)  # segment 0 lost, the rest SACKed
    ssthresh = tcb.cc.ssthresh
    assert tcb.recovery_point is not None
    point = (tcb.recovery_point - SND) // MT
    tcb.receive(peer(tcb, ack=SND + point * MT, options=peer_opts(tcb, 1.3)), 1.3)
    assert tcb.recovery_point is None
    assert tcb.cc.cwnd == ssthresh
