"""The ``tcpstack`` command line: input validation, ``--help`` and ``--version``.

No root is needed. Every ``serve`` invocation runs in a child interpreter whose
``TunDevice.open`` is replaced by a guard that prints a marker and exits 99
instead of creating an interface, so a value the CLI wrongly accepts shows up
as a test failure and never touches the machine's network configuration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tcpstack

REPO_ROOT = Path(__file__).resolve().parents[2]

GUARD_MARKER = "GUARD: TunDevice.open reached"
GUARD_STATUS = 99

_GUARDED_MAIN = f"""
import sys
import tcpstack.link.tun as tun

def _refuse(*args, **kwargs):
    print({GUARD_MARKER!r}, file=sys.stderr, flush=True)
    raise SystemExit({GUARD_STATUS})

tun.TunDevice.open = _refuse
from tcpstack.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    return env


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``tcpstack ARGS...`` with the TUN guard in place."""
    return subprocess.run(
        [sys.executable, "-c", _GUARDED_MAIN, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
        cwd=str(REPO_ROOT),
        check=False,
    )


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m tcpstack ARGS...`` (only for invocations that never serve)."""
    return subprocess.run(
        [sys.executable, "-m", "tcpstack", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
        cwd=str(REPO_ROOT),
        check=False,
    )


def assert_usage_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 2, nothing on stdout, exactly one ``tcpstack: error:`` line on stderr."""
    detail = f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"
    assert GUARD_MARKER not in result.stderr, "invalid input was accepted:\n" + detail
    assert result.returncode == 2, detail
    assert result.stdout == "", detail
    lines = result.stderr.splitlines()
    assert len(lines) == 1, detail
    assert lines[0].startswith("tcpstack: error:"), detail
    for fragment in fragments:
        assert fragment in lines[0], detail


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        pytest.param(("serve", "--no-such-flag"), ("--no-such-flag",), id="unknown-flag"),
        pytest.param((), (), id="missing-command"),
        pytest.param(("frobnicate",), ("frobnicate",), id="unknown-command"),
        pytest.param(("serve", "--address", "10.0.0.256"), ("10.0.0.256",), id="bad-address"),
        pytest.param(("serve", "--address", "not-an-ip"), ("not-an-ip",), id="address-not-ip"),
        pytest.param(
            ("serve", "--host-address", "10.0.0.1"), ("prefix",), id="cidr-missing-prefix"
        ),
        pytest.param(
            ("serve", "--host-address", "10.0.0.1/33"), ("10.0.0.1/33",), id="cidr-bad-prefix"
        ),
        pytest.param(("serve", "--http-port", "65536"), ("65536",), id="port-too-big"),
        pytest.param(("serve", "--echo-port", "-1"), (), id="port-negative"),
        pytest.param(("serve", "--discard-port", "nine"), ("nine",), id="port-not-a-number"),
        pytest.param(("serve", "--mtu", "575"), ("MTU",), id="mtu-too-small"),
        pytest.param(("serve", "--mtu", "65536"), ("MTU",), id="mtu-too-big"),
        pytest.param(("serve", "--msl", "0"), ("MSL",), id="msl-zero"),
        pytest.param(("serve", "--log-level", "chatty"), ("chatty",), id="bad-log-level"),
        pytest.param(
            ("serve", "--configure", "--no-configure"), ("not allowed",), id="configure-conflict"
        ),
    ],
)
def test_bad_input_exits_2_with_one_error_line(
    args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    assert_usage_error(run_cli(*args), *fragments)


def test_nonexistent_www_directory_is_rejected(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    assert_usage_error(run_cli("serve", "--www", str(missing)), str(missing))


def test_www_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    f = tmp_path / "file.html"
    f.write_text("<p>not a directory</p>")
    assert_usage_error(run_cli("serve", "--www", str(f)), "not a directory")


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("--echo-port", "80"), id="echo-on-http-default"),
        pytest.param(("--http-port", "8080", "--discard-port", "8080"), id="http-and-discard"),
        pytest.param(("--echo-port", "9"), id="echo-on-discard-default"),
    ],
)
def test_two_services_on_one_port_are_rejected(args: tuple[str, ...]) -> None:
    assert_usage_error(run_cli("serve", *args), "port")


def test_address_equal_to_host_address_is_rejected() -> None:
    result = run_cli("serve", "--host-address", "10.9.0.5/24", "--address", "10.9.0.5")
    assert_usage_error(result, "10.9.0.5")


@pytest.mark.parametrize("name", [pytest.param("x" * 16, id="too-long"),
                                  pytest.param("a b/c", id="invalid-characters")])
def test_invalid_interface_name_is_a_usage_error(name: str) -> None:
    assert_usage_error(run_cli("serve", "--interface", name), name)


def test_valid_flags_pass_validation_and_reach_interface_setup() -> None:
    # Disabled services (port 0) do not clash with each other; everything here
    # is valid, so the CLI gets as far as opening the TUN device (the guard).
    result = run_cli(
        "serve", "--http-port", "0", "--echo-port", "0", "--discard-port", "7007",
        "--mtu", "576", "--host-address", "10.9.0.1/24", "--address", "10.9.0.2",
        "--log-level", "warning",
    )
    assert result.returncode == GUARD_STATUS, result.stderr
    assert GUARD_MARKER in result.stderr


def test_help_exits_0_and_lists_commands() -> None:
    result = run_module("--help")
    assert result.returncode == 0, result.stderr
    assert "usage: tcpstack" in result.stdout
    assert "serve" in result.stdout


def test_serve_help_lists_the_flags() -> None:
    result = run_module("serve", "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--interface", "--address", "--host-address", "--mtu", "--http-port",
                 "--echo-port", "--discard-port", "--www", "--msl", "--grace", "--log-level"):
        assert flag in result.stdout, flag


def test_version_prints_the_package_version() -> None:
    result = run_module("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"tcpstack {tcpstack.__version__}"


def test_console_script_reports_the_same_version() -> None:
    # The script sits next to the interpreter running the tests (the venv's bin/),
    # which need not be on PATH.
    beside = Path(sys.executable).with_name("tcpstack")
    script = str(beside) if beside.exists() else shutil.which("tcpstack")
    if script is None:
        pytest.skip("the tcpstack console script is not installed")
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"tcpstack {tcpstack.__version__}"
