"""Optional py-spy sampling of the tcpstack server during the workloads (``--py-spy DIR``).

For every repetition of each workload, ``py-spy record --format raw``
samples the ``tcpstack serve`` process by PID (py-spy reads its memory; it
sends no traffic and needs no namespace) into
``DIR/tcpstack-WORKLOAD-repN.raw.txt`` (collapsed stacks), is stopped with
SIGINT afterwards, and :func:`summarise` turns the stacks of all repetitions
into ``DIR/tcpstack-WORKLOAD.top.txt``, a top list by self time. Profiling
slows the server down: numbers from such a run are not the benchmark's.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tools.bench.netns import terminate

_LINE_NO = re.compile(r":\d+\)$")


class PySpy:
    """Records raw profiles of the tcpstack server, one file per workload repetition."""

    def __init__(self, out_dir: Path, pid_of: Callable[[], int], rate: int = 500) -> None:
        exe = shutil.which("py-spy")
        if exe is None:
            raise FileNotFoundError("py-spy is not on PATH (pip install py-spy)")
        self.exe = exe
        self.out_dir = out_dir
        self.pid_of = pid_of
        self.rate = rate
        self.files: dict[str, list[Path]] = {}
        out_dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def record(self, workload: str, rep: int) -> Iterator[None]:
        pid = self.pid_of()
        if pid == 0:
            yield
            return
        path = self.out_dir / f"tcpstack-{workload}-rep{rep + 1}.raw.txt"
        log = (self.out_dir / f"tcpstack-{workload}-rep{rep + 1}.py-spy.log").open("wb")
        proc: subprocess.Popen[Any] = subprocess.Popen(
            [self.exe, "record", "--pid", str(pid), "--rate", str(self.rate),
             "--format", "raw", "--output", str(path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(0.5)  # let py-spy attach before the load starts
        try:
            yield
        finally:
            # SIGINT makes py-spy write its output; SIGKILL after the grace period.
            terminate(proc, signal.SIGINT)
            log.close()
            if path.exists():
                files = self.files.setdefault(workload, [])
                files.append(path)
                (self.out_dir / f"tcpstack-{workload}.top.txt").write_text(
                    format_top(summarise(files)))


def summarise(paths: list[Path]) -> dict[str, Counter[str]]:
    """Self and total sample counts per function (``name (file)``) of raw py-spy profiles."""
    self_c: Counter[str] = Counter()
    total_c: Counter[str] = Counter()
    samples = 0
    lines = [ln for p in paths for ln in p.read_text(errors="replace").splitlines()]
    for line in lines:
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [_LINE_NO.sub(")", f) for f in stack.split(";") if f]
        frames = [f for f in frames if not f.startswith("process ")]
        if not frames:
            continue
        samples += count
        self_c[frames[-1]] += count
        for f in set(frames):
            total_c[f] += count
    return {"self": self_c, "total": total_c, "samples": Counter({"samples": samples})}


def format_top(summary: dict[str, Counter[str]], n: int = 30) -> str:
    """The top ``n`` functions by self time, then self time per source file."""
    samples = summary["samples"]["samples"] or 1
    lines = [f"{samples} samples (time in C code, e.g. uvloop's loop and its system calls, "
             "counts as self time of the Python frame that called it)", "",
             "self%   total%  function"]
    for name, count in summary["self"].most_common(n):
        lines.append(f"{100 * count / samples:5.1f}  {100 * summary['total'][name] / samples:6.1f}"
                     f"   {name}")
    by_file: Counter[str] = Counter()
    for name, count in summary["self"].items():
        by_file[name.rpartition("(")[2].rstrip(")") or name] += count
    lines += ["", "self%   file"]
    for name, count in by_file.most_common(n):
        lines.append(f"{100 * count / samples:5.1f}   {name}")
    return "\n".join(lines) + "\n"
