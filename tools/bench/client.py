"""Benchmark clients, run as ``python -m tools.bench.client WORKLOAD ...`` inside a namespace.

Each subcommand prints exactly one ``RESULT {json}`` line on stdout and exits
0, also when the workload failed (then the JSON has an ``"error"`` key); every
loop is bounded both in count and by a deadline. Subcommands:

* ``probe`` -- wait until TCP connects to every given port succeed;
* ``upload`` -- send up to N bytes (or for at most S seconds) to discard,
  ``shutdown(SHUT_WR)``, wait for the server's FIN: throughput = bytes / time;
* ``echo`` -- send N bytes to echo while reading them back on the same
  connection (a reader thread), check every byte: throughput = N / time;
* ``latency`` -- 64-byte ping-pong over one connection to echo, one round
  trip timed with :func:`time.perf_counter_ns` each (``TCP_NODELAY`` on);
* ``idle`` -- open N concurrent connections to echo, measure the server
  process's VmRSS before and after, then check that each one still answers
  (1 byte sent and read back on every connection).

(The download and connection-rate workloads use ``curl`` and ``ab``.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

RESULT_PREFIX = "RESULT "


def emit(fields: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(fields), flush=True)


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE to at least ``wanted`` (root may raise the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    new_hard = max(hard, wanted)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, new_hard))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- probe ---------------------------------------------------------------------


def cmd_probe(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.timeout
    pending = [int(p) for p in args.ports.split(",") if p]
    attempts = 0
    last_error = ""
    while pending and time.monotonic() < deadline:
        port = pending[0]
        attempts += 1
        try:
            with socket.create_connection((args.host, port), timeout=2.0):
                pass
            pending.pop(0)
            continue
        except OSError as exc:
            last_error = f"port {port}: {exc}"
        time.sleep(0.2)
    if pending:
        return {"error": f"not reachable after {args.timeout:g}s: {last_error}",
                "attempts": attempts}
    return {"attempts": attempts}


# -- upload ----------------------------------------------------------------------


def cmd_upload(args: argparse.Namespace) -> dict[str, Any]:
    chunk = memoryview(b"\x5a" * args.chunk)
    deadline = time.monotonic() + args.timeout
    sent = 0
    with socket.create_connection((args.host, args.port), timeout=10.0) as sock:
        sock.settimeout(max(1.0, min(10.0, args.timeout)))
        t0 = time.perf_counter()
        send_until = t0 + args.max_seconds
        while sent < args.bytes and time.perf_counter() < send_until:
            n = min(len(chunk), args.bytes - sent)
            sock.sendall(chunk[:n])
            sent += n
            if time.monotonic() > deadline:
                return {"error": "timed out while sending", "bytes": sent}
        sock.shutdown(socket.SHUT_WR)
        # The server reads everything, then closes: its FIN means all of it arrived.
        while True:
            if time.monotonic() > deadline:
                return {"error": "timed out waiting for the server's FIN", "bytes": sent}
            data = sock.recv(65536)
            if not data:
                break
        elapsed = time.perf_counter() - t0
    return {"bytes": sent, "seconds": elapsed, "mbps": sent / elapsed / 1e6,
            "capped_by_time": sent < args.bytes}


# -- echo -----------------------------------------------------------------------


def echo_pattern(n: int) -> bytes:
    """``n`` bytes that are not periodic in any small period (misplaced data shows)."""
    block = bytes((i * 31 + i // 251) % 256 for i in range(65521))  # a prime length
    reps = -(-n // len(block))
    return (block * reps)[:n]


def cmd_echo(args: argparse.Namespace) -> dict[str, Any]:
    data = echo_pattern(args.bytes)
    view = memoryview(data)
    got = bytearray()
    failure: list[str] = []
    deadline = time.monotonic() + args.timeout
    with socket.create_connection((args.host, args.port), timeout=10.0) as sock:
        sock.settimeout(max(1.0, min(10.0, args.timeout)))

        def reader() -> None:
            buf = bytearray(256 * 1024)
            while len(got) < len(data):
                if time.monotonic() > deadline:
                    failure.append(f"timed out after reading {len(got)} bytes")
                    return
                try:
                    n = sock.recv_into(buf)
                except OSError as exc:
                    failure.append(f"{type(exc).__name__} after reading {len(got)} bytes: {exc}")
                    return
                if n == 0:
                    failure.append(f"echo closed the connection after {len(got)} bytes")
                    return
                got.extend(buf[:n])

        t0 = time.perf_counter()
        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        for off in range(0, len(data), args.chunk):
            if failure or time.monotonic() > deadline:
                break
            try:
                sock.sendall(view[off:off + args.chunk])
            except OSError as exc:
                failure.append(f"{type(exc).__name__} while sending: {exc}")
                break
        thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        elapsed = time.perf_counter() - t0
    if failure:
        return {"error": failure[0], "bytes": len(got)}
    if thread.is_alive():
        return {"error": f"timed out after reading {len(got)} bytes", "bytes": len(got)}
    if bytes(got) != data:
        first = next(i for i in range(len(data)) if got[i] != data[i])
        return {"error": f"echo returned different bytes (first at offset {first})"}
    return {"bytes": len(data), "seconds": elapsed, "mbps": len(data) / elapsed / 1e6}


# -- latency --------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..100) of an already sorted, non-empty list."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n*q/100), at least 1
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


def cmd_latency(args: argparse.Namespace) -> dict[str, Any]:
    payload = bytes(range(args.size)) if args.size <= 256 else b"\x61" * args.size
    buf = bytearray(args.size)
    view = memoryview(buf)
    samples: list[float] = []
    deadline = time.monotonic() + args.timeout
    with socket.create_connection((args.host, args.port), timeout=10.0) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(5.0)
        for i in range(args.warmup + args.count):
            if time.monotonic() > deadline:
                return {"error": f"timed out after {len(samples)} round trips"}
            t0 = time.perf_counter_ns()
            sock.sendall(payload)
            got = 0
            while got < args.size:
                n = sock.recv_into(view[got:], args.size - got)
                if n == 0:
                    return {"error": f"echo closed the connection after {i} round trips"}
                got += n
            t1 = time.perf_counter_ns()
            if bytes(buf) != payload:
                return {"error": f"echo returned different bytes in round trip {i}"}
            if i >= args.warmup:
                samples.append((t1 - t0) / 1000.0)
    samples.sort()
    return {"count": len(samples), "p50_us": percentile(samples, 50),
            "p99_us": percentile(samples, 99), "min_us": samples[0], "max_us": samples[-1],
            "mean_us": sum(samples) / len(samples)}


# -- idle ------------------------------------------------------------------------


def _vmrss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _sockstat(pid: int) -> dict[str, int]:
    """The TCP line of ``/proc/PID/net/sockstat`` (the server's namespace's view)."""
    try:
        text = Path(f"/proc/{pid}/net/sockstat").read_text()
    except OSError:
        return {}
    for line in text.splitlines():
        if line.startswith("TCP:"):
            toks = line.split()[1:]
            return {toks[i]: int(toks[i + 1]) for i in range(0, len(toks) - 1, 2)}
    return {}


SLAB_CACHES = ("TCP", "sock_inode_cache", "filp")
"""Kernel slab caches that grow with every open TCP socket."""


def _slabs() -> dict[str, list[int]]:
    """``{cache: [active objects, object size]}`` from ``/proc/slabinfo`` (system-wide)."""
    found: dict[str, list[int]] = {}
    try:
        text = Path("/proc/slabinfo").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        toks = line.split()
        if toks and toks[0] in SLAB_CACHES and len(toks) > 3 and toks[1].isdigit():
            found[toks[0]] = [int(toks[1]), int(toks[3])]
    return found


async def _idle(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.timeout
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    errors: dict[str, int] = {}
    sem = asyncio.Semaphore(args.concurrency)

    def note(exc: BaseException) -> None:
        key = type(exc).__name__
        errors[key] = errors.get(key, 0) + 1

    async def open_one() -> None:
        async with sem:
            if time.monotonic() > deadline:
                errors["deadline"] = errors.get("deadline", 0) + 1
                return
            try:
                conns.append(await asyncio.wait_for(
                    asyncio.open_connection(args.host, args.port), timeout=args.op_timeout))
            except (OSError, TimeoutError) as exc:
                note(exc)

    await asyncio.sleep(args.settle)
    rss_before = _vmrss_kib(args.server_pid) if args.server_pid else None
    sock_before = _sockstat(args.server_pid) if args.server_pid else {}
    slab_before = _slabs()
    t0 = time.perf_counter()
    await asyncio.gather(*(open_one() for _ in range(args.count)))
    open_seconds = time.perf_counter() - t0
    await asyncio.sleep(args.settle)
    rss_after = _vmrss_kib(args.server_pid) if args.server_pid else None
    sock_after = _sockstat(args.server_pid) if args.server_pid else {}
    slab_after = _slabs()

    answered = 0

    async def check(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        async with sem:
            if time.monotonic() > deadline:
                errors["deadline"] = errors.get("deadline", 0) + 1
                return
            try:
                writer.write(b"k")
                data = await asyncio.wait_for(reader.readexactly(1), timeout=args.op_timeout)
                if data == b"k":
                    answered += 1
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                note(exc)

    t1 = time.perf_counter()
    await asyncio.gather(*(check(r, w) for r, w in conns))
    check_seconds = time.perf_counter() - t1
    for _, writer in conns:
        writer.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True),
            timeout=10.0)
    result: dict[str, Any] = {
        "count": args.count, "opened": len(conns), "answered": answered,
        "open_seconds": open_seconds, "check_seconds": check_seconds, "errors": errors,
        "rss_before_kib": rss_before, "rss_after_kib": rss_after,
        "sockstat_before": sock_before, "sockstat_after": sock_after,
        "slab_before": slab_before, "slab_after": slab_after,
    }
    if rss_before is not None and rss_after is not None and conns:
        result["rss_per_conn_bytes"] = (rss_after - rss_before) * 1024 / len(conns)
    return result


def cmd_idle(args: argparse.Namespace) -> dict[str, Any]:
    limit = raise_nofile(args.count + 1024)
    if limit < args.count + 64:
        return {"error": f"RLIMIT_NOFILE is {limit}, too low for {args.count} connections"}
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_idle(args))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_idle(args))


# -- main --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.client")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("probe")
    p.add_argument("--host", required=True)
    p.add_argument("--ports", required=True, help="comma-separated")
    p.add_argument("--timeout", type=float, default=20.0)

    u = sub.add_parser("upload")
    u.add_argument("--host", required=True)
    u.add_argument("--port", type=int, default=9)
    u.add_argument("--bytes", type=int, required=True)
    u.add_argument("--max-seconds", type=float, default=10.0)
    u.add_argument("--chunk", type=int, default=256 * 1024)
    u.add_argument("--timeout", type=float, default=60.0)

    e = sub.add_parser("echo")
    e.add_argument("--host", required=True)
    e.add_argument("--port", type=int, default=7)
    e.add_argument("--bytes", type=int, required=True)
    e.add_argument("--chunk", type=int, default=64 * 1024)
    e.add_argument("--timeout", type=float, default=60.0)

    lat = sub.add_parser("latency")
    lat.add_argument("--host", required=True)
    lat.add_argument("--port", type=int, default=7)
    lat.add_argument("--count", type=int, required=True)
    lat.add_argument("--warmup", type=int, default=20)
    lat.add_argument("--size", type=int, default=64)
    lat.add_argument("--timeout", type=float, default=60.0)

    i = sub.add_parser("idle")
    i.add_argument("--host", required=True)
    i.add_argument("--port", type=int, default=7)
    i.add_argument("--count", type=int, required=True)
    i.add_argument("--server-pid", type=int, default=0)
    i.add_argument("--concurrency", type=int, default=128)
    i.add_argument("--op-timeout", type=float, default=10.0)
    i.add_argument("--settle", type=float, default=1.0)
    i.add_argument("--timeout", type=float, default=120.0)
    return parser


COMMANDS = {"probe": cmd_probe, "upload": cmd_upload, "echo": cmd_echo,
            "latency": cmd_latency, "idle": cmd_idle}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = COMMANDS[args.cmd](args)
    except (OSError, TimeoutError) as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
