"""The one exception the wire parsers raise."""


class Malformed(Exception):
    """A packet failed a validity check; ``reason`` names the check (a counter name)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


BytesLike = bytes | bytearray | memoryview
"""Anything the parsers and builders accept as packet bytes."""
