"""An impaired path between two network namespaces: copy packets between two TUNs.

``python -m tools.impair_relay --ns-a C --tun-a rc0 --ns-b S --tun-b rs0 --impair loss=5,seed=1``

The relay attaches to two *existing* TUN interfaces, ``--tun-a`` in namespace
``--ns-a`` and ``--tun-b`` in ``--ns-b`` (create them beforehand, e.g.
``ip -n C tuntap add mode tun name rc0`` plus addresses, routes and ``up``), and
copies every IP packet read from one to the other through a seeded
:class:`tcpstack.link.impair.Impairment` -- an independent path impairer, like a
``netem`` box in the middle of a wire, that does not touch the endpoints.

Namespaces belong to threads in Linux: the relay's main thread ``setns()``-es
into ``/run/netns/NAME`` (what ``ip netns add`` bind-mounts), attaches to the
TUN there (a TUN file descriptor stays bound to its interface whatever
namespace the process later is in), does the same for the other side, and
returns to its own namespace. It never creates or configures an interface:
a missing one is an error. Python 3.11 has no ``os.setns``, so ``setns(2)`` is
called through ctypes.

Directions: A->B uses the impairment's ``out`` direction and B->A its ``in``
direction, so ``--impair ...,dir=out`` impairs A->B only. ``--impair-a2b`` and
``--impair-b2a`` give a direction its own spec (without ``dir``). Each
direction has its own random stream.

One thread, ``epoll`` plus the impairment's deadlines, no asyncio. SIGTERM or
SIGINT (or ``--duration-limit`` seconds, a hard stop) ends the relay: it prints
``COUNTERS {json}`` on stdout (keys ``a2b_*`` and ``b2a_*``) and a readable line
on stderr, then exits 0. ``READY`` is printed on stdout once both TUNs are
attached. Setup errors print ``impair_relay: error: ...`` and exit 1; bad
arguments exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import NoReturn

from tcpstack.link.impair import Impairment, ImpairSpec
from tcpstack.link.tun import TunDevice, TunError

CLONE_NEWNET = 0x40000000
"""``setns(2)`` nstype for a network namespace (``include/uapi/linux/sched.h``)."""

NETNS_RUN_DIR = "/run/netns"
"""Where ``ip netns add`` bind-mounts named namespaces (``ip-netns(8)``)."""

READ_BUFSIZE = 65536
BATCH = 256
MAX_WAIT = 0.5
"""Longest single ``epoll`` wait, so the hard stop is never overslept."""


class RelayError(Exception):
    """Setting up the relay failed; the message is one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"impair_relay: error: {message}\n")


