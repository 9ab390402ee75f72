"""Accurate ECN (AccECN, RFC 9768) between two tcpstack instances over real TUN
devices, in a private namespace: the daemon (``tcpstack serve``, 10.0.0.2 behind
``tcpstack0``) and a library client (10.0.1.2 behind ``tcpstack1``), the kernel
forwarding between the two TUNs. This machine's kernel cannot do AccECN
(``net.ipv4.tcp_ecn=3`` is refused), so the partner is tcpstack itself.

The daemon's own impairment (``--impair rate=...,queue=...,mark=...``) is the
bottleneck that marks CE above a queue threshold, in one direction at a time:

* a download (the daemon sends) through the marking queue on the daemon's way out:
  the client counts the CE marks and the CE bytes, feeds them back in the ACE
  field, and the daemon counts the marks delivered and reduces, the queue never
  overflowing;
* an upload (the library sends, to the discard service) through the marking
  queue on the daemon's way in: the daemon counts the CE marks, and the client
  learns of them from the ACE field and reduces;
* the handshake's outcomes: AccECN when both ask or agree, classic ECN when our
  SYN asks only for that, nothing when the peer does not do ECN.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from tests.integration.daemon import DaemonFactory, assert_clean_exit, parse_counters, run_client
from tests.netns import NetNS

pytestmark = pytest.mark.root

SIZE = 400_000
# 2 MB/s, CE marks from 8 queued packets, tail drop at 60 (as in the ECN test
# with the kernel, test_tcp_ecn_kernel.py): a sender reacting to the marks keeps
# the queue near the mark; a few hundred kB pass in a fraction of a second.
PATH = "rate=2mbps,queue=60,mark=8,seed=1"
SMALL = 20_000  # the negotiation tests' download

# The client: a library stack on tcpstack1 (10.0.1.2). MODE is "download" (GET
# /bytes/SIZE from the HTTP service), "upload" (SIZE bytes to the discard service,
# then wait for its FIN: everything was acknowledged) or "get" (a small download).
CLIENT = '''
import asyncio, ipaddress
from tcpstack.aio import Network, open_connection
from tcpstack.apps.http import pattern_bytes
from tcpstack.link.tun import TunDevice
from tcpstack.stack import StackConfig
from tcpstack.tcp.config import TcpConfig

device = TunDevice.open("tcpstack1", host_address=ipaddress.IPv4Interface("10.0.1.1/24"))

def plain(value):
    return json.loads(json.dumps(value, default=repr))

async def transfer(reader, writer):
    if MODE == "upload":
        block = bytes(16384)
        sent = 0
        while sent < SIZE:
            writer.write(block)
            sent += len(block)
            await writer.drain()
        writer.write_eof()
        rest = await reader.read()  # the discard service's FIN
        return {"sent": sent, "reply": len(rest)}
    writer.write(b"GET /bytes/%d HTTP/1.0\\r\\n\\r\\n" % SIZE)
    response = await reader.read()
    head, _, body = response.partition(b"\\r\\n\\r\\n")
    return {"status": head.split(b"\\r\\n", 1)[0].decode(errors="replace"),
            "response": len(response), "received": len(body),
            "exact": body == pattern_bytes(SIZE)}

async def main(device):
    net = Network(device, StackConfig(
        addresses=(ipaddress.IPv4Address("10.0.1.2"),), tcp=TcpConfig(ecn=ECN)))
    try:
        reader, writer = await asyncio.wait_for(
            open_connection("10.0.0.2", 9 if MODE == "upload" else 80, network=net), 5)
    except (TimeoutError, OSError) as e:
        await net.aclose()
        emit(connected=False, error=type(e).__name__)
        return
    result = await asyncio.wait_for(transfer(reader, writer), 30)
    info = writer.get_extra_info("tcp_info")
    writer.close()
    counters = dict(net.stack.counters)
    await net.aclose()
    emit(connected=True, **result, ecn_mode=info.get("ecn_mode", "missing"),
         ecn=info.get("ecn"), accecn=plain(info.get("accecn", "missing")),
         counters={k: v for k, v in counters.items()
                   if k.startswith(("tcp_ecn_", "tcp_accecn_", "tcp_retrans"))})

try:
    asyncio.run(main(device))
finally:
    device.close()
'''


def _forwarding(netns: NetNS) -> None:
    netns.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)


def _client(netns: NetNS, mode: str, ecn: str, size: int) -> dict[str, Any]:
    body = f"MODE = {mode!r}\nECN = {ecn!r}\nSIZE = {size}\n" + textwrap.dedent(CLIENT)
    fields = run_client(netns, body, timeout=60)
    assert fields["connected"] is True, fields
    return fields


def _accecn(fields: dict[str, Any]) -> dict[str, Any]:
    """The client's ``tcp_info["accecn"]``, checked to be in AccECN mode."""
    assert fields["ecn_mode"] == "accecn", fields
    accecn = fields["accecn"]
    assert isinstance(accecn, dict), fields
    return accecn


