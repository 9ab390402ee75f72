"""The workloads, each run ``reps`` times against one target.

* ``download`` -- ``curl`` fetches ``GET /bytes/N`` over one connection; the
  length is verified. N is 200 MiB, or less when a calibration download shows
  the target would need more than ~10 s for it (full mode).
* ``download6`` / ``latency6`` -- ``download`` and ``latency``, the same code,
  to the server's IPv6 address (:attr:`Target.host6`); skipped for a target
  set up without one.
* ``upload`` -- the Python client sends up to 200 MiB (or ~10 s worth) to
  discard, half-closes and waits for the server's FIN.
* ``echo`` -- the Python client sends N bytes to echo and reads them back on the
  same connection (both directions busy at once); every byte is checked.
* ``impaired_c2s`` / ``impaired_both`` -- ``curl`` downloads 20 MiB through
  :mod:`tools.impair_relay` (2 % loss, 5 ms delay, 5 % reordering) on the
  client -> server direction only (the ACK path) or on both; the same relay and
  seeds for every target (:mod:`tools.bench.impaired`).
* ``tfo`` -- short HTTP requests (``GET /bytes/100 HTTP/1.0``, a new connection
  each) through the relay with 10 ms delay each way and nothing else (20 ms RTT),
  plain and with TCP Fast Open (RFC 7413), interleaved, from a client namespace
  with ``net.ipv4.tcp_fastopen=1``; the server runs with Fast Open on (its own
  start, ``app`` ``tfo``). Median and p99 per mode, the saving (plain - Fast
  Open median: one RTT expected), and how many Fast Open SYNs' data the server
  acknowledged. tcpstack and the kernel only.
* ``bbr`` -- bulk downloads through the relay with a bottleneck server -> client
  (40 Mbit/s, a 200-packet FIFO with tail drop, 10 ms each way: 20 ms RTT), and
  the same with 1 % random loss, from a server running CUBIC and then one running
  BBR (``app`` ``cc:cubic``, ``cc:bbr``: tcpstack's ``--congestion-control``, the
  kernel's ``TCP_CONGESTION``); goodput, and the queueing delay (a ping-pong
  probe's round trips during the download minus the idle path's), the sender's
  retransmissions, and the congestion control the sender really used. tcpstack
  and the kernel only.
* ``connrate`` -- ``ab -n N -c 16`` (HTTP/1.0, one connection per request).
* ``latency`` -- 64-byte ping-pong to echo over one connection; p50 and p99.
* ``idle`` -- N concurrent idle connections to echo, all checked afterwards
  (1 byte each, how long checking all of them took);
  the server's VmRSS growth per connection. Each repetition starts on a fresh
  server process so that freed-and-reused memory does not flatter later runs.
* ``aiohttp`` -- ``ab -k -c 16``: keep-alive GETs of a small JSON document from
  an aiohttp application (:mod:`tools.bench.web_server`); requests/s.
* ``https`` -- the same application over TLS: ``openssl s_time -new`` (a full
  handshake per connection; handshakes/s), then ``curl`` over HTTPS fetching
  ``/bytes/N`` (certificate verified, length checked; MB/s).
* ``flood`` -- a spoofed SYN flood (random unused source addresses of the link's
  subnet, a fixed rate, bounded in count and time) while ``curl --max-time 2``
  fetches the small HTTP page in a loop: successful fetches per second during the
  flood as a fraction of the same stack's rate just before it, how soon after the flood a
  fresh fetch succeeds, and the SYN rate actually achieved. Each repetition starts
  on a fresh server (a flood leaves half-open connections behind). When tcpstack and
  the kernel both run, both are set up at once and their repetitions alternate in
  ABBA order (:func:`run_flood_paired`: the machine's speed drifts over minutes, and
  so the drift falls on both alike); the outcomes also get the paired figure, per
  pair tcpstack's ratio minus the kernel's. In full and quick mode (with ``iptables``)
  each pair adds a control repetition on tcpstack, the order mirrored between pairs
  (tcpstack, kernel, control; control, kernel, tcpstack; ...): the same flood, but the
  flooder's socket marked (``SO_MARK``) and its SYNs dropped by netfilter in the
  namespace's OUTPUT chain before the TUN, so the daemon does no SYN work while the
  flooder and the client run as in the flood (``summary["control_ratio"]``,
  ``params["control"]``; it never fails tcpstack's outcome).

Every workload starts on a freshly started server process, so none inherits
another's leftovers (closing connections, TIME-WAIT state, a grown heap).

Each repetition has a hard timeout; one that hits it is killed (by PID) and
the workload is reported as failed rather than hanging the run.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from tools.bench.impaired import ImpairedPath
from tools.bench.netns import SetupError
from tools.bench.settings import (
    BBR_ALGORITHMS,
    BBR_BASE_PROBES,
    BBR_C2S,
    BBR_PATHS,
    BBR_PROBE_INTERVAL,
    BBR_RATE_MBIT,
    BBR_RTT_MS,
    BBR_SAMPLE_INTERVAL,
    IMPAIRMENT,
    IPV6_WORKLOADS,
    MIB,
    STACK_WORKLOADS,
    TFO_IMPAIRMENT,
    TFO_PATH,
    TFO_RTT_MS,
    WEB_HTTP_PORT,
    WEB_HTTPS_PORT,
    WEB_WORKLOADS,
    WORKLOAD_APPS,
    Sizes,
)
from tools.bench.system import wait_quiet
from tools.bench.targets import REPO_ROOT, Target, client_result, client_run, python_env

Hook = Callable[[str, int], AbstractContextManager[None]]
"""``with hook(workload, rep):`` wraps each measured repetition (used for profiling)."""


def _gave_up(out: Outcome) -> bool:
    """True once a repetition timed out: the rest would most likely hang as well."""
    if out.reps and "timed out" in str(out.reps[-1].get("error", "")).lower():
        out.params["stopped_early"] = f"after {len(out.reps)} repetition(s): a timeout"
        return True
    return False


@contextlib.contextmanager
def _rep(target: Target, out: Outcome, hook: Hook | None, rep: int) -> Iterator[None]:
    """Around one measured repetition: wait for a quiet machine, then run under ``hook``."""
    quiet, waited, busy = wait_quiet(target.sizes.quiet_wait)
    out.params.setdefault("background_busy", []).append(round(busy, 3))
    if not quiet:
        out.disturbed.append(f"rep {rep + 1}: CPUs {busy:.0%} busy before it started "
                             f"(waited {waited:.0f} s)")
    with hook(out.workload, rep) if hook is not None else contextlib.nullcontext():
        yield


@dataclass
class Outcome:
    """One workload on one target."""

    workload: str
    status: str = "ok"  # ok | failed | skipped
    reason: str = ""
    summary: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    reps: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    disturbed: list[str] = field(default_factory=list)
    """Repetitions that started while the machine was busy with something else."""

    def fail(self, reason: str) -> None:
        if self.status != "failed":
            self.status, self.reason = "failed", reason

    def as_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "status": self.status, "reason": self.reason,
                "summary": self.summary, "params": self.params, "reps": self.reps,
                "seconds": round(self.seconds, 3), "disturbed": self.disturbed}


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


# -- download ---------------------------------------------------------------------


def url_host(host: str) -> str:
    """``host`` as it goes into a URL: an IPv6 address in brackets (RFC 3986 3.2.2)."""
    return f"[{host}]" if ":" in host else host


def _curl(target: Target, nbytes: int, timeout: float,
          path: ImpairedPath | None = None, host: str | None = None) -> dict[str, Any]:
    url = f"http://{url_host(host or target.host)}/bytes/{nbytes}"
    # --globoff: the brackets of an IPv6 address are not one of curl's URL patterns.
    argv = ["curl", "-sS", "--globoff", "-o", "/dev/null", "--max-time", f"{timeout:g}",
            "-w", "%{size_download} %{time_total} %{http_code}", url]
    try:
        if path is not None:
            proc = path.run(argv, timeout=timeout + 10)
        else:
            proc = target.run_client(argv, timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g}s (hard timeout)"}
    try:
        size_s, secs_s, code = proc.stdout.split()
        size, secs = int(size_s), float(secs_s)
    except ValueError:
        return {"error": f"curl exit {proc.returncode}: {proc.stderr.strip()[-200:]}"}
    if proc.returncode != 0:
        return {"error": f"curl exit {proc.returncode} after {size} bytes: "
                         f"{proc.stderr.strip()[-200:]}"}
    if code != "200":
        return {"error": f"HTTP status {code}"}
    if size != nbytes:
        return {"error": f"length mismatch: got {size} bytes, expected {nbytes}"}
    return {"bytes": size, "seconds": secs, "mbps": size / secs / 1e6 if secs > 0 else 0.0}


def _download(name: str, ipv6: bool) -> Callable[[Target, Hook | None], Outcome]:
    """The bulk download workload, over IPv4 or over IPv6."""

    def run(target: Target, hook: Hook | None) -> Outcome:
        return _run_download(name, target, hook, target.address(ipv6))

    return run


def _run_download(name: str, target: Target, hook: Hook | None, host: str) -> Outcome:
    sz = target.sizes
    out = Outcome(name, params={"host": host})
    nbytes = sz.download_max
    if sz.download_probe:
        probe = _curl(target, sz.download_probe, sz.timeout_download, host=host)
        out.params["probe"] = probe
        if "error" in probe:
            out.fail(f"calibration download: {probe['error']}")
            return out
        rate = probe["bytes"] / max(probe["seconds"], 1e-6)
        nbytes = max(sz.download_probe, min(sz.download_max, int(rate * sz.download_seconds)))
        nbytes = max(MIB, nbytes // MIB * MIB)
    out.params["bytes"] = nbytes
    for rep in range(sz.reps):
        if _gave_up(out):
            break
        with _rep(target, out, hook, rep):
            out.reps.append(_curl(target, nbytes, sz.timeout_download, host=host))
    _summarise(out, {"mbps": "mbps"})
    return out


run_download = _download("download", ipv6=False)
run_download6 = _download("download6", ipv6=True)


# -- upload --------------------------------------------------------------------------


def run_upload(target: Target, hook: Hook | None) -> Outcome:
    sz = target.sizes
    out = Outcome("upload", params={"max_bytes": sz.upload_max, "max_seconds": sz.upload_seconds})
    for rep in range(sz.reps):
        if _gave_up(out):
            break
        with _rep(target, out, hook, rep):
            out.reps.append(client_run(target, [
                "upload", "--host", target.host, "--port", "9", "--bytes", str(sz.upload_max),
                "--max-seconds", f"{sz.upload_seconds:g}", "--timeout", f"{sz.timeout_upload:g}",
            ], timeout=sz.timeout_upload + 15))
    _summarise(out, {"mbps": "mbps", "bytes": "bytes"})
    return out


# -- echo ------------------------------------------------------------------------------


def run_echo(target: Target, hook: Hook | None) -> Outcome:
    sz = target.sizes
    out = Outcome("echo", params={"bytes": sz.echo_bytes})
    for rep in range(sz.reps):
        if _gave_up(out):
            break
        with _rep(target, out, hook, rep):
            out.reps.append(client_run(target, [
                "echo", "--host", target.host, "--port", "7", "--bytes", str(sz.echo_bytes),
                "--timeout", f"{sz.timeout_echo:g}",
            ], timeout=sz.timeout_echo + 15))
    _summarise(out, {"mbps": "mbps"})
    return out


# -- impaired downloads ----------------------------------------------------------------


def _impaired(name: str, both: bool) -> Callable[[Target, Hook | None], Outcome]:
    def run(target: Target, hook: Hook | None) -> Outcome:
        sz = target.sizes
        out = Outcome(name, params={"bytes": sz.impaired_bytes, "impairment": IMPAIRMENT,
                                    "directions": "both" if both else "client->server"})
        if target.name == "pytcp":
            out.status, out.reason = "skipped", "not run for PyTCP (about 1 MB/s unimpaired)"
            return out
        if target.server_ns is None:
            raise SetupError(f"{target.name}: not set up")
        for rep in range(sz.impaired_reps):
            if _gave_up(out):
                break
            spec = f"{IMPAIRMENT},seed={rep + 1}"
            log_dir = target.log_dir / f"{target.name}-{name}-{rep + 1}"
            log_dir.mkdir(parents=True, exist_ok=True)
            path = ImpairedPath(target.server_ns, target.host, log_dir, a2b=spec,
                                b2a=spec if both else None,
                                duration_limit=sz.timeout_impaired + 60,
                                python_env=python_env(), cwd=REPO_ROOT)
            with path, _rep(target, out, hook, rep):
                rec = _curl(target, sz.impaired_bytes, sz.timeout_impaired, path)
            rec["relay"] = path.counters
            out.reps.append(rec)
        _summarise(out, {"mbps": "mbps"})
        return out

    return run


run_impaired_c2s = _impaired("impaired_c2s", both=False)
run_impaired_both = _impaired("impaired_both", both=True)


# -- TCP Fast Open ----------------------------------------------------------------------


def _tfo_client(path: ImpairedPath, host: str, sz: Sizes) -> dict[str, Any]:
    """``client.py tfo`` in the impaired path's client namespace."""
    argv = [sys.executable, "-m", "tools.bench.client", "tfo", "--host", host, "--port", "80",
            "--path", TFO_PATH, "--count", str(sz.tfo_requests), "--warmup",
            str(sz.tfo_warmup), "--timeout", f"{sz.timeout_tfo:g}"]
    try:
        proc = path.run(argv, timeout=sz.timeout_tfo + 15)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {sz.timeout_tfo + 15:g}s (hard timeout)"}
    return client_result(proc)


