"""The Internet checksum (RFC 1071), computed with big-integer arithmetic.

The one's-complement sum of 16-bit words is congruent, modulo 0xFFFF, to the
big-endian integer value of the data (since 2**16 == 1 mod 0xFFFF). Converting a
buffer with ``int.from_bytes`` and taking it mod 0xFFFF therefore computes the
sum in C, far faster than summing words in a Python loop. Values returned by
:func:`partial` are such residues and may simply be added together.
"""

from __future__ import annotations

from typing import Final

from tcpstack.wire.errors import BytesLike as Buffer

_M: Final = 0xFFFF


def partial(data: Buffer) -> int:
    """Return the residue (mod 0xFFFF) of the one's-complement sum of ``data``.

    An odd trailing byte is treated as if padded with a zero byte (RFC 1071).
    The result is 0 only for all-zero data; a non-zero sum that is a multiple of
    0xFFFF is returned as 0xFFFF, so that the two one's-complement zeros stay apart.
    """
    view = memoryview(data)
    value = int.from_bytes(view, "big")
    if len(view) & 1:
        value <<= 8
    return value % _M or (_M if value else 0)


def pseudo_header_ipv4(src: int, dst: int, proto: int, length: int) -> int:
    """Residue of the IPv4 pseudo-header sum (RFC 9293 3.1): addresses, protocol, length."""
    return src + dst + proto + length


def pseudo_header_ipv6(src: int, dst: int, proto: int, length: int) -> int:
    """Residue of the IPv6 pseudo-header sum (RFC 8200 8.1): the 128-bit addresses, the
    32-bit upper-layer length and the next-header value.

    A 128-bit address is congruent, modulo 0xFFFF, to the sum of its eight 16-bit
    words, and the length and next header occupy the last two 32-bit words of the
    pseudo-header, so the residue is the same arithmetic as for IPv4, reduced here
    to keep the numbers small.
    """
    return src % _M + dst % _M + proto + length


def finish(total: int) -> int:
    """Turn a sum of residues into the checksum field value (the complement of the sum)."""
    if total == 0:
        return _M  # all-zero data: the sum is +0, its complement 0xFFFF
    r = total % _M
    # r == 0 for a non-zero total means the sum was 0xFFFF, whose complement is 0.
    return _M - r if r else 0


def checksum(data: Buffer) -> int:
    """The Internet checksum of ``data`` (complement of the one's-complement sum)."""
    return finish(partial(data))


def verify(total: int) -> bool:
    """True if a sum of residues that includes the checksum field is valid (sums to 0xFFFF)."""
    return total != 0 and total % _M == 0
