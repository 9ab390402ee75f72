"""When ACKs and small segments are sent: delayed ACKs (RFC 1122 4.2.3.2, RFC 5681 4.2,
RFC 9293 3.8.6.3) and Nagle's algorithm (RFC 9293 3.7.4, RFC 896, RFC 1122 4.2.3.4)."""

from __future__ import annotations

import pytest
from tcp_helpers import (
    IRS,
    ISS,
    base_config,
    expect,
    expect_nothing,
    expect_one,
    pattern,
    peer,
    peer_opts,
    tcb_established,
    tcb_established_opts,
)

from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import ACK, FIN, PSH

RCV = IRS + 1
SND = ISS + 1
MSS = 1460
DELACK = base_config(delayed_ack=0.04)
DATA = pattern(30_000, seed=11)


def delack_tcb(**cfg: object) -> Tcb:
    return tcb_established(base_config(delayed_ack=0.04, **cfg))


def data(tcb: Tcb, off: int, n: int, now: float) -> None:
    tcb.receive(peer(tcb, seq=RCV + off, payload=DATA[off:off + n],
                     options=peer_opts(tcb, now)), now)


# ------------------------------------------------------------ delayed ACKs


def test_delayed_ack_defaults_and_limit() -> None:
    """RFC 1122 4.2.3.2: ACKs may be delayed, but by less than 0.5 s; the default is
    Linux's 40 ms."""
    assert TcpConfig().delayed_ack == pytest.approx(0.04)
    with pytest.raises(ValueError):
        TcpConfig(delayed_ack=0.6)


def test_one_full_segment_acked_only_when_timer_expires() -> None:
    """RFC 1122 4.2.3.2 / RFC 5681 4.2: a single segment's ACK may wait for the
    delayed-ACK timer (40 ms here), then goes out."""
    tcb = delack_tcb()
    data(tcb, 0, MSS, 1.0)
    expect_nothing(tcb, 1.0)
    assert tcb.next_deadline() == pytest.approx(1.04)
    tcb.handle_timer(1.039)
    expect_nothing(tcb, 1.039)
    tcb.handle_timer(1.04)
    expect_one(tcb, 1.04, ACK, seq=SND, ack=RCV + MSS)
    assert tcb.next_deadline() is None


def test_two_full_segments_acked_at_once() -> None:
    """RFC 1122 4.2.3.2 / RFC 5681 4.2: an ACK SHOULD be generated for at least every
    second full-sized segment."""
    tcb = delack_tcb()
    data(tcb, 0, MSS, 1.0)
    data(tcb, MSS, MSS, 1.0)
    expect_one(tcb, 1.0, ACK, ack=RCV + 2 * MSS)


def test_second_full_segment_in_later_batch_acked_at_once() -> None:
    """RFC 5681 4.2: the every-second-segment rule counts segments since the last ACK,
    across separate arrivals; the pending timer is then cancelled."""
    tcb = delack_tcb()
    data(tcb, 0, MSS, 1.0)
    expect_nothing(tcb, 1.0)
    data(tcb, MSS, MSS, 1.01)
    expect_one(tcb, 1.01, ACK, ack=RCV + 2 * MSS)
    tcb.handle_timer(1.04)
    expect_nothing(tcb, 1.04)


def test_every_second_segment_of_the_largest_size_seen_is_acked_at_once() -> None:
    """RFC 1122 4.2.3.2 / RFC 5681 4.2: "full-sized" is the largest segment seen from
    the peer (Linux's rcv_mss), so two 1000-byte segments call for an ACK at once."""
    tcb = delack_tcb()
    data(tcb, 0, 1000, 1.0)
    expect_nothing(tcb, 1.0)
    data(tcb, 1000, 1000, 1.01)
    expect_one(tcb, 1.01, ACK, ack=RCV + 2000)
    data(tcb, 2000, 500, 1.02)
    expect_nothing(tcb, 1.02)  # half a segment: the delayed-ACK timer covers it