def run_tfo(target: Target, hook: Hook | None) -> Outcome:
    """Short requests over a 20 ms RTT path, plain and with TCP Fast Open."""
    sz = target.sizes
    out = Outcome("tfo", params={
        "requests_per_mode": sz.tfo_requests, "warmup": sz.tfo_warmup, "path": TFO_PATH,
        "impairment": TFO_IMPAIRMENT, "directions": "both", "rtt_ms": TFO_RTT_MS,
        "client_sysctls": {"net.ipv4.tcp_fastopen": "1"}})
    if target.server_ns is None:
        raise SetupError(f"{target.name}: not set up")
    for rep in range(sz.tfo_reps):
        if _gave_up(out):
            break
        log_dir = target.log_dir / f"{target.name}-tfo-{rep + 1}"
        log_dir.mkdir(parents=True, exist_ok=True)
        # A fresh client namespace each time: no cookie cached from an earlier run.
        path = ImpairedPath(target.server_ns, target.host, log_dir, a2b=TFO_IMPAIRMENT,
                            b2a=TFO_IMPAIRMENT, duration_limit=sz.timeout_tfo + 60,
                            python_env=python_env(), cwd=REPO_ROOT,
                            client_sysctls={"net.ipv4.tcp_fastopen": "1"})
        with path, _rep(target, out, hook, rep):
            rec = _tfo_client(path, target.host, sz)
        rec["relay"] = path.counters
        out.reps.append(rec)
    _summarise(out, {"plain_ms": "plain_ms", "plain_p99_ms": "plain_p99_ms",
                     "tfo_ms": "tfo_ms", "tfo_p99_ms": "tfo_p99_ms",
                     "saving_ms": "saving_ms", "connect_ms": "connect_ms"})
    ok = [r for r in out.reps if "error" not in r]
    if ok:
        out.summary["tfo_requests"] = float(sum(int(r["count"]) for r in ok))
        out.summary["tfo_syn_data"] = float(sum(int(r["tfo_syn_data"]) for r in ok))
        if all("TCPFastOpenActive" in r for r in ok):
            out.summary["tfo_active"] = float(sum(int(r["TCPFastOpenActive"]) for r in ok))
            out.summary["tfo_active_fail"] = float(sum(int(r.get("TCPFastOpenActiveFail", 0))
                                                       for r in ok))
    return out


