"""Packet captures for integration tests: record with tcpdump, analyse with tshark.

This is a helper module, not a test file.

:class:`Capture` runs ``tcpdump -w FILE`` inside a test's namespace (through
:meth:`NetNS.popen`, so its PID is known and it is stopped if a test forgets),
waits -- bounded -- until tcpdump reports that it is listening, and on
:meth:`Capture.stop` sends SIGINT by PID and parses tcpdump's closing
statistics (captured / dropped by kernel).

:func:`analyse` reads a pcap with tshark in one pass and returns, per sending
IPv4 address, how many frames carry each of tshark's TCP analysis flags
(retransmission, out-of-order, zero window, ...), together with the payload
bytes, SYN/FIN/RST counts and the advertised windows. A test asserts on the
side it cares about (:meth:`TcpAnalysis.sent_by`). For every retransmission it
also records what the other side did about the bytes (:class:`Retransmission`):
when its cumulative ACK first covered them and whether it reported the resend as
a duplicate with a D-SACK (RFC 2883) -- the evidence that a resend was a probe
answered late, not a repair of data the receiver lacked.

:func:`write_pcap` and :func:`ipv4_tcp` make small hand-written captures, so
that the analysis itself can be shown to detect what it is meant to detect.

tshark and tcpdump are required: when they are missing, :func:`require_tool`
raises an :class:`AssertionError` naming the package to install, so the test
fails instead of being skipped.
"""

from __future__ import annotations

import bisect
import contextlib
import ipaddress
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import TracebackType

from tests.netns import NetNS

LISTEN_TIMEOUT = 10.0
"""Seconds tcpdump gets to open the interface and say it is listening."""

STOP_TIMEOUT = 10.0
"""Seconds tcpdump gets to flush and exit after SIGINT before it is killed."""

SETTLE_QUIET = 1.0
"""Seconds without growth of the capture file after which tcpdump counts as caught up."""

SETTLE_TIMEOUT = 20.0
"""Most seconds to wait for tcpdump to catch up before stopping it anyway."""

TSHARK_TIMEOUT = 120.0
"""Seconds one tshark pass over a capture may take."""

INSTALL_HINTS = {
    "tshark": (
        "install it with: echo 'wireshark-common wireshark-common/install-setuid boolean "
        "false' | debconf-set-selections && DEBIAN_FRONTEND=noninteractive "
        "apt-get install -y tshark"
    ),
    "tcpdump": "install it with: apt-get install -y tcpdump",
}

FLAG_NAMES: tuple[str, ...] = (
    "retransmission",
    "fast_retransmission",
    "spurious_retransmission",
    "out_of_order",
    "zero_window",
    "zero_window_probe",
    "window_full",
    "lost_segment",
    "ack_lost_segment",
    "duplicate_ack",
)
"""The ``tcp.analysis.*`` flags that are counted, in :class:`FlagCounts` field order."""

RETRANSMISSION_FLAGS: tuple[str, ...] = ("retransmission", "spurious_retransmission")
"""Flags that mark a frame as a resend of bytes seen before (see :class:`Retransmission`).

tshark calls a resend "spurious" when an ACK for its bytes was captured before it,
plain "retransmission" otherwise; for a probe crossing a late ACK that is only a
matter of which of the two reached the capture first."""

LINKTYPE_RAW = 101
"""pcap link type for bare IP packets (what tcpdump writes for a TUN device)."""


def require_tool(name: str) -> str:
    """The path of the command ``name``; an :class:`AssertionError` if it is missing."""
    path = shutil.which(name)
    if path is None:
        hint = INSTALL_HINTS.get(name, f"install the package that provides {name!r}")
        raise AssertionError(f"{name} is required for the capture tests but not found: {hint}")
    return path


# -- capturing ------------------------------------------------------------------


@dataclass(frozen=True)
class CaptureStats:
    """What tcpdump said when it stopped."""

    path: Path
    returncode: int
    captured: int | None
    received_by_filter: int | None
    dropped_by_kernel: int | None
    stderr: str


