"""Keeping idle and blocked connections honest: keepalives (RFC 1122 4.2.3.6) and
zero-window probing (RFC 1122 4.2.2.17, RFC 9293 3.8.6.1)."""

from __future__ import annotations

from itertools import pairwise

import pytest
from tcp_helpers import (
    IRS,
    ISS,
    base_config,
    expect,
    expect_nothing,
    expect_one,
    peer,
    tcb_established,
)

from tcpstack.tcp import events as ev
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import ACK

RCV = IRS + 1
SND = ISS + 1
T0 = 0.1  # the builders complete the handshake (last segment received) at 0.1


def keepalive_tcb(idle: float = 10.0, interval: float = 2.0, count: int = 3) -> Tcb:
    tcb = tcb_established()
    tcb.set_keepalive(True, idle=idle, interval=interval, count=count)
    expect_nothing(tcb, T0)
    return tcb


def fire(tcb: Tcb) -> tuple[float, list]:
    """Advance to the next deadline, run the timers, return (time, segments sent)."""
    d = tcb.next_deadline()
    assert d is not None
    tcb.handle_timer(d)
    return d, expect(tcb, d)


# ---------------------------------------------------------------- keepalive


def test_keepalive_off_by_default() -> None:
    """RFC 1122 4.2.3.6: keep-alives MUST default to off."""
    assert TcpConfig().keepalive is False
    tcb = tcb_established()
    assert tcb.keepalive is False
    assert tcb.next_deadline() is None
    tcb.handle_timer(10 * 24 * 3600.0)
    expect_nothing(tcb, 10 * 24 * 3600.0)
    assert tcb.state is State.ESTABLISHED


def test_keepalive_probe_after_idle_time() -> None:
    """RFC 1122 4.2.3.6: after ``idle`` seconds without a segment from the peer, send a
    probe: SEG.SEQ = SND.NXT - 1 and no data, which the peer must acknowledge."""
    tcb = keepalive_tcb()
    assert tcb.next_deadline() == pytest.approx(T0 + 10.0)
    tcb.handle_timer(T0 + 9.9)
    expect_nothing(tcb, T0 + 9.9)
    tcb.handle_timer(T0 + 10.0)
    probe = expect_one(tcb, T0 + 10.0, ACK, seq=SND - 1, ack=RCV)
    assert probe.payload == b""


def test_keepalive_probes_repeat_every_interval() -> None:
    """RFC 1122 4.2.3.6: unanswered probes are repeated every ``interval`` seconds."""
    tcb = keepalive_tcb()
    times = []
    for _ in range(3):
        t, segs = fire(tcb)
        assert len(segs) == 1 and segs[0].seq == SND - 1
        times.append(t)
    assert times == pytest.approx([T0 + 10, T0 + 12, T0 + 14])


def test_keepalive_gives_up_after_count_unanswered_probes() -> None:
    """RFC 1122 4.2.3.6: a connection whose peer answers no probe is declared dead after
    ``count`` of them: Terminated("timeout")."""
    tcb = keepalive_tcb()
    for _ in range(3):
        fire(tcb)
    assert tcb.state is State.ESTABLISHED
    t, segs = fire(tcb)
    assert t == pytest.approx(T0 + 16)
    assert [s for s in segs if s.seq == SND - 1] == []  # no fourth probe
    assert tcb.state is State.CLOSED
    assert ev.Terminated("timeout") in tcb.take_events()
    assert tcb.next_deadline() is None


def test_keepalive_answer_resets_probe_count() -> None:
    """RFC 1122 4.2.3.6: any segment from the peer shows it is alive: the probe count
    restarts and the next probe waits a full idle period again."""
    tcb = keepalive_tcb()
    fire(tcb)
    fire(tcb)  # two probes unanswered, at T0 + 10 and T0 + 12
    tcb.receive(peer(tcb), T0 + 12.5)  # the peer's ACK of the second probe
    expect_nothing(tcb, T0 + 12.5)
    t, segs = fire(tcb)  # the old interval deadline: now just re-armed
    assert t == pytest.approx(T0 + 14)
    assert segs == []
    times = [fire(tcb)[0] for _ in range(3)]
    assert times == pytest.approx([T0 + 22.5, T0 + 24.5, T0 + 26.5])
    assert tcb.state is State.ESTABLISHED  # three fresh probes allowed
    fire(tcb)
    assert tcb.state is State.CLOSED


def test_keepalive_traffic_postpones_probe() -> None:
    """RFC 1122 4.2.3.6: probes are sent only when no data or ACK was received for the
    idle interval; traffic in between moves the first probe."""
    tcb = keepalive_tcb()
    tcb.receive(peer(tcb, payload=b"ping"), T0 + 5)
    assert tcb.recv() == b"ping"
    expect(tcb, T0 + 5)
    t, segs = fire(tcb)  # the deadline armed before the traffic: nothing is due yet
    assert segs == [] and t <= T0 + 10 + 1e-9
    t, segs = fire(tcb)
    assert t == pytest.approx(T0 + 15)
    assert [s.seq for s in segs] == [SND - 1]