def test_two_full_sized_segments_with_timestamps_acked_at_once() -> None:
    """RFC 5681 4.2 / RFC 7323 3: with timestamps a full-sized segment carries MSS - 12
    bytes; two of them still call for an immediate ACK."""
    tcb = tcb_established_opts(DELACK, sack=True, ts=True)
    data(tcb, 0, MSS - 12, 1.0)
    data(tcb, MSS - 12, MSS - 12, 1.0)
    expect_one(tcb, 1.0, ACK, ack=RCV + 2 * (MSS - 12))


def test_segments_after_a_super_segment_are_full_sized_with_timestamps() -> None:
    """A segment larger than the MSS (the kernel coalesced several, GRO) makes the
    full-sized segment the MSS less the timestamp option (RFC 6691, RFC 7323 3), not
    the MSS itself: two MSS - 12 byte segments after it are still acked at once."""
    tcb = tcb_established_opts(DELACK, sack=True, ts=True)
    data(tcb, 0, 3 * (MSS - 12), 1.0)
    expect_one(tcb, 1.0, ACK, ack=RCV + 3 * (MSS - 12))
    data(tcb, 3 * (MSS - 12), MSS - 12, 1.01)
    data(tcb, 4 * (MSS - 12), MSS - 12, 1.01)
    expect_one(tcb, 1.01, ACK, ack=RCV + 5 * (MSS - 12))


def test_out_of_order_segment_acked_at_once() -> None:
    """RFC 5681 4.2 / RFC 9293 3.8.6.3: an out-of-order segment is acknowledged at once
    (a duplicate ACK), with no delay."""
    tcb = delack_tcb()
    data(tcb, MSS, MSS, 1.0)
    expect_one(tcb, 1.0, ACK, ack=RCV)


def test_pending_delayed_ack_flushed_by_out_of_order_segment() -> None:
    """RFC 5681 4.2: an out-of-order arrival sends the (then duplicate) ACK at once, which
    also acknowledges the in-order data whose ACK was being delayed."""
    tcb = delack_tcb()
    data(tcb, 0, MSS, 1.0)
    expect_nothing(tcb, 1.0)
    data(tcb, 3 * MSS, MSS, 1.01)
    expect_one(tcb, 1.01, ACK, ack=RCV + MSS)
    tcb.handle_timer(1.04)
    expect_nothing(tcb, 1.04)


@pytest.mark.parametrize("with_data", [False, True])
def test_fin_acked_at_once(with_data: bool) -> None:
    """RFC 9293 3.10.7.4 eighth / RFC 1122 4.2.3.2: the FIN is acknowledged without delay
    (with any data that came with it)."""
    tcb = delack_tcb()
    payload = DATA[:100] if with_data else b""
    tcb.receive(peer(tcb, ACK | FIN | PSH, payload=payload), 1.0)
    expect_one(tcb, 1.0, ACK, ack=RCV + len(payload) + 1)
    assert tcb.state is State.CLOSE_WAIT


def test_window_opening_after_read_sends_update_at_once() -> None:
    """RFC 9293 3.8.6.2.2 / RFC 1122 4.2.3.3: when reading frees a substantial part of
    the buffer (min(half the buffer, 2 * MSS)), a window update is sent at once."""
    tcb = delack_tcb(rcv_buf=8192)
    off = 0
    while off < 8192:
        n = min(MSS, 8192 - off)
        data(tcb, off, n, 1.0)
        off += n
    last = expect_one(tcb, 1.0, ACK, ack=RCV + 8192)  # one ACK for the batch
    assert last.window == 0
    assert tcb.recv(100) == DATA[:100]  # a small read: no update (receiver SWS)
    expect_nothing(tcb, 1.1)
    assert tcb.recv() == DATA[100:8192]
    update = expect_one(tcb, 1.1, ACK, ack=RCV + 8192)
    assert update.window == 8192


def reader_tcb() -> Tcb:
    """A delayed-ACK connection whose whole buffer is advertised (no window scaling), so
    reading a few segments' worth never opens the window enough for a window update
    (min(half the buffer, 2 * MSS)): any ACK a read sends comes from the ACK policy."""
    return delack_tcb(rcv_buf=0xFFFF)


