"""SIGTERM drains: no new connections, open ones may finish within ``--grace``.

A client that reads on the test's command keeps a download in flight: it reads
the first part of the body, says so, and reads no more until told to, so its
receive window stays full and the stack's send buffer never empties while the
daemon gets SIGTERM. (``curl --limit-rate`` was used first, but curl's limiter
may let megabytes through in a burst, so "in flight" depended on timing.)
Nothing here depends on how fast the machine is: every wait is bounded and
generous.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpstack.apps.http import iter_pattern
from tests.integration.daemon import (
    STACK_ADDRESS,
    DaemonFactory,
    assert_clean_exit,
    link_exists,
)
from tests.netns import NetNS, wait_for

pytestmark = pytest.mark.root

SIZE = 8 * 1024 * 1024
FIRST_PART = 512 * 1024  # read before SIGTERM; the rest is read after it
GRACE = 60.0  # far longer than the download needs, even on a loaded machine

# A download that pauses: read the response up to FIRST_PART bytes of body, print
# PAUSED, wait for a line on stdin, then read to EOF and print the status line,
# the body's length and its SHA-256. A small receive buffer keeps most of the
# body in the stack's send buffer while the client waits.
_PAUSED_DOWNLOAD = """
import hashlib, socket, sys
host, size, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
sock.settimeout(60)
sock.connect((host, 80))
request = f"GET /bytes/{size} HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n"
sock.sendall(request.encode())
data = b""
while b"\\r\\n\\r\\n" not in data:
    chunk = sock.recv(65536)
    if not chunk:
        sys.exit("EOF in the response header")
    data += chunk
head, _, body = data.partition(b"\\r\\n\\r\\n")
h = hashlib.sha256(body)
got = len(body)
while got < first:
    chunk = sock.recv(min(65536, first - got))
    if not chunk:
        sys.exit(f"EOF after {got} bytes of body, before the pause")
    h.update(chunk)
    got += len(chunk)
print("PAUSED", got, flush=True)
sys.stdin.readline()
while True:
    chunk = sock.recv(65536)
    if not chunk:
        break
    h.update(chunk)
    got += len(chunk)
print(head.split(b"\\r\\n")[0].decode(), got, h.hexdigest(), flush=True)
"""

_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10).close()
    print("CONNECTED")
except ConnectionRefusedError:
    print("REFUSED")
except OSError as e:
    print("ERROR " + repr(e))
"""


@pytest.fixture
def serve(netns: NetNS, tmp_path: Path) -> Iterator[DaemonFactory]:
    factory = DaemonFactory(netns, tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


def _expected_sha256(n: int) -> str:
    h = hashlib.sha256()
    for chunk in iter_pattern(n):
        h.update(chunk)
    return h.hexdigest()


def test_sigterm_lets_a_download_in_flight_finish_refuses_new_connections_exits_0(
    netns: NetNS, serve: DaemonFactory
) -> None:
    d = serve("--grace", str(GRACE))
    download = netns.popen(
        [sys.executable, "-c", _PAUSED_DOWNLOAD, STACK_ADDRESS, str(SIZE), str(FIRST_PART)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # In flight: the client has read the first part of the body and reads no more
    # until told to.
    assert download.stdout is not None and download.stdin is not None
    paused = download.stdout.readline()
    assert paused.startswith("PAUSED"), (paused, download.communicate(timeout=5), d.log)

    assert d.proc is not None
    d.proc.terminate()  # SIGTERM, by PID
    assert wait_for(lambda: "shutting down" in d.log, timeout=15), d.log

    refused = netns.run([sys.executable, "-c", _CONNECT, STACK_ADDRESS, "80"],
                        capture_output=True, text=True, timeout=30)
    assert refused.stdout.strip() == "REFUSED", (refused.stdout, refused.stderr, d.log)
    assert download.poll() is None, "the download ended before the new connection was tried"

    stdout, stderr = download.communicate("go\n", timeout=120)
    assert download.returncode == 0, (download.returncode, stderr, d.log)
    assert stdout.strip() == f"HTTP/1.1 200 OK {SIZE} {_expected_sha256(SIZE)}", (stdout, d.log)

    # Once the last connection is done the daemon exits by itself: it does not
    # sit out the grace period (and needs no second signal).
    d.proc.wait(timeout=GRACE / 2)
    exit_ = d.stop()
    assert_clean_exit(exit_)
    assert not link_exists(netns)
