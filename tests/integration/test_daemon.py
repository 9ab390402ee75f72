"""``tcpstack serve`` end to end: real kernel clients talk to the daemon over its TUN.

Each test gets a fresh namespace (the ``netns`` fixture) and starts the daemon
in it; clients (curl, nc, ping, Python kernel sockets, a raw socket) run inside
the same namespace and reach the stack at 10.0.0.2 through ``tcpstack0``.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpstack.apps.http import iter_pattern
from tests.integration.daemon import (
    HOST_ADDRESS,
    INTERFACE,
    STACK_ADDRESS,
    Daemon,
    DaemonFactory,
    assert_clean_exit,
    link_exists,
    link_is_up,
    parse_counters,
    run_client,
)
from tests.netns import NetNS

pytestmark = pytest.mark.root

BASE_URL = f"http://{STACK_ADDRESS}"


@pytest.fixture
def serve(netns: NetNS, tmp_path: Path) -> Iterator[DaemonFactory]:
    """Start daemons with ``serve(*args)``; all are stopped (SIGTERM) afterwards."""
    factory = DaemonFactory(netns, tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def daemon(serve: DaemonFactory) -> Iterator[Daemon]:
    """The daemon with default flags; it must shut down cleanly at the end."""
    d = serve()
    yield d
    assert_clean_exit(d.stop())


def curl(netns: NetNS, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
    """Run ``curl -sS ARGS...`` in the namespace (bounded by ``--max-time``)."""
    argv = ["curl", "-sS", "--max-time", str(timeout), *args]
    return netns.run(argv, capture_output=True, text=True, timeout=timeout + 10)


def sha256_of_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------- HTTP


def test_http_root_returns_200_with_the_builtin_page(
    netns: NetNS, daemon: Daemon, tmp_path: Path
) -> None:
    body = tmp_path / "index.out"
    result = curl(netns, "-o", str(body), "-w", "%{http_code} %{content_type}", f"{BASE_URL}/")
    assert result.returncode == 0, result.stderr
    status, content_type = result.stdout.split(" ", 1)
    assert status == "200"
    assert content_type.startswith("text/html")
    page = body.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "Served by tcpstack" in page
    assert "/bytes/N" in page


def test_http_bytes_50mib_download_is_byte_exact(
    netns: NetNS, daemon: Daemon, tmp_path: Path
) -> None:
    n = 50 * 1024 * 1024
    expected = hashlib.sha256()
    for chunk in iter_pattern(n):
        expected.update(chunk)
    out = tmp_path / "bytes.bin"
    headers = tmp_path / "bytes.headers"
    result = curl(
        netns,
        "-o", str(out), "-D", str(headers), "-w", "%{http_code}",
        f"{BASE_URL}/bytes/{n}",
        timeout=60.0,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "200"
    assert f"content-length: {n}" in headers.read_text().lower()
    assert out.stat().st_size == n
    assert sha256_of_file(out) == expected.hexdigest()


def test_http_keep_alive_serves_two_requests_on_one_connection(
    netns: NetNS, daemon: Daemon
) -> None:
    result = curl(
        netns,
        "-w", "%{http_code} %{num_connects} %{size_download}\n",
        "-o", "/dev/null", f"{BASE_URL}/bytes/1000000",
        "-o", "/dev/null", f"{BASE_URL}/bytes/12345",
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first == "200 1 1000000"
    assert second == "200 0 12345"  # 0 new connections: the first one was reused


def test_www_serves_files_byte_exact_and_404s_missing_paths(
    netns: NetNS, serve: DaemonFactory, tmp_path: Path
) -> None:
    www = tmp_path / "www"
    (www / "sub").mkdir(parents=True)
    text = www / "hello.txt"
    text.write_text("hello from the web root\n")
    blob = www / "sub" / "blob.bin"
    blob_data = os.urandom(300_000)  # several windows' worth, not a pattern
    blob.write_bytes(blob_data)
    for d in (tmp_path, www, www / "sub"):
        d.chmod(0o755)
    for f in (text, blob):
        f.chmod(0o644)

    d = serve("--www", str(www))

    got = tmp_path / "blob.out"
    result = curl(netns, "-o", str(got), "-w", "%{http_code}", f"{BASE_URL}/sub/blob.bin")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "200"
    assert got.read_bytes() == blob_data

    got_text = tmp_path / "hello.out"
    result = curl(
        netns, "-o", str(got_text), "-w", "%{http_code} %{content_type}", f"{BASE_URL}/hello.txt"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("200 text/plain")
    assert got_text.read_bytes() == text.read_bytes()

    missing = curl(netns, "-o", "/dev/null", "-w", "%{http_code}", f"{BASE_URL}/no/such/file")
    assert missing.returncode == 0, missing.stderr
    assert missing.stdout == "404"

    # A path escaping the root looks exactly like a missing file.
    (tmp_path / "secret.txt").write_text("outside the web root\n")
    escape = curl(
        netns, "--path-as-is", "-o", str(tmp_path / "escape.out"), "-w", "%{http_code}",
        f"{BASE_URL}/../secret.txt",
    )
    assert escape.returncode == 0, escape.stderr
    assert escape.stdout == "404"
    assert b"outside the web root" not in (tmp_path / "escape.out").read_bytes()

    assert_clean_exit(d.stop())


# -------------------------------------------------------------- echo, discard


def test_echo_port_7_returns_lines_sent_with_netcat(netns: NetNS, daemon: Daemon) -> None:
    lines = "".join(f"line {i}: the quick brown fox\n" for i in range(200))
    result = netns.run(
        ["nc", "-N", "-w", "5", STACK_ADDRESS, "7"],
        input=lines,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == lines


def test_discard_port_9_accepts_data_and_sends_nothing_back(
    netns: NetNS, daemon: Daemon
) -> None:
    data = os.urandom(1 << 20)
    result = netns.run(
        ["nc", "-N", "-w", "5", STACK_ADDRESS, "9"],
        input=data,
        capture_output=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""


# ----------------------------------------------------------------- ICMP, RST


def test_ping_gets_three_echo_replies(netns: NetNS, daemon: Daemon) -> None:
    result = netns.run(
        ["ping", "-c", "3", "-i", "0.2", "-W", "2", STACK_ADDRESS],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 packets transmitted, 3 received" in result.stdout
    assert result.stdout.count(f"bytes from {STACK_ADDRESS}") == 3


def test_closed_port_refuses_connections_at_once(netns: NetNS, daemon: Daemon) -> None:
    t0 = time.monotonic()
    result = curl(netns, "-o", "/dev/null", f"{BASE_URL}:81/", timeout=10.0)
    elapsed = time.monotonic() - t0
    assert result.returncode == 7, (result.returncode, result.stderr)  # couldn't connect
    assert elapsed < 2.0, f"refusal took {elapsed:.2f}s (RST expected at once)"

    # The kernel's own view: the SYN was answered with RST -> ECONNREFUSED.
    fields = run_client(
        netns,
        f"""
        import errno, socket
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect(("{STACK_ADDRESS}", 81))
            emit(outcome="connected")
        except ConnectionRefusedError as e:
            emit(outcome="refused", errno=e.errno)
        except OSError as e:
            emit(outcome=repr(e))
        """,
    )
    assert fields["outcome"] == "refused"

    exit_ = daemon.stop()
    assert_clean_exit(exit_)
    assert parse_counters(exit_.log).get("tcp_closed_port", 0) >= 2


# ------------------------------------------------------------------ lifecycle


_IDLE_CLIENT = f"""
import json, socket, sys, time
hold = float(sys.argv[1])
s = socket.create_connection(("{STACK_ADDRESS}", 7), timeout=5)
s.sendall(b"are you there?\\n")
got = b""
while len(got) < 15:
    chunk = s.recv(100)
    if not chunk:
        break
    got += chunk
