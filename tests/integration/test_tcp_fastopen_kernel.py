"""TCP Fast Open (RFC 7413) with the Linux kernel as the peer, in the test's namespace:

* curl (``--tcp-fastopen``, with ``net.ipv4.tcp_fastopen=1``) against the daemon
  (``--tfo``): the first request gets a cookie, the second goes in the SYN and is
  answered; the kernel's own counters say its SYN's data was acknowledged;
* a cookie the daemon no longer knows (restarted with another ``--tfo-key``) falls
  back to the ordinary handshake -- the request still answered, a fresh cookie
  given -- and one made with the key now given as the backup is taken;
* the library's ``open_connection(fast_open=True)`` against a kernel server with
  ``TCP_FASTOPEN``: the second connection's SYN carries the request, as the
  kernel's ``TCPFastOpenPassive`` counts.
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

KEY_A = "00112233-44556677-8899aabb-ccddeeff"
KEY_B = "ffeeddcc-bbaa9988-77665544-33221100"

_NETSTAT = '''
def netstat(name):
    lines = open("/proc/net/netstat").read().splitlines()
    for head, values in zip(lines[::2], lines[1::2]):
        if head.startswith("TcpExt:"):
            return int(dict(zip(head.split()[1:], values.split()[1:])).get(name, 0))
'''


def _fastopen(netns: NetNS, mode: int) -> None:
    netns.run(["sysctl", "-qw", f"net.ipv4.tcp_fastopen={mode}"], check=True)


def _curl(netns: NetNS, n: int) -> dict[str, object]:
    """``n`` requests by curl with Fast Open, one connection each, in turn; the bodies'
    lengths and the kernel's Fast Open counters after them."""
    return run_client(netns, _NETSTAT + textwrap.dedent(f'''
        import subprocess
        sizes = []
        for i in range({n}):
            out = subprocess.run(["curl", "-sS", "--tcp-fastopen", "--max-time", "10",
                                  "http://{STACK_ADDRESS}/bytes/5000"],
                                 capture_output=True, check=True).stdout
            sizes.append(len(out))
        emit(sizes=sizes, active=netstat("TCPFastOpenActive"),
             active_fail=netstat("TCPFastOpenActiveFail"))
    '''), timeout=60)


def test_curl_gets_a_cookie_then_sends_its_request_in_the_syn(netns: NetNS,
                                                             serve: DaemonFactory) -> None:
    _fastopen(netns, 1)
    daemon = serve("--tfo")
    fields = _curl(netns, 3)
    assert fields["sizes"] == [5000, 5000, 5000], fields
    # The first connection asked for a cookie; the next two sent their request in
    # the SYN, and we acknowledged it there.
    assert fields["active"] == 2 and fields["active_fail"] == 0, fields
    result = daemon.stop()
    assert_clean_exit(result)
    counters = parse_counters(result.log)
    assert counters.get("tcp_tfo_cookie_requested") == 1, counters
    assert counters.get("tcp_tfo_passive") == 2, counters
    assert counters.get("tcp_tfo_passive_fail", 0) == 0, counters


def test_an_unknown_cookie_falls_back_and_the_backup_key_is_taken(
        netns: NetNS, serve: DaemonFactory) -> None:
    _fastopen(netns, 1)
    first = serve("--tfo", "--tfo-key", KEY_A)
    assert _curl(netns, 2)["active"] == 1  # a cookie of key A, then used
    assert_clean_exit(first.stop())
    # Key B alone: the kernel's cookie (key A) is not ours any more. The request
    # still comes through (after the handshake), with a fresh cookie given, which
    # the next request uses.
    second = serve("--tfo", "--tfo-key", KEY_B)
    fields = _curl(netns, 2)
    assert fields["sizes"] == [5000, 5000], fields
    assert fields["active_fail"] == 1 and fields["active"] == 2, fields
    result = second.stop()
    assert_clean_exit(result)
    counters = parse_counters(result.log)
    assert counters.get("tcp_tfo_passive_fail") == 1, counters
    assert counters.get("tcp_tfo_passive") == 1, counters
    # Key A again as the primary, B as the backup: the cookie of key B is valid (and
    # replaced by a fresh one of key A).
    third = serve("--tfo", "--tfo-key", f"{KEY_A},{KEY_B}")
    fields = _curl(netns, 1)
    assert fields["sizes"] == [5000] and fields["active"] == 3, fields
    result = third.stop()
    counters = parse_counters(result.log)
    assert counters.get("tcp_tfo_passive") == 1, counters
    assert counters.get("tcp_tfo_passive_alt_key") == 1, counters


def test_a_listener_without_fast_open_ignores_the_option(netns: NetNS,
                                                         serve: DaemonFactory) -> None:
    """Without ``--tfo`` nothing changes for curl: no cookie, requests after the
    handshake, all answered."""
    _fastopen(netns, 1)
    daemon = serve()
    fields = _curl(netns, 2)
    assert fields == {"sizes": [5000, 5000], "active": 0, "active_fail": 0}, fields
    counters = parse_counters(daemon.stop().log)
    assert not {k: v for k, v in counters.items() if k.startswith("tcp_tfo")}, counters


LIBRARY_CLIENT = _NETSTAT + '''
import asyncio, ipaddress, socket, threading
from tcpstack.aio import Network, open_connection
from tcpstack.link.tun import TunDevice

device = TunDevice.open("tcpstack0", host_address=ipaddress.IPv4Interface("10.0.0.1/24"))

srv = socket.socket()
srv.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 16)
srv.bind(("10.0.0.1", 5555))
srv.listen()
def kernel_server():
    while True:
        conn, _ = srv.accept()
        with conn:
            request = conn.recv(100)
            conn.sendall(b"reply to " + request)
threading.Thread(target=kernel_server, daemon=True).start()

async def one(net):
    reader, writer = await open_connection("10.0.0.1", 5555, network=net, fast_open=True)
    writer.write(b"hello")  # before any await: it goes in the SYN if it can
    reply = await asyncio.wait_for(reader.read(100), 5)
    info = writer.get_extra_info("tcp_info")
    writer.close()
    await writer.wait_closed()
    return reply.decode(), info["fastopen"]

async def main(device):
    net = Network(device)
    try:
        results = [await one(net) for _ in range(3)]
        counters = {k: v for k, v in net.stack.counters.items() if k.startswith("tcp_tfo")}
    finally:
        await net.aclose()
    emit(results=results, counters=counters, passive=netstat("TCPFastOpenPassive"),
         cookie_reqs=netstat("TCPFastOpenCookieReqd"))

try:
    asyncio.run(main(device))
finally:
    device.close()
'''


def test_library_client_sends_its_request_in_the_syn_to_a_kernel_server(
        netns: NetNS) -> None:
    _fastopen(netns, 2)  # the kernel as a Fast Open server
    fields = run_client(netns, LIBRARY_CLIENT, timeout=60)
    assert fields["results"] == [["reply to hello", "cookie received"],
                                 ["reply to hello", "data acked"],
                                 ["reply to hello", "data acked"]], fields
    assert fields["passive"] == 2 and fields["cookie_reqs"] == 1, fields
    assert fields["counters"] == {"tcp_tfo_cookie_request_sent": 1,
                                  "tcp_tfo_cookie_received": 1,
                                  "tcp_tfo_syn_data_sent": 2, "tcp_tfo_active": 2}, fields
