"""What the network path reports to a connection: ICMP errors and its MTU.

The demux (:mod:`tcpstack.stack`) parses an ICMP error, finds the connection the
quoted segment belongs to and translates the message into what the engine
understands -- an errno and whether the error is *hard* (RFC 1122 4.2.3.9:
protocol or port unreachable, and the administrative prohibitions of RFC 1812)
or *soft* (network or host unreachable, time exceeded, ...) -- then calls
:func:`on_icmp_error` with the quoted sequence number.

Anyone can send ICMP, and an ICMP error carries no proof that it answers a
segment of ours beyond the quoted header, so (RFC 5927 4.1, RFC 9293 3.10.7.x):

* the quoted sequence number must lie in SND.UNA <= SEG.SEQ < SND.NXT, that is,
  quote a segment that is in flight; otherwise the error is ignored and counted
  (``tcp_icmp_out_of_window``);
* a hard error ends a connection only before it is synchronized (SYN-SENT,
  SYN-RECEIVED): the connect fails with the error's errno (``ECONNREFUSED`` for a
  port unreachable, as Linux); in the synchronized states hard errors are treated
  as soft (RFC 5461 4, RFC 5927 4.2), since aborting there would make blind
  connection resets trivial;
* a soft error never ends a connection: it is recorded as the connection's last
  error (:attr:`~tcpstack.tcp.control.ControlBlock.soft_error`, read by
  ``SO_ERROR``), and reported instead of ``ETIMEDOUT`` if the connection later
  times out (RFC 1122 4.2.3.9, as Linux's ``sk_err_soft``).

Path MTU:

* :func:`on_packet_too_big` -- RFC 1191 / RFC 8201: "fragmentation needed" (or
  "packet too big") with the next hop's MTU, which the demux has turned into an
  MSS and raised to the floor (forged values below it cannot shrink segments
  further). After the same sequence check, a smaller MSS applies at once: the
  segments in flight that no longer fit are marked lost and resent at the new
  size, without any congestion response (they were dropped for their size, as
  Linux's tcp_simple_retransmit). The limit expires after ``cfg.pmtu_expires``
  (RFC 1191 6.3), and the full size is tried again.
* :func:`on_repeated_timeout` -- packetization-layer PMTUD for black holes
  (RFC 4821; Linux's tcp_mtu_probing=1): where ICMP is filtered, full-sized
  segments are lost silently and every retransmission times out. After
  :data:`BLACKHOLE_RTOS` consecutive timeouts of a full-sized segment the MSS is
  lowered -- first to :data:`BASE_MSS` (RFC 4821 7.2's conservative start, Linux's
  tcp_base_mss), then halved on each further pair of timeouts, never below the
  floor -- and the retransmission goes out at the new size. The limit expires like
  an ICMP-learned one; RFC 4821's probing upward with separate probe packets is
  not done (the expiry retries the full size instead).

Nothing here performs I/O or reads a clock.
"""

from __future__ import annotations

from tcpstack.tcp import teardown
from tcpstack.tcp.control import ControlBlock
from tcpstack.tcp.seq import seq_le, seq_lt
from tcpstack.tcp.state import SENDS_DATA, State, Trigger

#: Consecutive retransmission timeouts of a full-sized segment that make PLPMTUD
#: suspect a black hole (Linux waits for tcp_retries1 = 3 timeouts' worth of time).
BLACKHOLE_RTOS = 2
#: The first smaller MSS PLPMTUD tries (RFC 4821 7.2; Linux tcp_base_mss).
BASE_MSS = 1024


def quotes_segment_in_flight(tcb: ControlBlock, seq: int) -> bool:
    """RFC 5927 4.1: SND.UNA <= ``seq`` < SND.NXT -- the quoted segment is one we
    sent and that is not yet acknowledged (in SYN-SENT: ``seq`` is our ISS)."""
    return seq_le(tcb.snd_una, seq) and seq_lt(seq, tcb.snd_max)


