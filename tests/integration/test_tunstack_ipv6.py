"""``tcpstack.TunStack`` over IPv6 on a real TUN: reached from the kernel over IPv6,
connecting to a kernel server over IPv6, IPv6 alone, and the fallback to IPv4 where
the namespace has IPv6 disabled -- each in a namespace the test creates."""

from __future__ import annotations

import json
import textwrap

from tests.integration.daemon import run_client
from tests.netns import NetNS

COMMON = """
import asyncio, hashlib, socket, threading
import uvloop
import tcpstack

async def upper(reader, writer):
    seen.append((writer.get_extra_info("peername"), writer.get_extra_info("sockname")))
    async for line in reader:
        writer.write(line.upper())
        await writer.drain()
    writer.close()

def kernel_client(family, host, port):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect((host, port))
        peer = list(s.getpeername())
        s.sendall(b"hello\\nworld\\n")
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(100):
            got += chunk
        return got.decode(), peer

def kernel_echo_server(host, port):
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen()
    peers = []
    def serve():
        conn, peer = srv.accept()
        peers.append(list(peer))
        with conn:
            while chunk := conn.recv(65536):
                conn.sendall(chunk)
        srv.close()
    threading.Thread(target=serve, daemon=True).start()
    return peers

seen = []
"""

DUAL = COMMON + """
async def main():
    async with tcpstack.TunStack(interface="tcpstack0") as stack:
        server = await stack.start_server(upper, port=8000)
        names = [list(s.getsockname()) for s in server.sockets]
        served6 = await asyncio.to_thread(kernel_client, socket.AF_INET6, "fd00::2", 8000)
        served4 = await asyncio.to_thread(kernel_client, socket.AF_INET, "10.0.0.2", 8000)

        peers = kernel_echo_server("fd00::1", 5555)
        reader, writer = await stack.open_connection("fd00::1", 5555)
        ends = [list(writer.get_extra_info("sockname")), list(writer.get_extra_info("peername"))]
        family = int(writer.get_extra_info("socket").family)
        payload = bytes(range(256)) * 1024  # 256 KiB
        writer.write(payload)
        writer.write_eof()
        echoed = await reader.readexactly(len(payload))
        writer.close()
        await writer.wait_closed()
        server.close()
    emit(names=names, served6=served6, served4=served4,
         seen=[[list(p), list(s)] for p, s in seen], ends=ends, family=family,
         kernel_peer=peers[0], echo_ok=echoed == payload)

uvloop.run(main())
"""


def test_tunstack_dual_stack_server_and_client_over_ipv6(netns: NetNS) -> None:
    """The defaults (10.0.0.2 and fd00::2 behind 10.0.0.1/24 and fd00::1/64): a kernel
    client reaches the stack's server over IPv6 and IPv4, and the stack connects to a
    kernel server over IPv6; addresses are the 4-tuples asyncio gives for IPv6."""
    f = run_client(netns, textwrap.dedent(DUAL), timeout=60)
    assert f["names"] == [["0.0.0.0", 8000], ["::", 8000, 0, 0]]
    assert f["served6"] == ["HELLO\nWORLD\n", ["fd00::2", 8000, 0, 0]]
    assert f["served4"] == ["HELLO\nWORLD\n", ["10.0.0.2", 8000]]
    (peer6, sock6), (peer4, sock4) = f["seen"]
    assert peer6[0] == "fd00::1" and peer6[2:] == [0, 0] and len(peer6) == 4
    assert sock6 == ["fd00::2", 8000, 0, 0]
    assert peer4[0] == "10.0.0.1" and sock4 == ["10.0.0.2", 8000]
    local, remote = f["ends"]
    assert local[0] == "fd00::2" and local[2:] == [0, 0] and remote == ["fd00::1", 5555, 0, 0]
    assert f["family"] == 10  # AF_INET6
    assert f["kernel_peer"][:2] == ["fd00::2", local[1]]
    assert f["echo_ok"] is True
    assert "tcpstack0" not in netns.ip("-o", "link")


ONLY6 = COMMON + """
import subprocess

async def main():
    async with tcpstack.TunStack(interface="tcpstack6", address=None) as stack:
        addrs = subprocess.run(["ip", "-o", "addr", "show", "dev", "tcpstack6"],
                               capture_output=True, text=True, check=True).stdout
        await stack.start_server(upper, "::", 8000)
        served = await asyncio.to_thread(kernel_client, socket.AF_INET6, "fd00::2", 8000)
        try:
            await stack.open_connection("10.0.0.1", 5555)
            v4 = "connected"
        except OSError as e:
            v4 = e.errno
    emit(inet=" inet " in addrs, inet6="fd00::1/64" in addrs, served=served,
         v4=v4, unreachable=__import__("errno").ENETUNREACH)

uvloop.run(main())
"""


def test_tunstack_ipv6_only(netns: NetNS) -> None:
    """``address=None``: no IPv4 on either side; IPv6 serves, IPv4 is unreachable."""
    f = run_client(netns, textwrap.dedent(ONLY6), timeout=60)
    assert f["inet"] is False and f["inet6"] is True
    assert f["served"] == ["HELLO\nWORLD\n", ["fd00::2", 8000, 0, 0]]
    assert f["v4"] == f["unreachable"]


DISABLED = COMMON + """
import logging
logging.basicConfig(level=logging.WARNING)
from tcpstack.link.tun import TunError

async def main():
    async with tcpstack.TunStack(interface="tcpstack0") as stack:
        await stack.start_server(upper, port=8000)
        served = await asyncio.to_thread(kernel_client, socket.AF_INET, "10.0.0.2", 8000)
        fallback = [stack.address6, stack.host_address6]
    refused = []
    for kwargs in ({"address": None}, {"host_address6": "fd00::1/64"}):
        try:
            async with tcpstack.TunStack(interface="tcpstack1", **kwargs):
                refused.append("started")
        except TunError as e:
            refused.append(str(e))
    emit(served=served, fallback=fallback, refused=refused)

uvloop.run(main())
"""


def test_tunstack_falls_back_to_ipv4_where_ipv6_is_disabled(netns: NetNS) -> None:
    """``net.ipv6.conf.default.disable_ipv6=1`` (a Docker network without IPv6): the
    default IPv6 is dropped with a warning and IPv4 serves; IPv6 asked for fails."""
    netns.run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1"], check=True, capture_output=True)
    proc = netns.exec_python(
        "import json\ndef emit(**f):\n    print('RESULT ' + json.dumps(f), flush=True)\n"
        + textwrap.dedent(DISABLED), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "IPv6 is disabled in this network namespace" in proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    f = json.loads(line[len("RESULT "):])
    assert f["served"] == ["HELLO\nWORLD\n", ["10.0.0.2", 8000]]
    assert f["fallback"] == [None, None]
    assert len(f["refused"]) == 2
    assert all("IPv6 is disabled" in r for r in f["refused"])
    assert "tcpstack1" not in netns.ip("-o", "link")