print("READY " + json.dumps(got.decode()), flush=True)
s.settimeout(20)
t0 = time.monotonic()
try:
    data = s.recv(100)
    outcome = "eof" if data == b"" else "data"
except ConnectionResetError:
    outcome = "rst"
except TimeoutError:
    outcome = "hang"
print("RESULT " + json.dumps({{"outcome": outcome, "waited": time.monotonic() - t0}}), flush=True)
time.sleep(hold)  # keep the socket open (CLOSE-WAIT): the peer never sends its FIN
s.close()
"""


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next stdout line of ``proc``, or "" after ``timeout`` seconds or at EOF."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


@pytest.mark.parametrize(
    ("hold", "grace"),
    [
        pytest.param(0.0, 2.0, id="client-closes-after-eof"),
        pytest.param(3.0, 0.5, id="client-never-closes-grace-bounds-shutdown"),
    ],
)
def test_sigterm_closes_idle_connection_exits_0_and_removes_interface(
    netns: NetNS, serve: DaemonFactory, hold: float, grace: float
) -> None:
    d = serve("--grace", str(grace))
    client = netns.popen(
        [sys.executable, "-c", _IDLE_CLIENT, str(hold)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=netns.python_env(),
    )
    ready = _read_line(client, timeout=10)
    assert ready == 'READY "are you there?\\n"\n', ready

    exit_ = d.stop(timeout=10)
    assert exit_.returncode == 0, exit_.log
    assert exit_.stop_seconds < grace + 2.0, f"shutdown took {exit_.stop_seconds:.2f}s"
    assert_clean_exit(exit_)
    assert "closing 1 connection(s)" in exit_.log

    result = _read_line(client, timeout=10)
    assert result.startswith("RESULT "), f"client saw neither FIN nor RST: {result!r}"
    outcome = json.loads(result[len("RESULT ") :])
    assert outcome["outcome"] in ("eof", "rst"), outcome
    assert outcome["waited"] < grace + 2.0, outcome

    assert not link_exists(netns), netns.ip("-o", "link")
    client.wait(timeout=hold + 10)


def test_sigterm_during_a_download_cuts_it_short_promptly(
    netns: NetNS, serve: DaemonFactory
) -> None:
    d = serve("--grace", "1")
    ten_gib = 10 * 1024**3
    download = netns.popen(
        ["curl", "-sS", "--max-time", "30", "-o", "/dev/null", "-w", "%{size_download}",
         f"{BASE_URL}/bytes/{ten_gib}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(1.0)  # well into the body, nowhere near its end
    assert download.poll() is None, download.communicate(timeout=5)

    exit_ = d.stop(timeout=10)
    assert_clean_exit(exit_)
    assert exit_.stop_seconds < 3.0, f"shutdown took {exit_.stop_seconds:.2f}s"
    assert "closing 1 connection(s)" in exit_.log

    out, err = download.communicate(timeout=10)
    # 18: body ended early at a FIN; 56: the connection was reset.
    assert download.returncode in (18, 56), (download.returncode, err)
    assert 0 < int(out) < ten_gib
    assert not link_exists(netns)


def test_sigint_also_exits_0_and_removes_interface(netns: NetNS, serve: DaemonFactory) -> None:
    d = serve()
    exit_ = d.stop(sig=signal.SIGINT)
    assert_clean_exit(exit_)
    assert exit_.stop_seconds < 5.0
    assert not link_exists(netns)


def test_attaches_to_precreated_interface_and_leaves_it_configured(
    netns: NetNS, serve: DaemonFactory, tmp_path: Path
) -> None:
    netns.ip("tuntap", "add", "mode", "tun", "name", INTERFACE)
    netns.ip("addr", "add", f"{HOST_ADDRESS}/24", "dev", INTERFACE)
    netns.ip("link", "set", INTERFACE, "up")

    d = serve()
    result = curl(netns, "-o", "/dev/null", "-w", "%{http_code}", f"{BASE_URL}/bytes/100000")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "200"

    exit_ = d.stop()
    assert_clean_exit(exit_)
    assert "(attached)" in exit_.log
    assert link_exists(netns), "the daemon removed an interface it did not create"
    addresses = netns.ip("-o", "-4", "addr", "show", "dev", INTERFACE)
    assert f"inet {HOST_ADDRESS}/24" in addresses


def run_serve_expecting_failure(
    netns: NetNS, *args: str, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """``tcpstack serve ARGS...`` in the namespace, for runs that must fail at setup."""
    return netns.run(
        [sys.executable, "-m", "tcpstack", "serve", *args],
        capture_output=True, text=True, timeout=timeout, env=netns.python_env(),
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    detail = f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"
    assert result.returncode == status, detail
    lines = result.stderr.splitlines()
    assert len(lines) == 1, detail
    assert lines[0].startswith("tcpstack: error:"), detail
    return lines[0]


def test_refuses_an_existing_tap_interface_and_leaves_it_alone(netns: NetNS) -> None:
    netns.ip("tuntap", "add", "mode", "tap", "name", INTERFACE)
    before = netns.ip("-o", "link", "show", INTERFACE)
    line = assert_one_error_line(run_serve_expecting_failure(netns), 1)
    assert "TAP" in line
    assert netns.ip("-o", "link", "show", INTERFACE) == before


def test_second_daemon_on_a_busy_interface_fails_and_the_first_keeps_serving(
    netns: NetNS, serve: DaemonFactory
) -> None:
    first = serve()
    line = assert_one_error_line(run_serve_expecting_failure(netns), 1)
    assert "busy" in line
    assert first.running(), first.log
    assert link_is_up(netns), "the failed second daemon took the interface down"
    result = curl(netns, "-o", "/dev/null", "-w", "%{http_code}", f"{BASE_URL}/")
    assert (result.returncode, result.stdout) == (0, "200"), result.stderr
    assert_clean_exit(first.stop())
    assert not link_exists(netns)


@pytest.mark.parametrize(
    "name",
    [pytest.param("x" * 16, id="too-long"), pytest.param("a b/c", id="invalid-characters")],
)
def test_invalid_interface_name_fails_with_one_line_and_creates_nothing(
    netns: NetNS, name: str
) -> None:
    before = netns.ip("-o", "link")
    result = run_serve_expecting_failure(netns, "--interface", name)
    assert result.returncode != 0
    assert_one_error_line(result, result.returncode)
    assert netns.ip("-o", "link") == before


def test_mtu_flag_sets_link_mtu_and_advertised_mss(netns: NetNS, serve: DaemonFactory) -> None:
    d = serve("--mtu", "9000")
    assert " mtu 9000 " in netns.ip("-o", "link", "show", INTERFACE)
    fields = run_client(
        netns,
        f"""
        import socket
        s = socket.create_connection(("{STACK_ADDRESS}", 80), timeout=5)
        emit(mss=s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))
        s.close()
        """,
    )
    # Linux reports the MSS minus the 12 bytes of the timestamp option that every
    # segment carries once timestamps are negotiated (RFC 7323 3.2, RFC 6691).
    assert fields["mss"] == 9000 - 40 - 12
    assert_clean_exit(d.stop())


def test_no_configure_creates_the_interface_down_and_without_address(
    netns: NetNS, serve: DaemonFactory
) -> None:
    d = serve("--no-configure", probe_port=None, require_up=False)
    assert not link_is_up(netns)
    assert netns.ip("-o", "-4", "addr", "show", "dev", INTERFACE).strip() == ""
    exit_ = d.stop()
    assert_clean_exit(exit_)
    assert not link_exists(netns), "a created interface must be removed even if unconfigured"


# ----------------------------------------------------------------- bad input


_MALFORMED = f"""
import socket, struct

