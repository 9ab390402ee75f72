"""The results table (Markdown), the targets from the issue, and the JSON document."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tools.bench.settings import (
    BBR_ALGORITHMS,
    BBR_PATH_LABELS,
    BBR_PATHS,
    MIB,
    TFO_RTT_MS,
    Sizes,
)
from tools.bench.workloads import Outcome

STACKS = ("tcpstack", "kernel", "pytcp")
Results = dict[str, dict[str, Outcome]]
"""stack -> workload -> outcome."""


@dataclass(frozen=True)
class Row:
    """One line of the table: a number taken from one workload's summary."""

    workload: str
    label: str
    key: str
    fmt: Callable[[float], str]
    target: str = ""
    # (tcpstack value, kernel value, tcpstack outcome) -> pass?; None: no target
    check: Callable[[float, float | None, Outcome], bool] | None = None
    ratio: bool = True


def _f0(x: float) -> str:
    return f"{x:,.0f}"


def _f1(x: float) -> str:
    return f"{x:,.1f}" if x < 1000 else f"{x:,.0f}"


def _kib(x: float) -> str:
    return f"{x / 1024:.2f}"


def _ratio_at_least(r: float) -> Callable[[float, float | None, Outcome], bool]:
    return lambda t, k, o: k is not None and k > 0 and t / k >= r


def _connrate_ok(t: float, k: float | None, o: Outcome) -> bool:
    return k is not None and k > 0 and t / k >= 0.5 and o.summary.get("failed", 1) == 0


def _latency_ok(t: float, k: float | None, o: Outcome) -> bool:
    return k is not None and k > 0 and t <= 2.5 * k


def _all_answer(t: float, k: float | None, o: Outcome) -> bool:
    return (o.status == "ok" and t == o.summary.get("connections")
            and o.summary.get("check_seconds", float("inf")) <= 10.0)


def _small_rss(t: float, k: float | None, o: Outcome) -> bool:
    return t <= 5 * 1024


def _f2(x: float) -> str:
    return f"{x:.2f}"


def _within_10s(t: float, k: float | None, o: Outcome) -> bool:
    return t <= 10.0


def _flood_ratio_ok(t: float, k: float | None, o: Outcome) -> bool:
    return k is not None and t >= k


def _recovers_in_1s(t: float, k: float | None, o: Outcome) -> bool:
    return o.summary.get("recovered") == 1.0 and t <= 1.0


_CC_NAMES = {"cubic": "CUBIC", "bbr": "BBR"}


def _bbr_rows() -> tuple[Row, ...]:
    """The bbr workload's rows: per path, per algorithm, goodput and queueing delay."""
    rows = []
    for path in BBR_PATHS:
        for cc in BBR_ALGORITHMS:
            where = f"{_CC_NAMES.get(cc, cc)} download, {BBR_PATH_LABELS[path]}"
            rows.append(Row("bbr", f"{where}: goodput (MB/s)", f"{cc}_{path}_mbps", _f2))
            rows.append(Row("bbr", f"{where}: queueing delay, median (ms)",
                            f"{cc}_{path}_qdelay_ms", _f1))
    return tuple(rows)


