"""HTTP clients over tcpstack: an httpcore network backend and an httpx transport
(needs ``pip install 'tcpstack[httpx]'``).

httpcore, the connection layer under httpx, opens its connections through a
pluggable *network backend*; :class:`TcpStackBackend` opens them with the stack's
active open (and upgrades them with its ``start_tls`` for ``https://``).
:class:`TcpStackTransport` puts an httpcore connection pool on that backend under
an :class:`httpx.AsyncClient`::

    async with httpx.AsyncClient(transport=TcpStackTransport(stack)) as client:
        response = await client.get("https://10.0.0.1:8443/", ...)

Everything above (HTTP/1.1, keep-alive, redirects, certificate verification) is
httpx's and httpcore's own code, unmodified.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

import httpcore
import httpx

from tcpstack.aio.streams import StreamNetwork, TcpStreamWriter, open_connection


class TcpStackStream(httpcore.AsyncNetworkStream):
    """One connection of the stack, as httpcore wants it."""

    def __init__(self, reader: asyncio.StreamReader, writer: TcpStreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return await asyncio.wait_for(self._reader.read(max_bytes), timeout)
        except TimeoutError as e:
            raise httpcore.ReadTimeout(str(e)) from e
        except OSError as e:
            raise httpcore.ReadError(str(e)) from e

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            await asyncio.wait_for(self._writer.drain(), timeout)
        except TimeoutError as e:
            raise httpcore.WriteTimeout(str(e)) from e
        except OSError as e:
            raise httpcore.WriteError(str(e)) from e

    async def aclose(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        try:
            await asyncio.wait_for(
                self._writer.start_tls(ssl_context, server_hostname=server_hostname), timeout)
        except TimeoutError as e:
            raise httpcore.ConnectTimeout(str(e)) from e
        except (OSError, ssl.SSLError) as e:
            raise httpcore.ConnectError(str(e)) from e
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":
            # An idle keep-alive connection is "readable" once the server closed it.
            return self._reader.at_eof() or self._reader.exception() is not None
        return None


class TcpStackBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend over a tcpstack network (TCP only; no Unix sockets)."""

    def __init__(self, network: StreamNetwork) -> None:
        self._network = network

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        local = None if local_address is None else (local_address, 0)
        try:
            reader, writer = await asyncio.wait_for(
                open_connection(host, port, network=self._network, local_addr=local), timeout)
        except TimeoutError as e:
            raise httpcore.ConnectTimeout(str(e)) from e
        except OSError as e:
            raise httpcore.ConnectError(str(e)) from e
        return TcpStackStream(reader, writer)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("tcpstack has no Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes], request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except httpcore.TimeoutException as e:
            raise httpx.ReadTimeout(str(e), request=self._request) from e
        except httpcore.NetworkError as e:
            raise httpx.ReadError(str(e), request=self._request) from e

    async def aclose(self) -> None:
        closer = getattr(self._stream, "aclose", None)
        if closer is not None:
            await closer()


_ERRORS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
}


class TcpStackTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose connections are the stack's (HTTP/1.1, keep-alive pool).

    ``verify`` is an :class:`ssl.SSLContext`, or True for the default verifying one.
    """

    def __init__(self, network: StreamNetwork, *, verify: ssl.SSLContext | bool = True,
                 max_connections: int = 100) -> None:
        if verify is True:
            context = ssl.create_default_context()
        elif verify is False:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = verify
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context, max_connections=max_connections,
            network_backend=TcpStackBackend(network))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host,
                             port=request.url.port, target=request.url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = await self._pool.handle_async_request(core_request)
        except tuple(_ERRORS) as e:
            mapped = next(_ERRORS[c] for c in type(e).__mro__ if c in _ERRORS)
            raise mapped(str(e), request=request) from e
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(status_code=response.status, headers=response.headers,
                              stream=_Body(response.stream, request),
                              extensions=response.extensions)

    async def aclose(self) -> None:
        await self._pool.aclose()


__all__ = ["TcpStackBackend", "TcpStackStream", "TcpStackTransport"]
