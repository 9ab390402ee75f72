"""Initial sequence numbers (RFC 6528, RFC 9293 3.4.1)."""

from __future__ import annotations

import ipaddress
import random

import pytest

from tcpstack.stack import Stack, StackConfig
from tcpstack.tcp.isn import TICKS_PER_SECOND, IsnGenerator
from tcpstack.tcp.seq import seq_diff, seq_gt

SECRET = bytes(range(32))
TUPLE = (0x0A000002, 80, 0x0A000001, 40000)


def test_distinct_isns_across_four_tuples() -> None:
    """RFC 6528 3: F() separates the sequence spaces of different 4-tuples."""
    gen = IsnGenerator(SECRET)
    isns = {gen.isn(0x0A000002, 80, 0x0A000001, port, 5.0) for port in range(1024, 1024 + 500)}
    assert len(isns) == 500
    isns2 = {gen.isn(0x0A000002, 80, 0x0A000000 + host, 40000, 5.0) for host in range(1, 201)}
    assert len(isns2) == 200


def test_monotonic_for_one_tuple_as_time_advances() -> None:
    """RFC 9293 3.4.1 / RFC 6528 3: for a fixed 4-tuple the ISN follows the clock M."""
    gen = IsnGenerator(SECRET)
    prev = gen.isn(*TUPLE, 0.0)
    for i in range(1, 200):
        cur = gen.isn(*TUPLE, i * 0.37)
        assert seq_gt(cur, prev)
        prev = cur


def test_same_secret_tuple_and_time_is_deterministic() -> None:
    """RFC 6528 3: ISN = M + F(4-tuple, secret) -- a pure function of its inputs."""
    assert IsnGenerator(SECRET).isn(*TUPLE, 12.5) == IsnGenerator(SECRET).isn(*TUPLE, 12.5)


def test_different_secrets_give_different_isns() -> None:
    """RFC 6528 3: the secret key makes ISNs unpredictable to an off-path attacker."""
    a = IsnGenerator(SECRET)
    b = IsnGenerator(bytes(32 - i for i in range(32)))
    assert a.isn(*TUPLE, 1.0) != b.isn(*TUPLE, 1.0)
    assert IsnGenerator().isn(*TUPLE, 1.0) != IsnGenerator().isn(*TUPLE, 1.0)


def test_clock_ticks_every_4_microseconds() -> None:
    """RFC 9293 3.4.1: the ISN clock is bound to a 4 microsecond timer."""
    assert TICKS_PER_SECOND == 250_000
    gen = IsnGenerator(SECRET)
    base = gen.isn(*TUPLE, 0.0)
    assert gen.isn(*TUPLE, 1.0) == (base + 250_000) & 0xFFFFFFFF
    assert gen.isn(*TUPLE, 0.25) == (base + 62_500) & 0xFFFFFFFF
    assert seq_diff(gen.isn(*TUPLE, 0.5 + 8 / 1_000_000), gen.isn(*TUPLE, 0.5)) == 2


def test_clock_wraps_modulo_2_32() -> None:
    """RFC 9293 3.4.1: the 32-bit ISN clock cycles in about 4.55 hours."""
    gen = IsnGenerator(SECRET)
    period = 2**32 / TICKS_PER_SECOND
    assert gen.isn(*TUPLE, 3.0) == gen.isn(*TUPLE, 3.0 + period)


@pytest.mark.parametrize("n", [0, 8, 15, 33])
def test_secret_length_validated(n: int) -> None:
    """RFC 6528 3: the secret key should be at least 128 bits (16 bytes)."""
    with pytest.raises(ValueError, match="16 to 32 bytes"):
        IsnGenerator(bytes(n))


def test_timestamp_offset_is_keyed_by_the_four_tuple_alone() -> None:
    """RFC 7323 7.1: the TSval clock's offset is a secret per-connection value, so
    TSvals reveal neither the host's clock nor the ISN: it depends on the secret and
    the 4-tuple, not on time or the ISN, and differs between 4-tuples."""
    gen = IsnGenerator(SECRET)
    assert gen.ts_offset(*TUPLE) == gen.ts_offset(*TUPLE)
    assert gen.ts_offset(*TUPLE) != IsnGenerator(bytes(32)).ts_offset(*TUPLE)
    offsets = {gen.ts_offset(0x0A000002, 80, 0x0A000001, p) for p in range(1024, 1524)}
    assert len(offsets) == 500
    # Not the ISN's hash: the two keyed functions are independent.
    assert gen.ts_offset(*TUPLE) != gen.offset(*TUPLE)


def test_stack_connections_use_the_keyed_timestamp_offset() -> None:
    """Connections the stack makes take their timestamp offset from its secret; the
    same 4-tuple later (a new incarnation) keeps the same offset while the ISN moves."""
    st = Stack(StackConfig(addresses=(ipaddress.IPv4Address("10.0.0.1"),)),
               isn_secret=SECRET, rng=random.Random(1))
    a = st.connect("10.0.0.2", 80, 1.0, local_port=40000)
    expected = IsnGenerator(SECRET).ts_offset(0x0A000001, 40000, 0x0A000002, 80)
    assert a.ts_offset == expected
    a.abort()
    st.packets_to_send(1.0)
    b = st.connect("10.0.0.2", 80, 50.0, local_port=40000)
    assert b.ts_offset == expected and b.iss != a.iss