# The targets of issue 12 (ratios to the kernel in the same run) and issue 8 (flood).
# The IPv6 rows (issue 11) have no target: their ratios to the kernel over IPv6 are shown.
ROWS: tuple[Row, ...] = (
    Row("download", "bulk download, 1 connection (MB/s)", "mbps", _f1,
        ">= 0.6x kernel", _ratio_at_least(0.6)),
    Row("download6", "bulk download over IPv6, 1 connection (MB/s)", "mbps", _f1),
    Row("upload", "bulk upload, 1 connection (MB/s)", "mbps", _f1,
        ">= 0.6x kernel", _ratio_at_least(0.6)),
    Row("echo", "echo, both directions on 1 connection (MB/s)", "mbps", _f1,
        ">= 0.6x kernel", _ratio_at_least(0.6)),
    Row("connrate", "new connections/s (ab -c 16, HTTP/1.0)", "rps", _f0,
        ">= 0.5x kernel, 0 failed", _connrate_ok),
    Row("latency", "64 B ping-pong p50 (us)", "p50_us", _f1, "<= 2.5x kernel", _latency_ok),
    Row("latency", "64 B ping-pong p99 (us)", "p99_us", _f1),
    Row("latency6", "64 B ping-pong over IPv6 p50 (us)", "p50_us", _f1),
    Row("latency6", "64 B ping-pong over IPv6 p99 (us)", "p99_us", _f1),
    Row("impaired_c2s", "download, client->server impaired (MB/s)", "mbps", _f1,
        ">= 0.9x kernel", _ratio_at_least(0.9)),
    Row("impaired_both", "download, both ways impaired (MB/s)", "mbps", _f1,
        ">= 0.8x kernel", _ratio_at_least(0.8)),
    Row("idle", "idle connections answering", "answered", _f0,
        "all, within 10 s", _all_answer, ratio=False),
    Row("idle", "idle: seconds to check them all (slowest run)", "check_seconds", _f1,
        "<= 10 s", _within_10s, ratio=False),
    Row("idle", "idle: server RSS per connection (KiB)", "rss_per_conn_bytes", _kib,
        "<= 5 KiB", _small_rss),
    Row("aiohttp", "aiohttp JSON requests/s (ab -k -c 16, keep-alive)", "rps", _f0),
    Row("https", "aiohttp over TLS: handshakes/s (openssl s_time -new)", "handshakes_per_s",
        _f0),
    Row("https", "aiohttp over TLS: bulk download (MB/s)", "mbps", _f1),
    Row("flood", "SYN flood: fetches/s OK during / before", "flood_ratio", _f2,
        ">= kernel's", _flood_ratio_ok),
    # tcpstack's control arm (the kernel has none: its cell shows "—"); no target.
    Row("flood", "SYN flood, control: fetches/s OK during / before with the flood dropped "
        "before the TUN (the daemon does no SYN work)", "control_ratio", _f2, ratio=False),
    Row("flood", "SYN flood: first fetch OK after it (s)", "recovery_s", _f2, "<= 1 s",
        _recovers_in_1s, ratio=False),
    Row("flood", "SYN flood: SYN rate achieved (/s)", "syn_rate", _f0),
    Row("flood", "SYN flood: machine CPU busy before it (cores)", "baseline_machine_cores",
        _f2),
    Row("flood", "SYN flood: machine CPU busy during it (cores)", "flood_machine_cores", _f2),
    Row("flood", "SYN flood: machine CPU per flood SYN (µs)", "machine_us_per_syn", _f1),
    Row("flood", "SYN flood: server process CPU per flood SYN (µs; the kernel's SYN work "
        "is softirq, outside it)", "server_us_per_syn", _f1),
    # TCP Fast Open over a path of TFO_RTT_MS: no target, the ratios to the kernel.
    Row("tfo", f"short HTTP request, {TFO_RTT_MS} ms RTT, plain: median (ms)", "plain_ms", _f1),
    Row("tfo", f"short HTTP request, {TFO_RTT_MS} ms RTT, plain: p99 (ms)", "plain_p99_ms",
        _f1),
    Row("tfo", f"short HTTP request, {TFO_RTT_MS} ms RTT, Fast Open: median (ms)", "tfo_ms",
        _f1),
    Row("tfo", f"short HTTP request, {TFO_RTT_MS} ms RTT, Fast Open: p99 (ms)", "tfo_p99_ms",
        _f1),
    Row("tfo", f"Fast Open saving, plain - Fast Open median (ms; 1 RTT = {TFO_RTT_MS})",
        "saving_ms", _f1, ratio=False),
    Row("tfo", "Fast Open requests whose SYN data was acknowledged", "tfo_syn_data", _f0,
        ratio=False),
    # BBR and CUBIC through a bottleneck, with and without random loss: no target.
    *_bbr_rows(),
)


def _value(outcome: Outcome | None, key: str) -> float | None:
    if outcome is None:
        return None
    v = outcome.summary.get(key)
    return None if v is None else float(v)