def _spec(value: str) -> ImpairSpec:
    try:
        return ImpairSpec.parse(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _duration(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {value!r}") from None
    if not 0 < seconds <= 86400:
        raise argparse.ArgumentTypeError("duration must be in (0, 86400] seconds")
    return seconds


def _ns_name(value: str) -> str:
    if not value or "/" in value or value in (".", ".."):
        raise argparse.ArgumentTypeError(f"invalid namespace name {value!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="impair_relay",
                description="Relay IP packets between TUNs in two namespaces, impaired.")
    p.add_argument("--ns-a", required=True, type=_ns_name, metavar="NAME")
    p.add_argument("--tun-a", required=True, metavar="IF")
    p.add_argument("--ns-b", required=True, type=_ns_name, metavar="NAME")
    p.add_argument("--tun-b", required=True, metavar="IF")
    p.add_argument("--impair", type=_spec, default=ImpairSpec(), metavar="SPEC",
                   help="impairment for both directions, e.g. loss=5,delay=10ms,seed=1 "
                        "(dir=out: A->B only, dir=in: B->A only; default: none)")
    p.add_argument("--impair-a2b", type=_spec, default=None, metavar="SPEC",
                   help="impairment for A->B (replaces --impair in that direction)")
    p.add_argument("--impair-b2a", type=_spec, default=None, metavar="SPEC",
                   help="impairment for B->A (replaces --impair in that direction)")
    p.add_argument("--duration-limit", type=_duration, default=600.0, metavar="SECONDS",
                   help="hard stop after this many seconds (default: %(default)s)")
    return p


# ------------------------------------------------------------------ namespaces

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    """``setns(fd, CLONE_NEWNET)`` for the calling thread."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block with this thread in network namespace ``name``; then come back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise RelayError(f"no network namespace {name!r}: {e.strerror}") from None
        try:
            _setns(target)
        except OSError as e:
            raise RelayError(f"cannot enter namespace {name!r}: {e.strerror}") from None
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)  # must not fail: we came from there
    finally:
        os.close(own)


def attach(ns: str, ifname: str) -> TunDevice:
    """Attach to the existing TUN ``ifname`` in namespace ``ns`` (never create one)."""
    with in_netns(ns):
        try:
            socket.if_nametoindex(ifname)
        except OSError:
            raise RelayError(f"no interface {ifname!r} in namespace {ns!r} "
                             "(create it first: ip tuntap add mode tun ...)") from None
        try:
            return TunDevice.open(ifname, configure=False)
        except TunError as e:
            raise RelayError(f"{ns}/{ifname}: {e}") from None


# ------------------------------------------------------------------ the relay


class Relay:
    """Copies packets A->B (impairment direction ``out``) and B->A (``in``)."""

    def __init__(self, dev_a: TunDevice, dev_b: TunDevice, a2b: Impairment,
                 b2a: Impairment) -> None:
        self.dev_a, self.dev_b = dev_a, dev_b
        self.a2b, self.b2a = a2b, b2a
        self.counters: Counter[str] = Counter()

    def _write(self, dev: TunDevice, packets: Sequence[bytes | bytearray], key: str) -> None:
        if not packets:
            return
        try:
            written = dev.write_batch(packets)
        except OSError:
            # One packet the kernel rejects (EINVAL, say) must not stop the relay:
            # write them one by one and count the failures.
            written = 0
            for packet in packets:
                try:
                    if dev.write(packet):
                        written += 1
                    else:
                        self.counters[key + "_write_refused"] += 1
                except OSError:
                    self.counters[key + "_write_error"] += 1
            self.counters[key + "_written"] += written
            return
        self.counters[key + "_written"] += written
        if written < len(packets):
            self.counters[key + "_write_refused"] += len(packets) - written

    def release(self, now: float) -> None:
        """Write the held packets that are due."""
        self._write(self.dev_b, self.a2b.due_outbound(now), "a2b")
        self._write(self.dev_a, self.b2a.due_inbound(now), "b2a")

    def from_a(self, now: float) -> None:
        packets = self.dev_a.read_batch(BATCH, READ_BUFSIZE)
        self.counters["a2b_read"] += len(packets)
        self._write(self.dev_b, self.a2b.outbound(packets, now), "a2b")

    def from_b(self, now: float) -> None:
        packets = self.dev_b.read_batch(BATCH, READ_BUFSIZE)
        self.counters["b2a_read"] += len(packets)
        self._write(self.dev_a, self.b2a.inbound(packets, now), "b2a")

    def next_deadline(self) -> float | None:
        times = [t for t in (self.a2b.next_deadline(), self.b2a.next_deadline())
                 if t is not None]
        return min(times) if times else None

    def report(self) -> dict[str, int]:
        """All counters: the relay's own and each direction's impairment counters."""
        out = dict(self.counters)
        for key, value in self.a2b.counters.items():
            if key.startswith("out_"):
                out["a2b_" + key[4:]] = value
        for key, value in self.b2a.counters.items():
            if key.startswith("in_"):
                out["b2a_" + key[3:]] = value
        return dict(sorted(out.items()))

    def run(self, duration_limit: float, wakeup_fd: int, stopping: list[bool]) -> str:
        """Relay until a signal arrives (``stopping[0]``) or the hard stop; say which."""
        fd_a, fd_b = self.dev_a.fileno(), self.dev_b.fileno()
        hard_stop = time.monotonic() + duration_limit
        with select.epoll() as ep:
            ep.register(fd_a, select.EPOLLIN)
            ep.register(fd_b, select.EPOLLIN)
            ep.register(wakeup_fd, select.EPOLLIN)
            while not stopping[0]:
                now = time.monotonic()
                if now >= hard_stop:
                    return "duration limit reached"
                timeout = min(hard_stop - now, MAX_WAIT)
                deadline = self.next_deadline()
                if deadline is not None:
                    timeout = min(timeout, max(0.0, deadline - now))
                events = ep.poll(timeout)
                now = time.monotonic()
                self.release(now)
                for fd, _mask in events:
                    if fd == fd_a:
                        self.from_a(now)
                    elif fd == fd_b:
                        self.from_b(now)
                    else:
                        with contextlib.suppress(BlockingIOError):
                            os.read(wakeup_fd, 64)
        return "signal"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for opt, spec in (("--impair-a2b", args.impair_a2b), ("--impair-b2a", args.impair_b2a)):
        if spec is not None and spec.direction != "both":
            print(f"impair_relay: error: {opt}: dir= has no meaning for one direction",
                  file=sys.stderr)
            return 2
    shared = Impairment(args.impair)
    a2b = shared if args.impair_a2b is None else Impairment(args.impair_a2b)
    b2a = shared if args.impair_b2a is None else Impairment(args.impair_b2a)

    stopping = [False]

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stopping[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)

    devices: list[TunDevice] = []
    try:
        try:
            devices.append(attach(args.ns_a, args.tun_a))
            devices.append(attach(args.ns_b, args.tun_b))
        except RelayError as e:
            print(f"impair_relay: error: {e}", file=sys.stderr)
            return 1
        relay = Relay(devices[0], devices[1], a2b, b2a)
        a2b_spec = args.impair_a2b or args.impair
        b2a_spec = args.impair_b2a or args.impair
        print(f"impair_relay: {args.ns_a}/{args.tun_a} <-> {args.ns_b}/{args.tun_b}; "
              f"a2b: {a2b_spec}; b2a: {b2a_spec}", file=sys.stderr, flush=True)
        print("READY", flush=True)
        try:
            why = relay.run(args.duration_limit, rfd, stopping)
        except OSError as e:
            print(f"impair_relay: error: relaying failed: {e}", file=sys.stderr)
            why = "error"
        report = relay.report()
        print("COUNTERS " + json.dumps(report), flush=True)
        print(f"impair_relay: stopped ({why}); counters: "
              + (", ".join(f"{k}={v}" for k, v in report.items()) or "none"),
              file=sys.stderr, flush=True)
        return 1 if why == "error" else 0
    finally:
        for dev in devices:
            dev.close()
        signal.set_wakeup_fd(-1)
        os.close(rfd)
        os.close(wfd)


if __name__ == "__main__":
    sys.exit(main())
