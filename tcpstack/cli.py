"""The ``tcpstack`` command line.

``tcpstack serve`` owns an IP address behind a TUN interface and serves HTTP,
echo and discard on it. Input is validated up front: a bad flag or value prints a
single ``tcpstack: error: ...`` line and exits with status 2; a failure to set up
the interface exits with status 1; a clean shutdown (SIGINT/SIGTERM) exits 0; the
interface disappearing under the running daemon exits 1 with one error line.

The parser only turns strings into numbers, addresses and paths. Ranges and
defaults live in the configuration dataclasses -- :class:`TcpConfig`,
:class:`StackConfig`, :class:`ServiceLimits`, :class:`HttpLimits`,
:class:`Keepalive`, :class:`ImpairSpec` and the daemon's own
:class:`DaemonConfig` -- which :func:`build_settings` fills from the flags given
(an absent flag leaves the dataclass default); their :class:`ValueError` becomes
the one-line error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import ipaddress
import logging
import math
import os
import signal
import sys
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from tcpstack import __version__
from tcpstack.apps.limits import HttpLimits, Keepalive, ServiceLimits
from tcpstack.build import build_kind
from tcpstack.counters import Counters
from tcpstack.link.tun import ipv6_disabled
from tcpstack.observe import commands as observe_commands
from tcpstack.observe import daemon as observe
from tcpstack.observe.control import ControlError
from tcpstack.observe.logs import configure as configure_logging
from tcpstack.stack import StackConfig
from tcpstack.tcp.aokeys import AoKeys, Mkt
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.congestion import ALGORITHMS
from tcpstack.tcp.md5keys import Md5Keys
from tcpstack.tcp.tfocookies import KEY_LEN, parse_key
from tcpstack.wire.tcpao import ALGORITHMS as ALGORITHMS_AO

log = logging.getLogger("tcpstack")

DEFAULT_INTERFACE = "tcpstack0"
DEFAULT_HOST_ADDRESS = "10.0.0.1/24"
DEFAULT_ADDRESS = "10.0.0.2"
DEFAULT_HOST_ADDRESS6 = "fd00::1/64"
DEFAULT_ADDRESS6 = "fd00::2"
IPV6_MIN_MTU = 1280  # RFC 8200 5: IPv6 needs links of at least this MTU
TSO_SIZE = 65535 - 20 - 60  # largest TCP payload in one IPv4 packet with full options
CLOSE_GRACE = 1.0
"""Seconds connections still open after draining get to close (FIN) before RST."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"tcpstack: error: {message}\n")


def _port(value: str) -> int:
    try:
        port = int(value, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} out of range 0..65535")
    return port


