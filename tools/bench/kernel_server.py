"""The kernel reference server: tcpstack's own services on the Linux kernel's TCP.

``python -m tools.bench.kernel_server --host 10.9.0.1 [--host fd09::1]`` serves
:class:`tcpstack.apps.HttpService` on 80 (with :func:`asyncio.start_server`), echo on 7
and discard on 9 (their protocols, ``echo.protocol`` and ``discard.protocol``, with
``loop.create_server``) on uvloop, on every ``--host`` address (IPv4 or IPv6) -- the
very services ``tcpstack serve`` runs over its own TCP, so the benchmark compares
the TCP implementations, not the applications. Prints ``READY`` once listening; exits 0
on SIGTERM/SIGINT.

``--tfo-queue N`` turns TCP Fast Open (RFC 7413) on for every listening socket
(``setsockopt(IPPROTO_TCP, TCP_FASTOPEN, N)``: at most N connections opened by
Fast Open still in SYN-RECEIVED); the namespace's ``net.ipv4.tcp_fastopen`` must
have the server bit (2) as well, which the benchmark sets for the tfo workload.

``--congestion-control NAME`` (``cubic``, ``bbr``, ... as in
``net.ipv4.tcp_available_congestion_control``) sets ``TCP_CONGESTION`` on every
listening socket and reads it back (exit 1 if the kernel does not use it); Linux
gives an accepted connection its listener's algorithm when it was set this way
(``tcp_ca_openreq_child``), whatever the namespace's default.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import socket
import sys
from typing import Any

from tcpstack.apps import HttpService, discard, echo


def set_congestion_control(sock: Any, name: str) -> None:
    """``TCP_CONGESTION`` on ``sock`` (a listener, as the server lists it), read back;
    SystemExit with a message if the kernel does not take it."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name.encode())
    except OSError as exc:
        raise SystemExit(f"kernel_server: TCP_CONGESTION {name!r}: {exc}") from None
    got = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
    used = got.split(b"\0", 1)[0].decode()
    if used != name:
        raise SystemExit(f"kernel_server: TCP_CONGESTION {name!r} read back as {used!r}")


async def serve(hosts: list[str], ports: dict[str, int], backlog: int,
                tfo_queue: int = 0, congestion_control: str = "") -> int:
    # The services as the daemon runs them: echo and discard as protocols.
    loop = asyncio.get_running_loop()
    servers = []
    for host in hosts:
        for name, port in ports.items():
            if port:
                if name == "http":
                    server = await asyncio.start_server(HttpService(), host, port,
                                                        backlog=backlog, reuse_address=True)
                else:
                    factory = echo.protocol if name == "echo" else discard.protocol
                    server = await loop.create_server(factory, host, port, backlog=backlog,
                                                      reuse_address=True)
                if tfo_queue:
                    # Allowed on a listening socket; it takes effect for the next SYN.
                    for sock in server.sockets:
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, tfo_queue)
                if congestion_control:
                    for sock in server.sockets:
                        set_congestion_control(sock, congestion_control)
                servers.append(server)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("READY", flush=True)
    await stop.wait()
    for server in servers:
        server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.kernel_server",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", action="append", default=[], metavar="ADDRESS",
                        help="listen on this address (repeatable; default: 10.9.0.1)")
    parser.add_argument("--http-port", type=int, default=80)
    parser.add_argument("--echo-port", type=int, default=7)
    parser.add_argument("--discard-port", type=int, default=9)
    parser.add_argument("--backlog", type=int, default=1024)
    parser.add_argument("--tfo-queue", type=int, default=0, metavar="N",
                        help="TCP Fast Open on every listener, at most N pending (0: off)")
    parser.add_argument("--congestion-control", default="", metavar="NAME",
                        help="TCP_CONGESTION on every listener (inherited by accepted "
                             "connections; default: the namespace's)")
    parser.add_argument("--nofile", type=int, default=0,
                        help="raise RLIMIT_NOFILE to this (also settable from outside)")
    args = parser.parse_args(argv)
    if args.nofile:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < args.nofile:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, max(hard, args.nofile)))
            except (ValueError, OSError):  # no CAP_SYS_RESOURCE: up to the hard limit
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ports = {"http": args.http_port, "echo": args.echo_port, "discard": args.discard_port}
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(args.host or ["10.9.0.1"], ports, args.backlog,
                                args.tfo_queue, args.congestion_control))


if __name__ == "__main__":
    sys.exit(main())
