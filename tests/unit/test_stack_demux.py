"""The Stack: validation and counters, demultiplexing, closed ports, listeners and
TIME-WAIT reuse (RFC 9293 3.10.7.1-3.10.7.2, RFC 1122 3.2.1.3, RFC 6191)."""

from __future__ import annotations

import random
import struct

import pytest
from tcp_helpers import IRS, Wire, check_segment, ip, packet, stack, syn_from_peer

from tcpstack.tcp import events as ev
from tcpstack.tcp.seq import seq_add, seq_gt
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire import checksum as ck
from tcpstack.wire.ipv4 import build_ipv4
from tcpstack.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpOptions, TcpSegment

A = "10.0.0.1"
B = "10.0.0.2"


def raw_tcp(src: int, dst: int, header: bytes, payload: bytes = b"") -> bytearray:
    """An IPv4 packet around raw TCP header bytes (checksum filled in)."""
    seg = bytearray(header + payload)
    seg[16:18] = b"\0\0"
    total = ck.pseudo_header_ipv4(src, dst, 6, len(seg)) + ck.partial(bytes(seg))
    struct.pack_into("!H", seg, 16, ck.finish(total))
    return build_ipv4(src, dst, 6, seg)


# ------------------------------------------------------------- closed ports


def test_closed_port_syn_gets_rst_ack() -> None:
    """RFC 9293 3.10.7.1: CLOSED + segment without ACK -> <SEQ=0><ACK=SEG.SEQ+SEG.LEN>
    <CTL=RST,ACK> (the SYN counts one)."""
    w = Wire()
    (rst,) = w.send(syn_from_peer(seq=IRS, dst_port=81))
    check_segment(rst, RST | ACK, seq=0, ack=IRS + 1)
    assert (rst.src_port, rst.dst_port) == (81, 40000)
    assert w.stack.counters["tcp_closed_port"] == 1
    assert w.stack.counters["tcp_rst_sent"] == 1


def test_closed_port_data_without_ack_acks_whole_segment() -> None:
    """RFC 9293 3.10.7.1: ACK = SEG.SEQ + SEG.LEN, counting payload and FIN."""
    w = Wire()
    (rst,) = w.send(TcpSegment(40000, 81, 0xFFFFFFF0, 0, PSH | FIN, 100, payload=b"x" * 20))
    check_segment(rst, RST | ACK, seq=0, ack=seq_add(0xFFFFFFF0, 21))


def test_closed_port_ack_gets_rst_with_seq_seg_ack() -> None:
    """RFC 9293 3.10.7.1: CLOSED + segment with ACK -> <SEQ=SEG.ACK><CTL=RST>."""
    w = Wire()
    (rst,) = w.send(TcpSegment(40000, 81, 777, 123456, ACK | PSH, 100, payload=b"hi"))
    check_segment(rst, RST, seq=123456, ack=0)
    assert w.stack.counters["tcp_closed_port"] == 1
    assert w.stack.counters["tcp_rst_sent"] == 1


@pytest.mark.parametrize("flags", [RST, RST | ACK])
def test_closed_port_rst_never_answered(flags: int) -> None:
    """RFC 9293 3.10.7.1: "An incoming segment containing a RST is discarded"."""
    w = Wire()
    assert w.send(TcpSegment(40000, 81, 777, 123, flags, 0)) == []
    assert w.stack.counters["tcp_closed_port"] == 1
    assert w.stack.counters["tcp_rst_sent"] == 0


def test_no_rst_to_broadcast_or_own_source() -> None:
    """RFC 1122 4.2.3.10 / 3.2.1.3: never answer a segment from a broadcast, multicast or
    our own address."""
    st = stack()
    for src in ("255.255.255.255", "224.0.0.1", "0.0.0.0", B, "127.0.0.1"):
        st.receive(packet(syn_from_peer(dst_port=81), src, B), 0.0)
    assert st.packets_to_send(0.0) == []
    assert st.counters["ip_bad_source"] == 5


def test_packet_for_another_address_counted() -> None:
    """RFC 1122 3.3.4.2 (host, not router): packets for other addresses are dropped."""
    st = stack()
    st.listen(80)
    st.receive(packet(syn_from_peer(), A, "10.0.0.3"), 0.0)
    assert st.packets_to_send(0.0) == []
    assert st.counters["ip_not_for_us"] == 1
    assert not st.tcbs