def test_download_through_a_marking_queue_feeds_ce_back_and_the_daemon_slows_down(
        netns: NetNS, serve: DaemonFactory) -> None:
    """The daemon sends 400 kB through a queue marking CE on its way out to a client
    asking for AccECN: the client counts the CE packets and bytes, the daemon counts
    the marks fed back by the ACE field and reduces its window, so the queue never
    overflows (no tail drop, nothing retransmitted)."""
    _forwarding(netns)
    daemon = serve("--impair", f"{PATH},dir=out")
    fields = _client(netns, "download", "accecn", SIZE)
    result = daemon.stop()
    assert_clean_exit(result)
    stack = parse_counters(result.log)
    path = parse_counters(result.log, "impairment counters")

    assert fields["status"].startswith("HTTP/1.") and " 200 " in fields["status"], fields
    assert fields["received"] == SIZE and fields["exact"] is True, fields
    accecn = _accecn(fields)
    assert accecn["ect"] is True, accecn
    assert accecn["ce_received"] > 0, (accecn, path)
    received = accecn["bytes_received"]
    assert received["ce"] > 0, accecn
    assert received["ect1"] == 0, accecn  # the daemon marks ECT(0); the queue only CE
    assert received["ect0"] > 0, accecn
    # Every byte came once, ECT(0) or CE: nothing lost, nothing retransmitted.
    assert path.get("out_tail_dropped", 0) == 0, path
    retransmitted = {k: v for k, v in stack.items() if k.startswith("tcp_retrans_")}
    assert not retransmitted, (retransmitted, stack, path)
    assert received["ect0"] + received["ce"] == fields["response"], (accecn, fields)
    # Nothing lost on the way: the client saw every mark the queue made.
    assert path.get("out_ce_marked", 0) > 0, path
    assert accecn["ce_received"] == path["out_ce_marked"], (accecn, path)
    assert fields["counters"].get("tcp_ecn_ce_received", 0) == accecn["ce_received"], fields

    assert stack.get("tcp_accecn_negotiated", 0) >= 1, stack
    assert stack.get("tcp_accecn_ce_delivered", 0) > 0, stack
    assert stack.get("tcp_ecn_ece_reduced", 0) > 0, stack


def test_upload_through_a_marking_queue_is_fed_back_and_the_client_slows_down(
        netns: NetNS, serve: DaemonFactory) -> None:
    """The client sends 400 kB to the discard service through a queue marking CE on
    the daemon's way in: the daemon counts the CE packets and feeds them back in the
    ACE field, and the client (the sender) counts them delivered and reduces."""
    _forwarding(netns)
    daemon = serve("--impair", f"{PATH},dir=in")
    fields = _client(netns, "upload", "accecn", SIZE)
    result = daemon.stop()
    assert_clean_exit(result)
    stack = parse_counters(result.log)
    path = parse_counters(result.log, "impairment counters")

    assert fields["sent"] >= SIZE and fields["reply"] == 0, fields
    accecn = _accecn(fields)
    assert accecn["ect"] is True, accecn
    assert accecn["ce_delivered"] > 0, (accecn, path)
    client = fields["counters"]
    assert client.get("tcp_ecn_ece_reduced", 0) > 0, fields
    assert client.get("tcp_accecn_ce_delivered", 0) > 0, fields

    assert path.get("in_ce_marked", 0) > 0, path
    assert stack.get("tcp_accecn_negotiated", 0) >= 1, stack
    assert stack.get("tcp_ecn_ce_received", 0) > 0, stack
    # The client's reaction keeps the queue from overflowing: nothing dropped, nothing
    # sent twice, and the daemon saw every mark the queue made.
    assert path.get("in_tail_dropped", 0) == 0, (path, fields)
    retransmitted = {k: v for k, v in client.items() if k.startswith("tcp_retrans")}
    assert not retransmitted, (retransmitted, fields, path)
    assert stack["tcp_ecn_ce_received"] == path["in_ce_marked"], (stack, path)


@pytest.mark.parametrize(("client_ecn", "daemon_args", "expected"), [
    ("accecn", ("--ecn", "off"), None),
    ("on", (), "classic"),
    ("accecn", (), "accecn"),
    ("accecn", ("--ecn", "accecn"), "accecn"),
], ids=["accecn-vs-off", "classic-vs-passive", "accecn-vs-passive", "accecn-vs-accecn"])
def test_negotiation_falls_back_to_what_the_peer_does(
        netns: NetNS, serve: DaemonFactory, client_ecn: str, daemon_args: tuple[str, ...],
        expected: str | None) -> None:
    """A client asking for AccECN gets it from a daemon that agrees (by default,
    passively, or asking itself) and no ECN at all from one with ECN off; a client
    asking for classic ECN gets classic ECN. Data flows in every mode."""
    _forwarding(netns)
    daemon = serve(*daemon_args)
    fields = _client(netns, "get", client_ecn, SMALL)
    result = daemon.stop()
    assert_clean_exit(result)
    stack = parse_counters(result.log)

    assert fields["received"] == SMALL and fields["exact"] is True, fields
    assert fields["ecn_mode"] == expected, fields
    if expected == "accecn":
        assert isinstance(fields["accecn"], dict), fields
        assert fields["accecn"]["ect"] is True, fields
        assert stack.get("tcp_accecn_negotiated", 0) >= 1, stack
    else:  # tcp_info's "ecn": classic ECN (RFC 3168) in use
        assert fields["ecn"] is (expected == "classic"), fields
        assert fields["accecn"] is None, fields
        assert stack.get("tcp_accecn_negotiated", 0) == 0, stack
