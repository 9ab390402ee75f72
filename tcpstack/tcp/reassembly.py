"""Out-of-order data held until the gap before it fills, and the SACK blocks it implies.

RFC 9293 3.10.7.4 (seventh step) lets a receiver keep segments that arrive ahead
of RCV.NXT; RFC 2018 4 says how to report them: each SACK block is a contiguous
run of queued data, and the first block must be the one containing the most
recently received segment. RFC 2883 adds D-SACK: a duplicate segment is reported
in the first block of the next ACK.

The peer chooses what arrives, so every operation has a bounded cost whatever
it sends:

* runs (contiguous ranges) are kept sorted and found by binary search, never
  rescanned or re-sorted per segment;
* a run stores its bytes as the pieces that arrived, never copied while queued:
  data that continues a run at its end is appended to its last piece, other data
  becomes a new piece; the pieces are joined once, when the run is delivered;
* new data is trimmed to what is not queued yet (the first copy of a byte wins,
  as in Linux), so queued bytes never overlap;
* the number of pieces is capped (``max_pieces``): a segment that would need
  more is refused with :class:`ReassemblyFull` and dropped by the caller (the
  peer retransmits it), so a flood of tiny segments with tiny holes cannot grow
  the queue's memory beyond the cap;
* nothing recurses.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable

from tcpstack.tcp.seq import seq_add, seq_diff

#: Default bound on queued pieces (see :class:`ReassemblyQueue`).
DEFAULT_MAX_PIECES = 256

#: How many recently changed runs are remembered for the SACK block order.
_RECENT = 8


class ReassemblyFull(Exception):
    """Queueing the segment would exceed the bound on pieces; drop it."""


class _Run:
    """A contiguous range ``[seq, seq + size)`` of queued bytes, as arrived pieces."""

    __slots__ = ("alive", "pieces", "seq", "size")

    def __init__(self, seq: int, piece: bytearray) -> None:
        self.seq = seq
        self.size = len(piece)
        self.pieces = [piece]
        self.alive = True  # False once merged into another run or delivered


class ReassemblyQueue:
    """Queued out-of-order runs (RFC 9293 3.10.7.4) and their SACK blocks (RFC 2018 4).

    ``nbytes`` is the number of queued bytes; ``fin_seq`` the sequence number of a
    FIN that arrived ahead of RCV.NXT, if any.
    """

    __slots__ = ("_pieces", "_recent", "_runs", "fin_seq", "frozen", "max_pieces", "nbytes")

    def __init__(self, max_pieces: int = DEFAULT_MAX_PIECES) -> None:
        self._runs: list[_Run] = []
        self._recent: list[_Run] = []  # most recently changed first
        self._pieces = 0
        self.nbytes = 0
        self.fin_seq: int | None = None
        self.max_pieces = max_pieces
        self.frozen = False  # the shared queue of TIME-WAIT connections: no changes
    def __len__(self) -> int:
        """The number of runs (separate ranges) queued."""
        return len(self._runs)

    def __bool__(self) -> bool:
        return bool(self._runs) or self.fin_seq is not None

    @property
    def pieces(self) -> int:
        return self._pieces

    # ------------------------------------------------------------------ adding

    def add(self, seq: int, data: bytes | bytearray | memoryview,
            rcv_nxt: int) -> tuple[int, int] | None:
        """Queue ``data`` starting at ``seq`` (which lies after ``rcv_nxt``).

        Returns a D-SACK block ``(left, right)`` if part of it was already queued
        (RFC 2883 4.1.2), else None. Raises :class:`ReassemblyFull`, queueing
        nothing, if it would take the queue past ``max_pieces`` pieces.
        """
        if self.frozen:
            raise RuntimeError("no data is queued after a connection released its queue")
        n = len(data)
        if n == 0:
            return None
        start = seq_diff(seq, rcv_nxt)
        end = start + n
        runs = self._runs

        def rel(run: _Run) -> int:
            return seq_diff(run.seq, rcv_nxt)

        # runs[i:j]: the runs that overlap or touch [start, end].
        i = bisect_right(runs, start, key=rel)
        if i and rel(runs[i - 1]) + runs[i - 1].size >= start:
            i -= 1
        j = bisect_right(runs, end, key=rel)
        touched = runs[i:j]
        view = memoryview(data)
        if len(touched) == 1:
            run = touched[0]
            rs = rel(run)
            if rs <= start and rs + run.size == start:
                # The common case: the segment continues a run at its end.
                run.pieces[-1] += view
                run.size += n
                self.nbytes += n
                self._touch(run)
                return None
        gaps = self._gaps(touched, start, end, rel)
        new_pieces = sum(1 for g0, _g1, appends in gaps if not appends)
        if self._pieces + new_pieces > self.max_pieces:
            raise ReassemblyFull
        dup = self._first_overlap(touched, start, end, rel, rcv_nxt)
        if not touched:
            run = _Run(seq, bytearray(view))
            runs.insert(i, run)
        else:
            run = self._merge(touched, gaps, view, start, rcv_nxt, rel)
            runs[i:j] = [run]
        self._pieces += new_pieces
        self.nbytes += sum(g1 - g0 for g0, g1, _ in gaps)
        self._touch(run)
        return dup

    @staticmethod
    def _gaps(touched: list[_Run], start: int, end: int,
              rel: Callable[[_Run], int]) -> list[tuple[int, int, bool]]:
        """The parts of [start, end) not queued yet, as (from, to, appends-to-a-run's-end)."""
        gaps: list[tuple[int, int, bool]] = []
        pos = start
        prev_end: int | None = None
        for run in touched:
            rs = rel(run)
            if pos < rs:
                gaps.append((pos, min(rs, end), prev_end == pos))
            prev_end = rs + run.size
            pos = max(pos, prev_end)
        if pos < end:
            gaps.append((pos, end, prev_end == pos))
        return gaps

    @staticmethod
    def _first_overlap(touched: list[_Run], start: int, end: int, rel: Callable[[_Run], int],
                       rcv_nxt: int) -> tuple[int, int] | None:
        for run in touched:
            rs = rel(run)
            lo, hi = max(rs, start), min(rs + run.size, end)
            if hi > lo:
                return (seq_add(rcv_nxt, lo), seq_add(rcv_nxt, hi))
        return None

    @staticmethod
    def _merge(touched: list[_Run], gaps: list[tuple[int, int, bool]], view: memoryview,
               start: int, rcv_nxt: int, rel: Callable[[_Run], int]) -> _Run:
        """Fold ``touched`` and the new bytes of ``gaps`` into one run, in order."""
        pieces: list[bytearray] = []
        gi = 0
        first = rel(touched[0])
        merged_start = min(first, start)
        for run in touched:
            rs = rel(run)
            while gi < len(gaps) and gaps[gi][0] < rs:
                g0, g1, _ = gaps[gi]
                pieces.append(bytearray(view[g0 - start:g1 - start]))
                gi += 1
            pieces.extend(run.pieces)
            run.alive = False
            while gi < len(gaps) and gaps[gi][0] == rs + run.size and gaps[gi][2]:
                # Continues this run at its end: grow its last piece (amortized O(1)).
                g0, g1, _ = gaps[gi]
                pieces[-1] += view[g0 - start:g1 - start]
                gi += 1
        for g0, g1, _ in gaps[gi:]:
            pieces.append(bytearray(view[g0 - start:g1 - start]))
        last = touched[-1]
        merged_end = max(rel(last) + last.size, gaps[-1][1] if gaps else 0)
        run = _Run(seq_add(rcv_nxt, merged_start), pieces[0])
        run.pieces = pieces
        run.size = merged_end - merged_start
        return run

    def _touch(self, run: _Run) -> None:
        recent = [r for r in self._recent if r.alive and r is not run]
        recent.insert(0, run)
        del recent[_RECENT:]
        self._recent = recent

    # ---------------------------------------------------------------- removing

    def pop_ready(self, rcv_nxt: int) -> bytearray | None:
        """Remove and return the data that now continues at ``rcv_nxt``, if any.

        Runs that in-order data already covered entirely are dropped on the way.
        """
        runs = self._runs
        while runs:
            run = runs[0]
            skip = seq_diff(rcv_nxt, run.seq)
            if skip < 0:
                return None
            del runs[0]
            self._forget(run)
            if skip >= run.size:
                continue
            data = run.pieces[0] if len(run.pieces) == 1 else bytearray().join(run.pieces)
            if skip:
                del data[:skip]
            return data
        return None

    def drop_from(self, seq: int, rcv_nxt: int) -> int:
        """Forget every queued byte at or beyond ``seq`` (the peer's FIN: nothing
        follows it); returns how many bytes went."""
        runs = self._runs
        gone = 0
        limit = seq_diff(seq, rcv_nxt)
        while runs:
            run = runs[-1]
            start = seq_diff(run.seq, rcv_nxt)
            if start >= limit:
                runs.pop()
                self._forget(run)
                gone += run.size
                continue
            over = start + run.size - limit
            if over > 0:
                data = bytearray().join(run.pieces)
                del data[run.size - over:]
                self._pieces -= len(run.pieces) - 1
                self.nbytes -= over
                run.pieces = [data]
                run.size -= over
                gone += over
            break
        return gone

    def drop_below(self, rcv_nxt: int) -> None:
        """Forget runs wholly below ``rcv_nxt`` (after in-order data covered them)."""
        runs = self._runs
        while runs and seq_diff(seq_add(runs[0].seq, runs[0].size), rcv_nxt) <= 0:
            self._forget(runs.pop(0))

    def _forget(self, run: _Run) -> None:
        run.alive = False
        self.nbytes -= run.size
        self._pieces -= len(run.pieces)

    # -------------------------------------------------------------- reporting

    def sack_blocks(self, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` SACK blocks, the most recently changed run first (RFC 2018 4)."""
        blocks: list[tuple[int, int]] = []
        for run in self._recent:
            if run.alive:
                blocks.append((run.seq, seq_add(run.seq, run.size)))
                if len(blocks) == limit:
                    break
        return blocks

    def clear(self) -> None:
        if self.frozen:
            return  # empty, and stays so
        for run in self._runs:
            run.alive = False
        self._runs.clear()
        self._recent.clear()
        self._pieces = 0
        self.nbytes = 0
        self.fin_seq = None


def _released() -> ReassemblyQueue:
    queue = ReassemblyQueue()
    queue.frozen = True
    return queue


#: The shared, empty queue of connections in TIME-WAIT: they will receive no more
#: data, so they hold no queue of their own (like Linux's compact timewait
#: sockets). It refuses every change (``frozen``).
RELEASED: ReassemblyQueue = _released()
