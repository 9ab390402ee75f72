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
  (1 byte sent and read back on every connection);
* ``flood`` -- legitimate ``curl --max-time 2`` fetches of a small page, one
  after the other, before, during and after a spoofed SYN flood sent by
  ``synflood`` (a child process; ``--mark`` is passed on to it): successful fetches
  per second during the flood as a fraction of the rate before it, how soon after
  the flood a fresh fetch succeeds, and the CPU it costs (the machine's, the server's);
* ``synflood`` -- the flood itself: SYNs from random unused addresses of a subnet
  through a raw socket, at a fixed rate, bounded in count and time; with
  ``--mark N`` (``flood`` passes it on) the socket gets ``SO_MARK`` N (needs
  CAP_NET_ADMIN), so that a netfilter rule can tell its SYNs apart (the flood's
  control arm drops them in OUTPUT: each ``sendto`` then fails with EPERM,
  counted in ``send_errors``);
* ``tfo`` -- short HTTP/1.0 requests, a new connection each, timed from before
  the connect to the last byte of the response: plain (``connect()``, then the
  request) and TCP Fast Open (the request in the SYN: ``sendto(MSG_FASTOPEN)``),
  interleaved, after a few Fast Open requests that get the server's cookie;
  every response is checked, and whether each Fast Open SYN's data was
  acknowledged (``TCP_INFO``, and the namespace's ``TCPFastOpenActive``);
* ``bulkrtt`` -- a bulk download (``GET /bytes/N``, HTTP/1.0, every byte checked)
  for at most S seconds, while a second connection to echo does a 64-byte ping-pong
  every few milliseconds: goodput, and the round trips during the download minus
  the idle path's (measured just before): the queueing delay the download causes;
* ``sender`` -- run in the *server's* namespace during such a download: the
  sending connection as its stack sees it (``ss -tin`` for the kernel, the
  daemon's control socket for tcpstack: congestion control, smoothed RTT, BBR's
  model) every few tenths of a second until its stdin closes, and the stack's
  retransmission counters before and after.

(The download and connection-rate workloads use ``curl`` and ``ab``.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import random
import re
import resource
import select
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
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


# -- SYN flood -------------------------------------------------------------------


def _inet_sum(data: bytes) -> int:
    """The one's-complement sum of ``data`` (even length), folded to 16 bits."""
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


_MSS_OPTION = struct.pack("!BBH", 2, 4, 1460)
_SYN = struct.Struct("!BBHHHBBHIIHHIIBBHHH")


def syn_checksum_base(dst: int, dport: int) -> int:
    """The part of a flood SYN's TCP checksum sum that is the same for every SYN to
    ``dst:dport``: the pseudo-header's destination, protocol and length, and the
    header's constant words (ports aside, flags, window, the MSS option)."""
    return _inet_sum(struct.pack("!IHH", dst, 6, 24)) + dport + 0x6002 + 64240 + \
        _inet_sum(_MSS_OPTION)


def syn_packet(src: int, dst: int, sport: int, dport: int, seq: int, base: int) -> bytes:
    """An IPv4 SYN with an MSS option; IP checksum, length and ID are left to the kernel
    (IP_HDRINCL), the TCP checksum is complete."""
    total = base + (src >> 16) + (src & 0xFFFF) + sport + (seq >> 16) + (seq & 0xFFFF)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return _SYN.pack(0x45, 0, 0, 0, 0, 64, 6, 0, src, dst, sport, dport, seq, 0, 0x60, 0x02,
                     64240, ~total & 0xFFFF, 0) + _MSS_OPTION


def mark_socket(sock: socket.socket, mark: int) -> str | None:
    """Give ``sock`` the netfilter mark ``mark`` (``SO_MARK``, needs CAP_NET_ADMIN); 0
    leaves it unmarked. None when done, else why it could not be."""
    if not mark:
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    except OSError as exc:
        return (f"cannot set SO_MARK {mark:#x} on the flood's raw socket (it needs "
                f"CAP_NET_ADMIN): {exc.strerror or exc}")
    return None


def mark_value(text: str) -> int:
    """A ``--mark`` value: decimal or 0x hex, 0 to 2**32 - 1."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < 1 << 32:
        raise argparse.ArgumentTypeError(f"out of range (0 to 0xffffffff): {text!r}")
    return value


def cmd_synflood(args: argparse.Namespace) -> dict[str, Any]:
    """SYNs with random source addresses (of ``--subnet``, minus ``--exclude``), ports
    and sequence numbers, at ``--rate`` per second for ``--seconds``, at most
    ``--max-packets``. IP_HDRINCL: the kernel fills in the IP checksum and length.
    ``--mark N`` (not 0): the socket's packets carry netfilter mark N (``SO_MARK``)."""
    net = ipaddress.IPv4Network(args.subnet)
    exclude = {int(ipaddress.IPv4Address(a)) for a in args.exclude.split(",") if a}
    sources = [int(a) for a in net.hosts() if int(a) not in exclude]
    if not sources:
        return {"error": f"no unused source address in {args.subnet}"}
    dst = int(ipaddress.IPv4Address(args.host))
    rng = random.Random(args.seed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    refused = mark_socket(sock, args.mark)
    if refused is not None:
        sock.close()
        return {"error": refused}
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    base = syn_checksum_base(dst, args.port)
    addr = (args.host, 0)
    sent = errors = 0
    limit = min(args.max_packets, int(args.rate * args.seconds) + 1)
    t0 = time.monotonic()
    end = t0 + args.seconds
    with sock:
        while sent < limit:
            now = time.monotonic()
            if now >= end:
                break
            due = min(limit, int((now - t0) * args.rate) + 1)
            if sent >= due:
                time.sleep(min(0.001, end - now))
                continue
            for _ in range(min(due - sent, 512)):
                packet = syn_packet(rng.choice(sources), dst, rng.randrange(1024, 65536),
                                    args.port, rng.getrandbits(32), base)
                try:
                    sock.sendto(packet, addr)
                except OSError:
                    errors += 1
                sent += 1
    elapsed = time.monotonic() - t0
    return {"sent": sent, "send_errors": errors, "seconds": elapsed,
            "rate": sent / elapsed if elapsed > 0 else 0.0, "target_rate": args.rate,
            "sources": len(sources), "mark": args.mark}


def _fetch(url: str, timeout: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["curl", "-s", "-o", "/dev/null", "--max-time", f"{timeout:g}",
                             "-w", "%{http_code} %{time_connect} %{time_total}", url],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def _fetch_result(proc: subprocess.Popen[bytes]) -> tuple[bool, float, float]:
    """(succeeded, seconds to connect, seconds in all) of a finished fetch."""
    out = proc.stdout.read() if proc.stdout is not None else b""
    if proc.stdout is not None:
        proc.stdout.close()
    fields = out.split()
    try:
        connect, total = float(fields[1]), float(fields[2])
    except (IndexError, ValueError):
        connect = total = float("nan")
    return proc.returncode == 0 and fields[:1] == [b"200"], connect, total


class Fetches:
    """Sequential fetches: how many, how many succeeded, how long they took."""

    def __init__(self) -> None:
        self.ok = 0
        self.attempts = 0
        self.connect: list[float] = []
        self.total: list[float] = []

    def summary(self, prefix: str) -> dict[str, Any]:
        total = sorted(t for t in self.total if t == t)
        connect = sorted(t for t in self.connect if t == t)
        out: dict[str, Any] = {f"{prefix}_ok": self.ok, f"{prefix}_attempts": self.attempts}
        if total:
            out[f"{prefix}_fetch_p50_ms"] = 1000 * total[len(total) // 2]
            out[f"{prefix}_fetch_max_ms"] = 1000 * total[-1]
        if connect:
            out[f"{prefix}_connect_p50_ms"] = 1000 * connect[len(connect) // 2]
            # A connect beyond 1 s: the SYN (or its answer) was lost and resent.
            out[f"{prefix}_connect_over_1s"] = sum(1 for c in connect if c >= 1.0)
        return out


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until ``proc`` exits (True) or ``timeout`` seconds pass (False), waking
    when it exits: ``Popen.wait(timeout)`` polls instead, sleeping 1, 2, 4, 8, 16,
    32 ms ... between looks, so a fetch that took 16 ms is seen at 31 ms -- which
    turned a millisecond more per fetch into up to half the fetch rate. A pidfd
    (Linux 5.3) becomes readable at the exit."""
    try:
        fd = os.pidfd_open(proc.pid)
    except OSError:  # no pidfd here: the polling wait
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    if not ready:
        return False
    proc.wait()
    return True


def _fetch_loop(url: str, timeout: float, until: Callable[[], bool]) -> Fetches:
    """Fetches one after the other while ``until()`` is false."""
    f = Fetches()
    while not until():
        proc = _fetch(url, timeout)
        if not wait_exit(proc, timeout + 5):
            proc.kill()
            proc.wait()
        ok, connect, total = _fetch_result(proc)
        f.attempts += 1
        f.ok += ok
        f.connect.append(connect)
        f.total.append(total)
    return f


def _first_success(url: str, timeout: float, start: float, limit: float,
                   every: float = 0.1) -> float | None:
    """Start a fresh fetch every ``every`` s from ``start`` on; seconds from ``start``
    until one succeeds, or None within ``limit``. At most 64 fetches run at once."""
    running: list[subprocess.Popen[bytes]] = []
    next_start = start
    try:
        while True:
            now = time.monotonic()
            for proc in list(running):
                if proc.poll() is not None:
                    running.remove(proc)
                    if _fetch_result(proc)[0]:
                        return now - start
            if now - start > limit and not running:
                return None
            if now >= next_start and now - start <= limit and len(running) < 64:
                running.append(_fetch(url, timeout))
                next_start += every
            time.sleep(0.005)
    finally:
        for proc in running:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


class CpuWindow:
    """CPU busy over a stretch of time, in cores: the whole machine's (every process
    and interrupt work, ``/proc/stat``: user, nice, system, irq, softirq) and one process's
    (``/proc/PID/stat``; the network namespace does not matter for either)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t0 = time.monotonic()
        self.machine0 = _machine_busy_seconds()
        self.process0 = process_cpu_seconds(pid) if pid else None

    def cores(self) -> tuple[float | None, float | None]:
        """(machine, process) cores busy since the window opened; None: unknown."""
        elapsed = time.monotonic() - self.t0
        if elapsed <= 0:
            return None, None
        m1 = _machine_busy_seconds()
        p1 = process_cpu_seconds(self.pid) if self.pid else None
        machine = (m1 - self.machine0) / elapsed \
            if m1 is not None and self.machine0 is not None else None
        process = (p1 - self.process0) / elapsed \
            if p1 is not None and self.process0 is not None else None
        return machine, process


def _machine_busy_seconds() -> float | None:
    """CPU seconds the machine spent not idle so far (``/proc/stat``'s ``cpu`` line)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 7:
        return None
    # user nice system idle iowait irq softirq steal (guest time is inside user):
    # steal is time the hypervisor gave to others, not this machine's work.
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
    return busy / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far (``/proc/PID/stat``), or None if it
    is gone. (Also :mod:`tools.bench.observe_cost`'s.)"""
    try:
        # The command name may hold spaces: count from the last ')'.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _cpu_fields(prefix: str, window: CpuWindow) -> dict[str, float]:
    """The window's cores as result fields: ``PREFIX_machine_cores``, ``PREFIX_server_cores``."""
    machine, process = window.cores()
    out: dict[str, float] = {}
    if machine is not None:
        out[f"{prefix}_machine_cores"] = machine
    if process is not None:
        out[f"{prefix}_server_cores"] = process
    return out


def cmd_flood(args: argparse.Namespace) -> dict[str, Any]:
    """Fetches before, during and after a SYN flood (see the module docstring).

    The result is a rate: successful fetches per second during the flood over the
    same before it, so a stack that still answers but slowly scores lower too. The
    fraction of fetches that succeeded is reported beside it, and what the flood
    cost in CPU: the whole machine's cores busy before and during it, and the
    server process's (``--server-pid``) -- per flood SYN, the difference over the
    SYN rate. The kernel answers SYNs in softirq, in the sending process's context,
    so its server process's figure leaves that work out; the machine's does not.
    """
    url = f"http://{args.host}:{args.port}{args.path}"
    deadline = time.monotonic() + args.timeout
    # Before: the stack's own rate, the reference for the one under flood.
    t0 = time.monotonic()
    t_end = t0 + args.baseline
    cpu_before = CpuWindow(args.server_pid)
    before = _fetch_loop(url, args.fetch_timeout, lambda: time.monotonic() >= t_end)
    base_s = time.monotonic() - t0
    cpu = _cpu_fields("baseline", cpu_before)
    if before.ok == 0:
        return {"error": f"no fetch succeeded before the flood ({before.attempts} tried)",
                **before.summary("baseline")}
    argv = [sys.executable, "-m", "tools.bench.client", "synflood", "--host", args.host,
            "--port", str(args.port), "--subnet", args.subnet, "--exclude", args.exclude,
            "--rate", f"{args.rate:g}", "--seconds", f"{args.seconds:g}",
            "--max-packets", str(int(args.rate * args.seconds) + 1), "--seed", str(args.seed),
            "--mark", str(args.mark)]
    flooder = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=os.environ.copy())
    try:
        time.sleep(min(0.5, args.seconds / 10))  # the flood builds up first
        t1 = time.monotonic()
        cpu_during = CpuWindow(args.server_pid)
        during = _fetch_loop(url, args.fetch_timeout,
                             lambda: flooder.poll() is not None or time.monotonic() > deadline)
        during_s = time.monotonic() - t1
        cpu.update(_cpu_fields("flood", cpu_during))
        out, err = flooder.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if flooder.poll() is None:
            flooder.kill()
            flooder.wait()
    flood_end = time.monotonic()
    flood: dict[str, Any] = {}
    for line in out.splitlines():
        if line.startswith(RESULT_PREFIX):
            flood = json.loads(line[len(RESULT_PREFIX):])
    if not flood or "error" in flood:
        return {"error": f"the SYN flooder failed: {flood.get('error') or err.strip()[-200:]}"}
    recovery = _first_success(url, args.fetch_timeout, flood_end, args.recovery)
    base_rate = before.ok / base_s
    during_rate = during.ok / during_s if during_s > 0 else 0.0
    return {
        **before.summary("baseline"), "baseline_seconds": base_s, "baseline_rate": base_rate,
        **during.summary("flood"), "flood_seconds": during_s, "flood_rate": during_rate,
        "ratio": during_rate / base_rate,
        "flood_success_fraction": during.ok / during.attempts if during.attempts else 0.0,
        "recovered": recovery is not None,
        "recovery_seconds": recovery if recovery is not None else args.recovery,
        "recovery_limit": args.recovery,
        "syn_sent": flood["sent"], "syn_rate": flood["rate"], "syn_target_rate": args.rate,
        "syn_seconds": flood["seconds"], "syn_send_errors": flood["send_errors"],
        "syn_mark": args.mark,
        **cpu, **_per_syn_us(cpu, float(flood["rate"])),
    }


def _per_syn_us(cpu: dict[str, float], syn_rate: float) -> dict[str, float]:
    """Microseconds of CPU each flood SYN added: the cores busy during the flood less
    those before it, over the SYN rate -- the machine's and the server process's."""
    out: dict[str, float] = {}
    if syn_rate <= 0:
        return out
    for what in ("machine", "server"):
        during, before = cpu.get(f"flood_{what}_cores"), cpu.get(f"baseline_{what}_cores")
        if during is not None and before is not None:
            out[f"{what}_us_per_syn"] = (during - before) * 1e6 / syn_rate
    return out


# -- TCP Fast Open -------------------------------------------------------------------

MSG_FASTOPEN = getattr(socket, "MSG_FASTOPEN", 0x20000000)
"""``sendto`` flag: connect and send the data in the SYN if a cookie is cached (Linux)."""
TCPI_OPT_SYN_DATA = 32
"""``tcpi_options`` bit: the data of our SYN was acknowledged (``linux/tcp.h``)."""
_TCPI_OPTIONS = 5
"""Offset of ``tcpi_options`` in ``struct tcp_info``."""
NETSTAT_TFO = ("TCPFastOpenActive", "TCPFastOpenActiveFail")
"""TcpExt counters of the client's namespace: SYN data acknowledged / not."""


def netstat_tcpext(names: tuple[str, ...]) -> dict[str, int]:
    """TcpExt counters of this process's network namespace (``/proc/net/netstat``)."""
    found: dict[str, int] = {}
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return found
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:") and values.startswith("TcpExt:"):
            table = dict(zip(head.split()[1:], values.split()[1:], strict=False))
            for name in names:
                if name in table:
                    found[name] = int(table[name])
    return found


def http_body(n: int) -> bytes:
    """The body of ``/bytes/N`` (tcpstack.apps.http: byte i is i % 251)."""
    unit = bytes(range(251))
    return (unit * (n // 251 + 1))[:n]


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1e6))


class HttpExchange:
    """One request on a fresh connection: its times and whether its SYN's data was taken."""

    def __init__(self, total: float, connect: float | None, syn_data: bool) -> None:
        self.total = total
        """Seconds from before the connect to the response's last byte."""
        self.connect = connect
        """Seconds the plain ``connect()`` took (one round trip); None with Fast Open."""
        self.syn_data = syn_data
        """The server acknowledged data in our SYN (``TCPI_OPT_SYN_DATA``)."""


def _read_response(sock: socket.socket, body: bytes) -> None:
    """Read one HTTP response with ``body`` (status 200, Content-Length); raise
    ValueError if it is not that."""
    length, rest = _read_head(sock)
    if length != len(body):
        raise ValueError(f"Content-Length {length}, expected {len(body)}")
    got = bytearray(rest)
    while len(got) < length:
        data = sock.recv(65536)
        if not data:
            raise ValueError(f"connection closed after {len(got)} of {length} body bytes")
        got += data
    if bytes(got) != body:
        raise ValueError(f"body differs ({len(got)} bytes)")


def http_exchange(host: str, port: int, request: bytes, body: bytes, fast_open: bool,
                  timeout: float) -> HttpExchange:
    """``request`` on a new connection, plain or with Fast Open; the response checked.

    Blocking sockets with kernel timeouts (``SO_SNDTIMEO`` bounds the connect and a
    blocking ``sendto(MSG_FASTOPEN)`` alike, ``SO_RCVTIMEO`` every read), the same
    for both modes. Raises OSError or ValueError.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        tv = _timeval(timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        connect: float | None = None
        t0 = time.perf_counter()
        if fast_open:
            # With a cookie the request goes in the SYN; without one the kernel asks for
            # a cookie and sends the request after the handshake (still one call).
            sent = sock.sendto(request, MSG_FASTOPEN, (host, port))
            if sent < len(request):
                sock.sendall(request[sent:])
        else:
            sock.connect((host, port))
            connect = time.perf_counter() - t0
            sock.sendall(request)
        _read_response(sock, body)
        total = time.perf_counter() - t0
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        syn_data = len(info) > _TCPI_OPTIONS and bool(info[_TCPI_OPTIONS] & TCPI_OPT_SYN_DATA)
    return HttpExchange(total, connect, syn_data)


def _ms_stats(prefix: str, seconds: list[float]) -> dict[str, float]:
    values = sorted(1000 * s for s in seconds)
    return {f"{prefix}_ms": percentile(values, 50), f"{prefix}_p99_ms": percentile(values, 99),
            f"{prefix}_min_ms": values[0], f"{prefix}_max_ms": values[-1]}


def cmd_tfo(args: argparse.Namespace) -> dict[str, Any]:
    """Plain and Fast Open requests, interleaved (see the module docstring)."""
    count = args.path[len("/bytes/"):] if args.path.startswith("/bytes/") else ""
    if not count.isdigit():
        return {"error": f"--path must be /bytes/N, not {args.path!r}"}
    if args.count < 1:
        return {"error": "--count must be at least 1"}
    size = int(count)
    body = http_body(size)
    request = (f"GET {args.path} HTTP/1.0\r\nHost: {args.host}\r\n"
               "User-Agent: tools.bench.client\r\n\r\n").encode()
    deadline = time.monotonic() + args.timeout
    done = 0

    def one(fast_open: bool) -> HttpExchange:
        nonlocal done
        if time.monotonic() > deadline:
            raise ValueError(f"timed out after {done} requests")
        try:
            ex = http_exchange(args.host, args.port, request, body, fast_open,
                               args.op_timeout)
        except (OSError, ValueError) as exc:
            mode = "Fast Open" if fast_open else "plain"
            raise ValueError(f"{mode} request {done + 1}: {type(exc).__name__}: {exc}") \
                from None
        done += 1
        return ex

    try:
        # The first Fast Open request only gets the cookie; the next ones use it.
        warm = [one(True) for _ in range(args.warmup)]
        one(False)
        before = netstat_tcpext(NETSTAT_TFO)
        plain: list[HttpExchange] = []
        fast: list[HttpExchange] = []
        for i in range(args.count):
            # Alternate which mode goes first, so neither always follows the other.
            for fast_open in ((False, True) if i % 2 == 0 else (True, False)):
                (fast if fast_open else plain).append(one(fast_open))
        after = netstat_tcpext(NETSTAT_TFO)
    except ValueError as exc:
        return {"error": str(exc), "requests_done": done}
    result: dict[str, Any] = {
        "count": args.count, "path": args.path, "response_body": size,
        "warmup": args.warmup, "warmup_syn_data": sum(ex.syn_data for ex in warm),
        **_ms_stats("plain", [ex.total for ex in plain]),
        **_ms_stats("tfo", [ex.total for ex in fast]),
        **_ms_stats("connect", [ex.connect for ex in plain if ex.connect is not None]),
        "tfo_syn_data": sum(ex.syn_data for ex in fast),
        "plain_syn_data": sum(ex.syn_data for ex in plain),
    }
    result["saving_ms"] = result["plain_ms"] - result["tfo_ms"]
    for name in NETSTAT_TFO:
        if name in before and name in after:
            result[name] = after[name] - before[name]
    return result


# -- bulk download and queueing delay (bbr workload) ---------------------------------

_PATTERN_PERIOD = 251
"""``/bytes/N``'s body repeats every 251 bytes (byte i is i % 251)."""
_TCPI_RCV_RTT = 92
"""Offset of ``tcpi_rcv_rtt`` (the receiver's RTT estimate, µs) in ``struct tcp_info``."""


def _ping(sock: socket.socket, payload: bytes, buf: memoryview) -> float:
    """One round trip of ``payload`` to echo on ``sock``, in seconds; raises OSError or
    ValueError."""
    t0 = time.perf_counter()
    sock.sendall(payload)
    got = 0
    while got < len(payload):
        n = sock.recv_into(buf[got:], len(payload) - got)
        if n == 0:
            raise ValueError("echo closed the probe connection")
        got += n
    rtt = time.perf_counter() - t0
    if bytes(buf[:len(payload)]) != payload:
        raise ValueError("echo returned different bytes")
    return rtt


class Prober(threading.Thread):
    """64-byte ping-pong on its own connection, one every ``interval`` seconds (or at once
    when the last one took longer), until :meth:`stop`."""

    def __init__(self, sock: socket.socket, interval: float) -> None:
        super().__init__(name="prober", daemon=True)
        self.sock = sock
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        """(start, seconds) of every round trip, ``time.perf_counter`` times."""
        self.error = ""
        self._stop_event = threading.Event()

    def stop(self, timeout: float) -> None:
        self._stop_event.set()
        self.join(timeout)

    def run(self) -> None:
        payload = bytes(range(64))
        buf = memoryview(bytearray(len(payload)))
        next_at = time.perf_counter()
        try:
            while not self._stop_event.is_set():
                start = time.perf_counter()
                self.samples.append((start, _ping(self.sock, payload, buf)))
                next_at = max(next_at + self.interval, time.perf_counter())
                self._stop_event.wait(next_at - time.perf_counter())
        except (OSError, ValueError) as exc:
            self.error = f"probe {len(self.samples) + 1}: {type(exc).__name__}: {exc}"


def _read_head(sock: socket.socket, deadline: float | None = None) -> tuple[int, bytes]:
    """An HTTP/1 response's head (status 200 and Content-Length required): (length,
    the body bytes read with it). With ``deadline`` (``time.perf_counter()``) a read
    timeout is retried until it passes; without, it propagates. Raises ValueError,
    OSError."""
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        if deadline is not None and time.perf_counter() > deadline:
            raise ValueError("no response head in time")
        try:
            data = sock.recv(4096)
        except TimeoutError:
            if deadline is None:
                raise
            continue
        if not data:
            raise ValueError(f"connection closed after {len(buf)} bytes of the head")
        buf += data
        if len(buf) > 65536:
            raise ValueError("response head over 64 KiB")
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split()
    if len(status) < 2 or not status[0].startswith("HTTP/1.") or status[1] != "200":
        raise ValueError(f"status line {lines[0]!r}")
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return int(value.strip()), rest
    raise ValueError("no Content-Length")


def cmd_bulkrtt(args: argparse.Namespace) -> dict[str, Any]:
    """A download of at most ``--seconds`` with a ping-pong probe beside it."""
    if args.seconds <= 0 or args.bytes < 1 or args.base_probes < 1:
        return {"error": "--seconds, --bytes and --base-probes must be positive"}
    payload = bytes(range(64))
    pbuf = memoryview(bytearray(len(payload)))
    deadline = time.perf_counter() + args.timeout
    with socket.create_connection((args.host, args.echo_port), timeout=10.0) as probe:
        probe.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        probe.settimeout(args.op_timeout)
        # The idle path's round trip first: the base the queueing delay is measured from.
        base: list[float] = []
        for _ in range(args.base_probes):
            base.append(_ping(probe, payload, pbuf))
            time.sleep(args.interval)
        base.sort()
        request = (f"GET /bytes/{args.bytes} HTTP/1.0\r\nHost: {args.host}\r\n"
                   "User-Agent: tools.bench.client\r\n\r\n").encode()
        unit = memoryview(bytes(range(_PATTERN_PERIOD)) * (args.chunk // _PATTERN_PERIOD + 2))
        buf = bytearray(args.chunk)
        view = memoryview(buf)
        prober = Prober(probe, args.interval)
        with socket.create_connection((args.host, args.port), timeout=10.0) as dl:
            dl.settimeout(0.2)  # so the loop sees its deadlines
            t0 = time.perf_counter()
            stop_at = t0 + args.seconds
            dl.sendall(request)
            prober.start()
            try:
                length, rest = _read_head(dl, min(deadline, t0 + args.op_timeout))
                if length != args.bytes:
                    raise ValueError(f"Content-Length {length}, expected {args.bytes}")
                first = time.perf_counter()
                if bytes(rest) != bytes(unit[:len(rest)]):
                    raise ValueError("body differs in its first bytes")
                got = len(rest)
                last_data = first
                while got < length:
                    now = time.perf_counter()
                    if now >= stop_at:
                        break
                    if now > deadline:
                        raise ValueError(f"timed out after {got} bytes")
                    try:
                        n = dl.recv_into(view, min(len(buf), length - got))
                    except TimeoutError:
                        if now - last_data > args.op_timeout:
                            raise ValueError(f"no data for {args.op_timeout:g} s after "
                                             f"{got} bytes") from None
                        continue
                    if n == 0:
                        raise ValueError(f"connection closed after {got} of {length} bytes")
                    off = got % _PATTERN_PERIOD
                    if view[:n] != unit[off:off + n]:
                        raise ValueError(f"body differs in bytes {got}..{got + n}")
                    got += n
                    last_data = time.perf_counter()
                end = time.perf_counter()
                info = dl.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            except (OSError, ValueError) as exc:
                prober.stop(args.op_timeout + 1)
                return {"error": f"download: {type(exc).__name__}: {exc}"}
            prober.stop(args.op_timeout + 1)
    if prober.error:
        return {"error": prober.error}
    during = [rtt for start, rtt in prober.samples if first <= start <= end]
    if not during:
        return {"error": "no probe round trip completed during the download"}
    rtts = sorted(1000 * r for r in during)
    base_ms = 1000 * base[0]
    rcv_rtt = struct.unpack_from("I", info, _TCPI_RCV_RTT)[0] if len(info) >= 96 else 0
    return {
        "bytes": got, "content_length": length, "complete": got == length,
        "seconds": end - t0, "mbps": got / (end - t0) / 1e6,
        "first_byte_ms": 1000 * (first - t0),
        "base_rtt_ms": base_ms, "base_rtt_median_ms": 1000 * statistics.median(base),
        "probes": len(rtts), "rtt_ms": percentile(rtts, 50), "rtt_p95_ms": percentile(rtts, 95),
        "rtt_max_ms": rtts[-1],
        "qdelay_ms": percentile(rtts, 50) - base_ms,
        "qdelay_p95_ms": percentile(rtts, 95) - base_ms,
        "client_rcv_rtt_ms": rcv_rtt / 1000,
        # The probe's round trips over time (seconds since the request, ms), for a reader.
        "probe_series": [[round(start - t0, 3), round(1000 * rtt, 2)]
                         for start, rtt in prober.samples],
    }


# -- the sender's view (bbr workload, in the server's namespace) -----------------------

_SS_RTT = re.compile(r"\brtt:([\d.]+)/([\d.]+)")
_SS_INT = re.compile(r"\b(cwnd|bytes_sent|bytes_acked|bytes_retrans|lost|unacked):(\d+)\b")
_SS_RETRANS = re.compile(r"\bretrans:\d+/(\d+)")
_SS_BBR = re.compile(r"\bbbr:\(([^)]*)\)")
_SS_RATE = re.compile(r"\b(pacing_rate|delivery_rate) (\S+)")
_KERNEL_COUNTERS = {"Tcp": ("RetransSegs", "OutSegs"),
                    "TcpExt": ("TCPTimeouts", "TCPLossProbes", "TCPSackRecovery",
                               "TCPFastRetrans", "TCPLostRetransmit")}


def _proc_counters(path: str, tables: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Counters of this network namespace from /proc/net/snmp or /proc/net/netstat."""
    found: dict[str, int] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return found
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        table = head.split(":", 1)[0]
        if table in tables and values.startswith(table + ":"):
            row = dict(zip(head.split()[1:], values.split()[1:], strict=False))
            for name in tables[table]:
                if name in row:
                    found[name] = int(row[name])
    return found


def kernel_counters() -> dict[str, int]:
    """The kernel's retransmission counters of this namespace (Tcp and TcpExt)."""
    return {**_proc_counters("/proc/net/snmp", {"Tcp": _KERNEL_COUNTERS["Tcp"]}),
            **_proc_counters("/proc/net/netstat", {"TcpExt": _KERNEL_COUNTERS["TcpExt"]})}


def parse_ss(text: str) -> list[dict[str, Any]]:
    """The connections of ``ss -H -tin`` output: congestion control, RTT, counters."""
    conns: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            fields = line.split()
            conns.append({"local": fields[-2] if len(fields) >= 2 else "",
                          "remote": fields[-1] if fields else ""})
            continue
        if not conns:
            continue
        conn = conns[-1]
        tokens = line.split()
        if tokens and ":" not in tokens[0]:
            conn["cc"] = tokens[0]
        m = _SS_RTT.search(line)
        if m:
            conn["rtt_ms"] = float(m.group(1))
        for key, value in _SS_INT.findall(line):
            conn[key] = int(value)
        m = _SS_RETRANS.search(line)
        if m:
            conn["retrans"] = int(m.group(1))
        m = _SS_BBR.search(line)
        if m:
            conn["bbr"] = m.group(1)
        for key, value in _SS_RATE.findall(line):
            conn[key] = value
    return conns


def _kernel_sample(port: int) -> list[dict[str, Any]]:
    proc = subprocess.run(["ss", "-H", "-t", "-i", "-n", "state", "established",
                           "sport", "=", f":{port}"], capture_output=True, text=True,
                          timeout=5, check=False)
    conns = parse_ss(proc.stdout)
    for conn in conns:
        conn["bytes"] = conn.get("bytes_acked", conn.get("bytes_sent", 0))
    return conns


def _tcpstack_view(interface: str, port: int) -> tuple[
        Callable[[], list[dict[str, Any]]], Callable[[], dict[str, int]]]:
    """(connections on ``port``, retransmission counters) of the tcpstack daemon of this
    namespace, through its control socket (``tcpstack ss``)."""
    from tcpstack.observe.control import default_socket_path, request

    path = default_socket_path(interface)

    def sample() -> list[dict[str, Any]]:
        rows = request(path, {"cmd": "ss", "sport": port, "state": "established"})["rows"]
        return [{"local": r["local"], "remote": r["remote"], "cc": r["cc"],
                 "rtt_ms": r["rtt_ms"], "cwnd": r["cwnd_segments"],
                 "bytes": r["bytes_acked"] or 0, "in_flight": r["in_flight"],
                 "send_q": r["send_q"], "snd_wnd": r["snd_wnd"],
                 "bbr": r.get("bbr")} for r in rows]

    def counters() -> dict[str, int]:
        found = request(path, {"cmd": "counters"})["counters"]
        return {k: int(v) for k, v in found.items()
                if k.startswith(("tcp_retrans_", "tcp_rto"))}

    return sample, counters


def cmd_sender(args: argparse.Namespace) -> dict[str, Any]:
    """The sending connection(s) on ``--port`` as the server's stack sees them."""
    sample: Callable[[], list[dict[str, Any]]]
    counters: Callable[[], dict[str, int]]
    if args.stack == "kernel":
        port = args.port
        sample, counters = (lambda: _kernel_sample(port)), kernel_counters
    else:
        sample, counters = _tcpstack_view(args.interface, args.port)
    try:
        before = counters()
    except Exception as exc:  # ControlError, OSError, a daemon's odd answer
        return {"error": f"cannot read the sender's counters: {type(exc).__name__}: {exc}"}
    print("SAMPLING", flush=True)
    start = time.monotonic()
    deadline = start + args.timeout
    seen: list[dict[str, Any]] = []
    errors = 0
    while time.monotonic() < deadline:
        try:
            conns = sample()
        except Exception as exc:  # one failed look is not the end (ss, the control socket)
            errors += 1
            conns = []
            if errors > 20:
                return {"error": f"sampling failed: {type(exc).__name__}: {exc}"}
        if conns:
            # The download: the connection that has sent the most.
            conn = max(conns, key=lambda c: int(c.get("bytes") or 0))
            conn["t"] = round(time.monotonic() - start, 3)
            seen.append(conn)
        ready, _, _ = select.select([sys.stdin], [], [], args.interval)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break  # stdin closed: the download is over
    try:
        after = counters()
    except Exception as exc:
        return {"error": f"cannot read the sender's counters: {type(exc).__name__}: {exc}"}
    rtts = sorted(float(c["rtt_ms"]) for c in seen if c.get("rtt_ms") is not None)
    result: dict[str, Any] = {
        "samples": len(seen), "sample_errors": errors,
        "cc": sorted({str(c.get("cc")) for c in seen}),
        "counters": {k: after[k] - before.get(k, 0) for k in after},
        "series": seen,
    }
    if rtts:
        result["rtt_ms"] = percentile(rtts, 50)
        result["rtt_p95_ms"] = percentile(rtts, 95)
    if args.stack == "kernel":
        result["retrans"] = result["counters"].get("RetransSegs", 0)
    else:
        result["retrans"] = sum(v for k, v in result["counters"].items()
                                if k.startswith("tcp_retrans_") and k != "tcp_retrans_syn")
    return result


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

    f = sub.add_parser("flood")
    f.add_argument("--host", required=True)
    f.add_argument("--port", type=int, default=80)
    f.add_argument("--path", default="/")
    f.add_argument("--subnet", required=True, help="spoofed sources come from here")
    f.add_argument("--exclude", default="", help="comma-separated addresses in use")
    f.add_argument("--rate", type=float, required=True, help="SYNs per second")
    f.add_argument("--seconds", type=float, required=True, help="flood duration")
    f.add_argument("--baseline", type=float, default=5.0, help="seconds of fetches before")
    f.add_argument("--recovery", type=float, default=30.0,
                   help="after the flood, wait at most this long for a successful fetch")
    f.add_argument("--fetch-timeout", type=float, default=2.0, help="curl --max-time")
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--timeout", type=float, default=120.0)
    f.add_argument("--server-pid", type=int, default=0,
                   help="the server process, for its CPU before and during the flood")
    f.add_argument("--mark", type=mark_value, default=0,
                   help="passed to synflood: its socket's SO_MARK (0: none)")

    sf = sub.add_parser("synflood")
    sf.add_argument("--host", required=True)
    sf.add_argument("--port", type=int, default=80)
    sf.add_argument("--subnet", required=True)
    sf.add_argument("--exclude", default="")
    sf.add_argument("--rate", type=float, required=True)
    sf.add_argument("--seconds", type=float, required=True)
    sf.add_argument("--max-packets", type=int, required=True)
    sf.add_argument("--seed", type=int, default=1)
    sf.add_argument("--mark", type=mark_value, default=0,
                    help="SO_MARK of the raw socket, decimal or 0x hex (0: none; needs "
                         "CAP_NET_ADMIN)")

    t = sub.add_parser("tfo")
    t.add_argument("--host", required=True)
    t.add_argument("--port", type=int, default=80)
    t.add_argument("--path", default="/bytes/100", help="/bytes/N")
    t.add_argument("--count", type=int, required=True, help="timed requests per mode")
    t.add_argument("--warmup", type=int, default=3,
                   help="Fast Open requests before (the first one gets the cookie)")
    t.add_argument("--op-timeout", type=float, default=5.0,
                   help="seconds for each connect, send and read")
    t.add_argument("--timeout", type=float, default=60.0)

    b = sub.add_parser("bulkrtt")
    b.add_argument("--host", required=True)
    b.add_argument("--port", type=int, default=80)
    b.add_argument("--echo-port", type=int, default=7)
    b.add_argument("--bytes", type=int, required=True, help="N of GET /bytes/N")
    b.add_argument("--seconds", type=float, required=True,
                   help="stop reading after this long (or when the body is complete)")
    b.add_argument("--interval", type=float, default=0.025,
                   help="seconds between the starts of two probe round trips")
    b.add_argument("--base-probes", type=int, default=10,
                   help="probe round trips on the idle path first (their minimum: the base)")
    b.add_argument("--chunk", type=int, default=256 * 1024)
    b.add_argument("--op-timeout", type=float, default=5.0,
                   help="longest wait for any one read or probe")
    b.add_argument("--timeout", type=float, default=60.0)

    sd = sub.add_parser("sender")
    sd.add_argument("--stack", choices=("kernel", "tcpstack"), required=True)
    sd.add_argument("--port", type=int, default=80, help="the sender's local port")
    sd.add_argument("--interface", default="tcpstack0",
                    help="tcpstack: the daemon's interface (names its control socket)")
    sd.add_argument("--interval", type=float, default=0.2)
    sd.add_argument("--timeout", type=float, default=120.0,
                    help="stop after this long even if stdin stays open")
    return parser


COMMANDS = {"probe": cmd_probe, "upload": cmd_upload, "echo": cmd_echo,
            "latency": cmd_latency, "idle": cmd_idle, "flood": cmd_flood,
            "synflood": cmd_synflood, "tfo": cmd_tfo, "bulkrtt": cmd_bulkrtt,
            "sender": cmd_sender}


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
