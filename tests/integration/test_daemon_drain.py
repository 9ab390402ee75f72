"""SIGTERM drains: no new connections, open ones may finish within ``--grace``.

A rate-limited ``curl`` keeps a download in flight (its receive window stays
full, so the stack's send buffer never empties) while the daemon gets SIGTERM.
Nothing here depends on how fast the machine is: the download is slow by the
client's choice, and every wait is bounded and generous.
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
RATE = "2M"  # curl --limit-rate: about 4 s for SIZE
GRACE = 60.0  # far longer than the download needs, even on a loaded machine

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
    netns: NetNS, serve: DaemonFactory, tmp_path: Path
) -> None:
    d = serve("--grace", str(GRACE))
    out = tmp_path / "body"
    download = netns.popen(
        ["curl", "-sS", "--max-time", "120", "--limit-rate", RATE, "-o", str(out),
         "-w", "%{http_code} %{size_download}", f"http://{STACK_ADDRESS}/bytes/{SIZE}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # In flight: some of the body has arrived, most of it has not.
    assert wait_for(lambda: out.exists() and out.stat().st_size >= 256 * 1024, timeout=30), \
        "the download did not start"
    assert download.poll() is None, download.communicate(timeout=5)
    assert out.stat().st_size < SIZE // 2, "the download is too fast to be in flight"

    assert d.proc is not None
    d.proc.terminate()  # SIGTERM, by PID
    assert wait_for(lambda: "shutting down" in d.log, timeout=15), d.log

    refused = netns.run([sys.executable, "-c", _CONNECT, STACK_ADDRESS, "80"],
                        capture_output=True, text=True, timeout=30)
    assert refused.stdout.strip() == "REFUSED", (refused.stdout, refused.stderr, d.log)
    assert download.poll() is None, "the download ended before the new connection was tried"

    stdout, stderr = download.communicate(timeout=120)
    assert download.returncode == 0, (download.returncode, stderr, d.log)
    assert stdout == f"200 {SIZE}"
    h = hashlib.sha256()
    with out.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    assert h.hexdigest() == _expected_sha256(SIZE)

    # Once the last connection is done the daemon exits by itself: it does not
    # sit out the grace period (and needs no second signal).
    d.proc.wait(timeout=GRACE / 2)
    exit_ = d.stop()
    assert_clean_exit(exit_)
    assert not link_exists(netns)
