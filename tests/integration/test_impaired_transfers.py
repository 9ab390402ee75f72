"""50 MiB each way through an impaired path, with the Linux kernel as the peer.

Every test builds a :class:`tests.integration.pathsim.PathSim`: a kernel client
in namespace C reaches the daemon (10.0.0.2) through ``tools/impair_relay.py``,
which applies one seeded impairment to both directions:

* ``loss``: 5 % of the packets dropped;
* ``reorder``: 10 ms one-way delay, 10 % of the packets held back another 20 ms;
* ``duplicate``: 2 % of the packets delivered twice;
* ``corrupt``: 1 % of the packets get one bit flipped (TCP checksums catch it).

For each, three transfers run, each on a fresh path:

* **download** -- curl fetches ``/bytes/52428800`` from the stack's HTTP server;
  the body's SHA-256 must be the :func:`tcpstack.apps.http.iter_pattern` one;
* **upload (echo)** -- a kernel socket sends 50 MiB of seeded random bytes to
  the echo service (port 7) while reading back what the stack echoes; what
  comes back must hash like what was sent. Echo returns exactly what the stack
  received, in order, so this proves the upload arrived byte-exact (and
  exercises the stack as a sender at the same time: twice the traffic);
* **upload (discard)** -- the same 50 MiB to the discard service (port 9),
  then ``shutdown(SHUT_WR)``: the server's FIN must arrive, and the daemon's
  debug log must say it read exactly 50 MiB before the EOF.

"Without stalls": the client records the longest gap between two successful
reads (download, echo) or sends (discard); it must stay under
:data:`STALL_LIMIT`, and the whole transfer (for discard: until its FIN
arrives) under :data:`TRANSFER_LIMIT`. curl also aborts by itself when it gets
under 1 B/s for :data:`STALL_LIMIT` seconds.

Afterwards the relay's counters must show that the impairment really happened
in both directions (for corruption also that the daemon and the kernel
dropped segments with bad checksums), and the daemon must exit 0 without an
``internal_error``.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tcpstack.apps.http import iter_pattern
from tests.integration.daemon import (
    STACK_ADDRESS,
    DaemonExit,
    assert_clean_exit,
    parse_counters,
)
from tests.integration.pathsim import PathSim, RelayExit

MIB = 1024 * 1024
SIZE = 50 * MIB
"""Bytes moved by every transfer (the issue asks for 50 MiB)."""

IMPAIRMENTS: dict[str, str] = {
    "loss": "loss=5,seed=1",
    "reorder": "delay=10ms,reorder=10,seed=2",
    "duplicate": "duplicate=2,seed=3",
    "corrupt": "corrupt=1,seed=4",
}
"""Relay specs (both directions), keyed by the test id."""

EVIDENCE: dict[str, str] = {
    "loss": "dropped",
    "reorder": "reordered",
    "duplicate": "duplicated",
    "corrupt": "corrupted",
}
"""The relay counter (``a2b_*``/``b2a_*``) that shows each impairment at work."""

TRANSFER_LIMIT = 180.0
"""Seconds one 50 MiB transfer may take.

Measured on a 2-core machine (about 30 runs in all): under reordering the
download took 7 s in most runs but 53-55 s in about one in five (the stack's
spurious retransmissions, no stall), the echoed upload (100 MiB of payload
through the path at once) 10-54 s and the discard upload 9-11 s; under loss
9-17 s; duplication and corruption 0.5-3.5 s. So the limit is over 3x the
slowest run seen.
"""

STALL_LIMIT = 10.0
"""Longest allowed gap between two reads (or sends) of a transfer, in seconds.

Measured: at most 0.64 s (a retransmission timeout under loss)."""

UPLOAD_SEED = 20240917
"""Seed of the upload's random bytes (random.Random(seed).randbytes)."""

DAEMON_ARGS = ("--log-level", "debug")
"""Debug level makes echo/discard log how many bytes they got before EOF."""

ECHO_PORT = 7
DISCARD_PORT = 9

IMPAIRMENT_PARAMS = [pytest.param(name, id=name) for name in IMPAIRMENTS]


# ----------------------------------------------------------------- expectations


@pytest.fixture(scope="module")
def download_sha256() -> str:
    """SHA-256 of the /bytes/SIZE body."""
    h = hashlib.sha256()
    for chunk in iter_pattern(SIZE):
        h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="module")
def upload_sha256() -> str:
    """SHA-256 of the bytes the upload clients send (computed here, independently)."""
    return hashlib.sha256(random.Random(UPLOAD_SEED).randbytes(SIZE)).hexdigest()


# ----------------------------------------------------------------- the clients


