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

    The stack keeps both counts as connections come, are claimed and go.
    """

    __slots__ = ("backlog", "half_open", "pending", "port", "syn_backlog")

    def __init__(self, port: int, backlog: int, syn_backlog: int | None = None) -> None:
        if backlog < 1 or (syn_backlog is not None and syn_backlog < 1):
            raise ValueError("listen queues must hold at least one connection")
        self.port = port
        self.backlog = backlog
        self.syn_backlog = max(backlog, 256) if syn_backlog is None else syn_backlog
        self.half_open = 0
        self.pending = 0

    @property
    def syn_queue_full(self) -> bool:
        return self.half_open >= self.syn_backlog

    @property
    def accept_queue_full(self) -> bool:
        return self.pending >= self.backlog

    def __repr__(self) -> str:
        return (f"<Listener :{self.port} backlog={self.backlog} pending={self.pending} "
                f"syn_backlog={self.syn_backlog} half_open={self.half_open}>")