def _interface_name(value: str) -> str:
    from tcpstack.link.tun import TunError, check_name

    try:
        check_name(value)
    except TunError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def _ipv4(value: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid IPv4 address {value!r}") from None


def _ipv6(value: str) -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid IPv6 address {value!r}") from None


def _ipv6_interface(value: str) -> ipaddress.IPv6Interface:
    if "/" not in value:
        raise argparse.ArgumentTypeError(f"{value!r} needs a prefix length, e.g. fd00::1/64")
    try:
        return ipaddress.IPv6Interface(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid IPv6 address/prefix {value!r}") from None


def _ipv4_interface(value: str) -> ipaddress.IPv4Interface:
    if "/" not in value:
        raise argparse.ArgumentTypeError(f"{value!r} needs a prefix length, e.g. 10.0.0.1/24")
    try:
        return ipaddress.IPv4Interface(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid IPv4 address/prefix {value!r}") from None


def _directory(value: str) -> Path:
    p = Path(value)
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is not a directory")
    return p


def _impair_spec(value: str) -> Any:
    from tcpstack.link.impair import ImpairSpec

    try:
        return ImpairSpec.parse(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _log_level(value: str) -> int:
    level = logging.getLevelName(value.upper())
    if not isinstance(level, int):
        raise argparse.ArgumentTypeError(
            f"invalid log level {value!r} (debug, info, warning, error)")
    return level


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """``tcpstack serve``'s own settings, validated once.

    ``mtu`` is at least 576 (RFC 791: every IPv4 host accepts 576-byte
    datagrams; the MSS is then at least 536, RFC 9293's default), and at least
    1280 with ``ipv6`` (RFC 8200 5). ``ipv4`` and ``ipv6`` say which families the
    daemon serves (at least one). ``workers``
    is the number of TUN queues and worker processes, ``backlog`` each
    listener's accept queue and ``syn_backlog`` its SYN queue (beyond which SYN
    cookies answer), ``txqueuelen`` the packets the kernel queues for the stack,
    ``grace`` the seconds connections get to close at shutdown.
    """

    mtu: int = 1500
    txqueuelen: int = 10000
    workers: int = 1
    backlog: int = 128
    syn_backlog: int = 1024
    grace: float = 2.0
    ipv4: bool = True
    ipv6: bool = True
    #: TCP Fast Open (RFC 7413) on the services, with at most ``tfo_queue`` such
    #: connections per listener in SYN-RECEIVED (0: ``backlog``).
    tfo: bool = False
    tfo_queue: int = 0

    def __post_init__(self) -> None:
        if not 576 <= self.mtu <= 65535:
            raise ValueError(f"MTU {self.mtu} out of range 576..65535")
        if not (self.ipv4 or self.ipv6):
            raise ValueError("--no-ipv4 and --no-ipv6 together leave the stack no address")
        if self.ipv6 and self.mtu < IPV6_MIN_MTU:
            raise ValueError(f"IPv6 needs an MTU of at least {IPV6_MIN_MTU} (RFC 8200 5), "
                             f"not {self.mtu}: raise --mtu or give --no-ipv6")
        if not 1 <= self.txqueuelen <= 1 << 20:
            raise ValueError(f"queue length {self.txqueuelen} out of range 1..{1 << 20}")
        if not 1 <= self.workers <= 64:
            raise ValueError(f"worker count {self.workers} out of range 1..64")
        if not 1 <= self.backlog <= 65535:
            raise ValueError(f"backlog {self.backlog} out of range 1..65535")
        if not 1 <= self.syn_backlog <= 1 << 20:
            raise ValueError(f"SYN backlog {self.syn_backlog} out of range 1..{1 << 20}")
        if not 0 <= self.tfo_queue <= 65535:
            raise ValueError(f"Fast Open queue {self.tfo_queue} out of range 0..65535")
        if not (math.isfinite(self.grace) and 0 < self.grace <= 1e6):
            raise ValueError(f"grace period must be a positive number of seconds, "
                             f"not {self.grace!r}")


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """Everything ``tcpstack serve`` runs with, built from the flags by :func:`build_settings`."""

    daemon: DaemonConfig
    stack: StackConfig
    limits: ServiceLimits
    http: HttpLimits
    ports: dict[str, int]


_TCP = TcpConfig()
_STACK = StackConfig()
_DAEMON = DaemonConfig()
_LIMITS = ServiceLimits()
_HTTP = HttpLimits()
_KEEPALIVE = Keepalive()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tcpstack", description="A userspace TCP/IP stack over a TUN device.")
    parser.add_argument("--version", action="version",
                        version=f"tcpstack {__version__} ({build_kind()})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    s = sub.add_parser("serve", help="run the stack with HTTP, echo and discard services",
                       description="Own --address behind the TUN interface and serve on it.")
    net = s.add_argument_group("interface")
    net.add_argument("--interface", "-i", type=_interface_name, default=DEFAULT_INTERFACE,
                     metavar="NAME",
                     help="TUN interface to create or attach to (default: %(default)s)")
    net.add_argument("--host-address", type=_ipv4_interface, default=None, metavar="CIDR",
                     help="kernel-side address of the TUN (default: "
                          f"{DEFAULT_HOST_ADDRESS} when the interface is created)")
    net.add_argument("--address", "-a", type=_ipv4, default=_ipv4(DEFAULT_ADDRESS),
                     metavar="IP", help="the stack's own address (default: %(default)s)")
    net.add_argument("--host-address6", type=_ipv6_interface, default=None, metavar="CIDR",
                     help="kernel-side IPv6 address of the TUN (default: "
                          f"{DEFAULT_HOST_ADDRESS6} when the interface is created)")
    net.add_argument("--address6", type=_ipv6, default=_ipv6(DEFAULT_ADDRESS6),
                     metavar="IP", help="the stack's own IPv6 address (default: %(default)s)")
    net.add_argument("--no-ipv4", dest="ipv4", action="store_false", default=None,
                     help="serve IPv6 only: no IPv4 address on either side")
    net.add_argument("--no-ipv6", dest="ipv6", action="store_false", default=None,
                     help="serve IPv4 only: no IPv6 address on either side")
    net.add_argument("--mtu", type=int, metavar="N",
                     help="MTU of an interface the daemon creates or configures; the MSS "
                          "is the interface's actual MTU minus 40 (default: "
                          f"{_DAEMON.mtu})")
    cfg = net.add_mutually_exclusive_group()
    cfg.add_argument("--configure", dest="configure", action="store_true", default=None,
                     help="set MTU/address/up even on an existing interface")
    cfg.add_argument("--no-configure", dest="configure", action="store_false",
                     help="never change the interface's configuration")
    net.add_argument("--txqueuelen", type=int, metavar="N",
                     help="packets the kernel queues for the stack (when configuring; "
                          f"default: {_DAEMON.txqueuelen})")
    net.add_argument("--no-offload", dest="offload", action="store_false",
                     help="plain packets: no virtio-net header, checksum or TSO offload")

    net.add_argument("--impair", type=_impair_spec, default=None, metavar="SPEC",
                     help="inject seeded faults into the TUN traffic, e.g. "
                          "loss=5,delay=10ms,jitter=2ms,seed=7 (keys: loss, delay, jitter, "
                          "reorder, reorder_delay, duplicate, corrupt, rate, queue, limit, seed, "
                          "dir=both|in|out; percentages, times in us/ms/s); implies "
                          "--no-offload")

    svc = s.add_argument_group("services (port 0 disables a service)")
    svc.add_argument("--http-port", type=_port, default=80, metavar="PORT")
    svc.add_argument("--echo-port", type=_port, default=7, metavar="PORT")
    svc.add_argument("--discard-port", type=_port, default=9, metavar="PORT")
    svc.add_argument("--www", type=_directory, default=None, metavar="DIR",
                     help="serve files under DIR over HTTP")

    lim = s.add_argument_group("service limits (per connection)")
    lim.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                     help="close a connection that sends nothing for this long (HTTP: "
                          f"between requests; default: {_LIMITS.idle_timeout:g})")
    lim.add_argument("--send-timeout", type=float, metavar="SECONDS",
                     help="reset a connection whose peer does not read for this long "
                          f"(default: {_LIMITS.send_timeout:g})")
    lim.add_argument("--close-timeout", type=float, metavar="SECONDS",
                     help="reset a connection whose close does not finish in this time "
                          f"(default: {_LIMITS.close_timeout:g})")
    lim.add_argument("--http-header-timeout", type=float, metavar="SECONDS",
                     help="total time for a request head, else 408 "
                          f"(default: {_HTTP.header_timeout:g})")
    lim.add_argument("--http-body-timeout", type=float, metavar="SECONDS",
                     help=f"total time for a request body, else 408 "
                          f"(default: {_HTTP.body_timeout:g})")
    lim.add_argument("--http-max-body", type=int, metavar="BYTES",
                     help=f"largest request body, else 413 (default: {_HTTP.max_body})")
    lim.add_argument("--http-max-requests", type=int, metavar="N",
                     help="requests per connection before it is closed "
                          f"(default: {_HTTP.max_requests})")
    ka = lim.add_mutually_exclusive_group()
    ka.add_argument("--keepalive", type=int, metavar="SECONDS",
                    help="TCP keepalive probes after this much idle time on service "
                         f"connections (default: {_KEEPALIVE.idle})")
    ka.add_argument("--no-keepalive", dest="keepalive_off", action="store_true",
                    help="no keepalive probes on service connections")
    lim.add_argument("--keepalive-interval", type=int, metavar="SECONDS",
                     help=f"seconds between keepalive probes (default: {_KEEPALIVE.interval})")
    lim.add_argument("--keepalive-count", type=int, metavar="N",
                     help="unanswered probes that end a connection "
                          f"(default: {_KEEPALIVE.count})")

    tcp = s.add_argument_group("TCP")
    tcp.add_argument("--msl", type=float, metavar="SECONDS",
                     help="maximum segment lifetime; TIME-WAIT lasts 2*MSL "
                          f"(default: {_TCP.msl:g})")
    tcp.add_argument("--rcv-buf", type=int, metavar="BYTES",
                     help=f"receive buffer per connection (default: {_TCP.rcv_buf})")
    tcp.add_argument("--snd-buf", type=int, metavar="BYTES",
                     help=f"send buffer per connection (default: {_TCP.snd_buf})")
    tcp.add_argument("--rcv-buf-max", type=int, metavar="BYTES",
                     help="largest receive buffer autotuning may grow a connection's to "
                          f"(default: {_TCP.rcv_buf_max})")
    tcp.add_argument("--snd-buf-max", type=int, metavar="BYTES",
                     help="largest send buffer autotuning may grow a connection's to "
                          f"(default: {_TCP.snd_buf_max})")
    tcp.add_argument("--no-autotune", dest="autotune", action="store_false", default=None,
                     help="keep every connection's buffers at --rcv-buf/--snd-buf "
                          "(no autotuning)")
    tcp.add_argument("--max-retries", type=int, metavar="N",
                     help="retransmissions before a connection is dropped "
                          f"(default: {_TCP.max_retries})")
    tcp.add_argument("--congestion-control", "--cc", metavar="NAME",
                     help=f"congestion control: {', '.join(sorted(ALGORITHMS))} "
                          f"(default: {_TCP.congestion_control})")
    tcp.add_argument("--no-hystart", dest="hystart", action="store_false", default=None,
                     help="leave slow start only on loss, not by HyStart++'s RTT watch "
                          "(RFC 9406)")
    tcp.add_argument("--no-sack", dest="sack", action="store_false", default=None,
                     help="do not negotiate SACK (RFC 2018)")
    tcp.add_argument("--no-timestamps", dest="timestamps", action="store_false", default=None,
                     help="do not negotiate timestamps (RFC 7323)")
    tcp.add_argument("--ecn", metavar="MODE",
                     help="ECN: passive (agree to classic ECN, RFC 3168, or Accurate ECN, "
                          "RFC 9768, when a peer asks), on (also ask for classic ECN on "
                          "our connections, as Linux's tcp_ecn=1), accecn (ask for "
                          f"Accurate ECN, as tcp_ecn=3), off (default: {_TCP.ecn})")
    tcp.add_argument("--tfo", action="store_true", default=None,
                     help="TCP Fast Open (RFC 7413) on the services: clients holding our "
                          "cookie send their request in the SYN")
    tcp.add_argument("--tfo-queue", type=int, metavar="N",
                     help="Fast Open connections per listener still in SYN-RECEIVED; "
                          "beyond, the ordinary handshake (default: --backlog)")
    tcp.add_argument("--tfo-key", metavar="KEY[,BACKUP]",
                     help="Fast Open cookie key, 32 hex digits as Linux's "
                          "net.ipv4.tcp_fastopen_key (dashes allowed), and optionally a "
                          "backup key also accepted; @FILE reads them from a file "
                          "(default: random at start-up)")
    tcp.add_argument("--tfo-key-rotation", type=float, metavar="SECONDS",
                     help="derive a new Fast Open key every SECONDS (a cookie stays valid "
                          "one or two periods); 0: never (default)")
    tcp.add_argument("--delayed-ack", type=float, metavar="SECONDS",
                     help="delayed-ACK timeout, 0 to ACK every segment "
                          f"(default: {_TCP.delayed_ack:g})")
    tcp.add_argument("--user-timeout", type=float, metavar="SECONDS",
                     help="end a connection whose data makes no progress for this long, "
                          f"0 never (default: {_TCP.user_timeout:g})")

    path = s.add_argument_group("path MTU")
    path.add_argument("--min-pmtu", type=int, metavar="BYTES",
                      help="smallest path MTU believed from ICMP or reached by probing; "
                           f"smaller reports are raised to it (default: {_STACK.min_pmtu})")
    path.add_argument("--pmtu-expires", type=float, metavar="SECONDS",
                      help="how long a lowered path MTU holds before the full size is "
                           f"tried again (default: {_TCP.pmtu_expires:g})")
    frag = s.add_argument_group("IP fragments")
    frag.add_argument("--no-reassembly", dest="reassembly", action="store_false", default=None,
                      help="drop IPv4 fragments (counted as ipv4_fragment) instead of "
                           "reassembling them")
    frag.add_argument("--frag-memory", type=int, metavar="BYTES",
                      help="bytes all partial datagrams may hold; one source at most a "
                           f"quarter (default: {_STACK.frag_memory})")
    frag.add_argument("--frag-timeout", type=float, metavar="SECONDS",
                      help="time a datagram has to be completed from its first fragment "
                           f"(default: {_STACK.frag_timeout:g})")
    path.add_argument("--no-mtu-probing", dest="mtu_probing", action="store_false",
                      default=None,
                      help="no packetization-layer PMTUD: paths that drop large packets "
                           "without ICMP (black holes) are not detected")

    guard = s.add_argument_group("limits (hostile peers and overload)")
    guard.add_argument("--backlog", type=int, metavar="N",
                       help="established connections per listener waiting to be taken "
                            f"(default: {_DAEMON.backlog})")
    guard.add_argument("--syn-backlog", type=int, metavar="N",
                       help="half-open connections per listener; beyond, SYN cookies "
                            f"(default: {_DAEMON.syn_backlog})")
    guard.add_argument("--syncookies", metavar="WHEN",
                       help="SYN cookies: auto (when the SYN queue is full), always, off "
                            f"(default: {_STACK.syncookies})")
    guard.add_argument("--syn-batch-limit", type=int, metavar="N",
                       help="new connections one batch of received packets may start; "
                            "SYNs answered with a cookie start none "
                            f"(default: {_STACK.syn_batch_limit})")
    guard.add_argument("--max-connections", type=int, metavar="N",
                       help=f"connections, TIME-WAIT aside (default: {_STACK.max_connections})")
    guard.add_argument("--max-time-wait", type=int, metavar="N",
                       help="connections in TIME-WAIT; beyond, the oldest ends "
                            f"(default: {_STACK.max_time_wait})")
    guard.add_argument("--max-buffered", type=int, metavar="BYTES",
                       help="bytes all connections may hold in their buffers "
                            f"(default: {_STACK.max_buffered})")
    guard.add_argument("--challenge-ack-limit", type=int, metavar="N",
                       help="challenge ACKs per second, stack-wide, randomized (RFC 5961 7) "
                            f"(default: {_TCP.challenge_ack_limit})")
    guard.add_argument("--rst-rate-limit", type=int, metavar="N",
                       help="RSTs per second to segments without a connection "
                            f"(default: {_STACK.rst_rate_limit})")
    guard.add_argument("--icmp-rate-limit", type=int, metavar="N",
                       help=f"ICMP errors per second (default: {_STACK.icmp_rate_limit})")

    auth = s.add_argument_group("authenticated segments")
    auth.add_argument("--md5-key", action="append", default=[], metavar="PEER=KEY",
                      help="TCP-MD5 signatures (RFC 2385) with PEER, an address or a prefix "
                           "(10.0.0.1, 10.0.0.0/24): segments to it are signed, unsigned or "
                           "wrongly signed ones from it dropped. KEY is the text of the key, "
                           "or @FILE to read it from a file (its last newline ignored). "
                           "Repeat for more peers; the longest prefix wins")
    auth.add_argument("--ao-key", action="append", default=[],
                      metavar="PEER=SENDID:RECVID[:ALG][:exclude-options]:KEY",
                      help="a TCP-AO master key tuple (RFC 5925) for PEER (an address or "
                           "prefix): the KeyID we send with, the one the peer sends with, "
                           "the algorithm (hmac-sha1, the default, or aes-128-cmac), "
                           "exclude-options to leave the other options out of the MAC, and "
                           "the key (text, or @FILE). Repeat for more peers, or more tuples "
                           "per peer for key rollover")

    tls = s.add_argument_group("TLS (HTTPS with the HTTP service)")
    cert = tls.add_mutually_exclusive_group()
    cert.add_argument("--tls-cert", type=Path, default=None, metavar="FILE",
                      help="PEM certificate (chain) to serve HTTPS with")
    cert.add_argument("--tls-self-signed", action="store_true",
                      help="make a throwaway self-signed certificate for --address at "
                           "start-up and log its SHA-256 fingerprint (needs the "
                           "'cryptography' package)")
    tls.add_argument("--tls-key", type=Path, default=None, metavar="FILE",
                     help="PEM private key for --tls-cert (default: in the same file)")
    tls.add_argument("--tls-write-cert", type=Path, default=None, metavar="FILE",
                     help="with --tls-self-signed: write the certificate (not the key) "
                          "here, for clients' --cacert")
    tls.add_argument("--https-port", type=_port, default=443, metavar="PORT",
                     help="HTTPS port when TLS is on (default: %(default)s)")

    s.add_argument("--workers", type=int, metavar="N",
                   help="worker processes, one TUN queue each "
                        f"(default: {_DAEMON.workers})")
    s.add_argument("--grace", type=float, metavar="SECONDS",
                   help="at SIGTERM/SIGINT, time open connections get to finish before "
                        "they are closed; new ones are refused meanwhile "
                        f"(default: {_DAEMON.grace:g})")
    s.add_argument("--log-level", type=_log_level, default=logging.INFO, metavar="LEVEL",
                   help="debug, info, warning or error (default: info)")
    observe.add_arguments(s)
    priv = s.add_argument_group("privileges")
    priv.add_argument("--user", default=None, metavar="USER",
                      help="after setting up the interface as root, run as USER (name or "
                           "ID) with no capabilities")
    priv.add_argument("--group", default=None, metavar="GROUP",
                      help="with --user: run with this group instead of USER's primary group")
    observe_commands.add_subcommands(sub)
    return parser


def _given(args: argparse.Namespace, **flags: str) -> dict[str, Any]:
    """``{field: value}`` for each flag the user gave (``flags`` maps field to dest)."""
    return {field: getattr(args, dest) for field, dest in flags.items()
            if getattr(args, dest) is not None}


def _read_key(flag: str, peer: str, key: str) -> bytes:
    """A key given as text, or @FILE (its last newline ignored)."""
    if not key.startswith("@"):
        return os.fsencode(key)  # the argument's bytes, whatever their encoding
    try:
        raw = Path(key[1:]).read_bytes()
    except OSError as e:
        raise ValueError(f"{flag} {peer}: cannot read {key[1:]}: {e.strerror or e}") from None
    return raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if raw.endswith(b"\n") else raw


def parse_ao_key(spec: str) -> Mkt:
    """``PEER=SENDID:RECVID[:ALG][:exclude-options]:KEY`` as an MKT; ValueError with a
    one-line message (never echoing the key)."""
    peer, sep, rest = spec.partition("=")
    fields = rest.split(":")
    if not sep or not peer.strip() or len(fields) < 3:
        raise ValueError("--ao-key expects PEER=SENDID:RECVID[:ALG][:exclude-options]:KEY")
    try:
        send_id, recv_id = int(fields[0]), int(fields[1])
    except ValueError:
        raise ValueError(f"--ao-key {peer}: SENDID and RECVID must be numbers 0..255") \
            from None
    algorithm, include, i = "hmac-sha1", True, 2
    while i < len(fields) - 1 and fields[i] in (*ALGORITHMS_AO, "exclude-options"):
        if fields[i] == "exclude-options":
            include = False
        else:
            algorithm = fields[i]
        i += 1
    key = _read_key("--ao-key", peer, ":".join(fields[i:]))
    try:
        return Mkt.make(peer.strip(), send_id, recv_id, key, algorithm, include)
    except ValueError as e:
        raise ValueError(f"--ao-key {peer}: {e}") from None


def _ao_keys(specs: list[str]) -> tuple[Mkt, ...]:
    mkts = tuple(parse_ao_key(spec) for spec in specs)
    try:
        AoKeys(mkts)
    except ValueError as e:
        raise ValueError(f"--ao-key: {e}") from None
    return mkts


def parse_tfo_keys(spec: str | None) -> tuple[bytes, ...]:
    """``KEY[,BACKUP]`` (32 hex digits each), or ``@FILE`` holding that text, as keys;
    ValueError with a one-line message (never the key itself)."""
    if spec is None:
        return ()
    if spec.startswith("@"):
        try:
            spec = Path(spec[1:]).read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else "unreadable"
            raise ValueError(f"--tfo-key: cannot read {spec[1:]}: {reason}") from None
    parts = spec.split(",")
    if len(parts) > 2:
        raise ValueError("--tfo-key expects KEY or KEY,BACKUP")
    try:
        return tuple(parse_key(part) for part in parts)
    except ValueError as e:
        raise ValueError(f"--tfo-key: {e}") from None


def parse_md5_key(spec: str) -> tuple[str, bytes]:
    """``PEER=KEY`` or ``PEER=@FILE`` as (peer, key); ValueError with a one-line message."""
    peer, sep, key = spec.partition("=")
    if not sep or not peer.strip():
        # (not echoed: it may be a key given without its peer)
        raise ValueError("--md5-key expects PEER=KEY or PEER=@FILE")
    raw = _read_key("--md5-key", peer, key)
    try:
        Md5Keys([(peer, raw)])
    except ValueError as e:
        raise ValueError(f"--md5-key {peer}: {e}") from None
    return peer.strip(), raw


def build_settings(args: argparse.Namespace) -> ServeSettings:
    """Build and validate every configuration from parsed ``serve`` flags.

    Flags left out keep the dataclasses' defaults. Raises :class:`ValueError`
    with a one-line message for anything the configurations refuse, or for
    two services sharing a port and an ``--address`` equal to the host side's.
    """
    daemon = DaemonConfig(**_given(args, mtu="mtu", txqueuelen="txqueuelen",
                                   workers="workers", backlog="backlog",
                                   syn_backlog="syn_backlog", grace="grace", ipv4="ipv4",
                                   ipv6="ipv6", tfo="tfo", tfo_queue="tfo_queue"))
    keepalive: Keepalive | None = None
    if not args.keepalive_off:
        keepalive = Keepalive(**_given(args, idle="keepalive", interval="keepalive_interval",
                                       count="keepalive_count"))
    limits = ServiceLimits(keepalive=keepalive,
                           **_given(args, idle_timeout="idle_timeout",
                                    send_timeout="send_timeout",
                                    close_timeout="close_timeout"))
    http = HttpLimits(**_given(args, header_timeout="http_header_timeout",
                               body_timeout="http_body_timeout", max_body="http_max_body",
                               max_requests="http_max_requests"))
    tcp = TcpConfig(mss=daemon.mtu - 40,
                    **_given(args, rcv_buf="rcv_buf", snd_buf="snd_buf", rcv_buf_max="rcv_buf_max",
                             snd_buf_max="snd_buf_max", autotune="autotune", msl="msl",
                             max_retries="max_retries",
                             congestion_control="congestion_control", hystart="hystart",
                             sack="sack",
                             timestamps="timestamps", ecn="ecn", delayed_ack="delayed_ack",
                             user_timeout="user_timeout",
                             challenge_ack_limit="challenge_ack_limit",
                             mtu_probing="mtu_probing", pmtu_expires="pmtu_expires"))
    addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = (
        ((args.address,) if daemon.ipv4 else ()) + ((args.address6,) if daemon.ipv6 else ()))
    stack = StackConfig(addresses=addresses, tcp=tcp,
                        **_given(args, syncookies="syncookies", syn_batch_limit="syn_batch_limit",
                                 max_connections="max_connections",
                                 max_time_wait="max_time_wait", max_buffered="max_buffered",
                                 rst_rate_limit="rst_rate_limit",
                                 icmp_rate_limit="icmp_rate_limit", min_pmtu="min_pmtu",
                                 reassembly="reassembly", frag_memory="frag_memory",
                                 frag_timeout="frag_timeout",
                                 tfo_key_rotation="tfo_key_rotation"),
                        tfo_keys=parse_tfo_keys(args.tfo_key),
                        md5_keys=tuple(parse_md5_key(spec) for spec in args.md5_key),
                        ao_keys=_ao_keys(args.ao_key))
    if not daemon.tfo:
        given = [flag for flag, value in (("--tfo-queue", args.tfo_queue),
                                          ("--tfo-key", args.tfo_key),
                                          ("--tfo-key-rotation", args.tfo_key_rotation))
                 if value is not None]
        if given:
            raise ValueError(f"{given[0]} needs --tfo")
    ports = {name: getattr(args, f"{name}_port") for name in ("http", "echo", "discard")}
    used = [p for p in ports.values() if p]
    if len(used) != len(set(used)):
        raise ValueError("two services cannot share a port")
    host = args.host_address
    if host is not None and host.ip == args.address:
        raise ValueError(f"--address {args.address} is the host side's own address")
    host6 = args.host_address6
    if host6 is not None and host6.ip == args.address6:
        raise ValueError(f"--address6 {args.address6} is the host side's own address")
    if host is not None and not daemon.ipv4:
        raise ValueError("--host-address is an IPv4 address, but --no-ipv4 was given")
    if host6 is not None and not daemon.ipv6:
        raise ValueError("--host-address6 is an IPv6 address, but --no-ipv6 was given")
    return ServeSettings(daemon=daemon, stack=stack, limits=limits, http=http, ports=ports)


def _fail(message: str, status: int = 1) -> int:
    print(f"tcpstack: error: {message}", file=sys.stderr)
    return status


def run_event_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop, or on asyncio's default loop (with a warning) without it."""
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop is not available; using the default asyncio event loop")
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _https(args: argparse.Namespace, settings: ServeSettings) -> Any:
    """The HTTPS service's :class:`~tcpstack.certs.HttpsSetup` from the TLS flags, or
    None without them. Raises :class:`ValueError` with a one-line message."""
    if args.tls_key is not None and args.tls_cert is None:
        raise ValueError("--tls-key needs --tls-cert")
    if args.tls_write_cert is not None and not args.tls_self_signed:
        raise ValueError("--tls-write-cert needs --tls-self-signed")
    if (args.tls_cert is None and not args.tls_self_signed) or not args.https_port:
        return None
    if args.https_port in settings.ports.values():
        raise ValueError("two services cannot share a port")
    from tcpstack.certs import MissingDependency, https_setup

    try:
        return https_setup(cert_file=args.tls_cert, key_file=args.tls_key,
                           self_signed_for=str(args.address) if args.tls_self_signed else None,
                           write_cert=args.tls_write_cert)
    except MissingDependency:
        raise ValueError("--tls-self-signed needs the 'cryptography' package "
                         "(pip install 'tcpstack[tls]')") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from tcpstack.link.tun import TUN_F_TSO4, TunDevice, TunError

    try:
        settings = build_settings(args)
        observe.check(args, settings.daemon.workers)
        https = _https(args, settings)
    except ValueError as e:
        return _fail(str(e), 2)
    if https is not None and https.fingerprint is not None:
        log.info("TLS: self-signed certificate for %s, SHA-256 fingerprint %s",
                 args.address, https.fingerprint)
    config, tcp, daemon = settings.stack, settings.stack.tcp, settings.daemon
    creds = None
    if args.user is not None or args.group is not None:
        from tcpstack.privileges import PrivilegeError, resolve_credentials

        if args.user is None:
            return _fail("--group needs --user", 2)
        try:
            creds = resolve_credentials(args.user, args.group)
        except PrivilegeError as e:
            return _fail(str(e), 2)
    host: ipaddress.IPv4Interface | None = None
    if daemon.ipv4:
        host = args.host_address or ipaddress.IPv4Interface(DEFAULT_HOST_ADDRESS)
    host6: ipaddress.IPv6Interface | None = None
    if daemon.ipv6 and ipv6_disabled():
        # IPv6 by default, not by request: where the namespace has none, serve IPv4.
        if args.host_address6 is not None or not daemon.ipv4:
            return _fail("IPv6 is disabled in this network namespace "
                         "(net.ipv6.conf.default.disable_ipv6)", 2)
        log.warning("IPv6 is disabled in this network namespace: serving IPv4 only "
                    "(--no-ipv6 says so without this warning)")
        daemon = dataclasses.replace(daemon, ipv6=False)
        config = dataclasses.replace(config, addresses=tuple(
            a for a in config.addresses if a.version == 4))
    if daemon.ipv6:
        host6 = args.host_address6 or ipaddress.IPv6Interface(DEFAULT_HOST_ADDRESS6)

    # The impairment acts on single IP packets: a TSO super-segment lost or
    # corrupted as a whole would be unrealistic, so --impair turns offloads off.
    offload = args.offload and args.impair is None
    # From the interface's creation on, a stop signal waits (blocked) until the event
    # loop handles it (_serve unblocks it; with --workers, _serve_workers and each
    # worker's _serve): a SIGTERM during start-up then stops the daemon cleanly --
    # exit 0, interface removed -- instead of killing it.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        device = TunDevice.open(args.interface, mtu=daemon.mtu, host_address=host,
                                host_address6=host6,
                                configure=args.configure, offload=offload,
                                txqueuelen=daemon.txqueuelen, queues=daemon.workers)
    except TunError as e:
        return _fail(str(e))
    # What the kernel granted decides how packets are framed and how large the
    # segments we hand it may be.
    tso = TSO_SIZE if device.offloads & TUN_F_TSO4 else 0
    # The MSS comes from the MTU the interface really has: an existing interface
    # the daemon attached to without configuring keeps its own (RFC 9293 3.7.1).
    # It is IPv4's; IPv6 connections advertise 20 bytes less (the Stack does that).
    mss = min(max(device.mtu - 40, 88), 65495)
    if device.mtu != daemon.mtu:
        log.info("%s has MTU %d: MSS %d", device.name, device.mtu, mss)
    config = dataclasses.replace(config, vnet_hdr=device.vnet_hdr,
                                 scatter=getattr(device, "supports_scatter", False),
                                 tcp=dataclasses.replace(tcp, tso_size=tso, mss=mss))
    log.debug("offloads: vnet_hdr=%s features=%#x tso_size=%d", device.vnet_hdr,
              device.offloads, tso)
    resources: observe.Resources | None = None
    try:
        if daemon.workers == 1:
            # Files and sockets are opened while still privileged.
            try:
                resources = observe.Resources.open(
                    args, device.name, observe.stack_addresses(config.addresses),
                    daemon.workers)
            except (OSError, ControlError, ValueError) as e:
                return _fail(str(e))
        if creds is not None:
            from tcpstack.privileges import PrivilegeError, drop_privileges, preload_modules

            preload_modules(("uvloop", "tcpstack.aio.network", "tcpstack.apps",
                             "tcpstack.stack", "tcpstack.link.impair", *observe.PRELOAD))
            try:
                drop_privileges(creds)
            except PrivilegeError as e:
                return _fail(str(e))
            log.info("running as user %s (uid %d, gid %d) with no capabilities",
                     creds.name, creds.uid, creds.gid)
        if device.created or args.configure:
            for own, side in ((args.address, host), (args.address6, host6)):
                if side is not None and own not in side.network:
                    log.warning("%s is outside %s: the kernel will not route to it via %s "
                                "without a route", own, side.network, device.name)
        if daemon.workers > 1:
            return _serve_workers(args, device, settings, config, https)
        return run_event_loop(_serve(args, device, settings, config, https=https,
                                     resources=resources))
    finally:
        if resources is not None:
            resources.close_now()
        try:
            device.close()
        except TunError as e:
            print(f"tcpstack: warning: {e}", file=sys.stderr)


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _serve_workers(args: argparse.Namespace, device: Any, settings: ServeSettings,
                   config: StackConfig, https: Any = None) -> int:
    """Fork one worker per TUN queue; forward SIGINT/SIGTERM to them; exit 0 if all did.

    Each worker runs its own stack on its own queue. The kernel steers every flow to
    one queue by its hash, so a connection lives entirely in one worker; all workers
    share the ISN secret so ISNs stay monotonic per 4-tuple (RFC 6528).
    """
    secret = os.urandom(32)
    if not config.tfo_keys:
        # One Fast Open key for all: a client's next connection may reach another worker.
        config = dataclasses.replace(config, tfo_keys=(os.urandom(KEY_LEN),))
    pids: list[int] = []
    # Stop signals are blocked (cmd_serve) until they can be handled: here until
    # `forward` is installed, in a worker (which inherits the mask) until its event
    # loop's handlers are (see _serve). Else a SIGTERM while a worker is still
    # starting kills it with the default action, and the daemon exits 1.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    for i in range(device.queue_count):
        pid = os.fork()
        if pid == 0:  # worker
            code = 1
            try:
                queue = device.queue(i)
                device.release_queues(keep=i)
                if args.log_format == "text":
                    configure_logging(args.log_level, "text", f"[worker {i}] ")
                code = run_event_loop(_serve(args, queue, settings, config, secret,
                                             https=https))
            except BaseException:
                log.exception("worker %d failed", i)
            finally:
                os._exit(code)
        pids.append(pid)
    device.release_queues()  # the workers hold the queues now

    def forward(signum: int, _frame: object) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    status = 0
    for pid in pids:
        _, wstatus = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(wstatus) != 0:
            status = 1
    return status


async def _serve(args: argparse.Namespace, device: Any, settings: ServeSettings,
                 config: StackConfig, isn_secret: bytes | None = None, *,
                 https: Any = None, resources: observe.Resources | None = None) -> int:
    from tcpstack.aio.devices import DeviceError
    from tcpstack.aio.network import Network
    from tcpstack.apps import DiscardService, EchoService, HttpService
    from tcpstack.stack import Stack

    raw_device = device
    loop = asyncio.get_running_loop()
    if resources is not None:
        # Directly around the TUN: the capture shows what crosses the interface.
        device = resources.wrap_device(device, raw_device.vnet_hdr)
    if args.impair is not None:
        from tcpstack.link.impair import ImpairedDevice, Impairment

        device = ImpairedDevice(device, Impairment(args.impair), loop.time)
        log.info("impairing traffic on %s: %s", raw_device.name, args.impair)
    impaired = args.impair is not None
    stop = asyncio.Event()
    failure: list[DeviceError] = []

    def device_failed(error: DeviceError) -> None:
        failure.append(error)
        stop.set()

    net = Network(device, stack=Stack(config, isn_secret=isn_secret), on_fatal=device_failed)
    app_counters: Counter[str] = Counters()
    limits = settings.limits
    handlers: dict[str, Any] = {
        "http": HttpService(www=args.www, limits=limits, http=settings.http,
                            counters=app_counters),
        "echo": EchoService(limits=limits, counters=app_counters),
        "discard": DiscardService(limits=limits, counters=app_counters),
    }
    # Created without serving, then all made to listen at once: the device is read
    # from the first yield to the event loop on, and SYNs already queued in it (a
    # worker starting after its queue got flows) must not meet a port that is not
    # listening yet -- a RST, "connection refused".
    daemon = settings.daemon
    tfo = (daemon.tfo_queue or daemon.backlog) if daemon.tfo else 0
    servers = []
    for name, port in settings.ports.items():
        if not port:
            continue
        handler = handlers[name]
        if isinstance(handler, (EchoService, DiscardService)):
            # Echo and discard as protocols: no task and streams per connection
            # (tcpstack.apps.protocols), which is most of an idle connection's cost.
            servers.append(await net.create_server(handler.protocol, None, port,
                                                   backlog=daemon.backlog,
                                                   syn_backlog=daemon.syn_backlog,
                                                   fast_open=tfo, start_serving=False))
        else:
            servers.append(await net.start_server(handler, None, port,
                                                  backlog=daemon.backlog,
                                                  syn_backlog=daemon.syn_backlog,
                                                  fast_open=tfo, start_serving=False))
    if https is not None:
        # HTTPS: the same HTTP service behind TLS (asyncio's SSL protocol).
        servers.append(await net.start_server(handlers["http"], None, args.https_port,
                                              ssl=https.context,
                                              backlog=daemon.backlog,
                                              syn_backlog=daemon.syn_backlog,
                                              fast_open=tfo, start_serving=False))
    for server in servers:
        server.listen()
    if resources is not None:
        try:
            await resources.start(net)
        except OSError as e:
            await net.aclose(grace=0.0)
            return _fail(str(e))
    # Everything allocated so far lives as long as the daemon: keep it out of the
    # garbage collector's full passes.
    gc.collect()
    gc.freeze()
    # Connections are freed by reference counting; reference cycles are rare. Full
    # passes over thousands of connections lingering in TIME-WAIT were ~8% of CPU at
    # 4,000 new connections/s, so they run ten times less often; the young
    # generations keep their defaults, so no single collection stalls the loop.
    gc.set_threshold(700, 10, 100)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # They were blocked during start-up (cmd_serve, _serve_workers): one that came
    # meanwhile is delivered now, to the handlers above.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    named = [f"{name} on {port}" for name, port in settings.ports.items() if port]
    if https is not None:
        named.append(f"https on {args.https_port}")
    services = ", ".join(named)
    log.info("tcpstack %s (%s) serving %s via %s (%s): %s", __version__, build_kind(),
             " and ".join(str(a) for a in config.addresses),
             raw_device.name, "created" if raw_device.created else "attached",
             services or "no services")
    if config.md5_keys:
        log.info("TCP-MD5 signatures with %s", ", ".join(Md5Keys(config.md5_keys).peers()))
    if config.ao_keys:
        log.info("TCP-AO with %s", ", ".join(AoKeys(config.ao_keys).peers()))
    if tfo:
        log.info("TCP Fast Open on: at most %d pending per listener, %s key%s", tfo,
                 "given" if args.tfo_key else "random",
                 f", rotated every {config.tfo_key_rotation:g} s"
                 if config.tfo_key_rotation else "")
    grace = settings.daemon.grace
    try:
        await stop.wait()
        if resources is not None:
            await resources.stop_serving()
        if not failure:
            # Draining: with no listener left, a new SYN is answered with RST
            # (RFC 9293 3.10.7.1); open connections may finish within --grace. A
            # second SIGINT/SIGTERM ends the wait early.
            stop.clear()
            for server in servers:
                server.close()
            log.info("shutting down: draining %d connection(s) for up to %gs; "
                     "new connections are refused", len(net.connections), grace)
            await _drain(net, grace, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if failure:
        # Nothing can be sent any more: do not wait for connections to close.
        await net.aclose(grace=0.0)
    else:
        log.info("shutting down: closing %d connection(s)", len(net.connections))
        await net.aclose(grace=min(grace, CLOSE_GRACE))
        if impaired:
            await _drain_impairment(device)
    counters = net.stack.counters
    log.info("stopped; counters: %s",
             ", ".join(f"{k}={v}" for k, v in sorted(counters.items())) or "none")
    log.info("service counters: %s",
             ", ".join(f"{k}={v}" for k, v in sorted(app_counters.items())) or "none")
    if resources is not None and resources.summary():
        log.info("observation: %s", resources.summary())
    if impaired:
        log.info("impairment counters: %s",
                 ", ".join(f"{k}={v}" for k, v in sorted(device.counters.items())) or "none")
    if failure:
        return _fail(f"TUN interface {raw_device.name} went away ({failure[0]})")
    return 0


async def _drain(net: Any, grace: float, stop: asyncio.Event) -> None:
    """Wait until every open connection has finished, ``grace`` seconds pass or ``stop`` is set.

    A connection has finished when our FIN is acknowledged or it has ended
    otherwise (reset, timed out): its handler is done with it.
    """
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Future[Any]] = {
        asyncio.ensure_future(transport.wait_closed()) for transport in net.connections}
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    deadline = loop.time() + grace
    try:
        while pending and not stop.is_set():
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            _done, waiting = await asyncio.wait({*pending, stopped}, timeout=timeout,
                                                return_when=asyncio.FIRST_COMPLETED)
            pending = {w for w in waiting if w is not stopped}
    finally:
        for w in (*pending, stopped):
            w.cancel()


async def _drain_impairment(device: Any, limit: float = 1.0) -> None:
    """Send what the impairment still holds (final FINs/RSTs), for at most ``limit`` s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    for _ in range(1000):
        deadline = device.next_deadline()
        if deadline is None or deadline > end:
            return
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        device.poll()  # inbound packets are no longer wanted


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "log_level", logging.INFO),
                      getattr(args, "log_format", "text"))
    if args.command == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            return cmd_serve(args)
        return 0
    if args.command == "ss":
        return observe_commands.cmd_ss(args)
    if args.command == "trace":
        return observe_commands.cmd_trace(args)
    parser.error(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