@dataclass(frozen=True)
class Download:
    """What curl delivered, and how."""

    returncode: int
    received: int
    sha256: str
    seconds: float
    max_gap: float
    stderr: str
    killed: bool

    def summary(self) -> str:
        return (f"curl exit {self.returncode}{' (killed)' if self.killed else ''}, "
                f"{self.received}/{SIZE} bytes in {self.seconds:.1f}s, "
                f"longest gap {self.max_gap:.2f}s, stderr: {self.stderr.strip()!r}")


def curl_download(sim: PathSim, log_dir: Path) -> Download:
    """Fetch /bytes/SIZE with curl in C, hashing its output as it arrives.

    curl gives up on its own after :data:`TRANSFER_LIMIT` (``-m``) or when
    under 1 B/s for :data:`STALL_LIMIT` s; this loop reads its stdout pipe
    and times the gaps between reads, and kills curl (by PID) if it outlives
    the limit by 15 s.
    """
    err_path = log_dir / "curl.err"
    with err_path.open("wb") as err:
        proc = sim.client.popen(
            ["curl", "-sS", "--fail", "-o", "-", "-m", f"{TRANSFER_LIMIT:g}",
             "--speed-limit", "1", "--speed-time", f"{STALL_LIMIT:g}",
             f"http://{STACK_ADDRESS}/bytes/{SIZE}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    h = hashlib.sha256()
    received = 0
    killed = False
    t0 = last = time.monotonic()
    max_gap = 0.0
    deadline = t0 + TRANSFER_LIMIT + 15.0
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                proc.kill()
                killed = True
                break
            ready, _, _ = select.select([fd], [], [], min(1.0, deadline - now))
            if not ready:
                continue
            chunk = os.read(fd, 1 << 20)
            now = time.monotonic()
            if not chunk:
                break
            max_gap = max(max_gap, now - last)
            last = now
            h.update(chunk)
            received += len(chunk)
        returncode = proc.wait(timeout=15.0)
    finally:
        proc.stdout.close()
    return Download(returncode, received, h.hexdigest(), last - t0, max_gap,
                    err_path.read_text(errors="replace"), killed)


_CLIENT_PRELUDE = """
import hashlib, random, socket, threading, time
HOST, SIZE, SEED = {host!r}, {size!r}, {seed!r}
STALL, LIMIT, CHUNK = {stall!r}, {limit!r}, 65536
"""

_ECHO_CLIENT = """
def run(port):
    data = random.Random(SEED).randbytes(SIZE)
    sent_sha256 = hashlib.sha256(data).hexdigest()
    t0 = time.monotonic()
    sock = socket.create_connection((HOST, port), timeout=STALL)
    out = {"sent": 0, "send_error": None, "send_seconds": None}

    def sender():
        view = memoryview(data)
        try:
            while out["sent"] < SIZE:
                out["sent"] += sock.send(view[out["sent"]:out["sent"] + CHUNK])
                if time.monotonic() - t0 > LIMIT:
                    raise TimeoutError("transfer limit reached while sending")
            sock.shutdown(socket.SHUT_WR)
            out["send_seconds"] = time.monotonic() - t0
        except OSError as e:
            out["send_error"] = repr(e)

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    h = hashlib.sha256()
    received, eof, error = 0, False, None
    buf = bytearray(1 << 18)
    last, max_gap = time.monotonic(), 0.0
    try:
        while True:
            n = sock.recv_into(buf)
            now = time.monotonic()
            if n == 0:
                eof = True
                break
            max_gap = max(max_gap, now - last)
            last = now
            h.update(memoryview(buf)[:n])
            received += n
            if received > SIZE:
                error = "more bytes echoed than sent"
                break
            if now - t0 > LIMIT:
                error = "transfer limit reached while receiving"
                break
    except OSError as e:
        error = repr(e)
    seconds = time.monotonic() - t0
    thread.join(timeout=STALL)
    sock.close()
    emit(sent=out["sent"], send_error=out["send_error"], send_seconds=out["send_seconds"],
         received=received, eof=eof, error=error, seconds=seconds, max_gap=max_gap,
         sent_sha256=sent_sha256, received_sha256=h.hexdigest())

run({port!r})
"""

_DISCARD_CLIENT = """
def run(port):
    data = random.Random(SEED).randbytes(SIZE)
    sent_sha256 = hashlib.sha256(data).hexdigest()
    t0 = time.monotonic()
    sock = socket.create_connection((HOST, port), timeout=STALL)
    view = memoryview(data)
    sent, error, eof, unexpected = 0, None, False, 0
    send_seconds = None
    last, max_gap = time.monotonic(), 0.0
    try:
        while sent < SIZE:
            sent += sock.send(view[sent:sent + CHUNK])
            now = time.monotonic()
            max_gap = max(max_gap, now - last)
            last = now
            if now - t0 > LIMIT:
                raise TimeoutError("transfer limit reached while sending")
        sock.shutdown(socket.SHUT_WR)
        send_seconds = time.monotonic() - t0
        # Discard sends nothing: wait for its FIN (EOF) -- after what is still
        # in the kernel's send buffer has been delivered -- within the limit.
        sock.settimeout(max(LIMIT - send_seconds, 1.0))
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                eof = True
                break
            unexpected += len(chunk)
            if time.monotonic() - t0 > LIMIT:
                raise TimeoutError("transfer limit reached waiting for the FIN")
    except OSError as e:
        error = repr(e)
    seconds = time.monotonic() - t0
    sock.close()
    emit(sent=sent, send_seconds=send_seconds, eof=eof, unexpected=unexpected, error=error,
         seconds=seconds, max_gap=max_gap, sent_sha256=sent_sha256)

run({port!r})
"""


def run_upload_client(sim: PathSim, template: str, port: int) -> dict[str, Any]:
    """Run an upload client in C; its ``emit`` fields (it always reports, even on error)."""
    params = {"host": STACK_ADDRESS, "size": SIZE, "seed": UPLOAD_SEED, "stall": STALL_LIMIT,
              "limit": TRANSFER_LIMIT, "port": port}
    # str.format only on the prelude and the final call: the bodies contain braces.
    body = _CLIENT_PRELUDE.format(**params) + template.replace("{port!r}", repr(port))
    return sim.python(body, timeout=TRANSFER_LIMIT + 3 * STALL_LIMIT + 30.0)


# ----------------------------------------------------------------- evidence


@dataclass(frozen=True)
class Aftermath:
    """Everything gathered after a transfer: relay, daemon and kernel counters."""

    relay: RelayExit
    daemon: DaemonExit
    stack: dict[str, int]
    kernel: dict[str, int]

    def summary(self) -> str:
        stack_tcp = {k: v for k, v in self.stack.items() if k.startswith(("tcp_", "ip_"))}
        kernel = {k: v for k, v in self.kernel.items()
                  if k in ("Tcp.InSegs", "Tcp.OutSegs", "Tcp.RetransSegs", "Tcp.InCsumErrors",
                           "TcpExt.TCPSACKRecovery", "TcpExt.TCPDSACKRecv",
                           "TcpExt.TCPLossProbes", "TcpExt.TCPTimeouts")}
        return (f"relay exit {self.relay.returncode} counters {self.relay.counters}\n"
                f"daemon exit {self.daemon.returncode} counters {stack_tcp}\n"
                f"kernel (client namespace) {kernel}\n"
                f"daemon log tail:\n{tail(self.daemon.log)}")


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])


