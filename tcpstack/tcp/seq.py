"""Sequence-number arithmetic modulo 2**32 (RFC 9293 3.4).

Sequence numbers wrap, so they are only ever compared through these helpers:
``a`` is "less than" ``b`` when ``b`` lies less than 2**31 ahead of ``a``.
"""

from __future__ import annotations

from typing import Final

MASK: Final = 0xFFFFFFFF
_HALF: Final = 0x80000000


def seq_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32."""
    return (a + n) & MASK


def seq_diff(a: int, b: int) -> int:
    """The signed distance ``a - b`` in the range [-2**31, 2**31)."""
    d = (a - b) & MASK
    return d - 0x100000000 if d & _HALF else d


def seq_lt(a: int, b: int) -> bool:
    return ((a - b) & MASK) & _HALF != 0


def seq_le(a: int, b: int) -> bool:
    return a == b or ((a - b) & MASK) & _HALF != 0


def seq_gt(a: int, b: int) -> bool:
    return ((b - a) & MASK) & _HALF != 0


def seq_ge(a: int, b: int) -> bool:
    return a == b or ((b - a) & MASK) & _HALF != 0


def seq_in_window(s: int, start: int, size: int) -> bool:
    """``start <= s < start + size`` in sequence space."""
    return ((s - start) & MASK) < size


def seq_max(a: int, b: int) -> int:
    return b if seq_lt(a, b) else a
