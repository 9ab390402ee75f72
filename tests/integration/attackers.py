"""The attacks of ``test_daemon_attacks.py``, played from inside the test's namespace.

This is a helper module, not a test file. Each attack is a function that runs in
a child interpreter inside the namespace -- :func:`run_attack` starts it there as
``python -m tests.integration.attackers NAME JSON-ARGUMENTS`` -- and attacks the
daemon with kernel sockets or with the scripted peer of
:mod:`tests.integration.rawpeer`. It returns what it saw as a JSON object, which
the child prints as one ``RESULT {...}`` line; the test judges it together with
the counters the daemon logs when it stops.

Every attack is bounded in packets and in time: loops stop at a count or a
deadline, and every wait for the daemon has a timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from tcpstack.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpOptions
from tests.integration.rawpeer import (
    HOST_ADDRESS,
    MASK,
    PEER_ADDRESS,
    STACK_ADDRESS,
    ObservedConnection,
    PacketTap,
    PeerTimeout,
    RawSender,
    ScriptedConnection,
    forbid_forwarding,
    process_cpu_seconds,
    seq_add,
    seq_diff,
    spoofed_syn_packets,
)
from tests.netns import REPO_ROOT, NetNS

HTTP_PORT = 80
ECHO_PORT = 7

Result = dict[str, Any]


# ------------------------------------------------------------------ running one


def _argv(name: str, arguments: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "tests.integration.attackers", name, json.dumps(arguments)]


def _result(name: str, returncode: int | None, stdout: str, stderr: str) -> Result:
    detail = f"attack {name}: exit {returncode}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    assert returncode == 0 and len(lines) == 1, detail
    result: Result = json.loads(lines[0][len("RESULT "):])
    return result


def run_attack(netns: NetNS, name: str, timeout: float, **arguments: Any) -> Result:
    """Run attack ``name`` with ``arguments`` inside ``netns``; return its result.

    The child must exit 0 within ``timeout`` seconds and print one result line.
    """
    proc = netns.run(_argv(name, arguments), capture_output=True, text=True,
                     timeout=timeout, check=False, env=netns.python_env(),
                     cwd=str(REPO_ROOT))
    return _result(name, proc.returncode, proc.stdout, proc.stderr)


def start_attack(netns: NetNS, name: str, **arguments: Any) -> subprocess.Popen[str]:
    """Start attack ``name`` inside ``netns`` in the background (see :func:`finish_attack`)."""
    proc: subprocess.Popen[str] = netns.popen(
        _argv(name, arguments), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=netns.python_env(), cwd=str(REPO_ROOT))
    return proc


def finish_attack(proc: subprocess.Popen[str], timeout: float) -> Result:
    """Wait up to ``timeout`` seconds for an attack from :func:`start_attack`; its result."""
    stdout, stderr = proc.communicate(timeout=timeout)
    return _result(str(proc.args), proc.returncode, stdout, stderr)


def _seconds_left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


# -------------------------------------------------------------------- SYN flood


def syn_flood(rate: int, seconds: float, port: int = HTTP_PORT, seed: int = 1) -> Result:
    """Spoofed SYNs from random sources of the TUN's subnet, ``rate`` per second
    (paced in 10 ms slices; as fast as it can if it falls behind) for ``seconds``."""
    forbid_forwarding()  # the SYN,ACKs to the spoofed sources die in the kernel
    tx = RawSender()
    per_slice = max(1, round(rate / 100))
    start = time.monotonic()
    next_slice = start
    for i, packet in enumerate(spoofed_syn_packets(int(rate * seconds), port,
                                                   random.Random(seed))):
        tx.send_packet(packet)
        if (i + 1) % per_slice == 0:
            next_slice += 0.01
            delay = next_slice - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if time.monotonic() - start >= seconds:
                break
    end = time.monotonic()
    tx.close()
    return {"start": start, "end": end, "sent": tx.sent}


def curl_loop(stop_file: str, url: str, max_time: float = 2.0, limit: float = 120.0) -> Result:
    """``curl --max-time MAX_TIME URL`` again and again until ``stop_file`` exists (or
    ``limit`` seconds passed): when each GET started and ended, whether it got a 200."""
    gets = []
    start = time.monotonic()
    while not os.path.exists(stop_file) and time.monotonic() - start < limit:
        t0 = time.monotonic()
        proc = subprocess.run(["curl", "-sS", "--max-time", str(max_time), "-o", "/dev/null",
                               "-w", "%{http_code}", url],
                              capture_output=True, text=True, timeout=max_time + 10, check=False)
        gets.append({"start": t0, "end": time.monotonic(),
                     "ok": proc.returncode == 0 and proc.stdout == "200"})
    return {"gets": gets}


# ------------------------------------------- forgeries into a kernel connection


def _echo_round(sock: socket.socket, message: bytes) -> bool:
    """Send ``message`` to the echo service and read it back; whether it came back
    byte-exact (a timeout raises)."""
    sock.sendall(message)
    got = bytearray()
    while len(got) < len(message):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return bytes(got) == message


def _round_message(r: int) -> bytes:
    """32 to 1280 bytes, different for every round."""
    return hashlib.sha256(b"round %d" % r).digest() * (1 + r % 40)


def _closes_in_order(sock: socket.socket) -> str:
    """Half-close our side; how the daemon's side ends: "eof" (its FIN), "reset"
    or "data" (something unexpected arrived)."""
    sock.shutdown(socket.SHUT_WR)
    try:
        tail = sock.recv(4096)
    except ConnectionResetError:
        return "reset"
    return "eof" if tail == b"" else "data"


EVIL = b"EVIL" * 8
"""What forged segments try to insert into the stream."""


def blind_injection(rounds: int, per_round: int, seed: int = 7) -> Result:
    """Forged RSTs, SYNs and data into an echo connection of a kernel client, between
    rounds of echoing, as an off-path attacker who knows the 4-tuple and the
    window (RFC 5961 1.2): the connection must go on byte-exact and end in order.

    Each round sends ``per_round`` of each kind; what each kind must run into:
    RST in the window but not at RCV.NXT (challenge ACK, RFC 5961 3.2), RST
    outside it (dropped), SYN in the window (challenge ACK, 4.2), data outside
    the window (dropped with an ACK), data at RCV.NXT acknowledging data never
    sent or acknowledging far below SND.UNA (challenge ACK, dropped, 5.2).
    """
    rng = random.Random(seed)
    tap = PacketTap()
    tx = RawSender()
    sock = socket.create_connection((STACK_ADDRESS, ECHO_PORT), timeout=5)
    flow = ObservedConnection(sock.getsockname()[1], ECHO_PORT)
    sent: Counter[str] = Counter()

    def forge(kind: str, flags: int, seq: int, ack: int = 0, payload: bytes = b"") -> None:
        if tx.send(flow.forged(flags, seq, ack, payload), HOST_ADDRESS):
            sent[kind] += 1

    rounds_ok = 0
    outcome = "ok"
    first_forgery: float | None = None
    try:
        for r in range(rounds + 1):
            if not _echo_round(sock, _round_message(r)):
                outcome = f"round {r} not echoed byte-exact"
                break
            rounds_ok += 1
            if r == rounds:
                break
            flow.update(tap.drain())
            rcv, snd, wnd = flow.server_rcv_nxt, flow.server_snd_nxt, flow.server_window
            assert rcv is not None and snd is not None and wnd > 1, (rcv, snd, wnd)
            if first_forgery is None:
                first_forgery = time.monotonic()
            for _ in range(per_round):
                forge("rst_in_window", RST, rcv + rng.randrange(1, wnd))
                forge("rst_out_of_window", RST, rcv + wnd + rng.randrange(1 << 30))
                forge("syn_in_window", SYN, rcv + rng.randrange(wnd))
                forge("data_out_of_window", ACK | PSH, rcv + wnd + rng.randrange(1 << 30),
                      snd, EVIL)
                forge("data_ack_unsent", ACK | PSH, rcv, snd + rng.randrange(1 << 20, 1 << 30),
                      EVIL)
                forge("data_ack_too_old", ACK | PSH, rcv,
                      snd - (1 << 25) - rng.randrange(1 << 30), EVIL)
        end = time.monotonic()
        closing = _closes_in_order(sock) if outcome == "ok" else "not tried"
    except OSError as e:  # a reset or a timeout: the connection was broken
        outcome, closing, end = repr(e), "not tried", time.monotonic()
    sock.close()
    return {"rounds_ok": rounds_ok, "outcome": outcome, "closing": closing,
            "sent": dict(sent),
            "seconds": end - first_forgery if first_forgery is not None else 0.0}


def ts_poisoning(rounds: int) -> Result:
    """After each echo round, two blind segments at exactly RCV.NXT carrying a TSval
    2^31 - 1 ahead of the client's, with an unacceptable ACK (one of data never
    sent, one with data acknowledging far below SND.UNA). Had either updated
    TS.Recent, PAWS (RFC 7323 5) would drop every later segment of the real
    client and the next round would time out."""
    tap = PacketTap()
    tx = RawSender()
    sock = socket.create_connection((STACK_ADDRESS, ECHO_PORT), timeout=3)
    flow = ObservedConnection(sock.getsockname()[1], ECHO_PORT)
    forged = 0
    rounds_ok = 0
    outcome = "ok"
    try:
        for r in range(rounds + 1):
            if not _echo_round(sock, _round_message(r)):
                outcome = f"round {r} not echoed byte-exact"
                break
            rounds_ok += 1
            if r == rounds:
                break
            flow.update(tap.drain())
            rcv, snd, tsval = flow.server_rcv_nxt, flow.server_snd_nxt, flow.client_tsval
            assert rcv is not None and snd is not None and tsval is not None
            poison = TcpOptions(timestamps=((tsval + (1 << 31) - 1) & MASK, 0))
            forged += tx.send(flow.forged(ACK, rcv, snd + (1 << 30), options=poison),
                              HOST_ADDRESS)
            forged += tx.send(flow.forged(ACK | PSH, rcv, snd - (1 << 30), b"poison",
                                          options=poison), HOST_ADDRESS)
        closing = _closes_in_order(sock) if outcome == "ok" else "not tried"
    except OSError as e:
        outcome, closing = repr(e), "not tried"
    sock.close()
    return {"rounds_ok": rounds_ok, "outcome": outcome, "closing": closing, "forged": forged}


# ---------------------------------------------------- cost per segment (CPU time)


def _download_until(conn: ScriptedConnection, nbytes: int, timeout: float) -> None:
    """Receive (and acknowledge, segment by segment) until ``nbytes`` arrived."""
    deadline = time.monotonic() + timeout
    while conn.bytes_received < nbytes:
        rx = conn.poll(_seconds_left(deadline))
        if rx is None:
            raise PeerTimeout(f"only {conn.bytes_received} of {nbytes} bytes in {timeout}s")
        if rx.seg.payload or rx.seg.flags & FIN:
            conn.ack()


class _Phase:
    """CPU time the daemon spends while this connection sends ``count`` segments made
    by ``make`` (the i-th from ``make(i)``), waiting every ``chunk`` for the daemon
    to catch up (so the TUN queue never overflows). It gives up after
    ``wall_limit`` seconds, or when the daemon does not catch up within the time
    left (only code paths many times too slow would need that long): then
    ``segments`` says how many were sent, and ``stalled`` is set."""

    def __init__(self, conn: ScriptedConnection, pid: int, count: int, chunk: int,
                 wall_limit: float) -> None:
        self.conn = conn
        self.pid = pid
        self.count = count
        self.chunk = chunk
        self.wall_limit = wall_limit

    def run(self, make: Callable[[int], None]) -> Result:
        conn = self.conn
        cpu0 = process_cpu_seconds(self.pid)
        t0 = time.monotonic()
        sent = 0
        stalled = False
        while sent < self.count and not stalled:
            for _ in range(min(self.chunk, self.count - sent)):
                make(sent)
                sent += 1
            try:
                conn.sync(timeout=max(_seconds_left(t0 + self.wall_limit), 0.5))
            except PeerTimeout:
                stalled = True
        result = {"segments": sent, "cpu": process_cpu_seconds(self.pid) - cpu0,
                  "wall": time.monotonic() - t0, "stalled": stalled}
        return result


def sack_split(pid: int, acks: int, chunk: int = 250, blocks: int = 3,
               warm: int = 1 << 20, wall_limit: float = 30.0) -> Result:
    """A downloading peer that stops acknowledging at a hole and then sends duplicate
    ACKs whose SACK blocks each cover one byte, every other byte of the data in
    flight: a scoreboard that splits its records at any byte ends up with a record
    per byte (and retransmits them a byte at a time), and every ACK costs more.

    Phases of ``acks`` ACKs each: plain duplicate ACKs, the splitting ACKs, plain
    again; for each, the daemon's CPU time (process ``pid``)."""
    forbid_forwarding()
    tap = PacketTap(dst=PEER_ADDRESS)
    tx = RawSender()
    conn = ScriptedConnection(tap, tx, HTTP_PORT, window=4 << 20, wscale=7, keep=0)
    conn.open()
    # The header's padding is data the daemon has: sync() resends bytes of it.
    conn.send_data(b"GET /bytes/1000000000 HTTP/1.1\r\nHost: x\r\nX-Pad: "
                   + b"p" * 300 + b"\r\n\r\n")
    _download_until(conn, warm, timeout=30.0)
    hole = conn.rcv_nxt  # acknowledged up to here, never beyond
    end = time.monotonic() + 0.5
    while conn.poll(_seconds_left(end)) is not None:
        pass  # what was in flight arrives (and is not acknowledged)
    in_flight = seq_diff(conn.rcv_nxt, hole)
    first = 2 * 1460 + 1  # odd offsets past the first two segments
    positions = max(1, (in_flight - first - 1) // 2)
    if in_flight < first + 2 * blocks * 8:
        raise PeerTimeout(f"only {in_flight} bytes in flight")
    cursor = 0

    def split_blocks() -> list[tuple[int, int]]:
        nonlocal cursor
        out = []
        for _ in range(blocks):
            left = seq_add(hole, first + 2 * (cursor % positions))
            out.append((left, seq_add(left, 1)))
            cursor += 1
        return out

    phase = _Phase(conn, pid, acks, chunk, wall_limit)
    conn.sync()
    plain = phase.run(lambda _i: conn.ack(ack=hole))
    split = phase.run(lambda _i: conn.ack(ack=hole, sack_blocks=split_blocks()))
    plain_after = phase.run(lambda _i: conn.ack(ack=hole))
    conn.reset()
    return {"in_flight": in_flight, "plain": plain, "split": split,
            "plain_after": plain_after}


def _pattern(n: int) -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


def hole_punch(pid: int, pieces: int, chunk: int = 250, wall_limit: float = 30.0) -> Result:
    """A peer that sends its stream as one-byte segments with a one-byte hole before
    each (the first byte missing), to an echo connection: a reassembly queue that
    keeps every piece, rescans or re-sorts them per segment pays more for every
    segment. Then it fills the holes in order and must get everything echoed
    byte-exact.

    Phases of ``pieces`` segments: the same out-of-order byte over and over (the
    queue holds one piece), then a new piece each; for each, the daemon's CPU time."""
    forbid_forwarding()
    tap = PacketTap(dst=PEER_ADDRESS)
    tx = RawSender()
    conn = ScriptedConnection(tap, tx, ECHO_PORT, window=1 << 20, wscale=7)
    conn.open()
    greeting = _pattern(64)  # also the bytes sync() sends again
    conn.send_data(greeting)
    _download_until(conn, len(greeting), timeout=10.0)
    base = conn.snd_nxt
    body = _pattern(2 * pieces + 1)[::-1]

    def piece(k: int) -> None:
        conn.send(conn.segment(ACK, seq=seq_add(base, 2 * k + 1),
                               payload=body[2 * k + 1:2 * k + 2]))

    phase = _Phase(conn, pid, pieces, chunk, wall_limit)
    conn.sync()
    same = phase.run(lambda _i: piece(0))
    punched = phase.run(piece)
    # Fill in order from the first hole; the daemon keeps what it queued.
    for offset in range(0, len(body), 1400):
        conn.send_data(body[offset:offset + 1400])
    _download_until(conn, len(greeting) + len(body), timeout=20.0)
    echoed_ok = bytes(conn.data) == greeting + body
    close_gracefully(conn)
    return {"same": same, "punched": punched, "echoed_ok": echoed_ok,
            "echoed": conn.bytes_received}


def close_gracefully(conn: ScriptedConnection, timeout: float = 10.0) -> None:
    """Our FIN; the daemon's data and FIN acknowledged as they come."""
    conn.fin()
    deadline = time.monotonic() + timeout
    while not conn.fin_received and not conn.rst_received:
        rx = conn.poll(_seconds_left(deadline))
        if rx is None:
            raise PeerTimeout("no FIN from the daemon")
        if rx.seg.payload or rx.seg.flags & FIN:
            conn.ack()


# ------------------------------------------------------------------ TIME-WAIT


def time_wait_extension(period: float, limit: float) -> Result:
    """The daemon closes an HTTP connection first, so it ends in TIME-WAIT; then,
    every ``period`` seconds, a segment that is not the retransmitted FIN (new
    data; a FIN at the wrong sequence number; old data), each of which once
    restarted the 2 MSL timer. Once the TIME-WAIT is over the daemon answers such
    a segment with a RST (no connection; the listener resets a stray ACK): when
    did that happen, counted from the start of TIME-WAIT (None within ``limit``)?"""
    forbid_forwarding()
    tap = PacketTap(dst=PEER_ADDRESS)
    tx = RawSender()
    conn = ScriptedConnection(tap, tx, HTTP_PORT)
    conn.open()
    conn.send_data(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    deadline = time.monotonic() + 10.0
    while not conn.fin_received:  # the response, then the daemon's FIN
        rx = conn.poll(_seconds_left(deadline))
        if rx is None:
            raise PeerTimeout("no response and FIN")
        if rx.seg.payload or rx.seg.flags & FIN:
            conn.ack()
    conn.fin()
    conn.expect("ACK of our FIN", lambda rx: bool(rx.seg.flags & ACK)
                and not rx.seg.flags & RST and rx.seg.ack == conn.snd_nxt)
    entered = time.monotonic()
    fin_seq = seq_add(conn.snd_nxt, -1)
    attacks: list[Callable[[], None]] = [
        lambda: conn.send(conn.segment(ACK | PSH, payload=b"more")),
        lambda: conn.send(conn.segment(ACK | FIN, seq=seq_add(fin_seq, 1000))),
        lambda: conn.send(conn.segment(ACK | PSH, seq=seq_add(fin_seq, -4), payload=b"old!")),
    ]
    sent = 0
    ended: float | None = None
    acks = 0
    while ended is None and time.monotonic() - entered < limit:
        attacks[sent % len(attacks)]()
        sent += 1
        wake = time.monotonic() + period
        while (rx := conn.poll(_seconds_left(wake))) is not None:
            if rx.seg.flags & RST:
                ended = rx.at - entered
                break
            acks += 1
    return {"ended": ended, "sent": sent, "acks": acks}


# ------------------------------------------------------------ zero-window hold


def zero_window_hold(limit: float) -> Result:
    """A peer that downloads a little, then advertises a zero window for ever while
    answering every zero-window probe: each answered probe keeps a connection
    alive (RFC 1122 4.2.2.17), so only a bound on the time without progress ends
    it. When (after the window closed) does the daemon drop it -- seen as the RST
    that a later ACK draws -- or None within ``limit`` seconds?"""
    forbid_forwarding()
    tap = PacketTap(dst=PEER_ADDRESS)
    tx = RawSender()
    conn = ScriptedConnection(tap, tx, HTTP_PORT, window=65535, wscale=0, keep=0)
    conn.open()
    conn.send_data(b"GET /bytes/1000000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    _download_until(conn, 200_000, timeout=20.0)
    conn.window = 0
    conn.ack()
    closed = time.monotonic()
    probes = 0
    ended: float | None = None
    while time.monotonic() - closed < limit:
        rx = conn.poll(min(0.5, _seconds_left(closed + limit)))
        if rx is None:
            conn.ack()  # still here (a live connection does not answer it)
            continue
        if rx.seg.flags & RST:
            ended = rx.at - closed
            break
        if not rx.seg.payload:
            probes += 1
        conn.ack()  # whatever came: acknowledged, the window stays shut
    return {"ended": ended, "probes": probes, "received": conn.bytes_received}


# ----------------------------------------------------------------------- HTTP


def slow_body(content_length: int, period: float, limit: float) -> Result:
    """A request announcing ``content_length`` bytes of body, which then come one
    byte every ``period`` seconds: what the daemon answers (within ``limit``), after
    how long, and whether it then closes the connection."""
    sock = socket.create_connection((STACK_ADDRESS, HTTP_PORT), timeout=10)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % content_length)
    start = time.monotonic()
    sock.setblocking(False)
    answer = b""
    trickled = 0
    while b"\r\n\r\n" not in answer and time.monotonic() - start < limit:
        try:
            sock.send(b"b")
            trickled += 1
        except BlockingIOError:
            pass
        except OSError:
            break
        time.sleep(period)
        try:
            answer += sock.recv(65536)
        except BlockingIOError:
            pass
        except OSError:
            break
    answered = time.monotonic() - start
    sock.settimeout(max(limit - answered, 1.0))
    try:
        while chunk := sock.recv(65536):
            answer += chunk
        closing = "eof"
    except ConnectionResetError:
        closing = "reset"
    except TimeoutError:
        closing = "still open"
    sock.close()
    return {"response": answer.decode("latin-1"), "seconds": answered,
            "trickled": trickled, "closing": closing}


def http_requests(requests: list[str], timeout: float = 10.0) -> Result:
    """Each request (latin-1 text) on a connection of its own: the response, and
    how the daemon ended the connection ("eof", "reset" or "timeout")."""
    answers = []
    for request in requests:
        with socket.create_connection((STACK_ADDRESS, HTTP_PORT), timeout=timeout) as sock:
            sock.sendall(request.encode("latin-1"))
            data = b""
            try:
                while chunk := sock.recv(65536):
                    data += chunk
                closing = "eof"
            except ConnectionResetError:
                closing = "reset"
            except TimeoutError:
                closing = "timeout"
        answers.append({"response": data.decode("latin-1"), "closing": closing})
    return {"answers": answers}


ATTACKS: dict[str, Callable[..., Result]] = {
    f.__name__: f for f in (syn_flood, curl_loop, blind_injection, ts_poisoning, sack_split,
                            hole_punch, time_wait_extension, zero_window_hold, slow_body,
                            http_requests)
}


def main(argv: list[str]) -> int:
    name, arguments = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    result = ATTACKS[name](**arguments)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