class Capture:
    """``tcpdump -i IFACE -w PATH -s SNAPLEN -U FILTER...`` in ``netns``; a context manager.

    ``buffer_kib`` is tcpdump's ``-B`` (kernel capture buffer); a large one
    keeps a fast bulk transfer from overrunning it, which would otherwise show
    up in the analysis as "previous segment not captured".
    """

    def __init__(
        self,
        netns: NetNS,
        path: Path,
        interface: str,
        filter_expr: Sequence[str],
        *,
        snaplen: int = 128,
        buffer_kib: int = 65536,
    ) -> None:
        self.netns = netns
        self.path = path
        self.argv = [
            require_tool("tcpdump"),
            "-i", interface,
            "-w", str(path),
            "-s", str(snaplen),
            "-U",
            # Hand packets to tcpdump as they arrive, not in ring-buffer blocks
            # retired only when full or after a timeout.
            "--immediate-mode",
            "-n",
            "-B", str(buffer_kib),
            "-Z", "root",  # keep root: a dropped-privilege tcpdump cannot write to tmp_path
            *filter_expr,
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.stats: CaptureStats | None = None
        self._lines: list[str] = []
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = LISTEN_TIMEOUT) -> Capture:
        """Start tcpdump and wait until it reports ``listening on`` (or fail)."""
        self.proc = self.netns.popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() >= deadline:
                break
        if not self._listening.is_set():
            detail = self._stop_process()
            raise AssertionError(
                f"tcpdump did not start listening within {timeout}s "
                f"(exit {self.proc.returncode}): {' '.join(self.argv)}\n{detail}"
            )
        return self

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.append(line)
            if "listening on " in line:
                self._listening.set()

    def _stop_process(self, timeout: float = STOP_TIMEOUT) -> str:
        """SIGINT by PID, bounded wait (then SIGKILL); return everything tcpdump said."""
        assert self.proc is not None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=timeout)
        return "".join(self._lines)

    def settle(self, quiet: float = SETTLE_QUIET, timeout: float = SETTLE_TIMEOUT) -> bool:
        """Wait until the capture file has not grown for ``quiet`` seconds (bounded).

        tcpdump drains the kernel's capture buffer at its own pace; a SIGINT
        right after a fast transfer would lose what it has not written yet
        (without counting it as dropped). With ``-U`` every packet it handles
        is written at once, so a file that stops growing means it caught up.
        Returns False if it was still growing at ``timeout``.
        """
        deadline = time.monotonic() + timeout
        last_size, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return True
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            now = time.monotonic()
            if size != last_size:
                last_size, last_change = size, now
            elif now - last_change >= quiet:
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = STOP_TIMEOUT, *, settle: bool = True) -> CaptureStats:
        """Stop tcpdump with SIGINT (by PID) and return its statistics. Idempotent.

        With ``settle`` (the default) it first waits, bounded, for tcpdump to
        write out what the kernel already captured (:meth:`settle`).
        """
        if self.stats is not None:
            return self.stats
        assert self.proc is not None, "capture was never started"
        if settle:
            self.settle()
        stderr = self._stop_process(timeout)
        self.stats = CaptureStats(
            path=self.path,
            returncode=self.proc.returncode,
            captured=_stat(stderr, "packets captured"),
            received_by_filter=_stat(stderr, "packets received by filter"),
            dropped_by_kernel=_stat(stderr, "packets dropped by kernel"),
            stderr=stderr,
        )
        return self.stats

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None:
            self.stop(settle=exc_type is None)  # after an error, do not wait for it


def _stat(stderr: str, label: str) -> int | None:
    """The number in front of ``label`` in tcpdump's closing lines, if any."""
    for line in stderr.splitlines():
        number, _, rest = line.strip().partition(" ")
        if rest == label and number.isdigit():
            return int(number)
    return None


# -- analysing ------------------------------------------------------------------