def _cell(outcome: Outcome | None, row: Row) -> str:
    if outcome is None:
        return "not run"
    if outcome.status == "skipped":
        return "n/a"
    v = _value(outcome, row.key)
    if row.key == "answered" and v is not None:
        text = f"{v:,.0f}/{outcome.summary.get('connections', 0):,.0f}"
    elif row.key == "tfo_syn_data" and v is not None:
        text = f"{v:,.0f}/{outcome.summary.get('tfo_requests', 0):,.0f}"
    elif v is None:
        text = "—"
    else:
        text = row.fmt(v)
        lo = outcome.summary.get(f"{row.key}_min")
        hi = outcome.summary.get(f"{row.key}_max")
        if lo is not None and hi is not None and outcome.summary.get(f"{row.key}_n", 1) > 1:
            text += f" [{row.fmt(lo)}-{row.fmt(hi)}]"
    if row.workload == "bbr" and v is not None and row.key.endswith("_qdelay_ms"):
        p95 = outcome.summary.get(row.key.replace("_qdelay_ms", "_qdelay_p95_ms"))
        if p95 is not None:
            text += f" (p95 {row.fmt(p95)})"
    if row.workload == "bbr" and v is not None and row.key.endswith("_mbps"):
        # The sender's retransmissions (its own count: segments for Linux, retransmitted
        # runs for tcpstack) and the packets the path dropped (the relay's count).
        retrans = outcome.summary.get(row.key.replace("_mbps", "_retrans"))
        drops = outcome.summary.get(row.key.replace("_mbps", "_path_drops"))
        if retrans is not None and drops is not None:
            text += f" ({retrans:,.0f} retrans., {drops:,.0f} dropped)"
    if row.key == "rps" and v is not None:
        text += f" ({outcome.summary.get('failed', 0):.0f} failed req.)"
    if row.key == "flood_ratio" and v is not None:
        s = outcome.summary
        text += (f" ({s.get('flood_rate', 0):.1f} vs {s.get('baseline_rate', 0):.1f} "
                 f"fetches/s; {s.get('flood_ok', 0):.0f} of {s.get('flood_attempts', 0):.0f} "
                 "OK during)")
    if row.key == "control_ratio":
        control = outcome.params.get("control") or {}
        if control.get("failed"):
            text += f" ({control['failed']} of {len(control.get('reps', []))} control runs failed)"
    if row.key == "recovery_s" and v is not None and outcome.summary.get("recovered") == 0:
        text = f"none within {v:g}"
    if outcome.status == "failed":
        bad = sum(1 for r in outcome.reps if "error" in r)
        text += f" FAILED ({bad}/{len(outcome.reps)} runs)" if outcome.reps else " FAILED"
    return text


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}x"


def evaluate(results: Results) -> list[dict[str, Any]]:
    """One record per row: the three values, ratios, the target and PASS/FAIL."""
    rows = []
    for row in ROWS:
        outs = {s: results.get(s, {}).get(row.workload) for s in STACKS}
        vals = {s: _value(outs[s], row.key) for s in STACKS}
        verdict = ""
        tout = outs["tcpstack"]
        if row.check is not None:
            t = vals["tcpstack"]
            if tout is None:
                verdict = "not run"
            elif tout.status == "failed" or t is None:
                verdict = "FAIL"
            else:
                kout = outs["kernel"]
                k = vals["kernel"] if kout is not None and kout.status == "ok" else None
                verdict = "PASS" if row.check(t, k, tout) else "FAIL"
                if k is None and row.ratio:
                    verdict = "FAIL (no kernel reference)"
        rows.append({
            "workload": row.workload, "metric": row.label, "key": row.key,
            "values": vals,
            "cells": {s: _cell(outs[s], row) for s in STACKS},
            "tcpstack_over_kernel": _ratio(vals["tcpstack"], vals["kernel"]) if row.ratio
            else "—",
            "tcpstack_over_pytcp": _ratio(vals["tcpstack"], vals["pytcp"]) if row.ratio
            else "—",
            "target": row.target or "—", "result": verdict or "—",
        })
    return rows


def markdown_table(rows: list[dict[str, Any]], workloads: list[str]) -> str:
    head = ("| workload | tcpstack | kernel | pytcp | tcpstack/kernel | tcpstack/pytcp "
            "| target | result |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        if r["workload"] not in workloads:
            continue
        c = r["cells"]
        lines.append(f"| {r['metric']} | {c['tcpstack']} | {c['kernel']} | {c['pytcp']} | "
                     f"{r['tcpstack_over_kernel']} | {r['tcpstack_over_pytcp']} | "
                     f"{r['target']} | {r['result']} |")
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False,
                             cwd=str(Path(__file__).resolve().parents[2]))
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


def machine_meta() -> dict[str, Any]:
    import tcpstack
    from tcpstack.build import build_kind

    try:
        uvloop_version = importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        uvloop_version = "not installed"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "kernel": platform.release(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 0,
        "python": platform.python_version(),
        "tcpstack_version": getattr(tcpstack, "__version__", "?"),
        "build": build_kind(),
        "git_commit": _git_commit(),
        "uvloop": uvloop_version,
        "argv": sys.argv[1:],
    }


def _mib(n: int) -> str:
    return f"{n / MIB:g} MiB" if n >= MIB else f"{n} B"


