#!/opt/tcpstack/bin/python3
"""Docker HEALTHCHECK for the tcpstack image: does the stack answer on its own address?

It finds the ``tcpstack serve`` process in the container, reads its command
line and parses it with the daemon's own argument parser, so the address and
ports it checks are the ones in effect (whether they came from the
environment, the entrypoint or ``docker run`` arguments). Then, on the stack's
address, through the TUN and the stack's TCP:

* HTTP enabled: ``GET /`` must be answered with an ``HTTP/1.x`` status line
  (any status: an empty ``--www`` may well give 404);
* else echo enabled: a line sent must come back (RFC 862);
* else discard enabled: the TCP handshake must complete (RFC 863);
* no service at all: the process running is all that can be checked.

Exit status 0 is healthy, 1 unhealthy (Docker's convention); one line on
stdout says why, and ``docker inspect`` shows it under ``.State.Health``.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

TIMEOUT = 3.0
"""Seconds for connecting and for each reply (the HEALTHCHECK timeout is 5 s)."""


def daemon_argv(proc: Path = Path("/proc")) -> list[str] | None:
    """The arguments after ``serve`` of the running ``tcpstack serve``, or None."""
    own = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        args = [a.decode(errors="replace") for a in argv if a]
        # `tcpstack serve ...` or `python .../tcpstack serve ...`
        for i, arg in enumerate(args[:3]):
            if Path(arg).name == "tcpstack" and args[i + 1 : i + 2] == ["serve"]:
                return args[i + 2 :]
    return None


def _exchange(address: str, port: int, request: bytes, want: bytes) -> str | None:
    """Send ``request`` and read until ``want`` is seen; None if it was, else why not."""
    with socket.create_connection((address, port), timeout=TIMEOUT) as sock:
        sock.settimeout(TIMEOUT)
        if request:
            sock.sendall(request)
        received = b""
        while want and not received.startswith(want):
            chunk = sock.recv(256)
            if not chunk:
                return f"connection closed after {received[:40]!r}"
            received += chunk
            if len(received) >= len(want) and not received.startswith(want):
                return f"unexpected reply {received[:40]!r}"
    return None


def check() -> tuple[bool, str]:
    """Run the check; (healthy, one-line reason)."""
    args = daemon_argv()
    if args is None:
        return False, "no 'tcpstack serve' process found"
    from tcpstack.cli import build_parser

    try:
        opts, _unknown = build_parser().parse_known_args(["serve", *args])
    except SystemExit:
        return False, "cannot parse the daemon's command line"
    address = str(opts.address)
    if opts.http_port:
        port, request, want = opts.http_port, b"GET / HTTP/1.0\r\n\r\n", b"HTTP/1."
        what = "HTTP"
    elif opts.echo_port:
        port, request, want = opts.echo_port, b"tcpstack-healthcheck\n", \
            b"tcpstack-healthcheck\n"
        what = "echo"
    elif opts.discard_port:
        port, request, want, what = opts.discard_port, b"", b"", "TCP handshake"
    else:
        return True, "no services enabled; the daemon is running"
    try:
        problem = _exchange(address, port, request, want)
    except OSError as e:
        return False, f"{what} on {address}:{port}: {e}"
    if problem is not None:
        return False, f"{what} on {address}:{port}: {problem}"
    return True, f"{what} on {address}:{port} answers"


def main() -> int:
    healthy, reason = check()
    print(("healthy: " if healthy else "unhealthy: ") + reason)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
