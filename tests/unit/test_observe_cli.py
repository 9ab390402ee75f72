"""The observation flags of ``tcpstack serve`` and the ``ss``/``trace`` commands: one-line
errors, and no optional dependency imported unless its flag is given."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tcpstack import cli


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = int(e.code or 0)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(("argv", "message"), [
    (["serve", "--workers", "2", "--pcap", "x.pcap"], "one worker only"),
    (["serve", "--workers", "2", "--trace-handshakes"], "one worker only"),
    (["serve", "--metrics", "10.0.0.2"], "expected ADDR:PORT"),
    (["serve", "--dashboard", "nohost:80"], "invalid IPv4 address"),
    (["serve", "--metrics", "127.0.0.1:70000"], "out of range"),
    (["serve", "--pcap", "x", "--pcap-max-size", "100"], "at least 4096"),
    (["serve", "--metrics", "127.0.0.1:9100", "--dashboard", "127.0.0.1:9100"],
     "cannot share"),
    (["serve", "--pcap-format", "erf"], "invalid choice"),
    (["ss", "--state", "establshed"], "unknown state"),
])
def test_bad_observation_flags_are_one_line_errors_with_status_2(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(argv, capsys)
    assert code == 2
    assert err.startswith("tcpstack: error: ") and message in err
    assert err.count("\n") == 1


def test_ss_without_a_daemon_says_so_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["ss", "--socket", str(tmp_path / "none.sock")], capsys)
    assert code == 1
    assert err.startswith("tcpstack: error: no daemon") and err.count("\n") == 1


def test_trace_without_a_daemon_says_so_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["trace", "--socket", str(tmp_path / "none.sock")], capsys)
    assert code == 1 and err.startswith("tcpstack: error: no daemon")


def test_the_daemon_imports_no_metrics_or_browser_package_without_their_flags() -> None:
    code = ("import sys, tcpstack.cli as c\n"
            "c.build_parser().parse_args(['serve', '--pcap', 'x.pcapng'])\n"
            "bad = [m for m in ('prometheus_client', 'selenium', 'dpkt') if m in sys.modules]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_metrics_without_prometheus_client_is_a_one_line_error(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def no_prometheus(name: str, *args: object) -> object:
        return None if name == "prometheus_client" else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", no_prometheus)
    code, err = run(["serve", "--metrics", "127.0.0.1:9100"], capsys)
    assert code == 2 and "needs the prometheus-client package" in err


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare(1) to enter a new network namespace")
def test_default_control_socket_differs_per_network_namespace() -> None:
    """Interface names are per namespace, so two daemons owning ``tcpstack0`` in two
    namespaces must not share a control socket; in the machine's own namespace the
    name stays the plain one."""
    from tcpstack.observe.control import default_socket_path

    code = ("from tcpstack.observe.control import default_socket_path as p; "
            "print(p('tcpstack0'))")
    inside = [subprocess.run(["unshare", "-n", sys.executable, "-c", code], check=True,
                             capture_output=True, text=True).stdout.strip()
              for _ in range(2)]
    mine = default_socket_path("tcpstack0")
    assert mine.name in ("tcpstack0.sock",
                         f"tcpstack0@netns-{os.stat('/proc/self/ns/net').st_ino}.sock")
    assert inside[0] != inside[1]  # two fresh namespaces, two sockets
    assert all("tcpstack0@netns-" in p for p in inside)
    assert str(mine) not in inside
