"""Real software nobody here wrote, unmodified, over tcpstack on a real TUN.

* An aiohttp web application (routes, JSON, a 20 MiB streamed response, a websocket
  echo) served by ``TcpStackSite`` on ``tcpstack.TunStack``, fetched by curl and by a
  kernel-socket aiohttp client (HTTP and websocket).
* httpx through ``TcpStackTransport`` (the stack's active open) to a kernel HTTP
  server on the host side of the TUN, over plain HTTP and over HTTPS with
  certificate verification.

Each runs as one program on uvloop inside the test's namespace: the TUN is set up
by ``TunStack`` in a worker thread while the uvloop loop runs.
"""

from __future__ import annotations

import pytest

from tests.integration.daemon import run_client
from tests.netns import NetNS

pytest.importorskip("aiohttp")
pytest.importorskip("httpx")
pytest.importorskip("cryptography")

SERVE_APP = """
import asyncio, hashlib, os
import aiohttp, uvloop
from aiohttp import web
import tcpstack
from tcpstack.aio.aiohttp_site import start_app

BIG = 20 * 1024 * 1024
CHUNK = bytes(range(256)) * 256
URL = "http://10.0.0.2:8080"

async def hello(request):
    return web.json_response({"hello": "tcpstack", "peer": request.remote})

async def item(request):
    return web.json_response({"id": int(request.match_info["id"])})

async def post_json(request):
    return web.json_response({"got": await request.json()})

async def big(request):
    response = web.StreamResponse()
    response.content_length = BIG
    await response.prepare(request)
    for _ in range(BIG // len(CHUNK)):
        await response.write(CHUNK)
    await response.write_eof()
    return response

async def ws(request):
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    async for msg in socket:
        if msg.type == aiohttp.WSMsgType.TEXT:
            await socket.send_str(msg.data.upper())
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await socket.send_bytes(msg.data)
    return socket

app = web.Application()
app.add_routes([web.get("/", hello), web.get("/items/{id}", item),
                web.post("/json", post_json), web.get("/big", big), web.get("/ws", ws)])

async def curl(*args):
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "60", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    return out

async def main():
    async with tcpstack.TunStack(interface="tcpstack0", address="10.0.0.2") as stack:
        runner = await start_app(app, stack, port=8080)
        try:
            root = await curl(URL + "/")
            item = await curl(URL + "/items/42")
            big_sha = hashlib.sha256(await curl(URL + "/big")).hexdigest()
            async with aiohttp.ClientSession() as session:  # kernel sockets
                async with session.get(URL + "/") as r:
                    kernel_root = await r.json()
                async with session.post(URL + "/json", json={"a": [1, 2, 3]}) as r:
                    posted = await r.json()
                digest = hashlib.sha256()
                async with session.get(URL + "/big") as r:
                    async for chunk in r.content.iter_chunked(1 << 16):
                        digest.update(chunk)
                payload = os.urandom(1 << 20)
                async with session.ws_connect(URL + "/ws") as socket:
                    await socket.send_str("hello websocket")
                    text = (await socket.receive(timeout=10)).data
                    await socket.send_bytes(payload)
                    binary = (await socket.receive(timeout=30)).data
                    await socket.close()
        finally:
            await runner.cleanup()
    expected = hashlib.sha256(CHUNK * (BIG // len(CHUNK))).hexdigest()
    emit(root=root.decode(), item=item.decode(), curl_big=big_sha == expected,
         kernel_root=kernel_root, posted=posted, kernel_big=digest.hexdigest() == expected,
         ws_text=text, ws_binary=binary == payload)

uvloop.run(main())
"""

HTTPX_CLIENT = """
import asyncio, ssl, tempfile
import httpx, uvloop
from aiohttp import web
import tcpstack
from tcpstack.aio.httpx_transport import TcpStackTransport
from tcpstack.certs import self_signed, server_context

cert = self_signed(["10.0.0.1"])
cafile = tempfile.NamedTemporaryFile(suffix=".pem")
cafile.write(cert.cert_pem)
cafile.flush()

async def who(request):
    return web.json_response({"peer": request.remote, "tls": request.secure})

async def main():
    async with tcpstack.TunStack(interface="tcpstack0", address="10.0.0.2") as stack:
        # A kernel HTTP server on the host side of the TUN, plain and TLS.
        app = web.Application()
        app.add_routes([web.get("/", who)])
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "10.0.0.1", 8081).start()
        await web.TCPSite(runner, "10.0.0.1", 8443, ssl_context=server_context(cert)).start()
        try:
            verify = ssl.create_default_context(cafile=cafile.name)
            async with httpx.AsyncClient(transport=TcpStackTransport(stack, verify=verify)) as c:
                plain = (await c.get("http://10.0.0.1:8081/")).json()
                secure = await c.get("https://10.0.0.1:8443/")
                version = secure.extensions["network_stream"].get_extra_info(
                    "ssl_object").version()
                secure = secure.json()
            async with httpx.AsyncClient(transport=TcpStackTransport(stack)) as untrusting:
                try:
                    await untrusting.get("https://10.0.0.1:8443/")
                    rejected = False
                except httpx.ConnectError:
                    rejected = True
        finally:
            await runner.cleanup()
    emit(plain=plain, secure=secure, version=version, rejected=rejected)

uvloop.run(main())
"""


def test_aiohttp_application_served_by_tcpstack_to_curl_and_kernel_aiohttp(
        netns: NetNS) -> None:
    fields = run_client(netns, SERVE_APP, timeout=180)
    assert '"hello": "tcpstack"' in fields["root"] and '"10.0.0.1"' in fields["root"]
    assert fields["item"] == '{"id": 42}'
    assert fields["curl_big"], "20 MiB via curl differ"
    assert fields["kernel_root"] == {"hello": "tcpstack", "peer": "10.0.0.1"}
    assert fields["posted"] == {"got": {"a": [1, 2, 3]}}
    assert fields["kernel_big"], "20 MiB via the kernel aiohttp client differ"
    assert fields["ws_text"] == "HELLO WEBSOCKET"
    assert fields["ws_binary"], "1 MiB websocket echo differs"


def test_httpx_over_the_stacks_active_open_to_a_kernel_server_with_and_without_tls(
        netns: NetNS) -> None:
    fields = run_client(netns, HTTPX_CLIENT, timeout=120)
    assert fields["plain"] == {"peer": "10.0.0.2", "tls": False}
    assert fields["secure"] == {"peer": "10.0.0.2", "tls": True}
    assert fields["version"] in ("TLSv1.2", "TLSv1.3")
    assert fields["rejected"], "an untrusted certificate was accepted"
