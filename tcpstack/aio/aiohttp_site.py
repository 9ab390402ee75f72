"""Serve an aiohttp web application over tcpstack (needs ``pip install 'tcpstack[aiohttp]'``).

aiohttp's server is an asyncio protocol factory; :class:`TcpStackSite` is an
``aiohttp.web`` site, like ``web.TCPSite``, that hands it to the stack's
``create_server`` instead of the event loop's. The application itself (routes,
middlewares, streamed responses, websockets) runs unmodified::

    runner = web.AppRunner(app)
    await runner.setup()
    await TcpStackSite(runner, stack, port=80).start()

or, in one call, :func:`start_app` (returns the runner; ``await runner.cleanup()``
stops it)::

    runner = await start_app(app, stack, port=443, ssl_context=context)
"""

from __future__ import annotations

import ssl

from aiohttp import web
from yarl import URL

from tcpstack.aio.streams import StreamNetwork


class TcpStackSite(web.BaseSite):
    """An aiohttp site listening on ``port`` of a tcpstack network (a
    :class:`~tcpstack.aio.entry.TunStack` or a :class:`~tcpstack.aio.network.Network`).

    ``host`` None serves every address of the stack; port 0 picks a free one
    (then :attr:`port` tells which, once started).
    """

    __slots__ = ("_bound_port", "_host", "_network", "_port")

    def __init__(self, runner: web.BaseRunner, network: StreamNetwork,
                 host: str | None = None, port: int | None = None, *,
                 ssl_context: ssl.SSLContext | None = None, backlog: int = 128) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._network = network
        self._host = host
        self._port = (443 if ssl_context else 80) if port is None else port
        self._bound_port: int | None = None

    @property
    def port(self) -> int:
        """The port listened on (the chosen one once started, for port 0)."""
        return self._bound_port if self._bound_port is not None else self._port

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return str(URL.build(scheme=scheme, host=self._host or "0.0.0.0", port=self.port))

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        listening = await self._network.create_server(
            server, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog)
        self._server = listening
        self._bound_port = listening.sockets[0].getsockname()[1]


async def start_app(app: web.Application, network: StreamNetwork,
                    host: str | None = None, port: int | None = None, *,
                    ssl_context: ssl.SSLContext | None = None,
                    **runner_kwargs: object) -> web.AppRunner:
    """Set up ``app`` and serve it on ``network``; return its runner (``cleanup()`` it)."""
    runner = web.AppRunner(app, **runner_kwargs)  # type: ignore[arg-type]
    await runner.setup()
    try:
        await TcpStackSite(runner, network, host, port, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


__all__ = ["TcpStackSite", "start_app"]
