"""The streams API over IPv6: dual-stack servers, ``get_extra_info`` address tuples
as asyncio gives them (4-tuples for IPv6), servers on IPv6 addresses only (what
``IPV6_V6ONLY`` gives a socket) and on every IPv4 address ("0.0.0.0")."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest
from aio_helpers import PairDevice

from tcpstack.aio import open_connection, start_server
from tcpstack.aio.network import Network
from tcpstack.aio.streams import TcpStreamReader, TcpStreamWriter
from tcpstack.stack import StackConfig

TIMEOUT = 5.0


def _config(v4: str, v6: str) -> StackConfig:
    return StackConfig(addresses=(ipaddress.IPv4Address(v4), ipaddress.IPv6Address(v6)))


async def _echo(reader: TcpStreamReader, writer: TcpStreamWriter) -> None:
    writer.write(await reader.readexactly(5))
    await writer.drain()
    writer.close()


async def test_ipv6_and_ipv4_clients_of_one_dual_stack_server() -> None:
    dev_a, dev_b = PairDevice.pair()
    a = Network(dev_a, _config("10.0.0.1", "fd00::1"))
    b = Network(dev_b, _config("10.0.0.2", "fd00::2"))
    try:
        peers: list[tuple[object, ...]] = []

        async def handler(reader: TcpStreamReader, writer: TcpStreamWriter) -> None:
            peers.append(writer.get_extra_info("peername"))
            await _echo(reader, writer)

        await start_server(handler, "::", 7, network=b)
        for host, family in (("fd00::2", socket.AF_INET6), ("10.0.0.2", socket.AF_INET)):
            reader, writer = await asyncio.wait_for(
                open_connection(host, 7, network=a), TIMEOUT)
            writer.write(b"hello")
            assert await asyncio.wait_for(reader.readexactly(5), TIMEOUT) == b"hello"
            sock = writer.get_extra_info("socket")
            assert sock.family == family
            if family == socket.AF_INET6:
                local = writer.get_extra_info("sockname")
                assert writer.get_extra_info("peername") == ("fd00::2", 7, 0, 0)
                assert local[0] == "fd00::1" and local[2:] == (0, 0) and len(local) == 4
                assert sock.getpeername() == ("fd00::2", 7, 0, 0)
            else:
                assert writer.get_extra_info("peername") == ("10.0.0.2", 7)
            writer.close()
        assert peers[0][0] == "fd00::1" and len(peers[0]) == 4
        assert peers[1][0] == "10.0.0.1" and len(peers[1]) == 2
    finally:
        await a.aclose(grace=0.2)
        await b.aclose(grace=0.2)
        dev_a.close()
        dev_b.close()


async def test_servers_on_one_family_refuse_the_other() -> None:
    dev_a, dev_b = PairDevice.pair()
    a = Network(dev_a, _config("10.0.0.1", "fd00::1"))
    b = Network(dev_b, _config("10.0.0.2", "fd00::2"))
    try:
        await start_server(_echo, "fd00::2", 7, network=b)
        await start_server(_echo, "0.0.0.0", 9, network=b)
        for host, port in (("10.0.0.2", 7), ("fd00::2", 9)):
            with pytest.raises(ConnectionRefusedError):
                await asyncio.wait_for(open_connection(host, port, network=a), TIMEOUT)
        for host, port in (("fd00::2", 7), ("10.0.0.2", 9)):
            reader, writer = await asyncio.wait_for(open_connection(host, port, network=a),
                                                    TIMEOUT)
            writer.write(b"12345")
            assert await asyncio.wait_for(reader.readexactly(5), TIMEOUT) == b"12345"
            writer.close()
    finally:
        await a.aclose(grace=0.2)
        await b.aclose(grace=0.2)
        dev_a.close()
        dev_b.close()


async def test_listener_sockets_report_family_and_address_as_asyncio() -> None:
    """``Server.sockets``: AF_INET6 with a 4-tuple for an IPv6 address or "::" (one
    dual-stack socket), AF_INET with a pair for IPv4; host None gives one wildcard
    per family the stack has, as asyncio binds 0.0.0.0 and :: then."""
    dev_a, dev_b = PairDevice.pair()
    a = Network(dev_a, _config("10.0.0.1", "fd00::1"))
    b = Network(dev_b, StackConfig(addresses=(ipaddress.IPv6Address("fd00::2"),)))
    try:
        cases = [
            (a, "::", [(socket.AF_INET6, ("::", 7, 0, 0))]),
            (a, "fd00:0::1", [(socket.AF_INET6, ("fd00::1", 8, 0, 0))]),
            (a, "0.0.0.0", [(socket.AF_INET, ("0.0.0.0", 9))]),
            (a, "10.0.0.1", [(socket.AF_INET, ("10.0.0.1", 10))]),
            (a, None, [(socket.AF_INET, ("0.0.0.0", 11)), (socket.AF_INET6, ("::", 11, 0, 0))]),
            (a, ["fd00::1", "10.0.0.1"], [(socket.AF_INET6, ("fd00::1", 12, 0, 0)),
                                          (socket.AF_INET, ("10.0.0.1", 12))]),
            (b, None, [(socket.AF_INET6, ("::", 13, 0, 0))]),
        ]
        for port, (net, host, want) in enumerate(cases, 7):
            server = await start_server(_echo, host, port, network=net)
            got = [(s.family, s.getsockname()) for s in server.sockets]
            assert got == want, host
            server.close()
        server = await start_server(_echo, "::", 0, network=a)
        ((family, name),) = [(s.family, s.getsockname()) for s in server.sockets]
        assert family == socket.AF_INET6 and name[0] == "::" and name[1] > 0
        assert "[::]:" in repr(server.sockets[0])
        # What a client reads on its connection matches (ConnectionSocket too).
        reader, writer = await asyncio.wait_for(open_connection("fd00::1", name[1],
                                                                network=b), TIMEOUT)
        sock = writer.get_extra_info("socket")
        assert sock.family == socket.AF_INET6
        assert sock.getpeername() == ("fd00::1", name[1], 0, 0)
        assert sock.getsockname() == writer.get_extra_info("sockname")
        assert len(sock.getsockname()) == 4 and sock.getsockname()[0] == "fd00::2"
        writer.write(b"12345")
        assert await asyncio.wait_for(reader.readexactly(5), TIMEOUT) == b"12345"
        writer.close()
    finally:
        await a.aclose(grace=0.2)
        await b.aclose(grace=0.2)
        dev_a.close()
        dev_b.close()
