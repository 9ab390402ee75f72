"""``python -m tools.bench``: run the workloads against tcpstack, the kernel and PyTCP.

Each stack in turn is set up, runs its workloads and is torn down: tcpstack, the
kernel, PyTCP. When both tcpstack and the kernel run the SYN flood, it comes after
their other workloads: both are set up again at once and the flood's repetitions
alternate between them in ABBA order (:func:`tools.bench.workloads.run_flood_paired`).

Exit status: 0 when the benchmark ran (missed targets and failed workloads are
reported in the table, not as an error); 1 with a one-line ``bench: error:
...`` message when the environment could not be set up; 2 for bad
arguments; 130 when interrupted. Namespaces and processes are cleaned up in
every case.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import os
import shutil
import signal
import stat
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from tools.bench import netns, report
from tools.bench.netns import SetupError
from tools.bench.profiling import PySpy
from tools.bench.pytcp_env import DEFAULT_VENV, PytcpUnavailable, ensure_pytcp
from tools.bench.settings import (
    BBR_ALGORITHMS,
    BBR_C2S,
    BBR_LOSS,
    BBR_PATHS,
    BBR_PROBE_INTERVAL,
    BBR_QUEUE,
    BBR_RATE_MBIT,
    BBR_RTT_MS,
    STACK_WORKLOADS,
    TFO_DELAY_MS,
    TFO_PATH,
    TFO_RTT_MS,
    WEB_WORKLOADS,
    WORKLOADS,
    sizes_for,
)
from tools.bench.targets import (
    COMPARABLE_ALGORITHMS,
    KernelTarget,
    PytcpTarget,
    Target,
    TcpstackTarget,
    default_pinning,
    kernel_default_congestion_control,
)
from tools.bench.workloads import Hook, Outcome, run_flood_paired, run_workload

WORKLOAD_HELP = {
    "download": "bulk download over one connection (curl GET /bytes/N), MB/s",
    "download6": "the same bulk download over IPv6, MB/s",
    "upload": "bulk upload over one connection to discard, MB/s",
    "echo": "N bytes sent to echo and read back on one connection, MB/s",
    "latency": "64-byte ping-pong to echo, p50/p99 in microseconds",
    "latency6": "the same ping-pong over IPv6, p50/p99 in microseconds",
    "impaired_c2s": "download through the impairing relay, client->server direction "
                    "impaired (2% loss, 5 ms, 5% reordering), MB/s",
    "impaired_both": "the same download with both directions impaired, MB/s",
    "idle": "N concurrent idle connections to echo: all answer? server RSS per connection",
    "connrate": "new connections per second (ab -c 16, no keep-alive)",
    "aiohttp": "an aiohttp app's small JSON endpoint: requests/s (ab -k -c 16, keep-alive)",
    "https": "the same app over TLS: handshakes/s (openssl s_time -new), bulk MB/s (curl)",
    "flood": "spoofed SYN flood: fetches OK during it vs before, first OK fetch after it "
             "(tcpstack and kernel only, their repetitions alternating; full and quick "
             "add a control on tcpstack with the flood dropped before the TUN)",
    "tfo": "short HTTP requests over a 20 ms RTT path (relay, 10 ms each way), plain and "
           "with TCP Fast Open: median/p99 ms, the saving (tcpstack and kernel only)",
    "bbr": f"downloads through a {BBR_RATE_MBIT} Mbit/s bottleneck ({BBR_QUEUE}-packet "
           f"queue, {BBR_RTT_MS} ms RTT; and with {BBR_LOSS}% loss) from CUBIC and BBR "
           "servers: goodput MB/s, queueing delay ms (tcpstack and kernel only)",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"bench: error: {message}\n")


def _workload_list(value: str) -> list[str]:
    names = [w.strip() for w in value.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown workload(s) {', '.join(unknown) or '(none)'}; choose from "
            + ", ".join(WORKLOADS))
    return [w for w in WORKLOADS if w in names]


def _stack_list(value: str) -> list[str]:
    names = [w.strip() for w in value.split(",") if w.strip()]
    unknown = [w for w in names if w not in report.STACKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown stack(s) {', '.join(unknown) or '(none)'}; choose from "
            + ", ".join(report.STACKS))
    return [s for s in report.STACKS if s in names]


def _positive_count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= 100:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 100, not {value!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    epilog = "workloads:\n" + "\n".join(f"  {k:13} {v}" for k, v in WORKLOAD_HELP.items())
    p = _Parser(prog="python -m tools.bench",
                description="Benchmark tcpstack over TUN against the Linux kernel's TCP "
                            "(and PyTCP), each inside throw-away network namespaces. "
                            "Needs root.",
                epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smaller sizes and fewer repetitions (about a minute)")
    p.add_argument("--tiny", action="store_true",
                   help="smoke-test sizes: 1 MiB, 50 requests/round trips/connections, "
                        "1 repetition (overrides --quick)")
    p.add_argument("--out", type=Path, default=Path("bench-results"), metavar="DIR",
                   help="where the JSON and Markdown results go (default: ./bench-results/)")
    p.add_argument("--only", type=_workload_list, default=list(WORKLOADS),
                   metavar="WORKLOAD,...", help="run only these workloads")
    p.add_argument("--skip-pytcp", action="store_true", help="do not run PyTCP")
    p.add_argument("--stacks", type=_stack_list, default=list(report.STACKS),
                   metavar="STACK,...",
                   help="run only these of tcpstack, kernel, pytcp (default: all; for "
                        "debugging -- the ratios need tcpstack and kernel)")
    p.add_argument("--pytcp-venv", type=Path, default=DEFAULT_VENV, metavar="DIR",
                   help="virtualenv for PyTCP, created with pip if missing "
                        "(default: %(default)s)")
    p.add_argument("--pin", action="store_true",
                   help="pin servers to the first CPU and clients to the second (default: "
                        "unpinned, as users run; pinned runs vary less but flatter "
                        "whichever placement suits a stack)")
    p.add_argument("--congestion-control", default="", metavar="NAME",
                   choices=("", *COMPARABLE_ALGORITHMS),
                   help="the congestion control of both stacks in every workload but bbr: "
                        f"{', '.join(COMPARABLE_ALGORITHMS)} (default: the kernel's default "
                        "in a fresh namespace, so that the kernel reference runs as it "
                        "would for a user and tcpstack runs the same algorithm)")
    p.add_argument("--readme", type=Path, default=None, metavar="FILE",
                   help="also write the results table into FILE between the lines "
                        "'<!-- bench:begin -->' and '<!-- bench:end -->' (the README's "
                        "figures come from the tool, never edited by hand)")
    p.add_argument("--flood-reps", type=_positive_count, default=None, metavar="N",
                   help="repetitions of the SYN flood per stack (default: the mode's, 5 in "
                        "full mode): its ratios vary by +-10 %% per repetition on a small "
                        "machine, so a comparison wants more of them")
    p.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                   help="record py-spy profiles of the tcpstack server into DIR "
                        "(every repetition; slows it down, so use such a run for the "
                        "profiles, not the numbers)")
    return p


def preflight(workloads: list[str]) -> None:
    """Raise :class:`SetupError` (one line) if this machine cannot run the benchmark."""
    if os.geteuid() != 0:
        raise SetupError("must run as root (network namespaces, TUN/TAP devices)")
    try:
        if not stat.S_ISCHR(os.stat("/dev/net/tun").st_mode):
            raise SetupError("/dev/net/tun is not a character device")
    except FileNotFoundError:
        raise SetupError("/dev/net/tun is missing (no TUN support)") from None
    web = WEB_WORKLOADS.intersection(workloads)
    tools = ("ip", "curl", "ab") + (("openssl",) if web else ())
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        hint = {"ip": "iproute2", "curl": "curl", "ab": "apache2-utils", "openssl": "openssl"}
        raise SetupError("missing tools: " + ", ".join(f"{t} (apt-get install {hint[t]})"
                                                         for t in missing))
    if web:
        absent = [m for m in ("aiohttp", "cryptography") if importlib.util.find_spec(m) is None]
        if absent:
            raise SetupError(
                f"the {' and '.join(sorted(web))} workload(s) need the Python package(s) "
                f"{', '.join(absent)} (pip install -e '.[aiohttp,tls]'), or leave them out "
                "with --only")
    probe = netns.Netns("probe")
    probe.create()  # raises SetupError with the reason
    probe.close()


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _headline(o: Outcome) -> str:
    if o.status != "ok":
        return f"{o.status}: {o.reason}"
    # The medians only: each one's spread (_min, _max, _n) is in the table.
    parts = [f"{k}={v:,.1f}" for k, v in o.summary.items()
             if not k.endswith(("_min", "_max", "_n"))]
    return ", ".join(parts)


def run_target(target: Target, workloads: list[str], hook: Hook | None,
               fatal_setup: bool) -> tuple[dict[str, Outcome], str | None]:
    """Set up ``target``, run the workloads, tear down. Returns (outcomes, setup error)."""
    outcomes: dict[str, Outcome] = {}
    try:
        _progress(f"[{target.name}] setting up: {target.describe()}")
        try:
            target.setup()
        except SetupError as exc:
            if fatal_setup:
                raise
            return outcomes, str(exc)
        for name in workloads:
            _progress(f"[{target.name}] {name} ...")
            outcome = run_workload(name, target, hook)
            outcomes[name] = outcome
            _progress(f"[{target.name}] {name}: {_headline(outcome)} ({outcome.seconds:.1f} s)")
    finally:
        target.teardown()
    return outcomes, None


def run_flood_alternating(targets: tuple[Target, Target],
                          hooks: dict[str, Hook | None]) -> dict[str, Outcome]:
    """Set up both targets at once, run the flood with their repetitions alternating
    (:func:`run_flood_paired`), tear both down (always). A set-up error is raised."""
    with contextlib.ExitStack() as cleanup:
        for target in targets:
            cleanup.callback(target.teardown)
            _progress(f"[{target.name}] setting up for the flood: {target.describe()}")
            target.setup()
        _progress(f"[{' and '.join(t.name for t in targets)}] flood, the repetitions "
                  "alternating (ABBA) ...")
        outcomes = run_flood_paired(targets, hooks)
    for name, outcome in outcomes.items():
        _progress(f"[{name}] flood: {_headline(outcome)} ({outcome.seconds:.1f} s)")
    return outcomes


def _choose_congestion_control(asked: str) -> tuple[str, str]:
    """The algorithm both stacks run, and why that one."""
    if asked:
        return asked, "chosen with --congestion-control"
    default = kernel_default_congestion_control()
    if default in COMPARABLE_ALGORITHMS:
        return default, "the kernel's default here"
    return "cubic", (f"the kernel's default here, {default!r}, is not one tcpstack has; "
                     "cubic is Linux's usual default")


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    workloads: list[str] = args.only
    # SIGINT too: a shell starts background jobs with SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    started = time.monotonic()
    try:
        preflight(workloads)
        out_dir: Path = args.out
        log_dir = out_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        doc = _run(args, mode, workloads, log_dir)
        doc["seconds"] = round(time.monotonic() - started, 1)
        json_path, md_path = report.write(doc, out_dir)
        print(report.render(doc))
        if args.readme is not None:
            report.update_readme(args.readme, doc)
            _progress(f"updated the results table in {args.readme}")
        _progress(f"wrote {json_path} and {md_path} ({doc['seconds']:.0f} s)")
        return 0
    except (SetupError, report.ReadmeError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; namespaces and processes cleaned up", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        netns.close_all()


def _run(args: argparse.Namespace, mode: str, workloads: list[str],
         log_dir: Path) -> dict[str, Any]:
    results: dict[str, dict[str, Outcome]] = {}
    targets: dict[str, str] = {}
    missing: list[str] = []
    notes: list[str] = []
    sizes = {s: sizes_for(mode, s) for s in report.STACKS}
    if args.flood_reps is not None:
        sizes = {s: dataclasses.replace(sz, flood_reps=args.flood_reps)
                 for s, sz in sizes.items()}

    tcp = TcpstackTarget(sizes["tcpstack"], log_dir)
    hook: Hook | None = None
    if args.py_spy is not None:
        try:
            spy = PySpy(args.py_spy, lambda: tcp.server_pid)
        except FileNotFoundError as exc:
            raise SetupError(str(exc)) from None
        hook = spy.record
        notes.append(f"py-spy profiles of the tcpstack server were recorded into {args.py_spy} "
                     "during every repetition: the tcpstack numbers of this run are slowed "
                     "down by the sampling")
    kernel = KernelTarget(sizes["kernel"], log_dir)
    pin = default_pinning() if args.pin else None
    if pin is not None:
        notes.append(f"every server process is pinned to CPU {pin[0]} and every client to CPU "
                     f"{pin[1]} (sched_setaffinity), the same for all stacks: placement "
                     "changes the results a lot on a small machine (ping-pong with both on one "
                     "CPU is 2-3x faster than across CPUs, for the kernel as for tcpstack)")
    else:
        notes.append("processes are not pinned to CPUs (the default; --pin pins them): "
                     "the scheduler places servers, clients and the relay as it would for "
                     "a user; the spread [min-max] of the repetitions is in each cell")
    tcp.pin = kernel.pin = pin
    algorithm, why = _choose_congestion_control(args.congestion_control)
    tcp.congestion_control = kernel.congestion_control = algorithm
    notes.append(f"congestion control: {algorithm} on both tcpstack and the kernel in every "
                 f"workload but bbr ({why}; --congestion-control chooses): comparing one "
                 "algorithm with another would measure the algorithms, not the stacks -- on "
                 "the impaired paths above all, where BBR does not take random loss for "
                 "congestion and CUBIC does")
    if WEB_WORKLOADS.intersection(workloads):
        tcp.web_tls = kernel.web_tls = _web_certificate(log_dir, (tcp, kernel))
        notes.append("aiohttp and https: the same aiohttp application (tools/bench/"
                     "web_server.py, uvloop) on each stack -- on tcpstack through TunStack and "
                     "TcpStackSite, on the kernel through aiohttp's SockSite on kernel "
                     "listening sockets; over TLS (TLS 1.3, a throw-away self-signed "
                     "certificate) the protocol layer is "
                     "uvloop's on kernel sockets and asyncio's SSLProtocol on tcpstack")
    # The flood of both: afterwards, both set up at once, the repetitions alternating.
    paired_flood = "flood" in workloads and {"tcpstack", "kernel"} <= set(args.stacks)
    own = [w for w in workloads if not (paired_flood and w == "flood")]
    for target, h in ((tcp, hook), (kernel, None)):
        if target.name not in args.stacks:
            targets[target.name] = "skipped (--stacks)"
            continue
        targets[target.name] = target.describe()
        results[target.name] = {}
        if own:
            results[target.name], _ = run_target(target, own, h, fatal_setup=True)
        notes += target.notes
    if paired_flood:
        taken = {t.name: len(t.notes) for t in (tcp, kernel)}
        flood = run_flood_alternating((tcp, kernel), {"tcpstack": hook, "kernel": None})
        for name, outcome in flood.items():
            results[name]["flood"] = outcome
        for t in (tcp, kernel):  # the second set-up's notes, without repeating the first's
            notes += [n for n in t.notes[taken[t.name]:] if n not in notes]

    if args.skip_pytcp or "pytcp" not in args.stacks:
        why = "--skip-pytcp" if args.skip_pytcp else "--stacks"
        targets["pytcp"] = f"skipped ({why})"
        missing += [f"pytcp {w}: skipped ({why})" for w in workloads]
    else:
        reason = None
        pytcp_workloads = [w for w in workloads if "pytcp" in STACK_WORKLOADS.get(w, ("pytcp",))]
        why_not = {"flood": "the SYN flood compares tcpstack with the kernel only",
                   "tfo": "PyTCP has no TCP Fast Open",
                   "bbr": "PyTCP has neither BBR nor a choice of congestion control"}
        missing += [f"pytcp {w}: not run ({why_not.get(w, 'tcpstack and kernel only')})"
                    for w in workloads if w not in pytcp_workloads]
        if not pytcp_workloads:
            reason = "no workload for it"
        else:
            try:
                _progress(f"[pytcp] preparing the virtualenv {args.pytcp_venv}")
                python, version, pyver = ensure_pytcp(args.pytcp_venv)
            except PytcpUnavailable as exc:
                reason = str(exc)
        if reason is None:
            pyt = PytcpTarget(sizes["pytcp"], log_dir, python, version)
            pyt.pin = pin
            targets["pytcp"] = pyt.describe()
            if not version.startswith("3."):
                notes.append(f"PyTCP {version} was used: the newest PyTCP release pip resolves "
                             f"for Python {pyver}; the 3.0.x releases require Python >= 3.14")
            results["pytcp"], reason = run_target(pyt, pytcp_workloads, None,
                                                  fatal_setup=False)
            notes += pyt.notes
            if reason is not None:
                reason = f"the PyTCP server could not be started: {reason}"
        if reason is not None:
            targets["pytcp"] = f"not run: {reason}"
            missing += [f"pytcp {w}: not run: {reason}" for w in pytcp_workloads]
        else:
            for w in pytcp_workloads:
                o = results["pytcp"].get(w)
                if o is not None and o.status != "ok":
                    missing.append(f"pytcp {w}: {o.status}: {o.reason}")
            notes.append("PyTCP runs with smaller sizes and counts than the others (it moves "
                         "about 1 MB/s, one thread per connection): "
                         + report.sizes_line("pytcp", sizes["pytcp"]))

    failures = [f"{stack} {w}: {o.reason}" for stack in ("tcpstack", "kernel")
                for w, o in results.get(stack, {}).items() if o.status != "ok"]
    for stack, outs in results.items():
        for w, o in outs.items():
            if o.disturbed:
                notes.append(f"other load on the machine during {stack} {w}: "
                             + "; ".join(o.disturbed))
    notes += _notes(results, sizes["tcpstack"])
    doc: dict[str, Any] = {
        "mode": mode,
        "pinned": pin is not None,
        "congestion_control": algorithm,
        "workloads": workloads,
        "meta": report.machine_meta(),
        "targets": targets,
        "sizes": {s: sz.as_dict() for s, sz in sizes.items()},
        "results": {stack: {w: o.as_dict() for w, o in outs.items()}
                    for stack, outs in results.items()},
        "missing": missing,
        "failures": failures,
        "notes": notes,
    }
    doc["rows"] = report.evaluate(results)
    return doc


def _web_certificate(log_dir: Path, targets: tuple[Target, ...]) -> tuple[Path, Path]:
    """A throw-away certificate for the web application's addresses on every target."""
    from tcpstack.certs import self_signed

    hosts = {"tcpstack": "10.0.0.2", "kernel": "10.9.0.1"}
    cert = self_signed([hosts[t.name] for t in targets if t.name in hosts])
    cert_path, key_path = log_dir / "web-cert.pem", log_dir / "web-key.pem"
    cert_path.write_bytes(cert.cert_pem)
    key_path.touch(mode=0o600)
    key_path.chmod(0o600)
    key_path.write_bytes(cert.key_pem)
    return cert_path, key_path