# -- BBR vs CUBIC through a bottleneck ------------------------------------------------

BBR_METRICS = ("mbps", "qdelay_ms", "qdelay_p95_ms", "retrans", "path_drops",
               "sender_rtt_ms", "base_rtt_ms", "rtt_ms")
"""What the bbr workload summarises per algorithm and path (``cubic_clean_mbps`` ...)."""


def bbr_bytes(sz: Sizes) -> int:
    """N of its ``GET /bytes/N``: more than the bottleneck carries in ``bbr_seconds`` (the
    client stops reading then)."""
    return int(BBR_RATE_MBIT * 1e6 / 8 * sz.bbr_seconds * 2) + MIB


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first line ``proc`` writes on stdout, read from the pipe itself (so nothing
    is left in a buffer that ``communicate`` would not see), or "" after ``timeout``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    end = time.monotonic() + timeout
    while b"\n" not in data and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def _sender_view(target: Target, timeout: float) -> subprocess.Popen[str]:
    """``client.py sender`` in the server's namespace: it looks at the download's
    connection until its stdin closes."""
    assert target.server_ns is not None
    return target.server_ns.popen(
        [sys.executable, "-m", "tools.bench.client", "sender", "--stack", target.name,
         "--port", "80", "--interval", f"{BBR_SAMPLE_INTERVAL:g}", "--timeout",
         f"{timeout:g}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=python_env(), cwd=str(REPO_ROOT))


def _bbr_transfer(target: Target, algorithm: str, path_name: str, rep: int,
                  out: Outcome, hook: Hook | None) -> dict[str, Any]:
    """One download through the bottleneck path ``path_name``, the sender watched."""
    sz = target.sizes
    assert target.server_ns is not None
    spec = f"{BBR_PATHS[path_name]},seed={rep + 1}"
    log_dir = target.log_dir / f"{target.name}-bbr-{algorithm}-{path_name}-{rep + 1}"
    log_dir.mkdir(parents=True, exist_ok=True)
    client_timeout = sz.bbr_seconds + BBR_BASE_PROBES * (BBR_PROBE_INTERVAL + 0.2) + 20
    path = ImpairedPath(target.server_ns, target.host, log_dir, a2b=BBR_C2S, b2a=spec,
                        duration_limit=client_timeout + 60, python_env=python_env(),
                        cwd=REPO_ROOT)
    argv = [sys.executable, "-m", "tools.bench.client", "bulkrtt", "--host", target.host,
            "--port", "80", "--echo-port", "7", "--bytes", str(bbr_bytes(sz)),
            "--seconds", f"{sz.bbr_seconds:g}", "--interval", f"{BBR_PROBE_INTERVAL:g}",
            "--base-probes", str(BBR_BASE_PROBES), "--timeout", f"{client_timeout:g}"]
    sender: dict[str, Any] = {}
    # The sender's view starts first (its interpreter's start-up overlaps the relay's);
    # the wait for a quiet machine comes once both are up.
    view = _sender_view(target, client_timeout + 90)
    try:
        with path:
            first = _read_line(view, 15.0)
            if not first.startswith("SAMPLING"):
                rec: dict[str, Any] = {"error": "the sender's view did not start: "
                                                + (first.strip() or "no output")[-300:]}
            else:
                with _rep(target, out, hook, rep):
                    try:
                        rec = client_result(path.run(argv, timeout=client_timeout + 15))
                    except subprocess.TimeoutExpired:
                        rec = {"error": f"timed out after {client_timeout + 15:g}s "
                                        "(hard timeout)"}
            try:
                stdout, stderr = view.communicate(timeout=15)  # closes its stdin: done
                sender = client_result(subprocess.CompletedProcess(
                    view.args, view.returncode, stdout, stderr))
            except subprocess.TimeoutExpired:
                sender = {"error": "the sender's view did not finish"}
    finally:
        target.server_ns.forget(view)
    relay = path.counters
    rec.update({"cc": algorithm, "path": path_name, "s2c": spec, "c2s": BBR_C2S,
                "sender": sender, "relay": relay,
                # What the path dropped server -> client: tail drops at the bottleneck's
                # queue and random loss (the same count for either stack).
                "path_drops": relay.get("b2a_tail_dropped", 0) + relay.get("b2a_dropped", 0),
                "path_packets": relay.get("b2a_packets", 0)})
    if "error" not in rec:
        seen = sender.get("cc")
        if "error" in sender:
            rec["error"] = f"the sender's view: {sender['error']}"
        elif not sender.get("samples"):
            rec["error"] = "the sender's connection was never seen (ss / tcpstack ss)"
        elif seen != [algorithm]:
            rec["error"] = f"the sender used {', '.join(seen or ['?'])}, not {algorithm}"
        else:
            rec["retrans"] = sender.get("retrans", 0)
            if sender.get("rtt_ms") is not None:
                rec["sender_rtt_ms"] = sender["rtt_ms"]
    return rec


def run_bbr(target: Target, hook: Hook | None) -> Outcome:
    """Goodput and queueing delay of CUBIC and BBR through a bottleneck, with and
    without random loss."""
    sz = target.sizes
    out = Outcome("bbr", params={
        "seconds": sz.bbr_seconds, "bytes": bbr_bytes(sz), "reps": sz.bbr_reps,
        "algorithms": list(BBR_ALGORITHMS), "c2s": BBR_C2S, "s2c": dict(BBR_PATHS),
        "rtt_ms": BBR_RTT_MS, "probe_interval": BBR_PROBE_INTERVAL,
        "base_probes": BBR_BASE_PROBES})
    if target.server_ns is None:
        raise SetupError(f"{target.name}: not set up")
    for algorithm in BBR_ALGORITHMS:
        if target.app != f"cc:{algorithm}":
            target.ensure_fresh(f"cc:{algorithm}")  # a server running this algorithm
        for rep in range(sz.bbr_reps):
            for path_name in BBR_PATHS:
                if _gave_up(out):
                    break
                out.reps.append(_bbr_transfer(target, algorithm, path_name, rep, out, hook))
    bad = [r for r in out.reps if "error" in r]
    if bad:
        out.fail(f"{len(bad)} of {len(out.reps)} downloads failed: {bad[0]['cc']} "
                 f"{bad[0]['path']}: {bad[0]['error']}")
    seen: dict[str, list[str]] = {}
    for algorithm in BBR_ALGORITHMS:
        for path_name in BBR_PATHS:
            ok = [r for r in out.reps if r["cc"] == algorithm and r["path"] == path_name
                  and "error" not in r]
            for metric in BBR_METRICS:
                values = [float(r[metric]) for r in ok if r.get(metric) is not None]
                if values:
                    key = f"{algorithm}_{path_name}_{metric}"
                    out.summary[key] = _median(values)
                    out.summary[f"{key}_min"] = min(values)
                    out.summary[f"{key}_max"] = max(values)
                    out.summary[f"{key}_n"] = float(len(values))
        seen[algorithm] = sorted({cc for r in out.reps if r["cc"] == algorithm
                                  for cc in r.get("sender", {}).get("cc", [])})
    out.params["sender_cc"] = seen
    return out


# -- connection rate --------------------------------------------------------------------

_AB_FIELDS = {
    "complete": re.compile(r"^Complete requests:\s+(\d+)", re.M),
    "failed": re.compile(r"^Failed requests:\s+(\d+)", re.M),
    "non2xx": re.compile(r"^Non-2xx responses:\s+(\d+)", re.M),
    "rps": re.compile(r"^Requests per second:\s+([\d.]+)", re.M),
    "time_per_request_ms": re.compile(r"^Time per request:\s+([\d.]+) \[ms\] \(mean\)$", re.M),
    "keepalive": re.compile(r"^Keep-Alive requests:\s+(\d+)", re.M),
}


def _ab(target: Target, n: int, c: int, timeout: float, *, path: str = "/",
        port: int = 80, keepalive: bool = False) -> dict[str, Any]:
    argv = ["ab", "-q", "-r", "-s", "10", "-n", str(n), "-c", str(c),
            f"http://{target.host}:{port}{path}"]
    if keepalive:
        argv.insert(1, "-k")
    try:
        proc = target.run_client(argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g}s (hard timeout)"}
    rec: dict[str, Any] = {}
    for key, rx in _AB_FIELDS.items():
        m = rx.search(proc.stdout)
        if m:
            rec[key] = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
    rec.setdefault("non2xx", 0)
    if proc.returncode != 0 or "rps" not in rec:
        tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["?"])[-1]
        rec["error"] = f"ab exit {proc.returncode}: {tail}"
    elif rec.get("complete") != n:
        rec["error"] = f"ab completed {rec.get('complete')} of {n} requests"
    return rec


def run_connrate(target: Target, hook: Hook | None) -> Outcome:
    sz = target.sizes
    out = Outcome("connrate", params={"n": sz.connrate_n, "c": sz.connrate_c})
    for rep in range(sz.reps):
        if _gave_up(out):
            break
        with _rep(target, out, hook, rep):
            out.reps.append(_ab(target, sz.connrate_n, sz.connrate_c, sz.timeout_connrate))
    _summarise(out, {"rps": "rps"})
    ok = [r for r in out.reps if "error" not in r]
    out.summary["failed"] = float(sum(int(r.get("failed", 0)) + int(r.get("non2xx", 0))
                                      for r in ok))
    return out


# -- the web application: aiohttp, HTTPS ------------------------------------------------


def run_aiohttp(target: Target, hook: Hook | None) -> Outcome:
    """Keep-alive requests/s of ``GET /json`` from the aiohttp application."""
    sz = target.sizes
    out = Outcome("aiohttp", params={"n": sz.web_n, "c": sz.web_c, "keepalive": True,
                                     "path": "/json"})
    for rep in range(sz.reps):
        if _gave_up(out):
            break
        with _rep(target, out, hook, rep):
            rec = _ab(target, sz.web_n, sz.web_c, sz.timeout_web, path="/json",
                      port=WEB_HTTP_PORT, keepalive=True)
        if "error" not in rec and rec.get("keepalive") != sz.web_n:
            rec["error"] = (f"only {rec.get('keepalive')} of {sz.web_n} requests were "
                            "answered on kept-alive connections")
        out.reps.append(rec)
    _summarise(out, {"rps": "rps"})
    ok = [r for r in out.reps if "error" not in r]
    out.summary["failed"] = float(sum(int(r.get("failed", 0)) + int(r.get("non2xx", 0))
                                      for r in ok))
    return out


_S_TIME = re.compile(r"^(\d+) connections in ([\d.]+) real seconds", re.M)


def _s_time(target: Target, seconds: int, timeout: float) -> dict[str, Any]:
    """``openssl s_time -new``: as many full TLS handshakes as fit in ``seconds``."""
    argv = ["openssl", "s_time", "-connect", f"{target.host}:{WEB_HTTPS_PORT}", "-new",
            "-time", str(seconds)]
    try:
        proc = target.run_client(argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g}s (hard timeout)"}
    m = _S_TIME.search(proc.stdout)
    if proc.returncode != 0 or m is None or float(m.group(2)) <= 0 or int(m.group(1)) == 0:
        tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines()
                or ["?"])[-1]
        return {"error": f"openssl s_time exit {proc.returncode}: {tail}"}
    n, secs = int(m.group(1)), float(m.group(2))
    return {"handshakes": n, "handshake_seconds": secs, "handshakes_per_s": n / secs}