SRC, DST = socket.inet_aton("{HOST_ADDRESS}"), socket.inet_aton("{STACK_ADDRESS}")

def checksum(data):
    if len(data) % 2:
        data += b"\\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def tcp(sport, dport, doff_words=5, flags=0x02, payload=b"", good_checksum=True):
    hdr = bytearray(struct.pack("!HHIIBBHHH", sport, dport, 12345, 0,
                                doff_words << 4, flags, 65535, 0, 0))
    seg = hdr + payload
    pseudo = SRC + DST + struct.pack("!BBH", 0, 6, len(seg))
    csum = checksum(pseudo + bytes(seg))
    struct.pack_into("!H", seg, 16, csum if good_checksum else csum ^ 0x5A5A)
    return bytes(seg)

def ip(payload, proto=6, frag=0x4000):
    # The kernel fills in the IP checksum (and ID) for IP_HDRINCL sockets.
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, frag, 64, proto, 0,
                       SRC, DST) + payload

def icmp_echo(good_checksum=True):
    msg = bytearray(struct.pack("!BBHHH", 8, 0, 0, 0x4242, 1) + b"payload!")
    csum = checksum(bytes(msg))
    struct.pack_into("!H", msg, 2, csum if good_checksum else csum ^ 0x1111)
    return bytes(msg)

