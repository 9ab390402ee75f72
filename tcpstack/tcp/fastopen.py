"""TCP Fast Open (RFC 7413): data in the SYN, from clients holding a cookie.

A client that once got a cookie from a server sends its first data in the SYN
with the cookie; the server checks the cookie and, if it is its own, hands the
data to the application before the handshake completes -- a request answered one
round trip sooner. The cookies, keys and the per-connection record are in
:mod:`tcpstack.tcp.tfocookies`; the rules here are called from
:mod:`tcpstack.tcp.handshake`, :mod:`tcpstack.tcp.inbound` and
:mod:`tcpstack.tcp.recovery`:

* :func:`accept_syn_data` -- server: the SYN's data into the receive buffer and
  the connection to the application at once (RFC 7413 4.2.2);
* :func:`sends_early` -- server: a Fast Open child sends before the handshake
  completes;
* :func:`syn_payload` -- client: what the SYN carries (RFC 7413 4.1.3);
* :func:`on_syn_ack` -- client: the cookie learned; data the server did not
  acknowledge is sent again as ordinary data (RFC 7413 4.2.1);
* :func:`syn_due` -- client: the deferred SYN goes with the first write (or after
  :data:`DEFER_LIMIT`, for an application that reads first).

A client's retransmitted SYN carries neither data nor the option (as Linux), but
SND.MAX still covers the first SYN's data, so a late SYN,ACK acknowledging it is
taken; a SYN,ACK after a retransmission that acknowledges neither the data nor
gives a cookie counts as a SYN lost to the path (RFC 7413 4.1.3.1).

Which SYNs get Fast Open at a listener is decided in :mod:`tcpstack.tcp.passive`.

Duplicates (RFC 7413 6.1): a retransmitted SYN for a connection still in
SYN-RECEIVED is answered with our SYN,ACK again and its data is not delivered
twice; a SYN arriving after the connection ended starts a new one, whose data is
delivered again -- as RFC 7413 warns, Fast Open suits requests an application
can receive twice (it is off unless a listener asks for it).

Nothing here performs I/O or reads a clock.
"""

from __future__ import annotations

from tcpstack.tcp import events as ev
from tcpstack.tcp.control import DEFAULT_PEER_MSS, ControlBlock
from tcpstack.tcp.seq import seq_add, seq_diff
from tcpstack.wire.tcp import MAX_OPTIONS_LEN, TcpSegment

#: Seconds a client's deferred SYN waits for the application's first write (Linux's
#: ``TCP_FASTOPEN_CONNECT`` waits for it without limit; an application that reads
#: first should not ask for Fast Open, but gets its SYN sent after this).
DEFER_LIMIT = 0.05


# ------------------------------------------------------------------ server


def accept_syn_data(tcb: ControlBlock, syn: TcpSegment) -> None:
    """RFC 7413 4.2.2: a valid cookie: the SYN's data is received, and the
    connection is the application's now (its Established comes at once; the
    SYN,ACK acknowledges the data)."""
    payload = syn.payload
    n = len(payload)
    tcb.events.append(ev.ESTABLISHED)
    if n:
        tcb.rcv_buf.append(bytes(payload))
        tcb.rcv_nxt = seq_add(tcb.rcv_nxt, n)
        tcb.rcv_mss = max(tcb.rcv_mss, min(n, tcb.cfg.mss))
        tcb.data_event_pending = True
        tcb.events.append(ev.DATA_RECEIVED)


def sends_early(tcb: ControlBlock) -> bool:
    """A Fast Open child may send before the handshake completes (RFC 7413 4.2.2)."""
    tfo = tcb.tfo
    return tfo is not None and tfo.child


# ------------------------------------------------------------------ client


def syn_payload(tcb: ControlBlock) -> int:
    """How many queued bytes our first SYN carries: with a cookie, what the send
    buffer holds up to the server's MSS less the largest option space (as Linux,
    which does not know yet which options the SYN,ACK agrees to)."""
    tfo = tcb.tfo
    if tfo is None or not tfo.cookie or tcb.retries:
        return 0
    # A server whose MSS we do not know yet: RFC 9293 3.7.1's default.
    space = min(tfo.mss or DEFAULT_PEER_MSS, tcb.cfg.mss) - MAX_OPTIONS_LEN
    return max(0, min(len(tcb.sndbuf.data), space))


def syn_due(tcb: ControlBlock, now: float) -> bool:
    """The deferred SYN goes now: something to send (or a close queued), or its wait
    is over."""
    tfo = tcb.tfo
    assert tfo is not None
    return bool(tcb.sndbuf.data) or tcb.fin_queued or now >= tfo.defer_until


def on_syn_ack(tcb: ControlBlock, seg: TcpSegment, now: float) -> None:
    """Our SYN is acknowledged (RFC 7413 4.1.3, 4.2.1): remember the server's cookie
    and MSS; data of our SYN the server did not acknowledge goes again, as new data
    after the handshake (not a loss: no window reduction)."""
    tfo = tcb.tfo
    assert tfo is not None
    counters = tcb.counters
    cookie = seg.options.tfo
    if cookie:
        counters["tcp_tfo_cookie_received"] += 1
    cache = tfo.cache
    if cache is not None:
        cache.learn(tcb.remote_ip, cookie or None, seg.options.mss or 0)
    if not tfo.syn_data:
        if cookie:
            tfo.result = "cookie received"
        elif tfo.cookie == b"":
            tfo.result = "no cookie"
        return
    unacked = seq_diff(tcb.snd_max, seg.ack)
    if unacked <= 0:
        counters["tcp_tfo_active"] += 1
        tfo.result = "data acked"
        if cache is not None:
            cache.syn_data_acked(tcb.remote_ip)
        return
    counters["tcp_tfo_active_fail"] += 1
    tfo.result = "data not acked"
    tcb.snd_max = seg.ack  # the rest is unsent again
    if cache is not None and tcb.syn_retransmitted and not cookie:
        # Only the retransmitted (plain) SYN got through, it seems: the path may
        # drop SYNs with data (Linux's syn_drop).
        cache.syn_lost(tcb.remote_ip, now)


__all__ = ["DEFER_LIMIT", "accept_syn_data", "on_syn_ack", "sends_early", "syn_due",
           "syn_payload"]