def _notes(results: dict[str, dict[str, Outcome]], sz: Any) -> list[str]:
    notes = [report.sizes_line("tcpstack and kernel", sz)]
    for stack in ("tcpstack", "kernel"):
        for name, what in (("download", "download"), ("download6", "IPv6 download")):
            dl = results.get(stack, {}).get(name)
            if dl is not None and "bytes" in dl.params:
                notes.append(f"{stack} {what} size: {dl.params['bytes'] / (1 << 20):g} MiB")
    k_idle = results.get("kernel", {}).get("idle")
    if k_idle is not None:
        notes += _kernel_socket_memory(k_idle)
    for stack in ("tcpstack", "kernel"):
        notes += _tfo_note(stack, results.get(stack, {}).get("tfo"))
    for stack in ("tcpstack", "kernel"):
        notes += _bbr_note(stack, results.get(stack, {}).get("bbr"))
    for stack in ("tcpstack", "kernel"):
        fl = results.get(stack, {}).get("flood")
        if fl is not None and fl.status == "ok":
            s = fl.summary
            notes.append(
                f"{stack} SYN flood: {s.get('syn_rate', 0):,.0f} SYN/s achieved (target "
                f"{fl.params['target_rate']:,}/s for {fl.params['seconds']:g} s, spoofed from "
                f"{fl.params['spoofed_from']}); fetches OK {s.get('baseline_ok', 0):.0f}/"
                f"{s.get('baseline_attempts', 0):.0f} before, {s.get('flood_ok', 0):.0f}/"
                f"{s.get('flood_attempts', 0):.0f} during")
    fl = results.get("tcpstack", {}).get("flood")
    if fl is not None and "paired" in fl.params:
        notes.append(_flood_pairing_note(fl.params["paired"], fl.params.get("control")))
    notes.append("the kernel reference uses a veth pair (with its offloads) between two "
                 "namespaces; tcpstack a TUN device; in both the clients and the server share "
                 "this machine's CPUs")
    return notes