@dataclass(frozen=True)
class FlagCounts:
    """How many frames carry each ``tcp.analysis.*`` flag."""

    retransmission: int = 0
    fast_retransmission: int = 0
    spurious_retransmission: int = 0
    out_of_order: int = 0
    zero_window: int = 0
    zero_window_probe: int = 0
    window_full: int = 0
    lost_segment: int = 0
    ack_lost_segment: int = 0
    duplicate_ack: int = 0

    def nonzero(self) -> dict[str, int]:
        """The flags that were seen at least once, with their counts."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


@dataclass(frozen=True)
class Retransmission:
    """One frame that resent bytes, and what the other side did about those bytes."""

    frame: int
    time: float
    seq: int
    """Relative sequence number of the first byte resent."""
    length: int
    first_sent: float | None
    """When a frame first carried the byte at ``seq`` (None: never seen before)."""
    acked_at: float | None
    """When the other side's cumulative ACK first covered the resent bytes."""
    dsack_frame: int | None
    """The first later frame of the other side whose D-SACK block (RFC 2883) covers the
    resent bytes: the receiver already had them, so the resend was not needed."""

    @property
    def ack_delay(self) -> float | None:
        """From the first transmission to the cumulative ACK covering it."""
        if self.first_sent is None or self.acked_at is None:
            return None
        return self.acked_at - self.first_sent

    def describe(self) -> str:
        delay = self.ack_delay
        return (
            f"frame {self.frame} at {self.time:.6f}s: seq={self.seq} len={self.length}, first "
            f"sent at {'never' if self.first_sent is None else f'{self.first_sent:.6f}s'}, "
            f"acked {'never' if delay is None else f'{delay * 1000:.1f} ms after that'}, "
            f"D-SACK {'none' if self.dsack_frame is None else f'in frame {self.dsack_frame}'}"
        )


@dataclass(frozen=True)
class SenderSummary:
    """Everything the capture shows about the frames sent by one IPv4 address."""

    address: str
    frames: int = 0
    payload_bytes: int = 0
    """Sum of ``tcp.len`` (retransmitted bytes count again)."""
    syn: int = 0
    fin: int = 0
    rst: int = 0
    fin_seq: int | None = None
    """Relative sequence number of the first FIN itself (= stream bytes sent before it + 1)."""
    min_window: int | None = None
    """Smallest advertised receive window (scaled, bytes) outside SYNs and RSTs."""
    zero_window_adverts: int = 0
    """Frames (not SYN, not RST) whose raw window field is 0, by our own count."""
    data_seconds: float = 0.0
    """Time from the first to the last frame with payload."""
    max_data_gap: float = 0.0
    """Longest time between two consecutive frames with payload."""
    window_full_max_wait: float = 0.0
    """Longest time from a ``window_full`` frame to this sender's next frame."""
    zero_window_max_wait: float = 0.0
    """Longest time from a zero-window advertisement to this sender's next non-zero one
    (infinite if the capture ends with the window closed)."""
    retransmissions: tuple[Retransmission, ...] = ()
    """Every frame flagged in :data:`RETRANSMISSION_FLAGS`, in capture order."""
    dsack_duplicate_acks: int = 0
    """Frames flagged ``duplicate_ack`` that carry a D-SACK block: the immediate ACK a
    receiver owes a duplicate segment (RFC 5681 4.2, RFC 2883), not a sign of a hole."""
    flags: FlagCounts = field(default_factory=FlagCounts)
    flagged_frames: dict[str, list[int]] = field(default_factory=dict)
    """For each flag seen, the first few frame numbers that carry it."""

    def problems(self) -> dict[str, int]:
        """The analysis flags seen on this sender's frames (empty when clean)."""
        return self.flags.nonzero()

    @property
    def retransmitted_bytes(self) -> int:
        """Payload bytes carried by :attr:`retransmissions` (counted in ``payload_bytes``)."""
        return sum(r.length for r in self.retransmissions)

    def describe(self) -> str:
        """One line for assertion messages: counts and the first flagged frames."""
        parts = [
            f"{self.address}: {self.frames} frames, {self.payload_bytes} payload bytes, "
            f"SYN={self.syn} FIN={self.fin} RST={self.rst} fin_seq={self.fin_seq} "
            f"min_window={self.min_window} zero_window_adverts={self.zero_window_adverts} "
            f"data_seconds={self.data_seconds:.3f} max_data_gap={self.max_data_gap:.4f} "
            f"window_full_max_wait={self.window_full_max_wait:.4f} "
            f"zero_window_max_wait={self.zero_window_max_wait:.4f}"
        ]
        for name, count in self.problems().items():
            frames = ",".join(str(n) for n in self.flagged_frames.get(name, []))
            parts.append(f"{name}={count} (frames {frames}{', ...' if count > 10 else ''})")
        for r in self.retransmissions[:_MAX_FRAMES_LISTED]:
            parts.append(f"resend {r.describe()}")
        return "; ".join(parts)


