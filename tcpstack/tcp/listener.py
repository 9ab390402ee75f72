"""A passive OPEN: a port that accepts connections (RFC 9293 3.10.1, 3.10.7.2)."""

from __future__ import annotations


class Listener:
    """A listening port, on every address of the stack.

    ``backlog`` bounds connections still in SYN-RECEIVED; SYNs beyond it are
    dropped and counted (the client retransmits), as Linux does without SYN cookies.
    ``half_open`` is kept by the stack as connections enter and leave SYN-RECEIVED.
    """

    __slots__ = ("backlog", "half_open", "port")

    def __init__(self, port: int, backlog: int) -> None:
        self.port = port
        self.backlog = backlog
        self.half_open = 0

    def __repr__(self) -> str:
        return f"<Listener :{self.port} backlog={self.backlog} half_open={self.half_open}>"