def test_keepalive_from_config() -> None:
    """RFC 1122 4.2.3.6: keepalive enabled by configuration for every connection."""
    cfg = base_config(keepalive=True, keepalive_idle=30.0, keepalive_interval=5.0,
                      keepalive_count=2)
    tcb = tcb_established(cfg)
    assert tcb.next_deadline() == pytest.approx(T0 + 30)
    _, segs = fire(tcb)
    assert [s.seq for s in segs] == [SND - 1]


def test_keepalive_settings_validated() -> None:
    """Idle time and interval must be positive and count at least one."""
    tcb = tcb_established()
    with pytest.raises(ValueError):
        tcb.set_keepalive(True, idle=0)
    with pytest.raises(ValueError):
        tcb.set_keepalive(True, interval=-1)
    with pytest.raises(ValueError):
        tcb.set_keepalive(True, count=0)


def test_keepalive_disabled_again_sends_nothing() -> None:
    """RFC 1122 4.2.3.6: keepalive is per connection and can be switched off."""
    tcb = keepalive_tcb()
    tcb.set_keepalive(False)
    tcb.handle_timer(T0 + 100)
    expect_nothing(tcb, T0 + 100)
    assert tcb.state is State.ESTABLISHED


@pytest.mark.parametrize("payload", [b"", b"\x00"])
def test_peer_keepalive_probe_always_acked(payload: bytes) -> None:
    """RFC 1122 4.2.3.6 / RFC 9293 3.10.7.4 first: a keep-alive probe from the peer
    (SEG.SEQ = RCV.NXT - 1, with zero or one garbage byte) is outside the window and
    draws an immediate ACK -- even with delayed ACKs on; its byte is not delivered."""
    tcb = tcb_established(base_config(delayed_ack=0.2))
    tcb.receive(peer(tcb, seq=RCV - 1, payload=payload), 50.0)
    expect_one(tcb, 50.0, ACK, seq=SND, ack=RCV)
    assert tcb.recv_buffered == 0
    assert tcb.state is State.ESTABLISHED


def test_peer_keepalive_probe_acked_with_zero_receive_window() -> None:
    """RFC 9293 3.10.7.4 / RFC 1122 4.2.2.17: even when our window is closed, an
    unacceptable segment (here a keepalive probe) is answered with an ACK."""
    tcb = tcb_established(base_config(rcv_buf=1024))
    tcb.receive(peer(tcb, payload=b"x" * 1024), 1.0)
    ack = expect_one(tcb, 1.0, ACK, ack=RCV + 1024)
    assert ack.window == 0
    tcb.receive(peer(tcb, seq=RCV + 1023, payload=b"?"), 50.0)
    expect_one(tcb, 50.0, ACK, ack=RCV + 1024, window=0)


# ------------------------------------------------------ zero-window probing


def zero_window_tcb(**cfg: object) -> Tcb:
    """The peer advertised a zero window; we have 100 bytes queued at t = 1.0."""
    tcb = tcb_established(base_config(**cfg), window=0)
    tcb.send(b"z" * 100)
    expect_nothing(tcb, 1.0)
    return tcb


def test_zero_window_probes_answered_keep_connection_open() -> None:
    """RFC 1122 4.2.2.17: the sender MUST NOT close the connection while the receiver
    keeps acknowledging probes with a zero window, however long that lasts (here far
    beyond max_retries probes)."""
    tcb = zero_window_tcb(max_retries=3)
    for _ in range(12):
        t, segs = fire(tcb)
        assert len(segs) == 1
        probe = segs[0]
        assert probe.seq == SND - 1 or (probe.seq == SND and len(probe.payload) <= 1)
        tcb.receive(peer(tcb, ack=SND, window=0), t + 0.05)
        expect(tcb, t + 0.05)
    assert tcb.state is State.ESTABLISHED
    assert tcb.send_buffered == 100


def test_zero_window_probe_intervals_back_off() -> None:
    """RFC 1122 4.2.2.17 / RFC 9293 3.8.6.1: probe intervals grow exponentially (from the
    RTO, 0.3 s here) up to the maximum RTO."""
    tcb = zero_window_tcb(rto_max=2.0)
    times = [1.0]
    for _ in range(6):
        t, segs = fire(tcb)
        assert len(segs) == 1
        tcb.receive(peer(tcb, ack=SND, window=0), t + 0.01)
        expect(tcb, t + 0.01)
        times.append(t)
    gaps = [b - a for a, b in pairwise(times)]
    assert gaps[0] == pytest.approx(0.3)
    assert gaps[1] > gaps[0] * 1.5
    assert all(b >= a - 0.02 for a, b in pairwise(gaps))
    assert max(gaps) <= 2.0 + 0.02


def test_zero_window_opening_resumes_transmission() -> None:
    """RFC 9293 3.8.6.1: when the probe's ACK shows a window again, queued data is sent
    and probing stops."""
    tcb = zero_window_tcb()
    t, _ = fire(tcb)
    tcb.receive(peer(tcb, ack=SND, window=4096), t + 0.05)
    seg = expect_one(tcb, t + 0.05, seq=SND, payload=b"z" * 100)
    assert seg.flags & ACK
    assert tcb.timers.persist is None
