"""Which build of tcpstack is running: modules compiled with mypyc, or plain Python.

Both are the same source (see setup.py); the compiled one is faster. The daemon
logs it at start-up and ``tcpstack --version`` prints it.
"""

from __future__ import annotations

import importlib.machinery


def is_compiled() -> bool:
    """True if the engine's modules are mypyc-compiled extension modules."""
    from tcpstack.tcp import tcb

    origin = tcb.__file__ or ""
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def build_kind() -> str:
    """``"compiled (mypyc)"`` or ``"pure Python"``."""
    return "compiled (mypyc)" if is_compiled() else "pure Python"