def _flood_pairing_note(paired: dict[str, Any], control: dict[str, Any] | None = None) -> str:
    """How the flood's repetitions were ordered, the paired figure, and tcpstack's
    control arm (``params["control"]``: what it measured, or why it was not run)."""
    n = paired.get("pairs", 0)
    median = paired.get("tcpstack_ratio_minus_kernel_median")
    figure = (f"median {median:+.2f} over the {n} pair(s) where both succeeded, tcpstack's "
              f"ratio >= the kernel's in {paired.get('tcpstack_ratio_ge_kernel_pairs', 0)} "
              f"of {n}" if n and median is not None else "no pair where both succeeded")
    with_control = control is not None and "reps" in control
    if with_control:
        order = ("with tcpstack's control repetition as a third arm, in mirrored order "
                 "(tcpstack, the kernel, the control in pair 1; the control, the kernel, "
                 "tcpstack in pair 2; ...)")
    else:
        order = "in ABBA order (tcpstack first in pair 1, the kernel first in pair 2, ...)"
    alike = "every arm" if with_control else "both"
    note = ("SYN flood: both stacks were set up at once and the repetitions alternated "
            f"between them {order}, so that the machine's drift falls on {alike} alike; the "
            "rows are still each stack's medians. Paired, per pair tcpstack's ratio "
            f"(fetches/s during / before) minus the kernel's: {figure}")
    more = _flood_control_note(paired, control)
    return f"{note}. {more}" if more else note