def kernel_counters(sim: PathSim) -> dict[str, int]:
    """``/proc/net/snmp`` and ``/proc/net/netstat`` of namespace C as ``{"Tcp.InSegs": n}``."""
    counters: dict[str, int] = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        out = sim.run(["cat", path], timeout=10.0, text=True)
        rows = out.stdout.splitlines()
        for names, values in zip(rows[::2], rows[1::2], strict=False):
            proto, _, keys = names.partition(":")
            for key, value in zip(keys.split(), values.partition(":")[2].split(),
                                  strict=False):
                if value.lstrip("-").isdigit():
                    counters[f"{proto}.{key}"] = int(value)
    return counters


def finish(sim: PathSim) -> Aftermath:
    """Read the kernel's counters in C, then stop the relay and the daemon."""
    kernel = kernel_counters(sim)
    relay = sim.stop_relay()
    daemon = sim.stop_daemon()
    return Aftermath(relay, daemon, parse_counters(daemon.log), kernel)


def assert_impaired_and_clean(name: str, after: Aftermath) -> None:
    """The impairment hit both directions; the relay and the daemon ended cleanly."""
    detail = after.summary()
    assert after.relay.returncode == 0, detail
    c = after.relay.counters
    key = EVIDENCE[name]
    assert c.get(f"a2b_{key}", 0) > 0, f"no a2b_{key}: {detail}"
    assert c.get(f"b2a_{key}", 0) > 0, f"no b2a_{key}: {detail}"
    if name == "reorder":
        # delay=10ms holds every packet -- every one the relay's queue had room for: as
        # netem's limit, a packet arriving while `limit` packets are held is dropped
        # (overflow), which autotuned windows reach.
        for d in ("a2b", "b2a"):
            held = c[f"{d}_delayed"] + c.get(f"{d}_overflow", 0)
            assert held == c[f"{d}_packets"], detail
    if name == "corrupt":
        # Corrupted segments towards the stack fail its checksum check (one bit
        # flipped in the TCP segment; a flip in the data-offset nibble may be
        # caught by that check first), those towards the kernel fail the kernel's.
        bad_checksum = after.stack.get("tcp_bad_checksum", 0)
        assert 0 < bad_checksum <= c["a2b_corrupted"], detail
        assert 0 < after.kernel.get("Tcp.InCsumErrors", 0) <= c["b2a_corrupted"], detail
    assert_clean_exit(after.daemon)