def _curl_https(target: Target, nbytes: int, timeout: float) -> dict[str, Any]:
    """``curl`` over HTTPS, verifying the server's certificate; the length is checked."""
    if target.web_tls is None:
        return {"error": "no certificate to verify the server with"}
    argv = ["curl", "-sS", "-o", "/dev/null", "--max-time", f"{timeout:g}",
            "--cacert", str(target.web_tls[0]),
            "-w", "%{size_download} %{time_total} %{http_code}",
            f"https://{target.host}:{WEB_HTTPS_PORT}/bytes/{nbytes}"]
    try:
        proc = target.run_client(argv, timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g}s (hard timeout)"}
    try:
        size_s, secs_s, code = proc.stdout.split()
        size, secs = int(size_s), float(secs_s)
    except ValueError:
        return {"error": f"curl exit {proc.returncode}: {proc.stderr.strip()[-200:]}"}
    if proc.returncode != 0 or code != "200" or size != nbytes:
        return {"error": f"curl exit {proc.returncode}, HTTP {code}, {size} of {nbytes} "
                         f"bytes: {proc.stderr.strip()[-200:]}"}
    return {"bytes": size, "seconds": secs, "mbps": size / secs / 1e6 if secs > 0 else 0.0}


def run_https(target: Target, hook: Hook | None) -> Outcome:
    """TLS handshakes/s, then bulk MB/s over TLS, from the same application's HTTPS port."""
    sz = target.sizes
    out = Outcome("https", params={"handshake_seconds": sz.tls_seconds,
                                   "bulk_bytes": sz.tls_bulk_bytes})
    for rep in range(sz.reps):
        if _gave_up(out):
            break
        with _rep(target, out, hook, rep):
            rec = _s_time(target, sz.tls_seconds, sz.timeout_tls)
            if "error" not in rec:
                bulk = _curl_https(target, sz.tls_bulk_bytes, sz.timeout_tls)
                if "error" in bulk:
                    rec["error"] = f"bulk download: {bulk['error']}"
                else:
                    rec.update(bulk)
        out.reps.append(rec)
    _summarise(out, {"handshakes_per_s": "handshakes_per_s", "mbps": "mbps"})
    return out


