"""What observation costs: ``python -m tools.bench.observe_cost`` (as root).

Two measurements:

* **connection rate** (``ab -c 16``, HTTP/1.0, a connection per request) against
  ``tcpstack serve`` in a namespace, with each observation variant in turn
  (default; ``--trace-handshakes``; ``--pcap``; ``--metrics``), a fresh server per
  run, the variants interleaved round by round so that drift hits them alike;
  medians are reported -- and the server's CPU time per connection (user + system,
  from ``/proc/PID/stat`` around each repetition), which moves far less with what
  else the machine does than the rate on a shared 2-core machine;
* **in-process cost** (``--micro``): two stacks in memory open, use and close
  connections with no observer, the light observer, and full observation
  (ladders and histories), timed in CPU time (``time.process_time``: other work on
  a shared machine does not count) -- no kernel, no
  clients, so the difference is the observer's own cost per connection.

Prints a Markdown table; writes JSON to ``--out`` (default ``bench-results/``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tools.bench import netns
from tools.bench.cli import preflight
from tools.bench.client import process_cpu_seconds
from tools.bench.netns import SetupError
from tools.bench.settings import sizes_for
from tools.bench.targets import TcpstackTarget, default_pinning
from tools.bench.workloads import run_workload

CAPTURE_LIMIT = 256 * 1024 * 1024
"""``--pcap-max-size`` of the capture variant (two files kept): disk use is bounded."""


def variants(log_dir: Path) -> dict[str, list[str]]:
    """The ``tcpstack serve`` flags of each variant; the capture goes to ``log_dir``
    (ladders, on the server's stdout, to its log there)."""
    return {
        "default (light observer)": [],
        "--trace-handshakes": ["--trace-handshakes"],
        "--pcap": ["--pcap", str(log_dir / "observe-cost.pcapng"), "--pcap-max-size",
                   str(CAPTURE_LIMIT)],
        "--metrics (full observation)": ["--metrics", "127.0.0.1:9109"],
    }


class _Variant(TcpstackTarget):
    def __init__(self, *args: Any, flags: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flags = flags

    def server_argv(self) -> list[str]:
        return [*super().server_argv(), *self.flags]


def connrate(mode: str, rounds: int, log_dir: Path
             ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Connections per second and the server's CPU seconds per connection, for each
    variant, one value per repetition."""
    sizes = sizes_for(mode, "tcpstack")
    flags_of = variants(log_dir.resolve())
    results: dict[str, list[float]] = {name: [] for name in flags_of}
    cpu: dict[str, list[float]] = {name: [] for name in flags_of}
    target = _Variant(sizes, log_dir, flags=[])
    target.pin = default_pinning()
    current = ""

    @contextlib.contextmanager
    def measure_cpu(workload: str, rep: int) -> Iterator[None]:
        pid = target.server_pid
        before = process_cpu_seconds(pid)
        yield
        after = process_cpu_seconds(pid)
        if before is not None and after is not None:
            cpu[current].append((after - before) / sizes.connrate_n)

    try:
        target.setup()
        for r in range(rounds):
            for name, flags in flags_of.items():
                target.flags = flags
                target.fresh = False  # a fresh server with these flags
                current = name
                out = run_workload("connrate", target, measure_cpu)
                rps = out.summary.get("rps")
                print(f"observe-cost: round {r + 1}/{rounds} {name}: "
                      f"{'failed: ' + out.reason if rps is None else f'{rps:,.0f} conn/s'}",
                      file=sys.stderr, flush=True)
                if rps is not None:
                    results[name].append(rps)
    finally:
        target.teardown()
        for capture in log_dir.glob("observe-cost.pcapng*"):
            capture.unlink()
    return results, cpu


def connrate_table(rates: dict[str, list[float]], cpu: dict[str, list[float]]) -> list[str]:
    """The Markdown rows of the connection-rate part: medians, and each against the
    first (default) variant."""
    base_name = next(iter(rates))
    base = statistics.median(rates[base_name] or [0.0])
    base_cpu = statistics.median(cpu.get(base_name) or [0.0])
    lines = ["| `tcpstack serve` flags (`ab -c 16`, HTTP/1.0) | connections/s (median) "
             "| runs | vs default | server CPU per connection, µs (median) | vs default |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, values in rates.items():
        med = statistics.median(values) if values else 0.0
        ratio = f"{med / base:.2f}x" if base else "-"
        used = cpu.get(name) or []
        cpu_med = statistics.median(used) if used else 0.0
        cpu_text = f"{cpu_med * 1e6:,.0f}" if used else "-"
        cpu_ratio = f"{cpu_med / base_cpu:.2f}x" if used and base_cpu else "-"
        lines.append(f"| {name} | {med:,.0f} | {len(values)} | {ratio} | {cpu_text} "
                     f"| {cpu_ratio} |")
    return lines


class _Pair:
    """Two stacks back to back in memory with a fake clock (as the unit tests' Net)."""

    def __init__(self) -> None:
        import ipaddress
        import random

        from tcpstack.stack import Stack, StackConfig

        def make(addr: str, seed: int) -> Stack:
            cfg = StackConfig(addresses=(ipaddress.IPv4Address(addr),))
            return Stack(cfg, isn_secret=bytes(32), rng=random.Random(seed))

        self.a, self.b = make("10.0.0.1", 1), make("10.0.0.2", 2)
        self.now = 0.0

    def step(self) -> bool:
        moved = False
        for src, dst in ((self.a, self.b), (self.b, self.a)):
            packets = src.packets_to_send(self.now)
            src.take_notified()
            for pkt in packets:
                moved = True
                dst.receive(bytes(pkt) if not isinstance(pkt, tuple) else b"".join(pkt),
                            self.now)
        return moved

    def run(self, app: Callable[[], None], until: Callable[[], bool]) -> None:
        for _ in range(100_000):
            app()
            if self.step():
                continue
            if until():
                return
            deadlines = [d for d in (self.a.next_deadline(), self.b.next_deadline())
                         if d is not None]
            if not deadlines:
                break
            self.now = max(self.now, min(deadlines))
            self.a.handle_timer(self.now)
            self.b.handle_timer(self.now)
        raise RuntimeError("the in-memory exchange did not settle")


def micro(connections: int = 2000, repeats: int = 5) -> dict[str, float]:
    """Seconds per connection (open, 1 KB each way, close) for each observer mode,
    both stacks' work included (only the server's stack is observed)."""
    from tcpstack.observe.core import Observatory
    from tcpstack.tcp.state import State

    done = (State.TIME_WAIT, State.CLOSED)

    def run(mode: str) -> float:
        net = _Pair()
        if mode != "off":
            obs = Observatory(net.b, packets=mode != "light")
            if mode == "full":
                obs.enable_ladders()
                obs.enable_history()
                obs.on_ladder.append(lambda doc: None)
            obs.attach()
        net.b.listen(80)

        def serve() -> None:
            for t in list(net.b.tcbs.values()):
                if t.recv_buffered:
                    t.recv()
                    if t.state is State.CLOSE_WAIT:
                        t.send(bytes(1000))
                        t.close()

        t0 = time.process_time()
        for _ in range(max(1, connections // 50)):
            batch = [net.a.connect("10.0.0.2", 80, net.now) for _ in range(50)]

            def opened(b: list[Any] = batch) -> bool:
                return all(c.state is State.ESTABLISHED for c in b)

            def closed(b: list[Any] = batch) -> bool:
                return all(c.state in done for c in b) and all(
                    t.state in done for t in net.b.tcbs.values())

            net.run(lambda: None, opened)
            for c in batch:
                c.send(bytes(1000))
                c.close()
            net.run(serve, closed)
            net.now += 61  # TIME-WAIT ends
            net.a.handle_timer(net.now)
            net.b.handle_timer(net.now)
            net.step()
        return (time.process_time() - t0) / connections

    out: dict[str, float] = {}
    for _ in range(repeats):  # interleaved: drift on a shared machine hits all alike
        for mode in ("off", "light", "full"):
            value = run(mode)
            out[mode] = min(out.get(mode, value), value)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.observe_cost")
    p.add_argument("--quick", action="store_true", help="500 requests per run")
    p.add_argument("--tiny", action="store_true", help="50 requests per run (smoke test)")
    p.add_argument("--rounds", type=int, default=3, help="runs per variant (default: 3)")
    p.add_argument("--micro", action="store_true", help="only the in-process measurement")
    p.add_argument("--out", type=Path, default=Path("bench-results"))
    args = p.parse_args(argv)
    doc: dict[str, Any] = {"time": time.strftime("%Y-%m-%d %H:%M:%S")}
    m = micro(200 if args.tiny else 2000, 1 if args.tiny else 5)
    doc["micro_seconds_per_connection"] = m
    lines = ["| observer (in-process, per connection: open, 1 KB each way, close) | µs | "
             "vs off |", "|---|---:|---:|"]
    for mode, secs in m.items():
        lines.append(f"| {mode} | {secs * 1e6:,.1f} | {secs / m['off']:.3f}x |")
    if not args.micro:
        mode = "tiny" if args.tiny else "quick" if args.quick else "full"
        try:
            preflight(["connrate"])
            log_dir = args.out / "logs"
            log_dir.mkdir(parents=True, exist_ok=True)
            rates, cpu = connrate(mode, args.rounds, log_dir)
        except SetupError as e:
            print(f"bench: error: {e}", file=sys.stderr)
            return 1
        finally:
            netns.close_all()
        doc["connrate"] = rates
        doc["connrate_server_cpu_seconds_per_connection"] = cpu
        lines += ["", *connrate_table(rates, cpu)]
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "observe-cost.json").write_text(json.dumps(doc, indent=1))
    (args.out / "observe-cost.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
