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
from tcpstack.apps import HttpLimits, Keepalive, ServiceLimits
from tcpstack.build import build_kind
from tcpstack.cli import DaemonConfig, ServeSettings, build_parser, build_settings
from tcpstack.stack import StackConfig
from tcpstack.tcp.config import TcpConfig

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
        # Ranges checked by the config dataclasses, reported through the CLI.
        pytest.param(("serve", "--rcv-buf", "100"), ("receive buffer",), id="rcv-buf-small"),
        pytest.param(("serve", "--snd-buf", str(1 << 31)), ("send buffer",), id="snd-buf-big"),
        pytest.param(("serve", "--rcv-buf-max", "10"), ("largest receive buffer",),
                     id="rcv-buf-max-small"),
        pytest.param(("serve", "--snd-buf-max", str(1 << 31)), ("largest send buffer",),
                     id="snd-buf-max-big"),
        pytest.param(("serve", "--msl", "5000"), ("MSL",), id="msl-too-long"),
        pytest.param(("serve", "--msl", "nan"), ("MSL",), id="msl-nan"),
        pytest.param(("serve", "--delayed-ack", "0.6"), ("delayed ACK",), id="delayed-ack-big"),
        pytest.param(("serve", "--max-retries", "0"), ("retry",), id="max-retries-zero"),
        pytest.param(("serve", "--max-retries", "1000"), ("retry",), id="max-retries-huge"),
        pytest.param(("serve", "--congestion-control", "vegas"), ("vegas",), id="unknown-cc"),
        pytest.param(("serve", "--workers", "0"), ("worker",), id="workers-zero"),
        pytest.param(("serve", "--workers", "65"), ("worker",), id="workers-too-many"),
        pytest.param(("serve", "--backlog", "0"), ("backlog",), id="backlog-zero"),
        pytest.param(("serve", "--txqueuelen", "0"), ("queue length",), id="txqueuelen-zero"),
        pytest.param(("serve", "--grace", "0"), ("grace",), id="grace-zero"),
        pytest.param(("serve", "--grace", "inf"), ("grace",), id="grace-infinite"),
        pytest.param(("serve", "--mtu", "abc"), ("--mtu", "abc"), id="mtu-not-a-number"),
        # The service limits (tcpstack.apps.limits).
        pytest.param(("serve", "--idle-timeout", "0"), ("idle timeout",), id="idle-zero"),
        pytest.param(("serve", "--idle-timeout", "-3"), ("idle timeout",), id="idle-negative"),
        pytest.param(("serve", "--send-timeout", "nan"), ("send timeout",), id="send-nan"),
        pytest.param(("serve", "--close-timeout", "1e9"), ("close timeout",), id="close-huge"),
        pytest.param(("serve", "--http-header-timeout", "0"), ("header timeout",),
                     id="header-timeout-zero"),
        pytest.param(("serve", "--http-body-timeout", "-1"), ("body timeout",),
                     id="body-timeout-negative"),
        pytest.param(("serve", "--http-max-body", "-1"), ("body size",), id="max-body-negative"),
        pytest.param(("serve", "--http-max-body", "1.5"), ("--http-max-body",),
                     id="max-body-not-an-integer"),
        pytest.param(("serve", "--http-max-requests", "0"), ("requests per connection",),
                     id="max-requests-zero"),
        pytest.param(("serve", "--keepalive", "0"), ("keepalive idle",), id="keepalive-zero"),
        pytest.param(("serve", "--keepalive-interval", "40000"), ("keepalive interval",),
                     id="keepalive-interval-big"),
        pytest.param(("serve", "--keepalive-count", "128"), ("probe count",),
                     id="keepalive-count-big"),
        pytest.param(("serve", "--keepalive", "30", "--no-keepalive"), ("not allowed",),
                     id="keepalive-conflict"),
        # The limits against hostile peers (StackConfig, TcpConfig, DaemonConfig).
        pytest.param(("serve", "--syncookies", "sometimes"), ("syncookies",),
                     id="syncookies-unknown"),
        pytest.param(("serve", "--syn-backlog", "0"), ("SYN backlog",), id="syn-backlog-zero"),
        pytest.param(("serve", "--max-connections", "0"), ("connection limits",),
                     id="max-connections-zero"),
        pytest.param(("serve", "--max-time-wait", "-1"), ("connection limits",),
                     id="max-time-wait-negative"),
        pytest.param(("serve", "--syn-batch-limit", "0"), ("connection limits",),
                     id="syn-batch-zero"),
        pytest.param(("serve", "--max-buffered", "1000"), ("max_buffered",),
                     id="max-buffered-tiny"),
        pytest.param(("serve", "--user-timeout", "-1"), ("user_timeout",),
                     id="user-timeout-negative"),
        pytest.param(("serve", "--challenge-ack-limit", "0"), ("challenge_ack_limit",),
                     id="challenge-limit-zero"),
        pytest.param(("serve", "--rst-rate-limit", "0"), ("rate limits",),
                     id="rst-rate-zero"),
        # Path MTU (StackConfig, TcpConfig).
        pytest.param(("serve", "--min-pmtu", "100"), ("minimum path MTU",),
                     id="min-pmtu-small"),
        pytest.param(("serve", "--min-pmtu", "x"), ("--min-pmtu", "x"),
                     id="min-pmtu-not-a-number"),
        pytest.param(("serve", "--pmtu-expires", "0"), ("pmtu_expires",),
                     id="pmtu-expires-zero"),
        pytest.param(("serve", "--pmtu-expires", "nan"), ("pmtu_expires",),
                     id="pmtu-expires-nan"),
        pytest.param(("serve", "--frag-memory", "1000"), ("fragment memory",),
                     id="frag-memory-tiny"),
        pytest.param(("serve", "--frag-timeout", "0"), ("frag_timeout",),
                     id="frag-timeout-zero"),
        pytest.param(("serve", "--frag-timeout", "nan"), ("frag_timeout",),
                     id="frag-timeout-nan"),
        # The families (DaemonConfig, StackConfig).
        pytest.param(("serve", "--address6", "10.0.0.2"), ("--address6", "10.0.0.2"),
                     id="address6-not-ipv6"),
        pytest.param(("serve", "--address6", "::1"), ("::1", "cannot be"),
                     id="address6-loopback"),
        pytest.param(("serve", "--address6", "fe80::2"), ("fe80::2", "link-local"),
                     id="address6-link-local"),
        pytest.param(("serve", "--host-address6", "fd00::1"), ("prefix length",),
                     id="host-address6-no-prefix"),
        pytest.param(("serve", "--host-address6", "fd00::2/64"), ("host side",),
                     id="address6-is-host-side"),
        pytest.param(("serve", "--no-ipv4", "--no-ipv6"), ("no address",),
                     id="no-family-left"),
        pytest.param(("serve", "--mtu", "1000"), ("1280", "--no-ipv6"),
                     id="ipv6-needs-1280"),
        pytest.param(("serve", "--no-ipv6", "--host-address6", "fd00::1/64"),
                     ("--no-ipv6",), id="host-address6-without-ipv6"),
        pytest.param(("serve", "--no-ipv4", "--host-address", "10.0.0.1/24"),
                     ("--no-ipv4",), id="host-address-without-ipv4"),
        # TCP-MD5 keys (a key given without its peer is not echoed).
        pytest.param(("serve", "--md5-key", "s3cret"), ("PEER=KEY",), id="md5-no-peer"),
        pytest.param(("serve", "--ecn", "maybe"), ("ecn", "off, passive, on, accecn"),
                     id="ecn-mode"),
        pytest.param(("serve", "--md5-key", "10.0.0.x=k"), ("10.0.0.x", "address"),
                     id="md5-bad-peer"),
        pytest.param(("serve", "--md5-key", "10.0.0.1="), ("1 to 80 bytes",),
                     id="md5-empty-key"),
        pytest.param(("serve", "--md5-key", "10.0.0.1=" + "k" * 81), ("1 to 80 bytes",),
                     id="md5-long-key"),
        pytest.param(("serve", "--md5-key", "10.0.0.1=@/nonexistent/key"),
                     ("cannot read", "/nonexistent/key"), id="md5-missing-key-file"),
        # TCP Fast Open
        pytest.param(("serve", "--tfo-key", "0011"), ("--tfo-key", "32 hex digits"),
                     id="tfo-short-key"),
        pytest.param(("serve", "--tfo-key", "x" * 32), ("--tfo-key", "other characters"),
                     id="tfo-not-hex"),
        pytest.param(("serve", "--tfo-key", ",".join(["00" * 16] * 3)),
                     ("KEY,BACKUP",), id="tfo-three-keys"),
        pytest.param(("serve", "--tfo-queue", "-1"), ("Fast Open queue",),
                     id="tfo-negative-queue"),
        pytest.param(("serve", "--tfo-key-rotation", "0.5"), ("rotation",),
                     id="tfo-rotation-too-short"),
        pytest.param(("serve", "--tfo-queue", "8"), ("--tfo-queue needs --tfo",),
                     id="tfo-queue-without-tfo"),
        pytest.param(("serve", "--tfo-key", "00" * 16), ("--tfo-key needs --tfo",),
                     id="tfo-key-without-tfo"),
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
        "--mtu", "576", "--no-ipv6", "--host-address", "10.9.0.1/24", "--address", "10.9.0.2",
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
                 "--echo-port", "--discard-port", "--www", "--msl", "--grace", "--log-level",
                 "--idle-timeout", "--send-timeout", "--close-timeout", "--http-header-timeout",
                 "--http-body-timeout", "--http-max-body", "--http-max-requests",
                 "--keepalive", "--keepalive-interval", "--keepalive-count", "--no-keepalive",
                 "--min-pmtu", "--pmtu-expires", "--no-mtu-probing", "--no-reassembly",
                 "--frag-memory", "--frag-timeout"):
        assert flag in result.stdout, flag