def _flood_control_note(paired: dict[str, Any], control: dict[str, Any] | None) -> str:
    """The control arm's sentence of the pairing note ("" when none was recorded)."""
    if control is None:
        return ""
    if "reps" not in control:
        return f"The control arm was not run: {control.get('skipped', 'no reason recorded')}"
    median = control.get("ratio_median")
    runs = len(control["reps"])
    if median is None:
        text = f"Control ({control.get('what', '')}): no repetition succeeded ({runs} run)"
    else:
        n = paired.get("control_pairs", 0)
        diff = paired.get("control_ratio_minus_tcpstack_median")
        pairs = (f"; paired, the control's ratio minus tcpstack's: median {diff:+.2f}, the "
                 f"control >= tcpstack in {paired.get('control_ratio_ge_tcpstack_pairs', 0)} "
                 f"of {n} pair(s)" if n and diff is not None else
                 "; no pair where both the control and tcpstack succeeded")
        text = (f"Control ({control.get('what', '')}; the flooder's socket marked "
                f"{control.get('mark', '?')}, each dropped SYN's sendto fails with EPERM): "
                f"ratio median {median:.2f} [{control.get('ratio_min', 0):.2f}-"
                f"{control.get('ratio_max', 0):.2f}] over {control.get('n', 0)} "
                f"repetition(s){pairs}")
    if control.get("failed"):
        text += (f"; {control['failed']} of {runs} control repetition(s) failed (first: "
                 f"{control.get('first_error', '?')}), which does not count against "
                 "tcpstack's flood")
    if control.get("stopped_early"):
        text += f"; the control stopped {control['stopped_early']}"
    return text


