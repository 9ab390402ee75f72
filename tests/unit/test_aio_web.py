"""Real HTTP software nobody here wrote, unmodified, over tcpstack in memory: an aiohttp
web application served by :class:`TcpStackSite` on network B, fetched from network A
by httpx through :class:`TcpStackTransport` (plain and TLS, keep-alive, streaming)."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

aiohttp = pytest.importorskip("aiohttp")
httpx = pytest.importorskip("httpx")
pytest.importorskip("cryptography")

from aio_helpers import B_IP, NetPair, live_tcbs, until, within  # noqa: E402
from aiohttp import web  # noqa: E402

from tcpstack.aio.aiohttp_site import TcpStackSite, start_app  # noqa: E402
from tcpstack.aio.httpx_transport import TcpStackTransport  # noqa: E402
from tcpstack.certs import self_signed, server_context  # noqa: E402

STREAM_CHUNK = b"0123456789abcdef" * 4096  # 64 KiB
STREAM_CHUNKS = 32  # 2 MiB


def make_app() -> web.Application:
    async def hello(_request: web.Request) -> web.Response:
        return web.json_response({"hello": "tcpstack"})

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"length": len(body),
                                  "sha256": hashlib.sha256(body).hexdigest()})

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(STREAM_CHUNK) * STREAM_CHUNKS
        await response.prepare(request)
        for _ in range(STREAM_CHUNKS):
            await response.write(STREAM_CHUNK)
        await response.write_eof()
        return response

    app = web.Application()
    app.add_routes([web.get("/", hello), web.post("/echo", echo), web.get("/stream", stream)])
    return app


@pytest.fixture
async def nets() -> AsyncIterator[NetPair]:
    pair = NetPair()
    yield pair
    await asyncio.wait_for(pair.aclose(), 10.0)


async def test_aiohttp_app_served_over_tcpstack_to_httpx(nets: NetPair) -> None:
    runner = await start_app(make_app(), nets.b, B_IP, 8080)
    try:
        (site,) = runner.sites
        assert isinstance(site, TcpStackSite) and site.name == f"http://{B_IP}:8080"
        async with httpx.AsyncClient(transport=TcpStackTransport(nets.a)) as client:
            response = await within(client.get(f"http://{B_IP}:8080/"))
            assert response.status_code == 200
            assert response.json() == {"hello": "tcpstack"}
            body = bytes(range(256)) * 1000
            response = await within(client.post(f"http://{B_IP}:8080/echo", content=body))
            assert response.json() == {"length": len(body),
                                       "sha256": hashlib.sha256(body).hexdigest()}
            # Keep-alive: both requests went over one connection.
            assert len(nets.a.connections) == 1
            digest = hashlib.sha256()
            async with client.stream("GET", f"http://{B_IP}:8080/stream") as streamed:
                async for part in streamed.aiter_bytes():
                    digest.update(part)
            expected = hashlib.sha256(STREAM_CHUNK * STREAM_CHUNKS).hexdigest()
            assert digest.hexdigest() == expected
            missing = await within(client.get(f"http://{B_IP}:8080/nope"))
            assert missing.status_code == 404
    finally:
        await within(runner.cleanup(), 10)
    await until(lambda: not live_tcbs(nets.b), "the runner closed its connections")


async def test_aiohttp_app_over_tls_with_port_zero(nets: NetPair, tmp_path: Path) -> None:
    cert = self_signed([B_IP])
    (tmp_path / "ca.pem").write_bytes(cert.cert_pem)
    runner = web.AppRunner(make_app())
    await runner.setup()
    site = TcpStackSite(runner, nets.b, B_IP, 0, ssl_context=server_context(cert))
    await site.start()
    try:
        assert site.port > 0 and site.name.startswith("https://")
        verify = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        async with httpx.AsyncClient(transport=TcpStackTransport(nets.a, verify=verify)) as c:
            response = await within(c.get(f"https://{B_IP}:{site.port}/"))
            assert response.json() == {"hello": "tcpstack"}
        async with httpx.AsyncClient(transport=TcpStackTransport(nets.a)) as untrusting:
            with pytest.raises(httpx.ConnectError):
                await within(untrusting.get(f"https://{B_IP}:{site.port}/"))
    finally:
        await within(runner.cleanup(), 10)


async def test_httpx_connect_errors_are_httpx_errors(nets: NetPair) -> None:
    async with httpx.AsyncClient(transport=TcpStackTransport(nets.a)) as client:
        with pytest.raises(httpx.ConnectError, match="refused"):
            await within(client.get(f"http://{B_IP}:9/"))
