"""tools.bench.observe_cost stays runnable: its in-process part on a few connections,
and the flags of each daemon variant (the full run needs root and is in tools/bench)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tcpstack.cli import build_parser
from tools.bench import observe_cost
from tools.bench.client import process_cpu_seconds


def test_the_in_process_measurement_runs_every_observer_mode() -> None:
    result = observe_cost.micro(connections=100, repeats=1)
    assert set(result) == {"off", "light", "full"}
    assert all(0 < seconds < 1 for seconds in result.values())


def test_every_daemon_variant_is_a_valid_serve_command_line(tmp_path: Path) -> None:
    variants = observe_cost.variants(tmp_path)
    baseline, flags0 = next(iter(variants.items()))
    assert baseline == "default (light observer)" and flags0 == []
    for flags in variants.values():
        build_parser().parse_args(["serve", *flags])
    capture = variants["--pcap"]
    assert Path(capture[1]).parent == tmp_path  # not a fixed path outside the run's directory
    assert int(capture[capture.index("--pcap-max-size") + 1]) == observe_cost.CAPTURE_LIMIT


def test_cpu_seconds_reads_this_process_and_is_none_for_a_missing_one() -> None:
    start = process_cpu_seconds(os.getpid())
    assert start is not None and start > 0
    # Burn CPU until the figure moves (it counts in clock ticks), for at most 5 s.
    after = start
    deadline = time.monotonic() + 5.0
    while after == start and time.monotonic() < deadline:
        sum(range(100_000))
        after = process_cpu_seconds(os.getpid()) or start
    assert after > start, "the CPU time did not move while this process computed"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert process_cpu_seconds(gone.pid) is None


def test_connrate_table_gives_medians_and_ratios_to_the_default() -> None:
    rates = {"default (light observer)": [2000.0, 1000.0, 3000.0],
             "--trace-handshakes": [1500.0, 1500.0]}
    cpu = {"default (light observer)": [400e-6, 500e-6, 300e-6],
           "--trace-handshakes": [500e-6, 500e-6]}
    rows = observe_cost.connrate_table(rates, cpu)
    assert rows[2] == "| default (light observer) | 2,000 | 3 | 1.00x | 400 | 1.00x |"
    assert rows[3] == "| --trace-handshakes | 1,500 | 2 | 0.75x | 500 | 1.25x |"
    # A variant with no CPU figure (its server gone before it could be read) says so.
    rows = observe_cost.connrate_table(rates, {"default (light observer)": [400e-6]})
    assert rows[3].endswith("| - | - |")