def _tfo_note(stack: str, tfo: Outcome | None) -> list[str]:
    """The Fast Open workload's path and what its Fast Open requests really did."""
    if tfo is None or tfo.status != "ok":
        return []
    s, p = tfo.summary, tfo.params
    server = ("tcpstack serve --tfo" if stack == "tcpstack" else
              "TCP_FASTOPEN on the listeners, net.ipv4.tcp_fastopen=3 in the server namespace")
    active = (f"; the client namespace's TCPFastOpenActive grew by {s['tfo_active']:.0f} "
              f"(TCPFastOpenActiveFail {s.get('tfo_active_fail', 0):.0f})"
              if "tfo_active" in s else "")
    return [f"{stack} tfo: GET {p.get('path', TFO_PATH)} HTTP/1.0, a new connection each, "
            f"{p.get('requests_per_mode')} per mode per repetition after "
            f"{p.get('warmup')} Fast Open warm-up requests (the first gets the cookie), "
            f"through the relay with {TFO_DELAY_MS} ms delay each way and nothing else "
            f"(RTT {TFO_RTT_MS} ms; a plain connect() took {s.get('connect_ms', 0):.1f} ms, "
            f"median); server: {server}; client: net.ipv4.tcp_fastopen=1, "
            f"sendto(MSG_FASTOPEN); {s.get('tfo_syn_data', 0):.0f} of "
            f"{s.get('tfo_requests', 0):.0f} timed Fast Open requests had their SYN's data "
            f"acknowledged (TCP_INFO){active}"]


