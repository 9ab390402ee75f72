"""The transmission control block: one TCP connection's public interface (RFC 9293).

A :class:`Tcb` is driven by four kinds of input, each taking the current time:

* :meth:`Tcb.receive` -- a parsed segment arrived for this connection;
* :meth:`Tcb.handle_timer` -- the deadline from :meth:`Tcb.next_deadline` passed;
* application calls -- :meth:`Tcb.send`, :meth:`Tcb.recv`, :meth:`Tcb.shutdown_write`,
  :meth:`Tcb.close`, :meth:`Tcb.abort`;
* :meth:`Tcb.segments_to_send` -- the owner collects what to transmit.

Processing a segment only updates state and sets flags; segments are generated
when the owner calls :meth:`Tcb.segments_to_send`, normally once per batch of
received packets, so a burst of arrivals is answered with one ACK (or with data
carrying it). Events for the application accumulate in ``events``.

This class only routes: the state lives in :class:`~tcpstack.tcp.control.ControlBlock`
and the rules in one module per concern (``tcpstack/tcp/README.md`` maps RFC
sections to them): :mod:`~tcpstack.tcp.inbound` (SEGMENT ARRIVES),
:mod:`~tcpstack.tcp.ack_processing`, :mod:`~tcpstack.tcp.ack_policy`,
:mod:`~tcpstack.tcp.output`, :mod:`~tcpstack.tcp.window`,
:mod:`~tcpstack.tcp.recovery`, :mod:`~tcpstack.tcp.probes`,
:mod:`~tcpstack.tcp.handshake` and :mod:`~tcpstack.tcp.teardown`. Every state
change goes through the transition table in :mod:`~tcpstack.tcp.state`.
"""

from __future__ import annotations

import errno

from tcpstack.tcp import (
    ack_policy,
    autotune,
    fastopen,
    handshake,
    inbound,
    output,
    path,
    probes,
    recovery,
    teardown,
    window,
)
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.control import MD5_OPTION_LEN, ControlBlock
from tcpstack.tcp.limits import Commons
from tcpstack.tcp.seq import seq_add
from tcpstack.tcp.state import CAN_SEND, State, Trigger, refusal
from tcpstack.tcp.tfocookies import FastOpen
from tcpstack.wire.tcp import OutSegment, TcpSegment


