"""tcpstack.counters.Counters: a Counter whose item assignment is the dict's."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from tcpstack.counters import Counters
from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp.limits import standalone

_NAMES = st.sampled_from(["ip_received", "tcp_received", "tcp_syncookie_sent", "x"])


@given(st.lists(st.tuples(_NAMES, st.integers(-3, 1000)), max_size=60))
def test_counts_exactly_as_a_counter(ops: list[tuple[str, int]]) -> None:
    ours, theirs = Counters(), Counter[str]()
    for name, n in ops:
        ours[name] += n
        theirs[name] += n
        assert ours[name] == theirs[name]
    assert dict(ours) == dict(theirs)
    assert ours.most_common() == theirs.most_common()
    assert ours["never counted"] == 0 and "never counted" not in ours


def test_update_adds_counts_as_counter_does() -> None:
    c = Counters({"a": 1})
    c.update({"a": 2, "b": 1})
    assert c == {"a": 3, "b": 1} and c.total() == 4


def test_item_assignment_is_the_dicts_own() -> None:
    """What makes it cheaper than Counter (whose Python __delitem__ puts every
    assignment through a Python-level slot)."""
    assert Counters.__setitem__ is dict.__setitem__
    assert Counters.__delitem__ is dict.__delitem__
    assert "__delitem__" in vars(Counter)  # why this class exists at all


def test_the_stack_and_standalone_connections_count_in_counters() -> None:
    assert type(Stack(StackConfig()).counters) is Counters
    assert type(standalone(1000, 1).counters) is Counters
