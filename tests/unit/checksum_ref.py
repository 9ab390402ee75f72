"""A reference Internet checksum for the wire tests, written as plainly as RFC 1071
describes it (16-bit words, one's-complement sum, carries folded as they come), so
the optimised code in :mod:`tcpstack.wire.checksum` is checked against something
obviously right rather than against itself."""

from __future__ import annotations


def ref_sum(data: bytes) -> int:
    """One's-complement sum of 16-bit big-endian words, folding carries as we go."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total
