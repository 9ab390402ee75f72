"""The daemon against hostile clients and a vanishing interface, end to end.

Each test runs ``tcpstack serve`` in its own network namespace and talks to it
with kernel sockets from inside that namespace: malformed requests, clients
that send nothing, trickle their request, never read the response or vanish
without a FIN, and the TUN interface deleted under the running daemon. After
each, the daemon either keeps serving and its counters say what happened, or
(interface gone) it exits 1 with one error line.

Slow request bodies and hostile request targets are among the attacks of
``test_daemon_attacks.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon import (
    INTERFACE,
    STACK_ADDRESS,
    DaemonFactory,
    assert_clean_exit,
    parse_counters,
    run_client,
)
from tests.netns import NetNS, wait_for

pytestmark = pytest.mark.root


@pytest.fixture
def serve(netns: NetNS, tmp_path: Path) -> Iterator[DaemonFactory]:
    factory = DaemonFactory(netns, tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


def service_counters(log: str) -> dict[str, int]:
    return parse_counters(log, "service counters")


def still_serves(netns: NetNS) -> None:
    result = netns.run(
        ["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
         f"http://{STACK_ADDRESS}/bytes/100000"],
        capture_output=True, text=True, timeout=30,
    )
    assert (result.returncode, result.stdout) == (0, "200"), result.stderr


_RAW_REQUEST = f"""
import socket
s = socket.create_connection(("{STACK_ADDRESS}", 80), timeout=10)
s.sendall(REQUEST)
data = b""
try:
    while chunk := s.recv(65536):
        data += chunk
    outcome = "eof"
except ConnectionResetError:
    outcome = "reset"
emit(outcome=outcome, response=data.decode("latin-1"))
"""


def raw_request(netns: NetNS, request: bytes) -> dict[str, str]:
    return run_client(netns, f"REQUEST = {request!r}\n" + _RAW_REQUEST)


# -------------------------------------------------------------------- HTTP


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000000000000"
                     b"\r\n\r\n", 400, "bad_content_length", id="content-length-10e19"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413,
                     "body_too_large", id="body-over-1mib"),
        pytest.param(b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 501, "unknown_method",
                     id="unknown-method"),
    ],
)
def test_malformed_request_gets_its_status_and_the_daemon_keeps_serving(
    netns: NetNS, serve: DaemonFactory, request_bytes: bytes, status: int, reason: str
) -> None:
    d = serve()
    fields = raw_request(netns, request_bytes)
    head = fields["response"].split("\r\n\r\n", 1)[0]
    assert head.startswith(f"HTTP/1.1 {status} "), fields
    assert "\r\nConnection: close" in head, fields
    still_serves(netns)
    exit_ = d.stop()
    assert_clean_exit(exit_)  # no traceback, no internal_error
    assert service_counters(exit_.log).get(f"http_{reason}") == 1, exit_.log


_SILENT_AND_SLOW = f"""
import socket, time
def outcome_of(s, deadline):
    data = b""
    s.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        while chunk := s.recv(65536):
            data += chunk
        return "eof", data
    except ConnectionResetError:
        return "reset", data
    except TimeoutError:
        return "hang", data

# 1. connect and say nothing: closed after the idle timeout, no response.
silent = socket.create_connection(("{STACK_ADDRESS}", 80), timeout=10)
silent_outcome, silent_data = outcome_of(silent, time.monotonic() + 20)

# 2. trickle a request head a byte at a time (slowloris): 408 after the header timeout.
slow = socket.create_connection(("{STACK_ADDRESS}", 80), timeout=10)
head = b"GET / HTTP/1.1\\r\\nHost: x\\r\\n" + b"X-Pad: " + b"p" * 200 + b"\\r\\n"
slow.setblocking(False)
deadline = time.monotonic() + 20
answer = b""
for byte in head:
    try:
        slow.send(bytes([byte]))
    except OSError:
        break
    time.sleep(0.05)
    try:
        answer += slow.recv(65536)
    except BlockingIOError:
        pass
    if b"\\r\\n\\r\\n" in answer or time.monotonic() > deadline:
        break
slow.setblocking(True)
slow_outcome, rest = outcome_of(slow, deadline)
emit(silent=silent_outcome, silent_data=silent_data.decode("latin-1"),
     slow=slow_outcome, slow_response=(answer + rest).decode("latin-1"))