def test_port_zero_dropped() -> None:
    """RFC 6335 6 / RFC 9293 3.1: port 0 is reserved; such segments are dropped unanswered."""
    w = Wire()
    w.stack.listen(80)
    assert w.send(syn_from_peer(src_port=0)) == []
    assert w.stack.counters["tcp_port_zero"] == 1


# -------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "ip_truncated"),
        (b"\x45", "ipv4_truncated"),
        (b"\x60" + bytes(38), "ipv6_truncated"),
        (b"\x60" + bytes(39), "ipv6_jumbogram"),
        (b"\x15" + bytes(19), "ip_bad_version"),
        (b"\x44" + bytes(19), "ipv4_bad_ihl"),
        (b"\x45\x00\x00\x10" + bytes(16), "ipv4_bad_length"),
    ],
)
def test_malformed_ip_counted_by_reason(data: bytes, reason: str) -> None:
    """RFC 1122 3.2.1: invalid datagrams are silently discarded; the stack counts why."""
    st = stack()
    st.receive(data, 0.0)
    assert st.counters[reason] == 1
    assert st.packets_to_send(0.0) == []


def test_bad_ip_checksum_counted() -> None:
    """RFC 1122 3.2.1.2: a datagram whose header checksum fails MUST be discarded."""
    pkt = packet(syn_from_peer(), A, B)
    pkt[10] ^= 0xFF
    st = stack()
    st.listen(80)
    st.receive(pkt, 0.0)
    assert st.counters["ipv4_bad_checksum"] == 1
    assert not st.tcbs


def test_bad_tcp_checksum_counted() -> None:
    """RFC 9293 3.1: a segment with a bad checksum is discarded."""
    pkt = packet(syn_from_peer(), A, B)
    pkt[-1] ^= 0x01
    st = stack()
    st.listen(80)
    st.receive(pkt, 0.0)
    assert st.counters["tcp_bad_checksum"] == 1
    assert not st.tcbs and st.packets_to_send(0.0) == []


def test_tcp_truncated_and_bad_offset_counted() -> None:
    """RFC 9293 3.1: Data Offset counts 32-bit words, at least 5, within the segment."""
    st = stack()
    src, dst = ip(A), ip(B)
    st.receive(build_ipv4(src, dst, 6, bytes(10)), 0.0)
    hdr = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x30, SYN, 100, 0, 0)  # offset 12
    st.receive(raw_tcp(src, dst, hdr), 0.0)
    hdr = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0xF0, SYN, 100, 0, 0)  # offset 60 > len
    st.receive(raw_tcp(src, dst, hdr), 0.0)
    assert st.counters["tcp_truncated"] == 1
    assert st.counters["tcp_bad_data_offset"] == 2