@dataclass(frozen=True)
class TcpAnalysis:
    """The result of :func:`analyse`: totals and one :class:`SenderSummary` per address."""

    path: Path
    frames: int
    streams: int
    senders: dict[str, SenderSummary]

    def sent_by(self, address: str) -> SenderSummary:
        """The summary for ``address`` (an empty one if it sent nothing)."""
        return self.senders.get(address, SenderSummary(address))

    def describe(self) -> str:
        lines = [f"{self.path.name}: {self.frames} frames, {self.streams} TCP stream(s)"]
        lines += [s.describe() for s in self.senders.values()]
        return "\n".join(lines)


_BASE_FIELDS: tuple[str, ...] = (
    "frame.number",
    "frame.time_relative",
    "ip.src",
    "tcp.stream",
    "tcp.flags.syn",
    "tcp.flags.fin",
    "tcp.flags.reset",
    "tcp.len",
    "tcp.seq",
    "tcp.window_size_value",
    "tcp.window_size",
    "tcp.flags.ack",
    "tcp.ack",
    "tcp.options.sack.dsack_le",
    "tcp.options.sack.dsack_re",
)
_FIELDS: tuple[str, ...] = _BASE_FIELDS + tuple(f"tcp.analysis.{n}" for n in FLAG_NAMES)

_MAX_FRAMES_LISTED = 10


def tshark_argv(pcap: Path, display_filter: str | None = None) -> list[str]:
    """The one-pass tshark command line used by :func:`analyse`."""
    argv = [
        require_tool("tshark"),
        "-r", str(pcap),
        "-n",
        # Sequence analysis on, relative numbers; no reassembly (the snap length
        # leaves no payload to reassemble anyway, and it is faster without).
        "-o", "tcp.analyze_sequence_numbers:TRUE",
        "-o", "tcp.relative_sequence_numbers:TRUE",
        "-o", "tcp.desegment_tcp_streams:FALSE",
        "-T", "fields",
        "-E", "separator=/t",
        "-E", "occurrence=f",
    ]
    if display_filter:
        argv += ["-Y", display_filter]
    for name in _FIELDS:
        argv += ["-e", name]
    return argv


def _truthy(value: str) -> bool:
    # Boolean and FT_NONE fields print as "1" (tshark 4.0) or "True" (4.2 and later).
    return value not in ("", "0", "False", "false")


def _float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


def _int(value: str) -> int | None:
    try:
        return int(value, 0)
    except ValueError:
        return None


class _Acc:
    """Mutable per-sender totals while reading tshark's lines."""

    def __init__(self) -> None:
        self.frames = 0
        self.payload = 0
        self.syn = self.fin = self.rst = 0
        self.fin_seq: int | None = None
        self.min_window: int | None = None
        self.zero_adverts = 0
        self.counts = dict.fromkeys(FLAG_NAMES, 0)
        self.frame_lists: dict[str, list[int]] = {}
        self.first_data: float | None = None
        self.last_data: float | None = None
        self.max_data_gap = 0.0
        self.window_full_at: float | None = None
        self.window_full_max_wait = 0.0
        self.zero_window_at: float | None = None
        self.zero_window_max_wait = 0.0
        self.dsack_dup_acks = 0


class _Flow:
    """One direction of one TCP stream: what :class:`Retransmission` needs."""

    def __init__(self) -> None:
        # First transmissions in sequence order: where each starts and ends, and when.
        self.sent_starts: list[int] = []
        self.sent_ends: list[int] = []
        self.sent_times: list[float] = []
        self.resends: list[tuple[int, float, int, int]] = []  # frame, time, seq, length
        self.ack_times: list[float] = []  # cumulative ACKs, rising: when ...
        self.ack_values: list[int] = []  # ... and how far
        self.dsacks: list[tuple[int, float, int, int]] = []  # frame, time, left, right