def test_full_segment_and_short_tail_acked_when_the_application_reads() -> None:
    """A delayed ACK for more than one full-sized segment goes out when the
    application reads (Linux's tcp_cleanup_rbuf), not 40 ms later.

    The peer sends a full segment and a short PSH tail (the end of its write): less
    than two full segments, so the ACK may wait. Once the application has consumed
    the data there is nothing left to wait for; a Linux sender with two segments
    unacknowledged probes after 2 * SRTT + 2 ms (RFC 8985 TLP), long before 40 ms.
    """
    tcb = reader_tcb()
    data(tcb, 0, MSS, 1.0)
    tcb.receive(peer(tcb, ACK | PSH, seq=RCV + MSS, payload=DATA[MSS:MSS + 376]), 1.0)
    expect_nothing(tcb, 1.0)  # 1836 bytes: below two full segments, the ACK is delayed
    assert tcb.timers.delack == pytest.approx(1.04)
    assert tcb.recv() == DATA[:MSS + 376]
    expect_one(tcb, 1.001, ACK, ack=RCV + MSS + 376)
    assert tcb.timers.delack is None
    tcb.handle_timer(1.04)
    expect_nothing(tcb, 1.04)


def test_short_pushed_segment_acked_when_a_read_drains_the_buffer() -> None:
    """A short (pushed) segment's delayed ACK goes out once the application has read
    everything received (Linux: ICSK_ACK_PUSHED and an empty receive queue in
    tcp_cleanup_rbuf); a read that leaves data behind does not send it."""
    tcb = reader_tcb()
    tcb.receive(peer(tcb, ACK | PSH, payload=DATA[:300]), 1.0)
    expect_nothing(tcb, 1.0)
    assert tcb.recv(100) == DATA[:100]
    expect_nothing(tcb, 1.001)  # 200 bytes still unread
    assert tcb.recv() == DATA[100:300]
    expect_one(tcb, 1.002, ACK, ack=RCV + 300)
    assert tcb.next_deadline() is None


def test_single_full_segment_read_still_waits_for_the_timer() -> None:
    """Reading does not turn every delayed ACK into an immediate one: one full-sized
    segment (not more than one, not short) keeps its delayed ACK, as in Linux."""
    tcb = reader_tcb()
    data(tcb, 0, MSS, 1.0)
    expect_nothing(tcb, 1.0)
    assert tcb.recv() == DATA[:MSS]
    expect_nothing(tcb, 1.001)
    tcb.handle_timer(1.04)
    expect_one(tcb, 1.04, ACK, ack=RCV + MSS)


def test_read_after_the_ack_was_sent_sends_nothing() -> None:
    """The read-time ACK is only for an ACK still owed: data already acknowledged
    (here by the two-segment rule, segments of 1000 bytes) draws no second ACK when
    it is read."""
    tcb = reader_tcb()
    data(tcb, 0, 1000, 1.0)
    data(tcb, 1000, 1000, 1.0)
    expect_one(tcb, 1.0, ACK, ack=RCV + 2000)
    assert tcb.recv() == DATA[:2000]
    expect_nothing(tcb, 1.001)


def test_sending_data_piggybacks_ack_and_cancels_timer() -> None:
    """RFC 9293 3.8.6.3 / RFC 1122 4.2.3.2: data we send carries the ACK, so the delayed
    ACK is no longer needed and its timer is cancelled."""
    tcb = delack_tcb()
    data(tcb, 0, MSS, 1.0)
    expect_nothing(tcb, 1.0)
    assert tcb.timers.delack == pytest.approx(1.04)
    tcb.send(b"reply")
    expect_one(tcb, 1.01, ACK | PSH, seq=SND, ack=RCV + MSS, payload=b"reply")
    assert tcb.timers.delack is None
    tcb.handle_timer(1.04)
    expect_nothing(tcb, 1.04)


def test_delayed_ack_disabled_acks_every_segment() -> None:
    """TcpConfig(delayed_ack=0): every in-order segment is acknowledged at once."""
    tcb = tcb_established(base_config(delayed_ack=0.0))
    data(tcb, 0, 100, 1.0)
    expect_one(tcb, 1.0, ACK, ack=RCV + 100)


# ------------------------------------------------------------------ Nagle