def test_serve_help_shows_the_config_defaults() -> None:
    result = run_module("serve", "--help")
    text = " ".join(result.stdout.split())
    assert "(default: cubic)" in text
    assert "(default: 60)" in text


# -- flags -> configs, in process ---------------------------------------------------


def _settings(*args: str) -> ServeSettings:
    return build_settings(build_parser().parse_args(["serve", *args]))


def test_without_flags_every_config_keeps_its_own_defaults() -> None:
    """The config dataclasses are the one place defaults live; the CLI adds none."""
    settings = _settings()
    assert settings.stack.tcp == TcpConfig()
    assert settings.stack.tcp.congestion_control == "cubic"
    assert settings.limits == ServiceLimits()
    assert settings.http == HttpLimits()
    assert settings.daemon == DaemonConfig()
    assert settings.stack == StackConfig(addresses=settings.stack.addresses, tcp=TcpConfig())


def test_flags_reach_their_configs() -> None:
    settings = _settings(
        "--mtu", "9000", "--rcv-buf", "100000", "--snd-buf", "200000", "--msl", "5",
        "--max-retries", "7", "--congestion-control", "newreno", "--no-sack",
        "--no-timestamps", "--delayed-ack", "0", "--idle-timeout", "11",
        "--send-timeout", "12", "--close-timeout", "13", "--http-header-timeout", "14",
        "--http-body-timeout", "15", "--http-max-body", "16", "--http-max-requests", "17",
        "--keepalive", "18", "--keepalive-interval", "19", "--keepalive-count", "3",
        "--workers", "2", "--backlog", "20", "--txqueuelen", "21", "--grace", "0.5",
    )
    tcp = settings.stack.tcp
    assert (tcp.mss, tcp.rcv_buf, tcp.snd_buf, tcp.msl, tcp.max_retries) == \
        (8960, 100000, 200000, 5.0, 7)
    assert (tcp.congestion_control, tcp.sack, tcp.timestamps, tcp.delayed_ack) == \
        ("newreno", False, False, 0.0)
    assert settings.limits == ServiceLimits(idle_timeout=11, send_timeout=12, close_timeout=13,
                                            keepalive=Keepalive(18, 19, 3))
    assert settings.http == HttpLimits(header_timeout=14, body_timeout=15, max_body=16,
                                       max_requests=17)
    assert settings.daemon == DaemonConfig(mtu=9000, workers=2, backlog=20, txqueuelen=21,
                                           grace=0.5)


