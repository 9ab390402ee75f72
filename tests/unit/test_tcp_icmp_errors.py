"""ICMP errors reaching TCP (RFC 1122 4.2.3.9, RFC 5461, RFC 5927): the engine's
entry :meth:`Tcb.on_icmp_error` and the demux that parses the quote and calls it."""

from __future__ import annotations

import errno

import pytest
from tcp_helpers import (
    ISS,
    RTT,
    drain,
    ip,
    peer,
    stack,
    tcb_established,
    tcb_listen_syn_received,
    tcb_syn_sent,
    tcb_time_wait,
)

from tcpstack.stack import Stack
from tcpstack.tcp import events as ev
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire import icmp
from tcpstack.wire.ipv4 import PROTO_ICMP, build_ipv4

ROUTER = "10.9.9.9"


def terminated(tcb_events: list[ev.Event]) -> list[ev.Terminated]:
    return [e for e in tcb_events if isinstance(e, ev.Terminated)]


# ------------------------------------------------------------------ engine


def test_hard_error_quoting_our_syn_fails_the_connect_with_its_errno() -> None:
    tcb = tcb_syn_sent()
    assert tcb.on_icmp_error(errno.ECONNREFUSED, True, ISS)
    assert tcb.state is State.CLOSED
    assert terminated(tcb.take_events()) == [ev.Terminated("unreachable", errno.ECONNREFUSED)]
    assert tcb.counters["tcp_icmp_hard_error"] == 1


@pytest.mark.parametrize("seq", [ISS - 1, ISS + 1, ISS + 100_000, 0])
def test_error_quoting_a_sequence_number_not_in_flight_is_ignored_and_counted(
        seq: int) -> None:
    """RFC 5927 4.1: only SND.UNA <= SEG.SEQ < SND.NXT; in SYN-SENT that is the ISS."""
    tcb = tcb_syn_sent()
    assert not tcb.on_icmp_error(errno.ECONNREFUSED, True, seq)
    assert tcb.state is State.SYN_SENT
    assert tcb.counters["tcp_icmp_out_of_window"] == 1
    assert tcb.soft_error == 0


def test_soft_error_in_syn_sent_is_recorded_and_reported_when_the_connect_times_out() -> None:
    """RFC 1122 4.2.3.9: host unreachable must not abort; the application learns it
    when the connection gives up (as Linux reports EHOSTUNREACH, not ETIMEDOUT)."""
    tcb = tcb_syn_sent()
    assert tcb.on_icmp_error(errno.EHOSTUNREACH, False, ISS)
    assert tcb.state is State.SYN_SENT
    assert tcb.soft_error == errno.EHOSTUNREACH
    now = 0.0
    for _ in range(100):
        deadline = tcb.next_deadline()
        if deadline is None:
            break
        now = deadline
        tcb.handle_timer(now)
        tcb.segments_to_send(now)
    assert tcb.state is State.CLOSED
    assert terminated(tcb.take_events()) == [ev.Terminated("timeout", errno.EHOSTUNREACH)]


def test_hard_error_in_a_synchronized_state_is_soft() -> None:
    """RFC 5461 4 / RFC 5927 4.2: a port unreachable for an established connection
    with data in flight does not reset it; it is the last error."""
    tcb = tcb_established()
    tcb.send(b"x" * 100)
    drain(tcb, 1.0)
    assert tcb.on_icmp_error(errno.ECONNREFUSED, True, tcb.snd_una)
    assert tcb.state is State.ESTABLISHED
    assert not terminated(tcb.take_events())
    assert tcb.take_soft_error() == errno.ECONNREFUSED
    assert tcb.take_soft_error() == 0  # read once, as SO_ERROR
    assert tcb.counters["tcp_icmp_soft_error"] == 1


def test_error_for_an_established_connection_with_nothing_in_flight_is_ignored() -> None:
    tcb = tcb_established()
    assert not tcb.on_icmp_error(errno.ECONNREFUSED, True, tcb.snd_una)
    assert tcb.counters["tcp_icmp_out_of_window"] == 1
    assert tcb.soft_error == 0


def test_error_quoting_acknowledged_data_is_ignored() -> None:
    tcb = tcb_established()
    tcb.send(b"y" * 200)
    drain(tcb, 1.0)
    old = tcb.snd_una
    tcb.receive(peer(tcb, ack=old + 100), 1.0 + RTT)
    drain(tcb, 1.0 + RTT)
    assert not tcb.on_icmp_error(errno.EHOSTUNREACH, False, old)
    assert tcb.on_icmp_error(errno.EHOSTUNREACH, False, old + 100)


def test_hard_error_in_syn_received_drops_the_half_open_connection() -> None:
    tcb = tcb_listen_syn_received()
    assert tcb.on_icmp_error(errno.ECONNREFUSED, True, ISS)
    assert tcb.state is State.CLOSED


