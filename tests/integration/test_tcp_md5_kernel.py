"""TCP-MD5 (RFC 2385) against the Linux kernel's own implementation (``TCP_MD5SIG``),
both ways, in a private namespace.

* The kernel as client: ``tcpstack serve --md5-key 10.0.0.5=KEY``; a kernel socket
  bound to 10.0.0.5 with the key fetches a page, one with a wrong key and one with
  none cannot connect (dropped and counted by reason), and unkeyed peers (10.0.0.1)
  are served as before.
* The kernel as server: the library's ``open_connection`` with the key in its
  ``StackConfig`` exchanges 1 MiB with a kernel listener holding the key; with the
  wrong key the kernel drops our SYNs and counts them (``TCPMD5Failure``).
"""

from __future__ import annotations

import textwrap

import pytest

from tests.integration.daemon import (
    INTERFACE,
    STACK_ADDRESS,
    DaemonFactory,
    assert_clean_exit,
    parse_counters,
    run_client,
)
from tests.netns import NetNS

pytestmark = pytest.mark.root

KEY = "kernel and tcpstack share this"
KEYED_PEER = "10.0.0.5"

# Kernel sockets with TCP_MD5SIG (struct tcp_md5sig: a sockaddr_storage for the
# peer, flags, prefix length, key length, ifindex, 80 bytes of key).
_KERNEL_MD5 = '''
import socket, struct
TCP_MD5SIG = 14
def md5sig(peer, key):
    addr = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 0) + socket.inet_aton(peer)
    return (addr.ljust(128, b"\\0") + struct.pack("=BBHI", 0, 0, len(key), 0)
            + key.ljust(80, b"\\0"))
def netstat(name):
    lines = open("/proc/net/netstat").read().splitlines()
    for head, values in zip(lines[::2], lines[1::2]):
        if head.startswith("TcpExt:"):
            return int(dict(zip(head.split()[1:], values.split()[1:]))[name])
'''


def test_kernel_client_with_the_key_is_served_and_others_are_refused(
        netns: NetNS, serve: DaemonFactory) -> None:
    """The kernel verifies our signatures (its socket drops unsigned or wrongly signed
    segments), we verify its: a page comes back whole. A wrong key and a missing
    signature get no answer at all, each drop counted by its reason; an unkeyed
    address is served unsigned."""
    daemon = serve("--md5-key", f"{KEYED_PEER}={KEY}")
    netns.ip("addr", "add", f"{KEYED_PEER}/24", "dev", INTERFACE)
    fields = run_client(netns, _KERNEL_MD5 + textwrap.dedent(f'''
        def fetch(key, source):
            s = socket.socket()
            if key is not None:
                s.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, md5sig("{STACK_ADDRESS}", key))
            s.bind((source, 0))
            s.settimeout(3)
            try:
                s.connect(("{STACK_ADDRESS}", 80))
            except OSError as e:
                return type(e).__name__
            s.sendall(b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
            body = b""
            while chunk := s.recv(65536):
                body += chunk
            s.close()
            return body.split(b"\\r\\n")[0].decode()
        emit(signed=fetch({KEY.encode()!r}, "{KEYED_PEER}"),
             wrong=fetch(b"not the key", "{KEYED_PEER}"),
             unsigned=fetch(None, "{KEYED_PEER}"),
             other_peer=fetch(None, "10.0.0.1"),
             kernel_md5_failures=netstat("TCPMD5Failure"),
             kernel_md5_missing=netstat("TCPMD5NotFound"))
    '''), timeout=60)
    assert fields["signed"] == "HTTP/1.1 200 OK", fields
    assert fields["wrong"] == "TimeoutError" and fields["unsigned"] == "TimeoutError", fields
    assert fields["other_peer"] == "HTTP/1.1 200 OK", fields
    # Nothing we sent failed the kernel's checks.
    assert fields["kernel_md5_failures"] == 0 and fields["kernel_md5_missing"] == 0, fields
    result = daemon.stop()
    assert_clean_exit(result)
    assert f"TCP-MD5 signatures with {KEYED_PEER}" in result.log
    assert KEY not in result.log
    counters = parse_counters(result.log)
    # Each refused connect is a SYN and its retransmissions within 3 s.
    assert counters.get("tcp_md5_failure", 0) >= 1, counters
    assert counters.get("tcp_md5_missing", 0) >= 1, counters
    assert counters.get("tcp_md5_unexpected", 0) == 0, counters


LIBRARY_CLIENT = _KERNEL_MD5 + '''
import asyncio, hashlib, ipaddress, threading
from tcpstack.aio import Network, open_connection
from tcpstack.link.tun import TunDevice
from tcpstack.stack import StackConfig

device = TunDevice.open("tcpstack0", host_address=ipaddress.IPv4Interface("10.0.0.1/24"))

srv = socket.socket()
srv.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, md5sig("10.0.0.2", KEY))
srv.bind(("10.0.0.1", 5555))
srv.listen()
def kernel_echo():
    conn, _ = srv.accept()
    with conn:
        while chunk := conn.recv(65536):
            conn.sendall(chunk)
threading.Thread(target=kernel_echo, daemon=True).start()

async def main(device):
    net = Network(device, StackConfig(md5_keys=(("10.0.0.1", CLIENT_KEY),)))
    try:
        reader, writer = await asyncio.wait_for(open_connection("10.0.0.1", 5555, network=net), 4)
    except (TimeoutError, OSError) as e:
        await net.aclose()
        emit(connected=False, error=type(e).__name__, kernel_md5_failures=netstat("TCPMD5Failure"))
        return
    info = writer.get_extra_info("tcp_info")
    payload = bytes(range(256)) * 4096  # 1 MiB
    async def pump():
        for i in range(0, len(payload), 65536):
            writer.write(payload[i:i + 65536])
            await writer.drain()
        writer.write_eof()
    task = asyncio.create_task(pump())
    echoed = await reader.readexactly(len(payload))
    await task
    writer.close()
    await writer.wait_closed()
    counters = dict(net.stack.counters)
    await net.aclose()
    emit(connected=True, md5=info["md5"], sack=info["sack"],
         echo_ok=hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest(),
         dropped={k: v for k, v in counters.items() if k.startswith("tcp_md5")},
         kernel_md5_failures=netstat("TCPMD5Failure"))

try:
    asyncio.run(main(device))
finally:
    device.close()
'''


def test_library_client_with_the_key_talks_to_a_kernel_server(netns: NetNS) -> None:
    """The active open signs its SYN (no timestamps, as Linux's), the kernel server
    answers signed, 1 MiB echoes byte-exact with every segment checked both ways."""
    body = f"KEY = {KEY.encode()!r}\nCLIENT_KEY = KEY\n" + LIBRARY_CLIENT
    fields = run_client(netns, body, timeout=60)
    assert fields == {"connected": True, "md5": True, "sack": True, "echo_ok": True,
                      "dropped": {}, "kernel_md5_failures": 0}, fields


def test_library_client_with_a_wrong_key_is_refused_by_the_kernel(netns: NetNS) -> None:
    """The kernel drops our SYNs signed with another key and counts them."""
    body = f"KEY = {KEY.encode()!r}\nCLIENT_KEY = b'some other key'\n" + LIBRARY_CLIENT
    fields = run_client(netns, body, timeout=60)
    assert fields["connected"] is False and fields["error"] == "TimeoutError", fields
    assert fields["kernel_md5_failures"] >= 1, fields
