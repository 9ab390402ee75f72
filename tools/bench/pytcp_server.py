"""Echo, discard and a ``/bytes/N`` HTTP server on the PyTCP stack, for the benchmark.

PyTCP (https://pypi.org/project/PyTCP/) is a pure-Python TCP/IP stack that
runs in user space on a TAP interface; its package ships the stack and a
BSD-like socket API (``pytcp.lib.socket``) but no services, so this script
provides the three the benchmark needs, with one thread per connection (the
socket API is blocking):

* echo on 7 and discard on 9, as in RFC 862 / RFC 863;
* HTTP on 80: ``GET /bytes/N`` answers ``N`` bytes of the same pattern as
  :func:`tcpstack.apps.pattern_bytes` (byte ``i`` is ``i % 251``), anything
  else a short page; every response closes the connection.

It runs under the interpreter of PyTCP's own virtualenv (never the
project's), so it imports nothing from this repository. Run it inside the
namespace that holds the TAP interface::

    python -O pytcp_server.py --interface tap7 --address 10.8.0.2/24 --address6 fd08::2/64

Every service listens on IPv4 and, with ``--address6``, on IPv6 as well.

``-O`` strips PyTCP's ``__debug__`` logging, which otherwise dominates.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

PERIOD = 251
_UNIT = bytes(range(PERIOD))
_BLOCK = _UNIT * (65536 // PERIOD + 2)
CHUNK = 16384
TX_BACKLOG_LIMIT = 256 * 1024
"""Keep at most this much unsent data queued in PyTCP (its send() never blocks)."""


def pattern(n: int, offset: int) -> bytes:
    """``n`` bytes of the ``/bytes/N`` pattern starting at byte ``offset`` (n <= 64 KiB)."""
    start = offset % PERIOD
    return _BLOCK[start : start + n]


def _tx_backlog(conn: Any) -> int:
    session = getattr(conn, "_tcp_session", None)
    buffer = getattr(session, "_tx_buffer", None)
    return len(buffer) if buffer is not None else 0


def _state_name(conn: Any) -> str:
    try:
        return str(conn.state)
    except Exception:  # an odd PyTCP version: assume it is still open
        return ""


def serve_echo(conn: Any) -> None:
    while data := conn.recv():
        conn.send(data)


def serve_discard(conn: Any) -> None:
    while conn.recv():
        pass


def serve_http(conn: Any) -> None:
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 16384:
        data = conn.recv()
        if not data:
            return
        head += data
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split()
    path = parts[1] if len(parts) >= 2 else "/"
    n = -1
    if path.startswith("/bytes/") and path[7:].isdigit():
        n = int(path[7:])
    if n < 0:
        body = b"<html><body>PyTCP benchmark server: try /bytes/N</body></html>\n"
        conn.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        return
    conn.send(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "
        + str(n).encode()
        + b"\r\nConnection: close\r\n\r\n"
    )
    sent = 0
    while sent < n:
        while _tx_backlog(conn) > TX_BACKLOG_LIMIT:
            if "ESTABLISHED" not in _state_name(conn) and "CLOSE_WAIT" not in _state_name(conn):
                return
            time.sleep(0.001)
        size = min(CHUNK, n - sent)
        conn.send(pattern(size, sent))
        sent += size
    # PyTCP's close() queues the FIN behind the data still in its buffer.


def _handle(conn: Any, service: Callable[[Any], None]) -> None:
    try:
        service(conn)
    except Exception as exc:  # a peer that went away must not kill the server
        print(f"pytcp_server: connection error: {exc!r}", file=sys.stderr, flush=True)
    finally:
        try:
            conn.close()
        except Exception:
            pass


def _listen(socket_mod: Any, ipv6: bool, port: int, service: Callable[[Any], None]) -> None:
    family = socket_mod.AF_INET6 if ipv6 else socket_mod.AF_INET4
    listener = socket_mod.socket(family, socket_mod.SOCK_STREAM)
    listener.bind(("::" if ipv6 else "0.0.0.0", port))
    listener.listen()
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_handle, args=(conn, service), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interface", default="tap7")
    parser.add_argument("--address", default="10.8.0.2/24", help="the stack's IPv4/prefix")
    parser.add_argument("--address6", default="",
                        help="the stack's IPv6/prefix, e.g. fd08::2/64 (default: IPv4 only)")
    parser.add_argument("--mac", default="02:00:00:77:77:77")
    parser.add_argument("--http-port", type=int, default=80)
    parser.add_argument("--echo-port", type=int, default=7)
    parser.add_argument("--discard-port", type=int, default=9)
    args = parser.parse_args(argv)

    threading.stack_size(256 * 1024)  # many idle connections: one thread each
    pytcp = importlib.import_module("pytcp")
    config = importlib.import_module("pytcp.config")
    socket_mod = importlib.import_module("pytcp.lib.socket")
    config_ns: Any = config
    config_ns.LOG_CHANEL = set()  # (sic) PyTCP's spelling: silence every log channel
    config_ns.LOG_DEBUG = False

    stack = pytcp.TcpIpStack(interface=args.interface, mac_address=args.mac,
                             ip4_address=args.address, ip6_address=args.address6 or None)
    stack.start()
    services: list[tuple[int, Callable[[Any], None]]] = [
        (args.http_port, serve_http),
        (args.echo_port, serve_echo),
        (args.discard_port, serve_discard),
    ]
    families = [False, True] if args.address6 else [False]
    for port, service in services:
        for ipv6 in families:
            if port:
                threading.Thread(target=_listen, args=(socket_mod, ipv6, port, service),
                                 daemon=True).start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("READY", flush=True)
    while not stop.wait(0.5):
        pass
    try:
        stack.stop()
    except Exception:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
