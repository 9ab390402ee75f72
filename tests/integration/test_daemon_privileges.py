"""``tcpstack serve --user``: the daemon sets up its TUN as root, then serves unprivileged.

Each test runs the daemon in its own namespace. The daemon's PID is the
``Popen``'s (``ip netns exec`` execs the command), so its credentials are read
straight from ``/proc/PID/status``.
"""

from __future__ import annotations

import pwd
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpstack.privileges import process_status
from tests.integration.daemon import (
    STACK_ADDRESS,
    DaemonFactory,
    assert_clean_exit,
    link_exists,
)
from tests.netns import NetNS

pytestmark = pytest.mark.root


@pytest.fixture
def serve(netns: NetNS, tmp_path: Path) -> Iterator[DaemonFactory]:
    factory = DaemonFactory(netns, tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("this system has no user 'nobody'")


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(tok) for tok in text.split()]


def _assert_unprivileged(pid: int, user: pwd.struct_passwd) -> None:
    status = process_status(Path(f"/proc/{pid}/status"))
    assert status["Uid"].split() == [str(user.pw_uid)] * 4, status["Uid"]
    assert status["Gid"].split() == [str(user.pw_gid)] * 4, status["Gid"]
    assert status["Groups"] == "", status["Groups"]
    for key in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(status[key], 16) == 0, (key, status[key])
    assert status["NoNewPrivs"] == "1"


def test_user_nobody_serves_http_with_no_capabilities_and_exits_0(
    netns: NetNS, serve: DaemonFactory, nobody: pwd.struct_passwd
) -> None:
    d = serve("--user", "nobody")
    _assert_unprivileged(d.pid, nobody)

    page = netns.run(["curl", "-sS", "--max-time", "15", "-o", "/dev/null", "-w",
                      "%{http_code}", f"http://{STACK_ADDRESS}/"],
                     capture_output=True, text=True, timeout=30)
    assert page.returncode == 0, page.stderr
    assert page.stdout == "200"
    echo = netns.run(["nc", "-N", "-w", "10", STACK_ADDRESS, "7"], input="still here\n",
                     capture_output=True, text=True, timeout=30)
    assert echo.stdout == "still here\n", (echo.returncode, echo.stderr)

    exit_ = d.stop()
    assert_clean_exit(exit_)
    assert "running as user nobody" in exit_.log
    # Shutdown as an unprivileged user: closing the descriptor removes the
    # interface (it was not made persistent), with no warning about deleting it.
    assert "warning" not in exit_.log.lower(), exit_.log
    assert not link_exists(netns), netns.ip("-o", "link")


def test_every_worker_runs_as_the_user(
    netns: NetNS, serve: DaemonFactory, nobody: pwd.struct_passwd
) -> None:
    d = serve("--user", "nobody", "--workers", "2")
    workers = _children(d.pid)
    assert len(workers) == 2, workers
    for pid in (d.pid, *workers):
        _assert_unprivileged(pid, nobody)

    page = netns.run(["curl", "-sS", "--max-time", "15", f"http://{STACK_ADDRESS}/"],
                     capture_output=True, text=True, timeout=30)
    assert page.returncode == 0, page.stderr
    exit_ = d.stop()
    assert exit_.returncode == 0, exit_.log
    assert "Traceback" not in exit_.log, exit_.log
    assert not link_exists(netns), netns.ip("-o", "link")


def test_unknown_user_is_one_error_line_exit_2_and_no_interface(netns: NetNS) -> None:
    result = netns.run(
        [sys.executable, "-m", "tcpstack", "serve", "--user", "no-such-user-tcpstack"],
        capture_output=True, text=True, timeout=30, env=netns.python_env(),
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "tcpstack: error: unknown user 'no-such-user-tcpstack'"], result.stderr
    assert not link_exists(netns)