"""


def test_silent_and_slowloris_clients_are_cut_off_by_the_timeouts(
    netns: NetNS, serve: DaemonFactory
) -> None:
    d = serve("--idle-timeout", "1", "--http-header-timeout", "1")
    fields = run_client(netns, _SILENT_AND_SLOW, timeout=60)
    assert fields["silent"] == "eof", fields
    assert fields["silent_data"] == "", "an idle close sends no response"
    assert fields["slow_response"].startswith("HTTP/1.1 408 "), fields
    still_serves(netns)
    exit_ = d.stop()
    assert_clean_exit(exit_)
    counters = service_counters(exit_.log)
    assert counters.get("http_idle_timeout", 0) >= 1, exit_.log
    assert counters.get("http_header_timeout") == 1, exit_.log


_NEVER_READS = f"""
import socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill up fast
s.settimeout(10)
s.connect(("{STACK_ADDRESS}", 80))
s.sendall(b"GET /bytes/{10 * 1024**3} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
time.sleep(6)  # never read: the window closes, the server waits in drain()
total, outcome = 0, "hang"
s.settimeout(10)
try:
    while chunk := s.recv(1 << 20):
        total += len(chunk)
    outcome = "eof"
except ConnectionResetError:
    outcome = "reset"
except TimeoutError:
    pass
emit(outcome=outcome, total=total)
"""


def test_client_that_never_reads_is_reset_after_the_send_timeout(
    netns: NetNS, serve: DaemonFactory
) -> None:
    d = serve("--send-timeout", "1")
    fields = run_client(netns, _NEVER_READS, timeout=60)
    assert fields["outcome"] in ("reset", "eof"), fields
    assert fields["total"] < 10 * 1024**3
    still_serves(netns)
    exit_ = d.stop()
    assert_clean_exit(exit_)
    assert service_counters(exit_.log).get("http_send_timeout") == 1, exit_.log


# --------------------------------------------------------------- keepalive

VANISHING_ADDRESS = "10.0.0.3"

_VANISHING_CLIENT = f"""
import socket, sys, time
s = socket.socket()
s.bind(("{VANISHING_ADDRESS}", 0))
s.settimeout(10)
s.connect(("{STACK_ADDRESS}", 7))
s.sendall(b"hello")
got = b""
while len(got) < 5:
    got += s.recv(5 - len(got))
print("READY", got.decode(), flush=True)
time.sleep(60)  # keep the socket; its address is about to disappear
"""


@pytest.mark.parametrize(
    ("flags", "left_open"),
    [
        pytest.param(("--keepalive", "1", "--keepalive-interval", "1", "--keepalive-count", "2"),
                     0, id="keepalive-drops-the-dead-peer"),
        pytest.param(("--no-keepalive",), 1, id="without-keepalive-it-stays"),
    ],
)
def test_keepalive_ends_a_connection_whose_peer_vanished(
    netns: NetNS, serve: DaemonFactory, flags: tuple[str, ...], left_open: int
) -> None:
    d = serve(*flags)
    netns.ip("addr", "add", f"{VANISHING_ADDRESS}/32", "dev", INTERFACE)
    client = netns.popen(
        [sys.executable, "-c", _VANISHING_CLIENT],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=netns.python_env(),
    )
    assert client.stdout is not None
    assert client.stdout.readline().strip() == "READY hello"
    # The peer vanishes without a FIN or RST: its address is gone, nothing answers.
    netns.ip("addr", "del", f"{VANISHING_ADDRESS}/32", "dev", INTERFACE)
    # Keepalive gives up after 1 s idle + 2 probes 1 s apart; wait well beyond that.
    time.sleep(8)
    exit_ = d.stop()
    assert_clean_exit(exit_)
    assert f"closing {left_open} connection(s)" in exit_.log, exit_.log


# ------------------------------------------------------- the TUN goes away


def test_daemon_exits_1_with_one_error_line_when_its_interface_is_deleted(
    netns: NetNS, serve: DaemonFactory
) -> None:
    d = serve()
    # An open connection must not hold the exit up.
    holder = netns.popen(
        ["nc", STACK_ADDRESS, "7"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    still_serves(netns)
    netns.ip("link", "del", INTERFACE)
    assert wait_for(lambda: not d.running(), timeout=15), d.log
    exit_ = d.stop()
    holder.kill()
    holder.wait(timeout=10)
    assert exit_.returncode == 1, exit_.log
    assert "Traceback" not in exit_.log, exit_.log
    errors = [line for line in exit_.log.splitlines() if line.startswith("tcpstack: error:")]
    assert len(errors) == 1, exit_.log
    assert "went away" in errors[0] and INTERFACE in errors[0], errors
    assert "EBADFD" in errors[0], errors
    assert parse_counters(exit_.log).get("device_failed") == 1, exit_.log


_LIBRARY_ON_ASYNCIO = f"""
import asyncio, ipaddress, json, subprocess
from tcpstack.aio.network import Network
from tcpstack.link.tun import TunDevice
from tcpstack.stack import StackConfig

class Counting:
    def __init__(self, device):
        self.device = device
        self.reads = 0
    def fileno(self):
        return self.device.fileno()
    def read_batch(self, *args):
        self.reads += 1
        return self.device.read_batch(*args)
    def write_batch(self, packets):
        return self.device.write_batch(packets)

async def main(device):
    counting = Counting(device)
    net = Network(counting, StackConfig())
    failed = asyncio.get_running_loop().create_future()
    net.runtime.on_fatal = failed.set_result
    subprocess.run(["ip", "link", "del", "{INTERFACE}"], check=True)
    error = await asyncio.wait_for(failed, 10)
    reads_at_failure = counting.reads
    await asyncio.sleep(1.0)  # a busy loop would read thousands of times meanwhile
    await net.aclose(grace=0)
    print("RESULT " + json.dumps({{"errno": error.errno, "operation": error.operation,
                                   "reads_at_failure": reads_at_failure,
                                   "reads_after": counting.reads}}), flush=True)

device = TunDevice.open("{INTERFACE}", host_address=ipaddress.IPv4Interface("10.0.0.1/24"))
try:
    asyncio.run(main(device))
finally:
    device.close()
"""


def test_library_on_plain_asyncio_stops_reading_a_deleted_interface(netns: NetNS) -> None:
    """Without uvloop a dead TUN is "readable" for ever; the runtime must not spin."""
    proc = netns.exec_python(_LIBRARY_ON_ASYNCIO, timeout=60)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and len(lines) == 1, proc.stdout + proc.stderr
    result = json.loads(lines[0][len("RESULT ") :])
    assert result["operation"] == "read"
    assert result["errno"] == 77  # EBADFD
    assert result["reads_after"] == result["reads_at_failure"], result
