"""IPv4 fragment reassembly (RFC 791 3.2, RFC 815) with strict bounds.

Fragments are untrusted and cheap to send, so reassembly is the classic place
for a stack to be overwhelmed (fragment floods, "teardrop" overlaps, oversized
"ping of death" datagrams). :class:`Reassembler` holds partial datagrams keyed
by (source, destination, protocol, identification) and enforces:

* **memory**: each fragment is charged its payload plus :data:`FRAGMENT_OVERHEAD`
  bytes of bookkeeping against a total budget and a per-source budget (a quarter
  of the total), so one source cannot take all of it; a fragment that does not fit
  is dropped (``ipv4_frag_memory_full``, ``ipv4_frag_source_limit``) -- the
  partial datagrams already held are kept, as Linux does above ipfrag_high_thresh;
* **time**: a datagram not complete :attr:`Reassembler.timeout` seconds after its
  first fragment arrived is discarded (``ipv4_frag_timeout``; RFC 791's timer,
  Linux's ipfrag_time of 30 s), checked lazily as fragments arrive (and by
  :meth:`Reassembler.expire`);
* **shape**: a datagram may not exceed 65535 bytes (``ipv4_frag_too_big``), every
  fragment but the last carries a non-zero multiple of 8 bytes
  (``ipv4_frag_bad_length``), at most :data:`MAX_FRAGMENTS` fragments make one
  datagram (``ipv4_frag_too_many``), and every fragment must agree with the
  datagram's end once the last fragment told it (``ipv4_frag_inconsistent``);
* **overlap**: a fragment overlapping one already held discards the whole
  datagram (``ipv4_frag_overlap``), as RFC 5722 requires for IPv6 and Linux does
  for IPv4; an exact duplicate (same offset and length) is only dropped
  (``ipv4_frag_duplicate``).

Nothing here performs I/O or reads the clock: every call takes ``now``.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections import Counter

from tcpstack.wire import checksum as _ck
from tcpstack.wire.errors import BytesLike

FRAGMENT_OVERHEAD = 64  # bytes charged per fragment held, besides its payload
MAX_DATAGRAM = 65535  # RFC 791: the total length field's limit, header included
MAX_FRAGMENTS = 128  # a 64 KiB datagram over a 576-byte MTU needs 120

FragKey = tuple[int, int, int, int]  # (source, destination, protocol, identification)


class _Partial:
    """One datagram being reassembled: its fragments in offset order."""

    __slots__ = ("charge", "created", "end", "header", "pieces", "received", "source")

    def __init__(self, source: int, now: float) -> None:
        self.source = source
        self.created = now
        self.pieces: list[tuple[int, int, bytes]] = []  # (start, end, payload)
        self.end: int | None = None  # the payload's length, once the last fragment came
        self.received = 0
        self.charge = 0
        self.header: bytes | None = None  # the first fragment's IP header


class Reassembler:
    """Bounded IPv4 reassembly; ``counters`` receives one count per drop, by reason."""

    def __init__(self, counters: Counter[str], memory: int, timeout: float) -> None:
        self.counters = counters
        self.memory = memory
        self.per_source = max(memory // 4, MAX_DATAGRAM + FRAGMENT_OVERHEAD)
        self.timeout = timeout
        self.used = 0
        self._by_source: dict[int, int] = {}
        self._partials: dict[FragKey, _Partial] = {}  # oldest first

    def __len__(self) -> int:
        return len(self._partials)

    def add(self, key: FragKey, header: BytesLike, offset: int, more: bool,
            payload: BytesLike, now: float) -> tuple[bytes, bytes] | None:
        """One fragment: ``offset`` in bytes, ``more`` its MF flag, ``header`` its IP
        header. Returns the complete datagram as (header, payload) -- the first
        fragment's header with the fragment fields cleared and the total length and
        checksum fixed -- or None while it is incomplete or was dropped."""
        self.expire(now)
        counters = self.counters
        counters["ipv4_fragments"] += 1
        n = len(payload)
        end = offset + n
        if end + len(header) > MAX_DATAGRAM:
            counters["ipv4_frag_too_big"] += 1
            return None
        if more and (n == 0 or n % 8):
            counters["ipv4_frag_bad_length"] += 1
            return None
        partial = self._partials.get(key)
        if partial is None:
            partial = _Partial(key[0], now)
            self._partials[key] = partial
        if not more:
            if (partial.end is not None and partial.end != end) or (
                    partial.pieces and partial.pieces[-1][1] > end):
                self._discard(key, partial, "ipv4_frag_inconsistent")
                return None
            partial.end = end
        elif partial.end is not None and end > partial.end:
            self._discard(key, partial, "ipv4_frag_inconsistent")
            return None
        pieces = partial.pieces
        i = bisect_left(pieces, (offset,))
        if i < len(pieces) and pieces[i][0] == offset and pieces[i][1] == end:
            counters["ipv4_frag_duplicate"] += 1
            return None
        if (i > 0 and pieces[i - 1][1] > offset) or (i < len(pieces) and pieces[i][0] < end):
            self._discard(key, partial, "ipv4_frag_overlap")
            return None
        if len(pieces) >= MAX_FRAGMENTS:
            self._discard(key, partial, "ipv4_frag_too_many")
            return None
        charge = n + FRAGMENT_OVERHEAD
        if self.used + charge > self.memory:
            counters["ipv4_frag_memory_full"] += 1
            self._forget_if_empty(key, partial)
            return None
        held = self._by_source.get(partial.source, 0)
        if held + charge > self.per_source:
            counters["ipv4_frag_source_limit"] += 1
            self._forget_if_empty(key, partial)
            return None
        pieces.insert(i, (offset, end, bytes(payload)))
        partial.received += n
        partial.charge += charge
        self.used += charge
        self._by_source[partial.source] = held + charge
        if offset == 0:
            partial.header = bytes(header)
        if partial.end is None or partial.received != partial.end or partial.header is None:
            return None
        self._release(key, partial)
        counters["ipv4_reassembled"] += 1
        data = b"".join(p[2] for p in pieces)
        return _whole_header(partial.header, len(data)), data

    def expire(self, now: float) -> None:
        """Discard datagrams older than the timeout (oldest first, so this stops at
        the first one still in time)."""
        partials = self._partials
        while partials:
            key = next(iter(partials))
            partial = partials[key]
            if now - partial.created < self.timeout:
                return
            self._discard(key, partial, "ipv4_frag_timeout")

    def _discard(self, key: FragKey, partial: _Partial, reason: str) -> None:
        self.counters[reason] += 1
        self._release(key, partial)

    def _forget_if_empty(self, key: FragKey, partial: _Partial) -> None:
        if not partial.pieces:
            self._release(key, partial)

    def _release(self, key: FragKey, partial: _Partial) -> None:
        del self._partials[key]
        self.used -= partial.charge
        left = self._by_source[partial.source] - partial.charge \
            if partial.source in self._by_source else 0
        if left > 0:
            self._by_source[partial.source] = left
        else:
            self._by_source.pop(partial.source, None)


_H = struct.Struct("!H")


def _whole_header(header: bytes, payload_len: int) -> bytes:
    """The first fragment's header as the whole datagram's: no MF, offset 0 (DF kept),
    the total length of the reassembled datagram, the checksum recomputed."""
    out = bytearray(header)
    _H.pack_into(out, 2, len(out) + payload_len)
    out[6] &= 0x40
    out[7] = 0
    out[10] = out[11] = 0
    _H.pack_into(out, 10, _ck.checksum(out))
    return bytes(out)


__all__ = ["FRAGMENT_OVERHEAD", "MAX_DATAGRAM", "MAX_FRAGMENTS", "Reassembler"]
