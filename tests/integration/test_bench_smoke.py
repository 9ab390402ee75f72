"""Smoke test of the benchmark tool: ``python -m tools.bench --tiny --skip-pytcp --readme F``.

Runs the whole tool (tcpstack over TUN and the kernel reference, each in
namespaces the tool creates) with very small sizes and one repetition, then
checks the exit status, the JSON (every workload -- tcpstack's own services over
IPv4 and IPv6, with TCP Fast Open over a 20 ms RTT path, with CUBIC and BBR through
a bottleneck, and the aiohttp application over HTTP and HTTPS --, both stacks,
positive numbers,
the impairing relay's counters), the Markdown table, the README section the tool
rewrites, and that the tool's namespaces are gone.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netns import REPO_ROOT
from tools.bench import report, settings
from tools.bench.targets import COMPARABLE_ALGORITHMS

pytestmark = pytest.mark.root

# tfo (tiny: 10 short requests per mode over a 20 ms RTT path, after 4 warm-up ones) adds
# about 2.3 s per stack on an idle machine: the server's start with Fast Open on (~0.7 s),
# the relay's path (~0.4 s), the quiet check (0.3 s, up to 1 s on a busy machine) and the
# requests (~1 s).
# bbr (tiny: a 1 s download per algorithm and path, CUBIC then BBR, each through its own
# relay) adds about 11 s per stack on an idle machine: two server starts (~0.7 s each)
# and four downloads of ~2.5 s (the relay's path and the sender's view starting ~0.5 s,
# the quiet check 0.3 s, ten probes of the idle path ~0.5 s, the download 1 s, the
# path's teardown).
WORKLOADS = ("download", "download6", "upload", "echo", "latency", "latency6", "impaired_c2s",
             "impaired_both", "idle", "aiohttp", "https", "tfo", "bbr", "connrate", "flood")
METRICS = {
    "download": ("mbps",),
    "download6": ("mbps",),
    "upload": ("mbps",),
    "echo": ("mbps",),
    "impaired_c2s": ("mbps",),
    "impaired_both": ("mbps",),
    "latency": ("p50_us", "p99_us"),
    "latency6": ("p50_us", "p99_us"),
    "idle": ("answered", "rss_per_conn_bytes", "check_seconds"),
    "connrate": ("rps",),
    "aiohttp": ("rps",),
    "https": ("handshakes_per_s", "mbps"),
    # The flood's outcome (success during it, recovery) is what it measures, and may be
    # zero; that it ran is shown by the SYNs it sent and the fetches before it.
    "flood": ("syn_rate", "baseline_rate", "recovery_s"),
    "tfo": ("plain_ms", "tfo_ms", "saving_ms", "connect_ms", "tfo_syn_data"),
    # Goodput of every algorithm on every path (the queueing delay may be ~0: checked below).
    "bbr": tuple(f"{cc}_{path}_{key}" for cc in settings.BBR_ALGORITHMS
                 for path in settings.BBR_PATHS for key in ("mbps", "base_rtt_ms", "rtt_ms")),
}


def test_every_workload_of_the_tool_is_checked_here() -> None:
    assert set(WORKLOADS) == set(METRICS) == set(settings.WORKLOADS)


def test_bench_tiny_runs_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "results"
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nbefore\n<!-- bench:begin -->\nold figures\n"
                      "<!-- bench:end -->\nafter\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.bench", "--quick", "--tiny", "--skip-pytcp",
         "--out", str(out), "--readme", str(readme)],
        cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=210)
    except subprocess.TimeoutExpired:
        proc.kill()  # the tool's own atexit/finally cleanup cannot run after SIGKILL...
        proc.communicate()
        pytest.fail("python -m tools.bench --tiny took longer than 210 s")
    finally:
        # ...so remove any namespace it left behind (they carry its PID in their name).
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=False).stdout
        leftovers = [ln.split()[0] for ln in listed.splitlines()
                     if ln.startswith(f"tcpbench-{proc.pid}-")]
        for name in leftovers:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
    detail = f"exit {proc.returncode}\nstdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}"
    assert proc.returncode == 0, detail
    assert not leftovers, f"namespaces left behind: {leftovers}"

    doc = json.loads((out / "latest.json").read_text())
    assert doc["mode"] == "tiny"
    # One congestion control on both stacks (the kernel's default here, if tcpstack has it).
    algorithm = doc["congestion_control"]
    assert algorithm in COMPARABLE_ALGORITHMS, algorithm
    for stack in ("tcpstack", "kernel"):
        results = doc["results"][stack]
        for workload in WORKLOADS:
            assert workload in results, f"{stack}: no {workload} result\n{detail}"
            outcome = results[workload]
            assert outcome["status"] == "ok", f"{stack} {workload}: {outcome['reason']}"
            for key in METRICS[workload]:
                value = outcome["summary"].get(key)
                assert isinstance(value, (int, float)) and value > 0, (
                    f"{stack} {workload} {key} = {value!r}")
        assert results["idle"]["summary"]["answered"] == 50
        for workload in ("download", "latency"):
            # The IPv6 variants really went to the server's IPv6 address.
            v4 = results[workload]["params"]["host"]
            v6 = results[f"{workload}6"]["params"]["host"]
            assert ipaddress.ip_address(v4).version == 4, (stack, workload, v4)
            assert ipaddress.ip_address(v6).version == 6, (stack, workload, v6)
        assert results["connrate"]["summary"]["failed"] == 0
        assert results["aiohttp"]["summary"]["failed"] == 0
        assert results["aiohttp"]["params"]["keepalive"] is True
        for workload, impaired in (("impaired_c2s", ("a2b",)), ("impaired_both", ("a2b", "b2a"))):
            relay = results[workload]["reps"][0]["relay"]
            for direction in ("a2b", "b2a"):
                assert relay.get(f"{direction}_written", 0) > 0, (stack, workload, relay)
            # Only the impaired directions delayed packets (5 ms each).
            for direction in ("a2b", "b2a"):
                delayed = relay.get(f"{direction}_delayed", 0) > 0
                assert delayed == (direction in impaired), (stack, workload, relay)
        tfo = results["tfo"]
        # Every timed Fast Open request went in the SYN (its data acknowledged there, as
        # the client's TCP_INFO and its namespace's TCPFastOpenActive both say), and it
        # saved a good part of the path's round trip (20 ms: 10 ms each way, both delayed).
        assert tfo["summary"]["tfo_syn_data"] == tfo["summary"]["tfo_requests"] == 10, tfo
        assert tfo["summary"]["tfo_active"] == 10, tfo
        assert tfo["summary"]["saving_ms"] > settings.TFO_RTT_MS / 2, tfo["summary"]
        relay = tfo["reps"][0]["relay"]
        assert relay.get("a2b_delayed", 0) > 0 and relay.get("b2a_delayed", 0) > 0, relay
        bbr = results["bbr"]
        # The server really ran each algorithm: its own stack says so (ss -ti in the
        # kernel server's namespace, the daemon's control socket for tcpstack).
        assert bbr["params"]["sender_cc"] == {"cubic": ["cubic"], "bbr": ["bbr"]}, bbr["params"]
        assert len(bbr["reps"]) == len(settings.BBR_ALGORITHMS) * len(settings.BBR_PATHS)
        for cc in settings.BBR_ALGORITHMS:
            for path in settings.BBR_PATHS:
                s = bbr["summary"]
                # The probe crossed the 20 ms path (10 ms each way), and a queueing delay
                # (median and p95 minus the idle minimum) was measured during the download.
                assert s[f"{cc}_{path}_base_rtt_ms"] >= settings.BBR_RTT_MS, (stack, s)
                for key in ("qdelay_ms", "qdelay_p95_ms"):
                    value = s.get(f"{cc}_{path}_{key}")
                    assert isinstance(value, float) and value > -1.0, (stack, cc, path, s)
                assert s[f"{cc}_{path}_qdelay_p95_ms"] >= s[f"{cc}_{path}_qdelay_ms"]
        for rep in bbr["reps"]:
            assert rep["probes"] > 0 and rep["sender"]["samples"] > 0, rep
            relay = rep["relay"]
            # The bottleneck and the delay are on the server -> client direction, the
            # delay alone on the other.
            assert relay.get("a2b_delayed", 0) > 0 and relay.get("b2a_delayed", 0) > 0, relay
        lossy = [r for r in bbr["reps"] if r["path"] == "lossy"]
        assert sum(r["relay"].get("b2a_dropped", 0) for r in lossy) > 0, lossy
        flood = results["flood"]["reps"][0]
        # Tiny: 2,000 SYN/s for 1 s, fetches before, during and after it.
        assert flood["syn_sent"] >= 1000 and flood["syn_send_errors"] == 0, flood
        assert flood["baseline_ok"] > 0 and flood["flood_attempts"] > 0, flood
        assert flood["ratio"] >= 0 and flood["recovery_limit"] == 2.0, flood
        # What the flood cost: the machine is busy (the fetch loop at least) before and
        # during it, and the server process was read.
        assert flood["baseline_machine_cores"] > 0 and flood["flood_machine_cores"] > 0, flood
        assert flood["flood_server_cores"] >= 0 and "server_us_per_syn" in flood, flood
    assert all("skipped" in line for line in doc["missing"])

    markdown = (out / "latest.md").read_text()
    header = "| workload | tcpstack | kernel | pytcp | tcpstack/kernel |"
    assert header in markdown
    assert header in stdout
    table = [ln for ln in markdown.splitlines() if ln.startswith("| ")]
    assert len(table) == 1 + len(report.ROWS), table  # the header and one row per metric
    assert all(" FAILED" not in row for row in table), table
    assert list(out.glob("bench-*.json")) and list(out.glob("bench-*.md"))

    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n<!-- bench:begin -->\n")
    assert text.endswith("<!-- bench:end -->\nafter\n")
    assert "old figures" not in text
    assert header in text and f"tiny mode, unpinned, {algorithm} on both stacks" in text
