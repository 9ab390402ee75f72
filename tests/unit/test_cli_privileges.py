"""``tcpstack serve --user/--group`` input checks, before any interface is touched.

Like ``test_cli.py``, each invocation runs in a child interpreter whose
``TunDevice.open`` is replaced by a guard that exits 99, so a bad value that is
wrongly accepted shows up as a failure and never configures anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
GUARD_MARKER = "GUARD: TunDevice.open reached"

_GUARDED_MAIN = f"""
import sys
import tcpstack.link.tun as tun

def _refuse(*args, **kwargs):
    print({GUARD_MARKER!r}, file=sys.stderr, flush=True)
    raise SystemExit(99)

tun.TunDevice.open = _refuse
from tcpstack.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    return subprocess.run([sys.executable, "-c", _GUARDED_MAIN, *args], capture_output=True,
                          text=True, timeout=30, env=env, cwd=str(REPO_ROOT), check=False)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param(("--user", "no-such-user-tcpstack"), "unknown user", id="unknown-user"),
        pytest.param(("--user", "root"), "is root", id="root"),
        pytest.param(("--user", "nobody", "--group", "no-such-group-tcpstack"),
                     "unknown group", id="unknown-group"),
        pytest.param(("--group", "nogroup"), "--group needs --user", id="group-alone"),
    ],
)
def test_bad_user_or_group_is_one_error_line_exit_2_and_no_interface(
    args: tuple[str, ...], fragment: str
) -> None:
    result = run_cli("serve", *args)
    detail = f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"
    assert GUARD_MARKER not in result.stderr, "bad input reached the interface:\n" + detail
    assert result.returncode == 2, detail
    assert result.stdout == "", detail
    lines = result.stderr.splitlines()
    assert len(lines) == 1, detail
    assert lines[0].startswith("tcpstack: error:"), detail
    assert fragment in lines[0], detail


def test_a_valid_user_is_accepted_and_reaches_the_interface_setup() -> None:
    result = run_cli("serve", "--user", "nobody")
    assert GUARD_MARKER in result.stderr, result.stderr
    assert result.returncode == 99, result.stderr


def test_help_lists_user_and_group() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0, result.stderr
    assert "--user USER" in result.stdout
    assert "--group GROUP" in result.stdout
