"""ICMP errors as the application sees them through the streams API: a hard error
fails ``open_connection`` with the exception asyncio would raise; a soft one is
the socket's pending ``SO_ERROR``."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest
from aio_helpers import A_IP, B_IP, PairDevice, stack_config

from tcpstack.aio import open_connection
from tcpstack.aio.network import Network
from tcpstack.wire import icmp
from tcpstack.wire.ipv4 import PROTO_ICMP, build_ipv4

TIMEOUT = 5.0


def _to_a(message: bytearray) -> bytes:
    return bytes(build_ipv4(int.from_bytes(socket.inet_aton("10.9.9.9"), "big"),
                            int.from_bytes(socket.inet_aton(A_IP), "big"), PROTO_ICMP, message))


async def _next_packet(dev: PairDevice) -> bytes:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recv(dev.sock, 65600), TIMEOUT)


async def test_port_unreachable_for_the_syn_raises_connection_refused() -> None:
    dev_a, raw = PairDevice.pair()
    net = Network(dev_a, stack_config(A_IP))
    try:
        connecting = asyncio.ensure_future(open_connection(B_IP, 80, network=net))
        syn = await _next_packet(raw)
        raw.sock.send(_to_a(icmp.build_unreachable(icmp.CODE_PORT_UNREACHABLE, syn[:28])))
        with pytest.raises(ConnectionRefusedError) as e:
            await asyncio.wait_for(connecting, TIMEOUT)
        assert e.value.errno == errno.ECONNREFUSED
        assert not net.connections
    finally:
        await net.aclose(grace=0.0)
        raw.close()


async def test_protocol_unreachable_raises_the_oserror_a_socket_would() -> None:
    dev_a, raw = PairDevice.pair()
    net = Network(dev_a, stack_config(A_IP))
    try:
        connecting = asyncio.ensure_future(open_connection(B_IP, 80, network=net))
        syn = await _next_packet(raw)
        raw.sock.send(_to_a(icmp.build_unreachable(icmp.CODE_PROTOCOL_UNREACHABLE, syn[:28])))
        with pytest.raises(OSError) as e:
            await asyncio.wait_for(connecting, TIMEOUT)
        assert e.value.errno == errno.ENOPROTOOPT
    finally:
        await net.aclose(grace=0.0)
        raw.close()


async def test_soft_error_is_the_pending_so_error_and_the_connect_goes_on() -> None:
    dev_a, raw = PairDevice.pair()
    net = Network(dev_a, stack_config(A_IP))
    try:
        connecting = asyncio.ensure_future(net.create_connection(asyncio.Protocol, B_IP, 80))
        syn = await _next_packet(raw)
        (transport,) = net.connections  # the connection being opened
        raw.sock.send(_to_a(icmp.build_unreachable(icmp.CODE_HOST_UNREACHABLE, syn[:28])))
        for _ in range(100):
            if transport.tcb.soft_error:
                break
            await asyncio.sleep(0.01)
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.EHOSTUNREACH
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        assert not transport.is_closing()
        assert not connecting.done()  # a soft error does not end the handshake
        connecting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await connecting
    finally:
        await net.aclose(grace=0.0)
        raw.close()
