"""PyTCP in a virtualenv of its own (never the project's), created on demand.

``pip install pytcp`` runs with the ordinary client into ``--pytcp-venv``
(default ``/tmp/bench-pytcp-venv``). Which release pip resolves depends on the
interpreter: the PyTCP 3.0.x releases require Python >= 3.14 and several 2.7.x
ones >= 3.12, so under Python 3.11 the newest installable release is 2.7.6.
:func:`ensure_pytcp` checks that what got installed has the pieces
:mod:`tools.bench.pytcp_server` uses, and otherwise says why not.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEFAULT_VENV = Path("/tmp/bench-pytcp-venv")

_CHECK = (
    "import importlib.metadata as m, sys\n"
    "import pytcp, pytcp.config, pytcp.lib.socket as s\n"
    "assert hasattr(pytcp, 'TcpIpStack'), 'no pytcp.TcpIpStack'\n"
    "assert hasattr(s, 'socket'), 'no pytcp.lib.socket.socket'\n"
    "print(m.version('pytcp'), '%d.%d' % sys.version_info[:2])\n"
)


class PytcpUnavailable(Exception):
    """PyTCP cannot be used here; the message says why, in one line."""


def _check(python: Path) -> tuple[str, str]:
    result = subprocess.run([str(python), "-c", _CHECK], capture_output=True, text=True,
                            timeout=60, check=False)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["import failed"])[-1]
        raise PytcpUnavailable(f"the installed PyTCP is not usable: {tail}")
    version, pyver = result.stdout.split()
    return version, pyver


def ensure_pytcp(venv: Path, install: bool = True) -> tuple[Path, str, str]:
    """Return (python, PyTCP version, Python version) of a venv with a usable PyTCP.

    Creates the venv and installs PyTCP into it if needed (bounded by
    timeouts); raises :class:`PytcpUnavailable` with the reason otherwise.
    """
    python = venv / "bin" / "python"
    if python.exists():
        try:
            return (python, *_check(python))
        except (PytcpUnavailable, subprocess.TimeoutExpired, ValueError):
            if not install:
                raise
    if not install:
        raise PytcpUnavailable(f"no PyTCP virtualenv at {venv}")
    try:
        if not python.exists():
            made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True,
                                  text=True, timeout=180, check=False)
            if made.returncode != 0:
                tail = (made.stderr.strip().splitlines() or ["venv failed"])[-1]
                raise PytcpUnavailable(f"cannot create a virtualenv at {venv}: {tail}")
        pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "pytcp"],
                             capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired as exc:
        raise PytcpUnavailable(f"installing PyTCP timed out after {exc.timeout:g}s") from None
    if pip.returncode != 0:
        errors = [ln for ln in pip.stderr.splitlines() if ln.startswith("ERROR")]
        raise PytcpUnavailable("pip install pytcp failed: "
                               + (errors[-1] if errors else pip.stderr.strip()[-200:]))
    try:
        return (python, *_check(python))
    except (subprocess.TimeoutExpired, ValueError) as exc:
        raise PytcpUnavailable(f"the installed PyTCP is not usable: {exc}") from None
