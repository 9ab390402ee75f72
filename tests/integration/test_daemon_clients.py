"""``tcpstack serve`` under heavier client use: concurrency, bulk upload, half-close, ISNs.

Clients are Python kernel sockets in one child interpreter inside the test's
namespace (see :func:`tests.integration.daemon.run_client`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon import (
    FAMILIES,
    INTERFACE,
    STACK_ADDRESS,
    Daemon,
    DaemonFactory,
    Family,
    assert_clean_exit,
    run_client,
)
from tests.netns import NetNS

pytestmark = pytest.mark.root


@pytest.fixture
def daemon(netns: NetNS, tmp_path: Path) -> Iterator[Daemon]:
    """The daemon with default flags; it must shut down cleanly at the end."""
    factory = DaemonFactory(netns, tmp_path)
    try:
        d = factory()
        yield d
        assert_clean_exit(d.stop())
    finally:
        factory.stop_all()


def test_100_concurrent_echo_connections_are_each_byte_exact(
    netns: NetNS, daemon: Daemon
) -> None:
    fields = run_client(
        netns,
        f"""
        import asyncio, hashlib, time

        N, SIZE = 100, 64 * 1024

        def payload(i):
            # Distinct per connection: a SHA-256 counter stream seeded by i.
            out = bytearray()
            k = 0
            while len(out) < SIZE:
                out += hashlib.sha256(b"%d:%d" % (i, k)).digest()
                k += 1
            return bytes(out[:SIZE])

        async def one(i):
            data = payload(i)
            reader, writer = await asyncio.open_connection("{STACK_ADDRESS}", 7)
            async def send():
                for pos in range(0, SIZE, 4096):
                    writer.write(data[pos:pos + 4096])
                    await writer.drain()
            sender = asyncio.create_task(send())
            got = await reader.readexactly(SIZE)
            await sender
            writer.write_eof()
            tail = await reader.read()  # EOF after the echo server sees ours
            writer.close()
            await writer.wait_closed()
            return got == data and tail == b""

        async def main():
            t0 = time.monotonic()
            results = await asyncio.wait_for(
                asyncio.gather(*(one(i) for i in range(N)), return_exceptions=True), 55)
            bad = [(i, repr(r)) for i, r in enumerate(results) if r is not True]
            return time.monotonic() - t0, bad

        elapsed, bad = asyncio.run(main())
        emit(elapsed=elapsed, bad=bad[:10], nbad=len(bad))
        """,
        timeout=70,
    )
    assert fields["nbad"] == 0, fields["bad"]
    assert fields["elapsed"] < 60


def test_isns_of_50_connections_are_distinct_and_unpredictable(
    netns: NetNS, daemon: Daemon
) -> None:
    fields = run_client(
        netns,
        f"""
        import select, socket, struct, time

        ETH_P_ALL = 0x0003
        cap = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        cap.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        cap.bind(("{INTERFACE}", 0))
        stack = socket.inet_aton("{STACK_ADDRESS}")

        ports = []
        for _ in range(50):
            s = socket.create_connection(("{STACK_ADDRESS}", 80), timeout=5)
            ports.append(s.getsockname()[1])
            s.close()

        isn_by_port = {{}}
        deadline = time.monotonic() + 5
        while len(isn_by_port) < len(ports) and time.monotonic() < deadline:
            if not select.select([cap], [], [], 0.2)[0]:
                continue
            pkt = cap.recv(65535)
            if len(pkt) < 40 or pkt[0] >> 4 != 4 or pkt[9] != 6 or pkt[12:16] != stack:
                continue
            ihl = (pkt[0] & 0x0F) * 4
            sport, dport, seq = struct.unpack_from("!HHI", pkt, ihl)
            flags = pkt[ihl + 13]
            if flags & 0x12 == 0x12 and dport not in isn_by_port:  # SYN+ACK
                isn_by_port[dport] = seq
        emit(ports=ports, isns=[isn_by_port[p] for p in ports if p in isn_by_port],
             captured=len(isn_by_port))
        """,
        timeout=40,
    )
    assert len(set(fields["ports"])) == 50
    assert fields["captured"] == 50, "not every connection's SYN-ACK was captured"
    isns: list[int] = fields["isns"]
    assert len(set(isns)) == 50, "ISNs repeat"
    diffs = [(b - a) % (1 << 32) for a, b in itertools.pairwise(isns)]
    assert len(set(diffs)) > 1, f"ISNs form an arithmetic sequence (step {diffs[0]})"
    assert len(set(diffs)) > 40, f"ISN increments barely vary: {sorted(set(diffs))}"
    # RFC 6528: a keyed hash of the 4-tuple spreads ISNs over the whole 32-bit
    # space, so the top nibble of 50 of them takes many values (a clock plus a
    # small random increment would keep it nearly constant).
    assert len({isn >> 28 for isn in isns}) >= 8, [hex(i) for i in isns]


def test_upload_of_20mib_to_discard_completes(netns: NetNS, daemon: Daemon) -> None:
    fields = run_client(
        netns,
        f"""
        import socket, time
        SIZE = 20 * 1024 * 1024
        block = bytes(range(256)) * 256  # 64 KiB
        t0 = time.monotonic()
        s = socket.create_connection(("{STACK_ADDRESS}", 9), timeout=30)
        sent = 0
        while sent < SIZE:
            s.sendall(block)
            sent += len(block)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
        s.close()
        emit(sent=sent, reply=len(reply), elapsed=time.monotonic() - t0)
        """,
        timeout=70,
    )
    assert fields["sent"] == 20 * 1024 * 1024
    assert fields["reply"] == 0, "discard sent data back"
    # The EOF came after discard read everything up to our FIN, in order.
    assert fields["elapsed"] < 60


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_half_close_still_receives_all_echoed_data_then_eof(
    netns: NetNS, daemon: Daemon, family: Family
) -> None:
    fields = run_client(
        netns,
        f"""
        import hashlib, socket, threading, time
        SIZE = 2 * 1024 * 1024
        data = b"".join(hashlib.sha256(b"%d" % k).digest() for k in range(SIZE // 32))
        s = socket.create_connection(("{family.address}", 7), timeout=20)
        shut_at = []

        def send():
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            shut_at.append(received[0])

        received = [0]
        got = bytearray()
        t = threading.Thread(target=send, daemon=True)
        t.start()
        eof = False
        while True:
            chunk = s.recv(65536)
            if not chunk:
                eof = True
                break
            got += chunk
            received[0] = len(got)
        t.join(20)
        s.close()
        emit(equal=bytes(got) == data, got=len(got), eof=eof,
             after_shutdown=len(got) - shut_at[0] if shut_at else -1)
        """,
        timeout=40,
    )
    assert fields["got"] == 2 * 1024 * 1024
    assert fields["equal"], "echoed data differs from what was sent"
    assert fields["eof"]
    # Some of the echo arrived after our FIN, so the stack kept sending in CLOSE-WAIT.
    assert fields["after_shutdown"] > 0, fields
