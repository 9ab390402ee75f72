"""Probing a silent peer: zero-window probes and keepalives.

Both send an ACK at a sequence number the peer has already acknowledged, which
it must answer with an ACK of its own (RFC 9293 3.8.6.1, RFC 1122 4.2.3.6); both
give up after a bounded number of unanswered probes. They differ in when they
start: the persist timer runs while the peer advertises a zero window and we
have data to send; keepalives run after ``keepalive_idle`` seconds of silence.
"""

from __future__ import annotations

from tcpstack.tcp import output, recovery, teardown
from tcpstack.tcp.control import ControlBlock
from tcpstack.tcp.seq import seq_add
from tcpstack.tcp.state import State, Trigger

#: States in which a zero window can hold back data or our FIN.
PERSIST_STATES = frozenset({State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1,
                            State.CLOSING, State.LAST_ACK})


def on_persist_timer(tcb: ControlBlock, now: float) -> None:
    """Zero-window probe (RFC 9293 3.8.6.1): SEG.SEQ = SND.UNA - 1 forces the peer to
    ACK with its current window; the timer backs off as the RTO does. The probes
    keep the connection alive while they are answered (RFC 1122 4.2.2.17)."""
    tcb.timers.persist = None
    if tcb.snd_wnd != 0 or tcb.state not in PERSIST_STATES:
        return
    if recovery.user_timeout_expired(tcb, now):
        return  # answered probes keep it open, but not beyond the user timeout
    tcb.probes += 1
    if tcb.probes > tcb.cfg.max_retries:
        teardown.terminate(tcb, "timeout", Trigger.TIMEOUT)
        return
    output.send_probe(tcb, seq_add(tcb.snd_una, -1), now)
    tcb.persist_backoff += 1
    output.arm_persist(tcb, now)


def on_keepalive_timer(tcb: ControlBlock, now: float) -> None:
    """RFC 1122 4.2.3.6: after ``keepalive_idle`` of silence, probe every
    ``keepalive_interval``; give up after ``keepalive_count`` unanswered probes."""
    tcb.timers.keepalive = None
    if not tcb.keepalive or tcb.state is not State.ESTABLISHED:
        return
    idle_until = tcb.last_rcv + tcb.keepalive_idle
    if tcb.ka_probes == 0 and now < idle_until:
        tcb.timers.keepalive = idle_until  # traffic since: wait again
        return
    if tcb.snd_una != tcb.snd_max:
        # Data in flight: the retransmission timer watches the peer instead.
        tcb.timers.keepalive = now + tcb.keepalive_interval
        return
    if tcb.ka_probes >= tcb.keepalive_count:
        teardown.terminate(tcb, "timeout", Trigger.TIMEOUT)
        return
    tcb.ka_probes += 1
    # Linux-style probe: SEG.SEQ = SND.NXT - 1 and no data; the peer must ACK it.
    output.send_probe(tcb, seq_add(tcb.snd_max, -1), now)
    tcb.timers.keepalive = now + tcb.keepalive_interval
