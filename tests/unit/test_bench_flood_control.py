"""The SYN flood's control arm on tcpstack: the same flood with the flooder's socket
marked (SO_MARK) and its SYNs dropped by netfilter before the TUN. Nothing is run here:
the targets are fakes, and the flood client (``client_run``), the quiet-machine wait and
the iptables runner are replaced (the shared fakes: flood_fakes.py); the flooder's
socket is a fake too."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from flood_fakes import MARK, Events, FakeTarget, rep_fields, reps_run
from flood_fakes import events as events  # a fixture: pytest finds it here
from flood_fakes import script as script  # a fixture: pytest finds it here

from tools.bench import cli, client, report, settings, workloads
from tools.bench.netns import SetupError
from tools.bench.settings import FULL, QUICK, TINY, Sizes
from tools.bench.targets import Target
from tools.bench.workloads import FLOOD_CONTROL_ARM, FLOOD_CONTROL_MARK, Outcome


def _sizes(reps: int, control: bool = True) -> Sizes:
    return dataclasses.replace(TINY, flood_reps=reps, flood_control=control)


@pytest.fixture
def iptables(monkeypatch: pytest.MonkeyPatch, events: Events) -> list[list[str]]:
    """iptables is installed; its commands are recorded (in ``events`` too), not run."""
    commands: list[list[str]] = []

    def run_iptables(target: Target, args: list[str]) -> None:
        commands.append(list(args))
        events.append((target.name, "iptables", *args))

    monkeypatch.setattr(workloads, "run_iptables", run_iptables)
    monkeypatch.setattr(shutil, "which",
                        lambda name: f"/usr/sbin/{name}" if name == "iptables" else None)
    return commands


def _pair(tmp_path: Path, events: Events, reps: int,
          control: bool = True) -> tuple[FakeTarget, FakeTarget]:
    return (FakeTarget("tcpstack", _sizes(reps, control), events, tmp_path),
            FakeTarget("kernel", _sizes(reps, control), events, tmp_path))


# -- the order, and the rule around each control repetition -------------------------------


def test_mirrored_orders() -> None:
    assert workloads.mirrored(3, 3) == [(0, 1, 2), (2, 1, 0), (0, 1, 2)]
    assert workloads.mirrored(4, 2) == workloads.abba(4)
    assert workloads.mirrored(0, 3) == []


def test_each_pair_runs_three_repetitions_in_mirrored_order(
        tmp_path: Path, events: Events, iptables: list[list[str]],
        script: dict[str, list[Any]]) -> None:
    tcp, kern = _pair(tmp_path, events, 4)
    script["tcpstack"] = [rep_fields(0.9)] * 4
    script["kernel"] = [rep_fields(1.0)] * 4
    script[FLOOD_CONTROL_ARM] = [rep_fields(1.05)] * 4
    outs = workloads.run_flood_paired([tcp, kern])
    c = FLOOD_CONTROL_ARM
    assert reps_run(events) == [
        "tcpstack1", "kernel1", f"{c}1",
        f"{c}2", "kernel2", "tcpstack2",
        "tcpstack3", "kernel3", f"{c}3",
        f"{c}4", "kernel4", "tcpstack4"]
    order = [["tcpstack", "kernel", c], [c, "kernel", "tcpstack"]] * 2
    assert outs["tcpstack"].params["order"] == order
    assert outs["kernel"].params["order"] == order
    # Every control repetition: a restarted server, the rule added just before the
    # client and deleted just after it, the pair's seed.
    add = ("tcpstack", "iptables", *workloads.control_rule("-A"))
    delete = ("tcpstack", "iptables", *workloads.control_rule("-D"))
    for i, event in enumerate(events):
        if event[0] == c and event[1] == "rep":
            assert events[i - 2:i + 2] == [("tcpstack", "restart"), add, event, delete]
    assert iptables.count(workloads.control_rule("-A")) == 4
    assert iptables.count(workloads.control_rule("-D")) == 4
    assert workloads.control_rule("-A") == ["-A", "OUTPUT", "-m", "mark", "--mark", MARK,
                                            "-j", "DROP"]
    # tcpstack's own repetitions stay its own, on the server as before.
    assert len(outs["tcpstack"].reps) == 4 and outs["tcpstack"].status == "ok"
    assert len(outs["tcpstack"].params["control"]["reps"]) == 4


def test_the_rule_is_deleted_even_when_the_control_repetition_raises(
        tmp_path: Path, events: Events, iptables: list[list[str]],
        script: dict[str, list[Any]]) -> None:
    tcp, kern = _pair(tmp_path, events, 3)
    script["tcpstack"] = [rep_fields(0.9)] * 3
    script["kernel"] = [rep_fields(1.0)] * 3
    script[FLOOD_CONTROL_ARM] = [rep_fields(1.05), RuntimeError("the client blew up"),
                                 rep_fields(1.0)]
    outs = workloads.run_flood_paired([tcp, kern])
    assert iptables == [workloads.control_rule("-A"), workloads.control_rule("-D")] * 2
    # The exception stops the control (recorded), not tcpstack nor the kernel.
    assert reps_run(events) == ["tcpstack1", "kernel1", f"{FLOOD_CONTROL_ARM}1",
                                 f"{FLOOD_CONTROL_ARM}2", "kernel2", "tcpstack2",
                                 "tcpstack3", "kernel3"]
    control = outs["tcpstack"].params["control"]
    assert control["reps"][1] == {"error": "RuntimeError: the client blew up"}
    assert control["failed"] == 1 and control["n"] == 1
    assert control["stopped_early"] == "at repetition 2: RuntimeError: the client blew up"
    assert outs["tcpstack"].status == "ok" and len(outs["tcpstack"].reps) == 3
    assert outs["tcpstack"].params["order"][1] == ["kernel", "tcpstack"]


def test_flood_dropped_deletes_the_rule_when_the_body_raises(
        tmp_path: Path, events: Events, iptables: list[list[str]]) -> None:
    tcp = FakeTarget("tcpstack", _sizes(1), events, tmp_path)
    with pytest.raises(ValueError), workloads.flood_dropped(tcp):
        events.append(("body",))
        raise ValueError("boom")
    assert [e[2] if len(e) > 2 else e[0] for e in events] == ["-A", "body", "-D"]


def test_a_rule_that_cannot_be_added_stops_only_the_control(
        tmp_path: Path, events: Events, monkeypatch: pytest.MonkeyPatch,
        script: dict[str, list[Any]]) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/sbin/iptables")

    def refuse(target: Target, args: list[str]) -> None:
        events.append(("tcpstack", "iptables", *args))
        raise SetupError("iptables -w -A OUTPUT ...: Couldn't load match `mark'")

    monkeypatch.setattr(workloads, "run_iptables", refuse)
    tcp, kern = _pair(tmp_path, events, 2)
    script["tcpstack"] = [rep_fields(0.9)] * 2
    script["kernel"] = [rep_fields(1.0)] * 2
    outs = workloads.run_flood_paired([tcp, kern])
    assert reps_run(events) == ["tcpstack1", "kernel1", "kernel2", "tcpstack2"]
    control = outs["tcpstack"].params["control"]
    assert control["reps"] == [{"error": "iptables -w -A OUTPUT ...: Couldn't load match "
                                         "`mark'"}]
    assert "Couldn't load match" in control["stopped_early"]
    assert outs["tcpstack"].status == "ok" and "control_ratio" not in outs["tcpstack"].summary


# -- the control's results: apart from tcpstack's ------------------------------------------


def test_control_repetitions_stay_out_of_tcpstacks_reps_and_status(
        tmp_path: Path, events: Events, iptables: list[list[str]],
        script: dict[str, list[Any]]) -> None:
    tcp, kern = _pair(tmp_path, events, 3)
    script["tcpstack"] = [rep_fields(0.9), rep_fields(0.8), rep_fields(0.85)]
    script["kernel"] = [rep_fields(1.0)] * 3
    script[FLOOD_CONTROL_ARM] = [rep_fields(1.05), {"error": "curl exit 28"}, rep_fields(1.0)]
    outs = workloads.run_flood_paired([tcp, kern])
    out = outs["tcpstack"]
    assert out.status == "ok" and out.reason == ""
    assert [r["ratio"] for r in out.reps] == [0.9, 0.8, 0.85]
    assert out.summary["flood_ratio"] == pytest.approx(0.85)
    assert out.summary["flood_ratio_n"] == 3.0
    control = out.params["control"]
    assert len(control["reps"]) == 3 and control["reps"][1] == {"error": "curl exit 28"}
    assert control["failed"] == 1 and control["first_error"] == "curl exit 28"
    assert "stopped_early" not in control  # an error record is not an exception: it goes on
    assert control["n"] == 2 and control["ratio_median"] == pytest.approx(1.025)
    assert out.summary["control_ratio"] == pytest.approx(1.025)
    # The note says so, and that it does not count against tcpstack.
    note = cli._flood_pairing_note(out.params["paired"], control)
    assert "1 of 3 control repetition(s) failed (first: curl exit 28)" in note
    assert "does not count against tcpstack's flood" in note


def test_control_summary_and_paired_figure(
        tmp_path: Path, events: Events, iptables: list[list[str]],
        script: dict[str, list[Any]]) -> None:
    tcp, kern = _pair(tmp_path, events, 3)
    script["tcpstack"] = [rep_fields(0.9), rep_fields(0.8), rep_fields(0.95)]
    script["kernel"] = [rep_fields(1.0), rep_fields(1.02), rep_fields(0.98)]
    script[FLOOD_CONTROL_ARM] = [rep_fields(1.05), rep_fields(0.75), rep_fields(1.1)]
    outs = workloads.run_flood_paired([tcp, kern])
    tout, kout = outs["tcpstack"], outs["kernel"]
    s = tout.summary
    assert (s["control_ratio"], s["control_ratio_min"], s["control_ratio_max"],
            s["control_ratio_n"]) == pytest.approx((1.05, 0.75, 1.1, 3.0))
    assert not any(k.startswith("control") for k in kout.summary)
    assert "control" not in kout.params
    control = tout.params["control"]
    assert control["what"] == workloads.FLOOD_CONTROL_WHAT
    assert "before the TUN" in control["what"] and "no SYN work" in control["what"]
    assert (control["ratio_median"], control["ratio_min"], control["ratio_max"],
            control["n"]) == pytest.approx((1.05, 0.75, 1.1, 3))
    assert control["mark"] == MARK and control["syn_rate_median"] == 2000.0
    assert control["failed"] == 0 and control["seconds"] >= 0
    figure = tout.params["paired"]
    assert figure is kout.params["paired"]
    assert figure["pairs"] == 3
    assert figure["tcpstack_ratio_minus_kernel"] == pytest.approx([-0.1, -0.22, -0.03])
    assert figure["control_ratio_median"] == pytest.approx(1.05)
    assert figure["control_pairs"] == 3
    assert figure["control_ratio_minus_tcpstack"] == pytest.approx([0.15, -0.05, 0.15])
    assert figure["control_ratio_minus_tcpstack_median"] == pytest.approx(0.15)
    assert figure["control_ratio_ge_tcpstack_pairs"] == 2
    note = cli._flood_pairing_note(figure, control)
    assert "mirrored order" in note and "ABBA" not in note
    assert "ratio median 1.05 [0.75-1.10] over 3 repetition(s)" in note
    assert "median +0.15, the control >= tcpstack in 2 of 3 pair(s)" in note


def test_the_report_shows_the_control_row_for_tcpstack_only(
        tmp_path: Path, events: Events, iptables: list[list[str]],
        script: dict[str, list[Any]]) -> None:
    tcp, kern = _pair(tmp_path, events, 2)
    script["tcpstack"] = [rep_fields(0.9)] * 2
    script["kernel"] = [rep_fields(1.0)] * 2
    script[FLOOD_CONTROL_ARM] = [rep_fields(1.0), rep_fields(1.1)]
    outs = workloads.run_flood_paired([tcp, kern])
    rows = report.evaluate({name: {"flood": out} for name, out in outs.items()})
    (row,) = [r for r in rows if r["key"] == "control_ratio"]
    assert row["cells"] == {"tcpstack": "1.05 [1.00-1.10]", "kernel": "—", "pytcp": "not run"}
    assert row["target"] == "—" and row["result"] == "—"
    assert row["tcpstack_over_kernel"] == "—"
    keys = [r["key"] for r in rows if r["workload"] == "flood"]
    assert keys.index("control_ratio") == keys.index("flood_ratio") + 1
    table = report.markdown_table(rows, ["flood"])
    assert "SYN flood, control: fetches/s OK during / before with the flood dropped" in table


# -- when the control is not available ------------------------------------------------------


def test_without_iptables_the_control_is_skipped_and_abba_kept(
        tmp_path: Path, events: Events, monkeypatch: pytest.MonkeyPatch,
        script: dict[str, list[Any]]) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(workloads, "run_iptables", lambda target, args: ran.append(args))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    tcp, kern = _pair(tmp_path, events, 4)
    script["tcpstack"] = [rep_fields(0.9)] * 4
    script["kernel"] = [rep_fields(1.0)] * 4
    outs = workloads.run_flood_paired([tcp, kern])
    assert ran == []
    assert reps_run(events) == ["tcpstack1", "kernel1", "kernel2", "tcpstack2",
                                 "tcpstack3", "kernel3", "kernel4", "tcpstack4"]
    assert outs["tcpstack"].params["order"] == [["tcpstack", "kernel"],
                                                ["kernel", "tcpstack"]] * 2
    assert outs["tcpstack"].params["control"] == {"skipped": "iptables is not installed"}
    assert "control_ratio" not in outs["tcpstack"].summary
    assert not any(k.startswith("control") for k in outs["tcpstack"].params["paired"])
    note = cli._flood_pairing_note(outs["tcpstack"].params["paired"],
                                   outs["tcpstack"].params["control"])
    assert "ABBA" in note
    assert "The control arm was not run: iptables is not installed" in note


def test_tiny_sizes_leave_the_control_out(
        tmp_path: Path, events: Events, iptables: list[list[str]],
        script: dict[str, list[Any]]) -> None:
    assert settings.TINY.flood_control is False
    assert settings.FULL.flood_control is True and settings.QUICK.flood_control is True
    assert settings.sizes_for("tiny", "tcpstack").flood_control is False
    tcp, kern = _pair(tmp_path, events, 2, control=False)
    script["tcpstack"] = script["kernel"] = [rep_fields(1.0)] * 2
    outs = workloads.run_flood_paired([tcp, kern])
    assert iptables == []
    assert reps_run(events) == ["tcpstack1", "kernel1", "kernel2", "tcpstack2"]
    reason = outs["tcpstack"].params["control"]["skipped"]
    assert "tiny" in reason


@pytest.mark.parametrize("sizes", [FULL, QUICK])
def test_full_and_quick_run_the_control(sizes: Sizes, tmp_path: Path, events: Events,
                                        iptables: list[list[str]]) -> None:
    tcp = FakeTarget("tcpstack", sizes, events, tmp_path)
    assert workloads.flood_control_skip(tcp) is None
    kern = FakeTarget("kernel", sizes, events, tmp_path)
    assert workloads.flood_control_skip(kern) == "the control runs on tcpstack only"


def test_run_flood_on_one_target_has_no_control(
        tmp_path: Path, events: Events, iptables: list[list[str]],
        script: dict[str, list[Any]]) -> None:
    tcp = FakeTarget("tcpstack", _sizes(2), events, tmp_path)
    script["tcpstack"] = [rep_fields(0.9)] * 2
    out = workloads.run_workload("flood", tcp)
    assert iptables == [] and reps_run(events) == ["tcpstack1", "tcpstack2"]
    assert "control" not in out.params and "control_ratio" not in out.summary


def test_the_kernel_alone_gets_no_control(
        tmp_path: Path, events: Events, iptables: list[list[str]],
        script: dict[str, list[Any]]) -> None:
    kern = FakeTarget("kernel", _sizes(2), events, tmp_path)
    other = FakeTarget("pytcp", _sizes(2), events, tmp_path)
    script["kernel"] = [rep_fields(1.0)] * 2
    outs = workloads.run_flood_paired([kern, other])
    assert iptables == [] and reps_run(events) == ["kernel1", "kernel2"]
    assert "control" not in outs["kernel"].params


# -- the iptables runner ---------------------------------------------------------------------


class FakeNs:
    def __init__(self, returncode: int, stderr: str = "") -> None:
        self.name = "tcpbench-test-A"
        self.returncode, self.stderr = returncode, stderr
        self.argv: list[list[str]] = []

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        self.argv.append(list(argv))
        return subprocess.CompletedProcess(argv, self.returncode, "", self.stderr)


def test_run_iptables_runs_in_the_server_namespace(tmp_path: Path) -> None:
    target = Target(TINY, tmp_path)
    with pytest.raises(SetupError, match="not set up"):
        workloads.run_iptables(target, workloads.control_rule("-A"))
    ns = FakeNs(0)
    target.server_ns = ns  # type: ignore[assignment]
    workloads.run_iptables(target, workloads.control_rule("-A"))
    assert ns.argv == [["iptables", "-w", "-A", "OUTPUT", "-m", "mark", "--mark", MARK,
                        "-j", "DROP"]]
    target.server_ns = FakeNs(2, "iptables v1.8.9: Couldn't load match `mark'\n")  # type: ignore[assignment]
    with pytest.raises(SetupError, match="Couldn't load match `mark'"):
        workloads.run_iptables(target, workloads.control_rule("-D"))


# -- the client: synflood --mark -------------------------------------------------------------


class FakeSocket:
    """A raw socket that records what is done to it."""

    calls: list[tuple[Any, ...]]
    refuse_mark = False

    def __init__(self, *args: Any) -> None:
        self.calls = [("socket", *args)]

    def setsockopt(self, level: int, name: int, value: int) -> None:
        if name == socket.SO_MARK and self.refuse_mark:
            raise PermissionError(1, "Operation not permitted")
        self.calls.append(("setsockopt", level, name, value))

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        self.calls.append(("sendto", addr))
        return len(data)

    def close(self) -> None:
        self.calls.append(("close",))

    def __enter__(self) -> FakeSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _synflood_args(*extra: str) -> argparse.Namespace:
    return client.build_parser().parse_args(
        ["synflood", "--host", "127.0.0.1", "--port", "9", "--subnet", "127.0.0.0/29",
         "--exclude", "127.0.0.1", "--rate", "100000", "--seconds", "1",
         "--max-packets", "3", *extra])


def test_synflood_mark_sets_so_mark_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FakeSocket] = []

    def factory(*args: Any) -> FakeSocket:
        made.append(FakeSocket(*args))
        return made[-1]

    monkeypatch.setattr(socket, "socket", factory)
    result = client.cmd_synflood(_synflood_args("--mark", "0x7E1"))
    assert result["sent"] == 3 and result["send_errors"] == 0 and result["mark"] == 0x7E1
    (sock,) = made
    assert sock.calls[0] == ("socket", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    assert sock.calls[1] == ("setsockopt", socket.SOL_SOCKET, socket.SO_MARK, 0x7E1)
    assert [c[0] for c in sock.calls].count("sendto") == 3

    made.clear()
    result = client.cmd_synflood(_synflood_args())  # no --mark: no SO_MARK
    assert result["mark"] == 0
    assert not [c for c in made[0].calls if c[0] == "setsockopt" and c[2] == socket.SO_MARK]


def test_synflood_mark_without_cap_net_admin_is_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FakeSocket] = []

    def factory(*args: Any) -> FakeSocket:
        made.append(FakeSocket(*args))
        made[-1].refuse_mark = True
        return made[-1]

    monkeypatch.setattr(socket, "socket", factory)
    result = client.cmd_synflood(_synflood_args("--mark", "2017"))
    assert result == {"error": "cannot set SO_MARK 0x7e1 on the flood's raw socket (it needs "
                               "CAP_NET_ADMIN): Operation not permitted"}
    assert made[0].calls[-1] == ("close",)
    assert not [c for c in made[0].calls if c[0] == "sendto"]


def test_mark_socket_leaves_mark_0_alone() -> None:
    sock = FakeSocket()
    assert client.mark_socket(sock, 0) is None  # type: ignore[arg-type]
    assert sock.calls == [("socket",)]


@pytest.mark.parametrize("text", ["-1", "0x100000000", "mark"])
def test_a_bad_mark_is_refused(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _synflood_args("--mark", text)
    assert "--mark" in capsys.readouterr().err


def test_flood_passes_its_mark_to_the_synflood_child(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []

    def fetches(url: str, timeout: float, until: Any) -> client.Fetches:
        done = client.Fetches()
        done.ok = done.attempts = 1
        return done

    def popen(argv: list[str], **kwargs: Any) -> Any:
        started.append(argv)
        raise OSError("not started in a test")

    monkeypatch.setattr(client, "_fetch_loop", fetches)
    monkeypatch.setattr(subprocess, "Popen", popen)
    for extra, mark in (([], "0"), (["--mark", "0x7e1"], "2017")):
        args = client.build_parser().parse_args(
            ["flood", "--host", "10.0.0.2", "--subnet", "10.0.0.0/24", "--rate", "10",
             "--seconds", "1", "--baseline", "0", *extra])
        with pytest.raises(OSError, match="not started"):
            client.cmd_flood(args)
        argv = started[-1]
        assert argv[argv.index("synflood") - 2:argv.index("synflood")] == \
            ["-m", "tools.bench.client"]
        assert argv[argv.index("--mark") + 1] == mark


def test_the_control_rep_passes_the_mark_to_the_flood_client(
        tmp_path: Path, events: Events, iptables: list[list[str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def client_run(target: Target, args: list[str], timeout: float) -> dict[str, Any]:
        seen.append(args)
        return rep_fields(1.0)

    monkeypatch.setattr(workloads, "client_run", client_run)
    monkeypatch.setattr(workloads, "wait_quiet", lambda limit: (True, 0.0, 0.0))
    tcp = FakeTarget("tcpstack", _sizes(1), events, tmp_path)
    control = Outcome("flood-control")
    assert workloads.flood_control_rep(tcp, control, None, 1)
    (args,) = seen
    assert args[args.index("--mark") + 1] == MARK and args[args.index("--seed") + 1] == "2"
    # The client parses what the workload passes.
    parsed = client.build_parser().parse_args(args)
    assert parsed.mark == FLOOD_CONTROL_MARK
    assert events[0] == ("tcpstack", "restart")


# -- the CLI's notes ---------------------------------------------------------------------


def test_the_notes_carry_the_control_with_the_pairing(
        tmp_path: Path, events: Events, iptables: list[list[str]],
        script: dict[str, list[Any]]) -> None:
    tcp, kern = _pair(tmp_path, events, 2)
    script["tcpstack"] = [rep_fields(0.9), rep_fields(0.8)]
    script["kernel"] = [rep_fields(1.0)] * 2
    script[FLOOD_CONTROL_ARM] = [rep_fields(1.05), rep_fields(1.0)]
    outs = workloads.run_flood_paired([tcp, kern])
    notes = cli._notes({name: {"flood": out} for name, out in outs.items()}, tcp.sizes)
    (note,) = [n for n in notes if "the repetitions alternated" in n]
    assert "tcpstack, the kernel, the control in pair 1" in note
    assert "ratio median 1.02 [1.00-1.05] over 2 repetition(s)" in note
    assert "the control >= tcpstack in 2 of 2 pair(s)" in note
    assert f"socket marked {MARK}" in note and "EPERM" in note
