"""A very small HTTP/1.1 server for the metrics and dashboard endpoints.

It runs over any asyncio-style stream pair, so the same handler serves on a
kernel socket (``asyncio.start_server``) and on tcpstack's own streams
(:meth:`tcpstack.aio.network.Network.start_server`) -- then viewing the page is
itself a connection the stack carries and the dashboard shows.

Only ``GET`` and ``HEAD``; requests without a body; keep-alive (idle connections
close after :data:`IDLE_TIMEOUT`); a route returns a :class:`Response`, or a
:class:`Stream` for server-sent events, which the server writes until the client
goes away. Bind addresses come from ``--metrics``/``--dashboard`` ``ADDR:PORT``:
an address of the stack itself means "serve through the stack".
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("tcpstack.web")

IDLE_TIMEOUT: Final = 30.0
HEAD_TIMEOUT: Final = 10.0
MAX_HEAD: Final = 8192

REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  500: "Internal Server Error"}


class Reader(Protocol):
    async def readuntil(self, separator: bytes = ...) -> bytes: ...


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Stream:
    """A streamed body (server-sent events): ``chunks`` yields bytes to write."""

    chunks: Callable[[], AsyncIterator[bytes]]
    content_type: str = "text/event-stream"


Route = Callable[[str, dict[str, list[str]]], Response | Stream | Awaitable[Response | Stream]]


@dataclass(frozen=True)
class BindAddress:
    """``ADDR:PORT`` or ``[IPv6]:PORT`` from the command line."""

    host: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int

    @classmethod
    def parse(cls, text: str) -> BindAddress:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected ADDR:PORT or [IPv6]:PORT, got {text!r}")
        address: ipaddress.IPv4Address | ipaddress.IPv6Address
        if host.startswith("[") and host.endswith("]"):
            try:
                address = ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                raise ValueError(f"invalid IPv6 address {host!r} in {text!r}") from None
        elif ":" in host:
            raise ValueError(f"an IPv6 address goes in brackets: [{host}]:{port}, "
                             f"not {text!r}")
        else:
            try:
                address = ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"invalid IPv4 address {host!r} in {text!r}") from None
        try:
            number = int(port, 10)
        except ValueError:
            raise ValueError(f"invalid port {port!r} in {text!r}") from None
        if not 1 <= number <= 65535:
            raise ValueError(f"port {number} out of range 1..65535")
        return cls(address, number)

    def __str__(self) -> str:
        if self.host.version == 6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def bind_kernel_socket(address: BindAddress) -> socket.socket:
    """A listening TCP socket of the host (created before privileges are dropped);
    an IPv6 one takes IPv6 only, as the address given says."""
    family = socket.AF_INET6 if address.host.version == 6 else socket.AF_INET
    try:
        sock = socket.create_server((str(address.host), address.port), family=family,
                                    reuse_port=False)
    except OSError as e:
        raise OSError(e.errno, f"cannot listen on {address}: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock


class HttpServer:
    """Serves ``routes`` (exact paths, or prefixes ending in ``/``; ``/`` itself is
    exact) over streams."""

    def __init__(self, routes: dict[str, Route], name: str) -> None:
        self.routes = routes
        self.name = name
        self.requests = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closing = False

    def route_for(self, path: str) -> Route | None:
        if path in self.routes:
            return self.routes[path]
        best = None
        for prefix, route in self.routes.items():
            if len(prefix) > 1 and prefix.endswith("/") and path.startswith(prefix) and \
                    (best is None or len(prefix) > len(best[0])):
                best = (prefix, route)
        return best[1] if best else None

    async def handle(self, reader: Any, writer: Any) -> None:
        """One connection: requests until the client closes or goes idle."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            first = True
            while not self.closing:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"),
                                                  HEAD_TIMEOUT if first else IDLE_TIMEOUT)
                except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                        ConnectionError, ValueError):
                    return
                first = False
                if len(head) > MAX_HEAD:
                    await self._send(writer, Response(400, b"request head too long\n"), True)
                    return
                keep = await self._one(head, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("%s: error serving a request", self.name)
        finally:
            if task is not None:
                self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _one(self, head: bytes, writer: Any) -> bool:
        self.requests += 1
        try:
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, version = request_line.split(" ")
        except ValueError:
            await self._send(writer, Response(400, b"bad request line\n"), True)
            return False
        headers = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
        if method not in ("GET", "HEAD"):
            await self._send(writer, Response(405, b"only GET\n",
                                              headers={"Allow": "GET, HEAD"}), close)
            return not close
        url = urlsplit(target)
        route = self.route_for(url.path)
        if route is None:
            await self._send(writer, Response(404, b"not found\n"), close)
            return not close
        try:
            result = route(url.path, parse_qs(url.query))
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
        except KeyError:
            result = Response(404, b"not found\n")
        except ValueError as e:
            result = Response(400, f"{e}\n".encode())
        assert isinstance(result, Response | Stream)
        if isinstance(result, Stream):
            await self._stream(writer, result, method == "HEAD")
            return False
        if method == "HEAD":
            result = Response(result.status, b"", result.content_type,
                              {**result.headers, "Content-Length": str(len(result.body))})
        await self._send(writer, result, close)
        return not close

    async def _send(self, writer: Any, resp: Response, close: bool) -> None:
        headers = {"Content-Type": resp.content_type, "Content-Length": str(len(resp.body)),
                   "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                   "Connection": "close" if close else "keep-alive"}
        headers.update(resp.headers)
        lines = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'OK')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + resp.body)
        await writer.drain()

    async def _stream(self, writer: Any, stream: Stream, head_only: bool) -> None:
        writer.write(("HTTP/1.1 200 OK\r\nContent-Type: " + stream.content_type +
                      "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n").encode())
        await writer.drain()
        if head_only:
            return
        async for chunk in stream.chunks():
            if self.closing:
                return
            writer.write(chunk)
            await writer.drain()

    async def close(self) -> None:
        """Stop serving: open connections (event streams) are cancelled."""
        self.closing = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)


__all__ = ["BindAddress", "HttpServer", "Response", "Stream", "bind_kernel_socket"]
