"""Fakes shared by the SYN flood tests (test_bench_flood_paired.py,
test_bench_flood_control.py): a target that starts nothing, a successful repetition's
fields, and the ``events`` and ``script`` fixtures that replace the flood client
(``client_run``) and the quiet-machine wait. Nothing here runs a server or a client.

The fixtures are imported into a test module by name (``from flood_fakes import events,
script``); pytest finds them there as if they were defined in the module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tools.bench import workloads
from tools.bench.netns import SetupError
from tools.bench.settings import Sizes
from tools.bench.targets import Target
from tools.bench.workloads import FLOOD_CONTROL_ARM, FLOOD_CONTROL_MARK

#: What happened, in order: ``(name, "fresh", app)``, ``(name, "restart")``,
#: ``(arm, "rep", seed)``, and whatever a test adds.
Events = list[tuple[str, ...]]

#: The control arm's socket mark as the workload passes it (``--mark``).
MARK = f"{FLOOD_CONTROL_MARK:#x}"


class FakeTarget(Target):
    """A target that starts nothing: it records its server's (re)starts; with
    ``fail_restart`` set, a restart raises as a server that never became ready would."""

    def __init__(self, name: str, sizes: Sizes, events: Events, tmp_path: Path) -> None:
        super().__init__(sizes, tmp_path)
        self.name = name
        self.host = "10.0.0.2" if name == "tcpstack" else "10.9.0.1"
        self.flood_subnet = "10.0.0.0/24" if name == "tcpstack" else "10.9.0.0/24"
        self.events = events
        self.fail_restart = False

    def ensure_fresh(self, app: str = "services") -> None:
        self.events.append((self.name, "fresh", app))

    def restart_server(self) -> None:
        if self.fail_restart:
            raise SetupError("the server did not become ready")
        self.events.append((self.name, "restart"))


def rep_fields(ratio: float, recovery: float = 0.1) -> dict[str, Any]:
    """A successful repetition's fields, as ``client.py flood`` prints them."""
    return {"ratio": ratio, "recovery_seconds": recovery, "recovered": True,
            "syn_rate": 2000.0, "baseline_rate": 10.0, "flood_rate": 10.0 * ratio,
            "baseline_ok": 10, "baseline_attempts": 10, "flood_ok": 9, "flood_attempts": 10}


def reps_run(events: Events) -> list[str]:
    """The repetitions run, in order, as arm name and seed: ``["tcpstack1", ...]``."""
    return [f"{name}{seed}" for name, what, *rest in events if what == "rep"
            for seed in rest]


@pytest.fixture
def events() -> Events:
    return []


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch, events: Events) -> dict[str, list[Any]]:
    """Per arm name (tcpstack, kernel, tcpstack-control), what each repetition (by seed)
    of the flood client returns; an exception instance is raised instead. A repetition
    run with ``--mark`` (only tcpstack's, with the control's mark) is the control arm's."""
    results: dict[str, list[Any]] = {}

    def client_run(target: Target, args: list[str], timeout: float) -> dict[str, Any]:
        assert args[0] == "flood" and args[args.index("--host") + 1] == target.host
        seed = int(args[args.index("--seed") + 1])
        marked = "--mark" in args
        if marked:
            assert target.name == "tcpstack" and args[args.index("--mark") + 1] == MARK
        arm = FLOOD_CONTROL_ARM if marked else target.name
        events.append((arm, "rep", str(seed)))
        result = results[arm][seed - 1]
        if isinstance(result, Exception):
            raise result
        return dict(result)

    monkeypatch.setattr(workloads, "client_run", client_run)
    monkeypatch.setattr(workloads, "wait_quiet", lambda limit: (True, 0.0, 0.0))
    return results
