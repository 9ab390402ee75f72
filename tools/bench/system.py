"""How busy this machine is: the benchmark waits for quiet before each measurement.

The machine may be shared (other test runs, builds). Before every measured
repetition the benchmark waits, for a bounded time, until the CPUs are nearly
idle -- its own servers are idle then -- and records the background load it
saw, so that a disturbed run can be recognised in the results.
"""

from __future__ import annotations

import time
from pathlib import Path


def cpu_times() -> tuple[int, int]:
    """(total, idle + iowait) jiffies over all CPUs, from ``/proc/stat``."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields[:8]]
    return sum(values), values[3] + values[4]


def busy_fraction(interval: float) -> float:
    """Fraction (0..1) of all CPU time that was busy during the next ``interval`` seconds."""
    total0, idle0 = cpu_times()
    time.sleep(interval)
    total1, idle1 = cpu_times()
    total = total1 - total0
    return 0.0 if total <= 0 else 1.0 - (idle1 - idle0) / total


def wait_quiet(max_wait: float, threshold: float = 0.10,
               interval: float = 0.3) -> tuple[bool, float, float]:
    """Wait until a sample of ``interval`` s is below ``threshold`` busy, at most ``max_wait`` s.

    Returns (quiet, seconds waited, last busy fraction).
    """
    start = time.monotonic()
    busy = busy_fraction(interval)
    while busy > threshold and time.monotonic() - start < max_wait:
        busy = busy_fraction(interval)
    return busy <= threshold, time.monotonic() - start, busy