def record(name: str, kind: str, seconds: float, max_gap: float, after: Aftermath) -> None:
    """Print one timing line (visible with ``-s`` or ``-rP``)."""
    c = after.relay.counters
    key = EVIDENCE[name]
    print(f"TIMING {name:9} {kind:16} {seconds:6.1f}s longest-gap {max_gap:5.2f}s "
          f"a2b_{key}={c.get(f'a2b_{key}', 0)} b2a_{key}={c.get(f'b2a_{key}', 0)} "
          f"kernel-retrans={after.kernel.get('Tcp.RetransSegs', 0)}")


def service_bytes(log: str, service: str, verb: str) -> list[int]:
    """Byte counts of the daemon's ``<service> PEER: N bytes <verb>, peer sent EOF`` lines."""
    return [int(m.group(1)) for m in
            re.finditer(rf"{service} .*: (\d+) bytes {verb}, peer sent EOF", log)]


def open_path(name: str, log_dir: Path) -> PathSim:
    return PathSim(log_dir, impair=IMPAIRMENTS[name], daemon_args=DAEMON_ARGS)


# ----------------------------------------------------------------- the tests


@pytest.mark.parametrize("name", IMPAIRMENT_PARAMS)
def test_download_50_mib_byte_exact(name: str, tmp_path: Path, download_sha256: str) -> None:
    with open_path(name, tmp_path) as sim:
        dl = curl_download(sim, tmp_path)
        after = finish(sim)
    record(name, "download", dl.seconds, dl.max_gap, after)
    detail = f"{name}: {dl.summary()}\n{after.summary()}"
    assert dl.returncode == 0 and not dl.killed, detail
    assert dl.received == SIZE, detail
    assert dl.sha256 == download_sha256, detail
    assert dl.max_gap < STALL_LIMIT, detail
    assert dl.seconds < TRANSFER_LIMIT, detail
    assert_impaired_and_clean(name, after)


@pytest.mark.parametrize("name", IMPAIRMENT_PARAMS)
def test_upload_50_mib_echoed_back_byte_exact(name: str, tmp_path: Path,
                                              upload_sha256: str) -> None:
    with open_path(name, tmp_path) as sim:
        result = run_upload_client(sim, _ECHO_CLIENT, ECHO_PORT)
        after = finish(sim)
    record(name, "upload+echo", result["seconds"], result["max_gap"], after)
    detail = f"{name}: client {result}\n{after.summary()}"
    assert result["sent_sha256"] == upload_sha256, detail
    assert result["error"] is None and result["send_error"] is None, detail
    assert result["sent"] == SIZE and result["received"] == SIZE and result["eof"], detail
    assert result["received_sha256"] == upload_sha256, detail
    assert result["max_gap"] < STALL_LIMIT, detail
    assert result["seconds"] < TRANSFER_LIMIT, detail
    # The stack's side: echo saw exactly SIZE bytes, then the client's FIN.
    assert service_bytes(after.daemon.log, "echo", "echoed") == [SIZE], detail
    assert_impaired_and_clean(name, after)


@pytest.mark.parametrize("name", IMPAIRMENT_PARAMS)
def test_upload_50_mib_to_discard_completes(name: str, tmp_path: Path,
                                            upload_sha256: str) -> None:
    with open_path(name, tmp_path) as sim:
        result = run_upload_client(sim, _DISCARD_CLIENT, DISCARD_PORT)
        after = finish(sim)
    record(name, "upload->discard", result["seconds"], result["max_gap"], after)
    detail = f"{name}: client {result}\n{after.summary()}"
    assert result["sent_sha256"] == upload_sha256, detail
    assert result["error"] is None, detail
    assert result["sent"] == SIZE and result["eof"] and result["unexpected"] == 0, detail
    assert result["max_gap"] < STALL_LIMIT, detail
    assert result["seconds"] < TRANSFER_LIMIT, detail
    assert service_bytes(after.daemon.log, "discard", "discarded") == [SIZE], detail
    assert_impaired_and_clean(name, after)
