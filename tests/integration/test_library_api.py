"""The library API as a user program would use it: a TUN device, a Network, asyncio
streams for a server (kernel client) and for an active open (kernel server)."""

from __future__ import annotations

import textwrap

from tests.integration.daemon import run_client
from tests.netns import NetNS

PROGRAM = """
import asyncio, hashlib, ipaddress, socket, threading
from tcpstack.aio import Network, open_connection, start_server
from tcpstack.link.tun import TunDevice
from tcpstack.stack import StackConfig

# pyroute2 configures the interface before the event loop starts.
device = TunDevice.open("tcpstack0", host_address=ipaddress.IPv4Interface("10.0.0.1/24"))

# A kernel server on the host side of the TUN, for the stack's active open.
ksrv = socket.socket()
ksrv.bind(("10.0.0.1", 5555))
ksrv.listen()
def kernel_echo():
    conn, _ = ksrv.accept()
    with conn:
        while chunk := conn.recv(65536):
            conn.sendall(chunk)
threading.Thread(target=kernel_echo, daemon=True).start()

async def upper(reader, writer):
    assert writer.get_extra_info("peername")[0] == "10.0.0.1"
    async for line in reader:
        writer.write(line.upper())
        await writer.drain()
    writer.close()
    await writer.wait_closed()

def kernel_client():
    s = socket.create_connection(("10.0.0.2", 8000), timeout=10)
    s.sendall(b"hello\\nworld\\n")
    s.shutdown(socket.SHUT_WR)
    got = b""
    while chunk := s.recv(100):
        got += chunk
    s.close()
    return got

async def main(device):
    net = Network(device, StackConfig())
    server = await start_server(upper, port=8000, network=net)
    served = await asyncio.to_thread(kernel_client)

    reader, writer = await open_connection("10.0.0.1", 5555, network=net)
    assert writer.get_extra_info("sockname")[0] == "10.0.0.2"
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
    server.close()
    await net.aclose()
    emit(served=served.decode(),
         echo_ok=hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest())

try:
    asyncio.run(main(device))
finally:
    device.close()
"""


def test_library_server_and_active_open_against_the_kernel(netns: NetNS) -> None:
    """start_server with a kernel client, and open_connection (active open, RFC 9293
    3.10.1) to a kernel server: 1 MiB echoed byte-exact, half-close, clean teardown."""
    fields = run_client(netns, textwrap.dedent(PROGRAM), timeout=60)
    assert fields == {"served": "HELLO\nWORLD\n", "echo_ok": True}
    assert "tcpstack0" not in netns.ip("-o", "link")