def test_error_in_time_wait_is_ignored() -> None:
    tcb = tcb_time_wait()
    assert not tcb.on_icmp_error(errno.ECONNREFUSED, True, tcb.snd_una)
    assert tcb.state is State.TIME_WAIT
    assert tcb.counters["tcp_icmp_no_connection"] == 1


# ------------------------------------------------------------------- demux


def _icmp_to(st: Stack, message: bytearray, src: str = ROUTER) -> bytearray:
    return build_ipv4(ip(src), ip("10.0.0.2"), PROTO_ICMP, message, ident=99)


def _connect(st: Stack) -> tuple[Tcb, bytearray]:
    tcb = st.connect("10.0.0.1", 80, 0.0)
    (syn,) = st.packets_to_send(0.0)
    assert isinstance(syn, bytearray)
    return tcb, syn


def test_port_unreachable_for_our_syn_ends_the_connection_in_the_stack() -> None:
    st = stack()
    tcb, syn = _connect(st)
    st.receive(_icmp_to(st, icmp.build_unreachable(icmp.CODE_PORT_UNREACHABLE, syn[:28])), 0.01)
    assert st.packets_to_send(0.01) == []
    assert st.take_notified() == [tcb]
    assert not st.tcbs
    assert st.counters["tcp_icmp_hard_error"] == 1


@pytest.mark.parametrize(("code", "error", "hard"), [
    (icmp.CODE_NET_UNREACHABLE, errno.ENETUNREACH, False),
    (icmp.CODE_HOST_UNREACHABLE, errno.EHOSTUNREACH, False),
    (icmp.CODE_PROTOCOL_UNREACHABLE, errno.ENOPROTOOPT, True),
    (icmp.CODE_ADMIN_PROHIBITED, errno.EHOSTUNREACH, True),
    (10, errno.EHOSTUNREACH, True),
])
def test_unreachable_codes_map_to_the_errno_and_severity_a_kernel_uses(
        code: int, error: int, hard: bool) -> None:
    st = stack()
    tcb, syn = _connect(st)
    st.receive(_icmp_to(st, icmp.build_unreachable(code, syn[:28])), 0.01)
    st.packets_to_send(0.01)
    if hard:
        assert terminated(tcb.take_events()) == [ev.Terminated("unreachable", error)]
    else:
        assert tcb.state is State.SYN_SENT
        assert tcb.soft_error == error


def test_time_exceeded_and_parameter_problem_are_soft() -> None:
    st = stack()
    tcb, syn = _connect(st)
    st.receive(_icmp_to(st, icmp.build_icmp(icmp.TIME_EXCEEDED, 0, 0, syn[:28])), 0.01)
    assert tcb.soft_error == errno.EHOSTUNREACH
    st.receive(_icmp_to(st, icmp.build_icmp(icmp.PARAMETER_PROBLEM, 0, 0, syn[:28])), 0.02)
    assert tcb.soft_error == errno.EPROTO
    assert tcb.state is State.SYN_SENT


def test_hostile_errors_are_ignored_and_counted_by_reason() -> None:
    """Errors for other ports, other hosts' packets, sequence numbers not in flight,
    truncated or non-TCP quotes: nothing changes, each is counted."""
    st = stack()
    tcb, syn = _connect(st)
    unreach = icmp.CODE_PORT_UNREACHABLE
    wrong_port = bytearray(syn[:28])
    wrong_port[20:22] = (1234).to_bytes(2, "big")  # the quoted source port
    wrong_seq = bytearray(syn[:28])
    wrong_seq[24:28] = ((_seq_of(syn) + 1) & 0xFFFFFFFF).to_bytes(4, "big")
    not_ours = bytearray(syn[:28])
    not_ours[12:16] = ip("10.0.0.77").to_bytes(4, "big")
    udp = bytearray(syn[:28])
    udp[9] = 17
    for quote in (wrong_port, wrong_seq, not_ours, udp, syn[:24]):
        st.receive(_icmp_to(st, icmp.build_unreachable(unreach, quote)), 0.01)
    st.receive(_icmp_to(st, icmp.build_icmp(icmp.SOURCE_QUENCH, 0, 0, syn[:28])), 0.01)
    st.packets_to_send(0.01)
    assert tcb.state is State.SYN_SENT
    assert tcb.soft_error == 0
    c = st.counters
    assert c["icmp_error_no_connection"] == 1
    assert c["tcp_icmp_out_of_window"] == 1
    assert c["icmp_error_not_ours"] == 1
    assert c["icmp_quote_not_tcp"] == 1
    assert c["icmp_quote_truncated"] == 1
    assert c["icmp_source_quench_ignored"] == 1


def _seq_of(packet: bytearray) -> int:
    """The TCP sequence number of an IPv4 packet without options."""
    return int.from_bytes(packet[24:28], "big")
