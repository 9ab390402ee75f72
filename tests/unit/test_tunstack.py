"""``tcpstack.TunStack`` without a TUN: its addresses of both families, the routes
it derives from them, and the IPv6 fallback where the namespace has IPv6 disabled.

``TunDevice.open`` is replaced by one end of an in-memory :class:`PairDevice` pair
(the other end plays the kernel), so these run without root; the real interface
is exercised in ``tests/integration/test_tunstack_ipv6.py``.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
from typing import Any

import pytest
from aio_helpers import PairDevice

from tcpstack import TunStack
from tcpstack.aio.network import Network
from tcpstack.link import tun
from tcpstack.link.tun import TunError
from tcpstack.stack import StackConfig

TIMEOUT = 5.0


class FakeTun(PairDevice):
    """A ``PairDevice`` with what ``TunStack`` reads off a ``TunDevice``."""

    vnet_hdr = False
    offloads = 0
    supports_scatter = False

    def __init__(self, end: PairDevice, name: str, opened_with: dict[str, Any]) -> None:
        super().__init__(end.sock)
        self.name = name
        self.opened_with = opened_with


class FakeKernel:
    """Stands in for ``TunDevice.open``; keeps the other end of each device."""

    def __init__(self) -> None:
        self.opened: list[FakeTun] = []
        self.peers: list[PairDevice] = []

    def open(self, name: str, **kwargs: Any) -> FakeTun:
        ours, theirs = PairDevice.pair()
        device = FakeTun(ours, name, kwargs)
        self.opened.append(device)
        self.peers.append(theirs)
        return device

    def close(self) -> None:
        for peer in self.peers:
            peer.close()


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = FakeKernel()
    monkeypatch.setattr(tun.TunDevice, "open", fake.open)
    monkeypatch.setattr(tun, "ipv6_disabled", lambda: False)
    yield fake
    fake.close()


def test_defaults_are_the_daemons_both_families() -> None:
    stack = TunStack()
    assert stack.address == ipaddress.IPv4Address("10.0.0.2")
    assert stack.address6 == ipaddress.IPv6Address("fd00::2")
    assert stack.host_address == ipaddress.IPv4Interface("10.0.0.1/24")
    assert stack.host_address6 == ipaddress.IPv6Interface("fd00::1/64")
    assert stack.addresses == (stack.address, stack.address6)


def test_one_family_turned_off_takes_its_host_side_with_it() -> None:
    v6 = TunStack(address=None)
    assert v6.addresses == (ipaddress.IPv6Address("fd00::2"),) and v6.host_address is None
    v4 = TunStack(address6=None, mtu=576)  # IPv4 alone may run below 1280
    assert v4.addresses == (ipaddress.IPv4Address("10.0.0.2"),) and v4.host_address6 is None
    bare = TunStack(host_address=None, host_address6=None)
    assert bare.host_address is None and bare.host_address6 is None
    custom = TunStack(address6="fd01::5", host_address6="fd01::1/112")
    assert custom.host_address6 == ipaddress.IPv6Interface("fd01::1/112")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"address": None, "address6": None}, "no address"),
    ({"address": None, "host_address": "10.0.0.1/24"}, "address is None"),
    ({"address6": None, "host_address6": "fd00::1/64"}, "address6 is None"),
    ({"mtu": 1200}, "at least 1280"),
    ({"address6": "fd00::1"}, "host side's own address"),
    ({"address6": "10.0.0.9"}, "IPv6"),
    ({"host_address6": "10.0.0.1/24"}, "IPv6"),
])
def test_contradictory_arguments_fail_at_once(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TunStack(**kwargs)


async def test_dual_stack_start_configures_both_host_sides_and_routes(kernel: Any) -> None:
    async with TunStack(interface="t6", routes=["192.0.2.0/24", "2001:db8::/32"]) as stack:
        (device,) = kernel.opened
        assert device.opened_with["host_address"] == ipaddress.IPv4Interface("10.0.0.1/24")
        assert device.opened_with["host_address6"] == ipaddress.IPv6Interface("fd00::1/64")
        net = stack.network
        assert net.addresses == {int(ipaddress.ip_address("10.0.0.2")),
                                 int(ipaddress.ip_address("fd00::2"))}
        assert net.routes == tuple(ipaddress.ip_network(r) for r in (
            "10.0.0.0/24", "fd00::/64", "192.0.2.0/24", "2001:db8::/32"))
        net.check_route("fd00::1")
        net.check_route("2001:db8::7")
        with pytest.raises(OSError) as info:
            net.check_route("fd01::1")
        assert info.value.errno == errno.ENETUNREACH


async def test_ipv6_only_stack_serves_and_reports_ipv6_names(kernel: Any) -> None:
    async with TunStack(address=None) as stack:
        (device,) = kernel.opened
        assert device.opened_with["host_address"] is None
        assert stack.network.routes == (ipaddress.ip_network("fd00::/64"),)
        server = await stack.start_server(_echo, None, 80)
        assert [s.getsockname() for s in server.sockets] == [("::", 80, 0, 0)]
        # The "kernel" end runs a stack of its own at fd00::1 and connects.
        peer = Network(kernel.peers[0], StackConfig(
            addresses=(ipaddress.IPv6Address("fd00::1"),)))
        try:
            reader, writer = await asyncio.wait_for(
                peer.open_connection("fd00::2", 80), TIMEOUT)
            writer.write(b"hello")
            assert await asyncio.wait_for(reader.readexactly(5), TIMEOUT) == b"hello"
            assert writer.get_extra_info("peername") == ("fd00::2", 80, 0, 0)
            writer.close()
        finally:
            await peer.aclose(grace=0.2)


async def test_ipv6_disabled_namespace_falls_back_to_ipv4_with_a_warning(
        kernel: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(tun, "ipv6_disabled", lambda: True)
    with caplog.at_level(logging.WARNING, logger="tcpstack.entry"):
        async with TunStack() as stack:
            (device,) = kernel.opened
            assert device.opened_with["host_address6"] is None
            assert stack.address6 is None and stack.host_address6 is None
            assert stack.network.addresses == {int(ipaddress.ip_address("10.0.0.2"))}
            assert stack.network.routes == (ipaddress.ip_network("10.0.0.0/24"),)
    assert "IPv6 is disabled" in caplog.text


@pytest.mark.parametrize("kwargs", [{"address": None}, {"host_address6": "fd00::1/64"}])
async def test_ipv6_asked_for_in_an_ipv6_disabled_namespace_fails(
        kernel: Any, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any]) -> None:
    monkeypatch.setattr(tun, "ipv6_disabled", lambda: True)
    stack = TunStack(**kwargs)
    with pytest.raises(TunError, match="IPv6 is disabled"):
        await stack.start()
    assert kernel.opened == []


async def _echo(reader: asyncio.StreamReader, writer: Any) -> None:
    writer.write(await reader.readexactly(5))
    await writer.drain()
    writer.close()
