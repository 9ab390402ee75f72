"""Loss recovery: NewReno for peers without SACK (RFC 5681 3.2, RFC 6582, RFC 3042),
SACK-based recovery (RFC 6675), retransmission timeouts with a scoreboard (RFC 6298 5,
RFC 6675 5.1), Eifel undo of spurious retransmissions (RFC 3522, RFC 4015), and
end-to-end transfers over a lossy, reordering, duplicating in-memory path."""

from __future__ import annotations

import random

import pytest
from tcp_helpers import (
    ISS,
    Pair,
    base_config,
    connected_pair,
    expect,
    our_tsval,
    pattern,
    peer,
    peer_opts,
    tcb_established,
    tcb_established_opts,
)

from tcpstack.link.impair import ImpairSpec
from tcpstack.tcp import events as ev
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.congestion import Cubic
from tcpstack.tcp.output import pipe
from tcpstack.tcp.seq import seq_diff
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import TcpSegment

SND = ISS + 1
M = 1460  # segment payload without options (NewReno tests)
MT = 1448  # segment payload with timestamps (SACK tests)


def offsets(segs: list[TcpSegment], mss: int) -> list[int]:
    """Segment numbers (sequence offset from SND in units of ``mss``) of data segments."""
    return [(s.seq - SND) // mss for s in segs if s.payload]


# ------------------------------------------------------- NewReno (no SACK)


def newreno(segments: int = 10, extra: int = 0) -> Tcb:
    """ESTABLISHED without SACK, ``segments`` full segments sent at t = 1.0 (the initial
    window) and ``extra`` more queued."""
    tcb = tcb_established()
    tcb.send(pattern((segments + extra) * M))
    assert len(expect(tcb, 1.0)) == segments
    return tcb


def dupack(tcb: Tcb, now: float) -> list[TcpSegment]:
    """The peer repeats its ACK of SND (a duplicate ACK, RFC 5681 2); return our answer."""
    tcb.receive(peer(tcb, ack=SND), now)
    return expect(tcb, now)


def test_newreno_first_two_dupacks_leave_cwnd_alone() -> None:
    """RFC 5681 3.2 step 1: the first two duplicate ACKs MUST NOT change cwnd and do not
    start recovery."""
    tcb = newreno()
    cwnd = tcb.cc.cwnd
    for i in range(2):
        dupack(tcb, 1.1 + i / 1000)
        assert tcb.cc.cwnd == cwnd
        assert tcb.cc.ssthresh >= 1 << 30


def test_newreno_third_dupack_sets_ssthresh_to_half_the_flight() -> None:
    """RFC 5681 3.2 step 2, eq. 4: on the third duplicate ACK ssthresh = max(FlightSize / 2,
    2 * SMSS), and recovery starts (RFC 6582 3.2: recover = highest sequence sent)."""
    tcb = newreno()
    for i in range(3):
        dupack(tcb, 1.1 + i / 1000)
    assert tcb.cc.ssthresh == 10 * M // 2
    assert tcb.cc.cwnd <= tcb.cc.ssthresh + 3 * M
    assert tcb.recovery_point == tcb.snd_max


def test_newreno_ssthresh_floor_is_two_segments() -> None:
    """RFC 5681 3.2 eq. 4: ssthresh is at least 2 * SMSS however small the flight."""
    tcb = newreno(segments=3)
    for i in range(3):
        dupack(tcb, 1.1 + i / 1000)
    assert tcb.cc.ssthresh == 2 * M


def test_newreno_third_dupack_fast_retransmits_snd_una() -> None:
    """RFC 5681 3.2 step 2: on the third duplicate ACK the segment at SND.UNA MUST be
    retransmitted (fast retransmit)."""
    tcb = newreno()
    dupack(tcb, 1.1)
    dupack(tcb, 1.101)
    out = dupack(tcb, 1.102)
    assert [s.seq for s in out] == [SND]
    assert bytes(out[0].payload) == pattern(M)


def test_newreno_snd_una_retransmitted_exactly_once_in_recovery() -> None:
    """RFC 5681 3.2 / RFC 6582 3.2: the duplicate ACKs of one loss lead to one fast
    retransmission of SND.UNA, and no other segment is resent."""
    tcb = newreno()
    out: list[TcpSegment] = []
    for i in range(9):  # segments 2..10 each draw a duplicate ACK
        out += dupack(tcb, 1.1 + i / 1000)
    assert [s.seq for s in out] == [SND]


def test_newreno_limited_transmit_sends_new_data_on_first_two_dupacks() -> None:
    """RFC 3042 2: on each of the first two duplicate ACKs one new segment is sent, if the
    receiver's window allows; cwnd is unchanged."""
    tcb = newreno(extra=5)
    cwnd = tcb.cc.cwnd
    first = dupack(tcb, 1.1)
    second = dupack(tcb, 1.101)
    assert offsets(first, M) == [10]
    assert offsets(second, M) == [11]
    assert tcb.cc.cwnd == cwnd


def test_newreno_ssthresh_excludes_limited_transmit_segments() -> None:
    """RFC 5681 3.2 step 2: "When [RFC3042] is in use, additional data sent in limited
    transmit MUST NOT be included in this calculation" of ssthresh."""
    tcb = newreno(extra=5)
    for i in range(3):
        dupack(tcb, 1.1 + i / 1000)
    assert tcb.cc.ssthresh == 10 * M // 2


def test_newreno_further_dupacks_release_new_data() -> None:
    """RFC 5681 3.2 steps 4-5 / RFC 6582 3.2 (window inflation): each further duplicate
    ACK means a segment left the network, so once the flight fits the reduced window,
    every duplicate ACK lets one new segment out -- never more."""
    tcb = newreno(extra=20)
    per_ack = [offsets(dupack(tcb, 1.1 + i / 1000), M) for i in range(12)]
    new = [[n for n in sent if n >= 10] for sent in per_ack]
    assert all(len(n) <= 1 for n in new)
    assert all(len(n) == 1 for n in new[-4:])
    sent_new = [n for ns in new for n in ns]
    assert sent_new == list(range(10, 10 + len(sent_new)))  # in order, no gaps


def newreno_after_fast_retransmit() -> Tcb:
    """Segments 0 and 4 of 0..9 lost; the other eight drew duplicate ACKs, and segment 0
    was fast-retransmitted."""
    tcb = newreno()
    out: list[TcpSegment] = []
    for i in range(8):
        out += dupack(tcb, 1.1 + i / 1000)
    assert [s.seq for s in out] == [SND]
    return tcb


def test_newreno_partial_ack_retransmits_next_hole() -> None:
    """RFC 6582 3.2 step 3: a partial ACK (below the recovery point) means the next
    segment was lost too: retransmit it at once."""
    tcb = newreno_after_fast_retransmit()
    tcb.receive(peer(tcb, ack=SND + 4 * M), 1.2)
    out = expect(tcb, 1.2)
    assert offsets(out, M)[:1] == [4]


def test_newreno_partial_ack_stays_in_recovery() -> None:
    """RFC 6582 3.2 step 3: a partial ACK does not end fast recovery: the recovery point
    is kept, cwnd is not grown, and the next hole is judged lost."""
    tcb = newreno_after_fast_retransmit()
    recover = tcb.recovery_point
    ssthresh, cwnd = tcb.cc.ssthresh, tcb.cc.cwnd
    tcb.receive(peer(tcb, ack=SND + 4 * M), 1.2)
    expect(tcb, 1.2)
    assert tcb.recovery_point == recover == SND + 10 * M
    assert (tcb.cc.ssthresh, tcb.cc.cwnd) == (ssthresh, cwnd)
    hole = tcb.scoreboard.recs[0]
    assert hole.start == SND + 4 * M
    assert hole.lost or hole.retrans  # judged lost (and resent, once pipe allows)


def test_newreno_full_ack_exits_recovery_then_cwnd_grows() -> None:
    """RFC 6582 3.2 step 3 (full acknowledgment): an ACK covering the recovery point ends
    fast recovery with cwnd = ssthresh; later ACKs grow cwnd again (RFC 5681 3.1)."""
    tcb = newreno(extra=30)
    for i in range(9):
        dupack(tcb, 1.1 + i / 1000)
    recover = tcb.recovery_point
    assert recover is not None
    ssthresh = tcb.cc.ssthresh
    assert ssthresh < 10 * M
    tcb.receive(peer(tcb, ack=recover), 1.2)
    assert tcb.recovery_point is None
    assert tcb.cc.cwnd == tcb.cc.ssthresh == ssthresh
    expect(tcb, 1.2)
    tcb.receive(peer(tcb, ack=tcb.snd_max), 1.3)
    assert tcb.cc.cwnd > ssthresh


def test_newreno_dupacks_ignored_when_they_update_the_window() -> None:
    """RFC 5681 2: an ACK that changes the advertised window is not a duplicate ACK and
    does not count toward fast retransmit."""
    tcb = newreno()
    for i in range(4):
        tcb.receive(peer(tcb, ack=SND, window=60000 - i), 1.1 + i / 1000)
        expect(tcb, 1.1 + i / 1000)
    assert tcb.recovery_point is None and tcb.cc.ssthresh >= 1 << 30


# ------------------------------------------------------- SACK-based (RFC 6675)


def sack_sender(segments: int = 20, extra: int = 0, **cfg: object) -> Tcb:
    """SACK + timestamps, no TLP, IW of ``segments``; that many full segments sent at 1.0."""
    config = base_config(initial_window=segments, tlp=False, **cfg)
    tcb = tcb_established_opts(config)
    tcb.send(pattern((segments + extra) * MT))
    assert len(expect(tcb, 1.0)) == segments
    return tcb


def sack_ranges(got: list[int]) -> tuple[tuple[int, int], ...]:
    """SACK blocks (absolute) for the segment numbers in ``got``, most recent first."""
    runs: list[list[int]] = []
    for n in sorted(got):
        if runs and runs[-1][1] == n:
            runs[-1][1] = n + 1
        else:
            runs.append([n, n + 1])
    runs.sort(key=lambda r: -max(got.index(x) for x in range(r[0], r[1])))
    return tuple((SND + a * MT, SND + b * MT) for a, b in runs[:3])


def arrive(tcb: Tcb, una: int, got: list[int], now: float,
           tsecr_at: float | None = None) -> list[TcpSegment]:
    """The peer ACKs segment number ``una`` cumulatively and SACKs ``got`` (in arrival
    order); TSecr echoes our TSval of ``tsecr_at`` (default one RTT ago)."""
    tsecr = None if tsecr_at is None else our_tsval(tcb, tsecr_at)
    blocks = sack_ranges([n for n in got if n >= una]) if got else ()
    tcb.receive(peer(tcb, ack=SND + una * MT,
                     options=peer_opts(tcb, now, sack=blocks, tsecr=tsecr)), now)
    return expect(tcb, now)


def test_sack_recovery_retransmits_only_unsacked_segments_in_order() -> None:
    """RFC 6675 5 (NextSeg rule 1) / RFC 2018: holes are retransmitted in sequence order
    and SACKed data is never retransmitted."""
    tcb = sack_sender()
    lost = {0, 3, 6, 9, 10, 11, 12}
    got: list[int] = []
    out: list[TcpSegment] = []
    for n in range(20):
        if n not in lost:
            got.append(n)
            out += arrive(tcb, 0, got, 1.1, tsecr_at=1.0)
    assert out == []  # within the reordering window: wait
    d = tcb.next_deadline()
    assert d is not None
    tcb.handle_timer(d)
    resent = offsets(expect(tcb, d), MT)
    # Each retransmission arrives a round trip later; the cumulative ACK moves to
    # the next hole, and the ACK lets the next retransmissions go (PRR, RFC 9937).
    now = d
    while tcb.snd_una != tcb.snd_max:
        now += 0.1
        arrived = set(got) | set(resent)
        una = min(set(range(21)) - arrived)
        out = arrive(tcb, una, [n for n in got if n > una], now, tsecr_at=now - 0.1)
        resent += offsets(out, MT)
    assert resent == sorted(lost)


def test_sack_recovery_retransmissions_limited_by_pipe() -> None:
    """RFC 6675 5 with RFC 9937: after heavy loss (pipe far below ssthresh) the holes
    are resent no faster than slow start -- what each ACK reports delivered, plus one
    segment when it advances SND.UNA -- in sequence order, and pipe never exceeds
    ssthresh (the RFC 6675 step C limit, cwnd - pipe)."""
    tcb = sack_sender()
    got = list(range(12, 20))
    for i in range(len(got)):
        arrive(tcb, 0, got[:i + 1], 1.1, tsecr_at=1.0)
    tcb.handle_timer(1.125)
    assert tcb.cc.ssthresh == 10 * MT  # ssthresh = FlightSize / 2
    assert offsets(expect(tcb, 1.125), MT) == [0]  # 12 lost, pipe 0: one goes at once
    out = arrive(tcb, 1, got, 1.225, tsecr_at=1.125)  # the retransmitted 0 arrives
    assert offsets(out, MT) == [1, 2]  # one delivered, one for the advance
    out = arrive(tcb, 3, got, 1.325, tsecr_at=1.225)  # 1 and 2 arrive
    assert offsets(out, MT) == [3, 4, 5]  # two delivered, one for the advance
    flight = seq_diff(tcb.snd_max, tcb.snd_una)
    assert pipe(tcb, flight) <= tcb.cc.ssthresh


def test_sack_loss_detection_retransmits_first_hole_at_once() -> None:
    """RFC 6675 5 (4.3): on entering loss recovery the first segment presumed dropped is
    retransmitted at once, whatever pipe says."""
    tcb = sack_sender()
    arrive(tcb, 0, [5], 1.1, tsecr_at=1.0)
    tcb.handle_timer(1.125)  # RACK: segments 0-4 lost
    assert tcb.recovery_point is not None
    assert offsets(expect(tcb, 1.125), MT)[:1] == [0]


def test_sack_recovery_one_window_reduction_per_episode() -> None:
    """RFC 6675 5 / RFC 5681 3.2: cwnd and ssthresh are reduced once per recovery episode,
    however many losses are found within it."""
    tcb = sack_sender()
    arrive(tcb, 0, [5], 1.1, tsecr_at=1.0)
    tcb.handle_timer(1.125)  # segments 0-4 lost
    out = expect(tcb, 1.125)
    reduced = (tcb.cc.ssthresh, tcb.cc.cwnd)
    assert reduced[0] == 10 * MT
    out += arrive(tcb, 0, [5, 15], 1.13, tsecr_at=1.0)
    d = tcb.timers.rack
    assert d is not None
    tcb.handle_timer(d)  # segments 6-14 lost as well
    out += expect(tcb, d)
    assert offsets(out, MT)[:3] == [0, 1, 2]  # retransmissions ...
    assert tcb.scoreboard.lost_bytes > 0
    # ... but no second reduction: ssthresh stays where the episode put it (cwnd
    # itself follows PRR during recovery, RFC 9937, and ends at ssthresh).
    assert tcb.cc.ssthresh == reduced[0]


def test_sack_recovery_new_episode_after_recovery_point_reduces_again() -> None:
    """RFC 6675 5: once the cumulative ACK passes RecoveryPoint the episode is over; a
    later loss starts a new one with its own reduction."""
    tcb = sack_sender()
    arrive(tcb, 0, list(range(1, 20)), 1.1, tsecr_at=1.0)
    tcb.handle_timer(1.125)
    assert offsets(expect(tcb, 1.125), MT) == [0]
    first = tcb.cc.ssthresh
    assert first == 10 * MT
    arrive(tcb, 20, [], 1.225, tsecr_at=1.125)  # everything, recovery over
    assert tcb.recovery_point is None
    tcb.send(pattern(10 * MT, seed=1))
    sent = offsets(expect(tcb, 1.225), MT)
    # The first of the newly sent segments is lost; the rest are SACKed.
    got = sent[1:]
    for i in range(len(got)):
        arrive(tcb, 20, got[:i + 1], 1.325, tsecr_at=1.225)
    assert sent == list(range(20, 30))
    d = tcb.next_deadline()
    assert d is not None
    tcb.handle_timer(d)
    assert offsets(expect(tcb, d), MT)[:1] == [20]
    assert tcb.recovery_point is not None
    assert tcb.cc.ssthresh == 5 * MT < first  # half of the new flight
    assert tcb.cc.cwnd <= tcb.cc.ssthresh  # PRR from there (RFC 9937)


def test_rto_with_sack_resends_unsacked_in_order_from_one_segment() -> None:
    """RFC 6298 5.4-5.6, RFC 5681 3.1 and RFC 6675 5.1: after a timeout cwnd is 1 SMSS
    (ssthresh = FlightSize / 2); all unSACKed data is resent in order under slow start,
    skipping what the peer SACKed."""
    tcb = sack_sender(segments=10)
    # Segments 4 and 5 are SACKed late, so RACK's timer comes after the RTO.
    arrive(tcb, 0, [4, 5], 1.25, tsecr_at=1.0)
    assert tcb.timers.rack is not None and tcb.timers.rack > 1.3
    tcb.handle_timer(1.3)
    assert tcb.cc.cwnd == MT and tcb.cc.ssthresh == 5 * MT
    assert offsets(expect(tcb, 1.3), MT) == [0]
    # Slow start: each ACK grows cwnd by the data it covers (at most 2 SMSS, RFC 3465).
    assert offsets(arrive(tcb, 1, [4, 5], 1.4, tsecr_at=1.3), MT) == [1, 2]
    assert offsets(arrive(tcb, 3, [4, 5], 1.5, tsecr_at=1.4), MT) == [3, 6, 7, 8]
    assert offsets(arrive(tcb, 9, [], 1.6, tsecr_at=1.5), MT) == [9]
    arrive(tcb, 10, [], 1.7, tsecr_at=1.6)
    assert tcb.snd_una == tcb.snd_max == SND + 10 * MT


def test_lost_retransmission_detected_by_rack_before_rto() -> None:
    """RFC 8985 2.2 / 6.2: a retransmission that is lost again is detected like any
    other segment (data sent after it SACKed, reordering window passed) and resent
    before the RTO fires; the connection then completes."""
    tcb = sack_sender(segments=20, extra=10)
    arrive(tcb, 0, list(range(1, 10)), 1.1, tsecr_at=1.0)
    tcb.handle_timer(1.125)
    assert offsets(expect(tcb, 1.125), MT) == [0]  # the retransmission
    rto = tcb.timers.rto
    assert rto is not None
    # 10-19 arrive (the retransmission of 0 does not): PRR releases new data.
    got = list(range(1, 20))
    new = offsets(arrive(tcb, 0, got, 1.15, tsecr_at=1.0), MT)
    assert new == [29]  # (20-28 went out at 1.1, before recovery, as SACKs shrank pipe)
    # The new data, sent after the retransmission, is SACKed half an RTT later:
    # RACK finds the retransmission lost (sent earlier, and more than the
    # reordering window older) and resends it at once, long before the RTO.
    again = offsets(arrive(tcb, 0, got + new, 1.2, tsecr_at=1.15), MT)
    assert rto > 1.2
    assert again[:1] == [0]
    d = 1.2
    assert tcb.scoreboard.recs[0].retrans == 2
    arrive(tcb, max(new) + 1, [], d + 0.1, tsecr_at=d)
    assert tcb.snd_una == SND + (max(new) + 1) * MT


# ------------------------------------------------------------------- Eifel


def test_eifel_undoes_spurious_rto() -> None:
    """RFC 3522 / RFC 4015: an ACK whose TSecr predates the first retransmission shows
    the original arrived, so the timeout was spurious: cwnd and ssthresh are restored."""
    tcb = sack_sender(segments=10)
    cwnd, ssthresh = tcb.cc.cwnd, tcb.cc.ssthresh
    tcb.handle_timer(1.3)
    assert offsets(expect(tcb, 1.3), MT) == [0]
    assert (tcb.cc.cwnd, tcb.cc.ssthresh) == (MT, 5 * MT)
    arrive(tcb, 10, [], 1.32, tsecr_at=1.0)  # the originals' ACK, just late
    assert tcb.cc.cwnd >= cwnd
    assert tcb.cc.ssthresh == ssthresh


def test_eifel_undo_of_rto_leaves_rest_of_flight_alone() -> None:
    """RFC 4015 / RFC 8985 6.2 step 2: after a spurious timeout is detected, the rest of
    the original flight is still in the network and must not be resent, nor cwnd
    reduced again."""
    tcb = sack_sender(segments=10)
    cwnd, ssthresh = tcb.cc.cwnd, tcb.cc.ssthresh
    tcb.handle_timer(1.3)
    assert offsets(expect(tcb, 1.3), MT) == [0]
    assert tcb.cc.cwnd == MT
    out = arrive(tcb, 5, [], 1.32, tsecr_at=1.0)  # the originals' ACK, just late
    assert tcb.cc.cwnd >= cwnd
    assert tcb.cc.ssthresh == ssthresh
    assert [n for n in offsets(out, MT) if n < 10] == []  # nothing resent


def test_eifel_undoes_spurious_fast_retransmit() -> None:
    """RFC 3522 / RFC 4015: reordering beyond the RACK window causes a fast
    retransmission; the ACK echoing the original's timestamp undoes the reduction."""
    tcb = sack_sender(segments=10)
    cwnd, ssthresh = tcb.cc.cwnd, tcb.cc.ssthresh
    arrive(tcb, 0, list(range(1, 10)), 1.1, tsecr_at=1.0)
    tcb.handle_timer(1.125)
    assert offsets(expect(tcb, 1.125), MT) == [0]
    assert tcb.cc.ssthresh == 5 * MT
    arrive(tcb, 10, [], 1.13, tsecr_at=1.0)  # the original segment 0 was only late
    assert tcb.cc.ssthresh == ssthresh
    assert tcb.cc.cwnd >= cwnd
    assert tcb.recovery_point is None


def test_eifel_keeps_reduction_when_retransmission_was_needed() -> None:
    """RFC 3522 2: an ACK echoing the retransmission's own timestamp proves nothing
    spurious; the reduction stands."""
    tcb = sack_sender(segments=10)
    arrive(tcb, 0, list(range(1, 10)), 1.1, tsecr_at=1.0)
    tcb.handle_timer(1.125)
    expect(tcb, 1.125)
    arrive(tcb, 10, [], 1.225, tsecr_at=1.125)
    assert tcb.cc.ssthresh == 5 * MT
    assert tcb.cc.cwnd <= 5 * MT + 2 * MT


# ------------------------------------------------------------- end to end


class App:
    """Writes ``data`` with back-pressure, reads everything, half-closes when done."""

    def __init__(self, tcb: Tcb, data: bytes) -> None:
        self.tcb = tcb
        self.data = data
        self.off = 0
        self.got = bytearray()
        self.eof = False
        self.shut = False
        self.errors: list[ev.Terminated] = []

    def poll(self) -> None:
        tcb = self.tcb
        for e in tcb.take_events():
            if isinstance(e, ev.EndOfStream):
                self.eof = True
            elif isinstance(e, ev.Terminated) and e.error is not None:
                self.errors.append(e)
        self.got += tcb.recv()
        if tcb.state is State.CLOSED:
            return
        while self.off < len(self.data) and tcb.send_buffered < tcb.cfg.snd_buf:
            tcb.send(self.data[self.off:self.off + 32_768])
            self.off += 32_768
        if self.off >= len(self.data) and not self.shut:
            tcb.shutdown_write()
            self.shut = True


SIZE = 500_000
DONE = (State.TIME_WAIT, State.CLOSED)


def transfer(cfg: TcpConfig, seed: int, max_time: float, path: ImpairSpec) -> Pair[Tcb]:
    """500 KB each way over ``path`` (after a clean handshake); both sides half-close;
    run until both streams arrived byte-exact and both FINs are acknowledged."""
    pair = connected_pair(cfg, cfg)
    rng = random.Random(seed)
    a = App(pair.a, rng.randbytes(SIZE))
    b = App(pair.b, rng.randbytes(SIZE))
    pair.set_path(path)

    def app() -> None:
        a.poll()
        b.poll()

    def done() -> bool:
        return a.eof and b.eof and pair.a.state in DONE and pair.b.state in DONE

    pair.run(app, until=done, max_time=max_time)
    assert not a.errors and not b.errors
    assert bytes(a.got) == b.data
    assert bytes(b.got) == a.data
    return pair


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_e2e_sack_timestamps_5pct_loss_both_ways(seed: int) -> None:
    """RFC 6675 / RFC 8985 / RFC 7323 end to end: 500 KB each way, 5% loss in both
    directions, delivered byte-exact in bounded time."""
    pair = transfer(TcpConfig(), seed, 10.0, ImpairSpec(loss=5, delay=0.02, seed=seed))
    assert pair.a.sack_ok and pair.a.ts_ok and pair.b.sack_ok and pair.b.ts_ok
    assert pair.dropped >= 20


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_e2e_newreno_without_sack_5pct_loss_both_ways(seed: int) -> None:
    """RFC 5681 / RFC 6582 end to end without SACK (and without timestamps): 500 KB each
    way, 5% loss, byte-exact."""
    pair = transfer(TcpConfig(sack=False, timestamps=False), seed, 20.0,
                    ImpairSpec(loss=5, delay=0.02, seed=seed))
    assert not pair.a.sack_ok and not pair.b.ts_ok
    assert pair.dropped >= 20


@pytest.mark.parametrize("seed", [1, 2])
def test_e2e_cubic_5pct_loss_both_ways(seed: int) -> None:
    """RFC 9438 end to end: CUBIC with SACK and timestamps, 500 KB each way, 5% loss."""
    pair = transfer(TcpConfig(congestion_control="cubic"), seed, 10.0,
                    ImpairSpec(loss=5, delay=0.02, seed=seed))
    assert isinstance(pair.a.cc, Cubic) and isinstance(pair.b.cc, Cubic)
    assert pair.dropped >= 20


@pytest.mark.parametrize("seed", [1, 2])
def test_e2e_reordering_and_duplication(seed: int) -> None:
    """RFC 9293 3.10.7.4 / RFC 2883 / RFC 8985 end to end: jitter reorders segments,
    some are duplicated and some lost; both streams still arrive byte-exact."""
    path = ImpairSpec(loss=3, delay=0.02, jitter=0.015, duplicate=5, seed=seed)
    pair = transfer(TcpConfig(), seed, 10.0, path)
    assert pair.dropped >= 10
    assert pair.path.counters["out_duplicated"] > 0 and pair.path.counters["in_duplicated"] > 0


def test_e2e_corrupted_segments_are_discarded_and_repaired() -> None:
    """RFC 9293 3.1: a segment failing its checksum is dropped; to the sender that is a
    loss, and recovery repairs it -- no flipped bit reaches either stream."""
    pair = transfer(TcpConfig(), 4, 10.0, ImpairSpec(corrupt=3, delay=0.02, seed=4))
    corrupted = pair.path.counters["out_corrupted"] + pair.path.counters["in_corrupted"]
    discarded = pair.discarded["tcp_bad_checksum"] + pair.discarded["tcp_bad_data_offset"]
    assert discarded >= 10
    # Only corruption made packets unparseable, and none slipped through (byte-exact).
    assert discarded == sum(pair.discarded.values()) <= corrupted


def test_e2e_newreno_with_timestamps_reordering() -> None:
    """RFC 5681 / RFC 7323 without SACK: reordering, duplication and loss together."""
    transfer(TcpConfig(sack=False), 7, 20.0,
             ImpairSpec(loss=3, delay=0.02, jitter=0.015, duplicate=5, seed=7))
