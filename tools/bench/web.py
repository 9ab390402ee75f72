"""The web benchmark: an aiohttp application and HTTPS, on tcpstack and on the kernel.

``sudo python -m tools.bench.web [--quick | --tiny] [--out DIR] [--no-pin]``

The same application (:mod:`tools.bench.web_server`: aiohttp on uvloop) runs once on
tcpstack (``TunStack`` + ``TcpStackSite``, namespace A, 10.0.0.1 -> 10.0.0.2) and
once on the kernel (``web.TCPSite``, veth 10.9.0.2 -> 10.9.0.1 between namespaces S
and C), in the same run, server on the first CPU and clients on the second. Workloads:

============  ============================================================  ==========
name          what                                                          metric
============  ============================================================  ==========
aiohttp_json  ``ab -k -c 16``: keep-alive GETs of a small JSON document      requests/s
tls_handshake ``openssl s_time -new``: a full TLS handshake per connection  handshakes/s
tls_bulk      ``curl`` over HTTPS, ``/bytes/N`` streamed by aiohttp          MB/s
============  ============================================================  ==========

Prints a Markdown table with the tcpstack/kernel ratios and writes
``DIR/web-<stamp>.{json,md}`` (default DIR ``./bench-results/``). Medians of the
repetitions. Everything lives in namespaces the tool creates and deletes; every
client run has a hard timeout.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.bench.netns import SetupError, close_all
from tools.bench.settings import sizes_for
from tools.bench.targets import KernelTarget, Target, TcpstackTarget, default_pinning

MIB = 1024 * 1024


@dataclass(frozen=True)
class WebSizes:
    reps: int
    requests: int
    handshake_seconds: int
    bulk_bytes: int


SIZES = {
    "full": WebSizes(reps=3, requests=20_000, handshake_seconds=5, bulk_bytes=200 * MIB),
    "quick": WebSizes(reps=2, requests=5_000, handshake_seconds=3, bulk_bytes=50 * MIB),
    "tiny": WebSizes(reps=1, requests=200, handshake_seconds=1, bulk_bytes=1 * MIB),
}


class _Web:
    """Mixin: the web server instead of ``tcpstack serve`` / the kernel services."""

    ports = "8080,8443"
    cert: Path
    key: Path
    host: str

    def web_argv(self, stack: str, host: str) -> list[str]:
        return [sys.executable, "-m", "tools.bench.web_server", "--stack", stack,
                "--host", host, "--cert", str(self.cert), "--key", str(self.key)]


class WebTcpstack(_Web, TcpstackTarget):
    def server_argv(self) -> list[str]:
        return self.web_argv("tcpstack", "10.0.0.2")

    def describe(self) -> str:
        return "aiohttp on tcpstack (TunStack + TcpStackSite, uvloop)"


class WebKernel(_Web, KernelTarget):
    def server_argv(self) -> list[str]:
        return self.web_argv("kernel", "10.9.0.1")

    def describe(self) -> str:
        return "aiohttp on Linux TCP (web.TCPSite, uvloop, veth)"


def _run(target: Target, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return target.run_client(argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, -1, "", f"timed out after {timeout:g}s")


def aiohttp_json(target: Target, sz: WebSizes) -> dict[str, Any]:
    proc = _run(target, ["ab", "-q", "-k", "-c", "16", "-n", str(sz.requests),
                         f"http://{target.host}:8080/json"], timeout=120)
    rps = re.search(r"Requests per second:\s+([\d.]+)", proc.stdout)
    failed = re.search(r"Failed requests:\s+(\d+)", proc.stdout)
    alive = re.search(r"Keep-Alive requests:\s+(\d+)", proc.stdout)
    if proc.returncode != 0 or rps is None:
        return {"error": (proc.stderr.strip().splitlines() or ["ab failed"])[-1]}
    return {"value": float(rps.group(1)), "failed": int(failed.group(1)) if failed else -1,
            "keepalive": int(alive.group(1)) if alive else -1}


def tls_handshake(target: Target, sz: WebSizes) -> dict[str, Any]:
    proc = _run(target, ["openssl", "s_time", "-connect", f"{target.host}:8443", "-new",
                         "-time", str(sz.handshake_seconds)],
                timeout=sz.handshake_seconds + 60)
    found = re.search(r"(\d+) connections in ([\d.]+) real seconds", proc.stdout)
    if found is None or float(found.group(2)) <= 0:
        return {"error": (proc.stderr.strip().splitlines() or ["s_time failed"])[-1]}
    return {"value": int(found.group(1)) / float(found.group(2))}


def tls_bulk(target: Target, sz: WebSizes) -> dict[str, Any]:
    proc = _run(target, ["curl", "-sS", "-k", "-o", "/dev/null", "--max-time", "120",
                         "-w", "%{speed_download} %{size_download}",
                         f"https://{target.host}:8443/bytes/{sz.bulk_bytes}"], timeout=150)
    try:
        speed, size = proc.stdout.split()
    except ValueError:
        return {"error": (proc.stderr.strip().splitlines() or ["curl failed"])[-1]}
    if int(float(size)) != sz.bulk_bytes:
        return {"error": f"got {size} bytes, wanted {sz.bulk_bytes}"}
    return {"value": float(speed) / 1e6}


WORKLOADS = {
    "aiohttp_json": (aiohttp_json, "requests/s (ab -k -c 16)"),
    "tls_handshake": (tls_handshake, "TLS handshakes/s (openssl s_time -new)"),
    "tls_bulk": (tls_bulk, "MB/s over TLS (curl, aiohttp /bytes)"),
}


def measure(target: Target, sz: WebSizes) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name, (run, _) in WORKLOADS.items():
        values: list[float] = []
        errors: list[str] = []
        extra: dict[str, Any] = {}
        for _ in range(sz.reps):
            target.ensure_fresh()
            got = run(target, sz)
            if "error" in got:
                errors.append(str(got["error"]))
            else:
                values.append(float(got.pop("value")))
                extra = got
        results[name] = {"median": statistics.median(values) if values else None,
                         "values": values, "errors": errors, **extra}
        print(f"  {target.name} {name}: {results[name]['median']}", file=sys.stderr)
    return results


def _fmt(value: float | None) -> str:
    if value is None:
        return "failed"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = ["| workload | tcpstack | kernel | tcpstack/kernel |", "|---|---:|---:|---:|"]
    for name, (_, label) in WORKLOADS.items():
        ours = results["tcpstack"][name]["median"]
        theirs = results["kernel"][name]["median"]
        ratio = f"{ours / theirs:.2f}x" if ours and theirs else "-"
        lines.append(f"| {label} | {_fmt(ours)} | {_fmt(theirs)} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.web",
                                     description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick")
    mode.add_argument("--tiny", action="store_const", dest="mode", const="tiny")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args(argv)
    name = args.mode or "full"
    sz = SIZES[name]
    missing = [t for t in ("ab", "curl", "openssl", "ip") if shutil.which(t) is None]
    if missing:
        print(f"bench: error: missing tools: {', '.join(missing)}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)
    from tcpstack.certs import self_signed

    cert = self_signed(["10.0.0.2", "10.9.0.1"])
    (logs / "web-cert.pem").write_bytes(cert.cert_pem)
    (logs / "web-key.pem").write_bytes(cert.key_pem)
    (logs / "web-key.pem").chmod(0o600)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        for cls in (WebTcpstack, WebKernel):
            target = cls(sizes_for(name, cls.name), logs)
            target.cert, target.key = logs / "web-cert.pem", logs / "web-key.pem"
            target.pin = None if args.no_pin else default_pinning()
            try:
                target.setup()
                results[cls.name] = measure(target, sz)
            finally:
                target.teardown()
    except SetupError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
    finally:
        close_all()
    markdown = table(results)
    print(markdown)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"web-{stamp}.md").write_text(markdown + "\n")
    (args.out / f"web-{stamp}.json").write_text(json.dumps(
        {"mode": name, "sizes": sz.__dict__, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