class Tcb(ControlBlock):
    """One connection. Create with :meth:`passive_open` or :meth:`active_open`."""

    __slots__ = ()

    # ------------------------------------------------------------------ opening

    @classmethod
    def passive_open(cls, cfg: TcpConfig, local: tuple[int, int], remote: tuple[int, int],
                     syn: TcpSegment, iss: int, now: float, commons: Commons | None = None,
                     ts_offset: int | None = None, signed: bool = False,
                     tfo: FastOpen | None = None) -> Tcb:
        """A listener received ``syn`` (RFC 9293 3.10.7.2): enter SYN-RECEIVED, send SYN,ACK.

        ``commons`` are the stack's shared counters and limits (a private set if
        None); ``ts_offset`` the timestamp clock's offset (RFC 7323 7.1); ``signed``:
        every segment carries a TCP-MD5 signature (RFC 2385), which the stack writes;
        ``tfo``: what Fast Open decided for this SYN (RFC 7413 4.2.2: a cookie to
        give, or a valid cookie whose SYN data is taken at once).
        """
        tcb = cls(cfg, local, remote, iss, commons, ts_offset)
        tcb.tfo = tfo
        tcb.md5 = signed
        tcb.sig_len = MD5_OPTION_LEN if signed else 0
        tcb.state = State.LISTEN  # born of a passive OPEN; the SYN moves it on
        handshake.start_passive(tcb, syn, now)
        return tcb

    @classmethod
    def from_cookie(cls, cfg: TcpConfig, local: tuple[int, int], remote: tuple[int, int],
                    ack: TcpSegment, peer_mss: int, now: float, commons: Commons | None = None,
                    ts_offset: int | None = None, signed: bool = False) -> Tcb:
        """The connection a valid SYN cookie stands for (RFC 4987 3.6), in SYN-RECEIVED;
        give it ``ack`` (:meth:`receive`) to establish it. The ISS was the cookie."""
        tcb = cls(cfg, local, remote, seq_add(ack.ack, -1), commons, ts_offset)
        tcb.md5 = signed
        tcb.sig_len = MD5_OPTION_LEN if signed else 0
        tcb.state = State.LISTEN  # born of a passive OPEN, like passive_open
        handshake.start_from_cookie(tcb, ack, peer_mss, now)
        return tcb

    @classmethod
    def active_open(cls, cfg: TcpConfig, local: tuple[int, int], remote: tuple[int, int],
                    iss: int, now: float, commons: Commons | None = None,
                    ts_offset: int | None = None, signed: bool = False,
                    fast_open: FastOpen | None = None) -> Tcb:
        """An active OPEN (RFC 9293 3.10.1): send SYN, enter SYN-SENT (``signed``: see
        :meth:`passive_open`). With ``fast_open`` (RFC 7413 4.1.3) the SYN carries
        its cookie (or asks for one) and, if ``fast_open.deferred``, waits for the
        application's first :meth:`send` (at most ``fastopen.DEFER_LIMIT``) to carry
        it."""
        tcb = cls(cfg, local, remote, iss, commons, ts_offset)
        tcb.tfo = fast_open
        tcb.md5 = signed
        tcb.sig_len = MD5_OPTION_LEN if signed else 0
        handshake.start_active(tcb, now)
        return tcb

    # ---------------------------------------------------------------- app calls

    @property
    def send_buffered(self) -> int:
        """Bytes queued for sending and not yet acknowledged."""
        return len(self.sndbuf.data)

    @property
    def send_space(self) -> int:
        """The send buffer's high-water mark: writers should wait while
        :attr:`send_buffered` is above it (it follows the congestion window)."""
        return autotune.send_space(self)

    @property
    def can_send(self) -> bool:
        return self.state in CAN_SEND and not self.fin_queued

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` (RFC 9293 3.10.2 SEND).

        Raises :class:`ConnectionError` (:class:`BrokenPipeError` once our side is
        closed) where SEND is not allowed; nothing changes then.
        """
        if self.fin_queued and self.state in CAN_SEND:
            # SYN-SENT, SYN-RECEIVED: the FIN is queued, so the sending side is closed.
            raise BrokenPipeError(errno.EPIPE, f"SEND after CLOSE ({self.state})")
        self.fire_app(Trigger.SEND)  # raises, changing nothing, where SEND is refused
        if not data:
            return
        self.sndbuf.append(data)
        if len(self.sndbuf.data) > autotune.send_space(self):
            self.write_blocked = True
        self.mark()

    def set_nodelay(self, on: bool) -> None:
        """Disable (``on``) or re-enable Nagle's algorithm for this connection."""
        self.nodelay = on
        self.mark()

    def set_keepalive(self, on: bool, idle: float | None = None,
                      interval: float | None = None, count: int | None = None) -> None:
        """Keepalive probes after ``idle`` seconds of silence (RFC 1122 4.2.3.6)."""
        if idle is not None and idle <= 0:
            raise ValueError("keepalive idle time must be positive")
        if interval is not None and interval <= 0:
            raise ValueError("keepalive interval must be positive")
        if count is not None and count < 1:
            raise ValueError("keepalive count must be at least 1")
        if idle is not None:
            self.keepalive_idle = idle
        if interval is not None:
            self.keepalive_interval = interval
        if count is not None:
            self.keepalive_count = count
        self.keepalive = on
        self.timers.keepalive = None
        self.mark()

    @property
    def recv_buffered(self) -> int:
        """Received in-order bytes the application has not read yet."""
        return len(self.rcv_buf.data)

    def recv(self, n: int = -1) -> bytes:
        """Take up to ``n`` bytes (all if negative) from the receive buffer (3.10.3 RECEIVE)."""
        data = self.rcv_buf.take(n)
        if data:
            autotune.note_read(self, len(data))
            ack_policy.on_application_read(self)
            window.on_application_read(self)
        return data

    def recv_into(self, buffer: bytearray | memoryview) -> int:
        """Move up to ``len(buffer)`` unread bytes into ``buffer``; return how many.

        RECEIVE (3.10.3) into the caller's memory: one copy, no intermediate
        :class:`bytes` (for zero-copy readers such as ``asyncio.BufferedProtocol``).
        """
        n = self.rcv_buf.take_into(buffer)
        if n:
            autotune.note_read(self, n)
            ack_policy.on_application_read(self)
            window.on_application_read(self)
        return n

    def recv_find(self, sub: bytes, start: int = 0) -> int:
        """Where ``sub`` starts in the unread bytes (searching from ``start``), or -1."""
        return self.rcv_buf.find(sub, start)

    def shutdown_write(self) -> None:
        """Half-close: send FIN after the queued data (RFC 9293 3.10.4 CLOSE).

        A second call is a no-op (3.10.4 allows "ok" as long as no second FIN goes
        out); on a connection that no longer exists it raises :class:`ConnectionError`.
        """
        self.fire_app(Trigger.CLOSE)
        if not self.fin_queued:
            self.fin_queued = True
            self.mark()

    def close(self) -> None:
        """Full close: no more sending or receiving by the application.

        Unread received data makes this an abort (RST), as RFC 2525 2.17 asks and
        Linux does, so the peer learns its data was not consumed. A connection still
        in SYN-SENT is deleted (RFC 9293 3.10.4) -- unless it is a Fast Open one
        holding data written before the handshake: that data and the FIN follow the
        handshake. Raises :class:`ConnectionError` if the connection no longer exists.
        """
        if self.state is State.CLOSED:
            raise refusal(self.state, Trigger.CLOSE)
        self.closed_by_app = True
        if self.state is State.SYN_SENT:
            if self.tfo is not None and self.sndbuf.data:
                # A Fast Open client wrote before the handshake: as an asyncio
                # transport's close, what was written goes first, then the FIN.
                self.shutdown_write()
                return
            teardown.terminate(self, None, Trigger.ABORT)
            return
        if self.rcv_buf and self.state is not State.TIME_WAIT:
            self.rcv_buf.clear()
            teardown.abort(self)
            return
        self.shutdown_write()
        self.mark()  # segments_to_send arms the FIN-WAIT-2 timeout if needed

    def abort(self) -> None:
        """ABORT (RFC 9293 3.10.5): send RST if synchronized, and drop everything.
        Raises :class:`ConnectionError` if the connection no longer exists."""
        if self.state is State.CLOSED:
            raise refusal(self.state, Trigger.ABORT)
        teardown.abort(self)

    # ---------------------------------------------------------------- network

    def receive(self, seg: TcpSegment, now: float) -> None:
        """Process an arriving segment (RFC 9293 3.10.7.3 and 3.10.7.4)."""
        inbound.segment_arrives(self, seg, now)

    def on_icmp_error(self, error: int, hard: bool, seq: int) -> bool:
        """An ICMP error quoting our segment with sequence number ``seq`` arrived
        (RFC 5927, RFC 1122 4.2.3.9; see :mod:`~tcpstack.tcp.path`): ``error`` is
        the errno it stands for, ``hard`` whether it is a hard error. Returns
        whether it was acted on; ignored ones are counted by reason."""
        return path.on_icmp_error(self, error, hard, seq)

    def on_packet_too_big(self, mss: int, seq: int, now: float) -> bool:
        """ICMP "fragmentation needed" / "packet too big" quoting our segment ``seq``:
        the path carries segments of at most ``mss`` bytes (RFC 1191, RFC 8201; see
        :mod:`~tcpstack.tcp.path`). Returns whether the MSS was lowered."""
        return path.on_packet_too_big(self, mss, seq, now)

    def take_soft_error(self) -> int:
        """The last soft ICMP error's errno (0: none), cleared as ``SO_ERROR`` does."""
        error = self.soft_error
        self.soft_error = 0
        return error

    def segments_to_send(self, now: float) -> list[OutSegment]:
        """Everything this connection wants transmitted now; clears the dirty mark."""
        tfo = self.tfo
        if tfo is not None and tfo.deferred and self.state is State.SYN_SENT \
                and fastopen.syn_due(self, now):
            # Fast Open: the SYN deferred by the active open goes now, carrying what
            # the application wrote (RFC 7413 4.1.3).
            tfo.deferred = False
            handshake.send_syn(self, now, ack=False)
        return output.flush(self, now)

    # ----------------------------------------------------------------- timers

    def next_deadline(self) -> float | None:
        """The earliest time at which :meth:`handle_timer` must run, or None."""
        return self.timers.next_deadline()

    def handle_timer(self, now: float) -> None:
        """Run every timer whose deadline has passed, in :data:`tcpstack.tcp.timers.ORDER`."""
        t = self.timers
        tfo = self.tfo
        if tfo is not None and tfo.deferred and t.rto is not None and now >= t.rto:
            t.rto = None  # a deferred Fast Open SYN waited long enough: it goes now
        if t.time_wait is not None and now >= t.time_wait:
            teardown.on_time_wait_timer(self)
        if t.fin_wait is not None and now >= t.fin_wait:
            teardown.on_fin_wait_timer(self)
        # A timer that ends the connection stops all others (terminate clears them).
        if t.delack is not None and now >= t.delack:
            t.delack = None
            ack_policy.on_delayed_ack_timer(self)
        if t.rack is not None and now >= t.rack:
            recovery.on_rack_timer(self, now)
        if t.tlp is not None and now >= t.tlp:
            recovery.on_tlp_timer(self, now)
        if t.rto is not None and now >= t.rto:
            recovery.on_rto(self, now)
        if t.persist is not None and now >= t.persist:
            probes.on_persist_timer(self, now)
        if t.keepalive is not None and now >= t.keepalive:
            probes.on_keepalive_timer(self, now)
        if t.pace is not None and now >= t.pace:
            t.pace = None  # the paced sender's next transmission is due: flush
        self.mark()
