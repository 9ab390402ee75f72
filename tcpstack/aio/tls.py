"""TLS over tcpstack transports, with the standard library's :mod:`ssl`.

asyncio's own SSL protocol (:class:`asyncio.sslproto.SSLProtocol`, the one every
asyncio event loop puts between a socket transport and an application protocol;
it drives an :class:`ssl.SSLObject` over memory BIOs) runs here over a
:class:`~tcpstack.aio.transports.TcpTransport` unchanged: it only needs asyncio's
transport interface, which the TCP transport provides, including the zero-copy
:class:`asyncio.BufferedProtocol` path it reads through. The application gets the
SSL protocol's transport, so ``get_extra_info("ssl_object" | "peercert" |
"sslcontext" | "cipher")`` answer as on any asyncio loop, and everything else
(``"peername"``, ``"socket"``) falls through to the TCP transport.

Event loops cannot do this themselves: uvloop's ``loop.start_tls`` only accepts
its own transports, so the upgrade is done here (:func:`start_tls`).

The SSL protocol class lives in a module asyncio does not document; its
constructor has been the same since Python 3.11 (the minimum here), and
``tests/unit/test_aio_tls.py`` pins the behaviour we rely on.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from asyncio import sslproto

log = logging.getLogger("tcpstack.tls")


def client_context(ssl_arg: bool | ssl.SSLContext) -> ssl.SSLContext:
    """The context for ``ssl=`` of a client call: True means the default (verifying) one."""
    if isinstance(ssl_arg, ssl.SSLContext):
        return ssl_arg
    return ssl.create_default_context()


def wrap(
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    *,
    server_side: bool,
    server_hostname: str | None = None,
    handshake_timeout: float | None = None,
    shutdown_timeout: float | None = None,
    call_connection_made: bool = True,
) -> tuple[sslproto.SSLProtocol, asyncio.Future[None]]:
    """An SSL protocol in front of ``protocol``, and the future its handshake resolves.

    Attach the SSL protocol to a TCP transport (``transport.attach``) to start the
    handshake; the application protocol's ``connection_made`` comes once it is
    done (if ``call_connection_made``). A handshake failure resets the connection
    and sets the future's exception; nobody needs to retrieve it (a server has no
    one to tell: it is logged at debug level).
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    waiter.add_done_callback(_log_handshake_failure)
    ssl_protocol = sslproto.SSLProtocol(
        loop, protocol, context, waiter, server_side, server_hostname,
        call_connection_made=call_connection_made,
        # typeshed says int; asyncio takes any number of seconds.
        ssl_handshake_timeout=handshake_timeout,  # type: ignore[arg-type]
        ssl_shutdown_timeout=shutdown_timeout)
    return ssl_protocol, waiter


def _log_handshake_failure(waiter: asyncio.Future[None]) -> None:
    if not waiter.cancelled() and waiter.exception() is not None:
        log.debug("TLS handshake failed: %r", waiter.exception())


def app_transport(ssl_protocol: sslproto.SSLProtocol) -> asyncio.Transport:
    """The transport the application sees on top of ``ssl_protocol``."""
    return ssl_protocol._app_transport


async def start_tls(
    transport: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    *,
    server_side: bool = False,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
) -> asyncio.Transport:
    """Upgrade an open connection to TLS, like ``loop.start_tls``; return the new transport.

    ``protocol`` keeps receiving data, now decrypted, through the returned
    transport. If the handshake fails or the wait is cancelled, the connection is
    reset and the error raised.
    """
    if not isinstance(context, ssl.SSLContext):
        raise TypeError(f"sslcontext is expected to be an instance of ssl.SSLContext, "
                        f"got {context!r}")
    loop = asyncio.get_running_loop()
    ssl_protocol, waiter = wrap(protocol, context, server_side=server_side,
                                server_hostname=server_hostname,
                                handshake_timeout=ssl_handshake_timeout,
                                shutdown_timeout=ssl_shutdown_timeout,
                                call_connection_made=False)
    # Nothing may reach the SSL protocol before its connection_made.
    transport.pause_reading()
    transport.set_protocol(ssl_protocol)
    made = loop.call_soon(ssl_protocol.connection_made, transport)
    resumed = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException:
        made.cancel()
        resumed.cancel()
        transport.abort()
        raise
    return app_transport(ssl_protocol)


__all__ = ["app_transport", "client_context", "start_tls", "wrap"]