@pytest.mark.parametrize("mode", ["off", "passive", "on", "accecn"])
def test_every_ecn_mode_reaches_the_tcp_config(mode: str) -> None:
    assert _settings("--ecn", mode).stack.tcp.ecn == mode


def test_buffer_autotuning_flags_reach_the_tcp_config() -> None:
    tcp = _settings("--rcv-buf-max", "8000000", "--snd-buf-max", "3000000").stack.tcp
    assert (tcp.rcv_buf_max, tcp.snd_buf_max, tcp.autotune) == (8_000_000, 3_000_000, True)
    assert tcp.rcv_wscale == 7  # chosen for the largest buffer, not the initial one
    fixed = _settings("--no-autotune").stack.tcp
    assert fixed.autotune is False
    assert (fixed.rcv_buf_limit, fixed.snd_buf_limit) == (fixed.rcv_buf, fixed.snd_buf)


def test_limit_flags_reach_their_configs() -> None:
    settings = _settings(
        "--syncookies", "always", "--syn-backlog", "64", "--syn-batch-limit", "8",
        "--max-connections", "500", "--max-time-wait", "50", "--max-buffered", "1000000",
        "--user-timeout", "30", "--challenge-ack-limit", "99", "--rst-rate-limit", "98",
        "--icmp-rate-limit", "97",
    )
    st = settings.stack
    assert (st.syncookies, st.syn_batch_limit, st.max_connections, st.max_time_wait,
            st.max_buffered, st.rst_rate_limit, st.icmp_rate_limit) == \
        ("always", 8, 500, 50, 1_000_000, 98, 97)
    assert (st.tcp.user_timeout, st.tcp.challenge_ack_limit) == (30.0, 99)
    assert settings.daemon.syn_backlog == 64


