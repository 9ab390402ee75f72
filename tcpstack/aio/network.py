"""A stack bound to a packet device on an event loop: the library's entry object."""

from __future__ import annotations

import asyncio
import logging

from tcpstack.aio.runtime import FatalHandler, PacketDevice, StackRuntime
from tcpstack.aio.streams import DEFAULT_LIMIT, ClientConnectedCallback, Connection, Server
from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp import events as ev
from tcpstack.tcp.tcb import Tcb

log = logging.getLogger("tcpstack.network")


class Network:
    """Runs a :class:`~tcpstack.stack.Stack` over ``device`` on the running loop.

    Create it inside a coroutine (it binds to the running loop) with a device that
    is already open and configured: interface setup with pyroute2 must happen
    before the loop starts or in a worker thread (see :mod:`tcpstack.link.tun`).
    """

    def __init__(self, device: PacketDevice, config: StackConfig | None = None, *,
                 stack: Stack | None = None, on_fatal: FatalHandler | None = None) -> None:
        """``on_fatal`` is called once if the device fails for good (see
        :class:`~tcpstack.aio.runtime.StackRuntime`)."""
        self.loop = asyncio.get_running_loop()
        self.stack = stack or Stack(config)
        self.device = device
        self.runtime = StackRuntime(self.stack, device, self._on_events, self.loop,
                                    on_fatal=on_fatal)
        self._servers: dict[int, Server] = {}
        self._connections: set[Connection] = set()
        self._closed = False
        self.runtime.start()

    # ------------------------------------------------------------ public API

    def start_server(self, callback: ClientConnectedCallback, port: int, *,
                     backlog: int = 128, limit: int = DEFAULT_LIMIT,
                     nodelay: bool = True, syn_backlog: int | None = None) -> Server:
        if self._closed:
            raise RuntimeError("network is closed")
        self.stack.listen(port, backlog, syn_backlog)
        server = Server(self, port, callback, limit, nodelay)
        self._servers[port] = server
        return server

    def connect(self, host: str, port: int, limit: int = DEFAULT_LIMIT,
                nodelay: bool = True) -> Connection:
        if self._closed:
            raise RuntimeError("network is closed")
        tcb = self.stack.connect(host, port, self.loop.time())
        conn = self.register(tcb, limit, nodelay)
        self.runtime.kick()
        return conn

    @property
    def connections(self) -> frozenset[Connection]:
        return frozenset(self._connections)

    @property
    def addresses(self) -> frozenset[int]:
        return self.stack.addresses

    def kick(self) -> None:
        self.runtime.kick()

    async def aclose(self, grace: float = 2.0) -> None:
        """Stop listening, close every connection (FIN), wait up to ``grace`` seconds,
        then reset whatever is left and stop driving the device."""
        if self._closed:
            return
        self._closed = True
        for server in list(self._servers.values()):
            server.close()
        conns = list(self._connections)
        for conn in conns:
            conn.writer.close()
        self.runtime.flush_now()
        if conns:
            waits = [asyncio.ensure_future(c.writer.wait_closed()) for c in conns]
            _done, pending = await asyncio.wait(waits, timeout=grace)
            for w in pending:
                w.cancel()
        # Anything still open (peer gone, or a handler that never finished) gets RST,
        # and orphaned TCBs (TIME-WAIT, closing) are dropped with it.
        self.stack.abort_all()
        self.runtime.flush_now()
        self.runtime.stop()

    # ------------------------------------------------------------ internals

    def register(self, tcb: Tcb, limit: int, nodelay: bool = True) -> Connection:
        """Give ``tcb`` its application side (a stream reader and writer)."""
        conn = Connection(self, tcb, limit, nodelay)
        self._connections.add(conn)
        return conn

    def forget(self, conn: Connection) -> None:
        self._connections.discard(conn)

    def unlisten(self, server: Server) -> None:
        if self._servers.get(server.port) is server:
            del self._servers[server.port]
            self.stack.unlisten(server.port)

    def _on_events(self, tcb: Tcb, events: list[ev.Event]) -> None:
        if tcb.user is not None:
            tcb.user.on_events(events)
            return
        if tcb.listener is None:
            return
        # A passive connection with no owner yet: hand it to its server once it is
        # established (and not if it died in SYN-RECEIVED).
        kinds = {type(e) for e in events}
        if ev.Terminated in kinds:
            return
        if ev.Established in kinds:
            server = self._servers.get(tcb.listener.port)
            if server is None or not server.is_serving():
                tcb.abort()
                return
            conn = server._accept(tcb)
            # Deliver the rest of this batch (data, FIN) to the new owner.
            conn.on_events([e for e in events if not isinstance(e, ev.Established)])


__all__ = ["Network"]