# -- latency ---------------------------------------------------------------------------


def _latency(name: str, ipv6: bool) -> Callable[[Target, Hook | None], Outcome]:
    """The ping-pong latency workload, over IPv4 or over IPv6."""

    def run(target: Target, hook: Hook | None) -> Outcome:
        return _run_latency(name, target, hook, target.address(ipv6))

    return run


def _run_latency(name: str, target: Target, hook: Hook | None, host: str) -> Outcome:
    sz = target.sizes
    out = Outcome(name, params={"round_trips": sz.latency_n, "payload": 64, "host": host})
    for rep in range(sz.reps):
        if _gave_up(out):
            break
        with _rep(target, out, hook, rep):
            out.reps.append(client_run(target, [
                "latency", "--host", host, "--port", "7", "--count", str(sz.latency_n),
                "--size", "64", "--timeout", f"{sz.timeout_latency:g}",
            ], timeout=sz.timeout_latency + 15))
    _summarise(out, {"p50_us": "p50_us", "p99_us": "p99_us"})
    return out


run_latency = _latency("latency", ipv6=False)
run_latency6 = _latency("latency6", ipv6=True)


# -- idle connections --------------------------------------------------------------------


def run_idle(target: Target, hook: Hook | None) -> Outcome:
    sz = target.sizes
    out = Outcome("idle", params={"connections": sz.idle_n, "fresh_server_per_rep": True})
    for rep in range(sz.idle_reps):
        if _gave_up(out):
            break
        target.ensure_fresh()
        with _rep(target, out, hook, rep):
            rec = client_run(target, [
                "idle", "--host", target.host, "--port", "7", "--count", str(sz.idle_n),
                "--server-pid", str(target.server_pid), "--concurrency", "100",
                "--timeout", f"{sz.timeout_idle:g}",
            ], timeout=sz.timeout_idle + 30)
        if "error" not in rec and rec.get("answered") != sz.idle_n:
            rec["error"] = (f"only {rec.get('answered')} of {sz.idle_n} connections answered "
                            f"({rec.get('opened')} opened; errors {rec.get('errors')})")
        if "error" not in rec and "rss_per_conn_bytes" not in rec:
            rec["error"] = "could not read the server's VmRSS"
        out.reps.append(rec)
    _summarise(out, {"rss_per_conn_bytes": "rss_per_conn_bytes"})
    # "All answered within T s": the slowest repetition's time to check every connection.
    checked = [float(r["check_seconds"]) for r in out.reps
               if "error" not in r and r.get("check_seconds") is not None]
    if checked:
        out.summary["check_seconds"] = max(checked)
    answered = [int(r.get("answered", 0)) for r in out.reps]
    out.summary["answered"] = float(min(answered)) if answered else 0.0
    out.summary["connections"] = float(sz.idle_n)
    stats = [r for r in out.reps if r.get("sockstat_before") and r.get("sockstat_after")]
    if stats:
        out.params["sockstat"] = {"before": stats[0]["sockstat_before"],
                                  "after": stats[0]["sockstat_after"]}
    slabs = [r for r in out.reps if r.get("slab_before") and r.get("slab_after")]
    if slabs:
        out.params["slab"] = {"before": slabs[0]["slab_before"], "after": slabs[0]["slab_after"]}
    return out


# -- SYN flood ----------------------------------------------------------------------------

FLOOD_SUMMARY = {"flood_ratio": "ratio", "recovery_s": "recovery_seconds",
                 "syn_rate": "syn_rate", "baseline_rate": "baseline_rate",
                 "flood_rate": "flood_rate",
                 "baseline_machine_cores": "baseline_machine_cores",
                 "flood_machine_cores": "flood_machine_cores",
                 "machine_us_per_syn": "machine_us_per_syn",
                 "server_us_per_syn": "server_us_per_syn"}
"""The flood's summary figures (medians) and the repetition field each comes from."""