def analyse(pcap: Path, display_filter: str | None = None) -> TcpAnalysis:
    """Run tshark's TCP analysis over ``pcap`` (one pass) and count per sender.

    ``display_filter`` (tshark ``-Y``) restricts the frames that are *counted*;
    the analysis itself still sees every frame of the file.
    """
    proc = subprocess.run(
        tshark_argv(pcap, display_filter),
        capture_output=True,
        text=True,
        timeout=TSHARK_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"tshark failed (exit {proc.returncode}) on {pcap}:\n{proc.stderr}")
    return parse_fields(pcap, proc.stdout.splitlines())


def parse_fields(pcap: Path, lines: Iterable[str]) -> TcpAnalysis:
    """Build a :class:`TcpAnalysis` from tshark ``-T fields`` lines in :data:`_FIELDS` order."""
    accs: dict[str, _Acc] = {}
    flows: dict[tuple[str, str], _Flow] = {}  # (stream, sender)
    streams: set[str] = set()
    frames = 0
    width = len(_FIELDS)
    for line in lines:
        if not line.strip():
            continue
        cols = line.split("\t")
        cols += [""] * (width - len(cols))
        row = dict(zip(_FIELDS, cols, strict=False))
        frames += 1
        if not row["ip.src"] or not row["tcp.stream"]:
            continue  # not TCP over IPv4
        streams.add(row["tcp.stream"])
        acc = accs.setdefault(row["ip.src"], _Acc())
        acc.frames += 1
        now = _float(row["frame.time_relative"])
        if acc.window_full_at is not None:
            acc.window_full_max_wait = max(acc.window_full_max_wait, now - acc.window_full_at)
            acc.window_full_at = None
        length = _int(row["tcp.len"]) or 0
        acc.payload += length
        frame_no = _int(row["frame.number"]) or 0
        flow = flows.setdefault((row["tcp.stream"], row["ip.src"]), _Flow())
        seq = _int(row["tcp.seq"])
        if length and seq is not None:
            if any(_truthy(row[f"tcp.analysis.{n}"]) for n in RETRANSMISSION_FLAGS):
                flow.resends.append((frame_no, now, seq, length))
            elif not flow.sent_starts or seq > flow.sent_starts[-1]:
                flow.sent_starts.append(seq)
                flow.sent_ends.append(seq + length)
                flow.sent_times.append(now)
        ack = _int(row["tcp.ack"])
        if _truthy(row["tcp.flags.ack"]) and ack is not None and (
                not flow.ack_values or ack > flow.ack_values[-1]):
            flow.ack_times.append(now)
            flow.ack_values.append(ack)
        dsack_left = _int(row["tcp.options.sack.dsack_le"])
        dsack_right = _int(row["tcp.options.sack.dsack_re"])
        if dsack_left is not None and dsack_right is not None:
            flow.dsacks.append((frame_no, now, dsack_left, dsack_right))
            if _truthy(row["tcp.analysis.duplicate_ack"]):
                acc.dsack_dup_acks += 1
        if length:
            if acc.last_data is not None:
                acc.max_data_gap = max(acc.max_data_gap, now - acc.last_data)
            if acc.first_data is None:
                acc.first_data = now
            acc.last_data = now
        syn, fin, rst = (_truthy(row[f"tcp.flags.{n}"]) for n in ("syn", "fin", "reset"))
        acc.syn += syn
        acc.rst += rst
        if fin:
            acc.fin += 1
            if acc.fin_seq is None and seq is not None:
                acc.fin_seq = seq + length  # a FIN may ride on the last data segment
        if not syn and not rst:
            raw = _int(row["tcp.window_size_value"])
            scaled = _int(row["tcp.window_size"])
            if raw == 0:
                acc.zero_adverts += 1
                if acc.zero_window_at is None:
                    acc.zero_window_at = now
            elif raw is not None and acc.zero_window_at is not None:
                acc.zero_window_max_wait = max(acc.zero_window_max_wait,
                                               now - acc.zero_window_at)
                acc.zero_window_at = None
            if scaled is not None and scaled >= 0:
                acc.min_window = scaled if acc.min_window is None else min(acc.min_window, scaled)
        for name in FLAG_NAMES:
            if _truthy(row[f"tcp.analysis.{name}"]):
                acc.counts[name] += 1
                listed = acc.frame_lists.setdefault(name, [])
                if len(listed) < _MAX_FRAMES_LISTED:
                    listed.append(frame_no)
        if _truthy(row["tcp.analysis.window_full"]):
            acc.window_full_at = now
    for acc in accs.values():
        if acc.zero_window_at is not None:  # never reopened within the capture
            acc.zero_window_max_wait = float("inf")
    resends: dict[str, list[Retransmission]] = {}
    for (stream, sender), flow in flows.items():
        other = next((f for (s, a), f in flows.items() if s == stream and a != sender), None)
        for frame, at, seq, length in flow.resends:
            resends.setdefault(sender, []).append(
                _retransmission(flow, other, frame, at, seq, length))
    senders = {
        addr: SenderSummary(
            address=addr,
            frames=acc.frames,
            payload_bytes=acc.payload,
            syn=acc.syn,
            fin=acc.fin,
            rst=acc.rst,
            fin_seq=acc.fin_seq,
            min_window=acc.min_window,
            zero_window_adverts=acc.zero_adverts,
            data_seconds=(acc.last_data or 0.0) - (acc.first_data or 0.0),
            max_data_gap=acc.max_data_gap,
            window_full_max_wait=acc.window_full_max_wait,
            zero_window_max_wait=acc.zero_window_max_wait,
            retransmissions=tuple(sorted(resends.get(addr, []), key=lambda r: r.frame)),
            dsack_duplicate_acks=acc.dsack_dup_acks,
            flags=FlagCounts(**acc.counts),
            flagged_frames=acc.frame_lists,
        )
        for addr, acc in sorted(accs.items())
    }
    return TcpAnalysis(path=pcap, frames=frames, streams=len(streams), senders=senders)


