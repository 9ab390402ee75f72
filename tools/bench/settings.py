"""Sizes, counts, repetitions and hard timeouts for each benchmark mode."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

MIB = 1024 * 1024

WORKLOADS: tuple[str, ...] = ("download", "download6", "upload", "echo", "latency", "latency6",
                               "impaired_c2s", "impaired_both", "idle", "aiohttp", "https",
                               "tfo", "bbr", "connrate", "flood")
"""Every workload, in the order they run (connrate and flood late: they leave TIME-WAIT and
half-open connections behind; every workload starts on a fresh server anyway. tfo comes
before them: a kernel listener whose SYN queue still holds a flood's half-open
connections answers with SYN cookies, and a SYN cookie means no Fast Open)."""

FLOOD_STACKS: tuple[str, ...] = ("tcpstack", "kernel")
"""The SYN flood runs against these only (PyTCP is not part of the comparison)."""

TFO_STACKS: tuple[str, ...] = ("tcpstack", "kernel")
"""The Fast Open workload runs against these only (PyTCP has no TCP Fast Open)."""

BBR_STACKS: tuple[str, ...] = ("tcpstack", "kernel")
"""The BBR-vs-CUBIC workload runs against these only (PyTCP has neither)."""

STACK_WORKLOADS: dict[str, tuple[str, ...]] = {"flood": FLOOD_STACKS, "tfo": TFO_STACKS,
                                               "bbr": BBR_STACKS}
"""Workloads that run against some stacks only; every other one runs against all."""

WEB_WORKLOADS: frozenset[str] = frozenset({"aiohttp", "https"})
"""The workloads served by the aiohttp application (:mod:`tools.bench.web_server`)
rather than by tcpstack's own services."""

IPV6_WORKLOADS: frozenset[str] = frozenset({"download6", "latency6"})
"""The workloads that reach the server at its IPv6 address (``download`` and ``latency``
over IPv6: the same code, another address family)."""

WORKLOAD_APPS: dict[str, str] = {"aiohttp": "web", "https": "web", "tfo": "tfo",
                                 "bbr": "cc:cubic"}
"""Which server application a workload needs (:attr:`tools.bench.targets.Target.app`):
``web`` is the aiohttp application, ``tfo`` the usual services with TCP Fast Open on
(their own server start, so no other workload runs with Fast Open), ``cc:NAME`` the
usual services with congestion control NAME on every connection (the bbr workload
starts with ``cc:cubic`` and switches to ``cc:bbr`` itself); every other workload gets
``services``."""

WEB_HTTP_PORT = 8080
"""The web application's plain HTTP port."""
WEB_HTTPS_PORT = 8443
"""The web application's HTTPS port (the same application behind TLS)."""


