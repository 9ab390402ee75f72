"""The fuzz tests drive the engine with the single-TCB helpers of the unit tests
(``tests/unit/tcp_helpers.py``): make them importable as ``tcp_helpers``, the
name the unit tests use, so both share one module."""

from __future__ import annotations

import sys
from pathlib import Path

_UNIT = Path(__file__).resolve().parents[1] / "unit"
if str(_UNIT) not in sys.path:
    sys.path.insert(0, str(_UNIT))
