"""The benchmark's IPv6 workloads (``download6``, ``latency6``): wired into the tool,
the report and the URL syntax, without running anything (the smoke test in
tests/integration/test_bench_smoke.py runs them)."""

from __future__ import annotations

from pathlib import Path

from tools.bench import report, settings, workloads
from tools.bench.cli import WORKLOAD_HELP, build_parser
from tools.bench.settings import TINY
from tools.bench.targets import KernelTarget, Target, TcpstackTarget


def test_url_host_brackets_ipv6_only() -> None:
    assert workloads.url_host("10.0.0.2") == "10.0.0.2"
    assert workloads.url_host("fd00::2") == "[fd00::2]"


def test_ipv6_workloads_are_complete_everywhere() -> None:
    for name in settings.IPV6_WORKLOADS:
        assert name in settings.WORKLOADS
        assert name in workloads.RUNNERS
        assert name in WORKLOAD_HELP
        rows = [r for r in report.ROWS if r.workload == name]
        assert rows and all(r.ratio and r.check is None for r in rows), rows
    args = build_parser().parse_args(["--only", "latency6,download6"])
    assert args.only == ["download6", "latency6"]


def test_a_target_without_ipv6_skips_them(tmp_path: Path) -> None:
    target = Target(TINY, tmp_path)
    target.name, target.host = "v4only", "10.1.2.3"
    for name in sorted(settings.IPV6_WORKLOADS):
        out = workloads.run_workload(name, target)
        assert (out.status, out.workload) == ("skipped", name)
        assert "no IPv6 address" in out.reason


def test_report_rows_give_ratios_to_the_kernel_over_ipv6() -> None:
    tcp = workloads.Outcome("download6", summary={"mbps": 50.0})
    kern = workloads.Outcome("download6", summary={"mbps": 200.0})
    rows = report.evaluate({"tcpstack": {"download6": tcp}, "kernel": {"download6": kern}})
    (row,) = [r for r in rows if r["workload"] == "download6"]
    assert row["tcpstack_over_kernel"] == "0.25x"
    assert (row["target"], row["result"]) == ("—", "—")
    table = report.markdown_table(rows, ["download6"])
    assert "bulk download over IPv6" in table and "0.25x" in table


def test_stacks_are_given_ipv6_addresses_of_their_own() -> None:
    # Unique local addresses on distinct subnets; the servers listen on them.
    tcp, kern = TcpstackTarget(TINY, Path()), KernelTarget(TINY, Path())
    tcp.host, tcp.host6 = "10.0.0.2", "fd00::2"
    kern.host, kern.host6 = "10.9.0.1", "fd09::1"
    assert tcp.services_argv()[-4:] == ["--address6", "fd00::2", "--host-address6",
                                        "fd00::1/64"]
    argv = kern.services_argv()
    assert argv[argv.index("--host") + 1] == "10.9.0.1"
    assert argv[argv.index("--host", argv.index("--host") + 1) + 1] == "fd09::1"
