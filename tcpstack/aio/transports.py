"""asyncio transports over tcpstack connections.

:class:`TcpTransport` is an :class:`asyncio.Transport` whose other end is a
:class:`~tcpstack.tcp.tcb.Tcb`: it turns the engine's events into protocol
callbacks and the protocol's calls into TCB calls, honouring asyncio's contract:

* **Reading.** Data goes to ``protocol.data_received`` as it arrives, or, for an
  :class:`asyncio.BufferedProtocol`, straight into the memory ``get_buffer`` returns
  (:meth:`Tcb.recv_into <tcpstack.tcp.tcb.Tcb.recv_into>`, one copy). While reading
  is paused (:meth:`pause_reading`) nothing is taken from the TCB, so its receive
  buffer fills and the window it advertises closes (RFC 9293 3.8.6); resuming
  reopens it. The peer's FIN calls ``eof_received``; a false return closes the
  transport, a true one keeps it open for writing (half-close).
* **Writing.** The TCB's send buffer plays the kernel socket buffer: writes go
  there while it is below its high-water mark (:attr:`Tcb.send_space
  <tcpstack.tcp.tcb.Tcb.send_space>`, which autotuning keeps at twice the congestion
  window, from ``TcpConfig.snd_buf`` up to ``snd_buf_max``, as Linux sizes a
  socket's send buffer); the rest waits in the transport's own buffer, which is
  what :meth:`get_write_buffer_size` reports and what the write-buffer limits apply
  to: ``pause_writing`` above the high mark, ``resume_writing`` once at or below
  the low mark. By default the high mark follows the TCB's (the same
  ``send_space``, so it grows with the connection) and the low mark is a quarter
  of it, asyncio's ratio; :meth:`set_write_buffer_limits` with a value fixes them
  (without one it returns to the default). A TCB filled past its mark reports when
  it has drained to half of it (:class:`~tcpstack.tcp.events.WriteSpace`), and
  the transport moves more in; whenever the transport holds data, the TCB is past
  its mark, so that report always comes.
* **Ending.** ``connection_lost`` is called exactly once: with None after
  :meth:`close` once our FIN is acknowledged (everything written reached the peer),
  or at once after :meth:`abort`; with :class:`ConnectionResetError` when the peer
  resets, :class:`TimeoutError` when retransmissions or the user timeout give up.
  Writes after the connection is lost are dropped (asyncio logs a warning after a
  few; so do we).

Nothing here blocks or copies what it need not: a :class:`bytes` object waiting
in the transport buffer is kept by reference, mutable buffers are copied (the
caller may reuse them).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections import deque
from typing import Any, Protocol

from tcpstack.aio.sockopts import ConnectionSocket, SockAddr, sockaddr
from tcpstack.tcp import events as ev
from tcpstack.tcp.info import tcp_info
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb

log = logging.getLogger("tcpstack.transports")


LOG_THRESHOLD_FOR_LOST_WRITES = 5
"""Writes after the connection was lost that pass silently before a warning (as asyncio)."""

Data = bytes | bytearray | memoryview


class TransportHost(Protocol):
    """What a transport needs from the network that drives its TCB."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def kick(self) -> None:
        """Flush what application calls caused, once, in this loop iteration."""

    def track(self, transport: TcpTransport) -> None:
        """A new transport: keep it until :meth:`forget` (to close it at shutdown)."""

    def forget(self, transport: TcpTransport) -> None:
        """The transport's connection is over: stop tracking it."""


class TransportOwner(Protocol):
    """A server that wants to know when one of its transports is done."""

    def _detach(self, transport: TcpTransport) -> None: ...


def error_for(reason: str | None, code: int = 0) -> OSError | None:
    """The exception asyncio users expect for a :class:`~tcpstack.tcp.events.Terminated`
    reason (None for an orderly end or our own abort). ``code`` (an errno from an
    ICMP error, see :class:`~tcpstack.tcp.events.Terminated`) takes precedence, as a
    kernel socket's ``SO_ERROR`` would (``OSError`` picks the subclass, e.g.
    :class:`ConnectionRefusedError` for ``ECONNREFUSED``)."""
    if reason is None or reason == "aborted":
        return None
    if code:
        return OSError(code, os.strerror(code))
    if reason == "reset":
        return ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    if reason == "refused":
        return ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    if reason == "timeout":
        return TimeoutError(errno.ETIMEDOUT, "Connection timed out")
    return ConnectionError(reason)