def test_path_mtu_flags_reach_their_configs() -> None:
    settings = _settings("--min-pmtu", "1280", "--pmtu-expires", "120", "--no-mtu-probing")
    assert settings.stack.min_pmtu == 1280
    assert (settings.stack.tcp.pmtu_expires, settings.stack.tcp.mtu_probing) == (120.0, False)


def test_family_flags_reach_the_stack_config() -> None:
    both = _settings().stack.addresses
    assert [str(a) for a in both] == ["10.0.0.2", "fd00::2"]
    assert [str(a) for a in _settings("--no-ipv6").stack.addresses] == ["10.0.0.2"]
    only6 = _settings("--no-ipv4", "--address6", "fd12::7")
    assert [str(a) for a in only6.stack.addresses] == ["fd12::7"]
    assert only6.daemon.ipv6 and not only6.daemon.ipv4
    assert _settings("--no-ipv6", "--mtu", "576").daemon.mtu == 576


def test_fragment_flags_reach_their_config() -> None:
    st = _settings("--no-reassembly", "--frag-memory", "1048576", "--frag-timeout", "10").stack
    assert (st.reassembly, st.frag_memory, st.frag_timeout) == (False, 1 << 20, 10.0)


def test_no_keepalive_leaves_service_connections_alone() -> None:
    assert _settings("--no-keepalive").limits.keepalive is None


def test_build_settings_raises_value_error_for_the_cli_to_report() -> None:
    with pytest.raises(ValueError, match="idle timeout"):
        _settings("--idle-timeout", "0")


