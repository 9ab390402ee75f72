"""The one object a program needs: a userspace TCP/IP stack on a TUN interface.

::

    async with tcpstack.TunStack(interface="tcpstack0", address="10.0.0.2") as stack:
        server = await stack.create_server(MyProtocol, port=8000)
        reader, writer = await stack.open_connection("10.0.0.1", 5555)
        reader6, writer6 = await stack.open_connection("fd00::1", 5555)

:class:`TunStack` opens (creating if needed) and configures the TUN interface,
runs the stack on the running event loop (uvloop or asyncio's), and on exit
closes every connection and server and removes the interface it created. The
interface is set up with pyroute2 in a worker thread, because pyroute2 cannot run
inside a running event loop (and not at all on uvloop's); so this works from any
coroutine. Everything else is :class:`~tcpstack.aio.network.Network`'s: the
same ``create_server``/``create_connection``/``start_server``/``open_connection``
as asyncio's, over the stack.

It is dual-stack as the daemon is (``tcpstack serve``): IPv4 ``10.0.0.2`` with
the host side ``10.0.0.1/24`` and IPv6 ``fd00::2`` with the host side
``fd00::1/64`` by default; ``address=None`` runs IPv6 only, ``address6=None``
IPv4 only. Where the namespace has IPv6 disabled
(``net.ipv6.conf.default.disable_ipv6``, as in a Docker container on a network
without IPv6) the default IPv6 is dropped with a warning; asking for IPv6
explicitly there (a ``host_address6``, or IPv6 only) fails with
:class:`~tcpstack.link.tun.TunError`.

Why ``TunStack`` and not ``Stack``: :class:`tcpstack.stack.Stack` is the sans-I/O
engine (packets in, packets out, no clock); a second class of the same name one
module up would make imports, tracebacks and documentation ambiguous.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import ipaddress
import logging
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Final, TypeVar

from tcpstack.aio import streams
from tcpstack.aio.devices import DeviceError
from tcpstack.aio.network import Network, Route
from tcpstack.aio.server import ProtocolFactory, Server
from tcpstack.stack import StackConfig
from tcpstack.wire.ipv6 import MIN_MTU as IPV6_MIN_MTU

log = logging.getLogger("tcpstack.entry")

TSO_SIZE = 65535 - 20 - 60
"""Largest TCP payload in one IPv4 packet with full options (a TSO super-segment)."""

DEFAULT_ADDRESS: Final = "10.0.0.2"
DEFAULT_HOST_ADDRESS: Final = "10.0.0.1/24"
DEFAULT_ADDRESS6: Final = "fd00::2"
DEFAULT_HOST_ADDRESS6: Final = "fd00::1/64"


_Own = TypeVar("_Own", ipaddress.IPv4Address, ipaddress.IPv6Address)
_Side = TypeVar("_Side", ipaddress.IPv4Interface, ipaddress.IPv6Interface)


class _Default(enum.Enum):
    """A host side left to its default: the family's default address when the
    family is on -- unlike an explicit one, which insists on the family."""

    DEFAULT = enum.auto()


DEFAULT: Final = _Default.DEFAULT


class TunStack:
    """A userspace TCP/IP stack owning ``address`` and ``address6`` behind the TUN
    interface ``interface``.

    ``address`` is the stack's IPv4 address, ``address6`` its IPv6 address; None
    turns that family off (at least one must stay). ``host_address`` and
    ``host_address6`` are the kernel's side of a created (or configured)
    interface, given as ``"IP/PREFIX"``: their networks are what the stack can
    reach (more with ``routes``, of either family). Left out, they default to
    ``10.0.0.1/24`` and ``fd00::1/64`` for the families that are on; None leaves
    the interface without an address of that family. With neither host side and
    no ``routes`` every destination is tried.

    IPv6 needs an MTU of at least 1280 (RFC 8200 5). Where the network namespace
    has IPv6 disabled, :meth:`start` drops a default IPv6 with a warning and
    serves IPv4; an explicit ``host_address6``, or IPv6 alone, fails there with
    :class:`~tcpstack.link.tun.TunError`. After :meth:`start`, the attributes
    say what the stack really runs with.

    ``config`` carries the stack's other settings (TCP tunables, limits); its
    addresses are replaced by ``address``/``address6``, its MSS follows ``mtu``
    (IPv6 connections advertise 20 bytes less, RFC 8200 8.3).
    """

    def __init__(
        self,
        interface: str = "tcpstack0",
        address: str | None = DEFAULT_ADDRESS,
        host_address: str | _Default | None = DEFAULT,
        *,
        address6: str | None = DEFAULT_ADDRESS6,
        host_address6: str | _Default | None = DEFAULT,
        mtu: int = 1500,
        config: StackConfig | None = None,
        configure: bool | None = None,
        offload: bool = True,
        routes: Iterable[Route] = (),
    ) -> None:
        if address is None and address6 is None:
            raise ValueError("address and address6 are both None: the stack has no address")
        self.interface = interface
        self.address = _own(address, ipaddress.IPv4Address, "address")
        self.address6 = _own(address6, ipaddress.IPv6Address, "address6")
        self.host_address = _host_side(host_address, self.address, DEFAULT_HOST_ADDRESS,
                                       ipaddress.IPv4Interface, "host_address", "address")
        self.host_address6 = _host_side(host_address6, self.address6, DEFAULT_HOST_ADDRESS6,
                                        ipaddress.IPv6Interface, "host_address6", "address6")
        self._explicit6 = host_address6 is not DEFAULT and host_address6 is not None
        if self.address6 is not None and mtu < IPV6_MIN_MTU:
            raise ValueError(f"IPv6 needs an MTU of at least {IPV6_MIN_MTU} (RFC 8200 5), "
                             f"not {mtu}: raise mtu or give address6=None")
        self.mtu = mtu
        self._config = config or StackConfig()
        self._configure = configure
        self._offload = offload
        self._routes = [ipaddress.ip_network(r) for r in routes]
        self._device: Any = None
        self._network: Network | None = None
        #: Set if the interface went away while the stack ran.
        self.error: DeviceError | None = None

    @property
    def addresses(self) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
        """The stack's own addresses, IPv4 first."""
        return tuple(a for a in (self.address, self.address6) if a is not None)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> TunStack:
        """Open and configure the interface, start the stack (``async with`` does this)."""
        if self._network is not None:
            raise RuntimeError("the stack is already running")
        from tcpstack.link.tun import TUN_F_TSO4, TunDevice, TunError, ipv6_disabled

        if self.address6 is not None and await asyncio.to_thread(ipv6_disabled):
            if self._explicit6 or self.address is None:
                raise TunError("IPv6 is disabled in this network namespace "
                               "(net.ipv6.conf.default.disable_ipv6): cannot run IPv6 on "
                               f"{self.interface!r}")
            log.warning("IPv6 is disabled in this network namespace: %s serves IPv4 only "
                        "(address6=None says so without this warning)", self.interface)
            self.address6 = self.host_address6 = None
        for own, side in ((self.address, self.host_address),
                          (self.address6, self.host_address6)):
            if own is not None and side is not None and own not in side.network:
                log.warning("%s is outside %s: the kernel will not route to it via %s "
                            "without a route", own, side.network, self.interface)
        device = await asyncio.to_thread(
            TunDevice.open, self.interface, mtu=self.mtu, host_address=self.host_address,
            host_address6=self.host_address6, configure=self._configure,
            offload=self._offload)
        try:
            tso = TSO_SIZE if device.offloads & TUN_F_TSO4 else 0
            config = dataclasses.replace(
                self._config, addresses=self.addresses, vnet_hdr=device.vnet_hdr,
                scatter=getattr(device, "supports_scatter", False),
                tcp=dataclasses.replace(self._config.tcp, mss=self.mtu - 40, tso_size=tso))
            sides = [s.network for s in (self.host_address, self.host_address6) if s is not None]
            routes: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None = \
                [*sides, *self._routes]
            if not routes:
                routes = None
            self._network = Network(device, config, routes=routes, on_fatal=self._failed)
        except BaseException:
            await asyncio.to_thread(device.close)
            raise
        self._device = device
        self.interface = device.name
        return self

    def _failed(self, error: DeviceError) -> None:
        self.error = error
        log.error("TUN interface %s failed: %s", self.interface, error)

    async def aclose(self, grace: float = 2.0) -> None:
        """Close every server and connection (FIN, then RST after ``grace`` seconds),
        stop the stack and close the interface (removing it if it was created)."""
        network, device = self._network, self._device
        self._network = self._device = None
        try:
            if network is not None:
                await network.aclose(grace=0.0 if self.error else grace)
        finally:
            if device is not None:
                await asyncio.to_thread(device.close)

    async def __aenter__(self) -> TunStack:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    # ------------------------------------------------------------ the network

    @property
    def network(self) -> Network:
        """The running :class:`~tcpstack.aio.network.Network` (after :meth:`start`)."""
        if self._network is None:
            raise RuntimeError("the stack is not running (use 'async with' or start())")
        return self._network

    @property
    def counters(self) -> dict[str, int]:
        """The stack's counters (packets, drops by reason, ...)."""
        return dict(self.network.stack.counters)

    async def create_server(self, protocol_factory: ProtocolFactory,
                            host: str | Sequence[str] | None = None,
                            port: int | None = None, **kwargs: Any) -> Server:
        """``loop.create_server`` over the stack (see :meth:`Network.create_server`)."""
        return await self.network.create_server(protocol_factory, host, port, **kwargs)

    async def create_connection(self, protocol_factory: ProtocolFactory,
                                host: str | None = None, port: int | None = None,
                                **kwargs: Any) -> tuple[asyncio.Transport,
                                                        asyncio.BaseProtocol]:
        """``loop.create_connection`` over the stack (see :meth:`Network.create_connection`)."""
        return await self.network.create_connection(protocol_factory, host, port, **kwargs)

    async def start_server(self, client_connected_cb: streams.ClientConnectedCallback,
                           host: str | Sequence[str] | None = None,
                           port: int | None = None, **kwargs: Any) -> Server:
        """``asyncio.start_server`` over the stack."""
        return await streams.start_server(client_connected_cb, host, port,
                                          network=self.network, **kwargs)

    async def open_connection(self, host: str | None = None, port: int | None = None,
                              **kwargs: Any) -> tuple[asyncio.StreamReader,
                                                      streams.TcpStreamWriter]:
        """``asyncio.open_connection`` over the stack."""
        return await streams.open_connection(host, port, network=self.network, **kwargs)


def _own(value: str | None, kind: Callable[[str], _Own], name: str) -> _Own | None:
    """The stack's own address of one family, or None; ValueError naming ``name``."""
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        family = "an IPv6" if name.endswith("6") else "an IPv4"
        raise ValueError(f"{name} {value!r} is not {family} address") from None


def _host_side(value: str | _Default | None,
               own: ipaddress.IPv4Address | ipaddress.IPv6Address | None, default: str,
               kind: Callable[[str], _Side], name: str, own_name: str) -> _Side | None:
    """The host side of one family as an interface address (or None), checked
    against the stack's own address ``own`` of that family."""
    if value is None or (value is DEFAULT and own is None):
        return None
    if own is None:
        raise ValueError(f"{name} {value} is given but {own_name} is None")
    text = default if isinstance(value, _Default) else value
    try:
        side = kind(text)
    except ValueError:
        family = "an IPv6" if name.endswith("6") else "an IPv4"
        raise ValueError(f"{name} {text!r} is not {family} address/prefix") from None
    if side.ip == own:
        raise ValueError(f"{own_name} {own} is the host side's own address")
    return side


__all__ = ["DEFAULT", "TunStack"]