def _address(ip: int, port: int) -> SockAddr:
    """``(host, port)``, or ``(host, port, flowinfo, scope_id)`` for IPv6, as asyncio."""
    return sockaddr(ip, port)


class TcpTransport(asyncio.Transport):
    """A :class:`asyncio.Transport` over one TCP connection of the stack.

    Made by the network for every connection: an accepted one gets its protocol
    at once, an active open once the handshake is done (:meth:`wait_connected`).
    """

    __slots__ = (
        "_buffered",
        "_closing",
        "_connected",
        "_delivery",
        "_eof_delivered",
        "_eof_written",
        "_error",
        "_fin_acked",
        "_host",
        "_limits",
        "_loop",
        "_lost",
        "_lost_future",
        "_lost_writes",
        "_owner",
        "_peer_eof",
        "_pending",
        "_pending_size",
        "_protocol",
        "_reading_paused",
        "_sock",
        "_tcb",
        "_tcb_closed",
        "_terminated",
        "_writing_paused",
    )

    # asyncio's default event loop accepts this transport in loop.start_tls().
    _start_tls_compatible = True

    def __init__(self, host: TransportHost, tcb: Tcb, owner: TransportOwner | None = None) -> None:
        super().__init__()
        self._sock: ConnectionSocket | None = None  # made when first asked for
        self._host = host
        self._loop = host.loop
        self._tcb = tcb
        self._owner = owner
        tcb.user = self
        # asyncio turns Nagle's algorithm off on every TCP transport; so do we (the
        # engine's own default stays on, RFC 9293 3.7.4). The "socket" can undo it.
        tcb.set_nodelay(True)
        self._protocol: asyncio.BaseProtocol | None = None
        self._buffered = False
        self._connected: asyncio.Future[None] | None = None
        if tcb.state is State.SYN_SENT or (tcb.state is State.SYN_RECEIVED
                                           and tcb.listener is None):
            # (An accepted connection still in SYN-RECEIVED is a Fast Open one: its
            # application has it already.)
            self._connected = self._loop.create_future()
        self._reading_paused = False
        self._delivery: asyncio.Handle | None = None
        self._peer_eof = False
        self._eof_delivered = False
        self._closing = False
        self._tcb_closed = False  # tcb.close() done (or nothing left to close)
        self._eof_written = False
        self._fin_acked = False
        self._terminated = False
        self._error: OSError | None = None
        self._lost = False  # connection_lost called or scheduled
        self._lost_future: asyncio.Future[None] | None = None
        self._lost_writes = 0
        # Data the TCB has no room for yet; created when first needed (an empty
        # deque is ~600 bytes, and most connections never fill their TCB).
        self._pending: deque[bytes | memoryview] | None = None
        self._pending_size = 0
        self._limits: tuple[int, int] | None = None  # (low, high) when set explicitly
        self._writing_paused = False
        host.track(self)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """asyncio's extra information, made when asked for (an idle connection keeps
        no dictionary of it): ``peername`` and ``sockname`` (``(host, port)``, 4-tuples
        for IPv6), ``socket`` (a :class:`ConnectionSocket`, the same one each time)
        ``tcp_info`` (what the handshake agreed and where the connection stands, a
        new dictionary each time: :func:`tcpstack.tcp.info.tcp_info`) and ``tcb``;
        ``default`` for anything else."""
        tcb = self._tcb
        if name == "peername":
            return _address(tcb.remote_ip, tcb.remote_port)
        if name == "sockname":
            return _address(tcb.local_ip, tcb.local_port)
        if name == "socket":
            sock = self._sock
            if sock is None:
                sock = self._sock = ConnectionSocket(tcb)
            return sock
        if name == "tcb":
            return tcb
        if name == "tcp_info":
            return tcp_info(tcb)
        return super().get_extra_info(name, default)

    def __repr__(self) -> str:
        state = "closed" if self._lost else "closing" if self._closing else "open"
        return (f"<TcpTransport {state} {self.get_extra_info('sockname')} -> "
                f"{self.get_extra_info('peername')}>")

    # ------------------------------------------------------------ opening

    async def wait_connected(self) -> None:
        """Wait for the three-way handshake; raise the asyncio error if it failed.

        Cancelling the wait aborts the connection (nothing is left behind).
        """
        waiter = self._connected
        if waiter is None:
            return
        try:
            await waiter
        except BaseException:
            self._discard()
            raise

    def connected_early(self) -> None:
        """The application takes the connection before its handshake completes (Fast
        Open's active open): a failed handshake ends it as a lost connection does."""
        self._connected = None

    def _discard(self) -> None:
        """Give up a connection no protocol has seen yet."""
        self._closing = True
        self._pending = None
        if self._tcb.state is not State.CLOSED:
            self._tcb.abort()
            self._host.kick()
        self._give_up()

    def _give_up(self) -> None:
        """Done without a protocol: no connection_lost to call."""
        self._lost = True
        self._release()
        future = self._lost_future
        if future is not None and not future.done():
            future.set_result(None)

    def attach(self, protocol: asyncio.BaseProtocol) -> None:
        """Give the established connection its protocol: ``connection_made``, then
        whatever arrived meanwhile."""
        self.set_protocol(protocol)
        try:
            protocol.connection_made(self)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "protocol.connection_made() failed")
            return
        self._schedule_delivery()

    # ------------------------------------------------------------ engine events

    def on_events(self, events: list[ev.Event]) -> None:
        """Engine events for this connection (called by the network's runtime)."""
        for e in events:
            kind = type(e)
            if kind is ev.EndOfStream:
                self._peer_eof = True
            elif kind is ev.WriteSpace:
                self._on_write_space()
            elif kind is ev.FinAcked:
                self._fin_acked = True
            elif kind is ev.Established:
                if self._connected is not None and not self._connected.done():
                    self._connected.set_result(None)
            elif isinstance(e, ev.Terminated):
                self._on_terminated(e.error, e.errno)
        if self._tcb.state is State.TIME_WAIT:
            # Both FINs are through; only the engine's 2*MSL remains. The TCB no
            # longer needs its application side.
            self._fin_acked = True
            self._tcb.user = None
        if self._protocol is not None:
            self._deliver()
            self._maybe_lose()

    def _on_terminated(self, reason: str | None, code: int = 0) -> None:
        self._terminated = True
        self._pending = None
        self._pending_size = 0
        error = error_for(reason, code)
        self._error = error
        waiter = self._connected
        if waiter is not None and not waiter.done():
            waiter.set_exception(
                error or ConnectionAbortedError(errno.ECONNABORTED, "Connection aborted"))
            self._give_up()

    # ------------------------------------------------------------ reading

    def is_reading(self) -> bool:
        return not self._reading_paused and not self._closing

    def pause_reading(self) -> None:
        """Stop delivering data: the TCB keeps it and its advertised window shrinks."""
        if self._closing or self._reading_paused:
            return
        self._reading_paused = True

    def resume_reading(self) -> None:
        """Deliver again (from the next loop iteration); the window reopens as data is taken."""
        if self._closing or not self._reading_paused:
            return
        self._reading_paused = False
        self._schedule_delivery()

    def _schedule_delivery(self) -> None:
        if self._delivery is None and not self._lost:
            self._delivery = self._loop.call_soon(self._delivery_due)

    def _delivery_due(self) -> None:
        self._delivery = None
        self._deliver()
        self._maybe_lose()

    def _deliver(self) -> None:
        """Hand buffered data, then the peer's EOF, to the protocol until paused."""
        tcb = self._tcb
        protocol = self._protocol
        while protocol is not None and not self._reading_paused and not self._closing \
                and not self._lost:
            if tcb.recv_buffered:
                try:
                    if self._buffered:
                        self._deliver_into(tcb, protocol)  # type: ignore[arg-type]
                    else:
                        protocol.data_received(tcb.recv(-1))  # type: ignore[attr-defined]
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    self._fatal(exc, "protocol.data_received() failed")
                    return
                self._host.kick()  # reading may reopen the window
            elif self._peer_eof and not self._eof_delivered and not self._terminated_badly():
                self._eof_delivered = True
                try:
                    keep_open = protocol.eof_received()  # type: ignore[attr-defined]
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    self._fatal(exc, "protocol.eof_received() failed")
                    return
                if not keep_open:
                    self.close()
                return
            else:
                return
            if protocol is not self._protocol:
                return  # switched (start_tls): the new protocol is scheduled separately

    def _deliver_into(self, tcb: Tcb, protocol: asyncio.BufferedProtocol) -> None:
        buf = memoryview(protocol.get_buffer(tcb.recv_buffered))
        if not buf.nbytes:
            raise RuntimeError("get_buffer() returned an empty buffer")
        n = tcb.recv_into(buf)
        del buf  # let the protocol resize its buffer in buffer_updated
        protocol.buffer_updated(n)

    def _terminated_badly(self) -> bool:
        return self._terminated and self._error is not None

    # ------------------------------------------------------------ writing

    def write(self, data: Data) -> None:
        """Queue ``data``; never blocks (see the module docstring for flow control)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        if self._eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        if isinstance(data, memoryview) and (data.itemsize != 1 or data.ndim != 1):
            data = data.cast("B")
        if not data:
            return
        if self._lost or self._terminated or self._closing:
            self._lost_write()
            return
        immutable = isinstance(data, bytes) or (
            isinstance(data, memoryview) and isinstance(data.obj, bytes))
        tcb = self._tcb
        if not self._pending:
            room = tcb.send_space - tcb.send_buffered
            # Past its mark the TCB reports WriteSpace once it has drained -- if it
            # noticed: the mark may have fallen below what it holds since.
            if room >= 0 or not tcb.write_blocked:
                room = max(room, 0)
                try:
                    if len(data) <= room:
                        tcb.send(data)
                        self._host.kick()
                        return
                    # Fill the TCB just past its mark (by one byte at least): it
                    # then reports WriteSpace, and the rest follows from here.
                    view = memoryview(data)
                    tcb.send(view[:room + 1])
                    data = view[room + 1:]
                except ConnectionError:
                    self._lost_write()
                    return
                if not data:
                    self._host.kick()
                    return
        if self._pending is None:
            self._pending = deque()
        self._pending.append(data if immutable else bytes(data))  # type: ignore[arg-type]
        self._pending_size += len(data)
        self._host.kick()
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        """Write every buffer of an iterable, in order."""
        for data in list_of_data:
            self.write(data)

    def _lost_write(self) -> None:
        self._lost_writes += 1
        if self._lost_writes >= LOG_THRESHOLD_FOR_LOST_WRITES:
            log.warning("%r: write on a lost or closed connection", self)

    def _on_write_space(self) -> None:
        """The TCB drained to half its mark: move waiting data in until the TCB is past
        its mark again (or nothing waits); maybe resume the writer."""
        tcb = self._tcb
        pending = self._pending
        mark = tcb.send_space
        try:
            while pending is not None and pending:
                room = max(mark - tcb.send_buffered, 0)
                chunk = pending[0]
                if len(chunk) <= room:
                    pending.popleft()
                    tcb.send(chunk)
                    self._pending_size -= len(chunk)
                else:
                    view = memoryview(chunk)
                    tcb.send(view[:room + 1])
                    self._pending_size -= room + 1
                    if len(view) > room + 1:
                        pending[0] = view[room + 1:]
                    else:
                        pending.popleft()
                    break
        except ConnectionError:
            return  # the connection is ending; Terminated follows
        self._host.kick()
        self._maybe_resume_protocol()
        if not pending:
            self._after_flush()

    def _after_flush(self) -> None:
        """The transport buffer is empty: a pending write_eof or close goes ahead."""
        if self._eof_written:
            self._shutdown()
        if self._closing and not self._tcb_closed:
            self._close_tcb()

    def _shutdown(self) -> None:
        tcb = self._tcb
        if tcb.state is not State.CLOSED:
            try:
                tcb.shutdown_write()
            except ConnectionError:
                pass
            self._host.kick()

    def _close_tcb(self) -> None:
        self._tcb_closed = True
        tcb = self._tcb
        if tcb.state in (State.CLOSED, State.TIME_WAIT):
            return
        try:
            tcb.close()
        except ConnectionError:
            pass
        self._host.kick()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: FIN after everything written so far; reading goes on."""
        if self._closing or self._eof_written:
            return
        self._eof_written = True
        if not self._pending:
            self._shutdown()

    def get_write_buffer_size(self) -> int:
        """Bytes waiting in the transport (the TCB's own buffer not counted)."""
        return self._pending_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """``(low, high)``: the explicit limits, or by default the connection's send
        space and a quarter of it (they change as the connection's window does)."""
        if self._limits is not None:
            return self._limits
        high = self._tcb.send_space
        return (high // 4, high)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """asyncio's rules: a missing high is 4 * low, a missing low is high // 4. With
        neither, the limits follow the connection's send space again (the default)."""
        if high is None and low is None:
            self._limits = None
        else:
            if high is None:
                high = 4 * (low or 0)
            if low is None:
                low = high // 4
            if not high >= low >= 0:
                raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
            self._limits = (low, high)
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if self._writing_paused or self._pending_size <= self.get_write_buffer_limits()[1]:
            return
        self._writing_paused = True
        try:
            self._protocol.pause_writing()  # type: ignore[union-attr]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._report("protocol.pause_writing() failed", exc)

    def _maybe_resume_protocol(self) -> None:
        if not self._writing_paused or self._pending_size > self.get_write_buffer_limits()[0]:
            return
        self._writing_paused = False
        try:
            self._protocol.resume_writing()  # type: ignore[union-attr]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._report("protocol.resume_writing() failed", exc)

    # ------------------------------------------------------------ closing

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        """Close after everything written is sent (FIN); ``connection_lost(None)``
        follows once the peer has acknowledged it. Unread received data makes it a
        reset, as closing a kernel socket does."""
        if self._closing or self._lost:
            return
        self._closing = True
        if self._delivery is not None:
            self._delivery.cancel()
            self._delivery = None
        if not self._pending:
            self._close_tcb()
        self._maybe_lose()

    def abort(self) -> None:
        """Reset the connection now (RST); ``connection_lost(None)`` follows."""
        self._force_close(None)

    def _force_close(self, exc: BaseException | None) -> None:
        """Abort, and tell the protocol ``exc`` (asyncio's transports have this too;
        its SSL protocol calls it on a fatal TLS error)."""
        if self._lost:
            return
        self._closing = True
        self._pending = None
        self._pending_size = 0
        if self._tcb.state is not State.CLOSED:
            self._tcb.abort()
            self._host.kick()
        self._lose(exc)

    def _fatal(self, exc: BaseException, message: str) -> None:
        self._report(message, exc)
        self._force_close(exc)

    def _report(self, message: str, exc: BaseException) -> None:
        if isinstance(exc, OSError):
            log.debug("%r: %s", self, message, exc_info=exc)
            return
        self._loop.call_exception_handler({
            "message": f"Fatal error on transport: {message}",
            "exception": exc,
            "transport": self,
            "protocol": self._protocol,
        })

    def _maybe_lose(self) -> None:
        """Call connection_lost once the connection is over for the application."""
        if self._lost:
            return
        if self._terminated:
            if self._error is not None and self._tcb.recv_buffered and not self._closing \
                    and (self._reading_paused or self._protocol is None):
                return  # what arrived before the reset is delivered first
            self._lose(self._error)
        elif self._closing and self._tcb_closed and self._fin_acked:
            self._lose(None)

    def _lose(self, exc: BaseException | None) -> None:
        self._lost = True
        self._closing = True
        if self._delivery is not None:
            self._delivery.cancel()
            self._delivery = None
        self._release()
        self._loop.call_soon(self._call_connection_lost, exc)

    def _release(self) -> None:
        """Unlink from the TCB and the network (the TCB may linger in TIME-WAIT)."""
        if self._tcb.user is self:
            self._tcb.user = None
        self._host.forget(self)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        protocol = self._protocol
        try:
            if protocol is not None:
                if exc is not None and not isinstance(exc, Exception):
                    exc = ConnectionAbortedError(errno.ECONNABORTED, repr(exc))
                protocol.connection_lost(exc)
        finally:
            self._protocol = None
            future = self._lost_future
            if future is not None and not future.done():
                future.set_result(None)
            if self._owner is not None:
                owner, self._owner = self._owner, None
                owner._detach(self)

    async def wait_closed(self) -> None:
        """Wait until ``connection_lost`` has been called (not part of asyncio's API;
        used to drain connections at shutdown)."""
        if self._lost and self._protocol is None:
            return
        if self._lost_future is None:
            self._lost_future = self._loop.create_future()
        await asyncio.shield(self._lost_future)

    # ------------------------------------------------------------ protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[return-value]

    @property
    def tcb(self) -> Tcb:
        """The connection's TCB (for inspection; use the transport's methods to act)."""
        return self._tcb

    @property
    def lost(self) -> bool:
        """True once ``connection_lost`` has been called or scheduled."""
        return self._lost


__all__ = ["TcpTransport", "TransportHost", "error_for"]
