"""ECN (RFC 3168) end to end with the Linux kernel (``net.ipv4.tcp_ecn=1`` in the
test's namespace) through the daemon's own impairment marking CE above a queue
threshold (``--impair rate=...,queue=...,mark=...``), each direction in turn:

* our sender reacts to the kernel's ECE: a download through a marking bottleneck
  loses nothing to the queue (no tail drops, no retransmissions), the stack
  counting the reductions ECE caused;
* the kernel's sender reacts to our ECE: an upload through the marking bottleneck
  (in the other direction) is reported by the kernel's own TCP_INFO as ECN-capable
  with CE-marked deliveries (``tcpi_delivered_ce``, counted from our ECE echoes),
  and it answers its reductions with CWR.
"""

from __future__ import annotations

import textwrap

import pytest

from tests.integration.daemon import (
    STACK_ADDRESS,
    DaemonFactory,
    assert_clean_exit,
    parse_counters,
    run_client,
)
from tests.netns import NetNS

pytestmark = pytest.mark.root

SIZE = 6_000_000
# 2 MB/s, ECN marks from 8 queued packets, tail drop at 60: our sender keeps the
# queue near the mark (without its reaction to ECE, this queue overflows).
PATH = "rate=2mbps,queue=60,mark=8,seed=1"
# For the kernel's sender, a queue its initial slow start cannot overflow before
# the first echo reaches it: what shows its reaction is its own count of CE
# deliveries (from our ECE) and the CWR it sends after each reduction.
PATH_IN = "rate=2mbps,queue=200,mark=10,seed=1"


def _ecn_on(netns: NetNS) -> None:
    netns.run(["sysctl", "-qw", "net.ipv4.tcp_ecn=1"], check=True)


def test_our_sender_slows_down_on_the_kernels_ece(netns: NetNS,
                                                  serve: DaemonFactory) -> None:
    _ecn_on(netns)
    daemon = serve("--impair", f"{PATH},dir=out")
    fields = run_client(netns, textwrap.dedent(f'''
        import socket, struct
        s = socket.create_connection(("{STACK_ADDRESS}", 80), timeout=30)
        s.sendall(b"GET /bytes/{SIZE} HTTP/1.0\\r\\n\\r\\n")
        got = 0
        while chunk := s.recv(1 << 16):
            got += len(chunk)
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        s.close()
        emit(received=got, ecn=bool(info[5] & 8))  # tcpi_options & TCPI_OPT_ECN
    '''), timeout=90)
    assert fields["ecn"] is True, fields
    assert fields["received"] > SIZE, fields  # the body and the head
    result = daemon.stop()
    assert_clean_exit(result)
    stack = parse_counters(result.log)
    path = parse_counters(result.log, "impairment counters")
    assert path.get("out_ce_marked", 0) > 0, path
    assert stack.get("tcp_ecn_ece_reduced", 0) > 0, stack
    assert path.get("out_tail_dropped", 0) == 0, path
    retransmitted = {k: v for k, v in stack.items() if k.startswith("tcp_retrans_")}
    assert not retransmitted, retransmitted


@pytest.mark.parametrize("ecn", ["passive", "off"])
def test_the_kernels_sender_slows_down_on_our_ece(netns: NetNS, serve: DaemonFactory,
                                                  ecn: str) -> None:
    """With ECN (our default, passive) the kernel's upload through the marking queue
    gets our ECE for the CE marks and answers each reduction with CWR (RFC 3168
    6.1.2); with ``--ecn off`` on our side nothing is ECN-capable, nothing marked."""
    _ecn_on(netns)
    daemon = serve("--impair", f"{PATH_IN},dir=in", "--ecn", ecn)
    fields = run_client(netns, textwrap.dedent(f'''
        import socket, struct
        s = socket.create_connection(("{STACK_ADDRESS}", 9), timeout=30)
        block = bytes(65536)
        sent = 0
        while sent < {SIZE}:
            s.sendall(block)
            sent += len(block)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(30)
        s.recv(1)  # the discard service's FIN: everything was acknowledged
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
        s.close()
        # struct tcp_info: tcpi_options at byte 5, tcpi_delivered_ce at 196
        # (linux/tcp.h).
        emit(ecn=bool(info[5] & 8), delivered_ce=struct.unpack_from("=I", info, 196)[0])
    '''), timeout=90)
    result = daemon.stop()
    assert_clean_exit(result)
    stack = parse_counters(result.log)
    path = parse_counters(result.log, "impairment counters")
    if ecn == "off":
        assert fields["ecn"] is False and fields["delivered_ce"] == 0, fields
        assert path.get("in_ce_marked", 0) == 0, path
        assert stack.get("tcp_ecn_ce_received", 0) == 0, stack
        return
    assert fields["ecn"] is True, fields
    assert fields["delivered_ce"] > 0, fields
    assert path.get("in_ce_marked", 0) > 0, path
    assert stack.get("tcp_ecn_ce_received", 0) > 0, stack
    assert stack.get("tcp_ecn_cwr_received", 0) > 0, stack  # the kernel reduced
