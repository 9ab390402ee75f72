"""The benchmark runs one congestion control on both stacks (``--congestion-control``,
by default the kernel's own default): the servers are started with it, and the report
says which one it was. Nothing is run here; the smoke test in
tests/integration/test_bench_smoke.py runs the tool."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.bench import cli, report
from tools.bench.settings import TINY
from tools.bench.targets import COMPARABLE_ALGORITHMS, KernelTarget, TcpstackTarget


def _after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def _targets() -> tuple[TcpstackTarget, KernelTarget]:
    tcp, kern = TcpstackTarget(TINY, Path()), KernelTarget(TINY, Path())
    tcp.host, tcp.host6 = "10.0.0.2", "fd00::2"
    kern.host, kern.host6 = "10.9.0.1", "fd09::1"
    return tcp, kern


def test_without_a_choice_each_server_runs_its_own_default() -> None:
    for target in _targets():
        assert _after(target.services_argv(), "--congestion-control") == []


@pytest.mark.parametrize("algorithm", ["cubic", "bbr"])
def test_both_servers_are_started_with_the_chosen_algorithm(algorithm: str) -> None:
    tcp, kern = _targets()
    tcp.congestion_control = kern.congestion_control = algorithm
    for target in (tcp, kern):
        assert _after(target.services_argv(), "--congestion-control") == [algorithm]
        # Fast Open's services too; the bbr workload still picks its own, once.
        assert _after(target.tfo_argv(), "--congestion-control") == [algorithm]
        assert _after(target.cc_argv("cubic"), "--congestion-control") == ["cubic"]


def test_the_kernel_name_reno_is_tcpstack_newreno() -> None:
    tcp, kern = _targets()
    tcp.congestion_control = kern.congestion_control = "reno"
    assert _after(tcp.services_argv(), "--congestion-control") == ["newreno"]
    assert _after(kern.services_argv(), "--congestion-control") == ["reno"]
    tcp.web_tls = kern.web_tls = (Path("c.pem"), Path("k.pem"))
    assert _after(tcp.web_argv(), "--congestion-control") == ["newreno"]
    assert _after(kern.web_argv(), "--congestion-control") == ["reno"]


def test_the_default_is_the_kernels_own_when_tcpstack_has_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "kernel_default_congestion_control", lambda: "bbr")
    assert cli._choose_congestion_control("") == ("bbr", "the kernel's default here")
    assert cli._choose_congestion_control("cubic")[0] == "cubic"
    monkeypatch.setattr(cli, "kernel_default_congestion_control", lambda: "htcp")
    algorithm, why = cli._choose_congestion_control("")
    assert algorithm == "cubic" and "'htcp'" in why
    monkeypatch.setattr(cli, "kernel_default_congestion_control", lambda: "")
    assert cli._choose_congestion_control("")[0] == "cubic"


def test_the_option_accepts_only_algorithms_both_stacks_have(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.build_parser().parse_args(["--congestion-control", "bbr"]).congestion_control \
        == "bbr"
    assert set(COMPARABLE_ALGORITHMS) == {"cubic", "bbr", "reno"}
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["--congestion-control", "vegas"])
    assert exc.value.code == 2
    assert "vegas" in capsys.readouterr().err


def test_the_report_names_the_algorithm() -> None:
    doc = {"mode": "quick", "pinned": False, "congestion_control": "bbr",
           "meta": {"date": "2026-12-02 10:00:00 UTC", "cpu": "CPU", "cores": 2,
                    "kernel": "6.18", "python": "3.11", "uvloop": "0.21",
                    "tcpstack_version": "1", "build": "compiled", "git_commit": "abc"},
           "targets": {}, "rows": [], "workloads": []}
    assert report.machine_line(doc).endswith("quick mode, unpinned, bbr on both stacks")
    assert "- congestion control: bbr on tcpstack and the kernel" in report.render(doc)
