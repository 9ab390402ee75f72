"""Closing a connection: FINs both ways, TIME-WAIT, and the end (RFC 9293 3.6, 3.10.4-8).

* :func:`receive_fin` -- the eighth step of SEGMENT ARRIVES: the peer's FIN.
* :func:`fin_acked` -- our FIN was acknowledged (fifth step).
* :func:`enter_time_wait` -- 2 * MSL of quiet, lean (like Linux's timewait sockets).
* :func:`abort` -- ABORT (RFC 9293 3.10.5): RST if synchronized, then CLOSED.
* :func:`terminate` -- CLOSED: stop everything, report it; the owner deletes the TCB.
"""

from __future__ import annotations

from tcpstack.tcp import ack_policy, output, reassembly, scoreboard
from tcpstack.tcp import events as ev
from tcpstack.tcp.control import ControlBlock
from tcpstack.tcp.seq import seq_add
from tcpstack.tcp.state import ABORT_SENDS_RST, State, Trigger


def receive_fin(tcb: ControlBlock, now: float) -> None:
    """RFC 9293 3.10.7.4 eighth: the peer's FIN, in sequence (ESTABLISHED, FIN-WAIT-1
    or FIN-WAIT-2): ACK it and end the stream for the application."""
    tcb.rcv_nxt = seq_add(tcb.rcv_nxt, 1)
    ack_policy.ack_now(tcb)
    nxt = tcb.fire(Trigger.RCV_FIN)
    tcb.events.append(ev.END_OF_STREAM)
    if nxt is State.TIME_WAIT:
        enter_time_wait(tcb, now)


def fin_acked(tcb: ControlBlock, now: float) -> None:
    """RFC 9293 3.10.7.4 fifth: FIN-WAIT-1 -> FIN-WAIT-2, CLOSING -> TIME-WAIT,
    LAST-ACK -> CLOSED."""
    if tcb.state not in (State.FIN_WAIT_1, State.CLOSING, State.LAST_ACK):
        return
    tcb.events.append(ev.FIN_ACKED)
    if tcb.state is State.LAST_ACK:
        terminate(tcb, None, Trigger.RCV_ACK_OF_FIN)
        return
    if tcb.fire(Trigger.RCV_ACK_OF_FIN) is State.TIME_WAIT:
        enter_time_wait(tcb, now)


def enter_time_wait(tcb: ControlBlock, now: float) -> None:
    """Start 2 * MSL. Like Linux's compact timewait sockets, a connection in
    TIME-WAIT only re-ACKs FINs, so it lets go of its send and reassembly machinery
    (fewer live objects while thousands of connections linger): it takes the
    shared, immutable, empty stand-ins instead."""
    tcb.timers.stop_for_time_wait()
    tcb.scoreboard = scoreboard.RELEASED
    tcb.reassembly = reassembly.RELEASED
    tcb.timers.time_wait = now + 2 * tcb.cfg.msl


def terminate(tcb: ControlBlock, error: str | None, trigger: Trigger, code: int = 0) -> None:
    """Enter CLOSED through ``trigger`` and report it; the owner removes the TCB.

    ``error`` is what the application is told: None for an orderly end, else
    ``"reset"``, ``"refused"``, ``"timeout"``, ``"unreachable"`` or ``"aborted"``;
    ``code`` the errno that goes with it (see :class:`~tcpstack.tcp.events.Terminated`).
    A timeout reports the last soft ICMP error, if any (RFC 1122 4.2.3.9: soft
    errors are reported when the connection gives up).
    """
    if error == "timeout" and not code:
        code = tcb.soft_error
    if tcb.state is State.CLOSED or tcb.fire(trigger) is None:
        return
    tcb.timers.clear()
    tcb.sndbuf.clear()
    tcb.scoreboard.clear()
    tcb.reassembly.clear()
    tcb.ack_pending = False
    tcb.delack = False  # nothing is owed any more: no delayed-ACK timer may start
    tcb.events.append(ev.Terminated(error, code))
    tcb.mark()


def abort(tcb: ControlBlock) -> None:
    """ABORT (RFC 9293 3.10.5): a RST if synchronized, then CLOSED with everything
    dropped. The caller has checked that the connection still exists."""
    if tcb.state in ABORT_SENDS_RST:
        output.send_abort_rst(tcb)
    terminate(tcb, "aborted", Trigger.ABORT)


def on_time_wait_timer(tcb: ControlBlock) -> None:
    """RFC 9293 3.10.8: the 2 * MSL timeout deletes the TCB."""
    tcb.timers.time_wait = None
    terminate(tcb, None, Trigger.TIME_WAIT_DONE)


def on_fin_wait_timer(tcb: ControlBlock) -> None:
    """An orphaned FIN-WAIT-2 (closed by the application) gives up after
    ``cfg.fin_timeout``, as Linux's tcp_fin_timeout."""
    tcb.timers.fin_wait = None
    if tcb.state is State.FIN_WAIT_2:
        terminate(tcb, None, Trigger.FIN_WAIT_2_TIMEOUT)