cases = {{
    "bad_checksum_syn_80": tcp(40001, 80, good_checksum=False),
    "bad_checksum_syn_closed_81": tcp(40002, 81, good_checksum=False),
    "truncated_header": tcp(40003, 80)[:10],
    "data_offset_4": tcp(40004, 80, doff_words=4),
    "data_offset_past_end": tcp(40005, 80, doff_words=15),
    "data_offset_0_with_payload": tcp(40006, 80, doff_words=0, payload=b"x" * 40),
}}
packets = [ip(seg) for seg in cases.values()] + [
    ip(tcp(40007, 80), frag=0x2000),            # first fragment (MF) of 20 bytes: not
                                                # a multiple of 8, refused
    ip(tcp(40008, 80)[8:], frag=0x0001),        # a later fragment (offset 8 bytes): held
                                                # until its datagram times out
    ip(b"not a known protocol", proto=253),     # answered with protocol unreachable
    ip(icmp_echo(good_checksum=False), proto=1),
    ip(b"\x08", proto=1),                       # ICMP shorter than its header
]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
sent = 0
for _ in range(5):
    for packet in packets:
        s.sendto(packet, ("{STACK_ADDRESS}", 0))
        sent += 1
emit(sent=sent)
"""


def test_malformed_tcp_segments_are_dropped_and_daemon_keeps_serving(
    netns: NetNS, serve: DaemonFactory
) -> None:
    d = serve()
    fields = run_client(netns, _MALFORMED)
    assert fields["sent"] == 55

    assert d.running(), d.log
    result = curl(netns, "-o", "/dev/null", "-w", "%{http_code}", f"{BASE_URL}/bytes/200000")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "200"
    echo = netns.run(
        ["nc", "-N", "-w", "5", STACK_ADDRESS, "7"],
        input="still alive\n", capture_output=True, text=True, timeout=20,
    )
    assert echo.stdout == "still alive\n"
    ping = netns.run(["ping", "-c", "1", "-W", "2", STACK_ADDRESS], capture_output=True,
                     timeout=10)
    assert ping.returncode == 0, ping.stdout

    exit_ = d.stop()
    assert_clean_exit(exit_)
    counters = parse_counters(exit_.log)
    assert counters.get("tcp_bad_checksum") == 10, counters
    assert counters.get("tcp_truncated") == 5, counters
    assert counters.get("tcp_bad_data_offset") == 15, counters
    assert counters.get("ipv4_fragments") == 10, counters
    assert counters.get("ipv4_frag_bad_length") == 5, counters
    assert "ipv4_reassembled" not in counters, counters
    assert counters.get("ip_unknown_protocol") == 5, counters
    assert counters.get("icmp_bad_checksum") == 5, counters
    assert counters.get("icmp_truncated") == 5, counters
    # A SYN with a bad checksum is dropped before the port lookup: no RST for it.
    assert "tcp_closed_port" not in counters, counters


def test_udp_to_the_stack_gets_port_unreachable(netns: NetNS, daemon: Daemon) -> None:
    fields = run_client(
        netns,
        f"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.connect(("{STACK_ADDRESS}", 5353))
        s.send(b"anyone?")
        try:
            s.recv(100)
            emit(outcome="reply")
        except ConnectionRefusedError:
            emit(outcome="refused")
        except TimeoutError:
            emit(outcome="timeout")
        """,
    )
    assert fields["outcome"] == "refused"  # the kernel got ICMP port unreachable