def flood_outcome(target: Target) -> Outcome:
    """A flood outcome for ``target`` with no repetition yet, its parameters filled in."""
    sz = target.sizes
    return Outcome("flood", params={
        "seconds": sz.flood_seconds, "target_rate": sz.flood_rate,
        "baseline_seconds": sz.flood_baseline, "recovery_limit": sz.flood_recovery,
        "fetch": "curl --max-time 2 GET /", "spoofed_from": target.flood_subnet,
        "fresh_server_per_rep": True})


def _flood_client(target: Target, rep: int, mark: int = 0) -> dict[str, Any]:
    """``client.py flood`` for repetition ``rep`` (seed ``rep + 1``), the flooder's
    socket marked ``mark`` (0: not)."""
    sz = target.sizes
    timeout = sz.flood_baseline + sz.flood_seconds + sz.flood_recovery + 30
    args = ["flood", "--host", target.host, "--port", "80", "--path", "/",
            "--subnet", target.flood_subnet, "--exclude", ",".join(target.flood_exclude),
            "--rate", str(sz.flood_rate), "--seconds", f"{sz.flood_seconds:g}",
            "--baseline", f"{sz.flood_baseline:g}", "--recovery", f"{sz.flood_recovery:g}",
            "--fetch-timeout", "2", "--seed", str(rep + 1), "--timeout", f"{timeout:g}",
            "--server-pid", str(target.server_pid)]
    if mark:
        args += ["--mark", f"{mark:#x}"]
    return client_run(target, args, timeout=timeout + 30)


def flood_rep(target: Target, out: Outcome, hook: Hook | None, rep: int) -> bool:
    """Repetition ``rep`` (from 0) of the flood on ``target``, appended to ``out.reps``.

    Repetition 0 runs on the server as it is (the caller made it fresh), every later
    one on a restarted server. Returns False, running nothing, once an earlier
    repetition timed out (:func:`_gave_up`).
    """
    if _gave_up(out):
        return False
    if rep:
        target.restart_server()
    with _rep(target, out, hook, rep):
        out.reps.append(_flood_client(target, rep))
    return True


FLOOD_CONTROL_MARK = 0x7E1
"""The flooder's socket mark (``SO_MARK``) in the flood's control repetitions: the
server namespace's OUTPUT chain drops every packet that carries it."""
FLOOD_CONTROL_ARM = "tcpstack-control"
"""The control repetitions' name in ``params["order"]``."""
FLOOD_CONTROL_STACK = "tcpstack"
"""The target the control runs on (the daemon whose SYN work it leaves out)."""
FLOOD_CONTROL_WHAT = ("the flood's SYNs dropped by netfilter (OUTPUT, by the flooder's "
                      "socket mark) before the TUN: the daemon does no SYN work, the flooder "
                      "and the client run as in the flood")
"""What the control measures, in one line (``params["control"]["what"]``)."""
IPTABLES_TIMEOUT = 30.0
"""Seconds one ``iptables`` command may take (``-w`` waits for the xtables lock)."""


def control_rule(op: str, mark: int = FLOOD_CONTROL_MARK) -> list[str]:
    """The control's iptables rule, added (``op`` ``-A``) or deleted (``-D``)."""
    return [op, "OUTPUT", "-m", "mark", "--mark", f"{mark:#x}", "-j", "DROP"]


