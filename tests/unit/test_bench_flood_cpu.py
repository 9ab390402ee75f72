"""The flood workload's CPU figures (tools/bench/client.py): what a flood SYN costs
the machine and the server process."""

from __future__ import annotations

import os
import time

import pytest

from tools.bench import client


def test_per_syn_cost_is_the_extra_cores_over_the_syn_rate() -> None:
    cpu = {"baseline_machine_cores": 0.5, "flood_machine_cores": 0.9,
           "baseline_server_cores": 0.05, "flood_server_cores": 0.45}
    out = client._per_syn_us(cpu, 20_000.0)
    assert out["machine_us_per_syn"] == pytest.approx(20.0)
    assert out["server_us_per_syn"] == pytest.approx(20.0)


def test_per_syn_cost_needs_both_windows_and_a_rate() -> None:
    assert client._per_syn_us({"flood_machine_cores": 1.0}, 20_000.0) == {}
    assert client._per_syn_us({"baseline_machine_cores": 0.1, "flood_machine_cores": 1.0},
                              0.0) == {}


def test_cpu_window_sees_this_process_spin() -> None:
    window = client.CpuWindow(os.getpid())
    start = client.process_cpu_seconds(os.getpid())
    assert start is not None
    # Spin until this process has used 0.2 s of CPU (counted in clock ticks), at most
    # 10 s: on a loaded machine it gets less than a core, but it gets some.
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        now = client.process_cpu_seconds(os.getpid())
        if now is not None and now - start >= 0.2:
            break
    machine, process = window.cores()
    assert process is not None and machine is not None
    assert 0 < process <= 1.2  # one thread: at most a core (plus a tick's rounding)
    assert machine >= process - 0.15  # the machine's includes this process's


def test_cpu_window_of_a_gone_process_is_unknown() -> None:
    window = client.CpuWindow(2**22 + 12345)  # above the largest PID Linux hands out
    assert window.cores()[1] is None
    assert client.process_cpu_seconds(2**22 + 12345) is None


def test_cpu_fields_name_what_was_measured() -> None:
    fields = client._cpu_fields("flood", client.CpuWindow(os.getpid()))
    assert set(fields) == {"flood_machine_cores", "flood_server_cores"}
    assert client._cpu_fields("baseline", client.CpuWindow(0)).keys() == \
        {"baseline_machine_cores"}


def test_wait_exit_wakes_on_the_exit_not_by_polling() -> None:
    """It learns of the exit from the pidfd and then reaps with a plain wait: never
    Popen.wait(timeout), whose polling sees a 16 ms fetch at 31 ms."""
    import subprocess

    child = subprocess.Popen(["sleep", "0.05"])
    waits: list[float | None] = []

    class Recording:
        pid = child.pid

        def wait(self, timeout: float | None = None) -> int:
            waits.append(timeout)
            return child.wait(timeout)

    assert client.wait_exit(Recording(), 10.0)  # type: ignore[arg-type]
    assert waits == [None] and child.returncode == 0


def test_wait_exit_times_out_on_a_process_still_running() -> None:
    import subprocess

    proc = subprocess.Popen(["sleep", "5"], stdout=subprocess.PIPE)
    try:
        start = time.monotonic()
        assert not client.wait_exit(proc, 0.2)
        assert time.monotonic() - start < 2.0
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
