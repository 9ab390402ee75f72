"""The one object a program needs: a userspace TCP/IP stack on a TUN interface.

::

    async with tcpstack.TunStack(interface="tcpstack0", address="10.0.0.2") as stack:
        server = await stack.create_server(MyProtocol, port=8000)
        reader, writer = await stack.open_connection("10.0.0.1", 5555)

:class:`TunStack` opens (creating if needed) and configures the TUN interface,
runs the stack on the running event loop (uvloop or asyncio's), and on exit
closes every connection and server and removes the interface it created. The
interface is set up with pyroute2 in a worker thread, because pyroute2 cannot run
inside a running event loop (and not at all on uvloop's); so this works from any
coroutine. Everything else is :class:`~tcpstack.aio.network.Network`'s: the
same ``create_server``/``create_connection``/``start_server``/``open_connection``
as asyncio's, over the stack.

Why ``TunStack`` and not ``Stack``: :class:`tcpstack.stack.Stack` is the sans-I/O
engine (packets in, packets out, no clock); a second class of the same name one
module up would make imports, tracebacks and documentation ambiguous.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from tcpstack.aio import streams
from tcpstack.aio.network import Network, Route
from tcpstack.aio.runtime import DeviceError
from tcpstack.aio.server import ProtocolFactory, Server
from tcpstack.stack import StackConfig

log = logging.getLogger("tcpstack.entry")

TSO_SIZE = 65535 - 20 - 60
"""Largest TCP payload in one IPv4 packet with full options (a TSO super-segment)."""


class TunStack:
    """A userspace TCP/IP stack owning ``address`` behind the TUN interface ``interface``.

    ``host_address`` is the kernel's side of a created interface (its network is
    what the stack can reach; more with ``routes``); None attaches to an existing
    interface without configuring it (then every destination is tried).
    ``config`` carries the stack's other settings (TCP tunables, limits); its
    addresses are replaced by ``address``, its MSS follows ``mtu``.
    """

    def __init__(
        self,
        interface: str = "tcpstack0",
        address: str = "10.0.0.2",
        host_address: str | None = "10.0.0.1/24",
        *,
        mtu: int = 1500,
        config: StackConfig | None = None,
        configure: bool | None = None,
        offload: bool = True,
        routes: Iterable[Route] = (),
    ) -> None:
        self.interface = interface
        self.address = ipaddress.IPv4Address(address)
        self.host_address = None if host_address is None else \
            ipaddress.IPv4Interface(host_address)
        self.mtu = mtu
        self._config = config or StackConfig()
        self._configure = configure
        self._offload = offload
        self._routes = [ipaddress.IPv4Network(r) for r in routes]
        self._device: Any = None
        self._network: Network | None = None
        #: Set if the interface went away while the stack ran.
        self.error: DeviceError | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> TunStack:
        """Open and configure the interface, start the stack (``async with`` does this)."""
        if self._network is not None:
            raise RuntimeError("the stack is already running")
        from tcpstack.link.tun import TUN_F_TSO4, TunDevice

        device = await asyncio.to_thread(
            TunDevice.open, self.interface, mtu=self.mtu, host_address=self.host_address,
            configure=self._configure, offload=self._offload)
        try:
            tso = TSO_SIZE if device.offloads & TUN_F_TSO4 else 0
            config = dataclasses.replace(
                self._config, addresses=(self.address,), vnet_hdr=device.vnet_hdr,
                scatter=getattr(device, "supports_scatter", False),
                tcp=dataclasses.replace(self._config.tcp, mss=self.mtu - 40, tso_size=tso))
            routes: list[ipaddress.IPv4Network] | None = list(self._routes)
            if self.host_address is not None:
                routes = [self.host_address.network, *self._routes]
            elif not self._routes:
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


__all__ = ["TunStack"]