def run_iptables(target: Target, args: Sequence[str]) -> None:
    """``iptables -w ARGS`` in ``target``'s server namespace; raises :class:`SetupError`
    (one line) when it fails."""
    ns = target.server_ns
    if ns is None:
        raise SetupError(f"{target.name}: not set up")
    argv = ["iptables", "-w", *args]
    try:
        proc = ns.run(argv, timeout=IPTABLES_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SetupError(f"{' '.join(argv)}: timed out after {IPTABLES_TIMEOUT:g} s") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise SetupError(f"{' '.join(argv)}: {detail}")


@contextlib.contextmanager
def flood_dropped(target: Target, mark: int = FLOOD_CONTROL_MARK) -> Iterator[None]:
    """While inside, ``target``'s server namespace drops in OUTPUT every packet marked
    ``mark``; the rule is deleted afterwards, also when the body raises."""
    run_iptables(target, control_rule("-A", mark))
    try:
        yield
    finally:
        run_iptables(target, control_rule("-D", mark))


def flood_control_rep(target: Target, control: Outcome, hook: Hook | None, rep: int) -> bool:
    """Control repetition ``rep`` (from 0) on ``target``, appended to ``control.reps``: on
    a restarted server, the flood with the flooder's socket marked
    :data:`FLOOD_CONTROL_MARK` while :func:`flood_dropped` drops what it marks, the
    same seed as the pair's other repetitions. Returns False, running nothing, once an
    earlier control repetition timed out; raises as :func:`flood_rep` may (a server
    that does not restart) or when the rule cannot be added or deleted."""
    if _gave_up(control):
        return False
    target.restart_server()
    with _rep(target, control, hook, rep), flood_dropped(target):
        control.reps.append(_flood_client(target, rep, FLOOD_CONTROL_MARK))
    return True


def flood_control_skip(target: Target) -> str | None:
    """Why the control is not run on ``target`` (None: it is)."""
    if target.name != FLOOD_CONTROL_STACK:
        return f"the control runs on {FLOOD_CONTROL_STACK} only"
    if not target.sizes.flood_control:
        return "this mode's sizes leave it out (flood_control is off in tiny mode)"
    if shutil.which("iptables") is None:
        return "iptables is not installed"
    return None


def control_summary(control: Outcome, stopped: str = "") -> dict[str, Any]:
    """``params["control"]`` from the control repetitions (``control.reps``); ``stopped``:
    why they stopped early (an exception), if they did."""
    spread = _medians(control.reps, {"ratio": "ratio", "syn_rate": "syn_rate"})
    bad = [r for r in control.reps if "error" in r]
    doc: dict[str, Any] = {
        "what": FLOOD_CONTROL_WHAT,
        "rule": " ".join(["iptables", "-w", *control_rule("-A")]) + " (server namespace)",
        "mark": f"{FLOOD_CONTROL_MARK:#x}",
        "reps": control.reps,
        "ratio_median": spread.get("ratio"),
        "ratio_min": spread.get("ratio_min"),
        "ratio_max": spread.get("ratio_max"),
        "n": int(spread.get("ratio_n", 0)),
        "failed": len(bad),
        "seconds": round(control.seconds, 3),
    }
    if "syn_rate" in spread:
        doc["syn_rate_median"] = spread["syn_rate"]
    if bad:
        doc["first_error"] = str(bad[0]["error"])
    stopped = stopped or str(control.params.get("stopped_early", ""))
    if stopped:
        doc["stopped_early"] = stopped
    if "background_busy" in control.params:
        doc["background_busy"] = control.params["background_busy"]
    if control.disturbed:
        doc["disturbed"] = control.disturbed
    return doc


def control_figure(control: Outcome, tcp: Outcome) -> dict[str, Any]:
    """The control's part of the paired figure: its median ratio and, per pair where
    both succeeded, the control's ratio minus tcpstack's (:func:`paired_ratios`)."""
    fig = paired_ratios("control", control, FLOOD_CONTROL_STACK, tcp)
    return {"control_ratio_median": _medians(control.reps, {"ratio": "ratio"}).get("ratio"),
            "control_pairs": fig.pop("pairs"), **fig}


def summarise_flood(out: Outcome) -> None:
    """The flood's summary from its repetitions: medians, the slowest recovery, fetch
    counts; the outcome fails if any repetition did."""
    _summarise(out, FLOOD_SUMMARY)
    ok = [r for r in out.reps if "error" not in r]
    if ok:
        # The target is about the worst case: every repetition answers within 1 s.
        out.summary["recovery_s"] = max(float(r["recovery_seconds"]) for r in ok)
        out.summary["recovered"] = float(all(r.get("recovered") for r in ok))
        for key in ("baseline_ok", "baseline_attempts", "flood_ok", "flood_attempts"):
            out.summary[key] = float(sum(int(r.get(key, 0)) for r in ok))


def run_flood(target: Target, hook: Hook | None) -> Outcome:
    """Every repetition of the flood on one target, one after the other."""
    out = flood_outcome(target)
    for rep in range(target.sizes.flood_reps):
        if not flood_rep(target, out, hook, rep):
            break
    summarise_flood(out)
    return out


def abba(pairs: int) -> list[tuple[int, int]]:
    """Which of two targets (0 and 1) runs first in each pair: (0, 1), (1, 0), (0, 1) ..."""
    return [(0, 1) if p % 2 == 0 else (1, 0) for p in range(pairs)]


def mirrored(pairs: int, arms: int) -> list[tuple[int, ...]]:
    """The order of ``arms`` arms (0 ...) in each pair: ascending in even pairs, descending
    in odd ones -- (0, 1, 2), (2, 1, 0), (0, 1, 2) ...: a drift that is linear over two
    pairs falls alike on every arm. Two arms: :func:`abba`."""
    up = tuple(range(arms))
    return [up if p % 2 == 0 else up[::-1] for p in range(pairs)]


def paired_ratios(first: str, first_out: Outcome, second: str,
                  second_out: Outcome) -> dict[str, Any]:
    """The paired figure of two flood outcomes whose repetitions alternated.

    Pair r is repetition r of each; only pairs where both succeeded (with a ``ratio``)
    count. ``FIRST_ratio_minus_SECOND`` lists, per such pair, the first's ratio
    (fetches/s during the flood / before it) minus the second's, ``..._median`` is
    their median (None without a pair), ``FIRST_ratio_ge_SECOND_pairs`` counts the
    pairs where the first's ratio was >= the second's.
    """
    # One may have fewer repetitions (it stopped early, or the other has more): pairs
    # up to the shorter.
    diffs = [float(x["ratio"]) - float(y["ratio"])
             for x, y in zip(first_out.reps, second_out.reps, strict=False)
             if "error" not in x and "error" not in y
             and x.get("ratio") is not None and y.get("ratio") is not None]
    key = f"{first}_ratio_minus_{second}"
    return {"pairs": len(diffs),
            key: diffs,
            f"{key}_median": _median(diffs) if diffs else None,
            f"{first}_ratio_ge_{second}_pairs": sum(1 for d in diffs if d >= 0)}


def run_flood_paired(targets: Sequence[Target],
                     hooks: Mapping[str, Hook | None] | None = None) -> dict[str, Outcome]:
    """The flood on two targets set up at once, their repetitions alternating (ABBA),
    plus tcpstack's control arm when it is available.

    Each target is checked and its server made fresh as :func:`run_workload` does: one
    the flood is not run against gets a skipped outcome and the other runs alone; an
    exception (its server cannot be restarted, a bug) fails that target's outcome as
    :func:`run_workload` would, and it runs no further repetition while the other goes
    on. Repetition r of each target is pair r; pair 0 runs ``targets[0]`` first, pair 1
    ``targets[1]`` first, and so on, so that the machine's drift over the minutes falls
    on both alike. A target with more repetitions (``sizes.flood_reps``) runs its extra
    ones at the end. ``hooks`` maps a target's name to its hook (profiling).

    The control (:func:`flood_control_rep`, named :data:`FLOOD_CONTROL_ARM`) runs on the
    tcpstack target when :func:`flood_control_skip` finds no reason against it: each
    pair then has three repetitions, in mirrored order (:func:`mirrored`): pair 0
    ``targets[0]``, ``targets[1]``, the control; pair 1 the control, ``targets[1]``,
    ``targets[0]``; ... It runs while tcpstack does, as many times as tcpstack's
    repetitions, the pair's seed. Its repetitions are not tcpstack's: they go to
    tcpstack's ``params["control"]`` (:func:`control_summary`; or ``{"skipped":
    reason}``) and its median, with the spread, to ``summary["control_ratio"]``
    (``_min``, ``_max``, ``_n``); a failed one, or an exception (stopping the control),
    never fails tcpstack's outcome.

    Each outcome's ``seconds`` is the time spent on that target alone (making its
    server fresh, its repetitions), not the other's, nor the control's (in
    ``params["control"]["seconds"]``). When both ran, ``params`` hold ``paired_with``
    (the other's name), ``order`` (per pair, the names in the order they ran) and
    ``paired`` (:func:`paired_ratios` of ``targets[0]`` against ``targets[1]``, the
    same in both; with the control, also :func:`control_figure`). Returns the outcomes
    by target name, in the order of ``targets``.
    """
    if len(targets) != 2:
        raise ValueError(f"run_flood_paired needs two targets, not {len(targets)}")
    hooks = hooks or {}
    outs: dict[str, Outcome] = {}
    seconds = dict.fromkeys((t.name for t in targets), 0.0)
    running: list[Target] = []
    crashed: set[str] = set()

    def step(target: Target, rep: int | None) -> bool:
        """Make ``target``'s server fresh (``rep`` None) or run repetition ``rep``; False
        when that target is done (gave up, or an exception failed its outcome)."""
        t0 = time.monotonic()
        try:
            if rep is None:
                target.ensure_fresh(WORKLOAD_APPS.get("flood", "services"))
                return True
            return flood_rep(target, outs[target.name], hooks.get(target.name), rep)
        except Exception as exc:  # as run_workload: report it, go on with the other
            outs[target.name] = _failed("flood", exc)
            crashed.add(target.name)
            return False
        finally:
            seconds[target.name] += time.monotonic() - t0

    for target in targets:
        skip = _skip_reason("flood", target)
        if skip is not None:
            outs[target.name] = Outcome("flood", status="skipped", reason=skip)
            continue
        outs[target.name] = flood_outcome(target)
        if step(target, None):
            running.append(target)

    # tcpstack's control arm: its own outcome, never tcpstack's.
    tcp = next((t for t in running if t.name == FLOOD_CONTROL_STACK), None)
    control_skip = flood_control_skip(tcp) if tcp is not None else None
    control = Outcome("flood-control") if tcp is not None and control_skip is None else None
    control_stopped = ""

    def control_step(rep: int) -> bool:
        """Control repetition ``rep``; False when the control is done (gave up, or an
        exception: recorded, tcpstack's outcome untouched)."""
        nonlocal control_stopped
        assert tcp is not None and control is not None
        t0 = time.monotonic()
        before = len(control.reps)
        try:
            return flood_control_rep(tcp, control, hooks.get(tcp.name), rep)
        except Exception as exc:
            reason = (f"{exc}" if isinstance(exc, SetupError)
                      else f"{type(exc).__name__}: {exc}")
            if len(control.reps) == before:  # the repetition itself left no record
                control.reps.append({"error": reason})
            control_stopped = f"at repetition {rep + 1}: {reason}"
            return False
        finally:
            control.seconds += time.monotonic() - t0

    # The arms in pair 0's order (odd pairs mirror it); None is the control.
    arms: list[Target | None] = [*targets, *([None] if control is not None else [])]
    control_on = control is not None
    order: list[list[str]] = []
    pairs = max((t.sizes.flood_reps for t in running), default=0)
    for rep, pair in enumerate(mirrored(pairs, len(arms))):
        ran: list[str] = []
        for arm in (arms[i] for i in pair):
            if arm is None:
                assert tcp is not None
                if not control_on or tcp not in running or rep >= tcp.sizes.flood_reps:
                    continue
                if control_step(rep):
                    ran.append(FLOOD_CONTROL_ARM)
                else:
                    control_on = False
                continue
            if arm not in running or rep >= arm.sizes.flood_reps:
                continue
            if step(arm, rep):
                ran.append(arm.name)
            else:
                running.remove(arm)
        if ran:
            order.append(ran)
    for name, out in outs.items():
        if out.status != "skipped" and name not in crashed:
            summarise_flood(out)
        out.seconds = seconds[name]
    figure: dict[str, Any] = {}
    a, b = (t.name for t in targets)
    both = outs[a].status != "skipped" and outs[b].status != "skipped"
    if both:
        figure = paired_ratios(a, outs[a], b, outs[b])
    if tcp is not None:
        tcp_out = outs[tcp.name]
        if control is None:
            tcp_out.params["control"] = {"skipped": control_skip}
        else:
            tcp_out.params["control"] = control_summary(control, control_stopped)
            tcp_out.summary.update(_medians(control.reps, {"control_ratio": "ratio"}))
            figure.update(control_figure(control, tcp_out))
    if both:
        for name, other in ((a, b), (b, a)):
            outs[name].params.update(paired_with=other, order=order, paired=figure)
    elif tcp is not None and control is not None:  # tcpstack and its control alone
        outs[tcp.name].params.update(order=order, paired=figure)
    return outs


# -- common ------------------------------------------------------------------------------


def _medians(reps: list[dict[str, Any]], keys: dict[str, str]) -> dict[str, float]:
    """Per summary name, the median of its field (``keys``) over the successful ``reps``,
    and its spread: ``NAME_min``, ``NAME_max``, ``NAME_n`` (the report's [min-max])."""
    ok = [r for r in reps if "error" not in r]
    summary: dict[str, float] = {}
    for name, key in keys.items():
        values = [float(r[key]) for r in ok if r.get(key) is not None]
        if values:
            summary[name] = _median(values)
            # The spread, so a reader sees how much one figure can be trusted.
            summary[f"{name}_min"] = min(values)
            summary[f"{name}_max"] = max(values)
            summary[f"{name}_n"] = float(len(values))
    return summary


def _summarise(out: Outcome, keys: dict[str, str]) -> None:
    """Medians of the successful repetitions; the outcome fails if any repetition did."""
    bad = [r for r in out.reps if "error" in r]
    if bad:
        out.fail(f"{len(bad)} of {len(out.reps)} repetitions failed: {bad[0]['error']}")
    out.summary.update(_medians(out.reps, keys))


RUNNERS: dict[str, Callable[[Target, Hook | None], Outcome]] = {
    "download": run_download,
    "download6": run_download6,
    "upload": run_upload,
    "echo": run_echo,
    "latency": run_latency,
    "latency6": run_latency6,
    "impaired_c2s": run_impaired_c2s,
    "impaired_both": run_impaired_both,
    "idle": run_idle,
    "connrate": run_connrate,
    "aiohttp": run_aiohttp,
    "https": run_https,
    "flood": run_flood,
    "tfo": run_tfo,
    "bbr": run_bbr,
}


def _skip_reason(name: str, target: Target) -> str | None:
    """Why workload ``name`` is not run against ``target`` (None: it is)."""
    if name in WEB_WORKLOADS and not target.supports_web:
        return f"{target.name} cannot run the aiohttp application"
    if name in IPV6_WORKLOADS and not target.host6:
        return f"{target.name} has no IPv6 address in this benchmark"
    if target.name not in STACK_WORKLOADS.get(name, (target.name,)):
        return f"{name} is not run against {target.name}"
    return None


def _failed(name: str, exc: Exception) -> Outcome:
    """The outcome of a workload that raised ``exc`` (call it in the ``except`` block)."""
    out = Outcome(name)
    if isinstance(exc, SetupError):
        out.fail(f"server could not be (re)started: {exc}")
    else:  # a bug or an unexpected tool failure: report, go on
        out.fail(f"{type(exc).__name__}: {exc}")
        out.params["traceback"] = traceback.format_exc()[-2000:]
    return out


def run_workload(name: str, target: Target, hook: Hook | None = None) -> Outcome:
    """Run one workload; never raises for a workload failure (only for Ctrl-C)."""
    t0 = time.monotonic()
    try:
        skip = _skip_reason(name, target)
        if skip is not None:
            out = Outcome(name, status="skipped", reason=skip)
        else:
            if name != "idle":  # idle starts a fresh server for every repetition itself
                target.ensure_fresh(WORKLOAD_APPS.get(name, "services"))
            out = RUNNERS[name](target, hook)
    except Exception as exc:
        out = _failed(name, exc)
    out.seconds = time.monotonic() - t0
    return out
