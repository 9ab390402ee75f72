"""A connection's byte buffers: what the application queued, and what it may read.

:class:`SendBuffer` holds every byte from SND.UNA on, sent or not (RFC 9293 3.3.1
figure 3: the bytes between SND.UNA and SND.NXT await acknowledgment, those after
SND.NXT await sending). Segments carry views of it, not copies; while such a view
is alive the bytearray cannot be resized, so appending and releasing fall back
to a copy (the views keep the old bytes, which is what they must send).

:class:`ReceiveBuffer` holds in-order data the application has not read yet; the
receive window is the space it leaves (RFC 9293 3.8.6.2.2).
"""

from __future__ import annotations

from tcpstack.tcp.seq import seq_add


class SendBuffer:
    """Unacknowledged and unsent bytes; ``seq`` is the sequence number of the first."""

    __slots__ = ("data", "seq")

    def __init__(self, seq: int) -> None:
        self.data = bytearray()
        self.seq = seq

    def __len__(self) -> int:
        return len(self.data)

    @property
    def end_seq(self) -> int:
        """The sequence number after the last queued byte."""
        return seq_add(self.seq, len(self.data))

    def append(self, chunk: bytes | bytearray | memoryview) -> None:
        try:
            self.data += chunk
        except BufferError:
            # A segment still holds a view of the buffer: grow a copy instead.
            self.data = self.data + chunk

    def view(self, offset: int, n: int) -> memoryview:
        """``n`` bytes from ``offset`` (bytes after ``seq``), without copying."""
        return memoryview(self.data)[offset:offset + n]

    def release(self, n: int) -> int:
        """Forget the first ``n`` bytes (they were acknowledged); return how many went."""
        k = min(n, len(self.data))
        if k > 0:
            try:
                del self.data[:k]
            except BufferError:
                self.data = self.data[k:]  # a segment still holds a view
            self.seq = seq_add(self.seq, k)
        return max(k, 0)

    def clear(self) -> None:
        self.data = bytearray()


class ReceiveBuffer:
    """In-order received bytes not yet read by the application."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = bytearray()

    def __len__(self) -> int:
        return len(self.data)

    def __bool__(self) -> bool:
        return bool(self.data)

    def append(self, chunk: bytes | bytearray | memoryview) -> None:
        self.data += chunk

    def take(self, n: int = -1) -> bytes:
        """Remove and return up to ``n`` bytes (all of them if ``n`` is negative)."""
        buf = self.data
        if n < 0 or n >= len(buf):
            out = bytes(buf)
            buf.clear()
        else:
            out = bytes(buf[:n])
            del buf[:n]
        return out

    def take_into(self, buffer: bytearray | memoryview) -> int:
        """Move up to ``len(buffer)`` bytes into ``buffer`` (one copy); return how many."""
        buf = self.data
        n = min(len(buffer), len(buf))
        if n <= 0:
            return 0
        with memoryview(buf) as src, memoryview(buffer) as dst:
            dst[:n] = src[:n]
        del buf[:n]
        return n

    def find(self, sub: bytes, start: int = 0) -> int:
        """Index of ``sub`` at or after ``start`` in the unread bytes, or -1."""
        return self.data.find(sub, start)

    def clear(self) -> None:
        self.data.clear()
