"""The packet fuzzer against the running daemon, short: ``python -m tools.fuzz_daemon``.

The tool creates its own namespace, starts ``tcpstack serve`` in it and writes
50,000 random and mutated packets into the TUN's host side, probing with real
kernel clients as it goes. This test runs it as a user would and checks its
verdict and the figures it reports; the full run (1,000,000 packets) is
documented in the README.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netns import REPO_ROOT

pytestmark = pytest.mark.root

PACKETS = 50_000


def test_daemon_survives_fifty_thousand_fuzzed_packets_and_keeps_serving(
        tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.fuzz_daemon", "--packets", str(PACKETS), "--seed", "1",
         "--probe-every", "5000", "--curl-every", "25000", "--max-seconds", "150",
         "--log-dir", str(tmp_path)],
        cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the tool removes its namespace and stops the daemon on SIGTERM
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        pytest.fail("python -m tools.fuzz_daemon took longer than 240 s")
    detail = f"exit {proc.returncode}\nstdout:\n{stdout[-4000:]}\nstderr:\n{stderr[-2000:]}"
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, detail
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["failures"] == [], detail
    assert proc.returncode == 0, detail
    assert result["verdict"] == "pass"
    assert result["packets_sent"] == PACKETS
    # The daemon read (nearly) all of them: the sender paces itself on the TUN queue.
    assert result["tun_read_by_daemon"] >= 0.95 * PACKETS, detail
    assert result["probes_ok"] >= PACKETS // 5000
    assert result["curl_ok"] >= 3
    counters = result["daemon_counters"]
    # Every kind of malformed input was seen and counted by its reason.
    for reason in ("ipv4_bad_checksum", "ipv4_truncated", "ipv4_bad_length", "ipv4_fragments",
                   "ip_bad_version", "ipv6_unsupported", "tcp_bad_checksum",
                   "tcp_bad_option_length", "icmp_bad_checksum", "ip_not_for_us",
                   "ip_bad_source", "udp_port_unreachable", "tcp_syn_accepted"):
        assert counters.get(reason, 0) > 0, f"{reason} never counted: {counters}"
    assert "internal_error" not in counters
    assert counters["ip_received"] >= 0.95 * PACKETS
