"""Property tests for IPv4 reassembly: any order of non-overlapping fragments gives
the datagram back exactly; any overlap discards it; the memory bound always holds."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpstack.fragments import Reassembler

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = (1, 2, 6, 99)
HDR = bytes(20)


@st.composite
def cut(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, bytes]]]:
    """A datagram and its fragments (offset, bytes): every piece but the last a
    multiple of 8 bytes, in a random order."""
    n_units = draw(st.integers(1, 60))
    tail = draw(st.integers(1, 8))
    data = draw(st.binary(min_size=n_units * 8 + tail - 8, max_size=n_units * 8 + tail - 8))
    bounds = sorted(draw(st.sets(st.integers(1, n_units - 1), max_size=n_units - 1))) \
        if n_units > 1 else []
    edges = [0, *(b * 8 for b in bounds), len(data)]
    pieces = [(edges[i], data[edges[i]:edges[i + 1]]) for i in range(len(edges) - 1)]
    order = draw(st.permutations(pieces))
    return data, list(order)


@FUZZ
@given(cut())
def test_any_order_of_fragments_reassembles_exactly(case: tuple[bytes, list[tuple[int, bytes]]]
                                                     ) -> None:
    data, pieces = case
    r = Reassembler(Counter(), 1 << 20, 30.0)
    results = []
    for off, part in pieces:
        last = off + len(part) == len(data)
        results.append(r.add(KEY, HDR, off, not last, part, 0.0))
    done = [x for x in results if x is not None]
    assert len(done) == 1 and results[-1] is not None
    assert done[0][1] == data
    assert r.used == 0 and len(r) == 0


@FUZZ
@given(cut(), st.data())
def test_any_overlap_discards_the_datagram(case: tuple[bytes, list[tuple[int, bytes]]],
                                           data_: st.DataObject) -> None:
    """A fragment overlapping one already held (and not an exact duplicate of it)
    discards the whole datagram: it is never delivered, whatever follows."""
    data, pieces = case
    if len(pieces) < 2:
        return
    k = data_.draw(st.integers(1, len(pieces) - 1))  # pieces held before the intruder
    r = Reassembler(Counter(), 1 << 20, 30.0)
    for off, part in pieces[:k]:
        last = off + len(part) == len(data)
        assert r.add(KEY, HDR, off, not last, part, 0.0) is None
    off, part = pieces[data_.draw(st.integers(0, k - 1))]
    shift = data_.draw(st.integers(0, (len(part) - 1) // 8)) * 8  # starts inside it
    size = data_.draw(st.integers(1, 4)) * 8
    if shift == 0 and size == len(part):
        size += 8  # not the exact duplicate
    assert r.add(KEY, HDR, off + shift, True, bytes(size), 0.0) is None
    assert r.counters["ipv4_frag_overlap"] + r.counters["ipv4_frag_inconsistent"] == 1
    for off, part in pieces[k:]:
        last = off + len(part) == len(data)
        assert r.add(KEY, HDR, off, not last, part, 0.0) is None


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 15), st.integers(0, 50), st.integers(0, 8191),
                          st.integers(1, 200), st.booleans()), max_size=300))
def test_memory_bound_holds_for_any_fragment_stream(
        frags: list[tuple[int, int, int, int, bool]]) -> None:
    memory = 256 * 1024
    r = Reassembler(Counter(), memory, 30.0)
    for src, ident, unit, units, more in frags:
        r.add((src, 2, 17, ident), HDR, unit * 8, more, bytes(units * 8), 0.0)
        assert 0 <= r.used <= memory
        assert sum(r._by_source.values()) == r.used
