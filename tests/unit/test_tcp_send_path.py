"""The send path's buffer handling: autocorking, views into the send buffer, the
gathering packet builder, and what a connection keeps once in TIME-WAIT."""

from __future__ import annotations

import pytest
from tcp_helpers import (
    ISS,
    base_config,
    expect,
    pattern,
    peer,
    peer_opts,
    tcb_established_opts,
    tcb_time_wait,
)

from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import (
    ACK,
    FIN,
    PSH,
    SCATTER_MIN_PAYLOAD,
    TcpOptions,
    TcpSegment,
    emit_tcp_ipv4,
    emit_tcp_ipv4_parts,
)

SND = ISS + 1
MT = 1448  # payload per segment with timestamps


def nodelay_sender() -> Tcb:
    tcb = tcb_established_opts(base_config(tlp=False, nagle=True))
    tcb.set_nodelay(True)
    return tcb


def test_autocork_holds_small_tail_while_four_segments_are_in_flight() -> None:
    """Like Linux's autocorking: even with no-delay, a sub-MSS tail waits while at least
    four segments are in flight, then leaves with the next ACK (no runt per write)."""
    tcb = nodelay_sender()
    tcb.send(pattern(5 * MT + 100))
    segs = expect(tcb, 1.0)
    assert [len(s.payload) for s in segs] == [MT] * 5
    tcb.receive(peer(tcb, ack=SND + 2 * MT, options=peer_opts(tcb, 1.1)), 1.1)
    assert [len(s.payload) for s in expect(tcb, 1.1)] == [100]


def test_autocork_does_not_delay_interactive_replies() -> None:
    """With little in flight the small tail goes at once: no-delay still means no delay
    for request/response traffic."""
    tcb = nodelay_sender()
    tcb.send(pattern(MT + 100))
    assert [len(s.payload) for s in expect(tcb, 1.0)] == [MT, 100]


def test_held_segments_stay_valid_when_the_send_buffer_changes() -> None:
    """Segments carry views of the send buffer; writing more and trimming acknowledged
    bytes while such a view is alive copies the buffer instead of failing, and the
    segment's bytes stay what was sent."""
    tcb = tcb_established_opts(base_config(tlp=False, nagle=False))
    data = pattern(3 * MT)
    tcb.send(data)
    held = expect(tcb, 1.0)
    assert [bytes(s.payload) for s in held] == [data[i * MT:(i + 1) * MT] for i in range(3)]
    tcb.send(pattern(500, seed=1))  # grows the buffer while views are held
    tcb.receive(peer(tcb, ack=SND + MT, options=peer_opts(tcb, 1.1)), 1.1)  # trims it
    assert bytes(held[2].payload) == data[2 * MT:]
    nxt = expect(tcb, 1.1)
    assert b"".join(bytes(s.payload) for s in nxt) == pattern(500, seed=1)


@pytest.mark.parametrize("vnet", [False, True])
@pytest.mark.parametrize("size", [0, 100, SCATTER_MIN_PAYLOAD - 1, SCATTER_MIN_PAYLOAD, 60000])
def test_gathering_builder_produces_the_same_packet(vnet: bool, size: int) -> None:
    """emit_tcp_ipv4_parts's (headers, payload) joined is byte-for-byte the packet
    emit_tcp_ipv4 builds, checksums included; small payloads stay one buffer."""
    seg = TcpSegment(80, 40000, 123456, 654321, ACK | PSH, 5000,
                     TcpOptions(timestamps=(1, 2), sack_blocks=((10, 20),)),
                     memoryview(pattern(size)))
    whole = emit_tcp_ipv4(seg, 0x0A000002, 0x0A000001, 7, 64, vnet, 1448)
    parts = emit_tcp_ipv4_parts(seg, 0x0A000002, 0x0A000001, 7, 64, vnet, 1448)
    if size >= SCATTER_MIN_PAYLOAD:
        assert isinstance(parts, tuple)
        assert b"".join(parts) == whole
    else:
        assert parts == whole


def test_time_wait_keeps_no_send_or_reassembly_state() -> None:
    """A connection in TIME-WAIT only re-ACKs FINs (RFC 9293 3.10.7.4); like Linux's
    timewait sockets it holds no send or reassembly state of its own: it points at
    shared stand-ins that are empty and refuse every change, so no connection can
    change what another one sees."""
    tcb = tcb_time_wait()
    other = tcb_time_wait()
    assert not tcb.scoreboard.recs and not tcb.reassembly and not tcb.send_buffered
    assert tcb.scoreboard is other.scoreboard and tcb.reassembly is other.reassembly
    assert tcb.scoreboard.frozen and tcb.reassembly.frozen
    with pytest.raises(RuntimeError):
        tcb.reassembly.add(tcb.rcv_nxt + 10, b"x", tcb.rcv_nxt)
    with pytest.raises(RuntimeError):
        tcb.scoreboard.on_send(1, 2, 0.0)
    # Data on a retransmitted FIN is not queued anywhere: it only draws the ACK.
    tcb.receive(peer(tcb, FIN | ACK, seq=tcb.rcv_nxt - 4, payload=b"late"), 1.0)
    assert not tcb.reassembly and tcb.recv_buffered == 0


def test_a_super_segment_cut_short_by_the_window_ends_on_a_segment_boundary() -> None:
    """With TSO the device cuts a super-segment into MSS-sized pieces: one the window
    limits to 10 segments and 100 bytes goes as 10 full segments -- not 10 and a
    100-byte runt (Linux's tcp_mss_split_point); the rest waits for the window."""
    tcb = tcb_established_opts(base_config(tlp=False, tso_size=64_000, snd_buf=1 << 22))
    tcb.cc.cwnd = 10 * MT + 100
    tcb.send(pattern(100_000))
    (seg,) = expect(tcb, 0.1)
    assert len(seg.payload) == 10 * MT
