"""TCP-AO (RFC 5925) between two tcpstack instances over real TUN devices, in a
private namespace: the daemon (``tcpstack serve --ao-key``, 10.0.0.2 behind
``tcpstack0``) and a library client (10.0.1.2 behind ``tcpstack1``), the kernel
forwarding between the two TUNs. This machine's kernel has no TCP-AO, so the
interop partner is ourselves; the RFC 9235 vectors pin the algorithms
(``tests/unit/test_tcp_ao.py``).
"""

from __future__ import annotations

import textwrap

import pytest

from tests.integration.daemon import DaemonFactory, assert_clean_exit, parse_counters, run_client
from tests.netns import NetNS

pytestmark = pytest.mark.root

KEY = "two stacks share this"
SIZE = 300_000

CLIENT = '''
import asyncio, ipaddress
from tcpstack.aio import Network, open_connection
from tcpstack.link.tun import TunDevice
from tcpstack.stack import StackConfig
from tcpstack.tcp.aokeys import Mkt

device = TunDevice.open("tcpstack1", host_address=ipaddress.IPv4Interface("10.0.1.1/24"))

async def main(device):
    net = Network(device, StackConfig(
        addresses=(ipaddress.IPv4Address("10.0.1.2"),),
        ao_keys=(Mkt.make("10.0.0.2", 2, 1, CLIENT_KEY, "aes-128-cmac"),)))
    try:
        reader, writer = await asyncio.wait_for(
            open_connection("10.0.0.2", 80, network=net), 4)
    except (TimeoutError, OSError) as e:
        await net.aclose()
        emit(connected=False, error=type(e).__name__)
        return
    info = writer.get_extra_info("tcp_info")
    writer.write(b"GET /bytes/%d HTTP/1.0\\r\\n\\r\\n" % SIZE)
    body = await reader.read()
    writer.close()
    counters = dict(net.stack.counters)
    await net.aclose()
    emit(connected=True, ao=info["ao"], received=len(body.split(b"\\r\\n\\r\\n", 1)[1]),
         dropped={k: v for k, v in counters.items() if k.startswith("tcp_ao_")})

try:
    asyncio.run(main(device))
finally:
    device.close()
'''


def _forwarding(netns: NetNS) -> None:
    netns.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)


@pytest.mark.parametrize("client_key", [KEY, "not the key"])
def test_two_stacks_talk_tcp_ao_over_tuns(netns: NetNS, serve: DaemonFactory,
                                          client_key: str) -> None:
    """With the same master key a 300 kB download is authenticated end to end; with
    another the daemon drops every SYN (``tcp_ao_failure``), sends no RST, and the
    client's connect times out."""
    _forwarding(netns)
    daemon = serve("--ao-key", f"10.0.1.2=1:2:aes-128-cmac:{KEY}")
    body = (f"CLIENT_KEY = {client_key.encode()!r}\nSIZE = {SIZE}\n"
            + textwrap.dedent(CLIENT))
    fields = run_client(netns, body, timeout=60)
    result = daemon.stop()
    assert_clean_exit(result)
    assert KEY not in result.log
    assert "TCP-AO with 10.0.1.2 (1/2, aes-128-cmac)" in result.log
    counters = parse_counters(result.log)
    if client_key != KEY:
        assert fields == {"connected": False, "error": "TimeoutError"}, fields
        assert counters.get("tcp_ao_failure", 0) >= 1, counters
        assert counters.get("tcp_rst_sent", 0) == 0, counters
        return
    assert fields["connected"] is True, fields
    assert fields["ao"] == {"keyid": 2, "rnext": 1, "algorithm": "aes-128-cmac",
                            "options_covered": True}, fields
    assert fields["received"] == SIZE and fields["dropped"] == {}, fields
    assert not {k: v for k, v in counters.items() if k.startswith("tcp_ao_")}, counters