def test_random_junk_never_raises() -> None:
    """RFC 1122 1.2.2 (robustness principle): arbitrary input is counted and dropped,
    never an exception, never an internal error."""
    rng = random.Random(1234)
    st = stack()
    st.listen(80)
    src, dst = ip(A), ip(B)
    for i in range(3000):
        if i % 3 == 0:
            data: bytes | bytearray = bytes(rng.randrange(256) for _ in range(rng.randrange(60)))
        else:
            opts = bytes(rng.randrange(12) for _ in range(4 * rng.randrange(11)))
            hdr = struct.pack("!HHIIBBHHH", rng.choice([40000, rng.randrange(65536)]),
                              rng.choice([80, 81]), rng.randrange(2**32), rng.randrange(2**32),
                              ((20 + len(opts)) // 4) << 4, rng.randrange(256),
                              rng.randrange(65536), 0, 0)
            data = raw_tcp(src, dst, hdr + opts, bytes(rng.randrange(40)))
        st.receive(data, i * 0.01)
        st.packets_to_send(i * 0.01)
        st.handle_timer(i * 0.01)
    assert st.counters["ip_received"] == 3000
    assert st.counters["internal_error"] == 0
    assert st.counters["tcp_received"] > 100


# ----------------------------------------------------------------- listeners


def test_listen_validation() -> None:
    """RFC 9293 3.10.1 (OPEN, passive): one listener per port; ports are 1..65535."""
    st = stack()
    st.listen(80)
    with pytest.raises(OSError):
        st.listen(80)
    with pytest.raises(ValueError):
        st.listen(0)
    st.unlisten(80)
    st.listen(80)


def test_unlisten_then_syn_gets_rst() -> None:
    """RFC 9293 3.10.7.1: once nothing listens, the port is CLOSED and answers with RST."""
    w = Wire()
    w.stack.listen(80)
    w.stack.unlisten(80)
    (rst,) = w.send(syn_from_peer())
    check_segment(rst, RST | ACK, ack=IRS + 1)


def test_stack_full_handshake_notifies_established() -> None:
    """RFC 9293 3.10.7.4: the passive handshake completes through the Stack."""
    w = Wire()
    w.stack.listen(80)
    (synack,) = w.send(syn_from_peer())
    assert w.send(TcpSegment(40000, 80, IRS + 1, synack.seq + 1, ACK, 65535)) == []
    (tcb,) = w.stack.take_notified()
    assert tcb.state is State.ESTABLISHED
    assert tcb.take_events() == [ev.Established()]
    assert tcb.listener is w.stack.listeners[80]
    assert w.stack.listeners[80].half_open == 0


def test_stack_out_of_window_rst_to_connection_ignored() -> None:
    """RFC 5961 3.2 through the Stack: no reply, connection unharmed."""
    w = Wire()
    w.stack.listen(80)
    (synack,) = w.send(syn_from_peer())
    w.send(TcpSegment(40000, 80, IRS + 1, synack.seq + 1, ACK, 65535))
    assert w.send(TcpSegment(40000, 80, IRS + 1 + 10**6, 0, RST, 0)) == []
    (tcb,) = w.stack.tcbs.values()
    assert tcb.state is State.ESTABLISHED


# ------------------------------------------------------------------- connect


def test_connect_sends_syn_and_refused_rst_removes_tcb() -> None:
    """RFC 9293 3.10.7.3: SYN-SENT + RST,ACK -> "connection refused"; the TCB goes."""
    w = Wire()
    tcb = w.stack.connect(A, 80, 0.0)
    (syn,) = w.out()
    check_segment(syn, SYN, seq=tcb.iss)
    assert 32768 <= syn.src_port < 61000
    assert syn.options.mss == 1460
    w.send(TcpSegment(80, syn.src_port, 0, seq_add(tcb.iss, 1), RST | ACK, 0))
    assert tcb.state is State.CLOSED
    assert w.stack.take_notified() == [tcb]
    assert tcb.take_events() == [ev.Terminated("refused")]
    assert not w.stack.tcbs


def test_connect_syn_retransmitted_by_stack_timer() -> None:
    """RFC 6298 5.5 via Stack.next_deadline / handle_timer."""
    w = Wire()
    tcb = w.stack.connect(A, 80, 0.0, local_port=50000)
    w.out()
    assert w.stack.next_deadline() == pytest.approx(1.0)
    (syn,) = w.tick(1.0)
    check_segment(syn, SYN, seq=tcb.iss)
    assert w.stack.next_deadline() == pytest.approx(3.0)
    assert w.tick(2.0) == []


def test_connect_validation() -> None:
    """RFC 9293 3.10.1 (OPEN): "error: connection already exists" for a used 4-tuple;
    the local address must be ours."""
    st = stack()
    with pytest.raises(OSError):
        st.connect(A, 80, 0.0, local_ip="10.9.9.9")
    with pytest.raises(ValueError):
        st.connect(A, 0, 0.0)
    st.connect(A, 80, 0.0, local_port=50000)
    with pytest.raises(OSError):
        st.connect(A, 80, 0.0, local_port=50000)


# ----------------------------------------------------------- TIME-WAIT reuse


def server_in_time_wait(send_bytes: int = 0, secret: bytes = bytes(16)) -> tuple[Wire, Tcb]:
    """Stack B accepts 10.0.0.1:40000 -> :80, sends ``send_bytes``, closes first (active
    close) and ends in TIME-WAIT. Everything happens within t = 0..0.1."""
    w = Wire(stack(isn_secret=secret))
    w.stack.listen(80)
    (synack,) = w.send(syn_from_peer(), 0.0)
    w.send(TcpSegment(40000, 80, IRS + 1, synack.seq + 1, ACK, 65535))
    (tcb,) = w.stack.tcbs.values()
    tcb.send(b"s" * send_bytes)
    tcb.close()
    fin_seen = False
    segs = w.out()
    for _ in range(10_000):
        if not segs:
            break
        top = max(seq_add(s.seq, s.seg_len) for s in segs)
        fin_seen = fin_seen or any(s.flags & FIN for s in segs)
        segs = w.send(TcpSegment(40000, 80, IRS + 1, top, ACK, 65535), w.now + 1e-4)
    assert fin_seen and tcb.state is State.FIN_WAIT_2
    w.send(TcpSegment(40000, 80, IRS + 1, tcb.snd_nxt, ACK | FIN, 65535), 0.1)
    assert tcb.state is State.TIME_WAIT
    return w, tcb


def test_time_wait_new_syn_with_higher_seq_reopens_via_listener() -> None:
    """RFC 9293 3.6.1 (MAY) / RFC 6191: a new SYN with a sequence number above the old
    connection's may reopen it from TIME-WAIT, through the listener."""
    w, old = server_in_time_wait()
    new_irs = seq_add(old.rcv_nxt, 100_000)
    (synack,) = w.send(syn_from_peer(seq=new_irs), 50.0)
    check_segment(synack, SYN | ACK, ack=new_irs + 1)
    assert w.stack.counters["tcp_time_wait_reused"] == 1
    (new,) = w.stack.tcbs.values()
    assert new is not old and new.state is State.SYN_RECEIVED
    assert w.send(TcpSegment(40000, 80, new_irs + 1, synack.seq + 1, ACK, 65535)) == []
    assert new.state is State.ESTABLISHED
    # The old TIME-WAIT timer firing later must not remove the new connection.
    w.tick(200.0)
    assert w.stack.tcbs and next(iter(w.stack.tcbs.values())) is new


def test_time_wait_old_syn_does_not_reopen() -> None:
    """RFC 9293 3.10.7.4: a SYN not above RCV.NXT does not reopen; TIME-WAIT answers with an
    ACK and stays."""
    w, old = server_in_time_wait()
    (ack,) = w.send(syn_from_peer(seq=IRS), 1.0)
    check_segment(ack, ACK, seq=old.snd_nxt, ack=old.rcv_nxt)
    assert w.stack.tcbs == {next(iter(w.stack.tcbs)): old}
    assert old.state is State.TIME_WAIT


def test_time_wait_reopen_iss_above_old_incarnation() -> None:
    """RFC 9293 3.6.1: reopening from TIME-WAIT is allowed only if the new ISS is larger
    than the largest sequence number used by the previous incarnation (Linux uses
    tw_snd_nxt + 65535 + 2)."""
    w, old = server_in_time_wait(send_bytes=200_000)
    old_max = old.snd_max
    (synack,) = w.send(syn_from_peer(seq=seq_add(old.rcv_nxt, 100_000)), 0.2)
    assert synack.flags == SYN | ACK
    assert seq_gt(synack.seq, old_max)


def test_client_time_wait_survives_syn_without_listener() -> None:
    """RFC 9293 3.6.1 (MUST-13: linger 2 MSL) and 3.10.7.4 fourth (SYN in TIME-WAIT ->
    challenge ACK): without a listener there is nothing to reopen."""
    w = Wire()
    tcb = w.stack.connect(A, 80, 0.0, local_port=50000)
    w.out()
    w.send(TcpSegment(80, 50000, IRS, seq_add(tcb.iss, 1), SYN | ACK, 65535,
                      TcpOptions(mss=1460)), 0.1)
    tcb.close()
    (fin,) = w.out()
    w.send(TcpSegment(80, 50000, IRS + 1, seq_add(fin.seq, 1), ACK | FIN, 65535), 0.2)
    assert tcb.state is State.TIME_WAIT
    replies = w.send(syn_from_peer(seq=IRS + 10_000, src_port=80, dst_port=50000), 1.0)
    assert [s.flags for s in replies] == [ACK]
    assert tcb.state is State.TIME_WAIT
    assert list(w.stack.tcbs.values()) == [tcb]

