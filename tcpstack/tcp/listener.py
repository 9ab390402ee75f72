"""A passive OPEN: a port that accepts connections (RFC 9293 3.10.1, 3.10.7.2)."""

from __future__ import annotations


class Listener:
    """A listening port, on every address of the stack, with its two queues.

    * ``syn_backlog`` bounds the SYN queue: connections still in SYN-RECEIVED
      (``half_open``). When it is full, new SYNs are answered with SYN cookies
      (RFC 4987) or, with cookies off, dropped and counted.
    * ``backlog`` bounds the accept queue: connections established but not yet
      claimed by the application (``pending``). When it is full, new SYNs are
      dropped and counted, as Linux does (the client retransmits).

    * ``fastopen`` bounds the connections opened by TCP Fast Open (RFC 7413 5.1)
      still in SYN-RECEIVED (``tfo_pending``), as the queue length Linux's
      ``TCP_FASTOPEN`` socket option sets; 0: Fast Open is off for this port.
      When it is full, SYNs with a cookie get the ordinary handshake.

    The stack keeps the counts as connections come, are claimed and go.
    """

    __slots__ = ("backlog", "fastopen", "half_open", "pending", "port", "syn_backlog",
                 "tfo_pending")

    def __init__(self, port: int, backlog: int, syn_backlog: int | None = None,
                 fastopen: int = 0) -> None:
        if backlog < 1 or (syn_backlog is not None and syn_backlog < 1):
            raise ValueError("listen queues must hold at least one connection")
        if fastopen < 0:
            raise ValueError("the Fast Open queue length cannot be negative")
        self.port = port
        self.backlog = backlog
        self.syn_backlog = max(backlog, 256) if syn_backlog is None else syn_backlog
        self.half_open = 0
        self.pending = 0
        self.fastopen = fastopen
        self.tfo_pending = 0

    @property
    def syn_queue_full(self) -> bool:
        return self.half_open >= self.syn_backlog

    @property
    def accept_queue_full(self) -> bool:
        return self.pending >= self.backlog

    @property
    def fastopen_full(self) -> bool:
        return self.tfo_pending >= self.fastopen

    def __repr__(self) -> str:
        tfo = f" fastopen={self.fastopen} tfo_pending={self.tfo_pending}" \
            if self.fastopen else ""
        return (f"<Listener :{self.port} backlog={self.backlog} pending={self.pending} "
                f"syn_backlog={self.syn_backlog} half_open={self.half_open}{tfo}>")
