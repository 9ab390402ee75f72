"""The web benchmark's server: one aiohttp application, on tcpstack or on the kernel.

``python -m tools.bench.web_server --stack tcpstack|kernel --host IP --cert F --key F``
serves, on uvloop, the same :mod:`aiohttp` application over plain HTTP on 8080 and
over HTTPS on 8443: ``/json`` (a small JSON document) and ``/bytes/N`` (N bytes,
streamed in 64 KiB writes). The application is an ordinary one, with nothing tuned
for either stack: what differs between the two runs is the TCP underneath (and, for
HTTPS, the TLS protocol layer: uvloop's own on kernel sockets, asyncio's
:class:`asyncio.sslproto.SSLProtocol` over tcpstack).

With ``--stack tcpstack`` it owns ``--host`` (10.0.0.2) behind the TUN ``tcpstack0``
through :class:`tcpstack.TunStack` and :class:`tcpstack.aio.aiohttp_site.TcpStackSite`;
with ``--stack kernel`` it uses ``web.SockSite`` on kernel listening sockets on
``--host``. ``--congestion-control NAME`` gives every connection that algorithm
(tcpstack's ``TcpConfig.congestion_control``; the kernel's ``TCP_CONGESTION`` on the
listeners, read back). Prints ``READY`` once listening; exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import ssl
import sys

from aiohttp import web

from tools.bench.settings import WEB_HTTP_PORT as HTTP_PORT
from tools.bench.settings import WEB_HTTPS_PORT as HTTPS_PORT

CHUNK = bytes(range(256)) * 256  # 64 KiB


def make_app() -> web.Application:
    async def json_doc(_request: web.Request) -> web.Response:
        return web.json_response({"service": "bench", "items": [1, 2, 3], "ok": True})

    async def nbytes(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        response = web.StreamResponse()
        response.content_length = n
        await response.prepare(request)
        full, rest = divmod(n, len(CHUNK))
        for _ in range(full):
            await response.write(CHUNK)
        if rest:
            await response.write(CHUNK[:rest])
        await response.write_eof()
        return response

    app = web.Application()
    app.add_routes([web.get("/json", json_doc), web.get("/bytes/{n:\\d+}", nbytes)])
    return app


def _listener(host: str, port: int, congestion_control: str) -> socket.socket:
    """A kernel listening socket, with ``TCP_CONGESTION`` set (and read back) if asked."""
    from tools.bench.kernel_server import set_congestion_control

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=1024)
    if congestion_control:
        set_congestion_control(sock, congestion_control)
    return sock


async def serve(stack_name: str, host: str, context: ssl.SSLContext,
                congestion_control: str = "") -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    if stack_name == "tcpstack":
        import tcpstack
        from tcpstack.aio.aiohttp_site import TcpStackSite
        from tcpstack.stack import StackConfig
        from tcpstack.tcp.config import TcpConfig

        config = StackConfig(tcp=TcpConfig(congestion_control=congestion_control)
                             if congestion_control else TcpConfig())
        async with tcpstack.TunStack(interface="tcpstack0", address=host,
                                     config=config) as stack:
            await TcpStackSite(runner, stack, host, HTTP_PORT, backlog=1024).start()
            await TcpStackSite(runner, stack, host, HTTPS_PORT, ssl_context=context,
                               backlog=1024).start()
            print("READY", flush=True)
            await stop.wait()
            await runner.cleanup()
    else:
        await web.SockSite(runner, _listener(host, HTTP_PORT, congestion_control)).start()
        await web.SockSite(runner, _listener(host, HTTPS_PORT, congestion_control),
                           ssl_context=context).start()
        print("READY", flush=True)
        await stop.wait()
        await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.web_server",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", choices=("tcpstack", "kernel"), required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--congestion-control", default="", metavar="NAME",
                        help="congestion control of every connection (default: the "
                             "stack's own)")
    args = parser.parse_args(argv)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["http/1.1"])
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(args.stack, args.host, context, args.congestion_control))


if __name__ == "__main__":
    sys.exit(main())