def sizes_line(name: str, sz: Sizes) -> str:
    return (f"{name}: {sz.reps} repetition(s) (idle: {sz.idle_reps}, impaired: "
            f"{sz.impaired_reps}); download up to {_mib(sz.download_max)} "
            f"(~{sz.download_seconds:g} s), upload up to {_mib(sz.upload_max)} "
            f"(<= {sz.upload_seconds:g} s), echo {_mib(sz.echo_bytes)}, impaired downloads "
            f"{_mib(sz.impaired_bytes)}, ab -n {sz.connrate_n} -c {sz.connrate_c}, "
            f"{sz.latency_n} round trips, {sz.idle_n} idle connections; aiohttp: ab -k -n "
            f"{sz.web_n} -c {sz.web_c}; https: s_time {sz.tls_seconds} s, download "
            f"{_mib(sz.tls_bulk_bytes)}; SYN flood {sz.flood_seconds:g} s at "
            f"{sz.flood_rate:,}/s (x{sz.flood_reps}; fetches {sz.flood_baseline:g} s before, "
            f"up to {sz.flood_recovery:g} s after); Fast Open: {sz.tfo_requests} requests "
            f"per mode (x{sz.tfo_reps}, after {sz.tfo_warmup} warm-up ones); BBR vs CUBIC: "
            f"{sz.bbr_seconds:g} s downloads (x{sz.bbr_reps} per algorithm and path)")


def machine_line(doc: dict[str, Any]) -> str:
    """Where and how the figures were measured, in one line."""
    meta = doc["meta"]
    commit = f", commit {meta['git_commit']}" if meta.get("git_commit") else ""
    pinned = "pinned" if doc.get("pinned") else "unpinned"
    cc = f", {doc['congestion_control']} on both stacks" if doc.get("congestion_control") else ""
    return (f"{meta['date'][:10]}, {meta['cpu']}, {meta['cores']} cores, Linux "
            f"{meta['kernel']}, Python {meta['python']}, uvloop {meta['uvloop']}, tcpstack "
            f"{meta.get('build', '?')}{commit}; {doc['mode']} mode, {pinned}{cc}")


def render(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    out = [
        f"# tcpstack benchmark ({doc['mode']}) -- {meta['date']}",
        "",
        f"- machine: {meta['cpu']}, {meta['cores']} cores; Linux {meta['kernel']}; "
        f"Python {meta['python']}; uvloop {meta['uvloop']}; tcpstack {meta['tcpstack_version']}"
        f", {meta.get('build', '?')} build"
        + (f" ({meta['git_commit']})" if meta.get("git_commit") else ""),
    ]
    if doc.get("congestion_control"):
        out.append(f"- congestion control: {doc['congestion_control']} on tcpstack and the "
                   "kernel (every workload but bbr)")
    for name, desc in doc["targets"].items():
        out.append(f"- {name}: {desc}")
    out += ["", markdown_table(doc["rows"], doc["workloads"]), ""]
    out.append("Values are medians over the repetitions, [min-max] the spread when there "
               "were several (p99: median of per-run p99s). MB = 10^6 bytes. Ratios are "
               "tcpstack divided by the other column.")
    missing = doc.get("missing", [])
    if missing:
        out += ["", "## Not run", ""]
        out += [f"- {line}" for line in missing]
    failures = doc.get("failures", [])
    if failures:
        out += ["", "## Failures", ""]
        out += [f"- {line}" for line in failures]
    out += ["", "## Notes", ""]
    out += [f"- {line}" for line in doc.get("notes", [])]
    return "\n".join(out) + "\n"


def write(doc: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    text = render(doc)
    payload = json.dumps(doc, indent=2, default=str) + "\n"
    json_path = out_dir / f"bench-{stamp}.json"
    md_path = out_dir / f"bench-{stamp}.md"
    json_path.write_text(payload)
    md_path.write_text(text)
    (out_dir / "latest.json").write_text(payload)
    (out_dir / "latest.md").write_text(text)
    return json_path, md_path


README_BEGIN = "<!-- bench:begin -->"
README_END = "<!-- bench:end -->"


class ReadmeError(Exception):
    """The README has no (or a broken) pair of markers; the message is one line."""


def update_readme(path: Path, doc: dict[str, Any]) -> None:
    """Replace what lies between the bench markers in ``path`` with this run's table."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ReadmeError(f"cannot read {path}: {exc.strerror}") from None
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise ReadmeError(f"{path} has no '{README_BEGIN}' ... '{README_END}' section")
    body = "\n".join([
        README_BEGIN,
        f"**{machine_line(doc)}** (`python -m tools.bench"
        + (f" {' '.join(doc['meta']['argv'])}" if doc["meta"].get("argv") else "") + "`)",
        "",
        markdown_table(doc["rows"], doc["workloads"]),
        "",
        "Medians, [min-max] over the repetitions; MB = 10^6 bytes. Written by the tool "
        "(`--readme`), not by hand.",
        "",
    ])
    path.write_text(text[:begin] + body + text[end:])
