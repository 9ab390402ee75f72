"""The receive window we advertise (RFC 9293 3.8.6.2.2, RFC 7323 2.3, RFC 1122 4.2.3.3).

The window is the buffer space the application has not used: the receive buffer's
size (``tcb.rcv_space``: ``cfg.rcv_buf``, grown by autotuning) minus unread
in-order bytes minus queued out-of-order bytes. Two rules shape what
goes into the header:

* the right edge (RCV.NXT + RCV.WND) never moves left once advertised;
* receiver silly-window-syndrome avoidance: the edge moves right only by a
  worthwhile amount, min(half the buffer, one MSS) for the window field, and a
  reading application triggers a window update once the window can grow by
  min(half the buffer, 2 * MSS);
* while the stack's memory pool is over its limit, at most four segments are
  offered (as Linux clamps windows under tcp_mem pressure): connections whose
  applications read still move, slowly; the others stop.
"""

from __future__ import annotations

from tcpstack.tcp import ack_policy
from tcpstack.tcp.control import ControlBlock
from tcpstack.tcp.seq import seq_add, seq_diff
from tcpstack.tcp.state import RECEIVES_TEXT, State

PRESSURE_WINDOW_SEGMENTS = 4


def free_space(tcb: ControlBlock) -> int:
    """Receive-buffer space neither read by the application nor holding queued data."""
    return tcb.rcv_space - len(tcb.rcv_buf.data) - tcb.reassembly.nbytes


def window_field(tcb: ControlBlock) -> int:
    """The window field of the next segment (scaled); records the new right edge."""
    free = tcb.rcv_space - len(tcb.rcv_buf.data) - tcb.reassembly.nbytes  # free_space()
    advertised = seq_diff(tcb.rcv_adv, tcb.rcv_nxt)
    if advertised < 0:
        advertised = 0
    if tcb.state is State.SYN_RECEIVED:
        # Until the handshake completes the window stays what our SYN,ACK offered
        # (as Linux's request sockets): a retransmitted SYN,ACK, unscaled and at most
        # 64 KiB, must not offer less than an ACK sent meanwhile.
        free = advertised
    elif tcb.pool.pressure:
        # Memory pressure (as Linux's tcp_clamp_window): at most four segments are
        # offered, so connections whose applications read still move, slowly.
        free = min(free, PRESSURE_WINDOW_SEGMENTS * tcb.cfg.mss)
    rcv_buf = tcb.rcv_space
    # Receiver SWS avoidance: move the right edge only by a worthwhile amount.
    wnd = free if free - advertised >= min(rcv_buf // 2, tcb.cfg.mss) else advertised
    wnd = max(wnd, advertised)
    shift = tcb.rcv_wscale
    field = wnd >> shift
    if (field << shift) < advertised:
        field += 1  # rounding down would move the edge left
    if field > 0xFFFF:
        field = 0xFFFF
    tcb.rcv_adv = seq_add(tcb.rcv_nxt, field << shift)
    return field


def on_application_read(tcb: ControlBlock) -> None:
    """The application read data: announce a larger window if it grew enough.

    RFC 9293 3.8.6.2.2 (receiver SWS avoidance) and RFC 1122 4.2.3.3: a window
    update once the window can grow by min(half the buffer, 2 * MSS) or more.
    """
    if tcb.state not in RECEIVES_TEXT:
        return
    advertised = seq_diff(tcb.rcv_adv, tcb.rcv_nxt)
    if free_space(tcb) - advertised >= min(tcb.rcv_space // 2, 2 * tcb.cfg.mss):
        ack_policy.ack_now(tcb)
