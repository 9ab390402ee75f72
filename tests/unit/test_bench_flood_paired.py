"""The SYN flood's repetitions alternate between tcpstack and the kernel (ABBA), both set
up at once, and the outcomes carry a paired figure. Nothing is run here: the targets are
fakes and the flood client (``client_run``) and the quiet-machine wait are replaced
(flood_fakes.py); tests/integration/test_bench_smoke.py runs the tool."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flood_fakes import Events, FakeTarget, rep_fields, reps_run
from flood_fakes import events as events  # a fixture: pytest finds it here
from flood_fakes import script as script  # a fixture: pytest finds it here

from tools.bench import cli, report, workloads
from tools.bench.netns import SetupError
from tools.bench.settings import TINY
from tools.bench.targets import Target
from tools.bench.workloads import Outcome


def _target(name: str, reps: int, events: Events, tmp_path: Path) -> FakeTarget:
    return FakeTarget(name, dataclasses.replace(TINY, flood_reps=reps), events, tmp_path)


def test_repetitions_alternate_abba(tmp_path: Path, events: Events,
                                    script: dict[str, list[Any]]) -> None:
    tcp = _target("tcpstack", 4, events, tmp_path)
    kern = _target("kernel", 4, events, tmp_path)
    script["tcpstack"] = [rep_fields(1.0)] * 4
    script["kernel"] = [rep_fields(1.0)] * 4
    outs = workloads.run_flood_paired([tcp, kern])
    assert list(outs) == ["tcpstack", "kernel"]
    assert reps_run(events) == ["tcpstack1", "kernel1", "kernel2", "tcpstack2",
                                 "tcpstack3", "kernel3", "kernel4", "tcpstack4"]
    # Both made fresh (the flood's own application) before the first pair; every later
    # repetition on a restarted server, just before it.
    assert events[:2] == [("tcpstack", "fresh", "services"), ("kernel", "fresh", "services")]
    for i, event in enumerate(events):
        if event[1] == "rep" and event[2] != "1":
            assert events[i - 1] == (event[0], "restart")
    for name, other in (("tcpstack", "kernel"), ("kernel", "tcpstack")):
        out = outs[name]
        assert out.status == "ok" and len(out.reps) == 4
        assert out.params["paired_with"] == other
        assert out.params["order"] == [["tcpstack", "kernel"], ["kernel", "tcpstack"]] * 2
        assert out.params["paired"]["pairs"] == 4
        assert out.seconds >= 0


def test_extra_repetitions_of_one_target_run_at_the_end(
        tmp_path: Path, events: Events, script: dict[str, list[Any]]) -> None:
    tcp = _target("tcpstack", 1, events, tmp_path)
    kern = _target("kernel", 3, events, tmp_path)
    script["tcpstack"] = [rep_fields(1.0)]
    script["kernel"] = [rep_fields(1.0)] * 3
    outs = workloads.run_flood_paired([tcp, kern])
    assert reps_run(events) == ["tcpstack1", "kernel1", "kernel2", "kernel3"]
    assert outs["kernel"].params["order"] == [["tcpstack", "kernel"], ["kernel"], ["kernel"]]
    assert outs["kernel"].params["paired"]["pairs"] == 1


def test_the_paired_figure_counts_pairs_where_both_succeeded(
        tmp_path: Path, events: Events, script: dict[str, list[Any]]) -> None:
    tcp = _target("tcpstack", 3, events, tmp_path)
    kern = _target("kernel", 3, events, tmp_path)
    script["tcpstack"] = [rep_fields(1.0), rep_fields(0.8), rep_fields(0.5)]
    script["kernel"] = [rep_fields(0.9), rep_fields(1.0), {"error": "client exited with status 1"}]
    outs = workloads.run_flood_paired([tcp, kern])
    figure = outs["tcpstack"].params["paired"]
    assert figure == outs["kernel"].params["paired"]
    assert figure["pairs"] == 2
    assert figure["tcpstack_ratio_minus_kernel"] == pytest.approx([0.1, -0.2])
    assert figure["tcpstack_ratio_minus_kernel_median"] == pytest.approx(-0.05)
    assert figure["tcpstack_ratio_ge_kernel_pairs"] == 1
    # The rows stay each stack's own medians.
    assert outs["tcpstack"].summary["flood_ratio"] == pytest.approx(0.8)
    assert outs["kernel"].summary["flood_ratio"] == pytest.approx(0.95)


def test_paired_ratios_without_a_good_pair() -> None:
    a = Outcome("flood", reps=[{"error": "x"}])
    b = Outcome("flood", reps=[rep_fields(1.0)])
    assert workloads.paired_ratios("tcpstack", a, "kernel", b) == {
        "pairs": 0, "tcpstack_ratio_minus_kernel": [],
        "tcpstack_ratio_minus_kernel_median": None, "tcpstack_ratio_ge_kernel_pairs": 0}


def test_a_failing_repetition_fails_only_that_targets_outcome(
        tmp_path: Path, events: Events, script: dict[str, list[Any]]) -> None:
    tcp = _target("tcpstack", 3, events, tmp_path)
    kern = _target("kernel", 3, events, tmp_path)
    script["tcpstack"] = [rep_fields(1.0)] * 3
    script["kernel"] = [rep_fields(1.0), {"error": "curl exit 28"}, rep_fields(1.0)]
    outs = workloads.run_flood_paired([tcp, kern])
    assert outs["tcpstack"].status == "ok"
    assert outs["kernel"].status == "failed"
    assert outs["kernel"].reason == "1 of 3 repetitions failed: curl exit 28"
    assert len(outs["kernel"].reps) == 3  # not a timeout: it went on


def test_a_timeout_stops_only_that_target(
        tmp_path: Path, events: Events, script: dict[str, list[Any]]) -> None:
    tcp = _target("tcpstack", 3, events, tmp_path)
    kern = _target("kernel", 3, events, tmp_path)
    script["tcpstack"] = [{"error": "timed out after 40s (hard timeout)"}]
    script["kernel"] = [rep_fields(1.0)] * 3
    outs = workloads.run_flood_paired([tcp, kern])
    assert reps_run(events) == ["tcpstack1", "kernel1", "kernel2", "kernel3"]
    assert outs["tcpstack"].status == "failed" and "stopped_early" in outs["tcpstack"].params
    assert outs["kernel"].status == "ok" and len(outs["kernel"].reps) == 3


def test_an_exception_fails_that_target_as_run_workload_would(
        tmp_path: Path, events: Events, script: dict[str, list[Any]]) -> None:
    tcp = _target("tcpstack", 3, events, tmp_path)
    kern = _target("kernel", 3, events, tmp_path)
    kern.fail_restart = True
    script["tcpstack"] = [rep_fields(1.0)] * 3
    script["kernel"] = [rep_fields(1.0)] * 3
    outs = workloads.run_flood_paired([tcp, kern])
    assert reps_run(events) == ["tcpstack1", "kernel1", "tcpstack2", "tcpstack3"]
    kernel = outs["kernel"]
    assert kernel.status == "failed" and kernel.reps == []
    assert kernel.reason == "server could not be (re)started: the server did not become ready"
    assert outs["tcpstack"].status == "ok" and len(outs["tcpstack"].reps) == 3
    assert kernel.params["paired"]["pairs"] == 0


def test_a_target_the_flood_skips_leaves_the_other_alone(
        tmp_path: Path, events: Events, script: dict[str, list[Any]]) -> None:
    tcp = _target("tcpstack", 2, events, tmp_path)
    other = _target("pytcp", 2, events, tmp_path)
    script["tcpstack"] = [rep_fields(1.0)] * 2
    outs = workloads.run_flood_paired([tcp, other])
    assert outs["pytcp"].status == "skipped"
    assert outs["pytcp"].reason == "flood is not run against pytcp"
    assert reps_run(events) == ["tcpstack1", "tcpstack2"]
    assert outs["tcpstack"].status == "ok" and "paired_with" not in outs["tcpstack"].params


def test_each_target_gets_its_own_hook(
        tmp_path: Path, events: Events, script: dict[str, list[Any]]) -> None:
    tcp = _target("tcpstack", 2, events, tmp_path)
    kern = _target("kernel", 2, events, tmp_path)
    script["tcpstack"] = script["kernel"] = [rep_fields(1.0)] * 2

    @contextlib.contextmanager
    def hook(workload: str, rep: int) -> Iterator[None]:
        events.append(("hook", workload, str(rep)))
        yield

    workloads.run_flood_paired([tcp, kern], {"tcpstack": hook, "kernel": None})
    reps = [e for e in events if e[1] in ("rep", "flood")]
    assert reps == [("hook", "flood", "0"), ("tcpstack", "rep", "1"), ("kernel", "rep", "1"),
                    ("kernel", "rep", "2"), ("hook", "flood", "1"), ("tcpstack", "rep", "2")]


def test_run_flood_on_one_target_is_unchanged(
        tmp_path: Path, events: Events, script: dict[str, list[Any]]) -> None:
    tcp = _target("tcpstack", 3, events, tmp_path)
    script["tcpstack"] = [rep_fields(0.9, 0.2), rep_fields(0.5, 0.6), rep_fields(0.7, 0.1)]
    out = workloads.run_workload("flood", tcp)
    assert events == [("tcpstack", "fresh", "services"), ("tcpstack", "rep", "1"),
                      ("tcpstack", "restart"), ("tcpstack", "rep", "2"),
                      ("tcpstack", "restart"), ("tcpstack", "rep", "3")]
    assert out.status == "ok" and len(out.reps) == 3
    s = out.summary
    assert (s["flood_ratio"], s["flood_ratio_min"], s["flood_ratio_max"],
            s["flood_ratio_n"]) == pytest.approx((0.7, 0.5, 0.9, 3.0))
    assert s["recovery_s"] == pytest.approx(0.6)  # the slowest, not the median
    assert s["recovered"] == 1.0
    assert (s["baseline_ok"], s["baseline_attempts"], s["flood_ok"],
            s["flood_attempts"]) == (30.0, 30.0, 27.0, 30.0)
    assert s["syn_rate"] == 2000.0 and s["flood_rate"] == pytest.approx(7.0)
    assert out.params["spoofed_from"] == "10.0.0.0/24" and out.params["fresh_server_per_rep"]
    assert "paired_with" not in out.params and "order" not in out.params


def test_teardown_lets_a_target_be_set_up_again(tmp_path: Path) -> None:
    target = Target(TINY, tmp_path)
    target.app, target.fresh = "cc:bbr", True
    target.teardown()  # no server, no namespace: nothing to stop
    assert (target.app, target.fresh, target.server_ns, target.client_ns) == \
        ("services", False, None, None)


# -- the CLI: which runner gets the flood ------------------------------------------------


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """``run_target`` and ``run_flood_alternating`` replaced: records what each was given."""
    calls: list[tuple[str, ...]] = []

    def run_target(target: Target, names: list[str], hook: Any,
                   fatal_setup: bool) -> tuple[dict[str, Outcome], str | None]:
        calls.append((target.name, *names))
        return {w: Outcome(w, status="skipped", reason="fake") for w in names}, None

    def run_flood_alternating(targets: tuple[Target, Target],
                              hooks: dict[str, Any]) -> dict[str, Outcome]:
        calls.append(("paired", *(t.name for t in targets)))
        figure = {"pairs": 2, "tcpstack_ratio_minus_kernel": [0.1, -0.2],
                  "tcpstack_ratio_minus_kernel_median": -0.05,
                  "tcpstack_ratio_ge_kernel_pairs": 1}
        return {t.name: Outcome("flood", status="skipped", reason="fake",
                                params={"paired": figure}) for t in targets}

    monkeypatch.setattr(cli, "run_target", run_target)
    monkeypatch.setattr(cli, "run_flood_alternating", run_flood_alternating)
    monkeypatch.setattr(report, "machine_meta", lambda: {})
    return calls


def _args(stacks: list[str]) -> argparse.Namespace:
    return cli.build_parser().parse_args(
        ["--stacks", ",".join(stacks), "--skip-pytcp", "--congestion-control", "cubic"])


def test_the_cli_pairs_the_flood_when_both_stacks_run(
        tmp_path: Path, routed: list[tuple[str, ...]]) -> None:
    doc = cli._run(_args(["tcpstack", "kernel"]), "tiny", ["connrate", "flood"], tmp_path)
    assert routed == [("tcpstack", "connrate"), ("kernel", "connrate"),
                      ("paired", "tcpstack", "kernel")]
    for stack in ("tcpstack", "kernel"):
        assert list(doc["results"][stack]) == ["connrate", "flood"]
    (note,) = [n for n in doc["notes"] if "ABBA" in n]
    assert "median -0.05 over the 2 pair(s)" in note
    assert "tcpstack's ratio >= the kernel's in 1 of 2" in note


def test_the_cli_runs_only_the_paired_flood_when_it_is_the_only_workload(
        tmp_path: Path, routed: list[tuple[str, ...]]) -> None:
    doc = cli._run(_args(["tcpstack", "kernel"]), "tiny", ["flood"], tmp_path)
    assert routed == [("paired", "tcpstack", "kernel")]
    assert list(doc["results"]) == ["tcpstack", "kernel"]
    assert list(doc["results"]["kernel"]) == ["flood"]


@pytest.mark.parametrize("stack", ["tcpstack", "kernel"])
def test_the_cli_runs_the_flood_as_before_for_one_stack(
        tmp_path: Path, routed: list[tuple[str, ...]], stack: str) -> None:
    doc = cli._run(_args([stack]), "tiny", ["connrate", "flood"], tmp_path)
    assert routed == [(stack, "connrate", "flood")]
    assert not [n for n in doc["notes"] if "ABBA" in n]


def test_the_paired_flood_sets_up_both_and_always_tears_both_down(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    class Recording(Target):
        fail = False

        def setup(self) -> None:
            calls.append(f"{self.name} setup")
            if self.fail:
                raise SetupError("no veth")

        def teardown(self) -> None:
            calls.append(f"{self.name} teardown")

    def paired(targets: list[Target], hooks: dict[str, Any]) -> dict[str, Outcome]:
        calls.append("run " + ",".join(t.name for t in targets))
        return {t.name: Outcome("flood") for t in targets}

    monkeypatch.setattr(cli, "run_flood_paired", paired)
    tcp, kern = Recording(TINY, tmp_path), Recording(TINY, tmp_path)
    tcp.name, kern.name = "tcpstack", "kernel"
    outs = cli.run_flood_alternating((tcp, kern), {"tcpstack": None, "kernel": None})
    assert list(outs) == ["tcpstack", "kernel"]
    assert calls == ["tcpstack setup", "kernel setup", "run tcpstack,kernel",
                     "kernel teardown", "tcpstack teardown"]
    calls.clear()
    kern.fail = True
    with pytest.raises(SetupError):
        cli.run_flood_alternating((tcp, kern), {})
    assert calls == ["tcpstack setup", "kernel setup", "kernel teardown", "tcpstack teardown"]


def test_flood_reps_overrides_the_modes_repetitions_for_every_stack(
        tmp_path: Path, routed: list[tuple[str, ...]]) -> None:
    args = cli.build_parser().parse_args(
        ["--stacks", "tcpstack,kernel", "--skip-pytcp", "--congestion-control", "cubic",
         "--flood-reps", "12"])
    doc = cli._run(args, "full", ["flood"], tmp_path)
    assert {doc["sizes"][s]["flood_reps"] for s in ("tcpstack", "kernel", "pytcp")} == {12}
    assert doc["sizes"]["tcpstack"]["flood_seconds"] == 10.0  # the rest of the mode's sizes
    plain = cli._run(_args(["tcpstack", "kernel"]), "full", ["flood"], tmp_path)
    assert plain["sizes"]["tcpstack"]["flood_reps"] == 5


@pytest.mark.parametrize("value", ["0", "-3", "101", "five", "2.5"])
def test_flood_reps_out_of_range_is_a_one_line_usage_error(
        value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["--flood-reps", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--flood-reps" in err[-1] and "from 1 to 100" in err[-1]
