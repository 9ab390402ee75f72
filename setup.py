"""Build hook: compile the hot modules with mypyc when a C compiler is there.

The metadata lives in pyproject.toml; this file only adds the optional compiled
extension modules. The same Python source is compiled as it is (it is already
``mypy --strict`` clean); where no compiler or mypyc is available the package
installs as plain Python, which behaves the same, only slower.

``TCPSTACK_BUILD`` chooses: ``auto`` (default: compile if possible), ``compiled``
(fail if it cannot), ``pure`` (never compile: editable development installs, so a
stale extension never shadows edited source). ``tcpstack --version`` says which
one is installed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

from setuptools import setup

#: The modules that run per packet: the wire layer, the engine, the demux, the
#: runtime's read/process/write loop and the TUN device's batch reads and writes, and
#: the observer's per-packet path (connection records, handshake ladders, plot
#: histories: what --trace-handshakes, --metrics and the dashboard pay per packet).
#: The records (NamedTuple definitions) and the runtime's device protocols
#: (tcpstack/aio/devices.py) stay Python; mypyc builds those poorly.
_PACKAGES = ("tcpstack/wire", "tcpstack/tcp")
_SINGLE = ("tcpstack/stack.py", "tcpstack/aio/runtime.py", "tcpstack/link/tun.py",
           "tcpstack/observe/core.py", "tcpstack/observe/ladder.py",
           "tcpstack/observe/history.py")
_KEEP_PYTHON = {"tcpstack/wire/records.py"}


def _sources() -> list[str]:
    files = [str(p) for pkg in _PACKAGES for p in sorted(Path(pkg).glob("*.py"))]
    return [f for f in files + list(_SINGLE) if f not in _KEEP_PYTHON]


def _have_compiler() -> bool:
    cc = sysconfig.get_config_var("CC") or "cc"
    return shutil.which(shlex.split(cc)[0]) is not None


def _ext_modules() -> list[Any]:
    mode = os.environ.get("TCPSTACK_BUILD", "auto")
    if mode not in ("auto", "compiled", "pure"):
        sys.exit(f"tcpstack: error: TCPSTACK_BUILD must be auto, compiled or pure, not {mode!r}")
    if mode == "pure":
        return []
    reason = None
    if not _have_compiler():
        reason = "no C compiler"
    else:
        try:
            from mypyc.build import mypycify
        except ImportError:
            reason = "mypyc is not installed"
    if reason is not None:
        if mode == "compiled":
            sys.exit(f"tcpstack: error: cannot compile ({reason})")
        print(f"tcpstack: {reason}: installing the pure-Python modules", file=sys.stderr)
        return []
    return list(mypycify(_sources(), opt_level="3"))


setup(ext_modules=_ext_modules())
