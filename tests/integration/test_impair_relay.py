"""Impaired paths: the independent relay (tools/impair_relay.py) and ``serve --impair``.

The relay tests use :class:`tests.integration.pathsim.PathSim`: a kernel client
in namespace C talks to the daemon in namespace S through two TUNs joined by
the relay, which drops/delays packets with a seeded impairment and reports what
it did. The ``--impair`` tests run the daemon's own fault injector in one
namespace. Sizes are small and timeouts generous: the stack's loss recovery is
still basic (RTO retransmission).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tcpstack.apps.http import iter_pattern
from tests.integration.daemon import (
    STACK_ADDRESS,
    Daemon,
    assert_clean_exit,
    parse_counters,
)
from tests.integration.pathsim import PathSim
from tests.netns import NetNS

LOSSY_TIMEOUT = 120.0


def expected_sha256(n: int) -> str:
    h = hashlib.sha256()
    for chunk in iter_pattern(n):
        h.update(chunk)
    return h.hexdigest()


def ping_stats(output: str) -> tuple[int, int]:
    """(transmitted, received) from ping's summary line."""
    m = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    assert m, output
    return int(m.group(1)), int(m.group(2))


def impairment_counters(log: str) -> dict[str, int]:
    """The daemon's ``impairment counters: a=1, b=2`` shutdown line."""
    for line in reversed(log.splitlines()):
        _, sep, rest = line.partition("impairment counters: ")
        if sep:
            items = (item.strip().partition("=") for item in rest.split(","))
            return {k: int(v) for k, eq, v in items if eq and v.isdigit()}
    return {}


# ----------------------------------------------------------------- the relay


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_clean_relay_path_carries_5_mib_byte_exact_and_ping(tmp_path: Path, ipv6: bool) -> None:
    size = 5 * 1024 * 1024
    with PathSim(tmp_path, ipv6=ipv6) as sim:
        ping = sim.ping(count=3)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert ping_stats(ping.stdout) == (3, 3)
        body = sim.curl(f"/bytes/{size}", timeout=60)
        assert len(body) == size
        assert hashlib.sha256(body).hexdigest() == expected_sha256(size)
        relay = sim.stop_relay()
        assert relay.returncode == 0, relay.log
        c = relay.counters
        # Everything read was written to the other side; nothing was impaired.
        assert c["a2b_read"] == c["a2b_written"] > 0, relay.log
        assert c["b2a_read"] == c["b2a_written"] > size // 1500, relay.log
        assert not any(k.endswith("_dropped") for k in c), relay.log
        assert_clean_exit(sim.stop_daemon())


def test_relay_loss_drops_both_ways_and_a_download_still_completes(tmp_path: Path) -> None:
    size = 2 * 1024 * 1024
    with PathSim(tmp_path, impair="loss=5,seed=1") as sim:
        t0 = time.monotonic()
        body = sim.curl(f"/bytes/{size}", timeout=LOSSY_TIMEOUT)
        elapsed = time.monotonic() - t0
        assert len(body) == size
        assert hashlib.sha256(body).hexdigest() == expected_sha256(size)
        relay = sim.stop_relay()
        assert relay.returncode == 0, relay.log
        c = relay.counters
        assert c.get("a2b_dropped", 0) > 0, relay.log
        assert c.get("b2a_dropped", 0) > 0, relay.log
        # About 5% each way (loose bounds: the packet counts vary from run to run).
        for d in ("a2b", "b2a"):
            assert c[f"{d}_packets"] == c[f"{d}_read"]
            assert c[f"{d}_written"] == c[f"{d}_read"] - c[f"{d}_dropped"]
            assert 0.01 < c[f"{d}_dropped"] / c[f"{d}_packets"] < 0.15, (d, c)
        assert elapsed < LOSSY_TIMEOUT
        assert_clean_exit(sim.stop_daemon())


def test_relay_delay_shows_in_the_round_trip_time(tmp_path: Path) -> None:
    with PathSim(tmp_path, impair_a2b="delay=30ms", impair_b2a="delay=10ms") as sim:
        ping = sim.ping(count=3)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", ping.stdout)
        assert m, ping.stdout
        rtt_min, rtt_max = float(m.group(1)), float(m.group(3))
        assert rtt_min >= 40.0 and rtt_max < 200.0, ping.stdout
        body = sim.curl("/bytes/100000", timeout=60)
        assert hashlib.sha256(body).hexdigest() == expected_sha256(100000)
        relay = sim.stop_relay()
        assert relay.counters["a2b_delayed"] == relay.counters["a2b_packets"] > 0
        assert relay.counters["b2a_delayed"] == relay.counters["b2a_packets"] > 0


def test_relay_refuses_a_missing_interface(netns: NetNS) -> None:
    """It attaches only: a missing TUN is an error (exit 1), nothing gets created."""
    result = subprocess.run(
        [sys.executable, "-m", "tools.impair_relay", "--ns-a", netns.name, "--tun-a", "nope0",
         "--ns-b", netns.name, "--tun-b", "nope1", "--duration-limit", "5"],
        capture_output=True, text=True, timeout=30, env=netns.python_env(),
        cwd=str(Path(__file__).resolve().parents[2]), check=False)
    assert result.returncode == 1, result
    assert "impair_relay: error: no interface 'nope0'" in result.stderr
    assert "nope0" not in netns.ip("-o", "link")


# ----------------------------------------------------------------- serve --impair


def test_serve_impair_loss_ping_loses_and_curl_completes(netns: NetNS, tmp_path: Path) -> None:
    size = 1024 * 1024
    with Daemon(netns, tmp_path / "daemon.log", ["--impair", "loss=20,seed=3"]) as daemon:
        assert "impairing traffic on tcpstack0: loss=20%,seed=3" in daemon.log
        ping = netns.run(["ping", "-n", "-c", "40", "-i", "0.05", "-W", "1", STACK_ADDRESS],
                         capture_output=True, text=True, timeout=60)
        sent, received = ping_stats(ping.stdout)
        assert sent == 40 and 0 < received < 40, ping.stdout
        out = netns.run(["curl", "-sS", "--fail", "-m", str(LOSSY_TIMEOUT), "-o", "-",
                         f"http://{STACK_ADDRESS}/bytes/{size}"],
                        capture_output=True, timeout=LOSSY_TIMEOUT + 10)
        assert out.returncode == 0, out.stderr
        assert hashlib.sha256(out.stdout).hexdigest() == expected_sha256(size)
    result = daemon.result
    assert result is not None
    assert_clean_exit(result)
    imp = impairment_counters(result.log)
    assert imp.get("in_dropped", 0) > 0 and imp.get("out_dropped", 0) > 0, result.log
    # Offloads are off under --impair, so every packet is a single IP packet.
    stack = parse_counters(result.log)
    assert stack["ip_received"] == imp["in_packets"] - imp["in_dropped"], result.log


@pytest.mark.parametrize("spec", ["bogus=1", "loss=200", "delay=5"])
def test_serve_bad_impair_spec_exits_2_with_one_line(netns: NetNS, spec: str) -> None:
    # Run inside the test namespace: a wrongly accepted spec must not create
    # an interface in the machine's own namespace.
    result = netns.run([sys.executable, "-m", "tcpstack", "serve", "--impair", spec],
                       capture_output=True, text=True, timeout=30, env=netns.python_env())
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tcpstack: error: argument --impair:"), result
    assert "tcpstack0" not in netns.ip("-o", "link")
