"""A passive OPEN: a port that accepts connections (RFC 9293 3.10.1, 3.10.7.2)."""

from __future__ import annotations

from collections import deque

#: Seconds the slot of a Fast Open connection that ended in SYN-RECEIVED stays taken
#: (Linux's reset Fast Open requests: 60 s).
FASTOPEN_HOLD = 60.0


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
      When it is full, SYNs with a cookie get the ordinary handshake. One that
      ended before its handshake completed (reset -- its SYN spoofed with a stolen
      cookie, the real client answering with a RST -- or timed out) keeps its slot
      for :data:`FASTOPEN_HOLD` seconds more, as Linux keeps reset Fast Open
      requests: else a flood of such SYNs would pass the bound.

    The stack keeps the counts as connections come, are claimed and go.
    """

    __slots__ = ("_tfo_held", "backlog", "fastopen", "half_open", "pending", "port",
                 "syn_backlog", "tfo_pending")

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
        # When the slots of Fast Open connections that ended early free up, oldest first.
        self._tfo_held: deque[float] | None = None

    @property
    def syn_queue_full(self) -> bool:
        return self.half_open >= self.syn_backlog

    @property
    def accept_queue_full(self) -> bool:
        return self.pending >= self.backlog

    def fastopen_full(self, now: float) -> bool:
        """No room for another Fast Open connection at ``now``."""
        held = self._tfo_held
        if held:
            while held and held[0] <= now:
                held.popleft()
            return self.tfo_pending + len(held) >= self.fastopen
        return self.tfo_pending >= self.fastopen

    def hold_fastopen_slot(self, now: float) -> None:
        """A Fast Open connection ended before its handshake completed: its slot stays
        taken for :data:`FASTOPEN_HOLD` seconds."""
        if self._tfo_held is None:
            self._tfo_held = deque()
        self._tfo_held.append(now + FASTOPEN_HOLD)

    def __repr__(self) -> str:
        tfo = f" fastopen={self.fastopen} tfo_pending={self.tfo_pending}" \
            if self.fastopen else ""
        return (f"<Listener :{self.port} backlog={self.backlog} pending={self.pending} "
                f"syn_backlog={self.syn_backlog} half_open={self.half_open}{tfo}>")
