"""Out-of-order data held until the gap before it fills, and the SACK blocks it implies.

RFC 9293 3.10.7.4 (seventh step) lets a receiver keep segments that arrive ahead
of RCV.NXT; RFC 2018 4 says how to report them: each SACK block is a contiguous
run of queued data, and the first block must be the one containing the most
recently received segment. RFC 2883 adds D-SACK: a duplicate segment is reported
in the first block of the next ACK.
"""

from __future__ import annotations

from tcpstack.tcp.seq import seq_add, seq_diff


class ReassemblyQueue:
    """Queued out-of-order runs, as sorted ``[offset-free start seq, bytearray]`` pairs.

    Runs never overlap or touch: arriving data is trimmed against what is queued
    and merged with its neighbours. ``recent`` lists run start sequence numbers,
    most recently extended first, for the SACK block order of RFC 2018 4.
    """

    __slots__ = ("_runs", "fin_seq", "nbytes", "recent")

    def __init__(self) -> None:
        self._runs: list[tuple[int, bytearray]] = []
        self.recent: list[int] = []
        self.nbytes = 0
        self.fin_seq: int | None = None

    def __len__(self) -> int:
        return len(self._runs)

    def __bool__(self) -> bool:
        return bool(self._runs) or self.fin_seq is not None

    def add(self, seq: int, data: bytes | bytearray | memoryview,
            rcv_nxt: int) -> tuple[int, int] | None:
        """Queue ``data`` starting at ``seq`` (which lies after ``rcv_nxt``).

        Returns a D-SACK block ``(left, right)`` if part of it was already queued
        (RFC 2883 4.1.2), else None.
        """
        start = seq_diff(seq, rcv_nxt)
        end = start + len(data)
        dup: tuple[int, int] | None = None
        runs = self._runs
        # Work in offsets from rcv_nxt so ordinary integer comparisons hold.
        merged_start, merged_end = start, end
        pieces: list[tuple[int, bytes | memoryview | bytearray]] = [(start, data)]
        keep: list[tuple[int, bytearray]] = []
        for rseq, rdata in runs:
            rs = seq_diff(rseq, rcv_nxt)
            re = rs + len(rdata)
            if re < start or rs > end:
                keep.append((rseq, rdata))
                continue
            # Overlapping or adjacent: fold into the new run.
            ov_s, ov_e = max(rs, start), min(re, end)
            if ov_e > ov_s and dup is None:
                dup = (seq_add(rcv_nxt, ov_s), seq_add(rcv_nxt, ov_e))
            pieces.append((rs, rdata))
            merged_start = min(merged_start, rs)
            merged_end = max(merged_end, re)
            self.nbytes -= len(rdata)
            if rseq in self.recent:
                self.recent.remove(rseq)
        buf = bytearray(merged_end - merged_start)
        # Older queued data first, then the new segment over it: identical bytes by
        # the TCP contract, so the order only matters for a misbehaving peer.
        for off, piece in [*sorted(pieces[1:], key=lambda p: p[0]), pieces[0]]:
            buf[off - merged_start : off - merged_start + len(piece)] = piece
        new_seq = seq_add(rcv_nxt, merged_start)
        keep.append((new_seq, buf))
        keep.sort(key=lambda r: seq_diff(r[0], rcv_nxt))
        self._runs = keep
        self.nbytes += len(buf)
        self.recent.insert(0, new_seq)
        return dup

    def pop_ready(self, rcv_nxt: int) -> bytearray | None:
        """Remove and return the data that now continues at ``rcv_nxt``, if any."""
        if not self._runs:
            return None
        rseq, rdata = self._runs[0]
        skip = seq_diff(rcv_nxt, rseq)
        if skip < 0:
            return None
        del self._runs[0]
        self.nbytes -= len(rdata)
        if rseq in self.recent:
            self.recent.remove(rseq)
        if skip >= len(rdata):
            return self.pop_ready(rcv_nxt)
        if skip:
            del rdata[:skip]
        return rdata

    def drop_below(self, rcv_nxt: int) -> None:
        """Forget runs wholly below ``rcv_nxt`` (after in-order data covered them)."""
        while self._runs:
            rseq, rdata = self._runs[0]
            if seq_diff(seq_add(rseq, len(rdata)), rcv_nxt) > 0:
                break
            del self._runs[0]
            self.nbytes -= len(rdata)
            if rseq in self.recent:
                self.recent.remove(rseq)

    def sack_blocks(self, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` SACK blocks, the most recently changed run first (RFC 2018 4)."""
        by_start = {rseq: len(rdata) for rseq, rdata in self._runs}
        blocks: list[tuple[int, int]] = []
        for rseq in self.recent:
            n = by_start.get(rseq)
            if n is not None:
                blocks.append((rseq, seq_add(rseq, n)))
                if len(blocks) == limit:
                    break
        return blocks

    def clear(self) -> None:
        self._runs.clear()
        self.recent.clear()
        self.nbytes = 0
        self.fin_seq = None


class _Released(ReassemblyQueue):
    """The queue of a connection that will receive no more data (TIME-WAIT): empty
    and immutable, so every such connection shares :data:`RELEASED` and holds no
    queue of its own (like Linux's compact timewait sockets)."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a released reassembly queue is immutable")

    def add(self, seq: int, data: bytes | bytearray | memoryview,
            rcv_nxt: int) -> tuple[int, int] | None:
        raise RuntimeError("no data is queued after the connection released its queue")

    def clear(self) -> None:
        """Nothing to clear: it is empty and stays so."""


def _released() -> ReassemblyQueue:
    q = object.__new__(_Released)
    for name, value in (("_runs", []), ("recent", []), ("nbytes", 0), ("fin_seq", None)):
        object.__setattr__(q, name, value)
    return q


#: The shared, immutable, empty queue of connections in TIME-WAIT.
RELEASED: ReassemblyQueue = _released()