def _bbr_note(stack: str, bbr: Outcome | None) -> list[str]:
    """The bbr workload's path, how its server chose the algorithm, what the sender saw."""
    if bbr is None or bbr.status == "skipped":
        return []
    s, p = bbr.summary, bbr.params
    server = ("tcpstack serve --congestion-control NAME" if stack == "tcpstack" else
              "TCP_CONGESTION NAME on the kernel server's listeners (read back; accepted "
              "connections inherit it)")
    seen = "; ".join(f"{cc}: {', '.join(names) or 'none seen'}"
                     for cc, names in p.get("sender_cc", {}).items())
    figures = []
    for path in BBR_PATHS:
        for cc in BBR_ALGORITHMS:
            key = f"{cc}_{path}"
            if f"{key}_mbps" in s:
                figures.append(
                    f"{cc} {path}: {s[key + '_mbps']:.2f} MB/s, probe RTT "
                    f"{s.get(key + '_rtt_ms', 0):.1f} ms (idle {s.get(key + '_base_rtt_ms', 0):.1f}"
                    f"), sender's srtt {s.get(key + '_sender_rtt_ms', 0):.1f} ms, "
                    f"{s.get(key + '_retrans', 0):.0f} retransmissions, "
                    f"{s.get(key + '_path_drops', 0):.0f} packets dropped by the path")
    return [f"{stack} bbr: each download runs {p.get('seconds')} s (GET /bytes/"
            f"{p.get('bytes')}, the client then stops), x{p.get('reps')} per algorithm and "
            f"path, through the relay: server -> client "
            + " or ".join(f"{spec} ({name})" for name, spec in BBR_PATHS.items())
            + f" (seed = repetition), client -> server {BBR_C2S}; rate in bits/s, queue = "
            f"the bottleneck's FIFO in packets, tail drop; loss after the bottleneck. "
            f"Queueing delay = a 64-byte ping-pong to echo (every "
            f"{BBR_PROBE_INTERVAL * 1000:g} ms, its own connection through the same "
            f"path) during the download, median and p95, minus its minimum on the idle path "
            f"just before. Server: {server}; the congestion control the sender's connection "
            f"used (ss -ti / tcpstack ss): {seen}. Retransmissions: "
            + ("the daemon's tcp_retrans_* counters (rack, fast, rto, tlp), each one run "
               "of up to a super-segment resent, not segments"
               if stack == "tcpstack" else "RetransSegs of the server's namespace")
            + "; dropped: the relay's tail drops and random losses server -> client. "
            "Medians: " + "; ".join(figures)]