def _retransmission(flow: _Flow, other: _Flow | None, frame: int, at: float, seq: int,
                    length: int) -> Retransmission:
    """What the capture shows about the bytes ``seq .. seq + length`` resent in ``frame``."""
    end = seq + length
    first_sent = None
    j = bisect.bisect_right(flow.sent_starts, seq) - 1
    if j >= 0 and seq < flow.sent_ends[j]:
        first_sent = flow.sent_times[j]
    acked_at = None
    dsack_frame = None
    if other is not None:
        i = bisect.bisect_left(other.ack_values, end)
        if i < len(other.ack_values):
            acked_at = other.ack_times[i]
        dsack_frame = next((f for f, _, left, right in other.dsacks
                            if f > frame and left <= seq and end <= right), None)
    return Retransmission(frame=frame, time=at, seq=seq, length=length,
                          first_sent=first_sent, acked_at=acked_at,
                          dsack_frame=dsack_frame)


# -- hand-made captures -----------------------------------------------------------

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_tcp(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int = 65535,
    payload: bytes = b"",
    options: bytes = b"",
) -> bytes:
    """One IPv4/TCP packet with valid IP and TCP checksums; ``options`` are padded
    with NOPs to a multiple of four bytes."""
    saddr = ipaddress.IPv4Address(src).packed
    daddr = ipaddress.IPv4Address(dst).packed
    options = b"\x01" * (-len(options) % 4) + options
    header = struct.pack(
        "!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
        (5 + len(options) // 4) << 4, flags, window, 0, 0,
    ) + options
    segment = header + payload
    pseudo = saddr + daddr + struct.pack("!BBH", 0, 6, len(segment))
    csum = _checksum(pseudo + segment)
    segment = segment[:16] + struct.pack("!H", csum) + segment[18:]
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), 0, 0x4000, 64, 6, 0, saddr, daddr
    )
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return ip + segment


def sack_option(*blocks: tuple[int, int]) -> bytes:
    """A SACK option (RFC 2018) with absolute ``(left, right)`` edges; a first block
    below the ACK number is a D-SACK (RFC 2883)."""
    body = b"".join(struct.pack("!II", left & 0xFFFFFFFF, right & 0xFFFFFFFF)
                    for left, right in blocks)
    return struct.pack("!BB", 5, 2 + len(body)) + body


def write_pcap(path: Path, packets: Sequence[tuple[float, bytes]]) -> Path:
    """Write ``(timestamp_seconds, raw_ip_packet)`` pairs as a classic pcap (raw IP)."""
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW))
        for ts, packet in packets:
            sec = int(ts)
            usec = round((ts - sec) * 1_000_000)
            f.write(struct.pack("<IIII", sec, usec, len(packet), len(packet)))
            f.write(packet)
    return path

