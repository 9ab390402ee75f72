"""The simulated throughput table as a regression tripwire, plus sanity properties.

``test_table_matches_checked_in`` regenerates tests/sim/throughput_table.txt in
process and compares it exactly: any change in loss recovery or congestion
control changes some number. If the change is intended, regenerate the file
with ``python -m tools.netsim_table --write`` and commit it with the change.

The other tests check properties that must hold whatever the exact numbers.
No root, no devices, no wall clock: these run everywhere, CI included.
"""

from __future__ import annotations

import os
import sys
from itertools import pairwise
from pathlib import Path

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:  # so that plain `pytest` finds tests.sim and tools
    sys.path.insert(0, str(_REPO_ROOT))

from tests.sim.netsim import Result, simulate  # noqa: E402
from tools import netsim_table as table  # noqa: E402

#: Relative slack for "goodput does not rise with loss": one seed is one sample.
MONOTONE_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def grid() -> dict[table.Cell, Result]:
    """Every cell of the table, simulated once for all the tests of this module (in
    one process per core: the results do not depend on it, and CI has two)."""
    cells = table.grid()
    jobs = min(len(os.sched_getaffinity(0)), 4)
    return dict(zip(cells, table.run_grid(cells, jobs=jobs), strict=True))


def test_table_matches_checked_in(grid: dict[table.Cell, Result]) -> None:
    actual = table.render(list(grid.values()))
    expected = table.TABLE_PATH.read_text() if table.TABLE_PATH.exists() else ""
    if actual != expected:
        pytest.fail(
            "the simulated throughput table changed:\n"
            f"{table.diff(expected, actual)}\n"
            "If this change is intended (e.g. a deliberate change to loss recovery or "
            "congestion control), regenerate the table with\n"
            "    python -m tools.netsim_table --write\n"
            "and commit tests/sim/throughput_table.txt with it.",
            pytrace=False,
        )


def test_grid_covers_loss_recovery() -> None:
    cells = table.grid()
    for cc in ("newreno", "cubic"):
        for loss in (0.01, 0.05):
            assert any(c.cc == cc and c.loss == loss and c.sack for c in cells)
            assert any(c.cc == cc and c.loss == loss and c.rtt == 0.1 for c in cells)


def test_every_cell_delivered_byte_exact(grid: dict[table.Cell, Result]) -> None:
    for cell, r in grid.items():
        assert r.failure is None, f"{cell}: {r.failure}"
        assert r.delivered_ok, f"{cell}: the server did not read exactly the bytes sent"
        assert r.closed_cleanly, cell
        assert r.completion_time is not None and r.completion_time > 0, cell
        assert r.size == table.SIZE


def test_goodput_does_not_rise_with_loss(grid: dict[table.Cell, Result]) -> None:
    """For the loss-based controllers. Not BBR: its model ignores random loss, and
    on the long path its STARTUP overshoots the 100-packet queue by far (BBR v1 has
    no loss-based exit from STARTUP), so the loss-free run can be the worse one --
    random losses starting packet conservation earlier."""
    for cc in table.ALGORITHMS:
        if cc == "bbr":
            continue
        for rtt in table.RTTS:
            series = [(loss, grid[table.Cell(cc, loss, rtt)].goodput) for loss in table.LOSSES]
            for (loss_a, a), (loss_b, b) in pairwise(series):
                assert b <= a * (1 + MONOTONE_TOLERANCE), (
                    f"{cc}, rtt {rtt * 1000:g} ms: goodput rose from {a * 8e-6:.2f} Mbit/s "
                    f"at {loss_a:.1%} loss to {b * 8e-6:.2f} Mbit/s at {loss_b:.1%}"
                )


def test_clean_short_path_is_near_link_bandwidth(grid: dict[table.Cell, Result]) -> None:
    for cc in table.ALGORITHMS:
        goodput = grid[table.Cell(cc, 0.0, 0.001)].goodput
        assert table.BANDWIDTH / 2 <= goodput <= table.BANDWIDTH, (
            f"{cc}: {goodput * 8e-6:.2f} Mbit/s on a {table.BANDWIDTH * 8e-6:g} Mbit/s link")


def test_sack_is_not_worse_than_without(grid: dict[table.Cell, Result]) -> None:
    for cc in table.ALGORITHMS:
        with_sack = grid[table.Cell(cc, table.OPTION_LOSS, table.OPTION_RTT)].goodput
        without = grid[table.Cell(cc, table.OPTION_LOSS, table.OPTION_RTT, sack=False)].goodput
        assert with_sack >= 0.9 * without, (
            f"{cc} at {table.OPTION_LOSS:.0%} loss, {table.OPTION_RTT * 1000:g} ms: "
            f"SACK {with_sack * 8e-6:.2f} Mbit/s vs no SACK {without * 8e-6:.2f} Mbit/s")


def test_same_seed_same_result(grid: dict[table.Cell, Result]) -> None:
    cell = table.Cell("cubic", 0.05, 0.02)
    assert table.run_cell(cell) == grid[cell]
    assert table.run_cell(cell) == grid[cell]


def _reordering_run(seed: int) -> Result:
    return simulate(loss=0.02, rtt=0.02, size=512 * 1024, jitter=0.01, duplicate=0.02,
                    seed=seed)


def test_reordering_and_duplication_are_deterministic_and_survived() -> None:
    first = _reordering_run(7)
    assert first.delivered_ok and first.failure is None, first
    assert _reordering_run(7) == first
    other = _reordering_run(8)
    assert other.delivered_ok and other.failure is None, other
    assert other != first


def test_packets_held_back_a_whole_rtt_cost_few_retransmissions() -> None:
    """5 % of the packets, both ways, held back by 10 ms on a 10 ms path (the benchmark's impaired
    path without its loss): RACK's reordering window and D-SACK keep the spurious
    retransmissions to a few, and the goodput near the clean path's."""
    clean = simulate(loss=0.0, rtt=0.01, size=4_000_000, cc="cubic", bandwidth=None,
                     queue=None, seed=1)
    held = simulate(loss=0.0, rtt=0.01, size=4_000_000, cc="cubic", bandwidth=None,
                    queue=None, reorder=0.05, seed=1)
    assert clean.delivered_ok and held.delivered_ok, (clean, held)
    reordered = 0.05 * held.client_data_packets
    assert held.retransmits <= 0.1 * reordered, held
    assert held.goodput >= 0.8 * clean.goodput, (held.goodput, clean.goodput)


# ------------------------------------------------------------------- the path
# The path is tcpstack.link.impair.Impairment; its rules are tested in
# tests/unit/test_impair.py. Here: how the simulator uses it.


def test_a_path_without_delay_or_bottleneck_delivers_at_once() -> None:
    """Packets the path hands back immediately are delivered within the same instant
    (a short transfer, queued at once: the client closes only after the handshake)."""
    r = simulate(loss=0.0, rtt=0.0, size=256 * 1024, bandwidth=None, seed=3)
    assert r.delivered_ok and r.failure is None, r
    assert r.retransmits == 0 and r.link_losses == 0
    assert r.completion_time is not None and r.completion_time < 0.1  # delayed ACKs only


def test_queue_tail_drops_show_up_in_the_result() -> None:
    """A small buffer at the bottleneck overflows under slow start; the drops are counted
    and recovered from."""
    r = simulate(loss=0.0, rtt=0.02, size=2 * 1024 * 1024, queue=5, seed=2)
    assert r.delivered_ok and r.failure is None, r
    assert r.tail_drops > 0 and r.link_losses == 0
    assert r.retransmits > 0
