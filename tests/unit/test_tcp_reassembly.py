"""Out-of-order reassembly (RFC 9293 3.10.7.4 seventh step, RFC 5681 4.2): the
:class:`ReassemblyQueue` on its own, and the receiving TCB that uses it."""

from __future__ import annotations

import pytest
from tcp_helpers import (
    IRS,
    ISS,
    PURE_ONLY,
    base_config,
    expect_nothing,
    expect_one,
    pattern,
    peer,
    tcb_established,
)

from tcpstack.tcp import events as ev
from tcpstack.tcp import reassembly
from tcpstack.tcp.reassembly import ReassemblyFull, ReassemblyQueue
from tcpstack.tcp.seq import seq_add
from tcpstack.tcp.state import State
from tcpstack.wire.tcp import ACK, FIN, PSH

RCV = IRS + 1
SND = ISS + 1
DATA = pattern(20_000, seed=3)


def chunk(start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of the peer's stream (offsets from RCV)."""
    return DATA[start:end]


# ------------------------------------------------------------ ReassemblyQueue


def test_queue_holds_out_of_order_run_until_gap_fills() -> None:
    """RFC 9293 3.10.7.4 seventh: data beyond RCV.NXT is kept, not delivered, until the
    segments before it arrive."""
    q = ReassemblyQueue()
    assert q.add(RCV + 100, chunk(100, 200), RCV) is None
    assert q.nbytes == 100
    assert q.pop_ready(RCV) is None  # the gap [0, 100) is still open
    assert q.pop_ready(RCV + 50) is None
    data = q.pop_ready(RCV + 100)
    assert data == chunk(100, 200)
    assert q.nbytes == 0 and not q


def test_queue_pop_ready_trims_what_rcv_nxt_already_covers() -> None:
    """RFC 9293 3.10.7.4 seventh: only bytes at or beyond RCV.NXT are new; the part of a
    queued run that in-order data already delivered is discarded."""
    q = ReassemblyQueue()
    q.add(RCV + 100, chunk(100, 300), RCV)
    assert q.pop_ready(RCV + 150) == chunk(150, 300)
    assert q.nbytes == 0


def test_queue_pop_ready_skips_runs_entirely_below_rcv_nxt() -> None:
    """RFC 9293 3.10.7.4 seventh: a queued run wholly covered by in-order data is stale
    and must not be delivered a second time."""
    q = ReassemblyQueue()
    q.add(RCV + 100, chunk(100, 200), RCV)
    q.add(RCV + 300, chunk(300, 400), RCV)
    assert q.pop_ready(RCV + 250) is None  # first run stale, second not reached
    assert q.nbytes == 100
    assert q.pop_ready(RCV + 300) == chunk(300, 400)


def test_queue_overlapping_runs_merge_with_correct_content() -> None:
    """RFC 9293 3.10.7.4 seventh (trimming overlaps): overlapping and adjacent segments
    merge into one run holding each byte once, in the right place."""
    q = ReassemblyQueue()
    q.add(RCV + 100, chunk(100, 200), RCV)
    q.add(RCV + 300, chunk(300, 400), RCV)
    q.add(RCV + 400, chunk(400, 450), RCV)  # adjacent: merges without overlap
    dup = q.add(RCV + 150, chunk(150, 350), RCV)  # bridges both runs
    assert dup == (RCV + 150, RCV + 200)  # the first already-queued part (RFC 2883 4.1.2)
    assert len(q) == 1
    assert q.nbytes == 350
    assert q.sack_blocks(4) == [(RCV + 100, RCV + 450)]
    assert q.pop_ready(RCV + 100) == chunk(100, 450)


def test_queue_exact_duplicate_reported_and_not_counted_twice() -> None:
    """RFC 2883 4.1.2: a segment that is already queued is a duplicate; the queue keeps
    one copy and reports the duplicated range."""
    q = ReassemblyQueue()
    q.add(RCV + 100, chunk(100, 200), RCV)
    assert q.add(RCV + 100, chunk(100, 200), RCV) == (RCV + 100, RCV + 200)
    assert q.nbytes == 100 and len(q) == 1


def test_queue_segment_inside_run_is_a_duplicate() -> None:
    """RFC 2883 4.1.2: a segment wholly inside a queued run adds nothing."""
    q = ReassemblyQueue()
    q.add(RCV + 100, chunk(100, 400), RCV)
    assert q.add(RCV + 200, chunk(200, 250), RCV) == (RCV + 200, RCV + 250)
    assert q.nbytes == 300
    assert q.pop_ready(RCV + 100) == chunk(100, 400)


def test_queue_drop_below_forgets_covered_runs() -> None:
    """RFC 9293 3.10.7.4 seventh: once RCV.NXT passes a run it no longer occupies the
    receive buffer."""
    q = ReassemblyQueue()
    q.add(RCV + 100, chunk(100, 200), RCV)
    q.add(RCV + 500, chunk(500, 600), RCV)
    q.drop_below(RCV + 200)
    assert q.nbytes == 100
    assert q.sack_blocks(4) == [(RCV + 500, RCV + 600)]


def test_queue_sack_blocks_most_recent_first_and_limited() -> None:
    """RFC 2018 4: the first SACK block is the run holding the most recently received
    segment; then the most recently reported others; at most ``limit`` blocks."""
    q = ReassemblyQueue()
    for off in (100, 300, 500):
        q.add(RCV + off, chunk(off, off + 50), RCV)
    assert q.sack_blocks(4) == [(RCV + 500, RCV + 550), (RCV + 300, RCV + 350),
                                (RCV + 100, RCV + 150)]
    q.add(RCV + 150, chunk(150, 160), RCV)  # extends the oldest run: it moves first
    assert q.sack_blocks(2) == [(RCV + 100, RCV + 160), (RCV + 500, RCV + 550)]


def test_queue_works_across_sequence_wraparound() -> None:
    """RFC 9293 3.4: sequence numbers wrap modulo 2**32; runs straddling zero merge and
    deliver like any other."""
    base = 0xFFFFFF00
    q = ReassemblyQueue()
    q.add(seq_add(base, 0x80), chunk(0x80, 0x180), base)  # crosses 2**32
    q.add(seq_add(base, 0x180), chunk(0x180, 0x200), base)
    assert q.sack_blocks(1) == [(seq_add(base, 0x80), seq_add(base, 0x200))]
    assert q.pop_ready(seq_add(base, 0x80)) == chunk(0x80, 0x200)


def test_queue_clear_forgets_everything() -> None:
    """A closed connection drops its queue, including a queued FIN."""
    q = ReassemblyQueue()
    q.add(RCV + 100, chunk(100, 200), RCV)
    q.fin_seq = RCV + 200
    q.clear()
    assert not q and q.nbytes == 0 and q.sack_blocks(4) == []


# ------------------------------------------------------------ through the TCB


def test_out_of_order_segments_delivered_in_order_when_gap_fills() -> None:
    """RFC 9293 3.10.7.4 seventh: segments ahead of RCV.NXT are held; when the missing
    segment arrives, everything contiguous is delivered in sequence order."""
    tcb = tcb_established()
    for off in (3000, 1000, 2000):
        tcb.receive(peer(tcb, seq=RCV + off, payload=chunk(off, off + 1000)), 1.0)
        expect_one(tcb, 1.0, ACK, ack=RCV)
    assert tcb.recv_buffered == 0 and tcb.take_events() == []
    tcb.receive(peer(tcb, seq=RCV, payload=chunk(0, 1000)), 1.1)
    assert tcb.rcv_nxt == RCV + 4000
    assert tcb.take_events() == [ev.DATA_RECEIVED]
    assert tcb.recv() == chunk(0, 4000)
    expect_one(tcb, 1.1, ACK, ack=RCV + 4000)


def test_overlapping_duplicates_trimmed_data_exact() -> None:
    """RFC 9293 3.10.7.4 seventh: overlapping retransmissions (repacketized differently)
    and duplicates are trimmed, so each byte is delivered exactly once."""
    tcb = tcb_established()
    arrivals = [(1000, 2000), (1500, 3000), (1000, 2000), (2500, 2600), (4000, 5000),
                (3000, 4500), (500, 1200)]
    for a, b in arrivals:
        tcb.receive(peer(tcb, seq=RCV + a, payload=chunk(a, b)), 1.0)
    assert tcb.recv_buffered == 0
    tcb.receive(peer(tcb, seq=RCV, payload=chunk(0, 800)), 1.0)
    assert tcb.rcv_nxt == RCV + 5000
    assert tcb.recv() == chunk(0, 5000)
    # A late copy of delivered data changes nothing.
    tcb.receive(peer(tcb, seq=RCV + 4000, payload=chunk(4000, 5000)), 1.1)
    assert tcb.recv() == b"" and tcb.rcv_nxt == RCV + 5000


def test_in_order_segment_overlapping_queue_head_delivers_once() -> None:
    """RFC 9293 3.10.7.4 seventh: an in-order segment that runs into queued data
    delivers the overlap only once."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, seq=RCV + 1000, payload=chunk(1000, 2000)), 1.0)
    tcb.receive(peer(tcb, seq=RCV, payload=chunk(0, 1500)), 1.0)
    assert tcb.recv() == chunk(0, 2000)
    assert tcb.rcv_nxt == RCV + 2000


def test_queued_fin_processed_when_gap_fills() -> None:
    """RFC 9293 3.10.7.4 eighth: a FIN is processed only when all data before it has
    arrived; an out-of-order FIN waits in the queue for the gap to fill."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, ACK | FIN | PSH, seq=RCV + 1000, payload=chunk(1000, 1500)), 1.0)
    expect_one(tcb, 1.0, ACK, ack=RCV)
    assert tcb.state is State.ESTABLISHED
    assert tcb.take_events() == []
    tcb.receive(peer(tcb, seq=RCV, payload=chunk(0, 1000)), 1.1)
    assert tcb.state is State.CLOSE_WAIT
    assert tcb.rcv_nxt == RCV + 1501  # data plus the FIN
    assert tcb.take_events() == [ev.DATA_RECEIVED, ev.END_OF_STREAM]
    assert tcb.recv() == chunk(0, 1500)
    expect_one(tcb, 1.1, ACK, ack=RCV + 1501)


def test_queued_bare_fin_processed_when_gap_fills() -> None:
    """RFC 9293 3.10.7.4 eighth: a FIN without data that arrives ahead of missing data
    takes effect once the data arrives."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, ACK | FIN, seq=RCV + 700), 1.0)
    expect_one(tcb, 1.0, ACK, ack=RCV)
    assert tcb.state is State.ESTABLISHED
    tcb.receive(peer(tcb, seq=RCV, payload=chunk(0, 700)), 1.1)
    assert tcb.state is State.CLOSE_WAIT
    assert tcb.rcv_nxt == RCV + 701
    expect_one(tcb, 1.1, ACK, ack=RCV + 701)


def test_advertised_window_accounts_queued_bytes() -> None:
    """RFC 9293 3.8.6.2.2 / 3.10.7.4: bytes held for reassembly occupy the receive
    buffer, so reading in-order data reopens the window only by what is really free."""
    tcb = tcb_established(base_config(rcv_buf=16384))
    tcb.receive(peer(tcb, seq=RCV, payload=chunk(0, 8000)), 1.0)
    expect_one(tcb, 1.0, ACK, ack=RCV + 8000, window=16384 - 8000)
    tcb.receive(peer(tcb, seq=RCV + 9000, payload=chunk(9000, 15000)), 1.0)
    # The out-of-order data sits inside the window already offered: no shrinking.
    expect_one(tcb, 1.0, ACK, ack=RCV + 8000, window=16384 - 8000)
    assert tcb.recv() == chunk(0, 8000)
    # Trigger an ACK with an old duplicate: the window is the buffer minus the queue.
    tcb.receive(peer(tcb, seq=RCV, payload=chunk(0, 100)), 1.1)
    expect_one(tcb, 1.1, ACK, ack=RCV + 8000, window=16384 - 6000)


def test_every_out_of_order_segment_gets_immediate_duplicate_ack() -> None:
    """RFC 5681 4.2 / RFC 9293 3.8.6.3: an out-of-order segment SHOULD be acknowledged at
    once (a duplicate ACK), even with delayed ACKs on -- every one of them."""
    tcb = tcb_established(base_config(delayed_ack=0.2))
    for i, off in enumerate((2000, 3000, 4000, 6000)):
        now = 1.0 + i * 0.01
        tcb.receive(peer(tcb, seq=RCV + off, payload=chunk(off, off + 1000)), now)
        expect_one(tcb, now, ACK, seq=SND, ack=RCV)


def test_filling_the_hole_is_acked_immediately() -> None:
    """RFC 5681 4.2: a segment that fills a gap SHOULD be acknowledged at once, even
    when delayed ACKs are on and it is a single segment."""
    tcb = tcb_established(base_config(delayed_ack=0.2))
    tcb.receive(peer(tcb, seq=RCV + 1000, payload=chunk(1000, 2000)), 1.0)
    expect_one(tcb, 1.0, ACK, ack=RCV)
    tcb.receive(peer(tcb, seq=RCV, payload=chunk(0, 1000)), 1.05)
    expect_one(tcb, 1.05, ACK, ack=RCV + 2000)


def test_filling_part_of_the_hole_is_acked_immediately() -> None:
    """RFC 5681 4.2: "fills in all or part of a gap" -- a segment that advances RCV.NXT
    while a gap remains also draws an immediate ACK."""
    tcb = tcb_established(base_config(delayed_ack=0.2))
    tcb.receive(peer(tcb, seq=RCV + 2000, payload=chunk(2000, 3000)), 1.0)
    expect_one(tcb, 1.0, ACK, ack=RCV)
    tcb.receive(peer(tcb, seq=RCV, payload=chunk(0, 1000)), 1.05)
    expect_one(tcb, 1.05, ACK, ack=RCV + 1000)


def test_in_order_data_without_queue_still_delayed() -> None:
    """RFC 1122 4.2.3.2: the immediate ACK is for gaps; ordinary in-order data with an
    empty reassembly queue may wait for the delayed-ACK timer."""
    tcb = tcb_established(base_config(delayed_ack=0.2))
    tcb.receive(peer(tcb, seq=RCV, payload=chunk(0, 1000)), 1.0)
    expect_nothing(tcb, 1.0)
    assert tcb.next_deadline() == pytest.approx(1.2)


# ------------------------------------------------- bounded cost against hostile peers


def test_queue_first_copy_of_a_byte_wins() -> None:
    """Queued bytes never overlap: a later segment covering queued bytes adds only what
    is missing (the first copy wins, as in Linux), so a peer cannot rewrite queued
    data by sending the same sequence numbers with other bytes."""
    q = ReassemblyQueue()
    q.add(RCV + 100, b"A" * 100, RCV)
    assert q.add(RCV + 50, b"B" * 200, RCV) == (RCV + 100, RCV + 200)
    assert q.nbytes == 200
    assert q.pop_ready(RCV + 50) == b"B" * 50 + b"A" * 100 + b"B" * 50


def test_queue_caps_pieces_from_tiny_segments_with_tiny_holes() -> None:
    """A peer sending 1-byte segments with 1-byte holes across the whole window: the
    queue refuses what would exceed its bound on pieces (the peer will resend), so its
    memory stays bounded whatever the window."""
    q = ReassemblyQueue(max_pieces=64)
    refused = 0
    for k in range(1, 2001):
        try:
            q.add(RCV + 2 * k, b"x", RCV)
        except ReassemblyFull:
            refused += 1
    assert len(q) == 64 and q.pieces == 64 and q.nbytes == 64
    assert refused == 2000 - 64
    # Data that continues a queued run at its end needs no new piece: still taken.
    assert q.add(RCV + 3, b"y", RCV) is None
    assert q.nbytes == 65 and q.pieces == 64


def test_queue_reverse_order_tiny_segments_are_bounded_too() -> None:
    """Segments arriving back to front each prepend to the same run: each is a piece,
    so the cap bounds them too (no quadratic copying of a growing run)."""
    q = ReassemblyQueue(max_pieces=100)
    taken = 0
    for k in range(5000, 0, -1):
        try:
            q.add(RCV + k, b"z", RCV)
            taken += 1
        except ReassemblyFull:
            pass
    assert taken == 100 and q.pieces == 100
    assert len(q) == 1 and q.nbytes == 100


def test_queue_delivers_thousands_of_runs_without_recursion() -> None:
    """One large in-order segment (a jumbo frame or a GRO super-segment) covering
    thousands of queued runs: pop_ready walks them in a loop, not by recursion."""
    q = ReassemblyQueue(max_pieces=10_000)
    for k in range(5000):
        q.add(RCV + 10 + 3 * k, b"ab", RCV)
    assert len(q) == 5000
    assert q.pop_ready(RCV + 20_000) is None  # every run lies below: all dropped
    assert len(q) == 0 and q.nbytes == 0 and q.pieces == 0


@PURE_ONLY
def test_queue_cost_per_segment_grows_slowly_with_the_number_of_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding where a segment goes is a binary search: the sequence comparisons per
    segment grow with log(runs), not with the number of runs queued."""
    calls = 0
    real = reassembly.seq_diff

    def counting(a: int, b: int) -> int:
        nonlocal calls
        calls += 1
        return real(a, b)

    def cost(runs: int) -> int:
        nonlocal calls
        q = ReassemblyQueue(max_pieces=runs + 10)
        for k in range(runs):
            q.add(RCV + 10 + 3 * k, b"ab", RCV)
        calls = 0
        q.add(RCV + 10 + 3 * (runs // 2) + 2, b"c", RCV)  # lands in the middle
        return calls

    monkeypatch.setattr(reassembly, "seq_diff", counting)
    small, large = cost(16), cost(4096)
    assert small > 0  # the instrument works
    assert large <= small + 20, (small, large)


def test_tcb_drops_out_of_order_data_beyond_the_piece_cap_and_counts_it() -> None:
    """Through the TCB: refused out-of-order data is counted (tcp_ooo_queue_full) and
    still draws the duplicate ACK; the connection carries on and the data, once
    resent, is delivered."""
    tcb = tcb_established()
    cap = tcb.reassembly.max_pieces
    for k in range(cap + 10):
        tcb.receive(peer(tcb, seq=RCV + 2 + 2 * k, payload=chunk(2 + 2 * k, 3 + 2 * k)), 1.0)
    assert tcb.counters["tcp_ooo_queue_full"] == 10
    assert tcb.reassembly.pieces == cap
    tcb.segments_to_send(1.0)
    tcb.receive(peer(tcb, seq=RCV, payload=chunk(0, 2 + 2 * (cap + 10))), 1.1)
    assert tcb.recv() == chunk(0, 2 + 2 * (cap + 10))


def test_nothing_beyond_an_out_of_order_fin_is_delivered_and_the_fin_still_counts() -> None:
    """RFC 9293 3.10.7.4: the FIN ends the peer's stream. Data a peer sends beyond a
    FIN that arrived out of order is not queued, and the FIN is taken once the hole
    before it fills."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, ACK | FIN, seq=RCV + 10), 1.0)
    tcb.receive(peer(tcb, ACK, seq=RCV + 10, payload=b"x" * 10), 1.0)  # "after" the FIN
    tcb.receive(peer(tcb, ACK, seq=RCV, payload=chunk(0, 10)), 1.0)
    assert tcb.recv() == chunk(0, 10)
    assert tcb.state is State.CLOSE_WAIT


def test_data_queued_beyond_a_later_fin_is_forgotten() -> None:
    """A FIN that arrives out of order below data already queued: the queued bytes
    beyond it are dropped (counted), and the FIN ends the stream when the hole fills."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, ACK, seq=RCV + 11, payload=b"x" * 10), 1.0)
    tcb.receive(peer(tcb, ACK | FIN, seq=RCV + 10), 1.0)
    assert tcb.reassembly.nbytes == 0
    assert tcb.counters["tcp_data_after_fin"] == 1
    tcb.receive(peer(tcb, ACK, seq=RCV, payload=chunk(0, 10)), 1.0)
    assert tcb.recv() == chunk(0, 10)
    assert tcb.state is State.CLOSE_WAIT


def test_queue_drop_from_cuts_runs_at_a_sequence_number() -> None:
    q = ReassemblyQueue()
    q.add(RCV + 100, chunk(100, 200), RCV)
    q.add(RCV + 300, chunk(300, 400), RCV)
    assert q.drop_from(RCV + 150, RCV) == 150
    assert q.nbytes == 50 and len(q) == 1
    assert q.pop_ready(RCV + 100) == chunk(100, 150)


def test_a_fin_recorded_ahead_is_forgotten_once_the_retransmission_carrying_it_is_taken() -> None:
    """The FIN arrives ahead of a hole; the sender's retransmission fills the hole and
    carries the FIN again: the stream ends once, and nothing about that FIN stays
    queued (before this was fixed, the queue kept it, behind RCV.NXT, found by the
    engine's Hypothesis test of long-lived connections)."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, ACK | FIN, seq=RCV + 10), 1.0)
    assert tcb.reassembly.fin_seq == RCV + 10
    tcb.receive(peer(tcb, ACK | FIN, seq=RCV, payload=chunk(0, 10)), 1.0)
    assert tcb.state is State.CLOSE_WAIT
    assert tcb.rcv_nxt == RCV + 11
    assert tcb.reassembly.fin_seq is None and not tcb.reassembly
    assert tcb.recv() == chunk(0, 10)
    assert tcb.take_events().count(ev.END_OF_STREAM) == 1


def test_an_earlier_fin_in_sequence_ends_the_stream_and_drops_the_later_one() -> None:
    """A peer that contradicts itself: a FIN recorded at RCV+10, then data and a FIN
    in sequence that end the stream at RCV+5. The stream ends at the FIN taken; the
    recorded one, now beyond the end, is forgotten."""
    tcb = tcb_established()
    tcb.receive(peer(tcb, ACK | FIN, seq=RCV + 10), 1.0)
    tcb.receive(peer(tcb, ACK | FIN, seq=RCV, payload=chunk(0, 5)), 1.0)
    assert tcb.state is State.CLOSE_WAIT
    assert tcb.rcv_nxt == RCV + 6
    assert tcb.reassembly.fin_seq is None