@dataclass(frozen=True)
class Sizes:
    """What one target runs; every loop it drives is bounded by these."""

    reps: int
    """Repetitions of each workload (the median is reported)."""
    idle_reps: int
    """Repetitions of the idle workload (each on a freshly started server)."""
    download_max: int
    """Bytes of the bulk download at most (``GET /bytes/N``)."""
    download_seconds: float
    """Aim for a download of about this long: N = probed rate x this, capped at download_max."""
    download_probe: int
    """Bytes of the calibration download that picks N (0: always download_max)."""
    upload_max: int
    """Bytes of the bulk upload at most."""
    upload_seconds: float
    """Stop sending after this long even if upload_max was not reached."""
    connrate_n: int
    """Requests for ``ab -n``."""
    connrate_c: int
    """Concurrency for ``ab -c``."""
    latency_n: int
    """Timed 64-byte round trips (after a short warm-up)."""
    echo_bytes: int
    """Bytes sent to echo and read back on one connection."""
    impaired_bytes: int
    """Bytes of the download through the impaired relay."""
    impaired_reps: int
    """Repetitions of each impaired download (relay seed = repetition number)."""
    idle_n: int
    """Concurrent idle connections."""
    timeout_download: float
    timeout_upload: float
    timeout_connrate: float
    timeout_latency: float
    timeout_idle: float
    timeout_echo: float
    timeout_impaired: float
    web_n: int
    """Requests of the aiohttp workload (``ab -k -n``)."""
    web_c: int
    """Its concurrency (``ab -c``)."""
    tls_seconds: int
    """How long each ``openssl s_time -new`` run opens TLS connections."""
    tls_bulk_bytes: int
    """Bytes of the bulk download over HTTPS."""
    timeout_web: float
    timeout_tls: float
    flood_seconds: float
    """Duration of the spoofed SYN flood."""
    flood_rate: int
    """SYNs per second the flooder aims for (the same for every stack)."""
    flood_baseline: float
    """Seconds of legitimate fetches just before the flood (each stack's own reference)."""
    flood_recovery: float
    """After the flood, wait at most this long for a fresh fetch to succeed."""
    flood_reps: int
    """Repetitions of the flood workload (each on a freshly started server)."""
    flood_control: bool
    """Whether the paired flood (tcpstack and the kernel) adds tcpstack's control arm: a
    repetition per pair with the flood's SYNs dropped by netfilter before the TUN
    (:func:`tools.bench.workloads.run_flood_paired`)."""
    tfo_requests: int
    """Timed short HTTP requests of the tfo workload, per mode (plain and Fast Open)."""
    tfo_warmup: int
    """Fast Open requests before the timed ones (the first only gets the cookie)."""
    tfo_reps: int
    """Repetitions of the tfo workload (each through a fresh impaired path)."""
    timeout_tfo: float
    """The tfo client's deadline for all its requests (each also has its own 5 s)."""
    bbr_seconds: float
    """How long each download of the bbr workload runs (then the client stops reading)."""
    bbr_reps: int
    """Repetitions of the bbr workload (each algorithm, each path, a fresh relay each)."""
    quiet_wait: float = 10.0
    """Before each measured repetition, wait at most this long for the CPUs to be idle."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Sizes(
    reps=5, idle_reps=3,
    download_max=200 * MIB, download_seconds=10.0, download_probe=16 * MIB,
    upload_max=200 * MIB, upload_seconds=10.0,
    connrate_n=5000, connrate_c=16, latency_n=5000, idle_n=10_000,
    echo_bytes=100 * MIB, impaired_bytes=20 * MIB, impaired_reps=5,
    timeout_download=60.0, timeout_upload=60.0, timeout_connrate=180.0,
    timeout_latency=90.0, timeout_idle=300.0, timeout_echo=90.0, timeout_impaired=120.0,
    web_n=20_000, web_c=16, tls_seconds=5, tls_bulk_bytes=100 * MIB,
    timeout_web=120.0, timeout_tls=60.0,
    flood_seconds=10.0, flood_rate=20_000, flood_baseline=10.0, flood_recovery=60.0,
    flood_reps=5, flood_control=True,
    tfo_requests=200, tfo_warmup=3, tfo_reps=3, timeout_tfo=120.0,
    bbr_seconds=8.0, bbr_reps=3,
)

QUICK = replace(
    FULL, reps=2, idle_reps=1,
    download_max=200 * MIB, download_seconds=3.0, download_probe=8 * MIB,
    upload_max=200 * MIB, upload_seconds=3.0,
    connrate_n=500, latency_n=500, idle_n=500,
    echo_bytes=20 * MIB, impaired_bytes=8 * MIB, impaired_reps=1,
    timeout_download=30.0, timeout_upload=30.0, timeout_connrate=60.0,
    timeout_latency=30.0, timeout_idle=60.0, timeout_echo=60.0, timeout_impaired=90.0,
    web_n=3000, tls_seconds=3, tls_bulk_bytes=32 * MIB,
    timeout_web=60.0, timeout_tls=40.0,
    flood_seconds=10.0, flood_rate=20_000, flood_baseline=3.0, flood_recovery=15.0,
    flood_reps=1,
    tfo_requests=50, tfo_reps=2, timeout_tfo=60.0,
    bbr_seconds=4.0, bbr_reps=1,
)

TINY = replace(
    QUICK, reps=1, idle_reps=1,
    download_max=1 * MIB, download_seconds=1.0, download_probe=0,
    upload_max=1 * MIB, upload_seconds=1.0,
    connrate_n=50, latency_n=50, idle_n=50,
    echo_bytes=1 * MIB, impaired_bytes=1 * MIB, impaired_reps=1,
    timeout_download=20.0, timeout_upload=20.0, timeout_connrate=30.0,
    timeout_latency=20.0, timeout_idle=30.0, timeout_echo=20.0, timeout_impaired=60.0,
    web_n=200, tls_seconds=1, tls_bulk_bytes=1 * MIB,
    timeout_web=20.0, timeout_tls=20.0, quiet_wait=1.0,
    flood_seconds=1.0, flood_rate=2_000, flood_baseline=1.0, flood_recovery=2.0,
    flood_control=False,  # the smoke test's run does not grow
    tfo_requests=10, tfo_reps=1, timeout_tfo=30.0,
    bbr_seconds=1.0, bbr_reps=1,
)

# PyTCP moves about 1 MB/s (0.5 MB/s upstream), with one thread per
# connection: small sizes and counts, strict timeouts.
PYTCP_FULL = replace(
    FULL, reps=3, idle_reps=1,
    download_max=2 * MIB, download_seconds=5.0, download_probe=0,
    upload_max=2 * MIB, upload_seconds=5.0,
    connrate_n=500, connrate_c=16, latency_n=1000, idle_n=500,
    echo_bytes=2 * MIB, impaired_bytes=1 * MIB, impaired_reps=1,
    timeout_download=40.0, timeout_upload=40.0, timeout_connrate=90.0,
    timeout_latency=60.0, timeout_idle=120.0, timeout_echo=60.0, timeout_impaired=60.0,
)

PYTCP_QUICK = replace(
    PYTCP_FULL, reps=1, download_max=1 * MIB, upload_max=1 * MIB,
    connrate_n=200, latency_n=200, idle_n=100, echo_bytes=1 * MIB,
)

PYTCP_TINY = replace(PYTCP_QUICK, connrate_n=50, latency_n=50, idle_n=20,
                     echo_bytes=256 * 1024)

IMPAIRMENT = "loss=2,delay=5ms,reorder=5"
"""What the relay does to each impaired direction (issue 12's path): 2 % loss, 5 ms
delay, 5 % of packets held back behind later ones; ``seed`` is added per repetition."""


TFO_DELAY_MS = 10
"""One-way delay of the tfo workload's path, added by the relay in each direction."""
TFO_RTT_MS = 2 * TFO_DELAY_MS
"""So the path's round-trip time (plus what the relay and the stacks add)."""
TFO_IMPAIRMENT = f"delay={TFO_DELAY_MS}ms"
"""What the relay does to each direction of the tfo workload's path: the delay, nothing else."""
TFO_PATH = "/bytes/100"
"""What each of its requests fetches (``GET TFO_PATH HTTP/1.0``, a connection each)."""
TFO_QUEUE = 128
"""Fast Open queue of every listener (connections opened by Fast Open still in
SYN-RECEIVED): the same for both stacks, tcpstack's default (its ``--backlog``)."""


BBR_ALGORITHMS: tuple[str, ...] = ("cubic", "bbr")
"""The congestion controls the bbr workload compares, on tcpstack and on the kernel."""
BBR_RATE_MBIT = 40
"""The bbr workload's bottleneck, server -> client (Mbit/s): 5 MB/s, well below what
tcpstack (and the relay, also pure Python) move on a clean path."""
BBR_DELAY_MS = 10
"""One-way delay added by the relay in each direction of the bbr workload's path."""
BBR_RTT_MS = 2 * BBR_DELAY_MS
"""So its base round-trip time (plus what the relay and the stacks add: measured)."""
BBR_QUEUE = 200
"""The bottleneck's FIFO buffer (packets, tail drop): 3 bandwidth-delay products (BDP =
5 MB/s x 20 ms = 100 kB = 67 full-size packets); full, it holds 60 ms of data. Deeper
than BBR v1's own limit (2 BDP in flight, so at most about 1 BDP queued, plus its
allowance for ACK aggregation): a loss-based sender fills what BBR leaves empty. (With
1.5 BDP both BBRs -- Linux's too -- sat at ~1 BDP of queue, as deep as CUBIC's median.)"""
BBR_LOSS = 1
"""Random loss (%) of the lossy path, after the bottleneck."""
BBR_C2S = f"delay={BBR_DELAY_MS}ms"
"""What the relay does client -> server (requests and ACKs): the delay, nothing else."""
BBR_S2C = f"rate={BBR_RATE_MBIT}mbit,queue={BBR_QUEUE},delay={BBR_DELAY_MS}ms"
"""And server -> client (the download's data): the bottleneck, its queue, the delay."""
BBR_PATHS: dict[str, str] = {"clean": BBR_S2C, "lossy": f"{BBR_S2C},loss={BBR_LOSS}"}
"""The bbr workload's paths by name: the server -> client impairment (``seed`` added)."""
BBR_PATH_LABELS: dict[str, str] = {
    "clean": f"{BBR_RATE_MBIT} Mbit/s, {BBR_RTT_MS} ms RTT, {BBR_QUEUE}-packet queue",
    "lossy": f"{BBR_RATE_MBIT} Mbit/s, {BBR_RTT_MS} ms RTT, {BBR_QUEUE}-packet queue, "
             f"{BBR_LOSS} % loss",
}
"""How the table names each path."""
BBR_PROBE_INTERVAL = 0.025
"""Seconds between the starts of the bbr workload's 64-byte ping-pong probes."""
BBR_BASE_PROBES = 10
"""Probes on the idle path before each download: their minimum is the base RTT."""
BBR_SAMPLE_INTERVAL = 0.2
"""Seconds between two looks at the sender's connection (``ss -ti``, ``tcpstack ss``)."""


def sizes_for(mode: str, stack: str) -> Sizes:
    """The sizes for ``mode`` (full, quick, tiny) and ``stack`` (tcpstack, kernel, pytcp)."""
    if stack == "pytcp":
        return {"full": PYTCP_FULL, "quick": PYTCP_QUICK, "tiny": PYTCP_TINY}[mode]
    return {"full": FULL, "quick": QUICK, "tiny": TINY}[mode]