def _kernel_socket_memory(idle: Outcome) -> list[str]:
    """Notes on the kernel's own memory for the idle connections (not in the app's RSS)."""
    notes = []
    if "sockstat" in idle.params:
        before, after = idle.params["sockstat"]["before"], idle.params["sockstat"]["after"]
        notes.append(
            f"kernel idle run, /proc/net/sockstat of the server namespace: TCP sockets in use "
            f"{before.get('inuse')} -> {after.get('inuse')}, 'mem' {before.get('mem')} -> "
            f"{after.get('mem')} pages ('mem' counts socket buffer pages, system-wide: idle "
            f"sockets hold none)")
    if "slab" in idle.params:
        before, after = idle.params["slab"]["before"], idle.params["slab"]["after"]
        sizes = {name: after[name][1] for name in after}
        per_socket = sum(sizes.values())
        grown = {name: after[name][0] - before.get(name, [0, 0])[0] for name in after}
        notes.append(
            "kernel memory per socket (slab object sizes, outside any process's RSS): "
            + " + ".join(f"{name} {size} B" for name, size in sizes.items())
            + f" = {per_socket / 1024:.2f} KiB per socket, and a connection has a socket at "
            f"each end; during the kernel idle run the slabs grew by "
            + ", ".join(f"{name} {n:+,}" for name, n in grown.items()) + " objects")
    return notes