def test_version_prints_the_package_version_and_the_build() -> None:
    """``--version`` says which build runs: compiled with mypyc, or plain Python."""
    result = run_module("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"tcpstack {tcpstack.__version__} ({build_kind()})"
    assert build_kind() in ("compiled (mypyc)", "pure Python")


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
    assert result.stdout.strip().startswith(f"tcpstack {tcpstack.__version__} (")


def test_ipv6_disabled_reads_the_namespace_default(tmp_path: Path) -> None:
    from tcpstack.cli import ipv6_disabled

    flag = tmp_path / "disable_ipv6"
    flag.write_text("1\n")
    assert ipv6_disabled(flag)
    flag.write_text("0\n")
    assert not ipv6_disabled(flag)
    assert ipv6_disabled(tmp_path / "missing")  # a kernel without IPv6


def test_a_md5_key_given_without_its_peer_is_not_echoed() -> None:
    result = run_cli("serve", "--md5-key", "s3cret-value")
    assert_usage_error(result, "PEER=KEY")
    assert "s3cret-value" not in result.stderr + result.stdout


def test_md5_keys_from_flags_and_files(tmp_path: Path) -> None:
    """--md5-key PEER=KEY and PEER=@FILE (its last newline is not part of the key),
    repeatable, into the stack's configuration."""
    keyfile = tmp_path / "key"
    keyfile.write_bytes(b"from a file\n")
    settings = _settings("--md5-key", "10.0.0.1=plain text", "--md5-key",
                         f"fd00::/64=@{keyfile}")
    assert settings.stack.md5_keys == (("10.0.0.1", b"plain text"),
                                       ("fd00::/64", b"from a file"))
    assert _settings().stack.md5_keys == ()


def test_fast_open_flags_into_the_configurations() -> None:
    settings = _settings("--tfo", "--tfo-queue", "32", "--tfo-key",
                         "00010203-04050607-08090a0b-0c0d0e0f,"
                         "101112131415161718191a1b1c1d1e1f", "--tfo-key-rotation", "3600")
    assert settings.daemon.tfo and settings.daemon.tfo_queue == 32
    assert settings.stack.tfo_keys == (bytes(range(16)), bytes(range(16, 32)))
    assert settings.stack.tfo_key_rotation == 3600
    assert "0001020304" not in repr(settings.stack)
    default = _settings()
    assert not default.daemon.tfo and default.stack.tfo_keys == ()


def test_tfo_keys_from_a_file(tmp_path: Path) -> None:
    keyfile = tmp_path / "tfo.key"
    keyfile.write_text("00010203-04050607-08090a0b-0c0d0e0f\n")
    assert _settings("--tfo", "--tfo-key", f"@{keyfile}").stack.tfo_keys == (bytes(range(16)),)
    assert_usage_error(run_cli("serve", "--tfo", "--tfo-key", f"@{tmp_path}/none"),
                       "cannot read")


def test_a_bad_tfo_key_is_not_echoed() -> None:
    result = run_cli("serve", "--tfo", "--tfo-key", "s3cret-but-not-hex-s3cret-value!")
    assert_usage_error(result, "--tfo-key")
    assert "s3cret" not in result.stderr + result.stdout


def test_ao_keys_from_flags(tmp_path: Path) -> None:
    """--ao-key PEER=SENDID:RECVID[:ALG][:exclude-options]:KEY, repeatable; a key may
    contain colons, or come from a file."""
    keyfile = tmp_path / "ao.key"
    keyfile.write_bytes(b"from:a:file\n")
    settings = _settings("--ao-key", "10.0.0.5=1:2:se:cret", "--ao-key",
                         f"10.0.0.5=3:4:aes-128-cmac:exclude-options:@{keyfile}")
    first, second = settings.stack.ao_keys
    assert (first.send_id, first.recv_id, first.key, first.algorithm, first.include_options) \
        == (1, 2, b"se:cret", "hmac-sha1", True)
    assert (second.send_id, second.recv_id, second.key, second.algorithm,
            second.include_options) == (3, 4, b"from:a:file", "aes-128-cmac", False)


@pytest.mark.parametrize(("spec", "fragment"), [
    ("10.0.0.5=1:2", "PEER=SENDID:RECVID"),
    ("10.0.0.5=x:2:k", "numbers 0..255"),
    ("10.0.0.5=1:300:k", "RecvID must be 0..255"),
    ("10.0.0.5=1:2:", "1 to 80 bytes"),
])
def test_bad_ao_keys_are_one_line_errors(spec: str, fragment: str) -> None:
    assert_usage_error(run_cli("serve", "--ao-key", spec), fragment)


def test_two_ao_keys_with_one_recvid_for_a_peer_are_refused() -> None:
    result = run_cli("serve", "--ao-key", "10.0.0.5=1:2:k1", "--ao-key", "10.0.0.5=3:2:k2")
    assert_usage_error(result, "RecvID 2")
    assert "k1" not in result.stderr and "k2" not in result.stderr