def nagle_tcb(**cfg: object) -> Tcb:
    tcb = tcb_established(base_config(nagle=True, **cfg))
    assert not tcb.nodelay
    return tcb


def test_nagle_on_by_default() -> None:
    """RFC 1122 4.2.3.4: a TCP SHOULD implement the Nagle algorithm (on by default)."""
    assert TcpConfig().nagle
    tcb = Tcb.active_open(TcpConfig(), (1, 1), (2, 2), ISS, 0.0)
    assert tcb.nodelay is False


def test_nagle_first_small_segment_sent_at_once() -> None:
    """RFC 9293 3.7.4: with nothing unacknowledged, a small segment goes out at once."""
    tcb = nagle_tcb()
    tcb.send(b"a" * 100)
    expect_one(tcb, 1.0, ACK | PSH, seq=SND, payload=b"a" * 100)


def test_nagle_holds_small_segment_until_ack() -> None:
    """RFC 9293 3.7.4 / RFC 896: while data is unacknowledged, further small segments are
    held (and coalesced); the ACK releases them as one segment."""
    tcb = nagle_tcb()
    tcb.send(b"a" * 100)
    expect(tcb, 1.0, 1)
    tcb.send(b"b" * 100)
    expect_nothing(tcb, 1.01)
    tcb.send(b"c" * 100)
    expect_nothing(tcb, 1.02)
    tcb.receive(peer(tcb, ack=SND + 100), 1.1)
    expect_one(tcb, 1.1, ACK | PSH, seq=SND + 100, payload=b"b" * 100 + b"c" * 100)


def test_nagle_does_not_hold_full_segments() -> None:
    """RFC 9293 3.7.4: Nagle only holds segments smaller than the MSS; full segments go
    out even with data in flight, and just the small tail waits."""
    tcb = nagle_tcb()
    tcb.send(b"a" * 100)
    expect(tcb, 1.0, 1)
    tcb.send(DATA[:3000])
    segs = expect(tcb, 1.01, 2)
    assert [len(s.payload) for s in segs] == [MSS, MSS]
    tcb.receive(peer(tcb, ack=SND + 100 + 2 * MSS), 1.1)
    expect_one(tcb, 1.1, ACK | PSH, seq=SND + 100 + 2 * MSS, payload=DATA[2 * MSS:3000])


def test_set_nodelay_sends_small_segments_at_once() -> None:
    """RFC 1122 4.2.3.4: the application can disable Nagle per connection (TCP_NODELAY);
    a held segment then goes out immediately, and later ones are not held."""
    tcb = nagle_tcb()
    tcb.send(b"a" * 100)
    expect(tcb, 1.0, 1)
    tcb.send(b"b" * 100)
    expect_nothing(tcb, 1.01)
    tcb.set_nodelay(True)
    expect_one(tcb, 1.02, ACK | PSH, seq=SND + 100, payload=b"b" * 100)
    tcb.send(b"c" * 10)
    expect_one(tcb, 1.03, ACK | PSH, seq=SND + 200, payload=b"c" * 10)


def test_nagle_queued_fin_flushes_small_tail() -> None:
    """RFC 9293 3.7.4 / 3.10.4: closing sends the held small tail at once, with the FIN
    (no more data can follow, so nothing is gained by waiting)."""
    tcb = nagle_tcb()
    tcb.send(b"a" * 100)
    expect(tcb, 1.0, 1)
    tcb.send(b"tail")
    expect_nothing(tcb, 1.01)
    tcb.shutdown_write()
    seg = expect_one(tcb, 1.02, seq=SND + 100, payload=b"tail")
    assert seg.flags & FIN and seg.flags & ACK
    assert tcb.state is State.FIN_WAIT_1


def test_nagle_off_sends_small_segments_back_to_back() -> None:
    """RFC 9293 3.7.4: with Nagle disabled (the test baseline), small writes are not held."""
    tcb = tcb_established()
    tcb.send(b"a")
    expect(tcb, 1.0, 1)
    tcb.send(b"b")
    expect_one(tcb, 1.01, ACK | PSH, seq=SND + 1, payload=b"b")
