"""tools.bench.observe_cost stays runnable: its in-process part on a few connections,
and the flags of each daemon variant (the full run needs root and is in tools/bench)."""

from __future__ import annotations

from pathlib import Path

from tcpstack.cli import build_parser
from tools.bench import observe_cost


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
