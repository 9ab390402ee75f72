"""Shared setup for the integration tests: real TUN devices in throw-away namespaces.

Every test collected under ``tests/integration`` gets the ``root`` marker, and
is skipped (with the reason) when this machine cannot run them: not root, no
``/dev/net/tun``, or no network namespaces. As root on a capable machine they
run. Select or deselect them with ``-m root`` / ``-m "not root"``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
_REPO_ROOT = _HERE.parents[1]
if str(_REPO_ROOT) not in sys.path:  # so that plain `pytest` finds tests.netns and tcpstack
    sys.path.insert(0, str(_REPO_ROOT))

from tests.integration.daemon import DaemonFactory  # noqa: E402
from tests.netns import NetNS, require_root  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = None
    checked = False
    for item in items:
        if not item.path.resolve().is_relative_to(_HERE):
            continue
        item.add_marker(pytest.mark.root)
        if not checked:
            reason, checked = require_root(), True
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"integration test: {reason}"))


@pytest.fixture
def netns() -> Iterator[NetNS]:
    """A fresh network namespace with ``lo`` up, deleted (processes stopped) afterwards."""
    reason = require_root()
    if reason is not None:
        pytest.skip(reason)
    with NetNS() as ns:
        yield ns


@pytest.fixture
def serve(netns: NetNS, tmp_path: Path) -> Iterator[DaemonFactory]:
    """Start daemons in ``netns`` with ``serve(*args)``; all are stopped (SIGTERM)
    afterwards. (Some test files define their own, with extras.)"""
    factory = DaemonFactory(netns, tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()