def on_icmp_error(tcb: ControlBlock, error: int, hard: bool, seq: int) -> bool:
    """An ICMP error quoting sequence number ``seq`` of this connection; returns
    whether it was acted on (every ignored one is counted by reason).

    ``error`` is the errno a socket would report (``ECONNREFUSED``,
    ``EHOSTUNREACH``, ...), ``hard`` whether the message is a hard error.
    """
    state = tcb.state
    if state is State.CLOSED or state is State.LISTEN or state is State.TIME_WAIT:
        tcb.drop("tcp_icmp_no_connection")  # nothing in flight that it could be about
        return False
    if not quotes_segment_in_flight(tcb, seq):
        tcb.drop("tcp_icmp_out_of_window")
        return False
    if hard and (state is State.SYN_SENT or state is State.SYN_RECEIVED):
        # RFC 1122 4.2.3.9 / RFC 5461: a hard error aborts a connection that is not
        # yet synchronized; the application's connect fails with it.
        tcb.drop("tcp_icmp_hard_error")
        teardown.terminate(tcb, "unreachable", Trigger.ICMP_HARD_ERROR, error)
        return True
    # RFC 5461 4: soft, or hard in a synchronized state: remember, do not abort.
    tcb.drop("tcp_icmp_soft_error")
    tcb.soft_error = error
    return True


def on_packet_too_big(tcb: ControlBlock, mss: int, seq: int, now: float) -> bool:
    """RFC 1191 / RFC 8201: the path cannot carry segments larger than ``mss`` (the
    next hop's MTU less the IP and TCP headers, at least the floor); the quoted
    segment had sequence number ``seq``. Returns whether the MSS was lowered."""
    state = tcb.state
    if state is State.CLOSED or state is State.LISTEN or state is State.TIME_WAIT:
        tcb.drop("tcp_icmp_no_connection")
        return False
    if not quotes_segment_in_flight(tcb, seq):
        tcb.drop("tcp_icmp_out_of_window")
        return False
    mss = max(mss, tcb.mss_floor)
    synchronized = state is not State.SYN_SENT and state is not State.SYN_RECEIVED
    current = tcb.snd_mss if synchronized else min(tcb.cfg.mss, tcb.path_mss)
    if mss >= current:
        # RFC 1191 6.3: never raised by a message; and one that would not lower
        # it is old news (an earlier segment's) or forged.
        tcb.drop("tcp_pmtu_not_lower")
        return False
    tcb.set_path_mss(mss, now + tcb.cfg.pmtu_expires)
    tcb.drop("tcp_pmtu_lowered")
    if state in SENDS_DATA:
        _resend_oversized(tcb)
    return True


def on_repeated_timeout(tcb: ControlBlock, now: float) -> bool:
    """RFC 4821 (Linux tcp_mtu_probing=1): called at each retransmission timeout in
    a synchronized state, after it is counted in ``tcb.retries``. If the segment at
    SND.UNA timed out :data:`BLACKHOLE_RTOS` times in a row and is larger than a
    smaller MSS would allow, the path is presumed to drop large packets without
    telling us: lower the MSS. Returns whether it did."""
    if not tcb.cfg.mtu_probing or tcb.retries - tcb.blackhole_mark < BLACKHOLE_RTOS:
        return False
    recs = tcb.scoreboard.recs
    if not recs:
        return False
    head = recs[0]
    length = head.length
    sent_as = head.seg if 0 < head.seg < length else length
    current = tcb.snd_mss
    target = max(BASE_MSS if current > BASE_MSS else current // 2, tcb.mss_floor)
    if target >= current:
        tcb.drop("tcp_plpmtud_at_floor")
        return False
    if sent_as <= target - tcb.opt_len:
        return False  # small segments are lost too: not a question of their size
    tcb.blackhole_mark = tcb.retries
    tcb.set_path_mss(target, now + tcb.cfg.pmtu_expires)
    tcb.drop("tcp_plpmtud_lowered")
    return True


def _resend_oversized(tcb: ControlBlock) -> None:
    """What is in flight in segments too large for the new MSS was dropped: resend
    it now, at the new size, as lost -- not as congestion (no window reduction)."""
    if tcb.scoreboard.mark_lost_oversized(tcb.seg_mss):
        tcb.pmtu_high = tcb.snd_max
        tcb.rtx_now = True
    tcb.mark()


__all__ = ["BASE_MSS", "BLACKHOLE_RTOS", "on_icmp_error", "on_packet_too_big",
           "on_repeated_timeout", "quotes_segment_in_flight"]
