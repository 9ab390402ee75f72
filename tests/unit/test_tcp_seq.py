"""Sequence-number arithmetic modulo 2**32 (RFC 9293 3.4, RFC 1982 serial numbers)."""

from __future__ import annotations

import pytest

from tcpstack.tcp.seq import (
    MASK,
    seq_add,
    seq_diff,
    seq_ge,
    seq_gt,
    seq_in_window,
    seq_le,
    seq_lt,
    seq_max,
)

TOP = 2**32 - 1


def test_seq_add_wraps_past_2_32() -> None:
    """RFC 9293 3.4: all arithmetic on sequence numbers is modulo 2**32."""
    assert seq_add(TOP, 1) == 0
    assert seq_add(TOP - 9, 20) == 10
    assert seq_add(5, -10) == 2**32 - 5
    assert seq_add(0, 2**32) == 0


@pytest.mark.parametrize(
    ("a", "b", "d"),
    [
        (10, 5, 5),
        (5, 10, -5),
        (3, TOP - 2, 6),  # a has wrapped, b has not: a is 6 ahead
        (TOP - 2, 3, -6),
        (0, TOP, 1),
        (2**31 - 1, 0, 2**31 - 1),
        (2**31, 0, -(2**31)),  # the most negative distance
    ],
)
def test_seq_diff_is_signed_distance_across_wrap(a: int, b: int, d: int) -> None:
    """RFC 9293 3.4: the distance is taken modulo 2**32, as a signed 32-bit value."""
    assert seq_diff(a, b) == d
    assert seq_add(b, d) == a


@pytest.mark.parametrize(("lo", "hi"), [(1, 2), (TOP, 0), (TOP - 100, 100), (0, 2**31 - 1),
                                        (2**31 + 6, 5)])
def test_comparisons_across_wrap(lo: int, hi: int) -> None:
    """RFC 9293 3.4: "=<" means less than or equal modulo 2**32 (lo precedes hi)."""
    assert seq_lt(lo, hi) and not seq_lt(hi, lo)
    assert seq_le(lo, hi) and not seq_le(hi, lo)
    assert seq_gt(hi, lo) and not seq_gt(lo, hi)
    assert seq_ge(hi, lo) and not seq_ge(lo, hi)
    assert seq_max(lo, hi) == hi and seq_max(hi, lo) == hi


@pytest.mark.parametrize("a", [0, 1, 2**31, TOP])
def test_comparisons_equal(a: int) -> None:
    """RFC 9293 3.4: a number is <= and >= itself but not < or >."""
    assert seq_le(a, a) and seq_ge(a, a)
    assert not seq_lt(a, a) and not seq_gt(a, a)
    assert seq_diff(a, a) == 0


def test_seq_in_window_across_wrap() -> None:
    """RFC 9293 3.10.7.4: RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND, with a window spanning 2**32."""
    start, size = TOP - 9, 20  # covers TOP-9 .. TOP and 0 .. 9
    assert seq_in_window(start, start, size)
    assert seq_in_window(TOP, start, size)
    assert seq_in_window(0, start, size)
    assert seq_in_window(9, start, size)
    assert not seq_in_window(10, start, size)  # right edge is exclusive
    assert not seq_in_window(start - 1, start, size)
    assert not seq_in_window(2**31, start, size)


def test_seq_in_window_zero_size_is_empty() -> None:
    """RFC 9293 3.10.7.4: with RCV.WND = 0 no sequence number is in the window."""
    assert not seq_in_window(100, 100, 0)
    assert not seq_in_window(0, TOP, 0)


def test_mask_is_32_bits() -> None:
    """RFC 9293 3.4: the sequence number space is 0 .. 2**32 - 1."""
    assert MASK == TOP
